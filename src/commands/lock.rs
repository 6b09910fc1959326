//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE, LOCK.STATUS: parse, decide (in `lease`), apply,
//! replicate, reply. Waiting is in `wait`.

use redis_module::raw;

use super::CommandResult;
use super::{eviction, wait};
use crate::args::{parse_acquire_options, parse_name, parse_one_option, parse_token, parse_ttl};
use crate::clock::{expire_at_ms, now_us};
use crate::config::{MAX_ID_LENGTH, MAX_TTL_MS};
use crate::error::{FenceError, Name};
use crate::glue::{string_bytes, token_reply, Args, Ctx, Key, Owner, Reply};
use crate::lease::{decide_acquire, held_as, Acquire, Lease};
use crate::stats;
use crate::TOKENS;

/// Grants the (empty) key `name` to `owner` for `ttl` ms with a new token, replicated as
/// its effect. Used by `LOCK.ACQUIRE` and by the hand-off to a waiter. Returns the token
/// and the absolute expiry (Unix ms); refused, with nothing changed, when the token clock is
/// at its ceiling.
pub fn grant(
    ctx: Ctx,
    key: &Key,
    name: *mut raw::RedisModuleString,
    owner: Owner<'_>,
    ttl: i64,
) -> Result<(u64, i64), FenceError> {
    // A token restored a moment ago is above every token issued from now on.
    crate::types::settle();
    let now = now_us();
    let token = TOKENS.next(now).ok_or(FenceError::ClockExhausted)?;
    key.set_lease(Lease::new(owner.bytes(), token));
    let expire_at = expire_at_ms(now, ttl);
    key.set_expire_at_ms(expire_at);
    ctx.replicate_lock(name, owner, token, expire_at);
    key.signal_modified();
    ctx.notify(c"lock.acquire", name);
    stats::GRANTS.incr();
    Ok((token, expire_at))
}

/// Gives the lock `owner` holds with `token` a new TTL of `ttl` ms, replicated as its effect.
/// Returns the new absolute expiry (Unix ms).
pub fn extend(
    ctx: Ctx,
    key: &Key,
    name: *mut raw::RedisModuleString,
    owner: Owner<'_>,
    token: u64,
    ttl: i64,
) -> i64 {
    let expire_at = expire_at_ms(now_us(), ttl);
    key.set_expire_at_ms(expire_at);
    ctx.replicate_lock(name, owner, token, expire_at);
    key.signal_modified();
    // A shorter TTL moves the hand-off to the waiters earlier (no keyspace event tells the
    // waiting machinery: setting an expiry through the API sends none).
    if wait::anybody_waits() {
        let id = wait::key_id(ctx, string_bytes(name));
        wait::ensure_recheck(ctx, &id, expire_at.saturating_add(1));
    }
    expire_at
}

/// `LOCK.ACQUIRE key owner ttl-ms [WAIT timeout-ms]` → token, or nil when another owner
/// holds the lock (or, with `WAIT`, when the wait times out).
pub fn acquire(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() < 4 {
        return Err(FenceError::Arity("lock.acquire"));
    }
    // `fence.max-id-length` bounds a new holder only: the holder of a lock taken before the
    // limit was lowered still re-acquires it.
    let owner = parse_name(args.bytes(2), Name::Owner, i64::MAX)?;
    let ttl = parse_ttl(args.bytes(3), MAX_TTL_MS.get())?;
    let wait_ms = parse_acquire_options(args.options(4).as_slice())?;
    eviction::check_lock(ctx)?;
    let key = Key::write(ctx, args.raw(1));
    let waiting = wait::waiters_for(ctx, args.bytes(1));
    let decision = decide_acquire(key.lease()?.as_deref(), owner, waiting);
    let max_owner = MAX_ID_LENGTH.get();
    if !matches!(decision, Acquire::Reacquire(_))
        && i64::try_from(owner.len()).map_or(true, |len| len > max_owner)
    {
        return Err(FenceError::NameTooLong {
            name: Name::Owner,
            max: max_owner,
        });
    }
    match decision {
        Acquire::Grant => {
            let (token, _) = grant(ctx, &key, args.raw(1), Owner::Arg(args.raw(2)), ttl)?;
            Ok(token_reply(token))
        }
        Acquire::Reacquire(token) => {
            extend(ctx, &key, args.raw(1), Owner::Arg(args.raw(2)), token, ttl);
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

/// The `[TOKEN token]` of LOCK.RENEW and LOCK.RELEASE, from argument `from` on.
fn token_option(args: &Args, from: usize) -> Result<Option<u64>, FenceError> {
    match parse_one_option(args.options(from).as_slice(), "TOKEN")? {
        Some(t) => Ok(Some(parse_token(t)?)),
        None => Ok(None),
    }
}

/// `LOCK.RENEW key owner ttl-ms [TOKEN token]` → the holder's token, or nil when `owner` does
/// not hold it (with `TOKEN`: does not hold that grant).
pub fn renew(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() < 4 {
        return Err(FenceError::Arity("lock.renew"));
    }
    // Any length: a holder is never stranded by a lowered fence.max-id-length.
    let owner = parse_name(args.bytes(2), Name::Owner, i64::MAX)?;
    let ttl = parse_ttl(args.bytes(3), MAX_TTL_MS.get())?;
    let grant = token_option(args, 4)?;
    let key = Key::write(ctx, args.raw(1));
    let Some(token) = held_as(key.lease()?.as_deref(), owner, grant) else {
        stats::RENEWALS_REFUSED.incr();
        return Ok(Reply::Nil);
    };
    extend(ctx, &key, args.raw(1), Owner::Arg(args.raw(2)), token, ttl);
    stats::RENEWALS.incr();
    Ok(token_reply(token))
}

/// `LOCK.RELEASE key owner [TOKEN token]` → 1 when `owner` held the lock (with `TOKEN`: that
/// grant) and no longer does, else 0. The first waiter, if any, is granted the lock before this
/// command returns.
pub fn release(ctx: Ctx, args: &Args) -> CommandResult {
    if args.len() < 3 {
        return Err(FenceError::Arity("lock.release"));
    }
    // Any length: a holder is never stranded by a lowered fence.max-id-length.
    let owner = parse_name(args.bytes(2), Name::Owner, i64::MAX)?;
    let grant = token_option(args, 3)?;
    let key = Key::write(ctx, args.raw(1));
    if held_as(key.lease()?.as_deref(), owner, grant).is_none() {
        stats::RELEASES_REFUSED.incr();
        return Ok(Reply::Int(0));
    }
    crate::info::releasing(|| key.delete());
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
