//! Test harness: one real `redis-server` per test, with the built fence module loaded.
//!
//! The module is never linked into a test binary. Each test starts its own server on a free
//! port of 127.0.0.1, in its own temporary directory, and talks to it over real connections.
//!
//! - `REDIS_SERVER`: the server binary (default `redis-server` on `PATH`).
//! - `FENCE_MODULE`: the module file (default `target/debug/libredis_fence.so`; run
//!   `cargo build` first).

// Each integration test binary compiles this file and uses only part of it.
#![allow(dead_code)]

use std::env;
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, RedisError, RedisResult, Value};

/// How many times a start is retried when the chosen port got taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// Connection attempts while waiting for a fresh server, and the pause between them.
const CONNECT_TRIES: usize = 150;
const CONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Read and write timeout of every test connection: a hung server fails the test.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the server log shown when something goes wrong.
const LOG_TAIL_LINES: usize = 40;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NEEDS_STOCK: &str =
    "ERR this command needs a stock created by STOCK.SET, not a plain string";
pub const I64_MAX: &str = "9223372036854775807";
pub const TWO_POW_63: &str = "9223372036854775808";

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

pub fn server_binary() -> String {
    match env::var("REDIS_SERVER") {
        Ok(bin) if !bin.is_empty() => bin,
        _ => "redis-server".to_string(),
    }
}

/// The module file to load; panics when it has not been built.
pub fn module_path() -> PathBuf {
    let path = match env::var_os("FENCE_MODULE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/libredis_fence.so"),
    };
    assert!(
        path.is_file(),
        "fence module not found at {}: build the module first: cargo build \
         (or point FENCE_MODULE at the built .so)",
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

fn free_port() -> u16 {
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
        match Server::try_start(extra) {
            Ok(server) => server,
            Err(failure) => panic!(
                "redis-server with the fence module did not start (exit status {:?})\n\
                 --- server log (tail) ---\n{}",
                failure.status,
                tail(&failure.log)
            ),
        }
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

// ---------------------------------------------------------------------------------------------
// Commands and replies
// ---------------------------------------------------------------------------------------------

/// Runs one command, e.g. `call(&mut con, &["LOCK.ACQUIRE", "k", "o", "1000"])`.
pub fn call(con: &mut Connection, args: &[&str]) -> RedisResult<Value> {
    let (name, rest) = args.split_first().expect("a command name");
    redis::cmd(name).arg(rest).query::<Value>(con)
}

/// The full text of a server error as the server sent it: code, a space, the message.
pub fn error_text(e: &RedisError) -> String {
    let code = match e.code() {
        Some(code) => code,
        None => panic!("not an error reply from the server: {e}"),
    };
    match e.detail() {
        Some(detail) => format!("{code} {detail}"),
        None => code.to_string(),
    }
}

/// The error reply's full text; panics when the reply is not an error.
#[track_caller]
pub fn err<T: Debug>(r: RedisResult<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error reply, got {v:?}"),
        Err(e) => error_text(&e),
    }
}

/// True when `text` begins with `prefix` and the prefix ends there or at a non-alphanumeric
/// character, so "... from 1 to 1000" does not match "... from 1 to 10000".
pub fn begins_with(text: &str, prefix: &str) -> bool {
    match text.strip_prefix(prefix) {
        Some(rest) => !rest.starts_with(|c: char| c.is_ascii_alphanumeric()),
        None => false,
    }
}

/// Asserts an error reply that begins with `prefix` (as `begins_with` means it); returns its
/// full text.
#[track_caller]
pub fn assert_err<T: Debug>(r: RedisResult<T>, prefix: impl AsRef<str>) -> String {
    assert_err_ctx(r, prefix, "")
}

/// `assert_err` with some context for the failure message.
#[track_caller]
pub fn assert_err_ctx<T: Debug>(
    r: RedisResult<T>,
    prefix: impl AsRef<str>,
    context: impl std::fmt::Display,
) -> String {
    let prefix = prefix.as_ref();
    let text = match r {
        Ok(v) => panic!("{context}: expected an error beginning with {prefix:?}, got {v:?}"),
        Err(e) => error_text(&e),
    };
    assert!(
        begins_with(&text, prefix),
        "{context}: expected an error beginning with {prefix:?}, got {text:?}"
    );
    text
}

#[track_caller]
fn describe(r: &RedisResult<Value>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => match e.code() {
            Some(_) => format!("error reply {:?}", error_text(e)),
            None => format!("client error {e}"),
        },
    }
}

/// The reply must be an integer.
#[track_caller]
pub fn int(r: RedisResult<Value>) -> i64 {
    match r {
        Ok(Value::Int(n)) => n,
        other => panic!("expected an integer reply, got {}", describe(&other)),
    }
}

/// The reply must be nil.
#[track_caller]
pub fn nil(r: RedisResult<Value>) {
    match r {
        Ok(Value::Nil) => {}
        other => panic!("expected a nil reply, got {}", describe(&other)),
    }
}

/// The reply must be the status `OK`.
#[track_caller]
pub fn okay(r: RedisResult<Value>) {
    match r {
        Ok(Value::Okay) => {}
        other => panic!("expected the status reply OK, got {}", describe(&other)),
    }
}

/// The reply must be a bulk string.
#[track_caller]
pub fn bulk(r: RedisResult<Value>) -> Vec<u8> {
    match r {
        Ok(Value::BulkString(b)) => b,
        other => panic!("expected a bulk string reply, got {}", describe(&other)),
    }
}

/// The reply must be a simple (status) string.
#[track_caller]
pub fn simple(r: RedisResult<Value>) -> String {
    match r {
        Ok(Value::SimpleString(s)) => s,
        Ok(Value::Okay) => "OK".to_string(),
        other => panic!("expected a status reply, got {}", describe(&other)),
    }
}

/// `TYPE key`.
#[track_caller]
pub fn key_type(con: &mut Connection, key: &str) -> String {
    simple(call(con, &["TYPE", key]))
}

/// `PTTL key`.
#[track_caller]
pub fn pttl(con: &mut Connection, key: &str) -> i64 {
    int(call(con, &["PTTL", key]))
}

/// `EXISTS key`.
#[track_caller]
pub fn exists(con: &mut Connection, key: &str) -> i64 {
    int(call(con, &["EXISTS", key]))
}

/// `DBSIZE`.
#[track_caller]
pub fn dbsize(con: &mut Connection) -> i64 {
    int(call(con, &["DBSIZE"]))
}

/// `GET key` of a plain string, None when missing.
#[track_caller]
pub fn get_string(con: &mut Connection, key: &str) -> Option<String> {
    match call(con, &["GET", key]) {
        Ok(Value::Nil) => None,
        Ok(Value::BulkString(b)) => Some(String::from_utf8(b).expect("utf-8 value")),
        other => panic!(
            "expected GET to reply a string or nil, got {}",
            describe(&other)
        ),
    }
}

/// `STOCK.GET key` as an integer (panics on nil or error).
#[track_caller]
pub fn stock(con: &mut Connection, key: &str) -> i64 {
    int(call(con, &["STOCK.GET", key]))
}

/// `CONFIG GET name`, the single value.
#[track_caller]
pub fn config_get(con: &mut Connection, name: &str) -> String {
    let pairs = config_get_all(con, name);
    assert_eq!(pairs.len(), 1, "CONFIG GET {name} replied {pairs:?}");
    assert_eq!(pairs[0].0, name);
    pairs[0].1.clone()
}

/// `CONFIG GET pattern` as (name, value) pairs, under RESP2.
#[track_caller]
pub fn config_get_all(con: &mut Connection, pattern: &str) -> Vec<(String, String)> {
    let reply = call(con, &["CONFIG", "GET", pattern]);
    let items = match reply {
        Ok(Value::Array(items)) => items,
        other => panic!(
            "CONFIG GET {pattern}: unexpected reply {}",
            describe(&other)
        ),
    };
    assert!(items.len() % 2 == 0, "odd CONFIG GET reply {items:?}");
    items
        .chunks(2)
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .collect()
}

/// A bulk or simple string value as text.
#[track_caller]
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("utf-8"),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// Wall clock in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_micros()).expect("microseconds fit i64")
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

// ---------------------------------------------------------------------------------------------
// Persistence and replication helpers
// ---------------------------------------------------------------------------------------------

/// `INFO section` as text.
#[track_caller]
pub fn info(con: &mut Connection, section: &str) -> String {
    match redis::cmd("INFO").arg(section).query::<String>(con) {
        Ok(text) => text,
        Err(e) => panic!("INFO {section} failed: {e}"),
    }
}

/// One field of an `INFO` text, None when missing.
pub fn info_value(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::to_string)
    })
}

/// One integer field of `INFO section`; panics when missing or not an integer.
#[track_caller]
pub fn info_int(con: &mut Connection, section: &str, field: &str) -> i64 {
    let text = info(con, section);
    match info_value(&text, field).and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => panic!("INFO {section} has no integer {field}:\n{text}"),
    }
}

/// What `LOCK.STATUS key` reports: owner, token and ttl; None when the lock is free.
#[track_caller]
pub fn lock_status(con: &mut Connection, key: &str) -> Option<(String, i64, i64)> {
    let reply = call(con, &["LOCK.STATUS", key]);
    let items = match reply {
        Ok(Value::Nil) => return None,
        Ok(Value::Array(items)) if items.len() == 8 => items,
        other => panic!("LOCK.STATUS {key}: unexpected reply {}", describe(&other)),
    };
    let owner = text(&items[1]);
    let (Value::Int(token), Value::Int(ttl)) = (&items[3], &items[5]) else {
        panic!("LOCK.STATUS {key}: unexpected reply {items:?}");
    };
    Some((owner, *token, *ttl))
}

/// `PTTL` of every key, in one round trip.
#[track_caller]
pub fn pttls(con: &mut Connection, keys: &[&str]) -> Vec<i64> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("PTTL").arg(*key);
    }
    match pipe.query::<Vec<i64>>(con) {
        Ok(v) => v,
        Err(e) => panic!("PTTL pipeline failed: {e}"),
    }
}

/// `DEBUG DIGEST` (needs `--enable-debug-command yes`).
#[track_caller]
pub fn debug_digest(con: &mut Connection) -> String {
    text(&call(con, &["DEBUG", "DIGEST"]).expect("DEBUG DIGEST"))
}

/// `DEBUG DIGEST-VALUE key` (needs `--enable-debug-command yes`).
#[track_caller]
pub fn digest_value(con: &mut Connection, key: &str) -> String {
    match call(con, &["DEBUG", "DIGEST-VALUE", key]) {
        Ok(Value::Array(items)) if items.len() == 1 => text(&items[0]),
        other => panic!("DEBUG DIGEST-VALUE {key}: {}", describe(&other)),
    }
}

/// Every key name (`KEYS *`), sorted.
#[track_caller]
pub fn all_keys(con: &mut Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS *");
    keys.sort();
    keys
}

/// `DUMP key`'s payload (panics when the key is missing).
#[track_caller]
pub fn dump(con: &mut Connection, key: &str) -> Vec<u8> {
    bulk(call(con, &["DUMP", key]))
}

/// `RESTORE key ttl payload [options...]`.
pub fn restore(
    con: &mut Connection,
    key: &str,
    ttl: i64,
    payload: &[u8],
    options: &[&str],
) -> RedisResult<Value> {
    redis::cmd("RESTORE")
        .arg(key)
        .arg(ttl)
        .arg(payload)
        .arg(options)
        .query::<Value>(con)
}

/// Lines of a server log that show a command refused while it was applied from the master
/// link (Redis logs "sending an error to its master"), mention a replication-only command
/// (Redis names a command only when something went wrong with it), or a panic the module
/// caught.
pub fn replication_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            let l = line.to_ascii_lowercase();
            l.contains("sending an error to its master")
                || l.contains("fence.lock")
                || l.contains("fence.stock")
                || l.contains("fence.restock")
                || l.contains("fence: caught a panic")
        })
        .map(str::to_string)
        .collect()
}

/// Waits until `replica` is linked to its master and has processed everything the master has
/// sent (its offset equals the master's `master_repl_offset`); panics after `timeout`.
#[track_caller]
pub fn wait_for_sync(master: &Server, replica: &Server, timeout: Duration) {
    let mut mcon = master.conn();
    let mut rcon = replica.conn();
    let mut last = String::new();
    // Right after a diskless full sync, Redis 7.0 buffers the stream until the replica's first
    // acknowledgement while both offsets already match; WAIT asks the replica to acknowledge
    // everything written so far, so matching offsets afterwards mean a replica caught up.
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let _ = redis::cmd("WAIT").arg(1).arg(ms).query::<i64>(&mut mcon);
    let synced = wait_until(timeout, || {
        let m = info(&mut mcon, "replication");
        let r = info(&mut rcon, "replication");
        let up = info_value(&r, "master_link_status").as_deref() == Some("up");
        let m_off = info_value(&m, "master_repl_offset");
        let r_off = info_value(&r, "master_repl_offset");
        last = format!("link up: {up}, master offset {m_off:?}, replica offset {r_off:?}");
        up && m_off.is_some() && m_off == r_off
    });
    assert!(
        synced,
        "the replica did not catch up with its master ({last})\n--- replica log (tail) ---\n{}",
        tail(&replica.log())
    );
}

/// Locks holding tokens far ahead of the clock, as DUMP payloads, made once per test binary.
/// A client cannot obtain such a token; `RESTORE` of a payload teaches a server the token
/// (the lock type's RDB load observes it), so a test can tell the token clock's memory from
/// its wall-clock floor.
pub struct FutureLocks {
    /// Owners of the two locks.
    pub owners: [&'static str; 2],
    /// Their tokens: about one hour and two hours ahead of the clock when made.
    pub tokens: [i64; 2],
    /// `DUMP` payloads of the two locks (no expiry).
    pub dumps: [Vec<u8>; 2],
}

/// The future locks of this test binary (a helper server makes them, from an AOF, once).
pub fn future_locks() -> &'static FutureLocks {
    static LOCKS: std::sync::OnceLock<FutureLocks> = std::sync::OnceLock::new();
    LOCKS.get_or_init(|| {
        let hour = 3_600 * 1_000_000;
        let tokens = [now_us() + hour, now_us() + 2 * hour];
        let owners = ["future-1", "future-2"];
        let mut aof = resp_command(&["SELECT", "0"]);
        for i in 0..2 {
            let key = format!("future:{i}");
            let token = tokens[i].to_string();
            aof.push_str(&resp_command(&["FENCE.LOCK", &key, owners[i], &token, "0"]));
        }
        let server = Server::start_with_files(
            &[("appendonly.aof", aof.as_bytes())],
            &["--appendonly", "yes"],
        );
        let mut con = server.conn();
        for i in 0..2 {
            let key = format!("future:{i}");
            let status = lock_status(&mut con, &key);
            assert_eq!(
                status,
                Some((owners[i].to_string(), tokens[i], -1)),
                "the helper server did not load {key} from its AOF"
            );
        }
        let dumps = [dump(&mut con, "future:0"), dump(&mut con, "future:1")];
        FutureLocks {
            owners,
            tokens,
            dumps,
        }
    })
}

/// A command in RESP, as it appears in an AOF file.
pub fn resp_command(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Faults triggered by the load itself
// ---------------------------------------------------------------------------------------------

/// What a load looked like at the instant a `LoadKiller` sent SIGKILL.
#[derive(Debug, Clone, Copy)]
pub struct KillMoment {
    /// Units acknowledged when the kill was decided (at least the target).
    pub acknowledged: u64,
    /// Requests sent and not answered yet, read right before the signal (the killing client's
    /// own request was just answered, so at most clients - 1).
    pub outstanding: usize,
    /// Client threads still in their loop at the kill.
    pub running: usize,
    /// Time from the making of the `LoadKiller` to the kill.
    pub after: Duration,
}

/// Kills a server with SIGKILL from inside a load, at the moment the units acknowledged to
/// the clients reach `target`: the client whose acknowledgement reaches it sends the signal
/// itself, right away. No timer decides whether the load is still running when the server
/// dies. Every client thread gets a `LoadClient` (made before the threads start) and reports
/// through it each request it sends and each reply it gets; a client thread that panics kills
/// the server too, so the other clients stop.
pub struct LoadKiller<'a> {
    server: std::sync::Mutex<&'a mut Server>,
    target: u64,
    acknowledged: std::sync::atomic::AtomicU64,
    outstanding: AtomicUsize,
    running: AtomicUsize,
    started: Instant,
    moment: std::sync::Mutex<Option<KillMoment>>,
}

/// One client thread of a `LoadKiller`'s load; leaving the loop (dropping it) counts the
/// client out.
pub struct LoadClient<'k, 'a> {
    killer: &'k LoadKiller<'a>,
}

impl<'a> LoadKiller<'a> {
    /// Kills `server` once `target` units (at least 1) have been acknowledged.
    pub fn new(server: &'a mut Server, target: u64) -> LoadKiller<'a> {
        assert!(target > 0, "a kill target of 0 units would hit no load");
        LoadKiller {
            server: std::sync::Mutex::new(server),
            target,
            acknowledged: std::sync::atomic::AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            started: Instant::now(),
            moment: std::sync::Mutex::new(None),
        }
    }

    /// A client of the load, counted as running until dropped. Make every client before
    /// starting any, so a thread that starts late still counts as part of the load.
    pub fn client(&self) -> LoadClient<'_, 'a> {
        self.running.fetch_add(1, Ordering::SeqCst);
        LoadClient { killer: self }
    }

    /// The load at the kill, None when the target was never reached (no kill happened).
    pub fn moment(&self) -> Option<KillMoment> {
        *self.moment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Units acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }

    fn kill_now(&self, acknowledged: Option<u64>) {
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(acknowledged) = acknowledged {
            let moment = KillMoment {
                acknowledged,
                outstanding: self.outstanding.load(Ordering::SeqCst),
                running: self.running.load(Ordering::SeqCst),
                after: self.started.elapsed(),
            };
            *self.moment.lock().unwrap_or_else(|e| e.into_inner()) = Some(moment);
        }
        server.kill();
    }
}

impl LoadClient<'_, '_> {
    /// Right before a request goes out.
    pub fn sending(&self) {
        self.killer.outstanding.fetch_add(1, Ordering::SeqCst);
    }

    /// The server acknowledged `units`: kills it when this reaches the target.
    pub fn acknowledged(&self, units: u64) {
        let k = self.killer;
        k.outstanding.fetch_sub(1, Ordering::SeqCst);
        let before = k.acknowledged.fetch_add(units, Ordering::SeqCst);
        if before < k.target && before + units >= k.target {
            k.kill_now(Some(before + units));
        }
    }

    /// Any other reply from the server (a refusal, a nil).
    pub fn answered(&self) {
        self.killer.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for LoadClient<'_, '_> {
    fn drop(&mut self) {
        self.killer.running.fetch_sub(1, Ordering::SeqCst);
        if thread::panicking() {
            // Stop the rest of the load: their connections break and they leave their loops.
            self.killer.kill_now(None);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time checks that do not depend on the machine's speed
// ---------------------------------------------------------------------------------------------

/// Milliseconds passed since `since`, rounded up.
pub fn elapsed_ms_ceil(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

/// Asserts that `ttl` (a `PTTL` or `LOCK.STATUS` ttl just read) is what a TTL of `set_ms`, given
/// by a command sent no earlier than `since`, has left: at most `set_ms`, and at least `set_ms`
/// less the time that has passed since `since`, measured now, after the reading (1 ms more
/// for Redis's rounding). A slow machine widens the window instead of failing the check.
#[track_caller]
pub fn assert_ttl_since(ttl: i64, set_ms: i64, since: Instant, what: impl std::fmt::Display) {
    let passed = elapsed_ms_ceil(since);
    assert!(
        ttl <= set_ms && ttl >= set_ms - passed - 1,
        "{what}: TTL {ttl} ms, expected {set_ms} ms less at most the {passed} ms that passed"
    );
}

/// Returns once every module timer that was due when it was called has run. Redis runs the
/// timers that are due after the commands read in the same pass of its event loop, so the
/// reply to the second of two PINGs comes after them.
#[track_caller]
pub fn settle(con: &mut Connection) {
    for _ in 0..2 {
        match call(con, &["PING"]) {
            Ok(Value::SimpleString(s)) if s == "PONG" => {}
            other => panic!("PING: {}", describe(&other)),
        }
    }
}
