//! `INFO fence`, lock-expiry accounting and the module's keyspace events (glue only).

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicPtr, Ordering};

use redis_module::raw;

use crate::config::ALLOW_EVICTION;
use crate::eviction::POLICY;
use crate::glue::{api, string_bytes, Ctx};
use crate::stats;
use crate::TOKENS;

thread_local! {
    // The name of the last lock key Redis unlinked; an `expired` event for the same name that
    // follows (Redis sends it right after the unlink, in the same step) means a held lock
    // expired. Any other removal (DEL, overwrite, RENAME, ...) sends no `expired`, so the name
    // is forgotten at the end of the event-loop round by a zero-delay timer: a plain string
    // created later under the same name and expiring is not taken for a lock.
    static LAST_UNLINKED_LOCK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    // Set while LOCK.RELEASE deletes its key: that unlink is a release, not an expiry.
    static RELEASING: Cell<bool> = const { Cell::new(false) };
    // Whether the forgetting timer is pending.
    static FORGET_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// A context of the module's own, for the forgetting timer (the unlink callback has none).
static TIMER_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Called by the lock type's `unlink` callback: remembers the key's name until the end of the
/// event-loop round.
pub fn lock_unlinked(key: *mut raw::RedisModuleString) {
    if RELEASING.with(|r| r.replace(false)) {
        return;
    }
    let name = string_bytes(key);
    LAST_UNLINKED_LOCK.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.clear();
            l.extend_from_slice(name);
        }
    });
    if !FORGET_PENDING.with(Cell::get) {
        let ctx = TIMER_CTX.load(Ordering::Relaxed);
        if !ctx.is_null() {
            // SAFETY: the module's detached context lives for the process; the callback is ours.
            unsafe {
                api!(RedisModule_CreateTimer)(ctx, 0, Some(forget_unlinked), std::ptr::null_mut())
            };
            FORGET_PENDING.with(|f| f.set(true));
        }
    }
}

extern "C" fn forget_unlinked(_ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    FORGET_PENDING.with(|f| f.set(false));
    LAST_UNLINKED_LOCK.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.clear();
        }
    });
}

/// Runs `delete`, the release of a lock by its holder: not an expiry.
pub fn releasing(delete: impl FnOnce()) {
    RELEASING.with(|r| r.set(true));
    delete();
    RELEASING.with(|r| r.set(false));
}

extern "C" fn on_expired(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    _event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let name = string_bytes(key);
    let was_lock = LAST_UNLINKED_LOCK.with(|l| {
        l.try_borrow_mut().is_ok_and(|mut l| {
            let hit = l.as_slice() == name;
            l.clear();
            hit
        })
    });
    if was_lock {
        stats::EXPIRATIONS.incr();
        Ctx(ctx).notify(c"lock.expire", key);
    }
    raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    if api!(RedisModule_InfoAddSection)(ctx, std::ptr::null()) != raw::REDISMODULE_OK as c_int {
        return;
    }
    let add = |name: &str, value: u64| {
        if let Ok(name) = CString::new(name) {
            api!(RedisModule_InfoAddFieldULongLong)(ctx, name.as_ptr(), value);
        }
    };
    for (name, value) in stats::counters() {
        add(name, value);
    }
    add(
        "locks_held",
        u64::try_from(stats::LOCKS.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0),
    );
    add(
        "clients_waiting",
        crate::commands::wait::total_waiters() as u64,
    );
    crate::types::settle();
    add("last_token", TOKENS.last());
    add("clock_ahead_ms", TOKENS.ahead_ms(crate::clock::now_us()));
    let add_text = |name: &CStr, value: &str| {
        if let Ok(value) = CString::new(value) {
            api!(RedisModule_InfoAddFieldCString)(ctx, name.as_ptr(), value.as_ptr());
        }
    };
    add_text(c"maxmemory_policy", &POLICY.name());
    add_text(c"eviction_risk", POLICY.risk().name());
    add("allow_eviction", u64::from(ALLOW_EVICTION.get()));
}

/// Registers the `INFO` section and the expiry subscription.
pub fn register(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    // SAFETY: ctx is the load context; the callbacks live for the process.
    unsafe {
        let detached = api!(RedisModule_GetDetachedThreadSafeContext)(ctx);
        if detached.is_null() {
            return Err("cannot create the module's own context".into());
        }
        TIMER_CTX.store(detached, Ordering::Relaxed);
        if api!(RedisModule_RegisterInfoFunc)(ctx, Some(info)) != raw::REDISMODULE_OK as c_int {
            return Err("cannot register the INFO section".into());
        }
        // Only expirations: no callback on ordinary writes.
        if api!(RedisModule_SubscribeToKeyspaceEvents)(
            ctx,
            raw::REDISMODULE_NOTIFY_EXPIRED as c_int,
            Some(on_expired),
        ) != raw::REDISMODULE_OK as c_int
        {
            return Err("cannot subscribe to expirations".into());
        }
    }
    Ok(())
}
