//! A transaction's state, the node-wide limits, and what the coordinator asks the node to do.

use std::collections::BTreeSet;

pub use quiver_group::TopicPartition;

/// Where a transactional id's current transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Initialised, no transaction open.
    Empty,
    /// Partitions or offsets were added: a transaction is open.
    Ongoing,
    /// Commit decided (durable): markers are being written.
    PrepareCommit,
    /// Abort decided (durable): markers are being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl Status {
    pub fn code(self) -> u8 {
        match self {
            Self::Empty => 0,
            Self::Ongoing => 1,
            Self::PrepareCommit => 2,
            Self::PrepareAbort => 3,
            Self::CompleteCommit => 4,
            Self::CompleteAbort => 5,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }

    /// Markers decided but not all written.
    pub fn is_preparing(self) -> bool {
        matches!(self, Self::PrepareCommit | Self::PrepareAbort)
    }
}

/// Offsets a transaction commits for a consumer group when it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffsets {
    pub group: String,
    /// `(partition, next offset to read, metadata)`.
    pub offsets: Vec<(TopicPartition, i64, String)>,
}

/// How the previous transaction ended: lets a retried end be answered as the first was,
/// and tells a producer whose transaction timed out why its epoch moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The producer id and epoch the ending request carried (or the timed-out transaction's).
    pub producer_id: i64,
    pub epoch: i16,
    pub committed: bool,
    /// Aborted by the coordinator (timeout), not by the producer.
    pub timed_out: bool,
}

/// One transactional id's state (the value of its record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The producer id and epoch the producer uses now.
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: u32,
    pub status: Status,
    /// The partitions the open (or ending) transaction wrote to.
    pub partitions: BTreeSet<TopicPartition>,
    /// Offsets committed with the transaction.
    pub offsets: Vec<GroupOffsets>,
    /// When the open transaction began (ms since the epoch, the node's clock).
    pub started_ms: i64,
    /// Last change (ms since the epoch): idle ids expire from here.
    pub updated_ms: i64,
    /// While preparing: the producer id and epoch the markers carry.
    pub marker_producer: (i64, i16),
    pub last_end: Option<Ended>,
}

/// Markers to write to every partition of a transaction (and offsets to commit before,
/// when it commits). When all are durable the node calls `Coordinator::complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub partitions: Vec<TopicPartition>,
    pub offsets: Vec<GroupOffsets>,
}

/// Node-wide bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest transaction timeout a producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`: 15 minutes).
    pub max_timeout_ms: u32,
    /// Transactional ids per coordinator partition.
    pub max_ids: usize,
    /// Partitions in one transaction.
    pub max_partitions: usize,
    /// Offsets (partitions) committed with one transaction.
    pub max_offsets: usize,
    /// Longest transactional id, in bytes.
    pub max_id_bytes: usize,
    /// An id idle for this long is forgotten (Kafka's `transactional.id.expiration.ms`:
    /// 7 days).
    pub id_expiration_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
            max_ids: 100_000,
            max_partitions: 10_000,
            max_offsets: 10_000,
            max_id_bytes: 249,
            id_expiration_ms: 7 * 86_400_000,
        }
    }
}

/// The epochs a producer id may use: markers go up to `MAX_EPOCH`, and a producer whose next
/// epoch would pass `LAST_PRODUCER_EPOCH` continues under a fresh producer id.
pub const MAX_EPOCH: i16 = i16::MAX - 1;
pub const LAST_PRODUCER_EPOCH: i16 = i16::MAX - 3;
