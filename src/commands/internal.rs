//! The replication-only commands that carry effects, not requests (`fence_core::effects`): a
//! replica or an AOF replay applies exactly the state the master decided, and never re-runs
//! clock- or counter-based logic. Ordinary clients are refused, so nobody can forge a token or
//! a ledger entry; an effect that breaks an invariant is refused and logged.

use fence_core::effects::{
    decode_entry, decode_expire_stream, decode_limit, decode_lock, decode_restock, decode_stock,
    Bad,
};
use fence_core::error::{printable, FenceError};
use fence_core::ledger::Value;
use fence_core::stock::{ExpireStream, Stock};

use super::CommandResult;
use crate::ffi::{Args, Ctx, Key, Kind, Reply};
use crate::services::{holds, tokens};

/// A decoding error as the reply (nobody reads it) and the log line say it.
fn bad(command: &'static str, b: Bad) -> FenceError {
    match b {
        Bad::Arity => FenceError::Arity(command),
        Bad::Field(what) => FenceError::BadInternal(what),
    }
}

/// Runs an internal command for the master link or the AOF only; a refused effect is a
/// damaged stream: said in the log, since nobody reads the reply.
fn internal(
    ctx: &Ctx<'_>,
    args: &Args<'_>,
    apply: fn(&Ctx<'_>, &Args<'_>) -> CommandResult,
) -> CommandResult {
    if !ctx.is_replicated_or_loading() {
        return Err(FenceError::InternalOnly);
    }
    let result = apply(ctx, args);
    if let Err(e) = &result {
        tokens::warn(&format!(
            "fence: refused a replicated or AOF effect on key '{}': {e}",
            printable(args.bytes(1))
        ));
    }
    result
}

/// `FENCE.LOCK key owner token expire-at-ms` (0: leave the expiry alone).
pub fn lock(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    internal(ctx, args, apply_lock)
}

fn apply_lock(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let tail = args.tail(2);
    let effect = decode_lock(&tail).map_err(|b| bad("fence.lock", b))?;
    let mut key = Key::write(ctx, args.get(1));
    if !matches!(key.kind(), Kind::Empty | Kind::Lock) {
        return Err(FenceError::WrongType);
    }
    key.set_lease(effect.owner, effect.token);
    if effect.expire_at > 0 {
        key.set_expire_at_ms(effect.expire_at);
    }
    tokens::observe(effect.token);
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}

/// Opens the stock an effect applies to, creating it when the key is empty.
fn stock_key<'k>(ctx: &Ctx<'k>, args: &Args<'k>) -> Result<Key<'k>, FenceError> {
    let mut key = Key::write(ctx, args.get(1));
    match key.kind() {
        Kind::Empty => key.set_stock(Stock::new(0)),
        Kind::Stock => {}
        _ => return Err(FenceError::WrongType),
    }
    Ok(key)
}

/// `FENCE.STOCK key available fence deducted RESET|KEEP [request-id quantity ...]`.
pub fn stock(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    internal(ctx, args, apply_stock)
}

fn apply_stock(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let tail = args.tail(2);
    let (state, entries) = decode_stock(&tail).map_err(|b| bad("fence.stock", b))?;
    let mut key = stock_key(ctx, args)?;
    let Some(stock) = key.stock_mut() else {
        return Err(FenceError::WrongType);
    };
    if state.reset {
        stock.reset(state.available);
    }
    stock.available = state.available;
    stock.fence = state.fence;
    stock.deducted = state.deducted;
    for (id, quantity) in entries {
        // Written before entries had states: a quantity of 0 was a refund.
        stock.put_entry(id, Value::legacy(quantity), None);
    }
    tokens::observe(state.fence);
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}

/// `FENCE.RESTOCK key available restock-id quantity`: a restock with an id (`STOCK.ADD … ID`),
/// or one restock entry of an AOF rewrite.
pub fn restock(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    internal(ctx, args, apply_restock)
}

fn apply_restock(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let tail = args.tail(2);
    let effect = decode_restock(&tail).map_err(|b| bad("fence.restock", b))?;
    let mut key = stock_key(ctx, args)?;
    let Some(stock) = key.stock_mut() else {
        return Err(FenceError::WrongType);
    };
    stock.available = effect.available;
    stock.put_restock(effect.id, effect.quantity);
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}

/// `FENCE.ENTRY key available fence deducted request-id quantity state [deadline] [events]`:
/// one request-ledger entry as the master left it (a deduction, hold, confirmation, refund or
/// expiry), with the stock's scalars.
pub fn entry(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    internal(ctx, args, apply_entry)
}

fn apply_entry(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let tail = args.tail(2);
    let effect = decode_entry(&tail).map_err(|b| bad("fence.entry", b))?;
    let mut key = stock_key(ctx, args)?;
    let Some(stock) = key.stock_mut() else {
        return Err(FenceError::WrongType);
    };
    if !stock.put_entry(effect.id, effect.value, effect.buyer) {
        return Err(FenceError::BadInternal(
            "a change of an entry its master never makes (a hold on an entry not made held, \
             another buyer)",
        ));
    }
    stock.available = effect.available;
    stock.fence = effect.fence;
    stock.deducted = effect.deducted;
    tokens::observe(effect.fence);
    // A replica keeps the index too, so that it returns the holds at once if promoted.
    holds::track(ctx, args.bytes(1), stock, false);
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}

/// `FENCE.LIMIT key per-buyer`: the stock's limit per buyer (`STOCK.SET … LIMIT`,
/// `STOCK.LIMIT`, an AOF rewrite).
pub fn limit(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    internal(ctx, args, apply_limit)
}

fn apply_limit(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let tail = args.tail(2);
    let effect = decode_limit(&tail).map_err(|b| bad("fence.limit", b))?;
    let mut key = stock_key(ctx, args)?;
    let Some(stock) = key.stock_mut() else {
        return Err(FenceError::WrongType);
    };
    stock.limit = effect.limit;
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}

/// `FENCE.EXPIRESTREAM key [stream-key [MAXLEN =|~ n]]`: where the stock announces expired
/// holds.
pub fn expire_stream(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    internal(ctx, args, apply_expire_stream)
}

fn apply_expire_stream(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    let tail = args.tail(2);
    let effect = decode_expire_stream(&tail).map_err(|b| bad("fence.expirestream", b))?;
    let mut key = stock_key(ctx, args)?;
    let Some(stock) = key.stock_mut() else {
        return Err(FenceError::WrongType);
    };
    stock.expire_stream = effect.key.map(|k| ExpireStream {
        key: k.to_vec(),
        maxlen: effect.maxlen,
    });
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}
