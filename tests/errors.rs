//! Every error class of the README's Errors table, for every command where it applies; after
//! each refused call nothing has changed. Also the configuration settings and module arguments.

mod common;

use std::sync::LazyLock;
use std::time::Instant;

use common::*;
use fence_core::args::MAX_WAIT_MS;
use fence_core::config::{MAX_ID_LENGTH, MAX_TTL_MS};
use redis::Connection;

static TTL_ERR: LazyLock<String> = LazyLock::new(|| ttl_range(MAX_TTL_MS.default));
static QTY_ERR: LazyLock<String> = LazyLock::new(|| quantity_range(1));
static QTY0_ERR: LazyLock<String> = LazyLock::new(|| quantity_range(0));
static EMPTY_OWNER: LazyLock<String> = LazyLock::new(|| empty_name(Name::Owner));
static EMPTY_ID: LazyLock<String> = LazyLock::new(|| empty_name(Name::RequestId));
static OWNER_LONG: LazyLock<String> =
    LazyLock::new(|| name_too_long(Name::Owner, MAX_ID_LENGTH.default));
static ID_LONG: LazyLock<String> =
    LazyLock::new(|| name_too_long(Name::RequestId, MAX_ID_LENGTH.default));

const LOCK_CMDS: [&str; 4] = ["LOCK.ACQUIRE", "LOCK.RENEW", "LOCK.RELEASE", "LOCK.STATUS"];

/// Keys of every kind: `lk` a lock held by `o`, `sk` a stock of 8 whose ledger holds `a` (2)
/// and whose highest fence is the returned token, `str` the plain string "100", `lst` a list.
fn fixture(con: &mut Connection) -> i64 {
    let fence = now_us();
    int(call(con, &["LOCK.ACQUIRE", "lk", "o", "60000"]));
    okay(call(con, &["STOCK.SET", "sk", "10"]));
    assert_eq!(
        int(call(
            con,
            &[
                "STOCK.DEDUCT",
                "sk",
                "2",
                "ID",
                "a",
                "FENCE",
                &fence.to_string()
            ]
        )),
        8
    );
    okay(call(con, &["SET", "str", "100"]));
    assert_eq!(int(call(con, &["RPUSH", "lst", "x"])), 1);
    fence
}

/// Everything observable about the database, without changing it. TTLs are recorded as
/// "set or not" plus "not above 60 s", so a reset to a longer TTL is caught too.
fn snapshot(con: &mut Connection) -> String {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    keys.sort();
    let mut out = format!("dbsize={}\n", dbsize(con));
    for key in keys {
        let kind = key_type(con, &key);
        let ttl = pttl(con, &key);
        out.push_str(&format!(
            "{key}: type={kind} ttl_set={} ttl_le_60s={}",
            ttl > 0,
            ttl <= 60_000
        ));
        match kind.as_str() {
            "fence-lck" => {
                let status = call(con, &["LOCK.STATUS", &key]).unwrap();
                let redis::Value::Array(items) = status else {
                    panic!("LOCK.STATUS {key} replied {status:?}");
                };
                // Owner and token; the ttl moves by itself.
                out.push_str(&format!(" owner={:?} token={:?}", items[1], items[3]));
            }
            "fence-stk" => {
                let available = stock(con, &key);
                out.push_str(&format!(" available={available}"));
                for id in ["a", "b", "c", "x"] {
                    let r = call(con, &["STOCK.REQUEST", &key, id]).unwrap();
                    out.push_str(&format!(" req[{id}]={r:?}"));
                }
                // FENCE 1 with more than is available changes nothing: STALE names the
                // highest accepted token, nil means there is none above 1.
                if let Some(more) = available.checked_add(1) {
                    let more = more.to_string();
                    match call(con, &["STOCK.DEDUCT", &key, &more, "FENCE", "1"]) {
                        Ok(redis::Value::Nil) => out.push_str(" fence=none"),
                        Err(e) => out.push_str(&format!(" fence={}", error_text(&e))),
                        Ok(other) => panic!("fence probe of {key} replied {other:?}"),
                    }
                }
            }
            "string" => {
                out.push_str(&format!(" value={:?}", get_string(con, &key)));
            }
            "list" => {
                let items: Vec<String> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query(con)
                    .unwrap();
                out.push_str(&format!(" items={items:?}"));
            }
            "hash" | "set" | "zset" | "stream" => {
                let read: &[&str] = match kind.as_str() {
                    "hash" => &["HGETALL", &key],
                    "set" => &["SMEMBERS", &key],
                    "zset" => &["ZRANGE", &key, "0", "-1", "WITHSCORES"],
                    _ => &["XRANGE", &key, "-", "+"],
                };
                out.push_str(&format!(" content={:?}", call(con, read).unwrap()));
            }
            other => panic!("unexpected type {other}"),
        }
        out.push('\n');
    }
    out
}

/// Runs `args`, expects an error that begins with `expected` (the README's Errors table
/// gives the beginning of each reply), and checks that nothing changed.
#[track_caller]
fn refused(con: &mut Connection, args: &[&str], expected: &str) {
    let before = snapshot(con);
    assert_err_ctx(call(con, args), expected, format!("reply to {args:?}"));
    assert_eq!(snapshot(con), before, "{args:?} changed the database");
}

// ---------------------------------------------------------------------------------------------
// Wrong number of arguments
// ---------------------------------------------------------------------------------------------

#[test]
fn lock_acquire_option_errors() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    let before = snapshot(&mut con);
    for (args, want) in [
        (vec!["lk2", "o", "10", "x"], &unknown_option("x")),
        (vec!["lk2", "o", "10", "WAIT"], &missing_value("WAIT")),
        (
            vec!["lk2", "o", "10", "WAIT", "1", "wait", "2"],
            &repeated_option("WAIT"),
        ),
        (
            vec!["lk2", "o", "10", "WAIT", "-1"],
            &timeout_range(MAX_WAIT_MS),
        ),
        (
            vec!["lk2", "o", "10", "WAIT", "abc"],
            &timeout_range(MAX_WAIT_MS),
        ),
    ] {
        let mut full = vec!["LOCK.ACQUIRE"];
        full.extend(args.iter().copied());
        assert_err(call(&mut con, &full), want);
        assert_eq!(snapshot(&mut con), before, "{full:?} changed the database");
    }
}

#[test]
fn stock_refund_option_errors() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    let before = snapshot(&mut con);
    for (args, want) in [
        (vec!["sk", "a", "x"], unknown_option("x")),
        (vec!["sk", "a", "EVENTS"], missing_value("EVENTS")),
        (
            vec!["sk", "a", "EVENTS", "s", "EVENTS", "t"],
            repeated_option("EVENTS"),
        ),
        (
            vec!["sk", "a", "EVENTS", "s", "MAXLEN"],
            BAD_MAXLEN.to_string(),
        ),
        (
            vec!["sk", "a", "EVENTS", "s", "MAXLEN", "~", "-1"],
            BAD_MAXLEN.to_string(),
        ),
        (
            vec!["sk", "a", "EVENTS", "s", "ID", "x"],
            unknown_option("ID"),
        ),
    ] {
        let mut full = vec!["STOCK.REFUND"];
        full.extend(args.iter().copied());
        assert_err(call(&mut con, &full), want);
        assert_eq!(snapshot(&mut con), before, "{full:?} changed the database");
    }
}

#[test]
fn wrong_arity_for_every_command() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    let cases: Vec<(&str, Vec<Vec<&str>>)> = vec![
        (
            // A fifth argument is an option (`WAIT`): see `lock_acquire_option_errors`.
            "LOCK.ACQUIRE",
            vec![vec![], vec!["lk"], vec!["lk", "o"]],
        ),
        (
            // A fifth argument is an option (`TOKEN`): see `token_option_errors`.
            "LOCK.RENEW",
            vec![vec![], vec!["lk"], vec!["lk", "o"]],
        ),
        (
            // A fourth argument is an option (`TOKEN`).
            "LOCK.RELEASE",
            vec![vec![], vec!["lk"]],
        ),
        ("LOCK.STATUS", vec![vec![], vec!["lk", "x"]]),
        // A fourth argument is an option (`LIMIT`): see tests/buyers.rs.
        ("STOCK.SET", vec![vec![], vec!["sk"]]),
        // A fourth argument is an option (`ID`).
        ("STOCK.ADD", vec![vec![], vec!["sk"]]),
        ("STOCK.GET", vec![vec![], vec!["sk", "x"]]),
        ("STOCK.DEDUCT", vec![vec![], vec!["sk"]]),
        (
            // A fourth argument is an option (`EVENTS`): see `stock_refund_option_errors`.
            "STOCK.REFUND",
            vec![vec![], vec!["sk"]],
        ),
        // A fourth argument is an option (`DETAIL`): see tests/holds.rs.
        ("STOCK.REQUEST", vec![vec![], vec!["sk"]]),
        (
            "STOCK.CONFIRM",
            vec![vec![], vec!["sk"], vec!["sk", "a", "x"]],
        ),
        (
            "STOCK.LIMIT",
            vec![vec![], vec!["sk"], vec!["sk", "1", "x"]],
        ),
        (
            "STOCK.BUYER",
            vec![vec![], vec!["sk"], vec!["sk", "b", "x"]],
        ),
        // At least `numkeys key quantity ID request-id`; the other errors of carts (numkeys,
        // a missing ID, …) are in tests/carts.rs.
        (
            "STOCK.CART",
            vec![
                vec![],
                vec!["1"],
                vec!["1", "sk"],
                vec!["1", "sk", "1"],
                vec!["1", "sk", "1", "ID"],
            ],
        ),
        // At least `numkeys key request-id`.
        (
            "STOCK.CART.REFUND",
            vec![vec![], vec!["1"], vec!["1", "sk"]],
        ),
        (
            "STOCK.CART.CONFIRM",
            vec![vec![], vec!["1"], vec!["1", "sk"]],
        ),
    ];
    for (name, arg_lists) in cases {
        for rest in arg_lists {
            let mut args = vec![name];
            args.extend(rest.iter().copied());
            let before = snapshot(&mut con);
            let text = err(call(&mut con, &args));
            // The command name may be echoed as typed or in lower case.
            let expected = arity(name);
            let head = text.get(..expected.len()).unwrap_or(&text);
            assert!(
                head.eq_ignore_ascii_case(&expected) && begins_with(&text, head),
                "reply to {args:?}: {text:?}, expected {expected:?}"
            );
            assert!(
                text.starts_with(&arity_lead()),
                "reply to {args:?}: {text:?}"
            );
            assert_eq!(snapshot(&mut con), before, "{args:?} changed the database");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ttl-ms
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_ttl_ms_is_refused_by_acquire_and_renew() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    let bad = ["0", "-1", "abc", "1.5", "", "1e3", "604800001", TWO_POW_63];
    for cmd in ["LOCK.ACQUIRE", "LOCK.RENEW"] {
        for ttl in bad {
            // On the held lock (the holder would reset the TTL) and on a free key.
            refused(&mut con, &[cmd, "lk", "o", ttl], &TTL_ERR);
            refused(&mut con, &[cmd, "lk", "other", ttl], &TTL_ERR);
            refused(&mut con, &[cmd, "free", "o", ttl], &TTL_ERR);
        }
    }
    // The bounds themselves are accepted.
    int(call(&mut con, &["LOCK.ACQUIRE", "free", "o", "1"]));
    int(call(&mut con, &["LOCK.ACQUIRE", "lk", "o", "604800000"]));
    assert!(pttl(&mut con, "lk") > 604_000_000);
    int(call(&mut con, &["LOCK.RENEW", "lk", "o", "604800000"]));
}

#[test]
fn max_ttl_ms_follows_config_set() {
    let server = Server::start();
    let mut con = server.conn();
    // Long enough to outlive the snapshots below however slow they are.
    int(call(&mut con, &["LOCK.ACQUIRE", "lk", "o", "60000"]));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ttl-ms", "1000"],
    ));
    assert_eq!(config_get(&mut con, "fence.max-ttl-ms"), "1000");
    let err1000 = ttl_range(1000);
    refused(&mut con, &["LOCK.ACQUIRE", "free", "o", "1001"], &err1000);
    refused(&mut con, &["LOCK.ACQUIRE", "lk", "o", "1001"], &err1000);
    refused(&mut con, &["LOCK.RENEW", "lk", "o", "1001"], &err1000);
    int(call(&mut con, &["LOCK.ACQUIRE", "free", "o", "1000"]));
    let renewed = Instant::now();
    int(call(&mut con, &["LOCK.RENEW", "lk", "o", "1000"]));
    let ttl = pttl(&mut con, "lk");
    assert_ttl_since(ttl, 1000, renewed, "PTTL after a renew with 1000");
    // Gone before the snapshots below, which a 1 s lock might not outlive.
    int(call(&mut con, &["DEL", "lk", "free"]));
    // The top of the setting's range is usable as a lock TTL.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ttl-ms", "315360000000"],
    ));
    int(call(
        &mut con,
        &["LOCK.ACQUIRE", "long", "o", "315360000000"],
    ));
    assert!(pttl(&mut con, "long") > 315_000_000_000);
    refused(
        &mut con,
        &["LOCK.ACQUIRE", "free2", "o", "315360000001"],
        &ttl_range(315_360_000_000),
    );
}

// ---------------------------------------------------------------------------------------------
// quantity
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_quantity_is_refused_by_set_add_and_deduct() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    for q in ["-1", TWO_POW_63, "18446744073709551616", "x", "1.5", ""] {
        refused(&mut con, &["STOCK.SET", "sk", q], &QTY0_ERR);
        refused(&mut con, &["STOCK.SET", "new", q], &QTY0_ERR);
        // On a plain string either refusal is right (arguments, or the key's type).
        let before = snapshot(&mut con);
        let text = err(call(&mut con, &["STOCK.SET", "str", q]));
        assert!(
            begins_with(&text, &QTY0_ERR) || begins_with(&text, WRONGTYPE),
            "STOCK.SET str {q:?}: {text:?}"
        );
        assert_eq!(snapshot(&mut con), before);
    }
    for q in [
        "0",
        "-1",
        TWO_POW_63,
        "18446744073709551616",
        "x",
        "1.5",
        "",
    ] {
        for key in ["sk", "new", "str"] {
            refused(&mut con, &["STOCK.ADD", key, q], &QTY_ERR);
            refused(&mut con, &["STOCK.DEDUCT", key, q], &QTY_ERR);
        }
        refused(&mut con, &["STOCK.DEDUCT", "sk", q, "ID", "b"], &QTY_ERR);
        refused(&mut con, &["STOCK.DEDUCT", "sk", q, "ID", "a"], &QTY_ERR);
    }
    // STOCK.SET accepts 0; the others start at 1.
    okay(call(&mut con, &["STOCK.SET", "new", "0"]));
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "new", "1"])), 1);
    assert_eq!(int(call(&mut con, &["STOCK.DEDUCT", "new", "1"])), 0);
}

#[test]
fn a_sum_past_the_maximum_is_refused_by_add() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sk", I64_MAX]));
    refused(&mut con, &["STOCK.ADD", "sk", "1"], OVERFLOW);
    refused(&mut con, &["STOCK.ADD", "sk", I64_MAX], OVERFLOW);
    assert_eq!(stock(&mut con, "sk"), i64::MAX);
    let five_below = (i64::MAX - 5).to_string();
    okay(call(&mut con, &["STOCK.SET", "sk", &five_below]));
    refused(&mut con, &["STOCK.ADD", "sk", "6"], OVERFLOW);
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sk", "5"])), i64::MAX);
    // The same on a plain integer string.
    okay(call(&mut con, &["SET", "str", I64_MAX]));
    refused(&mut con, &["STOCK.ADD", "str", "1"], OVERFLOW);
    okay(call(&mut con, &["SET", "str", &five_below]));
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "str", "5"])), i64::MAX);
    assert_eq!(get_string(&mut con, "str").as_deref(), Some(I64_MAX));
}

#[test]
fn a_sum_past_the_maximum_is_refused_by_refund() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sk", "10"]));
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sk", "5", "ID", "a"])),
        5
    );
    let fill = (i64::MAX - 5).to_string();
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sk", &fill])), i64::MAX);
    refused(&mut con, &["STOCK.REFUND", "sk", "a"], OVERFLOW);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sk", "a"])), 5);
    assert_eq!(stock(&mut con, "sk"), i64::MAX);
    // Once there is room, the refund goes through, once.
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sk", "5"])),
        i64::MAX - 5
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sk", "a"])), 5);
    assert_eq!(stock(&mut con, "sk"), i64::MAX);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sk", "a"])), 0);
}

// ---------------------------------------------------------------------------------------------
// owner and request id
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_owner_is_refused() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    for key in ["lk", "free"] {
        refused(&mut con, &["LOCK.ACQUIRE", key, "", "1000"], &EMPTY_OWNER);
        refused(&mut con, &["LOCK.RENEW", key, "", "1000"], &EMPTY_OWNER);
        refused(&mut con, &["LOCK.RELEASE", key, ""], &EMPTY_OWNER);
    }
}

#[test]
fn an_owner_longer_than_max_id_length_is_refused() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    let long = "x".repeat(513);
    let long_utf8 = "é".repeat(257); // 514 bytes, 257 characters
    for owner in [long.as_str(), long_utf8.as_str()] {
        for key in ["lk", "free"] {
            // A new holder is bounded; a renew or release with a longer owner is not an error
            // (a limit lowered later must not strand a holder): here it holds nothing.
            refused(&mut con, &["LOCK.ACQUIRE", key, owner, "1000"], &OWNER_LONG);
            let before = snapshot(&mut con);
            nil(call(&mut con, &["LOCK.RENEW", key, owner, "1000"]));
            assert_eq!(int(call(&mut con, &["LOCK.RELEASE", key, owner])), 0);
            assert_eq!(snapshot(&mut con), before);
        }
    }
    // Long enough that the renew and the release below find the lock however slow they are.
    for owner in ["y".repeat(512), "é".repeat(256)] {
        let t = int(call(&mut con, &["LOCK.ACQUIRE", "free", &owner, "60000"]));
        let status = call(&mut con, &["LOCK.STATUS", "free"]).unwrap();
        let redis::Value::Array(items) = status else {
            panic!("LOCK.STATUS replied {status:?}");
        };
        assert_eq!(
            items[1],
            redis::Value::BulkString(owner.as_bytes().to_vec())
        );
        assert_eq!(
            int(call(&mut con, &["LOCK.RENEW", "free", &owner, "60000"])),
            t
        );
        assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "free", &owner])), 1);
    }
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "10"],
    ));
    let err10 = name_too_long(Name::Owner, 10);
    refused(
        &mut con,
        &["LOCK.ACQUIRE", "free", "abcdefghijk", "1000"],
        &err10,
    );
    nil(call(&mut con, &["LOCK.RENEW", "lk", "abcdefghijk", "1000"]));
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lk", "abcdefghijk"])),
        0
    );
    int(call(
        &mut con,
        &["LOCK.ACQUIRE", "free", "abcdefghij", "1000"],
    ));
}

#[test]
fn an_empty_request_id_is_refused() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    for key in ["sk", "missing"] {
        refused(&mut con, &["STOCK.DEDUCT", key, "1", "ID", ""], &EMPTY_ID);
        refused(&mut con, &["STOCK.REFUND", key, ""], &EMPTY_ID);
        refused(&mut con, &["STOCK.REQUEST", key, ""], &EMPTY_ID);
    }
}

#[test]
fn a_request_id_longer_than_max_id_length_is_refused() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    let long = "x".repeat(513);
    // A new id is bounded; a refund or a read of a longer id is not an error (what exists
    // stays reachable after a limit is lowered): here it matches nothing.
    refused(
        &mut con,
        &["STOCK.DEDUCT", "sk", "1", "ID", &long],
        &ID_LONG,
    );
    let before = snapshot(&mut con);
    nil(call(
        &mut con,
        &["STOCK.DEDUCT", "missing", "1", "ID", &long],
    ));
    for key in ["sk", "missing"] {
        assert_eq!(int(call(&mut con, &["STOCK.REFUND", key, &long])), 0);
        nil(call(&mut con, &["STOCK.REQUEST", key, &long]));
    }
    assert_eq!(snapshot(&mut con), before);
    let max = "y".repeat(512);
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sk", "1", "ID", &max])),
        7
    );
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sk", &max])), 1);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sk", &max])), 1);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "10"],
    ));
    let err10 = name_too_long(Name::RequestId, 10);
    refused(
        &mut con,
        &["STOCK.DEDUCT", "sk", "1", "ID", "abcdefghijk"],
        &err10,
    );
    assert_eq!(
        int(call(&mut con, &["STOCK.REFUND", "sk", "abcdefghijk"])),
        0
    );
    nil(call(&mut con, &["STOCK.REQUEST", "sk", "abcdefghijk"]));
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", "sk", "1", "ID", "abcdefghij"]
        )),
        7
    );
}

// ---------------------------------------------------------------------------------------------
// Options and tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn option_errors_are_refused() {
    let server = Server::start();
    let mut con = server.conn();
    let fence = fixture(&mut con).to_string();
    let f = fence.as_str();
    for key in ["sk", "missing"] {
        let d = "STOCK.DEDUCT";
        refused(
            &mut con,
            &[d, key, "1", "COLOR", "red"],
            &unknown_option("COLOR"),
        );
        refused(&mut con, &[d, key, "1", "NX"], &unknown_option("NX"));
        refused(
            &mut con,
            &[d, key, "1", "ID", "b", "COLOR", "red"],
            &unknown_option("COLOR"),
        );
        refused(
            &mut con,
            &[d, key, "1", "ID", "b", "ID", "c"],
            &repeated_option("ID"),
        );
        refused(
            &mut con,
            &[d, key, "1", "ID", "b", "ID", "b"],
            &repeated_option("ID"),
        );
        refused(
            &mut con,
            &[d, key, "1", "FENCE", f, "FENCE", f],
            &repeated_option("FENCE"),
        );
        refused(
            &mut con,
            &[d, key, "1", "ID", "b", "FENCE", f, "ID", "c"],
            &repeated_option("ID"),
        );
        refused(&mut con, &[d, key, "1", "ID"], &missing_value("ID"));
        refused(&mut con, &[d, key, "1", "FENCE"], &missing_value("FENCE"));
        refused(
            &mut con,
            &[d, key, "1", "ID", "b", "FENCE"],
            &missing_value("FENCE"),
        );
        refused(
            &mut con,
            &[d, key, "1", "FENCE", f, "ID"],
            &missing_value("ID"),
        );
        // Options are case-insensitive, so a repeat in another case is still a repeat (the
        // name may be echoed in either case).
        for args in [
            [d, key, "1", "id", "b", "ID", "c"],
            [d, key, "1", "Id", "b", "iD", "c"],
        ] {
            let before = snapshot(&mut con);
            let text = err(call(&mut con, &args));
            let repeated = repeated_option("ID");
            let (lead, tail) = repeated.split_once("ID").expect("the option in the reply");
            let name = text
                .strip_prefix(lead)
                .and_then(|rest| rest.split_once(tail))
                .filter(|(_, after)| begins_with(after, ""))
                .map(|(name, _)| name);
            assert!(
                name.is_some_and(|n| n.eq_ignore_ascii_case("id")),
                "reply to {args:?}: {text:?}"
            );
            assert_eq!(snapshot(&mut con), before);
        }
    }
}

#[test]
fn a_token_that_is_not_a_positive_integer_is_refused() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    for token in ["0", "-5", "abc", "1.5", "", "18446744073709551616"] {
        for key in ["sk", "missing"] {
            refused(
                &mut con,
                &["STOCK.DEDUCT", key, "1", "FENCE", token],
                TOKEN_NOT_POSITIVE,
            );
            refused(
                &mut con,
                &["STOCK.DEDUCT", key, "1", "ID", "b", "FENCE", token],
                TOKEN_NOT_POSITIVE,
            );
        }
    }
}

#[test]
fn a_token_from_the_future_is_refused() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    let ahead = (now_us() + 25 * 3_600 * 1_000_000).to_string();
    for key in ["sk", "missing"] {
        refused(
            &mut con,
            &["STOCK.DEDUCT", key, "1", "FENCE", &ahead],
            TOKEN_FROM_FUTURE,
        );
    }
}

#[test]
fn a_stale_token_is_refused() {
    let server = Server::start();
    let mut con = server.conn();
    let fence = fixture(&mut con);
    let lower = fence - 1;
    let expected = stale_reply(lower, fence);
    let lower = lower.to_string();
    refused(
        &mut con,
        &["STOCK.DEDUCT", "sk", "1", "FENCE", &lower],
        &expected,
    );
    refused(
        &mut con,
        &["STOCK.DEDUCT", "sk", "1", "ID", "a", "FENCE", &lower],
        &expected,
    );
    refused(
        &mut con,
        &["STOCK.DEDUCT", "sk", "1", "ID", "b", "FENCE", &lower],
        &expected,
    );
    refused(
        &mut con,
        &["STOCK.DEDUCT", "sk", "100", "FENCE", &lower],
        &expected,
    );
}

// ---------------------------------------------------------------------------------------------
// Wrong types
// ---------------------------------------------------------------------------------------------

#[test]
fn lock_commands_on_other_types_are_wrongtype() {
    let server = Server::start();
    let mut con = server.conn();
    fixture(&mut con);
    for key in ["str", "sk", "lst"] {
        for cmd in LOCK_CMDS {
            let args: Vec<&str> = match cmd {
                "LOCK.ACQUIRE" | "LOCK.RENEW" => vec![cmd, key, "o", "1000"],
                "LOCK.RELEASE" => vec![cmd, key, "o"],
                _ => vec![cmd, key],
            };
            refused(&mut con, &args, WRONGTYPE);
        }
    }
}

#[test]
fn stock_commands_on_other_types_are_wrongtype() {
    let server = Server::start();
    let mut con = server.conn();
    let fence = fixture(&mut con).to_string();
    for key in ["lk", "lst"] {
        let calls: [Vec<&str>; 9] = [
            vec!["STOCK.SET", key, "5"],
            vec!["STOCK.ADD", key, "5"],
            vec!["STOCK.GET", key],
            vec!["STOCK.DEDUCT", key, "1"],
            vec!["STOCK.DEDUCT", key, "1", "ID", "b"],
            vec!["STOCK.DEDUCT", key, "1", "FENCE", &fence],
            vec!["STOCK.REFUND", key, "a"],
            vec!["STOCK.REQUEST", key, "a"],
            vec!["STOCK.DEDUCT", key, "1", "ID", "b", "FENCE", &fence],
        ];
        for args in calls {
            refused(&mut con, &args, WRONGTYPE);
        }
    }
    // A plain string is never converted into a stock.
    refused(&mut con, &["STOCK.SET", "str", "5"], WRONGTYPE);
}

#[test]
fn every_command_on_any_other_redis_type_is_wrongtype() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(int(call(&mut con, &["HSET", "hash", "f", "1"])), 1);
    assert_eq!(int(call(&mut con, &["SADD", "set", "1"])), 1);
    assert_eq!(int(call(&mut con, &["ZADD", "zset", "1", "m"])), 1);
    bulk(call(&mut con, &["XADD", "stream", "*", "f", "1"]));
    for key in ["hash", "set", "zset", "stream"] {
        let calls: [&[&str]; 10] = [
            &["LOCK.ACQUIRE", key, "o", "1000"],
            &["LOCK.RENEW", key, "o", "1000"],
            &["LOCK.RELEASE", key, "o"],
            &["LOCK.STATUS", key],
            &["STOCK.SET", key, "5"],
            &["STOCK.ADD", key, "5"],
            &["STOCK.GET", key],
            &["STOCK.DEDUCT", key, "1"],
            &["STOCK.REFUND", key, "a"],
            &["STOCK.REQUEST", key, "a"],
        ];
        for args in calls {
            refused(&mut con, args, WRONGTYPE);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn config_get_lists_the_settings_with_their_defaults() {
    let server = Server::start();
    let mut con = server.conn();
    let mut all = config_get_all(&mut con, "fence.*");
    all.sort();
    for (name, value) in [
        ("fence.max-id-length", "512"),
        ("fence.max-ledger-entries", "1000000"),
        ("fence.max-ttl-ms", "604800000"),
    ] {
        assert!(
            all.contains(&(name.to_string(), value.to_string())),
            "CONFIG GET fence.* = {all:?}, missing {name} = {value}"
        );
    }
    assert!(all.iter().all(|(name, _)| name.starts_with("fence.")));
}

#[test]
fn config_set_refuses_out_of_range_values() {
    let server = Server::start();
    let mut con = server.conn();
    let cases = [
        (
            "fence.max-ttl-ms",
            vec!["0", "-1", "abc", "315360000001", TWO_POW_63],
            "604800000",
        ),
        (
            "fence.max-id-length",
            vec!["0", "-1", "536870913", "x"],
            "512",
        ),
        (
            "fence.max-ledger-entries",
            vec!["-1", "abc", TWO_POW_63],
            "1000000",
        ),
    ];
    for (name, bad, default) in cases {
        for value in bad {
            assert_err(call(&mut con, &["CONFIG", "SET", name, value]), code::ERR);
            assert_eq!(
                config_get(&mut con, name),
                default,
                "after CONFIG SET {name} {value}"
            );
        }
    }
    // The ends of each range are accepted.
    for (name, value) in [
        ("fence.max-ttl-ms", "1"),
        ("fence.max-ttl-ms", "315360000000"),
        ("fence.max-id-length", "1"),
        ("fence.max-id-length", "536870912"),
        ("fence.max-ledger-entries", "0"),
        ("fence.max-ledger-entries", I64_MAX),
    ] {
        okay(call(&mut con, &["CONFIG", "SET", name, value]));
        assert_eq!(config_get(&mut con, name), value);
    }
}

#[test]
fn module_arguments_set_the_limits() {
    let server = Server::start_with(&[
        "max-ttl-ms",
        "1000",
        "max-id-length",
        "10",
        "max-ledger-entries",
        "7",
    ]);
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "fence.max-ttl-ms"), "1000");
    assert_eq!(config_get(&mut con, "fence.max-id-length"), "10");
    assert_eq!(config_get(&mut con, "fence.max-ledger-entries"), "7");
    refused(
        &mut con,
        &["LOCK.ACQUIRE", "lk", "o", "1001"],
        &ttl_range(1000),
    );
    refused(
        &mut con,
        &["LOCK.ACQUIRE", "lk", "abcdefghijk", "1000"],
        &name_too_long(Name::Owner, 10),
    );
    int(call(
        &mut con,
        &["LOCK.ACQUIRE", "lk", "abcdefghij", "1000"],
    ));
}

#[test]
fn a_config_line_sets_a_limit() {
    let server = Server::start_with(&["--fence.max-ttl-ms", "2000"]);
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "fence.max-ttl-ms"), "2000");
    refused(
        &mut con,
        &["LOCK.ACQUIRE", "lk", "o", "2001"],
        &ttl_range(2000),
    );
    int(call(&mut con, &["LOCK.ACQUIRE", "lk", "o", "2000"]));
}

#[test]
fn a_bad_module_argument_stops_the_module_from_loading() {
    let cases: [(&[&str], &str); 9] = [
        (&["bogus", "1"], "bogus"),
        (&["max-ttl-ms"], "max-ttl-ms"),
        (&["max-ttl-ms", "0"], "max-ttl-ms"),
        (&["max-ttl-ms", "315360000001"], "max-ttl-ms"),
        (&["max-ttl-ms", "abc"], "max-ttl-ms"),
        (&["max-id-length", "0"], "max-id-length"),
        (&["max-id-length", "536870913"], "max-id-length"),
        (&["max-ledger-entries", "-1"], "max-ledger-entries"),
        (&["--fence.max-ttl-ms", "0"], "max-ttl-ms"),
    ];
    for (args, setting) in cases {
        match Server::try_start(args) {
            Ok(server) => {
                let mut con = server.conn();
                let modules = call(&mut con, &["MODULE", "LIST"]);
                panic!("the server started with {args:?}; MODULE LIST = {modules:?}");
            }
            Err(failure) => {
                let status = failure.status.unwrap_or_else(|| {
                    panic!("with {args:?} the server neither started nor exited")
                });
                assert!(!status.success(), "with {args:?}: exit status {status}");
                assert!(
                    failure.log.contains(setting),
                    "with {args:?} the log does not name {setting}:\n{}",
                    tail(&failure.log)
                );
            }
        }
    }
}
