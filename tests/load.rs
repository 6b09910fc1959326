//! Loading on a server that lacks a module API function the module calls: `MODULE LOAD` (and a
//! `loadmodule` line) fails, with a log line naming the function, instead of the module
//! loading and misbehaving later. Debug builds let the test pretend a function is missing
//! (`FENCE_SIMULATE_MISSING_API`); a release build never reads the environment.

mod common;

use std::fs;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A bare redis-server (no module) whose environment says `RedisModule_<name>` is missing.
struct Bare {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Bare {
    fn start(missing: &str, load_at_start: bool) -> Bare {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("redis-fence-load-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let mut cmd = Command::new(server_binary());
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--enable-module-command", "yes"])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .env("FENCE_SIMULATE_MISSING_API", missing)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if load_at_start {
            cmd.arg("--loadmodule").arg(module_path());
        }
        let child = cmd.spawn().expect("run redis-server");
        Bare { child, port, dir }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn conn(&self) -> redis::Connection {
        let url = format!("redis://127.0.0.1:{}/", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn module_load_fails_naming_a_missing_api_function() {
    for missing in [
        "RedisModule_IsIOError",
        "RedisModule_OpenKey",
        "RedisModule_Replicate",
    ] {
        let server = Bare::start(missing, false);
        let mut con = server.conn();
        let path = module_path();
        let reply = redis::cmd("MODULE")
            .arg("LOAD")
            .arg(path.to_str().expect("utf-8 path"))
            .query::<redis::Value>(&mut con);
        assert!(reply.is_err(), "{missing}: MODULE LOAD replied {reply:?}");
        let line =
            format!("fence: not loaded: this server lacks the module API function {missing}");
        assert!(
            wait_until(Duration::from_secs(10), || server.log().contains(&line)),
            "{missing}: no log line '{line}':\n{}",
            server.log()
        );
        // (Redis 8 lists built-in modules such as vectorset.)
        let modules = call(&mut con, &["MODULE", "LIST"]).expect("MODULE LIST");
        assert!(
            !format!("{modules:?}").contains("fence"),
            "{missing}: the module loaded: {modules:?}"
        );
        // Nothing of the module is registered.
        assert!(call(&mut con, &["LOCK.ACQUIRE", "l", "o", "1000"]).is_err());
    }
}

#[test]
fn a_loadmodule_line_fails_the_start_naming_the_function() {
    let mut server = Bare::start("RedisModule_CreateTimer", true);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server started:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status:?}");
    assert!(
        server
            .log()
            .contains("this server lacks the module API function RedisModule_CreateTimer"),
        "{}",
        server.log()
    );
}

#[test]
fn without_the_simulation_the_module_loads() {
    let server = Bare::start("", false);
    let mut con = server.conn();
    let path = module_path();
    okay(
        redis::cmd("MODULE")
            .arg("LOAD")
            .arg(path.to_str().expect("utf-8 path"))
            .query::<redis::Value>(&mut con),
    );
    int(call(&mut con, &["LOCK.ACQUIRE", "l", "o", "1000"]));
}
