//! Races between many real clients: no oversell, idempotent retries, mutual exclusion.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use redis::Value;

const CLIENTS: usize = 100;
const STOCK: i64 = 1_000;
const ATTEMPTS: usize = 1_500;

/// CLIENTS threads, each with its own connection, send ATTEMPTS deductions of 1 in total;
/// `args(i)` gives the arguments after the key of attempt i. Returns every reply.
fn race(server: &Server, key: &str, args: impl Fn(usize) -> Vec<String> + Sync) -> Vec<Value> {
    let barrier = Barrier::new(CLIENTS);
    let replies = Mutex::new(Vec::with_capacity(ATTEMPTS));
    thread::scope(|s| {
        for client in 0..CLIENTS {
            let mut con = server.conn();
            let (barrier, replies, args) = (&barrier, &replies, &args);
            s.spawn(move || {
                let mut mine = Vec::new();
                barrier.wait();
                for attempt in (client..ATTEMPTS).step_by(CLIENTS) {
                    let mut cmd = redis::cmd("STOCK.DEDUCT");
                    cmd.arg(key).arg(args(attempt));
                    match cmd.query::<Value>(&mut con) {
                        Ok(v) => mine.push(v),
                        Err(e) => panic!("attempt {attempt}: {e}"),
                    }
                }
                replies.lock().unwrap().extend(mine);
            });
        }
    });
    replies.into_inner().unwrap()
}

/// Exactly STOCK successes whose remaining quantities are STOCK-1 down to 0, each once (so
/// never negative), and the rest nil.
fn check_no_oversell(replies: &[Value]) {
    assert_eq!(replies.len(), ATTEMPTS);
    let mut remaining: Vec<i64> = Vec::new();
    let mut nils = 0;
    for v in replies {
        match v {
            Value::Int(n) => {
                assert!(*n >= 0, "a negative remaining quantity: {n}");
                remaining.push(*n);
            }
            Value::Nil => nils += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!(remaining.len(), STOCK as usize, "successful deductions");
    assert_eq!(nils, ATTEMPTS - STOCK as usize, "refused deductions");
    remaining.sort_unstable();
    let expected: Vec<i64> = (0..STOCK).collect();
    assert!(
        remaining == expected,
        "each remaining quantity must appear once"
    );
}

#[test]
fn a_hundred_clients_never_oversell_a_stock() {
    let mut server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", &STOCK.to_string()]));
    let replies = race(&server, "sku", |i| {
        vec!["1".into(), "ID".into(), format!("order-{i}")]
    });
    check_no_oversell(&replies);
    assert_eq!(stock(&mut con, "sku"), 0);
    // Every successful order is in the ledger with 1, the others are not.
    let known = (0..ATTEMPTS)
        .filter(|i| {
            let id = format!("order-{i}");
            match call(&mut con, &["STOCK.REQUEST", "sku", &id]) {
                Ok(Value::Int(1)) => true,
                Ok(Value::Nil) => false,
                other => panic!("STOCK.REQUEST {id}: {other:?}"),
            }
        })
        .count();
    assert_eq!(known, STOCK as usize);
    server.assert_alive();
}

#[test]
fn a_hundred_clients_never_oversell_a_plain_integer_string() {
    let mut server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["SET", "sku", &STOCK.to_string()]));
    let replies = race(&server, "sku", |_| vec!["1".into()]);
    check_no_oversell(&replies);
    assert_eq!(get_string(&mut con, "sku").as_deref(), Some("0"));
    assert_eq!(key_type(&mut con, "sku"), "string");
    server.assert_alive();
}

#[test]
fn retried_orders_racing_each_other_deduct_once() {
    let mut server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", &STOCK.to_string()]));
    // 500 orders, each sent 3 times by different clients at once.
    let replies = race(&server, "sku", |i| {
        vec!["1".into(), "ID".into(), format!("order-{}", i % 500)]
    });
    assert!(replies
        .iter()
        .all(|v| matches!(v, Value::Int(n) if *n >= 500)));
    assert_eq!(stock(&mut con, "sku"), 500);
    for i in 0..500 {
        let id = format!("order-{i}");
        assert_eq!(
            int(call(&mut con, &["STOCK.REQUEST", "sku", &id])),
            1,
            "{id}"
        );
    }
    server.assert_alive();
}

#[test]
fn racing_clients_never_hold_a_lock_together() {
    const THREADS: usize = 50;
    const GRANTS_EACH: usize = 4;
    let mut server = Server::start();
    let holders = AtomicUsize::new(0);
    // Tokens in grant order: written only inside the critical section.
    let grants: Mutex<Vec<i64>> = Mutex::new(Vec::new());
    let barrier = Arc::new(Barrier::new(THREADS));
    thread::scope(|s| {
        for t in 0..THREADS {
            let mut con = server.conn();
            let (holders, grants, barrier) = (&holders, &grants, barrier.clone());
            s.spawn(move || {
                let owner = format!("worker-{t}");
                let mut got = 0;
                let mut tries = 0;
                barrier.wait();
                while got < GRANTS_EACH {
                    tries += 1;
                    assert!(tries < 200_000, "{owner} starved");
                    // A TTL no stall inside the critical section outlasts.
                    match call(&mut con, &["LOCK.ACQUIRE", "lock", &owner, "600000"]) {
                        Ok(Value::Nil) => {
                            thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                        Ok(Value::Int(token)) => {
                            assert_eq!(
                                holders.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two clients hold the lock"
                            );
                            {
                                let mut g = grants.lock().unwrap();
                                if let Some(last) = g.last() {
                                    assert!(token > *last, "token {token} after {last}");
                                }
                                g.push(token);
                            }
                            for _ in 0..2 {
                                let status = call(&mut con, &["LOCK.STATUS", "lock"]).unwrap();
                                let Value::Array(items) = status else {
                                    panic!("LOCK.STATUS replied {status:?}");
                                };
                                assert_eq!(items[1], Value::BulkString(owner.clone().into()));
                                assert_eq!(items[3], Value::Int(token));
                                thread::yield_now();
                            }
                            assert_eq!(holders.fetch_sub(1, Ordering::SeqCst), 1);
                            assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lock", &owner])), 1);
                            got += 1;
                        }
                        other => panic!("LOCK.ACQUIRE replied {other:?}"),
                    }
                }
            });
        }
    });
    let grants = grants.into_inner().unwrap();
    assert_eq!(grants.len(), THREADS * GRANTS_EACH);
    assert!(grants.windows(2).all(|w| w[0] < w[1]));
    let mut con = server.conn();
    assert_eq!(exists(&mut con, "lock"), 0);
    server.assert_alive();
}
