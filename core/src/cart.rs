//! Carts: one request deducted from several stocks, all or nothing. Plain Rust over `Stock`s
//! the Redis glue has opened (and whose due holds it has returned); the glue announces what
//! this decides.
//!
//! Order of the checks (after the arguments and every key's type): a missing stock (`NOKEY`),
//! `FENCE` on every stock (`STALE`), the request id across the stocks (a replay when every
//! ledger holds it, a refusal when only some do), then each item in order as `STOCK.DEDUCT`
//! decides it (`ID`, `LIMIT`, quantity steps). The first refusal takes back every item decided
//! before it.

use crate::error::{printable, CartCode, FenceError};
use crate::ledger::Value;
use crate::stock::{Bounds, Deduct, DeductRequest, Expired, Snapshot, Stock};

/// Whether the ledgers of a cart's stocks hold a request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Every one: a replay of the whole cart.
    All,
    /// None: a new cart.
    None,
    /// Some only; the first that does (index from 0).
    Some(usize),
}

/// Where `id` stands across the stocks (`None`: a key that does not exist, whose ledger holds
/// nothing).
pub fn presence(stocks: &[Option<&Stock>], id: &[u8]) -> Presence {
    let has = |s: &Option<&Stock>| s.is_some_and(|s| s.request(id).is_some());
    if stocks.iter().all(has) {
        return Presence::All;
    }
    match stocks.iter().position(has) {
        None => Presence::None,
        Some(i) => Presence::Some(i),
    }
}

/// The first stock whose highest accepted token is above `token` (index from 0).
pub fn first_stale(stocks: &[&Stock], token: u64) -> Option<usize> {
    stocks.iter().position(|s| token < s.fence)
}

/// Decides one deduction: the state before it, and what it decided. (The caller returns the
/// stock's due holds first, the buyer's all of them: `buyer_due`.)
pub fn decide(
    stock: &mut Stock,
    request: DeductRequest<'_>,
    bounds: Bounds,
    admission: &Result<(), FenceError>,
) -> (Snapshot, Result<Deduct, FenceError>) {
    let before = stock.snapshot();
    let outcome = stock.deduct_admitting(request, bounds, || admission.clone());
    (before, outcome)
}

/// Before a deduction for `buyer` on a stock with a limit is decided: the buyer's holds due at
/// `now` that are still stored as held (more came due at once than a command's first step
/// returns), returned now, so the limit counts what the buyer holds now. Costs the number of
/// due holds not yet returned, and nothing when none is left.
pub fn buyer_due(stock: &mut Stock, buyer: &[u8], now: u64) -> Vec<Expired> {
    if stock.limit == 0 || !stock.has_due(now) {
        return Vec::new();
    }
    stock.expire_buyer_due(buyer, now)
}

/// What deducting a cart decided: the quantity left in each stock, or the refusal.
#[derive(Debug)]
pub struct Deducted {
    pub outcome: Result<Vec<i64>, FenceError>,
    /// Each stock's state before its item, to take the whole cart back (`take_back`).
    pub before: Vec<Snapshot>,
}

/// Takes back a cart `deduct_all` made (its events could not be added, say).
pub fn take_back(stocks: &mut [&mut Stock], before: &[Snapshot], id: &[u8]) {
    for (stock, snapshot) in stocks.iter_mut().zip(before).rev() {
        stock.restore(*snapshot, Some((id, None)));
    }
}

/// Deducts `quantities[i]` from `stocks[i]`, each with `request`'s id, buyer, hold and fence,
/// every one or none (`names[i]` for a refusal's message). Assumes the id step passed (no
/// stock holds the id), every token is fresh, and due holds were returned (`buyer_due`). Checks each item in order; the first refusal
/// takes back the items before it and is answered `<CODE> <index> <key>` (`SOLDOUT`,
/// `LEDGERFULL`, `LIMIT`), or as `STOCK.DEDUCT` would answer it.
pub fn deduct_all(
    stocks: &mut [&mut Stock],
    names: &[&[u8]],
    quantities: &[i64],
    request: DeductRequest<'_>,
    bounds: Bounds,
    admissions: &[Result<(), FenceError>],
) -> Deducted {
    let mut done: Vec<Snapshot> = Vec::with_capacity(stocks.len());
    let mut left = Vec::with_capacity(stocks.len());
    let mut failure = None;
    for (i, stock) in stocks.iter_mut().enumerate() {
        let request = DeductRequest {
            quantity: quantities.get(i).copied().unwrap_or(0),
            ..request
        };
        let admission = admissions.get(i).cloned().unwrap_or(Ok(()));
        let (before, outcome) = decide(stock, request, bounds, &admission);
        let item = |code| FenceError::CartItem {
            code,
            index: i + 1,
            key: printable(names.get(i).copied().unwrap_or_default()),
        };
        match outcome {
            Ok(Deduct::Deducted(remaining)) => {
                done.push(before);
                left.push(remaining);
            }
            Ok(Deduct::SoldOut) => failure = Some(item(CartCode::SoldOut)),
            Ok(Deduct::Replayed(_)) => {
                failure = Some(FenceError::PartialCart {
                    id: printable(request.id.unwrap_or_default()),
                    index: i + 1,
                    key: printable(names.get(i).copied().unwrap_or_default()),
                })
            }
            Err(FenceError::LedgerFull { .. }) => failure = Some(item(CartCode::LedgerFull)),
            Err(FenceError::Limit { .. }) => failure = Some(item(CartCode::Limit)),
            Err(FenceError::Stale { .. }) => failure = Some(item(CartCode::Stale)),
            Err(e) => failure = Some(e),
        }
        if failure.is_some() {
            break;
        }
    }
    if let Some(refusal) = failure {
        take_back(stocks, &done, request.id.unwrap_or_default());
        return Deducted {
            outcome: Err(refusal),
            before: Vec::new(),
        };
    }
    Deducted {
        outcome: Ok(left),
        before: done,
    }
}

/// A cart refund made: what each stock gave back, and each stock's state before it (to take the
/// refund back with `undo_refunds`).
#[derive(Debug)]
pub struct Refunded {
    pub back: Vec<i64>,
    pub before: Vec<(Snapshot, Option<Value>)>,
}

/// Takes back a refund `refund_all` made (its events could not be added, say).
pub fn undo_refunds(stocks: &mut [&mut Stock], before: &[(Snapshot, Option<Value>)], id: &[u8]) {
    for (stock, (snapshot, old)) in stocks.iter_mut().zip(before).rev() {
        stock.restore(*snapshot, Some((id, *old)));
    }
}

/// Refunds request `id` on every stock, or on none: what each gave back (0 for an item
/// already refunded or expired). A refund that would pass 2^63-1 takes back those before it.
pub fn refund_all(stocks: &mut [&mut Stock], id: &[u8]) -> Result<Refunded, FenceError> {
    let mut done = Vec::with_capacity(stocks.len());
    let mut back = Vec::with_capacity(stocks.len());
    let mut failure = None;
    for stock in stocks.iter_mut() {
        let before = (stock.snapshot(), stock.request_at(id, 0));
        match stock.refund(id) {
            Ok(quantity) => {
                done.push(before);
                back.push(quantity);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        undo_refunds(stocks, &done, id);
        return Err(e);
    }
    Ok(Refunded { back, before: done })
}

/// Confirms request `id` on every stock, or on none: refused with the first ended item's
/// `EXPIRED` or `REFUNDED` before anything changes. Returns which stocks it confirmed now (the
/// others were confirmed already, or deducted without a hold).
pub fn confirm_all(stocks: &mut [&mut Stock], id: &[u8]) -> Result<Vec<bool>, FenceError> {
    for stock in stocks.iter() {
        if let Some(value) = stock.request_at(id, 0) {
            match value.state {
                crate::ledger::State::Expired => {
                    return Err(FenceError::Expired {
                        id: printable(id),
                        at: value.deadline,
                    })
                }
                crate::ledger::State::Refunded => {
                    return Err(FenceError::Refunded { id: printable(id) })
                }
                _ => {}
            }
        }
    }
    stocks
        .iter_mut()
        .map(|s| Ok(s.confirm(id)? == crate::stock::Confirm::Confirmed))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stock::Hold;

    fn bounds() -> Bounds {
        Bounds {
            ledger: 100,
            id_length: 512,
            buyers: 100,
        }
    }

    fn cart(id: &[u8]) -> DeductRequest<'_> {
        DeductRequest {
            quantity: 0,
            id: Some(id),
            fence: None,
            hold: None,
            buyer: None,
        }
    }

    fn run(stocks: &mut [Stock], quantities: &[i64], request: DeductRequest<'_>) -> Deducted {
        let names: Vec<Vec<u8>> = (0..stocks.len()).map(|i| format!("k{i}").into()).collect();
        let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let admissions = vec![Ok(()); stocks.len()];
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        deduct_all(
            &mut refs,
            &names,
            quantities,
            request,
            bounds(),
            &admissions,
        )
    }

    #[test]
    fn a_cart_is_deducted_whole_or_not_at_all() {
        let mut stocks = vec![Stock::new(5), Stock::new(1), Stock::new(9)];
        let before = stocks.clone();
        // The second item is short: nothing anywhere.
        let d = run(&mut stocks, &[1, 2, 1], cart(b"o1"));
        assert_eq!(
            d.outcome,
            Err(FenceError::CartItem {
                code: CartCode::SoldOut,
                index: 2,
                key: "k1".into()
            })
        );
        assert_eq!(stocks, before);
        let d = run(&mut stocks, &[1, 1, 9], cart(b"o1"));
        assert_eq!(d.outcome, Ok(vec![4, 0, 0]));
        // Taken back whole (its events could not be added), then made again.
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        take_back(&mut refs, &d.before, b"o1");
        assert_eq!(stocks, before);
        let d = run(&mut stocks, &[1, 1, 9], cart(b"o1"));
        assert_eq!(d.outcome, Ok(vec![4, 0, 0]));
        let refs: Vec<Option<&Stock>> = stocks.iter().map(Some).collect();
        assert_eq!(presence(&refs, b"o1"), Presence::All);
        assert_eq!(presence(&refs, b"o2"), Presence::None);
        assert_eq!(
            presence(&[Some(&stocks[0]), None], b"o1"),
            Presence::Some(0)
        );
        // Refunded on all at once; a second refund gives nothing.
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        let r = refund_all(&mut refs, b"o1").map(|r| r.back);
        assert_eq!(r, Ok(vec![1, 1, 9]));
        assert_eq!(
            refund_all(&mut refs, b"o1").map(|r| r.back),
            Ok(vec![0, 0, 0])
        );
        assert_eq!(
            stocks.iter().map(|s| s.available).collect::<Vec<_>>(),
            vec![5, 1, 9]
        );
    }

    #[test]
    fn each_refusal_names_its_item() {
        let mut stocks = vec![Stock::new(5), Stock::new(5)];
        stocks[1].limit = 1;
        let before = stocks.clone();
        let req = DeductRequest {
            buyer: Some(b"u"),
            ..cart(b"o1")
        };
        let d = run(&mut stocks, &[1, 2], req);
        assert_eq!(
            d.outcome,
            Err(FenceError::CartItem {
                code: CartCode::Limit,
                index: 2,
                key: "k1".into()
            })
        );
        assert_eq!(
            stocks, before,
            "the first item was taken back, its buyer too"
        );
        // A full ledger on the first item.
        let names: Vec<&[u8]> = vec![b"a", b"b"];
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        let full = Bounds {
            ledger: 0,
            ..bounds()
        };
        let d = deduct_all(
            &mut refs,
            &names,
            &[1, 1],
            cart(b"o2"),
            full,
            &[Ok(()), Ok(())],
        );
        assert_eq!(
            d.outcome,
            Err(FenceError::CartItem {
                code: CartCode::LedgerFull,
                index: 1,
                key: "a".into()
            })
        );
        // Another refusal passes as it is (an eviction risk on the second item).
        let risk = FenceError::EvictionRisk {
            policy: "allkeys-lru".into(),
        };
        let d = deduct_all(
            &mut refs,
            &names,
            &[1, 1],
            cart(b"o2"),
            bounds(),
            &[Ok(()), Err(risk.clone())],
        );
        assert_eq!(d.outcome, Err(risk));
        assert_eq!(stocks, before);
        stocks[0].fence = 7;
        let refs: Vec<&Stock> = stocks.iter().collect();
        assert_eq!(first_stale(&refs, 6), Some(0));
        assert_eq!(first_stale(&refs, 7), None);
    }

    #[test]
    fn a_cart_of_holds_is_confirmed_whole_or_refused() {
        let mut stocks = vec![Stock::new(5), Stock::new(5)];
        let req = DeductRequest {
            hold: Some(Hold {
                deadline: 100,
                events: false,
            }),
            ..cart(b"o1")
        };
        assert_eq!(run(&mut stocks, &[1, 1], req).outcome, Ok(vec![4, 4]));
        // One item refunded alone: the cart cannot be confirmed, nothing changes.
        assert_eq!(stocks[1].refund(b"o1"), Ok(1));
        let before = stocks.clone();
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        assert_eq!(
            confirm_all(&mut refs, b"o1"),
            Err(FenceError::Refunded { id: "o1".into() })
        );
        assert_eq!(stocks, before);
        let mut stocks = vec![Stock::new(5), Stock::new(5)];
        assert_eq!(run(&mut stocks, &[1, 1], req).outcome, Ok(vec![4, 4]));
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        assert_eq!(confirm_all(&mut refs, b"o1"), Ok(vec![true, true]));
        assert_eq!(confirm_all(&mut refs, b"o1"), Ok(vec![false, false]));
        // Expired together at their one deadline.
        let mut stocks = vec![Stock::new(5), Stock::new(5)];
        assert_eq!(run(&mut stocks, &[1, 1], req).outcome, Ok(vec![4, 4]));
        for s in stocks.iter_mut() {
            assert_eq!(s.expire_due(100, 10).len(), 1);
        }
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        assert_eq!(
            confirm_all(&mut refs, b"o1"),
            Err(FenceError::Expired {
                id: "o1".into(),
                at: 100
            })
        );
    }

    #[test]
    fn an_overflowing_refund_takes_the_others_back() {
        let mut stocks = vec![Stock::new(5), Stock::new(5)];
        assert_eq!(
            run(&mut stocks, &[1, 1], cart(b"o1")).outcome,
            Ok(vec![4, 4])
        );
        assert_eq!(stocks[1].add(i64::MAX - 4), Ok(i64::MAX));
        let before = stocks.clone();
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        assert_eq!(
            refund_all(&mut refs, b"o1").map(|r| r.back),
            Err(FenceError::Overflow)
        );
        assert_eq!(stocks, before);
        // A refund made and taken back.
        stocks[1] = Stock::new(5);
        let mut stocks = vec![Stock::new(5), Stock::new(5)];
        assert_eq!(
            run(&mut stocks, &[1, 1], cart(b"o2")).outcome,
            Ok(vec![4, 4])
        );
        let before = stocks.clone();
        let mut refs: Vec<&mut Stock> = stocks.iter_mut().collect();
        let r = refund_all(&mut refs, b"o2").expect("refunded");
        assert_eq!(r.back, vec![1, 1]);
        undo_refunds(&mut refs, &r.before, b"o2");
        assert_eq!(stocks, before);
    }
}
