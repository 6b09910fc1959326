//! `STOCK.DEDUCT … EVENTS stream-key [MAXLEN [~|=] n]` and `STOCK.REFUND … EVENTS …`: the order
//! events a deduction or a refund appends to a Redis Stream in the same atomic step.
//!
//! Exactly one `deduct` entry per successful deduction (plus `soldout` when it empties the
//! stock), none for replays and refusals, fields exact and in order; refunds; plain-string
//! stocks; trimming; `WRONGTYPE`; the stream as a declared key (`COMMAND GETKEYS`, ACL key
//! patterns); 100 concurrent buyers; a SIGKILL with `appendfsync always`; a replica.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use fence_core::config::MAX_ID_LENGTH;
use rand::RngExt;
use redis::{Connection, Value};

const SKU: &str = "{sku:42}";
const ORDERS: &str = "{sku:42}:orders";
/// How long a replica may take to catch up.
const SYNC: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One stream entry: its id and its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    fields: Vec<(String, String)>,
}

impl Entry {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.as_str())
    }

    fn kind(&self) -> &str {
        self.get("type").unwrap_or("")
    }

    fn int(&self, name: &str) -> i64 {
        match self.get(name).map(str::parse::<i64>) {
            Some(Ok(n)) => n,
            _ => panic!("entry {self:?}: no integer field {name}"),
        }
    }
}

/// A stream id as (ms, seq), for ordering.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id ms-seq");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

fn parse_entries(reply: Value) -> Vec<Entry> {
    let Value::Array(items) = reply else {
        panic!("expected an array of stream entries, got {reply:?}");
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                panic!("expected [id, fields], got {item:?}");
            };
            assert_eq!(pair.len(), 2, "entry {pair:?}");
            let id = text(&pair[0]);
            let Value::Array(flat) = &pair[1] else {
                panic!("entry {id}: fields {:?}", pair[1]);
            };
            assert!(flat.len() % 2 == 0, "entry {id}: odd fields {flat:?}");
            let fields = flat.chunks(2).map(|c| (text(&c[0]), text(&c[1]))).collect();
            Entry { id, fields }
        })
        .collect()
}

/// Every entry of a stream (none when the key does not exist).
#[track_caller]
fn xrange(con: &mut Connection, stream: &str) -> Vec<Entry> {
    parse_entries(call(con, &["XRANGE", stream, "-", "+"]).expect("XRANGE"))
}

#[track_caller]
fn xlen(con: &mut Connection, stream: &str) -> i64 {
    int(call(con, &["XLEN", stream]))
}

/// Expected fields, in order.
fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

/// The fields of a `deduct` entry.
fn deduct_fields(
    sku: &str,
    quantity: i64,
    remaining: i64,
    id: Option<&str>,
    fence: Option<i64>,
) -> Vec<(String, String)> {
    let mut f = fields(&[
        ("type", "deduct"),
        ("sku", sku),
        ("quantity", &quantity.to_string()),
        ("remaining", &remaining.to_string()),
    ]);
    if let Some(id) = id {
        f.push(("id".into(), id.into()));
    }
    if let Some(token) = fence {
        f.push(("fence".into(), token.to_string()));
    }
    f
}

fn soldout_fields(sku: &str) -> Vec<(String, String)> {
    fields(&[("type", "soldout"), ("sku", sku)])
}

fn refund_fields(sku: &str, id: &str, quantity: i64, remaining: i64) -> Vec<(String, String)> {
    fields(&[
        ("type", "refund"),
        ("sku", sku),
        ("id", id),
        ("quantity", &quantity.to_string()),
        ("remaining", &remaining.to_string()),
    ])
}

/// Runs a command given as words.
fn cmd(con: &mut Connection, words: &[&str]) -> redis::RedisResult<Value> {
    call(con, words)
}

/// `XINFO STREAM key`'s fields that say what was ever appended (length, last id, first and
/// last entry, entries added), as text; "missing" when the key does not exist.
fn stream_state(con: &mut Connection, stream: &str) -> String {
    match call(con, &["XINFO", "STREAM", stream]) {
        Ok(Value::Array(items)) => {
            let mut out = Vec::new();
            for pair in items.chunks(2) {
                let name = text(&pair[0]);
                // Node counts depend on the server's layout, not on what the stream holds.
                if name == "radix-tree-keys" || name == "radix-tree-nodes" {
                    continue;
                }
                out.push(format!("{name}={:?}", pair[1]));
            }
            out.join(" ")
        }
        Err(e) if error_text(&e).starts_with("ERR no such key") => "missing".into(),
        other => panic!("XINFO STREAM {stream}: {other:?}"),
    }
}

/// Everything a refused call must leave as it was: every key with its digest, the stock's
/// ledger and fence as `STOCK.INFO` tells them, and each stream's history.
fn snapshot(con: &mut Connection, streams: &[&str]) -> String {
    let mut out = format!("digest={}\n", debug_digest(con));
    for key in all_keys(con) {
        out.push_str(&format!(
            "{key}: {} {}\n",
            key_type(con, &key),
            digest_value(con, &key)
        ));
        if key_type(con, &key) == "fence-stk" {
            out.push_str(&format!(
                "  info={:?}\n",
                call(con, &["STOCK.INFO", &key]).unwrap()
            ));
        }
    }
    for s in streams {
        out.push_str(&format!("{s}: {}\n", stream_state(con, s)));
    }
    out
}

fn start() -> Server {
    Server::start_with(&["--enable-debug-command", "yes"])
}

// ---------------------------------------------------------------------------------------------
// One entry per deduction, exact fields
// ---------------------------------------------------------------------------------------------

#[test]
fn every_deduction_appends_one_deduct_entry_with_exact_fields() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, "10"]));
    let token = now_us();
    let t = token.to_string();

    // No options but EVENTS: no id, no fence fields.
    assert_eq!(
        int(cmd(&mut con, &["STOCK.DEDUCT", SKU, "1", "EVENTS", ORDERS])),
        9
    );
    // ID only.
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "2", "ID", "order-1", "EVENTS", ORDERS]
        )),
        7
    );
    // FENCE only, options in another order and case.
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "events", ORDERS, "fence", &t]
        )),
        6
    );
    // Both: id before fence in the entry whatever the order of the options.
    assert_eq!(
        int(cmd(
            &mut con,
            &[
                "STOCK.DEDUCT",
                SKU,
                "3",
                "FENCE",
                &t,
                "EVENTS",
                ORDERS,
                "ID",
                "order-2"
            ]
        )),
        3
    );
    let entries = xrange(&mut con, ORDERS);
    let got: Vec<_> = entries.iter().map(|e| e.fields.clone()).collect();
    assert_eq!(
        got,
        vec![
            deduct_fields(SKU, 1, 9, None, None),
            deduct_fields(SKU, 2, 7, Some("order-1"), None),
            deduct_fields(SKU, 1, 6, None, Some(token)),
            deduct_fields(SKU, 3, 3, Some("order-2"), Some(token)),
        ]
    );
    // Ids rise: the stream's own auto ids.
    for pair in entries.windows(2) {
        assert!(stream_id(&pair[0].id) < stream_id(&pair[1].id), "{pair:?}");
    }
    assert_eq!(key_type(&mut con, ORDERS), "stream");
    assert_eq!(stock(&mut con, SKU), 3);

    // A deduction without EVENTS appends nothing, anywhere.
    assert_eq!(int(cmd(&mut con, &["STOCK.DEDUCT", SKU, "1"])), 2);
    assert_eq!(xlen(&mut con, ORDERS), 4);

    // The deduction that empties the stock: deduct, then soldout, and nothing else.
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "2", "ID", "order-3", "EVENTS", ORDERS]
        )),
        0
    );
    let entries = xrange(&mut con, ORDERS);
    assert_eq!(entries.len(), 6);
    assert_eq!(
        entries[4].fields,
        deduct_fields(SKU, 2, 0, Some("order-3"), None)
    );
    assert_eq!(entries[5].fields, soldout_fields(SKU));
    assert!(stream_id(&entries[4].id) < stream_id(&entries[5].id));

    // Sold out now: nil, nothing appended, not even another soldout.
    nil(cmd(
        &mut con,
        &["STOCK.DEDUCT", SKU, "1", "ID", "order-4", "EVENTS", ORDERS],
    ));
    nil(cmd(&mut con, &["STOCK.DEDUCT", SKU, "1", "EVENTS", ORDERS]));
    assert_eq!(xlen(&mut con, ORDERS), 6);

    // Restock, sell out again: one more soldout, after its deduct.
    assert_eq!(int(cmd(&mut con, &["STOCK.ADD", SKU, "1"])), 1);
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "ID", "order-4", "EVENTS", ORDERS]
        )),
        0
    );
    let kinds: Vec<String> = xrange(&mut con, ORDERS)
        .iter()
        .map(|e| e.kind().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["deduct", "deduct", "deduct", "deduct", "deduct", "soldout", "deduct", "soldout"]
    );

    // Binary-safe values: a request id with spaces, quotes and newline goes in as it is.
    okay(cmd(&mut con, &["STOCK.SET", SKU, "5"]));
    let odd = "a b\"c\n{d}";
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "ID", odd, "EVENTS", ORDERS]
        )),
        4
    );
    let last = xrange(&mut con, ORDERS).pop().unwrap();
    assert_eq!(last.fields, deduct_fields(SKU, 1, 4, Some(odd), None));
}

#[test]
fn events_go_to_the_stream_named_by_each_call() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, "10"]));
    okay(cmd(&mut con, &["STOCK.SET", "{sku:7}", "10"]));
    int(cmd(&mut con, &["STOCK.DEDUCT", SKU, "1", "EVENTS", "a"]));
    int(cmd(&mut con, &["STOCK.DEDUCT", SKU, "1", "EVENTS", "b"]));
    int(cmd(
        &mut con,
        &["STOCK.DEDUCT", "{sku:7}", "4", "EVENTS", "a"],
    ));
    let a = xrange(&mut con, "a");
    let b = xrange(&mut con, "b");
    assert_eq!(
        a.iter().map(|e| e.fields.clone()).collect::<Vec<_>>(),
        vec![
            deduct_fields(SKU, 1, 9, None, None),
            deduct_fields("{sku:7}", 4, 6, None, None)
        ]
    );
    assert_eq!(
        b.iter().map(|e| e.fields.clone()).collect::<Vec<_>>(),
        vec![deduct_fields(SKU, 1, 8, None, None)]
    );
}

#[test]
fn replays_sold_out_and_refused_calls_append_nothing_and_change_nothing() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, "5"]));
    let token = now_us();
    let t = token.to_string();
    assert_eq!(
        int(cmd(
            &mut con,
            &[
                "STOCK.DEDUCT",
                SKU,
                "2",
                "ID",
                "a",
                "FENCE",
                &t,
                "EVENTS",
                ORDERS
            ]
        )),
        3
    );
    okay(cmd(&mut con, &["SET", "str", "hello"]));
    okay(cmd(&mut con, &["SET", "plain", "4"]));
    assert_eq!(int(cmd(&mut con, &["RPUSH", "lst", "x"])), 1);
    okay(cmd(&mut con, &["STOCK.SET", "{sku:42}:empty", "0"]));
    let streams = [ORDERS, "fresh"];
    let before = snapshot(&mut con, &streams);
    let old = (token - 1).to_string();
    let future = (now_us() + 48 * 3_600 * 1_000_000).to_string();
    let long_id = "x".repeat(600);

    let cases: Vec<(Vec<&str>, Option<String>)> = vec![
        // Replays: the current remaining, whatever the quantity, the stream, the fence.
        (vec![SKU, "2", "ID", "a", "EVENTS", ORDERS], None),
        (vec![SKU, "9", "ID", "a", "EVENTS", "fresh"], None),
        (
            vec![SKU, "1", "ID", "a", "FENCE", &t, "EVENTS", ORDERS],
            None,
        ),
        // Sold out (more than is available, an empty stock, a missing key).
        (vec![SKU, "4", "ID", "b", "EVENTS", ORDERS], None),
        (vec![SKU, "4", "EVENTS", "fresh"], None),
        (vec!["{sku:42}:empty", "1", "EVENTS", "fresh"], None),
        (
            vec!["{sku:42}:none", "1", "ID", "c", "EVENTS", "fresh"],
            None,
        ),
        (vec!["plain", "5", "EVENTS", "fresh"], None),
        // STALE.
        (
            vec![SKU, "1", "ID", "c", "FENCE", &old, "EVENTS", "fresh"],
            Some(code::STALE.into()),
        ),
        // A token from the future.
        (
            vec![SKU, "1", "FENCE", &future, "EVENTS", "fresh"],
            Some(TOKEN_FROM_FUTURE.into()),
        ),
        // Bad arguments.
        (vec![SKU, "0", "EVENTS", "fresh"], Some(quantity_range(1))),
        (vec![SKU, "x", "EVENTS", "fresh"], Some(quantity_range(1))),
        (vec![SKU, "1", "EVENTS"], Some(missing_value("EVENTS"))),
        (
            vec![SKU, "1", "EVENTS", "fresh", "EVENTS", "fresh"],
            Some(repeated_option("EVENTS")),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "MAXLEN"],
            Some(BAD_MAXLEN.into()),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "MAXLEN", "~"],
            Some(BAD_MAXLEN.into()),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "MAXLEN", "=", "-1"],
            Some(BAD_MAXLEN.into()),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "MAXLEN", "many"],
            Some(BAD_MAXLEN.into()),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "MAXLEN", "5", "LIMIT", "10"],
            Some(unknown_option("LIMIT")),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "ID"],
            Some(missing_value("ID")),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "ID", ""],
            Some(empty_name(Name::RequestId)),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "ID", &long_id],
            Some(name_too_long(Name::RequestId, MAX_ID_LENGTH.default)),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "FENCE", "0"],
            Some(TOKEN_NOT_POSITIVE.into()),
        ),
        (
            vec![SKU, "1", "EVENTS", "fresh", "BOGUS"],
            Some(unknown_option("BOGUS")),
        ),
        // ID or FENCE on a plain string.
        (
            vec!["plain", "1", "ID", "p", "EVENTS", "fresh"],
            Some(NEEDS_STOCK.into()),
        ),
        // A plain string that is not an integer.
        (
            vec!["str", "1", "EVENTS", "fresh"],
            Some(NOT_INTEGER.into()),
        ),
        // The stock key of another type.
        (vec!["lst", "1", "EVENTS", "fresh"], Some(WRONGTYPE.into())),
        // The stream key of another type (a string, a list, a stock, the stock itself).
        (
            vec![SKU, "1", "ID", "d", "EVENTS", "str"],
            Some(WRONGTYPE.into()),
        ),
        (vec![SKU, "1", "EVENTS", "lst"], Some(WRONGTYPE.into())),
        (
            vec![SKU, "1", "EVENTS", "{sku:42}:empty"],
            Some(WRONGTYPE.into()),
        ),
        (vec![SKU, "1", "EVENTS", SKU], Some(WRONGTYPE.into())),
        (
            vec!["plain", "1", "EVENTS", "plain"],
            Some(WRONGTYPE.into()),
        ),
        (vec!["plain", "1", "EVENTS", "lst"], Some(WRONGTYPE.into())),
    ];
    for (args, want) in &cases {
        let mut full = vec!["STOCK.DEDUCT"];
        full.extend(args.iter().copied());
        let reply = cmd(&mut con, &full);
        match want {
            None => match reply {
                Ok(Value::Int(3)) if args[0] == SKU && args.contains(&"a") => {}
                Ok(Value::Nil) if !args.contains(&"a") => {}
                other => panic!("{full:?}: unexpected reply {other:?}"),
            },
            Some(prefix) => {
                assert_err_ctx(reply, prefix, format!("{full:?}"));
            }
        }
        assert_eq!(
            snapshot(&mut con, &streams),
            before,
            "{full:?} changed something"
        );
    }

    // A full ledger refuses a new id: nothing appended either.
    okay(cmd(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1"],
    ));
    assert_err(
        cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "ID", "new", "EVENTS", ORDERS],
        ),
        ledger_full(1),
    );
    assert_eq!(snapshot(&mut con, &streams), before, "a full ledger");
    // The replay still answers, still without an entry.
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "2", "ID", "a", "EVENTS", ORDERS]
        )),
        3
    );
    assert_eq!(
        snapshot(&mut con, &streams),
        before,
        "a replay on a full ledger"
    );

    // Refunds that return nothing append nothing: unknown id, a missing stock, and (after the
    // one real refund) the second refund of the same id.
    for args in [
        vec!["STOCK.REFUND", SKU, "unknown", "EVENTS", ORDERS],
        vec!["STOCK.REFUND", "{sku:42}:none", "a", "EVENTS", "fresh"],
    ] {
        assert_eq!(int(cmd(&mut con, &args)), 0, "{args:?}");
        assert_eq!(snapshot(&mut con, &streams), before, "{args:?}");
    }
    for (args, want) in [
        (vec!["STOCK.REFUND", SKU, "a", "EVENTS", "str"], WRONGTYPE),
        (vec!["STOCK.REFUND", SKU, "a", "EVENTS", SKU], WRONGTYPE),
        (
            vec!["STOCK.REFUND", "plain", "a", "EVENTS", "fresh"],
            NEEDS_STOCK,
        ),
        (
            vec!["STOCK.REFUND", "lst", "a", "EVENTS", "fresh"],
            WRONGTYPE,
        ),
        (
            vec!["STOCK.REFUND", SKU, "", "EVENTS", "fresh"],
            &empty_name(Name::RequestId),
        ),
        (
            vec!["STOCK.REFUND", SKU, "a", "EVENTS", "fresh", "MAXLEN", "-3"],
            BAD_MAXLEN,
        ),
    ] {
        assert_err_ctx(cmd(&mut con, &args), want, format!("{args:?}"));
        assert_eq!(snapshot(&mut con, &streams), before, "{args:?}");
    }
    assert_eq!(
        int(cmd(&mut con, &["STOCK.REFUND", SKU, "a", "EVENTS", ORDERS])),
        2
    );
    let after_refund = snapshot(&mut con, &streams);
    assert_ne!(after_refund, before);
    assert_eq!(
        int(cmd(&mut con, &["STOCK.REFUND", SKU, "a", "EVENTS", ORDERS])),
        0
    );
    assert_eq!(
        snapshot(&mut con, &streams),
        after_refund,
        "a second refund"
    );
    // A replay of the refunded id: the remaining, nothing appended.
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "ID", "a", "EVENTS", ORDERS]
        )),
        5
    );
    assert_eq!(snapshot(&mut con, &streams), after_refund, "a late replay");
    let kinds: Vec<String> = xrange(&mut con, ORDERS)
        .iter()
        .map(|e| e.kind().to_string())
        .collect();
    assert_eq!(kinds, ["deduct", "refund"]);
    assert_eq!(exists(&mut con, "fresh"), 0);
}

/// A stream that cannot take another entry (its last id is the largest there is, as `XADD`
/// with an explicit id can leave it) must not let the deduction through without its event:
/// the two happen together or not at all.
#[test]
fn a_stream_that_cannot_take_an_entry_refuses_the_whole_call() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, "5"]));
    int(cmd(
        &mut con,
        &["STOCK.DEDUCT", SKU, "1", "ID", "a", "EVENTS", ORDERS],
    ));
    okay(cmd(&mut con, &["SET", "plain", "5"]));
    let last = "18446744073709551615-18446744073709551615";
    bulk(cmd(&mut con, &["XADD", ORDERS, last, "type", "manual"]));
    let before = snapshot(&mut con, &[ORDERS]);
    for args in [
        vec!["STOCK.DEDUCT", SKU, "1", "ID", "b", "EVENTS", ORDERS],
        vec!["STOCK.DEDUCT", SKU, "1", "EVENTS", ORDERS],
        vec!["STOCK.DEDUCT", "plain", "1", "EVENTS", ORDERS],
        vec!["STOCK.REFUND", SKU, "a", "EVENTS", ORDERS],
    ] {
        let reply = cmd(&mut con, &args);
        let after = snapshot(&mut con, &[ORDERS]);
        assert!(
            reply.is_err() && after == before,
            "{args:?} on a stream whose last id is {last}: replied {reply:?}; the stock \
             changed without its event: before\n{before}after\n{after}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Refunds, plain strings, trimming, types
// ---------------------------------------------------------------------------------------------

#[test]
fn refunds_append_one_refund_entry() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, "4"]));
    for (id, q) in [("o-1", "1"), ("o-2", "3")] {
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, q, "ID", id, "EVENTS", ORDERS],
        ));
    }
    assert_eq!(stock(&mut con, SKU), 0);
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.REFUND", SKU, "o-2", "EVENTS", ORDERS]
        )),
        3
    );
    // Without EVENTS: returned, nothing appended.
    assert_eq!(int(cmd(&mut con, &["STOCK.REFUND", SKU, "o-1"])), 1);
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.REFUND", SKU, "o-1", "EVENTS", ORDERS]
        )),
        0
    );
    // Case-insensitive, with a bound that keeps everything.
    int(cmd(
        &mut con,
        &["STOCK.DEDUCT", SKU, "2", "ID", "o-3", "EVENTS", ORDERS],
    ));
    assert_eq!(
        int(cmd(
            &mut con,
            &[
                "STOCK.REFUND",
                SKU,
                "o-3",
                "events",
                ORDERS,
                "maxlen",
                "=",
                "100"
            ]
        )),
        2
    );
    let got: Vec<_> = xrange(&mut con, ORDERS)
        .into_iter()
        .map(|e| e.fields)
        .collect();
    assert_eq!(
        got,
        vec![
            deduct_fields(SKU, 1, 3, Some("o-1"), None),
            deduct_fields(SKU, 3, 0, Some("o-2"), None),
            soldout_fields(SKU),
            refund_fields(SKU, "o-2", 3, 3),
            deduct_fields(SKU, 2, 2, Some("o-3"), None),
            refund_fields(SKU, "o-3", 2, 4),
        ]
    );
    assert_eq!(stock(&mut con, SKU), 4);
}

#[test]
fn plain_string_stocks_publish_events_too() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["SET", "{sku:9}", "5", "EX", "1000"]));
    assert_eq!(
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", "{sku:9}", "2", "EVENTS", "{sku:9}:orders"]
        )),
        3
    );
    nil(cmd(
        &mut con,
        &["STOCK.DEDUCT", "{sku:9}", "4", "EVENTS", "{sku:9}:orders"],
    ));
    assert_eq!(
        int(cmd(
            &mut con,
            &[
                "STOCK.DEDUCT",
                "{sku:9}",
                "3",
                "EVENTS",
                "{sku:9}:orders",
                "MAXLEN",
                "~",
                "1000"
            ]
        )),
        0
    );
    nil(cmd(
        &mut con,
        &["STOCK.DEDUCT", "{sku:9}", "1", "EVENTS", "{sku:9}:orders"],
    ));
    let got: Vec<_> = xrange(&mut con, "{sku:9}:orders")
        .into_iter()
        .map(|e| e.fields)
        .collect();
    assert_eq!(
        got,
        vec![
            deduct_fields("{sku:9}", 2, 3, None, None),
            deduct_fields("{sku:9}", 3, 0, None, None),
            soldout_fields("{sku:9}"),
        ]
    );
    // Still a plain string, with its TTL.
    assert_eq!(key_type(&mut con, "{sku:9}"), "string");
    assert_eq!(get_string(&mut con, "{sku:9}").as_deref(), Some("0"));
    assert!(pttl(&mut con, "{sku:9}") > 900_000);
}

#[test]
fn maxlen_exact_trims_to_n() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, "1000"]));
    let mut all = Vec::new();
    for i in 0..30 {
        let id = format!("o-{i}");
        // `MAXLEN n` and `MAXLEN = n` are the same.
        let form: &[&str] = if i % 2 == 0 {
            &["MAXLEN", "5"]
        } else {
            &["MAXLEN", "=", "5"]
        };
        let mut args = vec!["STOCK.DEDUCT", SKU, "1", "ID", &id, "EVENTS", ORDERS];
        args.extend_from_slice(form);
        let remaining = int(cmd(&mut con, &args));
        all.push(deduct_fields(SKU, 1, remaining, Some(&id), None));
        let len = xlen(&mut con, ORDERS);
        assert_eq!(len, (i + 1).min(5), "after deduction {i}");
    }
    let kept: Vec<_> = xrange(&mut con, ORDERS)
        .into_iter()
        .map(|e| e.fields)
        .collect();
    assert_eq!(kept, all[25..].to_vec(), "the newest five are kept");

    // MAXLEN 0 keeps an empty stream (the key stays, as XADD … MAXLEN 0 leaves it), and its
    // last id moves on.
    let last_before = stream_state(&mut con, ORDERS);
    int(cmd(
        &mut con,
        &["STOCK.DEDUCT", SKU, "1", "EVENTS", ORDERS, "MAXLEN", "0"],
    ));
    assert_eq!(xlen(&mut con, ORDERS), 0);
    assert_eq!(key_type(&mut con, ORDERS), "stream");
    assert_ne!(stream_state(&mut con, ORDERS), last_before);

    // The soldout entry counts too: MAXLEN 1 keeps only it.
    okay(cmd(&mut con, &["STOCK.SET", "{sku:42}:b", "1"]));
    int(cmd(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "{sku:42}:b",
            "1",
            "EVENTS",
            "{sku:42}:b:orders",
            "MAXLEN",
            "1",
        ],
    ));
    let got: Vec<_> = xrange(&mut con, "{sku:42}:b:orders")
        .into_iter()
        .map(|e| e.fields)
        .collect();
    assert_eq!(got, vec![soldout_fields("{sku:42}:b")]);

    // Refunds trim too.
    assert_eq!(
        int(cmd(
            &mut con,
            &[
                "STOCK.REFUND",
                SKU,
                "o-29",
                "EVENTS",
                ORDERS,
                "MAXLEN",
                "=",
                "1"
            ]
        )),
        1
    );
    assert_eq!(xlen(&mut con, ORDERS), 1);
}

#[test]
fn maxlen_approximate_keeps_at_least_n_and_stays_bounded() {
    let server = start();
    let mut con = server.conn();
    // Small nodes, so whole-node trimming shows within a few hundred entries.
    okay(cmd(
        &mut con,
        &["CONFIG", "SET", "stream-node-max-entries", "10"],
    ));
    okay(cmd(&mut con, &["STOCK.SET", SKU, "100000"]));
    let n = 25;
    let node = 10;
    let mut longest = 0;
    let mut trimmed_some = false;
    let mut ids = Vec::new();
    for i in 0..300 {
        let id = format!("o-{i}");
        int(cmd(
            &mut con,
            &[
                "STOCK.DEDUCT",
                SKU,
                "1",
                "ID",
                &id,
                "EVENTS",
                ORDERS,
                "MAXLEN",
                "~",
                "25",
            ],
        ));
        ids.push(id);
        let len = xlen(&mut con, ORDERS);
        let appended = i64::try_from(ids.len()).unwrap();
        assert!(
            len >= n.min(appended),
            "MAXLEN ~ {n}: {len} entries after {appended} appends"
        );
        // Whole nodes go, so at most one node more than n (and the one being filled) stays.
        assert!(
            len < n + 2 * node,
            "MAXLEN ~ {n}: {len} entries after {appended} appends (nodes of {node})"
        );
        trimmed_some |= len < appended;
        longest = longest.max(len);
    }
    assert!(trimmed_some, "MAXLEN ~ never trimmed");
    assert!(
        longest > n,
        "MAXLEN ~ trimmed exactly ({longest}): not approximate"
    );
    // What is kept is the newest entries, contiguous, in order.
    let kept: Vec<String> = xrange(&mut con, ORDERS)
        .iter()
        .map(|e| e.get("id").unwrap().to_string())
        .collect();
    assert_eq!(kept, ids[ids.len() - kept.len()..].to_vec());
}

#[test]
fn wrongtype_stream_key_changes_nothing() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, "5"]));
    okay(cmd(&mut con, &["SET", "plain", "5"]));
    okay(cmd(&mut con, &["SET", "s:string", "x"]));
    int(cmd(&mut con, &["RPUSH", "s:list", "x"]));
    int(cmd(&mut con, &["HSET", "s:hash", "f", "v"]));
    int(cmd(&mut con, &["SADD", "s:set", "m"]));
    int(cmd(&mut con, &["ZADD", "s:zset", "1", "m"]));
    int(cmd(&mut con, &["LOCK.ACQUIRE", "s:lock", "o", "60000"]));
    okay(cmd(&mut con, &["STOCK.SET", "s:stock", "1"]));
    let before = snapshot(&mut con, &[]);
    for stream in [
        "s:string", "s:list", "s:hash", "s:set", "s:zset", "s:lock", "s:stock",
    ] {
        for args in [
            vec!["STOCK.DEDUCT", SKU, "1", "EVENTS", stream],
            vec!["STOCK.DEDUCT", SKU, "1", "ID", "x", "EVENTS", stream],
            vec!["STOCK.DEDUCT", "plain", "1", "EVENTS", stream],
            vec![
                "STOCK.DEDUCT",
                SKU,
                "1",
                "EVENTS",
                stream,
                "MAXLEN",
                "~",
                "1",
            ],
            vec!["STOCK.REFUND", SKU, "x", "EVENTS", stream],
        ] {
            assert_err_ctx(cmd(&mut con, &args), WRONGTYPE, format!("{args:?}"));
            assert_eq!(snapshot(&mut con, &[]), before, "{args:?}");
        }
    }
    assert_eq!(stock(&mut con, SKU), 5);
    assert_eq!(get_string(&mut con, "plain").as_deref(), Some("5"));
}

// ---------------------------------------------------------------------------------------------
// The stream as a declared key
// ---------------------------------------------------------------------------------------------

fn getkeys(con: &mut Connection, args: &[&str]) -> Vec<String> {
    let mut full = vec!["COMMAND", "GETKEYS"];
    full.extend_from_slice(args);
    match cmd(con, &full) {
        Ok(Value::Array(items)) => items.iter().map(text).collect(),
        other => panic!("COMMAND GETKEYS {args:?}: {other:?}"),
    }
}

#[test]
fn command_getkeys_lists_the_stock_and_the_stream() {
    let server = start();
    let mut con = server.conn();
    for (args, keys) in [
        (vec!["STOCK.DEDUCT", SKU, "1"], vec![SKU]),
        (vec!["STOCK.DEDUCT", SKU, "1", "ID", "x"], vec![SKU]),
        (
            vec!["STOCK.DEDUCT", SKU, "1", "EVENTS", ORDERS],
            vec![SKU, ORDERS],
        ),
        (
            vec![
                "STOCK.DEDUCT",
                SKU,
                "1",
                "ID",
                "x",
                "FENCE",
                "7",
                "EVENTS",
                ORDERS,
            ],
            vec![SKU, ORDERS],
        ),
        (
            vec![
                "STOCK.DEDUCT",
                SKU,
                "1",
                "events",
                ORDERS,
                "MAXLEN",
                "~",
                "9",
                "ID",
                "x",
            ],
            vec![SKU, ORDERS],
        ),
        // An option value that looks like the keyword is a value, not the option.
        (
            vec!["STOCK.DEDUCT", SKU, "1", "ID", "EVENTS", "EVENTS", ORDERS],
            vec![SKU, ORDERS],
        ),
        (vec!["STOCK.DEDUCT", SKU, "1", "ID", "EVENTS"], vec![SKU]),
        (vec!["STOCK.REFUND", SKU, "x"], vec![SKU]),
        (
            vec!["STOCK.REFUND", SKU, "x", "EVENTS", ORDERS],
            vec![SKU, ORDERS],
        ),
        (
            vec![
                "STOCK.REFUND",
                SKU,
                "x",
                "EVENTS",
                ORDERS,
                "MAXLEN",
                "=",
                "3",
            ],
            vec![SKU, ORDERS],
        ),
    ] {
        assert_eq!(getkeys(&mut con, &args), keys, "{args:?}");
    }
    // COMMAND INFO says the keys move.
    let info = format!("{:?}", cmd(&mut con, &["COMMAND", "INFO", "STOCK.DEDUCT"]));
    assert!(info.contains("movablekeys"), "{info}");
}

#[test]
fn acl_key_patterns_apply_to_the_stream_key() {
    let server = start();
    let mut admin = server.conn();
    okay(cmd(&mut admin, &["STOCK.SET", SKU, "10"]));
    okay(cmd(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "buyer",
            "on",
            ">pw",
            "~{sku:42}*",
            "+STOCK.DEDUCT",
            "+STOCK.REFUND",
            "+XRANGE",
        ],
    ));
    let mut buyer = server.conn();
    okay(cmd(&mut buyer, &["AUTH", "buyer", "pw"]));
    assert_eq!(
        int(cmd(
            &mut buyer,
            &["STOCK.DEDUCT", SKU, "1", "ID", "a", "EVENTS", ORDERS]
        )),
        9
    );
    assert_eq!(xrange(&mut buyer, ORDERS).len(), 1);
    let before = snapshot(&mut admin, &[ORDERS, "other"]);
    for args in [
        vec!["STOCK.DEDUCT", SKU, "1", "ID", "b", "EVENTS", "other"],
        vec![
            "STOCK.DEDUCT",
            SKU,
            "1",
            "EVENTS",
            "other",
            "MAXLEN",
            "~",
            "5",
        ],
        vec!["STOCK.REFUND", SKU, "a", "EVENTS", "other"],
        vec!["STOCK.DEDUCT", "other", "1", "EVENTS", ORDERS],
    ] {
        assert_err_ctx(cmd(&mut buyer, &args), "NOPERM", format!("{args:?}"));
        assert_eq!(snapshot(&mut admin, &[ORDERS, "other"]), before, "{args:?}");
    }
    assert_eq!(
        int(cmd(
            &mut buyer,
            &["STOCK.REFUND", SKU, "a", "EVENTS", ORDERS]
        )),
        1
    );
    assert_eq!(exists(&mut admin, "other"), 0);
    let kinds: Vec<String> = xrange(&mut admin, ORDERS)
        .iter()
        .map(|e| e.kind().to_string())
        .collect();
    assert_eq!(kinds, ["deduct", "refund"]);
}

/// A consumer blocked on the stream wakes up for the entry a deduction appends, both when the
/// deduction creates the stream and when it already exists (consumer groups). The readers
/// block without a timeout (`BLOCK 0`): only the entry can wake them (a reader never woken
/// fails on its connection's read timeout).
#[test]
fn blocked_readers_wake_up_for_the_events() {
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, "5"]));
    let mut reader = server.conn();
    let started = Instant::now();
    let got = thread::scope(|s| {
        let h = s.spawn(move || {
            cmd(
                &mut reader,
                &["XREAD", "BLOCK", "0", "STREAMS", ORDERS, "$"],
            )
        });
        // Let it block first.
        assert!(wait_until(Duration::from_secs(20), || {
            info_int(&mut con, "clients", "blocked_clients") == 1
        }));
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "ID", "a", "EVENTS", ORDERS],
        ));
        h.join().unwrap()
    });
    println!("XREAD returned {:?} after it was sent", started.elapsed());
    assert!(format!("{got:?}").contains("deduct"), "XREAD got {got:?}");

    okay(cmd(
        &mut con,
        &["XGROUP", "CREATE", ORDERS, "g", "$", "MKSTREAM"],
    ));
    let mut reader = server.conn();
    let started = Instant::now();
    let got = thread::scope(|s| {
        let h = s.spawn(move || {
            cmd(
                &mut reader,
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c1",
                    "BLOCK",
                    "0",
                    "STREAMS",
                    ORDERS,
                    ">",
                ],
            )
        });
        assert!(wait_until(Duration::from_secs(20), || {
            info_int(&mut con, "clients", "blocked_clients") == 1
        }));
        int(cmd(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "ID", "b", "EVENTS", ORDERS],
        ));
        h.join().unwrap()
    });
    println!(
        "XREADGROUP returned {:?} after it was sent",
        started.elapsed()
    );
    let text = format!("{got:?}");
    assert!(text.contains("deduct") && text.contains("\"b\""), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

/// Checks a stream that only deductions of one stock wrote: in stream order each deduct
/// entry's remaining is the previous one minus its quantity (from `initial`), one soldout right
/// after the deduct that reached 0 and nowhere else. Returns the deduct entries.
#[track_caller]
fn check_chain(entries: &[Entry], sku: &str, initial: i64) -> Vec<Entry> {
    let mut remaining = initial;
    let mut deducts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match e.kind() {
            "deduct" => {
                assert_eq!(e.get("sku"), Some(sku), "{e:?}");
                let q = e.int("quantity");
                assert!(q >= 1, "{e:?}");
                remaining -= q;
                assert_eq!(
                    e.int("remaining"),
                    remaining,
                    "entry {i} {e:?}: the chain of remaining quantities breaks"
                );
                let next_is_soldout = entries.get(i + 1).map(|n| n.kind()) == Some("soldout");
                assert_eq!(remaining == 0, next_is_soldout, "entry {i} {e:?}");
                deducts.push(e.clone());
            }
            "soldout" => {
                assert_eq!(e.fields, soldout_fields(sku));
                assert!(i > 0 && entries[i - 1].kind() == "deduct", "entry {i}");
            }
            other => panic!("unexpected entry type {other:?}: {e:?}"),
        }
    }
    deducts
}

#[test]
fn hundred_concurrent_buyers_one_entry_per_unit_sold() {
    const BUYERS: usize = 100;
    const INITIAL: i64 = 500;
    let server = start();
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, &INITIAL.to_string()]));
    // (request id, the reply) of every successful deduction; replays separately.
    let sold: Mutex<Vec<(String, i64)>> = Mutex::new(Vec::new());
    let replays = Mutex::new(0usize);
    thread::scope(|s| {
        for b in 0..BUYERS {
            let mut con = server.conn();
            let sold = &sold;
            let replays = &replays;
            s.spawn(move || {
                for n in 0.. {
                    let id = format!("b{b}-{n}");
                    let args = ["STOCK.DEDUCT", SKU, "1", "ID", &id, "EVENTS", ORDERS];
                    match cmd(&mut con, &args) {
                        Ok(Value::Int(left)) => {
                            sold.lock().unwrap().push((id.clone(), left));
                            // Every third order is retried, as after a timeout: a replay.
                            if n % 3 == 0 {
                                match cmd(&mut con, &args) {
                                    Ok(Value::Int(_)) => *replays.lock().unwrap() += 1,
                                    other => panic!("replay of {id}: {other:?}"),
                                }
                            }
                        }
                        Ok(Value::Nil) => return,
                        other => panic!("STOCK.DEDUCT {id}: {other:?}"),
                    }
                }
            });
        }
    });
    let sold = sold.into_inner().unwrap();
    let remaining = stock(&mut con, SKU);
    assert_eq!(remaining, 0);
    let entries = xrange(&mut con, ORDERS);
    let deducts = check_chain(&entries, SKU, INITIAL);
    let quantity_sold = INITIAL - remaining;
    assert_eq!(i64::try_from(deducts.len()).unwrap(), quantity_sold);
    assert_eq!(
        deducts.iter().map(|e| e.int("quantity")).sum::<i64>() + remaining,
        INITIAL
    );
    assert_eq!(entries.iter().filter(|e| e.kind() == "soldout").count(), 1);
    // Each acknowledged id: exactly one entry, with the remaining its buyer was told.
    let by_id: BTreeMap<&str, i64> = deducts
        .iter()
        .map(|e| (e.get("id").unwrap(), e.int("remaining")))
        .collect();
    assert_eq!(by_id.len(), deducts.len(), "an id has two deduct entries");
    assert_eq!(sold.len(), deducts.len());
    for (id, left) in &sold {
        assert_eq!(by_id.get(id.as_str()), Some(left), "order {id}");
    }
    println!(
        "{BUYERS} buyers: {} sold, {} replays, {} entries",
        sold.len(),
        replays.into_inner().unwrap(),
        entries.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Persistence and replication
// ---------------------------------------------------------------------------------------------

/// Every command of an AOF (plain RESP), in order; a command cut off by a crash at the end is
/// left out.
fn aof_commands(bytes: &[u8]) -> Vec<Vec<String>> {
    fn line(bytes: &[u8], at: &mut usize) -> Option<String> {
        let rest = bytes.get(*at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        *at += end + 2;
        Some(text)
    }
    let mut out = Vec::new();
    let mut at = 0;
    'commands: while at < bytes.len() {
        let Some(head) = line(bytes, &mut at) else {
            break;
        };
        let n: usize = head
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("AOF: expected an array at byte {at}, got {head:?}"));
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(len) = line(bytes, &mut at) else {
                break 'commands;
            };
            let len: usize = len.strip_prefix('$').and_then(|l| l.parse().ok()).unwrap();
            let Some(arg) = bytes.get(at..at + len) else {
                break 'commands;
            };
            args.push(String::from_utf8_lossy(arg).into_owned());
            at += len + 2;
        }
        out.push(args);
    }
    out
}

/// The commands of every incremental AOF file of a server, in order.
fn incr_aof(server: &Server) -> Vec<Vec<String>> {
    let dir = server.dir().join("appendonlydir");
    let mut files: Vec<(u64, std::path::PathBuf)> = fs::read_dir(&dir)
        .expect("appendonlydir")
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let seq = name
                .strip_suffix(".incr.aof")?
                .rsplit('.')
                .next()?
                .parse()
                .ok()?;
            Some((seq, p))
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|(_, p)| aof_commands(&fs::read(p).expect("read AOF")))
        .collect()
}

/// In the AOF, every XADD sits in one MULTI/EXEC with the effect of its deduction, and the
/// deduct entry says what that effect did (request id, remaining). Returns the blocks checked.
#[track_caller]
fn check_aof_transactions(commands: &[Vec<String>]) -> usize {
    let mut blocks = 0;
    let mut block: Option<Vec<&Vec<String>>> = None;
    for c in commands {
        let name = c[0].to_ascii_uppercase();
        match name.as_str() {
            "MULTI" => {
                assert!(block.is_none(), "nested MULTI in the AOF");
                block = Some(Vec::new());
            }
            "EXEC" => {
                let b = block.take().expect("EXEC without MULTI");
                let stock: Vec<_> = b.iter().filter(|c| c[0] == "FENCE.ENTRY").collect();
                let xadds: Vec<_> = b.iter().filter(|c| c[0] == "XADD").collect();
                if xadds.is_empty() {
                    continue;
                }
                blocks += 1;
                assert_eq!(stock.len(), 1, "a transaction with XADD: {b:?}");
                let effect = stock[0];
                // FENCE.ENTRY key available fence deducted request-id quantity state
                assert!(effect.len() >= 8, "{effect:?}");
                assert_eq!(effect[7], "deducted", "{b:?}");
                let entry = |x: &Vec<String>, f: &str| {
                    x[3..].chunks(2).find(|p| p[0] == f).map(|p| p[1].clone())
                };
                assert_eq!(entry(xadds[0], "type").as_deref(), Some("deduct"), "{b:?}");
                assert_eq!(entry(xadds[0], "id").as_ref(), Some(&effect[5]), "{b:?}");
                assert_eq!(
                    entry(xadds[0], "quantity").as_ref(),
                    Some(&effect[6]),
                    "{b:?}"
                );
                assert_eq!(
                    entry(xadds[0], "remaining").as_ref(),
                    Some(&effect[2]),
                    "{b:?}"
                );
                let soldout = effect[2] == "0";
                assert_eq!(xadds.len(), if soldout { 2 } else { 1 }, "{b:?}");
            }
            _ => match &mut block {
                Some(b) => b.push(c),
                None => assert!(
                    name != "XADD" && name != "XTRIM",
                    "{c:?} outside a transaction in the AOF"
                ),
            },
        }
    }
    // A transaction cut off by the crash is dropped by Redis when it loads the AOF.
    blocks
}

#[test]
fn a_crash_with_appendfsync_always_keeps_stream_and_stock_in_step() {
    const INITIAL: i64 = 1_000_000;
    const CLIENTS: usize = 16;
    let mut server = Server::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--enable-debug-command",
        "yes",
    ]);
    let mut con = server.conn();
    okay(cmd(&mut con, &["STOCK.SET", SKU, &INITIAL.to_string()]));
    // For each client: acknowledged (id, quantity) and the one in flight when the server died.
    type Record = (Vec<(String, i64)>, Option<(String, i64)>);
    let records: Vec<Mutex<Record>> = (0..CLIENTS).map(|_| Mutex::default()).collect();
    let cons: Vec<Connection> = (0..CLIENTS).map(|_| server.conn()).collect();
    // The kill comes from inside the load, the moment this many units have been acknowledged
    // (a few thousand of a million: the stock cannot run out first).
    let kill_at: u64 = rand::rng().random_range(1_000..=8_000);
    let killer = LoadKiller::new(&mut server, kill_at);
    thread::scope(|s| {
        for ((c, record), mut con) in records.iter().enumerate().zip(cons) {
            let load = killer.client();
            s.spawn(move || {
                for n in 0i64.. {
                    let id = format!("c{c}-{n}");
                    let q = 1 + n % 3;
                    record.lock().unwrap().1 = Some((id.clone(), q));
                    load.sending();
                    let reply = redis::cmd("STOCK.DEDUCT")
                        .arg(SKU)
                        .arg(q)
                        .arg("ID")
                        .arg(&id)
                        .arg("EVENTS")
                        .arg(ORDERS)
                        .query::<Value>(&mut con);
                    let mut r = record.lock().unwrap();
                    match reply {
                        Ok(Value::Int(_)) => {
                            r.1 = None;
                            r.0.push((id, q));
                            drop(r);
                            load.acknowledged(q.unsigned_abs());
                        }
                        Err(e) if e.code().is_none() => return,
                        other => panic!("STOCK.DEDUCT {id}: {other:?}"),
                    }
                }
            });
        }
    });
    let moment = killer.moment();
    let acknowledged_units = killer.acknowledged();
    let mut acknowledged = BTreeMap::new();
    let mut in_flight = BTreeMap::new();
    for r in records {
        let (acked, flying) = r.into_inner().unwrap();
        acknowledged.extend(acked);
        in_flight.extend(flying);
    }
    // The kill hit a running load: every client was still deducting.
    let Some(moment) = moment else {
        panic!("no kill: the load ended after {acknowledged_units} of {kill_at} units");
    };
    println!(
        "SIGKILL at {kill_at} acknowledged units, after {:?}: {} units acknowledged, {} \
         requests on the wire, {} of {CLIENTS} clients running",
        moment.after, moment.acknowledged, moment.outstanding, moment.running
    );
    assert_eq!(
        moment.running, CLIENTS,
        "only {} of {CLIENTS} clients were running at the kill",
        moment.running
    );

    let aof = incr_aof(&server);
    let blocks = check_aof_transactions(&aof);

    server.restart();
    let mut con = server.conn();
    let remaining = stock(&mut con, SKU);
    let entries = xrange(&mut con, ORDERS);
    let deducts = check_chain(&entries, SKU, INITIAL);
    assert_eq!(
        deducts.iter().map(|e| e.int("quantity")).sum::<i64>(),
        INITIAL - remaining,
        "the stream and the stock disagree after the restart"
    );
    assert_eq!(
        xlen(&mut con, ORDERS),
        i64::try_from(deducts.len()).unwrap()
    );
    let mut seen = BTreeSet::new();
    for e in &deducts {
        let id = e.get("id").unwrap().to_string();
        let q = e.int("quantity");
        assert!(seen.insert(id.clone()), "order {id} has two deduct entries");
        let expected = acknowledged.get(&id).or_else(|| in_flight.get(&id));
        assert_eq!(
            expected,
            Some(&q),
            "entry for {id}, neither acknowledged nor in flight with that quantity"
        );
    }
    for id in acknowledged.keys() {
        assert!(
            seen.contains(id),
            "acknowledged order {id} has no deduct entry"
        );
    }
    // In flight: in the ledger exactly when in the stream.
    for (id, q) in &in_flight {
        let held = cmd(&mut con, &["STOCK.REQUEST", SKU, id]).unwrap();
        let expected = if seen.contains(id) {
            Value::Int(*q)
        } else {
            Value::Nil
        };
        assert_eq!(held, expected, "in-flight order {id}: ledger vs stream");
    }
    // The ledger holds every order the stream shows.
    let mut pipe = redis::pipe();
    for e in &deducts {
        pipe.cmd("STOCK.REQUEST").arg(SKU).arg(e.get("id").unwrap());
    }
    let held: Vec<i64> = pipe.query(&mut con).expect("STOCK.REQUEST pipeline");
    for (e, h) in deducts.iter().zip(held) {
        assert_eq!(h, e.int("quantity"), "{e:?}");
    }
    // The stream goes on after its last id.
    let last = entries.last().map(|e| stream_id(&e.id)).unwrap();
    int(cmd(
        &mut con,
        &["STOCK.DEDUCT", SKU, "1", "ID", "after", "EVENTS", ORDERS],
    ));
    let after = xrange(&mut con, ORDERS).pop().unwrap();
    assert!(stream_id(&after.id) > last);
    assert_eq!(after.get("id"), Some("after"));
    println!(
        "SIGKILL at {kill_at} units: {} acknowledged, {} in flight, {} entries, {} units \
         sold, {blocks} MULTI/EXEC blocks with XADD in the AOF",
        acknowledged.len(),
        in_flight.len(),
        deducts.len(),
        INITIAL - remaining
    );
}

fn start_replica(master: &Server) -> Server {
    Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--replicaof",
        "127.0.0.1",
        &master.port().to_string(),
    ])
}

/// Every key identical on master and replica: keys, DEBUG DIGEST, each value's digest, each
/// stream's entries (ids included) and history, each stock.
#[track_caller]
fn assert_same(master: &Server, replica: &Server) {
    wait_for_sync(master, replica, SYNC);
    let mut m = master.conn();
    let mut r = replica.conn();
    let keys = all_keys(&mut m);
    assert_eq!(all_keys(&mut r), keys);
    assert_eq!(debug_digest(&mut r), debug_digest(&mut m), "DEBUG DIGEST");
    for key in &keys {
        assert_eq!(
            digest_value(&mut r, key),
            digest_value(&mut m, key),
            "{key}"
        );
        match key_type(&mut m, key).as_str() {
            "stream" => {
                assert_eq!(xrange(&mut r, key), xrange(&mut m, key), "XRANGE {key}");
                assert_eq!(
                    stream_state(&mut r, key),
                    stream_state(&mut m, key),
                    "XINFO STREAM {key}"
                );
            }
            "fence-stk" => {
                assert_eq!(
                    format!("{:?}", cmd(&mut r, &["STOCK.INFO", key])),
                    format!("{:?}", cmd(&mut m, &["STOCK.INFO", key])),
                    "STOCK.INFO {key}"
                );
            }
            "string" => {
                assert_eq!(get_string(&mut r, key), get_string(&mut m, key), "{key}");
            }
            _ => {}
        }
    }
}

#[test]
fn a_replica_has_the_same_stream_and_stock() {
    let master = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
        // Small nodes on the master only: approximate trims happen, and the replica (with
        // the default node size) must still end up with the same entries.
        "--stream-node-max-entries",
        "8",
    ]);
    let mut m = master.conn();
    okay(cmd(&mut m, &["STOCK.SET", SKU, "400"]));
    okay(cmd(&mut m, &["SET", "{sku:9}", "50"]));
    let token = now_us().to_string();
    let mut n = 0;
    let mut load = |m: &mut Connection, rounds: usize| {
        for _ in 0..rounds {
            n += 1;
            let id = format!("o-{n}");
            let q = (1 + n % 2).to_string();
            int(cmd(
                m,
                &[
                    "STOCK.DEDUCT",
                    SKU,
                    &q,
                    "ID",
                    &id,
                    "FENCE",
                    &token,
                    "EVENTS",
                    ORDERS,
                    "MAXLEN",
                    "~",
                    "20",
                ],
            ));
            int(cmd(
                m,
                &[
                    "STOCK.DEDUCT",
                    SKU,
                    "1",
                    "EVENTS",
                    "{sku:42}:exact",
                    "MAXLEN",
                    "=",
                    "7",
                ],
            ));
            if n % 5 == 0 {
                let refunded = int(cmd(m, &["STOCK.REFUND", SKU, &id, "EVENTS", ORDERS]));
                assert!(refunded > 0);
            }
            let _ = cmd(
                m,
                &["STOCK.DEDUCT", "{sku:9}", "1", "EVENTS", "{sku:9}:orders"],
            )
            .unwrap();
        }
    };
    load(&mut m, 40);
    let replica = start_replica(&master);
    assert_same(&master, &replica);
    load(&mut m, 60);
    // Sell out the plain stock and the stock: soldout entries, replays, refusals.
    okay(cmd(&mut m, &["STOCK.SET", "{sku:42}:last", "3"]));
    int(cmd(
        &mut m,
        &[
            "STOCK.DEDUCT",
            "{sku:42}:last",
            "3",
            "ID",
            "z",
            "EVENTS",
            ORDERS,
        ],
    ));
    int(cmd(
        &mut m,
        &[
            "STOCK.DEDUCT",
            "{sku:42}:last",
            "3",
            "ID",
            "z",
            "EVENTS",
            ORDERS,
        ],
    ));
    nil(cmd(
        &mut m,
        &["STOCK.DEDUCT", "{sku:42}:last", "1", "EVENTS", ORDERS],
    ));
    assert_same(&master, &replica);
    let mm = &mut m;
    assert_eq!(get_string(mm, "{sku:9}").as_deref(), Some("0"));
    assert!(xlen(mm, ORDERS) >= 20 && xlen(mm, ORDERS) < 40);
    assert_eq!(xlen(mm, "{sku:42}:exact"), 7);
    let kinds: Vec<String> = xrange(mm, "{sku:9}:orders")
        .iter()
        .map(|e| e.kind().to_string())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "soldout").count(), 1);
    assert_eq!(kinds.len(), 51);
    let errors = replication_errors(&replica.log());
    assert!(errors.is_empty(), "{errors:?}");

    // Promoted, the replica appends after the master's last id.
    let last = stream_id(&xrange(mm, ORDERS).pop().unwrap().id);
    let mut r = replica.conn();
    okay(cmd(&mut r, &["REPLICAOF", "NO", "ONE"]));
    int(cmd(
        &mut r,
        &["STOCK.DEDUCT", SKU, "1", "ID", "promoted", "EVENTS", ORDERS],
    ));
    let entry = xrange(&mut r, ORDERS).pop().unwrap();
    assert_eq!(entry.get("id"), Some("promoted"));
    assert!(stream_id(&entry.id) > last);
}
