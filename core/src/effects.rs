//! What the module replicates and writes to the AOF: **effects**, never requests. A replica or
//! an AOF replay applies exactly the state the master decided and never re-runs clock- or
//! counter-based logic. This file is the one encoder (commands replicate with it, the types'
//! AOF rewrites emit with it) and the one decoder (the replication-only commands parse with
//! it) of the internal commands:
//!
//! - `FENCE.LOCK key owner token expire-at-ms` (expire-at 0: leave the key's expiry alone);
//! - `FENCE.STOCK key available fence deducted RESET|KEEP [request-id quantity ...]`;
//! - `FENCE.RESTOCK key available restock-id quantity`;
//! - `FENCE.ENTRY key available fence deducted request-id quantity state [deadline] [events]
//!   [buyer buyer-id]`: one request-ledger entry as it stands (a deduction, a hold, a
//!   confirmation, a refund, an expiry), with the stock's scalars after the change;
//! - `FENCE.LIMIT key per-buyer`: the stock's limit per buyer (0: none);
//! - `FENCE.EXPIRESTREAM key [stream-key [MAXLEN =|~ n]]`: where the stock announces expired
//!   holds (none without a stream key).
//!
//! Every value is checked on decoding as the loaders check it (src/encoding.rs): what the
//! module writes always decodes, and a damaged or forged stream is refused.

use std::ffi::CStr;

use crate::args::{parse_i64, Decimal, MaxLen};
use crate::ledger::{State, Value};

/// The internal command of each effect.
pub const LOCK: &CStr = c"FENCE.LOCK";
pub const STOCK: &CStr = c"FENCE.STOCK";
pub const RESTOCK: &CStr = c"FENCE.RESTOCK";
pub const ENTRY: &CStr = c"FENCE.ENTRY";
pub const EXPIRE_STREAM: &CStr = c"FENCE.EXPIRESTREAM";
pub const LIMIT: &CStr = c"FENCE.LIMIT";

/// One request-ledger entry as it stands, with the stock's scalars after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryEffect<'a> {
    pub available: i64,
    pub fence: u64,
    pub deducted: i64,
    pub id: &'a [u8],
    /// `value.buyer` is the master's own index: the effect names the buyer by id.
    pub value: Value,
    pub buyer: Option<&'a [u8]>,
}

/// A stock's limit per buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitEffect {
    pub limit: i64,
}

impl LimitEffect {
    /// `FENCE.LIMIT key per-buyer`.
    pub fn encode(&self) -> Encoded<'static> {
        Encoded::new(LIMIT, &[num(self.limit)])
    }
}

/// Decodes the arguments after the key of `FENCE.LIMIT`.
pub fn decode_limit(args: &[&[u8]]) -> Result<LimitEffect, Bad> {
    let [limit] = args else {
        return Err(Bad::Arity);
    };
    Ok(LimitEffect {
        limit: quantity(limit, "limit")?,
    })
}

/// Where a stock announces expired holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpireStreamEffect<'a> {
    pub key: Option<&'a [u8]>,
    pub maxlen: Option<MaxLen>,
}

/// A lock's grant, renewal or load: the lease and its absolute expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockEffect<'a> {
    pub owner: &'a [u8],
    pub token: u64,
    /// Unix milliseconds; 0 leaves the key's expiry as it is (an AOF rewrite: Redis writes its
    /// own `PEXPIREAT` after the command).
    pub expire_at: i64,
}

/// A stock's scalar state, and whether its ledgers start afresh (`RESET`, a new sale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockEffect {
    pub available: i64,
    pub fence: u64,
    pub deducted: i64,
    pub reset: bool,
}

/// A restock with an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestockEffect<'a> {
    pub available: i64,
    pub id: &'a [u8],
    pub quantity: i64,
}

/// One argument of an encoded effect (after the key).
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Bytes(&'a [u8]),
    Number(Decimal),
    Word(&'static str),
}

impl Arg<'_> {
    /// The argument's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Arg::Bytes(b) => b,
            Arg::Number(d) => d.as_bytes(),
            Arg::Word(w) => w.as_bytes(),
        }
    }
}

/// The most arguments an effect has after the key.
pub const MAX_ARGS: usize = 10;

/// Up to `MAX_ARGS` arguments after the key, without allocating.
pub struct Encoded<'a> {
    pub command: &'static CStr,
    args: [Arg<'a>; MAX_ARGS],
    len: usize,
}

impl<'a> Encoded<'a> {
    fn new(command: &'static CStr, args: &[Arg<'a>]) -> Encoded<'a> {
        let mut out = [Arg::Word(""); MAX_ARGS];
        let len = args.len().min(MAX_ARGS);
        for (slot, a) in out.iter_mut().zip(args) {
            *slot = *a;
        }
        Encoded {
            command,
            args: out,
            len,
        }
    }

    /// The arguments after the key.
    pub fn args(&self) -> &[Arg<'a>] {
        self.args.get(..self.len).unwrap_or_default()
    }
}

fn num(n: i64) -> Arg<'static> {
    Arg::Number(Decimal::new(n))
}

/// A token as a Redis integer (tokens never pass `i64::MAX`: the clock's ceiling is below it).
fn token(t: u64) -> Arg<'static> {
    num(i64::try_from(t).unwrap_or(i64::MAX))
}

impl<'a> LockEffect<'a> {
    /// `FENCE.LOCK key owner token expire-at-ms`.
    pub fn encode(&self) -> Encoded<'a> {
        Encoded::new(
            LOCK,
            &[
                Arg::Bytes(self.owner),
                token(self.token),
                num(self.expire_at),
            ],
        )
    }
}

impl StockEffect {
    /// `FENCE.STOCK key available fence deducted RESET|KEEP [request-id quantity]`, with at most
    /// one ledger entry.
    pub fn encode<'a>(&self, entry: Option<(&'a [u8], i64)>) -> Encoded<'a> {
        let mode = Arg::Word(if self.reset { "RESET" } else { "KEEP" });
        let head = [
            num(self.available),
            token(self.fence),
            num(self.deducted),
            mode,
        ];
        match entry {
            None => Encoded::new(STOCK, &head),
            Some((id, quantity)) => Encoded::new(
                STOCK,
                &[
                    head[0],
                    head[1],
                    head[2],
                    head[3],
                    Arg::Bytes(id),
                    num(quantity),
                ],
            ),
        }
    }
}

impl<'a> RestockEffect<'a> {
    /// `FENCE.RESTOCK key available restock-id quantity`.
    pub fn encode(&self) -> Encoded<'a> {
        Encoded::new(
            RESTOCK,
            &[num(self.available), Arg::Bytes(self.id), num(self.quantity)],
        )
    }
}

impl<'a> EntryEffect<'a> {
    /// `FENCE.ENTRY key available fence deducted request-id quantity state [deadline]
    /// [events] [buyer buyer-id]`.
    pub fn encode(&self) -> Encoded<'a> {
        let mut args = [Arg::Word(""); MAX_ARGS];
        let head = [
            num(self.available),
            token(self.fence),
            num(self.deducted),
            Arg::Bytes(self.id),
            num(self.value.quantity),
            Arg::Word(self.value.state.name()),
        ];
        let mut n = head.len();
        args[..n].copy_from_slice(&head);
        if self.value.state.keeps_deadline() {
            args[n] = num(i64::try_from(self.value.deadline).unwrap_or(i64::MAX));
            n += 1;
        }
        if self.value.events {
            args[n] = Arg::Word("events");
            n += 1;
        }
        if let Some(buyer) = self.buyer {
            args[n] = Arg::Word("buyer");
            args[n + 1] = Arg::Bytes(buyer);
            n += 2;
        }
        Encoded::new(ENTRY, &args[..n])
    }
}

impl<'a> ExpireStreamEffect<'a> {
    /// `FENCE.EXPIRESTREAM key [stream-key [MAXLEN =|~ n]]`.
    pub fn encode(&self) -> Encoded<'a> {
        match (self.key, self.maxlen) {
            (None, _) => Encoded::new(EXPIRE_STREAM, &[]),
            (Some(k), None) => Encoded::new(EXPIRE_STREAM, &[Arg::Bytes(k)]),
            (Some(k), Some(m)) => Encoded::new(
                EXPIRE_STREAM,
                &[
                    Arg::Bytes(k),
                    Arg::Word("MAXLEN"),
                    Arg::Word(if m.approx { "~" } else { "=" }),
                    num(m.len),
                ],
            ),
        }
    }
}

/// Why an effect was refused: the name of the bad part, or a wrong number of arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    Arity,
    Field(&'static str),
}

fn int(bytes: &[u8], what: &'static str) -> Result<i64, Bad> {
    parse_i64(bytes).ok_or(Bad::Field(what))
}

/// A quantity: 0..=i64::MAX, as every stock holds.
fn quantity(bytes: &[u8], what: &'static str) -> Result<i64, Bad> {
    let v = int(bytes, what)?;
    if v < 0 {
        return Err(Bad::Field(what));
    }
    Ok(v)
}

/// A token or fence: `min..=i64::MAX`.
fn token_of(bytes: &[u8], what: &'static str, min: u64) -> Result<u64, Bad> {
    u64::try_from(int(bytes, what)?)
        .ok()
        .filter(|t| *t >= min)
        .ok_or(Bad::Field(what))
}

/// Decodes the arguments after the key of `FENCE.LOCK`.
pub fn decode_lock<'a>(args: &[&'a [u8]]) -> Result<LockEffect<'a>, Bad> {
    let [owner, t, at] = args else {
        return Err(Bad::Arity);
    };
    if owner.is_empty() {
        return Err(Bad::Field("owner"));
    }
    let token = token_of(t, "token", 1)?;
    let expire_at = int(at, "expire-at")?;
    if expire_at < 0 {
        return Err(Bad::Field("expire-at"));
    }
    Ok(LockEffect {
        owner,
        token,
        expire_at,
    })
}

/// Ledger entries carried by a `FENCE.STOCK`: (request id, quantity).
pub type Entries<'a> = Vec<(&'a [u8], i64)>;

/// Decodes the arguments after the key of `FENCE.STOCK`: the state and the ledger entries.
pub fn decode_stock<'a>(args: &[&'a [u8]]) -> Result<(StockEffect, Entries<'a>), Bad> {
    let (head, pairs) = args.split_at_checked(4).ok_or(Bad::Arity)?;
    let [available, fence, deducted, mode] = head else {
        return Err(Bad::Arity);
    };
    if pairs.len() % 2 != 0 {
        return Err(Bad::Arity);
    }
    let reset = if mode.eq_ignore_ascii_case(b"RESET") {
        true
    } else if mode.eq_ignore_ascii_case(b"KEEP") {
        false
    } else {
        return Err(Bad::Field("mode"));
    };
    let state = StockEffect {
        available: quantity(available, "available")?,
        fence: token_of(fence, "fence", 0)?,
        deducted: quantity(deducted, "deducted")?,
        reset,
    };
    let mut entries = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks_exact(2) {
        let [id, q] = pair else {
            return Err(Bad::Arity);
        };
        if id.is_empty() {
            return Err(Bad::Field("request id"));
        }
        entries.push((*id, quantity(q, "quantity")?));
    }
    Ok((state, entries))
}

/// Decodes the arguments after the key of `FENCE.ENTRY`.
pub fn decode_entry<'a>(args: &[&'a [u8]]) -> Result<EntryEffect<'a>, Bad> {
    let (head, rest) = args.split_at_checked(6).ok_or(Bad::Arity)?;
    let [available, fence, deducted, id, q, state] = head else {
        return Err(Bad::Arity);
    };
    if id.is_empty() {
        return Err(Bad::Field("request id"));
    }
    let state = State::from_name(state).ok_or(Bad::Field("state"))?;
    let mut rest = rest.iter();
    let mut deadline = 0;
    if state.keeps_deadline() {
        let d = rest.next().ok_or(Bad::Arity)?;
        deadline = u64::try_from(int(d, "deadline")?)
            .ok()
            .filter(|d| (1..=crate::ledger::MAX_DEADLINE).contains(d))
            .ok_or(Bad::Field("deadline"))?;
    }
    let mut rest = rest.peekable();
    let events = rest
        .next_if(|w| w.eq_ignore_ascii_case(b"events"))
        .is_some();
    let buyer = match rest.next() {
        None => None,
        Some(w) if w.eq_ignore_ascii_case(b"buyer") => {
            let b = rest.next().ok_or(Bad::Arity)?;
            if b.is_empty() {
                return Err(Bad::Field("buyer"));
            }
            Some(*b)
        }
        Some(_) if events => return Err(Bad::Arity),
        Some(_) => return Err(Bad::Field("events")),
    };
    if rest.next().is_some() {
        return Err(Bad::Arity);
    }
    Ok(EntryEffect {
        available: quantity(available, "available")?,
        fence: token_of(fence, "fence", 0)?,
        deducted: quantity(deducted, "deducted")?,
        id,
        value: Value {
            quantity: quantity(q, "quantity")?,
            state,
            deadline,
            events,
            buyer: 0,
        },
        buyer,
    })
}

/// Decodes the arguments after the key of `FENCE.EXPIRESTREAM`.
pub fn decode_expire_stream<'a>(args: &[&'a [u8]]) -> Result<ExpireStreamEffect<'a>, Bad> {
    match args {
        [] => Ok(ExpireStreamEffect {
            key: None,
            maxlen: None,
        }),
        [k] if !k.is_empty() => Ok(ExpireStreamEffect {
            key: Some(k),
            maxlen: None,
        }),
        [k, word, mode, n] if !k.is_empty() && word.eq_ignore_ascii_case(b"MAXLEN") => {
            let approx = match *mode {
                b"~" => true,
                b"=" => false,
                _ => return Err(Bad::Field("maxlen mode")),
            };
            Ok(ExpireStreamEffect {
                key: Some(k),
                maxlen: Some(MaxLen {
                    approx,
                    len: quantity(n, "maxlen")?,
                }),
            })
        }
        [[], ..] => Err(Bad::Field("stream key")),
        _ => Err(Bad::Arity),
    }
}

/// Decodes the arguments after the key of `FENCE.RESTOCK`.
pub fn decode_restock<'a>(args: &[&'a [u8]]) -> Result<RestockEffect<'a>, Bad> {
    let [available, id, q] = args else {
        return Err(Bad::Arity);
    };
    if id.is_empty() {
        return Err(Bad::Field("restock id"));
    }
    Ok(RestockEffect {
        available: quantity(available, "available")?,
        id,
        quantity: quantity(q, "quantity")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words<'a>(e: &'a Encoded<'a>) -> Vec<&'a [u8]> {
        e.args().iter().map(Arg::bytes).collect()
    }

    #[test]
    fn lock_round_trips() {
        let e = LockEffect {
            owner: b"worker-1",
            token: 1_796_000_000_000_000,
            expire_at: 1_796_000_000_123,
        };
        let enc = e.encode();
        assert_eq!(enc.command, c"FENCE.LOCK");
        assert_eq!(
            words(&enc),
            vec![&b"worker-1"[..], b"1796000000000000", b"1796000000123"]
        );
        assert_eq!(decode_lock(&words(&enc)), Ok(e));
    }

    #[test]
    fn stock_round_trips_with_and_without_an_entry() {
        let s = StockEffect {
            available: 98,
            fence: 7,
            deducted: 2,
            reset: false,
        };
        let enc = s.encode(None);
        assert_eq!(words(&enc), vec![&b"98"[..], b"7", b"2", b"KEEP"]);
        assert_eq!(decode_stock(&words(&enc)), Ok((s, vec![])));
        let enc = s.encode(Some((b"order-1", 2)));
        assert_eq!(
            decode_stock(&words(&enc)),
            Ok((s, vec![(&b"order-1"[..], 2)]))
        );
        let r = StockEffect { reset: true, ..s };
        assert_eq!(words(&r.encode(None))[3], b"RESET");
    }

    #[test]
    fn restock_round_trips() {
        let e = RestockEffect {
            available: 15,
            id: b"r1",
            quantity: 10,
        };
        assert_eq!(decode_restock(&words(&e.encode())), Ok(e));
    }

    #[test]
    fn what_no_master_writes_is_refused() {
        assert_eq!(decode_lock(&[b"w", b"1"]), Err(Bad::Arity));
        assert_eq!(decode_lock(&[b"", b"1", b"0"]), Err(Bad::Field("owner")));
        assert_eq!(decode_lock(&[b"w", b"0", b"0"]), Err(Bad::Field("token")));
        assert_eq!(decode_lock(&[b"w", b"-1", b"0"]), Err(Bad::Field("token")));
        assert_eq!(
            decode_lock(&[b"w", b"1", b"-1"]),
            Err(Bad::Field("expire-at"))
        );
        assert_eq!(decode_lock(&[b"w", b"x", b"0"]), Err(Bad::Field("token")));
        assert_eq!(decode_stock(&[b"1", b"0", b"0"]), Err(Bad::Arity));
        assert_eq!(
            decode_stock(&[b"1", b"0", b"0", b"KEEP", b"id"]),
            Err(Bad::Arity)
        );
        assert_eq!(
            decode_stock(&[b"-5", b"0", b"0", b"KEEP"]),
            Err(Bad::Field("available"))
        );
        assert_eq!(
            decode_stock(&[b"5", b"0", b"-1", b"KEEP"]),
            Err(Bad::Field("deducted"))
        );
        assert_eq!(
            decode_stock(&[b"5", b"0", b"0", b"MAYBE"]),
            Err(Bad::Field("mode"))
        );
        assert_eq!(
            decode_stock(&[b"5", b"0", b"1", b"KEEP", b"o", b"-50"]),
            Err(Bad::Field("quantity"))
        );
        assert_eq!(
            decode_stock(&[b"5", b"0", b"1", b"KEEP", b"", b"1"]),
            Err(Bad::Field("request id"))
        );
        assert_eq!(
            decode_restock(&[b"5", b"", b"1"]),
            Err(Bad::Field("restock id"))
        );
        assert_eq!(
            decode_restock(&[b"5", b"r", b"-1"]),
            Err(Bad::Field("quantity"))
        );
        // Several entries in one effect (older AOFs, hand-made ones) decode.
        assert_eq!(
            decode_stock(&[b"5", b"0", b"2", b"KEEP", b"a", b"1", b"b", b"0"])
                .map(|(_, e)| e.len()),
            Ok(2)
        );
    }

    #[test]
    fn entries_and_expire_streams_round_trip() {
        for (state, deadline, events) in [
            (State::Deducted, 0, false),
            (State::Held, 1_796_000_000_000, true),
            (State::Held, 5, false),
            (State::Confirmed, 0, true),
            (State::Refunded, 0, false),
            (State::Expired, 1_796_000_000_000, true),
        ] {
            let e = EntryEffect {
                available: 5,
                fence: 3,
                deducted: 7,
                id: b"order-1",
                value: Value {
                    quantity: 2,
                    state,
                    deadline,
                    events,
                    buyer: 0,
                },
                buyer: None,
            };
            let enc = e.encode();
            assert_eq!(enc.command, c"FENCE.ENTRY");
            assert_eq!(decode_entry(&words(&enc)), Ok(e), "{state:?}");
            // With a buyer: the longest effect, every argument kept.
            let b = EntryEffect {
                buyer: Some(b"user 7"),
                ..e
            };
            let enc = b.encode();
            assert!(enc.args().len() <= MAX_ARGS);
            assert_eq!(decode_entry(&words(&enc)), Ok(b), "{state:?}");
        }
        let plain = EntryEffect {
            available: 5,
            fence: 0,
            deducted: 1,
            id: b"o",
            value: Value::plain(1),
            buyer: None,
        };
        assert_eq!(
            words(&plain.encode()),
            vec![&b"5"[..], b"0", b"1", b"o", b"1", b"deducted"]
        );
        for e in [
            ExpireStreamEffect {
                key: None,
                maxlen: None,
            },
            ExpireStreamEffect {
                key: Some(b"events"),
                maxlen: None,
            },
            ExpireStreamEffect {
                key: Some(b"events"),
                maxlen: Some(MaxLen {
                    approx: true,
                    len: 1000,
                }),
            },
        ] {
            assert_eq!(decode_expire_stream(&words(&e.encode())), Ok(e));
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        let ok: [&[u8]; 7] = [b"5", b"0", b"1", b"o", b"1", b"held", b"9"];
        assert!(decode_entry(&ok).is_ok());
        assert_eq!(decode_entry(&ok[..6]), Err(Bad::Arity));
        let mut bad = ok;
        bad[5] = b"lost";
        assert_eq!(decode_entry(&bad), Err(Bad::Field("state")));
        let mut bad = ok;
        bad[6] = b"0";
        assert_eq!(decode_entry(&bad), Err(Bad::Field("deadline")));
        // Past the last millisecond of the year 9999: forged (it would wedge a timer).
        let mut bad = ok;
        bad[6] = b"253402300800000";
        assert_eq!(decode_entry(&bad), Err(Bad::Field("deadline")));
        let mut fine = ok;
        fine[6] = b"253402300799999";
        assert!(decode_entry(&fine).is_ok());
        let mut bad = ok;
        bad[3] = b"";
        assert_eq!(decode_entry(&bad), Err(Bad::Field("request id")));
        let mut bad = ok;
        bad[4] = b"-1";
        assert_eq!(decode_entry(&bad), Err(Bad::Field("quantity")));
        assert_eq!(
            decode_entry(&[b"5", b"0", b"1", b"o", b"1", b"deducted", b"x"]),
            Err(Bad::Field("events"))
        );
        assert_eq!(
            decode_entry(&[b"5", b"0", b"1", b"o", b"1", b"deducted", b"events", b"x"]),
            Err(Bad::Arity)
        );
        assert_eq!(
            decode_entry(&[b"5", b"0", b"1", b"o", b"1", b"deducted", b"buyer"]),
            Err(Bad::Arity)
        );
        assert_eq!(
            decode_entry(&[b"5", b"0", b"1", b"o", b"1", b"deducted", b"buyer", b""]),
            Err(Bad::Field("buyer"))
        );
        assert_eq!(
            decode_entry(&[
                b"5",
                b"0",
                b"1",
                b"o",
                b"1",
                b"deducted",
                b"buyer",
                b"u",
                b"x"
            ]),
            Err(Bad::Arity)
        );
        assert_eq!(decode_limit(&[b"3"]), Ok(LimitEffect { limit: 3 }));
        assert_eq!(decode_limit(&[b"-1"]), Err(Bad::Field("limit")));
        assert_eq!(decode_limit(&[]), Err(Bad::Arity));
        assert_eq!(
            decode_limit(&words(&LimitEffect { limit: i64::MAX }.encode())),
            Ok(LimitEffect { limit: i64::MAX })
        );
        assert_eq!(decode_expire_stream(&[b""]), Err(Bad::Field("stream key")));
        assert_eq!(
            decode_expire_stream(&[b"s", b"MAXLEN", b"?", b"1"]),
            Err(Bad::Field("maxlen mode"))
        );
        assert_eq!(
            decode_expire_stream(&[b"s", b"MAXLEN", b"~", b"-1"]),
            Err(Bad::Field("maxlen"))
        );
        assert_eq!(decode_expire_stream(&[b"s", b"x"]), Err(Bad::Arity));
    }

    proptest! {
        #[test]
        fn every_effect_round_trips(
            owner in proptest::collection::vec(any::<u8>(), 1..40),
            token in 1u64..=i64::MAX as u64,
            expire_at in 0i64..=i64::MAX,
            available in 0i64..=i64::MAX,
            fence in 0u64..=i64::MAX as u64,
            deducted in 0i64..=i64::MAX,
            reset in any::<bool>(),
            entry in proptest::option::of((proptest::collection::vec(any::<u8>(), 1..40), 0i64..=i64::MAX)),
        ) {
            let lock = LockEffect { owner: &owner, token, expire_at };
            let enc = lock.encode();
            prop_assert_eq!(decode_lock(&words(&enc)), Ok(lock));
            let state = StockEffect { available, fence, deducted, reset };
            let entry = entry.as_ref().map(|(id, q)| (id.as_slice(), *q));
            let enc = state.encode(entry);
            prop_assert_eq!(decode_stock(&words(&enc)), Ok((state, entry.into_iter().collect())));
            if let Some((id, q)) = entry {
                let r = RestockEffect { available, id, quantity: q };
                let enc = r.encode();
                prop_assert_eq!(decode_restock(&words(&enc)), Ok(r));
            }
        }
    }
}
