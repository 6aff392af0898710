//! Where a new topic's partitions go: each partition's replicas on distinct nodes (distinct
//! racks first, where nodes name one), leaders spread evenly over nodes, and each partition
//! on the least-loaded shard of its leader. The first replica is the preferred leader
//! (the partition leader hands leadership back to it), and [`decommission_moves`] places a
//! leaving node's replicas elsewhere.

use std::collections::BTreeMap;

use crate::command::PartitionMove;
use crate::model::{Metadata, NodeId, PartitionMeta};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    NoNodes,
    /// More replicas asked than nodes registered.
    NotEnoughNodes {
        replication_factor: usize,
        nodes: usize,
    },
    ZeroReplicationFactor,
}

impl std::fmt::Display for PlacementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoNodes => write!(f, "no node is registered in the cluster yet"),
            Self::NotEnoughNodes {
                replication_factor,
                nodes,
            } => write!(
                f,
                "replication factor {replication_factor} needs {replication_factor} nodes up; {nodes} are: start the nodes that are down, add nodes, or lower it"
            ),
            Self::ZeroReplicationFactor => write!(f, "the replication factor must be at least 1"),
        }
    }
}

impl std::error::Error for PlacementError {}

/// What each node already carries.
#[derive(Debug, Clone, Default)]
struct Load {
    replicas: usize,
    leaders: usize,
    /// Partitions per shard (all replicas counted).
    shards: Vec<usize>,
    /// Partitions led per shard.
    led: Vec<usize>,
}

fn loads(meta: &Metadata) -> BTreeMap<NodeId, Load> {
    let mut loads: BTreeMap<NodeId, Load> = meta
        .nodes
        .iter()
        .filter(|(_, n)| !n.decommissioned)
        .map(|(id, n)| {
            (
                *id,
                Load {
                    shards: vec![0; n.shards.max(1)],
                    led: vec![0; n.shards.max(1)],
                    ..Load::default()
                },
            )
        })
        .collect();
    for p in meta.topics.values().flat_map(|t| t.partitions.iter()) {
        for r in &p.replicas {
            if let Some(l) = loads.get_mut(r) {
                l.replicas += 1;
                let k = p.shard % l.shards.len();
                l.shards[k] += 1;
                if *r == p.leader {
                    l.leaders += 1;
                    l.led[k] += 1;
                }
            }
        }
    }
    loads
}

/// The default replication factor: 3 where there are 3 nodes or more, else every node.
pub fn default_replication_factor(nodes: usize) -> usize {
    nodes.clamp(1, 3)
}

/// Replicas, leader and shard for `partitions` new partitions.
pub fn place(
    meta: &Metadata,
    partitions: usize,
    replication_factor: usize,
) -> Result<Vec<PartitionMeta>, PlacementError> {
    if replication_factor == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    let mut loads = loads(meta);
    if loads.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    if replication_factor > loads.len() {
        return Err(PlacementError::NotEnoughNodes {
            replication_factor,
            nodes: loads.len(),
        });
    }
    let rack = |id: &NodeId| meta.nodes.get(id).and_then(|n| n.rack.clone());
    // Partitions each pair of nodes shares: among equally loaded candidates, a follower that
    // shares the fewest with the replicas already chosen, so a node's partitions spread
    // over many peers and its failure moves its load onto many nodes, not a few.
    let mut shared: BTreeMap<(NodeId, NodeId), usize> = BTreeMap::new();
    let pair = |a: NodeId, b: NodeId| if a < b { (a, b) } else { (b, a) };
    for p in meta.topics.values().flat_map(|t| t.partitions.iter()) {
        for (k, a) in p.replicas.iter().enumerate() {
            for b in &p.replicas[k + 1..] {
                *shared.entry(pair(*a, *b)).or_default() += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(partitions);
    for _ in 0..partitions {
        let leader = *loads
            .iter()
            .min_by_key(|(id, l)| (l.leaders, l.replicas, **id))
            .map(|(id, _)| id)
            .ok_or(PlacementError::NoNodes)?;
        let mut replicas = vec![leader];
        while replicas.len() < replication_factor {
            let used: Vec<Option<String>> = replicas.iter().map(&rack).collect();
            let next = loads
                .iter()
                .filter(|(id, _)| !replicas.contains(id))
                .min_by_key(|(id, l)| {
                    let r = rack(id);
                    let same_rack = r.is_some() && used.contains(&r);
                    let together: usize = replicas
                        .iter()
                        .map(|c| shared.get(&pair(*c, **id)).copied().unwrap_or(0))
                        .sum();
                    (same_rack, l.replicas, together, **id)
                })
                .map(|(id, _)| *id)
                .ok_or(PlacementError::NotEnoughNodes {
                    replication_factor,
                    nodes: loads.len(),
                })?;
            replicas.push(next);
        }
        // The leader's shard leading the fewest partitions (then carrying the fewest).
        let shard = loads.get(&leader).map_or(0, |l| {
            (0..l.shards.len())
                .min_by_key(|s| (l.led[*s], l.shards[*s], *s))
                .unwrap_or(0)
        });
        for (k, a) in replicas.iter().enumerate() {
            for b in &replicas[k + 1..] {
                *shared.entry(pair(*a, *b)).or_default() += 1;
            }
        }
        for r in &replicas {
            if let Some(l) = loads.get_mut(r) {
                l.replicas += 1;
                let k = shard % l.shards.len();
                l.shards[k] += 1;
                if *r == leader {
                    l.leaders += 1;
                    l.led[k] += 1;
                }
            }
        }
        out.push(PartitionMeta {
            shard,
            replicas,
            leader,
            leader_epoch: 0,
            target: None,
        });
    }
    Ok(out)
}

/// Why a node's replicas cannot all move away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecommissionError {
    UnknownNode(NodeId),
    /// Partitions of one replica do not move (they are not Raft groups).
    SingleReplica {
        topic: String,
        partition: i32,
    },
    /// Every other node already holds a replica of this partition.
    NoNodeLeft {
        topic: String,
        partition: i32,
    },
    /// A partition on the node is moving: one move at a time.
    MoveInProgress {
        topic: String,
        partition: i32,
    },
}

impl std::fmt::Display for DecommissionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownNode(n) => write!(f, "node {n} is not registered in the cluster"),
            Self::SingleReplica { topic, partition } => write!(
                f,
                "{topic}/{partition} has its only replica on this node and cannot move (a single replica is not a Raft group): delete the topic or recreate it with --replication-factor 2 or more first"
            ),
            Self::MoveInProgress { topic, partition } => write!(
                f,
                "{topic}/{partition} is moving: retry once that move is done (quiver cluster status shows it)"
            ),
            Self::NoNodeLeft { topic, partition } => write!(
                f,
                "no node is left to take the replica of {topic}/{partition} (every other node holds one): add a node first"
            ),
        }
    }
}

impl std::error::Error for DecommissionError {}

/// Where each replica on `node` goes when it is decommissioned: to the least-loaded node not
/// holding one yet (another rack than the partition's other replicas first). The leaving
/// replica is dropped from its place and the new one goes last, so the preferred leader
/// stays where it was unless it was the leaving node's.
pub fn decommission_moves(
    meta: &Metadata,
    node: NodeId,
) -> Result<Vec<PartitionMove>, DecommissionError> {
    if !meta.nodes.contains_key(&node) {
        return Err(DecommissionError::UnknownNode(node));
    }
    let mut loads = loads(meta);
    loads.remove(&node);
    let rack = |id: &NodeId| meta.nodes.get(id).and_then(|n| n.rack.clone());
    let mut moves = Vec::new();
    for (topic, t) in &meta.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            let partition = i as i32;
            if !p.hosted_by(node) {
                continue;
            }
            if p.target.is_some() {
                return Err(DecommissionError::MoveInProgress {
                    topic: topic.clone(),
                    partition,
                });
            }
            let current = &p.replicas;
            if p.replicas.len() < 2 {
                return Err(DecommissionError::SingleReplica {
                    topic: topic.clone(),
                    partition,
                });
            }
            let staying: Vec<NodeId> = current.iter().copied().filter(|r| *r != node).collect();
            let used: Vec<Option<String>> = staying.iter().map(&rack).collect();
            let next = loads
                .iter()
                .filter(|(id, _)| !staying.contains(id))
                .min_by_key(|(id, l)| {
                    let r = rack(id);
                    (r.is_some() && used.contains(&r), l.replicas, **id)
                })
                .map(|(id, _)| *id)
                .ok_or_else(|| DecommissionError::NoNodeLeft {
                    topic: topic.clone(),
                    partition,
                })?;
            if let Some(l) = loads.get_mut(&next) {
                l.replicas += 1;
            }
            let mut target = staying;
            target.push(next);
            moves.push(PartitionMove {
                topic: topic.clone(),
                partition,
                target,
            });
        }
    }
    Ok(moves)
}
