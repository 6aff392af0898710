//! A partition's replica state (sans-IO): its leader epoch and the offsets that matter to
//! clients and to replication, kept apart.
//!
//! - **log end offset**: the offset the next append gets (appended, maybe not durable yet);
//! - **durable offset**: below it, this replica's batches are written per the topic's flush
//!   policy (fsynced under `every_append`);
//! - **high watermark**: below it, batches are committed by the partition's replicas, and
//!   only those are readable. With one replica (a single node) it is the durable offset; with
//!   several it will be what a quorum has made durable.

use quiver_broker_api::{ApiError, ErrorCode};

use crate::metadata::{NodeId, PartitionMeta};

/// A partition's marks, as clients see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub durable_offset: u64,
    pub high_watermark: u64,
}

/// What the log says about itself; the replica state turns it into [`PartitionOffsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMarks {
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub durable_offset: u64,
}

/// This node's replica of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    node: NodeId,
    leader: NodeId,
    leader_epoch: i32,
    replicas: Vec<NodeId>,
}

impl ReplicaState {
    /// The state `meta` gives this node's replica.
    pub fn new(node: NodeId, meta: &PartitionMeta) -> Self {
        Self {
            node,
            leader: meta.leader,
            leader_epoch: meta.leader_epoch,
            replicas: meta.replicas.clone(),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn is_leader(&self) -> bool {
        self.leader == self.node
    }

    /// The epoch to stamp an append with, or why this replica takes no appends.
    pub fn append_epoch(&self, topic: &str, partition: i32) -> Result<i32, ApiError> {
        if !self.is_leader() {
            return Err(ApiError::new(
                ErrorCode::NotOwner,
                format!(
                    "node {} is not the leader of {topic}/{partition} (node {} is, at epoch {}); refresh metadata and send it there",
                    self.node, self.leader, self.leader_epoch
                ),
            ));
        }
        Ok(self.leader_epoch)
    }

    /// The high watermark given this replica's durable offset, for a single replica: the
    /// durable offset. A replicated partition's is its group's commit index, never past the
    /// durable offset either (`Partition::offsets`).
    pub fn high_watermark(&self, durable_offset: u64) -> u64 {
        durable_offset
    }

    /// The partition's marks given the log's.
    pub fn offsets(&self, log: LogMarks) -> PartitionOffsets {
        debug_assert!(log.durable_offset <= log.log_end_offset);
        PartitionOffsets {
            log_start_offset: log.log_start_offset,
            log_end_offset: log.log_end_offset,
            durable_offset: log.durable_offset,
            high_watermark: self.high_watermark(log.durable_offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(leader: NodeId, epoch: i32) -> PartitionMeta {
        PartitionMeta {
            shard: 0,
            replicas: vec![leader],
            leader,
            leader_epoch: epoch,
            target: None,
        }
    }

    #[test]
    fn a_single_replica_reads_up_to_what_is_durable_not_what_is_appended() {
        let r = ReplicaState::new(0, &meta(0, 3));
        let o = r.offsets(LogMarks {
            log_start_offset: 2,
            log_end_offset: 10,
            durable_offset: 7,
        });
        assert_eq!(o.high_watermark, 7);
        assert_eq!((o.log_end_offset, o.durable_offset), (10, 7));
        assert_eq!(
            r.append_epoch("t", 0),
            Ok(3),
            "appends carry the leader epoch"
        );
    }

    #[test]
    fn a_replica_that_does_not_lead_refuses_appends_and_names_the_leader() {
        let r = ReplicaState::new(1, &meta(0, 4));
        let e = r.append_epoch("t", 2).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotOwner);
        assert!(
            e.message.contains("node 0") && e.message.contains("epoch 4"),
            "{e}"
        );
    }
}
