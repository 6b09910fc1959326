//! The second-guard rule: in one process, at most one live guard per (server, database, key,
//! owner).
//!
//! The module knows a holder by its owner string only: a second `LOCK.ACQUIRE` by the same
//! owner is a re-acquire that returns the same token, and one release frees the lock for
//! both. Two guards of one owner would both believe they hold the lock alone, and dropping
//! either would free it under the other. So a guard claims its (server, database, key, owner)
//! here before it sends anything, and keeps the claim until its release has been sent; a
//! second claim is refused with an error ([`is_owner_in_use`]).
//!
//! This covers one process. Owners must still be unique across processes (a host name and
//! process id plus a task id, a UUID...), which no client can check.

use std::collections::BTreeSet;
use std::sync::Mutex;

use redis::{ConnectionInfo, RedisError};

/// The description of the error a second guard for the same owner gets.
const OWNER_IN_USE: &str = "this owner already holds this lock through a live guard in this \
     process: use that guard, or drop it first";

static CLAIMED: Mutex<BTreeSet<Claim>> = Mutex::new(BTreeSet::new());

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    server: String,
    db: i64,
    key: String,
    owner: String,
}

/// A claim on (server, database, key, owner), released when dropped.
#[derive(Debug)]
pub(crate) struct Registration(Claim);

impl Registration {
    /// Claims `owner` of `key` on the server `info` names; an error when a live guard of this
    /// process holds the claim.
    pub(crate) fn claim(
        info: &ConnectionInfo,
        key: &str,
        owner: &str,
    ) -> Result<Registration, RedisError> {
        let claim = Claim {
            server: info.addr().to_string(),
            db: info.redis_settings().db(),
            key: key.to_string(),
            owner: owner.to_string(),
        };
        let mut claimed = CLAIMED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !claimed.insert(claim.clone()) {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                OWNER_IN_USE,
                format!("owner {owner:?} of {key:?}"),
            )));
        }
        Ok(Registration(claim))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        CLAIMED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.0);
    }
}

/// True for the error [`Lock::try_acquire`](crate::Lock::try_acquire) and its kin return when
/// the owner already holds the lock through another live guard of this process (see
/// [`Lock`](crate::Lock), "One guard per owner").
pub fn is_owner_in_use(error: &RedisError) -> bool {
    error.kind() == redis::ErrorKind::Client && error.to_string().contains(OWNER_IN_USE)
}

#[cfg(test)]
mod tests {
    use redis::IntoConnectionInfo;

    use super::*;

    #[test]
    fn one_claim_per_server_db_key_and_owner() {
        let a = "redis://127.0.0.1:7001/0".into_connection_info().unwrap();
        let b = "redis://127.0.0.1:7002/0".into_connection_info().unwrap();
        let a1 = "redis://127.0.0.1:7001/1".into_connection_info().unwrap();
        let first = Registration::claim(&a, "k", "o").unwrap();
        let e = Registration::claim(&a, "k", "o").unwrap_err();
        assert!(is_owner_in_use(&e), "{e}");
        // Another owner, key, database or server is another claim.
        let _other_owner = Registration::claim(&a, "k", "p").unwrap();
        let _other_key = Registration::claim(&a, "k2", "o").unwrap();
        let _other_db = Registration::claim(&a1, "k", "o").unwrap();
        let _other_server = Registration::claim(&b, "k", "o").unwrap();
        drop(first);
        let _again = Registration::claim(&a, "k", "o").unwrap();
        assert!(!is_owner_in_use(&RedisError::from((
            redis::ErrorKind::Client,
            "something else"
        ))));
    }
}
