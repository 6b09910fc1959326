//! The client tests' harness is the workspace crate `fence-test-support` (one real
//! `redis-server` per test with the built module loaded; see its documentation for
//! `REDIS_SERVER` and `FENCE_MODULE`), plus what only these tests check.

// Each test binary compiles this file and uses only part of it.
#![allow(dead_code)]

pub use fence_test_support::*;

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

/// A server stopped with `SIGSTOP`: its sockets stay open and nothing is answered, as with a
/// hung server or a black-holed network. Continued (`SIGCONT`) when dropped, so a failing test
/// leaves no stopped process behind.
pub struct Paused(u32);

impl Paused {
    pub fn pause(server: &Server) -> Paused {
        signal(server.pid(), "-STOP");
        Paused(server.pid())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, which: &str) {
    let status = std::process::Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {which} {pid}");
}
