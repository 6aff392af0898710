//! # quiver-cluster: the cluster's metadata and the controller's decisions (sans-IO)
//!
//! - [`model`]: nodes, topics, configs, and per partition its shard, replicas, leader and
//!   leader epoch.
//! - [`command`]: the controller's commands (what its Raft group's entries hold) and their
//!   codec.
//! - [`apply`]: the state machine every node runs over the controller's log.
//! - [`controller`]: the controller group: a Raft member applying committed commands to
//!   its metadata copy, with the metadata image as its snapshot.
//! - [`cluster_guard`]: envelopes of another cluster dropped; a node whose data directory
//!   is another cluster's refused.
//! - [`controller_log`]: the controller group's log file format (records with CRC-32C,
//!   replay, torn-tail detection, rewrite).
//! - [`messages`]: what nodes send each other on the internal protocol (Raft envelopes,
//!   requests to the controller leader and replies), with a bounded, typed decoder.
//! - [`placement`]: replicas over distinct nodes and racks, leaders and shards evenly.

pub mod apply;
pub mod cluster_guard;
pub mod command;
pub mod controller;
pub mod controller_log;
pub mod messages;
pub mod model;
pub mod placement;

pub use apply::apply;
pub use command::{Command, CommandError};
pub use model::{Metadata, NodeId, NodeMeta, PartitionMeta, TopicMeta};
