//! Purchase limits per buyer, as the README's command reference (`STOCK.SET … LIMIT`,
//! `STOCK.LIMIT`, `STOCK.DEDUCT … BUYER`, `STOCK.REQUEST … DETAIL`, `STOCK.BUYER`,
//! `STOCK.INFO`), its Errors table and its "Purchase limits per buyer" section state them:
//! every reply and error; the order of the checks (arguments, `FENCE`, `ID`, `LIMIT`,
//! quantity); what a buyer holds (deducted, held and confirmed entries; a refund and an expired
//! hold give the allowance back); the bounds (`fence.max-buyers`, `fence.max-id-length`, at most
//! 16 option words); the event, the keyspace event and `INFO fence`; limits, buyers and each
//! entry's buyer kept by `DEBUG RELOAD`, the AOF (with and without its rewrite), `DUMP`/`RESTORE`,
//! `COPY`, `MIGRATE` and a replica; and many buyers racing with retries and refunds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::Duration;

use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::{Connection, RedisResult, Value};

/// How long a hold's return may take here (a generous bound on a loaded machine).
const RETURNED: Duration = Duration::from_secs(15);
/// How long a replica may take to catch up.
const SYNC: Duration = Duration::from_secs(20);
/// A hold that never ends during a test.
const LONG_HOLD: &str = "600000";

fn server() -> Server {
    Server::start_with(&["--enable-debug-command", "yes"])
}

// ---------------------------------------------------------------------------------------------
// Helpers
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

/// What `STOCK.REQUEST key id DETAIL` says of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Detail {
    state: String,
    quantity: i64,
    deadline: Option<i64>,
    buyer: Option<String>,
}

impl Detail {
    /// Whether the entry still holds its units.
    fn holds(&self) -> bool {
        matches!(self.state.as_str(), "deducted" | "held" | "confirmed")
    }
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
    let fields = pairs(v);
    let mut d = Detail {
        state: String::new(),
        quantity: -1,
        deadline: None,
        buyer: None,
    };
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    for (k, v) in &fields {
        match (k.as_str(), v) {
            ("state", v) => d.state = text(v),
            ("quantity", Value::Int(n)) => d.quantity = *n,
            ("deadline", Value::Int(n)) => d.deadline = Some(*n),
            ("buyer", v) => d.buyer = Some(text(v)),
            _ => panic!("STOCK.REQUEST {key} {id} DETAIL: unexpected field {k} = {v:?}"),
        }
    }
    assert!(
        names.len() >= 2 && names[0] == "state" && names[1] == "quantity",
        "STOCK.REQUEST {key} {id} DETAIL: fields {names:?}"
    );
    Some(d)
}

/// `STOCK.BUYER key buyer`: Some(units), None for nil.
#[track_caller]
fn buyer(con: &mut Connection, key: &str, who: &str) -> Option<i64> {
    match call(con, &["STOCK.BUYER", key, who]) {
        Ok(Value::Int(n)) => Some(n),
        Ok(Value::Nil) => None,
        other => panic!("STOCK.BUYER {key} {who}: {}", describe(&other)),
    }
}

/// `STOCK.BUYER` that must be an integer.
#[track_caller]
fn units(con: &mut Connection, key: &str, who: &str) -> i64 {
    buyer(con, key, who).unwrap_or_else(|| panic!("STOCK.BUYER {key} {who}: nil"))
}

/// `STOCK.DEDUCT key quantity ID id BUYER who [rest...]`.
fn buy(con: &mut Connection, key: &str, q: i64, id: &str, who: &str) -> RedisResult<Value> {
    call(
        con,
        &["STOCK.DEDUCT", key, &q.to_string(), "ID", id, "BUYER", who],
    )
}

/// A `STOCK.DEDUCT … BUYER` that must succeed: the remaining quantity.
#[track_caller]
fn bought(con: &mut Connection, key: &str, q: i64, id: &str, who: &str) -> i64 {
    int(buy(con, key, q, id, who))
}

/// A `STOCK.DEDUCT … BUYER … HOLD ms` that must succeed.
#[track_caller]
fn held(con: &mut Connection, key: &str, q: i64, id: &str, who: &str, ms: &str) -> i64 {
    int(call(
        con,
        &[
            "STOCK.DEDUCT",
            key,
            &q.to_string(),
            "ID",
            id,
            "BUYER",
            who,
            "HOLD",
            ms,
        ],
    ))
}

fn fence_counter(con: &mut Connection, name: &str) -> i64 {
    info_int(con, "fence", &format!("fence_{name}"))
}

/// Waits until the hold `id` of `key` shows `expired` (STOCK.REQUEST) and this server has
/// applied `n` expiries in all (so that its data no longer changes by itself).
#[track_caller]
fn wait_expired(con: &mut Connection, key: &str, id: &str, n: i64) {
    let mut last = (String::new(), 0);
    let done = wait_until(RETURNED, || {
        let state = detail(con, key, id).map(|d| d.state).unwrap_or_default();
        last = (state, fence_counter(con, "holds_expired"));
        last.0 == "expired" && last.1 >= n
    });
    assert!(
        done,
        "{key} {id}: state {:?}, {} holds returned after {RETURNED:?}",
        last.0, last.1
    );
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

/// Asserts a refusal with exactly `expected` that changes nothing (`DEBUG DIGEST`).
#[track_caller]
fn refused(con: &mut Connection, args: &[&str], expected: &str) {
    let before = debug_digest(con);
    let reply = call(con, args);
    assert_eq!(
        err(reply),
        expected,
        "{args:?}: expected the refusal {expected:?}"
    );
    assert_eq!(debug_digest(con), before, "{args:?} changed the data");
}

/// The units each buyer holds, read from the ledger: the sum of the quantities of their entries
/// that still hold units.
fn ledger_units(con: &mut Connection, key: &str, ids: &[String]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for id in ids {
        if let Some(d) = detail(con, key, id) {
            if let (true, Some(b)) = (d.holds(), d.buyer) {
                *out.entry(b).or_default() += d.quantity;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A sale with every kind of entry, for the persistence and movement tests
// ---------------------------------------------------------------------------------------------

/// The buyers of `sale` and what each holds at its end (`nobody` never bought).
const SALE_BUYERS: [(&str, i64); 7] = [
    ("alice", 2),
    ("bob", 2),
    ("carol", 0),
    ("dave", 0),
    ("eve:ü", 1),
    ("frank", 1),
    ("nobody", 0),
];
/// The request ids of `sale`.
const SALE_IDS: [&str; 9] = [
    "anon-1", "a-1", "b-1", "b-2", "c-1", "d-1", "e-1", "f-1", "never",
];

/// On `key` (a new stock of 100): a deduction without a buyer, alice 2 deducted, bob 1 held
/// and 1 confirmed, carol 3 refunded, dave 1 held and expired, then a limit of 3, eve 1 and
/// frank 1 held. `expired_before` is how many holds this server had returned before (dave's
/// is waited for).
fn sale(con: &mut Connection, key: &str, expired_before: i64) {
    okay(call(con, &["STOCK.SET", key, "100"]));
    assert_eq!(
        int(call(con, &["STOCK.DEDUCT", key, "1", "ID", "anon-1"])),
        99
    );
    assert_eq!(bought(con, key, 2, "a-1", "alice"), 97);
    assert_eq!(held(con, key, 1, "b-1", "bob", LONG_HOLD), 96);
    assert_eq!(held(con, key, 1, "b-2", "bob", LONG_HOLD), 95);
    assert_eq!(int(call(con, &["STOCK.CONFIRM", key, "b-2"])), 1);
    assert_eq!(bought(con, key, 3, "c-1", "carol"), 92);
    assert_eq!(int(call(con, &["STOCK.REFUND", key, "c-1"])), 3);
    assert_eq!(held(con, key, 1, "d-1", "dave", "100"), 94);
    wait_expired(con, key, "d-1", expired_before + 1);
    assert_eq!(int(call(con, &["STOCK.LIMIT", key, "3"])), 1);
    assert_eq!(bought(con, key, 1, "e-1", "eve:ü"), 94);
    assert_eq!(held(con, key, 1, "f-1", "frank", LONG_HOLD), 93);
    let i = sinfo(con, key);
    assert_eq!(
        (i["available"], i["deducted"], i["limit"], i["buyers"]),
        (93, 7, 3, 6),
        "{key}: {i:?}"
    );
    for (who, n) in SALE_BUYERS {
        assert_eq!(units(con, key, who), n, "{key}: STOCK.BUYER {who}");
    }
}

/// Everything a server says about one stock of `sale`.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    info: BTreeMap<String, i64>,
    buyers: Vec<(String, Option<i64>)>,
    details: Vec<(String, Option<Detail>)>,
    digest: String,
}

fn snapshot(con: &mut Connection, key: &str) -> Snapshot {
    Snapshot {
        info: sinfo(con, key),
        buyers: SALE_BUYERS
            .iter()
            .map(|(who, _)| (who.to_string(), buyer(con, key, who)))
            .collect(),
        details: SALE_IDS
            .iter()
            .map(|id| (id.to_string(), detail(con, key, id)))
            .collect(),
        digest: digest_value(con, key),
    }
}

/// `sale`'s stock as it must be, wherever it went: the limit enforced, the entries' buyers.
#[track_caller]
fn check_sale(con: &mut Connection, key: &str, what: &str) {
    let i = sinfo(con, key);
    assert_eq!(
        (
            i["available"],
            i["deducted"],
            i["requests"],
            i["limit"],
            i["buyers"]
        ),
        (93, 7, 8, 3, 6),
        "{what}: {key}: {i:?}"
    );
    for (who, n) in SALE_BUYERS {
        assert_eq!(units(con, key, who), n, "{what}: {key}: STOCK.BUYER {who}");
    }
    let expect = [
        ("anon-1", "deducted", 1, None),
        ("a-1", "deducted", 2, Some("alice")),
        ("b-1", "held", 1, Some("bob")),
        ("b-2", "confirmed", 1, Some("bob")),
        ("c-1", "refunded", 3, Some("carol")),
        ("d-1", "expired", 1, Some("dave")),
        ("e-1", "deducted", 1, Some("eve:ü")),
        ("f-1", "held", 1, Some("frank")),
    ];
    for (id, state, q, who) in expect {
        let d = detail(con, key, id).unwrap_or_else(|| panic!("{what}: {key} {id} unknown"));
        assert_eq!(
            (d.state.as_str(), d.quantity, d.buyer.as_deref()),
            (state, q, who),
            "{what}: {key} {id}"
        );
    }
    assert_eq!(detail(con, key, "never"), None, "{what}");
}

/// The limit of `sale`'s stock still applies (on a master): alice holds 2 of 3 and bob 2; a
/// copy is changed by this, so call it last.
#[track_caller]
fn check_limit_enforced(con: &mut Connection, key: &str, what: &str) {
    let before = sinfo(con, key);
    assert_eq!(
        err(buy(con, key, 2, "a-2", "alice")),
        limit_reached("alice", 2, 3),
        "{what}: {key}"
    );
    assert_eq!(
        err(call(con, &["STOCK.DEDUCT", key, "1", "ID", "anon-2"])),
        buyer_required(3),
        "{what}: {key}"
    );
    assert_eq!(sinfo(con, key), before, "{what}: a refusal changed {key}");
    // A replay counts nothing again, whoever it names.
    assert_eq!(bought(con, key, 3, "a-1", "bob"), 93, "{what}: {key}");
    assert_eq!(bought(con, key, 1, "a-2", "alice"), 92, "{what}: {key}");
    assert_eq!(units(con, key, "alice"), 3, "{what}: {key}");
    assert_eq!(units(con, key, "bob"), 2, "{what}: {key}");
}

// ---------------------------------------------------------------------------------------------
// STOCK.SET … LIMIT
// ---------------------------------------------------------------------------------------------

#[test]
fn stock_set_limit_sets_keeps_and_clears_the_limit() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "10", "LIMIT", "2"]));
    let i = sinfo(&mut con, "s");
    assert_eq!((i["available"], i["limit"], i["buyers"]), (10, 2, 0));
    // The option in any case; a new value replaces the old one.
    okay(call(&mut con, &["STOCK.SET", "s", "10", "limit", "3"]));
    assert_eq!(sinfo(&mut con, "s")["limit"], 3);
    // A buyer is recorded, a fence and a TTL set.
    assert_eq!(
        int(call(
            &mut con,
            &[
                "STOCK.DEDUCT",
                "s",
                "2",
                "ID",
                "o1",
                "BUYER",
                "alice",
                "FENCE",
                "7"
            ]
        )),
        8
    );
    assert_eq!(int(call(&mut con, &["PEXPIRE", "s", "600000"])), 1);
    let i = sinfo(&mut con, "s");
    assert_eq!((i["buyers"], i["requests"], i["fence"]), (1, 1, 7));
    // Without LIMIT: a new sale keeps the limit, as it keeps the fence and the TTL; the buyers
    // are cleared with the ledger.
    okay(call(&mut con, &["STOCK.SET", "s", "20"]));
    let i = sinfo(&mut con, "s");
    assert_eq!(
        (
            i["available"],
            i["deducted"],
            i["requests"],
            i["fence"],
            i["limit"],
            i["buyers"]
        ),
        (20, 0, 0, 7, 3, 0),
        "{i:?}"
    );
    assert!(pttl(&mut con, "s") > 500_000, "the TTL was kept");
    assert_eq!(units(&mut con, "s", "alice"), 0);
    assert_eq!(detail(&mut con, "s", "o1"), None);
    // The limit applies to the new sale: no deduction without BUYER.
    assert_eq!(
        err(call(&mut con, &["STOCK.DEDUCT", "s", "1"])),
        buyer_required(3)
    );
    // LIMIT with a new sale replaces it; LIMIT 0 clears it.
    okay(call(&mut con, &["STOCK.SET", "s", "20", "LIMIT", "1"]));
    assert_eq!(sinfo(&mut con, "s")["limit"], 1);
    okay(call(&mut con, &["STOCK.SET", "s", "20", "LIMIT", "0"]));
    assert_eq!(sinfo(&mut con, "s")["limit"], 0);
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", "s", "1"])), 19);
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "s", "5", "ID", "o2"])),
        14
    );
    // Without LIMIT after LIMIT 0: still none.
    okay(call(&mut con, &["STOCK.SET", "s", "20"]));
    assert_eq!(sinfo(&mut con, "s")["limit"], 0);
    // A new stock: with the limit asked for, or none.
    okay(call(&mut con, &["STOCK.SET", "new", "5", "LIMIT", "5"]));
    assert_eq!(sinfo(&mut con, "new")["limit"], 5);
    okay(call(&mut con, &["STOCK.SET", "none", "5"]));
    assert_eq!(sinfo(&mut con, "none")["limit"], 0);
    // The bounds: 0 and 2^63-1.
    okay(call(&mut con, &["STOCK.SET", "max", "0", "LIMIT", I64_MAX]));
    assert_eq!(sinfo(&mut con, "max")["limit"], i64::MAX);
    assert_eq!(key_type(&mut con, "max"), "fence-stk");
}

#[test]
fn stock_set_refuses_bad_limits_and_options_and_changes_nothing() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "10", "LIMIT", "2"]));
    okay(call(&mut con, &["SET", "plain", "50"]));
    int(call(&mut con, &["LOCK.ACQUIRE", "lock", "w", "60000"]));
    for bad in [
        "-1",
        TWO_POW_63,
        "18446744073709551616",
        "x",
        "1.5",
        "",
        " 1",
    ] {
        for key in ["s", "missing", "plain", "lock"] {
            // The argument comes before the key's type.
            refused(
                &mut con,
                &["STOCK.SET", key, "10", "LIMIT", bad],
                LIMIT_RANGE,
            );
        }
    }
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["STOCK.SET", "s", "5", "LIMIT"], missing_value("LIMIT")),
        (
            vec!["STOCK.SET", "s", "5", "LIMIT", "1", "LIMIT", "2"],
            repeated_option("LIMIT"),
        ),
        (
            vec!["STOCK.SET", "s", "5", "LIMIT", "1", "limit", "1"],
            repeated_option("LIMIT"),
        ),
        (
            vec!["STOCK.SET", "s", "5", "BUYER", "b"],
            unknown_option("BUYER"),
        ),
        (vec!["STOCK.SET", "s", "5", "x"], unknown_option("x")),
        // The quantity comes first.
        (
            vec!["STOCK.SET", "s", "-1", "LIMIT", "x"],
            quantity_range(0),
        ),
        // Then the type: a plain string and a lock get WRONGTYPE.
        (
            vec!["STOCK.SET", "plain", "5", "LIMIT", "1"],
            WRONGTYPE.to_string(),
        ),
        (
            vec!["STOCK.SET", "lock", "5", "LIMIT", "1"],
            WRONGTYPE.to_string(),
        ),
    ];
    for (args, expected) in &cases {
        refused(&mut con, args, expected);
    }
    assert_eq!(sinfo(&mut con, "s")["limit"], 2);
    assert_eq!(exists(&mut con, "missing"), 0);
    assert_eq!(get_string(&mut con, "plain").as_deref(), Some("50"));
}

// ---------------------------------------------------------------------------------------------
// STOCK.LIMIT
// ---------------------------------------------------------------------------------------------

#[test]
fn stock_limit_replies_and_errors_as_the_contract_says() {
    let s = server();
    let mut con = s.conn();
    // A missing key: 0, nothing created.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "missing", "3"])), 0);
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "missing", "0"])), 0);
    assert_eq!(exists(&mut con, "missing"), 0);
    assert_eq!(dbsize(&mut con), 0);
    okay(call(&mut con, &["STOCK.SET", "s", "10"]));
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "2"])), 1);
    assert_eq!(sinfo(&mut con, "s")["limit"], 2);
    // Safe to resend.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "2"])), 1);
    assert_eq!(sinfo(&mut con, "s")["limit"], 2);
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", I64_MAX])), 1);
    assert_eq!(sinfo(&mut con, "s")["limit"], i64::MAX);
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "0"])), 1);
    assert_eq!(sinfo(&mut con, "s")["limit"], 0);
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", "s", "1"])), 9);
    // Errors: the value first, then the type.
    okay(call(&mut con, &["SET", "plain", "50"]));
    int(call(&mut con, &["LOCK.ACQUIRE", "lock", "w", "60000"]));
    int(call(&mut con, &["RPUSH", "list", "a"]));
    for bad in ["-1", TWO_POW_63, "x", "1.5", "", "1e3"] {
        for key in ["s", "missing", "plain", "lock", "list"] {
            refused(&mut con, &["STOCK.LIMIT", key, bad], LIMIT_RANGE);
        }
    }
    refused(&mut con, &["STOCK.LIMIT", "plain", "3"], NEEDS_STOCK);
    refused(&mut con, &["STOCK.LIMIT", "lock", "3"], WRONGTYPE);
    refused(&mut con, &["STOCK.LIMIT", "list", "3"], WRONGTYPE);
    assert_eq!(get_string(&mut con, "plain").as_deref(), Some("50"));
    assert_eq!(key_type(&mut con, "plain"), "string");
    assert_eq!(exists(&mut con, "missing"), 0);
    // A wrong number of arguments.
    for args in [
        &["STOCK.LIMIT"][..],
        &["STOCK.LIMIT", "s"],
        &["STOCK.LIMIT", "s", "1", "2"],
    ] {
        assert_err(call(&mut con, args), arity_lead());
    }
}

#[test]
fn stock_limit_changes_a_running_sale_without_touching_its_ledger() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "100", "LIMIT", "5"]));
    assert_eq!(bought(&mut con, "s", 3, "o1", "alice"), 97);
    assert_eq!(bought(&mut con, "s", 1, "o2", "alice"), 96);
    assert_eq!(bought(&mut con, "s", 2, "o3", "bob"), 94);
    int(call(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "o4",
            "BUYER",
            "bob",
            "FENCE",
            "9",
        ],
    ));
    let before = sinfo(&mut con, "s");
    // Lowering keeps what buyers hold: alice holds 4, above the new limit of 2.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "2"])), 1);
    let after = sinfo(&mut con, "s");
    for field in ["available", "deducted", "requests", "fence", "buyers"] {
        assert_eq!(after[field], before[field], "{field}: {after:?}");
    }
    assert_eq!(after["limit"], 2);
    assert_eq!(units(&mut con, "s", "alice"), 4);
    assert_eq!(units(&mut con, "s", "bob"), 3);
    for (id, q, who) in [("o1", 3, "alice"), ("o2", 1, "alice"), ("o3", 2, "bob")] {
        let d = detail(&mut con, "s", id).expect(id);
        assert_eq!((d.state.as_str(), d.quantity), ("deducted", q), "{id}");
        assert_eq!(d.buyer.as_deref(), Some(who), "{id}");
    }
    // Above the limit: no more until refunds bring them under it.
    assert_eq!(
        err(buy(&mut con, "s", 1, "o5", "alice")),
        limit_reached("alice", 4, 2)
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "o1"])), 3);
    assert_eq!(units(&mut con, "s", "alice"), 1);
    assert_eq!(bought(&mut con, "s", 1, "o5", "alice"), 95);
    assert_eq!(
        err(buy(&mut con, "s", 1, "o6", "alice")),
        limit_reached("alice", 2, 2)
    );
    // Raising it lets them buy again.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "4"])), 1);
    assert_eq!(bought(&mut con, "s", 2, "o6", "alice"), 93);
    assert_eq!(units(&mut con, "s", "alice"), 4);
    assert_eq!(bought(&mut con, "s", 1, "o7", "bob"), 92);
    assert_eq!(
        err(buy(&mut con, "s", 1, "o8", "bob")),
        limit_reached("bob", 4, 4)
    );
    // Clearing it: anyone buys, BUYER or not.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "0"])), 1);
    assert_eq!(bought(&mut con, "s", 10, "o8", "bob"), 82);
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", "s", "1"])), 81);
    assert_eq!(units(&mut con, "s", "bob"), 14);
}

#[test]
fn stock_limit_is_never_refused_for_memory_or_eviction_risk() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "10"]));
    assert_eq!(bought(&mut con, "s", 1, "o1", "alice"), 9);
    okay(call(&mut con, &["CONFIG", "SET", "maxmemory", "1"]));
    let oom = err(buy(&mut con, "s", 1, "o2", "alice"));
    assert!(oom.starts_with("OOM"), "{oom}");
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "3"])), 1);
    // Reads too.
    assert_eq!(units(&mut con, "s", "alice"), 1);
    okay(call(&mut con, &["CONFIG", "SET", "maxmemory", "0"]));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    ));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "maxmemory", "1000000000"],
    ));
    assert_eq!(
        err(buy(&mut con, "s", 1, "o2", "alice")),
        eviction_risk("allkeys-lru")
    );
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "1"])), 1);
    assert_eq!(sinfo(&mut con, "s")["limit"], 1);
    // A replay is answered under eviction risk (the ID step comes first).
    assert_eq!(bought(&mut con, "s", 1, "o1", "alice"), 9);
}

// ---------------------------------------------------------------------------------------------
// STOCK.DEDUCT … BUYER, STOCK.BUYER, STOCK.REQUEST … DETAIL
// ---------------------------------------------------------------------------------------------

#[test]
fn buyer_is_recorded_without_a_limit_and_counted_by_a_later_one() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "100"]));
    assert_eq!(bought(&mut con, "s", 2, "o1", "alice"), 98);
    assert_eq!(bought(&mut con, "s", 1, "o2", "alice"), 97);
    assert_eq!(bought(&mut con, "s", 5, "o3", "bob"), 92);
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "s", "4", "ID", "o4"])),
        88
    );
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", "s", "1"])), 87);
    assert_eq!(units(&mut con, "s", "alice"), 3);
    assert_eq!(units(&mut con, "s", "bob"), 5);
    assert_eq!(units(&mut con, "s", "carol"), 0);
    let i = sinfo(&mut con, "s");
    assert_eq!((i["limit"], i["buyers"], i["requests"]), (0, 2, 4));
    // The replies of STOCK.REQUEST without DETAIL are as before.
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "s", "o1"])), 2);
    // A limit set in the middle of the sale counts what each buyer already holds.
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "4"])), 1);
    assert_eq!(
        err(buy(&mut con, "s", 2, "o5", "alice")),
        limit_reached("alice", 3, 4)
    );
    assert_eq!(bought(&mut con, "s", 1, "o5", "alice"), 86);
    assert_eq!(
        err(buy(&mut con, "s", 1, "o6", "bob")),
        limit_reached("bob", 5, 4)
    );
    assert_eq!(bought(&mut con, "s", 4, "o6", "carol"), 82);
    assert_eq!(sinfo(&mut con, "s")["buyers"], 3);
}

#[test]
fn stock_buyer_replies_and_errors_as_the_contract_says() {
    let s = server();
    let mut con = s.conn();
    assert_eq!(buyer(&mut con, "missing", "alice"), None);
    assert_eq!(exists(&mut con, "missing"), 0);
    okay(call(&mut con, &["STOCK.SET", "s", "10", "LIMIT", "3"]));
    assert_eq!(buyer(&mut con, "s", "alice"), Some(0));
    assert_eq!(bought(&mut con, "s", 2, "o1", "alice"), 8);
    assert_eq!(buyer(&mut con, "s", "alice"), Some(2));
    // Buyer ids are exact bytes: another case is another buyer.
    assert_eq!(buyer(&mut con, "s", "Alice"), Some(0));
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "o1"])), 2);
    // A buyer holding nothing now is still recorded in the sale.
    assert_eq!(buyer(&mut con, "s", "alice"), Some(0));
    assert_eq!(sinfo(&mut con, "s")["buyers"], 1);
    okay(call(&mut con, &["SET", "plain", "50"]));
    int(call(&mut con, &["LOCK.ACQUIRE", "lock", "w", "60000"]));
    refused(
        &mut con,
        &["STOCK.BUYER", "s", ""],
        &empty_name(Name::BuyerId),
    );
    refused(&mut con, &["STOCK.BUYER", "plain", "alice"], NEEDS_STOCK);
    refused(&mut con, &["STOCK.BUYER", "lock", "alice"], WRONGTYPE);
    for args in [
        &["STOCK.BUYER"][..],
        &["STOCK.BUYER", "s"],
        &["STOCK.BUYER", "s", "alice", "x"],
    ] {
        assert_err(call(&mut con, args), arity_lead());
    }
    // RESP3: an integer, or null.
    let mut r3 = s.conn_resp3();
    assert_eq!(
        call(&mut r3, &["STOCK.BUYER", "s", "alice"]).expect("STOCK.BUYER"),
        Value::Int(0)
    );
    assert_eq!(
        call(&mut r3, &["STOCK.BUYER", "missing", "alice"]).expect("STOCK.BUYER"),
        Value::Nil
    );
}

#[test]
fn detail_shows_the_buyer_only_for_entries_made_with_one() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "10"]));
    int(call(&mut con, &["STOCK.DEDUCT", "s", "1", "ID", "plain"]));
    bought(&mut con, "s", 1, "bought", "alice");
    held(&mut con, "s", 1, "held", "bob", LONG_HOLD);
    held(&mut con, "s", 1, "confirmed", "bob", LONG_HOLD);
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", "s", "confirmed"])), 1);
    bought(&mut con, "s", 1, "refunded", "carol");
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "refunded"])), 1);
    int(call(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "held-anon",
            "HOLD",
            LONG_HOLD,
        ],
    ));
    // RESP2: a flat array, in the order state, quantity, [deadline], [buyer].
    let names = |con: &mut Connection, id: &str| -> Vec<String> {
        let v = call(con, &["STOCK.REQUEST", "s", id, "DETAIL"]).expect("DETAIL");
        assert!(matches!(v, Value::Array(_)), "{v:?}");
        pairs(v).into_iter().map(|(k, _)| k).collect()
    };
    for (id, expect) in [
        ("plain", &["state", "quantity"][..]),
        ("bought", &["state", "quantity", "buyer"]),
        ("held", &["state", "quantity", "deadline", "buyer"]),
        ("confirmed", &["state", "quantity", "buyer"]),
        ("refunded", &["state", "quantity", "buyer"]),
        ("held-anon", &["state", "quantity", "deadline"]),
    ] {
        assert_eq!(names(&mut con, id), expect, "{id}");
    }
    for (id, state, who) in [
        ("plain", "deducted", None),
        ("bought", "deducted", Some("alice")),
        ("held", "held", Some("bob")),
        ("confirmed", "confirmed", Some("bob")),
        ("refunded", "refunded", Some("carol")),
        ("held-anon", "held", None),
    ] {
        let d = detail(&mut con, "s", id).expect(id);
        assert_eq!((d.state.as_str(), d.buyer.as_deref()), (state, who), "{id}");
    }
    // The buyer's bytes come back as they were given.
    let odd = "b\u{fc}yer \"7\"";
    bought(&mut con, "s", 1, "odd", odd);
    assert_eq!(
        detail(&mut con, "s", "odd").expect("odd").buyer.as_deref(),
        Some(odd)
    );
    assert_eq!(units(&mut con, "s", odd), 1);
    // RESP3: a map with the same fields.
    let mut r3 = s.conn_resp3();
    for (id, n) in [("plain", 2), ("bought", 3), ("held", 4), ("held-anon", 3)] {
        let v = call(&mut r3, &["STOCK.REQUEST", "s", id, "DETAIL"]).expect("DETAIL");
        assert!(
            matches!(v, Value::Map(ref p) if p.len() == n),
            "{id}: {v:?}"
        );
    }
    let v = call(&mut r3, &["STOCK.REQUEST", "s", "bought", "DETAIL"]).expect("DETAIL");
    assert_eq!(
        pairs(v).last().map(|(k, v)| (k.clone(), text(v))),
        Some(("buyer".to_string(), "alice".to_string()))
    );
}

#[test]
fn buyer_option_errors_change_nothing() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "10"]));
    okay(call(
        &mut con,
        &["STOCK.SET", "limited", "10", "LIMIT", "2"],
    ));
    okay(call(&mut con, &["SET", "plain", "50"]));
    int(call(&mut con, &["LOCK.ACQUIRE", "lock", "w", "60000"]));
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["STOCK.DEDUCT", "s", "1", "BUYER", "alice"],
            BUYER_NEEDS_ID.to_string(),
        ),
        (
            vec!["STOCK.DEDUCT", "limited", "1", "BUYER", "alice"],
            BUYER_NEEDS_ID.to_string(),
        ),
        (
            vec!["STOCK.DEDUCT", "s", "1", "ID", "o", "BUYER", ""],
            empty_name(Name::BuyerId),
        ),
        (
            vec!["STOCK.DEDUCT", "s", "1", "ID", "o", "BUYER"],
            missing_value("BUYER"),
        ),
        (
            vec![
                "STOCK.DEDUCT",
                "s",
                "1",
                "ID",
                "o",
                "BUYER",
                "a",
                "buyer",
                "b",
            ],
            repeated_option("BUYER"),
        ),
        (
            vec!["STOCK.DEDUCT", "s", "1", "ID", "o", "LIMIT", "2"],
            unknown_option("LIMIT"),
        ),
        (
            vec!["STOCK.DEDUCT", "s", "0", "ID", "o", "BUYER", "a"],
            quantity_range(1),
        ),
        // A plain integer string has no ledger: BUYER and HOLD need a stock.
        (
            vec!["STOCK.DEDUCT", "plain", "1", "ID", "o", "BUYER", "a"],
            NEEDS_STOCK.to_string(),
        ),
        (
            vec!["STOCK.DEDUCT", "plain", "1", "ID", "o", "HOLD", "1000"],
            NEEDS_STOCK.to_string(),
        ),
        (
            vec![
                "STOCK.DEDUCT",
                "plain",
                "1",
                "ID",
                "o",
                "BUYER",
                "a",
                "HOLD",
                "1000",
            ],
            NEEDS_STOCK.to_string(),
        ),
        (
            vec!["STOCK.DEDUCT", "lock", "1", "ID", "o", "BUYER", "a"],
            WRONGTYPE.to_string(),
        ),
    ];
    for (args, expected) in &cases {
        refused(&mut con, args, expected);
    }
    assert_eq!(get_string(&mut con, "plain").as_deref(), Some("50"));
    assert_eq!(sinfo(&mut con, "s")["buyers"], 0);
    // A missing key: BUYER is accepted and the reply is nil, nothing created.
    nil(buy(&mut con, "missing", 1, "o", "alice"));
    assert_eq!(exists(&mut con, "missing"), 0);
}

// ---------------------------------------------------------------------------------------------
// The LIMIT refusal and the order of the checks
// ---------------------------------------------------------------------------------------------

#[test]
fn a_limit_refusal_has_its_own_code_and_changes_nothing() {
    let s = server();
    let mut con = s.conn();
    okay(call(
        &mut con,
        &["STOCK.SET", "sku:phone", "1000", "LIMIT", "1"],
    ));
    let deduct = |con: &mut Connection, id: &str| {
        call(
            con,
            &[
                "STOCK.DEDUCT",
                "sku:phone",
                "1",
                "ID",
                id,
                "BUYER",
                "user-7",
                "EVENTS",
                "orders",
            ],
        )
    };
    // The README's walk-through, reply by reply.
    assert_eq!(int(deduct(&mut con, "order-1")), 999);
    assert_eq!(int(deduct(&mut con, "order-1")), 999);
    let info = sinfo(&mut con, "sku:phone");
    let digest = debug_digest(&mut con);
    let stream = call(&mut con, &["XRANGE", "orders", "-", "+"]).expect("XRANGE");
    let changes = info_int(&mut con, "persistence", "rdb_changes_since_last_save");
    let e = err(deduct(&mut con, "order-2"));
    // The exact text, as the README spells it, and as fence-core builds it.
    assert_eq!(e, "LIMIT buyer user-7 has 1 of at most 1");
    assert_eq!(e, limit_reached("user-7", 1, 1));
    assert!(e.starts_with(&format!("{} ", code::LIMIT)), "{e}");
    // Nothing changed: the stock, its ledger (the id is not spent), the stream, the dataset.
    assert_eq!(sinfo(&mut con, "sku:phone"), info);
    assert_eq!(debug_digest(&mut con), digest);
    assert_eq!(
        call(&mut con, &["XRANGE", "orders", "-", "+"]).expect("XRANGE"),
        stream
    );
    assert_eq!(detail(&mut con, "sku:phone", "order-2"), None);
    assert_eq!(
        info_int(&mut con, "persistence", "rdb_changes_since_last_save"),
        changes,
        "a refusal marked the dataset dirty"
    );
    assert_eq!(fence_counter(&mut con, "limit_refusals"), 1);
    // The id can be used once the allowance is back.
    assert_eq!(
        int(call(&mut con, &["STOCK.REFUND", "sku:phone", "order-1"])),
        1
    );
    assert_eq!(int(deduct(&mut con, "order-2")), 999);
    assert_eq!(units(&mut con, "sku:phone", "user-7"), 1);
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "sku:phone", "2"])), 1);
    assert_eq!(int(deduct(&mut con, "order-3")), 998);
    assert_eq!(
        err(deduct(&mut con, "order-4")),
        "LIMIT buyer user-7 has 2 of at most 2"
    );
    // A quantity larger than the limit is refused even for a buyer holding nothing.
    assert_eq!(
        err(buy(&mut con, "sku:phone", 3, "big", "user-8")),
        "LIMIT buyer user-8 has 0 of at most 2"
    );
    assert_eq!(fence_counter(&mut con, "limit_refusals"), 3);
    // A buyer id that is not printable ASCII is shown escaped in the message.
    assert_eq!(bought(&mut con, "sku:phone", 2, "o-nl", "a\nb"), 996);
    assert_eq!(
        err(buy(&mut con, "sku:phone", 1, "o-nl2", "a\nb")),
        limit_reached(&printable(b"a\nb"), 2, 2)
    );
    // With a limit set, a deduction without BUYER is refused with ERR, and is not a LIMIT
    // refusal.
    let e = err(call(&mut con, &["STOCK.DEDUCT", "sku:phone", "1"]));
    assert_eq!(
        e,
        "ERR this stock limits each buyer to 2 units: STOCK.DEDUCT needs BUYER"
    );
    assert_eq!(e, buyer_required(2));
    refused(
        &mut con,
        &["STOCK.DEDUCT", "sku:phone", "1", "ID", "anon"],
        &buyer_required(2),
    );
    refused(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "sku:phone",
            "1",
            "ID",
            "anon",
            "HOLD",
            "1000",
        ],
        &buyer_required(2),
    );
    assert_eq!(fence_counter(&mut con, "limit_refusals"), 4);
    // INFO fence: the successes only.
    assert_eq!(fence_counter(&mut con, "deductions"), 4);
    assert_eq!(fence_counter(&mut con, "replays"), 1);
    assert_eq!(fence_counter(&mut con, "deductions_sold_out"), 0);
}

#[test]
fn checks_run_in_the_order_stale_id_limit_quantity() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "2", "LIMIT", "1"]));
    int(call(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "o1",
            "BUYER",
            "alice",
            "FENCE",
            "100",
        ],
    ));
    assert_eq!(bought(&mut con, "s", 1, "o2", "bob"), 0);
    let baseline = sinfo(&mut con, "s");
    assert_eq!((baseline["buyers"], baseline["available"]), (2, 0));
    // Arguments before FENCE: an empty buyer, BUYER without ID.
    refused(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "o3",
            "BUYER",
            "",
            "FENCE",
            "50",
        ],
        &empty_name(Name::BuyerId),
    );
    refused(
        &mut con,
        &["STOCK.DEDUCT", "s", "1", "BUYER", "alice", "FENCE", "50"],
        BUYER_NEEDS_ID,
    );
    // FENCE before ID: a stale replay, and a stale new id of a buyer at the limit.
    refused(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "o1",
            "BUYER",
            "bob",
            "FENCE",
            "50",
        ],
        &stale_reply(50, 100),
    );
    refused(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "o3",
            "BUYER",
            "alice",
            "FENCE",
            "50",
        ],
        &stale_reply(50, 100),
    );
    // ID before LIMIT: a replay answers as any replay and counts nothing again, whoever it
    // names, with or without BUYER, even a buyer the sale has never seen.
    let replays = fence_counter(&mut con, "replays");
    assert_eq!(bought(&mut con, "s", 1, "o1", "bob"), 0);
    assert_eq!(bought(&mut con, "s", 1, "o1", "alice"), 0);
    assert_eq!(bought(&mut con, "s", 5, "o1", "zed"), 0);
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "s", "1", "ID", "o1"])),
        0
    );
    assert_eq!(fence_counter(&mut con, "replays"), replays + 4);
    assert_eq!(sinfo(&mut con, "s"), baseline, "a replay changed the stock");
    assert_eq!(units(&mut con, "s", "alice"), 1);
    assert_eq!(units(&mut con, "s", "bob"), 1);
    assert_eq!(units(&mut con, "s", "zed"), 0);
    assert_eq!(
        detail(&mut con, "s", "o1").expect("o1").buyer.as_deref(),
        Some("alice"),
        "the entry keeps the buyer it was made with"
    );
    // LIMIT before quantity: a buyer at the limit on a sold-out stock gets LIMIT, not nil.
    refused(
        &mut con,
        &["STOCK.DEDUCT", "s", "1", "ID", "o3", "BUYER", "alice"],
        &limit_reached("alice", 1, 1),
    );
    // A buyer within the limit on a sold-out stock: nil, and nobody recorded.
    let sold_out = fence_counter(&mut con, "deductions_sold_out");
    nil(buy(&mut con, "s", 1, "o3", "carol"));
    assert_eq!(fence_counter(&mut con, "deductions_sold_out"), sold_out + 1);
    assert_eq!(
        sinfo(&mut con, "s"),
        baseline,
        "a sold-out call recorded something"
    );
    assert_eq!(detail(&mut con, "s", "o3"), None);
    // The ID step's own refusals come before LIMIT: a full ledger, a new id too long.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "2"],
    ));
    refused(
        &mut con,
        &["STOCK.DEDUCT", "s", "1", "ID", "o3", "BUYER", "alice"],
        &ledger_full(2),
    );
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1000000"],
    ));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "4"],
    ));
    refused(
        &mut con,
        &["STOCK.DEDUCT", "s", "1", "ID", "long-id", "BUYER", "alice"],
        &name_too_long(Name::RequestId, 4),
    );
    // A replay naming a buyer too long to be new is still a replay.
    assert_eq!(bought(&mut con, "s", 1, "o1", "a-buyer-far-too-long"), 0);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "512"],
    ));
    // Without ID there is no replay: the limit's refusal of a missing BUYER comes before the
    // quantity (the stock is sold out).
    refused(&mut con, &["STOCK.DEDUCT", "s", "1"], &buyer_required(1));
    // Restocked: the quantity check passes and the limit still holds.
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "s", "5"])), 5);
    refused(
        &mut con,
        &["STOCK.DEDUCT", "s", "1", "ID", "o3", "BUYER", "alice"],
        &limit_reached("alice", 1, 1),
    );
    assert_eq!(bought(&mut con, "s", 1, "o3", "carol"), 4);
    // The fence rises only with a success, and the next stale call is refused first.
    int(call(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "o4",
            "BUYER",
            "dave",
            "FENCE",
            "200",
        ],
    ));
    refused(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "o5",
            "BUYER",
            "dave",
            "FENCE",
            "150",
        ],
        &stale_reply(150, 200),
    );
    assert_eq!(sinfo(&mut con, "s")["fence"], 200);
}

#[test]
fn a_refund_and_an_expired_hold_give_the_allowance_back_a_confirmation_keeps_it() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "100", "LIMIT", "2"]));
    // A held order counts; its confirmation changes nothing.
    assert_eq!(held(&mut con, "s", 2, "h1", "alice", LONG_HOLD), 98);
    assert_eq!(units(&mut con, "s", "alice"), 2);
    assert_eq!(
        err(buy(&mut con, "s", 1, "x", "alice")),
        limit_reached("alice", 2, 2)
    );
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", "s", "h1"])), 1);
    assert_eq!(units(&mut con, "s", "alice"), 2);
    assert_eq!(
        err(buy(&mut con, "s", 1, "x", "alice")),
        limit_reached("alice", 2, 2)
    );
    // A refund of a confirmed order gives the allowance back, once.
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "h1"])), 2);
    assert_eq!(units(&mut con, "s", "alice"), 0);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "h1"])), 0);
    assert_eq!(units(&mut con, "s", "alice"), 0);
    // A refund of a held order.
    assert_eq!(held(&mut con, "s", 1, "h2", "alice", LONG_HOLD), 99);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "h2"])), 1);
    assert_eq!(units(&mut con, "s", "alice"), 0);
    // A hold that expires unconfirmed: by the timer, with nothing touching the stock.
    assert_eq!(held(&mut con, "s", 2, "h3", "alice", "200"), 98);
    wait_expired(&mut con, "s", "h3", 1);
    assert_eq!(units(&mut con, "s", "alice"), 0);
    let d = detail(&mut con, "s", "h3").expect("h3");
    assert_eq!(
        (d.state.as_str(), d.buyer.as_deref()),
        ("expired", Some("alice"))
    );
    assert_eq!(bought(&mut con, "s", 2, "d1", "alice"), 98);
    assert_eq!(units(&mut con, "s", "alice"), 2);
    // A hold whose deadline has passed counts as returned at once, even before its expiry is
    // applied; the deduction that finds it due expires it first. One MULTI: nothing else runs,
    // the expiry timer included, so the hold is made, bought beside and found due in order.
    okay(call(&mut con, &["MULTI"]));
    for args in [
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "h4",
            "BUYER",
            "bob",
            "HOLD",
            "100",
        ][..],
        &["STOCK.DEDUCT", "s", "1", "ID", "b1", "BUYER", "bob"],
        &["STOCK.BUYER", "s", "bob"],
        &["DEBUG", "SLEEP", "0.3"],
        &["STOCK.BUYER", "s", "bob"],
        &["STOCK.DEDUCT", "s", "1", "ID", "b2", "BUYER", "bob"],
        &["STOCK.BUYER", "s", "bob"],
    ] {
        call(&mut con, args).expect("QUEUED");
    }
    let Ok(Value::Array(replies)) = call(&mut con, &["EXEC"]) else {
        panic!("EXEC")
    };
    assert_eq!(replies[0], Value::Int(97));
    assert_eq!(replies[1], Value::Int(96));
    assert_eq!(
        replies[2],
        Value::Int(2),
        "bob at the limit before the deadline"
    );
    assert_eq!(
        replies[4],
        Value::Int(1),
        "bob's due hold counts as returned"
    );
    assert_eq!(replies[5], Value::Int(96), "bob bought again");
    assert_eq!(replies[6], Value::Int(2));
    assert_eq!(detail(&mut con, "s", "h4").expect("h4").state, "expired");
    let i = sinfo(&mut con, "s");
    assert_eq!(
        (i["available"], i["deducted"], i["held"], i["buyers"]),
        (96, 4, 0, 2),
        "{i:?}"
    );
    assert_eq!(
        ledger_units(
            &mut con,
            "s",
            &["h1", "h2", "h3", "d1", "h4", "b1", "b2"].map(String::from)
        ),
        BTreeMap::from([("alice".to_string(), 2), ("bob".to_string(), 2)])
    );
}

// ---------------------------------------------------------------------------------------------
// STOCK.INFO
// ---------------------------------------------------------------------------------------------

#[test]
fn stock_info_reports_limit_and_buyers_at_the_end() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "10", "LIMIT", "4"]));
    bought(&mut con, "s", 2, "a", "alice");
    held(&mut con, "s", 1, "b", "bob", LONG_HOLD);
    bought(&mut con, "s", 1, "c", "carol");
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "c"])), 1);
    let Ok(Value::Array(items)) = call(&mut con, &["STOCK.INFO", "s"]) else {
        panic!("STOCK.INFO")
    };
    assert_eq!(items.len(), 20, "{items:?}");
    let names: Vec<String> = items.iter().step_by(2).map(text).collect();
    assert_eq!(
        names,
        [
            "available",
            "deducted",
            "requests",
            "fence",
            "restocks",
            "held",
            "held-units",
            "next-deadline",
            "limit",
            "buyers"
        ]
    );
    let i = sinfo(&mut con, "s");
    assert_eq!(
        (
            i["available"],
            i["deducted"],
            i["requests"],
            i["held"],
            i["limit"],
            i["buyers"]
        ),
        (7, 3, 3, 1, 4, 3),
        "carol holds nothing now and is still a buyer of this sale"
    );
    let mut r3 = s.conn_resp3();
    let m = call(&mut r3, &["STOCK.INFO", "s"]).expect("STOCK.INFO");
    assert!(matches!(m, Value::Map(ref p) if p.len() == 10), "{m:?}");
    assert_eq!(sinfo(&mut r3, "s"), i);
    // A plain integer string: available only.
    okay(call(&mut con, &["SET", "plain", "42"]));
    assert_eq!(
        call(&mut con, &["STOCK.INFO", "plain"]).expect("plain"),
        Value::Array(vec![
            Value::BulkString(b"available".to_vec()),
            Value::Int(42)
        ])
    );
    nil(call(&mut con, &["STOCK.INFO", "missing"]));
}

// ---------------------------------------------------------------------------------------------
// Bounds: fence.max-buyers, fence.max-id-length, option words
// ---------------------------------------------------------------------------------------------

#[test]
fn max_buyers_refuses_new_buyers_and_lets_recorded_ones_buy() {
    let s = server();
    let mut con = s.conn();
    assert_eq!(config_get(&mut con, "fence.max-buyers"), "1000000");
    okay(call(&mut con, &["CONFIG", "SET", "fence.max-buyers", "2"]));
    assert_eq!(config_get(&mut con, "fence.max-buyers"), "2");
    for (key, limit) in [("limited", "5"), ("open", "0")] {
        okay(call(&mut con, &["STOCK.SET", key, "100", "LIMIT", limit]));
        assert_eq!(bought(&mut con, key, 1, "a1", "alice"), 99);
        assert_eq!(bought(&mut con, key, 1, "b1", "bob"), 98);
        refused(
            &mut con,
            &["STOCK.DEDUCT", key, "1", "ID", "c1", "BUYER", "carol"],
            &buyers_full(2),
        );
        // The text as the README begins it.
        let e = err(buy(&mut con, key, 1, "c1", "carol"));
        assert!(
            e.starts_with("ERR buyer table is full (2 buyers, fence.max-buyers)"),
            "{e}"
        );
        // Recorded buyers keep buying, a refund does not free a seat, a replay is a replay.
        assert_eq!(bought(&mut con, key, 1, "a2", "alice"), 97);
        assert_eq!(int(call(&mut con, &["STOCK.REFUND", key, "b1"])), 1);
        assert_eq!(bought(&mut con, key, 1, "b2", "bob"), 97);
        refused(
            &mut con,
            &["STOCK.DEDUCT", key, "1", "ID", "c1", "BUYER", "carol"],
            &buyers_full(2),
        );
        assert_eq!(bought(&mut con, key, 1, "a1", "carol"), 97);
        assert_eq!(units(&mut con, key, "carol"), 0);
        assert_eq!(sinfo(&mut con, key)["buyers"], 2);
        assert_eq!(detail(&mut con, key, "c1"), None);
        if limit == "0" {
            // Without a limit, a deduction without BUYER records nobody and is never refused.
            assert_eq!(
                int(call(&mut con, &["STOCK.DEDUCT", key, "1", "ID", "anon"])),
                96
            );
        }
    }
    // Lowering the bound below a sale's count keeps every buyer; 0 refuses any new one.
    okay(call(&mut con, &["CONFIG", "SET", "fence.max-buyers", "0"]));
    assert_eq!(bought(&mut con, "limited", 1, "a3", "alice"), 96);
    refused(
        &mut con,
        &["STOCK.DEDUCT", "limited", "1", "ID", "d1", "BUYER", "dave"],
        &buyers_full(0),
    );
    // A new sale starts with no buyers: a bound of 1 admits one.
    okay(call(&mut con, &["CONFIG", "SET", "fence.max-buyers", "1"]));
    okay(call(&mut con, &["STOCK.SET", "limited", "10"]));
    assert_eq!(sinfo(&mut con, "limited")["buyers"], 0);
    assert_eq!(bought(&mut con, "limited", 1, "d1", "dave"), 9);
    refused(
        &mut con,
        &["STOCK.DEDUCT", "limited", "1", "ID", "e1", "BUYER", "eve"],
        &buyers_full(1),
    );
    // The setting's range.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-buyers", I64_MAX],
    ));
    assert_err(
        call(&mut con, &["CONFIG", "SET", "fence.max-buyers", "-1"]),
        code::ERR,
    );
    assert_eq!(config_get(&mut con, "fence.max-buyers"), I64_MAX);
    assert_eq!(bought(&mut con, "limited", 1, "e1", "eve"), 8);
}

#[test]
fn max_buyers_is_a_module_argument_and_a_config_line() {
    for args in [&["max-buyers", "1"][..], &["--fence.max-buyers", "1"]] {
        let s = Server::start_with(args);
        let mut con = s.conn();
        assert_eq!(config_get(&mut con, "fence.max-buyers"), "1", "{args:?}");
        okay(call(&mut con, &["STOCK.SET", "s", "10"]));
        bought(&mut con, "s", 1, "a", "alice");
        assert_eq!(err(buy(&mut con, "s", 1, "b", "bob")), buyers_full(1));
    }
    for bad in [
        &["max-buyers", "-1"][..],
        &["max-buyers", "x"],
        &["max-buyers"],
    ] {
        assert!(
            Server::try_start(bad).is_err(),
            "the module loaded with {bad:?}"
        );
    }
}

#[test]
fn a_new_buyer_id_longer_than_max_id_length_is_refused_a_recorded_one_still_buys() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "100", "LIMIT", "10"]));
    let long = "a-buyer-of-24-bytes-long";
    assert_eq!(long.len(), 24);
    assert_eq!(bought(&mut con, "s", 1, "o1", long), 99);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "8"],
    ));
    refused(
        &mut con,
        &["STOCK.DEDUCT", "s", "1", "ID", "o2", "BUYER", "nine-byte"],
        &name_too_long(Name::BuyerId, 8),
    );
    let e = err(buy(&mut con, "s", 1, "o2", "nine-byte"));
    assert_eq!(
        e,
        "ERR buyer id is longer than 8 bytes (fence.max-id-length)"
    );
    // Exactly the bound is accepted; the recorded long buyer still buys and is read.
    assert_eq!(bought(&mut con, "s", 1, "o2", "8-bytes!"), 98);
    assert_eq!(bought(&mut con, "s", 2, "o3", long), 96);
    assert_eq!(units(&mut con, "s", long), 3);
    // The buyer id's bound applies without a limit too.
    okay(call(&mut con, &["STOCK.SET", "open", "10"]));
    refused(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "open",
            "1",
            "ID",
            "o1",
            "BUYER",
            "nine-byte",
        ],
        &name_too_long(Name::BuyerId, 8),
    );
    // Reads of any length are answered.
    assert_eq!(units(&mut con, "s", "some-buyer-never-seen-and-long"), 0);
}

/// The five option groups of a deduction, 13 words in all.
fn option_groups(id: &str, who: &str) -> Vec<Vec<String>> {
    [
        vec!["ID", id],
        vec!["BUYER", who],
        vec!["HOLD", LONG_HOLD],
        vec!["FENCE", "5"],
        vec!["EVENTS", "ev", "MAXLEN", "~", "1000"],
    ]
    .into_iter()
    .map(|g| g.into_iter().map(str::to_string).collect())
    .collect()
}

/// Every order of `n` items (Heap's algorithm).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k == 1 {
            out.push(a.clone());
            return;
        }
        heap(k - 1, a, out);
        for i in 0..k - 1 {
            if k % 2 == 0 {
                a.swap(i, k - 1);
            } else {
                a.swap(0, k - 1);
            }
            heap(k - 1, a, out);
        }
    }
    let mut a: Vec<usize> = (0..n).collect();
    let mut out = Vec::new();
    heap(n, &mut a, &mut out);
    out
}

#[test]
fn thirteen_option_words_are_taken_in_every_order() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "1000", "LIMIT", "1"]));
    let orders = permutations(5);
    assert_eq!(orders.len(), 120);
    let mut remaining = 1000;
    for (n, order) in orders.iter().enumerate() {
        let (id, who) = (format!("o{n}"), format!("b{n}"));
        let groups = option_groups(&id, &who);
        let mut args: Vec<String> = vec!["STOCK.DEDUCT".into(), "s".into(), "1".into()];
        for &g in order {
            args.extend(groups[g].iter().cloned());
        }
        // Every other call in lower case.
        if n % 2 == 1 {
            for a in args.iter_mut().skip(3) {
                if a.chars().all(|c| c.is_ascii_uppercase()) {
                    *a = a.to_ascii_lowercase();
                }
            }
        }
        assert_eq!(args.len() - 3, 13);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        remaining -= 1;
        assert_eq!(int(call(&mut con, &argv)), remaining, "{argv:?}");
        let d = detail(&mut con, "s", &id).expect("the entry");
        assert_eq!(
            (d.state.as_str(), d.quantity, d.buyer.as_deref()),
            ("held", 1, Some(who.as_str())),
            "{argv:?}"
        );
        // The same 13 words again: a replay, the current quantity, nothing counted.
        assert_eq!(int(call(&mut con, &argv)), remaining, "{argv:?}");
    }
    let i = sinfo(&mut con, "s");
    assert_eq!(
        (i["available"], i["held"], i["buyers"], i["fence"]),
        (880, 120, 120, 5)
    );
    assert_eq!(int(call(&mut con, &["XLEN", "ev"])), 120);
    // MAXLEN in its other forms: 13 and 12 words.
    for (n, maxlen) in [(0, &["MAXLEN", "=", "1000"][..]), (1, &["MAXLEN", "1000"])] {
        let (id, who) = (format!("m{n}"), format!("m{n}"));
        let mut argv = vec!["STOCK.DEDUCT", "s", "1", "EVENTS", "ev"];
        argv.extend_from_slice(maxlen);
        argv.extend(["FENCE", "5", "HOLD", LONG_HOLD, "BUYER", &who, "ID", &id]);
        assert_eq!(int(call(&mut con, &argv)), 879 - n, "{argv:?}");
    }
    assert_eq!(int(call(&mut con, &["XLEN", "ev"])), 122);
}

#[test]
fn more_than_sixteen_option_words_are_refused_before_anything_else() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "10"]));
    okay(call(&mut con, &["SET", "plain", "50"]));
    int(call(&mut con, &["LOCK.ACQUIRE", "lock", "w", "60000"]));
    let base: Vec<String> = option_groups("o", "b").into_iter().flatten().collect();
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["STOCK.DEDUCT".into(), "s".into(), "1".into()];
        v.extend(base.iter().cloned());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // 14 to 16 words: refused for what they are.
    let cases: Vec<(Vec<String>, String)> = vec![
        (with(&["X"]), unknown_option("X")),
        (with(&["X", "1"]), unknown_option("X")),
        (with(&["X", "1", "2"]), unknown_option("X")),
        (with(&["ID", "o2", "x"]), repeated_option("ID")),
    ];
    for (args, expected) in &cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&mut con, &argv, expected);
    }
    // 17 words and more: too many, whatever they are and whatever the key holds.
    let too_many = too_many_options(16);
    assert_eq!(too_many, "ERR too many options (at most 16 option words)");
    let mut vectors: Vec<Vec<String>> = vec![
        with(&["X", "1", "2", "3"]),
        with(&["ID", "o2", "BUYER", "b2"]),
        with(&["X"; 20]),
    ];
    vectors.push({
        let mut v: Vec<String> = vec!["STOCK.DEDUCT".into(), "s".into(), "1".into()];
        v.extend((0..1000).map(|i| format!("w{i}")));
        v
    });
    for key in ["s", "missing", "plain", "lock"] {
        let mut v = with(&["X", "1", "2", "3"]);
        v[1] = key.to_string();
        vectors.push(v);
    }
    for args in &vectors {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(argv.len() - 3 >= 17, "{argv:?}");
        refused(&mut con, &argv, &too_many);
    }
    assert_eq!(exists(&mut con, "missing"), 0);
    assert_eq!(exists(&mut con, "ev"), 0);
    assert_eq!(sinfo(&mut con, "s")["requests"], 0);
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// The entries of a stream: (entry id, fields in order).
fn xrange(con: &mut Connection, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
    let Ok(Value::Array(entries)) = call(con, &["XRANGE", stream, "-", "+"]) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .map(|e| {
            let Value::Array(pair) = e else {
                panic!("an entry: {e:?}")
            };
            let Value::Array(f) = &pair[1] else {
                panic!("fields: {pair:?}")
            };
            let fields = f.chunks(2).map(|c| (text(&c[0]), text(&c[1]))).collect();
            (text(&pair[0]), fields)
        })
        .collect()
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn a_deduct_event_carries_the_buyer() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "{s}", "3", "LIMIT", "2"]));
    int(call(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "{s}",
            "2",
            "ID",
            "o1",
            "BUYER",
            "alice",
            "FENCE",
            "9",
            "EVENTS",
            "{s}:ev",
        ],
    ));
    // A refusal appends nothing.
    assert_err(
        call(
            &mut con,
            &[
                "STOCK.DEDUCT",
                "{s}",
                "1",
                "ID",
                "o2",
                "BUYER",
                "alice",
                "EVENTS",
                "{s}:ev",
            ],
        ),
        code::LIMIT,
    );
    int(call(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "{s}",
            "1",
            "ID",
            "o3",
            "BUYER",
            "bob",
            "EVENTS",
            "{s}:ev",
        ],
    ));
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.REFUND", "{s}", "o1", "EVENTS", "{s}:ev"]
        )),
        2
    );
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "{s}", "0"])), 1);
    int(call(
        &mut con,
        &["STOCK.DEDUCT", "{s}", "1", "ID", "o4", "EVENTS", "{s}:ev"],
    ));
    let events: Vec<Vec<(String, String)>> = xrange(&mut con, "{s}:ev")
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    let expected = vec![
        owned(&[
            ("type", "deduct"),
            ("sku", "{s}"),
            ("quantity", "2"),
            ("remaining", "1"),
            ("id", "o1"),
            ("buyer", "alice"),
            ("fence", "9"),
        ]),
        owned(&[
            ("type", "deduct"),
            ("sku", "{s}"),
            ("quantity", "1"),
            ("remaining", "0"),
            ("id", "o3"),
            ("buyer", "bob"),
        ]),
        owned(&[("type", "soldout"), ("sku", "{s}")]),
        owned(&[
            ("type", "refund"),
            ("sku", "{s}"),
            ("id", "o1"),
            ("quantity", "2"),
            ("remaining", "2"),
        ]),
        owned(&[
            ("type", "deduct"),
            ("sku", "{s}"),
            ("quantity", "1"),
            ("remaining", "1"),
            ("id", "o4"),
        ]),
    ];
    assert_eq!(events, expected);
}

#[test]
fn stock_limit_sends_its_keyspace_event() {
    let s = Server::start_with(&["--notify-keyspace-events", "Ed"]);
    let mut sub = s.conn();
    let mut ps = sub.as_pubsub();
    ps.psubscribe("__keyevent@0__:*").expect("psubscribe");
    ps.subscribe("end-of-events").expect("subscribe");
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "5", "LIMIT", "1"]));
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "2"])), 1);
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "missing", "2"])), 0);
    assert_err(call(&mut con, &["STOCK.LIMIT", "s", "x"]), LIMIT_RANGE);
    bought(&mut con, "s", 2, "o1", "alice");
    assert_err(buy(&mut con, "s", 1, "o2", "alice"), code::LIMIT);
    assert_eq!(units(&mut con, "s", "alice"), 2);
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "0"])), 1);
    assert_eq!(int(call(&mut con, &["PUBLISH", "end-of-events", "."])), 1);
    let mut seen = Vec::new();
    loop {
        let msg = ps.get_message().expect("an event");
        let channel = msg.get_channel_name().to_string();
        if channel == "end-of-events" {
            break;
        }
        let event = channel.rsplit(':').next().unwrap_or_default().to_string();
        let key: String = msg.get_payload().unwrap_or_default();
        seen.push((event, key));
    }
    let want: Vec<(String, String)> = [
        ("stock.limit", "s"),
        ("stock.deduct", "s"),
        ("stock.limit", "s"),
    ]
    .iter()
    .map(|(e, k)| (e.to_string(), k.to_string()))
    .collect();
    assert_eq!(seen, want);
}

#[test]
fn limit_writes_mark_the_dataset_dirty_and_reads_and_refusals_do_not() {
    let s = server();
    let mut con = s.conn();
    let changes =
        |con: &mut Connection| info_int(con, "persistence", "rdb_changes_since_last_save");
    okay(call(&mut con, &["STOCK.SET", "s", "10", "LIMIT", "1"]));
    bought(&mut con, "s", 1, "o1", "alice");
    let before = changes(&mut con);
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "s", "2"])), 1);
    let after = changes(&mut con);
    assert!(after > before, "STOCK.LIMIT left the dataset clean");
    units(&mut con, "s", "alice");
    detail(&mut con, "s", "o1");
    sinfo(&mut con, "s");
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "missing", "2"])), 0);
    bought(&mut con, "s", 1, "o1", "bob");
    assert_eq!(
        changes(&mut con),
        after,
        "a read, a replay or a no-op marked it dirty"
    );
}

// ---------------------------------------------------------------------------------------------
// Persistence and movement
// ---------------------------------------------------------------------------------------------

#[test]
fn limits_and_buyers_survive_debug_reload() {
    let mut s = server();
    let mut con = s.conn();
    sale(&mut con, "s", 0);
    let before = snapshot(&mut con, "s");
    okay(call(&mut con, &["DEBUG", "RELOAD"]));
    assert_eq!(snapshot(&mut con, "s"), before);
    check_sale(&mut con, "s", "DEBUG RELOAD");
    check_limit_enforced(&mut con, "s", "DEBUG RELOAD");
    // And a restart from the RDB.
    okay(call(&mut con, &["SAVE"]));
    let saved = snapshot(&mut con, "s");
    s.restart();
    let mut con = s.conn();
    assert_eq!(snapshot(&mut con, "s"), saved, "a restart from the RDB");
}

/// Waits until no AOF rewrite is running or scheduled.
fn wait_for_rewrite(con: &mut Connection) {
    assert!(
        wait_until(EVENT_DEADLINE, || {
            let p = info(con, "persistence");
            info_value(&p, "aof_rewrite_in_progress").as_deref() == Some("0")
                && info_value(&p, "aof_rewrite_scheduled").as_deref() == Some("0")
        }),
        "the AOF rewrite did not finish"
    );
}

fn limits_and_buyers_survive_the_aof(preamble: &str) {
    let mut s = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--aof-use-rdb-preamble",
        preamble,
    ]);
    let mut con = s.conn();
    // Written to the AOF as effects, then restarted from them.
    sale(&mut con, "{s}:tail", 0);
    okay(call(
        &mut con,
        &["STOCK.SET", "{s}:limit", "10", "LIMIT", "4"],
    ));
    bought(&mut con, "{s}:limit", 1, "o1", "zed");
    let tail = snapshot(&mut con, "{s}:tail");
    let limit = sinfo(&mut con, "{s}:limit");
    s.restart();
    let mut con = s.conn();
    assert_eq!(
        snapshot(&mut con, "{s}:tail"),
        tail,
        "preamble {preamble}: the AOF"
    );
    assert_eq!(sinfo(&mut con, "{s}:limit"), limit, "preamble {preamble}");
    check_sale(&mut con, "{s}:tail", "the AOF");
    // Rewritten (the base as an RDB or as commands), with changes after the rewrite.
    sale(&mut con, "{s}:rewritten", 0);
    call(&mut con, &["BGREWRITEAOF"]).expect("BGREWRITEAOF");
    wait_for_rewrite(&mut con);
    assert_eq!(int(call(&mut con, &["STOCK.LIMIT", "{s}:limit", "7"])), 1);
    sale(&mut con, "{s}:after", 1);
    let snaps: Vec<(String, Snapshot)> = ["{s}:tail", "{s}:rewritten", "{s}:after"]
        .iter()
        .map(|k| (k.to_string(), snapshot(&mut con, k)))
        .collect();
    let limit = sinfo(&mut con, "{s}:limit");
    assert_eq!(limit["limit"], 7);
    let digest = debug_digest(&mut con);
    s.restart();
    let mut con = s.conn();
    assert_eq!(
        debug_digest(&mut con),
        digest,
        "preamble {preamble}: the rewrite"
    );
    for (key, snap) in &snaps {
        assert_eq!(&snapshot(&mut con, key), snap, "preamble {preamble}: {key}");
        check_sale(&mut con, key, "the rewritten AOF");
    }
    assert_eq!(sinfo(&mut con, "{s}:limit"), limit);
    assert_eq!(units(&mut con, "{s}:limit", "zed"), 1);
    check_limit_enforced(&mut con, "{s}:rewritten", "the rewritten AOF");
    // A rewrite without the preamble writes the limit and the buyers as commands too.
    if preamble == "no" {
        call(&mut con, &["BGREWRITEAOF"]).expect("BGREWRITEAOF");
        wait_for_rewrite(&mut con);
        let digest = debug_digest(&mut con);
        s.restart();
        let mut con = s.conn();
        assert_eq!(debug_digest(&mut con), digest, "a second rewrite");
        check_sale(&mut con, "{s}:after", "a second rewrite");
        assert_eq!(sinfo(&mut con, "{s}:limit")["limit"], 7);
    }
}

#[test]
fn limits_and_buyers_survive_the_aof_and_its_rewrite_with_rdb_preamble() {
    limits_and_buyers_survive_the_aof("yes");
}

#[test]
fn limits_and_buyers_survive_the_aof_and_its_rewrite_without_rdb_preamble() {
    limits_and_buyers_survive_the_aof("no");
}

#[test]
fn dump_restore_copy_and_migrate_keep_limits_and_buyers() {
    let s = server();
    let other = server();
    let mut con = s.conn();
    let mut o = other.conn();
    sale(&mut con, "s", 0);
    let original = snapshot(&mut con, "s");
    // DUMP/RESTORE on the same server and into another one.
    let payload = dump(&mut con, "s");
    okay(restore(&mut con, "restored", 0, &payload, &[]));
    assert_eq!(snapshot(&mut con, "restored"), original, "RESTORE");
    okay(restore(&mut o, "s", 0, &payload, &[]));
    assert_eq!(
        snapshot(&mut o, "s"),
        original,
        "RESTORE into another server"
    );
    // COPY: two sales that go their own ways.
    assert_eq!(int(call(&mut con, &["COPY", "s", "copy"])), 1);
    assert_eq!(snapshot(&mut con, "copy"), original, "COPY");
    check_sale(&mut con, "copy", "COPY");
    check_limit_enforced(&mut con, "copy", "COPY");
    assert_eq!(
        snapshot(&mut con, "s"),
        original,
        "the copy's sale changed the original"
    );
    check_limit_enforced(&mut con, "restored", "RESTORE");
    check_limit_enforced(&mut o, "s", "RESTORE into another server");
    // MIGRATE into a third server, with COPY and then for good.
    let third = server();
    let mut t = third.conn();
    let port = third.port().to_string();
    simple(call(
        &mut con,
        &["MIGRATE", "127.0.0.1", &port, "s", "0", "5000", "COPY"],
    ));
    assert_eq!(snapshot(&mut t, "s"), original, "MIGRATE COPY");
    int(call(&mut t, &["DEL", "s"]));
    simple(call(
        &mut con,
        &["MIGRATE", "127.0.0.1", &port, "s", "0", "5000"],
    ));
    assert_eq!(exists(&mut con, "s"), 0);
    assert_eq!(snapshot(&mut t, "s"), original, "MIGRATE");
    check_sale(&mut t, "s", "MIGRATE");
    check_limit_enforced(&mut t, "s", "MIGRATE");
}

#[test]
fn a_replica_keeps_limits_and_buyers_and_answers_like_its_master() {
    let master = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let mut m = master.conn();
    // Before the replica: the full sync carries it.
    sale(&mut m, "{s}:synced", 0);
    let port = master.port().to_string();
    // The replica's own bounds never apply to what its master decided.
    let replica = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--fence.max-buyers",
        "1",
        "--fence.max-id-length",
        "3",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let mut r = replica.conn();
    wait_for_sync(&master, &replica, SYNC);
    assert_eq!(
        snapshot(&mut r, "{s}:synced"),
        snapshot(&mut m, "{s}:synced")
    );
    // After: every change streams as an effect.
    sale(&mut m, "{s}:streamed", 1);
    assert_eq!(int(call(&mut m, &["STOCK.LIMIT", "{s}:synced", "5"])), 1);
    bought(&mut m, "{s}:synced", 2, "a-2", "alice");
    assert_eq!(int(call(&mut m, &["STOCK.REFUND", "{s}:synced", "b-1"])), 1);
    okay(call(
        &mut m,
        &["STOCK.SET", "{s}:reset", "10", "LIMIT", "2"],
    ));
    bought(&mut m, "{s}:reset", 2, "o1", "alice");
    okay(call(&mut m, &["STOCK.SET", "{s}:reset", "20"]));
    bought(&mut m, "{s}:reset", 1, "o2", "bob");
    okay(call(
        &mut m,
        &["STOCK.SET", "{s}:cleared", "10", "LIMIT", "2"],
    ));
    okay(call(
        &mut m,
        &["STOCK.SET", "{s}:cleared", "10", "LIMIT", "0"],
    ));
    wait_for_sync(&master, &replica, SYNC);
    for key in ["{s}:synced", "{s}:streamed"] {
        assert_eq!(snapshot(&mut r, key), snapshot(&mut m, key), "{key}");
    }
    check_sale(&mut r, "{s}:streamed", "the replica");
    for key in ["{s}:reset", "{s}:cleared"] {
        assert_eq!(sinfo(&mut r, key), sinfo(&mut m, key), "{key}");
        assert_eq!(
            digest_value(&mut r, key),
            digest_value(&mut m, key),
            "{key}"
        );
    }
    let i = sinfo(&mut r, "{s}:reset");
    assert_eq!((i["limit"], i["buyers"]), (2, 1));
    assert_eq!(sinfo(&mut r, "{s}:cleared")["limit"], 0);
    assert_eq!(units(&mut r, "{s}:synced", "alice"), 4);
    assert_eq!(units(&mut r, "{s}:synced", "bob"), 1);
    assert_eq!(units(&mut r, "{s}:reset", "alice"), 0);
    assert_eq!(units(&mut r, "{s}:reset", "bob"), 1);
    assert_eq!(buyer(&mut r, "{s}:missing", "bob"), None);
    // A hold past its deadline counts as returned on both before the master applies its
    // expiry (its writes paused), and the master's expiry reaches the replica.
    assert_eq!(held(&mut m, "{s}:reset", 2, "h1", "carol", "5000"), 17);
    wait_for_sync(&master, &replica, SYNC);
    assert_eq!(units(&mut r, "{s}:reset", "carol"), 2);
    let deadline = detail(&mut m, "{s}:reset", "h1")
        .and_then(|d| d.deadline)
        .expect("a deadline");
    okay(call(&mut m, &["CLIENT", "PAUSE", "60000", "WRITE"]));
    assert_eq!(
        detail(&mut m, "{s}:reset", "h1")
            .map(|d| d.state)
            .as_deref(),
        Some("held"),
        "paused before the deadline"
    );
    assert!(wait_until(RETURNED, || server_ms(&mut r) > deadline + 300));
    assert_eq!(units(&mut r, "{s}:reset", "carol"), 0);
    assert_eq!(units(&mut m, "{s}:reset", "carol"), 0);
    assert_eq!(fence_counter(&mut m, "holds_expired"), 2);
    okay(call(&mut m, &["CLIENT", "UNPAUSE"]));
    wait_expired(&mut m, "{s}:reset", "h1", 3);
    wait_for_sync(&master, &replica, SYNC);
    assert_eq!(
        digest_value(&mut r, "{s}:reset"),
        digest_value(&mut m, "{s}:reset")
    );
    assert_eq!(debug_digest(&mut r), debug_digest(&mut m));
    assert_eq!(units(&mut r, "{s}:reset", "carol"), 0);
    // The replica counts nothing and logged no refused effect.
    assert_eq!(fence_counter(&mut r, "limit_refusals"), 0);
    assert_eq!(fence_counter(&mut r, "deductions"), 0);
    let errors = replication_errors(&replica.log());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        !replica.log().contains("refused a replicated or AOF effect"),
        "{}",
        tail(&replica.log())
    );
    // A write on the replica is refused by Redis (READONLY); reads are served.
    assert_err(call(&mut r, &["STOCK.LIMIT", "{s}:reset", "9"]), "READONLY");
    // Promoted, it enforces the limit itself, with its own bounds from then on.
    okay(call(&mut r, &["REPLICAOF", "NO", "ONE"]));
    okay(call(
        &mut r,
        &["CONFIG", "SET", "fence.max-id-length", "512"],
    ));
    okay(call(
        &mut r,
        &["CONFIG", "SET", "fence.max-buyers", "1000000"],
    ));
    check_limit_enforced(&mut r, "{s}:streamed", "the promoted replica");
}

#[test]
fn the_internal_limit_effect_is_refused_to_clients() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "10", "LIMIT", "1"]));
    let before = debug_digest(&mut con);
    for args in [
        &["FENCE.LIMIT", "s", "5"][..],
        &["FENCE.LIMIT", "missing", "5"],
        &[
            "FENCE.ENTRY",
            "s",
            "9",
            "0",
            "1",
            "o",
            "1",
            "deducted",
            "buyer",
            "alice",
        ],
    ] {
        assert_err(call(&mut con, args), INTERNAL_ONLY);
    }
    assert_eq!(debug_digest(&mut con), before);
    assert_eq!(sinfo(&mut con, "s")["limit"], 1);
    assert_eq!(exists(&mut con, "missing"), 0);
}

// ---------------------------------------------------------------------------------------------
// Many buyers racing, with retries and refunds
// ---------------------------------------------------------------------------------------------

const THREADS: usize = 8;
const BUYERS: usize = 200;
const LIMIT: i64 = 3;
const INITIAL: i64 = 400;
const CALLS_EACH: usize = 250;
/// Each write is sent this many times in all (the first and its retries).
const SENDS: usize = 3;
const SEED: u64 = 0x5eed_b0b5;

/// What one thread did and saw.
#[derive(Default)]
struct Tally {
    /// Every request id it sent, with its quantity, buyer and whether it was held.
    sent: Vec<(String, i64, String, bool)>,
    /// Ids that were deducted (some reply was an integer).
    acked: BTreeSet<String>,
    /// Ids refunded by this thread (a reply of the quantity).
    refunded: BTreeSet<String>,
    /// Ids confirmed.
    confirmed: BTreeSet<String>,
    deductions: i64,
    replays: i64,
    sold_out: i64,
    limit_refusals: i64,
    holds: i64,
}

fn race_thread(s: &Server, t: usize) -> Tally {
    let mut con = s.conn();
    let mut rng = StdRng::seed_from_u64(SEED + t as u64);
    let mut tally = Tally::default();
    let mut mine: Vec<(String, i64)> = Vec::new();
    for n in 0..CALLS_EACH {
        let roll = rng.random_range(0..10);
        if roll < 2 && !mine.is_empty() {
            // Refund (or confirm) one of this thread's orders, sent SENDS times.
            let (id, q) = mine.swap_remove(rng.random_range(0..mine.len()));
            let confirm = roll == 1;
            for attempt in 0..SENDS {
                let cmd = if confirm {
                    "STOCK.CONFIRM"
                } else {
                    "STOCK.REFUND"
                };
                let mut args = vec![cmd, "s", &id];
                if !confirm {
                    args.extend(["EVENTS", "ev"]);
                }
                let got = int(call(&mut con, &args));
                if confirm {
                    assert_eq!(got, 1, "{args:?}");
                    tally.confirmed.insert(id.clone());
                } else if attempt == 0 {
                    assert_eq!(got, q, "{args:?}");
                    tally.refunded.insert(id.clone());
                } else {
                    assert_eq!(got, 0, "{args:?}: refunded twice");
                }
            }
            if confirm {
                mine.push((id, q));
            }
            continue;
        }
        let id = format!("t{t}-{n}");
        let q = rng.random_range(1..=2i64);
        let who = format!("buyer-{}", rng.random_range(0..BUYERS));
        let hold = rng.random_bool(0.3);
        let qs = q.to_string();
        let mut args = vec!["STOCK.DEDUCT", "s", &qs, "ID", &id, "BUYER", &who];
        if hold {
            args.extend(["HOLD", LONG_HOLD]);
        }
        args.extend(["EVENTS", "ev"]);
        tally.sent.push((id.clone(), q, who.clone(), hold));
        let mut deducted = false;
        for _ in 0..SENDS {
            match call(&mut con, &args) {
                Ok(Value::Int(left)) => {
                    assert!(left >= 0, "{args:?}: {left} left");
                    if deducted {
                        tally.replays += 1;
                    } else {
                        deducted = true;
                        tally.deductions += 1;
                        tally.holds += i64::from(hold);
                    }
                }
                Ok(Value::Nil) => {
                    assert!(!deducted, "{args:?}: nil after a deduction");
                    tally.sold_out += 1;
                }
                Err(e) => {
                    let e = error_text(&e);
                    assert!(!deducted, "{args:?}: {e} after a deduction");
                    // LIMIT buyer <b> has <n> of at most 3, with n + q past the limit.
                    let prefix = format!("LIMIT buyer {who} has ");
                    let rest = e
                        .strip_prefix(&prefix)
                        .unwrap_or_else(|| panic!("{args:?}: {e}"));
                    let (has, max) = rest
                        .split_once(" of at most ")
                        .unwrap_or_else(|| panic!("{args:?}: {e}"));
                    let has: i64 = has.parse().expect("n");
                    assert_eq!(max, LIMIT.to_string(), "{e}");
                    assert!(has <= LIMIT && has + q > LIMIT, "{args:?}: {e}");
                    tally.limit_refusals += 1;
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        if deducted {
            tally.acked.insert(id.clone());
            mine.push((id, q));
        }
    }
    tally
}

#[test]
fn many_buyers_racing_with_retries_and_refunds_never_pass_the_limit() {
    let s = server();
    let mut con = s.conn();
    okay(call(
        &mut con,
        &[
            "STOCK.SET",
            "s",
            &INITIAL.to_string(),
            "LIMIT",
            &LIMIT.to_string(),
        ],
    ));
    let tallies: Vec<Tally> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let s = &s;
                scope.spawn(move || race_thread(s, t))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a racing thread"))
            .collect()
    });
    let mut sent = Vec::new();
    let (mut acked, mut refunded, mut confirmed) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let (mut deductions, mut replays, mut sold_out, mut limit_refusals, mut holds) =
        (0, 0, 0, 0, 0);
    for t in tallies {
        sent.extend(t.sent);
        acked.extend(t.acked);
        refunded.extend(t.refunded);
        confirmed.extend(t.confirmed);
        deductions += t.deductions;
        replays += t.replays;
        sold_out += t.sold_out;
        limit_refusals += t.limit_refusals;
        holds += t.holds;
    }
    assert!(limit_refusals > 0, "the race never reached the limit");
    assert!(!refunded.is_empty(), "no refund happened");
    // The ledger: every acknowledged id holds its entry with its buyer, the others are absent.
    let mut per_buyer: BTreeMap<String, i64> = BTreeMap::new();
    let mut recorded: BTreeSet<String> = BTreeSet::new();
    let mut deducted = 0;
    let mut held_count = 0;
    for (id, q, who, hold) in &sent {
        let d = detail(&mut con, "s", id);
        if !acked.contains(id) {
            assert_eq!(d, None, "{id} was never acknowledged but is in the ledger");
            continue;
        }
        let d = d.unwrap_or_else(|| panic!("{id} was acknowledged but is not in the ledger"));
        let state = if refunded.contains(id) {
            "refunded"
        } else if *hold && confirmed.contains(id) {
            "confirmed"
        } else if *hold {
            "held"
        } else {
            "deducted"
        };
        assert_eq!(
            (d.state.as_str(), d.quantity, d.buyer.as_deref()),
            (state, *q, Some(who.as_str())),
            "{id}"
        );
        recorded.insert(who.clone());
        if d.holds() {
            *per_buyer.entry(who.clone()).or_default() += q;
            deducted += q;
        }
        held_count += i64::from(state == "held");
    }
    // Every buyer: what STOCK.BUYER says is the sum over the ledger, and at most the limit.
    for b in 0..BUYERS {
        let who = format!("buyer-{b}");
        let n = units(&mut con, "s", &who);
        assert!(n <= LIMIT, "{who} holds {n}, past the limit of {LIMIT}");
        assert_eq!(n, per_buyer.get(&who).copied().unwrap_or(0), "{who}");
    }
    let i = sinfo(&mut con, "s");
    assert!(i["available"] >= 0, "{i:?}");
    assert_eq!(i["available"] + i["deducted"], INITIAL, "{i:?}");
    assert_eq!(i["deducted"], deducted, "{i:?}");
    assert_eq!(i["requests"], acked.len() as i64, "{i:?}");
    assert_eq!(i["buyers"], recorded.len() as i64, "{i:?}");
    assert_eq!(i["held"], held_count, "{i:?}");
    assert_eq!(i["limit"], LIMIT);
    // INFO fence counts exactly what the clients saw.
    assert_eq!(fence_counter(&mut con, "deductions"), deductions);
    assert_eq!(fence_counter(&mut con, "replays"), replays);
    assert_eq!(fence_counter(&mut con, "deductions_sold_out"), sold_out);
    assert_eq!(fence_counter(&mut con, "limit_refusals"), limit_refusals);
    assert_eq!(fence_counter(&mut con, "holds"), holds);
    assert_eq!(fence_counter(&mut con, "refunds"), refunded.len() as i64);
    // The stream is the order in which the server applied them: replayed, no buyer is ever past
    // the limit and the stock never below zero.
    let mut holding: BTreeMap<String, i64> = BTreeMap::new();
    let mut of: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut available = INITIAL;
    let mut deduct_events = 0;
    for (entry, fields) in xrange(&mut con, "ev") {
        let f: BTreeMap<String, String> = fields.into_iter().collect();
        let q: i64 = f
            .get("quantity")
            .map_or(0, |q| q.parse().expect("quantity"));
        match f["type"].as_str() {
            "deduct" => {
                deduct_events += 1;
                let who = f["buyer"].clone();
                available -= q;
                let h = holding.entry(who.clone()).or_default();
                *h += q;
                assert!(*h <= LIMIT, "{entry}: {who} holds {h}");
                of.insert(f["id"].clone(), (who, q));
            }
            "refund" => {
                available += q;
                let (who, dq) = of[&f["id"]].clone();
                assert_eq!(dq, q, "{entry}");
                *holding.get_mut(&who).expect("a buyer") -= q;
            }
            "soldout" => assert_eq!(available, 0, "{entry}"),
            other => panic!("{entry}: an event {other}"),
        }
        assert!(available >= 0, "{entry}: {available}");
        if let Some(r) = f.get("remaining") {
            assert_eq!(r.parse::<i64>().expect("remaining"), available, "{entry}");
        }
    }
    assert_eq!(deduct_events, acked.len() as i64);
    assert_eq!(available, i["available"]);
    holding.retain(|_, n| *n > 0);
    assert_eq!(
        holding,
        per_buyer.into_iter().filter(|(_, n)| *n > 0).collect()
    );
    println!(
        "buyers race: {} orders sent, {} deducted, {} replays, {} sold out, {} LIMIT refusals, \
         {} refunded, {} confirmed, {} buyers recorded, {} left",
        sent.len(),
        acked.len(),
        replays,
        sold_out,
        limit_refusals,
        refunded.len(),
        confirmed.len(),
        recorded.len(),
        i["available"]
    );
}

/// More holds due at once than one command returns (1,000): the buyer's own due hold still
/// counts as returned when the limit is checked. One MULTI, so the expiry timer cannot run: the
/// holds are made, come due, and the deduction finds them due, in that order; u's hold is the
/// latest, so it is not among the first 1,000 returned.
#[test]
fn a_limit_counts_what_the_buyer_holds_when_more_holds_are_due_than_one_command_returns() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "100000", "LIMIT", "1"]));
    okay(call(&mut con, &["MULTI"]));
    let others = 1_200;
    for i in 0..others {
        let (id, buyer) = (format!("o{i}"), format!("b{i}"));
        call(
            &mut con,
            &[
                "STOCK.DEDUCT",
                "s",
                "1",
                "ID",
                &id,
                "BUYER",
                &buyer,
                "HOLD",
                "50",
            ],
        )
        .expect("QUEUED");
    }
    for args in [
        &["DEBUG", "SLEEP", "0.01"][..],
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "u1",
            "BUYER",
            "u",
            "HOLD",
            "50",
        ],
        &["DEBUG", "SLEEP", "0.1"],
        &["STOCK.BUYER", "s", "u"],
        &["STOCK.DEDUCT", "s", "1", "ID", "u2", "BUYER", "u"],
        &["STOCK.BUYER", "s", "u"],
    ] {
        call(&mut con, args).expect("QUEUED");
    }
    let Ok(Value::Array(replies)) = call(&mut con, &["EXEC"]) else {
        panic!("EXEC")
    };
    let tail = &replies[others..];
    assert_eq!(tail[3], Value::Int(0), "u's due hold reads as returned");
    // 1,200 others held and 1,000 of them returned by the deduction's first step, then u's
    // own due hold, then u's new unit.
    assert_eq!(
        tail[4],
        Value::Int(100_000 - 1_200 - 1 + 1_000 + 1 - 1),
        "u bought again"
    );
    assert_eq!(tail[5], Value::Int(1));
    assert_eq!(detail(&mut con, "s", "u1").expect("u1").state, "expired");
    // The rest come back once each, by the timer.
    assert!(wait_until(RETURNED, || sinfo(&mut con, "s")["held"] == 0));
    let i = sinfo(&mut con, "s");
    assert_eq!(
        (i["available"], i["deducted"], i["buyers"]),
        (100_000 - 1, 1, others as i64 + 1),
        "{i:?}"
    );
}

/// The same backlog of due holds, on `STOCK.DEDUCT … EVENTS` whose stream was deleted: the
/// buyer's expiry (announced on that stream) comes back before the deduction opens the stream,
/// so the stream takes the expiry's entry, then the deduction's, under one handle (a second
/// handle on a key created meanwhile crashed the server).
#[test]
fn a_buyer_s_due_hold_announced_on_a_deleted_stream_comes_back_before_the_deduction_opens_it() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", "s", "100000", "LIMIT", "1"]));
    okay(call(&mut con, &["MULTI"]));
    for i in 0..1_200 {
        let (id, buyer) = (format!("o{i}"), format!("b{i}"));
        call(
            &mut con,
            &[
                "STOCK.DEDUCT",
                "s",
                "1",
                "ID",
                &id,
                "BUYER",
                &buyer,
                "HOLD",
                "50",
            ],
        )
        .expect("QUEUED");
    }
    for args in [
        &["DEBUG", "SLEEP", "0.01"][..],
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "u1",
            "BUYER",
            "u",
            "HOLD",
            "50",
            "EVENTS",
            "ev",
        ],
        &["DEL", "ev"],
        &["DEBUG", "SLEEP", "0.1"],
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "u2",
            "BUYER",
            "u",
            "EVENTS",
            "ev",
        ],
    ] {
        call(&mut con, args).expect("QUEUED");
    }
    let Ok(Value::Array(replies)) = call(&mut con, &["EXEC"]) else {
        panic!("EXEC")
    };
    assert!(matches!(replies.last(), Some(Value::Int(_))), "{replies:?}");
    call(&mut con, &["PING"]).expect("the server is alive");
    let Ok(Value::Array(entries)) = call(&mut con, &["XRANGE", "ev", "-", "+"]) else {
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
    assert_eq!(units(&mut con, "s", "u"), 1);
}
