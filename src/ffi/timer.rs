//! Module timers, typed: a `TimerHandler` says what a timer carries and what it does when it
//! fires; `start` and `stop` hand the data over and back, checked against its type.

use std::any::Any;
use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};

use redis_module::raw;

use super::api::{call, log};
use super::ctx::Ctx;

/// What a kind of timer carries and does.
pub trait TimerHandler: 'static {
    type Data: 'static;
    fn fire(ctx: &Ctx<'_>, data: Self::Data);
}

/// A running timer of kind `H`.
pub struct Timer<H> {
    id: u64,
    _kind: PhantomData<fn() -> H>,
}

impl<H> Clone for Timer<H> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<H> Copy for Timer<H> {}

impl<H> Timer<H> {
    /// Redis's id of the timer (to keep it in plain data structures).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The timer of kind `H` with Redis's id `id` (the data is type-checked when it comes
    /// back, so a wrong id can only make `stop` return `None`).
    pub fn from_id(id: u64) -> Timer<H> {
        Timer {
            id,
            _kind: PhantomData,
        }
    }
}

type Payload = Box<dyn Any>;

extern "C" fn trampoline<H: TimerHandler>(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: every timer's data is a boxed payload made by `start`; a timer fires once.
    let payload: Box<Payload> = unsafe { Box::from_raw(data.cast::<Payload>()) };
    let Ok(data) = payload.downcast::<H::Data>() else {
        return;
    };
    if catch_unwind(AssertUnwindSafe(|| H::fire(&Ctx::new(ctx), *data))).is_err() {
        log(ctx, "warning", "fence: caught a panic in a timer");
    }
}

/// Starts a timer firing after `delay_ms` (0: at the end of this event-loop round).
pub fn start<H: TimerHandler>(ctx: &Ctx<'_>, delay_ms: i64, data: H::Data) -> Timer<H> {
    start_raw::<H>(ctx.raw(), delay_ms, data)
}

fn start_raw<H: TimerHandler>(
    ctx: *mut raw::RedisModuleCtx,
    delay_ms: i64,
    data: H::Data,
) -> Timer<H> {
    let payload: Box<Payload> = Box::new(Box::new(data));
    let p = Box::into_raw(payload).cast::<c_void>();
    let id = call!(RedisModule_CreateTimer(
        ctx,
        delay_ms.max(0),
        Some(trampoline::<H>),
        p
    ));
    Timer::from_id(id)
}

/// Stops a timer that has not fired; its data comes back.
pub fn stop<H: TimerHandler>(ctx: &Ctx<'_>, timer: Timer<H>) -> Option<H::Data> {
    let mut data: *mut c_void = std::ptr::null_mut();
    let stopped = call!(RedisModule_StopTimer(ctx.raw(), timer.id, &mut data));
    if stopped != raw::REDISMODULE_OK as i32 || data.is_null() {
        return None;
    }
    // SAFETY: every timer's data is a boxed payload made by `start`; a stopped timer never
    // fires, so it is taken back once.
    let payload: Box<Payload> = unsafe { Box::from_raw(data.cast::<Payload>()) };
    payload.downcast::<H::Data>().ok().map(|b| *b)
}

/// The module's own context, for timers started where Redis gives no context (a data type's
/// unlink callback).
static DETACHED: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Makes the module's own context (once, at load).
pub fn init(ctx: &Ctx<'_>) -> Result<(), String> {
    let detached = call!(RedisModule_GetDetachedThreadSafeContext(ctx.raw()));
    if detached.is_null() {
        return Err("cannot create the module's own context".into());
    }
    DETACHED.store(detached, Ordering::Relaxed);
    Ok(())
}

/// The module's own context (null before `init`).
pub(super) fn detached_ctx() -> *mut raw::RedisModuleCtx {
    DETACHED.load(Ordering::Relaxed)
}

/// `start`, from a place without a context (main thread only).
pub fn start_detached<H: TimerHandler>(delay_ms: i64, data: H::Data) -> Option<Timer<H>> {
    let ctx = DETACHED.load(Ordering::Relaxed);
    (!ctx.is_null()).then(|| start_raw::<H>(ctx, delay_ms, data))
}

/// Reports `ms` of work in one go under `event` to Redis's latency monitor (`LATENCY LATEST`,
/// `LATENCY HISTORY event`), which keeps it when it reaches `latency-monitor-threshold`.
pub fn latency_sample(event: &CStr, ms: i64) {
    call!(RedisModule_LatencyAddSample(event.as_ptr(), ms));
}
