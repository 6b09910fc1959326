//! STOCK.SET, STOCK.ADD, STOCK.GET, STOCK.DEDUCT, STOCK.REFUND, STOCK.REQUEST, the request
//! ledger and its bound, and plain integer strings as stock, following the README.

mod common;

use std::time::Instant;

use common::*;
use redis::{Connection, RedisResult, Value};

fn deduct(con: &mut Connection, key: &str, rest: &[&str]) -> RedisResult<Value> {
    let mut args = vec!["STOCK.DEDUCT", key];
    args.extend_from_slice(rest);
    call(con, &args)
}

#[track_caller]
fn request(con: &mut Connection, key: &str, id: &str) -> Option<i64> {
    match call(con, &["STOCK.REQUEST", key, id]) {
        Ok(Value::Nil) => None,
        Ok(Value::Int(n)) => Some(n),
        other => panic!("STOCK.REQUEST replied {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// STOCK.SET
// ---------------------------------------------------------------------------------------------

#[test]
fn set_replies_ok_and_creates_a_stock() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "100"]));
    assert_eq!(key_type(&mut con, "sku:1"), "fence-stk");
    assert_eq!(stock(&mut con, "sku:1"), 100);
    assert_eq!(pttl(&mut con, "sku:1"), -1);
}

#[test]
fn set_accepts_0_and_the_maximum() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "0"]));
    assert_eq!(stock(&mut con, "sku:1"), 0);
    nil(deduct(&mut con, "sku:1", &["1"]));
    okay(call(&mut con, &["STOCK.SET", "sku:2", I64_MAX]));
    assert_eq!(stock(&mut con, "sku:2"), i64::MAX);
    assert_eq!(int(deduct(&mut con, "sku:2", &[I64_MAX])), 0);
}

#[test]
fn set_on_an_existing_stock_starts_a_new_sale_with_an_empty_ledger() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["2", "ID", "order-1"])), 8);
    assert_eq!(request(&mut con, "sku:1", "order-1"), Some(2));
    okay(call(&mut con, &["STOCK.SET", "sku:1", "5"]));
    assert_eq!(stock(&mut con, "sku:1"), 5);
    assert_eq!(request(&mut con, "sku:1", "order-1"), None);
    // The id is fresh again in the new sale.
    assert_eq!(int(deduct(&mut con, "sku:1", &["2", "ID", "order-1"])), 3);
    assert_eq!(request(&mut con, "sku:1", "order-1"), Some(2));
    assert_eq!(key_type(&mut con, "sku:1"), "fence-stk");
}

#[test]
fn set_keeps_the_highest_accepted_fence() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    let ts = t.to_string();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "FENCE", &ts])), 9);
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    let lower = (t - 1).to_string();
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", &lower]),
        stale_reply(t - 1, t),
    );
    assert_eq!(stock(&mut con, "sku:1"), 10);
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "FENCE", &ts])), 9);
}

#[test]
fn set_keeps_the_keys_ttl() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    let expiry_set = Instant::now();
    assert_eq!(int(call(&mut con, &["PEXPIRE", "sku:1", "100000"])), 1);
    okay(call(&mut con, &["STOCK.SET", "sku:1", "20"]));
    let ttl = pttl(&mut con, "sku:1");
    assert_ttl_since(ttl, 100_000, expiry_set, "PTTL after STOCK.SET");
    assert_eq!(stock(&mut con, "sku:1"), 20);
}

#[test]
fn set_on_a_plain_string_is_wrongtype_and_leaves_the_string_alone() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["SET", "sku:1", "100", "PX", "100000"]));
    assert_err(call(&mut con, &["STOCK.SET", "sku:1", "5"]), WRONGTYPE);
    assert_eq!(key_type(&mut con, "sku:1"), "string");
    assert_eq!(get_string(&mut con, "sku:1").as_deref(), Some("100"));
    assert!(pttl(&mut con, "sku:1") > 0);
}

#[test]
fn set_on_a_lock_or_a_list_is_wrongtype() {
    let server = Server::start();
    let mut con = server.conn();
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "k:lock", "o", "30000"]));
    assert_err(call(&mut con, &["STOCK.SET", "k:lock", "5"]), WRONGTYPE);
    assert_eq!(key_type(&mut con, "k:lock"), "fence-lck");
    assert_eq!(
        int(call(&mut con, &["LOCK.ACQUIRE", "k:lock", "o", "30000"])),
        t
    );
    assert_eq!(int(call(&mut con, &["RPUSH", "k:list", "a"])), 1);
    assert_err(call(&mut con, &["STOCK.SET", "k:list", "5"]), WRONGTYPE);
    assert_eq!(key_type(&mut con, "k:list"), "list");
}

// ---------------------------------------------------------------------------------------------
// STOCK.ADD
// ---------------------------------------------------------------------------------------------

#[test]
fn add_replies_the_new_quantity() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku:1", "5"])), 15);
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku:1", "1"])), 16);
    assert_eq!(stock(&mut con, "sku:1"), 16);
}

#[test]
fn add_creates_a_stock_when_the_key_does_not_exist() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku:1", "7"])), 7);
    assert_eq!(key_type(&mut con, "sku:1"), "fence-stk");
    assert_eq!(stock(&mut con, "sku:1"), 7);
    assert_eq!(int(deduct(&mut con, "sku:1", &["2", "ID", "a"])), 5);
    assert_eq!(request(&mut con, "sku:1", "a"), Some(2));
}

#[test]
fn add_does_not_touch_the_ledger_or_the_fence() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    let ts = t.to_string();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(
        int(deduct(&mut con, "sku:1", &["3", "ID", "a", "FENCE", &ts])),
        7
    );
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku:1", "5"])), 12);
    assert_eq!(request(&mut con, "sku:1", "a"), Some(3));
    assert_eq!(int(deduct(&mut con, "sku:1", &["3", "ID", "a"])), 12);
    let lower = (t - 1).to_string();
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", &lower]),
        stale_reply(t - 1, t),
    );
    assert_eq!(stock(&mut con, "sku:1"), 12);
}

// ---------------------------------------------------------------------------------------------
// STOCK.GET
// ---------------------------------------------------------------------------------------------

#[test]
fn get_replies_the_quantity_or_nil_when_the_key_does_not_exist() {
    let server = Server::start();
    let mut con = server.conn();
    nil(call(&mut con, &["STOCK.GET", "sku:1"]));
    assert_eq!(exists(&mut con, "sku:1"), 0);
    okay(call(&mut con, &["STOCK.SET", "sku:1", "42"]));
    assert_eq!(int(call(&mut con, &["STOCK.GET", "sku:1"])), 42);
    let mut con3 = server.conn_resp3();
    assert_eq!(int(call(&mut con3, &["STOCK.GET", "sku:1"])), 42);
    nil(call(&mut con3, &["STOCK.GET", "sku:2"]));
}

// ---------------------------------------------------------------------------------------------
// STOCK.DEDUCT
// ---------------------------------------------------------------------------------------------

#[test]
fn deduct_replies_the_remaining_quantity() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["3"])), 7);
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "ID", "a"])), 6);
    assert_eq!(int(deduct(&mut con, "sku:1", &["6"])), 0);
    assert_eq!(stock(&mut con, "sku:1"), 0);
    // A sold-out stock stays: it is not deleted at 0.
    assert_eq!(key_type(&mut con, "sku:1"), "fence-stk");
}

#[test]
fn deduct_replies_nil_when_too_few_are_available_and_changes_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "5"]));
    nil(deduct(&mut con, "sku:1", &["6"]));
    assert_eq!(stock(&mut con, "sku:1"), 5);
    nil(deduct(&mut con, "sku:1", &["6", "ID", "a"]));
    assert_eq!(request(&mut con, "sku:1", "a"), None);
    nil(deduct(&mut con, "sku:1", &["6", "FENCE", &t.to_string()]));
    assert_eq!(stock(&mut con, "sku:1"), 5);
    assert_eq!(int(deduct(&mut con, "sku:1", &["5"])), 0);
    nil(deduct(&mut con, "sku:1", &["1"]));
    assert_eq!(stock(&mut con, "sku:1"), 0);
}

#[test]
fn deduct_on_a_missing_key_replies_nil_and_creates_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    let ts = now_us().to_string();
    nil(deduct(&mut con, "sku:1", &["1"]));
    nil(deduct(&mut con, "sku:1", &["1", "ID", "a"]));
    nil(deduct(&mut con, "sku:1", &["1", "FENCE", &ts]));
    nil(deduct(&mut con, "sku:1", &["1", "ID", "a", "FENCE", &ts]));
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn deduct_with_a_lower_fence_is_stale_and_changes_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(
        int(deduct(&mut con, "sku:1", &["1", "FENCE", &t.to_string()])),
        9
    );
    let lower = (t - 1000).to_string();
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", &lower]),
        stale_reply(t - 1000, t),
    );
    assert_err(
        deduct(&mut con, "sku:1", &["1", "ID", "a", "FENCE", &lower]),
        stale_reply(t - 1000, t),
    );
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", "1"]),
        stale_reply(1, t),
    );
    assert_eq!(stock(&mut con, "sku:1"), 9);
    assert_eq!(request(&mut con, "sku:1", "a"), None);
}

#[test]
fn deduct_with_an_equal_fence_is_accepted() {
    let server = Server::start();
    let mut con = server.conn();
    let ts = now_us().to_string();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "FENCE", &ts])), 9);
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "FENCE", &ts])), 8);
    assert_eq!(
        int(deduct(&mut con, "sku:1", &["2", "FENCE", &ts, "ID", "b"])),
        6
    );
}

#[test]
fn deduct_with_a_higher_fence_raises_the_highest() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(
        int(deduct(&mut con, "sku:1", &["1", "FENCE", &t.to_string()])),
        9
    );
    let higher = (t + 5).to_string();
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "FENCE", &higher])), 8);
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", &t.to_string()]),
        stale_reply(t, t + 5),
    );
    assert_eq!(stock(&mut con, "sku:1"), 8);
}

#[test]
fn a_fence_becomes_the_highest_only_when_the_deduction_succeeds() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "1"]));
    assert_eq!(
        int(deduct(&mut con, "sku:1", &["1", "FENCE", &t.to_string()])),
        0
    );
    // Refused for lack of stock: t + 10 must not become the highest.
    nil(deduct(
        &mut con,
        "sku:1",
        &["1", "FENCE", &(t + 10).to_string()],
    ));
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku:1", "5"])), 5);
    assert_eq!(
        int(deduct(
            &mut con,
            "sku:1",
            &["1", "FENCE", &(t + 5).to_string()]
        )),
        4
    );
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", &t.to_string()]),
        stale_reply(t, t + 5),
    );
    // A deduction on a missing key does not leave a fence behind either.
    nil(deduct(
        &mut con,
        "sku:2",
        &["1", "FENCE", &(t + 10).to_string()],
    ));
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku:2", "5"])), 5);
    assert_eq!(
        int(deduct(&mut con, "sku:2", &["1", "FENCE", &t.to_string()])),
        4
    );
}

#[test]
fn a_fence_more_than_24_hours_ahead_is_refused() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    let hour_us: i64 = 3_600 * 1_000_000;
    let ahead = (now_us() + 25 * hour_us).to_string();
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", &ahead]),
        TOKEN_FROM_FUTURE,
    );
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", I64_MAX, "ID", "a"]),
        TOKEN_FROM_FUTURE,
    );
    assert_eq!(stock(&mut con, "sku:1"), 10);
    assert_eq!(request(&mut con, "sku:1", "a"), None);
    // Nothing was accepted: a current token still passes.
    let now = now_us();
    assert_eq!(
        int(deduct(&mut con, "sku:1", &["1", "FENCE", &now.to_string()])),
        9
    );
    // Less than 24 hours ahead is fine.
    let near = (now_us() + 23 * hour_us).to_string();
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "FENCE", &near])), 8);
}

#[test]
fn lock_tokens_fence_off_a_client_whose_lock_expired() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "{sku:42}", "10"]));
    let old = int(call(
        &mut con,
        &["LOCK.ACQUIRE", "{sku:42}:lock", "a", "50"],
    ));
    assert_eq!(
        int(deduct(
            &mut con,
            "{sku:42}",
            &["1", "FENCE", &old.to_string()]
        )),
        9
    );
    sleep_ms(120);
    let new = int(call(
        &mut con,
        &["LOCK.ACQUIRE", "{sku:42}:lock", "b", "30000"],
    ));
    assert!(new > old);
    assert_eq!(
        int(deduct(
            &mut con,
            "{sku:42}",
            &["1", "FENCE", &new.to_string()]
        )),
        8
    );
    // The paused client wakes up and writes with its old token.
    assert_err(
        deduct(&mut con, "{sku:42}", &["1", "FENCE", &old.to_string()]),
        stale_reply(old, new),
    );
    assert_eq!(stock(&mut con, "{sku:42}"), 8);
}

#[test]
fn checks_run_fence_before_id() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(
        int(deduct(
            &mut con,
            "sku:1",
            &["2", "ID", "a", "FENCE", &t.to_string()]
        )),
        8
    );
    // A stale fence with an id already in the ledger: STALE, not the replay reply.
    let lower = (t - 1).to_string();
    assert_err(
        deduct(&mut con, "sku:1", &["2", "ID", "a", "FENCE", &lower]),
        stale_reply(t - 1, t),
    );
    assert_eq!(stock(&mut con, "sku:1"), 8);
    assert_eq!(request(&mut con, "sku:1", "a"), Some(2));
}

#[test]
fn checks_run_id_before_quantity_a_replay_replies_the_remaining_quantity() {
    let server = Server::start();
    let mut con = server.conn();
    let ts = now_us().to_string();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["2", "ID", "a"])), 8);
    assert_eq!(int(deduct(&mut con, "sku:1", &["3"])), 5);
    // Replays: nothing deducted, whatever quantity says (even more than is left).
    assert_eq!(int(deduct(&mut con, "sku:1", &["2", "ID", "a"])), 5);
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "ID", "a"])), 5);
    assert_eq!(int(deduct(&mut con, "sku:1", &["100", "ID", "a"])), 5);
    assert_eq!(
        int(deduct(&mut con, "sku:1", &["100", "ID", "a", "FENCE", &ts])),
        5
    );
    assert_eq!(stock(&mut con, "sku:1"), 5);
    assert_eq!(request(&mut con, "sku:1", "a"), Some(2));
}

#[test]
fn checks_run_arguments_first() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(
        int(deduct(
            &mut con,
            "sku:1",
            &["1", "ID", "a", "FENCE", &t.to_string()]
        )),
        9
    );
    let lower = (t - 1).to_string();
    // A stale fence with a bad argument: the argument error wins.
    assert_err(
        deduct(&mut con, "sku:1", &["0", "FENCE", &lower]),
        quantity_range(1),
    );
    assert_err(
        deduct(&mut con, "sku:1", &["1", "FENCE", &lower, "COLOR", "red"]),
        unknown_option("COLOR"),
    );
    assert_err(
        deduct(
            &mut con,
            "sku:1",
            &["1", "ID", "a", "FENCE", &lower, "ID", "b"],
        ),
        repeated_option("ID"),
    );
    assert_eq!(stock(&mut con, "sku:1"), 9);
}

#[test]
fn a_replay_after_a_refund_deducts_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["3", "ID", "a"])), 7);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sku:1", "a"])), 3);
    assert_eq!(stock(&mut con, "sku:1"), 10);
    assert_eq!(int(deduct(&mut con, "sku:1", &["3", "ID", "a"])), 10);
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "ID", "a"])), 10);
    assert_eq!(stock(&mut con, "sku:1"), 10);
    assert_eq!(request(&mut con, "sku:1", "a"), Some(0));
}

#[test]
fn an_id_refused_for_lack_of_stock_can_be_retried() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "1"]));
    nil(deduct(&mut con, "sku:1", &["2", "ID", "a"]));
    assert_eq!(request(&mut con, "sku:1", "a"), None);
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku:1", "5"])), 6);
    assert_eq!(int(deduct(&mut con, "sku:1", &["2", "ID", "a"])), 4);
    assert_eq!(request(&mut con, "sku:1", "a"), Some(2));
    assert_eq!(int(deduct(&mut con, "sku:1", &["2", "ID", "a"])), 4);
}

#[test]
fn options_are_case_insensitive_and_come_in_any_order() {
    let server = Server::start();
    let mut con = server.conn();
    let t = now_us();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "100"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "id", "a"])), 99);
    assert_eq!(
        int(deduct(&mut con, "sku:1", &["1", "Fence", &t.to_string()])),
        98
    );
    assert_eq!(
        int(deduct(
            &mut con,
            "sku:1",
            &["1", "FENCE", &t.to_string(), "ID", "b"]
        )),
        97
    );
    assert_eq!(
        int(deduct(
            &mut con,
            "sku:1",
            &["1", "iD", "c", "fEnCe", &(t + 1).to_string()]
        )),
        96
    );
    assert_eq!(request(&mut con, "sku:1", "a"), Some(1));
    assert_eq!(request(&mut con, "sku:1", "b"), Some(1));
    assert_eq!(request(&mut con, "sku:1", "c"), Some(1));
    // The options took effect: replays and the raised fence.
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "Id", "b"])), 96);
    assert_err(
        deduct(&mut con, "sku:1", &["1", "fence", &t.to_string()]),
        stale_reply(t, t + 1),
    );
}

// ---------------------------------------------------------------------------------------------
// STOCK.REFUND
// ---------------------------------------------------------------------------------------------

#[test]
fn refund_returns_the_quantity_exactly_once() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["3", "ID", "a"])), 7);
    assert_eq!(int(deduct(&mut con, "sku:1", &["2", "ID", "b"])), 5);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sku:1", "a"])), 3);
    assert_eq!(stock(&mut con, "sku:1"), 8);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sku:1", "a"])), 0);
    assert_eq!(stock(&mut con, "sku:1"), 8);
    assert_eq!(request(&mut con, "sku:1", "a"), Some(0));
    assert_eq!(request(&mut con, "sku:1", "b"), Some(2));
}

#[test]
fn refund_of_an_unknown_id_or_a_missing_key_replies_0() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sku:1", "a"])), 0);
    assert_eq!(exists(&mut con, "sku:1"), 0);
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["3"])), 7);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sku:1", "a"])), 0);
    assert_eq!(stock(&mut con, "sku:1"), 7);
    // Refunding an unknown id does not make it spent.
    assert_eq!(request(&mut con, "sku:1", "a"), None);
    assert_eq!(int(deduct(&mut con, "sku:1", &["1", "ID", "a"])), 6);
}

#[test]
fn a_refunded_id_stays_spent() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["4", "ID", "order-1"])), 6);
    assert_eq!(
        int(call(&mut con, &["STOCK.REFUND", "sku:1", "order-1"])),
        4
    );
    // A late retry of the cancelled order takes nothing.
    assert_eq!(int(deduct(&mut con, "sku:1", &["4", "ID", "order-1"])), 10);
    assert_eq!(stock(&mut con, "sku:1"), 10);
    assert_eq!(
        int(call(&mut con, &["STOCK.REFUND", "sku:1", "order-1"])),
        0
    );
    assert_eq!(stock(&mut con, "sku:1"), 10);
}

// ---------------------------------------------------------------------------------------------
// STOCK.REQUEST
// ---------------------------------------------------------------------------------------------

#[test]
fn request_reports_the_quantity_0_after_refund_or_nil() {
    let server = Server::start();
    let mut con = server.conn();
    nil(call(&mut con, &["STOCK.REQUEST", "sku:1", "a"]));
    assert_eq!(exists(&mut con, "sku:1"), 0);
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    nil(call(&mut con, &["STOCK.REQUEST", "sku:1", "a"]));
    assert_eq!(int(deduct(&mut con, "sku:1", &["3", "ID", "a"])), 7);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sku:1", "a"])), 3);
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sku:1", "a"])), 3);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sku:1", "a"])), 0);
    nil(call(&mut con, &["STOCK.REQUEST", "sku:1", "b"]));
    assert_eq!(stock(&mut con, "sku:1"), 10);
}

// ---------------------------------------------------------------------------------------------
// The ledger bound
// ---------------------------------------------------------------------------------------------

/// With room for 3 ids: 3 succeed, a 4th new id is refused and changes nothing, replays
/// still work, and STOCK.SET empties the ledger.
fn check_ledger_of_three(con: &mut Connection) {
    let full = &ledger_full(3);
    okay(call(con, &["STOCK.SET", "sku:1", "100"]));
    assert_eq!(int(deduct(con, "sku:1", &["1", "ID", "a"])), 99);
    assert_eq!(int(deduct(con, "sku:1", &["1", "ID", "b"])), 98);
    assert_eq!(int(deduct(con, "sku:1", &["1", "ID", "c"])), 97);
    assert_err(deduct(con, "sku:1", &["1", "ID", "d"]), full);
    assert_eq!(stock(con, "sku:1"), 97);
    assert_eq!(request(con, "sku:1", "d"), None);
    // Replays of ids in the ledger still work.
    assert_eq!(int(deduct(con, "sku:1", &["1", "ID", "a"])), 97);
    // A deduction without an id does not need the ledger.
    assert_eq!(int(deduct(con, "sku:1", &["1"])), 96);
    // A refund keeps the entry (spent), so the ledger is still full.
    assert_eq!(int(call(con, &["STOCK.REFUND", "sku:1", "b"])), 1);
    assert_err(deduct(con, "sku:1", &["1", "ID", "d"]), full);
    assert_eq!(stock(con, "sku:1"), 97);
    // The next sale starts with an empty ledger.
    okay(call(con, &["STOCK.SET", "sku:1", "10"]));
    assert_eq!(int(deduct(con, "sku:1", &["1", "ID", "d"])), 9);
    assert_eq!(int(deduct(con, "sku:1", &["1", "ID", "e"])), 8);
    assert_eq!(int(deduct(con, "sku:1", &["1", "ID", "f"])), 7);
    assert_err(deduct(con, "sku:1", &["1", "ID", "g"]), full);
    assert_eq!(stock(con, "sku:1"), 7);
    // The bound is per stock.
    okay(call(con, &["STOCK.SET", "sku:2", "10"]));
    assert_eq!(int(deduct(con, "sku:2", &["1", "ID", "a"])), 9);
}

#[test]
fn ledger_bound_from_a_module_argument() {
    let server = Server::start_with(&["max-ledger-entries", "3"]);
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "fence.max-ledger-entries"), "3");
    check_ledger_of_three(&mut con);
}

#[test]
fn ledger_bound_from_a_config_line() {
    let server = Server::start_with(&["--fence.max-ledger-entries", "3"]);
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "fence.max-ledger-entries"), "3");
    check_ledger_of_three(&mut con);
}

#[test]
fn ledger_bound_from_config_set() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "3"],
    ));
    check_ledger_of_three(&mut con);
}

#[test]
fn ledger_bound_of_0_refuses_every_id() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "0"],
    ));
    okay(call(&mut con, &["STOCK.SET", "sku:1", "10"]));
    assert_err(deduct(&mut con, "sku:1", &["1", "ID", "a"]), ledger_full(0));
    assert_eq!(int(deduct(&mut con, "sku:1", &["1"])), 9);
}

// ---------------------------------------------------------------------------------------------
// Plain integer strings as stock
// ---------------------------------------------------------------------------------------------

#[test]
fn deduct_on_a_plain_integer_string_keeps_it_a_string() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["SET", "sku", "100"]));
    assert_eq!(int(deduct(&mut con, "sku", &["3"])), 97);
    assert_eq!(key_type(&mut con, "sku"), "string");
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("97"));
    assert_eq!(pttl(&mut con, "sku"), -1);
    assert_eq!(int(deduct(&mut con, "sku", &["97"])), 0);
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("0"));
}

#[test]
fn a_plain_string_keeps_its_ttl() {
    let server = Server::start();
    let mut con = server.conn();
    let expiry_set = Instant::now();
    okay(call(&mut con, &["SET", "sku", "100", "PX", "100000"]));
    assert_eq!(int(deduct(&mut con, "sku", &["3"])), 97);
    let ttl = pttl(&mut con, "sku");
    assert_ttl_since(ttl, 100_000, expiry_set, "PTTL after DEDUCT");
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku", "3"])), 100);
    let ttl = pttl(&mut con, "sku");
    assert_ttl_since(ttl, 100_000, expiry_set, "PTTL after ADD");
    assert_eq!(key_type(&mut con, "sku"), "string");
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("100"));
}

#[test]
fn add_on_a_plain_integer_string() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["SET", "sku", "5"]));
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku", "10"])), 15);
    assert_eq!(key_type(&mut con, "sku"), "string");
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("15"));
}

#[test]
fn get_on_a_plain_integer_string_replies_an_integer() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["SET", "sku", "100"]));
    assert_eq!(int(call(&mut con, &["STOCK.GET", "sku"])), 100);
    // Written by INCRBY, stored as an integer-encoded string.
    assert_eq!(int(call(&mut con, &["INCRBY", "sku2", "42"])), 42);
    assert_eq!(int(call(&mut con, &["STOCK.GET", "sku2"])), 42);
    assert_eq!(int(deduct(&mut con, "sku2", &["2"])), 40);
    assert_eq!(get_string(&mut con, "sku2").as_deref(), Some("40"));
}

#[test]
fn a_non_integer_string_gets_redis_own_error_and_is_unchanged() {
    let server = Server::start();
    let mut con = server.conn();
    for value in ["abc", "1.5", "", "12abc", " 5", "99999999999999999999"] {
        okay(call(&mut con, &["SET", "sku", value]));
        assert_err_ctx(
            call(&mut con, &["STOCK.GET", "sku"]),
            NOT_INTEGER,
            format!("{value:?}"),
        );
        assert_err_ctx(
            deduct(&mut con, "sku", &["1"]),
            NOT_INTEGER,
            format!("{value:?}"),
        );
        assert_err_ctx(
            call(&mut con, &["STOCK.ADD", "sku", "1"]),
            NOT_INTEGER,
            format!("{value:?}"),
        );
        assert_eq!(get_string(&mut con, "sku").as_deref(), Some(value));
        assert_eq!(key_type(&mut con, "sku"), "string");
    }
}

#[test]
fn stock_only_features_on_a_plain_string_need_a_stock() {
    let server = Server::start();
    let mut con = server.conn();
    let ts = now_us().to_string();
    okay(call(&mut con, &["SET", "sku", "100"]));
    assert_err(deduct(&mut con, "sku", &["1", "ID", "a"]), NEEDS_STOCK);
    assert_err(deduct(&mut con, "sku", &["1", "FENCE", &ts]), NEEDS_STOCK);
    assert_err(
        deduct(&mut con, "sku", &["1", "ID", "a", "FENCE", &ts]),
        NEEDS_STOCK,
    );
    assert_err(call(&mut con, &["STOCK.REFUND", "sku", "a"]), NEEDS_STOCK);
    assert_err(call(&mut con, &["STOCK.REQUEST", "sku", "a"]), NEEDS_STOCK);
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("100"));
    assert_eq!(key_type(&mut con, "sku"), "string");
}

#[test]
fn deduct_below_0_on_a_plain_string_replies_nil_and_changes_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["SET", "sku", "2"]));
    nil(deduct(&mut con, "sku", &["3"]));
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("2"));
    okay(call(&mut con, &["SET", "sku", "0"]));
    nil(deduct(&mut con, "sku", &["1"]));
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("0"));
}

#[test]
fn stock_commands_on_a_list_are_wrongtype() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(int(call(&mut con, &["RPUSH", "sku", "1"])), 1);
    let calls: [&[&str]; 7] = [
        &["STOCK.SET", "sku", "5"],
        &["STOCK.ADD", "sku", "5"],
        &["STOCK.GET", "sku"],
        &["STOCK.DEDUCT", "sku", "1"],
        &["STOCK.DEDUCT", "sku", "1", "ID", "a"],
        &["STOCK.REFUND", "sku", "a"],
        &["STOCK.REQUEST", "sku", "a"],
    ];
    for args in calls {
        assert_err_ctx(call(&mut con, args), WRONGTYPE, format!("{args:?}"));
    }
    assert_eq!(key_type(&mut con, "sku"), "list");
    assert_eq!(int(call(&mut con, &["LLEN", "sku"])), 1);
}

// ---------------------------------------------------------------------------------------------
// Precedence details the README pins down
// ---------------------------------------------------------------------------------------------

#[test]
fn a_replay_does_not_raise_the_fence() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    assert_eq!(
        int(deduct(&mut con, "sku", &["1", "ID", "a", "FENCE", "5"])),
        9
    );
    // A replay with a higher token deducts nothing and leaves the highest token at 5.
    assert_eq!(
        int(deduct(&mut con, "sku", &["1", "ID", "a", "FENCE", "9"])),
        9
    );
    assert_eq!(int(deduct(&mut con, "sku", &["1", "FENCE", "6"])), 8);
    assert_err(
        deduct(&mut con, "sku", &["1", "FENCE", "5"]),
        stale_reply(5, 6),
    );
}

#[test]
fn a_full_ledger_is_reported_before_a_short_stock() {
    let server = Server::start_with(&["max-ledger-entries", "1"]);
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "1"]));
    assert_eq!(int(deduct(&mut con, "sku", &["1", "ID", "a"])), 0);
    assert_err(deduct(&mut con, "sku", &["1", "ID", "b"]), ledger_full(1));
    assert_eq!(stock(&mut con, "sku"), 0);
}

#[test]
fn lowering_the_ledger_bound_keeps_entries_and_refuses_new_ids() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    for id in ["a", "b", "c"] {
        int(deduct(&mut con, "sku", &["1", "ID", id]));
    }
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "2"],
    ));
    assert_eq!(int(deduct(&mut con, "sku", &["1", "ID", "c"])), 7);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sku", "a"])), 1);
    assert_err(deduct(&mut con, "sku", &["1", "ID", "d"]), ledger_full(2));
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    assert_eq!(int(deduct(&mut con, "sku", &["1", "ID", "d"])), 9);
}

#[test]
fn a_negative_plain_string_cannot_be_deducted_but_can_be_restocked() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["SET", "sku", "-5"]));
    nil(deduct(&mut con, "sku", &["1"]));
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("-5"));
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku", "7"])), 2);
    assert_eq!(int(call(&mut con, &["STOCK.GET", "sku"])), 2);
}

/// Reading a plain integer-string stock leaves how Redis stores it alone (a read-only command
/// must not re-encode a user's key).
#[test]
fn reading_a_plain_string_stock_does_not_re_encode_it() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["SET", "sku", "100"]));
    let before = simple_or_bulk(call(&mut con, &["OBJECT", "ENCODING", "sku"]));
    assert_eq!(before, "int");
    assert_eq!(int(call(&mut con, &["STOCK.GET", "sku"])), 100);
    call(&mut con, &["STOCK.INFO", "sku"]).expect("STOCK.INFO");
    assert_eq!(
        simple_or_bulk(call(&mut con, &["OBJECT", "ENCODING", "sku"])),
        "int"
    );
}

fn simple_or_bulk(r: redis::RedisResult<Value>) -> String {
    match r {
        Ok(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(Value::SimpleString(s)) => s,
        other => panic!("{other:?}"),
    }
}
