//! Topic-partitions, assignments, group configuration and the node-wide limits.

use std::collections::{BTreeMap, BTreeSet};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// The partitions a member owns or should own.
pub type Assignment = BTreeSet<TopicPartition>;

/// Partition counts of the topics a group subscribes to (a topic absent: does not exist).
pub type TopicCounts = BTreeMap<String, i32>;

/// Which assignor computes a group's target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssignorKind {
    /// Each topic's partitions in contiguous ranges over the members subscribed to it.
    Range,
    /// All partitions spread evenly (counts differ by at most one), moving as few as
    /// possible from their current owners.
    #[default]
    Uniform,
}

impl AssignorKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Range => "range",
            Self::Uniform => "uniform",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "range" => Some(Self::Range),
            "uniform" | "sticky" => Some(Self::Uniform),
            _ => None,
        }
    }
}

/// A group's configuration (`quiver group alter-config`), within the node's [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// A member not heard from for this long is removed and its partitions reassigned.
    pub session_timeout_ms: u32,
    /// How often members heartbeat (told to them in every heartbeat answer).
    pub heartbeat_interval_ms: u32,
    pub assignor: AssignorKind,
    /// Deliveries of one record (the first and the redeliveries after each `nack`) before
    /// the coordinator moves it to the dead-letter topic.
    pub max_deliveries: u32,
    /// Wait before each redelivery after a `nack` (the n-th entry before the (n+1)-th
    /// delivery; the last entry repeats).
    pub redelivery_backoff_ms: Vec<u32>,
    /// Where dead-lettered records go; empty: `<topic>.<group>.dlq`.
    pub dlq_topic: String,
    /// Non-blocking retries: 0 (default) redelivers a failed record in place, blocking its
    /// partition for the backoff; n > 0 moves it to the delay topic
    /// `<topic>.<group>.retry.<k>` (k = its failures so far, at most n) and the partition
    /// goes on; members read the delay topics too, each record after its backoff.
    pub retry_levels: u32,
}

/// Most delay topics per source topic.
pub const MAX_RETRY_LEVELS: u32 = 10;

/// Most entries of `redelivery_backoff_ms`.
pub const MAX_BACKOFF_STEPS: usize = 16;
/// Longest redelivery wait, in milliseconds (an hour: longer waits belong in a delay topic).
pub const MAX_REDELIVERY_BACKOFF_MS: u32 = 3_600_000;
/// Largest `max_deliveries`.
pub const MAX_DELIVERIES: u32 = 1_000;

impl Default for GroupConfig {
    /// Kafka's KIP-848 defaults: 45 s session, 5 s heartbeat; a failing record is delivered
    /// 5 times, 1 s then 5 s then 30 s apart.
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            assignor: AssignorKind::Uniform,
            max_deliveries: 5,
            redelivery_backoff_ms: vec![1_000, 5_000, 30_000],
            dlq_topic: String::new(),
            retry_levels: 0,
        }
    }
}

impl GroupConfig {
    /// The keys `with_changes` takes, as `quiver group alter-config` documents them.
    pub const KEYS: [&'static str; 7] = [
        "session_timeout_ms",
        "heartbeat_interval_ms",
        "assignor",
        "max_deliveries",
        "redelivery_backoff_ms",
        "dlq_topic",
        "retry_levels",
    ];

    /// The wait before the delivery that follows delivery number `deliveries` (1-based).
    pub fn backoff_ms(&self, deliveries: u32) -> u32 {
        let i = (deliveries.max(1) - 1) as usize;
        self.redelivery_backoff_ms
            .get(i)
            .or(self.redelivery_backoff_ms.last())
            .copied()
            .unwrap_or(0)
    }

    /// The delay topic of retry `level` (1-based) for records of `topic` consumed by `group`.
    pub fn retry_topic_for(topic: &str, group: &str, level: u32) -> String {
        format!("{topic}.{group}.retry.{level}")
    }

    /// The dead-letter topic for records of `topic` consumed by `group`.
    pub fn dlq_topic_for(&self, topic: &str, group: &str) -> String {
        if self.dlq_topic.is_empty() {
            format!("{topic}.{group}.dlq")
        } else {
            self.dlq_topic.clone()
        }
    }

    /// This configuration with the named keys changed; an unknown key or a bad value is an
    /// error naming it (bounds are checked by the coordinator).
    pub fn with_changes(&self, changes: &[(String, String)]) -> Result<Self, String> {
        let mut c = self.clone();
        for (key, value) in changes {
            let number = || {
                value
                    .parse::<u32>()
                    .map_err(|_| format!("{key} = {value:?}: expected a number of milliseconds"))
            };
            match key.as_str() {
                "session_timeout_ms" => c.session_timeout_ms = number()?,
                "heartbeat_interval_ms" => c.heartbeat_interval_ms = number()?,
                "assignor" => {
                    c.assignor = AssignorKind::parse(value).ok_or_else(|| {
                        format!("assignor = {value:?}: expected \"uniform\" or \"range\"")
                    })?
                }
                "max_deliveries" => {
                    c.max_deliveries = value.parse::<u32>().map_err(|_| {
                        format!("{key} = {value:?}: expected a number of deliveries")
                    })?
                }
                "redelivery_backoff_ms" => {
                    c.redelivery_backoff_ms = value
                        .split(',')
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| v.trim().parse::<u32>())
                        .collect::<Result<_, _>>()
                        .map_err(|_| {
                            format!("{key} = {value:?}: expected milliseconds separated by commas, e.g. 1000,5000,30000")
                        })?
                }
                "dlq_topic" => c.dlq_topic = value.clone(),
                "retry_levels" => {
                    c.retry_levels = value.parse::<u32>().map_err(|_| {
                        format!("{key} = {value:?}: expected a number of delay topics (0: retry in place)")
                    })?
                }
                _ => {
                    return Err(format!(
                        "unknown group config key {key:?}; known keys: {}",
                        Self::KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(c)
    }
}

/// Node-wide bounds every group and request is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_groups: usize,
    pub max_members_per_group: usize,
    /// Longest member id, instance id or group id.
    pub max_id_bytes: usize,
    /// Longest metadata string of a committed offset.
    pub max_offset_metadata_bytes: usize,
    /// Most topics one member may subscribe to.
    pub max_subscribed_topics: usize,
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
    pub min_heartbeat_interval_ms: u32,
    pub max_heartbeat_interval_ms: u32,
    /// Longest a member may take to revoke partitions before it is removed.
    pub max_rebalance_timeout_ms: u32,
    /// Most failed records (`nack`) one group tracks at once.
    pub max_failed_records_per_group: usize,
    /// Most transactional ids whose last transaction one group remembers (beyond it the
    /// one that committed longest ago is forgotten).
    pub max_txn_ids_per_group: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_groups: 10_000,
            max_members_per_group: 1_000,
            max_id_bytes: 255,
            max_offset_metadata_bytes: 4_096,
            max_subscribed_topics: 1_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 1_800_000,
            min_heartbeat_interval_ms: 100,
            max_heartbeat_interval_ms: 60_000,
            max_rebalance_timeout_ms: 1_800_000,
            max_failed_records_per_group: 10_000,
            max_txn_ids_per_group: 10_000,
        }
    }
}

/// The transaction whose end writes offsets: its transactional id and the producer id and
/// epoch its markers carry. A later transaction of the id has a greater `(producer_id,
/// epoch)`; a group takes no offsets from a transaction older than the last it took from
/// that id (a late call must not move the offsets back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnStamp {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
}

/// A committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// Whatever the committer attached (at most `max_offset_metadata_bytes`).
    pub metadata: String,
    /// When it was committed (ms since the epoch, the coordinator's clock).
    pub commit_time_ms: i64,
}
