//! # quiver-raft: the consensus core, sans-IO, and its deterministic simulator
//!
//! One Raft group as a state machine with no I/O, no clock and no threads: the driver calls
//! [`RaftNode::tick`], [`RaftNode::step`], [`RaftNode::propose`] and
//! [`RaftNode::persisted`], and carries out the [`Action`]s returned, **in order**: a
//! `Send` goes out only once every `Persist`/`InstallSnapshot` returned before it (by any
//! call) is durable (term, vote and entries are on disk before a message that depends on
//! them).
//!
//! - [`types`]: entries, messages, actions, configuration.
//! - [`log`]: the log as the core holds it: a snapshot, the epoch map and memberships of the
//!   whole log, and its tail of entries in memory; an entry spans one or more indexes (a
//!   partition's batch spans its offsets).
//! - [`node`]: the state machine: pre-vote and check-quorum elections, leader stickiness,
//!   pipelined AppendEntries within entry and byte limits, fast back-off, commit by quorum of
//!   durable copies, heartbeats that carry a safe commit index, leadership transfer,
//!   single-server membership changes with learners, and a log start that moves (compaction,
//!   followers behind it reset by snapshot).
//! - [`read_index`]: linearizable reads: the leader confirms it still leads (a quorum
//!   echoing a heartbeat round opened after the read) before a read is served.
//! - [`codec`]: the bytes of an envelope between two nodes (bounded, typed errors, fuzzed).
//! - [`multi`]: the groups of one shard: one clock, one outbox per peer node, messages of
//!   all groups between two nodes coalesced into one envelope per round.
//! - [`sim`]: a seeded simulator of 3 to 5 nodes over a lossy, reordering, partitionable
//!   network and crash-prone disks, changing membership and compacting under the faults,
//!   checking Raft's invariants after every step.

pub mod codec;
pub mod log;
pub mod multi;
pub mod node;
pub mod read_index;
pub mod sim;
pub mod types;

pub use multi::{Envelope, GroupId, MultiConfig, MultiError, MultiRaft};
pub use node::RaftNode;
pub use types::{
    Action, CompactError, Config, Entry, HardState, Membership, MembershipChange, Message, NodeId,
    Payload, ProposeError, Role, Snapshot,
};
