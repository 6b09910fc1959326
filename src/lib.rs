//! redis-fence: server-side locks with fencing tokens, and oversell-proof stock deduction.
//!
//! Registration only: the data types, the settings and the command table. The decisions live
//! in plain Rust (`args`, `clock`, `lease`, `stock`); `glue` and `commands` translate.

mod args;
mod clock;
mod cluster;
mod commands;
mod config;
mod encoding;
mod error;
mod eviction;
mod glue;
mod info;
mod lease;
mod ledger;
#[cfg(test)]
mod properties;
mod stats;
mod stock;
mod types;
mod waitq;

use redis_module::{raw, redis_module, Context, RedisString, Status};

use crate::clock::TokenClock;
use crate::types::lock::LOCK_TYPE;
use crate::types::stock::STOCK_TYPE;

/// The server-wide fencing-token clock.
pub static TOKENS: TokenClock = TokenClock::new();

// The Redis allocator aborts outside Redis, so unit tests use the system allocator.
#[cfg(not(test))]
type Allocator = redis_module::alloc::RedisAlloc;
#[cfg(not(test))]
const ALLOCATOR: Allocator = redis_module::alloc::RedisAlloc;
#[cfg(test)]
type Allocator = std::alloc::System;
#[cfg(test)]
const ALLOCATOR: Allocator = std::alloc::System;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    match setup(ctx.ctx, args) {
        Ok(()) => Status::Ok,
        Err(e) => {
            glue::log(ctx.ctx, "warning", &format!("fence: not loaded: {e}"));
            Status::Err
        }
    }
}

fn setup(ctx: *mut raw::RedisModuleCtx, args: &[RedisString]) -> Result<(), String> {
    if let Some(name) = glue::missing_apis() {
        return Err(format!(
            "this Redis lacks {name} (Redis 7.0 or later is needed)"
        ));
    }
    let args: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    config::apply_module_args(&args)?;
    config::register(ctx)?;
    commands::eviction::register(ctx)?;
    commands::register(ctx)?;
    commands::wait::subscribe(ctx)?;
    info::register(ctx)?;
    // The commands signal modified keys themselves, only when they change something. Both
    // types' loaders check every read for a stream error, so a truncated or corrupt payload is
    // refused instead of killing the server; and a full sync loaded beside the old data
    // (`repl-diskless-load swapdb`) is handled: its tokens count as loaded, and the waiters
    // are looked at again once it replaces the old data. Together these let a replica load a
    // full sync straight from the socket.
    // SAFETY: ctx is the load context.
    unsafe {
        glue::api!(RedisModule_SetModuleOptions)(
            ctx,
            (raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED
                | raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS
                | raw::REDISMODULE_OPTIONS_HANDLE_REPL_ASYNC_LOAD) as i32,
        )
    };
    Ok(())
}

redis_module! {
    name: "fence",
    version: 1,
    allocator: (Allocator, ALLOCATOR),
    data_types: [LOCK_TYPE, STOCK_TYPE],
    init: init,
}
