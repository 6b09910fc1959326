//! The async lock (tokio): [`AsyncLock`], the [`AsyncLockGuard`] it hands out, and the
//! watchdog task, carrying out what [`lease`](crate::lease) decides.
//!
//! Race freedom with release, as in the sync watchdog: the task holds the gate (an async
//! mutex) while it decides and sends a renewal, and checks `stopped` under it; stopping takes
//! the gate (waiting for a renewal in flight, itself bounded by the I/O timeout), sets
//! `stopped` and wakes the task; only then is `LOCK.RELEASE` sent.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult};
use tokio::sync::{Mutex as AsyncMutex, Notify};
use tokio::task::JoinHandle;

use crate::commands::{acquire_cmd, release_cmd, renew_cmd, wait_arg};
use crate::lease::{
    next_step, renewal_error_is_loss, renewal_held, retry_after_io_error, token_unsupported,
    LeaseLost, LeaseState, LostCallback, LostReason, Step, Watchdog, MIN_IO_TIMEOUT,
};
use crate::lock::DEFAULT_IO_TIMEOUT;
use crate::registry::Registration;
use crate::{client_error, Result};

/// `fut`, or an I/O error of kind `TimedOut` once `timeout` has passed.
async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no reply within the lock's I/O timeout",
        ))),
    }
}

/// A connection of its own, connected within `timeout`. Replies are not bounded by the
/// connection: every call bounds its own with [`bounded`].
async fn connect(client: &Client, timeout: Duration) -> RedisResult<MultiplexedConnection> {
    let timeout = timeout.max(MIN_IO_TIMEOUT);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    bounded(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
}

/// `LOCK.RENEW … TOKEN token` for this lease (without `TOKEN` on a module that predates it).
async fn renew_with(
    conn: &mut MultiplexedConnection,
    state: &LeaseState,
    ttl: Duration,
) -> RedisResult<Option<u64>> {
    let token = state.token_arg();
    match renew_cmd(&state.key, &state.owner, ttl, token)
        .query_async(conn)
        .await
    {
        Err(e) if token.is_some() && token_unsupported(&e, "LOCK.RENEW") => {
            state.set_tokenless();
            renew_cmd(&state.key, &state.owner, ttl, None)
                .query_async(conn)
                .await
        }
        other => other,
    }
}

/// `LOCK.RELEASE … TOKEN token` for this lease (without `TOKEN` on a module that predates it).
async fn release_with(conn: &mut MultiplexedConnection, state: &LeaseState) -> RedisResult<bool> {
    let token = state.token_arg();
    match release_cmd(&state.key, &state.owner, token)
        .query_async(conn)
        .await
    {
        Err(e) if token.is_some() && token_unsupported(&e, "LOCK.RELEASE") => {
            state.set_tokenless();
            release_cmd(&state.key, &state.owner, None)
                .query_async(conn)
                .await
        }
        other => other,
    }
}

/// The tokio twin of [`Lock`](crate::Lock): a handle on one lock for one owner, with the same
/// settings, rules and meanings ("Connections and timeouts" and "One guard per owner" there
/// apply word for word; the claim is shared with the sync guards).
///
/// ```no_run
/// use std::time::Duration;
/// use redis_fence_client::{AsyncLock, Watchdog};
///
/// # async fn run() -> redis::RedisResult<()> {
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let lock = AsyncLock::new(&client, "{sku:42}:lock", "host-a:4242:task-7", Duration::from_secs(10))
///     .watchdog(Watchdog::new(30));
/// if let Some(guard) = lock.acquire(Some(Duration::from_secs(5))).await? {
///     tokio::select! {
///         _ = async { /* work, passing guard.token() along */ } => {}
///         reason = guard.lost() => eprintln!("lease lost: {reason}"),
///     }
///     guard.release().await?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// Futures and drops:
///
/// - A dropped [`acquire`](AsyncLock::acquire) or [`try_acquire`](AsyncLock::try_acquire)
///   future (a `select!` that took another branch, a `tokio::time::timeout`, an aborted
///   task) does not leave a grant held for nobody: a task sends `LOCK.RELEASE key owner` on
///   the waiting connection, which Redis runs as soon as the wait ends, and keeps the
///   owner's claim until it is answered (for an unlimited wait, whenever that is).
/// - Dropping an [`AsyncLockGuard`] cannot wait: it spawns a task on the runtime the guard
///   was acquired on (from any thread) that stops the watchdog and releases, each step
///   bounded by the I/O timeout. Once that runtime has shut down nothing can be sent: the
///   watchdog is stopped and the lease ends at its TTL. [`AsyncLockGuard::release`] is the
///   way to know the outcome.
/// - The calls need a tokio runtime (an error otherwise); the watchdog is a task on it.
#[derive(Clone)]
pub struct AsyncLock {
    client: Client,
    key: String,
    owner: String,
    ttl: Duration,
    io_timeout: Duration,
    watchdog: Option<Watchdog>,
    on_lost: Option<LostCallback>,
}

impl fmt::Debug for AsyncLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLock")
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

/// A `LOCK.ACQUIRE` in flight: if its future is dropped before the reply is read, a task
/// releases whatever grant the call gets, by owner, on the same connection.
struct PendingAcquire {
    armed: Option<(MultiplexedConnection, Registration)>,
    /// The runtime the acquire ran on: the release is spawned there, whichever thread drops
    /// the future.
    runtime: tokio::runtime::Handle,
    key: String,
    owner: String,
    /// How long to wait for the release's reply: the rest of the wait plus the I/O timeout,
    /// or `None` for an unlimited wait.
    answer_within: Option<Duration>,
}

impl Drop for PendingAcquire {
    fn drop(&mut self) {
        let Some((mut conn, claim)) = self.armed.take() else {
            return;
        };
        let cmd = release_cmd(&self.key, &self.owner, None);
        let answer_within = self.answer_within;
        self.runtime.spawn(async move {
            let release = cmd.query_async::<i64>(&mut conn);
            let _ = match answer_within {
                Some(d) => bounded(d, release).await,
                None => release.await,
            };
            // Only now may another guard of this process claim the owner.
            drop(claim);
        });
    }
}

impl AsyncLock {
    /// A handle on the lock `key` for `owner`, granted for `ttl` at a time (whole
    /// milliseconds, rounded up), without a watchdog, with the [`DEFAULT_IO_TIMEOUT`].
    pub fn new(
        client: &Client,
        key: impl Into<String>,
        owner: impl Into<String>,
        ttl: Duration,
    ) -> AsyncLock {
        AsyncLock {
            client: client.clone(),
            key: key.into(),
            owner: owner.into(),
            ttl,
            io_timeout: DEFAULT_IO_TIMEOUT,
            watchdog: None,
            on_lost: None,
        }
    }

    /// Every guard starts a watchdog task that renews its lease, as `config` says.
    pub fn watchdog(mut self, config: Watchdog) -> AsyncLock {
        self.watchdog = Some(config);
        self
    }

    /// The bound of every connect, command and reply of the guards and their watchdogs
    /// (at least 10 ms).
    pub fn io_timeout(mut self, timeout: Duration) -> AsyncLock {
        self.io_timeout = timeout;
        self
    }

    /// Calls `callback` once per guard whose lease is lost while the guard lives (see
    /// [`Lock::on_lost`](crate::Lock::on_lost)); [`AsyncLockGuard::lost`] is the awaitable
    /// form.
    pub fn on_lost(mut self, callback: impl Fn(&LeaseLost) + Send + Sync + 'static) -> AsyncLock {
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

    /// `LOCK.ACQUIRE key owner ttl`; see [`Lock::try_acquire`](crate::Lock::try_acquire).
    pub async fn try_acquire(&self) -> Result<Option<AsyncLockGuard>> {
        self.acquire_with(None).await
    }

    /// `LOCK.ACQUIRE key owner ttl WAIT timeout`; see [`Lock::acquire`](crate::Lock::acquire).
    /// The future may be dropped at any point (see [`AsyncLock`]). After an I/O error (no
    /// reply within the wait plus the I/O timeout) the release is sent from a task, as for a
    /// dropped future, and this owner's claim lasts until it is answered: an immediate retry
    /// may get the [`is_owner_in_use`](crate::is_owner_in_use) error.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<Option<AsyncLockGuard>> {
        self.acquire_with(wait_arg(timeout)).await
    }

    async fn acquire_with(&self, wait: Option<u64>) -> Result<Option<AsyncLockGuard>> {
        if let Some(config) = &self.watchdog {
            config.check(self.ttl).map_err(client_error)?;
        }
        let io_timeout = self.io_timeout.max(MIN_IO_TIMEOUT);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| client_error("AsyncLock runs on a tokio runtime"))?;
        let claim = Registration::claim(self.client.get_connection_info(), &self.key, &self.owner)?;
        let conn = connect(&self.client, io_timeout).await?;
        let reply_within = match wait {
            None => Some(io_timeout),
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms).saturating_add(io_timeout)),
        };
        let mut pending = PendingAcquire {
            armed: Some((conn.clone(), claim)),
            runtime: runtime.clone(),
            key: self.key.clone(),
            owner: self.owner.clone(),
            answer_within: reply_within,
        };
        let mut waiting = conn.clone();
        let sent = Instant::now();
        let cmd = acquire_cmd(&self.key, &self.owner, self.ttl, wait);
        let call = cmd.query_async(&mut waiting);
        let reply: RedisResult<Option<u64>> = match reply_within {
            Some(d) => bounded(d, call).await,
            None => call.await,
        };
        let token = match reply {
            Ok(token) => token,
            Err(e) if e.is_io_error() => {
                // Gave up on the reply: the armed release is sent as for a dropped future.
                return Err(e);
            }
            Err(e) => {
                // An error reply: nothing was granted.
                pending.armed = None;
                return Err(e);
            }
        };
        let Some((conn, claim)) = pending.armed.take() else {
            return Err(client_error("the pending acquire was disarmed twice"));
        };
        let Some(token) = token else {
            return Ok(None);
        };
        let since = if wait.is_some() { Instant::now() } else { sent };
        let state = Arc::new(LeaseState::new(
            &self.key,
            &self.owner,
            token,
            self.ttl,
            since,
            self.on_lost.clone(),
        ));
        let shared = Arc::new(Shared {
            gate: AsyncMutex::new(false),
            abandoned: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let watchdog = match &self.watchdog {
            Some(config) => {
                let conn = connect(&self.client, io_timeout).await.ok();
                let renewer = Renewer {
                    state: Arc::clone(&state),
                    shared: Arc::clone(&shared),
                    client: self.client.clone(),
                    conn,
                    config: config.clone(),
                    io_timeout,
                };
                Some(tokio::spawn(renewer.run()))
            }
            None => None,
        };
        Ok(Some(AsyncLockGuard {
            conn,
            state,
            shared,
            watchdog,
            io_timeout,
            released: false,
            claim: Some(claim),
            runtime,
        }))
    }
}

/// What a guard and its watchdog task share.
struct Shared {
    /// Held by the task while it decides and renews; `true` once stopped.
    gate: AsyncMutex<bool>,
    /// Set by a guard dropped where it cannot wait for the gate: the task stops at its next
    /// decision.
    abandoned: AtomicBool,
    wake: Notify,
}

impl Shared {
    /// Stops the watchdog task and waits for it to end (bounded: a renewal in flight ends
    /// within the I/O timeout; a task that does not end by then is aborted).
    async fn stop(&self, task: Option<JoinHandle<()>>, io_timeout: Duration) {
        {
            let mut stopped = match tokio::time::timeout(io_timeout, self.gate.lock()).await {
                Ok(stopped) => stopped,
                Err(_) => {
                    // Not reached while the task keeps its bounds; never wait for ever.
                    if let Some(task) = task {
                        task.abort();
                    }
                    return;
                }
            };
            *stopped = true;
        }
        self.wake.notify_one();
        if let Some(mut task) = task {
            if tokio::time::timeout(io_timeout, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// A held lock, the async twin of [`LockGuard`](crate::LockGuard): the same methods and
/// meanings, with `renew` and `release` async, and [`lost`](AsyncLockGuard::lost) to await a
/// lost lease.
pub struct AsyncLockGuard {
    conn: MultiplexedConnection,
    state: Arc<LeaseState>,
    shared: Arc<Shared>,
    watchdog: Option<JoinHandle<()>>,
    io_timeout: Duration,
    released: bool,
    claim: Option<Registration>,
    /// The runtime the guard was acquired on, where `Drop` spawns the release.
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for AsyncLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLockGuard")
            .field("key", &self.state.key)
            .field("owner", &self.state.owner)
            .field("token", &self.state.token)
            .field("lost", &self.state.lost_reason())
            .field("watchdog_running", &self.watchdog_running())
            .finish()
    }
}

impl AsyncLockGuard {
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

    /// This client's estimate of when the lease ends unless renewed; see
    /// [`LockGuard::expires_at`](crate::LockGuard::expires_at).
    pub fn expires_at(&self) -> Instant {
        self.state.timing().expires_at()
    }

    /// True once the guard knows the lease is gone.
    pub fn is_lost(&self) -> bool {
        self.state.is_lost()
    }

    /// How the lease was lost, once the guard knows it.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.state.lost_reason()
    }

    /// Completes when the guard learns that its lease is lost (at once if it already knows),
    /// with the reason; never completes while the lease is held. For `tokio::select!` against
    /// the work the lock protects.
    pub async fn lost(&self) -> LostReason {
        let mut watch = self.state.lost_watch();
        loop {
            if let Some(reason) = *watch.borrow_and_update() {
                return reason;
            }
            if watch.changed().await.is_err() {
                // The sender lives as long as the guard: not reached.
                return std::future::pending().await;
            }
        }
    }

    /// The guard's connection, for work that should share it. Its replies are not bounded by
    /// the I/O timeout (the guard bounds its own calls).
    pub fn conn(&mut self) -> &mut MultiplexedConnection {
        &mut self.conn
    }

    /// `LOCK.RENEW key owner ttl TOKEN token`; see
    /// [`LockGuard::renew`](crate::LockGuard::renew). Bounded by the I/O timeout (plus the
    /// wait for a watchdog renewal in flight, itself bounded).
    pub async fn renew(&mut self, ttl: Duration) -> Result<bool> {
        if self.is_lost() {
            return Ok(false);
        }
        let outcome = {
            let _gate = self.shared.gate.lock().await;
            if self.is_lost() {
                return Ok(false);
            }
            let sent = Instant::now();
            match bounded(
                self.io_timeout,
                renew_with(&mut self.conn, &self.state, ttl),
            )
            .await
            {
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
        self.shared.wake.notify_one();
        match outcome {
            Ok(renewed) => Ok(renewed),
            Err(reason) => {
                self.state.mark_lost(reason);
                Ok(false)
            }
        }
    }

    /// True while the watchdog task runs.
    pub fn watchdog_running(&self) -> bool {
        self.watchdog.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// How many `LOCK.RENEW` commands the watchdog has sent (successful or not).
    pub fn renewals(&self) -> u32 {
        self.state.renewals()
    }

    /// The last error the watchdog met, as text.
    pub fn watchdog_error(&self) -> Option<String> {
        self.state.last_error()
    }

    /// `LOCK.RELEASE key owner TOKEN token`, after stopping the watchdog; see
    /// [`LockGuard::release`](crate::LockGuard::release). Bounded by twice the I/O timeout
    /// (stopping a renewal in flight, then the release).
    pub async fn release(mut self) -> Result<bool> {
        self.released = true;
        self.shared
            .stop(self.watchdog.take(), self.io_timeout)
            .await;
        let released = bounded(self.io_timeout, release_with(&mut self.conn, &self.state)).await?;
        if !released {
            self.state.mark_lost(LostReason::Refused);
        }
        Ok(released)
    }
}

impl Drop for AsyncLockGuard {
    /// Spawns the release (after stopping the watchdog) on the current tokio runtime; see
    /// [`AsyncLock`] for what happens outside one.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let shared = Arc::clone(&self.shared);
        let state = Arc::clone(&self.state);
        let task = self.watchdog.take();
        let mut conn = self.conn.clone();
        let claim = self.claim.take();
        let io_timeout = self.io_timeout;
        // Stops the watchdog at its next decision even if the release task never runs.
        shared.abandoned.store(true, Ordering::SeqCst);
        shared.wake.notify_one();
        // On a runtime that has shut down, the task is dropped unrun: the lease ends at its
        // TTL.
        self.runtime.spawn(async move {
            shared.stop(task, io_timeout).await;
            let _ = bounded(io_timeout, release_with(&mut conn, &state)).await;
            drop(claim);
        });
    }
}

/// The watchdog task of one guard.
struct Renewer {
    state: Arc<LeaseState>,
    shared: Arc<Shared>,
    client: Client,
    conn: Option<MultiplexedConnection>,
    config: Watchdog,
    io_timeout: Duration,
}

/// What one renewal attempt found.
enum Outcome {
    Renewed,
    Lost(LostReason),
    /// An error reply that would come again: stop, the lease not known lost.
    Stop,
    /// A network error or timeout: try again soon, while the lease lasts.
    Retry,
}

impl Renewer {
    async fn run(mut self) {
        let state = Arc::clone(&self.state);
        let shared = Arc::clone(&self.shared);
        let mut retry_at = None;
        let lost = loop {
            // Created before the checks, so a wake between them and the sleep is not missed.
            let woken = shared.wake.notified();
            let stopped = shared.gate.lock().await;
            if *stopped || shared.abandoned.load(Ordering::SeqCst) || state.is_lost() {
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
                    // Sleeps without the gate: this is when `stop` and `renew` get it.
                    drop(stopped);
                    tokio::select! {
                        () = tokio::time::sleep_until(until.into()) => {}
                        () = woken => {}
                    }
                }
                Step::Renew { ttl, timeout } => {
                    let outcome = self.renew_once(ttl, timeout).await;
                    drop(stopped);
                    match outcome {
                        Outcome::Renewed => retry_at = None,
                        Outcome::Lost(reason) => break Some(reason),
                        Outcome::Stop => break None,
                        Outcome::Retry => {
                            match retry_after_io_error(Instant::now(), state.timing(), &self.config)
                            {
                                Some(at) => retry_at = Some(at),
                                None => break Some(LostReason::Expired),
                            }
                        }
                    }
                }
            }
        };
        self.conn = None;
        if let Some(reason) = lost {
            state.mark_lost(reason);
        }
    }

    async fn renew_once(&mut self, ttl: Duration, timeout: Duration) -> Outcome {
        let state = Arc::clone(&self.state);
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => match connect(&self.client, timeout).await {
                Ok(conn) => conn,
                Err(e) => {
                    state.set_error(&e);
                    return Outcome::Retry;
                }
            },
        };
        let conn = self.conn.insert(conn);
        state.count_renewal();
        let sent = Instant::now();
        match bounded(timeout, renew_with(conn, &state, ttl)).await {
            Ok(reply) if renewal_held(reply, state.token) => {
                state.renewed(ttl, sent);
                Outcome::Renewed
            }
            // Refused: this grant is gone (a newer grant to the same owner is left alone).
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
