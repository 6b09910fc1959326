//! Stock arithmetic: the available quantity, the request-id ledger with its holds, and the
//! fence floor. Plain Rust; the Redis glue only stores a `Stock` and replies with what it
//! decides.
//!
//! Holds (`STOCK.DEDUCT … HOLD ms`): a held entry's units come back at its deadline unless it
//! is confirmed first. The stored state changes when an expiry is applied (`expire_due`, by the
//! module's timer or by a command that touches the stock); until then `view` shows the stock
//! as it is once every due hold is returned, which is what every reply tells.

use std::cell::Cell;

use crate::args::MaxLen;
use crate::effects::EntryEffect;
use crate::error::{printable, FenceError, Name};
use crate::holds::Holds;
use crate::ledger::{Format, Insert, Ledger, State, Value};

/// Where the expiries of holds made with `EVENTS` are announced (the last `EVENTS` a hold was
/// made with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireStream {
    pub key: Vec<u8>,
    pub maxlen: Option<MaxLen>,
}

/// The module's bookkeeping of a stock in its index of stocks with holds: not saved, not
/// compared, and not copied (a copy is another stock). Cells, so the index can note a stock
/// it only reads.
#[derive(Debug, Default)]
pub struct Tracking {
    /// Tells this stock from another under the same name (0: not indexed yet).
    pub uid: Cell<u64>,
    /// The deadline the index has it under (0: none).
    pub indexed_due: Cell<u64>,
}

impl Clone for Tracking {
    fn clone(&self) -> Tracking {
        Tracking::default()
    }
}

impl PartialEq for Tracking {
    fn eq(&self, _other: &Tracking) -> bool {
        true
    }
}

impl Eq for Tracking {}

/// A stock: what is available, what each request took, and the highest token accepted.
#[derive(Debug, Clone, Default)]
pub struct Stock {
    /// The quantity available to sell.
    pub available: i64,
    /// The highest fencing token a successful deduction has presented (0: none yet).
    pub fence: u64,
    /// The total deducted and not given back since the sale started (saturating).
    pub deducted: i64,
    /// Request id -> what it took and where it stands.
    ledger: Ledger,
    /// Restock id -> quantity it added (`STOCK.ADD … ID`), so a restock sent twice adds once.
    restocks: Ledger,
    /// Held entries by deadline.
    holds: Holds,
    /// Entries held now, and their units (expiries not yet applied included).
    held: u64,
    held_units: i64,
    /// Where expiries of holds made with `EVENTS` go.
    pub expire_stream: Option<ExpireStream>,
    /// The most units one buyer may hold (`LIMIT`); 0 for no limit.
    pub limit: i64,
    /// Buyer id -> the units the buyer holds (entries `deducted`, `held`, `confirmed`), in the
    /// order buyers were first recorded; an entry names its buyer by index here.
    buyers: Ledger,
    pub tracking: Tracking,
}

impl PartialEq for Stock {
    /// The same saved state (the hold index and counters follow from the ledger).
    fn eq(&self, other: &Stock) -> bool {
        self.available == other.available
            && self.fence == other.fence
            && self.deducted == other.deducted
            && self.ledger == other.ledger
            && self.restocks == other.restocks
            && self.expire_stream == other.expire_stream
            && self.limit == other.limit
            && self.buyers == other.buyers
    }
}

impl Eq for Stock {}

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
    buyers: usize,
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

/// A hold asked for with a deduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// When its units go back, in Unix milliseconds.
    pub deadline: u64,
    /// Made with `EVENTS`: its expiry is announced.
    pub events: bool,
}

/// What a deduction asks for, already parsed and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeductRequest<'a> {
    pub quantity: i64,
    pub id: Option<&'a [u8]>,
    pub fence: Option<u64>,
    /// With `HOLD` (an id is then required: the argument parser sees to it).
    pub hold: Option<Hold>,
    /// With `BUYER` (recorded with the id's entry; the parser requires an id).
    pub buyer: Option<&'a [u8]>,
}

/// The bounds a deduction's new state must keep (the settings, read by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Request ids the ledger may hold (`fence.max-ledger-entries`).
    pub ledger: i64,
    /// Bytes of a new request or buyer id (`fence.max-id-length`).
    pub id_length: i64,
    /// Buyers the stock may record (`fence.max-buyers`).
    pub buyers: i64,
}

/// Where a buyer of a deduction stands before it is applied.
enum BuyerSlot {
    None,
    Known(usize),
    New,
}

/// A hold whose deadline passed, now returned: what its announcements need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub id: Vec<u8>,
    pub value: Value,
}

/// What `STOCK.CONFIRM` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Held until now, confirmed by this call.
    Confirmed,
    /// Confirmed already, or deducted without a hold: nothing changed.
    Already,
    /// The id is not in the ledger.
    Unknown,
}

/// A stock as it is once every due hold is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub available: i64,
    pub deducted: i64,
    /// Entries held, and their units.
    pub held: u64,
    pub held_units: i64,
    /// The earliest deadline of a hold, if any.
    pub next_deadline: Option<u64>,
}

impl Stock {
    /// A new stock with `available` items and an empty ledger.
    pub fn new(available: i64) -> Self {
        Self {
            available,
            ..Self::default()
        }
    }

    /// Starts a new sale: `available` set, both ledgers, the buyers and every hold cleared;
    /// fence and limit kept.
    pub fn reset(&mut self, available: i64) {
        self.available = available;
        self.deducted = 0;
        // Freed in blocks: a million ids cost a few hundred frees.
        self.ledger = Ledger::new();
        self.restocks = Ledger::new();
        self.buyers = Ledger::new();
        self.holds.clear();
        self.held = 0;
        self.held_units = 0;
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
        let bounds = Bounds {
            ledger: max_ledger,
            id_length: max_id_length,
            buyers: i64::MAX,
        };
        self.deduct_admitting(req, bounds, || Ok(()))
    }

    /// `deduct`, where a request id the ledger does not hold must also pass `admit_new_id`
    /// (called in the id step, after a replay is recognised and the id's length checked, and
    /// before the ledger bound), so a replay is still answered and a deduction without an id is
    /// never asked. A replay answers the stored available quantity: the caller returns due
    /// holds first. Then the `LIMIT` step: with a limit, a buyer is required; a new buyer's
    /// length and room in the buyer table are checked; the buyer's units plus the quantity must
    /// stay within the limit. Then the quantity.
    pub fn deduct_admitting(
        &mut self,
        req: DeductRequest<'_>,
        bounds: Bounds,
        admit_new_id: impl FnOnce() -> Result<(), FenceError>,
    ) -> Result<Deduct, FenceError> {
        let (max_ledger, max_id_length) = (bounds.ledger, bounds.id_length);
        if let Some(token) = req.fence {
            if token < self.fence {
                return Err(FenceError::Stale {
                    token,
                    highest: self.fence,
                });
            }
        }
        if let Some(id) = req.id {
            if self.ledger.index_of(id).is_some() {
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
        let buyer = self.check_buyer(&req, bounds)?;
        if self.available < req.quantity {
            return Ok(Deduct::SoldOut);
        }
        self.available -= req.quantity;
        self.deducted = self.deducted.saturating_add(req.quantity);
        if let Some(token) = req.fence {
            self.fence = token;
        }
        if let Some(id) = req.id {
            let mut value = match req.hold {
                Some(hold) => Value {
                    quantity: req.quantity,
                    state: State::Held,
                    deadline: hold.deadline,
                    events: hold.events,
                    buyer: 0,
                },
                None => Value::plain(req.quantity),
            };
            value.buyer = match (buyer, req.buyer) {
                (BuyerSlot::Known(i), _) => i as u32 + 1,
                (BuyerSlot::New, Some(name)) => {
                    // Room was checked above, and the buyer is new.
                    self.buyers.insert(name, 0);
                    self.buyers.len() as u32
                }
                _ => 0,
            };
            // Room was checked above, and the id is new.
            self.insert_entry_value(id, value);
        }
        Ok(Deduct::Deducted(self.available))
    }

    /// The `LIMIT` step of a deduction: where its buyer stands, or why it is refused.
    fn check_buyer(
        &self,
        req: &DeductRequest<'_>,
        bounds: Bounds,
    ) -> Result<BuyerSlot, FenceError> {
        let Some(name) = req.buyer.filter(|_| req.id.is_some()) else {
            if self.limit > 0 {
                return Err(FenceError::BuyerRequired { limit: self.limit });
            }
            return Ok(BuyerSlot::None);
        };
        let (slot, has) = match self.buyers.index_of(name) {
            Some(i) => (
                BuyerSlot::Known(i),
                self.buyers.at(i).map_or(0, |(_, v)| v.quantity),
            ),
            None => {
                if i64::try_from(name.len()).map_or(true, |len| len > bounds.id_length) {
                    return Err(FenceError::NameTooLong {
                        name: Name::BuyerId,
                        max: bounds.id_length,
                    });
                }
                if i64::try_from(self.buyers.len()).map_or(true, |len| len >= bounds.buyers)
                    || self.buyers.len() >= crate::ledger::MAX_ENTRIES
                {
                    return Err(FenceError::BuyersFull { max: bounds.buyers });
                }
                (BuyerSlot::New, 0)
            }
        };
        // A buyer's units are a sum of its entries and must stay an integer (a stock restocked
        // past 2^63-1 over its life could sell one buyer more).
        if has.checked_add(req.quantity).is_none() {
            return Err(FenceError::Overflow);
        }
        if self.limit > 0 && has.saturating_add(req.quantity) > self.limit {
            return Err(FenceError::Limit {
                buyer: printable(name),
                has,
                max: self.limit,
            });
        }
        Ok(slot)
    }

    /// The units `buyer` holds as of `now` (holds due by then count as returned): 0 for a
    /// buyer never recorded.
    pub fn buyer_units(&self, buyer: &[u8], now: u64) -> i64 {
        let Some(index) = self.buyers.index_of(buyer) else {
            return 0;
        };
        let mut units = self.buyers.at(index).map_or(0, |(_, v)| v.quantity);
        if self.holds.is_empty() {
            return units;
        }
        let mut due: Vec<(u32, u64)> = self.holds.due(now).map(|(d, i)| (i, d)).collect();
        due.sort_unstable();
        due.dedup();
        for (i, deadline) in due {
            if let Some((_, v)) = self.ledger.at(i as usize) {
                if v.state == State::Held && v.deadline == deadline && v.buyer as usize == index + 1
                {
                    units = units.saturating_sub(v.quantity).max(0);
                }
            }
        }
        units
    }

    /// Returns `buyer`'s holds due at `now` (all of them, earliest first); the rest of the due
    /// holds stay where they are. Costs the number of due holds not yet returned.
    pub fn expire_buyer_due(&mut self, buyer: &[u8], now: u64) -> Vec<Expired> {
        let Some(index) = self.buyers.index_of(buyer) else {
            return Vec::new();
        };
        let mut due: Vec<(u64, u32)> = self.holds.due(now).collect();
        due.sort_unstable();
        due.dedup();
        let mut out = Vec::new();
        for (deadline, i) in due {
            let Some((id, v)) = self.ledger.at(i as usize) else {
                continue;
            };
            if v.state != State::Held || v.deadline != deadline || v.buyer as usize != index + 1 {
                continue;
            }
            let id = id.to_vec();
            self.expire_at_index(i as usize, v);
            out.push(Expired {
                id,
                value: Value {
                    state: State::Expired,
                    ..v
                },
            });
        }
        out
    }

    /// How many buyers the sale has recorded.
    pub fn buyers_len(&self) -> usize {
        self.buyers.len()
    }

    /// The id of the buyer an entry's value names, if any.
    pub fn buyer_of(&self, value: Value) -> Option<&[u8]> {
        let index = (value.buyer as usize).checked_sub(1)?;
        self.buyers.at(index).map(|(id, _)| id)
    }

    /// The effect that sets entry `id` to `value` on a replica, with the stock's scalars.
    pub fn entry_effect<'a>(&'a self, id: &'a [u8], value: Value) -> EntryEffect<'a> {
        EntryEffect {
            available: self.available,
            fence: self.fence,
            deducted: self.deducted,
            id,
            value,
            buyer: self.buyer_of(value),
        }
    }

    /// The scalar state, to take a change back (a call that failed after deciding).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            available: self.available,
            fence: self.fence,
            deducted: self.deducted,
            buyers: self.buyers.len(),
        }
    }

    /// Takes back a deduction, refund or confirmation: the scalars as in `before`, and the
    /// ledger entry of `id` as it was (`None`: it did not exist, and was the latest insert).
    pub fn restore(&mut self, before: Snapshot, id: Option<(&[u8], Option<Value>)>) {
        self.available = before.available;
        self.fence = before.fence;
        self.deducted = before.deducted;
        match id {
            Some((id, Some(value))) => {
                if let Some(i) = self.ledger.index_of(id) {
                    // A hold put back gets a slot again (its old one may be gone from the top
                    // of the heap; if not, the two are one: `view` and `expire_due` count an
                    // entry once).
                    self.set_entry_at(i, value);
                }
            }
            Some((id, None)) => {
                let last = self.ledger.len().checked_sub(1);
                let old = last.and_then(|i| self.ledger.at(i)).map(|(_, v)| v);
                if self.ledger.remove_last(id) {
                    if let (Some(i), Some(old)) = (last, old) {
                        self.count(old, -1);
                        if old.state == State::Held {
                            self.holds.remove_index(i as u32);
                        }
                    }
                }
            }
            None => {}
        }
        // A buyer the change recorded first goes too.
        if self.buyers.len() > before.buyers {
            let last = self.buyers.len() - 1;
            let name = self.buyers.at(last).map(|(n, _)| n.to_vec());
            if let Some(name) = name {
                self.buyers.remove_last(&name);
            }
        }
    }

    /// Adjusts the held counters and the buyer's units for `value` leaving (`sign` -1) or
    /// joining (+1) the ledger.
    fn count(&mut self, value: Value, sign: i64) {
        if value.state.holds_units() {
            if let Some(i) = (value.buyer as usize).checked_sub(1) {
                if let Some((_, b)) = self.buyers.at(i) {
                    let units = if sign > 0 {
                        b.quantity.saturating_add(value.quantity)
                    } else {
                        b.quantity.saturating_sub(value.quantity).max(0)
                    };
                    self.buyers.set_at(i, Value::plain(units));
                }
            }
        }
        self.count_held(value, sign);
    }

    /// Adjusts the held counters for `value` leaving (`sign` -1) or joining (+1) the ledger.
    fn count_held(&mut self, value: Value, sign: i64) {
        if value.state != State::Held {
            return;
        }
        if sign > 0 {
            self.held += 1;
            self.held_units = self.held_units.saturating_add(value.quantity);
        } else {
            self.held = self.held.saturating_sub(1);
            self.held_units = self.held_units.saturating_sub(value.quantity).max(0);
        }
    }

    /// Inserts a new entry (the id is not there), indexing a hold.
    fn insert_entry_value(&mut self, id: &[u8], value: Value) -> bool {
        if self.ledger.insert_value(id, value) != Insert::Added {
            return false;
        }
        self.count(value, 1);
        if value.state == State::Held {
            self.holds
                .push(value.deadline, (self.ledger.len() - 1) as u32);
        }
        true
    }

    /// Sets entry `index` to `value`, keeping the counters and the hold index; false (nothing
    /// changed) when the ledger refuses (a hold on an entry not made held).
    fn set_entry_at(&mut self, index: usize, value: Value) -> bool {
        let Some((_, old)) = self.ledger.at(index) else {
            return false;
        };
        if !self.ledger.set_at(index, value) {
            return false;
        }
        self.count(old, -1);
        self.count(value, 1);
        if value.state == State::Held
            && !(old.state == State::Held && old.deadline == value.deadline)
        {
            self.holds.push(value.deadline, index as u32);
        }
        self.drop_dead_top();
        true
    }

    /// Takes out the slots at the top of the heap of deadlines whose entry is no longer held
    /// with that deadline (confirmed, refunded, expired: the heap is lazy), at most
    /// `DEAD_PER_CHANGE` of them. Run after every change of an entry, on masters and replicas
    /// alike (the heap is not replicated state), it keeps the earliest slot live in the usual
    /// case, so reads never walk a history of ended holds, and a replica's heap shrinks as its
    /// master's does.
    fn drop_dead_top(&mut self) {
        for _ in 0..DEAD_PER_CHANGE {
            match self.holds.peek() {
                Some((d, i)) if !self.is_live(d, i) => {
                    self.holds.pop();
                }
                _ => return,
            }
        }
    }

    /// Gives back what request `id` took, once; 0 for an unknown id or one whose units came
    /// back already (refunded, expired). A held entry's hold is cancelled, a confirmed entry's
    /// sale undone. (The caller returns the entry first if its hold is due.)
    pub fn refund(&mut self, id: &[u8]) -> Result<i64, FenceError> {
        let Some(index) = self.ledger.index_of(id) else {
            return Ok(0);
        };
        let Some((_, value)) = self.ledger.at(index) else {
            return Ok(0);
        };
        if !value.state.holds_units() {
            return Ok(0);
        }
        let quantity = value.quantity;
        let available = self
            .available
            .checked_add(quantity)
            .ok_or(FenceError::Overflow)?;
        let refunded = Value {
            state: State::Refunded,
            deadline: 0,
            ..value
        };
        if !self.set_entry_at(index, refunded) {
            return Ok(0);
        }
        self.available = available;
        self.deducted = self.deducted.saturating_sub(quantity).max(0);
        Ok(quantity)
    }

    /// Confirms request `id`'s hold: its units stay sold. An id deducted without a hold, or
    /// confirmed already, is `Already`; a refunded or expired one is refused with its own
    /// error. (The caller returns the entry first if its hold is due.)
    pub fn confirm(&mut self, id: &[u8]) -> Result<Confirm, FenceError> {
        let Some(index) = self.ledger.index_of(id) else {
            return Ok(Confirm::Unknown);
        };
        let Some((_, value)) = self.ledger.at(index) else {
            return Ok(Confirm::Unknown);
        };
        match value.state {
            State::Deducted | State::Confirmed => Ok(Confirm::Already),
            State::Refunded => Err(FenceError::Refunded { id: printable(id) }),
            State::Expired => Err(FenceError::Expired {
                id: printable(id),
                at: value.deadline,
            }),
            State::Held => {
                let confirmed = Value {
                    state: State::Confirmed,
                    deadline: 0,
                    ..value
                };
                if self.set_entry_at(index, confirmed) {
                    Ok(Confirm::Confirmed)
                } else {
                    Ok(Confirm::Unknown)
                }
            }
        }
    }

    /// Returns entry `index`'s hold (it is held): units back, state expired.
    fn expire_at_index(&mut self, index: usize, value: Value) {
        let expired = Value {
            state: State::Expired,
            ..value
        };
        if self.set_entry_at(index, expired) {
            self.available = self.available.saturating_add(value.quantity);
            self.deducted = self.deducted.saturating_sub(value.quantity).max(0);
        }
    }

    /// Whether the stock has holds (live or not): without, no clock needs reading.
    pub fn has_holds(&self) -> bool {
        !self.holds.is_empty()
    }

    /// What is available as a read sees it: `available`, plus the holds due by the time
    /// `now()` gives (asked only when the stock has holds).
    pub fn available_now(&self, now: impl FnOnce() -> u64) -> i64 {
        if self.holds.is_empty() {
            self.available
        } else {
            self.view(now()).available
        }
    }

    /// Whether a hold may be due at `now` (its earliest slot is).
    pub fn has_due(&self, now: u64) -> bool {
        self.holds.peek().is_some_and(|(d, _)| d <= now)
    }

    /// Returns up to `max` holds whose deadline is `now` or earlier, earliest first. Takes at
    /// most `4 * max` slots off the heap looking for them (slots of ended holds included),
    /// and `DEAD_PER_CHANGE` more behind each hold it returns.
    pub fn expire_due(&mut self, now: u64, max: usize) -> Vec<Expired> {
        let mut out = Vec::new();
        // Slots of ended holds count too (a quarter of a live one), so one call's work is
        // bounded however many ended holds come due together.
        let mut pops = 0usize;
        while out.len() < max && pops < max.saturating_mul(4) {
            pops += 1;
            let Some((deadline, index)) = self.holds.peek() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.holds.pop();
            let index = index as usize;
            let Some((id, value)) = self.ledger.at(index) else {
                continue;
            };
            if value.state != State::Held || value.deadline != deadline {
                continue;
            }
            let id = id.to_vec();
            self.expire_at_index(index, value);
            out.push(Expired {
                id,
                value: Value {
                    state: State::Expired,
                    ..value
                },
            });
        }
        out
    }

    /// Returns request `id`'s hold now if it is due (before `STOCK.CONFIRM` or `STOCK.REFUND`
    /// decides on it).
    pub fn expire_if_due(&mut self, id: &[u8], now: u64) -> Option<Expired> {
        let index = self.ledger.index_of(id)?;
        let (_, value) = self.ledger.at(index)?;
        if value.state != State::Held || value.deadline > now {
            return None;
        }
        self.expire_at_index(index, value);
        Some(Expired {
            id: id.to_vec(),
            value: Value {
                state: State::Expired,
                ..value
            },
        })
    }

    /// Whether the slot (deadline, index) is a hold still in force.
    fn is_live(&self, deadline: u64, index: u32) -> bool {
        self.ledger
            .at(index as usize)
            .is_some_and(|(_, v)| v.state == State::Held && v.deadline == deadline)
    }

    /// The stock as it is once every hold due at `now` is returned: what replies tell. Costs
    /// the number of due holds not yet returned (normally none).
    pub fn view(&self, now: u64) -> View {
        let mut view = View {
            available: self.available,
            deducted: self.deducted,
            held: self.held,
            held_units: self.held_units,
            next_deadline: None,
        };
        if self.holds.is_empty() {
            return view;
        }
        // An entry's slot may be in the heap twice (a hold put back by an undone change).
        let mut due: Vec<(u32, u64)> = self.holds.due(now).map(|(d, i)| (i, d)).collect();
        due.sort_unstable();
        due.dedup();
        for (index, deadline) in due {
            if let Some((_, v)) = self.ledger.at(index as usize) {
                if v.state == State::Held && v.deadline == deadline {
                    view.available = view.available.saturating_add(v.quantity);
                    view.deducted = view.deducted.saturating_sub(v.quantity).max(0);
                    view.held = view.held.saturating_sub(1);
                    view.held_units = view.held_units.saturating_sub(v.quantity).max(0);
                }
            }
        }
        view.next_deadline = self
            .holds
            .first_live_after(now, |d, i| self.is_live(d, i))
            .map(|(d, _)| d);
        view
    }

    /// The earliest deadline in the hold index (live or not): when the module should look at
    /// this stock next. None without holds.
    pub fn earliest_slot(&self) -> Option<u64> {
        self.holds.peek().map(|(d, _)| d)
    }

    /// What the ledger knows of request `id` as of `now` (a due hold shows as expired).
    pub fn request_at(&self, id: &[u8], now: u64) -> Option<Value> {
        let mut value = self.ledger.value(id)?;
        if value.state == State::Held && value.deadline <= now {
            value.state = State::Expired;
        }
        Some(value)
    }

    /// The units request `id` holds now (0 once given back), None if unknown (stored state).
    pub fn request(&self, id: &[u8]) -> Option<i64> {
        self.ledger.value(id).map(|v| v.units())
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
        self.restocks.iter().map(|(id, v)| (id, v.quantity))
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

    /// Adds a blob of request-ledger records (a load); how many, or why it is refused. The
    /// hold index is built by `loaded`.
    pub fn insert_entry_blob(
        &mut self,
        blob: &[u8],
        format: Format,
    ) -> Result<usize, &'static str> {
        self.ledger.insert_blob(blob, format)
    }

    /// Adds a blob of restock-ledger records (a load); restock entries are plain.
    pub fn insert_restock_blob(
        &mut self,
        blob: &[u8],
        format: Format,
    ) -> Result<usize, &'static str> {
        let before = self.restocks.len();
        let added = self.restocks.insert_blob(blob, format)?;
        let plain = (before..self.restocks.len())
            .filter_map(|i| self.restocks.at(i))
            .all(|(_, v)| v.state == State::Deducted && !v.events);
        if !plain {
            return Err("a restock entry has a state");
        }
        Ok(added)
    }

    /// Adds a blob of buyer records (a load, encoding 5): each a buyer id and the units it
    /// holds (checked against the ledger by `loaded`).
    pub fn insert_buyer_blob(&mut self, blob: &[u8]) -> Result<usize, &'static str> {
        let before = self.buyers.len();
        let added = self.buyers.insert_blob(blob, Format::V4)?;
        let plain = (before..self.buyers.len())
            .filter_map(|i| self.buyers.at(i))
            .all(|(_, v)| v.state == State::Deducted && !v.events);
        if !plain {
            return Err("a buyer record has a state");
        }
        Ok(added)
    }

    /// Hands the buyer table to `out` as blobs of records (id, units held).
    pub fn save_buyer_blobs(&self, out: impl FnMut(&[u8])) {
        self.buyers.save_blobs(out);
    }

    /// Prepares the buyer table for a load of this many buyers.
    pub fn reserve_buyers(&mut self, n: usize) {
        self.buyers.reserve(n);
    }

    /// The load is over: the hold index and counters are built from the ledger, and each
    /// buyer's units checked against it (every entry's buyer must be in the table, and each
    /// buyer hold exactly the units of its entries that hold units); an error refuses the
    /// value.
    pub fn loaded(&mut self) -> Result<(), &'static str> {
        self.ledger.loaded();
        self.restocks.loaded();
        self.buyers.loaded();
        // Each buyer's units, and whether an entry names it (a buyer is recorded with its
        // first entry, and no entry is ever removed alone).
        let mut units: Vec<(i64, bool)> = vec![(0, false); self.buyers.len()];
        for (_, v) in self.ledger.iter() {
            let Some(i) = (v.buyer as usize).checked_sub(1) else {
                continue;
            };
            let Some((u, named)) = units.get_mut(i) else {
                return Err("an entry names a buyer that is not in the buyer table");
            };
            *named = true;
            if v.state.holds_units() {
                *u = u
                    .checked_add(v.quantity)
                    .ok_or("a buyer's units pass 2^63-1")?;
            }
        }
        if units.iter().any(|(_, named)| !named) {
            return Err("a buyer is named by no entry");
        }
        let agree = self
            .buyers
            .iter()
            .zip(units)
            .all(|((_, v), (u, _))| v.quantity == u);
        if !agree {
            return Err("a buyer's units do not match the ledger");
        }
        self.rebuild_holds();
        Ok(())
    }

    /// Rebuilds the hold index and counters from the ledger (after a load).
    fn rebuild_holds(&mut self) {
        self.holds.clear();
        self.held = 0;
        self.held_units = 0;
        let held: Vec<(u64, u32, Value)> = self
            .ledger
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| v.state == State::Held)
            .map(|(i, (_, v))| (v.deadline, i as u32, v))
            .collect();
        for (deadline, index, value) in held {
            self.holds.push(deadline, index);
            // The buyers' units were loaded (and checked) with the table.
            self.count_held(value, 1);
        }
    }

    /// Order-independent summaries of the request and restock ledgers, for a digest.
    pub fn summaries(&self) -> ([u8; 16], [u8; 16]) {
        let name = |b: u32| -> &[u8] {
            (b as usize)
                .checked_sub(1)
                .and_then(|i| self.buyers.at(i))
                .map_or(&[][..], |(id, _)| id)
        };
        (self.ledger.summary(name), self.restocks.summary(|_| &[]))
    }

    /// How many request ids the ledger holds.
    pub fn ledger_len(&self) -> usize {
        self.ledger.len()
    }

    /// Adds a loaded ledger entry (an encoding without blobs); false (and nothing changed)
    /// when the id is there already.
    pub fn insert_entry(&mut self, id: &[u8], quantity: i64) -> bool {
        self.ledger.insert(id, quantity) == Insert::Added
    }

    /// Sets the value of the latest ledger entry (a load reads the id first).
    pub fn set_last_entry(&mut self, value: Value) {
        self.ledger.set_last(value);
    }

    /// Sets the quantity of the latest restock entry (a load reads the id first).
    pub fn set_last_restock(&mut self, quantity: i64) {
        self.restocks.set_last(Value::plain(quantity));
    }

    /// Sets one ledger entry as replicated, made for `buyer` (the entry's value names its
    /// buyer by id here, whatever `value.buyer` says); false when refused (a change a master
    /// never makes: a hold on an entry that was not made held, another buyer).
    pub fn put_entry(&mut self, id: &[u8], mut value: Value, buyer: Option<&[u8]>) -> bool {
        let known = buyer.map(|b| self.buyers.index_of(b));
        match self.ledger.index_of(id) {
            Some(i) => {
                let Some((_, old)) = self.ledger.at(i) else {
                    return false;
                };
                value.buyer = match known {
                    None => 0,
                    Some(Some(b)) => b as u32 + 1,
                    Some(None) => return false,
                };
                transition_allowed(old, value) && self.set_entry_at(i, value)
            }
            None => {
                let before = self.snapshot();
                value.buyer = match (known, buyer) {
                    (Some(Some(b)), _) => b as u32 + 1,
                    (Some(None), Some(name)) => {
                        if self.buyers.insert(name, 0) != Insert::Added {
                            return false;
                        }
                        self.buyers.len() as u32
                    }
                    _ => 0,
                };
                // A buyer's units stay an integer, as a master keeps them.
                let units = (value.buyer as usize)
                    .checked_sub(1)
                    .and_then(|i| self.buyers.at(i))
                    .map_or(0, |(_, v)| v.quantity);
                let fits =
                    !value.state.holds_units() || units.checked_add(value.quantity).is_some();
                if fits && self.insert_entry_value(id, value) {
                    return true;
                }
                self.restore(before, None);
                false
            }
        }
    }

    /// Ledger entries in the order they were made (the same on every server that applied the
    /// same effects, so rewrites and digests need no sort).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], Value)> {
        self.ledger.iter()
    }

    /// Bytes of memory used, kept as the ledgers grow: O(1).
    pub fn mem_usage(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.ledger.mem_usage()
            + self.restocks.mem_usage()
            + self.holds.mem_usage()
            + self.buyers.mem_usage()
            + self.expire_stream.as_ref().map_or(0, |e| e.key.capacity())
    }

    /// How many blocks freeing it frees (for Redis's lazy-free decision).
    pub fn free_effort(&self) -> usize {
        self.ledger.blocks() + self.restocks.blocks() + self.buyers.blocks() + 1
    }
}

/// Whether an effect may take an entry from `old` to `new`: the changes the master makes (a
/// hold confirmed, refunded or expired; a deduction or a confirmed entry refunded), or the
/// same value again (an effect applied twice). Refunded and expired entries never change.
fn transition_allowed(old: Value, new: Value) -> bool {
    if old == new {
        return true;
    }
    // An entry keeps its quantity (only the legacy form of a refund, on entries without a
    // buyer, names another: 0).
    if old.buyer != 0 && new.quantity != old.quantity {
        return false;
    }
    match (old.state, new.state) {
        (State::Held, State::Confirmed | State::Refunded | State::Expired) => {
            new.state != State::Expired || new.deadline == old.deadline
        }
        (State::Deducted | State::Confirmed, State::Refunded) => true,
        // A legacy `FENCE.STOCK … KEEP id qty` names the quantity again.
        (State::Deducted, State::Deducted) => true,
        _ => false,
    }
}

/// The most slots of ended holds one change of an entry takes off the top of the heap.
const DEAD_PER_CHANGE: usize = 64;

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
            hold: None,
            buyer: None,
        }
    }

    fn bounds(ledger: i64) -> Bounds {
        Bounds {
            ledger,
            id_length: i64::MAX,
            buyers: i64::MAX,
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
                s.deduct_admitting(req(quantity, Some(b"b"), None), bounds(max_ledger), refused),
                Err(evicting.clone())
            );
            assert_eq!(s, before);
        }
        // A stale fence is still refused first.
        assert_eq!(
            s.deduct_admitting(req(1, Some(b"b"), Some(4)), bounds(10), refused),
            Err(FenceError::Stale {
                token: 4,
                highest: 5
            })
        );
        // A replay is answered and a deduction without an id runs; neither asks.
        let never = || -> Result<(), FenceError> { panic!("asked") };
        assert_eq!(
            s.deduct_admitting(req(1, Some(b"a"), None), bounds(10), never),
            Ok(Deduct::Replayed(9))
        );
        assert_eq!(
            s.deduct_admitting(req(2, None, None), bounds(10), never),
            Ok(Deduct::Deducted(7))
        );
        // Admitted: as `deduct`.
        assert_eq!(
            s.deduct_admitting(req(1, Some(b"b"), None), bounds(10), || Ok(())),
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
            a.put_entry(id, Value::plain(1), None);
        }
        a.put_entry(b"a", Value::legacy(0), None);
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
        s.restore(before, Some((b"a", Some(Value::plain(3)))));
        assert_eq!(s.available, 7);
        assert_eq!(s.request(b"a"), Some(3));
    }

    fn hold(quantity: i64, id: &[u8], deadline: u64) -> DeductRequest<'_> {
        DeductRequest {
            quantity,
            id: Some(id),
            fence: None,
            hold: Some(Hold {
                deadline,
                events: false,
            }),
            buyer: None,
        }
    }

    #[test]
    fn a_hold_comes_back_at_its_deadline_unless_confirmed() {
        let mut s = Stock::new(10);
        assert_eq!(
            s.deduct(hold(3, b"a", 100), 10, 512),
            Ok(Deduct::Deducted(7))
        );
        assert_eq!(
            s.deduct(hold(2, b"b", 200), 10, 512),
            Ok(Deduct::Deducted(5))
        );
        assert_eq!(
            s.deduct(req(1, Some(b"c"), None), 10, 512),
            Ok(Deduct::Deducted(4))
        );
        // A replay does not move the deadline.
        assert_eq!(
            s.deduct(hold(3, b"a", 999), 10, 512),
            Ok(Deduct::Replayed(4))
        );
        assert_eq!(s.request_at(b"a", 0).map(|v| v.deadline), Some(100));
        let v = s.view(50);
        assert_eq!(
            (v.available, v.held, v.held_units, v.next_deadline),
            (4, 2, 5, Some(100))
        );
        // At 100, a's hold is due: the view has it back before anything is applied.
        let v = s.view(100);
        assert_eq!(
            (v.available, v.deducted, v.held, v.next_deadline),
            (7, 3, 1, Some(200))
        );
        assert_eq!(
            s.request_at(b"a", 100).map(|v| v.state),
            Some(State::Expired)
        );
        assert_eq!(s.available, 4);
        // Confirm b before its deadline; then a's expiry is applied.
        assert_eq!(s.confirm(b"b"), Ok(Confirm::Confirmed));
        assert_eq!(s.confirm(b"b"), Ok(Confirm::Already));
        assert_eq!(s.confirm(b"c"), Ok(Confirm::Already));
        assert_eq!(s.confirm(b"zz"), Ok(Confirm::Unknown));
        let expired = s.expire_due(1000, 10);
        assert_eq!(expired.len(), 1, "b was confirmed: its slot is dead");
        assert_eq!(expired[0].id, b"a");
        assert_eq!(expired[0].value.quantity, 3);
        assert_eq!((s.available, s.deducted), (7, 3));
        assert!(!s.has_due(1000));
        assert_eq!(
            s.confirm(b"a"),
            Err(FenceError::Expired {
                id: "a".into(),
                at: 100
            })
        );
        // An expired entry refunds nothing; a confirmed one gives its units back once.
        assert_eq!(s.refund(b"a"), Ok(0));
        assert_eq!(s.refund(b"b"), Ok(2));
        assert_eq!(s.refund(b"b"), Ok(0));
        assert_eq!(
            s.confirm(b"b"),
            Err(FenceError::Refunded { id: "b".into() })
        );
        assert_eq!(s.request(b"a"), Some(0));
        assert_eq!(s.request(b"b"), Some(0));
        assert_eq!(s.request(b"c"), Some(1));
        let v = s.view(1000);
        assert_eq!(
            (
                v.available,
                v.deducted,
                v.held,
                v.held_units,
                v.next_deadline
            ),
            (9, 1, 0, 0, None)
        );
    }

    #[test]
    fn refunding_a_hold_cancels_it() {
        let mut s = Stock::new(5);
        assert_eq!(
            s.deduct(hold(5, b"a", 100), 10, 512),
            Ok(Deduct::Deducted(0))
        );
        assert_eq!(s.refund(b"a"), Ok(5));
        assert_eq!(s.view(50).held, 0);
        assert!(
            s.expire_due(200, 10).is_empty(),
            "a refunded hold never expires"
        );
        assert_eq!(s.available, 5);
        // expire_if_due: only a due hold.
        assert_eq!(
            s.deduct(hold(2, b"b", 300), 10, 512),
            Ok(Deduct::Deducted(3))
        );
        assert_eq!(s.expire_if_due(b"b", 299), None);
        assert_eq!(
            s.expire_if_due(b"b", 300).map(|e| e.value.quantity),
            Some(2)
        );
        assert_eq!(s.expire_if_due(b"b", 300), None);
        assert_eq!(s.available, 5);
        assert!(s.expire_due(1000, 10).is_empty(), "its slot is dead now");
    }

    #[test]
    fn expiry_is_bounded_per_call_and_in_deadline_order() {
        let mut s = Stock::new(100);
        for i in 0..50u64 {
            let id = format!("o{i}");
            assert!(matches!(
                s.deduct(hold(1, id.as_bytes(), 1000 - i), 100, 512),
                Ok(Deduct::Deducted(_))
            ));
        }
        let first = s.expire_due(2000, 20);
        assert_eq!(first.len(), 20);
        assert_eq!(first[0].id, b"o49");
        assert_eq!(s.view(2000).available, 100);
        assert_eq!(s.available, 70);
        assert_eq!(s.expire_due(2000, 100).len(), 30);
        assert_eq!((s.available, s.deducted, s.view(0).held), (100, 0, 0));
    }

    #[test]
    fn taking_a_hold_back_forgets_it() {
        let mut s = Stock::new(5);
        let before = s.snapshot();
        assert_eq!(
            s.deduct(hold(2, b"a", 100), 10, 512),
            Ok(Deduct::Deducted(3))
        );
        s.restore(before, Some((b"a", None)));
        assert_eq!(s, Stock::new(5));
        assert_eq!(s.view(0).held, 0);
        assert!(s.expire_due(1000, 10).is_empty());
        assert_eq!(s.available, 5);
        // A confirmation taken back holds again, with its deadline.
        assert_eq!(
            s.deduct(hold(2, b"b", 100), 10, 512),
            Ok(Deduct::Deducted(3))
        );
        let before = s.snapshot();
        let held = s.request_at(b"b", 0);
        assert_eq!(s.confirm(b"b"), Ok(Confirm::Confirmed));
        s.restore(before, Some((b"b", held)));
        assert_eq!(s.view(0).held, 1);
        assert_eq!(s.expire_due(100, 10).len(), 1);
        assert_eq!(s.available, 5);
    }

    #[test]
    fn a_reset_drops_every_hold() {
        let mut s = Stock::new(5);
        assert_eq!(
            s.deduct(hold(2, b"a", 100), 10, 512),
            Ok(Deduct::Deducted(3))
        );
        s.reset(7);
        assert!(s.expire_due(1000, 10).is_empty());
        assert_eq!((s.available, s.view(0).held), (7, 0));
    }

    #[test]
    fn ended_holds_leave_the_top_of_the_heap_as_they_end() {
        let mut s = Stock::new(1000);
        for i in 0..100u64 {
            let id = format!("o{i}");
            s.deduct(hold(1, id.as_bytes(), 1000 + i), 200, 512)
                .unwrap();
        }
        // Confirmed in deadline order: each one leaves the heap at once.
        for i in 0..50u64 {
            let id = format!("o{i}");
            assert_eq!(s.confirm(id.as_bytes()), Ok(Confirm::Confirmed));
        }
        assert_eq!(s.holds.len(), 50);
        // Confirmed behind a live one: they wait, then go (at most 64 a change) when it ends.
        for i in (51..100u64).rev() {
            let id = format!("o{i}");
            assert_eq!(s.confirm(id.as_bytes()), Ok(Confirm::Confirmed));
        }
        assert_eq!(s.holds.len(), 50);
        assert_eq!(s.refund(b"o50"), Ok(1));
        assert!(s.holds.is_empty());
        assert_eq!(s.view(5000).next_deadline, None);
        assert_eq!((s.available, s.deducted), (901, 99));
    }

    #[test]
    fn expire_due_bounds_its_work_over_ended_holds() {
        let mut s = Stock::new(100_000);
        for i in 0..10_000u64 {
            let id = format!("o{i}");
            s.deduct(hold(1, id.as_bytes(), 100), 20_000, 512).unwrap();
        }
        s.deduct(hold(1, b"last", 200), 20_000, 512).unwrap();
        // All but "last" confirmed in reverse: their slots stay behind the live top.
        for i in (1..10_000u64).rev() {
            let id = format!("o{i}");
            s.confirm(id.as_bytes()).unwrap();
        }
        let before = s.holds.len();
        // Due: o0 (live) and 9,999 ended slots; one call pops at most 4 a hold it may return,
        // and 64 more behind each hold it returns.
        let out = s.expire_due(150, 10);
        assert_eq!(out.len(), 1);
        assert!(
            before - s.holds.len() <= 40 + 64,
            "{before} -> {}",
            s.holds.len()
        );
        // Later calls finish the job; "last" comes back at its own deadline.
        while !s.expire_due(150, 10).is_empty() || s.has_due(150) {}
        assert_eq!(s.expire_due(250, 10).len(), 1);
        assert!(s.holds.is_empty());
    }

    #[test]
    fn an_undone_refund_of_a_hold_keeps_one_slot() {
        let mut s = Stock::new(10);
        s.deduct(hold(3, b"a", 100), 10, 512).unwrap();
        let before = s.snapshot();
        let old = s.request_at(b"a", 0);
        assert_eq!(s.refund(b"a"), Ok(3));
        s.restore(before, Some((b"a", old)));
        assert_eq!(s.holds.len(), 1);
        let v = s.view(200);
        assert_eq!((v.available, v.held), (10, 0));
        assert_eq!(s.expire_due(200, 10).len(), 1);
        assert_eq!(s.available, 10);
    }

    #[test]
    fn effects_may_only_make_the_changes_a_master_makes() {
        let mut s = Stock::new(10);
        let held = |q, d| Value {
            quantity: q,
            state: State::Held,
            deadline: d,
            events: false,
            buyer: 0,
        };
        let with = |v: Value, state| Value { state, ..v };
        assert!(s.put_entry(b"h", held(2, 100), None));
        assert!(s.put_entry(b"h", held(2, 100), None), "applied twice");
        assert!(!s.put_entry(b"h", held(2, 999), None), "a deadline moved");
        assert!(!s.put_entry(b"h", with(held(2, 999), State::Expired), None));
        assert!(s.put_entry(b"h", with(held(2, 100), State::Expired), None));
        assert!(
            !s.put_entry(b"h", with(held(2, 100), State::Held), None),
            "out of expired"
        );
        assert!(!s.put_entry(b"h", Value::plain(2), None), "out of expired");
        assert!(s.put_entry(b"d", Value::plain(1), None));
        assert!(
            !s.put_entry(b"d", held(1, 100), None),
            "a deduction made held"
        );
        assert!(!s.put_entry(b"d", with(held(1, 100), State::Expired), None));
        assert!(!s.put_entry(b"d", with(held(1, 100), State::Confirmed), None));
        assert!(s.put_entry(b"d", with(Value::plain(1), State::Refunded), None));
        assert!(!s.put_entry(b"d", Value::plain(1), None), "out of refunded");
    }

    fn buy<'a>(quantity: i64, id: &'a [u8], buyer: Option<&'a [u8]>) -> DeductRequest<'a> {
        DeductRequest {
            quantity,
            id: Some(id),
            fence: None,
            hold: None,
            buyer,
        }
    }

    fn buyer_bounds(buyers: i64, id_length: i64) -> Bounds {
        Bounds {
            ledger: 1000,
            id_length,
            buyers,
        }
    }

    #[test]
    fn a_limit_counts_what_each_buyer_holds() {
        let mut s = Stock::new(10);
        let b = buyer_bounds(100, 512);
        let ok = || Ok(());
        // Without a limit BUYER is recorded; a later limit counts it.
        assert_eq!(
            s.deduct_admitting(buy(2, b"o1", Some(b"u")), b, ok),
            Ok(Deduct::Deducted(8))
        );
        s.limit = 3;
        let before = s.clone();
        assert_eq!(
            s.deduct_admitting(buy(2, b"o2", Some(b"u")), b, ok),
            Err(FenceError::Limit {
                buyer: "u".into(),
                has: 2,
                max: 3
            })
        );
        assert_eq!(s, before, "nothing changed");
        // A limit set: no BUYER is refused, a replay is answered first (even for another buyer).
        assert_eq!(
            s.deduct_admitting(buy(1, b"o9", None), b, ok),
            Err(FenceError::BuyerRequired { limit: 3 })
        );
        assert_eq!(
            s.deduct_admitting(req(1, None, None), b, ok),
            Err(FenceError::BuyerRequired { limit: 3 })
        );
        assert_eq!(
            s.deduct_admitting(buy(5, b"o1", Some(b"v")), b, ok),
            Ok(Deduct::Replayed(8))
        );
        assert_eq!((s.buyer_units(b"u", 0), s.buyer_units(b"v", 0)), (2, 0));
        // The limit step comes before the quantity: LIMIT even when the stock is short.
        assert!(matches!(
            s.deduct_admitting(buy(50, b"o3", Some(b"u")), b, ok),
            Err(FenceError::Limit { .. })
        ));
        assert_eq!(
            s.deduct_admitting(buy(50, b"o3", Some(b"w")), b, ok),
            Err(FenceError::Limit {
                buyer: "w".into(),
                has: 0,
                max: 3
            })
        );
        assert_eq!(
            s.deduct_admitting(buy(3, b"o3", Some(b"w")), b, ok),
            Ok(Deduct::Deducted(5))
        );
        // A refund gives the allowance back; an expired hold too; a confirmation changes nothing.
        assert_eq!(s.refund(b"o1"), Ok(2));
        assert_eq!(s.buyer_units(b"u", 0), 0);
        let hold = DeductRequest {
            hold: Some(Hold {
                deadline: 100,
                events: false,
            }),
            ..buy(3, b"h1", Some(b"u"))
        };
        assert_eq!(s.deduct_admitting(hold, b, ok), Ok(Deduct::Deducted(4)));
        assert_eq!(s.buyer_units(b"u", 99), 3);
        assert_eq!(s.buyer_units(b"u", 100), 0, "a due hold reads as returned");
        assert_eq!(s.expire_due(100, 10).len(), 1);
        assert_eq!(s.buyer_units(b"u", 0), 0);
        let hold = DeductRequest {
            hold: Some(Hold {
                deadline: 200,
                events: false,
            }),
            ..buy(1, b"h2", Some(b"u"))
        };
        assert_eq!(s.deduct_admitting(hold, b, ok), Ok(Deduct::Deducted(6)));
        assert_eq!(s.confirm(b"h2"), Ok(Confirm::Confirmed));
        assert_eq!(s.buyer_units(b"u", 1000), 1);
        // A buyer's units never wrap: past 2^63-1 the deduction is refused.
        let mut big = Stock::new(i64::MAX);
        assert_eq!(
            big.deduct_admitting(buy(i64::MAX, b"x1", Some(b"u")), b, ok),
            Ok(Deduct::Deducted(0))
        );
        assert_eq!(big.add(1), Ok(1));
        let before = big.clone();
        assert_eq!(
            big.deduct_admitting(buy(1, b"x2", Some(b"u")), b, ok),
            Err(FenceError::Overflow)
        );
        assert_eq!(big, before);
        // Lowering the limit keeps what buyers hold.
        s.limit = 1;
        assert_eq!(s.buyer_units(b"w", 0), 3);
        assert!(matches!(
            s.deduct_admitting(buy(1, b"o4", Some(b"w")), b, ok),
            Err(FenceError::Limit { has: 3, max: 1, .. })
        ));
        assert_eq!(
            s.request_at(b"o3", 0).and_then(|v| s.buyer_of(v)),
            Some(&b"w"[..])
        );
        assert_eq!(s.buyers_len(), 2, "u and w; v never bought");
        // A new sale clears the buyers and keeps the limit.
        s.reset(5);
        assert_eq!((s.buyers_len(), s.limit, s.buyer_units(b"w", 0)), (0, 1, 0));
    }

    #[test]
    fn a_buyer_s_due_holds_come_back_apart_from_the_others() {
        let mut s = Stock::new(10_000);
        s.limit = 1;
        let b = buyer_bounds(10_000, 512);
        for i in 0..50u32 {
            let (id, buyer) = (format!("o{i}"), format!("b{i}"));
            let req = DeductRequest {
                hold: Some(Hold {
                    deadline: 100,
                    events: false,
                }),
                ..buy(1, id.as_bytes(), Some(buyer.as_bytes()))
            };
            s.deduct_admitting(req, b, || Ok(())).unwrap();
        }
        let req = DeductRequest {
            hold: Some(Hold {
                deadline: 150,
                events: false,
            }),
            ..buy(1, b"u1", Some(b"u"))
        };
        s.deduct_admitting(req, b, || Ok(())).unwrap();
        // Only some of the due holds were returned: u's is still stored as held.
        assert_eq!(s.expire_due(200, 10).len(), 10);
        assert_eq!(s.buyer_units(b"u", 200), 0);
        assert!(matches!(
            s.deduct_admitting(buy(1, b"u2", Some(b"u")), b, || Ok(())),
            Err(FenceError::Limit { has: 1, .. })
        ));
        let back = s.expire_buyer_due(b"u", 200);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].id, b"u1");
        assert!(s.expire_buyer_due(b"u", 200).is_empty());
        assert!(s.expire_buyer_due(b"nobody", 200).is_empty());
        assert_eq!(
            s.deduct_admitting(buy(1, b"u2", Some(b"u")), b, || Ok(())),
            Ok(Deduct::Deducted(10_000 - 50 + 10 - 1))
        );
        // The others come back as before, each once.
        let mut rest = 0;
        loop {
            let n = s.expire_due(200, 7).len();
            if n == 0 {
                break;
            }
            rest += n;
        }
        assert_eq!(rest, 40);
    }

    #[test]
    fn new_buyers_are_bounded() {
        let mut s = Stock::new(10);
        let ok = || Ok(());
        assert_eq!(
            s.deduct_admitting(buy(1, b"o1", Some(b"long-buyer")), buyer_bounds(1, 4), ok),
            Err(FenceError::NameTooLong {
                name: Name::BuyerId,
                max: 4
            })
        );
        assert_eq!(
            s.deduct_admitting(buy(1, b"o1", Some(b"u")), buyer_bounds(1, 4), ok),
            Ok(Deduct::Deducted(9))
        );
        assert_eq!(
            s.deduct_admitting(buy(1, b"o2", Some(b"v")), buyer_bounds(1, 4), ok),
            Err(FenceError::BuyersFull { max: 1 })
        );
        // A known buyer keeps buying, whatever the bounds say now.
        assert_eq!(
            s.deduct_admitting(buy(1, b"o2", Some(b"u")), buyer_bounds(0, 2), ok),
            Ok(Deduct::Deducted(8))
        );
        // Taking a deduction back forgets the buyer it recorded first.
        let before = s.clone();
        let snap = s.snapshot();
        assert_eq!(
            s.deduct_admitting(buy(1, b"o3", Some(b"z")), buyer_bounds(9, 9), ok),
            Ok(Deduct::Deducted(7))
        );
        s.restore(snap, Some((b"o3", None)));
        assert_eq!(s, before);
        assert_eq!(s.buyers_len(), 1);
    }

    #[test]
    fn effects_keep_each_entry_with_its_buyer() {
        let mut s = Stock::new(10);
        assert!(s.put_entry(b"o1", Value::plain(2), Some(b"u")));
        assert!(
            s.put_entry(b"o1", Value::plain(2), Some(b"u")),
            "applied twice"
        );
        assert!(
            !s.put_entry(b"o1", Value::plain(2), Some(b"v")),
            "another buyer"
        );
        assert!(
            !s.put_entry(b"o1", Value::plain(2), None),
            "the buyer dropped"
        );
        assert_eq!(s.buyers_len(), 1, "a refused effect records no buyer");
        let refunded = Value {
            state: State::Refunded,
            ..Value::plain(2)
        };
        assert!(s.put_entry(b"o1", refunded, Some(b"u")));
        assert_eq!(s.buyer_units(b"u", 0), 0);
        // A buyer's entry keeps its quantity.
        let held = Value {
            quantity: 1,
            state: State::Held,
            deadline: 5,
            events: false,
            buyer: 0,
        };
        assert!(s.put_entry(b"h", held, Some(b"u")));
        let confirmed = Value {
            state: State::Confirmed,
            deadline: 0,
            ..held
        };
        assert!(!s.put_entry(
            b"h",
            Value {
                quantity: 9,
                ..confirmed
            },
            Some(b"u")
        ));
        assert!(s.put_entry(b"h", confirmed, Some(b"u")));
        assert_eq!(s.buyer_units(b"u", 0), 1);
        assert!(s.put_entry(b"big", Value::plain(i64::MAX), Some(b"w")));
        assert!(
            !s.put_entry(b"big2", Value::plain(1), Some(b"w")),
            "past 2^63-1"
        );
        assert_eq!(s.buyer_units(b"w", 0), i64::MAX);
        assert!(s.put_entry(b"o2", Value::plain(1), None));
        assert!(
            !s.put_entry(b"o2", Value::plain(1), Some(b"u")),
            "a buyer added later"
        );
        let e = s.entry_effect(b"o1", s.request_at(b"o1", 0).unwrap_or_default());
        assert_eq!(e.buyer, Some(&b"u"[..]));
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
