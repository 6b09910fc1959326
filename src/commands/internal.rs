//! The replication-only commands that carry effects, not requests: a replica or an AOF
//! replay applies exactly the state the master decided, and never re-runs clock- or
//! counter-based logic. Ordinary clients are refused, so nobody can forge a token or a
//! ledger entry.

use super::CommandResult;
use crate::args::parse_i64;
use crate::error::FenceError;
use crate::glue::{Args, Ctx, Key, Kind, Reply};
use crate::lease::Lease;
use crate::stock::Stock;

fn int(args: &Args, i: usize, what: &'static str) -> Result<i64, FenceError> {
    parse_i64(args.bytes(i)).ok_or(FenceError::BadInternal(what))
}

fn non_negative(args: &Args, i: usize, what: &'static str) -> Result<u64, FenceError> {
    u64::try_from(int(args, i, what)?).map_err(|_| FenceError::BadInternal(what))
}

/// A quantity: 0..=i64::MAX, as every stock holds.
fn quantity(args: &Args, i: usize, what: &'static str) -> Result<i64, FenceError> {
    let v = int(args, i, what)?;
    if v < 0 {
        return Err(FenceError::BadInternal(what));
    }
    Ok(v)
}

/// A refused effect from the master link or the AOF is a damaged stream: said in the log,
/// since nobody reads the reply.
fn logged(ctx: Ctx, args: &Args, result: CommandResult) -> CommandResult {
    if let Err(e) = &result {
        if !matches!(e, FenceError::InternalOnly) {
            crate::types::warn(&format!(
                "fence: refused a replicated or AOF effect on key '{}': {e}",
                crate::error::printable(args.bytes(1))
            ));
        }
    }
    let _ = ctx;
    result
}

/// `FENCE.LOCK key owner token expire-at-ms` (0: leave the expiry alone).
pub fn lock(ctx: Ctx, args: &Args) -> CommandResult {
    if !ctx.is_replicated_or_loading() {
        return Err(FenceError::InternalOnly);
    }
    logged(ctx, args, apply_lock(ctx, args))
}

fn apply_lock(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 5 {
        return Err(FenceError::Arity("fence.lock"));
    }
    let owner = args.bytes(2);
    if owner.is_empty() {
        return Err(FenceError::BadInternal("owner"));
    }
    let token = non_negative(args, 3, "token")?;
    if token == 0 {
        return Err(FenceError::BadInternal("token"));
    }
    let expire_at = int(args, 4, "expire-at")?;
    if expire_at < 0 {
        return Err(FenceError::BadInternal("expire-at"));
    }
    let key = Key::write(ctx, args.raw(1));
    if !matches!(key.kind(), Kind::Empty | Kind::Lock) {
        return Err(FenceError::WrongType);
    }
    key.set_lease(Lease::new(owner, token));
    if expire_at > 0 {
        key.set_expire_at_ms(expire_at);
    }
    crate::types::observe(token);
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}

/// `FENCE.STOCK key available fence deducted RESET|KEEP [request-id quantity ...]`.
pub fn stock(ctx: Ctx, args: &Args) -> CommandResult {
    if !ctx.is_replicated_or_loading() {
        return Err(FenceError::InternalOnly);
    }
    logged(ctx, args, apply_stock(ctx, args))
}

fn apply_stock(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() < 6 || (args.len() - 6) % 2 != 0 {
        return Err(FenceError::Arity("fence.stock"));
    }
    let available = quantity(args, 2, "available")?;
    let fence = non_negative(args, 3, "fence")?;
    let deducted = quantity(args, 4, "deducted")?;
    let mode = args.bytes(5);
    let reset = if mode.eq_ignore_ascii_case(b"RESET") {
        true
    } else if mode.eq_ignore_ascii_case(b"KEEP") {
        false
    } else {
        return Err(FenceError::BadInternal("mode"));
    };
    let mut entries = Vec::with_capacity((args.len() - 6) / 2);
    for i in (6..args.len()).step_by(2) {
        if args.bytes(i).is_empty() {
            return Err(FenceError::BadInternal("request id"));
        }
        entries.push((args.bytes(i), quantity(args, i + 1, "quantity")?));
    }
    let mut key = Key::write(ctx, args.raw(1));
    match key.kind() {
        Kind::Empty => key.set_stock(Stock::new(0)),
        Kind::Stock => {}
        _ => return Err(FenceError::WrongType),
    }
    let Some(stock) = key.stock() else {
        return Err(FenceError::WrongType);
    };
    if reset {
        stock.reset(available);
    }
    stock.available = available;
    stock.fence = fence;
    crate::types::observe(fence);
    stock.deducted = deducted;
    for (id, quantity) in entries {
        stock.put_entry(id, quantity);
    }
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}

/// `FENCE.RESTOCK key available restock-id quantity`: a restock with an id (`STOCK.ADD … ID`),
/// or one restock entry of an AOF rewrite.
pub fn restock(ctx: Ctx, args: &Args) -> CommandResult {
    if !ctx.is_replicated_or_loading() {
        return Err(FenceError::InternalOnly);
    }
    logged(ctx, args, apply_restock(ctx, args))
}

fn apply_restock(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 5 {
        return Err(FenceError::Arity("fence.restock"));
    }
    let available = quantity(args, 2, "available")?;
    let id = args.bytes(3);
    if id.is_empty() {
        return Err(FenceError::BadInternal("restock id"));
    }
    let added = quantity(args, 4, "quantity")?;
    let mut key = Key::write(ctx, args.raw(1));
    match key.kind() {
        Kind::Empty => key.set_stock(Stock::new(0)),
        Kind::Stock => {}
        _ => return Err(FenceError::WrongType),
    }
    let Some(stock) = key.stock() else {
        return Err(FenceError::WrongType);
    };
    stock.available = available;
    stock.put_restock(id, added);
    ctx.replicate_verbatim();
    key.signal_modified();
    Ok(Reply::Ok)
}
