//! STOCK.SET, STOCK.ADD, STOCK.GET, STOCK.DEDUCT, STOCK.REFUND, STOCK.CONFIRM, STOCK.REQUEST,
//! STOCK.INFO: parse, decide (`fence_core::stock`), apply, replicate (`fence_core::effects`),
//! reply. A command that changes a stock first returns its due holds (`services::holds`);
//! a read shows them returned (`Stock::view`).

use fence_core::args::{
    parse_deduct_options, parse_i64, parse_limit, parse_name, parse_one_option, parse_quantity,
    parse_refund_options, parse_request_options, parse_set_options, Decimal, DeductOptions,
};
use fence_core::cart;
use fence_core::clock::{is_from_future, now_us};
use fence_core::config::{MAX_BUYERS, MAX_HOLD_MS, MAX_ID_LENGTH, MAX_LEDGER_ENTRIES};
use fence_core::effects::{ExpireStreamEffect, LimitEffect, RestockEffect, StockEffect};
use fence_core::error::{FenceError, Name};
use fence_core::ledger::{State, Value};
use fence_core::stats;
use fence_core::stock::{
    plain_add, plain_deduct, Bounds, Confirm, Deduct, DeductRequest, ExpireStream, Hold, Restock,
    Snapshot, Stock,
};

use super::events;
use super::CommandResult;
use crate::ffi::ctx::replicate_set_keepttl;
use crate::ffi::{Args, Ctx, Field, Key, Kind, RStr, Reply};
use crate::services::holds::{self, now_ms};
use crate::services::streams::{Batch, Stream};
use crate::services::{eviction, tokens};

/// The integer in a plain string stock, read through `GET`, which leaves the stored object as
/// it is (a direct read would re-encode an integer string as raw bytes). The stock's key must
/// not be open.
fn plain_value(ctx: &Ctx<'_>, name: RStr<'_>) -> Result<i64, FenceError> {
    parse_i64(&ctx.get_string(name)).ok_or(FenceError::NotInteger)
}

/// Writes a plain string stock's new value (TTL kept) through `SET … KEEPTTL`, and replicates
/// that same command, so the master and its replicas store it alike (an integer-encoded
/// string on both). The stock's key must not be open.
fn write_plain(ctx: &Ctx<'_>, name: RStr<'_>, value: i64) {
    let value = Decimal::new(value);
    ctx.set_string_keepttl(name, value.as_bytes());
    replicate_set_keepttl(ctx, name, &value);
}

/// Replicates a stock's scalar state.
fn replicate_stock(ctx: &Ctx<'_>, name: RStr<'_>, state: StockEffect) {
    ctx.replicate(name, &state.encode(None), None);
}

/// Replicates a stock's scalar state with one request-ledger entry as it stands.
fn replicate_entry(ctx: &Ctx<'_>, name: RStr<'_>, stock: &Stock, id: &[u8], value: Value) {
    ctx.replicate(name, &stock.entry_effect(id, value).encode(), None);
}

fn state_of(stock: &Stock, reset: bool) -> StockEffect {
    StockEffect {
        available: stock.available,
        fence: stock.fence,
        deducted: stock.deducted,
        reset,
    }
}

/// Counts a successful deduction and sends its events (`stock.soldout` when it emptied the
/// stock).
fn deducted(ctx: &Ctx<'_>, name: RStr<'_>, remaining: i64) {
    stats::DEDUCTIONS.incr();
    ctx.notify(c"stock.deduct", name);
    if remaining == 0 {
        ctx.notify(c"stock.soldout", name);
    }
}

/// `STOCK.SET key quantity [LIMIT per-buyer]` → OK: a new stock, or a new sale (ledgers and
/// buyers cleared; fence kept, and the limit unless `LIMIT` sets it).
pub fn set(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.set"));
    }
    let quantity = parse_quantity(args.bytes(2), 0)?;
    let limit = parse_set_options(args.options(3).as_slice())?;
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    if matches!(key.kind(), Kind::Empty | Kind::Stock) {
        eviction::check_stock(ctx, &key)?;
    }
    match key.kind() {
        Kind::Empty => key.set_stock(Stock::new(quantity)),
        Kind::Stock => {
            if let Some(stock) = key.stock_mut() {
                stock.reset(quantity);
            }
        }
        _ => return Err(FenceError::WrongType),
    }
    if let Some(stock) = key.stock_mut() {
        replicate_stock(ctx, name, state_of(stock, true));
        if let Some(limit) = limit {
            stock.limit = limit;
            ctx.replicate(name, &LimitEffect { limit }.encode(), None);
        }
    }
    key.signal_modified();
    Ok(Reply::Ok)
}

/// `STOCK.LIMIT key per-buyer` → 1 (the stock's limit per buyer set; 0 clears it), or 0 when
/// the key does not exist.
pub fn limit(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("stock.limit"));
    }
    let limit = parse_limit(args.bytes(2))?;
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    match key.kind() {
        Kind::Empty => Ok(Reply::Int(0)),
        Kind::String => Err(FenceError::NeedsStock),
        Kind::Stock => {
            let Some(stock) = key.stock_mut() else {
                return Err(FenceError::WrongType);
            };
            stock.limit = limit;
            ctx.replicate(name, &LimitEffect { limit }.encode(), None);
            key.signal_modified();
            ctx.notify(c"stock.limit", name);
            Ok(Reply::Int(1))
        }
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.BUYER key buyer-id` → the units the buyer holds (0 for none), or nil when the key
/// does not exist.
pub fn buyer(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("stock.buyer"));
    }
    let buyer = parse_name(args.bytes(2), Name::BuyerId, i64::MAX)?;
    let key = Key::read(ctx, args.get(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::String => Err(FenceError::NeedsStock),
        Kind::Stock => Ok(key.stock().map_or(Reply::Nil, |s| {
            let now = if s.has_holds() { now_ms() } else { 0 };
            Reply::Int(s.buyer_units(buyer, now))
        })),
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.ADD key quantity [ID restock-id]` → the new available quantity (with `ID`, a restock
/// id already seen adds nothing and answers the available quantity).
pub fn add(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.add"));
    }
    let quantity = parse_quantity(args.bytes(2), 1)?;
    let id = match parse_one_option(args.options(3).as_slice(), "ID")? {
        Some(id) => Some(parse_name(id, Name::RestockId, i64::MAX)?),
        None => None,
    };
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    if matches!(key.kind(), Kind::Empty | Kind::Stock) {
        eviction::check_stock(ctx, &key)?;
    }
    let created = key.kind() == Kind::Empty;
    match key.kind() {
        Kind::Empty => key.set_stock(Stock::new(0)),
        Kind::Stock => {}
        Kind::String => {
            if id.is_some() {
                return Err(FenceError::NeedsStock);
            }
            drop(key);
            let value = plain_add(plain_value(ctx, name)?, quantity)?;
            write_plain(ctx, name, value);
            return Ok(Reply::Int(value));
        }
        _ => return Err(FenceError::WrongType),
    }
    holds::before_write(ctx, name, &mut key, None);
    let Some(stock) = key.stock_mut() else {
        return Err(FenceError::WrongType);
    };
    let Some(id) = id else {
        let available = stock.add(quantity)?;
        let state = state_of(stock, false);
        replicate_stock(ctx, name, state);
        key.signal_modified();
        return Ok(Reply::Int(available));
    };
    match stock.restock(quantity, id, MAX_LEDGER_ENTRIES.get(), MAX_ID_LENGTH.get()) {
        Ok(Restock::Replayed(available)) => {
            stats::REPLAYS.incr();
            Ok(Reply::Int(available))
        }
        Ok(Restock::Added(available)) => {
            let effect = RestockEffect {
                available,
                id,
                quantity,
            };
            ctx.replicate(name, &effect.encode(), None);
            key.signal_modified();
            Ok(Reply::Int(available))
        }
        Err(e) => {
            // Refused, nothing changed: not even the stock this call was about to create.
            if created {
                key.delete();
            }
            Err(e)
        }
    }
}

/// `STOCK.GET key` → the available quantity, or nil.
pub fn get(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() != 2 {
        return Err(FenceError::Arity("stock.get"));
    }
    let key = Key::read(ctx, args.get(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::Stock => Ok(key
            .stock()
            .map_or(Reply::Nil, |s| Reply::Int(s.available_now(now_ms)))),
        Kind::String => {
            drop(key);
            Ok(Reply::Int(plain_value(ctx, args.get(1))?))
        }
        _ => Err(FenceError::WrongType),
    }
}

/// Adds a deduction's `deduct` event (with `cart` and `item` for a cart's item) and, when the
/// stock is empty now, its `soldout` event, to a batch.
#[allow(clippy::too_many_arguments)]
pub(super) fn add_deduct_event<'c>(
    ctx: &Ctx<'c>,
    stream: &mut Stream<'_>,
    batch: &mut Batch<'c>,
    sku: &[u8],
    quantity: i64,
    remaining: i64,
    options: &DeductOptions<'_>,
    cart: Option<(usize, usize)>,
) -> Result<(), FenceError> {
    let (q, r) = (Decimal::new(quantity), Decimal::new(remaining));
    let f = Decimal::new(
        options
            .fence
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
    );
    let count = |n: usize| Decimal::new(i64::try_from(n).unwrap_or(i64::MAX));
    let (len, item) = cart.map_or((count(0), count(0)), |(l, i)| (count(l), count(i)));
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b"type", b"deduct"),
        (b"sku", sku),
        (b"quantity", q.as_bytes()),
        (b"remaining", r.as_bytes()),
    ];
    if let Some(id) = options.id {
        fields.push((b"id", id));
    }
    if let Some(buyer) = options.buyer {
        fields.push((b"buyer", buyer));
    }
    if options.fence.is_some() {
        fields.push((b"fence", f.as_bytes()));
    }
    if cart.is_some() {
        fields.push((b"cart", len.as_bytes()));
        fields.push((b"item", item.as_bytes()));
    }
    stream.add(ctx, batch, &fields)?;
    if remaining == 0 {
        stream.add(ctx, batch, &[(b"type", b"soldout"), (b"sku", sku)])?;
    }
    Ok(())
}

/// The batch of a deduction's events (`deduct`, and `soldout` when the stock is empty now).
fn deduct_events<'c>(
    ctx: &Ctx<'c>,
    stream: &mut Stream<'_>,
    sku: &[u8],
    quantity: i64,
    remaining: i64,
    options: &DeductOptions<'_>,
) -> Result<Batch<'c>, FenceError> {
    let mut batch = Batch::new();
    if remaining == 0 && !stream.has_room(ctx, 2) {
        return Err(FenceError::StreamFull);
    }
    match add_deduct_event(
        ctx, stream, &mut batch, sku, quantity, remaining, options, None,
    ) {
        Ok(()) => Ok(batch),
        Err(e) => {
            stream.undo(batch);
            Err(e)
        }
    }
}

/// What follows a deduction that is made (its events aside): the token observed, the effect
/// replicated, the stock's expire stream set (a hold made with `EVENTS`), the hold indexed, the
/// key signalled, the counters and keyspace events.
pub(super) fn deduction_made(
    ctx: &Ctx<'_>,
    key: &mut Key<'_>,
    options: &DeductOptions<'_>,
    held: bool,
    stream: Option<RStr<'_>>,
    remaining: i64,
) {
    let name = key.name();
    let Some(stock) = key.stock_mut() else {
        return;
    };
    if let Some(token) = options.fence {
        // A token a stock accepted is never issued again here, so a lock guarding a stock
        // that moved from another server is not refused.
        tokens::observe(token);
    }
    match options.id {
        Some(id) => {
            let value = stock.request_at(id, 0).unwrap_or_default();
            replicate_entry(ctx, name, stock, id, value);
        }
        None => replicate_stock(ctx, name, state_of(stock, false)),
    }
    if held {
        stats::HOLDS.incr();
        if let Some(stream) = stream {
            // The stock announces its expiries where its latest hold with EVENTS asked.
            let target = ExpireStream {
                key: stream.bytes().to_vec(),
                maxlen: options.events.and_then(|e| e.maxlen),
            };
            if stock.expire_stream.as_ref() != Some(&target) {
                let effect = ExpireStreamEffect {
                    key: Some(&target.key),
                    maxlen: target.maxlen,
                };
                ctx.replicate(name, &effect.encode(), None);
                stock.expire_stream = Some(target);
            }
        }
        holds::track(ctx, name.bytes(), stock, false);
    }
    key.signal_modified();
    deducted(ctx, name, remaining);
}

/// A deduction's `HOLD` as a deadline (refused past `fence.max-hold-ms`), after refusing a
/// `FENCE` token from the future.
pub(super) fn hold_and_token(options: &DeductOptions<'_>) -> Result<Option<Hold>, FenceError> {
    let hold = match options.hold {
        Some(ms) if ms > MAX_HOLD_MS.get() => {
            return Err(FenceError::HoldRange {
                max: MAX_HOLD_MS.get(),
            })
        }
        Some(ms) => Some(Hold {
            deadline: now_ms().saturating_add(ms.unsigned_abs()),
            events: options.events.is_some(),
        }),
        None => None,
    };
    if options.fence.is_some_and(|t| is_from_future(t, now_us())) {
        return Err(FenceError::TokenFromFuture);
    }
    Ok(hold)
}

/// `STOCK.DEDUCT key quantity [ID request-id] [BUYER buyer-id] [HOLD ms] [FENCE token] [EVENTS
/// stream-key [MAXLEN [~|=] n]]` → remaining, or nil.
pub fn deduct(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let words = args.options(3);
    let parsed = words.all().and_then(parse_deduct_options);
    let events_at = parsed.as_ref().ok().and_then(|o| o.events).map(|e| (3, e));
    if let Some(reported) = events::report_keys(ctx, args, events_at) {
        return Ok(Reply::KeysReported(reported));
    }
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.deduct"));
    }
    let quantity = parse_quantity(args.bytes(2), 1)?;
    let options = parsed?;
    let hold = hold_and_token(&options)?;
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::String => {
            // HOLD and BUYER come with ID (the parser sees to it).
            if options.id.is_some() || options.fence.is_some() {
                return Err(FenceError::NeedsStock);
            }
            drop(key);
            let mut stream = match options.events {
                Some(e) => Some(events::open(ctx, args, 3, e)?),
                None => None,
            };
            let Some(value) = plain_deduct(plain_value(ctx, name)?, quantity) else {
                stats::SOLD_OUT.incr();
                return Ok(Reply::Nil);
            };
            // The events first: if the stream cannot take them, nothing has changed yet.
            let batch = match &mut stream {
                Some(stream) => Some(deduct_events(
                    ctx,
                    stream,
                    name.bytes(),
                    quantity,
                    value,
                    &options,
                )?),
                None => None,
            };
            write_plain(ctx, name, value);
            deducted(ctx, name, value);
            if let (Some(stream), Some(batch)) = (&mut stream, batch) {
                stream.publish(ctx, batch);
            }
            Ok(Reply::Int(value))
        }
        Kind::Stock => {
            // Due holds come back first (their own stream entries included), so the decision
            // sees every unit that is for sale; then the call's own EVENTS stream is opened.
            holds::before_write(ctx, name, &mut key, Some(quantity));
            if let Some(buyer) = options.buyer {
                holds::before_buyer(ctx, &mut key, buyer);
            }
            // Opened once no more holds come back in this call (an expiry announced on the
            // same stream would create it under another handle).
            let mut stream = match options.events {
                Some(e) => Some(events::open(ctx, args, 3, e)?),
                None => None,
            };
            // Asked of a new request id only; prepared before the stock is borrowed.
            let admission = match options.id {
                Some(_) => eviction::check_stock(ctx, &key),
                None => Ok(()),
            };
            let request = DeductRequest {
                quantity,
                id: options.id,
                fence: options.fence,
                hold,
                buyer: options.buyer,
            };
            let (before, outcome) = decide(&mut key, request, &admission)?;
            let Some(stock) = key.stock_mut() else {
                return Err(FenceError::WrongType);
            };
            match outcome {
                Err(FenceError::Stale { .. }) => stats::STALE.incr(),
                Err(FenceError::Limit { .. }) => stats::LIMIT_REFUSALS.incr(),
                _ => {}
            }
            let remaining = match outcome? {
                Deduct::SoldOut => {
                    stats::SOLD_OUT.incr();
                    return Ok(Reply::Nil);
                }
                Deduct::Replayed(_) => {
                    stats::REPLAYS.incr();
                    return Ok(Reply::Int(stock.available));
                }
                Deduct::Deducted(remaining) => remaining,
            };
            let batch = match &mut stream {
                Some(stream) => {
                    match deduct_events(ctx, stream, name.bytes(), quantity, remaining, &options) {
                        Ok(batch) => Some(batch),
                        Err(e) => {
                            // Nothing half-applied: the deduction is taken back.
                            stock.restore(before, options.id.map(|id| (id, None)));
                            return Err(e);
                        }
                    }
                }
                None => None,
            };
            let stream_name = stream.as_ref().map(Stream::name);
            deduction_made(
                ctx,
                &mut key,
                &options,
                hold.is_some(),
                stream_name,
                remaining,
            );
            if let (Some(stream), Some(batch)) = (&mut stream, batch) {
                stream.publish(ctx, batch);
            }
            Ok(Reply::Int(remaining))
        }
        _ => Err(FenceError::WrongType),
    }
}

/// The settings' bounds on a deduction's new state.
pub(super) fn bounds() -> Bounds {
    Bounds {
        ledger: MAX_LEDGER_ENTRIES.get(),
        id_length: MAX_ID_LENGTH.get(),
        buyers: MAX_BUYERS.get(),
    }
}

/// Decides a deduction on an open stock (its due holds returned; `fence_core::cart::decide`):
/// the state before it, and what it decided.
fn decide(
    key: &mut Key<'_>,
    request: DeductRequest<'_>,
    admission: &Result<(), FenceError>,
) -> Result<(Snapshot, Result<Deduct, FenceError>), FenceError> {
    key.stock_mut()
        .map(|s| cart::decide(s, request, bounds(), admission))
        .ok_or(FenceError::WrongType)
}

/// `STOCK.REFUND key request-id [EVENTS stream-key [MAXLEN [~|=] n]]` → the quantity returned
/// (0 when nothing was).
pub fn refund(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let words = args.options(3);
    let parsed = parse_refund_options(words.as_slice());
    let events_at = parsed.as_ref().ok().copied().flatten().map(|e| (3, e));
    if let Some(reported) = events::report_keys(ctx, args, events_at) {
        return Ok(Reply::KeysReported(reported));
    }
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.refund"));
    }
    // Any length: what exists can be refunded and read back whatever the limit is now.
    let id = parse_name(args.bytes(2), Name::RequestId, i64::MAX)?;
    let events_option = parsed?;
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    match key.kind() {
        Kind::Empty => Ok(Reply::Int(0)),
        Kind::String => Err(FenceError::NeedsStock),
        Kind::Stock => {
            // A due hold comes back first: refunding it then returns nothing.
            holds::before_decision(ctx, name, &mut key, id);
            holds::before_write(ctx, name, &mut key, None);
            let mut stream = match events_option {
                Some(e) => Some(events::open(ctx, args, 3, e)?),
                None => None,
            };
            let Some(stock) = key.stock_mut() else {
                return Err(FenceError::WrongType);
            };
            let before = stock.snapshot();
            let old = stock.request_at(id, 0);
            let quantity = stock.refund(id)?;
            if quantity == 0 {
                return Ok(Reply::Int(0));
            }
            // What is applied: the due holds that came back before this refund (their
            // `expire` entries precede its entry), never one that came due since (its entry
            // follows, and would count it twice).
            let remaining = stock.available;
            let mut batch = Batch::new();
            if let Some(stream) = &mut stream {
                let (q, r) = (Decimal::new(quantity), Decimal::new(remaining));
                let fields: [(&[u8], &[u8]); 5] = [
                    (b"type", b"refund"),
                    (b"sku", name.bytes()),
                    (b"id", id),
                    (b"quantity", q.as_bytes()),
                    (b"remaining", r.as_bytes()),
                ];
                if let Err(e) = stream.add(ctx, &mut batch, &fields) {
                    stream.undo(batch);
                    stock.restore(before, Some((id, old)));
                    return Err(e);
                }
            }
            let value = stock.request_at(id, 0).unwrap_or_default();
            replicate_entry(ctx, name, stock, id, value);
            key.signal_modified();
            ctx.notify(c"stock.refund", name);
            stats::REFUNDS.incr();
            if let Some(stream) = &mut stream {
                stream.publish(ctx, batch);
            }
            Ok(Reply::Int(quantity))
        }
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.CONFIRM key request-id` → 1 (confirmed now or already, or deducted without a hold),
/// 0 (unknown id), or `EXPIRED …` / `REFUNDED …` when the hold already ended.
pub fn confirm(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("stock.confirm"));
    }
    let id = parse_name(args.bytes(2), Name::RequestId, i64::MAX)?;
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    match key.kind() {
        Kind::Empty => Ok(Reply::Int(0)),
        Kind::String => Err(FenceError::NeedsStock),
        Kind::Stock => {
            // The deadline and the confirmation race here, inside Redis: a hold that is due
            // comes back first, and the confirmation is then refused with EXPIRED.
            holds::before_decision(ctx, name, &mut key, id);
            let Some(stock) = key.stock_mut() else {
                return Err(FenceError::WrongType);
            };
            match stock.confirm(id)? {
                Confirm::Unknown => Ok(Reply::Int(0)),
                Confirm::Already => Ok(Reply::Int(1)),
                Confirm::Confirmed => {
                    let value = stock.request_at(id, 0).unwrap_or_default();
                    replicate_entry(ctx, name, stock, id, value);
                    key.signal_modified();
                    ctx.notify(c"stock.confirm", name);
                    stats::CONFIRMS.incr();
                    Ok(Reply::Int(1))
                }
            }
        }
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.INFO key` → available, deducted, requests, fence, restocks, held, held-units,
/// next-deadline (available only for a plain integer string); nil when the key does not exist.
pub fn info(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() != 2 {
        return Err(FenceError::Arity("stock.info"));
    }
    let key = Key::read(ctx, args.get(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::String => {
            drop(key);
            let available = plain_value(ctx, args.get(1))?;
            Ok(Reply::Map(vec![("available", Field::Int(available))]))
        }
        Kind::Stock => {
            let Some(stock) = key.stock() else {
                return Err(FenceError::WrongType);
            };
            let view = stock.view(now_ms());
            let count = |n: usize| Field::Int(i64::try_from(n).unwrap_or(i64::MAX));
            let ms = |v: u64| Field::Int(i64::try_from(v).unwrap_or(i64::MAX));
            Ok(Reply::Map(vec![
                ("available", Field::Int(view.available)),
                ("deducted", Field::Int(view.deducted)),
                ("requests", count(stock.ledger_len())),
                (
                    "fence",
                    Field::Int(i64::try_from(stock.fence).unwrap_or(i64::MAX)),
                ),
                ("restocks", count(stock.restocks_len())),
                ("held", ms(view.held)),
                ("held-units", Field::Int(view.held_units)),
                ("next-deadline", ms(view.next_deadline.unwrap_or(0))),
                ("limit", Field::Int(stock.limit)),
                ("buyers", count(stock.buyers_len())),
            ]))
        }
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.REQUEST key request-id [DETAIL]` → the units the request holds, 0 once refunded or
/// expired, nil if unknown; with `DETAIL` a map: state, quantity, and a held entry's deadline.
pub fn request(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.request"));
    }
    // Any length: what exists can be refunded and read back whatever the limit is now.
    let id = parse_name(args.bytes(2), Name::RequestId, i64::MAX)?;
    let detail = parse_request_options(&args.tail(3))?;
    let key = Key::read(ctx, args.get(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::String => Err(FenceError::NeedsStock),
        Kind::Stock => {
            let Some(value) = key.stock().and_then(|s| s.request_at(id, now_ms())) else {
                return Ok(Reply::Nil);
            };
            if !detail {
                return Ok(Reply::Int(value.units()));
            }
            let mut fields = vec![
                ("state", Field::Bulk(value.state.name().as_bytes().to_vec())),
                ("quantity", Field::Int(value.quantity)),
            ];
            if value.state == State::Held {
                fields.push((
                    "deadline",
                    Field::Int(i64::try_from(value.deadline).unwrap_or(i64::MAX)),
                ));
            }
            if let Some(buyer) = key.stock().and_then(|s| s.buyer_of(value)) {
                fields.push(("buyer", Field::Bulk(buyer.to_vec())));
            }
            Ok(Reply::Map(fields))
        }
        _ => Err(FenceError::WrongType),
    }
}
