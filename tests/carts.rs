//! Carts, as the README's command reference (`STOCK.CART`, `STOCK.CART.REFUND`,
//! `STOCK.CART.CONFIRM`), its "Carts: several items, all or nothing" section, its Errors table
//! and the first paragraph of its "Command reference" state them: every reply and error; a
//! resent cart is a replay; an id in some of the cart's ledgers only; each refusal
//! (`NOKEY`, `STALE`, `LEDGERFULL`, `LIMIT`, `SOLDOUT`) naming its item and changing no key;
//! the order of the checks across items and steps; `HOLD`, `BUYER` and `FENCE` on every item;
//! the events of a cart and of a cart refund (one entry per item, all or none) and the
//! keyspace events; the holds of a cart expiring together; `COMMAND GETKEYS` (garbage
//! `numkeys` included) and ACL key patterns on every key; each cart command one transaction in
//! the AOF; the cart's entries kept by `DEBUG RELOAD`, an AOF restart, `DUMP`/`RESTORE` and a
//! replica. The crash and failover tests of carts are in tests/carts_faults.rs; the cluster
//! routing (`CROSSSLOT`) in tests/cluster.rs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use redis::{Connection, RedisResult, Value};

const A: &str = "{sale}:phone";
const B: &str = "{sale}:case";
const C: &str = "{sale}:charger";
const ORDERS: &str = "{sale}:orders";
/// A hold that never ends during a test.
const LONG_HOLD: &str = "600000";
/// How long a hold's return may take here (a generous bound on a loaded machine).
const RETURNED: Duration = Duration::from_secs(15);
/// How long a replica may take to catch up.
const SYNC: Duration = Duration::from_secs(20);
/// The largest stream id: a stream whose last id is this can take no entry.
const LAST_ID: &str = "18446744073709551615-18446744073709551615";

fn server() -> Server {
    Server::start_with(&["--enable-debug-command", "yes"])
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// `STOCK.CART n key quantity … ID id opts…` as words.
fn cart_args(items: &[(&str, i64)], id: &str, opts: &[&str]) -> Vec<String> {
    let mut v = vec!["STOCK.CART".to_string(), items.len().to_string()];
    for (key, q) in items {
        v.push(key.to_string());
        v.push(q.to_string());
    }
    v.push("ID".to_string());
    v.push(id.to_string());
    v.extend(opts.iter().map(|s| s.to_string()));
    v
}

/// `STOCK.CART.REFUND` or `STOCK.CART.CONFIRM` (`which`) of `keys` and `id`, as words.
fn keys_args(which: &str, keys: &[&str], id: &str) -> Vec<String> {
    let mut v = vec![which.to_string(), keys.len().to_string()];
    v.extend(keys.iter().map(|k| k.to_string()));
    v.push(id.to_string());
    v
}

fn words(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn run(con: &mut Connection, args: &[String]) -> RedisResult<Value> {
    call(con, &words(args))
}

fn cart(
    con: &mut Connection,
    items: &[(&str, i64)],
    id: &str,
    opts: &[&str],
) -> RedisResult<Value> {
    run(con, &cart_args(items, id, opts))
}

fn cart_refund(con: &mut Connection, keys: &[&str], id: &str) -> RedisResult<Value> {
    run(con, &keys_args("STOCK.CART.REFUND", keys, id))
}

fn cart_confirm(con: &mut Connection, keys: &[&str], id: &str) -> RedisResult<Value> {
    run(con, &keys_args("STOCK.CART.CONFIRM", keys, id))
}

/// The reply must be an array of integers.
#[track_caller]
fn ints(r: RedisResult<Value>) -> Vec<i64> {
    match r {
        Ok(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::Int(n) => *n,
                other => panic!("expected an array of integers, got an item {other:?}"),
            })
            .collect(),
        other => panic!("expected an array of integers, got {}", describe(&other)),
    }
}

/// A cart that must succeed: what remains in each stock.
#[track_caller]
fn placed(con: &mut Connection, items: &[(&str, i64)], id: &str, opts: &[&str]) -> Vec<i64> {
    ints(cart(con, items, id, opts))
}

#[track_caller]
fn set(con: &mut Connection, key: &str, quantity: i64) {
    okay(call(con, &["STOCK.SET", key, &quantity.to_string()]));
}

// ---------------------------------------------------------------------------------------------
// The error texts of carts (as the README's Errors table gives them)
// ---------------------------------------------------------------------------------------------

/// `<CODE> <index> <key>`, the key as `printable` shows it.
fn refusal(code: CartCode, index: usize, key: &str) -> String {
    FenceError::CartItem {
        code,
        index,
        key: printable(key.as_bytes()),
    }
    .message()
    .into_owned()
}

fn key_twice(key: &str) -> String {
    repeated_key(&printable(key.as_bytes()))
}

fn some_only(id: &str, index: usize, key: &str) -> String {
    partial_cart(&printable(id.as_bytes()), index, &printable(key.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// What a server holds
// ---------------------------------------------------------------------------------------------

/// A flat field/value array or a map, as (field, value) pairs in the order they came.
fn pairs(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(items) => {
            assert!(items.len() % 2 == 0, "odd field/value array {items:?}");
            items
                .chunks(2)
                .map(|c| (text(&c[0]), c[1].clone()))
                .collect()
        }
        Value::Map(pairs) => pairs.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        other => panic!("not a map: {other:?}"),
    }
}

/// `STOCK.INFO key` as field -> integer (panics on nil).
#[track_caller]
fn sinfo(con: &mut Connection, key: &str) -> BTreeMap<String, i64> {
    let reply = call(con, &["STOCK.INFO", key]);
    let Ok(v @ (Value::Array(_) | Value::Map(_))) = reply else {
        panic!("STOCK.INFO {key}: {}", describe(&reply));
    };
    pairs(v)
        .into_iter()
        .map(|(k, v)| match v {
            Value::Int(n) => (k, n),
            other => panic!("STOCK.INFO {key}: {k} is {other:?}"),
        })
        .collect()
}

#[track_caller]
fn available(con: &mut Connection, key: &str) -> i64 {
    sinfo(con, key)["available"]
}

/// What `STOCK.REQUEST key id DETAIL` says of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Detail {
    state: String,
    quantity: i64,
    deadline: Option<i64>,
    buyer: Option<String>,
}

/// `STOCK.REQUEST key id DETAIL`; None when the id is unknown or the key missing.
#[track_caller]
fn detail(con: &mut Connection, key: &str, id: &str) -> Option<Detail> {
    let reply = call(con, &["STOCK.REQUEST", key, id, "DETAIL"]);
    let v = match reply {
        Ok(Value::Nil) => return None,
        Ok(v) => v,
        Err(_) => panic!("STOCK.REQUEST {key} {id} DETAIL: {}", describe(&reply)),
    };
    let mut d = Detail {
        state: String::new(),
        quantity: -1,
        deadline: None,
        buyer: None,
    };
    for (k, v) in pairs(v) {
        match (k.as_str(), &v) {
            ("state", v) => d.state = text(v),
            ("quantity", Value::Int(n)) => d.quantity = *n,
            ("deadline", Value::Int(n)) => d.deadline = Some(*n),
            ("buyer", v) => d.buyer = Some(text(v)),
            _ => panic!("STOCK.REQUEST {key} {id} DETAIL: unexpected field {k} = {v:?}"),
        }
    }
    Some(d)
}

#[track_caller]
fn state(con: &mut Connection, key: &str, id: &str) -> String {
    detail(con, key, id)
        .unwrap_or_else(|| panic!("{key} has no entry {id}"))
        .state
}

fn fence_counter(con: &mut Connection, name: &str) -> i64 {
    info_int(con, "fence", &format!("fence_{name}"))
}

/// The server's clock, Unix ms.
fn server_ms(con: &mut Connection) -> i64 {
    match call(con, &["TIME"]) {
        Ok(Value::Array(v)) if v.len() == 2 => {
            let s: i64 = text(&v[0]).parse().expect("seconds");
            let us: i64 = text(&v[1]).parse().expect("microseconds");
            s * 1000 + us / 1000
        }
        other => panic!("TIME: {other:?}"),
    }
}

/// `XINFO STREAM key`'s fields that say what was ever appended, as text; "missing" when the
/// key does not exist.
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

/// Everything a refused call must leave as it was: `DEBUG DIGEST`, every key with its type
/// and `DEBUG DIGEST-VALUE`, every stock's `STOCK.INFO`, every stream's history.
fn snapshot(con: &mut Connection) -> String {
    let mut out = format!("digest={}\n", debug_digest(con));
    for key in all_keys(con) {
        let kind = key_type(con, &key);
        out.push_str(&format!("{key}: {kind} {}\n", digest_value(con, &key)));
        match kind.as_str() {
            "fence-stk" => out.push_str(&format!("  info={:?}\n", sinfo(con, &key))),
            "stream" => out.push_str(&format!("  {}\n", stream_state(con, &key))),
            _ => {}
        }
    }
    out
}

/// Asserts a refusal with exactly `expected` that changes nothing in any key.
#[track_caller]
fn refused(con: &mut Connection, args: &[String], expected: &str) {
    let before = snapshot(con);
    let reply = run(con, args);
    assert_eq!(err(reply), expected, "{args:?}");
    assert_eq!(snapshot(con), before, "{args:?} changed the data");
}

/// `refused` of a cart.
#[track_caller]
fn cart_refused(
    con: &mut Connection,
    items: &[(&str, i64)],
    id: &str,
    opts: &[&str],
    expected: &str,
) {
    refused(con, &cart_args(items, id, opts), expected);
}

/// Words as owned strings.
fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

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
}

/// Every entry of a stream (none when the key does not exist).
#[track_caller]
fn xrange(con: &mut Connection, stream: &str) -> Vec<Entry> {
    let Ok(Value::Array(items)) = call(con, &["XRANGE", stream, "-", "+"]) else {
        panic!("XRANGE {stream}");
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                panic!("expected [id, fields], got {item:?}");
            };
            let id = text(&pair[0]);
            let Value::Array(flat) = &pair[1] else {
                panic!("entry {id}: fields {:?}", pair[1]);
            };
            let fields = flat.chunks(2).map(|c| (text(&c[0]), text(&c[1]))).collect();
            Entry { id, fields }
        })
        .collect()
}

/// A stream id as (ms, seq), for ordering.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id ms-seq");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

fn field_list(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(f, v)| (f.to_string(), v.clone()))
        .collect()
}

/// The fields of a cart's `deduct` entry: a `STOCK.DEDUCT` event's, then `cart` and `item`.
#[allow(clippy::too_many_arguments)]
fn cart_deduct_fields(
    sku: &str,
    quantity: i64,
    remaining: i64,
    id: &str,
    buyer: Option<&str>,
    fence: Option<&str>,
    items: usize,
    item: usize,
) -> Vec<(String, String)> {
    let mut f = vec![
        ("type", "deduct".to_string()),
        ("sku", sku.to_string()),
        ("quantity", quantity.to_string()),
        ("remaining", remaining.to_string()),
        ("id", id.to_string()),
    ];
    if let Some(b) = buyer {
        f.push(("buyer", b.to_string()));
    }
    if let Some(t) = fence {
        f.push(("fence", t.to_string()));
    }
    f.push(("cart", items.to_string()));
    f.push(("item", item.to_string()));
    field_list(&f)
}

/// The fields of a cart refund's `refund` entry: a `STOCK.REFUND` event's, then `cart` and
/// `item`.
fn cart_refund_fields(
    sku: &str,
    id: &str,
    quantity: i64,
    remaining: i64,
    items: usize,
    item: usize,
) -> Vec<(String, String)> {
    field_list(&[
        ("type", "refund".to_string()),
        ("sku", sku.to_string()),
        ("id", id.to_string()),
        ("quantity", quantity.to_string()),
        ("remaining", remaining.to_string()),
        ("cart", items.to_string()),
        ("item", item.to_string()),
    ])
}

/// Waits until the entry `id` of every key shows `expired` and this server has returned
/// `n` holds in all (so that its data no longer changes by itself).
#[track_caller]
fn wait_expired(con: &mut Connection, keys: &[&str], id: &str, n: i64) {
    let mut last = (Vec::new(), 0);
    let done = wait_until(RETURNED, || {
        let states: Vec<String> = keys.iter().map(|k| state(con, k, id)).collect();
        last = (states, fence_counter(con, "holds_expired"));
        last.0.iter().all(|s| s == "expired") && last.1 >= n
    });
    assert!(
        done,
        "{id}: states {:?}, {} holds returned after {RETURNED:?}",
        last.0, last.1
    );
}

// ---------------------------------------------------------------------------------------------
// The walk-throughs of the README
// ---------------------------------------------------------------------------------------------

#[test]
fn the_readme_walk_through_runs_as_written() {
    let s = server();
    let mut con = s.conn();
    set(&mut con, A, 100);
    set(&mut con, B, 500);
    set(&mut con, C, 1);
    // Placed, with 15 minutes to pay; the charger is short, so nothing is taken.
    cart_refused(
        &mut con,
        &[(A, 1), (B, 1), (C, 2)],
        "order-77",
        &["HOLD", "900000"],
        &refusal(CartCode::SoldOut, 3, C),
    );
    let items = [(A, 1), (B, 1), (C, 1)];
    let opts = ["HOLD", "900000", "EVENTS", ORDERS];
    assert_eq!(placed(&mut con, &items, "order-77", &opts), [99, 499, 0]);
    // The client timed out and sends it again: a replay, nothing deducted twice.
    let before = snapshot(&mut con);
    assert_eq!(placed(&mut con, &items, "order-77", &opts), [99, 499, 0]);
    assert_eq!(snapshot(&mut con), before, "the replay changed something");
    // The stream got one deduct entry per item (cart 3, item 1..3) and the charger's soldout.
    let entries = xrange(&mut con, ORDERS);
    let deducts: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e.get("type") == Some("deduct"))
        .map(|e| {
            (
                e.get("cart").unwrap_or("").to_string(),
                e.get("item").unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        deducts,
        [("3", "1"), ("3", "2"), ("3", "3")].map(|(c, i)| (c.to_string(), i.to_string()))
    );
    assert_eq!(entries.len(), 4, "{entries:?}");
    // Paid: every item confirmed at once.
    assert_eq!(int(cart_confirm(&mut con, &[A, B, C], "order-77")), 1);
    for key in [A, B, C] {
        assert_eq!(state(&mut con, key, "order-77"), "confirmed", "{key}");
    }
    // ... or cancelled (before or after payment): every item back on sale at once, announced.
    let mut args = keys_args("STOCK.CART.REFUND", &[A, B, C], "order-77");
    args.extend(owned(&["EVENTS", ORDERS]));
    assert_eq!(ints(run(&mut con, &args)), [1, 1, 1]);
    let refunds: Vec<Vec<(String, String)>> = xrange(&mut con, ORDERS)
        .into_iter()
        .filter(|e| e.get("type") == Some("refund"))
        .map(|e| e.fields)
        .collect();
    assert_eq!(
        refunds,
        [(A, 100, 1), (B, 500, 2), (C, 1, 3)]
            .map(|(k, left, i)| cart_refund_fields(k, "order-77", 1, left, 3, i))
    );
    assert_eq!(
        (
            available(&mut con, A),
            available(&mut con, B),
            available(&mut con, C)
        ),
        (100, 500, 1)
    );
}

#[test]
fn the_command_reference_example_runs_as_written() {
    let s = server();
    let mut con = s.conn();
    let (phone, case, charger, gone) =
        ("{s}:phone", "{s}:case", "{s}:charger", "{s}:sold-out-thing");
    set(&mut con, phone, 100);
    set(&mut con, case, 500);
    set(&mut con, charger, 300);
    set(&mut con, gone, 0);
    let items = [(phone, 1), (case, 1), (charger, 2)];
    let opts = ["BUYER", "user-7", "HOLD", "900000"];
    assert_eq!(placed(&mut con, &items, "order-77", &opts), [99, 499, 298]);
    assert_eq!(placed(&mut con, &items, "order-77", &opts), [99, 499, 298]);
    cart_refused(
        &mut con,
        &[(phone, 1), (gone, 1)],
        "order-78",
        &[],
        &refusal(CartCode::SoldOut, 2, gone),
    );
    assert_eq!(
        int(cart_confirm(&mut con, &[phone, case, charger], "order-77")),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Success
// ---------------------------------------------------------------------------------------------

#[test]
fn a_cart_deducts_every_item_and_replies_what_remains_in_the_order_given() {
    let s = server();
    let mut con = s.conn();
    set(&mut con, A, 10);
    set(&mut con, B, 20);
    set(&mut con, C, 30);
    set(&mut con, "{sale}:other", 7);
    let other = snapshot_of(&mut con, "{sale}:other");
    let deductions = fence_counter(&mut con, "deductions");
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 2), (C, 3)], "o1", &[]),
        [9, 18, 27]
    );
    for (key, q, left) in [(A, 1, 9), (B, 2, 18), (C, 3, 27)] {
        let i = sinfo(&mut con, key);
        assert_eq!(
            (
                i["available"],
                i["deducted"],
                i["requests"],
                i["held"],
                i["fence"]
            ),
            (left, q, 1, 0, 0),
            "{key}: {i:?}"
        );
        // An ordinary entry under the request id, without deadline or buyer.
        assert_eq!(
            detail(&mut con, key, "o1"),
            Some(Detail {
                state: "deducted".into(),
                quantity: q,
                deadline: None,
                buyer: None,
            }),
            "{key}"
        );
        assert_eq!(int(call(&mut con, &["STOCK.REQUEST", key, "o1"])), q);
    }
    assert!(fence_counter(&mut con, "deductions") > deductions);
    // The reply follows the order given, not the keys' order.
    assert_eq!(placed(&mut con, &[(C, 1), (A, 1)], "o2", &[]), [26, 8]);
    // One item.
    assert_eq!(placed(&mut con, &[(B, 5)], "o3", &[]), [13]);
    // Options in any case and any order; ID may come after the others.
    assert_eq!(
        ints(call(
            &mut con,
            &[
                "stock.cart",
                "2",
                A,
                "1",
                B,
                "1",
                "fence",
                "5",
                "Id",
                "o4",
                "hold",
                "60000"
            ]
        )),
        [7, 12]
    );
    assert_eq!(state(&mut con, A, "o4"), "held");
    assert_eq!(sinfo(&mut con, B)["fence"], 5);
    // A stock taken exactly to 0, and the largest quantity.
    set(&mut con, "{sale}:max", i64::MAX);
    assert_eq!(
        ints(call(
            &mut con,
            &["STOCK.CART", "2", A, "7", "{sale}:max", I64_MAX, "ID", "o5"]
        )),
        [0, 0]
    );
    // A stock's TTL is kept; RESP3 gets the same array.
    assert_eq!(int(call(&mut con, &["PEXPIRE", C, "600000"])), 1);
    let mut resp3 = s.conn_resp3();
    assert_eq!(placed(&mut resp3, &[(C, 1), (B, 1)], "o6", &[]), [25, 11]);
    assert_eq!(placed(&mut resp3, &[(C, 1), (B, 1)], "o6", &[]), [25, 11]);
    assert!(pttl(&mut con, C) > 500_000);
    // A key the cart does not name is untouched.
    assert_eq!(snapshot_of(&mut con, "{sale}:other"), other);
}

/// One key's type, digest and `STOCK.INFO`.
fn snapshot_of(con: &mut Connection, key: &str) -> String {
    format!(
        "{} {} {:?}",
        key_type(con, key),
        digest_value(con, key),
        sinfo(con, key)
    )
}

#[test]
fn a_cart_takes_256_items_and_not_257() {
    let s = server();
    let mut con = s.conn();
    let keys: Vec<String> = (0..257).map(|i| format!("{{big}}:{i}")).collect();
    for k in &keys {
        set(&mut con, k, 2);
    }
    let items: Vec<(&str, i64)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
    cart_refused(&mut con, &items, "too-many", &[], NUMKEYS_RANGE);
    assert_eq!(placed(&mut con, &items[..256], "full", &[]), vec![1; 256]);
    for k in &keys[..256] {
        assert_eq!(state(&mut con, k, "full"), "deducted", "{k}");
    }
    assert_eq!(available(&mut con, &keys[256]), 2);
    let refund_keys: Vec<&str> = keys[..256].iter().map(String::as_str).collect();
    assert_eq!(
        ints(cart_refund(&mut con, &refund_keys, "full")),
        vec![1; 256]
    );
    let too_many: Vec<&str> = keys.iter().map(String::as_str).collect();
    refused(
        &mut con,
        &keys_args("STOCK.CART.REFUND", &too_many, "full"),
        NUMKEYS_RANGE,
    );
    refused(
        &mut con,
        &keys_args("STOCK.CART.CONFIRM", &too_many, "full"),
        NUMKEYS_RANGE,
    );
}

// ---------------------------------------------------------------------------------------------
// Replays
// ---------------------------------------------------------------------------------------------

#[test]
fn a_resent_cart_is_a_replay_that_deducts_nothing() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    let items = [(A, 1), (B, 2), (C, 3)];
    let opts = [
        "BUYER", "u", "HOLD", LONG_HOLD, "FENCE", "5", "EVENTS", ORDERS,
    ];
    assert_eq!(placed(&mut con, &items, "o1", &opts), [9, 8, 7]);
    let deductions = fence_counter(&mut con, "deductions");
    let before = snapshot(&mut con);
    // The same cart again, and the same id with other quantities, buyer, hold, a higher
    // token (a replay raises no token) and no stream: the array of what remains, nothing
    // deducted, nothing appended, no deadline moved.
    for opts in [
        opts.to_vec(),
        vec!["BUYER", "someone-else", "HOLD", "1", "FENCE", "7"],
        vec![],
    ] {
        assert_eq!(placed(&mut con, &items, "o1", &opts), [9, 8, 7], "{opts:?}");
        assert_eq!(
            placed(&mut con, &[(A, 9), (B, 9), (C, 9)], "o1", &opts),
            [9, 8, 7],
            "{opts:?}"
        );
        assert_eq!(
            snapshot(&mut con),
            before,
            "a replay with {opts:?} changed the data"
        );
    }
    assert_eq!(fence_counter(&mut con, "deductions"), deductions);
    // What remains now: after another deduction, and on stocks short of the cart's quantities.
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", B, "3", "ID", "x"])), 5);
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", A, "9", "ID", "y"])), 0);
    assert_eq!(placed(&mut con, &items, "o1", &[]), [0, 5, 7]);
    // A replay is answered even where a new id would be refused: a full ledger, an id
    // longer than fence.max-id-length now.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1"],
    ));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "1"],
    ));
    let before = snapshot(&mut con);
    assert_eq!(placed(&mut con, &items, "o1", &[]), [0, 5, 7]);
    assert_eq!(snapshot(&mut con), before);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1000000"],
    ));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "512"],
    ));
    // Refunded: a replay still takes nothing (the id stays spent).
    assert_eq!(ints(cart_refund(&mut con, &[A, B, C], "o1")), [1, 2, 3]);
    let before = snapshot(&mut con);
    assert_eq!(placed(&mut con, &items, "o1", &opts), [1, 7, 10]);
    assert_eq!(snapshot(&mut con), before);
    // The checks before the id still apply to a replay: a stale token, a missing key.
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", B, "1", "ID", "z", "FENCE", "9"]
        )),
        6
    );
    cart_refused(
        &mut con,
        &items,
        "o1",
        &["FENCE", "8"],
        &refusal(CartCode::Stale, 2, B),
    );
    int(call(&mut con, &["DEL", C]));
    cart_refused(&mut con, &items, "o1", &[], &refusal(CartCode::NoKey, 3, C));
}

#[test]
fn an_id_in_some_of_the_ledgers_only_is_refused_and_changes_nothing() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    let items = [(A, 1), (B, 1), (C, 1)];
    // Only one stock knows the id: that item is named.
    for (i, key) in [A, B, C].into_iter().enumerate() {
        let id = format!("alone-{i}");
        int(call(&mut con, &["STOCK.DEDUCT", key, "1", "ID", &id]));
        cart_refused(&mut con, &items, &id, &[], &some_only(&id, i + 1, key));
        refused(
            &mut con,
            &keys_args("STOCK.CART.REFUND", &[A, B, C], &id),
            &some_only(&id, i + 1, key),
        );
        refused(
            &mut con,
            &keys_args("STOCK.CART.CONFIRM", &[A, B, C], &id),
            &some_only(&id, i + 1, key),
        );
    }
    // A refunded entry is still in the ledger.
    int(call(&mut con, &["STOCK.DEDUCT", B, "1", "ID", "refunded"]));
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", B, "refunded"])), 1);
    cart_refused(
        &mut con,
        &items,
        "refunded",
        &[],
        &some_only("refunded", 2, B),
    );
    // A cart of two, resent with a third item: the id is in two of the three ledgers.
    assert_eq!(placed(&mut con, &[(A, 1), (B, 1)], "two", &[]), [8, 8]);
    let before = snapshot(&mut con);
    let text = err(cart(&mut con, &items, "two", &[]));
    assert!(
        text == some_only("two", 1, A) || text == some_only("two", 2, B),
        "{text:?}"
    );
    assert_eq!(snapshot(&mut con), before);
    // The id step comes before every item's own steps: a sold-out item, a full ledger.
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", A, "8"])), 0);
    int(call(&mut con, &["STOCK.DEDUCT", C, "1", "ID", "late"]));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1"],
    ));
    cart_refused(&mut con, &items, "late", &[], &some_only("late", 3, C));
    // A missing key holds no id: the others are "some".
    int(call(&mut con, &["DEL", A]));
    refused(
        &mut con,
        &keys_args("STOCK.CART.REFUND", &[A, C], "late"),
        &some_only("late", 2, C),
    );
    refused(
        &mut con,
        &keys_args("STOCK.CART.CONFIRM", &[A, C], "late"),
        &some_only("late", 2, C),
    );
    // Bytes that are not printable ASCII, and ', are escaped in the id and the key.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "100"],
    ));
    let odd_key = "{sale}:\x01'x";
    let odd_id = "id\r\n'x";
    set(&mut con, odd_key, 5);
    int(call(
        &mut con,
        &["STOCK.DEDUCT", odd_key, "1", "ID", odd_id],
    ));
    cart_refused(
        &mut con,
        &[(B, 1), (odd_key, 1)],
        odd_id,
        &[],
        &some_only(odd_id, 2, odd_key),
    );
    assert!(some_only(odd_id, 2, odd_key).contains("id\\x0d\\x0a\\x27x"));
}

// ---------------------------------------------------------------------------------------------
// Refusals: each names its item, none changes any key
// ---------------------------------------------------------------------------------------------

#[test]
fn each_refusal_names_its_item_and_key_and_changes_no_key() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    // Every refusal below carries EVENTS: the stream must not even be created.
    let ev = ["EVENTS", ORDERS];
    // NOKEY, at every position.
    for (i, items) in [
        [("{sale}:missing", 1), (A, 1), (B, 1)],
        [(A, 1), ("{sale}:missing", 1), (B, 1)],
        [(A, 1), (B, 1), ("{sale}:missing", 1)],
    ]
    .iter()
    .enumerate()
    {
        cart_refused(
            &mut con,
            items,
            "n",
            &ev,
            &refusal(CartCode::NoKey, i + 1, "{sale}:missing"),
        );
    }
    // SOLDOUT: fewer than quantity available (a stock at 0 too).
    cart_refused(
        &mut con,
        &[(A, 1), (B, 11)],
        "s",
        &ev,
        &refusal(CartCode::SoldOut, 2, B),
    );
    cart_refused(
        &mut con,
        &[(A, 11), (B, 1)],
        "s",
        &ev,
        &refusal(CartCode::SoldOut, 1, A),
    );
    set(&mut con, "{sale}:empty", 0);
    cart_refused(
        &mut con,
        &[(A, 1), (B, 1), ("{sale}:empty", 1)],
        "s",
        &ev,
        &refusal(CartCode::SoldOut, 3, "{sale}:empty"),
    );
    // STALE: the token below that stock's highest; equal is accepted.
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", B, "1", "ID", "f", "FENCE", "10"]
        )),
        9
    );
    cart_refused(
        &mut con,
        &[(A, 1), (B, 1), (C, 1)],
        "t",
        &["FENCE", "9", "EVENTS", ORDERS],
        &refusal(CartCode::Stale, 2, B),
    );
    // LEDGERFULL: that stock's ledger holds fence.max-ledger-entries ids.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1"],
    ));
    cart_refused(
        &mut con,
        &[(A, 1), (B, 1), (C, 1)],
        "l",
        &ev,
        &refusal(CartCode::LedgerFull, 2, B),
    );
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1000000"],
    ));
    // LIMIT: the buyer would pass that stock's limit per buyer.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", C, "2"])), 1);
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", C, "2", "ID", "u-1", "BUYER", "u"]
        )),
        8
    );
    cart_refused(
        &mut con,
        &[(A, 1), (C, 1)],
        "u-2",
        &["BUYER", "u", "EVENTS", ORDERS],
        &refusal(CartCode::Limit, 2, C),
    );
    // The LIMIT step's other refusals: no BUYER on a stock with a limit.
    cart_refused(&mut con, &[(A, 1), (C, 1)], "u-3", &ev, &buyer_required(2));
    // The key as `printable` shows it: escaped bytes, cut at 64 bytes.
    let odd = "{sale}:\x01'\u{e9}";
    cart_refused(
        &mut con,
        &[(A, 1), (odd, 1)],
        "n",
        &ev,
        &refusal(CartCode::NoKey, 2, odd),
    );
    assert!(refusal(CartCode::NoKey, 2, odd).ends_with("{sale}:\\x01\\x27\\xc3\\xa9"));
    let long = format!("{{sale}}:{}", "k".repeat(100));
    cart_refused(
        &mut con,
        &[(&long, 1)],
        "n",
        &ev,
        &refusal(CartCode::NoKey, 1, &long),
    );
    assert!(refusal(CartCode::NoKey, 1, &long).ends_with("..."));
    assert_eq!(exists(&mut con, ORDERS), 0);
    // Every refusal left every stock as it was; a valid cart still goes through.
    assert_eq!(
        placed(
            &mut con,
            &[(A, 1), (B, 1), (C, 1)],
            "ok",
            &["BUYER", "v", "FENCE", "10"]
        ),
        [9, 8, 7]
    );
}

#[test]
fn checks_run_in_the_order_the_readme_gives() {
    let s = Server::start_with(&["--enable-debug-command", "yes", "--maxmemory", "104857600"]);
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    int(call(
        &mut con,
        &["LOCK.ACQUIRE", "{sale}:lock", "o", "600000"],
    ));
    okay(call(&mut con, &["SET", "{sale}:plain", "50"]));
    let (lock, plain, missing) = ("{sale}:lock", "{sale}:plain", "{sale}:missing");

    // 1. The arguments come before the keys' types.
    refused(
        &mut con,
        &owned(&["STOCK.CART", "0", lock, "1", "ID", "x"]),
        NUMKEYS_RANGE,
    );
    cart_refused(&mut con, &[(lock, 0)], "x", &[], &quantity_range(1));
    cart_refused(
        &mut con,
        &[(lock, 1), (lock, 1)],
        "x",
        &[],
        &key_twice(lock),
    );
    refused(
        &mut con,
        &owned(&["STOCK.CART", "1", lock, "1", "FENCE", "5"]),
        CART_NEEDS_ID,
    );
    cart_refused(
        &mut con,
        &[(lock, 1)],
        "x",
        &["HOLD", "0"],
        &hold_range(604_800_000),
    );
    cart_refused(
        &mut con,
        &[(lock, 1)],
        "x",
        &["BUYER", ""],
        &empty_name(Name::BuyerId),
    );
    cart_refused(
        &mut con,
        &[(lock, 1)],
        "x",
        &["FENCE", "0"],
        TOKEN_NOT_POSITIVE,
    );
    // 2. Every key's type before NOKEY, for every key.
    cart_refused(&mut con, &[(missing, 1), (lock, 1)], "x", &[], WRONGTYPE);
    cart_refused(&mut con, &[(missing, 1), (plain, 1)], "x", &[], NEEDS_STOCK);
    // 3. NOKEY for every key before FENCE.
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", A, "1", "ID", "f", "FENCE", "10"]
        )),
        9
    );
    cart_refused(
        &mut con,
        &[(A, 1), (missing, 1)],
        "x",
        &["FENCE", "5"],
        &refusal(CartCode::NoKey, 2, missing),
    );
    // 3b. The EVENTS stream's type after NOKEY, before FENCE.
    cart_refused(
        &mut con,
        &[(A, 1), (missing, 1)],
        "x",
        &["FENCE", "5", "EVENTS", plain],
        &refusal(CartCode::NoKey, 2, missing),
    );
    cart_refused(
        &mut con,
        &[(B, 1), (A, 1)],
        "x",
        &["FENCE", "5", "EVENTS", plain],
        WRONGTYPE,
    );
    // 4. FENCE for every key before the request id.
    int(call(&mut con, &["STOCK.DEDUCT", A, "1", "ID", "known"]));
    cart_refused(
        &mut con,
        &[(B, 1), (A, 1)],
        "known",
        &["FENCE", "5"],
        &refusal(CartCode::Stale, 2, A),
    );
    // 5. The request id across every stock before any item's own steps.
    int(call(&mut con, &["STOCK.DEDUCT", C, "1", "ID", "c-only"]));
    cart_refused(
        &mut con,
        &[(A, 100), (B, 1), (C, 1)],
        "c-only",
        &[],
        &some_only("c-only", 3, C),
    );
    // 6. Each item in order, each with its ID, LIMIT and quantity steps.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "2"],
    ));
    // A holds 2 ids now: its ledger is full; B and C hold 0 and 1.
    cart_refused(
        &mut con,
        &[(B, 100), (A, 1)],
        "n1",
        &[],
        &refusal(CartCode::SoldOut, 1, B),
    );
    cart_refused(
        &mut con,
        &[(A, 100), (B, 100)],
        "n1",
        &[],
        &refusal(CartCode::LedgerFull, 1, A),
    );
    cart_refused(
        &mut con,
        &[(B, 1), (A, 1), (C, 100)],
        "n1",
        &[],
        &refusal(CartCode::LedgerFull, 2, A),
    );
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1000000"],
    ));
    // Within one item: LIMIT before the quantity.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", C, "1"])), 1);
    int(call(
        &mut con,
        &["STOCK.DEDUCT", C, "1", "ID", "u-1", "BUYER", "u"],
    ));
    cart_refused(
        &mut con,
        &[(B, 1), (C, 100)],
        "u-2",
        &["BUYER", "u"],
        &refusal(CartCode::Limit, 2, C),
    );
    cart_refused(
        &mut con,
        &[(B, 100), (C, 1)],
        "u-2",
        &["BUYER", "u"],
        &refusal(CartCode::SoldOut, 1, B),
    );
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", C, "0"])), 1);
    // A new id too long belongs to the id step of the items: after NOKEY, before SOLDOUT.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "4"],
    ));
    cart_refused(
        &mut con,
        &[(A, 1), (missing, 1)],
        "toolong",
        &[],
        &refusal(CartCode::NoKey, 2, missing),
    );
    cart_refused(
        &mut con,
        &[(A, 100)],
        "toolong",
        &[],
        &name_too_long(Name::RequestId, 4),
    );
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "512"],
    ));
    // The eviction refusal too: a stock a volatile policy can evict (it has a TTL) is
    // refused in its own item's id step, after the items before it.
    assert_eq!(placed(&mut con, &[(A, 1), (B, 1)], "rp", &[]), [7, 9]);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "volatile-lru"],
    ));
    assert_eq!(int(call(&mut con, &["PEXPIRE", B, "600000"])), 1);
    cart_refused(
        &mut con,
        &[(A, 1), (B, 1)],
        "ev",
        &[],
        &eviction_risk("volatile-lru"),
    );
    cart_refused(
        &mut con,
        &[(A, 100), (B, 1)],
        "ev",
        &[],
        &refusal(CartCode::SoldOut, 1, A),
    );
    // ... and a replay is still answered.
    assert_eq!(placed(&mut con, &[(A, 1), (B, 1)], "rp", &[]), [7, 9]);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    ));
    // 7. The stream's room last: a sold-out item is refused as such on a full stream.
    bulk(call(&mut con, &["XADD", ORDERS, LAST_ID, "type", "manual"]));
    cart_refused(
        &mut con,
        &[(A, 100), (C, 1)],
        "s1",
        &["EVENTS", ORDERS],
        &refusal(CartCode::SoldOut, 1, A),
    );
    cart_refused(
        &mut con,
        &[(A, 1), (C, 1)],
        "s1",
        &["EVENTS", ORDERS],
        STREAM_FULL,
    );
}

#[test]
fn argument_errors_change_nothing() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    int(call(&mut con, &["STOCK.DEDUCT", A, "1", "ID", "known"]));
    let future = (now_us() + 25 * 3_600_000_000).to_string();
    // numkeys: not an integer from 1 to 256, or more than the arguments hold.
    for n in [
        "0",
        "257",
        "-1",
        "x",
        "1.5",
        "",
        " 1",
        "1 ",
        "+1",
        "01",
        TWO_POW_63,
        "99999999999999999999",
    ] {
        refused(
            &mut con,
            &owned(&["STOCK.CART", n, A, "1", "ID", "x"]),
            NUMKEYS_RANGE,
        );
        for which in ["STOCK.CART.REFUND", "STOCK.CART.CONFIRM"] {
            refused(&mut con, &owned(&[which, n, A, "known"]), NUMKEYS_RANGE);
        }
    }
    refused(
        &mut con,
        &owned(&["STOCK.CART", "4", A, "1", B, "1", "ID", "x"]),
        NUMKEYS_RANGE,
    );
    refused(
        &mut con,
        &owned(&["STOCK.CART", "256", A, "1", "ID", "x"]),
        NUMKEYS_RANGE,
    );
    for which in ["STOCK.CART.REFUND", "STOCK.CART.CONFIRM"] {
        refused(
            &mut con,
            &owned(&[which, "3", A, B, "known"]),
            NUMKEYS_RANGE,
        );
        refused(&mut con, &owned(&[which, "256", A, "known"]), NUMKEYS_RANGE);
    }
    // numkeys pairs read the words that follow: a third pair (ID, x) has a bad quantity, and
    // a third pair (ID, 5) leaves no ID.
    refused(
        &mut con,
        &owned(&["STOCK.CART", "3", A, "1", B, "1", "ID", "x"]),
        &quantity_range(1),
    );
    refused(
        &mut con,
        &owned(&["STOCK.CART", "3", A, "1", B, "1", "ID", "5"]),
        CART_NEEDS_ID,
    );
    // One pair too many is an unknown option.
    refused(
        &mut con,
        &owned(&["STOCK.CART", "1", A, "1", B, "1", "ID", "x"]),
        &unknown_option(B),
    );
    // Quantities.
    for q in ["0", "-1", "x", "1.5", "", TWO_POW_63] {
        refused(
            &mut con,
            &owned(&["STOCK.CART", "2", A, "1", B, q, "ID", "x"]),
            &quantity_range(1),
        );
    }
    // A key named twice (keys are case-sensitive: A and its upper case are two keys).
    cart_refused(&mut con, &[(A, 1), (B, 1), (A, 1)], "x", &[], &key_twice(A));
    for which in ["STOCK.CART.REFUND", "STOCK.CART.CONFIRM"] {
        refused(
            &mut con,
            &keys_args(which, &[A, B, B], "known"),
            &key_twice(B),
        );
        refused(
            &mut con,
            &keys_args(which, &[A, B], ""),
            &empty_name(Name::RequestId),
        );
    }
    let upper = A.to_ascii_uppercase();
    cart_refused(
        &mut con,
        &[(A, 1), (&upper, 1)],
        "x",
        &[],
        &refusal(CartCode::NoKey, 2, &upper),
    );
    // ID: missing, without a value, twice, empty.
    refused(
        &mut con,
        &owned(&["STOCK.CART", "1", A, "1", "FENCE", "5"]),
        CART_NEEDS_ID,
    );
    refused(
        &mut con,
        &owned(&["STOCK.CART", "1", A, "1", "FENCE", "5", "ID"]),
        &missing_value("ID"),
    );
    cart_refused(
        &mut con,
        &[(A, 1)],
        "x",
        &["ID", "y"],
        &repeated_option("ID"),
    );
    cart_refused(
        &mut con,
        &[(A, 1)],
        "x",
        &["id", "y"],
        &repeated_option("ID"),
    );
    cart_refused(&mut con, &[(A, 1)], "", &[], &empty_name(Name::RequestId));
    // The other options.
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["DETAIL"], unknown_option("DETAIL")),
        (vec!["LIMIT", "1"], unknown_option("LIMIT")),
        (vec!["HOLD"], missing_value("HOLD")),
        (vec!["HOLD", "5", "HOLD", "5"], repeated_option("HOLD")),
        (vec!["HOLD", "0"], hold_range(604_800_000)),
        (vec!["HOLD", "604800001"], hold_range(604_800_000)),
        (vec!["HOLD", "x"], hold_range(604_800_000)),
        (vec!["BUYER"], missing_value("BUYER")),
        (vec!["BUYER", ""], empty_name(Name::BuyerId)),
        (vec!["BUYER", "a", "buyer", "b"], repeated_option("BUYER")),
        (vec!["FENCE", "0"], TOKEN_NOT_POSITIVE.to_string()),
        (vec!["FENCE", "-1"], TOKEN_NOT_POSITIVE.to_string()),
        (vec!["FENCE", "x"], TOKEN_NOT_POSITIVE.to_string()),
        (vec!["FENCE", &future], TOKEN_FROM_FUTURE.to_string()),
        (vec!["FENCE"], missing_value("FENCE")),
        (vec!["EVENTS"], missing_value("EVENTS")),
        (
            vec!["EVENTS", ORDERS, "EVENTS", ORDERS],
            repeated_option("EVENTS"),
        ),
        (vec!["EVENTS", ORDERS, "MAXLEN"], BAD_MAXLEN.to_string()),
        (
            vec!["EVENTS", ORDERS, "MAXLEN", "-1"],
            BAD_MAXLEN.to_string(),
        ),
        (
            vec!["EVENTS", ORDERS, "MAXLEN", "~", "x"],
            BAD_MAXLEN.to_string(),
        ),
    ];
    for (opts, expected) in &cases {
        cart_refused(&mut con, &[(A, 1), (B, 1)], "x", opts, expected);
    }
    // A stream key of another type.
    for stream in [B, "{sale}:plain"] {
        okay(call(&mut con, &["SET", "{sale}:plain", "1"]));
        cart_refused(
            &mut con,
            &[(A, 1), (C, 1)],
            "x",
            &["EVENTS", stream],
            WRONGTYPE,
        );
    }
    // Extra words after the id of a cart refund or confirmation.
    for which in ["STOCK.CART.REFUND", "STOCK.CART.CONFIRM"] {
        let args = owned(&[which, "1", A, B, "known"]);
        let before = snapshot(&mut con);
        assert_err_ctx(run(&mut con, &args), code::ERR, format!("{args:?}"));
        assert_eq!(snapshot(&mut con), before, "{args:?}");
    }
}

/// The README: "`ID` missing: `ERR STOCK.CART needs ID: …`", whatever other options the cart
/// carries (`HOLD` and `BUYER` need an `ID` too, but a cart's missing `ID` is its own error).
#[test]
fn a_cart_without_id_is_refused_as_such_whatever_its_options() {
    let s = server();
    let mut con = s.conn();
    set(&mut con, A, 10);
    for opts in [
        vec!["FENCE", "5"],
        vec!["HOLD", "5"],
        vec!["BUYER", "u"],
        vec!["BUYER", "u", "HOLD", "5", "FENCE", "5"],
        vec!["EVENTS", ORDERS, "HOLD", "5"],
    ] {
        let mut args = owned(&["STOCK.CART", "1", A, "1"]);
        args.extend(owned(&opts));
        refused(&mut con, &args, CART_NEEDS_ID);
    }
}

#[test]
fn wrong_types_and_plain_strings_are_refused_whole() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B] {
        set(&mut con, key, 10);
    }
    assert_eq!(placed(&mut con, &[(A, 1), (B, 1)], "o", &[]), [9, 9]);
    int(call(
        &mut con,
        &["LOCK.ACQUIRE", "{sale}:lock", "o", "600000"],
    ));
    okay(call(&mut con, &["SET", "{sale}:plain", "50"]));
    int(call(&mut con, &["HSET", "{sale}:hash", "f", "v"]));
    int(call(&mut con, &["RPUSH", "{sale}:list", "v"]));
    for key in ["{sale}:lock", "{sale}:hash", "{sale}:list"] {
        cart_refused(&mut con, &[(A, 1), (key, 1)], "n", &[], WRONGTYPE);
        refused(
            &mut con,
            &keys_args("STOCK.CART.REFUND", &[A, key, B], "o"),
            WRONGTYPE,
        );
        refused(
            &mut con,
            &keys_args("STOCK.CART.CONFIRM", &[A, key, B], "o"),
            WRONGTYPE,
        );
    }
    // A plain integer string has no ledger.
    let plain = "{sale}:plain";
    cart_refused(&mut con, &[(A, 1), (plain, 1)], "n", &[], NEEDS_STOCK);
    cart_refused(&mut con, &[(plain, 1)], "n", &[], NEEDS_STOCK);
    refused(
        &mut con,
        &keys_args("STOCK.CART.REFUND", &[A, plain], "o"),
        NEEDS_STOCK,
    );
    refused(
        &mut con,
        &keys_args("STOCK.CART.CONFIRM", &[A, plain], "o"),
        NEEDS_STOCK,
    );
    assert_eq!(get_string(&mut con, plain).as_deref(), Some("50"));
    assert_eq!(key_type(&mut con, plain), "string");
}

// ---------------------------------------------------------------------------------------------
// HOLD, BUYER and FENCE on every item
// ---------------------------------------------------------------------------------------------

#[test]
fn hold_buyer_and_fence_apply_to_every_item_with_one_deadline() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    let t0 = server_ms(&mut con);
    assert_eq!(
        placed(
            &mut con,
            &[(A, 1), (B, 2), (C, 3)],
            "o",
            &["BUYER", "alice", "HOLD", "60000", "FENCE", "7"]
        ),
        [9, 8, 7]
    );
    let t1 = server_ms(&mut con);
    let mut deadlines = Vec::new();
    for (key, q) in [(A, 1), (B, 2), (C, 3)] {
        let d = detail(&mut con, key, "o").expect("an entry");
        assert_eq!(
            (d.state.as_str(), d.quantity, d.buyer.as_deref()),
            ("held", q, Some("alice")),
            "{key}"
        );
        let deadline = d.deadline.expect("a deadline");
        assert!(
            (t0 + 60_000..=t1 + 60_000).contains(&deadline),
            "{key}: deadline {deadline} not within [{t0}, {t1}] + 60000"
        );
        deadlines.push(deadline);
        let i = sinfo(&mut con, key);
        assert_eq!(
            (
                i["fence"],
                i["held"],
                i["held-units"],
                i["next-deadline"],
                i["buyers"]
            ),
            (7, 1, q, deadline, 1),
            "{key}: {i:?}"
        );
        assert_eq!(int(call(&mut con, &["STOCK.BUYER", key, "alice"])), q);
    }
    assert!(
        deadlines.iter().all(|d| *d == deadlines[0]),
        "one deadline for the whole cart: {deadlines:?}"
    );
    // Each item is an ordinary entry: one key at a time.
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", B, "o"])), 1);
    assert_eq!(state(&mut con, B, "o"), "confirmed");
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", C, "o"])), 3);
    assert_eq!(int(call(&mut con, &["STOCK.BUYER", C, "alice"])), 0);
    // A refund of one item alone makes the cart unconfirmable; nothing is confirmed.
    let before = snapshot(&mut con);
    assert_eq!(err(cart_confirm(&mut con, &[A, B, C], "o")), refunded("o"));
    assert_eq!(snapshot(&mut con), before);
    assert_eq!(state(&mut con, A, "o"), "held");
    assert_eq!(ints(cart_refund(&mut con, &[A, B, C], "o")), [1, 2, 0]);
    for key in [A, B, C] {
        assert_eq!(state(&mut con, key, "o"), "refunded", "{key}");
        assert_eq!(int(call(&mut con, &["STOCK.BUYER", key, "alice"])), 0);
    }
    // Without HOLD and BUYER: deducted entries without deadline or buyer; the fence kept.
    assert_eq!(
        placed(&mut con, &[(A, 1), (C, 1)], "plain", &["FENCE", "7"]),
        [9, 9]
    );
    for key in [A, C] {
        assert_eq!(
            detail(&mut con, key, "plain"),
            Some(Detail {
                state: "deducted".into(),
                quantity: 1,
                deadline: None,
                buyer: None,
            })
        );
        assert_eq!(sinfo(&mut con, key)["fence"], 7);
    }
    // A higher token becomes every item's highest, even where it was lower or none.
    set(&mut con, "{sale}:new", 5);
    assert_eq!(
        placed(
            &mut con,
            &[(A, 1), ("{sale}:new", 1)],
            "higher",
            &["FENCE", "9"]
        ),
        [8, 4]
    );
    assert_eq!(sinfo(&mut con, A)["fence"], 9);
    assert_eq!(sinfo(&mut con, "{sale}:new")["fence"], 9);
    assert_eq!(sinfo(&mut con, C)["fence"], 7);
}

#[test]
fn a_buyer_limit_counts_every_item_of_the_cart() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B] {
        okay(call(&mut con, &["STOCK.SET", key, "10", "LIMIT", "3"]));
    }
    set(&mut con, C, 10);
    // C has no limit: BUYER is recorded all the same.
    assert_eq!(
        placed(&mut con, &[(A, 2), (B, 1), (C, 5)], "c1", &["BUYER", "u"]),
        [8, 9, 5]
    );
    assert_eq!(int(call(&mut con, &["STOCK.BUYER", C, "u"])), 5);
    // A: 2 + 2 passes 3; B: 1 + 2 does not.
    cart_refused(
        &mut con,
        &[(B, 2), (A, 2)],
        "c2",
        &["BUYER", "u"],
        &refusal(CartCode::Limit, 2, A),
    );
    assert_eq!(
        placed(&mut con, &[(B, 2), (A, 1)], "c2", &["BUYER", "u"]),
        [7, 7]
    );
    // A replay counts nothing again, whoever it names.
    assert_eq!(
        placed(&mut con, &[(B, 2), (A, 1)], "c2", &["BUYER", "v"]),
        [7, 7]
    );
    assert_eq!(int(call(&mut con, &["STOCK.BUYER", A, "v"])), 0);
    // A refund gives the allowance back on every item.
    assert_eq!(ints(cart_refund(&mut con, &[A, B, C], "c1")), [2, 1, 5]);
    assert_eq!(
        placed(&mut con, &[(A, 2), (B, 1)], "c3", &["BUYER", "u"]),
        [7, 7]
    );
    // The LIMIT step's other refusals: a new buyer beyond fence.max-buyers, or too long.
    okay(call(&mut con, &["CONFIG", "SET", "fence.max-buyers", "1"]));
    cart_refused(
        &mut con,
        &[(C, 1), (B, 1)],
        "c6",
        &["BUYER", "x"],
        &buyers_full(1),
    );
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-buyers", "1000000"],
    ));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "3"],
    ));
    cart_refused(
        &mut con,
        &[(C, 1), (B, 1)],
        "c6",
        &["BUYER", "long"],
        &name_too_long(Name::BuyerId, 3),
    );
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "512"],
    ));
    // A held cart whose deadline passed gives its allowance back.
    assert_eq!(
        placed(&mut con, &[(A, 1)], "c4", &["BUYER", "w", "HOLD", "100"]),
        [6]
    );
    wait_expired(&mut con, &[A], "c4", 1);
    assert_eq!(int(call(&mut con, &["STOCK.BUYER", A, "w"])), 0);
    assert_eq!(placed(&mut con, &[(A, 3)], "c5", &["BUYER", "w"]), [4]);
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

#[test]
fn events_one_deduct_entry_per_item_and_soldout_for_the_stocks_emptied() {
    let s = server();
    let mut con = s.conn();
    set(&mut con, A, 5);
    set(&mut con, B, 2);
    set(&mut con, C, 10);
    let before = server_ms(&mut con);
    assert_eq!(
        placed(
            &mut con,
            &[(A, 1), (B, 2), (C, 3)],
            "o1",
            &["BUYER", "u", "FENCE", "9", "EVENTS", ORDERS]
        ),
        [4, 0, 7]
    );
    let entries = xrange(&mut con, ORDERS);
    let deducts: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.get("type") == Some("deduct"))
        .collect();
    let expected = [
        cart_deduct_fields(A, 1, 4, "o1", Some("u"), Some("9"), 3, 1),
        cart_deduct_fields(B, 2, 0, "o1", Some("u"), Some("9"), 3, 2),
        cart_deduct_fields(C, 3, 7, "o1", Some("u"), Some("9"), 3, 3),
    ];
    assert_eq!(deducts.len(), 3, "{entries:?}");
    for (e, want) in deducts.iter().zip(&expected) {
        assert_eq!(&e.fields, want, "{entries:?}");
    }
    // B was emptied: one soldout entry, after its deduct entry; nothing else.
    let soldout: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.get("type") == Some("soldout"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(soldout.len(), 1, "{entries:?}");
    assert_eq!(
        entries[soldout[0]].fields,
        field_list(&[("type", "soldout".into()), ("sku", B.into())])
    );
    let b_deduct = entries
        .iter()
        .position(|e| e.get("item") == Some("2"))
        .unwrap();
    assert!(soldout[0] > b_deduct, "{entries:?}");
    assert_eq!(entries.len(), 4);
    // Ids rising, from the server's clock.
    for pair in entries.windows(2) {
        assert!(
            stream_id(&pair[0].id) < stream_id(&pair[1].id),
            "{entries:?}"
        );
    }
    assert!(stream_id(&entries[0].id).0 >= u64::try_from(before).unwrap());
    // Without BUYER and FENCE: those fields are left out.
    assert_eq!(
        placed(&mut con, &[(C, 1), (A, 1)], "o2", &["EVENTS", ORDERS]),
        [6, 3]
    );
    let entries = xrange(&mut con, ORDERS);
    assert_eq!(entries.len(), 6);
    assert_eq!(
        entries[4].fields,
        cart_deduct_fields(C, 1, 6, "o2", None, None, 2, 1)
    );
    assert_eq!(
        entries[5].fields,
        cart_deduct_fields(A, 1, 3, "o2", None, None, 2, 2)
    );
    // A replay and a refusal append nothing (and a refused cart creates no stream).
    let before = snapshot(&mut con);
    assert_eq!(
        placed(&mut con, &[(C, 1), (A, 1)], "o2", &["EVENTS", ORDERS]),
        [6, 3]
    );
    cart_refused(
        &mut con,
        &[(C, 1), (A, 9)],
        "o3",
        &["EVENTS", ORDERS],
        &refusal(CartCode::SoldOut, 2, A),
    );
    cart_refused(
        &mut con,
        &[(C, 1), (A, 9)],
        "o3",
        &["EVENTS", "{sale}:new"],
        &refusal(CartCode::SoldOut, 2, A),
    );
    assert_eq!(snapshot(&mut con), before);
    // MAXLEN trims after the whole cart is appended.
    assert_eq!(
        placed(
            &mut con,
            &[(C, 1), (A, 1)],
            "o4",
            &["EVENTS", ORDERS, "MAXLEN", "=", "3"]
        ),
        [5, 2]
    );
    let entries = xrange(&mut con, ORDERS);
    assert_eq!(entries.len(), 3);
    assert_eq!(
        entries[2].fields,
        cart_deduct_fields(A, 1, 2, "o4", None, None, 2, 2)
    );
    assert_eq!(
        entries[1].fields,
        cart_deduct_fields(C, 1, 5, "o4", None, None, 2, 1)
    );
}

#[test]
fn a_stream_that_cannot_take_every_entry_refuses_the_whole_cart() {
    let s = server();
    let mut con = s.conn();
    set(&mut con, A, 5);
    set(&mut con, B, 1);
    set(&mut con, C, 5);
    // Room for exactly two more entries: the last id's sequence is two below the largest.
    bulk(call(
        &mut con,
        &[
            "XADD",
            ORDERS,
            "18446744073709551615-18446744073709551613",
            "type",
            "manual",
        ],
    ));
    // Three deduct entries; two deduct entries and a soldout: refused, nothing changes.
    cart_refused(
        &mut con,
        &[(A, 1), (B, 1), (C, 1)],
        "o",
        &["EVENTS", ORDERS],
        STREAM_FULL,
    );
    cart_refused(
        &mut con,
        &[(A, 1), (B, 1)],
        "o",
        &["EVENTS", ORDERS],
        STREAM_FULL,
    );
    // Two entries fit.
    assert_eq!(
        placed(&mut con, &[(A, 1), (C, 1)], "o", &["EVENTS", ORDERS]),
        [4, 4]
    );
    let entries = xrange(&mut con, ORDERS);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2].id, LAST_ID);
    // Now full: a replay is still answered (it appends nothing), a new cart is refused.
    assert_eq!(
        placed(&mut con, &[(A, 1), (C, 1)], "o", &["EVENTS", ORDERS]),
        [4, 4]
    );
    cart_refused(&mut con, &[(A, 1)], "p", &["EVENTS", ORDERS], STREAM_FULL);
    // Room for one entry: one item that empties its stock needs two (deduct and soldout).
    let tight = "{sale}:tight";
    bulk(call(
        &mut con,
        &[
            "XADD",
            tight,
            "18446744073709551615-18446744073709551614",
            "type",
            "manual",
        ],
    ));
    cart_refused(&mut con, &[(B, 1)], "q", &["EVENTS", tight], STREAM_FULL);
    assert_eq!(placed(&mut con, &[(C, 1)], "q", &["EVENTS", tight]), [3]);
    // A cart refund that returns units is refused whole on a full stream too.
    let mut args = keys_args("STOCK.CART.REFUND", &[A, C], "o");
    args.extend(owned(&["EVENTS", tight]));
    refused(&mut con, &args, STREAM_FULL);
    let mut args = keys_args("STOCK.CART.REFUND", &[C], "q");
    args.extend(owned(&["EVENTS", ORDERS]));
    refused(&mut con, &args, STREAM_FULL);
    assert_eq!(state(&mut con, C, "q"), "deducted");
}

// ---------------------------------------------------------------------------------------------
// STOCK.CART.REFUND and STOCK.CART.CONFIRM
// ---------------------------------------------------------------------------------------------

#[test]
fn cart_refund_replies_and_errors_as_the_contract_says() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 2), (C, 3)], "o1", &[]),
        [9, 8, 7]
    );
    let refunds = fence_counter(&mut con, "refunds");
    assert_eq!(ints(cart_refund(&mut con, &[A, B, C], "o1")), [1, 2, 3]);
    assert!(fence_counter(&mut con, "refunds") > refunds);
    for key in [A, B, C] {
        assert_eq!(available(&mut con, key), 10, "{key}");
        assert_eq!(state(&mut con, key, "o1"), "refunded", "{key}");
        assert_eq!(int(call(&mut con, &["STOCK.REQUEST", key, "o1"])), 0);
    }
    // Exactly once; the order given; an unknown id and missing keys reply zeros.
    let before = snapshot(&mut con);
    assert_eq!(ints(cart_refund(&mut con, &[C, A, B], "o1")), [0, 0, 0]);
    assert_eq!(
        ints(cart_refund(&mut con, &[A, B, C], "unknown")),
        [0, 0, 0]
    );
    assert_eq!(
        ints(cart_refund(
            &mut con,
            &["{sale}:missing", "{sale}:gone"],
            "o1"
        )),
        [0, 0]
    );
    assert_eq!(snapshot(&mut con), before);
    assert_eq!(exists(&mut con, "{sale}:missing"), 0);
    // An item refunded alone replies 0, the others their units.
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 2), (C, 3)], "o2", &[]),
        [9, 8, 7]
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", B, "o2"])), 2);
    assert_eq!(ints(cart_refund(&mut con, &[C, B, A], "o2")), [3, 0, 1]);
    // Held and confirmed items return their units.
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 2)], "o3", &["HOLD", LONG_HOLD]),
        [9, 8]
    );
    assert_eq!(int(cart_confirm(&mut con, &[A, B], "o3")), 1);
    assert_eq!(ints(cart_refund(&mut con, &[A, B], "o3")), [1, 2]);
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 2)], "o4", &["HOLD", LONG_HOLD]),
        [9, 8]
    );
    assert_eq!(ints(cart_refund(&mut con, &[A, B], "o4")), [1, 2]);
    assert_eq!(sinfo(&mut con, A)["held"], 0);
    // All or nothing: a refund that would take one stock past 2^63-1 refuses the whole call.
    assert_eq!(placed(&mut con, &[(A, 1), (B, 1)], "o5", &[]), [9, 9]);
    let room = (i64::MAX - 9).to_string();
    assert_eq!(int(call(&mut con, &["STOCK.ADD", B, &room])), i64::MAX);
    refused(
        &mut con,
        &keys_args("STOCK.CART.REFUND", &[A, B], "o5"),
        OVERFLOW,
    );
    assert_eq!(state(&mut con, A, "o5"), "deducted");
    // A hold that is due comes back once: by its expiry, not again by the refund.
    set(&mut con, C, 10);
    assert_eq!(
        placed(&mut con, &[(A, 1), (C, 1)], "o6", &["HOLD", "50"]),
        [8, 9]
    );
    let deadline = detail(&mut con, C, "o6")
        .and_then(|d| d.deadline)
        .expect("deadline");
    assert!(wait_until(RETURNED, || server_ms(&mut con) > deadline));
    assert_eq!(ints(cart_refund(&mut con, &[A, C], "o6")), [0, 0]);
    assert_eq!((available(&mut con, A), available(&mut con, C)), (9, 10));
    assert_eq!(state(&mut con, A, "o6"), "expired");
}

/// `STOCK.CART.REFUND … EVENTS stream-key [MAXLEN [~|=] n]`: one `refund` entry per item that
/// gave units back, all in the same step, or the call is refused (nothing refunded).
#[test]
fn cart_refund_events_one_refund_entry_per_item_all_or_none() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    let refund_ev = |keys: &[&str], id: &str, opts: &[&str]| {
        let mut args = keys_args("STOCK.CART.REFUND", keys, id);
        args.extend(owned(opts));
        args
    };
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 2), (C, 3)], "o1", &[]),
        [9, 8, 7]
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", B, "o1"])), 2);
    // Refused whole, the stream included: option errors, a stream of another type.
    okay(call(&mut con, &["SET", "{sale}:plain", "1"]));
    for (opts, expected) in [
        (vec!["EVENTS"], missing_value("EVENTS")),
        (
            vec!["EVENTS", ORDERS, "EVENTS", ORDERS],
            repeated_option("EVENTS"),
        ),
        (vec!["EVENTS", ORDERS, "MAXLEN"], BAD_MAXLEN.to_string()),
        (
            vec!["EVENTS", ORDERS, "MAXLEN", "~", "-1"],
            BAD_MAXLEN.to_string(),
        ),
        (vec!["BUYER", "u"], unknown_option("BUYER")),
        (vec!["x"], unknown_option("x")),
        (vec!["EVENTS", "{sale}:plain"], WRONGTYPE.to_string()),
        (vec!["EVENTS", B], WRONGTYPE.to_string()),
    ] {
        refused(&mut con, &refund_ev(&[A, B, C], "o1", &opts), &expected);
    }
    // The items that gave units back, in the order given.
    assert_eq!(
        ints(run(
            &mut con,
            &refund_ev(&[C, B, A], "o1", &["events", ORDERS])
        )),
        [3, 0, 1]
    );
    let entries = xrange(&mut con, ORDERS);
    let fields: Vec<Vec<(String, String)>> = entries.iter().map(|e| e.fields.clone()).collect();
    assert_eq!(
        fields,
        [
            cart_refund_fields(C, "o1", 3, 10, 3, 1),
            cart_refund_fields(A, "o1", 1, 10, 3, 3),
        ]
    );
    // Nothing back, nothing appended: again, an unknown id, missing keys; no stream created.
    let before = snapshot(&mut con);
    for args in [
        refund_ev(&[A, B, C], "o1", &["EVENTS", ORDERS]),
        refund_ev(&[A, B, C], "unknown", &["EVENTS", ORDERS]),
        refund_ev(&[A, B, C], "unknown", &["EVENTS", "{sale}:new"]),
        refund_ev(&["{sale}:missing"], "o1", &["EVENTS", "{sale}:new"]),
    ] {
        assert!(
            ints(run(&mut con, &args)).iter().all(|q| *q == 0),
            "{args:?}"
        );
    }
    assert_eq!(snapshot(&mut con), before);
    // MAXLEN trims after the whole refund is appended.
    assert_eq!(placed(&mut con, &[(A, 1), (B, 1)], "o2", &[]), [9, 9]);
    assert_eq!(
        ints(run(
            &mut con,
            &refund_ev(&[A, B], "o2", &["EVENTS", ORDERS, "MAXLEN", "=", "2"])
        )),
        [1, 1]
    );
    let fields: Vec<Vec<(String, String)>> = xrange(&mut con, ORDERS)
        .into_iter()
        .map(|e| e.fields)
        .collect();
    assert_eq!(
        fields,
        [
            cart_refund_fields(A, "o2", 1, 10, 2, 1),
            cart_refund_fields(B, "o2", 1, 10, 2, 2),
        ]
    );
    // A stream with room for one entry: a refund of two items is refused, nothing refunded;
    // a refund with one item giving back fits.
    let stream = "{sale}:tight";
    bulk(call(
        &mut con,
        &[
            "XADD",
            stream,
            "18446744073709551615-18446744073709551614",
            "type",
            "manual",
        ],
    ));
    assert_eq!(placed(&mut con, &[(A, 1), (B, 1)], "o3", &[]), [9, 9]);
    refused(
        &mut con,
        &refund_ev(&[A, B], "o3", &["EVENTS", stream]),
        STREAM_FULL,
    );
    assert_eq!(state(&mut con, A, "o3"), "deducted");
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", A, "o3"])), 1);
    assert_eq!(
        ints(run(
            &mut con,
            &refund_ev(&[A, B], "o3", &["EVENTS", stream])
        )),
        [0, 1]
    );
    let last = xrange(&mut con, stream).pop().expect("an entry");
    assert_eq!(last.id, LAST_ID);
    assert_eq!(last.fields, cart_refund_fields(B, "o3", 1, 10, 2, 2));
    // STOCK.CART.CONFIRM takes no option after the request id.
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 1)], "o4", &["HOLD", LONG_HOLD]),
        [9, 9]
    );
    let mut args = keys_args("STOCK.CART.CONFIRM", &[A, B], "o4");
    args.extend(owned(&["EVENTS", ORDERS]));
    let before = snapshot(&mut con);
    assert_err_ctx(run(&mut con, &args), code::ERR, format!("{args:?}"));
    assert_eq!(snapshot(&mut con), before);
}

#[test]
fn cart_confirm_replies_and_errors_as_the_contract_says() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    // Held: confirmed on every item, the deadline gone; again: 1.
    assert_eq!(
        placed(
            &mut con,
            &[(A, 1), (B, 2), (C, 3)],
            "o1",
            &["HOLD", LONG_HOLD]
        ),
        [9, 8, 7]
    );
    assert_eq!(int(cart_confirm(&mut con, &[A, B, C], "o1")), 1);
    for (key, q) in [(A, 1), (B, 2), (C, 3)] {
        assert_eq!(
            detail(&mut con, key, "o1"),
            Some(Detail {
                state: "confirmed".into(),
                quantity: q,
                deadline: None,
                buyer: None,
            }),
            "{key}"
        );
        assert_eq!(sinfo(&mut con, key)["held"], 0);
    }
    let before = snapshot(&mut con);
    assert_eq!(int(cart_confirm(&mut con, &[C, B, A], "o1")), 1);
    assert_eq!(snapshot(&mut con), before);
    // Deducted without a hold: 1, and the entries stay deducted.
    assert_eq!(placed(&mut con, &[(A, 1), (B, 1)], "o2", &[]), [8, 7]);
    assert_eq!(int(cart_confirm(&mut con, &[A, B], "o2")), 1);
    assert_eq!(state(&mut con, A, "o2"), "deducted");
    // One item confirmed alone first: 1 for the whole cart.
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 1)], "o3", &["HOLD", LONG_HOLD]),
        [7, 6]
    );
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", A, "o3"])), 1);
    assert_eq!(int(cart_confirm(&mut con, &[A, B], "o3")), 1);
    assert_eq!(state(&mut con, B, "o3"), "confirmed");
    // No stock knows the id (or no key exists): 0.
    let before = snapshot(&mut con);
    assert_eq!(int(cart_confirm(&mut con, &[A, B, C], "unknown")), 0);
    assert_eq!(
        int(cart_confirm(
            &mut con,
            &["{sale}:missing", "{sale}:gone"],
            "o1"
        )),
        0
    );
    assert_eq!(snapshot(&mut con), before);
    // An item refunded: REFUNDED, nothing confirmed.
    assert_eq!(
        placed(
            &mut con,
            &[(A, 1), (B, 1), (C, 1)],
            "o4",
            &["HOLD", LONG_HOLD]
        ),
        [6, 5, 6]
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", C, "o4"])), 1);
    refused(
        &mut con,
        &keys_args("STOCK.CART.CONFIRM", &[A, B, C], "o4"),
        &refunded("o4"),
    );
    assert_eq!(state(&mut con, A, "o4"), "held");
    // The holds expired: EXPIRED at their one deadline, nothing confirmed.
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 1)], "o5", &["HOLD", "100"]),
        [5, 4]
    );
    let deadline = detail(&mut con, A, "o5")
        .and_then(|d| d.deadline)
        .expect("deadline");
    wait_expired(&mut con, &[A, B], "o5", 2);
    refused(
        &mut con,
        &keys_args("STOCK.CART.CONFIRM", &[A, B], "o5"),
        &expired("o5", u64::try_from(deadline).unwrap()),
    );
    // One item confirmed alone, the other expired: EXPIRED, and nothing changes (the first
    // stays confirmed); a refund then returns the confirmed units only.
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 1)], "o6", &["HOLD", "200"]),
        [5, 4]
    );
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", A, "o6"])), 1);
    let deadline = detail(&mut con, B, "o6")
        .and_then(|d| d.deadline)
        .expect("deadline");
    wait_expired(&mut con, &[B], "o6", 3);
    refused(
        &mut con,
        &keys_args("STOCK.CART.CONFIRM", &[A, B], "o6"),
        &expired("o6", u64::try_from(deadline).unwrap()),
    );
    assert_eq!(state(&mut con, A, "o6"), "confirmed");
    assert_eq!(ints(cart_refund(&mut con, &[A, B], "o6")), [1, 0]);
    // Printable ids in the error.
    let odd = "o\n6'";
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 1)], odd, &["HOLD", LONG_HOLD]),
        [5, 4]
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", A, odd])), 1);
    refused(
        &mut con,
        &keys_args("STOCK.CART.CONFIRM", &[A, B], odd),
        &refunded(&printable(odd.as_bytes())),
    );
}

#[test]
fn the_holds_of_a_cart_expire_together_and_every_unit_comes_back() {
    let s = server();
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 10);
    }
    assert_eq!(
        placed(
            &mut con,
            &[(A, 1), (B, 2), (C, 3)],
            "o",
            &["BUYER", "u", "HOLD", "300", "EVENTS", ORDERS]
        ),
        [9, 8, 7]
    );
    let deadlines: Vec<Option<i64>> = [A, B, C]
        .iter()
        .map(|k| detail(&mut con, k, "o").and_then(|d| d.deadline))
        .collect();
    assert!(deadlines[0].is_some() && deadlines.iter().all(|d| *d == deadlines[0]));
    wait_expired(&mut con, &[A, B, C], "o", 3);
    for key in [A, B, C] {
        let i = sinfo(&mut con, key);
        assert_eq!(
            (i["available"], i["deducted"], i["held"], i["next-deadline"]),
            (10, 0, 0, 0),
            "{key}: {i:?}"
        );
        assert_eq!(int(call(&mut con, &["STOCK.BUYER", key, "u"])), 0);
    }
    // One expire entry per stock, with the id and what came back.
    let expires: Vec<(String, String, String)> = xrange(&mut con, ORDERS)
        .iter()
        .filter(|e| e.get("type") == Some("expire"))
        .map(|e| {
            (
                e.get("sku").unwrap_or("").to_string(),
                e.get("id").unwrap_or("").to_string(),
                e.get("quantity").unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut expires = expires;
    expires.sort();
    let mut want: Vec<(String, String, String)> = [(A, "1"), (B, "2"), (C, "3")]
        .iter()
        .map(|(k, q)| (k.to_string(), "o".to_string(), q.to_string()))
        .collect();
    want.sort();
    assert_eq!(expires, want);
    // The cart cannot be confirmed now; a refund returns nothing; a replay takes nothing.
    let confirm = err(cart_confirm(&mut con, &[A, B, C], "o"));
    assert!(begins_with(&confirm, code::EXPIRED), "{confirm}");
    assert_eq!(ints(cart_refund(&mut con, &[A, B, C], "o")), [0, 0, 0]);
    assert_eq!(
        placed(&mut con, &[(A, 1), (B, 2), (C, 3)], "o", &["HOLD", "300"]),
        [10, 10, 10]
    );
}

/// A channel no keyevent uses: its message, published after the actions, is the last one.
const END_OF_EVENTS: &str = "fence-test:end-of-events";

/// Every keyevent message the actions caused, in order (read up to a message published after
/// the actions, so no time window can cut them short).
fn keyevents(server: &Server, actions: impl FnOnce(&mut Connection)) -> Vec<(String, String)> {
    let mut sub = server.conn();
    let mut ps = sub.as_pubsub();
    ps.psubscribe("__keyevent@0__:*").expect("psubscribe");
    ps.subscribe(END_OF_EVENTS).expect("subscribe");
    let mut con = server.conn();
    actions(&mut con);
    assert_eq!(int(call(&mut con, &["PUBLISH", END_OF_EVENTS, "."])), 1);
    let mut seen = Vec::new();
    loop {
        let msg = ps
            .get_message()
            .expect("a keyevent or the end-of-events message");
        let channel = msg.get_channel_name().to_string();
        if channel == END_OF_EVENTS {
            return seen;
        }
        let event = channel.rsplit(':').next().unwrap_or_default().to_string();
        let key: String = msg.get_payload().unwrap_or_default();
        seen.push((event, key));
    }
}

/// The README's keyspace events, for each item of a cart: `stock.deduct` per item (a
/// `stock.soldout` after it for a stock the cart emptied), `stock.refund` per item a cart
/// refund gave units back, `stock.confirm` per hold a cart confirmation confirmed; nothing for
/// replays, refusals and repeats.
#[test]
fn keyspace_events_are_sent_for_every_item() {
    let s = Server::start_with(&["--notify-keyspace-events", "Ed"]);
    let mut con = s.conn();
    set(&mut con, A, 10);
    set(&mut con, B, 2);
    set(&mut con, C, 10);
    let seen = keyevents(&s, |con| {
        placed(con, &[(A, 1), (B, 2), (C, 1)], "o1", &["HOLD", LONG_HOLD]);
        placed(con, &[(A, 1), (B, 2), (C, 1)], "o1", &[]);
        assert_err(cart(con, &[(A, 1), (B, 1)], "o2", &[]), code::SOLDOUT);
    });
    let ev = |e: &str, k: &str| (e.to_string(), k.to_string());
    let deducts: Vec<(String, String)> = seen
        .iter()
        .filter(|(e, _)| e == "stock.deduct")
        .cloned()
        .collect();
    assert_eq!(
        deducts,
        [
            ev("stock.deduct", A),
            ev("stock.deduct", B),
            ev("stock.deduct", C)
        ],
        "{seen:?}"
    );
    let soldout = seen.iter().position(|x| *x == ev("stock.soldout", B));
    let b_deduct = seen.iter().position(|x| *x == ev("stock.deduct", B));
    assert!(
        matches!((b_deduct, soldout), (Some(d), Some(s)) if s > d),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 4, "{seen:?}");
    let seen = keyevents(&s, |con| {
        assert_eq!(int(cart_confirm(con, &[A, B, C], "o1")), 1);
        assert_eq!(int(cart_confirm(con, &[A, B, C], "o1")), 1);
        assert_eq!(int(call(con, &["STOCK.REFUND", B, "o1"])), 2);
        assert_eq!(ints(cart_refund(con, &[A, B, C], "o1")), [1, 0, 1]);
        assert_eq!(ints(cart_refund(con, &[A, B, C], "o1")), [0, 0, 0]);
    });
    assert_eq!(
        seen,
        [
            ev("stock.confirm", A),
            ev("stock.confirm", B),
            ev("stock.confirm", C),
            ev("stock.refund", B),
            ev("stock.refund", A),
            ev("stock.refund", C),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Keys declared to Redis: COMMAND GETKEYS, ACL
// ---------------------------------------------------------------------------------------------

fn getkeys(con: &mut Connection, args: &[&str]) -> RedisResult<Value> {
    let mut full = vec!["COMMAND", "GETKEYS"];
    full.extend_from_slice(args);
    call(con, &full)
}

#[test]
fn command_getkeys_names_every_key_of_every_cart_form() {
    let s = server();
    let mut con = s.conn();
    let forms: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["STOCK.CART", "1", "a", "1", "ID", "x"], vec!["a"]),
        (
            vec![
                "STOCK.CART",
                "3",
                "a",
                "1",
                "b",
                "2",
                "c",
                "3",
                "ID",
                "x",
                "BUYER",
                "u",
                "HOLD",
                "5",
                "FENCE",
                "1",
            ],
            vec!["a", "b", "c"],
        ),
        (
            vec![
                "STOCK.CART",
                "2",
                "a",
                "1",
                "b",
                "1",
                "ID",
                "x",
                "EVENTS",
                "s",
            ],
            vec!["a", "b", "s"],
        ),
        (
            vec![
                "stock.cart",
                "2",
                "a",
                "1",
                "b",
                "1",
                "events",
                "s",
                "MAXLEN",
                "~",
                "5",
                "ID",
                "x",
            ],
            vec!["a", "b", "s"],
        ),
        // Values that look like keywords are values; keys that look like them are keys.
        (vec!["STOCK.CART", "1", "a", "1", "ID", "EVENTS"], vec!["a"]),
        (
            vec!["STOCK.CART", "1", "a", "1", "ID", "EVENTS", "EVENTS", "s"],
            vec!["a", "s"],
        ),
        (
            vec!["STOCK.CART", "1", "EVENTS", "1", "ID", "x", "EVENTS", "s"],
            vec!["EVENTS", "s"],
        ),
        (
            vec!["STOCK.CART", "2", "ID", "1", "a", "1", "ID", "x"],
            vec!["ID", "a"],
        ),
        (vec!["STOCK.CART.REFUND", "1", "a", "x"], vec!["a"]),
        (
            vec!["STOCK.CART.REFUND", "2", "a", "b", "x", "EVENTS", "s"],
            vec!["a", "b", "s"],
        ),
        (
            vec![
                "STOCK.CART.REFUND",
                "1",
                "a",
                "EVENTS",
                "events",
                "s",
                "MAXLEN",
                "~",
                "3",
            ],
            vec!["a", "s"],
        ),
        (vec!["STOCK.CART.REFUND", "1", "a", "EVENTS"], vec!["a"]),
        (
            vec!["STOCK.CART.REFUND", "3", "a", "b", "c", "x"],
            vec!["a", "b", "c"],
        ),
        (vec!["STOCK.CART.CONFIRM", "1", "a", "x"], vec!["a"]),
        (
            vec!["STOCK.CART.CONFIRM", "2", "a", "b", "x"],
            vec!["a", "b"],
        ),
    ];
    for (args, keys) in &forms {
        match getkeys(&mut con, args) {
            Ok(Value::Array(items)) => {
                let got: Vec<String> = items.iter().map(text).collect();
                assert_eq!(got, *keys, "COMMAND GETKEYS {args:?}");
            }
            other => panic!("COMMAND GETKEYS {args:?}: {}", describe(&other)),
        }
    }
    // 256 keys.
    let many: Vec<String> = (0..256).map(|i| format!("k{i}")).collect();
    let mut args = vec!["STOCK.CART", "256"];
    for k in &many {
        args.extend([k.as_str(), "1"]);
    }
    args.extend(["ID", "x"]);
    let Ok(Value::Array(items)) = getkeys(&mut con, &args) else {
        panic!("COMMAND GETKEYS of 256 items");
    };
    assert_eq!(items.iter().map(text).collect::<Vec<_>>(), many);
    // COMMAND INFO says the keys move.
    for name in ["STOCK.CART", "STOCK.CART.REFUND", "STOCK.CART.CONFIRM"] {
        let info = format!("{:?}", call(&mut con, &["COMMAND", "INFO", name]));
        assert!(info.contains("movablekeys"), "{name}: {info}");
    }
}

#[test]
fn garbage_numkeys_in_command_getkeys_never_crashes_the_server() {
    let mut s = server();
    let mut con = s.conn();
    let numkeys = [
        "0",
        "-1",
        "1",
        "2",
        "3",
        "4",
        "5",
        "255",
        "256",
        "257",
        "2147483647",
        "2147483648",
        "4294967297",
        "-2147483648",
        I64_MAX,
        "-9223372036854775808",
        TWO_POW_63,
        "99999999999999999999",
        "x",
        "",
        " 1",
        "1.5",
        "0x2",
    ];
    let mut checked = 0;
    for n in numkeys {
        let mut forms: Vec<Vec<&str>> = vec![
            vec!["STOCK.CART", n, "a", "1", "ID", "x"],
            vec![
                "STOCK.CART",
                n,
                "a",
                "1",
                "b",
                "1",
                "ID",
                "x",
                "EVENTS",
                "s",
            ],
            vec!["STOCK.CART", n, "a", "1", "ID", "x", "EVENTS"],
            vec!["STOCK.CART", n, "a", "ID", "x", "EVENTS", "s", "MAXLEN"],
            vec!["STOCK.CART.REFUND", n, "a", "x"],
            vec!["STOCK.CART.REFUND", n, "a", "b", "c", "d", "e"],
            vec!["STOCK.CART.CONFIRM", n, "a", "x"],
            vec!["STOCK.CART.CONFIRM", n, "a", "b"],
        ];
        forms.push(vec![
            "STOCK.CART",
            n,
            "EVENTS",
            "EVENTS",
            "EVENTS",
            "EVENTS",
        ]);
        for args in forms {
            for sub in ["GETKEYS", "GETKEYSANDFLAGS"] {
                let mut full = vec!["COMMAND", sub];
                full.extend_from_slice(&args);
                match call(&mut con, &full) {
                    // Whatever it names must be words of the call after numkeys.
                    Ok(Value::Array(items)) => {
                        for item in &items {
                            let key = match item {
                                Value::Array(pair) => text(&pair[0]),
                                v => text(v),
                            };
                            assert!(
                                args[2..].contains(&key.as_str()),
                                "COMMAND {sub} {args:?} named {key:?}"
                            );
                        }
                    }
                    Err(e) if e.code().is_some() => {}
                    other => panic!("COMMAND {sub} {args:?}: {}", describe(&other)),
                }
                checked += 1;
            }
        }
        // The real commands refuse the same garbage without crashing either.
        let _ = call(&mut con, &["STOCK.CART", n, "a", "1", "ID", "x"]);
        let _ = call(&mut con, &["STOCK.CART.REFUND", n, "a", "x"]);
        let _ = call(&mut con, &["STOCK.CART.CONFIRM", n, "a", "x"]);
        assert_eq!(simple(call(&mut con, &["PING"])), "PONG");
    }
    s.assert_alive();
    println!("carts: {checked} COMMAND GETKEYS calls with garbage numkeys, server alive");
}

#[test]
fn acl_key_patterns_apply_to_every_key_of_a_cart() {
    let s = server();
    let mut admin = s.conn();
    let (x, y, out) = ("{a}x", "{a}y", "b");
    for key in [x, y, out] {
        set(&mut admin, key, 10);
    }
    okay(call(
        &mut admin,
        &["ACL", "SETUSER", "shop", "on", ">pw", "~{a}*", "+@all"],
    ));
    okay(call(
        &mut admin,
        &["ACL", "SETUSER", "reader", "on", ">pw", "%R~{a}*", "+@all"],
    ));
    let mut shop = s.conn();
    okay(call(&mut shop, &["AUTH", "shop", "pw"]));
    assert_eq!(
        placed(
            &mut shop,
            &[(x, 1), (y, 1)],
            "o1",
            &["EVENTS", "{a}:orders"]
        ),
        [9, 9]
    );
    let before = snapshot(&mut admin);
    for args in [
        cart_args(&[(x, 1), (out, 1)], "o2", &[]),
        cart_args(&[(out, 1), (x, 1)], "o2", &[]),
        cart_args(&[(x, 1), (y, 1)], "o2", &["EVENTS", "orders"]),
        keys_args("STOCK.CART.REFUND", &[x, y, out], "o1"),
        {
            let mut args = keys_args("STOCK.CART.REFUND", &[x, y], "o1");
            args.extend(owned(&["EVENTS", "orders"]));
            args
        },
        keys_args("STOCK.CART.CONFIRM", &[out, x], "o1"),
    ] {
        assert_err_ctx(run(&mut shop, &args), "NOPERM", format!("{args:?}"));
        assert_eq!(snapshot(&mut admin), before, "{args:?}");
    }
    // A user who may only read the keys may not run a cart on them.
    let mut reader = s.conn();
    okay(call(&mut reader, &["AUTH", "reader", "pw"]));
    for args in [
        cart_args(&[(x, 1)], "o3", &[]),
        keys_args("STOCK.CART.REFUND", &[x, y], "o1"),
        keys_args("STOCK.CART.CONFIRM", &[x, y], "o1"),
    ] {
        assert_err_ctx(run(&mut reader, &args), "NOPERM", format!("{args:?}"));
        assert_eq!(snapshot(&mut admin), before, "{args:?}");
    }
    assert_eq!(int(call(&mut reader, &["STOCK.REQUEST", x, "o1"])), 1);
    assert_eq!(int(cart_confirm(&mut shop, &[x, y], "o1")), 1);
    let mut args = keys_args("STOCK.CART.REFUND", &[x, y], "o1");
    args.extend(owned(&["EVENTS", "{a}:orders"]));
    assert_eq!(ints(run(&mut shop, &args)), [1, 1]);
}

// ---------------------------------------------------------------------------------------------
// Persistence and replication
// ---------------------------------------------------------------------------------------------

/// The carts of `world`, and the keys they were placed on.
const WORLD_KEYS: [&str; 3] = [A, B, C];
const WORLD_IDS: [&str; 6] = [
    "deducted",
    "held",
    "confirmed",
    "refunded",
    "one-refunded",
    "never",
];

/// On A, B and C (new stocks of 100, B with a limit per buyer of 5): a deducted cart, a held
/// one with a buyer and a token, a confirmed one, a refunded one, one with an item refunded
/// alone, all with events.
fn world(con: &mut Connection) {
    set(con, A, 100);
    okay(call(con, &["STOCK.SET", B, "100", "LIMIT", "5"]));
    set(con, C, 100);
    let ev = ["EVENTS", ORDERS];
    placed(
        con,
        &[(A, 1), (B, 1), (C, 1)],
        "deducted",
        &["BUYER", "u", "EVENTS", ORDERS],
    );
    placed(
        con,
        &[(A, 2), (B, 2)],
        "held",
        &[
            "BUYER", "u", "HOLD", LONG_HOLD, "FENCE", "3", "EVENTS", ORDERS,
        ],
    );
    placed(
        con,
        &[(B, 1), (C, 3)],
        "confirmed",
        &["BUYER", "v", "HOLD", LONG_HOLD],
    );
    assert_eq!(int(cart_confirm(con, &[B, C], "confirmed")), 1);
    placed(con, &[(A, 4), (C, 4)], "refunded", &ev);
    assert_eq!(ints(cart_refund(con, &[A, C], "refunded")), [4, 4]);
    placed(
        con,
        &[(A, 1), (B, 1), (C, 1)],
        "one-refunded",
        &["BUYER", "w", "HOLD", LONG_HOLD],
    );
    assert_eq!(int(call(con, &["STOCK.REFUND", B, "one-refunded"])), 1);
}

/// What the world's stocks say: every stock's `STOCK.INFO` and digest, every entry.
fn world_state(con: &mut Connection) -> String {
    let mut out = String::new();
    for key in WORLD_KEYS {
        out.push_str(&format!(
            "{key}: {:?} {}\n",
            sinfo(con, key),
            digest_value(con, key)
        ));
        for id in WORLD_IDS {
            out.push_str(&format!("  {id}: {:?}\n", detail(con, key, id)));
        }
        for who in ["u", "v", "w"] {
            out.push_str(&format!(
                "  buyer {who}: {}\n",
                int(call(con, &["STOCK.BUYER", key, who]))
            ));
        }
    }
    out
}

/// The world's entries as they must be.
#[track_caller]
fn check_world(con: &mut Connection, what: &str) {
    let expect: [(&str, &str, &str, i64); 12] = [
        (A, "deducted", "deducted", 1),
        (B, "deducted", "deducted", 1),
        (C, "deducted", "deducted", 1),
        (A, "held", "held", 2),
        (B, "held", "held", 2),
        (B, "confirmed", "confirmed", 1),
        (C, "confirmed", "confirmed", 3),
        (A, "refunded", "refunded", 4),
        (C, "refunded", "refunded", 4),
        (A, "one-refunded", "held", 1),
        (B, "one-refunded", "refunded", 1),
        (C, "one-refunded", "held", 1),
    ];
    for (key, id, st, q) in expect {
        let d = detail(con, key, id).unwrap_or_else(|| panic!("{what}: {key} has no {id}"));
        assert_eq!(
            (d.state.as_str(), d.quantity),
            (st, q),
            "{what}: {key} {id}"
        );
    }
    let held_a = detail(con, A, "held").and_then(|d| d.deadline);
    assert!(held_a.is_some(), "{what}: no deadline");
    assert_eq!(
        detail(con, B, "held").and_then(|d| d.deadline),
        held_a,
        "{what}"
    );
    assert_eq!(detail(con, C, "held"), None, "{what}");
    for key in WORLD_KEYS {
        assert_eq!(detail(con, key, "never"), None, "{what}");
    }
    let avail: Vec<i64> = WORLD_KEYS.iter().map(|k| available(con, k)).collect();
    assert_eq!(avail, [96, 96, 95], "{what}");
    assert_eq!(sinfo(con, B)["limit"], 5, "{what}");
    assert_eq!(sinfo(con, A)["fence"], 3, "{what}");
}

/// The world still works as carts (on a master): replays, confirmations, refunds. Changes it.
#[track_caller]
fn use_world(con: &mut Connection, what: &str) {
    assert_eq!(
        placed(con, &[(A, 50), (B, 50), (C, 50)], "deducted", &[]),
        [96, 96, 95],
        "{what}"
    );
    assert_eq!(
        err(cart(con, &[(C, 1), (A, 1)], "held", &[])),
        some_only("held", 2, A),
        "{what}"
    );
    assert_eq!(
        err(cart_confirm(con, &[A, B, C], "one-refunded")),
        refunded("one-refunded")
    );
    assert_eq!(int(cart_confirm(con, &[A, B], "held")), 1, "{what}");
    assert_eq!(ints(cart_refund(con, &[A, B], "held")), [2, 2], "{what}");
    assert_eq!(
        ints(cart_refund(con, &[A, B, C], "one-refunded")),
        [1, 0, 1],
        "{what}"
    );
    // B's limit of 5 per buyer: u holds 1 there now.
    assert_eq!(
        err(cart(con, &[(A, 1), (B, 5)], "new", &["BUYER", "u"])),
        refusal(CartCode::Limit, 2, B),
        "{what}"
    );
    assert_eq!(
        placed(con, &[(A, 1), (B, 4)], "new", &["BUYER", "u"]),
        [98, 94],
        "{what}"
    );
}

#[test]
fn debug_reload_an_aof_restart_and_dump_restore_keep_every_cart_entry() {
    let mut s = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let mut con = s.conn();
    world(&mut con);
    check_world(&mut con, "as placed");
    let state = world_state(&mut con);
    let digest = debug_digest(&mut con);
    // DEBUG RELOAD: save and load the RDB.
    okay(call(&mut con, &["DEBUG", "RELOAD"]));
    assert_eq!(world_state(&mut con), state, "DEBUG RELOAD");
    assert_eq!(debug_digest(&mut con), digest, "DEBUG RELOAD");
    // An AOF restart (SIGKILL: only what the AOF holds comes back), before and after a rewrite.
    s.restart();
    let mut con = s.conn();
    assert_eq!(world_state(&mut con), state, "the AOF restart");
    assert_eq!(debug_digest(&mut con), digest, "the AOF restart");
    call(&mut con, &["BGREWRITEAOF"]).expect("BGREWRITEAOF");
    assert!(wait_until(RETURNED, || {
        let p = info(&mut con, "persistence");
        info_value(&p, "aof_rewrite_in_progress").as_deref() == Some("0")
            && info_value(&p, "aof_rewrite_scheduled").as_deref() == Some("0")
    }));
    s.restart();
    let mut con = s.conn();
    assert_eq!(
        world_state(&mut con),
        state,
        "the AOF restart after a rewrite"
    );
    // DUMP and RESTORE of each key, into this server and into another one.
    let payloads: Vec<Vec<u8>> = WORLD_KEYS.iter().map(|k| dump(&mut con, k)).collect();
    int(call(&mut con, &["DEL", A, B, C]));
    for (key, payload) in WORLD_KEYS.iter().zip(&payloads) {
        okay(restore(&mut con, key, 0, payload, &[]));
    }
    assert_eq!(world_state(&mut con), state, "DUMP/RESTORE");
    let other = server();
    let mut o = other.conn();
    for (key, payload) in WORLD_KEYS.iter().zip(&payloads) {
        okay(restore(&mut o, key, 0, payload, &[]));
    }
    assert_eq!(world_state(&mut o), state, "RESTORE into another server");
    check_world(&mut o, "RESTORE into another server");
    use_world(&mut o, "RESTORE into another server");
    // A cart made after all that is kept by the AOF as well.
    check_world(&mut con, "after the restores");
    use_world(&mut con, "after the restores");
    let state = world_state(&mut con);
    s.restart();
    let mut con = s.conn();
    assert_eq!(world_state(&mut con), state, "the last AOF restart");
}

/// Every command of an AOF (plain RESP), in order; a command cut off at the end is left out.
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
    let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .expect("appendonlydir")
        .map(|e| e.expect("a directory entry").path())
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
        .flat_map(|(_, p)| aof_commands(&std::fs::read(p).expect("read the AOF")))
        .collect()
}

/// The README: "Replicas and the AOF get every item's effect in one `MULTI`/`EXEC`". In the
/// AOF, each cart, cart refund and cart confirmation is one transaction holding the effect of
/// every item (and, with `EVENTS`, every entry), and no effect of a cart's id stands alone.
#[test]
fn the_aof_holds_each_cart_command_in_one_transaction() {
    let s = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let mut con = s.conn();
    for key in [A, B, C] {
        set(&mut con, key, 100);
    }
    set(&mut con, "{sale}:last", 1);
    placed(&mut con, &[(A, 1), (B, 2), (C, 3)], "c1", &[]);
    let last = [(A, 1), (B, 1), ("{sale}:last", 1)];
    let opts = [
        "HOLD", LONG_HOLD, "BUYER", "u", "FENCE", "4", "EVENTS", ORDERS,
    ];
    placed(&mut con, &last, "c2", &opts);
    let mut refund = keys_args("STOCK.CART.REFUND", &[A, B, C], "c1");
    refund.extend(owned(&["EVENTS", ORDERS]));
    assert_eq!(ints(run(&mut con, &refund)), [1, 2, 3]);
    assert_eq!(int(cart_confirm(&mut con, &[A, B, "{sale}:last"], "c2")), 1);
    // Refused carts and replays write nothing.
    placed(&mut con, &last, "c2", &opts);
    assert_err(
        cart(&mut con, &[(A, 1), (C, 1000)], "c3", &["EVENTS", ORDERS]),
        code::SOLDOUT,
    );
    let commands = incr_aof(&s);
    // The transactions, and the effects outside any.
    let mut blocks: Vec<Vec<&Vec<String>>> = Vec::new();
    let mut open: Option<Vec<&Vec<String>>> = None;
    for c in &commands {
        match c[0].to_ascii_uppercase().as_str() {
            "MULTI" => {
                assert!(open.is_none(), "nested MULTI in the AOF");
                open = Some(Vec::new());
            }
            "EXEC" => blocks.push(open.take().expect("EXEC without MULTI")),
            _ => match &mut open {
                Some(b) => b.push(c),
                None => assert!(
                    !c.iter().any(|w| w == "c1" || w == "c2" || w == "c3")
                        && !c[0].eq_ignore_ascii_case("XADD"),
                    "{c:?} outside a transaction in the AOF:\n{commands:?}"
                ),
            },
        }
    }
    assert!(open.is_none(), "a transaction left open");
    // The keys whose effects name each id, one set per transaction, in order.
    let keys_of = |id: &str| -> Vec<Vec<String>> {
        blocks
            .iter()
            .filter(|b| b.iter().any(|c| c.iter().any(|w| w == id)))
            .map(|b| {
                let mut keys: Vec<String> = b
                    .iter()
                    .filter(|c| c[0].starts_with("FENCE.") && c.iter().any(|w| w == id))
                    .map(|c| c[1].clone())
                    .collect();
                keys.sort();
                keys
            })
            .collect()
    };
    let mut abc: Vec<String> = [A, B, C].iter().map(|k| k.to_string()).collect();
    abc.sort();
    let mut ab_last: Vec<String> = [A, B, "{sale}:last"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    ab_last.sort();
    assert_eq!(
        keys_of("c1"),
        [abc.clone(), abc],
        "c1: the cart, its refund\n{commands:?}"
    );
    assert_eq!(
        keys_of("c2"),
        [ab_last.clone(), ab_last],
        "c2: the cart, its confirmation\n{commands:?}"
    );
    assert!(
        keys_of("c3").is_empty(),
        "a refused cart wrote {:?}",
        keys_of("c3")
    );
    // c2's transaction holds its three deduct entries and the soldout entry.
    let c2 = blocks
        .iter()
        .find(|b| b.iter().any(|c| c.iter().any(|w| w == "c2")))
        .expect("c2's transaction");
    let xadds: Vec<&&Vec<String>> = c2
        .iter()
        .filter(|c| c[0].eq_ignore_ascii_case("XADD"))
        .collect();
    assert_eq!(xadds.len(), 4, "{c2:?}");
    // c1's refund holds its three refund entries.
    let c1_refund = blocks
        .iter()
        .filter(|b| b.iter().any(|c| c.iter().any(|w| w == "c1")))
        .nth(1)
        .expect("c1's refund");
    let xadds = c1_refund
        .iter()
        .filter(|c| c[0].eq_ignore_ascii_case("XADD") && c.iter().any(|w| w == "refund"))
        .count();
    assert_eq!(xadds, 3, "{c1_refund:?}");
    // The AOF loads back to the same data.
    let before = debug_digest(&mut con);
    let mut s = s;
    s.restart();
    let mut con = s.conn();
    assert_eq!(debug_digest(&mut con), before);
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

/// Master and replica hold the same data: keys, digests, every stock and stream.
#[track_caller]
fn assert_same(master: &Server, replica: &Server, what: &str) {
    wait_for_sync(master, replica, SYNC);
    let mut m = master.conn();
    let mut r = replica.conn();
    assert_eq!(all_keys(&mut r), all_keys(&mut m), "{what}");
    assert_eq!(
        debug_digest(&mut r),
        debug_digest(&mut m),
        "{what}: DEBUG DIGEST"
    );
    assert_eq!(snapshot(&mut r), snapshot(&mut m), "{what}");
    assert_eq!(world_state(&mut r), world_state(&mut m), "{what}");
    assert_eq!(
        xrange(&mut r, ORDERS),
        xrange(&mut m, ORDERS),
        "{what}: XRANGE"
    );
    let errors = replication_errors(&replica.log());
    assert!(errors.is_empty(), "{what}: {errors:?}");
}

#[test]
fn a_replica_gets_every_cart_whole() {
    let master = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let replica = start_replica(&master);
    wait_for_sync(&master, &replica, SYNC);
    let mut m = master.conn();
    // Carts streamed to an attached replica.
    world(&mut m);
    assert_same(&master, &replica, "streamed");
    let mut r = replica.conn();
    check_world(&mut r, "the replica");
    // A replica attached afterwards (a full sync).
    let late = start_replica(&master);
    assert_same(&master, &late, "full sync");
    // Refused carts, then the rest of the contract on the master, replicated.
    assert_err(
        cart(&mut m, &[(A, 1), (C, 1000)], "refused", &["EVENTS", ORDERS]),
        code::SOLDOUT,
    );
    assert_err(
        cart(&mut m, &[(A, 1), ("{sale}:missing", 1)], "refused", &[]),
        code::NOKEY,
    );
    use_world(&mut m, "the master");
    placed(
        &mut m,
        &[(A, 1), (C, 1)],
        "short",
        &["HOLD", "100", "EVENTS", ORDERS],
    );
    wait_expired(&mut m, &[A, C], "short", 2);
    assert_same(&master, &replica, "after the contract and an expiry");
    assert_same(&master, &late, "after the contract and an expiry");
    let mut r = replica.conn();
    for key in [A, C] {
        assert_eq!(
            state(&mut r, key, "short"),
            "expired",
            "{key} on the replica"
        );
    }
    // A replica refuses carts (it is read-only).
    for args in [
        cart_args(&[(A, 1)], "on-replica", &[]),
        keys_args("STOCK.CART.REFUND", &[A], "deducted"),
        keys_args("STOCK.CART.CONFIRM", &[A], "deducted"),
    ] {
        assert_err_ctx(run(&mut r, &args), "READONLY", format!("{args:?}"));
    }
}

/// More holds due at once than one command returns, the buyer's own among the rest: they come
/// back before anything is decided and before the call's stream is opened. So a cart refused
/// afterwards (its stream full) leaves the master and its replica alike, and a stream the
/// buyer's expiry recreates (after a DEL) takes the cart's events after the expiry's, with no
/// second handle on it (which crashed the server). Each case in one MULTI, so the timer cannot
/// return a hold before the cart finds it due.
#[test]
fn a_buyer_s_due_holds_come_back_before_the_cart_is_decided_on_master_and_replica() {
    let master = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let replica = start_replica(&master);
    wait_for_sync(&master, &replica, SYNC);
    let mut m = master.conn();
    let run = |m: &mut Connection, stock: &str, stream: &str, prepare: &[&str]| {
        okay(call(m, &["STOCK.SET", stock, "5000", "LIMIT", "1"]));
        okay(call(m, &["MULTI"]));
        for i in 0..1_100 {
            let (id, buyer) = (format!("o{i}"), format!("b{i}"));
            call(
                m,
                &[
                    "STOCK.DEDUCT",
                    stock,
                    "1",
                    "ID",
                    &id,
                    "BUYER",
                    &buyer,
                    "HOLD",
                    "100",
                ],
            )
            .expect("QUEUED");
        }
        call(
            m,
            &[
                "STOCK.DEDUCT",
                stock,
                "1",
                "ID",
                "u1",
                "BUYER",
                "u",
                "HOLD",
                "100",
                "EVENTS",
                stream,
            ],
        )
        .expect("QUEUED");
        call(m, prepare).expect("QUEUED");
        call(m, &["DEBUG", "SLEEP", "0.3"]).expect("QUEUED");
        call(
            m,
            &[
                "STOCK.CART",
                "1",
                stock,
                "1",
                "ID",
                "u2",
                "BUYER",
                "u",
                "EVENTS",
                stream,
            ],
        )
        .expect("QUEUED");
        call(m, &["STOCK.BUYER", stock, "u"]).expect("QUEUED");
        call(m, &["EXEC"])
    };
    // The cart's stream is at its last id: the cart is refused, u's hold came back all the same.
    let replies = run(
        &mut m,
        "{b}:full",
        "{b}:ev-full",
        &[
            "XADD",
            "{b}:ev-full",
            "18446744073709551615-18446744073709551615",
            "f",
            "v",
        ],
    );
    // (The client reports the transaction's one error reply, the cart's.)
    let refused = replies.expect_err("the cart is refused");
    assert!(refused.to_string().contains("exhausted"), "{refused}");
    assert_eq!(
        state(&mut m, "{b}:full", "u1"),
        "expired",
        "u's due hold is back"
    );
    assert_eq!(int(call(&mut m, &["STOCK.BUYER", "{b}:full", "u"])), 0);
    assert_eq!(
        call(&mut m, &["STOCK.REQUEST", "{b}:full", "u2"]),
        Ok(Value::Nil)
    );
    // The cart's stream was deleted: u's expiry recreates it, then the cart adds to it.
    let Ok(Value::Array(replies)) = run(&mut m, "{b}:gone", "{b}:ev-gone", &["DEL", "{b}:ev-gone"])
    else {
        panic!("EXEC")
    };
    let tail = &replies[replies.len() - 2..];
    assert!(matches!(&tail[0], Value::Array(_)), "{:?}", tail[0]);
    assert_eq!(tail[1], Value::Int(1), "u bought again");
    let Ok(Value::Array(entries)) = call(&mut m, &["XRANGE", "{b}:ev-gone", "-", "+"]) else {
        panic!("XRANGE")
    };
    let types: Vec<String> = entries
        .iter()
        .filter_map(|e| match e {
            Value::Array(parts) => match parts.get(1) {
                Some(Value::Array(fields)) => fields.get(1).map(text),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(types, vec!["expire".to_string(), "deduct".to_string()]);
    call(&mut m, &["PING"]).expect("the server is alive");
    // The replica applied exactly what the master did.
    assert!(wait_until(SYNC, || {
        let mut r = replica.conn();
        let held = |c: &mut Connection, k: &str| sinfo(c, k)["held"];
        held(&mut m, "{b}:full") == 0
            && held(&mut r, "{b}:full") == 0
            && held(&mut m, "{b}:gone") == 0
            && held(&mut r, "{b}:gone") == 0
    }));
    wait_for_sync(&master, &replica, SYNC);
    let mut r = replica.conn();
    assert_eq!(all_keys(&mut r), all_keys(&mut m));
    assert_eq!(debug_digest(&mut r), debug_digest(&mut m), "DEBUG DIGEST");
    for key in ["{b}:full", "{b}:gone"] {
        assert_eq!(sinfo(&mut r, key), sinfo(&mut m, key), "{key}");
    }
    let errors = replication_errors(&replica.log());
    assert!(errors.is_empty(), "{errors:?}");
}
