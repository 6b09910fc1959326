//! One real `redis-server` per test, with the built fence module loaded: started on a free port
//! of 127.0.0.1 in its own temporary directory, restarted, killed, and checked for death on
//! drop (a panic inside the module kills the whole server, which fails the test).
//!
//! [`Server::builder`] starts one with more than the tests need: another module file, under
//! another program (`taskset`, `valgrind`), with longer time limits (what `make bench` uses).

use std::env;
use std::fmt;
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
/// How long a new connection to a running server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of the server log shown when something goes wrong.
const LOG_TAIL_LINES: usize = 40;

/// A running `redis-server` with the fence module loaded, killed on drop.
pub struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    launcher: Launcher,
    /// Killed or shut down on purpose by the test: Drop does not report it as a death.
    stopped: bool,
}

/// How a server is launched, kept for its restarts.
#[derive(Clone)]
struct Launcher {
    module: PathBuf,
    /// The programs the server runs under (`taskset -c 0`, `valgrind …`), outermost first.
    wrapper: Vec<String>,
    /// The arguments after `--loadmodule <path>`.
    extra: Vec<String>,
    connect_tries: usize,
    io_timeout: Duration,
}

/// Why a server did not come up: its exit status (None when it was still running but never
/// accepted a connection and had to be killed) and its log.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub log: String,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis-server with the fence module did not start (exit status {:?})\n\
             --- server log (tail) ---\n{}",
            self.status,
            tail(&self.log)
        )
    }
}

impl std::error::Error for StartFailure {}

/// A server to start with other settings than the tests' own, e.g. the release module pinned
/// to a core: `Server::builder().module(path).run_under(&["taskset", "-c", "0"]).try_start()`.
/// What is not set is as [`Server::start`] has it.
#[derive(Clone, Default)]
pub struct ServerBuilder {
    module: Option<PathBuf>,
    wrapper: Vec<String>,
    extra: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
    start_timeout: Option<Duration>,
    io_timeout: Option<Duration>,
}

impl ServerBuilder {
    /// The module file to load (default: [`module_path()`]).
    pub fn module(mut self, path: impl Into<PathBuf>) -> Self {
        self.module = Some(path.into());
        self
    }

    /// Runs the server under `program` and its arguments, e.g. `&["taskset", "-c", "0"]`; a
    /// later call's program runs under the earlier ones' (`taskset -c 0 valgrind …
    /// redis-server`). Relative paths among the arguments are in the server's directory: the
    /// server starts there.
    pub fn run_under(mut self, program: &[&str]) -> Self {
        self.wrapper.extend(program.iter().map(|s| s.to_string()));
        self
    }

    /// Arguments after `--loadmodule <path>`, as [`Server::start_with`] takes them.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// A file (name, content) written into the server's directory before it starts, e.g. an
    /// AOF to load.
    pub fn file(mut self, name: &str, content: &[u8]) -> Self {
        self.files.push((name.to_string(), content.to_vec()));
        self
    }

    /// How long the server may take to accept connections (default about 5 s; a server under
    /// valgrind needs more).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = Some(timeout);
        self
    }

    /// The read and write timeout of every connection to the server (default 20 s).
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = Some(timeout);
        self
    }

    /// Starts the server; panics with its log when it does not come up.
    pub fn start(self) -> Server {
        match self.try_start() {
            Ok(server) => server,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// Starts the server; a server that exits or never accepts connections is an error
    /// carrying its log. Panics only on harness problems (binary or module missing).
    pub fn try_start(self) -> Result<Server, StartFailure> {
        let connect_tries = match self.start_timeout {
            Some(timeout) => {
                let tries = timeout.as_millis() / CONNECT_PAUSE.as_millis();
                usize::try_from(tries).unwrap_or(usize::MAX).max(1)
            }
            None => CONNECT_TRIES,
        };
        let launcher = Launcher {
            module: self.module.unwrap_or_else(module_path),
            wrapper: self.wrapper,
            extra: self.extra,
            connect_tries,
            io_timeout: self.io_timeout.unwrap_or(IO_TIMEOUT),
        };
        let dir = make_temp_dir();
        for (name, content) in &self.files {
            fs::write(dir.join(name), content).expect("write a file for the server");
        }
        match Server::launch_on_free_port(&dir, &launcher) {
            Ok((child, port)) => Ok(Server {
                child,
                port,
                dir,
                launcher,
                stopped: false,
            }),
            Err(failure) => {
                let _ = fs::remove_dir_all(&dir);
                Err(failure)
            }
        }
    }
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

/// The module as cargo builds it in this workspace for `profile` (`debug`, `release`).
pub fn built_module(profile: &str) -> PathBuf {
    workspace_root()
        .join("target")
        .join(profile)
        .join("libredis_fence.so")
}

/// The module file to load; panics when it has not been built.
pub fn module_path() -> PathBuf {
    let path = match env::var_os("FENCE_MODULE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => built_module("debug"),
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

fn connect_url(url: &str, timeout: Duration, io_timeout: Duration) -> RedisResult<Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(io_timeout))?;
    con.set_write_timeout(Some(io_timeout))?;
    Ok(con)
}

impl Server {
    /// A server to start with other settings (module file, programs it runs under, time
    /// limits) than the tests' own.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

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
        Server::builder().args(extra).try_start()
    }

    /// `start_with`, after writing `files` (name, content) into the server's directory, e.g.
    /// an AOF to load.
    pub fn start_with_files(files: &[(&str, &[u8])], extra: &[&str]) -> Server {
        files
            .iter()
            .fold(Server::builder(), |b, (name, content)| {
                b.file(name, content)
            })
            .args(extra)
            .start()
    }

    /// Stops the server (SIGKILL: nothing is saved on the way out) and starts it again with
    /// the same directory and arguments, on a new port. Open connections are gone.
    pub fn restart(&mut self) {
        let extra = self.launcher.extra.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.restart_with(&extra);
    }

    /// `restart` with other arguments after `--loadmodule <path>`.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.launcher.extra = extra.iter().map(|s| s.to_string()).collect();
        let _ = self.child.kill();
        let _ = self.child.wait();
        match Server::launch_on_free_port(&self.dir, &self.launcher) {
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

    fn launch_on_free_port(dir: &Path, launcher: &Launcher) -> Result<(Child, u16), StartFailure> {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match Server::launch(launcher, port, dir) {
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

    fn launch(launcher: &Launcher, port: u16, dir: &Path) -> Launch {
        // Only what this launch writes to the log counts (after a restart the log goes on).
        let log_start = read_log(dir).len();
        let stdio = File::create(dir.join("stdio.log")).expect("create stdio.log");
        let stdio2 = stdio.try_clone().expect("clone stdio.log handle");
        let port_text = port.to_string();
        let mut command = match launcher.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(server_binary());
                command
            }
            None => Command::new(server_binary()),
        };
        command
            .current_dir(dir)
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
            .arg(&launcher.module)
            .args(&launcher.extra)
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio2);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run {:?} (set REDIS_SERVER to the redis-server binary): {e}",
                command
            ),
        };
        let url = format!("redis://127.0.0.1:{port}/");
        for _ in 0..launcher.connect_tries {
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
            if let Ok(mut con) = connect_url(&url, Duration::from_millis(200), IO_TIMEOUT) {
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

    /// A new RESP2 connection, or why there is none (for a tool that reports errors instead
    /// of panicking).
    pub fn try_conn(&self) -> RedisResult<Connection> {
        connect_url(&self.url(), CONNECT_TIMEOUT, self.launcher.io_timeout)
    }

    /// A new RESP3 connection.
    pub fn conn_resp3(&self) -> Connection {
        self.connect(&format!("{}?protocol=resp3", self.url()))
    }

    fn connect(&self, url: &str) -> Connection {
        match connect_url(url, CONNECT_TIMEOUT, self.launcher.io_timeout) {
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
        let mut con = connect_url(
            &self.url(),
            Duration::from_secs(2),
            self.launcher.io_timeout,
        )
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
