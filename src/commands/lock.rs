//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE, LOCK.STATUS: parse, decide (in `lease`), apply,
//! replicate, reply. Waiting is in `wait`.

use redis_module::raw;

use super::wait;
use super::CommandResult;
use crate::args::{parse_acquire_options, parse_name, parse_ttl};
use crate::clock::now_us;
use crate::config::{MAX_ID_LENGTH, MAX_TTL_MS};
use crate::error::{FenceError, Name};
use crate::glue::{token_reply, Args, Ctx, Key, Reply};
use crate::lease::{decide_acquire, decide_release, decide_renew, Acquire, Lease};
use crate::stats;
use crate::TOKENS;

/// Grants the (empty) key `name` to `owner` for `ttl` ms with a new token, replicated as
/// its effect. Used by `LOCK.ACQUIRE` and by the hand-off to a waiter.
pub fn grant(
    ctx: Ctx,
    key: &Key,
    name: *mut raw::RedisModuleString,
    owner: &[u8],
    ttl: i64,
) -> u64 {
    let token = TOKENS.next(now_us());
    key.set_lease(Lease::new(owner, token));
    key.set_ttl_ms(ttl);
    let expire_at = key.expire_at_ms();
    if let Ok(Some(lease)) = key.lease() {
        ctx.replicate_lock(name, &lease, expire_at);
    }
    key.signal_modified();
    ctx.notify(c"lock.acquire", name);
    stats::GRANTS.incr();
    token
}

/// `LOCK.ACQUIRE key owner ttl-ms [WAIT timeout-ms]` → token, or nil when another owner
/// holds the lock (or, with `WAIT`, when the wait times out).
pub fn acquire(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() < 4 {
        return Err(FenceError::Arity("lock.acquire"));
    }
    let owner = parse_name(args.bytes(2), Name::Owner, MAX_ID_LENGTH.get())?;
    let ttl = parse_ttl(args.bytes(3), MAX_TTL_MS.get())?;
    let wait_ms = parse_acquire_options(args.options(4).as_slice())?;
    let key = Key::write(ctx, args.raw(1));
    let waiting = wait::waiters_for(ctx, args.bytes(1));
    match decide_acquire(key.lease()?.as_deref(), owner, waiting) {
        Acquire::Grant => Ok(token_reply(grant(ctx, &key, args.raw(1), owner, ttl))),
        Acquire::Reacquire(token) => {
            key.set_ttl_ms(ttl);
            let expire_at = key.expire_at_ms();
            if let Some(lease) = key.lease()? {
                ctx.replicate_lock(args.raw(1), &lease, expire_at);
            }
            key.signal_modified();
            ctx.notify(c"lock.acquire", args.raw(1));
            stats::REACQUIRES.incr();
            Ok(token_reply(token))
        }
        Acquire::Contended => match wait_ms {
            Some(timeout) if wait::may_block(ctx) => {
                let expire_at = match key.lease()? {
                    Some(_) => key.expire_at_ms(),
                    None => -1,
                };
                drop(key);
                let id = wait::key_id(ctx, args.bytes(1));
                wait::block(ctx, &id, owner, ttl, timeout, expire_at);
                Ok(Reply::Sent)
            }
            _ => {
                stats::CONTENDED.incr();
                Ok(Reply::Nil)
            }
        },
    }
}

/// `LOCK.RENEW key owner ttl-ms` → the holder's token, or nil when `owner` does not hold it.
pub fn renew(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 4 {
        return Err(FenceError::Arity("lock.renew"));
    }
    let owner = parse_name(args.bytes(2), Name::Owner, MAX_ID_LENGTH.get())?;
    let ttl = parse_ttl(args.bytes(3), MAX_TTL_MS.get())?;
    let key = Key::write(ctx, args.raw(1));
    let Some(token) = decide_renew(key.lease()?.as_deref(), owner) else {
        stats::RENEWALS_REFUSED.incr();
        return Ok(Reply::Nil);
    };
    key.set_ttl_ms(ttl);
    let expire_at = key.expire_at_ms();
    if let Some(lease) = key.lease()? {
        ctx.replicate_lock(args.raw(1), &lease, expire_at);
    }
    key.signal_modified();
    stats::RENEWALS.incr();
    Ok(token_reply(token))
}

/// `LOCK.RELEASE key owner` → 1 when `owner` held the lock and no longer does, else 0.
/// The first waiter, if any, is granted the lock before this command returns.
pub fn release(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 3 {
        return Err(FenceError::Arity("lock.release"));
    }
    let owner = parse_name(args.bytes(2), Name::Owner, MAX_ID_LENGTH.get())?;
    let key = Key::write(ctx, args.raw(1));
    if !decide_release(key.lease()?.as_deref(), owner) {
        stats::RELEASES_REFUSED.incr();
        return Ok(Reply::Int(0));
    }
    key.delete();
    crate::info::lock_released();
    ctx.replicate_del(args.raw(1));
    key.signal_modified();
    ctx.notify(c"lock.release", args.raw(1));
    stats::RELEASES.incr();
    drop(key);
    if wait::anybody_waits() {
        wait::hand_off(ctx, &wait::key_id(ctx, args.bytes(1)), args.raw(1));
    }
    Ok(Reply::Int(1))
}

/// `LOCK.STATUS key` → nil, or owner, token, ttl, waiters (a map under RESP3).
pub fn status(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() != 2 {
        return Err(FenceError::Arity("lock.status"));
    }
    let key = Key::read(ctx, args.raw(1));
    let ttl = key.ttl_ms();
    let Some(lease) = key.lease()? else {
        return Ok(Reply::Nil);
    };
    let waiting = wait::waiters_for(ctx, args.bytes(1));
    ctx.reply_map(4);
    ctx.reply_bulk(b"owner");
    ctx.reply_bulk(lease.owner());
    ctx.reply_bulk(b"token");
    ctx.reply_int(i64::try_from(lease.token()).unwrap_or(i64::MAX));
    ctx.reply_bulk(b"ttl");
    ctx.reply_int(ttl);
    ctx.reply_bulk(b"waiters");
    ctx.reply_int(i64::try_from(waiting).unwrap_or(i64::MAX));
    Ok(Reply::Sent)
}
