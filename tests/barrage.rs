//! A live barrage: random argument vectors against a running server, pipelined over raw
//! connections (two RESP2, one RESP3) in parallel.
//!
//! Half the vectors are fully random (a module command name in any case, 0–8 arguments of
//! random bytes, huge and negative numbers, i64 bounds, empty strings, option words in any
//! case); half start from a well-formed call and are then bent (an argument replaced, added or
//! dropped), so that deductions, refunds, grants, waits and hand-offs really happen. In about
//! 0.1% of the vectors one argument is a string of up to 1 MB. `WAIT` never gets a value that
//! would block for more than 5 ms (0 and every other valid value become 1–5).
//!
//! Checks: every reply is a well-formed value or an error whose text starts with an uppercase
//! code word and a space; the connection stays in step (each batch ends with a PING answered
//! PONG); the server stays up; and its log shows no panic and no crash report.
//!
//! The barrage always runs all its vectors, however long that takes on a slow machine: how
//! many it managed per second is printed, never asserted. A server that stops answering
//! fails the test on a connection's 30 s read timeout.
//!
//! - `FENCE_BARRAGE_N`: vectors in all (default 100000).
//! - `FENCE_BARRAGE_SEED`: the seed (default: random, printed).

mod common;

use std::collections::BTreeMap;
use std::env;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const COMMANDS: &[&str] = &[
    "LOCK.ACQUIRE",
    "LOCK.RENEW",
    "LOCK.RELEASE",
    "LOCK.STATUS",
    "STOCK.SET",
    "STOCK.ADD",
    "STOCK.GET",
    "STOCK.DEDUCT",
    "STOCK.REFUND",
    "STOCK.REQUEST",
    "STOCK.INFO",
    "STOCK.CONFIRM",
    "STOCK.LIMIT",
    "STOCK.BUYER",
    "STOCK.CART",
    "STOCK.CART.REFUND",
    "STOCK.CART.CONFIRM",
    "FENCE.LOCK",
    "FENCE.STOCK",
    "FENCE.ENTRY",
    "FENCE.EXPIRESTREAM",
    "FENCE.LIMIT",
];

/// The handful of keys: locks, stocks, plain strings (integer, negative, text) and other types.
const KEYS: &[&str] = &[
    "lk:1", "lk:2", "sk:1", "sk:2", "str:int", "str:neg", "str:txt", "list", "hash",
];

const CONNECTIONS: usize = 3;
const BATCH: usize = 400;
/// The longest `WAIT` a client may ask for (a valid value up to it would block that long).
const MAX_WAIT_MS: i128 = 315_360_000_000;

// ---------------------------------------------------------------------------------------------
// RESP
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Reply {
    Simple(String),
    Error(Vec<u8>),
    Int(i64),
    Bulk,
    Nil,
    Aggregate(Vec<Reply>),
    Other,
}

fn encode(out: &mut Vec<u8>, args: &[Vec<u8>]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn line<R: BufRead + ?Sized>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.read_until(b'\n', &mut buf)?;
    if buf.len() < 2 || !buf.ends_with(b"\r\n") {
        return Err(bad(format!(
            "a reply line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&buf)
        )));
    }
    buf.truncate(buf.len() - 2);
    Ok(buf)
}

fn number(bytes: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            bad(format!(
                "not a number: {:?}",
                String::from_utf8_lossy(bytes)
            ))
        })
}

fn blob<R: BufRead + ?Sized>(r: &mut R, len: i64) -> io::Result<Vec<u8>> {
    let mut data = vec![0; usize::try_from(len).map_err(|_| bad(format!("length {len}")))? + 2];
    r.read_exact(&mut data)?;
    if !data.ends_with(b"\r\n") {
        return Err(bad("a bulk string not ended by CRLF".into()));
    }
    data.truncate(data.len() - 2);
    Ok(data)
}

/// Reads one RESP2 or RESP3 value.
fn read_reply<R: BufRead + ?Sized>(r: &mut R) -> io::Result<Reply> {
    let head = line(r)?;
    let (&kind, rest) = head
        .split_first()
        .ok_or_else(|| bad("an empty reply line".into()))?;
    fn items<R: BufRead + ?Sized>(r: &mut R, n: i64) -> io::Result<Vec<Reply>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(read_reply(r)?);
        }
        Ok(v)
    }
    Ok(match kind {
        b'+' => Reply::Simple(String::from_utf8_lossy(rest).into_owned()),
        b'-' => Reply::Error(rest.to_vec()),
        b':' => Reply::Int(number(rest)?),
        b'$' => match number(rest)? {
            -1 => Reply::Nil,
            n => {
                blob(r, n)?;
                Reply::Bulk
            }
        },
        b'*' | b'~' | b'>' => match number(rest)? {
            -1 => Reply::Nil,
            n => Reply::Aggregate(items(r, n)?),
        },
        b'%' | b'|' => {
            let n = number(rest)?;
            let v = items(r, 2 * n)?;
            if kind == b'|' {
                // An attribute comes before the real reply.
                return read_reply(r);
            }
            Reply::Aggregate(v)
        }
        b'_' => Reply::Nil,
        b'#' | b',' | b'(' => Reply::Other,
        b'=' => {
            blob(r, number(rest)?)?;
            Reply::Bulk
        }
        b'!' => Reply::Error(blob(r, number(rest)?)?),
        other => return Err(bad(format!("unknown reply type {:?}", char::from(other)))),
    })
}

/// An error reply is well formed when it starts with an uppercase code word and a space.
fn well_formed_error(text: &[u8]) -> bool {
    let code_len = text.iter().take_while(|b| b.is_ascii_uppercase()).count();
    code_len > 0 && text.get(code_len) == Some(&b' ') && text.len() > code_len + 1
}

// ---------------------------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------------------------

struct Gen {
    rng: StdRng,
    /// Tokens this connection was granted, for plausible FENCE values.
    tokens: Vec<i64>,
    big_strings: usize,
}

impl Gen {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn any_case(&mut self, word: &str) -> Vec<u8> {
        match self.rng.random_range(0..4) {
            0 => word.to_ascii_lowercase().into_bytes(),
            1 => word
                .bytes()
                .map(|b| {
                    if self.rng.random_bool(0.5) {
                        b.to_ascii_lowercase()
                    } else {
                        b
                    }
                })
                .collect(),
            _ => word.as_bytes().to_vec(),
        }
    }

    fn random_bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.rng.random_range(0..=max);
        (0..len).map(|_| self.rng.random()).collect()
    }

    fn key(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..100) {
            0..=4 => self.random_bytes(24),
            5..=6 => Vec::new(),
            _ => self.pick(KEYS).as_bytes().to_vec(),
        }
    }

    fn number(&mut self) -> Vec<u8> {
        let now = now_us();
        let token = self.tokens.last().copied().unwrap_or(now);
        let n: String = match self.rng.random_range(0..24) {
            0 => i64::MAX.to_string(),
            1 => i64::MIN.to_string(),
            2 => TWO_POW_63.to_string(),
            3 => "-9223372036854775809".to_string(),
            4 => u64::MAX.to_string(),
            5 => "0".to_string(),
            6 => self
                .pick(&[
                    "-0", "00", "+5", "1e3", " 5", "5 ", "0x10", "1.5", "--1", "٣",
                ])
                .to_string(),
            7 => (0..self.rng.random_range(20..60))
                .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
                .collect(),
            8 => self.rng.random_range(-5..0i64).to_string(),
            9 => self
                .pick(&["315360000000", "315360000001", "604800000", "604800001"])
                .to_string(),
            10 => (now + 25 * 3_600_000_000).to_string(),
            11 => (now + self.rng.random_range(-1_000_000..1_000_000)).to_string(),
            12..=14 => token.to_string(),
            15 => (token - 1).to_string(),
            16 => (token + 1).to_string(),
            _ => self.rng.random_range(1..=120i64).to_string(),
        };
        n.into_bytes()
    }

    fn arg(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0..=5 => self.number(),
            6..=8 => {
                let w = self.pick(&[
                    "ID", "FENCE", "WAIT", "KEEP", "RESET", "BUYER", "LIMIT", "HOLD", "EVENTS",
                ]);
                self.any_case(w)
            }
            9..=10 => self.pick(&["o1", "o2", "o3", "order-1", "order-2"]).into(),
            11..=13 => self.random_bytes(40),
            14 => Vec::new(),
            15 => vec![b'x'; self.rng.random_range(510..=514)],
            16 => self.key(),
            _ => {
                let w = self.pick(&["a", "\r\n", "\0", "'", "%s%n", "ÿ", " ", "*1\r\n$4\r\nPING"]);
                w.as_bytes().to_vec()
            }
        }
    }

    /// A well-formed call of `cmd`, with plausible values.
    fn shaped(&mut self, cmd: &str) -> Vec<Vec<u8>> {
        let lock = self
            .pick(&["lk:1", "lk:2", "lk:3", "lk:4"])
            .as_bytes()
            .to_vec();
        let sku = self.pick(&["sk:1", "sk:2", "str:int"]).as_bytes().to_vec();
        let owner = self.pick(&["o1", "o2", "o3"]).as_bytes().to_vec();
        let buyer = self.pick(&["b1", "b2", "b3"]).as_bytes().to_vec();
        let order = format!("order-{}", self.rng.random_range(0..40)).into_bytes();
        let ttl = match self.rng.random_range(0..20) {
            0 => b"60000".to_vec(),
            _ => self.rng.random_range(1..=100u32).to_string().into_bytes(),
        };
        let q = self.rng.random_range(1..=5u32).to_string().into_bytes();
        let mut v: Vec<Vec<u8>> = match cmd {
            "LOCK.ACQUIRE" => {
                let mut v = vec![lock, owner, ttl];
                if self.rng.random_bool(0.5) {
                    v.push(self.any_case("WAIT"));
                    v.push(self.rng.random_range(1..=5u32).to_string().into_bytes());
                }
                v
            }
            "LOCK.RENEW" => vec![lock, owner, ttl],
            "LOCK.RELEASE" => vec![lock, owner],
            "LOCK.STATUS" => vec![lock],
            "STOCK.SET" => {
                let mut v = vec![sku, self.rng.random_range(0..=200u32).to_string().into()];
                if self.rng.random_bool(0.2) {
                    v.push(self.any_case("LIMIT"));
                    v.push(self.rng.random_range(0..=3u32).to_string().into_bytes());
                }
                v
            }
            // Mostly 0: a limit refuses every deduction without BUYER.
            "STOCK.LIMIT" => {
                let n = if self.rng.random_bool(0.7) {
                    0
                } else {
                    self.rng.random_range(1..=3u32)
                };
                vec![sku, n.to_string().into_bytes()]
            }
            "STOCK.BUYER" => vec![sku, buyer.clone()],
            "FENCE.LIMIT" => vec![sku, self.number()],
            "STOCK.ADD" => vec![sku, self.rng.random_range(1..=50u32).to_string().into()],
            "STOCK.GET" | "STOCK.INFO" => vec![sku],
            "STOCK.DEDUCT" => {
                let mut v = vec![sku, q];
                let mut opts = Vec::new();
                if self.rng.random_bool(0.6) {
                    opts.push(vec![self.any_case("ID"), order]);
                }
                if self.rng.random_bool(0.4) {
                    let t = self.tokens.last().copied().unwrap_or_else(now_us);
                    opts.push(vec![self.any_case("FENCE"), t.to_string().into_bytes()]);
                }
                if self.rng.random_bool(0.4) {
                    opts.push(vec![self.any_case("BUYER"), buyer]);
                }
                if self.rng.random_bool(0.5) {
                    opts.reverse();
                }
                v.extend(opts.into_iter().flatten());
                v
            }
            "STOCK.REFUND" | "STOCK.REQUEST" => vec![sku, order],
            "STOCK.CART" => {
                let keys = self.cart_keys();
                let mut v = vec![keys.len().to_string().into_bytes()];
                for key in keys {
                    v.push(key);
                    v.push(self.rng.random_range(1..=5u32).to_string().into_bytes());
                }
                let mut opts = vec![vec![self.any_case("ID"), order]];
                if self.rng.random_bool(0.4) {
                    let t = self.tokens.last().copied().unwrap_or_else(now_us);
                    opts.push(vec![self.any_case("FENCE"), t.to_string().into_bytes()]);
                }
                if self.rng.random_bool(0.4) {
                    opts.push(vec![self.any_case("BUYER"), buyer]);
                }
                if self.rng.random_bool(0.3) {
                    let ms = if self.rng.random_bool(0.5) {
                        self.rng.random_range(1..=50u32)
                    } else {
                        60_000
                    };
                    opts.push(vec![self.any_case("HOLD"), ms.to_string().into_bytes()]);
                }
                if self.rng.random_bool(0.2) {
                    opts.push(vec![
                        self.any_case("EVENTS"),
                        b"ev:cart".to_vec(),
                        self.any_case("MAXLEN"),
                        b"~".to_vec(),
                        b"50".to_vec(),
                    ]);
                }
                if self.rng.random_bool(0.5) {
                    opts.reverse();
                }
                v.extend(opts.into_iter().flatten());
                v
            }
            "STOCK.CART.REFUND" | "STOCK.CART.CONFIRM" => {
                let keys = self.cart_keys();
                let mut v = vec![keys.len().to_string().into_bytes()];
                v.extend(keys);
                v.push(order);
                v
            }
            "FENCE.LOCK" => vec![lock, owner, self.number(), self.number()],
            _ => vec![
                sku,
                self.number(),
                self.number(),
                self.number(),
                b"KEEP".to_vec(),
            ],
        };
        // Bend it a little, now and then.
        match self.rng.random_range(0..10) {
            0 if !v.is_empty() => {
                let i = self.rng.random_range(0..v.len());
                v[i] = self.arg();
            }
            1 => v.push(self.arg()),
            2 if !v.is_empty() => {
                v.pop();
            }
            _ => {}
        }
        v
    }

    /// The keys of a cart: 1 to 3 distinct stocks mostly, now and then a plain string, a key
    /// of another type or a key named twice.
    fn cart_keys(&mut self) -> Vec<Vec<u8>> {
        let n = self.rng.random_range(1..=3usize);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for _ in 0..n {
            let key = match self.rng.random_range(0..20) {
                0 => self.key(),
                1 => keys.first().cloned().unwrap_or_else(|| self.key()),
                _ => self.pick(&["sk:1", "sk:2", "sk:3"]).as_bytes().to_vec(),
            };
            if self.rng.random_range(0..10) == 0 || !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// One argument vector, command name first.
    fn vector(&mut self) -> Vec<Vec<u8>> {
        let cmd = self.pick(COMMANDS);
        let mut args = if self.rng.random_bool(0.5) {
            self.shaped(cmd)
        } else {
            let arity = self.rng.random_range(0..=8);
            // A cart's first word is numkeys: a small count now and then, garbage otherwise.
            let counted = cmd.starts_with("STOCK.CART") && self.rng.random_bool(0.5);
            (0..arity)
                .map(|i| match i {
                    0 if counted => self.rng.random_range(0..=4u32).to_string().into_bytes(),
                    0 => self.key(),
                    _ => self.arg(),
                })
                .collect()
        };
        if self.rng.random_range(0..1000) == 0 && args.len() > 1 {
            let i = self.rng.random_range(1..args.len());
            let len = self.rng.random_range(1..=1 << 20);
            args[i] = if self.rng.random_bool(0.5) {
                vec![b'7'; len]
            } else {
                (0..len).map(|_| self.rng.random()).collect()
            };
            self.big_strings += 1;
        }
        let mut v = vec![self.any_case(cmd)];
        v.extend(args);
        cap_waits(&mut v, &mut self.rng);
        v
    }
}

/// A value after a `WAIT` word that any integer parser could read as 0..=MAX_WAIT_MS (which
/// would block for that long, or forever) becomes 1–5.
fn cap_waits(v: &mut [Vec<u8>], rng: &mut StdRng) {
    for i in 0..v.len().saturating_sub(1) {
        if !v[i].eq_ignore_ascii_case(b"WAIT") {
            continue;
        }
        let value = &v[i + 1];
        let numeric = !value.is_empty()
            && value
                .iter()
                .all(|b| b.is_ascii_digit() || *b == b'+' || *b == b'-' || *b == b' ');
        let lenient = std::str::from_utf8(value)
            .ok()
            .map(|s| s.trim().trim_start_matches('+'))
            .and_then(|s| s.parse::<i128>().ok());
        let risky = match lenient {
            Some(n) => (0..=MAX_WAIT_MS).contains(&n),
            // Digits and signs that no parser reads as an integer: harmless, except very long
            // digit strings, which are out of range anyway.
            None => false,
        };
        if numeric && risky {
            v[i + 1] = rng.random_range(1..=5u32).to_string().into_bytes();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The barrage
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    vectors: usize,
    errors: BTreeMap<String, usize>,
    values: BTreeMap<&'static str, usize>,
    slowest_batch: Duration,
    big_strings: usize,
}

fn connect(port: u16, resp3: bool) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::with_capacity(1 << 16, stream.try_clone().unwrap());
    let mut w = stream.try_clone().unwrap();
    if resp3 {
        let mut out = Vec::new();
        encode(&mut out, &[b"HELLO".to_vec(), b"3".to_vec()]);
        w.write_all(&out).unwrap();
        match read_reply(&mut reader).expect("HELLO 3") {
            Reply::Aggregate(_) => {}
            other => panic!("HELLO 3 replied {other:?}"),
        }
    }
    (w, reader)
}

/// (Re)creates the keys of other types, so WRONGTYPE and plain-string paths stay reachable.
fn seed_keys(port: u16) {
    let (mut w, mut r) = connect(port, false);
    let setup: &[&[&str]] = &[
        &["SET", "str:int", "100"],
        &["SET", "str:neg", "-5"],
        &["SET", "str:txt", "hello"],
        &["DEL", "list", "hash"],
        &["RPUSH", "list", "a", "b"],
        &["HSET", "hash", "f", "v"],
    ];
    let mut out = Vec::new();
    for c in setup {
        let args: Vec<Vec<u8>> = c.iter().map(|s| s.as_bytes().to_vec()).collect();
        encode(&mut out, &args);
    }
    w.write_all(&out).unwrap();
    for c in setup {
        if let Reply::Error(e) = read_reply(&mut r).expect("setup reply") {
            panic!("{c:?}: {}", String::from_utf8_lossy(&e));
        }
    }
}

fn describe(v: &[Vec<u8>]) -> String {
    v.iter()
        .map(|a| {
            if a.len() > 80 {
                format!("<{} bytes>", a.len())
            } else {
                format!("{:?}", String::from_utf8_lossy(a))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_connection(
    port: u16,
    resp3: bool,
    seed: u64,
    quota: &AtomicUsize,
    stop: &AtomicBool,
) -> Tally {
    let (mut w, mut r) = connect(port, resp3);
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(seed),
        tokens: Vec::new(),
        big_strings: 0,
    };
    let mut tally = Tally::default();
    let ping = vec![b"PING".to_vec()];
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let n = match quota.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            (left > 0).then(|| left.saturating_sub(BATCH))
        }) {
            Ok(left) => left.min(BATCH),
            Err(_) => break,
        };
        let batch: Vec<Vec<Vec<u8>>> = (0..n).map(|_| gen.vector()).collect();
        let mut out = Vec::new();
        for v in &batch {
            encode(&mut out, v);
        }
        encode(&mut out, &ping);
        let started = Instant::now();
        if let Err(e) = w.write_all(&out) {
            stop.store(true, Ordering::Relaxed);
            panic!("writing a batch failed (server gone?): {e}");
        }
        for v in &batch {
            let reply = match read_reply(&mut r) {
                Ok(reply) => reply,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    panic!("no well-formed reply to {}: {e}", describe(v));
                }
            };
            let kind = match reply {
                Reply::Error(text) => {
                    if !well_formed_error(&text) {
                        stop.store(true, Ordering::Relaxed);
                        panic!(
                            "a malformed error {:?} for {}",
                            String::from_utf8_lossy(&text),
                            describe(v)
                        );
                    }
                    let code = text.split(|b| *b == b' ').next().unwrap_or_default();
                    *tally
                        .errors
                        .entry(String::from_utf8_lossy(code).into_owned())
                        .or_default() += 1;
                    continue;
                }
                Reply::Simple(_) => "status",
                Reply::Int(_) => "integer",
                Reply::Bulk => "bulk",
                Reply::Nil => "nil",
                Reply::Aggregate(items) => {
                    // Errors nested in an array or map must be well formed too.
                    if let Some(Reply::Error(text)) = items
                        .iter()
                        .find(|i| matches!(i, Reply::Error(t) if !well_formed_error(t)))
                    {
                        stop.store(true, Ordering::Relaxed);
                        panic!(
                            "a malformed nested error {:?} for {}",
                            String::from_utf8_lossy(text),
                            describe(v)
                        );
                    }
                    "array/map"
                }
                Reply::Other => "other",
            };
            *tally.values.entry(kind).or_default() += 1;
        }
        match read_reply(&mut r) {
            Ok(Reply::Simple(s)) if s == "PONG" => {}
            other => {
                stop.store(true, Ordering::Relaxed);
                panic!("the batch's closing PING got {other:?}: replies out of step");
            }
        }
        tally.slowest_batch = tally.slowest_batch.max(started.elapsed());
        tally.vectors += n;
        // Learn a token now and then, for plausible FENCE values.
        if gen.rng.random_range(0..4) == 0 {
            let mut out = Vec::new();
            let owner = format!("barrage-{seed}");
            encode(
                &mut out,
                &[
                    b"LOCK.ACQUIRE".to_vec(),
                    b"lk:tokens".to_vec(),
                    owner.into_bytes(),
                    b"1".to_vec(),
                ],
            );
            w.write_all(&out).unwrap();
            if let Reply::Int(t) = read_reply(&mut r).expect("a token") {
                gen.tokens.push(t);
            }
        }
    }
    tally.big_strings = gen.big_strings;
    tally
}

#[test]
fn random_argument_vectors_never_hurt_the_server() {
    let n: usize = env::var("FENCE_BARRAGE_N")
        .ok()
        .map(|s| s.parse().expect("FENCE_BARRAGE_N must be an integer"))
        .unwrap_or(100_000);
    let seed: u64 = match env::var("FENCE_BARRAGE_SEED") {
        Ok(s) => s.parse().expect("FENCE_BARRAGE_SEED must be an integer"),
        Err(_) => rand::rng().random(),
    };
    println!("barrage: {n} vectors, seed {seed} (FENCE_BARRAGE_SEED)");
    let mut server = Server::start();
    seed_keys(server.port());
    let started = Instant::now();
    let quota = AtomicUsize::new(n);
    let stop = AtomicBool::new(false);
    let tallies = Mutex::new(Vec::new());
    let port = server.port();
    thread::scope(|s| {
        for c in 0..CONNECTIONS {
            let (quota, stop, tallies) = (&quota, &stop, &tallies);
            s.spawn(move || {
                let t = run_connection(
                    port,
                    c == CONNECTIONS - 1,
                    seed.wrapping_add(c as u64),
                    quota,
                    stop,
                );
                tallies.lock().unwrap().push(t);
            });
        }
        // Now and then the typed keys come back (STOCK.SET and the like overwrite nothing of
        // another type, but DEL-like paths and expiry change them).
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) && quota.load(Ordering::Relaxed) > 0 {
                seed_keys(port);
                thread::sleep(Duration::from_millis(500));
            }
        });
    });
    let elapsed = started.elapsed();
    let mut total = Tally::default();
    for t in tallies.into_inner().unwrap() {
        total.vectors += t.vectors;
        total.big_strings += t.big_strings;
        total.slowest_batch = total.slowest_batch.max(t.slowest_batch);
        for (k, v) in t.errors {
            *total.errors.entry(k).or_default() += v;
        }
        for (k, v) in t.values {
            *total.values.entry(k).or_default() += v;
        }
    }
    server.assert_alive();
    let mut con = server.conn();
    let fence = info(&mut con, "fence");
    let grants = info_value(&fence, "fence_grants").unwrap_or_default();
    let deductions = info_value(&fence, "fence_deductions").unwrap_or_default();
    let waits = info_value(&fence, "fence_waits_started").unwrap_or_default();
    println!(
        "barrage: {} vectors in {:.1} s ({:.0}/s, slowest batch of {BATCH}: {} ms), {} with a \
         string of up to 1 MB; replies: values {:?}, errors {:?}; server: {grants} grants, \
         {deductions} deductions, {waits} waits",
        total.vectors,
        elapsed.as_secs_f64(),
        total.vectors as f64 / elapsed.as_secs_f64(),
        total.slowest_batch.as_millis(),
        total.big_strings,
        total.values,
        total.errors,
    );
    let log = server.log().to_ascii_lowercase();
    for sign in ["panic", "bug report", "crashed by signal", "assertion"] {
        assert!(
            !log.contains(sign),
            "the server log mentions {sign:?}:\n{}",
            tail(&server.log())
        );
    }
    assert_eq!(total.vectors, n, "vectors sent and answered");
    for kind in [code::ERR, code::WRONGTYPE] {
        assert!(total.errors.contains_key(kind), "no {kind} error at all");
    }
    assert!(total.values.get("integer").copied().unwrap_or(0) > 0);
}
