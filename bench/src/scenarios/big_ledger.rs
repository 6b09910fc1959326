//! The "Big ledger" section (issue 14): one stock filled to 1,000,000 request ids against a
//! native set of the same 1,000,000 members, command by command, on fresh servers for each
//! module measured (the module under test and, when given, the one before issue 14).
//!
//! Growth is timed call by call by the slow log (`slowlog-log-slower-than 0`: the server's own
//! time in the command); every other command by the slow log and by the CPU time of the
//! server's main thread, which repeats on a machine whose cores other processes keep busy.

use std::fmt::Write as _;
use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::harness::{self, cpu_ns, info_field, median, progress, used_memory, Res, Server};
use crate::report::{count, head, mb, met, ms, row, Align};

const STOCK_KEY: &str = "big:stock";
const SET_KEY: &str = "big:set";
/// What the stock starts with: more than any fill deducts.
const STOCK_UNITS: i64 = 1_000_000_000_000;
/// Commands per pipeline while filling; a timed fill reads the slow log after each.
const CHUNK: usize = 1_000;
/// The bound on one command that grows, resets, deletes or measures a full ledger (ms).
const BOUND_MS: f64 = 5.0;
/// The bound on a whole-value command (copy, digest, restore, load) against a native set.
const BOUND_VS_SET: f64 = 1.5;
/// How far `MEMORY USAGE` may be from the real usage.
const BOUND_MEMORY: f64 = 0.05;

pub struct Options {
    /// Entries per fill (the default `fence.max-ledger-entries` is 1,000,000).
    pub entries: usize,
    /// Repetitions of each command that leaves the key as it was.
    pub reps: usize,
    /// Repetitions of each command that empties or deletes the key (each needs a refill).
    pub destructive_reps: usize,
}

/// A module to measure, and what to call it in the table.
pub struct Module<'a> {
    pub label: String,
    pub path: &'a Path,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Stock,
    Set,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Stock => STOCK_KEY,
            Kind::Set => SET_KEY,
        }
    }

    /// The command that adds entry `i`.
    fn add(self, pipe: &mut redis::Pipeline, i: usize) {
        match self {
            Kind::Stock => pipe
                .cmd("STOCK.DEDUCT")
                .arg(STOCK_KEY)
                .arg(1)
                .arg("ID")
                .arg(request_id(i)),
            Kind::Set => pipe.cmd("SADD").arg(SET_KEY).arg(request_id(i)),
        }
        .ignore();
    }

    /// Where the id is among a fill command's arguments.
    fn id_arg(self) -> usize {
        match self {
            Kind::Stock => 4,
            Kind::Set => 2,
        }
    }

    /// Makes the key ready to be filled: a stock with its units (an existing one is reset);
    /// a set needs nothing.
    fn create(self, con: &mut redis::Connection) -> Res<()> {
        if self == Kind::Stock {
            redis::cmd("STOCK.SET")
                .arg(STOCK_KEY)
                .arg(STOCK_UNITS)
                .query::<()>(con)?;
        }
        Ok(())
    }

    /// The command that empties the key without deleting it: `STOCK.SET` starts a new sale
    /// and clears the ledger; a set has no such command, so `DEL`.
    fn reset(self) -> redis::Cmd {
        match self {
            Kind::Stock => {
                let mut c = redis::cmd("STOCK.SET");
                c.arg(STOCK_KEY).arg(STOCK_UNITS);
                c
            }
            Kind::Set => {
                let mut c = redis::cmd("DEL");
                c.arg(SET_KEY);
                c
            }
        }
    }

    /// How many entries the key holds.
    fn len(self, con: &mut redis::Connection) -> Res<usize> {
        Ok(match self {
            Kind::Stock => {
                let info: std::collections::HashMap<String, i64> =
                    redis::cmd("STOCK.INFO").arg(STOCK_KEY).query(con)?;
                info.get("requests").copied().unwrap_or(-1) as usize
            }
            Kind::Set => redis::cmd("SCARD").arg(SET_KEY).query(con)?,
        })
    }
}

/// Request id `i`, 36 bytes as a UUID string: pseudo-random hex (the same every run) with `i`
/// in hex in the last group, so a slow-log entry tells which call it was.
fn request_id(i: usize) -> String {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        z >> 32,
        (z >> 16) & 0xffff,
        z & 0xfff,
        0x8000 | ((z >> 48) & 0x3fff),
        i
    )
}

/// The entry number in a request id made by `request_id`.
fn entry_of(id: &[u8]) -> Option<usize> {
    let tail = std::str::from_utf8(id.get(24..)?).ok()?;
    usize::from_str_radix(tail, 16).ok()
}

/// A slow-log entry: id, time, duration (µs), arguments, client address, client name.
type SlowlogEntry = (i64, i64, i64, Vec<Vec<u8>>, Vec<u8>, Vec<u8>);

fn slowlog_reset(con: &mut redis::Connection) -> Res<()> {
    Ok(redis::cmd("SLOWLOG").arg("RESET").query::<()>(con)?)
}

/// One run of a command: the slow log's time (wall clock, ms) and the main thread's CPU time
/// from before the command was sent until after its reply (ms).
#[derive(Clone, Copy, Default)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// Runs `cmd` on an idle server; returns its reply and its timing.
fn timed(con: &mut redis::Connection, pid: u32, cmd: &redis::Cmd) -> Res<(redis::Value, Timing)> {
    let name = cmd
        .args_iter()
        .next()
        .and_then(|a| match a {
            redis::Arg::Simple(b) => Some(b.to_vec()),
            _ => None,
        })
        .unwrap_or_default();
    slowlog_reset(con)?;
    // The reads of the CPU time are taken while the server waits in epoll (the scheduler
    // brings a task's count up to date when it stops running).
    thread::sleep(Duration::from_millis(2));
    let before = cpu_ns(pid)?;
    let reply: redis::Value = cmd.query(con)?;
    thread::sleep(Duration::from_millis(2));
    let cpu = (cpu_ns(pid)? - before) as f64 / 1e6;
    let log: Vec<SlowlogEntry> = redis::cmd("SLOWLOG").arg("GET").arg(16).query(con)?;
    let wall = log
        .iter()
        .find(|e| e.3.first().is_some_and(|a| a.eq_ignore_ascii_case(&name)))
        .map(|e| e.2 as f64 / 1000.0)
        .ok_or_else(|| format!("{} is not in the slow log", String::from_utf8_lossy(&name)))?;
    Ok((reply, Timing { wall, cpu }))
}

/// Waits until only `con` is connected and nothing is left for the lazy-free thread (which
/// shares the server's core), then empties the slow log.
fn settle(con: &mut redis::Connection) -> Res<()> {
    for _ in 0..12_000 {
        let clients: i64 = info_field(con, "clients", "connected_clients")?.parse()?;
        let pending: i64 = info_field(con, "memory", "lazyfree_pending_objects")?.parse()?;
        if clients <= 1 && pending == 0 {
            return slowlog_reset(con);
        }
        thread::sleep(Duration::from_millis(5));
    }
    Err("the server did not settle (clients connected or lazy frees pending)".into())
}

/// Fills `kind`'s key from empty to `n` entries, `CHUNK` commands per pipeline on a connection
/// of its own (closed before it returns). With `durations` (one slot per entry), the slow
/// log's record of every call is read after each pipeline and each call's time (µs) stored
/// under its entry number.
fn fill(
    server: &Server,
    con: &mut redis::Connection,
    kind: Kind,
    n: usize,
    mut durations: Option<&mut [u32]>,
) -> Res<()> {
    kind.create(con)?;
    let mut filler = server.try_conn()?;
    let mut seen = 0;
    for start in (0..n).step_by(CHUNK) {
        let mut pipe = redis::pipe();
        for i in start..(start + CHUNK).min(n) {
            kind.add(&mut pipe, i);
        }
        if durations.is_some() {
            slowlog_reset(con)?;
        }
        pipe.query::<()>(&mut filler)?;
        if let Some(d) = durations.as_deref_mut() {
            let log: Vec<SlowlogEntry> = redis::cmd("SLOWLOG")
                .arg("GET")
                .arg(CHUNK + 16)
                .query(con)?;
            for (_, _, us, args, _, _) in log {
                let Some(i) = args.get(kind.id_arg()).and_then(|id| entry_of(id)) else {
                    continue;
                };
                if let Some(slot) = d.get_mut(i) {
                    *slot = u32::try_from(us).unwrap_or(u32::MAX);
                    seen += 1;
                }
            }
        }
    }
    drop(filler);
    if durations.is_some() && seen != n {
        return Err(format!("the slow log recorded {seen} of {n} fill calls").into());
    }
    let len = kind.len(con)?;
    if len != n {
        return Err(format!("{} holds {len} entries, not {n}", kind.key()).into());
    }
    settle(con)
}

/// What a command's figure is held against.
#[derive(Clone, Copy, PartialEq)]
enum Bound {
    None,
    /// At most `BOUND_MS` in one command.
    Ms,
    /// At most `BOUND_VS_SET` times the set's.
    VsSet,
}

/// The commands timed on a full key, in the order of the tables.
const COMMANDS: [(&str, Bound); 10] = [
    ("`STOCK.SET` on the full stock (set: `DEL`)", Bound::Ms),
    ("`DEL`", Bound::Ms),
    ("`UNLINK`", Bound::None),
    ("`MEMORY USAGE`", Bound::Ms),
    ("`COPY`", Bound::VsSet),
    ("`DEBUG DIGEST-VALUE`", Bound::VsSet),
    ("`DUMP`", Bound::None),
    ("`RESTORE`", Bound::VsSet),
    ("`SAVE` (RDB save)", Bound::None),
    ("RDB load (`DEBUG RELOAD NOSAVE`)", Bound::VsSet),
];
const RESET: usize = 0;
const DEL: usize = 1;
const UNLINK: usize = 2;
const MEMORY_USAGE: usize = 3;
const COPY: usize = 4;
const DIGEST: usize = 5;
const DUMP: usize = 6;
const RESTORE: usize = 7;
const SAVE: usize = 8;
const LOAD: usize = 9;

/// What one kind of key measured on one server. Times in ms.
#[derive(Default)]
struct Figures {
    /// The worst call while growing (a call's time being the lower of its two fills), the
    /// entry count it found, and the 99.9th percentile of the same per-call times.
    worst_ms: f64,
    worst_at: usize,
    p999_ms: f64,
    /// The two fills' times of the worst call.
    worst_fills: [f64; 2],
    /// The worst of any single call of either fill, and where (preemption included).
    raw_worst_ms: f64,
    raw_worst_at: usize,
    /// The used_memory delta of building the key.
    real_bytes: i64,
    memory_usage_bytes: i64,
    /// Each command's median timing, wall clock (slow log) and CPU, by `COMMANDS` index.
    wall: [f64; COMMANDS.len()],
    cpu: [f64; COMMANDS.len()],
}

/// A fresh server with `module`, its slow log recording every command, and a connection.
fn start(module: &Path, pin: bool) -> Res<(Server, redis::Connection)> {
    let server = harness::start(module, pin)?;
    let mut con = server.try_conn()?;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .arg("slowlog-max-len")
        .arg(2 * CHUNK + 64)
        .query::<()>(&mut con)?;
    Ok((server, con))
}

/// One kind of key, on two fresh servers (each timed fill on memory the server never used:
/// a table that doubles then takes its new pages from the system, as a server whose data grows
/// does).
fn measure_kind(module: &Path, pin: bool, kind: Kind, opts: &Options, what: &str) -> Res<Figures> {
    let n = opts.entries;
    let key = kind.key();
    let (server, mut con) = start(module, pin)?;
    let con = &mut con;
    let mut pid = server.pid();
    let mut f = Figures::default();
    let mut runs: [Vec<Timing>; COMMANDS.len()] = Default::default();
    let del = |k: &str| {
        let mut c = redis::cmd("DEL");
        c.arg(k);
        c
    };
    let unlink = |con: &mut redis::Connection, k: &str| -> Res<()> {
        redis::cmd("UNLINK").arg(k).query::<()>(con)?;
        settle(con)
    };

    // Growth, first fill, and the memory it took.
    settle(con)?;
    let before = used_memory(con)?;
    let mut first = vec![0u32; n];
    fill(&server, con, kind, n, Some(&mut first))?;
    f.real_bytes = used_memory(con)? - before;
    progress!("big ledger, {what}: first timed fill done");

    // Commands that leave the key as it was.
    let mut payload: Vec<u8> = Vec::new();
    for _ in 0..opts.reps {
        let (reply, t) = timed(con, pid, redis::cmd("MEMORY").arg("USAGE").arg(key))?;
        runs[MEMORY_USAGE].push(t);
        f.memory_usage_bytes = redis::from_redis_value(reply)?;
        runs[COPY].push(timed(con, pid, redis::cmd("COPY").arg(key).arg("big:copy"))?.1);
        unlink(con, "big:copy")?;
        runs[DIGEST].push(timed(con, pid, redis::cmd("DEBUG").arg("DIGEST-VALUE").arg(key))?.1);
        let (reply, t) = timed(con, pid, redis::cmd("DUMP").arg(key))?;
        runs[DUMP].push(t);
        payload = redis::from_redis_value(reply)?;
        runs[RESTORE].push(
            timed(
                con,
                pid,
                redis::cmd("RESTORE")
                    .arg("big:restored")
                    .arg(0)
                    .arg(&payload),
            )?
            .1,
        );
        unlink(con, "big:restored")?;
        runs[SAVE].push(timed(con, pid, &redis::cmd("SAVE"))?.1);
    }
    drop(payload);
    // The first DEL; then the RDB the last SAVE wrote is loaded into an empty server.
    runs[DEL].push(timed(con, pid, &del(key))?.1);
    settle(con)?;
    for _ in 0..opts.reps {
        runs[LOAD].push(timed(con, pid, redis::cmd("DEBUG").arg("RELOAD").arg("NOSAVE"))?.1);
        if kind.len(con)? != n {
            return Err(format!("DEBUG RELOAD did not load {key} whole").into());
        }
        unlink(con, key)?;
    }
    progress!("big ledger, {what}: whole-value commands done");

    // Growth, second fill, on a fresh server; then the commands that empty or delete the key,
    // each on a fill.
    drop(server);
    let (server, mut fresh) = start(module, pin)?;
    let con = &mut fresh;
    pid = server.pid();
    let mut second = vec![0u32; n];
    fill(&server, con, kind, n, Some(&mut second))?;
    runs[RESET].push(timed(con, pid, &kind.reset())?.1);
    settle(con)?;
    progress!("big ledger, {what}: second timed fill done");
    for _ in 1..opts.destructive_reps {
        fill(&server, con, kind, n, None)?;
        runs[RESET].push(timed(con, pid, &kind.reset())?.1);
        settle(con)?;
    }
    for _ in 1..opts.destructive_reps {
        fill(&server, con, kind, n, None)?;
        runs[DEL].push(timed(con, pid, &del(key))?.1);
        settle(con)?;
    }
    // UNLINK only hands the value to the lazy-free thread: once is enough.
    fill(&server, con, kind, n, None)?;
    runs[UNLINK].push(timed(con, pid, redis::cmd("UNLINK").arg(key))?.1);
    settle(con)?;

    for (i, r) in runs.iter().enumerate() {
        let wall: Vec<f64> = r.iter().map(|t| t.wall).collect();
        let cpu: Vec<f64> = r.iter().map(|t| t.cpu).collect();
        progress!(
            "big ledger, {what}: {}: wall ms {}; CPU ms {}",
            COMMANDS[i].0,
            list(&wall),
            list(&cpu)
        );
        f.wall[i] = median(wall);
        f.cpu[i] = median(cpu);
    }

    // A call's time is the lower of its two fills: another process taking the core for a few
    // ms lands on a random call, a stall of the data structure on the same call every fill.
    let lower: Vec<u32> = first.iter().zip(&second).map(|(a, b)| *a.min(b)).collect();
    let (at, worst) = lower
        .iter()
        .enumerate()
        .max_by_key(|(_, us)| **us)
        .map_or((0, 0), |(i, us)| (i, *us));
    f.worst_at = at;
    f.worst_ms = f64::from(worst) / 1000.0;
    let mut sorted = lower;
    sorted.sort_unstable();
    let p = ((sorted.len() as f64 - 1.0) * 0.999).round() as usize;
    f.p999_ms = sorted.get(p).map_or(f64::NAN, |us| f64::from(*us) / 1000.0);
    let (raw_at, raw) = first
        .iter()
        .chain(&second)
        .enumerate()
        .max_by_key(|(_, us)| **us)
        .map_or((0, 0), |(i, us)| (i % n.max(1), *us));
    f.raw_worst_ms = f64::from(raw) / 1000.0;
    f.raw_worst_at = raw_at;
    f.worst_fills = [first[at], second[at]].map(|us| f64::from(us) / 1000.0);
    Ok(f)
}

/// One server with `module`: the stock, then the set.
fn measure_module(module: &Path, pin: bool, opts: &Options, label: &str) -> Res<[Figures; 2]> {
    let stock = measure_kind(module, pin, Kind::Stock, opts, &format!("{label}, stock"))?;
    let set = measure_kind(module, pin, Kind::Set, opts, &format!("{label}, set"))?;
    Ok([stock, set])
}

/// Every run's time, for the progress lines.
fn list(runs: &[f64]) -> String {
    let all: Vec<String> = runs.iter().map(|v| format!("{v:.3}")).collect();
    all.join(" ")
}

/// The table's head: the modules measured, the set, the bound and whether the module under
/// test meets it.
fn table_head(out: &mut String, labels: &[&str], set: &str) -> Res<()> {
    let met_by = format!("met by {}", labels.last().copied().unwrap_or_default());
    let mut columns = vec![("command", Align::Left)];
    columns.extend(labels.iter().map(|label| (*label, Align::Right)));
    columns.extend([
        (set, Align::Right),
        ("bound", Align::Left),
        (met_by.as_str(), Align::Left),
    ]);
    Ok(head(out, &columns)?)
}

/// The timed commands' rows, from `get` (wall clock or CPU).
fn command_rows(
    out: &mut String,
    runs: &[(&str, [Figures; 2])],
    get: impl Fn(&Figures) -> &[f64; COMMANDS.len()],
) -> Res<()> {
    for (i, (name, bound)) in COMMANDS.iter().enumerate() {
        let mut cells = vec![format!("{name}, ms")];
        for (_, [stock, set]) in runs {
            let (v, s) = (get(stock)[i], get(set)[i]);
            cells.push(if *bound == Bound::VsSet {
                format!("{} ({:.2}x)", ms(v), v / s)
            } else {
                ms(v)
            });
        }
        let (_, [stock, set]) = runs.last().ok_or("no module measured")?;
        let (v, s) = (get(stock)[i], get(set)[i]);
        cells.push(ms(s));
        match bound {
            Bound::None => cells.extend([String::new(), String::new()]),
            Bound::Ms => cells.extend([format!("≤ {BOUND_MS} ms"), met(v <= BOUND_MS).to_string()]),
            Bound::VsSet => cells.extend([
                format!("≤ {BOUND_VS_SET}x set"),
                met(v <= BOUND_VS_SET * s).to_string(),
            ]),
        }
        row(out, &cells)?;
    }
    Ok(())
}

/// Measures every module given (the last is the one under test) and writes the section.
pub fn big_ledger(modules: &[Module], pin: bool, opts: &Options, out: &mut String) -> Res<()> {
    let mut runs = Vec::new();
    for m in modules {
        progress!("big ledger: {} ({})", m.label, m.path.display());
        runs.push((
            m.label.as_str(),
            measure_module(m.path, pin, opts, &m.label)?,
        ));
    }
    let n = opts.entries;
    let labels: Vec<&str> = runs.iter().map(|(l, _)| *l).collect();
    let set_name = if n.is_multiple_of(1_000_000) {
        format!("{}M-member set", n / 1_000_000)
    } else {
        format!("{}-member set", count(n))
    };
    writeln!(out, "## Big ledger\n")?;
    writeln!(
        out,
        "One stock filled to {} request ids (`STOCK.DEDUCT {STOCK_KEY} 1 ID <id>`, 36-byte \
         UUID-like ids, pipelined {CHUNK} at a time) against a native set of the same {} ids \
         (`SADD`), each kind on two freshly started servers per module (issue 14); \"{}\" \
         is this build, the set column is measured beside it (with the same module loaded), \
         and every ratio is against the set measured in the same module's run. Bounds (issue 14): growing, resetting, deleting and sizing a full \
         ledger at most {BOUND_MS} ms in one command and `MEMORY USAGE` within {:.0}% of the \
         real usage; copying, digesting, restoring and loading it at most {BOUND_VS_SET}x the \
         set.\n",
        count(n),
        count(n),
        labels.last().copied().unwrap_or_default(),
        BOUND_MEMORY * 100.0
    )?;
    writeln!(
        out,
        "Growth: every call of two fills of the same ids is timed by the slow log \
         (`slowlog-log-slower-than 0`: the server's own time in the command, wall clock); a \
         call's time is the lower of its two fills (each on a fresh server, so memory the \
         key grows into comes new from the system), since another process taking the core \
         lands on a random call and a stall of the data structure on the same call every \
         time; \"at\" is how many entries the key held. The other commands: the CPU time of \
         the server's main thread from the command sent to its reply received (from \
         `/proc/<pid>/task/<pid>/schedstat`; it includes reading the command and writing the \
         reply, not the lazy-free thread's work), which repeats where the wall clock does not \
         when other processes keep the cores busy (as a soak test does on this 2-core \
         machine): the server then gets about half of its core and a command's wall time \
         swings by 2x and more. The slow log's wall times are in the second table; there \
         `UNLINK` includes the lazy-free thread, pinned to the same core, taking it over. Medians of {} runs (`MEMORY USAGE`, `COPY`, `DEBUG \
         DIGEST-VALUE`, `DUMP`, `RESTORE` into a new key, `SAVE` with only the key in the \
         server, the RDB load by `DEBUG RELOAD NOSAVE` into an empty server) or {} runs \
         (`STOCK.SET`, set: `DEL`, and `DEL`, each on a freshly filled key); `UNLINK` once. \
         Real usage: the change of `used_memory` (`INFO memory`) from building the key; MB are \
         10^6 bytes; a set's `MEMORY USAGE` samples 5 members (the default).\n",
        opts.reps, opts.destructive_reps,
    )?;
    let (_, [stock, set]) = runs.last().ok_or("no module measured")?;
    writeln!(
        out,
        "Server CPU time (growth: the slow log), memory from `INFO memory`:\n"
    )?;
    table_head(out, &labels, &set_name)?;

    let cell = |v: f64, at: usize| format!("{} at {}", ms(v), count(at));
    let mut cells = vec![format!(
        "worst call while growing to {}, ms (set: `SADD`)",
        count(n)
    )];
    cells.extend(runs.iter().map(|(_, [s, _])| cell(s.worst_ms, s.worst_at)));
    cells.extend([
        cell(set.worst_ms, set.worst_at),
        format!("≤ {BOUND_MS} ms"),
        met(stock.worst_ms <= BOUND_MS).to_string(),
    ]);
    row(out, &cells)?;
    let mut cells = vec!["p99.9 call while growing, ms".to_string()];
    cells.extend(runs.iter().map(|(_, [s, _])| ms(s.p999_ms)));
    cells.extend([ms(set.p999_ms), String::new(), String::new()]);
    row(out, &cells)?;

    command_rows(out, &runs, |f| &f.cpu)?;

    // MEMORY USAGE against the real usage.
    let off = |f: &Figures| f.memory_usage_bytes as f64 / f.real_bytes as f64 - 1.0;
    let usage = |f: &Figures| {
        format!(
            "{} of {} ({:+.1}%)",
            mb(f.memory_usage_bytes),
            mb(f.real_bytes),
            off(f) * 100.0
        )
    };
    let mut cells = vec!["`MEMORY USAGE` reported of real".to_string()];
    cells.extend(runs.iter().map(|(_, [s, _])| usage(s)));
    cells.extend([
        usage(set),
        format!("within {:.0}%", BOUND_MEMORY * 100.0),
        met(off(stock).abs() <= BOUND_MEMORY).to_string(),
    ]);
    row(out, &cells)?;
    let per = |f: &Figures| f.real_bytes as f64 / n as f64;
    let mut cells = vec![format!(
        "bytes per entry (used_memory delta / {})",
        count(n)
    )];
    cells.extend(
        runs.iter()
            .map(|(_, [s, st])| format!("{:.1} ({:.2}x)", per(s), per(s) / per(st))),
    );
    cells.extend([format!("{:.1}", per(set)), String::new(), String::new()]);
    row(out, &cells)?;
    writeln!(out)?;

    writeln!(
        out,
        "Wall clock, from the slow log (the server's own time in the command, waits for the \
         core included):\n"
    )?;
    table_head(out, &labels, &set_name)?;
    command_rows(out, &runs, |f| &f.wall)?;
    writeln!(out)?;

    let mut parts = Vec::new();
    for (label, [s, st]) in &runs {
        parts.push(format!(
            "{label}: stock {} and {} ms, set {} and {} ms",
            ms(s.worst_fills[0]),
            ms(s.worst_fills[1]),
            ms(st.worst_fills[0]),
            ms(st.worst_fills[1])
        ));
    }
    writeln!(
        out,
        "The worst call while growing as each fill timed it: {}.",
        parts.join("; ")
    )?;
    let mut parts = Vec::new();
    for (label, [s, st]) in &runs {
        parts.push(format!(
            "{label}: stock {} ms at {}, set {} ms at {}",
            ms(s.raw_worst_ms),
            count(s.raw_worst_at),
            ms(st.raw_worst_ms),
            count(st.raw_worst_at)
        ));
    }
    writeln!(
        out,
        "The single slowest call of either fill, waits for the core included: {}.\n",
        parts.join("; ")
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_36_bytes_and_tell_their_entry() {
        for i in [0, 1, 917_504, 999_999] {
            let id = request_id(i);
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(entry_of(id.as_bytes()), Some(i));
        }
        assert_ne!(request_id(1)[..8], request_id(2)[..8]);
    }
}
