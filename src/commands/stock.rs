//! STOCK.SET, STOCK.ADD, STOCK.GET, STOCK.DEDUCT, STOCK.REFUND, STOCK.REQUEST, STOCK.INFO:
//! parse, decide (`fence_core::stock`), apply, replicate (`fence_core::effects`), reply.

use fence_core::args::{
    parse_deduct_options, parse_i64, parse_name, parse_one_option, parse_quantity,
    parse_refund_options, Decimal, DeductOptions,
};
use fence_core::clock::{is_from_future, now_us};
use fence_core::config::{MAX_ID_LENGTH, MAX_LEDGER_ENTRIES};
use fence_core::effects::{RestockEffect, StockEffect};
use fence_core::error::{FenceError, Name};
use fence_core::stats;
use fence_core::stock::{plain_add, plain_deduct, Deduct, DeductRequest, Restock, Stock};

use super::events::{self, Batch, Stream};
use super::CommandResult;
use crate::ffi::ctx::replicate_set_keepttl;
use crate::ffi::{Args, Ctx, Field, Key, Kind, RStr, Reply};
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

/// Replicates a stock's scalar state and at most one ledger entry.
fn replicate_stock(ctx: &Ctx<'_>, name: RStr<'_>, state: StockEffect, entry: Option<(&[u8], i64)>) {
    ctx.replicate(name, &state.encode(entry), None);
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

/// `STOCK.SET key quantity` → OK: a new stock, or a new sale (ledgers cleared, fence kept).
pub fn set(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("stock.set"));
    }
    let quantity = parse_quantity(args.bytes(2), 0)?;
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
    if let Some(stock) = key.stock() {
        replicate_stock(ctx, name, state_of(stock, true), None);
    }
    key.signal_modified();
    Ok(Reply::Ok)
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
    let Some(stock) = key.stock_mut() else {
        return Err(FenceError::WrongType);
    };
    let Some(id) = id else {
        let available = stock.add(quantity)?;
        let state = state_of(stock, false);
        replicate_stock(ctx, name, state, None);
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
        Kind::Stock => Ok(key.stock().map_or(Reply::Nil, |s| Reply::Int(s.available))),
        Kind::String => {
            drop(key);
            Ok(Reply::Int(plain_value(ctx, args.get(1))?))
        }
        _ => Err(FenceError::WrongType),
    }
}

/// Adds the `deduct` event (and `soldout` when the stock is empty now) to a batch.
fn deduct_events<'c>(
    ctx: &Ctx<'c>,
    stream: &mut Stream<'_>,
    sku: &[u8],
    quantity: i64,
    remaining: i64,
    options: &DeductOptions<'_>,
) -> Result<Batch<'c>, FenceError> {
    let (q, r) = (Decimal::new(quantity), Decimal::new(remaining));
    let f = Decimal::new(
        options
            .fence
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
    );
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b"type", b"deduct"),
        (b"sku", sku),
        (b"quantity", q.as_bytes()),
        (b"remaining", r.as_bytes()),
    ];
    if let Some(id) = options.id {
        fields.push((b"id", id));
    }
    if options.fence.is_some() {
        fields.push((b"fence", f.as_bytes()));
    }
    let mut batch = Batch::new();
    if remaining == 0 && !stream.has_room(ctx, 2) {
        return Err(FenceError::StreamFull);
    }
    let mut added = stream.add(ctx, &mut batch, &fields);
    if added.is_ok() && remaining == 0 {
        added = stream.add(ctx, &mut batch, &[(b"type", b"soldout"), (b"sku", sku)]);
    }
    match added {
        Ok(()) => Ok(batch),
        Err(e) => {
            stream.undo(batch);
            Err(e)
        }
    }
}

/// `STOCK.DEDUCT key quantity [ID request-id] [FENCE token] [EVENTS stream-key [MAXLEN [~|=] n]]`
/// → remaining, or nil.
pub fn deduct(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let words = args.options(3);
    let parsed = parse_deduct_options(words.as_slice());
    let events_at = parsed.as_ref().ok().and_then(|o| o.events).map(|e| (3, e));
    if let Some(reported) = events::report_keys(ctx, args, events_at) {
        return Ok(Reply::KeysReported(reported));
    }
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.deduct"));
    }
    let quantity = parse_quantity(args.bytes(2), 1)?;
    let options = parsed?;
    if options.fence.is_some_and(|t| is_from_future(t, now_us())) {
        return Err(FenceError::TokenFromFuture);
    }
    let mut stream = match options.events {
        Some(e) => Some(Stream::open(ctx, args, 3, e)?),
        None => None,
    };
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::String => {
            if options.id.is_some() || options.fence.is_some() {
                return Err(FenceError::NeedsStock);
            }
            drop(key);
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
            // Asked of a new request id only; prepared before the stock is borrowed.
            let admission = match options.id {
                Some(_) => eviction::check_stock(ctx, &key),
                None => Ok(()),
            };
            let Some(stock) = key.stock_mut() else {
                return Err(FenceError::WrongType);
            };
            let request = DeductRequest {
                quantity,
                id: options.id,
                fence: options.fence,
            };
            let before = stock.snapshot();
            let outcome = stock.deduct_admitting(
                request,
                MAX_LEDGER_ENTRIES.get(),
                MAX_ID_LENGTH.get(),
                || admission,
            );
            if matches!(outcome, Err(FenceError::Stale { .. })) {
                stats::STALE.incr();
            }
            let remaining = match outcome? {
                Deduct::SoldOut => {
                    stats::SOLD_OUT.incr();
                    return Ok(Reply::Nil);
                }
                Deduct::Replayed(remaining) => {
                    stats::REPLAYS.incr();
                    return Ok(Reply::Int(remaining));
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
            if let Some(token) = options.fence {
                // A token a stock accepted is never issued again here, so a lock guarding a
                // stock that moved from another server is not refused.
                tokens::observe(token);
            }
            let state = state_of(stock, false);
            replicate_stock(ctx, name, state, options.id.map(|id| (id, quantity)));
            key.signal_modified();
            deducted(ctx, name, remaining);
            if let (Some(stream), Some(batch)) = (&mut stream, batch) {
                stream.publish(ctx, batch);
            }
            Ok(Reply::Int(remaining))
        }
        _ => Err(FenceError::WrongType),
    }
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
    let mut stream = match parsed? {
        Some(e) => Some(Stream::open(ctx, args, 3, e)?),
        None => None,
    };
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    match key.kind() {
        Kind::Empty => Ok(Reply::Int(0)),
        Kind::String => Err(FenceError::NeedsStock),
        Kind::Stock => {
            let Some(stock) = key.stock_mut() else {
                return Err(FenceError::WrongType);
            };
            let before = stock.snapshot();
            let quantity = stock.refund(id)?;
            if quantity == 0 {
                return Ok(Reply::Int(0));
            }
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
                    stock.restore(before, Some((id, Some(quantity))));
                    return Err(e);
                }
            }
            let state = state_of(stock, false);
            replicate_stock(ctx, name, state, Some((id, 0)));
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

/// `STOCK.INFO key` → available, deducted, requests, fence, restocks (available only for a
/// plain integer string); nil when the key does not exist.
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
            let count = |n: usize| Field::Int(i64::try_from(n).unwrap_or(i64::MAX));
            Ok(Reply::Map(vec![
                ("available", Field::Int(stock.available)),
                ("deducted", Field::Int(stock.deducted)),
                ("requests", count(stock.ledger_len())),
                (
                    "fence",
                    Field::Int(i64::try_from(stock.fence).unwrap_or(i64::MAX)),
                ),
                ("restocks", count(stock.restocks_len())),
            ]))
        }
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.REQUEST key request-id` → quantity held, 0 if refunded, nil if unknown.
pub fn request(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("stock.request"));
    }
    // Any length: what exists can be refunded and read back whatever the limit is now.
    let id = parse_name(args.bytes(2), Name::RequestId, i64::MAX)?;
    let key = Key::read(ctx, args.get(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::String => Err(FenceError::NeedsStock),
        Kind::Stock => Ok(key
            .stock()
            .and_then(|s| s.request(id))
            .map_or(Reply::Nil, Reply::Int)),
        _ => Err(FenceError::WrongType),
    }
}
