//! # quiver-raft: the consensus core, sans-IO, and its deterministic simulator
//!
//! One Raft group as a state machine with no I/O, no clock and no threads: the driver calls
//! [`RaftNode::tick`], [`RaftNode::step`], [`RaftNode::propose`] and
//! [`RaftNode::persisted`], and carries out the [`Action`]s returned, **in order**: a
//! `Persist` must be durable before any later `Send` of the same list goes out (term, vote and
//! entries are on disk before a message that depends on them).
//!
//! - [`types`]: entries, messages, actions, configuration.
//! - [`node`]: the state machine: pre-vote and check-quorum elections, leader stickiness,
//!   pipelined AppendEntries with fast back-off, commit by quorum of durable copies.
//! - [`sim`]: a seeded simulator of 3 to 5 nodes over a lossy, reordering, partitionable
//!   network and crash-prone disks, checking Raft's invariants after every step.
//!
//! Not yet (issue 24 continues): membership changes, learners, leadership transfer, a moving
//! log start, many groups per shard with coalesced heartbeats.

pub mod node;
pub mod sim;
pub mod types;

pub use node::RaftNode;
pub use types::{Action, Config, Entry, HardState, Message, NodeId, Role};
