//! A Rust client for the redis-fence Redis module, built on the [`redis`] crate.
//!
//! Three layers, each usable alone:
//!
//! - **Commands.** [`FenceCommands`] (sync, on every [`redis::ConnectionLike`]) and
//!   [`AsyncFenceCommands`] (async, on every [`redis::aio::ConnectionLike`]) add one method
//!   per `LOCK.*` and `STOCK.*` command to a connection, as [`redis::Commands`] does for
//!   Redis's own commands. Replies are typed ([`Deduct`], [`Cart`], [`Confirm`],
//!   [`RequestState`], [`RequestDetail`], [`LockStatus`], [`StockInfo`], each a
//!   [`redis::FromRedisValue`]); options are builders ([`DeductOptions`], [`CartOptions`],
//!   [`StockSetOptions`], [`AddOptions`], [`RefundOptions`], [`Events`]).
//! - **Orders with a deadline.** [`DeductOptions::hold`] places an order whose units are held
//!   until a deadline; [`FenceCommands::stock_confirm`] is its payment ([`Confirm::Expired`]
//!   when the deadline won: refund the money), [`FenceCommands::stock_refund`] its
//!   cancellation; an order not paid in time gives its units back by itself, inside Redis, and
//!   an `expire` event goes to its stream.
//! - **Purchase limits.** [`StockSetOptions::limit`] (or [`FenceCommands::stock_limit`]) limits
//!   what each buyer may hold of a sale; [`DeductOptions::buyer`] names the deduction's buyer,
//!   and one that would take them past the limit is [`Deduct::Limit`], typed;
//!   [`FenceCommands::stock_buyer`] tells what a buyer holds.
//! - **Carts.** [`FenceCommands::stock_cart`] deducts several stocks in one step, all or
//!   nothing: [`Cart::Placed`] with what remains in each, or [`Cart::Refused`] naming the item
//!   refused and why ([`CartRefusal`]: `NoKey`, `Stale`, `LedgerFull`, `Limit`, `SoldOut`),
//!   with nothing changed anywhere. [`FenceCommands::stock_cart_confirm`] pays every item at
//!   once ([`Confirm`]), [`FenceCommands::stock_cart_refund`] cancels every item at once. On
//!   Redis Cluster a cart's keys share one hash tag (`{sale}:phone`, `{sale}:case`).
//! - **Locks.** [`Lock`] (threads) and [`AsyncLock`] (tokio) are handles on one lock for one
//!   owner: they acquire a [`LockGuard`] / [`AsyncLockGuard`] that holds the fencing token on
//!   a connection of its own whose every call is bounded by an I/O timeout independent of the
//!   TTL, renews on request or with a bounded [`Watchdog`], reports a lost lease once
//!   ([`LeaseLost`]), and releases when dropped. Renewals and releases name their grant
//!   (`LOCK.RENEW … TOKEN`, `LOCK.RELEASE … TOKEN`), so they never act on a newer grant.
//! - **Order events.** [`orders`] reads the events `STOCK.DEDUCT … EVENTS stream` appends,
//!   with a consumer group: read new and pending entries, acknowledge, claim from a consumer
//!   that died. The order-book application built on it is the `consumer` example.
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_fence_client::{Deduct, DeductOptions, FenceCommands, Lock, Watchdog};
//!
//! # fn main() -> redis::RedisResult<()> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let mut con = client.get_connection()?;
//! con.stock_set("{sku:42}", 100)?;
//!
//! // One handle per lock and owner; owners must be unique per holder.
//! let lock = Lock::new(&client, "{sku:42}:lock", "worker-1", Duration::from_secs(3))
//!     .watchdog(Watchdog::new(60)); // renew every second, 60 times at most
//! let Some(guard) = lock.try_acquire()? else {
//!     return Ok(()); // someone else holds it
//! };
//! let options = DeductOptions::new().id("order-1001").fence(guard.token());
//! match con.stock_deduct("{sku:42}", 1, &options)? {
//!     Deduct::Remaining(left) => println!("sold one, {left} left"),
//!     Deduct::SoldOut => println!("sold out"),
//!     Deduct::Stale => println!("a newer holder took over: this worker's lock had expired"),
//!     Deduct::Limit { .. } => {} // only a deduction with a buyer meets a purchase limit
//! }
//! guard.release()?; // or just drop the guard
//! # Ok(())
//! # }
//! ```
//!
//! An order with a deadline to pay (see the main README's "Unpaid orders"):
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_fence_client::{Confirm, DeductOptions, Events, FenceCommands, RefundOptions};
//!
//! # fn main() -> redis::RedisResult<()> {
//! # let mut con = redis::Client::open("redis://127.0.0.1/")?.get_connection()?;
//! let orders = Events::to("{sku:42}:orders");
//! // Place: one unit held for 15 minutes (a hold needs an id).
//! let place = DeductOptions::new()
//!     .id("order-1002")
//!     .hold(Duration::from_secs(15 * 60))
//!     .events(orders.clone());
//! if con.stock_deduct("{sku:42}", 1, &place)?.remaining().is_none() {
//!     return Ok(()); // sold out (or a stale fence)
//! }
//! // Pay: the payment provider said yes.
//! match con.stock_confirm("{sku:42}", "order-1002")? {
//!     Confirm::Confirmed => {} // the order stands
//!     Confirm::Expired { .. } | Confirm::Refunded => {
//!         // The deadline (or a cancellation) came first: the units are back on sale.
//!         // Refund the customer's money.
//!     }
//!     Confirm::Unknown => {} // no such order in this stock
//! }
//! // Cancel (the customer gives up): the units come back once.
//! con.stock_refund("{sku:42}", "order-1002", &RefundOptions::new().events(orders))?;
//! # Ok(())
//! # }
//! ```
//!
//! An order neither paid nor cancelled by its deadline gives its units back inside Redis, and
//! an `expire` entry goes to its stream: an order consumer cancels the order record on it as on
//! a `refund` (the `consumer` example does).
//!
//! Owners must be unique per holder (a host and process id plus a thread or task id, a
//! UUID...): the module identifies a holder by its owner string only. Within one process the
//! guards enforce it: a second guard for the same server, database, key and owner is refused
//! while the first lives ([`is_owner_in_use`]).
//!
//! Features: `tokio` (on by default) adds [`AsyncFenceCommands`], [`AsyncLock`] and the async
//! order-stream calls.

#![warn(missing_docs)]
// Without `tokio` the crate documentation still names the async items it would have.
#![cfg_attr(not(feature = "tokio"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "tokio")]
mod async_lock;
mod commands;
mod lease;
mod lock;
mod options;
pub mod orders;
mod registry;
mod replies;
mod watchdog;

#[cfg(feature = "tokio")]
pub use async_lock::{AsyncLock, AsyncLockGuard};
#[cfg(feature = "tokio")]
pub use commands::AsyncFenceCommands;
pub use commands::FenceCommands;
pub use lease::{LeaseLost, LostReason, Watchdog};
pub use lock::{Lock, LockGuard, DEFAULT_IO_TIMEOUT};
pub use options::{AddOptions, CartOptions, DeductOptions, Events, RefundOptions, StockSetOptions};
pub use registry::is_owner_in_use;
pub use replies::{
    Cart, CartRefusal, Confirm, Deduct, EntryState, LedgerInfo, LockStatus, PartialCart,
    RequestDetail, RequestState, StockInfo,
};

/// The result type of every call: [`redis::RedisResult`].
pub type Result<T> = redis::RedisResult<T>;

use std::time::Duration;

/// A duration in whole milliseconds, rounded up, so that a non-zero duration never becomes 0
/// (which the module refuses as a TTL and reads as "no limit" as a `WAIT` timeout).
pub(crate) fn millis_ceil(d: Duration) -> u64 {
    let ms = d.as_millis();
    let ms = if d.subsec_nanos() % 1_000_000 != 0 {
        ms + 1
    } else {
        ms
    };
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// A client-side error (a misuse of this crate, not a reply from the server).
pub(crate) fn client_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    /// Handles and guards cross threads and tasks (a guard can be shared as `Arc<LockGuard>`,
    /// and an async guard held across `.await` in a spawned task).
    #[test]
    fn handles_and_guards_are_send_and_sync() {
        send_sync::<Lock>();
        send_sync::<LockGuard>();
        #[cfg(feature = "tokio")]
        {
            send_sync::<AsyncLock>();
            send_sync::<AsyncLockGuard>();
        }
    }

    /// The async calls can run in `tokio::spawn`ed tasks (compiled, not run).
    #[cfg(feature = "tokio")]
    #[allow(dead_code)]
    fn async_calls_are_send(lock: &AsyncLock, mut a: AsyncLockGuard, b: AsyncLockGuard) {
        fn send<T: Send>(_: T) {}
        send(lock.acquire(None));
        send(lock.try_acquire());
        send(a.lost());
        send(a.renew(Duration::from_secs(1)));
        send(b.release());
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis_ceil(Duration::ZERO), 0);
        assert_eq!(millis_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(5)), 5);
        assert_eq!(millis_ceil(Duration::from_micros(5_001)), 6);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
    }
}
