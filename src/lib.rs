//! redis-fence: server-side locks with fencing tokens, and oversell-proof stock deduction.
//!
//! Registration only. Every decision is in `fence_core` (plain Rust, no Redis, no `unsafe`);
//! the layers here point one way: `commands` (and the data `types`, whose callbacks Redis
//! calls) use `services`, which use `ffi`, the only layer that talks to Redis's C API, which
//! uses `fence_core`.

mod commands;
mod ffi;
mod info;
mod services;
mod types;

use redis_module::{redis_module, Context, RedisString, Status};

use crate::ffi::events;
use crate::types::lock::LOCK_TYPE;
use crate::types::stock::STOCK_TYPE;

// The Redis allocator aborts outside Redis, so unit tests use the system allocator.
#[cfg(not(test))]
type Allocator = ffi::alloc::FenceAlloc;
#[cfg(not(test))]
const ALLOCATOR: Allocator = ffi::alloc::FenceAlloc;
#[cfg(test)]
type Allocator = std::alloc::System;
#[cfg(test)]
const ALLOCATOR: Allocator = std::alloc::System;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let ctx = ffi::load_context(ctx.ctx);
    match setup(&ctx, args) {
        Ok(()) => Status::Ok,
        Err(e) => {
            ctx.log_warning(&format!("fence: not loaded: {e}"));
            Status::Err
        }
    }
}

fn setup(ctx: &ffi::Ctx<'_>, args: &[RedisString]) -> Result<(), String> {
    if let Some(name) = ffi::api::missing() {
        return Err(format!(
            "this server lacks the module API function {name} (Redis 7.0 or later, or \
             Valkey, is needed)"
        ));
    }
    ffi::module_type::set_types(*LOCK_TYPE.raw_type.borrow(), *STOCK_TYPE.raw_type.borrow());
    let args: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    fence_core::config::apply_module_args(&args)?;
    ffi::config::register(ctx)?;
    ffi::timer::init(ctx)?;
    services::eviction::register(ctx)?;
    commands::register(ctx)?;
    services::waiting::subscribe(ctx)?;
    services::holds::subscribe(ctx)?;
    // Only expirations at load: no callback on ordinary writes.
    events::subscribe_keyspace::<services::expiry::OnExpired>(
        ctx,
        redis_module::raw::REDISMODULE_NOTIFY_EXPIRED,
    )?;
    ffi::command::register_info::<info::FenceInfo>(ctx)?;
    ffi::command::set_module_options(ctx);
    Ok(())
}

redis_module! {
    name: "fence",
    version: 1,
    allocator: (Allocator, ALLOCATOR),
    data_types: [LOCK_TYPE, STOCK_TYPE],
    init: init,
}
