//! Leadership back where placement wanted it: after a node returns, the partitions whose
//! preferred leader (first replica) is live again but led elsewhere are handed back (by a
//! Raft leadership transfer in each partition's group), so leaders stay spread evenly.

use std::collections::BTreeSet;

use crate::model::{Metadata, NodeId};

/// A leadership transfer to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderMove {
    pub topic: String,
    pub partition: i32,
    pub from: NodeId,
    pub to: NodeId,
}

/// Transfers that bring each partition's leadership back to its preferred, live replica; at
/// most `max_moves` (a returning node takes its leaderships back in steps).
pub fn preferred_leader_moves(
    meta: &Metadata,
    live: &BTreeSet<NodeId>,
    max_moves: usize,
) -> Vec<LeaderMove> {
    let mut moves = Vec::new();
    for (topic, t) in &meta.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            if moves.len() >= max_moves {
                return moves;
            }
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader != preferred && live.contains(&preferred) && live.contains(&p.leader) {
                moves.push(LeaderMove {
                    topic: topic.clone(),
                    partition: i as i32,
                    from: p.leader,
                    to: preferred,
                });
            }
        }
    }
    moves
}
