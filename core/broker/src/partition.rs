//! [`Partition`]: a partition this shard serves — its log and its replica state.

use std::collections::BTreeMap;

use quiver_storage::PartitionLog;

use crate::replica::{LogMarks, PartitionOffsets, ReplicaState};

/// One partition open on this shard. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct Partition {
    pub log: PartitionLog,
    pub replica: ReplicaState,
    /// The topic configs the log was opened with (a change reopens it).
    pub configs: BTreeMap<String, String>,
}

impl Partition {
    /// The log's own marks.
    pub fn marks(&self) -> LogMarks {
        LogMarks {
            log_start_offset: self.log.log_start_offset(),
            log_end_offset: self.log.log_end_offset(),
            durable_offset: self.log.durable_offset(),
        }
    }

    /// The partition's marks as clients see them (high watermark included).
    pub fn offsets(&self) -> PartitionOffsets {
        self.replica.offsets(self.marks())
    }
}
