//! The module data types Redis stores: `fence-lck` (a held lock) and `fence-stk` (a stock).
//! Each file holds one type's callbacks (RDB, AOF rewrite, free, copy, digest, memory).

pub mod lock;
pub mod stock;

use redis_module::raw;

/// The registered lock type (null before the module is loaded).
pub fn lock_type() -> *mut raw::RedisModuleType {
    *lock::LOCK_TYPE.raw_type.borrow()
}

/// The registered stock type (null before the module is loaded).
pub fn stock_type() -> *mut raw::RedisModuleType {
    *stock::STOCK_TYPE.raw_type.borrow()
}

/// The RDB encoding version every type writes; loaders accept every version up to it.
pub const ENCODING_VERSION: i32 = 1;
