//! The streams a data type's callbacks read and write: an RDB being loaded (`Rdb`, a
//! `fence_core::encoding::Source`), an RDB being saved (`RdbOut`), an AOF rewrite (`Aof`) and a
//! digest (`Digest`).

use std::ffi::{c_char, c_int};
use std::marker::PhantomData;

use fence_core::effects::Encoded;
use fence_core::encoding::Source;
use redis_module::raw;

use super::api::{call, free};
use super::ctx::RStr;

/// An RDB stream being loaded. The module sets `REDISMODULE_OPTIONS_HANDLE_IO_ERRORS`, so a
/// short read or a wrong opcode sets the stream's error flag instead of killing the server;
/// every read checks it.
pub struct Rdb<'a> {
    io: *mut raw::RedisModuleIO,
    _life: PhantomData<&'a ()>,
}

/// Where a value being loaded comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The server is loading (RDB or AOF at start, a full sync, also one loaded beside the old
    /// data with `repl-diskless-load swapdb`, `DEBUG RELOAD`): always applied.
    Loading,
    /// `RESTORE` on a replica: sent by its master, applied like the rest of the stream.
    Master,
    /// `RESTORE` or `MIGRATE` from a client on a master.
    Client,
}

impl<'a> Rdb<'a> {
    pub(super) fn new(io: *mut raw::RedisModuleIO) -> Rdb<'a> {
        Rdb {
            io,
            _life: PhantomData,
        }
    }

    fn failed(&self) -> bool {
        call!(RedisModule_IsIOError(self.io)) != 0
    }

    /// Where the value being loaded comes from.
    pub fn origin(&self) -> Origin {
        let ctx = call!(RedisModule_GetContextFromIO(self.io));
        let flags = call!(RedisModule_GetContextFlags(ctx)) as u32;
        let loading = raw::REDISMODULE_CTX_FLAGS_LOADING | raw::REDISMODULE_CTX_FLAGS_ASYNC_LOADING;
        if flags & loading != 0 {
            Origin::Loading
        } else if flags & raw::REDISMODULE_CTX_FLAGS_MASTER == 0 {
            Origin::Master
        } else {
            Origin::Client
        }
    }
}

impl Source for Rdb<'_> {
    fn unsigned(&mut self) -> Option<u64> {
        let v = call!(RedisModule_LoadUnsigned(self.io));
        (!self.failed()).then_some(v)
    }

    fn signed(&mut self) -> Option<i64> {
        let v = call!(RedisModule_LoadSigned(self.io));
        (!self.failed()).then_some(v)
    }

    fn with_bytes<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let mut len = 0;
        let p = call!(RedisModule_LoadStringBuffer(self.io, &mut len));
        let out = if p.is_null() {
            f(&[])
        } else {
            // SAFETY: Redis allocated `len` bytes at `p`; `f` reads them, then they are freed.
            let out = f(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) });
            free(p.cast());
            out
        };
        (!self.failed()).then_some(out)
    }
}

/// An RDB stream being saved.
pub struct RdbOut<'a> {
    io: *mut raw::RedisModuleIO,
    _life: PhantomData<&'a ()>,
}

impl<'a> RdbOut<'a> {
    pub(super) fn new(io: *mut raw::RedisModuleIO) -> RdbOut<'a> {
        RdbOut {
            io,
            _life: PhantomData,
        }
    }

    pub fn unsigned(&mut self, v: u64) {
        call!(RedisModule_SaveUnsigned(self.io, v));
    }

    pub fn signed(&mut self, v: i64) {
        call!(RedisModule_SaveSigned(self.io, v));
    }

    pub fn bytes(&mut self, b: &[u8]) {
        call!(RedisModule_SaveStringBuffer(
            self.io,
            b.as_ptr().cast::<c_char>(),
            b.len()
        ));
    }
}

/// An AOF rewrite.
pub struct Aof<'a> {
    io: *mut raw::RedisModuleIO,
    _life: PhantomData<&'a ()>,
}

impl<'a> Aof<'a> {
    pub(super) fn new(io: *mut raw::RedisModuleIO) -> Aof<'a> {
        Aof {
            io,
            _life: PhantomData,
        }
    }

    /// Writes an effect on `key` into the rewrite.
    pub fn emit(&mut self, key: RStr<'_>, effect: &Encoded<'_>) {
        super::ctx::emit_args(self.io, key.raw(), effect);
    }
}

/// A value's digest (`DEBUG DIGEST`, `DEBUG DIGEST-VALUE`). Redis combines the sequences a
/// value ends order-independently (it XORs them).
pub struct Digest<'a> {
    md: *mut raw::RedisModuleDigest,
    _life: PhantomData<&'a ()>,
}

impl<'a> Digest<'a> {
    pub(super) fn new(md: *mut raw::RedisModuleDigest) -> Digest<'a> {
        Digest {
            md,
            _life: PhantomData,
        }
    }

    pub fn bytes(&mut self, b: &[u8]) {
        call!(RedisModule_DigestAddStringBuffer(
            self.md,
            b.as_ptr().cast::<c_char>(),
            b.len()
        ));
    }

    pub fn int(&mut self, v: i64) {
        call!(RedisModule_DigestAddLongLong(self.md, v));
    }

    /// Ends a sequence: sequences combine order-independently.
    pub fn end_sequence(&mut self) {
        call!(RedisModule_DigestEndSequence(self.md));
    }
}

/// `REDISMODULE_OK` / `REDISMODULE_ERR` as a callback returns them.
pub(super) fn status(ok: bool) -> c_int {
    if ok {
        raw::REDISMODULE_OK as c_int
    } else {
        raw::REDISMODULE_ERR as c_int
    }
}
