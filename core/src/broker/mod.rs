//! The broker: shards that own partitions and answer the wire protocol.
//!
//! - [`node`]: [`node::run_node`] starts N shards (glommio executors, pinned or not), joins
//!   them in a channel mesh, binds one QUIC endpoint per shard at `base_port + shard`.
//! - [`shard`]: one shard — its partition logs, request dispatch, forwarding of requests for
//!   partitions another shard owns, and (on shard 0, the controller) metadata changes.
//! - [`request`] / [`response`]: decoding requests and encoding responses (sans-IO).
//! - [`data_dir_lock`]: one node per data directory (`flock` on `<data_dir>/.lock`).
//! - [`metadata`]: topics, configs and the shard table (`metadata.json`).
//! - [`topic_config`]: topic `key=value` configs validated into log configs.

mod control;
pub mod data_dir_lock;
pub mod metadata;
pub mod node;
pub mod request;
pub mod response;
pub mod shard;
pub mod topic_config;

/// The version of every API this node speaks.
pub const API_VERSION: u16 = quiver_schema::API_VERSION;
/// Upper bound on partitions per topic.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;
