//! The order consumer (the `consumer` example, built on `redis_fence_client::orders`)
//! end to end against a real server: buyers deduct with `EVENTS` while consumers crash and
//! restart; every order is created exactly once, every rejected order is refunded exactly
//! once, every order cancelled by a refund or an expired hold is cancelled in the book exactly
//! once, and the stock and the orders add up.

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
    Confirm, DeductOptions, EntryState, Events, FenceCommands, RefundOptions, RequestState,
};

// The example's application, compiled into this test as it is into the example.
#[path = "../examples/consumer/app.rs"]
#[allow(dead_code)]
mod app;

use app::{Config, Order, OrderBook, Status};

const SKU: &str = "{sku:42}";
const STREAM: &str = "{sku:42}:orders";
const GROUP: &str = "orders";

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

/// What every test checks at the end: nothing pending; each deduction in the stream is in the
/// book exactly once, rejected exactly when its id ends in 7, with its quantity; each rejected
/// order refunded exactly once (the ledger says refunded, one `refund` entry); each created
/// order still deducted; the initial stock is what is left plus what the created orders hold.
/// Returns (created, rejected).
#[track_caller]
fn check_books(con: &mut Connection, book: &Path, initial: i64) -> (usize, usize) {
    assert_eq!(pending_count(con), 0, "entries left pending");
    let orders = OrderBook::read(book).expect("read the order book");
    let mut by_key: BTreeMap<String, Order> = BTreeMap::new();
    for order in orders {
        if let Some(first) = by_key.insert(order.key.clone(), order.clone()) {
            panic!("order {} created twice: {first:?} and {order:?}", order.key);
        }
    }
    let entries = xrange(con, STREAM);
    let deducts: BTreeMap<String, &Entry> = entries
        .iter()
        .filter(|e| field(e, "type") == Some("deduct"))
        .map(|e| (field(e, "id").expect("deduct id").to_string(), e))
        .collect();
    let mut refunds: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| field(e, "type") == Some("refund"))
    {
        *refunds
            .entry(field(e, "id").unwrap().to_string())
            .or_default() += 1;
    }
    let keys: BTreeSet<&String> = by_key.keys().collect();
    let events: BTreeSet<&String> = deducts.keys().collect();
    assert_eq!(keys, events, "the book and the deduct events differ");
    let mut held = 0;
    let (mut created, mut rejected) = (0, 0);
    for (key, order) in &by_key {
        let entry = deducts[key];
        assert_eq!(order.entry, entry.0, "{key}: entry id");
        assert_eq!(order.sku, SKU);
        let q: i64 = field(entry, "quantity").unwrap().parse().unwrap();
        assert_eq!(order.quantity, q, "{key}: quantity");
        let state = con.stock_request(SKU, key).unwrap();
        if key.ends_with('7') {
            rejected += 1;
            assert_eq!(order.status, Status::Rejected, "{key}");
            assert_eq!(state, RequestState::Refunded, "{key}");
            assert_eq!(refunds.get(key), Some(&1), "{key}: refund entries");
        } else {
            created += 1;
            assert_eq!(order.status, Status::Created, "{key}");
            assert_eq!(state, RequestState::Deducted(q), "{key}");
            assert_eq!(refunds.get(key), None, "{key} refunded");
            held += q;
        }
    }
    let left = con.stock_get(SKU).unwrap().unwrap();
    assert_eq!(left + held, initial, "stock {left} + created orders {held}");
    (created, rejected)
}

#[test]
fn every_order_is_created_once_across_crashes_and_restarts() {
    const INITIAL: i64 = 300;
    const BUYERS: usize = 6;
    let server = Server::start();
    let mut con = server.conn();
    con.stock_set(SKU, INITIAL).unwrap();
    let dir = TempDir::new();
    let book = dir.path("orders.jsonl");
    let acknowledged: Mutex<Vec<String>> = Mutex::new(Vec::new());

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
                        Some(_) => acknowledged.lock().unwrap().push(id),
                        None => return,
                    }
                    thread::sleep(ms(2));
                }
            }));
        }

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
    let (created, rejected) = check_books(&mut con, &book, INITIAL);
    let acknowledged = acknowledged.into_inner().unwrap();
    assert_eq!(created + rejected, acknowledged.len());
    assert!(rejected >= 5, "only {rejected} rejected orders");
    println!(
        "{} orders: {created} created, {rejected} rejected and refunded, {} left in stock",
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
    let (created, rejected) = check_books(&mut con, &book, 100);
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
    let (created, rejected) = check_books(&mut con, &book, 20);
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
