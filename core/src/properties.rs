//! Property tests of the pure logic: random inputs and random operation sequences checked
//! against simple reference models. `PROPTEST_CASES` scales them (`make fuzz` runs many more).

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;

use crate::args::{parse_acquire_options, parse_deduct_options, parse_i64, Decimal, MAX_WAIT_MS};
use crate::clock::{TokenClock, CEILING};
use crate::error::FenceError;
use crate::lease::{decide_acquire, decide_release, decide_renew, Acquire, LeaseView};
use crate::stock::{Deduct, DeductRequest, Stock};
use crate::waitq::{KeyId, WaitQueues};

/// Redis's integer syntax, written the slow and obvious way.
fn reference_i64(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    if text == "-0" {
        return None;
    }
    text.parse::<i64>().ok()
}

fn word() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12),
        "-?[0-9]{0,20}".prop_map(String::into_bytes),
        prop_oneof![
            Just("ID"),
            Just("id"),
            Just("FENCE"),
            Just("fence"),
            Just("WAIT"),
            Just("0"),
            Just("")
        ]
        .prop_map(|s| s.as_bytes().to_vec()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
    ]
}

proptest! {
    #[test]
    fn integers_parse_like_redis(s in word()) {
        prop_assert_eq!(parse_i64(&s), reference_i64(&s));
    }

    #[test]
    fn every_i64_round_trips(n in any::<i64>()) {
        prop_assert_eq!(parse_i64(n.to_string().as_bytes()), Some(n));
        // What the module writes for replicas and events is what Redis would write.
        let written = Decimal::new(n);
        let expected = n.to_string();
        prop_assert_eq!(written.as_bytes(), expected.as_bytes());
    }

    #[test]
    fn option_parsers_never_panic_and_accept_only_valid_input(words in proptest::collection::vec(word(), 0..9)) {
        let refs: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
        if let Ok(o) = parse_deduct_options(&refs) {
            prop_assert!(refs.len() <= 9);
            prop_assert!(o.id.is_none_or(|id| !id.is_empty()));
            prop_assert!(o.fence.is_none_or(|t| t > 0));
        }
        if let Ok(w) = parse_acquire_options(&refs) {
            prop_assert!(refs.len() <= 2);
            prop_assert!(w.is_none_or(|t| (0..=MAX_WAIT_MS).contains(&t)));
        }
        for e in [parse_deduct_options(&refs).err(), parse_acquire_options(&refs).err()].into_iter().flatten() {
            let m = e.message();
            prop_assert!(m.starts_with("ERR "), "{}", m);
            prop_assert!(!m.contains('\n') && !m.contains('\r') && !m.contains('\0'));
        }
    }

    #[test]
    fn tokens_rise_strictly_and_follow_the_clock(steps in proptest::collection::vec((prop_oneof![0u64..3_000_000_000_000_000u64, CEILING - 5..=u64::MAX], any::<bool>()), 1..200)) {
        let clock = TokenClock::new();
        let mut last = 0u64;
        for (now, observe) in steps {
            if observe {
                clock.observe(now);
                prop_assert!(clock.last() >= now.min(CEILING).max(last));
                prop_assert!(clock.last() <= CEILING);
                last = clock.last();
            } else {
                match clock.next(now) {
                    Some(t) => {
                        prop_assert!(t > last);
                        prop_assert!(t >= now);
                        prop_assert!(t <= CEILING);
                        last = t;
                    }
                    // Refused only when the next token would pass the ceiling; nothing moved.
                    None => {
                        prop_assert!(last == CEILING || now > CEILING);
                        prop_assert_eq!(clock.last(), last);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum LockOp {
    Acquire(u8),
    Renew(u8),
    Release(u8),
    Expire,
}

fn lock_op() -> impl Strategy<Value = LockOp> {
    prop_oneof![
        (0u8..4).prop_map(LockOp::Acquire),
        (0u8..4).prop_map(LockOp::Renew),
        (0u8..4).prop_map(LockOp::Release),
        Just(LockOp::Expire),
    ]
}

proptest! {
    /// The lock state machine against a model: at most one holder; re-acquire keeps the token;
    /// renew and release succeed for the holder only; a new grant's token beats every earlier one.
    #[test]
    fn lock_state_machine_matches_the_model(ops in proptest::collection::vec(lock_op(), 1..200), waiters in 0usize..2) {
        let clock = TokenClock::new();
        // The held lease, as stored: (owner, token).
        let mut lease: Option<(Vec<u8>, u64)> = None;
        fn view(l: &Option<(Vec<u8>, u64)>) -> Option<LeaseView<'_>> {
            l.as_ref().map(|(owner, token)| LeaseView { owner, token: *token })
        }
        let mut model: Option<(u8, u64)> = None;
        let mut highest = 0u64;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                LockOp::Acquire(o) => {
                    let owner = [o];
                    match decide_acquire(view(&lease), &owner, waiters) {
                        Acquire::Grant => {
                            prop_assert!(model.is_none() && waiters == 0);
                            let t = clock.next(step as u64).unwrap_or(u64::MAX);
                            prop_assert!(t > highest);
                            highest = t;
                            lease = Some((owner.to_vec(), t));
                            model = Some((o, t));
                        }
                        Acquire::Reacquire(t) => prop_assert_eq!(model, Some((o, t))),
                        Acquire::Contended => prop_assert!(waiters > 0 || model.is_some_and(|(h, _)| h != o)),
                    }
                }
                LockOp::Renew(o) => {
                    let got = decide_renew(view(&lease), &[o]);
                    prop_assert_eq!(got, model.filter(|(h, _)| *h == o).map(|(_, t)| t));
                }
                LockOp::Release(o) => {
                    let freed = decide_release(view(&lease), &[o]);
                    prop_assert_eq!(freed, model.is_some_and(|(h, _)| h == o));
                    if freed {
                        lease = None;
                        model = None;
                    }
                }
                LockOp::Expire => {
                    lease = None;
                    model = None;
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum StockOp {
    Deduct {
        qty: i64,
        id: Option<u8>,
        fence: Option<u64>,
    },
    Refund(u8),
    Add(i64),
    Reset(i64),
}

fn stock_op() -> impl Strategy<Value = StockOp> {
    prop_oneof![
        4 => (1i64..5, proptest::option::of(0u8..8), proptest::option::of(1u64..6))
            .prop_map(|(qty, id, fence)| StockOp::Deduct { qty, id, fence }),
        2 => (0u8..8).prop_map(StockOp::Refund),
        1 => (1i64..5).prop_map(StockOp::Add),
        1 => (0i64..10).prop_map(StockOp::Reset),
    ]
}

/// The stock, the obvious way.
#[derive(Default)]
struct StockModel {
    available: i64,
    fence: u64,
    ledger: HashMap<u8, i64>,
}

proptest! {
    /// Stock arithmetic against the model; invariants: never negative, a request id deducts at
    /// most once, and available + held == initial + added for each sale.
    #[test]
    fn stock_matches_the_model(initial in 0i64..10, ops in proptest::collection::vec(stock_op(), 1..200), max_ledger in 0i64..6) {
        let mut s = Stock::new(initial);
        let mut m = StockModel { available: initial, ..StockModel::default() };
        let mut supplied = initial;
        for op in ops {
            match op {
                StockOp::Deduct { qty, id, fence } => {
                    let id_bytes = id.map(|i| [i]);
                    let got = s.deduct(DeductRequest { quantity: qty, id: id_bytes.as_ref().map(|b| &b[..]), fence, hold: None, buyer: None }, max_ledger, i64::MAX);
                    let want = if fence.is_some_and(|t| t < m.fence) {
                        Err(FenceError::Stale { token: fence.unwrap_or(0), highest: m.fence })
                    } else if id.is_some_and(|i| m.ledger.contains_key(&i)) {
                        Ok(Deduct::Replayed(m.available))
                    } else if id.is_some() && m.ledger.len() as i64 >= max_ledger {
                        Err(FenceError::LedgerFull { max: max_ledger })
                    } else if m.available < qty {
                        Ok(Deduct::SoldOut)
                    } else {
                        m.available -= qty;
                        if let Some(t) = fence { m.fence = t; }
                        if let Some(i) = id { m.ledger.insert(i, qty); }
                        Ok(Deduct::Deducted(m.available))
                    };
                    prop_assert_eq!(got, want);
                }
                StockOp::Refund(i) => {
                    let want = match m.ledger.get_mut(&i) {
                        Some(q) if *q > 0 => { let r = *q; *q = 0; m.available += r; r }
                        _ => 0,
                    };
                    prop_assert_eq!(s.refund(&[i]), Ok(want));
                }
                StockOp::Add(q) => {
                    m.available += q;
                    supplied += q;
                    prop_assert_eq!(s.add(q), Ok(m.available));
                }
                StockOp::Reset(q) => {
                    s.reset(q);
                    m.available = q;
                    m.ledger.clear();
                    supplied = q;
                }
            }
            prop_assert!(s.available >= 0);
            prop_assert_eq!(s.available, m.available);
            prop_assert_eq!(s.fence, m.fence);
            for i in 0u8..8 {
                prop_assert_eq!(s.request(&[i]), m.ledger.get(&i).copied());
            }
            let held: i64 = m.ledger.values().sum();
            // Deductions without an id are not in the ledger, so this is an upper bound.
            prop_assert!(s.available + held <= supplied);
            prop_assert_eq!(s.available + s.deducted, supplied);
        }
    }
}

#[derive(Debug, Clone)]
enum QueueOp {
    Push(u8),
    Pop(u8),
    Remove(u8, usize),
}

proptest! {
    /// The wait queue against a VecDeque per key: FIFO, removals anywhere, counts.
    #[test]
    fn wait_queues_are_fifo(ops in proptest::collection::vec(prop_oneof![
        (0u8..3).prop_map(QueueOp::Push),
        (0u8..3).prop_map(QueueOp::Pop),
        ((0u8..3), 0usize..8).prop_map(|(k, i)| QueueOp::Remove(k, i)),
    ], 1..200)) {
        let mut q: WaitQueues<u64> = WaitQueues::default();
        let mut model: HashMap<u8, VecDeque<u64>> = HashMap::new();
        let key = |k: u8| KeyId::new(0, &[k]);
        let mut next = 0u64;
        for op in ops {
            match op {
                QueueOp::Push(k) => {
                    next += 1;
                    let id = q.push(&key(k), b"o", 1, next);
                    prop_assert!(id > 0);
                    model.entry(k).or_default().push_back(next);
                }
                QueueOp::Pop(k) => {
                    let got = q.pop_front(&key(k)).map(|w| w.handle);
                    prop_assert_eq!(got, model.entry(k).or_default().pop_front());
                }
                QueueOp::Remove(k, i) => {
                    let m = model.entry(k).or_default();
                    if let Some(&h) = m.get(i) {
                        m.remove(i);
                        let got = q.remove_by(|x| *x == h).map(|(_, w)| w.handle);
                        prop_assert_eq!(got, Some(h));
                    }
                }
            }
            for k in 0u8..3 {
                prop_assert_eq!(q.len(&key(k)), model.get(&k).map_or(0, VecDeque::len));
            }
            prop_assert_eq!(q.total(), model.values().map(VecDeque::len).sum::<usize>());
        }
    }
}

#[derive(Debug, Clone)]
enum BuyerOp {
    Deduct {
        qty: i64,
        id: u8,
        buyer: Option<u8>,
        hold: Option<u64>,
    },
    Refund(u8),
    Confirm(u8),
    Expire(u64),
    Limit(i64),
    Undo {
        qty: i64,
        id: u8,
        buyer: u8,
    },
}

fn buyer_op() -> impl Strategy<Value = BuyerOp> {
    prop_oneof![
        6 => (1i64..4, 0u8..24, proptest::option::of(0u8..5), proptest::option::of(1u64..50))
            .prop_map(|(qty, id, buyer, hold)| BuyerOp::Deduct { qty, id, buyer, hold }),
        2 => (0u8..24).prop_map(BuyerOp::Refund),
        1 => (0u8..24).prop_map(BuyerOp::Confirm),
        1 => (0u64..60).prop_map(BuyerOp::Expire),
        1 => (0i64..6).prop_map(BuyerOp::Limit),
        1 => (1i64..4, 24u8..30, 0u8..8).prop_map(|(qty, id, buyer)| BuyerOp::Undo { qty, id, buyer }),
    ]
}

/// One ledger entry of the buyer model: quantity, whether it holds units, buyer, deadline.
#[derive(Debug, Clone, Copy)]
struct ModelEntry {
    qty: i64,
    holding: bool,
    buyer: Option<u8>,
    deadline: Option<u64>,
}

proptest! {
    /// Limits per buyer against the model: every deduction is decided as the model decides it
    /// (replays first, then the limit, then the quantity), each buyer holds exactly the units
    /// of its entries that hold units (after refunds, confirmations, expiries and undone
    /// deductions), no deduction takes a buyer past the limit in force, and a save and load
    /// keeps it all.
    #[test]
    fn buyers_match_the_model(initial in 0i64..30, ops in proptest::collection::vec(buyer_op(), 1..150)) {
        use crate::stock::{Bounds, Hold};
        let mut s = Stock::new(initial);
        let mut ledger: HashMap<u8, ModelEntry> = HashMap::new();
        let mut available = initial;
        let mut limit = 0i64;
        let bounds = Bounds { ledger: i64::MAX, id_length: 512, buyers: i64::MAX };
        let units = |ledger: &HashMap<u8, ModelEntry>, b: u8| -> i64 {
            ledger.values().filter(|e| e.holding && e.buyer == Some(b)).map(|e| e.qty).sum()
        };
        for op in ops {
            match op {
                BuyerOp::Deduct { qty, id, buyer, hold } => {
                    let (idb, bb) = ([id], buyer.map(|b| [b]));
                    let req = DeductRequest {
                        quantity: qty,
                        id: Some(&idb),
                        fence: None,
                        hold: hold.map(|deadline| Hold { deadline, events: false }),
                        buyer: bb.as_ref().map(|b| &b[..]),
                    };
                    let got = s.deduct_admitting(req, bounds, || Ok(()));
                    let want = if ledger.contains_key(&id) {
                        Ok(Deduct::Replayed(available))
                    } else if limit > 0 && buyer.is_none() {
                        Err(FenceError::BuyerRequired { limit })
                    } else if let Some(b) = buyer.filter(|b| limit > 0 && units(&ledger, *b) + qty > limit) {
                        Err(FenceError::Limit { buyer: crate::error::printable(&[b]), has: units(&ledger, b), max: limit })
                    } else if available < qty {
                        Ok(Deduct::SoldOut)
                    } else {
                        available -= qty;
                        ledger.insert(id, ModelEntry { qty, holding: true, buyer, deadline: hold });
                        Ok(Deduct::Deducted(available))
                    };
                    prop_assert_eq!(got, want);
                }
                BuyerOp::Refund(id) => {
                    let want = match ledger.get_mut(&id) {
                        Some(e) if e.holding => { e.holding = false; e.deadline = None; available += e.qty; e.qty }
                        _ => 0,
                    };
                    prop_assert_eq!(s.refund(&[id]), Ok(want));
                }
                BuyerOp::Confirm(id) => {
                    if let Some(e) = ledger.get_mut(&id) {
                        if e.holding {
                            e.deadline = None;
                        }
                    }
                    let _ = s.confirm(&[id]);
                }
                BuyerOp::Expire(now) => {
                    let mut n = 0;
                    for e in ledger.values_mut() {
                        if e.holding && e.deadline.is_some_and(|d| d <= now) {
                            e.holding = false;
                            available += e.qty;
                            n += 1;
                        }
                    }
                    prop_assert_eq!(s.expire_due(now, usize::MAX).len(), n);
                }
                BuyerOp::Limit(n) => {
                    s.limit = n;
                    limit = n;
                }
                BuyerOp::Undo { qty, id, buyer } => {
                    // A deduction taken back (a failed EVENTS append): nothing of it stays.
                    let before_stock = s.clone();
                    let snap = s.snapshot();
                    let (idb, bb) = ([id], [buyer]);
                    let req = DeductRequest { quantity: qty, id: Some(&idb), fence: None, hold: None, buyer: Some(&bb) };
                    if let Ok(Deduct::Deducted(_)) = s.deduct_admitting(req, bounds, || Ok(())) {
                        s.restore(snap, Some((&idb, None)));
                        prop_assert_eq!(&s, &before_stock);
                        prop_assert_eq!(s.buyers_len(), before_stock.buyers_len());
                    }
                }
            }
            prop_assert_eq!(s.available, available);
            for b in 0u8..8 {
                prop_assert_eq!(s.buyer_units(&[b], 0), units(&ledger, b), "buyer {}", b);
            }
        }
        // Saved and loaded (encoding 5), it is the same stock.
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        let mut back = Stock::new(s.available);
        back.limit = s.limit;
        s.save_buyer_blobs(|b| blobs.push(b.to_vec()));
        for b in &blobs {
            prop_assert!(back.insert_buyer_blob(b).is_ok());
        }
        blobs.clear();
        s.save_entry_blobs(|b| blobs.push(b.to_vec()));
        for b in &blobs {
            prop_assert!(back.insert_entry_blob(b, crate::ledger::Format::V5).is_ok());
        }
        back.fence = s.fence;
        back.deducted = s.deducted;
        prop_assert_eq!(back.loaded(), Ok(()));
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(back.summaries(), s.summaries());
    }
}

proptest! {
    /// Carts over three stocks against the obvious model: a cart is deducted from every stock
    /// (each by its quantity) or leaves every stock exactly as it was, and a refund of a cart
    /// returns every item, whatever the stocks, limits, buyers and order of operations.
    #[test]
    fn carts_are_all_or_nothing(
        initial in proptest::collection::vec(0i64..6, 3),
        limits in proptest::collection::vec(0i64..4, 3),
        ops in proptest::collection::vec(
            (0u8..12, proptest::collection::vec(1i64..3, 3), 1usize..4, proptest::option::of(0u8..3), any::<bool>()),
            1..80,
        ),
    ) {
        use crate::cart::{deduct_all, presence, refund_all, Presence};
        use crate::stock::Bounds;
        let mut stocks: Vec<Stock> = initial.iter().map(|q| Stock::new(*q)).collect();
        for (s, l) in stocks.iter_mut().zip(&limits) {
            s.limit = *l;
        }
        let bounds = Bounds { ledger: i64::MAX, id_length: 512, buyers: i64::MAX };
        let names: Vec<&[u8]> = vec![b"a", b"b", b"c"];
        for (id, quantities, width, buyer, refund) in ops {
            let idb = [id];
            let width = width.min(3);
            if refund {
                let mut refs: Vec<&mut Stock> = stocks.iter_mut().take(width).collect();
                let avail: Vec<i64> = refs.iter().map(|s| s.available).collect();
                let p = presence(&refs.iter().map(|s| Some(&**s)).collect::<Vec<_>>(), &idb);
                if p == Presence::All {
                    let back = refund_all(&mut refs, &idb).map(|r| r.back);
                    prop_assert!(back.is_ok());
                    let back = back.unwrap_or_default();
                    for ((s, a), b) in refs.iter().zip(&avail).zip(&back) {
                        prop_assert_eq!(s.available, a + b);
                    }
                }
            } else {
                let bb = buyer.map(|b| [b]);
                let request = DeductRequest {
                    quantity: 0,
                    id: Some(&idb),
                    fence: None,
                    hold: None,
                    buyer: bb.as_ref().map(|b| &b[..]),
                };
                let mut refs: Vec<&mut Stock> = stocks.iter_mut().take(width).collect();
                let p = presence(&refs.iter().map(|s| Some(&**s)).collect::<Vec<_>>(), &idb);
                if p != Presence::None {
                    continue;
                }
                let before: Vec<Stock> = refs.iter().map(|s| (**s).clone()).collect();
                let admissions = vec![Ok(()); width];
                let d = deduct_all(&mut refs, &names[..width], &quantities[..width], request, bounds, &admissions);
                match d.outcome {
                    Ok(left) => {
                        for ((s, b), (l, q)) in refs.iter().zip(&before).zip(left.iter().zip(&quantities)) {
                            prop_assert_eq!(s.available, b.available - q);
                            prop_assert_eq!(s.available, *l);
                        }
                    }
                    Err(_) => {
                        for (s, b) in refs.iter().zip(&before) {
                            prop_assert_eq!(&**s, b);
                        }
                    }
                }
            }
            for s in &stocks {
                prop_assert!(s.available >= 0);
            }
        }
        for (s, q) in stocks.iter().zip(&initial) {
            prop_assert_eq!(s.available + s.deducted, *q);
        }
    }
}
