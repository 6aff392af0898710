//! Replicated partitions: each partition of a topic with several replicas is a Raft group
//! whose log is the partition's segment log (decision 0027).
//!
//! - [`log_mapping`]: indexes ↔ offsets, entries ↔ batches (records, and the control batches
//!   for a new leader's entry and memberships), a `PersistEntries` as a truncation and
//!   appends, the core's view of a log restored after a restart. Sans-IO.
//!
//! - [`driver`]: the shard's driver of its partition groups (a `MultiRaft` per shard, one
//!   clock, envelopes per peer shard over the node links), their logs in the segment logs,
//!   commits as high watermarks, new leaders recorded in the controller (`SetLeader`).
//! - [`preferred_leader`]: leadership handed back to a partition's first replica once it is
//!   up and caught up (a returning node gets its partitions back). Sans-IO.
//! - [`replica_move`]: a partition moving to other replicas (alter-replicas, decommission):
//!   learners first, promoted once caught up, then the leaving removed. Sans-IO.
//! - [`membership_store`]: the group's membership entries listed beside its log, so a
//!   restart knows who votes. Sans-IO.
//! - [`reopen`]: a replica whose group failed to persist is reopened from disk (retried
//!   until the disk allows it).
//! - [`produce`]: a batch to a replicated partition: checked, proposed, answered at commit
//!   (`acks=all`) or once in the leader's log (`acks=leader`).

pub mod driver;
pub mod log_mapping;
pub mod membership_store;
pub mod preferred_leader;
pub mod produce;
pub mod reopen;
pub mod replica_move;
