//! The async API (tokio) against a real server: `AsyncFenceCommands` on a multiplexed
//! connection (purchase limits and carts included), `AsyncLock` and its guard (release, drop, watchdog, lost lease, one guard per
//! owner shared with the sync guards), a dropped `WAIT` future, a hung server, and the async
//! order-stream calls.
//!
//! As in the sync tests, every wait is for an event (a status, a count, a closed connection)
//! with a deadline only a failure exhausts.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{calls, ms, Monitor, Paused, Server, EVENT_DEADLINE};
use redis::aio::MultiplexedConnection;
use redis_fence_client::orders::OrderStream;
use redis_fence_client::{
    is_owner_in_use, AsyncFenceCommands, AsyncLock, Cart, CartOptions, CartRefusal, Confirm,
    Deduct, DeductOptions, EntryState, Events, Lock, LostReason, PartialCart, RefundOptions,
    RequestState, StockSetOptions, Watchdog,
};

const LEASE: Duration = Duration::from_secs(3);
const QUICK: Duration = Duration::from_millis(50);

async fn conn(server: &Server) -> MultiplexedConnection {
    server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("an async connection")
}

/// Polls `f` every 10 ms until it is true; false after `timeout`.
async fn until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(ms(10)).await;
    }
}

async fn holder(con: &mut MultiplexedConnection, key: &str) -> Option<(String, u64)> {
    con.lock_status(key)
        .await
        .expect("LOCK.STATUS")
        .map(|s| (s.owner, s.token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_multiplexed_connection() {
    let server = Server::start();
    let mut con = conn(&server).await;
    con.stock_set("{s}", 10).await.unwrap();
    assert_eq!(con.stock_get("{s}").await.unwrap(), Some(10));
    let t1 = con
        .lock_acquire("{s}:lock", "w1", ms(30_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        con.lock_renew("{s}:lock", "w1", ms(60_000), t1)
            .await
            .unwrap(),
        Some(t1)
    );
    let options = DeductOptions::new()
        .id("o-1")
        .fence(t1)
        .events(Events::to("{s}:orders"));
    assert_eq!(
        con.stock_deduct("{s}", 3, &options).await.unwrap(),
        Deduct::Remaining(7)
    );
    assert_eq!(
        con.stock_request("{s}", "o-1").await.unwrap(),
        RequestState::Deducted(3)
    );
    assert!(con.lock_release("{s}:lock", "w1", t1).await.unwrap());
    let t2 = con
        .lock_acquire_wait("{s}:lock", "w2", ms(30_000), Some(ms(1_000)))
        .await
        .unwrap()
        .unwrap();
    assert!(t2 > t1);
    // The old token is stale for the stock: typed, not an error.
    let stale = DeductOptions::new().fence(t2);
    con.stock_deduct("{s}", 1, &stale).await.unwrap();
    assert_eq!(
        con.stock_deduct("{s}", 1, &DeductOptions::new().fence(t1))
            .await
            .unwrap(),
        Deduct::Stale
    );
    let status = con.lock_status("{s}:lock").await.unwrap().unwrap();
    assert_eq!((status.owner.as_str(), status.token), ("w2", t2));
    assert_eq!(
        con.stock_refund("{s}", "o-1", &RefundOptions::new())
            .await
            .unwrap(),
        3
    );
    let info = con.stock_info("{s}").await.unwrap().unwrap();
    assert_eq!(info.available, 9);
    assert_eq!(info.ledger.unwrap().fence, t2);

    // The async order-stream calls read the deduction's event.
    let orders = OrderStream::new("{s}:orders", "g", "c1");
    orders.create_group_async(&mut con).await.unwrap();
    let new = orders.read_new_async(&mut con, None).await.unwrap();
    assert_eq!(new.len(), 1);
    let event = new[0].event.clone().unwrap();
    assert_eq!(
        (event.kind.as_str(), event.order_key()),
        ("deduct", "o-1".into())
    );
    assert_eq!(event.fence, Some(t1));
    assert_eq!(orders.read_pending_async(&mut con).await.unwrap(), new);
    assert!(orders.ack_async(&mut con, &new[0].id).await.unwrap());
    assert!(orders
        .read_pending_async(&mut con)
        .await
        .unwrap()
        .is_empty());
    let claimed = orders.claim_async(&mut con, ms(0), "0-0").await.unwrap();
    assert!(claimed.deliveries.is_empty() && claimed.next.is_none());
}

/// Purchase limits on the async commands: `stock_set_with`, `stock_limit`, `stock_buyer`, a
/// buyer's deductions, `Deduct::Limit`, the buyer in `DETAIL`, the limit and buyers in
/// `STOCK.INFO`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchase_limits_on_a_multiplexed_connection() {
    let server = Server::start();
    let mut con = conn(&server).await;
    let order = |id: &str| DeductOptions::new().id(id).buyer("user 7");
    con.stock_set_with("{l}", 10, &StockSetOptions::new().limit(1))
        .await
        .unwrap();
    assert_eq!(
        con.stock_deduct("{l}", 1, &order("o-1")).await.unwrap(),
        Deduct::Remaining(9)
    );
    assert_eq!(
        con.stock_deduct("{l}", 1, &order("o-2")).await.unwrap(),
        Deduct::Limit {
            buyer: "user 7".into(),
            holds: 1,
            limit: 1
        }
    );
    assert_eq!(con.stock_buyer("{l}", "user 7").await.unwrap(), Some(1));
    assert_eq!(con.stock_buyer("{l}", "nobody").await.unwrap(), Some(0));
    assert_eq!(con.stock_buyer("{missing}", "user 7").await.unwrap(), None);
    let detail = con
        .stock_request_detail("{l}", "o-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.buyer.as_deref(), Some("user 7"));
    assert!(con.stock_limit("{l}", 2).await.unwrap());
    assert!(!con.stock_limit("{missing}", 2).await.unwrap());
    assert_eq!(
        con.stock_deduct("{l}", 1, &order("o-2")).await.unwrap(),
        Deduct::Remaining(8)
    );
    let ledger = con
        .stock_info("{l}")
        .await
        .unwrap()
        .unwrap()
        .ledger
        .unwrap();
    assert_eq!((ledger.limit, ledger.buyers), (Some(2), 1));
    // A new sale keeps the limit; `no_limit` clears it.
    con.stock_set("{l}", 10).await.unwrap();
    let ledger = con
        .stock_info("{l}")
        .await
        .unwrap()
        .unwrap()
        .ledger
        .unwrap();
    assert_eq!((ledger.limit, ledger.buyers), (Some(2), 0));
    con.stock_set_with("{l}", 10, &StockSetOptions::new().no_limit())
        .await
        .unwrap();
    let ledger = con
        .stock_info("{l}")
        .await
        .unwrap()
        .unwrap()
        .ledger
        .unwrap();
    assert_eq!(ledger.limit, None);
}

/// Carts on the async commands: refused whole (every stock unchanged), placed, replayed,
/// confirmed, refunded; `Expired`-free paths only (the sync tests cover the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_on_a_multiplexed_connection() {
    let server = Server::start();
    let mut con = conn(&server).await;
    let keys = ["{c}:phone", "{c}:a case", "{c}:charger"];
    for (key, n) in keys.iter().zip([100, 500, 1]) {
        con.stock_set(key, n).await.unwrap();
    }
    let place = CartOptions::new()
        .buyer("user 7")
        .hold(Duration::from_secs(900))
        .events(Events::to("{c}:orders"));
    let short = [(keys[0], 1), (keys[1], 1), (keys[2], 2)];
    assert_eq!(
        con.stock_cart(&short, "order-1", &place).await.unwrap(),
        Cart::Refused {
            code: CartRefusal::SoldOut,
            index: 3,
            key: "{c}:charger".into()
        }
    );
    for (key, n) in keys.iter().zip([100, 500, 1]) {
        assert_eq!(con.stock_get(key).await.unwrap(), Some(n), "{key}");
        assert_eq!(
            con.stock_request(key, "order-1").await.unwrap(),
            RequestState::Unknown
        );
    }
    let items = [(keys[0], 1), (keys[1], 1), (keys[2], 1)];
    let placed = con.stock_cart(&items, "order-1", &place).await.unwrap();
    assert_eq!(placed, Cart::Placed(vec![99, 499, 0]));
    assert_eq!(
        con.stock_cart(&items, "order-1", &place).await.unwrap(),
        placed
    );
    assert_eq!(
        con.stock_cart(&[(keys[1], 1), ("{c}:missing", 1)], "order-2", &place)
            .await
            .unwrap(),
        Cart::Refused {
            code: CartRefusal::NoKey,
            index: 2,
            key: "{c}:missing".into()
        }
    );
    assert_eq!(
        con.stock_cart_confirm(&keys, "order-1").await.unwrap(),
        Confirm::Confirmed
    );
    let detail = con
        .stock_request_detail(keys[1], "order-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (detail.state, detail.buyer.as_deref()),
        (EntryState::Confirmed, Some("user 7"))
    );
    assert_eq!(
        con.stock_cart_refund(&keys, "order-1").await.unwrap(),
        vec![1, 1, 1]
    );
    assert_eq!(
        con.stock_cart_refund(&keys, "order-1").await.unwrap(),
        vec![0, 0, 0]
    );
    assert_eq!(
        con.stock_cart_confirm(&keys, "order-1").await.unwrap(),
        Confirm::Refunded
    );
    assert_eq!(
        con.stock_cart_confirm(&keys, "nothing").await.unwrap(),
        Confirm::Unknown
    );
    // A stock that lost the cart's entry (a new sale): a partial cart, an error.
    con.stock_set(keys[0], 100).await.unwrap();
    let e = con.stock_cart_refund(&keys, "order-1").await.unwrap_err();
    assert_eq!(
        PartialCart::from_error(&e).map(|p| (p.index, p.key)),
        Some((2, "{c}:a case".to_string())),
        "{e}"
    );
    let e = con
        .stock_cart(
            &[(keys[0], 1), (keys[0], 1)],
            "order-3",
            &CartOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ERR"), "{e}");
}

/// The order flow on the async commands: place with a hold, pay, cancel, and an order left
/// unpaid whose hold expires (waited for as its `expire` event, not by sleeping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_flow_on_a_multiplexed_connection() {
    let server = Server::start();
    let mut con = conn(&server).await;
    con.stock_set("{a}", 10).await.unwrap();
    let place = |id: &str, hold: Duration| {
        DeductOptions::new()
            .id(id)
            .hold(hold)
            .events(Events::to("{a}:orders"))
    };
    let ten_minutes = Duration::from_secs(600);
    assert_eq!(
        con.stock_deduct("{a}", 1, &place("paid", ten_minutes))
            .await
            .unwrap(),
        Deduct::Remaining(9)
    );
    let detail = con
        .stock_request_detail("{a}", "paid")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((detail.state, detail.quantity), (EntryState::Held, 1));
    let deadline = detail.deadline.expect("a deadline");
    let ledger = con
        .stock_info("{a}")
        .await
        .unwrap()
        .unwrap()
        .ledger
        .unwrap();
    assert_eq!((ledger.held, ledger.held_units), (1, 1));
    assert_eq!(ledger.next_deadline, Some(deadline));
    assert_eq!(
        con.stock_confirm("{a}", "paid").await.unwrap(),
        Confirm::Confirmed
    );
    assert_eq!(
        con.stock_request_detail("{a}", "paid")
            .await
            .unwrap()
            .map(|d| (d.state, d.deadline)),
        Some((EntryState::Confirmed, None))
    );
    assert_eq!(
        con.stock_deduct("{a}", 2, &place("cancelled", ten_minutes))
            .await
            .unwrap(),
        Deduct::Remaining(7)
    );
    assert_eq!(
        con.stock_refund("{a}", "cancelled", &RefundOptions::new())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        con.stock_confirm("{a}", "cancelled").await.unwrap(),
        Confirm::Refunded
    );
    assert_eq!(
        con.stock_confirm("{a}", "nobody").await.unwrap(),
        Confirm::Unknown
    );
    assert_eq!(
        con.stock_request_detail("{a}", "nobody").await.unwrap(),
        None
    );

    // Left unpaid: the module returns the units at the deadline and writes the expire event.
    assert_eq!(
        con.stock_deduct("{a}", 4, &place("unpaid", ms(30)))
            .await
            .unwrap(),
        Deduct::Remaining(5)
    );
    let orders = OrderStream::new("{a}:orders", "g", "c1");
    orders.create_group_async(&mut con).await.unwrap();
    // Read the stream until the expire entry comes (blocking reads of 100 ms).
    let mut seen = Vec::new();
    let deadline = Instant::now() + EVENT_DEADLINE;
    let mut expired = false;
    while !expired && Instant::now() < deadline {
        let new = orders
            .read_new_async(&mut con, Some(ms(100)))
            .await
            .unwrap();
        seen.extend(new.into_iter().filter_map(|d| d.event));
        expired = seen.iter().any(|e| e.kind == "expire");
    }
    assert!(
        expired,
        "no expire event after {EVENT_DEADLINE:?}: {seen:?}"
    );
    let kinds: Vec<(&str, String)> = seen
        .iter()
        .map(|e| (e.kind.as_str(), e.order_key()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("deduct", "paid".to_string()),
            ("deduct", "cancelled".to_string()),
            ("deduct", "unpaid".to_string()),
            ("expire", "unpaid".to_string())
        ]
    );
    let expire = &seen[3];
    assert_eq!((expire.quantity, expire.remaining), (Some(4), Some(9)));
    assert_eq!(
        con.stock_request("{a}", "unpaid").await.unwrap(),
        RequestState::Refunded
    );
    assert_eq!(
        con.stock_request_detail("{a}", "unpaid")
            .await
            .unwrap()
            .map(|d| (d.state, d.quantity)),
        Some((EntryState::Expired, 4))
    );
    assert!(matches!(
        con.stock_confirm("{a}", "unpaid").await.unwrap(),
        Confirm::Expired { at: Some(_) }
    ));
    assert_eq!(con.stock_get("{a}").await.unwrap(), Some(9));
    let ledger = con
        .stock_info("{a}")
        .await
        .unwrap()
        .unwrap()
        .ledger
        .unwrap();
    assert_eq!(
        (ledger.deducted, ledger.held, ledger.next_deadline),
        (1, 0, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_releases_on_release_and_on_drop() {
    let server = Server::start();
    let client = server.client();
    let mut admin = conn(&server).await;
    let lock = AsyncLock::new(&client, "lock:a", "w1", ms(30_000));
    let guard = lock.try_acquire().await.unwrap().expect("free");
    assert_eq!(
        holder(&mut admin, "lock:a").await,
        Some(("w1".into(), guard.token()))
    );
    assert!(AsyncLock::new(&client, "lock:a", "w2", ms(30_000))
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    assert!(guard.release().await.unwrap());
    assert_eq!(holder(&mut admin, "lock:a").await, None);

    let guard = lock.try_acquire().await.unwrap().expect("free again");
    drop(guard);
    assert!(
        until(EVENT_DEADLINE, || async {
            holder(&mut conn(&server).await, "lock:a").await.is_none()
        })
        .await,
        "dropping the guard did not release"
    );
    // The claim ends with the release: the owner may take a guard again.
    let deadline = Instant::now() + EVENT_DEADLINE;
    let guard = loop {
        match lock.try_acquire().await {
            Ok(Some(guard)) => break guard,
            Err(e) if is_owner_in_use(&e) && Instant::now() < deadline => {
                tokio::time::sleep(ms(10)).await;
            }
            other => panic!("the owner could not take a guard again: {other:?}"),
        }
    };
    // Dropped on a thread outside the runtime: released on the runtime it was acquired on.
    std::thread::spawn(move || drop(guard)).join().unwrap();
    assert!(
        until(EVENT_DEADLINE, || async {
            holder(&mut conn(&server).await, "lock:a").await.is_none()
        })
        .await,
        "a guard dropped outside the runtime did not release"
    );
}

/// One guard per owner, across the sync and async APIs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_guard_for_the_same_owner_is_refused() {
    let server = Server::start();
    let client = server.client();
    let lock = AsyncLock::new(&client, "lock:o", "w1", ms(30_000));
    let first = lock.try_acquire().await.unwrap().unwrap();
    let e = lock.try_acquire().await.unwrap_err();
    assert!(is_owner_in_use(&e), "{e}");
    let sync_lock = Lock::new(&client, "lock:o", "w1", ms(30_000));
    let e = tokio::task::spawn_blocking(move || sync_lock.try_acquire().map(|g| g.is_some()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(is_owner_in_use(&e), "{e}");
    assert!(first.release().await.unwrap());
    assert!(lock.try_acquire().await.unwrap().is_some());
}

/// A `WAIT` future dropped while it waits (here by `select!`): the lock, granted to it later,
/// is released at once by the release queued behind the wait, and the owner's claim ends
/// once that release is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_wait_future_releases_a_late_grant() {
    let server = Server::start();
    let client = server.client();
    let mut admin = conn(&server).await;
    let t1 = admin
        .lock_acquire("lock:w", "w1", ms(30_000))
        .await
        .unwrap()
        .unwrap();
    let lock = AsyncLock::new(&client, "lock:w", "w2", ms(30_000));
    let mut waiting = Box::pin(lock.acquire(Some(3 * EVENT_DEADLINE)));
    let mut watcher = conn(&server).await;
    let queued = async {
        loop {
            let status = watcher.lock_status("lock:w").await.unwrap();
            if status.is_some_and(|s| s.waiters == 1) {
                return;
            }
            tokio::time::sleep(ms(5)).await;
        }
    };
    tokio::select! {
        r = &mut waiting => panic!("the wait ended before w1 released: {r:?}"),
        () = queued => {}
        () = tokio::time::sleep(EVENT_DEADLINE) => panic!("w2 never queued"),
    }
    drop(waiting);
    let monitor = Monitor::start(&server);
    // w1's release grants the lock to the abandoned waiter; its queued release frees it.
    assert!(admin.lock_release("lock:w", "w1", t1).await.unwrap());
    assert!(
        until(EVENT_DEADLINE, || {
            let mut admin = admin.clone();
            async move { holder(&mut admin, "lock:w").await.is_none() }
        })
        .await,
        "the grant to the dropped future is still held: {:?}",
        holder(&mut admin, "lock:w").await
    );
    let mut sync_admin = server.conn();
    let commands = monitor.sync(&mut sync_admin);
    let releases: Vec<&Vec<String>> = commands.iter().filter(|c| c[0] == "LOCK.RELEASE").collect();
    assert_eq!(releases.len(), 2, "{commands:?}");
    assert_eq!(releases[1], &vec!["LOCK.RELEASE", "lock:w", "w2"]);
    // The owner's claim ends once the release is answered.
    assert!(
        until(EVENT_DEADLINE, || async {
            matches!(lock.try_acquire().await, Ok(Some(_)))
        })
        .await
    );
}

/// The async watchdog keeps a lease alive past its TTL, learns it was lost (`lost()`, the
/// callback once), stops, and its guard's release leaves the new holder alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_renews_and_reports_a_lost_lease_once() {
    let server = Server::start();
    let client = server.client();
    let mut admin = conn(&server).await;
    let reports = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&reports);
    let lock = AsyncLock::new(&client, "lock:k", "w1", LEASE)
        .watchdog(Watchdog::new(10_000).every(QUICK))
        .on_lost(move |lost| {
            assert_eq!(lost.reason, LostReason::Refused);
            seen.fetch_add(1, Ordering::SeqCst);
        });
    let mut guard = lock.try_acquire().await.unwrap().unwrap();
    let granted = Instant::now();
    assert!(guard.watchdog_running());
    // Held past its TTL: renewed, never lapsed (a lapse would change the token or free it).
    while granted.elapsed() < LEASE + LEASE / 2 {
        assert_eq!(
            holder(&mut admin, "lock:k").await,
            Some(("w1".into(), guard.token())),
            "lapsed after {:?} ({} renewals, error {:?})",
            granted.elapsed(),
            guard.renewals(),
            guard.watchdog_error()
        );
        tokio::time::sleep(ms(100)).await;
    }
    assert!(guard.renewals() >= 3);
    // A manual renewal goes through the same gate.
    assert!(guard.renew(LEASE).await.unwrap());
    // The lease is lost: deleted and granted to w2 in one step.
    let (_, t2): (i64, u64) = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg("lock:k")
        .cmd("LOCK.ACQUIRE")
        .arg("lock:k")
        .arg("w2")
        .arg(60_000)
        .query_async(&mut admin)
        .await
        .unwrap();
    let reason = tokio::time::timeout(EVENT_DEADLINE, guard.lost())
        .await
        .expect("the loss was not reported");
    assert_eq!(reason, LostReason::Refused);
    assert!(guard.is_lost());
    assert!(
        until(EVENT_DEADLINE, || async { !guard.watchdog_running() }).await,
        "the watchdog still runs"
    );
    let renews = calls(&mut server.conn(), "lock.renew");
    assert!(!guard.renew(LEASE).await.unwrap(), "lost stays lost");
    assert_eq!(
        calls(&mut server.conn(), "lock.renew"),
        renews,
        "not even asked"
    );
    assert!(!guard.release().await.unwrap());
    assert_eq!(holder(&mut admin, "lock:k").await, Some(("w2".into(), t2)));
    assert_eq!(reports.load(Ordering::SeqCst), 1);
}

/// A hung server holds the async release for the I/O timeouts, not the hour-long TTL; a
/// dropped guard's release runs in the background and frees the lock once the server
/// continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_holds_release_for_the_io_timeout_only() {
    const IO: Duration = Duration::from_millis(300);
    let server = Server::start();
    let client = server.client();
    let lock = |key: &str| {
        AsyncLock::new(&client, key, "w1", Duration::from_secs(3_600))
            .io_timeout(IO)
            .watchdog(Watchdog::new(1_000).every(QUICK))
    };
    let released = lock("lock:h1").try_acquire().await.unwrap().unwrap();
    let dropped = lock("lock:h2").try_acquire().await.unwrap().unwrap();
    assert!(
        until(EVENT_DEADLINE, || async {
            released.renewals() >= 1 && dropped.renewals() >= 1
        })
        .await
    );
    let paused = Paused::pause(&server);
    assert!(
        until(EVENT_DEADLINE, || async {
            released.renewals() >= 2 && dropped.renewals() >= 2
        })
        .await
    );
    let started = Instant::now();
    let e = released.release().await.unwrap_err();
    let took = started.elapsed();
    assert!(e.is_timeout() || e.is_io_error(), "{e}");
    // Two I/O timeouts at most (600 ms); the margin is for a loaded machine.
    assert!(
        took >= IO && took < 2 * IO + Duration::from_secs(5),
        "release took {took:?}"
    );
    let started = Instant::now();
    drop(dropped);
    assert!(started.elapsed() < IO, "drop does not wait for the network");
    drop(paused);
    let admin = conn(&server).await;
    assert!(
        until(EVENT_DEADLINE, || {
            let mut admin = admin.clone();
            async move {
                holder(&mut admin, "lock:h1").await.is_none()
                    && holder(&mut admin, "lock:h2").await.is_none()
            }
        })
        .await,
        "the locks were not freed once the server continued"
    );
    println!("release {took:?} with a {IO:?} I/O timeout");
}

/// After `release().await` returns, or once a dropped guard's background release has run,
/// the watchdog task has stopped: the server executed no `LOCK.RENEW` after the
/// `LOCK.RELEASE`, and a second owner who takes the lock keeps it.
async fn no_renewal_after(key: &str, drop_it: bool) {
    let server = Server::start();
    let monitor = Monitor::start(&server);
    let client = server.client();
    let mut admin = conn(&server).await;
    let guard = AsyncLock::new(&client, key, "w1", LEASE)
        .watchdog(Watchdog::new(10_000).every(QUICK))
        .try_acquire()
        .await
        .unwrap()
        .unwrap();
    assert!(until(EVENT_DEADLINE, || async { guard.renewals() >= 2 }).await);
    if drop_it {
        drop(guard);
        assert!(
            until(EVENT_DEADLINE, || {
                let mut admin = admin.clone();
                async move { holder(&mut admin, key).await.is_none() }
            })
            .await,
            "the dropped guard's release did not run"
        );
    } else {
        assert!(guard.release().await.unwrap());
    }
    let second = AsyncLock::new(&client, key, "w2", ms(60_000))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    let mut sync_admin = server.conn();
    let renews = calls(&mut sync_admin, "lock.renew");
    // Ten would-be renewal periods more: nothing comes.
    tokio::time::sleep(10 * QUICK).await;
    assert_eq!(calls(&mut sync_admin, "lock.renew"), renews);
    assert_eq!(
        holder(&mut admin, key).await,
        Some(("w2".into(), second.token()))
    );
    let commands = monitor.sync(&mut sync_admin);
    common::assert_no_renew_after_release(&commands, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_stops_before_release() {
    no_renewal_after("lock:r", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_stops_before_a_dropped_guard_releases() {
    no_renewal_after("lock:d", true).await;
}
