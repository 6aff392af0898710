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
    /// A replicated partition's Raft group (its id and marks); `None`: a single replica.
    pub group: Option<(u64, std::rc::Rc<crate::replication::driver::GroupHandle>)>,
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
        let mut o = self.replica.offsets(self.marks());
        if let Some((_, g)) = &self.group {
            // Readable: what a quorum holds (the commit index is the high watermark).
            o.high_watermark = o.durable_offset.min(g.commit_index.get());
        }
        o
    }

    /// Resolves once offset `from` is readable (below the high watermark).
    pub async fn wait_readable(&self, from: u64) {
        match &self.group {
            None => self.log.wait_for_offset(from).await,
            Some((_, g)) => loop {
                let waiter = g.progress.register();
                if self.offsets().high_watermark > from {
                    return;
                }
                let _ = waiter.await;
            },
        }
    }
}
