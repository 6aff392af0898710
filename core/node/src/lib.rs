//! # quiver-node: a running node
//!
//! - [`run`]: [`run::run_node`] starts N shards (glommio executors, pinned or not), joins
//!   them in a channel mesh, binds one QUIC endpoint per shard at `base_port + shard`.
//! - [`data_dir_lock`]: one node per data directory (`flock` on `<data_dir>/.lock`).
//! - [`node_identity`]: the node and cluster a data directory belongs to (`node.json`).
//! - [`startup_checks`]: what makes io_uring/O_DIRECT brokers fail in the wild (io_uring
//!   blocked, memlock, a data directory without O_DIRECT, a port in use), each with a remedy.
//!
//! Where what comes next goes: the admin HTTP listener (Prometheus metrics, the admin API,
//! the web console) as `admin/`, beside the QUIC listeners, off the data path; the
//! inter-node listener (replication, a separate ALPN) beside them.

pub mod data_dir_lock;
pub mod node_identity;
pub mod run;
pub mod startup_checks;

pub use run::{run_node, Banner, NodeConfig, NodeError};
