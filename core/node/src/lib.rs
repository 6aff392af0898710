//! # quiver-node: a running node
//!
//! - [`run`]: [`run::run_node`] starts N shards (glommio executors, pinned or not), joins
//!   them in a channel mesh, binds one QUIC endpoint per shard at `base_port + shard`.
//! - [`controller_boot`]: the controller member before the shards start (log replayed; a
//!   lone node elected, its cluster initialized, itself registered, `metadata.json` carried
//!   over); shard 0 then runs it (`quiver_broker::controller_runtime`) over the node's
//!   internal QUIC links.
//! - [`data_dir_lock`]: one node per data directory (`flock` on `<data_dir>/.lock`).
//! - [`node_identity`]: the node and cluster a data directory belongs to (`node.json`).
//! - [`startup_checks`]: what makes io_uring/O_DIRECT brokers fail in the wild (io_uring
//!   blocked, memlock, a data directory without O_DIRECT, a port in use), each with a remedy.
//!
//! Where what comes next goes: the admin HTTP listener (Prometheus metrics, the admin API,
//! the web console) as `admin/`, beside the QUIC listeners, off the data path.

pub mod controller_boot;
pub mod data_dir_lock;
pub mod node_identity;
pub mod run;
pub mod startup_checks;

pub use run::{run_node, Banner, NodeConfig, NodeError};
