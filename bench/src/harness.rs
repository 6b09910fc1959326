//! What every measurement runs on: redis-server with the module under test (fence-test-support's
//! `Server`, started with the bench's settings), pinned to core 0 or run under callgrind;
//! redis-benchmark as the load generator, pinned to core 1; and what the server says of its own
//! cost: `INFO` fields, the CPU time of its main thread (from the scheduler), callgrind's
//! instruction counts; and the statistics every figure is given as (median, percentile).
//! Errors are returned (`Res`), never panicked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub use fence_test_support::Server;
use fence_test_support::{info_value, ServerBuilder};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// When the run began, for the progress lines.
pub static BEGAN: OnceLock<Instant> = OnceLock::new();

/// A progress line on stderr, with the seconds since the run began.
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!(
            "bench [{:>5.1} s]: {}",
            $crate::harness::BEGAN
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_secs_f64(),
            format!($($arg)*)
        )
    };
}
pub(crate) use progress;

/// The server's core and the load generator's, when there are two or more.
const SERVER_CORE: [&str; 3] = ["taskset", "-c", "0"];
const LOAD_CORE: [&str; 3] = ["taskset", "-c", "1"];
/// How long a reply may take: a whole-value command on a million entries, or a pipeline under
/// callgrind, takes seconds.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server under valgrind may take to accept connections.
const CALLGRIND_START: Duration = Duration::from_secs(60);

/// All online cores, not just this process's affinity (`make bench` runs it on core 1).
pub fn cores() -> usize {
    Command::new("nproc")
        .arg("--all")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A server with `module` loaded (pinned to core 0 with `pin`), `DEBUG` enabled (the Big ledger
/// section's `DEBUG DIGEST-VALUE` and `DEBUG RELOAD`), nothing saved.
fn builder(module: &Path, pin: bool) -> ServerBuilder {
    let builder = Server::builder()
        .module(module)
        .args(&["--enable-debug-command", "yes"])
        .io_timeout(IO_TIMEOUT);
    if pin {
        builder.run_under(&SERVER_CORE)
    } else {
        builder
    }
}

pub fn start(module: &Path, pin: bool) -> Res<Server> {
    Ok(builder(module, pin).try_start()?)
}

/// A server running under callgrind, which counts the instructions it executes; its dumps go
/// to its own directory (`callgrind.<pid>.<n>`).
pub fn start_under_callgrind(module: &Path, pin: bool) -> Res<Server> {
    Ok(builder(module, pin)
        .run_under(&[
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=callgrind.%p",
        ])
        .start_timeout(CALLGRIND_START)
        .try_start()?)
}

/// One field of `INFO section`.
pub fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> Res<String> {
    let info: String = redis::cmd("INFO").arg(section).query(con)?;
    info_value(&info, field)
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("INFO {section} has no {field}").into())
}

/// The server's CPU time so far (`used_cpu_user + used_cpu_sys`), in seconds.
pub fn cpu_seconds(con: &mut redis::Connection) -> Res<f64> {
    let user: f64 = info_field(con, "cpu", "used_cpu_user")?.parse()?;
    let sys: f64 = info_field(con, "cpu", "used_cpu_sys")?.parse()?;
    Ok(user + sys)
}

/// `used_memory` of `INFO memory`, in bytes.
pub fn used_memory(con: &mut redis::Connection) -> Res<i64> {
    Ok(info_field(con, "memory", "used_memory")?.parse()?)
}

/// The CPU time the server's main thread has used (ns), from the scheduler (`schedstat`):
/// not what a command waited for the core while another process had it, nor the lazy-free
/// and jemalloc threads' work.
pub fn cpu_ns(pid: u32) -> Res<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat"))?;
    Ok(stat
        .split_whitespace()
        .next()
        .ok_or("empty schedstat")?
        .parse()?)
}

/// Runs redis-benchmark once (pinned to core 1 with `pin`), 50 connections, keys drawn from
/// `keys`; returns requests per second.
pub fn redis_benchmark(
    port: u16,
    keys: usize,
    pipeline: usize,
    calls: usize,
    args: &[String],
    pin: bool,
) -> Res<f64> {
    let mut cmd = if pin {
        let mut c = Command::new(LOAD_CORE[0]);
        c.args(&LOAD_CORE[1..]).arg("redis-benchmark");
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

/// Whether valgrind (callgrind) can run here.
pub fn has_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `callgrind_control args…` (`-z <pid>` zeroes the counts).
pub fn callgrind_control(args: &[&str]) -> Res<()> {
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
pub fn callgrind_dump(dir: &Path, pid: &str) -> Res<u64> {
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

/// The median; NaN when there is nothing.
pub fn median(mut v: Vec<f64>) -> f64 {
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

/// The value at `p` (0 to 1) of values sorted in ascending order; NaN when there is none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
