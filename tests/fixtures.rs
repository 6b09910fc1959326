//! Old encodings keep loading: the fixtures of each encoding (DUMP payloads, an RDB file and an
//! AOF in the effect format, written by the module at that encoding; see each directory's
//! make.py under tests/fixtures/) are loaded on the server under test, and every value in them
//! reads back as it was written.

mod common;

use common::*;
use redis::Connection;

/// One set of fixtures and what it holds (printed by its make.py when it was made).
struct Fixtures {
    lock_dump: &'static [u8],
    stock_dump: &'static [u8],
    stock_no_ledger_dump: &'static [u8],
    rdb: &'static [u8],
    aof: &'static [u8],
    lock_token: i64,
    lock_persist_token: i64,
    guard_token: i64,
    live_lock_token: i64,
    /// fx:stock's available quantity and restock ids (restock id, quantity).
    stock_available: i64,
    restocks: &'static [(&'static str, i64)],
    /// fx:live-stock's available quantity and restock ids.
    live_available: i64,
    live_restocks: &'static [(&'static str, i64)],
    /// Encoding 4 on: stocks with an entry in every state (see `check_holds`).
    holds: Option<Holds>,
}

/// `fx:holds` (a DUMP too) and `fx:live-holds`: the deadlines of their held entries.
struct Holds {
    dump: &'static [u8],
    held_deadline: i64,
    live_held_deadline: i64,
}

const ENCODING_1: Fixtures = Fixtures {
    lock_dump: include_bytes!("fixtures/encoding-1/lock.dump"),
    stock_dump: include_bytes!("fixtures/encoding-1/stock.dump"),
    stock_no_ledger_dump: include_bytes!("fixtures/encoding-1/stock-no-ledger.dump"),
    rdb: include_bytes!("fixtures/encoding-1/dump.rdb"),
    aof: include_bytes!("fixtures/encoding-1/appendonly.aof"),
    lock_token: 1_796_056_302_873_903,
    lock_persist_token: 1_796_056_302_874_170,
    guard_token: 1_796_056_302_874_920,
    live_lock_token: 1_796_056_303_181_543,
    stock_available: 988,
    restocks: &[],
    live_available: 27,
    live_restocks: &[],
    holds: None,
};

const ENCODING_2: Fixtures = Fixtures {
    lock_dump: include_bytes!("fixtures/encoding-2/lock.dump"),
    stock_dump: include_bytes!("fixtures/encoding-2/stock.dump"),
    stock_no_ledger_dump: include_bytes!("fixtures/encoding-2/stock-no-ledger.dump"),
    rdb: include_bytes!("fixtures/encoding-2/dump.rdb"),
    aof: include_bytes!("fixtures/encoding-2/appendonly.aof"),
    lock_token: 1_796_058_948_259_372,
    lock_persist_token: 1_796_058_948_259_523,
    guard_token: 1_796_058_948_259_733,
    live_lock_token: 1_796_058_948_597_238,
    stock_available: 1038,
    restocks: &[("restock-1", 20), ("restock-2", 30)],
    live_available: 31,
    live_restocks: &[("live-restock", 4)],
    holds: None,
};

const ENCODING_3: Fixtures = Fixtures {
    lock_dump: include_bytes!("fixtures/encoding-3/lock.dump"),
    stock_dump: include_bytes!("fixtures/encoding-3/stock.dump"),
    stock_no_ledger_dump: include_bytes!("fixtures/encoding-3/stock-no-ledger.dump"),
    rdb: include_bytes!("fixtures/encoding-3/dump.rdb"),
    aof: include_bytes!("fixtures/encoding-3/appendonly.aof"),
    lock_token: 1_796_065_166_075_851,
    lock_persist_token: 1_796_065_166_076_295,
    guard_token: 1_796_065_166_076_521,
    live_lock_token: 1_796_065_166_382_006,
    stock_available: 1038,
    restocks: &[("restock-1", 20), ("restock-2", 30)],
    live_available: 31,
    live_restocks: &[("live-restock", 4)],
    holds: None,
};

const ENCODING_4: Fixtures = Fixtures {
    lock_dump: include_bytes!("fixtures/encoding-4/lock.dump"),
    stock_dump: include_bytes!("fixtures/encoding-4/stock.dump"),
    stock_no_ledger_dump: include_bytes!("fixtures/encoding-4/stock-no-ledger.dump"),
    rdb: include_bytes!("fixtures/encoding-4/dump.rdb"),
    aof: include_bytes!("fixtures/encoding-4/appendonly.aof"),
    lock_token: 1_796_068_671_372_411,
    lock_persist_token: 1_796_068_671_372_561,
    guard_token: 1_796_068_671_372_743,
    live_lock_token: 1_796_068_671_684_477,
    stock_available: 1038,
    restocks: &[("restock-1", 20), ("restock-2", 30)],
    live_available: 31,
    live_restocks: &[("live-restock", 4)],
    holds: Some(Holds {
        dump: include_bytes!("fixtures/encoding-4/holds.dump"),
        held_deadline: 2_111_428_671_373,
        live_held_deadline: 2_111_428_671_685,
    }),
};

/// The locks were taken for 10 years (fence.max-ttl-ms raised), on 2026-11-30.
const LONG_TTL_AT_LEAST_MS: i64 = 300 * 24 * 3600 * 1000;

/// (available, deducted, requests, fence) of `key`, from STOCK.INFO (with `restocks` checked
/// against `restocks` when the server reports it).
fn stock_info(con: &mut Connection, key: &str) -> (i64, i64, i64, i64) {
    let Ok(redis::Value::Array(items)) = call(con, &["STOCK.INFO", key]) else {
        panic!("STOCK.INFO {key} is not an array");
    };
    let field = |name: &str| -> i64 {
        let value = items
            .chunks(2)
            .find(|pair| text(&pair[0]) == name)
            .map(|pair| &pair[1]);
        match value {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("STOCK.INFO {key} {name}: {other:?}"),
        }
    };
    (
        field("available"),
        field("deducted"),
        field("requests"),
        field("fence"),
    )
}

fn request(con: &mut Connection, key: &str, id: &str) -> Option<i64> {
    match call(con, &["STOCK.REQUEST", key, id]) {
        Ok(redis::Value::Int(n)) => Some(n),
        Ok(redis::Value::Nil) => None,
        other => panic!("STOCK.REQUEST {key} {id}: {other:?}"),
    }
}

fn check_lock(con: &mut Connection, key: &str, owner: &str, token: i64) {
    let status = lock_status(con, key);
    assert_eq!(
        status.as_ref().map(|s| (s.0.as_str(), s.1)),
        Some((owner, token)),
        "{key}"
    );
    assert_eq!(key_type(con, key), "fence-lck");
}

/// Restock ids read back: each replays (adds nothing) and the count matches.
fn check_restocks(con: &mut Connection, key: &str, available: i64, restocks: &[(&str, i64)]) {
    let Ok(redis::Value::Array(items)) = call(con, &["STOCK.INFO", key]) else {
        panic!("STOCK.INFO {key}");
    };
    let count = items
        .chunks(2)
        .find(|p| text(&p[0]) == "restocks")
        .map(|p| p[1].clone());
    assert_eq!(
        count,
        Some(redis::Value::Int(restocks.len() as i64)),
        "{key} restocks"
    );
    for (id, quantity) in restocks {
        assert_eq!(
            int(call(
                con,
                &["STOCK.ADD", key, &quantity.to_string(), "ID", id]
            )),
            available,
            "{key}: restock {id} replays"
        );
    }
}

fn check_stock(con: &mut Connection, f: &Fixtures) {
    let available = f.stock_available;
    assert_eq!(key_type(con, "fx:stock"), "fence-stk");
    assert_eq!(
        stock_info(con, "fx:stock"),
        (available, 12, 5, f.guard_token)
    );
    check_restocks(con, "fx:stock", available, f.restocks);
    for (id, quantity) in [
        ("order-0", 1),
        ("order-1", 2),
        ("order-2", 0),
        ("order-3", 4),
        ("order-4", 5),
    ] {
        assert_eq!(request(con, "fx:stock", id), Some(quantity), "{id}");
    }
    assert_eq!(request(con, "fx:stock", "order-5"), None);
    // The loaded stock works: a replay deducts nothing, a stale fence is refused, a new id sells.
    assert_eq!(
        int(call(
            con,
            &["STOCK.DEDUCT", "fx:stock", "1", "ID", "order-1"]
        )),
        available
    );
    assert_err(
        call(
            con,
            &[
                "STOCK.DEDUCT",
                "fx:stock",
                "1",
                "FENCE",
                &(f.guard_token - 1).to_string(),
            ],
        ),
        code::STALE,
    );
    assert_eq!(
        int(call(con, &["STOCK.DEDUCT", "fx:stock", "1", "ID", "new"])),
        available - 1
    );
    assert_eq!(int(call(con, &["STOCK.REFUND", "fx:stock", "order-3"])), 4);
}

/// `STOCK.REQUEST key id DETAIL` as (state, quantity, deadline or 0).
fn detail(con: &mut Connection, key: &str, id: &str) -> (String, i64, i64) {
    let Ok(redis::Value::Array(items)) = call(con, &["STOCK.REQUEST", key, id, "DETAIL"]) else {
        panic!("STOCK.REQUEST {key} {id} DETAIL");
    };
    let field = |name: &str| {
        items
            .chunks(2)
            .find(|p| text(&p[0]) == name)
            .map(|p| p[1].clone())
    };
    let state = field("state").map(|v| text(&v)).unwrap_or_default();
    let number = |v: Option<redis::Value>| match v {
        Some(redis::Value::Int(n)) => n,
        None => 0,
        other => panic!("{key} {id}: {other:?}"),
    };
    (state, number(field("quantity")), number(field("deadline")))
}

/// `fx:holds`: an entry in every state, read back with its deadline; the held one confirms,
/// the expired one stays expired (and replays without deducting).
fn check_holds_stock(con: &mut Connection, h: &Holds) {
    let held = |s: &str, q: i64, d: i64| (s.to_string(), q, d);
    assert_eq!(
        detail(con, "fx:holds", "h-held"),
        held("held", 1, h.held_deadline)
    );
    assert_eq!(
        detail(con, "fx:holds", "h-confirmed"),
        held("confirmed", 2, 0)
    );
    assert_eq!(detail(con, "fx:holds", "h-expired"), held("expired", 3, 0));
    assert_eq!(
        detail(con, "fx:holds", "h-refunded"),
        held("refunded", 4, 0)
    );
    assert_eq!(detail(con, "fx:holds", "h-plain"), held("deducted", 5, 0));
    let Ok(redis::Value::Array(info)) = call(con, &["STOCK.INFO", "fx:holds"]) else {
        panic!("STOCK.INFO fx:holds");
    };
    let field = |name: &str| {
        info.chunks(2)
            .find(|p| text(&p[0]) == name)
            .map(|p| p[1].clone())
    };
    for (name, value) in [
        ("available", 92),
        ("deducted", 8),
        ("requests", 5),
        ("held", 1),
        ("held-units", 1),
        ("next-deadline", h.held_deadline),
    ] {
        assert_eq!(
            field(name),
            Some(redis::Value::Int(value)),
            "fx:holds {name}"
        );
    }
    let e = err(call(con, &["STOCK.CONFIRM", "fx:holds", "h-expired"]));
    let at = e.strip_prefix("EXPIRED request h-expired expired at ");
    assert!(
        at.and_then(|n| n.parse::<i64>().ok())
            .is_some_and(|n| n > 1_796_000_000_000 && n < h.held_deadline),
        "{e}"
    );
    assert_eq!(
        int(call(
            con,
            &["STOCK.DEDUCT", "fx:holds", "9", "ID", "h-expired"]
        )),
        92
    );
    assert_eq!(int(call(con, &["STOCK.CONFIRM", "fx:holds", "h-held"])), 1);
    assert_eq!(detail(con, "fx:holds", "h-held"), held("confirmed", 1, 0));
}

fn check_stock_no_ledger(con: &mut Connection) {
    assert_eq!(stock_info(con, "fx:stock-no-ledger"), (97, 3, 0, 0));
}

/// Every key of the fixtures' server, after an RDB or AOF load.
fn check_everything(con: &mut Connection, f: &Fixtures) {
    check_lock(con, "fx:lock", "worker-1", f.lock_token);
    check_lock(con, "fx:lock-persist", "worker-2", f.lock_persist_token);
    check_lock(con, "fx:guard", "worker-3", f.guard_token);
    check_lock(con, "fx:live-lock", "worker-4", f.live_lock_token);
    assert_eq!(pttl(con, "fx:lock-persist"), -1, "PERSIST kept");
    for key in ["fx:lock", "fx:guard", "fx:live-lock"] {
        assert!(
            pttl(con, key) > LONG_TTL_AT_LEAST_MS,
            "{key}: pttl {}",
            pttl(con, key)
        );
    }
    assert_eq!(
        exists(con, "fx:live-gone"),
        0,
        "a released lock stays released"
    );
    check_stock_no_ledger(con);
    assert_eq!(
        stock_info(con, "fx:live-stock"),
        (f.live_available, 3, 2, f.live_lock_token)
    );
    check_restocks(con, "fx:live-stock", f.live_available, f.live_restocks);
    assert_eq!(request(con, "fx:live-stock", "live-1"), Some(0));
    assert_eq!(request(con, "fx:live-stock", "live-2"), Some(3));
    assert_eq!(get_string(con, "fx:plain").as_deref(), Some("45"));
    assert_eq!(int(call(con, &["XLEN", "fx:events"])), 2);
    check_stock(con, f);
    let mut keys = 10;
    if let Some(h) = &f.holds {
        keys += 3;
        let held = |s: &str, q: i64, d: i64| (s.to_string(), q, d);
        assert_eq!(
            detail(con, "fx:live-holds", "l-held"),
            held("held", 1, h.live_held_deadline)
        );
        assert_eq!(
            detail(con, "fx:live-holds", "l-expired"),
            held("expired", 2, 0)
        );
        assert_eq!(
            detail(con, "fx:live-holds", "l-confirmed"),
            held("confirmed", 3, 0)
        );
        assert_eq!(stock(con, "fx:live-holds"), 6);
        // deduct, deduct, expire on each stock.
        assert_eq!(int(call(con, &["XLEN", "fx:hold-events"])), 6);
        check_holds_stock(con, h);
    }
    // The token clock starts above everything the fixtures hold (the RDB's aux field, the
    // AOF's last grant).
    let next = int(call(con, &["LOCK.ACQUIRE", "fx:next", "w", "10000"]));
    assert!(
        next > f.live_lock_token,
        "next token {next} <= {}",
        f.live_lock_token
    );
    assert_eq!(dbsize(con), keys);
}

fn dump_payloads_restore(f: &Fixtures) {
    let server = Server::start();
    let mut con = server.conn();
    okay(restore(&mut con, "lock", 0, f.lock_dump, &[]));
    check_lock(&mut con, "lock", "worker-1", f.lock_token);
    okay(restore(&mut con, "fx:stock", 0, f.stock_dump, &[]));
    check_stock(&mut con, f);
    okay(restore(
        &mut con,
        "fx:stock-no-ledger",
        0,
        f.stock_no_ledger_dump,
        &[],
    ));
    check_stock_no_ledger(&mut con);
    if let Some(h) = &f.holds {
        okay(restore(&mut con, "fx:holds", 0, h.dump, &[]));
        check_holds_stock(&mut con, h);
    }
    // A restored lock's token is never issued again.
    let next = int(call(&mut con, &["LOCK.ACQUIRE", "other", "w", "10000"]));
    assert!(next > f.lock_token);
    // The same payloads with sanitize-dump-payload on (Valkey 9.1 has no such setting: it
    // always validates, as it did above).
    set_sanitize_dump_payload(&mut con, "yes");
    okay(restore(&mut con, "lock", 0, f.lock_dump, &["REPLACE"]));
    okay(restore(&mut con, "fx:stock", 0, f.stock_dump, &["REPLACE"]));
    check_lock(&mut con, "lock", "worker-1", f.lock_token);
    assert_eq!(
        stock_info(&mut con, "fx:stock"),
        (f.stock_available, 12, 5, f.guard_token)
    );
}

fn rdb_file_loads(f: &Fixtures) {
    let server = Server::start_with_files(&[("dump.rdb", f.rdb)], &[]);
    let mut con = server.conn();
    check_everything(&mut con, f);
}

fn aof_loads(f: &Fixtures) {
    let server = Server::start_with_files(
        &[("appendonly.aof", f.aof)],
        &["--appendonly", "yes", "--aof-use-rdb-preamble", "no"],
    );
    let mut con = server.conn();
    check_everything(&mut con, f);
}

#[test]
fn encoding_1_dump_payloads_restore() {
    dump_payloads_restore(&ENCODING_1);
}

#[test]
fn encoding_1_rdb_file_loads() {
    rdb_file_loads(&ENCODING_1);
}

#[test]
fn encoding_1_aof_in_the_effect_format_loads() {
    aof_loads(&ENCODING_1);
}

#[test]
fn encoding_2_dump_payloads_restore() {
    dump_payloads_restore(&ENCODING_2);
}

#[test]
fn encoding_2_rdb_file_loads() {
    rdb_file_loads(&ENCODING_2);
}

#[test]
fn encoding_2_aof_in_the_effect_format_loads() {
    aof_loads(&ENCODING_2);
}

#[test]
fn encoding_3_dump_payloads_restore() {
    dump_payloads_restore(&ENCODING_3);
}

#[test]
fn encoding_3_rdb_file_loads() {
    rdb_file_loads(&ENCODING_3);
}

#[test]
fn encoding_3_aof_in_the_effect_format_loads() {
    aof_loads(&ENCODING_3);
}

#[test]
fn encoding_4_dump_payloads_restore() {
    dump_payloads_restore(&ENCODING_4);
}

#[test]
fn encoding_4_rdb_file_loads() {
    rdb_file_loads(&ENCODING_4);
}

#[test]
fn encoding_4_aof_in_the_effect_format_loads() {
    aof_loads(&ENCODING_4);
}
