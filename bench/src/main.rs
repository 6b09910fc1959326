//! `make bench`: redis-fence against native commands and Lua scripts, on one server.
//!
//! Starts its own redis-server with the release module (pinned to core 0 when there are two
//! or more), drives it with redis-benchmark (pinned to core 1) for raw throughput and with its
//! own threads for the scenarios, alternates the contenders round by round, and reports the
//! median of the per-round ratios. Results go to bench/results/ as Markdown and SVG. The Big
//! ledger section (big_ledger.rs) runs on servers of its own, for this build and, with
//! `--before <module>`, an earlier one; `--big-ledger-only` runs only it.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// When the run began, for the progress lines.
static BEGAN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, with the seconds since the run began.
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!(
            "bench [{:>5.1} s]: {}",
            $crate::BEGAN.get_or_init(std::time::Instant::now).elapsed().as_secs_f64(),
            format!($($arg)*)
        )
    };
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

mod big_ledger;

/// A 36-byte owner, as a UUID string would be.
const OWNER: &str = "3f2b8c1e-9a4d-4e7b-8c2f-5d6a7b8c9d0e";
/// The same length, with redis-benchmark's 12-digit random number in it.
const ANY_OWNER: &str = "3f2b8c1e-9a4d-4e7b-8c2f-__rand_int__";
const KEYSPACE: usize = 100_000;

const LUA_FENCED_ACQUIRE: &str =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
     return redis.call('INCR', KEYS[1] .. ':token') end return false";
const LUA_RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) end return 0";
const LUA_RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
const LUA_SECKILL: &str = "local s = tonumber(redis.call('GET', KEYS[1])) \
     if s and s >= tonumber(ARGV[1]) then return redis.call('DECRBY', KEYS[1], ARGV[1]) end return false";
const LUA_DEDUPE: &str = "local set = KEYS[1] .. ':orders' \
     if redis.call('SISMEMBER', set, ARGV[2]) == 1 then return tonumber(redis.call('GET', KEYS[1])) end \
     local s = tonumber(redis.call('GET', KEYS[1])) \
     if s and s >= tonumber(ARGV[1]) then redis.call('SADD', set, ARGV[2]) \
     return redis.call('DECRBY', KEYS[1], ARGV[1]) end return false";

struct Options {
    rounds: usize,
    calls_p1: usize,
    calls_p16: usize,
    calls_instructions: usize,
    memory_keys: usize,
    big_ledger: big_ledger::Options,
    out: PathBuf,
}

/// The value of `--name value` or `--name=value`, else of the environment variable `env`.
fn setting(name: &str, env: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let flag = format!("--{name}");
    let from_args = args.iter().enumerate().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{flag}=")).map(str::to_string)
        }
    });
    from_args.or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let began = *BEGAN.get_or_init(Instant::now);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let quick = std::env::args().any(|a| a == "--quick");
    let opts = Options {
        rounds: if quick { 2 } else { 5 },
        calls_p1: if quick { 10_000 } else { 40_000 },
        calls_p16: if quick { 40_000 } else { 200_000 },
        calls_instructions: if quick { 10_000 } else { 20_000 },
        memory_keys: if quick { 100_000 } else { 1_000_000 },
        big_ledger: big_ledger::Options {
            entries: if quick { 100_000 } else { 1_000_000 },
            reps: if quick { 3 } else { 5 },
            destructive_reps: if quick { 2 } else { 3 },
        },
        out: root.join("bench/results"),
    };
    // The module under test (default: this tree's release build) and, for the Big ledger
    // section's before column, the module before issue 14 (`make bench` builds it).
    let module = setting("module", "FENCE_BENCH_MODULE").map_or_else(
        || root.join("target/release/libredis_fence.so"),
        PathBuf::from,
    );
    let before = setting("before", "FENCE_BENCH_BEFORE").map(PathBuf::from);
    let before_label =
        setting("before-label", "FENCE_BENCH_BEFORE_LABEL").unwrap_or_else(|| "before".to_string());
    for m in std::iter::once(&module).chain(&before) {
        if !m.is_file() {
            return Err(format!("{} not found: run `cargo build --release`", m.display()).into());
        }
    }
    // redis-server changes to its own directory before it loads the module.
    let module = fs::canonicalize(&module)?;
    let before = before.map(fs::canonicalize).transpose()?;
    let mut ledger_modules = Vec::new();
    if let Some(before) = &before {
        ledger_modules.push(big_ledger::Module {
            label: before_label,
            path: before,
        });
    }
    ledger_modules.push(big_ledger::Module {
        label: "after".to_string(),
        path: &module,
    });
    // All online cores, not just this process's affinity (`make bench` runs it on core 1).
    let cores = Command::new("nproc")
        .arg("--all")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
    let pin = cores >= 2;
    let server = Server::start(&module, pin)?;
    let mut con = server.conn()?;
    // The server by what it is: Valkey reports redis_version:7.2.4 beside its own version.
    let version = match info_field(&mut con, "server", "valkey_version") {
        Ok(v) => format!("Valkey {v}"),
        Err(_) => format!("Redis {}", info_field(&mut con, "server", "redis_version")?),
    };
    progress!("{version}, {cores} cores, pinning: {pin}");
    if std::env::args().any(|a| a == "--hand-off-only") {
        // Only the hand-off and timer latency section, printed; results.md is left alone.
        let mut section = String::new();
        hand_off(&server, &mut section)?;
        println!("{section}");
        return Ok(());
    }
    if std::env::args().any(|a| a == "--big-ledger-only") {
        // Only the Big ledger section: printed, and put in place of the one in results.md.
        drop(con);
        drop(server);
        let mut section = String::new();
        big_ledger::big_ledger(&ledger_modules, pin, &opts.big_ledger, &mut section)?;
        println!("{section}");
        let path = opts.out.join("results.md");
        let text = fs::read_to_string(&path).unwrap_or_default();
        fs::create_dir_all(&opts.out)?;
        fs::write(&path, big_ledger::splice(&text, &section))?;
        eprintln!(
            "bench: wrote the Big ledger section of {} after {:.0} s",
            path.display(),
            began.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let mut report = String::new();
    writeln!(report, "# redis-fence benchmark results\n")?;
    writeln!(
        report,
        "{version}, {cores} cores; server pinned to core 0 and load generator to core 1: {pin}. \
         {} rounds, contenders alternated round by round; every figure is the median over the \
         rounds, every ratio the median of the per-round ratios. CPU is the server's own \
         `used_cpu_user + used_cpu_sys` per call (`INFO cpu`). Keys drawn from {KEYSPACE}; 50 \
         connections (redis-benchmark).\n",
        opts.rounds
    )?;

    let mut chart = Vec::new();
    for pipeline in [1usize, 16] {
        for group in groups() {
            let calls = if pipeline == 1 {
                opts.calls_p1
            } else {
                opts.calls_p16
            };
            let result =
                measure_group(&server, &mut con, &group, pipeline, calls, opts.rounds, pin)?;
            result.write(&mut report, pipeline)?;
            chart.push(result);
        }
    }

    instructions(&module, pin, opts.calls_instructions, &mut report)?;

    writeln!(report, "## Scenarios\n")?;
    seckill(&server, &mut report)?;
    contended_lock(&server, &mut report)?;
    hand_off(&server, &mut report)?;

    writeln!(report, "## Memory\n")?;
    memory(&server, &mut con, opts.memory_keys, &mut report)?;
    progress!("memory done");
    drop(con);
    drop(server);

    big_ledger::big_ledger(&ledger_modules, pin, &opts.big_ledger, &mut report)?;
    progress!("big ledger done");

    fs::create_dir_all(&opts.out)?;
    fs::write(opts.out.join("results.md"), &report)?;
    fs::write(opts.out.join("cpu-per-call.svg"), svg_chart(&chart))?;
    println!("{report}");
    eprintln!(
        "bench: wrote {} after {:.0} s",
        opts.out.join("results.md").display(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Server
// ------------------------------------------------------------------------------------------

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(module: &Path, pin: bool) -> Res<Server> {
        Self::start_with(module, pin, false)
    }

    /// A server running under callgrind, which counts the instructions it executes.
    fn start_under_callgrind(module: &Path, pin: bool) -> Res<Server> {
        Self::start_with(module, pin, true)
    }

    fn start_with(module: &Path, pin: bool, callgrind: bool) -> Res<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("fence-bench-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let mut prefix: Vec<String> = Vec::new();
        if pin {
            prefix.extend(["taskset", "-c", "0"].map(String::from));
        }
        if callgrind {
            prefix.extend(["valgrind", "--tool=callgrind"].map(String::from));
            prefix.push(format!(
                "--callgrind-out-file={}",
                dir.join("callgrind.%p").display()
            ));
        }
        prefix.push("redis-server".into());
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..]);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            // DEBUG DIGEST-VALUE and DEBUG RELOAD (the Big ledger section).
            "--enable-debug-command",
            "yes",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(&dir)
        .args(["--logfile", "redis.log", "--loadmodule"])
        .arg(module)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn()?;
        let server = Server { child, port, dir };
        // Under valgrind the server takes seconds to start.
        for _ in 0..if callgrind { 3000 } else { 200 } {
            if let Ok(mut c) = server.conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Ok(server);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not start".into())
    }

    /// The server's process id (its main thread's too).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(con)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> Res<String> {
    let info: String = redis::cmd("INFO").arg(section).query(con)?;
    info.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .ok_or_else(|| format!("INFO {section} has no {field}").into())
}

fn cpu_seconds(con: &mut redis::Connection) -> Res<f64> {
    let user: f64 = info_field(con, "cpu", "used_cpu_user")?.parse()?;
    let sys: f64 = info_field(con, "cpu", "used_cpu_sys")?.parse()?;
    Ok(user + sys)
}

fn used_memory(con: &mut redis::Connection) -> Res<i64> {
    Ok(info_field(con, "memory", "used_memory")?.parse()?)
}

// ------------------------------------------------------------------------------------------
// Throughput and CPU per call, through redis-benchmark
// ------------------------------------------------------------------------------------------

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

fn load_scripts(con: &mut redis::Connection) -> Res<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for (name, body) in [
        ("acquire", LUA_FENCED_ACQUIRE),
        ("release", LUA_RELEASE),
        ("renew", LUA_RENEW),
        ("seckill", LUA_SECKILL),
        ("dedupe", LUA_DEDUPE),
    ] {
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(body).query(con)?;
        out.push((name, sha));
    }
    Ok(out)
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

/// Runs redis-benchmark once; returns requests per second.
fn redis_benchmark(
    port: u16,
    keys: usize,
    pipeline: usize,
    calls: usize,
    args: &[String],
    pin: bool,
) -> Res<f64> {
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", "redis-benchmark"]);
        c
    } else {
        Command::new("redis-benchmark")
    };
    let out = cmd
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", "50"])
        .args(["-P", &pipeline.to_string(), "-n", &calls.to_string()])
        .args(["-r", &keys.to_string(), "--csv"])
        .args(args)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let rps = last
        .split(',')
        .nth(1)
        .map(|f| f.trim_matches('"'))
        .and_then(|f| f.parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "cannot parse redis-benchmark output: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(rps)
}

struct GroupResult {
    name: &'static str,
    note: &'static str,
    pipeline: usize,
    names: Vec<&'static str>,
    baseline: usize,
    /// [contender][round]
    rps: Vec<Vec<f64>>,
    cpu_us: Vec<Vec<f64>>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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

    fn write(&self, out: &mut String, pipeline: usize) -> Res<()> {
        writeln!(out, "## {} (pipeline {pipeline})\n", self.name)?;
        writeln!(out, "{}\n", self.note)?;
        writeln!(
            out,
            "| contender | ops/s | server CPU µs/call | throughput vs {} | CPU/call vs {} |",
            self.names[self.baseline], self.names[self.baseline]
        )?;
        writeln!(out, "| --- | ---: | ---: | ---: | ---: |")?;
        for (i, name) in self.names.iter().enumerate() {
            writeln!(
                out,
                "| {name} | {:.0} | {:.3} | {:.2}x | {:.2}x |",
                median(self.rps[i].clone()),
                median(self.cpu_us[i].clone()),
                self.ratio(&self.rps, i),
                self.cpu_ratio(i)
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
            let r = redis_benchmark(server.port, KEYSPACE, pipeline, calls, &args, pin)?;
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

// ------------------------------------------------------------------------------------------
// Instructions per call, under callgrind
// ------------------------------------------------------------------------------------------

/// The instructions the server executes per call of each contender (pipeline 16), counted by
/// callgrind: the same every run, so it shows what a code change does where CPU time on a
/// shared machine swings by more than the change. Skipped when valgrind is not installed.
fn instructions(module: &Path, pin: bool, calls: usize, report: &mut String) -> Res<()> {
    // A smaller keyspace than above (loading 100,000 keys under callgrind takes 15 s a
    // contender), with the same proportion of calls to keys as the pipeline-16 runs, so the
    // same share of calls find their key taken.
    let keys = calls / 2;
    writeln!(report, "## Instructions per call (callgrind)\n")?;
    let has_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_valgrind {
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
    let server = Server::start_under_callgrind(module, pin)?;
    let mut con = server.conn()?;
    let pid = info_field(&mut con, "server", "process_id")?;
    for group in groups() {
        let mut counts = Vec::new();
        for contender in &group.contenders {
            preload(&mut con, contender.preload, keys)?;
            let args = with_shas(&contender.args, &load_scripts(&mut con)?);
            callgrind_control(&["-z", &pid])?;
            redis_benchmark(server.port, keys, 16, calls, &args, pin)?;
            let dumped = callgrind_dump(&server.dir, &pid)?;
            counts.push(dumped as f64 / calls as f64);
        }
        writeln!(report, "### {}\n", group.name)?;
        let base = group.contenders[group.baseline].name;
        writeln!(report, "| contender | instructions/call | vs {base} |")?;
        writeln!(report, "| --- | ---: | ---: |")?;
        for (contender, n) in group.contenders.iter().zip(&counts) {
            writeln!(
                report,
                "| {} | {n:.0} | {:.2}x |",
                contender.name,
                n / counts[group.baseline]
            )?;
        }
        writeln!(report)?;
        progress!("{} instructions done", group.name);
    }
    Ok(())
}

fn callgrind_control(args: &[&str]) -> Res<()> {
    let out = Command::new("callgrind_control").args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "callgrind_control {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Dumps the counts since the last zeroing and returns the instructions in the dump.
fn callgrind_dump(dir: &Path, pid: &str) -> Res<u64> {
    let dumps = |dir: &Path| -> Res<Vec<PathBuf>> {
        Ok(fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .starts_with(&format!("callgrind.{pid}."))
                })
            })
            .collect())
    };
    for old in dumps(dir)? {
        fs::remove_file(old)?;
    }
    callgrind_control(&["-d", pid])?;
    let dump = dumps(dir)?
        .into_iter()
        .next()
        .ok_or("callgrind wrote no dump")?;
    let text = fs::read_to_string(&dump)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no instruction total in {}", dump.display()).into())
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

// ------------------------------------------------------------------------------------------
// Scenarios, with our own load generator
// ------------------------------------------------------------------------------------------

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[derive(Clone, Copy, PartialEq)]
enum Seckill {
    ClientLock,
    Lua,
    Module,
}

struct SeckillResult {
    name: &'static str,
    sell_out: Option<Duration>,
    elapsed: Duration,
    sold: usize,
    attempts: usize,
    latencies_ms: Vec<f64>,
    final_stock: i64,
}

fn seckill_run(server: &Server, mode: Seckill) -> Res<SeckillResult> {
    const ITEMS: i64 = 10_000;
    const BUYERS: usize = 200;
    const ATTEMPTS: usize = 50_000;
    // The client lock recipe is so slow under contention that it gets a time limit; its
    // sell-out time is then projected from the rate it reached.
    const LIMIT: Duration = Duration::from_secs(30);
    let mut con = server.conn()?;
    redis::cmd("FLUSHALL").query::<()>(&mut con)?;
    let shas = load_scripts(&mut con)?;
    let sha = |n: &str| {
        shas.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    match mode {
        Seckill::Module => redis::cmd("STOCK.SET")
            .arg("sku")
            .arg(ITEMS)
            .query::<()>(&mut con)?,
        _ => redis::cmd("SET")
            .arg("sku")
            .arg(ITEMS)
            .query::<()>(&mut con)?,
    }
    let attempts = Arc::new(AtomicUsize::new(0));
    let sold = Arc::new(AtomicUsize::new(0));
    let sold_out = Arc::new(AtomicBool::new(false));
    let last_sale_us = Arc::new(AtomicI64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(ATTEMPTS)));
    let start = Instant::now();
    let mut handles = Vec::new();
    for b in 0..BUYERS {
        let mut con = server.conn()?;
        let (attempts, sold, sold_out, last_sale_us, latencies) = (
            attempts.clone(),
            sold.clone(),
            sold_out.clone(),
            last_sale_us.clone(),
            latencies.clone(),
        );
        let (seckill_sha, release_sha) = (sha("seckill"), sha("release"));
        handles.push(thread::spawn(move || -> Res<()> {
            let owner = format!("buyer-{b}");
            let mut mine = Vec::new();
            loop {
                if sold_out.load(Ordering::Relaxed) || start.elapsed() > LIMIT {
                    break;
                }
                let n = attempts.fetch_add(1, Ordering::Relaxed);
                if n >= ATTEMPTS {
                    break;
                }
                let t0 = Instant::now();
                let bought = match mode {
                    Seckill::Module => {
                        let r: Option<i64> = redis::cmd("STOCK.DEDUCT")
                            .arg("sku")
                            .arg(1)
                            .arg("ID")
                            .arg(format!("order-{n}"))
                            .query(&mut con)?;
                        if r == Some(0) || r.is_none() {
                            sold_out.store(true, Ordering::Relaxed);
                        }
                        r.is_some()
                    }
                    Seckill::Lua => {
                        let r: Option<i64> = redis::cmd("EVALSHA")
                            .arg(&seckill_sha)
                            .arg(1)
                            .arg("sku")
                            .arg(1)
                            .query(&mut con)?;
                        if r == Some(0) || r.is_none() {
                            sold_out.store(true, Ordering::Relaxed);
                        }
                        r.is_some()
                    }
                    Seckill::ClientLock => {
                        // The recipe people copy: a global lock with a retry sleep.
                        loop {
                            let ok: Option<String> = redis::cmd("SET")
                                .arg("lock:sku")
                                .arg(&owner)
                                .arg("NX")
                                .arg("PX")
                                .arg(1000)
                                .query(&mut con)?;
                            if ok.is_some() {
                                break;
                            }
                            thread::sleep(Duration::from_millis(1));
                        }
                        let stock: i64 = redis::cmd("GET").arg("sku").query(&mut con)?;
                        let bought = if stock > 0 {
                            let left: i64 = redis::cmd("DECR").arg("sku").query(&mut con)?;
                            if left <= 0 {
                                sold_out.store(true, Ordering::Relaxed);
                            }
                            true
                        } else {
                            sold_out.store(true, Ordering::Relaxed);
                            false
                        };
                        redis::cmd("EVALSHA")
                            .arg(&release_sha)
                            .arg(1)
                            .arg("lock:sku")
                            .arg(&owner)
                            .query::<i64>(&mut con)?;
                        bought
                    }
                };
                mine.push(t0.elapsed().as_secs_f64() * 1e3);
                if bought {
                    sold.fetch_add(1, Ordering::Relaxed);
                    last_sale_us.fetch_max(start.elapsed().as_micros() as i64, Ordering::Relaxed);
                }
            }
            if let Ok(mut l) = latencies.lock() {
                l.extend(mine);
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join().map_err(|_| "a buyer thread panicked")??;
    }
    let elapsed = start.elapsed();
    let final_stock: i64 = match mode {
        Seckill::Module => redis::cmd("STOCK.GET").arg("sku").query(&mut con)?,
        _ => redis::cmd("GET").arg("sku").query(&mut con)?,
    };
    let sold_n = sold.load(Ordering::Relaxed);
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(|a, b| a.total_cmp(b));
    let sell_out = (final_stock <= 0)
        .then(|| Duration::from_micros(last_sale_us.load(Ordering::Relaxed) as u64));
    Ok(SeckillResult {
        name: match mode {
            Seckill::ClientLock => {
                "client lock recipe (SET NX PX + retry sleep, GET, DECR, Lua release)"
            }
            Seckill::Lua => "Lua seckill script",
            Seckill::Module => "STOCK.DEDUCT … ID",
        },
        sell_out,
        elapsed,
        sold: sold_n,
        attempts: attempts.load(Ordering::Relaxed).min(ATTEMPTS),
        latencies_ms: lat,
        final_stock,
    })
}

/// Rounds of the Lua and module seckill, alternated; the client lock recipe runs once (it is
/// capped at 30 s).
const SCENARIO_ROUNDS: usize = 3;

fn seckill_row(out: &mut String, name: &str, runs: &[SeckillResult]) -> Res<()> {
    let med = |f: &dyn Fn(&SeckillResult) -> f64| median(runs.iter().map(f).collect());
    let sold_out = runs.iter().all(|r| r.sell_out.is_some());
    let time = med(&|r| r.sell_out.unwrap_or(r.elapsed).as_secs_f64());
    let worst_oversold = runs
        .iter()
        .map(|r| (r.sold as i64 - 10_000).max(0) + (-r.final_stock).max(0))
        .max()
        .unwrap_or(0);
    writeln!(
        out,
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
        if sold_out {
            format!("{time:.3} s")
        } else {
            format!("not sold out in {time:.1} s")
        },
        med(&|r| r.sold as f64 / r.sell_out.unwrap_or(r.elapsed).as_secs_f64()),
        med(&|r| percentile(&r.latencies_ms, 0.5)),
        med(&|r| percentile(&r.latencies_ms, 0.99)),
        med(&|r| percentile(&r.latencies_ms, 0.999)),
        med(&|r| r.sold as f64),
        med(&|r| r.final_stock as f64),
        worst_oversold
    )?;
    Ok(())
}

fn seckill(server: &Server, out: &mut String) -> Res<()> {
    writeln!(
        out,
        "### Seckill: 10,000 items, 200 buyers, up to 50,000 purchase attempts\n"
    )?;
    writeln!(
        out,
        "Lua and STOCK.DEDUCT: {SCENARIO_ROUNDS} rounds each, alternated; medians. The client \
         lock recipe: one run, capped at 30 s. Oversold: the worst round.\n"
    )?;
    writeln!(out, "| variant | time to sell out | orders/s | p50 ms | p99 ms | p99.9 ms | sold | final stock | oversold |")?;
    writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    let recipe = seckill_run(server, Seckill::ClientLock)?;
    progress!("seckill recipe done ({} attempts)", recipe.attempts);
    let (mut lua, mut module) = (Vec::new(), Vec::new());
    for round in 0..SCENARIO_ROUNDS {
        let order = if round % 2 == 0 {
            [Seckill::Lua, Seckill::Module]
        } else {
            [Seckill::Module, Seckill::Lua]
        };
        for mode in order {
            let r = seckill_run(server, mode)?;
            if mode == Seckill::Lua {
                lua.push(r);
            } else {
                module.push(r);
            }
        }
        progress!("seckill round {round} done");
    }
    seckill_row(out, recipe.name, std::slice::from_ref(&recipe))?;
    seckill_row(out, "Lua seckill script", &lua)?;
    seckill_row(out, "STOCK.DEDUCT … ID", &module)?;
    let secs = |r: &SeckillResult| r.sell_out.unwrap_or(r.elapsed).as_secs_f64();
    let per_round: Vec<f64> = lua
        .iter()
        .zip(&module)
        .map(|(l, m)| secs(l) / secs(m))
        .collect();
    writeln!(
        out,
        "\nSTOCK.DEDUCT sells out {:.2}x as fast as the Lua script (median of the per-round ratios).",
        median(per_round)
    )?;
    let module_time = median(module.iter().map(secs).collect());
    match recipe.sell_out {
        Some(t) => writeln!(
            out,
            "STOCK.DEDUCT sells out {:.1}x as fast as the client lock recipe.\n",
            t.as_secs_f64() / module_time
        )?,
        None => {
            let projected = if recipe.sold > 0 {
                recipe.elapsed.as_secs_f64() * 10_000.0 / recipe.sold as f64
            } else {
                f64::INFINITY
            };
            writeln!(
                out,
                "The client lock recipe did not sell out within its 30 s limit; at the rate it \
                 reached it would need about {projected:.0} s, {:.0}x the time STOCK.DEDUCT took.\n",
                projected / module_time
            )?
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Waiting {
    Wait,
    Poll(u64),
}

fn contended_run(server: &Server, mode: Waiting) -> Res<ContendedRun> {
    const CLIENTS: usize = 50;
    const EACH: usize = 20;
    let mut con = server.conn()?;
    redis::cmd("FLUSHALL").query::<()>(&mut con)?;
    let release_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(LUA_RELEASE)
        .query(&mut con)?;
    let waits = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut handles = Vec::new();
    for cl in 0..CLIENTS {
        let mut con = server.conn()?;
        let waits = waits.clone();
        let release_sha = release_sha.clone();
        handles.push(thread::spawn(move || -> Res<f64> {
            let owner = format!("client-{cl}");
            let mut total_wait = 0.0;
            for _ in 0..EACH {
                let t0 = Instant::now();
                match mode {
                    Waiting::Wait => {
                        let t: Option<i64> = redis::cmd("LOCK.ACQUIRE")
                            .arg("lock:hot")
                            .arg(&owner)
                            .arg(10_000)
                            .arg("WAIT")
                            .arg(0)
                            .query(&mut con)?;
                        if t.is_none() {
                            return Err("WAIT 0 returned nil".into());
                        }
                    }
                    Waiting::Poll(ms) => loop {
                        let ok: Option<String> = redis::cmd("SET")
                            .arg("lock:hot")
                            .arg(&owner)
                            .arg("NX")
                            .arg("PX")
                            .arg(10_000)
                            .query(&mut con)?;
                        if ok.is_some() {
                            break;
                        }
                        thread::sleep(Duration::from_millis(ms));
                    },
                }
                let waited = t0.elapsed().as_secs_f64() * 1e3;
                total_wait += waited;
                if let Ok(mut w) = waits.lock() {
                    w.push(waited);
                }
                // The critical section: one write.
                redis::cmd("INCR").arg("counter").query::<i64>(&mut con)?;
                match mode {
                    Waiting::Wait => redis::cmd("LOCK.RELEASE")
                        .arg("lock:hot")
                        .arg(&owner)
                        .query::<i64>(&mut con)?,
                    Waiting::Poll(_) => redis::cmd("EVALSHA")
                        .arg(&release_sha)
                        .arg(1)
                        .arg("lock:hot")
                        .arg(&owner)
                        .query::<i64>(&mut con)?,
                };
            }
            Ok(total_wait)
        }));
    }
    let mut worst = 0.0f64;
    for h in handles {
        worst = worst.max(h.join().map_err(|_| "a client thread panicked")??);
    }
    let elapsed = start.elapsed();
    let mut w = waits.lock().map(|w| w.clone()).unwrap_or_default();
    w.sort_by(|a, b| a.total_cmp(b));
    Ok((elapsed, w, worst))
}

/// One contended-lock run: total time, every wait (ms), the worst client's total wait (ms).
type ContendedRun = (Duration, Vec<f64>, f64);

fn contended_lock(server: &Server, out: &mut String) -> Res<()> {
    writeln!(
        out,
        "### Contended lock: 50 clients, one key, 20 acquire / critical section / release each\n"
    )?;
    writeln!(
        out,
        "{SCENARIO_ROUNDS} rounds, the three ways alternated; medians.\n"
    )?;
    writeln!(out, "| waiting | total time | acquisitions/s | wait p50 ms | wait p99 ms | worst client's total wait ms |")?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    let ways = [
        ("LOCK.ACQUIRE … WAIT 0", Waiting::Wait),
        ("SET NX PX, poll every 1 ms", Waiting::Poll(1)),
        ("SET NX PX, poll every 50 ms", Waiting::Poll(50)),
    ];
    let mut runs: Vec<Vec<ContendedRun>> = vec![Vec::new(); ways.len()];
    for round in 0..SCENARIO_ROUNDS {
        for k in 0..ways.len() {
            let i = (k + round) % ways.len();
            runs[i].push(contended_run(server, ways[i].1)?);
        }
        progress!("contended lock round {round} done");
    }
    for ((name, _), rs) in ways.iter().zip(&runs) {
        let med = |f: &dyn Fn(&ContendedRun) -> f64| median(rs.iter().map(f).collect());
        writeln!(
            out,
            "| {name} | {:.3} s | {:.0} | {:.2} | {:.2} | {:.0} |",
            med(&|r| r.0.as_secs_f64()),
            med(&|r| r.1.len() as f64 / r.0.as_secs_f64()),
            med(&|r| percentile(&r.1, 0.5)),
            med(&|r| percentile(&r.1, 0.99)),
            med(&|r| r.2)
        )?;
    }
    writeln!(out)?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Hand-off and timer latency (reported here; the tests assert only the README's contract)
// ------------------------------------------------------------------------------------------

/// Release hand-offs per round.
const HANDOFFS: usize = 1_000;
/// Expiry hand-offs and `WAIT 20` timeouts per round.
const TIMER_SAMPLES: usize = 30;

/// A connection's reply to `LOCK.STATUS key`: (owner, waiters), None when the lock is free.
fn lock_owner_and_waiters(con: &mut redis::Connection, key: &str) -> Res<Option<(String, i64)>> {
    let v: redis::Value = redis::cmd("LOCK.STATUS").arg(key).query(con)?;
    let redis::Value::Array(items) = v else {
        return Ok(None);
    };
    match (items.get(1), items.get(7)) {
        (Some(redis::Value::BulkString(owner)), Some(redis::Value::Int(waiters))) => Ok(Some((
            String::from_utf8_lossy(owner).into_owned(),
            *waiters,
        ))),
        _ => Err(format!("LOCK.STATUS {key}: {items:?}").into()),
    }
}

/// Polls LOCK.STATUS until `holder` holds `key` with one waiter: true; false when the lock
/// changed hands or went free first (a lock that expired before its waiter queued).
fn one_waiter_behind(con: &mut redis::Connection, key: &str, holder: &str) -> Res<bool> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lock_owner_and_waiters(con, key)? {
            Some((owner, 1)) if owner == holder => return Ok(true),
            Some((owner, _)) if owner == holder => {}
            _ => return Ok(false),
        }
        if Instant::now() >= deadline {
            return Err(format!("no waiter queued on {key}").into());
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// One key, two clients taking turns: each waits (`WAIT 0`) while the other holds the lock,
/// and is handed it by the other's `LOCK.RELEASE`. Every latency from the release being sent
/// to the waiter's reply, in ms.
fn release_hand_offs(server: &Server) -> Res<Vec<f64>> {
    enum Job {
        Wait,
        Release,
    }
    let key = "handoff";
    let owners = ["client-a", "client-b"];
    let mut monitor = server.conn()?;
    redis::cmd("DEL").arg(key).query::<i64>(&mut monitor)?;
    redis::cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg(owners[0])
        .arg(60_000)
        .query::<i64>(&mut monitor)?;
    let mut jobs = Vec::new();
    let mut dones = Vec::new();
    let mut workers = Vec::new();
    for owner in owners {
        let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Res<Instant>>();
        let mut con = server.conn()?;
        workers.push(thread::spawn(move || {
            for job in job_rx {
                let done = match job {
                    Job::Wait => redis::cmd("LOCK.ACQUIRE")
                        .arg(key)
                        .arg(owner)
                        .arg(60_000)
                        .arg("WAIT")
                        .arg(0)
                        .query::<Option<i64>>(&mut con)
                        .map_err(Into::into)
                        .and_then(|t| match t {
                            Some(_) => Ok(Instant::now()),
                            None => Err("WAIT 0 returned nil".into()),
                        }),
                    Job::Release => {
                        let at = Instant::now();
                        redis::cmd("LOCK.RELEASE")
                            .arg(key)
                            .arg(owner)
                            .query::<i64>(&mut con)
                            .map_err(Into::into)
                            .and_then(|n| match n {
                                1 => Ok(at),
                                _ => Err("the holder's release replied 0".into()),
                            })
                    }
                };
                if done_tx.send(done).is_err() {
                    return;
                }
            }
        }));
        jobs.push(job_tx);
        dones.push(done_rx);
    }
    let timeout = Duration::from_secs(10);
    let mut latencies = Vec::with_capacity(HANDOFFS);
    for i in 0..HANDOFFS {
        let (holder, waiter) = (i % 2, 1 - i % 2);
        jobs[waiter].send(Job::Wait)?;
        if !one_waiter_behind(&mut monitor, key, owners[holder])? {
            return Err(format!("hand-off {i}: the lock changed hands unexpectedly").into());
        }
        jobs[holder].send(Job::Release)?;
        let released = dones[holder].recv_timeout(timeout)??;
        let granted = dones[waiter].recv_timeout(timeout)??;
        latencies.push(granted.saturating_duration_since(released).as_secs_f64() * 1e3);
    }
    drop(jobs);
    for w in workers {
        w.join().map_err(|_| "a hand-off thread panicked")?;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(latencies)
}

/// A holder's lock expires with a client waiting (no command touches the key): how long
/// after the deadline (PEXPIRETIME) the waiter's reply arrived, in ms (wall clock, so to a
/// few µs plus the 1 ms of PEXPIRETIME's rounding).
fn expiry_hand_offs(server: &Server) -> Res<Vec<f64>> {
    let mut con = server.conn()?;
    let mut delays = Vec::with_capacity(TIMER_SAMPLES);
    let mut attempt = 0;
    while delays.len() < TIMER_SAMPLES {
        attempt += 1;
        if attempt > 10 * TIMER_SAMPLES {
            return Err("waiters kept missing their holder's 100 ms TTL".into());
        }
        let key = format!("expiry:{attempt}");
        let mut wcon = server.conn()?;
        redis::cmd("LOCK.ACQUIRE")
            .arg(&key)
            .arg("holder")
            .arg(100)
            .query::<i64>(&mut con)?;
        let deadline_ms: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut con)?;
        let waiter_key = key.clone();
        let waiter = thread::spawn(move || -> Res<u128> {
            let t: Option<i64> = redis::cmd("LOCK.ACQUIRE")
                .arg(&waiter_key)
                .arg("waiter")
                .arg(60_000)
                .arg("WAIT")
                .arg(0)
                .query(&mut wcon)?;
            t.ok_or("WAIT 0 returned nil")?;
            Ok(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_micros())
        });
        let queued = one_waiter_behind(&mut con, &key, "holder")?;
        let answered_us = waiter.join().map_err(|_| "an expiry waiter panicked")??;
        if queued {
            delays.push(answered_us as f64 / 1e3 - deadline_ms as f64);
        }
        redis::cmd("DEL").arg(&key).query::<i64>(&mut con)?;
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    Ok(delays)
}

/// `WAIT 20` on a lock held by another client: how long after its 20 ms the nil came, in ms.
fn wait_timeouts(server: &Server) -> Res<Vec<f64>> {
    let mut con = server.conn()?;
    redis::cmd("DEL").arg("timeout").query::<i64>(&mut con)?;
    redis::cmd("LOCK.ACQUIRE")
        .arg("timeout")
        .arg("holder")
        .arg(600_000)
        .query::<i64>(&mut con)?;
    let mut late = Vec::with_capacity(TIMER_SAMPLES);
    for _ in 0..TIMER_SAMPLES {
        let sent = Instant::now();
        let t: Option<i64> = redis::cmd("LOCK.ACQUIRE")
            .arg("timeout")
            .arg("waiter")
            .arg(1000)
            .arg("WAIT")
            .arg(20)
            .query(&mut con)?;
        let took = sent.elapsed();
        if t.is_some() {
            return Err("WAIT 20 on a held lock was granted".into());
        }
        late.push(took.as_secs_f64() * 1e3 - 20.0);
        thread::sleep(Duration::from_millis(5));
    }
    late.sort_by(|a, b| a.total_cmp(b));
    Ok(late)
}

fn hand_off(server: &Server, out: &mut String) -> Res<()> {
    writeln!(
        out,
        "### Hand-off and timer latency
"
    )?;
    writeln!(
        out,
        "{SCENARIO_ROUNDS} rounds; p50 and p99 are medians over the rounds, max the largest \
         of any round. Release: {HANDOFFS} hand-offs per round between two clients on one \
         key, from `LOCK.RELEASE` sent to the waiter's reply. Expiry: {TIMER_SAMPLES} locks \
         per round with a 100 ms TTL and a waiter, from the deadline (`PEXPIRETIME`, 1 ms \
         resolution) to the waiter's reply; nothing touches the key. `WAIT 20`: \
         {TIMER_SAMPLES} calls per round on a held lock, how long after its 20 ms the nil \
         came. Redis's own tick (hz 10) would add up to 100 ms to the last two; the module \
         arms its own timers.\n"
    )?;
    writeln!(out, "| hand-off or timer | p50 ms | p99 ms | max ms |")?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    let mut rows: [Vec<Vec<f64>>; 3] = Default::default();
    for round in 0..SCENARIO_ROUNDS {
        rows[0].push(release_hand_offs(server)?);
        rows[1].push(expiry_hand_offs(server)?);
        rows[2].push(wait_timeouts(server)?);
        progress!("hand-off and timer latency round {round} done");
    }
    let names = [
        "`LOCK.RELEASE` → waiter's reply",
        "lock's deadline → waiter's reply (expiry)",
        "`WAIT 20` → nil, after its 20 ms",
    ];
    for (name, runs) in names.iter().zip(&rows) {
        let max = runs
            .iter()
            .filter_map(|r| r.last().copied())
            .fold(f64::NAN, f64::max);
        writeln!(
            out,
            "| {name} | {:.3} | {:.3} | {:.3} |",
            median(runs.iter().map(|r| percentile(r, 0.5)).collect()),
            median(runs.iter().map(|r| percentile(r, 0.99)).collect()),
            max
        )?;
    }
    writeln!(out)?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Memory
// ------------------------------------------------------------------------------------------

fn fill(
    con: &mut redis::Connection,
    n: usize,
    mut each: impl FnMut(&mut redis::Pipeline, usize),
) -> Res<()> {
    let mut i = 0;
    while i < n {
        let mut pipe = redis::pipe();
        for j in i..(i + 10_000).min(n) {
            each(&mut pipe, j);
        }
        pipe.query::<()>(con)?;
        i += 10_000;
    }
    Ok(())
}

fn per_item(
    con: &mut redis::Connection,
    n: usize,
    each: impl FnMut(&mut redis::Pipeline, usize),
    setup: impl FnOnce(&mut redis::Connection) -> Res<()>,
) -> Res<f64> {
    redis::cmd("FLUSHALL").query::<()>(con)?;
    setup(con)?;
    let _ = redis::cmd("MEMORY").arg("PURGE").query::<()>(con);
    let before = used_memory(con)?;
    fill(con, n, each)?;
    let after = used_memory(con)?;
    Ok((after - before) as f64 / n as f64)
}

fn memory(_server: &Server, con: &mut redis::Connection, n: usize, out: &mut String) -> Res<()> {
    let set = per_item(
        con,
        n,
        |p, i| {
            p.cmd("SET")
                .arg(format!("lock:{i:012}"))
                .arg(OWNER)
                .arg("NX")
                .arg("PX")
                .arg(3_600_000)
                .ignore();
        },
        |_| Ok(()),
    )?;
    let lock = per_item(
        con,
        n,
        |p, i| {
            p.cmd("LOCK.ACQUIRE")
                .arg(format!("lock:{i:012}"))
                .arg(OWNER)
                .arg(3_600_000)
                .ignore();
        },
        |_| Ok(()),
    )?;
    let ledger = per_item(
        con,
        n,
        |p, i| {
            p.cmd("STOCK.DEDUCT")
                .arg("sku")
                .arg(1)
                .arg("ID")
                .arg(format!("order:{i:012}"))
                .ignore();
        },
        |c| {
            Ok(redis::cmd("STOCK.SET")
                .arg("sku")
                .arg(1_000_000_000_000i64)
                .query::<()>(c)?)
        },
    )?;
    let dedupe = per_item(
        con,
        n,
        |p, i| {
            p.cmd("SADD")
                .arg("sku:orders")
                .arg(format!("order:{i:012}"))
                .ignore();
        },
        |_| Ok(()),
    )?;
    redis::cmd("FLUSHALL").query::<()>(con)?;
    writeln!(out, "{n} keys or entries each; owner 36 bytes; key names `lock:` + 12 digits; request ids `order:` + 12 digits; from `INFO memory` used_memory.\n")?;
    writeln!(out, "| what | bytes each | vs |")?;
    writeln!(out, "| --- | ---: | ---: |")?;
    writeln!(out, "| SET NX PX lock | {set:.1} | 1.00x |")?;
    writeln!(
        out,
        "| LOCK.ACQUIRE lock | {lock:.1} | {:.2}x SET NX PX |",
        lock / set
    )?;
    writeln!(
        out,
        "| stock ledger entry (STOCK.DEDUCT … ID) | {ledger:.1} | {:.2}x SADD |",
        ledger / dedupe
    )?;
    writeln!(
        out,
        "| Lua dedupe-set member (SADD) | {dedupe:.1} | 1.00x |\n"
    )?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Chart
// ------------------------------------------------------------------------------------------

fn svg_chart(results: &[GroupResult]) -> String {
    let row_h = 18.0;
    let label_w = 330.0;
    let bar_w = 420.0;
    let max_ratio = results
        .iter()
        .flat_map(|g| (0..g.names.len()).map(move |i| g.cpu_ratio(i)))
        .filter(|r| r.is_finite())
        .fold(1.0f64, f64::max)
        .ceil();
    let rows: usize = results.iter().map(|g| g.names.len() + 1).sum();
    let height = 60.0 + rows as f64 * row_h;
    let width = label_w + bar_w + 80.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">Server CPU per call, relative to the native command (lower is better)</text>"#
    );
    let x0 = label_w;
    let one = x0 + bar_w / max_ratio;
    let _ = writeln!(
        s,
        r#"<line x1="{one}" y1="30" x2="{one}" y2="{}" stroke="black" stroke-dasharray="3,3"/>"#,
        height - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="42" font-size="10">1.0x native</text>"#,
        one + 3.0
    );
    let mut y = 50.0;
    for g in results {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-weight="bold">{} (pipeline {})</text>"#,
            y + 12.0,
            g.name,
            g.pipeline
        );
        y += row_h;
        for (i, name) in g.names.iter().enumerate() {
            let r = g.cpu_ratio(i);
            let w = if r.is_finite() {
                bar_w * r / max_ratio
            } else {
                0.0
            };
            let color = if name.starts_with("LOCK.") || name.starts_with("STOCK.") {
                "#2a7ab0"
            } else if name.starts_with("Lua") {
                "#c0504d"
            } else {
                "#888888"
            };
            let _ = writeln!(
                s,
                r#"<text x="20" y="{}">{}</text>"#,
                y + 12.0,
                name.replace('&', "&amp;").replace('<', "&lt;")
            );
            let _ = writeln!(
                s,
                r#"<rect x="{x0}" y="{}" width="{w:.1}" height="{}" fill="{color}"/>"#,
                y + 2.0,
                row_h - 4.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}">{r:.2}x</text>"#,
                x0 + w + 4.0,
                y + 12.0
            );
            y += row_h;
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}
