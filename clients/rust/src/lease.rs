//! What a guard knows of its lease, and every decision its watchdog makes, in plain Rust: when
//! the next renewal is due, how long it may take, when the lease must be taken as lost, what a
//! reply means. The sync and async guards and watchdogs only carry these out.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fence_core::error::{arity, code, unknown_option};

/// The shortest pause between two renewals.
const MIN_PAUSE: Duration = Duration::from_millis(1);
/// The shortest timeout of one network call.
pub(crate) const MIN_IO_TIMEOUT: Duration = Duration::from_millis(10);
/// Bounds of the pause before retrying after an I/O error.
const MIN_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Settings of the bounded auto-renewal of a lease, set with [`Lock::watchdog`](crate::Lock::watchdog)
/// or [`AsyncLock::watchdog`](crate::AsyncLock::watchdog).
///
/// A watchdog without a bound would keep a lock forever for a holder that is stuck but alive;
/// the bound caps how long the lock can be held: about `max_renewals` times the interval plus
/// one TTL. Each renewal is one `LOCK.RENEW … TOKEN` whose network time is bounded by the
/// lock's I/O timeout (and by what is left of the lease), never by the TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watchdog {
    max_renewals: u32,
    interval: Option<Duration>,
}

impl Watchdog {
    /// Renews at most `max_renewals` times, every third of the lease's TTL.
    pub fn new(max_renewals: u32) -> Self {
        Watchdog {
            max_renewals,
            interval: None,
        }
    }

    /// Renews every `interval` after the last successful grant or renewal instead of every
    /// third of the TTL. It must be above zero and below the TTL (checked when a lock is
    /// acquired).
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// The most `LOCK.RENEW` commands the watchdog sends.
    pub fn max_renewals(&self) -> u32 {
        self.max_renewals
    }

    /// The pause after a renewal before the next one, for a lease of `ttl`.
    pub(crate) fn interval_for(&self, ttl: Duration) -> Duration {
        self.interval.unwrap_or(ttl / 3).max(MIN_PAUSE)
    }

    /// Refuses an interval that is zero or not below `ttl`.
    pub(crate) fn check(&self, ttl: Duration) -> Result<(), &'static str> {
        match self.interval {
            Some(i) if i.is_zero() || i >= ttl => {
                Err("the watchdog interval must be above zero and below the lock's TTL")
            }
            _ => Ok(()),
        }
    }
}

/// How a guard learned that its lease is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// The server refused a renewal or a release of this grant: it expired, was released or
    /// deleted, or the lock was granted anew (to another owner, or to the same owner string
    /// under a newer token).
    Refused,
    /// No renewal succeeded before the lease's estimated end: the server could not be reached
    /// in time (or this process was paused). The server has let the lease expire, or is about
    /// to.
    Expired,
    /// The key now holds another type (`WRONGTYPE`): the lock was overwritten.
    Overwritten,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::Refused => "the server no longer holds this grant",
            LostReason::Expired => "no renewal succeeded before the lease's end",
            LostReason::Overwritten => "the lock's key was overwritten with another type",
        })
    }
}

/// The report of a lost lease, handed once to the callback set with
/// [`Lock::on_lost`](crate::Lock::on_lost) or [`AsyncLock::on_lost`](crate::AsyncLock::on_lost).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseLost {
    /// The lock's key.
    pub key: String,
    /// The owner the guard held it as.
    pub owner: String,
    /// The fencing token of the lost grant.
    pub token: u64,
    /// How the loss was learned.
    pub reason: LostReason,
}

/// A callback for lost leases.
pub(crate) type LostCallback = Arc<dyn Fn(&LeaseLost) + Send + Sync>;

/// The client's estimate of a lease: the TTL of the last successful grant or renewal, counted
/// from when its request was sent (the server started counting later, so this errs early).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) ttl: Duration,
    pub(crate) renewed_at: Instant,
}

impl Timing {
    pub(crate) fn expires_at(&self) -> Instant {
        self.renewed_at + self.ttl
    }

    /// A renewal sent at `sent` with `ttl` succeeded (an older one answered late changes
    /// nothing).
    pub(crate) fn renewed(&mut self, ttl: Duration, sent: Instant) {
        if sent >= self.renewed_at {
            self.ttl = ttl;
            self.renewed_at = sent;
        }
    }
}

/// What the watchdog does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to do before this moment.
    Sleep(Instant),
    /// Send `LOCK.RENEW` with this TTL, giving the network at most `timeout`.
    Renew { ttl: Duration, timeout: Duration },
    /// The lease's estimated end has passed without a renewal: it is lost, and renewing now
    /// could only act on a lease this guard no longer holds.
    Expired,
    /// The bound is reached: stop, and let the lease run out at its TTL.
    Done,
}

/// The watchdog's next step at `now`. `retry_at` is set after an I/O error; `sent` counts the
/// renewals sent so far.
pub(crate) fn next_step(
    now: Instant,
    timing: Timing,
    config: &Watchdog,
    sent: u32,
    retry_at: Option<Instant>,
    io_timeout: Duration,
) -> Step {
    if sent >= config.max_renewals {
        return Step::Done;
    }
    let expires = timing.expires_at();
    if now >= expires {
        return Step::Expired;
    }
    let due = retry_at.unwrap_or(timing.renewed_at + config.interval_for(timing.ttl));
    if now < due {
        return Step::Sleep(due.min(expires));
    }
    Step::Renew {
        ttl: timing.ttl,
        timeout: call_timeout(now, expires, io_timeout),
    }
}

/// The time one call of the watchdog may take: the I/O timeout, cut at the lease's end (a
/// reply after it would be too late to matter), never below [`MIN_IO_TIMEOUT`].
pub(crate) fn call_timeout(now: Instant, expires: Instant, io_timeout: Duration) -> Duration {
    io_timeout
        .min(expires.saturating_duration_since(now))
        .max(MIN_IO_TIMEOUT)
}

/// After a renewal failed on the network at `now`: when to try again, or `None` when the
/// lease's end has passed (it is then lost).
pub(crate) fn retry_after_io_error(
    now: Instant,
    timing: Timing,
    config: &Watchdog,
) -> Option<Instant> {
    if now >= timing.expires_at() {
        return None;
    }
    let pause = (config.interval_for(timing.ttl) / 4).clamp(MIN_RETRY, MAX_RETRY);
    Some(now + pause)
}

/// What a `LOCK.RENEW … TOKEN token` reply means for the grant `token`: held or not.
pub(crate) fn renewal_held(reply: Option<u64>, token: u64) -> bool {
    reply == Some(token)
}

/// What an error reply to a renewal means: the lease is lost (`WRONGTYPE`: the key was
/// overwritten) or the watchdog must stop with the error (any other reply would come again).
pub(crate) fn renewal_error_is_loss(e: &redis::RedisError) -> Option<LostReason> {
    (e.code() == Some(code::WRONGTYPE)).then_some(LostReason::Overwritten)
}

/// True when `e` is the reply of a module that predates `TOKEN` (before issue 14) to
/// `command … TOKEN t`: an arity error (its `LOCK.RENEW` and `LOCK.RELEASE` took a fixed
/// number of arguments) or an unknown option. The guard then sends the command without
/// `TOKEN` from then on.
pub(crate) fn token_unsupported(e: &redis::RedisError, command: &str) -> bool {
    if e.code() != Some(code::ERR) {
        return false;
    }
    let text = format!("{} {}", code::ERR, e.detail().unwrap_or_default());
    text == arity(&command.to_ascii_lowercase()) || text == unknown_option("TOKEN")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a guard and its watchdog share about one grant.
pub(crate) struct LeaseState {
    pub(crate) key: String,
    pub(crate) owner: String,
    pub(crate) token: u64,
    timing: Mutex<Timing>,
    lost_flag: AtomicBool,
    lost: Mutex<Option<LostReason>>,
    /// `LOCK.RENEW` commands sent by the watchdog.
    renewals: AtomicU32,
    error: Mutex<Option<String>>,
    /// The server's module has no `TOKEN` option: renew and release name the owner only.
    tokenless: AtomicBool,
    on_lost: Option<LostCallback>,
    #[cfg(feature = "tokio")]
    lost_watch: tokio::sync::watch::Sender<Option<LostReason>>,
}

impl LeaseState {
    pub(crate) fn new(
        key: &str,
        owner: &str,
        token: u64,
        ttl: Duration,
        since: Instant,
        on_lost: Option<LostCallback>,
    ) -> Self {
        LeaseState {
            key: key.to_string(),
            owner: owner.to_string(),
            token,
            timing: Mutex::new(Timing {
                ttl,
                renewed_at: since,
            }),
            lost_flag: AtomicBool::new(false),
            lost: Mutex::new(None),
            renewals: AtomicU32::new(0),
            error: Mutex::new(None),
            tokenless: AtomicBool::new(false),
            on_lost,
            #[cfg(feature = "tokio")]
            lost_watch: tokio::sync::watch::Sender::new(None),
        }
    }

    pub(crate) fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    pub(crate) fn renewed(&self, ttl: Duration, sent: Instant) {
        lock(&self.timing).renewed(ttl, sent);
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost_flag.load(Ordering::SeqCst)
    }

    pub(crate) fn lost_reason(&self) -> Option<LostReason> {
        *lock(&self.lost)
    }

    /// Records that the lease is gone. Only the first call counts: it alone reports the loss
    /// (the callback, the async waiters). Must not be called while holding the watchdog's
    /// gate, so that the callback may use the guard.
    pub(crate) fn mark_lost(&self, reason: LostReason) {
        {
            let mut lost = lock(&self.lost);
            if lost.is_some() {
                return;
            }
            *lost = Some(reason);
            self.lost_flag.store(true, Ordering::SeqCst);
        }
        #[cfg(feature = "tokio")]
        self.lost_watch.send_replace(Some(reason));
        if let Some(callback) = &self.on_lost {
            callback(&LeaseLost {
                key: self.key.clone(),
                owner: self.owner.clone(),
                token: self.token,
                reason,
            });
        }
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn lost_watch(&self) -> tokio::sync::watch::Receiver<Option<LostReason>> {
        self.lost_watch.subscribe()
    }

    pub(crate) fn renewals(&self) -> u32 {
        self.renewals.load(Ordering::SeqCst)
    }

    /// Counts a renewal about to be sent.
    pub(crate) fn count_renewal(&self) {
        self.renewals.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    pub(crate) fn set_error(&self, e: &redis::RedisError) {
        *lock(&self.error) = Some(e.to_string());
    }

    /// The token to name in renew and release: `None` once the server proved it has no
    /// `TOKEN` option.
    pub(crate) fn token_arg(&self) -> Option<u64> {
        (!self.tokenless.load(Ordering::SeqCst)).then_some(self.token)
    }

    pub(crate) fn set_tokenless(&self) {
        self.tokenless.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing(at: Instant, ttl: Duration) -> Timing {
        Timing {
            ttl,
            renewed_at: at,
        }
    }

    #[test]
    fn renewals_are_due_every_interval_and_never_past_the_end() {
        let t0 = Instant::now();
        let cfg = Watchdog::new(10);
        let lease = timing(t0, 3 * S);
        // Every third of the TTL.
        assert_eq!(
            next_step(t0, lease, &cfg, 0, None, 5 * S),
            Step::Sleep(t0 + S)
        );
        // Due: the call may take the I/O timeout, cut at the lease's end.
        assert_eq!(
            next_step(t0 + S, lease, &cfg, 0, None, 5 * S),
            Step::Renew {
                ttl: 3 * S,
                timeout: 2 * S
            }
        );
        assert_eq!(
            next_step(t0 + S, lease, &cfg, 0, None, S / 2),
            Step::Renew {
                ttl: 3 * S,
                timeout: S / 2
            }
        );
        // At or past the estimated end: lost, no renewal sent.
        assert_eq!(
            next_step(t0 + 3 * S, lease, &cfg, 0, None, S),
            Step::Expired
        );
        // A retry set after an error; sleeping never goes past the end.
        assert_eq!(
            next_step(t0 + S, lease, &cfg, 0, Some(t0 + 5 * S), S),
            Step::Sleep(t0 + 3 * S)
        );
        // The bound.
        assert_eq!(next_step(t0, lease, &cfg, 10, None, S), Step::Done);
        assert_eq!(
            next_step(t0, lease, &Watchdog::new(0), 0, None, S),
            Step::Done
        );
        // A fixed interval.
        let every = Watchdog::new(10).every(S / 10);
        assert_eq!(
            next_step(t0, lease, &every, 0, None, S),
            Step::Sleep(t0 + S / 10)
        );
        // A tiny remainder still gets a usable timeout.
        assert_eq!(
            call_timeout(t0, t0 + Duration::from_micros(5), S),
            MIN_IO_TIMEOUT
        );
    }

    #[test]
    fn io_errors_are_retried_until_the_end() {
        let t0 = Instant::now();
        let cfg = Watchdog::new(10);
        let lease = timing(t0, 3 * S);
        let at = retry_after_io_error(t0 + S, lease, &cfg).unwrap();
        assert_eq!(at, t0 + S + S / 4);
        assert_eq!(retry_after_io_error(t0 + 3 * S, lease, &cfg), None);
        let long = timing(t0, 3600 * S);
        assert_eq!(
            retry_after_io_error(t0, long, &cfg),
            Some(t0 + MAX_RETRY),
            "retries stay frequent on a long lease"
        );
    }

    #[test]
    fn a_late_answer_does_not_move_the_lease_back() {
        let t0 = Instant::now();
        let mut lease = timing(t0, 3 * S);
        lease.renewed(10 * S, t0 + S);
        assert_eq!(lease.expires_at(), t0 + 11 * S);
        lease.renewed(3 * S, t0 + S / 2);
        assert_eq!(lease.expires_at(), t0 + 11 * S);
    }

    #[test]
    fn intervals_are_checked() {
        assert!(Watchdog::new(1).check(S).is_ok());
        assert!(Watchdog::new(1).every(S / 2).check(S).is_ok());
        assert!(Watchdog::new(1).every(S).check(S).is_err());
        assert!(Watchdog::new(1).every(Duration::ZERO).check(S).is_err());
    }

    fn error_reply(text: &str) -> redis::RedisError {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes())
            .and_then(|v| v.extract_error())
            .expect_err("an error reply")
    }

    #[test]
    fn replies_of_a_module_without_token_are_recognised() {
        assert!(token_unsupported(
            &error_reply(&arity("lock.renew")),
            "LOCK.RENEW"
        ));
        assert!(token_unsupported(
            &error_reply(&arity("lock.release")),
            "LOCK.RELEASE"
        ));
        assert!(token_unsupported(
            &error_reply(&unknown_option("TOKEN")),
            "LOCK.RENEW"
        ));
        assert!(!token_unsupported(
            &error_reply(&arity("lock.renew")),
            "LOCK.RELEASE"
        ));
        assert!(!token_unsupported(
            &error_reply(fence_core::error::TOKEN_NOT_POSITIVE),
            "LOCK.RENEW"
        ));
        assert!(!token_unsupported(
            &error_reply(fence_core::error::WRONGTYPE),
            "LOCK.RENEW"
        ));
        assert_eq!(
            renewal_error_is_loss(&error_reply(fence_core::error::WRONGTYPE)),
            Some(LostReason::Overwritten)
        );
        assert_eq!(
            renewal_error_is_loss(&error_reply(&fence_core::error::ttl_range(5))),
            None
        );
        assert!(renewal_held(Some(7), 7));
        assert!(!renewal_held(Some(8), 7));
        assert!(!renewal_held(None, 7));
    }

    #[test]
    fn a_loss_is_reported_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let callback: LostCallback = Arc::new(move |lost: &LeaseLost| {
            assert_eq!((lost.key.as_str(), lost.token), ("k", 5));
            seen.fetch_add(1, Ordering::SeqCst);
        });
        let state = LeaseState::new("k", "o", 5, S, Instant::now(), Some(callback));
        assert!(!state.is_lost());
        state.mark_lost(LostReason::Expired);
        state.mark_lost(LostReason::Refused);
        assert!(state.is_lost());
        assert_eq!(state.lost_reason(), Some(LostReason::Expired));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(state.token_arg(), Some(5));
        state.set_tokenless();
        assert_eq!(state.token_arg(), None);
    }
}
