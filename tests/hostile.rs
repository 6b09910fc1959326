//! What reaches the module by other doors than its commands, and the edges of its own
//! contract: far-ahead tokens in files and full syncs (the token clock's ceiling), SWAPDB
//! under waiters, an `EVENTS` stream without room, lowered limits, the holder's own queued
//! call, a plain string taken for an expired lock, and the encoding of plain-string stocks.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use fence_core::config::MAX_ID_LENGTH;
use redis::{Connection, Value};

/// The token clock's ceiling: 2^63 - 2^40.
const CEILING: i64 = i64::MAX - (1 << 40) + 1;
/// Generous: how long a waiter may take to be answered on a loaded machine.
const SOON: Duration = Duration::from_secs(10);

fn aof(commands: &[&[&str]]) -> String {
    let mut out = resp_command(&["SELECT", "0"]);
    for c in commands {
        out.push_str(&resp_command(c));
    }
    out
}

fn start_with_aof(aof: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--appendonly", "yes", "--enable-debug-command", "yes"];
    args.extend_from_slice(extra);
    Server::start_with_files(&[("appendonly.aof", aof.as_bytes())], &args)
}

fn last_token(con: &mut Connection) -> i64 {
    info_int(con, "fence", "fence_last_token")
}

// ---------------------------------------------------------------------------------------------
// The token clock cannot be wedged or exhausted
// ---------------------------------------------------------------------------------------------

#[test]
fn a_token_past_the_ceiling_in_a_file_is_loaded_but_raises_the_clock_only_to_the_ceiling() {
    let huge = (CEILING + 5).to_string();
    let max = i64::MAX.to_string();
    let server = start_with_aof(
        &aof(&[
            &["FENCE.LOCK", "huge", "w", &huge, "0"],
            &["FENCE.STOCK", "fenced", "10", &max, "0", "RESET"],
        ]),
        &[],
    );
    let mut con = server.conn();
    // Loading applies the data as it is: master and replica never disagree about a key.
    assert_eq!(
        lock_status(&mut con, "huge").map(|s| s.1),
        Some(CEILING + 5)
    );
    assert_eq!(last_token(&mut con), CEILING);
    let ahead = info_int(&mut con, "fence", "fence_clock_ahead_ms");
    assert!(ahead > 200_000_000_000_000, "clock_ahead_ms {ahead}");
    assert!(server.log().contains("more than 24 hours ahead"), "logged");
    // No token can be issued without repeating one: every grant is refused, nothing created.
    for i in 0..3 {
        let key = format!("new-{i}");
        assert_err(
            call(&mut con, &["LOCK.ACQUIRE", &key, "w", "1000"]),
            CLOCK_EXHAUSTED,
        );
        assert_eq!(exists(&mut con, &key), 0);
    }
    assert_eq!(last_token(&mut con), CEILING);
    // What exists still works: re-acquire, renew, release, and stock commands.
    assert_eq!(
        int(call(&mut con, &["LOCK.ACQUIRE", "huge", "w", "1000"])),
        CEILING + 5
    );
    assert_eq!(
        int(call(&mut con, &["LOCK.RENEW", "huge", "w", "5000"])),
        CEILING + 5
    );
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", "fenced", "1"])), 9);
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "huge", "w"])), 1);
    assert_err(
        call(&mut con, &["LOCK.ACQUIRE", "huge", "w", "1000"]),
        CLOCK_EXHAUSTED,
    );
}

#[test]
fn the_last_tokens_below_the_ceiling_are_issued_once_each() {
    let near = (CEILING - 2).to_string();
    let server = start_with_aof(&aof(&[&["FENCE.LOCK", "near", "w", &near, "0"]]), &[]);
    let mut con = server.conn();
    assert_eq!(
        int(call(&mut con, &["LOCK.ACQUIRE", "a", "w", "1000"])),
        CEILING - 1
    );
    assert_eq!(
        int(call(&mut con, &["LOCK.ACQUIRE", "b", "w", "1000"])),
        CEILING
    );
    assert_err(
        call(&mut con, &["LOCK.ACQUIRE", "c", "w", "1000"]),
        CLOCK_EXHAUSTED,
    );
    // A waiter is told too, instead of waiting for a grant that cannot come.
    let mut w = server.conn();
    let waiter = thread::spawn(move || {
        call(&mut w, &["LOCK.ACQUIRE", "a", "x", "1000", "WAIT", "0"]).map_err(|e| error_text(&e))
    });
    assert!(wait_until(SOON, || lock_status_waiters(&mut con, "a") == Some(1)));
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "a", "w"])), 1);
    let reply = waiter.join().expect("waiter thread");
    assert!(
        matches!(&reply, Err(e) if e.starts_with(CLOCK_EXHAUSTED)),
        "the waiter got {reply:?}"
    );
    assert_eq!(exists(&mut con, "a"), 0);
}

fn lock_status_waiters(con: &mut Connection, key: &str) -> Option<i64> {
    match call(con, &["LOCK.STATUS", key]) {
        Ok(Value::Array(items)) => match items.get(7) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn a_token_a_year_ahead_in_a_file_moves_the_clock_with_it() {
    let year = 366 * 24 * 3600 * 1_000_000i64;
    let ahead = now_us() + year;
    let server = start_with_aof(
        &aof(&[&["FENCE.LOCK", "ahead", "w", &ahead.to_string(), "0"]]),
        &[],
    );
    let mut con = server.conn();
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "next", "w", "1000"]));
    assert!(
        t > ahead,
        "a token is never issued twice: {t} after {ahead}"
    );
    let ms = info_int(&mut con, "fence", "fence_clock_ahead_ms");
    assert!(
        ms > (year / 1000) - 60_000 && ms < (year / 1000) + 60_000,
        "{ms}"
    );
    assert!(server.log().contains("more than 24 hours ahead"));
}

#[test]
fn effects_that_break_an_invariant_are_refused_and_logged_while_the_rest_loads() {
    let server = start_with_aof(
        &aof(&[
            &["FENCE.LOCK", "zero", "w", "0", "0"],
            &["FENCE.LOCK", "empty", "", "5", "0"],
            &["FENCE.LOCK", "past", "w", "5", "-1"],
            &["FENCE.STOCK", "neg", "-5", "0", "0", "RESET"],
            &["FENCE.STOCK", "negd", "5", "0", "-1", "RESET"],
            &["FENCE.STOCK", "negq", "5", "0", "1", "RESET", "o", "-50"],
            &["FENCE.STOCK", "emptyid", "5", "0", "1", "RESET", "", "1"],
            &["FENCE.STOCK", "good", "5", "0", "1", "RESET", "o", "1"],
            &["FENCE.LOCK", "fine", "w", "7", "0"],
        ]),
        &[],
    );
    let mut con = server.conn();
    for key in ["zero", "empty", "past", "neg", "negd", "negq", "emptyid"] {
        assert_eq!(exists(&mut con, key), 0, "{key}");
    }
    assert_eq!(stock(&mut con, "good"), 5);
    assert_eq!(lock_status(&mut con, "fine").map(|s| s.1), Some(7));
    assert!(
        server
            .log()
            .contains("fence: refused a replicated or AOF effect"),
        "{}",
        tail(&server.log())
    );
}

/// A full sync carries keys with far-ahead tokens to a replica loading it straight from the
/// socket (`repl-diskless-load`, which Redis allows because the module handles I/O errors):
/// the same data, the same capped clock.
#[test]
fn a_diskless_full_sync_with_far_ahead_tokens_leaves_identical_data_and_clocks() {
    let huge = (CEILING + 7).to_string();
    let year = (now_us() + 366 * 24 * 3600 * 1_000_000).to_string();
    let master = start_with_aof(
        &aof(&[
            &["FENCE.LOCK", "huge", "w", &huge, "0"],
            &["FENCE.STOCK", "s", "10", &year, "3", "RESET", "o-1", "3"],
        ]),
        &[
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ],
    );
    let mut m = master.conn();
    okay(call(&mut m, &["STOCK.SET", "plain-stock", "50"]));
    for load in ["swapdb", "on-empty-db"] {
        let port = master.port().to_string();
        let replica = Server::start_with(&[
            "--enable-debug-command",
            "yes",
            "--repl-diskless-load",
            load,
            "--replicaof",
            "127.0.0.1",
            &port,
        ]);
        wait_for_sync(&master, &replica, Duration::from_secs(20));
        let mut r = replica.conn();
        assert_eq!(debug_digest(&mut r), debug_digest(&mut m), "{load}");
        assert_eq!(last_token(&mut r), last_token(&mut m), "{load}");
        assert_eq!(last_token(&mut r), CEILING);
        assert!(
            replica.log().contains("to parser"),
            "{load}: the replica loaded from the socket\n{}",
            tail(&replica.log())
        );
    }
}

/// A lock or stock restored on a replica comes from its master (MIGRATE on a cluster master
/// propagates RESTORE): applied like the rest of the stream.
#[test]
fn a_restore_replicated_from_the_master_is_applied() {
    let master = Server::start_with(&["--enable-debug-command", "yes"]);
    let port = master.port().to_string();
    let replica = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let mut m = master.conn();
    int(call(&mut m, &["LOCK.ACQUIRE", "l", "w", "60000"]));
    okay(call(&mut m, &["STOCK.SET", "s", "5"]));
    let lock = dump(&mut m, "l");
    let stock_payload = dump(&mut m, "s");
    okay(restore(&mut m, "l2", 0, &lock, &[]));
    okay(restore(&mut m, "s2", 0, &stock_payload, &[]));
    wait_for_sync(&master, &replica, Duration::from_secs(20));
    let mut r = replica.conn();
    assert_eq!(debug_digest(&mut r), debug_digest(&mut m));
    assert_eq!(
        lock_status(&mut r, "l2").map(|s| s.1),
        lock_status(&mut m, "l").map(|s| s.1)
    );
}

// ---------------------------------------------------------------------------------------------
// SWAPDB
// ---------------------------------------------------------------------------------------------

#[test]
fn swapdb_answers_the_waiters_of_both_databases() {
    let server = Server::start();
    let mut con = server.conn();
    int(call(&mut con, &["LOCK.ACQUIRE", "L", "A", "600000"]));
    // In db 1, a lock of C on the same name.
    let mut c1 = server.conn();
    okay(call(&mut c1, &["SELECT", "1"]));
    int(call(&mut c1, &["LOCK.ACQUIRE", "M", "C", "600000"]));
    int(call(&mut c1, &["LOCK.ACQUIRE", "L", "C", "600000"]));
    // B waits for L in db 0, D for M in db 1.
    let mut b = server.conn();
    let waiter_b =
        thread::spawn(move || call(&mut b, &["LOCK.ACQUIRE", "L", "B", "60000", "WAIT", "0"]));
    let mut d = server.conn();
    let waiter_d = thread::spawn(move || {
        okay(call(&mut d, &["SELECT", "1"]));
        call(&mut d, &["LOCK.ACQUIRE", "M", "D", "60000", "WAIT", "0"])
    });
    assert!(wait_until(SOON, || lock_status_waiters(&mut con, "L") == Some(1)));
    assert!(wait_until(SOON, || lock_status_waiters(&mut c1, "M") == Some(1)));
    okay(call(&mut con, &["SWAPDB", "0", "1"]));
    // db 0 now holds C's L (B keeps waiting) and nothing under M: D's key in db 1 now is
    // empty... no: D waits in db 1, which now holds A's L and no M: D is granted M at once.
    let started = Instant::now();
    let granted_d = int(waiter_d.join().expect("waiter D"));
    assert!(started.elapsed() < SOON);
    assert_eq!(
        lock_status(&mut c1, "M").map(|s| (s.0, s.1)),
        Some(("D".into(), granted_d))
    );
    assert_eq!(lock_status(&mut con, "L").map(|s| s.0), Some("C".into()));
    assert!(!waiter_b.is_finished(), "B waits: db 0's L is held by C");
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "L", "C"])), 1);
    let granted_b = int(waiter_b.join().expect("waiter B"));
    assert_eq!(
        lock_status(&mut con, "L").map(|s| (s.0, s.1)),
        Some(("B".into(), granted_b))
    );
}

#[test]
fn swapdb_with_an_empty_database_frees_a_waited_for_key() {
    let server = Server::start();
    let mut con = server.conn();
    int(call(&mut con, &["LOCK.ACQUIRE", "L", "A", "600000"]));
    let mut b = server.conn();
    let waiter =
        thread::spawn(move || call(&mut b, &["LOCK.ACQUIRE", "L", "B", "60000", "WAIT", "0"]));
    assert!(wait_until(SOON, || lock_status_waiters(&mut con, "L") == Some(1)));
    okay(call(&mut con, &["SWAPDB", "0", "5"]));
    let t = int(waiter.join().expect("waiter"));
    assert_eq!(
        lock_status(&mut con, "L").map(|s| (s.0, s.1)),
        Some(("B".into(), t))
    );
    okay(call(&mut con, &["SELECT", "5"]));
    assert_eq!(lock_status(&mut con, "L").map(|s| s.0), Some("A".into()));
}

// ---------------------------------------------------------------------------------------------
// Refused means unchanged: a stream without room for every entry a call adds
// ---------------------------------------------------------------------------------------------

/// `XINFO STREAM`'s last-generated-id and entries-added.
fn stream_state(con: &mut Connection, key: &str) -> (String, i64, i64) {
    let Ok(Value::Array(items)) = call(con, &["XINFO", "STREAM", key]) else {
        panic!("XINFO STREAM {key}");
    };
    let field = |name: &str| {
        items
            .chunks(2)
            .find(|p| text(&p[0]) == name)
            .map(|p| p[1].clone())
            .unwrap_or(Value::Nil)
    };
    let int_of = |v: Value| match v {
        Value::Int(n) => n,
        other => panic!("{other:?}"),
    };
    (
        text(&field("last-generated-id")),
        int_of(field("entries-added")),
        int_of(field("length")),
    )
}

#[test]
fn a_deduction_whose_events_do_not_fit_changes_neither_the_stock_nor_the_stream() {
    let master = Server::start_with(&["--enable-debug-command", "yes"]);
    let port = master.port().to_string();
    let replica = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let mut m = master.conn();
    let max = u64::MAX;
    // Room for exactly one more id: a sold-out deduction adds two entries.
    let last = format!("{max}-{}", max - 1);
    call(&mut m, &["XADD", "events", &last, "seed", "1"]).expect("XADD");
    okay(call(&mut m, &["STOCK.SET", "sku", "1"]));
    let before = stream_state(&mut m, "events");
    let digest = debug_digest(&mut m);
    assert_err(
        call(
            &mut m,
            &["STOCK.DEDUCT", "sku", "1", "ID", "o1", "EVENTS", "events"],
        ),
        STREAM_FULL,
    );
    assert_eq!(
        stream_state(&mut m, "events"),
        before,
        "the stream did not move"
    );
    assert_eq!(debug_digest(&mut m), digest);
    assert_eq!(stock(&mut m, "sku"), 1);
    // One entry still fits: a deduction that leaves stock takes it.
    okay(call(&mut m, &["STOCK.SET", "sku", "5"]));
    assert_eq!(
        int(call(
            &mut m,
            &["STOCK.DEDUCT", "sku", "1", "ID", "o1", "EVENTS", "events"]
        )),
        4
    );
    assert_eq!(stream_state(&mut m, "events").0, format!("{max}-{max}"));
    // Now no entry fits; the single-entry refusal changes nothing either.
    let before = stream_state(&mut m, "events");
    assert_err(
        call(
            &mut m,
            &["STOCK.DEDUCT", "sku", "1", "ID", "o2", "EVENTS", "events"],
        ),
        STREAM_FULL,
    );
    assert_eq!(stream_state(&mut m, "events"), before);
    assert_eq!(stock(&mut m, "sku"), 4);
    wait_for_sync(&master, &replica, Duration::from_secs(20));
    let mut r = replica.conn();
    assert_eq!(
        stream_state(&mut r, "events"),
        stream_state(&mut m, "events")
    );
    assert_eq!(debug_digest(&mut r), debug_digest(&mut m));
}

// ---------------------------------------------------------------------------------------------
// Lowering a limit strands nothing that exists
// ---------------------------------------------------------------------------------------------

#[test]
fn a_lowered_max_id_length_bounds_new_state_only() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "1000"],
    ));
    let owner = "o".repeat(600);
    let id = "i".repeat(600);
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "L", &owner, "60000"]));
    okay(call(&mut con, &["STOCK.SET", "S", "10"]));
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "S", "2", "ID", &id])),
        8
    );
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "512"],
    ));
    // The holder re-acquires, renews and releases; the order replays, reads and refunds.
    assert_eq!(
        int(call(&mut con, &["LOCK.ACQUIRE", "L", &owner, "60000"])),
        t
    );
    assert_eq!(
        int(call(&mut con, &["LOCK.RENEW", "L", &owner, "60000"])),
        t
    );
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "S", "2", "ID", &id])),
        8
    );
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "S", &id])), 2);
    // New state with a long name is refused.
    let too_long = name_too_long(Name::Owner, MAX_ID_LENGTH.default);
    assert_err(
        call(&mut con, &["LOCK.ACQUIRE", "other", &owner, "60000"]),
        &too_long,
    );
    assert_err(
        call(&mut con, &["LOCK.ACQUIRE", "L", &"x".repeat(600), "60000"]),
        &too_long,
    );
    assert_err(
        call(
            &mut con,
            &["STOCK.DEDUCT", "S", "1", "ID", &"j".repeat(600)],
        ),
        name_too_long(Name::RequestId, MAX_ID_LENGTH.default),
    );
    assert_eq!(exists(&mut con, "other"), 0);
    assert_eq!(stock(&mut con, "S"), 8);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "S", &id])), 2);
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "L", &owner])), 1);
}

#[test]
fn a_waiter_whose_ttl_a_lowered_limit_forbids_gets_the_ttl_error_and_the_next_is_served() {
    let server = Server::start();
    let mut con = server.conn();
    int(call(&mut con, &["LOCK.ACQUIRE", "L", "holder", "600000"]));
    let mut a = server.conn();
    let first = thread::spawn(move || {
        call(
            &mut a,
            &["LOCK.ACQUIRE", "L", "long", "600000", "WAIT", "0"],
        )
        .map_err(|e| error_text(&e))
    });
    assert!(wait_until(SOON, || lock_status_waiters(&mut con, "L") == Some(1)));
    let mut b = server.conn();
    let second =
        thread::spawn(move || call(&mut b, &["LOCK.ACQUIRE", "L", "short", "500", "WAIT", "0"]));
    assert!(wait_until(SOON, || lock_status_waiters(&mut con, "L") == Some(2)));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ttl-ms", "1000"],
    ));
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "L", "holder"])), 1);
    let refused = first.join().expect("first waiter");
    assert!(
        matches!(&refused, Err(e) if *e == ttl_range(1000)),
        "{refused:?}"
    );
    let t = int(second.join().expect("second waiter"));
    let status = lock_status(&mut con, "L").expect("granted");
    assert_eq!((status.0.as_str(), status.1), ("short", t));
    assert!(status.2 <= 500);
}

// ---------------------------------------------------------------------------------------------
// The holder's own queued call
// ---------------------------------------------------------------------------------------------

#[test]
fn the_holders_own_queued_calls_are_answered_with_its_token() {
    let server = Server::start();
    let mut con = server.conn();
    int(call(&mut con, &["LOCK.ACQUIRE", "L", "A", "600000"]));
    let spawn = |owner: &'static str| {
        let mut c = server.conn();
        thread::spawn(move || {
            call(
                &mut c,
                &["LOCK.ACQUIRE", "L", owner, "600000", "WAIT", "30000"],
            )
        })
    };
    let b1 = spawn("B");
    assert!(wait_until(SOON, || lock_status_waiters(&mut con, "L") == Some(1)));
    let c = spawn("C");
    assert!(wait_until(SOON, || lock_status_waiters(&mut con, "L") == Some(2)));
    let b2 = spawn("B");
    assert!(wait_until(SOON, || lock_status_waiters(&mut con, "L") == Some(3)));
    let started = Instant::now();
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "L", "A"])), 1);
    let t = int(b1.join().expect("first B"));
    // B's second call is a retry of the first: the same token, at once, not after its WAIT.
    assert_eq!(int(b2.join().expect("second B")), t);
    assert!(started.elapsed() < SOON, "answered at the hand-off");
    let status = lock_status(&mut con, "L").expect("held");
    assert_eq!((status.0.as_str(), status.1), ("B", t));
    assert_eq!(lock_status_waiters(&mut con, "L"), Some(1), "C still waits");
    assert!(!c.is_finished());
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "L", "B"])), 1);
    assert!(int(c.join().expect("C")) > t);
}

// ---------------------------------------------------------------------------------------------
// Small: lock.expire only for locks; the encoding of plain-string stocks
// ---------------------------------------------------------------------------------------------

#[test]
fn a_plain_string_expiring_under_a_deleted_locks_name_is_not_a_lock_expiry() {
    let server = Server::start_with(&["--notify-keyspace-events", "KEd"]);
    let mut con = server.conn();
    let mut sub = server.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub
        .subscribe("__keyevent@0__:lock.expire")
        .expect("SUBSCRIBE");
    let expirations = |con: &mut Connection| info_int(con, "fence", "fence_expirations");
    let before = expirations(&mut con);

    int(call(&mut con, &["LOCK.ACQUIRE", "L", "A", "60000"]));
    assert_eq!(int(call(&mut con, &["DEL", "L"])), 1);
    okay(call(&mut con, &["SET", "L", "x", "PX", "50"]));
    // Wait for the string to expire (reading it makes Redis expire it once due).
    assert!(wait_until(SOON, || exists(&mut con, "L") == 0));
    assert_eq!(
        expirations(&mut con),
        before,
        "a string's expiry counted as a lock's"
    );

    // A real lock expiry is counted and announced (so this test can tell).
    int(call(&mut con, &["LOCK.ACQUIRE", "M", "A", "50"]));
    assert!(wait_until(SOON, || exists(&mut con, "M") == 0));
    assert_eq!(expirations(&mut con), before + 1);
    // The events arrive in order; a marker published last ends the reading.
    int(call(
        &mut con,
        &["PUBLISH", "__keyevent@0__:lock.expire", "marker"],
    ));
    let mut seen = Vec::new();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    loop {
        let msg = pubsub.get_message().expect("a keyspace event");
        let payload: String = msg.get_payload().expect("payload");
        if payload == "marker" {
            break;
        }
        seen.push(payload);
    }
    assert_eq!(seen, vec!["M".to_string()], "lock.expire events");
}

#[test]
fn plain_string_stocks_keep_the_same_encoding_on_master_and_replica() {
    let master = Server::start_with(&["--enable-debug-command", "yes"]);
    let port = master.port().to_string();
    let replica = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let mut m = master.conn();
    let encoding =
        |con: &mut Connection, key: &str| simple_or_bulk(call(con, &["OBJECT", "ENCODING", key]));
    okay(call(&mut m, &["SET", "p", "100000", "PX", "600000"]));
    assert_eq!(int(call(&mut m, &["STOCK.DEDUCT", "p", "1"])), 99_999);
    assert_eq!(int(call(&mut m, &["STOCK.ADD", "p", "5"])), 100_004);
    okay(call(&mut m, &["SET", "q", "0"]));
    nil(call(&mut m, &["STOCK.DEDUCT", "q", "1"]));
    assert_eq!(int(call(&mut m, &["STOCK.GET", "q"])), 0);
    assert!(pttl(&mut m, "p") > 500_000, "the TTL is kept");
    wait_for_sync(&master, &replica, Duration::from_secs(20));
    let mut r = replica.conn();
    for key in ["p", "q"] {
        assert_eq!(encoding(&mut m, key), "int", "{key} on the master");
        assert_eq!(encoding(&mut r, key), "int", "{key} on the replica");
    }
    assert_eq!(debug_digest(&mut r), debug_digest(&mut m));
}

fn simple_or_bulk(r: redis::RedisResult<Value>) -> String {
    match r {
        Ok(v @ (Value::SimpleString(_) | Value::BulkString(_))) => text(&v),
        other => panic!("{other:?}"),
    }
}
