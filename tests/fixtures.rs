//! Old encodings keep loading: the encoding-1 fixtures (DUMP payloads, an RDB file and an
//! AOF in the effect format, written by the module when both types were at encoding version 1;
//! see tests/fixtures/encoding-1/make.py) are loaded on the server under test, and every value
//! in them reads back as it was written.

mod common;

use common::*;
use redis::Connection;

const LOCK_DUMP: &[u8] = include_bytes!("fixtures/encoding-1/lock.dump");
const STOCK_DUMP: &[u8] = include_bytes!("fixtures/encoding-1/stock.dump");
const STOCK_NO_LEDGER_DUMP: &[u8] = include_bytes!("fixtures/encoding-1/stock-no-ledger.dump");
const RDB: &[u8] = include_bytes!("fixtures/encoding-1/dump.rdb");
const AOF: &[u8] = include_bytes!("fixtures/encoding-1/appendonly.aof");

// What the fixtures hold (printed by make.py when they were made).
const LOCK_TOKEN: i64 = 1_796_056_302_873_903;
const LOCK_PERSIST_TOKEN: i64 = 1_796_056_302_874_170;
const GUARD_TOKEN: i64 = 1_796_056_302_874_920;
const LIVE_LOCK_TOKEN: i64 = 1_796_056_303_181_543;
/// The highest token in the fixtures' server: the RDB's aux field and the AOF's last grant.
const LAST_TOKEN: i64 = LIVE_LOCK_TOKEN;
/// The locks were taken for 10 years (fence.max-ttl-ms raised), on 2026-11-30.
const LONG_TTL_AT_LEAST_MS: i64 = 300 * 24 * 3600 * 1000;

/// (available, deducted, requests, fence) of `key`, from STOCK.INFO.
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

fn check_stock(con: &mut Connection) {
    assert_eq!(key_type(con, "fx:stock"), "fence-stk");
    assert_eq!(stock_info(con, "fx:stock"), (988, 12, 5, GUARD_TOKEN));
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
        988
    );
    assert_err(
        call(
            con,
            &[
                "STOCK.DEDUCT",
                "fx:stock",
                "1",
                "FENCE",
                &(GUARD_TOKEN - 1).to_string(),
            ],
        ),
        "STALE",
    );
    assert_eq!(
        int(call(con, &["STOCK.DEDUCT", "fx:stock", "1", "ID", "new"])),
        987
    );
    assert_eq!(int(call(con, &["STOCK.REFUND", "fx:stock", "order-3"])), 4);
}

fn check_stock_no_ledger(con: &mut Connection) {
    assert_eq!(stock_info(con, "fx:stock-no-ledger"), (97, 3, 0, 0));
}

/// Every key of the fixtures' server, after an RDB or AOF load.
fn check_everything(con: &mut Connection) {
    check_lock(con, "fx:lock", "worker-1", LOCK_TOKEN);
    check_lock(con, "fx:lock-persist", "worker-2", LOCK_PERSIST_TOKEN);
    check_lock(con, "fx:guard", "worker-3", GUARD_TOKEN);
    check_lock(con, "fx:live-lock", "worker-4", LIVE_LOCK_TOKEN);
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
        (27, 3, 2, LIVE_LOCK_TOKEN)
    );
    assert_eq!(request(con, "fx:live-stock", "live-1"), Some(0));
    assert_eq!(request(con, "fx:live-stock", "live-2"), Some(3));
    assert_eq!(get_string(con, "fx:plain").as_deref(), Some("45"));
    assert_eq!(int(call(con, &["XLEN", "fx:events"])), 2);
    check_stock(con);
    // The token clock starts above everything the fixtures hold.
    let next = int(call(con, &["LOCK.ACQUIRE", "fx:next", "w", "10000"]));
    assert!(next > LAST_TOKEN, "next token {next} <= {LAST_TOKEN}");
    assert_eq!(dbsize(con), 10);
}

#[test]
fn encoding_1_dump_payloads_restore() {
    let server = Server::start();
    let mut con = server.conn();
    okay(restore(&mut con, "lock", 0, LOCK_DUMP, &[]));
    check_lock(&mut con, "lock", "worker-1", LOCK_TOKEN);
    okay(restore(&mut con, "fx:stock", 0, STOCK_DUMP, &[]));
    check_stock(&mut con);
    okay(restore(
        &mut con,
        "fx:stock-no-ledger",
        0,
        STOCK_NO_LEDGER_DUMP,
        &[],
    ));
    check_stock_no_ledger(&mut con);
    // A restored lock's token is never issued again.
    let next = int(call(&mut con, &["LOCK.ACQUIRE", "other", "w", "10000"]));
    assert!(next > LOCK_TOKEN);
    // The same payloads with sanitize-dump-payload on.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "sanitize-dump-payload", "yes"],
    ));
    okay(restore(&mut con, "lock", 0, LOCK_DUMP, &["REPLACE"]));
    okay(restore(&mut con, "fx:stock", 0, STOCK_DUMP, &["REPLACE"]));
    check_lock(&mut con, "lock", "worker-1", LOCK_TOKEN);
    assert_eq!(stock_info(&mut con, "fx:stock"), (988, 12, 5, GUARD_TOKEN));
}

#[test]
fn encoding_1_rdb_file_loads() {
    let server = Server::start_with_files(&[("dump.rdb", RDB)], &[]);
    let mut con = server.conn();
    check_everything(&mut con);
}

#[test]
fn encoding_1_aof_in_the_effect_format_loads() {
    let server = Server::start_with_files(
        &[("appendonly.aof", AOF)],
        &["--appendonly", "yes", "--aof-use-rdb-preamble", "no"],
    );
    let mut con = server.conn();
    check_everything(&mut con);
}
