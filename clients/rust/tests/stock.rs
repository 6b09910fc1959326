//! `Stock` against a real server: typed deductions (including `Stale`) and request states.

mod common;

use common::{ms, Server};
use fence_core::error::code;
use redis_fence_client::{Deduct, Lock, RequestState, Stock};

#[test]
fn set_add_get() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(Stock::get(&mut con, "sku:1").unwrap(), None);
    Stock::set(&mut con, "sku:1", 10).unwrap();
    assert_eq!(Stock::get(&mut con, "sku:1").unwrap(), Some(10));
    assert_eq!(Stock::add(&mut con, "sku:1", 5).unwrap(), 15);
    assert_eq!(Stock::add(&mut con, "sku:new", 3).unwrap(), 3);
    Stock::set(&mut con, "sku:1", 0).unwrap();
    assert_eq!(Stock::get(&mut con, "sku:1").unwrap(), Some(0));
    let e = Stock::set(&mut con, "sku:1", -1).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
}

#[test]
fn deduct_is_typed() {
    let server = Server::start();
    let mut con = server.conn();
    Stock::set(&mut con, "sku:2", 5).unwrap();
    assert_eq!(
        Stock::deduct(&mut con, "sku:2", 2, None, None).unwrap(),
        Deduct::Remaining(3)
    );
    assert_eq!(
        Stock::deduct(&mut con, "sku:2", 4, None, None).unwrap(),
        Deduct::SoldOut
    );
    assert_eq!(
        Stock::deduct(&mut con, "sku:missing", 1, None, None).unwrap(),
        Deduct::SoldOut
    );
    // Idempotent with an id: the retry deducts nothing and replies the current quantity.
    let first = Stock::deduct(&mut con, "sku:2", 1, Some("order-1"), None).unwrap();
    assert_eq!(first, Deduct::Remaining(2));
    assert_eq!(first.remaining(), Some(2));
    assert_eq!(
        Stock::deduct(&mut con, "sku:2", 1, Some("order-1"), None).unwrap(),
        Deduct::Remaining(2)
    );
    assert_eq!(Deduct::SoldOut.remaining(), None);
    assert_eq!(Stock::get(&mut con, "sku:2").unwrap(), Some(2));

    // Plain integer strings work without ID and FENCE.
    redis::cmd("SET")
        .arg("sku:plain")
        .arg(7)
        .query::<()>(&mut con)
        .unwrap();
    assert_eq!(
        Stock::deduct(&mut con, "sku:plain", 7, None, None).unwrap(),
        Deduct::Remaining(0)
    );
}

#[test]
fn a_stale_fence_is_typed_and_changes_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    let mut lock_con = server.conn();
    Stock::set(&mut con, "{sku:3}", 10).unwrap();

    let old = Lock::acquire(&mut lock_con, "{sku:3}:lock", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let t1 = old.token();
    assert_eq!(
        Stock::deduct(&mut con, "{sku:3}", 1, Some("a"), Some(t1)).unwrap(),
        Deduct::Remaining(9)
    );
    assert!(old.release().unwrap());

    let newer = Lock::acquire(&mut lock_con, "{sku:3}:lock", "w2", ms(30_000))
        .unwrap()
        .unwrap();
    let t2 = newer.token();
    assert!(t2 > t1);
    assert_eq!(
        Stock::deduct(&mut con, "{sku:3}", 1, Some("b"), Some(t2)).unwrap(),
        Deduct::Remaining(8)
    );
    // The old holder, paused while its lock changed hands, is refused.
    assert_eq!(
        Stock::deduct(&mut con, "{sku:3}", 1, Some("c"), Some(t1)).unwrap(),
        Deduct::Stale
    );
    assert_eq!(
        Stock::deduct(&mut con, "{sku:3}", 1, None, Some(t1)).unwrap(),
        Deduct::Stale
    );
    assert_eq!(Deduct::Stale.remaining(), None);
    assert_eq!(Stock::get(&mut con, "{sku:3}").unwrap(), Some(8));
    assert_eq!(
        Stock::request(&mut con, "{sku:3}", "c").unwrap(),
        RequestState::Unknown
    );
}

#[test]
fn other_error_replies_stay_errors() {
    let server = Server::start();
    let mut con = server.conn();
    Stock::set(&mut con, "sku:4", 10).unwrap();
    let e = Stock::deduct(&mut con, "sku:4", 0, None, None).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = Stock::deduct(&mut con, "sku:4", 1, Some(""), None).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    // A token a day ahead of the server's clock.
    let future = Lock::acquire(&mut con, "l", "w", ms(1_000))
        .unwrap()
        .unwrap()
        .token()
        + 2 * 86_400 * 1_000_000;
    let e = Stock::deduct(&mut con, "sku:4", 1, None, Some(future)).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    redis::cmd("SET")
        .arg("sku:plain")
        .arg(5)
        .query::<()>(&mut con)
        .unwrap();
    let e = Stock::deduct(&mut con, "sku:plain", 1, Some("id"), None).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    redis::cmd("LPUSH")
        .arg("list")
        .arg(1)
        .query::<()>(&mut con)
        .unwrap();
    let e = Stock::deduct(&mut con, "list", 1, None, None).unwrap_err();
    assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
    let e = Stock::request(&mut con, "sku:plain", "id").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    assert_eq!(Stock::get(&mut con, "sku:4").unwrap(), Some(10));
}

#[test]
fn request_states_follow_deduct_and_refund() {
    let server = Server::start();
    let mut con = server.conn();
    Stock::set(&mut con, "sku:5", 10).unwrap();
    assert_eq!(
        Stock::request(&mut con, "sku:5", "o1").unwrap(),
        RequestState::Unknown
    );
    assert_eq!(
        Stock::request(&mut con, "sku:none", "o1").unwrap(),
        RequestState::Unknown
    );
    assert_eq!(
        Stock::deduct(&mut con, "sku:5", 3, Some("o1"), None).unwrap(),
        Deduct::Remaining(7)
    );
    assert_eq!(
        Stock::request(&mut con, "sku:5", "o1").unwrap(),
        RequestState::Held(3)
    );
    // A request refused for lack of stock stays unknown (and may be retried).
    assert_eq!(
        Stock::deduct(&mut con, "sku:5", 100, Some("o2"), None).unwrap(),
        Deduct::SoldOut
    );
    assert_eq!(
        Stock::request(&mut con, "sku:5", "o2").unwrap(),
        RequestState::Unknown
    );

    assert_eq!(Stock::refund(&mut con, "sku:5", "o1").unwrap(), 3);
    assert_eq!(Stock::get(&mut con, "sku:5").unwrap(), Some(10));
    assert_eq!(
        Stock::request(&mut con, "sku:5", "o1").unwrap(),
        RequestState::Refunded
    );
    assert_eq!(
        Stock::refund(&mut con, "sku:5", "o1").unwrap(),
        0,
        "exactly once"
    );
    assert_eq!(Stock::refund(&mut con, "sku:5", "unknown").unwrap(), 0);
    // A late retry of the refunded order takes nothing.
    assert_eq!(
        Stock::deduct(&mut con, "sku:5", 3, Some("o1"), None).unwrap(),
        Deduct::Remaining(10)
    );
    assert_eq!(
        Stock::request(&mut con, "sku:5", "o1").unwrap(),
        RequestState::Refunded
    );
}
