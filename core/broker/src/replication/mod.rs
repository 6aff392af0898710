//! Replicated partitions: each partition of a topic with several replicas is a Raft group
//! whose log is the partition's segment log (decision 0027).
//!
//! - [`log_mapping`]: indexes ↔ offsets, entries ↔ batches (records, and the control batches
//!   for a new leader's entry and memberships), a `PersistEntries` as a truncation and
//!   appends, the core's view of a log restored after a restart. Sans-IO.
//!
//! Next (issue 25): the shard's driver of its partition groups (a `MultiRaft` per shard, one
//! clock, envelopes per peer shard over the node links), `acks=all` at commit, fetch up to
//! the commit index, leader changes recorded in the controller (`SetLeader`).

pub mod log_mapping;
