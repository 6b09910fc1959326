//! Callbacks of the `fence-stk` data type: a `Stock` (available, fence, deducted, ledger).

use std::ffi::{c_char, c_int, c_void};

use redis_module::native_types::RedisType;
use redis_module::raw;

use super::{save_bytes, warn, Origin, Rdb};
use crate::encoding::{load_stock, STOCK_ENCODING};
use crate::glue::api;
use crate::stock::Stock;

/// The stock data type.
pub static STOCK_TYPE: RedisType = RedisType::new(
    "fence-stk",
    STOCK_ENCODING,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        free: Some(free),
        aux_load: None,
        aux_save: None,
        aux_save2: None,
        aux_save_triggers: 0,
        free_effort: Some(free_effort),
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
    let stock = match load_stock(&mut Rdb(rdb), encver) {
        Ok(stock) => stock,
        Err(e) => {
            warn(&format!("fence: refused to load a stock: {e}"));
            return std::ptr::null_mut();
        }
    };
    if !origin.admits(stock.fence) {
        warn(&format!(
            "fence: refused to restore a stock whose fence {} is more than 24 hours ahead of \
             this server's clock",
            stock.fence
        ));
        return std::ptr::null_mut();
    }
    let fence = stock.fence;
    let value = Box::into_raw(Box::new(stock));
    // A token a stock accepted is never issued again by this server.
    super::loaded(origin, value.cast_const().cast(), fence);
    value.cast()
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let Some(stock) = value.cast::<Stock>().as_ref() else {
        return;
    };
    api!(RedisModule_SaveSigned)(rdb, stock.available);
    api!(RedisModule_SaveUnsigned)(rdb, stock.fence);
    api!(RedisModule_SaveSigned)(rdb, stock.deducted);
    api!(RedisModule_SaveUnsigned)(rdb, stock.ledger_len() as u64);
    for (id, quantity) in stock.entries() {
        save_bytes(rdb, id);
        api!(RedisModule_SaveSigned)(rdb, quantity);
    }
    api!(RedisModule_SaveUnsigned)(rdb, stock.restocks_len() as u64);
    for (id, quantity) in stock.restock_entries() {
        save_bytes(rdb, id);
        api!(RedisModule_SaveSigned)(rdb, quantity);
    }
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let Some(stock) = value.cast::<Stock>().as_ref() else {
        return;
    };
    let emit = api!(RedisModule_EmitAOF);
    let fence = i64::try_from(stock.fence).unwrap_or(i64::MAX);
    emit(
        aof,
        c"FENCE.STOCK".as_ptr(),
        c"slllc".as_ptr(),
        key,
        stock.available,
        fence,
        stock.deducted,
        c"RESET".as_ptr(),
    );
    // One command per entry, in the order the entries were made, so two rewrites of one stock
    // are byte-identical.
    for (id, quantity) in stock.entries() {
        emit(
            aof,
            c"FENCE.STOCK".as_ptr(),
            c"slllcbl".as_ptr(),
            key,
            stock.available,
            fence,
            stock.deducted,
            c"KEEP".as_ptr(),
            id.as_ptr().cast::<c_char>(),
            id.len(),
            quantity,
        );
    }
    for (id, quantity) in stock.restock_entries() {
        emit(
            aof,
            c"FENCE.RESTOCK".as_ptr(),
            c"slbl".as_ptr(),
            key,
            stock.available,
            id.as_ptr().cast::<c_char>(),
            id.len(),
            quantity,
        );
    }
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    value.cast::<Stock>().as_ref().map_or(0, Stock::mem_usage)
}

/// Redis combines a value's digest sequences order-independently (it XORs them), so each
/// entry is a sequence of its own: the digest needs no sort, and two servers that made the
/// same entries in another order agree. An entry is hashed as one buffer (its stored record:
/// quantity, length, id), which costs what a set member costs.
unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let Some(stock) = value.cast::<Stock>().as_ref() else {
        return;
    };
    api!(RedisModule_DigestAddLongLong)(md, stock.available);
    api!(RedisModule_DigestAddLongLong)(md, i64::try_from(stock.fence).unwrap_or(i64::MAX));
    api!(RedisModule_DigestAddLongLong)(md, stock.deducted);
    api!(RedisModule_DigestEndSequence)(md);
    for record in stock.entry_records() {
        api!(RedisModule_DigestAddStringBuffer)(md, record.as_ptr().cast::<c_char>(), record.len());
        api!(RedisModule_DigestEndSequence)(md);
    }
    // Restock entries are told apart from request entries of the same id and quantity.
    for record in stock.restock_records() {
        api!(RedisModule_DigestAddLongLong)(md, -1);
        api!(RedisModule_DigestAddStringBuffer)(md, record.as_ptr().cast::<c_char>(), record.len());
        api!(RedisModule_DigestEndSequence)(md);
    }
}

unsafe extern "C" fn free(value: *mut c_void) {
    super::forget(value.cast_const().cast());
    if !value.is_null() {
        drop(Box::from_raw(value.cast::<Stock>()));
    }
}

unsafe extern "C" fn free_effort(_key: *mut raw::RedisModuleString, value: *const c_void) -> usize {
    // Lets UNLINK and lazyfree free a large ledger in the background.
    value.cast::<Stock>().as_ref().map_or(1, Stock::free_effort)
}

unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    super::settle();
    match value.cast::<Stock>().as_ref() {
        Some(stock) => Box::into_raw(Box::new(stock.clone())).cast(),
        None => std::ptr::null_mut(),
    }
}

/// A stock leaves the keyspace: it was in it, so a pending restored fence is observed.
unsafe extern "C" fn unlink(_key: *mut raw::RedisModuleString, _value: *const c_void) {
    super::settle();
}
