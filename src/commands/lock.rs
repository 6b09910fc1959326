//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE, LOCK.STATUS: parse, decide (in `lease`), apply,
//! replicate, reply.

use super::CommandResult;
use crate::args::{parse_name, parse_ttl};
use crate::clock::now_us;
use crate::config::{MAX_ID_LENGTH, MAX_TTL_MS};
use crate::error::{FenceError, Name};
use crate::glue::{token_reply, Args, Ctx, Key, Reply};
use crate::lease::{decide_acquire, decide_release, decide_renew, Acquire, Lease};
use crate::TOKENS;

/// `LOCK.ACQUIRE key owner ttl-ms` → token, or nil when another owner holds the lock.
pub fn acquire(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 4 {
        return Err(FenceError::Arity("lock.acquire"));
    }
    let owner = parse_name(args.bytes(2), Name::Owner, MAX_ID_LENGTH.get())?;
    let ttl = parse_ttl(args.bytes(3), MAX_TTL_MS.get())?;
    let mut key = Key::write(ctx, args.raw(1));
    let token = match decide_acquire(key.lease()?.as_deref(), owner) {
        Acquire::Contended => return Ok(Reply::Nil),
        Acquire::Reacquire(token) => token,
        Acquire::Grant => {
            let token = TOKENS.next(now_us());
            key.set_lease(Lease::new(owner, token));
            token
        }
    };
    key.set_ttl_ms(ttl);
    let expire_at = key.expire_at_ms();
    if let Some(lease) = key.lease()? {
        ctx.replicate_lock(args.raw(1), lease, expire_at);
    }
    key.signal_modified();
    Ok(token_reply(token))
}

/// `LOCK.RENEW key owner ttl-ms` → the holder's token, or nil when `owner` does not hold it.
pub fn renew(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 4 {
        return Err(FenceError::Arity("lock.renew"));
    }
    let owner = parse_name(args.bytes(2), Name::Owner, MAX_ID_LENGTH.get())?;
    let ttl = parse_ttl(args.bytes(3), MAX_TTL_MS.get())?;
    let mut key = Key::write(ctx, args.raw(1));
    let Some(token) = decide_renew(key.lease()?.as_deref(), owner) else {
        return Ok(Reply::Nil);
    };
    key.set_ttl_ms(ttl);
    let expire_at = key.expire_at_ms();
    if let Some(lease) = key.lease()? {
        ctx.replicate_lock(args.raw(1), lease, expire_at);
    }
    key.signal_modified();
    Ok(token_reply(token))
}

/// `LOCK.RELEASE key owner` → 1 when `owner` held the lock and no longer does, else 0.
pub fn release(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("lock.release"));
    }
    let owner = parse_name(args.bytes(2), Name::Owner, MAX_ID_LENGTH.get())?;
    let mut key = Key::write(ctx, args.raw(1));
    if !decide_release(key.lease()?.as_deref(), owner) {
        return Ok(Reply::Int(0));
    }
    key.delete();
    ctx.replicate_del(args.raw(1));
    key.signal_modified();
    Ok(Reply::Int(1))
}

/// `LOCK.STATUS key` → nil, or owner, token, ttl, waiters (a map under RESP3).
pub fn status(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 2 {
        return Err(FenceError::Arity("lock.status"));
    }
    let mut key = Key::read(ctx, args.raw(1));
    let Some(lease) = key.lease()? else {
        return Ok(Reply::Nil);
    };
    ctx.reply_map(4);
    ctx.reply_bulk(b"owner");
    ctx.reply_bulk(&lease.owner);
    ctx.reply_bulk(b"token");
    ctx.reply_int(i64::try_from(lease.token).unwrap_or(i64::MAX));
    ctx.reply_bulk(b"ttl");
    ctx.reply_int(key.ttl_ms());
    ctx.reply_bulk(b"waiters");
    ctx.reply_int(0);
    Ok(Reply::Sent)
}
