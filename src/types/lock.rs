//! Callbacks of the `fence-lck` data type: a `Lease` (owner and token); the expiry is the
//! key's own.

use std::ffi::{c_char, c_int, c_void};

use redis_module::native_types::RedisType;
use redis_module::raw;

use super::ENCODING_VERSION;
use crate::glue::api;
use crate::lease::Lease;
use crate::TOKENS;

/// The lock data type.
pub static LOCK_TYPE: RedisType = RedisType::new(
    "fence-lck",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        free: Some(free),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save2: None,
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: Some(crate::info::lock_unlink),
        copy: Some(copy),
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    },
);

/// Reads a string buffer from the RDB into an owned box, freeing Redis's copy.
pub(super) fn load_bytes(rdb: *mut raw::RedisModuleIO) -> Box<[u8]> {
    let mut len = 0;
    // SAFETY: rdb is the live loading stream.
    let p = unsafe { api!(RedisModule_LoadStringBuffer)(rdb, &mut len) };
    if p.is_null() {
        return Box::default();
    }
    // SAFETY: Redis allocated `len` bytes at `p`; we copy them, then free them.
    let bytes: Box<[u8]> = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.into();
    unsafe { api!(RedisModule_Free)(p.cast()) };
    bytes
}

/// Writes bytes as one RDB string.
pub(super) fn save_bytes(rdb: *mut raw::RedisModuleIO, bytes: &[u8]) {
    // SAFETY: rdb is the live saving stream.
    unsafe {
        api!(RedisModule_SaveStringBuffer)(rdb, bytes.as_ptr().cast::<c_char>(), bytes.len())
    };
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if !(1..=ENCODING_VERSION).contains(&encver) {
        return std::ptr::null_mut();
    }
    let token = api!(RedisModule_LoadUnsigned)(rdb);
    let owner = load_bytes(rdb);
    // A loaded grant is never issued again.
    TOKENS.observe(token);
    Lease::new(&owner, token).into_raw().cast()
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let Some(lease) = Lease::borrow_raw(value.cast()) else {
        return;
    };
    api!(RedisModule_SaveUnsigned)(rdb, lease.token());
    save_bytes(rdb, lease.owner());
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let Some(lease) = Lease::borrow_raw(value.cast()) else {
        return;
    };
    // Expire-at 0 leaves the expiry alone: Redis writes its own PEXPIREAT after this command.
    api!(RedisModule_EmitAOF)(
        aof,
        c"FENCE.LOCK".as_ptr(),
        c"sbll".as_ptr(),
        key,
        lease.owner().as_ptr().cast::<c_char>(),
        lease.owner().len(),
        i64::try_from(lease.token()).unwrap_or(i64::MAX),
        0i64,
    );
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    Lease::borrow_raw(value.cast_mut().cast()).map_or(0, |l| l.mem_usage())
}

unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let Some(lease) = Lease::borrow_raw(value.cast()) else {
        return;
    };
    api!(RedisModule_DigestAddStringBuffer)(
        md,
        lease.owner().as_ptr().cast::<c_char>(),
        lease.owner().len(),
    );
    api!(RedisModule_DigestAddLongLong)(md, i64::try_from(lease.token()).unwrap_or(i64::MAX));
    api!(RedisModule_DigestEndSequence)(md);
}

unsafe extern "C" fn free(value: *mut c_void) {
    drop(Lease::from_raw(value.cast()));
}

unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    match Lease::borrow_raw(value.cast_mut().cast()) {
        Some(lease) => Lease::clone(&lease).into_raw().cast(),
        None => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, _when: c_int) {
    api!(RedisModule_SaveUnsigned)(rdb, TOKENS.last());
}

unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    if !(1..=ENCODING_VERSION).contains(&encver) {
        return raw::REDISMODULE_ERR as c_int;
    }
    TOKENS.observe(api!(RedisModule_LoadUnsigned)(rdb));
    raw::REDISMODULE_OK as c_int
}
