//! Throughput, server CPU and instructions per call of the module's commands against the
//! native commands and Lua scripts that do the same, driven by redis-benchmark: each group's
//! contenders alternated round by round on one server, ratios against the native command.

use std::fmt::Write as _;
use std::path::Path;

use super::{load_scripts, OWNER};
use crate::harness::{
    self, callgrind_control, callgrind_dump, cpu_seconds, has_valgrind, info_field, median,
    progress, redis_benchmark, Res, Server,
};
use crate::report::{head, row, Align, ChartGroup};

/// The same length, with redis-benchmark's 12-digit random number in it.
const ANY_OWNER: &str = "3f2b8c1e-9a4d-4e7b-8c2f-__rand_int__";
/// The keys redis-benchmark draws from.
pub const KEYSPACE: usize = 100_000;

/// What a contender needs in the keyspace before it runs.
#[derive(Clone, Copy)]
enum Preload {
    Nothing,
    Strings(&'static str),
    Locks,
    Stocks,
}

struct Contender {
    name: &'static str,
    preload: Preload,
    /// Arguments after `redis-benchmark ...`; `{sha:NAME}` is replaced by the script's SHA.
    args: Vec<String>,
}

struct Group {
    name: &'static str,
    /// What the reader needs to know about the workload, printed under the heading.
    note: &'static str,
    /// Ratios are given against this contender (the native command).
    baseline: usize,
    contenders: Vec<Contender>,
}

fn c(name: &'static str, preload: Preload, args: &str) -> Contender {
    Contender {
        name,
        preload,
        args: args.split(' ').map(str::to_string).collect(),
    }
}

fn groups() -> Vec<Group> {
    let o = OWNER;
    // A 36-byte owner that differs from call to call, as the clients of a real lock do.
    let r = ANY_OWNER;
    vec![
        Group {
            name: "Acquire",
            note: "Every call names its own owner (36 bytes, random), so a call that finds \
                   the key held is refused by all three contenders, as it would be between \
                   real clients. The last row has one owner for every call: a call that \
                   finds its own lock held extends it (re-entrant acquire), which SET NX PX \
                   does not do.",
            baseline: 0,
            contenders: vec![
                c(
                    "SET NX PX",
                    Preload::Nothing,
                    &format!("SET lock:__rand_int__ {r} NX PX 10000"),
                ),
                c(
                    "LOCK.ACQUIRE",
                    Preload::Nothing,
                    &format!("LOCK.ACQUIRE lock:__rand_int__ {r} 10000"),
                ),
                c(
                    "Lua SET NX PX + INCR",
                    Preload::Nothing,
                    &format!("EVALSHA {{sha:acquire}} 1 lock:__rand_int__ {r} 10000"),
                ),
                c(
                    "LOCK.ACQUIRE, one owner",
                    Preload::Nothing,
                    &format!("LOCK.ACQUIRE lock:__rand_int__ {o} 10000"),
                ),
            ],
        },
        Group {
            name: "Release",
            note: "Every key starts held by the owner that releases it.",
            baseline: 0,
            contenders: vec![
                c("DEL", Preload::Strings(OWNER), "DEL lock:__rand_int__"),
                c(
                    "LOCK.RELEASE",
                    Preload::Locks,
                    &format!("LOCK.RELEASE lock:__rand_int__ {o}"),
                ),
                c(
                    "Lua compare-and-delete",
                    Preload::Strings(OWNER),
                    &format!("EVALSHA {{sha:release}} 1 lock:__rand_int__ {o}"),
                ),
            ],
        },
        Group {
            name: "Renew",
            note: "Every key starts held by the owner that renews it.",
            baseline: 0,
            contenders: vec![
                c(
                    "PEXPIRE",
                    Preload::Strings(OWNER),
                    "PEXPIRE lock:__rand_int__ 10000",
                ),
                c(
                    "LOCK.RENEW",
                    Preload::Locks,
                    &format!("LOCK.RENEW lock:__rand_int__ {o} 10000"),
                ),
                c(
                    "Lua compare-and-PEXPIRE",
                    Preload::Strings(OWNER),
                    &format!("EVALSHA {{sha:renew}} 1 lock:__rand_int__ {o} 10000"),
                ),
            ],
        },
        Group {
            name: "Deduct",
            note: "Every key starts with 10^12 items; request ids are drawn from 100,000.",
            baseline: 0,
            contenders: vec![
                c(
                    "DECRBY",
                    Preload::Strings("1000000000000"),
                    "DECRBY stock:__rand_int__ 1",
                ),
                c(
                    "STOCK.DEDUCT",
                    Preload::Stocks,
                    "STOCK.DEDUCT stock:__rand_int__ 1",
                ),
                c(
                    "STOCK.DEDUCT ID",
                    Preload::Stocks,
                    "STOCK.DEDUCT stock:__rand_int__ 1 ID order:__rand_int__",
                ),
                c(
                    "Lua seckill",
                    Preload::Strings("1000000000000"),
                    "EVALSHA {sha:seckill} 1 stock:__rand_int__ 1",
                ),
                c(
                    "Lua dedupe set",
                    Preload::Strings("1000000000000"),
                    "EVALSHA {sha:dedupe} 1 stock:__rand_int__ 1 order:__rand_int__",
                ),
            ],
        },
    ]
}

fn preload(con: &mut redis::Connection, what: Preload, keys: usize) -> Res<()> {
    redis::cmd("FLUSHALL").query::<()>(con)?;
    let prefix_and_cmd = match what {
        Preload::Nothing => return Ok(()),
        Preload::Strings(v) => (v, 0),
        Preload::Locks => (OWNER, 1),
        Preload::Stocks => ("1000000000000", 2),
    };
    for chunk in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let lock_key = format!("lock:{i:012}");
            let stock_key = format!("stock:{i:012}");
            match prefix_and_cmd {
                (v, 0) => {
                    pipe.cmd("MSET")
                        .arg(&lock_key)
                        .arg(v)
                        .arg(&stock_key)
                        .arg(v)
                        .ignore();
                }
                (v, 1) => {
                    pipe.cmd("LOCK.ACQUIRE")
                        .arg(&lock_key)
                        .arg(v)
                        .arg(3_600_000)
                        .ignore();
                }
                (v, _) => {
                    pipe.cmd("STOCK.SET").arg(&stock_key).arg(v).ignore();
                }
            }
        }
        pipe.query::<()>(con)?;
    }
    Ok(())
}

/// A group's figures: [contender][round].
pub struct GroupResult {
    name: &'static str,
    note: &'static str,
    pipeline: usize,
    names: Vec<&'static str>,
    baseline: usize,
    /// [contender][round]
    rps: Vec<Vec<f64>>,
    cpu_us: Vec<Vec<f64>>,
}

impl GroupResult {
    fn ratio(&self, series: &[Vec<f64>], i: usize) -> f64 {
        let per_round: Vec<f64> = series[i]
            .iter()
            .zip(&series[self.baseline])
            .map(|(x, b)| x / b)
            .collect();
        median(per_round)
    }

    fn cpu_ratio(&self, i: usize) -> f64 {
        self.ratio(&self.cpu_us, i)
    }

    fn cpu_ratio_between(&self, i: usize, j: usize) -> f64 {
        let per_round: Vec<f64> = self.cpu_us[i]
            .iter()
            .zip(&self.cpu_us[j])
            .map(|(x, y)| x / y)
            .collect();
        median(per_round)
    }

    /// The group's bars in the chart: each contender's CPU per call against the baseline's.
    pub fn chart_group(&self) -> ChartGroup {
        ChartGroup {
            title: format!("{} (pipeline {})", self.name, self.pipeline),
            bars: (0..self.names.len())
                .map(|i| (self.names[i], self.cpu_ratio(i)))
                .collect(),
        }
    }

    fn write(&self, out: &mut String, pipeline: usize) -> Res<()> {
        writeln!(out, "## {} (pipeline {pipeline})\n", self.name)?;
        writeln!(out, "{}\n", self.note)?;
        let base = self.names[self.baseline];
        head(
            out,
            &[
                ("contender", Align::Left),
                ("ops/s", Align::Right),
                ("server CPU µs/call", Align::Right),
                (&format!("throughput vs {base}"), Align::Right),
                (&format!("CPU/call vs {base}"), Align::Right),
            ],
        )?;
        for (i, name) in self.names.iter().enumerate() {
            row(
                out,
                &[
                    name.to_string(),
                    format!("{:.0}", median(self.rps[i].clone())),
                    format!("{:.3}", median(self.cpu_us[i].clone())),
                    format!("{:.2}x", self.ratio(&self.rps, i)),
                    format!("{:.2}x", self.cpu_ratio(i)),
                ],
            )?;
        }
        // The module command against the Lua scripts of its group.
        if let Some(m) = self
            .names
            .iter()
            .position(|n| n.starts_with("LOCK.") || *n == "STOCK.DEDUCT")
        {
            for (j, name) in self.names.iter().enumerate() {
                if name.starts_with("Lua") {
                    writeln!(
                        out,
                        "\n{} costs {:.2}x the CPU per call of {name}.",
                        self.names[m],
                        self.cpu_ratio_between(m, j)
                    )?;
                }
            }
        }
        if let (Some(m), Some(j)) = (
            self.names.iter().position(|n| *n == "STOCK.DEDUCT ID"),
            self.names.iter().position(|n| *n == "Lua dedupe set"),
        ) {
            writeln!(
                out,
                "\nSTOCK.DEDUCT ID costs {:.2}x the CPU per call of Lua dedupe set.",
                self.cpu_ratio_between(m, j)
            )?;
        }
        writeln!(out)?;
        Ok(())
    }
}

/// Every group at pipeline 1 (`calls_p1` calls a round) and 16 (`calls_p16`), `rounds` rounds
/// each: their tables written, their figures returned (for the chart).
pub fn throughput(
    server: &Server,
    con: &mut redis::Connection,
    (calls_p1, calls_p16): (usize, usize),
    rounds: usize,
    pin: bool,
    report: &mut String,
) -> Res<Vec<GroupResult>> {
    let mut results = Vec::new();
    for pipeline in [1usize, 16] {
        for group in groups() {
            let calls = if pipeline == 1 { calls_p1 } else { calls_p16 };
            let result = measure_group(server, con, &group, pipeline, calls, rounds, pin)?;
            result.write(report, pipeline)?;
            results.push(result);
        }
    }
    Ok(results)
}

fn measure_group(
    server: &Server,
    con: &mut redis::Connection,
    group: &Group,
    pipeline: usize,
    calls: usize,
    rounds: usize,
    pin: bool,
) -> Res<GroupResult> {
    let n = group.contenders.len();
    let mut rps = vec![Vec::new(); n];
    let mut cpu_us = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            // Alternate: each round starts with a different contender.
            let i = (k + round) % n;
            let contender = &group.contenders[i];
            preload(con, contender.preload, KEYSPACE)?;
            let args = with_shas(&contender.args, &load_scripts(con)?);
            let before = cpu_seconds(con)?;
            let r = redis_benchmark(server.port(), KEYSPACE, pipeline, calls, &args, pin)?;
            let after = cpu_seconds(con)?;
            rps[i].push(r);
            cpu_us[i].push((after - before) * 1e6 / calls as f64);
        }
    }
    progress!("{} pipeline {pipeline} done", group.name);
    Ok(GroupResult {
        name: group.name,
        note: group.note,
        pipeline,
        names: group.contenders.iter().map(|c| c.name).collect(),
        baseline: group.baseline,
        rps,
        cpu_us,
    })
}

/// The instructions the server executes per call of each contender (pipeline 16), counted by
/// callgrind: the same every run, so it shows what a code change does where CPU time on a
/// shared machine swings by more than the change. Skipped when valgrind is not installed.
pub fn instructions(module: &Path, pin: bool, calls: usize, report: &mut String) -> Res<()> {
    // A smaller keyspace than above (loading 100,000 keys under callgrind takes 15 s a
    // contender), with the same proportion of calls to keys as the pipeline-16 runs, so the
    // same share of calls find their key taken.
    let keys = calls / 2;
    writeln!(report, "## Instructions per call (callgrind)\n")?;
    if !has_valgrind() {
        writeln!(report, "Skipped: valgrind is not installed.\n")?;
        progress!("valgrind not found; instruction counts skipped");
        return Ok(());
    }
    writeln!(
        report,
        "The server's own user-space instructions per call (all of Redis: parsing, the command, \
         the reply), counted by callgrind over {calls} calls at pipeline 16 on a server of its \
         own. The workloads are those above over {keys} keys, twice as many calls as keys as \
         in the pipeline-16 runs. Unlike CPU time, this count repeats from run to run to within \
         a fraction of a percent, but it does not see cache misses or system calls.\n"
    )?;
    let server = harness::start_under_callgrind(module, pin)?;
    let mut con = server.try_conn()?;
    let pid = info_field(&mut con, "server", "process_id")?;
    for group in groups() {
        let mut counts = Vec::new();
        for contender in &group.contenders {
            preload(&mut con, contender.preload, keys)?;
            let args = with_shas(&contender.args, &load_scripts(&mut con)?);
            callgrind_control(&["-z", &pid])?;
            redis_benchmark(server.port(), keys, 16, calls, &args, pin)?;
            let dumped = callgrind_dump(server.dir(), &pid)?;
            counts.push(dumped as f64 / calls as f64);
        }
        writeln!(report, "### {}\n", group.name)?;
        let base = group.contenders[group.baseline].name;
        head(
            report,
            &[
                ("contender", Align::Left),
                ("instructions/call", Align::Right),
                (&format!("vs {base}"), Align::Right),
            ],
        )?;
        for (contender, n) in group.contenders.iter().zip(&counts) {
            row(
                report,
                &[
                    contender.name.to_string(),
                    format!("{n:.0}"),
                    format!("{:.2}x", n / counts[group.baseline]),
                ],
            )?;
        }
        writeln!(report)?;
        progress!("{} instructions done", group.name);
    }
    Ok(())
}

/// A contender's arguments with `{sha:NAME}` replaced by the loaded script's SHA.
fn with_shas(args: &[String], shas: &[(&'static str, String)]) -> Vec<String> {
    args.iter()
        .map(|a| {
            shas.iter()
                .find(|(name, _)| *a == format!("{{sha:{name}}}"))
                .map_or_else(|| a.clone(), |(_, sha)| sha.clone())
        })
        .collect()
}
