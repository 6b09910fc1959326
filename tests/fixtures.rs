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
    /// Encoding 5 on: stocks with a limit per buyer and buyers (see `check_buyers_stock`).
    buyers: Option<Buyers>,
}

/// `fx:holds` (a DUMP too) and `fx:live-holds`: the deadlines of their held entries.
struct Holds {
    dump: &'static [u8],
    held_deadline: i64,
    live_held_deadline: i64,
}

/// `fx:buyers` (a DUMP too) and `fx:live-buyers`: the deadlines of their held entries.
struct Buyers {
    dump: &'static [u8],
    held_deadline: i64,
    live_held_deadline: i64,
}

/// The buyer id with non-ASCII bytes the encoding-5 fixtures hold (UTF-8, a byte that is not
/// UTF-8, a NUL), and as error messages show it.
const ODD_BUYER: &[u8] = b"k\xc3\xa4ufer \xff\x00-7";
const ODD_BUYER_SHOWN: &str = "k\\xc3\\xa4ufer \\xff\\x00-7";

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
    buyers: None,
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
    buyers: None,
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
    buyers: None,
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
    buyers: None,
};

const ENCODING_5: Fixtures = Fixtures {
    lock_dump: include_bytes!("fixtures/encoding-5/lock.dump"),
    stock_dump: include_bytes!("fixtures/encoding-5/stock.dump"),
    stock_no_ledger_dump: include_bytes!("fixtures/encoding-5/stock-no-ledger.dump"),
    rdb: include_bytes!("fixtures/encoding-5/dump.rdb"),
    aof: include_bytes!("fixtures/encoding-5/appendonly.aof"),
    lock_token: 1_796_079_485_915_618,
    lock_persist_token: 1_796_079_485_915_711,
    guard_token: 1_796_079_485_915_880,
    live_lock_token: 1_796_079_485_978_274,
    stock_available: 1038,
    restocks: &[("restock-1", 20), ("restock-2", 30)],
    live_available: 31,
    live_restocks: &[("live-restock", 4)],
    holds: Some(Holds {
        dump: include_bytes!("fixtures/encoding-5/holds.dump"),
        held_deadline: 2_111_439_485_916,
        live_held_deadline: 2_111_439_485_979,
    }),
    buyers: Some(Buyers {
        dump: include_bytes!("fixtures/encoding-5/buyers.dump"),
        held_deadline: 2_111_439_485_922,
        live_held_deadline: 2_111_439_485_983,
    }),
};

/// The locks were taken for 10 years (fence.max-ttl-ms raised), on 2026-11-30.
const LONG_TTL_AT_LEAST_MS: i64 = 300 * 24 * 3600 * 1000;

/// (available, deducted, requests, fence) of `key`, from STOCK.INFO. These stocks have no limit
/// and no buyer, in every encoding (those before purchase limits load with none).
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
    assert_eq!(
        (field("limit"), field("buyers")),
        (0, 0),
        "STOCK.INFO {key}: a stock with no limit and no buyer"
    );
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
        ("limit", 0),
        ("buyers", 0),
    ] {
        assert_eq!(
            field(name),
            Some(redis::Value::Int(value)),
            "fx:holds {name}"
        );
    }
    for id in [
        "h-held",
        "h-confirmed",
        "h-expired",
        "h-refunded",
        "h-plain",
    ] {
        assert_eq!(entry_buyer(con, "fx:holds", id), None, "fx:holds {id}");
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

/// One command with binary arguments (buyer ids that are not UTF-8).
fn call_bytes(con: &mut Connection, args: &[&[u8]]) -> redis::RedisResult<redis::Value> {
    let (name, rest) = args.split_first().expect("a command name");
    let name = std::str::from_utf8(name).expect("a command name in ASCII");
    redis::cmd(name).arg(rest).query(con)
}

/// The `buyer` field of `STOCK.REQUEST key id DETAIL` (None for an entry without a buyer).
fn entry_buyer(con: &mut Connection, key: &str, id: &str) -> Option<Vec<u8>> {
    let Ok(redis::Value::Array(items)) = call(con, &["STOCK.REQUEST", key, id, "DETAIL"]) else {
        panic!("STOCK.REQUEST {key} {id} DETAIL");
    };
    items
        .chunks(2)
        .find(|p| text(&p[0]) == "buyer")
        .map(|p| match &p[1] {
            redis::Value::BulkString(b) => b.clone(),
            other => panic!("{key} {id} buyer: {other:?}"),
        })
}

/// Every field of STOCK.INFO `key` named in `expected` has that value.
#[track_caller]
fn assert_info(con: &mut Connection, key: &str, expected: &[(&str, i64)]) {
    let Ok(redis::Value::Array(items)) = call(con, &["STOCK.INFO", key]) else {
        panic!("STOCK.INFO {key} is not an array");
    };
    assert_eq!(items.len(), 20, "STOCK.INFO {key}: 10 fields");
    for (name, value) in expected {
        let got = items
            .chunks(2)
            .find(|p| text(&p[0]) == *name)
            .map(|p| p[1].clone());
        assert_eq!(
            got,
            Some(redis::Value::Int(*value)),
            "STOCK.INFO {key} {name}"
        );
    }
}

/// `STOCK.DEDUCT key quantity ID id [BUYER buyer]`.
fn deduct_for(
    con: &mut Connection,
    key: &str,
    quantity: i64,
    id: &str,
    buyer: Option<&[u8]>,
) -> redis::RedisResult<redis::Value> {
    let quantity = quantity.to_string();
    let mut args: Vec<&[u8]> = vec![
        b"STOCK.DEDUCT",
        key.as_bytes(),
        quantity.as_bytes(),
        b"ID",
        id.as_bytes(),
    ];
    if let Some(buyer) = buyer {
        args.extend([b"BUYER".as_slice(), buyer]);
    }
    call_bytes(con, &args)
}

fn buyer_units(con: &mut Connection, key: &str, buyer: &[u8]) -> i64 {
    int(call_bytes(con, &[b"STOCK.BUYER", key.as_bytes(), buyer]))
}

/// An entry as `STOCK.REQUEST … DETAIL` shows it: id, state, quantity, deadline (0 for none),
/// buyer.
type Entry<'a> = (&'a str, &'a str, i64, i64, Option<&'a [u8]>);

#[track_caller]
fn check_entries(con: &mut Connection, key: &str, entries: &[Entry<'_>]) {
    for &(id, state, quantity, deadline, buyer) in entries {
        assert_eq!(
            detail(con, key, id),
            (state.to_string(), quantity, deadline),
            "{key} {id}"
        );
        assert_eq!(
            entry_buyer(con, key, id).as_deref(),
            buyer,
            "{key} {id} buyer"
        );
    }
}

#[track_caller]
fn check_buyer_units(con: &mut Connection, key: &str, units: &[(&[u8], i64)]) {
    for &(buyer, n) in units {
        assert_eq!(
            buyer_units(con, key, buyer),
            n,
            "{key}: STOCK.BUYER {}",
            String::from_utf8_lossy(buyer)
        );
    }
}

/// `fx:buyers`: limit 3, entries without a buyer, a buyer in every state, a buyer above the
/// limit (it bought before the limit was set), a buyer id with non-ASCII bytes; read back,
/// then the limit holds on the loaded stock.
fn check_buyers_stock(con: &mut Connection, b: &Buyers) {
    let key = "fx:buyers";
    assert_eq!(key_type(con, key), "fence-stk");
    assert_info(
        con,
        key,
        &[
            ("available", 84),
            ("deducted", 16),
            ("requests", 10),
            ("fence", 0),
            ("restocks", 0),
            ("held", 2),
            ("held-units", 2),
            ("next-deadline", b.held_deadline),
            ("limit", 3),
            ("buyers", 5),
        ],
    );
    let d = b.held_deadline;
    check_entries(
        con,
        key,
        &[
            ("b-anon", "deducted", 4, 0, None),
            ("b-anon-held", "held", 1, d, None),
            ("b-over", "deducted", 5, 0, Some(b"user-4")),
            ("b-deducted", "deducted", 2, 0, Some(b"user-1")),
            ("b-held", "held", 1, d, Some(b"user-1")),
            ("b-confirmed", "confirmed", 2, 0, Some(b"user-2")),
            ("b-refunded", "refunded", 1, 0, Some(b"user-2")),
            ("b-expired", "expired", 3, 0, Some(ODD_BUYER)),
            ("b-odd", "deducted", 1, 0, Some(ODD_BUYER)),
            ("b-gone", "refunded", 2, 0, Some(b"user-5")),
        ],
    );
    check_buyer_units(
        con,
        key,
        &[
            (b"user-1", 3),
            (b"user-2", 2),
            (b"user-4", 5),
            (ODD_BUYER, 1),
            (b"user-5", 0),
            (b"user-3", 0),
        ],
    );
    // The limit holds on the loaded stock: a buyer at it, above it, one who would pass it, a
    // deduction without a buyer.
    assert_eq!(
        err(deduct_for(con, key, 1, "n-1", Some(b"user-1"))),
        limit_reached("user-1", 3, 3)
    );
    assert_eq!(
        err(deduct_for(con, key, 1, "n-1", Some(b"user-4"))),
        limit_reached("user-4", 5, 3)
    );
    assert_eq!(
        err(deduct_for(con, key, 3, "n-1", Some(ODD_BUYER))),
        limit_reached(ODD_BUYER_SHOWN, 1, 3)
    );
    assert_eq!(err(deduct_for(con, key, 1, "n-1", None)), buyer_required(3));
    // A replay counts nothing again, whatever buyer it names.
    assert_eq!(
        int(deduct_for(con, key, 9, "b-deducted", Some(b"user-9"))),
        84
    );
    // user-2 has room for one more, then is at the limit.
    assert_eq!(int(deduct_for(con, key, 1, "n-2", Some(b"user-2"))), 83);
    assert_eq!(
        err(deduct_for(con, key, 1, "n-3", Some(b"user-2"))),
        limit_reached("user-2", 3, 3)
    );
    // A refund gives user-1's allowance back; the expired hold gave the odd buyer's back.
    assert_eq!(int(call(con, &["STOCK.REFUND", key, "b-deducted"])), 2);
    assert_eq!(int(deduct_for(con, key, 2, "n-4", Some(b"user-1"))), 83);
    assert_eq!(int(deduct_for(con, key, 2, "n-5", Some(ODD_BUYER))), 81);
    assert_eq!(
        err(deduct_for(con, key, 1, "n-6", Some(ODD_BUYER))),
        limit_reached(ODD_BUYER_SHOWN, 3, 3)
    );
    // The held entry confirms and keeps counting; the expired one stays expired.
    assert_eq!(int(call(con, &["STOCK.CONFIRM", key, "b-held"])), 1);
    assert_err(
        call(con, &["STOCK.CONFIRM", key, "b-expired"]),
        code::EXPIRED,
    );
    check_buyer_units(
        con,
        key,
        &[
            (b"user-1", 3),
            (b"user-2", 3),
            (b"user-4", 5),
            (ODD_BUYER, 3),
            (b"user-5", 0),
            (b"user-9", 0),
        ],
    );
    // STOCK.LIMIT raises the limit of the loaded sale: user-4 may buy again.
    assert_eq!(int(call(con, &["STOCK.LIMIT", key, "6"])), 1);
    assert_eq!(int(deduct_for(con, key, 1, "n-7", Some(b"user-4"))), 80);
    assert_info(
        con,
        key,
        &[
            ("available", 80),
            ("deducted", 20),
            ("requests", 14),
            ("held", 1),
            ("held-units", 1),
            ("limit", 6),
            ("buyers", 5),
        ],
    );
}

/// `fx:live-buyers`, from live effects: a first sale's buyer cleared by the next `STOCK.SET`,
/// a limit set in the middle of the sale, raised, then lowered below what user-3 holds.
fn check_live_buyers(con: &mut Connection, b: &Buyers) {
    let key = "fx:live-buyers";
    assert_info(
        con,
        key,
        &[
            ("available", 42),
            ("deducted", 8),
            ("requests", 7),
            ("fence", 0),
            ("restocks", 0),
            ("held", 1),
            ("held-units", 1),
            ("next-deadline", b.live_held_deadline),
            ("limit", 2),
            ("buyers", 4),
        ],
    );
    assert_eq!(request(con, key, "lb-old"), None, "the first sale's entry");
    check_entries(
        con,
        key,
        &[
            ("lb-anon", "deducted", 1, 0, None),
            ("lb-early", "deducted", 2, 0, Some(b"user-1")),
            ("lb-held", "held", 1, b.live_held_deadline, Some(b"user-2")),
            ("lb-confirmed", "confirmed", 1, 0, Some(b"user-2")),
            ("lb-expired", "expired", 2, 0, Some(ODD_BUYER)),
            ("lb-refunded", "refunded", 1, 0, Some(b"user-3")),
            ("lb-deducted", "deducted", 3, 0, Some(b"user-3")),
        ],
    );
    check_buyer_units(
        con,
        key,
        &[
            (b"user-1", 2),
            (b"user-2", 2),
            (b"user-3", 3),
            (ODD_BUYER, 0),
            (b"user-9", 0),
        ],
    );
    assert_eq!(
        err(deduct_for(con, key, 1, "n-1", Some(b"user-3"))),
        limit_reached("user-3", 3, 2)
    );
    assert_eq!(
        err(deduct_for(con, key, 1, "n-1", Some(b"user-1"))),
        limit_reached("user-1", 2, 2)
    );
    assert_eq!(
        err(deduct_for(con, key, 3, "n-1", Some(b"user-6"))),
        limit_reached("user-6", 0, 2)
    );
    assert_eq!(err(deduct_for(con, key, 1, "n-1", None)), buyer_required(2));
    assert_eq!(int(deduct_for(con, key, 2, "n-1", Some(ODD_BUYER))), 40);
    assert_eq!(buyer_units(con, key, ODD_BUYER), 2);
    assert_info(
        con,
        key,
        &[("available", 40), ("requests", 8), ("buyers", 4)],
    );
}

/// A stream entry's `type`, `sku` and `buyer` (None: no buyer field).
type Event = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// `fx:buyer-events`: each stock's deduct, deduct, expire, the deductions with their buyer.
fn check_buyer_events(con: &mut Connection) {
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("fx:buyer-events")
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE fx:buyer-events");
    let seen: Vec<Event> = entries
        .into_iter()
        .map(|(_, fields)| {
            let get = |name: &[u8]| {
                fields
                    .chunks(2)
                    .find(|p| p[0] == name)
                    .map(|p| p[1].clone())
            };
            (
                get(b"type").unwrap_or_default(),
                get(b"sku").unwrap_or_default(),
                get(b"buyer"),
            )
        })
        .collect();
    let e = |t: &str, sku: &str, buyer: Option<&[u8]>| {
        (
            t.as_bytes().to_vec(),
            sku.as_bytes().to_vec(),
            buyer.map(<[u8]>::to_vec),
        )
    };
    assert_eq!(
        seen,
        vec![
            e("deduct", "fx:buyers", Some(b"user-1")),
            e("deduct", "fx:buyers", Some(ODD_BUYER)),
            e("expire", "fx:buyers", None),
            e("deduct", "fx:live-buyers", Some(b"user-2")),
            e("deduct", "fx:live-buyers", Some(ODD_BUYER)),
            e("expire", "fx:live-buyers", None),
        ]
    );
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
    if let Some(b) = &f.buyers {
        keys += 3;
        check_buyer_events(con);
        check_live_buyers(con, b);
        check_buyers_stock(con, b);
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
    if let Some(b) = &f.buyers {
        okay(restore(&mut con, "fx:buyers", 0, b.dump, &[]));
        check_buyers_stock(&mut con, b);
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
    if let Some(b) = &f.buyers {
        okay(restore(&mut con, "fx:buyers", 0, b.dump, &["REPLACE"]));
        check_buyers_stock(&mut con, b);
    }
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

#[test]
fn encoding_5_dump_payloads_restore() {
    dump_payloads_restore(&ENCODING_5);
}

#[test]
fn encoding_5_rdb_file_loads() {
    rdb_file_loads(&ENCODING_5);
}

#[test]
fn encoding_5_aof_in_the_effect_format_loads() {
    aof_loads(&ENCODING_5);
}
