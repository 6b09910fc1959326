//! The typed replies of the fence commands, each a [`FromRedisValue`]: [`Deduct`], [`Cart`]
//! (with its [`CartRefusal`]), [`Confirm`], [`RequestState`], [`RequestDetail`] (with its
//! [`EntryState`]), [`LockStatus`], [`StockInfo`]; and [`PartialCart`], read from an error.
//!
//! Every conversion is pure (a [`Value`] in, a type out), so it reads the RESP2 and the RESP3
//! forms alike and is unit-tested without a server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fence_core::error::code;
use redis::{FromRedisValue, ParsingError, RedisResult, Value};

/// The outcome of `STOCK.DEDUCT` ([`FenceCommands::stock_deduct`](crate::FenceCommands::stock_deduct)).
///
/// As a [`FromRedisValue`], it reads an integer as [`Remaining`](Deduct::Remaining), nil as
/// [`SoldOut`](Deduct::SoldOut), a `STALE` error reply as [`Stale`](Deduct::Stale) and a
/// `LIMIT` error reply as [`Limit`](Deduct::Limit). A plain `query::<Deduct>()` turns every
/// error reply into an `Err` before the conversion runs, so a stale token or a buyer at their
/// limit comes back as an error there; the extension traits' `stock_deduct` reads the raw
/// reply and returns `Ok(Deduct::Stale)` or `Ok(Deduct::Limit { .. })`.
///
/// ```no_run
/// use redis_fence_client::{Deduct, DeductOptions, FenceCommands};
/// # fn main() -> redis::RedisResult<()> {
/// # let mut con = redis::Client::open("redis://127.0.0.1/")?.get_connection()?;
/// let order = DeductOptions::new().id("order-1003").buyer("user-7");
/// match con.stock_deduct("{sku:phone}", 1, &order)? {
///     Deduct::Remaining(left) => println!("sold, {left} left"),
///     Deduct::SoldOut => println!("sold out"),
///     Deduct::Limit { holds, limit, .. } => println!("you have {holds} of at most {limit}"),
///     Deduct::Stale => println!("a newer lock holder exists"),
/// }
/// # Ok(())
/// # }
/// ```
///
/// Not `Copy` since [`Limit`](Deduct::Limit) carries the buyer's id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Deduct {
    /// The quantity was deducted, or the request id was already in the ledger (a replay, which
    /// deducts nothing, whatever the entry's state: held, confirmed, refunded or expired); the
    /// quantity now available. The number does not tell a fresh deduction from a replay: ask
    /// [`stock_request_detail`](crate::FenceCommands::stock_request_detail) for the entry's
    /// state when it matters.
    Remaining(i64),
    /// Fewer than the quantity asked for are available, or the key does not exist; nothing
    /// changed. A request id refused this way may be retried later.
    SoldOut,
    /// The fencing token is below the highest one this stock has accepted: a newer lock holder
    /// exists, and this caller must stop. Nothing changed.
    Stale,
    /// The deduction would take the buyer ([`DeductOptions::buyer`](crate::DeductOptions::buyer))
    /// past the stock's limit per buyer (the error reply `LIMIT buyer <buyer> has <n> of at most
    /// <m>`, typed). Nothing changed, and the request id is not spent: the same order may be
    /// retried once a refund or an expiry (or a raised limit) makes room. The limit is checked
    /// before the quantity, so a buyer at their limit gets this even when the stock is short.
    Limit {
        /// The buyer. From [`stock_deduct`](crate::FenceCommands::stock_deduct), the buyer id
        /// the options named, exactly; read from the error reply alone (a plain
        /// [`FromRedisValue`] conversion), the id as the module prints it in error replies
        /// (printable ASCII kept, other bytes and `'` as `\xNN`, cut after 64 bytes with
        /// `...`).
        buyer: String,
        /// The units the buyer holds now in this sale (`<n>`): the quantities of their
        /// deducted, held and confirmed entries.
        holds: i64,
        /// The stock's limit per buyer (`<m>`).
        limit: i64,
    },
}

impl Deduct {
    /// The quantity available after a successful deduction (or replay).
    pub fn remaining(&self) -> Option<i64> {
        match self {
            Deduct::Remaining(n) => Some(*n),
            Deduct::SoldOut | Deduct::Stale | Deduct::Limit { .. } => None,
        }
    }

    /// The outcome an error reply stands for, if it is one of the two `STOCK.DEDUCT` turns
    /// into outcomes: `STALE`, and a `LIMIT` reply whose message reads as the module words it
    /// (any other `LIMIT` text stays an error, keeping its code).
    fn from_server_error(e: &redis::ServerError) -> Option<Deduct> {
        match e.code() {
            code::STALE => Some(Deduct::Stale),
            code::LIMIT => {
                let (buyer, holds, limit) = parse_limit_details(e.details()?)?;
                Some(Deduct::Limit {
                    buyer: buyer.to_owned(),
                    holds,
                    limit,
                })
            }
            _ => None,
        }
    }

    /// Reads a raw reply: a `STALE` error reply is [`Deduct::Stale`], a `LIMIT` one
    /// [`Deduct::Limit`], any other error reply an `Err` that keeps its code.
    pub(crate) fn from_reply(reply: Value) -> RedisResult<Deduct> {
        if let Value::ServerError(e) = &reply {
            if let Some(outcome) = Deduct::from_server_error(e) {
                return Ok(outcome);
            }
        }
        Ok(Deduct::from_redis_value(reply.extract_error()?)?)
    }

    /// [`from_reply`](Deduct::from_reply) for a deduction that named `buyer`: a
    /// [`Limit`](Deduct::Limit) carries that id exactly, not the error message's printable
    /// form of it.
    pub(crate) fn from_reply_for(reply: Value, buyer: Option<&str>) -> RedisResult<Deduct> {
        Ok(match (Deduct::from_reply(reply)?, buyer) {
            (Deduct::Limit { holds, limit, .. }, Some(buyer)) => Deduct::Limit {
                buyer: buyer.to_owned(),
                holds,
                limit,
            },
            (outcome, _) => outcome,
        })
    }
}

/// The details of a `LIMIT` error reply, `buyer <buyer> has <n> of at most <m>`: the buyer, n
/// and m. Read from the end, so a buyer id holding spaces (even ` has `) reads whole.
fn parse_limit_details(details: &str) -> Option<(&str, i64, i64)> {
    let (rest, limit) = details.rsplit_once(" of at most ")?;
    let (rest, holds) = rest.rsplit_once(" has ")?;
    let buyer = rest.strip_prefix("buyer ")?;
    Some((buyer, holds.parse().ok()?, limit.parse().ok()?))
}

impl FromRedisValue for Deduct {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        if let Value::ServerError(e) = &v {
            if let Some(outcome) = Deduct::from_server_error(e) {
                return Ok(outcome);
            }
        }
        match v {
            Value::Nil => Ok(Deduct::SoldOut),
            v => Ok(Deduct::Remaining(i64::from_redis_value(v)?)),
        }
    }
}

/// Why `STOCK.CART` refused a cart: the code of its `<CODE> <index> <key>` error reply, which
/// names the first item refused. Nothing changed in any of the cart's stocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CartRefusal {
    /// `NOKEY`: the item's key does not exist (a cart creates no stock).
    NoKey,
    /// `STALE`: the cart's fencing token ([`CartOptions::fence`](crate::CartOptions::fence)) is
    /// below the highest this item's stock has accepted: a newer lock holder exists.
    Stale,
    /// `LEDGERFULL`: the item's stock's request ledger holds `fence.max-ledger-entries` ids.
    LedgerFull,
    /// `LIMIT`: the item would take the buyer ([`CartOptions::buyer`](crate::CartOptions::buyer))
    /// past its stock's limit per buyer.
    Limit,
    /// `SOLDOUT`: the item's stock has fewer units available than the item's quantity.
    SoldOut,
}

impl CartRefusal {
    /// The error code the module sends (`NOKEY`, `STALE`, `LEDGERFULL`, `LIMIT`, `SOLDOUT`).
    pub fn code(self) -> &'static str {
        match self {
            CartRefusal::NoKey => code::NOKEY,
            CartRefusal::Stale => code::STALE,
            CartRefusal::LedgerFull => code::LEDGERFULL,
            CartRefusal::Limit => code::LIMIT,
            CartRefusal::SoldOut => code::SOLDOUT,
        }
    }

    /// The refusal an error code stands for (as the module sends it, upper case).
    pub fn from_code(code: &str) -> Option<CartRefusal> {
        [
            CartRefusal::NoKey,
            CartRefusal::Stale,
            CartRefusal::LedgerFull,
            CartRefusal::Limit,
            CartRefusal::SoldOut,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

impl std::fmt::Display for CartRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The outcome of `STOCK.CART` ([`FenceCommands::stock_cart`](crate::FenceCommands::stock_cart)):
/// every item deducted, or none.
///
/// As a [`FromRedisValue`], it reads an array of integers as [`Placed`](Cart::Placed) and the
/// error replies `NOKEY`, `STALE`, `LEDGERFULL`, `LIMIT` and `SOLDOUT` of the form
/// `<CODE> <index> <key>` as [`Refused`](Cart::Refused); any other error reply (bad arguments,
/// a key of another type, a request id only some of the stocks know: see [`PartialCart`]) stays
/// an error with its code. A plain `query::<Cart>()` turns every error reply into an `Err`
/// before the conversion runs; the extension traits' `stock_cart` reads the raw reply.
///
/// ```no_run
/// use redis_fence_client::{Cart, CartOptions, CartRefusal, FenceCommands};
/// # fn main() -> redis::RedisResult<()> {
/// # let mut con = redis::Client::open("redis://127.0.0.1/")?.get_connection()?;
/// let items = [("{sale}:phone", 1), ("{sale}:case", 1), ("{sale}:charger", 2)];
/// match con.stock_cart(&items, "order-77", &CartOptions::new().buyer("user-7"))? {
///     Cart::Placed(left) => println!("sold, {left:?} left"),
///     Cart::Refused { code: CartRefusal::SoldOut, key, .. } => println!("{key} is short"),
///     Cart::Refused { code, index, key } => println!("item {index} ({key}): {code}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cart {
    /// Every item was deducted, or the request id was already in every stock's ledger (a
    /// replay, which deducts nothing): the quantity now available in each stock, in the order
    /// of the items. A replay looks the same as a fresh cart; ask
    /// [`stock_request_detail`](crate::FenceCommands::stock_request_detail) of an item's stock
    /// for its entry when it matters.
    Placed(Vec<i64>),
    /// The cart was refused because of its item `index`; nothing changed in any stock, and
    /// the request id is not spent (the same cart may be sent again later).
    Refused {
        /// Why.
        code: CartRefusal,
        /// The item refused, counted from 1 as the reply counts: `items[index - 1]`.
        index: usize,
        /// Its key. From [`stock_cart`](crate::FenceCommands::stock_cart), the key of
        /// `items[index - 1]`, exactly; read from the error reply alone (a plain
        /// [`FromRedisValue`] conversion), the key as the module prints it in error replies
        /// (printable ASCII kept, spaces included, other bytes and `'` as `\xNN`, cut after 64
        /// bytes with `...`).
        key: String,
    },
}

impl Cart {
    /// The quantities available after a cart placed (or replayed), one per item.
    pub fn remaining(&self) -> Option<&[i64]> {
        match self {
            Cart::Placed(left) => Some(left),
            Cart::Refused { .. } => None,
        }
    }

    /// Whether every item was deducted (or the cart replayed): [`Cart::Placed`].
    pub fn is_placed(&self) -> bool {
        matches!(self, Cart::Placed(_))
    }

    /// The refusal an error reply stands for, if it reads `<CODE> <index> <key>` with one of
    /// the five cart codes (so `STALE fencing token …` or `LIMIT buyer …`, the replies of
    /// `STOCK.DEDUCT`, are not).
    fn from_server_error(e: &redis::ServerError) -> Option<Cart> {
        let code = CartRefusal::from_code(e.code())?;
        let (index, key) = parse_item(e.details()?)?;
        Some(Cart::Refused {
            code,
            index,
            key: key.to_owned(),
        })
    }

    /// Reads a raw reply: a cart refusal is [`Cart::Refused`], any other error reply an `Err`
    /// that keeps its code.
    pub(crate) fn from_reply(reply: Value) -> RedisResult<Cart> {
        if let Value::ServerError(e) = &reply {
            if let Some(outcome) = Cart::from_server_error(e) {
                return Ok(outcome);
            }
        }
        Ok(Cart::from_redis_value(reply.extract_error()?)?)
    }

    /// [`from_reply`](Cart::from_reply) for the cart `keys` (in order): a refusal carries the
    /// key of the item it names exactly, not the error message's printable form of it, and a
    /// placed cart has one quantity per item.
    pub(crate) fn from_reply_for<'k>(
        reply: Value,
        keys: impl ExactSizeIterator<Item = &'k str>,
    ) -> RedisResult<Cart> {
        let items = keys.len();
        match Cart::from_reply(reply)? {
            Cart::Placed(left) if left.len() != items => Err(ParsingError::from(format!(
                "STOCK.CART replied {} quantities for {items} items",
                left.len()
            ))
            .into()),
            Cart::Refused { code, index, key } => {
                let key = match index.checked_sub(1).and_then(|i| keys.into_iter().nth(i)) {
                    Some(exact) => exact.to_owned(),
                    None => key,
                };
                Ok(Cart::Refused { code, index, key })
            }
            placed => Ok(placed),
        }
    }
}

/// `<index> <key>`: an index from 1 (decimal digits only) and the rest, spaces included.
fn parse_item(s: &str) -> Option<(usize, &str)> {
    let (index, key) = s.split_once(' ')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((index.parse().ok().filter(|&i| i >= 1)?, key))
}

impl FromRedisValue for Cart {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        if let Value::ServerError(e) = &v {
            if let Some(outcome) = Cart::from_server_error(e) {
                return Ok(outcome);
            }
        }
        match v {
            // Not `Vec::<i64>::from_redis_value`, which reads nil as an empty list.
            Value::Array(items) => Ok(Cart::Placed(
                items
                    .into_iter()
                    .map(i64::from_redis_value)
                    .collect::<Result<_, _>>()?,
            )),
            other => Err(format!("STOCK.CART replied {other:?}").into()),
        }
    }
}

/// A cart command refused because its request id is in the ledger of some of the cart's
/// stocks only (`ERR request <id> is in the ledger of some of the cart's stocks only (item
/// <index> <key> has it)`): a `STOCK.CART` resent with other keys than the first time, or a
/// refund or confirmation of a cart one of whose stocks lost the entry (a `STOCK.SET` started a
/// new sale there, or the key was deleted). Nothing changed. This stays an error reply (an
/// `Err` from [`stock_cart`](crate::FenceCommands::stock_cart),
/// [`stock_cart_refund`](crate::FenceCommands::stock_cart_refund) and
/// [`stock_cart_confirm`](crate::FenceCommands::stock_cart_confirm)), with code `ERR`;
/// [`from_error`](PartialCart::from_error) reads it. Work on the items one key at a time then
/// ([`stock_refund`](crate::FenceCommands::stock_refund),
/// [`stock_confirm`](crate::FenceCommands::stock_confirm)).
///
/// ```no_run
/// use redis_fence_client::{FenceCommands, PartialCart};
/// # fn main() -> redis::RedisResult<()> {
/// # let mut con = redis::Client::open("redis://127.0.0.1/")?.get_connection()?;
/// let keys = ["{sale}:phone", "{sale}:case"];
/// match con.stock_cart_refund(&keys, "order-77") {
///     Ok(returned) => println!("returned {returned:?}"),
///     Err(e) => match PartialCart::from_error(&e) {
///         Some(p) => println!("only some stocks know the order; item {} does", p.index),
///         None => return Err(e),
///     },
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PartialCart {
    /// The first item whose stock knows the id, from 1 (`keys[index - 1]`).
    pub index: usize,
    /// Its key as the module prints it in error replies (printable ASCII kept, other bytes and
    /// `'` as `\xNN`, cut after 64 bytes with `...`): `index` names the exact key.
    pub key: String,
}

/// What a partial-cart error says between the request id and the item.
const PARTIAL_CART: &str = " is in the ledger of some of the cart's stocks only (item ";

impl PartialCart {
    /// The partial-cart refusal `e` is, if it is one. The request id is printed with `'`
    /// escaped, so the phrase after it is found unambiguously, whatever the id holds.
    pub fn from_error(e: &redis::RedisError) -> Option<PartialCart> {
        if e.code() != Some(code::ERR) {
            return None;
        }
        let details = e.detail()?.strip_prefix("request ")?;
        let (_, item) = details.split_once(PARTIAL_CART)?;
        let (index, key) = parse_item(item.strip_suffix(" has it)")?)?;
        Some(PartialCart {
            index,
            key: key.to_owned(),
        })
    }
}

/// The outcome of `STOCK.CONFIRM` ([`FenceCommands::stock_confirm`](crate::FenceCommands::stock_confirm)):
/// whether a payment came in time.
///
/// As a [`FromRedisValue`], it reads `1` as [`Confirmed`](Confirm::Confirmed), `0` as
/// [`Unknown`](Confirm::Unknown), and the `EXPIRED` and `REFUNDED` error replies as
/// [`Expired`](Confirm::Expired) and [`Refunded`](Confirm::Refunded), as [`Deduct`] reads
/// `STALE`. A plain `query::<Confirm>()` turns those error replies into an `Err` before the
/// conversion runs; the extension traits' `stock_confirm` reads the raw reply.
///
/// ```no_run
/// use redis_fence_client::{Confirm, FenceCommands};
/// # fn main() -> redis::RedisResult<()> {
/// # let mut con = redis::Client::open("redis://127.0.0.1/")?.get_connection()?;
/// match con.stock_confirm("{sku:42}", "order-1002")? {
///     Confirm::Confirmed => println!("paid in time: the order stands"),
///     Confirm::Expired { .. } | Confirm::Refunded => println!("too late: refund the money"),
///     Confirm::Unknown => println!("no such order in this stock"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Confirm {
    /// The entry is confirmed: by this call, or already (a resend), or it was deducted without
    /// a hold (its units are sold anyway). Its units stay sold.
    Confirmed,
    /// The request id is not in the ledger, or the key does not exist. Nothing changed.
    Unknown,
    /// The hold's deadline passed first (`EXPIRED request <id> expired at <ms>`): its units are
    /// back on sale, so a payment that arrives now must be refunded to the customer. `at` is
    /// the deadline in Unix milliseconds (`None` only if the reply's message does not end with
    /// it, which this module's replies always do). Nothing changed.
    Expired {
        /// The deadline that passed, Unix milliseconds.
        at: Option<u64>,
    },
    /// The request was refunded (`REFUNDED request <id> was refunded`): the order was
    /// cancelled, its units are back on sale. Nothing changed.
    Refunded,
}

impl Confirm {
    /// Whether the order stands (its units are sold): [`Confirm::Confirmed`].
    pub fn is_confirmed(self) -> bool {
        self == Confirm::Confirmed
    }

    /// The variant an error reply stands for, if it is one of the two `STOCK.CONFIRM` turns
    /// into outcomes.
    fn from_server_error(e: &redis::ServerError) -> Option<Confirm> {
        match e.code() {
            code::EXPIRED => Some(Confirm::Expired {
                at: e
                    .details()
                    .and_then(|d| d.rsplit(' ').next())
                    .and_then(|at| at.parse().ok()),
            }),
            code::REFUNDED => Some(Confirm::Refunded),
            _ => None,
        }
    }

    /// Reads a raw reply: the `EXPIRED` and `REFUNDED` error replies are outcomes, any other
    /// error reply an `Err` that keeps its code.
    pub(crate) fn from_reply(reply: Value) -> RedisResult<Confirm> {
        if let Value::ServerError(e) = &reply {
            if let Some(outcome) = Confirm::from_server_error(e) {
                return Ok(outcome);
            }
        }
        Ok(Confirm::from_redis_value(reply.extract_error()?)?)
    }
}

impl FromRedisValue for Confirm {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        if let Value::ServerError(e) = &v {
            if let Some(outcome) = Confirm::from_server_error(e) {
                return Ok(outcome);
            }
        }
        match i64::from_redis_value(v)? {
            1 => Ok(Confirm::Confirmed),
            0 => Ok(Confirm::Unknown),
            n => Err(format!("STOCK.CONFIRM replied {n}").into()),
        }
    }
}

/// What a stock's ledger knows of one request id (`STOCK.REQUEST` without `DETAIL`): whether
/// it still holds units. [`RequestDetail`] (`STOCK.REQUEST … DETAIL`) tells the five states
/// apart.
///
/// Renamed in this version: `Deducted` was called `Held`, which now names a hold with a
/// deadline ([`EntryState::Held`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// The request's units (this quantity, at least 1) are taken from the stock: deducted
    /// without a hold, held until a deadline, or confirmed. `STOCK.REQUEST` does not say
    /// which; [`stock_request_detail`](crate::FenceCommands::stock_request_detail) does.
    Deducted(i64),
    /// The request holds nothing any more: it was refunded, or its hold expired (its units came
    /// back at the deadline). Its id stays spent: a replay deducts nothing.
    Refunded,
    /// The id is not in the ledger (never deducted, or refused for lack of stock), or the key
    /// does not exist.
    Unknown,
}

impl RequestState {
    /// The units the request holds: its quantity while [`Deducted`](RequestState::Deducted), 0
    /// otherwise.
    pub fn units(self) -> i64 {
        match self {
            RequestState::Deducted(n) => n,
            RequestState::Refunded | RequestState::Unknown => 0,
        }
    }
}

impl FromRedisValue for RequestState {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(match Option::<i64>::from_redis_value(v)? {
            None => RequestState::Unknown,
            Some(0) => RequestState::Refunded,
            Some(n) => RequestState::Deducted(n),
        })
    }
}

/// The state of a request-ledger entry, as `STOCK.REQUEST … DETAIL` names it (the main
/// README's "Stocks" table). `Refunded` and `Expired` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// Deducted without a hold (`STOCK.DEDUCT … ID`): sold.
    Deducted,
    /// Deducted with a hold (`STOCK.DEDUCT … ID … HOLD ms`) and neither confirmed, refunded nor
    /// expired yet: sold until its deadline ([`RequestDetail::deadline`]).
    Held,
    /// A hold confirmed before its deadline (`STOCK.CONFIRM`): sold.
    Confirmed,
    /// Refunded (`STOCK.REFUND`): back on sale.
    Refunded,
    /// A hold whose deadline passed unconfirmed: its units went back on sale by themselves.
    Expired,
}

impl EntryState {
    /// The state's name in the module's replies and events.
    pub fn name(self) -> &'static str {
        match self {
            EntryState::Deducted => "deducted",
            EntryState::Held => "held",
            EntryState::Confirmed => "confirmed",
            EntryState::Refunded => "refunded",
            EntryState::Expired => "expired",
        }
    }

    /// The state named `name` (lower case, as the module sends it).
    pub fn from_name(name: &str) -> Option<EntryState> {
        [
            EntryState::Deducted,
            EntryState::Held,
            EntryState::Confirmed,
            EntryState::Refunded,
            EntryState::Expired,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Whether the entry's units are taken from the stock (deducted, held or confirmed), not
    /// given back (refunded or expired).
    pub fn holds_units(self) -> bool {
        matches!(
            self,
            EntryState::Deducted | EntryState::Held | EntryState::Confirmed
        )
    }
}

impl std::fmt::Display for EntryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One request-ledger entry in full (`STOCK.REQUEST key id DETAIL`; an unknown id or a missing
/// key replies nil: `Option<RequestDetail>`). Reads the RESP3 map and the RESP2 flat array.
///
/// Not `Copy` since it carries the entry's [`buyer`](RequestDetail::buyer).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RequestDetail {
    /// Where the entry stands. A hold whose deadline has passed reads
    /// [`EntryState::Expired`], even before the server has applied the expiry.
    pub state: EntryState,
    /// What the deduction took, kept after a refund or an expiry.
    pub quantity: i64,
    /// The deadline of a [`Held`](EntryState::Held) entry, Unix milliseconds by the server's
    /// clock; `None` in every other state.
    pub deadline: Option<u64>,
    /// The buyer the entry was made for (`STOCK.DEDUCT … BUYER`,
    /// [`DeductOptions::buyer`](crate::DeductOptions::buyer)), in every state; `None` for an
    /// entry made without `BUYER`, and from a module without purchase limits.
    pub buyer: Option<String>,
}

impl RequestDetail {
    /// The units the entry holds: [`quantity`](RequestDetail::quantity) while it is deducted,
    /// held or confirmed, 0 once refunded or expired.
    pub fn units(&self) -> i64 {
        if self.state.holds_units() {
            self.quantity
        } else {
            0
        }
    }

    /// [`deadline`](RequestDetail::deadline) as a [`SystemTime`].
    pub fn deadline_time(&self) -> Option<SystemTime> {
        self.deadline
            .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
    }
}

impl FromRedisValue for RequestDetail {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (mut state, mut quantity, mut deadline, mut buyer) = (None, None, None, None);
        for (name, value) in field_pairs(v, "STOCK.REQUEST … DETAIL")? {
            match name.as_str() {
                "state" => {
                    let name = String::from_redis_value(value)?;
                    state = Some(EntryState::from_name(&name).ok_or_else(|| {
                        ParsingError::from(format!("STOCK.REQUEST replied state {name:?}"))
                    })?);
                }
                "quantity" => quantity = Some(i64::from_redis_value(value)?),
                "deadline" => deadline = Some(u64::from_redis_value(value)?),
                "buyer" => buyer = Some(String::from_redis_value(value)?),
                _ => {} // a field added by a later module version
            }
        }
        match (state, quantity) {
            (Some(state), Some(quantity)) => Ok(RequestDetail {
                state,
                quantity,
                deadline: deadline.filter(|_| state == EntryState::Held),
                buyer,
            }),
            _ => Err("STOCK.REQUEST … DETAIL replied without state or quantity".into()),
        }
    }
}

/// What `LOCK.STATUS` reports of a held lock (a free lock replies nil: `Option<LockStatus>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatus {
    /// The holder.
    pub owner: String,
    /// The holder's fencing token.
    pub token: u64,
    /// The time left before the lock expires, as the server counts it (whole milliseconds);
    /// zero for a lock without expiry (after a `PERSIST`).
    pub ttl: Duration,
    /// How many clients wait for the lock in `LOCK.ACQUIRE … WAIT`.
    pub waiters: u64,
}

impl FromRedisValue for LockStatus {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (mut owner, mut token, mut ttl, mut waiters) = (None, None, None, 0);
        for (name, value) in field_pairs(v, "LOCK.STATUS")? {
            match name.as_str() {
                "owner" => owner = Some(String::from_redis_value(value)?),
                "token" => token = Some(u64::from_redis_value(value)?),
                "ttl" => ttl = Some(i64::from_redis_value(value)?),
                "waiters" => waiters = u64::from_redis_value(value)?,
                _ => {} // a field added by a later module version
            }
        }
        match (owner, token, ttl) {
            (Some(owner), Some(token), Some(ttl)) => Ok(LockStatus {
                owner,
                token,
                ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
                waiters,
            }),
            _ => Err("LOCK.STATUS replied without owner, token or ttl".into()),
        }
    }
}

/// What `STOCK.INFO` reports of a stock (a missing key replies nil: `Option<StockInfo>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StockInfo {
    /// The quantity available.
    pub available: i64,
    /// The ledger's figures; `None` for a plain integer string, which has no ledger.
    pub ledger: Option<LedgerInfo>,
}

/// The ledger part of [`StockInfo`] (a stock created by `STOCK.SET` or `STOCK.ADD`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerInfo {
    /// The total deducted and not refunded since the sale started.
    pub deducted: i64,
    /// Request ids in the ledger, refunded ones included.
    pub requests: u64,
    /// The highest fencing token accepted, 0 for none.
    pub fence: u64,
    /// Restock ids (`STOCK.ADD … ID`) in the restock ledger.
    pub restocks: u64,
    /// Entries held now (`STOCK.DEDUCT … HOLD`, not yet confirmed, refunded or expired). Holds
    /// whose deadline has passed count as returned, even before the server applies the expiry.
    /// 0 from a module without holds (which does not send the field).
    pub held: u64,
    /// The units of those held entries (part of [`deducted`](LedgerInfo::deducted)); 0 from a
    /// module without holds.
    pub held_units: i64,
    /// The earliest deadline of a held entry, Unix milliseconds; `None` when nothing is held
    /// (the module sends 0 then) or from a module without holds.
    pub next_deadline: Option<u64>,
    /// The stock's limit per buyer (`STOCK.SET … LIMIT`, `STOCK.LIMIT`); `None` when it has
    /// none (the module sends 0 then) or from a module without purchase limits.
    pub limit: Option<i64>,
    /// The buyers recorded in this sale (`STOCK.DEDUCT … BUYER`), those holding nothing now
    /// included; 0 from a module without purchase limits.
    pub buyers: u64,
}

impl FromRedisValue for StockInfo {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let mut available = None;
        let (mut deducted, mut requests, mut fence, mut restocks) = (None, None, None, None);
        let (mut held, mut held_units, mut next_deadline) = (None, None, None);
        let (mut limit, mut buyers) = (None, None);
        for (name, value) in field_pairs(v, "STOCK.INFO")? {
            match name.as_str() {
                "available" => available = Some(i64::from_redis_value(value)?),
                "deducted" => deducted = Some(i64::from_redis_value(value)?),
                "requests" => requests = Some(u64::from_redis_value(value)?),
                "fence" => fence = Some(u64::from_redis_value(value)?),
                "restocks" => restocks = Some(u64::from_redis_value(value)?),
                "held" => held = Some(u64::from_redis_value(value)?),
                "held-units" => held_units = Some(i64::from_redis_value(value)?),
                "next-deadline" => next_deadline = Some(u64::from_redis_value(value)?),
                "limit" => limit = Some(i64::from_redis_value(value)?),
                "buyers" => buyers = Some(u64::from_redis_value(value)?),
                _ => {} // a field added by a later module version
            }
        }
        let available = available.ok_or("STOCK.INFO replied without available")?;
        let ledger = match (deducted, requests, fence) {
            (Some(deducted), Some(requests), Some(fence)) => Some(LedgerInfo {
                deducted,
                requests,
                fence,
                // Fields a module sends from a later version on: absent from an older one,
                // which has nothing of the kind to report.
                restocks: restocks.unwrap_or(0),
                held: held.unwrap_or(0),
                held_units: held_units.unwrap_or(0),
                next_deadline: next_deadline.filter(|&ms| ms != 0),
                limit: limit.filter(|&n| n != 0),
                buyers: buyers.unwrap_or(0),
            }),
            (None, None, None) => None,
            _ => return Err("STOCK.INFO replied part of the ledger's fields".into()),
        };
        Ok(StockInfo { available, ledger })
    }
}

/// The field/value pairs of a RESP3 map or a RESP2 flat array, names as text.
fn field_pairs(v: Value, command: &str) -> Result<Vec<(String, Value)>, ParsingError> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        other => return Err(format!("{command} replied {other:?}").into()),
    };
    pairs
        .into_iter()
        .map(|(k, v)| Ok((String::from_redis_value(k)?, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// An error reply as the parser reads it off the wire.
    fn error_reply(text: &str) -> Value {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).expect("an error reply")
    }

    fn stale_reply() -> Value {
        error_reply(&fence_core::error::stale(1, 2))
    }

    #[test]
    fn deduct_replies() {
        assert_eq!(
            Deduct::from_redis_value(Value::Int(7)).unwrap(),
            Deduct::Remaining(7)
        );
        assert_eq!(
            Deduct::from_redis_value(Value::Nil).unwrap(),
            Deduct::SoldOut
        );
        assert_eq!(
            Deduct::from_redis_value(stale_reply()).unwrap(),
            Deduct::Stale
        );
        assert_eq!(Deduct::from_reply(stale_reply()).unwrap(), Deduct::Stale);
        assert_eq!(
            Deduct::from_reply(Value::Int(0)).unwrap(),
            Deduct::Remaining(0)
        );
        let e = Deduct::from_reply(error_reply(fence_core::error::TOKEN_FROM_FUTURE)).unwrap_err();
        assert_eq!(e.code(), Some(code::ERR), "{e}");
        assert!(Deduct::from_redis_value(bulk("x")).is_err());
        assert_eq!(Deduct::Remaining(3).remaining(), Some(3));
        assert_eq!(Deduct::Stale.remaining(), None);
    }

    #[test]
    fn limit_replies() {
        let reply =
            |buyer: &str, has, max| error_reply(&fence_core::error::limit_reached(buyer, has, max));
        let limit = |buyer: &str, holds, limit| Deduct::Limit {
            buyer: buyer.into(),
            holds,
            limit,
        };
        for (buyer, has, max) in [
            ("user-7", 1, 1),
            // Buyer ids with spaces, even ones that read like the message: n and m are read
            // from the end.
            ("user 7", 2, 3),
            (" has 1 of at most 2 ", 0, 9_223_372_036_854_775_807),
            ("buyer x has 5", 5, 5),
        ] {
            let r = reply(buyer, has, max);
            assert_eq!(
                Deduct::from_redis_value(r.clone()).unwrap(),
                limit(buyer, has, max),
                "{r:?}"
            );
            assert_eq!(
                Deduct::from_reply(r.clone()).unwrap(),
                limit(buyer, has, max),
                "{r:?}"
            );
            assert_eq!(limit(buyer, has, max).remaining(), None);
        }
        // `from_reply_for`: the buyer the options named, not the message's printable form.
        let escaped = reply(&fence_core::error::printable(b"O'Brien"), 1, 1);
        assert_eq!(
            Deduct::from_reply(escaped.clone()).unwrap(),
            limit("O\\x27Brien", 1, 1)
        );
        assert_eq!(
            Deduct::from_reply_for(escaped, Some("O'Brien")).unwrap(),
            limit("O'Brien", 1, 1)
        );
        assert_eq!(
            Deduct::from_reply_for(Value::Int(4), Some("u")).unwrap(),
            Deduct::Remaining(4)
        );
        assert_eq!(
            Deduct::from_reply_for(stale_reply(), Some("u")).unwrap(),
            Deduct::Stale
        );
        // A LIMIT reply this version cannot read stays an error, with its code.
        for text in [
            "LIMIT",
            "LIMIT buyer u has x of at most 1",
            "LIMIT buyer u has 1 of at most",
            "LIMIT someone has 1 of at most 2",
        ] {
            let e = Deduct::from_reply(error_reply(text)).unwrap_err();
            assert_eq!(e.code(), Some(code::LIMIT), "{text}: {e}");
            assert!(
                Deduct::from_redis_value(error_reply(text)).is_err(),
                "{text}"
            );
        }
        // The other refusals of the limit step are plain errors.
        for text in [
            fence_core::error::buyer_required(2),
            fence_core::error::buyers_full(10),
            fence_core::error::BUYER_NEEDS_ID.to_string(),
        ] {
            let e = Deduct::from_reply(error_reply(&text)).unwrap_err();
            assert_eq!(e.code(), Some(code::ERR), "{text}: {e}");
        }
    }

    /// A cart refusal as the module words it.
    fn cart_reply(code: fence_core::error::CartCode, index: usize, key: &str) -> Value {
        error_reply(
            &fence_core::error::FenceError::CartItem {
                code,
                index,
                key: key.into(),
            }
            .message(),
        )
    }

    #[test]
    fn cart_replies() {
        use fence_core::error::CartCode;
        let placed = Value::Array(vec![Value::Int(99), Value::Int(499), Value::Int(0)]);
        assert_eq!(
            Cart::from_redis_value(placed.clone()).unwrap(),
            Cart::Placed(vec![99, 499, 0])
        );
        let cart = Cart::from_reply(placed.clone()).unwrap();
        assert_eq!(cart.remaining(), Some(&[99, 499, 0][..]));
        assert!(cart.is_placed());
        // A placed cart has one quantity per item.
        assert!(Cart::from_reply_for(placed.clone(), ["a", "b", "c"].into_iter()).is_ok());
        assert!(Cart::from_reply_for(placed, ["a", "b"].into_iter()).is_err());
        let refused = |code, index, key: &str| Cart::Refused {
            code,
            index,
            key: key.into(),
        };
        for (core, code) in [
            (CartCode::NoKey, CartRefusal::NoKey),
            (CartCode::Stale, CartRefusal::Stale),
            (CartCode::LedgerFull, CartRefusal::LedgerFull),
            (CartCode::Limit, CartRefusal::Limit),
            (CartCode::SoldOut, CartRefusal::SoldOut),
        ] {
            assert_eq!(code.code(), core.as_str());
            assert_eq!(CartRefusal::from_code(core.as_str()), Some(code));
            assert_eq!(code.to_string(), core.as_str());
            // Keys with spaces, even ones that read like an index: everything after the index.
            for (index, key) in [
                (1, "{s}:phone"),
                (2, "{s}:a case with spaces"),
                (256, "3 {s}:x"),
                (7, ""),
            ] {
                let r = cart_reply(core, index, key);
                assert_eq!(
                    Cart::from_redis_value(r.clone()).unwrap(),
                    refused(code, index, key),
                    "{r:?}"
                );
                assert_eq!(
                    Cart::from_reply(r.clone()).unwrap(),
                    refused(code, index, key),
                    "{r:?}"
                );
                assert_eq!(refused(code, index, key).remaining(), None);
                assert!(!refused(code, index, key).is_placed());
            }
        }
        // `from_reply_for`: the key given, not the message's printable form of it; an index
        // the items do not have keeps the message's.
        let printed = fence_core::error::printable(b"{s}:O'Brien\n");
        let escaped = cart_reply(CartCode::SoldOut, 2, &printed);
        assert_eq!(
            Cart::from_reply(escaped.clone()).unwrap(),
            refused(CartRefusal::SoldOut, 2, "{s}:O\\x27Brien\\x0a")
        );
        assert_eq!(
            Cart::from_reply_for(escaped.clone(), ["{s}:a", "{s}:O'Brien\n"].into_iter()).unwrap(),
            refused(CartRefusal::SoldOut, 2, "{s}:O'Brien\n")
        );
        assert_eq!(
            Cart::from_reply_for(escaped, ["{s}:a"].into_iter()).unwrap(),
            refused(CartRefusal::SoldOut, 2, &printed)
        );
        // STOCK.DEDUCT's STALE and LIMIT replies, other codes and unreadable refusals stay
        // errors with their code.
        for (text, code) in [
            (fence_core::error::stale(1, 2), code::STALE),
            (fence_core::error::limit_reached("u", 1, 1), code::LIMIT),
            ("SOLDOUT".to_string(), code::SOLDOUT),
            ("SOLDOUT 2".to_string(), code::SOLDOUT),
            ("SOLDOUT x {s}:k".to_string(), code::SOLDOUT),
            ("SOLDOUT 0 {s}:k".to_string(), code::SOLDOUT),
            ("NOKEY +1 {s}:k".to_string(), code::NOKEY),
            ("NOKEY -1 {s}:k".to_string(), code::NOKEY),
            ("soldout 1 {s}:k".to_string(), "soldout"),
            (fence_core::error::WRONGTYPE.to_string(), code::WRONGTYPE),
            (fence_core::error::NUMKEYS_RANGE.to_string(), code::ERR),
            (fence_core::error::partial_cart("o", 2, "k"), code::ERR),
        ] {
            let e = Cart::from_reply(error_reply(&text)).unwrap_err();
            assert_eq!(e.code(), Some(code), "{text}: {e}");
            assert!(
                Cart::from_redis_value(error_reply(&text)).is_err(),
                "{text}"
            );
        }
        assert!(Cart::from_redis_value(Value::Nil).is_err());
        assert!(Cart::from_redis_value(Value::Array(vec![bulk("x")])).is_err());
    }

    #[test]
    fn partial_cart_errors() {
        let error = |text: &str| Cart::from_reply(error_reply(text)).unwrap_err();
        for (id, index, key) in [
            ("order-77", 2, "{s}:case"),
            // Ids and keys with spaces and with the message's own words: the id is printed
            // with its `'` escaped, so the phrase after it is found, and the key is the rest.
            (
                "order 77 is in the ledger of some of the cart's stocks only (item 1 x has it)",
                3,
                "{s}:a (item 9 y has it)",
            ),
            ("o", 256, ""),
        ] {
            let printed = fence_core::error::printable(id.as_bytes());
            let e = error(&fence_core::error::partial_cart(&printed, index, key));
            assert_eq!(
                PartialCart::from_error(&e),
                Some(PartialCart {
                    index,
                    key: key.into()
                }),
                "{e}"
            );
        }
        for text in [
            fence_core::error::NUMKEYS_RANGE.to_string(),
            fence_core::error::repeated_key("k"),
            "ERR request o is in the ledger of some of the cart's stocks only (item x k has it)".into(),
            "ERR request o is in the ledger of some of the cart's stocks only (item 1 k".into(),
            "SOLDOUT request o is in the ledger of some of the cart's stocks only (item 1 k has it)".into(),
        ] {
            assert_eq!(PartialCart::from_error(&error(&text)), None, "{text}");
        }
    }

    #[test]
    fn request_states() {
        let r = |v| RequestState::from_redis_value(v).unwrap();
        assert_eq!(r(Value::Nil), RequestState::Unknown);
        assert_eq!(r(Value::Int(0)), RequestState::Refunded);
        assert_eq!(r(Value::Int(4)), RequestState::Deducted(4));
        assert_eq!(RequestState::Deducted(4).units(), 4);
        assert_eq!(RequestState::Refunded.units(), 0);
        assert_eq!(RequestState::Unknown.units(), 0);
    }

    #[test]
    fn confirm_replies() {
        let expired = error_reply(&fence_core::error::expired("order 1", 1_764_000_000_123));
        let refunded = error_reply(&fence_core::error::refunded("order-2"));
        for (reply, outcome) in [
            (Value::Int(1), Confirm::Confirmed),
            (Value::Int(0), Confirm::Unknown),
            (
                expired,
                Confirm::Expired {
                    at: Some(1_764_000_000_123),
                },
            ),
            (refunded, Confirm::Refunded),
            // An EXPIRED reply without a readable deadline is still an expiry.
            (
                error_reply("EXPIRED request x"),
                Confirm::Expired { at: None },
            ),
            (error_reply("EXPIRED"), Confirm::Expired { at: None }),
        ] {
            assert_eq!(
                Confirm::from_redis_value(reply.clone()).unwrap(),
                outcome,
                "{reply:?}"
            );
            assert_eq!(
                Confirm::from_reply(reply.clone()).unwrap(),
                outcome,
                "{reply:?}"
            );
        }
        assert!(Confirm::Confirmed.is_confirmed());
        assert!(!Confirm::Expired { at: None }.is_confirmed());
        // Other error replies stay errors and keep their code.
        let e = Confirm::from_reply(error_reply(fence_core::error::NEEDS_STOCK)).unwrap_err();
        assert_eq!(e.code(), Some(code::ERR), "{e}");
        let e = Confirm::from_reply(error_reply(fence_core::error::WRONGTYPE)).unwrap_err();
        assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
        assert!(Confirm::from_reply(stale_reply()).is_err());
        assert!(Confirm::from_redis_value(Value::Int(2)).is_err());
        assert!(Confirm::from_redis_value(Value::Nil).is_err());
    }

    #[test]
    fn request_detail_resp2_and_resp3() {
        let held = RequestDetail {
            state: EntryState::Held,
            quantity: 2,
            deadline: Some(1_764_000_900_000),
            buyer: None,
        };
        let flat = Value::Array(vec![
            bulk("state"),
            bulk("held"),
            bulk("quantity"),
            Value::Int(2),
            bulk("deadline"),
            Value::Int(1_764_000_900_000),
            bulk("later-field"),
            Value::Int(1),
        ]);
        assert_eq!(RequestDetail::from_redis_value(flat).unwrap(), held);
        let map = Value::Map(vec![
            (bulk("state"), Value::SimpleString("held".into())),
            (bulk("quantity"), Value::Int(2)),
            (bulk("deadline"), Value::Int(1_764_000_900_000)),
        ]);
        assert_eq!(RequestDetail::from_redis_value(map).unwrap(), held);
        assert_eq!(held.units(), 2);
        assert_eq!(
            held.deadline_time(),
            Some(UNIX_EPOCH + Duration::from_millis(1_764_000_900_000))
        );
        for state in [
            EntryState::Deducted,
            EntryState::Confirmed,
            EntryState::Refunded,
            EntryState::Expired,
        ] {
            let map = Value::Map(vec![
                (bulk("state"), bulk(state.name())),
                (bulk("quantity"), Value::Int(3)),
            ]);
            let detail = RequestDetail::from_redis_value(map).unwrap();
            assert_eq!(
                (detail.state, detail.quantity, detail.deadline),
                (state, 3, None)
            );
            assert_eq!(detail.units(), if state.holds_units() { 3 } else { 0 });
            assert_eq!(detail.deadline_time(), None);
            assert_eq!(EntryState::from_name(&state.to_string()), Some(state));
        }
        assert_eq!(
            Option::<RequestDetail>::from_redis_value(Value::Nil).unwrap(),
            None
        );
        let unknown = Value::Array(vec![
            bulk("state"),
            bulk("pending"),
            bulk("quantity"),
            Value::Int(1),
        ]);
        assert!(RequestDetail::from_redis_value(unknown).is_err());
        assert!(
            RequestDetail::from_redis_value(Value::Array(vec![bulk("state"), bulk("held")]))
                .is_err()
        );
        assert!(RequestDetail::from_redis_value(Value::Int(1)).is_err());
        assert_eq!(EntryState::from_name("HELD"), None);
        // `buyer`, for an entry made with BUYER, in any state, RESP2 and RESP3.
        let flat = Value::Array(vec![
            bulk("state"),
            bulk("refunded"),
            bulk("quantity"),
            Value::Int(1),
            bulk("buyer"),
            bulk("user 7"),
        ]);
        let map = Value::Map(vec![
            (bulk("state"), Value::SimpleString("refunded".into())),
            (bulk("quantity"), Value::Int(1)),
            (bulk("buyer"), bulk("user 7")),
        ]);
        for v in [flat, map] {
            let detail = RequestDetail::from_redis_value(v).unwrap();
            assert_eq!(
                (detail.state, detail.quantity, detail.buyer.as_deref()),
                (EntryState::Refunded, 1, Some("user 7"))
            );
        }
    }

    #[test]
    fn lock_status_resp2_and_resp3() {
        let expected = LockStatus {
            owner: "w1".into(),
            token: 42,
            ttl: Duration::from_millis(900),
            waiters: 2,
        };
        let flat = Value::Array(vec![
            bulk("owner"),
            bulk("w1"),
            bulk("token"),
            Value::Int(42),
            bulk("ttl"),
            Value::Int(900),
            bulk("waiters"),
            Value::Int(2),
            bulk("later-field"),
            Value::Int(1),
        ]);
        assert_eq!(LockStatus::from_redis_value(flat).unwrap(), expected);
        let map = Value::Map(vec![
            (bulk("owner"), bulk("w1")),
            (bulk("token"), Value::Int(42)),
            (bulk("ttl"), Value::Int(900)),
            (bulk("waiters"), Value::Int(2)),
        ]);
        assert_eq!(LockStatus::from_redis_value(map).unwrap(), expected);
        assert_eq!(
            Option::<LockStatus>::from_redis_value(Value::Nil).unwrap(),
            None
        );
        assert!(LockStatus::from_redis_value(Value::Int(1)).is_err());
        assert!(
            LockStatus::from_redis_value(Value::Array(vec![bulk("owner"), bulk("w1")])).is_err()
        );
        // A persisted lock reports ttl -1.
        let persisted = Value::Array(vec![
            bulk("owner"),
            bulk("w1"),
            bulk("token"),
            Value::Int(1),
            bulk("ttl"),
            Value::Int(-1),
        ]);
        assert_eq!(
            LockStatus::from_redis_value(persisted).unwrap().ttl,
            Duration::ZERO
        );
    }

    #[test]
    fn stock_info_of_a_stock_and_a_plain_string() {
        let stock = Value::Map(vec![
            (bulk("available"), Value::Int(8)),
            (bulk("deducted"), Value::Int(2)),
            (bulk("requests"), Value::Int(1)),
            (bulk("fence"), Value::Int(0)),
            (bulk("restocks"), Value::Int(3)),
            (bulk("held"), Value::Int(1)),
            (bulk("held-units"), Value::Int(2)),
            (bulk("next-deadline"), Value::Int(1_764_000_900_000)),
            (bulk("limit"), Value::Int(2)),
            (bulk("buyers"), Value::Int(5)),
        ]);
        let expected = StockInfo {
            available: 8,
            ledger: Some(LedgerInfo {
                deducted: 2,
                requests: 1,
                fence: 0,
                restocks: 3,
                held: 1,
                held_units: 2,
                next_deadline: Some(1_764_000_900_000),
                limit: Some(2),
                buyers: 5,
            }),
        };
        assert_eq!(StockInfo::from_redis_value(stock).unwrap(), expected);
        // RESP2: the same fields as a flat array; nothing held: next-deadline 0.
        let flat = Value::Array(vec![
            bulk("available"),
            Value::Int(8),
            bulk("deducted"),
            Value::Int(2),
            bulk("requests"),
            Value::Int(1),
            bulk("fence"),
            Value::Int(0),
            bulk("restocks"),
            Value::Int(3),
            bulk("held"),
            Value::Int(0),
            bulk("held-units"),
            Value::Int(0),
            bulk("next-deadline"),
            Value::Int(0),
            bulk("limit"),
            Value::Int(0),
            bulk("buyers"),
            Value::Int(3),
            bulk("later-field"),
            Value::Int(1),
        ]);
        let ledger = StockInfo::from_redis_value(flat).unwrap().ledger.unwrap();
        assert_eq!(
            (ledger.held, ledger.held_units, ledger.next_deadline),
            (0, 0, None)
        );
        // No limit: the server's 0 is None; buyers recorded without a limit are counted.
        assert_eq!((ledger.limit, ledger.buyers), (None, 3));
        // A module from before purchase limits, holds and restock ids sends none of them.
        let older = Value::Array(vec![
            bulk("available"),
            Value::Int(8),
            bulk("deducted"),
            Value::Int(2),
            bulk("requests"),
            Value::Int(1),
            bulk("fence"),
            Value::Int(0),
        ]);
        assert_eq!(
            StockInfo::from_redis_value(older).unwrap(),
            StockInfo {
                available: 8,
                ledger: Some(LedgerInfo {
                    deducted: 2,
                    requests: 1,
                    fence: 0,
                    restocks: 0,
                    held: 0,
                    held_units: 0,
                    next_deadline: None,
                    limit: None,
                    buyers: 0,
                }),
            }
        );
        let plain = Value::Array(vec![bulk("available"), Value::Int(-4)]);
        assert_eq!(
            StockInfo::from_redis_value(plain).unwrap(),
            StockInfo {
                available: -4,
                ledger: None
            }
        );
        let partial = Value::Array(vec![
            bulk("available"),
            Value::Int(1),
            bulk("deducted"),
            Value::Int(1),
        ]);
        assert!(StockInfo::from_redis_value(partial).is_err());
        assert!(StockInfo::from_redis_value(Value::Array(vec![])).is_err());
    }
}
