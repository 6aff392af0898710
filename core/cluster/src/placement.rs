//! Where a new topic's partitions go: each partition's replicas on distinct nodes (distinct
//! racks first, where nodes name one), leaders spread evenly over nodes, and each partition
//! on the least-loaded shard of its leader. The first replica is the preferred leader
//! ([`crate::rebalance`] moves leadership back to it).

use std::collections::BTreeMap;

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
    if meta.nodes.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    if replication_factor > meta.nodes.len() {
        return Err(PlacementError::NotEnoughNodes {
            replication_factor,
            nodes: meta.nodes.len(),
        });
    }
    let mut loads = loads(meta);
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
                    nodes: meta.nodes.len(),
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
        });
    }
    Ok(out)
}
