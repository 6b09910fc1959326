//! The order consumer (the `consumer` example, built on `redis_fence_client::orders`)
//! end to end against a real server: buyers deduct (and place carts) with `EVENTS` while
//! consumers crash and restart; every order line (one per stock of an order: a cart has one per
//! item) is created exactly once, every rejected order is refunded exactly once, every line
//! cancelled by a refund (a whole cart's included) or an expired hold is cancelled in the book
//! exactly once, and the stock and the lines add up.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ms, wait_until, Server, EVENT_DEADLINE};
use redis::{Connection, Value};
use redis_fence_client::{
    Cart, CartOptions, Confirm, DeductOptions, EntryState, Events, FenceCommands, RefundOptions,
    RequestState,
};

// The example's application, compiled into this test as it is into the example.
#[path = "../examples/consumer/app.rs"]
#[allow(dead_code)]
mod app;

use app::{Config, Order, OrderBook, Status};

const SKU: &str = "{sku:42}";
const STREAM: &str = "{sku:42}:orders";
const GROUP: &str = "orders";
// The stocks carts are made of, in the stream's hash slot (as a cart on a cluster needs).
const PHONE: &str = "{sku:42}:phone";
const CASE: &str = "{sku:42}:case";
const CHARGER: &str = "{sku:42}:charger";

/// An order line's key: (stock key, request id).
type Line = (String, String);

fn line(sku: &str, id: &str) -> Line {
    (sku.to_string(), id.to_string())
}

/// A fresh directory for an order book, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "redis-fence-consumer-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A stream entry: id and fields.
type Entry = (String, Vec<(String, String)>);

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("utf-8"),
        Value::SimpleString(s) => s.clone(),
        other => panic!("expected a string, got {other:?}"),
    }
}

fn xrange(con: &mut Connection, stream: &str) -> Vec<Entry> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE");
    let Value::Array(items) = reply else {
        panic!("XRANGE replied {reply:?}");
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                panic!("entry {item:?}");
            };
            let Value::Array(flat) = &pair[1] else {
                panic!("entry {pair:?}");
            };
            let fields = flat.chunks(2).map(|c| (text(&c[0]), text(&c[1]))).collect();
            (text(&pair[0]), fields)
        })
        .collect()
}

fn field<'a>(entry: &'a Entry, name: &str) -> Option<&'a str> {
    entry
        .1
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_str())
}

/// `XPENDING stream group`'s count.
fn pending_count(con: &mut Connection) -> i64 {
    let reply: Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .query(con)
        .expect("XPENDING");
    match reply {
        Value::Array(items) => match items.first() {
            Some(Value::Int(n)) => *n,
            other => panic!("XPENDING replied {other:?}"),
        },
        other => panic!("XPENDING replied {other:?}"),
    }
}

/// Entry ids pending for one consumer.
fn pending_of(con: &mut Connection, consumer: &str) -> Vec<String> {
    let reply: Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg(consumer)
        .query(con)
        .expect("XPENDING extended");
    let Value::Array(items) = reply else {
        panic!("XPENDING replied {reply:?}");
    };
    items
        .iter()
        .map(|item| match item {
            Value::Array(parts) => text(&parts[0]),
            other => panic!("XPENDING item {other:?}"),
        })
        .collect()
}

fn config(consumer: &str, book: &Path) -> Config {
    let mut c = Config::new(STREAM, consumer, book);
    c.group = GROUP.to_string();
    c.reject_suffix = Some("7".to_string());
    c.refund_events = true;
    c.batch = 16;
    c.idle_exit = ms(300);
    c
}

/// Every line of the book with its statuses, in the order they were written.
fn lines_of(book: &Path) -> BTreeMap<Line, Vec<Status>> {
    let mut lines: BTreeMap<Line, Vec<Status>> = BTreeMap::new();
    for order in OrderBook::read(book).expect("read the order book") {
        lines
            .entry(order.line_key())
            .or_default()
            .push(order.status);
    }
    lines
}

/// What every test checks at the end: nothing pending; each deduction in the stream (each item
/// of a cart included) is in the book exactly once, keyed by its line (stock key and request
/// id), with its quantity; a single order rejected exactly when its id ends in 7, a cart's item
/// never; each rejected order refunded exactly once (the ledger says refunded, one `refund`
/// entry); each created line still deducted; for each stock, the initial stock is what is left
/// plus what the created lines hold. Returns (created, rejected) lines.
#[track_caller]
fn check_books(con: &mut Connection, book: &Path, initial: &[(&str, i64)]) -> (usize, usize) {
    assert_eq!(pending_count(con), 0, "entries left pending");
    let orders = OrderBook::read(book).expect("read the order book");
    let mut by_line: BTreeMap<Line, Order> = BTreeMap::new();
    for order in orders {
        if let Some(first) = by_line.insert(order.line_key(), order.clone()) {
            panic!(
                "line {:?} written twice: {first:?} and {order:?}",
                order.line_key()
            );
        }
    }
    let entries = xrange(con, STREAM);
    let line_of = |e: &Entry| line(field(e, "sku").unwrap(), field(e, "id").expect("an id"));
    let deducts: BTreeMap<Line, &Entry> = entries
        .iter()
        .filter(|e| field(e, "type") == Some("deduct"))
        .map(|e| (line_of(e), e))
        .collect();
    let mut refunds: BTreeMap<Line, usize> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| field(e, "type") == Some("refund"))
    {
        *refunds.entry(line_of(e)).or_default() += 1;
    }
    let keys: BTreeSet<&Line> = by_line.keys().collect();
    let events: BTreeSet<&Line> = deducts.keys().collect();
    assert_eq!(keys, events, "the book and the deduct events differ");
    let mut held: BTreeMap<&str, i64> = BTreeMap::new();
    let (mut created, mut rejected) = (0, 0);
    for (key @ (sku, id), order) in &by_line {
        let entry = deducts[key];
        assert_eq!(order.entry, entry.0, "{key:?}: entry id");
        let q: i64 = field(entry, "quantity").unwrap().parse().unwrap();
        assert_eq!(order.quantity, q, "{key:?}: quantity");
        let state = con.stock_request(sku, id).unwrap();
        let in_cart = field(entry, "cart").is_some();
        if id.ends_with('7') && !in_cart {
            rejected += 1;
            assert_eq!(order.status, Status::Rejected, "{key:?}");
            assert_eq!(state, RequestState::Refunded, "{key:?}");
            assert_eq!(refunds.get(key), Some(&1), "{key:?}: refund entries");
        } else {
            created += 1;
            assert_eq!(order.status, Status::Created, "{key:?}");
            assert_eq!(state, RequestState::Deducted(q), "{key:?}");
            assert_eq!(refunds.get(key), None, "{key:?} refunded");
            let Some(&(stock, _)) = initial.iter().find(|(k, _)| k == sku) else {
                panic!("{key:?}: a stock the test did not set");
            };
            *held.entry(stock).or_default() += q;
        }
    }
    for &(stock, start) in initial {
        let left = con.stock_get(stock).unwrap().unwrap();
        let held = held.get(stock).copied().unwrap_or(0);
        assert_eq!(
            left + held,
            start,
            "{stock}: stock {left} + created lines {held}"
        );
    }
    (created, rejected)
}

#[test]
fn every_order_is_created_once_across_crashes_and_restarts() {
    const INITIAL: i64 = 300;
    const BUYERS: usize = 6;
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set(SKU, INITIAL).unwrap();
    // Carts take one unit of SKU and one of CASE, which outlasts SKU.
    con.stock_set(CASE, INITIAL).unwrap();
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    // The lines acknowledged to buyers.
    let acknowledged: Mutex<Vec<Line>> = Mutex::new(Vec::new());

    thread::scope(|s| {
        let mut buyers = Vec::new();
        for b in 0..BUYERS {
            let mut con = server.conn();
            let acknowledged = &acknowledged;
            buyers.push(s.spawn(move || {
                for n in 0.. {
                    let id = format!("order-{b}-{n}");
                    let left: Option<i64> = redis::cmd("STOCK.DEDUCT")
                        .arg(SKU)
                        .arg(1 + n % 2)
                        .arg("ID")
                        .arg(&id)
                        .arg("EVENTS")
                        .arg(STREAM)
                        .query(&mut con)
                        .expect("STOCK.DEDUCT");
                    match left {
                        Some(_) => acknowledged.lock().unwrap().push(line(SKU, &id)),
                        None => return,
                    }
                    thread::sleep(ms(2));
                }
            }));
        }
        // A buyer of carts of two items (ids ending in 7 among them: the rejection rule
        // leaves carts alone), until SKU runs out.
        let mut cart_con = server.conn();
        let acknowledged = &acknowledged;
        buyers.push(s.spawn(move || {
            let place = CartOptions::new().events(Events::to(STREAM));
            for n in 0.. {
                let id = format!("cart-{n}");
                match cart_con
                    .stock_cart(&[(SKU, 1), (CASE, 1)], &id, &place)
                    .expect("STOCK.CART")
                {
                    Cart::Placed(_) => acknowledged
                        .lock()
                        .unwrap()
                        .extend([line(SKU, &id), line(CASE, &id)]),
                    Cart::Refused { .. } => return,
                }
                thread::sleep(ms(5));
            }
        }));

        // The crash points below need orders in the stream: 5 writes for c1, 3 more after
        // its restart, then 10 for c2. Waiting for them here, rather than letting c1 block on
        // an empty stream, means no idle timeout can end a run before its crash point, however
        // slowly the buyers get going; they keep buying while the consumers run.
        let mut c = server.conn();
        let mut xlen: i64 = 0;
        assert!(
            wait_until(EVENT_DEADLINE, || {
                xlen = redis::cmd("XLEN").arg(STREAM).query(&mut c).expect("XLEN");
                xlen >= 40
            }),
            "the buyers placed only {xlen} orders"
        );
        // c1 crashes right after writing its 5th order, before the XACK.
        let mut cfg = config("c1", &book);
        cfg.crash_after_writes = Some(5);
        let run = app::run(&mut c, &cfg).unwrap();
        let crashed = run.crashed_at.clone().expect("c1 did not crash");
        assert_eq!(run.created + run.rejected, 5, "{run:?}");
        assert!(
            pending_of(&mut c, "c1").contains(&crashed),
            "the crashed entry is not pending"
        );
        let written = OrderBook::read(&book).unwrap();
        assert!(
            written.iter().any(|o| o.entry == crashed),
            "the crashed order is not in the book"
        );
        println!("c1 crashed at {crashed}: {run:?}");

        // A crash in the middle of a write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&book).unwrap();
        f.write_all(b"{\"order\":\"torn-ord").unwrap();
        drop(f);

        // c1 again: the crashed order is acknowledged without a second line; crashes again.
        cfg.crash_after_writes = Some(3);
        let run = app::run(&mut c, &cfg).unwrap();
        assert!(run.duplicates >= 1, "{run:?}");
        let crashed = run.crashed_at.clone().expect("c1 did not crash again");
        println!("c1 crashed again at {crashed}: {run:?}");

        // c2 takes over what c1 left pending (c1 is "dead"), then stops after 10 orders.
        let mut cfg2 = config("c2", &book);
        cfg2.claim_idle = Some(Duration::ZERO);
        cfg2.max_orders = Some(10);
        let run = app::run(&mut c, &cfg2).unwrap();
        assert!(run.claimed >= 1 && run.duplicates >= 1, "{run:?}");
        assert!(pending_of(&mut c, "c1").is_empty());
        println!("c2 claimed: {run:?}");

        for b in buyers {
            b.join().unwrap();
        }
        // The rest: c1 comes back, then c2 sweeps up what it left pending.
        cfg.crash_after_writes = None;
        let run = app::run(&mut c, &cfg).unwrap();
        println!("c1 to the end: {run:?}");
        cfg2.max_orders = None;
        let run = app::run(&mut c, &cfg2).unwrap();
        println!("c2 to the end: {run:?}");
    });

    let text = fs::read_to_string(&book).unwrap();
    assert!(!text.contains("torn-ord"), "the torn line is still there");
    let (created, rejected) = check_books(&mut con, &book, &[(SKU, INITIAL), (CASE, INITIAL)]);
    let acknowledged = acknowledged.into_inner().unwrap();
    assert_eq!(created + rejected, acknowledged.len());
    let lines: BTreeSet<Line> = lines_of(&book).into_keys().collect();
    assert_eq!(lines, acknowledged.iter().cloned().collect::<BTreeSet<_>>());
    assert!(rejected >= 5, "only {rejected} rejected orders");
    let carts = acknowledged.iter().filter(|(sku, _)| sku == CASE).count();
    assert!(carts >= 1, "no cart was placed");
    println!(
        "{} lines ({carts} carts of 2): {created} created, {rejected} rejected and refunded, {} \
         left in stock",
        acknowledged.len(),
        con.stock_get(SKU).unwrap().unwrap()
    );
}

#[test]
fn entries_trimmed_while_pending_are_acknowledged() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set(SKU, 10).unwrap();
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    for i in 0..4 {
        let _: i64 = redis::cmd("STOCK.DEDUCT")
            .arg(SKU)
            .arg(1)
            .arg("ID")
            .arg(format!("o-{i}"))
            .arg("EVENTS")
            .arg(STREAM)
            .query(&mut con)
            .unwrap();
    }
    let mut cfg = config("c1", &book);
    cfg.batch = 4;
    cfg.crash_after_writes = Some(1);
    let run = app::run(&mut con, &cfg).unwrap();
    assert!(run.crashed_at.is_some());
    assert_eq!(pending_of(&mut con, "c1").len(), 4);
    // The stream is trimmed past every pending entry (a MAXLEN too small for the lag).
    let _: i64 = redis::cmd("XTRIM")
        .arg(STREAM)
        .arg("MAXLEN")
        .arg(0)
        .query(&mut con)
        .unwrap();
    cfg.crash_after_writes = None;
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!(run.lost, 4, "{run:?}");
    assert_eq!(pending_count(&mut con), 0);
    assert_eq!(OrderBook::read(&book).unwrap().len(), 1);
}

#[test]
fn deductions_without_an_id_are_created_once_by_entry() {
    let server = Server::start();
    let mut con = server.conn();
    let _: () = redis::cmd("SET").arg(SKU).arg(5).query(&mut con).unwrap();
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    for _ in 0..5 {
        let _: i64 = redis::cmd("STOCK.DEDUCT")
            .arg(SKU)
            .arg(1)
            .arg("EVENTS")
            .arg(STREAM)
            .query(&mut con)
            .unwrap();
    }
    let mut cfg = config("c1", &book);
    cfg.crash_after_writes = Some(2);
    assert!(app::run(&mut con, &cfg).unwrap().crashed_at.is_some());
    cfg.crash_after_writes = None;
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!((run.created, run.duplicates, run.other_events), (3, 1, 1));
    let orders = OrderBook::read(&book).unwrap();
    let keys: BTreeSet<String> = orders.iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys.len(), 5);
    assert!(keys.iter().all(|k| k.starts_with("entry:")));
    assert_eq!(pending_count(&mut con), 0);
}

/// The `consumer` example as a user runs it: `--demo` places orders, `--crash-after` makes the
/// process exit between writing an order and acknowledging it, and the next run finishes the
/// job without a second line for that order.
#[test]
fn the_example_recovers_after_its_process_exits_mid_order() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let example = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("examples").join("consumer"))
        .expect("target dir");
    assert!(
        example.is_file(),
        "{} not found: `cargo test -p redis-fence-client` builds the examples (a run limited \
         with --test does not: run `cargo build -p redis-fence-client --examples` first)",
        example.display()
    );
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set(SKU, 100).unwrap();
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    let run = |extra: &[&str]| {
        let out = Command::new(&example)
            .args([
                "--redis",
                &server.url(),
                "--stream",
                STREAM,
                "--group",
                GROUP,
            ])
            .args(["--consumer", "c1", "--orders", book.to_str().unwrap()])
            .args([
                "--reject-suffix",
                "7",
                "--refund-events",
                "--idle-ms",
                "300",
            ])
            .args(["--sku", SKU])
            .args(extra)
            .output()
            .expect("run the consumer example");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), format!("{stdout}{stderr}"))
    };
    let (code, out) = run(&["--demo", "30", "--crash-after", "12"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("placed 30 orders"), "{out}");
    assert_eq!(OrderBook::read(&book).unwrap().len(), 12, "{out}");
    assert!(pending_count(&mut con) >= 1);
    let (code, out) = run(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("already in the book 1"), "{out}");
    let (created, rejected) = check_books(&mut con, &book, &[(SKU, 100)]);
    // Ids demo-<pid>-0 … 29: 7, 17 and 27 are rejected.
    assert_eq!((created, rejected), (27, 3));
    let (code, out) = run(&["--bogus", "1"]);
    assert_eq!(code, Some(2), "{out}");
}

/// A rejected order hit by a crash after its refund and its line (before the XACK), and one
/// whose refund was made by a consumer that crashed before writing the line: each is refunded
/// once and written once.
#[test]
fn rejected_orders_are_refunded_once_across_crashes() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set(SKU, 20).unwrap();
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    for id in ["o-7", "o-8", "o-17", "o-9"] {
        let _: i64 = redis::cmd("STOCK.DEDUCT")
            .arg(SKU)
            .arg(2)
            .arg("ID")
            .arg(id)
            .arg("EVENTS")
            .arg(STREAM)
            .query(&mut con)
            .unwrap();
    }
    let mut cfg = config("c1", &book);
    cfg.crash_after_writes = Some(1);
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!((run.rejected, run.refunded_units), (1, 2), "{run:?}");
    assert!(run.crashed_at.is_some());
    // A consumer refunded o-17 and died before writing its line.
    let returned: i64 = redis::cmd("STOCK.REFUND")
        .arg(SKU)
        .arg("o-17")
        .arg("EVENTS")
        .arg(STREAM)
        .query(&mut con)
        .unwrap();
    assert_eq!(returned, 2);
    cfg.crash_after_writes = None;
    let run = app::run(&mut con, &cfg).unwrap();
    // o-7 already in the book; o-17 refunded again: 0 units; o-8 and o-9 created.
    assert_eq!(
        (
            run.duplicates,
            run.rejected,
            run.refunded_units,
            run.created
        ),
        (1, 1, 0, 2),
        "{run:?}"
    );
    let (created, rejected) = check_books(&mut con, &book, &[(SKU, 20)]);
    assert_eq!((created, rejected), (2, 2));
    assert_eq!(con.stock_get(SKU).unwrap(), Some(16));
}

/// Orders placed with a hold: one paid in time, one cancelled by the customer (a `refund`
/// entry), two left unpaid whose holds expire (`expire` entries, written by the module at the
/// deadline). The consumer crashes right after writing the first cancellation and before its
/// `XACK`; after the restart every order is in the book once, each cancelled order has
/// exactly one `cancelled` line, and the stock left plus the orders that stand is the initial
/// stock.
#[test]
fn a_held_order_that_expires_is_cancelled_in_the_book_exactly_once() {
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set(SKU, 10).unwrap();
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    let place = |con: &mut Connection, id: &str, quantity: i64, hold: Duration| {
        let options = DeductOptions::new()
            .id(id)
            .hold(hold)
            .events(Events::to(STREAM));
        con.stock_deduct(SKU, quantity, &options)
            .unwrap()
            .remaining()
            .expect("in stock")
    };
    let ten_minutes = Duration::from_secs(600);
    place(&mut con, "paid", 1, ten_minutes);
    place(&mut con, "unpaid-1", 2, ms(50));
    place(&mut con, "gave-up", 3, ten_minutes);
    place(&mut con, "unpaid-2", 1, ms(50));
    assert_eq!(con.stock_confirm(SKU, "paid").unwrap(), Confirm::Confirmed);
    let cancel = RefundOptions::new().events(Events::to(STREAM));
    assert_eq!(con.stock_refund(SKU, "gave-up", &cancel).unwrap(), 3);
    // The module's timer returns the unpaid holds and writes their expire entries.
    let expires = |con: &mut Connection| {
        xrange(con, STREAM)
            .iter()
            .filter(|e| field(e, "type") == Some("expire"))
            .count()
    };
    assert!(
        wait_until(EVENT_DEADLINE, || expires(&mut con) == 2),
        "{} expire entries after {EVENT_DEADLINE:?}",
        expires(&mut con)
    );
    assert_eq!(con.stock_get(SKU).unwrap(), Some(9));

    // Four deducts written, then the first cancellation: crash before its XACK.
    let mut cfg = config("c1", &book);
    cfg.crash_after_writes = Some(5);
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!((run.created, run.cancelled), (4, 1), "{run:?}");
    let crashed = run.crashed_at.clone().expect("c1 did not crash");
    assert!(pending_of(&mut con, "c1").contains(&crashed));
    // Restarted: the crashed cancellation is acknowledged without a second line.
    cfg.crash_after_writes = None;
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!(
        (run.created, run.cancelled, run.duplicates),
        (0, 2, 1),
        "{run:?}"
    );
    // A third run finds nothing to do.
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!(
        (run.created, run.cancelled, run.acked),
        (0, 0, 0),
        "{run:?}"
    );
    assert_eq!(pending_count(&mut con), 0);

    // The book: per order its lines in order; each cancellation once, from its own entry.
    let entries = xrange(&mut con, STREAM);
    let mut lines: BTreeMap<String, Vec<Status>> = BTreeMap::new();
    for order in OrderBook::read(&book).unwrap() {
        let entry = entries
            .iter()
            .find(|e| e.0 == order.entry)
            .expect("the line's stream entry");
        let kind = field(entry, "type").unwrap();
        match order.status {
            Status::Created => assert_eq!(kind, "deduct", "{order:?}"),
            Status::Cancelled => assert!(kind == "expire" || kind == "refund", "{order:?}"),
            Status::Rejected => panic!("nothing was rejected: {order:?}"),
        }
        assert_eq!(
            Some(order.quantity.to_string().as_str()),
            field(entry, "quantity")
        );
        lines.entry(order.key).or_default().push(order.status);
    }
    let created = vec![Status::Created];
    let cancelled = vec![Status::Created, Status::Cancelled];
    let expected: BTreeMap<String, Vec<Status>> = [
        ("gave-up", cancelled.clone()),
        ("paid", created),
        ("unpaid-1", cancelled.clone()),
        ("unpaid-2", cancelled),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(lines, expected);
    // The ledger agrees: each cancelled order holds nothing, the paid one its unit.
    for (id, state) in [
        ("paid", EntryState::Confirmed),
        ("gave-up", EntryState::Refunded),
        ("unpaid-1", EntryState::Expired),
        ("unpaid-2", EntryState::Expired),
    ] {
        let detail = con.stock_request_detail(SKU, id).unwrap().unwrap();
        assert_eq!(detail.state, state, "{id}");
    }
    assert_eq!(
        con.stock_request(SKU, "paid").unwrap(),
        RequestState::Deducted(1)
    );
    assert_eq!(con.stock_get(SKU).unwrap(), Some(10 - 1));
}

/// `STOCK.CART.REFUND numkeys key … id EVENTS STREAM`: cancels a cart, one `refund` entry per
/// item (with `cart` and `item`).
fn cart_refund_with_events(con: &mut Connection, keys: &[&str], id: &str) -> Vec<i64> {
    redis::cmd("STOCK.CART.REFUND")
        .arg(keys.len())
        .arg(keys)
        .arg(id)
        .arg("EVENTS")
        .arg(STREAM)
        .query(con)
        .expect("STOCK.CART.REFUND … EVENTS")
}

/// A three-item cart is three lines in the book (not one line and two duplicates: its items
/// share the request id), created once each across a crash in the middle of the cart and a
/// second consumer claiming the rest; a cart whose id ends in 7 is not rejected (the per-line
/// rule leaves carts whole), while a single order with such an id on one of the same stocks
/// is. Cancelled with `STOCK.CART.REFUND … EVENTS`, the cart's three lines are cancelled once
/// each, across a crash between the second cancellation and its `XACK`; a resent cart refund
/// adds nothing.
#[test]
fn a_cart_is_three_lines_created_and_cancelled_once_each_across_crashes() {
    let server = Server::start();
    let mut con = server.conn();
    for key in [PHONE, CASE, CHARGER] {
        con.stock_set(key, 10).unwrap();
    }
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    let items = [(PHONE, 1), (CASE, 2), (CHARGER, 1)];
    let keys = items.map(|(key, _)| key);
    let place = CartOptions::new().events(Events::to(STREAM));
    for id in ["cart-17", "cart-2"] {
        let placed = con.stock_cart(&items, id, &place).unwrap();
        assert!(matches!(placed, Cart::Placed(_)), "{id}: {placed:?}");
    }
    let single = DeductOptions::new()
        .id("single-7")
        .events(Events::to(STREAM));
    assert!(con
        .stock_deduct(PHONE, 1, &single)
        .unwrap()
        .remaining()
        .is_some());
    // Items share the request id; each entry names its stock, cart and item.
    let entries = xrange(&mut con, STREAM);
    let described: Vec<(&str, &str, Option<&str>, Option<&str>)> = entries
        .iter()
        .map(|e| {
            (
                field(e, "id").unwrap(),
                field(e, "sku").unwrap(),
                field(e, "cart"),
                field(e, "item"),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("cart-17", PHONE, Some("3"), Some("1")),
            ("cart-17", CASE, Some("3"), Some("2")),
            ("cart-17", CHARGER, Some("3"), Some("3")),
            ("cart-2", PHONE, Some("3"), Some("1")),
            ("cart-2", CASE, Some("3"), Some("2")),
            ("cart-2", CHARGER, Some("3"), Some("3")),
            ("single-7", PHONE, None, None),
        ]
    );

    // c1 crashes right after writing cart-17's second item, before its XACK.
    let mut cfg = config("c1", &book);
    cfg.crash_after_writes = Some(2);
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!((run.created, run.duplicates), (2, 0), "{run:?}");
    assert_eq!(run.crashed_at.as_deref(), Some(entries[1].0.as_str()));
    assert_eq!(pending_of(&mut con, "c1").len(), 6);
    // c2 takes over what c1 left: cart-17's second item is in the book already; its third
    // item and cart-2's three are created, single-7 rejected (its refund entry read after).
    let mut cfg2 = config("c2", &book);
    cfg2.claim_idle = Some(Duration::ZERO);
    let run = app::run(&mut con, &cfg2).unwrap();
    assert_eq!(
        (
            run.claimed,
            run.duplicates,
            run.created,
            run.rejected,
            run.refunded_units,
            run.other_events
        ),
        (6, 1, 4, 1, 1, 1),
        "{run:?}"
    );
    assert!(pending_of(&mut con, "c1").is_empty());
    let created = vec![Status::Created];
    let mut expected: BTreeMap<Line, Vec<Status>> = BTreeMap::new();
    for id in ["cart-17", "cart-2"] {
        for key in keys {
            expected.insert(line(key, id), created.clone());
        }
    }
    expected.insert(line(PHONE, "single-7"), vec![Status::Rejected]);
    assert_eq!(lines_of(&book), expected);
    let (created_lines, rejected) =
        check_books(&mut con, &book, &[(PHONE, 10), (CASE, 10), (CHARGER, 10)]);
    assert_eq!((created_lines, rejected), (6, 1));

    // The customer cancels cart-17: one refund entry per item.
    assert_eq!(
        cart_refund_with_events(&mut con, &keys, "cart-17"),
        [1, 2, 1]
    );
    // c1 is back: cancels the first two items and crashes before the second XACK.
    cfg.crash_after_writes = Some(2);
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!((run.cancelled, run.duplicates), (2, 0), "{run:?}");
    let crashed = run.crashed_at.clone().expect("c1 did not crash");
    assert!(pending_of(&mut con, "c1").contains(&crashed));
    // The client resends the cancellation (a lost reply): nothing returned, no entries.
    assert_eq!(
        cart_refund_with_events(&mut con, &keys, "cart-17"),
        [0, 0, 0]
    );
    // Restarted: the crashed cancellation is acknowledged without a second record.
    cfg.crash_after_writes = None;
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!(
        (run.created, run.cancelled, run.duplicates, run.acked),
        (0, 1, 1, 2),
        "{run:?}"
    );
    // A third run finds nothing to do.
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!(
        (run.created, run.cancelled, run.acked),
        (0, 0, 0),
        "{run:?}"
    );
    assert_eq!(pending_count(&mut con), 0);

    let cancelled = vec![Status::Created, Status::Cancelled];
    for key in keys {
        expected.insert(line(key, "cart-17"), cancelled.clone());
    }
    assert_eq!(lines_of(&book), expected);
    // Each cancellation came from its item's own refund entry.
    let entries = xrange(&mut con, STREAM);
    for order in OrderBook::read(&book).unwrap() {
        if order.status != Status::Cancelled {
            continue;
        }
        let entry = entries
            .iter()
            .find(|e| e.0 == order.entry)
            .expect("the record's stream entry");
        let item = keys.iter().position(|k| *k == order.sku).unwrap() + 1;
        assert_eq!(
            (
                field(entry, "type"),
                field(entry, "sku"),
                field(entry, "id"),
                field(entry, "cart"),
                field(entry, "item")
            ),
            (
                Some("refund"),
                Some(order.sku.as_str()),
                Some("cart-17"),
                Some("3"),
                Some(item.to_string().as_str())
            ),
            "{order:?}"
        );
        assert_eq!(order.quantity, items[item - 1].1, "{order:?}");
    }
    // The ledgers agree: cart-17 holds nothing, cart-2 its units; the stocks add up.
    for (key, quantity) in items {
        assert_eq!(
            con.stock_request(key, "cart-17").unwrap(),
            RequestState::Refunded
        );
        assert_eq!(
            con.stock_request(key, "cart-2").unwrap(),
            RequestState::Deducted(quantity)
        );
        assert_eq!(con.stock_get(key).unwrap(), Some(10 - quantity), "{key}");
    }
}

/// A cart placed with a hold and left unpaid expires stock by stock (`expire` entries with the
/// stock and the request id, no `cart` or `item`): each of its lines is cancelled once, across
/// a crash between the first cancellation and its `XACK`. One item of another cart refunded
/// alone (`STOCK.REFUND … EVENTS`, a plain `refund` entry) cancels that line only.
#[test]
fn a_cart_left_unpaid_is_cancelled_line_by_line_exactly_once() {
    let server = Server::start();
    let mut con = server.conn();
    for key in [PHONE, CASE, CHARGER] {
        con.stock_set(key, 10).unwrap();
    }
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    let unpaid = [(PHONE, 1), (CASE, 2), (CHARGER, 3)];
    let hold = |ttl: Duration| CartOptions::new().hold(ttl).events(Events::to(STREAM));
    let placed = con.stock_cart(&unpaid, "unpaid", &hold(ms(50))).unwrap();
    assert!(matches!(placed, Cart::Placed(_)), "{placed:?}");
    let kept = [(PHONE, 1), (CASE, 1)];
    let placed = con
        .stock_cart(&kept, "kept", &hold(Duration::from_secs(600)))
        .unwrap();
    assert!(matches!(placed, Cart::Placed(_)), "{placed:?}");
    let cancel = RefundOptions::new().events(Events::to(STREAM));
    assert_eq!(con.stock_refund(CASE, "kept", &cancel).unwrap(), 1);
    // The module's timer returns the unpaid holds, one expire entry per stock.
    let expires = |con: &mut Connection| {
        xrange(con, STREAM)
            .into_iter()
            .filter(|e| field(e, "type") == Some("expire"))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(EVENT_DEADLINE, || expires(&mut con).len() == 3),
        "{} expire entries after {EVENT_DEADLINE:?}",
        expires(&mut con).len()
    );
    for e in expires(&mut con) {
        assert_eq!(field(&e, "id"), Some("unpaid"), "{e:?}");
        assert_eq!(
            (field(&e, "cart"), field(&e, "item")),
            (None, None),
            "{e:?}"
        );
    }

    // Five deducts written, then the first cancellation: crash before its XACK.
    let mut cfg = config("c1", &book);
    cfg.crash_after_writes = Some(6);
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!((run.created, run.cancelled), (5, 1), "{run:?}");
    let crashed = run.crashed_at.clone().expect("c1 did not crash");
    assert!(pending_of(&mut con, "c1").contains(&crashed));
    cfg.crash_after_writes = None;
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!(
        (run.created, run.cancelled, run.duplicates),
        (0, 3, 1),
        "{run:?}"
    );
    let run = app::run(&mut con, &cfg).unwrap();
    assert_eq!((run.cancelled, run.acked), (0, 0), "{run:?}");
    assert_eq!(pending_count(&mut con), 0);

    let created = vec![Status::Created];
    let cancelled = vec![Status::Created, Status::Cancelled];
    let mut expected: BTreeMap<Line, Vec<Status>> = unpaid
        .iter()
        .map(|(key, _)| (line(key, "unpaid"), cancelled.clone()))
        .collect();
    expected.insert(line(PHONE, "kept"), created);
    expected.insert(line(CASE, "kept"), cancelled);
    assert_eq!(lines_of(&book), expected);
    // Each cancellation from its own line's entry: an expire for "unpaid", the refund for
    // "kept".
    let entries = xrange(&mut con, STREAM);
    for order in OrderBook::read(&book).unwrap() {
        let entry = entries
            .iter()
            .find(|e| e.0 == order.entry)
            .expect("the record's stream entry");
        let kind = match (order.status, order.key.as_str()) {
            (Status::Created, _) => "deduct",
            (Status::Cancelled, "unpaid") => "expire",
            (Status::Cancelled, _) => "refund",
            (Status::Rejected, _) => panic!("nothing was rejected: {order:?}"),
        };
        assert_eq!(field(entry, "type"), Some(kind), "{order:?}");
        assert_eq!(field(entry, "sku"), Some(order.sku.as_str()), "{order:?}");
        assert_eq!(field(entry, "id"), Some(order.key.as_str()), "{order:?}");
        assert_eq!(
            field(entry, "quantity"),
            Some(order.quantity.to_string().as_str())
        );
    }
    for (key, _) in unpaid {
        let detail = con.stock_request_detail(key, "unpaid").unwrap().unwrap();
        assert_eq!(detail.state, EntryState::Expired, "{key}");
    }
    assert_eq!(con.stock_get(PHONE).unwrap(), Some(9));
    assert_eq!(con.stock_get(CASE).unwrap(), Some(10));
    assert_eq!(con.stock_get(CHARGER).unwrap(), Some(10));
}
