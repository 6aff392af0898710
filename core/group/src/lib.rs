//! # quiver-group: the consumer group coordinator, sans-IO
//!
//! The decisions of a consumer group coordinator, with no I/O, no clock and no runtime: the
//! node's shard feeds it requests and the time, persists the records it returns to its
//! partition of `__consumer_offsets` before it answers, and replays those records on start.
//! Every state change is a [`record::Record`], and the state is changed only by applying
//! records, so a coordinator rebuilt from the log is the one that wrote it.
//!
//! - [`types`]: topic-partitions, assignments, group configuration and the node-wide limits.
//! - [`assignor`]: the target assignment, server side: `range` and `uniform` (sticky, even).
//! - [`member`]: one member and its incremental reconciliation toward its target (KIP-848):
//!   partitions are revoked before they are given to another member.
//! - [`group`]: one group: epochs, members, target assignment, committed offsets.
//! - [`coordinator`]: the groups of one coordinator partition: heartbeat, offset commit and
//!   fetch, expiry, describe, list, delete.
//! - [`coordinator_key`]: which partition of an internal topic coordinates a key (Kafka's
//!   hash), shared by the broker's routing and the client.
//! - [`record`]: the records of `__consumer_offsets` (key/value, tombstones), their codec.
//! - [`error`]: typed errors (`FencedMemberEpoch`, `UnknownMemberId`, `StaleGeneration`, ...).

pub mod assignor;
pub mod coordinator;
pub mod coordinator_key;
pub mod error;
pub mod group;
pub mod member;
pub mod record;
pub mod types;

pub use coordinator::{
    Coordinator, Heartbeat, HeartbeatOutcome, Nack, NackOutcome, OffsetCommit, Origin,
};
pub use error::GroupError;
pub use record::Record;
pub use types::{Assignment, GroupConfig, Limits, TopicPartition};

/// The internal topic that holds every group's state and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
