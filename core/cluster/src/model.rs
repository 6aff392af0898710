//! The cluster's metadata: nodes, topics, their configs, and for every partition its owning
//! shard, replicas, leader and leader epoch — the single routing truth. The controller's
//! state machine ([`crate::apply`]) is the only writer; a single node keeps it in
//! `<data>/metadata.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node's id in the cluster.
pub type NodeId = i32;

/// One partition: where it lives and who leads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The shard owning it on each of its replicas' nodes.
    pub shard: usize,
    /// The nodes holding a replica.
    pub replicas: Vec<NodeId>,
    /// The node whose replica takes appends.
    pub leader: NodeId,
    /// Bumped at every leader change; stamped into every batch the leader appends (the
    /// RecordBatch's partition leader epoch), so a diverged replica truncates by epoch.
    pub leader_epoch: i32,
    /// A move in progress (`quiver topic alter-replicas`, a decommission): the replicas the
    /// partition is going to. Its leader carries the move out in the partition's Raft group
    /// (learners first) and records the end with `SetReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<NodeId>>,
}

impl PartitionMeta {
    /// Whether `node` holds a replica or is receiving one (a move's target).
    pub fn hosted_by(&self, node: NodeId) -> bool {
        self.replicas.contains(&node) || self.target.as_ref().is_some_and(|t| t.contains(&node))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Partition i's placement and leadership.
    #[serde(default)]
    pub partitions: Vec<PartitionMeta>,
    /// The shard table of metadata written before partitions had leaders and epochs; read
    /// into `partitions` when loaded, never written.
    #[serde(default, skip_serializing)]
    partition_shards: Vec<usize>,
    /// User overrides, `key -> value` (validated by `topic_config`).
    pub configs: BTreeMap<String, String>,
    /// Unique in the cluster's history: the metadata version that created the topic (0: a
    /// topic of a single node's older metadata). A deleted and re-created topic gets another.
    #[serde(default)]
    pub id: u64,
}

/// Partitions per topic a Raft group id can tell apart (above the broker's limit).
pub const GROUP_PARTITION_BITS: u32 = 16;

impl TopicMeta {
    pub fn new(partitions: Vec<PartitionMeta>, configs: BTreeMap<String, String>) -> Self {
        Self {
            partitions,
            partition_shards: Vec::new(),
            configs,
            id: 0,
        }
    }

    /// The Raft group id of a replicated partition: the topic id above the partition (group
    /// 0 is the controller; a topic id is never 0 for a replicated topic).
    pub fn group_id(&self, partition: i32) -> u64 {
        (self.id << GROUP_PARTITION_BITS) | u64::from(partition as u16)
    }

    /// Whether its partitions are replicated (more than one replica each).
    pub fn is_replicated(&self) -> bool {
        self.partitions
            .first()
            .is_some_and(|p| p.replicas.len() > 1)
    }

    /// A topic of `node`, with partition i on shard `shards[i]`, at leader epoch 0.
    pub fn on_shards(node: NodeId, shards: &[usize]) -> Self {
        Self {
            partitions: shards
                .iter()
                .map(|&shard| PartitionMeta {
                    shard,
                    replicas: vec![node],
                    leader: node,
                    leader_epoch: 0,
                    target: None,
                })
                .collect(),
            partition_shards: Vec::new(),
            configs: BTreeMap::new(),
            id: 0,
        }
    }
}

/// A node of the cluster, as it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Where clients reach it (`host:port` of the client listener).
    pub client_addr: String,
    /// Where other nodes reach it (the internal listener).
    pub internal_addr: String,
    /// Replicas of one partition go to distinct racks where nodes name one.
    #[serde(default)]
    pub rack: Option<String>,
    pub shards: usize,
    /// `quiver cluster decommission`: placement gives it nothing more and its replicas are
    /// moved away; once it holds none it may be stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decommissioned: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Bumped by every change applied.
    pub version: u64,
    pub cluster_id: String,
    /// Registered nodes (empty for a single node started before clusters existed).
    #[serde(default)]
    pub nodes: BTreeMap<NodeId, NodeMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl Metadata {
    /// The recorded owning shard of `topic/partition` (see `routing::owner` for the shard on
    /// this node).
    pub fn shard_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.partition(topic, partition).map(|p| p.shard)
    }

    /// Where clients reach shard `shard` of `node`: the port it registered for its shard 0,
    /// plus `shard`; `None` for a node not registered.
    pub fn client_address(&self, node: NodeId, shard: usize) -> Option<String> {
        let (host, port) = self.nodes.get(&node)?.client_addr.rsplit_once(':')?;
        let port = port.parse::<usize>().ok()? + shard;
        Some(format!("{host}:{port}"))
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionMeta> {
        let t = self.topics.get(topic)?;
        t.partitions.get(usize::try_from(partition).ok()?)
    }

    /// Where to put the partitions of a new topic: continue round-robin from the number of
    /// partitions that exist, so shards stay balanced.
    pub fn assign_shards(&self, partitions: usize, shard_count: usize) -> Vec<usize> {
        let existing: usize = self.topics.values().map(|t| t.partitions.len()).sum();
        (0..partitions)
            .map(|i| (existing + i) % shard_count.max(1))
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Reads `metadata.json`; `node` owns the partitions of a file written before partitions
    /// named their replicas.
    pub fn from_json(bytes: &[u8], node: NodeId) -> Result<Self, String> {
        let mut meta: Metadata = serde_json::from_slice(bytes)
            .map_err(|e| format!("metadata.json is damaged ({e}); restore it from a backup"))?;
        for t in meta.topics.values_mut() {
            if t.partitions.is_empty() && !t.partition_shards.is_empty() {
                let configs = std::mem::take(&mut t.configs);
                *t = TopicMeta {
                    configs,
                    ..TopicMeta::on_shards(node, &t.partition_shards)
                };
            }
        }
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_table_round_robins_and_round_trips_as_json() {
        let mut m = Metadata {
            version: 1,
            cluster_id: "c".into(),
            ..Metadata::default()
        };
        let shards = m.assign_shards(3, 2);
        assert_eq!(shards, vec![0, 1, 0]);
        m.topics
            .insert("a".into(), TopicMeta::on_shards(0, &shards));
        assert_eq!(
            m.assign_shards(2, 2),
            vec![1, 0],
            "continues where the last topic ended"
        );
        assert_eq!(m.shard_of("a", 1), Some(1));
        assert_eq!(m.shard_of("a", 3), None);
        assert_eq!(m.shard_of("a", -1), None);
        assert_eq!(m.shard_of("b", 0), None);
        let p = m.partition("a", 2).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, &p.replicas[..]),
            (0, 0, &[0][..])
        );
        assert_eq!(Metadata::from_json(&m.to_json(), 0).unwrap(), m);
        assert!(Metadata::from_json(b"{", 0).is_err());
    }

    #[test]
    fn metadata_written_before_leaders_and_epochs_is_read_into_them() {
        let old = br#"{"version": 3, "cluster_id": "c", "topics": {"t": {"partition_shards": [1, 0], "configs": {"retention_ms": "5"}}}}"#;
        let m = Metadata::from_json(old, 7).unwrap();
        let t = &m.topics["t"];
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[0].shard, 1);
        assert_eq!(t.partitions[1].replicas, vec![7]);
        assert_eq!(t.configs["retention_ms"], "5");
        let rewritten = String::from_utf8(m.to_json()).unwrap();
        assert!(!rewritten.contains("partition_shards"), "{rewritten}");
        assert!(rewritten.contains("leader_epoch"), "{rewritten}");
    }
}
