//! The module's settings registered as `fence.*` configs (Redis 7.0+): `redis.conf` lines and
//! `CONFIG SET/GET`. What they are, their bounds and defaults, is `fence_core::config`.

use std::ffi::{c_char, c_int, c_longlong, c_void, CString};

use fence_core::config::{Flag, Setting, FLAGS, SETTINGS};
use redis_module::raw;

use super::api::optional;
use super::ctx::Ctx;

extern "C" fn get_numeric(_name: *const c_char, privdata: *mut c_void) -> c_longlong {
    // SAFETY: privdata is one of the `SETTINGS` statics.
    unsafe { privdata.cast::<Setting>().as_ref() }.map_or(0, Setting::get)
}

extern "C" fn set_numeric(
    _name: *const c_char,
    val: c_longlong,
    privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // Redis has checked the bounds given at registration.
    // SAFETY: privdata is one of the `SETTINGS` statics.
    if let Some(s) = unsafe { privdata.cast::<Setting>().as_ref() } {
        s.set(val);
    }
    raw::REDISMODULE_OK as c_int
}

extern "C" fn get_flag(_name: *const c_char, privdata: *mut c_void) -> c_int {
    // SAFETY: privdata is one of the `FLAGS` statics.
    c_int::from(unsafe { privdata.cast::<Flag>().as_ref() }.is_some_and(Flag::get))
}

extern "C" fn set_flag(
    _name: *const c_char,
    val: c_int,
    privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // Redis has parsed `yes`/`no` already.
    // SAFETY: privdata is one of the `FLAGS` statics.
    if let Some(f) = unsafe { privdata.cast::<Flag>().as_ref() } {
        f.set(val != 0);
    }
    raw::REDISMODULE_OK as c_int
}

/// Registers every setting as `fence.<name>` (Redis 7.0+), with the value from the module
/// arguments as its default, then loads `fence.*` lines from `redis.conf`.
pub fn register(ctx: &Ctx<'_>) -> Result<(), String> {
    let ctx = ctx.raw();
    let apis = (
        optional!(RedisModule_RegisterNumericConfig),
        optional!(RedisModule_RegisterBoolConfig),
        optional!(RedisModule_LoadConfigs),
    );
    let (Some(register), Some(register_bool), Some(load)) = apis else {
        // Older servers: module arguments only.
        return Ok(());
    };
    for setting in SETTINGS {
        let name = CString::new(setting.name).map_err(|e| e.to_string())?;
        // SAFETY: the statics live for the whole process.
        let status = unsafe {
            register(
                ctx,
                name.as_ptr(),
                setting.get(),
                raw::REDISMODULE_CONFIG_DEFAULT,
                setting.min,
                setting.max,
                Some(get_numeric),
                Some(set_numeric),
                None,
                std::ptr::from_ref::<Setting>(setting).cast_mut().cast(),
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(format!("cannot register config fence.{}", setting.name));
        }
    }
    for flag in FLAGS {
        let name = CString::new(flag.name).map_err(|e| e.to_string())?;
        // SAFETY: the statics live for the whole process.
        let status = unsafe {
            register_bool(
                ctx,
                name.as_ptr(),
                c_int::from(flag.get()),
                raw::REDISMODULE_CONFIG_DEFAULT,
                Some(get_flag),
                Some(set_flag),
                None,
                std::ptr::from_ref::<Flag>(flag).cast_mut().cast(),
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(format!("cannot register config fence.{}", flag.name));
        }
    }
    // SAFETY: ctx is the load context.
    if unsafe { load(ctx) } != raw::REDISMODULE_OK as c_int {
        return Err("a fence.* setting in the configuration file is invalid".into());
    }
    Ok(())
}
