//! The FIFO of clients waiting for a lock, per key. Plain Rust, generic over the handle that
//! stands for a blocked client, so the queue rules are unit-tested without Redis.

use std::collections::{HashMap, VecDeque};

/// A key in one logical database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId {
    pub db: i32,
    pub name: Box<[u8]>,
}

impl KeyId {
    /// The key `name` in database `db`.
    pub fn new(db: i32, name: &[u8]) -> Self {
        Self {
            db,
            name: name.into(),
        }
    }
}

/// One client waiting for a lock.
#[derive(Debug)]
pub struct Waiter<H> {
    /// Unique for the life of the process; timers refer to a waiter by it.
    pub id: u64,
    pub owner: Box<[u8]>,
    pub ttl_ms: i64,
    /// The blocked client.
    pub handle: H,
    /// The timer that ends the wait, if the wait is bounded.
    pub timer: Option<u64>,
}

/// A pending re-check of a key: our sequence number, Redis's timer id, the due time (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRecheck {
    pub seq: u64,
    pub timer: u64,
    pub due_ms: i64,
}

#[derive(Debug)]
struct Queue<H> {
    waiters: VecDeque<Waiter<H>>,
    /// At most one pending re-check.
    recheck: Option<PendingRecheck>,
}

/// Every key's queue of waiters.
#[derive(Debug)]
pub struct WaitQueues<H> {
    queues: HashMap<KeyId, Queue<H>>,
    next_id: u64,
}

impl<H> Default for WaitQueues<H> {
    fn default() -> Self {
        Self {
            queues: HashMap::new(),
            next_id: 1,
        }
    }
}

impl<H> WaitQueues<H> {
    /// Adds a waiter at the end of `key`'s queue; returns its id.
    pub fn push(&mut self, key: &KeyId, owner: &[u8], ttl_ms: i64, handle: H) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let queue = self.queues.entry(key.clone()).or_insert_with(|| Queue {
            waiters: VecDeque::new(),
            recheck: None,
        });
        queue.waiters.push_back(Waiter {
            id,
            owner: owner.into(),
            ttl_ms,
            handle,
            timer: None,
        });
        id
    }

    /// Records the timer that ends waiter `id`'s wait.
    pub fn set_timer(&mut self, key: &KeyId, id: u64, timer: u64) {
        if let Some(w) = self
            .queues
            .get_mut(key)
            .and_then(|q| q.waiters.iter_mut().find(|w| w.id == id))
        {
            w.timer = Some(timer);
        }
    }

    /// How many clients wait for `key`.
    pub fn len(&self, key: &KeyId) -> usize {
        self.queues.get(key).map_or(0, |q| q.waiters.len())
    }

    /// How many clients wait, over every key.
    pub fn total(&self) -> usize {
        self.queues.values().map(|q| q.waiters.len()).sum()
    }

    /// Whether anybody waits for any key.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Whether `key` has a queue (waiters, or a pending re-check).
    #[cfg(test)]
    pub fn contains(&self, key: &KeyId) -> bool {
        self.queues.contains_key(key)
    }

    /// Takes the first waiter of `key`.
    pub fn pop_front(&mut self, key: &KeyId) -> Option<Waiter<H>> {
        let queue = self.queues.get_mut(key)?;
        let w = queue.waiters.pop_front();
        self.drop_if_idle(key);
        w
    }

    /// Puts a waiter back at the head of `key`'s queue (a hand-off that could not happen).
    pub fn push_front(&mut self, key: &KeyId, waiter: Waiter<H>) {
        let queue = self.queues.entry(key.clone()).or_insert_with(|| Queue {
            waiters: VecDeque::new(),
            recheck: None,
        });
        queue.waiters.push_front(waiter);
    }

    /// Removes waiter `id` of `key` (timed out or disconnected).
    pub fn remove(&mut self, key: &KeyId, id: u64) -> Option<Waiter<H>> {
        let queue = self.queues.get_mut(key)?;
        let pos = queue.waiters.iter().position(|w| w.id == id)?;
        let w = queue.waiters.remove(pos);
        self.drop_if_idle(key);
        w
    }

    /// Removes the waiter whose handle matches `is_it`, wherever it waits.
    pub fn remove_by(&mut self, mut is_it: impl FnMut(&H) -> bool) -> Option<(KeyId, Waiter<H>)> {
        let (key, pos) = self.queues.iter().find_map(|(k, q)| {
            q.waiters
                .iter()
                .position(|w| is_it(&w.handle))
                .map(|p| (k.clone(), p))
        })?;
        let w = self.queues.get_mut(&key)?.waiters.remove(pos)?;
        self.drop_if_idle(&key);
        Some((key, w))
    }

    /// Takes every waiter of `key`.
    pub fn drain(&mut self, key: &KeyId) -> Vec<Waiter<H>> {
        let out = self
            .queues
            .get_mut(key)
            .map(|q| q.waiters.drain(..).collect())
            .unwrap_or_default();
        self.drop_if_idle(key);
        out
    }

    /// Takes, in queue order, every waiter of `key` whose owner is `owner` (the holder's own
    /// queued calls, answered as re-acquires once it holds the lock).
    pub fn drain_owner(&mut self, key: &KeyId, owner: &[u8]) -> Vec<Waiter<H>> {
        let Some(queue) = self.queues.get_mut(key) else {
            return Vec::new();
        };
        let (same, rest): (VecDeque<_>, VecDeque<_>) =
            queue.waiters.drain(..).partition(|w| &*w.owner == owner);
        queue.waiters = rest;
        self.drop_if_idle(key);
        same.into()
    }

    /// The keys with waiters in database `db` (every database when `db` is None).
    pub fn keys(&self, db: Option<i32>) -> Vec<KeyId> {
        self.queues
            .keys()
            .filter(|k| db.is_none_or(|d| k.db == d))
            .cloned()
            .collect()
    }

    /// Decides whether a re-check of `key` due at `due_ms` must be scheduled: yes when the
    /// key has waiters and no re-check is pending at or before `due_ms`. Returns the pending
    /// timer that the new one replaces, if any.
    pub fn needs_recheck(&self, key: &KeyId, due_ms: i64) -> Option<Option<u64>> {
        let queue = self.queues.get(key)?;
        if queue.waiters.is_empty() {
            return None;
        }
        match queue.recheck {
            Some(r) if r.due_ms <= due_ms => None,
            Some(r) => Some(Some(r.timer)),
            None => Some(None),
        }
    }

    /// Records the pending re-check of `key`.
    pub fn set_recheck(&mut self, key: &KeyId, recheck: PendingRecheck) {
        if let Some(q) = self.queues.get_mut(key) {
            q.recheck = Some(recheck);
        }
    }

    /// Forgets re-check `seq` of `key` (it fired); a newer one stays.
    pub fn clear_recheck(&mut self, key: &KeyId, seq: u64) {
        if let Some(q) = self.queues.get_mut(key) {
            if q.recheck.is_some_and(|r| r.seq == seq) {
                q.recheck = None;
            }
        }
        self.drop_if_idle(key);
    }

    fn drop_if_idle(&mut self, key: &KeyId) {
        if self
            .queues
            .get(key)
            .is_some_and(|q| q.waiters.is_empty() && q.recheck.is_none())
        {
            self.queues.remove(key);
        }
    }
}

/// What a waited-for key holds when it is looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Nothing: free to grant.
    Free,
    /// A lock, which expires at this Unix-ms instant (-1: never).
    Held { expire_at: i64 },
    /// Another type: the waiters can never get a lock there.
    Other,
}

/// What the server allows when a timer looks at a waited-for key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    pub is_master: bool,
    /// Clients' writes are paused (CLIENT PAUSE WRITE, FAILOVER): Redis neither runs writes
    /// nor deletes expired keys, so nothing may be granted.
    pub writes_paused: bool,
}

/// How often a waited-for key is looked at while writes are paused.
pub const PAUSE_RECHECK_MS: i64 = 10;

/// What a timer's look at a waited-for key leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recheck {
    /// Nothing to do (nobody waits, or this is not a master: waiters were answered when it
    /// stopped being one).
    Nothing,
    /// Look again at this Unix-ms instant.
    Again(i64),
    /// Hand the key to the first waiter, if this node may create it (on a cluster: it serves
    /// the key's slot and is not migrating it away); else every waiter is told to retry.
    HandOff,
    /// The key holds another type: every waiter gets WRONGTYPE.
    FailAll,
}

/// Decides a timer's re-check of a key with `waiters` waiting, at `now_ms`.
pub fn decide_recheck(waiters: usize, server: Server, key: KeyState, now_ms: i64) -> Recheck {
    if waiters == 0 || !server.is_master {
        return Recheck::Nothing;
    }
    if server.writes_paused {
        return Recheck::Again(now_ms.saturating_add(PAUSE_RECHECK_MS));
    }
    match key {
        KeyState::Free => Recheck::HandOff,
        KeyState::Held { expire_at } if expire_at >= 0 => {
            Recheck::Again(expire_at.saturating_add(1))
        }
        // A lock without expiry (PERSIST): a keyspace event (DEL, RENAME...) brings us back.
        KeyState::Held { .. } => Recheck::Nothing,
        KeyState::Other => Recheck::FailAll,
    }
}

/// What a hand-off does with the first waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// Grant it the lock.
    Grant,
    /// Its TTL is past a since-lowered `fence.max-ttl-ms`: refuse it with that error and serve
    /// the next.
    RefuseTtl { max: i64 },
    /// Taken meanwhile (never by a newcomer: they queue): put the waiter back, look again at
    /// the holder's expiry.
    Requeue,
    /// Another type: this waiter and every other get WRONGTYPE.
    WrongType,
}

/// Decides what the first waiter, who asked for `ttl_ms`, gets from `key`.
pub fn decide_hand_off(key: KeyState, ttl_ms: i64, max_ttl_ms: i64) -> HandOff {
    match key {
        KeyState::Free if ttl_ms > max_ttl_ms => HandOff::RefuseTtl { max: max_ttl_ms },
        KeyState::Free => HandOff::Grant,
        KeyState::Held { .. } => HandOff::Requeue,
        KeyState::Other => HandOff::WrongType,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: Server = Server {
        is_master: true,
        writes_paused: false,
    };

    #[test]
    fn recheck_table() {
        let paused = Server {
            writes_paused: true,
            ..MASTER
        };
        let replica = Server {
            is_master: false,
            ..MASTER
        };
        assert_eq!(
            decide_recheck(0, MASTER, KeyState::Free, 5),
            Recheck::Nothing
        );
        assert_eq!(
            decide_recheck(1, replica, KeyState::Free, 5),
            Recheck::Nothing
        );
        assert_eq!(
            decide_recheck(1, paused, KeyState::Free, 5),
            Recheck::Again(5 + PAUSE_RECHECK_MS)
        );
        assert_eq!(
            decide_recheck(1, MASTER, KeyState::Free, 5),
            Recheck::HandOff
        );
        assert_eq!(
            decide_recheck(2, MASTER, KeyState::Held { expire_at: 100 }, 5),
            Recheck::Again(101)
        );
        assert_eq!(
            decide_recheck(2, MASTER, KeyState::Held { expire_at: -1 }, 5),
            Recheck::Nothing
        );
        assert_eq!(
            decide_recheck(1, MASTER, KeyState::Other, 5),
            Recheck::FailAll
        );
    }

    #[test]
    fn hand_off_table() {
        assert_eq!(decide_hand_off(KeyState::Free, 100, 1000), HandOff::Grant);
        assert_eq!(
            decide_hand_off(KeyState::Free, 600_000, 1000),
            HandOff::RefuseTtl { max: 1000 }
        );
        assert_eq!(
            decide_hand_off(KeyState::Held { expire_at: 9 }, 100, 1000),
            HandOff::Requeue
        );
        assert_eq!(
            decide_hand_off(KeyState::Other, 100, 1000),
            HandOff::WrongType
        );
    }

    fn k(name: &str) -> KeyId {
        KeyId::new(0, name.as_bytes())
    }

    #[test]
    fn first_in_first_out() {
        let mut q = WaitQueues::default();
        let a = q.push(&k("l"), b"a", 10, 'a');
        let b = q.push(&k("l"), b"b", 10, 'b');
        assert!(a < b);
        assert_eq!(q.len(&k("l")), 2);
        assert_eq!(q.pop_front(&k("l")).map(|w| w.handle), Some('a'));
        assert_eq!(q.pop_front(&k("l")).map(|w| w.handle), Some('b'));
        assert!(q.pop_front(&k("l")).is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn the_same_owners_calls_leave_together_in_order() {
        let mut q = WaitQueues::default();
        q.push(&k("l"), b"b", 10, 'x');
        q.push(&k("l"), b"a", 10, 'y');
        q.push(&k("l"), b"b", 20, 'z');
        let same: Vec<_> = q
            .drain_owner(&k("l"), b"b")
            .into_iter()
            .map(|w| (w.handle, w.ttl_ms))
            .collect();
        assert_eq!(same, vec![('x', 10), ('z', 20)]);
        assert_eq!(q.len(&k("l")), 1);
        assert!(q.drain_owner(&k("l"), b"b").is_empty());
        assert!(q.drain_owner(&k("other"), b"b").is_empty());
        assert_eq!(q.drain_owner(&k("l"), b"a").len(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn removed_waiters_are_skipped() {
        let mut q = WaitQueues::default();
        q.push(&k("l"), b"a", 10, 'a');
        let b = q.push(&k("l"), b"b", 10, 'b');
        q.push(&k("l"), b"c", 10, 'c');
        assert_eq!(q.remove(&k("l"), b).map(|w| w.handle), Some('b'));
        assert_eq!(q.remove_by(|h| *h == 'a').map(|(_, w)| w.handle), Some('a'));
        assert_eq!(q.pop_front(&k("l")).map(|w| w.handle), Some('c'));
        assert!(q.is_empty());
    }

    #[test]
    fn keys_are_per_database() {
        let mut q = WaitQueues::default();
        q.push(&KeyId::new(0, b"l"), b"a", 10, 1);
        q.push(&KeyId::new(1, b"l"), b"a", 10, 2);
        assert_eq!(q.len(&KeyId::new(1, b"l")), 1);
        assert_eq!(q.keys(Some(1)), vec![KeyId::new(1, b"l")]);
        assert_eq!(q.keys(None).len(), 2);
    }

    #[test]
    fn one_recheck_at_the_earliest_due_time() {
        let mut q = WaitQueues::default();
        assert_eq!(q.needs_recheck(&k("l"), 100), None);
        q.push(&k("l"), b"a", 10, 'a');
        assert_eq!(q.needs_recheck(&k("l"), 100), Some(None));
        q.set_recheck(
            &k("l"),
            PendingRecheck {
                seq: 1,
                timer: 7,
                due_ms: 100,
            },
        );
        assert_eq!(q.needs_recheck(&k("l"), 150), None);
        assert_eq!(q.needs_recheck(&k("l"), 50), Some(Some(7)));
        q.clear_recheck(&k("l"), 2);
        assert_eq!(q.needs_recheck(&k("l"), 150), None);
        q.clear_recheck(&k("l"), 1);
        assert_eq!(q.needs_recheck(&k("l"), 150), Some(None));
    }

    #[test]
    fn a_queue_with_a_pending_recheck_stays_until_it_fires() {
        let mut q = WaitQueues::default();
        q.push(&k("l"), b"a", 10, 'a');
        q.set_recheck(
            &k("l"),
            PendingRecheck {
                seq: 1,
                timer: 7,
                due_ms: 100,
            },
        );
        assert!(q.pop_front(&k("l")).is_some());
        assert!(q.contains(&k("l")));
        q.clear_recheck(&k("l"), 1);
        assert!(!q.contains(&k("l")));
    }

    #[test]
    fn drain_takes_everybody_in_order() {
        let mut q = WaitQueues::default();
        for h in ['a', 'b', 'c'] {
            q.push(&k("l"), b"o", 10, h);
        }
        let order: Vec<char> = q.drain(&k("l")).into_iter().map(|w| w.handle).collect();
        assert_eq!(order, vec!['a', 'b', 'c']);
        assert_eq!(q.len(&k("l")), 0);
    }
}
