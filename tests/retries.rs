//! Issue 14, "every write safe to send twice": a reply lost on the wire, then the same write
//! sent again on a new connection, as ioredis (`autoResendUnfulfilledCommands`) and go-redis
//! (`MaxRetries`) do on their own.
//!
//! A `Proxy` (a thread between the test's client and a real `redis-server`) passes a command
//! to the server, lets the server run it, and drops its reply by closing the client's
//! connection. The client reconnects through the proxy and resends the same command. Every
//! write that carries an id (`STOCK.DEDUCT … ID`, `STOCK.ADD … ID`, `STOCK.REFUND`, the
//! holder's own `LOCK.ACQUIRE`, `LOCK.RELEASE … TOKEN`, `LOCK.RENEW … TOKEN`) is applied once;
//! `STOCK.ADD` and `STOCK.DEDUCT` without `ID` are applied twice (documented unsafe to retry).
//!
//! Also the contract of the options this rests on: `STOCK.ADD … ID` (replay, limits, a missing
//! key, a plain string, persistence, replication) and `TOKEN` of `LOCK.RELEASE`/`LOCK.RENEW`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::*;
use fence_core::config::MAX_TTL_MS;
use redis::{Connection, RedisError, RedisResult, Value};

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

/// A TCP proxy on 127.0.0.1 in front of one server. Each client connection gets its own
/// connection to the server and two forwarding threads. When armed, the next bytes the server
/// sends on any connection (the reply to the command just sent) are thrown away and both
/// sides of that connection are closed: the server ran the command, the client never hears.
struct Proxy {
    port: u16,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(server_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let armed = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, d, s) = (Arc::clone(&armed), Arc::clone(&dropped), Arc::clone(&stop));
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                forward(client, server, Arc::clone(&a), Arc::clone(&d));
            }
        });
        Proxy {
            port,
            armed,
            dropped,
            stop,
            accept: Some(accept),
        }
    }

    /// A new client connection through the proxy, ready (its handshake answered).
    fn conn(&self) -> Connection {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("client");
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect through the proxy");
        con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        con.set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        assert_eq!(
            call(&mut con, &["PING"]).expect("PING through the proxy"),
            Value::SimpleString("PONG".into())
        );
        con
    }

    /// Drops the next reply the server sends (and closes that connection).
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees `stop` and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

/// Client to server: bytes as they come. Server to client: the same, unless armed.
fn forward(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
) {
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut to_client, mut from_server) = (client, server);
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from_server.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to_client.shutdown(Shutdown::Both);
                    return;
                }
                Ok(n) => n,
            };
            if armed.swap(false, Ordering::SeqCst) {
                // The reply is lost on the wire: the client's connection just closes.
                dropped.fetch_add(1, Ordering::SeqCst);
                let _ = to_client.shutdown(Shutdown::Both);
                let _ = from_server.shutdown(Shutdown::Both);
                return;
            }
            if to_client.write_all(&buf[..n]).is_err() {
                let _ = from_server.shutdown(Shutdown::Both);
                return;
            }
        }
    });
}

/// Sends `args` through the proxy, whose reply is lost: the server runs the command and the
/// client sees its connection close. Returns the client's error.
#[track_caller]
fn lost_reply(proxy: &Proxy, args: &[&str]) -> RedisError {
    let mut con = proxy.conn();
    let before = proxy.dropped();
    proxy.arm();
    let result = call(&mut con, args);
    assert_eq!(proxy.dropped(), before + 1, "the proxy dropped no reply");
    match result {
        Err(e) if e.code().is_none() => e,
        other => panic!("{args:?}: the reply was to be lost, the client got {other:?}"),
    }
}

/// What a client library does next: a new connection, the same command again.
fn resend(proxy: &Proxy, args: &[&str]) -> RedisResult<Value> {
    let mut con = proxy.conn();
    call(&mut con, args)
}

/// `lost_reply`, then `resend`: the reply the client finally gets.
#[track_caller]
fn sent_twice(proxy: &Proxy, args: &[&str]) -> RedisResult<Value> {
    lost_reply(proxy, args);
    resend(proxy, args)
}

fn fence_stat(con: &mut Connection, field: &str) -> i64 {
    info_int(con, "fence", &format!("fence_{field}"))
}

/// `STOCK.INFO key` as field -> integer (RESP2 flat array or RESP3 map).
#[track_caller]
fn stock_info(con: &mut Connection, key: &str) -> BTreeMap<String, i64> {
    let pairs: Vec<(Value, Value)> = match call(con, &["STOCK.INFO", key]) {
        Ok(Value::Array(items)) => items
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect(),
        Ok(Value::Map(pairs)) => pairs,
        other => panic!("STOCK.INFO {key}: {other:?}"),
    };
    pairs
        .into_iter()
        .map(|(k, v)| match v {
            Value::Int(n) => (text(&k), n),
            other => panic!("STOCK.INFO {key}: {other:?}"),
        })
        .collect()
}

fn expected_info(
    available: i64,
    deducted: i64,
    requests: i64,
    restocks: i64,
) -> BTreeMap<String, i64> {
    [
        ("available", available),
        ("deducted", deducted),
        ("requests", requests),
        ("fence", 0),
        ("restocks", restocks),
        ("held", 0),
        ("held-units", 0),
        ("next-deadline", 0),
        ("limit", 0),
        ("buyers", 0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn start() -> (Server, Proxy) {
    let server = Server::start();
    let proxy = Proxy::start(server.port());
    (server, proxy)
}

// ---------------------------------------------------------------------------------------------
// Every write with an id, sent twice, is applied once
// ---------------------------------------------------------------------------------------------

#[test]
fn a_deduct_with_id_whose_reply_is_lost_deducts_once_when_resent() {
    let (server, proxy) = start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    let deduct = ["STOCK.DEDUCT", "sku", "3", "ID", "order-1"];
    // The resend is answered from the ledger: the remaining quantity, nothing taken again.
    assert_eq!(int(sent_twice(&proxy, &deduct)), 7);
    assert_eq!(calls(&mut con, "stock.deduct"), 2, "the server ran both");
    assert_eq!(fence_stat(&mut con, "deductions"), 1);
    assert_eq!(fence_stat(&mut con, "replays"), 1);
    assert_eq!(stock(&mut con, "sku"), 7);
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sku", "order-1"])), 3);
    assert_eq!(stock_info(&mut con, "sku"), expected_info(7, 3, 1, 0));
}

#[test]
fn an_add_with_id_whose_reply_is_lost_adds_once_when_resent() {
    let (server, proxy) = start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    let add = ["STOCK.ADD", "sku", "5", "ID", "restock-1"];
    assert_eq!(int(sent_twice(&proxy, &add)), 15);
    assert_eq!(calls(&mut con, "stock.add"), 2, "the server ran both");
    assert_eq!(stock(&mut con, "sku"), 15);
    assert_eq!(stock_info(&mut con, "sku"), expected_info(15, 0, 0, 1));
}

#[test]
fn a_refund_whose_reply_is_lost_returns_stock_once_when_resent() {
    let (server, proxy) = start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", "sku", "3", "ID", "order-1"]
        )),
        7
    );
    // The first call returned the 3 units; the resend finds the id refunded: 0.
    assert_eq!(
        int(sent_twice(&proxy, &["STOCK.REFUND", "sku", "order-1"])),
        0
    );
    assert_eq!(calls(&mut con, "stock.refund"), 2, "the server ran both");
    assert_eq!(fence_stat(&mut con, "refunds"), 1);
    assert_eq!(stock(&mut con, "sku"), 10);
    // What a client that got 0 asks to tell "refunded by my lost call" from "never deducted".
    assert_eq!(int(call(&mut con, &["STOCK.REQUEST", "sku", "order-1"])), 0);
    assert_eq!(stock_info(&mut con, "sku"), expected_info(10, 0, 1, 0));
}

#[test]
fn an_acquire_whose_reply_is_lost_is_one_grant_when_resent_by_the_same_owner() {
    let (server, proxy) = start();
    let mut con = server.conn();
    let acquire = ["LOCK.ACQUIRE", "lk", "worker-1", "60000"];
    lost_reply(&proxy, &acquire);
    let (owner, token, _) = lock_status(&mut con, "lk").expect("the lost call took the lock");
    assert_eq!(owner, "worker-1");
    // The resend is the holder's re-acquire: the same token, the TTL reset, no new grant.
    assert_eq!(int(resend(&proxy, &acquire)), token);
    assert_eq!(fence_stat(&mut con, "grants"), 1);
    assert_eq!(fence_stat(&mut con, "reacquires"), 1);
    assert_eq!(lock_status(&mut con, "lk").map(|s| s.1), Some(token));
}

#[test]
fn a_release_with_token_whose_reply_is_lost_leaves_the_next_grant_alone_when_resent() {
    let (server, proxy) = start();
    let mut con = server.conn();
    let t1 = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "worker-1", "60000"]));
    let t1s = t1.to_string();
    let release = ["LOCK.RELEASE", "lk", "worker-1", "TOKEN", &t1s];
    lost_reply(&proxy, &release);
    assert_eq!(lock_status(&mut con, "lk"), None, "the lost call released");
    // Before the resend arrives, the lock is granted again to the same owner string (the
    // worker's next job, or a restarted process with the same name).
    let t2 = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "worker-1", "60000"]));
    assert!(t2 > t1);
    assert_eq!(
        int(resend(&proxy, &release)),
        0,
        "not that grant: nothing released"
    );
    assert_eq!(
        lock_status(&mut con, "lk").map(|s| (s.0, s.1)),
        Some(("worker-1".to_string(), t2))
    );
    assert_eq!(fence_stat(&mut con, "releases"), 1);

    // The contrast: without TOKEN the resend releases the newer grant.
    let plain = ["LOCK.RELEASE", "lk", "worker-1"];
    lost_reply(&proxy, &plain);
    assert_eq!(lock_status(&mut con, "lk"), None);
    let t3 = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "worker-1", "60000"]));
    assert!(t3 > t2);
    assert_eq!(
        int(resend(&proxy, &plain)),
        1,
        "the newer grant was released"
    );
    assert_eq!(lock_status(&mut con, "lk"), None);
}

#[test]
fn a_renew_with_token_whose_reply_is_lost_renews_only_its_grant_when_resent() {
    let (server, proxy) = start();
    let mut con = server.conn();
    let t1 = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "worker-1", "60000"]));
    let t1s = t1.to_string();
    let renew = ["LOCK.RENEW", "lk", "worker-1", "600000", "TOKEN", &t1s];
    // Resent while the grant lives: the same token, the TTL set again (idempotent).
    assert_eq!(int(sent_twice(&proxy, &renew)), t1);
    assert_eq!(fence_stat(&mut con, "renewals"), 2);
    assert!(pttl(&mut con, "lk") > 60_000, "renewed to 600 s");

    // Resent after the grant ended and the same owner string got a new one: refused, and the
    // new grant keeps its TTL.
    lost_reply(&proxy, &renew);
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lk", "worker-1"])), 1);
    let t2 = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "worker-1", "60000"]));
    nil(resend(&proxy, &renew));
    let ttl = pttl(&mut con, "lk");
    assert!(
        (1..=60_000).contains(&ttl),
        "the new grant's TTL is its own: {ttl}"
    );
    assert_eq!(lock_status(&mut con, "lk").map(|s| s.1), Some(t2));

    // The contrast: without TOKEN the resend extends the new grant.
    let plain = ["LOCK.RENEW", "lk", "worker-1", "600000"];
    lost_reply(&proxy, &plain);
    assert_eq!(int(call(&mut con, &["LOCK.RELEASE", "lk", "worker-1"])), 1);
    let t3 = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "worker-1", "60000"]));
    assert_eq!(int(resend(&proxy, &plain)), t3);
    assert!(pttl(&mut con, "lk") > 60_000, "the new grant was extended");
}

#[test]
fn writes_without_an_id_are_applied_twice_when_resent() {
    let (server, proxy) = start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    // Documented unsafe to retry: the server cannot tell a resend from a second request.
    assert_eq!(int(sent_twice(&proxy, &["STOCK.ADD", "sku", "5"])), 20);
    assert_eq!(int(sent_twice(&proxy, &["STOCK.DEDUCT", "sku", "3"])), 14);
    assert_eq!(stock(&mut con, "sku"), 14);
    // The same on a plain integer string.
    okay(call(&mut con, &["SET", "plain", "10"]));
    assert_eq!(int(sent_twice(&proxy, &["STOCK.ADD", "plain", "5"])), 20);
    assert_eq!(int(sent_twice(&proxy, &["STOCK.DEDUCT", "plain", "3"])), 14);
    assert_eq!(get_string(&mut con, "plain").as_deref(), Some("14"));
}

// ---------------------------------------------------------------------------------------------
// STOCK.ADD … ID
// ---------------------------------------------------------------------------------------------

#[test]
fn stock_add_with_id_adds_once_per_restock_id() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "5", "ID", "r1"])),
        15
    );
    // A replay answers the available quantity, whatever its quantity says.
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "99", "ID", "r1"])),
        15
    );
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "5", "id", "r1"])),
        15
    );
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sku", "4", "ID", "o1"])),
        11
    );
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "5", "ID", "r1"])),
        11
    );
    assert_eq!(fence_stat(&mut con, "replays"), 3);
    // Restock ids and request ids live apart: the same name in each is two things.
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "2", "ID", "o1"])),
        13
    );
    nil(call(&mut con, &["STOCK.REQUEST", "sku", "r1"]));
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sku", "1", "ID", "r1"])),
        12
    );
    assert_eq!(stock_info(&mut con, "sku"), expected_info(12, 5, 2, 2));
    // RESP3: the same fields as a map.
    let mut resp3 = server.conn_resp3();
    assert_eq!(stock_info(&mut resp3, "sku"), expected_info(12, 5, 2, 2));
    // A new sale clears the restock ids with the request ids.
    okay(call(&mut con, &["STOCK.SET", "sku", "0"]));
    assert_eq!(stock_info(&mut con, "sku"), expected_info(0, 0, 0, 0));
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "5", "ID", "r1"])),
        5
    );
    // An add without ID does not touch the restock ledger.
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku", "1"])), 6);
    assert_eq!(stock_info(&mut con, "sku")["restocks"], 1);
}

#[test]
fn stock_add_with_id_on_a_missing_key_creates_the_stock() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "new", "5", "ID", "r1"])),
        5
    );
    assert_eq!(key_type(&mut con, "new"), "fence-stk");
    assert_eq!(pttl(&mut con, "new"), -1);
    assert_eq!(stock_info(&mut con, "new"), expected_info(5, 0, 0, 1));
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "new", "5", "ID", "r1"])),
        5
    );
}

#[test]
fn stock_add_with_id_is_bounded_by_the_ledger_and_id_limits() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    let long_id = "r".repeat(10);
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "1", "ID", &long_id])),
        11
    );
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "2"],
    ));
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "1", "ID", "r2"])),
        12
    );
    let before = digest_value(&mut con, "sku");
    assert_err(
        call(&mut con, &["STOCK.ADD", "sku", "1", "ID", "r3"]),
        restocks_full(2),
    );
    assert_eq!(
        digest_value(&mut con, "sku"),
        before,
        "a refusal changes nothing"
    );
    // Known ids still replay; request ids have a ledger of their own, bounded alike.
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "1", "ID", "r2"])),
        12
    );
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sku", "1", "ID", "o1"])),
        11
    );
    assert_eq!(
        int(call(&mut con, &["STOCK.DEDUCT", "sku", "1", "ID", "o2"])),
        10
    );
    // A full restock ledger does not stop adds without an id.
    assert_eq!(int(call(&mut con, &["STOCK.ADD", "sku", "1"])), 11);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1000000"],
    ));

    // fence.max-id-length bounds new restock ids; a longer id already known still replays.
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "4"],
    ));
    let before = digest_value(&mut con, "sku");
    assert_err(
        call(&mut con, &["STOCK.ADD", "sku", "1", "ID", "r-new"]),
        name_too_long(Name::RestockId, 4),
    );
    assert_eq!(digest_value(&mut con, "sku"), before);
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku", "1", "ID", &long_id])),
        11
    );
    // A refused call on a missing key creates nothing.
    assert_err(
        call(&mut con, &["STOCK.ADD", "none", "1", "ID", "r-new"]),
        name_too_long(Name::RestockId, 4),
    );
    assert_eq!(exists(&mut con, "none"), 0);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-id-length", "512"],
    ));
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "0"],
    ));
    assert_err(
        call(&mut con, &["STOCK.ADD", "none", "1", "ID", "r1"]),
        restocks_full(0),
    );
    assert_eq!(exists(&mut con, "none"), 0);
    assert_eq!(dbsize(&mut con), 1);
    okay(call(
        &mut con,
        &["CONFIG", "SET", "fence.max-ledger-entries", "1000000"],
    ));

    // Overflow: refused, nothing changed, and the id is not spent.
    let near = (i64::MAX - 1).to_string();
    okay(call(&mut con, &["STOCK.SET", "big", &near]));
    let before = digest_value(&mut con, "big");
    assert_err(
        call(&mut con, &["STOCK.ADD", "big", "2", "ID", "r1"]),
        OVERFLOW,
    );
    assert_eq!(digest_value(&mut con, "big"), before);
    assert_eq!(stock_info(&mut con, "big")["restocks"], 0);
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "big", "1", "ID", "r1"])),
        i64::MAX
    );
}

#[test]
fn stock_add_with_id_refuses_bad_arguments_and_plain_strings() {
    let server = Server::start();
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", "10"]));
    for (args, error) in [
        (
            &["STOCK.ADD", "sku", "1", "ID", ""][..],
            empty_name(Name::RestockId),
        ),
        (&["STOCK.ADD", "sku", "1", "ID"], missing_value("ID")),
        (
            &["STOCK.ADD", "sku", "1", "ID", "a", "ID", "b"],
            repeated_option("ID"),
        ),
        (
            &["STOCK.ADD", "sku", "1", "ID", "a", "X"],
            unknown_option("X"),
        ),
        (
            &["STOCK.ADD", "sku", "1", "TOKEN", "5"],
            unknown_option("TOKEN"),
        ),
        (&["STOCK.ADD", "sku", "0", "ID", "a"], quantity_range(1)),
        (&["STOCK.ADD", "sku"], arity_lead()),
    ] {
        assert_err(call(&mut con, args), error);
    }
    assert_eq!(stock_info(&mut con, "sku"), expected_info(10, 0, 0, 0));
    // A plain integer string: the id needs a module stock; the string is left as it was.
    okay(call(&mut con, &["SET", "plain", "10"]));
    assert_err(
        call(&mut con, &["STOCK.ADD", "plain", "5", "ID", "r1"]),
        NEEDS_STOCK,
    );
    assert_eq!(get_string(&mut con, "plain").as_deref(), Some("10"));
    assert_eq!(key_type(&mut con, "plain"), "string");
    okay(call(&mut con, &["SET", "text", "abc"]));
    assert_err(
        call(&mut con, &["STOCK.ADD", "text", "5", "ID", "r1"]),
        NEEDS_STOCK,
    );
    call(&mut con, &["RPUSH", "list", "a"]).expect("RPUSH");
    assert_err(
        call(&mut con, &["STOCK.ADD", "list", "5", "ID", "r1"]),
        WRONGTYPE,
    );
}

// ---------------------------------------------------------------------------------------------
// Restock ids survive restarts, rewrites and failovers
// ---------------------------------------------------------------------------------------------

/// Stocks whose ledgers hold restock ids: `sku` (restocks r1, r2; request o1 deducted 2), and
/// `fresh`, created by `STOCK.ADD … ID`.
fn restock(con: &mut Connection) {
    okay(call(con, &["STOCK.SET", "sku", "10"]));
    assert_eq!(int(call(con, &["STOCK.ADD", "sku", "5", "ID", "r1"])), 15);
    assert_eq!(int(call(con, &["STOCK.ADD", "sku", "7", "ID", "r2"])), 22);
    assert_eq!(
        int(call(con, &["STOCK.DEDUCT", "sku", "2", "ID", "o1"])),
        20
    );
    assert_eq!(int(call(con, &["STOCK.ADD", "sku", "1"])), 21);
    assert_eq!(int(call(con, &["STOCK.ADD", "fresh", "4", "ID", "r1"])), 4);
}

/// The state `restock` left, and that every restock id replays (adds nothing).
#[track_caller]
fn check_restocked(con: &mut Connection, when: &str) {
    assert_eq!(stock_info(con, "sku"), expected_info(21, 2, 1, 2), "{when}");
    assert_eq!(
        stock_info(con, "fresh"),
        expected_info(4, 0, 0, 1),
        "{when}"
    );
    assert_eq!(int(call(con, &["STOCK.REQUEST", "sku", "o1"])), 2, "{when}");
    for (key, id, available) in [("sku", "r1", 21), ("sku", "r2", 21), ("fresh", "r1", 4)] {
        assert_eq!(
            int(call(con, &["STOCK.ADD", key, "5", "ID", id])),
            available,
            "{when}: {key} {id} replayed"
        );
    }
}

fn wait_for_rewrite(con: &mut Connection) {
    assert!(
        wait_until(Duration::from_secs(30), || {
            let text = info(con, "persistence");
            text.contains("aof_rewrite_in_progress:0") && text.contains("aof_rewrite_scheduled:0")
        }),
        "the AOF rewrite did not finish"
    );
}

/// The text of the server's AOF files whose names contain `only` (`.aof` for all of them).
fn aof_text(server: &Server, only: &str) -> String {
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(server.dir().join("appendonlydir")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(only) {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
    text
}

#[test]
fn restock_ids_survive_save_and_a_restart() {
    let mut server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    restock(&mut con);
    let digest = debug_digest(&mut con);
    okay(call(&mut con, &["SAVE"]));
    server.restart();
    let mut con = server.conn();
    assert_eq!(debug_digest(&mut con), digest);
    check_restocked(&mut con, "after SAVE and a restart");
}

#[test]
fn restock_ids_survive_an_aof_restart() {
    let mut server = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let mut con = server.conn();
    restock(&mut con);
    let digest = debug_digest(&mut con);
    assert!(
        aof_text(&server, ".aof").contains("FENCE.RESTOCK"),
        "a restock with an id reaches the AOF as its effect"
    );
    server.restart();
    let mut con = server.conn();
    assert_eq!(debug_digest(&mut con), digest);
    check_restocked(&mut con, "after an AOF restart");
}

fn restock_ids_survive_bgrewriteaof(preamble: &str) {
    let mut server = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--aof-use-rdb-preamble",
        preamble,
    ]);
    let mut con = server.conn();
    wait_for_rewrite(&mut con);
    restock(&mut con);
    let digest = debug_digest(&mut con);
    call(&mut con, &["BGREWRITEAOF"]).expect("BGREWRITEAOF");
    wait_for_rewrite(&mut con);
    if preamble == "no" {
        // The rewrite wrote each restock id as a FENCE.RESTOCK command into the new base
        // file (a replaced one, removed in the background, has none).
        let text = aof_text(&server, ".base.aof");
        assert_eq!(text.matches("FENCE.RESTOCK").count(), 3, "{text}");
    }
    server.restart();
    let mut con = server.conn();
    assert_eq!(debug_digest(&mut con), digest);
    check_restocked(
        &mut con,
        &format!("after BGREWRITEAOF (preamble {preamble})"),
    );
}

#[test]
fn restock_ids_survive_an_aof_rewrite_with_rdb_preamble() {
    restock_ids_survive_bgrewriteaof("yes");
}

#[test]
fn restock_ids_survive_an_aof_rewrite_without_rdb_preamble() {
    restock_ids_survive_bgrewriteaof("no");
}

#[test]
fn restock_ids_are_copied_dumped_and_restored_with_the_stock() {
    let server = Server::start_with(&["--enable-debug-command", "yes"]);
    let mut con = server.conn();
    restock(&mut con);
    assert_eq!(int(call(&mut con, &["COPY", "sku", "sku2"])), 1);
    let payload = dump(&mut con, "fresh");
    okay(restore(&mut con, "fresh2", 0, &payload, &[]));
    for (copy, original) in [("sku2", "sku"), ("fresh2", "fresh")] {
        assert_eq!(
            digest_value(&mut con, copy),
            digest_value(&mut con, original)
        );
    }
    assert_eq!(stock_info(&mut con, "sku2"), expected_info(21, 2, 1, 2));
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku2", "5", "ID", "r2"])),
        21
    );
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "fresh2", "5", "ID", "r1"])),
        4
    );
    // Each copy has its own ledger from then on.
    assert_eq!(
        int(call(&mut con, &["STOCK.ADD", "sku2", "1", "ID", "r9"])),
        22
    );
    assert_eq!(stock_info(&mut con, "sku")["restocks"], 2);
}

#[test]
fn a_replica_has_the_same_restock_ids_and_a_replay_on_it_adds_nothing_once_promoted() {
    let master = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let mut mcon = master.conn();
    // Before the replica attaches (the full sync carries these) ...
    okay(call(&mut mcon, &["STOCK.SET", "early", "3"]));
    assert_eq!(
        int(call(&mut mcon, &["STOCK.ADD", "early", "2", "ID", "r0"])),
        5
    );
    let port = master.port().to_string();
    let replica = Server::start_with(&[
        "--enable-debug-command",
        "yes",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    wait_for_sync(&master, &replica, Duration::from_secs(30));
    // ... and after (the stream carries FENCE.RESTOCK).
    restock(&mut mcon);
    wait_for_sync(&master, &replica, Duration::from_secs(30));
    let mut rcon = replica.conn();
    assert_eq!(debug_digest(&mut rcon), debug_digest(&mut mcon));
    for key in ["early", "sku", "fresh"] {
        assert_eq!(
            digest_value(&mut rcon, key),
            digest_value(&mut mcon, key),
            "{key}"
        );
    }
    assert_eq!(stock_info(&mut rcon, "early"), expected_info(5, 0, 0, 1));
    let log = replica.log();
    let errors = replication_errors(&log);
    assert!(errors.is_empty(), "replication errors: {errors:?}");

    // Promoted: a restock sent to the old master and resent to the new one adds nothing.
    okay(call(&mut rcon, &["REPLICAOF", "NO", "ONE"]));
    check_restocked(&mut rcon, "on the promoted replica");
    assert_eq!(
        int(call(&mut rcon, &["STOCK.ADD", "early", "2", "ID", "r0"])),
        5
    );
    assert_eq!(
        int(call(&mut rcon, &["STOCK.ADD", "sku", "5", "ID", "r3"])),
        26
    );
}

// ---------------------------------------------------------------------------------------------
// TOKEN of LOCK.RELEASE and LOCK.RENEW
// ---------------------------------------------------------------------------------------------

#[test]
fn token_narrows_release_and_renew_to_one_grant() {
    let server = Server::start();
    let mut con = server.conn();
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "w1", "60000"]));
    let (ts, wrong) = (t.to_string(), (t + 1).to_string());
    // A wrong token: as if the lock were not held; nothing changes.
    nil(call(
        &mut con,
        &["LOCK.RENEW", "lk", "w1", "600000", "TOKEN", &wrong],
    ));
    assert!(pttl(&mut con, "lk") <= 60_000, "not renewed");
    assert_eq!(
        int(call(
            &mut con,
            &["LOCK.RELEASE", "lk", "w1", "TOKEN", &wrong]
        )),
        0
    );
    assert_eq!(
        lock_status(&mut con, "lk").map(|s| (s.0, s.1)),
        Some(("w1".into(), t))
    );
    // The right token with another owner is not the holder either.
    nil(call(
        &mut con,
        &["LOCK.RENEW", "lk", "w2", "600000", "TOKEN", &ts],
    ));
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lk", "w2", "TOKEN", &ts])),
        0
    );
    assert_eq!(fence_stat(&mut con, "renewals_refused"), 2);
    assert_eq!(fence_stat(&mut con, "releases_refused"), 2);
    // The right token acts (the option name in any case).
    assert_eq!(
        int(call(
            &mut con,
            &["LOCK.RENEW", "lk", "w1", "600000", "token", &ts]
        )),
        t
    );
    assert!(pttl(&mut con, "lk") > 60_000, "renewed");
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lk", "w1", "TOKEN", &ts])),
        1
    );
    assert_eq!(lock_status(&mut con, "lk"), None);
    // On a free key: 0 and nil.
    nil(call(
        &mut con,
        &["LOCK.RENEW", "lk", "w1", "1000", "TOKEN", &ts],
    ));
    assert_eq!(
        int(call(&mut con, &["LOCK.RELEASE", "lk", "w1", "TOKEN", &ts])),
        0
    );
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn token_option_errors_change_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "w1", "60000"]));
    let ts = t.to_string();
    for bad in ["0", "-1", "abc", "", "1.5", TWO_POW_63] {
        for args in [
            vec!["LOCK.RELEASE", "lk", "w1", "TOKEN", bad],
            vec!["LOCK.RENEW", "lk", "w1", "600000", "TOKEN", bad],
        ] {
            assert_err(call(&mut con, &args), TOKEN_NOT_POSITIVE);
        }
    }
    for (args, error) in [
        (
            &["LOCK.RELEASE", "lk", "w1", "TOKEN"][..],
            missing_value("TOKEN"),
        ),
        (
            &["LOCK.RELEASE", "lk", "w1", "TOKEN", &ts, "TOKEN", &ts],
            repeated_option("TOKEN"),
        ),
        (
            &["LOCK.RELEASE", "lk", "w1", "TOKEN", &ts, "X"],
            unknown_option("X"),
        ),
        (
            &["LOCK.RELEASE", "lk", "w1", "ID", &ts],
            unknown_option("ID"),
        ),
        (
            &["LOCK.RELEASE", "lk", "w1", "WAIT", "5"],
            unknown_option("WAIT"),
        ),
        (
            &["LOCK.RENEW", "lk", "w1", "600000", "TOKEN"],
            missing_value("TOKEN"),
        ),
        (
            &[
                "LOCK.RENEW",
                "lk",
                "w1",
                "600000",
                "TOKEN",
                &ts,
                "token",
                &ts,
            ],
            repeated_option("TOKEN"),
        ),
        (
            &["LOCK.RENEW", "lk", "w1", "600000", "FENCE", &ts],
            unknown_option("FENCE"),
        ),
        (
            &["LOCK.RENEW", "lk", "w1", "0", "TOKEN", &ts],
            ttl_range(MAX_TTL_MS.default),
        ),
        (
            &["LOCK.RENEW", "lk", "", "1000", "TOKEN", &ts],
            empty_name(Name::Owner),
        ),
        (&["LOCK.RELEASE", "lk"], arity_lead()),
        (&["LOCK.RENEW", "lk", "w1"], arity_lead()),
    ] {
        assert_err(call(&mut con, args), error);
    }
    // Nothing changed: the holder, its token, its TTL (never reset to 600 s).
    assert_eq!(
        lock_status(&mut con, "lk").map(|s| (s.0, s.1)),
        Some(("w1".into(), t))
    );
    assert!(pttl(&mut con, "lk") <= 60_000);
    // TOKEN on a key of another type: WRONGTYPE after the arguments are checked.
    okay(call(&mut con, &["SET", "str", "x"]));
    assert_err(
        call(&mut con, &["LOCK.RELEASE", "str", "w1", "TOKEN", &ts]),
        WRONGTYPE,
    );
    assert_err(
        call(&mut con, &["LOCK.RELEASE", "str", "w1", "TOKEN", "0"]),
        TOKEN_NOT_POSITIVE,
    );
}

// ---------------------------------------------------------------------------------------------
// What generic key commands do to a lock (the README's client section names them)
// ---------------------------------------------------------------------------------------------

#[test]
fn persist_makes_a_lock_never_expire_and_copy_copies_its_token() {
    let server = Server::start();
    let mut con = server.conn();
    let t = int(call(&mut con, &["LOCK.ACQUIRE", "lk", "w1", "60000"]));
    assert_eq!(int(call(&mut con, &["PERSIST", "lk"])), 1);
    assert_eq!(pttl(&mut con, "lk"), -1);
    assert_eq!(lock_status(&mut con, "lk"), Some(("w1".into(), t, -1)));
    // Only a release (or a renew, which sets a TTL again) ends it now.
    assert_eq!(int(call(&mut con, &["LOCK.RENEW", "lk", "w1", "5000"])), t);
    assert!((1..=5_000).contains(&pttl(&mut con, "lk")));
    // COPY: a second lock with the same owner and the same token (and the TTL).
    assert_eq!(int(call(&mut con, &["COPY", "lk", "lk2"])), 1);
    let (owner, token, ttl) = lock_status(&mut con, "lk2").expect("copied");
    assert_eq!((owner.as_str(), token), ("w1", t));
    assert!((1..=5_000).contains(&ttl));
    // The copy is released by its owner like the original, each on its own.
    assert_eq!(
        int(call(
            &mut con,
            &["LOCK.RELEASE", "lk2", "w1", "TOKEN", &t.to_string()]
        )),
        1
    );
    assert_eq!(lock_status(&mut con, "lk").map(|s| s.1), Some(t));
}
