//! The bounded watchdog against a real server: it keeps a lease alive, never renews after the
//! release (redisson #5698, #7272), gives up when the lease is lost, respects its bound, follows
//! a manual renewal, and survives a dropped connection.
//!
//! Every test waits for the event it is about (a renewal counted by the guard or executed by
//! the server, a closed connection, an expiry) with a deadline that only a failure exhausts, and
//! leases are long enough that scheduling delays on a loaded machine cannot make them lapse:
//! with [`LEASE`] and a renewal every third of it, the watchdog has two seconds to spare.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_no_renew_after_release, calls, client_ids, client_line, ms, wait_until, Monitor, Paused,
    Server, EVENT_DEADLINE,
};
use redis_fence_client::{FenceCommands, LeaseLost, Lock, LockGuard, LostReason, Watchdog};

/// The TTL of the leases the watchdog keeps: its renewals (every third of it by default) may
/// come up to two seconds late before the lease lapses.
const LEASE: Duration = Duration::from_secs(3);
/// A fixed renewal interval for the tests about something else than the pace: many renewals
/// soon, each with almost the whole [`LEASE`] to spare.
const QUICK: Duration = Duration::from_millis(50);

fn holder(con: &mut redis::Connection, key: &str) -> Option<(String, u64)> {
    con.lock_status(key)
        .expect("LOCK.STATUS")
        .map(|s| (s.owner, s.token))
}

/// The id of the connection `con` is on.
fn client_id(con: &mut redis::Connection) -> String {
    redis::cmd("CLIENT")
        .arg("ID")
        .query::<i64>(con)
        .expect("CLIENT ID")
        .to_string()
}

/// Takes `key` as `w1` with a watchdog and returns the guard and the id of the connection the
/// watchdog renews on: the one client that connected meanwhile besides the guard's own
/// (`try_acquire` connects the watchdog before it returns).
fn watched(
    server: &Server,
    admin: &mut redis::Connection,
    key: &str,
    ttl: Duration,
    config: Watchdog,
) -> (LockGuard, String) {
    let before = client_ids(admin);
    let mut guard = Lock::new(&server.client(), key, "w1", ttl)
        .watchdog(config)
        .try_acquire()
        .unwrap()
        .expect("a free lock");
    let own = client_id(guard.conn());
    let new: Vec<String> = client_ids(admin)
        .difference(&before)
        .filter(|id| **id != own)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "one new connection for the watchdog: {new:?}");
    let id = new.into_iter().next().unwrap();
    (guard, id)
}

/// Waits until the server no longer lists connection `id`.
#[track_caller]
fn assert_closes(admin: &mut redis::Connection, id: &str, what: &str) {
    assert!(
        wait_until(EVENT_DEADLINE, || client_line(admin, id).is_none()),
        "{what}: the watchdog's connection {id} is still open after {EVENT_DEADLINE:?}"
    );
}

/// Busy-waits (yielding) until `f` is true; panics after [`EVENT_DEADLINE`]. Reacts within
/// microseconds, where `wait_until` polls every few milliseconds.
#[track_caller]
fn spin_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENT_DEADLINE;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what}: not after {EVENT_DEADLINE:?}"
        );
        thread::yield_now();
    }
}

/// The `LOCK.RENEW`s of `key` among `commands`: their TTL arguments, in the server's order.
fn renew_ttls(commands: &[Vec<String>], key: &str) -> Vec<String> {
    commands
        .iter()
        .filter(|c| c.len() >= 4 && c[0] == "LOCK.RENEW" && c[1] == key)
        .map(|c| c[3].clone())
        .collect()
}

#[test]
fn keeps_a_lease_alive_for_several_ttls() {
    let server = Server::start();
    let mut admin = server.conn();
    let started = Instant::now();
    let guard = Lock::new(&server.client(), "lock:k", "w1", LEASE)
        .watchdog(Watchdog::new(1_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    // The server granted the lock before this instant: its clock has run at least as long
    // since the grant as this one has since `granted`.
    let granted = Instant::now();
    assert!(guard.watchdog_running());
    // Until three TTLs have passed since the grant, the lock never lapses nor changes hands (a
    // lapsed lease is never renewed back: the token would change or the lock be free).
    let mut checks = 0;
    loop {
        let elapsed = granted.elapsed();
        assert_eq!(
            holder(&mut admin, "lock:k"),
            Some(("w1".into(), guard.token())),
            "the watchdog kept the lease {elapsed:?} after the grant ({} renewals, error {:?})",
            guard.renewals(),
            guard.watchdog_error()
        );
        checks += 1;
        if elapsed >= 3 * LEASE {
            break;
        }
        thread::sleep(ms(100));
    }
    let renewals = guard.renewals();
    let span = started.elapsed();
    // Outliving three TTLs takes three renewals at least; renewing no sooner than a third of
    // the TTL after the last one allows at most span / (TTL / 3) of them.
    let interval = LEASE / 3;
    let most = span.as_nanos() / interval.as_nanos();
    assert!(renewals >= 3, "{renewals} renewals");
    assert!(
        u128::from(renewals) <= most,
        "{renewals} renewals in {span:?}: more than one per {interval:?}"
    );
    assert!(!guard.is_lost());
    assert_eq!(guard.watchdog_error(), None);
    assert!(guard.watchdog_running());
    assert!(guard.release().unwrap());
    assert_eq!(holder(&mut admin, "lock:k"), None);
    println!("{renewals} renewals in {span:?} ({checks} checks of the holder)");
}

/// After `release` (or drop) returns, the watchdog has stopped: its connection is closed, the
/// server executed no `LOCK.RENEW` after the `LOCK.RELEASE` and sees none later, and a second
/// owner who takes the lock right away keeps it.
fn no_renewal_after(release: impl FnOnce(LockGuard)) {
    let server = Server::start();
    let monitor = Monitor::start(&server);
    let mut admin = server.conn();
    let clients_before = client_ids(&mut admin);
    let (guard, watchdog) = watched(
        &server,
        &mut admin,
        "lock:s",
        LEASE,
        Watchdog::new(1_000).every(QUICK),
    );
    assert!(
        wait_until(EVENT_DEADLINE, || guard.renewals() >= 2),
        "the watchdog did not renew twice"
    );

    release(guard);
    // The thread was joined, so its connection is already closed; the server sees it soon.
    assert_closes(&mut admin, &watchdog, "after the release");
    let mut second = Lock::new(&server.client(), "lock:s", "w2", ms(60_000))
        .try_acquire()
        .unwrap()
        .expect("the released lock is free");
    let renews = calls(&mut admin, "lock.renew");
    // Watch ten would-be renewal periods more: nothing comes, from any connection.
    thread::sleep(10 * QUICK);
    assert_eq!(
        calls(&mut admin, "lock.renew"),
        renews,
        "no LOCK.RENEW after the release"
    );
    // The released guard's own connection closed with it; the second guard has one.
    let second_conn = client_id(second.conn());
    assert!(
        wait_until(EVENT_DEADLINE, || {
            let mut now = client_ids(&mut admin);
            now.remove(&second_conn);
            now == clients_before
        }),
        "no connection left over or opened again"
    );
    assert_eq!(
        holder(&mut admin, "lock:s"),
        Some(("w2".into(), second.token()))
    );
    let commands = monitor.sync(&mut admin);
    assert!(renew_ttls(&commands, "lock:s").len() >= 2);
    assert_no_renew_after_release(&commands, "lock:s");
}

#[test]
fn stops_on_release() {
    no_renewal_after(|guard| assert!(guard.release().unwrap()));
}

#[test]
fn stops_on_drop() {
    no_renewal_after(drop);
}

/// Releases at every moment of the renewal cycle, including while a renewal is in flight:
/// each release comes right after the watchdog counted its n-th renewal (it counts one before
/// sending it), plus 0 to 1.2 ms. Once `release` returns, the watchdog's connection is closed
/// and the server never executes another `LOCK.RENEW` of the key.
#[test]
fn release_never_races_a_renewal() {
    const ROUNDS: u64 = 40;
    let server = Server::start();
    let monitor = Monitor::start(&server);
    let mut admin = server.conn();
    let baseline = client_ids(&mut admin);
    let mut counted = Vec::new();
    for i in 0..ROUNDS {
        let key = format!("lock:race:{i}");
        let (guard, _) = watched(
            &server,
            &mut admin,
            &key,
            LEASE,
            Watchdog::new(10_000).every(Duration::from_micros(200)),
        );
        let n = 1 + (i % 3) as u32;
        spin_until(&format!("iteration {i}: renewal {n}"), || {
            guard.renewals() >= n
        });
        let offset = Duration::from_micros(100 * (i % 13));
        let at = Instant::now();
        while at.elapsed() < offset {
            thread::yield_now();
        }
        let error = guard.watchdog_error();
        assert!(
            guard.release().unwrap(),
            "iteration {i}: the lease was lost (watchdog error {error:?})"
        );
        assert!(
            wait_until(EVENT_DEADLINE, || client_ids(&mut admin) == baseline),
            "iteration {i}: the watchdog's connection outlived the release"
        );
        assert_eq!(holder(&mut admin, &key), None);
        counted.push(n);
    }
    // The server's own order of execution: every renewal counted before a release was
    // answered before it, and no renewal of a key came after its release.
    let commands = monitor.sync(&mut admin);
    for (i, n) in counted.iter().enumerate() {
        let key = format!("lock:race:{i}");
        let renews = renew_ttls(&commands, &key).len();
        assert!(
            renews >= *n as usize,
            "iteration {i}: {renews} LOCK.RENEW of {key}, {n} counted"
        );
        assert_no_renew_after_release(&commands, &key);
    }
}

/// The manual renewal and the watchdog's renewals never cross: once the server has executed
/// `LOCK.RENEW` with the new TTL, it executes no watchdog renewal with the old one (which
/// would shorten the lease the guard believes extended). Renewed manually while the
/// watchdog renews every 200 µs, so often while one of its renewals is in flight.
#[test]
fn a_manual_renewal_is_never_overtaken_by_the_watchdog() {
    const ROUNDS: u64 = 30;
    let longer = ms(60_000);
    let server = Server::start();
    let monitor = Monitor::start(&server);
    let mut admin = server.conn();
    for i in 0..ROUNDS {
        let key = format!("lock:manual:{i}");
        let (mut guard, _) = watched(
            &server,
            &mut admin,
            &key,
            LEASE,
            Watchdog::new(10_000).every(Duration::from_micros(200)),
        );
        let n = 1 + (i % 3) as u32;
        spin_until(&format!("iteration {i}: renewal {n}"), || {
            guard.renewals() >= n
        });
        assert!(guard.renew(longer).unwrap(), "iteration {i}");
        let after = guard.renewals();
        spin_until(
            &format!("iteration {i}: a renewal after the manual one"),
            || guard.renewals() > after,
        );
        assert!(guard.release().unwrap(), "iteration {i}");
    }
    let commands = monitor.sync(&mut admin);
    let (old, new) = (
        LEASE.as_millis().to_string(),
        longer.as_millis().to_string(),
    );
    for i in 0..ROUNDS {
        let key = format!("lock:manual:{i}");
        let ttls = renew_ttls(&commands, &key);
        let first_new = ttls
            .iter()
            .position(|t| *t == new)
            .unwrap_or_else(|| panic!("iteration {i}: no renewal with {new} ms: {ttls:?}"));
        assert!(
            ttls[..first_new].iter().all(|t| *t == old),
            "iteration {i}: {ttls:?}"
        );
        assert!(
            ttls[first_new..].iter().all(|t| *t == new),
            "iteration {i}: a renewal with the old TTL after the manual one: {ttls:?}"
        );
        assert!(ttls.len() > first_new + 1, "iteration {i}: {ttls:?}");
    }
}

#[test]
fn gives_up_when_the_lease_is_lost() {
    let server = Server::start();
    let monitor = Monitor::start(&server);
    let mut admin = server.conn();
    let (mut guard, watchdog) = watched(
        &server,
        &mut admin,
        "lock:g",
        LEASE,
        Watchdog::new(1_000).every(QUICK),
    );
    assert!(
        wait_until(EVENT_DEADLINE, || guard.renewals() >= 1),
        "the watchdog did not renew"
    );

    // The lease is lost: the key is deleted and another owner takes the lock.
    redis::cmd("DEL")
        .arg("lock:g")
        .query::<()>(&mut admin)
        .unwrap();
    let other = Lock::new(&server.client(), "lock:g", "w2", ms(60_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    assert!(
        wait_until(EVENT_DEADLINE, || guard.is_lost()),
        "the refused renewal is not reported"
    );
    assert!(
        wait_until(EVENT_DEADLINE, || !guard.watchdog_running()),
        "the watchdog still runs"
    );
    assert_eq!(
        guard.watchdog_error(),
        None,
        "it stopped on the refusal, not on an error"
    );
    // Its thread has ended, and with it its connection: every renewal it sent was executed.
    assert_closes(&mut admin, &watchdog, "once lost");
    assert_eq!(calls(&mut admin, "lock.renew"), u64::from(guard.renewals()));
    // In the server's order: exactly one renewal after the DEL, the refused one.
    let commands = monitor.sync(&mut admin);
    let del = commands
        .iter()
        .position(|c| c.len() == 2 && c[0] == "DEL" && c[1] == "lock:g")
        .expect("the DEL in MONITOR");
    assert_eq!(renew_ttls(&commands[del..], "lock:g").len(), 1);
    assert_eq!(
        holder(&mut admin, "lock:g"),
        Some(("w2".into(), other.token()))
    );
    assert!(!guard.renew(LEASE).unwrap(), "a lost lease stays lost");
    assert_eq!(
        calls(&mut admin, "lock.renew"),
        u64::from(guard.renewals()),
        "a guard that knows its lease is lost does not ask"
    );
    assert!(!guard.release().unwrap(), "w2's lock is left alone");
    assert_eq!(
        holder(&mut admin, "lock:g"),
        Some(("w2".into(), other.token()))
    );
}

#[test]
fn respects_the_maximum_number_of_renewals() {
    let server = Server::start();
    let mut admin = server.conn();
    let (mut guard, watchdog) = watched(
        &server,
        &mut admin,
        "lock:m",
        LEASE,
        Watchdog::new(3).every(QUICK),
    );
    assert!(
        wait_until(EVENT_DEADLINE, || !guard.watchdog_running()),
        "the watchdog did not stop after 3 renewals ({} so far)",
        guard.renewals()
    );
    assert_eq!(guard.renewals(), 3);
    assert!(!guard.is_lost(), "{:?}", guard.watchdog_error());
    assert_eq!(guard.watchdog_error(), None);
    // Its thread has ended: the three renewals were executed, and nothing can follow.
    assert_closes(&mut admin, &watchdog, "after its last renewal");
    assert_eq!(calls(&mut admin, "lock.renew"), 3);
    // Then the lease runs out at its TTL, like any other.
    assert!(
        wait_until(LEASE + EVENT_DEADLINE, || holder(&mut admin, "lock:m")
            .is_none()),
        "the lease did not expire"
    );
    assert_eq!(calls(&mut admin, "lock.renew"), 3);
    assert!(!guard.renew(LEASE).unwrap());
    assert!(guard.is_lost());
}

#[test]
fn zero_renewals_never_renews() {
    let server = Server::start();
    let mut admin = server.conn();
    // Its thread ends at once, and may close its connection before it can be listed.
    let before = client_ids(&mut admin);
    let mut guard = Lock::new(&server.client(), "lock:z", "w1", ms(300))
        .watchdog(Watchdog::new(0))
        .try_acquire()
        .unwrap()
        .unwrap();
    let own = client_id(guard.conn());
    assert!(
        wait_until(EVENT_DEADLINE, || !guard.watchdog_running()),
        "a watchdog allowed no renewal still runs"
    );
    assert!(
        wait_until(EVENT_DEADLINE, || {
            let mut now = client_ids(&mut admin);
            now.remove(&own);
            now == before
        }),
        "the connection of a watchdog allowed no renewal stays open"
    );
    assert_eq!(guard.renewals(), 0);
    assert_eq!(calls(&mut admin, "lock.renew"), 0);
    assert!(
        wait_until(EVENT_DEADLINE, || holder(&mut admin, "lock:z").is_none()),
        "the lease did not expire"
    );
    assert_eq!(calls(&mut admin, "lock.renew"), 0);
}

/// After a manual renewal with a longer TTL, the watchdog renews with that TTL, every third of
/// it: its next two renewals come no sooner than two thirds of the new TTL after the manual
/// one (at the old pace they would come after two thirds of the old TTL).
#[test]
fn follows_a_manual_renewal_ttl() {
    let longer = 2 * LEASE;
    let server = Server::start();
    let monitor = Monitor::start(&server);
    let mut admin = server.conn();
    let mut guard = Lock::new(&server.client(), "lock:f", "w1", LEASE)
        .watchdog(Watchdog::new(1_000))
        .try_acquire()
        .unwrap()
        .unwrap();
    assert!(
        wait_until(EVENT_DEADLINE, || guard.renewals() >= 1),
        "the watchdog did not renew"
    );
    let before = Instant::now();
    assert!(guard.renew(longer).unwrap());
    assert_eq!(guard.ttl(), longer);
    let renews = guard.renewals();
    assert!(
        wait_until(EVENT_DEADLINE, || guard.renewals() >= renews + 2),
        "the watchdog stopped renewing after the manual renewal"
    );
    let waited = before.elapsed();
    assert!(
        waited >= 2 * (longer / 3),
        "two watchdog renewals {waited:?} after the manual one: not paced on the new TTL"
    );
    assert_eq!(
        holder(&mut admin, "lock:f"),
        Some(("w1".into(), guard.token()))
    );
    assert!(!guard.is_lost());
    // What the server executed: the old TTL until the manual renewal, the new one after.
    let commands = monitor.sync(&mut admin);
    let ttls = renew_ttls(&commands, "lock:f");
    let (old, new) = (
        LEASE.as_millis().to_string(),
        longer.as_millis().to_string(),
    );
    let first_new = ttls.iter().position(|t| *t == new).expect("the new TTL");
    assert!(first_new >= 1, "{ttls:?}");
    assert!(ttls[..first_new].iter().all(|t| *t == old), "{ttls:?}");
    assert!(ttls[first_new..].iter().all(|t| *t == new), "{ttls:?}");
    // The manual renewal, then at least the watchdog's first with the new TTL (answered
    // before its second was counted; the second may still be in flight).
    assert!(ttls.len() >= first_new + 2, "{ttls:?}");
    println!("two renewals with the new TTL {waited:?} after the manual one");
}

#[test]
fn reconnects_after_losing_its_connection() {
    let server = Server::start();
    let mut admin = server.conn();
    let clients_before = client_ids(&mut admin);
    let (guard, watchdog) = watched(
        &server,
        &mut admin,
        "lock:c",
        LEASE,
        Watchdog::new(1_000).every(QUICK),
    );
    assert!(
        wait_until(EVENT_DEADLINE, || guard.renewals() >= 1),
        "the watchdog did not renew"
    );
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&watchdog)
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    // The next renewal fails on the closed connection; the watchdog connects again and
    // renews on the new connection.
    let mut known: BTreeSet<String> = client_ids(&mut admin);
    known.extend(clients_before);
    known.insert(watchdog.clone());
    let mut renewing_again = None;
    assert!(
        wait_until(EVENT_DEADLINE, || {
            let new: Vec<String> = client_ids(&mut admin).difference(&known).cloned().collect();
            renewing_again = new.into_iter().find(|id| {
                client_line(&mut admin, id)
                    .is_some_and(|line| line.to_ascii_lowercase().contains("cmd=lock.renew"))
            });
            renewing_again.is_some()
        }),
        "the watchdog did not renew on a new connection (error {:?}, lost {})",
        guard.watchdog_error(),
        guard.is_lost()
    );
    assert_eq!(
        holder(&mut admin, "lock:c"),
        Some(("w1".into(), guard.token())),
        "kept across the reconnection (error {:?})",
        guard.watchdog_error()
    );
    assert!(!guard.is_lost());
    assert!(guard.watchdog_running());
    assert!(
        guard.watchdog_error().is_some(),
        "the lost connection was seen"
    );
    assert!(guard.release().unwrap());
    assert_closes(&mut admin, &renewing_again.unwrap(), "after the release");
}

#[test]
fn misuse_is_refused() {
    let server = Server::start();
    let client = server.client();
    let mut admin = server.conn();
    for config in [
        Watchdog::new(5).every(LEASE),
        Watchdog::new(5).every(Duration::ZERO),
    ] {
        let e = Lock::new(&client, "lock:u", "w1", LEASE)
            .watchdog(config)
            .try_acquire()
            .unwrap_err();
        assert_eq!(e.kind(), redis::ErrorKind::Client, "{e}");
    }
    assert_eq!(
        calls(&mut admin, "lock.acquire"),
        0,
        "refused before sending"
    );
}

#[test]
fn a_stale_watchdog_never_renews_a_newer_grant_of_its_owner() {
    let server = Server::start();
    let mut admin = server.conn();
    let monitor = Monitor::start(&server);
    let (guard, _) = watched(
        &server,
        &mut admin,
        "lock:sw",
        LEASE,
        Watchdog::new(1_000).every(QUICK),
    );
    let t1 = guard.token();
    assert!(
        wait_until(EVENT_DEADLINE, || guard.renewals() >= 1),
        "no renewal"
    );
    // In one step, so that the watchdog's next renewal meets the newer grant: the lease is
    // deleted and the same owner string granted again, for a minute.
    let (_, t2): (i64, u64) = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg("lock:sw")
        .cmd("LOCK.ACQUIRE")
        .arg("lock:sw")
        .arg("w1")
        .arg(60_000)
        .query(&mut admin)
        .unwrap();
    assert!(t2 > t1);
    assert!(
        wait_until(EVENT_DEADLINE, || guard.is_lost()),
        "the watchdog did not learn its grant was gone"
    );
    assert!(wait_until(EVENT_DEADLINE, || !guard.watchdog_running()));
    // Its renewal was refused: the newer grant keeps its minute, not the watchdog's 3 s.
    let status = admin.lock_status("lock:sw").unwrap().unwrap();
    assert_eq!((status.owner.as_str(), status.token), ("w1", t2));
    assert!(
        status.ttl > LEASE,
        "the newer grant was renewed: {status:?}"
    );
    // Dropping the guard releases nothing of the newer grant.
    drop(guard);
    assert_eq!(holder(&mut admin, "lock:sw"), Some(("w1".into(), t2)));
    let commands = monitor.sync(&mut admin);
    let t1 = t1.to_string();
    for c in commands
        .iter()
        .filter(|c| c[0] == "LOCK.RENEW" || c[0] == "LOCK.RELEASE")
    {
        assert_eq!(c[c.len() - 2..], ["TOKEN", t1.as_str()], "{c:?}");
    }
}

/// The lease-loss report: the callback runs once, with the grant and the reason, however many
/// times the loss is seen again (the watchdog's refused renewal, a manual renewal, the
/// release).
#[test]
fn a_lost_lease_is_reported_once() {
    let server = Server::start();
    let mut admin = server.conn();
    let reports = Arc::new(Mutex::new(Vec::<LeaseLost>::new()));
    let seen = Arc::clone(&reports);
    let mut guard = Lock::new(&server.client(), "lock:r", "w1", LEASE)
        .watchdog(Watchdog::new(1_000).every(QUICK))
        .on_lost(move |lost| seen.lock().unwrap().push(lost.clone()))
        .try_acquire()
        .unwrap()
        .unwrap();
    assert!(wait_until(EVENT_DEADLINE, || guard.renewals() >= 1));
    let (_, t2): (i64, u64) = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg("lock:r")
        .cmd("LOCK.ACQUIRE")
        .arg("lock:r")
        .arg("w2")
        .arg(60_000)
        .query(&mut admin)
        .unwrap();
    assert!(
        wait_until(EVENT_DEADLINE, || guard.is_lost()),
        "the watchdog did not learn the lease was lost"
    );
    assert_eq!(guard.lost_reason(), Some(LostReason::Refused));
    assert!(!guard.renew(LEASE).unwrap());
    let token = guard.token();
    assert!(!guard.release().unwrap(), "w2's grant is left alone");
    assert_eq!(holder(&mut admin, "lock:r"), Some(("w2".into(), t2)));
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (
            reports[0].key.as_str(),
            reports[0].owner.as_str(),
            reports[0].token,
            reports[0].reason
        ),
        ("lock:r", "w1", token, LostReason::Refused)
    );
}

/// A hung server (stopped with SIGSTOP: connections open, nothing answered) holds `release`
/// and `Drop` for the lock's I/O timeout, not for a time derived from the TTL (an hour here):
/// stopping a renewal in flight and sending the release take at most one I/O timeout each.
/// What was sent runs once the server continues: the locks end up free.
#[test]
fn a_hung_server_holds_release_and_drop_for_the_io_timeout_only() {
    const IO: Duration = Duration::from_millis(300);
    let hour = Duration::from_secs(3_600);
    let server = Server::start();
    let mut admin = server.conn();
    let lock = |key: &str| {
        Lock::new(&server.client(), key, "w1", hour)
            .io_timeout(IO)
            .watchdog(Watchdog::new(1_000).every(QUICK))
    };
    let released = lock("lock:h1").try_acquire().unwrap().unwrap();
    let dropped = lock("lock:h2").try_acquire().unwrap().unwrap();
    assert!(wait_until(EVENT_DEADLINE, || released.renewals() >= 1
        && dropped.renewals() >= 1));
    let paused = Paused::pause(&server);
    // Each watchdog sends its next renewal into the void and waits for it (QUICK later).
    assert!(wait_until(EVENT_DEADLINE, || released.renewals() >= 2
        && dropped.renewals() >= 2));
    let started = Instant::now();
    let e = released.release().unwrap_err();
    let release_took = started.elapsed();
    assert!(e.is_timeout() || e.is_io_error(), "{e}");
    let started = Instant::now();
    drop(dropped);
    let drop_took = started.elapsed();
    // The bound is two I/O timeouts (600 ms); the margin is for a loaded machine, and
    // anything derived from the hour-long TTL would be far beyond it.
    let bound = 2 * IO + Duration::from_secs(5);
    assert!(
        release_took >= IO,
        "release did wait for its reply: {release_took:?}"
    );
    assert!(release_took < bound, "release took {release_took:?}");
    assert!(drop_took < bound, "drop took {drop_took:?}");
    drop(paused);
    assert!(
        wait_until(EVENT_DEADLINE, || holder(&mut admin, "lock:h1").is_none()
            && holder(&mut admin, "lock:h2").is_none()),
        "the releases sent while the server was stopped did not free the locks: {:?} {:?}",
        holder(&mut admin, "lock:h1"),
        holder(&mut admin, "lock:h2")
    );
    println!("release {release_took:?}, drop {drop_took:?} with a {IO:?} I/O timeout");
}
