//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE, LOCK.STATUS: parse, decide
//! (`fence_core::lease`), apply (`services::grant`), reply. Waiting is `services::waiting`.

use fence_core::args::{
    parse_acquire_options, parse_name, parse_one_option, parse_token, parse_ttl,
};
use fence_core::config::{MAX_ID_LENGTH, MAX_TTL_MS};
use fence_core::error::{FenceError, Name};
use fence_core::lease::{decide_acquire, held_as, Acquire};
use fence_core::stats;

use super::CommandResult;
use crate::ffi::ctx::{replicate_del, token_reply};
use crate::ffi::{Args, Ctx, Field, Key, Owner, Reply};
use crate::services::{eviction, expiry, grant, waiting};

/// `LOCK.ACQUIRE key owner ttl-ms [WAIT timeout-ms]` → token, or nil when another owner
/// holds the lock (or, with `WAIT`, when the wait times out).
pub fn acquire(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() < 4 {
        return Err(FenceError::Arity("lock.acquire"));
    }
    // `fence.max-id-length` bounds a new holder only: the holder of a lock taken before the
    // limit was lowered still re-acquires it.
    let owner = parse_name(args.bytes(2), Name::Owner, i64::MAX)?;
    let ttl = parse_ttl(args.bytes(3), MAX_TTL_MS.get())?;
    let wait_ms = parse_acquire_options(args.options(4).as_slice())?;
    eviction::check_lock(ctx)?;
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    let waiting = waiting::waiters_for(ctx, name.bytes());
    let decision = decide_acquire(key.lease()?, owner, waiting);
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
            let (token, _) = grant::grant(ctx, &mut key, Owner::Arg(args.get(2)), ttl)?;
            Ok(token_reply(token))
        }
        Acquire::Reacquire(token) => {
            let at = grant::extend(ctx, &mut key, Owner::Arg(args.get(2)), token, ttl);
            drop(key);
            waiting::deadline_moved(ctx, name.bytes(), at);
            ctx.notify(c"lock.acquire", name);
            stats::REACQUIRES.incr();
            Ok(token_reply(token))
        }
        Acquire::Contended => match wait_ms {
            Some(timeout) if ctx.may_block() => {
                let expire_at = match key.lease()? {
                    Some(_) => key.expire_at_ms(),
                    None => -1,
                };
                drop(key);
                let id = waiting::key_id(ctx, name.bytes());
                waiting::block(ctx, &id, owner, ttl, timeout, expire_at)
            }
            _ => {
                stats::CONTENDED.incr();
                Ok(Reply::Nil)
            }
        },
    }
}

/// The `[TOKEN token]` of LOCK.RENEW and LOCK.RELEASE, from argument `from` on.
fn token_option(args: &Args<'_>, from: usize) -> Result<Option<u64>, FenceError> {
    match parse_one_option(args.options(from).as_slice(), "TOKEN")? {
        Some(t) => Ok(Some(parse_token(t)?)),
        None => Ok(None),
    }
}

/// `LOCK.RENEW key owner ttl-ms [TOKEN token]` → the holder's token, or nil when `owner` does
/// not hold it (with `TOKEN`: does not hold that grant).
pub fn renew(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() < 4 {
        return Err(FenceError::Arity("lock.renew"));
    }
    // Any length: a holder is never stranded by a lowered fence.max-id-length.
    let owner = parse_name(args.bytes(2), Name::Owner, i64::MAX)?;
    let ttl = parse_ttl(args.bytes(3), MAX_TTL_MS.get())?;
    let grant_token = token_option(args, 4)?;
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    let Some(token) = held_as(key.lease()?, owner, grant_token) else {
        stats::RENEWALS_REFUSED.incr();
        return Ok(Reply::Nil);
    };
    let at = grant::extend(ctx, &mut key, Owner::Arg(args.get(2)), token, ttl);
    drop(key);
    waiting::deadline_moved(ctx, name.bytes(), at);
    stats::RENEWALS.incr();
    Ok(token_reply(token))
}

/// `LOCK.RELEASE key owner [TOKEN token]` → 1 when `owner` held the lock (with `TOKEN`: that
/// grant) and no longer does, else 0. The first waiter, if any, is granted the lock before this
/// command returns.
pub fn release(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() < 3 {
        return Err(FenceError::Arity("lock.release"));
    }
    // Any length: a holder is never stranded by a lowered fence.max-id-length.
    let owner = parse_name(args.bytes(2), Name::Owner, i64::MAX)?;
    let grant_token = token_option(args, 3)?;
    let name = args.get(1);
    let mut key = Key::write(ctx, name);
    if held_as(key.lease()?, owner, grant_token).is_none() {
        stats::RELEASES_REFUSED.incr();
        return Ok(Reply::Int(0));
    }
    expiry::releasing(|| key.delete());
    replicate_del(ctx, name);
    key.signal_modified();
    ctx.notify(c"lock.release", name);
    stats::RELEASES.incr();
    drop(key);
    if waiting::anybody_waits() {
        waiting::hand_off(ctx, &waiting::key_id(ctx, name.bytes()), name);
    }
    Ok(Reply::Int(1))
}

/// `LOCK.STATUS key` → nil, or owner, token, ttl, waiters (a map under RESP3).
pub fn status(ctx: &Ctx<'_>, args: &Args<'_>) -> CommandResult {
    if args.len() != 2 {
        return Err(FenceError::Arity("lock.status"));
    }
    let name = args.get(1);
    let key = Key::read(ctx, name);
    let ttl = key.ttl_ms();
    let Some(lease) = key.lease()? else {
        return Ok(Reply::Nil);
    };
    let waiting = waiting::waiters_for(ctx, name.bytes());
    Ok(Reply::Map(vec![
        ("owner", Field::Bulk(lease.owner.to_vec())),
        (
            "token",
            Field::Int(i64::try_from(lease.token).unwrap_or(i64::MAX)),
        ),
        ("ttl", Field::Int(ttl)),
        (
            "waiters",
            Field::Int(i64::try_from(waiting).unwrap_or(i64::MAX)),
        ),
    ]))
}
