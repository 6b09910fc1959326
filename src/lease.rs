//! The lock state machine: who holds a lock, with which token, and what acquire, renew and
//! release decide. Expiry is Redis's key expiry, so a lease that exists here is live.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

/// A held lock: its owner and the fencing token of the grant.
///
/// Stored in one allocation, `[token: u64][owner length: u32][owner bytes]`, so that a held
/// lock costs Redis little more than a `SET NX PX` string (one small block instead of a
/// struct plus a separate owner buffer). The handle itself is one pointer, which is also what
/// Redis keeps as the key's module value.
pub struct Lease {
    ptr: NonNull<u8>,
}

/// Bytes before the owner: the token and the owner's length.
const HEADER: usize = 12;

impl Lease {
    fn layout(owner_len: usize) -> Layout {
        // An owner is bounded by `fence.max-id-length` (at most 512 MiB), so this never fails;
        // fall back to the header alone rather than panic.
        Layout::from_size_align(HEADER + owner_len, 8).unwrap_or_else(|_| Layout::new::<[u64; 2]>())
    }

    /// A new lease for `owner` with `token`.
    pub fn new(owner: &[u8], token: u64) -> Self {
        let len = u32::try_from(owner.len()).unwrap_or(u32::MAX);
        let owner = owner.get(..len as usize).unwrap_or(owner);
        let layout = Self::layout(owner.len());
        // SAFETY: the layout is never zero-sized (HEADER > 0); the writes stay inside it.
        unsafe {
            let p = alloc(layout);
            let Some(ptr) = NonNull::new(p) else {
                handle_alloc_error(layout)
            };
            p.cast::<u64>().write(token);
            p.add(8).cast::<u32>().write(len);
            std::ptr::copy_nonoverlapping(owner.as_ptr(), p.add(HEADER), owner.len());
            crate::stats::LOCKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Self { ptr }
        }
    }

    /// The fencing token of the grant.
    pub fn token(&self) -> u64 {
        // SAFETY: the block starts with the token, 8-aligned.
        unsafe { self.ptr.as_ptr().cast::<u64>().read() }
    }

    /// Who holds the lock.
    pub fn owner(&self) -> &[u8] {
        // SAFETY: the owner's length follows the token, and that many bytes follow it.
        unsafe {
            let p = self.ptr.as_ptr();
            let len = p.add(8).cast::<u32>().read() as usize;
            std::slice::from_raw_parts(p.add(HEADER), len)
        }
    }

    /// Whether `owner` holds this lease.
    pub fn is_held_by(&self, owner: &[u8]) -> bool {
        self.owner() == owner
    }

    /// Bytes of memory this lease's block uses.
    pub fn mem_usage(&self) -> usize {
        HEADER + self.owner().len()
    }

    /// Gives the block away as a raw pointer (to Redis, as a module value).
    pub fn into_raw(self) -> *mut u8 {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Takes a block back from `into_raw`.
    ///
    /// # Safety
    /// `p` must come from `into_raw` and not have been taken back already.
    pub unsafe fn from_raw(p: *mut u8) -> Option<Self> {
        NonNull::new(p).map(|ptr| Self { ptr })
    }

    /// Looks at a block from `into_raw` without taking it back: the result must not outlive
    /// the block, and is never dropped (so it frees nothing).
    ///
    /// # Safety
    /// `p` must come from `into_raw` and stay alive while the result is used.
    pub unsafe fn borrow_raw(p: *mut u8) -> Option<ManuallyDrop<Self>> {
        NonNull::new(p).map(|ptr| ManuallyDrop::new(Self { ptr }))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let layout = Self::layout(self.owner().len());
        crate::stats::LOCKS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl Clone for Lease {
    fn clone(&self) -> Self {
        Self::new(self.owner(), self.token())
    }
}

impl PartialEq for Lease {
    fn eq(&self, other: &Self) -> bool {
        self.token() == other.token() && self.owner() == other.owner()
    }
}

impl Eq for Lease {}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("token", &self.token())
            .field("owner", &String::from_utf8_lossy(self.owner()))
            .finish()
    }
}

/// What `LOCK.ACQUIRE` does with the lock as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is free: grant it with a new token.
    Grant,
    /// The caller holds it already: reset the TTL, keep this token.
    Reacquire(u64),
    /// Another owner holds it: nil.
    Contended,
}

/// Decides an acquire by `owner` given the current lease, if any, and the number of clients
/// waiting for the lock. Nobody jumps the queue: while clients wait, a free lock is theirs.
pub fn decide_acquire(current: Option<&Lease>, owner: &[u8], waiters: usize) -> Acquire {
    match current {
        Some(lease) if lease.is_held_by(owner) => Acquire::Reacquire(lease.token()),
        None if waiters == 0 => Acquire::Grant,
        _ => Acquire::Contended,
    }
}

/// Decides a renew: the holder's token when `owner` holds the lock, else `None`.
/// A renew never creates a lease, so an expired lock stays free.
pub fn decide_renew(current: Option<&Lease>, owner: &[u8]) -> Option<u64> {
    current.filter(|l| l.is_held_by(owner)).map(Lease::token)
}

/// `decide_renew` or `decide_release` narrowed to one grant: with `token`, the lease must be
/// that grant too, so a stale guard of the same owner never acts on a newer grant.
pub fn held_as(current: Option<&Lease>, owner: &[u8], token: Option<u64>) -> Option<u64> {
    decide_renew(current, owner).filter(|t| token.is_none_or(|want| *t == want))
}

/// Decides a release: true when `owner` holds the lock and it must be freed.
#[cfg(test)]
pub fn decide_release(current: Option<&Lease>, owner: &[u8]) -> bool {
    current.is_some_and(|l| l.is_held_by(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_table() {
        let held = Lease::new(b"a", 7);
        assert_eq!(decide_acquire(None, b"a", 0), Acquire::Grant);
        assert_eq!(decide_acquire(Some(&held), b"a", 0), Acquire::Reacquire(7));
        assert_eq!(decide_acquire(Some(&held), b"b", 0), Acquire::Contended);
        // Waiters come first, even for a free lock; the holder may still re-acquire.
        assert_eq!(decide_acquire(None, b"a", 1), Acquire::Contended);
        assert_eq!(decide_acquire(Some(&held), b"b", 3), Acquire::Contended);
        assert_eq!(decide_acquire(Some(&held), b"a", 3), Acquire::Reacquire(7));
    }

    #[test]
    fn renew_table() {
        let held = Lease::new(b"a", 7);
        assert_eq!(decide_renew(None, b"a"), None);
        assert_eq!(decide_renew(Some(&held), b"a"), Some(7));
        assert_eq!(decide_renew(Some(&held), b"b"), None);
    }

    #[test]
    fn release_table() {
        let held = Lease::new(b"a", 7);
        assert_eq!(held_as(Some(&held), b"a", None), Some(7));
        assert_eq!(held_as(Some(&held), b"a", Some(7)), Some(7));
        assert_eq!(held_as(Some(&held), b"a", Some(6)), None);
        assert_eq!(held_as(Some(&held), b"b", Some(7)), None);
        assert_eq!(held_as(None, b"a", Some(7)), None);
        assert!(!decide_release(None, b"a"));
        assert!(decide_release(Some(&held), b"a"));
        assert!(!decide_release(Some(&held), b"b"));
    }

    #[test]
    fn one_block_round_trips() {
        for owner in [&b""[..], b"a", &[0xffu8; 37][..], &vec![7u8; 4096][..]] {
            let l = Lease::new(owner, u64::MAX - 1);
            assert_eq!(l.owner(), owner);
            assert_eq!(l.token(), u64::MAX - 1);
            assert_eq!(l.mem_usage(), 12 + owner.len());
            let c = l.clone();
            assert_eq!(c, l);
            let raw = l.into_raw();
            // SAFETY: raw comes from into_raw and is taken back once, below.
            let view = unsafe { Lease::borrow_raw(raw) }.map(|v| v.token());
            assert_eq!(view, Some(u64::MAX - 1));
            let back = unsafe { Lease::from_raw(raw) };
            assert_eq!(back.as_ref(), Some(&c));
        }
    }

    #[test]
    fn owners_compare_as_bytes() {
        let held = Lease::new(b"A", 1);
        assert!(!held.is_held_by(b"a"));
        assert!(!held.is_held_by(b"A "));
    }
}
