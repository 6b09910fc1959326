//! Keyspace notifications and server events the module subscribes to, typed: a handler gets
//! a context, and the event's data read into plain values.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use redis_module::raw;

use super::api::{call, log};
use super::ctx::{Ctx, RStr};

/// A keyspace notification handler.
pub trait KeyspaceHandler: 'static {
    fn on(ctx: &Ctx<'_>, event: &[u8], key: RStr<'_>);
}

extern "C" fn keyspace_cb<H: KeyspaceHandler>(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let run = || {
        let event = if event.is_null() {
            &[][..]
        } else {
            // SAFETY: Redis passes a NUL-terminated event name.
            unsafe { CStr::from_ptr(event) }.to_bytes()
        };
        H::on(&Ctx::new(ctx), event, RStr::new(key));
    };
    if catch_unwind(AssertUnwindSafe(run)).is_err() {
        log(ctx, "warning", "fence: caught a panic in a keyspace event");
    }
    raw::REDISMODULE_OK as c_int
}

/// Subscribes `H` to keyspace events of `classes` (`REDISMODULE_NOTIFY_*`).
pub fn subscribe_keyspace<H: KeyspaceHandler>(
    ctx: &Ctx<'_>,
    classes: c_int,
) -> Result<(), &'static str> {
    let status = call!(RedisModule_SubscribeToKeyspaceEvents(
        ctx.raw(),
        classes,
        Some(keyspace_cb::<H>)
    ));
    if status != raw::REDISMODULE_OK as c_int {
        return Err("cannot subscribe to keyspace events");
    }
    Ok(())
}

/// `subscribe_keyspace`, from a place without a context (a data type's load callback; main
/// thread only), through the module's own context.
pub fn subscribe_keyspace_detached<H: KeyspaceHandler>(classes: c_int) -> Result<(), &'static str> {
    let ctx = super::timer::detached_ctx();
    if ctx.is_null() {
        return Err("the module's own context is not there");
    }
    subscribe_keyspace::<H>(&Ctx::new(ctx), classes)
}

/// A server event, read into plain values.
#[derive(Debug)]
pub enum ServerEvent<'a> {
    /// `FLUSHDB`/`FLUSHALL` (db -1: every database), before (`start`) or after.
    Flush { start: bool, db: i32 },
    /// `SWAPDB a b`.
    SwapDb(i32, i32),
    /// A full sync loaded beside the old data replaced it.
    AsyncLoadCompleted,
    /// `CONFIG SET` changed these settings.
    ConfigChange(Vec<&'a [u8]>),
    /// This server became a master (`REPLICAOF NO ONE`, a failover).
    BecameMaster,
    /// This server stopped being a master (a failover, `REPLICAOF host port`).
    NowReplica,
    /// Loading (RDB, AOF, a full sync from disk) ended.
    LoadingEnded,
    /// Anything else of the subscribed event.
    Other,
}

/// Which server event to subscribe to.
#[derive(Debug, Clone, Copy)]
pub enum EventKind {
    Flush,
    SwapDb,
    AsyncLoad,
    Config,
    RoleChanged,
    Loading,
}

/// A server event handler.
pub trait ServerEventHandler: 'static {
    fn on(ctx: &Ctx<'_>, event: ServerEvent<'_>);
}

fn read_event<'a>(id: u64, subevent: u64, data: *mut c_void) -> ServerEvent<'a> {
    if id == raw::REDISMODULE_EVENT_FLUSHDB {
        // SAFETY: Redis passes a RedisModuleFlushInfo with this event.
        let db =
            unsafe { data.cast::<raw::RedisModuleFlushInfo>().as_ref() }.map_or(-1, |i| i.dbnum);
        return ServerEvent::Flush {
            start: subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_START,
            db,
        };
    }
    if id == raw::REDISMODULE_EVENT_SWAPDB {
        // SAFETY: Redis passes a RedisModuleSwapDbInfo with this event.
        return match unsafe { data.cast::<raw::RedisModuleSwapDbInfo>().as_ref() } {
            Some(i) => ServerEvent::SwapDb(i.dbnum_first, i.dbnum_second),
            None => ServerEvent::Other,
        };
    }
    if id == raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD
        && subevent == raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_COMPLETED
    {
        return ServerEvent::AsyncLoadCompleted;
    }
    // REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER is 0 (redismodule.h; not in the bindings).
    if id == raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED && subevent == 0 {
        return ServerEvent::BecameMaster;
    }
    if id == raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED
        && subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_REPLICA
    {
        return ServerEvent::NowReplica;
    }
    if id == raw::REDISMODULE_EVENT_LOADING && subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
        return ServerEvent::LoadingEnded;
    }
    if id == raw::REDISMODULE_EVENT_CONFIG && subevent == raw::REDISMODULE_SUBEVENT_CONFIG_CHANGE {
        // SAFETY: Redis passes a RedisModuleConfigChange with this event.
        let Some(change) = (unsafe { data.cast::<raw::RedisModuleConfigChange>().as_ref() }) else {
            return ServerEvent::Other;
        };
        let mut names = Vec::new();
        let n = usize::try_from(change.num_changes).unwrap_or(0);
        if !change.config_names.is_null() {
            for i in 0..n {
                // SAFETY: Redis passes `num_changes` NUL-terminated names.
                let p = unsafe { *change.config_names.add(i) };
                if !p.is_null() {
                    // SAFETY: as above.
                    names.push(unsafe { CStr::from_ptr(p) }.to_bytes());
                }
            }
        }
        return ServerEvent::ConfigChange(names);
    }
    ServerEvent::Other
}

/// The handlers of each server event: Redis keeps one callback per module and event (a second
/// subscription replaces the first), so the module subscribes one dispatcher per event and
/// calls every handler registered for it, in the order they subscribed.
type Handler = fn(&Ctx<'_>, ServerEvent<'_>);

static HANDLERS: Mutex<Vec<(u64, Handler)>> = Mutex::new(Vec::new());

extern "C" fn server_cb(
    ctx: *mut raw::RedisModuleCtx,
    eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    let handlers: Vec<Handler> = match HANDLERS.lock() {
        Ok(h) => h
            .iter()
            .filter(|(id, _)| *id == eid.id)
            .map(|(_, f)| *f)
            .collect(),
        Err(_) => return,
    };
    for handler in handlers {
        let run = || handler(&Ctx::new(ctx), read_event(eid.id, subevent, data));
        if catch_unwind(AssertUnwindSafe(run)).is_err() {
            log(ctx, "warning", "fence: caught a panic in a server event");
        }
    }
}

/// Subscribes `H` to a server event (beside any other handler of the same event).
pub fn subscribe_server<H: ServerEventHandler>(
    ctx: &Ctx<'_>,
    kind: EventKind,
) -> Result<(), &'static str> {
    let id = match kind {
        EventKind::Flush => raw::REDISMODULE_EVENT_FLUSHDB,
        EventKind::SwapDb => raw::REDISMODULE_EVENT_SWAPDB,
        EventKind::AsyncLoad => raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD,
        EventKind::Config => raw::REDISMODULE_EVENT_CONFIG,
        EventKind::RoleChanged => raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
        EventKind::Loading => raw::REDISMODULE_EVENT_LOADING,
    };
    let mut handlers = HANDLERS
        .lock()
        .map_err(|_| "the server event table is poisoned")?;
    let first = !handlers.iter().any(|(i, _)| *i == id);
    if first {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        let status = call!(RedisModule_SubscribeToServerEvent(
            ctx.raw(),
            event,
            Some(server_cb)
        ));
        if status != raw::REDISMODULE_OK as c_int {
            return Err("cannot subscribe to a server event");
        }
    }
    handlers.push((id, H::on));
    Ok(())
}
