//! The eviction rule's Redis side: `maxmemory` and `maxmemory-policy` read at load and again
//! whenever `CONFIG SET` changes them, the state logged, and the check the writing commands
//! call. What is at risk and what is refused is decided in `crate::eviction`.

use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::raw;

use crate::config::ALLOW_EVICTION;
use crate::error::FenceError;
use crate::eviction::{describe, may_refuse, refuses, Target, POLICY};
use crate::glue::{api, log, Ctx, Key, Kind};

/// Refuses a write that would create or grow `target` while the eviction policy may evict it
/// and `fence.allow-eviction` is `no`; only ordinary clients' commands on a master. `target`
/// is asked only then, so the common case costs two atomic loads.
fn check(ctx: Ctx, target: impl FnOnce() -> Target) -> Result<(), FenceError> {
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
pub fn check_lock(ctx: Ctx) -> Result<(), FenceError> {
    check(ctx, || Target::Lock)
}

/// The check for a write that creates or grows the module stock (or empty key) `key`. An
/// empty key has no TTL, and is not asked for one (Redis 8 crashes on `RedisModule_GetExpire`
/// of an empty key opened for writing).
pub fn check_stock(ctx: Ctx, key: &Key) -> Result<(), FenceError> {
    check(ctx, || Target::Stock {
        has_ttl: key.kind() == Kind::Stock && key.ttl_ms() >= 0,
    })
}

/// Reads the server's eviction settings into `POLICY` and logs what they mean. A setting that
/// cannot be read counts as the riskiest (safe by default).
fn read_settings(ctx: Ctx) {
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
fn log_state(ctx: Ctx) {
    let policy = POLICY.name();
    let allow = ALLOW_EVICTION.get();
    let level = if may_refuse(POLICY.risk(), false) {
        "warning"
    } else {
        "notice"
    };
    log(ctx.0, level, &describe(POLICY.maxmemory(), &policy, allow));
}

extern "C" fn on_config_change(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    if subevent != raw::REDISMODULE_SUBEVENT_CONFIG_CHANGE {
        return;
    }
    let run = || {
        // SAFETY: Redis passes a RedisModuleConfigChange with this event.
        let Some(change) = (unsafe { data.cast::<raw::RedisModuleConfigChange>().as_ref() }) else {
            return;
        };
        let mut policy_changed = false;
        let mut allow_changed = false;
        for i in 0..usize::try_from(change.num_changes).unwrap_or(0) {
            if change.config_names.is_null() {
                break;
            }
            // SAFETY: Redis passes `num_changes` NUL-terminated names.
            let name = unsafe {
                let p = *change.config_names.add(i);
                if p.is_null() {
                    continue;
                }
                CStr::from_ptr(p).to_bytes()
            };
            match name {
                b"maxmemory" | b"maxmemory-policy" => policy_changed = true,
                b"fence.allow-eviction" => allow_changed = true,
                _ => {}
            }
        }
        if policy_changed {
            read_settings(Ctx(ctx));
        } else if allow_changed {
            log_state(Ctx(ctx));
        }
    };
    if catch_unwind(AssertUnwindSafe(run)).is_err() {
        log(ctx, "warning", "fence: caught a panic in a config change");
    }
}

/// Reads and logs the eviction settings, and subscribes to their changes.
pub fn register(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_CONFIG,
        dataver: 1,
    };
    // SAFETY: ctx is the load context; the callback lives for the process.
    let status =
        unsafe { api!(RedisModule_SubscribeToServerEvent)(ctx, event, Some(on_config_change)) };
    if status != raw::REDISMODULE_OK as c_int {
        return Err("cannot subscribe to config changes".into());
    }
    read_settings(Ctx(ctx));
    Ok(())
}
