//! # quiver-broker: the service a shard runs, protocol-neutral
//!
//! A shard takes typed requests ([`quiver_broker_api::Request`], with the sender's
//! [`quiver_broker_api::RequestContext`]) from whichever listener decoded them and answers
//! typed responses; it knows no wire format.
//!
//! - [`shard`]: one shard — its partitions, request dispatch, topic and offset queries.
//!   [`produce`] and [`fetch`] serve the data path; [`control`] changes and applies metadata
//!   (on the controller shard); [`forward`] carries typed requests between shards.
//! - [`node_calls`]: a transaction's steps on another node's shard (markers, adding a
//!   partition, a transaction's offsets), over the node links.
//! - Sans-IO decisions, unit-tested without sockets or disks: [`routing`] (partition or
//!   coordinator key → shard), [`acks`] (when a produce answers, with what), [`long_poll`]
//!   (a fetch's budget, answer or wait), [`replica`] (leader epoch; log end, durable offset
//!   and high watermark kept apart), [`batches`] (records into whole batches).
//! - [`metadata`]: topics, configs, and each partition's shard, replicas, leader and epoch
//!   (`metadata.json`); [`topic_config`]: topic `key=value` configs validated into log
//!   configs; [`partition`]: a partition open on this shard.
//!
//! - [`groups`]: the consumer group coordinators (the sans-IO `quiver-group` core, loaded
//!   from and persisted to this shard's partitions of `__consumer_offsets`).
//!
//! - [`txn`]: the transaction coordinators (the sans-IO `quiver-txn` core on this shard's
//!   partitions of `__transaction_state`), the markers they write, and the partitions
//!   joining a transaction from the produce path.
//! - [`coordinator_log`]: what both coordinators share: records appended to and replayed
//!   from their internal topic.
//! - [`controller_runtime`]: the node's controller member on shard 0 (a clock, the log
//!   file, the links to the other voters); metadata changes go through it to the
//!   controller leader, applied metadata comes back to every shard.
//! - [`controller_store`]: the controller member's log file (`controller.log`), replayed at
//!   start with its torn tail cut off, appended and fdatasynced per round, rewritten when it
//!   grows.
//!
//! - [`replication`]: replicated partitions (each a Raft group over its segment log);
//!   today the sans-IO mapping of the Raft log onto the segment log.
//!
//! Where what comes next goes: `auth/` (authenticate the
//! context's peer, authorize each request against ACLs); the replication of a partition
//! behind [`replica`] (core/raft holds the consensus core, core/cluster the metadata state
//! machine).

pub mod acks;
pub mod batches;
pub mod control;
pub mod controller_runtime;
pub mod controller_store;
pub(crate) mod coordinator_log;
pub mod dead_letter;
pub mod fetch;
pub mod forward;
pub mod groups;
pub mod long_poll;
pub mod metadata;
pub mod node_calls;
pub mod partition;
pub mod produce;
pub mod producer_ids;
pub mod replica;
pub mod replication;
pub mod routing;
pub mod shard;
pub mod topic_config;
pub mod txn;

pub use quiver_broker_api::API_VERSION;

/// Upper bound on partitions per topic.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;
