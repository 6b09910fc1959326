//! STOCK.CART, STOCK.CART.REFUND, STOCK.CART.CONFIRM: several stocks in one step, all or
//! nothing. Every item is an ordinary entry of its stock's ledger under the cart's request id,
//! decided by `fence_core::stock` as `STOCK.DEDUCT` decides it; a refusal of any item takes back
//! the items already decided, so no key changes. The items' effects are propagated together,
//! which Redis wraps in one MULTI/EXEC: no replica and no AOF ever holds part of a cart.

use fence_core::args::{
    cart_confirm_key_positions, cart_key_positions, parse_cart, parse_cart_keys, parse_cart_refund,
    CartArgs, Decimal,
};
use fence_core::cart::{self, Presence};
use fence_core::error::{printable, CartCode, FenceError};
use fence_core::stats;
use fence_core::stock::{DeductRequest, Stock};

use super::stock::{add_deduct_event, bounds, deduction_made, hold_and_token};
use super::{events, CommandResult};
use crate::ffi::{Args, Ctx, Key, Kind, RStr, Reply};
use crate::services::eviction;
use crate::services::holds;
use crate::services::streams::{Batch, Stream};

/// Which cart command reports its keys.
#[derive(Clone, Copy)]
enum Form {
    Cart,
    Refund,
    Confirm,
}

/// Reports a cart command's keys to Redis (cluster routing, ACL key patterns, `COMMAND
/// GETKEYS`); None when this is not a key-position request.
fn report(ctx: &Ctx<'_>, args: &Args<'_>, form: Form) -> Option<Reply> {
    let words = args.tail(1);
    let positions = match form {
        Form::Cart => cart_key_positions(&words, true),
        Form::Refund => cart_key_positions(&words, false),
        Form::Confirm => cart_confirm_key_positions(&words),
    };
    let positions: Vec<usize> = positions.into_iter().map(|p| p + 1).collect();
    ctx.report_keys(&positions).map(Reply::KeysReported)
}

/// An item's refusal: its code, its index from 0 and its key.
fn refused(code: CartCode, index: usize, key: Option<&Key<'_>>) -> FenceError {
    FenceError::CartItem {
        code,
        index: index + 1,
        key: printable(key.map_or(&[][..], |k| k.name().bytes())),
    }
}

/// Opens every key of a cart for writing, checked: another type is `WRONGTYPE`, a plain
/// string needs a stock; with `need_all`, a missing key is refused `NOKEY`.
fn open_all<'k>(
    ctx: &Ctx<'k>,
    args: &Args<'k>,
    positions: impl Iterator<Item = usize>,
    need_all: bool,
) -> Result<Vec<Key<'k>>, FenceError> {
    let keys: Vec<Key<'k>> = positions.map(|p| Key::write(ctx, args.get(p))).collect();
    for key in &keys {
        match key.kind() {
            Kind::Empty | Kind::Stock => {}
            Kind::String => return Err(FenceError::NeedsStock),
            _ => return Err(FenceError::WrongType),
        }
    }
    if need_all {
        if let Some((i, key)) = keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.kind() == Kind::Empty)
        {
            return Err(refused(CartCode::NoKey, i, Some(key)));
        }
    }
    Ok(keys)
}

/// Whether the ledgers hold `id`: true when every one does, false when none does, or the
/// refusal naming the first that does when only some do.
fn all_or_none(keys: &[Key<'_>], id: &[u8]) -> Result<bool, FenceError> {
    let stocks: Vec<Option<&Stock>> = keys.iter().map(Key::stock).collect();
    match cart::presence(&stocks, id) {
        Presence::All => Ok(true),
        Presence::None => Ok(false),
        Presence::Some(i) => Err(FenceError::PartialCart {
            id: printable(id),
            index: i + 1,
            key: printable(keys.get(i).map_or(&[][..], |k| k.name().bytes())),
        }),
    }
}

/// `STOCK.CART numkeys key quantity [key quantity ...] ID request-id [BUYER buyer-id] [HOLD ms]
/// [FENCE token] [EVENTS stream-key [MAXLEN [~|=] n]]` → the quantity left in each stock.
pub fn cart(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if let Some(reported) = report(ctx, args, Form::Cart) {
        return Ok(reported);
    }
    if args.len() < 6 {
        return Err(FenceError::Arity("stock.cart"));
    }
    let words = args.tail(1);
    let parsed: CartArgs<'_> = parse_cart(&words)?;
    let options = &parsed.options;
    let hold = hold_and_token(options)?;
    let n = parsed.items.len();
    let mut keys = open_all(ctx, args, (0..n).map(|i| 2 + 2 * i), true)?;
    // Due holds come back first, so every decision sees every unit for sale.
    for (key, (_, quantity)) in keys.iter_mut().zip(&parsed.items) {
        holds::before_write(ctx, key.name(), key, Some(*quantity));
        if let Some(buyer) = options.buyer {
            holds::before_buyer(ctx, key, buyer);
        }
    }
    // Opened once no more holds come back in this call (an expiry announced on the same
    // stream would create it under another handle).
    let mut stream = match options.events {
        Some(e) => Some(events::open(ctx, args, 1 + parsed.options_at, e)?),
        None => None,
    };
    if let Some(token) = options.fence {
        let stocks: Vec<&Stock> = keys.iter().filter_map(Key::stock).collect();
        if let Some(i) = cart::first_stale(&stocks, token) {
            stats::STALE.incr();
            return Err(refused(CartCode::Stale, i, keys.get(i)));
        }
    }
    // The id across the stocks: a replay of the whole cart, a new cart, or a refusal.
    if all_or_none(&keys, parsed.id)? {
        stats::REPLAYS.incr();
        let left = keys
            .iter()
            .map(|k| k.stock().map_or(0, |s| s.available))
            .collect();
        return Ok(Reply::Ints(left));
    }
    // Asked of every stock for its new id; prepared before any stock is borrowed.
    let admissions: Vec<_> = keys.iter().map(|k| eviction::check_stock(ctx, k)).collect();
    let names: Vec<&[u8]> = parsed.items.iter().map(|(k, _)| *k).collect();
    let quantities: Vec<i64> = parsed.items.iter().map(|(_, q)| *q).collect();
    let request = DeductRequest {
        quantity: 0,
        id: Some(parsed.id),
        fence: options.fence,
        hold,
        buyer: options.buyer,
    };
    let decided = {
        let mut stocks: Vec<&mut Stock> = keys.iter_mut().filter_map(Key::stock_mut).collect();
        cart::deduct_all(
            &mut stocks,
            &names,
            &quantities,
            request,
            bounds(),
            &admissions,
        )
    };
    let before = decided.before;
    let left = match decided.outcome {
        Ok(left) => left,
        Err(e) => {
            match e {
                FenceError::CartItem {
                    code: CartCode::SoldOut,
                    ..
                } => stats::SOLD_OUT.incr(),
                FenceError::CartItem {
                    code: CartCode::Limit,
                    ..
                } => stats::LIMIT_REFUSALS.incr(),
                _ => {}
            }
            return Err(e);
        }
    };
    // The events of every item, or none.
    let batch = match &mut stream {
        Some(stream) => match cart_events(ctx, stream, &keys, &parsed, &left) {
            Ok(batch) => Some(batch),
            Err(e) => {
                let mut stocks: Vec<&mut Stock> =
                    keys.iter_mut().filter_map(Key::stock_mut).collect();
                cart::take_back(&mut stocks, &before, parsed.id);
                return Err(e);
            }
        },
        None => None,
    };
    let stream_name = stream.as_ref().map(Stream::name);
    for (key, remaining) in keys.iter_mut().zip(&left) {
        deduction_made(ctx, key, options, hold.is_some(), stream_name, *remaining);
    }
    if let (Some(stream), Some(batch)) = (&mut stream, batch) {
        stream.publish(ctx, batch);
    }
    Ok(Reply::Ints(left))
}

/// One `deduct` event per item (with `cart` and `item`) and a `soldout` event per stock the
/// cart emptied, all in one batch, or none when the stream cannot take them all.
fn cart_events<'c>(
    ctx: &Ctx<'c>,
    stream: &mut Stream<'_>,
    keys: &[Key<'_>],
    cart: &CartArgs<'_>,
    left: &[i64],
) -> Result<Batch<'c>, FenceError> {
    let entries = left.len() + left.iter().filter(|r| **r == 0).count();
    if entries > 1 && !stream.has_room(ctx, entries as u64) {
        return Err(FenceError::StreamFull);
    }
    let mut batch = Batch::new();
    let n = cart.items.len();
    for (i, ((key, (_, quantity)), remaining)) in keys.iter().zip(&cart.items).zip(left).enumerate()
    {
        let added = add_deduct_event(
            ctx,
            stream,
            &mut batch,
            key.name().bytes(),
            *quantity,
            *remaining,
            &cart.options,
            Some((n, i + 1)),
        );
        if let Err(e) = added {
            stream.undo(batch);
            return Err(e);
        }
    }
    Ok(batch)
}

/// Opens a cart's keys (positions 2 to `n` + 1) for `STOCK.CART.REFUND` / `STOCK.CART.CONFIRM`,
/// returns each one's due hold of `id` first, and checks the id is in every ledger or none.
fn open_cart<'k>(
    ctx: &Ctx<'k>,
    args: &Args<'k>,
    n: usize,
    id: &[u8],
) -> Result<(Vec<Key<'k>>, bool), FenceError> {
    let mut keys = open_all(ctx, args, (0..n).map(|i| 2 + i), false)?;
    for key in keys.iter_mut() {
        if key.kind() == Kind::Stock {
            holds::before_decision(ctx, key.name(), key, id);
        }
    }
    let all = all_or_none(&keys, id)?;
    Ok((keys, all))
}

/// `STOCK.CART.REFUND numkeys key [key ...] request-id [EVENTS stream-key [MAXLEN [~|=] n]]` →
/// the quantity each stock got back.
pub fn refund(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if let Some(reported) = report(ctx, args, Form::Refund) {
        return Ok(reported);
    }
    if args.len() < 4 {
        return Err(FenceError::Arity("stock.cart.refund"));
    }
    let words = args.tail(1);
    let parsed = parse_cart_refund(&words)?;
    let (mut keys, all) = open_cart(ctx, args, parsed.keys.len(), parsed.id)?;
    for key in keys.iter_mut() {
        if key.kind() == Kind::Stock {
            holds::before_write(ctx, key.name(), key, None);
        }
    }
    // A stream of another type is refused as `STOCK.REFUND` refuses it, known id or not.
    let mut stream = match parsed.events {
        Some(e) => Some(events::open(ctx, args, 1 + parsed.options_at, e)?),
        None => None,
    };
    if !all {
        return Ok(Reply::Ints(vec![0; keys.len()]));
    }
    let id = parsed.id;
    let refunded = {
        let mut stocks: Vec<&mut Stock> = keys.iter_mut().filter_map(Key::stock_mut).collect();
        cart::refund_all(&mut stocks, id)?
    };
    let batch = match &mut stream {
        Some(stream) => match refund_events(ctx, stream, &keys, id, &refunded.back) {
            Ok(batch) => Some(batch),
            Err(e) => {
                let mut stocks: Vec<&mut Stock> =
                    keys.iter_mut().filter_map(Key::stock_mut).collect();
                cart::undo_refunds(&mut stocks, &refunded.before, id);
                return Err(e);
            }
        },
        None => None,
    };
    for (key, quantity) in keys.iter_mut().zip(&refunded.back) {
        if *quantity > 0 {
            announce_entry(ctx, key, id);
            ctx.notify(c"stock.refund", key.name());
            stats::REFUNDS.incr();
        }
    }
    if let (Some(stream), Some(batch)) = (&mut stream, batch) {
        stream.publish(ctx, batch);
    }
    Ok(Reply::Ints(refunded.back))
}

/// One `refund` event per item that gave units back (with `cart` and `item`), all in one
/// batch, or none when the stream cannot take them all.
fn refund_events<'c>(
    ctx: &Ctx<'c>,
    stream: &mut Stream<'_>,
    keys: &[Key<'_>],
    id: &[u8],
    back: &[i64],
) -> Result<Batch<'c>, FenceError> {
    let entries = back.iter().filter(|q| **q > 0).count();
    if entries > 1 && !stream.has_room(ctx, entries as u64) {
        return Err(FenceError::StreamFull);
    }
    let mut batch = Batch::new();
    let n = Decimal::new(i64::try_from(keys.len()).unwrap_or(i64::MAX));
    for (i, (key, quantity)) in keys.iter().zip(back).enumerate() {
        if *quantity == 0 {
            continue;
        }
        let remaining = key.stock().map_or(0, |s| s.available);
        let (q, r) = (Decimal::new(*quantity), Decimal::new(remaining));
        let item = Decimal::new(i64::try_from(i + 1).unwrap_or(i64::MAX));
        let fields: [(&[u8], &[u8]); 7] = [
            (b"type", b"refund"),
            (b"sku", key.name().bytes()),
            (b"id", id),
            (b"quantity", q.as_bytes()),
            (b"remaining", r.as_bytes()),
            (b"cart", n.as_bytes()),
            (b"item", item.as_bytes()),
        ];
        if let Err(e) = stream.add(ctx, &mut batch, &fields) {
            stream.undo(batch);
            return Err(e);
        }
    }
    Ok(batch)
}

/// Replicates request `id`'s entry of an open stock as it stands and signals the key.
fn announce_entry(ctx: &Ctx<'_>, key: &mut Key<'_>, id: &[u8]) {
    let name: RStr<'_> = key.name();
    if let Some(stock) = key.stock() {
        let value = stock.request_at(id, 0).unwrap_or_default();
        ctx.replicate(name, &stock.entry_effect(id, value).encode(), None);
    }
    key.signal_modified();
}

/// `STOCK.CART.CONFIRM numkeys key [key ...] request-id` → 1 (every item confirmed now or
/// already), 0 (no stock knows the id), or the first ended item's `EXPIRED` / `REFUNDED`.
pub fn confirm(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if let Some(reported) = report(ctx, args, Form::Confirm) {
        return Ok(reported);
    }
    if args.len() < 4 {
        return Err(FenceError::Arity("stock.cart.confirm"));
    }
    let words = args.tail(1);
    let (names, id) = parse_cart_keys(&words, "stock.cart.confirm")?;
    let (mut keys, all) = open_cart(ctx, args, names.len(), id)?;
    if !all {
        return Ok(Reply::Int(0));
    }
    let confirmed = {
        let mut stocks: Vec<&mut Stock> = keys.iter_mut().filter_map(Key::stock_mut).collect();
        cart::confirm_all(&mut stocks, id)?
    };
    for (key, now) in keys.iter_mut().zip(confirmed) {
        if now {
            announce_entry(ctx, key, id);
            ctx.notify(c"stock.confirm", key.name());
            stats::CONFIRMS.incr();
        }
    }
    Ok(Reply::Int(1))
}
