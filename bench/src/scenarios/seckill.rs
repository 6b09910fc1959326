//! Seckill: 10,000 items, 200 buyers, up to 50,000 purchase attempts, by the client lock
//! recipe people copy, a Lua script and `STOCK.DEDUCT … ID`: time to sell out, latency, and
//! whether any of them oversold.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{load_scripts, SCENARIO_ROUNDS};
use crate::harness::{median, percentile, progress, Res, Server};
use crate::report::{head, row, Align};

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
    let mut con = server.try_conn()?;
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
        let mut con = server.try_conn()?;
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

fn seckill_row(out: &mut String, name: &str, runs: &[SeckillResult]) -> Res<()> {
    let med = |f: &dyn Fn(&SeckillResult) -> f64| median(runs.iter().map(f).collect());
    let sold_out = runs.iter().all(|r| r.sell_out.is_some());
    let time = med(&|r| r.sell_out.unwrap_or(r.elapsed).as_secs_f64());
    let worst_oversold = runs
        .iter()
        .map(|r| (r.sold as i64 - 10_000).max(0) + (-r.final_stock).max(0))
        .max()
        .unwrap_or(0);
    row(
        out,
        &[
            name.to_string(),
            if sold_out {
                format!("{time:.3} s")
            } else {
                format!("not sold out in {time:.1} s")
            },
            format!(
                "{:.0}",
                med(&|r| r.sold as f64 / r.sell_out.unwrap_or(r.elapsed).as_secs_f64())
            ),
            format!("{:.2}", med(&|r| percentile(&r.latencies_ms, 0.5))),
            format!("{:.2}", med(&|r| percentile(&r.latencies_ms, 0.99))),
            format!("{:.2}", med(&|r| percentile(&r.latencies_ms, 0.999))),
            format!("{}", med(&|r| r.sold as f64)),
            format!("{}", med(&|r| r.final_stock as f64)),
            worst_oversold.to_string(),
        ],
    )?;
    Ok(())
}

/// The section: the recipe once, then Lua and the module alternated.
pub fn seckill(server: &Server, out: &mut String) -> Res<()> {
    writeln!(
        out,
        "### Seckill: 10,000 items, 200 buyers, up to 50,000 purchase attempts\n"
    )?;
    writeln!(
        out,
        "Lua and STOCK.DEDUCT: {SCENARIO_ROUNDS} rounds each, alternated; medians. The client \
         lock recipe: one run, capped at 30 s. Oversold: the worst round.\n"
    )?;
    head(
        out,
        &[
            ("variant", Align::Left),
            ("time to sell out", Align::Right),
            ("orders/s", Align::Right),
            ("p50 ms", Align::Right),
            ("p99 ms", Align::Right),
            ("p99.9 ms", Align::Right),
            ("sold", Align::Right),
            ("final stock", Align::Right),
            ("oversold", Align::Right),
        ],
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
