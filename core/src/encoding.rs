//! What a loaded lock or stock may hold: RDB files, full syncs, `RESTORE` and `MIGRATE`
//! payloads are read here, value by value, and refused whole when a read fails or a value
//! breaks an invariant that every value this module writes keeps. Plain Rust over a `Source`,
//! so every rule is unit-tested without Redis.
//!
//! Settings (`fence.max-id-length`, `fence.max-ledger-entries`, ...) never apply here: a
//! server whose operator lowered a limit must still load what it wrote before.

use std::fmt;

use crate::args::MaxLen;
use crate::ledger::Format;
use crate::stock::{ExpireStream, Stock};

/// The encoding version of `fence-lck`: 1 (token, owner).
pub const LOCK_ENCODING: i32 = 1;
/// The encoding version of `fence-stk`; its loader reads every version up to it:
/// 1: available, fence, deducted, the ledger (a count, then id and quantity per entry);
/// 2: the same, then the restock ledger (`STOCK.ADD … ID`);
/// 3: available, fence, deducted, then each ledger as its entry count and blobs of whole
///    records (quantity and id length as LEB128 varints, then the id) until the records add up
///    to the count, so a million entries load as a few hundred strings, not two million values;
/// 4: available, fence, deducted, the expire stream (its key, empty for none; its `MAXLEN`
///    mode, 0 none, 1 `=`, 2 `~`, and then its length), then both ledgers as in 3 with records
///    of `ledger::Format::V4` (each entry's state, and a held or expired entry's deadline);
/// 5: as 4, with the limit per buyer (0: none) after the expire stream, then the buyer table
///    (its count, then blobs of records: the units each buyer holds and its id) before the
///    ledgers, and ledger records of `ledger::Format::V5` (an entry's buyer, by its place in the
///    table). Each buyer's units must be those of its entries: checked when the load ends.
pub const STOCK_ENCODING: i32 = 5;

/// The values a type's loader reads, in order; `None` when the stream failed (short read,
/// wrong opcode).
pub trait Source {
    fn unsigned(&mut self) -> Option<u64>;
    fn signed(&mut self) -> Option<i64>;
    /// Reads a string and hands it to `f` (no copy is kept).
    fn with_bytes<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R>;
    /// Reads a string into an owned box.
    fn bytes(&mut self) -> Option<Box<[u8]>> {
        self.with_bytes(|b| b.into())
    }
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// An encoding version this build does not know.
    Version(i32),
    /// The stream ended early or held something else than the value expected.
    Read(&'static str),
    /// A field outside its range.
    Range {
        field: &'static str,
        value: i128,
    },
    EmptyOwner,
    EmptyRequestId,
    DuplicateRequestId,
    /// A blob of ledger records (encoding 3) that is not one.
    Blob {
        what: &'static str,
        why: &'static str,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Version(v) => write!(f, "unknown encoding version {v}"),
            LoadError::Read(what) => write!(f, "cannot read the {what}"),
            LoadError::Range { field, value } => write!(f, "{field} {value} is out of range"),
            LoadError::EmptyOwner => f.write_str("the owner is empty"),
            LoadError::EmptyRequestId => f.write_str("a request id is empty"),
            LoadError::DuplicateRequestId => f.write_str("a request id appears twice"),
            LoadError::Blob { what, why } => write!(f, "{what}: {why}"),
        }
    }
}

fn version(encver: i32, newest: i32) -> Result<(), LoadError> {
    if (1..=newest).contains(&encver) {
        Ok(())
    } else {
        Err(LoadError::Version(encver))
    }
}

/// A token or fence: 0 (a stock's "none yet") to `i64::MAX`, so it is always a Redis integer.
fn token(field: &'static str, value: u64, min: u64) -> Result<u64, LoadError> {
    if value < min || i64::try_from(value).is_err() {
        return Err(LoadError::Range {
            field,
            value: i128::from(value),
        });
    }
    Ok(value)
}

/// A quantity: 0 to `i64::MAX`.
fn quantity(field: &'static str, value: i64) -> Result<i64, LoadError> {
    if value < 0 {
        return Err(LoadError::Range {
            field,
            value: i128::from(value),
        });
    }
    Ok(value)
}

/// A lock as stored: the token of its grant and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedLock {
    pub token: u64,
    pub owner: Box<[u8]>,
}

/// Reads a lock (`fence-lck`): token (1..=i64::MAX), owner (not empty, at most 4 GiB).
pub fn load_lock(src: &mut impl Source, encver: i32) -> Result<LoadedLock, LoadError> {
    version(encver, LOCK_ENCODING)?;
    let raw = src.unsigned().ok_or(LoadError::Read("token"))?;
    let token = token("token", raw, 1)?;
    let owner = src.bytes().ok_or(LoadError::Read("owner"))?;
    if owner.is_empty() {
        return Err(LoadError::EmptyOwner);
    }
    if u32::try_from(owner.len()).is_err() {
        return Err(LoadError::Range {
            field: "owner length",
            value: owner.len() as i128,
        });
    }
    Ok(LoadedLock { token, owner })
}

/// Reads a stock (`fence-stk`): available, fence, deducted, the number of ledger entries, then
/// each entry's request id and quantity; from version 2 the same for the restock ledger.
/// Quantities are 0..=i64::MAX, the fence 0..=i64::MAX, ids not empty and unique.
pub fn load_stock(src: &mut impl Source, encver: i32) -> Result<Stock, LoadError> {
    version(encver, STOCK_ENCODING)?;
    let available = quantity(
        "available",
        src.signed().ok_or(LoadError::Read("available"))?,
    )?;
    let fence = token("fence", src.unsigned().ok_or(LoadError::Read("fence"))?, 0)?;
    let deducted = quantity("deducted", src.signed().ok_or(LoadError::Read("deducted"))?)?;
    let mut stock = Stock::new(available);
    stock.fence = fence;
    stock.deducted = deducted;
    if encver >= 4 {
        stock.expire_stream = load_expire_stream(src)?;
    }
    if encver >= 5 {
        let raw = src.unsigned().ok_or(LoadError::Read("limit"))?;
        stock.limit = i64::try_from(raw).map_err(|_| LoadError::Range {
            field: "limit",
            value: i128::from(raw),
        })?;
        load_blobs(src, &mut stock, Which::Buyers, Format::V4)?;
    }
    if encver >= 3 {
        let (ledger, restocks) = match encver {
            3 => (Format::V3, Format::V3),
            4 => (Format::V4, Format::V4),
            _ => (Format::V5, Format::V4),
        };
        load_blobs(src, &mut stock, Which::Ledger, ledger)?;
        load_blobs(src, &mut stock, Which::Restocks, restocks)?;
        return loaded(stock);
    }
    let entries = src.unsigned().ok_or(LoadError::Read("ledger size"))?;
    stock.reserve(usize::try_from(entries).unwrap_or(usize::MAX), 0);
    load_entries(src, entries, &mut stock, Which::Ledger)?;
    if encver >= 2 {
        let restocks = src
            .unsigned()
            .ok_or(LoadError::Read("restock ledger size"))?;
        stock.reserve(0, usize::try_from(restocks).unwrap_or(usize::MAX));
        load_entries(src, restocks, &mut stock, Which::Restocks)?;
    }
    loaded(stock)
}

/// Ends a stock's load (its indexes built, its buyers checked against the ledger).
fn loaded(mut stock: Stock) -> Result<Stock, LoadError> {
    stock.loaded().map_err(|why| LoadError::Blob {
        what: "buyers",
        why,
    })?;
    Ok(stock)
}

/// The `MAXLEN` modes of a saved expire stream.
const MAXLEN_NONE: u64 = 0;
const MAXLEN_EXACT: u64 = 1;
const MAXLEN_APPROX: u64 = 2;

/// A stock's expire stream as encoding 4 saves it: the key (empty for none), the `MAXLEN` mode
/// and, with a mode, the length.
pub fn expire_stream_saved(stream: Option<&ExpireStream>) -> (&[u8], u64, Option<i64>) {
    match stream {
        None => (b"", MAXLEN_NONE, None),
        Some(s) => match s.maxlen {
            None => (&s.key, MAXLEN_NONE, None),
            Some(m) => (
                &s.key,
                if m.approx {
                    MAXLEN_APPROX
                } else {
                    MAXLEN_EXACT
                },
                Some(m.len),
            ),
        },
    }
}

/// Reads a stock's expire stream (encoding 4).
fn load_expire_stream(src: &mut impl Source) -> Result<Option<ExpireStream>, LoadError> {
    let key = src.bytes().ok_or(LoadError::Read("expire stream"))?;
    let mode = src
        .unsigned()
        .ok_or(LoadError::Read("expire stream maxlen"))?;
    let maxlen = match mode {
        MAXLEN_NONE => None,
        MAXLEN_EXACT | MAXLEN_APPROX => {
            let len = src
                .signed()
                .ok_or(LoadError::Read("expire stream maxlen"))?;
            Some(MaxLen {
                approx: mode == MAXLEN_APPROX,
                len: quantity("expire stream maxlen", len)?,
            })
        }
        other => {
            return Err(LoadError::Range {
                field: "expire stream maxlen mode",
                value: i128::from(other),
            })
        }
    };
    if key.is_empty() {
        if maxlen.is_some() {
            return Err(LoadError::Range {
                field: "expire stream maxlen mode",
                value: i128::from(mode),
            });
        }
        return Ok(None);
    }
    Ok(Some(ExpireStream {
        key: key.into_vec(),
        maxlen,
    }))
}

/// Reads one ledger of encoding 3 or 4: its entry count, then blobs until their records add up
/// to it (a blob with no record, or records past the count, are refused).
fn load_blobs(
    src: &mut impl Source,
    stock: &mut Stock,
    which: Which,
    format: Format,
) -> Result<(), LoadError> {
    let what = match which {
        Which::Ledger => "ledger",
        Which::Restocks => "restock ledger",
        Which::Buyers => "buyer table",
    };
    let entries = src.unsigned().ok_or(LoadError::Read("ledger size"))?;
    let n = usize::try_from(entries).unwrap_or(usize::MAX);
    match which {
        Which::Ledger => stock.reserve(n, 0),
        Which::Restocks => stock.reserve(0, n),
        Which::Buyers => stock.reserve_buyers(n),
    }
    let mut loaded: u64 = 0;
    while loaded < entries {
        let added = src
            .with_bytes(|blob| match which {
                Which::Ledger => stock.insert_entry_blob(blob, format),
                Which::Restocks => stock.insert_restock_blob(blob, format),
                Which::Buyers => stock.insert_buyer_blob(blob),
            })
            .ok_or(LoadError::Read("ledger blob"))?
            .map_err(|why| LoadError::Blob { what, why })?;
        if added == 0 {
            return Err(LoadError::Blob {
                what,
                why: "a blob holds no record",
            });
        }
        loaded = loaded.saturating_add(added as u64);
    }
    if loaded != entries {
        return Err(LoadError::Range {
            field: "ledger size",
            value: i128::from(entries),
        });
    }
    Ok(())
}

/// Which of a stock's ledgers entries are loaded into.
#[derive(Clone, Copy)]
enum Which {
    Ledger,
    Restocks,
    Buyers,
}

/// Reads `count` (id, quantity) entries into one of `stock`'s ledgers. The id goes into the
/// ledger straight from the stream's buffer (with quantity 0 until its quantity is read and
/// checked): a refused entry fails the whole value, which is then dropped. The count is not
/// trusted for an allocation: each entry is read before it is stored, so a huge count in a
/// short payload ends in a read error.
fn load_entries(
    src: &mut impl Source,
    count: u64,
    stock: &mut Stock,
    which: Which,
) -> Result<(), LoadError> {
    let (id_what, qty_what) = match which {
        Which::Ledger | Which::Buyers => ("request id", "ledger quantity"),
        Which::Restocks => ("restock id", "restock quantity"),
    };
    for _ in 0..count {
        let added = src
            .with_bytes(|id| {
                if id.is_empty() {
                    return Err(LoadError::EmptyRequestId);
                }
                let new = match which {
                    Which::Ledger | Which::Buyers => stock.insert_entry(id, 0),
                    Which::Restocks => stock.insert_restock(id, 0),
                };
                if new {
                    Ok(())
                } else {
                    Err(LoadError::DuplicateRequestId)
                }
            })
            .ok_or(LoadError::Read(id_what))?;
        added?;
        let held = quantity(qty_what, src.signed().ok_or(LoadError::Read(qty_what))?)?;
        match which {
            Which::Ledger | Which::Buyers => {
                stock.set_last_entry(crate::ledger::Value::legacy(held))
            }
            Which::Restocks => stock.set_last_restock(held),
        }
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A stream of values, as an RDB would hand them over; `None` where a read fails.
    #[derive(Default)]
    pub struct Values(pub std::collections::VecDeque<Value>);

    #[derive(Debug, Clone)]
    pub enum Value {
        U(u64),
        S(i64),
        B(&'static [u8]),
    }

    impl Source for Values {
        fn unsigned(&mut self) -> Option<u64> {
            match self.0.pop_front()? {
                Value::U(v) => Some(v),
                _ => None,
            }
        }
        fn signed(&mut self) -> Option<i64> {
            match self.0.pop_front()? {
                Value::S(v) => Some(v),
                _ => None,
            }
        }
        fn with_bytes<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
            match self.0.pop_front()? {
                Value::B(v) => Some(f(v)),
                _ => None,
            }
        }
    }

    fn values(v: &[Value]) -> Values {
        Values(v.iter().cloned().collect())
    }

    use Value::*;

    #[test]
    fn a_lock_loads_with_a_positive_token_and_an_owner() {
        assert_eq!(
            load_lock(&mut values(&[U(7), B(b"w")]), 1),
            Ok(LoadedLock {
                token: 7,
                owner: (*b"w").into()
            })
        );
        let max = i64::MAX as u64;
        assert!(load_lock(&mut values(&[U(max), B(b"w")]), 1).is_ok());
    }

    #[test]
    fn a_lock_breaking_an_invariant_is_refused() {
        let refused = [
            (vec![U(0), B(b"w")], "token 0"),
            (vec![U(1 << 63), B(b"w")], "token 2^63"),
            (vec![U(u64::MAX), B(b"w")], "token 2^64-1"),
            (vec![U(5), B(b"")], "empty owner"),
            (vec![U(5)], "no owner"),
            (vec![], "nothing"),
            (vec![S(5), B(b"w")], "a signed token"),
            (vec![U(5), U(5)], "a number for the owner"),
        ];
        for (v, what) in refused {
            assert!(load_lock(&mut values(&v), 1).is_err(), "{what}");
        }
        assert_eq!(
            load_lock(&mut values(&[U(1), B(b"w")]), 2),
            Err(LoadError::Version(2))
        );
        assert_eq!(
            load_stock(&mut values(&[S(1), U(0), S(0), U(0), U(0)]), 6),
            Err(LoadError::Version(6))
        );
        assert_eq!(
            load_lock(&mut values(&[U(1), B(b"w")]), 0),
            Err(LoadError::Version(0))
        );
    }

    #[test]
    fn a_stock_loads_with_its_ledger() {
        let s = load_stock(
            &mut values(&[S(5), U(9), S(3), U(2), B(b"a"), S(2), B(b"b"), S(0)]),
            1,
        )
        .unwrap();
        assert_eq!((s.available, s.fence, s.deducted), (5, 9, 3));
        assert_eq!(s.request(b"a"), Some(2));
        assert_eq!(s.request(b"b"), Some(0));
        assert_eq!(s.ledger_len(), 2);
        let s = load_stock(&mut values(&[S(i64::MAX), U(0), S(0), U(0)]), 1).unwrap();
        assert_eq!(s.available, i64::MAX);
    }

    #[test]
    fn version_2_adds_the_restock_ledger() {
        let s = load_stock(
            &mut values(&[
                S(5),
                U(0),
                S(0),
                U(1),
                B(b"a"),
                S(1),
                U(2),
                B(b"r1"),
                S(10),
                B(b"a"),
                S(3),
            ]),
            2,
        )
        .unwrap();
        assert_eq!(s.request(b"a"), Some(1));
        assert_eq!(s.restock_of(b"r1"), Some(10));
        assert_eq!(
            s.restock_of(b"a"),
            Some(3),
            "restock ids live apart from request ids"
        );
        assert_eq!(s.restocks_len(), 2);
        // Version 1 has no restock ledger: a trailing count is not read.
        let s = load_stock(&mut values(&[S(5), U(0), S(0), U(0)]), 1).unwrap();
        assert_eq!(s.restocks_len(), 0);
        for bad in [
            vec![S(5), U(0), S(0), U(0)],
            vec![S(5), U(0), S(0), U(0), U(1), B(b""), S(1)],
            vec![S(5), U(0), S(0), U(0), U(2), B(b"r"), S(1), B(b"r"), S(1)],
            vec![S(5), U(0), S(0), U(0), U(1), B(b"r"), S(-1)],
        ] {
            assert!(load_stock(&mut values(&bad), 2).is_err(), "{bad:?}");
        }
    }

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn leak(b: Vec<u8>) -> &'static [u8] {
        Box::leak(b.into_boxed_slice())
    }

    /// A stock as encoding 3 wrote it: each ledger's count, then one blob of (quantity, id
    /// length, id) records (0 for a refunded entry).
    fn v3_values(s: &Stock) -> Values {
        let mut v = vec![
            Value::S(s.available),
            Value::U(s.fence),
            Value::S(s.deducted),
            Value::U(s.ledger_len() as u64),
        ];
        let mut blob = Vec::new();
        for (id, value) in s.entries() {
            varint(&mut blob, value.units() as u64);
            varint(&mut blob, id.len() as u64);
            blob.extend_from_slice(id);
        }
        if !blob.is_empty() {
            v.push(Value::B(leak(blob)));
        }
        v.push(Value::U(s.restocks_len() as u64));
        let mut blob = Vec::new();
        for (id, q) in s.restock_entries() {
            varint(&mut blob, q as u64);
            varint(&mut blob, id.len() as u64);
            blob.extend_from_slice(id);
        }
        if !blob.is_empty() {
            v.push(Value::B(leak(blob)));
        }
        Values(v.into_iter().collect())
    }

    /// A stock as encoding 4 writes it, through the same calls a save makes.
    fn v4_values(s: &Stock) -> Values {
        let mut v = vec![
            Value::S(s.available),
            Value::U(s.fence),
            Value::S(s.deducted),
        ];
        let (key, mode, len) = expire_stream_saved(s.expire_stream.as_ref());
        v.push(Value::B(leak(key.to_vec())));
        v.push(Value::U(mode));
        v.extend(len.map(Value::S));
        v.push(Value::U(s.ledger_len() as u64));
        s.save_entry_blobs(|b| v.push(Value::B(leak(b.to_vec()))));
        v.push(Value::U(s.restocks_len() as u64));
        s.save_restock_blobs(|b| v.push(Value::B(leak(b.to_vec()))));
        Values(v.into_iter().collect())
    }

    /// What `StockType::save` writes (encoding 5).
    fn v5_values(s: &Stock) -> Values {
        let mut v = vec![
            Value::S(s.available),
            Value::U(s.fence),
            Value::S(s.deducted),
        ];
        let (key, mode, len) = expire_stream_saved(s.expire_stream.as_ref());
        v.push(Value::B(leak(key.to_vec())));
        v.push(Value::U(mode));
        v.extend(len.map(Value::S));
        v.push(Value::U(s.limit as u64));
        v.push(Value::U(s.buyers_len() as u64));
        s.save_buyer_blobs(|b| v.push(Value::B(leak(b.to_vec()))));
        v.push(Value::U(s.ledger_len() as u64));
        s.save_entry_blobs(|b| v.push(Value::B(leak(b.to_vec()))));
        v.push(Value::U(s.restocks_len() as u64));
        s.save_restock_blobs(|b| v.push(Value::B(leak(b.to_vec()))));
        Values(v.into_iter().collect())
    }

    #[test]
    fn version_5_keeps_the_limit_and_every_buyer() {
        use crate::ledger::{State, Value as V};
        use crate::stock::{Bounds, DeductRequest, Hold};
        let mut s = Stock::new(100_000);
        let bounds = Bounds {
            ledger: i64::MAX,
            id_length: 512,
            buyers: i64::MAX,
        };
        for i in 0..3000u32 {
            let id = format!("order-{i}");
            let buyer = format!("buyer-{}", i % 1100);
            let req = DeductRequest {
                quantity: 1,
                id: Some(id.as_bytes()),
                fence: None,
                hold: (i % 3 == 0).then_some(Hold {
                    deadline: 1_800_000_000_000,
                    events: false,
                }),
                buyer: (i % 7 != 0).then_some(buyer.as_bytes()),
            };
            s.deduct_admitting(req, bounds, || Ok(())).unwrap();
        }
        assert_eq!(s.refund(b"order-1"), Ok(1));
        assert_eq!(s.confirm(b"order-3"), Ok(crate::stock::Confirm::Confirmed));
        assert_eq!(s.expire_due(u64::MAX, 10).len(), 10);
        s.put_restock(b"r1", 4);
        s.limit = 3;
        let back = load_stock(&mut v5_values(&s), 5).unwrap();
        assert_eq!(
            (back.available, back.deducted, back.fence, back.limit),
            (s.available, s.deducted, s.fence, s.limit)
        );
        assert_eq!(back.expire_stream, s.expire_stream);
        assert_eq!(
            back.restock_entries().collect::<Vec<_>>(),
            s.restock_entries().collect::<Vec<_>>()
        );
        assert_eq!(back.limit, 3);
        assert_eq!(back.summaries(), s.summaries());
        for b in 0..1100 {
            let b = format!("buyer-{b}");
            let from_ledger: i64 = s
                .entries()
                .filter(|(_, v)| s.buyer_of(*v) == Some(b.as_bytes()))
                .map(|(_, v)| v.units())
                .sum();
            assert_eq!(
                (back.buyer_units(b.as_bytes(), 0), from_ledger),
                (s.buyer_units(b.as_bytes(), 0), from_ledger),
                "{b}"
            );
        }
        assert_eq!(back.buyers_len(), 1100);
        assert_eq!(back, s);
        // A buyer's saved units that do not match its entries: refused.
        let mut v = v5_values(&s);
        let at =
            v.0.iter()
                .position(|x| matches!(x, Value::B(b) if b.windows(7).any(|w| w == b"buyer-0")))
                .unwrap();
        if let Value::B(b) = v.0[at] {
            let mut forged = b.to_vec();
            forged[0] = forged[0].wrapping_add(1);
            v.0[at] = Value::B(leak(forged));
        }
        assert_eq!(
            load_stock(&mut v, 5),
            Err(LoadError::Blob {
                what: "buyers",
                why: "a buyer's units do not match the ledger"
            })
        );
        // An entry naming a buyer the table does not have: refused.
        let mut one = Stock::new(5);
        one.put_entry(b"o", V::plain(1), Some(b"u"));
        let mut v = v5_values(&one);
        // [.., limit, buyers count, buyer blob, ledger count, ledger blob, ..]: no buyers.
        let count = v.0.iter().position(|x| matches!(x, Value::U(1))).unwrap();
        v.0.remove(count + 1);
        v.0[count] = Value::U(0);
        let why = |why| LoadError::Blob {
            what: "buyers",
            why,
        };
        assert_eq!(
            load_stock(&mut v, 5),
            Err(why("an entry names a buyer that is not in the buyer table"))
        );
        // A buyer no entry names: refused.
        let mut v = v5_values(&one);
        v.0[count] = Value::U(2);
        v.0.insert(count + 2, Value::B(b"\x00\x01\x00z"));
        assert_eq!(
            load_stock(&mut v, 5),
            Err(why("a buyer is named by no entry"))
        );
        // A buyer record with a state, a limit past 2^63-1: refused.
        let mut v = v5_values(&one);
        v.0[count + 1] = Value::B(b"\x01\x01\x01u");
        assert!(load_stock(&mut v, 5).is_err());
        let mut v = v5_values(&one);
        v.0[count - 1] = Value::U(1 << 63);
        assert!(load_stock(&mut v, 5).is_err());
        // Encoding 4 never names a buyer.
        let held = V {
            quantity: 1,
            state: State::Held,
            deadline: 5,
            events: false,
            buyer: 0,
        };
        let mut plain = Stock::new(5);
        plain.put_entry(b"h", held, None);
        assert_eq!(load_stock(&mut v4_values(&plain), 4).unwrap(), plain);
        assert!(load_stock(&mut v4_values(&one), 4).is_err());
    }

    #[test]
    fn version_4_keeps_holds_states_and_the_expire_stream() {
        use crate::ledger::{State, Value as V};
        let mut s = Stock::new(10);
        s.fence = 5;
        s.deducted = 7;
        let states = [
            V::plain(2),
            V {
                quantity: 3,
                state: State::Held,
                deadline: 1_800_000_000_000,
                events: true,
                buyer: 0,
            },
            V {
                quantity: 1,
                state: State::Confirmed,
                deadline: 0,
                events: true,
                buyer: 0,
            },
            V {
                quantity: 4,
                state: State::Refunded,
                deadline: 0,
                events: false,
                buyer: 0,
            },
            V {
                quantity: 5,
                state: State::Expired,
                deadline: 1_700_000_000_000,
                events: false,
                buyer: 0,
            },
        ];
        for i in 0..3000u32 {
            let v = states[i as usize % states.len()];
            assert!(s.put_entry(format!("order-{i}").as_bytes(), v, None));
        }
        s.put_restock(b"r1", 4);
        s.expire_stream = Some(ExpireStream {
            key: b"events".to_vec(),
            maxlen: Some(MaxLen {
                approx: true,
                len: 100,
            }),
        });
        let back = load_stock(&mut v4_values(&s), 4).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.view(0).held, 600);
        assert_eq!(back.view(0).held_units, 1800);
        assert_eq!(back.view(0).next_deadline, Some(1_800_000_000_000));
        // Every hold is due after its deadline: back in the view.
        let later = back.view(1_800_000_000_000);
        assert_eq!((later.held, later.available), (0, 10 + 1800));
        // No expire stream.
        s.expire_stream = None;
        assert_eq!(load_stock(&mut v4_values(&s), 4).unwrap(), s);
        // A bad expire stream: a MAXLEN mode that does not exist, a MAXLEN without a key.
        let mut v = v4_values(&s);
        v.0[4] = Value::U(7);
        assert!(load_stock(&mut v, 4).is_err());
        let mut v = v4_values(&s);
        v.0[4] = Value::U(1);
        v.0.insert(5, Value::S(3));
        assert!(load_stock(&mut v, 4).is_err());
        // A restock entry with a state is refused.
        let mut bad = Stock::new(1);
        bad.put_entry(b"o", V::plain(1), None);
        let mut v = v4_values(&bad);
        let last = v.0.len() - 1;
        v.0[last] = Value::U(1);
        v.0.push_back(Value::B(b"\x01\x01\x02r"));
        assert!(load_stock(&mut v, 4).is_err());
    }

    #[test]
    fn version_3_round_trips_through_blobs() {
        let mut s = Stock::new(10);
        s.fence = 5;
        s.deducted = 7;
        for i in 0..3000u32 {
            s.put_entry(
                format!("order-{i}").as_bytes(),
                crate::ledger::Value::legacy(i64::from(i % 3)),
                None,
            );
        }
        s.put_restock(b"r1", 4);
        let back = load_stock(&mut v3_values(&s), 3).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.restock_of(b"r1"), Some(4));
        // A count that does not match the records is refused: fewer records than the count
        // (the next value is no blob), more, or a blob with none.
        let mut v = v3_values(&s);
        v.0[3] = Value::U(3001);
        assert!(load_stock(&mut v, 3).is_err());
        let mut v = v3_values(&s);
        v.0[3] = Value::U(2999);
        assert!(load_stock(&mut v, 3).is_err());
        let mut v = v3_values(&s);
        v.0[4] = Value::B(b"");
        assert!(load_stock(&mut v, 3).is_err());
        // A blob that is not whole records is refused.
        let mut v = v3_values(&s);
        v.0[4] = Value::B(b"\x05\x09short");
        assert!(load_stock(&mut v, 3).is_err());
        // An empty stock.
        let e = Stock::new(3);
        assert_eq!(load_stock(&mut v3_values(&e), 3).unwrap(), e);
    }

    #[test]
    fn a_stock_breaking_an_invariant_is_refused() {
        let refused = [
            (vec![S(-1), U(0), S(0), U(0)], "negative available"),
            (vec![S(1), U(1 << 63), S(0), U(0)], "fence past i64::MAX"),
            (vec![S(1), U(0), S(-3), U(0)], "negative deducted"),
            (
                vec![S(1), U(0), S(0), U(1), B(b"a"), S(-50)],
                "negative entry",
            ),
            (vec![S(1), U(0), S(0), U(1), B(b""), S(1)], "empty id"),
            (
                vec![S(1), U(0), S(0), U(2), B(b"a"), S(1), B(b"a"), S(1)],
                "duplicate id",
            ),
            (vec![S(1), U(0), S(0), U(2), B(b"a"), S(1)], "fewer entries"),
            (vec![S(1), U(0), S(0), U(u64::MAX)], "a huge count"),
            (vec![S(1), U(0), S(0)], "no count"),
            (vec![U(1), U(0), S(0), U(0)], "unsigned available"),
        ];
        for (v, what) in refused {
            assert!(load_stock(&mut values(&v), 1).is_err(), "{what}");
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(
            LoadError::Range {
                field: "available",
                value: -1
            }
            .to_string(),
            "available -1 is out of range"
        );
        assert_eq!(
            LoadError::Read("owner").to_string(),
            "cannot read the owner"
        );
    }
}
