//! # quiver-node: a running node
//!
//! - [`run`]: [`run::run_node`] starts N shards (glommio executors, pinned or not), joins
//!   them in a channel mesh, binds one QUIC endpoint per shard at `base_port + shard`.
//! - [`data_dir_lock`]: one node per data directory (`flock` on `<data_dir>/.lock`).

pub mod data_dir_lock;
pub mod run;

pub use run::{run_node, Banner, NodeConfig, NodeError};
