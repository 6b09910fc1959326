//! The request-id ledger of a stock: id -> quantity, built to stay fast at a million entries.
//!
//! Plain Rust. Why not a `HashMap<Box<[u8]>, i64>`:
//! - it doubles and rehashes every entry in one go: at 900,000 entries one deduction stalled
//!   the server for 93 ms; here the table grows **step by step** (as Redis's own dictionaries
//!   do): a resize allocates the new bucket array, and each later insert moves a few old
//!   buckets over, so no single command pays for more than that;
//! - every id was its own allocation: freeing a ledger (`DEL`, `STOCK.SET`) freed a million
//!   blocks one by one, and `MEMORY USAGE` walked every id. Here ids live in **fixed-size
//!   chunks**, written once and never moved, and the entries in fixed-size blocks, so freeing
//!   or copying a ledger touches a few hundred blocks, growth never copies what exists, and
//!   the memory used is a running count (O(1), exact to the allocator's block sizes);
//! - entries are kept **in insertion order**, so saving, rewriting and digesting need no sort.
//!
//! Entries are never removed one by one (a refund sets the quantity to 0; a new sale clears
//! the whole ledger), except that the latest insert can be taken back (`remove_last`, for a
//! call that fails after it decided). The hash is SipHash with a random key per ledger, so
//! chosen ids cannot make chains long.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// Bytes per id chunk. A record larger than a quarter of it gets a chunk of its own.
const ARENA_CHUNK: usize = 64 * 1024;
/// Entries per entry block (16 bytes each: 64 KiB).
const ENTRY_BLOCK: usize = 4096;
/// The first entry block starts with room for this many entries and doubles until it holds
/// `ENTRY_BLOCK`, and the first id chunk starts with `FIRST_CHUNK` bytes and doubles until
/// `ARENA_CHUNK`: a ledger of a few ids (a small sale, a buyer table) costs a few hundred bytes,
/// not 128 KiB, and the copies these growths make add up to less than 128 KiB in all. Records
/// are addressed by chunk and offset, so a chunk that grows moves no address.
const FIRST_BLOCK: usize = 8;
const FIRST_CHUNK: usize = 256;
/// Old buckets moved to the new table by each insert while the table grows; with twice as
/// many new buckets as entries at the start of a resize, the move ends long before the next.
const MIGRATE_PER_INSERT: usize = 4;
/// Bytes before the id in a record: the quantity (8), the id's length (4) and the flags (1);
/// a held entry's record has its deadline (8) after them (`SLOT`).
const RECORD_HEADER: usize = 13;
/// Bytes of a deadline slot.
const SLOT_BYTES: usize = 8;
/// Bytes of a buyer slot (the buyer's index in the stock's buyer table), after the deadline
/// slot when there is one.
const BUYER_BYTES: usize = 4;
/// Flag bits of a record: the state (3 bits), the hold's events, and whether the record has a
/// deadline slot (made held; the slot stays when the state changes, so a record never moves).
const STATE_BITS: u8 = 0b111;
const EVENTS_BIT: u8 = 1 << 3;
const SLOT_BIT: u8 = 1 << 4;
/// The record names a buyer (a buyer slot in memory; a varint index in a `Format::V5` blob).
const BUYER_BIT: u8 = 1 << 5;
/// Bytes of records a saved blob holds (it ends after the record that reaches this).
const BLOB_TARGET: usize = 64 * 1024;
/// Records a load reads ahead of their inserts (see `Ledger::touch`).
const LOAD_BATCH: usize = 32;
/// The latest deadline a hold may have (Unix ms, the last millisecond of the year 9999): what
/// a load or an effect accepts. `HOLD` makes none later than now + 10 years; a far larger one
/// could only be forged, and timer arithmetic stays far from overflowing below it.
pub const MAX_DEADLINE: u64 = 253_402_300_799_999;
/// The most entries a ledger can hold (entry indexes are 32-bit).
pub const MAX_ENTRIES: usize = u32::MAX as usize - 1;

/// Where a record lives: chunk index (high 32 bits) and offset in it (low 32 bits).
type Loc = u64;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    loc: Loc,
    hash: u32,
    /// The next entry of the same bucket, as index + 1 (0: end of chain).
    next: u32,
}

/// A bucket array: each bucket the head of a chain, as entry index + 1 (0: empty).
#[derive(Clone, Default)]
struct Table {
    heads: Box<[u32]>,
}

impl Table {
    fn with_buckets(n: usize) -> Table {
        Table {
            heads: vec![0u32; n].into_boxed_slice(),
        }
    }

    fn bucket(&self, hash: u32) -> usize {
        // The bucket count is a power of two.
        (hash as usize) & (self.heads.len().wrapping_sub(1))
    }

    fn bytes(&self) -> usize {
        self.heads.len() * std::mem::size_of::<u32>()
    }
}

/// Where a ledger entry stands. A request-ledger entry is `Deducted` when made without a hold
/// and `Held` with one; a hold ends `Confirmed`, `Refunded` or `Expired`; a deducted or
/// confirmed entry can be `Refunded`. Restock-ledger entries are always `Deducted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum State {
    #[default]
    Deducted,
    Held,
    Confirmed,
    Refunded,
    Expired,
}

impl State {
    /// Whether the entry's units are sold or reserved (not given back).
    pub fn holds_units(self) -> bool {
        matches!(self, State::Deducted | State::Held | State::Confirmed)
    }

    fn code(self) -> u8 {
        match self {
            State::Deducted => 0,
            State::Held => 1,
            State::Confirmed => 2,
            State::Refunded => 3,
            State::Expired => 4,
        }
    }

    fn from_code(code: u8) -> Option<State> {
        Some(match code {
            0 => State::Deducted,
            1 => State::Held,
            2 => State::Confirmed,
            3 => State::Refunded,
            4 => State::Expired,
            _ => return None,
        })
    }

    /// The state's name in replies and effects.
    pub fn name(self) -> &'static str {
        match self {
            State::Deducted => "deducted",
            State::Held => "held",
            State::Confirmed => "confirmed",
            State::Refunded => "refunded",
            State::Expired => "expired",
        }
    }

    /// The state named `name` (as `name` spells it).
    pub fn from_name(name: &[u8]) -> Option<State> {
        [
            State::Deducted,
            State::Held,
            State::Confirmed,
            State::Refunded,
            State::Expired,
        ]
        .into_iter()
        .find(|s| s.name().as_bytes() == name)
    }
}

/// What a ledger entry holds besides its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Value {
    /// The units the request took (kept when they are given back).
    pub quantity: i64,
    pub state: State,
    /// When a held entry's units go back (an expired entry's: when they did), in Unix
    /// milliseconds; 0 in any other state.
    pub deadline: u64,
    /// The hold was made with `EVENTS`: its expiry is announced on the stock's expire stream.
    pub events: bool,
    /// Who the deduction was for (`BUYER`): the buyer's index in the stock's buyer table plus
    /// one; 0 for none. Set when the entry is made and never changed.
    pub buyer: u32,
}

impl Value {
    /// A plain entry: `quantity` units, deducted (a restock, or a deduction without a hold).
    pub fn plain(quantity: i64) -> Value {
        Value {
            quantity,
            ..Value::default()
        }
    }

    /// The entry as an encoding without states held it: a quantity of 0 was a refund.
    pub fn legacy(quantity: i64) -> Value {
        if quantity == 0 {
            Value {
                state: State::Refunded,
                ..Value::default()
            }
        } else {
            Value::plain(quantity)
        }
    }

    /// The units it holds now (0 once given back): what `STOCK.REQUEST` answers.
    pub fn units(&self) -> i64 {
        if self.state.holds_units() {
            self.quantity
        } else {
            0
        }
    }

    fn flags(&self) -> u8 {
        self.state.code()
            | if self.events { EVENTS_BIT } else { 0 }
            | if self.buyer != 0 { BUYER_BIT } else { 0 }
    }
}

impl State {
    /// Whether an entry in this state keeps a deadline: a held one until it, an expired one
    /// the time its units came back.
    pub fn keeps_deadline(self) -> bool {
        matches!(self, State::Held | State::Expired)
    }
}

/// What `insert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Added,
    /// The id is there already: nothing changed.
    Exists,
    /// `MAX_ENTRIES` reached: nothing changed.
    Full,
}

/// Request id -> quantity, in insertion order.
pub struct Ledger {
    hasher: RandomState,
    /// Id records `[quantity i64][length u32][id]`, in chunks that never grow past their
    /// capacity (so a record never moves).
    chunks: Vec<Vec<u8>>,
    /// The chunk records are appended to (oversized records get chunks of their own).
    current: Option<usize>,
    /// Entries in insertion order, in blocks of `ENTRY_BLOCK`.
    blocks: Vec<Box<[Entry]>>,
    len: usize,
    table: Table,
    /// While growing: the old table and the next old bucket to move.
    old: Option<(Table, usize)>,
    /// Bytes allocated for chunks, blocks and tables.
    bytes: usize,
    /// Being loaded (RDB, RESTORE): a resize moves every entry at once, since no client waits
    /// on one command of a load the way it does on a deduction.
    bulk: bool,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

impl Ledger {
    /// An empty ledger; allocates nothing until the first insert.
    pub fn new() -> Ledger {
        Ledger {
            hasher: RandomState::new(),
            chunks: Vec::new(),
            current: None,
            blocks: Vec::new(),
            len: 0,
            table: Table::default(),
            old: None,
            bytes: 0,
            bulk: false,
        }
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn hash(&self, id: &[u8]) -> u32 {
        // One `write` of the bytes (`hash_one` would add the length as a second).
        let mut hasher = self.hasher.build_hasher();
        hasher.write(id);
        let h = hasher.finish();
        (h ^ (h >> 32)) as u32
    }

    fn entry(&self, i: usize) -> Entry {
        self.blocks
            .get(i / ENTRY_BLOCK)
            .and_then(|b| b.get(i % ENTRY_BLOCK))
            .copied()
            .unwrap_or_default()
    }

    fn entry_mut(&mut self, i: usize) -> Option<&mut Entry> {
        self.blocks
            .get_mut(i / ENTRY_BLOCK)
            .and_then(|b| b.get_mut(i % ENTRY_BLOCK))
    }

    /// The id and value of the record at `loc`.
    fn record(&self, loc: Loc) -> (&[u8], Value) {
        let (chunk, at) = ((loc >> 32) as usize, (loc & 0xffff_ffff) as usize);
        let Some(c) = self.chunks.get(chunk) else {
            return (&[], Value::default());
        };
        let qty = c
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_le_bytes);
        let len = c
            .get(at + 8..at + 12)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes) as usize;
        let flags = c.get(at + 12).copied().unwrap_or(0);
        let state = State::from_code(flags & STATE_BITS).unwrap_or_default();
        let mut start = at + RECORD_HEADER;
        let mut deadline = 0;
        if flags & SLOT_BIT != 0 {
            if state.keeps_deadline() {
                deadline = c
                    .get(start..start + SLOT_BYTES)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_le_bytes);
            }
            start += SLOT_BYTES;
        }
        let mut buyer = 0;
        if flags & BUYER_BIT != 0 {
            buyer = c
                .get(start..start + BUYER_BYTES)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes);
            start += BUYER_BYTES;
        }
        let id = c.get(start..start + len).unwrap_or_default();
        let value = Value {
            quantity: qty,
            state,
            deadline,
            events: flags & EVENTS_BIT != 0,
            buyer,
        };
        (id, value)
    }

    /// Rewrites the value of the record at `loc` in place; false (nothing changed) when it
    /// would need a deadline slot the record was not made with, or names another buyer than
    /// the record's (a buyer is set when the entry is made).
    fn write_value(&mut self, loc: Loc, value: Value) -> bool {
        if self.record(loc).1.buyer != value.buyer {
            return false;
        }
        let (chunk, at) = ((loc >> 32) as usize, (loc & 0xffff_ffff) as usize);
        let Some(c) = self.chunks.get_mut(chunk) else {
            return false;
        };
        let slot = c.get(at + 12).is_some_and(|f| f & SLOT_BIT != 0);
        // Held and expired entries keep their deadline: never on a record made without room
        // for it (its deadline would read back as 0, which no load accepts).
        if value.state.keeps_deadline() && !slot {
            return false;
        }
        if let Some(b) = c.get_mut(at..at + 8) {
            b.copy_from_slice(&value.quantity.to_le_bytes());
        }
        if let Some(f) = c.get_mut(at + 12) {
            *f = value.flags() | if slot { SLOT_BIT } else { 0 };
        }
        if slot && value.state.keeps_deadline() {
            let start = at + RECORD_HEADER;
            if let Some(b) = c.get_mut(start..start + SLOT_BYTES) {
                b.copy_from_slice(&value.deadline.to_le_bytes());
            }
        }
        true
    }

    /// The index of `id`'s entry, looked for in the table and, while it grows, the old one.
    fn find(&self, hash: u32, id: &[u8]) -> Option<usize> {
        let tables = std::iter::once(&self.table).chain(self.old.as_ref().map(|(t, _)| t));
        for table in tables {
            if table.heads.is_empty() {
                continue;
            }
            let mut next = table.heads.get(table.bucket(hash)).copied().unwrap_or(0);
            while next != 0 {
                let i = next as usize - 1;
                let e = self.entry(i);
                if e.hash == hash && self.record(e.loc).0 == id {
                    return Some(i);
                }
                next = e.next;
            }
        }
        None
    }

    /// The index of `id`'s entry (its place in insertion order), or None.
    pub fn index_of(&self, id: &[u8]) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        self.find(self.hash(id), id)
    }

    /// The id and value of the entry at `index`.
    pub fn at(&self, index: usize) -> Option<(&[u8], Value)> {
        (index < self.len).then(|| self.record(self.entry(index).loc))
    }

    /// The value of `id`'s entry, or None when it is not here.
    pub fn value(&self, id: &[u8]) -> Option<Value> {
        let i = self.index_of(id)?;
        Some(self.record(self.entry(i).loc).1)
    }

    /// The quantity of `id`'s entry, or None when it is not here.
    pub fn get(&self, id: &[u8]) -> Option<i64> {
        self.value(id).map(|v| v.quantity)
    }

    /// Sets the value of the entry at `index`; false (nothing changed) when there is none, or
    /// when the value is held and the entry was not made held (it has no deadline slot).
    pub fn set_at(&mut self, index: usize, value: Value) -> bool {
        if index >= self.len {
            return false;
        }
        let loc = self.entry(index).loc;
        self.write_value(loc, value)
    }

    /// Sets the value of an id that is here; false (nothing changed) when it is not, or as
    /// `set_at` refuses.
    pub fn set_value(&mut self, id: &[u8], value: Value) -> bool {
        match self.index_of(id) {
            Some(i) => self.set_at(i, value),
            None => false,
        }
    }

    /// Sets the quantity of an id that is here (a plain entry); false when it is not.
    pub fn set(&mut self, id: &[u8], qty: i64) -> bool {
        self.set_value(id, Value::plain(qty))
    }

    /// Sets the value of the latest insert.
    pub fn set_last(&mut self, value: Value) -> bool {
        match self.len.checked_sub(1) {
            Some(last) => self.set_at(last, value),
            None => false,
        }
    }

    /// Adds a plain entry `id` with `qty` at the end, unless it is here already.
    pub fn insert(&mut self, id: &[u8], qty: i64) -> Insert {
        self.insert_value(id, Value::plain(qty))
    }

    /// Adds `id` with `value` at the end, unless it is here already. A held value gets a
    /// deadline slot (and only a held one).
    pub fn insert_value(&mut self, id: &[u8], value: Value) -> Insert {
        let hash = self.hash(id);
        self.insert_hashed(hash, id, value)
    }

    /// `insert_value`, with `id`'s hash already computed.
    fn insert_hashed(&mut self, hash: u32, id: &[u8], value: Value) -> Insert {
        if self.len > 0 && self.find(hash, id).is_some() {
            return Insert::Exists;
        }
        if self.len >= MAX_ENTRIES
            || id.len() > u32::MAX as usize - RECORD_HEADER - SLOT_BYTES - BUYER_BYTES
        {
            return Insert::Full;
        }
        self.grow_table();
        let loc = self.append_record(id, value);
        self.link(hash, loc);
        Insert::Added
    }

    /// Adds the entry of the record at `loc` (already stored) to the table, at the end.
    fn link(&mut self, hash: u32, loc: Loc) {
        let i = self.len;
        if i % ENTRY_BLOCK == 0 && i / ENTRY_BLOCK == self.blocks.len() {
            let n = if i == 0 { FIRST_BLOCK } else { ENTRY_BLOCK };
            self.blocks
                .push(vec![Entry::default(); n].into_boxed_slice());
            self.bytes += n * std::mem::size_of::<Entry>();
        } else if let Some(first) = self.blocks.first_mut().filter(|b| i == b.len()) {
            // The first block is full below `ENTRY_BLOCK` entries: it doubles.
            let n = (first.len() * 2).clamp(FIRST_BLOCK, ENTRY_BLOCK);
            let mut bigger = vec![Entry::default(); n];
            if let Some(head) = bigger.get_mut(..first.len()) {
                head.copy_from_slice(first);
            }
            self.bytes += (n - first.len()) * std::mem::size_of::<Entry>();
            *first = bigger.into_boxed_slice();
        }
        let b = self.table.bucket(hash);
        let head = self.table.heads.get(b).copied().unwrap_or(0);
        if let Some(e) = self.entry_mut(i) {
            *e = Entry {
                loc,
                hash,
                next: head,
            };
        }
        if let Some(h) = self.table.heads.get_mut(b) {
            *h = (i + 1) as u32;
        }
        self.len += 1;
    }

    /// Makes room for one more entry: starts a resize when the table is full (load factor 1),
    /// and moves a few old buckets while one is under way.
    fn grow_table(&mut self) {
        if self.table.heads.is_empty() {
            self.table = Table::with_buckets(8);
            self.bytes += self.table.bytes();
        }
        if self.len + 1 > self.table.heads.len() {
            // A resize still under way when the next is due (only if someone inserted in
            // bursts far beyond the steps): finish it first.
            self.migrate(usize::MAX);
            let bigger = Table::with_buckets(self.table.heads.len() * 2);
            self.bytes += bigger.bytes();
            let old = std::mem::replace(&mut self.table, bigger);
            self.old = Some((old, 0));
        }
        if self.old.is_some() {
            self.migrate(if self.bulk {
                usize::MAX
            } else {
                MIGRATE_PER_INSERT
            });
        }
    }

    /// Moves up to `steps` old buckets to the table; frees the old table when it is empty.
    fn migrate(&mut self, steps: usize) {
        let Some((mut old, mut pos)) = self.old.take() else {
            return;
        };
        let mut done = 0;
        while pos < old.heads.len() && done < steps {
            let mut next = std::mem::take(&mut old.heads[pos]);
            while next != 0 {
                let i = next as usize - 1;
                let e = self.entry(i);
                next = e.next;
                let b = self.table.bucket(e.hash);
                let head = self.table.heads.get(b).copied().unwrap_or(0);
                if let Some(entry) = self.entry_mut(i) {
                    entry.next = head;
                }
                if let Some(h) = self.table.heads.get_mut(b) {
                    *h = (i + 1) as u32;
                }
            }
            pos += 1;
            done += 1;
        }
        if pos < old.heads.len() {
            self.old = Some((old, pos));
        } else {
            self.bytes -= old.bytes();
        }
    }

    /// Writes a record where it will stay; returns its location.
    fn append_record(&mut self, id: &[u8], value: Value) -> Loc {
        let slot = value.state.keeps_deadline();
        let size = RECORD_HEADER
            + if slot { SLOT_BYTES } else { 0 }
            + if value.buyer != 0 { BUYER_BYTES } else { 0 }
            + id.len();
        let mut fits = self
            .current
            .and_then(|c| self.chunks.get(c))
            .is_some_and(|c| c.capacity() - c.len() >= size);
        if !fits && size <= ARENA_CHUNK / 4 {
            // A current chunk still below `ARENA_CHUNK` doubles (at most to it) when that makes
            // room.
            if let Some(c) = self.current.and_then(|c| self.chunks.get_mut(c)) {
                let cap = c.capacity();
                let want = (cap * 2).max(c.len() + size).min(ARENA_CHUNK);
                if cap < ARENA_CHUNK && want - c.len() >= size {
                    c.reserve_exact(want - c.len());
                    self.bytes += c.capacity() - cap;
                    fits = true;
                }
            }
        }
        let chunk = if size > ARENA_CHUNK / 4 {
            // Its own chunk, exactly its size.
            self.chunks.push(Vec::with_capacity(size));
            self.bytes += size;
            self.chunks.len() - 1
        } else if fits {
            self.current.unwrap_or(0)
        } else {
            // The first chunk starts small; later ones start whole.
            let cap = if self.current.is_none() {
                FIRST_CHUNK.max(size)
            } else {
                ARENA_CHUNK
            };
            let c = Vec::with_capacity(cap);
            self.bytes += c.capacity();
            self.chunks.push(c);
            self.current = Some(self.chunks.len() - 1);
            self.chunks.len() - 1
        };
        let Some(c) = self.chunks.get_mut(chunk) else {
            return 0;
        };
        let at = c.len();
        c.extend_from_slice(&value.quantity.to_le_bytes());
        c.extend_from_slice(&(id.len() as u32).to_le_bytes());
        c.push(value.flags() | if slot { SLOT_BIT } else { 0 });
        if slot {
            c.extend_from_slice(&value.deadline.to_le_bytes());
        }
        if value.buyer != 0 {
            c.extend_from_slice(&value.buyer.to_le_bytes());
        }
        c.extend_from_slice(id);
        ((chunk as u64) << 32) | at as u64
    }

    /// Takes back the latest insert, if it was `id` (a call that failed after it decided);
    /// false, and nothing changed, otherwise.
    pub fn remove_last(&mut self, id: &[u8]) -> bool {
        let Some(last) = self.len.checked_sub(1) else {
            return false;
        };
        let e = self.entry(last);
        if self.record(e.loc).0 != id {
            return false;
        }
        // Unlink it from whichever table's chain holds it.
        let target = (last + 1) as u32;
        let blocks = &mut self.blocks;
        let mut unlink = |table: &mut Table| -> bool {
            if table.heads.is_empty() {
                return false;
            }
            let b = table.bucket(e.hash);
            let mut prev: Option<usize> = None;
            let mut next = table.heads.get(b).copied().unwrap_or(0);
            while next != 0 {
                let i = next as usize - 1;
                let following = blocks
                    .get(i / ENTRY_BLOCK)
                    .and_then(|bl| bl.get(i % ENTRY_BLOCK))
                    .map_or(0, |x| x.next);
                if next == target {
                    match prev {
                        None => {
                            if let Some(h) = table.heads.get_mut(b) {
                                *h = following;
                            }
                        }
                        Some(p) => {
                            if let Some(pe) = blocks
                                .get_mut(p / ENTRY_BLOCK)
                                .and_then(|bl| bl.get_mut(p % ENTRY_BLOCK))
                            {
                                pe.next = following;
                            }
                        }
                    }
                    return true;
                }
                prev = Some(i);
                next = following;
            }
            false
        };
        let found = unlink(&mut self.table) || self.old.as_mut().is_some_and(|(t, _)| unlink(t));
        if !found {
            return false;
        }
        // The record was the last one written to its chunk.
        let (chunk, at) = ((e.loc >> 32) as usize, (e.loc & 0xffff_ffff) as usize);
        let own_chunk = Some(chunk) != self.current && chunk + 1 == self.chunks.len() && at == 0;
        if own_chunk {
            if let Some(c) = self.chunks.pop() {
                self.bytes -= c.capacity();
            }
        } else if let Some(c) = self.chunks.get_mut(chunk) {
            c.truncate(at);
        }
        self.len = last;
        if last % ENTRY_BLOCK == 0 && self.blocks.len() > last / ENTRY_BLOCK {
            if let Some(b) = self.blocks.pop() {
                self.bytes -= b.len() * std::mem::size_of::<Entry>();
            }
        }
        true
    }

    /// Prepares for a load of `n` more entries: the table is sized for them now (at most
    /// `MAX_RESERVE` ahead of data actually read, so a forged count cannot allocate much: 4 MiB
    /// of buckets), and until `loaded` every resize moves all entries at once.
    pub fn reserve(&mut self, n: usize) {
        const MAX_RESERVE: usize = 1 << 20;
        self.bulk = true;
        let want = (self.len + n.min(MAX_RESERVE)).next_power_of_two().max(8);
        if want <= self.table.heads.len() {
            return;
        }
        self.migrate(usize::MAX);
        let bigger = Table::with_buckets(want);
        self.bytes += bigger.bytes();
        let old = std::mem::replace(&mut self.table, bigger);
        self.old = Some((old, 0));
        self.migrate(usize::MAX);
    }

    /// Hands every entry to `out` as blobs of whole records, in insertion order (`Format::V5`):
    /// each record is the quantity and the id's length as LEB128 varints, a flags byte (the
    /// state, whether a hold announces its expiry, whether a buyer is named), a held or expired
    /// entry's deadline as a varint, the buyer's index (from 0) as a varint, then the id; a blob
    /// ends once it holds `BLOB_TARGET` bytes. What an RDB saves: a few
    /// large strings instead of several values per entry, and headers of 3 bytes for most
    /// records, not the 13 kept in memory (Redis compresses large strings in an RDB, and a
    /// load then decompresses every byte).
    pub fn save_blobs(&self, mut out: impl FnMut(&[u8])) {
        let mut blob = Vec::with_capacity(BLOB_TARGET + 4 * MAX_VARINT + 1);
        for (id, value) in self.iter() {
            put_varint(&mut blob, value.quantity.max(0) as u64);
            put_varint(&mut blob, id.len() as u64);
            blob.push(value.flags());
            if value.state.keeps_deadline() {
                put_varint(&mut blob, value.deadline);
            }
            if let Some(index) = value.buyer.checked_sub(1) {
                put_varint(&mut blob, u64::from(index));
            }
            blob.extend_from_slice(id);
            if blob.len() >= BLOB_TARGET {
                out(&blob);
                blob.clear();
            }
        }
        if !blob.is_empty() {
            out(&blob);
        }
    }

    /// Adds every record of `blob` (as `save_blobs` writes them in `format`), checked: whole
    /// records only, canonical varints, quantities from 0 to `i64::MAX`, known flags, a
    /// deadline of at least 1 on held entries, ids not empty and not already here. Returns how
    /// many it added; on an error the ledger may hold part of the blob (the caller drops it).
    pub fn insert_blob(&mut self, blob: &[u8], format: Format) -> Result<usize, &'static str> {
        let mut rest = blob;
        let mut added = 0;
        while !rest.is_empty() {
            let mut batch: [(u32, &[u8], Value); LOAD_BATCH] =
                [(0, &[], Value::default()); LOAD_BATCH];
            let mut n = 0;
            while n < LOAD_BATCH && !rest.is_empty() {
                let (id, value, tail) = split_record(rest, format)?;
                if let Some(slot) = batch.get_mut(n) {
                    *slot = (self.hash(id), id, value);
                }
                n += 1;
                rest = tail;
            }
            let batch = batch.get(..n).unwrap_or_default();
            self.touch(batch.iter().map(|b| b.0));
            for &(hash, id, value) in batch {
                match self.insert_hashed(hash, id, value) {
                    Insert::Added => added += 1,
                    Insert::Exists => return Err("an id appears twice"),
                    Insert::Full => return Err("too many entries"),
                }
            }
        }
        Ok(added)
    }

    /// Reads the bucket heads of `hashes`, then their first two entries, before any insert:
    /// within a pass the reads do not depend on each other, so the processor overlaps their
    /// cache misses, where insert by insert each waits for the last (1,000,000 records: 250
    /// ms -> 110 ms here).
    fn touch(&self, hashes: impl Iterator<Item = u32> + Clone) {
        let mut touched = 0u64;
        for hash in hashes.clone() {
            let head = self.table.heads.get(self.table.bucket(hash)).copied();
            touched = touched.wrapping_add(u64::from(head.unwrap_or(0)));
        }
        let mut seconds = 0u64;
        let mut second = |next: u32| {
            if let Some(i) = (next as usize).checked_sub(1) {
                seconds = seconds.wrapping_add(u64::from(self.entry(i).hash));
            }
        };
        let mut nexts = [0u32; LOAD_BATCH];
        for (hash, next) in hashes.zip(nexts.iter_mut()) {
            let head = self.table.heads.get(self.table.bucket(hash)).copied();
            if let Some(i) = head.and_then(|h| (h as usize).checked_sub(1)) {
                let e = self.entry(i);
                touched = touched.wrapping_add(u64::from(e.hash));
                *next = e.next;
            }
        }
        for next in nexts {
            second(next);
        }
        std::hint::black_box(touched.wrapping_add(seconds));
    }

    /// The load is over: resizes go step by step again.
    pub fn loaded(&mut self) {
        self.bulk = false;
    }

    /// Every entry, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Value)> + '_ {
        (0..self.len).map(move |i| self.record(self.entry(i).loc))
    }

    /// An order-independent summary of every entry, for a digest: the XOR of a 128-bit hash of
    /// each entry as it is, whatever its record's layout (quantity, state and events, a held
    /// entry's deadline, id; ids are unique, so nothing cancels out). The hash is fixed (no
    /// random key), so every server computes the same summary for the same entries; Redis's
    /// own SHA-1 per entry would cost four blocks each.
    /// `buyer` names an entry's buyer (by the value's index), so the summary does not depend
    /// on the order buyers were recorded in.
    pub fn summary<'b>(&self, buyer: impl Fn(u32) -> &'b [u8]) -> [u8; 16] {
        let (mut a, mut b) = (0u64, 0u64);
        let mut canonical = Vec::new();
        for (id, value) in self.iter() {
            canonical.clear();
            canonical.extend_from_slice(&value.quantity.to_le_bytes());
            canonical.push(value.flags());
            if value.state.keeps_deadline() {
                canonical.extend_from_slice(&value.deadline.to_le_bytes());
            }
            if value.buyer != 0 {
                let name = buyer(value.buyer);
                canonical.extend_from_slice(&(name.len() as u64).to_le_bytes());
                canonical.extend_from_slice(name);
            }
            canonical.extend_from_slice(id);
            let (x, y) = hash128(&canonical);
            a ^= x;
            b ^= y;
        }
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&a.to_le_bytes());
        out[8..].copy_from_slice(&b.to_le_bytes());
        out
    }

    /// Bytes of memory it uses (kept as it changes: O(1)).
    pub fn mem_usage(&self) -> usize {
        self.bytes
            + self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.blocks.capacity() * std::mem::size_of::<Box<[Entry]>>()
    }

    /// How many blocks freeing it frees (for Redis's lazy-free decision).
    pub fn blocks(&self) -> usize {
        self.chunks.len() + self.blocks.len() + 2
    }
}

impl Clone for Ledger {
    /// A copy laid out as the original (every chunk with its capacity), so it uses, and
    /// reports, the same memory, and appends without moving a record.
    fn clone(&self) -> Ledger {
        let mut chunks = Vec::with_capacity(self.chunks.capacity());
        for c in &self.chunks {
            let mut copy = Vec::with_capacity(c.capacity());
            copy.extend_from_slice(c);
            chunks.push(copy);
        }
        let mut blocks = Vec::with_capacity(self.blocks.capacity());
        blocks.extend(self.blocks.iter().cloned());
        Ledger {
            hasher: self.hasher.clone(),
            chunks,
            current: self.current,
            blocks,
            len: self.len,
            table: self.table.clone(),
            old: self.old.clone(),
            bytes: self.bytes,
            bulk: false,
        }
    }
}

/// How a blob's records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Stock encoding 3: quantity, id length, id (a quantity of 0 was a refund).
    V3,
    /// Stock encoding 4: quantity, id length, flags, a held or expired entry's deadline, id.
    V4,
    /// Stock encoding 5: as V4, with the buyer's index after the deadline when the flags say
    /// so.
    V5,
}

/// The first record of `bytes` (as `Ledger::save_blobs` writes them), checked: whole, canonical
/// varints, quantity from 0 to `i64::MAX`, known flags, a held or expired entry's deadline at
/// least 1, id
/// not empty. Returns the id, the value and what follows.
fn split_record(bytes: &[u8], format: Format) -> Result<(&[u8], Value, &[u8]), &'static str> {
    let (qty, tail) = take_varint(bytes)?;
    let (len, mut tail) = take_varint(tail)?;
    let qty = i64::try_from(qty).map_err(|_| "a quantity is out of range")?;
    let value = match format {
        Format::V3 => Value::legacy(qty),
        Format::V4 | Format::V5 => {
            let (&flags, rest) = tail.split_first().ok_or("a record is cut short")?;
            tail = rest;
            let known = STATE_BITS | EVENTS_BIT | if format == Format::V5 { BUYER_BIT } else { 0 };
            if flags & !known != 0 {
                return Err("a record has unknown flags");
            }
            let state =
                State::from_code(flags & STATE_BITS).ok_or("a record has an unknown state")?;
            let mut deadline = 0;
            if state.keeps_deadline() {
                let (d, rest) = take_varint(tail)?;
                if d == 0 || d > MAX_DEADLINE {
                    return Err("a deadline is out of range");
                }
                deadline = d;
                tail = rest;
            }
            let mut buyer = 0;
            if flags & BUYER_BIT != 0 {
                let (index, rest) = take_varint(tail)?;
                // Checked against the buyer table when the stock's load ends.
                buyer = u32::try_from(index)
                    .ok()
                    .and_then(|i| i.checked_add(1))
                    .ok_or("a buyer index is out of range")?;
                tail = rest;
            }
            Value {
                quantity: qty,
                state,
                deadline,
                events: flags & EVENTS_BIT != 0,
                buyer,
            }
        }
    };
    let len = usize::try_from(len).map_err(|_| "a record is cut short")?;
    let (id, tail) = tail.split_at_checked(len).ok_or("a record is cut short")?;
    if id.is_empty() {
        return Err("an id is empty");
    }
    Ok((id, value, tail))
}

/// The longest LEB128 encoding of a u64.
const MAX_VARINT: usize = 10;

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, low first).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint: at most 10 bytes, no bits past 64, and canonical (no
/// trailing zero byte), so every value has exactly one encoding.
#[inline]
fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), &'static str> {
    // One byte: most quantities and ids.
    if let Some((&b, rest)) = bytes.split_first() {
        if b < 0x80 {
            return Ok((u64::from(b), rest));
        }
    }
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(MAX_VARINT) {
        let bits = u64::from(b & 0x7f);
        if i == MAX_VARINT - 1 && bits > 1 {
            return Err("a varint is out of range");
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err("a varint is not canonical");
            }
            return Ok((v, bytes.get(i + 1..).unwrap_or_default()));
        }
    }
    Err("a record is cut short")
}

/// A fixed 128-bit hash (two 64-bit lanes of multiply-xorshift over 8-byte words, with a
/// final avalanche), for `summary`.
fn hash128(bytes: &[u8]) -> (u64, u64) {
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    fn mix(mut h: u64) -> u64 {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    let (mut a, mut b) = (
        K1 ^ bytes.len() as u64,
        K2.rotate_left(17) ^ bytes.len() as u64,
    );
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        a = (a ^ w).wrapping_mul(K1).rotate_left(31);
        b = (b ^ w.rotate_left(29)).wrapping_mul(K2).rotate_left(27);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    let w = u64::from_le_bytes(tail);
    a = (a ^ w).wrapping_mul(K1);
    b = (b ^ w.rotate_left(29)).wrapping_mul(K2);
    (mix(a ^ b.rotate_left(7)), mix(b ^ a.rotate_left(13)))
}

impl PartialEq for Ledger {
    /// The same ids with the same values, whatever the order.
    fn eq(&self, other: &Ledger) -> bool {
        self.len == other.len && self.iter().all(|(id, v)| other.value(id) == Some(v))
    }
}

impl Eq for Ledger {}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(id, v)| (String::from_utf8_lossy(id), v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_buyer(_: u32) -> &'static [u8] {
        b""
    }

    #[test]
    fn a_small_ledger_costs_little_and_grows_in_place() {
        let mut l = Ledger::new();
        assert_eq!(l.insert(b"only", 1), Insert::Added);
        assert!(l.mem_usage() < 1024, "{}", l.mem_usage());
        // Through every doubling of the first block and chunk, and past them.
        for i in 1..10_000u32 {
            assert_eq!(
                l.insert(format!("id-{i}").as_bytes(), i64::from(i)),
                Insert::Added
            );
        }
        for i in 1..10_000u32 {
            assert_eq!(l.get(format!("id-{i}").as_bytes()), Some(i64::from(i)));
        }
        let ids: Vec<Vec<u8>> = l.iter().map(|(id, _)| id.to_vec()).collect();
        assert_eq!(ids.len(), 10_000);
        assert_eq!(ids.first().map(Vec::as_slice), Some(&b"only"[..]));
        // Taken back to nothing, one by one (chunks and the table keep their room).
        let full = l.mem_usage();
        for id in ids.iter().rev() {
            assert!(l.remove_last(id));
        }
        assert!(l.is_empty());
        assert!(l.mem_usage() < full, "{} {full}", l.mem_usage());
        assert_eq!(l.insert(b"again", 1), Insert::Added);
        assert_eq!(l.get(b"again"), Some(1));
    }

    #[test]
    fn a_buyer_is_kept_in_memory_and_in_v5_blobs() {
        let mut l = Ledger::new();
        let with = |buyer, state, deadline| Value {
            quantity: 2,
            state,
            deadline,
            events: false,
            buyer,
        };
        assert_eq!(
            l.insert_value(b"a", with(1, State::Deducted, 0)),
            Insert::Added
        );
        assert_eq!(
            l.insert_value(b"h", with(3, State::Held, 99)),
            Insert::Added
        );
        assert_eq!(l.insert_value(b"n", Value::plain(1)), Insert::Added);
        assert_eq!(l.value(b"a"), Some(with(1, State::Deducted, 0)));
        assert_eq!(l.value(b"h"), Some(with(3, State::Held, 99)));
        assert_eq!(l.value(b"n").map(|v| v.buyer), Some(0));
        // The state changes, the buyer never does.
        assert!(l.set_value(b"h", with(3, State::Expired, 99)));
        assert!(!l.set_value(b"h", with(2, State::Expired, 99)));
        assert!(!l.set_value(
            b"a",
            Value {
                buyer: 0,
                ..with(1, State::Refunded, 0)
            }
        ));
        assert!(!l.set_value(
            b"n",
            Value {
                buyer: 1,
                ..Value::plain(1)
            }
        ));
        let mut blobs = Vec::new();
        l.save_blobs(|b| blobs.push(b.to_vec()));
        let mut back = Ledger::new();
        for b in &blobs {
            back.insert_blob(b, Format::V5).unwrap();
        }
        assert_eq!(back, l);
        // A V4 blob never names a buyer.
        assert!(Ledger::new().insert_blob(&blobs[0], Format::V4).is_err());
        // The summary sees the buyer's name, not its index.
        let names = |i: u32| -> &'static [u8] {
            if i == 1 {
                b"x"
            } else {
                b"y"
            }
        };
        let swapped = |i: u32| -> &'static [u8] {
            if i == 1 {
                b"y"
            } else {
                b"x"
            }
        };
        assert_ne!(l.summary(names), l.summary(swapped));
        assert_ne!(l.summary(names), l.summary(no_buyer));
    }
    use std::collections::HashMap;

    #[test]
    fn insert_get_set_in_order() {
        let mut l = Ledger::new();
        assert_eq!(l.mem_usage(), 0);
        assert_eq!(l.get(b"a"), None);
        assert_eq!(l.insert(b"a", 3), Insert::Added);
        assert_eq!(l.insert(b"b", 4), Insert::Added);
        assert_eq!(l.insert(b"a", 9), Insert::Exists);
        assert_eq!(l.get(b"a"), Some(3));
        assert!(l.set(b"a", 0));
        assert!(!l.set(b"zz", 1));
        assert_eq!(l.get(b"a"), Some(0));
        let all: Vec<_> = l.iter().map(|(i, q)| (i.to_vec(), q)).collect();
        assert_eq!(
            all,
            vec![
                (b"a".to_vec(), Value::plain(0)),
                (b"b".to_vec(), Value::plain(4))
            ]
        );
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn grows_step_by_step_and_keeps_every_entry() {
        let mut l = Ledger::new();
        for i in 0..200_000u32 {
            assert_eq!(
                l.insert(format!("order-{i}").as_bytes(), i64::from(i)),
                Insert::Added
            );
            // A resize never lingers into the next one.
            if l.len() == l.table.heads.len() {
                assert!(l.old.is_none(), "a resize still under way at {}", l.len());
            }
        }
        for i in (0..200_000u32).step_by(7) {
            assert_eq!(l.get(format!("order-{i}").as_bytes()), Some(i64::from(i)));
        }
        assert_eq!(l.get(b"order-200000"), None);
        let order: Vec<i64> = l.iter().map(|(_, v)| v.quantity).take(5).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn memory_is_counted_as_it_grows_and_shrinks() {
        let mut l = Ledger::new();
        for i in 0..10_000u32 {
            l.insert(format!("{i:036}").as_bytes(), 1);
        }
        let used = l.mem_usage();
        // 10,000 records of 48 bytes, 10,000 entries of 16, about 16,384 buckets of 4.
        let payload = 10_000 * (48 + 16);
        assert!(used >= payload && used < payload * 2, "{used}");
        let big = vec![b'x'; 100_000];
        assert_eq!(l.insert(&big, 1), Insert::Added);
        assert!(l.mem_usage() >= used + 100_000);
        assert!(l.remove_last(&big));
        // Back to where it was, but for the list of chunks, which keeps its capacity.
        assert!(
            l.mem_usage() >= used && l.mem_usage() <= used + 1024,
            "{}",
            l.mem_usage()
        );
        assert_eq!(l.get(&big), None);
    }

    #[test]
    fn the_latest_insert_can_be_taken_back() {
        let mut l = Ledger::new();
        assert!(!l.remove_last(b"a"));
        l.insert(b"a", 1);
        l.insert(b"b", 2);
        assert!(!l.remove_last(b"a"), "only the latest");
        assert!(l.remove_last(b"b"));
        assert_eq!(l.get(b"b"), None);
        assert_eq!(l.get(b"a"), Some(1));
        assert_eq!(l.insert(b"b", 5), Insert::Added);
        assert_eq!(l.get(b"b"), Some(5));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn equality_ignores_order_and_clones_are_equal() {
        let mut a = Ledger::new();
        let mut b = Ledger::new();
        a.insert(b"x", 1);
        a.insert(b"y", 2);
        b.insert(b"y", 2);
        b.insert(b"x", 1);
        assert_eq!(a, b);
        let c = a.clone();
        assert_eq!(c, a);
        b.set(b"x", 0);
        assert_ne!(a, b);
    }

    #[test]
    fn the_summary_ignores_order_and_sees_every_change() {
        let mut a = Ledger::new();
        let mut b = Ledger::new();
        for i in 0..100u32 {
            a.insert(format!("o{i}").as_bytes(), i64::from(i));
        }
        for i in (0..100u32).rev() {
            b.insert(format!("o{i}").as_bytes(), i64::from(i));
        }
        assert_eq!(a.summary(no_buyer), b.summary(no_buyer));
        b.set(b"o7", 0);
        assert_ne!(a.summary(no_buyer), b.summary(no_buyer));
        assert_ne!(Ledger::new().summary(no_buyer), a.summary(no_buyer));
        // Fixed: the same on every server and every run.
        let mut c = Ledger::new();
        c.insert(b"order-1", 2);
        assert_eq!(c.summary(no_buyer), {
            let mut d = Ledger::new();
            d.insert(b"order-1", 2);
            d.summary(no_buyer)
        });
        assert_ne!(hash128(b"ab"), hash128(b"ba"));
        assert_ne!(hash128(b""), hash128(&[0]));
    }

    #[test]
    fn a_load_grows_at_once_then_step_by_step() {
        let mut l = Ledger::new();
        l.reserve(10);
        for i in 0..5000u32 {
            l.insert(format!("{i}").as_bytes(), 1);
            assert!(l.old.is_none(), "a load moves every entry at each resize");
        }
        l.loaded();
        let mut stepped = false;
        for i in 5000..20000u32 {
            l.insert(format!("{i}").as_bytes(), 1);
            stepped |= l.old.is_some();
        }
        assert!(stepped, "after the load, resizes go step by step");
        assert_eq!(l.get(b"123"), Some(1));
    }

    /// Every blob `save_blobs` writes.
    fn saved(l: &Ledger) -> Vec<Vec<u8>> {
        let mut blobs = Vec::new();
        l.save_blobs(|b| blobs.push(b.to_vec()));
        blobs
    }

    /// One record as a blob holds it.
    fn record_bytes(out: &mut Vec<u8>, id: &[u8], qty: u64) {
        put_varint(out, qty);
        put_varint(out, id.len() as u64);
        out.extend_from_slice(id);
    }

    #[test]
    fn blobs_round_trip() {
        let mut l = Ledger::new();
        for i in 0..20_000u32 {
            l.insert(format!("order-{i}").as_bytes(), i64::from(i % 7));
        }
        let big = vec![b'x'; 200_000];
        l.insert(&big, 3);
        l.insert(b"after-big", i64::MAX);
        l.insert(b"zero", 0);
        let blobs = saved(&l);
        assert!(blobs.len() > 2, "{} blobs", blobs.len());
        for b in &blobs[..blobs.len() - 1] {
            assert!(b.len() >= BLOB_TARGET, "only the last blob is short");
        }
        let mut back = Ledger::new();
        back.reserve(l.len());
        let mut n = 0;
        for blob in &blobs {
            n += back.insert_blob(blob, Format::V4).unwrap();
        }
        back.loaded();
        assert_eq!(n, l.len());
        assert_eq!(back, l);
        assert_eq!(back.get(b"after-big"), Some(i64::MAX));
        // The same entries save the same blobs.
        assert_eq!(saved(&back), blobs);
        assert!(saved(&Ledger::new()).is_empty());
    }

    #[test]
    fn bad_blobs_are_refused() {
        let mut one = Vec::new();
        record_bytes(&mut one, b"ab", 5);
        assert_eq!(one, [5, 2, b'a', b'b']);
        assert_eq!(Ledger::new().insert_blob(&one, Format::V3), Ok(1));
        for cut in 1..one.len() {
            assert!(
                Ledger::new().insert_blob(&one[..cut], Format::V3).is_err(),
                "cut at {cut}"
            );
        }
        let twice = [one.clone(), one.clone()].concat();
        assert_eq!(
            Ledger::new().insert_blob(&twice, Format::V3),
            Err("an id appears twice")
        );
        let mut l = Ledger::new();
        l.insert(b"ab", 1);
        assert_eq!(l.insert_blob(&one, Format::V3), Err("an id appears twice"));
        let mut negative = Vec::new();
        record_bytes(&mut negative, b"ab", 1 << 63);
        assert_eq!(
            Ledger::new().insert_blob(&negative, Format::V3),
            Err("a quantity is out of range")
        );
        let mut empty = Vec::new();
        record_bytes(&mut empty, b"", 5);
        assert_eq!(
            Ledger::new().insert_blob(&empty, Format::V3),
            Err("an id is empty")
        );
        // A length past the blob, and past any memory.
        let mut long = vec![5];
        put_varint(&mut long, u64::MAX);
        long.extend_from_slice(b"ab");
        assert_eq!(
            Ledger::new().insert_blob(&long, Format::V3),
            Err("a record is cut short")
        );
        // Varints: not canonical, too long, past 64 bits.
        assert_eq!(
            Ledger::new().insert_blob(&[0x85, 0x00, 2, b'a', b'b'], Format::V3),
            Err("a varint is not canonical")
        );
        assert_eq!(
            Ledger::new().insert_blob(&[0xff; 11], Format::V3),
            Err("a varint is out of range")
        );
        let mut wide = vec![0xff; 9];
        wide.push(0x02);
        assert_eq!(
            Ledger::new().insert_blob(&wide, Format::V3),
            Err("a varint is out of range")
        );
        assert_eq!(Ledger::new().insert_blob(&[], Format::V3), Ok(0));
        // V4: a held record's deadline from 1 to MAX_DEADLINE.
        let held = |deadline: u64| {
            let mut b = Vec::new();
            put_varint(&mut b, 2);
            put_varint(&mut b, 2);
            b.push(State::Held.code());
            put_varint(&mut b, deadline);
            b.extend_from_slice(b"ab");
            b
        };
        assert_eq!(
            Ledger::new().insert_blob(&held(MAX_DEADLINE), Format::V4),
            Ok(1)
        );
        for bad in [0, MAX_DEADLINE + 1, u64::MAX >> 1] {
            assert_eq!(
                Ledger::new().insert_blob(&held(bad), Format::V4),
                Err("a deadline is out of range"),
                "{bad}"
            );
        }
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            i64::MAX as u64,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b.push(0xaa);
            assert_eq!(take_varint(&b), Ok((v, &[0xaa][..])), "{v}");
        }
    }

    #[test]
    fn reserve_bounds_a_forged_count() {
        let mut l = Ledger::new();
        l.reserve(usize::MAX);
        assert!(l.table.heads.len() <= 1 << 20);
        l.insert(b"a", 1);
        l.reserve(3);
        assert_eq!(l.get(b"a"), Some(1));
    }

    proptest::proptest! {
        /// Against a HashMap: inserts, updates, undo of the latest insert and clones, across
        /// resizes (small ids so chains and resizes are exercised).
        #[test]
        fn matches_a_map(ops in proptest::collection::vec((0u8..4, 0u16..600, 0i64..5), 1..2000)) {
            let mut l = Ledger::new();
            let mut m: HashMap<Vec<u8>, i64> = HashMap::new();
            let mut order: Vec<Vec<u8>> = Vec::new();
            for (op, k, q) in ops {
                let id = format!("id{k}").into_bytes();
                match op {
                    0 | 1 => {
                        let got = l.insert(&id, q);
                        if m.contains_key(&id) {
                            proptest::prop_assert_eq!(got, Insert::Exists);
                        } else {
                            proptest::prop_assert_eq!(got, Insert::Added);
                            m.insert(id.clone(), q);
                            order.push(id.clone());
                        }
                    }
                    2 => {
                        proptest::prop_assert_eq!(l.set(&id, q), m.contains_key(&id));
                        if let Some(v) = m.get_mut(&id) { *v = q; }
                    }
                    _ => {
                        let want = order.last() == Some(&id);
                        proptest::prop_assert_eq!(l.remove_last(&id), want);
                        if want { m.remove(&id); order.pop(); }
                    }
                }
            }
            proptest::prop_assert_eq!(l.len(), m.len());
            for (id, q) in &m {
                proptest::prop_assert_eq!(l.get(id), Some(*q));
            }
            let ids: Vec<Vec<u8>> = l.iter().map(|(i, _)| i.to_vec()).collect();
            proptest::prop_assert_eq!(ids, order);
            let mut c = l.clone();
            proptest::prop_assert_eq!(&c, &l);
            proptest::prop_assert_eq!(c.mem_usage(), l.mem_usage());
            // A copy grows on its own.
            proptest::prop_assert_eq!(c.insert(b"after-copy", 1), Insert::Added);
            proptest::prop_assert_eq!(l.get(b"after-copy"), None);
        }
    }
}
