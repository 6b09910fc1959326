//! Contended lock: 50 clients on one key, each 20 times acquire, one write, release, waiting
//! by `LOCK.ACQUIRE … WAIT 0` or by polling `SET NX PX` every 1 or 50 ms.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{LUA_RELEASE, SCENARIO_ROUNDS};
use crate::harness::{median, percentile, progress, Res, Server};
use crate::report::{head, row, Align};

#[derive(Clone, Copy)]
enum Waiting {
    Wait,
    Poll(u64),
}

fn contended_run(server: &Server, mode: Waiting) -> Res<ContendedRun> {
    const CLIENTS: usize = 50;
    const EACH: usize = 20;
    let mut con = server.try_conn()?;
    redis::cmd("FLUSHALL").query::<()>(&mut con)?;
    let release_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(LUA_RELEASE)
        .query(&mut con)?;
    let waits = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut handles = Vec::new();
    for cl in 0..CLIENTS {
        let mut con = server.try_conn()?;
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

/// The section: the three ways alternated round by round.
pub fn contended_lock(server: &Server, out: &mut String) -> Res<()> {
    writeln!(
        out,
        "### Contended lock: 50 clients, one key, 20 acquire / critical section / release each\n"
    )?;
    writeln!(
        out,
        "{SCENARIO_ROUNDS} rounds, the three ways alternated; medians.\n"
    )?;
    head(
        out,
        &[
            ("waiting", Align::Left),
            ("total time", Align::Right),
            ("acquisitions/s", Align::Right),
            ("wait p50 ms", Align::Right),
            ("wait p99 ms", Align::Right),
            ("worst client's total wait ms", Align::Right),
        ],
    )?;
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
        row(
            out,
            &[
                name.to_string(),
                format!("{:.3} s", med(&|r| r.0.as_secs_f64())),
                format!("{:.0}", med(&|r| r.1.len() as f64 / r.0.as_secs_f64())),
                format!("{:.2}", med(&|r| percentile(&r.1, 0.5))),
                format!("{:.2}", med(&|r| percentile(&r.1, 0.99))),
                format!("{:.0}", med(&|r| r.2)),
            ],
        )?;
    }
    writeln!(out)?;
    Ok(())
}
