//! LOCK.ACQUIRE … WAIT: clients blocked inside Redis, granted in FIFO order, handed the lock
//! by a release, an expiry or a key that goes away; precise timeouts; replication of the
//! grants; a contention soak.
//!
//! No test here depends on the machine's speed. The only upper time bounds asserted are the
//! README's: a `WAIT` timeout, an expiry hand-off and a freed key's hand-off come from a module
//! timer, not from Redis's tick. Those tests run their server with `hz 1`, so anything that
//! waited for Redis's tick would answer up to a second late, and assert `PROMPT` (250 ms),
//! which a loaded machine meets with room to spare. Lower bounds (never before the deadline)
//! are exact. Latency figures are printed (`cargo test --test wait -- --nocapture`) and
//! measured by `make bench`, never asserted.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Barrier, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use fence_core::args::MAX_WAIT_MS;
use redis::{Connection, RedisResult, Value};

/// A waiter's reply and the moment it arrived.
type Outcome = (RedisResult<Value>, Instant);

/// How long a test waits for a state it expects soon (waiters to queue up, a reply): a bound
/// on a hang, not a measure of speed.
const SOON: Duration = Duration::from_secs(10);

/// Server arguments of the tests that time a module timer: Redis's own tick (which ends its
/// blocked clients' timeouts and deletes expired keys) then comes once a second, so a reply
/// that waited for it would come up to 1,000 ms late (`BLPOP k 0.02` answers after ~950 ms).
const HZ1: &[&str] = &["--hz", "1", "--dynamic-hz", "no"];

/// The bound on an answer that a module timer or a command gives "at once": well under
/// Redis's 1,000 ms tick at `hz 1`, and seconds-scale headroom over the few ms it takes.
const PROMPT: Duration = Duration::from_millis(250);

/// A call that must not block answers well within this; one that blocked would wait for a
/// holder whose lock lasts 60 s (or for the connection's read timeout).
const NOT_BLOCKED: Duration = Duration::from_secs(5);

/// The tests that measure time run one at a time, so they do not disturb each other.
fn timing() -> MutexGuard<'static, ()> {
    static TIMING: Mutex<()> = Mutex::new(());
    TIMING.lock().unwrap_or_else(|e| e.into_inner())
}

fn acquire(con: &mut Connection, key: &str, owner: &str, ttl: u64) -> RedisResult<Value> {
    call(con, &["LOCK.ACQUIRE", key, owner, &ttl.to_string()])
}

fn acquire_wait(
    con: &mut Connection,
    key: &str,
    owner: &str,
    ttl: u64,
    timeout: u64,
) -> RedisResult<Value> {
    call(
        con,
        &[
            "LOCK.ACQUIRE",
            key,
            owner,
            &ttl.to_string(),
            "WAIT",
            &timeout.to_string(),
        ],
    )
}

#[track_caller]
fn release(con: &mut Connection, key: &str, owner: &str) -> i64 {
    int(call(con, &["LOCK.RELEASE", key, owner]))
}

/// LOCK.STATUS under RESP2: (owner, token, ttl, waiters), None when the lock is free.
#[track_caller]
fn status(con: &mut Connection, key: &str) -> Option<(String, i64, i64, i64)> {
    match call(con, &["LOCK.STATUS", key]) {
        Ok(Value::Nil) => None,
        Ok(Value::Array(items)) => match items.as_slice() {
            [Value::BulkString(f1), Value::BulkString(owner), Value::BulkString(f2), Value::Int(token), Value::BulkString(f3), Value::Int(ttl), Value::BulkString(f4), Value::Int(waiters)]
                if f1 == b"owner" && f2 == b"token" && f3 == b"ttl" && f4 == b"waiters" =>
            {
                Some((
                    String::from_utf8(owner.clone()).expect("utf-8 owner"),
                    *token,
                    *ttl,
                    *waiters,
                ))
            }
            _ => panic!("LOCK.STATUS {key}: unexpected reply {items:?}"),
        },
        other => panic!("LOCK.STATUS {key}: unexpected reply {other:?}"),
    }
}

/// The `waiters` field of LOCK.STATUS (None when the lock is free).
#[track_caller]
fn waiters(con: &mut Connection, key: &str) -> Option<i64> {
    status(con, key).map(|s| s.3)
}

/// Waits (polling quickly) until LOCK.STATUS reports `n` waiters; panics after SOON.
#[track_caller]
fn wait_waiters(con: &mut Connection, key: &str, n: i64) {
    let deadline = Instant::now() + SOON;
    loop {
        let w = waiters(con, key);
        if w == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "LOCK.STATUS {key} still reports waiters {w:?}, expected {n}"
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// Starts a client (its own connection, its own thread) that sends
/// `LOCK.ACQUIRE key owner ttl WAIT timeout`; the thread returns the reply and when it came.
fn spawn_waiter(
    server: &Server,
    key: &str,
    owner: &str,
    ttl: u64,
    timeout: u64,
) -> JoinHandle<Outcome> {
    spawn_waiter_on(server.conn(), key, owner, ttl, timeout)
}

/// `spawn_waiter` on a connection made beforehand (when the wait must start quickly).
fn spawn_waiter_on(
    mut con: Connection,
    key: &str,
    owner: &str,
    ttl: u64,
    timeout: u64,
) -> JoinHandle<Outcome> {
    let (key, owner) = (key.to_string(), owner.to_string());
    thread::spawn(move || {
        let reply = acquire_wait(&mut con, &key, &owner, ttl, timeout);
        (reply, Instant::now())
    })
}

/// The waiter's outcome, or a panic if it has not answered within SOON.
#[track_caller]
fn join(waiter: JoinHandle<Outcome>) -> Outcome {
    let deadline = Instant::now() + SOON;
    while !waiter.is_finished() {
        assert!(Instant::now() < deadline, "a waiter was never answered");
        thread::sleep(Duration::from_millis(1));
    }
    match waiter.join() {
        Ok(outcome) => outcome,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A client that waits on a raw socket, so the test can drop its connection mid-wait.
fn raw_waiter(server: &Server, key: &str, owner: &str, ttl: u64, timeout: u64) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    let command = resp_command(&[
        "LOCK.ACQUIRE",
        key,
        owner,
        &ttl.to_string(),
        "WAIT",
        &timeout.to_string(),
    ]);
    stream.write_all(command.as_bytes()).expect("send");
    stream
}

/// No client is left blocked inside Redis (`INFO clients`).
#[track_caller]
fn assert_none_blocked(con: &mut Connection) {
    assert_eq!(
        info_int(con, "clients", "blocked_clients"),
        0,
        "clients are still blocked inside Redis"
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0..=100) of sorted values: the smallest value at or above which
/// lie no more than (100 - p)% of them.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

#[test]
fn wait_arguments_are_checked_and_a_bad_call_changes_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    let t = int(acquire(&mut con, "k", "holder", 60_000));
    let bad: &[(&[&str], &str)] = &[
        (
            &["LOCK.ACQUIRE", "k", "o", "1000", "WAIT", "-1"],
            &timeout_range(MAX_WAIT_MS),
        ),
        (
            &["LOCK.ACQUIRE", "k", "o", "1000", "WAIT", "abc"],
            &timeout_range(MAX_WAIT_MS),
        ),
        (
            &["LOCK.ACQUIRE", "k", "o", "1000", "WAIT", "1.5"],
            &timeout_range(MAX_WAIT_MS),
        ),
        (
            &["LOCK.ACQUIRE", "k", "o", "1000", "WAIT", TWO_POW_63],
            &timeout_range(MAX_WAIT_MS),
        ),
        (
            &["LOCK.ACQUIRE", "k", "o", "1000", "WAIT", "10", "WAIT", "10"],
            &repeated_option("WAIT"),
        ),
        (
            &["LOCK.ACQUIRE", "k", "o", "1000", "WAIT"],
            &missing_value("WAIT"),
        ),
        (
            &["LOCK.ACQUIRE", "k", "o", "1000", "NOWAIT", "10"],
            &unknown_option("NOWAIT"),
        ),
        (
            &["LOCK.ACQUIRE", "k", "o", "1000", "WAIT", "10", "X"],
            &unknown_option("X"),
        ),
    ];
    for (args, prefix) in bad {
        let started = Instant::now();
        assert_err_ctx(call(&mut con, args), prefix, args.join(" "));
        assert!(started.elapsed() < NOT_BLOCKED, "{args:?} blocked");
    }
    assert_eq!(
        status(&mut con, "k").map(|s| (s.0, s.1, s.3)),
        Some(("holder".into(), t, 0))
    );
    // The option is case-insensitive.
    let mut wcon = server.conn();
    let waiter = thread::spawn(move || {
        let reply = call(&mut wcon, &["LOCK.ACQUIRE", "k", "w", "60000", "wAiT", "0"]);
        (reply, Instant::now())
    });
    wait_waiters(&mut con, "k", 1);
    assert_eq!(release(&mut con, "k", "holder"), 1);
    let granted = int(join(waiter).0);
    assert!(granted > t);
}

#[test]
fn the_holder_reacquiring_with_wait_gets_its_token_at_once() {
    let server = Server::start();
    let mut con = server.conn();
    let t = int(acquire(&mut con, "k", "holder", 60_000));
    let waiter = spawn_waiter(&server, "k", "w", 60_000, 0);
    wait_waiters(&mut con, "k", 1);
    let started = Instant::now();
    assert_eq!(int(acquire_wait(&mut con, "k", "holder", 30_000, 0)), t);
    assert!(
        started.elapsed() < NOT_BLOCKED,
        "the holder's re-acquire blocked"
    );
    let s = status(&mut con, "k").expect("held");
    assert_eq!((s.0.as_str(), s.1, s.3), ("holder", t, 1));
    assert!(
        s.2 <= 30_000,
        "the re-acquire did not reset the TTL: {}",
        s.2
    );
    assert!(!waiter.is_finished());
    let released = Instant::now();
    assert_eq!(release(&mut con, "k", "holder"), 1);
    let granted = int(join(waiter).0);
    assert!(granted > t);
    let ttl = pttl(&mut con, "k");
    assert_ttl_since(ttl, 60_000, released, "the waiter's lock (its own ttl-ms)");
}

// ---------------------------------------------------------------------------------------------
// Hand-off by release
// ---------------------------------------------------------------------------------------------

enum Job {
    Wait,
    Release,
}

enum Done {
    Granted(i64, Instant),
    /// When the release was sent, and the owner LOCK.STATUS reported right behind it.
    Released(Instant, Option<String>),
}

/// Two clients pass the lock back and forth 1,000 times: each release hands it to the waiter
/// before the release returns (LOCK.STATUS pipelined right behind it already names the
/// waiter), with a larger token every time. The latency from the release to the waiter's
/// reply is printed; `make bench` measures and reports it (a figure, not a contract).
#[test]
fn release_hands_the_lock_to_the_waiter_before_it_returns() {
    const HANDOFFS: usize = 1_000;
    let server = Server::start();
    let mut monitor = server.conn();
    let key = "handoff";
    let owners = ["client-a", "client-b"];
    let first = int(acquire(&mut monitor, key, owners[0], 60_000));
    let mut latencies = Vec::with_capacity(HANDOFFS);
    thread::scope(|s| {
        let mut jobs = Vec::new();
        let mut dones = Vec::new();
        for owner in owners {
            let (job_tx, job_rx) = mpsc::channel::<Job>();
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            let mut con = server.conn();
            s.spawn(move || {
                for job in job_rx {
                    let done = match job {
                        Job::Wait => {
                            let reply = acquire_wait(&mut con, key, owner, 60_000, 0);
                            let at = Instant::now();
                            Done::Granted(int(reply), at)
                        }
                        Job::Release => {
                            let at = Instant::now();
                            let (released, after): (i64, Value) = redis::pipe()
                                .cmd("LOCK.RELEASE")
                                .arg(key)
                                .arg(owner)
                                .cmd("LOCK.STATUS")
                                .arg(key)
                                .query(&mut con)
                                .expect("release + status");
                            assert_eq!(released, 1, "{owner} release");
                            let holder = match after {
                                Value::Array(items) if items.len() == 8 => Some(text(&items[1])),
                                _ => None,
                            };
                            Done::Released(at, holder)
                        }
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            });
            jobs.push(job_tx);
            dones.push(done_rx);
        }
        let mut last = first;
        for i in 0..HANDOFFS {
            let (holder, waiter) = (i % 2, 1 - i % 2);
            jobs[waiter].send(Job::Wait).expect("waiter thread");
            wait_waiters(&mut monitor, key, 1);
            jobs[holder].send(Job::Release).expect("holder thread");
            let Ok(Done::Released(released, after)) = dones[holder].recv_timeout(SOON) else {
                panic!("hand-off {i}: the release did not complete");
            };
            assert_eq!(
                after.as_deref(),
                Some(owners[waiter]),
                "hand-off {i}: right after LOCK.RELEASE returned, the lock was not the waiter's"
            );
            let Ok(Done::Granted(token, granted)) = dones[waiter].recv_timeout(SOON) else {
                panic!("hand-off {i}: the waiter was not answered within {SOON:?}");
            };
            assert!(token > last, "hand-off {i}: token {token} not above {last}");
            last = token;
            latencies.push(granted.saturating_duration_since(released));
        }
        drop(jobs);
    });
    latencies.sort();
    println!(
        "hand-off latency over {HANDOFFS} hand-offs (release sent -> waiter's reply): \
         p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (reported by make bench, not asserted)",
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 99)),
        ms(latencies[latencies.len() - 1])
    );
}

// ---------------------------------------------------------------------------------------------
// FIFO and the queue rule
// ---------------------------------------------------------------------------------------------

/// What a waiter saw in its critical section.
#[derive(Debug)]
struct Turn {
    token: i64,
    status: Option<(String, i64, i64, i64)>,
    newcomer_after_release: Value,
}

#[test]
fn waiters_are_granted_in_fifo_order_and_nobody_jumps_the_queue() {
    const WAITERS: usize = 20;
    let server = Server::start();
    let mut con = server.conn();
    let key = "fifo";
    let first = int(acquire(&mut con, key, "holder", 60_000));
    // The order of grants, recorded inside the critical sections.
    let order = Mutex::new(Vec::new());
    let mut turns: Vec<Option<Turn>> = (0..WAITERS).map(|_| None).collect();
    thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..WAITERS {
            let mut wcon = server.conn();
            let order = &order;
            handles.push(s.spawn(move || {
                let owner = format!("waiter-{i}");
                let token = int(acquire_wait(&mut wcon, key, &owner, 60_000, 0));
                order.lock().unwrap().push(i);
                let status = status(&mut wcon, key);
                // Release, and right behind it (same batch) try to take the lock without WAIT.
                let (released, newcomer): (i64, Value) = redis::pipe()
                    .cmd("LOCK.RELEASE")
                    .arg(key)
                    .arg(&owner)
                    .cmd("LOCK.ACQUIRE")
                    .arg(key)
                    .arg("newcomer")
                    .arg(1000)
                    .query(&mut wcon)
                    .expect("release + newcomer");
                assert_eq!(released, 1, "{owner} could not release");
                Turn {
                    token,
                    status,
                    newcomer_after_release: newcomer,
                }
            }));
            // Each waiter is queued before the next one starts.
            wait_waiters(&mut con, key, i as i64 + 1);
            nil(acquire(&mut con, key, "newcomer", 1000));
        }
        let s = status(&mut con, key).expect("held");
        assert_eq!((s.0.as_str(), s.1, s.3), ("holder", first, WAITERS as i64));
        // The holder leaves; a newcomer right behind the release gets nil.
        let (released, newcomer): (i64, Value) = redis::pipe()
            .cmd("LOCK.RELEASE")
            .arg(key)
            .arg("holder")
            .cmd("LOCK.ACQUIRE")
            .arg(key)
            .arg("newcomer")
            .arg(1000)
            .query(&mut con)
            .expect("release + newcomer");
        assert_eq!(released, 1);
        assert_eq!(newcomer, Value::Nil, "a newcomer jumped the queue");
        for (i, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(turn) => turns[i] = Some(turn),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    let order = order.into_inner().unwrap();
    assert_eq!(
        order,
        (0..WAITERS).collect::<Vec<_>>(),
        "waiters were not granted in the order they started"
    );
    let mut last = first;
    for (k, turn) in turns.into_iter().enumerate() {
        let turn = turn.expect("every waiter finished");
        let owner = format!("waiter-{k}");
        assert!(
            turn.token > last,
            "{owner}: token {} after {last}",
            turn.token
        );
        last = turn.token;
        let s = turn.status.expect("held in its critical section");
        assert_eq!(
            (s.0.as_str(), s.1, s.3),
            (owner.as_str(), turn.token, (WAITERS - 1 - k) as i64),
            "LOCK.STATUS in {owner}'s critical section (owner, token, waiters)"
        );
        if k + 1 < WAITERS {
            assert_eq!(
                turn.newcomer_after_release,
                Value::Nil,
                "a newcomer took the lock right after {owner} released it, with waiters queued"
            );
        } else {
            assert!(
                matches!(turn.newcomer_after_release, Value::Int(t) if t > last),
                "with nobody waiting, the newcomer gets the lock: {:?}",
                turn.newcomer_after_release
            );
        }
    }
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.3)),
        Some(("newcomer".into(), 0))
    );
}

#[test]
fn a_free_lock_with_waiters_is_not_taken_by_a_newcomer() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    let key = "jump";

    // DEL frees the key; the hand-off runs from a timer, after this transaction.
    int(acquire(&mut con, key, "holder", 60_000));
    let waiter = spawn_waiter(&server, key, "w1", 60_000, 0);
    wait_waiters(&mut con, key, 1);
    let (deleted, newcomer, with_wait): (i64, Value, Value) = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(key)
        .cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg("newcomer")
        .arg(1000)
        .cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg("newcomer")
        .arg(1000)
        .arg("WAIT")
        .arg(0)
        .query(&mut con)
        .expect("MULTI DEL + acquire");
    assert_eq!(deleted, 1);
    assert_eq!(
        newcomer,
        Value::Nil,
        "a newcomer took a just-deleted lock from its waiter"
    );
    assert_eq!(
        with_wait,
        Value::Nil,
        "WAIT in MULTI acts as a plain acquire"
    );
    let t1 = int(join(waiter).0);
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1)),
        Some(("w1".into(), t1))
    );

    // The holder's TTL runs out while the server sleeps; the very next command, before any
    // timer can run, is a newcomer's acquire: it must not take the lock. The short TTL is
    // set in the same pipeline, once the waiter waits, so the setup's speed does not matter.
    assert_eq!(int(call(&mut con, &["DEL", key])), 1);
    let wcon = server.conn();
    int(acquire(&mut con, key, "holder", 60_000));
    let waiter = spawn_waiter_on(wcon, key, "w2", 60_000, 0);
    wait_waiters(&mut con, key, 1);
    let (shortened, slept, newcomer): (i64, Value, Value) = redis::pipe()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(100)
        .cmd("DEBUG")
        .arg("SLEEP")
        .arg("0.5")
        .cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg("newcomer")
        .arg(1000)
        .query(&mut con)
        .expect("PEXPIRE + DEBUG SLEEP + acquire");
    assert_eq!(shortened, 1, "the holder's lock was gone before the sleep");
    assert_eq!(slept, Value::Okay);
    assert_eq!(
        newcomer,
        Value::Nil,
        "a newcomer took an expired lock from its waiter"
    );
    let t2 = int(join(waiter).0);
    assert!(t2 > t1);
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1)),
        Some(("w2".into(), t2))
    );
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

/// `WAIT 20` answers nil after at least 20 ms and promptly after: from the module's own timer,
/// not at Redis's tick, which with `hz 1` comes once a second. Once a round has been answered
/// at a tick, every later round (started 50 ms after that reply) would wait ~950 ms for the
/// next one, so a server that relied on the tick fails this test every time.
#[test]
fn a_wait_times_out_with_nil_on_time_on_an_idle_server() {
    const ROUNDS: usize = 8;
    let _serial = timing();
    let server = Server::start_with(HZ1);
    let mut con = server.conn();
    let mut wcon = server.conn();
    let key = "timeout";
    let t = int(acquire(&mut con, key, "holder", 60_000));
    let mut measured = Vec::new();
    for _ in 0..ROUNDS {
        // Idle: nothing else happens on the server while the waiter waits.
        let started = Instant::now();
        let reply = acquire_wait(&mut wcon, key, "w", 1000, 20);
        let took = started.elapsed();
        nil(reply);
        measured.push(took);
        assert!(
            took >= Duration::from_millis(20),
            "WAIT 20 answered after {:.3} ms, before its timeout",
            ms(took)
        );
        assert!(
            took < Duration::from_millis(20) + PROMPT,
            "WAIT 20 answered after {:.3} ms on a server with hz 1: not from a module timer",
            ms(took)
        );
        assert_eq!(
            status(&mut con, key).map(|s| (s.0, s.1, s.3)),
            Some(("holder".into(), t, 0)),
            "the timed-out waiter is still counted"
        );
        assert_none_blocked(&mut con);
        sleep_ms(50);
    }
    let text: Vec<String> = measured.iter().map(|d| format!("{:.2}", ms(*d))).collect();
    println!(
        "WAIT 20 on a held lock, idle server (hz 1): nil after [{}] ms",
        text.join(", ")
    );
}

#[test]
fn wait_0_waits_beyond_the_timeouts_of_others_until_granted() {
    let server = Server::start();
    let mut con = server.conn();
    let key = "forever";
    let t = int(acquire(&mut con, key, "holder", 60_000));
    let started = Instant::now();
    let patient = spawn_waiter(&server, key, "patient", 60_000, 0);
    wait_waiters(&mut con, key, 1);
    let mut wcon = server.conn();
    nil(acquire_wait(&mut wcon, key, "hasty", 1000, 100));
    wait_waiters(&mut con, key, 1);
    let remaining = Duration::from_millis(300).saturating_sub(started.elapsed());
    thread::sleep(remaining);
    assert!(!patient.is_finished(), "WAIT 0 answered without a release");
    assert_eq!(waiters(&mut con, key), Some(1));
    assert_eq!(release(&mut con, key, "holder"), 1);
    let granted = int(join(patient).0);
    assert!(granted > t);
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1, s.3)),
        Some(("patient".into(), granted, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

/// Whether `n` waiters queued behind `holder` on `key` (LOCK.STATUS shows the holder and `n`
/// waiters) before the holder's lock ran out: false when the lock changed hands or went free
/// first, as on a machine too slow for a short TTL; the caller then starts over with a longer
/// one, so a slow machine costs time, never a failure or a vacuous pass. Panics after SOON.
#[track_caller]
fn queued_behind(con: &mut Connection, key: &str, holder: &str, n: i64) -> bool {
    let deadline = Instant::now() + SOON;
    loop {
        match status(con, key) {
            Some((owner, _, _, w)) if owner == holder => {
                if w == n {
                    return true;
                }
                assert!(w < n, "LOCK.STATUS {key}: {w} waiters, expected {n}");
            }
            _ => return false,
        }
        assert!(
            Instant::now() < deadline,
            "LOCK.STATUS {key} never showed {n} waiters behind {holder}"
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// The longest TTL a test lets its holder have while it queues waiters behind it: it starts
/// short and doubles each time the machine was too slow to queue them before the lock ran out.
const LONGEST_SETUP_TTL: u64 = 3_200;

/// A lock that expires with waiters is handed over by a module timer at its deadline, though
/// no command touches the key: never before it, and within `PROMPT` after it on a server with
/// `hz 1`, where Redis's own expiry would come up to a second late. The second waiter's
/// deadline lies one TTL after the first one's grant: had that grant come at a tick, the
/// second would wait ~800 ms for the next one.
#[test]
fn a_lock_that_expires_is_handed_to_the_first_waiter_at_its_deadline() {
    const ROUNDS: usize = 3;
    let _serial = timing();
    let server = Server::start_with(HZ1);
    let mut con = server.conn();
    let mut first_delays = Vec::new();
    let mut second_delays = Vec::new();
    let mut ttl: u64 = 200;
    let mut attempt = 0;
    while first_delays.len() < ROUNDS {
        attempt += 1;
        let key = format!("expiry-{attempt}");
        let key = key.as_str();
        let lease = Duration::from_millis(ttl);
        // The holder never releases, nor does the first waiter; nothing else touches the key.
        let (c1, c2) = (server.conn(), server.conn());
        let sent = Instant::now();
        let t = int(acquire(&mut con, key, "holder", ttl));
        let replied = Instant::now();
        let first = spawn_waiter_on(c1, key, "first", ttl, 0);
        let mut in_time = queued_behind(&mut con, key, "holder", 1);
        let second = spawn_waiter_on(c2, key, "second", 60_000, 0);
        in_time = in_time && queued_behind(&mut con, key, "holder", 2);
        if !in_time {
            // Slower than the TTL: nothing measured; try again with a longer one.
            int(join(first).0);
            int(join(second).0);
            assert!(
                ttl < LONGEST_SETUP_TTL,
                "two waiters could not queue within a lock's TTL of {ttl} ms"
            );
            println!("expiry hand-off: {ttl} ms passed before both waiters queued; doubling");
            ttl *= 2;
            continue;
        }

        let (reply, at) = join(first);
        let t1 = int(reply);
        assert!(t1 > t, "first waiter: token {t1} after {t}");
        // The holder's deadline lies between (sent + TTL) and (replied + TTL).
        let (earliest, latest) = (sent + lease, replied + lease);
        assert!(
            at + Duration::from_millis(1) >= earliest,
            "the first waiter was granted {:.3} ms before the holder's TTL ran out",
            ms(earliest.saturating_duration_since(at))
        );
        // At most this long after the deadline (it includes the holder's acquire round trip).
        let delay = at.saturating_duration_since(earliest);
        first_delays.push((at.saturating_duration_since(latest), delay));
        assert!(
            delay < PROMPT,
            "the first waiter was granted {:.3} ms after the holder's deadline (hz 1): not \
             from a module timer",
            ms(delay)
        );

        // The first waiter's own lock expires in turn: the second waiter is next.
        let (reply, at2) = join(second);
        let t2 = int(reply);
        assert!(t2 > t1, "second waiter: token {t2} after {t1}");
        assert!(
            at2 + Duration::from_millis(1) >= earliest + lease,
            "the second waiter was granted before two TTLs had passed"
        );
        // The first waiter's grant happened before its reply arrived: its deadline is at
        // most `at + TTL`, so this is a lower bound of the delay (it cannot fail a fast grant).
        let delay2 = at2.saturating_duration_since(at + lease);
        second_delays.push(delay2);
        assert!(
            delay2 < PROMPT,
            "the second waiter was granted {:.3} ms after the first waiter's deadline (hz 1)",
            ms(delay2)
        );
        assert_eq!(
            status(&mut con, key).map(|s| (s.0, s.1, s.3)),
            Some(("second".into(), t2, 0))
        );
    }
    let first_text: Vec<String> = first_delays
        .iter()
        .map(|(lo, hi)| format!("{:.2}..{:.2}", ms(*lo), ms(*hi)))
        .collect();
    let second_text: Vec<String> = second_delays
        .iter()
        .map(|d| format!("{:.2}", ms(*d)))
        .collect();
    println!(
        "expiry hand-off (TTL {ttl} ms, hz 1, client-side from grant + TTL): first waiter [{}] \
         ms after the deadline; next waiter at its predecessor's deadline [{}] ms",
        first_text.join(", "),
        second_text.join(", ")
    );
}

/// A holder that shortens its lock while a client waits (`LOCK.RENEW` or a re-acquire with a
/// shorter TTL) moves the hand-off earlier: the waiter is granted at the new deadline, by the
/// module's timer, not when Redis's tick gets round to expiring the key (`hz 1`: up to a
/// second later).
#[test]
fn a_lock_shortened_while_a_client_waits_is_handed_over_at_its_new_deadline() {
    let _serial = timing();
    let server = Server::start_with(HZ1);
    let mut con = server.conn();
    for (round, how) in ["LOCK.RENEW", "LOCK.ACQUIRE"].into_iter().enumerate() {
        let key = format!("shortened-{round}");
        let key = key.as_str();
        let t = int(acquire(&mut con, key, "holder", 600_000));
        let waiter = spawn_waiter(&server, key, "w", 60_000, 0);
        wait_waiters(&mut con, key, 1);
        let sent = Instant::now();
        assert_eq!(
            int(call(&mut con, &[how, key, "holder", "300"])),
            t,
            "{how}"
        );
        let (reply, at) = join(waiter);
        assert!(int(reply) > t);
        let after = at.saturating_duration_since(sent);
        println!(
            "{how} 300 with a waiter: granted {:.1} ms after it was sent",
            ms(after)
        );
        assert!(
            after >= Duration::from_millis(299),
            "{how}: granted {:.3} ms after a TTL of 300 ms was set",
            ms(after)
        );
        assert!(
            after < Duration::from_millis(300) + PROMPT,
            "{how}: granted {:.3} ms after a TTL of 300 ms was set: the module's timer still \
             waited for the old deadline",
            ms(after)
        );
    }
}

/// A lock renewed while a client waits is handed over at its new deadline, not its old one.
/// The grant's time proves it either way (never before the new deadline, and within `PROMPT`
/// after it on a server with `hz 1`); LOCK.STATUS between the two deadlines is checked only
/// when it was read before the new one, so a slow machine cannot fail it.
#[test]
fn a_renewed_lock_is_not_handed_over_at_its_old_deadline() {
    let _serial = timing();
    let server = Server::start_with(HZ1);
    let mut con = server.conn();
    let mut old_ttl: u64 = 300;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let key = format!("renewed-{attempt}");
        let key = key.as_str();
        let wcon = server.conn();
        let t = int(acquire(&mut con, key, "holder", old_ttl));
        let waiter = spawn_waiter_on(wcon, key, "w", 60_000, 0);
        // The waiter queues and the holder renews, both before the old deadline (else: again,
        // with a longer one).
        let queued = queued_behind(&mut con, key, "holder", 1);
        let new_ttl = Duration::from_millis(old_ttl + 1_200);
        // The old deadline comes before this (the acquire was sent earlier).
        let renewed_at = Instant::now();
        let renewed = queued
            && match call(
                &mut con,
                &[
                    "LOCK.RENEW",
                    key,
                    "holder",
                    &new_ttl.as_millis().to_string(),
                ],
            ) {
                Ok(Value::Int(token)) => {
                    assert_eq!(token, t, "LOCK.RENEW");
                    true
                }
                Ok(Value::Nil) => false,
                other => panic!("LOCK.RENEW replied {other:?}"),
            };
        if !renewed {
            int(join(waiter).0);
            assert!(
                old_ttl < LONGEST_SETUP_TTL,
                "could not queue a waiter and renew within a lock's TTL of {old_ttl} ms"
            );
            println!("renew: {old_ttl} ms passed before the waiter queued and the renew; doubling");
            old_ttl *= 2;
            continue;
        }
        // Well past the old deadline, the holder still holds the lock.
        thread::sleep(
            (renewed_at + Duration::from_millis(old_ttl + 300))
                .saturating_duration_since(Instant::now()),
        );
        let s = status(&mut con, key);
        if renewed_at.elapsed() < new_ttl {
            assert_eq!(
                s.map(|s| (s.0, s.1, s.3)),
                Some(("holder".into(), t, 1)),
                "between the old and the new deadline"
            );
        } else {
            println!("LOCK.STATUS came after the new deadline; the grant's time is the check");
        }
        let (reply, at) = join(waiter);
        let granted = int(reply);
        assert!(granted > t);
        let after = at.saturating_duration_since(renewed_at);
        assert!(
            after + Duration::from_millis(1) >= new_ttl,
            "granted {:.3} ms after a renew of {} ms: before the new deadline",
            ms(after),
            new_ttl.as_millis()
        );
        assert!(
            after < new_ttl + PROMPT,
            "granted {:.3} ms after a renew of {} ms (hz 1): not at the new deadline",
            ms(after),
            new_ttl.as_millis()
        );
        return;
    }
}

#[test]
fn client_unblock_ends_a_wait_and_the_queue_forgets_it() {
    let server = Server::start();
    let mut con = server.conn();
    let key = "unblock";
    let t = int(acquire(&mut con, key, "holder", 60_000));
    let mut ids = Vec::new();
    let mut handles = Vec::new();
    for owner in ["w1", "w2", "w3"] {
        let mut wcon = server.conn();
        ids.push(int(call(&mut wcon, &["CLIENT", "ID"])).to_string());
        handles.push(spawn_waiter_on(wcon, key, owner, 60_000, 0));
        wait_waiters(&mut con, key, ids.len() as i64);
    }
    let mut handles = handles.into_iter();
    let (w1, w2, w3) = (
        handles.next().unwrap(),
        handles.next().unwrap(),
        handles.next().unwrap(),
    );
    // As a timeout: nil.
    assert_eq!(int(call(&mut con, &["CLIENT", "UNBLOCK", &ids[0]])), 1);
    nil(join(w1).0);
    wait_waiters(&mut con, key, 2);
    // As an error.
    assert_eq!(
        int(call(&mut con, &["CLIENT", "UNBLOCK", &ids[1], "ERROR"])),
        1
    );
    assert_err(join(w2).0, "UNBLOCKED");
    wait_waiters(&mut con, key, 1);
    // The last waiter is next in line.
    assert_eq!(release(&mut con, key, "holder"), 1);
    let granted = int(join(w3).0);
    assert!(granted > t);
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1, s.3)),
        Some(("w3".into(), granted, 0))
    );
    assert_none_blocked(&mut con);
}

// ---------------------------------------------------------------------------------------------
// Keys that go away or change type
// ---------------------------------------------------------------------------------------------

/// A holder in `db` and one waiter; `free` runs on the holder's connection; the waiter must be
/// granted at once: within `PROMPT`, on a server started with `HZ1` (a grant that waited for
/// Redis's tick would come up to a second later). Returns (holder's token, waiter's token,
/// the connection).
fn granted_when(server: &Server, db: i64, what: &str, free: &[&[&str]]) -> (i64, i64, Connection) {
    let mut con = server.conn();
    okay(call(&mut con, &["SELECT", &db.to_string()]));
    let key = "k";
    let held = int(acquire(&mut con, key, "holder", 60_000));
    let mut wcon = server.conn();
    okay(call(&mut wcon, &["SELECT", &db.to_string()]));
    let waiter = thread::spawn(move || {
        let reply = acquire_wait(&mut wcon, "k", "waiter", 60_000, 10_000);
        (reply, Instant::now())
    });
    wait_waiters(&mut con, key, 1);
    let started = Instant::now();
    for args in free {
        call(&mut con, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    let (reply, at) = join(waiter);
    let delay = at.saturating_duration_since(started);
    let token = int(reply);
    println!("{what}: the waiter was granted {:.3} ms later", ms(delay));
    assert!(
        delay < PROMPT,
        "{what}: the waiter was granted only after {:.3} ms (hz 1)",
        ms(delay)
    );
    assert!(token > held, "{what}: token {token} after {held}");
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1, s.3)),
        Some(("waiter".into(), token, 0)),
        "{what}"
    );
    (held, token, con)
}

#[test]
fn del_frees_the_key_for_its_waiter() {
    let server = Server::start_with(HZ1);
    granted_when(&server, 0, "DEL", &[&["DEL", "k"]]);
}

#[test]
fn unlink_frees_the_key_for_its_waiter_in_another_db() {
    let server = Server::start_with(HZ1);
    granted_when(&server, 2, "UNLINK (db 2)", &[&["UNLINK", "k"]]);
}

#[test]
fn flushall_frees_the_key_for_its_waiter() {
    let server = Server::start_with(HZ1);
    granted_when(&server, 0, "FLUSHALL", &[&["FLUSHALL"]]);
    let server = Server::start_with(HZ1);
    granted_when(
        &server,
        3,
        "FLUSHALL ASYNC (db 3)",
        &[&["FLUSHALL", "ASYNC"]],
    );
}

/// FLUSHDB frees only its own database's keys. The negative half does not depend on timing:
/// once `settle` returns, every module timer the FLUSHDB armed has run, and LOCK.STATUS (the
/// server's own state) still shows the holder and its waiter. The prompt grant of a flushed
/// key is timed with `hz 1` in `flushdb_in_another_db_frees_the_key_there`.
#[test]
fn flushdb_frees_the_key_for_its_waiter_and_only_in_its_db() {
    let server = Server::start();
    let mut con = server.conn();
    int(acquire(&mut con, "k", "holder", 60_000));
    let waiter = spawn_waiter(&server, "k", "w", 60_000, 0);
    wait_waiters(&mut con, "k", 1);
    okay(call(&mut con, &["SELECT", "5"]));
    okay(call(&mut con, &["FLUSHDB"]));
    okay(call(&mut con, &["SELECT", "0"]));
    // Past Redis's 100 ms tick too, then past every timer due by now.
    sleep_ms(150);
    settle(&mut con);
    assert_eq!(
        status(&mut con, "k").map(|s| (s.0, s.3)),
        Some(("holder".into(), 1)),
        "FLUSHDB of db 5 touched the lock or the waiter of db 0"
    );
    assert!(
        !waiter.is_finished(),
        "FLUSHDB of db 5 answered a waiter of db 0"
    );
    drop(con);
    let started = Instant::now();
    let mut con = server.conn();
    okay(call(&mut con, &["FLUSHDB"]));
    let (reply, at) = join(waiter);
    int(reply);
    let delay = at.saturating_duration_since(started);
    println!("FLUSHDB: the waiter was granted {:.3} ms later", ms(delay));
    assert!(delay < PROMPT, "FLUSHDB: {:.3} ms", ms(delay));
    assert_eq!(
        status(&mut con, "k").map(|s| (s.0, s.3)),
        Some(("w".into(), 0))
    );
}

#[test]
fn flushdb_in_another_db_frees_the_key_there() {
    let server = Server::start_with(HZ1);
    granted_when(&server, 4, "FLUSHDB (db 4)", &[&["FLUSHDB"]]);
}

#[test]
fn rename_away_frees_the_key_for_its_waiter() {
    let server = Server::start_with(HZ1);
    let (held, _, mut con) = granted_when(&server, 0, "RENAME away", &[&["RENAME", "k", "moved"]]);
    assert_eq!(
        status(&mut con, "moved").map(|s| (s.0, s.1)),
        Some(("holder".into(), held)),
        "the renamed lock keeps its owner and token"
    );
}

#[test]
fn move_to_another_db_frees_the_key_for_its_waiter() {
    let server = Server::start_with(HZ1);
    let (held, _, mut con) = granted_when(&server, 0, "MOVE to db 1", &[&["MOVE", "k", "1"]]);
    okay(call(&mut con, &["SELECT", "1"]));
    assert_eq!(
        status(&mut con, "k").map(|s| (s.0, s.1)),
        Some(("holder".into(), held)),
        "the moved lock keeps its owner and token"
    );
}

#[test]
fn set_over_a_waited_key_fails_every_waiter_with_wrongtype() {
    let server = Server::start_with(HZ1);
    let mut con = server.conn();
    int(acquire(&mut con, "k", "holder", 60_000));
    let w1 = spawn_waiter(&server, "k", "w1", 60_000, 0);
    wait_waiters(&mut con, "k", 1);
    let w2 = spawn_waiter(&server, "k", "w2", 60_000, 10_000);
    wait_waiters(&mut con, "k", 2);
    let started = Instant::now();
    okay(call(&mut con, &["SET", "k", "plain"]));
    for (name, w) in [("w1", w1), ("w2", w2)] {
        let (reply, at) = join(w);
        assert_err_ctx(reply, WRONGTYPE, name);
        let delay = at.saturating_duration_since(started);
        assert!(
            delay < PROMPT,
            "{name} got WRONGTYPE only after {:.3} ms (hz 1)",
            ms(delay)
        );
    }
    assert_eq!(get_string(&mut con, "k").as_deref(), Some("plain"));
    assert_err(call(&mut con, &["LOCK.STATUS", "k"]), WRONGTYPE);
    assert_none_blocked(&mut con);
    // Nothing of the old queue is left behind.
    okay(call(&mut con, &["SET", "k", "again"]));
    int(call(&mut con, &["DEL", "k"]));
    let t = int(acquire(&mut con, "k", "next", 60_000));
    assert_eq!(
        status(&mut con, "k").map(|s| (s.0, s.1, s.3)),
        Some(("next".into(), t, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Disconnects
// ---------------------------------------------------------------------------------------------

#[test]
fn a_waiter_that_disconnects_is_skipped() {
    let mut server = Server::start();
    let mut con = server.conn();
    let key = "dc";
    let t = int(acquire(&mut con, key, "holder", 60_000));
    // Waiter 1 (with a deadline timer) queues first, then waiter 2. Its 1,000 ms deadline
    // timer was armed before LOCK.STATUS saw it queued.
    let w1 = raw_waiter(&server, key, "w1", 60_000, 1000);
    wait_waiters(&mut con, key, 1);
    let w1_deadline = Instant::now() + Duration::from_millis(1000);
    let w2 = spawn_waiter(&server, key, "w2", 60_000, 0);
    wait_waiters(&mut con, key, 2);
    w1.shutdown(Shutdown::Both).expect("shutdown");
    drop(w1);
    wait_waiters(&mut con, key, 1);
    // Waiter 3 queues behind waiter 2 and goes away too.
    let w3 = raw_waiter(&server, key, "w3", 60_000, 0);
    wait_waiters(&mut con, key, 2);
    drop(w3);
    wait_waiters(&mut con, key, 1);
    assert_eq!(release(&mut con, key, "holder"), 1);
    let granted = int(join(w2).0);
    assert!(granted > t);
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1, s.3)),
        Some(("w2".into(), granted, 0))
    );
    // Waiter 1's deadline passes after it left: nothing happens. Past the deadline, `settle`
    // makes sure its timer (had it not been stopped) has run.
    thread::sleep(
        w1_deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(10),
    );
    settle(&mut con);
    server.assert_alive();
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1, s.3)),
        Some(("w2".into(), granted, 0))
    );
    assert_none_blocked(&mut con);
}

// ---------------------------------------------------------------------------------------------
// MULTI/EXEC and Lua
// ---------------------------------------------------------------------------------------------

#[test]
fn wait_inside_multi_and_lua_does_not_block() {
    let server = Server::start();
    let mut con = server.conn();
    let mut other = server.conn();
    // A call that blocked would wait for the 60 s holder: this read timeout ends it first.
    other
        .set_read_timeout(Some(NOT_BLOCKED * 2))
        .expect("read timeout");
    let t = int(acquire(&mut con, "k", "holder", 60_000));

    let started = Instant::now();
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("LOCK.ACQUIRE")
        .arg("k")
        .arg("o")
        .arg(1000)
        .arg("WAIT")
        .arg(0)
        .cmd("LOCK.ACQUIRE")
        .arg("free")
        .arg("o")
        .arg(1000)
        .arg("WAIT")
        .arg(0)
        .query(&mut other)
        .expect("MULTI/EXEC");
    assert!(started.elapsed() < NOT_BLOCKED, "EXEC blocked");
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0], Value::Nil, "WAIT in MULTI on a held lock");
    assert!(
        matches!(replies[1], Value::Int(n) if n > t),
        "{:?}",
        replies[1]
    );

    let script = "return redis.call('LOCK.ACQUIRE', KEYS[1], 'o', '1000', 'WAIT', '0')";
    let started = Instant::now();
    nil(call(&mut other, &["EVAL", script, "1", "k"]));
    assert!(started.elapsed() < NOT_BLOCKED, "EVAL blocked");
    let granted = int(call(&mut other, &["EVAL", script, "1", "free2"]));
    assert!(granted > t);

    assert_eq!(
        status(&mut con, "k").map(|s| (s.0, s.1, s.3)),
        Some(("holder".into(), t, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Replication and role changes
// ---------------------------------------------------------------------------------------------

#[test]
fn grants_to_waiters_reach_the_replica_with_the_same_token() {
    let master = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = master.port().to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port]);
    wait_for_sync(&master, &replica, Duration::from_secs(10));
    let mut mcon = master.conn();
    let mut rcon = replica.conn();
    // After a diskless sync the master streams to the replica only once the replica has
    // acknowledged (up to a second later): make sure the stream flows before timing anything.
    okay(call(&mut mcon, &["SET", "warm-up", "1"]));
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "5000"])), 1);
    wait_for_sync(&master, &replica, Duration::from_secs(10));
    let key = "repl";
    let t0 = int(acquire(&mut mcon, key, "holder", 60_000));

    // Granted by a release.
    let w1 = spawn_waiter(&master, key, "w1", 30_000, 0);
    wait_waiters(&mut mcon, key, 1);
    assert_eq!(release(&mut mcon, key, "holder"), 1);
    let t1 = int(join(w1).0);
    assert!(t1 > t0);
    wait_for_sync(&master, &replica, Duration::from_secs(10));
    let on_replica = status(&mut rcon, key).expect("the replica has the lock");
    assert_eq!((on_replica.0.as_str(), on_replica.1), ("w1", t1));
    assert!(
        (1..=30_000).contains(&on_replica.2),
        "replica ttl {}",
        on_replica.2
    );

    // Granted by expiry: w1 never releases. Its lock is made to expire only once w2 waits,
    // however long the steps above took.
    let w2 = spawn_waiter(&master, key, "w2", 60_000, 0);
    wait_waiters(&mut mcon, key, 1);
    assert_eq!(int(call(&mut mcon, &["PEXPIRE", key, "200"])), 1);
    let t2 = int(join(w2).0);
    assert!(t2 > t1);
    wait_for_sync(&master, &replica, Duration::from_secs(10));
    // The grant replicates its absolute expiry: the two TTLs differ by no more than the time
    // between the two readings.
    let read = Instant::now();
    let on_master = status(&mut mcon, key).expect("held");
    let on_replica = status(&mut rcon, key).expect("the replica has the lock");
    let between = elapsed_ms_ceil(read) + 1;
    assert_eq!((on_master.0.as_str(), on_master.1), ("w2", t2));
    assert_eq!((on_replica.0.as_str(), on_replica.1), ("w2", t2));
    assert!(
        (on_master.2 - on_replica.2).abs() <= between,
        "ttl on master {} and replica {}, read within {between} ms",
        on_master.2,
        on_replica.2
    );
    let errors = replication_errors(&replica.log());
    assert!(errors.is_empty(), "replica log: {errors:?}");
}

#[test]
fn a_waiter_is_unblocked_with_an_error_when_the_server_becomes_a_replica() {
    let mut server = Server::start();
    let new_master = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let mut con = server.conn();
    let mut ncon = new_master.conn();
    let key = "role";
    int(acquire(&mut con, key, "holder", 60_000));
    let waiter = spawn_waiter(&server, key, "w", 60_000, 0);
    wait_waiters(&mut con, key, 1);
    // The new master holds the same key, so the server will hold it too after the sync.
    let t_new = int(acquire(&mut ncon, key, "other", 60_000));
    let port = new_master.port().to_string();
    okay(call(&mut con, &["REPLICAOF", "127.0.0.1", &port]));
    let (reply, _) = join(waiter);
    let text = assert_err(reply, "UNBLOCKED");
    println!("a waiter when its server becomes a replica gets: {text}");
    wait_for_sync(&new_master, &server, Duration::from_secs(10));
    server.assert_alive();
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1, s.3)),
        Some(("other".into(), t_new, 0)),
        "the replica's copy of the lock, with no waiters left over"
    );
    // Back to master: waiting works again, with nothing stale in the queue.
    okay(call(&mut con, &["REPLICAOF", "NO", "ONE"]));
    let waiter = spawn_waiter(&server, key, "w-again", 60_000, 0);
    wait_waiters(&mut con, key, 1);
    assert_eq!(release(&mut con, key, "other"), 1);
    let granted = int(join(waiter).0);
    assert!(granted > t_new);
    assert_eq!(
        status(&mut con, key).map(|s| (s.0, s.1, s.3)),
        Some(("w-again".into(), granted, 0))
    );
}

/// A waiter whose client asked for redirects (`CLIENT CAPA redirect`, Valkey 8+) is one Valkey
/// leaves blocked when its server becomes a replica (it redirects only clients blocked on
/// keys): the module answers it, in Redis's words, instead of letting it wait out its timeout
/// and get nil (a "timed out" that hides the role change). Redis has no such capability and
/// answers the waiter itself, then closes its connection; after the module's answer the
/// connection stays open.
#[test]
fn a_waiter_that_accepts_redirects_is_unblocked_with_an_error_when_the_server_becomes_a_replica() {
    let mut server = Server::start();
    let new_master = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let mut con = server.conn();
    let id = server_identity(&mut con);
    let key = "role-redirect";
    int(acquire(&mut con, key, "holder", 60_000));
    let mut wcon = server.conn();
    let capa = call(&mut wcon, &["CLIENT", "CAPA", "redirect"]);
    if id.is_valkey_at_least((8, 0)) {
        okay(capa);
    } else {
        assert!(
            capa.is_err(),
            "{id} accepted CLIENT CAPA redirect: {capa:?}"
        );
    }
    let waiter = thread::spawn(move || {
        let reply = acquire_wait(&mut wcon, "role-redirect", "w", 60_000, 0);
        (reply, Instant::now(), wcon)
    });
    wait_waiters(&mut con, key, 1);
    let port = new_master.port().to_string();
    okay(call(&mut con, &["REPLICAOF", "127.0.0.1", &port]));
    let deadline = Instant::now() + SOON;
    while !waiter.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{id}: the waiter was not answered when its server became a replica"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let (reply, _, mut wcon) = waiter.join().expect("waiter thread");
    let text = assert_err(reply, "UNBLOCKED");
    assert_eq!(text, UNBLOCKED_NOT_MASTER, "{id}");
    let module_answered = server
        .log()
        .contains("fence: now a replica: 1 waiting LOCK.ACQUIRE call(s) answered UNBLOCKED");
    let after = call(&mut wcon, &["PING"]);
    if id.is_valkey() {
        assert!(
            module_answered,
            "{id}: the server answered the waiter itself"
        );
        assert!(after.is_ok(), "{id}: the connection was closed: {after:?}");
    } else {
        assert!(
            !module_answered,
            "{id}: the server left the waiter to the module"
        );
        assert!(
            after.is_err(),
            "{id}: the connection stayed open: {after:?}"
        );
    }
    server.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn tokens_given_to_waiters_exceed_every_earlier_token() {
    let server = Server::start();
    let mut con = server.conn();
    let key = "tok";
    let mut highest = 0;
    let check = |what: &str, token: i64, floor_us: i64, highest: &mut i64| {
        assert!(
            token > *highest,
            "{what}: token {token} not above every earlier token ({highest})"
        );
        assert!(
            token >= floor_us,
            "{what}: token {token} below the clock {floor_us}"
        );
        *highest = token;
    };
    // Other keys take tokens in between; each waiter's must still be above all of them.
    let before = now_us();
    let t = int(acquire(&mut con, key, "holder", 60_000));
    check("first holder", t, before, &mut highest);
    for (round, how) in ["release", "expiry", "DEL", "UNLINK", "FLUSHALL"]
        .into_iter()
        .enumerate()
    {
        let owner = format!("w{round}");
        if how == "expiry" {
            // The current holder must expire: replace it with one of its own, made to expire
            // (below) only once the waiter waits, however long the steps between take.
            let holder = status(&mut con, key).expect("held").0;
            assert_eq!(release(&mut con, key, &holder), 1);
            let before = now_us();
            let t = int(acquire(&mut con, key, "short", 60_000));
            check("short holder", t, before, &mut highest);
        }
        let other = format!("other-{round}");
        let before = now_us();
        let t = int(acquire(&mut con, &other, "x", 60_000));
        check("another key", t, before, &mut highest);
        // The waiter cannot be granted before it asks.
        let asked = now_us();
        let waiter = spawn_waiter(&server, key, &owner, 60_000, 0);
        wait_waiters(&mut con, key, 1);
        let holder = status(&mut con, key).expect("held").0;
        match how {
            "release" => assert_eq!(release(&mut con, key, &holder), 1),
            "expiry" => assert_eq!(int(call(&mut con, &["PEXPIRE", key, "100"])), 1),
            "DEL" | "UNLINK" => assert_eq!(int(call(&mut con, &[how, key])), 1),
            _ => okay(call(&mut con, &[how])),
        }
        let granted = int(join(waiter).0);
        check(
            &format!("waiter granted by {how}"),
            granted,
            asked,
            &mut highest,
        );
        assert_eq!(
            status(&mut con, key).map(|s| (s.0, s.1)),
            Some((owner, granted))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Contention soak
// ---------------------------------------------------------------------------------------------

/// 50 clients, 200 acquisitions each, on one key: every `WAIT 0` acquire succeeds, one holder
/// at a time, with strictly rising tokens. How long the waits took is printed (`make bench`
/// reports the contended lock's figures), not asserted; a client that never got its turn
/// fails on its connection's read timeout.
#[test]
fn contention_soak_every_acquire_succeeds_one_holder_at_a_time() {
    const CLIENTS: usize = 50;
    const ROUNDS: usize = 200;
    let _serial = timing();
    let mut server = Server::start();
    let key = "soak";
    let list = "soak:tokens";
    let inside = AtomicUsize::new(0);
    let barrier = Barrier::new(CLIENTS);
    let started = Instant::now();
    let waits: Vec<(usize, Duration, Duration, Duration)> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let mut con = server.conn();
                let (inside, barrier) = (&inside, &barrier);
                s.spawn(move || {
                    let owner = format!("client-{c}");
                    let mut min = Duration::MAX;
                    let mut max = Duration::ZERO;
                    let mut total = Duration::ZERO;
                    barrier.wait();
                    for round in 0..ROUNDS {
                        let asked = Instant::now();
                        let reply = acquire_wait(&mut con, key, &owner, 10_000, 0);
                        let waited = asked.elapsed();
                        let token = match reply {
                            Ok(Value::Int(t)) => t,
                            other => panic!("{owner} round {round}: acquire replied {other:?}"),
                        };
                        let others = inside.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(others, 0, "{owner} round {round}: another holder inside");
                        min = min.min(waited);
                        max = max.max(waited);
                        total += waited;
                        let (_, st): (i64, Value) = redis::pipe()
                            .cmd("RPUSH")
                            .arg(list)
                            .arg(token)
                            .cmd("LOCK.STATUS")
                            .arg(key)
                            .query(&mut con)
                            .expect("critical section");
                        let items = match st {
                            Value::Array(items) if items.len() == 8 => items,
                            other => panic!("{owner} round {round}: LOCK.STATUS {other:?}"),
                        };
                        assert_eq!(
                            (text(&items[1]), items[3].clone()),
                            (owner.clone(), Value::Int(token)),
                            "{owner} round {round}: LOCK.STATUS in the critical section"
                        );
                        inside.fetch_sub(1, Ordering::SeqCst);
                        assert_eq!(
                            release(&mut con, key, &owner),
                            1,
                            "{owner} round {round}: release"
                        );
                    }
                    (c, min, max, total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut con = server.conn();
    let tokens: Vec<i64> = redis::cmd("LRANGE")
        .arg(list)
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .expect("LRANGE");
    assert_eq!(tokens.len(), CLIENTS * ROUNDS, "acquisitions recorded");
    if let Some(w) = tokens.windows(2).find(|w| w[0] >= w[1]) {
        panic!("tokens not strictly increasing: {} then {}", w[0], w[1]);
    }
    let fastest = waits.iter().map(|w| w.1).min().unwrap_or_default();
    let slowest = waits.iter().map(|w| w.2).max().unwrap_or_default();
    let mean_max = waits.iter().map(|w| ms(w.2)).sum::<f64>() / CLIENTS as f64;
    let totals: Vec<f64> = waits.iter().map(|w| ms(w.3)).collect();
    let (tmin, tmax) = totals
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &t| (a.min(t), b.max(t)));
    println!(
        "contention soak: {CLIENTS} clients x {ROUNDS} acquisitions = {} in {:.2} s \
         ({:.0} hand-offs/s); per-acquire wait: min {:.3} ms, max {:.3} ms (mean of per-client \
         max {:.3} ms); total wait per client {:.0}..{:.0} ms",
        tokens.len(),
        elapsed.as_secs_f64(),
        tokens.len() as f64 / elapsed.as_secs_f64(),
        ms(fastest),
        ms(slowest),
        mean_max,
        tmin,
        tmax
    );
    assert_none_blocked(&mut con);
    assert_eq!(status(&mut con, key), None, "the lock is free at the end");
    server.assert_alive();
}

/// While writes are paused (CLIENT PAUSE WRITE, as FAILOVER and cluster manual failovers do),
/// Redis neither deletes expired keys nor runs writes: a lock that expires then is not handed
/// over (that would write, and over a key Redis only hides); the waiter is granted once the
/// pause ends, and the server stays up. The lock's short TTL and the pause are set in one
/// pipeline once the waiter waits, so the lock expires inside the pause however slow the
/// setup was. Redis itself ends a pause only at its next tick (Redis 7.0 with `hz 1` ends an
/// 800 ms pause up to a second late), so this server keeps the default `hz 10` and the bound
/// after the pause leaves that tick and a loaded machine plenty of room.
#[test]
fn an_expiry_during_a_write_pause_is_handed_over_after_the_pause() {
    const PAUSE: Duration = Duration::from_millis(800);
    /// Redis's 100 ms tick ends the pause, the module looks every 10 ms; the rest is slack.
    const AFTER_PAUSE: Duration = Duration::from_millis(700);
    let _t = timing();
    let mut server = Server::start();
    let mut con = server.conn();
    int(acquire(&mut con, "l", "holder", 60_000));
    let waiter = spawn_waiter(&server, "l", "waiter", 10_000, 0);
    wait_waiters(&mut con, "l", 1);
    // The pause begins after this instant and ends no earlier than PAUSE later.
    let pause_sent = Instant::now();
    let (shortened, paused_ok): (i64, Value) = redis::pipe()
        .cmd("PEXPIRE")
        .arg("l")
        .arg(150)
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg(PAUSE.as_millis() as u64)
        .arg("WRITE")
        .query(&mut con)
        .expect("PEXPIRE + CLIENT PAUSE");
    // The pause began before this instant and ends no later than PAUSE after it.
    let paused = Instant::now();
    assert_eq!(shortened, 1, "the holder's lock was gone before the pause");
    assert_eq!(paused_ok, Value::Okay);
    // Past the lock's deadline: if the pause is surely still on, nobody has been granted.
    thread::sleep(Duration::from_millis(400));
    let finished = waiter.is_finished();
    if paused.elapsed() < PAUSE {
        assert!(!finished, "granted while writes were paused");
    }
    let (reply, at) = join(waiter);
    let token = match reply {
        Ok(Value::Int(t)) => t,
        other => panic!("the waiter got {other:?}"),
    };
    let after = at.saturating_duration_since(pause_sent);
    println!(
        "granted {} ms after an {} ms pause began",
        after.as_millis(),
        PAUSE.as_millis()
    );
    assert!(
        after + Duration::from_millis(1) >= PAUSE,
        "granted before the pause ended: {after:?}"
    );
    let late = at.saturating_duration_since(paused + PAUSE);
    assert!(
        late < AFTER_PAUSE,
        "granted {late:?} after the pause's end at the latest: not promptly after it"
    );
    assert_eq!(
        status(&mut con, "l").map(|s| (s.0, s.1)),
        Some(("waiter".to_string(), token))
    );
    server.assert_alive();
}
