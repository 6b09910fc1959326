//! LOCK.ACQUIRE … WAIT: blocking waiters inside Redis, a fair FIFO per key, and hand-off.
//!
//! The queue rules live in `waitq`; this file is the Redis side: blocking and unblocking
//! clients, the timers (each waiter's deadline, and a re-check of a waited-for key at its
//! lock's expiry or after a keyspace event), and the keyspace and flush subscriptions.
//! `RedisModule_BlockClientOnKeys` cannot serve a waiter once its key is deleted, so the
//! module hands the lock over itself, from the releasing command or a timer.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::raw;

use crate::clock::now_us;
use crate::config::MAX_TTL_MS;
use crate::error::{FenceError, WRONGTYPE};
use crate::glue::{api, string_bytes, Ctx, Key, Kind, Owner};
use crate::waitq::{KeyId, Recheck, WaitQueues};

/// A blocked client's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked(*mut raw::RedisModuleBlockedClient);

thread_local! {
    // Redis calls commands, timers and notifications on its main thread only.
    static WAITS: RefCell<WaitQueues<Blocked>> = RefCell::new(WaitQueues::default());
    static RECHECK_SEQ: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Runs `f` on the queues. Borrows are never held across a call into Redis, so the borrow
/// cannot fail; if it ever did, the caller gets `None` and does nothing.
fn with<R>(f: impl FnOnce(&mut WaitQueues<Blocked>) -> R) -> Option<R> {
    WAITS.with(|w| w.try_borrow_mut().ok().map(|mut w| f(&mut w)))
}

/// What a waiter is finally told.
enum Outcome {
    Granted(u64),
    TimedOut,
    WrongType,
    /// The key's slot left this node while the client waited.
    Moved,
    /// Refused at grant time (a lowered `fence.max-ttl-ms`, an exhausted token clock).
    Refused(FenceError),
}

/// The reply to a waiter whose key's slot moved away: cluster clients retry on `TRYAGAIN`.
const MOVED: &str =
    "TRYAGAIN the lock's hash slot left this node while waiting; retry LOCK.ACQUIRE";

fn now_ms() -> i64 {
    i64::try_from(now_us() / 1000).unwrap_or(i64::MAX)
}

/// The key `name` in the context's selected database.
pub fn key_id(ctx: Ctx, name: &[u8]) -> KeyId {
    // SAFETY: ctx is live.
    let db = unsafe { api!(RedisModule_GetSelectedDb)(ctx.0) };
    KeyId::new(db, name)
}

/// Whether any client waits for any key: the fast path that spares commands the key copy
/// and lookup when nobody uses `WAIT`.
pub fn anybody_waits() -> bool {
    with(|q| !q.is_empty()).unwrap_or(false)
}

/// How many clients wait for the key `name` in the context's database.
pub fn waiters_for(ctx: Ctx, name: &[u8]) -> usize {
    if !anybody_waits() {
        return 0;
    }
    waiters(&key_id(ctx, name))
}

/// How many clients wait for `key`.
pub fn waiters(key: &KeyId) -> usize {
    with(|q| q.len(key)).unwrap_or(0)
}

/// How many clients wait, over every key.
pub fn total_waiters() -> usize {
    with(|q| q.total()).unwrap_or(0)
}

/// Whether the client may block here (not inside MULTI, Lua or another no-blocking context).
pub fn may_block(ctx: Ctx) -> bool {
    // SAFETY: ctx is live.
    let flags = unsafe { api!(RedisModule_GetContextFlags)(ctx.0) } as u32;
    flags
        & (raw::REDISMODULE_CTX_FLAGS_MULTI
            | raw::REDISMODULE_CTX_FLAGS_LUA
            | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING)
        == 0
}

/// On Redis Cluster, whether this node may create `key` now (it serves the key's slot and is
/// not migrating it away). Outside a cluster: always.
fn may_create_here(ctx: Ctx, key: &KeyId) -> bool {
    // SAFETY: ctx is live.
    let flags = unsafe { api!(RedisModule_GetContextFlags)(ctx.0) } as u32;
    if flags & raw::REDISMODULE_CTX_FLAGS_CLUSTER == 0 {
        return true;
    }
    // SAFETY: RM_Call with C-string and buffer arguments; replies are freed below.
    unsafe {
        let call = api!(RedisModule_Call);
        let slot_reply = call(
            ctx.0,
            c"CLUSTER".as_ptr(),
            c"cb".as_ptr(),
            c"KEYSLOT".as_ptr(),
            key.name.as_ptr().cast::<c_char>(),
            key.name.len(),
        );
        if slot_reply.is_null() {
            return false;
        }
        let slot = api!(RedisModule_CallReplyInteger)(slot_reply);
        api!(RedisModule_FreeCallReply)(slot_reply);
        let nodes_reply = call(ctx.0, c"CLUSTER".as_ptr(), c"c".as_ptr(), c"NODES".as_ptr());
        if nodes_reply.is_null() {
            return false;
        }
        let mut len = 0;
        let p = api!(RedisModule_CallReplyStringPtr)(nodes_reply, &mut len);
        let ok = !p.is_null()
            && u16::try_from(slot).is_ok_and(|slot| {
                let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len);
                crate::cluster::may_write_slot(&String::from_utf8_lossy(bytes), slot)
            });
        api!(RedisModule_FreeCallReply)(nodes_reply);
        ok
    }
}

/// How often a waited-for key is looked at while writes are paused.
const PAUSE_RECHECK_MS: i64 = 10;

/// Whether clients' writes are paused (`CLIENT PAUSE`, `FAILOVER`, a cluster manual
/// failover). Redis then neither runs writes nor deletes expired keys, so the module must not
/// grant from a timer either.
fn writes_paused() -> bool {
    // SAFETY: no arguments; checked at load.
    unsafe { api!(RedisModule_AvoidReplicaTraffic)() != 0 }
}

fn is_master(ctx: Ctx) -> bool {
    // SAFETY: ctx is live.
    let flags = unsafe { api!(RedisModule_GetContextFlags)(ctx.0) } as u32;
    flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
}

/// Blocks the calling client until it is granted `key` or `timeout_ms` passes (0: forever).
/// `lock_expire_at` is the current holder's expiry (Unix ms, -1 if none).
pub fn block(
    ctx: Ctx,
    key: &KeyId,
    owner: &[u8],
    ttl_ms: i64,
    timeout_ms: i64,
    lock_expire_at: i64,
) {
    if let Err(e) = subscribe_keyspace(ctx.0) {
        ctx.reply_error(&format!("ERR {e}"));
        return;
    }
    // SAFETY: ctx is the live command context; callbacks are `extern "C"` functions below.
    let bc = unsafe {
        api!(RedisModule_BlockClient)(
            ctx.0,
            Some(reply_cb),
            Some(timeout_cb),
            Some(free_privdata),
            0,
        )
    };
    if bc.is_null() {
        ctx.reply_error("ERR cannot block this client");
        return;
    }
    // SAFETY: bc was just created.
    unsafe { api!(RedisModule_SetDisconnectCallback)(bc, Some(disconnect_cb)) };
    crate::stats::WAITS_STARTED.incr();
    let Some(id) = with(|q| q.push(key, owner, ttl_ms, Blocked(bc))) else {
        unblock(Blocked(bc), Outcome::TimedOut);
        return;
    };
    if timeout_ms > 0 {
        let data = Box::into_raw(Box::new((key.clone(), id))).cast::<c_void>();
        // SAFETY: the timer owns `data` until it fires or is stopped.
        let timer =
            unsafe { api!(RedisModule_CreateTimer)(ctx.0, timeout_ms, Some(deadline_cb), data) };
        with(|q| q.set_timer(key, id, timer));
    }
    if lock_expire_at >= 0 {
        ensure_recheck(ctx, key, lock_expire_at.saturating_add(1));
    } else {
        // A free key with waiters ahead (a hand-off in flight): look again at once.
        ensure_recheck(ctx, key, now_ms());
    }
}

/// Hands `key` to its first waiter, if the key is free; `name` is the key's name.
/// Runs inside the releasing command or a timer, so the grant replicates like any other.
/// A waiter whose TTL a lowered `fence.max-ttl-ms` no longer allows gets the TTL error and the
/// next one is served; the new holder's own other queued calls are answered as re-acquires.
pub fn hand_off(ctx: Ctx, key: &KeyId, name: *mut raw::RedisModuleString) {
    loop {
        let Some(Some(waiter)) = with(|q| q.pop_front(key)) else {
            return;
        };
        let k = Key::write(ctx, name);
        match k.kind() {
            Kind::Empty => {
                let max_ttl = MAX_TTL_MS.get();
                if waiter.ttl_ms > max_ttl {
                    drop(k);
                    stop_timer(ctx, waiter.timer);
                    unblock(
                        waiter.handle,
                        Outcome::Refused(FenceError::Ttl { max: max_ttl }),
                    );
                    continue;
                }
                let owner = Owner::Bytes(&waiter.owner);
                match super::lock::grant(ctx, &k, name, owner, waiter.ttl_ms) {
                    Ok((token, mut due)) => {
                        crate::stats::WAITS_GRANTED.incr();
                        stop_timer(ctx, waiter.timer);
                        unblock(waiter.handle, Outcome::Granted(token));
                        // The holder's own other calls, queued before it held the lock: each
                        // is the retry-safe re-acquire it would have been had it come now.
                        let same = with(|q| q.drain_owner(key, &waiter.owner)).unwrap_or_default();
                        for w in same {
                            stop_timer(ctx, w.timer);
                            if w.ttl_ms > max_ttl {
                                unblock(
                                    w.handle,
                                    Outcome::Refused(FenceError::Ttl { max: max_ttl }),
                                );
                                continue;
                            }
                            due = super::lock::extend(ctx, &k, name, owner, token, w.ttl_ms);
                            ctx.notify(c"lock.acquire", name);
                            crate::stats::REACQUIRES.incr();
                            crate::stats::WAITS_GRANTED.incr();
                            unblock(w.handle, Outcome::Granted(token));
                        }
                        drop(k);
                        if due >= 0 {
                            ensure_recheck(ctx, key, due.saturating_add(1));
                        }
                    }
                    Err(e) => {
                        // No token can be issued (the clock is at its ceiling): nobody can be
                        // served, so every waiter of the key is told why.
                        drop(k);
                        stop_timer(ctx, waiter.timer);
                        unblock(waiter.handle, Outcome::Refused(e.clone()));
                        fail_all_with(ctx, key, || Outcome::Refused(e.clone()));
                    }
                }
                return;
            }
            Kind::Lock => {
                // Taken meanwhile (never by a newcomer: they queue); wait for its expiry.
                let due = k.expire_at_ms();
                drop(k);
                with(|q| q.push_front(key, waiter));
                if due >= 0 {
                    ensure_recheck(ctx, key, due.saturating_add(1));
                }
                return;
            }
            _ => {
                drop(k);
                stop_timer(ctx, waiter.timer);
                unblock(waiter.handle, Outcome::WrongType);
                fail_all(ctx, key);
                return;
            }
        }
    }
}

/// Fails every waiter of `key` with `WRONGTYPE` (the key now holds another type).
fn fail_all(ctx: Ctx, key: &KeyId) {
    fail_all_with(ctx, key, || Outcome::WrongType);
}

/// Ends every wait on `key` with the outcome `make` gives.
fn fail_all_with(ctx: Ctx, key: &KeyId, make: impl Fn() -> Outcome) {
    for w in with(|q| q.drain(key)).unwrap_or_default() {
        stop_timer(ctx, w.timer);
        unblock(w.handle, make());
    }
}

fn unblock(handle: Blocked, outcome: Outcome) {
    let data = Box::into_raw(Box::new(outcome)).cast::<c_void>();
    // SAFETY: the handle is blocked and not yet unblocked (it just left the queue); Redis
    // passes `data` to the reply callback and then to `free_privdata`.
    unsafe { api!(RedisModule_UnblockClient)(handle.0, data) };
}

fn stop_timer(ctx: Ctx, timer: Option<u64>) {
    let Some(timer) = timer else { return };
    let mut data: *mut c_void = std::ptr::null_mut();
    // SAFETY: a timer id we created; on success Redis hands back its data, which we free.
    let stopped = unsafe { api!(RedisModule_StopTimer)(ctx.0, timer, &mut data) };
    if stopped == raw::REDISMODULE_OK as c_int && !data.is_null() {
        // SAFETY: every waiter timer's data is a boxed (KeyId, u64).
        drop(unsafe { Box::from_raw(data.cast::<(KeyId, u64)>()) });
    }
}

/// Makes sure `key` is looked at again no later than `due_ms` (Unix ms).
pub fn ensure_recheck(ctx: Ctx, key: &KeyId, due_ms: i64) {
    let Some(Some(replaced)) = with(|q| q.needs_recheck(key, due_ms)) else {
        return;
    };
    if let Some(timer) = replaced {
        let mut data: *mut c_void = std::ptr::null_mut();
        // SAFETY: our own recheck timer; its data is a boxed (KeyId, u64).
        let stopped = unsafe { api!(RedisModule_StopTimer)(ctx.0, timer, &mut data) };
        if stopped == raw::REDISMODULE_OK as c_int && !data.is_null() {
            drop(unsafe { Box::from_raw(data.cast::<(KeyId, u64)>()) });
        }
    }
    let seq = RECHECK_SEQ.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    let delay = due_ms.saturating_sub(now_ms()).max(0);
    let data = Box::into_raw(Box::new((key.clone(), seq))).cast::<c_void>();
    // SAFETY: the timer owns `data` until it fires or is stopped.
    let timer = unsafe { api!(RedisModule_CreateTimer)(ctx.0, delay, Some(recheck_cb), data) };
    with(|q| q.set_recheck(key, Recheck { seq, timer, due_ms }));
}

/// Runs a callback body, turning a panic into a log line instead of a dead server.
fn guarded(ctx: *mut raw::RedisModuleCtx, what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        crate::glue::log(ctx, "warning", &format!("fence: caught a panic in {what}"));
    }
}

extern "C" fn recheck_cb(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: created by `ensure_recheck`; a timer fires once.
    let (key, seq) = *unsafe { Box::from_raw(data.cast::<(KeyId, u64)>()) };
    guarded(ctx, "a lock re-check", || {
        let ctx = Ctx(ctx);
        with(|q| q.clear_recheck(&key, seq));
        if waiters(&key) == 0 || !is_master(ctx) {
            return;
        }
        if writes_paused() {
            // CLIENT PAUSE WRITE, FAILOVER or a cluster manual failover: no write may happen,
            // and an expired lock is only hidden, not deleted (granting over it would break
            // Redis's keyspace). Look again shortly; the waiters keep their places.
            ensure_recheck(ctx, &key, now_ms().saturating_add(PAUSE_RECHECK_MS));
            return;
        }
        // SAFETY: ctx is the timer's context.
        unsafe { api!(RedisModule_SelectDb)(ctx.0, key.db) };
        // SAFETY: a new string we free below.
        let name = unsafe {
            api!(RedisModule_CreateString)(
                ctx.0,
                key.name.as_ptr().cast::<c_char>(),
                key.name.len(),
            )
        };
        let k = Key::write(ctx, name);
        match k.kind() {
            Kind::Empty if !may_create_here(ctx, &key) => {
                // The key left with its slot (MIGRATE, resharding): granting here would
                // create a second lock where clients are now sent elsewhere. Waiters retry.
                drop(k);
                fail_all_with(ctx, &key, || Outcome::Moved);
            }
            Kind::Empty => {
                drop(k);
                hand_off(ctx, &key, name);
            }
            Kind::Lock => {
                let due = k.expire_at_ms();
                drop(k);
                if due >= 0 {
                    ensure_recheck(ctx, &key, due.saturating_add(1));
                }
            }
            _ => {
                drop(k);
                fail_all(ctx, &key);
            }
        }
        // SAFETY: created above, no longer used.
        unsafe { api!(RedisModule_FreeString)(ctx.0, name) };
    });
}

extern "C" fn deadline_cb(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: created by `block`; a timer fires once.
    let (key, id) = *unsafe { Box::from_raw(data.cast::<(KeyId, u64)>()) };
    guarded(ctx, "a wait deadline", || {
        if let Some(Some(w)) = with(|q| q.remove(&key, id)) {
            crate::stats::WAITS_TIMED_OUT.incr();
            unblock(w.handle, Outcome::TimedOut);
        }
    });
}

extern "C" fn reply_cb(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let c = Ctx(ctx);
    // SAFETY: ctx is the reply context of an unblocked client.
    let data = unsafe { api!(RedisModule_GetBlockedClientPrivateData)(ctx) };
    // SAFETY: every unblock passes a boxed Outcome (or null).
    match unsafe { data.cast::<Outcome>().as_ref() } {
        Some(Outcome::Granted(token)) => c.reply_int(i64::try_from(*token).unwrap_or(i64::MAX)),
        Some(Outcome::WrongType) => c.reply_error(WRONGTYPE),
        Some(Outcome::Moved) => c.reply_error(MOVED),
        Some(Outcome::Refused(e)) => c.reply_error(&e.message()),
        Some(Outcome::TimedOut) | None => c.reply_null(),
    }
    raw::REDISMODULE_OK as c_int
}

/// Redis's own timeout is never set (the module keeps its own deadline timers), so this runs
/// only for `CLIENT UNBLOCK`: the waiter leaves the queue and gets nil.
extern "C" fn timeout_cb(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guarded(ctx, "a wait timeout", || {
        // SAFETY: ctx is the timeout context of a blocked client.
        let bc = unsafe { api!(RedisModule_GetBlockedClientHandle)(ctx) };
        forget(Ctx(ctx), bc);
        Ctx(ctx).reply_null();
    });
    raw::REDISMODULE_OK as c_int
}

extern "C" fn disconnect_cb(ctx: *mut raw::RedisModuleCtx, bc: *mut raw::RedisModuleBlockedClient) {
    guarded(ctx, "a waiter's disconnect", || forget(Ctx(ctx), bc));
}

/// Drops a waiter that went away (disconnected, unblocked by Redis); Redis still needs the
/// handle unblocked to free it.
fn forget(ctx: Ctx, bc: *mut raw::RedisModuleBlockedClient) {
    if let Some(Some((_, w))) = with(|q| q.remove_by(|h| h.0 == bc)) {
        stop_timer(ctx, w.timer);
        // SAFETY: still blocked from the module's point of view; no reply will be sent.
        unsafe { api!(RedisModule_UnblockClient)(bc, std::ptr::null_mut()) };
    }
}

extern "C" fn free_privdata(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: a boxed Outcome from `unblock`.
        drop(unsafe { Box::from_raw(data.cast::<Outcome>()) });
    }
}

/// Any change to a key somebody waits for: look at it again at once.
extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    _event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guarded(ctx, "a keyspace event", || {
        if with(|q| q.is_empty()).unwrap_or(true) {
            return;
        }
        let ctx = Ctx(ctx);
        let id = key_id(ctx, string_bytes(key));
        if waiters(&id) > 0 {
            ensure_recheck(ctx, &id, now_ms());
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// FLUSHDB / FLUSHALL: every waited-for key in the flushed databases is free now.
extern "C" fn on_flush(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_START {
        // The values are freed without an unlink: their restored tokens count first.
        crate::types::settle();
        return;
    }
    if subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_END {
        return;
    }
    guarded(ctx, "a flush event", || {
        // SAFETY: Redis passes a RedisModuleFlushInfo with this event.
        let db =
            unsafe { data.cast::<raw::RedisModuleFlushInfo>().as_ref() }.map_or(-1, |i| i.dbnum);
        let keys = with(|q| q.keys((db >= 0).then_some(db))).unwrap_or_default();
        for key in keys {
            ensure_recheck(Ctx(ctx), &key, now_ms());
        }
    });
}

/// SWAPDB: every waited-for key of both databases may now hold something else.
extern "C" fn on_swapdb(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    _subevent: u64,
    data: *mut c_void,
) {
    guarded(ctx, "a swapdb event", || {
        // SAFETY: Redis passes a RedisModuleSwapDbInfo with this event.
        let Some(info) = (unsafe { data.cast::<raw::RedisModuleSwapDbInfo>().as_ref() }) else {
            return;
        };
        for db in [info.dbnum_first, info.dbnum_second] {
            for key in with(|q| q.keys(Some(db))).unwrap_or_default() {
                ensure_recheck(Ctx(ctx), &key, now_ms());
            }
        }
    });
}

/// A full sync loaded beside the old data replaced it: every waited-for key may have changed.
extern "C" fn on_async_load(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent != raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_COMPLETED {
        return;
    }
    guarded(ctx, "an async load event", || {
        for key in with(|q| q.keys(None)).unwrap_or_default() {
            ensure_recheck(Ctx(ctx), &key, now_ms());
        }
    });
}

/// Subscribes, once, to the keyspace events that can free or retype a waited-for key. Done
/// when the first client waits, not at load, so that a server that never uses `WAIT` does not
/// pay a callback on every write of every command.
fn subscribe_keyspace(ctx: *mut raw::RedisModuleCtx) -> Result<(), &'static str> {
    static SUBSCRIBED: AtomicBool = AtomicBool::new(false);
    if SUBSCRIBED.load(Ordering::Relaxed) {
        return Ok(());
    }
    // Every class that can delete or overwrite a key (SUNIONSTORE, SORT … STORE, … too).
    let types = raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_STRING
        | raw::REDISMODULE_NOTIFY_LIST
        | raw::REDISMODULE_NOTIFY_SET
        | raw::REDISMODULE_NOTIFY_HASH
        | raw::REDISMODULE_NOTIFY_ZSET
        | raw::REDISMODULE_NOTIFY_STREAM
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED;
    // SAFETY: ctx is live; the callback lives for the process.
    let status = unsafe {
        api!(RedisModule_SubscribeToKeyspaceEvents)(ctx, types as c_int, Some(on_keyspace_event))
    };
    if status != raw::REDISMODULE_OK as c_int {
        return Err("cannot subscribe to keyspace events");
    }
    SUBSCRIBED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Subscribes to flushes, SWAPDB and the end of a full sync loaded beside the old data, which
/// free or replace every waited-for key of a database at once.
pub fn subscribe(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    // SAFETY: ctx is the load context; the callbacks live for the process.
    unsafe {
        let flush = raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_FLUSHDB,
            dataver: 1,
        };
        if api!(RedisModule_SubscribeToServerEvent)(ctx, flush, Some(on_flush))
            != raw::REDISMODULE_OK as c_int
        {
            return Err("cannot subscribe to flush events".into());
        }
        let swapdb = raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_SWAPDB,
            dataver: 1,
        };
        if api!(RedisModule_SubscribeToServerEvent)(ctx, swapdb, Some(on_swapdb))
            != raw::REDISMODULE_OK as c_int
        {
            return Err("cannot subscribe to swapdb events".into());
        }
        let async_load = raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD,
            dataver: 1,
        };
        if api!(RedisModule_SubscribeToServerEvent)(ctx, async_load, Some(on_async_load))
            != raw::REDISMODULE_OK as c_int
        {
            return Err("cannot subscribe to async load events".into());
        }
    }
    Ok(())
}
