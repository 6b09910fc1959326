//! `Lock` and `LockGuard` against a real server (without the watchdog: see watchdog.rs), and
//! the lock methods of `FenceCommands`.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{calls, ms, sleep_ms, wait_until, Monitor, Server, EVENT_DEADLINE};
use fence_core::error::code;
use redis_fence_client::{is_owner_in_use, FenceCommands, Lock, LockStatus};

fn holder(con: &mut redis::Connection, key: &str) -> Option<(String, u64)> {
    con.lock_status(key)
        .expect("LOCK.STATUS")
        .map(|s| (s.owner, s.token))
}

#[test]
fn acquire_then_release() {
    let server = Server::start();
    let client = server.client();
    let mut other = server.conn();

    let ttl = ms(30_000);
    let sent = Instant::now();
    let guard = Lock::new(&client, "lock:a", "w1", ttl)
        .try_acquire()
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

    let status = other.lock_status("lock:a").unwrap().expect("held");
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
    assert!(Lock::new(&client, "lock:a", "w2", ms(30_000))
        .try_acquire()
        .unwrap()
        .is_none());

    assert!(
        guard.release().unwrap(),
        "the holder's release frees the lock"
    );
    assert_eq!(other.lock_status("lock:a").unwrap(), None);
}

#[test]
fn drop_releases() {
    let server = Server::start();
    let client = server.client();
    let mut admin = server.conn();
    {
        let guard = Lock::new(&client, "lock:d", "w1", ms(30_000))
            .try_acquire()
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
    let again = Lock::new(&client, "lock:d", "w2", ms(30_000))
        .try_acquire()
        .unwrap();
    assert!(again.is_some());
}

#[test]
fn the_guard_lends_its_connection() {
    let server = Server::start();
    let client = server.client();
    let mut guard = Lock::new(&client, "lock:c", "w1", ms(30_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    let token = guard.token();
    let status = guard.conn().lock_status("lock:c").unwrap().unwrap();
    assert_eq!(status.token, token);
}

#[test]
fn reacquire_keeps_the_token_and_a_new_grant_gets_a_larger_one() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let t1 = con
        .lock_acquire("lock:r", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    // The same owner again (a retry after a lost reply): the same grant, the same token.
    assert_eq!(
        con.lock_acquire("lock:r", "w1", ms(30_000)).unwrap(),
        Some(t1)
    );
    // Holds are not counted: one release frees it.
    assert!(con.lock_release("lock:r", "w1", t1).unwrap());
    assert_eq!(holder(&mut admin, "lock:r"), None);
    assert!(
        !con.lock_release("lock:r", "w1", t1).unwrap(),
        "nothing left"
    );
    let t2 = con
        .lock_acquire("lock:r", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    assert!(t2 > t1, "a new grant has a larger token");
    // TOKEN names the grant: the old token renews and releases nothing.
    assert_eq!(
        con.lock_renew("lock:r", "w1", ms(60_000), t1).unwrap(),
        None
    );
    assert!(!con.lock_release("lock:r", "w1", t1).unwrap());
    assert_eq!(
        con.lock_renew("lock:r", "w1", ms(60_000), t2).unwrap(),
        Some(t2)
    );
    assert!(con.lock_release("lock:r", "w1", t2).unwrap());
}

/// The decision on a second guard for the same owner: refused while the first lives, in
/// this process, before anything is sent; free again once the first has released.
#[test]
fn a_second_guard_for_the_same_owner_is_refused() {
    let server = Server::start();
    let client = server.client();
    let mut admin = server.conn();
    let lock = Lock::new(&client, "lock:o", "w1", ms(30_000));
    let first = lock.try_acquire().unwrap().unwrap();
    let acquires = calls(&mut admin, "lock.acquire");
    let e = lock.try_acquire().unwrap_err();
    assert!(is_owner_in_use(&e), "{e}");
    let e = Lock::new(&client, "lock:o", "w1", ms(5_000))
        .acquire(Some(ms(10)))
        .unwrap_err();
    assert!(is_owner_in_use(&e), "{e}");
    assert_eq!(
        calls(&mut admin, "lock.acquire"),
        acquires,
        "a refused guard sends nothing"
    );
    // Another owner, another key, another database are other claims.
    assert!(Lock::new(&client, "lock:o", "w2", ms(30_000))
        .try_acquire()
        .unwrap()
        .is_none());
    let other_key = Lock::new(&client, "lock:o2", "w1", ms(30_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    let db1 = redis::Client::open(format!("{}1", server.url())).unwrap();
    assert_eq!(db1.get_connection_info().redis_settings().db(), 1);
    let in_db1 = Lock::new(&db1, "lock:o", "w1", ms(30_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    // The first guard still holds the lock alone; dropping the refused attempts freed nothing.
    assert_eq!(
        holder(&mut admin, "lock:o"),
        Some(("w1".into(), first.token()))
    );
    let t1 = first.token();
    drop(first);
    assert_eq!(holder(&mut admin, "lock:o"), None);
    let again = lock.try_acquire().unwrap().expect("free again");
    assert!(again.token() > t1);
    drop((other_key, in_db1));
}

#[test]
fn renew_extends_a_held_lease() {
    let server = Server::start();
    let client = server.client();
    let mut admin = server.conn();
    let mut guard = Lock::new(&client, "lock:n", "w1", ms(10_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    assert_eq!(guard.ttl(), ms(10_000));
    let sent = Instant::now();
    assert!(guard.renew(ms(60_000)).unwrap());
    assert_eq!(guard.ttl(), ms(60_000));
    assert!(guard.expires_at() >= sent + ms(60_000));
    let status = admin.lock_status("lock:n").unwrap().unwrap();
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
    let client = server.client();
    let mut admin = server.conn();
    let mut guard = Lock::new(&client, "lock:x", "w1", ms(50))
        .try_acquire()
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
    let client = server.client();
    let mut admin = server.conn();
    let mut guard = Lock::new(&client, "lock:l", "w1", ms(50))
        .try_acquire()
        .unwrap()
        .unwrap();
    assert!(
        wait_until(EVENT_DEADLINE, || holder(&mut admin, "lock:l").is_none()),
        "the lease did not expire"
    );
    let newer = Lock::new(&client, "lock:l", "w2", ms(30_000))
        .try_acquire()
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
    let client = server.client();
    let guard = Lock::new(&client, "lock:w", "w1", ms(30_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    let t1 = guard.token();
    let url = server.url();
    let waiter = thread::spawn(move || {
        let client = redis::Client::open(url).unwrap();
        let started = Instant::now();
        // Longer than any wait below: only the release can end it.
        let timeout = 3 * EVENT_DEADLINE;
        let guard = Lock::new(&client, "lock:w", "w2", ms(30_000))
            .acquire(Some(timeout))
            .unwrap()
            .expect("granted when w1 releases");
        (guard.token(), started.elapsed())
    });
    let mut admin = server.conn();
    assert!(
        wait_until(EVENT_DEADLINE, || {
            admin
                .lock_status("lock:w")
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
    let client = server.client();
    let mut con2 = server.conn();
    let _guard = Lock::new(&client, "lock:t", "w1", ms(30_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let got = Lock::new(&client, "lock:t", "w2", ms(1_000))
        .acquire(Some(ms(150)))
        .unwrap();
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
    let got = Lock::new(&client, "lock:t", "w2", ms(1_000))
        .acquire(Some(Duration::ZERO))
        .unwrap();
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
    let got = Lock::new(&client, "lock:free", "w2", ms(1_000))
        .acquire(None)
        .unwrap();
    assert!(got.is_some());
}

#[test]
fn bad_arguments_are_errors() {
    let server = Server::start();
    let client = server.client();
    let mut con = server.conn();
    let e = Lock::new(&client, "lock:e", "w1", Duration::ZERO)
        .try_acquire()
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    let e = Lock::new(&client, "lock:e", "", ms(1_000))
        .try_acquire()
        .unwrap_err();
    assert_eq!(e.code(), Some(code::ERR), "{e}");
    redis::cmd("SET")
        .arg("plain")
        .arg("x")
        .query::<()>(&mut con)
        .unwrap();
    let e = Lock::new(&client, "plain", "w1", ms(1_000))
        .try_acquire()
        .unwrap_err();
    assert_eq!(e.code(), Some(code::WRONGTYPE), "{e}");
    // A sub-millisecond TTL is rounded up, not refused.
    let guard = Lock::new(&client, "lock:e", "w1", Duration::from_micros(10))
        .try_acquire()
        .unwrap();
    assert!(guard.is_some());
}

#[test]
fn status_reads_resp2_and_resp3() {
    let server = Server::start();
    let client = server.client();
    let guard = Lock::new(&client, "lock:s", "w1", ms(30_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    let token = guard.token();
    let mut resp2 = server.conn();
    let mut resp3 = server.conn_resp3();
    let a = resp2.lock_status("lock:s").unwrap().unwrap();
    let b = resp3.lock_status("lock:s").unwrap().unwrap();
    for s in [&a, &b] {
        assert_eq!(
            (s.owner.as_str(), s.token, s.waiters),
            ("w1", token, 0),
            "{s:?}"
        );
    }
    let _: &LockStatus = &a;
    assert_eq!(resp3.lock_status("lock:none").unwrap(), None);
}

/// The lock's holder and token, from an admin connection.
fn held_as(con: &mut redis::Connection, key: &str) -> Option<(String, u64, Duration)> {
    con.lock_status(key)
        .expect("LOCK.STATUS")
        .map(|s| (s.owner, s.token, s.ttl))
}

#[test]
fn a_stale_guard_of_the_same_owner_never_acts_on_a_newer_grant() {
    let server = Server::start();
    let client = server.client();
    let mut other = server.conn();
    let mut admin = server.conn();
    let monitor = Monitor::start(&server);
    let lock = Lock::new(&client, "lock:s", "w1", ms(30_000));
    let mut stale = lock.try_acquire().unwrap().unwrap();
    let t1 = stale.token();
    // The grant ends behind the guard's back (an expiry, a DEL) and the same owner string is
    // granted the lock again: another process of the same name (here a raw connection).
    let _: i64 = redis::cmd("DEL").arg("lock:s").query(&mut admin).unwrap();
    let t2 = other
        .lock_acquire("lock:s", "w1", ms(30_000))
        .unwrap()
        .unwrap();
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
    // A guard taken now re-acquires the other process's grant (same owner string, same
    // token); once a third grant exists, dropping it releases nothing either.
    let newer = lock.try_acquire().unwrap().unwrap();
    assert_eq!(newer.token(), t2);
    let _: i64 = redis::cmd("DEL").arg("lock:s").query(&mut admin).unwrap();
    let t3 = other
        .lock_acquire("lock:s", "w1", ms(30_000))
        .unwrap()
        .unwrap();
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
}

#[test]
fn acquire_wait_that_gives_up_releases_a_late_grant() {
    let server = Server::start();
    let mut con = server.conn();
    let mut admin = server.conn();
    let t1 = con
        .lock_acquire("lock:g", "w1", ms(30_000))
        .unwrap()
        .unwrap();
    // A client whose read timeout is shorter than its WAIT: it gives up long before the server
    // does.
    let mut waiter = server.conn();
    waiter.set_read_timeout(Some(ms(200))).unwrap();
    let e = waiter
        .lock_acquire_wait("lock:g", "w2", ms(30_000), Some(EVENT_DEADLINE))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // The server still has w2 waiting, its release queued behind the wait on its connection.
    let status = admin.lock_status("lock:g").unwrap().unwrap();
    assert_eq!((status.owner.as_str(), status.waiters), ("w1", 1));
    let monitor = Monitor::start(&server);
    // w1's release grants the lock to w2, whose queued release frees it at once: no grant is
    // left held for a client that stopped listening.
    assert!(con.lock_release("lock:g", "w1", t1).unwrap());
    assert!(
        wait_until(EVENT_DEADLINE, || admin
            .lock_status("lock:g")
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
    assert!(waiter
        .lock_acquire("lock:g", "w3", ms(30_000))
        .unwrap()
        .is_some());
    assert_eq!(admin.lock_status("lock:g").unwrap().unwrap().owner, "w3");
}
