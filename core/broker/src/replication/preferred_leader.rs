//! Leadership back to the preferred replica (sans-IO). Placement makes a partition's first
//! replica its leader, so that leaders spread evenly over nodes and shards; a failover moves
//! leadership elsewhere. The leader hands it back (a Raft leadership transfer) once the
//! preferred replica is up and holds the whole log: a node that returns gets its partitions
//! back, a few at a time per shard, as Kafka's `auto.leader.rebalance.enable` does.

/// How often a shard's driver looks for leaderships to hand back, in ticks (5 s at the
/// default 100 ms tick).
pub const CHECK_EVERY_TICKS: u64 = 50;
/// Most transfers a shard starts per check: a returning node takes its leaderships back in
/// steps, not in one storm of elections.
pub const MAX_MOVES_PER_CHECK: usize = 4;

/// A group this shard leads, as its Raft state sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Led {
    pub group: u64,
    /// The preferred replica (the partition's first).
    pub preferred: u64,
    /// The preferred replica answered within the last election timeout.
    pub reachable: bool,
    /// The preferred replica holds the leader's whole log.
    pub caught_up: bool,
}

/// The transfers to start: (group, to), at most `max`.
pub fn hand_back(me: u64, led: &[Led], max: usize) -> Vec<(u64, u64)> {
    led.iter()
        .filter(|l| l.preferred != me && l.reachable && l.caught_up)
        .take(max)
        .map(|l| (l.group, l.preferred))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(group: u64, preferred: u64, reachable: bool, caught_up: bool) -> Led {
        Led {
            group,
            preferred,
            reachable,
            caught_up,
        }
    }

    #[test]
    fn only_to_a_preferred_replica_that_is_up_and_caught_up() {
        let groups = [
            led(1, 1, true, true),  // this node is the preferred one
            led(2, 2, true, true),  // handed back
            led(3, 3, false, true), // down
            led(4, 2, true, false), // still catching up
            led(5, 3, true, true),  // handed back
        ];
        assert_eq!(hand_back(1, &groups, 10), vec![(2, 2), (5, 3)]);
    }

    #[test]
    fn a_few_at_a_time() {
        let groups: Vec<Led> = (0..10).map(|g| led(g, 2, true, true)).collect();
        assert_eq!(hand_back(1, &groups, MAX_MOVES_PER_CHECK).len(), 4);
    }
}
