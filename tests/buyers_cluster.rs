//! Purchase limits across servers (issue 18): a stock with a limit per buyer, buyers with
//! entries in every state, entries without a buyer, a buyer above the limit and a buyer id with
//! non-ASCII bytes moves to another server, with `MIGRATE` between two servers and with its
//! slot on Redis Cluster. It arrives as it left: the limit, each buyer's units, each entry's
//! state, quantity, deadline and buyer; the target enforces the limit (a buyer at it gets
//! `LIMIT`), and on the cluster the target's replica agrees with it.
//!
//! Nothing here races a timer: the one expired hold is placed with `HOLD 1`, polled until its
//! deadline has passed by the server's clock, and expired by `STOCK.CONFIRM` before the move.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use redis::{ConnectionLike, RedisResult, Value};

/// A buyer id with non-ASCII bytes (UTF-8, a byte that is not UTF-8, a NUL), and as error
/// messages show it.
const ODD: &[u8] = b"k\xc3\xa4ufer \xff\x00-7";
const ODD_SHOWN: &str = "k\\xc3\\xa4ufer \\xff\\x00-7";

/// The buyers the stock records and one it does not.
const BUYERS: &[&[u8]] = &[b"user-1", b"user-2", b"user-4", ODD, b"user-9"];
/// The stock's request ids.
const IDS: &[&str] = &[
    "anon",
    "over",
    "deducted",
    "held",
    "confirmed",
    "refunded",
    "expired",
    "odd",
];

/// How long a replica may take to acknowledge a write.
const SYNC: Duration = Duration::from_secs(15);

/// One command with binary arguments, on a plain or a cluster connection.
fn call_bytes<C: ConnectionLike>(con: &mut C, args: &[&[u8]]) -> RedisResult<Value> {
    let (name, rest) = args.split_first().expect("a command name");
    let name = std::str::from_utf8(name).expect("a command name in ASCII");
    redis::cmd(name).arg(rest).query(con)
}

/// `STOCK.DEDUCT key quantity ID id [BUYER buyer] [HOLD ms]`.
fn deduct<C: ConnectionLike>(
    con: &mut C,
    key: &str,
    quantity: i64,
    id: &str,
    buyer: Option<&[u8]>,
    hold: Option<&str>,
) -> RedisResult<Value> {
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
    if let Some(ms) = hold {
        args.extend([b"HOLD".as_slice(), ms.as_bytes()]);
    }
    call_bytes(con, &args)
}

fn buyer_units<C: ConnectionLike>(con: &mut C, key: &str, buyer: &[u8]) -> i64 {
    int(call_bytes(con, &[b"STOCK.BUYER", key.as_bytes(), buyer]))
}

/// A reply's field/value pairs (a RESP2 flat array).
fn pairs(reply: RedisResult<Value>, what: &str) -> BTreeMap<String, Value> {
    let Ok(Value::Array(items)) = reply else {
        panic!("{what}: {reply:?}");
    };
    items
        .chunks(2)
        .map(|p| (text(&p[0]), p[1].clone()))
        .collect()
}

/// Everything the stock shows: `STOCK.INFO`, each entry's `STOCK.REQUEST … DETAIL`, each
/// buyer's `STOCK.BUYER`.
#[derive(Debug, PartialEq)]
struct Snapshot {
    info: BTreeMap<String, Value>,
    entries: Vec<(&'static str, BTreeMap<String, Value>)>,
    buyers: Vec<(&'static [u8], i64)>,
}

fn snapshot<C: ConnectionLike>(con: &mut C, key: &str) -> Snapshot {
    let info = pairs(call(con, &["STOCK.INFO", key]), "STOCK.INFO");
    let entries = IDS
        .iter()
        .map(|&id| {
            let detail = call(con, &["STOCK.REQUEST", key, id, "DETAIL"]);
            (id, pairs(detail, id))
        })
        .collect();
    let buyers = BUYERS
        .iter()
        .map(|&b| (b, buyer_units(con, key, b)))
        .collect();
    Snapshot {
        info,
        entries,
        buyers,
    }
}

/// Makes the stock: 100 units; before the limit an entry without a buyer and user-4's 5 units;
/// then limit 3: user-1 deducted 2 and holds 1 (10 minutes), user-2 confirmed 2 and refunded
/// 1, the odd buyer's hold of 3 expired and 1 deducted. Returns the held entry's deadline.
fn make_stock<C: ConnectionLike>(con: &mut C, key: &str) -> i64 {
    okay(call(con, &["STOCK.SET", key, "100"]));
    int(deduct(con, key, 4, "anon", None, None));
    int(deduct(con, key, 5, "over", Some(b"user-4"), None));
    assert_eq!(int(call(con, &["STOCK.LIMIT", key, "3"])), 1);
    int(deduct(con, key, 2, "deducted", Some(b"user-1"), None));
    int(deduct(con, key, 1, "held", Some(b"user-1"), Some("600000")));
    int(deduct(
        con,
        key,
        2,
        "confirmed",
        Some(b"user-2"),
        Some("600000"),
    ));
    assert_eq!(int(call(con, &["STOCK.CONFIRM", key, "confirmed"])), 1);
    int(deduct(con, key, 1, "refunded", Some(b"user-2"), None));
    assert_eq!(int(call(con, &["STOCK.REFUND", key, "refunded"])), 1);
    int(deduct(con, key, 3, "expired", Some(ODD), Some("1")));
    let state = |con: &mut C| {
        let d = pairs(
            call(con, &["STOCK.REQUEST", key, "expired", "DETAIL"]),
            "expired",
        );
        d.get("state").map(text).unwrap_or_default()
    };
    assert!(
        wait_until(EVENT_DEADLINE, || state(con) == "expired"),
        "a hold of 1 ms is still held"
    );
    assert_err(call(con, &["STOCK.CONFIRM", key, "expired"]), code::EXPIRED);
    int(deduct(con, key, 1, "odd", Some(ODD), None));
    let held = pairs(call(con, &["STOCK.REQUEST", key, "held", "DETAIL"]), "held");
    match held.get("deadline") {
        Some(Value::Int(d)) => *d,
        other => panic!("the held entry's deadline: {other:?}"),
    }
}

/// An entry as `STOCK.REQUEST … DETAIL` shows it: id, state, quantity, deadline (held entries),
/// buyer.
type Entry<'a> = (&'a str, &'a str, i64, Option<i64>, Option<&'a [u8]>);

/// The stock as `make_stock` left it, checked field by field.
#[track_caller]
fn check_stock(s: &Snapshot, deadline: i64, where_: &str) {
    for (name, value) in [
        ("available", 85),
        ("deducted", 15),
        ("requests", 8),
        ("fence", 0),
        ("restocks", 0),
        ("held", 1),
        ("held-units", 1),
        ("next-deadline", deadline),
        ("limit", 3),
        ("buyers", 4),
    ] {
        assert_eq!(
            s.info.get(name),
            Some(&Value::Int(value)),
            "{where_}: STOCK.INFO {name}"
        );
    }
    assert_eq!(s.info.len(), 10, "{where_}: STOCK.INFO {:?}", s.info);
    let expected: [Entry<'_>; 8] = [
        ("anon", "deducted", 4, None, None),
        ("over", "deducted", 5, None, Some(b"user-4")),
        ("deducted", "deducted", 2, None, Some(b"user-1")),
        ("held", "held", 1, Some(deadline), Some(b"user-1")),
        ("confirmed", "confirmed", 2, None, Some(b"user-2")),
        ("refunded", "refunded", 1, None, Some(b"user-2")),
        ("expired", "expired", 3, None, Some(ODD)),
        ("odd", "deducted", 1, None, Some(ODD)),
    ];
    for ((id, detail), (want_id, state, quantity, deadline, buyer)) in
        s.entries.iter().zip(expected)
    {
        assert_eq!(*id, want_id);
        let mut want = BTreeMap::from([
            ("state".to_string(), Value::BulkString(state.into())),
            ("quantity".to_string(), Value::Int(quantity)),
        ]);
        if let Some(d) = deadline {
            want.insert("deadline".into(), Value::Int(d));
        }
        if let Some(b) = buyer {
            want.insert("buyer".into(), Value::BulkString(b.to_vec()));
        }
        assert_eq!(*detail, want, "{where_}: {id} DETAIL");
    }
    let units: Vec<i64> = s.buyers.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        units,
        [3, 2, 5, 1, 0],
        "{where_}: STOCK.BUYER of {BUYERS:?}"
    );
}

/// On the server the stock moved to: the limit holds (a buyer at it, above it, one a deduction
/// would take past it, a deduction without a buyer), a buyer below it buys, a refund gives an
/// allowance back.
#[track_caller]
fn check_limit_enforced<C: ConnectionLike>(con: &mut C, key: &str) {
    assert_eq!(
        err(deduct(con, key, 1, "new-1", Some(b"user-1"), None)),
        limit_reached("user-1", 3, 3)
    );
    assert_eq!(
        err(deduct(con, key, 1, "new-1", Some(b"user-4"), None)),
        limit_reached("user-4", 5, 3)
    );
    assert_eq!(
        err(deduct(con, key, 3, "new-1", Some(ODD), None)),
        limit_reached(ODD_SHOWN, 1, 3)
    );
    assert_eq!(
        err(deduct(con, key, 1, "new-1", None, None)),
        buyer_required(3)
    );
    // A replay counts nothing again, whatever buyer it names.
    assert_eq!(int(deduct(con, key, 9, "held", Some(b"user-9"), None)), 85);
    assert_eq!(int(deduct(con, key, 1, "new-1", Some(b"user-2"), None)), 84);
    assert_eq!(
        err(deduct(con, key, 1, "new-2", Some(b"user-2"), None)),
        limit_reached("user-2", 3, 3)
    );
    assert_eq!(int(call(con, &["STOCK.REFUND", key, "deducted"])), 2);
    assert_eq!(int(deduct(con, key, 2, "new-3", Some(b"user-1"), None)), 84);
    assert_eq!(buyer_units(con, key, b"user-1"), 3);
    assert_eq!(buyer_units(con, key, b"user-2"), 3);
    assert_eq!(buyer_units(con, key, b"user-9"), 0);
    let info = pairs(call(con, &["STOCK.INFO", key]), "STOCK.INFO");
    assert_eq!(info.get("buyers"), Some(&Value::Int(4)), "no buyer added");
}

/// `MIGRATE` between two servers: the stock arrives with its limit and buyers.
#[test]
fn migrate_moves_a_stock_s_limit_and_buyers() {
    let source = Server::start();
    let target = Server::start();
    let (mut src, mut dst) = (source.conn(), target.conn());
    let key = "sku:buyers";
    let deadline = make_stock(&mut src, key);
    let before = snapshot(&mut src, key);
    check_stock(&before, deadline, "on the source");
    let port = target.port().to_string();
    okay(call(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, key, "0", "5000"],
    ));
    assert_eq!(exists(&mut src, key), 0, "the source keeps nothing");
    let after = snapshot(&mut dst, key);
    assert_eq!(after, before, "the stock on the target");
    check_limit_enforced(&mut dst, key);
}

/// On a cluster of 3 masters and 3 replicas: the stock moves to another master with its slot
/// (`Cluster::migrate_slot`, as `redis-cli --cluster reshard` does), arrives as it left, the
/// target enforces the limit, and the target's replica shows what the target shows.
#[test]
fn slot_migration_moves_a_stock_s_limit_and_buyers() {
    let key = "{sku:buyers}";
    let cluster = Cluster::start();
    let topology = cluster.wait_stable(CLUSTER_WAIT);
    let mut cc = cluster.conn();
    let deadline = make_stock(&mut cc, key);
    let before = snapshot(&mut cc, key);
    check_stock(&before, deadline, "on the source");

    let slot = cluster.keyslot(key);
    let source = topology.owner[slot];
    let target = *topology
        .masters
        .iter()
        .find(|&&n| n != source)
        .expect("another master");
    let moved = cluster.migrate_slot(slot, target).keys;
    assert_eq!(moved, [key], "keys moved");
    let mut src = cluster.node(source);
    let mut dst = cluster.node(target);
    assert_eq!(
        int(call(
            &mut src,
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]
        )),
        0,
        "the source still has keys of the slot it gave away"
    );
    let after = snapshot(&mut dst, key);
    assert_eq!(after, before, "the stock on the target");

    // The target enforces the limit; what it decides reaches its replica.
    check_limit_enforced(&mut dst, key);
    let now = cluster.wait_stable(CLUSTER_WAIT);
    let timeout = SYNC.as_millis().to_string();
    assert_eq!(
        int(call(&mut dst, &["WAIT", "1", &timeout])),
        1,
        "the target's replica acknowledged"
    );
    let mut rep = cluster.node(now.replica_of(target));
    okay(call(&mut rep, &["READONLY"]));
    assert_eq!(
        snapshot(&mut rep, key),
        snapshot(&mut dst, key),
        "the target's replica"
    );
    // The cluster client follows the slot: the limit holds through it too.
    assert_eq!(
        err(deduct(&mut cc, key, 1, "new-4", Some(b"user-1"), None)),
        limit_reached("user-1", 3, 3)
    );
}
