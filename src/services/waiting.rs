//! `LOCK.ACQUIRE … WAIT`: blocking waiters inside Redis, a fair FIFO per key, and hand-off.
//!
//! The queue and its rules are `fence_core::waitq`; this is the Redis side: blocking and
//! answering clients, the timers (each waiter's deadline, and a re-check of a waited-for key at
//! its lock's expiry or after a keyspace event), and the subscriptions that tell a waited-for
//! key changed. `RedisModule_BlockClientOnKeys` cannot serve a waiter once its key is deleted,
//! so the module hands the lock over itself, from the releasing command or a timer.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};

use fence_core::clock::now_us;
use fence_core::cluster::may_write_slot;
use fence_core::config::MAX_TTL_MS;
use fence_core::error::{FenceError, UNBLOCKED_NOT_MASTER, WRONGTYPE};
use fence_core::stats;
use fence_core::waitq::{
    decide_hand_off, decide_recheck, HandOff, KeyId, KeyState, PendingRecheck, Recheck, Server,
    WaitQueues,
};
use redis_module::raw;

use super::grant;
use crate::ffi::blocked::{self, BlockHandler, BlockedClient};
use crate::ffi::events::{self, EventKind, KeyspaceHandler, ServerEvent, ServerEventHandler};
use crate::ffi::timer::{self, Timer, TimerHandler};
use crate::ffi::{Ctx, Key, Kind, Owner, RStr, Reply};

thread_local! {
    // Redis calls commands, timers and notifications on its main thread only.
    static WAITS: RefCell<WaitQueues<BlockedClient>> = RefCell::new(WaitQueues::default());
    static RECHECK_SEQ: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` on the queues. Borrows are never held across a call into Redis, so the borrow
/// cannot fail; if it ever did, the caller gets `None` and does nothing.
fn with<R>(f: impl FnOnce(&mut WaitQueues<BlockedClient>) -> R) -> Option<R> {
    WAITS.with(|w| w.try_borrow_mut().ok().map(|mut w| f(&mut w)))
}

/// What a waiter is finally told.
pub enum Outcome {
    Granted(u64),
    TimedOut,
    WrongType,
    /// The key's slot left this node while the client waited.
    Moved,
    /// Refused at grant time (a lowered `fence.max-ttl-ms`, an exhausted token clock).
    Refused(FenceError),
    /// This server stopped being a master while the client waited.
    NotMaster,
}

/// The reply to a waiter whose key's slot moved away: cluster clients retry on `TRYAGAIN`.
const MOVED: &str =
    "TRYAGAIN the lock's hash slot left this node while waiting; retry LOCK.ACQUIRE";

fn now_ms() -> i64 {
    i64::try_from(now_us() / 1000).unwrap_or(i64::MAX)
}

/// The key `name` in the context's selected database.
pub fn key_id(ctx: &Ctx<'_>, name: &[u8]) -> KeyId {
    KeyId::new(ctx.selected_db(), name)
}

/// Whether any client waits for any key: the fast path that spares commands the key copy
/// and lookup when nobody uses `WAIT`.
pub fn anybody_waits() -> bool {
    with(|q| !q.is_empty()).unwrap_or(false)
}

/// How many clients wait for the key `name` in the context's database.
pub fn waiters_for(ctx: &Ctx<'_>, name: &[u8]) -> usize {
    if !anybody_waits() {
        return 0;
    }
    waiters(&key_id(ctx, name))
}

fn waiters(key: &KeyId) -> usize {
    with(|q| q.len(key)).unwrap_or(0)
}

/// How many clients wait, over every key.
pub fn total_waiters() -> usize {
    with(|q| q.total()).unwrap_or(0)
}

/// The waiters' blocked clients.
struct Waiters;

impl BlockHandler for Waiters {
    type Outcome = Outcome;

    fn reply(ctx: &Ctx<'_>, outcome: Option<&Outcome>) {
        match outcome {
            Some(Outcome::Granted(token)) => ctx.reply(&crate::ffi::ctx::token_reply(*token)),
            Some(Outcome::WrongType) => ctx.reply_error(WRONGTYPE),
            Some(Outcome::Moved) => ctx.reply_error(MOVED),
            Some(Outcome::Refused(e)) => ctx.reply_error(&e.message()),
            Some(Outcome::NotMaster) => ctx.reply_error(UNBLOCKED_NOT_MASTER),
            Some(Outcome::TimedOut) | None => ctx.reply(&Reply::Nil),
        }
    }

    fn unblocked_by_redis(ctx: &Ctx<'_>, client: BlockedClient) {
        forget(ctx, client);
    }

    fn disconnected(ctx: &Ctx<'_>, client: BlockedClient) {
        forget(ctx, client);
    }
}

/// Drops a waiter that went away (disconnected, unblocked by Redis); Redis still needs the
/// handle unblocked to free it.
fn forget(ctx: &Ctx<'_>, client: BlockedClient) {
    if let Some(Some((_, w))) = with(|q| q.remove_by(|h| *h == client)) {
        stop_deadline(ctx, w.timer);
        blocked::release(client);
    }
}

fn unblock(client: BlockedClient, outcome: Outcome) {
    blocked::unblock::<Waiters>(client, outcome);
}

/// A waiter's deadline: the waiter `id` of the key.
struct Deadline;

impl TimerHandler for Deadline {
    type Data = (KeyId, u64);
    fn fire(_ctx: &Ctx<'_>, (key, id): (KeyId, u64)) {
        if let Some(Some(w)) = with(|q| q.remove(&key, id)) {
            stats::WAITS_TIMED_OUT.incr();
            unblock(w.handle, Outcome::TimedOut);
        }
    }
}

fn stop_deadline(ctx: &Ctx<'_>, timer: Option<u64>) {
    if let Some(t) = timer {
        let _ = timer::stop::<Deadline>(ctx, Timer::from_id(t));
    }
}

/// Blocks the calling client until it is granted `key` or `timeout_ms` passes (0: forever).
/// `lock_expire_at` is the current holder's expiry (Unix ms, -1 if none).
pub fn block(
    ctx: &Ctx<'_>,
    key: &KeyId,
    owner: &[u8],
    ttl_ms: i64,
    timeout_ms: i64,
    lock_expire_at: i64,
) -> Result<Reply, FenceError> {
    subscribe_keyspace(ctx).map_err(|e| FenceError::Internal(e.into()))?;
    let Some((client, proof)) = blocked::block::<Waiters>(ctx) else {
        return Err(FenceError::Internal("cannot block this client".into()));
    };
    stats::WAITS_STARTED.incr();
    let Some(id) = with(|q| q.push(key, owner, ttl_ms, client)) else {
        unblock(client, Outcome::TimedOut);
        return Ok(Reply::Blocked(proof));
    };
    if timeout_ms > 0 {
        let t = timer::start::<Deadline>(ctx, timeout_ms, (key.clone(), id));
        with(|q| q.set_timer(key, id, t.id()));
    }
    if lock_expire_at >= 0 {
        ensure_recheck(ctx, key, lock_expire_at.saturating_add(1));
    } else {
        // A free key with waiters ahead (a hand-off in flight): look again at once.
        ensure_recheck(ctx, key, now_ms());
    }
    Ok(Reply::Blocked(proof))
}

/// The lock's deadline moved (a renew or re-acquire): a shorter TTL moves the hand-off to the
/// waiters earlier (setting an expiry through the API sends no keyspace event).
pub fn deadline_moved(ctx: &Ctx<'_>, name: &[u8], expire_at: i64) {
    if anybody_waits() {
        ensure_recheck(ctx, &key_id(ctx, name), expire_at.saturating_add(1));
    }
}

fn key_state(key: &Key<'_>) -> KeyState {
    match key.kind() {
        Kind::Empty => KeyState::Free,
        Kind::Lock => KeyState::Held {
            expire_at: key.expire_at_ms(),
        },
        _ => KeyState::Other,
    }
}

/// Hands `key` to its first waiter, if the key is free; `name` is the key's name.
/// Runs inside the releasing command or a timer, so the grant replicates like any other.
/// A waiter whose TTL a lowered `fence.max-ttl-ms` no longer allows gets the TTL error and the
/// next one is served; the new holder's own other queued calls are answered as re-acquires.
pub fn hand_off(ctx: &Ctx<'_>, key: &KeyId, name: RStr<'_>) {
    loop {
        let Some(Some(waiter)) = with(|q| q.pop_front(key)) else {
            return;
        };
        let mut k = Key::write(ctx, name);
        let max_ttl = MAX_TTL_MS.get();
        match decide_hand_off(key_state(&k), waiter.ttl_ms, max_ttl) {
            HandOff::RefuseTtl { max } => {
                drop(k);
                stop_deadline(ctx, waiter.timer);
                unblock(waiter.handle, Outcome::Refused(FenceError::Ttl { max }));
                continue;
            }
            HandOff::Grant => {
                let owner = Owner::Bytes(&waiter.owner);
                match grant::grant(ctx, &mut k, owner, waiter.ttl_ms) {
                    Ok((token, mut due)) => {
                        stats::WAITS_GRANTED.incr();
                        stop_deadline(ctx, waiter.timer);
                        unblock(waiter.handle, Outcome::Granted(token));
                        // The holder's own other calls, queued before it held the lock: each
                        // is the retry-safe re-acquire it would have been had it come now.
                        let same = with(|q| q.drain_owner(key, &waiter.owner)).unwrap_or_default();
                        for w in same {
                            stop_deadline(ctx, w.timer);
                            if w.ttl_ms > max_ttl {
                                let e = FenceError::Ttl { max: max_ttl };
                                unblock(w.handle, Outcome::Refused(e));
                                continue;
                            }
                            due = grant::extend(ctx, &mut k, owner, token, w.ttl_ms);
                            ctx.notify(c"lock.acquire", name);
                            stats::REACQUIRES.incr();
                            stats::WAITS_GRANTED.incr();
                            unblock(w.handle, Outcome::Granted(token));
                        }
                        drop(k);
                        if due >= 0 {
                            ensure_recheck(ctx, key, due.saturating_add(1));
                        }
                    }
                    Err(e) => {
                        // No token can be issued (the clock is at its ceiling): nobody can be
                        // served, so every waiter of the key is told why.
                        drop(k);
                        stop_deadline(ctx, waiter.timer);
                        unblock(waiter.handle, Outcome::Refused(e.clone()));
                        fail_all(ctx, key, || Outcome::Refused(e.clone()));
                    }
                }
                return;
            }
            HandOff::Requeue => {
                let due = k.expire_at_ms();
                drop(k);
                with(|q| q.push_front(key, waiter));
                if due >= 0 {
                    ensure_recheck(ctx, key, due.saturating_add(1));
                }
                return;
            }
            HandOff::WrongType => {
                drop(k);
                stop_deadline(ctx, waiter.timer);
                unblock(waiter.handle, Outcome::WrongType);
                fail_all(ctx, key, || Outcome::WrongType);
                return;
            }
        }
    }
}

/// Ends every wait on `key` with the outcome `make` gives.
fn fail_all(ctx: &Ctx<'_>, key: &KeyId, make: impl Fn() -> Outcome) {
    for w in with(|q| q.drain(key)).unwrap_or_default() {
        stop_deadline(ctx, w.timer);
        unblock(w.handle, make());
    }
}

/// A re-check of a waited-for key: the key and the re-check's sequence number.
struct RecheckTimer;

impl TimerHandler for RecheckTimer {
    type Data = (KeyId, u64);
    fn fire(ctx: &Ctx<'_>, (key, seq): (KeyId, u64)) {
        with(|q| q.clear_recheck(&key, seq));
        recheck(ctx, &key);
    }
}

/// Makes sure `key` is looked at again no later than `due_ms` (Unix ms).
pub fn ensure_recheck(ctx: &Ctx<'_>, key: &KeyId, due_ms: i64) {
    let Some(Some(replaced)) = with(|q| q.needs_recheck(key, due_ms)) else {
        return;
    };
    if let Some(old) = replaced {
        let _ = timer::stop::<RecheckTimer>(ctx, Timer::from_id(old));
    }
    let seq = RECHECK_SEQ.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    let delay = due_ms.saturating_sub(now_ms()).max(0);
    let t = timer::start::<RecheckTimer>(ctx, delay, (key.clone(), seq));
    with(|q| {
        q.set_recheck(
            key,
            PendingRecheck {
                seq,
                timer: t.id(),
                due_ms,
            },
        )
    });
}

/// On Redis Cluster, whether this node may create `key` now (it serves the key's slot and is
/// not migrating it away). Outside a cluster: always.
fn may_create_here(ctx: &Ctx<'_>, key: &KeyId) -> bool {
    if !ctx.is_cluster() {
        return true;
    }
    ctx.cluster_view(&key.name)
        .is_some_and(|(slot, nodes)| may_write_slot(&nodes, slot))
}

/// A timer's look at a waited-for key.
fn recheck(ctx: &Ctx<'_>, key: &KeyId) {
    let server = Server {
        is_master: ctx.is_master(),
        writes_paused: ctx.writes_paused(),
    };
    let count = waiters(key);
    if count == 0 || !server.is_master {
        return;
    }
    if server.writes_paused {
        // CLIENT PAUSE WRITE, FAILOVER or a cluster manual failover: no write may happen, and
        // an expired lock is only hidden, not deleted (granting over it would break Redis's
        // keyspace). Look again shortly; the waiters keep their places.
        if let Recheck::Again(due) = decide_recheck(count, server, KeyState::Free, now_ms()) {
            ensure_recheck(ctx, key, due);
        }
        return;
    }
    ctx.select_db(key.db);
    let name = ctx.string(&key.name);
    let k = Key::write(ctx, name.as_rstr());
    let state = key_state(&k);
    drop(k);
    match decide_recheck(count, server, state, now_ms()) {
        Recheck::Nothing => {}
        Recheck::Again(due) => ensure_recheck(ctx, key, due),
        Recheck::HandOff if !may_create_here(ctx, key) => {
            // The key left with its slot (MIGRATE, resharding): granting here would create a
            // second lock where clients are now sent elsewhere. Waiters retry.
            fail_all(ctx, key, || Outcome::Moved);
        }
        Recheck::HandOff => hand_off(ctx, key, name.as_rstr()),
        Recheck::FailAll => fail_all(ctx, key, || Outcome::WrongType),
    }
}

/// Any change to a key somebody waits for: look at it again at once.
struct OnKeyspace;

impl KeyspaceHandler for OnKeyspace {
    fn on(ctx: &Ctx<'_>, _event: &[u8], key: RStr<'_>) {
        if !anybody_waits() {
            return;
        }
        let id = key_id(ctx, key.bytes());
        if waiters(&id) > 0 {
            ensure_recheck(ctx, &id, now_ms());
        }
    }
}

/// Subscribes, once, to the keyspace events that can free or retype a waited-for key. Done
/// when the first client waits, not at load, so that a server that never uses `WAIT` does not
/// pay a callback on every write of every command.
fn subscribe_keyspace(ctx: &Ctx<'_>) -> Result<(), &'static str> {
    static SUBSCRIBED: AtomicBool = AtomicBool::new(false);
    if SUBSCRIBED.load(Ordering::Relaxed) {
        return Ok(());
    }
    // Every class that can delete or overwrite a key (SUNIONSTORE, SORT … STORE, … too).
    let classes = raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_STRING
        | raw::REDISMODULE_NOTIFY_LIST
        | raw::REDISMODULE_NOTIFY_SET
        | raw::REDISMODULE_NOTIFY_HASH
        | raw::REDISMODULE_NOTIFY_ZSET
        | raw::REDISMODULE_NOTIFY_STREAM
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED;
    events::subscribe_keyspace::<OnKeyspace>(ctx, classes)?;
    SUBSCRIBED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Flushes, SWAPDB and the end of a full sync loaded beside the old data: every waited-for
/// key of a database may have changed at once.
struct OnServerEvent;

impl ServerEventHandler for OnServerEvent {
    fn on(ctx: &Ctx<'_>, event: ServerEvent<'_>) {
        let dbs: Vec<Option<i32>> = match event {
            // The values are freed without an unlink: a restored token counts first.
            ServerEvent::Flush { start: true, .. } => {
                super::tokens::settle();
                return;
            }
            ServerEvent::Flush { start: false, db } => vec![(db >= 0).then_some(db)],
            ServerEvent::SwapDb(a, b) => vec![Some(a), Some(b)],
            ServerEvent::AsyncLoadCompleted => vec![None],
            ServerEvent::NowReplica => {
                end_waits_on_replica(ctx);
                return;
            }
            ServerEvent::ConfigChange(_)
            | ServerEvent::BecameMaster
            | ServerEvent::LoadingEnded
            | ServerEvent::Other => return,
        };
        for db in dbs {
            for key in with(|q| q.keys(db)).unwrap_or_default() {
                ensure_recheck(ctx, &key, now_ms());
            }
        }
    }
}

/// This server became a replica: nothing can be granted here any more, so every waiter still
/// queued is told so, with the error Redis itself sends its blocked clients at that moment.
/// Redis has by then answered them all (its own `UNBLOCKED`, and the disconnect callback took
/// them out of the queues), so this finds nobody there; Valkey 9 in cluster mode leaves module
/// clients blocked through a failover, and without this they would wait out their timeout and
/// be answered nil, a "timed out" that hides the failover.
fn end_waits_on_replica(ctx: &Ctx<'_>) {
    let keys = with(|q| q.keys(None)).unwrap_or_default();
    if keys.is_empty() {
        return;
    }
    let mut ended = 0usize;
    for key in keys {
        ended += waiters(&key);
        fail_all(ctx, &key, || Outcome::NotMaster);
    }
    ctx.log(
        "notice",
        &format!("fence: now a replica: {ended} waiting LOCK.ACQUIRE call(s) answered UNBLOCKED"),
    );
}

/// Subscribes to the server events that free or replace every waited-for key of a database,
/// and to the change of role that ends every wait.
pub fn subscribe(ctx: &Ctx<'_>) -> Result<(), String> {
    for kind in [
        EventKind::Flush,
        EventKind::SwapDb,
        EventKind::AsyncLoad,
        EventKind::RoleChanged,
    ] {
        events::subscribe_server::<OnServerEvent>(ctx, kind).map_err(String::from)?;
    }
    Ok(())
}
