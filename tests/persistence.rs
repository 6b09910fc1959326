//! The README's "Replication and persistence" section: RDB and AOF round trips, COPY, memory
//! usage, effect replication (`FENCE.LOCK`, `FENCE.STOCK`, `SET ... KEEPTTL`), internal
//! commands refused to clients, and the highest token surviving a restart.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use redis::{Connection, Value};

/// A RESP command as it appears in an AOF file.
fn resp(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out
}

fn now_ms() -> i64 {
    now_us() / 1000
}

/// A token an hour ahead of the clock: only a server that learnt it can issue above it.
fn future_token() -> i64 {
    now_us() + 3_600 * 1_000_000
}

/// Keys of every kind, with a known state; returns (lock token, stock fence).
fn populate(con: &mut Connection) -> (i64, i64) {
    let t = int(call(con, &["LOCK.ACQUIRE", "lk", "worker-1", "60000"]));
    let fence = now_us();
    okay(call(con, &["STOCK.SET", "sk", "10"]));
    let fs = fence.to_string();
    assert_eq!(
        int(call(
            con,
            &["STOCK.DEDUCT", "sk", "2", "ID", "a", "FENCE", &fs]
        )),
        8
    );
    assert_eq!(int(call(con, &["STOCK.DEDUCT", "sk", "1", "ID", "b"])), 7);
    assert_eq!(int(call(con, &["STOCK.REFUND", "sk", "b"])), 1);
    assert_eq!(int(call(con, &["STOCK.DEDUCT", "sk", "3"])), 5);
    okay(call(con, &["SET", "str", "100", "PX", "100000"]));
    assert_eq!(int(call(con, &["STOCK.DEDUCT", "str", "3"])), 97);
    (t, fence)
}

/// Checks the state `populate` left, reading only.
#[track_caller]
fn check_populated(con: &mut Connection, t: i64) {
    assert_eq!(key_type(con, "lk"), "fence-lck");
    let status = call(con, &["LOCK.STATUS", "lk"]).unwrap();
    let Value::Array(items) = status else {
        panic!("LOCK.STATUS lk replied {status:?}");
    };
    assert_eq!(items[1], Value::BulkString(b"worker-1".to_vec()));
    assert_eq!(items[3], Value::Int(t));
    let ttl = pttl(con, "lk");
    assert!((1..=60_000).contains(&ttl), "lock PTTL {ttl}");
    assert_eq!(key_type(con, "sk"), "fence-stk");
    assert_eq!(stock(con, "sk"), 5);
    assert_eq!(int(call(con, &["STOCK.REQUEST", "sk", "a"])), 2);
    assert_eq!(int(call(con, &["STOCK.REQUEST", "sk", "b"])), 0);
    nil(call(con, &["STOCK.REQUEST", "sk", "c"]));
    assert_eq!(key_type(con, "str"), "string");
    assert_eq!(get_string(con, "str").as_deref(), Some("97"));
    let ttl = pttl(con, "str");
    assert!((1..=100_000).contains(&ttl), "string PTTL {ttl}");
}

/// The fence survived: a lower token is STALE with the same highest (changes nothing).
#[track_caller]
fn check_fence(con: &mut Connection, fence: i64) {
    let lower = (fence - 1).to_string();
    assert_err(
        call(con, &["STOCK.DEDUCT", "sk", "1", "FENCE", &lower]),
        stale_reply(fence - 1, fence),
    );
}

/// How long a poll waits for something the server does on its own (a rewrite, a save, an
/// expiry, a sync) before the test fails: generous for a loaded machine, and a poll returns
/// as soon as the event happens.
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// A server whose AOF the test reads right after the replies: `appendfsync always` makes
/// Redis write each change to the file before it replies. (With the default `everysec`, Redis
/// keeps replying but holds back its writes to the AOF for up to 2 s while a background fsync
/// is still running, which is common on a loaded machine: a change could be missing from the
/// file when the test reads it, or a change that must not be there could be there unseen.)
const AOF_READ_BACK: [&str; 6] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--aof-use-rdb-preamble",
    "no",
];

/// Waits until no AOF rewrite is running or scheduled.
fn wait_for_rewrite(con: &mut Connection) {
    assert!(
        wait_until(EVENT_DEADLINE, || {
            let info: String = redis::cmd("INFO").arg("persistence").query(con).unwrap();
            info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
        }),
        "the AOF rewrite did not finish"
    );
}

/// Every `*.aof` file of the server's AOF directory, concatenated.
fn aof_text(server: &Server, suffix: &str) -> String {
    let dir = server.dir().join("appendonlydir");
    let mut text = String::new();
    for entry in fs::read_dir(&dir).expect("appendonlydir") {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(suffix) {
            text.push_str(&String::from_utf8_lossy(&fs::read(&path).unwrap()));
        }
    }
    text
}

#[test]
fn internal_commands_are_refused_to_clients() {
    let server = Server::start();
    let mut con = server.conn();
    let forged = future_token().to_string();
    let expire = (now_ms() + 60_000).to_string();
    assert_err(
        call(&mut con, &["FENCE.LOCK", "lk", "o", &forged, &expire]),
        INTERNAL_ONLY,
    );
    assert_err(
        call(&mut con, &["FENCE.STOCK", "sk", "10", "0", "0", "RESET"]),
        INTERNAL_ONLY,
    );
    assert_err(
        call(
            &mut con,
            &["FENCE.STOCK", "sk", "10", "0", "0", "RESET", "a", "1"],
        ),
        INTERNAL_ONLY,
    );
    let script = format!("return redis.call('FENCE.LOCK', KEYS[1], 'o', '{forged}', '{expire}')");
    assert_err(call(&mut con, &["EVAL", &script, "1", "lk"]), code::ERR);
    assert_eq!(dbsize(&mut con), 0);
    // The forged token did not reach the clock.
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "o", "1000"]));
    assert!(
        t < forged.parse::<i64>().unwrap(),
        "token {t} after a forged grant"
    );
    // Nor do they touch existing keys.
    okay(call(&mut con, &["STOCK.SET", "sk", "5"]));
    assert_err(
        call(&mut con, &["FENCE.STOCK", "sk", "10", "0", "0", "RESET"]),
        INTERNAL_ONLY,
    );
    assert_eq!(stock(&mut con, "sk"), 5);
}

#[test]
fn a_grant_loaded_from_the_aof_raises_the_token_clock() {
    let token = future_token();
    let aof = resp(&["SELECT", "0"])
        + &resp(&[
            "FENCE.LOCK",
            "lk",
            "worker-1",
            &token.to_string(),
            &(now_ms() + 600_000).to_string(),
        ]);
    let server = Server::start_with_files(
        &[("appendonly.aof", aof.as_bytes())],
        &["--appendonly", "yes"],
    );
    let mut con = server.conn();
    let status = call(&mut con, &["LOCK.STATUS", "lk"]).unwrap();
    let Value::Array(items) = status else {
        panic!("the lock from the AOF is missing: {status:?}");
    };
    assert_eq!(items[1], Value::BulkString(b"worker-1".to_vec()));
    assert_eq!(items[3], Value::Int(token));
    let ttl = pttl(&mut con, "lk");
    assert!((500_000..=600_000).contains(&ttl), "PTTL {ttl}");
    assert_eq!(int(call(&mut con, &["DEL", "lk"])), 1);
    let next = int(call(&mut con, &["LOCK.ACQUIRE", "other", "o", "1000"]));
    assert!(next > token, "token {next} not above the loaded {token}");
}

#[test]
fn the_highest_token_survives_a_restart_through_the_rdb() {
    // Teach the server a token an hour ahead, through the AOF.
    let token = future_token();
    let aof = resp(&["SELECT", "0"])
        + &resp(&[
            "FENCE.LOCK",
            "lk",
            "o",
            &token.to_string(),
            &(now_ms() + 600_000).to_string(),
        ]);
    let mut server = Server::start_with_files(
        &[("appendonly.aof", aof.as_bytes())],
        &["--appendonly", "yes"],
    );
    let mut con = server.conn();
    assert_eq!(int(call(&mut con, &["DEL", "lk"])), 1);
    okay(call(&mut con, &["SAVE"]));
    // Restart from the RDB alone: no lock holds the token any more, only the aux data does.
    fs::remove_dir_all(server.dir().join("appendonlydir")).unwrap();
    server.restart_with(&[]);
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "appendonly"), "no");
    assert_eq!(dbsize(&mut con), 0);
    let next = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "o", "1000"]));
    assert!(
        next > token,
        "after a restart the server issued {next}, not above the saved {token}"
    );
}

#[test]
fn locks_and_stocks_survive_a_restart_from_the_rdb() {
    let mut server = Server::start();
    let mut con = server.conn();
    let (t, fence) = populate(&mut con);
    okay(call(&mut con, &["SAVE"]));
    server.restart();
    let mut con = server.conn();
    check_populated(&mut con, t);
    check_fence(&mut con, fence);
    assert!(int(call(&mut con, &["LOCK.ACQUIRE", "lk2", "o", "1000"])) > t);
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sk", "2", "ID", "a"])),
        5,
        "a replay after the restart"
    );
}

#[test]
fn locks_and_stocks_survive_debug_reload() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    let (t, fence) = populate(&mut con);
    okay(call(&mut con, &["DEBUG", "RELOAD"]));
    check_populated(&mut con, t);
    check_fence(&mut con, fence);
}

#[test]
fn the_aof_holds_effects_and_replays_them() {
    let mut server = Server::start_with(&AOF_READ_BACK);
    let mut con = server.conn();
    let (t, fence) = populate(&mut con);
    let aof = aof_text(&server, ".incr.aof");
    // Effects, not requests.
    assert!(
        aof.contains("FENCE.LOCK"),
        "no FENCE.LOCK in the AOF:\n{aof}"
    );
    assert!(
        aof.contains("FENCE.STOCK"),
        "no FENCE.STOCK in the AOF:\n{aof}"
    );
    assert!(
        aof.contains("KEEPTTL"),
        "no SET ... KEEPTTL in the AOF:\n{aof}"
    );
    for request in ["LOCK.ACQUIRE", "STOCK.DEDUCT", "STOCK.REFUND"] {
        assert!(
            !aof.to_ascii_uppercase().contains(request),
            "{request} reached the AOF:\n{aof}"
        );
    }
    assert!(aof.contains(&t.to_string()), "the token is not in the AOF");
    server.restart();
    let mut con = server.conn();
    check_populated(&mut con, t);
    check_fence(&mut con, fence);

    // A rewritten AOF holds the same state.
    simple(call(&mut con, &["BGREWRITEAOF"]));
    wait_for_rewrite(&mut con);
    let base = aof_text(&server, ".base.aof");
    assert!(
        base.contains("FENCE.LOCK") && base.contains("FENCE.STOCK"),
        "{base}"
    );
    server.restart();
    let mut con = server.conn();
    check_populated(&mut con, t);
    check_fence(&mut con, fence);
}

#[test]
fn a_release_reaches_the_aof_as_del() {
    let mut server = Server::start_with(&AOF_READ_BACK);
    let mut con = server.conn();
    int(call(&mut con, &["LOCK.ACQUIRE", "lk", "o", "60000"]));
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lk", "o"])), 1);
    let aof = aof_text(&server, ".incr.aof");
    assert!(
        aof.contains("\r\nDEL\r\n") || aof.contains("\r\ndel\r\n"),
        "{aof}"
    );
    assert!(!aof.to_ascii_uppercase().contains("LOCK.RELEASE"), "{aof}");
    server.restart();
    let mut con = server.conn();
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn copy_duplicates_locks_and_stocks() {
    let server = Server::start();
    let mut con = server.conn();
    let (t, fence) = populate(&mut con);
    assert_eq!(int(call(&mut con, &["COPY", "lk", "lk2"])), 1);
    assert_eq!(int(call(&mut con, &["COPY", "sk", "sk2"])), 1);
    let status = call(&mut con, &["LOCK.STATUS", "lk2"]).unwrap();
    let Value::Array(items) = status else {
        panic!("LOCK.STATUS lk2 replied {status:?}");
    };
    assert_eq!(items[1], Value::BulkString(b"worker-1".to_vec()));
    assert_eq!(items[3], Value::Int(t));
    assert_eq!(stock(&mut con, "sk2"), 5);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sk2", "a"])), 2);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sk2", "b"])), 0);
    let lower = (fence - 1).to_string();
    assert_err(
        call(&mut con, &["STOCK.DEDUCT", "sk2", "1", "FENCE", &lower]),
        stale_reply(fence - 1, fence),
    );
    // A deep copy: changing the copy leaves the original alone.
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sk2", "1", "ID", "c"])),
        4
    );
    assert_eq!(int(call(&mut con, &["STOCK.REFUND", "sk2", "a"])), 2);
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lk2", "worker-1"])), 1);
    check_populated(&mut con, t);
}

/// A ledger saved as many blobs of records (encoding 3): thousands of ids fill several record
/// chunks, an id past a quarter of a chunk gets one of its own, and the restock ids theirs;
/// every entry reads back after an RDB reload and a DUMP/RESTORE, with the same digest.
#[test]
fn a_ledger_of_many_blobs_survives_reload_and_restore() {
    let server = Server::start_with(&["max-id-length", "40000", "--enable-debug-command", "yes"]);
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "many", "1000000"]));
    let ids: Vec<String> = (0..5000).map(|i| format!("order-{i:040}")).collect();
    let big = "x".repeat(20_000);
    let mut pipe = redis::pipe();
    for (i, id) in ids.iter().enumerate() {
        pipe.cmd("STOCK.DEDUCT")
            .arg("many")
            .arg(1 + i % 3)
            .arg("ID")
            .arg(id);
        if i == 2500 {
            pipe.cmd("STOCK.DEDUCT")
                .arg("many")
                .arg(7)
                .arg("ID")
                .arg(&big);
        }
    }
    let _: Vec<i64> = pipe.query(&mut con).unwrap();
    for i in (0..5000).step_by(7) {
        int(call(&mut con, &["STOCK.REFUND", "many", &ids[i]]));
    }
    for r in 0..300 {
        let id = format!("restock-{r}");
        int(call(&mut con, &["STOCK.ADD", "many", "1", "ID", &id]));
    }
    let info = |con: &mut Connection| call(con, &["STOCK.INFO", "many"]).unwrap();
    let before = (info(&mut con), digest_value(&mut con, "many"));
    let check = |con: &mut Connection, key: &str, when: &str| {
        for (i, id) in ids.iter().enumerate() {
            let want = if i % 7 == 0 { 0 } else { 1 + i as i64 % 3 };
            let got = int(call(con, &["STOCK.REQUEST", key, id]));
            assert_eq!(got, want, "{when}: {id}");
        }
        assert_eq!(int(call(con, &["STOCK.REQUEST", key, &big])), 7, "{when}");
        let available = stock(con, key);
        assert_eq!(
            int(call(con, &["STOCK.ADD", key, "1", "ID", "restock-299"])),
            available,
            "{when}: a restock id replays"
        );
    };
    let payload = dump(&mut con, "many");
    okay(call(&mut con, &["DEBUG", "RELOAD"]));
    assert_eq!(
        (info(&mut con), digest_value(&mut con, "many")),
        before,
        "after DEBUG RELOAD"
    );
    check(&mut con, "many", "after DEBUG RELOAD");
    okay(restore(&mut con, "copy", 0, &payload, &[]));
    assert_eq!(digest_value(&mut con, "copy"), before.1, "after RESTORE");
    check(&mut con, "copy", "after RESTORE");
}

#[test]
fn memory_usage_reports_locks_and_stocks() {
    let server = Server::start();
    let mut con = server.conn();
    populate(&mut con);
    assert!(int(call(&mut con, &["MEMORY", "USAGE", "lk"])) > 0);
    let before = int(call(&mut con, &["MEMORY", "USAGE", "sk"]));
    assert!(before > 0);
    okay(call(&mut con, &["STOCK.SET", "big", "1000"]));
    let empty = int(call(&mut con, &["MEMORY", "USAGE", "big"]));
    for i in 0..200 {
        let id = format!("order-{i:040}");
        int(call(&mut con, &["STOCK.DEDUCT", "big", "1", "ID", &id]));
    }
    let full = int(call(&mut con, &["MEMORY", "USAGE", "big"]));
    assert!(
        full >= empty + 200 * 40,
        "MEMORY USAGE {empty} then {full} after 200 ids of 46 bytes"
    );
}

#[test]
fn a_replica_mirrors_every_effect_and_takes_over_with_higher_tokens() {
    let master = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let mut mcon = master.conn();
    let port = master.port().to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port]);
    let mut rcon = replica.conn();
    assert!(
        wait_until(EVENT_DEADLINE, || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut rcon)
                .unwrap();
            info.contains("master_link_status:up")
        }),
        "the replica did not sync\n{}",
        tail(&replica.log())
    );
    let (t, fence) = populate(&mut mcon);
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "15000"])), 1);
    check_populated(&mut rcon, t);

    // A release replicates as a DEL; a new sale empties the replica's ledger too.
    int(call(&mut mcon, &["LOCK.ACQUIRE", "lk2", "o", "60000"]));
    assert_eq!(int(call(&mut mcon, &["LOCK.RELEASE", "lk2", "o"])), 1);
    assert_eq!(int(call(&mut mcon, &["STOCK.ADD", "sk", "2"])), 7);
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "15000"])), 1);
    assert_eq!(exists(&mut rcon, "lk2"), 0);
    assert_eq!(stock(&mut rcon, "sk"), 7);
    assert_eq!(int(call(&mut rcon, &["STOCK.REQUEST", "sk", "a"])), 2);
    okay(call(&mut mcon, &["STOCK.SET", "sk2", "3"]));
    assert_eq!(
        int(call(&mut mcon, &["STOCK.DEDUCT", "sk2", "1", "ID", "z"])),
        2
    );
    okay(call(&mut mcon, &["STOCK.SET", "sk2", "4"]));
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "15000"])), 1);
    assert_eq!(stock(&mut rcon, "sk2"), 4);
    nil(call(&mut rcon, &["STOCK.REQUEST", "sk2", "z"]));

    // Failover: the promoted replica keeps the fence and issues higher tokens.
    okay(call(&mut rcon, &["REPLICAOF", "NO", "ONE"]));
    check_fence(&mut rcon, fence);
    let next = int(call(&mut rcon, &["LOCK.ACQUIRE", "lk3", "o", "1000"]));
    assert!(next > t, "promoted replica issued {next} after {t}");
    nil(call(
        &mut rcon,
        &["LOCK.ACQUIRE", "lk", "someone-else", "1000"],
    ));
}

// ---------------------------------------------------------------------------------------------
// Every way through persistence, against a full model of the dataset: locks (owner, token,
// remaining TTL), stocks (available, every ledger entry, fence), plain-string stocks with a
// TTL, and the token clock's high-water mark.
// ---------------------------------------------------------------------------------------------

/// Most a remaining TTL may differ from what it was, once the time spent restarting is taken
/// off.
const TTL_TOLERANCE_MS: i64 = 100;

/// How the dataset goes through persistence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// `SAVE`, SIGKILL, start again from `dump.rdb`.
    RdbSave,
    /// `SHUTDOWN SAVE`, start again from `dump.rdb`.
    ShutdownSave,
    /// `appendonly yes`, `aof-use-rdb-preamble yes` (an RDB base file made at start-up, the
    /// changes in the incremental file); SIGKILL, start again.
    AofPreamble,
    /// `appendonly yes`, `aof-use-rdb-preamble no`; SIGKILL, start again.
    AofPlain,
    /// `DEBUG RELOAD`: save and load again in the same process.
    DebugReload,
    /// `BGREWRITEAOF` with the RDB preamble (the base is an RDB), SIGKILL, start again.
    RewritePreamble,
    /// `BGREWRITEAOF` without the preamble (the base is commands), SIGKILL, start again.
    RewritePlain,
}

impl Via {
    fn args(self) -> Vec<&'static str> {
        let mut args = vec!["--enable-debug-command", "yes"];
        let preamble = match self {
            Via::RdbSave | Via::ShutdownSave | Via::DebugReload => return args,
            Via::AofPreamble | Via::RewritePreamble => "yes",
            Via::AofPlain | Via::RewritePlain => "no",
        };
        args.extend([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-use-rdb-preamble",
            preamble,
        ]);
        args
    }

    /// Whether a token no live lock holds any more is remembered: the RDB carries it as aux
    /// data, an AOF not yet rewritten still holds the `FENCE.LOCK` that granted it. An AOF
    /// rewritten without the RDB preamble has neither: only the wall-clock floor remains.
    fn keeps_released_tokens(self) -> bool {
        self != Via::RewritePlain
    }

    fn loads_from_aof(self) -> bool {
        !matches!(self, Via::RdbSave | Via::ShutdownSave | Via::DebugReload)
    }
}

#[derive(Debug)]
struct LockModel {
    key: String,
    owner: String,
    token: i64,
}

#[derive(Debug)]
struct StockModel {
    key: String,
    available: i64,
    /// The highest accepted fencing token (0: none).
    fence: i64,
    /// Request id -> what STOCK.REQUEST must say (None: unknown, nil).
    ledger: Vec<(String, Option<i64>)>,
}

/// What the dataset holds, as the test built it.
#[derive(Debug, Default)]
struct Model {
    locks: Vec<LockModel>,
    /// Keys that must not exist (released, expired, deleted).
    gone: Vec<String>,
    stocks: Vec<StockModel>,
    /// Plain-string stocks: key, value.
    strings: Vec<(String, String)>,
    /// Keys with a TTL, compared before and after.
    ttl_keys: Vec<String>,
    /// Keys without a TTL.
    persistent_keys: Vec<String>,
    /// The highest token issued or taught to the server, live or not.
    issued_max: i64,
    /// The highest token a live lock holds.
    live_max: i64,
}

/// One deduction in the model and on the server.
#[track_caller]
fn model_deduct(
    con: &mut Connection,
    stock: &mut StockModel,
    quantity: i64,
    id: &str,
    fence: Option<i64>,
) {
    let q = quantity.to_string();
    let f = fence.map(|f| f.to_string());
    let mut args = vec!["STOCK.DEDUCT", stock.key.as_str(), &q, "ID", id];
    if let Some(f) = &f {
        args.extend(["FENCE", f.as_str()]);
    }
    stock.available -= quantity;
    assert_eq!(int(call(con, &args)), stock.available, "{args:?}");
    if let Some(f) = fence {
        stock.fence = f;
    }
    stock.ledger.push((id.to_string(), Some(quantity)));
}

/// Builds the dataset: locks (granted, re-acquired, renewed, released, expired), stocks with
/// ledgers, refunds, fences and a new sale, plain-string stocks with and without TTL; with
/// `futures`, also a live lock and a released lock whose tokens are hours ahead of the clock
/// (taught through RESTORE), so only the server's memory, not its clock, can be above them.
fn build(con: &mut Connection, futures: bool) -> Model {
    let mut m = Model::default();
    let mut issued = Vec::new();
    for i in 1..=5 {
        let key = format!("lk:{i}");
        let owner = format!("worker-{i}");
        let ttl = (20_000 + i * 5_000).to_string();
        let token = int(call(con, &["LOCK.ACQUIRE", &key, &owner, &ttl]));
        issued.push(token);
        m.locks.push(LockModel { key, owner, token });
    }
    // A retry-safe re-acquire and a renew keep the token and reset the TTL.
    let t2 = m.locks[1].token;
    let t3 = m.locks[2].token;
    assert_eq!(
        int(call(con, &["LOCK.ACQUIRE", "lk:2", "worker-2", "50000"])),
        t2
    );
    assert_eq!(
        int(call(con, &["LOCK.RENEW", "lk:3", "worker-3", "70000"])),
        t3
    );
    nil(call(con, &["LOCK.ACQUIRE", "lk:1", "intruder", "1000"]));
    // Released and expired locks leave nothing behind, but their tokens were issued.
    issued.push(int(call(
        con,
        &["LOCK.ACQUIRE", "lk:released", "w", "60000"],
    )));
    assert_eq!(int(call(con, &["LOCK.RELEASE", "lk:released", "w"])), 1);
    issued.push(int(call(con, &["LOCK.ACQUIRE", "lk:expired", "w", "20"])));
    m.gone
        .extend(["lk:released".to_string(), "lk:expired".to_string()]);

    // A stock with a ledger of 40 requests, fenced by the lock tokens, some refunded.
    okay(call(con, &["STOCK.SET", "sk:a", "1000"]));
    let mut a = StockModel {
        key: "sk:a".into(),
        available: 1000,
        fence: 0,
        ledger: Vec::new(),
    };
    for i in 0..40 {
        let fence = (i % 8 == 0).then(|| issued[i / 8]);
        model_deduct(con, &mut a, (i % 5 + 1) as i64, &format!("a-{i:02}"), fence);
    }
    for i in (0..40).step_by(7) {
        let id = format!("a-{i:02}");
        let held = (i % 5 + 1) as i64;
        assert_eq!(int(call(con, &["STOCK.REFUND", "sk:a", &id])), held);
        a.available += held;
        a.ledger[i].1 = Some(0);
    }
    // A replay and a stale token change nothing.
    assert_eq!(
        int(call(con, &["STOCK.DEDUCT", "sk:a", "9", "ID", "a-01"])),
        a.available
    );
    let stale = issued[0].to_string();
    assert_err(
        call(con, &["STOCK.DEDUCT", "sk:a", "1", "FENCE", &stale]),
        code::STALE,
    );
    a.ledger.push(("a-unknown".into(), None));

    // A stock created by STOCK.ADD, then a new sale: ledger cleared, fence kept.
    assert_eq!(int(call(con, &["STOCK.ADD", "sk:b", "50"])), 50);
    let mut b = StockModel {
        key: "sk:b".into(),
        available: 50,
        fence: 0,
        ledger: Vec::new(),
    };
    model_deduct(con, &mut b, 3, "b-1", Some(issued[1]));
    okay(call(con, &["STOCK.SET", "sk:b", "20"]));
    b.available = 20;
    b.ledger = vec![("b-1".into(), None)];
    model_deduct(con, &mut b, 2, "b-2", None);

    okay(call(con, &["STOCK.SET", "sk:zero", "0"]));
    let zero = StockModel {
        key: "sk:zero".into(),
        available: 0,
        fence: 0,
        ledger: vec![("z".into(), None)],
    };

    // A stock with a TTL of its own.
    okay(call(con, &["STOCK.SET", "sk:ttl", "5"]));
    assert_eq!(int(call(con, &["PEXPIRE", "sk:ttl", "80000"])), 1);
    let mut t = StockModel {
        key: "sk:ttl".into(),
        available: 5,
        fence: 0,
        ledger: Vec::new(),
    };
    model_deduct(con, &mut t, 1, "t-1", Some(issued[4]));

    // Plain-string stocks, with and without a TTL.
    okay(call(con, &["SET", "str:ttl", "100", "PX", "85000"]));
    assert_eq!(int(call(con, &["STOCK.DEDUCT", "str:ttl", "3"])), 97);
    assert_eq!(int(call(con, &["STOCK.ADD", "str:ttl", "10"])), 107);
    okay(call(con, &["SET", "str:plain", "42"]));
    assert_eq!(int(call(con, &["STOCK.DEDUCT", "str:plain", "2"])), 40);
    m.strings = vec![
        ("str:ttl".into(), "107".into()),
        ("str:plain".into(), "40".into()),
    ];

    if futures {
        let f = future_locks();
        okay(restore(con, "lk:future", 90_000, &f.dumps[0], &[]));
        m.locks.push(LockModel {
            key: "lk:future".into(),
            owner: f.owners[0].into(),
            token: f.tokens[0],
        });
        // The stock accepts the future token (an hour ahead is within the 24-hour window).
        model_deduct(con, &mut a, 1, "a-future", Some(f.tokens[0]));
        okay(restore(con, "lk:future-gone", 0, &f.dumps[1], &[]));
        assert_eq!(int(call(con, &["DEL", "lk:future-gone"])), 1);
        m.gone.push("lk:future-gone".into());
        issued.extend(f.tokens);
    }
    m.stocks = vec![a, b, zero, t];

    assert!(
        wait_until(EVENT_DEADLINE, || exists(con, "lk:expired") == 0),
        "a lock with a TTL of 20 ms did not expire"
    );
    m.ttl_keys = m.locks.iter().map(|l| l.key.clone()).collect();
    m.ttl_keys
        .extend(["sk:ttl".to_string(), "str:ttl".to_string()]);
    m.persistent_keys = ["sk:a", "sk:b", "sk:zero", "str:plain"]
        .map(String::from)
        .to_vec();
    m.issued_max = issued.into_iter().max().unwrap();
    m.live_max = m.locks.iter().map(|l| l.token).max().unwrap();
    m
}

/// Checks everything the model says, reading only (a stale fence changes nothing).
#[track_caller]
fn check_model(con: &mut Connection, m: &Model, when: &str) {
    for l in &m.locks {
        assert_eq!(key_type(con, &l.key), "fence-lck", "{when}: TYPE {}", l.key);
        match lock_status(con, &l.key) {
            Some((owner, token, ttl)) => {
                assert_eq!(
                    (owner.as_str(), token),
                    (l.owner.as_str(), l.token),
                    "{when}: lock {}",
                    l.key
                );
                assert!(ttl > 0, "{when}: lock {} has ttl {ttl}", l.key);
            }
            None => panic!("{when}: lock {} is gone", l.key),
        }
    }
    for key in &m.gone {
        assert_eq!(exists(con, key), 0, "{when}: {key} is back");
    }
    for s in &m.stocks {
        assert_eq!(key_type(con, &s.key), "fence-stk", "{when}: TYPE {}", s.key);
        assert_eq!(
            stock(con, &s.key),
            s.available,
            "{when}: available {}",
            s.key
        );
        for (id, expect) in &s.ledger {
            let reply = call(con, &["STOCK.REQUEST", &s.key, id]);
            match expect {
                Some(q) => assert_eq!(int(reply), *q, "{when}: {} request {id}", s.key),
                None => nil(reply),
            }
        }
        if s.fence > 0 {
            let lower = (s.fence - 1).to_string();
            assert_err_ctx(
                call(con, &["STOCK.DEDUCT", &s.key, "1", "FENCE", &lower]),
                stale_reply(s.fence - 1, s.fence),
                format!("{when}: {} fence", s.key),
            );
        }
    }
    for (key, value) in &m.strings {
        assert_eq!(key_type(con, key), "string", "{when}: TYPE {key}");
        assert_eq!(
            get_string(con, key).as_deref(),
            Some(value.as_str()),
            "{when}: {key}"
        );
    }
    let keys: Vec<&str> = m.persistent_keys.iter().map(String::as_str).collect();
    for (key, ttl) in keys.iter().zip(pttls(con, &keys)) {
        assert_eq!(ttl, -1, "{when}: {key} gained a TTL");
    }
}

/// The writes a check may make at the very end: the highest fence is accepted, every ledger
/// entry replays without deducting, the next token is above `floor`. Returns that token.
#[track_caller]
fn check_model_writes(con: &mut Connection, m: &Model, floor: i64, when: &str) -> i64 {
    for s in &m.stocks {
        let mut available = s.available;
        for (id, expect) in &s.ledger {
            if expect.is_some() {
                let reply = int(call(con, &["STOCK.DEDUCT", &s.key, "1", "ID", id]));
                assert_eq!(reply, available, "{when}: a replay of {id} on {}", s.key);
            }
        }
        if s.fence > 0 && available > 0 {
            let equal = s.fence.to_string();
            available -= 1;
            assert_eq!(
                int(call(con, &["STOCK.DEDUCT", &s.key, "1", "FENCE", &equal])),
                available,
                "{when}: {} refused a token equal to its highest",
                s.key
            );
        }
    }
    let next = int(call(con, &["LOCK.ACQUIRE", "lk:next", "o", "10000"]));
    assert!(
        next > floor,
        "{when}: the next token {next} is not above {floor}"
    );
    next
}

/// A file of the server's AOF directory whose name ends with `suffix`.
fn aof_file(server: &Server, suffix: &str) -> Option<Vec<u8>> {
    let dir = server.dir().join("appendonlydir");
    fs::read_dir(dir).ok()?.find_map(|entry| {
        let path = entry.ok()?.path();
        path.to_string_lossy()
            .ends_with(suffix)
            .then(|| fs::read(&path).unwrap())
    })
}

/// Remaining TTLs measured right before and right after a reload, with the bounds of the
/// wall time that passed between the two measurements.
struct TtlSnapshot {
    before: Vec<i64>,
    after: Vec<i64>,
    /// The least and the most time that can have passed between the two PTTL readings.
    min_elapsed: i64,
    max_elapsed: i64,
}

impl TtlSnapshot {
    /// Checks every TTL against the tolerance; returns the largest drift (ms), i.e. how far
    /// a TTL is from what it was less the time that passed (taken at the middle of its bounds).
    #[track_caller]
    fn check(&self, keys: &[String], when: &str) -> i64 {
        let mid = (self.min_elapsed + self.max_elapsed) / 2;
        let mut worst = 0i64;
        for ((key, before), after) in keys.iter().zip(&self.before).zip(&self.after) {
            assert!(
                *before > 0 && *after > 0,
                "{when}: {key} PTTL {before} then {after}"
            );
            let low = before - self.max_elapsed - TTL_TOLERANCE_MS;
            let high = before - self.min_elapsed + TTL_TOLERANCE_MS;
            assert!(
                (low..=high).contains(after),
                "{when}: {key} had {before} ms left, then {after} ms, {}..{} ms later",
                self.min_elapsed,
                self.max_elapsed
            );
            let drift = after - (before - mid);
            if drift.abs() > worst.abs() {
                worst = drift;
            }
        }
        worst
    }
}

/// Runs `kind` on the server; measures the TTLs of `keys` right before and right after.
/// Returns a connection to the server as it runs afterwards.
fn reload(server: &mut Server, kind: Via, keys: &[String]) -> (Connection, TtlSnapshot) {
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut con = server.conn();
    match kind {
        Via::RdbSave => okay(call(&mut con, &["SAVE"])),
        Via::RewritePreamble | Via::RewritePlain => {
            simple(call(&mut con, &["BGREWRITEAOF"]));
            wait_for_rewrite(&mut con);
            if kind == Via::RewritePreamble {
                let base = aof_file(server, ".base.rdb").expect("an RDB base file");
                // Valkey 9 writes RDB version 80 under its own magic (`VALKEY080`).
                let magic: &[u8] = if server_identity(&mut con).is_valkey_at_least((9, 0)) {
                    b"VALKEY"
                } else {
                    b"REDIS"
                };
                assert!(
                    base.starts_with(magic),
                    "the base is not an RDB: it starts with {:?}",
                    String::from_utf8_lossy(&base[..base.len().min(9)])
                );
            } else {
                let base = aof_file(server, ".base.aof").expect("a command base file");
                let base = String::from_utf8_lossy(&base);
                assert!(
                    base.contains("FENCE.LOCK") && base.contains("FENCE.STOCK"),
                    "the rewritten AOF lacks the module's commands:\n{base}"
                );
            }
        }
        _ => {}
    }
    let a0 = Instant::now();
    let before = pttls(&mut con, &keys);
    let a1 = Instant::now();
    match kind {
        Via::DebugReload => okay(call(&mut con, &["DEBUG", "RELOAD"])),
        Via::ShutdownSave => {
            // The server closes the connection as it exits: no reply to wait for.
            let _ = call(&mut con, &["SHUTDOWN", "SAVE"]);
            let status = server.wait_exit(EVENT_DEADLINE);
            assert!(
                status.is_some_and(|s| s.success()),
                "SHUTDOWN SAVE: exit status {status:?}\n{}",
                tail(&server.log())
            );
            server.mark_stopped();
            server.restart();
            con = server.conn();
        }
        _ => {
            server.restart();
            con = server.conn();
        }
    }
    let b0 = Instant::now();
    let after = pttls(&mut con, &keys);
    let b1 = Instant::now();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap();
    let snapshot = TtlSnapshot {
        before,
        after,
        min_elapsed: ms(b0 - a1),
        max_elapsed: ms(b1 - a0),
    };
    (con, snapshot)
}

/// The whole round trip for one kind of reload.
fn survives(kind: Via) {
    let mut server = Server::start_with(&kind.args());
    let mut con = server.conn();
    let model = build(&mut con, true);
    check_model(&mut con, &model, "before");
    let digest = debug_digest(&mut con);
    let keys = model.locks.len() + model.stocks.len() + model.strings.len();
    assert_eq!(dbsize(&mut con), keys as i64, "{:?}", all_keys(&mut con));
    let (mut con, ttl) = reload(&mut server, kind, &model.ttl_keys);
    let when = format!("after {kind:?}");
    if kind.loads_from_aof() {
        assert!(
            server.log().contains("DB loaded from append only file"),
            "{when}: not loaded from the AOF\n{}",
            tail(&server.log())
        );
    } else if kind != Via::DebugReload {
        assert!(
            server.log().contains("DB loaded from disk"),
            "{when}: not loaded from the RDB\n{}",
            tail(&server.log())
        );
    }
    let drift = ttl.check(&model.ttl_keys, &when);
    check_model(&mut con, &model, &when);
    assert_eq!(
        debug_digest(&mut con),
        digest,
        "{when}: DEBUG DIGEST differs"
    );
    let floor = if kind.keeps_released_tokens() {
        model.issued_max
    } else {
        model.live_max
    };
    let next = check_model_writes(&mut con, &model, floor, &when);
    println!(
        "{kind:?}: {} TTLs, largest drift {drift} ms (restart took {}..{} ms); next token {next} \
         {} the highest ever issued {} (live high {})",
        model.ttl_keys.len(),
        ttl.min_elapsed,
        ttl.max_elapsed,
        if next > model.issued_max { ">" } else { "<=" },
        model.issued_max,
        model.live_max
    );
}

#[test]
fn everything_survives_save_and_a_crash() {
    survives(Via::RdbSave);
}

#[test]
fn everything_survives_shutdown_save() {
    survives(Via::ShutdownSave);
}

#[test]
fn everything_survives_the_aof_with_rdb_preamble() {
    survives(Via::AofPreamble);
}

#[test]
fn everything_survives_the_aof_without_rdb_preamble() {
    survives(Via::AofPlain);
}

#[test]
fn everything_survives_debug_reload() {
    survives(Via::DebugReload);
}

#[test]
fn everything_survives_an_aof_rewrite_with_rdb_preamble() {
    survives(Via::RewritePreamble);
}

#[test]
fn everything_survives_an_aof_rewrite_without_rdb_preamble() {
    survives(Via::RewritePlain);
}

/// An AOF without the RDB preamble has no aux data: once every lock is gone and the AOF is
/// rewritten, nothing on disk remembers a token. The wall-clock floor still keeps the next
/// token above every earlier one.
#[test]
fn tokens_rise_after_every_lock_is_gone_from_an_aof_without_preamble() {
    let mut server = Server::start_with(&Via::RewritePlain.args());
    let mut con = server.conn();
    let mut issued = Vec::new();
    for i in 0..20 {
        let key = format!("lk:{i}");
        issued.push(int(call(&mut con, &["LOCK.ACQUIRE", &key, "o", "60000"])));
        // Re-acquires and renews return the same token.
        assert_eq!(
            int(call(&mut con, &["LOCK.RENEW", &key, "o", "60000"])),
            issued[i]
        );
    }
    for i in 0..20 {
        let key = format!("lk:{i}");
        assert_eq!(int(call(&mut con, &["LOCK.RELEASE", &key, "o"])), 1);
    }
    assert!(issued.windows(2).all(|w| w[0] < w[1]), "{issued:?}");
    let highest = *issued.last().unwrap();
    simple(call(&mut con, &["BGREWRITEAOF"]));
    wait_for_rewrite(&mut con);
    let base = aof_file(&server, ".base.aof").expect("a command base file");
    assert!(
        !String::from_utf8_lossy(&base).contains("FENCE.LOCK"),
        "the rewritten AOF still holds a lock"
    );
    server.restart();
    let mut con = server.conn();
    assert_eq!(dbsize(&mut con), 0);
    let clock = now_us();
    let next = int(call(&mut con, &["LOCK.ACQUIRE", "lk:0", "o", "1000"]));
    println!(
        "AOF without preamble, every lock gone: highest before {highest}, next {next} \
         (+{} us)",
        next - highest
    );
    assert!(next > highest, "token {next} after {highest}");
    assert!(next >= clock, "token {next} below the clock {clock}");
}

// ---------------------------------------------------------------------------------------------
// Writes mark the dataset dirty; save rules fire.
// ---------------------------------------------------------------------------------------------

fn changes(con: &mut Connection) -> i64 {
    info_int(con, "persistence", "rdb_changes_since_last_save")
}

/// Runs a command that changes the dataset: the change count must grow.
#[track_caller]
fn dirties(con: &mut Connection, args: &[&str]) {
    let before = changes(con);
    let reply = call(con, args);
    assert!(reply.is_ok(), "{args:?}: {reply:?}");
    let after = changes(con);
    assert!(
        after > before,
        "{args:?} changed the dataset but rdb_changes_since_last_save stayed at {before}"
    );
}

/// Runs a command that changes nothing (a read, a no-op, a refusal): the count stays.
#[track_caller]
fn leaves_clean(con: &mut Connection, args: &[&str]) {
    let before = changes(con);
    let _ = call(con, args);
    assert_eq!(
        changes(con),
        before,
        "{args:?} changed nothing but rdb_changes_since_last_save moved"
    );
}

#[test]
fn every_module_write_marks_the_dataset_dirty() {
    let server = Server::start();
    let mut con = server.conn();
    dirties(&mut con, &["LOCK.ACQUIRE", "lk", "o", "60000"]);
    dirties(&mut con, &["LOCK.ACQUIRE", "lk", "o", "50000"]);
    dirties(&mut con, &["LOCK.RENEW", "lk", "o", "40000"]);
    dirties(&mut con, &["LOCK.RELEASE", "lk", "o"]);
    dirties(&mut con, &["STOCK.SET", "sk", "10"]);
    dirties(&mut con, &["STOCK.ADD", "sk", "5"]);
    dirties(&mut con, &["STOCK.DEDUCT", "sk", "1"]);
    dirties(&mut con, &["STOCK.DEDUCT", "sk", "2", "ID", "r1"]);
    let fence = now_us().to_string();
    dirties(&mut con, &["STOCK.DEDUCT", "sk", "1", "FENCE", &fence]);
    dirties(&mut con, &["STOCK.REFUND", "sk", "r1"]);
    dirties(&mut con, &["STOCK.SET", "sk", "3"]);
    okay(call(&mut con, &["SET", "str", "9"]));
    dirties(&mut con, &["STOCK.DEDUCT", "str", "1"]);
    dirties(&mut con, &["STOCK.ADD", "str", "1"]);

    // Reads, no-ops and refusals leave the count alone.
    int(call(&mut con, &["LOCK.ACQUIRE", "held", "o", "60000"]));
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sk", "1", "ID", "r2"])),
        2
    );
    leaves_clean(&mut con, &["LOCK.STATUS", "held"]);
    leaves_clean(&mut con, &["LOCK.ACQUIRE", "held", "other", "1000"]);
    leaves_clean(&mut con, &["LOCK.RENEW", "held", "other", "1000"]);
    leaves_clean(&mut con, &["LOCK.RELEASE", "held", "other"]);
    leaves_clean(&mut con, &["LOCK.RELEASE", "free", "o"]);
    leaves_clean(&mut con, &["STOCK.GET", "sk"]);
    leaves_clean(&mut con, &["STOCK.REQUEST", "sk", "r2"]);
    leaves_clean(&mut con, &["STOCK.DEDUCT", "sk", "1", "ID", "r2"]);
    leaves_clean(&mut con, &["STOCK.DEDUCT", "sk", "100"]);
    leaves_clean(&mut con, &["STOCK.REFUND", "sk", "unknown"]);
    leaves_clean(&mut con, &["STOCK.DEDUCT", "sk", "1", "FENCE", "1"]);
    leaves_clean(&mut con, &["FENCE.STOCK", "sk", "99", "0", "0", "RESET"]);
    assert_eq!(stock(&mut con, "sk"), 2);
}

#[test]
fn a_save_rule_fires_after_module_writes_alone() {
    let mut server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["CONFIG", "SET", "save", "1 1"]));
    let started = info_int(&mut con, "persistence", "rdb_last_save_time");
    assert_eq!(changes(&mut con), 0);
    let token = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "o", "60000"]));
    okay(call(&mut con, &["STOCK.SET", "sk", "7"]));
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sk", "2", "ID", "r"])),
        5
    );
    assert!(changes(&mut con) > 0);
    let saved = wait_until(EVENT_DEADLINE, || {
        let text = info(&mut con, "persistence");
        info_value(&text, "rdb_changes_since_last_save").as_deref() == Some("0")
            && info_value(&text, "rdb_bgsave_in_progress").as_deref() == Some("0")
            && info_value(&text, "rdb_last_save_time") != Some(started.to_string())
    });
    assert!(
        saved,
        "the save rule \"1 1\" did not fire after module writes\n{}",
        info(&mut con, "persistence")
    );
    assert_eq!(
        info_value(&info(&mut con, "persistence"), "rdb_last_bgsave_status").as_deref(),
        Some("ok")
    );
    // What it saved is the module's data.
    server.restart();
    let mut con = server.conn();
    assert_eq!(
        lock_status(&mut con, "lk").map(|(o, t, _)| (o, t)),
        Some(("o".to_string(), token))
    );
    assert_eq!(stock(&mut con, "sk"), 5);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sk", "r"])), 2);
}

// ---------------------------------------------------------------------------------------------
// The replication-only commands, from an ordinary client, in every way a client can send them.
// ---------------------------------------------------------------------------------------------

#[test]
fn internal_commands_are_refused_in_transactions_and_scripts() {
    let server = Server::start_with(&AOF_READ_BACK);
    let mut con = server.conn();
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "owner", "60000"]));
    okay(call(&mut con, &["STOCK.SET", "sk", "5"]));
    let before = changes(&mut con);
    let forged = future_token().to_string();
    let expire = (now_ms() + 600_000).to_string();
    let forgeries: [&[&str]; 5] = [
        &["FENCE.LOCK", "lk", "forger", &forged, &expire],
        &["FENCE.LOCK", "new-lock", "forger", &forged, &expire],
        &["FENCE.STOCK", "sk", "100", &forged, "0", "RESET"],
        &[
            "FENCE.STOCK",
            "sk",
            "100",
            "0",
            "0",
            "KEEP",
            "forged-id",
            "1",
        ],
        &["fence.stock", "new-stock", "100", "0", "0", "RESET"],
    ];
    for forgery in forgeries {
        // Plain.
        assert_err_ctx(
            call(&mut con, forgery),
            INTERNAL_ONLY,
            format!("{forgery:?}"),
        );
        // Inside MULTI/EXEC, alone and next to a legitimate write.
        okay(call(&mut con, &["MULTI"]));
        assert_eq!(simple(call(&mut con, forgery)), "QUEUED");
        assert_err_ctx(
            call(&mut con, &["EXEC"]),
            INTERNAL_ONLY,
            format!("MULTI {forgery:?} EXEC"),
        );
        okay(call(&mut con, &["MULTI"]));
        simple(call(&mut con, &["STOCK.GET", "sk"]));
        simple(call(&mut con, forgery));
        assert_err_ctx(
            call(&mut con, &["EXEC"]),
            INTERNAL_ONLY,
            format!("MULTI STOCK.GET {forgery:?} EXEC"),
        );
        // From a script, with redis.call and with redis.pcall.
        let quoted: Vec<String> = forgery.iter().map(|a| format!("'{a}'")).collect();
        for f in ["call", "pcall"] {
            let script = format!("return redis.{f}({})", quoted.join(", "));
            assert_err_ctx(
                call(&mut con, &["EVAL", &script, "1", forgery[1]]),
                INTERNAL_ONLY,
                format!("EVAL {script}"),
            );
        }
    }
    // A transaction with a legitimate write runs it, and only it.
    okay(call(&mut con, &["MULTI"]));
    simple(call(&mut con, &["STOCK.ADD", "sk", "1"]));
    simple(call(&mut con, forgeries[2]));
    assert_err(call(&mut con, &["EXEC"]), INTERNAL_ONLY);
    assert_eq!(stock(&mut con, "sk"), 6);
    // Nothing else changed: keys, lock, stock, ledger, fence, the token clock, the AOF.
    assert_eq!(changes(&mut con), before + 1);
    assert_eq!(all_keys(&mut con), vec!["lk".to_string(), "sk".to_string()]);
    assert_eq!(
        lock_status(&mut con, "lk").map(|(o, t, _)| (o, t)),
        Some(("owner".to_string(), t))
    );
    nil(call(&mut con, &["STOCK.REQUEST", "sk", "forged-id"]));
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sk", "1", "FENCE", "1"])),
        5,
        "a forged fence was kept"
    );
    let next = int(call(&mut con, &["LOCK.ACQUIRE", "lk2", "o", "1000"]));
    assert!(
        next < future_token() - 1_000_000,
        "token {next} after a forgery"
    );
    let aof = aof_text(&server, ".incr.aof");
    assert!(!aof.contains("forge"), "a forgery reached the AOF:\n{aof}");
}
