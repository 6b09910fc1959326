//! `make bench`: redis-fence against native commands and Lua scripts, on one server.
//!
//! Starts its own redis-server with the release module (pinned to core 0 when there are two
//! or more), drives it with redis-benchmark (pinned to core 1) for raw throughput and with its
//! own threads for the scenarios, alternates the contenders round by round, and reports the
//! median of the per-round ratios. Results go to bench/results/ as Markdown and SVG. The Big
//! ledger section runs on servers of its own, for this build and, with `--before <module>`, an
//! earlier one; `--big-ledger-only` runs only it. `--holds-only` runs only the Holds section
//! (expiry lateness, the longest timer firing, bytes per hold; `--holds N` holds),
//! `--buyers-only` only the Purchase limits section (CPU per `BUYER` deduction against Lua,
//! bytes per buyer), `--carts-only` only the Carts section (CPU per 3-item `STOCK.CART`
//! against Lua and three `STOCK.DEDUCT`s) and `--instructions-only` only the instructions per
//! call; they print and write nothing.
//!
//! Every import points one way, main → scenarios → report and harness:
//! - `harness`: the servers (fence-test-support's `Server`, with the bench's settings), the
//!   load generator, callgrind, what the server says of its CPU and memory, medians.
//! - `scenarios`: each measured workload, writing its section of the report.
//! - `report`: Markdown tables, number formats, the SVG chart; it knows no scenario.
//! - this file: the options, which sections run in which order, where the results go.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod harness;
mod report;
mod scenarios;

use harness::{info_field, progress, Res, BEGAN};
use report::{svg_chart, ChartGroup};
use scenarios::throughput::{GroupResult, KEYSPACE};
use scenarios::{
    big_ledger, buyers, carts, contended, hand_off, holds, memory, seckill, throughput,
};

struct Options {
    rounds: usize,
    calls_p1: usize,
    calls_p16: usize,
    calls_instructions: usize,
    memory_keys: usize,
    big_ledger: big_ledger::Options,
    holds: holds::Options,
    buyers: buyers::Options,
    carts: carts::Options,
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
        holds: holds::Options {
            holds: setting("holds", "FENCE_BENCH_HOLDS")
                .and_then(|n| n.parse().ok())
                .unwrap_or(if quick { 20_000 } else { 100_000 }),
        },
        buyers: buyers::Options {
            calls: if quick { 40_000 } else { 200_000 },
            rounds: if quick { 2 } else { 5 },
            cycle: if quick { 20_000 } else { 100_000 },
            buyers: if quick { 100_000 } else { 1_000_000 },
        },
        carts: carts::Options {
            calls: if quick { 40_000 } else { 200_000 },
            rounds: if quick { 2 } else { 5 },
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
    let cores = harness::cores();
    let pin = cores >= 2;
    let server = harness::start(&module, pin)?;
    let mut con = server.try_conn()?;
    // The server by what it is: Valkey reports redis_version:7.2.4 beside its own version.
    let version = match info_field(&mut con, "server", "valkey_version") {
        Ok(v) => format!("Valkey {v}"),
        Err(_) => format!("Redis {}", info_field(&mut con, "server", "redis_version")?),
    };
    progress!("{version}, {cores} cores, pinning: {pin}");
    if std::env::args().any(|a| a == "--hand-off-only") {
        // Only the hand-off and timer latency section, printed; results.md is left alone.
        let mut section = String::new();
        hand_off::hand_off(&server, &mut section)?;
        println!("{section}");
        return Ok(());
    }
    if std::env::args().any(|a| a == "--instructions-only") {
        // Only the instructions per call (callgrind), printed; results.md is left alone.
        drop(con);
        drop(server);
        let mut section = String::new();
        throughput::instructions(&module, pin, opts.calls_instructions, &mut section)?;
        println!("{section}");
        return Ok(());
    }
    if std::env::args().any(|a| a == "--holds-only") {
        // Only the Holds section, printed; results.md is left alone.
        drop(con);
        drop(server);
        let mut section = String::new();
        holds::holds(&module, pin, &opts.holds, &mut section)?;
        println!("{section}");
        return Ok(());
    }
    if std::env::args().any(|a| a == "--buyers-only") {
        // Only the Purchase limits section, printed; results.md is left alone.
        drop(con);
        drop(server);
        let mut section = String::new();
        buyers::buyers(&module, pin, &opts.buyers, &mut section)?;
        println!("{section}");
        eprintln!(
            "bench: the Purchase limits section took {:.0} s",
            began.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if std::env::args().any(|a| a == "--carts-only") {
        // Only the Carts section, printed; results.md is left alone.
        drop(con);
        drop(server);
        let mut section = String::new();
        carts::carts(&module, pin, &opts.carts, &mut section)?;
        println!("{section}");
        eprintln!(
            "bench: the Carts section took {:.0} s",
            began.elapsed().as_secs_f64()
        );
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
        fs::write(&path, report::splice(&text, &section))?;
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

    let groups = throughput::throughput(
        &server,
        &mut con,
        (opts.calls_p1, opts.calls_p16),
        opts.rounds,
        pin,
        &mut report,
    )?;

    throughput::instructions(&module, pin, opts.calls_instructions, &mut report)?;

    writeln!(report, "## Scenarios\n")?;
    seckill::seckill(&server, &mut report)?;
    contended::contended_lock(&server, &mut report)?;
    hand_off::hand_off(&server, &mut report)?;

    writeln!(report, "## Memory\n")?;
    memory::memory(&mut con, opts.memory_keys, &mut report)?;
    progress!("memory done");
    drop(con);
    drop(server);

    holds::holds(&module, pin, &opts.holds, &mut report)?;
    progress!("holds done");

    buyers::buyers(&module, pin, &opts.buyers, &mut report)?;
    progress!("purchase limits done");

    carts::carts(&module, pin, &opts.carts, &mut report)?;
    progress!("carts done");

    big_ledger::big_ledger(&ledger_modules, pin, &opts.big_ledger, &mut report)?;
    progress!("big ledger done");

    fs::create_dir_all(&opts.out)?;
    fs::write(opts.out.join("results.md"), &report)?;
    let chart: Vec<ChartGroup> = groups.iter().map(GroupResult::chart_group).collect();
    fs::write(opts.out.join("cpu-per-call.svg"), svg_chart(&chart))?;
    println!("{report}");
    eprintln!(
        "bench: wrote {} after {:.0} s",
        opts.out.join("results.md").display(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
