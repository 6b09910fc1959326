//! The "Holds" section (issue 17): how close to their deadlines holds come back, how long the
//! event loop is held at once while many expire together, and what a hold costs in memory.
//!
//! `holds` holds (100,000 by default) are placed on one stock with `EVENTS`, their deadlines
//! spread over one second a few seconds ahead; each one's deadline is read back
//! (`STOCK.REQUEST … DETAIL`). Then nothing touches the stock: the module's timer returns them.
//! Each `expire` stream entry's id carries the server's clock when the units came back, so its
//! lateness is that minus the hold's deadline. The longest single block is what the module
//! reports to the latency monitor for each timer firing (`LATENCY HISTORY fence-expire-cycle`,
//! ms resolution), and, from outside, the slowest `PING` a client sent in a loop meanwhile.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{self, info_field, percentile, progress, Res};
use crate::report::{head, row, Align};

const KEY: &str = "{hold}:sku";
const STREAM: &str = "{hold}:orders";
/// Commands per pipeline.
const CHUNK: usize = 1_000;
/// How long after the start of the fill the first deadline falls: at least this, and 1 ms per
/// 30 holds (placing and reading them back takes about 1 ms per 50).
const LEAD_MS: u64 = 8_000;

fn lead_ms(n: usize) -> u64 {
    LEAD_MS.max(n as u64 / 30)
}
/// Over how long the deadlines are spread.
const SPREAD_MS: u64 = 1_000;

pub struct Options {
    pub holds: usize,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn id(i: usize) -> String {
    // 36 bytes, as a UUID order id would be.
    format!("7f3a9c2e-4b1d-4e8f-9a6b-{i:012}")
}

fn counter(con: &mut redis::Connection, name: &str) -> Res<i64> {
    Ok(info_field(con, "fence", name)?.parse()?)
}

/// `STOCK.REQUEST key id DETAIL`'s deadline.
fn deadline_of(v: &redis::Value) -> Option<u64> {
    let redis::Value::Array(items) = v else {
        return None;
    };
    items.chunks(2).find_map(|p| match (&p[0], &p[1]) {
        (redis::Value::BulkString(k), redis::Value::Int(d)) if k == b"deadline" => {
            u64::try_from(*d).ok()
        }
        _ => None,
    })
}

/// Lateness of each return (ms), the slowest PING (ms), the longest timer firing the latency
/// monitor kept (ms), how long the whole return took (ms).
struct Expiry {
    lateness: Vec<f64>,
    slowest_ping: f64,
    longest_cycle: i64,
    cycles: usize,
    span: f64,
}

fn expiry(module: &Path, pin: bool, n: usize) -> Res<Expiry> {
    let server = harness::start(module, pin)?;
    let mut con = server.try_conn()?;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("latency-monitor-threshold")
        .arg(1)
        .query::<()>(&mut con)?;
    redis::cmd("STOCK.SET")
        .arg(KEY)
        .arg(n)
        .query::<()>(&mut con)?;
    let first = now_ms() + lead_ms(n);
    for start in (0..n).step_by(CHUNK) {
        let mut pipe = redis::pipe();
        let now = now_ms();
        for i in start..(start + CHUNK).min(n) {
            let target = first + (i as u64 * SPREAD_MS) / n as u64;
            pipe.cmd("STOCK.DEDUCT")
                .arg(KEY)
                .arg(1)
                .arg("ID")
                .arg(id(i))
                .arg("HOLD")
                .arg(target.saturating_sub(now).max(1))
                .arg("EVENTS")
                .arg(STREAM)
                .ignore();
        }
        pipe.query::<()>(&mut con)?;
    }
    let mut deadlines = std::collections::HashMap::with_capacity(n);
    for start in (0..n).step_by(CHUNK) {
        let mut pipe = redis::pipe();
        for i in start..(start + CHUNK).min(n) {
            pipe.cmd("STOCK.REQUEST").arg(KEY).arg(id(i)).arg("DETAIL");
        }
        let replies: Vec<redis::Value> = pipe.query(&mut con)?;
        for (k, v) in replies.iter().enumerate() {
            let d = deadline_of(v).ok_or("a hold came back before the fill ended")?;
            deadlines.insert(id(start + k), d);
        }
    }
    if now_ms() >= first {
        return Err(format!(
            "placing {n} holds took longer than the {} ms lead",
            lead_ms(n)
        )
        .into());
    }
    progress!(
        "holds: {n} placed, the first due in {} ms",
        first - now_ms()
    );
    // A client pinging in a loop meanwhile: the slowest reply bounds how long the event loop
    // was held at once (plus the round trip).
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        let mut c = server.try_conn()?;
        thread::spawn(move || -> f64 {
            let mut slowest = 0f64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if redis::cmd("PING").query::<String>(&mut c).is_err() {
                    break;
                }
                slowest = slowest.max(t.elapsed().as_secs_f64() * 1000.0);
            }
            slowest
        })
    };
    let deadline = Instant::now() + Duration::from_millis(lead_ms(n) + SPREAD_MS + 60_000);
    while counter(&mut con, "fence_holds_expired")? < n as i64 {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            return Err("the holds did not all come back within a minute".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let slowest_ping = pinger.join().map_err(|_| "the pinger panicked")?;
    // The return of each hold: its expire entry's id (the server's clock then).
    let mut lateness = Vec::with_capacity(n);
    let (mut first_back, mut last_back) = (u64::MAX, 0u64);
    let mut from = "-".to_string();
    loop {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query(&mut con)?;
        let Some((last_id, _)) = entries.last() else {
            break;
        };
        from = format!("({last_id}");
        for (entry, fields) in &entries {
            let is_expire = fields.iter().any(|(k, v)| k == "type" && v == "expire");
            if !is_expire {
                continue;
            }
            let at: u64 = entry.split('-').next().unwrap_or("0").parse()?;
            let order = fields
                .iter()
                .find(|(k, _)| k == "id")
                .map(|(_, v)| v.as_str())
                .ok_or("an expire entry without id")?;
            let d = deadlines.get(order).ok_or("an expire entry of no hold")?;
            lateness.push(at as f64 - *d as f64);
            first_back = first_back.min(at);
            last_back = last_back.max(at);
        }
    }
    if lateness.len() != n {
        return Err(format!("{} expire entries for {n} holds", lateness.len()).into());
    }
    lateness.sort_by(f64::total_cmp);
    let history: Vec<(i64, i64)> = redis::cmd("LATENCY")
        .arg("HISTORY")
        .arg("fence-expire-cycle")
        .query(&mut con)?;
    Ok(Expiry {
        lateness,
        slowest_ping,
        longest_cycle: history.iter().map(|(_, ms)| *ms).max().unwrap_or(0),
        cycles: history.len(),
        span: last_back.saturating_sub(first_back) as f64,
    })
}

/// `MEMORY USAGE` of a stock of `n` entries made as `how` says, per entry.
fn per_entry(module: &Path, pin: bool, n: usize, hold: bool) -> Res<f64> {
    let server = harness::start(module, pin)?;
    let mut con = server.try_conn()?;
    redis::cmd("STOCK.SET")
        .arg(KEY)
        .arg(n)
        .query::<()>(&mut con)?;
    let empty: i64 = redis::cmd("MEMORY").arg("USAGE").arg(KEY).query(&mut con)?;
    for start in (0..n).step_by(CHUNK) {
        let mut pipe = redis::pipe();
        for i in start..(start + CHUNK).min(n) {
            let c = pipe
                .cmd("STOCK.DEDUCT")
                .arg(KEY)
                .arg(1)
                .arg("ID")
                .arg(id(i));
            if hold {
                c.arg("HOLD").arg(3_600_000);
            }
            c.ignore();
        }
        pipe.query::<()>(&mut con)?;
    }
    let full: i64 = redis::cmd("MEMORY").arg("USAGE").arg(KEY).query(&mut con)?;
    Ok((full - empty) as f64 / n as f64)
}

pub fn holds(module: &Path, pin: bool, opts: &Options, out: &mut String) -> Res<()> {
    let n = opts.holds;
    let e = expiry(module, pin, n)?;
    progress!("holds: expiry measured");
    let plain = per_entry(module, pin, n, false)?;
    let held = per_entry(module, pin, n, true)?;
    progress!("holds: memory measured");
    let p = |q: f64| percentile(&e.lateness, q);
    writeln!(out, "## Holds\n")?;
    writeln!(
        out,
        "{n} holds on one stock (`STOCK.DEDUCT … ID … HOLD ms EVENTS …`), their deadlines \
         spread over {SPREAD_MS} ms, returned by the module's timer with nothing else touching \
         the stock. Lateness: the `expire` stream entry's id (the server's clock when the units \
         came back) minus the hold's deadline, in ms (the clock's resolution). The longest \
         block: the longest single timer firing the module reported to the latency monitor \
         (`LATENCY HISTORY fence-expire-cycle`, `latency-monitor-threshold 1`), and the slowest \
         `PING` of a client pinging in a loop meanwhile. Memory: `MEMORY USAGE` of a stock of \
         {n} entries with 36-byte ids, per entry.\n"
    )?;
    head(out, &[("measure", Align::Left), ("value", Align::Right)])?;
    let rows = [
        (
            "lateness p50 / p99 / max".to_string(),
            format!("{:.0} / {:.0} / {:.0} ms", p(0.5), p(0.99), p(1.0)),
        ),
        (
            format!("first to last return ({SPREAD_MS} ms of deadlines)"),
            format!("{:.0} ms", e.span),
        ),
        (
            "longest timer firing (latency monitor)".to_string(),
            format!(
                "{} ms (the monitor keeps the longest of each second: {} seconds had one of 1 ms or more)",
                e.longest_cycle, e.cycles
            ),
        ),
        (
            "slowest PING meanwhile".to_string(),
            format!("{:.1} ms", e.slowest_ping),
        ),
        (
            "bytes per entry: deducted / held / difference".to_string(),
            format!("{plain:.1} / {held:.1} / {:.1}", held - plain),
        ),
    ];
    for (measure, value) in &rows {
        row(out, &[measure.as_str(), value.as_str()])?;
    }
    writeln!(out)?;
    Ok(())
}
