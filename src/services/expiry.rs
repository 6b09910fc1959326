//! Which held locks expired: `INFO fence`'s `expirations` and the `lock.expire` keyspace event.
//!
//! Redis unlinks an expired key and sends `expired` for it right after, in the same step; the
//! lock type's unlink callback remembers the key's name, and an `expired` event for that name
//! that follows means a held lock expired. Any other removal (DEL, overwrite, RENAME, ...)
//! sends no `expired`, so the name is forgotten at the end of the event-loop round by a
//! zero-delay timer: a plain string created later under the same name and expiring is not
//! taken for a lock.

use std::cell::{Cell, RefCell};

use fence_core::stats;

use crate::ffi::events::KeyspaceHandler;
use crate::ffi::timer::{self, TimerHandler};
use crate::ffi::{Ctx, RStr};

thread_local! {
    static LAST_UNLINKED_LOCK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    // Set while LOCK.RELEASE deletes its key: that unlink is a release, not an expiry.
    static RELEASING: Cell<bool> = const { Cell::new(false) };
    // Whether the forgetting timer is pending.
    static FORGET_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// The lock type's unlink callback: remembers the key's name until the end of the round.
pub fn lock_unlinked(key: RStr<'_>) {
    if RELEASING.with(|r| r.replace(false)) {
        return;
    }
    LAST_UNLINKED_LOCK.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.clear();
            l.extend_from_slice(key.bytes());
        }
    });
    if !FORGET_PENDING.with(Cell::get) && timer::start_detached::<Forget>(0, ()).is_some() {
        FORGET_PENDING.with(|f| f.set(true));
    }
}

struct Forget;

impl TimerHandler for Forget {
    type Data = ();
    fn fire(_ctx: &Ctx<'_>, _data: ()) {
        FORGET_PENDING.with(|f| f.set(false));
        LAST_UNLINKED_LOCK.with(|l| {
            if let Ok(mut l) = l.try_borrow_mut() {
                l.clear();
            }
        });
    }
}

/// Runs `delete`, the release of a lock by its holder: not an expiry.
pub fn releasing(delete: impl FnOnce()) {
    RELEASING.with(|r| r.set(true));
    delete();
    RELEASING.with(|r| r.set(false));
}

/// The `expired` keyspace event (subscribed at load).
pub struct OnExpired;

impl KeyspaceHandler for OnExpired {
    fn on(ctx: &Ctx<'_>, _event: &[u8], key: RStr<'_>) {
        let name = key.bytes();
        let was_lock = LAST_UNLINKED_LOCK.with(|l| {
            l.try_borrow_mut().is_ok_and(|mut l| {
                let hit = l.as_slice() == name;
                l.clear();
                hit
            })
        });
        if was_lock {
            stats::EXPIRATIONS.incr();
            ctx.notify(c"lock.expire", key);
        }
    }
}
