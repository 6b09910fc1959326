//! Builders for the options of the stock commands: [`DeductOptions`] (`ID`, `BUYER`, `HOLD`,
//! `FENCE`, `EVENTS`), [`CartOptions`] (`STOCK.CART`'s `BUYER`, `HOLD`, `FENCE`, `EVENTS`; its
//! `ID` is an argument of [`stock_cart`](crate::FenceCommands::stock_cart)),
//! [`StockSetOptions`] (`LIMIT`), [`AddOptions`] (`ID`), [`RefundOptions`] (`EVENTS`), and the
//! [`Events`] stream they share. Each is a [`ToRedisArgs`] that writes its options in the module's syntax, so it
//! also works with [`redis::cmd`] directly.
//!
//! Fields are private: an option the module gains later is a new builder method, not a
//! breaking change.

use std::time::Duration;

use redis::{RedisWrite, ToRedisArgs};

use crate::millis_ceil;

/// `EVENTS stream-key [MAXLEN [~|=] n]`: the stream a deduction or refund appends its order
/// event to, in the same atomic step (see the README's "From stock to orders").
///
/// ```
/// use redis_fence_client::Events;
/// let events = Events::to("{sku:42}:orders").maxlen_approx(100_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Events {
    stream: String,
    maxlen: Option<(bool, u64)>,
}

impl Events {
    /// Events appended to `stream` (a Redis Stream, created on the first event). On Redis
    /// Cluster the stream must hash to the stock's slot: give both the same hash tag.
    pub fn to(stream: impl Into<String>) -> Events {
        Events {
            stream: stream.into(),
            maxlen: None,
        }
    }

    /// `MAXLEN n`: the stream is trimmed to exactly `n` entries after the append, whether or
    /// not a consumer group has read them.
    pub fn maxlen(mut self, n: u64) -> Events {
        self.maxlen = Some((false, n));
        self
    }

    /// `MAXLEN ~ n`: trims whole stream nodes only (at least `n` entries stay), as
    /// `XADD … MAXLEN ~ n` does; cheaper than [`maxlen`](Events::maxlen).
    pub fn maxlen_approx(mut self, n: u64) -> Events {
        self.maxlen = Some((true, n));
        self
    }

    /// The stream key.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

impl ToRedisArgs for Events {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg(b"EVENTS");
        out.write_arg(self.stream.as_bytes());
        if let Some((approx, n)) = self.maxlen {
            out.write_arg(b"MAXLEN");
            out.write_arg(if approx { b"~" } else { b"=" });
            n.write_redis_args(out);
        }
    }
}

/// The options of `STOCK.DEDUCT`: `[ID request-id] [BUYER buyer-id] [HOLD ms] [FENCE token]
/// [EVENTS stream …]`.
///
/// ```
/// use std::time::Duration;
/// use redis_fence_client::{DeductOptions, Events};
/// # let token = 1_700_000_000_000_000u64;
/// let options = DeductOptions::new()
///     .id("order-1001")
///     .fence(token)
///     .events(Events::to("{sku:42}:orders"));
/// // An order placed with 15 minutes to pay (see `FenceCommands::stock_confirm`), for a buyer
/// // (counted against the stock's purchase limit, if it has one).
/// let place = DeductOptions::new()
///     .id("order-1002")
///     .buyer("user-7")
///     .hold(Duration::from_secs(15 * 60))
///     .events(Events::to("{sku:42}:orders"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeductOptions {
    id: Option<String>,
    buyer: Option<String>,
    hold: Option<u64>,
    fence: Option<u64>,
    events: Option<Events>,
}

impl DeductOptions {
    /// No options: a plain deduction, which a resend would apply twice.
    pub fn new() -> DeductOptions {
        DeductOptions::default()
    }

    /// `ID request-id`: makes the deduction idempotent. A call sent again with the same id
    /// (a retry after a lost reply) deducts nothing and replies the current quantity. Pass it
    /// on every deduction a client library might resend.
    pub fn id(mut self, request_id: impl Into<String>) -> DeductOptions {
        self.id = Some(request_id.into());
        self
    }

    /// `BUYER buyer-id`: who the deduction is for (see the main README's "Purchase limits per
    /// buyer"). The buyer is recorded in the request's ledger entry
    /// ([`RequestDetail::buyer`](crate::RequestDetail::buyer)) and holds the entry's units
    /// while it is deducted, held or confirmed
    /// ([`stock_buyer`](crate::FenceCommands::stock_buyer)); a refund or an expiry gives them
    /// back.
    ///
    /// On a stock with a limit per buyer ([`StockSetOptions::limit`],
    /// [`stock_limit`](crate::FenceCommands::stock_limit)), a deduction that would take the
    /// buyer past it is [`Deduct::Limit`](crate::Deduct::Limit) and changes nothing, and a
    /// deduction without `BUYER` is refused with an error reply. Without a limit the buyer is
    /// recorded all the same, so a limit set later counts what was bought.
    ///
    /// The server requires [`id`](DeductOptions::id) with a buyer (a buyer's units are counted
    /// from the ledger) and refuses `BUYER` without it, or an empty buyer id, with an error
    /// reply. A replay of the id counts nothing again, whatever buyer it names.
    pub fn buyer(mut self, buyer_id: impl Into<String>) -> DeductOptions {
        self.buyer = Some(buyer_id.into());
        self
    }

    /// `HOLD ms`: the deduction is **held** until a deadline, the server's clock plus `ttl`
    /// (sent in whole milliseconds, rounded up): an order placed and not yet paid. Confirm it
    /// with [`stock_confirm`](crate::FenceCommands::stock_confirm) before the deadline (the
    /// payment), or its units go back on sale by themselves at the deadline (the entry becomes
    /// [`EntryState::Expired`](crate::EntryState::Expired), and an `expire` event goes to the
    /// stock's `EVENTS` stream). [`refund`](crate::FenceCommands::stock_refund) cancels it
    /// before then.
    ///
    /// The server requires [`id`](DeductOptions::id) with a hold (a hold lives in the ledger
    /// under its request id) and refuses `HOLD` without it, a zero duration, or one above
    /// `fence.max-hold-ms` (7 days by default) with an error reply; nothing changes then. A
    /// replay of the id neither moves the deadline nor changes the entry's state.
    pub fn hold(self, ttl: Duration) -> DeductOptions {
        self.hold_ms(millis_ceil(ttl))
    }

    /// The buyer id [`buyer`](DeductOptions::buyer) set, if any.
    pub(crate) fn buyer_id(&self) -> Option<&str> {
        self.buyer.as_deref()
    }

    /// `HOLD ms`, in milliseconds: [`hold`](DeductOptions::hold) without the conversion.
    pub fn hold_ms(mut self, ms: u64) -> DeductOptions {
        self.hold = Some(ms);
        self
    }

    /// `FENCE token`: a lock's fencing token; a token below the highest this stock has
    /// accepted gets [`Deduct::Stale`](crate::Deduct::Stale) and changes nothing.
    pub fn fence(mut self, token: u64) -> DeductOptions {
        self.fence = Some(token);
        self
    }

    /// `EVENTS stream …`: a successful deduction also appends its `deduct` event (and a
    /// `soldout` event when it takes the stock to 0).
    pub fn events(mut self, events: Events) -> DeductOptions {
        self.events = Some(events);
        self
    }
}

impl ToRedisArgs for DeductOptions {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        if let Some(id) = &self.id {
            out.write_arg(b"ID");
            out.write_arg(id.as_bytes());
        }
        write_order_options(
            out,
            self.buyer.as_deref(),
            self.hold,
            self.fence,
            self.events.as_ref(),
        );
    }
}

/// `[BUYER buyer-id] [HOLD ms] [FENCE token] [EVENTS stream …]`, the options `STOCK.DEDUCT` and
/// `STOCK.CART` share, in that order.
fn write_order_options<W: ?Sized + RedisWrite>(
    out: &mut W,
    buyer: Option<&str>,
    hold: Option<u64>,
    fence: Option<u64>,
    events: Option<&Events>,
) {
    if let Some(buyer) = buyer {
        out.write_arg(b"BUYER");
        out.write_arg(buyer.as_bytes());
    }
    if let Some(ms) = hold {
        out.write_arg(b"HOLD");
        ms.write_redis_args(out);
    }
    if let Some(token) = fence {
        out.write_arg(b"FENCE");
        token.write_redis_args(out);
    }
    if let Some(events) = events {
        events.write_redis_args(out);
    }
}

/// The options of `STOCK.CART` after its `ID` (which
/// [`stock_cart`](crate::FenceCommands::stock_cart) takes as an argument, since a cart needs
/// one): `[BUYER buyer-id] [HOLD ms] [FENCE token] [EVENTS stream …]`, one of each for the
/// whole cart, meaning what they mean for [`DeductOptions`] on every item.
///
/// ```
/// use std::time::Duration;
/// use redis_fence_client::{CartOptions, Events};
/// # let token = 1_700_000_000_000_000u64;
/// // A cart held 15 minutes for payment, for a buyer, with its events in the sale's stream
/// // (on Redis Cluster the stream shares the stocks' hash tag).
/// let place = CartOptions::new()
///     .buyer("user-7")
///     .hold(Duration::from_secs(15 * 60))
///     .events(Events::to("{sale}:orders"));
/// let fenced = CartOptions::new().fence(token);
/// ```
///
/// Without options its [`ToRedisArgs`] writes nothing: `STOCK.CART` then deducts every item
/// for good (no hold), for no buyer, unfenced, with no events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CartOptions {
    buyer: Option<String>,
    hold: Option<u64>,
    fence: Option<u64>,
    events: Option<Events>,
}

impl CartOptions {
    /// No options.
    pub fn new() -> CartOptions {
        CartOptions::default()
    }

    /// `BUYER buyer-id`: the buyer of every item, counted against each stock's limit per buyer
    /// as [`DeductOptions::buyer`] is; an item that would take the buyer past its stock's limit
    /// refuses the whole cart ([`CartRefusal::Limit`](crate::CartRefusal::Limit)). On a stock
    /// with a limit, a cart without a buyer is refused with an error reply.
    pub fn buyer(mut self, buyer_id: impl Into<String>) -> CartOptions {
        self.buyer = Some(buyer_id.into());
        self
    }

    /// `HOLD ms`: every item held until one deadline, the server's clock plus `ttl` (whole
    /// milliseconds, rounded up): an order placed and not yet paid. Pay it with
    /// [`stock_cart_confirm`](crate::FenceCommands::stock_cart_confirm), cancel it with
    /// [`stock_cart_refund`](crate::FenceCommands::stock_cart_refund), or let every item's
    /// units come back together at the deadline. The server refuses a zero duration and one
    /// above `fence.max-hold-ms`.
    pub fn hold(self, ttl: Duration) -> CartOptions {
        self.hold_ms(millis_ceil(ttl))
    }

    /// `HOLD ms`, in milliseconds: [`hold`](CartOptions::hold) without the conversion.
    pub fn hold_ms(mut self, ms: u64) -> CartOptions {
        self.hold = Some(ms);
        self
    }

    /// `FENCE token`: a lock's fencing token, checked against every item's stock; a token below
    /// one stock's highest refuses the whole cart
    /// ([`CartRefusal::Stale`](crate::CartRefusal::Stale)), and a cart placed raises every
    /// stock's highest token to it.
    pub fn fence(mut self, token: u64) -> CartOptions {
        self.fence = Some(token);
        self
    }

    /// `EVENTS stream …`: a cart placed appends one `deduct` event per item (with `cart` and
    /// `item` fields) and a `soldout` event per stock it emptied, in the same step. On Redis
    /// Cluster the stream must share the stocks' hash slot.
    pub fn events(mut self, events: Events) -> CartOptions {
        self.events = Some(events);
        self
    }
}

impl ToRedisArgs for CartOptions {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        write_order_options(
            out,
            self.buyer.as_deref(),
            self.hold,
            self.fence,
            self.events.as_ref(),
        );
    }
}

/// The options of `STOCK.SET`: `[LIMIT per-buyer]`
/// ([`stock_set_with`](crate::FenceCommands::stock_set_with)).
///
/// Without [`limit`](StockSetOptions::limit) the stock keeps the limit it has (as it keeps its
/// fence and its TTL; a new stock has none), exactly as
/// [`stock_set`](crate::FenceCommands::stock_set) does.
///
/// ```
/// use redis_fence_client::StockSetOptions;
/// let one_each = StockSetOptions::new().limit(1); // at most 1 unit per buyer in this sale
/// let unlimited = StockSetOptions::new().no_limit(); // LIMIT 0: the new sale has no limit
/// ```
///
/// Named apart from `redis::SetOptions`, the `redis` crate's options of Redis's own `SET`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StockSetOptions {
    limit: Option<i64>,
}

impl StockSetOptions {
    /// No options: the stock keeps the limit per buyer it has.
    pub fn new() -> StockSetOptions {
        StockSetOptions::default()
    }

    /// `LIMIT per-buyer`: each buyer may hold at most `per_buyer` units of the new sale
    /// (deductions name their buyer with [`DeductOptions::buyer`]); 0 clears the limit. The
    /// server refuses a negative value with an error reply.
    pub fn limit(mut self, per_buyer: i64) -> StockSetOptions {
        self.limit = Some(per_buyer);
        self
    }

    /// `LIMIT 0`: the new sale has no limit per buyer, whatever limit the stock had.
    pub fn no_limit(self) -> StockSetOptions {
        self.limit(0)
    }
}

impl ToRedisArgs for StockSetOptions {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        if let Some(per_buyer) = self.limit {
            out.write_arg(b"LIMIT");
            per_buyer.write_redis_args(out);
        }
    }
}

/// The options of `STOCK.ADD`: `[ID restock-id]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddOptions {
    id: Option<String>,
}

impl AddOptions {
    /// No options: a plain restock, which a resend would add twice.
    pub fn new() -> AddOptions {
        AddOptions::default()
    }

    /// `ID restock-id`: makes the restock idempotent (a resend adds nothing). Restock ids live
    /// apart from request ids and are cleared by `STOCK.SET`.
    pub fn id(mut self, restock_id: impl Into<String>) -> AddOptions {
        self.id = Some(restock_id.into());
        self
    }
}

impl ToRedisArgs for AddOptions {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        if let Some(id) = &self.id {
            out.write_arg(b"ID");
            out.write_arg(id.as_bytes());
        }
    }
}

/// The options of `STOCK.REFUND`: `[EVENTS stream …]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RefundOptions {
    events: Option<Events>,
}

impl RefundOptions {
    /// No options.
    pub fn new() -> RefundOptions {
        RefundOptions::default()
    }

    /// `EVENTS stream …`: a refund that returns stock also appends a `refund` event.
    pub fn events(mut self, events: Events) -> RefundOptions {
        self.events = Some(events);
        self
    }
}

impl ToRedisArgs for RefundOptions {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        if let Some(events) = &self.events {
            events.write_redis_args(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use fence_core::args::{
        parse_deduct_options, parse_refund_options, parse_set_options, MaxLen, MAX_DEDUCT_WORDS,
        MAX_OPTION_WORDS,
    };
    use fence_core::error::FenceError;

    use super::*;

    fn words(args: &impl ToRedisArgs) -> Vec<Vec<u8>> {
        args.to_redis_args()
    }

    fn refs(words: &[Vec<u8>]) -> Vec<&[u8]> {
        words.iter().map(Vec::as_slice).collect()
    }

    /// What the builders write is what the module's own option parser reads back.
    #[test]
    fn the_module_parses_what_the_builders_write() {
        let none = words(&DeductOptions::new());
        assert!(none.is_empty());
        let all = words(
            &DeductOptions::new()
                .id("order 1")
                .fence(42)
                .events(Events::to("{s}:orders").maxlen_approx(1000)),
        );
        let parsed = parse_deduct_options(&refs(&all)).unwrap();
        assert_eq!(parsed.id, Some(&b"order 1"[..]));
        assert_eq!(parsed.fence, Some(42));
        assert_eq!(parsed.hold, None);
        let events = parsed.events.unwrap();
        assert_eq!(all[events.key_index], b"{s}:orders");
        assert_eq!(
            events.maxlen,
            Some(MaxLen {
                approx: true,
                len: 1000
            })
        );
        // HOLD, from a duration (rounded up to whole milliseconds) or from milliseconds.
        let held = words(
            &DeductOptions::new()
                .id("order-2")
                .hold(Duration::from_micros(900_000_001))
                .fence(7)
                .events(Events::to("{s}:orders")),
        );
        let parsed = parse_deduct_options(&refs(&held)).unwrap();
        assert_eq!(parsed.id, Some(&b"order-2"[..]));
        assert_eq!(parsed.hold, Some(900_001));
        assert_eq!(parsed.fence, Some(7));
        assert_eq!(held[parsed.events.unwrap().key_index], b"{s}:orders");
        let ms = words(&DeductOptions::new().id("o").hold_ms(1));
        assert_eq!(parse_deduct_options(&refs(&ms)).unwrap().hold, Some(1));
        // The module refuses what the server must refuse: no id, a zero hold.
        assert_eq!(
            parse_deduct_options(&refs(&words(
                &DeductOptions::new().hold(Duration::from_secs(1))
            ))),
            Err(FenceError::HoldNeedsId)
        );
        assert!(matches!(
            parse_deduct_options(&refs(&words(
                &DeductOptions::new().id("o").hold(Duration::ZERO)
            ))),
            Err(FenceError::HoldRange { .. })
        ));
        let exact = words(&RefundOptions::new().events(Events::to("s").maxlen(0)));
        let events = parse_refund_options(&refs(&exact)).unwrap().unwrap();
        assert_eq!(
            events.maxlen,
            Some(MaxLen {
                approx: false,
                len: 0
            })
        );
        assert_eq!(
            parse_refund_options(&refs(&words(&RefundOptions::new()))),
            Ok(None)
        );
        assert_eq!(
            words(&AddOptions::new().id("r-1")),
            vec![b"ID".to_vec(), b"r-1".to_vec()]
        );
        assert!(words(&AddOptions::new()).is_empty());
        assert_eq!(Events::to("x").stream(), "x");
    }

    /// `BUYER` and every other option together: the longest deduction, 13 words, which the
    /// module's parser takes whole, whatever their order on the wire.
    #[test]
    fn the_module_parses_buyer_and_the_longest_deduction() {
        let all = words(
            &DeductOptions::new()
                .events(Events::to("{s}:orders").maxlen_approx(1000))
                .fence(42)
                .hold_ms(900_000)
                .buyer("user 7")
                .id("order-1"),
        );
        assert_eq!(all.len(), MAX_DEDUCT_WORDS, "{all:?}");
        assert!(all.len() <= MAX_OPTION_WORDS);
        let parsed = parse_deduct_options(&refs(&all)).unwrap();
        assert_eq!(parsed.id, Some(&b"order-1"[..]));
        assert_eq!(
            parsed.buyer,
            Some(&b"user 7"[..]),
            "a buyer id with a space"
        );
        assert_eq!(parsed.hold, Some(900_000));
        assert_eq!(parsed.fence, Some(42));
        let events = parsed.events.unwrap();
        assert_eq!(all[events.key_index], b"{s}:orders");
        assert_eq!(
            events.maxlen,
            Some(MaxLen {
                approx: true,
                len: 1000
            })
        );
        // `MAXLEN =` is the other 13-word form.
        let exact = words(
            &DeductOptions::new()
                .id("o")
                .buyer("b")
                .hold_ms(1)
                .fence(1)
                .events(Events::to("s").maxlen(0)),
        );
        assert_eq!(exact.len(), MAX_DEDUCT_WORDS);
        assert_eq!(
            parse_deduct_options(&refs(&exact)).unwrap().buyer,
            Some(&b"b"[..])
        );
        // Just ID and BUYER.
        let simple = words(&DeductOptions::new().id("o-9").buyer("u-1"));
        assert_eq!(
            simple,
            [&b"ID"[..], b"o-9", b"BUYER", b"u-1"]
                .map(<[u8]>::to_vec)
                .to_vec()
        );
        let parsed = parse_deduct_options(&refs(&simple)).unwrap();
        assert_eq!(
            (parsed.id, parsed.buyer),
            (Some(&b"o-9"[..]), Some(&b"u-1"[..]))
        );
        // The module refuses what the server must refuse: a buyer without an id, an empty one.
        assert_eq!(
            parse_deduct_options(&refs(&words(&DeductOptions::new().buyer("u-1")))),
            Err(FenceError::BuyerNeedsId)
        );
        assert!(
            parse_deduct_options(&refs(&words(&DeductOptions::new().id("o").buyer("")))).is_err()
        );
    }

    /// `STOCK.SET`'s options as the module's parser reads them.
    #[test]
    fn the_module_parses_set_options() {
        assert!(words(&StockSetOptions::new()).is_empty());
        assert_eq!(
            parse_set_options(&refs(&words(&StockSetOptions::new()))),
            Ok(None)
        );
        let one = words(&StockSetOptions::new().limit(1));
        assert_eq!(one, vec![b"LIMIT".to_vec(), b"1".to_vec()]);
        assert_eq!(parse_set_options(&refs(&one)), Ok(Some(1)));
        assert_eq!(
            parse_set_options(&refs(&words(&StockSetOptions::new().limit(i64::MAX)))),
            Ok(Some(i64::MAX))
        );
        assert_eq!(
            parse_set_options(&refs(&words(&StockSetOptions::new().limit(5).no_limit()))),
            Ok(Some(0)),
            "no_limit is LIMIT 0, and the last call wins"
        );
        assert_eq!(
            parse_set_options(&refs(&words(&StockSetOptions::new().limit(-1)))),
            Err(FenceError::LimitRange)
        );
    }
}
