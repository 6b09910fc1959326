//! `LOCK.*`: [`Lock`], the [`LockGuard`] it hands out, and [`LockStatus`].

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{ConnectionLike, Value};

use crate::watchdog::{self, LeaseState, Watchdog};
use crate::{client_error, millis_ceil, Result};

/// Takes locks of the fence module (`LOCK.ACQUIRE`) and reads their state (`LOCK.STATUS`).
///
/// A namespace: it has no values. The lock itself lives in Redis; what a caller holds is a
/// [`LockGuard`].
pub enum Lock {}

impl Lock {
    /// `LOCK.ACQUIRE key owner ttl`: takes the lock for `owner` for `ttl` (whole milliseconds,
    /// rounded up), without waiting.
    ///
    /// Returns the guard holding the fencing token, or `None` when another owner holds the lock
    /// (or other clients are queued for it with [`Lock::acquire_wait`]). When `owner` already
    /// holds the lock, the call is a re-acquire: the TTL is reset and the guard has the same
    /// token as before.
    ///
    /// The guard borrows `conn` for as long as it lives, to release the lock when it is dropped;
    /// use [`LockGuard::conn`] to run the protected work on the same connection.
    ///
    /// Errors: a `ttl` the module refuses (zero, or above `fence.max-ttl-ms`), an empty or too
    /// long `owner`, a key of another type, and I/O errors.
    pub fn acquire<'c, C: ConnectionLike>(
        conn: &'c mut C,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuard<'c, C>>> {
        let sent = Instant::now();
        let token: Option<u64> = redis::cmd("LOCK.ACQUIRE")
            .arg(key)
            .arg(owner)
            .arg(millis_ceil(ttl))
            .query(&mut *conn)?;
        Ok(token.map(|token| LockGuard::new(conn, key, owner, token, ttl, sent)))
    }

    /// `LOCK.ACQUIRE key owner ttl WAIT timeout`: like [`Lock::acquire`], but when another owner
    /// holds the lock, waits inside Redis (no polling) until it is granted, in the order the
    /// callers started waiting, or until `timeout` passes (then `None`).
    ///
    /// `timeout` is rounded up to whole milliseconds; `None` waits without limit, and
    /// `Some(Duration::ZERO)` does not wait at all (a plain [`Lock::acquire`]).
    ///
    /// The connection's read timeout, if any, must be longer than `timeout`. A client that
    /// gives up on the reply (a read timeout, or any other I/O error) while the server still
    /// has it waiting may be granted the lock after it stopped listening; so on an I/O error
    /// this function sends `LOCK.RELEASE key owner` on the same connection before it returns
    /// the error. Redis runs that release only once the waiting call has ended, on its
    /// connection, so whichever way the wait ends the lock is not left held for nobody: a late
    /// grant is released at once. With a [`redis::Connection`] the late reply of the wait is
    /// skipped, so the connection stays usable. A connection that was closed cannot carry the
    /// release: Redis drops a waiter whose connection closes, but a grant made just before the
    /// close stays held until its TTL passes. Inside `MULTI`/`EXEC` the module does not wait.
    ///
    /// An error with code `UNBLOCKED` means the server stopped being a master during the wait
    /// (a failover, `REPLICAOF`), on Redis and Valkey alike: nothing was granted, so nothing is
    /// released; call again on the new master. Redis closes the connection after that error,
    /// Valkey 9 keeps it open.
    pub fn acquire_wait<'c, C: ConnectionLike>(
        conn: &'c mut C,
        key: &str,
        owner: &str,
        ttl: Duration,
        timeout: Option<Duration>,
    ) -> Result<Option<LockGuard<'c, C>>> {
        let wait_ms = match timeout {
            Some(t) if t.is_zero() => return Lock::acquire(conn, key, owner, ttl),
            Some(t) => millis_ceil(t),
            None => 0,
        };
        let reply: Result<Option<u64>> = redis::cmd("LOCK.ACQUIRE")
            .arg(key)
            .arg(owner)
            .arg(millis_ceil(ttl))
            .arg("WAIT")
            .arg(wait_ms)
            .query(&mut *conn);
        let token = match reply {
            Ok(token) => token,
            Err(e) if e.is_io_error() => {
                // Gave up on the reply: no grant may outlive that. The token is unknown, so
                // the release names the owner only (owners are unique per holder).
                let _: Result<i64> = redis::cmd("LOCK.RELEASE")
                    .arg(key)
                    .arg(owner)
                    .query(&mut *conn);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // The grant happened at some moment of the wait, most likely just before the reply.
        let granted = Instant::now();
        Ok(token.map(|token| LockGuard::new(conn, key, owner, token, ttl, granted)))
    }

    /// `LOCK.STATUS key`: who holds the lock, with which token, for how long, and how many
    /// clients wait for it; `None` when the lock is free. Reads both the RESP2 and the RESP3
    /// form of the reply.
    pub fn status<C: ConnectionLike>(conn: &mut C, key: &str) -> Result<Option<LockStatus>> {
        let reply: Value = redis::cmd("LOCK.STATUS").arg(key).query(conn)?;
        LockStatus::from_reply(reply)
    }
}

/// What `LOCK.STATUS` reports of a held lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockStatus {
    /// The holder.
    pub owner: String,
    /// The holder's fencing token.
    pub token: u64,
    /// The time left before the lock expires, as the server counts it (whole milliseconds).
    pub ttl: Duration,
    /// How many clients wait for the lock in `LOCK.ACQUIRE ... WAIT`.
    pub waiters: u64,
}

impl LockStatus {
    fn from_reply(reply: Value) -> Result<Option<LockStatus>> {
        let pairs: Vec<(Value, Value)> = match reply {
            Value::Nil => return Ok(None),
            Value::Map(pairs) => pairs,
            Value::Array(items) if items.len() % 2 == 0 => {
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            _ => return Err(unexpected("LOCK.STATUS", &reply)),
        };
        let (mut owner, mut token, mut ttl, mut waiters) = (None, None, None, None);
        for (name, value) in pairs {
            let name: String = redis::from_redis_value(name)?;
            match name.as_str() {
                "owner" => owner = Some(redis::from_redis_value::<String>(value)?),
                "token" => token = Some(redis::from_redis_value::<u64>(value)?),
                "ttl" => ttl = Some(redis::from_redis_value::<i64>(value)?),
                "waiters" => waiters = Some(redis::from_redis_value::<u64>(value)?),
                _ => {} // a field added by a later module version
            }
        }
        match (owner, token, ttl) {
            (Some(owner), Some(token), Some(ttl)) => Ok(Some(LockStatus {
                owner,
                token,
                ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
                waiters: waiters.unwrap_or(0),
            })),
            _ => Err(client_error(
                "LOCK.STATUS replied without owner, token or ttl",
            )),
        }
    }
}

fn unexpected(command: &'static str, reply: &Value) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        format!("{command} replied {reply:?}"),
    ))
}

/// `LOCK.RENEW key owner ttl-ms TOKEN token`: the token, or `None` when `owner` does not hold
/// the grant `token` (any more). With `TOKEN` the server acts on that grant only, so a stale
/// guard (or a resent renewal) never extends a newer grant to the same owner string.
pub(crate) fn renew_command(
    conn: &mut dyn ConnectionLike,
    key: &str,
    owner: &str,
    ttl: Duration,
    token: u64,
) -> Result<Option<u64>> {
    redis::cmd("LOCK.RENEW")
        .arg(key)
        .arg(owner)
        .arg(millis_ceil(ttl))
        .arg("TOKEN")
        .arg(token)
        .query(conn)
}

/// `LOCK.RELEASE key owner TOKEN token`: true when `owner` held the grant `token` and no longer
/// does. A newer grant to the same owner string is left alone.
fn release_command(
    conn: &mut dyn ConnectionLike,
    key: &str,
    owner: &str,
    token: u64,
) -> Result<bool> {
    let n: i64 = redis::cmd("LOCK.RELEASE")
        .arg(key)
        .arg(owner)
        .arg("TOKEN")
        .arg(token)
        .query(conn)?;
    Ok(n == 1)
}

/// A held lock: the proof of a grant by `LOCK.ACQUIRE`, with its fencing token.
///
/// - [`token`](LockGuard::token) is the fencing token to hand to whatever the lock protects
///   (`STOCK.DEDUCT ... FENCE token`, a database row's version, ...), so that it can refuse
///   this holder once a newer one exists.
/// - [`renew`](LockGuard::renew) extends the lease; it never brings back an expired lock.
/// - [`start_watchdog`](LockGuard::start_watchdog) renews in the background, a bounded number
///   of times, on a connection of its own.
/// - Dropping the guard releases the lock (`LOCK.RELEASE`), ignoring errors;
///   [`release`](LockGuard::release) does the same and reports them.
///
/// A lease can be lost while the guard lives (it expired, or the key was deleted and someone
/// else took the lock): the guard then holds a stale token, the server refuses its renewals
/// and its release leaves the new holder alone. Renewals and releases name the guard's grant
/// (`LOCK.RENEW … TOKEN`, `LOCK.RELEASE … TOKEN`), so this holds even when the new holder has
/// the same owner string (a process restarted under the same name), and a renewal or release
/// that a client library resends after a lost reply acts on this grant only. [`is_lost`](LockGuard::is_lost) tells when the
/// guard has learned it.
pub struct LockGuard<'c, C: ConnectionLike> {
    conn: &'c mut C,
    key: String,
    owner: String,
    token: u64,
    state: Arc<LeaseState>,
    watchdog: Option<JoinHandle<()>>,
    watchdog_started: bool,
    released: bool,
}

impl<C: ConnectionLike> fmt::Debug for LockGuard<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("owner", &self.owner)
            .field("token", &self.token)
            .field("lost", &self.is_lost())
            .field("watchdog_running", &self.watchdog_running())
            .finish()
    }
}

impl<'c, C: ConnectionLike> LockGuard<'c, C> {
    fn new(
        conn: &'c mut C,
        key: &str,
        owner: &str,
        token: u64,
        ttl: Duration,
        since: Instant,
    ) -> Self {
        LockGuard {
            conn,
            key: key.to_string(),
            owner: owner.to_string(),
            token,
            state: Arc::new(LeaseState::new(ttl, since)),
            watchdog: None,
            watchdog_started: false,
            released: false,
        }
    }

    /// The fencing token of this grant.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The owner this guard holds the lock as.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The connection the guard was acquired on, for the work the lock protects.
    pub fn conn(&mut self) -> &mut C {
        self.conn
    }

    /// The TTL of the lease: the one it was acquired with, or of the last successful
    /// [`renew`](LockGuard::renew).
    pub fn ttl(&self) -> Duration {
        self.state.timing().0
    }

    /// This client's estimate of when the lease ends unless renewed: the last successful grant
    /// or renewal plus the TTL, as measured from when the request was sent (a `WAIT` grant:
    /// from when the reply came). The server's clock decides; this estimate errs early by the
    /// request's round trip.
    pub fn expires_at(&self) -> Instant {
        self.state.timing().1
    }

    /// True once the guard knows the lease is gone: a renewal (its own or the watchdog's) was
    /// refused, the watchdog could not reach the server before [`expires_at`](Self::expires_at),
    /// or [`release`](LockGuard::release) found the lock no longer held. A lost lease is never
    /// renewed again. False does not prove the lock is still held: a lease without a watchdog
    /// expires silently at its TTL.
    pub fn is_lost(&self) -> bool {
        self.state.lost.load(Ordering::SeqCst)
    }

    /// `LOCK.RENEW`: resets the lease to `ttl` from now. Returns false when the lease was lost
    /// (expired, or taken by another owner): the server never brings back an expired lock,
    /// and a guard that knows its lease is lost does not even ask. A running watchdog renews
    /// with the new `ttl` from then on: a renewal of the watchdog in flight is answered before
    /// this one is sent, so the server never applies the old TTL after the new one.
    pub fn renew(&mut self, ttl: Duration) -> Result<bool> {
        if self.is_lost() {
            return Ok(false);
        }
        // Excludes the watchdog's renewals while this one runs (see `watchdog`'s gate).
        let _gate = self.state.exclusive();
        if self.is_lost() {
            return Ok(false);
        }
        let sent = Instant::now();
        let renewed = match renew_command(&mut *self.conn, &self.key, &self.owner, ttl, self.token)?
        {
            Some(token) if token == self.token => {
                self.state.renewed(ttl, sent);
                true
            }
            // Nil: this grant is gone (a newer grant to the same owner string is left alone).
            _ => {
                self.state.mark_lost();
                false
            }
        };
        // The watchdog counts its next renewal from this one, with this TTL.
        self.state.wake_watchdog();
        Ok(renewed)
    }

    /// Starts the watchdog: a background thread that renews the lease every `config`'s interval
    /// (by default a third of the TTL) on its own connection from `client`, at most
    /// `config`'s number of times.
    ///
    /// It stops for good, never sending another `LOCK.RENEW`, as soon as any of these happens:
    /// the guard is released or dropped (which wait for it to stop before `LOCK.RELEASE`), a
    /// renewal is refused (the lease was lost: [`is_lost`](Self::is_lost) turns true), the
    /// maximum number of renewals was sent, the server could not be reached before the lease's
    /// end ([`is_lost`](Self::is_lost) turns true), or the server replied an error
    /// ([`watchdog_error`](Self::watchdog_error)). I/O errors before the lease's end are retried
    /// on a new connection.
    ///
    /// Errors: the watchdog was already started on this guard, an interval that is zero or not
    /// shorter than the TTL, or the first connection failed.
    pub fn start_watchdog(&mut self, client: &redis::Client, config: Watchdog) -> Result<()> {
        if self.watchdog_started {
            return Err(client_error(
                "the watchdog was already started for this lock",
            ));
        }
        if let Some(interval) = config.fixed_interval() {
            if interval.is_zero() || interval >= self.ttl() {
                return Err(client_error(
                    "the watchdog interval must be above zero and below the lock's TTL",
                ));
            }
        }
        let conn = watchdog::connect(client, self.ttl())?;
        self.watchdog = Some(watchdog::spawn(
            Arc::clone(&self.state),
            client.clone(),
            conn,
            self.key.clone(),
            self.owner.clone(),
            self.token,
            config,
        )?);
        self.watchdog_started = true;
        Ok(())
    }

    /// True while the watchdog thread runs.
    pub fn watchdog_running(&self) -> bool {
        self.watchdog.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// How many `LOCK.RENEW` commands the watchdog has sent (successful or not).
    pub fn renewals(&self) -> u32 {
        self.state.renewals.load(Ordering::SeqCst)
    }

    /// The last error the watchdog met (an I/O error it retried, or the server error that
    /// stopped it), as text.
    pub fn watchdog_error(&self) -> Option<String> {
        self.state.last_error()
    }

    /// Stops the watchdog and waits for its thread: once this returns, it sends nothing more.
    fn stop_watchdog(&mut self) {
        self.state.stop();
        if let Some(handle) = self.watchdog.take() {
            let _ = handle.join();
        }
    }

    /// `LOCK.RELEASE`, after stopping the watchdog. Returns true when this owner held the lock
    /// and no longer does, false when the lease had already been lost (the lock is then left
    /// to whoever holds it now). When clients wait for the lock, the first of them is granted
    /// it before this returns.
    pub fn release(mut self) -> Result<bool> {
        self.stop_watchdog();
        self.released = true;
        let released = release_command(&mut *self.conn, &self.key, &self.owner, self.token)?;
        if !released {
            self.state.mark_lost();
        }
        Ok(released)
    }
}

impl<C: ConnectionLike> Drop for LockGuard<'_, C> {
    /// Stops the watchdog, then releases the lock unless [`LockGuard::release`] did; errors
    /// are ignored (the lease then ends at its TTL).
    fn drop(&mut self) {
        self.stop_watchdog();
        if !self.released {
            self.released = true;
            let _ = release_command(&mut *self.conn, &self.key, &self.owner, self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn status_resp2_and_resp3() {
        assert_eq!(LockStatus::from_reply(Value::Nil).unwrap(), None);
        let expected = Some(LockStatus {
            owner: "w1".into(),
            token: 42,
            ttl: Duration::from_millis(900),
            waiters: 2,
        });
        let flat = Value::Array(vec![
            bulk("owner"),
            bulk("w1"),
            bulk("token"),
            Value::Int(42),
            bulk("ttl"),
            Value::Int(900),
            bulk("waiters"),
            Value::Int(2),
        ]);
        assert_eq!(LockStatus::from_reply(flat).unwrap(), expected);
        let map = Value::Map(vec![
            (bulk("owner"), bulk("w1")),
            (bulk("token"), Value::Int(42)),
            (bulk("ttl"), Value::Int(900)),
            (bulk("waiters"), Value::Int(2)),
        ]);
        assert_eq!(LockStatus::from_reply(map).unwrap(), expected);
        assert!(LockStatus::from_reply(Value::Int(1)).is_err());
        assert!(LockStatus::from_reply(Value::Array(vec![bulk("owner"), bulk("w1")])).is_err());
    }
}
