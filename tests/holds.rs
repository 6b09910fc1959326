//! `STOCK.DEDUCT … HOLD ms`, `STOCK.CONFIRM`, `STOCK.REQUEST … DETAIL` and the expiry of holds,
//! as the README's command reference and "Unpaid orders" section state them: every reply and
//! error; the state machine (held, confirmed, refunded, expired); expiry by the module's timer
//! and by the command that finds a hold due (exactly one of payment and deadline wins); no
//! expiry while writes are paused or on a replica, whose reads show the units back; and the
//! index of deadlines following its stock through RENAME, MOVE, COPY, SWAPDB, FLUSHALL,
//! DUMP/RESTORE, DEBUG RELOAD and an AOF restart, with holds found due at load returned once
//! the server may write. The crash, failover and cluster tests are in tests/holds_faults.rs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use redis::{Connection, Value};

const SKU: &str = "{sku:42}";
const ORDERS: &str = "{sku:42}:orders";
/// How long a hold's return may take in these tests (a generous bound on a loaded machine:
/// the contract is "at the deadline", measured in `make bench`).
const RETURNED: Duration = Duration::from_secs(10);
/// How long a replica may take to catch up.
const SYNC: Duration = Duration::from_secs(15);

fn server() -> Server {
    Server::start_with(&["--enable-debug-command", "yes"])
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

/// A flat field/value array or a map, as field -> value.
fn fields(v: Value) -> BTreeMap<String, Value> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Array(items) => items
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect(),
        Value::Map(pairs) => pairs,
        other => panic!("not a map: {other:?}"),
    };
    pairs.into_iter().map(|(k, v)| (text(&k), v)).collect()
}

fn number(m: &BTreeMap<String, Value>, name: &str) -> i64 {
    match m.get(name) {
        Some(Value::Int(n)) => *n,
        other => panic!("{name}: {other:?} in {m:?}"),
    }
}

/// `STOCK.INFO` as field -> integer.
fn sinfo(con: &mut Connection, key: &str) -> BTreeMap<String, i64> {
    let m = fields(call(con, &["STOCK.INFO", key]).expect("STOCK.INFO"));
    m.keys().map(|k| (k.clone(), number(&m, k))).collect()
}

/// `STOCK.REQUEST key id DETAIL` as (state, quantity, deadline or 0); None when unknown.
fn detail(con: &mut Connection, key: &str, id: &str) -> Option<(String, i64, i64)> {
    match call(con, &["STOCK.REQUEST", key, id, "DETAIL"]).expect("DETAIL") {
        Value::Nil => None,
        v => {
            let m = fields(v);
            let deadline = if m.contains_key("deadline") {
                number(&m, "deadline")
            } else {
                0
            };
            Some((text(&m["state"]), number(&m, "quantity"), deadline))
        }
    }
}

fn state(con: &mut Connection, key: &str, id: &str) -> String {
    detail(con, key, id).map(|d| d.0).unwrap_or_default()
}

fn fence_counter(con: &mut Connection, name: &str) -> i64 {
    info_int(con, "fence", &format!("fence_{name}"))
}

fn hold(con: &mut Connection, key: &str, quantity: i64, id: &str, ms: i64) -> Option<i64> {
    match call(
        con,
        &[
            "STOCK.DEDUCT",
            key,
            &quantity.to_string(),
            "ID",
            id,
            "HOLD",
            &ms.to_string(),
        ],
    ) {
        Ok(Value::Int(n)) => Some(n),
        Ok(Value::Nil) => None,
        other => panic!("STOCK.DEDUCT {key} {quantity} ID {id} HOLD {ms}: {other:?}"),
    }
}

fn hold_with_events(con: &mut Connection, key: &str, quantity: i64, id: &str, ms: i64) -> i64 {
    let q = quantity.to_string();
    let ms = ms.to_string();
    int(call(
        con,
        &[
            "STOCK.DEDUCT",
            key,
            &q,
            "ID",
            id,
            "HOLD",
            &ms,
            "EVENTS",
            ORDERS,
        ],
    ))
}

/// The entries of a stream: (entry id, fields).
fn xrange(con: &mut Connection, stream: &str) -> Vec<(String, BTreeMap<String, String>)> {
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

fn expire_events(con: &mut Connection, stream: &str) -> Vec<(String, BTreeMap<String, String>)> {
    xrange(con, stream)
        .into_iter()
        .filter(|(_, f)| f.get("type").map(String::as_str) == Some("expire"))
        .collect()
}

/// Waits until this server has returned `n` holds in all (`fence_holds_expired`).
#[track_caller]
fn wait_expired(con: &mut Connection, n: i64, what: &str) {
    let mut last = 0;
    let done = wait_until(RETURNED, || {
        last = fence_counter(con, "holds_expired");
        last >= n
    });
    assert!(
        done,
        "{what}: {last} of {n} holds returned after {RETURNED:?}"
    );
    assert_eq!(last, n, "{what}: more holds returned than made");
}

/// The conservation invariant of the README for a stock whose deductions all carried an ID:
/// available + deducted = initial + restocks, and the units of the entries that hold units
/// add up to deducted.
#[track_caller]
fn assert_conserved(con: &mut Connection, key: &str, initial: i64, ids: &[&str]) {
    let i = sinfo(con, key);
    assert_eq!(
        i["available"] + i["deducted"],
        initial,
        "{key}: available + deducted in {i:?}"
    );
    let holding: i64 = ids
        .iter()
        .filter_map(|id| detail(con, key, id))
        .filter(|(s, _, _)| matches!(s.as_str(), "deducted" | "held" | "confirmed"))
        .map(|(_, q, _)| q)
        .sum();
    assert_eq!(
        holding, i["deducted"],
        "{key}: units of the entries in {i:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The contract: replies and errors
// ---------------------------------------------------------------------------------------------

#[test]
fn hold_confirm_and_detail_reply_as_the_contract_says() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", SKU, "10"]));
    let before = server_ms(&mut con);
    assert_eq!(hold(&mut con, SKU, 2, "o1", 600_000), Some(8));
    let after = server_ms(&mut con);
    let (st, q, deadline) = detail(&mut con, SKU, "o1").expect("o1");
    assert_eq!((st.as_str(), q), ("held", 2));
    assert!(
        deadline >= before + 600_000 && deadline <= after + 600_000,
        "deadline {deadline} not within [{before}, {after}] + 600000"
    );
    // Without DETAIL: the units the request holds, as before.
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", SKU, "o1"])), 2);
    let i = sinfo(&mut con, SKU);
    assert_eq!(
        (i["available"], i["deducted"], i["requests"]),
        (8, 2, 1),
        "{i:?}"
    );
    assert_eq!(
        (i["held"], i["held-units"], i["next-deadline"]),
        (1, 2, deadline)
    );
    // A replay answers the current remaining quantity and moves nothing, whatever HOLD says.
    assert_eq!(hold(&mut con, SKU, 5, "o1", 10), Some(8));
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", SKU, "1", "ID", "o1"])),
        8
    );
    assert_eq!(
        detail(&mut con, SKU, "o1"),
        Some(("held".into(), 2, deadline))
    );
    // Confirm: 1, and 1 again; the deadline is gone, the units stay sold.
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", SKU, "o1"])), 1);
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", SKU, "o1"])), 1);
    assert_eq!(
        detail(&mut con, SKU, "o1"),
        Some(("confirmed".into(), 2, 0))
    );
    let i = sinfo(&mut con, SKU);
    assert_eq!(
        (
            i["available"],
            i["deducted"],
            i["held"],
            i["held-units"],
            i["next-deadline"]
        ),
        (8, 2, 0, 0, 0)
    );
    // A deduction without a hold confirms as 1 and stays deducted.
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", SKU, "3", "ID", "plain"])),
        5
    );
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", SKU, "plain"])), 1);
    assert_eq!(
        detail(&mut con, SKU, "plain"),
        Some(("deducted".into(), 3, 0))
    );
    // Unknown ids and missing keys: 0 and nil.
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", SKU, "nobody"])), 0);
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", "missing", "o1"])), 0);
    assert_eq!(detail(&mut con, SKU, "nobody"), None);
    assert_eq!(detail(&mut con, "missing", "o1"), None);
    // Refunding a confirmed entry gives its units back; confirming it then is REFUNDED.
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", SKU, "o1"])), 2);
    assert_eq!(detail(&mut con, SKU, "o1"), Some(("refunded".into(), 2, 0)));
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", SKU, "o1"])), 0);
    assert_eq!(
        err(call(&mut con, &["STOCK.CONFIRM", SKU, "o1"])),
        refunded("o1")
    );
    // Refunding a held entry cancels it.
    assert_eq!(hold(&mut con, SKU, 1, "o2", 600_000), Some(6));
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", SKU, "o2"])), 1);
    assert_eq!(detail(&mut con, SKU, "o2"), Some(("refunded".into(), 1, 0)));
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", SKU, "o2"])), 0);
    assert_conserved(&mut con, SKU, 10, &["o1", "o2", "plain"]);
    // RESP3: DETAIL and INFO are maps.
    let mut r3 = s.conn_resp3();
    assert_eq!(hold(&mut r3, SKU, 1, "o3", 600_000), Some(6));
    let d = call(&mut r3, &["STOCK.REQUEST", SKU, "o3", "DETAIL"]).expect("DETAIL");
    assert!(matches!(d, Value::Map(ref p) if p.len() == 3), "{d:?}");
    let d = call(&mut r3, &["STOCK.REQUEST", SKU, "plain", "detail"]).expect("detail");
    assert!(matches!(d, Value::Map(ref p) if p.len() == 2), "{d:?}");
    let i = call(&mut r3, &["STOCK.INFO", SKU]).expect("INFO");
    assert!(matches!(i, Value::Map(ref p) if p.len() == 10), "{i:?}");
    // Counters.
    assert_eq!(fence_counter(&mut con, "holds"), 3);
    assert_eq!(fence_counter(&mut con, "confirms"), 1);
    assert_eq!(fence_counter(&mut con, "holds_expired"), 0);
}

#[test]
fn bad_holds_and_confirms_are_refused_and_change_nothing() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", SKU, "10"]));
    assert_eq!(hold(&mut con, SKU, 1, "kept", 600_000), Some(9));
    okay(call(&mut con, &["SET", "plain", "50"]));
    int(call(&mut con, &["LOCK.ACQUIRE", "lock", "w", "60000"]));
    let max = fence_core::config::MAX_HOLD_MS.default;
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["STOCK.DEDUCT", SKU, "1", "HOLD", "1000"],
            HOLD_NEEDS_ID.to_string(),
        ),
        (
            vec!["STOCK.DEDUCT", SKU, "1", "ID", "x", "HOLD", "0"],
            hold_range(max),
        ),
        (
            vec!["STOCK.DEDUCT", SKU, "1", "ID", "x", "HOLD", "-5"],
            hold_range(max),
        ),
        (
            vec!["STOCK.DEDUCT", SKU, "1", "ID", "x", "HOLD", "1.5"],
            hold_range(max),
        ),
        (
            vec![
                "STOCK.DEDUCT",
                SKU,
                "1",
                "ID",
                "x",
                "HOLD",
                &(max + 1).to_string(),
            ],
            hold_range(max),
        ),
        (
            vec!["STOCK.DEDUCT", SKU, "1", "ID", "x", "HOLD"],
            missing_value("HOLD"),
        ),
        (
            vec![
                "STOCK.DEDUCT",
                SKU,
                "1",
                "ID",
                "x",
                "HOLD",
                "5",
                "HOLD",
                "5",
            ],
            repeated_option("HOLD"),
        ),
        (
            vec!["STOCK.DEDUCT", "plain", "1", "ID", "x", "HOLD", "1000"],
            NEEDS_STOCK.to_string(),
        ),
        (
            vec!["STOCK.DEDUCT", "lock", "1", "ID", "x", "HOLD", "1000"],
            WRONGTYPE.to_string(),
        ),
        (vec!["STOCK.CONFIRM", "plain", "x"], NEEDS_STOCK.to_string()),
        (vec!["STOCK.CONFIRM", "lock", "x"], WRONGTYPE.to_string()),
        (vec!["STOCK.CONFIRM", SKU, ""], empty_name(Name::RequestId)),
        (
            vec!["STOCK.REQUEST", SKU, "kept", "DETAIL", "x"],
            unknown_option("x"),
        ),
        (
            vec!["STOCK.REQUEST", SKU, "kept", "DETAIL", "DETAIL"],
            repeated_option("DETAIL"),
        ),
        (
            vec!["STOCK.REQUEST", SKU, "kept", "HOLD"],
            unknown_option("HOLD"),
        ),
    ]
    .into_iter()
    .map(|(a, e)| (a.into_iter().map(str::to_string).collect(), e))
    .collect();
    let before = debug_digest(&mut con);
    for (args, expected) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_err_ctx(call(&mut con, &args), expected, format!("{args:?}"));
        assert_eq!(debug_digest(&mut con), before, "{args:?} changed the data");
    }
    // The limit follows fence.max-hold-ms.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-hold-ms", "1000"],
    ));
    assert_err(
        call(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "ID", "x", "HOLD", "1001"],
        ),
        hold_range(1000),
    );
    assert_eq!(hold(&mut con, SKU, 1, "x", 1000), Some(8));
    // A hold already made keeps its deadline when the limit is lowered.
    let (_, _, d) = detail(&mut con, SKU, "kept").expect("kept");
    assert!(d > server_ms(&mut con) + 500_000);
    assert_err(
        call(&mut con, &["CONFIG", "SET", "fence.max-hold-ms", "0"]),
        code::ERR,
    );
    assert_eq!(fence_counter(&mut con, "holds"), 2);
}

#[test]
fn confirm_and_refund_are_never_refused_for_memory_or_eviction_risk() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", SKU, "10"]));
    for id in ["a", "b", "c"] {
        hold(&mut con, SKU, 1, id, 600_000);
    }
    // No room at all (and nothing evicted): a new hold gets OOM, CONFIRM and REFUND run.
    okay(call(&mut con, &["CONFIG", "SET", "maxmemory", "1"]));
    let oom = err(call(
        &mut con,
        &["STOCK.DEDUCT", SKU, "1", "ID", "new", "HOLD", "1000"],
    ));
    assert!(oom.starts_with("OOM"), "{oom}");
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", SKU, "a"])), 1);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", SKU, "b"])), 1);
    okay(call(&mut con, &["CONFIG", "SET", "maxmemory", "0"]));
    // A policy that could evict the stock: a new hold is refused, CONFIRM and REFUND run.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    ));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "maxmemory", "1000000000"],
    ));
    assert_err(
        call(
            &mut con,
            &["STOCK.DEDUCT", SKU, "1", "ID", "new", "HOLD", "1000"],
        ),
        eviction_risk("allkeys-lru"),
    );
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", SKU, "c"])), 1);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", SKU, "a"])), 1);
    okay(call(&mut con, &["CONFIG", "SET", "maxmemory", "0"]));
    assert_eq!(state(&mut con, SKU, "c"), "confirmed");
    assert_eq!(state(&mut con, SKU, "new"), "");
    assert_conserved(&mut con, SKU, 10, &["a", "b", "c"]);
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

#[test]
fn a_hold_not_confirmed_gives_its_units_back_by_itself_with_its_events() {
    let s = server();
    let mut con = s.conn();
    okay(call(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "KEd"],
    ));
    let mut sub = s.conn();
    let mut ps = sub.as_pubsub();
    ps.subscribe("__keyevent@0__:stock.expire")
        .expect("SUBSCRIBE");
    ps.set_read_timeout(Some(RETURNED)).expect("timeout");
    okay(call(&mut con, &["STOCK.SET", SKU, "10"]));
    assert_eq!(hold_with_events(&mut con, SKU, 3, "late", 300), 7);
    assert_eq!(hold_with_events(&mut con, SKU, 2, "paid", 300), 5);
    assert_eq!(int(call(&mut con, &["STOCK.CONFIRM", SKU, "paid"])), 1);
    let (_, _, deadline) = detail(&mut con, SKU, "late").expect("late");
    // No command touches the stock from here: the timer returns the hold, not before its
    // deadline.
    wait_expired_not_before(&mut con, 1, deadline);
    let msg = ps.get_message().expect("the stock.expire event");
    assert_eq!(msg.get_payload::<String>().expect("payload"), SKU);
    assert_eq!(state(&mut con, SKU, "late"), "expired");
    assert_eq!(state(&mut con, SKU, "paid"), "confirmed");
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", SKU, "late"])), 0);
    let i = sinfo(&mut con, SKU);
    assert_eq!(
        (
            i["available"],
            i["deducted"],
            i["held"],
            i["held-units"],
            i["next-deadline"]
        ),
        (8, 2, 0, 0, 0)
    );
    // The event: the fields of a refund, never before the deadline.
    let events = expire_events(&mut con, ORDERS);
    assert_eq!(events.len(), 1, "{events:?}");
    let (id, f) = &events[0];
    let expected: BTreeMap<String, String> = [
        ("type", "expire"),
        ("sku", SKU),
        ("id", "late"),
        ("quantity", "3"),
        ("remaining", "8"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(f, &expected);
    // (The entry id's time is Redis's clock as cached for the event loop pass, which Redis
    // 8 may read a millisecond or more before the real clock that decided the return.)
    assert!(id.contains('-'), "{id}");
    // The same order in the stream: deduct late, deduct paid, expire late.
    let kinds: Vec<String> = xrange(&mut con, ORDERS)
        .into_iter()
        .map(|(_, f)| format!("{} {}", f["type"], f["id"]))
        .collect();
    assert_eq!(kinds, ["deduct late", "deduct paid", "expire late"]);
    // An expired hold: CONFIRM is EXPIRED with its deadline, REFUND 0, a replay deducts nothing.
    assert_eq!(
        err(call(&mut con, &["STOCK.CONFIRM", SKU, "late"])),
        expired("late", deadline as u64)
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", SKU, "late"])), 0);
    assert_eq!(hold(&mut con, SKU, 3, "late", 300), Some(8));
    assert_eq!(fence_counter(&mut con, "holds_expired"), 1);
    assert_eq!(fence_counter(&mut con, "expire_events_dropped"), 0);
    assert_conserved(&mut con, SKU, 10, &["late", "paid"]);
}

#[test]
fn the_command_that_finds_a_hold_due_expires_it_first() {
    // Inside MULTI/EXEC nothing else runs, the timer included: DEBUG SLEEP takes the server
    // past the deadline, and the command after it must decide on the hold as expired.
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", SKU, "3"]));
    assert_eq!(hold_with_events(&mut con, SKU, 1, "pay", 100), 2);
    assert_eq!(hold_with_events(&mut con, SKU, 1, "cancel", 100), 1);
    assert_eq!(hold_with_events(&mut con, SKU, 1, "sold", 100), 0);
    okay(call(&mut con, &["MULTI"]));
    for args in [
        &["DEBUG", "SLEEP", "0.3"][..],
        &["STOCK.INFO", SKU],
        &["STOCK.REFUND", SKU, "cancel"],
        &["STOCK.DEDUCT", SKU, "3", "ID", "buyer"],
    ] {
        call(&mut con, args).expect("QUEUED");
    }
    let reply = call(&mut con, &["EXEC"]).expect("EXEC");
    let Value::Array(replies) = reply else {
        panic!("{reply:?}")
    };
    // The read shows all three returned before anything was applied.
    let i = fields(replies[1].clone());
    assert_eq!(
        (number(&i, "available"), number(&i, "held")),
        (3, 0),
        "{i:?}"
    );
    assert_eq!(replies[2], Value::Int(0), "REFUND after the deadline");
    // The deduction needed every unit: all three holds came back first.
    assert_eq!(replies[3], Value::Int(0), "DEDUCT of 3 after the deadline");
    for id in ["pay", "cancel", "sold"] {
        assert_eq!(state(&mut con, SKU, id), "expired", "{id}");
    }
    // CONFIRM after the deadline: the hold expires in that command and the reply says so.
    assert_eq!(int(call(&mut con, &["STOCK.ADD", SKU, "1"])), 1);
    assert_eq!(hold_with_events(&mut con, SKU, 1, "late-payment", 100), 0);
    let (_, _, deadline) = detail(&mut con, SKU, "late-payment").expect("late-payment");
    okay(call(&mut con, &["MULTI"]));
    call(&mut con, &["DEBUG", "SLEEP", "0.3"]).expect("QUEUED");
    call(&mut con, &["STOCK.CONFIRM", SKU, "late-payment"]).expect("QUEUED");
    assert_eq!(
        err(call(&mut con, &["EXEC"])),
        expired("late-payment", deadline as u64)
    );
    assert_eq!(state(&mut con, SKU, "late-payment"), "expired");
    assert_eq!(stock(&mut con, SKU), 1);
    assert_eq!(state(&mut con, SKU, "buyer"), "deducted");
    assert_eq!(fence_counter(&mut con, "holds_expired"), 4);
    let events = expire_events(&mut con, ORDERS);
    let mut ids: Vec<&str> = events.iter().map(|(_, f)| f["id"].as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["cancel", "late-payment", "pay", "sold"],
        "one expire event each"
    );
    assert_conserved(
        &mut con,
        SKU,
        4,
        &["pay", "cancel", "sold", "buyer", "late-payment"],
    );
}

#[test]
fn nothing_expires_while_writes_are_paused_and_reads_show_the_units_back() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", SKU, "5"]));
    assert_eq!(hold_with_events(&mut con, SKU, 2, "o", 1500), 3);
    let (_, _, deadline) = detail(&mut con, SKU, "o").expect("o");
    okay(call(&mut con, &["CLIENT", "PAUSE", "60000", "WRITE"]));
    assert_eq!(
        state(&mut con, SKU, "o"),
        "held",
        "paused before the deadline"
    );
    let mut reader = s.conn();
    assert!(wait_until(RETURNED, || server_ms(&mut reader) > deadline + 200));
    // Reads: the hold is returned in the view, nothing written, nothing counted.
    assert_eq!(stock(&mut reader, SKU), 5);
    assert_eq!(
        detail(&mut reader, SKU, "o"),
        Some(("expired".into(), 2, 0))
    );
    assert_eq!(int(call(&mut reader, &["STOCK.REQUEST", SKU, "o"])), 0);
    let i = sinfo(&mut reader, SKU);
    assert_eq!((i["available"], i["deducted"], i["held"]), (5, 0, 0));
    assert_eq!(fence_counter(&mut reader, "holds_expired"), 0);
    assert_eq!(expire_events(&mut reader, ORDERS).len(), 0);
    okay(call(&mut con, &["CLIENT", "UNPAUSE"]));
    wait_expired(&mut reader, 1, "after CLIENT UNPAUSE");
    assert_eq!(expire_events(&mut reader, ORDERS).len(), 1);
    assert_conserved(&mut reader, SKU, 5, &["o"]);
}

#[test]
fn a_replica_never_expires_a_hold_and_applies_the_masters_return() {
    let master = server();
    let port = master.port().to_string();
    let replica = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let mut m = master.conn();
    let mut r = replica.conn();
    okay(call(&mut m, &["STOCK.SET", SKU, "5"]));
    // The first full sync may wait for repl-diskless-sync-delay: before any hold.
    wait_for_sync(&master, &replica, SYNC);
    // Deadlines far enough ahead that the pause below comes first even on a slow machine.
    assert_eq!(hold_with_events(&mut m, SKU, 2, "o", 3000), 3);
    assert_eq!(hold_with_events(&mut m, SKU, 1, "p", 3000), 2);
    assert_eq!(int(call(&mut m, &["STOCK.CONFIRM", SKU, "p"])), 1);
    wait_for_sync(&master, &replica, SYNC);
    assert_eq!(detail(&mut r, SKU, "o"), detail(&mut m, SKU, "o"));
    // The master may not write: it does not expire, and the replica never does.
    okay(call(&mut m, &["CLIENT", "PAUSE", "60000", "WRITE"]));
    assert_eq!(
        state(&mut m, SKU, "o"),
        "held",
        "paused before the deadline"
    );
    let (_, _, deadline) = detail(&mut r, SKU, "o").expect("o");
    assert!(wait_until(RETURNED, || server_ms(&mut r) > deadline + 300));
    assert_eq!(stock(&mut r, SKU), 4, "the replica shows the units back");
    assert_eq!(state(&mut r, SKU, "o"), "expired");
    assert_eq!(fence_counter(&mut r, "holds_expired"), 0);
    assert_eq!(fence_counter(&mut m, "holds_expired"), 0);
    okay(call(&mut m, &["CLIENT", "UNPAUSE"]));
    wait_expired(&mut m, 1, "the master");
    wait_for_sync(&master, &replica, SYNC);
    assert_eq!(fence_counter(&mut r, "holds_expired"), 0);
    assert_eq!(debug_digest(&mut r), debug_digest(&mut m));
    assert_eq!(expire_events(&mut r, ORDERS).len(), 1);
    assert_eq!(state(&mut r, SKU, "p"), "confirmed");
    assert_conserved(&mut r, SKU, 5, &["o", "p"]);
}

#[test]
fn many_holds_due_at_once_all_come_back_each_once() {
    let s = server();
    let mut con = s.conn();
    const N: i64 = 20_000;
    okay(call(&mut con, &["STOCK.SET", SKU, &N.to_string()]));
    okay(call(&mut con, &["STOCK.SET", "other", &N.to_string()]));
    // Every hold due within the same few milliseconds, across two stocks, half with events.
    let mut pipe = redis::pipe();
    for i in 0..N {
        let (key, events) = if i % 2 == 0 {
            (SKU, true)
        } else {
            ("other", false)
        };
        let c = pipe
            .cmd("STOCK.DEDUCT")
            .arg(key)
            .arg(1)
            .arg("ID")
            .arg(format!("o{i}"))
            .arg("HOLD")
            .arg(1500);
        if events {
            c.arg("EVENTS").arg(ORDERS);
        }
        c.ignore();
    }
    let _: () = pipe.query(&mut con).expect("the holds");
    assert_eq!(sinfo(&mut con, SKU)["held"], N / 2);
    wait_expired(&mut con, N, "20,000 holds");
    for key in [SKU, "other"] {
        let i = sinfo(&mut con, key);
        assert_eq!(
            (i["available"], i["deducted"], i["held"], i["requests"]),
            (N, 0, 0, N / 2),
            "{key}"
        );
    }
    let events = expire_events(&mut con, ORDERS);
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|(_, f)| f["id"].as_str()).collect();
    assert_eq!(events.len() as i64, N / 2);
    assert_eq!(ids.len() as i64, N / 2, "an expire event per hold");
}

// ---------------------------------------------------------------------------------------------
// The index follows the stock
// ---------------------------------------------------------------------------------------------

/// Makes a stock `key` of 10 with a hold of 2 due in `ms`, and another of 1 confirmed.
fn stock_with_hold(con: &mut Connection, key: &str, ms: i64) -> i64 {
    okay(call(con, &["STOCK.SET", key, "10"]));
    let q = "2";
    int(call(
        con,
        &[
            "STOCK.DEDUCT",
            key,
            q,
            "ID",
            "h",
            "HOLD",
            &ms.to_string(),
            "EVENTS",
            ORDERS,
        ],
    ));
    hold(con, key, 1, "c", 600_000);
    assert_eq!(int(call(con, &["STOCK.CONFIRM", key, "c"])), 1);
    detail(con, key, "h").expect("h").2
}

/// The hold of `stock_with_hold` came back in `key`, by the timer, with its deadline kept.
#[track_caller]
fn returned_in(con: &mut Connection, key: &str, deadline: i64) {
    let i = sinfo(con, key);
    assert_eq!(
        (i["available"], i["deducted"], i["held"]),
        (9, 1, 0),
        "{key}: {i:?}"
    );
    assert_eq!(state(con, key, "h"), "expired", "{key}");
    assert_eq!(state(con, key, "c"), "confirmed", "{key}");
    let events = expire_events(con, ORDERS);
    let mine: Vec<_> = events.iter().filter(|(_, f)| f["sku"] == key).collect();
    assert_eq!(mine.len(), 1, "{key}: one expire event, in {events:?}");
    // Its deadline was kept (the hold came back by it, so TIME is past it now).
    assert!(server_ms(con) >= deadline, "{key}: deadline {deadline}");
}

/// `TIME` (the real clock) and `fence_holds_expired`, read in one MULTI/EXEC: one moment.
fn observe(con: &mut Connection) -> (i64, i64) {
    okay(call(con, &["MULTI"]));
    call(con, &["TIME"]).expect("QUEUED");
    call(con, &["INFO", "fence"]).expect("QUEUED");
    let Ok(Value::Array(r)) = call(con, &["EXEC"]) else {
        panic!("EXEC")
    };
    let Value::Array(t) = &r[0] else {
        panic!("TIME: {r:?}")
    };
    let s: i64 = text(&t[0]).parse().expect("seconds");
    let us: i64 = text(&t[1]).parse().expect("microseconds");
    let info = text(&r[1]);
    let expired = info_value(&info, "fence_holds_expired")
        .and_then(|v| v.parse().ok())
        .expect("fence_holds_expired");
    (s * 1000 + us / 1000, expired)
}

/// Waits for `n` holds to come back, watching that none came back before `deadline`: no
/// moment read before the deadline (by the server's own clock) sees one returned.
#[track_caller]
fn wait_expired_not_before(con: &mut Connection, n: i64, deadline: i64) {
    let mut last = (0, 0);
    let done = wait_until(RETURNED, || {
        last = observe(con);
        assert!(
            last.1 == 0 || last.0 >= deadline,
            "{} holds back at {}, before the deadline {deadline}",
            last.1,
            last.0
        );
        last.1 >= n
    });
    assert!(done, "{} of {n} holds back after {RETURNED:?}", last.1);
    assert_eq!(last.1, n);
}

#[test]
fn holds_follow_their_stock_through_rename_move_copy_and_swapdb() {
    let s = server();
    let mut con = s.conn();
    // RENAME: the old name's index entry finds nothing; the new one is indexed.
    let d1 = stock_with_hold(&mut con, "{sku:42}:a", 400);
    okay(call(
        &mut con,
        &["RENAME", "{sku:42}:a", "{sku:42}:renamed"],
    ));
    // COPY: two stocks, each returns its own hold.
    let d2 = stock_with_hold(&mut con, "{sku:42}:b", 400);
    int(call(&mut con, &["COPY", "{sku:42}:b", "{sku:42}:copy"]));
    // MOVE to db 1 (its expire event goes to db 1's stream); SWAPDB 0 2 with a stock in 2.
    let d3 = stock_with_hold(&mut con, "{sku:42}:moved", 400);
    int(call(&mut con, &["MOVE", "{sku:42}:moved", "1"]));
    okay(call(&mut con, &["SELECT", "2"]));
    let d4 = stock_with_hold(&mut con, "{sku:42}:swapped", 400);
    okay(call(&mut con, &["SELECT", "0"]));
    okay(call(&mut con, &["SWAPDB", "0", "2"]));
    // db 0 now holds the swapped stock; db 2 holds renamed, b, copy.
    wait_expired(&mut con, 5, "renamed, b, copy, moved, swapped");
    returned_in(&mut con, "{sku:42}:swapped", d4);
    okay(call(&mut con, &["SELECT", "2"]));
    returned_in(&mut con, "{sku:42}:renamed", d1);
    returned_in(&mut con, "{sku:42}:b", d2);
    returned_in(&mut con, "{sku:42}:copy", d2);
    assert_eq!(exists(&mut con, "{sku:42}:a"), 0);
    okay(call(&mut con, &["SELECT", "1"]));
    returned_in(&mut con, "{sku:42}:moved", d3);
    assert_eq!(fence_counter(&mut con, "expire_events_dropped"), 0);
}

#[test]
fn holds_of_a_flushed_or_replaced_stock_are_gone_with_it() {
    let s = server();
    let mut con = s.conn();
    stock_with_hold(&mut con, "gone", 200);
    stock_with_hold(&mut con, "replaced", 200);
    stock_with_hold(&mut con, "reset", 200);
    okay(call(&mut con, &["SELECT", "3"]));
    stock_with_hold(&mut con, "flushed", 200);
    okay(call(&mut con, &["FLUSHDB"]));
    okay(call(&mut con, &["SELECT", "0"]));
    int(call(&mut con, &["DEL", "gone"]));
    okay(call(&mut con, &["SET", "replaced", "7"]));
    // A new sale clears the ledger, holds included.
    okay(call(&mut con, &["STOCK.SET", "reset", "10"]));
    // A new stock under a deleted one's name has no hold of its own.
    okay(call(&mut con, &["STOCK.SET", "gone", "4"]));
    // One more stock whose hold does come back: after it, the others' deadlines have passed.
    let d = stock_with_hold(&mut con, "last", 400);
    wait_expired(&mut con, 1, "only the live stock's hold");
    returned_in(&mut con, "last", d);
    assert!(server_ms(&mut con) > d);
    assert_eq!(fence_counter(&mut con, "holds_expired"), 1);
    assert_eq!(stock(&mut con, "gone"), 4);
    assert_eq!(get_string(&mut con, "replaced").as_deref(), Some("7"));
    assert_eq!(sinfo(&mut con, "reset")["available"], 10);
    assert_eq!(sinfo(&mut con, "reset")["requests"], 0);
}

#[test]
fn holds_survive_dump_restore_debug_reload_and_an_aof_restart_with_their_deadlines() {
    let mut s = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let mut con = s.conn();
    // DUMP/RESTORE into the same server under another name, and into a second server.
    let d1 = stock_with_hold(&mut con, "{sku:42}:dumped", 1500);
    let payload = dump(&mut con, "{sku:42}:dumped");
    int(call(&mut con, &["DEL", "{sku:42}:dumped"]));
    okay(restore(&mut con, "{sku:42}:restored", 0, &payload, &[]));
    assert_eq!(
        detail(&mut con, "{sku:42}:restored", "h"),
        Some(("held".into(), 2, d1))
    );
    let other = server();
    let mut o = other.conn();
    okay(restore(&mut o, "{sku:42}:restored", 0, &payload, &[]));
    // DEBUG RELOAD (save and load the RDB) and a restart from the AOF.
    let d2 = stock_with_hold(&mut con, "{sku:42}:reloaded", 1500);
    okay(call(&mut con, &["DEBUG", "RELOAD"]));
    assert_eq!(
        detail(&mut con, "{sku:42}:reloaded", "h"),
        Some(("held".into(), 2, d2))
    );
    let d3 = stock_with_hold(&mut con, "{sku:42}:aof", 1500);
    call(&mut con, &["BGREWRITEAOF"]).expect("BGREWRITEAOF");
    let d4 = stock_with_hold(&mut con, "{sku:42}:aof-tail", 1500);
    assert!(wait_until(RETURNED, || {
        let p = info(&mut con, "persistence");
        info_value(&p, "aof_rewrite_in_progress").as_deref() == Some("0")
            && info_value(&p, "aof_rewrite_scheduled").as_deref() == Some("0")
    }));
    let d5 = stock_with_hold(&mut con, "{sku:42}:after-rewrite", 1500);
    let before = debug_digest(&mut con);
    s.restart();
    let mut con = s.conn();
    assert_eq!(debug_digest(&mut con), before, "the AOF restart");
    for (key, d) in [
        ("{sku:42}:restored", d1),
        ("{sku:42}:reloaded", d2),
        ("{sku:42}:aof", d3),
        ("{sku:42}:aof-tail", d4),
        ("{sku:42}:after-rewrite", d5),
    ] {
        assert_eq!(
            detail(&mut con, key, "h"),
            Some(("held".into(), 2, d)),
            "{key} after the restart"
        );
    }
    // Each server returns what it holds, by itself.
    wait_expired(
        &mut con,
        5,
        "restored, reloaded, aof, aof-tail, after-rewrite",
    );
    for (key, d) in [
        ("{sku:42}:restored", d1),
        ("{sku:42}:reloaded", d2),
        ("{sku:42}:aof", d3),
        ("{sku:42}:aof-tail", d4),
        ("{sku:42}:after-rewrite", d5),
    ] {
        returned_in(&mut con, key, d);
    }
    wait_expired(&mut o, 1, "the server it was restored into");
    assert_eq!(sinfo(&mut o, "{sku:42}:restored")["available"], 9);
}

#[test]
fn holds_due_at_load_come_back_once_the_server_may_write() {
    for aof in [false, true] {
        let mut args = vec!["--enable-debug-command", "yes"];
        if aof {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        let mut s = Server::start_with(&args);
        let mut con = s.conn();
        let d = stock_with_hold(&mut con, SKU, 1500);
        // Writes paused: the deadline passes with the hold saved as held.
        okay(call(&mut con, &["CLIENT", "PAUSE", "60000", "WRITE"]));
        assert_eq!(
            state(&mut con, SKU, "h"),
            "held",
            "paused before the deadline"
        );
        assert!(wait_until(RETURNED, || server_ms(&mut con) > d + 100));
        assert_eq!(fence_counter(&mut con, "holds_expired"), 0);
        if !aof {
            okay(call(&mut con, &["SAVE"]));
        }
        s.restart();
        let mut con = s.conn();
        wait_expired(
            &mut con,
            1,
            if aof {
                "after the AOF"
            } else {
                "after the RDB"
            },
        );
        returned_in(&mut con, SKU, d);
        assert_eq!(expire_events(&mut con, ORDERS).len(), 1, "aof {aof}");
        assert_conserved(&mut con, SKU, 10, &["h", "c"]);
    }
}

#[test]
fn an_expire_event_the_stream_cannot_take_is_dropped_and_counted_the_units_come_back() {
    let s = server();
    let mut con = s.conn();
    okay(call(&mut con, &["STOCK.SET", SKU, "10"]));
    assert_eq!(hold_with_events(&mut con, SKU, 2, "o", 300), 8);
    // The stream is replaced by a string: the event has nowhere to go.
    int(call(&mut con, &["DEL", ORDERS]));
    okay(call(&mut con, &["SET", ORDERS, "not a stream"]));
    wait_expired(&mut con, 1, "a hold whose stream is gone");
    assert_eq!(stock(&mut con, SKU), 10);
    assert_eq!(fence_counter(&mut con, "expire_events_dropped"), 1);
    assert_eq!(
        get_string(&mut con, ORDERS).as_deref(),
        Some("not a stream")
    );
}

#[test]
fn forged_hold_effects_are_refused_and_a_far_deadline_never_wedges_the_timer() {
    // An AOF as a hostile hand could write it: a deadline past the year 9999 (whose timer
    // arithmetic would wrap round), a deduction turned into an expiry, a refund turned back
    // into a hold; and a deadline far ahead but within bounds.
    let aof: String = [
        &["FENCE.STOCK", "k", "10", "0", "0", "RESET"][..],
        &[
            "FENCE.ENTRY",
            "k",
            "9",
            "0",
            "1",
            "wrap",
            "1",
            "held",
            "18447000000000000",
        ],
        &["FENCE.ENTRY", "k", "9", "0", "1", "d", "1", "deducted"],
        &["FENCE.ENTRY", "k", "10", "0", "0", "d", "1", "expired", "5"],
        &["FENCE.ENTRY", "k", "8", "0", "2", "e", "1", "deducted"],
        &["FENCE.ENTRY", "k", "9", "0", "1", "e", "1", "refunded"],
        &["FENCE.ENTRY", "k", "8", "0", "2", "e", "1", "deducted"],
        &[
            "FENCE.ENTRY",
            "k",
            "9",
            "0",
            "1",
            "far",
            "1",
            "held",
            "253402300799999",
        ],
    ]
    .iter()
    .map(|c| resp_command(c))
    .collect();
    let s = Server::start_with_files(
        &[("appendonly.aof", aof.as_bytes())],
        &[
            "--appendonly",
            "yes",
            "--aof-use-rdb-preamble",
            "no",
            "--enable-debug-command",
            "yes",
        ],
    );
    let mut con = s.conn();
    assert_eq!(detail(&mut con, "k", "wrap"), None);
    assert_eq!(
        detail(&mut con, "k", "d"),
        Some(("deducted".into(), 1, 0)),
        "a deduction made expired: refused"
    );
    assert_eq!(
        detail(&mut con, "k", "e"),
        Some(("refunded".into(), 1, 0)),
        "a refund undone: refused"
    );
    assert_eq!(
        detail(&mut con, "k", "far"),
        Some(("held".into(), 1, 253_402_300_799_999))
    );
    let refused = s
        .log()
        .lines()
        .filter(|l| l.contains("refused a replicated or AOF effect"))
        .count();
    assert!(refused >= 1, "{}", tail(&s.log()));
    // The server serves, its timer armed for the far hold, and saves and loads the stock.
    for _ in 0..50 {
        assert_eq!(
            call(&mut con, &["PING"]).ok(),
            Some(Value::SimpleString("PONG".into()))
        );
    }
    okay(call(&mut con, &["DEBUG", "RELOAD"]));
    assert_eq!(
        detail(&mut con, "k", "far"),
        Some(("held".into(), 1, 253_402_300_799_999))
    );
    assert_eq!(detail(&mut con, "k", "d"), Some(("deducted".into(), 1, 0)));
    assert_eq!(stock(&mut con, "k"), 9);
}
