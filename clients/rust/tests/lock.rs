//! `Lock` and `LockGuard` against a real server (without the watchdog: see watchdog.rs).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{calls, ms, sleep_ms, wait_until, Monitor, Server, EVENT_DEADLINE};
use fence_core::error::code;
use redis_fence_client::{Lock, LockStatus};

fn holder(con: &mut redis::Connection, key: &str) -> Option<(String, u64)> {
    Lock::status(con, key)
        .expect("LOCK.STATUS")
        .map(|s| (s.owner, s.token))
}

#[test]
fn acquire_then_release() {
    let server = Server::start();
    let mut con = server.conn();
    let mut other = server.conn();

    let ttl = ms(30_000);
    let sent = Instant::now();
    let guard = Lock::acquire(&mut con, "lock:a", "w1", ttl)
        .unwrap()
        .expect("a free lock is granted");
    let replied = Instant::now();
    assert!(guard.token() > 0);
    assert_eq!(guard.key(), "lock:a");
    assert_eq!(guard.owner(), "w1");
    assert!(!guard.is_lost());
    // The estimate counts the TTL from when the request was sent.
    assert!(
        guard.expires_at() >= sent + ttl && guard.expires_at() <= replied + ttl,
        "expires_at is not the TTL after the request"
    );

    let status = Lock::status(&mut other, "lock:a").unwrap().expect("held");
    // The server granted after `sent` and answered this status before now: its TTL ran down
    // by at most that long (plus a millisecond of rounding).
    let most_elapsed = sent.elapsed() + ms(1);
    assert_eq!(status.owner, "w1");
    assert_eq!(status.token, guard.token());
    assert!(
        status.ttl <= ttl && status.ttl + most_elapsed >= ttl,
        "{status:?}, at most {most_elapsed:?} after the grant"
    );
    assert_eq!(status.waiters, 0);

    // Contended: another owner gets nothing.
    assert!(Lock::acquire(&mut other, "lock:a", "w2", ms(30_000))
        .unwrap()
        .is_none());

    assert!(
        guard.release().unwrap(),
        "the holder's release frees the lock"
    );
    assert_eq!(Lock::status(&mut other, "lock:a").unwrap(), None);
}

#[test]
fn drop_releases() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    {
        let guard = Lock::acquire(&mut con, "lock:d", "w1", ms(30_000))
            .unwrap()
            .unwrap();
        assert_eq!(
            holder(&mut admin, "lock:d"),
            Some(("w1".into(), guard.token()))
        );
    }
    assert_eq!(
        holder(&mut admin, "lock:d"),
        None,
        "dropping the guard released"
    );
    assert_eq!(calls(&mut admin, "lock.release"), 1);
    // The connection is usable again after the guard is gone.
    let again = Lock::acquire(&mut con, "lock:d", "w2", ms(30_000)).unwrap();
    assert!(again.is_some());
}

#[test]
fn the_guard_lends_its_connection() {
    let server = Server::start();
    let mut con = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:c", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let token = guard.token();
    let status = Lock::status(guard.conn(), "lock:c").unwrap().unwrap();
    assert_eq!(status.token, token);
}

#[test]
fn reacquire_keeps_the_token_and_a_new_grant_gets_a_larger_one() {
    let server = Server::start();
    let mut con1 = server.conn();
    let mut con2 = server.conn();
    let mut admin = server.conn();

    let first = Lock::acquire(&mut con1, "lock:r", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let t1 = first.token();
    // The same owner again (a retry after a lost reply): the same grant, the same token.
    let retry = Lock::acquire(&mut con2, "lock:r", "w1", ms(30_000))
        .unwrap()
        .expect("a re-acquire by the holder succeeds");
    assert_eq!(retry.token(), t1);
    assert!(retry.release().unwrap());
    // Holds are not counted: the first guard's lease is gone too.
    assert_eq!(holder(&mut admin, "lock:r"), None);
    assert!(!first.release().unwrap(), "nothing left to release");

    let next = Lock::acquire(&mut con1, "lock:r", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    assert!(next.token() > t1, "a new grant has a larger token");
}

#[test]
fn renew_extends_a_held_lease() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:n", "w1", ms(10_000))
        .unwrap()
        .unwrap();
    assert_eq!(guard.ttl(), ms(10_000));
    let sent = Instant::now();
    assert!(guard.renew(ms(60_000)).unwrap());
    assert_eq!(guard.ttl(), ms(60_000));
    assert!(guard.expires_at() >= sent + ms(60_000));
    let status = Lock::status(&mut admin, "lock:n").unwrap().unwrap();
    let most_elapsed = sent.elapsed() + ms(1);
    assert!(
        status.ttl <= ms(60_000) && status.ttl + most_elapsed >= ms(60_000),
        "{status:?}, at most {most_elapsed:?} after the renewal"
    );
    assert_eq!(status.token, guard.token());
    assert!(!guard.is_lost());
}

#[test]
fn renew_after_expiry_fails_and_does_not_resurrect() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:x", "w1", ms(50))
        .unwrap()
        .unwrap();
    assert!(
        wait_until(EVENT_DEADLINE, || holder(&mut admin, "lock:x").is_none()),
        "the lease did not expire"
    );
    assert!(
        !guard.renew(ms(30_000)).unwrap(),
        "an expired lease is not renewed"
    );
    assert!(guard.is_lost());
    assert_eq!(
        holder(&mut admin, "lock:x"),
        None,
        "the renew did not bring it back"
    );
    assert_eq!(calls(&mut admin, "lock.renew"), 1);
    // A guard that knows its lease is lost does not even ask again.
    assert!(!guard.renew(ms(30_000)).unwrap());
    assert_eq!(calls(&mut admin, "lock.renew"), 1);
    assert!(!guard.release().unwrap(), "nothing to release");
    assert_eq!(holder(&mut admin, "lock:x"), None);
}

#[test]
fn a_lost_lease_leaves_the_new_holder_alone() {
    let server = Server::start();
    let mut con = server.conn();
    let mut con2 = server.conn();
    let mut admin = server.conn();
    let mut guard = Lock::acquire(&mut con, "lock:l", "w1", ms(50))
        .unwrap()
        .unwrap();
    assert!(
        wait_until(EVENT_DEADLINE, || holder(&mut admin, "lock:l").is_none()),
        "the lease did not expire"
    );
    let newer = Lock::acquire(&mut con2, "lock:l", "w2", ms(30_000))
        .unwrap()
        .expect("the expired lock is free");
    assert!(newer.token() > guard.token());
    assert!(!guard.renew(ms(30_000)).unwrap());
    assert!(guard.is_lost());
    drop(guard); // LOCK.RELEASE as w1: refused, w2 keeps the lock
    assert_eq!(
        holder(&mut admin, "lock:l"),
        Some(("w2".into(), newer.token()))
    );
}

#[test]
fn acquire_wait_is_granted_on_release() {
    let server = Server::start();
    let mut con = server.conn();
    let guard = Lock::acquire(&mut con, "lock:w", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let t1 = guard.token();
    let url = server.url();
    let waiter = thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let started = Instant::now();
        // Longer than any wait below: only the release can end it.
        let timeout = 3 * EVENT_DEADLINE;
        let guard = Lock::acquire_wait(&mut con, "lock:w", "w2", ms(30_000), Some(timeout))
            .unwrap()
            .expect("granted when w1 releases");
        (guard.token(), started.elapsed())
    });
    let mut admin = server.conn();
    assert!(
        wait_until(EVENT_DEADLINE, || {
            Lock::status(&mut admin, "lock:w")
                .unwrap()
                .is_some_and(|s| s.waiters == 1)
        }),
        "the waiter did not queue"
    );
    // Held on for a while after the waiter queued: it cannot be granted sooner.
    sleep_ms(100);
    assert!(guard.release().unwrap());
    let (t2, waited) = waiter.join().unwrap();
    assert!(t2 > t1);
    assert!(
        waited >= ms(100),
        "the waiter was blocked until the release"
    );
    // The waiter's guard was dropped at the end of its thread, which released the lock.
    assert_eq!(holder(&mut admin, "lock:w"), None);
}

#[test]
fn acquire_wait_times_out_with_none() {
    let server = Server::start();
    let mut con = server.conn();
    let mut con2 = server.conn();
    let _guard = Lock::acquire(&mut con, "lock:t", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let got = Lock::acquire_wait(&mut con2, "lock:t", "w2", ms(1_000), Some(ms(150))).unwrap();
    assert!(got.is_none());
    drop(got);
    assert!(
        started.elapsed() >= ms(140),
        "waited {:?}",
        started.elapsed()
    );
    // A zero timeout does not wait (and is not WAIT 0, which would wait forever): a plain
    // LOCK.ACQUIRE, as the server saw it.
    let monitor = Monitor::start(&server);
    let got =
        Lock::acquire_wait(&mut con2, "lock:t", "w2", ms(1_000), Some(Duration::ZERO)).unwrap();
    assert!(got.is_none());
    drop(got);
    let commands = monitor.sync(&mut con2);
    let sent: Vec<_> = commands
        .iter()
        .filter(|c| c.first().is_some_and(|name| name == "LOCK.ACQUIRE"))
        .collect();
    assert_eq!(
        sent,
        [&vec!["LOCK.ACQUIRE", "lock:t", "w2", "1000"]],
        "a zero timeout sends no WAIT"
    );
    // On a free lock, a wait is granted at once.
    let got = Lock::acquire_wait(&mut con2, "lock:free", "w2", ms(1_000), None).unwrap();
    assert!(got.is_some());
}

#[test]
fn bad_arguments_are_errors() {
    let server = Server::start();
    let mut con = server.conn();
    let e = Lock::acquire(&mut con, "lock:e", "w1", Duration::ZERO).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = Lock::acquire(&mut con, "lock:e", "", ms(1_000)).unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    redis::cmd("SET")
        .arg("plain")
        .arg("x")
        .query::<()>(&mut con)
        .unwrap();
    let e = Lock::acquire(&mut con, "plain", "w1", ms(1_000)).unwrap_err();
    assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
    // A sub-millisecond TTL is rounded up, not refused.
    let guard = Lock::acquire(&mut con, "lock:e", "w1", Duration::from_micros(10)).unwrap();
    assert!(guard.is_some());
}

#[test]
fn status_reads_resp2_and_resp3() {
    let server = Server::start();
    let mut con = server.conn();
    let guard = Lock::acquire(&mut con, "lock:s", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let token = guard.token();
    let mut resp2 = server.conn();
    let mut resp3 = server.conn_resp3();
    let a = Lock::status(&mut resp2, "lock:s").unwrap().unwrap();
    let b = Lock::status(&mut resp3, "lock:s").unwrap().unwrap();
    for s in [&a, &b] {
        assert_eq!(
            (s.owner.as_str(), s.token, s.waiters),
            ("w1", token, 0),
            "{s:?}"
        );
    }
    let _: &LockStatus = &a;
    assert_eq!(Lock::status(&mut resp3, "lock:none").unwrap(), None);
}

/// The lock's holder and token, from an admin connection.
fn held_as(con: &mut redis::Connection, key: &str) -> Option<(String, u64, Duration)> {
    Lock::status(con, key)
        .expect("LOCK.STATUS")
        .map(|s| (s.owner, s.token, s.ttl))
}

#[test]
fn a_stale_guard_of_the_same_owner_never_acts_on_a_newer_grant() {
    let server = Server::start();
    let mut con = server.conn();
    let mut con2 = server.conn();
    let mut con3 = server.conn();
    let mut admin = server.conn();
    let monitor = Monitor::start(&server);
    let mut stale = Lock::acquire(&mut con, "lock:s", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let t1 = stale.token();
    // The grant ends behind the guard's back (an expiry, a DEL) and the same owner string is
    // granted the lock again: another process of the same name, or this worker's next job.
    let _: i64 = redis::cmd("DEL").arg("lock:s").query(&mut admin).unwrap();
    let newer = Lock::acquire(&mut con2, "lock:s", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let t2 = newer.token();
    assert!(t2 > t1);
    // The stale guard's renewal is refused and leaves the newer grant's TTL alone.
    assert!(!stale.renew(ms(600_000)).unwrap());
    assert!(stale.is_lost());
    let (owner, token, ttl) = held_as(&mut admin, "lock:s").unwrap();
    assert_eq!((owner.as_str(), token), ("w1", t2));
    assert!(
        ttl <= ms(30_000),
        "the newer grant kept its own TTL: {ttl:?}"
    );
    // Its release releases nothing: the newer grant stays.
    assert!(!stale.release().unwrap());
    assert_eq!(
        held_as(&mut admin, "lock:s").map(|s| (s.0, s.1)),
        Some(("w1".into(), t2))
    );
    // Dropping a stale guard is the same release: `newer` is stale once a third grant exists.
    let _: i64 = redis::cmd("DEL").arg("lock:s").query(&mut admin).unwrap();
    let newest = Lock::acquire(&mut con3, "lock:s", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    let t3 = newest.token();
    drop(newer);
    assert_eq!(
        held_as(&mut admin, "lock:s").map(|s| (s.0, s.1)),
        Some(("w1".into(), t3))
    );
    // On the wire: every renewal and release named its guard's grant.
    let commands = monitor.sync(&mut admin);
    let sent: Vec<&Vec<String>> = commands
        .iter()
        .filter(|c| c[0] == "LOCK.RENEW" || c[0] == "LOCK.RELEASE")
        .collect();
    let (t1, t2) = (t1.to_string(), t2.to_string());
    assert_eq!(
        sent,
        [
            &vec!["LOCK.RENEW", "lock:s", "w1", "600000", "TOKEN", &t1],
            &vec!["LOCK.RELEASE", "lock:s", "w1", "TOKEN", &t1],
            &vec!["LOCK.RELEASE", "lock:s", "w1", "TOKEN", &t2],
        ]
    );
    assert!(newest.release().unwrap());
}

#[test]
fn acquire_wait_that_gives_up_releases_a_late_grant() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let holder = Lock::acquire(&mut con, "lock:g", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    // A client whose read timeout is shorter than its WAIT: it gives up long before the server
    // does.
    let mut waiter = server.conn();
    waiter.set_read_timeout(Some(ms(200))).unwrap();
    let e = Lock::acquire_wait(
        &mut waiter,
        "lock:g",
        "w2",
        ms(30_000),
        Some(EVENT_DEADLINE),
    )
    .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // The server still has w2 waiting, its release queued behind the wait on its connection.
    let status = Lock::status(&mut admin, "lock:g").unwrap().unwrap();
    assert_eq!((status.owner.as_str(), status.waiters), ("w1", 1));
    let monitor = Monitor::start(&server);
    // w1's release grants the lock to w2, whose queued release frees it at once: no grant is
    // left held for a client that stopped listening.
    assert!(holder.release().unwrap());
    assert!(
        wait_until(EVENT_DEADLINE, || Lock::status(&mut admin, "lock:g")
            .unwrap()
            .is_none()),
        "the late grant to w2 is still held"
    );
    let commands = monitor.sync(&mut admin);
    let releases: Vec<&Vec<String>> = commands.iter().filter(|c| c[0] == "LOCK.RELEASE").collect();
    assert_eq!(releases.len(), 2, "{commands:?}");
    assert_eq!(releases[1], &vec!["LOCK.RELEASE", "lock:g", "w2"]);
    // The late replies (the grant's token, the release's 1) are skipped: the connection is
    // usable.
    waiter.set_read_timeout(Some(EVENT_DEADLINE)).unwrap();
    let again = Lock::acquire(&mut waiter, "lock:g", "w3", ms(30_000))
        .unwrap()
        .expect("free");
    assert_eq!(
        Lock::status(&mut admin, "lock:g").unwrap().unwrap().owner,
        "w3"
    );
    assert!(again.release().unwrap());
}
