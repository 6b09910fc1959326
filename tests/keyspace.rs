//! Keyspace commands on both module types: `COPY`, `DUMP`/`RESTORE` (on the same server and
//! into a second one, as `MIGRATE` does), `MIGRATE` between two servers loading the module,
//! `RENAME`, `MEMORY USAGE`. The key that arrives has everything: owner, token and TTL for a
//! lock; available quantity, ledger and fence for a stock.

mod common;

use std::time::Instant;

use common::*;
use redis::Connection;

/// Wall clock in milliseconds since the Unix epoch (the clock PEXPIRETIME counts in).
fn now_ms() -> i64 {
    now_us() / 1000
}

fn start() -> Server {
    Server::start_with(&["--enable-debug-command", "yes"])
}

/// The state a lock and a stock are given, to be found again on the key that arrives.
struct Fixture {
    lock_token: i64,
    /// The stock's highest accepted token.
    fence: i64,
    /// Request ids and what STOCK.REQUEST says of them (0: refunded).
    ledger: Vec<(String, i64)>,
    available: i64,
}

/// `lk` (owner "holder", 60 s) and `sk` (1,000 less 30 deductions with ids, some refunded,
/// fenced by the lock's token).
fn fixture(con: &mut Connection) -> Fixture {
    let lock_token = int(call(con, &["LOCK.ACQUIRE", "lk", "holder", "60000"]));
    okay(call(con, &["STOCK.SET", "sk", "1000"]));
    let mut available = 1000;
    let mut ledger = Vec::new();
    let fence = lock_token.to_string();
    for i in 0..30i64 {
        let id = format!("order-{i:03}");
        let q = i % 3 + 1;
        let qs = q.to_string();
        let mut args = vec!["STOCK.DEDUCT", "sk", &qs, "ID", &id];
        if i == 10 {
            args.extend(["FENCE", fence.as_str()]);
        }
        available -= q;
        assert_eq!(int(call(con, &args)), available);
        ledger.push((id, q));
    }
    for i in [3usize, 17] {
        let (id, q) = ledger[i].clone();
        assert_eq!(int(call(con, &["STOCK.REFUND", "sk", &id])), q);
        available += q;
        ledger[i].1 = 0;
    }
    Fixture {
        lock_token,
        fence: lock_token,
        ledger,
        available,
    }
}

/// `key` holds the fixture's lock, expiring at `at` (Unix ms, as PEXPIRETIME reports it):
/// PEXPIRETIME says so exactly, and the ttl LOCK.STATUS reports is what is left of it between
/// the clock readings around the call (1 ms for rounding), however long the call took.
#[track_caller]
fn check_lock(con: &mut Connection, key: &str, f: &Fixture, at: i64, what: &str) {
    assert_eq!(key_type(con, key), "fence-lck", "{what}: TYPE {key}");
    assert_eq!(pexpiretime(con, key), at, "{what}: PEXPIRETIME {key}");
    let before = now_ms();
    let Some((owner, token, left)) = lock_status(con, key) else {
        panic!("{what}: {key} holds no lock");
    };
    let after = now_ms();
    assert_eq!(
        (owner.as_str(), token),
        ("holder", f.lock_token),
        "{what}: {key}"
    );
    assert!(
        left >= at - after - 1 && left <= at - before + 1,
        "{what}: {key} has {left} ms left of an expiry at {at}, read between {before} and \
         {after}"
    );
    // It behaves as the lock: its owner holds it, nobody else gets it.
    nil(call(con, &["LOCK.ACQUIRE", key, "intruder", "1000"]));
    assert_eq!(
        int(call(
            con,
            &["LOCK.RENEW", key, "holder", &left.max(1).to_string()]
        )),
        f.lock_token,
        "{what}: {key} renewed by its owner"
    );
}

/// `key` holds the fixture's stock: quantity, every ledger entry, the fence (reading only).
#[track_caller]
fn check_stock(con: &mut Connection, key: &str, f: &Fixture, what: &str) {
    assert_eq!(key_type(con, key), "fence-stk", "{what}: TYPE {key}");
    assert_eq!(stock(con, key), f.available, "{what}: {key} available");
    for (id, q) in &f.ledger {
        assert_eq!(
            int(call(con, &["STOCK.REQUEST", key, id])),
            *q,
            "{what}: {key} request {id}"
        );
    }
    nil(call(con, &["STOCK.REQUEST", key, "never-seen"]));
    let lower = (f.fence - 1).to_string();
    assert_err_ctx(
        call(con, &["STOCK.DEDUCT", key, "1", "FENCE", &lower]),
        stale_reply(f.fence - 1, f.fence),
        format!("{what}: {key} fence"),
    );
    // A replay deducts nothing.
    assert_eq!(
        int(call(con, &["STOCK.DEDUCT", key, "5", "ID", &f.ledger[0].0])),
        f.available,
        "{what}: a replay on {key}"
    );
}

/// `PEXPIRETIME key`.
fn pexpiretime(con: &mut Connection, key: &str) -> i64 {
    int(call(con, &["PEXPIRETIME", key]))
}

#[test]
fn copy_keeps_owner_token_ttl_ledger_and_fence() {
    let server = start();
    let mut con = server.conn();
    let f = fixture(&mut con);
    assert_eq!(int(call(&mut con, &["PEXPIRE", "sk", "90000"])), 1);
    assert_eq!(int(call(&mut con, &["COPY", "lk", "LK"])), 1);
    assert_eq!(int(call(&mut con, &["COPY", "sk", "SK"])), 1);
    assert_eq!(pexpiretime(&mut con, "LK"), pexpiretime(&mut con, "lk"));
    assert_eq!(pexpiretime(&mut con, "SK"), pexpiretime(&mut con, "sk"));
    // Same-length names, so that MEMORY USAGE (which counts the key name) compares values.
    for key in ["lk", "sk"] {
        let copy = key.to_uppercase();
        assert_eq!(
            digest_value(&mut con, &copy),
            digest_value(&mut con, key),
            "DEBUG DIGEST-VALUE of {copy}"
        );
        assert_eq!(
            int(call(&mut con, &["MEMORY", "USAGE", &copy])),
            int(call(&mut con, &["MEMORY", "USAGE", key])),
            "MEMORY USAGE of {copy}"
        );
    }
    let at = pexpiretime(&mut con, "lk");
    check_lock(&mut con, "LK", &f, at, "COPY");
    check_stock(&mut con, "SK", &f, "COPY");
    // COPY ... REPLACE onto an existing key of the other type, and into another database.
    assert_eq!(int(call(&mut con, &["COPY", "sk", "LK"])), 0);
    assert_eq!(int(call(&mut con, &["COPY", "sk", "LK", "REPLACE"])), 1);
    check_stock(&mut con, "LK", &f, "COPY REPLACE");
    assert_eq!(int(call(&mut con, &["COPY", "lk", "lk", "DB", "1"])), 1);
    okay(call(&mut con, &["SELECT", "1"]));
    check_lock(&mut con, "lk", &f, at, "COPY DB 1");
    okay(call(&mut con, &["SELECT", "0"]));
    // The copies are independent of the originals.
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "SK", "order-000"])), 1);
    okay(call(&mut con, &["SELECT", "1"]));
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lk", "holder"])), 1);
    okay(call(&mut con, &["SELECT", "0"]));
    check_stock(&mut con, "sk", &f, "the original after COPY");
    check_lock(&mut con, "lk", &f, at, "the original after COPY");
}

#[test]
fn dump_and_restore_keep_everything_on_the_same_server() {
    let server = start();
    let mut con = server.conn();
    let f = fixture(&mut con);
    let lock_dump = dump(&mut con, "lk");
    let stock_dump = dump(&mut con, "sk");
    let at = pexpiretime(&mut con, "lk");
    okay(restore(&mut con, "lk:r", at, &lock_dump, &["ABSTTL"]));
    okay(restore(&mut con, "sk:r", 0, &stock_dump, &[]));
    assert_eq!(pexpiretime(&mut con, "lk:r"), pexpiretime(&mut con, "lk"));
    assert_eq!(pttl(&mut con, "sk:r"), -1);
    assert_eq!(digest_value(&mut con, "lk:r"), digest_value(&mut con, "lk"));
    assert_eq!(digest_value(&mut con, "sk:r"), digest_value(&mut con, "sk"));
    check_lock(&mut con, "lk:r", &f, at, "RESTORE");
    check_stock(&mut con, "sk:r", &f, "RESTORE");
    // RESTORE onto an existing key needs REPLACE, and then replaces it whole.
    assert_err(restore(&mut con, "sk:r", 0, &lock_dump, &[]), "BUSYKEY");
    let before = now_ms();
    okay(restore(&mut con, "sk:r", 30_000, &lock_dump, &["REPLACE"]));
    let after = now_ms();
    let replaced_at = pexpiretime(&mut con, "sk:r");
    assert!(
        (before + 30_000..=after + 30_000).contains(&replaced_at),
        "RESTORE REPLACE with a TTL of 30000 between {before} and {after}: expires at \
         {replaced_at}"
    );
    check_lock(&mut con, "sk:r", &f, replaced_at, "RESTORE REPLACE");
    // A payload of another version or a corrupt one is refused, not loaded half-way.
    let mut corrupt = stock_dump.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    assert_err(restore(&mut con, "bad", 0, &corrupt, &[]), code::ERR);
    assert_eq!(exists(&mut con, "bad"), 0);
}

/// RESTORE into a second server, as MIGRATE does: the key arrives whole, and the token it
/// holds is never issued again there (the lock type's RDB load teaches the token clock).
#[test]
fn restore_into_a_second_server_carries_everything_and_the_token() {
    let source = start();
    let target = start();
    let mut src = source.conn();
    let mut dst = target.conn();
    let f = fixture(&mut src);
    // A lock whose token is an hour ahead of the clock, so only the restore can teach it.
    let future = future_locks();
    okay(restore(&mut src, "lk:future", 0, &future.dumps[0], &[]));
    let at = pexpiretime(&mut src, "lk");
    okay(restore(
        &mut dst,
        "lk",
        at,
        &dump(&mut src, "lk"),
        &["ABSTTL"],
    ));
    okay(restore(&mut dst, "sk", 0, &dump(&mut src, "sk"), &[]));
    okay(restore(
        &mut dst,
        "lk:future",
        0,
        &dump(&mut src, "lk:future"),
        &[],
    ));
    assert_eq!(pexpiretime(&mut dst, "lk"), at);
    for key in ["lk", "sk", "lk:future"] {
        assert_eq!(
            digest_value(&mut dst, key),
            digest_value(&mut src, key),
            "DEBUG DIGEST-VALUE {key} on the second server"
        );
    }
    check_lock(&mut dst, "lk", &f, at, "RESTORE on a second server");
    check_stock(&mut dst, "sk", &f, "RESTORE on a second server");
    assert_eq!(
        lock_status(&mut dst, "lk:future").map(|(o, t, _)| (o, t)),
        Some((future.owners[0].to_string(), future.tokens[0]))
    );
    assert_eq!(int(call(&mut dst, &["DEL", "lk:future"])), 1);
    let next = int(call(&mut dst, &["LOCK.ACQUIRE", "lk:new", "o", "1000"]));
    assert!(
        next > future.tokens[0],
        "the second server issued {next}, not above the restored {}",
        future.tokens[0]
    );
}

#[test]
fn migrate_moves_locks_and_stocks_between_servers() {
    let source = start();
    let target = start();
    let mut src = source.conn();
    let mut dst = target.conn();
    let f = fixture(&mut src);
    let future = future_locks();
    okay(restore(&mut src, "lk:future", 0, &future.dumps[1], &[]));
    let str_set = Instant::now();
    okay(call(&mut src, &["SET", "str", "77", "PX", "80000"]));
    let at = pexpiretime(&mut src, "lk");
    let digests: Vec<String> = ["lk", "sk", "lk:future"]
        .iter()
        .map(|k| digest_value(&mut src, k))
        .collect();
    let port = target.port().to_string();
    // One key, moved.
    let migrating = Instant::now();
    simple(call(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, "lk", "0", "5000"],
    ));
    let took = elapsed_ms_ceil(migrating);
    assert_eq!(exists(&mut src, "lk"), 0, "MIGRATE left the lock behind");
    // MIGRATE sends the TTL relative to the source's clock reading and the target adds it to
    // its own, later one: the expiry moves later by no more than the call took.
    let arrived_at = pexpiretime(&mut dst, "lk");
    let moved = arrived_at - at;
    assert!(
        (-1..=took + 1).contains(&moved),
        "MIGRATE (which took {took} ms) moved the expiry by {moved} ms"
    );
    assert_eq!(digest_value(&mut dst, "lk"), digests[0]);
    check_lock(&mut dst, "lk", &f, arrived_at, "MIGRATE");
    // Several keys, copied (the source keeps them).
    simple(call(
        &mut src,
        &[
            "MIGRATE",
            "127.0.0.1",
            &port,
            "",
            "0",
            "5000",
            "COPY",
            "KEYS",
            "sk",
            "lk:future",
            "str",
        ],
    ));
    check_stock(&mut dst, "sk", &f, "MIGRATE COPY");
    check_stock(&mut src, "sk", &f, "the source after MIGRATE COPY");
    assert_eq!(digest_value(&mut dst, "sk"), digests[1]);
    assert_eq!(digest_value(&mut dst, "lk:future"), digests[2]);
    assert_eq!(get_string(&mut dst, "str").as_deref(), Some("77"));
    let ttl = pttl(&mut dst, "str");
    assert_ttl_since(ttl, 80_000, str_set, "PTTL of the copied string");
    // And REPLACE over a key that exists on the target.
    simple(call(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, "sk", "0", "5000", "REPLACE"],
    ));
    check_stock(&mut dst, "sk", &f, "MIGRATE REPLACE");
    // The target never issues the migrated tokens again.
    assert_eq!(int(call(&mut dst, &["DEL", "lk:future"])), 1);
    let next = int(call(&mut dst, &["LOCK.ACQUIRE", "lk:new", "o", "1000"]));
    assert!(
        next > future.tokens[1],
        "token {next} after a migrated {}",
        future.tokens[1]
    );
}

#[test]
fn rename_keeps_owner_token_ttl_ledger_and_fence() {
    let server = start();
    let mut con = server.conn();
    let f = fixture(&mut con);
    let at = pexpiretime(&mut con, "lk");
    let lock_digest = digest_value(&mut con, "lk");
    let stock_digest = digest_value(&mut con, "sk");
    okay(call(&mut con, &["RENAME", "lk", "lk:renamed"]));
    okay(call(&mut con, &["RENAME", "sk", "sk:renamed"]));
    assert_eq!(exists(&mut con, "lk"), 0);
    assert_eq!(exists(&mut con, "sk"), 0);
    assert_eq!(pexpiretime(&mut con, "lk:renamed"), at);
    assert_eq!(digest_value(&mut con, "lk:renamed"), lock_digest);
    assert_eq!(digest_value(&mut con, "sk:renamed"), stock_digest);
    check_lock(&mut con, "lk:renamed", &f, at, "RENAME");
    check_stock(&mut con, "sk:renamed", &f, "RENAME");
    // The old name is free; a new grant there gets a larger token.
    let next = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "other", "1000"]));
    assert!(next > f.lock_token);
    // RENAMENX refuses an existing target; RENAME overwrites it.
    assert_eq!(int(call(&mut con, &["RENAMENX", "sk:renamed", "lk"])), 0);
    okay(call(&mut con, &["RENAME", "sk:renamed", "lk"]));
    check_stock(&mut con, "lk", &f, "RENAME over a lock");
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lk:renamed", "holder"])),
        1
    );
    assert_eq!(dbsize(&mut con), 1);
}

#[test]
fn memory_usage_follows_the_owner_and_the_ledger() {
    let server = start();
    let mut con = server.conn();
    let usage = |con: &mut Connection, key: &str| int(call(con, &["MEMORY", "USAGE", key]));
    int(call(&mut con, &["LOCK.ACQUIRE", "short", "o", "60000"]));
    let long_owner = "o".repeat(400);
    int(call(
        &mut con,
        &["LOCK.ACQUIRE", "long", &long_owner, "60000"],
    ));
    let (short, long) = (usage(&mut con, "short"), usage(&mut con, "long"));
    assert!(short > 0);
    assert!(
        long >= short + 399,
        "MEMORY USAGE {short} with a 1-byte owner, {long} with a 400-byte owner"
    );

    okay(call(&mut con, &["STOCK.SET", "sk", "100000"]));
    let empty = usage(&mut con, "sk");
    let mut previous = empty;
    let mut grew = 0;
    for round in 0..5 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            let id = format!("request-{round}-{i:032}");
            pipe.cmd("STOCK.DEDUCT").arg("sk").arg(1).arg("ID").arg(id);
        }
        let _: Vec<i64> = pipe.query(&mut con).expect("deductions");
        let now = usage(&mut con, "sk");
        assert!(
            now >= previous,
            "MEMORY USAGE fell from {previous} to {now}"
        );
        grew += i64::from(now > previous);
        previous = now;
    }
    assert!(grew >= 4, "MEMORY USAGE grew in only {grew} of 5 rounds");
    assert!(
        previous >= empty + 5000 * 41,
        "MEMORY USAGE {empty} empty, {previous} with 5,000 ids of 41 bytes"
    );
    // The copy and the restored key account for their ledger too.
    assert_eq!(int(call(&mut con, &["COPY", "sk", "sk:copy"])), 1);
    assert!(usage(&mut con, "sk:copy") >= empty + 5000 * 41);
    let payload = dump(&mut con, "sk");
    okay(restore(&mut con, "sk:restored", 0, &payload, &[]));
    assert!(usage(&mut con, "sk:restored") >= empty + 5000 * 41);
    // A new sale empties the ledger and gives the memory back.
    okay(call(&mut con, &["STOCK.SET", "sk", "10"]));
    let after_sale = usage(&mut con, "sk");
    assert!(
        after_sale < empty + 1000,
        "MEMORY USAGE {after_sale} after a new sale, {empty} when new"
    );
    // INFO memory agrees that the ledger takes memory (a loose check: 5,000 ids).
    let used = info_int(&mut con, "memory", "used_memory");
    assert!(used > 5000 * 41, "used_memory {used}");
}
