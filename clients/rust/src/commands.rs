//! The extension traits: one method per fence command on any `redis` connection, as
//! [`redis::Commands`] and [`redis::AsyncCommands`] do for Redis's own commands.
//!
//! The commands are built once, by plain functions shared by [`FenceCommands`] and
//! [`AsyncFenceCommands`]; the traits only send them.

use std::time::Duration;

use redis::{Cmd, ConnectionLike, RedisResult};

use crate::millis_ceil;
use crate::options::{AddOptions, CartOptions, DeductOptions, RefundOptions, StockSetOptions};
use crate::replies::{Cart, Confirm, Deduct, LockStatus, RequestDetail, RequestState, StockInfo};

/// `LOCK.ACQUIRE key owner ttl-ms [WAIT timeout-ms]`; `wait` as [`wait_arg`] computes it.
pub(crate) fn acquire_cmd(key: &str, owner: &str, ttl: Duration, wait: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("LOCK.ACQUIRE");
    cmd.arg(key).arg(owner).arg(millis_ceil(ttl));
    if let Some(ms) = wait {
        cmd.arg("WAIT").arg(ms);
    }
    cmd
}

/// The `WAIT` argument for a timeout: `None` for no wait at all (a zero timeout, which is not
/// `WAIT 0`: that waits without limit), `Some(0)` for no limit, else the milliseconds rounded
/// up.
pub(crate) fn wait_arg(timeout: Option<Duration>) -> Option<u64> {
    match timeout {
        Some(t) if t.is_zero() => None,
        Some(t) => Some(millis_ceil(t)),
        None => Some(0),
    }
}

/// `LOCK.RENEW key owner ttl-ms [TOKEN token]`.
pub(crate) fn renew_cmd(key: &str, owner: &str, ttl: Duration, token: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("LOCK.RENEW");
    cmd.arg(key).arg(owner).arg(millis_ceil(ttl));
    if let Some(token) = token {
        cmd.arg("TOKEN").arg(token);
    }
    cmd
}

/// `LOCK.RELEASE key owner [TOKEN token]`.
pub(crate) fn release_cmd(key: &str, owner: &str, token: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("LOCK.RELEASE");
    cmd.arg(key).arg(owner);
    if let Some(token) = token {
        cmd.arg("TOKEN").arg(token);
    }
    cmd
}

fn status_cmd(key: &str) -> Cmd {
    let mut cmd = redis::cmd("LOCK.STATUS");
    cmd.arg(key);
    cmd
}

fn stock_set_cmd(key: &str, quantity: i64, options: &StockSetOptions) -> Cmd {
    let mut cmd = redis::cmd("STOCK.SET");
    cmd.arg(key).arg(quantity).arg(options);
    cmd
}

fn stock_limit_cmd(key: &str, per_buyer: i64) -> Cmd {
    let mut cmd = redis::cmd("STOCK.LIMIT");
    cmd.arg(key).arg(per_buyer);
    cmd
}

fn stock_buyer_cmd(key: &str, buyer_id: &str) -> Cmd {
    let mut cmd = redis::cmd("STOCK.BUYER");
    cmd.arg(key).arg(buyer_id);
    cmd
}

fn stock_add_cmd(key: &str, quantity: i64, options: &AddOptions) -> Cmd {
    let mut cmd = redis::cmd("STOCK.ADD");
    cmd.arg(key).arg(quantity).arg(options);
    cmd
}

fn stock_get_cmd(key: &str) -> Cmd {
    let mut cmd = redis::cmd("STOCK.GET");
    cmd.arg(key);
    cmd
}

fn stock_deduct_cmd(key: &str, quantity: i64, options: &DeductOptions) -> Cmd {
    let mut cmd = redis::cmd("STOCK.DEDUCT");
    cmd.arg(key).arg(quantity).arg(options);
    cmd
}

fn stock_refund_cmd(key: &str, request_id: &str, options: &RefundOptions) -> Cmd {
    let mut cmd = redis::cmd("STOCK.REFUND");
    cmd.arg(key).arg(request_id).arg(options);
    cmd
}

fn stock_request_cmd(key: &str, request_id: &str) -> Cmd {
    let mut cmd = redis::cmd("STOCK.REQUEST");
    cmd.arg(key).arg(request_id);
    cmd
}

fn stock_request_detail_cmd(key: &str, request_id: &str) -> Cmd {
    let mut cmd = stock_request_cmd(key, request_id);
    cmd.arg("DETAIL");
    cmd
}

fn stock_confirm_cmd(key: &str, request_id: &str) -> Cmd {
    let mut cmd = redis::cmd("STOCK.CONFIRM");
    cmd.arg(key).arg(request_id);
    cmd
}

/// `STOCK.CART numkeys key quantity [key quantity …] ID request-id [BUYER …] [HOLD …] [FENCE …]
/// [EVENTS …]`.
fn stock_cart_cmd(items: &[(&str, i64)], request_id: &str, options: &CartOptions) -> Cmd {
    let mut cmd = redis::cmd("STOCK.CART");
    cmd.arg(items.len());
    for &(key, quantity) in items {
        cmd.arg(key).arg(quantity);
    }
    cmd.arg("ID").arg(request_id).arg(options);
    cmd
}

/// `STOCK.CART.REFUND` / `STOCK.CART.CONFIRM numkeys key [key …] request-id`.
fn cart_keys_cmd(command: &str, keys: &[&str], request_id: &str) -> Cmd {
    let mut cmd = redis::cmd(command);
    cmd.arg(keys.len()).arg(keys).arg(request_id);
    cmd
}

fn stock_cart_refund_cmd(keys: &[&str], request_id: &str) -> Cmd {
    cart_keys_cmd("STOCK.CART.REFUND", keys, request_id)
}

fn stock_cart_confirm_cmd(keys: &[&str], request_id: &str) -> Cmd {
    cart_keys_cmd("STOCK.CART.CONFIRM", keys, request_id)
}

fn stock_info_cmd(key: &str) -> Cmd {
    let mut cmd = redis::cmd("STOCK.INFO");
    cmd.arg(key);
    cmd
}

/// The fence module's commands on a synchronous connection ([`redis::Connection`],
/// `redis::cluster::ClusterConnection`, a pooled connection...), with typed replies.
///
/// Implemented for every [`redis::ConnectionLike`]; bring it into scope and call the methods
/// on the connection:
///
/// ```no_run
/// use std::time::Duration;
/// use redis_fence_client::{Deduct, DeductOptions, FenceCommands};
///
/// # fn main() -> redis::RedisResult<()> {
/// let mut con = redis::Client::open("redis://127.0.0.1/")?.get_connection()?;
/// con.stock_set("{sku:42}", 100)?;
/// if let Some(token) = con.lock_acquire("{sku:42}:lock", "worker-1", Duration::from_secs(10))? {
///     let sold = con.stock_deduct("{sku:42}", 1, &DeductOptions::new().id("order-1").fence(token))?;
///     assert_eq!(sold, Deduct::Remaining(99));
///     con.lock_release("{sku:42}:lock", "worker-1", token)?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// Durations are sent in whole milliseconds, rounded up. Error replies the typed results do
/// not cover (bad arguments, a key of another type, ...) and I/O errors come back as
/// [`redis::RedisError`]; match their code with [`fence_core::error::code`].
///
/// For a lock held across work, prefer [`Lock`](crate::Lock): its guard releases on drop,
/// bounds every network call and can renew in the background.
pub trait FenceCommands: ConnectionLike + Sized {
    /// `LOCK.ACQUIRE key owner ttl-ms`: the fencing token when `owner` now holds the lock for
    /// `ttl`, `None` when another owner holds it (or clients are queued for it). When `owner`
    /// already holds the lock, the TTL is reset and the same token returned (a re-acquire).
    fn lock_acquire(&mut self, key: &str, owner: &str, ttl: Duration) -> RedisResult<Option<u64>> {
        acquire_cmd(key, owner, ttl, None).query(self)
    }

    /// `LOCK.ACQUIRE key owner ttl-ms WAIT timeout-ms`: like
    /// [`lock_acquire`](FenceCommands::lock_acquire), but when another owner holds the lock,
    /// waits inside Redis (fairly, without polling) until it is granted or `timeout` passes
    /// (then `None`). `None` waits without limit; `Some(Duration::ZERO)` does not wait.
    ///
    /// The connection's read timeout, if any, must be longer than `timeout`. A client that
    /// gives up on the reply may be granted the lock after it stopped listening, so on an I/O
    /// error (a read timeout included) this sends `LOCK.RELEASE key owner` on the same
    /// connection before it returns the error: Redis runs it once the wait has ended, so a
    /// late grant is released at once. Inside `MULTI`/`EXEC` the module does not wait.
    fn lock_acquire_wait(
        &mut self,
        key: &str,
        owner: &str,
        ttl: Duration,
        timeout: Option<Duration>,
    ) -> RedisResult<Option<u64>> {
        let wait = wait_arg(timeout);
        match acquire_cmd(key, owner, ttl, wait).query(self) {
            Err(e) if wait.is_some() && e.is_io_error() => {
                // The token is unknown: the release names the owner only (owners are unique
                // per holder).
                let _: RedisResult<i64> = release_cmd(key, owner, None).query(self);
                Err(e)
            }
            other => other,
        }
    }

    /// `LOCK.RENEW key owner ttl-ms TOKEN token`: resets the TTL of the grant `token` to `ttl`;
    /// the token, or `None` when that grant has ended (expired, released, or replaced by a
    /// newer grant, even to the same owner string). Never brings back an expired lock.
    fn lock_renew(
        &mut self,
        key: &str,
        owner: &str,
        ttl: Duration,
        token: u64,
    ) -> RedisResult<Option<u64>> {
        renew_cmd(key, owner, ttl, Some(token)).query(self)
    }

    /// `LOCK.RELEASE key owner TOKEN token`: true when the grant `token` was held and no
    /// longer is; false when it had already ended (a newer grant is left alone). When clients
    /// wait for the lock, the first of them is granted it before this returns.
    fn lock_release(&mut self, key: &str, owner: &str, token: u64) -> RedisResult<bool> {
        release_cmd(key, owner, Some(token)).query(self)
    }

    /// `LOCK.STATUS key`: who holds the lock, with which token, for how long, and how many
    /// clients wait; `None` when it is free. Reads the RESP2 and the RESP3 reply.
    fn lock_status(&mut self, key: &str) -> RedisResult<Option<LockStatus>> {
        status_cmd(key).query(self)
    }

    /// `STOCK.SET key quantity`: creates the stock, or starts a new sale: available set to
    /// `quantity`, both ledgers and the buyers cleared, the highest accepted token, the TTL and
    /// the limit per buyer kept. Not safe to resend blindly (a resend after sales began starts
    /// the sale over).
    fn stock_set(&mut self, key: &str, quantity: i64) -> RedisResult<()> {
        stock_set_cmd(key, quantity, &StockSetOptions::new()).query(self)
    }

    /// `STOCK.SET key quantity [LIMIT per-buyer]`: [`stock_set`](FenceCommands::stock_set)
    /// with options; [`StockSetOptions::limit`] sets the new sale's limit per buyer (0 clears it),
    /// without it the stock keeps the limit it has.
    fn stock_set_with(
        &mut self,
        key: &str,
        quantity: i64,
        options: &StockSetOptions,
    ) -> RedisResult<()> {
        stock_set_cmd(key, quantity, options).query(self)
    }

    /// `STOCK.LIMIT key per-buyer`: changes a running sale's limit per buyer without touching
    /// its ledger (0 clears it); true when the stock's limit is now `per_buyer`, false when the
    /// key does not exist (nothing is created). Lowering it keeps what buyers already hold (a
    /// buyer above the new limit cannot buy more until refunds bring them under it). Safe to
    /// resend. A negative value, a plain integer string and a key of another type are errors.
    fn stock_limit(&mut self, key: &str, per_buyer: i64) -> RedisResult<bool> {
        stock_limit_cmd(key, per_buyer).query(self)
    }

    /// `STOCK.BUYER key buyer-id`: the units `buyer_id` holds in this sale (the quantities of
    /// their deducted, held and confirmed entries; holds whose deadline has passed count as
    /// returned): `Some(0)` for a buyer who holds none or never bought, `None` when the key does
    /// not exist. An empty buyer id, a plain integer string and a key of another type are
    /// errors.
    fn stock_buyer(&mut self, key: &str, buyer_id: &str) -> RedisResult<Option<i64>> {
        stock_buyer_cmd(key, buyer_id).query(self)
    }

    /// `STOCK.ADD key quantity [ID restock-id]`: restocks (creating the stock when the key
    /// does not exist); the new available quantity. With an id, a resend adds nothing.
    fn stock_add(&mut self, key: &str, quantity: i64, options: &AddOptions) -> RedisResult<i64> {
        stock_add_cmd(key, quantity, options).query(self)
    }

    /// `STOCK.GET key`: the available quantity, `None` when the key does not exist.
    fn stock_get(&mut self, key: &str) -> RedisResult<Option<i64>> {
        stock_get_cmd(key).query(self)
    }

    /// `STOCK.DEDUCT key quantity [ID …] [BUYER …] [HOLD …] [FENCE …] [EVENTS …]`: takes
    /// `quantity` if that many are available, atomically. A stale `FENCE` token is
    /// [`Deduct::Stale`], and a buyer this deduction would take past the stock's limit per buyer
    /// [`Deduct::Limit`] (with the buyer id the options named, what they hold and the limit),
    /// not errors; other error replies (a bad quantity, a token from the future, a full ledger,
    /// `ID`, `HOLD` or `BUYER` on a plain string, `HOLD` or `BUYER` without `ID`, no `BUYER` on
    /// a stock with a limit, a full buyer table, a key of another type) are errors.
    ///
    /// With [`DeductOptions::hold`] this places an order that must be paid by a deadline:
    /// confirm it with [`stock_confirm`](FenceCommands::stock_confirm), cancel it with
    /// [`stock_refund`](FenceCommands::stock_refund), or let it expire.
    fn stock_deduct(
        &mut self,
        key: &str,
        quantity: i64,
        options: &DeductOptions,
    ) -> RedisResult<Deduct> {
        let reply = self.req_command(&stock_deduct_cmd(key, quantity, options))?;
        Deduct::from_reply_for(reply, options.buyer_id())
    }

    /// `STOCK.REFUND key request-id [EVENTS …]`: returns what the request deducted, exactly
    /// once, whether it was deducted, held (an order cancelled before its deadline) or
    /// confirmed (a paid order cancelled later); the quantity returned, 0 for an unknown,
    /// already refunded or expired id (an expired hold's units came back at its deadline) or a
    /// missing key.
    fn stock_refund(
        &mut self,
        key: &str,
        request_id: &str,
        options: &RefundOptions,
    ) -> RedisResult<i64> {
        stock_refund_cmd(key, request_id, options).query(self)
    }

    /// `STOCK.CONFIRM key request-id`: the payment of a held order. A hold confirmed before
    /// its deadline stays sold for good ([`Confirm::Confirmed`], also for a resend and for an
    /// entry deducted without a hold); a hold whose deadline passed first is
    /// [`Confirm::Expired`] and a refunded one [`Confirm::Refunded`] (the error replies
    /// `EXPIRED` and `REFUNDED`, typed: the units are back on sale, refund the money);
    /// [`Confirm::Unknown`] for an id not in the ledger or a missing key. The deadline and the
    /// confirmation are decided inside Redis in one step: exactly one wins. Safe to resend.
    /// Other error replies (a plain integer string, a key of another type, an empty id) are
    /// errors.
    fn stock_confirm(&mut self, key: &str, request_id: &str) -> RedisResult<Confirm> {
        Confirm::from_reply(self.req_command(&stock_confirm_cmd(key, request_id))?)
    }

    /// `STOCK.CART numkeys key quantity [key quantity …] ID request-id [BUYER …] [HOLD …]
    /// [FENCE …] [EVENTS …]`: deducts every item (`(key, quantity)`, 1 to 256 of them, each key
    /// once) in one step, or none. [`Cart::Placed`] holds what remains in each stock, in the
    /// order of `items`, also for a replay of `request_id` (which deducts nothing again); a
    /// refusal names its item: [`Cart::Refused`] with a [`CartRefusal`](crate::CartRefusal)
    /// (`NoKey`, `Stale`, `LedgerFull`, `Limit`, `SoldOut`), its index from 1 and its key exactly
    /// as given, and nothing changed in any stock. Other error replies (bad arguments, a key
    /// named twice, a key of another type, a plain integer string, no `BUYER` on a stock with a
    /// limit, a request id only some of the stocks know: [`PartialCart`](crate::PartialCart))
    /// are errors.
    ///
    /// Each stock's ledger gets an ordinary entry under `request_id`:
    /// [`stock_cart_confirm`](FenceCommands::stock_cart_confirm) and
    /// [`stock_cart_refund`](FenceCommands::stock_cart_refund) act on every item at once,
    /// [`stock_confirm`](FenceCommands::stock_confirm),
    /// [`stock_refund`](FenceCommands::stock_refund) and
    /// [`stock_request_detail`](FenceCommands::stock_request_detail) on one. On Redis Cluster
    /// every key (and the `EVENTS` stream) must be in one hash slot: give them one hash tag
    /// (`{sale}:phone`, `{sale}:case`), or the server answers `CROSSSLOT`.
    fn stock_cart(
        &mut self,
        items: &[(&str, i64)],
        request_id: &str,
        options: &CartOptions,
    ) -> RedisResult<Cart> {
        let reply = self.req_command(&stock_cart_cmd(items, request_id, options))?;
        Cart::from_reply_for(reply, items.iter().map(|&(key, _)| key))
    }

    /// `STOCK.CART.REFUND numkeys key [key …] request-id`: cancels a cart on all its stocks at
    /// once, all or nothing; the quantity each stock got back, in the order of `keys`, as
    /// [`stock_refund`](FenceCommands::stock_refund) would reply for each (0 for an item already
    /// refunded or expired; all zeros for an id no stock knows, or keys that do not exist). A
    /// request id only some of the stocks know is an error that changes nothing
    /// ([`PartialCart`](crate::PartialCart)), as are bad arguments and a refund that would take
    /// a stock past 2^63-1. Safe to resend.
    fn stock_cart_refund(&mut self, keys: &[&str], request_id: &str) -> RedisResult<Vec<i64>> {
        stock_cart_refund_cmd(keys, request_id).query(self)
    }

    /// `STOCK.CART.CONFIRM numkeys key [key …] request-id`: the payment of a cart placed with a
    /// hold, on all its stocks at once. [`Confirm::Confirmed`] when every item is confirmed
    /// (now or already, or deducted without a hold), [`Confirm::Unknown`] when no stock knows
    /// the id; when an item's hold already ended, [`Confirm::Expired`] (the cart's one deadline
    /// passed first) or [`Confirm::Refunded`] (the cart, or one item alone, was refunded), and
    /// no item is confirmed: refund the money. A request id only some of the stocks know is an
    /// error that changes nothing ([`PartialCart`](crate::PartialCart)). Safe to resend.
    fn stock_cart_confirm(&mut self, keys: &[&str], request_id: &str) -> RedisResult<Confirm> {
        Confirm::from_reply(self.req_command(&stock_cart_confirm_cmd(keys, request_id))?)
    }

    /// `STOCK.REQUEST key request-id`: whether one request still holds units.
    /// [`stock_request_detail`](FenceCommands::stock_request_detail) tells its state.
    fn stock_request(&mut self, key: &str, request_id: &str) -> RedisResult<RequestState> {
        stock_request_cmd(key, request_id).query(self)
    }

    /// `STOCK.REQUEST key request-id DETAIL`: the request's entry in full (state, quantity, a
    /// hold's deadline, the buyer); `None` for an unknown id or a missing key. Reads the RESP2 and the
    /// RESP3 reply. This, not the number a replayed `STOCK.DEDUCT` replies, tells whether an
    /// order still holds its units.
    fn stock_request_detail(
        &mut self,
        key: &str,
        request_id: &str,
    ) -> RedisResult<Option<RequestDetail>> {
        stock_request_detail_cmd(key, request_id).query(self)
    }

    /// `STOCK.INFO key`: the available quantity and the ledger's figures (holds, the limit per
    /// buyer and the number of buyers included); `None` when the key does not exist.
    fn stock_info(&mut self, key: &str) -> RedisResult<Option<StockInfo>> {
        stock_info_cmd(key).query(self)
    }
}

impl<C: ConnectionLike> FenceCommands for C {}

/// The fence module's commands on an asynchronous connection
/// ([`redis::aio::MultiplexedConnection`], `redis::aio::ConnectionManager`, ...), with typed
/// replies: the async twin of [`FenceCommands`], with the same methods and meanings.
///
/// ```no_run
/// use std::time::Duration;
/// use redis_fence_client::{AsyncFenceCommands, DeductOptions};
///
/// # async fn run() -> redis::RedisResult<()> {
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let mut con = client.get_multiplexed_async_connection().await?;
/// if let Some(token) = con.lock_acquire("{sku:42}:lock", "task-7", Duration::from_secs(10)).await? {
///     con.stock_deduct("{sku:42}", 1, &DeductOptions::new().id("order-2").fence(token)).await?;
///     con.lock_release("{sku:42}:lock", "task-7", token).await?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// `LOCK.ACQUIRE … WAIT` blocks the connection it is sent on for everything else (Redis
/// answers a client's commands in order), and a multiplexed connection gives up on a reply
/// after its response timeout (500 ms by default). Send waits on a connection of their own
/// with a response timeout above the wait, or use [`AsyncLock`](crate::AsyncLock), which
/// does both and also releases a late grant when the waiting future is dropped.
#[cfg(feature = "tokio")]
pub trait AsyncFenceCommands: redis::aio::ConnectionLike + Send + Sized {
    /// `LOCK.ACQUIRE key owner ttl-ms`; see [`FenceCommands::lock_acquire`].
    fn lock_acquire<'a>(
        &'a mut self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> redis::RedisFuture<'a, Option<u64>> {
        Box::pin(async move { acquire_cmd(key, owner, ttl, None).query_async(self).await })
    }

    /// `LOCK.ACQUIRE key owner ttl-ms WAIT timeout-ms`; see
    /// [`FenceCommands::lock_acquire_wait`]. On an I/O error (a response timeout included)
    /// `LOCK.RELEASE key owner` is sent on the same connection before the error is returned.
    /// Dropping the future while it waits sends nothing: the server keeps the wait, and a
    /// late grant stays held until its TTL passes ([`AsyncLock`](crate::AsyncLock) releases
    /// it).
    fn lock_acquire_wait<'a>(
        &'a mut self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
        timeout: Option<Duration>,
    ) -> redis::RedisFuture<'a, Option<u64>> {
        Box::pin(async move {
            let wait = wait_arg(timeout);
            match acquire_cmd(key, owner, ttl, wait).query_async(self).await {
                Err(e) if wait.is_some() && e.is_io_error() => {
                    let _: RedisResult<i64> = release_cmd(key, owner, None).query_async(self).await;
                    Err(e)
                }
                other => other,
            }
        })
    }

    /// `LOCK.RENEW key owner ttl-ms TOKEN token`; see [`FenceCommands::lock_renew`].
    fn lock_renew<'a>(
        &'a mut self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
        token: u64,
    ) -> redis::RedisFuture<'a, Option<u64>> {
        Box::pin(async move {
            renew_cmd(key, owner, ttl, Some(token))
                .query_async(self)
                .await
        })
    }

    /// `LOCK.RELEASE key owner TOKEN token`; see [`FenceCommands::lock_release`].
    fn lock_release<'a>(
        &'a mut self,
        key: &'a str,
        owner: &'a str,
        token: u64,
    ) -> redis::RedisFuture<'a, bool> {
        Box::pin(async move { release_cmd(key, owner, Some(token)).query_async(self).await })
    }

    /// `LOCK.STATUS key`; see [`FenceCommands::lock_status`].
    fn lock_status<'a>(&'a mut self, key: &'a str) -> redis::RedisFuture<'a, Option<LockStatus>> {
        Box::pin(async move { status_cmd(key).query_async(self).await })
    }

    /// `STOCK.SET key quantity`; see [`FenceCommands::stock_set`].
    fn stock_set<'a>(&'a mut self, key: &'a str, quantity: i64) -> redis::RedisFuture<'a, ()> {
        Box::pin(async move {
            stock_set_cmd(key, quantity, &StockSetOptions::new())
                .query_async(self)
                .await
        })
    }

    /// `STOCK.SET key quantity [LIMIT …]`; see [`FenceCommands::stock_set_with`].
    fn stock_set_with<'a>(
        &'a mut self,
        key: &'a str,
        quantity: i64,
        options: &'a StockSetOptions,
    ) -> redis::RedisFuture<'a, ()> {
        Box::pin(async move {
            stock_set_cmd(key, quantity, options)
                .query_async(self)
                .await
        })
    }

    /// `STOCK.LIMIT key per-buyer`; see [`FenceCommands::stock_limit`].
    fn stock_limit<'a>(&'a mut self, key: &'a str, per_buyer: i64) -> redis::RedisFuture<'a, bool> {
        Box::pin(async move { stock_limit_cmd(key, per_buyer).query_async(self).await })
    }

    /// `STOCK.BUYER key buyer-id`; see [`FenceCommands::stock_buyer`].
    fn stock_buyer<'a>(
        &'a mut self,
        key: &'a str,
        buyer_id: &'a str,
    ) -> redis::RedisFuture<'a, Option<i64>> {
        Box::pin(async move { stock_buyer_cmd(key, buyer_id).query_async(self).await })
    }

    /// `STOCK.ADD key quantity [ID …]`; see [`FenceCommands::stock_add`].
    fn stock_add<'a>(
        &'a mut self,
        key: &'a str,
        quantity: i64,
        options: &'a AddOptions,
    ) -> redis::RedisFuture<'a, i64> {
        Box::pin(async move {
            stock_add_cmd(key, quantity, options)
                .query_async(self)
                .await
        })
    }

    /// `STOCK.GET key`; see [`FenceCommands::stock_get`].
    fn stock_get<'a>(&'a mut self, key: &'a str) -> redis::RedisFuture<'a, Option<i64>> {
        Box::pin(async move { stock_get_cmd(key).query_async(self).await })
    }

    /// `STOCK.DEDUCT key quantity [ID …] [BUYER …] [HOLD …] [FENCE …] [EVENTS …]`; see
    /// [`FenceCommands::stock_deduct`].
    fn stock_deduct<'a>(
        &'a mut self,
        key: &'a str,
        quantity: i64,
        options: &'a DeductOptions,
    ) -> redis::RedisFuture<'a, Deduct> {
        Box::pin(async move {
            let cmd = stock_deduct_cmd(key, quantity, options);
            Deduct::from_reply_for(self.req_packed_command(&cmd).await?, options.buyer_id())
        })
    }

    /// `STOCK.REFUND key request-id [EVENTS …]`; see [`FenceCommands::stock_refund`].
    fn stock_refund<'a>(
        &'a mut self,
        key: &'a str,
        request_id: &'a str,
        options: &'a RefundOptions,
    ) -> redis::RedisFuture<'a, i64> {
        Box::pin(async move {
            stock_refund_cmd(key, request_id, options)
                .query_async(self)
                .await
        })
    }

    /// `STOCK.REQUEST key request-id`; see [`FenceCommands::stock_request`].
    fn stock_request<'a>(
        &'a mut self,
        key: &'a str,
        request_id: &'a str,
    ) -> redis::RedisFuture<'a, RequestState> {
        Box::pin(async move { stock_request_cmd(key, request_id).query_async(self).await })
    }

    /// `STOCK.CONFIRM key request-id`; see [`FenceCommands::stock_confirm`].
    fn stock_confirm<'a>(
        &'a mut self,
        key: &'a str,
        request_id: &'a str,
    ) -> redis::RedisFuture<'a, Confirm> {
        Box::pin(async move {
            let cmd = stock_confirm_cmd(key, request_id);
            Confirm::from_reply(self.req_packed_command(&cmd).await?)
        })
    }

    /// `STOCK.CART numkeys key quantity […] ID request-id [BUYER …] [HOLD …] [FENCE …]
    /// [EVENTS …]`; see [`FenceCommands::stock_cart`].
    fn stock_cart<'a>(
        &'a mut self,
        items: &'a [(&'a str, i64)],
        request_id: &'a str,
        options: &'a CartOptions,
    ) -> redis::RedisFuture<'a, Cart> {
        Box::pin(async move {
            let cmd = stock_cart_cmd(items, request_id, options);
            let reply = self.req_packed_command(&cmd).await?;
            Cart::from_reply_for(reply, items.iter().map(|&(key, _)| key))
        })
    }

    /// `STOCK.CART.REFUND numkeys key […] request-id`; see
    /// [`FenceCommands::stock_cart_refund`].
    fn stock_cart_refund<'a>(
        &'a mut self,
        keys: &'a [&'a str],
        request_id: &'a str,
    ) -> redis::RedisFuture<'a, Vec<i64>> {
        Box::pin(async move {
            stock_cart_refund_cmd(keys, request_id)
                .query_async(self)
                .await
        })
    }

    /// `STOCK.CART.CONFIRM numkeys key […] request-id`; see
    /// [`FenceCommands::stock_cart_confirm`].
    fn stock_cart_confirm<'a>(
        &'a mut self,
        keys: &'a [&'a str],
        request_id: &'a str,
    ) -> redis::RedisFuture<'a, Confirm> {
        Box::pin(async move {
            let cmd = stock_cart_confirm_cmd(keys, request_id);
            Confirm::from_reply(self.req_packed_command(&cmd).await?)
        })
    }

    /// `STOCK.REQUEST key request-id DETAIL`; see [`FenceCommands::stock_request_detail`].
    fn stock_request_detail<'a>(
        &'a mut self,
        key: &'a str,
        request_id: &'a str,
    ) -> redis::RedisFuture<'a, Option<RequestDetail>> {
        Box::pin(async move {
            stock_request_detail_cmd(key, request_id)
                .query_async(self)
                .await
        })
    }

    /// `STOCK.INFO key`; see [`FenceCommands::stock_info`].
    fn stock_info<'a>(&'a mut self, key: &'a str) -> redis::RedisFuture<'a, Option<StockInfo>> {
        Box::pin(async move { stock_info_cmd(key).query_async(self).await })
    }
}

#[cfg(feature = "tokio")]
impl<C: redis::aio::ConnectionLike + Send + Sized> AsyncFenceCommands for C {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Events;

    fn args(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<other>".to_string(),
            })
            .collect()
    }

    #[test]
    fn wait_arguments() {
        assert_eq!(wait_arg(Some(Duration::ZERO)), None, "no wait, not WAIT 0");
        assert_eq!(wait_arg(None), Some(0), "WAIT 0 waits without limit");
        assert_eq!(wait_arg(Some(Duration::from_micros(1))), Some(1));
        assert_eq!(wait_arg(Some(Duration::from_millis(1500))), Some(1500));
        assert_eq!(
            args(&acquire_cmd("k", "o", Duration::from_secs(3), Some(20))),
            ["LOCK.ACQUIRE", "k", "o", "3000", "WAIT", "20"]
        );
        assert_eq!(
            args(&acquire_cmd("k", "o", Duration::from_nanos(1), None)),
            ["LOCK.ACQUIRE", "k", "o", "1"]
        );
    }

    #[test]
    fn order_flow_commands() {
        assert_eq!(
            args(&stock_confirm_cmd("{s}", "o-1")),
            ["STOCK.CONFIRM", "{s}", "o-1"]
        );
        assert_eq!(
            args(&stock_request_detail_cmd("{s}", "o-1")),
            ["STOCK.REQUEST", "{s}", "o-1", "DETAIL"]
        );
        assert_eq!(
            args(&stock_deduct_cmd(
                "{s}",
                2,
                &DeductOptions::new()
                    .id("o-1")
                    .hold(Duration::from_secs(900))
            )),
            ["STOCK.DEDUCT", "{s}", "2", "ID", "o-1", "HOLD", "900000"]
        );
    }

    #[test]
    fn purchase_limit_commands() {
        assert_eq!(
            args(&stock_set_cmd("{s}", 100, &StockSetOptions::new())),
            ["STOCK.SET", "{s}", "100"]
        );
        assert_eq!(
            args(&stock_set_cmd("{s}", 100, &StockSetOptions::new().limit(2))),
            ["STOCK.SET", "{s}", "100", "LIMIT", "2"]
        );
        assert_eq!(
            args(&stock_limit_cmd("{s}", 0)),
            ["STOCK.LIMIT", "{s}", "0"]
        );
        assert_eq!(
            args(&stock_buyer_cmd("{s}", "user 7")),
            ["STOCK.BUYER", "{s}", "user 7"]
        );
        assert_eq!(
            args(&stock_deduct_cmd(
                "{s}",
                1,
                &DeductOptions::new().id("o-1").buyer("user 7")
            )),
            ["STOCK.DEDUCT", "{s}", "1", "ID", "o-1", "BUYER", "user 7"]
        );
    }

    #[test]
    fn cart_commands() {
        assert_eq!(
            args(&stock_cart_cmd(
                &[("{s}:phone", 1), ("{s}:a case", 2)],
                "order 77",
                &CartOptions::new()
                    .buyer("user 7")
                    .hold(Duration::from_secs(900))
            )),
            [
                "STOCK.CART",
                "2",
                "{s}:phone",
                "1",
                "{s}:a case",
                "2",
                "ID",
                "order 77",
                "BUYER",
                "user 7",
                "HOLD",
                "900000"
            ]
        );
        assert_eq!(
            args(&stock_cart_cmd(&[("k", 3)], "o", &CartOptions::new())),
            ["STOCK.CART", "1", "k", "3", "ID", "o"]
        );
        assert_eq!(
            args(&stock_cart_refund_cmd(&["{s}:phone", "{s}:a case"], "o-1")),
            ["STOCK.CART.REFUND", "2", "{s}:phone", "{s}:a case", "o-1"]
        );
        assert_eq!(
            args(&stock_cart_confirm_cmd(&["{s}:phone"], "o-1")),
            ["STOCK.CART.CONFIRM", "1", "{s}:phone", "o-1"]
        );
    }

    /// The words of a command after its name, as the module's parsers take them.
    fn words(cmd: &Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => panic!("a cursor argument"),
            })
            .collect()
    }

    /// What the cart commands write is what the module's own parsers read back: the items in
    /// order, the id, every option, the keys Redis is told of (the `EVENTS` stream included).
    #[test]
    fn the_module_parses_the_cart_commands() {
        use fence_core::args::{
            cart_key_positions, parse_cart, parse_cart_keys, MaxLen, MAX_OPTION_WORDS,
        };
        use fence_core::error::FenceError;

        let items = [
            ("{s}:phone", 1),
            ("{s}:a case", 2),
            ("{s}:charger", i64::MAX),
        ];
        // The longest cart tail: ID, BUYER, HOLD, FENCE and EVENTS … MAXLEN ~ n, 13 words.
        let options = CartOptions::new()
            .events(Events::to("{s}:orders").maxlen_approx(1000))
            .fence(42)
            .hold(Duration::from_micros(900_000_001))
            .buyer("user 7");
        let cmd = stock_cart_cmd(&items, "order 77", &options);
        let w = words(&cmd);
        let refs: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
        let cart = parse_cart(&refs).unwrap();
        assert_eq!(
            cart.items,
            items
                .iter()
                .map(|&(k, q)| (k.as_bytes(), q))
                .collect::<Vec<_>>()
        );
        assert_eq!(cart.id, b"order 77");
        assert_eq!(cart.options.id, Some(&b"order 77"[..]));
        assert_eq!(cart.options.buyer, Some(&b"user 7"[..]));
        assert_eq!(cart.options.hold, Some(900_001));
        assert_eq!(cart.options.fence, Some(42));
        let events = cart.options.events.unwrap();
        assert_eq!(
            events.maxlen,
            Some(MaxLen {
                approx: true,
                len: 1000
            })
        );
        assert_eq!(w[cart.options_at + events.key_index], b"{s}:orders");
        assert!(w.len() - cart.options_at <= MAX_OPTION_WORDS);
        // Redis is told of every item's key and the stream.
        let keys: Vec<&[u8]> = cart_key_positions(&refs, true)
            .into_iter()
            .map(|i| refs[i])
            .collect();
        assert_eq!(
            keys,
            [
                &b"{s}:phone"[..],
                b"{s}:a case",
                b"{s}:charger",
                b"{s}:orders"
            ]
        );
        // No options: ID only; `MAXLEN =`.
        let plain = words(&stock_cart_cmd(&[("k", 1)], "o", &CartOptions::new()));
        let refs: Vec<&[u8]> = plain.iter().map(Vec::as_slice).collect();
        let cart = parse_cart(&refs).unwrap();
        assert_eq!((cart.items, cart.id), (vec![(&b"k"[..], 1)], &b"o"[..]));
        assert_eq!(
            (cart.options.buyer, cart.options.hold, cart.options.fence),
            (None, None, None)
        );
        let exact = words(&stock_cart_cmd(
            &[("k", 1)],
            "o",
            &CartOptions::new()
                .hold_ms(1)
                .events(Events::to("s").maxlen(0)),
        ));
        let refs: Vec<&[u8]> = exact.iter().map(Vec::as_slice).collect();
        let cart = parse_cart(&refs).unwrap();
        assert_eq!(cart.options.hold, Some(1));
        assert_eq!(
            cart.options.events.unwrap().maxlen,
            Some(MaxLen {
                approx: false,
                len: 0
            })
        );
        // The module refuses what the server must refuse: no items, a key twice, an empty id
        // or buyer, a zero hold.
        let refused = |items: &[(&str, i64)], id: &str, options: &CartOptions| {
            let w = words(&stock_cart_cmd(items, id, options));
            let refs: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
            parse_cart(&refs).map(|_| ()).unwrap_err()
        };
        let none = CartOptions::new();
        assert_eq!(refused(&[], "o", &none), FenceError::NumKeys);
        assert_eq!(
            refused(&[("k", 1), ("k", 2)], "o", &none),
            FenceError::RepeatedKey("k".into())
        );
        assert!(matches!(
            refused(&[("k", 1)], "", &none),
            FenceError::EmptyName(_)
        ));
        assert!(matches!(
            refused(&[("k", 1)], "o", &CartOptions::new().buyer("")),
            FenceError::EmptyName(_)
        ));
        assert!(matches!(
            refused(&[("k", 1)], "o", &CartOptions::new().hold(Duration::ZERO)),
            FenceError::HoldRange { .. }
        ));
        assert!(matches!(
            refused(&[("k", 0)], "o", &none),
            FenceError::Quantity { .. }
        ));
        // STOCK.CART.REFUND and STOCK.CART.CONFIRM: the keys in a row, then the id.
        for cmd in [
            stock_cart_refund_cmd(&["{s}:phone", "{s}:a case"], "order 77"),
            stock_cart_confirm_cmd(&["{s}:phone", "{s}:a case"], "order 77"),
        ] {
            let w = words(&cmd);
            let refs: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
            assert_eq!(
                parse_cart_keys(&refs, "stock.cart.refund"),
                Ok((vec![&b"{s}:phone"[..], b"{s}:a case"], &b"order 77"[..]))
            );
            assert_eq!(cart_key_positions(&refs, false), vec![1, 2]);
        }
        let w = words(&stock_cart_refund_cmd(&["k", "k"], "o"));
        let refs: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
        assert_eq!(
            parse_cart_keys(&refs, "stock.cart.refund"),
            Err(FenceError::RepeatedKey("k".into()))
        );
    }

    #[test]
    fn renew_and_release_name_their_grant() {
        assert_eq!(
            args(&renew_cmd("k", "o", Duration::from_secs(1), Some(9))),
            ["LOCK.RENEW", "k", "o", "1000", "TOKEN", "9"]
        );
        assert_eq!(
            args(&release_cmd("k", "o", Some(9))),
            ["LOCK.RELEASE", "k", "o", "TOKEN", "9"]
        );
        assert_eq!(
            args(&release_cmd("k", "o", None)),
            ["LOCK.RELEASE", "k", "o"]
        );
    }
}
