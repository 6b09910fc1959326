//! The lock state machine: who holds a lock, with which token, and what acquire, renew and
//! release decide. Expiry is Redis's key expiry, so a lease that exists here is live.

/// A held lock: its owner and the fencing token of the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: u64,
    pub owner: Box<[u8]>,
}

impl Lease {
    /// A new lease for `owner` with `token`.
    pub fn new(owner: &[u8], token: u64) -> Self {
        Self {
            token,
            owner: owner.into(),
        }
    }

    /// Whether `owner` holds this lease.
    pub fn is_held_by(&self, owner: &[u8]) -> bool {
        *self.owner == *owner
    }

    /// Bytes of memory this lease uses beyond the key itself.
    pub fn mem_usage(&self) -> usize {
        std::mem::size_of::<Self>() + self.owner.len()
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
pub fn decide_acquire(current: Option<&Lease>, owner: &[u8], waiters: usize) -> Acquire {
    match current {
        Some(lease) if lease.is_held_by(owner) => Acquire::Reacquire(lease.token),
        None if waiters == 0 => Acquire::Grant,
        _ => Acquire::Contended,
    }
}

/// Decides a renew: the holder's token when `owner` holds the lock, else `None`.
/// A renew never creates a lease, so an expired lock stays free.
pub fn decide_renew(current: Option<&Lease>, owner: &[u8]) -> Option<u64> {
    current.filter(|l| l.is_held_by(owner)).map(|l| l.token)
}

/// Decides a release: true when `owner` holds the lock and it must be freed.
pub fn decide_release(current: Option<&Lease>, owner: &[u8]) -> bool {
    current.is_some_and(|l| l.is_held_by(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_table() {
        let held = Lease::new(b"a", 7);
        assert_eq!(decide_acquire(None, b"a", 0), Acquire::Grant);
        assert_eq!(decide_acquire(Some(&held), b"a", 0), Acquire::Reacquire(7));
        assert_eq!(decide_acquire(Some(&held), b"b", 0), Acquire::Contended);
        // Waiters come first, even for a free lock; the holder may still re-acquire.
        assert_eq!(decide_acquire(None, b"a", 1), Acquire::Contended);
        assert_eq!(decide_acquire(Some(&held), b"b", 3), Acquire::Contended);
        assert_eq!(decide_acquire(Some(&held), b"a", 3), Acquire::Reacquire(7));
    }

    #[test]
    fn renew_table() {
        let held = Lease::new(b"a", 7);
        assert_eq!(decide_renew(None, b"a"), None);
        assert_eq!(decide_renew(Some(&held), b"a"), Some(7));
        assert_eq!(decide_renew(Some(&held), b"b"), None);
    }

    #[test]
    fn release_table() {
        let held = Lease::new(b"a", 7);
        assert!(!decide_release(None, b"a"));
        assert!(decide_release(Some(&held), b"a"));
        assert!(!decide_release(Some(&held), b"b"));
    }

    #[test]
    fn owners_compare_as_bytes() {
        let held = Lease::new(b"A", 1);
        assert!(!held.is_held_by(b"a"));
        assert!(!held.is_held_by(b"A "));
    }
}
