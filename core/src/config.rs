//! The module's settings: their names, defaults and bounds, and the module arguments given at
//! load time. Their registration as `fence.*` configs (`redis.conf`, `CONFIG SET/GET`) is the
//! FFI layer's.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::args::parse_i64;

/// One numeric setting with its bounds.
pub struct Setting {
    /// The name after `fence.`.
    pub name: &'static str,
    /// The value until a module argument or `CONFIG SET` changes it.
    pub default: i64,
    pub min: i64,
    pub max: i64,
    value: AtomicI64,
}

impl Setting {
    const fn new(name: &'static str, default: i64, min: i64, max: i64) -> Self {
        Self {
            name,
            default,
            min,
            max,
            value: AtomicI64::new(default),
        }
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Sets the value (Redis has checked it against the bounds).
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }
}

/// The largest `ttl-ms` a lock accepts (default 7 days; at most 10 years, so an absolute
/// expiry can never overflow).
pub static MAX_TTL_MS: Setting =
    Setting::new("max-ttl-ms", 7 * 24 * 3600 * 1000, 1, 315_360_000_000);
/// The longest owner or request id, in bytes.
pub static MAX_ID_LENGTH: Setting = Setting::new("max-id-length", 512, 1, 512 * 1024 * 1024);
/// The most request ids one stock's ledger holds.
pub static MAX_LEDGER_ENTRIES: Setting = Setting::new("max-ledger-entries", 1_000_000, 0, i64::MAX);

/// The longest hold (`STOCK.DEDUCT … HOLD ms`), default 7 days, at most 10 years.
pub static MAX_HOLD_MS: Setting =
    Setting::new("max-hold-ms", 7 * 24 * 3600 * 1000, 1, 315_360_000_000);

/// The most buyers one stock records in a sale (`STOCK.DEDUCT … BUYER`).
pub static MAX_BUYERS: Setting = Setting::new("max-buyers", 1_000_000, 0, i64::MAX);

/// Every setting.
pub static SETTINGS: [&Setting; 5] = [
    &MAX_TTL_MS,
    &MAX_ID_LENGTH,
    &MAX_LEDGER_ENTRIES,
    &MAX_HOLD_MS,
    &MAX_BUYERS,
];

/// One yes/no setting.
pub struct Flag {
    /// The name after `fence.`.
    pub name: &'static str,
    value: AtomicBool,
}

impl Flag {
    const fn new(name: &'static str, default: bool) -> Self {
        Self {
            name,
            value: AtomicBool::new(default),
        }
    }

    /// The current value.
    pub fn get(&self) -> bool {
        self.value.load(Ordering::Relaxed)
    }

    /// Sets the value.
    pub fn set(&self, v: bool) {
        self.value.store(v, Ordering::Relaxed);
    }
}

/// Whether locks and stocks may be written where `maxmemory-policy` can evict them (see
/// `eviction`); `no` refuses those writes.
pub static ALLOW_EVICTION: Flag = Flag::new("allow-eviction", false);

/// Every yes/no setting.
pub static FLAGS: [&Flag; 1] = [&ALLOW_EVICTION];

/// A module argument's value, checked and waiting to be applied.
enum Pending {
    Number(&'static Setting, i64),
    Flag(&'static Flag, bool),
}

/// `yes` or `no`, in any case (as Redis reads its own yes/no settings).
fn parse_yes_no(value: &[u8]) -> Option<bool> {
    if value.eq_ignore_ascii_case(b"yes") {
        Some(true)
    } else if value.eq_ignore_ascii_case(b"no") {
        Some(false)
    } else {
        None
    }
}

/// Applies module arguments (`name value` pairs; `fence.` prefix optional). Pure, so the
/// rules are unit-tested; an error names the offending argument.
pub fn apply_module_args(args: &[&[u8]]) -> Result<(), String> {
    let mut pending = Vec::new();
    let mut rest = args;
    while let Some((&name, tail)) = rest.split_first() {
        let shown = String::from_utf8_lossy(name).into_owned();
        let bare = name.strip_prefix(b"fence.").unwrap_or(name);
        let setting = SETTINGS
            .iter()
            .find(|s| s.name.as_bytes().eq_ignore_ascii_case(bare));
        let flag = FLAGS
            .iter()
            .find(|f| f.name.as_bytes().eq_ignore_ascii_case(bare));
        if setting.is_none() && flag.is_none() {
            return Err(format!("unknown module argument '{shown}'"));
        }
        let (&value, tail) = tail
            .split_first()
            .ok_or_else(|| format!("module argument '{shown}' needs a value"))?;
        if let Some(&setting) = setting {
            let v = parse_i64(value)
                .filter(|v| (setting.min..=setting.max).contains(v))
                .ok_or_else(|| {
                    format!(
                        "module argument '{shown}' must be an integer from {} to {}",
                        setting.min, setting.max
                    )
                })?;
            pending.push(Pending::Number(setting, v));
        } else if let Some(&flag) = flag {
            let v = parse_yes_no(value)
                .ok_or_else(|| format!("module argument '{shown}' must be yes or no"))?;
            pending.push(Pending::Flag(flag, v));
        }
        rest = tail;
    }
    // All or nothing.
    for p in pending {
        match p {
            Pending::Number(setting, v) => setting.set(v),
            Pending::Flag(flag, v) => flag.set(v),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The settings are process-wide statics, so one test covers every case in sequence.
    #[test]
    fn module_args() {
        assert_eq!(apply_module_args(&[]), Ok(()));
        assert_eq!(MAX_TTL_MS.get(), 604_800_000);
        assert_eq!(
            apply_module_args(&[b"max-ttl-ms", b"1000", b"fence.MAX-ID-LENGTH", b"10"]),
            Ok(())
        );
        assert_eq!(MAX_TTL_MS.get(), 1000);
        assert_eq!(MAX_ID_LENGTH.get(), 10);
        assert!(apply_module_args(&[b"max-ttl-ms", b"0"]).is_err());
        assert!(apply_module_args(&[b"max-ttl-ms"]).is_err());
        assert!(apply_module_args(&[b"nope", b"1"]).is_err());
        // A bad pair leaves the good ones before it unapplied.
        assert!(apply_module_args(&[b"max-id-length", b"20", b"max-ttl-ms", b"x"]).is_err());
        assert_eq!(MAX_ID_LENGTH.get(), 10);
        // The yes/no setting: off by default, `fence.` optional, any case, nothing else.
        assert!(!ALLOW_EVICTION.get());
        assert_eq!(apply_module_args(&[b"allow-eviction", b"YES"]), Ok(()));
        assert!(ALLOW_EVICTION.get());
        assert_eq!(apply_module_args(&[b"fence.allow-eviction", b"no"]), Ok(()));
        assert!(!ALLOW_EVICTION.get());
        for bad in [&b"1"[..], b"true", b"", b"yess"] {
            assert_eq!(
                apply_module_args(&[b"allow-eviction", bad]),
                Err("module argument 'allow-eviction' must be yes or no".into())
            );
        }
        assert!(apply_module_args(&[b"allow-eviction"]).is_err());
        assert!(apply_module_args(&[b"allow-eviction", b"yes", b"max-ttl-ms", b"0"]).is_err());
        assert!(!ALLOW_EVICTION.get());
        assert_eq!(MAX_TTL_MS.get(), 1000);
    }
}
