//! Stock arithmetic: the available quantity, the request-id ledger and the fence floor.
//! Plain Rust; the Redis glue only stores a `Stock` and replies with what it decides.

use crate::error::{FenceError, Name};
use crate::ledger::{Insert, Ledger};

/// A stock: what is available, what each request took, and the highest token accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stock {
    /// The quantity available to sell.
    pub available: i64,
    /// The highest fencing token a successful deduction has presented (0: none yet).
    pub fence: u64,
    /// The total deducted and not refunded since the sale started (saturating).
    pub deducted: i64,
    /// Request id -> quantity it holds (0 once refunded).
    ledger: Ledger,
    /// Restock id -> quantity it added (`STOCK.ADD … ID`), so a restock sent twice adds once.
    restocks: Ledger,
}

/// The result of a restock that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restock {
    /// Added; this much is available now.
    Added(i64),
    /// The restock id was known already: nothing added; this much is available.
    Replayed(i64),
}

/// A stock's scalar state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    available: i64,
    fence: u64,
    deducted: i64,
}

/// The result of a deduction that was not refused with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deduct {
    /// Deducted; this much remains.
    Deducted(i64),
    /// The request id was in the ledger already: nothing deducted; this much remains.
    Replayed(i64),
    /// Fewer than the quantity are available: nothing changed.
    SoldOut,
}

/// What a deduction asks for, already parsed and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeductRequest<'a> {
    pub quantity: i64,
    pub id: Option<&'a [u8]>,
    pub fence: Option<u64>,
}

impl Stock {
    /// A new stock with `available` items and an empty ledger.
    pub fn new(available: i64) -> Self {
        Self {
            available,
            ..Self::default()
        }
    }

    /// Starts a new sale: `available` set, both ledgers cleared, fence kept.
    pub fn reset(&mut self, available: i64) {
        self.available = available;
        self.deducted = 0;
        // Freed in blocks: a million ids cost a few hundred frees.
        self.ledger = Ledger::new();
        self.restocks = Ledger::new();
    }

    /// Restocks by `quantity`; returns the new available quantity.
    pub fn add(&mut self, quantity: i64) -> Result<i64, FenceError> {
        self.available = self
            .available
            .checked_add(quantity)
            .ok_or(FenceError::Overflow)?;
        Ok(self.available)
    }

    /// Deducts in the contract's order of checks: fence, request id, quantity.
    /// `max_ledger` bounds the number of ids the ledger may hold and `max_id_length` the length
    /// of a new request id; a replay of an id already in the ledger answers whatever its
    /// length (limits apply to new state only). (The command admits new ids through
    /// `deduct_admitting`; the tests use this.)
    #[cfg(test)]
    pub fn deduct(
        &mut self,
        req: DeductRequest<'_>,
        max_ledger: i64,
        max_id_length: i64,
    ) -> Result<Deduct, FenceError> {
        self.deduct_admitting(req, max_ledger, max_id_length, || Ok(()))
    }

    /// `deduct`, where a request id the ledger does not hold must also pass `admit_new_id`
    /// (called in the id step, after a replay is recognised and the id's length checked, and
    /// before the ledger bound), so a replay is still answered and a deduction without an id is
    /// never asked.
    pub fn deduct_admitting(
        &mut self,
        req: DeductRequest<'_>,
        max_ledger: i64,
        max_id_length: i64,
        admit_new_id: impl FnOnce() -> Result<(), FenceError>,
    ) -> Result<Deduct, FenceError> {
        if let Some(token) = req.fence {
            if token < self.fence {
                return Err(FenceError::Stale {
                    token,
                    highest: self.fence,
                });
            }
        }
        if let Some(id) = req.id {
            if self.ledger.get(id).is_some() {
                return Ok(Deduct::Replayed(self.available));
            }
            if i64::try_from(id.len()).map_or(true, |len| len > max_id_length) {
                return Err(FenceError::NameTooLong {
                    name: crate::error::Name::RequestId,
                    max: max_id_length,
                });
            }
            admit_new_id()?;
            if i64::try_from(self.ledger.len()).map_or(true, |len| len >= max_ledger)
                || self.ledger.len() >= crate::ledger::MAX_ENTRIES
            {
                return Err(FenceError::LedgerFull { max: max_ledger });
            }
        }
        if self.available < req.quantity {
            return Ok(Deduct::SoldOut);
        }
        self.available -= req.quantity;
        self.deducted = self.deducted.saturating_add(req.quantity);
        if let Some(token) = req.fence {
            self.fence = token;
        }
        if let Some(id) = req.id {
            // Room was checked above, and the id is new.
            self.ledger.insert(id, req.quantity);
        }
        Ok(Deduct::Deducted(self.available))
    }

    /// The scalar state, to take a change back (a call that failed after deciding).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            available: self.available,
            fence: self.fence,
            deducted: self.deducted,
        }
    }

    /// Takes back a deduction or refund: the scalars as in `before`, and the ledger entry of
    /// `id` as it was (`None`: it did not exist).
    pub fn restore(&mut self, before: Snapshot, id: Option<(&[u8], Option<i64>)>) {
        self.available = before.available;
        self.fence = before.fence;
        self.deducted = before.deducted;
        match id {
            Some((id, Some(quantity))) => self.put_entry(id, quantity),
            Some((id, None)) => {
                self.ledger.remove_last(id);
            }
            None => {}
        }
    }

    /// Returns what request `id` took, once; 0 for an unknown or refunded id.
    pub fn refund(&mut self, id: &[u8]) -> Result<i64, FenceError> {
        let Some(quantity) = self.ledger.get(id) else {
            return Ok(0);
        };
        if quantity == 0 {
            return Ok(0);
        }
        let available = self
            .available
            .checked_add(quantity)
            .ok_or(FenceError::Overflow)?;
        self.ledger.set(id, 0);
        self.available = available;
        self.deducted = self.deducted.saturating_sub(quantity).max(0);
        Ok(quantity)
    }

    /// What the ledger knows of request `id`: the quantity held, 0 if refunded, None if unknown.
    pub fn request(&self, id: &[u8]) -> Option<i64> {
        self.ledger.get(id)
    }

    /// Restocks by `quantity`, once per restock id: a restock id already seen adds nothing
    /// and answers the available quantity. Checks: a new id's length (`max_id_length`), room
    /// in the restock ledger (`max_ledger`), then overflow; a refusal changes nothing.
    pub fn restock(
        &mut self,
        quantity: i64,
        id: &[u8],
        max_ledger: i64,
        max_id_length: i64,
    ) -> Result<Restock, FenceError> {
        if self.restocks.get(id).is_some() {
            return Ok(Restock::Replayed(self.available));
        }
        if i64::try_from(id.len()).map_or(true, |len| len > max_id_length) {
            return Err(FenceError::NameTooLong {
                name: Name::RestockId,
                max: max_id_length,
            });
        }
        if i64::try_from(self.restocks.len()).map_or(true, |len| len >= max_ledger)
            || self.restocks.len() >= crate::ledger::MAX_ENTRIES
        {
            return Err(FenceError::RestocksFull { max: max_ledger });
        }
        let available = self
            .available
            .checked_add(quantity)
            .ok_or(FenceError::Overflow)?;
        self.available = available;
        self.restocks.insert(id, quantity);
        Ok(Restock::Added(available))
    }

    /// What the restock ledger knows of restock `id`: the quantity it added, or None.
    #[cfg(test)]
    pub fn restock_of(&self, id: &[u8]) -> Option<i64> {
        self.restocks.get(id)
    }

    /// How many restock ids the stock holds.
    pub fn restocks_len(&self) -> usize {
        self.restocks.len()
    }

    /// Restock entries in the order they were made.
    pub fn restock_entries(&self) -> impl Iterator<Item = (&[u8], i64)> {
        self.restocks.iter()
    }

    /// Adds a loaded restock entry; false (and nothing changed) when the id is there already.
    pub fn insert_restock(&mut self, id: &[u8], quantity: i64) -> bool {
        self.restocks.insert(id, quantity) == Insert::Added
    }

    /// Sets one restock entry as replicated; no checks.
    pub fn put_restock(&mut self, id: &[u8], quantity: i64) {
        if !self.restocks.set(id, quantity) {
            self.restocks.insert(id, quantity);
        }
    }

    /// Prepares both ledgers for a load of this many entries.
    pub fn reserve(&mut self, ledger: usize, restocks: usize) {
        self.ledger.reserve(ledger);
        self.restocks.reserve(restocks);
    }

    /// Hands the request ledger to `out` as blobs of records (see `Ledger::save_blobs`).
    pub fn save_entry_blobs(&self, out: impl FnMut(&[u8])) {
        self.ledger.save_blobs(out);
    }

    /// Hands the restock ledger to `out` as blobs of records.
    pub fn save_restock_blobs(&self, out: impl FnMut(&[u8])) {
        self.restocks.save_blobs(out);
    }

    /// Adds a blob of request-ledger records (a load); how many, or why it is refused.
    pub fn insert_entry_blob(&mut self, blob: &[u8]) -> Result<usize, &'static str> {
        self.ledger.insert_blob(blob)
    }

    /// Adds a blob of restock-ledger records (a load).
    pub fn insert_restock_blob(&mut self, blob: &[u8]) -> Result<usize, &'static str> {
        self.restocks.insert_blob(blob)
    }

    /// The load is over.
    pub fn loaded(&mut self) {
        self.ledger.loaded();
        self.restocks.loaded();
    }

    /// Order-independent summaries of the request and restock ledgers, for a digest.
    pub fn summaries(&self) -> ([u8; 16], [u8; 16]) {
        (self.ledger.summary(), self.restocks.summary())
    }

    /// The quantity request `id` holds now (0 when refunded), for replicating one entry.
    pub fn ledger_len(&self) -> usize {
        self.ledger.len()
    }

    /// Adds a loaded ledger entry; false (and nothing changed) when the id is there already.
    pub fn insert_entry(&mut self, id: &[u8], quantity: i64) -> bool {
        self.ledger.insert(id, quantity) == Insert::Added
    }

    /// Sets the quantity of the latest ledger entry (a load reads the id first).
    pub fn set_last_entry(&mut self, quantity: i64) {
        self.ledger.set_last(quantity);
    }

    /// Sets the quantity of the latest restock entry (a load reads the id first).
    pub fn set_last_restock(&mut self, quantity: i64) {
        self.restocks.set_last(quantity);
    }

    /// Sets one ledger entry as replicated; no checks.
    pub fn put_entry(&mut self, id: &[u8], quantity: i64) {
        if !self.ledger.set(id, quantity) {
            self.ledger.insert(id, quantity);
        }
    }

    /// Ledger entries in the order they were made (the same on every server that applied the
    /// same effects, so rewrites and digests need no sort).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], i64)> {
        self.ledger.iter()
    }

    /// Each ledger entry as bytes that describe it fully, without copying (for digests).
    pub fn entry_records(&self) -> impl Iterator<Item = &[u8]> {
        self.ledger.records()
    }

    /// Each restock entry as bytes that describe it fully, without copying (for digests).
    pub fn restock_records(&self) -> impl Iterator<Item = &[u8]> {
        self.restocks.records()
    }

    /// Bytes of memory used, kept as the ledgers grow: O(1).
    pub fn mem_usage(&self) -> usize {
        std::mem::size_of::<Self>() + self.ledger.mem_usage() + self.restocks.mem_usage()
    }

    /// How many blocks freeing it frees (for Redis's lazy-free decision).
    pub fn free_effort(&self) -> usize {
        self.ledger.blocks() + self.restocks.blocks()
    }
}

/// Deducts from a plain integer-string stock: the new value, or None when too few remain.
pub fn plain_deduct(current: i64, quantity: i64) -> Option<i64> {
    (current >= quantity).then(|| current - quantity)
}

/// Restocks a plain integer-string stock.
pub fn plain_add(current: i64, quantity: i64) -> Result<i64, FenceError> {
    current.checked_add(quantity).ok_or(FenceError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(quantity: i64, id: Option<&[u8]>, fence: Option<u64>) -> DeductRequest<'_> {
        DeductRequest {
            quantity,
            id,
            fence,
        }
    }

    #[test]
    fn deducts_until_sold_out() {
        let mut s = Stock::new(3);
        assert_eq!(
            s.deduct(req(2, None, None), 10, i64::MAX),
            Ok(Deduct::Deducted(1))
        );
        assert_eq!(
            s.deduct(req(2, None, None), 10, i64::MAX),
            Ok(Deduct::SoldOut)
        );
        assert_eq!(
            s.deduct(req(1, None, None), 10, i64::MAX),
            Ok(Deduct::Deducted(0))
        );
        assert_eq!(
            s.deduct(req(1, None, None), 10, i64::MAX),
            Ok(Deduct::SoldOut)
        );
        assert_eq!(s.available, 0);
        assert_eq!(s.deducted, 3);
    }

    #[test]
    fn request_ids_deduct_once_even_after_refund() {
        let mut s = Stock::new(10);
        assert_eq!(
            s.deduct(req(4, Some(b"o1"), None), 10, i64::MAX),
            Ok(Deduct::Deducted(6))
        );
        assert_eq!(
            s.deduct(req(1, Some(b"o1"), None), 10, i64::MAX),
            Ok(Deduct::Replayed(6))
        );
        assert_eq!(s.request(b"o1"), Some(4));
        assert_eq!(s.refund(b"o1"), Ok(4));
        assert_eq!(s.available, 10);
        assert_eq!(s.refund(b"o1"), Ok(0));
        assert_eq!(s.request(b"o1"), Some(0));
        assert_eq!(
            s.deduct(req(4, Some(b"o1"), None), 10, i64::MAX),
            Ok(Deduct::Replayed(10))
        );
        assert_eq!(s.refund(b"unknown"), Ok(0));
        assert_eq!(s.request(b"unknown"), None);
    }

    #[test]
    fn refused_ids_stay_out_of_the_ledger() {
        let mut s = Stock::new(1);
        assert_eq!(
            s.deduct(req(2, Some(b"o1"), None), 10, i64::MAX),
            Ok(Deduct::SoldOut)
        );
        assert_eq!(s.request(b"o1"), None);
        assert_eq!(s.add(5), Ok(6));
        assert_eq!(
            s.deduct(req(2, Some(b"o1"), None), 10, i64::MAX),
            Ok(Deduct::Deducted(4))
        );
    }

    #[test]
    fn fence_checked_first_and_raised_only_on_success() {
        let mut s = Stock::new(1);
        assert_eq!(
            s.deduct(req(1, Some(b"a"), Some(5)), 10, i64::MAX),
            Ok(Deduct::Deducted(0))
        );
        assert_eq!(s.fence, 5);
        // Stale beats a replay.
        assert_eq!(
            s.deduct(req(1, Some(b"a"), Some(4)), 10, i64::MAX),
            Err(FenceError::Stale {
                token: 4,
                highest: 5
            })
        );
        // Equal is accepted; sold out leaves the fence alone.
        assert_eq!(
            s.deduct(req(1, None, Some(9)), 10, i64::MAX),
            Ok(Deduct::SoldOut)
        );
        assert_eq!(s.fence, 5);
        assert_eq!(
            s.deduct(req(1, Some(b"a"), Some(5)), 10, i64::MAX),
            Ok(Deduct::Replayed(0))
        );
    }

    #[test]
    fn reset_keeps_the_fence() {
        let mut s = Stock::new(5);
        assert_eq!(
            s.deduct(req(1, Some(b"a"), Some(8)), 10, i64::MAX),
            Ok(Deduct::Deducted(4))
        );
        s.reset(100);
        assert_eq!(s.available, 100);
        assert_eq!(s.fence, 8);
        assert_eq!(s.ledger_len(), 0);
        assert_eq!(s.deducted, 0);
    }

    #[test]
    fn ledger_bound_refuses_new_ids_only() {
        let mut s = Stock::new(10);
        assert_eq!(
            s.deduct(req(1, Some(b"a"), None), 1, i64::MAX),
            Ok(Deduct::Deducted(9))
        );
        assert_eq!(
            s.deduct(req(1, Some(b"b"), None), 1, i64::MAX),
            Err(FenceError::LedgerFull { max: 1 })
        );
        assert_eq!(
            s.deduct(req(1, Some(b"a"), None), 1, i64::MAX),
            Ok(Deduct::Replayed(9))
        );
        assert_eq!(
            s.deduct(req(1, None, None), 1, i64::MAX),
            Ok(Deduct::Deducted(8))
        );
        assert_eq!(s.available, 8);
    }

    #[test]
    fn a_lowered_id_limit_refuses_new_ids_and_replays_old_ones() {
        let mut s = Stock::new(10);
        assert_eq!(
            s.deduct(req(1, Some(b"long-id"), None), 10, 512),
            Ok(Deduct::Deducted(9))
        );
        assert_eq!(
            s.deduct(req(1, Some(b"long-id"), None), 10, 3),
            Ok(Deduct::Replayed(9))
        );
        assert_eq!(
            s.deduct(req(1, Some(b"new-id"), None), 10, 3),
            Err(FenceError::NameTooLong {
                name: crate::error::Name::RequestId,
                max: 3
            })
        );
        assert_eq!(
            s.deduct(req(1, Some(b"new"), None), 10, 3),
            Ok(Deduct::Deducted(8))
        );
        assert_eq!(s.refund(b"long-id"), Ok(1));
    }

    #[test]
    fn admission_is_asked_of_new_ids_only() {
        let refused = || {
            Err(FenceError::EvictionRisk {
                policy: "allkeys-lru".into(),
            })
        };
        let evicting = FenceError::EvictionRisk {
            policy: "allkeys-lru".into(),
        };
        let mut s = Stock::new(10);
        assert_eq!(
            s.deduct(req(1, Some(b"a"), Some(5)), 10, i64::MAX),
            Ok(Deduct::Deducted(9))
        );
        let before = s.clone();
        // A new id is refused and nothing changes, even when the stock is short (the id step
        // comes before the quantity) or the ledger is full.
        for (quantity, max_ledger) in [(1, 10), (100, 10), (1, 1)] {
            assert_eq!(
                s.deduct_admitting(
                    req(quantity, Some(b"b"), None),
                    max_ledger,
                    i64::MAX,
                    refused
                ),
                Err(evicting.clone())
            );
            assert_eq!(s, before);
        }
        // A stale fence is still refused first.
        assert_eq!(
            s.deduct_admitting(req(1, Some(b"b"), Some(4)), 10, i64::MAX, refused),
            Err(FenceError::Stale {
                token: 4,
                highest: 5
            })
        );
        // A replay is answered and a deduction without an id runs; neither asks.
        let never = || -> Result<(), FenceError> { panic!("asked") };
        assert_eq!(
            s.deduct_admitting(req(1, Some(b"a"), None), 10, i64::MAX, never),
            Ok(Deduct::Replayed(9))
        );
        assert_eq!(
            s.deduct_admitting(req(2, None, None), 10, i64::MAX, never),
            Ok(Deduct::Deducted(7))
        );
        // Admitted: as `deduct`.
        assert_eq!(
            s.deduct_admitting(req(1, Some(b"b"), None), 10, i64::MAX, || Ok(())),
            Ok(Deduct::Deducted(6))
        );
        assert_eq!(s.request(b"b"), Some(1));
    }

    #[test]
    fn overflow_is_refused_without_change() {
        let mut s = Stock::new(i64::MAX);
        assert_eq!(s.add(1), Err(FenceError::Overflow));
        assert_eq!(s.available, i64::MAX);
        let mut s = Stock::new(1);
        assert_eq!(
            s.deduct(req(1, Some(b"a"), None), 10, i64::MAX),
            Ok(Deduct::Deducted(0))
        );
        assert_eq!(s.add(i64::MAX), Ok(i64::MAX));
        assert_eq!(s.refund(b"a"), Err(FenceError::Overflow));
        assert_eq!(s.request(b"a"), Some(1));
    }

    #[test]
    fn entries_come_in_the_order_they_were_made() {
        let mut a = Stock::new(0);
        for id in [&b"x"[..], b"a", b"m"] {
            a.put_entry(id, 1);
        }
        a.put_entry(b"a", 0);
        let ids: Vec<&[u8]> = a.entries().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![&b"x"[..], b"a", b"m"]);
        assert_eq!(a.request(b"a"), Some(0));
    }

    #[test]
    fn a_restock_id_adds_once() {
        let mut s = Stock::new(5);
        assert_eq!(s.restock(10, b"r1", 10, 512), Ok(Restock::Added(15)));
        assert_eq!(s.restock(10, b"r1", 10, 512), Ok(Restock::Replayed(15)));
        assert_eq!(s.restock(99, b"r1", 10, 512), Ok(Restock::Replayed(15)));
        assert_eq!(s.restock_of(b"r1"), Some(10));
        // A new id: too long, no room, or overflowing: refused, nothing changed.
        assert_eq!(
            s.restock(1, b"toolong", 10, 3),
            Err(FenceError::NameTooLong {
                name: Name::RestockId,
                max: 3
            })
        );
        assert_eq!(
            s.restock(1, b"r2", 1, 512),
            Err(FenceError::RestocksFull { max: 1 })
        );
        assert_eq!(
            s.restock(i64::MAX, b"r2", 10, 512),
            Err(FenceError::Overflow)
        );
        assert_eq!((s.available, s.restocks_len()), (15, 1));
        // Restock ids and request ids live apart; a new sale clears both.
        assert_eq!(s.request(b"r1"), None);
        s.reset(3);
        assert_eq!(s.restock_of(b"r1"), None);
        assert_eq!(s.restock(1, b"r1", 10, 512), Ok(Restock::Added(4)));
    }

    #[test]
    fn restore_takes_a_deduction_and_a_refund_back() {
        let mut s = Stock::new(10);
        let before = s.snapshot();
        assert_eq!(
            s.deduct(req(3, Some(b"a"), Some(4)), 10, i64::MAX),
            Ok(Deduct::Deducted(7))
        );
        s.restore(before, Some((b"a", None)));
        assert_eq!(s, Stock::new(10));
        assert_eq!(
            s.deduct(req(3, Some(b"a"), None), 10, i64::MAX),
            Ok(Deduct::Deducted(7))
        );
        let before = s.snapshot();
        assert_eq!(s.refund(b"a"), Ok(3));
        s.restore(before, Some((b"a", Some(3))));
        assert_eq!(s.available, 7);
        assert_eq!(s.request(b"a"), Some(3));
    }

    #[test]
    fn plain_strings() {
        assert_eq!(plain_deduct(5, 5), Some(0));
        assert_eq!(plain_deduct(5, 6), None);
        assert_eq!(plain_deduct(-3, 1), None);
        assert_eq!(plain_add(-3, 5), Ok(2));
        assert_eq!(plain_add(i64::MAX, 1), Err(FenceError::Overflow));
    }
}
