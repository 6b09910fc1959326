//! The module data types Redis stores: `fence-lck` (a held lock) and `fence-stk` (a stock).
//! Each file holds one type's callbacks (RDB, AOF rewrite, free, copy, digest, memory); this
//! one what both share: reading an RDB stream, deciding where a value is loaded from, and
//! feeding loaded tokens to the token clock.

pub mod lock;
pub mod stock;

use std::cell::RefCell;
use std::ffi::c_char;
use std::sync::atomic::{AtomicU64, Ordering};

use redis_module::raw;

use crate::clock::{is_from_future, now_us};
use crate::encoding::Source;
use crate::glue::api;
use crate::TOKENS;

/// The registered lock type (null before the module is loaded).
pub fn lock_type() -> *mut raw::RedisModuleType {
    *lock::LOCK_TYPE.raw_type.borrow()
}

/// The registered stock type (null before the module is loaded).
pub fn stock_type() -> *mut raw::RedisModuleType {
    *stock::STOCK_TYPE.raw_type.borrow()
}

/// An RDB stream being loaded. The module sets `REDISMODULE_OPTIONS_HANDLE_IO_ERRORS`, so a
/// short read or a wrong opcode sets the stream's error flag instead of killing the server;
/// every read checks it.
pub struct Rdb(pub *mut raw::RedisModuleIO);

impl Rdb {
    fn failed(&self) -> bool {
        // SAFETY: the stream is live for the callback.
        unsafe { api!(RedisModule_IsIOError)(self.0) != 0 }
    }
}

impl Source for Rdb {
    fn unsigned(&mut self) -> Option<u64> {
        // SAFETY: the stream is live for the callback.
        let v = unsafe { api!(RedisModule_LoadUnsigned)(self.0) };
        (!self.failed()).then_some(v)
    }

    fn signed(&mut self) -> Option<i64> {
        // SAFETY: the stream is live for the callback.
        let v = unsafe { api!(RedisModule_LoadSigned)(self.0) };
        (!self.failed()).then_some(v)
    }

    fn with_bytes<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let mut len = 0;
        // SAFETY: the stream is live for the callback.
        let p = unsafe { api!(RedisModule_LoadStringBuffer)(self.0, &mut len) };
        let out = if p.is_null() {
            f(&[])
        } else {
            // SAFETY: Redis allocated `len` bytes at `p`; `f` reads them, then they are freed.
            let out = f(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) });
            unsafe { api!(RedisModule_Free)(p.cast()) };
            out
        };
        (!self.failed()).then_some(out)
    }
}

/// Writes bytes as one RDB string.
pub(super) fn save_bytes(rdb: *mut raw::RedisModuleIO, bytes: &[u8]) {
    // SAFETY: rdb is the live saving stream.
    unsafe {
        api!(RedisModule_SaveStringBuffer)(rdb, bytes.as_ptr().cast::<c_char>(), bytes.len())
    };
}

/// Where a value being loaded comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The server is loading (RDB or AOF at start, a full sync, also one loaded beside the old
    /// data with `repl-diskless-load swapdb`, `DEBUG RELOAD`): always applied.
    Loading,
    /// `RESTORE` on a replica: sent by its master, applied like the rest of the stream.
    Master,
    /// `RESTORE` or `MIGRATE` from a client on a master: a token or fence more than 24 hours
    /// ahead of this server's clock is refused, as `FENCE` refuses it.
    Client,
}

impl Origin {
    /// Where the value `rdb` is loading comes from.
    pub fn of(rdb: *mut raw::RedisModuleIO) -> Self {
        // SAFETY: the stream is live; the context Redis makes for it is freed by Redis.
        let flags = unsafe {
            let ctx = api!(RedisModule_GetContextFromIO)(rdb);
            api!(RedisModule_GetContextFlags)(ctx) as u32
        };
        let loading = raw::REDISMODULE_CTX_FLAGS_LOADING | raw::REDISMODULE_CTX_FLAGS_ASYNC_LOADING;
        if flags & loading != 0 {
            Origin::Loading
        } else if flags & raw::REDISMODULE_CTX_FLAGS_MASTER == 0 {
            Origin::Master
        } else {
            Origin::Client
        }
    }

    /// Whether a value holding `token` may be loaded from here.
    pub fn admits(self, token: u64) -> bool {
        self != Origin::Client || !is_from_future(token, now_us())
    }
}

/// Writes a warning about a refused or far-ahead value to the server log, at most once a
/// second (a flood of bad payloads must not flood the log).
pub fn warn(msg: &str) {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now_ms = now_us() / 1000;
    let last = LAST_MS.load(Ordering::Relaxed);
    if now_ms < last.saturating_add(1000) {
        return;
    }
    LAST_MS.store(now_ms, Ordering::Relaxed);
    crate::glue::log(std::ptr::null_mut(), "warning", msg);
}

/// Raises the token clock to a token that was loaded, replicated or restored (at most to its
/// ceiling), and logs a token more than 24 hours ahead of this server's clock.
pub fn observe(token: u64) {
    if is_from_future(token, now_us()) {
        warn(&format!(
            "fence: a token {token} more than 24 hours ahead of this server's clock was loaded; \
             the token clock follows it (up to its ceiling): see fence_clock_ahead_ms in INFO fence"
        ));
    }
    TOKENS.observe(token);
}

thread_local! {
    // Tokens of values that `RESTORE` loaded but Redis has not yet put into the keyspace. Redis
    // still checks the payload's end after the module's loader returns, and frees the value
    // when the check fails; the token must then leave the clock as it was. So a restored
    // token is observed only once the value is known to be in the keyspace: when it is used,
    // unlinked, copied, flushed, saved or shown, or a token is issued.
    static PENDING: RefCell<Vec<(usize, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Records the token of a value just loaded from `from` (`value` is the pointer Redis will
/// keep).
pub fn loaded(from: Origin, value: *const u8, token: u64) {
    if from == Origin::Loading {
        observe(token);
        return;
    }
    // Redis finishes with one restored value (keeps or frees it) before it loads the next, so
    // whatever is still pending now is in the keyspace: at most one token ever waits here.
    settle();
    PENDING.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.push((value as usize, token));
        }
    });
}

/// Observes every pending restored token (their values are in the keyspace by now).
pub fn settle() {
    let pending = PENDING.with(|p| p.try_borrow_mut().map(|mut p| std::mem::take(&mut *p)));
    for (_, token) in pending.unwrap_or_default() {
        observe(token);
    }
}

/// `value` is being freed: if its token is still pending, the value never reached the
/// keyspace (`RESTORE` refused it after the loader), so its token is dropped. Runs on the
/// main thread; a lazy free on a background thread sees its own, empty, list.
pub fn forget(value: *const u8) {
    PENDING.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.retain(|(v, _)| *v != value as usize);
        }
    });
}
