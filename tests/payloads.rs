//! Hostile `RESTORE` and `MIGRATE` payloads: a DUMP payload reaches the module's loaders
//! whenever its CRC is right, and anybody can compute a CRC. Every truncation and thousands of
//! random byte flips of valid payloads of both types (CRC fixed up), and hand-made payloads
//! that break each invariant, must leave the server running, and every refusal must leave the
//! keyspace and the token clock as they were.
//!
//! - `FENCE_PAYLOAD_FLIPS`: random flipped payloads per run (default 3000; `make fuzz` runs
//!   more).
//! - `FENCE_PAYLOAD_SEED`: the seed of the flips (printed by every run).

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::{Connection, Value};

/// CRC-64 with the Jones polynomial, reflected, as Redis seals a DUMP payload.
fn crc64(data: &[u8]) -> u64 {
    const POLY: u64 = 0x95ac_9329_ac4b_c9b5; // 0xad93d23594c935a9, bit-reversed
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A DUMP payload taken apart: the serialized value and the 2-byte RDB version after it.
#[derive(Clone)]
struct Payload {
    body: Vec<u8>,
    version: [u8; 2],
}

impl Payload {
    /// Splits a payload from DUMP, checking its CRC (and so this file's CRC code).
    fn parse(dump: &[u8]) -> Payload {
        assert!(dump.len() > 10, "a DUMP payload is longer than its footer");
        let (rest, crc) = dump.split_at(dump.len() - 8);
        assert_eq!(
            crc64(rest).to_le_bytes(),
            crc,
            "the CRC of a real DUMP payload"
        );
        let (body, version) = rest.split_at(rest.len() - 2);
        Payload {
            body: body.to_vec(),
            version: [version[0], version[1]],
        }
    }

    /// The payload with a correct footer, so that Redis hands the body to the module.
    fn seal(&self) -> Vec<u8> {
        let mut out = self.body.clone();
        out.extend_from_slice(&self.version);
        let crc = crc64(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn with_body(&self, body: Vec<u8>) -> Payload {
        Payload {
            body,
            version: self.version,
        }
    }
}

/// Module values as an RDB holds them: the type byte and module id of a real payload, then
/// the module's own opcodes.
struct Encoder {
    prefix: Vec<u8>,
    out: Vec<u8>,
}

impl Encoder {
    /// Starts a value of the type whose real payload is `of` (type byte + 9-byte module id).
    fn new(of: &Payload) -> Encoder {
        let prefix = of.body[..10].to_vec();
        assert_eq!(prefix[0], 7, "a module value (RDB_TYPE_MODULE_2)");
        assert_eq!(prefix[1], 0x81, "a 64-bit module id");
        Encoder {
            out: prefix.clone(),
            prefix,
        }
    }

    fn len(&mut self, v: u64) -> &mut Self {
        if v < 64 {
            self.out.push(v as u8);
        } else if v < 16384 {
            self.out.push(0x40 | (v >> 8) as u8);
            self.out.push(v as u8);
        } else if v <= u64::from(u32::MAX) {
            self.out.push(0x80);
            self.out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            self.out.push(0x81);
            self.out.extend_from_slice(&v.to_be_bytes());
        }
        self
    }

    fn unsigned(&mut self, v: u64) -> &mut Self {
        self.out.push(2);
        self.len(v)
    }

    /// `RedisModule_SaveSigned` writes the bits of the integer as an unsigned value.
    fn signed(&mut self, v: i64) -> &mut Self {
        self.unsigned(v as u64)
    }

    /// The RDB's signed-integer opcode, which the module never writes (a wrong opcode).
    fn sint_opcode(&mut self, v: u64) -> &mut Self {
        self.out.push(1);
        self.len(v)
    }

    fn string(&mut self, b: &[u8]) -> &mut Self {
        self.out.push(5);
        self.len(b.len() as u64);
        self.out.extend_from_slice(b);
        self
    }

    /// The value, closed with the module EOF opcode.
    fn done(&mut self) -> Vec<u8> {
        let mut out = std::mem::replace(&mut self.out, self.prefix.clone());
        out.push(0);
        out
    }
}

/// A lock value: token, owner.
fn lock_body(of: &Payload, token: u64, owner: &[u8]) -> Vec<u8> {
    Encoder::new(of).unsigned(token).string(owner).done()
}

/// The encoding version in a payload's module id (its low 10 bits).
fn encver(of: &Payload) -> u64 {
    u64::from_be_bytes(of.body[2..10].try_into().expect("8 bytes")) & 1023
}

/// One request-ledger record of a stock value: its id, quantity (negative ones are written as
/// their bits), state code (0 deducted, 1 held, 2 confirmed, 3 refunded, 4 expired), deadline
/// (written for held and expired entries), whether the hold announces its expiry, and the
/// index of its buyer in the buyer table (encoding 5).
#[derive(Clone, Copy)]
struct Rec<'a> {
    id: &'a [u8],
    quantity: i64,
    state: u8,
    deadline: u64,
    events: bool,
    buyer: Option<u64>,
}

const DEDUCTED: u8 = 0;
const HELD: u8 = 1;
const CONFIRMED: u8 = 2;
const REFUNDED: u8 = 3;
const EXPIRED: u8 = 4;

impl<'a> Rec<'a> {
    /// An entry in `state`, without deadline or buyer.
    fn new(id: &'a [u8], quantity: i64, state: u8) -> Rec<'a> {
        Rec {
            id,
            quantity,
            state,
            deadline: 0,
            events: false,
            buyer: None,
        }
    }

    /// An entry as encodings before 4 had them: deducted, or refunded for a quantity of 0.
    fn legacy(id: &'a [u8], quantity: i64) -> Rec<'a> {
        Rec::new(
            id,
            quantity,
            if quantity == 0 { REFUNDED } else { DEDUCTED },
        )
    }

    fn deadline(self, deadline: u64) -> Rec<'a> {
        Rec { deadline, ..self }
    }

    fn events(self) -> Rec<'a> {
        Rec {
            events: true,
            ..self
        }
    }

    fn buyer(self, index: u64) -> Rec<'a> {
        Rec {
            buyer: Some(index),
            ..self
        }
    }
}

/// A stock value as `fence-stk` saves it, at the encoding of the real payload it is written
/// for (`StockValue::body`). The counts follow the tables unless set otherwise.
#[derive(Clone)]
struct StockValue<'a> {
    available: i64,
    fence: u64,
    deducted: i64,
    /// Encoding 5: the limit per buyer, written as an unsigned.
    limit: u64,
    /// Encoding 5: the buyer table (id, units held) and the count written before it.
    buyers: Vec<(&'a [u8], i64)>,
    buyer_count: u64,
    /// The request ledger and the count written before it.
    entries: Vec<Rec<'a>>,
    count: u64,
}

/// Appends `v` as an unsigned LEB128 varint, as the module's blobs hold numbers.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl<'a> StockValue<'a> {
    fn new(available: i64, fence: u64, deducted: i64) -> StockValue<'a> {
        StockValue {
            available,
            fence,
            deducted,
            limit: 0,
            buyers: Vec::new(),
            buyer_count: 0,
            entries: Vec::new(),
            count: 0,
        }
    }

    fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    fn buyers(mut self, buyers: &[(&'a [u8], i64)]) -> Self {
        self.buyers = buyers.to_vec();
        self.buyer_count = buyers.len() as u64;
        self
    }

    fn buyer_count(mut self, n: u64) -> Self {
        self.buyer_count = n;
        self
    }

    fn entries(mut self, entries: &[Rec<'a>]) -> Self {
        self.entries = entries.to_vec();
        self.count = entries.len() as u64;
        self
    }

    fn count(mut self, n: u64) -> Self {
        self.count = n;
        self
    }

    /// The value at `of`'s encoding: available, fence, deducted; from encoding 4 the expire
    /// stream (none: an empty key, mode 0); from encoding 5 the limit, then the buyer table (its
    /// count, then one blob of records: units and id length as varints, flags 0, the id); then
    /// the request ledger: entries one by one up to encoding 2, else its count and one blob of
    /// records (quantity and id length as varints; from encoding 4 a flags byte (the state, 0x08
    /// events, from encoding 5 0x20 buyer), a held or expired entry's deadline, from encoding 5
    /// the buyer's index; then the id); then an empty restock ledger (from encoding 2).
    fn body(&self, of: &Payload) -> Vec<u8> {
        let version = encver(of);
        let mut e = Encoder::new(of);
        e.signed(self.available)
            .unsigned(self.fence)
            .signed(self.deducted);
        if version >= 4 {
            e.string(b"").unsigned(0);
        }
        if version >= 5 {
            e.unsigned(self.limit).unsigned(self.buyer_count);
            let mut blob = Vec::new();
            for (id, units) in &self.buyers {
                varint(&mut blob, *units as u64);
                varint(&mut blob, id.len() as u64);
                blob.push(0);
                blob.extend_from_slice(id);
            }
            if !blob.is_empty() {
                e.string(&blob);
            }
        }
        e.unsigned(self.count);
        if version >= 3 {
            let mut blob = Vec::new();
            for r in &self.entries {
                varint(&mut blob, r.quantity as u64);
                varint(&mut blob, r.id.len() as u64);
                if version >= 4 {
                    let events = if r.events { 0x08 } else { 0 };
                    let buyer = if r.buyer.is_some() { 0x20 } else { 0 };
                    blob.push(r.state | events | buyer);
                    if r.state == HELD || r.state == EXPIRED {
                        varint(&mut blob, r.deadline);
                    }
                    if let Some(index) = r.buyer.filter(|_| version >= 5) {
                        varint(&mut blob, index);
                    }
                }
                blob.extend_from_slice(r.id);
            }
            if !blob.is_empty() {
                e.string(&blob);
            }
            e.unsigned(0);
            return e.done();
        }
        for r in &self.entries {
            e.string(r.id).signed(r.quantity);
        }
        if version >= 2 {
            e.unsigned(0);
        }
        e.done()
    }
}

/// A stock value without buyers or limit: available, fence, deducted, then `count` and the
/// entries (deducted, or refunded for a quantity of 0), at `of`'s encoding (see
/// `StockValue::body`).
fn stock_body(
    of: &Payload,
    available: i64,
    fence: u64,
    deducted: i64,
    count: u64,
    entries: &[(&[u8], i64)],
) -> Vec<u8> {
    let entries: Vec<Rec<'_>> = entries.iter().map(|(id, q)| Rec::legacy(id, *q)).collect();
    StockValue::new(available, fence, deducted)
        .entries(&entries)
        .count(count)
        .body(of)
}

fn last_token(con: &mut Connection) -> i64 {
    info_int(con, "fence", "fence_last_token")
}

/// The server under attack, with a few keys that must never change, and the real payloads.
struct Target {
    server: Server,
    con: Connection,
    lock: Payload,
    stock: Payload,
    ledger: Payload,
    /// A stock with a limit and buyers (encoding 5), and its held entry's deadline.
    buyers: Payload,
    buyers_deadline: u64,
    digest: String,
}

impl Target {
    fn start() -> Target {
        let server = Server::start_with(&["--enable-debug-command", "yes"]);
        let mut con = server.conn();
        let t = int(call(
            &mut con,
            &["LOCK.ACQUIRE", "keep:lock", "worker-1", "600000"],
        ));
        okay(call(&mut con, &["STOCK.SET", "keep:stock", "100"]));
        int(call(&mut con, &["STOCK.DEDUCT", "keep:stock", "3"]));
        okay(call(&mut con, &["STOCK.SET", "keep:ledger", "1000"]));
        let fence = t.to_string();
        for (i, id) in ["order-1", "order-2", "order-3"].iter().enumerate() {
            let q = (i + 1).to_string();
            int(call(
                &mut con,
                &["STOCK.DEDUCT", "keep:ledger", &q, "ID", id, "FENCE", &fence],
            ));
        }
        int(call(&mut con, &["STOCK.REFUND", "keep:ledger", "order-2"]));
        // Held and confirmed entries (encoding 4), with an expire stream.
        for id in ["order-4", "order-5"] {
            int(call(
                &mut con,
                &[
                    "STOCK.DEDUCT",
                    "keep:ledger",
                    "4",
                    "ID",
                    id,
                    "HOLD",
                    "600000",
                    "EVENTS",
                    "keep:orders",
                    "MAXLEN",
                    "~",
                    "100",
                ],
            ));
        }
        int(call(&mut con, &["STOCK.CONFIRM", "keep:ledger", "order-5"]));
        // Restock ids too (encoding 2).
        int(call(
            &mut con,
            &["STOCK.ADD", "keep:ledger", "5", "ID", "restock-1"],
        ));
        int(call(
            &mut con,
            &["STOCK.ADD", "keep:ledger", "7", "ID", "restock-2"],
        ));
        // A limit and buyers (encoding 5): an entry without a buyer (made before the limit),
        // then buyers' entries deducted, held, refunded and confirmed.
        okay(call(&mut con, &["STOCK.SET", "keep:buyers", "50"]));
        int(call(
            &mut con,
            &["STOCK.DEDUCT", "keep:buyers", "1", "ID", "o-0"],
        ));
        int(call(&mut con, &["STOCK.LIMIT", "keep:buyers", "3"]));
        for (id, q, buyer, hold) in [
            ("o-1", "2", "u-1", None),
            ("o-2", "1", "u-2", Some("600000")),
            ("o-3", "1", "u-1", None),
            ("o-4", "1", "u-2", Some("600000")),
        ] {
            let mut args = vec!["STOCK.DEDUCT", "keep:buyers", q, "ID", id, "BUYER", buyer];
            if let Some(ms) = hold {
                args.extend(["HOLD", ms]);
            }
            int(call(&mut con, &args));
        }
        int(call(&mut con, &["STOCK.REFUND", "keep:buyers", "o-3"]));
        int(call(&mut con, &["STOCK.CONFIRM", "keep:buyers", "o-4"]));
        let Ok(Value::Array(detail)) =
            call(&mut con, &["STOCK.REQUEST", "keep:buyers", "o-2", "DETAIL"])
        else {
            panic!("STOCK.REQUEST keep:buyers o-2 DETAIL");
        };
        let buyers_deadline = detail
            .chunks(2)
            .find(|p| text(&p[0]) == "deadline")
            .and_then(|p| match p[1] {
                Value::Int(d) => u64::try_from(d).ok(),
                _ => None,
            })
            .expect("o-2's deadline");
        let lock = Payload::parse(&dump(&mut con, "keep:lock"));
        let stock = Payload::parse(&dump(&mut con, "keep:stock"));
        let ledger = Payload::parse(&dump(&mut con, "keep:ledger"));
        let buyers = Payload::parse(&dump(&mut con, "keep:buyers"));
        let digest = debug_digest(&mut con);
        Target {
            server,
            con,
            lock,
            stock,
            ledger,
            buyers,
            buyers_deadline,
            digest,
        }
    }

    /// Restores `payload` as key `fuzz` and checks the outcome: refused with the keyspace and
    /// the token clock unchanged, or accepted holding a value the contract allows (then
    /// deleted). Returns whether it was accepted.
    #[track_caller]
    fn attempt(&mut self, payload: &[u8], what: &str) -> bool {
        let clock = last_token(&mut self.con);
        let reply = restore(&mut self.con, "fuzz", 0, payload, &[]);
        match reply {
            Err(e) if e.code().is_some() => {
                assert_eq!(
                    exists(&mut self.con, "fuzz"),
                    0,
                    "{what}: refused, yet stored"
                );
                assert_eq!(
                    last_token(&mut self.con),
                    clock,
                    "{what}: a refused payload moved the token clock"
                );
                assert_eq!(
                    debug_digest(&mut self.con),
                    self.digest,
                    "{what}: a refused payload changed the keyspace"
                );
                false
            }
            Err(e) => {
                self.server.assert_alive();
                panic!("{what}: RESTORE failed without a reply: {e}");
            }
            Ok(_) => {
                self.check_accepted(what, clock);
                true
            }
        }
    }

    #[track_caller]
    fn check_accepted(&mut self, what: &str, clock_before: i64) {
        let con = &mut self.con;
        let limit = now_us() + 24 * 3600 * 1_000_000;
        match key_type(con, "fuzz").as_str() {
            "fence-lck" => {
                let Ok(Value::Array(items)) = call(con, &["LOCK.STATUS", "fuzz"]) else {
                    panic!("{what}: an accepted lock is not a lock");
                };
                let (Value::BulkString(owner), Value::Int(token)) = (&items[1], &items[3]) else {
                    panic!("{what}: LOCK.STATUS {items:?}");
                };
                let token = *token;
                assert!(!owner.is_empty(), "{what}: empty owner accepted");
                assert!(token >= 1, "{what}: token {token} accepted");
                assert!(
                    token <= limit,
                    "{what}: a token {token} from the future accepted"
                );
                // The value's other callbacks work on it.
                let _ = digest_value(con, "fuzz");
                let _ = dump(con, "fuzz");
            }
            "fence-stk" => {
                let Ok(Value::Array(items)) = call(con, &["STOCK.INFO", "fuzz"]) else {
                    panic!("{what}: STOCK.INFO of an accepted stock");
                };
                for pair in items.chunks(2) {
                    let Value::Int(n) = pair[1] else {
                        panic!("{what}: STOCK.INFO {items:?}");
                    };
                    assert!(n >= 0, "{what}: {} {n} accepted", text(&pair[0]));
                    if text(&pair[0]) == "fence" {
                        assert!(n <= limit, "{what}: a fence {n} from the future accepted");
                    }
                }
                let _ = digest_value(con, "fuzz");
                let _ = dump(con, "fuzz");
                check_buyers_agree(con, what);
                // A refund of some id never drives the stock below zero.
                let _ = call(con, &["STOCK.REFUND", "fuzz", "order-1"]);
                let _ = call(con, &["STOCK.REFUND", "fuzz", "order-3"]);
                let _ = call(con, &["STOCK.REFUND", "fuzz", "o-1"]);
                let _ = call(con, &["STOCK.REFUND", "fuzz", "b-deducted"]);
                assert!(stock(con, "fuzz") >= 0, "{what}: a refund went negative");
                // A deduction by a buyer goes through the limit step on the loaded table; it
                // answers (a number, nil or an error reply) and keeps the buyers in agreement.
                for buyer in ["u-1", "user-1", "new-buyer"] {
                    let r = call(
                        con,
                        &[
                            "STOCK.DEDUCT",
                            "fuzz",
                            "1",
                            "ID",
                            "fuzz-deduct",
                            "BUYER",
                            buyer,
                        ],
                    );
                    assert!(
                        matches!(r, Ok(Value::Int(_)) | Ok(Value::Nil))
                            || r.as_ref().err().is_some_and(|e| e.code().is_some()),
                        "{what}: STOCK.DEDUCT … BUYER {buyer}: {r:?}"
                    );
                }
                check_buyers_agree(con, what);
            }
            // A flip of the type byte makes another Redis type: not the module's business.
            _ => {}
        }
        okay_or_int(call(con, &["DEL", "fuzz"]));
        let after = last_token(con);
        assert!(
            after >= clock_before && after <= limit.max(clock_before),
            "{what}: the clock went from {clock_before} to {after}"
        );
        self.digest = debug_digest(con);
    }
}

/// The request ids the payloads of these tests hold (real and fixture payloads; a flip may
/// change some).
const KNOWN_IDS: &[&str] = &[
    "order-1",
    "order-2",
    "order-3",
    "order-4",
    "order-5",
    "o-0",
    "o-1",
    "o-2",
    "o-3",
    "o-4",
    "b-anon",
    "b-anon-held",
    "b-over",
    "b-deducted",
    "b-held",
    "b-confirmed",
    "b-refunded",
    "b-expired",
    "b-odd",
    "b-gone",
    "fuzz-deduct",
];

/// The units of each buyer the known entries of `fuzz` name (by `STOCK.REQUEST … DETAIL`),
/// counting those in a state that holds units, and how many known entries exist.
fn known_entries_units(con: &mut Connection, what: &str) -> (Vec<(Vec<u8>, i64)>, i64) {
    let mut found = 0;
    let mut units: Vec<(Vec<u8>, i64)> = Vec::new();
    for id in KNOWN_IDS {
        let detail = match call(con, &["STOCK.REQUEST", "fuzz", id, "DETAIL"]) {
            Ok(Value::Nil) => continue,
            Ok(Value::Array(items)) => items,
            other => panic!("{what}: STOCK.REQUEST fuzz {id} DETAIL: {other:?}"),
        };
        found += 1;
        let field = |name: &str| {
            detail
                .chunks(2)
                .find(|p| text(&p[0]) == name)
                .map(|p| p[1].clone())
        };
        let Some(Value::BulkString(buyer)) = field("buyer") else {
            continue;
        };
        let state = field("state").map(|v| text(&v)).unwrap_or_default();
        let Some(Value::Int(q)) = field("quantity") else {
            panic!("{what}: {id} DETAIL {detail:?}");
        };
        let holds = matches!(state.as_str(), "deducted" | "held" | "confirmed");
        let add = if holds { q } else { 0 };
        match units.iter_mut().find(|(b, _)| *b == buyer) {
            Some((_, u)) => *u = u.saturating_add(add),
            None => units.push((buyer, add)),
        }
    }
    (units, found)
}

fn buyer_units_of_fuzz(con: &mut Connection, buyer: &[u8], what: &str) -> i64 {
    match redis::cmd("STOCK.BUYER").arg("fuzz").arg(buyer).query(con) {
        Ok(Value::Int(n)) if n >= 0 => n,
        other => panic!("{what}: STOCK.BUYER {buyer:?}: {other:?}"),
    }
}

/// An accepted stock's buyers agree with its ledger: each buyer `STOCK.REQUEST … DETAIL` names
/// holds at least the units of the known entries that name it and hold units, exactly those
/// when every entry of the ledger is a known one; `STOCK.BUYER` is never negative. Holds only
/// end as time passes (a flipped deadline may fall due during the reads), so `STOCK.BUYER` is
/// read before and after the entries: before ≥ the entries' units ≥ after.
#[track_caller]
fn check_buyers_agree(con: &mut Connection, what: &str) {
    let Ok(Value::Array(info)) = call(con, &["STOCK.INFO", "fuzz"]) else {
        panic!("{what}: STOCK.INFO");
    };
    let requests = info
        .chunks(2)
        .find(|p| text(&p[0]) == "requests")
        .and_then(|p| match p[1] {
            Value::Int(n) => Some(n),
            _ => None,
        })
        .expect("STOCK.INFO requests");
    let (named, _) = known_entries_units(con, what);
    let before: Vec<i64> = named
        .iter()
        .map(|(b, _)| buyer_units_of_fuzz(con, b, what))
        .collect();
    let (units, found) = known_entries_units(con, what);
    for ((buyer, sum), has_before) in units.into_iter().zip(before) {
        let has_after = buyer_units_of_fuzz(con, &buyer, what);
        assert!(
            has_before >= sum,
            "{what}: buyer {buyer:?} holds {has_before} < {sum}, its known entries' units"
        );
        if found == requests {
            assert!(
                sum >= has_after,
                "{what}: buyer {buyer:?} holds {has_after} > {sum}, its entries' units"
            );
        }
    }
}

fn okay_or_int(r: redis::RedisResult<Value>) {
    match r {
        Ok(Value::Int(_)) | Ok(Value::Okay) => {}
        other => panic!("DEL: {other:?}"),
    }
}

#[test]
fn the_crc_code_is_redis_s() {
    // The check value of CRC-64/Jones as Redis's crc64 test gives it.
    assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
}

#[test]
fn the_encoder_writes_what_redis_writes() {
    let mut t = Target::start();
    let (_, token, _) = lock_status(&mut t.con, "keep:lock").expect("the lock");
    assert_eq!(
        lock_body(&t.lock, token as u64, b"worker-1"),
        t.lock.body,
        "a lock encoded here differs from DUMP's"
    );
    assert_eq!(
        stock_body(&t.stock, 97, 0, 3, 0, &[]),
        t.stock.body,
        "a stock encoded here differs from DUMP's"
    );
    assert_eq!(encver(&t.buyers), 5, "the stock encoding these tests write");
    let d = t.buyers_deadline;
    assert_eq!(
        StockValue::new(45, 0, 5)
            .limit(3)
            .buyers(&[(b"u-1", 2), (b"u-2", 2)])
            .entries(&[
                Rec::new(b"o-0", 1, DEDUCTED),
                Rec::new(b"o-1", 2, DEDUCTED).buyer(0),
                Rec::new(b"o-2", 1, HELD).deadline(d).buyer(1),
                Rec::new(b"o-3", 1, REFUNDED).buyer(0),
                Rec::new(b"o-4", 1, CONFIRMED).buyer(1),
            ])
            .body(&t.buyers),
        t.buyers.body,
        "a stock with buyers encoded here differs from DUMP's"
    );
}

/// The 23 bytes of the report: a lock whose owner is missing (an EOF opcode where a string
/// belongs), with a valid CRC, killed Redis 7.0.15 and 8.2.3.
const REPORTED: &str = "07817de9dc7be95c90010205000a00f5cf5822a4496ba9";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn crafted_payloads_are_refused_and_change_nothing() {
    let mut t = Target::start();
    let (lock, stock) = (t.lock.clone(), t.stock.clone());
    let now = now_us() as u64;
    let day = 24 * 3600 * 1_000_000u64;
    let mut cases: Vec<(String, Vec<u8>)> = vec![("the reported 23 bytes".into(), hex(REPORTED))];
    let mut add = |what: &str, p: &Payload, body: Vec<u8>| {
        cases.push((what.to_string(), p.with_body(body).seal()));
    };
    add("lock token 0", &lock, lock_body(&lock, 0, b"w"));
    add("lock token 2^63", &lock, lock_body(&lock, 1 << 63, b"w"));
    add("lock token 2^64-1", &lock, lock_body(&lock, u64::MAX, b"w"));
    add(
        "lock token 2^63-1 (far ahead)",
        &lock,
        lock_body(&lock, i64::MAX as u64, b"w"),
    );
    add(
        "lock token a year ahead",
        &lock,
        lock_body(&lock, now + 366 * day, b"w"),
    );
    add(
        "lock token 25 hours ahead",
        &lock,
        lock_body(&lock, now + day + day / 24, b"w"),
    );
    add(
        "lock with an empty owner",
        &lock,
        lock_body(&lock, now, b""),
    );
    add(
        "lock with another opcode for its token",
        &lock,
        Encoder::new(&lock).sint_opcode(5).string(b"w").done(),
    );
    add(
        "lock with an owner that is a number",
        &lock,
        Encoder::new(&lock).unsigned(5).unsigned(5).done(),
    );
    add(
        "lock without its EOF marker",
        &lock,
        lock_body(&lock, now, b"w")[..]
            .split_last()
            .map(|(_, b)| b.to_vec())
            .unwrap_or_default(),
    );
    add(
        "lock with trailing data before EOF (token ahead of the clock)",
        &lock,
        Encoder::new(&lock)
            .unsigned(now + 3_600_000_000)
            .string(b"w")
            .unsigned(1)
            .done(),
    );
    add(
        "stock with available -1",
        &stock,
        stock_body(&stock, -1, 0, 0, 0, &[]),
    );
    add(
        "stock with deducted -3",
        &stock,
        stock_body(&stock, 1, 0, -3, 0, &[]),
    );
    add(
        "stock with a fence past i64::MAX",
        &stock,
        stock_body(&stock, 1, 1 << 63, 0, 0, &[]),
    );
    add(
        "stock with a fence a year ahead",
        &stock,
        stock_body(&stock, 1, now + 366 * day, 0, 0, &[]),
    );
    add(
        "ledger quantity -50",
        &stock,
        stock_body(&stock, 100, 0, 50, 1, &[(b"o", -50)]),
    );
    add(
        "empty request id",
        &stock,
        stock_body(&stock, 100, 0, 1, 1, &[(b"", 1)]),
    );
    add(
        "duplicate request id",
        &stock,
        stock_body(&stock, 100, 0, 2, 2, &[(b"o", 1), (b"o", 1)]),
    );
    add(
        "ledger count 3 with 2 entries",
        &stock,
        stock_body(&stock, 100, 0, 2, 3, &[(b"a", 1), (b"b", 1)]),
    );
    add(
        "ledger count 2^64-1",
        &stock,
        stock_body(&stock, 100, 0, 2, u64::MAX, &[(b"a", 1)]),
    );
    add(
        "ledger count 1 with 2 entries (trailing data)",
        &stock,
        stock_body(
            &stock,
            100,
            now + 3_600_000_000,
            2,
            1,
            &[(b"a", 1), (b"b", 1)],
        ),
    );
    // Encoding 5: the limit, the buyer table, each entry's buyer.
    let now_ms = now / 1000;
    let sold = |id: &'static [u8], q: i64, buyer: u64| Rec::new(id, q, DEDUCTED).buyer(buyer);
    let buyers = |value: StockValue<'_>| value.body(&stock);
    let mut add_stock = |what: &str, value: StockValue<'_>| {
        cases.push((what.to_string(), stock.with_body(buyers(value)).seal()));
    };
    add_stock("limit 2^63", StockValue::new(5, 0, 0).limit(1 << 63));
    add_stock("limit 2^64-1", StockValue::new(5, 0, 0).limit(u64::MAX));
    add_stock(
        "limit 2^63 with buyers",
        StockValue::new(5, 0, 1)
            .limit(1 << 63)
            .buyers(&[(b"u", 1)])
            .entries(&[sold(b"o", 1, 0)]),
    );
    add_stock(
        "a buyer index one past the buyer table",
        StockValue::new(5, 0, 1)
            .limit(3)
            .buyers(&[(b"u", 1)])
            .entries(&[sold(b"o", 1, 1)]),
    );
    add_stock(
        "a buyer index with no buyer table",
        StockValue::new(5, 0, 1)
            .limit(3)
            .entries(&[sold(b"o", 1, 0)]),
    );
    add_stock(
        "a buyer index of 2^32",
        StockValue::new(5, 0, 1)
            .buyers(&[(b"u", 1)])
            .entries(&[sold(b"o", 1, 1 << 32)]),
    );
    add_stock(
        "a buyer index of 2^64-1",
        StockValue::new(5, 0, 1)
            .buyers(&[(b"u", 1)])
            .entries(&[sold(b"o", 1, u64::MAX)]),
    );
    add_stock(
        "a buyer holding more than its entries",
        StockValue::new(5, 0, 1)
            .limit(3)
            .buyers(&[(b"u", 2)])
            .entries(&[sold(b"o", 1, 0)]),
    );
    add_stock(
        "a buyer holding less than its entries",
        StockValue::new(5, 0, 2)
            .limit(3)
            .buyers(&[(b"u", 1)])
            .entries(&[sold(b"o", 1, 0), sold(b"p", 1, 0)]),
    );
    add_stock(
        "buyers' units swapped",
        StockValue::new(5, 0, 3)
            .limit(3)
            .buyers(&[(b"u", 1), (b"v", 2)])
            .entries(&[sold(b"o", 2, 0), sold(b"p", 1, 1)]),
    );
    add_stock(
        "a buyer holding a refunded entry's units",
        StockValue::new(5, 0, 0)
            .buyers(&[(b"u", 1)])
            .entries(&[Rec::new(b"o", 1, REFUNDED).buyer(0)]),
    );
    add_stock(
        "a buyer holding an expired entry's units",
        StockValue::new(5, 0, 0)
            .buyers(&[(b"u", 2)])
            .entries(&[Rec::new(b"o", 2, EXPIRED).deadline(now_ms).buyer(0)]),
    );
    add_stock(
        "a buyer holding units without any entry",
        StockValue::new(5, 0, 1).limit(3).buyers(&[(b"u", 1)]),
    );
    add_stock(
        "a buyer's entries past 2^63-1",
        StockValue::new(0, 0, i64::MAX)
            .buyers(&[(b"u", i64::MAX)])
            .entries(&[sold(b"o", i64::MAX, 0), sold(b"p", i64::MAX, 0)]),
    );
    add_stock(
        "a buyer holding -1 units",
        StockValue::new(5, 0, 0).buyers(&[(b"u", -1)]),
    );
    add_stock(
        "a buyer holding 2^63 units",
        StockValue::new(5, 0, 0).buyers(&[(b"u", i64::MIN)]),
    );
    add_stock(
        "a buyer id twice",
        StockValue::new(5, 0, 1)
            .buyers(&[(b"u", 1), (b"u", 0)])
            .entries(&[sold(b"o", 1, 0)]),
    );
    add_stock(
        "an empty buyer id",
        StockValue::new(5, 0, 1)
            .buyers(&[(b"", 1)])
            .entries(&[sold(b"o", 1, 0)]),
    );
    add_stock(
        "buyer count 2 with 1 buyer",
        StockValue::new(5, 0, 1)
            .buyers(&[(b"u", 1)])
            .buyer_count(2)
            .entries(&[sold(b"o", 1, 0)]),
    );
    add_stock(
        "buyer count 1 with 2 buyers",
        StockValue::new(5, 0, 2)
            .buyers(&[(b"u", 1), (b"v", 1)])
            .buyer_count(1)
            .entries(&[sold(b"o", 1, 0), sold(b"p", 1, 1)]),
    );
    add_stock(
        "buyer count 2^64-1",
        StockValue::new(5, 0, 1)
            .buyers(&[(b"u", 1)])
            .buyer_count(u64::MAX)
            .entries(&[sold(b"o", 1, 0)]),
    );
    add_stock(
        "buyer count 1 and no buyer blob",
        StockValue::new(5, 0, 0).buyer_count(1),
    );
    // A buyer record with flags (a state, events, the buyer bit): the table holds plain
    // records only.
    for (flags, name) in [(3u8, "a state"), (0x08, "events"), (0x20, "a buyer")] {
        let good = buyers(
            StockValue::new(5, 0, 1)
                .buyers(&[(b"u", 1)])
                .entries(&[sold(b"o", 1, 0)]),
        );
        // The buyer blob is the only string holding "\x01\x01\x00u": its flags byte is 0.
        let at = good
            .windows(4)
            .position(|w| w == [1, 1, 0, b'u'])
            .expect("the buyer record")
            + 2;
        let mut body = good.clone();
        body[at] = flags;
        cases.push((
            format!("a buyer record with {name} in its flags"),
            stock.with_body(body).seal(),
        ));
    }
    for sanitize in ["no", "yes"] {
        let has_setting = set_sanitize_dump_payload(&mut t.con, sanitize);
        let setting = if has_setting {
            format!("sanitize-dump-payload {sanitize}")
        } else {
            "no sanitize-dump-payload setting".to_string()
        };
        for (what, payload) in &cases {
            let what = format!("{what} ({setting})");
            assert!(!t.attempt(payload, &what), "{what}: accepted");
        }
        if !has_setting {
            // Valkey 9.1: the server validates one way only, just done.
            break;
        }
    }
    t.server.assert_alive();
    assert!(
        t.server.log().contains("fence: refused to"),
        "refusals are logged"
    );
}

#[test]
fn payloads_within_the_contract_are_accepted() {
    let mut t = Target::start();
    let (lock, stock) = (t.lock.clone(), t.stock.clone());
    let now = now_us() as u64;
    let hours_23 = 23 * 3600 * 1_000_000u64;
    let before = last_token(&mut t.con) as u64;

    // A token 23 hours ahead is a token FENCE would accept: restored, and never issued again.
    let ahead = now + hours_23;
    okay(restore(
        &mut t.con,
        "ahead",
        0,
        &lock.with_body(lock_body(&lock, ahead, b"w")).seal(),
        &[],
    ));
    assert_eq!(
        lock_status(&mut t.con, "ahead").map(|s| s.1),
        Some(ahead as i64)
    );
    let next = int(call(&mut t.con, &["LOCK.ACQUIRE", "next", "w", "1000"]));
    assert!(next as u64 > ahead && before < ahead);

    // A refused payload whose token is ahead of the clock leaves it there: the lock loader
    // accepts the value, then Redis refuses the missing EOF marker and frees it.
    let clock = last_token(&mut t.con) as u64;
    t.digest = debug_digest(&mut t.con);
    let mut body = lock_body(&lock, clock + 1_000_000, b"w");
    *body.last_mut().expect("EOF") = 7;
    assert!(!t.attempt(
        &lock.with_body(body).seal(),
        "a bad EOF marker after a future token"
    ));
    assert_eq!(last_token(&mut t.con) as u64, clock);

    // The largest ledger quantity is a quantity: accepted; refunding it cannot overflow the
    // stock, and refunding it into an empty stock gives i64::MAX back.
    let max = i64::MAX;
    okay(restore(
        &mut t.con,
        "big",
        0,
        &stock
            .with_body(stock_body(&stock, 1, 0, max, 1, &[(b"o", max)]))
            .seal(),
        &[],
    ));
    assert_err(call(&mut t.con, &["STOCK.REFUND", "big", "o"]), OVERFLOW);
    assert_eq!(common::stock(&mut t.con, "big"), 1);
    assert_eq!(int(call(&mut t.con, &["STOCK.REQUEST", "big", "o"])), max);
    okay(restore(
        &mut t.con,
        "big0",
        0,
        &stock
            .with_body(stock_body(&stock, 0, 0, max, 1, &[(b"o", max)]))
            .seal(),
        &[],
    ));
    assert_eq!(int(call(&mut t.con, &["STOCK.REFUND", "big0", "o"])), max);
    assert_eq!(common::stock(&mut t.con, "big0"), max);

    // Encoding 5: the siblings of the crafted refusals that keep every invariant load, and the
    // limit works on them.
    let now_ms = now / 1000;
    let sold = |id: &'static [u8], q: i64, buyer: u64| Rec::new(id, q, DEDUCTED).buyer(buyer);
    okay(restore(
        &mut t.con,
        "one-buyer",
        0,
        &stock
            .with_body(
                StockValue::new(5, 0, 1)
                    .limit(3)
                    .buyers(&[(b"u", 1)])
                    .entries(&[sold(b"o", 1, 0)])
                    .body(&stock),
            )
            .seal(),
        &[],
    ));
    assert_eq!(int(call(&mut t.con, &["STOCK.BUYER", "one-buyer", "u"])), 1);
    assert_eq!(
        err(call(
            &mut t.con,
            &["STOCK.DEDUCT", "one-buyer", "3", "ID", "p", "BUYER", "u"]
        )),
        limit_reached("u", 1, 3)
    );
    assert_eq!(
        int(call(
            &mut t.con,
            &["STOCK.DEDUCT", "one-buyer", "2", "ID", "p", "BUYER", "u"]
        )),
        3
    );
    // The largest limit, buyers in every state (one with an id that is not UTF-8), a held
    // entry that announces its expiry: the units a buyer holds plus a deduction never wrap.
    let far = now_ms + 3_600_000;
    let odd: &[u8] = b"\xff\x00b";
    okay(restore(
        &mut t.con,
        "max-limit",
        0,
        &stock
            .with_body(
                StockValue::new(100, 0, 9)
                    .limit(i64::MAX as u64)
                    .buyers(&[(b"u", 6), (odd, 3)])
                    .entries(&[
                        sold(b"o", 3, 0),
                        Rec::new(b"p", 2, HELD).deadline(far).events().buyer(0),
                        Rec::new(b"q", 1, CONFIRMED).buyer(0),
                        Rec::new(b"r", 4, REFUNDED).buyer(1),
                        Rec::new(b"s", 5, EXPIRED).deadline(now_ms).buyer(1),
                        sold(b"t", 3, 1),
                        Rec::new(b"anon", 1, DEDUCTED),
                    ])
                    .body(&stock),
            )
            .seal(),
        &[],
    ));
    let Ok(Value::Array(info)) = call(&mut t.con, &["STOCK.INFO", "max-limit"]) else {
        panic!("STOCK.INFO max-limit");
    };
    let field = |name: &str| {
        info.chunks(2)
            .find(|p| text(&p[0]) == name)
            .map(|p| p[1].clone())
    };
    assert_eq!(field("limit"), Some(Value::Int(i64::MAX)));
    assert_eq!(field("buyers"), Some(Value::Int(2)));
    assert_eq!(field("held"), Some(Value::Int(1)));
    assert_eq!(int(call(&mut t.con, &["STOCK.BUYER", "max-limit", "u"])), 6);
    let odd_units: Value = redis::cmd("STOCK.BUYER")
        .arg("max-limit")
        .arg(odd)
        .query(&mut t.con)
        .expect("STOCK.BUYER of the odd buyer");
    assert_eq!(odd_units, Value::Int(3));
    assert_eq!(
        int(call(
            &mut t.con,
            &["STOCK.DEDUCT", "max-limit", "1", "ID", "x", "BUYER", "u"]
        )),
        99
    );
    assert_eq!(
        int(call(&mut t.con, &["STOCK.REFUND", "max-limit", "p"])),
        2
    );
    assert_eq!(int(call(&mut t.con, &["STOCK.BUYER", "max-limit", "u"])), 5);
}

/// A buyer's units and a deduction add up past 2^63-1 (a stock restocked past it over its
/// life): the deduction is refused with the overflow error, with a limit of 2^63-1 or without
/// a limit, and changes nothing; the stock stays one its own DUMP restores (each buyer's units
/// the sum of its entries, as every load checks). Before the fix, the sum saturated: the limit
/// let it through and the stock saved an RDB no server loaded.
#[test]
fn a_buyer_s_units_and_a_deduction_never_wrap_past_2_63() {
    let mut server = Server::start();
    let mut con = server.conn();
    let max = I64_MAX;
    for (key, limit) in [("limited", max), ("unlimited", "0")] {
        okay(call(&mut con, &["STOCK.SET", key, max, "LIMIT", limit]));
        int(call(
            &mut con,
            &["STOCK.DEDUCT", key, "5", "ID", "a", "BUYER", "u"],
        ));
        assert_eq!(int(call(&mut con, &["STOCK.ADD", key, "5"])), i64::MAX);
        assert_err(
            call(
                &mut con,
                &["STOCK.DEDUCT", key, max, "ID", "b", "BUYER", "u"],
            ),
            OVERFLOW,
        );
        assert_eq!(common::stock(&mut con, key), i64::MAX, "{key}");
        assert_eq!(int(call(&mut con, &["STOCK.BUYER", key, "u"])), 5, "{key}");
        nil(call(&mut con, &["STOCK.REQUEST", key, "b"]));
        // Up to 2^63-1 in all, the buyer may buy.
        let most = (i64::MAX - 5).to_string();
        assert_eq!(
            int(call(
                &mut con,
                &["STOCK.DEDUCT", key, &most, "ID", "c", "BUYER", "u"],
            )),
            5,
            "{key}"
        );
        assert_eq!(
            int(call(&mut con, &["STOCK.BUYER", key, "u"])),
            i64::MAX,
            "{key}"
        );
        let payload = dump(&mut con, key);
        let restored = restore(&mut con, &format!("{key}:copy"), 0, &payload, &[]);
        assert!(
            restored.is_ok(),
            "{key}: the stock's own DUMP is refused: {restored:?}"
        );
        assert_eq!(
            int(call(
                &mut con,
                &["STOCK.BUYER", &format!("{key}:copy"), "u"]
            )),
            i64::MAX
        );
    }
    server.assert_alive();
}

/// Every truncation of every real payload, then random flips, CRC fixed up each time.
#[test]
fn truncated_and_flipped_payloads_never_hurt_the_server() {
    let mut t = Target::start();
    let bases = [
        ("lock", t.lock.clone()),
        ("stock", t.stock.clone()),
        ("stock with a ledger", t.ledger.clone()),
        ("stock with buyers and a limit", t.buyers.clone()),
        // What the encoding-5 fixtures hold: buyers in every state, one with non-ASCII bytes,
        // entries without a buyer, an expire stream.
        (
            "encoding-5 stock with buyers",
            Payload::parse(include_bytes!("fixtures/encoding-5/buyers.dump")),
        ),
        // What older versions wrote (encoding 1 of both types).
        (
            "encoding-1 lock",
            Payload::parse(include_bytes!("fixtures/encoding-1/lock.dump")),
        ),
        (
            "encoding-1 stock",
            Payload::parse(include_bytes!("fixtures/encoding-1/stock.dump")),
        ),
    ];
    let mut accepted = 0;
    let mut refused = 0;
    for (name, base) in &bases {
        for len in 0..base.body.len() {
            let what = format!("{name} truncated to {len} of {} bytes", base.body.len());
            if t.attempt(&base.with_body(base.body[..len].to_vec()).seal(), &what) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    let truncations = accepted + refused;

    let flips: usize = std::env::var("FENCE_PAYLOAD_FLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("FENCE_PAYLOAD_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("payload flips: {flips}, seed {seed} (FENCE_PAYLOAD_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..flips {
        if i == flips / 2 {
            // The second half with sanitize-dump-payload on, where the server has the setting.
            set_sanitize_dump_payload(&mut t.con, "yes");
        }
        let (name, base) = &bases[rng.random_range(0..bases.len())];
        let mut body = base.body.clone();
        let n = rng.random_range(1..=3);
        let mut changed = Vec::new();
        for _ in 0..n {
            // The type byte stays a module value's most of the time.
            let at = rng.random_range(1..body.len());
            let bit: u8 = 1 << rng.random_range(0..8);
            let x = if rng.random_bool(0.5) {
                bit
            } else {
                rng.random_range(1..=255)
            };
            body[at] ^= x;
            changed.push(at);
        }
        let what = format!("{name} with bytes {changed:?} changed (case {i}, seed {seed})");
        if t.attempt(&base.with_body(body).seal(), &what) {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    t.server.assert_alive();
    println!(
        "payloads: {truncations} truncations and {flips} flipped payloads: {accepted} accepted \
         (each within the contract), {refused} refused (nothing changed); the server is up"
    );
    assert!(
        refused > truncations / 2,
        "most damaged payloads are refused"
    );
}

/// MIGRATE sends a DUMP payload to the target's RESTORE: a token the target would refuse from
/// a client is refused there too, and the key stays where it was.
#[test]
fn migrate_refuses_a_token_from_the_future_and_moves_the_rest() {
    let day = 24 * 3600 * 1_000_000i64;
    let far = now_us() + 2 * day;
    let far_text = far.to_string();
    // A server that loaded tokens two days ahead (an operator's file: loading always applies).
    let aof = resp_command(&["SELECT", "0"])
        + &resp_command(&["FENCE.LOCK", "far", "worker", &far_text, "0"])
        + &resp_command(&["FENCE.STOCK", "far-stock", "5", &far_text, "0", "RESET"]);
    let ahead = Server::start_with_files(
        &[("appendonly.aof", aof.as_bytes())],
        &["--appendonly", "yes"],
    );
    let normal = Server::start();
    let target = Server::start();
    let (mut a, mut n, mut d) = (ahead.conn(), normal.conn(), target.conn());
    let port = target.port().to_string();

    int(call(&mut n, &["LOCK.ACQUIRE", "near", "worker", "60000"]));
    okay(call(&mut n, &["STOCK.SET", "near-stock", "5"]));
    for key in ["near", "near-stock"] {
        okay(call(
            &mut n,
            &["MIGRATE", "127.0.0.1", &port, key, "0", "5000"],
        ));
        assert_eq!(exists(&mut d, key), 1, "{key} moved");
    }
    // A stock that never accepted a fence moves from the server that is ahead, too.
    okay(call(&mut a, &["STOCK.SET", "plain-stock", "5"]));
    okay(call(
        &mut a,
        &["MIGRATE", "127.0.0.1", &port, "plain-stock", "0", "5000"],
    ));
    assert_eq!(exists(&mut d, "plain-stock"), 1);

    let before = info_int(&mut d, "fence", "fence_last_token");
    for key in ["far", "far-stock"] {
        let e = err(call(
            &mut a,
            &["MIGRATE", "127.0.0.1", &port, key, "0", "5000"],
        ));
        assert!(e.contains("Bad data format"), "{key}: {e}");
        assert_eq!(exists(&mut a, key), 1, "{key} stays on the source");
        assert_eq!(exists(&mut d, key), 0, "{key} is not on the target");
    }
    assert_eq!(info_int(&mut d, "fence", "fence_last_token"), before);
    assert!(int(call(&mut d, &["LOCK.ACQUIRE", "x", "w", "1000"])) < far);
    assert!(
        target.log().contains("more than 24 hours ahead"),
        "the refusal is in the target's log"
    );
}
