//! The lock state machine: who holds a lock, with which token, and what acquire, renew and
//! release decide. Expiry is Redis's key expiry, so a lease that exists is live. How a lease
//! is stored (one block Redis keeps) is the FFI layer's business; the decisions here see it as
//! a `LeaseView`.

/// A held lock, as the decisions see it: the owner and the fencing token of the grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseView<'a> {
    pub owner: &'a [u8],
    pub token: u64,
}

impl LeaseView<'_> {
    /// Whether `owner` holds this lease (owners compare as bytes).
    pub fn is_held_by(&self, owner: &[u8]) -> bool {
        self.owner == owner
    }
}

/// What `LOCK.ACQUIRE` does with the lock as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is free: grant it with a new token.
    Grant,
    /// The caller holds it already: reset the TTL, keep this token.
    Reacquire(u64),
    /// Another owner holds it: nil.
    Contended,
}

/// Decides an acquire by `owner` given the current lease, if any, and the number of clients
/// waiting for the lock. Nobody jumps the queue: while clients wait, a free lock is theirs.
pub fn decide_acquire(current: Option<LeaseView<'_>>, owner: &[u8], waiters: usize) -> Acquire {
    match current {
        Some(lease) if lease.is_held_by(owner) => Acquire::Reacquire(lease.token),
        None if waiters == 0 => Acquire::Grant,
        _ => Acquire::Contended,
    }
}

/// Decides a renew: the holder's token when `owner` holds the lock, else `None`.
/// A renew never creates a lease, so an expired lock stays free.
pub fn decide_renew(current: Option<LeaseView<'_>>, owner: &[u8]) -> Option<u64> {
    current.filter(|l| l.is_held_by(owner)).map(|l| l.token)
}

/// `decide_renew` or `decide_release` narrowed to one grant: with `token`, the lease must be
/// that grant too, so a stale guard of the same owner never acts on a newer grant.
pub fn held_as(current: Option<LeaseView<'_>>, owner: &[u8], token: Option<u64>) -> Option<u64> {
    decide_renew(current, owner).filter(|t| token.is_none_or(|want| *t == want))
}

/// Decides a release: true when `owner` holds the lock and it must be freed.
pub fn decide_release(current: Option<LeaseView<'_>>, owner: &[u8]) -> bool {
    current.is_some_and(|l| l.is_held_by(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD: LeaseView<'static> = LeaseView {
        owner: b"a",
        token: 7,
    };

    #[test]
    fn acquire_table() {
        assert_eq!(decide_acquire(None, b"a", 0), Acquire::Grant);
        assert_eq!(decide_acquire(Some(HELD), b"a", 0), Acquire::Reacquire(7));
        assert_eq!(decide_acquire(Some(HELD), b"b", 0), Acquire::Contended);
        // Waiters come first, even for a free lock; the holder may still re-acquire.
        assert_eq!(decide_acquire(None, b"a", 1), Acquire::Contended);
        assert_eq!(decide_acquire(Some(HELD), b"b", 3), Acquire::Contended);
        assert_eq!(decide_acquire(Some(HELD), b"a", 3), Acquire::Reacquire(7));
    }

    #[test]
    fn renew_table() {
        assert_eq!(decide_renew(None, b"a"), None);
        assert_eq!(decide_renew(Some(HELD), b"a"), Some(7));
        assert_eq!(decide_renew(Some(HELD), b"b"), None);
    }

    #[test]
    fn release_table() {
        assert_eq!(held_as(Some(HELD), b"a", None), Some(7));
        assert_eq!(held_as(Some(HELD), b"a", Some(7)), Some(7));
        assert_eq!(held_as(Some(HELD), b"a", Some(6)), None);
        assert_eq!(held_as(Some(HELD), b"b", Some(7)), None);
        assert_eq!(held_as(None, b"a", Some(7)), None);
        assert!(!decide_release(None, b"a"));
        assert!(decide_release(Some(HELD), b"a"));
        assert!(!decide_release(Some(HELD), b"b"));
    }

    #[test]
    fn owners_compare_as_bytes() {
        let held = LeaseView {
            owner: b"A",
            token: 1,
        };
        assert!(!held.is_held_by(b"a"));
        assert!(!held.is_held_by(b"A "));
    }
}
