//! STOCK.SET, STOCK.ADD, STOCK.GET, STOCK.DEDUCT, STOCK.REFUND, STOCK.REQUEST: parse,
//! decide (in `stock`), apply, replicate, reply.

use super::events::{self, Batch, Stream};
use super::{eviction, CommandResult};
use crate::args::{
    parse_deduct_options, parse_i64, parse_name, parse_one_option, parse_quantity,
    parse_refund_options, Decimal, DeductOptions,
};
use crate::clock::{is_from_future, now_us};
use crate::config::{MAX_ID_LENGTH, MAX_LEDGER_ENTRIES};
use crate::error::{FenceError, Name};
use crate::glue::{Args, Ctx, Key, Kind, Reply};
use crate::stats;
use crate::stock::{plain_add, plain_deduct, Deduct, DeductRequest, Restock, Stock};

/// The integer in a plain string stock, read through `GET`, which leaves the stored object as
/// it is (a direct read would re-encode an integer string as raw bytes). The stock's key must
/// not be open.
fn plain_value_read(ctx: Ctx, args: &Args) -> Result<i64, FenceError> {
    parse_i64(&ctx.get_string(args.raw(1))).ok_or(FenceError::NotInteger)
}

/// Writes a plain string stock's new value (TTL kept) through `SET … KEEPTTL`, and replicates
/// that same command, so the master and its replicas store it alike (an integer-encoded
/// string on both). The stock's key must not be open.
fn write_plain(ctx: Ctx, args: &Args, value: i64) {
    let value = Decimal::new(value);
    let bytes = value.as_bytes();
    ctx.set_string_keepttl(args.raw(1), bytes);
    ctx.replicate_string(args.raw(1), bytes);
}

/// Counts a successful deduction and sends its events (`stock.soldout` when it emptied the
/// stock).
fn deducted(ctx: Ctx, args: &Args, remaining: i64) {
    stats::DEDUCTIONS.incr();
    ctx.notify(c"stock.deduct", args.raw(1));
    if remaining == 0 {
        ctx.notify(c"stock.soldout", args.raw(1));
    }
}

/// `STOCK.SET key quantity` → OK: a new stock, or a new sale (ledger cleared, fence kept).
pub fn set(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("stock.set"));
    }
    let quantity = parse_quantity(args.bytes(2), 0)?;
    let mut key = Key::write(ctx, args.raw(1));
    if matches!(key.kind(), Kind::Empty | Kind::Stock) {
        eviction::check_stock(ctx, &key)?;
    }
    match key.kind() {
        Kind::Empty => key.set_stock(Stock::new(quantity)),
        Kind::Stock => {
            if let Some(stock) = key.stock() {
                stock.reset(quantity);
            }
        }
        _ => return Err(FenceError::WrongType),
    }
    if let Some(stock) = key.stock() {
        ctx.replicate_stock(args.raw(1), stock, true, None);
    }
    key.signal_modified();
    Ok(Reply::Ok)
}

/// `STOCK.ADD key quantity [ID restock-id]` → the new available quantity (with `ID`, a restock
/// id already seen adds nothing and answers the available quantity).
pub fn add(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.add"));
    }
    let quantity = parse_quantity(args.bytes(2), 1)?;
    let id = match parse_one_option(args.options(3).as_slice(), "ID")? {
        Some(id) => Some(parse_name(id, Name::RestockId, i64::MAX)?),
        None => None,
    };
    let mut key = Key::write(ctx, args.raw(1));
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
            let value = plain_add(plain_value_read(ctx, args)?, quantity)?;
            write_plain(ctx, args, value);
            return Ok(Reply::Int(value));
        }
        _ => return Err(FenceError::WrongType),
    }
    let Some(stock) = key.stock() else {
        return Err(FenceError::WrongType);
    };
    let Some(id) = id else {
        let available = stock.add(quantity)?;
        ctx.replicate_stock(args.raw(1), stock, false, None);
        key.signal_modified();
        return Ok(Reply::Int(available));
    };
    match stock.restock(quantity, id, MAX_LEDGER_ENTRIES.get(), MAX_ID_LENGTH.get()) {
        Ok(Restock::Replayed(available)) => {
            stats::REPLAYS.incr();
            Ok(Reply::Int(available))
        }
        Ok(Restock::Added(available)) => {
            ctx.replicate_restock(args.raw(1), available, id, quantity);
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
pub fn get(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 2 {
        return Err(FenceError::Arity("stock.get"));
    }
    let mut key = Key::read(ctx, args.raw(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::Stock => Ok(key.stock().map_or(Reply::Nil, |s| Reply::Int(s.available))),
        Kind::String => Ok(Reply::Int(plain_value_read(ctx, args)?)),
        _ => Err(FenceError::WrongType),
    }
}

/// Adds the `deduct` event (and `soldout` when the stock is empty now) to a batch.
fn deduct_events(
    ctx: Ctx,
    stream: &Stream,
    sku: &[u8],
    quantity: i64,
    remaining: i64,
    options: &DeductOptions<'_>,
) -> Result<Batch, FenceError> {
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
    let mut batch = Batch::default();
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
            stream.undo(ctx, batch);
            Err(e)
        }
    }
}

/// `STOCK.DEDUCT key quantity [ID request-id] [FENCE token] [EVENTS stream-key [MAXLEN [~|=] n]]`
/// → remaining, or nil.
pub fn deduct(ctx: Ctx, args: &Args) -> CommandResult {
    let words = args.options(3);
    let parsed = parse_deduct_options(words.as_slice());
    let events_at = parsed.as_ref().ok().and_then(|o| o.events).map(|e| (3, e));
    if events::report_keys(ctx, args, events_at) {
        return Ok(Reply::Sent);
    }
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.deduct"));
    }
    let quantity = parse_quantity(args.bytes(2), 1)?;
    let options = parsed?;
    if options.fence.is_some_and(|t| is_from_future(t, now_us())) {
        return Err(FenceError::TokenFromFuture);
    }
    let stream = match options.events {
        Some(e) => Some(Stream::open(ctx, args, 3, e)?),
        None => None,
    };
    let mut key = Key::write(ctx, args.raw(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::String => {
            if options.id.is_some() || options.fence.is_some() {
                return Err(FenceError::NeedsStock);
            }
            drop(key);
            let Some(value) = plain_deduct(plain_value_read(ctx, args)?, quantity) else {
                stats::SOLD_OUT.incr();
                return Ok(Reply::Nil);
            };
            // The events first: if the stream cannot take them, nothing has changed yet.
            let batch = match &stream {
                Some(stream) => Some(deduct_events(
                    ctx,
                    stream,
                    args.bytes(1),
                    quantity,
                    value,
                    &options,
                )?),
                None => None,
            };
            write_plain(ctx, args, value);
            deducted(ctx, args, value);
            if let (Some(stream), Some(batch)) = (&stream, batch) {
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
            let Some(stock) = key.stock() else {
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
            match outcome? {
                Deduct::SoldOut => {
                    stats::SOLD_OUT.incr();
                    Ok(Reply::Nil)
                }
                Deduct::Replayed(remaining) => {
                    stats::REPLAYS.incr();
                    Ok(Reply::Int(remaining))
                }
                Deduct::Deducted(remaining) => {
                    let batch = match &stream {
                        Some(stream) => {
                            match deduct_events(
                                ctx,
                                stream,
                                args.bytes(1),
                                quantity,
                                remaining,
                                &options,
                            ) {
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
                        // A token a stock accepted is never issued again here, so a lock
                        // guarding a stock that moved from another server is not refused.
                        crate::TOKENS.observe(token);
                    }
                    let entry = options.id.map(|id| (id, quantity));
                    ctx.replicate_stock(args.raw(1), stock, false, entry);
                    key.signal_modified();
                    deducted(ctx, args, remaining);
                    if let (Some(stream), Some(batch)) = (&stream, batch) {
                        stream.publish(ctx, batch);
                    }
                    Ok(Reply::Int(remaining))
                }
            }
        }
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.REFUND key request-id [EVENTS stream-key [MAXLEN [~|=] n]]` → the quantity returned
/// (0 when nothing was).
pub fn refund(ctx: Ctx, args: &Args) -> CommandResult {
    let words = args.options(3);
    let parsed = parse_refund_options(words.as_slice());
    let events_at = parsed.as_ref().ok().copied().flatten().map(|e| (3, e));
    if events::report_keys(ctx, args, events_at) {
        return Ok(Reply::Sent);
    }
    if args.len() < 3 {
        return Err(FenceError::Arity("stock.refund"));
    }
    // Any length: what exists can be refunded and read back whatever the limit is now.
    let id = parse_name(args.bytes(2), Name::RequestId, i64::MAX)?;
    let stream = match parsed? {
        Some(e) => Some(Stream::open(ctx, args, 3, e)?),
        None => None,
    };
    let mut key = Key::write(ctx, args.raw(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Int(0)),
        Kind::String => Err(FenceError::NeedsStock),
        Kind::Stock => {
            let Some(stock) = key.stock() else {
                return Err(FenceError::WrongType);
            };
            let before = stock.snapshot();
            let quantity = stock.refund(id)?;
            if quantity == 0 {
                return Ok(Reply::Int(0));
            }
            let remaining = stock.available;
            let mut batch = Batch::default();
            if let Some(stream) = &stream {
                let (q, r) = (Decimal::new(quantity), Decimal::new(remaining));
                let fields: [(&[u8], &[u8]); 5] = [
                    (b"type", b"refund"),
                    (b"sku", args.bytes(1)),
                    (b"id", id),
                    (b"quantity", q.as_bytes()),
                    (b"remaining", r.as_bytes()),
                ];
                if let Err(e) = stream.add(ctx, &mut batch, &fields) {
                    stream.undo(ctx, batch);
                    stock.restore(before, Some((id, Some(quantity))));
                    return Err(e);
                }
            }
            ctx.replicate_stock(args.raw(1), stock, false, Some((id, 0)));
            key.signal_modified();
            ctx.notify(c"stock.refund", args.raw(1));
            stats::REFUNDS.incr();
            if let Some(stream) = &stream {
                stream.publish(ctx, batch);
            }
            Ok(Reply::Int(quantity))
        }
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.INFO key` → available, deducted, requests, fence, restocks (available only for a
/// plain integer string); nil when the key does not exist.
pub fn info(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 2 {
        return Err(FenceError::Arity("stock.info"));
    }
    let mut key = Key::read(ctx, args.raw(1));
    match key.kind() {
        Kind::Empty => Ok(Reply::Nil),
        Kind::String => {
            let available = plain_value_read(ctx, args)?;
            ctx.reply_map(1);
            ctx.reply_bulk(b"available");
            ctx.reply_int(available);
            Ok(Reply::Sent)
        }
        Kind::Stock => {
            let Some(stock) = key.stock() else {
                return Err(FenceError::WrongType);
            };
            ctx.reply_map(5);
            ctx.reply_bulk(b"available");
            ctx.reply_int(stock.available);
            ctx.reply_bulk(b"deducted");
            ctx.reply_int(stock.deducted);
            ctx.reply_bulk(b"requests");
            ctx.reply_int(i64::try_from(stock.ledger_len()).unwrap_or(i64::MAX));
            ctx.reply_bulk(b"fence");
            ctx.reply_int(i64::try_from(stock.fence).unwrap_or(i64::MAX));
            ctx.reply_bulk(b"restocks");
            ctx.reply_int(i64::try_from(stock.restocks_len()).unwrap_or(i64::MAX));
            Ok(Reply::Sent)
        }
        _ => Err(FenceError::WrongType),
    }
}

/// `STOCK.REQUEST key request-id` → quantity held, 0 if refunded, nil if unknown.
pub fn request(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("stock.request"));
    }
    // Any length: what exists can be refunded and read back whatever the limit is now.
    let id = parse_name(args.bytes(2), Name::RequestId, i64::MAX)?;
    let mut key = Key::read(ctx, args.raw(1));
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
