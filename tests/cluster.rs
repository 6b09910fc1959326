//! Redis Cluster: 3 masters and 3 replicas on 127.0.0.1, every node loading the module, driven
//! through the `redis` crate's cluster client. Routing with no hash tags, slot migration of a
//! held lock and of a stock, manual and automatic failover, a seckill across the cluster, and a
//! lock with the stock it guards in one hash slot.
//!
//! `REDIS_SERVER` picks the server binary (as for every integration test); `REDIS_CLI` the
//! `redis-cli` that creates the cluster (default `redis-cli` on `PATH`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rand::RngExt;
use redis::cluster::ClusterConnection;
use redis::{Connection, ConnectionLike, RedisResult, Value};

/// The TTL (ms) of the locks a test expects to find again after a migration or a failover:
/// far beyond any wait of these tests, so that only the event under test can end a lease.
const HELD_MS: &str = "600000";

// ---------------------------------------------------------------------------------------------
// Commands and replies, on any connection (a node's or the cluster client's)
// ---------------------------------------------------------------------------------------------

/// `STOCK.REQUEST key id`: Some(quantity) or None when unknown.
#[track_caller]
fn request(con: &mut impl ConnectionLike, key: &str, id: &str) -> Option<i64> {
    match call(con, &["STOCK.REQUEST", key, id]) {
        Ok(Value::Nil) => None,
        Ok(Value::Int(n)) => Some(n),
        other => panic!("STOCK.REQUEST {key} {id}: unexpected reply {other:?}"),
    }
}

/// Whether any master holds `key`.
fn exists_anywhere(cluster: &Cluster, key: &str) -> bool {
    (0..6).any(|i| {
        let mut con = cluster.node(i);
        let _ = call(&mut con, &["READONLY"]);
        matches!(call(&mut con, &["EXISTS", key]), Ok(Value::Int(1)))
    })
}

/// Whether the module has a command (others add commands over time).
fn has_command(con: &mut Connection, name: &str) -> bool {
    matches!(
        call(con, &["COMMAND", "INFO", name]),
        Ok(Value::Array(items)) if items.first().is_some_and(|i| *i != Value::Nil)
    )
}

/// `STOCK.INFO key`'s `requests` field (the ledger's size), when the module has STOCK.INFO.
fn ledger_size(con: &mut Connection, key: &str) -> Option<i64> {
    if !has_command(con, "STOCK.INFO") {
        return None;
    }
    match call(con, &["STOCK.INFO", key]) {
        Ok(Value::Array(items)) => items.chunks(2).find_map(|pair| match pair {
            [name, Value::Int(n)] if text(name) == "requests" => Some(*n),
            _ => None,
        }),
        other => panic!("STOCK.INFO {key}: unexpected reply {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Routing
// ---------------------------------------------------------------------------------------------

/// The key a form of `command_forms` names: position 1, or 2 for a cart (after `numkeys`).
fn form_key(args: &[String]) -> &String {
    if args[0].starts_with("STOCK.CART") {
        &args[2]
    } else {
        &args[1]
    }
}

/// Every LOCK.* and STOCK.* call, with its key in position 1 (a cart of one item: after
/// `numkeys`): (arguments, readonly).
fn command_forms(lock: &str, stock: &str, token: &str) -> Vec<(Vec<String>, bool)> {
    let forms: Vec<(Vec<&str>, bool)> = vec![
        (vec!["LOCK.ACQUIRE", lock, "worker-1", "30000"], false),
        (
            vec!["LOCK.ACQUIRE", lock, "worker-1", "30000", "WAIT", "100"],
            false,
        ),
        (vec!["LOCK.RENEW", lock, "worker-1", "30000"], false),
        (vec!["LOCK.STATUS", lock], true),
        (vec!["LOCK.RELEASE", lock, "worker-2"], false),
        (vec!["STOCK.SET", stock, "100"], false),
        (vec!["STOCK.SET", stock, "100", "LIMIT", "0"], false),
        (vec!["STOCK.LIMIT", stock, "5"], false),
        (vec!["STOCK.ADD", stock, "10"], false),
        (vec!["STOCK.GET", stock], true),
        (
            vec!["STOCK.DEDUCT", stock, "3", "ID", "order-1", "FENCE", token],
            false,
        ),
        (
            vec!["STOCK.DEDUCT", stock, "1", "ID", "order-3", "HOLD", "60000"],
            false,
        ),
        (
            vec![
                "STOCK.DEDUCT",
                stock,
                "1",
                "ID",
                "order-4",
                "BUYER",
                "buyer-1",
            ],
            false,
        ),
        (vec!["STOCK.BUYER", stock, "buyer-1"], true),
        (vec!["STOCK.CONFIRM", stock, "order-3"], false),
        (vec!["STOCK.REQUEST", stock, "order-1"], true),
        (vec!["STOCK.REQUEST", stock, "order-3", "DETAIL"], true),
        (vec!["STOCK.REFUND", stock, "order-2"], false),
        (vec!["STOCK.INFO", stock], true),
        (vec!["STOCK.CART", "1", stock, "1", "ID", "cart-1"], false),
        (vec!["STOCK.CART.CONFIRM", "1", stock, "cart-1"], false),
        (vec!["STOCK.CART.REFUND", "1", stock, "cart-1"], false),
    ];
    forms
        .into_iter()
        .map(|(args, ro)| (args.into_iter().map(str::to_string).collect(), ro))
        .collect()
}

#[test]
fn every_command_routes_to_the_master_that_owns_its_key_without_hash_tags() {
    let cluster = Cluster::start();
    let topology = cluster.wait_stable(CLUSTER_WAIT);
    let mut cc = cluster.conn();
    let mut direct: Vec<Connection> = (0..6).map(|i| cluster.node(i)).collect();
    let has_info = has_command(&mut direct[0], "STOCK.INFO");

    // Every command the module registers (but the replication-only FENCE.*) is covered here.
    let listed: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("fence")
        .query(&mut direct[0])
        .expect("COMMAND LIST FILTERBY MODULE fence");
    let forms = command_forms("l", "s", "1");
    for name in &listed {
        let upper = name.to_ascii_uppercase();
        assert!(
            upper.starts_with("FENCE.") || forms.iter().any(|(args, _)| args[0] == upper),
            "{upper} is not covered by the cluster routing test: add it to command_forms"
        );
    }

    // COMMAND GETKEYS names the key, and only it, for every form.
    for (args, _) in &forms {
        if args[0] == "STOCK.INFO" && !has_info {
            continue;
        }
        let mut cmd = redis::cmd("COMMAND");
        cmd.arg("GETKEYS").arg(args);
        let keys: Vec<String> = cmd.query(&mut direct[0]).expect("COMMAND GETKEYS");
        assert_eq!(
            keys,
            vec![form_key(args).clone()],
            "COMMAND GETKEYS {args:?}"
        );
    }

    // Plain names spread over the three masters.
    let locks = spread_keys(&cluster, &topology, "lock:order", 2);
    let stocks: Vec<String> = locks
        .iter()
        .map(|l| l.replacen("lock:order", "sku", 1))
        .collect();
    let owners = |keys: &[String]| -> BTreeSet<usize> {
        keys.iter()
            .map(|k| topology.owner[cluster.keyslot(k)])
            .collect()
    };
    assert_eq!(owners(&locks).len(), 3, "locks over the masters");
    assert_eq!(owners(&stocks).len(), 3, "stocks over the masters");

    let mut expected_keys: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (lock, stock) in locks.iter().zip(&stocks) {
        let lock_slot = cluster.keyslot(lock);
        let stock_slot = cluster.keyslot(stock);
        let lock_owner = topology.owner[lock_slot];
        let stock_owner = topology.owner[stock_slot];
        expected_keys
            .entry(lock_owner)
            .or_default()
            .push(lock.clone());
        expected_keys
            .entry(stock_owner)
            .or_default()
            .push(stock.clone());

        // Through the cluster client: the whole contract, with no hash tag anywhere.
        let token = int(call(&mut cc, &["LOCK.ACQUIRE", lock, "worker-1", "30000"]));
        assert_eq!(
            int(call(
                &mut cc,
                &["LOCK.ACQUIRE", lock, "worker-1", "30000", "WAIT", "100"]
            )),
            token
        );
        nil(call(&mut cc, &["LOCK.ACQUIRE", lock, "worker-2", "30000"]));
        assert_eq!(
            int(call(&mut cc, &["LOCK.RENEW", lock, "worker-1", "30000"])),
            token
        );
        let (owner, t, _) = lock_status(&mut cc, lock).expect("held");
        assert_eq!((owner.as_str(), t), ("worker-1", token));
        assert_eq!(int(call(&mut cc, &["LOCK.RELEASE", lock, "worker-2"])), 0);
        okay(call(&mut cc, &["STOCK.SET", stock, "100"]));
        assert_eq!(int(call(&mut cc, &["STOCK.ADD", stock, "10"])), 110);
        let token_text = token.to_string();
        assert_eq!(
            int(call(
                &mut cc,
                &[
                    "STOCK.DEDUCT",
                    stock,
                    "3",
                    "ID",
                    "order-1",
                    "FENCE",
                    &token_text
                ]
            )),
            107
        );
        assert_eq!(
            int(call(
                &mut cc,
                &["STOCK.DEDUCT", stock, "2", "ID", "order-2"]
            )),
            105
        );
        assert_eq!(request(&mut cc, stock, "order-1"), Some(3));
        assert_eq!(int(call(&mut cc, &["STOCK.REFUND", stock, "order-2"])), 2);
        // A limit per buyer, a buyer's deduction, what the buyer holds; then as it was.
        assert_eq!(int(call(&mut cc, &["STOCK.LIMIT", stock, "5"])), 1);
        assert_eq!(
            int(call(
                &mut cc,
                &[
                    "STOCK.DEDUCT",
                    stock,
                    "2",
                    "ID",
                    "order-4",
                    "BUYER",
                    "buyer-1"
                ]
            )),
            105
        );
        assert_eq!(int(call(&mut cc, &["STOCK.BUYER", stock, "buyer-1"])), 2);
        assert_eq!(int(call(&mut cc, &["STOCK.REFUND", stock, "order-4"])), 2);
        assert_eq!(int(call(&mut cc, &["STOCK.BUYER", stock, "buyer-1"])), 0);
        assert_eq!(int(call(&mut cc, &["STOCK.LIMIT", stock, "0"])), 1);
        // A cart of this one stock: placed, replayed, confirmed, refunded.
        for _ in 0..2 {
            assert_eq!(
                call(&mut cc, &["STOCK.CART", "1", stock, "1", "ID", "cart-1"]).unwrap(),
                Value::Array(vec![Value::Int(106)])
            );
        }
        assert_eq!(
            int(call(&mut cc, &["STOCK.CART.CONFIRM", "1", stock, "cart-1"])),
            1
        );
        assert_eq!(
            call(&mut cc, &["STOCK.CART.REFUND", "1", stock, "cart-1"]).unwrap(),
            Value::Array(vec![Value::Int(1)])
        );
        assert_eq!(int(call(&mut cc, &["STOCK.GET", stock])), 107);
        if has_info {
            assert!(matches!(
                call(&mut cc, &["STOCK.INFO", stock]),
                Ok(Value::Array(_))
            ));
        }

        // The keys live on the owning master, and only there.
        assert_eq!(key_type(&mut direct[lock_owner], lock), "fence-lck");
        assert_eq!(key_type(&mut direct[stock_owner], stock), "fence-stk");
        assert_eq!(
            lock_status(&mut direct[lock_owner], lock).map(|s| s.1),
            Some(token)
        );
        assert_eq!(common::stock(&mut direct[stock_owner], stock), 107);

        // Every other master and every replica refuses each command with a redirection to
        // the owner: Redis found the key where the module declared it.
        for (args, readonly) in command_forms(lock, stock, &token_text) {
            if args[0] == "STOCK.INFO" && !has_info {
                continue;
            }
            let key_slot = if args[0].starts_with("LOCK.") {
                lock_slot
            } else {
                stock_slot
            };
            let owner = topology.owner[key_slot];
            let moved = format!("MOVED {key_slot} {}", cluster.addr(owner));
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            for (node, con) in direct.iter_mut().enumerate() {
                if node == owner {
                    continue;
                }
                let reply = call(con, &argv);
                assert_eq!(err(reply), moved, "{args:?} sent to node {node}");
            }
            // A replica of the owner, in READONLY mode, serves the readonly commands only.
            let replica = topology.replica_of(owner);
            let mut ro = cluster.node(replica);
            okay(call(&mut ro, &["READONLY"]));
            let reply = call(&mut ro, &argv);
            if readonly {
                assert!(reply.is_ok(), "{args:?} on a READONLY replica: {reply:?}");
            } else {
                assert_eq!(err(reply), moved, "{args:?} on a READONLY replica");
            }
        }
    }

    // EVENTS names a second key, the order stream: COMMAND GETKEYS lists both, and Redis
    // refuses a call whose two keys are in different slots, changing nothing.
    for args in [
        vec!["STOCK.DEDUCT", "s", "1", "ID", "o", "EVENTS", "ev"],
        vec!["STOCK.REFUND", "s", "o", "EVENTS", "ev", "MAXLEN", "10"],
    ] {
        let mut cmd = redis::cmd("COMMAND");
        cmd.arg("GETKEYS").arg(&args);
        let keys: Vec<String> = cmd.query(&mut direct[0]).expect("COMMAND GETKEYS");
        assert_eq!(keys, vec!["s", "ev"], "COMMAND GETKEYS {args:?}");
    }
    let stock = &stocks[0];
    let events = (0..100)
        .map(|i| format!("events:{i}"))
        .find(|e| cluster.keyslot(e) != cluster.keyslot(stock))
        .expect("a stream key in another slot");
    assert_err(
        call(
            &mut cc,
            &[
                "STOCK.DEDUCT",
                stock,
                "1",
                "ID",
                "order-x",
                "EVENTS",
                &events,
            ],
        ),
        "CROSSSLOT",
    );
    assert_eq!(common::stock(&mut cc, stock), 107);
    assert_eq!(request(&mut cc, stock, "order-x"), None);

    // Carts: COMMAND GETKEYS names every key (and the stream); a cart whose keys share a hash
    // tag runs through the cluster client on the tag's master; one across slots is CROSSSLOT.
    for (args, keys) in [
        (
            vec![
                "STOCK.CART",
                "2",
                "a",
                "1",
                "b",
                "1",
                "ID",
                "o",
                "EVENTS",
                "ev",
            ],
            vec!["a", "b", "ev"],
        ),
        (
            vec!["STOCK.CART.REFUND", "2", "a", "b", "o"],
            vec!["a", "b"],
        ),
        (
            vec!["STOCK.CART.REFUND", "2", "a", "b", "o", "EVENTS", "ev"],
            vec!["a", "b", "ev"],
        ),
        (
            vec!["STOCK.CART.CONFIRM", "2", "a", "b", "o"],
            vec!["a", "b"],
        ),
    ] {
        let mut cmd = redis::cmd("COMMAND");
        cmd.arg("GETKEYS").arg(&args);
        let got: Vec<String> = cmd.query(&mut direct[0]).expect("COMMAND GETKEYS");
        assert_eq!(got, keys, "COMMAND GETKEYS {args:?}");
    }
    let sale = ["{sale}:phone", "{sale}:case", "{sale}:charger"];
    let orders = "{sale}:orders";
    let sale_slot = cluster.keyslot(sale[0]);
    let sale_owner = topology.owner[sale_slot];
    for key in sale {
        okay(call(&mut cc, &["STOCK.SET", key, "10"]));
    }
    let cart_args = |id: &'static str| -> Vec<&str> {
        vec![
            "STOCK.CART",
            "3",
            sale[0],
            "1",
            sale[1],
            "2",
            sale[2],
            "3",
            "ID",
            id,
            "HOLD",
            HELD_MS,
            "EVENTS",
            orders,
        ]
    };
    for _ in 0..2 {
        assert_eq!(
            call(&mut cc, &cart_args("cart-7")).unwrap(),
            Value::Array(vec![Value::Int(9), Value::Int(8), Value::Int(7)]),
            "a cart with one hash tag through the cluster client (and its replay)"
        );
    }
    let confirm = [
        "STOCK.CART.CONFIRM",
        "3",
        sale[0],
        sale[1],
        sale[2],
        "cart-7",
    ];
    assert_eq!(int(call(&mut cc, &confirm)), 1);
    // Sent to another node directly: MOVED to the tag's master.
    let moved = format!("MOVED {sale_slot} {}", cluster.addr(sale_owner));
    for &m in &topology.masters {
        if m != sale_owner {
            assert_eq!(err(call(&mut direct[m], &cart_args("cart-8"))), moved);
            assert_eq!(err(call(&mut direct[m], &confirm)), moved);
        }
    }
    assert_eq!(
        call(
            &mut cc,
            &[
                "STOCK.CART.REFUND",
                "3",
                sale[0],
                sale[1],
                sale[2],
                "cart-7",
                "EVENTS",
                orders
            ]
        )
        .unwrap(),
        Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
    );
    let entries: Vec<Value> = match call(&mut direct[sale_owner], &["XRANGE", orders, "-", "+"]) {
        Ok(Value::Array(entries)) => entries,
        other => panic!("XRANGE {orders}: {other:?}"),
    };
    assert_eq!(
        entries.len(),
        6,
        "3 deduct and 3 refund entries: {entries:?}"
    );
    for key in sale.iter().chain([&orders]) {
        expected_keys
            .entry(sale_owner)
            .or_default()
            .push(key.to_string());
    }
    // Across slots: refused by Redis itself, nothing changes.
    let other = (0..100)
        .map(|i| format!("other:{i}"))
        .find(|k| cluster.keyslot(k) != sale_slot)
        .expect("a key in another slot");
    let before: Vec<i64> = sale.iter().map(|k| common::stock(&mut cc, k)).collect();
    assert_eq!(before, [10, 10, 10]);
    for args in [
        vec!["STOCK.CART", "2", sale[0], "1", &other, "1", "ID", "cart-9"],
        vec![
            "STOCK.CART",
            "2",
            sale[0],
            "1",
            sale[1],
            "1",
            "ID",
            "cart-9",
            "EVENTS",
            &other,
        ],
        vec!["STOCK.CART.REFUND", "2", sale[0], &other, "cart-7"],
        vec![
            "STOCK.CART.REFUND",
            "1",
            sale[0],
            "cart-7",
            "EVENTS",
            &other,
        ],
        vec!["STOCK.CART.CONFIRM", "2", &other, sale[0], "cart-7"],
    ] {
        assert_err_ctx(call(&mut cc, &args), "CROSSSLOT", format!("{args:?}"));
    }
    let after: Vec<i64> = sale.iter().map(|k| common::stock(&mut cc, k)).collect();
    assert_eq!(after, before);
    assert_eq!(request(&mut cc, sale[0], "cart-9"), None);
    assert!(!exists_anywhere(&cluster, &other));

    // Each master holds exactly the keys it owns.
    for &m in &topology.masters {
        let mut expected = expected_keys.remove(&m).unwrap_or_default();
        expected.sort();
        assert_eq!(all_keys(&mut direct[m]), expected, "keys on master {m}");
    }
    println!(
        "routing: {} locks and {} stocks over masters {:?}: every command on its owner, MOVED elsewhere",
        locks.len(),
        stocks.len(),
        topology.masters
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Slot migration
// ---------------------------------------------------------------------------------------------

/// A master other than `not`.
fn other_master(topology: &Topology, not: usize) -> usize {
    *topology
        .masters
        .iter()
        .find(|&&m| m != not)
        .expect("another master")
}

#[test]
fn slot_migration_keeps_a_held_lock_and_a_stock_with_its_ledger_and_fence() {
    let cluster = Cluster::start();
    let topology = cluster.wait_stable(CLUSTER_WAIT);
    let mut cc = cluster.conn();
    let (lock, sku, future) = ("lock:migrate", "sku:migrate", "lock:future");
    // A stock with a limit per buyer and buyers: alice holds 2 (1 deducted, 1 held), bob
    // nothing now (refunded), carol 1 confirmed.
    let limits = "sku:limits";
    okay(call(&mut cc, &["STOCK.SET", limits, "50", "LIMIT", "2"]));
    for (id, who, hold) in [
        ("l-1", "alice", false),
        ("l-2", "alice", true),
        ("l-3", "bob", false),
        ("l-4", "carol", true),
    ] {
        let mut args = vec!["STOCK.DEDUCT", limits, "1", "ID", id, "BUYER", who];
        if hold {
            args.extend(["HOLD", HELD_MS]);
        }
        int(call(&mut cc, &args));
    }
    assert_eq!(int(call(&mut cc, &["STOCK.REFUND", limits, "l-3"])), 1);
    assert_eq!(int(call(&mut cc, &["STOCK.CONFIRM", limits, "l-4"])), 1);

    // A held lock, a stock with a ledger (some ids refunded) and a fence.
    let token = int(call(&mut cc, &["LOCK.ACQUIRE", lock, "worker-1", HELD_MS]));
    let token_text = token.to_string();
    okay(call(&mut cc, &["STOCK.SET", sku, "1000"]));
    let mut ledger: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..40 {
        let id = format!("order-{i}");
        let quantity = (i % 3 + 1).to_string();
        let mut args = vec!["STOCK.DEDUCT", sku, &quantity, "ID", &id];
        if i % 2 == 0 {
            args.extend(["FENCE", &token_text]);
        }
        int(call(&mut cc, &args));
        ledger.insert(id, i % 3 + 1);
    }
    for id in ["order-7", "order-21"] {
        assert!(int(call(&mut cc, &["STOCK.REFUND", sku, id])) > 0);
        ledger.insert(id.to_string(), 0);
    }
    let available = stock(&mut cc, sku);
    // A lock whose token is an hour ahead of the clock, released before the move: only the
    // token clock's memory (carried by MIGRATE) can keep the next grant above it.
    let far = future_locks();
    let restored = restore(&mut cc, future, 0, &far.dumps[0], &[]);
    okay(restored);
    assert_eq!(
        lock_status(&mut cc, future).map(|s| s.1),
        Some(far.tokens[0]),
        "RESTOREd future lock"
    );

    // Remember every value exactly (DEBUG DIGEST-VALUE on the owner) and the lock's TTL.
    let keys = [lock, sku, future, limits];
    let slots: Vec<usize> = keys.iter().map(|k| cluster.keyslot(k)).collect();
    let digests: Vec<String> = keys
        .iter()
        .zip(&slots)
        .map(|(k, &s)| digest_value(&mut cluster.node(topology.owner[s]), k))
        .collect();
    let before_sent = Instant::now();
    let (owner_before, token_before, ttl_before) = lock_status(&mut cc, lock).expect("held");
    let before_replied = Instant::now();

    // Move each key's slot to another master.
    let started = Instant::now();
    let mut targets = Vec::new();
    let mut lock_in_migrate = Duration::ZERO;
    for (key, &slot) in keys.iter().zip(&slots) {
        let now = cluster.wait_stable(CLUSTER_WAIT);
        let target = other_master(&now, now.owner[slot]);
        let migration = cluster.migrate_slot(slot, target);
        assert!(
            migration.keys.contains(&key.to_string()),
            "{key} was not migrated: {:?}",
            migration.keys
        );
        if *key == lock {
            lock_in_migrate += migration.in_migrate;
        }
        targets.push(target);
    }
    let migration_ms = started.elapsed().as_millis();

    // Through the cluster client: the same lock, stock, ledger and fence, now on the target.
    let after_sent = Instant::now();
    let (owner_after, token_after, ttl_after) = lock_status(&mut cc, lock).expect("still held");
    let after_replied = Instant::now();
    assert_eq!(owner_after, owner_before);
    assert_eq!(token_after, token_before);
    // The TTL kept running through the move. The servers read it at some moment of each
    // status call, so it ran down by at most the time from sending the first to the reply of
    // the second, and by at least the time from the first reply to sending the second, less
    // what the MIGRATE that moved it left uncounted (the source sends the TTL relative, the
    // target sets it again when it gets there); 3 ms for rounding to whole milliseconds.
    let ms_floor = |d: Duration| i64::try_from(d.as_millis()).expect("ms");
    let ms_ceil = |d: Duration| ms_floor(d) + 1;
    let ran = ttl_before - ttl_after;
    let least = ms_floor(after_sent.duration_since(before_replied)) - ms_ceil(lock_in_migrate) - 3;
    let most = ms_ceil(after_replied.duration_since(before_sent)) + 3;
    assert!(
        (least..=most).contains(&ran),
        "TTL before {ttl_before} ms, after {ttl_after} ms: ran down {ran} ms, not within \
         [{least}, {most}] ms"
    );
    let elapsed = ms_floor(after_replied.duration_since(before_replied));
    let drift = ttl_after - (ttl_before - elapsed);
    for ((key, &slot), (digest, &target)) in
        keys.iter().zip(&slots).zip(digests.iter().zip(&targets))
    {
        let now = cluster.wait_stable(CLUSTER_WAIT);
        assert_eq!(now.owner[slot], target);
        let mut con = cluster.node(target);
        assert_eq!(
            &digest_value(&mut con, key),
            digest,
            "{key} changed in the move"
        );
        assert!(
            err(call(
                &mut cluster.node(topology.owner[slot]),
                &["LOCK.STATUS", key]
            ))
            .starts_with("MOVED"),
            "the old owner of {key} does not redirect"
        );
    }
    assert_eq!(stock(&mut cc, sku), available);
    for (id, quantity) in &ledger {
        assert_eq!(
            request(&mut cc, sku, id),
            Some(*quantity),
            "ledger entry {id}"
        );
    }
    assert_eq!(request(&mut cc, sku, "order-never"), None);
    // A replay deducts nothing; a refunded id stays spent.
    assert_eq!(
        int(call(&mut cc, &["STOCK.DEDUCT", sku, "5", "ID", "order-3"])),
        available
    );
    assert_eq!(
        int(call(&mut cc, &["STOCK.DEDUCT", sku, "5", "ID", "order-7"])),
        available
    );
    // The fence moved with it: below refused, equal accepted.
    let below = (token - 1).to_string();
    assert_err(
        call(&mut cc, &["STOCK.DEDUCT", sku, "1", "FENCE", &below]),
        code::STALE,
    );
    assert_eq!(
        int(call(
            &mut cc,
            &["STOCK.DEDUCT", sku, "1", "FENCE", &token_text]
        )),
        available - 1
    );
    if let Some(n) = ledger_size(&mut cluster.node(targets[1]), sku) {
        assert_eq!(n, 40, "STOCK.INFO requests after the move");
    }
    // The limit, the buyers and each entry's buyer moved with their stock.
    for (who, units) in [("alice", 2), ("bob", 0), ("carol", 1), ("dave", 0)] {
        assert_eq!(
            int(call(&mut cc, &["STOCK.BUYER", limits, who])),
            units,
            "STOCK.BUYER {who} after the move"
        );
    }
    assert_err(
        call(
            &mut cc,
            &["STOCK.DEDUCT", limits, "1", "ID", "l-5", "BUYER", "alice"],
        ),
        limit_reached("alice", 2, 2),
    );
    assert_err(
        call(&mut cc, &["STOCK.DEDUCT", limits, "1", "ID", "l-5"]),
        buyer_required(2),
    );
    assert_eq!(
        int(call(
            &mut cc,
            &["STOCK.DEDUCT", limits, "2", "ID", "l-5", "BUYER", "bob"]
        )),
        45
    );

    // The next grant of each key on its new master has a larger token.
    assert_eq!(int(call(&mut cc, &["LOCK.RELEASE", lock, "worker-1"])), 1);
    let next = int(call(&mut cc, &["LOCK.ACQUIRE", lock, "worker-2", "30000"]));
    assert!(next > token, "token after the move {next} <= {token}");
    assert_eq!(
        int(call(&mut cc, &["LOCK.RELEASE", future, far.owners[0]])),
        1
    );
    let next_future = int(call(
        &mut cc,
        &["LOCK.ACQUIRE", future, "worker-2", "30000"],
    ));
    assert!(
        next_future > far.tokens[0],
        "the new owner of {future} issued {next_future}, not above the migrated token {}",
        far.tokens[0]
    );
    println!(
        "slot migration: 3 slots moved in {migration_ms} ms; lock TTL {ttl_before} -> {ttl_after} ms \
         after {elapsed} ms (drift {drift} ms); token {token} -> next grant {next}; \
         future token {} -> next grant {next_future}",
        far.tokens[0]
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Failover
// ---------------------------------------------------------------------------------------------

/// (request id, quantity held) of a stock.
type Ledger = Vec<(String, i64)>;

/// What a shard holds before a failover: locks (key, owner, token), stocks (key, available,
/// ledger).
struct ShardState {
    locks: Vec<(String, String, i64)>,
    stocks: Vec<(String, i64, Ledger)>,
}

/// Locks and stocks with ledgers on keys that `master` serves, written through the cluster
/// client.
fn fill_shard(
    cluster: &Cluster,
    topology: &Topology,
    cc: &mut ClusterConnection,
    master: usize,
    tag: &str,
) -> ShardState {
    let mut state = ShardState {
        locks: Vec::new(),
        stocks: Vec::new(),
    };
    for (i, key) in keys_on(cluster, topology, master, &format!("lock:{tag}"), 5)
        .into_iter()
        .enumerate()
    {
        let owner = format!("worker-{i}");
        let token = int(call(cc, &["LOCK.ACQUIRE", &key, &owner, HELD_MS]));
        state.locks.push((key, owner, token));
    }
    for key in keys_on(cluster, topology, master, &format!("sku:{tag}"), 5) {
        okay(call(cc, &["STOCK.SET", &key, "500"]));
        let mut ledger = Vec::new();
        for j in 0..20 {
            let id = format!("order-{j}");
            let quantity = j % 4 + 1;
            int(call(
                cc,
                &["STOCK.DEDUCT", &key, &quantity.to_string(), "ID", &id],
            ));
            ledger.push((id, quantity));
        }
        assert_eq!(int(call(cc, &["STOCK.REFUND", &key, "order-5"])), 2);
        ledger[5].1 = 0;
        let available = stock(cc, &key);
        state.stocks.push((key, available, ledger));
    }
    state
}

/// Everything in `state` is there, through the cluster connection `cc`; then each lock is
/// released and granted again with a larger token. Returns (largest old, smallest new) token.
fn check_shard(cc: &mut ClusterConnection, state: &ShardState, what: &str) -> (i64, i64) {
    let (mut old_max, mut new_min) = (i64::MIN, i64::MAX);
    for (key, owner, token) in &state.locks {
        let got = lock_status(cc, key);
        assert_eq!(
            got.as_ref().map(|s| (s.0.as_str(), s.1)),
            Some((owner.as_str(), *token)),
            "{what}: lock {key}"
        );
        let held: i64 = HELD_MS.parse().expect("HELD_MS");
        assert!(got.is_some_and(|s| s.2 > 0 && s.2 <= held));
        assert_eq!(
            int(call(cc, &["LOCK.RELEASE", key, owner])),
            1,
            "{what}: release {key}"
        );
        let next = int(call(cc, &["LOCK.ACQUIRE", key, "next-owner", "60000"]));
        assert!(next > *token, "{what}: {key} granted {next} after {token}");
        old_max = old_max.max(*token);
        new_min = new_min.min(next);
    }
    for (key, available, ledger) in &state.stocks {
        assert_eq!(stock(cc, key), *available, "{what}: stock {key}");
        for (id, quantity) in ledger {
            assert_eq!(request(cc, key, id), Some(*quantity), "{what}: {key} {id}");
        }
        // A replay after the failover deducts nothing.
        assert_eq!(
            int(call(cc, &["STOCK.DEDUCT", key, "1", "ID", "order-0"])),
            *available
        );
    }
    (old_max, new_min)
}

/// Waits until node `i` is a master and the cluster has settled; the topology.
fn wait_promoted(cluster: &Cluster, i: usize) -> Topology {
    match try_wait_promoted(cluster, i, CLUSTER_WAIT) {
        Ok(t) => t,
        Err(reason) => panic!(
            "node {i} was not promoted within {CLUSTER_WAIT:?} ({reason})\n{}",
            cluster.logs()
        ),
    }
}

/// Waits up to `timeout` until node `i` is a master and the cluster has settled; the
/// topology, or why not.
fn try_wait_promoted(cluster: &Cluster, i: usize, timeout: Duration) -> Result<Topology, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let reason = match cluster.stable_topology() {
            Ok(t) if t.masters.contains(&i) => return Ok(t),
            Ok(_) => format!("node {i} is not a master"),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(reason);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// How long Redis lets a manual failover run before it gives it up (`CLUSTER_MF_TIMEOUT`).
const MANUAL_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// `CLUSTER FAILOVER` on `replica`, until it is promoted and the cluster has settled. Redis
/// abandons a manual failover that has not completed within 5 s, which a loaded machine can
/// cause; the command is then sent again.
fn manual_failover(cluster: &Cluster, replica: usize) -> Topology {
    let deadline = Instant::now() + CLUSTER_WAIT;
    let mut attempts = 0;
    loop {
        attempts += 1;
        okay(call(&mut cluster.node(replica), &["CLUSTER", "FAILOVER"]));
        let reason = match try_wait_promoted(cluster, replica, 2 * MANUAL_FAILOVER_TIMEOUT) {
            Ok(t) => {
                if attempts > 1 {
                    println!("manual failover: promoted at attempt {attempts}");
                }
                return t;
            }
            Err(reason) => reason,
        };
        let role = info_value(&info(&mut cluster.node(replica), "replication"), "role");
        if role.as_deref() == Some("master") {
            // Promoted; the cluster has yet to settle.
            return wait_promoted(cluster, replica);
        }
        assert!(
            Instant::now() < deadline,
            "node {replica} was not promoted within {CLUSTER_WAIT:?} ({attempts} CLUSTER \
             FAILOVER, {reason})\n{}",
            cluster.logs()
        );
    }
}

/// A connection to node `i` whose replies may take longer than the usual read timeout:
/// for a client blocked in `LOCK.ACQUIRE … WAIT` [`long_wait_ms`].
fn blocking_node_conn(cluster: &Cluster, i: usize) -> Connection {
    let con = cluster.node(i);
    con.set_read_timeout(Some(3 * CLUSTER_WAIT))
        .expect("set the read timeout");
    con
}

/// A `WAIT` timeout (ms) longer than any cluster change a test waits for (a migration, a
/// failover): a waiter is released by the change, never by its own timeout.
fn long_wait_ms() -> String {
    (2 * CLUSTER_WAIT).as_millis().to_string()
}

#[test]
fn failover_manual_and_after_sigkill_keeps_what_reached_the_replica_and_tokens_rise() {
    let mut cluster = Cluster::start();
    let topology = cluster.wait_stable(CLUSTER_WAIT);
    let mut cc = cluster.conn();
    let far = future_locks();

    // --- Manual failover: CLUSTER FAILOVER on a replica. ---
    let a = topology.masters[0];
    let a_replica = topology.replica_of(a);
    let state_a = fill_shard(&cluster, &topology, &mut cc, a, "a");
    // A token an hour ahead, taught to the shard and then released: after the failover only
    // the replicated token clock can keep the next grant above it.
    let future_a = &keys_on(&cluster, &topology, a, "lock:future-a", 1)[0];
    okay(restore(&mut cc, future_a, 0, &far.dumps[0], &[]));
    assert_eq!(
        int(call(&mut cc, &["LOCK.RELEASE", future_a, far.owners[0]])),
        1
    );
    // A client blocked in LOCK.ACQUIRE … WAIT on the old master, for longer than the
    // failover may take: only the failover can end its wait.
    let held_key = state_a.locks[0].0.clone();
    let waiter = {
        let mut con = blocking_node_conn(&cluster, a);
        let key = held_key.clone();
        thread::spawn(move || {
            let reply = call(
                &mut con,
                &[
                    "LOCK.ACQUIRE",
                    &key,
                    "waiter",
                    HELD_MS,
                    "WAIT",
                    &long_wait_ms(),
                ],
            );
            describe_reply(&reply)
        })
    };
    assert!(
        wait_until(CLUSTER_WAIT, || status_waiters(
            &mut cluster.node(a),
            &held_key
        ) == 1),
        "the waiter did not block within {CLUSTER_WAIT:?}"
    );
    wait_for_sync(&cluster.nodes[a], &cluster.nodes[a_replica], CLUSTER_WAIT);

    let started = Instant::now();
    let after = manual_failover(&cluster, a_replica);
    let manual_ms = started.elapsed().as_millis();
    assert!(
        !after.masters.contains(&a),
        "the old master stayed a master"
    );
    let waiter_saw = waiter.join().expect("waiter thread");
    // The same error on every server: Redis answers it itself; Valkey 9 leaves module clients
    // blocked through a cluster failover, and the module answers them when the node becomes a
    // replica (before, they waited out their timeout and got nil, as if timed out).
    assert_eq!(
        waiter_saw,
        format!("error {UNBLOCKED_NOT_MASTER}"),
        "a client waiting on the old master"
    );
    let answered_by_module = cluster.nodes[a]
        .log()
        .contains("fence: now a replica: 1 waiting LOCK.ACQUIRE call(s) answered UNBLOCKED");
    println!(
        "the waiter's UNBLOCKED came from {}",
        if answered_by_module {
            "the module"
        } else {
            "the server"
        }
    );
    let (old_a, new_a) = check_shard(&mut cc, &state_a, "manual failover");
    // The waiter never got the lock: it is the holder's (now released and granted again).
    assert_ne!(
        lock_status(&mut cc, &held_key).map(|s| s.0),
        Some("waiter".to_string())
    );
    let next_future_a = int(call(
        &mut cc,
        &["LOCK.ACQUIRE", future_a, "next-owner", HELD_MS],
    ));
    assert!(
        next_future_a > far.tokens[0],
        "after the manual failover {future_a} was granted {next_future_a}, not above {}",
        far.tokens[0]
    );
    println!(
        "manual failover: {manual_ms} ms; tokens before up to {old_a}, after from {new_a}; \
         released future token {} -> {next_future_a}; the blocked waiter saw {waiter_saw}",
        far.tokens[0]
    );

    // --- Automatic failover: another master SIGKILLed. ---
    let b = *after
        .masters
        .iter()
        .find(|&&m| m != a_replica)
        .expect("another master");
    let b_replica = after.replica_of(b);
    let state_b = fill_shard(&cluster, &after, &mut cc, b, "b");
    wait_for_sync(&cluster.nodes[b], &cluster.nodes[b_replica], CLUSTER_WAIT);
    // One grant that never reaches the replica: the replica is set to authenticate with a
    // password its master does not have, so that it cannot reconnect once its link is cut
    // (the master refuses the AUTH); then the link is cut, the grant made and the master
    // killed. Its token is near the wall clock, so only the wall-clock floor can keep the new
    // master's next grant above it.
    let lost_key = &keys_on(&cluster, &after, b, "lock:lost", 1)[0];
    let mut con_b = cluster.node(b);
    okay(call(
        &mut cluster.node(b_replica),
        &["CONFIG", "SET", "masterauth", "not-the-masters-password"],
    ));
    // One link, or two while Redis 8 still has its RDB channel open.
    let cut = int(call(&mut con_b, &["CLIENT", "KILL", "TYPE", "replica"]));
    assert!(cut >= 1, "no replication link to cut");
    let lost = int(call(
        &mut con_b,
        &["LOCK.ACQUIRE", lost_key, "lost-owner", HELD_MS],
    ));
    let started = Instant::now();
    cluster.kill(b);
    let after_kill = wait_promoted(&cluster, b_replica);
    let auto_ms = started.elapsed().as_millis();
    assert!(!after_kill.masters.contains(&b));

    // The old cluster connection still knows the dead node; a new one, as an application
    // would make after a connection error, finds the new master. The first grant on the new
    // master is for the lost key.
    let mut cc = cluster.conn();
    assert_eq!(
        lock_status(&mut cc, lost_key),
        None,
        "the grant made after the replica's link was cut reached it"
    );
    let next_lost = int(call(
        &mut cc,
        &["LOCK.ACQUIRE", lost_key, "next-owner", HELD_MS],
    ));
    assert!(
        next_lost > lost,
        "the new master granted {next_lost}, not above the grant {lost} made before the kill"
    );
    let (old_b, new_b) = check_shard(&mut cc, &state_b, "automatic failover");

    // The shard that never failed over works as before.
    let c = *after_kill
        .masters
        .iter()
        .find(|&&m| m != a_replica && m != b_replica)
        .expect("a third master");
    let state_c = fill_shard(&cluster, &after_kill, &mut cc, c, "c");
    check_shard(&mut cc, &state_c, "untouched shard");
    println!(
        "automatic failover after SIGKILL: {auto_ms} ms (node timeout {NODE_TIMEOUT_MS} ms); \
         tokens before up to {old_b}, after from {new_b}; grant cut from the replica {lost} \
         (lost), first grant of that key on the new master {next_lost} (+{} us)",
        next_lost - lost
    );
}

/// A reply as text: "int N", "nil", "error <text>", ….
fn describe_reply(reply: &RedisResult<Value>) -> String {
    match reply {
        Ok(Value::Int(n)) => format!("int {n}"),
        Ok(Value::Nil) => "nil".to_string(),
        Ok(other) => format!("{other:?}"),
        Err(e) if e.code().is_some() => format!("error {}", error_text(e)),
        Err(e) => format!("connection error {e}"),
    }
}

/// The `waiters` field of `LOCK.STATUS key` (0 when free).
fn status_waiters(con: &mut Connection, key: &str) -> i64 {
    match call(con, &["LOCK.STATUS", key]) {
        Ok(Value::Array(items)) if items.len() == 8 => match items[7] {
            Value::Int(n) => n,
            _ => -1,
        },
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A seckill across the cluster
// ---------------------------------------------------------------------------------------------

const SKUS: usize = 20;
const UNITS: i64 = 250;
const BUYERS: usize = 200;
/// How long a buyer may take for its part of the sale: a guard against a hang, far above what
/// a loaded machine needs (the sale takes well under a second on an idle one).
const SALE_DEADLINE: Duration = Duration::from_secs(120);

/// What one buyer saw: (sku index, request id, remaining) per sale, and the refused ids.
#[derive(Default)]
struct Purchases {
    sold: Vec<(usize, String, i64)>,
    refused: Vec<(usize, String)>,
}

#[test]
fn a_seckill_over_three_masters_sells_every_unit_exactly_once() {
    let cluster = Cluster::start();
    let topology = cluster.wait_stable(CLUSTER_WAIT);
    let skus: Vec<String> = (0..SKUS).map(|i| format!("seckill:sku:{i}")).collect();
    let owners: Vec<usize> = skus
        .iter()
        .map(|k| topology.owner[cluster.keyslot(k)])
        .collect();
    let spread: BTreeSet<usize> = owners.iter().copied().collect();
    assert_eq!(spread.len(), 3, "SKUs over the masters: {owners:?}");
    let mut cc = cluster.conn();
    for sku in &skus {
        okay(call(&mut cc, &["STOCK.SET", sku, &UNITS.to_string()]));
    }

    // Every buyer has its own cluster connection, made before the sale opens.
    let connections: Vec<ClusterConnection> = (0..BUYERS).map(|_| cluster.conn()).collect();
    let barrier = Barrier::new(BUYERS + 1);
    let results = Mutex::new(Vec::with_capacity(BUYERS));
    // The scope joins every buyer before it returns the moment the sale opened.
    let opened = thread::scope(|s| {
        for (buyer, mut con) in connections.into_iter().enumerate() {
            let (barrier, results, skus) = (&barrier, &results, &skus);
            s.spawn(move || {
                let mut mine = Purchases::default();
                let mut open: Vec<usize> = (0..SKUS).collect();
                let mut rng = rand::rng();
                barrier.wait();
                let deadline = Instant::now() + SALE_DEADLINE;
                let mut n = 0;
                while !open.is_empty() && Instant::now() < deadline {
                    let pick = rng.random_range(0..open.len());
                    let sku = open[pick];
                    let id = format!("buyer-{buyer}-{n}");
                    n += 1;
                    match call(&mut con, &["STOCK.DEDUCT", &skus[sku], "1", "ID", &id]) {
                        Ok(Value::Int(left)) => mine.sold.push((sku, id, left)),
                        Ok(Value::Nil) => {
                            mine.refused.push((sku, id));
                            open.swap_remove(pick);
                        }
                        other => panic!("buyer {buyer}: {id} on {}: {other:?}", skus[sku]),
                    }
                }
                assert!(
                    open.is_empty(),
                    "buyer {buyer} did not finish within {SALE_DEADLINE:?}"
                );
                results.lock().expect("results").push(mine);
            });
        }
        barrier.wait();
        Instant::now()
    });
    let sale_ms = opened.elapsed().as_millis();
    let results = results.into_inner().expect("results");
    assert_eq!(results.len(), BUYERS, "every buyer finished");
    // The sale ran on the masters it started on: no node was taken for failed (a failover
    // here would be the machine starving a node for longer than the node timeout, and could
    // lose acknowledged sales that had not reached the replica).
    let after = cluster.wait_stable(CLUSTER_WAIT);
    assert!(
        after.masters == topology.masters && after.owner == topology.owner,
        "the topology changed during the sale: masters {:?} -> {:?}\n{}",
        topology.masters,
        after.masters,
        cluster.logs()
    );

    // Per SKU: exactly UNITS sales whose remaining quantities are UNITS-1 down to 0, each once.
    let mut remaining: Vec<Vec<i64>> = vec![Vec::new(); SKUS];
    let mut sold_ids: Vec<Vec<String>> = vec![Vec::new(); SKUS];
    let mut refused_ids: Vec<Vec<String>> = vec![Vec::new(); SKUS];
    for p in &results {
        for (sku, id, left) in &p.sold {
            remaining[*sku].push(*left);
            sold_ids[*sku].push(id.clone());
        }
        for (sku, id) in &p.refused {
            refused_ids[*sku].push(id.clone());
        }
    }
    let total: usize = sold_ids.iter().map(Vec::len).sum();
    let expected: Vec<i64> = (0..UNITS).collect();
    for (i, sku) in skus.iter().enumerate() {
        remaining[i].sort_unstable();
        assert!(
            remaining[i] == expected,
            "{sku}: {} sales, remaining quantities not exactly {}..0",
            remaining[i].len(),
            UNITS - 1
        );
        // On the owning master: the stock is empty, the ledger holds every sold id with 1
        // and none of the refused ones.
        let mut con = cluster.node(owners[i]);
        assert_eq!(stock(&mut con, sku), 0, "{sku}");
        let mut pipe = redis::pipe();
        for id in sold_ids[i].iter().chain(&refused_ids[i]) {
            pipe.cmd("STOCK.REQUEST").arg(sku).arg(id);
        }
        let ledger: Vec<Option<i64>> = pipe.query(&mut con).expect("STOCK.REQUEST pipeline");
        let (sold, refused) = ledger.split_at(sold_ids[i].len());
        assert!(
            sold.iter().all(|q| *q == Some(1)),
            "{sku}: a sold id missing from the ledger"
        );
        assert!(
            refused.iter().all(Option::is_none),
            "{sku}: a refused id in the ledger"
        );
        if let Some(n) = ledger_size(&mut con, sku) {
            assert_eq!(n, UNITS, "{sku}: ledger size");
        }
    }
    assert_eq!(total as i64, UNITS * SKUS as i64, "total sold");
    let refused: usize = refused_ids.iter().map(Vec::len).sum();
    println!(
        "seckill: {BUYERS} buyers, {SKUS} SKUs x {UNITS} over masters {spread:?}: sold {total} of {} \
         in {sale_ms} ms ({:.0} deductions/s, {refused} refused), nothing oversold",
        UNITS * SKUS as i64,
        (total + refused) as f64 / (sale_ms.max(1) as f64 / 1000.0)
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A lock and the stock it guards in one slot
// ---------------------------------------------------------------------------------------------

#[test]
fn a_lock_fences_the_stock_it_guards_in_one_hash_slot() {
    let cluster = Cluster::start();
    let topology = cluster.wait_stable(CLUSTER_WAIT);
    let mut cc = cluster.conn();
    let (lock, sku) = ("{sku:42}:lock", "{sku:42}");
    let slot = cluster.keyslot(sku);
    assert_eq!(cluster.keyslot(lock), slot);
    assert_eq!(slot, cluster.keyslot("sku:42"));
    let owner = topology.owner[slot];

    okay(call(&mut cc, &["STOCK.SET", sku, "100"]));
    let first = int(call(&mut cc, &["LOCK.ACQUIRE", lock, "job-1", "10000"]));
    let first_text = first.to_string();
    assert_eq!(
        int(call(
            &mut cc,
            &[
                "STOCK.DEDUCT",
                sku,
                "5",
                "ID",
                "restock-1",
                "FENCE",
                &first_text
            ]
        )),
        95
    );
    // The same holder deducts again with its token.
    assert_eq!(
        int(call(
            &mut cc,
            &["STOCK.DEDUCT", sku, "5", "FENCE", &first_text]
        )),
        90
    );
    // Another job takes over (the first one's lock expired while it was paused).
    assert_eq!(int(call(&mut cc, &["LOCK.RELEASE", lock, "job-1"])), 1);
    let second = int(call(&mut cc, &["LOCK.ACQUIRE", lock, "job-2", "10000"]));
    assert!(second > first);
    let second_text = second.to_string();
    assert_eq!(
        int(call(
            &mut cc,
            &["STOCK.DEDUCT", sku, "1", "FENCE", &second_text]
        )),
        89
    );
    // The first job wakes up: its write is refused, and nothing changes.
    let stale = assert_err(
        call(
            &mut cc,
            &[
                "STOCK.DEDUCT",
                sku,
                "5",
                "ID",
                "restock-2",
                "FENCE",
                &first_text,
            ],
        ),
        code::STALE,
    );
    assert_eq!(stale, stale_reply(first, second));
    assert_eq!(stock(&mut cc, sku), 89);
    assert_eq!(request(&mut cc, sku, "restock-2"), None);
    // The order stream shares the tag, so a deduction with EVENTS goes through as well.
    let events = "{sku:42}:events";
    assert_eq!(
        int(call(
            &mut cc,
            &[
                "STOCK.DEDUCT",
                sku,
                "1",
                "ID",
                "order-9",
                "FENCE",
                &second_text,
                "EVENTS",
                events
            ],
        )),
        88
    );
    assert_eq!(int(call(&mut cc, &["XLEN", events])), 1);
    // Both keys are on the master of their slot.
    let mut con = cluster.node(owner);
    assert_eq!(key_type(&mut con, lock), "fence-lck");
    assert_eq!(key_type(&mut con, sku), "fence-stk");
    assert_eq!(key_type(&mut con, events), "stream");
    println!("hash tag: {lock} and {sku} in slot {slot} on node {owner}: tokens {first} -> {second}, stale write refused");
}

// ---------------------------------------------------------------------------------------------
// 6. A client waiting for a lock whose slot migrates
// ---------------------------------------------------------------------------------------------

/// `MIGRATE` deletes the lock on the source node. The waiter there must not be granted a second
/// lock on the source (two holders); it is told `TRYAGAIN` and retries where the slot went.
#[test]
fn a_waiter_whose_slot_migrates_is_told_to_retry_and_never_becomes_a_second_holder() {
    let cluster = Cluster::start();
    let topology = cluster.wait_stable(CLUSTER_WAIT);
    let mut cc = cluster.conn();
    let lock = "lock:waiting-migrate";
    let token = int(call(&mut cc, &["LOCK.ACQUIRE", lock, "holder", HELD_MS]));
    let slot = cluster.keyslot(lock);
    let source = topology.owner[slot];
    let target = other_master(&topology, source);
    // It waits longer than the migration may take: only the migration can end its wait.
    let mut waiter_con = blocking_node_conn(&cluster, source);
    let waiter = thread::spawn(move || {
        redis::cmd("LOCK.ACQUIRE")
            .arg(lock)
            .arg("waiter")
            .arg(HELD_MS)
            .arg("WAIT")
            .arg(long_wait_ms())
            .query::<Value>(&mut waiter_con)
    });
    let mut src = cluster.node(source);
    assert!(
        wait_until(CLUSTER_WAIT, || status_waiters(&mut src, lock) == 1),
        "the waiter did not queue within {CLUSTER_WAIT:?}"
    );
    let started = Instant::now();
    let moved = cluster.migrate_slot(slot, target).keys;
    assert!(moved.iter().any(|k| k == lock), "{moved:?}");
    let reply = waiter.join().expect("waiter thread");
    let text = describe_reply(&reply);
    assert!(
        text.contains("TRYAGAIN"),
        "the waiter on the old node got {text} instead of TRYAGAIN"
    );
    println!(
        "waiter told to retry {:.0} ms after the migration began",
        started.elapsed().as_secs_f64() * 1e3
    );
    // One holder only: the original, on the new node; nothing left behind on the old one.
    let (owner, tok, _) = lock_status(&mut cc, lock).expect("the lock moved with its holder");
    assert_eq!((owner.as_str(), tok), ("holder", token));
    let left = int(call(
        &mut cluster.node(source),
        &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()],
    ));
    assert_eq!(
        left, 0,
        "the old node created a lock in a slot it gave away"
    );
    // The retry, routed to the new node, queues there and is granted on release.
    assert_eq!(int(call(&mut cc, &["LOCK.RELEASE", lock, "holder"])), 1);
    assert!(
        int(call(
            &mut cc,
            &["LOCK.ACQUIRE", lock, "waiter", HELD_MS, "WAIT", "1000"]
        )) > token
    );
}
