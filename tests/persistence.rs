//! The README's "Replication and persistence" section: RDB and AOF round trips, COPY, memory
//! usage, effect replication (`FENCE.LOCK`, `FENCE.STOCK`, `SET ... KEEPTTL`), internal
//! commands refused to clients, and the highest token surviving a restart.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use redis::{Connection, Value};

const INTERNAL: &str = "ERR this command is internal";

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
        format!("STALE fencing token {lower} is below the highest accepted token {fence}"),
    );
}

/// Waits until no AOF rewrite is running or scheduled.
fn wait_for_rewrite(con: &mut Connection) {
    assert!(
        wait_until(Duration::from_secs(10), || {
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
        INTERNAL,
    );
    assert_err(
        call(&mut con, &["FENCE.STOCK", "sk", "10", "0", "0", "RESET"]),
        INTERNAL,
    );
    assert_err(
        call(
            &mut con,
            &["FENCE.STOCK", "sk", "10", "0", "0", "RESET", "a", "1"],
        ),
        INTERNAL,
    );
    let script = format!("return redis.call('FENCE.LOCK', KEYS[1], 'o', '{forged}', '{expire}')");
    assert_err(call(&mut con, &["EVAL", &script, "1", "lk"]), "ERR");
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
        INTERNAL,
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
    let mut server = Server::start_with(&["--appendonly", "yes", "--aof-use-rdb-preamble", "no"]);
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
    let mut server = Server::start_with(&["--appendonly", "yes", "--aof-use-rdb-preamble", "no"]);
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
        format!("STALE fencing token {lower} is below the highest accepted token {fence}"),
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
        wait_until(Duration::from_secs(10), || {
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
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "5000"])), 1);
    check_populated(&mut rcon, t);

    // A release replicates as a DEL; a new sale empties the replica's ledger too.
    int(call(&mut mcon, &["LOCK.ACQUIRE", "lk2", "o", "60000"]));
    assert_eq!(int(call(&mut mcon, &["LOCK.RELEASE", "lk2", "o"])), 1);
    assert_eq!(int(call(&mut mcon, &["STOCK.ADD", "sk", "2"])), 7);
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "5000"])), 1);
    assert_eq!(exists(&mut rcon, "lk2"), 0);
    assert_eq!(stock(&mut rcon, "sk"), 7);
    assert_eq!(int(call(&mut rcon, &["STOCK.REQUEST", "sk", "a"])), 2);
    okay(call(&mut mcon, &["STOCK.SET", "sk2", "3"]));
    assert_eq!(
        int(call(&mut mcon, &["STOCK.DEDUCT", "sk2", "1", "ID", "z"])),
        2
    );
    okay(call(&mut mcon, &["STOCK.SET", "sk2", "4"]));
    assert_eq!(int(call(&mut mcon, &["WAIT", "1", "5000"])), 1);
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
