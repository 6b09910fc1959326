//! The "Purchase limits" section (issue 18): what a deduction that names its buyer costs, in
//! server CPU per call and in memory per buyer, against the Lua script people write for "at
//! most N per customer" today (a hash of request ids and a hash of buyer counts beside the
//! stock).
//!
//! CPU: the same number of calls of each contender, round by round on one server, from 50
//! connections at pipeline 16 (the depth of the throughput tables), each call with its own
//! request id and the buyers cycling through a fixed set, so that every call succeeds under
//! the limit: `STOCK.DEDUCT … ID` on a stock without a limit, `STOCK.DEDUCT … ID … BUYER` on a
//! stock with `LIMIT 3`, and the Lua scripts with and without the buyer hash. The server's
//! `used_cpu_user + used_cpu_sys` (`INFO cpu`) over the calls, per call, is the repeatable
//! measure on a shared 2-core machine (throughput swings by 10-20%).
//!
//! Memory: `MEMORY USAGE` of a stock after `n` deductions, each with its own buyer, minus the
//! same stock after `n` deductions without `BUYER`, per buyer; and the Lua layout's hash of
//! buyer counts, per buyer.
//!
//! The load generator speaks RESP itself (each connection a thread writing 16 commands, then
//! reading their 16 one-line replies): like redis-benchmark, it keeps the server busy, so that
//! the client is not what limits the rate.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{self, cpu_seconds, median, progress, used_memory, Res, Server};
use crate::report::{count, head, mb, row, Align};

pub struct Options {
    /// Calls of each contender a round.
    pub calls: usize,
    pub rounds: usize,
    /// How many buyers the calls of a round cycle through (each buys `calls / cycle` units).
    pub cycle: usize,
    /// Deductions, each with a buyer of its own, in the memory measure.
    pub buyers: usize,
}

const STOCK: &str = "{sale}:sku";
const IDS: &str = "{sale}:sku:ids";
const BUYERS: &str = "{sale}:sku:buyers";
/// The stock's units: never short.
const UNITS: i64 = 1_000_000_000_000;
/// The limit per buyer.
const LIMIT: usize = 3;
const CONNECTIONS: usize = 50;
const PIPELINE: usize = 16;
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// What people write today: the request ids in a hash (id → quantity, for refunds), each
/// buyer's units in a hash, both beside the stock, and one script call per order. `ARGV`:
/// quantity, request id, buyer, limit. A replay answers the stock; over the limit, an error.
const LUA_BUYER: &str = "local qty = tonumber(ARGV[1]) \
     if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then \
       return tonumber(redis.call('GET', KEYS[1])) end \
     local has = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or 0) \
     if has + qty > tonumber(ARGV[4]) then \
       return redis.error_reply('LIMIT buyer ' .. ARGV[3] .. ' has ' .. has .. ' of at most ' .. ARGV[4]) end \
     local s = tonumber(redis.call('GET', KEYS[1])) \
     if not s or s < qty then return false end \
     redis.call('HINCRBY', KEYS[3], ARGV[3], qty) \
     redis.call('HSET', KEYS[2], ARGV[2], qty) \
     return redis.call('DECRBY', KEYS[1], qty)";
/// The same without buyers: the reference for what the buyer hash adds.
const LUA_IDS: &str = "local qty = tonumber(ARGV[1]) \
     if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then \
       return tonumber(redis.call('GET', KEYS[1])) end \
     local s = tonumber(redis.call('GET', KEYS[1])) \
     if not s or s < qty then return false end \
     redis.call('HSET', KEYS[2], ARGV[2], qty) \
     return redis.call('DECRBY', KEYS[1], qty)";

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    /// `STOCK.DEDUCT key 1 ID id`, no limit.
    Deduct,
    /// `STOCK.DEDUCT key 1 ID id BUYER buyer`, `LIMIT 3`.
    DeductBuyer,
    /// `EVALSHA` of `LUA_IDS`.
    LuaIds,
    /// `EVALSHA` of `LUA_BUYER`, limit 3.
    LuaBuyer,
}

const CONTENDERS: [Contender; 4] = [
    Contender::Deduct,
    Contender::DeductBuyer,
    Contender::LuaIds,
    Contender::LuaBuyer,
];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Deduct => "`STOCK.DEDUCT … ID` (no limit)",
            Contender::DeductBuyer => "`STOCK.DEDUCT … ID … BUYER` (`LIMIT 3`)",
            Contender::LuaIds => "Lua: ids hash",
            Contender::LuaBuyer => "Lua: ids hash + buyer-count hash (limit 3)",
        }
    }
}

/// A 36-byte request id, as a UUID order id would be.
fn id(i: usize) -> String {
    format!("7f3a9c2e-4b1d-4e8f-9a6b-{i:012}")
}

/// A 36-byte buyer id, as a UUID account id would be.
fn buyer(b: usize) -> String {
    format!("5c1d7a3e-2f4b-4c8d-9e6f-{b:012}")
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

/// Call `i` of `contender`, its buyer `i % cycle`, in RESP.
fn encode_call(buf: &mut Vec<u8>, contender: Contender, i: usize, cycle: usize, sha: &[u8]) {
    let (id, buyer) = (id(i), buyer(i % cycle));
    let limit = LIMIT.to_string();
    match contender {
        Contender::Deduct => encode(
            buf,
            &[
                b"STOCK.DEDUCT",
                STOCK.as_bytes(),
                b"1",
                b"ID",
                id.as_bytes(),
            ],
        ),
        Contender::DeductBuyer => encode(
            buf,
            &[
                b"STOCK.DEDUCT",
                STOCK.as_bytes(),
                b"1",
                b"ID",
                id.as_bytes(),
                b"BUYER",
                buyer.as_bytes(),
            ],
        ),
        Contender::LuaIds => encode(
            buf,
            &[
                b"EVALSHA",
                sha,
                b"2",
                STOCK.as_bytes(),
                IDS.as_bytes(),
                b"1",
                id.as_bytes(),
            ],
        ),
        Contender::LuaBuyer => encode(
            buf,
            &[
                b"EVALSHA",
                sha,
                b"3",
                STOCK.as_bytes(),
                IDS.as_bytes(),
                BUYERS.as_bytes(),
                b"1",
                id.as_bytes(),
                buyer.as_bytes(),
                limit.as_bytes(),
            ],
        ),
    }
}

/// One connection's share of `calls` calls: batches of `PIPELINE` taken from `next`, each
/// written at once, then its replies read; every reply must be an integer (a deduction made).
fn drive(
    port: u16,
    contender: Contender,
    calls: usize,
    cycle: usize,
    sha: &[u8],
    next: &AtomicUsize,
) -> Res<()> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = Vec::with_capacity(PIPELINE * 200);
    let mut line = Vec::with_capacity(256);
    loop {
        let start = next.fetch_add(PIPELINE, Ordering::Relaxed);
        if start >= calls {
            return Ok(());
        }
        let end = (start + PIPELINE).min(calls);
        buf.clear();
        for i in start..end {
            encode_call(&mut buf, contender, i, cycle, sha);
        }
        writer.write_all(&buf)?;
        for i in start..end {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Err("the server closed the connection".into());
            }
            if line.first() != Some(&b':') {
                return Err(format!(
                    "{}, call {i}: expected an integer, got {:?}",
                    contender.name(),
                    String::from_utf8_lossy(&line).trim_end()
                )
                .into());
            }
        }
    }
}

/// Sets up a fresh keyspace for `contender`.
fn setup(con: &mut redis::Connection, contender: Contender) -> Res<()> {
    redis::cmd("FLUSHALL").query::<()>(con)?;
    match contender {
        Contender::Deduct => redis::cmd("STOCK.SET")
            .arg(STOCK)
            .arg(UNITS)
            .query::<()>(con)?,
        Contender::DeductBuyer => redis::cmd("STOCK.SET")
            .arg(STOCK)
            .arg(UNITS)
            .arg("LIMIT")
            .arg(LIMIT)
            .query::<()>(con)?,
        Contender::LuaIds | Contender::LuaBuyer => {
            redis::cmd("SET").arg(STOCK).arg(UNITS).query::<()>(con)?
        }
    }
    Ok(())
}

/// What one run of a contender cost: server CPU µs per call, calls per second.
struct Run {
    cpu_us: f64,
    rps: f64,
}

/// `calls` calls of `contender` (buyers cycling through `cycle`) on a keyspace set up for it;
/// checks that the stock and the buyers hold what the calls took.
fn run(
    server: &Server,
    con: &mut redis::Connection,
    contender: Contender,
    calls: usize,
    cycle: usize,
    sha: &str,
) -> Res<Run> {
    setup(con, contender)?;
    let next = AtomicUsize::new(0);
    let before = cpu_seconds(con)?;
    let t0 = Instant::now();
    thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                s.spawn(|| {
                    drive(
                        server.port(),
                        contender,
                        calls,
                        cycle,
                        sha.as_bytes(),
                        &next,
                    )
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a load thread panicked")??;
        }
        Ok(())
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let after = cpu_seconds(con)?;
    check(con, contender, calls, cycle)?;
    Ok(Run {
        cpu_us: (after - before) * 1e6 / calls as f64,
        rps: calls as f64 / wall,
    })
}

/// The units left and, with buyers, the first and last buyer's units, as the calls made them.
fn check(con: &mut redis::Connection, contender: Contender, calls: usize, cycle: usize) -> Res<()> {
    let left: i64 = match contender {
        Contender::Deduct | Contender::DeductBuyer => {
            redis::cmd("STOCK.GET").arg(STOCK).query(con)?
        }
        Contender::LuaIds | Contender::LuaBuyer => redis::cmd("GET").arg(STOCK).query(con)?,
    };
    if left != UNITS - calls as i64 {
        return Err(format!(
            "{}: {left} units left after {calls} deductions of 1 from {UNITS}",
            contender.name()
        )
        .into());
    }
    for b in [0, cycle - 1] {
        // Buyer b bought at calls b, b + cycle, b + 2 * cycle, …
        let expected = (calls + cycle - 1 - b) / cycle;
        let has: i64 = match contender {
            Contender::DeductBuyer => redis::cmd("STOCK.BUYER")
                .arg(STOCK)
                .arg(buyer(b))
                .query(con)?,
            Contender::LuaBuyer => redis::cmd("HGET")
                .arg(BUYERS)
                .arg(buyer(b))
                .query::<Option<i64>>(con)?
                .unwrap_or(0),
            _ => continue,
        };
        if has != expected as i64 {
            return Err(format!(
                "{}: buyer {b} has {has} units, bought {expected}",
                contender.name()
            )
            .into());
        }
    }
    Ok(())
}

/// `MEMORY USAGE key SAMPLES 0` (every element counted).
fn memory_usage(con: &mut redis::Connection, key: &str) -> Res<i64> {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query::<Option<i64>>(con)?
        .ok_or_else(|| format!("MEMORY USAGE {key}: no such key").into())
}

/// The memory measure's figures, in bytes.
struct Memory {
    /// `MEMORY USAGE` of the stock after `n` deductions without `BUYER`, and with a buyer each.
    plain: i64,
    with_buyers: i64,
    /// `used_memory` grown by the same fills.
    plain_used: i64,
    with_buyers_used: i64,
    /// The Lua layout after `n` orders, each with a buyer of its own: the ids hash, the buyer
    /// hash, and `used_memory` grown by the whole.
    lua_ids: i64,
    lua_buyers: i64,
    lua_used: i64,
    /// The server's CPU µs per call of each fill (every call a new buyer).
    fill_cpu_us: [f64; 3],
}

fn memory(server: &Server, con: &mut redis::Connection, n: usize, shas: &Shas) -> Res<Memory> {
    let mut measure = |contender: Contender, keys: &[&str]| -> Res<(Vec<i64>, i64, f64)> {
        redis::cmd("FLUSHALL").query::<()>(con)?;
        let base = used_memory(con)?;
        let r = run(server, con, contender, n, n, shas.of(contender))?;
        let used = used_memory(con)? - base;
        let usage = keys
            .iter()
            .map(|k| memory_usage(con, k))
            .collect::<Res<Vec<i64>>>()?;
        progress!("buyers: memory of {} measured", contender.name());
        Ok((usage, used, r.cpu_us))
    };
    let (plain, plain_used, plain_cpu) = measure(Contender::Deduct, &[STOCK])?;
    let (with_buyers, with_buyers_used, buyers_cpu) = measure(Contender::DeductBuyer, &[STOCK])?;
    let (lua, lua_used, lua_cpu) = measure(Contender::LuaBuyer, &[IDS, BUYERS])?;
    redis::cmd("FLUSHALL").query::<()>(con)?;
    Ok(Memory {
        plain: plain[0],
        with_buyers: with_buyers[0],
        plain_used,
        with_buyers_used,
        lua_ids: lua[0],
        lua_buyers: lua[1],
        lua_used,
        fill_cpu_us: [plain_cpu, buyers_cpu, lua_cpu],
    })
}

/// The SHAs of the two scripts.
struct Shas {
    ids: String,
    buyer: String,
}

impl Shas {
    fn of(&self, contender: Contender) -> &str {
        match contender {
            Contender::LuaIds => &self.ids,
            Contender::LuaBuyer => &self.buyer,
            _ => "",
        }
    }
}

/// The median of the per-round ratios of contender `a`'s CPU per call to `b`'s.
fn ratio(cpu: &[Vec<f64>], a: usize, b: usize) -> f64 {
    median(cpu[a].iter().zip(&cpu[b]).map(|(x, y)| x / y).collect())
}

pub fn buyers(module: &Path, pin: bool, opts: &Options, out: &mut String) -> Res<()> {
    if opts.cycle == 0 || opts.calls > opts.cycle * LIMIT {
        return Err(format!(
            "{} calls over {} buyers would pass the limit of {LIMIT}",
            opts.calls, opts.cycle
        )
        .into());
    }
    let server = harness::start(module, pin)?;
    let mut con = server.try_conn()?;
    // Room for every entry and buyer of the memory measure.
    let bound = opts.buyers.max(opts.calls).max(2_000_000);
    for setting in ["fence.max-ledger-entries", "fence.max-buyers"] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(setting)
            .arg(bound)
            .query::<()>(&mut con)?;
    }
    let mut load = |body: &str| -> Res<String> {
        Ok(redis::cmd("SCRIPT").arg("LOAD").arg(body).query(&mut con)?)
    };
    let shas = Shas {
        ids: load(LUA_IDS)?,
        buyer: load(LUA_BUYER)?,
    };

    let n = CONTENDERS.len();
    let mut cpu = vec![Vec::new(); n];
    let mut rps = vec![Vec::new(); n];
    for round in 0..opts.rounds {
        for k in 0..n {
            // Alternate: each round starts with a different contender.
            let i = (k + round) % n;
            let contender = CONTENDERS[i];
            let r = run(
                &server,
                &mut con,
                contender,
                opts.calls,
                opts.cycle,
                shas.of(contender),
            )?;
            cpu[i].push(r.cpu_us);
            rps[i].push(r.rps);
        }
        progress!("buyers: CPU round {round} done");
    }
    let m = memory(&server, &mut con, opts.buyers, &shas)?;
    drop(con);
    drop(server);

    let idx = |c: Contender| CONTENDERS.iter().position(|x| *x == c).unwrap_or(0);
    let (deduct, deduct_buyer, lua_ids, lua_buyer) = (
        idx(Contender::Deduct),
        idx(Contender::DeductBuyer),
        idx(Contender::LuaIds),
        idx(Contender::LuaBuyer),
    );
    let med = |v: &[f64]| median(v.to_vec());
    let cycle = count(opts.cycle);
    let calls = count(opts.calls);
    let each = opts.calls / opts.cycle;
    writeln!(out, "## Purchase limits\n")?;
    writeln!(
        out,
        "Server CPU per call: {calls} calls of each contender a round, {} rounds, contenders \
         alternated; {CONNECTIONS} connections, pipeline {PIPELINE}; every call its own 36-byte \
         request id; 36-byte buyer ids cycling through {cycle} buyers, so each buyer buys \
         {each} units, under the limit of {LIMIT}, and every call succeeds. Each contender \
         starts on an empty keyspace. The Lua script is what people write today, one call per \
         order: `HEXISTS` of the request id in a hash of ids (a replay answers the stock), \
         `HGET` of the buyer's units in a hash of buyer counts beside the stock, refusal over \
         the limit (passed as an argument), `GET` of the stock, `HINCRBY` of the buyer's \
         units, `HSET` of the id with its quantity (for refunds), `DECRBY`; \"ids hash\" is \
         the same without the buyer hash. Medians; ratios are medians of the per-round \
         ratios.\n",
        opts.rounds
    )?;
    head(
        out,
        &[
            ("contender", Align::Left),
            ("server CPU µs/call", Align::Right),
            ("vs Lua with buyers", Align::Right),
            ("ops/s", Align::Right),
        ],
    )?;
    for (i, c) in CONTENDERS.iter().enumerate() {
        row(
            out,
            &[
                c.name().to_string(),
                format!("{:.3}", med(&cpu[i])),
                format!("{:.2}x", ratio(&cpu, i, lua_buyer)),
                format!("{:.0}", med(&rps[i])),
            ],
        )?;
    }
    writeln!(
        out,
        "\n`STOCK.DEDUCT … ID … BUYER` costs {:.2}x the CPU per call of the Lua script with its \
         buyer hash. `BUYER` adds {:.3} µs a call to `STOCK.DEDUCT … ID` ({:.2}x); the buyer \
         hash adds {:.3} µs to the Lua script ({:.2}x).\n",
        ratio(&cpu, deduct_buyer, lua_buyer),
        med(&cpu[deduct_buyer]) - med(&cpu[deduct]),
        ratio(&cpu, deduct_buyer, deduct),
        med(&cpu[lua_buyer]) - med(&cpu[lua_ids]),
        ratio(&cpu, lua_buyer, lua_ids),
    )?;

    let b = opts.buyers as f64;
    let per = |bytes: i64| bytes as f64 / b;
    let buyers = count(opts.buyers);
    writeln!(
        out,
        "Memory: one stock after {buyers} deductions (`ID`, 36 bytes), each for a buyer of its \
         own (`BUYER`, 36 bytes, `LIMIT 3`), against the same stock after {buyers} deductions \
         without `BUYER`; the Lua layout after {buyers} orders by the script, each for a buyer \
         of its own. `MEMORY USAGE … SAMPLES 0`, and `used_memory` grown by the fill as a \
         check.\n"
    )?;
    head(
        out,
        &[
            ("measure", Align::Left),
            ("MEMORY USAGE", Align::Right),
            ("used_memory grown", Align::Right),
        ],
    )?;
    let rows = [
        (
            format!("stock, {buyers} deductions without `BUYER`"),
            mb(m.plain),
            mb(m.plain_used),
        ),
        (
            format!("stock, {buyers} deductions, each its own `BUYER`"),
            mb(m.with_buyers),
            mb(m.with_buyers_used),
        ),
        (
            "**bytes per buyer** (the difference / buyers)".to_string(),
            format!("**{:.1}**", per(m.with_buyers - m.plain)),
            format!("{:.1}", per(m.with_buyers_used - m.plain_used)),
        ),
        (
            "Lua: bytes per buyer of the buyer-count hash".to_string(),
            format!("{:.1}", per(m.lua_buyers)),
            String::new(),
        ),
        (
            "bytes per order, ids and buyers: stock / Lua ids hash + buyer hash".to_string(),
            format!(
                "{:.1} / {:.1}",
                per(m.with_buyers),
                per(m.lua_ids + m.lua_buyers)
            ),
            format!("{:.1} / {:.1}", per(m.with_buyers_used), per(m.lua_used)),
        ),
    ];
    for (what, usage, used) in &rows {
        row(out, &[what.as_str(), usage.as_str(), used.as_str()])?;
    }
    writeln!(
        out,
        "\nServer CPU per call while filling (every call a new buyer, the tables growing to \
         {buyers}): `STOCK.DEDUCT … ID` {:.3} µs, `… BUYER` {:.3} µs, the Lua script {:.3} µs \
         (one run each).\n",
        m.fill_cpu_us[0], m.fill_cpu_us[1], m.fill_cpu_us[2]
    )?;
    Ok(())
}
