//! One real `redis-server` per test, with the built fence module loaded: started on a free port
//! of 127.0.0.1 in its own temporary directory, restarted, killed, and checked for death on
//! drop (a panic inside the module kills the whole server, which fails the test).

use std::env;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, RedisResult, Value};

/// How many times a start is retried when the chosen port got taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// Connection attempts while waiting for a fresh server, and the pause between them.
const CONNECT_TRIES: usize = 250;
const CONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Read and write timeout of every test connection: a hung server fails the test.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the server log shown when something goes wrong.
const LOG_TAIL_LINES: usize = 40;

/// A running `redis-server` with the fence module loaded, killed on drop.
pub struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    /// Killed or shut down on purpose by the test: Drop does not report it as a death.
    stopped: bool,
}

/// Why a server did not come up: its exit status (None when it was still running but never
/// accepted a connection and had to be killed) and its log.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub log: String,
}

enum Launch {
    Ready(Child),
    PortTaken(String),
    Failed(StartFailure),
}

/// The `redis-server` to run: `REDIS_SERVER`, else the one on `PATH`.
pub fn server_binary() -> String {
    match env::var("REDIS_SERVER") {
        Ok(bin) if !bin.is_empty() => bin,
        _ => "redis-server".to_string(),
    }
}

/// The workspace root (the directory of the top-level `Cargo.toml`), whichever crate's tests
/// run.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The module file to load; panics when it has not been built.
pub fn module_path() -> PathBuf {
    let path = match env::var_os("FENCE_MODULE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/debug/libredis_fence.so"),
    };
    assert!(
        path.is_file(),
        "fence module not found at {}: build the module first: cargo build at the workspace \
         root (or point FENCE_MODULE at the built .so)",
        path.display()
    );
    path
}

fn make_temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = env::temp_dir().join(format!(
            "redis-fence-test-{}-{}-{}",
            process::id(),
            n,
            nanos
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create temp dir {}: {e}", dir.display()),
        }
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn read_log(dir: &Path) -> String {
    let mut text = fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let stdio = fs::read_to_string(dir.join("stdio.log")).unwrap_or_default();
    if !stdio.trim().is_empty() {
        text.push_str("\n--- stdout/stderr ---\n");
        text.push_str(&stdio);
    }
    text
}

/// The last `LOG_TAIL_LINES` lines of a log.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].join("\n")
}

fn connect_url(url: &str, timeout: Duration) -> RedisResult<Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

impl Server {
    /// Starts a server with the module loaded and no module arguments.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server; `extra` goes right after `--loadmodule <path>`: plain words are module
    /// arguments (`&["max-ttl-ms", "1000"]`), `--name value` pairs are config lines
    /// (`&["--fence.max-ttl-ms", "1000"]`).
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_with_files(&[], extra)
    }

    /// Like `start_with`, but reports a server that exits or never accepts connections as an
    /// error carrying its log. Panics only on harness problems (binary or module missing).
    pub fn try_start(extra: &[&str]) -> Result<Server, StartFailure> {
        Server::try_start_with_files(&[], extra)
    }

    /// `start_with`, after writing `files` (name, content) into the server's directory, e.g.
    /// an AOF to load.
    pub fn start_with_files(files: &[(&str, &[u8])], extra: &[&str]) -> Server {
        match Server::try_start_with_files(files, extra) {
            Ok(server) => server,
            Err(failure) => panic!(
                "redis-server with the fence module did not start (exit status {:?})\n\
                 --- server log (tail) ---\n{}",
                failure.status,
                tail(&failure.log)
            ),
        }
    }

    fn try_start_with_files(
        files: &[(&str, &[u8])],
        extra: &[&str],
    ) -> Result<Server, StartFailure> {
        let dir = make_temp_dir();
        for (name, content) in files {
            fs::write(dir.join(name), content).expect("write a file for the server");
        }
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        match Server::launch_on_free_port(&dir, &extra) {
            Ok((child, port)) => Ok(Server {
                child,
                port,
                dir,
                extra,
                stopped: false,
            }),
            Err(failure) => {
                let _ = fs::remove_dir_all(&dir);
                Err(failure)
            }
        }
    }

    /// Stops the server (SIGKILL: nothing is saved on the way out) and starts it again with
    /// the same directory and arguments, on a new port. Open connections are gone.
    pub fn restart(&mut self) {
        let extra = self.extra.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.restart_with(&extra);
    }

    /// `restart` with other arguments after `--loadmodule <path>`.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        let _ = self.child.kill();
        let _ = self.child.wait();
        match Server::launch_on_free_port(&self.dir, &self.extra) {
            Ok((child, port)) => {
                self.child = child;
                self.port = port;
                self.stopped = false;
            }
            Err(failure) => {
                // Nothing runs any more: Drop must not report a death on top of this.
                let log = failure.log.clone();
                panic!(
                    "redis-server did not restart (exit status {:?})\n\
                     --- server log (tail) ---\n{}",
                    failure.status,
                    tail(&log)
                );
            }
        }
    }

    fn launch_on_free_port(dir: &Path, extra: &[String]) -> Result<(Child, u16), StartFailure> {
        let module = module_path();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match Server::launch(&module, port, dir, extra) {
                Launch::Ready(child) => return Ok((child, port)),
                Launch::PortTaken(log) => last_log = log,
                Launch::Failed(failure) => return Err(failure),
            }
        }
        panic!(
            "redis-server found no free port in {START_ATTEMPTS} attempts\n\
             --- last server log (tail) ---\n{}",
            tail(&last_log)
        );
    }

    fn launch(module: &Path, port: u16, dir: &Path, extra: &[String]) -> Launch {
        // Only what this launch writes to the log counts (after a restart the log goes on).
        let log_start = read_log(dir).len();
        let stdio = File::create(dir.join("stdio.log")).expect("create stdio.log");
        let stdio2 = stdio.try_clone().expect("clone stdio.log handle");
        let port_text = port.to_string();
        let mut command = Command::new(server_binary());
        command
            .arg("--port")
            .arg(&port_text)
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .arg("--loadmodule")
            .arg(module)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio2);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run {} (set REDIS_SERVER to the redis-server binary): {e}",
                server_binary()
            ),
        };
        let url = format!("redis://127.0.0.1:{port}/");
        for _ in 0..CONNECT_TRIES {
            if let Ok(Some(status)) = child.try_wait() {
                let log = read_log(dir);
                let new_part = log.get(log_start..).unwrap_or(&log);
                if new_part.contains("Address already in use") {
                    return Launch::PortTaken(log);
                }
                return Launch::Failed(StartFailure {
                    status: Some(status),
                    log,
                });
            }
            if let Ok(mut con) = connect_url(&url, Duration::from_millis(200)) {
                // Another process may have grabbed the port: make sure it is our child. It
                // is ready once it has loaded its data (until then it answers LOADING).
                let info: RedisResult<String> = redis::cmd("INFO")
                    .arg("server")
                    .arg("persistence")
                    .query(&mut con);
                if let Ok(info) = info {
                    let ours = format!("process_id:{}", child.id());
                    let mut lines = info.lines().map(str::trim);
                    if lines.clone().any(|line| line == ours)
                        && lines.any(|line| line == "loading:0")
                    {
                        return Launch::Ready(child);
                    }
                }
            }
            thread::sleep(CONNECT_PAUSE);
        }
        let _ = child.kill();
        let _ = child.wait();
        Launch::Failed(StartFailure {
            status: None,
            log: read_log(dir),
        })
    }

    /// The server's own directory (`--dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A new RESP2 connection.
    pub fn conn(&self) -> Connection {
        self.connect(&self.url())
    }

    /// A new RESP3 connection.
    pub fn conn_resp3(&self) -> Connection {
        self.connect(&format!("{}?protocol=resp3", self.url()))
    }

    fn connect(&self, url: &str) -> Connection {
        match connect_url(url, Duration::from_secs(5)) {
            Ok(con) => con,
            Err(e) => panic!(
                "cannot connect to {url}: {e}\n--- server log (tail) ---\n{}",
                tail(&self.log())
            ),
        }
    }

    /// A client for this server (what a watchdog takes).
    pub fn client(&self) -> redis::Client {
        match redis::Client::open(self.url()) {
            Ok(client) => client,
            Err(e) => panic!("cannot make a client for {}: {e}", self.url()),
        }
    }

    /// The server's log file (plus anything it wrote to stdout/stderr).
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// Ok when the process runs and answers PING on a new connection.
    pub fn check_alive(&mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("redis-server exited with {status}"));
        }
        let mut con = connect_url(&self.url(), Duration::from_secs(2))
            .map_err(|e| format!("redis-server does not accept connections: {e}"))?;
        match redis::cmd("PING").query::<Value>(&mut con) {
            Ok(Value::SimpleString(s)) if s == "PONG" => Ok(()),
            other => Err(format!("redis-server does not answer PING: {other:?}")),
        }
    }

    /// Panics when the server died (a panic inside the module kills the whole server).
    #[track_caller]
    pub fn assert_alive(&mut self) {
        if let Err(reason) = self.check_alive() {
            panic!(
                "redis-server died during the test ({reason})\n--- server log (tail) ---\n{}",
                tail(&self.log())
            );
        }
    }

    /// Kills the server with SIGKILL (a crash: nothing is saved or flushed on the way out) and
    /// reaps it. `restart` brings it back on the same directory; until then Drop does not
    /// report the death.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stopped = true;
    }

    /// Marks the server as stopped on purpose (e.g. after `SHUTDOWN`), so Drop does not report
    /// its death.
    pub fn mark_stopped(&mut self) {
        self.stopped = true;
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A server that died during a test fails that test, even if every reply looked right.
        let death = if thread::panicking() || self.stopped {
            None
        } else {
            self.check_alive().err()
        };
        let log = if death.is_some() {
            self.log()
        } else {
            String::new()
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(reason) = death {
            panic!(
                "redis-server died during the test ({reason}); a panic in the module kills \
                 the server\n--- server log (tail) ---\n{}",
                tail(&log)
            );
        }
    }
}
