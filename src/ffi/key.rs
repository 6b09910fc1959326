//! An open key: what it holds, its lease or stock, its expiry. Closed when dropped. A lease or
//! stock borrowed from a key lives no longer than the borrow of the key, and changing the key
//! takes it mutably, so nothing borrowed can outlive a change.

use std::cell::Cell;
use std::ffi::{c_int, c_void};

use fence_core::error::FenceError;
use fence_core::lease::LeaseView;
use fence_core::stock::Stock;
use redis_module::raw;

use super::api::call;
use super::ctx::{Ctx, RStr};
use super::lease::{self, LeaseBlock};
use super::module_type::{lock_type, stock_type, Stored};

/// What a key holds, as far as this module is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Empty,
    Lock,
    Stock,
    String,
    Stream,
    Other,
}

/// An open key.
pub struct Key<'k> {
    ctx: Ctx<'k>,
    name: RStr<'k>,
    ptr: *mut raw::RedisModuleKey,
    /// What the key holds, asked of Redis once and kept until the key changes.
    kind: Cell<Option<Kind>>,
}

impl<'k> Key<'k> {
    /// Opens `name` for reading.
    pub fn read(ctx: &Ctx<'k>, name: RStr<'k>) -> Key<'k> {
        Key::open(ctx, name, raw::REDISMODULE_READ)
    }

    /// Opens `name` for reading and writing.
    pub fn write(ctx: &Ctx<'k>, name: RStr<'k>) -> Key<'k> {
        Key::open(ctx, name, raw::REDISMODULE_READ | raw::REDISMODULE_WRITE)
    }

    fn open(ctx: &Ctx<'k>, name: RStr<'k>, mode: u32) -> Key<'k> {
        let ptr = call!(RedisModule_OpenKey(ctx.raw(), name.raw(), mode as c_int));
        Key {
            ctx: *ctx,
            name,
            ptr: ptr.cast(),
            kind: Cell::new(None),
        }
    }

    /// The key's name.
    pub fn name(&self) -> RStr<'k> {
        self.name
    }

    /// What the key holds.
    pub fn kind(&self) -> Kind {
        if let Some(kind) = self.kind.get() {
            return kind;
        }
        let kind = self.ask_kind();
        self.kind.set(Some(kind));
        kind
    }

    fn ask_kind(&self) -> Kind {
        if self.ptr.is_null() {
            return Kind::Empty;
        }
        match call!(RedisModule_KeyType(self.ptr)) as isize {
            raw::REDISMODULE_KEYTYPE_EMPTY => Kind::Empty,
            raw::REDISMODULE_KEYTYPE_STRING => Kind::String,
            raw::REDISMODULE_KEYTYPE_STREAM => Kind::Stream,
            raw::REDISMODULE_KEYTYPE_MODULE => {
                let mt = call!(RedisModule_ModuleTypeGetType(self.ptr));
                if mt == lock_type() {
                    Kind::Lock
                } else if mt == stock_type() {
                    Kind::Stock
                } else {
                    Kind::Other
                }
            }
            _ => Kind::Other,
        }
    }

    fn value(&self) -> *mut c_void {
        if self.ptr.is_null() {
            return std::ptr::null_mut();
        }
        call!(RedisModule_ModuleTypeGetValue(self.ptr))
    }

    /// The lease held in this key: `Ok(None)` when empty, `WRONGTYPE` for any other type.
    pub fn lease(&self) -> Result<Option<LeaseView<'_>>, FenceError> {
        match self.kind() {
            Kind::Empty => Ok(None),
            Kind::Lock => Ok(lease::borrow(self.value())),
            _ => Err(FenceError::WrongType),
        }
    }

    /// The stock held in this key, if it holds one.
    pub fn stock(&self) -> Option<&Stock> {
        if self.kind() != Kind::Stock {
            return None;
        }
        // SAFETY: the value of a stock key is a boxed `Stock`, alive while the key is open and
        // unchanged; the borrow of `self` keeps it so.
        unsafe { <Box<Stock> as Stored>::view(self.value()) }
    }

    /// The stock held in this key, to change it.
    pub fn stock_mut(&mut self) -> Option<&mut Stock> {
        if self.kind() != Kind::Stock {
            return None;
        }
        // SAFETY: as `stock`; the key is borrowed mutably for as long as the stock is.
        unsafe { self.value().cast::<Stock>().as_mut() }
    }

    fn set_value<V: Stored>(&mut self, t: *mut raw::RedisModuleType, value: V) -> bool {
        if self.ptr.is_null() {
            return false;
        }
        let p = value.into_raw();
        self.kind.set(None);
        let status = call!(RedisModule_ModuleTypeSetValue(self.ptr, t, p));
        if status != raw::REDISMODULE_OK as c_int {
            // SAFETY: Redis did not take the value, so it is still ours.
            drop(unsafe { V::from_raw(p) });
            return false;
        }
        true
    }

    /// Stores a new lease (the key must be open for writing, empty or a lock).
    pub fn set_lease(&mut self, owner: &[u8], token: u64) {
        self.set_value(lock_type(), LeaseBlock::new(owner, token));
    }

    /// Stores a new stock (the key must be open for writing, empty or a stock).
    pub fn set_stock(&mut self, stock: Stock) {
        self.set_value(stock_type(), Box::new(stock));
    }

    /// Milliseconds left before the key expires, or -1 without expiry (or without a value:
    /// Redis 8 must not be asked about an empty key opened for writing).
    pub fn ttl_ms(&self) -> i64 {
        if self.ptr.is_null() || self.kind() == Kind::Empty {
            return -1;
        }
        let t = call!(RedisModule_GetExpire(self.ptr));
        if t < 0 {
            -1
        } else {
            t
        }
    }

    /// The absolute expiry in Unix milliseconds, or -1 without expiry (or without a value).
    pub fn expire_at_ms(&self) -> i64 {
        if self.ptr.is_null() || self.kind() == Kind::Empty {
            return -1;
        }
        let t = call!(RedisModule_GetAbsExpire(self.ptr));
        if t < 0 {
            -1
        } else {
            t
        }
    }

    /// Sets the absolute expiry in Unix milliseconds.
    pub fn set_expire_at_ms(&mut self, at: i64) {
        if self.ptr.is_null() {
            return;
        }
        call!(RedisModule_SetAbsExpire(self.ptr, at));
    }

    /// Deletes the key.
    pub fn delete(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        self.kind.set(Some(Kind::Empty));
        call!(RedisModule_DeleteKey(self.ptr));
    }

    /// Tells Redis the key changed (WATCH, client-side caching); the module opts out of the
    /// implicit signal so that reads and refused writes do not invalidate anything.
    pub fn signal_modified(&self) {
        call!(RedisModule_SignalModifiedKey(
            self.ctx.raw(),
            self.name.raw()
        ));
    }

    /// The raw handle, for the stream calls of this layer.
    pub(super) fn raw(&mut self) -> *mut raw::RedisModuleKey {
        self.kind.set(None);
        self.ptr
    }

    /// The number of entries of a stream (or elements of another value).
    pub fn value_length(&self) -> usize {
        if self.ptr.is_null() {
            return 0;
        }
        call!(RedisModule_ValueLength(self.ptr))
    }
}

impl Drop for Key<'_> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            call!(RedisModule_CloseKey(self.ptr));
        }
    }
}
