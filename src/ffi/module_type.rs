//! Module data types: the `extern "C"` callbacks Redis calls (load, save, rewrite, digest,
//! memory, copy, unlink, free), made from a safe `ModuleType` implementation. Each callback
//! runs inside a panic guard: a bug is logged, never a dead server.

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};

use fence_core::lease::LeaseView;
use fence_core::stock::Stock;
use redis_module::raw;

use super::ctx::RStr;
use super::io::{status, Aof, Digest, Origin, Rdb, RdbOut};
use super::lease::{self, LeaseBlock};

/// Which value Redis holds: its address, for telling values apart (never dereferenced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueId(usize);

/// A kind of value the module hands Redis as a pointer.
pub trait Stored: Sized {
    /// How callbacks see a stored value.
    type View<'a>;
    fn into_raw(self) -> *mut c_void;
    /// # Safety
    /// `p` must come from `into_raw` of this type and not have been taken back.
    unsafe fn from_raw(p: *mut c_void) -> Option<Self>;
    /// # Safety
    /// `p` must come from `into_raw` of this type and stay alive while the view is used.
    unsafe fn view<'a>(p: *const c_void) -> Option<Self::View<'a>>;
}

impl Stored for LeaseBlock {
    type View<'a> = LeaseView<'a>;
    fn into_raw(self) -> *mut c_void {
        LeaseBlock::into_raw(self)
    }
    unsafe fn from_raw(p: *mut c_void) -> Option<Self> {
        LeaseBlock::from_raw(p)
    }
    unsafe fn view<'a>(p: *const c_void) -> Option<LeaseView<'a>> {
        lease::borrow(p)
    }
}

impl Stored for Box<Stock> {
    type View<'a> = &'a Stock;
    fn into_raw(self) -> *mut c_void {
        Box::into_raw(self).cast()
    }
    unsafe fn from_raw(p: *mut c_void) -> Option<Self> {
        (!p.is_null()).then(|| Box::from_raw(p.cast::<Stock>()))
    }
    unsafe fn view<'a>(p: *const c_void) -> Option<&'a Stock> {
        p.cast::<Stock>().as_ref()
    }
}

/// A module data type's behaviour, in safe Rust.
pub trait ModuleType: 'static {
    type Value: Stored;
    /// Reads a value; `None` refuses it (Redis then refuses the payload or the file).
    fn load(rdb: &mut Rdb<'_>, encver: i32) -> Option<Self::Value>;
    /// The value `load` returned is now `id`, loaded from `origin` (Redis may still free it).
    fn kept(origin: Origin, id: ValueId, value: <Self::Value as Stored>::View<'_>);
    fn save(out: &mut RdbOut<'_>, value: <Self::Value as Stored>::View<'_>);
    fn rewrite(aof: &mut Aof<'_>, key: RStr<'_>, value: <Self::Value as Stored>::View<'_>);
    fn mem_usage(value: <Self::Value as Stored>::View<'_>) -> usize;
    fn digest(d: &mut Digest<'_>, value: <Self::Value as Stored>::View<'_>);
    fn copy(value: <Self::Value as Stored>::View<'_>) -> Option<Self::Value>;
    /// The value leaves the keyspace (deleted, expired, overwritten).
    fn unlink(key: RStr<'_>, id: ValueId);
    /// The value is being freed (maybe on a background thread).
    fn freed(id: ValueId);
    /// How many blocks freeing it frees (Redis frees big values in the background).
    fn free_effort(_value: <Self::Value as Stored>::View<'_>) -> usize {
        1
    }
    /// Data saved once per RDB, before the keyspace.
    const AUX: bool = false;
    fn aux_save(_out: &mut RdbOut<'_>) {}
    fn aux_load(_rdb: &mut Rdb<'_>, _encver: i32) -> bool {
        true
    }
}

/// The registered types, for telling a key's value apart (set once the types exist).
static LOCK_TYPE: AtomicPtr<raw::RedisModuleType> = AtomicPtr::new(std::ptr::null_mut());
static STOCK_TYPE: AtomicPtr<raw::RedisModuleType> = AtomicPtr::new(std::ptr::null_mut());

/// Records the registered types (after Redis created them).
pub fn set_types(lock: *mut raw::RedisModuleType, stock: *mut raw::RedisModuleType) {
    LOCK_TYPE.store(lock, Ordering::Relaxed);
    STOCK_TYPE.store(stock, Ordering::Relaxed);
}

pub(super) fn lock_type() -> *mut raw::RedisModuleType {
    LOCK_TYPE.load(Ordering::Relaxed)
}

pub(super) fn stock_type() -> *mut raw::RedisModuleType {
    STOCK_TYPE.load(Ordering::Relaxed)
}

fn guard<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            super::api::log(
                std::ptr::null_mut(),
                "warning",
                &format!("fence: caught a panic in a data type's {what}"),
            );
            fallback
        }
    }
}

extern "C" fn rdb_load<T: ModuleType>(io: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    guard("load", std::ptr::null_mut(), || {
        let mut rdb = Rdb::new(io);
        let Some(value) = T::load(&mut rdb, encver) else {
            return std::ptr::null_mut();
        };
        let p = value.into_raw();
        // SAFETY: `p` was just made by `into_raw` and Redis has not seen it yet.
        if let Some(view) = unsafe { T::Value::view(p) } {
            T::kept(rdb.origin(), ValueId(p as usize), view);
        }
        p
    })
}

extern "C" fn rdb_save<T: ModuleType>(io: *mut raw::RedisModuleIO, value: *mut c_void) {
    guard("save", (), || {
        // SAFETY: Redis passes one of this type's values.
        if let Some(v) = unsafe { T::Value::view(value) } {
            T::save(&mut RdbOut::new(io), v);
        }
    });
}

extern "C" fn aof_rewrite<T: ModuleType>(
    io: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    guard("AOF rewrite", (), || {
        // SAFETY: Redis passes one of this type's values.
        if let Some(v) = unsafe { T::Value::view(value) } {
            T::rewrite(&mut Aof::new(io), RStr::new(key), v);
        }
    });
}

extern "C" fn mem_usage<T: ModuleType>(value: *const c_void) -> usize {
    guard("memory usage", 0, || {
        // SAFETY: Redis passes one of this type's values.
        unsafe { T::Value::view(value) }.map_or(0, T::mem_usage)
    })
}

extern "C" fn digest<T: ModuleType>(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    guard("digest", (), || {
        // SAFETY: Redis passes one of this type's values.
        if let Some(v) = unsafe { T::Value::view(value) } {
            T::digest(&mut Digest::new(md), v);
        }
    });
}

extern "C" fn free<T: ModuleType>(value: *mut c_void) {
    guard("free", (), || {
        T::freed(ValueId(value as usize));
        // SAFETY: Redis frees each value once, with the pointer it got from this type.
        drop(unsafe { T::Value::from_raw(value) });
    });
}

extern "C" fn copy<T: ModuleType>(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    guard("copy", std::ptr::null_mut(), || {
        // SAFETY: Redis passes one of this type's values.
        unsafe { T::Value::view(value) }
            .and_then(T::copy)
            .map_or(std::ptr::null_mut(), Stored::into_raw)
    })
}

extern "C" fn unlink<T: ModuleType>(key: *mut raw::RedisModuleString, value: *const c_void) {
    guard("unlink", (), || {
        T::unlink(RStr::new(key), ValueId(value as usize))
    });
}

extern "C" fn free_effort<T: ModuleType>(
    _key: *mut raw::RedisModuleString,
    value: *const c_void,
) -> usize {
    guard("free effort", 1, || {
        // SAFETY: Redis passes one of this type's values.
        unsafe { T::Value::view(value) }.map_or(1, T::free_effort)
    })
}

extern "C" fn aux_save<T: ModuleType>(io: *mut raw::RedisModuleIO, _when: c_int) {
    guard("aux save", (), || T::aux_save(&mut RdbOut::new(io)));
}

extern "C" fn aux_load<T: ModuleType>(
    io: *mut raw::RedisModuleIO,
    encver: c_int,
    _when: c_int,
) -> c_int {
    guard("aux load", status(false), || {
        status(T::aux_load(&mut Rdb::new(io), encver))
    })
}

/// The callbacks Redis calls for type `T`.
pub const fn methods<T: ModuleType>() -> raw::RedisModuleTypeMethods {
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load::<T>),
        rdb_save: Some(rdb_save::<T>),
        aof_rewrite: Some(aof_rewrite::<T>),
        mem_usage: Some(mem_usage::<T>),
        digest: Some(digest::<T>),
        free: Some(free::<T>),
        aux_load: if T::AUX { Some(aux_load::<T>) } else { None },
        aux_save: if T::AUX { Some(aux_save::<T>) } else { None },
        aux_save2: None,
        aux_save_triggers: if T::AUX {
            raw::REDISMODULE_AUX_BEFORE_RDB as c_int
        } else {
            0
        },
        free_effort: Some(free_effort::<T>),
        unlink: Some(unlink::<T>),
        copy: Some(copy::<T>),
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    }
}
