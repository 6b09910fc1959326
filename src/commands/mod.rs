//! The command table and the FFI boundary: every command runs inside a panic guard, so a bug
//! becomes an error reply instead of a dead server.

pub mod docs;
pub mod events;
pub mod eviction;
pub mod internal;
pub mod lock;
pub mod stock;
pub mod wait;

use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::raw;

use crate::error::{FenceError, PANIC};
use crate::glue::{api, Args, Ctx, Reply};

/// What every command handler returns.
pub type CommandResult = Result<Reply, FenceError>;

type Handler = fn(Ctx, &Args) -> CommandResult;

/// Runs a handler and sends its reply; a panic is logged and answered with an error.
fn run(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let ctx = Ctx(ctx);
    let args = Args::new(argv, argc);
    match catch_unwind(AssertUnwindSafe(|| handler(ctx, &args))) {
        Ok(result) => ctx.send(result),
        Err(cause) => {
            let what = cause
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| cause.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ctx.log_warning(&format!("fence: caught a panic in a command: {what}"));
            ctx.reply_error(PANIC);
        }
    }
    raw::REDISMODULE_OK as c_int
}

/// Declares the `extern "C"` entry point of each command.
macro_rules! entry_points {
    ($($entry:ident => $handler:path),* $(,)?) => {
        $(
            extern "C" fn $entry(
                ctx: *mut raw::RedisModuleCtx,
                argv: *mut *mut raw::RedisModuleString,
                argc: c_int,
            ) -> c_int {
                run(ctx, argv, argc, $handler)
            }
        )*
    };
}

entry_points! {
    lock_acquire => lock::acquire,
    lock_renew => lock::renew,
    lock_release => lock::release,
    lock_status => lock::status,
    stock_set => stock::set,
    stock_add => stock::add,
    stock_get => stock::get,
    stock_deduct => stock::deduct,
    stock_refund => stock::refund,
    stock_request => stock::request,
    stock_info => stock::info,
    fence_lock => internal::lock,
    fence_stock => internal::stock,
    fence_restock => internal::restock,
}

type EntryPoint =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// Name, entry point and flags of every command. Each takes one key, at position 1.
const COMMANDS: &[(&CStr, EntryPoint, &CStr)] = &[
    (c"LOCK.ACQUIRE", lock_acquire, c"write deny-oom fast"),
    (c"LOCK.RENEW", lock_renew, c"write fast"),
    (c"LOCK.RELEASE", lock_release, c"write fast"),
    (c"LOCK.STATUS", lock_status, c"readonly fast"),
    (c"STOCK.SET", stock_set, c"write deny-oom"),
    (c"STOCK.ADD", stock_add, c"write deny-oom fast"),
    (c"STOCK.GET", stock_get, c"readonly fast"),
    (
        c"STOCK.DEDUCT",
        stock_deduct,
        c"write deny-oom fast getkeys-api",
    ),
    (c"STOCK.REFUND", stock_refund, c"write fast getkeys-api"),
    (c"STOCK.REQUEST", stock_request, c"readonly fast"),
    (c"STOCK.INFO", stock_info, c"readonly fast"),
    // Replication-only forms: refused unless they come from the master link or the AOF.
    (c"FENCE.LOCK", fence_lock, c"write"),
    (c"FENCE.STOCK", fence_stock, c"write"),
    (c"FENCE.RESTOCK", fence_restock, c"write"),
];

/// ACL categories of each command besides `@fence` (Redis 7.2+ has the API).
fn categories(name: &CStr) -> &'static CStr {
    match name.to_bytes() {
        b"LOCK.STATUS" | b"STOCK.GET" | b"STOCK.REQUEST" | b"STOCK.INFO" => c"fence read fast",
        b"STOCK.SET" | b"FENCE.LOCK" | b"FENCE.STOCK" | b"FENCE.RESTOCK" => c"fence write",
        _ => c"fence write fast",
    }
}

/// Puts every command in the `@fence` ACL category (and `@read`/`@write`/`@fast` as fits),
/// so `ACL SETUSER … +@fence` works, on servers that have the API (Redis 7.4+ can add a
/// category); older servers keep the plain registration.
fn acl_categories(ctx: *mut raw::RedisModuleCtx) {
    // SAFETY: reading the API table Redis filled in at load time.
    let apis = unsafe {
        (
            raw::RedisModule_AddACLCategory,
            raw::RedisModule_SetCommandACLCategories,
            raw::RedisModule_GetCommand,
        )
    };
    let (Some(add), Some(set), Some(get)) = apis else {
        return;
    };
    // SAFETY: ctx is the load context; static C strings.
    if unsafe { add(ctx, c"fence".as_ptr()) } != raw::REDISMODULE_OK as c_int {
        crate::glue::log(
            ctx,
            "notice",
            "fence: could not add the @fence ACL category",
        );
        return;
    }
    for (name, _, _) in COMMANDS {
        // SAFETY: as above; the command was registered.
        unsafe {
            let command = get(ctx, name.as_ptr());
            if !command.is_null() {
                set(command, categories(name).as_ptr());
            }
        }
    }
}

/// Registers every command with Redis.
pub fn register(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    for (name, entry, flags) in COMMANDS {
        // SAFETY: ctx is the load context; names and flags are static C strings.
        let status = unsafe {
            api!(RedisModule_CreateCommand)(
                ctx,
                name.as_ptr(),
                Some(*entry),
                flags.as_ptr(),
                1,
                1,
                1,
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(format!(
                "cannot register command {}",
                name.to_string_lossy()
            ));
        }
    }
    register_debug(ctx)?;
    acl_categories(ctx);
    // Documentation is a nicety: a server that cannot take it still runs every command.
    if docs::register(ctx) < COMMANDS.len() {
        crate::glue::log(
            ctx,
            "notice",
            "fence: COMMAND DOCS not available on this server",
        );
    }
    Ok(())
}

/// `FENCE.DEBUG-PANIC`: panics on purpose, so the tests can show that the guard turns a panic
/// into an error reply and the server keeps running. Debug builds only (the tests load the
/// debug build); a release build has no such command.
#[cfg(debug_assertions)]
fn debug_panic(_ctx: Ctx, _args: &Args) -> CommandResult {
    panic!("FENCE.DEBUG-PANIC was called: testing the panic guard")
}

#[cfg(debug_assertions)]
entry_points! {
    fence_debug_panic => debug_panic,
}

#[cfg(debug_assertions)]
fn register_debug(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    // SAFETY: ctx is the load context; static C strings.
    let status = unsafe {
        api!(RedisModule_CreateCommand)(
            ctx,
            c"FENCE.DEBUG-PANIC".as_ptr(),
            Some(fence_debug_panic),
            c"readonly".as_ptr(),
            0,
            0,
            0,
        )
    };
    if status != raw::REDISMODULE_OK as c_int {
        return Err("cannot register FENCE.DEBUG-PANIC".into());
    }
    Ok(())
}

#[cfg(not(debug_assertions))]
fn register_debug(_ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    Ok(())
}
