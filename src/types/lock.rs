//! Callbacks of the `fence-lck` data type: a `Lease` (owner and token); the expiry is the
//! key's own.

use std::ffi::{c_char, c_int, c_void};

use redis_module::native_types::RedisType;
use redis_module::raw;

use super::{save_bytes, warn, Origin, Rdb};
use crate::encoding::{load_lock, Source, LOCK_ENCODING};
use crate::glue::api;
use crate::lease::Lease;
use crate::TOKENS;

/// The lock data type.
pub static LOCK_TYPE: RedisType = RedisType::new(
    "fence-lck",
    LOCK_ENCODING,
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
        unlink: Some(unlink),
        copy: Some(copy),
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    },
);

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    let origin = Origin::of(rdb);
    let lock = match load_lock(&mut Rdb(rdb), encver) {
        Ok(lock) => lock,
        Err(e) => {
            warn(&format!("fence: refused to load a lock: {e}"));
            return std::ptr::null_mut();
        }
    };
    if !origin.admits(lock.token) {
        warn(&format!(
            "fence: refused to restore a lock whose token {} is more than 24 hours ahead of \
             this server's clock",
            lock.token
        ));
        return std::ptr::null_mut();
    }
    let value = Lease::new(&lock.owner, lock.token).into_raw();
    // A loaded grant is never issued again.
    super::loaded(origin, value, lock.token);
    value.cast()
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
    super::forget(value.cast_const().cast());
    drop(Lease::from_raw(value.cast()));
}

unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    super::settle();
    match Lease::borrow_raw(value.cast_mut().cast()) {
        Some(lease) => Lease::clone(&lease).into_raw().cast(),
        None => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, _when: c_int) {
    super::settle();
    api!(RedisModule_SaveUnsigned)(rdb, TOKENS.last());
}

/// The highest token of the server that wrote the RDB (raising the clock at most to its
/// ceiling). Redis ignores a stream error when the callback reports success, so it is checked.
unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    if !(1..=LOCK_ENCODING).contains(&encver) {
        warn(&format!(
            "fence: unknown encoding version {encver} of the token high-water mark"
        ));
        return raw::REDISMODULE_ERR as c_int;
    }
    let Some(last) = Rdb(rdb).unsigned() else {
        warn("fence: cannot read the token high-water mark");
        return raw::REDISMODULE_ERR as c_int;
    };
    super::observe(last);
    raw::REDISMODULE_OK as c_int
}

/// A lock leaves the keyspace: it was in it, so a pending restored token is observed; and
/// `INFO`'s expiry accounting learns its name.
unsafe extern "C" fn unlink(key: *mut raw::RedisModuleString, _value: *const c_void) {
    super::settle();
    crate::info::lock_unlinked(key);
}
