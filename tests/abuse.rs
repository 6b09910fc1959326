//! Limits and abuse: id lengths and the ledger bound enforced exactly at their limits, `maxmemory`
//! with `noeviction` (the `deny-oom` commands refused whole, the others still served), ACL key
//! patterns through every module command, and non-owners that never release or renew a lock.

mod common;

use std::time::Instant;

use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::{Connection, Value};

const OOM: &str = "OOM command not allowed";

/// A digest of the whole dataset (needs `--enable-debug-command yes`).
fn digest(con: &mut Connection) -> String {
    debug_digest(con)
}

fn id_of(len: usize, fill: u8) -> String {
    String::from_utf8(vec![fill; len]).expect("ascii")
}

/// Every command that takes an owner or a request id, with `id` in that place, at the limit
/// (`max`) and one byte over it.
fn ids_at_the_limit(con: &mut Connection, max: usize) {
    let exact = id_of(max, b'o');
    let over = id_of(max + 1, b'o');
    let limit = i64::try_from(max).expect("a length limit");
    let owner_err = name_too_long(Name::Owner, limit);
    let id_err = name_too_long(Name::RequestId, limit);
    let lock = format!("lock:limit:{max}");
    let sku = format!("sku:limit:{max}");

    // One byte over: refused wherever it would create state, and nothing changes. The limit
    // bounds new state only: renewing, releasing, refunding or reading with a longer name is
    // not refused (it matches nothing here, so nothing changes either).
    okay(call(con, &["STOCK.SET", &sku, "10"]));
    let before = digest(con);
    for args in [
        vec!["LOCK.ACQUIRE", &lock, &over, "10000"],
        vec!["LOCK.ACQUIRE", &lock, &over, "10000", "WAIT", "5"],
    ] {
        assert_err_ctx(call(con, &args), &owner_err, format!("{args:.3?}"));
    }
    nil(call(con, &["LOCK.RENEW", &lock, &over, "10000"]));
    assert_eq!(int(call(con, &["LOCK.RELEASE", &lock, &over])), 0);
    for args in [
        vec!["STOCK.DEDUCT", &sku, "1", "ID", &over],
        vec!["STOCK.DEDUCT", &sku, "1", "FENCE", "1", "ID", &over],
        vec!["STOCK.CART", "1", &sku, "1", "ID", &over],
    ] {
        assert_err_ctx(call(con, &args), &id_err, format!("{args:.3?}"));
    }
    assert_eq!(int(call(con, &["STOCK.REFUND", &sku, &over])), 0);
    // A cart refund or confirmation reads any id: an unknown one matches nothing.
    match call(con, &["STOCK.CART.REFUND", "1", &sku, &over]) {
        Ok(Value::Array(v)) if v == [Value::Int(0)] => {}
        other => panic!("STOCK.CART.REFUND of an over-long id: {other:?}"),
    }
    assert_eq!(int(call(con, &["STOCK.CART.CONFIRM", "1", &sku, &over])), 0);
    nil(call(con, &["STOCK.REQUEST", &sku, &over]));
    assert_eq!(
        digest(con),
        before,
        "a refused over-long id changed the data"
    );

    // Exactly at the limit: every command works.
    let token = int(call(con, &["LOCK.ACQUIRE", &lock, &exact, "10000"]));
    assert_eq!(
        lock_status(con, &lock).map(|(o, t, _)| (o.len(), t)),
        Some((max, token))
    );
    assert_eq!(
        int(call(
            con,
            &["LOCK.ACQUIRE", &lock, &exact, "10000", "WAIT", "5"]
        )),
        token
    );
    assert_eq!(
        int(call(con, &["LOCK.RENEW", &lock, &exact, "10000"])),
        token
    );
    assert_eq!(int(call(con, &["LOCK.RELEASE", &lock, &exact])), 1);
    assert_eq!(
        int(call(con, &["STOCK.DEDUCT", &sku, "3", "ID", &exact])),
        7
    );
    assert_eq!(
        int(call(con, &["STOCK.DEDUCT", &sku, "3", "ID", &exact])),
        7
    );
    assert_eq!(int(call(con, &["STOCK.REQUEST", &sku, &exact])), 3);
    assert_eq!(int(call(con, &["STOCK.REFUND", &sku, &exact])), 3);
    assert_eq!(int(call(con, &["STOCK.REQUEST", &sku, &exact])), 0);
    assert_eq!(stock(con, &sku), 10);
    // A cart under an id of exactly the limit: placed, replayed, confirmed, refunded.
    let cart_id = id_of(max, b'c');
    for _ in 0..2 {
        match call(con, &["STOCK.CART", "1", &sku, "2", "ID", &cart_id]) {
            Ok(Value::Array(v)) if v == [Value::Int(8)] => {}
            other => panic!("STOCK.CART with an id of {max} bytes: {other:?}"),
        }
    }
    assert_eq!(
        int(call(con, &["STOCK.CART.CONFIRM", "1", &sku, &cart_id])),
        1
    );
    match call(con, &["STOCK.CART.REFUND", "1", &sku, &cart_id]) {
        Ok(Value::Array(v)) if v == [Value::Int(2)] => {}
        other => panic!("STOCK.CART.REFUND with an id of {max} bytes: {other:?}"),
    }
    assert_eq!(stock(con, &sku), 10);
}

#[test]
fn owner_and_request_id_lengths_are_enforced_exactly_at_the_limit() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "fence.max-id-length"), "512");
    ids_at_the_limit(&mut con, 512);
    // A smaller limit set at run time applies at once, to new calls.
    for max in [8usize, 1] {
        okay(call(
            &mut con,
            &["CONFIG", "SET", "fence.max-id-length", &max.to_string()],
        ));
        ids_at_the_limit(&mut con, max);
    }
    // And a larger one again.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "4096"],
    ));
    ids_at_the_limit(&mut con, 4096);
}

#[test]
fn ttl_is_enforced_exactly_at_the_limit() {
    let server = Server::start();
    let mut con = server.conn();
    let max: i64 = config_get(&mut con, "fence.max-ttl-ms").parse().unwrap();
    // A lowered limit too, long enough for the lock to outlive the checks below.
    for max in [max, 60_000] {
        okay(call(
            &mut con,
            &["CONFIG", "SET", "fence.max-ttl-ms", &max.to_string()],
        ));
        let err = ttl_range(max);
        let over = (max + 1).to_string();
        assert_err(
            call(&mut con, &["LOCK.ACQUIRE", "lock:ttl", "o", &over]),
            &err,
        );
        assert_eq!(lock_status(&mut con, "lock:ttl"), None);
        let token = int(call(
            &mut con,
            &["LOCK.ACQUIRE", "lock:ttl", "o", &max.to_string()],
        ));
        assert_err(
            call(&mut con, &["LOCK.RENEW", "lock:ttl", "o", &over]),
            &err,
        );
        let renewed = Instant::now();
        assert_eq!(
            int(call(
                &mut con,
                &["LOCK.RENEW", "lock:ttl", "o", &max.to_string()]
            )),
            token
        );
        let ttl = pttl(&mut con, "lock:ttl");
        assert_ttl_since(ttl, max, renewed, format!("PTTL for a TTL of {max}"));
        assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lock:ttl", "o"])), 1);
    }
}

#[test]
fn the_ledger_bound_is_enforced_exactly_at_its_limit() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    for limit in [1000usize, 3, 1] {
        okay(call(
            &mut con,
            &[
                "CONFIG",
                "SET",
                "fence.max-ledger-entries",
                &limit.to_string(),
            ],
        ));
        let full = ledger_full(i64::try_from(limit).expect("a ledger limit"));
        let sku = format!("sku:ledger:{limit}");
        okay(call(&mut con, &["STOCK.SET", &sku, "100000"]));
        let mut pipe = redis::pipe();
        for i in 0..limit {
            pipe.cmd("STOCK.DEDUCT")
                .arg(&sku)
                .arg(1)
                .arg("ID")
                .arg(format!("order-{i}"));
        }
        let left: Vec<i64> = pipe.query(&mut con).expect("deductions up to the limit");
        assert_eq!(left.last().copied(), Some(100_000 - limit as i64));
        let before = digest(&mut con);
        // One more new id: refused, even when the stock is also short; nothing changes.
        assert_err(
            call(&mut con, &["STOCK.DEDUCT", &sku, "1", "ID", "one-too-many"]),
            &full,
        );
        // A cart names the item whose ledger is full.
        let cart_full = FenceError::CartItem {
            code: CartCode::LedgerFull,
            index: 1,
            key: printable(sku.as_bytes()),
        }
        .message()
        .into_owned();
        assert_err(
            call(
                &mut con,
                &["STOCK.CART", "1", &sku, "999999999", "ID", "one-too-many"],
            ),
            &cart_full,
        );
        assert_err(
            call(
                &mut con,
                &["STOCK.DEDUCT", &sku, "999999999", "ID", "one-too-many"],
            ),
            &full,
        );
        assert_eq!(
            digest(&mut con),
            before,
            "a refused deduction changed the data"
        );
        nil(call(&mut con, &["STOCK.REQUEST", &sku, "one-too-many"]));
        // Replays still answer, a refund does not free a slot, a deduction without id works.
        let remaining = 100_000 - limit as i64;
        assert_eq!(
            int(call(
                &mut con,
                &["STOCK.DEDUCT", &sku, "1", "ID", "order-0"]
            )),
            remaining
        );
        assert_eq!(int(call(&mut con, &["STOCK.REFUND", &sku, "order-0"])), 1);
        assert_err(
            call(&mut con, &["STOCK.DEDUCT", &sku, "1", "ID", "one-too-many"]),
            &full,
        );
        assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", &sku, "1"])), remaining);
        // A new sale starts with an empty ledger.
        okay(call(&mut con, &["STOCK.SET", &sku, "5"]));
        assert_eq!(
            int(call(
                &mut con,
                &["STOCK.DEDUCT", &sku, "1", "ID", "one-too-many"]
            )),
            4
        );
    }
    // A bound of 0 refuses every id.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "0"],
    ));
    okay(call(&mut con, &["STOCK.SET", "sku:zero", "5"]));
    assert_err(
        call(&mut con, &["STOCK.DEDUCT", "sku:zero", "1", "ID", "x"]),
        ledger_full(0),
    );
    assert_eq!(stock(&mut con, "sku:zero"), 5);
}

/// The `fence_*` counters that a refused command must not move.
fn counters(con: &mut Connection) -> Vec<(String, String)> {
    let text = info(con, "fence");
    text.lines()
        .filter(|l| l.starts_with("fence_") && !l.starts_with("fence_clients_waiting"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn out_of_memory_refuses_growing_writes_whole_and_serves_the_rest() {
    let server = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--maxmemory-policy",
        "noeviction",
    ]);
    let mut con = server.conn();
    let t_held = int(call(
        &mut con,
        &["LOCK.ACQUIRE", "lock:held", "holder", "60000"],
    ));
    okay(call(&mut con, &["STOCK.SET", "sku", "100"]));
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", "sku", "2", "ID", "order-1"]
        )),
        98
    );
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", "sku", "3", "ID", "order-2"]
        )),
        95
    );
    okay(call(&mut con, &["SET", "plain", "50"]));

    // Fill memory until writes fail.
    let used = info_int(&mut con, "memory", "used_memory");
    let limit = used + 4 * 1024 * 1024;
    okay(call(
        &mut con,
        &["CONFIG", "SET", "maxmemory", &limit.to_string()],
    ));
    // Large values first, then smaller and smaller ones: a refused SET's own argument counts
    // while it runs, so only a refused tiny write shows memory is really full.
    let mut filled = 0;
    for size in [256 * 1024, 16 * 1024, 1024, 64, 1] {
        let value = "v".repeat(size);
        loop {
            match call(&mut con, &["SET", &format!("fill:{filled}"), &value]) {
                Ok(_) => filled += 1,
                Err(e) => {
                    let text = error_text(&e);
                    assert!(text.starts_with(OOM), "SET failed with {text:?}");
                    break;
                }
            }
            assert!(filled < 100_000, "memory never filled up");
        }
    }
    println!("abuse: {filled} values filled {limit} bytes of maxmemory");

    let before = digest(&mut con);
    let stats_before = counters(&mut con);
    let info_before = call(&mut con, &["STOCK.INFO", "sku"]).unwrap();
    // Every deny-oom command is refused with Redis's OOM error, whatever it would have done.
    let refused: &[&[&str]] = &[
        &["LOCK.ACQUIRE", "lock:new", "o", "1000"],
        &["LOCK.ACQUIRE", "lock:new", "o", "1000", "WAIT", "100"],
        &["LOCK.ACQUIRE", "lock:held", "holder", "1000"],
        &["LOCK.ACQUIRE", "lock:held", "other", "1000"],
        &["LOCK.ACQUIRE", "lock:held", "other", "1000", "WAIT", "100"],
        &["STOCK.SET", "sku", "5"],
        &["STOCK.SET", "sku:new", "5"],
        &["STOCK.ADD", "sku", "1"],
        &["STOCK.ADD", "sku:new", "1"],
        &["STOCK.ADD", "plain", "1"],
        &["STOCK.DEDUCT", "sku", "1"],
        &["STOCK.DEDUCT", "sku", "1", "ID", "order-3"],
        &["STOCK.DEDUCT", "sku", "1", "ID", "order-1"],
        &["STOCK.DEDUCT", "sku", "1", "ID", "order-3", "BUYER", "b"],
        &["STOCK.DEDUCT", "sku", "1", "FENCE", &t_held.to_string()],
        &["STOCK.DEDUCT", "plain", "1"],
        &["STOCK.CART", "1", "sku", "1", "ID", "order-3"],
        &["STOCK.CART", "1", "sku", "1", "ID", "order-1"],
    ];
    for args in refused {
        assert_err_ctx(call(&mut con, args), OOM, format!("{args:?}"));
    }
    assert_eq!(
        digest(&mut con),
        before,
        "a refused command changed the data"
    );
    assert_eq!(counters(&mut con), stats_before, "a refused command ran");
    assert_eq!(call(&mut con, &["STOCK.INFO", "sku"]).unwrap(), info_before);
    assert_eq!(
        exists(&mut con, "lock:new") + exists(&mut con, "sku:new"),
        0
    );

    // Reads, renewals, refunds and releases still work.
    assert_eq!(
        lock_status(&mut con, "lock:held").map(|(o, t, _)| (o, t)),
        Some(("holder".to_string(), t_held))
    );
    assert_eq!(stock(&mut con, "sku"), 95);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sku", "order-1"])), 2);
    assert_eq!(int(call(&mut con, &["STOCK.GET", "plain"])), 50);
    assert_eq!(int(call(&mut con, &["STOCK.BUYER", "sku", "b"])), 0);
    // STOCK.LIMIT grows nothing: never refused for memory.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "sku", "0"])), 1);
    assert_eq!(
        int(call(
            &mut con,
            &["LOCK.RENEW", "lock:held", "holder", "30000"]
        )),
        t_held
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sku", "order-1"])), 2);
    assert_eq!(stock(&mut con, "sku"), 97);
    // A cart's confirmation and refund are never refused for memory either.
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.CART.CONFIRM", "1", "sku", "order-2"]
        )),
        1
    );
    assert_eq!(
        call(&mut con, &["STOCK.CART.REFUND", "1", "sku", "order-2"]).unwrap(),
        Value::Array(vec![Value::Int(3)])
    );
    assert_eq!(stock(&mut con, "sku"), 100);
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lock:held", "holder"])),
        1
    );
    assert_eq!(lock_status(&mut con, "lock:held"), None);
    // Still out of memory: a new grant is refused.
    assert_err(
        call(&mut con, &["LOCK.ACQUIRE", "lock:held", "o", "1000"]),
        OOM,
    );

    // With memory back, everything works again.
    okay(call(&mut con, &["CONFIG", "SET", "maxmemory", "0"]));
    assert!(int(call(&mut con, &["LOCK.ACQUIRE", "lock:new", "o", "1000"])) > t_held);
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", "sku", "1", "ID", "order-3"]
        )),
        99
    );
}

/// A valid call of every module command on `key` (`stock_key` for the stock family).
fn every_command<'a>(lock: &'a str, sku: &'a str) -> Vec<Vec<&'a str>> {
    vec![
        vec!["LOCK.ACQUIRE", lock, "intruder", "10000"],
        vec!["LOCK.ACQUIRE", lock, "intruder", "10000", "WAIT", "1000"],
        vec!["LOCK.RENEW", lock, "boss", "10000"],
        vec!["LOCK.RELEASE", lock, "boss"],
        vec!["LOCK.STATUS", lock],
        vec!["STOCK.SET", sku, "0"],
        vec!["STOCK.ADD", sku, "5"],
        vec!["STOCK.GET", sku],
        vec!["STOCK.DEDUCT", sku, "1"],
        vec!["STOCK.DEDUCT", sku, "1", "ID", "order-9"],
        vec!["STOCK.REFUND", sku, "order-1"],
        vec!["STOCK.DEDUCT", sku, "1", "ID", "order-8", "HOLD", "60000"],
        vec!["STOCK.CONFIRM", sku, "order-8"],
        vec!["STOCK.REQUEST", sku, "order-1"],
        vec!["STOCK.REQUEST", sku, "order-8", "DETAIL"],
        vec!["STOCK.INFO", sku],
        vec![
            "STOCK.DEDUCT",
            sku,
            "1",
            "ID",
            "order-7",
            "BUYER",
            "buyer-1",
        ],
        vec!["STOCK.BUYER", sku, "buyer-1"],
        vec!["STOCK.CART", "1", sku, "1", "ID", "cart-1"],
        vec!["STOCK.CART.CONFIRM", "1", sku, "cart-1"],
        vec!["STOCK.CART.REFUND", "1", sku, "cart-1"],
        vec!["STOCK.SET", sku, "5", "LIMIT", "3"],
        // Last of the stock commands: the limit cleared, so later deductions need no BUYER.
        vec!["STOCK.LIMIT", sku, "0"],
        vec!["FENCE.LOCK", lock, "intruder", "99999999999999999", "0"],
        vec!["FENCE.STOCK", sku, "1000", "0", "0", "RESET"],
        vec!["FENCE.ENTRY", sku, "1000", "0", "0", "o", "1", "deducted"],
        vec!["FENCE.EXPIRESTREAM", sku, "orders:events"],
        vec!["FENCE.LIMIT", sku, "5"],
    ]
}

const WRITES: &[&str] = &[
    "LOCK.ACQUIRE",
    "LOCK.RENEW",
    "LOCK.RELEASE",
    "STOCK.SET",
    "STOCK.ADD",
    "STOCK.DEDUCT",
    "STOCK.REFUND",
    "STOCK.CONFIRM",
    "STOCK.LIMIT",
    "STOCK.CART",
    "STOCK.CART.REFUND",
    "STOCK.CART.CONFIRM",
    "FENCE.LOCK",
    "FENCE.STOCK",
    "FENCE.ENTRY",
    "FENCE.EXPIRESTREAM",
    "FENCE.LIMIT",
];

#[test]
fn acl_key_patterns_hold_for_every_module_command() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut admin = server.conn();
    let boss = int(call(
        &mut admin,
        &["LOCK.ACQUIRE", "lock:1", "boss", "60000"],
    ));
    okay(call(&mut admin, &["STOCK.SET", "lock:stock", "10"]));
    assert_eq!(
        int(call(
            &mut admin,
            &["STOCK.DEDUCT", "lock:stock", "1", "ID", "order-1"]
        )),
        9
    );
    let module_cmds = "+LOCK.ACQUIRE +LOCK.RENEW +LOCK.RELEASE +LOCK.STATUS +STOCK.SET \
                       +STOCK.ADD +STOCK.GET +STOCK.DEDUCT +STOCK.REFUND +STOCK.REQUEST \
                       +STOCK.INFO +STOCK.CONFIRM +STOCK.LIMIT +STOCK.BUYER +STOCK.CART \
                       +STOCK.CART.REFUND +STOCK.CART.CONFIRM +FENCE.LOCK \
                       +FENCE.STOCK +FENCE.ENTRY +FENCE.EXPIRESTREAM +FENCE.LIMIT";
    let users: [(&str, String); 3] = [
        ("all", "on >pw ~orders:* +@all".to_string()),
        ("mod", format!("on >pw ~orders:* -@all {module_cmds}")),
        // Read-only access to lock:* (Redis 7 key permissions).
        (
            "ro",
            format!("on >pw ~orders:* %R~lock:* -@all {module_cmds}"),
        ),
    ];
    for (name, rules) in &users {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(*name);
        for r in rules.split_whitespace() {
            cmd.arg(r);
        }
        okay(cmd.query::<Value>(&mut admin));
    }
    let before = digest(&mut admin);
    let mut refused = 0;
    for (name, _) in &users {
        let url = format!("redis://{name}:pw@127.0.0.1:{}/", server.port());
        let mut con = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connect as the restricted user");
        // Every module command on lock:* keys is refused (read-only users may read).
        for args in every_command("lock:1", "lock:stock") {
            let write = WRITES.contains(&args[0]);
            let r = call(&mut con, &args);
            if *name == "ro" && !write {
                assert!(r.is_ok(), "{name}: {args:?} refused: {r:?}");
                continue;
            }
            assert_err_ctx(r, "NOPERM", format!("user {name}: {args:?}"));
            refused += 1;
        }
        assert_eq!(
            digest(&mut admin),
            before,
            "user {name} changed lock:* data"
        );
        // Its own keys work (FENCE.* stay internal).
        okay(call(&mut con, &["STOCK.SET", "orders:sku", "10"]));
        for args in every_command("orders:lock", "orders:sku") {
            let r = call(&mut con, &args);
            if args[0].starts_with("FENCE.") {
                assert_err_ctx(r, INTERNAL_ONLY, name);
            } else {
                assert!(r.is_ok(), "user {name}: {args:?} refused: {r:?}");
            }
        }
        let t = int(call(
            &mut con,
            &["LOCK.ACQUIRE", "orders:lock2", "me", "60000"],
        ));
        let left = int(call(
            &mut con,
            &["STOCK.DEDUCT", "orders:sku", "1", "FENCE", &t.to_string()],
        ));
        assert!(left >= 0);
        assert_eq!(
            int(call(&mut con, &["LOCK.RELEASE", "orders:lock2", "me"])),
            1
        );
        let _ = call(&mut admin, &["DEL", "orders:lock", "orders:sku"]);
    }
    assert_eq!(
        lock_status(&mut admin, "lock:1").map(|(o, t, _)| (o, t)),
        Some(("boss".to_string(), boss))
    );
    assert_eq!(stock(&mut admin, "lock:stock"), 9);
    println!("abuse: {refused} module calls on lock:* refused with NOPERM for 3 users");
}

#[test]
fn non_owners_never_release_or_renew_a_lock() {
    let server = Server::start();
    let mut con = server.conn();
    let owner = "the-owner-7f3a";
    let token = int(call(&mut con, &["LOCK.ACQUIRE", "lock:x", owner, "60000"]));
    let other = int(call(
        &mut con,
        &["LOCK.ACQUIRE", "lock:y", "someone", "60000"],
    ));
    let ttl_before = pttl(&mut con, "lock:x");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut intruders: Vec<Vec<u8>> = [
        "THE-OWNER-7F3A",
        "the-owner-7f3",
        "the-owner-7f3aa",
        " the-owner-7f3a",
        "the-owner-7f3a ",
        "the-owner-7f3a\0",
        "\0the-owner-7f3a",
        "the-owner-7f3A",
        "someone-else",
        "*",
        "?",
        "the-owner-*",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for _ in 0..3000 {
        let len = match rng.random_range(0..4) {
            0 => owner.len(),
            1 => rng.random_range(1..=16),
            _ => rng.random_range(1..=512),
        };
        let mut v: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.3) {
            // The owner with one byte changed.
            v = owner.as_bytes().to_vec();
            let i = rng.random_range(0..v.len());
            let b: u8 = rng.random();
            v[i] = if b == v[i] { b.wrapping_add(1) } else { b };
        }
        if v != owner.as_bytes() {
            intruders.push(v);
        }
    }
    let mut pipe = redis::pipe();
    for who in &intruders {
        pipe.cmd("LOCK.RELEASE").arg("lock:x").arg(who.as_slice());
        pipe.cmd("LOCK.RENEW")
            .arg("lock:x")
            .arg(who.as_slice())
            .arg(600_000);
        pipe.cmd("LOCK.RELEASE").arg("lock:y").arg(who.as_slice());
    }
    let replies: Vec<Value> = pipe.query(&mut con).expect("the intruders' calls");
    assert_eq!(replies.len(), 3 * intruders.len());
    for (i, r) in replies.iter().enumerate() {
        let who = String::from_utf8_lossy(&intruders[i / 3]);
        match (i % 3, r) {
            (0 | 2, Value::Int(0)) | (1, Value::Nil) => {}
            _ => panic!("non-owner {who:?} got {r:?} (call {} of 3)", i % 3 + 1),
        }
    }
    // The locks are untouched: same owner, same token, TTL still running down.
    assert_eq!(
        lock_status(&mut con, "lock:x").map(|(o, t, _)| (o, t)),
        Some((owner.to_string(), token))
    );
    assert_eq!(
        lock_status(&mut con, "lock:y").map(|(o, t, _)| (o, t)),
        Some(("someone".to_string(), other))
    );
    assert!(pttl(&mut con, "lock:x") <= ttl_before);
    let refused = info_int(&mut con, "fence", "fence_releases_refused");
    assert_eq!(refused as usize, 2 * intruders.len());
    assert_eq!(
        info_int(&mut con, "fence", "fence_renewals_refused") as usize,
        intruders.len()
    );
    println!(
        "abuse: {} non-owners: {} releases and {} renewals refused",
        intruders.len(),
        2 * intruders.len(),
        intruders.len()
    );
    // The owner still can.
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lock:x", owner])), 1);
}
