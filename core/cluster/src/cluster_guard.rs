//! Which cluster a node's peers belong to (sans-IO): every Raft envelope names its sender's
//! cluster id. An envelope of another cluster is dropped, so a node started with another
//! cluster's data directory cannot disturb this one; and when the controller leader of the
//! voters (elected by a majority of them) or a majority of the voters say this node is the
//! one in the wrong cluster, it must stop, saying why.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::NodeId;

/// What to do with one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same cluster, or one side does not know its cluster yet (a node joining).
    Accept,
    /// From a node of another cluster: dropped (`first`: the first from that node and
    /// cluster, worth a log line).
    Drop { first: bool },
    /// The voters' controller leader, or a majority of them, belong to `theirs`: this node's
    /// data directory is another cluster's, and it must not run in this one.
    Refuse { theirs: String, voters: Vec<NodeId> },
}

/// The voters heard from per foreign cluster id.
#[derive(Debug, Clone)]
pub struct ClusterGuard {
    me: NodeId,
    voters: BTreeSet<NodeId>,
    foreign: BTreeMap<String, BTreeSet<NodeId>>,
    seen: BTreeSet<(NodeId, String)>,
}

impl ClusterGuard {
    pub fn new(me: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            me,
            voters: voters.into_iter().collect(),
            foreign: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Judges an envelope `from` a node of cluster `theirs`, this node being of `mine`;
    /// `from_leader`: whether it holds the controller leader's appends or heartbeats (a
    /// majority elected it), asked only of an envelope of another cluster.
    pub fn check(
        &mut self,
        mine: &str,
        from: NodeId,
        theirs: &str,
        from_leader: impl FnOnce() -> bool,
    ) -> Verdict {
        if mine.is_empty() || theirs.is_empty() || mine == theirs {
            return Verdict::Accept;
        }
        if from != self.me && self.voters.contains(&from) {
            // A voter moves out of the clusters it was counted in.
            for heard in self.foreign.values_mut() {
                heard.remove(&from);
            }
            let heard = self.foreign.entry(theirs.to_string()).or_default();
            heard.insert(from);
            if heard.len() > self.voters.len() / 2 || from_leader() {
                return Verdict::Refuse {
                    theirs: theirs.to_string(),
                    voters: heard.iter().copied().collect(),
                };
            }
        }
        // Bounded: a stranger cycling through cluster ids is remembered up to this many.
        let first = self.seen.len() < 1024 && self.seen.insert((from, theirs.to_string()));
        Verdict::Drop { first }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_or_unknown_clusters_pass() {
        let mut g = ClusterGuard::new(1, [1, 2, 3]);
        assert_eq!(g.check("a", 2, "a", || false), Verdict::Accept);
        assert_eq!(g.check("", 2, "b", || false), Verdict::Accept);
        assert_eq!(g.check("a", 2, "", || false), Verdict::Accept);
    }

    #[test]
    fn one_stranger_is_dropped_and_a_majority_refuses_this_node() {
        // Nodes 1 and 2 of cluster "a" hear node 3 of cluster "b": dropped, never refused.
        let mut g = ClusterGuard::new(1, [1, 2, 3]);
        assert_eq!(
            g.check("a", 3, "b", || false),
            Verdict::Drop { first: true }
        );
        for _ in 0..5 {
            assert_eq!(
                g.check("a", 3, "b", || false),
                Verdict::Drop { first: false }
            );
        }
        // Node 3 hears both others say "a": the majority of the voters is elsewhere.
        let mut stranger = ClusterGuard::new(3, [1, 2, 3]);
        assert!(matches!(
            stranger.check("b", 1, "a", || false),
            Verdict::Drop { .. }
        ));
        assert_eq!(
            stranger.check("b", 2, "a", || false),
            Verdict::Refuse {
                theirs: "a".into(),
                voters: vec![1, 2]
            }
        );
    }

    #[test]
    fn the_controller_leader_of_another_cluster_refuses_this_node_at_once() {
        let mut stranger = ClusterGuard::new(3, [1, 2, 3]);
        assert_eq!(
            stranger.check("b", 1, "a", || true),
            Verdict::Refuse {
                theirs: "a".into(),
                voters: vec![1]
            }
        );
        // Not from a voter: dropped whatever it says.
        let mut g = ClusterGuard::new(3, [1, 2, 3]);
        assert!(matches!(
            g.check("b", 9, "a", || true),
            Verdict::Drop { .. }
        ));
    }

    #[test]
    fn non_voters_and_itself_are_not_counted() {
        let mut g = ClusterGuard::new(3, [1, 2, 3]);
        let dropped = |v: Verdict| matches!(v, Verdict::Drop { .. });
        assert!(dropped(g.check("b", 7, "a", || false)));
        assert!(dropped(g.check("b", 8, "a", || false)));
        assert!(dropped(g.check("b", 3, "a", || false)));
        assert!(dropped(g.check("b", 1, "a", || false)));
        // A voter counted once, however often it speaks, and only for its latest cluster.
        assert!(dropped(g.check("b", 1, "c", || false)));
        assert!(dropped(g.check("b", 2, "a", || false)));
    }
}
