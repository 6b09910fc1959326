//! The fencing-token clock: a hybrid logical clock, `token = max(last + 1, now_us)`.
//!
//! Tokens rise strictly with every grant, and never fall below the wall clock in
//! microseconds, so a server that lost its last grants (restart, failover) still issues
//! larger tokens than the lost ones as long as its clock is not behind by more than the time
//! that passed.
//!
//! Tokens seen elsewhere (loaded, replicated, presented with `FENCE`) raise the clock, but never
//! past `CEILING`: a token far in the future, loaded from a file or sent by a master, cannot
//! push the clock to `u64::MAX` and make every later grant repeat one token. A grant that would
//! need a token past the ceiling is refused instead; a token is never issued twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The microseconds a `FENCE` token may be ahead of the server's clock: 24 hours.
pub const MAX_FUTURE_US: u64 = 24 * 60 * 60 * 1_000_000;

/// The highest token the clock ever issues or records: 2^63 - 2^40, about 9.2e18, which the
/// wall clock in microseconds reaches in the year 292,000. Far below `i64::MAX`, so every token
/// is a Redis integer, with room for 2^40 grants after a far-ahead token raised the clock.
pub const CEILING: u64 = (1 << 63) - (1 << 40);

/// The highest token issued or seen; the time is passed in, so tests need no sleeping.
#[derive(Debug, Default)]
pub struct TokenClock {
    last: AtomicU64,
}

impl TokenClock {
    /// A clock that has issued nothing yet.
    pub const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
        }
    }

    /// Issues the next token at wall-clock time `now_us`, or `None` when that token would pass
    /// `CEILING` (the clock was raised there by a far-ahead token): nothing is issued then.
    pub fn next(&self, now_us: u64) -> Option<u64> {
        // Redis runs commands on one thread; the atomic only makes the static safe to share.
        let token = self
            .last
            .load(Ordering::Relaxed)
            .saturating_add(1)
            .max(now_us);
        if token > CEILING {
            return None;
        }
        self.last.store(token, Ordering::Relaxed);
        Some(token)
    }

    /// Records a token issued elsewhere (replication, AOF, RDB, `FENCE`) so it is never issued
    /// again; the clock rises at most to `CEILING`.
    pub fn observe(&self, token: u64) {
        self.last.fetch_max(token.min(CEILING), Ordering::Relaxed);
    }

    /// How far the clock is ahead of `now_us`, in milliseconds (0 when it is not).
    pub fn ahead_ms(&self, now_us: u64) -> u64 {
        self.last().saturating_sub(now_us) / 1000
    }

    /// The highest token issued or observed.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

/// The server-wide fencing-token clock (one per process: Redis runs the module on one thread).
pub static TOKENS: TokenClock = TokenClock::new();

/// Whether a presented token is more than 24 hours ahead of `now_us`.
pub fn is_from_future(token: u64, now_us: u64) -> bool {
    token > now_us.saturating_add(MAX_FUTURE_US)
}

/// The wall clock in microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The Unix-millisecond instant `ttl_ms` after `now_us`, as Redis stores an expiry
/// (`mstime()` rounds down to the millisecond the same way).
pub fn expire_at_ms(now_us: u64, ttl_ms: i64) -> i64 {
    i64::try_from(now_us / 1000)
        .unwrap_or(i64::MAX)
        .saturating_add(ttl_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_counts_from_the_current_millisecond() {
        assert_eq!(
            expire_at_ms(1_700_000_000_123_999, 10_000),
            1_700_000_010_123
        );
        assert_eq!(expire_at_ms(0, 1), 1);
        assert_eq!(expire_at_ms(u64::MAX, i64::MAX), i64::MAX);
    }

    #[test]
    fn follows_the_wall_clock_when_it_is_ahead() {
        let c = TokenClock::new();
        assert_eq!(c.next(1_000), Some(1_000));
        assert_eq!(c.next(5_000), Some(5_000));
    }

    #[test]
    fn rises_strictly_when_the_clock_stands_still_or_goes_back() {
        let c = TokenClock::new();
        assert_eq!(c.next(1_000), Some(1_000));
        assert_eq!(c.next(1_000), Some(1_001));
        assert_eq!(c.next(10), Some(1_002));
    }

    #[test]
    fn observed_tokens_are_never_reissued() {
        let c = TokenClock::new();
        c.observe(9_000);
        assert_eq!(c.next(1_000), Some(9_001));
        c.observe(5);
        assert_eq!(c.last(), 9_001);
    }

    #[test]
    fn a_far_ahead_token_raises_the_clock_only_to_the_ceiling() {
        let c = TokenClock::new();
        c.observe(u64::MAX);
        assert_eq!(c.last(), CEILING);
        // Every later grant is refused rather than repeating a token.
        assert_eq!(c.next(0), None);
        assert_eq!(c.next(u64::MAX), None);
        assert_eq!(c.last(), CEILING);
        let c = TokenClock::new();
        c.observe(CEILING - 2);
        assert_eq!(c.next(0), Some(CEILING - 1));
        assert_eq!(c.next(0), Some(CEILING));
        assert_eq!(c.next(0), None);
        assert!(i64::try_from(CEILING).is_ok());
    }

    #[test]
    fn ahead_is_measured_in_milliseconds() {
        let c = TokenClock::new();
        assert_eq!(c.ahead_ms(5_000_000), 0);
        c.observe(7_500_000);
        assert_eq!(c.ahead_ms(5_000_000), 2_500);
        assert_eq!(c.ahead_ms(9_000_000), 0);
    }

    #[test]
    fn future_window_is_24_hours() {
        let now = 1_700_000_000_000_000;
        assert!(!is_from_future(now + MAX_FUTURE_US, now));
        assert!(is_from_future(now + MAX_FUTURE_US + 1, now));
        assert!(!is_from_future(1, now));
        assert!(!is_from_future(u64::MAX, u64::MAX));
    }
}
