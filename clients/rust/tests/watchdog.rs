//! The bounded watchdog against a real server: it keeps a lease alive, never renews after the
//! release (redisson #5698, #7272), gives up when the lease is lost, respects its bound, and
//! survives a dropped connection.

mod common;

use std::time::Duration;

use common::{
    assert_no_renew_after_release, calls, connected_clients, ms, sleep_ms, wait_until, Monitor,
    Server,
};
use redis_fence_client::{Lock, Watchdog};

fn holder(con: &mut redis::Connection, key: &str) -> Option<(String, u64)> {
    Lock::status(con, key)
        .expect("LOCK.STATUS")
        .map(|s| (s.owner, s.token))
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn keeps_a_short_lease_alive_for_several_ttls() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:k", "w1", ms(300))
        .unwrap()
        .unwrap();
    guard
        .start_watchdog(&server.client(), Watchdog::new(1_000))
        .unwrap();
    assert!(guard.watchdog_running());
    for _ in 0..6 {
        sleep_ms(200);
        assert_eq!(
            holder(&mut admin, "lock:k"),
            Some(("w1".into(), guard.token())),
            "the watchdog kept the lease (after {} renewals, error {:?})",
            guard.renewals(),
            guard.watchdog_error()
        );
    }
    // 1.2 s is four TTLs; at a third of the TTL that is about 12 renewals.
    assert!(guard.renewals() >= 6, "{} renewals", guard.renewals());
    assert!(!guard.is_lost());
    assert!(guard.watchdog_running());
    assert!(guard.release().unwrap());
    assert_eq!(holder(&mut admin, "lock:k"), None);
}

/// After `release` (or drop) returns, the watchdog has stopped: the server sees no
/// `LOCK.RENEW` any more, its connection is closed, and a second owner who takes the lock
/// right away keeps it.
fn no_renewal_after(release: impl FnOnce(redis_fence_client::LockGuard<'_, redis::Connection>)) {
    let server = Server::start();
    let monitor = Monitor::start(&server);
    let mut con = server.conn();
    let mut con2 = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:s", "w1", ms(300))
        .unwrap()
        .unwrap();
    guard
        .start_watchdog(&server.client(), Watchdog::new(1_000))
        .unwrap();
    assert!(wait_until(2 * SECOND, || guard.renewals() >= 2));
    let clients_before = connected_clients(&mut admin);

    release(guard);
    let second = Lock::acquire(&mut con2, "lock:s", "w2", ms(5_000))
        .unwrap()
        .expect("the released lock is free");
    let renews = calls(&mut admin, "lock.renew");

    // Ten would-be renewal periods.
    sleep_ms(1_000);
    assert_eq!(
        calls(&mut admin, "lock.renew"),
        renews,
        "no LOCK.RENEW after the release"
    );
    assert_eq!(
        holder(&mut admin, "lock:s"),
        Some(("w2".into(), second.token()))
    );
    assert_eq!(
        connected_clients(&mut admin),
        clients_before - 1,
        "the watchdog's connection is closed"
    );
    assert_no_renew_after_release(&monitor.commands(), "lock:s");
}

#[test]
fn stops_on_release() {
    no_renewal_after(|guard| assert!(guard.release().unwrap()));
}

#[test]
fn stops_on_drop() {
    no_renewal_after(|guard| drop(guard));
}

/// Releases at every moment of the renewal cycle, including while a renewal is in flight:
/// once `release` returns, the server never sees another `LOCK.RENEW`.
#[test]
fn release_never_races_a_renewal() {
    let server = Server::start();
    let monitor = Monitor::start(&server);
    let client = server.client();
    let mut con = server.conn();
    let mut admin = server.conn();
    for i in 0..40u64 {
        let key = format!("lock:race:{i}");
        let mut guard = Lock::acquire(&mut con, &key, "w1", ms(200))
            .unwrap()
            .unwrap();
        guard
            .start_watchdog(
                &client,
                Watchdog::new(10_000).every(Duration::from_micros(200)),
            )
            .unwrap();
        std::thread::sleep(Duration::from_micros(300 * (i % 13)));
        let renewed = guard.renewals();
        assert!(guard.release().unwrap(), "iteration {i}: still held");
        let after = calls(&mut admin, "lock.renew");
        sleep_ms(5);
        assert_eq!(
            calls(&mut admin, "lock.renew"),
            after,
            "iteration {i}: a renewal after release (the watchdog had sent {renewed})"
        );
        assert_eq!(holder(&mut admin, &key), None);
    }
    assert!(
        calls(&mut admin, "lock.renew") > 0,
        "the watchdog did renew"
    );
    // The server's own order of execution: no renewal of a key after its release.
    sleep_ms(50);
    let commands = monitor.commands();
    for i in 0..40u64 {
        assert_no_renew_after_release(&commands, &format!("lock:race:{i}"));
    }
}

#[test]
fn gives_up_when_the_lease_is_lost() {
    let server = Server::start();
    let mut con = server.conn();
    let mut con2 = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:g", "w1", ms(300))
        .unwrap()
        .unwrap();
    guard
        .start_watchdog(&server.client(), Watchdog::new(1_000))
        .unwrap();
    assert!(wait_until(2 * SECOND, || guard.renewals() >= 1));

    // The lease is lost: the key is deleted and another owner takes the lock.
    redis::cmd("DEL")
        .arg("lock:g")
        .query::<()>(&mut admin)
        .unwrap();
    let other = Lock::acquire(&mut con2, "lock:g", "w2", ms(5_000))
        .unwrap()
        .unwrap();
    assert!(
        wait_until(2 * SECOND, || guard.is_lost()),
        "the refused renewal is reported"
    );
    assert!(wait_until(SECOND, || !guard.watchdog_running()));
    let renews = calls(&mut admin, "lock.renew");
    sleep_ms(500);
    assert_eq!(
        calls(&mut admin, "lock.renew"),
        renews,
        "no renewal once lost"
    );
    assert_eq!(
        holder(&mut admin, "lock:g"),
        Some(("w2".into(), other.token()))
    );
    assert!(!guard.renew(ms(300)).unwrap(), "a lost lease stays lost");
    assert!(!guard.release().unwrap(), "w2's lock is left alone");
    assert_eq!(
        holder(&mut admin, "lock:g"),
        Some(("w2".into(), other.token()))
    );
}

#[test]
fn respects_the_maximum_number_of_renewals() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:m", "w1", ms(240))
        .unwrap()
        .unwrap();
    guard
        .start_watchdog(&server.client(), Watchdog::new(3))
        .unwrap();
    assert!(wait_until(3 * SECOND, || !guard.watchdog_running()));
    assert_eq!(guard.renewals(), 3);
    assert_eq!(calls(&mut admin, "lock.renew"), 3);
    assert!(!guard.is_lost(), "{:?}", guard.watchdog_error());
    // Then the lease runs out at its TTL, like any other.
    assert!(wait_until(SECOND, || holder(&mut admin, "lock:m").is_none()));
    sleep_ms(200);
    assert_eq!(calls(&mut admin, "lock.renew"), 3);
    assert!(!guard.renew(ms(240)).unwrap());
    assert!(guard.is_lost());
}

#[test]
fn zero_renewals_never_renews() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:z", "w1", ms(90))
        .unwrap()
        .unwrap();
    guard
        .start_watchdog(&server.client(), Watchdog::new(0))
        .unwrap();
    sleep_ms(200);
    assert_eq!(calls(&mut admin, "lock.renew"), 0);
    assert_eq!(holder(&mut admin, "lock:z"), None);
}

#[test]
fn follows_a_manual_renewal_ttl() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:f", "w1", ms(300))
        .unwrap()
        .unwrap();
    guard
        .start_watchdog(&server.client(), Watchdog::new(1_000))
        .unwrap();
    assert!(guard.renew(ms(30_000)).unwrap());
    let renews = guard.renewals();
    sleep_ms(400);
    assert_eq!(
        guard.renewals(),
        renews,
        "the next renewal is due at a third of the new TTL"
    );
    let status = Lock::status(&mut admin, "lock:f").unwrap().unwrap();
    assert!(status.ttl > ms(25_000), "{status:?}");
}

#[test]
fn reconnects_after_losing_its_connection() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:c", "w1", ms(600))
        .unwrap()
        .unwrap();
    guard
        .start_watchdog(&server.client(), Watchdog::new(1_000))
        .unwrap();
    assert!(wait_until(2 * SECOND, || guard.renewals() >= 1));
    // Kill the watchdog's connection: the one whose last command was LOCK.RENEW.
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    let id = list
        .lines()
        .find(|line| line.to_ascii_lowercase().contains("cmd=lock.renew"))
        .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .expect("the watchdog's connection in CLIENT LIST")
        .to_string();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    for _ in 0..5 {
        sleep_ms(300);
        assert_eq!(
            holder(&mut admin, "lock:c"),
            Some(("w1".into(), guard.token())),
            "kept across the reconnection (error {:?})",
            guard.watchdog_error()
        );
    }
    assert!(!guard.is_lost());
    assert!(
        guard.watchdog_error().is_some(),
        "the lost connection was seen"
    );
    assert!(guard.release().unwrap());
}

#[test]
fn misuse_is_refused() {
    let server = Server::start();
    let client = server.client();
    let mut con = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:u", "w1", ms(300))
        .unwrap()
        .unwrap();
    assert!(guard
        .start_watchdog(&client, Watchdog::new(5).every(ms(300)))
        .is_err());
    assert!(guard
        .start_watchdog(&client, Watchdog::new(5).every(Duration::ZERO))
        .is_err());
    guard.start_watchdog(&client, Watchdog::new(5)).unwrap();
    assert!(
        guard.start_watchdog(&client, Watchdog::new(5)).is_err(),
        "one watchdog per guard"
    );
    assert!(guard.release().unwrap());
}
