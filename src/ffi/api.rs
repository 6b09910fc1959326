//! The Redis module API table, checked when the module loads.
//!
//! Redis fills in a table of function pointers when it loads a module; a server older than
//! the module expects leaves some empty. Every function the module calls is named in
//! `REQUIRED` (a unit test reads this layer's sources and fails when a call names a function
//! the list lacks), and the module refuses to load, naming the function in the log, when any of
//! them is missing. Every call goes through `call!`, which never assumes a pointer is there: a
//! missing one makes the call a no-op returning a harmless value (`Absent`), never undefined
//! behaviour.

use std::ffi::{c_char, c_int, c_longlong, c_void};

use redis_module::raw;

/// The value a call to a missing API function returns instead (it cannot happen once the
/// module has loaded: `missing` refused to load without it).
pub trait Absent {
    fn absent() -> Self;
}

impl Absent for () {
    fn absent() -> Self {}
}

impl Absent for c_int {
    fn absent() -> Self {
        raw::REDISMODULE_ERR as c_int
    }
}

impl Absent for c_longlong {
    fn absent() -> Self {
        -1
    }
}

impl Absent for u64 {
    fn absent() -> Self {
        0
    }
}

impl Absent for usize {
    fn absent() -> Self {
        0
    }
}

impl<T> Absent for *mut T {
    fn absent() -> Self {
        std::ptr::null_mut()
    }
}

impl<T> Absent for *const T {
    fn absent() -> Self {
        std::ptr::null()
    }
}

/// Calls the module API function `name` with `args`: `call!(RedisModule_OpenKey(ctx, k, m))`.
/// Only this layer calls it (its callers keep the safety rules of each function).
macro_rules! call {
    ($name:ident ( $($arg:expr),* $(,)? )) => {{
        match unsafe { ::redis_module::raw::$name } {
            // SAFETY: the caller passes what the API function expects.
            Some(f) => unsafe { f($($arg),*) },
            None => $crate::ffi::api::Absent::absent(),
        }
    }};
}
pub(crate) use call;

/// An API function the module uses only where the server has it (Redis 7.0 may lack it):
/// `optional!(RedisModule_AddACLCategory)` is `Some(f)` or `None`.
macro_rules! optional {
    ($name:ident) => {
        // SAFETY: reading the table Redis filled in at load time.
        unsafe { ::redis_module::raw::$name }
    };
}
pub(crate) use optional;

macro_rules! required {
    ($($name:ident),* $(,)?) => {
        /// Every API function the module calls through `call!` (the test below checks it).
        #[cfg(test)]
        pub const REQUIRED: &[&str] = &[$(stringify!($name)),*];

        /// The first required API function this server lacks, if any.
        pub fn missing() -> Option<&'static str> {
            $(
                // SAFETY: reading the table Redis filled in at load time.
                if unsafe { raw::$name }.is_none() || simulated_missing(stringify!($name)) {
                    return Some(stringify!($name));
                }
            )*
            None
        }
    };
}

required!(
    RedisModule_AvoidReplicaTraffic,
    RedisModule_BlockClient,
    RedisModule_Call,
    RedisModule_CallReplyArrayElement,
    RedisModule_CallReplyInteger,
    RedisModule_CallReplyLength,
    RedisModule_CallReplyStringPtr,
    RedisModule_CloseKey,
    RedisModule_CreateCommand,
    RedisModule_CreateString,
    RedisModule_CreateTimer,
    RedisModule_DeleteKey,
    RedisModule_DigestAddLongLong,
    RedisModule_DigestAddStringBuffer,
    RedisModule_DigestEndSequence,
    RedisModule_EmitAOF,
    RedisModule_Free,
    RedisModule_FreeCallReply,
    RedisModule_FreeString,
    RedisModule_GetAbsExpire,
    RedisModule_GetBlockedClientHandle,
    RedisModule_GetBlockedClientPrivateData,
    RedisModule_GetContextFlags,
    RedisModule_GetContextFromIO,
    RedisModule_GetDetachedThreadSafeContext,
    RedisModule_GetExpire,
    RedisModule_GetSelectedDb,
    RedisModule_InfoAddFieldCString,
    RedisModule_InfoAddFieldULongLong,
    RedisModule_InfoAddSection,
    RedisModule_IsIOError,
    RedisModule_IsKeysPositionRequest,
    RedisModule_KeyAtPos,
    RedisModule_KeyType,
    RedisModule_LatencyAddSample,
    RedisModule_LoadSigned,
    RedisModule_LoadStringBuffer,
    RedisModule_LoadUnsigned,
    RedisModule_Log,
    RedisModule_ModuleTypeGetType,
    RedisModule_ModuleTypeGetValue,
    RedisModule_ModuleTypeSetValue,
    RedisModule_NotifyKeyspaceEvent,
    RedisModule_OpenKey,
    RedisModule_RegisterInfoFunc,
    RedisModule_Replicate,
    RedisModule_ReplicateVerbatim,
    RedisModule_ReplyWithError,
    RedisModule_ReplyWithLongLong,
    RedisModule_ReplyWithMap,
    RedisModule_ReplyWithArray,
    RedisModule_ReplyWithNull,
    RedisModule_ReplyWithSimpleString,
    RedisModule_ReplyWithStringBuffer,
    RedisModule_SaveSigned,
    RedisModule_SaveStringBuffer,
    RedisModule_SaveUnsigned,
    RedisModule_SelectDb,
    RedisModule_SetAbsExpire,
    RedisModule_SetDisconnectCallback,
    RedisModule_SetModuleOptions,
    RedisModule_SignalModifiedKey,
    RedisModule_StopTimer,
    RedisModule_StreamAdd,
    RedisModule_StreamDelete,
    RedisModule_StreamTrimByLength,
    RedisModule_StringPtrLen,
    RedisModule_SubscribeToKeyspaceEvents,
    RedisModule_SubscribeToServerEvent,
    RedisModule_UnblockClient,
    RedisModule_ValueLength,
);

/// Debug builds only: `FENCE_SIMULATE_MISSING_API=RedisModule_X` in the server's environment
/// makes the module behave as on a server that lacks that function, so a test can see it
/// refuse to load. A release build never reads the environment.
#[cfg(debug_assertions)]
fn simulated_missing(name: &str) -> bool {
    std::env::var("FENCE_SIMULATE_MISSING_API").is_ok_and(|v| v == name)
}

#[cfg(not(debug_assertions))]
fn simulated_missing(_name: &str) -> bool {
    false
}

/// Writes `msg` to the server log at `level` ("warning", "notice", ...); `ctx` may be null.
pub fn log(ctx: *mut raw::RedisModuleCtx, level: &str, msg: &str) {
    let level: Vec<u8> = level.bytes().chain(std::iter::once(0)).collect();
    let msg: Vec<u8> = msg
        .bytes()
        .filter(|&b| b != 0)
        .chain(std::iter::once(0))
        .collect();
    // "%s" keeps the message from being read as a format.
    call!(RedisModule_Log(
        ctx,
        level.as_ptr().cast::<c_char>(),
        c"%s".as_ptr(),
        msg.as_ptr().cast::<c_char>(),
    ));
}

/// Frees memory Redis allocated for the module.
pub(super) fn free(p: *mut c_void) {
    if !p.is_null() {
        call!(RedisModule_Free(p));
    }
}

#[cfg(test)]
mod tests {
    use super::REQUIRED;

    /// Every function this layer calls with `call!` is in `REQUIRED`, so a
    /// server that lacks it is refused at load instead of getting a silent no-op.
    #[test]
    fn every_called_api_function_is_required() {
        let sources = [
            include_str!("alloc.rs"),
            include_str!("api.rs"),
            include_str!("ctx.rs"),
            include_str!("key.rs"),
            include_str!("lease.rs"),
            include_str!("timer.rs"),
            include_str!("blocked.rs"),
            include_str!("stream.rs"),
            include_str!("io.rs"),
            include_str!("events.rs"),
            include_str!("config.rs"),
            include_str!("command.rs"),
            include_str!("module_type.rs"),
        ];
        let mut called = Vec::new();
        for src in sources {
            for part in src.split("call!(").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name.starts_with("RedisModule_") {
                    called.push(name);
                }
            }
        }
        assert!(
            called.len() > 40,
            "the scan found the calls ({})",
            called.len()
        );
        for name in &called {
            assert!(
                REQUIRED.contains(&name.as_str()),
                "{name} is called but not in REQUIRED: a server without it would load"
            );
        }
    }
}
