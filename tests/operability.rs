//! INFO fence, COMMAND DOCS / COMMAND INFO, configuration, keyspace events and STOCK.INFO:
//! the README's "Operations" section, on a real server.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use redis::{Connection, Value};

fn fence_info(con: &mut Connection) -> HashMap<String, i64> {
    let text = info(con, "fence");
    assert!(
        text.contains("# fence"),
        "INFO fence has no section header:\n{text}"
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("fence_"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().parse().unwrap_or(-1)))
        .collect()
}

#[test]
fn info_counts_every_outcome() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    let zero = fence_info(&mut con);
    for field in [
        "grants",
        "reacquires",
        "contended",
        "releases",
        "releases_refused",
        "renewals",
        "renewals_refused",
        "expirations",
        "waits_started",
        "waits_granted",
        "waits_timed_out",
        "deductions",
        "deductions_sold_out",
        "replays",
        "stale_refusals",
        "limit_refusals",
        "refunds",
        "locks_held",
        "clients_waiting",
        "last_token",
    ] {
        assert_eq!(
            zero.get(field),
            Some(&0),
            "fence_{field} at start: {zero:?}"
        );
    }
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "l", "a", "60000"]));
    int(call(&mut con, &["LOCK.ACQUIRE", "l", "a", "60000"]));
    nil(call(&mut con, &["LOCK.ACQUIRE", "l", "b", "60000"]));
    int(call(&mut con, &["LOCK.RENEW", "l", "a", "60000"]));
    nil(call(&mut con, &["LOCK.RENEW", "l", "b", "60000"]));
    let held = fence_info(&mut con);
    assert_eq!(held["locks_held"], 1);
    assert_eq!(held["last_token"], t);
    // A waiter that times out, then one that is granted by the release.
    nil(call(
        &mut con,
        &["LOCK.ACQUIRE", "l", "w1", "60000", "WAIT", "10"],
    ));
    let port = server.port();
    let waiter = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .expect("connect");
        redis::cmd("LOCK.ACQUIRE")
            .arg("l")
            .arg("w2")
            .arg(60000)
            .arg("WAIT")
            .arg(0)
            .query::<Option<i64>>(&mut c)
    });
    assert!(wait_until(Duration::from_secs(5), || fence_info(&mut con)
        ["clients_waiting"]
        == 1));
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "l", "a"])), 1);
    assert!(waiter.join().expect("waiter").expect("reply").is_some());
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "l", "a"])), 0);
    int(call(&mut con, &["LOCK.ACQUIRE", "short", "x", "20"]));
    sleep_ms(60);
    nil(call(&mut con, &["LOCK.STATUS", "short"]));
    okay(call(&mut con, &["STOCK.SET", "s", "2"]));
    int(call(
        &mut con,
        &["STOCK.DEDUCT", "s", "1", "ID", "o1", "FENCE", "5"],
    ));
    int(call(&mut con, &["STOCK.DEDUCT", "s", "1", "ID", "o1"]));
    assert_err(
        call(&mut con, &["STOCK.DEDUCT", "s", "1", "FENCE", "4"]),
        code::STALE,
    );
    int(call(&mut con, &["STOCK.DEDUCT", "s", "1"]));
    nil(call(&mut con, &["STOCK.DEDUCT", "s", "1"]));
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "o1"])), 1);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "o1"])), 0);
    let n = fence_info(&mut con);
    let want = [
        ("grants", 3),
        ("reacquires", 1),
        ("contended", 1),
        ("releases", 1),
        ("releases_refused", 1),
        ("renewals", 1),
        ("renewals_refused", 1),
        ("expirations", 1),
        ("waits_started", 2),
        ("waits_granted", 1),
        ("waits_timed_out", 1),
        ("deductions", 2),
        ("deductions_sold_out", 1),
        ("replays", 1),
        ("stale_refusals", 1),
        ("refunds", 1),
        ("locks_held", 1),
        ("clients_waiting", 0),
    ];
    for (field, value) in want {
        assert_eq!(n[field], value, "fence_{field}: {n:?}");
    }
    assert!(n["last_token"] > t);
    // The section is part of INFO modules (and INFO everything) too.
    assert!(info(&mut con, "modules").contains("fence_grants:3"));
}

fn docs_map(v: &Value) -> HashMap<String, Value> {
    let Value::Array(items) = v else {
        panic!("not an array: {v:?}")
    };
    items
        .chunks(2)
        .map(|kv| (text(&kv[0]), kv[1].clone()))
        .collect()
}

#[test]
fn command_docs_and_info_describe_every_command() {
    let server = Server::start();
    let mut con = server.conn();
    let commands = [
        (
            "LOCK.ACQUIRE",
            -4,
            vec!["key", "owner", "ttl-ms", "timeout-ms"],
        ),
        ("LOCK.RENEW", -4, vec!["key", "owner", "ttl-ms", "token"]),
        ("LOCK.RELEASE", -3, vec!["key", "owner", "token"]),
        ("LOCK.STATUS", 2, vec!["key"]),
        ("STOCK.SET", -3, vec!["key", "quantity", "per-buyer"]),
        ("STOCK.LIMIT", 3, vec!["key", "per-buyer"]),
        ("STOCK.BUYER", 3, vec!["key", "buyer-id"]),
        ("STOCK.ADD", -3, vec!["key", "quantity", "restock-id"]),
        ("STOCK.GET", 2, vec!["key"]),
        (
            "STOCK.DEDUCT",
            -3,
            vec![
                "key",
                "quantity",
                "request-id",
                "buyer-id",
                "ms",
                "token",
                "stream-key",
                "count",
            ],
        ),
        (
            "STOCK.REFUND",
            -3,
            vec!["key", "request-id", "stream-key", "count"],
        ),
        ("STOCK.REQUEST", -3, vec!["key", "request-id", "detail"]),
        ("STOCK.CONFIRM", 3, vec!["key", "request-id"]),
        ("STOCK.INFO", 2, vec!["key"]),
    ];
    for (name, arity, args) in commands {
        let docs = call(&mut con, &["COMMAND", "DOCS", name]).expect("COMMAND DOCS");
        let Value::Array(pair) = &docs else {
            panic!("{docs:?}")
        };
        assert_eq!(pair.len(), 2, "COMMAND DOCS {name}: {docs:?}");
        let doc = docs_map(&pair[1]);
        assert!(!text(&doc["summary"]).is_empty(), "{name} has no summary");
        assert!(
            !text(&doc["complexity"]).is_empty(),
            "{name} has no complexity"
        );
        assert_eq!(text(&doc["module"]), "fence");
        let Value::Array(arg_list) = &doc["arguments"] else {
            panic!("{name} arguments")
        };
        let names: Vec<String> = arg_list
            .iter()
            .map(|a| text(&docs_map(a)["name"]))
            .collect();
        assert_eq!(names, args, "{name} arguments");
        let info = call(&mut con, &["COMMAND", "INFO", name]).expect("COMMAND INFO");
        let Value::Array(outer) = &info else {
            panic!("{info:?}")
        };
        let Value::Array(fields) = &outer[0] else {
            panic!("{info:?}")
        };
        assert_eq!(fields[1], Value::Int(arity), "{name} arity");
        assert_eq!(
            (&fields[3], &fields[4], &fields[5]),
            (&Value::Int(1), &Value::Int(1), &Value::Int(1)),
            "{name} keys"
        );
        // A call of the smallest valid arity: the key, then placeholder arguments.
        let mut getkeys = vec!["COMMAND", "GETKEYS", name, "k"];
        getkeys.extend(std::iter::repeat_n("1", arity.unsigned_abs() as usize - 2));
        match call(&mut con, &getkeys) {
            Ok(Value::Array(keys)) => {
                assert_eq!(keys.len(), 1, "{name}");
                assert_eq!(text(&keys[0]), "k");
            }
            other => panic!("COMMAND GETKEYS {name}: {other:?}"),
        }
    }
    // The cart commands: `numkeys` keys from position 2, which the commands report themselves
    // (COMMAND INFO says the keys move), every one of them found by COMMAND GETKEYS.
    let carts = [
        (
            "STOCK.CART",
            -6,
            vec![
                "numkeys",
                "key",
                "quantity",
                "request-id",
                "buyer-id",
                "ms",
                "token",
                "stream-key",
                "count",
            ],
            vec!["STOCK.CART", "2", "k1", "1", "k2", "1", "ID", "r"],
        ),
        (
            "STOCK.CART.REFUND",
            -4,
            vec!["numkeys", "key", "request-id", "stream-key", "count"],
            vec!["STOCK.CART.REFUND", "2", "k1", "k2", "r"],
        ),
        (
            "STOCK.CART.CONFIRM",
            -4,
            vec!["numkeys", "key", "request-id"],
            vec!["STOCK.CART.CONFIRM", "2", "k1", "k2", "r"],
        ),
    ];
    for (name, arity, args, example) in carts {
        let docs = call(&mut con, &["COMMAND", "DOCS", name]).expect("COMMAND DOCS");
        let Value::Array(pair) = &docs else {
            panic!("{docs:?}")
        };
        assert_eq!(pair.len(), 2, "COMMAND DOCS {name}: {docs:?}");
        let doc = docs_map(&pair[1]);
        assert!(!text(&doc["summary"]).is_empty(), "{name} has no summary");
        assert!(
            !text(&doc["complexity"]).is_empty(),
            "{name} has no complexity"
        );
        assert_eq!(text(&doc["module"]), "fence");
        let Value::Array(arg_list) = &doc["arguments"] else {
            panic!("{name} arguments")
        };
        let names: Vec<String> = arg_list
            .iter()
            .map(|a| text(&docs_map(a)["name"]))
            .collect();
        assert_eq!(names, args, "{name} arguments");
        let info = call(&mut con, &["COMMAND", "INFO", name]).expect("COMMAND INFO");
        let Value::Array(outer) = &info else {
            panic!("{info:?}")
        };
        let Value::Array(fields) = &outer[0] else {
            panic!("{info:?}")
        };
        assert_eq!(fields[1], Value::Int(arity), "{name} arity");
        let flags = format!("{:?}", fields[2]);
        assert!(
            flags.contains("movablekeys") && flags.contains("write"),
            "{name}: {flags}"
        );
        let mut getkeys = vec!["COMMAND", "GETKEYS"];
        getkeys.extend(example.iter().copied());
        match call(&mut con, &getkeys) {
            Ok(Value::Array(keys)) => {
                let keys: Vec<String> = keys.iter().map(text).collect();
                assert_eq!(keys, ["k1", "k2"], "{name}");
            }
            other => panic!("COMMAND GETKEYS {name}: {other:?}"),
        }
    }
    // STOCK.CART's ID is required (README: `… ID request-id [BUYER buyer-id] …`); the options
    // after it are optional.
    let docs = call(&mut con, &["COMMAND", "DOCS", "STOCK.CART"]).expect("docs");
    let Value::Array(pair) = &docs else { panic!() };
    let Value::Array(arg_list) = &docs_map(&pair[1])["arguments"] else {
        panic!()
    };
    let id = docs_map(&arg_list[3]);
    assert_eq!(text(&id["token"]), "ID");
    let buyer = docs_map(&arg_list[4]);
    assert_eq!(text(&buyer["token"]), "BUYER");
    assert!(format!("{:?}", buyer["flags"]).contains("optional"));
    assert!(
        !id.contains_key("flags") || !format!("{:?}", id["flags"]).contains("optional"),
        "COMMAND DOCS STOCK.CART shows the required ID as optional: {id:?}"
    );
    // The options show their tokens and are optional.
    let docs = call(&mut con, &["COMMAND", "DOCS", "STOCK.DEDUCT"]).expect("docs");
    let Value::Array(pair) = &docs else { panic!() };
    let Value::Array(arg_list) = &docs_map(&pair[1])["arguments"] else {
        panic!()
    };
    let id = docs_map(&arg_list[2]);
    assert_eq!(text(&id["token"]), "ID");
    assert!(format!("{:?}", id["flags"]).contains("optional"));
    let buyer = docs_map(&arg_list[3]);
    assert_eq!(text(&buyer["token"]), "BUYER");
    assert!(format!("{:?}", buyer["flags"]).contains("optional"));
    let docs = call(&mut con, &["COMMAND", "DOCS", "STOCK.SET"]).expect("docs");
    let Value::Array(pair) = &docs else { panic!() };
    let Value::Array(arg_list) = &docs_map(&pair[1])["arguments"] else {
        panic!()
    };
    let limit = docs_map(&arg_list[2]);
    assert_eq!(text(&limit["token"]), "LIMIT");
    assert!(format!("{:?}", limit["flags"]).contains("optional"));
    // STOCK.BUYER is a read: a READONLY replica serves it (COMMAND INFO flags).
    let info = format!(
        "{:?}",
        call(&mut con, &["COMMAND", "INFO", "STOCK.BUYER"]).expect("COMMAND INFO")
    );
    assert!(info.contains("readonly"), "{info}");
    let info = format!(
        "{:?}",
        call(&mut con, &["COMMAND", "INFO", "STOCK.LIMIT"]).expect("COMMAND INFO")
    );
    assert!(info.contains("write"), "{info}");
}

#[test]
fn settings_are_listed_and_bounded() {
    let server = Server::start();
    let mut con = server.conn();
    let all = config_get_all(&mut con, "fence.*");
    assert_eq!(all.len(), 6, "{all:?}");
    for (name, value, max) in [
        ("fence.max-hold-ms", "604800000", "315360000000"),
        ("fence.max-ttl-ms", "604800000", "315360000000"),
        ("fence.max-id-length", "512", "536870912"),
        ("fence.max-ledger-entries", "1000000", "9223372036854775807"),
        ("fence.max-buyers", "1000000", "9223372036854775807"),
    ] {
        assert_eq!(config_get(&mut con, name), value);
        okay(call(&mut con, &["CONFIG", "SET", name, max]));
        assert_eq!(config_get(&mut con, name), max);
        let too_big = format!("{max}0");
        assert_err(
            call(&mut con, &["CONFIG", "SET", name, &too_big]),
            code::ERR,
        );
        assert_err(call(&mut con, &["CONFIG", "SET", name, "-1"]), code::ERR);
        assert_eq!(
            config_get(&mut con, name),
            max,
            "a refused value changed {name}"
        );
    }
}

/// A channel no keyevent uses: its message, published after the actions, is the last one.
const END_OF_EVENTS: &str = "fence-test:end-of-events";

/// Every keyevent message the actions caused, in order. Redis delivers one subscriber's
/// messages in the order it published them, so reading up to a message published after the
/// actions collects all of them, without a time window a slow machine could cut short.
fn events(server: &Server, actions: impl FnOnce(&mut Connection)) -> Vec<(String, String)> {
    let mut sub = server.conn();
    let mut ps = sub.as_pubsub();
    ps.psubscribe("__keyevent@0__:*").expect("psubscribe");
    ps.subscribe(END_OF_EVENTS).expect("subscribe");
    let mut con = server.conn();
    actions(&mut con);
    assert_eq!(int(call(&mut con, &["PUBLISH", END_OF_EVENTS, "."])), 1);
    let mut seen = Vec::new();
    loop {
        // The connection's read timeout (20 s) bounds a message that never comes.
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

#[test]
fn module_events_follow_notify_keyspace_events() {
    let server = Server::start_with(&["--notify-keyspace-events", "Ed"]);
    let seen = events(&server, |con| {
        int(call(con, &["LOCK.ACQUIRE", "l", "a", "60000"]));
        assert_eq!(int(call(con, &["LOCK.RELEASE", "l", "a"])), 1);
        okay(call(con, &["STOCK.SET", "s", "2"]));
        int(call(con, &["STOCK.DEDUCT", "s", "1", "ID", "o1"]));
        int(call(con, &["STOCK.DEDUCT", "s", "1", "ID", "o1"]));
        int(call(con, &["STOCK.DEDUCT", "s", "1"]));
        nil(call(con, &["STOCK.DEDUCT", "s", "1"]));
        assert_eq!(int(call(con, &["STOCK.REFUND", "s", "o1"])), 1);
        // A hold confirmed (once: the repeat publishes nothing), and one that expires.
        okay(call(con, &["STOCK.SET", "h", "5"]));
        int(call(
            con,
            &["STOCK.DEDUCT", "h", "1", "ID", "p", "HOLD", "60000"],
        ));
        assert_eq!(int(call(con, &["STOCK.CONFIRM", "h", "p"])), 1);
        assert_eq!(int(call(con, &["STOCK.CONFIRM", "h", "p"])), 1);
        int(call(
            con,
            &["STOCK.DEDUCT", "h", "1", "ID", "u", "HOLD", "30"],
        ));
        assert!(
            wait_until(Duration::from_secs(10), || {
                info_int(con, "fence", "fence_holds_expired") == 1
            }),
            "the 30 ms hold never came back"
        );
        // Last, so that its expiry comes after everything else however slow the calls were.
        int(call(con, &["LOCK.ACQUIRE", "e", "a", "30"]));
        assert!(
            wait_until(Duration::from_secs(10), || matches!(
                call(con, &["LOCK.STATUS", "e"]),
                Ok(Value::Nil)
            )),
            "the 30 ms lock never expired"
        );
    });
    let want: Vec<(String, String)> = [
        ("lock.acquire", "l"),
        ("lock.release", "l"),
        ("stock.deduct", "s"),
        ("stock.deduct", "s"),
        ("stock.soldout", "s"),
        ("stock.refund", "s"),
        ("stock.deduct", "h"),
        ("stock.confirm", "h"),
        ("stock.deduct", "h"),
        ("stock.expire", "h"),
        ("lock.acquire", "e"),
        ("lock.expire", "e"),
    ]
    .iter()
    .map(|(e, k)| (e.to_string(), k.to_string()))
    .collect();
    assert_eq!(seen, want);
    // Without the `d` class nothing is published.
    let quiet = Server::start();
    let none = events(&quiet, |con| {
        int(call(con, &["LOCK.ACQUIRE", "l", "a", "60000"]));
        okay(call(con, &["STOCK.SET", "s", "1"]));
        int(call(con, &["STOCK.DEDUCT", "s", "1"]));
    });
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn stock_info_reports_the_ledger() {
    let server = Server::start();
    let mut con = server.conn();
    nil(call(&mut con, &["STOCK.INFO", "s"]));
    okay(call(&mut con, &["STOCK.SET", "s", "10"]));
    int(call(
        &mut con,
        &["STOCK.DEDUCT", "s", "3", "ID", "a", "FENCE", "7"],
    ));
    int(call(&mut con, &["STOCK.DEDUCT", "s", "2", "ID", "b"]));
    int(call(&mut con, &["STOCK.DEDUCT", "s", "1"]));
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "s", "b"])), 2);
    let v = call(&mut con, &["STOCK.INFO", "s"]).expect("STOCK.INFO");
    let expect = Value::Array(vec![
        Value::BulkString(b"available".to_vec()),
        Value::Int(6),
        Value::BulkString(b"deducted".to_vec()),
        Value::Int(4),
        Value::BulkString(b"requests".to_vec()),
        Value::Int(2),
        Value::BulkString(b"fence".to_vec()),
        Value::Int(7),
        Value::BulkString(b"restocks".to_vec()),
        Value::Int(0),
        Value::BulkString(b"held".to_vec()),
        Value::Int(0),
        Value::BulkString(b"held-units".to_vec()),
        Value::Int(0),
        Value::BulkString(b"next-deadline".to_vec()),
        Value::Int(0),
        Value::BulkString(b"limit".to_vec()),
        Value::Int(0),
        Value::BulkString(b"buyers".to_vec()),
        Value::Int(0),
    ]);
    assert_eq!(v, expect);
    let mut r3 = server.conn_resp3();
    let m = call(&mut r3, &["STOCK.INFO", "s"]).expect("STOCK.INFO resp3");
    assert!(
        matches!(m, Value::Map(ref pairs) if pairs.len() == 10),
        "{m:?}"
    );
    okay(call(&mut con, &["SET", "p", "42"]));
    assert_eq!(
        call(&mut con, &["STOCK.INFO", "p"]).expect("plain"),
        Value::Array(vec![
            Value::BulkString(b"available".to_vec()),
            Value::Int(42)
        ])
    );
    okay(call(&mut con, &["SET", "bad", "x"]));
    assert_err(call(&mut con, &["STOCK.INFO", "bad"]), NOT_INTEGER);
    int(call(&mut con, &["LOCK.ACQUIRE", "l", "a", "60000"]));
    assert_err(call(&mut con, &["STOCK.INFO", "l"]), WRONGTYPE);
    assert_err(call(&mut con, &["STOCK.INFO"]), arity_lead());
}

/// On servers with module ACL categories (Redis 7.4+, Valkey 8+), every command is in `@fence`,
/// so `+@fence` grants exactly the module's commands; older servers have no such category. The
/// server is told by what it is (`valkey_version`), not by `redis_version`: Valkey 9 reports
/// `redis_version:7.2.4` and has the category.
#[test]
fn acl_category_fence_where_the_server_supports_it() {
    let server = Server::start();
    let mut con = server.conn();
    let id = server_identity(&mut con);
    let supported = id.is_redis_at_least((7, 4)) || id.is_valkey_at_least((8, 0));
    let cats = call(&mut con, &["ACL", "CAT"]).expect("ACL CAT");
    let has_fence = format!("{cats:?}").contains("\"fence\"");
    if !supported {
        assert!(!has_fence, "{id} has no module ACL categories");
        return;
    }
    assert!(has_fence, "{id}: no @fence category in {cats:?}");
    let listed = call(&mut con, &["ACL", "CAT", "fence"]).expect("ACL CAT fence");
    let text = format!("{listed:?}").to_ascii_uppercase();
    for cmd in [
        "LOCK.ACQUIRE",
        "LOCK.RELEASE",
        "STOCK.DEDUCT",
        "STOCK.INFO",
        "STOCK.CART",
        "STOCK.CART.REFUND",
        "STOCK.CART.CONFIRM",
    ] {
        assert!(text.contains(cmd), "{cmd} not in @fence: {listed:?}");
    }
    okay(call(
        &mut con,
        &["ACL", "SETUSER", "f", "on", ">pw", "~*", "+@fence"],
    ));
    let mut user = server.conn();
    okay(call(&mut user, &["AUTH", "f", "pw"]));
    assert!(int(call(&mut user, &["LOCK.ACQUIRE", "l", "o", "1000"])) > 0);
    assert_err(call(&mut user, &["SET", "x", "1"]), "NOPERM");
}
