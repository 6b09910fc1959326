//! Eviction is safe by default (the README's `fence.allow-eviction`): under every
//! `maxmemory-policy`, with the setting `no` and `yes`, which writes are refused and which are
//! not, the exact refusal and that it changes nothing; `CONFIG SET` of the policy, of
//! `maxmemory` and of the setting taking effect at once; the setting's forms; `INFO fence` and
//! the log line; a replica and an AOF replay that apply the master's effects whatever their
//! policy; and an evicted lock handed to its waiter at once.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use fence_core::args::MAX_WAIT_MS;
use fence_core::config::MAX_TTL_MS;
use redis::{Connection, RedisResult, Value};

const MB100: &str = "104857600";
const SYNC: Duration = Duration::from_secs(15);

/// Which of the module's keys a policy may evict (the README's `eviction_risk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Risk {
    None,
    All,
    WithTtl,
}

impl Risk {
    fn name(self) -> &'static str {
        match self {
            Risk::None => "none",
            Risk::All => "locks-and-stocks",
            Risk::WithTtl => "locks-and-stocks-with-ttl",
        }
    }
}

/// A server with `maxmemory` and `maxmemory-policy`; `extra` comes first, so its plain words
/// are module arguments.
fn start(maxmemory: &str, policy: &str, extra: &[&str]) -> Server {
    let mut args = extra.to_vec();
    args.extend_from_slice(&[
        "--enable-debug-command",
        "yes",
        "--maxmemory",
        maxmemory,
        "--maxmemory-policy",
        policy,
    ]);
    Server::start_with(&args)
}

fn set_config(con: &mut Connection, name: &str, value: &str) {
    okay(call(con, &["CONFIG", "SET", name, value]));
}

/// The `INFO fence` fields of the eviction rule: policy, risk, allow_eviction.
#[track_caller]
fn eviction_info(con: &mut Connection) -> (String, String, String) {
    let text = info(con, "fence");
    let field = |name: &str| {
        info_value(&text, &format!("fence_{name}"))
            .unwrap_or_else(|| panic!("INFO fence has no fence_{name}:\n{text}"))
    };
    (
        field("maxmemory_policy"),
        field("eviction_risk"),
        field("allow_eviction"),
    )
}

/// Runs `args`: when `refused`, the reply must be exactly the refusal and the data set
/// (`DEBUG DIGEST`) unchanged; otherwise it must not be an error. Returns the reply.
#[track_caller]
fn expect(con: &mut Connection, args: &[&str], refused: bool, policy: &str) -> Value {
    let before = debug_digest(con);
    let reply = call(con, args);
    if refused {
        assert_eq!(err(reply), eviction_risk(policy), "{args:?}");
        assert_eq!(
            debug_digest(con),
            before,
            "{args:?} was refused but changed data"
        );
        Value::Nil
    } else {
        match reply {
            Ok(v) => v,
            Err(e) => panic!(
                "{args:?} under {policy}: unexpected error {}",
                error_text(&e)
            ),
        }
    }
}

/// A module stock of 100 with one deduction (`ID seen`, `FENCE token`) and, if asked, a TTL.
fn make_stock(con: &mut Connection, key: &str, ttl: bool, token: &str) {
    okay(call(con, &["STOCK.SET", key, "100"]));
    if ttl {
        assert_eq!(int(call(con, &["PEXPIRE", key, "600000"])), 1);
    }
    assert_eq!(
        int(call(
            con,
            &["STOCK.DEDUCT", key, "1", "ID", "seen", "FENCE", token]
        )),
        99
    );
}

/// The README's contract for one policy and one value of `fence.allow-eviction`.
fn contract(con: &mut Connection, policy: &str, risk: Risk, allow: bool) {
    // Set up with eviction accepted, then switch to the value under test.
    set_config(con, "fence.allow-eviction", "yes");
    let _ = call(con, &["DEL", "held"]);
    let token = int(call(con, &["LOCK.ACQUIRE", "held", "a", "600000"])).to_string();
    for (key, ttl) in [
        ("s", false),
        ("st", true),
        ("s:set", false),
        ("st:set", true),
        ("s:add", false),
        ("st:add", true),
    ] {
        let _ = call(con, &["DEL", key]);
        make_stock(con, key, ttl, &token);
    }
    okay(call(con, &["SET", "plain", "100"]));
    okay(call(con, &["SET", "plain:ttl", "100", "PX", "600000"]));
    okay(call(con, &["SET", "str", "x"]));
    set_config(
        con,
        "fence.allow-eviction",
        if allow { "yes" } else { "no" },
    );
    let expected_allow = if allow { "1" } else { "0" };
    assert_eq!(
        eviction_info(con),
        (
            policy.to_string(),
            risk.name().to_string(),
            expected_allow.to_string()
        )
    );

    let lock = !allow && risk != Risk::None;
    let stock = !allow && risk == Risk::All;
    let stock_ttl = !allow && risk != Risk::None;
    let p = policy;

    // LOCK.ACQUIRE, every form: a free key, a held one, the holder's re-acquire, WAIT.
    let v = expect(con, &["LOCK.ACQUIRE", "new", "a", "1000"], lock, p);
    assert_eq!(exists(con, "new"), i64::from(!lock), "{v:?}");
    expect(
        con,
        &["LOCK.ACQUIRE", "new:w", "a", "1000", "WAIT", "100"],
        lock,
        p,
    );
    assert_eq!(exists(con, "new:w"), i64::from(!lock));
    let v = expect(con, &["LOCK.ACQUIRE", "held", "b", "1000"], lock, p);
    if !lock {
        assert_eq!(v, Value::Nil);
    }
    let v = expect(
        con,
        &["LOCK.ACQUIRE", "held", "b", "1000", "WAIT", "10"],
        lock,
        p,
    );
    if !lock {
        assert_eq!(v, Value::Nil);
    }
    let v = expect(con, &["LOCK.ACQUIRE", "held", "a", "600000"], lock, p);
    if !lock {
        assert_eq!(v, Value::Int(token.parse().unwrap()));
    }
    // Argument errors come first.
    assert_err(
        call(con, &["LOCK.ACQUIRE", "new", "a", "0"]),
        ttl_range(MAX_TTL_MS.default),
    );
    assert_err(
        call(con, &["LOCK.ACQUIRE", "new", "a", "1000", "WAIT", "-1"]),
        timeout_range(MAX_WAIT_MS),
    );
    assert_err(
        call(con, &["LOCK.ACQUIRE", "new", "", "1000"]),
        empty_name(Name::Owner),
    );
    assert_err(call(con, &["LOCK.ACQUIRE", "new", "a"]), arity_lead());

    // STOCK.SET and STOCK.ADD: an empty key (a stock without TTL), a stock, a stock with TTL.
    expect(con, &["STOCK.SET", "new:s", "5"], stock, p);
    assert_eq!(exists(con, "new:s"), i64::from(!stock));
    expect(con, &["STOCK.SET", "s:set", "5"], stock, p);
    expect(con, &["STOCK.SET", "st:set", "5"], stock_ttl, p);
    let v = expect(con, &["STOCK.ADD", "new:a", "5"], stock, p);
    if !stock {
        assert_eq!(v, Value::Int(5));
    }
    expect(con, &["STOCK.ADD", "s:add", "5"], stock, p);
    expect(con, &["STOCK.ADD", "st:add", "5"], stock_ttl, p);
    // Errors of the arguments and of the key's type come first.
    assert_err(call(con, &["STOCK.SET", "new:s2", "-1"]), quantity_range(0));
    assert_err(call(con, &["STOCK.SET", "str", "5"]), WRONGTYPE);
    assert_err(call(con, &["STOCK.ADD", "held", "5"]), WRONGTYPE);

    // Plain integer strings are never refused.
    assert_eq!(
        expect(con, &["STOCK.ADD", "plain", "1"], false, p),
        Value::Int(101)
    );
    assert_eq!(
        expect(con, &["STOCK.DEDUCT", "plain", "1"], false, p),
        Value::Int(100)
    );
    assert_eq!(
        expect(con, &["STOCK.ADD", "plain:ttl", "1"], false, p),
        Value::Int(101)
    );
    assert_eq!(
        expect(con, &["STOCK.DEDUCT", "plain:ttl", "1"], false, p),
        Value::Int(100)
    );

    // STOCK.DEDUCT: a new id is refused, a replay answered, a deduction without id runs.
    for (key, refused) in [("s", stock), ("st", stock_ttl)] {
        let v = expect(con, &["STOCK.DEDUCT", key, "1", "ID", "new"], refused, p);
        let mut left = if refused {
            99
        } else {
            assert_eq!(v, Value::Int(98));
            98
        };
        // The id step comes before the quantity: a new id is refused even when short.
        let v = expect(con, &["STOCK.DEDUCT", key, "1000", "ID", "big"], refused, p);
        if !refused {
            assert_eq!(v, Value::Nil);
        }
        // STALE comes before the id step.
        assert_err(
            call(
                con,
                &["STOCK.DEDUCT", key, "1", "ID", "other", "FENCE", "1"],
            ),
            code::STALE,
        );
        assert_eq!(
            expect(con, &["STOCK.DEDUCT", key, "5", "ID", "seen"], false, p),
            Value::Int(left)
        );
        left -= 2;
        assert_eq!(
            expect(con, &["STOCK.DEDUCT", key, "2"], false, p),
            Value::Int(left)
        );
        left -= 1;
        assert_eq!(
            expect(con, &["STOCK.DEDUCT", key, "1", "FENCE", &token], false, p),
            Value::Int(left)
        );
        let ledger = call(con, &["STOCK.REQUEST", key, "new"]).expect("STOCK.REQUEST");
        assert_eq!(ledger, if refused { Value::Nil } else { Value::Int(1) });
        // Refunds only shrink state: never refused.
        assert_eq!(
            expect(con, &["STOCK.REFUND", key, "seen"], false, p),
            Value::Int(1)
        );
    }
    // A missing key: nothing would be created.
    assert_eq!(
        expect(con, &["STOCK.DEDUCT", "missing", "1", "ID", "x"], false, p),
        Value::Nil
    );

    // Writes that only shrink or end a lock are never refused.
    assert_eq!(
        expect(con, &["LOCK.RENEW", "held", "a", "600000"], false, p),
        Value::Int(token.parse().unwrap())
    );
    assert_eq!(
        expect(con, &["LOCK.RENEW", "held", "b", "1000"], false, p),
        Value::Nil
    );
    assert_eq!(
        expect(con, &["LOCK.RELEASE", "held", "b"], false, p),
        Value::Int(0)
    );
    assert_eq!(
        expect(con, &["LOCK.RELEASE", "held", "a"], false, p),
        Value::Int(1)
    );

    // From a script or a transaction: still an ordinary client's command.
    let script = "return redis.call('LOCK.ACQUIRE', KEYS[1], 'a', '1000')";
    let r = call(con, &["EVAL", script, "1", "new:lua"]);
    if lock {
        let text = err(r);
        assert!(text.starts_with(&eviction_risk(p)), "{text}");
    } else {
        int(r);
    }
    okay(call(con, &["MULTI"]));
    simple(call(con, &["LOCK.ACQUIRE", "new:multi", "a", "1000"]));
    let r: RedisResult<Value> = call(con, &["EXEC"]);
    match r {
        // The client library turns the error inside EXEC's reply into the call's error.
        Err(e) if lock => assert_eq!(error_text(&e), eviction_risk(p)),
        Ok(Value::Array(items)) if !lock => {
            assert!(matches!(items[..], [Value::Int(_)]), "{items:?}")
        }
        other => panic!("EXEC: {other:?}"),
    }
    assert_eq!(exists(con, "new:multi"), i64::from(!lock));

    // Clean up what the allowed calls created, for the next round.
    for key in [
        "new",
        "new:w",
        "new:s",
        "new:a",
        "new:lua",
        "new:multi",
        "held",
    ] {
        let _ = call(con, &["DEL", key]);
    }
}

/// Starts a server with `policy` and `maxmemory`, checks what it logged at load and shows in
/// `INFO fence`, then the contract with `fence.allow-eviction` `no` and `yes`.
fn policy_contract(maxmemory: &str, policy: &str, risk: Risk) {
    let server = start(maxmemory, policy, &[]);
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "fence.allow-eviction"), "no");
    assert_eq!(
        eviction_info(&mut con),
        (policy.to_string(), risk.name().to_string(), "0".to_string())
    );
    let head = format!("fence: maxmemory-policy {policy} with maxmemory {maxmemory} ");
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains(&head))
        .unwrap_or_else(|| panic!("no load line {head:?} in the log:\n{}", tail(&log)));
    match risk {
        Risk::None => assert!(line.contains("cannot evict locks or stocks"), "{line}"),
        Risk::All => assert!(
            line.contains(
                "can evict locks and stocks: LOCK.ACQUIRE, STOCK.SET, STOCK.ADD and new \
                 STOCK.DEDUCT ... ID entries are refused until fence.allow-eviction is yes"
            ),
            "{line}"
        ),
        Risk::WithTtl => assert!(
            line.contains("can evict locks and stocks that have a TTL: LOCK.ACQUIRE, and"),
            "{line}"
        ),
    }
    contract(&mut con, policy, risk, false);
    contract(&mut con, policy, risk, true);
}

#[test]
fn noeviction_refuses_nothing() {
    policy_contract(MB100, "noeviction", Risk::None);
}

#[test]
fn maxmemory_0_refuses_nothing_whatever_the_policy() {
    policy_contract("0", "allkeys-lru", Risk::None);
}

#[test]
fn allkeys_lru_refuses_locks_and_stocks() {
    policy_contract(MB100, "allkeys-lru", Risk::All);
}

#[test]
fn allkeys_lfu_refuses_locks_and_stocks() {
    policy_contract(MB100, "allkeys-lfu", Risk::All);
}

#[test]
fn allkeys_random_refuses_locks_and_stocks() {
    policy_contract(MB100, "allkeys-random", Risk::All);
}

#[test]
fn volatile_lru_refuses_locks_and_stocks_with_a_ttl() {
    policy_contract(MB100, "volatile-lru", Risk::WithTtl);
}

#[test]
fn volatile_lfu_refuses_locks_and_stocks_with_a_ttl() {
    policy_contract(MB100, "volatile-lfu", Risk::WithTtl);
}

#[test]
fn volatile_random_refuses_locks_and_stocks_with_a_ttl() {
    policy_contract(MB100, "volatile-random", Risk::WithTtl);
}

#[test]
fn volatile_ttl_refuses_locks_and_stocks_with_a_ttl() {
    policy_contract(MB100, "volatile-ttl", Risk::WithTtl);
}

/// How many lines of `log` contain `needle`.
fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn config_set_takes_effect_at_once_both_ways() {
    let server = start(MB100, "noeviction", &[]);
    let mut con = server.conn();
    let acquire = |con: &mut Connection| call(con, &["LOCK.ACQUIRE", "l", "a", "1000"]);
    let new_stock = |con: &mut Connection| call(con, &["STOCK.SET", "s", "1"]);
    int(acquire(&mut con));

    set_config(&mut con, "maxmemory-policy", "allkeys-lru");
    assert_eq!(err(acquire(&mut con)), eviction_risk("allkeys-lru"));
    assert_eq!(err(new_stock(&mut con)), eviction_risk("allkeys-lru"));
    assert_eq!(eviction_info(&mut con).1, "locks-and-stocks");

    set_config(&mut con, "maxmemory", "0");
    int(acquire(&mut con));
    assert_eq!(eviction_info(&mut con).1, "none");

    set_config(&mut con, "maxmemory", "100mb");
    assert_eq!(err(acquire(&mut con)), eviction_risk("allkeys-lru"));

    set_config(&mut con, "maxmemory-policy", "volatile-ttl");
    assert_eq!(err(acquire(&mut con)), eviction_risk("volatile-ttl"));
    okay(new_stock(&mut con));
    assert_eq!(eviction_info(&mut con).1, "locks-and-stocks-with-ttl");

    set_config(&mut con, "fence.allow-eviction", "yes");
    int(acquire(&mut con));
    assert_eq!(eviction_info(&mut con).2, "1");
    set_config(&mut con, "fence.allow-eviction", "no");
    assert_eq!(err(acquire(&mut con)), eviction_risk("volatile-ttl"));

    // Several settings in one CONFIG SET.
    okay(call(
        &mut con,
        &[
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "allkeys-random",
            "fence.allow-eviction",
            "yes",
        ],
    ));
    int(acquire(&mut con));
    set_config(&mut con, "fence.allow-eviction", "no");
    assert_eq!(err(acquire(&mut con)), eviction_risk("allkeys-random"));

    set_config(&mut con, "maxmemory-policy", "noeviction");
    int(acquire(&mut con));
    okay(new_stock(&mut con));
    assert_eq!(
        eviction_info(&mut con),
        ("noeviction".into(), "none".into(), "0".into())
    );

    // Every change was logged.
    let log = server.log();
    for (needle, times) in [
        (
            "fence: maxmemory-policy noeviction with maxmemory 104857600 cannot evict",
            2,
        ),
        (
            "fence: maxmemory-policy allkeys-lru with maxmemory 104857600 can evict locks and \
             stocks: LOCK.ACQUIRE",
            2,
        ),
        (
            "fence: maxmemory-policy allkeys-lru with maxmemory 0 cannot evict",
            1,
        ),
        (
            "fence: maxmemory-policy volatile-ttl with maxmemory 104857600 can evict locks and \
             stocks that have a TTL: LOCK.ACQUIRE",
            2,
        ),
        (
            "fence: maxmemory-policy volatile-ttl with maxmemory 104857600 can evict locks and \
             stocks that have a TTL; fence.allow-eviction is yes",
            1,
        ),
        (
            "fence: maxmemory-policy allkeys-random with maxmemory 104857600 can evict locks and \
             stocks; fence.allow-eviction is yes",
            1,
        ),
        (
            "fence: maxmemory-policy allkeys-random with maxmemory 104857600 can evict locks and \
             stocks: LOCK.ACQUIRE",
            1,
        ),
    ] {
        assert_eq!(
            count_lines(&log, needle),
            times,
            "{needle:?} in the log:\n{}",
            tail(&log)
        );
    }
    // Other settings do not log.
    let lines = count_lines(&log, "fence: maxmemory-policy");
    set_config(&mut con, "fence.max-ttl-ms", "1000");
    set_config(&mut con, "maxmemory-samples", "7");
    assert_eq!(count_lines(&server.log(), "fence: maxmemory-policy"), lines);
}

#[test]
fn the_setting_as_module_argument_config_line_and_config_set() {
    for extra in [
        &["allow-eviction", "yes"][..],
        &["fence.allow-eviction", "YES"],
        &["--fence.allow-eviction", "yes"],
    ] {
        let server = start(MB100, "allkeys-lru", extra);
        let mut con = server.conn();
        assert_eq!(
            config_get(&mut con, "fence.allow-eviction"),
            "yes",
            "{extra:?}"
        );
        int(call(&mut con, &["LOCK.ACQUIRE", "l", "a", "1000"]));
        assert_eq!(eviction_info(&mut con).2, "1");
        assert!(
            server
                .log()
                .contains("can evict locks and stocks; fence.allow-eviction is yes"),
            "{extra:?}: {}",
            tail(&server.log())
        );
    }
    for extra in [
        &["allow-eviction", "no"][..],
        &["fence.allow-eviction", "No"],
        &["--fence.allow-eviction", "no"],
    ] {
        let server = start(MB100, "allkeys-lru", extra);
        let mut con = server.conn();
        assert_eq!(
            config_get(&mut con, "fence.allow-eviction"),
            "no",
            "{extra:?}"
        );
        assert_eq!(
            err(call(&mut con, &["LOCK.ACQUIRE", "l", "a", "1000"])),
            eviction_risk("allkeys-lru")
        );
    }

    // Bad values stop the module from loading.
    for (extra, reason) in [
        (&["allow-eviction", "maybe"][..], "must be yes or no"),
        (&["allow-eviction", "1"], "must be yes or no"),
        (&["allow-eviction"], "needs a value"),
        (&["--fence.allow-eviction", "maybe"], ""),
    ] {
        let failure = match Server::try_start(extra) {
            Ok(_) => panic!("{extra:?} was accepted"),
            Err(failure) => failure,
        };
        assert!(
            failure.log.contains(reason),
            "{extra:?}: {}",
            tail(&failure.log)
        );
    }

    // CONFIG SET refuses anything but yes and no, and keeps the value.
    let server = start(MB100, "allkeys-lru", &[]);
    let mut con = server.conn();
    for bad in ["maybe", "1", "", "yess"] {
        assert_err(
            call(&mut con, &["CONFIG", "SET", "fence.allow-eviction", bad]),
            code::ERR,
        );
        assert_eq!(config_get(&mut con, "fence.allow-eviction"), "no");
    }
    set_config(&mut con, "fence.allow-eviction", "YES");
    assert_eq!(config_get(&mut con, "fence.allow-eviction"), "yes");
    assert!(config_get_all(&mut con, "fence.*")
        .contains(&("fence.allow-eviction".to_string(), "yes".to_string())));
}

/// A held lock with a waiter, evicted by filling memory: the waiter is granted at once.
fn evicted_lock_is_handed_to_its_waiter(policy: &str) {
    let server = start("0", policy, &["allow-eviction", "yes"]);
    let mut con = server.conn();
    let held = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "holder", "600000"]));
    let (tx, rx) = mpsc::channel();
    let mut waiter = server.conn();
    let handle = thread::spawn(move || {
        let r = call(
            &mut waiter,
            &["LOCK.ACQUIRE", "lk", "waiter", "600000", "WAIT", "0"],
        );
        let _ = tx.send((r, Instant::now()));
    });
    assert!(
        wait_until(Duration::from_secs(5), || info_int(
            &mut con,
            "fence",
            "fence_clients_waiting"
        ) == 1),
        "the waiter did not queue"
    );
    // A little room above what is used now; every key written from here on evicts others.
    let used = info_int(&mut con, "memory", "used_memory");
    set_config(&mut con, "maxmemory", &(used + 256 * 1024).to_string());
    let value = "v".repeat(1024);
    let started = Instant::now();
    let mut written = 0;
    // Fill until the waiter is answered, looking at nothing else (a read would refresh the
    // lock's LRU clock); the holder's lease has 10 minutes left, so only an eviction frees it.
    let (reply, granted_at) = loop {
        let mut pipe = redis::pipe();
        for _ in 0..50 {
            pipe.cmd("SET")
                .arg(format!("fill:{written}"))
                .arg(&value)
                .ignore();
            written += 1;
        }
        let _: () = pipe.query(&mut con).expect("fill");
        if let Ok(outcome) = rx.try_recv() {
            break outcome;
        }
        assert!(
            written < 500_000,
            "{policy}: {written} keys written and the lock was not evicted"
        );
    };
    let filled_at = Instant::now();
    handle.join().expect("waiter thread");
    let token = int(reply);
    assert!(token > held, "{token} <= {held}");
    assert!(info_int(&mut con, "stats", "evicted_keys") > 0);
    assert_eq!(info_int(&mut con, "fence", "fence_waits_granted"), 1);
    println!(
        "{policy}: lock evicted and granted to its waiter after {written} keys written \
         ({:?}; the grant came {:?} before the fill loop saw it)",
        granted_at - started,
        filled_at.saturating_duration_since(granted_at)
    );
    // The waiter holds the lock now (unless the fill evicted it again right after).
    set_config(&mut con, "maxmemory", "0");
    if let Some((owner, t, _)) = lock_status(&mut con, "lk") {
        assert_eq!((owner.as_str(), t), ("waiter", token));
    }
}

#[test]
fn an_evicted_lock_is_handed_to_its_waiter_allkeys_random() {
    evicted_lock_is_handed_to_its_waiter("allkeys-random");
}

#[test]
fn an_evicted_lock_is_handed_to_its_waiter_allkeys_lru() {
    evicted_lock_is_handed_to_its_waiter("allkeys-lru");
}

#[test]
fn a_waiter_queued_before_the_policy_changed_is_still_granted() {
    let server = start(MB100, "noeviction", &[]);
    let mut con = server.conn();
    let held = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "holder", "600000"]));
    let mut waiter = server.conn();
    let handle = thread::spawn(move || {
        call(
            &mut waiter,
            &["LOCK.ACQUIRE", "lk", "waiter", "600000", "WAIT", "0"],
        )
    });
    assert!(
        wait_until(Duration::from_secs(5), || info_int(
            &mut con,
            "fence",
            "fence_clients_waiting"
        ) == 1),
        "the waiter did not queue"
    );
    set_config(&mut con, "maxmemory-policy", "allkeys-lru");
    assert_eq!(
        err(call(&mut con, &["LOCK.ACQUIRE", "other", "a", "1000"])),
        eviction_risk("allkeys-lru")
    );
    // Releasing is never refused, and the hand-off completes the call the rule accepted.
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lk", "holder"])), 1);
    let token = int(handle.join().expect("waiter thread"));
    assert!(token > held);
    assert_eq!(
        lock_status(&mut con, "lk").map(|(o, t, _)| (o, t)),
        Some(("waiter".to_string(), token))
    );
}

#[test]
fn a_replica_with_an_evicting_policy_applies_what_its_master_sends() {
    let master = start(
        MB100,
        "allkeys-lru",
        &["allow-eviction", "yes", "--repl-diskless-sync-delay", "0"],
    );
    let mut m = master.conn();
    // Before the replica: goes by full sync. After: by the live stream.
    let t1 = int(call(&mut m, &["LOCK.ACQUIRE", "l1", "a", "600000"]));
    okay(call(&mut m, &["STOCK.SET", "s", "10"]));
    int(call(
        &mut m,
        &[
            "STOCK.DEDUCT",
            "s",
            "1",
            "ID",
            "o1",
            "FENCE",
            &t1.to_string(),
        ],
    ));
    let port = master.port().to_string();
    let replica = start(MB100, "allkeys-lru", &["--replicaof", "127.0.0.1", &port]);
    let mut r = replica.conn();
    wait_for_sync(&master, &replica, SYNC);
    int(call(&mut m, &["LOCK.ACQUIRE", "l2", "b", "600000"]));
    int(call(&mut m, &["LOCK.ACQUIRE", "l1", "a", "600000"]));
    int(call(&mut m, &["STOCK.ADD", "s", "5"]));
    int(call(&mut m, &["STOCK.DEDUCT", "s", "2", "ID", "o2"]));
    int(call(&mut m, &["STOCK.REFUND", "s", "o1"]));
    okay(call(&mut m, &["STOCK.SET", "s2", "3"]));
    int(call(&mut m, &["STOCK.DEDUCT", "s2", "1", "ID", "o3"]));
    assert_eq!(int(call(&mut m, &["LOCK.RELEASE", "l2", "b"])), 1);
    wait_for_sync(&master, &replica, SYNC);

    assert_eq!(debug_digest(&mut r), debug_digest(&mut m));
    assert_eq!(
        lock_status(&mut r, "l1").map(|(o, t, _)| (o, t)),
        Some(("a".to_string(), t1))
    );
    assert_eq!(int(call(&mut r, &["STOCK.REQUEST", "s", "o1"])), 0);
    assert_eq!(int(call(&mut r, &["STOCK.REQUEST", "s", "o2"])), 2);
    assert_eq!(int(call(&mut r, &["STOCK.REQUEST", "s2", "o3"])), 1);
    assert_eq!(
        replication_errors(&replica.log()),
        Vec::<String>::new(),
        "the replica refused something its master sent"
    );
    assert_eq!(
        eviction_info(&mut r),
        ("allkeys-lru".into(), "locks-and-stocks".into(), "0".into())
    );

    // Promoted, it is a master like any other: the rule applies to its clients.
    okay(call(&mut r, &["REPLICAOF", "NO", "ONE"]));
    assert_eq!(
        err(call(&mut r, &["LOCK.ACQUIRE", "l3", "a", "1000"])),
        eviction_risk("allkeys-lru")
    );
    assert_eq!(
        err(call(&mut r, &["STOCK.DEDUCT", "s", "1", "ID", "o4"])),
        eviction_risk("allkeys-lru")
    );
    assert_eq!(
        int(call(&mut r, &["STOCK.DEDUCT", "s", "1", "ID", "o2"])),
        13
    );
}

#[test]
fn an_aof_of_fence_effects_loads_under_allkeys_lru() {
    // Written by hand, in the effect format.
    let mut aof = resp_command(&["SELECT", "0"]);
    let token = (now_us() - 1_000_000).to_string();
    let expire_at = (now_us() / 1000 + 600_000).to_string();
    aof.push_str(&resp_command(&[
        "FENCE.LOCK",
        "l",
        "owner",
        &token,
        &expire_at,
    ]));
    aof.push_str(&resp_command(&[
        "FENCE.STOCK",
        "s",
        "9",
        &token,
        "1",
        "RESET",
        "o1",
        "1",
    ]));
    aof.push_str(&resp_command(&[
        "FENCE.STOCK",
        "s",
        "7",
        &token,
        "3",
        "KEEP",
        "o2",
        "2",
    ]));
    let server = Server::start_with_files(
        &[("appendonly.aof", aof.as_bytes())],
        &[
            "--appendonly",
            "yes",
            "--maxmemory",
            MB100,
            "--maxmemory-policy",
            "allkeys-lru",
        ],
    );
    let mut con = server.conn();
    assert_eq!(
        lock_status(&mut con, "l").map(|(o, t, _)| (o, t.to_string())),
        Some(("owner".to_string(), token.clone()))
    );
    assert_eq!(stock(&mut con, "s"), 7);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "s", "o1"])), 1);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "s", "o2"])), 2);
    assert_eq!(replication_errors(&server.log()), Vec::<String>::new());
    // Loaded, the server refuses its clients' risky writes as usual.
    assert_eq!(
        err(call(&mut con, &["LOCK.ACQUIRE", "l2", "a", "1000"])),
        eviction_risk("allkeys-lru")
    );

    // The module's own AOF, written while eviction was accepted, reloads with it refused.
    // `appendfsync always`: the server is killed right after the replies, and with everysec
    // Redis may hold an AOF write back while a background fsync runs.
    let mut server = Server::start_with(&[
        "allow-eviction",
        "yes",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--maxmemory",
        MB100,
        "--maxmemory-policy",
        "allkeys-lru",
    ]);
    let mut con = server.conn();
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "l", "a", "600000"]));
    okay(call(&mut con, &["STOCK.SET", "s", "10"]));
    int(call(
        &mut con,
        &[
            "STOCK.DEDUCT",
            "s",
            "3",
            "ID",
            "o1",
            "FENCE",
            &t.to_string(),
        ],
    ));
    server.restart_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--maxmemory",
        MB100,
        "--maxmemory-policy",
        "allkeys-lru",
    ]);
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "fence.allow-eviction"), "no");
    assert_eq!(
        lock_status(&mut con, "l").map(|(o, t, _)| (o, t)),
        Some(("a".to_string(), t))
    );
    assert_eq!(stock(&mut con, "s"), 7);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "s", "o1"])), 3);
    assert_eq!(replication_errors(&server.log()), Vec::<String>::new());
}
