//! The module data types Redis stores: `fence-lck` (a held lock) and `fence-stk` (a stock).
//! Each file holds one type's behaviour (load, save, AOF rewrite, digest, memory, copy,
//! unlink, free) as a safe `crate::ffi::module_type::ModuleType`; loading is a validation
//! boundary (`fence_core::encoding`).

pub mod lock;
pub mod stock;
