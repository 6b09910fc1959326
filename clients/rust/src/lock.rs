//! The sync lock: [`Lock`], a handle on one lock for one owner, and the [`LockGuard`] it
//! hands out.

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisResult};

use crate::commands::{acquire_cmd, release_cmd, wait_arg};
use crate::lease::{
    renewal_error_is_loss, renewal_held, LeaseLost, LeaseState, LostCallback, LostReason, Watchdog,
};
use crate::registry::Registration;
use crate::watchdog::{self, connect, release_with, renew_with, set_timeouts, Gate};
use crate::{client_error, Result};

/// The I/O timeout of a lock's connections unless set with [`Lock::io_timeout`]: every
/// connect, command and reply of a guard and its watchdog is bounded by it.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle on one lock for one owner: the key, the owner, the TTL of each grant, and how
/// guards keep and report their lease. Cheap to clone; it holds no connection and no lock.
///
/// ```no_run
/// use std::time::Duration;
/// use redis_fence_client::{Lock, Watchdog};
///
/// # fn main() -> redis::RedisResult<()> {
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let lock = Lock::new(&client, "{sku:42}:lock", "host-a:4242:worker-1", Duration::from_secs(10))
///     .watchdog(Watchdog::new(30))
///     .on_lost(|lost| eprintln!("lost {} (token {}): {}", lost.key, lost.token, lost.reason));
/// if let Some(guard) = lock.acquire(Some(Duration::from_secs(5)))? {
///     // ... work, passing guard.token() to what the lock protects ...
///     guard.release()?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Connections and timeouts
///
/// Each guard opens a connection of its own from the handle's [`Client`] (and its watchdog a
/// second one), and bounds every network call on them by [`io_timeout`](Lock::io_timeout),
/// whatever the TTL: a hung server or socket holds [`LockGuard::release`], [`LockGuard::renew`]
/// or `Drop` for at most that long (a connect and a command, each bounded), and the lease then
/// ends at its TTL on the server. The one longer call is `LOCK.ACQUIRE … WAIT`, whose reply may
/// take the whole wait: [`acquire`](Lock::acquire) reads it with the wait plus the I/O timeout
/// (or without limit for an unlimited wait).
///
/// The handle talks to the one server its [`Client`] names (a master). On Redis Cluster, use
/// the [`FenceCommands`](crate::FenceCommands) on a cluster connection.
///
/// # One guard per owner
///
/// The module knows a holder by its owner string only: a second `LOCK.ACQUIRE` by the owner
/// that holds the lock is a re-acquire returning the same token, and a single release frees
/// the lock. Two guards for one owner would each believe they hold the lock alone, and
/// dropping either would free it under the other. So a guard is refused (an error for which
/// [`is_owner_in_use`](crate::is_owner_in_use) is true, and nothing sent) while another guard
/// of this process holds the same server, database, key and owner, sync or async; the claim
/// ends once the first guard's release has been sent. To share a lease between threads,
/// share the guard (`Arc<LockGuard>`: its reading methods take `&self`).
#[derive(Clone)]
pub struct Lock {
    client: Client,
    key: String,
    owner: String,
    ttl: Duration,
    io_timeout: Duration,
    watchdog: Option<Watchdog>,
    on_lost: Option<LostCallback>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("server", &self.client.get_connection_info().addr())
            .field("key", &self.key)
            .field("owner", &self.owner)
            .field("ttl", &self.ttl)
            .field("io_timeout", &self.io_timeout)
            .field("watchdog", &self.watchdog)
            .field("on_lost", &self.on_lost.is_some())
            .finish()
    }
}

impl Lock {
    /// A handle on the lock `key` for `owner`, granted for `ttl` at a time (whole
    /// milliseconds, rounded up), without a watchdog, with the [`DEFAULT_IO_TIMEOUT`].
    pub fn new(
        client: &Client,
        key: impl Into<String>,
        owner: impl Into<String>,
        ttl: Duration,
    ) -> Lock {
        Lock {
            client: client.clone(),
            key: key.into(),
            owner: owner.into(),
            ttl,
            io_timeout: DEFAULT_IO_TIMEOUT,
            watchdog: None,
            on_lost: None,
        }
    }

    /// Every guard starts a watchdog that renews its lease in the background, as `config`
    /// says (see [`Watchdog`]).
    pub fn watchdog(mut self, config: Watchdog) -> Lock {
        self.watchdog = Some(config);
        self
    }

    /// The bound of every connect, command and reply of the guards and their watchdogs
    /// (at least 10 ms).
    pub fn io_timeout(mut self, timeout: Duration) -> Lock {
        self.io_timeout = timeout;
        self
    }

    /// Calls `callback` once per guard whose lease is lost while the guard lives: a renewal
    /// (its own or the watchdog's) or the release was refused, no renewal succeeded before
    /// the lease's end, or the key was overwritten. It runs on the thread that learned it
    /// (the watchdog's, or the caller's), never while the guard's internal locks are held.
    pub fn on_lost(mut self, callback: impl Fn(&LeaseLost) + Send + Sync + 'static) -> Lock {
        self.on_lost = Some(Arc::new(callback));
        self
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The owner the guards hold the lock as.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// `LOCK.ACQUIRE key owner ttl`: takes the lock without waiting. `None` when another owner
    /// holds it (or clients are queued for it).
    ///
    /// Errors: another live guard of this process holds this owner's claim
    /// ([`is_owner_in_use`](crate::is_owner_in_use)), a watchdog interval not below the TTL,
    /// the module's error replies (a TTL of zero or above `fence.max-ttl-ms`, an empty owner,
    /// a key of another type), and I/O errors.
    pub fn try_acquire(&self) -> Result<Option<LockGuard>> {
        self.acquire_with(None)
    }

    /// `LOCK.ACQUIRE key owner ttl WAIT timeout`: takes the lock, waiting inside Redis (in
    /// the order the callers started waiting, without polling) while another owner holds it,
    /// for at most `timeout` (then `None`). `None` waits without limit;
    /// `Some(Duration::ZERO)` does not wait ([`try_acquire`](Lock::try_acquire)).
    ///
    /// A wait that ends in an I/O error (the reply did not come within the wait plus the I/O
    /// timeout) sends `LOCK.RELEASE key owner` on the same connection before returning the
    /// error: Redis runs it once the wait has ended, so a grant made after this client gave
    /// up is released at once instead of being held for nobody until its TTL.
    ///
    /// An error with code `UNBLOCKED` means the server stopped being a master during the wait
    /// (a failover, `REPLICAOF`), on Redis and Valkey alike: nothing was granted, so nothing is
    /// released; call again on the new master. Redis closes the connection after that error,
    /// Valkey 9 keeps it open.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<Option<LockGuard>> {
        self.acquire_with(wait_arg(timeout))
    }

    fn acquire_with(&self, wait: Option<u64>) -> Result<Option<LockGuard>> {
        if let Some(config) = &self.watchdog {
            config.check(self.ttl).map_err(client_error)?;
        }
        let claim = Registration::claim(self.client.get_connection_info(), &self.key, &self.owner)?;
        let mut conn = connect(&self.client, self.io_timeout)?;
        let read_timeout = match wait {
            None => Some(self.io_timeout),
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms).saturating_add(self.io_timeout)),
        };
        conn.set_read_timeout(read_timeout)?;
        let sent = Instant::now();
        let reply: RedisResult<Option<u64>> =
            acquire_cmd(&self.key, &self.owner, self.ttl, wait).query(&mut conn);
        let token = match reply {
            Ok(token) => token,
            Err(e) if wait.is_some() && e.is_io_error() => {
                // Gave up on the reply: no grant may outlive that. The token is unknown, so
                // the release names the owner (whose claim this process still holds).
                let _ = set_timeouts(&conn, self.io_timeout);
                let _: RedisResult<i64> =
                    release_cmd(&self.key, &self.owner, None).query(&mut conn);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let Some(token) = token else {
            return Ok(None);
        };
        // A grant after a wait happened just before its reply; without a wait, after `sent`.
        let since = if wait.is_some() { Instant::now() } else { sent };
        let state = Arc::new(LeaseState::new(
            &self.key,
            &self.owner,
            token,
            self.ttl,
            since,
            self.on_lost.clone(),
        ));
        let mut guard = LockGuard {
            conn,
            state,
            gate: Arc::new(Gate::new()),
            watchdog: None,
            released: false,
            _claim: claim,
        };
        // Every call from here on is bounded by the I/O timeout, the release in `Drop` too.
        set_timeouts(&guard.conn, self.io_timeout)?;
        if let Some(config) = &self.watchdog {
            // The watchdog's own connection; when it cannot be had now, the watchdog connects
            // when its first renewal is due.
            let conn = connect(&self.client, self.io_timeout).ok();
            let handle = watchdog::spawn(
                Arc::clone(&guard.state),
                Arc::clone(&guard.gate),
                self.client.clone(),
                conn,
                config.clone(),
                self.io_timeout,
            )?;
            guard.watchdog = Some(handle);
        }
        Ok(Some(guard))
    }
}

/// A held lock: the proof of a grant by `LOCK.ACQUIRE`, with its fencing token.
///
/// - [`token`](LockGuard::token) is the fencing token to hand to whatever the lock protects
///   (`STOCK.DEDUCT … FENCE token`, a database row's version...), so that it can refuse this
///   holder once a newer one exists.
/// - [`renew`](LockGuard::renew) extends the lease; it never brings back an expired lock.
/// - Dropping the guard stops its watchdog, then releases the lock (`LOCK.RELEASE … TOKEN`),
///   ignoring errors; [`release`](LockGuard::release) does the same and reports them. Both
///   are bounded by the lock's I/O timeout.
///
/// A lease can be lost while the guard lives (it expired, or the key was deleted and someone
/// else took the lock): the guard then holds a stale token, the server refuses its renewals
/// and its release leaves the new holder alone, even one with the same owner string (a
/// process restarted under the same name). [`is_lost`](LockGuard::is_lost) tells when the
/// guard has learned it, and [`Lock::on_lost`] is told once.
pub struct LockGuard {
    conn: Connection,
    state: Arc<LeaseState>,
    gate: Arc<Gate>,
    watchdog: Option<JoinHandle<()>>,
    released: bool,
    /// Dropped after `Drop::drop` has sent the release: only then may another guard claim
    /// this owner.
    _claim: Registration,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.state.key)
            .field("owner", &self.state.owner)
            .field("token", &self.state.token)
            .field("lost", &self.state.lost_reason())
            .field("watchdog_running", &self.watchdog_running())
            .finish()
    }
}

impl LockGuard {
    /// The fencing token of this grant.
    pub fn token(&self) -> u64 {
        self.state.token
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.state.key
    }

    /// The owner this guard holds the lock as.
    pub fn owner(&self) -> &str {
        &self.state.owner
    }

    /// The TTL of the lease: the one it was acquired with, or of the last successful renewal.
    pub fn ttl(&self) -> Duration {
        self.state.timing().ttl
    }

    /// This client's estimate of when the lease ends unless renewed: the last successful grant
    /// or renewal plus the TTL, counted from when the request was sent (after a `WAIT`: from
    /// when the reply came). The server's clock decides; this estimate errs early by the
    /// request's round trip.
    pub fn expires_at(&self) -> Instant {
        self.state.timing().expires_at()
    }

    /// True once the guard knows the lease is gone (see [`lost_reason`](Self::lost_reason)).
    /// A lost lease is never renewed again. False does not prove the lock is still held: a
    /// lease without a watchdog expires silently at its TTL.
    pub fn is_lost(&self) -> bool {
        self.state.is_lost()
    }

    /// How the lease was lost, once the guard knows it.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.state.lost_reason()
    }

    /// The guard's connection (its read and write timeouts are the lock's I/O timeout), for
    /// work that should share it.
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// `LOCK.RENEW key owner ttl TOKEN token`: resets the lease to `ttl` from now. False when
    /// the lease was lost (the guard then knows it, and reports it once): the server never
    /// brings back an expired lock, and a guard that knows its lease is lost does not even
    /// ask. A running watchdog renews with the new `ttl` from then on; a renewal of the
    /// watchdog in flight is answered (or times out) before this one is sent, so the server
    /// never applies the old TTL after the new one.
    pub fn renew(&mut self, ttl: Duration) -> Result<bool> {
        if self.is_lost() {
            return Ok(false);
        }
        let outcome = {
            // Excludes the watchdog's renewals while this one runs.
            let _gate = self.gate.exclusive();
            if self.is_lost() {
                return Ok(false);
            }
            let sent = Instant::now();
            match renew_with(&mut self.conn, &self.state, ttl) {
                Ok(reply) if renewal_held(reply, self.state.token) => {
                    self.state.renewed(ttl, sent);
                    Ok(true)
                }
                Ok(_) => Err(LostReason::Refused),
                Err(e) => match renewal_error_is_loss(&e) {
                    Some(reason) => Err(reason),
                    None => return Err(e),
                },
            }
        };
        // The watchdog counts its next renewal from this one, with this TTL.
        self.gate.wake();
        match outcome {
            Ok(renewed) => Ok(renewed),
            Err(reason) => {
                self.state.mark_lost(reason);
                Ok(false)
            }
        }
    }

    /// True while the watchdog thread runs.
    pub fn watchdog_running(&self) -> bool {
        self.watchdog.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// How many `LOCK.RENEW` commands the watchdog has sent (successful or not).
    pub fn renewals(&self) -> u32 {
        self.state.renewals()
    }

    /// The last error the watchdog met (an I/O error it retried, or the server error that
    /// stopped it), as text.
    pub fn watchdog_error(&self) -> Option<String> {
        self.state.last_error()
    }

    /// Stops the watchdog and waits for its thread: once this returns, it sends nothing more.
    /// Bounded: a renewal in flight ends within the I/O timeout.
    fn stop_watchdog(&mut self) {
        self.gate.stop();
        if let Some(handle) = self.watchdog.take() {
            let _ = handle.join();
        }
    }

    /// `LOCK.RELEASE key owner TOKEN token`, after stopping the watchdog. True when this grant
    /// was held and no longer is; false when the lease had already been lost (the lock is
    /// then left to whoever holds it now, and the loss reported if it was not yet). When
    /// clients wait for the lock, the first of them is granted it before this returns.
    pub fn release(mut self) -> Result<bool> {
        self.stop_watchdog();
        self.released = true;
        let released = release_with(&mut self.conn, &self.state)?;
        if !released {
            self.state.mark_lost(LostReason::Refused);
        }
        Ok(released)
    }
}

impl Drop for LockGuard {
    /// Stops the watchdog, then releases the lock unless [`LockGuard::release`] did; errors
    /// are ignored (the lease then ends at its TTL).
    fn drop(&mut self) {
        self.stop_watchdog();
        if !self.released {
            self.released = true;
            let _ = release_with(&mut self.conn, &self.state);
        }
    }
}
