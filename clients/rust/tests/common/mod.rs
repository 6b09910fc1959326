//! Test harness: one real `redis-server` per test, with the built fence module loaded, on a
//! free port of 127.0.0.1, in its own temporary directory (the approach of the module's own
//! `tests/common/mod.rs`).
//!
//! - `REDIS_SERVER`: the server binary (default `redis-server` on `PATH`).
//! - `FENCE_MODULE`: the module file (default `<repo>/target/debug/libredis_fence.so`; run
//!   `cargo build` at the repository root first).

#![allow(dead_code)]

use std::env;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, RedisResult};

const START_ATTEMPTS: usize = 5;
const CONNECT_TRIES: usize = 250;
const CONNECT_PAUSE: Duration = Duration::from_millis(20);
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `redis-server` with the fence module loaded, killed on drop.
pub struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn server_binary() -> String {
    match env::var("REDIS_SERVER") {
        Ok(bin) if !bin.is_empty() => bin,
        _ => "redis-server".to_string(),
    }
}

fn module_path() -> PathBuf {
    let path = match env::var_os("FENCE_MODULE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/libredis_fence.so"),
    };
    assert!(
        path.is_file(),
        "fence module not found at {}: build it first with `cargo build` at the repository \
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
            "redis-fence-client-test-{}-{n}-{nanos}",
            process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create temp dir {}: {e}", dir.display()),
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn read_log(dir: &Path) -> String {
    let mut text = fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    text.push_str(&fs::read_to_string(dir.join("stdio.log")).unwrap_or_default());
    text
}

fn connect_url(url: &str, timeout: Duration) -> RedisResult<Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

impl Server {
    /// Starts a server with the module loaded.
    pub fn start() -> Server {
        let module = module_path();
        let dir = make_temp_dir();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match Server::launch(&module, port, &dir) {
                Ok(child) => return Server { child, port, dir },
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("redis-server with the fence module did not start:\n{log}"),
            }
        }
        panic!("redis-server found no free port:\n{last_log}");
    }

    fn launch(module: &Path, port: u16, dir: &Path) -> Result<Child, String> {
        let _ = fs::remove_file(dir.join("redis.log"));
        let stdio = File::create(dir.join("stdio.log")).expect("create stdio.log");
        let stdio2 = stdio.try_clone().expect("clone stdio.log handle");
        let mut child = Command::new(server_binary())
            .arg("--port")
            .arg(port.to_string())
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
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio2)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (set REDIS_SERVER to the redis-server binary): {e}",
                    server_binary()
                )
            });
        let url = format!("redis://127.0.0.1:{port}/");
        for _ in 0..CONNECT_TRIES {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(read_log(dir));
            }
            if let Ok(mut con) = connect_url(&url, Duration::from_millis(200)) {
                // Make sure the server on this port is our child.
                let info: RedisResult<String> = redis::cmd("INFO").arg("server").query(&mut con);
                if let Ok(info) = info {
                    let ours = format!("process_id:{}", child.id());
                    if info.lines().any(|line| line.trim() == ours) {
                        return Ok(child);
                    }
                }
            }
            thread::sleep(CONNECT_PAUSE);
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(read_log(dir))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A client for this server (what a watchdog takes).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    /// A new RESP2 connection.
    pub fn conn(&self) -> Connection {
        connect_url(&self.url(), Duration::from_secs(5)).expect("connect")
    }

    /// A new RESP3 connection.
    pub fn conn_resp3(&self) -> Connection {
        connect_url(
            &format!("{}?protocol=resp3", self.url()),
            Duration::from_secs(5),
        )
        .expect("connect with RESP3")
    }

    pub fn log(&self) -> String {
        read_log(&self.dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One integer field of `INFO section`, or 0 when it is missing.
pub fn info_field(con: &mut Connection, section: &str, field: &str) -> i64 {
    let text: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    text.lines()
        .find_map(|line| {
            line.trim_end()
                .strip_prefix(field)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// How many times the server executed `command` (any case), from `INFO commandstats`; 0
/// when never.
pub fn calls(con: &mut Connection, command: &str) -> u64 {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("INFO commandstats");
    // Redis 7 names module commands as registered: `cmdstat_LOCK.RENEW`.
    let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
    text.lines()
        .find_map(|line| {
            let line = line.trim_end();
            let head = line.get(..prefix.len())?;
            (head.to_ascii_lowercase() == prefix).then(|| line[prefix.len()..].to_string())
        })
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Clients connected to the server (`INFO clients`), including the caller.
pub fn connected_clients(con: &mut Connection) -> i64 {
    info_field(con, "clients", "connected_clients")
}

/// How long a test waits for something that happens within milliseconds on an idle machine
/// (a renewal, a closed connection, a reply): long enough for any scheduling delay of a loaded
/// one, so that only a real failure exhausts it.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// The ids of the clients connected to the server (`CLIENT LIST`), the caller's included.
pub fn client_ids(con: &mut Connection) -> std::collections::BTreeSet<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(con)
        .expect("CLIENT LIST");
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect()
}

/// `CLIENT LIST`'s line of one client, None when it is not connected.
pub fn client_line(con: &mut Connection, id: &str) -> Option<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(con)
        .expect("CLIENT LIST");
    let field = format!("id={id}");
    list.lines()
        .find(|line| line.split(' ').any(|f| f == field))
        .map(str::to_string)
}

/// Polls `f` every 5 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

pub fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A `MONITOR` connection that records, in the order the server executed them, every
/// command it sees, as its arguments.
pub struct Monitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    stream: std::net::TcpStream,
}

impl Monitor {
    pub fn start(server: &Server) -> Monitor {
        use std::io::{BufRead, BufReader, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect MONITOR");
        stream.write_all(b"MONITOR\r\n").expect("send MONITOR");
        let mut reader = BufReader::new(stream.try_clone().expect("clone the MONITOR stream"));
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("MONITOR reply");
        assert_eq!(ok.trim_end(), "+OK", "MONITOR replied {ok:?}");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(monitor_args(&line));
            }
        });
        Monitor { lines, stream }
    }

    /// The commands seen so far, each as its arguments (the command name in upper case).
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.lines.lock().unwrap().clone()
    }

    /// Every command the server executed before this call, in its order: sends a marker
    /// (`ECHO`) on `con` and waits (up to [`EVENT_DEADLINE`]) until the marker comes through
    /// the `MONITOR` stream; returns what came before it.
    #[track_caller]
    pub fn sync(&self, con: &mut Connection) -> Vec<Vec<String>> {
        static MARKERS: AtomicUsize = AtomicUsize::new(0);
        let marker = format!(
            "monitor-sync-{}-{}",
            process::id(),
            MARKERS.fetch_add(1, Ordering::SeqCst)
        );
        let echoed: String = redis::cmd("ECHO").arg(&marker).query(con).expect("ECHO");
        assert_eq!(echoed, marker);
        let is_marker = |c: &Vec<String>| c.len() == 2 && c[0] == "ECHO" && c[1] == marker;
        let mut seen = Vec::new();
        let arrived = wait_until(EVENT_DEADLINE, || {
            seen = self.commands();
            seen.iter().any(is_marker)
        });
        assert!(
            arrived,
            "the MONITOR stream did not show {marker} within {EVENT_DEADLINE:?}"
        );
        let at = seen.iter().position(is_marker).expect("the marker");
        seen.truncate(at);
        seen
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The quoted arguments of one `MONITOR` line (`+1700000000.1 [0 127.0.0.1:1] "GET" "k"`);
/// escapes are kept as they are (enough for the plain names used here).
fn monitor_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut rest = match line.find('"') {
        Some(at) => &line[at..],
        None => return args,
    };
    while let Some(body) = rest.strip_prefix('"') {
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else { break };
        args.push(body[..end].to_string());
        rest = body[end + 1..].trim_start();
    }
    if let Some(name) = args.first_mut() {
        *name = name.to_ascii_uppercase();
    }
    args
}

/// Panics when the server executed a `LOCK.RENEW` of `key` after a `LOCK.RELEASE` of it.
#[track_caller]
pub fn assert_no_renew_after_release(commands: &[Vec<String>], key: &str) {
    let of_key = |c: &Vec<String>, name: &str| c.len() >= 2 && c[0] == name && c[1] == key;
    let Some(release) = commands.iter().position(|c| of_key(c, "LOCK.RELEASE")) else {
        panic!("MONITOR saw no LOCK.RELEASE of {key}");
    };
    let late: Vec<_> = commands[release..]
        .iter()
        .filter(|c| of_key(c, "LOCK.RENEW"))
        .collect();
    assert!(
        late.is_empty(),
        "LOCK.RENEW of {key} after its LOCK.RELEASE: {late:?}"
    );
}
