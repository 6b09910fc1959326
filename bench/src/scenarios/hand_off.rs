//! Hand-off and timer latency (reported here; the tests assert only the README's contract):
//! a lock handed to its waiter by `LOCK.RELEASE` and by expiry, and `WAIT 20` running out.

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use super::SCENARIO_ROUNDS;
use crate::harness::{median, percentile, progress, Res, Server};
use crate::report::{head, row, Align};

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
    let mut monitor = server.try_conn()?;
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
        let mut con = server.try_conn()?;
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
    let mut con = server.try_conn()?;
    let mut delays = Vec::with_capacity(TIMER_SAMPLES);
    let mut attempt = 0;
    while delays.len() < TIMER_SAMPLES {
        attempt += 1;
        if attempt > 10 * TIMER_SAMPLES {
            return Err("waiters kept missing their holder's 100 ms TTL".into());
        }
        let key = format!("expiry:{attempt}");
        let mut wcon = server.try_conn()?;
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
    let mut con = server.try_conn()?;
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

/// The section: each kind of latency, round by round.
pub fn hand_off(server: &Server, out: &mut String) -> Res<()> {
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
    head(
        out,
        &[
            ("hand-off or timer", Align::Left),
            ("p50 ms", Align::Right),
            ("p99 ms", Align::Right),
            ("max ms", Align::Right),
        ],
    )?;
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
        row(
            out,
            &[
                name.to_string(),
                format!(
                    "{:.3}",
                    median(runs.iter().map(|r| percentile(r, 0.5)).collect())
                ),
                format!(
                    "{:.3}",
                    median(runs.iter().map(|r| percentile(r, 0.99)).collect())
                ),
                format!("{max:.3}"),
            ],
        )?;
    }
    writeln!(out)?;
    Ok(())
}
