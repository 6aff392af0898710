//! [`Response`]: what a broker answers, per API.

use bytes::Bytes;

use crate::error::{ApiError, Outcome};
use crate::request::Api;
pub use quiver_group::coordinator::{GroupDescription, HeartbeatOutcome, MemberDescription};
pub use quiver_group::group::GroupState;
pub use quiver_group::types::CommittedOffset;
use quiver_group::TopicPartition;

/// What a `nack` led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackReply {
    /// Deliveries of the record so far.
    pub deliveries: u32,
    /// Deliver it again after this wait (`None`: it was dead-lettered).
    pub redeliver_after_ms: Option<u32>,
    /// Where the record was moved (a dead letter, or a copy in a delay topic): topic,
    /// partition, offset.
    pub dead_letter: Option<(String, i32, i64)>,
    /// Set when it went to a delay topic: delivered again from this time (ms since the
    /// epoch).
    pub delayed_until_ms: Option<i64>,
}

/// One group as `ListGroups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    pub state: String,
    pub members: u32,
}

/// The node a client talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInfo {
    pub node_id: i32,
    pub cluster_id: String,
    /// Port of shard i (shard-aware clients connect to the owner directly).
    pub shard_ports: Vec<u16>,
    /// The cluster's registered nodes: id and the `host:port` of its shard 0.
    pub nodes: Vec<(i32, String)>,
    /// The controller as this node sees it (known on shard 0).
    pub controller: Option<ControllerInfo>,
}

/// The controller group as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    pub leader: Option<i32>,
    pub term: u64,
    pub voters: Vec<i32>,
}

/// Where one partition is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub node_id: i32,
    pub shard: u16,
    /// `host:port` of the owning shard.
    pub address: String,
    /// The nodes holding a replica (`node_id`, the leader, among them).
    pub replicas: Vec<i32>,
    /// Bumped at every leader change.
    pub leader_epoch: i32,
}

/// One topic of a Metadata answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    pub outcome: Outcome,
}

/// How creating or deleting one topic went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    pub name: String,
    pub outcome: Outcome,
}

/// One topic's effective configs, or why they cannot be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfigs {
    pub name: String,
    pub configs: Vec<(String, String)>,
    pub outcome: Outcome,
}

/// How one partition of a produce went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartOutcome {
    /// Offset of the first record appended (-1: unknown, as with acks=none, or failed).
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    pub outcome: Outcome,
}

impl ProducePartOutcome {
    /// A partition that failed before any offset was assigned.
    pub fn failed(error: ApiError) -> Self {
        Self {
            base_offset: -1,
            last_offset: -1,
            log_start_offset: -1,
            outcome: Err(error),
        }
    }
}

/// What one partition of a fetch returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartOutcome {
    /// The offset below which records are readable (-1 when the partition failed).
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches (or runs of whole batches), in offset order.
    pub batches: Vec<Bytes>,
    pub outcome: Outcome,
    /// read_committed: the last stable offset (-1 otherwise).
    pub last_stable_offset: i64,
    /// read_committed: `(producer id, first offset)` of the aborted transactions
    /// overlapping the batches; the reader skips that producer's transactional batches from
    /// the first offset up to its abort marker.
    pub aborted: Vec<(i64, i64)>,
}

impl FetchPartOutcome {
    /// A partition that could not be read at all.
    pub fn failed(error: ApiError) -> Self {
        Self {
            high_watermark: -1,
            log_start_offset: -1,
            batches: Vec::new(),
            outcome: Err(error),
            last_stable_offset: -1,
            aborted: Vec::new(),
        }
    }
}

/// A partition this node leads, as its Raft group sees its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplication {
    pub topic: String,
    pub partition: i32,
    /// The leader's term (the leader epoch).
    pub leader_epoch: i32,
    pub log_end_offset: u64,
    pub high_watermark: u64,
    /// One per member of the group other than the leader.
    pub followers: Vec<FollowerProgress>,
}

/// A follower of a partition, as its leader tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerProgress {
    pub node: i32,
    /// A learner: a replica being added, not voting yet.
    pub learner: bool,
    /// It holds the log below this offset.
    pub log_end_offset: u64,
    /// It answered within the last election timeout.
    pub reachable: bool,
}

/// Every answer a broker gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Handshake(HandshakeInfo),
    Metadata(Vec<TopicInfo>),
    CreateTopics(Vec<TopicResult>),
    DeleteTopics(Vec<TopicResult>),
    DescribeConfigs(Vec<TopicConfigs>),
    AlterConfigs(Outcome),
    ListOffsets {
        offset: i64,
        outcome: Outcome,
    },
    /// One entry per partition of the request, in its order.
    Produce(Vec<ProducePartOutcome>),
    /// One entry per partition of the request, in its order.
    Fetch(Vec<FetchPartOutcome>),
    ConsumerGroupHeartbeat(Result<HeartbeatOutcome, ApiError>),
    /// `outcome` refuses the whole request (nothing committed); else one entry per partition.
    OffsetCommit {
        outcome: Outcome,
        partitions: Vec<(TopicPartition, Outcome)>,
    },
    OffsetFetch(Result<Vec<(TopicPartition, CommittedOffset)>, ApiError>),
    ListGroups(Result<Vec<GroupListing>, ApiError>),
    DescribeGroup(Result<GroupDescription, ApiError>),
    DeleteGroup(Outcome),
    AlterGroupConfig(Outcome),
    Nack(Result<NackReply, ApiError>),
    /// `(producer_id, producer_epoch)`.
    InitProducerId(Result<(i64, i16), ApiError>),
    AddOffsetsToTxn(Outcome),
    /// The producer id and epoch of the next transaction.
    EndTxn(Result<(i64, i16), ApiError>),
    AlterReplicas(Outcome),
    /// How many partitions started moving.
    DecommissionNode(Result<u32, ApiError>),
    DescribeReplication(Result<Vec<PartitionReplication>, ApiError>),
    /// The request as a whole was not served (the node is stopping, a shard did not answer).
    Refused {
        api: Api,
        error: ApiError,
    },
}

impl Response {
    /// Which API this answers.
    pub fn api(&self) -> Api {
        match self {
            Self::Handshake(_) => Api::Handshake,
            Self::Metadata(_) => Api::Metadata,
            Self::CreateTopics(_) => Api::CreateTopics,
            Self::DeleteTopics(_) => Api::DeleteTopics,
            Self::DescribeConfigs(_) => Api::DescribeConfigs,
            Self::AlterConfigs(_) => Api::AlterConfigs,
            Self::ListOffsets { .. } => Api::ListOffsets,
            Self::Produce(_) => Api::Produce,
            Self::Fetch(_) => Api::Fetch,
            Self::ConsumerGroupHeartbeat(_) => Api::ConsumerGroupHeartbeat,
            Self::OffsetCommit { .. } => Api::OffsetCommit,
            Self::OffsetFetch(_) => Api::OffsetFetch,
            Self::ListGroups(_) => Api::ListGroups,
            Self::DescribeGroup(_) => Api::DescribeGroup,
            Self::DeleteGroup(_) => Api::DeleteGroup,
            Self::AlterGroupConfig(_) => Api::AlterGroupConfig,
            Self::Nack(_) => Api::Nack,
            Self::InitProducerId(_) => Api::InitProducerId,
            Self::AddOffsetsToTxn(_) => Api::AddOffsetsToTxn,
            Self::EndTxn(_) => Api::EndTxn,
            Self::AlterReplicas(_) => Api::AlterReplicas,
            Self::DecommissionNode(_) => Api::DecommissionNode,
            Self::DescribeReplication(_) => Api::DescribeReplication,
            Self::Refused { api, .. } => *api,
        }
    }
}
