//! Counters since start and gauges, for `INFO fence`. Plain atomics: commands run on Redis's
//! main thread, but a lazily freed value is dropped on a background thread.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One counter.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub static GRANTS: Counter = Counter::new();
pub static REACQUIRES: Counter = Counter::new();
pub static CONTENDED: Counter = Counter::new();
pub static RELEASES: Counter = Counter::new();
pub static RELEASES_REFUSED: Counter = Counter::new();
pub static RENEWALS: Counter = Counter::new();
pub static RENEWALS_REFUSED: Counter = Counter::new();
pub static EXPIRATIONS: Counter = Counter::new();
pub static WAITS_STARTED: Counter = Counter::new();
pub static WAITS_GRANTED: Counter = Counter::new();
pub static WAITS_TIMED_OUT: Counter = Counter::new();
pub static DEDUCTIONS: Counter = Counter::new();
pub static SOLD_OUT: Counter = Counter::new();
pub static REPLAYS: Counter = Counter::new();
pub static STALE: Counter = Counter::new();
/// Deductions refused because the buyer would pass the stock's limit.
pub static LIMIT_REFUSALS: Counter = Counter::new();
pub static REFUNDS: Counter = Counter::new();
pub static HOLDS: Counter = Counter::new();
pub static CONFIRMS: Counter = Counter::new();
pub static HOLDS_EXPIRED: Counter = Counter::new();
/// `expire` events the stream could not take (the units came back all the same).
pub static EXPIRE_EVENTS_DROPPED: Counter = Counter::new();

/// Lock values in memory: held locks, and expired ones Redis has not reclaimed yet.
pub static LOCKS: AtomicI64 = AtomicI64::new(0);

/// Every counter with its `INFO` field name, in display order.
pub fn counters() -> [(&'static str, u64); 21] {
    [
        ("grants", GRANTS.get()),
        ("reacquires", REACQUIRES.get()),
        ("contended", CONTENDED.get()),
        ("releases", RELEASES.get()),
        ("releases_refused", RELEASES_REFUSED.get()),
        ("renewals", RENEWALS.get()),
        ("renewals_refused", RENEWALS_REFUSED.get()),
        ("expirations", EXPIRATIONS.get()),
        ("waits_started", WAITS_STARTED.get()),
        ("waits_granted", WAITS_GRANTED.get()),
        ("waits_timed_out", WAITS_TIMED_OUT.get()),
        ("deductions", DEDUCTIONS.get()),
        ("deductions_sold_out", SOLD_OUT.get()),
        ("replays", REPLAYS.get()),
        ("stale_refusals", STALE.get()),
        ("limit_refusals", LIMIT_REFUSALS.get()),
        ("refunds", REFUNDS.get()),
        ("holds", HOLDS.get()),
        ("confirms", CONFIRMS.get()),
        ("holds_expired", HOLDS_EXPIRED.get()),
        ("expire_events_dropped", EXPIRE_EVENTS_DROPPED.get()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count() {
        let before = REFUNDS.get();
        REFUNDS.incr();
        assert_eq!(REFUNDS.get(), before + 1);
        assert!(counters()
            .iter()
            .any(|(n, v)| *n == "refunds" && *v == before + 1));
    }
}
