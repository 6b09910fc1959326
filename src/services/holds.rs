//! Holds that give their units back by themselves (`STOCK.DEDUCT … HOLD ms`): the module's
//! index of stocks with holds, its one timer, and the applying of expiries (units back, the
//! effect replicated, the `expire` stream event, the `stock.expire` keyspace event).
//!
//! - **The index** is a min-heap of (due, uid, db, name): one live entry per stock that has
//!   holds, at its earliest deadline. It is checked lazily: an entry whose key no longer holds
//!   the same stock (deleted, renamed away, flushed, replaced) or is not the stock's live entry
//!   (`Tracking::indexed_due`) is dropped when it comes up. A stock that moves is indexed again
//!   under its new name by the keyspace event that moved it (`rename_to`, `move_to`,
//!   `copy_to`, `restore`, `loaded`), and `SWAPDB` swaps the databases of the entries.
//! - **The timer** (one for the module) fires at the earliest due entry. Each firing works for
//!   at most `TICK_BUDGET`, then lets the event loop serve clients and fires again.
//! - **Who expires**: only a master whose writes are not paused (as Redis's own active expiry).
//!   A replica applies the master's `FENCE.ENTRY … expired` effects, and its reads show due
//!   holds as returned (`Stock::view`) without writing. A replica promoted to master, and a
//!   server that finished loading, start at once.
//! - **Commands** that change a stock first return its due holds (up to `COMMAND_BUDGET`, more
//!   when a deduction needs their units), so their decision and reply see the stock as it is.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fence_core::args::Decimal;
use fence_core::cart::buyer_due;
use fence_core::clock::now_us;
use fence_core::stats;
use fence_core::stock::{ExpireStream, Expired, Stock};
use redis_module::raw;

use super::streams::{Batch, Stream};
use crate::ffi::events::{self, EventKind, KeyspaceHandler, ServerEvent, ServerEventHandler};
use crate::ffi::timer::{self, Timer, TimerHandler};
use crate::ffi::{Ctx, Key, Kind, RStr};

/// The longest a timer firing works before it lets clients be served.
const TICK_BUDGET: Duration = Duration::from_millis(2);
/// Holds returned between two looks at the clock.
const BATCH: usize = 64;
/// Due holds a command returns before its own work (more when a deduction needs their units).
const COMMAND_BUDGET: usize = 1000;
/// The longest the timer is armed for.
const MAX_TIMER_DELAY_MS: u64 = 3_600_000;
/// How soon a master whose writes are paused looks again.
const PAUSED_RETRY_MS: u64 = 100;

/// Unix milliseconds.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// One stock in the index.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Indexed {
    due: u64,
    uid: u64,
    db: i32,
    name: Vec<u8>,
}

thread_local! {
    static INDEX: RefCell<BinaryHeap<Reverse<Indexed>>> = const { RefCell::new(BinaryHeap::new()) };
    /// The running timer: its id and when it fires (Unix ms).
    static TIMER: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
    static NEXT_UID: Cell<u64> = const { Cell::new(1) };
    /// A stock with holds was just loaded (RDB, RESTORE): the next `loaded`/`restore` event
    /// indexes it.
    static LOADED_HOLDS: Cell<bool> = const { Cell::new(false) };
    /// Stocks with holds loaded where their key could not be opened yet: a full sync loaded
    /// beside the old data (`repl-diskless-load swapdb`), whose `loaded` events name keys of
    /// databases not yet swapped in. Indexed when that load completes.
    static PENDING: RefCell<Vec<(i32, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

fn with_index<R>(f: impl FnOnce(&mut BinaryHeap<Reverse<Indexed>>) -> R) -> Option<R> {
    INDEX.with(|i| i.try_borrow_mut().ok().map(|mut i| f(&mut i)))
}

/// Whether this server may return holds now: a master that is not loading and whose writes
/// are not paused.
pub fn may_expire(ctx: &Ctx<'_>) -> bool {
    ctx.is_master() && !ctx.is_loading() && !ctx.writes_paused()
}

/// Puts `stock` (named `name` in the selected database) in the index at its earliest
/// deadline, unless it is there already at that time or earlier. `moved`: the stock is under
/// a new name or database (its old entry no longer finds it).
pub fn track(ctx: &Ctx<'_>, name: &[u8], stock: &Stock, moved: bool) {
    let Some(due) = stock.earliest_slot() else {
        return;
    };
    let t = &stock.tracking;
    if t.uid.get() == 0 {
        t.uid.set(NEXT_UID.with(|n| {
            let uid = n.get();
            n.set(uid + 1);
            uid
        }));
    }
    let current = t.indexed_due.get();
    if !moved && current != 0 && current <= due {
        return;
    }
    t.indexed_due.set(due);
    let entry = Indexed {
        due,
        uid: t.uid.get(),
        db: ctx.selected_db(),
        name: name.to_vec(),
    };
    with_index(|i| i.push(Reverse(entry)));
    subscribe_moves(ctx);
    arm(ctx, due);
}

/// Makes sure the timer fires no later than `due` (Unix ms).
fn arm(ctx: &Ctx<'_>, due: u64) {
    if let Some((id, at)) = TIMER.with(Cell::get) {
        if at <= due {
            return;
        }
        let _ = timer::stop::<Tick>(ctx, Timer::from_id(id));
    }
    // At most an hour ahead: a firing with nothing due arms again, and Redis's own timer
    // arithmetic never meets a far-off time.
    let delay = due.saturating_sub(now_ms()).min(MAX_TIMER_DELAY_MS);
    let t = timer::start::<Tick>(ctx, i64::try_from(delay).unwrap_or(i64::MAX), ());
    TIMER.with(|c| c.set(Some((t.id(), now_ms().saturating_add(delay)))));
}

/// Arms the timer for the earliest entry of the index, if any.
fn arm_next(ctx: &Ctx<'_>) {
    if let Some(due) = with_index(|i| i.peek().map(|e| e.0.due)).flatten() {
        arm(ctx, due);
    }
}

struct Tick;

impl TimerHandler for Tick {
    type Data = ();
    fn fire(ctx: &Ctx<'_>, _data: ()) {
        TIMER.with(|c| c.set(None));
        run(ctx);
    }
}

/// One firing of the timer: returns due holds for at most `TICK_BUDGET`.
fn run(ctx: &Ctx<'_>) {
    let start = Instant::now();
    expire_for_a_while(ctx, start);
    let ms = i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX);
    timer::latency_sample(c"fence-expire-cycle", ms);
}

/// The work of one firing: returns due holds until none is due or `TICK_BUDGET` has passed
/// since `start`, and arms the timer for what is left.
fn expire_for_a_while(ctx: &Ctx<'_>, start: Instant) {
    if !ctx.is_master() {
        // A replica never decides an expiry; becoming master arms the timer again.
        return;
    }
    if ctx.writes_paused() {
        arm(ctx, now_ms() + PAUSED_RETRY_MS);
        return;
    }
    let now = now_ms();
    loop {
        let due = with_index(|i| i.peek().map(|e| e.0.due)).flatten();
        match due {
            Some(due) if due <= now => {}
            _ => break,
        }
        if start.elapsed() >= TICK_BUDGET {
            // More is due: fire again once clients have been served.
            arm(ctx, now);
            return;
        }
        if let Some(Some(Reverse(entry))) = with_index(|i| i.pop()) {
            process(ctx, entry, start, now);
        }
    }
    arm_next(ctx);
}

/// Returns the due holds of the stock an index entry names, if the entry is still its live one.
fn process(ctx: &Ctx<'_>, entry: Indexed, start: Instant, now: u64) {
    ctx.select_db(entry.db);
    let name = ctx.string(&entry.name);
    let name = name.as_rstr();
    let mut key = Key::write(ctx, name);
    if key.kind() != Kind::Stock {
        return;
    }
    let Some(stock) = key.stock_mut() else {
        return;
    };
    let t = &stock.tracking;
    if t.uid.get() != entry.uid || t.indexed_due.get() != entry.due {
        return;
    }
    t.indexed_due.set(0);
    loop {
        let Some(stock) = key.stock_mut() else {
            return;
        };
        let expired = stock.expire_due(now, BATCH);
        if expired.is_empty() {
            break;
        }
        apply(ctx, name, &mut key, expired);
        if start.elapsed() >= TICK_BUDGET {
            break;
        }
    }
    if let Some(stock) = key.stock() {
        track(ctx, &entry.name, stock, false);
    }
}

/// Before a command changes the stock in `key`: returns its due holds (up to
/// `COMMAND_BUDGET`, and then as many more as it takes to make `need` units available), when
/// this server may.
pub fn before_write(ctx: &Ctx<'_>, name: RStr<'_>, key: &mut Key<'_>, need: Option<i64>) {
    let Some(stock) = key.stock_mut() else {
        return;
    };
    if !stock.has_holds() {
        return;
    }
    let now = now_ms();
    if !stock.has_due(now) || !may_expire(ctx) {
        return;
    }
    let mut expired = stock.expire_due(now, COMMAND_BUDGET);
    if let Some(need) = need {
        while stock.available < need && stock.has_due(now) {
            expired.extend(stock.expire_due(now, BATCH));
        }
    }
    apply(ctx, name, key, expired);
    if let Some(stock) = key.stock() {
        track(ctx, name.bytes(), stock, false);
    }
}

/// Before `STOCK.CONFIRM` or `STOCK.REFUND` decides on request `id`: returns its hold if it is
/// due, when this server may.
pub fn before_decision(ctx: &Ctx<'_>, name: RStr<'_>, key: &mut Key<'_>, id: &[u8]) {
    let Some(stock) = key.stock_mut() else {
        return;
    };
    if !stock.has_holds() || !may_expire(ctx) {
        return;
    }
    if let Some(e) = stock.expire_if_due(id, now_ms()) {
        apply(ctx, name, key, vec![e]);
    }
}

/// Before a deduction for `buyer` is decided (after `before_write`, and before the call's own
/// `EVENTS` stream is opened): on a stock with a limit, the buyer's holds still due after the
/// first step come back too (`fence_core::cart::buyer_due`), when this server may.
pub fn before_buyer(ctx: &Ctx<'_>, key: &mut Key<'_>, buyer: &[u8]) {
    // Every BUYER deduction passes here: the cheap checks first (no limit, or no hold at all,
    // is the common case), the server's state and the clock only then.
    if key.stock().is_none_or(|s| s.limit == 0 || !s.has_holds()) || !may_expire(ctx) {
        return;
    }
    let now = now_ms();
    let Some(expired) = key.stock_mut().map(|s| buyer_due(s, buyer, now)) else {
        return;
    };
    if expired.is_empty() {
        return;
    }
    let name = key.name();
    apply(ctx, name, key, expired);
    if let Some(stock) = key.stock() {
        track(ctx, name.bytes(), stock, false);
    }
}

/// Announces returned holds: each one's effect (`FENCE.ENTRY … expired`), the `expire` events
/// of holds made with `EVENTS` (dropped and counted when the stream cannot take them; the
/// units are back all the same), `stock.expire`, and the counter.
fn apply(ctx: &Ctx<'_>, name: RStr<'_>, key: &mut Key<'_>, expired: Vec<Expired>) {
    if expired.is_empty() {
        return;
    }
    let Some(stock) = key.stock() else {
        return;
    };
    let available = stock.available;
    for e in &expired {
        ctx.replicate(name, &stock.entry_effect(&e.id, e.value).encode(), None);
    }
    let announced = expired.iter().filter(|e| e.value.events).count();
    if announced > 0 {
        match stock.expire_stream.clone() {
            Some(stream) => expire_events(ctx, name, &stream, &expired, available),
            None => {
                for _ in 0..announced {
                    stats::EXPIRE_EVENTS_DROPPED.incr();
                }
            }
        }
    }
    key.signal_modified();
    ctx.notify(c"stock.expire", name);
    for _ in 0..expired.len() {
        stats::HOLDS_EXPIRED.incr();
    }
}

/// The `expire` events of returned holds made with `EVENTS`: `type=expire sku id quantity
/// remaining`, `remaining` as it was right after each one came back.
fn expire_events(
    ctx: &Ctx<'_>,
    sku: RStr<'_>,
    target: &ExpireStream,
    expired: &[Expired],
    available_after: i64,
) {
    let announced: Vec<&Expired> = expired.iter().filter(|e| e.value.events).collect();
    let drop_all = || {
        for _ in 0..announced.len() {
            stats::EXPIRE_EVENTS_DROPPED.incr();
        }
    };
    let stream_name = ctx.string(&target.key);
    let Ok(mut stream) = Stream::open(ctx, stream_name.as_rstr(), target.maxlen) else {
        drop_all();
        return;
    };
    if !stream.has_room(ctx, announced.len() as u64) {
        drop_all();
        return;
    }
    // What was available before this batch came back, then each return in turn.
    let total = expired
        .iter()
        .fold(0i64, |t, e| t.saturating_add(e.value.quantity));
    let mut remaining = available_after.saturating_sub(total);
    let mut batch = Batch::new();
    for e in expired {
        remaining = remaining.saturating_add(e.value.quantity);
        if !e.value.events {
            continue;
        }
        let (q, r) = (Decimal::new(e.value.quantity), Decimal::new(remaining));
        let fields: [(&[u8], &[u8]); 5] = [
            (b"type", b"expire"),
            (b"sku", sku.bytes()),
            (b"id", &e.id),
            (b"quantity", q.as_bytes()),
            (b"remaining", r.as_bytes()),
        ];
        if stream.add(ctx, &mut batch, &fields).is_err() {
            stats::EXPIRE_EVENTS_DROPPED.incr();
        }
    }
    stream.publish(ctx, batch);
}

/// The stock type's load callback: a stock with holds was loaded; the `loaded` or `restore`
/// event that follows indexes it.
pub fn loaded(stock: &Stock) {
    if stock.earliest_slot().is_some() {
        LOADED_HOLDS.with(|l| l.set(true));
        // `restore` is a generic event: subscribe now if no hold was indexed before.
        if !SUBSCRIBED.load(Ordering::Relaxed)
            && events::subscribe_keyspace_detached::<OnKeyspace>(raw::REDISMODULE_NOTIFY_GENERIC)
                .is_ok()
        {
            SUBSCRIBED.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether the generic keyspace events are subscribed.
static SUBSCRIBED: AtomicBool = AtomicBool::new(false);

/// Keyspace events that put a stock under a (new) name: index it there.
struct OnKeyspace;

impl KeyspaceHandler for OnKeyspace {
    fn on(ctx: &Ctx<'_>, event: &[u8], key: RStr<'_>) {
        let load = matches!(event, b"loaded" | b"restore");
        if load && !LOADED_HOLDS.with(|l| l.replace(false)) {
            return;
        }
        if !load && !matches!(event, b"rename_to" | b"move_to" | b"copy_to") {
            return;
        }
        // The key name of a `loaded` event lives on Redis's stack (rdbLoad's static string):
        // RM_OpenKey retains its name, and Redis panics on retaining a stack object ("You tried
        // to retain an object allocated in the stack"). The key is opened by a copy.
        if load && ctx.is_async_loading() {
            // The key is not in the keyspace yet (the old data's may be): index it once the
            // load has replaced the old data.
            let pending = (ctx.selected_db(), key.bytes().to_vec());
            PENDING.with(|p| p.borrow_mut().push(pending));
            return;
        }
        let name = ctx.string(key.bytes());
        let k = Key::read(ctx, name.as_rstr());
        if let Some(stock) = k.stock() {
            track(ctx, key.bytes(), stock, true);
        }
    }
}

/// Subscribes, once, to the events that move a key (`rename_to`, `move_to`, `copy_to`,
/// `restore`): done when the first stock with holds is indexed, so a server that never holds
/// pays no callback on its generic commands.
fn subscribe_moves(ctx: &Ctx<'_>) {
    if SUBSCRIBED.load(Ordering::Relaxed) {
        return;
    }
    if events::subscribe_keyspace::<OnKeyspace>(ctx, raw::REDISMODULE_NOTIFY_GENERIC).is_ok() {
        SUBSCRIBED.store(true, Ordering::Relaxed);
    }
}

/// `SWAPDB`, a promotion to master, the end of a load.
struct OnServerEvent;

impl ServerEventHandler for OnServerEvent {
    fn on(ctx: &Ctx<'_>, event: ServerEvent<'_>) {
        match event {
            ServerEvent::SwapDb(a, b) => {
                with_index(|i| {
                    let entries = std::mem::take(i).into_vec();
                    for Reverse(mut e) in entries {
                        if e.db == a {
                            e.db = b;
                        } else if e.db == b {
                            e.db = a;
                        }
                        i.push(Reverse(e));
                    }
                });
            }
            ServerEvent::AsyncLoadCompleted => {
                for (db, key) in PENDING.with(|p| std::mem::take(&mut *p.borrow_mut())) {
                    ctx.select_db(db);
                    let name = ctx.string(&key);
                    let k = Key::read(ctx, name.as_rstr());
                    if let Some(stock) = k.stock() {
                        track(ctx, &key, stock, true);
                    }
                }
                arm_next(ctx);
            }
            ServerEvent::BecameMaster | ServerEvent::LoadingEnded => arm_next(ctx),
            _ => {}
        }
    }
}

/// Subscribes at load: `loaded` keyspace events (a stock with holds loaded from an RDB), and
/// the server events above. `restore` and the moves are subscribed when first needed.
pub fn subscribe(ctx: &Ctx<'_>) -> Result<(), String> {
    events::subscribe_keyspace::<OnKeyspace>(ctx, raw::REDISMODULE_NOTIFY_LOADED)
        .map_err(String::from)?;
    for kind in [
        EventKind::SwapDb,
        EventKind::RoleChanged,
        EventKind::Loading,
        EventKind::AsyncLoad,
    ] {
        events::subscribe_server::<OnServerEvent>(ctx, kind).map_err(String::from)?;
    }
    Ok(())
}
