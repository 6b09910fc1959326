//! Client helpers for the redis-fence Redis module, built on the [`redis`] crate.
//!
//! - [`Lock`] takes a lock with `LOCK.ACQUIRE` and returns a [`LockGuard`] that holds the
//!   fencing token, renews on request, releases with `LOCK.RELEASE` when dropped, and can run a
//!   bounded [`Watchdog`] that renews the lease in the background. Renewals and releases carry
//!   the guard's token (`TOKEN`), so they never act on a newer grant of the same owner.
//! - [`Stock`] wraps the `STOCK.*` commands with typed replies: [`Deduct`] tells a deduction
//!   from a sold-out stock and from a stale fencing token, [`RequestState`] tells what the
//!   ledger knows of one order.
//! - [`orders`] turns the order events of `STOCK.DEDUCT … EVENTS stream` into orders: a
//!   consumer-group consumer that creates each order exactly once across crashes and refunds
//!   the ones it rejects.
//!
//! Every function works on any [`redis::ConnectionLike`] (such as a [`redis::Connection`]) and
//! returns [`redis::RedisResult`]: error replies from the server that the
//! typed results do not cover, and I/O errors, come back as [`redis::RedisError`].
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_fence_client::{Deduct, Lock, Stock, Watchdog};
//!
//! # fn main() -> redis::RedisResult<()> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let mut conn = client.get_connection()?;
//! Stock::set(&mut conn, "{sku:42}", 100)?;
//!
//! let Some(mut guard) = Lock::acquire(&mut conn, "{sku:42}:lock", "worker-1", Duration::from_secs(3))?
//! else {
//!     return Ok(()); // someone else holds it
//! };
//! // Keep the lease alive while the work runs: a renewal every second, for about a minute
//! // at most.
//! guard.start_watchdog(&client, Watchdog::new(60))?;
//! let token = guard.token();
//! match Stock::deduct(guard.conn(), "{sku:42}", 1, Some("order-1001"), Some(token))? {
//!     Deduct::Remaining(left) => println!("sold one, {left} left"),
//!     Deduct::SoldOut => println!("sold out"),
//!     Deduct::Stale => println!("a newer holder took over: this worker's lock had expired"),
//! }
//! guard.release()?; // or just drop the guard
//! # Ok(())
//! # }
//! ```
//!
//! Owners must be unique per holder (a process id plus a thread or task id, a UUID...): the
//! module identifies a holder by its owner string, so two holders sharing an owner share the
//! lock.

#![warn(missing_docs)]

mod lock;
pub mod orders;
mod stock;
mod watchdog;

pub use lock::{Lock, LockGuard, LockStatus};
pub use stock::{Deduct, RequestState, Stock};
pub use watchdog::Watchdog;

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

    #[test]
    fn millis_round_up() {
        assert_eq!(millis_ceil(Duration::ZERO), 0);
        assert_eq!(millis_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(5)), 5);
        assert_eq!(millis_ceil(Duration::from_micros(5_001)), 6);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
    }
}
