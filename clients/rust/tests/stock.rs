//! The stock methods of `FenceCommands` against a real server: typed deductions (including
//! `Stale`), the options builders, request states, `STOCK.INFO`, RESP2 and RESP3.

mod common;

use common::{ms, Server};
use fence_core::error::code;
use redis_fence_client::{
    AddOptions, Deduct, DeductOptions, Events, FenceCommands, RefundOptions, RequestState,
    StockInfo,
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
        RequestState::Held(3)
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
