//! The token clock's observations: every token that arrives by another door than a grant
//! (loaded, replicated, restored, presented with `FENCE`) raises the clock here, and a token
//! far ahead of this server's clock is logged.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use fence_core::clock::{is_from_future, now_us, TOKENS};

use crate::ffi::api::log;
use crate::ffi::io::Origin;
use crate::ffi::module_type::ValueId;

/// Writes a warning to the server log, at most once a second (a flood of bad payloads must not
/// flood the log).
pub fn warn(msg: &str) {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now_ms = now_us() / 1000;
    let last = LAST_MS.load(Ordering::Relaxed);
    if now_ms < last.saturating_add(1000) {
        return;
    }
    LAST_MS.store(now_ms, Ordering::Relaxed);
    log(std::ptr::null_mut(), "warning", msg);
}

/// Raises the token clock to a token that was loaded, replicated, restored or accepted (at
/// most to its ceiling), and logs a token more than 24 hours ahead of this server's clock.
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
    // The token of a value `RESTORE` loaded that Redis has not yet put into the keyspace.
    // Redis still checks the payload's end after the module's loader returns, and frees the
    // value when the check fails; the token must then leave the clock as it was. So a restored
    // token is observed only once the value is known to be in the keyspace: when it is
    // unlinked, copied, flushed, saved or shown, a token is issued, or the next value loads.
    static PENDING: RefCell<Option<(ValueId, u64)>> = const { RefCell::new(None) };
}

/// Records the token of a value just loaded from `origin`.
pub fn loaded(origin: Origin, id: ValueId, token: u64) {
    if origin == Origin::Loading {
        observe(token);
        return;
    }
    // Redis finishes with one restored value (keeps or frees it) before it loads the next, so
    // whatever is still pending now is in the keyspace: at most one token ever waits here.
    settle();
    PENDING.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            *p = Some((id, token));
        }
    });
}

/// Observes the pending restored token (its value is in the keyspace by now).
pub fn settle() {
    let pending = PENDING.with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.take()));
    if let Some((_, token)) = pending {
        observe(token);
    }
}

/// Value `id` is being freed: if its token is still pending, the value never reached the
/// keyspace (`RESTORE` refused it after the loader), so its token is dropped. On a background
/// thread (a lazy free) this sees its own, empty, slot.
pub fn forget(id: ValueId) {
    PENDING.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.is_some_and(|(v, _)| v == id) {
                *p = None;
            }
        }
    });
}
