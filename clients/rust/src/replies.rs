//! The typed replies of the fence commands, each a [`FromRedisValue`]: [`Deduct`],
//! [`RequestState`], [`LockStatus`], [`StockInfo`].
//!
//! Every conversion is pure (a [`Value`] in, a type out), so it reads the RESP2 and the RESP3
//! forms alike and is unit-tested without a server.

use std::time::Duration;

use fence_core::error::code;
use redis::{FromRedisValue, ParsingError, RedisResult, Value};

/// The outcome of `STOCK.DEDUCT` ([`FenceCommands::stock_deduct`](crate::FenceCommands::stock_deduct)).
///
/// As a [`FromRedisValue`], it reads an integer as [`Remaining`](Deduct::Remaining), nil as
/// [`SoldOut`](Deduct::SoldOut) and a `STALE` error reply as [`Stale`](Deduct::Stale). A
/// plain `query::<Deduct>()` turns every error reply into an `Err` before the conversion
/// runs, so a stale token comes back as an error there; the extension traits' `stock_deduct`
/// reads the raw reply and returns `Ok(Deduct::Stale)`.
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

    /// Reads a raw reply: a `STALE` error reply is [`Deduct::Stale`], any other error reply
    /// an `Err` that keeps its code.
    pub(crate) fn from_reply(reply: Value) -> RedisResult<Deduct> {
        if let Value::ServerError(e) = &reply {
            if e.code() == code::STALE {
                return Ok(Deduct::Stale);
            }
        }
        Ok(Deduct::from_redis_value(reply.extract_error()?)?)
    }
}

impl FromRedisValue for Deduct {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match v {
            Value::Nil => Ok(Deduct::SoldOut),
            Value::ServerError(e) if e.code() == code::STALE => Ok(Deduct::Stale),
            v => Ok(Deduct::Remaining(i64::from_redis_value(v)?)),
        }
    }
}

/// What a stock's ledger knows of one request id (`STOCK.REQUEST`).
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

impl FromRedisValue for RequestState {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(match Option::<i64>::from_redis_value(v)? {
            None => RequestState::Unknown,
            Some(0) => RequestState::Refunded,
            Some(n) => RequestState::Held(n),
        })
    }
}

/// What `LOCK.STATUS` reports of a held lock (a free lock replies nil: `Option<LockStatus>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatus {
    /// The holder.
    pub owner: String,
    /// The holder's fencing token.
    pub token: u64,
    /// The time left before the lock expires, as the server counts it (whole milliseconds);
    /// zero for a lock without expiry (after a `PERSIST`).
    pub ttl: Duration,
    /// How many clients wait for the lock in `LOCK.ACQUIRE … WAIT`.
    pub waiters: u64,
}

impl FromRedisValue for LockStatus {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (mut owner, mut token, mut ttl, mut waiters) = (None, None, None, 0);
        for (name, value) in field_pairs(v, "LOCK.STATUS")? {
            match name.as_str() {
                "owner" => owner = Some(String::from_redis_value(value)?),
                "token" => token = Some(u64::from_redis_value(value)?),
                "ttl" => ttl = Some(i64::from_redis_value(value)?),
                "waiters" => waiters = u64::from_redis_value(value)?,
                _ => {} // a field added by a later module version
            }
        }
        match (owner, token, ttl) {
            (Some(owner), Some(token), Some(ttl)) => Ok(LockStatus {
                owner,
                token,
                ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
                waiters,
            }),
            _ => Err("LOCK.STATUS replied without owner, token or ttl".into()),
        }
    }
}

/// What `STOCK.INFO` reports of a stock (a missing key replies nil: `Option<StockInfo>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StockInfo {
    /// The quantity available.
    pub available: i64,
    /// The ledger's figures; `None` for a plain integer string, which has no ledger.
    pub ledger: Option<LedgerInfo>,
}

/// The ledger part of [`StockInfo`] (a stock created by `STOCK.SET` or `STOCK.ADD`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerInfo {
    /// The total deducted and not refunded since the sale started.
    pub deducted: i64,
    /// Request ids in the ledger, refunded ones included.
    pub requests: u64,
    /// The highest fencing token accepted, 0 for none.
    pub fence: u64,
    /// Restock ids (`STOCK.ADD … ID`) in the restock ledger.
    pub restocks: u64,
}

impl FromRedisValue for StockInfo {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let mut available = None;
        let (mut deducted, mut requests, mut fence, mut restocks) = (None, None, None, None);
        for (name, value) in field_pairs(v, "STOCK.INFO")? {
            match name.as_str() {
                "available" => available = Some(i64::from_redis_value(value)?),
                "deducted" => deducted = Some(i64::from_redis_value(value)?),
                "requests" => requests = Some(u64::from_redis_value(value)?),
                "fence" => fence = Some(u64::from_redis_value(value)?),
                "restocks" => restocks = Some(u64::from_redis_value(value)?),
                _ => {} // a field added by a later module version
            }
        }
        let available = available.ok_or("STOCK.INFO replied without available")?;
        let ledger = match (deducted, requests, fence) {
            (Some(deducted), Some(requests), Some(fence)) => Some(LedgerInfo {
                deducted,
                requests,
                fence,
                restocks: restocks.unwrap_or(0),
            }),
            (None, None, None) => None,
            _ => return Err("STOCK.INFO replied part of the ledger's fields".into()),
        };
        Ok(StockInfo { available, ledger })
    }
}

/// The field/value pairs of a RESP3 map or a RESP2 flat array, names as text.
fn field_pairs(v: Value, command: &str) -> Result<Vec<(String, Value)>, ParsingError> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        other => return Err(format!("{command} replied {other:?}").into()),
    };
    pairs
        .into_iter()
        .map(|(k, v)| Ok((String::from_redis_value(k)?, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// An error reply as the parser reads it off the wire.
    fn error_reply(text: &str) -> Value {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).expect("an error reply")
    }

    fn stale_reply() -> Value {
        error_reply(&fence_core::error::stale(1, 2))
    }

    #[test]
    fn deduct_replies() {
        assert_eq!(
            Deduct::from_redis_value(Value::Int(7)).unwrap(),
            Deduct::Remaining(7)
        );
        assert_eq!(
            Deduct::from_redis_value(Value::Nil).unwrap(),
            Deduct::SoldOut
        );
        assert_eq!(
            Deduct::from_redis_value(stale_reply()).unwrap(),
            Deduct::Stale
        );
        assert_eq!(Deduct::from_reply(stale_reply()).unwrap(), Deduct::Stale);
        assert_eq!(
            Deduct::from_reply(Value::Int(0)).unwrap(),
            Deduct::Remaining(0)
        );
        let e = Deduct::from_reply(error_reply(fence_core::error::TOKEN_FROM_FUTURE)).unwrap_err();
        assert_eq!(e.code(), Some(code::ERR), "{e}");
        assert!(Deduct::from_redis_value(bulk("x")).is_err());
        assert_eq!(Deduct::Remaining(3).remaining(), Some(3));
        assert_eq!(Deduct::Stale.remaining(), None);
    }

    #[test]
    fn request_states() {
        let r = |v| RequestState::from_redis_value(v).unwrap();
        assert_eq!(r(Value::Nil), RequestState::Unknown);
        assert_eq!(r(Value::Int(0)), RequestState::Refunded);
        assert_eq!(r(Value::Int(4)), RequestState::Held(4));
    }

    #[test]
    fn lock_status_resp2_and_resp3() {
        let expected = LockStatus {
            owner: "w1".into(),
            token: 42,
            ttl: Duration::from_millis(900),
            waiters: 2,
        };
        let flat = Value::Array(vec![
            bulk("owner"),
            bulk("w1"),
            bulk("token"),
            Value::Int(42),
            bulk("ttl"),
            Value::Int(900),
            bulk("waiters"),
            Value::Int(2),
            bulk("later-field"),
            Value::Int(1),
        ]);
        assert_eq!(LockStatus::from_redis_value(flat).unwrap(), expected);
        let map = Value::Map(vec![
            (bulk("owner"), bulk("w1")),
            (bulk("token"), Value::Int(42)),
            (bulk("ttl"), Value::Int(900)),
            (bulk("waiters"), Value::Int(2)),
        ]);
        assert_eq!(LockStatus::from_redis_value(map).unwrap(), expected);
        assert_eq!(
            Option::<LockStatus>::from_redis_value(Value::Nil).unwrap(),
            None
        );
        assert!(LockStatus::from_redis_value(Value::Int(1)).is_err());
        assert!(
            LockStatus::from_redis_value(Value::Array(vec![bulk("owner"), bulk("w1")])).is_err()
        );
        // A persisted lock reports ttl -1.
        let persisted = Value::Array(vec![
            bulk("owner"),
            bulk("w1"),
            bulk("token"),
            Value::Int(1),
            bulk("ttl"),
            Value::Int(-1),
        ]);
        assert_eq!(
            LockStatus::from_redis_value(persisted).unwrap().ttl,
            Duration::ZERO
        );
    }

    #[test]
    fn stock_info_of_a_stock_and_a_plain_string() {
        let stock = Value::Map(vec![
            (bulk("available"), Value::Int(8)),
            (bulk("deducted"), Value::Int(2)),
            (bulk("requests"), Value::Int(1)),
            (bulk("fence"), Value::Int(0)),
            (bulk("restocks"), Value::Int(3)),
        ]);
        assert_eq!(
            StockInfo::from_redis_value(stock).unwrap(),
            StockInfo {
                available: 8,
                ledger: Some(LedgerInfo {
                    deducted: 2,
                    requests: 1,
                    fence: 0,
                    restocks: 3
                })
            }
        );
        let plain = Value::Array(vec![bulk("available"), Value::Int(-4)]);
        assert_eq!(
            StockInfo::from_redis_value(plain).unwrap(),
            StockInfo {
                available: -4,
                ledger: None
            }
        );
        let partial = Value::Array(vec![
            bulk("available"),
            Value::Int(1),
            bulk("deducted"),
            Value::Int(1),
        ]);
        assert!(StockInfo::from_redis_value(partial).is_err());
        assert!(StockInfo::from_redis_value(Value::Array(vec![])).is_err());
    }
}
