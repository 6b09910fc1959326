//! The order-book application of the `consumer` example: creates each order line of the event
//! stream exactly once, in a JSON-lines file, across crashes.
//!
//! An order *line* is what one stock's ledger records under one request id: a `STOCK.DEDUCT`
//! makes one, a cart (`STOCK.CART`) one per item, all under the cart's request id. The book is
//! keyed by line, [`OrderEvent::line_key`] (the stock key and the request id), not by the
//! request id alone, which would take a cart's items 2..n for duplicates of item 1.
//!
//! [`run`] reads the stream with [`OrderStream`] (first this consumer's own pending entries,
//! then new ones), "creates" each line by appending a JSON line to an [`OrderBook`] file,
//! rejects the single orders a [`Config::reject_suffix`] rule picks and gives their stock back
//! with `STOCK.REFUND`, cancels a line when a `refund` entry (the order was cancelled with
//! `STOCK.REFUND … EVENTS`, or its cart with `STOCK.CART.REFUND … EVENTS`: one entry per item)
//! or an `expire` entry (it was placed with `HOLD` and not paid by its deadline: the module gave
//! its units back; a cart's holds expire stock by stock) comes for it, and acknowledges each
//! entry after it is handled. An `expire` is handled exactly like a `refund`: both mean the
//! line's units are back on sale, so the line is cancelled. Every kind of entry carries the
//! stock key and the request id, so a line's `deduct`, `refund` and `expire` meet. It survives
//! a crash at any point without losing, double-creating or double-cancelling a line:
//!
//! - an entry is acknowledged only after its line is on disk (`fsync`), so a line whose entry
//!   was not acknowledged is read again from the pending list after a restart;
//! - each change of a line is written at most once: the book knows each line's latest status;
//!   a `deduct` for a line already in the book, or a `refund`/`expire` for a line already
//!   cancelled, is acknowledged without writing. A line has one record (`created` or
//!   `rejected`), or two (`created`, then `cancelled`); a cancellation read before its line (a
//!   `refund` or `expire` whose `deduct` never came, or was trimmed) is written as the line's
//!   only record, and a later `deduct` for it adds nothing. A record torn by a crash in the
//!   middle of a write is dropped when the book is opened, and its change is written again
//!   from the pending entry;
//! - a refund is idempotent in the module (`STOCK.REFUND` returns an id's stock once, and 0
//!   after), so a rejected order refunded again after a crash returns nothing twice. The
//!   `refund` entry of a rejection (`--refund-events`) finds the line already rejected and
//!   writes nothing;
//! - the items of a cart (entries with `cart`) are never rejected: the rule decides line by
//!   line, and rejecting one item would leave the rest of the cart sold. A cart is accepted or
//!   cancelled as a whole by the application, with `STOCK.CART.REFUND … EVENTS`, whose `refund`
//!   entries (one per item) cancel each of its lines once.
//!
//! The file stands in for a database table with a unique key on the order id. Pending entries
//! of a consumer that never comes back are taken over with [`Config::claim_idle`].
//!
//! This file is shared by the example's `main.rs` and the crate's `tests/consumer.rs`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::ConnectionLike;
use redis_fence_client::orders::{Delivery, OrderEvent, OrderStream};
use redis_fence_client::{Events, FenceCommands, RefundOptions};
use serde::{Deserialize, Serialize};

/// What the consumer does, and when it stops.
#[derive(Clone, Debug)]
pub struct Config {
    /// The stream the deductions write to (`EVENTS stream`), e.g. `{sku:42}:orders`.
    pub stream: String,
    /// The consumer group, created (from the start of the stream) when missing.
    pub group: String,
    /// This consumer's name in the group; a restarted consumer must keep its name.
    pub consumer: String,
    /// The order book: a JSON-lines file.
    pub orders: PathBuf,
    /// Single orders whose request id ends with this are rejected and refunded (on their one
    /// stock). Deductions made without `ID` cannot be refunded and are always created. The
    /// items of a cart (entries with `cart`) are always created: a cart is accepted or
    /// cancelled as a whole by the application (`STOCK.CART.REFUND … EVENTS`), never cut in
    /// half here.
    pub reject_suffix: Option<String>,
    /// Refund with `EVENTS <stream>`, so a `refund` entry follows the rejected order.
    pub refund_events: bool,
    /// Stop after this long without a new entry.
    pub idle_exit: Duration,
    /// Stop after this many order lines created or rejected (new ones; a cart has a line
    /// per item).
    pub max_orders: Option<u64>,
    /// Entries read per call.
    pub batch: usize,
    /// Take over entries another consumer has left pending for at least this long
    /// (`XAUTOCLAIM`), at start and whenever the stream is idle.
    pub claim_idle: Option<Duration>,
    /// For crash tests: stop right after the n-th record (a line created, rejected or
    /// cancelled) is written, before its `XACK`, as a crash there would (the summary says
    /// [`Summary::crashed_at`]).
    pub crash_after_writes: Option<u64>,
}

impl Config {
    /// The defaults: group `orders`, no rejections, refunds without events, 5 s idle exit,
    /// batches of 100, no claiming.
    pub fn new(stream: &str, consumer: &str, orders: impl Into<PathBuf>) -> Config {
        Config {
            stream: stream.to_string(),
            group: "orders".to_string(),
            consumer: consumer.to_string(),
            orders: orders.into(),
            reject_suffix: None,
            refund_events: false,
            idle_exit: Duration::from_secs(5),
            max_orders: None,
            batch: 100,
            claim_idle: None,
            crash_after_writes: None,
        }
    }
}

/// What one [`run`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines written as created (a cart's items one by one).
    pub created: u64,
    /// Lines written as rejected (and refunded).
    pub rejected: u64,
    /// Units `STOCK.REFUND` returned (0 for a refund already made before a crash).
    pub refunded_units: i64,
    /// `deduct` entries whose line was already in the book, and `refund`/`expire` entries
    /// whose line was already cancelled: acknowledged, not written again.
    pub duplicates: u64,
    /// Lines cancelled by a `refund` or `expire` entry (written as cancelled).
    pub cancelled: u64,
    /// Other entries acknowledged: `soldout`, unknown types, and the `refund` entries of the
    /// lines this consumer rejected.
    pub other_events: u64,
    /// Pending entries trimmed away before they were handled: acknowledged.
    pub lost: u64,
    /// Entries taken over from other consumers.
    pub claimed: u64,
    /// Entries acknowledged.
    pub acked: u64,
    /// With [`Config::crash_after_writes`]: the entry written and not acknowledged.
    pub crashed_at: Option<String>,
}

/// The state of an order line in the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The line was created.
    Created,
    /// The line was rejected and its stock refunded.
    Rejected,
    /// The line was cancelled: refunded by someone (the customer gave up, the cart was
    /// cancelled), or its hold expired unpaid. Its units are back on sale.
    Cancelled,
}

/// One record of the book, a change of one order line:
/// `{"order":"…","status":"created"|"rejected"|"cancelled","sku":"…","quantity":n,"entry":"…"}`.
/// The line is `(sku, order)` ([`Order::line_key`]): a cart has one per item, all with the
/// cart's `order`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order key ([`OrderEvent::order_key`]): the request id, shared by a cart's items.
    #[serde(rename = "order")]
    pub key: String,
    /// Created, rejected or cancelled.
    pub status: Status,
    /// The stock key: with the order key, the line's key.
    pub sku: String,
    /// The quantity deducted.
    pub quantity: i64,
    /// The stream entry this record came from (the `deduct`, or the `refund`/`expire` that
    /// cancelled the line).
    pub entry: String,
}

impl Order {
    /// The line this record is about, `(sku, order)`, as [`OrderEvent::line_key`] gives it.
    pub fn line_key(&self) -> (String, String) {
        (self.sku.clone(), self.key.clone())
    }
}

/// A JSON-lines order book keyed by order line ([`OrderEvent::line_key`]), each record synced
/// to disk before [`OrderBook::record`] returns.
pub struct OrderBook {
    file: File,
    known: HashMap<(String, String), Status>,
}

fn invalid(path: &Path, n: usize, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: line {n}: not an order: {e}", path.display()),
    )
}

impl OrderBook {
    /// Opens (or creates) the book and reads the lines in it. A last record without its
    /// newline (a write torn by a crash) is cut off: its entry was never acknowledged and will
    /// be written again.
    pub fn open(path: &Path) -> io::Result<OrderBook> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            file.set_len(whole as u64)?;
            file.sync_data()?;
            text.truncate(whole);
        }
        file.seek(SeekFrom::End(0))?;
        let mut known = HashMap::new();
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let order: Order = serde_json::from_slice(line).map_err(|e| invalid(path, n + 1, e))?;
            known.insert(order.line_key(), order.status);
        }
        Ok(OrderBook { file, known })
    }

    /// Every record in the book at `path`, in the order they were written (for the tests).
    #[allow(dead_code)]
    pub fn read(path: &Path) -> io::Result<Vec<Order>> {
        let text = std::fs::read_to_string(path)?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(n, l)| serde_json::from_str(l).map_err(|e| invalid(path, n + 1, e)))
            .collect()
    }

    /// What the book holds for an order line, `(sku, order key)`.
    pub fn status(&self, line: &(String, String)) -> Option<Status> {
        self.known.get(line).copied()
    }

    /// Appends one record and syncs it to disk.
    pub fn record(&mut self, order: &Order) -> io::Result<()> {
        let mut line = serde_json::to_vec(order)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.known.insert(order.line_key(), order.status);
        Ok(())
    }
}

/// Why handling stopped early.
enum Stop {
    /// The configured crash point was reached.
    Crash,
    /// `max_orders` reached.
    Enough,
}

struct Consumer<'a> {
    config: &'a Config,
    stream: OrderStream,
    book: OrderBook,
    summary: Summary,
    writes: u64,
}

impl Consumer<'_> {
    fn orders_done(&self) -> u64 {
        self.summary.created + self.summary.rejected
    }

    fn ack<C: ConnectionLike>(&mut self, conn: &mut C, entry: &str) -> redis::RedisResult<()> {
        self.stream.ack(conn, entry)?;
        self.summary.acked += 1;
        Ok(())
    }

    /// The rejection rule, for single orders only: a cart's item (`cart` set) is never
    /// rejected, since refunding it alone would leave the rest of the cart sold.
    fn rejects(&self, event: &OrderEvent) -> bool {
        match (&self.config.reject_suffix, &event.request_id, event.cart) {
            (Some(suffix), Some(id), None) => id.ends_with(suffix.as_str()),
            _ => false,
        }
    }

    /// Handles one entry; acknowledges it unless a crash is simulated.
    fn handle<C: ConnectionLike>(
        &mut self,
        conn: &mut C,
        delivery: &Delivery,
    ) -> redis::RedisResult<Option<Stop>> {
        let id = &delivery.id;
        let Some(event) = &delivery.event else {
            // Trimmed away (MAXLEN) before it was handled: nothing left to create.
            self.summary.lost += 1;
            self.ack(conn, id)?;
            return Ok(None);
        };
        match event.kind.as_str() {
            "deduct" => self.create(conn, id, event),
            "refund" | "expire" if event.request_id.is_some() => self.cancel(conn, id, event),
            _ => {
                self.summary.other_events += 1;
                self.ack(conn, id)?;
                Ok(None)
            }
        }
    }

    /// A `refund` or `expire` entry: the line's units are back on sale, so the line is
    /// cancelled, once.
    fn cancel<C: ConnectionLike>(
        &mut self,
        conn: &mut C,
        id: &str,
        event: &OrderEvent,
    ) -> redis::RedisResult<Option<Stop>> {
        let line = event.line_key();
        match self.book.status(&line) {
            Some(Status::Cancelled) => {
                // Written before a crash, not acknowledged.
                self.summary.duplicates += 1;
                self.ack(conn, id)?;
                return Ok(None);
            }
            Some(Status::Rejected) => {
                // The refund this consumer made when it rejected the line.
                self.summary.other_events += 1;
                self.ack(conn, id)?;
                return Ok(None);
            }
            Some(Status::Created) | None => {}
        }
        let (_, key) = line;
        self.book.record(&Order {
            key,
            status: Status::Cancelled,
            sku: event.sku.clone(),
            quantity: event.quantity.unwrap_or(0),
            entry: id.to_string(),
        })?;
        self.summary.cancelled += 1;
        self.written(conn, id)
    }

    /// A `deduct` entry: the line is created (or, for a single order, rejected and refunded),
    /// once.
    fn create<C: ConnectionLike>(
        &mut self,
        conn: &mut C,
        id: &str,
        event: &OrderEvent,
    ) -> redis::RedisResult<Option<Stop>> {
        let line = event.line_key();
        if self.book.status(&line).is_some() {
            // Written before a crash, not acknowledged: acknowledge now, write nothing.
            self.summary.duplicates += 1;
            self.ack(conn, id)?;
            return Ok(None);
        }
        let status = if self.rejects(event) {
            // Refund first: idempotent in the module, so a crash before the line is written
            // and a second refund after the restart return the stock once.
            let request_id = event.request_id.as_deref().unwrap_or_default();
            let mut options = RefundOptions::new();
            if self.config.refund_events {
                options = options.events(Events::to(self.config.stream.as_str()));
            }
            self.summary.refunded_units += conn.stock_refund(&event.sku, request_id, &options)?;
            Status::Rejected
        } else {
            Status::Created
        };
        let (_, key) = line;
        self.book.record(&Order {
            key,
            status,
            sku: event.sku.clone(),
            quantity: event.quantity.unwrap_or(0),
            entry: id.to_string(),
        })?;
        if status == Status::Rejected {
            self.summary.rejected += 1;
        } else {
            self.summary.created += 1;
        }
        self.written(conn, id)
    }

    /// After a line is written: the crash point, or the acknowledgement and the order limit.
    fn written<C: ConnectionLike>(
        &mut self,
        conn: &mut C,
        id: &str,
    ) -> redis::RedisResult<Option<Stop>> {
        self.writes += 1;
        if self.config.crash_after_writes == Some(self.writes) {
            self.summary.crashed_at = Some(id.to_string());
            return Ok(Some(Stop::Crash));
        }
        self.ack(conn, id)?;
        if self
            .config
            .max_orders
            .is_some_and(|max| self.orders_done() >= max)
        {
            return Ok(Some(Stop::Enough));
        }
        Ok(None)
    }

    fn handle_all<C: ConnectionLike>(
        &mut self,
        conn: &mut C,
        deliveries: &[Delivery],
    ) -> redis::RedisResult<Option<Stop>> {
        for delivery in deliveries {
            if let Some(stop) = self.handle(conn, delivery)? {
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }

    /// Entries other consumers left pending for at least `claim_idle`.
    fn claim<C: ConnectionLike>(&mut self, conn: &mut C) -> redis::RedisResult<Option<Stop>> {
        let Some(idle) = self.config.claim_idle else {
            return Ok(None);
        };
        let mut start = "0-0".to_string();
        loop {
            let claimed = self.stream.claim(conn, idle, &start)?;
            self.summary.claimed += claimed.deliveries.len() as u64;
            if let Some(stop) = self.handle_all(conn, &claimed.deliveries)? {
                return Ok(Some(stop));
            }
            match claimed.next {
                Some(next) => start = next,
                None => return Ok(None),
            }
        }
    }
}

/// Runs the consumer until it has been idle for [`Config::idle_exit`], has handled
/// [`Config::max_orders`] lines, or reaches [`Config::crash_after_writes`].
///
/// Errors: replies and I/O errors from Redis, and I/O errors from the order book. An error
/// leaves the entry being handled pending: the next run handles it again.
pub fn run<C: ConnectionLike>(conn: &mut C, config: &Config) -> redis::RedisResult<Summary> {
    let stream =
        OrderStream::new(&config.stream, &config.group, &config.consumer).count(config.batch);
    stream.create_group(conn)?;
    let book = OrderBook::open(&config.orders)?;
    let mut consumer = Consumer {
        config,
        stream: stream.clone(),
        book,
        summary: Summary::default(),
        writes: 0,
    };
    let pending = stream.read_pending(conn)?;
    if consumer.handle_all(conn, &pending)?.is_some() || consumer.claim(conn)?.is_some() {
        return Ok(consumer.summary);
    }
    // At most 1 s per read, so the idle clock is checked often.
    let block = config
        .idle_exit
        .clamp(Duration::from_millis(1), Duration::from_secs(1));
    let mut last_seen = Instant::now();
    loop {
        let deliveries = stream.read_new(conn, Some(block))?;
        if deliveries.is_empty() {
            if consumer.claim(conn)?.is_some() || last_seen.elapsed() >= config.idle_exit {
                break;
            }
            continue;
        }
        last_seen = Instant::now();
        if consumer.handle_all(conn, &deliveries)?.is_some() {
            break;
        }
    }
    Ok(consumer.summary)
}
