//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE, LOCK.STATUS and the fencing tokens, following the
//! README's command reference; plus how the commands are declared to Redis.

mod common;

use std::time::{Duration, Instant};

use common::*;
use redis::{Connection, Value};

fn acquire(con: &mut Connection, key: &str, owner: &str, ttl: &str) -> redis::RedisResult<Value> {
    call(con, &["LOCK.ACQUIRE", key, owner, ttl])
}

#[track_caller]
fn token(con: &mut Connection, key: &str, owner: &str, ttl: &str) -> i64 {
    int(acquire(con, key, owner, ttl))
}

/// LOCK.STATUS under RESP2, checked to be exactly [owner, o, token, t, ttl, x, waiters, 0];
/// returns (owner, token, ttl), or None for nil.
#[track_caller]
fn status(con: &mut Connection, key: &str) -> Option<(String, i64, i64)> {
    match call(con, &["LOCK.STATUS", key]) {
        Ok(Value::Nil) => None,
        Ok(Value::Array(items)) => match items.as_slice() {
            [Value::BulkString(f1), Value::BulkString(owner), Value::BulkString(f2), Value::Int(token), Value::BulkString(f3), Value::Int(ttl), Value::BulkString(f4), Value::Int(waiters)]
                if f1 == b"owner" && f2 == b"token" && f3 == b"ttl" && f4 == b"waiters" =>
            {
                assert_eq!(*waiters, 0, "waiters is always 0 in this version");
                Some((String::from_utf8(owner.clone()).unwrap(), *token, *ttl))
            }
            _ => panic!(
                "LOCK.STATUS must reply [owner, <bulk>, token, <int>, ttl, <int>, waiters, 0] \
                 (bulk field names), got {items:?}"
            ),
        },
        other => panic!("LOCK.STATUS replied {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// LOCK.ACQUIRE
// ---------------------------------------------------------------------------------------------

#[test]
fn acquire_replies_an_integer_token_and_creates_a_lock_with_the_ttl() {
    let server = Server::start();
    let mut con = server.conn();
    let sent = Instant::now();
    let before = now_us();
    let t = token(&mut con, "lock:1", "worker-1", "30000");
    let after = now_us();
    assert!(
        t >= before,
        "token {t} below the wall clock {before} at the grant"
    );
    assert!(
        t <= after + 1_000_000,
        "token {t} far above the wall clock {after} on a fresh server"
    );
    assert_eq!(key_type(&mut con, "lock:1"), "fence-lck");
    let ttl = pttl(&mut con, "lock:1");
    assert_ttl_since(ttl, 30_000, sent, "PTTL");
    assert_eq!(
        status(&mut con, "lock:1").map(|s| (s.0, s.1)),
        Some(("worker-1".to_string(), t))
    );
}

#[test]
fn acquire_replies_nil_when_another_owner_holds_the_lock() {
    let server = Server::start();
    let mut con = server.conn();
    let t = token(&mut con, "lock:1", "worker-1", "30000");
    nil(acquire(&mut con, "lock:1", "worker-2", "30000"));
    nil(acquire(&mut con, "lock:1", "worker-2", "60000"));
    let (owner, t2, ttl) = status(&mut con, "lock:1").unwrap();
    assert_eq!((owner.as_str(), t2), ("worker-1", t));
    assert!(ttl <= 30_000, "the refused acquire changed the TTL: {ttl}");
    assert_eq!(dbsize(&mut con), 1);
}

#[test]
fn reacquire_by_the_holder_returns_the_same_token_and_resets_the_ttl() {
    let server = Server::start();
    let mut con = server.conn();
    let t = token(&mut con, "lock:1", "worker-1", "60000");
    sleep_ms(150);
    let before = pttl(&mut con, "lock:1");
    assert!(before <= 59_850, "PTTL {before} did not run down");
    let reacquired = Instant::now();
    assert_eq!(token(&mut con, "lock:1", "worker-1", "60000"), t);
    let after = pttl(&mut con, "lock:1");
    assert_ttl_since(after, 60_000, reacquired, "PTTL after the re-acquire");
    // The TTL is reset to ttl-ms, also when that is shorter.
    let reacquired = Instant::now();
    assert_eq!(token(&mut con, "lock:1", "worker-1", "30000"), t);
    let short = pttl(&mut con, "lock:1");
    assert_ttl_since(
        short,
        30_000,
        reacquired,
        "PTTL after a re-acquire with 30000",
    );
    assert_eq!(status(&mut con, "lock:1").unwrap().1, t);
}

#[test]
fn holds_are_not_counted_one_release_frees_the_lock() {
    let server = Server::start();
    let mut con = server.conn();
    let t = token(&mut con, "lock:1", "worker-1", "30000");
    assert_eq!(token(&mut con, "lock:1", "worker-1", "30000"), t);
    assert_eq!(token(&mut con, "lock:1", "worker-1", "30000"), t);
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lock:1", "worker-1"])),
        1
    );
    assert_eq!(exists(&mut con, "lock:1"), 0);
    assert!(token(&mut con, "lock:1", "worker-2", "30000") > t);
}

// ---------------------------------------------------------------------------------------------
// Fencing tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn tokens_rise_across_release() {
    let server = Server::start();
    let mut con = server.conn();
    let t1 = token(&mut con, "lock:1", "a", "30000");
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lock:1", "a"])), 1);
    let t2 = token(&mut con, "lock:1", "a", "30000");
    assert!(t2 > t1, "{t2} after {t1}");
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lock:1", "a"])), 1);
    let t3 = token(&mut con, "lock:1", "b", "30000");
    assert!(t3 > t2, "{t3} after {t2}");
}

#[test]
fn tokens_rise_across_expiry() {
    let server = Server::start();
    let mut con = server.conn();
    let t1 = token(&mut con, "lock:1", "a", "30");
    sleep_ms(100);
    let t2 = token(&mut con, "lock:1", "b", "30");
    assert!(t2 > t1, "{t2} after {t1}");
    sleep_ms(100);
    // The same owner after expiry gets a new grant, not its old token.
    let t3 = token(&mut con, "lock:1", "b", "30000");
    assert!(t3 > t2, "{t3} after {t2}");
}

#[test]
fn tokens_rise_across_del_and_unlink() {
    let server = Server::start();
    let mut con = server.conn();
    let t1 = token(&mut con, "lock:1", "a", "30000");
    assert_eq!(int(call(&mut con, &["DEL", "lock:1"])), 1);
    let t2 = token(&mut con, "lock:1", "a", "30000");
    assert!(t2 > t1, "{t2} after {t1}");
    assert_eq!(int(call(&mut con, &["UNLINK", "lock:1"])), 1);
    let t3 = token(&mut con, "lock:1", "a", "30000");
    assert!(t3 > t2, "{t3} after {t2}");
}

#[test]
fn tokens_rise_across_flushall() {
    let server = Server::start();
    let mut con = server.conn();
    let t1 = token(&mut con, "lock:1", "a", "30000");
    okay(call(&mut con, &["FLUSHALL"]));
    assert_eq!(dbsize(&mut con), 0);
    let t2 = token(&mut con, "lock:1", "a", "30000");
    assert!(t2 > t1, "{t2} after {t1}");
    okay(call(&mut con, &["FLUSHALL", "ASYNC"]));
    let t3 = token(&mut con, "lock:1", "a", "30000");
    assert!(t3 > t2, "{t3} after {t2}");
}

#[test]
fn tokens_rise_across_different_keys_and_never_fall_below_the_wall_clock() {
    let server = Server::start();
    let mut con = server.conn();
    let mut last = 0;
    for i in 0..50 {
        let key = format!("lock:{}", i % 7);
        let owner = format!("owner-{i}");
        let _ = call(&mut con, &["DEL", &key]);
        let before = now_us();
        let t = token(&mut con, &key, &owner, "30000");
        assert!(
            t >= before,
            "grant {i}: token {t} below the wall clock {before}"
        );
        assert!(
            t > last,
            "grant {i}: token {t} not above the previous {last}"
        );
        last = t;
    }
    // A re-acquire is not a new grant: same token; the next grant is still higher.
    let t = token(&mut con, "lock:x", "a", "30000");
    assert_eq!(token(&mut con, "lock:x", "a", "30000"), t);
    assert!(token(&mut con, "lock:y", "a", "30000") > t);
}

#[test]
fn tokens_follow_the_wall_clock_when_time_passes() {
    let server = Server::start();
    let mut con = server.conn();
    let t1 = token(&mut con, "lock:1", "a", "30000");
    sleep_ms(50);
    let before = now_us();
    let t2 = token(&mut con, "lock:2", "a", "30000");
    assert!(t2 >= before, "token {t2} below the wall clock {before}");
    assert!(
        t2 >= t1 + 50_000,
        "50 ms passed but tokens moved {}",
        t2 - t1
    );
}

// ---------------------------------------------------------------------------------------------
// Expiry through Redis's own key expiry
// ---------------------------------------------------------------------------------------------

#[test]
fn an_expired_lock_vanishes_through_redis_key_expiry() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "Ex"],
    ));
    let mut sub = server.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("__keyevent@0__:expired").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    token(&mut con, "lock:1", "a", "50");
    // Without touching the key: Redis's active expiry removes it from memory.
    assert!(
        wait_until(Duration::from_secs(10), || dbsize(&mut con) == 0),
        "the expired lock is still in memory"
    );
    let msg = pubsub.get_message().expect("an 'expired' keyspace event");
    assert_eq!(msg.get_channel_name(), "__keyevent@0__:expired");
    assert_eq!(msg.get_payload_bytes(), b"lock:1");
    assert_eq!(exists(&mut con, "lock:1"), 0);
    assert_eq!(status(&mut con, "lock:1"), None);
}

#[test]
fn a_replica_sees_the_lock_and_then_its_del_on_expiry() {
    // No waiting for more replicas before the initial sync.
    let master = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let mut mcon = master.conn();
    let port = master.port().to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port]);
    let mut rcon = replica.conn();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut rcon)
                .unwrap();
            info.contains("master_link_status:up")
        }),
        "the replica did not sync\n{}",
        tail(&replica.log())
    );

    // After a diskless sync the master streams writes only once the replica has acked:
    // make sure a first write went through before timing the lock.
    okay(call(&mut mcon, &["SET", "probe", "1"]));
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "5000"])), 1);
    assert_eq!(int(call(&mut mcon, &["DEL", "probe"])), 1);
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "5000"])), 1);

    // A long TTL first, so the replica is checked while the lock surely lives; a renew then
    // makes it expire soon.
    let t = token(&mut mcon, "lock:1", "worker-1", "60000");
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "5000"])), 1);
    assert_eq!(
        dbsize(&mut rcon),
        1,
        "the lock did not reach the replica\n--- master ---\n{}\n--- replica ---\n{}",
        tail(&master.log()),
        tail(&replica.log())
    );
    let on_replica = status(&mut rcon, "lock:1").expect("the replica holds the lock");
    assert_eq!((on_replica.0.as_str(), on_replica.1), ("worker-1", t));
    assert_eq!(
        int(call(
            &mut mcon,
            &["LOCK.RENEW", "lock:1", "worker-1", "200"]
        )),
        t
    );
    // A replica never expires keys by itself: the key goes only when the master's DEL arrives.
    assert!(
        wait_until(Duration::from_secs(10), || dbsize(&mut rcon) == 0),
        "the replica still holds the expired lock: no DEL was replicated"
    );
}

// ---------------------------------------------------------------------------------------------
// LOCK.RENEW
// ---------------------------------------------------------------------------------------------

#[test]
fn renew_returns_the_holders_token_and_resets_the_ttl() {
    let server = Server::start();
    let mut con = server.conn();
    let t = token(&mut con, "lock:1", "worker-1", "30000");
    let renewed = Instant::now();
    assert_eq!(
        int(call(
            &mut con,
            &["LOCK.RENEW", "lock:1", "worker-1", "60000"]
        )),
        t
    );
    let ttl = pttl(&mut con, "lock:1");
    assert_ttl_since(ttl, 60_000, renewed, "PTTL after a renew with 60000");
    let renewed = Instant::now();
    assert_eq!(
        int(call(
            &mut con,
            &["LOCK.RENEW", "lock:1", "worker-1", "2000"]
        )),
        t
    );
    let ttl = pttl(&mut con, "lock:1");
    assert_ttl_since(ttl, 2_000, renewed, "PTTL after a renew with 2000");
    let (owner, t2, _) = status(&mut con, "lock:1").unwrap();
    assert_eq!((owner.as_str(), t2), ("worker-1", t));
}

#[test]
fn renew_of_a_free_lock_replies_nil_and_creates_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    nil(call(
        &mut con,
        &["LOCK.RENEW", "lock:1", "worker-1", "1000"],
    ));
    assert_eq!(exists(&mut con, "lock:1"), 0);
    token(&mut con, "lock:1", "worker-1", "60000");
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lock:1", "worker-1"])),
        1
    );
    nil(call(
        &mut con,
        &["LOCK.RENEW", "lock:1", "worker-1", "1000"],
    ));
    assert_eq!(exists(&mut con, "lock:1"), 0);
}

#[test]
fn renew_by_another_owner_replies_nil_and_leaves_the_lock_alone() {
    let server = Server::start();
    let mut con = server.conn();
    let t = token(&mut con, "lock:1", "worker-1", "30000");
    nil(call(
        &mut con,
        &["LOCK.RENEW", "lock:1", "worker-2", "60000"],
    ));
    let (owner, t2, ttl) = status(&mut con, "lock:1").unwrap();
    assert_eq!((owner.as_str(), t2), ("worker-1", t));
    assert!(ttl <= 30_000, "TTL changed by another owner's renew: {ttl}");
}

#[test]
fn renew_never_resurrects_an_expired_lock() {
    let server = Server::start();
    let mut con = server.conn();
    token(&mut con, "lock:1", "worker-1", "50");
    sleep_ms(120);
    nil(call(
        &mut con,
        &["LOCK.RENEW", "lock:1", "worker-1", "60000"],
    ));
    assert_eq!(exists(&mut con, "lock:1"), 0);
    assert_eq!(status(&mut con, "lock:1"), None);
}

// ---------------------------------------------------------------------------------------------
// LOCK.RELEASE
// ---------------------------------------------------------------------------------------------

#[test]
fn release_replies_1_then_0() {
    let server = Server::start();
    let mut con = server.conn();
    token(&mut con, "lock:1", "worker-1", "30000");
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lock:1", "worker-1"])),
        1
    );
    assert_eq!(exists(&mut con, "lock:1"), 0);
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lock:1", "worker-1"])),
        0
    );
    // Free now: anyone can take it.
    int(acquire(&mut con, "lock:1", "worker-2", "30000"));
}

#[test]
fn release_by_another_owner_replies_0_and_the_lock_remains() {
    let server = Server::start();
    let mut con = server.conn();
    let t = token(&mut con, "lock:1", "worker-1", "30000");
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lock:1", "worker-2"])),
        0
    );
    let (owner, t2, ttl) = status(&mut con, "lock:1").unwrap();
    assert_eq!((owner.as_str(), t2), ("worker-1", t));
    assert!(ttl > 0);
    nil(acquire(&mut con, "lock:1", "worker-2", "30000"));
}

#[test]
fn release_of_a_free_or_expired_lock_replies_0() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lock:1", "worker-1"])),
        0
    );
    token(&mut con, "lock:1", "worker-1", "30");
    sleep_ms(100);
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lock:1", "worker-1"])),
        0
    );
    assert_eq!(dbsize(&mut con), 0);
}

// ---------------------------------------------------------------------------------------------
// LOCK.STATUS
// ---------------------------------------------------------------------------------------------

#[test]
fn status_is_nil_when_the_lock_is_free() {
    let server = Server::start();
    let mut con = server.conn();
    nil(call(&mut con, &["LOCK.STATUS", "lock:1"]));
    token(&mut con, "lock:1", "worker-1", "30000");
    call(&mut con, &["LOCK.RELEASE", "lock:1", "worker-1"]).unwrap();
    nil(call(&mut con, &["LOCK.STATUS", "lock:1"]));
    token(&mut con, "lock:1", "worker-1", "30");
    sleep_ms(100);
    nil(call(&mut con, &["LOCK.STATUS", "lock:1"]));
    let mut con3 = server.conn_resp3();
    nil(call(&mut con3, &["LOCK.STATUS", "lock:1"]));
}

#[test]
fn status_under_resp2_is_a_flat_field_value_array_in_order() {
    let server = Server::start();
    let mut con = server.conn();
    let sent = Instant::now();
    let t = token(&mut con, "lock:1", "worker-1", "30000");
    let reply = call(&mut con, &["LOCK.STATUS", "lock:1"]).unwrap();
    let Value::Array(items) = reply else {
        panic!("LOCK.STATUS under RESP2 replied {reply:?}");
    };
    assert_eq!(items.len(), 8, "{items:?}");
    assert_eq!(items[0], Value::BulkString(b"owner".to_vec()));
    assert_eq!(items[1], Value::BulkString(b"worker-1".to_vec()));
    assert_eq!(items[2], Value::BulkString(b"token".to_vec()));
    assert_eq!(items[3], Value::Int(t));
    assert_eq!(items[4], Value::BulkString(b"ttl".to_vec()));
    let Value::Int(ttl) = items[5] else {
        panic!("ttl is not an integer: {items:?}");
    };
    assert_ttl_since(ttl, 30_000, sent, "LOCK.STATUS ttl");
    assert_eq!(items[6], Value::BulkString(b"waiters".to_vec()));
    assert_eq!(items[7], Value::Int(0));
}

#[test]
fn status_under_resp3_is_a_map_in_order() {
    let server = Server::start();
    let mut con = server.conn_resp3();
    let sent = Instant::now();
    let t = token(&mut con, "lock:1", "worker-1", "30000");
    let reply = call(&mut con, &["LOCK.STATUS", "lock:1"]).unwrap();
    let Value::Map(pairs) = reply else {
        panic!("LOCK.STATUS under RESP3 replied {reply:?}");
    };
    assert_eq!(pairs.len(), 4, "{pairs:?}");
    assert_eq!(
        pairs[0],
        (
            Value::BulkString(b"owner".to_vec()),
            Value::BulkString(b"worker-1".to_vec())
        )
    );
    assert_eq!(
        pairs[1],
        (Value::BulkString(b"token".to_vec()), Value::Int(t))
    );
    assert_eq!(pairs[2].0, Value::BulkString(b"ttl".to_vec()));
    let Value::Int(ttl) = pairs[2].1 else {
        panic!("ttl is not an integer: {pairs:?}");
    };
    assert_ttl_since(ttl, 30_000, sent, "LOCK.STATUS ttl");
    assert_eq!(
        pairs[3],
        (Value::BulkString(b"waiters".to_vec()), Value::Int(0))
    );
}

#[test]
fn status_ttl_counts_down() {
    let server = Server::start();
    let mut con = server.conn();
    token(&mut con, "lock:1", "worker-1", "60000");
    sleep_ms(150);
    let (_, _, ttl) = status(&mut con, "lock:1").unwrap();
    assert!((1..=59_850).contains(&ttl), "ttl {ttl}");
}

// ---------------------------------------------------------------------------------------------
// Declarations: module name, keys, flags
// ---------------------------------------------------------------------------------------------

const COMMANDS: [&str; 10] = [
    "lock.acquire",
    "lock.renew",
    "lock.release",
    "lock.status",
    "stock.set",
    "stock.add",
    "stock.get",
    "stock.deduct",
    "stock.refund",
    "stock.request",
];

#[test]
fn module_list_shows_the_module_named_fence() {
    let server = Server::start();
    let mut con = server.conn();
    let reply = call(&mut con, &["MODULE", "LIST"]).unwrap();
    let Value::Array(modules) = reply else {
        panic!("MODULE LIST replied {reply:?}");
    };
    // (name, path) of each module. Servers also list the modules built into them, which are
    // not loaded from a file: Redis 8's `vectorset` with an empty path, Valkey's scripting
    // engine `lua` with its name as its path.
    let entries: Vec<(String, String)> = modules
        .iter()
        .map(|m| {
            let Value::Array(fields) = m else {
                panic!("module entry {m:?}");
            };
            let field = |name: &str| {
                let at = fields
                    .chunks(2)
                    .position(|pair| text(&pair[0]) == name)
                    .unwrap_or_else(|| panic!("module entry without {name}: {fields:?}"));
                text(&fields[2 * at + 1])
            };
            (field("name"), field("path"))
        })
        .collect();
    let loaded: Vec<&(String, String)> = entries
        .iter()
        .filter(|(name, path)| !path.is_empty() && path != name)
        .collect();
    assert_eq!(
        loaded,
        vec![&("fence".to_string(), module_path().display().to_string())],
        "MODULE LIST: {entries:?}"
    );
}

/// (flags, first key, last key, step) from COMMAND INFO.
fn command_info(con: &mut Connection, name: &str) -> (Vec<String>, i64, i64, i64) {
    let reply = call(con, &["COMMAND", "INFO", name]).unwrap();
    let Value::Array(entries) = reply else {
        panic!("COMMAND INFO {name} replied {reply:?}");
    };
    let Some(Value::Array(info)) = entries.first() else {
        panic!("COMMAND INFO {name}: unknown command ({entries:?})");
    };
    assert!(text(&info[0]).eq_ignore_ascii_case(name), "{info:?}");
    let Value::Array(flags) = &info[2] else {
        panic!("flags of {name}: {:?}", info[2]);
    };
    let flags = flags.iter().map(text).collect();
    let num = |v: &Value| match v {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    };
    (flags, num(&info[3]), num(&info[4]), num(&info[5]))
}

#[test]
fn every_command_declares_one_key_at_position_1_and_honest_flags() {
    let server = Server::start();
    let mut con = server.conn();
    let readonly = ["lock.status", "stock.get", "stock.request"];
    let deny_oom = ["lock.acquire", "stock.set", "stock.add", "stock.deduct"];
    // Commands that free memory must keep working when Redis is out of memory.
    let never_deny_oom = ["lock.release", "stock.refund"];
    for name in COMMANDS {
        let (flags, first, last, step) = command_info(&mut con, name);
        assert_eq!((first, last, step), (1, 1, 1), "{name} key positions");
        let has = |f: &str| flags.iter().any(|x| x == f);
        if readonly.contains(&name) {
            assert!(has("readonly") && !has("write"), "{name} flags {flags:?}");
            assert!(!has("denyoom"), "{name} flags {flags:?}");
        } else {
            assert!(has("write") && !has("readonly"), "{name} flags {flags:?}");
        }
        if deny_oom.contains(&name) {
            assert!(has("denyoom"), "{name} flags {flags:?}");
        }
        if never_deny_oom.contains(&name) {
            assert!(!has("denyoom"), "{name} flags {flags:?}");
        }
    }
}

#[test]
fn command_getkeys_finds_the_key() {
    let server = Server::start();
    let mut con = server.conn();
    let calls: [&[&str]; 11] = [
        &["LOCK.ACQUIRE", "k", "o", "10"],
        &["LOCK.RENEW", "k", "o", "10"],
        &["LOCK.RELEASE", "k", "o"],
        &["LOCK.STATUS", "k"],
        &["STOCK.SET", "k", "5"],
        &["STOCK.ADD", "k", "5"],
        &["STOCK.GET", "k"],
        &["STOCK.DEDUCT", "k", "1"],
        &["STOCK.DEDUCT", "k", "1", "ID", "r", "FENCE", "5"],
        &["STOCK.REFUND", "k", "r"],
        &["STOCK.REQUEST", "k", "r"],
    ];
    for args in calls {
        let mut full = vec!["COMMAND", "GETKEYS"];
        full.extend_from_slice(args);
        assert_eq!(
            call(&mut con, &full).unwrap(),
            Value::Array(vec![Value::BulkString(b"k".to_vec())]),
            "COMMAND GETKEYS {args:?}"
        );
    }
    assert_eq!(dbsize(&mut con), 0);
}
