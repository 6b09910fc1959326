//! The watchdog: bounded auto-renewal of a lease from a background thread.
//!
//! Race freedom with release: the thread holds the `gate` mutex at all times except while it
//! sleeps on the condition variable, so it sends every `LOCK.RENEW` under the gate and checks
//! the `stopped` flag under the gate right before. Stopping takes the gate (waiting for a
//! renewal in flight to be answered), sets `stopped`, wakes the thread and joins it; only then
//! does the guard send `LOCK.RELEASE`. No renewal can be sent after the release.
//!
//! A manual [`LockGuard::renew`](crate::LockGuard::renew) takes the gate as well, so the
//! server never executes a watchdog renewal with the old TTL after the manual one with the new
//! TTL (which would shorten the lease behind the guard's back).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fence_core::error::code;
use redis::{Client, Connection};

use crate::lock::renew_command;
use crate::Result;

/// The shortest pause between two renewals, and the shortest I/O timeout of a renewal.
const MIN_PAUSE: Duration = Duration::from_millis(1);
const MIN_IO_TIMEOUT: Duration = Duration::from_millis(10);
/// Bounds of the pause before retrying after an I/O error.
const MIN_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Settings of the bounded auto-renewal started by
/// [`LockGuard::start_watchdog`](crate::LockGuard::start_watchdog).
///
/// A watchdog without a bound would keep a lock forever for a holder that is stuck but alive;
/// the bound caps how long the lock can be held: about `max_renewals` times the interval plus
/// one TTL.
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
    /// third of the TTL. It must be above zero and below the TTL.
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// The most `LOCK.RENEW` commands the watchdog sends.
    pub fn max_renewals(&self) -> u32 {
        self.max_renewals
    }

    /// The interval set with [`Watchdog::every`], if any.
    pub(crate) fn fixed_interval(&self) -> Option<Duration> {
        self.interval
    }

    fn interval_for(&self, ttl: Duration) -> Duration {
        self.interval.unwrap_or(ttl / 3).max(MIN_PAUSE)
    }
}

/// What the guard and its watchdog share about one lease.
pub(crate) struct LeaseState {
    /// Held by the watchdog except while it sleeps; see the module documentation.
    gate: Mutex<Gate>,
    wake: Condvar,
    /// The lease is known to be gone: never renew again.
    pub(crate) lost: AtomicBool,
    /// `LOCK.RENEW` commands sent by the watchdog.
    pub(crate) renewals: AtomicU32,
    timing: Mutex<Timing>,
    error: Mutex<Option<String>>,
}

pub(crate) struct Gate {
    stopped: bool,
}

struct Timing {
    ttl: Duration,
    /// When the last successful grant or renewal was sent.
    renewed_at: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LeaseState {
    pub(crate) fn new(ttl: Duration, since: Instant) -> Self {
        LeaseState {
            gate: Mutex::new(Gate { stopped: false }),
            wake: Condvar::new(),
            lost: AtomicBool::new(false),
            renewals: AtomicU32::new(0),
            timing: Mutex::new(Timing {
                ttl,
                renewed_at: since,
            }),
            error: Mutex::new(None),
        }
    }

    /// The TTL and the estimated end of the lease.
    pub(crate) fn timing(&self) -> (Duration, Instant) {
        let t = lock(&self.timing);
        (t.ttl, t.renewed_at + t.ttl)
    }

    fn renewed_at(&self) -> (Duration, Instant) {
        let t = lock(&self.timing);
        (t.ttl, t.renewed_at)
    }

    /// A renewal sent at `sent` with `ttl` succeeded.
    pub(crate) fn renewed(&self, ttl: Duration, sent: Instant) {
        let mut t = lock(&self.timing);
        if sent >= t.renewed_at {
            t.ttl = ttl;
            t.renewed_at = sent;
        }
    }

    pub(crate) fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// Holds off the watchdog's renewals while the returned guard lives: it waits for a
    /// renewal in flight to be answered, and the watchdog sends no other until the guard is
    /// dropped.
    pub(crate) fn exclusive(&self) -> MutexGuard<'_, Gate> {
        lock(&self.gate)
    }

    /// Makes a sleeping watchdog recompute when its next renewal is due.
    pub(crate) fn wake_watchdog(&self) {
        self.wake.notify_all();
    }

    /// Makes the watchdog stop: once this returns, it sends no more renewals.
    pub(crate) fn stop(&self) {
        lock(&self.gate).stopped = true;
        self.wake.notify_all();
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    fn set_error(&self, e: &redis::RedisError) {
        *lock(&self.error) = Some(e.to_string());
    }
}

/// A connection for the watchdog.
pub(crate) fn connect(client: &Client, timeout: Duration) -> Result<Connection> {
    client.get_connection_with_timeout(timeout.clamp(MIN_IO_TIMEOUT, Duration::from_secs(10)))
}

/// Starts the watchdog thread.
pub(crate) fn spawn(
    state: Arc<LeaseState>,
    client: Client,
    conn: Connection,
    key: String,
    owner: String,
    token: u64,
    config: Watchdog,
) -> Result<JoinHandle<()>> {
    let renewer = Renewer {
        state,
        client,
        conn: Some(conn),
        key,
        owner,
        token,
        config,
    };
    Ok(thread::Builder::new()
        .name("fence-watchdog".to_string())
        .spawn(move || renewer.run())?)
}

struct Renewer {
    state: Arc<LeaseState>,
    client: Client,
    conn: Option<Connection>,
    key: String,
    owner: String,
    token: u64,
    config: Watchdog,
}

/// What one renewal attempt found.
enum Outcome {
    Renewed,
    /// Stop for good.
    Stop,
    /// Try again at this moment.
    RetryAt(Instant),
}

impl Renewer {
    fn run(mut self) {
        let state = Arc::clone(&self.state);
        let mut retry_at: Option<Instant> = None;
        let mut gate = lock(&state.gate);
        loop {
            if gate.stopped
                || state.lost.load(Ordering::SeqCst)
                || state.renewals.load(Ordering::SeqCst) >= self.config.max_renewals
            {
                return;
            }
            let (ttl, renewed_at) = state.renewed_at();
            let due = retry_at.unwrap_or(renewed_at + self.config.interval_for(ttl));
            let now = Instant::now();
            if now < due {
                // Releases the gate while asleep: this is when `stop` can get it.
                gate = state
                    .wake
                    .wait_timeout(gate, due - now)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                continue;
            }
            // Due, not stopped, not lost, under the gate: renew.
            retry_at = match self.renew_once(ttl, renewed_at + ttl) {
                Outcome::Renewed => None,
                Outcome::Stop => return,
                Outcome::RetryAt(at) => Some(at),
            };
        }
    }

    fn renew_once(&mut self, ttl: Duration, deadline: Instant) -> Outcome {
        let state = Arc::clone(&self.state);
        let retry = (self.config.interval_for(ttl) / 4).clamp(MIN_RETRY, MAX_RETRY);
        // An I/O error is retried until the lease's end; past it, the lease is taken as lost.
        let failed = |e: &redis::RedisError| {
            state.set_error(e);
            let now = Instant::now();
            if now >= deadline {
                state.mark_lost();
                Outcome::Stop
            } else {
                Outcome::RetryAt(now + retry)
            }
        };
        let io_timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_IO_TIMEOUT);
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => match connect(&self.client, io_timeout) {
                Ok(conn) => self.conn.insert(conn),
                Err(e) => return failed(&e),
            },
        };
        let timeouts = conn
            .set_read_timeout(Some(io_timeout))
            .and_then(|()| conn.set_write_timeout(Some(io_timeout)));
        if let Err(e) = timeouts {
            self.conn = None;
            return failed(&e);
        }
        self.state.renewals.fetch_add(1, Ordering::SeqCst);
        let sent = Instant::now();
        match renew_command(conn, &self.key, &self.owner, ttl, self.token) {
            Ok(Some(token)) if token == self.token => {
                self.state.renewed(ttl, sent);
                Outcome::Renewed
            }
            // Refused: expired, or held by another owner, or granted anew to this owner
            // string (TOKEN: that newer grant is left alone).
            Ok(_) => {
                self.state.mark_lost();
                Outcome::Stop
            }
            // An error reply would come again: stop. WRONGTYPE means the key was overwritten,
            // so the lock is gone.
            Err(e) if e.code().is_some() => {
                self.state.set_error(&e);
                if e.code() == Some(code::WRONGTYPE) {
                    self.state.mark_lost();
                }
                Outcome::Stop
            }
            Err(e) => {
                self.conn = None;
                failed(&e)
            }
        }
    }
}
