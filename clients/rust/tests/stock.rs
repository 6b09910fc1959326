//! The stock methods of `FenceCommands` against a real server: typed deductions (including
//! `Stale`), the options builders, request states, `STOCK.INFO`, RESP2 and RESP3, the order
//! flow with holds (place, pay, cancel, expire; `STOCK.REQUEST … DETAIL`, `Confirm`), and
//! purchase limits per buyer (`StockSetOptions::limit`, `stock_limit`, `DeductOptions::buyer`,
//! `stock_buyer`, `Deduct::Limit`).
//!
//! Expiries are waited for as events (an `expire` entry in the stream, the server's clock past
//! a deadline) with a deadline only a failure exhausts, never by sleeping for a hold's length.

mod common;

use common::{ms, wait_until, Server, EVENT_DEADLINE};
use fence_core::error::code;
use redis_fence_client::{
    AddOptions, Confirm, Deduct, DeductOptions, EntryState, Events, FenceCommands, RefundOptions,
    RequestState, StockInfo, StockSetOptions,
};

/// The options of the calls below: an optional id and fence.
fn opts(id: Option<&str>, fence: Option<u64>) -> DeductOptions {
    let mut options = DeductOptions::new();
    if let Some(id) = id {
        options = options.id(id);
    }
    if let Some(token) = fence {
        options = options.fence(token);
    }
    options
}

#[test]
fn set_add_get() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(con.stock_get("sku:1").unwrap(), None);
    con.stock_set("sku:1", 10).unwrap();
    assert_eq!(con.stock_get("sku:1").unwrap(), Some(10));
    assert_eq!(con.stock_add("sku:1", 5, &AddOptions::new()).unwrap(), 15);
    assert_eq!(con.stock_add("sku:new", 3, &AddOptions::new()).unwrap(), 3);
    con.stock_set("sku:1", 0).unwrap();
    assert_eq!(con.stock_get("sku:1").unwrap(), Some(0));
    let e = con.stock_set("sku:1", -1).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
}

#[test]
fn deduct_is_typed() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set("sku:2", 5).unwrap();
    assert_eq!(
        con.stock_deduct("sku:2", 2, &opts(None, None)).unwrap(),
        Deduct::Remaining(3)
    );
    assert_eq!(
        con.stock_deduct("sku:2", 4, &opts(None, None)).unwrap(),
        Deduct::SoldOut
    );
    assert_eq!(
        con.stock_deduct("sku:missing", 1, &opts(None, None))
            .unwrap(),
        Deduct::SoldOut
    );
    // Idempotent with an id: the retry deducts nothing and replies the current quantity.
    let first = con
        .stock_deduct("sku:2", 1, &opts(Some("order-1"), None))
        .unwrap();
    assert_eq!(first, Deduct::Remaining(2));
    assert_eq!(first.remaining(), Some(2));
    assert_eq!(
        con.stock_deduct("sku:2", 1, &opts(Some("order-1"), None))
            .unwrap(),
        Deduct::Remaining(2)
    );
    assert_eq!(Deduct::SoldOut.remaining(), None);
    assert_eq!(con.stock_get("sku:2").unwrap(), Some(2));

    // Plain integer strings work without ID and FENCE.
    redis::cmd("SET")
        .arg("sku:plain")
        .arg(7)
        .query::<()>(&mut con)
        .unwrap();
    assert_eq!(
        con.stock_deduct("sku:plain", 7, &opts(None, None)).unwrap(),
        Deduct::Remaining(0)
    );
}

#[test]
fn a_stale_fence_is_typed_and_changes_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    let mut lock_con = server.conn();
    con.stock_set("{sku:3}", 10).unwrap();

    let t1 = lock_con
        .lock_acquire("{sku:3}:lock", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    assert_eq!(
        con.stock_deduct("{sku:3}", 1, &opts(Some("a"), Some(t1)))
            .unwrap(),
        Deduct::Remaining(9)
    );
    assert!(lock_con.lock_release("{sku:3}:lock", "w1", t1).unwrap());

    let t2 = lock_con
        .lock_acquire("{sku:3}:lock", "w2", ms(30_000))
        .unwrap()
        .unwrap();
    assert!(t2 > t1);
    assert_eq!(
        con.stock_deduct("{sku:3}", 1, &opts(Some("b"), Some(t2)))
            .unwrap(),
        Deduct::Remaining(8)
    );
    // The old holder, paused while its lock changed hands, is refused.
    assert_eq!(
        con.stock_deduct("{sku:3}", 1, &opts(Some("c"), Some(t1)))
            .unwrap(),
        Deduct::Stale
    );
    assert_eq!(
        con.stock_deduct("{sku:3}", 1, &opts(None, Some(t1)))
            .unwrap(),
        Deduct::Stale
    );
    assert_eq!(Deduct::Stale.remaining(), None);
    assert_eq!(con.stock_get("{sku:3}").unwrap(), Some(8));
    assert_eq!(
        con.stock_request("{sku:3}", "c").unwrap(),
        RequestState::Unknown
    );
}

#[test]
fn other_error_replies_stay_errors() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set("sku:4", 10).unwrap();
    let e = con.stock_deduct("sku:4", 0, &opts(None, None)).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con
        .stock_deduct("sku:4", 1, &opts(Some(""), None))
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    // A token a day ahead of the server's clock.
    let future = con.lock_acquire("l", "w", ms(1_000)).unwrap().unwrap() + 2 * 86_400 * 1_000_000;
    let e = con
        .stock_deduct("sku:4", 1, &opts(None, Some(future)))
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    redis::cmd("SET")
        .arg("sku:plain")
        .arg(5)
        .query::<()>(&mut con)
        .unwrap();
    let e = con
        .stock_deduct("sku:plain", 1, &opts(Some("id"), None))
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    redis::cmd("LPUSH")
        .arg("list")
        .arg(1)
        .query::<()>(&mut con)
        .unwrap();
    let e = con.stock_deduct("list", 1, &opts(None, None)).unwrap_err();
    assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
    let e = con.stock_request("sku:plain", "id").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    assert_eq!(con.stock_get("sku:4").unwrap(), Some(10));
}

#[test]
fn request_states_follow_deduct_and_refund() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set("sku:5", 10).unwrap();
    assert_eq!(
        con.stock_request("sku:5", "o1").unwrap(),
        RequestState::Unknown
    );
    assert_eq!(
        con.stock_request("sku:none", "o1").unwrap(),
        RequestState::Unknown
    );
    assert_eq!(
        con.stock_deduct("sku:5", 3, &opts(Some("o1"), None))
            .unwrap(),
        Deduct::Remaining(7)
    );
    assert_eq!(
        con.stock_request("sku:5", "o1").unwrap(),
        RequestState::Deducted(3)
    );
    // A request refused for lack of stock stays unknown (and may be retried).
    assert_eq!(
        con.stock_deduct("sku:5", 100, &opts(Some("o2"), None))
            .unwrap(),
        Deduct::SoldOut
    );
    assert_eq!(
        con.stock_request("sku:5", "o2").unwrap(),
        RequestState::Unknown
    );

    assert_eq!(
        con.stock_refund("sku:5", "o1", &RefundOptions::new())
            .unwrap(),
        3
    );
    assert_eq!(con.stock_get("sku:5").unwrap(), Some(10));
    assert_eq!(
        con.stock_request("sku:5", "o1").unwrap(),
        RequestState::Refunded
    );
    assert_eq!(
        con.stock_refund("sku:5", "o1", &RefundOptions::new())
            .unwrap(),
        0,
        "exactly once"
    );
    assert_eq!(
        con.stock_refund("sku:5", "unknown", &RefundOptions::new())
            .unwrap(),
        0
    );
    // A late retry of the refunded order takes nothing.
    assert_eq!(
        con.stock_deduct("sku:5", 3, &opts(Some("o1"), None))
            .unwrap(),
        Deduct::Remaining(10)
    );
    assert_eq!(
        con.stock_request("sku:5", "o1").unwrap(),
        RequestState::Refunded
    );
}

#[test]
fn options_builders_on_the_wire() {
    let server = Server::start();
    let mut con = server.conn();
    let mut resp3 = server.conn_resp3();
    // STOCK.ADD … ID: a resend adds nothing.
    let restock = AddOptions::new().id("restock-1");
    assert_eq!(con.stock_add("{s}", 10, &restock).unwrap(), 10);
    assert_eq!(con.stock_add("{s}", 10, &restock).unwrap(), 10);
    // ID, FENCE and EVENTS together.
    let token = con
        .lock_acquire("{s}:lock", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let options = DeductOptions::new()
        .id("o-1")
        .fence(token)
        .events(Events::to("{s}:orders").maxlen_approx(1_000));
    assert_eq!(
        con.stock_deduct("{s}", 4, &options).unwrap(),
        Deduct::Remaining(6)
    );
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("{s}:orders")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    assert_eq!(entries.ids.len(), 1);
    let fields = &entries.ids[0].map;
    let text = |name: &str| -> String { redis::from_redis_value(fields[name].clone()).unwrap() };
    assert_eq!(text("type"), "deduct");
    assert_eq!(text("id"), "o-1");
    assert_eq!(text("fence"), token.to_string());
    // A refund with events appends its own entry.
    let refund = RefundOptions::new().events(Events::to("{s}:orders").maxlen(10));
    assert_eq!(con.stock_refund("{s}", "o-1", &refund).unwrap(), 4);
    assert_eq!(
        redis::cmd("XLEN")
            .arg("{s}:orders")
            .query::<i64>(&mut con)
            .unwrap(),
        2
    );
    // STOCK.INFO, read from RESP2 and RESP3 alike.
    let expected = con.stock_info("{s}").unwrap().unwrap();
    assert_eq!(expected.available, 10);
    let ledger = expected.ledger.clone().unwrap();
    assert_eq!(
        (
            ledger.deducted,
            ledger.requests,
            ledger.fence,
            ledger.restocks
        ),
        (0, 1, token, 1)
    );
    for c in [&mut con, &mut resp3] {
        assert_eq!(c.stock_info("{s}").unwrap().as_ref(), Some(&expected));
        assert_eq!(c.stock_info("{missing}").unwrap(), None);
        assert_eq!(
            c.stock_request("{s}", "o-1").unwrap(),
            RequestState::Refunded
        );
    }
    // A plain integer string has no ledger.
    redis::cmd("SET")
        .arg("plain")
        .arg(3)
        .query::<()>(&mut con)
        .unwrap();
    let plain = con.stock_info("plain").unwrap().unwrap();
    assert_eq!((plain.available, plain.ledger), (3, None));
    // The typed replies are `FromRedisValue`: they work with `query` too.
    let direct: Option<StockInfo> = redis::cmd("STOCK.INFO")
        .arg("{s}")
        .query(&mut resp3)
        .unwrap();
    assert_eq!(direct, Some(expected));
    let sold: Deduct = redis::cmd("STOCK.DEDUCT")
        .arg("{s}")
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert_eq!(sold, Deduct::SoldOut);
}

// ---------------------------------------------------------------------------------------------
// Orders with a deadline: HOLD, STOCK.CONFIRM, STOCK.REQUEST … DETAIL, the expiry
// ---------------------------------------------------------------------------------------------

/// The server's clock, Unix milliseconds (`TIME`).
fn server_ms(con: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).expect("TIME");
    secs * 1000 + micros / 1000
}

/// Places `id` (`quantity` units held for `hold_ms`, with events on `stream` when given) and
/// returns the reply and the bounds the deadline must lie in: the server's clock read before
/// and after the call, plus `hold_ms`. No timer is raced: the bounds hold however slow the
/// machine is.
fn place(
    con: &mut redis::Connection,
    key: &str,
    quantity: i64,
    id: &str,
    hold_ms: u64,
    stream: Option<&str>,
) -> (Deduct, std::ops::RangeInclusive<u64>) {
    let mut options = DeductOptions::new().id(id).hold(ms(hold_ms));
    if let Some(stream) = stream {
        options = options.events(Events::to(stream));
    }
    let before = server_ms(con);
    let reply = con.stock_deduct(key, quantity, &options).unwrap();
    let after = server_ms(con);
    (reply, before + hold_ms..=after + hold_ms)
}

/// A stream's `expire` entries: their fields by name.
fn expire_entries(
    con: &mut redis::Connection,
    stream: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    entries
        .ids
        .iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value(v.clone()).unwrap()))
                .collect::<std::collections::HashMap<String, String>>()
        })
        .filter(|f| f.get("type").map(String::as_str) == Some("expire"))
        .collect()
}

const MINUTES_10: u64 = 600_000;

#[test]
fn place_pay_and_cancel_orders_with_holds() {
    let server = Server::start();
    let mut con = server.conn();
    let mut resp3 = server.conn_resp3();
    con.stock_set("{o}", 10).unwrap();

    // Place: held until a deadline the server's clock sets.
    let (placed, bounds) = place(&mut con, "{o}", 1, "paid", MINUTES_10, Some("{o}:orders"));
    assert_eq!(placed, Deduct::Remaining(9));
    for c in [&mut con, &mut resp3] {
        let detail = c.stock_request_detail("{o}", "paid").unwrap().unwrap();
        assert_eq!((detail.state, detail.quantity), (EntryState::Held, 1));
        let deadline = detail.deadline.expect("a held entry's deadline");
        assert!(bounds.contains(&deadline), "{deadline} not in {bounds:?}");
        assert_eq!(detail.units(), 1);
        assert_eq!(
            c.stock_request("{o}", "paid").unwrap(),
            RequestState::Deducted(1)
        );
        let ledger = c.stock_info("{o}").unwrap().unwrap().ledger.unwrap();
        assert_eq!((ledger.deducted, ledger.held, ledger.held_units), (1, 1, 1));
        assert_eq!(ledger.next_deadline, Some(deadline));
    }
    // A replay neither deducts nor moves the deadline, whatever HOLD it carries.
    let before = con.stock_request_detail("{o}", "paid").unwrap();
    let replay = DeductOptions::new().id("paid").hold(ms(1));
    assert_eq!(
        con.stock_deduct("{o}", 5, &replay).unwrap(),
        Deduct::Remaining(9)
    );
    assert_eq!(con.stock_request_detail("{o}", "paid").unwrap(), before);

    // Pay: confirmed, and a resend says the same.
    assert_eq!(
        con.stock_confirm("{o}", "paid").unwrap(),
        Confirm::Confirmed
    );
    assert_eq!(
        resp3.stock_confirm("{o}", "paid").unwrap(),
        Confirm::Confirmed
    );
    for c in [&mut con, &mut resp3] {
        let detail = c.stock_request_detail("{o}", "paid").unwrap().unwrap();
        assert_eq!(
            (detail.state, detail.quantity, detail.deadline),
            (EntryState::Confirmed, 1, None)
        );
        let ledger = c.stock_info("{o}").unwrap().unwrap().ledger.unwrap();
        assert_eq!(
            (
                ledger.deducted,
                ledger.held,
                ledger.held_units,
                ledger.next_deadline
            ),
            (1, 0, 0, None)
        );
    }

    // Cancel before paying: the units come back once; a payment after that is too late.
    let (placed, _) = place(&mut con, "{o}", 2, "cancelled", MINUTES_10, None);
    assert_eq!(placed, Deduct::Remaining(7));
    assert_eq!(
        con.stock_refund("{o}", "cancelled", &RefundOptions::new())
            .unwrap(),
        2
    );
    assert_eq!(
        con.stock_refund("{o}", "cancelled", &RefundOptions::new())
            .unwrap(),
        0
    );
    assert_eq!(
        con.stock_confirm("{o}", "cancelled").unwrap(),
        Confirm::Refunded
    );
    let detail = con
        .stock_request_detail("{o}", "cancelled")
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            detail.state,
            detail.quantity,
            detail.deadline,
            detail.units()
        ),
        (EntryState::Refunded, 2, None, 0)
    );
    assert_eq!(
        con.stock_request("{o}", "cancelled").unwrap(),
        RequestState::Refunded
    );

    // A paid order cancelled later returns its units too.
    assert_eq!(
        con.stock_refund("{o}", "paid", &RefundOptions::new())
            .unwrap(),
        1
    );
    assert_eq!(con.stock_confirm("{o}", "paid").unwrap(), Confirm::Refunded);
    assert_eq!(con.stock_get("{o}").unwrap(), Some(10));

    // A deduction without a hold: DETAIL says deducted; CONFIRM says confirmed, changes nothing.
    assert_eq!(
        con.stock_deduct("{o}", 3, &opts(Some("plain"), None))
            .unwrap(),
        Deduct::Remaining(7)
    );
    assert_eq!(
        con.stock_confirm("{o}", "plain").unwrap(),
        Confirm::Confirmed
    );
    let detail = con.stock_request_detail("{o}", "plain").unwrap().unwrap();
    assert_eq!(
        (detail.state, detail.quantity, detail.deadline),
        (EntryState::Deducted, 3, None)
    );

    // Unknown ids and missing keys.
    for c in [&mut con, &mut resp3] {
        assert_eq!(c.stock_confirm("{o}", "nope").unwrap(), Confirm::Unknown);
        assert_eq!(
            c.stock_confirm("{missing}", "paid").unwrap(),
            Confirm::Unknown
        );
        assert_eq!(c.stock_request_detail("{o}", "nope").unwrap(), None);
        assert_eq!(c.stock_request_detail("{missing}", "paid").unwrap(), None);
    }
    let events: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("{o}:orders")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    assert_eq!(events.ids.len(), 1, "one deduct event, nothing else");
}

#[test]
fn bad_holds_and_confirms_are_errors_that_change_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set("{b}", 5).unwrap();
    // HOLD without ID, a zero hold, one past fence.max-hold-ms (7 days by default).
    for options in [
        DeductOptions::new().hold(ms(1_000)),
        DeductOptions::new().id("x").hold(std::time::Duration::ZERO),
        DeductOptions::new().id("x").hold_ms(8 * 86_400_000),
    ] {
        let e = con.stock_deduct("{b}", 1, &options).unwrap_err();
        assert_eq!(e.code(), Some(code::ERR), "{options:?}: {e}");
    }
    assert_eq!(
        con.stock_request("{b}", "x").unwrap(),
        RequestState::Unknown
    );
    assert_eq!(con.stock_get("{b}").unwrap(), Some(5));
    // Holds need the module type: a plain integer string is refused, a lock is another type.
    redis::cmd("SET")
        .arg("{b}:plain")
        .arg(5)
        .query::<()>(&mut con)
        .unwrap();
    let hold = DeductOptions::new().id("x").hold(ms(1_000));
    let e = con.stock_deduct("{b}:plain", 1, &hold).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con.stock_confirm("{b}:plain", "x").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con.stock_request_detail("{b}:plain", "x").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    con.lock_acquire("{b}:lock", "w", ms(30_000)).unwrap();
    let e = con.stock_confirm("{b}:lock", "x").unwrap_err();
    assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
    let e = con.stock_confirm("{b}", "").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    assert_eq!(
        redis::cmd("GET")
            .arg("{b}:plain")
            .query::<i64>(&mut con)
            .unwrap(),
        5
    );
}

#[test]
fn an_unpaid_order_expires_once_and_a_late_payment_is_told_so() {
    let server = Server::start();
    let mut con = server.conn();
    let mut resp3 = server.conn_resp3();
    con.stock_set("{e}", 10).unwrap();
    let (placed, bounds) = place(&mut con, "{e}", 3, "unpaid", 50, Some("{e}:orders"));
    assert_eq!(placed, Deduct::Remaining(7));
    // Wait for the module's timer to return the units: the expire event is in the stream.
    assert!(
        wait_until(EVENT_DEADLINE, || !expire_entries(&mut con, "{e}:orders")
            .is_empty()),
        "no expire event after {EVENT_DEADLINE:?}"
    );
    let expires = expire_entries(&mut con, "{e}:orders");
    assert_eq!(expires.len(), 1, "{expires:?}");
    let event = &expires[0];
    assert_eq!(
        (
            event["sku"].as_str(),
            event["id"].as_str(),
            event["quantity"].as_str(),
            event["remaining"].as_str()
        ),
        ("{e}", "unpaid", "3", "10")
    );
    for c in [&mut con, &mut resp3] {
        let detail = c.stock_request_detail("{e}", "unpaid").unwrap().unwrap();
        assert_eq!(
            (
                detail.state,
                detail.quantity,
                detail.deadline,
                detail.units()
            ),
            (EntryState::Expired, 3, None, 0)
        );
        assert_eq!(
            c.stock_request("{e}", "unpaid").unwrap(),
            RequestState::Refunded,
            "an expired order holds nothing"
        );
        let info = c.stock_info("{e}").unwrap().unwrap();
        let ledger = info.ledger.unwrap();
        assert_eq!(
            (
                info.available,
                ledger.deducted,
                ledger.held,
                ledger.held_units,
                ledger.next_deadline
            ),
            (10, 0, 0, 0, None)
        );
        // The payment arrives too late: typed, with the deadline that passed.
        match c.stock_confirm("{e}", "unpaid").unwrap() {
            Confirm::Expired { at: Some(at) } => {
                assert!(bounds.contains(&at), "{at} not in {bounds:?}")
            }
            other => panic!("a late payment: {other:?}"),
        }
    }
    // The units came back once: a refund returns nothing, a replay deducts nothing.
    assert_eq!(
        con.stock_refund("{e}", "unpaid", &RefundOptions::new())
            .unwrap(),
        0
    );
    assert_eq!(
        con.stock_deduct("{e}", 3, &DeductOptions::new().id("unpaid").hold(ms(50)))
            .unwrap(),
        Deduct::Remaining(10)
    );
    assert_eq!(
        con.stock_request_detail("{e}", "unpaid")
            .unwrap()
            .map(|d| d.state),
        Some(EntryState::Expired)
    );
    assert_eq!(expire_entries(&mut con, "{e}:orders").len(), 1);
    assert_eq!(con.stock_get("{e}").unwrap(), Some(10));
}

/// A payment that comes after the deadline is refused even when the module's timer has not
/// returned the hold yet: `STOCK.CONFIRM` expires it itself. The test waits until the server's
/// clock is past the deadline (a condition, not a sleep), then confirms.
#[test]
fn confirm_after_the_deadline_is_expired_whoever_gets_there_first() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set("{l}", 4).unwrap();
    let (placed, bounds) = place(&mut con, "{l}", 1, "late", 20, None);
    assert_eq!(placed, Deduct::Remaining(3));
    let deadline = *bounds.end();
    assert!(
        wait_until(EVENT_DEADLINE, || server_ms(&mut con) > deadline),
        "the server's clock did not pass {deadline}"
    );
    match con.stock_confirm("{l}", "late").unwrap() {
        Confirm::Expired { at: Some(at) } => assert!(bounds.contains(&at), "{at} {bounds:?}"),
        other => panic!("confirm after the deadline: {other:?}"),
    }
    assert_eq!(con.stock_get("{l}").unwrap(), Some(4));
    let detail = con.stock_request_detail("{l}", "late").unwrap().unwrap();
    assert_eq!(detail.state, EntryState::Expired);
    // The typed reply is a `FromRedisValue` too; through `query` an EXPIRED reply is an error
    // before the conversion runs (as STALE is for `Deduct`), with its own code.
    let e = redis::cmd("STOCK.CONFIRM")
        .arg("{l}")
        .arg("late")
        .query::<Confirm>(&mut con)
        .unwrap_err();
    assert_eq!(e.code(), Some(code::EXPIRED), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Purchase limits per buyer: STOCK.SET … LIMIT, STOCK.LIMIT, BUYER, STOCK.BUYER, Deduct::Limit
// ---------------------------------------------------------------------------------------------

/// An order for `buyer`.
fn order(id: &str, buyer: &str) -> DeductOptions {
    DeductOptions::new().id(id).buyer(buyer)
}

/// The limit and the number of buyers `STOCK.INFO` reports.
fn limit_and_buyers(con: &mut redis::Connection, key: &str) -> (Option<i64>, u64) {
    let ledger = con.stock_info(key).unwrap().unwrap().ledger.unwrap();
    (ledger.limit, ledger.buyers)
}

#[test]
fn a_limit_per_buyer_is_typed_and_changes_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    let mut resp3 = server.conn_resp3();
    con.stock_set_with("{p}", 10, &StockSetOptions::new().limit(2))
        .unwrap();
    for c in [&mut con, &mut resp3] {
        assert_eq!(limit_and_buyers(c, "{p}"), (Some(2), 0));
    }
    // A buyer id with spaces: sent as one word, read back whole.
    assert_eq!(
        con.stock_deduct("{p}", 1, &order("o-1", "user 7")).unwrap(),
        Deduct::Remaining(9)
    );
    // A replay counts nothing again, whatever buyer it names.
    assert_eq!(
        con.stock_deduct("{p}", 1, &order("o-1", "someone else"))
            .unwrap(),
        Deduct::Remaining(9)
    );
    for c in [&mut con, &mut resp3] {
        assert_eq!(c.stock_buyer("{p}", "user 7").unwrap(), Some(1));
        assert_eq!(c.stock_buyer("{p}", "someone else").unwrap(), Some(0));
        assert_eq!(c.stock_buyer("{p}", "never").unwrap(), Some(0));
        assert_eq!(c.stock_buyer("{missing}", "user 7").unwrap(), None);
        let detail = c.stock_request_detail("{p}", "o-1").unwrap().unwrap();
        assert_eq!(
            (detail.state, detail.quantity, detail.buyer.as_deref()),
            (EntryState::Deducted, 1, Some("user 7"))
        );
        assert_eq!(limit_and_buyers(c, "{p}"), (Some(2), 1));
    }

    // Past the limit: typed, with what the buyer holds and the limit, on RESP2 and RESP3; the
    // limit is checked before the quantity (a buyer at their limit gets it when stock is short).
    let refused = Deduct::Limit {
        buyer: "user 7".into(),
        holds: 1,
        limit: 2,
    };
    assert_eq!(
        con.stock_deduct("{p}", 2, &order("o-2", "user 7")).unwrap(),
        refused
    );
    assert_eq!(
        resp3
            .stock_deduct("{p}", 2, &order("o-2", "user 7"))
            .unwrap(),
        refused
    );
    assert_eq!(
        con.stock_deduct("{p}", 100, &order("o-2", "user 7"))
            .unwrap(),
        Deduct::Limit {
            buyer: "user 7".into(),
            holds: 1,
            limit: 2,
        }
    );
    assert_eq!(refused.remaining(), None);
    // Nothing changed, and the refused request id is not spent.
    assert_eq!(con.stock_get("{p}").unwrap(), Some(9));
    assert_eq!(
        con.stock_request("{p}", "o-2").unwrap(),
        RequestState::Unknown
    );
    assert_eq!(con.stock_buyer("{p}", "user 7").unwrap(), Some(1));
    // Up to the limit is fine.
    assert_eq!(
        con.stock_deduct("{p}", 1, &order("o-2", "user 7")).unwrap(),
        Deduct::Remaining(8)
    );
    assert_eq!(
        con.stock_deduct("{p}", 1, &order("o-3", "user 7")).unwrap(),
        Deduct::Limit {
            buyer: "user 7".into(),
            holds: 2,
            limit: 2
        }
    );
    // A refund gives the allowance back.
    assert_eq!(
        con.stock_refund("{p}", "o-1", &RefundOptions::new())
            .unwrap(),
        1
    );
    assert_eq!(con.stock_buyer("{p}", "user 7").unwrap(), Some(1));
    let detail = con.stock_request_detail("{p}", "o-1").unwrap().unwrap();
    assert_eq!(
        (detail.state, detail.buyer.as_deref()),
        (EntryState::Refunded, Some("user 7")),
        "a refunded entry keeps its buyer"
    );
    assert_eq!(
        con.stock_deduct("{p}", 1, &order("o-3", "user 7")).unwrap(),
        Deduct::Remaining(8)
    );

    // Through a plain `query`, a LIMIT reply is an error before the conversion runs (as STALE
    // is), with its own code.
    let e = redis::cmd("STOCK.DEDUCT")
        .arg("{p}")
        .arg(1)
        .arg(order("o-4", "user 7"))
        .query::<Deduct>(&mut con)
        .unwrap_err();
    assert_eq!(e.code(), Some(code::LIMIT), "{e}");
}

#[test]
fn limits_change_with_stock_limit_and_stock_set() {
    let server = Server::start();
    let mut con = server.conn();
    let mut resp3 = server.conn_resp3();
    // Without a limit BUYER is recorded all the same, and deductions without it are taken.
    con.stock_set("{q}", 10).unwrap();
    assert_eq!(limit_and_buyers(&mut con, "{q}"), (None, 0));
    assert_eq!(
        con.stock_deduct("{q}", 3, &order("o-1", "u1")).unwrap(),
        Deduct::Remaining(7)
    );
    assert_eq!(
        con.stock_deduct("{q}", 1, &opts(Some("anon"), None))
            .unwrap(),
        Deduct::Remaining(6)
    );
    let anon = con.stock_request_detail("{q}", "anon").unwrap().unwrap();
    assert_eq!(anon.buyer, None, "an entry made without BUYER has none");
    assert_eq!(limit_and_buyers(&mut con, "{q}"), (None, 1));

    // A limit set in the middle of the sale counts what was bought; lowering keeps holdings.
    for c in [&mut con, &mut resp3] {
        assert!(c.stock_limit("{q}", 2).unwrap());
        assert!(!c.stock_limit("{missing}", 2).unwrap());
        assert_eq!(c.stock_get("{missing}").unwrap(), None, "nothing created");
    }
    assert_eq!(limit_and_buyers(&mut resp3, "{q}"), (Some(2), 1));
    assert_eq!(con.stock_buyer("{q}", "u1").unwrap(), Some(3));
    assert_eq!(
        con.stock_deduct("{q}", 1, &order("o-2", "u1")).unwrap(),
        Deduct::Limit {
            buyer: "u1".into(),
            holds: 3,
            limit: 2
        }
    );
    // With a limit, a deduction without BUYER is refused (an error, not an outcome).
    let e = con
        .stock_deduct("{q}", 1, &opts(Some("anon-2"), None))
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con.stock_deduct("{q}", 1, &opts(None, None)).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    // Raising it lets the buyer buy again; 0 clears it.
    assert!(con.stock_limit("{q}", 4).unwrap());
    assert_eq!(
        con.stock_deduct("{q}", 1, &order("o-2", "u1")).unwrap(),
        Deduct::Remaining(5)
    );
    assert!(con.stock_limit("{q}", 4).unwrap(), "safe to resend");
    assert!(con.stock_limit("{q}", 0).unwrap());
    assert_eq!(limit_and_buyers(&mut con, "{q}"), (None, 1));
    assert_eq!(
        con.stock_deduct("{q}", 1, &opts(None, None)).unwrap(),
        Deduct::Remaining(4)
    );

    // STOCK.SET starts a new sale: buyers cleared, the limit kept without LIMIT, replaced with
    // it, cleared with LIMIT 0.
    assert!(con.stock_limit("{q}", 3).unwrap());
    con.stock_set("{q}", 20).unwrap();
    assert_eq!(limit_and_buyers(&mut con, "{q}"), (Some(3), 0));
    assert_eq!(con.stock_buyer("{q}", "u1").unwrap(), Some(0));
    con.stock_set_with("{q}", 20, &StockSetOptions::new())
        .unwrap();
    assert_eq!(limit_and_buyers(&mut con, "{q}"), (Some(3), 0));
    resp3
        .stock_set_with("{q}", 20, &StockSetOptions::new().limit(1))
        .unwrap();
    assert_eq!(limit_and_buyers(&mut con, "{q}"), (Some(1), 0));
    con.stock_set_with("{q}", 20, &StockSetOptions::new().no_limit())
        .unwrap();
    assert_eq!(limit_and_buyers(&mut con, "{q}"), (None, 0));
    // A new stock created with a limit.
    con.stock_set_with("{q}:new", 5, &StockSetOptions::new().limit(i64::MAX))
        .unwrap();
    assert_eq!(limit_and_buyers(&mut con, "{q}:new"), (Some(i64::MAX), 0));
}

/// The longest deduction (13 option words: `ID`, `BUYER`, `HOLD`, `FENCE`, `EVENTS … MAXLEN ~
/// n`) is taken whole; the hold's expiry gives the buyer's allowance back.
#[test]
fn the_longest_deduction_and_an_expired_hold_give_the_allowance_back() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set_with("{h}", 10, &StockSetOptions::new().limit(2))
        .unwrap();
    let token = con
        .lock_acquire("{h}:lock", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let longest = DeductOptions::new()
        .id("o-1")
        .buyer("user 7")
        .hold(ms(MINUTES_10))
        .fence(token)
        .events(Events::to("{h}:orders").maxlen_approx(1_000));
    assert_eq!(
        redis::ToRedisArgs::to_redis_args(&longest).len(),
        fence_core::args::MAX_DEDUCT_WORDS
    );
    assert_eq!(
        con.stock_deduct("{h}", 2, &longest).unwrap(),
        Deduct::Remaining(8)
    );
    let detail = con.stock_request_detail("{h}", "o-1").unwrap().unwrap();
    assert_eq!(
        (detail.state, detail.quantity, detail.buyer.as_deref()),
        (EntryState::Held, 2, Some("user 7"))
    );
    assert!(detail.deadline.is_some());
    assert_eq!(
        redis::cmd("XLEN")
            .arg("{h}:orders")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(
        con.stock_info("{h}")
            .unwrap()
            .unwrap()
            .ledger
            .unwrap()
            .fence,
        token
    );
    assert_eq!(con.stock_buyer("{h}", "user 7").unwrap(), Some(2));

    // A short hold that expires: the buyer holds nothing once the server's clock passes it.
    con.stock_set_with("{h}", 10, &StockSetOptions::new().limit(1))
        .unwrap();
    let (placed, bounds) = {
        let before = server_ms(&mut con);
        let placed = con
            .stock_deduct("{h}", 1, &order("short", "u2").hold(ms(20)))
            .unwrap();
        (placed, before + 20..=server_ms(&mut con) + 20)
    };
    assert_eq!(placed, Deduct::Remaining(9));
    let deadline = *bounds.end();
    assert!(
        wait_until(EVENT_DEADLINE, || server_ms(&mut con) > deadline),
        "the server's clock did not pass {deadline}"
    );
    assert_eq!(con.stock_buyer("{h}", "u2").unwrap(), Some(0));
    assert_eq!(
        con.stock_deduct("{h}", 1, &order("again", "u2")).unwrap(),
        Deduct::Remaining(9)
    );
    assert_eq!(con.stock_buyer("{h}", "u2").unwrap(), Some(1));
}

#[test]
fn bad_limits_and_buyers_are_errors_that_change_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set_with("{x}", 5, &StockSetOptions::new().limit(1))
        .unwrap();
    let e = con
        .stock_set_with("{x}", 5, &StockSetOptions::new().limit(-1))
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con.stock_limit("{x}", -1).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    assert_eq!(limit_and_buyers(&mut con, "{x}"), (Some(1), 0));
    // BUYER without ID, an empty buyer id.
    for options in [
        DeductOptions::new().buyer("u1"),
        DeductOptions::new().id("o").buyer(""),
    ] {
        let e = con.stock_deduct("{x}", 1, &options).unwrap_err();
        assert_eq!(e.code(), Some(code::ERR), "{options:?}: {e}");
    }
    let e = con.stock_buyer("{x}", "").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    assert_eq!(con.stock_get("{x}").unwrap(), Some(5));
    assert_eq!(
        con.stock_request("{x}", "o").unwrap(),
        RequestState::Unknown
    );
    // Limits and buyers need the module type: a plain integer string is refused and left as
    // it is, a lock is another type.
    redis::cmd("SET")
        .arg("{x}:plain")
        .arg(5)
        .query::<()>(&mut con)
        .unwrap();
    let e = con.stock_limit("{x}:plain", 1).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con.stock_buyer("{x}:plain", "u1").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con
        .stock_deduct("{x}:plain", 1, &order("o", "u1"))
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    assert_eq!(
        redis::cmd("GET")
            .arg("{x}:plain")
            .query::<i64>(&mut con)
            .unwrap(),
        5
    );
    con.lock_acquire("{x}:lock", "w", ms(30_000)).unwrap();
    let e = con.stock_limit("{x}:lock", 1).unwrap_err();
    assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
    let e = con.stock_buyer("{x}:lock", "u1").unwrap_err();
    assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
}
