//! The controller's commands: every change to the cluster metadata is one of these, proposed
//! to the controller's Raft group and applied by every node in log order
//! ([`crate::apply`]). Decisions (placement, validation of configs) are made by the proposer,
//! so applying is deterministic. Encoded as JSON (small, rare, readable in a dump).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Metadata, NodeId, NodeMeta, PartitionMeta};

/// Most bytes of one encoded command.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// The first command of a cluster's log, proposed by its first controller leader: the
    /// cluster id and, for a node that ran alone before clusters existed, its metadata
    /// (`metadata.json`) carried over. Refused once the cluster has an id.
    InitCluster {
        image: Box<Metadata>,
    },
    /// A node joins (or re-registers with new addresses).
    RegisterNode {
        node: NodeId,
        meta: NodeMeta,
    },
    /// A decommissioned node leaves; refused while it holds replicas.
    UnregisterNode {
        node: NodeId,
    },
    CreateTopic {
        name: String,
        partitions: Vec<PartitionMeta>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        unset: Vec<String>,
    },
    /// More partitions for a topic (never fewer).
    CreatePartitions {
        name: String,
        added: Vec<PartitionMeta>,
    },
    /// A partition's group elected `leader` at `leader_epoch` (its Raft term).
    SetLeader {
        topic: String,
        partition: i32,
        leader: NodeId,
        leader_epoch: i32,
    },
    /// A partition's replicas changed (a move finished, recorded by its leader).
    SetReplicas {
        topic: String,
        partition: i32,
        replicas: Vec<NodeId>,
    },
    /// A partition starts moving to `target` (its leader carries the move out in the
    /// partition's group, then records `SetReplicas`). The same replicas in another order
    /// take effect at once: the first is the preferred leader, which leadership follows.
    MovePartition {
        topic: String,
        partition: i32,
        target: Vec<NodeId>,
    },
    /// `node` takes no new replicas, and its partitions move as `moves` say (placed by the
    /// controller leader).
    DecommissionNode {
        node: NodeId,
        moves: Vec<PartitionMove>,
    },
}

/// One partition's move: the replicas it is going to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMove {
    pub topic: String,
    pub partition: i32,
    pub target: Vec<NodeId>,
}

/// Why a command could not be decoded or applied. Applying leaves the metadata unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    Malformed(String),
    TooLarge {
        bytes: usize,
    },
    TopicExists(String),
    UnknownTopic(String),
    UnknownPartition {
        topic: String,
        partition: i32,
    },
    UnknownNode(NodeId),
    /// Replicas must be distinct, registered nodes, at least one.
    InvalidReplicas(String),
    /// The leader must be one of the replicas.
    LeaderNotReplica {
        leader: NodeId,
    },
    /// A leader change older than the one recorded.
    StaleEpoch {
        recorded: i32,
        proposed: i32,
    },
    /// A partition count only grows.
    NoPartitions,
    NodeHasReplicas {
        node: NodeId,
        replicas: usize,
    },
    /// The cluster already has an id (a second `InitCluster`).
    AlreadyInitialized {
        cluster_id: String,
    },
    /// A partition of one replica is not a Raft group: it cannot move.
    NotReplicated {
        topic: String,
        partition: i32,
    },
    /// A decommissioned node takes no replicas.
    Decommissioned(NodeId),
    /// A partition moves one target at a time: a replica a running move added may already
    /// vote, and dropping it from the target would delete a voter's copy.
    MoveInProgress {
        topic: String,
        partition: i32,
        target: Vec<NodeId>,
    },
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed controller command: {e}"),
            Self::TooLarge { bytes } => write!(
                f,
                "controller command of {bytes} bytes exceeds {MAX_COMMAND_BYTES}: split the change"
            ),
            Self::TopicExists(t) => write!(f, "topic {t:?} already exists"),
            Self::UnknownTopic(t) => write!(f, "no topic {t:?}"),
            Self::UnknownPartition { topic, partition } => {
                write!(f, "topic {topic:?} has no partition {partition}")
            }
            Self::UnknownNode(n) => write!(f, "node {n} is not registered in the cluster"),
            Self::InvalidReplicas(why) => write!(f, "invalid replica list: {why}"),
            Self::LeaderNotReplica { leader } => {
                write!(f, "node {leader} cannot lead: it holds no replica")
            }
            Self::StaleEpoch { recorded, proposed } => write!(
                f,
                "leader epoch {proposed} is older than the recorded {recorded}"
            ),
            Self::NoPartitions => write!(f, "a topic needs at least one partition"),
            Self::AlreadyInitialized { cluster_id } => {
                write!(f, "the cluster is already initialized as {cluster_id}")
            }
            Self::NotReplicated { topic, partition } => write!(
                f,
                "{topic}/{partition} has a single replica, which is not a Raft group and cannot move; create the topic with --replication-factor 2 or more to move its partitions"
            ),
            Self::MoveInProgress {
                topic,
                partition,
                target,
            } => write!(
                f,
                "{topic}/{partition} is moving to replicas {target:?}: retry once that move is done (quiver cluster status shows it)"
            ),
            Self::Decommissioned(n) => write!(
                f,
                "node {n} is decommissioned and takes no replicas"
            ),
            Self::NodeHasReplicas { node, replicas } => write!(
                f,
                "node {node} still holds {replicas} replicas: move them away first (quiver cluster decommission)"
            ),
        }
    }
}

impl std::error::Error for CommandError {}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(CommandError::TooLarge { bytes: bytes.len() });
        }
        serde_json::from_slice(bytes).map_err(|e| CommandError::Malformed(e.to_string()))
    }
}
