//! Clocks, polling and time checks that do not depend on the machine's speed.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, Value};

use crate::resp::{call, describe};

/// How long a test waits for something that happens within milliseconds on an idle machine
/// (a renewal, a closed connection, a reply): long enough for any scheduling delay of a loaded
/// one, so that only a real failure exhausts it.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(30);

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

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

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
