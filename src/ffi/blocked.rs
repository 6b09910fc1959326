//! Blocked clients: a client blocked by a command is answered later, by `unblock`, with an
//! outcome its `BlockHandler` turns into a reply; Redis tells the handler when the client
//! went away or was unblocked by `CLIENT UNBLOCK`.

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::raw;

use super::api::{call, log};
use super::ctx::{Blocked, Ctx};

/// A blocked client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockedClient(*mut raw::RedisModuleBlockedClient);

/// What a kind of blocked client is answered with, and what happens when it leaves.
pub trait BlockHandler: 'static {
    type Outcome: 'static;
    /// The reply to a client unblocked with `outcome` (`None`: unblocked without one).
    fn reply(ctx: &Ctx<'_>, outcome: Option<&Self::Outcome>);
    /// `CLIENT UNBLOCK` ended the wait; the handler forgets the client (the reply follows,
    /// with no outcome).
    fn unblocked_by_redis(ctx: &Ctx<'_>, client: BlockedClient);
    /// The client disconnected.
    fn disconnected(ctx: &Ctx<'_>, client: BlockedClient);
}

fn guarded(ctx: *mut raw::RedisModuleCtx, what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        log(ctx, "warning", &format!("fence: caught a panic in {what}"));
    }
}

extern "C" fn reply_cb<H: BlockHandler>(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guarded(ctx, "a blocked client's reply", || {
        let data = call!(RedisModule_GetBlockedClientPrivateData(ctx));
        // SAFETY: every unblock passes a boxed outcome of this handler's type (or null).
        let outcome = unsafe { data.cast::<H::Outcome>().as_ref() };
        H::reply(&Ctx::new(ctx), outcome);
    });
    raw::REDISMODULE_OK as c_int
}

extern "C" fn timeout_cb<H: BlockHandler>(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guarded(ctx, "a blocked client's timeout", || {
        let bc = call!(RedisModule_GetBlockedClientHandle(ctx));
        let c = Ctx::new(ctx);
        H::unblocked_by_redis(&c, BlockedClient(bc));
        H::reply(&c, None);
    });
    raw::REDISMODULE_OK as c_int
}

extern "C" fn disconnect_cb<H: BlockHandler>(
    ctx: *mut raw::RedisModuleCtx,
    bc: *mut raw::RedisModuleBlockedClient,
) {
    guarded(ctx, "a blocked client's disconnect", || {
        H::disconnected(&Ctx::new(ctx), BlockedClient(bc));
    });
}

extern "C" fn free_privdata<H: BlockHandler>(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: a boxed outcome from `unblock`, freed once by Redis.
        drop(unsafe { Box::from_raw(data.cast::<H::Outcome>()) });
    }
}

/// Blocks the calling client with no timeout of Redis's own (the module keeps its own).
/// The `Blocked` proof lets the command send no reply now.
pub fn block<H: BlockHandler>(ctx: &Ctx<'_>) -> Option<(BlockedClient, Blocked)> {
    let bc = call!(RedisModule_BlockClient(
        ctx.raw(),
        Some(reply_cb::<H>),
        Some(timeout_cb::<H>),
        Some(free_privdata::<H>),
        0
    ));
    if bc.is_null() {
        return None;
    }
    call!(RedisModule_SetDisconnectCallback(
        bc,
        Some(disconnect_cb::<H>)
    ));
    Some((BlockedClient(bc), Blocked(())))
}

/// Answers a blocked client with `outcome` (its handler's reply). Each client is unblocked
/// once: the handler keeps it in one place and takes it out to unblock it.
pub fn unblock<H: BlockHandler>(client: BlockedClient, outcome: H::Outcome) {
    let data = Box::into_raw(Box::new(outcome)).cast::<c_void>();
    call!(RedisModule_UnblockClient(client.0, data));
}

/// Releases a client that went away (disconnected, unblocked by Redis): no reply is sent, but
/// Redis still needs the handle unblocked to free it.
pub fn release(client: BlockedClient) {
    call!(RedisModule_UnblockClient(client.0, std::ptr::null_mut()));
}
