//! A held lock as Redis keeps it: one block `[token: u64][owner length: u32][owner bytes]`,
//! so that a held lock costs Redis little more than a `SET NX PX` string (one small block
//! instead of a struct plus a separate owner buffer). The handle is one pointer, which is
//! also what Redis keeps as the key's module value.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use fence_core::lease::LeaseView;
use fence_core::stats;

/// Bytes before the owner: the token and the owner's length.
const HEADER: usize = 12;

/// An owned lease block.
pub struct LeaseBlock {
    ptr: NonNull<u8>,
}

fn layout(owner_len: usize) -> Layout {
    // An owner is at most 4 GiB (its length is a u32), so this never fails; fall back to the
    // header alone rather than panic.
    Layout::from_size_align(HEADER + owner_len, 8).unwrap_or_else(|_| Layout::new::<[u64; 2]>())
}

impl LeaseBlock {
    /// A new lease for `owner` with `token` (an owner past 4 GiB is cut there: the loaders and
    /// the commands never pass one).
    pub fn new(owner: &[u8], token: u64) -> LeaseBlock {
        let len = u32::try_from(owner.len()).unwrap_or(u32::MAX);
        let owner = owner.get(..len as usize).unwrap_or(owner);
        let layout = layout(owner.len());
        // SAFETY: the layout is never zero-sized (HEADER > 0); the writes stay inside it.
        unsafe {
            let p = alloc(layout);
            let Some(ptr) = NonNull::new(p) else {
                handle_alloc_error(layout)
            };
            p.cast::<u64>().write(token);
            p.add(8).cast::<u32>().write(len);
            std::ptr::copy_nonoverlapping(owner.as_ptr(), p.add(HEADER), owner.len());
            stats::LOCKS.fetch_add(1, Ordering::Relaxed);
            LeaseBlock { ptr }
        }
    }

    /// The lease it holds.
    pub fn view(&self) -> LeaseView<'_> {
        view_of(self.ptr)
    }

    /// Gives the block to Redis as a module value.
    pub(super) fn into_raw(self) -> *mut c_void {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p.cast()
    }

    /// Takes a block back from `into_raw`.
    ///
    /// # Safety
    /// `p` must come from `into_raw` and not have been taken back already.
    pub(super) unsafe fn from_raw(p: *mut c_void) -> Option<LeaseBlock> {
        NonNull::new(p.cast::<u8>()).map(|ptr| LeaseBlock { ptr })
    }
}

/// The lease in a block from `into_raw`, borrowed for as long as the caller keeps the block
/// alive (the value of an open key, or of a callback's argument).
pub(super) fn borrow<'a>(p: *const c_void) -> Option<LeaseView<'a>> {
    NonNull::new(p.cast_mut().cast::<u8>()).map(view_of)
}

fn view_of<'a>(ptr: NonNull<u8>) -> LeaseView<'a> {
    // SAFETY: a block made by `new`: the token, then the owner's length and that many bytes.
    unsafe {
        let p = ptr.as_ptr();
        let token = p.cast::<u64>().read();
        let len = p.add(8).cast::<u32>().read() as usize;
        LeaseView {
            token,
            owner: std::slice::from_raw_parts(p.add(HEADER), len),
        }
    }
}

/// Bytes of memory a lease block uses.
pub fn mem_usage(view: &LeaseView<'_>) -> usize {
    HEADER + view.owner.len()
}

impl Drop for LeaseBlock {
    fn drop(&mut self) {
        let len = self.view().owner.len();
        stats::LOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout(len)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_round_trips() {
        for owner in [&b""[..], b"a", &[0xffu8; 37][..], &vec![7u8; 4096][..]] {
            let l = LeaseBlock::new(owner, u64::MAX - 1);
            assert_eq!(l.view().owner, owner);
            assert_eq!(l.view().token, u64::MAX - 1);
            assert_eq!(mem_usage(&l.view()), 12 + owner.len());
            let raw = l.into_raw();
            assert_eq!(borrow(raw).map(|v| v.token), Some(u64::MAX - 1));
            // SAFETY: raw comes from into_raw and is taken back once.
            let back = unsafe { LeaseBlock::from_raw(raw) };
            assert_eq!(back.map(|b| b.view().owner.to_vec()), Some(owner.to_vec()));
        }
    }
}
