//! The only layer that talks to Redis's C API, and the only one with `unsafe`: the checked API
//! table, contexts and keys with lifetimes the compiler checks, replies built whole, typed
//! timers, blocked clients and events, streams, RDB/AOF/digest streams, and the data types'
//! `extern "C"` callbacks. Everything above it (services, commands, types) is safe Rust, and it
//! imports nothing above it: only `fence_core`.

#[cfg(not(test))]
pub mod alloc;
pub mod api;
pub mod blocked;
pub mod command;
pub mod config;
pub mod ctx;
pub mod events;
pub mod io;
pub mod key;
pub mod lease;
pub mod module_type;
pub mod stream;
pub mod timer;

pub use ctx::{Args, Ctx, Field, KeysReported, Owner, RStr, Reply};
pub use key::{Key, Kind};

use redis_module::raw;

/// The context Redis passes to the module's load function, for the load-time registrations.
pub fn load_context<'a>(ctx: *mut raw::RedisModuleCtx) -> Ctx<'a> {
    Ctx::new(ctx)
}
