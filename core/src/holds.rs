//! A stock's holds in deadline order: a min-heap of (deadline, ledger entry index), 12 bytes a
//! hold. Plain Rust.
//!
//! The heap is lazy: a hold that is confirmed or refunded keeps its slot, and the slot is
//! dropped when its deadline comes round and its entry is found no longer held with that
//! deadline (`is_live`). So confirming or refunding costs nothing here, and the heap never
//! holds more slots than holds were made whose deadline has not been reached.

/// One hold: its deadline (Unix ms) and its entry's index in the ledger. Packed to 12 bytes.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct Slot {
    deadline: u64,
    index: u32,
}

impl Slot {
    fn key(self) -> (u64, u32) {
        // Copies out of the packed struct (no reference to a packed field is taken).
        let Slot { deadline, index } = self;
        (deadline, index)
    }
}

/// Holds by deadline, earliest first.
#[derive(Clone, Debug, Default)]
pub struct Holds {
    heap: Vec<Slot>,
}

impl Holds {
    /// How many slots it keeps (live or not).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Forgets every hold.
    pub fn clear(&mut self) {
        self.heap = Vec::new();
    }

    /// Bytes it uses.
    pub fn mem_usage(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Slot>()
    }

    fn key_at(&self, i: usize) -> Option<(u64, u32)> {
        self.heap.get(i).map(|s| s.key())
    }

    /// Adds the hold of entry `index`, due at `deadline`.
    pub fn push(&mut self, deadline: u64, index: u32) {
        if self.heap.len() == self.heap.capacity() {
            // Grow by a quarter, not double: at most a quarter of the slots sit unused (3
            // bytes a hold), which keeps a hold within 24 bytes of a plain entry.
            let more = (self.heap.len() / 4).max(8);
            self.heap.reserve_exact(more);
        }
        self.heap.push(Slot { deadline, index });
        let mut i = self.heap.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.key_at(parent) <= self.key_at(i) {
                break;
            }
            self.heap.swap(parent, i);
            i = parent;
        }
    }

    /// The earliest slot (deadline, index), live or not.
    pub fn peek(&self) -> Option<(u64, u32)> {
        self.key_at(0)
    }

    /// Takes the earliest slot out.
    pub fn pop(&mut self) -> Option<(u64, u32)> {
        let last = self.heap.len().checked_sub(1)?;
        self.heap.swap(0, last);
        let top = self.heap.pop().map(Slot::key);
        self.sift_down(0);
        // Memory follows the holds down as they come back (amortized: a quarter full first).
        let (len, cap) = (self.heap.len(), self.heap.capacity());
        if cap > 64 && len < cap / 4 {
            self.heap.shrink_to(len + len / 4);
        }
        top
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.key_at(l) < self.key_at(least) {
                least = l;
            }
            if r < self.heap.len() && self.key_at(r) < self.key_at(least) {
                least = r;
            }
            if least == i {
                return;
            }
            self.heap.swap(i, least);
            i = least;
        }
    }

    /// Takes out every slot of entry `index` (a deduction taken back). O(slots).
    pub fn remove_index(&mut self, index: u32) {
        let before = self.heap.len();
        self.heap.retain(|s| s.key().1 != index);
        if self.heap.len() != before {
            for i in (0..self.heap.len() / 2).rev() {
                self.sift_down(i);
            }
        }
    }

    /// Every slot due at `now` or before (deadline ≤ now), in no particular order: a walk from
    /// the root that stops at the first later slot of each branch, so it costs the number of
    /// due slots, not the heap's size.
    pub fn due(&self, now: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let mut stack: Vec<usize> = Vec::new();
        if self.key_at(0).is_some_and(|(d, _)| d <= now) {
            stack.push(0);
        }
        std::iter::from_fn(move || {
            let i = stack.pop()?;
            for child in [2 * i + 1, 2 * i + 2] {
                if self.key_at(child).is_some_and(|(d, _)| d <= now) {
                    stack.push(child);
                }
            }
            self.key_at(i)
        })
    }

    /// The earliest slot due after `now` for which `is_live` holds, looked for best-first from
    /// the root, so it costs about the slots due by then plus the dead ones it passes.
    pub fn first_live_after(
        &self,
        now: u64,
        mut is_live: impl FnMut(u64, u32) -> bool,
    ) -> Option<(u64, u32)> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut frontier = BinaryHeap::new();
        if let Some(k) = self.key_at(0) {
            frontier.push(Reverse((k, 0usize)));
        }
        while let Some(Reverse(((deadline, index), i))) = frontier.pop() {
            if deadline > now && is_live(deadline, index) {
                return Some((deadline, index));
            }
            for child in [2 * i + 1, 2 * i + 2] {
                if let Some(k) = self.key_at(child) {
                    frontier.push(Reverse((k, child)));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 12);
    }

    #[test]
    fn pops_in_deadline_order() {
        let mut h = Holds::default();
        for (d, i) in [(50, 1), (10, 2), (30, 3), (10, 0), (40, 4)] {
            h.push(d, i);
        }
        let mut out = Vec::new();
        while let Some(s) = h.pop() {
            out.push(s);
        }
        assert_eq!(out, [(10, 0), (10, 2), (30, 3), (40, 4), (50, 1)]);
        assert!(h.is_empty());
    }

    #[test]
    fn due_and_first_live_after() {
        let mut h = Holds::default();
        for i in 0..100u32 {
            h.push(u64::from(i * 7 % 101), i);
        }
        let mut due: Vec<_> = h.due(30).collect();
        due.sort_unstable();
        let mut want: Vec<_> = (0..100u32)
            .map(|i| (u64::from(i * 7 % 101), i))
            .filter(|(d, _)| *d <= 30)
            .collect();
        want.sort_unstable();
        assert_eq!(due, want);
        assert_eq!(h.due(0).count(), 1);
        assert!(Holds::default().due(100).next().is_none());
        // The first after 30 is 31; with 31 dead, the next.
        assert_eq!(h.first_live_after(30, |_, _| true).map(|s| s.0), Some(31));
        assert_eq!(
            h.first_live_after(30, |d, _| d != 31).map(|s| s.0),
            Some(32)
        );
        assert_eq!(h.first_live_after(1000, |_, _| true), None);
    }

    #[test]
    fn remove_index_keeps_the_heap_ordered() {
        let mut h = Holds::default();
        for i in 0..50u32 {
            h.push(u64::from((i * 13) % 17), i);
        }
        h.remove_index(7);
        h.remove_index(49);
        assert_eq!(h.len(), 48);
        let mut last = (0, 0);
        while let Some(s) = h.pop() {
            assert!(s >= last);
            assert!(s.1 != 7 && s.1 != 49);
            last = s;
        }
    }

    proptest::proptest! {
        #[test]
        fn behaves_as_a_sorted_list(ops in proptest::collection::vec((0u64..50, 0u32..1000, 0u8..4), 0..200)) {
            let mut h = Holds::default();
            let mut model: Vec<(u64, u32)> = Vec::new();
            for (d, i, op) in ops {
                if op == 0 {
                    model.sort_unstable();
                    let want = if model.is_empty() { None } else { Some(model.remove(0)) };
                    proptest::prop_assert_eq!(h.pop(), want);
                } else {
                    h.push(d, i);
                    model.push((d, i));
                }
                model.sort_unstable();
                proptest::prop_assert_eq!(h.peek(), model.first().copied());
                let mut due: Vec<_> = h.due(25).collect();
                due.sort_unstable();
                let want: Vec<_> = model.iter().copied().filter(|s| s.0 <= 25).collect();
                proptest::prop_assert_eq!(due, want);
            }
        }
    }
}
