//! Reading the order events that `STOCK.DEDUCT … EVENTS stream` and `STOCK.REFUND … EVENTS
//! stream` append (and the `expire` events of holds whose deadline passed unconfirmed), with a
//! consumer group: the reusable part of an order consumer.
//!
//! An [`OrderStream`] names the stream, the group and this consumer; it creates the group,
//! reads this consumer's pending entries (what a crash left unacknowledged) and new ones,
//! acknowledges, and claims entries a dead consumer left pending, each sync (any
//! [`redis::ConnectionLike`]) and async (any [`redis::aio::ConnectionLike`], feature
//! `tokio`). Entries come back as [`Delivery`]s holding a parsed [`OrderEvent`].
//!
//! What to do with an event, and where to keep orders, is the application's: the `consumer`
//! example of this crate is one, a crash-safe JSON-lines order book. The rule that makes a
//! consumer exactly-once is the same whatever the store: make the order line durable, keyed by
//! [`OrderEvent::line_key`] (the stock key and the request id: unique per line, also for the
//! items of a cart, which share one request id), before [`OrderStream::ack`]; on a restart
//! read [`OrderStream::read_pending`] first, and acknowledge without writing a line the store
//! already has. A line's `deduct`, `refund` and `expire` entries all carry its stock key and
//! request id, so they find the same line.
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_fence_client::orders::OrderStream;
//!
//! # fn main() -> redis::RedisResult<()> {
//! let mut con = redis::Client::open("redis://127.0.0.1/")?.get_connection()?;
//! let orders = OrderStream::new("{sku:42}:orders", "orders", "consumer-1");
//! orders.create_group(&mut con)?;
//! let mut deliveries = orders.read_pending(&mut con)?;
//! deliveries.extend(orders.read_new(&mut con, Some(Duration::from_secs(1)))?);
//! for delivery in deliveries {
//!     if let Some(event) = &delivery.event {
//!         let (sku, order) = event.line_key();
//!         println!("{} {order} on {sku} x{:?}", event.kind, event.quantity);
//!     }
//!     orders.ack(&mut con, &delivery.id)?;
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use redis::{Commands, ConnectionLike, FromRedisValue, RedisResult, Value};

use crate::millis_ceil;

/// One order event, as the module writes it (see the README's "From stock to orders").
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrderEvent {
    /// `deduct`, `soldout`, `refund`, `expire` (a hold whose deadline passed unconfirmed), or
    /// anything else another writer put there.
    pub kind: String,
    /// The stock key.
    pub sku: String,
    /// The quantity deducted, refunded, or returned by an expiry.
    pub quantity: Option<i64>,
    /// The quantity available after the change.
    pub remaining: Option<i64>,
    /// The request id, when the deduction had one.
    pub request_id: Option<String>,
    /// The fencing token, when the deduction had one.
    pub fence: Option<u64>,
    /// For an entry of a whole cart (a `deduct` of `STOCK.CART … EVENTS`, a `refund` of
    /// `STOCK.CART.REFUND … EVENTS`): the number of items in the cart; `None` for any other
    /// entry, including the `expire` entries of a cart's holds and the `refund` of one item
    /// refunded alone with `STOCK.REFUND`.
    pub cart: Option<u32>,
    /// For an entry of a whole cart: this item's index in the cart, from 1. A cart appends
    /// one entry per item, all with the cart's request id, so the request id alone does not
    /// name an item: [`line_key`](OrderEvent::line_key) (stock key and request id) does, for
    /// every kind of entry, those without `item` included.
    pub item: Option<u32>,
    /// The stream entry id.
    pub entry: String,
}

impl OrderEvent {
    /// Reads an event from a stream entry's fields; fields it does not know are ignored, and
    /// a field that does not parse is `None`.
    pub fn from_fields(entry: &str, fields: &HashMap<String, Value>) -> OrderEvent {
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(|v| String::from_redis_value(v.clone()).ok())
        };
        OrderEvent {
            kind: text("type").unwrap_or_default(),
            sku: text("sku").unwrap_or_default(),
            quantity: text("quantity").and_then(|v| v.parse().ok()),
            remaining: text("remaining").and_then(|v| v.parse().ok()),
            request_id: text("id"),
            fence: text("fence").and_then(|v| v.parse().ok()),
            cart: text("cart").and_then(|v| v.parse().ok()),
            item: text("item").and_then(|v| v.parse().ok()),
            entry: entry.to_string(),
        }
    }

    /// The order's key: the request id, or `entry:<stream id>` for a deduction made without
    /// one. It names the order, not a line of it: the items of a cart share their cart's
    /// request id (and so does one id used on two stocks), so it is not unique per `deduct`
    /// entry. Key a store by [`line_key`](OrderEvent::line_key).
    pub fn order_key(&self) -> String {
        match &self.request_id {
            Some(id) => id.clone(),
            None => format!("entry:{}", self.entry),
        }
    }

    /// The key of one order line, `(sku, order_key)`: the stock key and
    /// [`order_key`](OrderEvent::order_key) together, as each stock's ledger records an order.
    /// Unique per `deduct` entry, the items of a cart included (one line per item), and the
    /// same for the line's later `refund` and `expire` entries, which carry the stock key and
    /// the request id too (an `expire` of a cart's hold has no `cart` or `item`, a refund of one
    /// item alone neither). A deduction made without a request id is keyed by its stream entry
    /// (`entry:<id>`) and has no later entries.
    pub fn line_key(&self) -> (String, String) {
        (self.sku.clone(), self.order_key())
    }
}

/// One stream entry delivered to this consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The stream entry id, to acknowledge.
    pub id: String,
    /// The event; `None` when the entry was trimmed away (`MAXLEN`) while it was pending:
    /// there is nothing left to handle, only to acknowledge.
    pub event: Option<OrderEvent>,
}

impl From<StreamId> for Delivery {
    fn from(entry: StreamId) -> Delivery {
        let event = (!entry.map.is_empty()).then(|| OrderEvent::from_fields(&entry.id, &entry.map));
        Delivery {
            id: entry.id,
            event,
        }
    }
}

/// What one [`OrderStream::claim`] call took over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claimed {
    /// The entries now delivered to this consumer.
    pub deliveries: Vec<Delivery>,
    /// Pending entries that no longer exist in the stream (trimmed): removed from the
    /// pending list by the server, nothing to acknowledge.
    pub deleted: Vec<String>,
    /// Where the next call starts; `None` when the whole pending list was scanned.
    pub next: Option<String>,
}

impl From<StreamAutoClaimReply> for Claimed {
    fn from(reply: StreamAutoClaimReply) -> Claimed {
        Claimed {
            deliveries: reply.claimed.into_iter().map(Delivery::from).collect(),
            deleted: reply.deleted_ids,
            next: (reply.next_stream_id != "0-0").then_some(reply.next_stream_id),
        }
    }
}

/// The order-event stream as one consumer of one group sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderStream {
    stream: String,
    group: String,
    consumer: String,
    count: usize,
}

fn deliveries(reply: StreamReadReply) -> Vec<Delivery> {
    reply
        .keys
        .into_iter()
        .flat_map(|key| key.ids)
        .map(Delivery::from)
        .collect()
}

impl OrderStream {
    /// The events of `stream` (the `EVENTS` key of the deductions), read by `consumer` of
    /// `group`, 100 entries per read. A restarted consumer must keep its name to find its
    /// own pending entries.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> OrderStream {
        OrderStream {
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
            count: 100,
        }
    }

    /// Entries per read or claim (at least 1).
    pub fn count(mut self, count: usize) -> OrderStream {
        self.count = count.max(1);
        self
    }

    /// The stream key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// This consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    fn read_options(&self, block: Option<Duration>) -> StreamReadOptions {
        let options = StreamReadOptions::default()
            .group(&self.group, &self.consumer)
            .count(self.count);
        match block {
            // BLOCK 0 waits for ever: a duration is at least 1 ms.
            Some(d) => options.block(usize::try_from(millis_ceil(d).max(1)).unwrap_or(usize::MAX)),
            None => options,
        }
    }

    fn claim_options(&self) -> StreamAutoClaimOptions {
        StreamAutoClaimOptions::default().count(self.count)
    }

    /// `XGROUP CREATE stream group 0 MKSTREAM`, ignoring `BUSYGROUP` (the group exists). The
    /// group starts at the beginning of the stream, so events appended before the first
    /// consumer ran are read too.
    pub fn create_group<C: ConnectionLike>(&self, conn: &mut C) -> RedisResult<()> {
        match conn.xgroup_create_mkstream::<_, _, _, ()>(&self.stream, &self.group, "0") {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Every entry delivered to this consumer and not acknowledged (what a crash left), in
    /// stream order: `XREADGROUP … STREAMS stream <id>` from `0`, page after page.
    pub fn read_pending<C: ConnectionLike>(&self, conn: &mut C) -> RedisResult<Vec<Delivery>> {
        let mut all = Vec::new();
        let mut after = "0-0".to_string();
        loop {
            let page: StreamReadReply =
                conn.xread_options(&[&self.stream], &[&after], &self.read_options(None))?;
            let page = deliveries(page);
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = last.id.clone();
            all.extend(page);
        }
    }

    /// New entries (`XREADGROUP … STREAMS stream >`), waiting up to `block` for some (`None`:
    /// not at all); empty when none came.
    pub fn read_new<C: ConnectionLike>(
        &self,
        conn: &mut C,
        block: Option<Duration>,
    ) -> RedisResult<Vec<Delivery>> {
        let reply: Option<StreamReadReply> =
            conn.xread_options(&[&self.stream], &[">"], &self.read_options(block))?;
        Ok(reply.map(deliveries).unwrap_or_default())
    }

    /// `XACK stream group id`: true when the entry was pending and no longer is.
    pub fn ack<C: ConnectionLike>(&self, conn: &mut C, id: &str) -> RedisResult<bool> {
        conn.xack::<_, _, _, i64>(&self.stream, &self.group, &[id])
            .map(|n| n == 1)
    }

    /// `XAUTOCLAIM stream group consumer min-idle start COUNT n`: takes over entries other
    /// consumers have left pending for at least `min_idle`, scanning the pending list from
    /// `start` (`"0-0"` the first time, then [`Claimed::next`]).
    pub fn claim<C: ConnectionLike>(
        &self,
        conn: &mut C,
        min_idle: Duration,
        start: &str,
    ) -> RedisResult<Claimed> {
        let reply: StreamAutoClaimReply = conn.xautoclaim_options(
            &self.stream,
            &self.group,
            &self.consumer,
            millis_ceil(min_idle),
            start,
            self.claim_options(),
        )?;
        Ok(reply.into())
    }
}

#[cfg(feature = "tokio")]
impl OrderStream {
    /// [`create_group`](OrderStream::create_group) on an async connection.
    pub async fn create_group_async<C: redis::aio::ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
    ) -> RedisResult<()> {
        use redis::AsyncCommands;
        match conn
            .xgroup_create_mkstream::<_, _, _, ()>(&self.stream, &self.group, "0")
            .await
        {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// [`read_pending`](OrderStream::read_pending) on an async connection.
    pub async fn read_pending_async<C: redis::aio::ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
    ) -> RedisResult<Vec<Delivery>> {
        use redis::AsyncCommands;
        let mut all = Vec::new();
        let mut after = "0-0".to_string();
        loop {
            let page: StreamReadReply = conn
                .xread_options(&[&self.stream], &[&after], &self.read_options(None))
                .await?;
            let page = deliveries(page);
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = last.id.clone();
            all.extend(page);
        }
    }

    /// [`read_new`](OrderStream::read_new) on an async connection (its response timeout, if
    /// any, must be longer than `block`).
    pub async fn read_new_async<C: redis::aio::ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        block: Option<Duration>,
    ) -> RedisResult<Vec<Delivery>> {
        use redis::AsyncCommands;
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[&self.stream], &[">"], &self.read_options(block))
            .await?;
        Ok(reply.map(deliveries).unwrap_or_default())
    }

    /// [`ack`](OrderStream::ack) on an async connection.
    pub async fn ack_async<C: redis::aio::ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        id: &str,
    ) -> RedisResult<bool> {
        use redis::AsyncCommands;
        conn.xack::<_, _, _, i64>(&self.stream, &self.group, &[id])
            .await
            .map(|n| n == 1)
    }

    /// [`claim`](OrderStream::claim) on an async connection.
    pub async fn claim_async<C: redis::aio::ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        min_idle: Duration,
        start: &str,
    ) -> RedisResult<Claimed> {
        use redis::AsyncCommands;
        let reply: StreamAutoClaimReply = conn
            .xautoclaim_options(
                &self.stream,
                &self.group,
                &self.consumer,
                millis_ceil(min_idle),
                start,
                self.claim_options(),
            )
            .await?;
        Ok(reply.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn events_from_fields() {
        let fields: HashMap<String, Value> = [
            ("type", "deduct"),
            ("sku", "{sku:42}"),
            ("quantity", "2"),
            ("remaining", "8"),
            ("id", "o-1"),
            ("fence", "99"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), bulk(v)))
        .collect();
        let e = OrderEvent::from_fields("1-2", &fields);
        assert_eq!(e.kind, "deduct");
        assert_eq!(
            (e.quantity, e.remaining, e.fence),
            (Some(2), Some(8), Some(99))
        );
        assert_eq!(e.order_key(), "o-1");
        assert_eq!(e.line_key(), ("{sku:42}".into(), "o-1".into()));
        assert_eq!((e.cart, e.item), (None, None));
        // A cart's items: one order, one line per stock.
        let mut item = fields.clone();
        item.insert("cart".into(), bulk("3"));
        item.insert("item".into(), bulk("2"));
        let e = OrderEvent::from_fields("1-5", &item);
        assert_eq!(
            (e.cart, e.item, e.order_key()),
            (Some(3), Some(2), "o-1".into())
        );
        item.insert("sku".into(), bulk("{sku:43}"));
        item.insert("item".into(), bulk("3"));
        let other = OrderEvent::from_fields("1-6", &item);
        assert_eq!(other.order_key(), e.order_key());
        assert_ne!(other.line_key(), e.line_key());
        // The expiry of the first item's hold (no cart, no item) finds its line.
        let expire: HashMap<String, Value> = [
            ("type", "expire"),
            ("sku", "{sku:42}"),
            ("id", "o-1"),
            ("quantity", "2"),
            ("remaining", "10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), bulk(v)))
        .collect();
        let x = OrderEvent::from_fields("2-0", &expire);
        assert_eq!((x.cart, x.item), (None, None));
        assert_eq!(x.line_key(), e.line_key());
        let bare: HashMap<String, Value> = [("type".to_string(), bulk("deduct"))].into();
        let e = OrderEvent::from_fields("1-3", &bare);
        assert_eq!(e.order_key(), "entry:1-3");
        assert_eq!(e.line_key(), (String::new(), "entry:1-3".into()));
        assert_eq!(e.quantity, None);
        let trimmed = Delivery::from(StreamId {
            id: "1-4".into(),
            ..StreamId::default()
        });
        assert_eq!(trimmed.event, None);
    }
}
