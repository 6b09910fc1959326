//! Carts under faults (issue 19): a SIGKILL under a load of carts (`STOCK.CART` of 2–3 items
//! with one hash tag, some held, some confirmed with `STOCK.CART.CONFIRM`, some refunded with
//! `STOCK.CART.REFUND … EVENTS`) with `appendonly yes` and `appendfsync always`; the same load on a
//! master with a replica, the master killed and the replica promoted; and the same load run to
//! its end with a replica attached, then compared (`DEBUG DIGEST`).
//!
//! After each fault no cart is ever half there: for every request id sent (acknowledged,
//! refused or on the wire at the kill), either every one of its stocks' ledgers has it, with
//! the cart's quantity and one state for all the items, or none has it. Every acknowledged
//! answer stands (a cart, a confirmation, a refund, on every item), a refused cart is in no
//! ledger, each stock keeps `available + deducted = initial`, the `EVENTS` stream has exactly
//! one `deduct` entry per ledger entry and one `refund` entry per refunded one (with their
//! `cart` and `item` fields), each `remaining` in step with the stock's entries before it, and
//! the AOF holds each cart's effects (and their stream entries), each confirmation and each
//! refund of a cart inside one `MULTI`/`EXEC`, all items together.
//!
//! Faults are triggered by events (acknowledgements counted by a `LoadKiller`, never a timer
//! racing the load); waits are generous deadlines on conditions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::{Connection, ConnectionLike, Value};

/// How long a replica may take to catch up.
const SYNC: Duration = Duration::from_secs(15);

/// The stocks of the load, one hash tag (a cart's keys must hash to one slot on a cluster).
const SKUS: [&str; 5] = [
    "{sale}:phone",
    "{sale}:case",
    "{sale}:charger",
    "{sale}:cable",
    "{sale}:rare",
];
/// The one stream every cart's events go to.
const ORDERS: &str = "{sale}:orders";
/// What each stock starts with: four that never run short, and one that sells out under the
/// load (so carts naming it are refused with `SOLDOUT`, all or nothing, while others go on).
const INITIAL: [i64; 5] = [1_000_000, 1_000_000, 1_000_000, 1_000_000, RARE];
const RARE: i64 = 300;
const RARE_INDEX: usize = 4;

/// Held carts: a short hold expires under the load or soon after the restart; a long one is
/// still held when the test ends.
const SHORT_HOLD_MS: std::ops::RangeInclusive<u64> = 20..=400;
const LONG_HOLD_MS: u64 = 600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

/// How long a cart holds its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    None,
    Short(u64),
    Long,
}

/// One cart as sent.
#[derive(Debug, Clone)]
struct Cart {
    id: String,
    /// (stock index, quantity), in the order given.
    items: Vec<(usize, i64)>,
    hold: Hold,
    buyer: Option<String>,
}

impl Cart {
    fn keys(&self) -> BTreeSet<usize> {
        self.items.iter().map(|(k, _)| *k).collect()
    }

    fn quantity(&self, sku: usize) -> Option<i64> {
        self.items.iter().find(|(k, _)| *k == sku).map(|(_, q)| *q)
    }

    /// `STOCK.CART numkeys key quantity … ID id [BUYER b] [HOLD ms] EVENTS orders`.
    fn command(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("STOCK.CART");
        cmd.arg(self.items.len());
        for (k, q) in &self.items {
            cmd.arg(SKUS[*k]).arg(*q);
        }
        cmd.arg("ID").arg(&self.id);
        if let Some(b) = &self.buyer {
            cmd.arg("BUYER").arg(b);
        }
        match self.hold {
            Hold::None => {}
            Hold::Short(ms) => {
                cmd.arg("HOLD").arg(ms);
            }
            Hold::Long => {
                cmd.arg("HOLD").arg(LONG_HOLD_MS);
            }
        }
        cmd.arg("EVENTS").arg(ORDERS);
        cmd
    }

    /// `STOCK.CART.CONFIRM` of this cart.
    fn confirm(&self) -> redis::Cmd {
        self.all_items("STOCK.CART.CONFIRM")
    }

    /// `STOCK.CART.REFUND … EVENTS orders` of this cart.
    fn refund(&self) -> redis::Cmd {
        let mut cmd = self.all_items("STOCK.CART.REFUND");
        cmd.arg("EVENTS").arg(ORDERS);
        cmd
    }

    fn all_items(&self, name: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(self.items.len());
        for (k, _) in &self.items {
            cmd.arg(SKUS[*k]);
        }
        cmd.arg(&self.id);
        cmd
    }
}

/// What the acknowledged replies established about a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Refused with `SOLDOUT`: in no ledger.
    Refused,
    /// Deducted (held when the cart has a hold) on every item.
    Placed,
    Confirmed,
    Refunded,
    /// A confirmation answered `EXPIRED`, or a refund answered all zeros: its hold ended.
    Expired,
}

/// A request of the load.
#[derive(Debug, Clone)]
enum Op {
    Place(Cart),
    /// The same cart sent again (a client's retry): answered, nothing deducted.
    Replay(Cart),
    Confirm(Cart),
    Refund(Cart),
}

impl Op {
    fn cart(&self) -> &Cart {
        match self {
            Op::Place(c) | Op::Replay(c) | Op::Confirm(c) | Op::Refund(c) => c,
        }
    }
}

/// One client's view of its own carts (no other client touches them).
#[derive(Default)]
struct Record {
    carts: BTreeMap<String, (Cart, Known)>,
    in_flight: Option<Op>,
    counts: BTreeMap<&'static str, usize>,
}

/// What a load left: every cart any client sent, what was acknowledged of it, the request on
/// the wire when the server died, and counts of the replies.
struct Outcome {
    carts: BTreeMap<String, Cart>,
    acked: BTreeMap<String, Known>,
    in_flight: BTreeMap<String, Op>,
    counts: BTreeMap<&'static str, usize>,
}

/// The array of integers a cart (or a cart refund) answers, checked to have one per item.
fn ints(reply: &Value, n: usize) -> Option<Vec<i64>> {
    let Value::Array(items) = reply else {
        return None;
    };
    let v: Vec<i64> = items
        .iter()
        .map(|v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (v.len() == n).then_some(v)
}

/// `clients` clients send carts of 2–3 distinct stocks (1–3 units each, unique ids, two thirds
/// of them held: a third for 20–400 ms, a third for 10 minutes; a third for a buyer), confirm
/// held ones (`STOCK.CART.CONFIRM`), refund some (`STOCK.CART.REFUND`, held, deducted or
/// confirmed ones: a paid order cancelled) and now and then send a cart again (a replay). Each
/// client stops after `ops` requests, or when the server dies under it. Every successful change
/// counts one acknowledgement toward `killer`'s target.
fn run_load(killer: &LoadKiller<'_>, cons: Vec<Connection>, ops: usize, seed: u64) -> Outcome {
    let records: Vec<Mutex<Record>> = (0..cons.len()).map(|_| Mutex::default()).collect();
    thread::scope(|s| {
        for ((c, record), mut con) in records.iter().enumerate().zip(cons) {
            let load = killer.client();
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9e37_79b9));
                // This client's carts by what the server said of them.
                let mut held: Vec<Cart> = Vec::new();
                let mut deducted: Vec<Cart> = Vec::new();
                let mut confirmed: Vec<Cart> = Vec::new();
                let mut answered: Vec<Cart> = Vec::new();
                let take = |list: &mut Vec<Cart>, rng: &mut StdRng| {
                    let i = rng.random_range(0..list.len());
                    list.swap_remove(i)
                };
                for n in 0..ops {
                    let op = if !held.is_empty() && rng.random_bool(0.2) {
                        Op::Confirm(take(&mut held, &mut rng))
                    } else if !held.is_empty() && rng.random_bool(0.1) {
                        Op::Refund(take(&mut held, &mut rng))
                    } else if !deducted.is_empty() && rng.random_bool(0.1) {
                        Op::Refund(take(&mut deducted, &mut rng))
                    } else if !confirmed.is_empty() && rng.random_bool(0.05) {
                        Op::Refund(take(&mut confirmed, &mut rng))
                    } else if !answered.is_empty() && rng.random_bool(0.04) {
                        let i = rng.random_range(0..answered.len());
                        Op::Replay(answered[i].clone())
                    } else {
                        let size = rng.random_range(2..=3);
                        let mut keys: Vec<usize> = (0..SKUS.len()).collect();
                        let mut items = Vec::new();
                        for _ in 0..size {
                            let k = keys.swap_remove(rng.random_range(0..keys.len()));
                            items.push((k, rng.random_range(1..=3)));
                        }
                        let hold = match rng.random_range(0..3) {
                            0 => Hold::None,
                            1 => Hold::Short(rng.random_range(SHORT_HOLD_MS)),
                            _ => Hold::Long,
                        };
                        let buyer = rng.random_bool(0.33).then(|| format!("buyer-{c}"));
                        Op::Place(Cart {
                            id: format!("c{c}-{n}"),
                            items,
                            hold,
                            buyer,
                        })
                    };
                    let cart = op.cart().clone();
                    let command = match &op {
                        Op::Place(cart) | Op::Replay(cart) => cart.command(),
                        Op::Confirm(cart) => cart.confirm(),
                        Op::Refund(cart) => cart.refund(),
                    };
                    record.lock().unwrap().in_flight = Some(op.clone());
                    load.sending();
                    let reply = command.query::<Value>(&mut con);
                    if let Err(e) = &reply {
                        if e.code().is_none() {
                            // The server died under this request: applied or not.
                            return;
                        }
                    }
                    let mut r = record.lock().unwrap();
                    r.in_flight = None;
                    let was = r.carts.get(&cart.id).map(|(_, k)| *k);
                    let n_items = cart.items.len();
                    let quantities: Vec<i64> = cart.items.iter().map(|(_, q)| *q).collect();
                    let (now, what) = match (&op, was, &reply) {
                        (Op::Place(_), None, Ok(v)) if ints(v, n_items).is_some() => {
                            let remaining = ints(v, n_items).unwrap_or_default();
                            assert!(
                                remaining.iter().all(|&r| r >= 0),
                                "cart {}: remaining {remaining:?}",
                                cart.id
                            );
                            match cart.hold {
                                Hold::None => deducted.push(cart.clone()),
                                _ => held.push(cart.clone()),
                            }
                            answered.push(cart.clone());
                            (Known::Placed, "placed")
                        }
                        (Op::Place(_), None, Err(e)) if e.code() == Some(code::SOLDOUT) => {
                            // Only the rare stock can run short, and the error names it.
                            let text = error_text(e);
                            let index = cart
                                .items
                                .iter()
                                .position(|(k, _)| *k == RARE_INDEX)
                                .unwrap_or_else(|| {
                                    panic!(
                                        "cart {} refused without the rare stock: {text}",
                                        cart.id
                                    )
                                });
                            assert_eq!(
                                text,
                                format!("{} {} {}", code::SOLDOUT, index + 1, SKUS[RARE_INDEX]),
                                "cart {}",
                                cart.id
                            );
                            (Known::Refused, "refused SOLDOUT")
                        }
                        (Op::Replay(_), Some(k), Ok(v)) if ints(v, n_items).is_some() => {
                            (k, "replayed")
                        }
                        (Op::Confirm(_), Some(Known::Placed), Ok(Value::Int(1))) => {
                            confirmed.push(cart.clone());
                            (Known::Confirmed, "confirmed")
                        }
                        (Op::Confirm(_), Some(Known::Placed), Err(e))
                            if matches!(cart.hold, Hold::Short(_))
                                && e.code() == Some(code::EXPIRED) =>
                        {
                            (Known::Expired, "confirm answered EXPIRED")
                        }
                        (Op::Refund(_), Some(Known::Placed | Known::Confirmed), Ok(v))
                            if ints(v, n_items).as_ref() == Some(&quantities) =>
                        {
                            (Known::Refunded, "refunded")
                        }
                        // A short hold whose deadline passed first: every item came back already.
                        (Op::Refund(_), Some(Known::Placed), Ok(v))
                            if matches!(cart.hold, Hold::Short(_))
                                && ints(v, n_items) == Some(vec![0; n_items]) =>
                        {
                            (Known::Expired, "refund answered zeros (expired)")
                        }
                        (op, was, reply) => panic!(
                            "{op:?} of a cart in {was:?}: {} (a half cart?)",
                            describe(reply)
                        ),
                    };
                    r.carts.insert(cart.id.clone(), (cart, now));
                    *r.counts.entry(what).or_default() += 1;
                    drop(r);
                    if matches!(what, "placed" | "confirmed" | "refunded") {
                        load.acknowledged(1);
                    } else {
                        load.answered();
                    }
                }
            });
        }
    });
    let mut out = Outcome {
        carts: BTreeMap::new(),
        acked: BTreeMap::new(),
        in_flight: BTreeMap::new(),
        counts: BTreeMap::new(),
    };
    for r in records {
        let r = r.into_inner().unwrap();
        for (id, (cart, known)) in r.carts {
            out.carts.insert(id.clone(), cart);
            out.acked.insert(id, known);
        }
        if let Some(op) = r.in_flight {
            let cart = op.cart().clone();
            out.carts.entry(cart.id.clone()).or_insert(cart.clone());
            out.in_flight.insert(cart.id, op);
        }
        for (what, n) in r.counts {
            *out.counts.entry(what).or_default() += n;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What a server holds
// ---------------------------------------------------------------------------------------------

/// `STOCK.REQUEST key id DETAIL` (RESP2).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Detail {
    state: String,
    quantity: i64,
    deadline: Option<i64>,
    buyer: Option<String>,
}

#[track_caller]
fn parse_detail(reply: &Value, what: &str) -> Option<Detail> {
    let items = match reply {
        Value::Nil => return None,
        Value::Array(items) => items,
        other => panic!("{what}: unexpected DETAIL reply {other:?}"),
    };
    let (mut state, mut quantity, mut deadline, mut buyer) = (None, None, None, None);
    for pair in items.chunks(2) {
        match (text(&pair[0]).as_str(), &pair[1]) {
            ("state", v) => state = Some(text(v)),
            ("quantity", Value::Int(n)) => quantity = Some(*n),
            ("deadline", Value::Int(n)) => deadline = Some(*n),
            ("buyer", v) => buyer = Some(text(v)),
            _ => panic!("{what}: unexpected DETAIL field in {items:?}"),
        }
    }
    let (Some(state), Some(quantity)) = (state, quantity) else {
        panic!("{what}: DETAIL without state or quantity: {items:?}");
    };
    Some(Detail {
        state,
        quantity,
        deadline,
        buyer,
    })
}

/// Every stock's ledger entry of every id (`[sku][id]`, in one round trip per stock), and the
/// `EVENTS` stream, read before them (so that an `expire` entry it has is of an entry the
/// ledgers show expired). The stocks are read one after another, so a hold due while they are
/// read would show `held` in one and `expired` in the next: a `held` entry whose deadline has
/// passed when the last stock has been read is taken as `expired`, as every stock shows it from
/// then on.
struct Ledgers {
    by_sku: Vec<BTreeMap<String, Option<Detail>>>,
    stream: Vec<Fields>,
    /// Each stock's `available`, read after the stream.
    available: [i64; SKUS.len()],
}

impl Ledgers {
    fn iter(&self) -> std::slice::Iter<'_, BTreeMap<String, Option<Detail>>> {
        self.by_sku.iter()
    }
}

impl std::ops::Index<usize> for Ledgers {
    type Output = BTreeMap<String, Option<Detail>>;

    fn index(&self, sku: usize) -> &Self::Output {
        &self.by_sku[sku]
    }
}

#[track_caller]
fn ledgers(con: &mut Connection, ids: &BTreeSet<String>) -> Ledgers {
    let stream = stream(con);
    let available = SKUS.map(|sku| field(&stock_info(con, sku), "available"));
    let mut by_sku: Vec<BTreeMap<String, Option<Detail>>> = SKUS
        .iter()
        .map(|sku| {
            if ids.is_empty() {
                return BTreeMap::new();
            }
            let mut pipe = redis::pipe();
            for id in ids {
                pipe.cmd("STOCK.REQUEST").arg(*sku).arg(id).arg("DETAIL");
            }
            let replies: Vec<Value> = pipe
                .query(con)
                .unwrap_or_else(|e| panic!("STOCK.REQUEST {sku} … DETAIL: {e}"));
            ids.iter()
                .zip(replies)
                .map(|(id, r)| (id.clone(), parse_detail(&r, &format!("{sku} {id}"))))
                .collect()
        })
        .collect();
    let read = now_ms();
    for d in by_sku.iter_mut().flat_map(|l| l.values_mut()).flatten() {
        if d.state == "held" && d.deadline.is_some_and(|at| at <= read) {
            d.state = "expired".to_string();
            d.deadline = None;
        }
    }
    Ledgers {
        by_sku,
        stream,
        available,
    }
}

/// `STOCK.INFO key` (RESP2), its integer fields.
#[track_caller]
fn stock_info<C: ConnectionLike>(con: &mut C, key: &str) -> BTreeMap<String, i64> {
    match call(con, &["STOCK.INFO", key]) {
        Ok(Value::Array(items)) => items
            .chunks(2)
            .filter_map(|pair| match &pair[1] {
                Value::Int(n) => Some((text(&pair[0]), *n)),
                _ => None,
            })
            .collect(),
        other => panic!("STOCK.INFO {key}: unexpected reply {}", describe(&other)),
    }
}

#[track_caller]
fn field(info: &BTreeMap<String, i64>, name: &str) -> i64 {
    match info.get(name) {
        Some(n) => *n,
        None => panic!("STOCK.INFO has no {name}: {info:?}"),
    }
}

/// The cart's state on one server: one state for all its items, or none of them in any
/// ledger. Panics on a half cart (some ledgers only, or an item's entry in a stock the cart
/// does not name), on items in different states, and on a quantity or buyer not as sent.
#[track_caller]
fn cart_state(ledgers: &Ledgers, cart: &Cart, context: &str) -> Option<String> {
    let mut present = BTreeSet::new();
    for (k, ledger) in ledgers.iter().enumerate() {
        if ledger[&cart.id].is_some() {
            present.insert(k);
        }
    }
    if present.is_empty() {
        return None;
    }
    let show = |set: &BTreeSet<usize>| set.iter().map(|k| SKUS[*k]).collect::<Vec<_>>();
    assert_eq!(
        show(&present),
        show(&cart.keys()),
        "{context}: HALF A CART: {} is in the ledgers of {:?}, its items are {:?}",
        cart.id,
        show(&present),
        cart.items
    );
    let mut states = BTreeSet::new();
    for (k, q) in &cart.items {
        let d = ledgers[*k][&cart.id].as_ref().expect("present");
        assert_eq!(
            d.quantity, *q,
            "{context}: {} on {}: {d:?}",
            cart.id, SKUS[*k]
        );
        assert_eq!(
            d.buyer, cart.buyer,
            "{context}: {} on {}'s buyer",
            cart.id, SKUS[*k]
        );
        states.insert(d.state.clone());
    }
    let deadlines: BTreeSet<Option<i64>> = cart
        .items
        .iter()
        .map(|(k, _)| ledgers[*k][&cart.id].as_ref().and_then(|d| d.deadline))
        .collect();
    assert!(
        states.len() == 1 && deadlines.len() == 1,
        "{context}: the items of cart {} are in states {states:?} with deadlines {deadlines:?}",
        cart.id
    );
    states.into_iter().next()
}

/// The states a cart may be in, from what was acknowledged of it and the request on the wire
/// at the kill (`None`: in no ledger). `settled`: every short hold's deadline has passed.
fn allowed(
    cart: &Cart,
    acked: Option<Known>,
    in_flight: Option<&Op>,
    settled: bool,
) -> Vec<&'static str> {
    // What a placed cart shows with no later request.
    let placed: Vec<&'static str> = match (cart.hold, settled) {
        (Hold::None, _) => vec!["deducted"],
        (Hold::Long, _) => vec!["held"],
        (Hold::Short(_), true) => vec!["expired"],
        (Hold::Short(_), false) => vec!["held", "expired"],
    };
    let expiring = || -> Vec<&'static str> {
        if matches!(cart.hold, Hold::Short(_)) {
            vec!["expired"]
        } else {
            vec![]
        }
    };
    let mut out: Vec<&'static str> = match (acked, in_flight) {
        (None, Some(Op::Place(_))) => [vec!["unknown"], placed].concat(),
        (Some(Known::Refused), None) => vec!["unknown"],
        (Some(Known::Placed), None | Some(Op::Replay(_))) => placed,
        (Some(Known::Placed), Some(Op::Confirm(_))) => [vec!["confirmed"], placed].concat(),
        (Some(Known::Placed), Some(Op::Refund(_))) => [vec!["refunded"], placed].concat(),
        (Some(Known::Confirmed), None | Some(Op::Replay(_))) => vec!["confirmed"],
        (Some(Known::Confirmed), Some(Op::Refund(_))) => vec!["confirmed", "refunded"],
        (Some(Known::Refunded), None | Some(Op::Replay(_))) => vec!["refunded"],
        (Some(Known::Expired), None | Some(Op::Replay(_))) => expiring(),
        (k, op) => panic!("the load never sends {op:?} for a cart in {k:?}"),
    };
    out.dedup();
    out
}

/// Every cart whole or absent, each in a state its acknowledged answers allow (`strict`: on
/// the server that acknowledged them; else only whole-or-absent and one state); returns the
/// number of carts in each state.
#[track_caller]
fn check_carts(
    ledgers: &Ledgers,
    load: &Outcome,
    strict: bool,
    settled: bool,
    context: &str,
) -> BTreeMap<String, usize> {
    let mut census = BTreeMap::new();
    for (id, cart) in &load.carts {
        let state = cart_state(ledgers, cart, context);
        let state = state.as_deref().unwrap_or("unknown");
        let acked = load.acked.get(id).copied();
        if strict {
            let ok = allowed(cart, acked, load.in_flight.get(id), settled);
            assert!(
                ok.contains(&state),
                "{context}: cart {id} is {state}, expected one of {ok:?}: acknowledged \
                 {acked:?}, on the wire at the kill {:?}; {cart:?}",
                load.in_flight.get(id)
            );
        } else if acked == Some(Known::Refused) {
            assert_eq!(state, "unknown", "{context}: cart {id} was refused");
        }
        *census.entry(state.to_string()).or_default() += 1;
    }
    census
}

/// Each stock's conservation: `available + deducted = initial`; the ledger has no entry the
/// load did not make; the units of the entries that still hold units are `deducted`. The
/// ledgers were read before `STOCK.INFO`: a hold may have come due in between (nothing else
/// changes a stock meanwhile), so the held units are taken from `STOCK.INFO`, at most what the
/// ledgers' held entries hold and at least what those due after the reading hold.
#[track_caller]
fn check_conservation(con: &mut Connection, ledgers: &Ledgers, context: &str) {
    for (k, sku) in SKUS.iter().enumerate() {
        let info = stock_info(con, sku);
        let read = now_ms();
        let (available, deducted) = (field(&info, "available"), field(&info, "deducted"));
        assert_eq!(
            available + deducted,
            INITIAL[k],
            "{context}: {sku}: available {available} + deducted {deducted}"
        );
        assert!(available >= 0, "{context}: {sku} oversold: {available}");
        let entries: Vec<&Detail> = ledgers[k].values().flatten().collect();
        assert_eq!(
            field(&info, "requests"),
            i64::try_from(entries.len()).unwrap(),
            "{context}: {sku}'s ledger has entries the load did not make"
        );
        let sold: i64 = entries
            .iter()
            .filter(|d| matches!(d.state.as_str(), "deducted" | "confirmed"))
            .map(|d| d.quantity)
            .sum();
        let held = field(&info, "held-units");
        assert_eq!(
            sold + held,
            deducted,
            "{context}: {sku}: the entries hold {sold} sold and {held} held, deducted is \
             {deducted}"
        );
        let held_entries = entries.iter().filter(|d| d.state == "held");
        let most: i64 = held_entries.clone().map(|d| d.quantity).sum();
        let least: i64 = held_entries
            .filter(|d| d.deadline.is_some_and(|at| at > read))
            .map(|d| d.quantity)
            .sum();
        assert!(
            (least..=most).contains(&held),
            "{context}: {sku}: STOCK.INFO says {held} units held, the ledgers' held entries \
             {most} ({least} of them due after the reading)"
        );
    }
}

/// One stream entry's fields.
type Fields = BTreeMap<String, String>;

/// Ledger entries or stream entries, as (stock index, request id).
type Items = BTreeSet<(usize, String)>;

#[track_caller]
fn stream(con: &mut Connection) -> Vec<Fields> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(ORDERS)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| fields.into_iter().collect())
        .collect()
}

/// What the `EVENTS` stream says: its `deduct`, `refund` and `expire` entries by (stock index,
/// request id), and each stock's units available after its last entry.
struct Story {
    deducts: Items,
    refunds: Items,
    expires: Items,
    available: [i64; SKUS.len()],
}

/// Reads the stream: each kind of entry at most once per stock and request id, its quantity
/// the cart's, a cart's `deduct` and `refund` entries with `cart <items>` and `item <index from
/// 1>`, and each entry's `remaining` what the stock's entries before it leave available (every
/// change of the stocks is made with `EVENTS`).
#[track_caller]
fn stream_story(entries: &[Fields], load: &Outcome, context: &str) -> Story {
    let mut story = Story {
        deducts: BTreeSet::new(),
        refunds: BTreeSet::new(),
        expires: BTreeSet::new(),
        available: INITIAL,
    };
    for (n, e) in entries.iter().enumerate() {
        let get = |f: &str| {
            e.get(f)
                .unwrap_or_else(|| panic!("{context}: entry without {f}: {e:?}"))
        };
        let kind = get("type").as_str();
        let sku = SKUS
            .iter()
            .position(|s| s == get("sku"))
            .unwrap_or_else(|| panic!("{context}: entry of another stock: {e:?}"));
        if kind == "soldout" {
            assert_eq!(story.available[sku], 0, "{context}: {e:?}");
            continue;
        }
        let id = get("id").clone();
        let cart = load
            .carts
            .get(&id)
            .unwrap_or_else(|| panic!("{context}: an entry of no cart sent: {e:?}"));
        let q: i64 = get("quantity").parse().expect("quantity");
        assert_eq!(Some(q), cart.quantity(sku), "{context}: {e:?} of {cart:?}");
        let (set, change) = match kind {
            "deduct" => (&mut story.deducts, -q),
            "refund" => (&mut story.refunds, q),
            "expire" => (&mut story.expires, q),
            other => panic!("{context}: unexpected {other} entry: {e:?}"),
        };
        if kind != "expire" {
            let index = cart.items.iter().position(|(k, _)| *k == sku).unwrap();
            assert_eq!(
                (get("cart").as_str(), get("item").as_str()),
                (
                    cart.items.len().to_string().as_str(),
                    (index + 1).to_string().as_str()
                ),
                "{context}: the cart fields of {e:?}"
            );
        }
        assert!(
            set.insert((sku, id)),
            "{context}: a second {kind} entry: {e:?}"
        );
        story.available[sku] += change;
        assert_eq!(
            get("remaining").parse::<i64>().ok(),
            Some(story.available[sku]),
            "{context}: {e:?}: remaining out of step with the entries of {} before it \
             (entry {n})",
            SKUS[sku]
        );
    }
    story
}

/// The stream tells the ledgers' story: a `deduct` entry per ledger entry, a `refund` entry
/// per refunded one, an `expire` entry per expired one (`settled`; before, only for expired
/// ones), and (`settled`) the units each stock's entries leave are what it has available.
#[track_caller]
fn check_stream(ledgers: &Ledgers, load: &Outcome, settled: bool, context: &str) {
    let story = stream_story(&ledgers.stream, load, context);
    let of_state = |f: &dyn Fn(&Detail) -> bool| -> Items {
        ledgers
            .iter()
            .enumerate()
            .flat_map(|(k, l)| {
                l.iter()
                    .filter(|(_, d)| d.as_ref().is_some_and(f))
                    .map(move |(id, _)| (k, id.clone()))
            })
            .collect()
    };
    let diff = |a: &Items, b: &Items| {
        a.difference(b)
            .take(10)
            .map(|(k, id)| format!("{} {id}", SKUS[*k]))
            .collect::<Vec<_>>()
    };
    let every = of_state(&|_| true);
    assert!(
        story.deducts == every,
        "{context}: deduct entries without a ledger entry: {:?}; ledger entries without a \
         deduct entry: {:?}",
        diff(&story.deducts, &every),
        diff(&every, &story.deducts)
    );
    let refunded = of_state(&|d| d.state == "refunded");
    assert!(
        story.refunds == refunded,
        "{context}: refund entries of entries not refunded: {:?}; refunded entries without a \
         refund entry: {:?}",
        diff(&story.refunds, &refunded),
        diff(&refunded, &story.refunds)
    );
    let expired = of_state(&|d| d.state == "expired");
    if settled {
        assert!(
            story.expires == expired,
            "{context}: expire entries of no expired entry: {:?}; expired entries without an \
             expire entry: {:?}",
            diff(&story.expires, &expired),
            diff(&expired, &story.expires)
        );
        assert_eq!(
            story.available, ledgers.available,
            "{context}: what the stream's entries leave vs what the stocks have available"
        );
    } else {
        assert!(
            story.expires.is_subset(&expired),
            "{context}: expire entries of entries not expired: {:?}",
            diff(&story.expires, &expired)
        );
    }
}

/// Waits until every short hold the load placed has passed its deadline and been returned
/// (each stock's earliest deadline is a long hold's, or there is none), then until the stream
/// has an `expire` entry per expired ledger entry.
#[track_caller]
fn let_short_holds_expire(con: &mut Connection, ids: &BTreeSet<String>) {
    let longest = Duration::from_millis(*SHORT_HOLD_MS.end());
    let returned = wait_until(longest + EVENT_DEADLINE, || {
        SKUS.iter().all(|sku| {
            let next = field(&stock_info(con, sku), "next-deadline");
            next == 0 || next > now_ms() + i64::try_from(LONG_HOLD_MS / 2).unwrap()
        })
    });
    assert!(
        returned,
        "short holds still held {:?} after the last was placed",
        longest + EVENT_DEADLINE
    );
    let ledgers = ledgers(con, ids);
    let expired = ledgers
        .iter()
        .flat_map(|l| l.values().flatten())
        .filter(|d| d.state == "expired")
        .count();
    // (A timeout is reported by the stream check, with what is missing.)
    wait_until(EVENT_DEADLINE, || {
        stream(con)
            .iter()
            .filter(|e| e.get("type").map(String::as_str) == Some("expire"))
            .count()
            >= expired
    });
    settle(con);
}

/// Refunds every cart that still holds units, with `STOCK.CART.REFUND` (all items at once,
/// each returning its quantity), and checks every stock is back to what it started with.
#[track_caller]
fn refund_everything(
    con: &mut Connection,
    load: &Outcome,
    ledgers: &Ledgers,
    context: &str,
) -> usize {
    let mut refunded = 0;
    for cart in load.carts.values() {
        let Some(state) = cart_state(ledgers, cart, context) else {
            continue;
        };
        let reply = cart.refund().query::<Value>(con);
        let expected: Vec<i64> = match state.as_str() {
            "deducted" | "held" | "confirmed" => cart.items.iter().map(|(_, q)| *q).collect(),
            _ => vec![0; cart.items.len()],
        };
        assert_eq!(
            reply.as_ref().ok().and_then(|v| ints(v, cart.items.len())),
            Some(expected),
            "{context}: STOCK.CART.REFUND of {} ({state}): {}",
            cart.id,
            describe(&reply)
        );
        if state != "refunded" && state != "expired" {
            refunded += 1;
        }
    }
    for (k, sku) in SKUS.iter().enumerate() {
        let info = stock_info(con, sku);
        assert_eq!(
            (field(&info, "available"), field(&info, "deducted")),
            (INITIAL[k], 0),
            "{context}: {sku} after every cart was refunded"
        );
    }
    let story = stream_story(&stream(con), load, context);
    assert_eq!(
        story.available, INITIAL,
        "{context}: the stream's entries after every cart was refunded"
    );
    assert_eq!(
        story.refunds.len() + story.expires.len(),
        story.deducts.len(),
        "{context}: every deduction came back by a refund or an expiry, each once"
    );
    refunded
}

// ---------------------------------------------------------------------------------------------
// The AOF
// ---------------------------------------------------------------------------------------------

/// The commands of a server's incremental AOF files (`appendonlydir/*.incr.aof`), in order; a
/// command cut short at the end of a file is left out.
fn incr_aof(server: &Server) -> Vec<Vec<String>> {
    let dir = server.dir().join("appendonlydir");
    let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let seq = name
                .strip_suffix(".incr.aof")?
                .rsplit('.')
                .next()?
                .parse()
                .ok()?;
            Some((seq, path))
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|(_, path)| aof_commands(&std::fs::read(path).expect("read the AOF")))
        .collect()
}

/// The commands of one AOF file in RESP.
fn aof_commands(bytes: &[u8]) -> Vec<Vec<String>> {
    fn line(bytes: &[u8], at: &mut usize) -> Option<String> {
        let rest = bytes.get(*at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        *at += end + 2;
        Some(text)
    }
    let mut out = Vec::new();
    let mut at = 0;
    'commands: while at < bytes.len() {
        let Some(head) = line(bytes, &mut at) else {
            break;
        };
        let n: usize = match head.strip_prefix('*').and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => panic!("AOF: expected an array before byte {at}, got {head:?}"),
        };
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(len) = line(bytes, &mut at) else {
                break 'commands;
            };
            let len: usize = match len.strip_prefix('$').and_then(|l| l.parse().ok()) {
                Some(len) => len,
                None => panic!("AOF: expected a bulk length before byte {at}, got {len:?}"),
            };
            let Some(arg) = bytes.get(at..at + len) else {
                break 'commands;
            };
            args.push(String::from_utf8_lossy(arg).into_owned());
            at += len + 2;
        }
        out.push(args);
    }
    out
}

/// What the AOF says of the carts, from its complete `MULTI`/`EXEC` blocks.
#[derive(Default)]
struct AofCarts {
    /// Carts whose placement (every item's effect and `deduct` entry) is in the AOF.
    placed: BTreeSet<String>,
    /// Carts confirmed, and refunded, on every item in one block.
    confirmed: BTreeSet<String>,
    refunded: BTreeSet<String>,
    blocks: usize,
    /// A block cut short by the kill (Redis drops it when it loads the file).
    cut_short: bool,
}

/// Each cart's effects in the AOF (`FENCE.ENTRY key available fence deducted id quantity
/// state …`, and the `XADD`s of its events): its placement (`deducted` or `held` on each item,
/// with each item's `deduct` entry), a confirmation (`confirmed`) and a refund (`refunded`,
/// with each item's `refund` entry) are each in one `MULTI`/`EXEC` with every item's, never
/// some items only, never outside a block, and a cart is placed, confirmed, refunded once. (An
/// expiry is each stock's own: the timer or a lazy return expires a cart's items stock by
/// stock.)
#[track_caller]
fn check_aof(commands: &[Vec<String>], load: &Outcome) -> AofCarts {
    let entry = |c: &Vec<String>| -> Option<(String, usize, String)> {
        if !c[0].eq_ignore_ascii_case("FENCE.ENTRY") {
            return None;
        }
        let sku = SKUS.iter().position(|s| *s == c[1])?;
        Some((c[5].clone(), sku, c.get(7)?.clone()))
    };
    // An `XADD` of a `deduct` or `refund` entry: (kind, request id, stock).
    let event = |c: &Vec<String>| -> Option<(String, String, usize)> {
        if !c[0].eq_ignore_ascii_case("XADD") {
            return None;
        }
        let at = c.iter().position(|a| a == "type")?;
        let fields: BTreeMap<&str, &str> = c[at..]
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| (p[0].as_str(), p[1].as_str()))
            .collect();
        let kind = *fields.get("type")?;
        if kind != "deduct" && kind != "refund" {
            return None;
        }
        let sku = SKUS.iter().position(|s| Some(s) == fields.get("sku"))?;
        Some((kind.to_string(), fields.get("id")?.to_string(), sku))
    };
    let mut out = AofCarts::default();
    let mut block: Option<Vec<&Vec<String>>> = None;
    for c in commands {
        match c[0].to_ascii_uppercase().as_str() {
            "MULTI" => {
                assert!(block.is_none(), "nested MULTI in the AOF");
                block = Some(Vec::new());
            }
            "EXEC" => {
                let b = block.take().expect("EXEC without MULTI in the AOF");
                out.blocks += 1;
                // (id, state) → the stocks of its effects in this block, and (kind, id) → the
                // stocks of its events.
                let mut effects: BTreeMap<(String, String), BTreeSet<usize>> = BTreeMap::new();
                let mut events: BTreeMap<(String, String), BTreeSet<usize>> = BTreeMap::new();
                for c in &b {
                    if let Some((id, sku, state)) = entry(c) {
                        assert!(
                            effects.entry((id, state)).or_default().insert(sku),
                            "two effects of one entry in one MULTI/EXEC: {b:?}"
                        );
                    }
                    if let Some((kind, id, sku)) = event(c) {
                        assert!(
                            events.entry((kind, id)).or_default().insert(sku),
                            "two events of one entry in one MULTI/EXEC: {b:?}"
                        );
                    }
                }
                for ((id, state), skus) in &effects {
                    let Some(cart) = load.carts.get(id) else {
                        panic!("AOF: an effect of no cart sent: {id} in {b:?}");
                    };
                    let (set, kind) = match state.as_str() {
                        "deducted" | "held" => (&mut out.placed, "deduct"),
                        "confirmed" => (&mut out.confirmed, ""),
                        "refunded" => (&mut out.refunded, "refund"),
                        "expired" => continue,
                        other => panic!("AOF: an effect in state {other}: {b:?}"),
                    };
                    assert_eq!(
                        skus,
                        &cart.keys(),
                        "AOF: HALF A CART: a MULTI/EXEC with the {state} effects of {:?} of \
                         cart {id}'s items {:?}: {b:?}",
                        skus,
                        cart.items
                    );
                    if !kind.is_empty() {
                        assert_eq!(
                            events.get(&(kind.to_string(), id.clone())),
                            Some(&cart.keys()),
                            "AOF: the {kind} entries of cart {id} are not in the MULTI/EXEC of \
                             its {state} effects: {b:?}"
                        );
                    }
                    assert!(
                        set.insert(id.clone()),
                        "AOF: cart {id} {state} twice (the second: {b:?})"
                    );
                }
                for ((kind, id), skus) in &events {
                    let cart = &load.carts[id];
                    assert_eq!(
                        skus,
                        &cart.keys(),
                        "AOF: the {kind} entries of part of cart {id}: {b:?}"
                    );
                    let states: &[&str] = match kind.as_str() {
                        "deduct" => &["deducted", "held"],
                        _ => &["refunded"],
                    };
                    assert!(
                        states
                            .iter()
                            .any(|s| effects.contains_key(&(id.clone(), s.to_string()))),
                        "AOF: {kind} entries of cart {id} without their effects: {b:?}"
                    );
                }
            }
            _ => match &mut block {
                Some(b) => b.push(c),
                None => {
                    if let Some((id, _, state)) = entry(c) {
                        assert_eq!(
                            state, "expired",
                            "AOF: an effect of cart {id} outside MULTI/EXEC: {c:?}"
                        );
                    }
                    assert!(
                        event(c).is_none(),
                        "AOF: a cart's event outside MULTI/EXEC: {c:?}"
                    );
                }
            },
        }
    }
    out.cut_short = block.is_some();
    out
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL under a load of carts, appendfsync always
// ---------------------------------------------------------------------------------------------

const CLIENTS: usize = 8;

fn seed() -> u64 {
    let seed = u64::try_from(now_us()).unwrap();
    println!("load seed {seed}");
    seed
}

fn set_stocks(con: &mut Connection) {
    for (sku, initial) in SKUS.iter().zip(INITIAL) {
        okay(call(con, &["STOCK.SET", sku, &initial.to_string()]));
    }
}

/// Eight clients send carts (2–3 items, unique ids, most of them held, some for a buyer,
/// all with `EVENTS`), confirm some, refund some (held, deducted and confirmed ones, with
/// `EVENTS`) and
/// replay some, on a server with `appendonly yes` and `appendfsync always`; one stock sells
/// out under the load, so carts naming it are refused. The server is killed with SIGKILL the
/// moment a random number (1,000–2,500) of changes has been acknowledged. After a restart from
/// the AOF: every cart sent is in all its stocks' ledgers or in none, one state for all its
/// items; every acknowledged cart is there, every acknowledged confirmation and refund holds
/// on every item, no refused cart is anywhere; each stock keeps `available + deducted =
/// initial` and has no entry the load did not make; the stream has one `deduct` entry per
/// ledger entry and one `refund` entry per refunded one (with `cart` and `item`) and, once the
/// short holds are due, one `expire` entry per expired one, each `remaining` in step; the AOF
/// has each cart's placement, confirmation and refund in one `MULTI`/`EXEC` of every item's
/// effect and event. Last, `STOCK.CART.REFUND … EVENTS` of every cart returns every unit, and
/// the stream says so.
#[test]
fn sigkill_under_a_load_of_carts_leaves_no_half_cart_with_appendfsync_always() {
    let mut server = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = server.conn();
    set_stocks(&mut con);
    let cons: Vec<Connection> = (0..CLIENTS).map(|_| server.conn()).collect();
    let seed = seed();
    let kill_at: u64 = StdRng::seed_from_u64(seed).random_range(1_000..=2_500);
    let killer = LoadKiller::new(&mut server, kill_at);
    let load = run_load(&killer, cons, usize::MAX, seed);
    let Some(moment) = killer.moment() else {
        panic!(
            "no kill: the load ended after {} of {kill_at} acknowledgements",
            killer.acknowledged()
        );
    };
    assert_eq!(
        moment.running, CLIENTS,
        "only {} of {CLIENTS} clients were running at the kill",
        moment.running
    );
    let ids: BTreeSet<String> = load.carts.keys().cloned().collect();

    let aof = check_aof(&incr_aof(&server), &load);
    server.restart();
    let mut con = server.conn();
    let restarted = ledgers(&mut con, &ids);
    check_carts(&restarted, &load, true, false, "right after the restart");
    check_conservation(&mut con, &restarted, "right after the restart");
    check_stream(&restarted, &load, false, "right after the restart");
    // The AOF's complete transactions are what the restarted server has.
    for (id, known) in &load.acked {
        if *known != Known::Refused {
            assert!(
                aof.placed.contains(id),
                "cart {id} acknowledged, its placement not in the AOF"
            );
        }
    }
    for id in &aof.placed {
        assert!(
            cart_state(&restarted, &load.carts[id], "after the restart").is_some(),
            "cart {id} placed in the AOF, in no ledger after the restart"
        );
    }
    for (id, known) in &load.acked {
        let expected = match known {
            Known::Confirmed => &aof.confirmed,
            Known::Refunded => &aof.refunded,
            _ => continue,
        };
        assert!(expected.contains(id), "cart {id} {known:?}, not in the AOF");
    }

    // Once the short holds are due, the restarted server has returned each once.
    let_short_holds_expire(&mut con, &ids);
    let settled = ledgers(&mut con, &ids);
    let census = check_carts(&settled, &load, true, true, "once the short holds are due");
    check_conservation(&mut con, &settled, "once the short holds are due");
    check_stream(&settled, &load, true, "once the short holds are due");
    let available: Vec<i64> = SKUS
        .iter()
        .map(|sku| field(&stock_info(&mut con, sku), "available"))
        .collect();
    let refunded = refund_everything(&mut con, &load, &settled, "after the restart");
    assert!(
        replication_errors(&server.log()).is_empty(),
        "the server log: {:?}",
        replication_errors(&server.log())
    );

    println!(
        "SIGKILL at {kill_at} acknowledgements, after {:?}: {} counted, {} requests on the \
         wire, {} of {CLIENTS} clients running",
        moment.after, moment.acknowledged, moment.outstanding, moment.running
    );
    println!(
        "load: {:?}; {} carts sent, {} on the wire at the kill; AOF: {} transactions, {} carts \
         placed, {} confirmed, {} refunded{}; settled: {census:?}; available {available:?}; \
         {refunded} carts refunded at the end, every unit back",
        load.counts,
        load.carts.len(),
        load.in_flight.len(),
        aof.blocks,
        aof.placed.len(),
        aof.confirmed.len(),
        aof.refunded.len(),
        if aof.cut_short {
            ", the last cut short by the kill"
        } else {
            ""
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A replica under the same load
// ---------------------------------------------------------------------------------------------

fn start_master() -> Server {
    Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ])
}

fn start_replica(master: &Server) -> Server {
    let port = master.port().to_string();
    let replica = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    wait_for_sync(master, &replica, SYNC);
    replica
}

/// A master with a replica under the cart load, the master killed with SIGKILL the moment a
/// random number (1,000–2,500) of changes has been acknowledged, the replica promoted
/// (`REPLICAOF NO ONE`). The promoted replica holds no half cart: every cart sent is in all
/// its stocks' ledgers or in none, one state for all its items (it may lack what the master
/// acknowledged last: replication is asynchronous), no refused cart is anywhere, each stock
/// keeps `available + deducted = initial` and the stream tells the ledgers' story. Promoted,
/// it returns the short holds by itself (one `expire` entry each), and `STOCK.CART.REFUND` of
/// every cart returns every unit. Its log shows no effect refused.
#[test]
fn a_promoted_replica_has_no_half_cart_after_its_master_is_killed_under_load() {
    let mut master = start_master();
    let replica = start_replica(&master);
    let mut m = master.conn();
    set_stocks(&mut m);
    let cons: Vec<Connection> = (0..CLIENTS).map(|_| master.conn()).collect();
    let seed = seed();
    let kill_at: u64 = StdRng::seed_from_u64(seed).random_range(1_000..=2_500);
    let killer = LoadKiller::new(&mut master, kill_at);
    let load = run_load(&killer, cons, usize::MAX, seed);
    let Some(moment) = killer.moment() else {
        panic!(
            "no kill: the load ended after {} of {kill_at} acknowledgements",
            killer.acknowledged()
        );
    };
    assert_eq!(moment.running, CLIENTS, "clients running at the kill");
    let ids: BTreeSet<String> = load.carts.keys().cloned().collect();

    let mut r = replica.conn();
    // Still a replica, its master dead: no half cart to be read.
    let before = ledgers(&mut r, &ids);
    check_carts(
        &before,
        &load,
        false,
        false,
        "on the replica, its master dead",
    );
    check_conservation(&mut r, &before, "on the replica, its master dead");
    okay(call(&mut r, &["REPLICAOF", "NO", "ONE"]));
    let promoted = ledgers(&mut r, &ids);
    let census = check_carts(&promoted, &load, false, false, "on the promoted replica");
    check_conservation(&mut r, &promoted, "on the promoted replica");
    check_stream(&promoted, &load, false, "on the promoted replica");
    let lost = load
        .acked
        .iter()
        .filter(|(id, k)| {
            **k != Known::Refused && cart_state(&promoted, &load.carts[*id], "").is_none()
        })
        .count();

    let_short_holds_expire(&mut r, &ids);
    let settled = ledgers(&mut r, &ids);
    check_carts(
        &settled,
        &load,
        false,
        true,
        "on the promoted replica, short holds due",
    );
    check_conservation(&mut r, &settled, "on the promoted replica, short holds due");
    check_stream(
        &settled,
        &load,
        true,
        "on the promoted replica, short holds due",
    );
    let refunded = refund_everything(&mut r, &load, &settled, "on the promoted replica");
    let errors = replication_errors(&replica.log());
    assert!(errors.is_empty(), "the replica's log: {errors:?}");
    println!(
        "failover: SIGKILL at {kill_at} acknowledgements after {:?}; load {:?}; {} carts sent; \
         on the promoted replica {census:?}, {lost} acknowledged carts not received (asynchronous \
         replication); {refunded} carts refunded there, every unit back",
        moment.after,
        load.counts,
        load.carts.len()
    );
}

/// The same load run to its end (8 clients, 400 requests each) on a master with a replica,
/// nothing killed: once the short holds have been returned, master and replica hold the same
/// data (`DEBUG DIGEST`, every key's `DEBUG DIGEST-VALUE`), each cart is whole on both in the
/// state its acknowledged answers say, and the replica's log shows no effect refused.
#[test]
fn a_replica_under_a_load_of_carts_has_the_masters_digest() {
    const OPS: usize = 400;
    let mut master = start_master();
    let replica = start_replica(&master);
    let mut m = master.conn();
    set_stocks(&mut m);
    let cons: Vec<Connection> = (0..CLIENTS).map(|_| master.conn()).collect();
    let seed = seed();
    let load = {
        // A target never reached: nothing is killed.
        let killer = LoadKiller::new(&mut master, u64::MAX);
        let load = run_load(&killer, cons, OPS, seed);
        assert!(killer.moment().is_none());
        load
    };
    assert!(
        load.in_flight.is_empty(),
        "requests left unanswered: {:?}",
        load.in_flight
    );
    let ids: BTreeSet<String> = load.carts.keys().cloned().collect();
    let_short_holds_expire(&mut m, &ids);
    wait_for_sync(&master, &replica, SYNC);

    let mut r = replica.conn();
    let keys = all_keys(&mut m);
    assert_eq!(all_keys(&mut r), keys, "the replica has other keys");
    for key in &keys {
        assert_eq!(
            digest_value(&mut r, key),
            digest_value(&mut m, key),
            "DEBUG DIGEST-VALUE {key} differs"
        );
    }
    assert_eq!(
        debug_digest(&mut r),
        debug_digest(&mut m),
        "DEBUG DIGEST differs"
    );
    let on_master = ledgers(&mut m, &ids);
    let census = check_carts(&on_master, &load, true, true, "on the master");
    check_conservation(&mut m, &on_master, "on the master");
    check_stream(&on_master, &load, true, "on the master");
    let on_replica = ledgers(&mut r, &ids);
    assert_eq!(
        check_carts(&on_replica, &load, true, true, "on the replica"),
        census
    );
    check_conservation(&mut r, &on_replica, "on the replica");
    check_stream(&on_replica, &load, true, "on the replica");
    let errors = replication_errors(&replica.log());
    assert!(errors.is_empty(), "the replica's log: {errors:?}");
    println!(
        "replica: load {:?}; {} carts, {census:?}; {} keys with equal digests",
        load.counts,
        load.carts.len(),
        keys.len()
    );
}
