//! Carts through `FenceCommands` against a real server: `stock_cart` (`Cart::Placed`, a replay,
//! every `Cart::Refused` code with its item and exact key, nothing changed in any stock),
//! `stock_cart_confirm` (`Confirm`, `EXPIRED` and `REFUNDED` typed), `stock_cart_refund`, a
//! request id only some stocks know (`PartialCart`), the events of a cart, and the errors that
//! stay errors; RESP2 and RESP3.
//!
//! A hold's expiry is waited for as the server's clock passing its deadline, with a deadline
//! only a failure exhausts, never by sleeping for the hold's length.

mod common;

use std::collections::HashMap;

use common::{ms, wait_until, Server, EVENT_DEADLINE};
use fence_core::error::code;
use redis_fence_client::orders::OrderStream;
use redis_fence_client::{
    Cart, CartOptions, CartRefusal, Confirm, EntryState, Events, FenceCommands, LedgerInfo,
    PartialCart, RefundOptions, RequestState, StockSetOptions,
};

/// Every key's `STOCK.INFO` ledger and available quantity: what must not change when a cart
/// is refused.
fn snapshot(con: &mut redis::Connection, keys: &[&str]) -> Vec<Option<(i64, Option<LedgerInfo>)>> {
    keys.iter()
        .map(|k| {
            con.stock_info(k)
                .unwrap()
                .map(|info| (info.available, info.ledger))
        })
        .collect()
}

/// A stream's entries, each as its fields by name (nothing when the stream does not exist).
fn entries(con: &mut redis::Connection, stream: &str) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value(v.clone()).unwrap()))
                .collect()
        })
        .collect()
}

/// The server's clock, Unix milliseconds (`TIME`).
fn server_ms(con: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).expect("TIME");
    secs * 1000 + micros / 1000
}

/// A cart's items, `(key, quantity)`.
type Items<'a> = Vec<(&'a str, i64)>;

const PHONE: &str = "{sale}:phone";
const CASE: &str = "{sale}:a case";
const CHARGER: &str = "{sale}:charger";
const KEYS: [&str; 3] = [PHONE, CASE, CHARGER];
const ORDERS: &str = "{sale}:orders";
const MINUTES_15: u64 = 900_000;

fn stock_up(con: &mut redis::Connection) {
    con.stock_set(PHONE, 100).unwrap();
    con.stock_set(CASE, 500).unwrap();
    con.stock_set(CHARGER, 1).unwrap();
}

/// The README's walk-through: refused whole, placed, replayed, paid; then a second cart
/// cancelled. On RESP2 and RESP3.
#[test]
fn a_cart_is_placed_whole_replayed_paid_and_cancelled() {
    let server = Server::start();
    for resp3 in [false, true] {
        let mut con = if resp3 {
            server.conn_resp3()
        } else {
            server.conn()
        };
        redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap();
        stock_up(&mut con);
        let place = CartOptions::new()
            .buyer("user 7")
            .hold(ms(MINUTES_15))
            .events(Events::to(ORDERS));

        // The charger is short: nothing is taken from any stock, nothing goes to the stream.
        let before = snapshot(&mut con, &KEYS);
        let short = [(PHONE, 1), (CASE, 1), (CHARGER, 2)];
        assert_eq!(
            con.stock_cart(&short, "order-77", &place).unwrap(),
            Cart::Refused {
                code: CartRefusal::SoldOut,
                index: 3,
                key: CHARGER.into()
            },
            "resp3 {resp3}"
        );
        assert_eq!(snapshot(&mut con, &KEYS), before);
        assert!(entries(&mut con, ORDERS).is_empty());
        for key in KEYS {
            assert_eq!(
                con.stock_request(key, "order-77").unwrap(),
                RequestState::Unknown
            );
        }

        // Placed: what remains in each stock, in the order given; the id is not spent by the
        // refusal.
        let items = [(PHONE, 1), (CASE, 1), (CHARGER, 1)];
        let placed = con.stock_cart(&items, "order-77", &place).unwrap();
        assert_eq!(placed, Cart::Placed(vec![99, 499, 0]));
        assert_eq!(placed.remaining(), Some(&[99, 499, 0][..]));
        assert!(placed.is_placed());
        // A resend is a replay: the same reply, nothing deducted twice, no new events.
        let events = entries(&mut con, ORDERS);
        assert_eq!(con.stock_cart(&items, "order-77", &place).unwrap(), placed);
        assert_eq!(entries(&mut con, ORDERS), events);
        assert_eq!(con.stock_get(PHONE).unwrap(), Some(99));

        // Each stock's ledger has an ordinary held entry for the buyer, one deadline for all.
        let mut deadlines = Vec::new();
        for key in KEYS {
            let d = con.stock_request_detail(key, "order-77").unwrap().unwrap();
            assert_eq!(
                (d.state, d.quantity, d.buyer.as_deref()),
                (EntryState::Held, 1, Some("user 7")),
                "{key}"
            );
            deadlines.push(d.deadline.unwrap());
            assert_eq!(con.stock_buyer(key, "user 7").unwrap(), Some(1));
        }
        assert!(deadlines.windows(2).all(|w| w[0] == w[1]), "{deadlines:?}");

        // One deduct entry per item, in order, with `cart` and `item`, and a soldout entry for
        // the charger the cart emptied.
        let deducts: Vec<_> = events.iter().filter(|e| e["type"] == "deduct").collect();
        assert_eq!(deducts.len(), 3, "{events:?}");
        for (i, (e, (key, left))) in deducts
            .iter()
            .zip(KEYS.iter().zip([99, 499, 0]))
            .enumerate()
        {
            assert_eq!(e["sku"], *key);
            assert_eq!(e["quantity"], "1");
            assert_eq!(e["remaining"], left.to_string());
            assert_eq!(e["id"], "order-77");
            assert_eq!(e["buyer"], "user 7");
            assert_eq!(e["cart"], "3");
            assert_eq!(e["item"], (i + 1).to_string());
        }
        let soldout: Vec<_> = events.iter().filter(|e| e["type"] == "soldout").collect();
        assert_eq!(soldout.len(), 1, "{events:?}");
        assert_eq!(soldout[0]["sku"], CHARGER);
        // `orders::OrderEvent` reads each item's `cart` and `item`.
        let stream = OrderStream::new(ORDERS, "book", "c1");
        stream.create_group(&mut con).unwrap();
        let read: Vec<_> = stream
            .read_new(&mut con, None)
            .unwrap()
            .into_iter()
            .filter_map(|d| d.event)
            .filter(|e| e.kind == "deduct")
            .map(|e| (e.sku, e.request_id, e.cart, e.item))
            .collect();
        assert_eq!(
            read,
            KEYS.iter()
                .zip(1..)
                .map(|(k, i)| (
                    k.to_string(),
                    Some("order-77".to_string()),
                    Some(3),
                    Some(i)
                ))
                .collect::<Vec<_>>()
        );

        // Paid: every item confirmed at once; a resend says the same.
        assert_eq!(
            con.stock_cart_confirm(&KEYS, "order-77").unwrap(),
            Confirm::Confirmed
        );
        assert_eq!(
            con.stock_cart_confirm(&KEYS, "order-77").unwrap(),
            Confirm::Confirmed
        );
        for key in KEYS {
            let d = con.stock_request_detail(key, "order-77").unwrap().unwrap();
            assert_eq!(
                (d.state, d.deadline),
                (EntryState::Confirmed, None),
                "{key}"
            );
        }
        // Cancelled after payment: every item back at once, exactly once.
        assert_eq!(
            con.stock_cart_refund(&KEYS, "order-77").unwrap(),
            vec![1, 1, 1]
        );
        assert_eq!(
            con.stock_cart_refund(&KEYS, "order-77").unwrap(),
            vec![0, 0, 0]
        );
        assert_eq!(snapshot(&mut con, &KEYS)[2].as_ref().unwrap().0, 1);
        for key in KEYS {
            assert_eq!(con.stock_buyer(key, "user 7").unwrap(), Some(0));
        }
        // A confirmation after the refund is told so, typed.
        assert_eq!(
            con.stock_cart_confirm(&KEYS, "order-77").unwrap(),
            Confirm::Refunded
        );
        // An id no stock knows: zeros, Unknown; keys that do not exist likewise.
        assert_eq!(
            con.stock_cart_refund(&KEYS, "no-such-order").unwrap(),
            vec![0, 0, 0]
        );
        assert_eq!(
            con.stock_cart_confirm(&KEYS, "no-such-order").unwrap(),
            Confirm::Unknown
        );
        assert_eq!(
            con.stock_cart_refund(&["{sale}:nothing", "{sale}:none"], "order-77")
                .unwrap(),
            vec![0, 0]
        );
        assert_eq!(
            con.stock_cart_confirm(&["{sale}:nothing"], "order-77")
                .unwrap(),
            Confirm::Unknown
        );

        // A cart without options deducts for good; the plain `query::<Cart>` reads it too.
        let direct: Cart = redis::cmd("STOCK.CART")
            .arg(2)
            .arg(PHONE)
            .arg(2)
            .arg(CASE)
            .arg(3)
            .arg("ID")
            .arg("order-78")
            .query(&mut con)
            .unwrap();
        assert_eq!(direct, Cart::Placed(vec![98, 497]));
        assert_eq!(
            con.stock_cart(&[(PHONE, 2), (CASE, 3)], "order-78", &CartOptions::new())
                .unwrap(),
            Cart::Placed(vec![98, 497])
        );
        assert_eq!(
            con.stock_request_detail(PHONE, "order-78")
                .unwrap()
                .map(|d| d.state),
            Some(EntryState::Deducted)
        );
        // One item refunded alone, as any order.
        assert_eq!(
            con.stock_refund(CASE, "order-78", &RefundOptions::new())
                .unwrap(),
            3
        );
        assert_eq!(
            con.stock_cart_refund(&[PHONE, CASE], "order-78").unwrap(),
            vec![2, 0]
        );
    }
}

/// Every refusal is typed with its item and its key exactly as given, and leaves every stock
/// (and the events stream) as it was. On RESP2 and RESP3.
#[test]
fn every_refusal_is_typed_and_changes_no_stock() {
    let server = Server::start();
    let mut con = server.conn();
    let mut resp3 = server.conn_resp3();
    let spaced = "{r}:a key with spaces";
    let quoted = "{r}:O'Brien's \u{e9}";
    let keys = ["{r}:a", spaced, quoted, "{r}:limited"];
    con.stock_set("{r}:a", 10).unwrap();
    con.stock_set(spaced, 10).unwrap();
    con.stock_set(quoted, 10).unwrap();
    con.stock_set_with("{r}:limited", 10, &StockSetOptions::new().limit(1))
        .unwrap();
    let token = con
        .lock_acquire("{r}:lock", "w1", ms(60_000))
        .unwrap()
        .unwrap();
    // A cart fenced by `token` raises every stock's highest token to it.
    let first = con
        .stock_cart(
            &[("{r}:a", 1), (spaced, 1), (quoted, 1), ("{r}:limited", 1)],
            "first",
            &CartOptions::new().buyer("u1").fence(token),
        )
        .unwrap();
    assert_eq!(first, Cart::Placed(vec![9, 9, 9, 9]));
    for key in keys {
        assert_eq!(
            con.stock_info(key).unwrap().unwrap().ledger.unwrap().fence,
            token,
            "{key}"
        );
    }
    let stale = token - 1;
    let stream = "{r}:orders";
    let before = snapshot(&mut con, &keys);
    let refusals: Vec<(Items, CartOptions, CartRefusal, usize, &str)> = vec![
        (
            vec![("{r}:a", 1), ("{r}:missing", 1)],
            CartOptions::new(),
            CartRefusal::NoKey,
            2,
            "{r}:missing",
        ),
        (
            vec![(spaced, 1), ("{r}:a", 1)],
            CartOptions::new().fence(stale),
            CartRefusal::Stale,
            1,
            spaced,
        ),
        (
            vec![("{r}:a", 1), ("{r}:limited", 1)],
            CartOptions::new().buyer("u1"),
            CartRefusal::Limit,
            2,
            "{r}:limited",
        ),
        (
            vec![("{r}:a", 1), (spaced, 1), (quoted, 10)],
            CartOptions::new().buyer("u2"),
            CartRefusal::SoldOut,
            3,
            quoted,
        ),
    ];
    for c in [&mut con, &mut resp3] {
        for (i, (items, options, refusal, index, key)) in refusals.iter().enumerate() {
            let options = options.clone().events(Events::to(stream));
            let reply = c.stock_cart(items, &format!("o-{i}"), &options).unwrap();
            assert_eq!(
                reply,
                Cart::Refused {
                    code: *refusal,
                    index: *index,
                    key: key.to_string()
                }
            );
            assert_eq!(reply.remaining(), None);
        }
    }
    // Read on its own, the key is the module's printable form (spaces kept, `'` and non-ASCII
    // escaped).
    let direct = redis::cmd("STOCK.CART")
        .arg(1)
        .arg(quoted)
        .arg(100)
        .arg("ID")
        .arg("o-x")
        .query::<Cart>(&mut con)
        .unwrap_err();
    assert_eq!(direct.code(), Some(code::SOLDOUT), "{direct}");
    let mut cmd = redis::cmd("STOCK.CART");
    cmd.arg(1).arg(quoted).arg(100).arg("ID").arg("o-x");
    let raw = redis::ConnectionLike::req_command(&mut con, &cmd).unwrap();
    assert_eq!(
        redis::from_redis_value::<Cart>(raw).unwrap(),
        Cart::Refused {
            code: CartRefusal::SoldOut,
            index: 1,
            key: "{r}:O\\x27Brien\\x27s \\xc3\\xa9".into()
        }
    );
    // LEDGERFULL: the ledger of the second item holds the most ids allowed.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("fence.max-ledger-entries")
        .arg(1)
        .query::<()>(&mut con)
        .unwrap();
    con.stock_set("{r}:b", 10).unwrap(); // a new sale: an empty ledger
    assert_eq!(
        con.stock_cart(&[("{r}:b", 1), (spaced, 1)], "o-9", &CartOptions::new())
            .unwrap(),
        Cart::Refused {
            code: CartRefusal::LedgerFull,
            index: 2,
            key: spaced.into()
        }
    );
    assert_eq!(con.stock_get("{r}:b").unwrap(), Some(10));
    assert_eq!(
        con.stock_request("{r}:b", "o-9").unwrap(),
        RequestState::Unknown
    );
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("fence.max-ledger-entries")
        .arg(1_000_000)
        .query::<()>(&mut con)
        .unwrap();
    // Nothing changed anywhere: the stocks, their ledgers, the stream.
    assert_eq!(snapshot(&mut con, &keys), before);
    assert!(entries(&mut con, stream).is_empty());
    for key in keys {
        for i in 0..refusals.len() {
            assert_eq!(
                con.stock_request(key, &format!("o-{i}")).unwrap(),
                RequestState::Unknown,
                "{key}"
            );
        }
    }
    // The refused ids are not spent: the sold-out cart goes through once there is stock.
    con.stock_add(quoted, 10, &Default::default()).unwrap();
    assert_eq!(
        con.stock_cart(
            &[("{r}:a", 1), (spaced, 1), (quoted, 10)],
            "o-3",
            &CartOptions::new().buyer("u2")
        )
        .unwrap(),
        Cart::Placed(vec![8, 8, 9])
    );
}

/// A hold whose deadline passed, and an item refunded alone, make the cart's confirmation
/// `Expired` / `Refunded`, typed, with no item confirmed.
#[test]
fn a_late_or_broken_cart_is_not_confirmed() {
    let server = Server::start();
    let mut con = server.conn();
    let mut resp3 = server.conn_resp3();
    stock_up(&mut con);
    let items = [(PHONE, 1), (CASE, 2)];
    let keys = [PHONE, CASE];
    // One item refunded alone: the cart cannot be confirmed, and nothing is.
    assert!(con
        .stock_cart(&items, "broken", &CartOptions::new().hold(ms(MINUTES_15)))
        .unwrap()
        .is_placed());
    assert_eq!(
        con.stock_refund(CASE, "broken", &RefundOptions::new())
            .unwrap(),
        2
    );
    for c in [&mut con, &mut resp3] {
        assert_eq!(
            c.stock_cart_confirm(&keys, "broken").unwrap(),
            Confirm::Refunded
        );
    }
    assert_eq!(
        con.stock_request_detail(PHONE, "broken")
            .unwrap()
            .map(|d| d.state),
        Some(EntryState::Held)
    );
    // The holds' one deadline passes: the confirmation is `Expired` with that deadline, which
    // lies between the server's clock before and after the call, plus the hold (read this
    // way, not from DETAIL, which shows no deadline once it has passed).
    let before = server_ms(&mut con);
    let placed = con
        .stock_cart(&items, "late", &CartOptions::new().hold_ms(1))
        .unwrap();
    let bounds = before + 1..=server_ms(&mut con) + 1;
    assert_eq!(placed, Cart::Placed(vec![98, 498]));
    assert!(
        wait_until(EVENT_DEADLINE, || server_ms(&mut con) > *bounds.end()),
        "the server's clock never passed {bounds:?}"
    );
    for c in [&mut con, &mut resp3] {
        match c.stock_cart_confirm(&keys, "late").unwrap() {
            Confirm::Expired { at: Some(at) } => assert!(bounds.contains(&at), "{at} {bounds:?}"),
            other => panic!("{other:?}"),
        }
    }
    for key in keys {
        assert_eq!(
            con.stock_request_detail(key, "late")
                .unwrap()
                .map(|d| d.state),
            Some(EntryState::Expired),
            "{key}"
        );
    }
    // The units came back; a refund returns nothing more.
    assert_eq!(con.stock_cart_refund(&keys, "late").unwrap(), vec![0, 0]);
    assert_eq!(con.stock_get(PHONE).unwrap(), Some(99));
}

/// A request id only some of the cart's stocks know: an error that changes nothing, read by
/// `PartialCart`, from each cart command.
#[test]
fn an_id_some_stocks_only_know_is_a_partial_cart() {
    let server = Server::start();
    let mut con = server.conn();
    stock_up(&mut con);
    let items = [(PHONE, 1), (CASE, 1)];
    assert!(con
        .stock_cart(&items, "o-1", &CartOptions::new().hold(ms(MINUTES_15)))
        .unwrap()
        .is_placed());
    let before = snapshot(&mut con, &KEYS);
    // Resent with a third item: the charger's ledger does not know the id.
    let e = con
        .stock_cart(
            &[(PHONE, 1), (CASE, 1), (CHARGER, 1)],
            "o-1",
            &CartOptions::new(),
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    assert_eq!(
        PartialCart::from_error(&e).map(|p| (p.index, p.key)),
        Some((1, PHONE.to_string())),
        "{e}"
    );
    // Refund and confirm of a cart naming a stock that never saw it.
    let e = con.stock_cart_refund(&[CHARGER, CASE], "o-1").unwrap_err();
    assert_eq!(
        PartialCart::from_error(&e).map(|p| (p.index, p.key)),
        Some((2, CASE.to_string())),
        "{e}"
    );
    let e = con
        .stock_cart_confirm(&[CHARGER, PHONE, CASE], "o-1")
        .unwrap_err();
    assert_eq!(PartialCart::from_error(&e).map(|p| p.index), Some(2), "{e}");
    assert_eq!(snapshot(&mut con, &KEYS), before);
    assert_eq!(
        con.stock_request_detail(PHONE, "o-1")
            .unwrap()
            .map(|d| d.state),
        Some(EntryState::Held)
    );
    // Other errors are not partial carts.
    let e = con.stock_cart_refund(&[], "o-1").unwrap_err();
    assert_eq!(PartialCart::from_error(&e), None, "{e}");
}

/// What stays an error: bad arguments, a repeated key, a key of another type, a plain integer
/// string, no buyer on a stock with a limit. Nothing changes.
#[test]
fn bad_carts_are_errors_that_change_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    stock_up(&mut con);
    con.stock_set_with("{sale}:limited", 5, &StockSetOptions::new().limit(1))
        .unwrap();
    redis::cmd("SET")
        .arg("{sale}:plain")
        .arg(5)
        .query::<()>(&mut con)
        .unwrap();
    con.lock_acquire("{sale}:lock", "w", ms(60_000)).unwrap();
    let before = snapshot(&mut con, &KEYS);
    let none = CartOptions::new();
    let cases: Vec<(Items, &str, CartOptions, &str)> = vec![
        (vec![], "o", none.clone(), code::ERR), // numkeys 0
        (vec![(PHONE, 1), (PHONE, 1)], "o", none.clone(), code::ERR), // a key twice
        (vec![(PHONE, 0)], "o", none.clone(), code::ERR), // a bad quantity
        (vec![(PHONE, 1)], "", none.clone(), code::ERR), // an empty id
        (
            vec![(PHONE, 1)],
            "o",
            CartOptions::new().hold_ms(0),
            code::ERR,
        ),
        (
            vec![(PHONE, 1)],
            "o",
            CartOptions::new().buyer(""),
            code::ERR,
        ),
        (
            vec![(PHONE, 1)],
            "o",
            CartOptions::new().fence(0),
            code::ERR,
        ),
        (
            vec![(PHONE, 1), ("{sale}:lock", 1)],
            "o",
            none.clone(),
            code::WRONGTYPE,
        ),
        (
            vec![(PHONE, 1), ("{sale}:plain", 1)],
            "o",
            none.clone(),
            code::ERR,
        ),
        (
            vec![(PHONE, 1), ("{sale}:limited", 1)],
            "o",
            none.clone(),
            code::ERR,
        ),
    ];
    for (items, id, options, expected) in cases {
        let e = con.stock_cart(&items, id, &options).unwrap_err();
        assert_eq!(
            e.code(),
            Some(expected),
            "{items:?} {id:?} {options:?}: {e}"
        );
        assert_eq!(PartialCart::from_error(&e), None, "{e}");
    }
    let too_many: Vec<String> = (0..257).map(|i| format!("{{sale}}:k{i}")).collect();
    let items: Vec<(&str, i64)> = too_many.iter().map(|k| (k.as_str(), 1)).collect();
    let e = con.stock_cart(&items, "o", &none).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con.stock_cart_refund(&[PHONE, PHONE], "o").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con.stock_cart_confirm(&[PHONE], "").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = con
        .stock_cart_confirm(&[PHONE, "{sale}:lock"], "o")
        .unwrap_err();
    assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
    let e = con.stock_cart_refund(&["{sale}:plain"], "o").unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    assert_eq!(snapshot(&mut con, &KEYS), before);
    assert_eq!(
        redis::cmd("GET")
            .arg("{sale}:plain")
            .query::<i64>(&mut con)
            .unwrap(),
        5
    );
    // 256 items is the most, and fine.
    for k in &too_many[..256] {
        con.stock_set(k, 1).unwrap();
    }
    let cart = con.stock_cart(&items[..256], "big", &none).unwrap();
    assert_eq!(cart, Cart::Placed(vec![0; 256]));
}
