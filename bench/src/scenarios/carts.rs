//! The "Carts" section (issue 19): what a 3-item `STOCK.CART` costs the server per call,
//! against the Lua script people write today for "all three items or none" (check every
//! request id and every stock first, then deduct them all), and, for reference, the same three
//! items as three separate `STOCK.DEDUCT … ID` calls (which are not all or nothing).
//!
//! The same number of carts of each contender, round by round on one server, from 50
//! connections at pipeline 16 (16 carts in flight per connection: 16 commands, or 48 for the
//! three-deduction reference), every cart with its own 36-byte request id and 1 unit of each
//! of three stocks that never run short, so every call succeeds. The server's
//! `used_cpu_user + used_cpu_sys` (`INFO cpu`) over the calls, per cart, is the measure (as in
//! the Purchase limits section: throughput on a shared 2-core machine swings by 10-20%).
//!
//! The load generator speaks RESP itself (each connection a thread writing a batch, then
//! reading its replies), so that the client is not what limits the rate.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{self, cpu_seconds, median, progress, Res, Server};
use crate::report::{count, head, row, Align};

pub struct Options {
    /// Carts of each contender a round.
    pub calls: usize,
    pub rounds: usize,
}

/// The three stocks of a cart, one hash tag (a cart's keys share a slot on a cluster), and
/// the Lua layouts' hashes of request ids: one beside each stock, or one for the sale.
const STOCKS: [&str; 3] = ["{cart}:phone", "{cart}:case", "{cart}:charger"];
const IDS: [&str; 3] = ["{cart}:phone:ids", "{cart}:case:ids", "{cart}:charger:ids"];
const ONE_IDS: &str = "{cart}:ids";
/// Each stock's units: never short.
const UNITS: i64 = 1_000_000_000_000;
const CONNECTIONS: usize = 50;
/// Carts per batch of a connection.
const PIPELINE: usize = 16;
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// What people write today for a cart, one `EVALSHA` per order, with a hash of request ids
/// beside each stock (id → quantity, so that one item can be refunded as with the module's
/// ledgers). `KEYS`: the n stocks, then their n id hashes; `ARGV`: the n quantities, then the
/// request id. Every id hash has the id: a replay, the stocks answered. Some only: an error.
/// Then every stock checked (missing or short: an error naming the item, nothing changed),
/// then every `HSET` and `DECRBY`; the reply is what remains of each.
const LUA_CART: &str = "local n = #KEYS / 2 \
     local id = ARGV[n + 1] \
     local seen = 0 \
     for i = 1, n do \
       if redis.call('HEXISTS', KEYS[n + i], id) == 1 then seen = seen + 1 end \
     end \
     if seen == n then \
       local out = {} \
       for i = 1, n do out[i] = tonumber(redis.call('GET', KEYS[i])) end \
       return out \
     end \
     if seen > 0 then \
       return redis.error_reply('ERR request ' .. id .. ' is in some of the cart stocks only') \
     end \
     for i = 1, n do \
       local s = tonumber(redis.call('GET', KEYS[i])) \
       if not s then return redis.error_reply('NOKEY ' .. i .. ' ' .. KEYS[i]) end \
       if s < tonumber(ARGV[i]) then \
         return redis.error_reply('SOLDOUT ' .. i .. ' ' .. KEYS[i]) \
       end \
     end \
     local out = {} \
     for i = 1, n do \
       redis.call('HSET', KEYS[n + i], id, ARGV[i]) \
       out[i] = redis.call('DECRBY', KEYS[i], ARGV[i]) \
     end \
     return out";

/// The same with one hash of request ids for the sale (id → the quantities, comma-separated):
/// one `HEXISTS` and one `HSET` a cart, but no item can be refunded alone. `KEYS`: the n
/// stocks, then the id hash; `ARGV` as above.
const LUA_CART_ONE_HASH: &str = "local n = #KEYS - 1 \
     local id = ARGV[n + 1] \
     if redis.call('HEXISTS', KEYS[n + 1], id) == 1 then \
       local out = {} \
       for i = 1, n do out[i] = tonumber(redis.call('GET', KEYS[i])) end \
       return out \
     end \
     for i = 1, n do \
       local s = tonumber(redis.call('GET', KEYS[i])) \
       if not s then return redis.error_reply('NOKEY ' .. i .. ' ' .. KEYS[i]) end \
       if s < tonumber(ARGV[i]) then \
         return redis.error_reply('SOLDOUT ' .. i .. ' ' .. KEYS[i]) \
       end \
     end \
     redis.call('HSET', KEYS[n + 1], id, table.concat(ARGV, ',', 1, n)) \
     local out = {} \
     for i = 1, n do out[i] = redis.call('DECRBY', KEYS[i], ARGV[i]) end \
     return out";

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    /// `STOCK.CART 3 a 1 b 1 c 1 ID id`.
    Cart,
    /// `EVALSHA` of `LUA_CART`: an id hash per stock.
    LuaCart,
    /// `EVALSHA` of `LUA_CART_ONE_HASH`: one id hash.
    LuaCartOneHash,
    /// `STOCK.DEDUCT a 1 ID id`, `STOCK.DEDUCT b 1 ID id`, `STOCK.DEDUCT c 1 ID id`.
    Deducts,
}

const CONTENDERS: [Contender; 4] = [
    Contender::Cart,
    Contender::LuaCart,
    Contender::LuaCartOneHash,
    Contender::Deducts,
];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Cart => "`STOCK.CART 3 … ID` (all or nothing)",
            Contender::LuaCart => "Lua check-then-deduct, an ids hash per stock",
            Contender::LuaCartOneHash => "Lua check-then-deduct, one ids hash",
            Contender::Deducts => "3 × `STOCK.DEDUCT … ID` (not all or nothing)",
        }
    }

    /// Commands a cart takes.
    fn commands(self) -> usize {
        match self {
            Contender::Deducts => STOCKS.len(),
            _ => 1,
        }
    }

    /// The reply each command gives: an array of what remains (`n` integers) or an integer.
    fn reply_items(self) -> Option<usize> {
        match self {
            Contender::Deducts => None,
            _ => Some(STOCKS.len()),
        }
    }
}

/// A 36-byte request id, as a UUID order id would be.
fn id(i: usize) -> String {
    format!("7f3a9c2e-4b1d-4e8f-9a6b-{i:012}")
}

/// Appends one command in RESP.
fn encode(buf: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(buf, "${}\r\n", a.len());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Cart `i` of `contender` in RESP (one command, or three).
fn encode_cart(buf: &mut Vec<u8>, contender: Contender, i: usize, sha: &[u8]) {
    let id = id(i);
    let id = id.as_bytes();
    let [a, b, c] = STOCKS.map(str::as_bytes);
    match contender {
        Contender::Cart => encode(
            buf,
            &[b"STOCK.CART", b"3", a, b"1", b, b"1", c, b"1", b"ID", id],
        ),
        Contender::LuaCart => {
            let [ia, ib, ic] = IDS.map(str::as_bytes);
            encode(
                buf,
                &[
                    b"EVALSHA", sha, b"6", a, b, c, ia, ib, ic, b"1", b"1", b"1", id,
                ],
            )
        }
        Contender::LuaCartOneHash => encode(
            buf,
            &[
                b"EVALSHA",
                sha,
                b"4",
                a,
                b,
                c,
                ONE_IDS.as_bytes(),
                b"1",
                b"1",
                b"1",
                id,
            ],
        ),
        Contender::Deducts => {
            for key in [a, b, c] {
                encode(buf, &[b"STOCK.DEDUCT", key, b"1", b"ID", id]);
            }
        }
    }
}

/// Reads one reply: an integer, or (`items`) an array of that many integers; anything else
/// (an error, a nil) is an error naming the call.
fn read_reply(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    items: Option<usize>,
    what: &dyn Fn() -> String,
) -> Res<()> {
    let mut next = |line: &mut Vec<u8>| -> Res<()> {
        line.clear();
        if reader.read_until(b'\n', line)? == 0 {
            return Err("the server closed the connection".into());
        }
        Ok(())
    };
    let bad = |line: &[u8], expected: &str| -> Res<()> {
        Err(format!(
            "{}: expected {expected}, got {:?}",
            what(),
            String::from_utf8_lossy(line).trim_end()
        )
        .into())
    };
    next(line)?;
    if let Some(n) = items {
        if line.as_slice() != format!("*{n}\r\n").as_bytes() {
            return bad(line, &format!("an array of {n}"));
        }
        for _ in 0..n {
            next(line)?;
            if line.first() != Some(&b':') {
                return bad(line, "an integer in the array");
            }
        }
    } else if line.first() != Some(&b':') {
        return bad(line, "an integer");
    }
    Ok(())
}

/// One connection's share of `calls` carts: batches of `PIPELINE` carts taken from `next`,
/// each written at once, then its replies read; every reply must be a success.
fn drive(port: u16, contender: Contender, calls: usize, sha: &[u8], next: &AtomicUsize) -> Res<()> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = Vec::with_capacity(PIPELINE * 3 * 200);
    let mut line = Vec::with_capacity(256);
    loop {
        let start = next.fetch_add(PIPELINE, Ordering::Relaxed);
        if start >= calls {
            return Ok(());
        }
        let end = (start + PIPELINE).min(calls);
        buf.clear();
        for i in start..end {
            encode_cart(&mut buf, contender, i, sha);
        }
        writer.write_all(&buf)?;
        for i in start..end {
            for _ in 0..contender.commands() {
                let what = || format!("{}, cart {i}", contender.name());
                read_reply(&mut reader, &mut line, contender.reply_items(), &what)?;
            }
        }
    }
}

/// A fresh keyspace for `contender`: the three stocks (module stocks, or plain strings for
/// the Lua scripts).
fn setup(con: &mut redis::Connection, contender: Contender) -> Res<()> {
    redis::cmd("FLUSHALL").query::<()>(con)?;
    for key in STOCKS {
        match contender {
            Contender::Cart | Contender::Deducts => redis::cmd("STOCK.SET")
                .arg(key)
                .arg(UNITS)
                .query::<()>(con)?,
            Contender::LuaCart | Contender::LuaCartOneHash => {
                redis::cmd("SET").arg(key).arg(UNITS).query::<()>(con)?
            }
        }
    }
    Ok(())
}

/// Each stock gave one unit a cart and records every cart's request id.
fn check(con: &mut redis::Connection, contender: Contender, calls: usize) -> Res<()> {
    let expected = UNITS - calls as i64;
    for (k, key) in STOCKS.iter().enumerate() {
        let (left, ids): (i64, i64) = match contender {
            Contender::Cart | Contender::Deducts => {
                let left = redis::cmd("STOCK.GET").arg(key).query(con)?;
                let info: Vec<(String, redis::Value)> =
                    redis::cmd("STOCK.INFO").arg(key).query(con)?;
                let requests = info
                    .iter()
                    .find_map(|(f, v)| match v {
                        redis::Value::Int(n) if f == "requests" => Some(*n),
                        _ => None,
                    })
                    .ok_or("STOCK.INFO has no requests")?;
                (left, requests)
            }
            Contender::LuaCart => (
                redis::cmd("GET").arg(key).query(con)?,
                redis::cmd("HLEN").arg(IDS[k]).query(con)?,
            ),
            Contender::LuaCartOneHash => (
                redis::cmd("GET").arg(key).query(con)?,
                redis::cmd("HLEN").arg(ONE_IDS).query(con)?,
            ),
        };
        if left != expected || ids != calls as i64 {
            return Err(format!(
                "{}: {key} has {left} units and {ids} request ids after {calls} carts of 1 \
                 from {UNITS}",
                contender.name()
            )
            .into());
        }
    }
    Ok(())
}

/// What one run of a contender cost: server CPU µs per cart, carts per second.
struct Run {
    cpu_us: f64,
    rps: f64,
}

fn run(
    server: &Server,
    con: &mut redis::Connection,
    contender: Contender,
    calls: usize,
    sha: &str,
) -> Res<Run> {
    setup(con, contender)?;
    let next = AtomicUsize::new(0);
    let before = cpu_seconds(con)?;
    let t0 = Instant::now();
    thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|_| s.spawn(|| drive(server.port(), contender, calls, sha.as_bytes(), &next)))
            .collect();
        for h in handles {
            h.join().map_err(|_| "a load thread panicked")??;
        }
        Ok(())
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let after = cpu_seconds(con)?;
    check(con, contender, calls)?;
    Ok(Run {
        cpu_us: (after - before) * 1e6 / calls as f64,
        rps: calls as f64 / wall,
    })
}

/// The median of the per-round ratios of contender `a`'s CPU per cart to `b`'s.
fn ratio(cpu: &[Vec<f64>], a: usize, b: usize) -> f64 {
    median(cpu[a].iter().zip(&cpu[b]).map(|(x, y)| x / y).collect())
}

/// Checks the contenders agree on a cart's replies before anything is measured: a cart, its
/// replay (nothing deducted), and a refusal when one item is short (nothing changed).
fn agree(con: &mut redis::Connection, shas: &[(Contender, String)]) -> Res<()> {
    let sha = |c: Contender| {
        shas.iter()
            .find(|(x, _)| *x == c)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    for contender in [
        Contender::Cart,
        Contender::LuaCart,
        Contender::LuaCartOneHash,
    ] {
        setup(con, contender)?;
        let call = |con: &mut redis::Connection, qty: [i64; 3], id: &str| {
            let mut cmd = match contender {
                Contender::Cart => {
                    let mut c = redis::cmd("STOCK.CART");
                    c.arg(3);
                    for (k, q) in STOCKS.iter().zip(qty) {
                        c.arg(*k).arg(q);
                    }
                    c.arg("ID").arg(id);
                    return c.query::<Vec<i64>>(con);
                }
                Contender::LuaCart => {
                    let mut c = redis::cmd("EVALSHA");
                    c.arg(sha(contender)).arg(6).arg(&STOCKS[..]).arg(&IDS[..]);
                    c
                }
                _ => {
                    let mut c = redis::cmd("EVALSHA");
                    c.arg(sha(contender)).arg(4).arg(&STOCKS[..]).arg(ONE_IDS);
                    c
                }
            };
            cmd.arg(&qty[..]).arg(id);
            cmd.query::<Vec<i64>>(con)
        };
        let first = call(con, [1, 2, 3], "order-1")?;
        let replay = call(con, [1, 2, 3], "order-1")?;
        let short = call(con, [1, UNITS, 1], "order-2");
        let after = call(con, [1, 1, 1], "order-3")?;
        let expected = vec![UNITS - 1, UNITS - 2, UNITS - 3];
        let short_ok = matches!(&short, Err(e) if e.code() == Some("SOLDOUT"));
        if first != expected || replay != expected || !short_ok || after[0] != UNITS - 2 {
            return Err(format!(
                "{}: a cart {first:?}, its replay {replay:?}, a short cart {short:?}, the next \
                 {after:?}",
                contender.name()
            )
            .into());
        }
    }
    Ok(())
}

pub fn carts(module: &Path, pin: bool, opts: &Options, out: &mut String) -> Res<()> {
    let server = harness::start(module, pin)?;
    let mut con = server.try_conn()?;
    // Room for every cart of a round in each stock's ledger.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("fence.max-ledger-entries")
        .arg(opts.calls.max(1_000_000))
        .query::<()>(&mut con)?;
    let mut shas = Vec::new();
    for (c, body) in [
        (Contender::LuaCart, LUA_CART),
        (Contender::LuaCartOneHash, LUA_CART_ONE_HASH),
    ] {
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(body).query(&mut con)?;
        shas.push((c, sha));
    }
    agree(&mut con, &shas)?;
    let sha_of = |c: Contender| {
        shas.iter()
            .find(|(x, _)| *x == c)
            .map_or("", |(_, s)| s.as_str())
    };

    let n = CONTENDERS.len();
    let mut cpu = vec![Vec::new(); n];
    let mut rps = vec![Vec::new(); n];
    for round in 0..opts.rounds {
        for k in 0..n {
            // Alternate: each round starts with a different contender.
            let i = (k + round) % n;
            let contender = CONTENDERS[i];
            let r = run(&server, &mut con, contender, opts.calls, sha_of(contender))?;
            cpu[i].push(r.cpu_us);
            rps[i].push(r.rps);
        }
        progress!("carts: round {round} done");
    }
    drop(con);
    drop(server);

    let idx = |c: Contender| CONTENDERS.iter().position(|x| *x == c).unwrap_or(0);
    let (cart, lua, lua_one, deducts) = (
        idx(Contender::Cart),
        idx(Contender::LuaCart),
        idx(Contender::LuaCartOneHash),
        idx(Contender::Deducts),
    );
    let med = |v: &[f64]| median(v.to_vec());
    writeln!(out, "## Carts\n")?;
    writeln!(
        out,
        "Server CPU per cart of 3 items: {} carts of each contender a round, {} rounds, \
         contenders alternated; {CONNECTIONS} connections, {PIPELINE} carts in flight per \
         connection (16 commands, 48 for the three deductions); every cart its own 36-byte \
         request id and 1 unit of each of 3 stocks (one hash tag) that never run short, so \
         every call succeeds. Each contender starts on an empty keyspace. The Lua script is \
         what people write today for all or nothing, one `EVALSHA` per cart: `HEXISTS` of the \
         id in each stock's hash of ids (all: a replay, the stocks answered; some: an error), \
         `GET` of each stock (missing or short: an error, nothing changed), then `HSET` of the \
         id and `DECRBY` of each; \"one ids hash\" keeps the ids in one hash for the sale \
         (one `HEXISTS`, one `HSET`; no item can be refunded alone). The three `STOCK.DEDUCT … \
         ID` calls are the reference: not all or nothing. Medians; ratios are medians of the \
         per-round ratios.\n",
        count(opts.calls),
        opts.rounds
    )?;
    head(
        out,
        &[
            ("contender", Align::Left),
            ("server CPU µs/cart", Align::Right),
            ("vs Lua, ids hash per stock", Align::Right),
            ("vs 3 × STOCK.DEDUCT", Align::Right),
            ("carts/s", Align::Right),
        ],
    )?;
    for (i, c) in CONTENDERS.iter().enumerate() {
        row(
            out,
            &[
                c.name().to_string(),
                format!("{:.3}", med(&cpu[i])),
                format!("{:.2}x", ratio(&cpu, i, lua)),
                format!("{:.2}x", ratio(&cpu, i, deducts)),
                format!("{:.0}", med(&rps[i])),
            ],
        )?;
    }
    writeln!(
        out,
        "\nA 3-item `STOCK.CART` costs {:.2}x the server CPU of the Lua script with an ids hash \
         per stock ({:.2}x the one-hash script) and {:.2}x three `STOCK.DEDUCT … ID` calls.\n",
        ratio(&cpu, cart, lua),
        ratio(&cpu, cart, lua_one),
        ratio(&cpu, cart, deducts),
    )?;
    Ok(())
}
