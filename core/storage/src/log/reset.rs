//! A reset: the log emptied and started again at a later offset (Kafka's
//! `truncateFullyAndStartAt`) — a replica whose leader's log starts past this one's end
//! (retention deleted what it lacks) continues from the leader's start.

use std::rc::Rc;
use std::time::Instant;

use super::{Inner, PartitionLog};
use crate::epoch::LeaderEpochMap;
use crate::error::Result;
use crate::files;
use crate::producer_state::ProducerStates;
use crate::segment::SegmentFile;
use crate::segment_meta::SegmentMeta;
use crate::segments::Segment;

impl PartitionLog {
    /// Drops every batch and starts the log at `offset` (not below its start), `epoch`
    /// being the leader epoch in force there. Appends not yet written fail; the next append
    /// gets `offset`.
    pub async fn reset_to(&self, offset: u64, epoch: i32) -> Result<()> {
        let _gate = self.inner.write_gate().await?;
        self.inner.reset_locked(offset, epoch).await
    }
}

impl Inner {
    async fn reset_locked(&self, offset: u64, epoch: i32) -> Result<()> {
        let start = self.state.borrow().log_start_offset();
        if offset < start {
            return Err(self.state.borrow().out_of_range(offset));
        }
        // Every batch goes first (the write-behind too), noted in the commit log, so no
        // recovery brings one back.
        self.truncate_locked(
            start,
            "the log was reset to start at its leader's log start",
        )
        .await?;
        let victims = if offset == self.state.borrow().active().meta.base_offset {
            Vec::new()
        } else {
            let leftover = files::segment_path(&self.dir, offset);
            if std::fs::metadata(&leftover).is_ok() {
                files::remove(&leftover).await?;
            }
            let file = Rc::new(SegmentFile::create(&self.dir, offset).await?);
            let mut st = self.state.borrow_mut();
            st.rolled(
                Segment {
                    meta: SegmentMeta::empty(offset),
                    file,
                },
                Instant::now(),
            );
            let sealed: Vec<u64> = st.segments.sealed().map(|s| s.meta.base_offset).collect();
            st.remove_segments(&sealed).0
        };
        for seg in victims {
            files::remove(&seg.file.path).await?;
            files::remove(&files::index_path(&self.dir, seg.meta.base_offset)).await?;
        }
        for snapshot in files::list_producer_snapshots(&self.dir)? {
            files::remove(&files::producer_snapshot_path(&self.dir, snapshot)).await?;
        }
        let epochs = {
            let mut st = self.state.borrow_mut();
            st.next_offset = offset;
            st.durable_offset = offset;
            st.producers = ProducerStates::default();
            st.cache.truncate_from(0);
            st.compacted_until = 0;
            let mut epochs = LeaderEpochMap::default();
            epochs.assign(epoch, offset);
            st.epochs = epochs;
            st.epochs.encode()
        };
        files::write_atomically(&self.dir, files::EPOCH_CHECKPOINT, epochs.into_bytes()).await?;
        files::sync_dir(&self.dir).await?;
        tracing::info!(dir = %self.dir.display(), log_start_offset = offset, "the log was reset to start at its leader's log start");
        Ok(())
    }
}
