//! `STOCK.*`: [`Stock`] and its typed replies [`Deduct`] and [`RequestState`].

use fence_core::error::code;
use redis::ConnectionLike;

use crate::Result;

/// The stock commands of the fence module: an available quantity that is checked and deducted
/// in one atomic step, a ledger of request ids for idempotent deductions and refunds, and the
/// highest fencing token accepted.
///
/// A namespace: it has no values. Quantities are integers from 0 to 2^63-1; the server refuses
/// others with an error.
pub enum Stock {}

/// The outcome of [`Stock::deduct`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Deduct {
    /// The quantity was deducted, or the request id had already deducted (a replay, which
    /// deducts nothing); the quantity now available.
    Remaining(i64),
    /// Fewer than the quantity asked for are available, or the key does not exist; nothing
    /// changed. A request id refused this way may be retried later.
    SoldOut,
    /// The fencing token is below the highest one this stock has accepted: a newer lock holder
    /// exists, and this caller must stop. Nothing changed.
    Stale,
}

impl Deduct {
    /// The quantity available after a successful deduction (or replay).
    pub fn remaining(self) -> Option<i64> {
        match self {
            Deduct::Remaining(n) => Some(n),
            Deduct::SoldOut | Deduct::Stale => None,
        }
    }
}

/// What a stock's ledger knows of one request id ([`Stock::request`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// The request deducted this quantity (at least 1), not refunded.
    Held(i64),
    /// The request deducted and was refunded; its id stays spent.
    Refunded,
    /// The id is not in the ledger (never deducted, or refused for lack of stock), or the key
    /// does not exist.
    Unknown,
}

impl Stock {
    /// `STOCK.SET key quantity`: creates the stock, or starts a new sale on it: available set
    /// to `quantity`, ledger cleared, highest accepted token kept.
    pub fn set<C: ConnectionLike>(conn: &mut C, key: &str, quantity: i64) -> Result<()> {
        redis::cmd("STOCK.SET")
            .arg(key)
            .arg(quantity)
            .query::<()>(conn)
    }

    /// `STOCK.ADD key quantity`: restocks (creating the stock when the key does not exist);
    /// the new available quantity.
    pub fn add<C: ConnectionLike>(conn: &mut C, key: &str, quantity: i64) -> Result<i64> {
        redis::cmd("STOCK.ADD").arg(key).arg(quantity).query(conn)
    }

    /// `STOCK.GET key`: the available quantity, `None` when the key does not exist.
    pub fn get<C: ConnectionLike>(conn: &mut C, key: &str) -> Result<Option<i64>> {
        redis::cmd("STOCK.GET").arg(key).query(conn)
    }

    /// `STOCK.DEDUCT key quantity [ID request_id] [FENCE fence]`: takes `quantity` if that many
    /// are available, atomically.
    ///
    /// - `request_id` makes it idempotent: a retry with the same id deducts nothing and
    ///   replies the current quantity as [`Deduct::Remaining`].
    /// - `fence` is a lock's fencing token ([`LockGuard::token`](crate::LockGuard::token)): a
    ///   token below the highest this stock has accepted gets [`Deduct::Stale`].
    ///
    /// Other error replies are errors: a bad quantity, a token more than 24 hours ahead of the
    /// server's clock, a full ledger, `ID` or `FENCE` on a plain-string stock, a key of another
    /// type.
    pub fn deduct<C: ConnectionLike>(
        conn: &mut C,
        key: &str,
        quantity: i64,
        request_id: Option<&str>,
        fence: Option<u64>,
    ) -> Result<Deduct> {
        let mut cmd = redis::cmd("STOCK.DEDUCT");
        cmd.arg(key).arg(quantity);
        if let Some(id) = request_id {
            cmd.arg("ID").arg(id);
        }
        if let Some(token) = fence {
            cmd.arg("FENCE").arg(token);
        }
        match cmd.query::<Option<i64>>(conn) {
            Ok(Some(remaining)) => Ok(Deduct::Remaining(remaining)),
            Ok(None) => Ok(Deduct::SoldOut),
            Err(e) if e.code() == Some(code::STALE) => Ok(Deduct::Stale),
            Err(e) => Err(e),
        }
    }

    /// `STOCK.REFUND key request_id`: returns what the request deducted to the stock, exactly
    /// once; the quantity returned, 0 for an unknown or already refunded id or a missing key.
    pub fn refund<C: ConnectionLike>(conn: &mut C, key: &str, request_id: &str) -> Result<i64> {
        redis::cmd("STOCK.REFUND")
            .arg(key)
            .arg(request_id)
            .query(conn)
    }

    /// `STOCK.REQUEST key request_id`: the state of one order in the ledger.
    pub fn request<C: ConnectionLike>(
        conn: &mut C,
        key: &str,
        request_id: &str,
    ) -> Result<RequestState> {
        let held: Option<i64> = redis::cmd("STOCK.REQUEST")
            .arg(key)
            .arg(request_id)
            .query(conn)?;
        Ok(match held {
            None => RequestState::Unknown,
            Some(0) => RequestState::Refunded,
            Some(n) => RequestState::Held(n),
        })
    }
}
