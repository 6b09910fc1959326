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
