//! Granting a lock and setting its TTL: the same steps for `LOCK.ACQUIRE` and for a hand-off
//! to a waiter, replicated as their effect (`FENCE.LOCK` with the token and absolute expiry).

use fence_core::clock::{expire_at_ms, now_us, TOKENS};
use fence_core::effects::LockEffect;
use fence_core::error::FenceError;
use fence_core::stats;

use super::tokens;
use crate::ffi::{Ctx, Key, Owner};

/// Grants the (empty) key to `owner` for `ttl` ms with a new token. Returns the token and the
/// absolute expiry (Unix ms); refused, with nothing changed, when the token clock is at its
/// ceiling.
pub fn grant(
    ctx: &Ctx<'_>,
    key: &mut Key<'_>,
    owner: Owner<'_>,
    ttl: i64,
) -> Result<(u64, i64), FenceError> {
    // A token restored a moment ago is above every token issued from now on.
    tokens::settle();
    let now = now_us();
    let token = TOKENS.next(now).ok_or(FenceError::ClockExhausted)?;
    key.set_lease(owner.bytes(), token);
    let expire_at = expire_at_ms(now, ttl);
    key.set_expire_at_ms(expire_at);
    replicate(ctx, key, owner, token, expire_at);
    key.signal_modified();
    ctx.notify(c"lock.acquire", key.name());
    stats::GRANTS.incr();
    Ok((token, expire_at))
}

/// Gives the lock `owner` holds with `token` a new TTL of `ttl` ms. Returns the new absolute
/// expiry (Unix ms).
pub fn extend(ctx: &Ctx<'_>, key: &mut Key<'_>, owner: Owner<'_>, token: u64, ttl: i64) -> i64 {
    let expire_at = expire_at_ms(now_us(), ttl);
    key.set_expire_at_ms(expire_at);
    replicate(ctx, key, owner, token, expire_at);
    key.signal_modified();
    expire_at
}

fn replicate(ctx: &Ctx<'_>, key: &Key<'_>, owner: Owner<'_>, token: u64, expire_at: i64) {
    let effect = LockEffect {
        owner: owner.bytes(),
        token,
        expire_at,
    }
    .encode();
    let shared = match owner {
        Owner::Arg(s) => Some(s),
        Owner::Bytes(_) => None,
    };
    ctx.replicate(key.name(), &effect, shared);
}
