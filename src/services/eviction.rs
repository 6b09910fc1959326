//! The eviction rule's Redis side: `maxmemory` and `maxmemory-policy` read at load and again
//! whenever `CONFIG SET` changes them, the state logged, and the check the writing commands
//! call. What is at risk and what is refused is decided in `fence_core::eviction`.

use fence_core::config::ALLOW_EVICTION;
use fence_core::error::FenceError;
use fence_core::eviction::{describe, may_refuse, refuses, Target, POLICY};

use crate::ffi::events::{self, EventKind, ServerEvent, ServerEventHandler};
use crate::ffi::{Ctx, Key, Kind};

/// Refuses a write that would create or grow `target` while the eviction policy may evict it
/// and `fence.allow-eviction` is `no`; only ordinary clients' commands on a master. `target`
/// is asked only then, so the common case costs two atomic loads.
fn check(ctx: &Ctx<'_>, target: impl FnOnce() -> Target) -> Result<(), FenceError> {
    let (risk, allow) = (POLICY.risk(), ALLOW_EVICTION.get());
    if !may_refuse(risk, allow) || !ctx.is_client_on_master() {
        return Ok(());
    }
    if refuses(risk, allow, target()) {
        return Err(FenceError::EvictionRisk {
            policy: POLICY.name(),
        });
    }
    Ok(())
}

/// The check for `LOCK.ACQUIRE`: a lock always has a TTL.
pub fn check_lock(ctx: &Ctx<'_>) -> Result<(), FenceError> {
    check(ctx, || Target::Lock)
}

/// The check for a write that creates or grows the module stock (or empty key) `key`.
pub fn check_stock(ctx: &Ctx<'_>, key: &Key<'_>) -> Result<(), FenceError> {
    check(ctx, || Target::Stock {
        has_ttl: key.kind() == Kind::Stock && key.ttl_ms() >= 0,
    })
}

/// Reads the server's eviction settings into `POLICY` and logs what they mean. A setting that
/// cannot be read counts as the riskiest (safe by default).
fn read_settings(ctx: &Ctx<'_>) {
    let maxmemory = ctx
        .config_get(c"maxmemory")
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let policy = ctx
        .config_get(c"maxmemory-policy")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_else(|| "unknown".into());
    POLICY.update(maxmemory, &policy);
    log_state(ctx);
}

/// Logs what the current settings mean for the module's keys.
fn log_state(ctx: &Ctx<'_>) {
    let level = if may_refuse(POLICY.risk(), false) {
        "warning"
    } else {
        "notice"
    };
    ctx.log(
        level,
        &describe(POLICY.maxmemory(), &POLICY.name(), ALLOW_EVICTION.get()),
    );
}

struct OnConfigChange;

impl ServerEventHandler for OnConfigChange {
    fn on(ctx: &Ctx<'_>, event: ServerEvent<'_>) {
        let ServerEvent::ConfigChange(names) = event else {
            return;
        };
        let policy_changed = names
            .iter()
            .any(|n| *n == b"maxmemory" || *n == b"maxmemory-policy");
        let allow_changed = names.iter().any(|n| *n == b"fence.allow-eviction");
        if policy_changed {
            read_settings(ctx);
        } else if allow_changed {
            log_state(ctx);
        }
    }
}

/// Reads and logs the eviction settings, and subscribes to their changes.
pub fn register(ctx: &Ctx<'_>) -> Result<(), String> {
    events::subscribe_server::<OnConfigChange>(ctx, EventKind::Config).map_err(String::from)?;
    read_settings(ctx);
    Ok(())
}
