//! Master and replica on 127.0.0.1: a full sync, then a live stream of mixed load, leave both
//! with byte-identical values (`DEBUG DIGEST`, `DEBUG DIGEST-VALUE`), the same owners and
//! tokens, and TTLs no further apart than the time between the two readings. A promoted replica (`REPLICAOF NO ONE`, with the
//! old master alive or killed with SIGKILL) issues tokens above every token the old master
//! issued, including a grant that never reached it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::{Connection, Value};

/// How long a replica may take to catch up.
const SYNC: Duration = Duration::from_secs(15);
/// The TTLs of the load's locks and plain-string stocks: far longer than any run, so that no
/// key of the load expires while master and replica are compared, however slow the machine.
const LONG_TTL_MS: std::ops::Range<u64> = 600_000..3_600_000;
/// The load's short-lived locks (gone before each comparison: `let_short_locks_expire`).
const SHORT_TTL_MS: std::ops::Range<u64> = 1..40;

fn start_master() -> Server {
    Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ])
}

fn start_replica(master: &Server) -> Server {
    let port = master.port().to_string();
    Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--replicaof",
        "127.0.0.1",
        &port,
    ])
}

/// A random mix of every kind of write, against the master; remembers every token issued.
struct Load {
    rng: StdRng,
    /// Every token LOCK.ACQUIRE or LOCK.RENEW returned, in order.
    tokens: Vec<i64>,
    /// Request ids that deducted something.
    ids: Vec<(String, String)>,
    /// Short-lived locks, to be gone before the comparison.
    expiring: Vec<String>,
    counter: usize,
    /// Replies of each kind, for the report.
    stats: BTreeMap<&'static str, usize>,
}

impl Load {
    fn new() -> Load {
        let seed = u64::try_from(now_us()).unwrap();
        println!("load seed {seed}");
        Load {
            rng: StdRng::seed_from_u64(seed),
            tokens: Vec::new(),
            ids: Vec::new(),
            expiring: Vec::new(),
            counter: 0,
            stats: BTreeMap::new(),
        }
    }

    fn max_token(&self) -> i64 {
        self.tokens.iter().copied().max().unwrap_or(0)
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    /// Runs `ops` random writes on the master.
    fn run(&mut self, con: &mut Connection, ops: usize) {
        for _ in 0..ops {
            self.counter += 1;
            self.step(con);
        }
    }

    fn step(&mut self, con: &mut Connection) {
        let n = self.counter;
        let lk = format!("lk:{}", self.rng.random_range(0..12));
        let owner = format!("owner-{}", self.rng.random_range(0..3));
        let sk = format!("sk:{}", self.rng.random_range(0..4));
        let st = format!("str:{}", self.rng.random_range(0..3));
        let ttl = self.rng.random_range(LONG_TTL_MS).to_string();
        match self.rng.random_range(0..14) {
            0..=2 => match call(con, &["LOCK.ACQUIRE", &lk, &owner, &ttl]) {
                Ok(Value::Int(t)) => {
                    self.tokens.push(t);
                    self.count("acquired");
                }
                Ok(Value::Nil) => self.count("contended"),
                other => panic!("LOCK.ACQUIRE: {other:?}"),
            },
            3 => match call(con, &["LOCK.RENEW", &lk, &owner, &ttl]) {
                Ok(Value::Int(t)) => {
                    self.tokens.push(t);
                    self.count("renewed");
                }
                Ok(Value::Nil) => self.count("renew refused"),
                other => panic!("LOCK.RENEW: {other:?}"),
            },
            4 => {
                if int(call(con, &["LOCK.RELEASE", &lk, &owner])) == 1 {
                    self.count("released");
                }
            }
            5 => {
                let key = format!("exp:{n}");
                let ms = self.rng.random_range(SHORT_TTL_MS).to_string();
                self.tokens
                    .push(int(call(con, &["LOCK.ACQUIRE", &key, "short", &ms])));
                self.expiring.push(key);
                self.count("expiring");
            }
            6 => {
                let q = self.rng.random_range(0..500).to_string();
                okay(call(con, &["STOCK.SET", &sk, &q]));
                self.count("stock set");
            }
            7 => {
                let q = self.rng.random_range(1..50).to_string();
                int(call(con, &["STOCK.ADD", &sk, &q]));
                self.count("stock add");
            }
            8..=10 => {
                let id = format!("r-{n}");
                let q = self.rng.random_range(1..4).to_string();
                let fence = if self.tokens.is_empty() || self.rng.random_bool(0.3) {
                    None
                } else if self.rng.random_bool(0.7) {
                    Some(self.max_token())
                } else {
                    let i = self.rng.random_range(0..self.tokens.len());
                    Some(self.tokens[i])
                };
                let f = fence.map(|t| t.to_string());
                let mut args = vec!["STOCK.DEDUCT", &sk, &q, "ID", &id];
                if let Some(f) = &f {
                    args.extend(["FENCE", f.as_str()]);
                }
                match call(con, &args) {
                    Ok(Value::Int(_)) => {
                        self.ids.push((sk.clone(), id));
                        self.count("deducted");
                    }
                    Ok(Value::Nil) => self.count("sold out"),
                    Err(e) if error_text(&e).starts_with(code::STALE) => self.count("stale"),
                    other => panic!("{args:?}: {other:?}"),
                }
            }
            11 => {
                if self.ids.is_empty() {
                    return;
                }
                let i = self.rng.random_range(0..self.ids.len());
                let (sk, id) = self.ids[i].clone();
                if self.rng.random_bool(0.5) {
                    if int(call(con, &["STOCK.REFUND", &sk, &id])) > 0 {
                        self.count("refunded");
                    }
                } else {
                    // A replay (nothing deducted, nothing replicated), or a fresh deduction
                    // when a new sale has emptied the ledger since.
                    match call(con, &["STOCK.DEDUCT", &sk, "1", "ID", &id]) {
                        Ok(Value::Int(_)) | Ok(Value::Nil) => self.count("replayed"),
                        other => panic!("a replay of {id}: {other:?}"),
                    }
                }
            }
            _ => {
                let px = LONG_TTL_MS.start.to_string();
                match call(con, &["SET", &st, "1000", "PX", &px, "NX"]) {
                    Ok(Value::Okay) => self.count("string set"),
                    Ok(Value::Nil) => {}
                    other => panic!("SET NX: {other:?}"),
                }
                let q = self.rng.random_range(1..5).to_string();
                if self.rng.random_bool(0.8) {
                    match call(con, &["STOCK.DEDUCT", &st, &q]) {
                        Ok(Value::Int(_)) => self.count("string deducted"),
                        Ok(Value::Nil) => self.count("string sold out"),
                        other => panic!("STOCK.DEDUCT {st}: {other:?}"),
                    }
                } else {
                    int(call(con, &["STOCK.ADD", &st, &q]));
                    self.count("string added");
                }
            }
        }
    }

    /// Waits until every short-lived lock has expired on the master (the master then
    /// replicates a DEL), so that no key is expiring while the two sides are compared.
    fn let_short_locks_expire(&self, con: &mut Connection) {
        for key in &self.expiring {
            assert!(
                wait_until(Duration::from_secs(20), || exists(con, key) == 0),
                "{key} did not expire"
            );
        }
    }
}

/// Master and replica hold the same data: whole-dataset digest, every key's value digest,
/// every lock's owner and token, and every TTL (both sides hold the same absolute expiry) no
/// further apart than the time that passed between reading the master's and the replica's.
/// Returns the largest TTL gap.
#[track_caller]
fn assert_same_data(master: &Server, replica: &Server) -> i64 {
    let mut m = master.conn();
    let mut r = replica.conn();
    wait_for_sync(master, replica, SYNC);
    let keys = all_keys(&mut m);
    assert_eq!(all_keys(&mut r), keys, "the replica has other keys");
    assert_eq!(
        debug_digest(&mut r),
        debug_digest(&mut m),
        "DEBUG DIGEST differs"
    );
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let read_from = Instant::now();
    let master_ttls = pttls(&mut m, &key_refs);
    let replica_ttls = pttls(&mut r, &key_refs);
    // Both sides count down from the same expiry on the same clock: the TTLs differ by the
    // time between the two readings (each is truncated to a millisecond).
    let allowed = i64::try_from(read_from.elapsed().as_millis()).unwrap() + 1;
    let mut widest = 0;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            digest_value(&mut r, key),
            digest_value(&mut m, key),
            "DEBUG DIGEST-VALUE {key} differs"
        );
        assert_eq!(key_type(&mut r, key), key_type(&mut m, key), "TYPE {key}");
        let (mt, rt) = (master_ttls[i], replica_ttls[i]);
        assert_eq!(
            mt < 0,
            rt < 0,
            "{key}: PTTL {mt} on the master, {rt} on the replica"
        );
        let gap = (mt - rt).abs();
        assert!(
            gap <= allowed,
            "{key}: PTTL {mt} on the master, {rt} on the replica, read within {allowed} ms"
        );
        widest = widest.max(gap);
        if key_type(&mut m, key) == "fence-lck" {
            let ms = lock_status(&mut m, key).map(|(o, t, _)| (o, t));
            let rs = lock_status(&mut r, key).map(|(o, t, _)| (o, t));
            assert!(ms.is_some(), "{key} vanished on the master");
            assert_eq!(rs, ms, "lock {key}: owner and token on the replica");
        }
    }
    widest
}

/// No line of the replica's log shows it refusing or failing a replicated command.
#[track_caller]
fn assert_replica_refused_nothing(replica: &Server) {
    let errors = replication_errors(&replica.log());
    assert!(
        errors.is_empty(),
        "the replica logged errors about replicated commands:\n{}",
        errors.join("\n")
    );
}

/// Load before the replica attaches (full sync), then a live stream; compares both times.
/// Returns master, replica and the load (with every token the master issued).
fn replicate_mixed_load() -> (Server, Server, Load) {
    let master = start_master();
    let mut m = master.conn();
    let mut load = Load::new();
    load.run(&mut m, 400);
    load.let_short_locks_expire(&mut m);

    let replica = start_replica(&master);
    let gap = assert_same_data(&master, &replica);
    let keys = dbsize(&mut m);
    println!("full sync: {keys} keys identical, widest TTL gap {gap} ms");

    // Live stream; in the middle, a token far ahead of the clock arrives by RESTORE and its
    // lock is deleted again: every later grant is above it, so only the replicated effects,
    // not the replica's clock, can keep the replica's tokens above them.
    load.run(&mut m, 300);
    let future = future_locks();
    okay(restore(&mut m, "lk:future", 0, &future.dumps[0], &[]));
    assert_eq!(int(call(&mut m, &["DEL", "lk:future"])), 1);
    load.tokens.push(future.tokens[0]);
    load.run(&mut m, 300);
    let after = int(call(&mut m, &["LOCK.ACQUIRE", "lk:last", "o", "60000"]));
    assert!(
        after > future.tokens[0],
        "token {after} after a restored one"
    );
    load.tokens.push(after);
    load.let_short_locks_expire(&mut m);
    let gap = assert_same_data(&master, &replica);
    println!(
        "live stream: {} keys identical, widest TTL gap {gap} ms, {:?}",
        dbsize(&mut m),
        load.stats
    );
    // The last grant is released: only the replicated FENCE.LOCK taught the replica its token.
    assert_eq!(int(call(&mut m, &["LOCK.RELEASE", "lk:last", "o"])), 1);
    wait_for_sync(&master, &replica, SYNC);
    assert_eq!(exists(&mut replica.conn(), "lk:last"), 0);
    assert_replica_refused_nothing(&replica);
    (master, replica, load)
}

#[test]
fn full_sync_then_live_stream_leave_identical_data() {
    let (master, replica, load) = replicate_mixed_load();
    assert!(load.stats.get("acquired").copied().unwrap_or(0) > 20);
    assert!(load.stats.get("deducted").copied().unwrap_or(0) > 20);
    // Nothing written on the replica's own side, and still identical.
    assert_same_data(&master, &replica);
    let mut r = replica.conn();
    assert_err(
        call(&mut r, &["LOCK.ACQUIRE", "lk:0", "o", "1000"]),
        "READONLY",
    );
}

/// Promotes the replica after the load; with `kill`, the old master dies with SIGKILL first.
fn promote_after_load(kill: bool) {
    let (mut master, replica, load) = replicate_mixed_load();
    let highest = load.max_token();
    if kill {
        master.kill();
    }
    let mut r = replica.conn();
    okay(call(&mut r, &["REPLICAOF", "NO", "ONE"]));
    assert_eq!(
        info_value(&info(&mut r, "replication"), "role").as_deref(),
        Some("master")
    );
    let next = int(call(&mut r, &["LOCK.ACQUIRE", "lk:new", "o", "10000"]));
    println!(
        "failover ({}): old master's highest token {highest}, the promoted replica's first {next}",
        if kill {
            "old master SIGKILLed"
        } else {
            "old master alive"
        }
    );
    assert!(
        next > highest,
        "the promoted replica issued {next}, not above the old master's {highest}"
    );
    // Locks held on the old master are still held, with their tokens.
    let mut held = 0;
    for key in all_keys(&mut r) {
        if key_type(&mut r, &key) != "fence-lck" || key == "lk:new" {
            continue;
        }
        let Some((owner, token, _)) = lock_status(&mut r, &key) else {
            panic!("{key} is a lock without a status");
        };
        assert!(token < next, "{key} holds {token}");
        let other = format!("{owner}-x");
        nil(call(&mut r, &["LOCK.ACQUIRE", &key, &other, "1000"]));
        held += 1;
    }
    assert!(held > 0, "no lock survived the failover");
    assert_replica_refused_nothing(&replica);
}

#[test]
fn a_promoted_replica_issues_higher_tokens() {
    promote_after_load(false);
}

#[test]
fn a_replica_promoted_after_its_master_is_killed_issues_higher_tokens() {
    promote_after_load(true);
}

/// The RDB of a full sync carries the token high-water mark as aux data, even when no lock
/// holds that token any more.
#[test]
fn a_full_sync_carries_the_highest_token_without_any_lock() {
    let master = start_master();
    let mut m = master.conn();
    let future = future_locks();
    okay(restore(&mut m, "lk:future", 0, &future.dumps[1], &[]));
    assert_eq!(int(call(&mut m, &["DEL", "lk:future"])), 1);
    let replica = start_replica(&master);
    wait_for_sync(&master, &replica, SYNC);
    let mut r = replica.conn();
    assert_eq!(dbsize(&mut r), 0);
    okay(call(&mut r, &["REPLICAOF", "NO", "ONE"]));
    let next = int(call(&mut r, &["LOCK.ACQUIRE", "lk", "o", "1000"]));
    assert!(
        next > future.tokens[1],
        "after a full sync the replica issued {next}, not above {}",
        future.tokens[1]
    );
    assert_replica_refused_nothing(&replica);
}

/// A grant the replica never saw: its link is cut, the master grants and dies at once. The
/// promoted replica's next token is still larger, thanks to the wall-clock floor.
#[test]
fn a_grant_lost_in_failover_is_still_below_the_next_token() {
    let mut master = start_master();
    let replica = start_replica(&master);
    let mut m = master.conn();
    let mut earlier = Vec::new();
    for i in 0..20 {
        let key = format!("lk:{i}");
        earlier.push(int(call(&mut m, &["LOCK.ACQUIRE", &key, "o", "60000"])));
    }
    wait_for_sync(&master, &replica, SYNC);
    let mut r = replica.conn();
    assert_eq!(dbsize(&mut r), 20);

    // The replica must not get back in before the master dies: a password it does not know
    // makes every reconnection attempt fail (this connection stays authenticated).
    okay(call(
        &mut m,
        &["CONFIG", "SET", "requirepass", "not-known-to-the-replica"],
    ));
    assert_eq!(int(call(&mut m, &["CLIENT", "KILL", "TYPE", "replica"])), 1);
    let lost = int(call(&mut m, &["LOCK.ACQUIRE", "lk:lost", "o", "60000"]));
    master.kill();

    assert_eq!(
        exists(&mut r, "lk:lost"),
        0,
        "the grant reached the replica: nothing was lost"
    );
    assert_eq!(dbsize(&mut r), 20);
    okay(call(&mut r, &["REPLICAOF", "NO", "ONE"]));
    let next = int(call(&mut r, &["LOCK.ACQUIRE", "lk:lost", "other", "60000"]));
    println!(
        "lost grant: token A {lost} never reached the replica; the promoted replica's token B \
         {next} (B - A = {} us)",
        next - lost
    );
    assert!(next > lost, "token {next} after the lost {lost}");
    assert!(earlier.iter().all(|&t| t < next));
    assert_replica_refused_nothing(&replica);
}
