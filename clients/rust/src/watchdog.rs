//! The sync watchdog: a thread that renews one lease on a connection of its own, as
//! [`lease::next_step`](crate::lease::next_step) decides.
//!
//! Race freedom with release: the thread holds the gate at all times except while it sleeps
//! on the condition variable, so it sends every `LOCK.RENEW` under the gate and checks the
//! `stopped` flag under the gate right before. Stopping takes the gate (waiting for a renewal
//! in flight to be answered or to time out), sets `stopped`, wakes the thread and joins it;
//! only then does the guard send `LOCK.RELEASE`. No renewal is sent after the release.
//!
//! A manual [`LockGuard::renew`](crate::LockGuard::renew) takes the gate as well, so the
//! server never executes a watchdog renewal with the old TTL after the manual one with the new
//! TTL (which would shorten the lease behind the guard's back).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{Client, Connection, ConnectionLike, RedisResult};

use crate::commands::{release_cmd, renew_cmd};
use crate::lease::{
    next_step, renewal_error_is_loss, renewal_held, retry_after_io_error, token_unsupported,
    LeaseState, LostReason, Step, Watchdog, MIN_IO_TIMEOUT,
};

/// The gate a guard and its watchdog thread share; `true` once stopped.
pub(crate) struct Gate {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// Holds off the watchdog's renewals while the returned guard lives: it waits for a
    /// renewal in flight, and the watchdog sends no other until the guard is dropped.
    pub(crate) fn exclusive(&self) -> MutexGuard<'_, bool> {
        self.stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes a sleeping watchdog recompute when its next renewal is due.
    pub(crate) fn wake(&self) {
        self.wake.notify_all();
    }

    /// Makes the watchdog stop: once this returns, it sends no more renewals.
    pub(crate) fn stop(&self) {
        *self.exclusive() = true;
        self.wake.notify_all();
    }
}

/// A connection whose connect and every command are bounded by `timeout`.
pub(crate) fn connect(client: &Client, timeout: Duration) -> RedisResult<Connection> {
    let timeout = timeout.max(MIN_IO_TIMEOUT);
    let conn = client.get_connection_with_timeout(timeout)?;
    set_timeouts(&conn, timeout)?;
    Ok(conn)
}

/// Bounds the next reads and writes of `conn` by `timeout`.
pub(crate) fn set_timeouts(conn: &Connection, timeout: Duration) -> RedisResult<()> {
    let timeout = Some(timeout.max(MIN_IO_TIMEOUT));
    conn.set_read_timeout(timeout)?;
    conn.set_write_timeout(timeout)
}

/// `LOCK.RENEW … TOKEN token` for this lease (without `TOKEN` on a module that predates it).
pub(crate) fn renew_with(
    conn: &mut dyn ConnectionLike,
    state: &LeaseState,
    ttl: Duration,
) -> RedisResult<Option<u64>> {
    let token = state.token_arg();
    match renew_cmd(&state.key, &state.owner, ttl, token).query(conn) {
        Err(e) if token.is_some() && token_unsupported(&e, "LOCK.RENEW") => {
            state.set_tokenless();
            renew_cmd(&state.key, &state.owner, ttl, None).query(conn)
        }
        other => other,
    }
}

/// `LOCK.RELEASE … TOKEN token` for this lease (without `TOKEN` on a module that predates it).
pub(crate) fn release_with(conn: &mut dyn ConnectionLike, state: &LeaseState) -> RedisResult<bool> {
    let token = state.token_arg();
    match release_cmd(&state.key, &state.owner, token).query(conn) {
        Err(e) if token.is_some() && token_unsupported(&e, "LOCK.RELEASE") => {
            state.set_tokenless();
            release_cmd(&state.key, &state.owner, None).query(conn)
        }
        other => other,
    }
}

/// Starts the watchdog thread, renewing on `conn` (connecting from `client` when there is
/// none, and again after an I/O error).
pub(crate) fn spawn(
    state: Arc<LeaseState>,
    gate: Arc<Gate>,
    client: Client,
    conn: Option<Connection>,
    config: Watchdog,
    io_timeout: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let renewer = Renewer {
        state,
        gate,
        client,
        conn,
        config,
        io_timeout,
    };
    thread::Builder::new()
        .name("fence-watchdog".to_string())
        .spawn(move || renewer.run())
}

struct Renewer {
    state: Arc<LeaseState>,
    gate: Arc<Gate>,
    client: Client,
    conn: Option<Connection>,
    config: Watchdog,
    io_timeout: Duration,
}

/// What one renewal attempt found.
enum Outcome {
    Renewed,
    Lost(LostReason),
    /// An error reply that would come again: stop, the lease not known lost.
    Stop,
    /// A network error: try again soon, while the lease lasts.
    Retry,
}

impl Renewer {
    fn run(mut self) {
        let gate = Arc::clone(&self.gate);
        let state = Arc::clone(&self.state);
        let mut stopped = gate.exclusive();
        let mut retry_at = None;
        let lost = loop {
            if *stopped || state.is_lost() {
                break None;
            }
            let now = Instant::now();
            let step = next_step(
                now,
                state.timing(),
                &self.config,
                state.renewals(),
                retry_at,
                self.io_timeout,
            );
            match step {
                Step::Done => break None,
                Step::Expired => break Some(LostReason::Expired),
                Step::Sleep(until) => {
                    // Releases the gate while asleep: this is when `stop` and `renew` get it.
                    stopped = gate
                        .wake
                        .wait_timeout(stopped, until.saturating_duration_since(now))
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                }
                Step::Renew { ttl, timeout } => match self.renew_once(ttl, timeout) {
                    Outcome::Renewed => retry_at = None,
                    Outcome::Lost(reason) => break Some(reason),
                    Outcome::Stop => break None,
                    Outcome::Retry => {
                        match retry_after_io_error(Instant::now(), state.timing(), &self.config) {
                            Some(at) => retry_at = Some(at),
                            None => break Some(LostReason::Expired),
                        }
                    }
                },
            }
        };
        drop(stopped);
        self.conn = None;
        if let Some(reason) = lost {
            state.mark_lost(reason);
        }
    }

    fn renew_once(&mut self, ttl: Duration, timeout: Duration) -> Outcome {
        let state = Arc::clone(&self.state);
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => match connect(&self.client, timeout) {
                Ok(conn) => conn,
                Err(e) => {
                    state.set_error(&e);
                    return Outcome::Retry;
                }
            },
        };
        let conn = self.conn.insert(conn);
        if let Err(e) = set_timeouts(conn, timeout) {
            state.set_error(&e);
            self.conn = None;
            return Outcome::Retry;
        }
        state.count_renewal();
        let sent = Instant::now();
        match renew_with(conn, &state, ttl) {
            Ok(reply) if renewal_held(reply, state.token) => {
                state.renewed(ttl, sent);
                Outcome::Renewed
            }
            // Refused: expired, or held by another owner, or granted anew to this owner
            // string (TOKEN: that newer grant is left alone).
            Ok(_) => Outcome::Lost(LostReason::Refused),
            Err(e) if e.code().is_some() => {
                state.set_error(&e);
                renewal_error_is_loss(&e).map_or(Outcome::Stop, Outcome::Lost)
            }
            Err(e) => {
                state.set_error(&e);
                self.conn = None;
                Outcome::Retry
            }
        }
    }
}
