//! [`Request`]: every API a broker serves, as owned values.

use bytes::BytesMut;
pub use quiver_group::{Heartbeat, Nack, OffsetCommit, TopicPartition};

/// The APIs, by name (a protocol codec maps its own keys to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Handshake,
    Metadata,
    CreateTopics,
    DeleteTopics,
    DescribeConfigs,
    AlterConfigs,
    ListOffsets,
    Produce,
    Fetch,
    ConsumerGroupHeartbeat,
    OffsetCommit,
    OffsetFetch,
    ListGroups,
    DescribeGroup,
    DeleteGroup,
    AlterGroupConfig,
    Nack,
    InitProducerId,
    AddOffsetsToTxn,
    EndTxn,
    AlterReplicas,
    DecommissionNode,
    DescribeReplication,
}

/// What a fetch may read (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Up to the high watermark, open and aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Up to the last stable offset; aborted transactions are listed for the reader to skip.
    ReadCommitted,
}

/// How much acknowledgement a produce waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// Answer at once; offsets are not reported.
    None,
    /// Answer once the leader has the batches in memory (offsets assigned).
    Leader,
    /// Answer once the batches are durable per the topic's flush policy.
    All,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// Replicas per partition; 0: the node's default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// What ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The first offset still held.
    Earliest,
    /// The high watermark: the offset the next readable record will get.
    Latest,
    /// The first record stamped at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// One partition's part of a produce: its record batches, back to back, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    pub topic: String,
    pub partition: i32,
    /// Whole RecordBatch v2 batches. Owned and mutable: the broker stamps base offset and
    /// leader epoch in place, without a copy.
    pub records: BytesMut,
}

/// Appends to many partitions, answered per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produce {
    pub acks: Acks,
    /// How long the broker may take to acknowledge, per `acks`.
    pub timeout_ms: u32,
    pub partitions: Vec<ProducePartition>,
    /// Set when the batches are transactional: the partitions ask this id's coordinator to
    /// add them to the transaction before they take its first batch.
    pub transactional_id: Option<String>,
}

/// One partition's part of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Most bytes this partition may return (at least one whole batch is always returned).
    pub max_bytes: u32,
}

/// A long poll over many partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// How long to wait for `min_bytes`.
    pub max_wait_ms: u32,
    /// Bytes to wait for, over all partitions.
    pub min_bytes: u32,
    /// Most bytes of the whole answer.
    pub max_bytes: u32,
    pub partitions: Vec<FetchPartition>,
    pub isolation: Isolation,
}

/// Every request a broker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Handshake {
        client_name: String,
    },
    /// Topics and where their partitions are (empty: every topic).
    Metadata {
        topics: Vec<String>,
    },
    CreateTopics(Vec<NewTopic>),
    DeleteTopics(Vec<String>),
    DescribeConfigs(Vec<String>),
    AlterConfigs {
        topic: String,
        configs: Vec<(String, String)>,
    },
    ListOffsets {
        topic: String,
        partition: i32,
        query: OffsetQuery,
    },
    Produce(Produce),
    Fetch(Fetch),
    /// A consumer group member's heartbeat (join, leave, reconcile).
    ConsumerGroupHeartbeat(Heartbeat),
    OffsetCommit(OffsetCommit),
    /// Committed offsets of `partitions` (empty: all of the group's).
    OffsetFetch {
        group: String,
        partitions: Vec<TopicPartition>,
    },
    /// The groups whose coordinator is the shard asked.
    ListGroups,
    DescribeGroup {
        group: String,
    },
    DeleteGroup {
        group: String,
        force: bool,
    },
    /// Sets the named keys of a group's configuration (see `GroupConfig::with_changes`).
    AlterGroupConfig {
        group: String,
        configs: Vec<(String, String)>,
    },
    /// A member failed a record (redelivery, then the dead-letter topic).
    Nack(Nack),
    /// A producer id and epoch for an idempotent producer.
    InitProducerId {
        transactional_id: Option<String>,
        transaction_timeout_ms: u32,
        /// The producer's current id and epoch, to bump the epoch; `None`: a new id.
        current: Option<(i64, i16)>,
    },
    /// Offsets a group commits if and only if the transaction commits.
    AddOffsetsToTxn {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        /// The group, the member committing (checked now) and the offsets.
        offsets: OffsetCommit,
    },
    /// Commit or abort the producer's transaction.
    EndTxn {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    },
    /// Moves a partition to `replicas` (the first is its preferred leader); the same replicas
    /// in another order move only the leadership.
    AlterReplicas {
        topic: String,
        partition: i32,
        replicas: Vec<i32>,
    },
    /// Moves every replica off `node` and keeps new ones off it.
    DecommissionNode {
        node: i32,
    },
    /// The replication progress of the partitions this node leads; `all_shards`: gathered
    /// from every shard (as a client asks), else from the shard asked only.
    DescribeReplication {
        all_shards: bool,
    },
}

impl Request {
    /// Which API this is.
    pub fn api(&self) -> Api {
        match self {
            Self::Handshake { .. } => Api::Handshake,
            Self::Metadata { .. } => Api::Metadata,
            Self::CreateTopics(_) => Api::CreateTopics,
            Self::DeleteTopics(_) => Api::DeleteTopics,
            Self::DescribeConfigs(_) => Api::DescribeConfigs,
            Self::AlterConfigs { .. } => Api::AlterConfigs,
            Self::ListOffsets { .. } => Api::ListOffsets,
            Self::Produce(_) => Api::Produce,
            Self::Fetch(_) => Api::Fetch,
            Self::ConsumerGroupHeartbeat(_) => Api::ConsumerGroupHeartbeat,
            Self::OffsetCommit(_) => Api::OffsetCommit,
            Self::OffsetFetch { .. } => Api::OffsetFetch,
            Self::ListGroups => Api::ListGroups,
            Self::DescribeGroup { .. } => Api::DescribeGroup,
            Self::DeleteGroup { .. } => Api::DeleteGroup,
            Self::AlterGroupConfig { .. } => Api::AlterGroupConfig,
            Self::Nack(_) => Api::Nack,
            Self::InitProducerId { .. } => Api::InitProducerId,
            Self::AddOffsetsToTxn { .. } => Api::AddOffsetsToTxn,
            Self::EndTxn { .. } => Api::EndTxn,
            Self::AlterReplicas { .. } => Api::AlterReplicas,
            Self::DecommissionNode { .. } => Api::DecommissionNode,
            Self::DescribeReplication { .. } => Api::DescribeReplication,
        }
    }

    /// The consumer group a coordinator request is for (it is served by the group's
    /// coordinator, the owner of its partition of `__consumer_offsets`).
    pub fn group(&self) -> Option<&str> {
        match self {
            Self::ConsumerGroupHeartbeat(h) => Some(&h.group),
            Self::OffsetCommit(c) => Some(&c.group),
            Self::Nack(n) => Some(&n.group),
            Self::OffsetFetch { group, .. }
            | Self::DescribeGroup { group }
            | Self::DeleteGroup { group, .. }
            | Self::AlterGroupConfig { group, .. } => Some(group),
            _ => None,
        }
    }

    /// The transactional id a transaction coordinator request is for (served by the owner of
    /// its partition of `__transaction_state`).
    pub fn transactional_id(&self) -> Option<&str> {
        match self {
            Self::InitProducerId {
                transactional_id: Some(t),
                ..
            }
            | Self::AddOffsetsToTxn {
                transactional_id: t,
                ..
            }
            | Self::EndTxn {
                transactional_id: t,
                ..
            } => Some(t),
            _ => None,
        }
    }

    /// The partitions a data-plane request is for (it is served by their owners).
    pub fn partitions(&self) -> Vec<(&str, i32)> {
        match self {
            Self::ListOffsets {
                topic, partition, ..
            } => vec![(topic.as_str(), *partition)],
            Self::Produce(p) => p
                .partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition))
                .collect(),
            Self::Fetch(f) => f
                .partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Requests that change the cluster's metadata: the controller runs them.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            Self::CreateTopics(_)
                | Self::DeleteTopics(_)
                | Self::AlterConfigs { .. }
                | Self::AlterReplicas { .. }
                | Self::DecommissionNode { .. }
                | Self::InitProducerId {
                    transactional_id: None,
                    ..
                }
        )
    }
}
