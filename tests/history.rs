//! A history checker: many real clients issue random LOCK.* and STOCK.* commands against a few
//! keys, every call's invocation time, response time and result is recorded, and the history
//! is checked.
//!
//! - Stocks (no clocks involved): a Wing–Gong search with memoization (Lowe's variant) looks
//!   for an order of the operations that respects real time (an operation that returned before
//!   another was sent comes first) and explains every result against a sequential model of the
//!   contract (available, fence, deducted, ledger). Each key's history is kept small (at most
//!   `STOCK_OPS_PER_KEY` operations plus a final snapshot of the whole state), and many
//!   independent histories are checked.
//! - Locks (TTLs of 5–50 ms, so leases expire mid-run; `WAIT` of 1–5 ms): invariants that need
//!   no shared clock: a token seen by a reply that arrived before another token was first sent
//!   is the smaller one (server-wide); no token has two owners or two keys; per client (one
//!   owner, one connection, so its calls are sequential) renew and release succeed only for the
//!   lease it holds; `WAIT t` never answers nil before t ms; and per key, the intervals in which
//!   each lease is *known* to be held never overlap by more than `CLOCK_ALLOWANCE_NS`. A lease
//!   is known held from the first reply showing its token until the invocation of its
//!   successful release or, when it was not released, until the invocation of the last call
//!   that set its TTL plus that TTL (and at least until the invocation of any call that saw it).
//! - Always: stock never negative; initial + added == available + the deductions still held
//!   (non-ID successes + ledger entries); `deducted` in STOCK.INFO agrees; a request id holds
//!   at most one deduction.
//!
//! After each round's random calls, a short fixed sequence of lock calls on a key of its own
//! (`scripted_leases`) joins the history, so that the doctored histories every round must see
//! rejected always have their material, whatever the machine's speed.
//!
//! `FENCE_HISTORY_SEED` sets the seed of the random choices (timing is not reproducible).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::{Connection, Value};

/// Client threads, each with its own connection and its own lock owner name.
const CLIENTS: usize = 40;
/// Independent histories (rounds); each uses fresh keys.
const ROUNDS: usize = 20;
/// How long each round issues lock operations.
const ROUND_MS: u64 = 250;
/// Stock keys per round, and operations per stock key (plus a final snapshot).
const STOCK_KEYS: usize = 4;
const STOCK_OPS_PER_KEY: i64 = 59;
/// Request ids per stock key (a small pool, so replays and refunds happen).
const IDS: usize = 6;
/// Synthetic fencing tokens per round (base + 0..FENCES), so STALE happens.
const FENCES: u64 = 4;
/// Lock keys per round.
const LOCK_KEYS: usize = 4;
/// The clock error allowed between the client's monotonic clock and the server's expiry.
const CLOCK_ALLOWANCE_NS: u64 = 2_000_000;
/// Search nodes allowed per stock history before the search gives up (a failure).
const SEARCH_BUDGET: usize = 20_000_000;

// ---------------------------------------------------------------------------------------------
// Stock histories and the sequential model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StockCall {
    Get,
    Add(i64),
    Deduct {
        q: i64,
        id: Option<usize>,
        fence: Option<u64>,
    },
    Refund(usize),
    Request(usize),
    /// The final state read after every other operation returned: STOCK.INFO and a
    /// STOCK.REQUEST of every id of the pool.
    Snapshot {
        available: i64,
        fence: u64,
        deducted: i64,
        requests: i64,
        ledger: [i64; IDS],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StockRet {
    Int(i64),
    Nil,
    /// `STALE fencing token <t> is below the highest accepted token <h>`: h.
    Stale(u64),
    /// The snapshot's own "result" (compared inside the model).
    Snapshot,
}

#[derive(Debug, Clone, Copy)]
struct StockOp {
    /// Which client sent it (shown when a history fails).
    #[allow(dead_code)]
    client: usize,
    call: StockCall,
    ret: StockRet,
    /// Nanoseconds since the round started: request about to be sent, reply received.
    inv: u64,
    resp: u64,
}

/// The contract's sequential model of one stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Model {
    available: i64,
    fence: u64,
    deducted: i64,
    /// Per id of the pool: -1 unknown, 0 refunded, else the quantity held.
    ledger: [i64; IDS],
}

impl Model {
    fn new(available: i64) -> Model {
        Model {
            available,
            fence: 0,
            deducted: 0,
            ledger: [-1; IDS],
        }
    }

    /// Applies `call`; returns the result the contract demands (None for a snapshot that does
    /// not match) and the next state.
    fn apply(&self, call: &StockCall) -> (Option<StockRet>, Model) {
        let mut next = *self;
        let ret = match *call {
            StockCall::Get => StockRet::Int(self.available),
            StockCall::Add(q) => {
                next.available += q;
                StockRet::Int(next.available)
            }
            StockCall::Deduct { q, id, fence } => {
                if let Some(t) = fence {
                    if t < self.fence {
                        return (Some(StockRet::Stale(self.fence)), next);
                    }
                }
                if let Some(id) = id {
                    if self.ledger[id] >= 0 {
                        return (Some(StockRet::Int(self.available)), next);
                    }
                }
                if self.available < q {
                    return (Some(StockRet::Nil), next);
                }
                next.available -= q;
                next.deducted += q;
                if let Some(t) = fence {
                    next.fence = t;
                }
                if let Some(id) = id {
                    next.ledger[id] = q;
                }
                StockRet::Int(next.available)
            }
            StockCall::Refund(id) => {
                let held = self.ledger[id];
                if held <= 0 {
                    StockRet::Int(0)
                } else {
                    next.available += held;
                    next.deducted -= held;
                    next.ledger[id] = 0;
                    StockRet::Int(held)
                }
            }
            StockCall::Request(id) => match self.ledger[id] {
                -1 => StockRet::Nil,
                held => StockRet::Int(held),
            },
            StockCall::Snapshot {
                available,
                fence,
                deducted,
                requests,
                ledger,
            } => {
                let known = self.ledger.iter().filter(|&&h| h >= 0).count() as i64;
                let same = available == self.available
                    && fence == self.fence
                    && deducted == self.deducted
                    && requests == known
                    && ledger == self.ledger;
                return (same.then_some(StockRet::Snapshot), next);
            }
        };
        (Some(ret), next)
    }
}

/// Searches for a linearization of `ops` (at most 64) from `initial`; the witness order on
/// success, a description on failure.
fn linearize(initial: Model, ops: &[StockOp]) -> Result<Vec<usize>, String> {
    assert!(
        ops.len() <= 64,
        "a history of {} operations is too long",
        ops.len()
    );
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| ops[i].inv);
    let sorted: Vec<StockOp> = order.iter().map(|&i| ops[i]).collect();
    let full: u64 = if ops.len() == 64 {
        u64::MAX
    } else {
        (1u64 << ops.len()) - 1
    };
    struct Search<'a> {
        ops: &'a [StockOp],
        full: u64,
        seen: HashSet<(u64, Model)>,
        path: Vec<usize>,
        nodes: usize,
        deepest: Vec<usize>,
    }
    impl Search<'_> {
        fn go(&mut self, done: u64, state: Model) -> Result<bool, ()> {
            if done == self.full {
                return Ok(true);
            }
            self.nodes += 1;
            if self.nodes > SEARCH_BUDGET {
                return Err(());
            }
            if !self.seen.insert((done, state)) {
                return Ok(false);
            }
            if self.path.len() > self.deepest.len() {
                self.deepest = self.path.clone();
            }
            // The next operation must have been invoked before every pending one returned.
            let min_resp = (0..self.ops.len())
                .filter(|&i| done & (1 << i) == 0)
                .map(|i| self.ops[i].resp)
                .min()
                .unwrap_or(u64::MAX);
            for i in 0..self.ops.len() {
                if done & (1 << i) != 0 {
                    continue;
                }
                if self.ops[i].inv > min_resp {
                    break; // sorted by invocation: nothing later qualifies
                }
                let (want, next) = state.apply(&self.ops[i].call);
                if want != Some(self.ops[i].ret) {
                    continue;
                }
                self.path.push(i);
                if self.go(done | (1 << i), next)? {
                    return Ok(true);
                }
                self.path.pop();
            }
            Ok(false)
        }
    }
    let mut search = Search {
        ops: &sorted,
        full,
        seen: HashSet::new(),
        path: Vec::new(),
        nodes: 0,
        deepest: Vec::new(),
    };
    match search.go(0, initial) {
        Ok(true) => Ok(search.path.iter().map(|&i| order[i]).collect()),
        Ok(false) => {
            let mut state = initial;
            for &i in &search.deepest {
                state = state.apply(&sorted[i].call).1;
            }
            let stuck: Vec<String> = (0..sorted.len())
                .filter(|i| !search.deepest.contains(i))
                .take(6)
                .map(|i| format!("{:?}", sorted[i]))
                .collect();
            Err(format!(
                "no linearization ({} nodes searched); the longest explained prefix has {} of \
                 {} operations, ending in state {state:?}; first unexplained: {stuck:#?}",
                search.nodes,
                search.deepest.len(),
                sorted.len()
            ))
        }
        Err(()) => Err(format!(
            "search budget of {SEARCH_BUDGET} nodes exhausted: the history cannot be decided"
        )),
    }
}

/// Checks one stock key's history: never negative, conservation against the snapshot, and a
/// linearization. `initial` is the quantity STOCK.SET opened it with.
fn check_stock(initial: i64, ops: &[StockOp]) -> Result<(), String> {
    let snapshot = ops
        .iter()
        .find_map(|op| match op.call {
            StockCall::Snapshot {
                available,
                deducted,
                ledger,
                ..
            } => Some((available, deducted, ledger)),
            _ => None,
        })
        .ok_or("the history has no final snapshot")?;
    let mut added = 0;
    let mut plain_deducted = 0;
    for op in ops {
        match (op.call, op.ret) {
            (StockCall::Get | StockCall::Add(_) | StockCall::Deduct { .. }, StockRet::Int(n))
                if n < 0 =>
            {
                return Err(format!("a negative stock: {op:?}"));
            }
            (StockCall::Add(q), StockRet::Int(_)) => added += q,
            (StockCall::Deduct { q, id: None, .. }, StockRet::Int(_)) => plain_deducted += q,
            _ => {}
        }
    }
    let (available, deducted, ledger) = snapshot;
    // A request id holds at most one deduction: what the ledger holds for it is 0 (refunded),
    // unknown, or the quantity of one of the calls made with it.
    for (id, &held) in ledger.iter().enumerate() {
        let asked: Vec<i64> = ops
            .iter()
            .filter_map(|op| match op.call {
                StockCall::Deduct { q, id: Some(i), .. } if i == id => Some(q),
                _ => None,
            })
            .collect();
        if held > 0 && !asked.contains(&held) {
            return Err(format!(
                "request id {id} holds {held}, which no call with it asked for ({asked:?})"
            ));
        }
    }
    let held: i64 = ledger.iter().filter(|&&h| h > 0).sum();
    if initial + added != available + plain_deducted + held {
        return Err(format!(
            "conservation broken: initial {initial} + added {added} != available {available} + \
             deductions without id {plain_deducted} + held by request ids {held}"
        ));
    }
    if deducted != plain_deducted + held {
        return Err(format!(
            "STOCK.INFO deducted {deducted} != deductions without id {plain_deducted} + held by \
             request ids {held}"
        ));
    }
    linearize(Model::new(initial), ops).map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Lock histories and their invariants
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockCall {
    Acquire { ttl: u64, wait: Option<u64> },
    Renew { ttl: u64 },
    Release,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockRet {
    Token(u64),
    Nil,
    Released(bool),
    /// LOCK.STATUS: the holding client (owner names are `c<client>`) and its token.
    Held {
        client: usize,
        token: u64,
    },
    Free,
}

#[derive(Debug, Clone, Copy)]
struct LockOp {
    client: usize,
    key: usize,
    call: LockCall,
    ret: LockRet,
    inv: u64,
    resp: u64,
}

#[derive(Debug, Default)]
struct LockStats {
    ops: usize,
    leases: usize,
    released: usize,
    wait_grants: usize,
    wait_timeouts: usize,
    ordered_pairs: usize,
    lease_pairs: usize,
    /// The largest overlap of two same-key leases' known-held intervals (negative: a gap).
    closest_ns: i64,
}

/// What is known of one lease (one token).
#[derive(Debug, Clone)]
struct Lease {
    client: usize,
    key: usize,
    /// Earliest invocation and earliest reply of any call that showed the token.
    min_inv: u64,
    min_resp: u64,
    /// The latest invocation of a call that saw the lease (it was held then or later).
    seen_until: u64,
    /// Invocation of its last TTL-setting call plus that TTL.
    ttl_until: u64,
    /// Invocation of its successful release: the lease ended between that and the reply.
    released_at: Option<u64>,
}

impl Lease {
    /// The latest instant the lease is known to have still been held: a release ends it
    /// (after its invocation); otherwise its TTL, counted from the invocation of the last call
    /// that set it, runs out no earlier than that.
    fn held_until(&self) -> u64 {
        match self.released_at {
            Some(at) => at.max(self.seen_until),
            None => self.ttl_until.max(self.seen_until),
        }
    }
}

fn check_locks(ops: &[LockOp]) -> Result<LockStats, String> {
    let mut stats = LockStats {
        ops: ops.len(),
        closest_ns: i64::MIN,
        ..LockStats::default()
    };
    let mut leases: HashMap<u64, Lease> = HashMap::new();
    // Every sighting of a token: its owner and key must never change.
    let mut see = |token: u64, client: usize, op: &LockOp| -> Result<(), String> {
        let lease = leases.entry(token).or_insert(Lease {
            client,
            key: op.key,
            min_inv: op.inv,
            min_resp: op.resp,
            seen_until: 0,
            ttl_until: 0,
            released_at: None,
        });
        if lease.client != client || lease.key != op.key {
            return Err(format!(
                "token {token} was handed to two owners or keys: client {} on key {} and \
                 client {client} on key {} ({op:?})",
                lease.client, lease.key, op.key
            ));
        }
        lease.min_inv = lease.min_inv.min(op.inv);
        lease.min_resp = lease.min_resp.min(op.resp);
        // Any call that saw the lease proves it was held when that call was invoked or later.
        lease.seen_until = lease.seen_until.max(op.inv);
        Ok(())
    };
    for op in ops {
        match op.ret {
            LockRet::Token(t) => see(t, op.client, op)?,
            LockRet::Held { client, token } => see(token, client, op)?,
            _ => {}
        }
    }
    // Per client and key, in program order: what the client holds.
    let mut by_client: Vec<&LockOp> = ops.iter().collect();
    by_client.sort_by_key(|op| (op.client, op.key, op.inv));
    let mut current: HashMap<(usize, usize), Option<u64>> = HashMap::new();
    for op in by_client {
        let cur = current.entry((op.client, op.key)).or_insert(None);
        match (op.call, op.ret) {
            (LockCall::Acquire { ttl, wait }, LockRet::Token(t)) => {
                if wait.is_some() && *cur != Some(t) {
                    stats.wait_grants += 1;
                }
                let lease = leases.get_mut(&t).expect("seen above");
                lease.ttl_until = op.inv + ttl * 1_000_000;
                *cur = Some(t);
            }
            (LockCall::Acquire { wait, .. }, LockRet::Nil) => {
                if let Some(w) = wait {
                    stats.wait_timeouts += 1;
                    let waited = op.resp - op.inv;
                    if waited + 1_000_000 < w * 1_000_000 {
                        return Err(format!(
                            "WAIT {w} answered nil after only {} µs: {op:?}",
                            waited / 1000
                        ));
                    }
                }
                *cur = None;
            }
            (LockCall::Renew { ttl }, LockRet::Token(t)) => {
                if *cur != Some(t) {
                    return Err(format!(
                        "client {} renewed token {t} while its own lease is {cur:?}: {op:?}",
                        op.client
                    ));
                }
                let lease = leases.get_mut(&t).expect("seen above");
                lease.ttl_until = op.inv + ttl * 1_000_000;
            }
            (LockCall::Renew { .. }, LockRet::Nil) => *cur = None,
            (LockCall::Release, LockRet::Released(true)) => {
                let Some(t) = *cur else {
                    return Err(format!(
                        "client {} released a lock it was not holding: {op:?}",
                        op.client
                    ));
                };
                let lease = leases.get_mut(&t).expect("seen above");
                lease.released_at = Some(op.inv);
                *cur = None;
            }
            (LockCall::Release, LockRet::Released(false)) => *cur = None,
            (LockCall::Status, LockRet::Held { client, token }) => {
                if client == op.client && *cur != Some(token) {
                    return Err(format!(
                        "LOCK.STATUS shows client {client} holding token {token} while its own \
                         lease is {cur:?}: {op:?}"
                    ));
                }
                if client != op.client {
                    *cur = None;
                }
            }
            (LockCall::Status, LockRet::Free) => *cur = None,
            _ => return Err(format!("a reply of the wrong kind: {op:?}")),
        }
    }
    stats.leases = leases.len();
    stats.released = leases.values().filter(|l| l.released_at.is_some()).count();
    // Tokens rise: a token shown by a reply that arrived before another token was first sent
    // for is the smaller (server-wide, over every key).
    let mut tokens: Vec<(u64, &Lease)> = leases.iter().map(|(t, l)| (*t, l)).collect();
    tokens.sort_by_key(|(t, _)| *t);
    for (i, (t1, l1)) in tokens.iter().enumerate() {
        for (t2, l2) in &tokens[i + 1..] {
            // t1 < t2.
            if l2.min_resp < l1.min_inv {
                return Err(format!(
                    "token {t2} (client {}, key {}) was shown by a reply at {} ns, before a \
                     call that got the smaller token {t1} (client {}, key {}) was sent at {} ns",
                    l2.client, l2.key, l2.min_resp, l1.client, l1.key, l1.min_inv
                ));
            }
            if l1.min_resp < l2.min_inv {
                stats.ordered_pairs += 1;
            }
        }
    }
    // Per key, the intervals in which leases are known held never overlap.
    let keys: HashSet<usize> = leases.values().map(|l| l.key).collect();
    for key in keys {
        let mine: Vec<&(u64, &Lease)> = tokens.iter().filter(|(_, l)| l.key == key).collect();
        for (i, (t1, l1)) in mine.iter().enumerate() {
            for (t2, l2) in &mine[i + 1..] {
                stats.lease_pairs += 1;
                let start = l1.min_resp.max(l2.min_resp);
                let end = l1.held_until().min(l2.held_until());
                stats.closest_ns = stats.closest_ns.max(end as i64 - start as i64);
                if end > start + CLOCK_ALLOWANCE_NS {
                    return Err(format!(
                        "on key {key}, lease {t1} of client {} (known held {} → {} ns) and \
                         lease {t2} of client {} (known held {} → {} ns) overlap by {} µs",
                        l1.client,
                        l1.min_resp,
                        l1.held_until(),
                        l2.client,
                        l2.min_resp,
                        l2.held_until(),
                        (end - start) / 1000
                    ));
                }
            }
        }
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// Running clients
// ---------------------------------------------------------------------------------------------

struct Round {
    index: usize,
    initial: [i64; STOCK_KEYS],
    fence_base: u64,
}

impl Round {
    fn stock_key(&self, k: usize) -> String {
        format!("h{}:sku:{k}", self.index)
    }
    fn lock_key(&self, k: usize) -> String {
        format!("h{}:lock:{k}", self.index)
    }
}

fn query(con: &mut Connection, args: &[String]) -> redis::RedisResult<Value> {
    redis::cmd(&args[0]).arg(&args[1..]).query::<Value>(con)
}

fn stock_ret(op: &StockCall, r: redis::RedisResult<Value>) -> StockRet {
    match r {
        Ok(Value::Int(n)) => StockRet::Int(n),
        Ok(Value::Nil) => StockRet::Nil,
        Err(e) if e.code() == Some(code::STALE) => {
            let detail = e.detail().unwrap_or_default();
            let highest = detail
                .rsplit(' ')
                .next()
                .and_then(|h| h.parse().ok())
                .unwrap_or_else(|| panic!("{op:?}: a STALE error without a token: {e}"));
            StockRet::Stale(highest)
        }
        other => panic!("{op:?}: unexpected reply {other:?}"),
    }
}

fn lock_ret(op: &LockCall, r: redis::RedisResult<Value>) -> LockRet {
    match (op, r) {
        (LockCall::Acquire { .. } | LockCall::Renew { .. }, Ok(Value::Int(t))) if t > 0 => {
            LockRet::Token(t as u64)
        }
        (LockCall::Acquire { .. } | LockCall::Renew { .. }, Ok(Value::Nil)) => LockRet::Nil,
        (LockCall::Release, Ok(Value::Int(n))) if n == 0 || n == 1 => LockRet::Released(n == 1),
        (LockCall::Status, Ok(Value::Nil)) => LockRet::Free,
        (LockCall::Status, Ok(Value::Array(items))) if items.len() == 8 => {
            let owner = text(&items[1]);
            let client = owner
                .strip_prefix('c')
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("LOCK.STATUS shows an unknown owner {owner:?}"));
            let Value::Int(token) = items[3] else {
                panic!("LOCK.STATUS: unexpected reply {items:?}");
            };
            LockRet::Held {
                client,
                token: token as u64,
            }
        }
        (op, other) => panic!("{op:?}: unexpected reply {other:?}"),
    }
}

/// One client's part of a round; returns its stock and lock operations.
fn client_round(
    client: usize,
    con: &mut Connection,
    round: &Round,
    quotas: &[AtomicI64; STOCK_KEYS],
    start: Instant,
    rng: &mut StdRng,
) -> (Vec<(usize, StockOp)>, Vec<LockOp>) {
    let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
    let owner = format!("c{client}");
    let mut stock_ops = Vec::new();
    let mut lock_ops = Vec::new();
    let mut holds: [Option<u64>; LOCK_KEYS] = [None; LOCK_KEYS];
    let deadline = start + Duration::from_millis(ROUND_MS);
    loop {
        let now = Instant::now();
        let stock_left = quotas.iter().any(|q| q.load(Ordering::Relaxed) > 0);
        if now >= deadline && !stock_left {
            break;
        }
        let want_stock = stock_left && (now >= deadline || rng.random_bool(0.35));
        if want_stock {
            let k = rng.random_range(0..STOCK_KEYS);
            if quotas[k].fetch_sub(1, Ordering::Relaxed) <= 0 {
                continue;
            }
            let id = rng.random_range(0..IDS);
            let call = match rng.random_range(0..100) {
                0..=9 => StockCall::Get,
                10..=19 => StockCall::Add(rng.random_range(1..=4)),
                20..=69 => StockCall::Deduct {
                    q: rng.random_range(1..=3),
                    id: rng.random_bool(0.6).then_some(id),
                    fence: rng
                        .random_bool(0.3)
                        .then(|| round.fence_base + rng.random_range(0..FENCES)),
                },
                70..=84 => StockCall::Refund(id),
                _ => StockCall::Request(id),
            };
            let key = round.stock_key(k);
            let args: Vec<String> = match call {
                StockCall::Get => vec!["STOCK.GET".into(), key],
                StockCall::Add(q) => vec!["STOCK.ADD".into(), key, q.to_string()],
                StockCall::Deduct { q, id, fence } => {
                    let mut a = vec!["STOCK.DEDUCT".into(), key, q.to_string()];
                    // Options in either order.
                    let mut opts = Vec::new();
                    if let Some(id) = id {
                        opts.push(vec![
                            "ID".to_string(),
                            format!("r{}-order-{id}", round.index),
                        ]);
                    }
                    if let Some(t) = fence {
                        opts.push(vec!["FENCE".to_string(), t.to_string()]);
                    }
                    if rng.random_bool(0.5) {
                        opts.reverse();
                    }
                    a.extend(opts.into_iter().flatten());
                    a
                }
                StockCall::Refund(id) => vec![
                    "STOCK.REFUND".into(),
                    key,
                    format!("r{}-order-{id}", round.index),
                ],
                StockCall::Request(id) => vec![
                    "STOCK.REQUEST".into(),
                    key,
                    format!("r{}-order-{id}", round.index),
                ],
                StockCall::Snapshot { .. } => unreachable!(),
            };
            let inv = Instant::now();
            let r = query(con, &args);
            let resp = Instant::now();
            let ret = stock_ret(&call, r);
            stock_ops.push((
                k,
                StockOp {
                    client,
                    call,
                    ret,
                    inv: ns(inv),
                    resp: ns(resp),
                },
            ));
        } else {
            if now >= deadline {
                continue;
            }
            let k = rng.random_range(0..LOCK_KEYS);
            let key = round.lock_key(k);
            let ttl = rng.random_range(5..=50u64);
            let wait = rng.random_bool(0.5).then(|| rng.random_range(1..=5u64));
            let roll = rng.random_range(0..100);
            let call = if holds[k].is_some() {
                match roll {
                    0..=34 => LockCall::Renew { ttl },
                    35..=64 => LockCall::Release,
                    65..=79 => LockCall::Acquire { ttl, wait },
                    _ => LockCall::Status,
                }
            } else {
                match roll {
                    0..=54 => LockCall::Acquire { ttl, wait },
                    55..=69 => LockCall::Status,
                    70..=84 => LockCall::Release,
                    _ => LockCall::Renew { ttl },
                }
            };
            let args: Vec<String> = match call {
                LockCall::Acquire { ttl, wait } => {
                    let mut a = vec!["LOCK.ACQUIRE".into(), key, owner.clone(), ttl.to_string()];
                    if let Some(w) = wait {
                        a.push(if rng.random_bool(0.5) { "WAIT" } else { "wait" }.into());
                        a.push(w.to_string());
                    }
                    a
                }
                LockCall::Renew { ttl } => {
                    vec!["LOCK.RENEW".into(), key, owner.clone(), ttl.to_string()]
                }
                LockCall::Release => vec!["LOCK.RELEASE".into(), key, owner.clone()],
                LockCall::Status => vec!["LOCK.STATUS".into(), key],
            };
            let inv = Instant::now();
            let r = query(con, &args);
            let resp = Instant::now();
            let ret = lock_ret(&call, r);
            holds[k] = match (call, ret) {
                (_, LockRet::Token(t)) => Some(t),
                (LockCall::Status, LockRet::Held { client: c, .. }) if c == client => holds[k],
                _ => None,
            };
            lock_ops.push(LockOp {
                client,
                key: k,
                call,
                ret,
                inv: ns(inv),
                resp: ns(resp),
            });
        }
        if rng.random_bool(0.5) {
            thread::sleep(Duration::from_micros(rng.random_range(100..=2_500)));
        }
    }
    (stock_ops, lock_ops)
}

/// Reads the final state of a stock key as a snapshot call.
fn snapshot(con: &mut Connection, round: &Round, k: usize) -> StockCall {
    let key = round.stock_key(k);
    let info = match call(con, &["STOCK.INFO", &key]) {
        Ok(Value::Array(items)) if items.len() == 20 => items,
        other => panic!("STOCK.INFO {key}: unexpected reply {other:?}"),
    };
    let field = |name: &str| -> i64 {
        let i = info
            .chunks(2)
            .position(|pair| text(&pair[0]) == name)
            .unwrap_or_else(|| panic!("STOCK.INFO has no {name}: {info:?}"));
        match info[2 * i + 1] {
            Value::Int(n) => n,
            ref other => panic!("STOCK.INFO {name} is {other:?}"),
        }
    };
    let mut ledger = [-1; IDS];
    for (id, slot) in ledger.iter_mut().enumerate() {
        let rid = format!("r{}-order-{id}", round.index);
        *slot = match call(con, &["STOCK.REQUEST", &key, &rid]) {
            Ok(Value::Nil) => -1,
            Ok(Value::Int(n)) if n >= 0 => n,
            other => panic!("STOCK.REQUEST {key} {rid}: unexpected reply {other:?}"),
        };
    }
    StockCall::Snapshot {
        available: field("available"),
        fence: field("fence") as u64,
        deducted: field("deducted"),
        requests: field("requests"),
        ledger,
    }
}

struct RoundHistory {
    initial: [i64; STOCK_KEYS],
    stocks: Vec<Vec<StockOp>>,
    /// The random clients' lock operations.
    locks: Vec<LockOp>,
    /// `scripted_leases`, after them.
    scripted: Vec<LockOp>,
}

/// A fixed sequence of lock calls after the random clients are done, on a lock key they never
/// touch (index `LOCK_KEYS`), so that every round's history holds, whatever the machine's
/// speed and the interleaving, what the doctoring needs: two leases of different clients in
/// real-time order, a successful release followed by another client's grant of a lease known
/// held for long, and grants to two clients. (Under load the random leases of 5–50 ms mostly
/// expire before their holder releases them, and a round may have no successful release
/// followed by a grant at all.) Along the way: a WAIT grant and a WAIT timeout. The leases
/// last a minute: the first ends by its release, the second is left held (known held long
/// after it was granted, so a doctored history that stretches the first one overlaps it by
/// far more than the clock allowance).
fn scripted_leases(cons: &mut [Connection], round: &Round, start: Instant) -> Vec<LockOp> {
    let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
    let key = LOCK_KEYS;
    let name = round.lock_key(key);
    let ttl = 60_000;
    let steps = [
        (0, LockCall::Acquire { ttl, wait: Some(5) }),
        (1, LockCall::Acquire { ttl, wait: Some(5) }),
        (0, LockCall::Release),
        (1, LockCall::Acquire { ttl, wait: None }),
    ];
    let mut ops = Vec::new();
    for (client, call) in steps {
        let owner = format!("c{client}");
        let args: Vec<String> = match call {
            LockCall::Acquire { ttl, wait } => {
                let mut a = vec!["LOCK.ACQUIRE".into(), name.clone(), owner, ttl.to_string()];
                if let Some(w) = wait {
                    a.extend(["WAIT".into(), w.to_string()]);
                }
                a
            }
            LockCall::Release => vec!["LOCK.RELEASE".into(), name.clone(), owner],
            other => unreachable!("not scripted: {other:?}"),
        };
        let inv = Instant::now();
        let r = query(&mut cons[client], &args);
        let resp = Instant::now();
        let ret = lock_ret(&call, r);
        ops.push(LockOp {
            client,
            key,
            call,
            ret,
            inv: ns(inv),
            resp: ns(resp),
        });
    }
    let rets: Vec<LockRet> = ops.iter().map(|op| op.ret).collect();
    let ok = matches!(
        rets[..],
        [
            LockRet::Token(t0),
            LockRet::Nil,
            LockRet::Released(true),
            LockRet::Token(t1),
        ] if t0 < t1
    );
    assert!(
        ok,
        "round {}: the scripted lock calls got {rets:?}",
        round.index
    );
    ops
}

fn run_round(
    admin: &mut Connection,
    cons: &mut [Connection],
    index: usize,
    seed: u64,
) -> RoundHistory {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let round = Round {
        index,
        initial: std::array::from_fn(|_| rng.random_range(8..=25)),
        fence_base: now_us() as u64,
    };
    for k in 0..STOCK_KEYS {
        okay(call(
            admin,
            &[
                "STOCK.SET",
                &round.stock_key(k),
                &round.initial[k].to_string(),
            ],
        ));
    }
    let quotas: [AtomicI64; STOCK_KEYS] =
        std::array::from_fn(|_| AtomicI64::new(STOCK_OPS_PER_KEY));
    let barrier = Barrier::new(cons.len());
    let start = Instant::now();
    let mut stocks: Vec<Vec<StockOp>> = vec![Vec::new(); STOCK_KEYS];
    let mut locks = Vec::new();
    thread::scope(|s| {
        let handles: Vec<_> = cons
            .iter_mut()
            .enumerate()
            .map(|(client, con)| {
                let (round, quotas, barrier) = (&round, &quotas, &barrier);
                let mut rng = StdRng::seed_from_u64(rng.random());
                s.spawn(move || {
                    barrier.wait();
                    client_round(client, con, round, quotas, start, &mut rng)
                })
            })
            .collect();
        for h in handles {
            let (s_ops, l_ops) = h.join().expect("a client thread panicked");
            for (k, op) in s_ops {
                stocks[k].push(op);
            }
            locks.extend(l_ops);
        }
    });
    for (k, ops) in stocks.iter_mut().enumerate() {
        let last = ops.iter().map(|op| op.resp).max().unwrap_or(0);
        let inv = (Instant::now().duration_since(start).as_nanos() as u64).max(last + 1);
        let call = snapshot(admin, &round, k);
        let resp = Instant::now().duration_since(start).as_nanos() as u64;
        ops.push(StockOp {
            client: usize::MAX,
            call,
            ret: StockRet::Snapshot,
            inv,
            resp: resp.max(inv),
        });
    }
    let scripted = scripted_leases(cons, &round, start);
    RoundHistory {
        initial: round.initial,
        stocks,
        locks,
        scripted,
    }
}

// ---------------------------------------------------------------------------------------------
// Doctoring: the checkers must reject broken histories
// ---------------------------------------------------------------------------------------------

/// Mutations of a real recorded history that no correct server could produce.
fn doctored_histories_are_rejected(h: &RoundHistory) {
    let locks: Vec<LockOp> = h.locks.iter().chain(&h.scripted).copied().collect();
    let initial = h.initial[0];
    let ops = &h.stocks[0];
    assert!(check_stock(initial, ops).is_ok());

    // 1. The snapshot shows one more item than conservation allows.
    let mut bad = ops.clone();
    for op in &mut bad {
        if let StockCall::Snapshot {
            ref mut available, ..
        } = op.call
        {
            *available += 1;
        }
    }
    assert!(
        check_stock(initial, &bad).is_err(),
        "the checker accepted a snapshot with an extra item"
    );

    // 2. A result moved in time: a call whose result could only follow others is placed before
    //    every other call, so it must be explained from the initial state, and is not.
    let first = ops.iter().map(|op| op.inv).min().unwrap_or(0);
    let pick = ops.iter().position(|op| match (op.call, op.ret) {
        (StockCall::Deduct { q, id: None, .. }, StockRet::Int(n)) => n != initial - q,
        (StockCall::Get, StockRet::Int(n)) => n != initial,
        (StockCall::Add(q), StockRet::Int(n)) => n != initial + q,
        _ => false,
    });
    let pick = pick.expect("round 0 has a deduction or read that is not the first");
    let mut bad = ops.clone();
    for op in &mut bad {
        op.inv += 10;
        op.resp += 10;
    }
    bad[pick].inv = first;
    bad[pick].resp = first + 1;
    let verdict = linearize(Model::new(initial), &bad);
    assert!(
        verdict.is_err(),
        "the checker accepted {:?} as the very first call from {initial}",
        bad[pick]
    );

    // 3. The tokens of two leases swapped, where the smaller token was shown by a reply that
    //    arrived before any call that got the larger one was sent.
    let mut seen: HashMap<u64, (usize, u64, u64)> = HashMap::new();
    for op in &locks {
        let (token, client) = match op.ret {
            LockRet::Token(t) => (t, op.client),
            LockRet::Held { client, token } => (token, client),
            _ => continue,
        };
        let e = seen.entry(token).or_insert((client, op.inv, op.resp));
        e.1 = e.1.min(op.inv);
        e.2 = e.2.min(op.resp);
    }
    let pair = seen.iter().find_map(|(&ta, &(ca, _, resp_a))| {
        seen.iter()
            .find(|(&tb, &(cb, inv_b, _))| ta < tb && resp_a < inv_b && ca != cb)
            .map(|(&tb, &(cb, _, _))| (ta, ca, tb, cb))
    });
    let (ta, ca, tb, cb) = pair.expect("round 0 has two real-time-ordered leases");
    let swap = |t: u64| {
        if t == ta {
            tb
        } else if t == tb {
            ta
        } else {
            t
        }
    };
    let mut bad = locks.clone();
    for op in &mut bad {
        op.ret = match op.ret {
            LockRet::Token(t) => LockRet::Token(swap(t)),
            LockRet::Held { client, token } => LockRet::Held {
                client,
                token: swap(token),
            },
            other => other,
        };
    }
    let verdict = check_locks(&bad).map(|_| ());
    assert!(
        matches!(&verdict, Err(e) if e.contains("before a call that got the smaller token")),
        "the checker accepted swapped tokens {ta} (client {ca}) and {tb} (client {cb}): \
         {verdict:?}"
    );

    // 4. A token handed to a second owner: another client's grant replaced by an existing token.
    let mut bad = locks.clone();
    let victim = bad
        .iter()
        .position(|op| op.client != ca && matches!(op.ret, LockRet::Token(t) if t != ta))
        .expect("a grant to another client");
    bad[victim].ret = LockRet::Token(ta);
    let verdict = check_locks(&bad).map(|_| ());
    assert!(
        matches!(&verdict, Err(e) if e.contains("two owners")),
        "the checker accepted token {ta} for two owners: {verdict:?}"
    );

    // 5. A released lease stretched: its release removed and its last TTL made 10 s, so it is
    //    known held while a later lease on the key was granted. The scripted release: the
    //    lease granted after it is known held for a minute. (A random release followed by
    //    another grant is no sure case: the later lease may be known held for less than the
    //    clock allowance, and then the stretched history is still a possible one.)
    let release = locks
        .iter()
        .position(|op| op.key == LOCK_KEYS && op.ret == LockRet::Released(true));
    let release = release.expect("the scripted release");
    let rel = locks[release];
    let mut bad = locks.clone();
    bad.remove(release);
    let last_grant = bad
        .iter()
        .enumerate()
        .filter(|(_, op)| {
            op.client == rel.client
                && op.key == rel.key
                && op.inv < rel.inv
                && matches!(op.ret, LockRet::Token(_))
        })
        .max_by_key(|(_, op)| op.inv)
        .map(|(i, _)| i)
        .expect("the released lease's grant");
    bad[last_grant].call = match bad[last_grant].call {
        LockCall::Acquire { wait, .. } => LockCall::Acquire { ttl: 10_000, wait },
        LockCall::Renew { .. } => LockCall::Renew { ttl: 10_000 },
        other => other,
    };
    let LockRet::Token(stretched) = bad[last_grant].ret else {
        unreachable!("filtered on a token above")
    };
    // The client's own later calls on the key would show it lost the lease; drop them too,
    // and every sighting of a later lease of the client on the key (another client's
    // LOCK.STATUS), or that lease would be left with only late sightings and trip the
    // token-order check before the overlap is looked at.
    let later_own_lease = |op: &LockOp| {
        let shown = match op.ret {
            LockRet::Token(t) => Some((op.client, t)),
            LockRet::Held { client, token } => Some((client, token)),
            _ => None,
        };
        op.key == rel.key && matches!(shown, Some((c, t)) if c == rel.client && t > stretched)
    };
    let own_later_call =
        |op: &LockOp| op.client == rel.client && op.key == rel.key && op.inv > rel.inv;
    bad.retain(|op| !own_later_call(op) && !later_own_lease(op));
    let verdict = check_locks(&bad).map(|_| ());
    assert!(
        matches!(&verdict, Err(e) if e.contains("overlap")),
        "the checker accepted a lease held for 10 s while others were granted the lock: \
         {verdict:?}"
    );
}

#[test]
fn checker_accepts_and_rejects_hand_made_histories() {
    let op = |call, ret, inv, resp| StockOp {
        client: 0,
        call,
        ret,
        inv,
        resp,
    };
    let d1 = StockCall::Deduct {
        q: 1,
        id: None,
        fence: None,
    };
    // Two deductions of 1 from 1 both succeed: impossible in any order.
    let h = [
        op(d1, StockRet::Int(0), 0, 10),
        op(d1, StockRet::Int(0), 20, 30),
    ];
    assert!(linearize(Model::new(1), &h).is_err());
    let h = [
        op(d1, StockRet::Int(0), 0, 30),
        op(d1, StockRet::Int(0), 5, 25),
    ];
    assert!(linearize(Model::new(1), &h).is_err());
    // Real time matters: a read of 5 after a deduction returned is wrong; during it, fine.
    let seq = [
        op(StockCall::Get, StockRet::Int(5), 0, 10),
        op(d1, StockRet::Int(4), 20, 30),
        op(StockCall::Get, StockRet::Int(5), 40, 50),
    ];
    assert!(linearize(Model::new(5), &seq).is_err());
    let mut conc = seq;
    conc[2].inv = 25;
    assert!(linearize(Model::new(5), &conc).is_ok());
    // A request id deducts once: the second call with it is a replay.
    let with_id = |q| StockCall::Deduct {
        q,
        id: Some(0),
        fence: None,
    };
    let ok = [
        op(with_id(2), StockRet::Int(8), 0, 10),
        op(with_id(3), StockRet::Int(8), 20, 30),
    ];
    assert!(linearize(Model::new(10), &ok).is_ok());
    let twice = [
        op(with_id(2), StockRet::Int(8), 0, 10),
        op(with_id(2), StockRet::Int(6), 20, 30),
    ];
    assert!(linearize(Model::new(10), &twice).is_err());
    // A fence: a lower token after a higher one succeeded is STALE, naming the highest.
    let fenced = |t| StockCall::Deduct {
        q: 1,
        id: None,
        fence: Some(t),
    };
    let stale = [
        op(fenced(7), StockRet::Int(9), 0, 10),
        op(fenced(5), StockRet::Stale(7), 20, 30),
    ];
    assert!(linearize(Model::new(10), &stale).is_ok());
    let accepted = [
        op(fenced(7), StockRet::Int(9), 0, 10),
        op(fenced(5), StockRet::Int(8), 20, 30),
    ];
    assert!(linearize(Model::new(10), &accepted).is_err());

    // Locks.
    let ms = 1_000_000;
    let lop = |client, call, ret, inv, resp| LockOp {
        client,
        key: 0,
        call,
        ret,
        inv,
        resp,
    };
    let acq = LockCall::Acquire {
        ttl: 50,
        wait: None,
    };
    let fine = [
        lop(0, acq, LockRet::Token(100), 0, ms),
        lop(1, acq, LockRet::Token(200), 60 * ms, 61 * ms),
    ];
    check_locks(&fine).expect("a lease after the previous one expired");
    let overlap = [
        lop(0, acq, LockRet::Token(100), 0, ms),
        lop(1, acq, LockRet::Token(200), 10 * ms, 11 * ms),
    ];
    assert!(check_locks(&overlap).is_err());
    let backwards = [
        lop(0, acq, LockRet::Token(200), 0, ms),
        lop(1, acq, LockRet::Token(100), 60 * ms, 61 * ms),
    ];
    assert!(check_locks(&backwards).is_err());
    let two_owners = [
        lop(0, acq, LockRet::Token(100), 0, ms),
        lop(1, acq, LockRet::Token(100), 60 * ms, 61 * ms),
    ];
    assert!(check_locks(&two_owners).is_err());
    let released = [
        lop(0, acq, LockRet::Token(100), 0, ms),
        lop(
            0,
            LockCall::Release,
            LockRet::Released(true),
            2 * ms,
            3 * ms,
        ),
        lop(1, acq, LockRet::Token(200), 3 * ms, 4 * ms),
    ];
    check_locks(&released).expect("a lease after a release");
    let not_holding = [
        lop(0, acq, LockRet::Nil, 0, ms),
        lop(
            0,
            LockCall::Release,
            LockRet::Released(true),
            2 * ms,
            3 * ms,
        ),
    ];
    assert!(check_locks(&not_holding).is_err());
    let early_timeout = [lop(
        0,
        LockCall::Acquire {
            ttl: 50,
            wait: Some(5),
        },
        LockRet::Nil,
        0,
        ms,
    )];
    assert!(check_locks(&early_timeout).is_err());
}

#[test]
fn random_histories_of_40_clients_are_linearizable_and_safe() {
    let seed: u64 = match std::env::var("FENCE_HISTORY_SEED") {
        Ok(s) => s.parse().expect("FENCE_HISTORY_SEED must be an integer"),
        Err(_) => rand::rng().random(),
    };
    println!("history: seed {seed} (FENCE_HISTORY_SEED)");
    let began = Instant::now();
    let mut server = Server::start();
    let mut admin = server.conn();
    let mut cons: Vec<Connection> = (0..CLIENTS).map(|_| server.conn()).collect();
    let mut stock_histories = 0;
    let mut stock_ops = 0;
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    let mut totals = LockStats {
        closest_ns: i64::MIN,
        ..LockStats::default()
    };
    let mut check_time = Duration::ZERO;
    for index in 0..ROUNDS {
        let h = run_round(&mut admin, &mut cons, index, seed);
        let checking = Instant::now();
        for (k, ops) in h.stocks.iter().enumerate() {
            if let Err(e) = check_stock(h.initial[k], ops) {
                panic!(
                    "round {index}, stock key {k} (initial {}): {e}\nhistory: {ops:#?}",
                    h.initial[k]
                );
            }
            stock_histories += 1;
            stock_ops += ops.len();
            for op in ops {
                let kind = match (op.call, op.ret) {
                    (StockCall::Deduct { .. }, StockRet::Int(_)) => "deduct ok/replay",
                    (StockCall::Deduct { .. }, StockRet::Nil) => "deduct sold out",
                    (StockCall::Deduct { .. }, StockRet::Stale(_)) => "deduct stale",
                    (StockCall::Refund(_), StockRet::Int(n)) if n > 0 => "refund returned",
                    (StockCall::Refund(_), _) => "refund of nothing",
                    _ => "other",
                };
                *outcomes.entry(kind).or_default() += 1;
            }
        }
        let stats = match check_locks(&h.locks) {
            Ok(stats) => stats,
            Err(e) => panic!("round {index}, locks: {e}"),
        };
        // The scripted calls after the random ones belong to the same history.
        let whole: Vec<LockOp> = h.locks.iter().chain(&h.scripted).copied().collect();
        if let Err(e) = check_locks(&whole) {
            panic!("round {index}, locks with the scripted calls: {e}");
        }
        totals.ops += stats.ops;
        totals.leases += stats.leases;
        totals.released += stats.released;
        totals.wait_grants += stats.wait_grants;
        totals.wait_timeouts += stats.wait_timeouts;
        totals.ordered_pairs += stats.ordered_pairs;
        totals.lease_pairs += stats.lease_pairs;
        totals.closest_ns = totals.closest_ns.max(stats.closest_ns);
        // Every round's history, doctored five ways, must be refused by the checker.
        doctored_histories_are_rejected(&h);
        check_time += checking.elapsed();
    }
    server.assert_alive();
    let expirations = info_int(&mut admin, "fence", "fence_expirations");
    println!(
        "history: {stock_histories} stock histories, {stock_ops} stock operations linearized \
         (≤ {} per key); outcomes {outcomes:?}",
        STOCK_OPS_PER_KEY + 1
    );
    println!(
        "history: {ROUNDS} lock histories, {} lock operations, {} leases ({} released, {} \
         expired on the server), {} WAIT grants, {} WAIT timeouts, {} real-time-ordered token \
         pairs and {} same-key lease pairs checked (closest: {} µs of overlap, {} µs allowed)",
        totals.ops,
        totals.leases,
        totals.released,
        expirations,
        totals.wait_grants,
        totals.wait_timeouts,
        totals.ordered_pairs,
        totals.lease_pairs,
        totals.closest_ns / 1000,
        CLOCK_ALLOWANCE_NS / 1000
    );
    println!(
        "history: {} doctored lock histories rejected (5 per round)",
        ROUNDS * 5
    );
    println!(
        "history: {CLIENTS} clients, {:.1} s in all, {:.1} s checking",
        began.elapsed().as_secs_f64(),
        check_time.as_secs_f64()
    );
    // The run exercised what it claims to check.
    assert!(totals.leases > 100, "too few leases: {}", totals.leases);
    assert!(totals.wait_grants > 0 && totals.wait_timeouts > 0);
    assert!(expirations > 0, "no lease expired mid-run");
    for kind in [
        "deduct ok/replay",
        "deduct sold out",
        "deduct stale",
        "refund returned",
    ] {
        assert!(
            outcomes.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in the run"
        );
    }
}
