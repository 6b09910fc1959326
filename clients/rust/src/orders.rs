//! From stock to orders: a consumer-group consumer of the order events that
//! `STOCK.DEDUCT … EVENTS stream` and `STOCK.REFUND … EVENTS stream` append.
//!
//! [`run`] reads a stream with `XREADGROUP` (first this consumer's own pending entries, from
//! id `0`, then new ones with `>`), "creates" each order by appending a JSON line to an
//! [`OrderBook`] file, rejects the orders a [`Config::reject_suffix`] rule picks and gives
//! their stock back with `STOCK.REFUND`, and acknowledges each entry with `XACK` after it is
//! handled.
//!
//! It survives a crash at any point without losing or double-creating an order:
//!
//! - an entry is acknowledged only after its order line is on disk (`fsync`), so an order
//!   whose entry was not acknowledged is read again from the pending list after a restart;
//! - an order is written at most once: the book is keyed by request id (by the stream entry id
//!   for deductions made without `ID`), and an id already in the book is acknowledged without
//!   being written again. A line torn by a crash in the middle of a write is dropped when the
//!   book is opened, and its order is written again from the pending entry;
//! - a refund is idempotent in the module (`STOCK.REFUND` returns an id's stock once, and 0
//!   after), so a rejected order refunded again after a crash returns nothing twice.
//!
//! The file stands in for a database table with a unique key on the order id; several
//! consumers that run at the same time share such a table, not one file. Pending entries of a
//! consumer that never comes back are taken over with [`Config::claim_idle`]
//! (`XAUTOCLAIM`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, Value};

use crate::Result;

/// What the consumer does, and when it stops.
#[derive(Clone, Debug)]
pub struct Config {
    /// The stream the deductions write to (`EVENTS stream`), e.g. `{sku:42}:orders`.
    pub stream: String,
    /// The consumer group, created (from the start of the stream) when missing.
    pub group: String,
    /// This consumer's name in the group; a restarted consumer must keep its name to find its
    /// own pending entries.
    pub consumer: String,
    /// The order book: a JSON-lines file.
    pub orders: PathBuf,
    /// Orders whose request id ends with this are rejected and refunded. Deductions made
    /// without `ID` cannot be refunded and are always created.
    pub reject_suffix: Option<String>,
    /// Refund with `EVENTS <stream>`, so a `refund` entry follows the rejected order.
    pub refund_events: bool,
    /// Stop after this long without a new entry.
    pub idle_exit: Duration,
    /// Stop after this many orders created or rejected (new ones, not ones already in the
    /// book).
    pub max_orders: Option<u64>,
    /// Entries read per call.
    pub batch: usize,
    /// Take over entries another consumer has left pending for at least this long
    /// (`XAUTOCLAIM`), at start and whenever the stream is idle.
    pub claim_idle: Option<Duration>,
    /// For crash tests: stop right after the n-th order line is written, before its `XACK`,
    /// as a crash there would (the summary says [`Summary::crashed_at`]).
    pub crash_after_writes: Option<u64>,
}

impl Config {
    /// A configuration with the defaults: group `orders`, no rejections, refunds without
    /// events, 5 s idle exit, batches of 100, no claiming.
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
    /// Orders written as created.
    pub created: u64,
    /// Orders written as rejected (and refunded).
    pub rejected: u64,
    /// Units `STOCK.REFUND` returned (0 for a refund already made before a crash).
    pub refunded_units: i64,
    /// `deduct` entries whose order was already in the book (delivered again after a crash):
    /// acknowledged, not written again.
    pub duplicates: u64,
    /// Other entries (`soldout`, `refund`, unknown types) acknowledged.
    pub other_events: u64,
    /// Pending entries whose stream entry was trimmed away before they were handled:
    /// acknowledged, nothing to create.
    pub lost: u64,
    /// Entries taken over from other consumers.
    pub claimed: u64,
    /// Entries acknowledged.
    pub acked: u64,
    /// With [`Config::crash_after_writes`]: the stream id of the entry whose order was written
    /// and not acknowledged when the run stopped.
    pub crashed_at: Option<String>,
}

/// One order event, as the module writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The stream entry id.
    pub entry: String,
    /// `deduct`, `soldout`, `refund` (or anything else another writer put there).
    pub kind: String,
    /// The stock key.
    pub sku: String,
    /// The quantity deducted or refunded.
    pub quantity: Option<i64>,
    /// The quantity available after the change.
    pub remaining: Option<i64>,
    /// The request id, when the deduction had one.
    pub request_id: Option<String>,
    /// The fencing token, when the deduction had one.
    pub fence: Option<u64>,
}

impl Event {
    /// Reads an event from a stream entry's fields.
    pub fn from_fields(entry: &str, fields: &[(String, String)]) -> Event {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.clone())
        };
        Event {
            entry: entry.to_string(),
            kind: get("type").unwrap_or_default(),
            sku: get("sku").unwrap_or_default(),
            quantity: get("quantity").and_then(|v| v.parse().ok()),
            remaining: get("remaining").and_then(|v| v.parse().ok()),
            request_id: get("id"),
            fence: get("fence").and_then(|v| v.parse().ok()),
        }
    }

    /// The key an order is created under: the request id, or `entry:<stream id>` for a
    /// deduction without one.
    pub fn order_key(&self) -> String {
        match &self.request_id {
            Some(id) => id.clone(),
            None => format!("entry:{}", self.entry),
        }
    }
}

/// The state of an order in the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The order was created.
    Created,
    /// The order was rejected and its stock refunded.
    Rejected,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Rejected => "rejected",
        }
    }
}

/// One line of the book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// The order key ([`Event::order_key`]).
    pub key: String,
    /// Created or rejected.
    pub status: Status,
    /// The stock key.
    pub sku: String,
    /// The quantity deducted.
    pub quantity: i64,
    /// The stream entry the order came from.
    pub entry: String,
}

/// A JSON-lines order book: one line per order, keyed by order key, each line synced to disk
/// before [`OrderBook::record`] returns.
///
/// A line is `{"order":"…","status":"created"|"rejected","sku":"…","quantity":n,"entry":"…"}`.
pub struct OrderBook {
    file: File,
    known: HashMap<String, Status>,
}

impl OrderBook {
    /// Opens (or creates) the book and reads the orders in it. A last line without its
    /// newline (a write torn by a crash) is cut off: its order was never acknowledged and will
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
            let line = String::from_utf8_lossy(line);
            let order = Order::parse(&line).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: line {}: not an order: {line}", path.display(), n + 1),
                )
            })?;
            known.insert(order.key, order.status);
        }
        Ok(OrderBook { file, known })
    }

    /// Every order in the book (read from `path`), in the order they were written.
    pub fn read(path: &Path) -> io::Result<Vec<Order>> {
        let text = std::fs::read_to_string(path)?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                Order::parse(l).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("not an order: {l}"))
                })
            })
            .collect()
    }

    /// What the book holds for an order key.
    pub fn status(&self, key: &str) -> Option<Status> {
        self.known.get(key).copied()
    }

    /// Orders in the book.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// True when the book holds no order.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Appends one order and syncs it to disk.
    pub fn record(&mut self, order: &Order) -> io::Result<()> {
        let line = order.to_line();
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        self.known.insert(order.key.clone(), order.status);
        Ok(())
    }
}

impl Order {
    /// The order as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        format!(
            "{{\"order\":{},\"status\":\"{}\",\"sku\":{},\"quantity\":{},\"entry\":{}}}\n",
            json_string(&self.key),
            self.status.as_str(),
            json_string(&self.sku),
            self.quantity,
            json_string(&self.entry)
        )
    }

    /// Reads a line [`Order::to_line`] wrote (without its newline).
    pub fn parse(line: &str) -> Option<Order> {
        let rest = line.strip_prefix("{\"order\":")?;
        let (key, rest) = parse_json_string(rest)?;
        let rest = rest.strip_prefix(",\"status\":")?;
        let (status, rest) = parse_json_string(rest)?;
        let status = match status.as_str() {
            "created" => Status::Created,
            "rejected" => Status::Rejected,
            _ => return None,
        };
        let rest = rest.strip_prefix(",\"sku\":")?;
        let (sku, rest) = parse_json_string(rest)?;
        let rest = rest.strip_prefix(",\"quantity\":")?;
        let digits = rest.find(|c: char| c != '-' && !c.is_ascii_digit())?;
        let quantity = rest[..digits].parse().ok()?;
        let rest = rest[digits..].strip_prefix(",\"entry\":")?;
        let (entry, rest) = parse_json_string(rest)?;
        (rest == "}").then_some(Order {
            key,
            status,
            sku,
            quantity,
            entry,
        })
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads a JSON string literal at the start of `s`; the string and what follows it.
fn parse_json_string(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, h)| h))
                            .collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    None
}

/// `XGROUP CREATE stream group 0 MKSTREAM`, ignoring `BUSYGROUP` (the group exists). The
/// group starts at the beginning of the stream, so events appended before the first
/// consumer ran are read too.
pub fn create_group<C: ConnectionLike>(conn: &mut C, stream: &str, group: &str) -> Result<()> {
    match redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query::<()>(conn)
    {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// A stream entry as read: its id, and its fields (None when the entry was deleted while it
/// was pending).
type RawEntry = (String, Option<Vec<(String, String)>>);

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn protocol_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, what))
}

/// Entries of an `XRANGE`-shaped reply.
fn parse_entries(v: &Value) -> Result<Vec<RawEntry>> {
    let Value::Array(items) = v else {
        return Err(protocol_error("stream entries: not an array"));
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                return Err(protocol_error("stream entry: not an array"));
            };
            let id = pair
                .first()
                .and_then(text)
                .ok_or_else(|| protocol_error("stream entry: no id"))?;
            let fields = match pair.get(1) {
                None | Some(Value::Nil) => None,
                Some(Value::Array(flat)) => Some(
                    flat.chunks(2)
                        .filter_map(|c| Some((text(c.first()?)?, text(c.get(1)?)?)))
                        .collect(),
                ),
                Some(Value::Map(pairs)) => Some(
                    pairs
                        .iter()
                        .filter_map(|(f, v)| Some((text(f)?, text(v)?)))
                        .collect(),
                ),
                Some(_) => return Err(protocol_error("stream entry: bad fields")),
            };
            Ok((id, fields))
        })
        .collect()
}

/// The entries of one stream in an `XREADGROUP` reply (RESP2 array or RESP3 map); none on a
/// timeout.
fn parse_read(v: &Value) -> Result<Vec<RawEntry>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) if pair.len() == 2 => parse_entries(&pair[1]),
            Some(_) => Err(protocol_error("XREADGROUP: unexpected reply")),
        },
        Value::Map(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some((_, entries)) => parse_entries(entries),
        },
        _ => Err(protocol_error("XREADGROUP: unexpected reply")),
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
    book: OrderBook,
    summary: Summary,
    writes: u64,
}

impl Consumer<'_> {
    fn orders_done(&self) -> u64 {
        self.summary.created + self.summary.rejected
    }

    fn ack<C: ConnectionLike>(&mut self, conn: &mut C, entry: &str) -> Result<()> {
        let _: i64 = redis::cmd("XACK")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(entry)
            .query(conn)?;
        self.summary.acked += 1;
        Ok(())
    }

    fn rejects(&self, event: &Event) -> bool {
        match (&self.config.reject_suffix, &event.request_id) {
            (Some(suffix), Some(id)) => id.ends_with(suffix.as_str()),
            _ => false,
        }
    }

    /// Handles one entry; acknowledges it unless a crash is simulated.
    fn handle<C: ConnectionLike>(
        &mut self,
        conn: &mut C,
        entry: &RawEntry,
    ) -> Result<Option<Stop>> {
        let (id, fields) = entry;
        let Some(fields) = fields else {
            // Trimmed away (MAXLEN) before it was handled: nothing left to create.
            self.summary.lost += 1;
            self.ack(conn, id)?;
            return Ok(None);
        };
        let event = Event::from_fields(id, fields);
        if event.kind != "deduct" {
            self.summary.other_events += 1;
            self.ack(conn, id)?;
            return Ok(None);
        }
        let key = event.order_key();
        if self.book.status(&key).is_some() {
            // Written before a crash, not acknowledged: acknowledge now, write nothing.
            self.summary.duplicates += 1;
            self.ack(conn, id)?;
            return Ok(None);
        }
        let status = if self.rejects(&event) {
            // Refund first: idempotent in the module, so a crash before the line is written
            // and a second refund after the restart return the stock once.
            let request_id = event.request_id.as_deref().unwrap_or_default();
            let mut refund = redis::cmd("STOCK.REFUND");
            refund.arg(&event.sku).arg(request_id);
            if self.config.refund_events {
                refund.arg("EVENTS").arg(&self.config.stream);
            }
            let returned: i64 = refund.query(conn)?;
            self.summary.refunded_units += returned;
            Status::Rejected
        } else {
            Status::Created
        };
        self.book.record(&Order {
            key,
            status,
            sku: event.sku.clone(),
            quantity: event.quantity.unwrap_or(0),
            entry: id.clone(),
        })?;
        match status {
            Status::Created => self.summary.created += 1,
            Status::Rejected => self.summary.rejected += 1,
        }
        self.writes += 1;
        if self.config.crash_after_writes == Some(self.writes) {
            self.summary.crashed_at = Some(id.clone());
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
        entries: &[RawEntry],
    ) -> Result<Option<Stop>> {
        for entry in entries {
            if let Some(stop) = self.handle(conn, entry)? {
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }

    fn read<C: ConnectionLike>(
        &self,
        conn: &mut C,
        from: &str,
        block: Option<u64>,
    ) -> Result<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.config.consumer)
            .arg("COUNT")
            .arg(self.config.batch.max(1));
        if let Some(ms) = block {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.config.stream).arg(from);
        parse_read(&cmd.query::<Value>(conn)?)
    }

    /// This consumer's own pending entries, from id 0: what a crash left unacknowledged.
    fn pending<C: ConnectionLike>(&mut self, conn: &mut C) -> Result<Option<Stop>> {
        let mut from = "0-0".to_string();
        loop {
            let entries = self.read(conn, &from, None)?;
            let Some((last, _)) = entries.last() else {
                return Ok(None);
            };
            from = last.clone();
            if let Some(stop) = self.handle_all(conn, &entries)? {
                return Ok(Some(stop));
            }
        }
    }

    /// Entries other consumers left pending for at least `claim_idle`.
    fn claim<C: ConnectionLike>(&mut self, conn: &mut C) -> Result<Option<Stop>> {
        let Some(idle) = self.config.claim_idle else {
            return Ok(None);
        };
        let mut start = "0-0".to_string();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.config.stream)
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
                .arg(&start)
                .arg("COUNT")
                .arg(self.config.batch.max(1))
                .query(conn)?;
            let Value::Array(parts) = &reply else {
                return Err(protocol_error("XAUTOCLAIM: unexpected reply"));
            };
            let next = parts
                .first()
                .and_then(text)
                .ok_or_else(|| protocol_error("XAUTOCLAIM: no cursor"))?;
            let entries = match parts.get(1) {
                Some(v) => parse_entries(v)?,
                None => Vec::new(),
            };
            self.summary.claimed += entries.len() as u64;
            if let Some(stop) = self.handle_all(conn, &entries)? {
                return Ok(Some(stop));
            }
            if next == "0-0" {
                return Ok(None);
            }
            start = next;
        }
    }
}

/// Runs the consumer until it has been idle for [`Config::idle_exit`], has handled
/// [`Config::max_orders`] orders, or reaches [`Config::crash_after_writes`].
///
/// Errors: replies and I/O errors from Redis, and I/O errors from the order book (as
/// [`redis::RedisError`]s of kind I/O). An error leaves the entry being handled pending: the
/// next run handles it again.
pub fn run<C: ConnectionLike>(conn: &mut C, config: &Config) -> Result<Summary> {
    create_group(conn, &config.stream, &config.group)?;
    let book = OrderBook::open(&config.orders)?;
    let mut consumer = Consumer {
        config,
        book,
        summary: Summary::default(),
        writes: 0,
    };
    if consumer.pending(conn)?.is_some() || consumer.claim(conn)?.is_some() {
        return Ok(consumer.summary);
    }
    // BLOCK 0 would wait for ever: at least 1 ms, at most 1 s per call, so the idle clock is
    // checked often.
    let slice = config
        .idle_exit
        .clamp(Duration::from_millis(1), Duration::from_secs(1));
    let block = u64::try_from(slice.as_millis()).unwrap_or(1000);
    let mut last_seen = Instant::now();
    loop {
        let entries = consumer.read(conn, ">", Some(block))?;
        if entries.is_empty() {
            if consumer.claim(conn)?.is_some() {
                break;
            }
            if last_seen.elapsed() >= config.idle_exit {
                break;
            }
            continue;
        }
        last_seen = Instant::now();
        if consumer.handle_all(conn, &entries)?.is_some() {
            break;
        }
    }
    Ok(consumer.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_lines_round_trip() {
        for key in ["order-1", "a \"quoted\" \\ id\n\t\u{1}é{sku}", ""] {
            let order = Order {
                key: key.to_string(),
                status: Status::Rejected,
                sku: "{sku:42}".to_string(),
                quantity: 3,
                entry: "1700000000000-7".to_string(),
            };
            let line = order.to_line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Order::parse(line.trim_end_matches('\n')), Some(order));
        }
        assert_eq!(Order::parse("{\"order\":\"x\""), None);
        assert_eq!(Order::parse("garbage"), None);
    }

    #[test]
    fn events_from_fields() {
        let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let e = Event::from_fields(
            "1-2",
            &f(&[
                ("type", "deduct"),
                ("sku", "{sku:42}"),
                ("quantity", "2"),
                ("remaining", "8"),
                ("id", "o-1"),
                ("fence", "99"),
            ]),
        );
        assert_eq!(e.kind, "deduct");
        assert_eq!(e.quantity, Some(2));
        assert_eq!(e.remaining, Some(8));
        assert_eq!(e.fence, Some(99));
        assert_eq!(e.order_key(), "o-1");
        let e = Event::from_fields("1-3", &f(&[("type", "deduct"), ("sku", "s")]));
        assert_eq!(e.order_key(), "entry:1-3");
    }
}
