//! `INFO fence`: the counters and gauges of `fence_core::stats`, the token clock, the waiters
//! and the eviction settings as the module last read them.

use std::sync::atomic::Ordering;

use fence_core::clock::{now_us, TOKENS};
use fence_core::config::ALLOW_EVICTION;
use fence_core::eviction::POLICY;
use fence_core::stats;

use crate::ffi::command::{InfoProvider, InfoSection};
use crate::services::{tokens, waiting};

pub struct FenceInfo;

impl InfoProvider for FenceInfo {
    fn fill(s: &mut InfoSection) {
        for (name, value) in stats::counters() {
            if let Ok(name) = std::ffi::CString::new(name) {
                s.int(&name, value);
            }
        }
        s.int(
            c"locks_held",
            u64::try_from(stats::LOCKS.load(Ordering::Relaxed)).unwrap_or(0),
        );
        s.int(c"clients_waiting", waiting::total_waiters() as u64);
        tokens::settle();
        s.int(c"last_token", TOKENS.last());
        s.int(c"clock_ahead_ms", TOKENS.ahead_ms(now_us()));
        s.text(c"maxmemory_policy", &POLICY.name());
        s.text(c"eviction_risk", POLICY.risk().name());
        s.int(c"allow_eviction", u64::from(ALLOW_EVICTION.get()));
    }
}
