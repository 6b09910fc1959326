//! Whether this node may create a key in a slot, read from `CLUSTER NODES` (pure).
//!
//! A waiter is granted a lock from a timer, outside any client command, so Redis's cluster
//! redirection never checks that grant. The module checks instead: it grants only in a slot
//! this node serves and is not migrating away (a client command there would get `ASK`).

/// Whether the `myself` line of `CLUSTER NODES` serves `slot` and is not migrating it.
pub fn may_write_slot(nodes: &str, slot: u16) -> bool {
    let Some(line) = nodes.lines().find(|l| {
        l.split(' ')
            .nth(2)
            .is_some_and(|f| f.split(',').any(|f| f == "myself"))
    }) else {
        return false;
    };
    let mut served = false;
    // Fields 9 and on: "a-b", "a", "[s->-node]" (migrating), "[s-<-node]" (importing).
    for field in line.split(' ').skip(8) {
        if let Some(inner) = field.strip_prefix('[') {
            if let Some((s, _)) = inner.split_once("->-") {
                if s.parse::<u16>() == Ok(slot) {
                    return false;
                }
            }
            continue;
        }
        let (lo, hi) = match field.split_once('-') {
            Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
            None => (field.parse::<u16>(), field.parse::<u16>()),
        };
        if let (Ok(lo), Ok(hi)) = (lo, hi) {
            if (lo..=hi).contains(&slot) {
                served = true;
            }
        }
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37 127.0.0.1:30004@31004 slave e7d1e 0 1426238317239 4 connected
67ed2 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1e 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 7000 [100->-67ed2] [6000-<-67ed2]
";

    #[test]
    fn served_slots_only() {
        assert!(may_write_slot(NODES, 0));
        assert!(may_write_slot(NODES, 5460));
        assert!(may_write_slot(NODES, 7000));
        assert!(!may_write_slot(NODES, 5461));
        assert!(!may_write_slot(NODES, 16383));
    }

    #[test]
    fn not_while_migrating_away() {
        assert!(!may_write_slot(NODES, 100));
        // Importing is not ours yet: not in the ranges, so no.
        assert!(!may_write_slot(NODES, 6000));
    }

    #[test]
    fn no_myself_line_means_no() {
        assert!(!may_write_slot("", 0));
        assert!(!may_write_slot("garbage", 0));
    }
}
