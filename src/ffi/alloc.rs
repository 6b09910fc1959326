//! The module's allocator: Redis's own (so `INFO memory`, `MEMORY USAGE` and `maxmemory` see
//! the module's memory), with `alloc_zeroed` as Redis's calloc and `realloc` as Redis's
//! realloc. A large zeroed block (a ledger's new bucket table) then comes from fresh pages the
//! system zeroes on first touch, instead of being written in full inside one command, and a
//! growing vector is moved by the allocator only when it must be.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use super::api::optional;

/// Redis's allocator (available once the module is loaded; unit tests use the system's).
pub struct FenceAlloc;

/// Sizes rounded up to the alignment: Redis's allocator (jemalloc) aligns a block to its size
/// class, so a size that is a multiple of the alignment is aligned.
fn size_of(layout: Layout) -> usize {
    (layout.size() + layout.align() - 1) & !(layout.align() - 1)
}

fn fail() -> ! {
    // No allocation may be made here (the allocator is what failed).
    std::process::abort()
}

// SAFETY: each function returns a block of at least the layout's size, aligned as above, from
// Redis's allocator, and frees only blocks from it.
unsafe impl GlobalAlloc for FenceAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match optional!(RedisModule_Alloc) {
            Some(f) => f(size_of(layout)).cast(),
            None => fail(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match optional!(RedisModule_Calloc) {
            Some(f) => f(1, size_of(layout)).cast(),
            None => {
                let p = self.alloc(layout);
                if !p.is_null() {
                    std::ptr::write_bytes(p, 0, layout.size());
                }
                p
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match optional!(RedisModule_Realloc) {
            Some(f) => f(ptr.cast::<c_void>(), size_of(new_layout)).cast(),
            None => {
                let p = self.alloc(new_layout);
                if !p.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                p
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        match optional!(RedisModule_Free) {
            Some(f) => f(ptr.cast()),
            None => fail(),
        }
    }
}
