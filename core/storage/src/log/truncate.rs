//! Truncation's driver: cuts where [`super::state::LogState::plan_truncation`] says — the
//! write-behind in memory, or the segment files — then records it in the commit log.

use std::rc::Rc;

use super::state::{TailPage, TruncationPlan};
use super::Inner;
use crate::commit_log::format::{Entry as WalEntry, NO_TRUNCATION};
use crate::error::Result;
use crate::files;
use crate::segment::{align_down, BatchWalker, SegmentFile};
use crate::segment_meta::SegmentMeta;

impl Inner {
    /// Truncation with the write gate held. Also the rollback after a failed write.
    pub(crate) async fn truncate_locked(&self, offset: u64, why: &str) -> Result<u64> {
        self.state.borrow_mut().appends_blocked = true;
        let result = self.truncate_blocked(offset, why).await;
        self.state.borrow_mut().appends_blocked = false;
        self.room_waiters.wake_all();
        result
    }

    async fn truncate_blocked(&self, offset: u64, why: &str) -> Result<u64> {
        let plan = {
            let mut st = self.state.borrow_mut();
            let plan = st.plan_truncation(offset);
            st.fail_pending(why);
            plan
        };
        match plan {
            TruncationPlan::OutOfRange => Err(self.state.borrow().out_of_range(offset)),
            TruncationPlan::InWriteBehind => {
                let (new_end, epochs) = self.state.borrow_mut().truncate_write_behind(offset);
                self.finish_truncation(new_end, epochs).await
            }
            TruncationPlan::InSegments => self.truncate_segments(offset).await,
        }
    }

    /// Cuts the segment files at the batch holding `offset`.
    async fn truncate_segments(&self, offset: u64) -> Result<u64> {
        let (removed, file, meta) = {
            let mut st = self.state.borrow_mut();
            let removed = st.cut_segments_after(offset);
            let seg = st.active();
            (removed, seg.file.clone(), seg.meta.clone())
        };
        for seg in &removed {
            files::remove(&seg.file.path).await?;
            files::remove(&seg.file.path.with_extension("index")).await?;
        }
        let (position, new_end) = batch_boundary(&file, &meta, offset).await?;
        files::remove(&files::index_path(&self.dir, meta.base_offset)).await?;
        file.truncate(position).await?;
        file.sync().await?;
        let aligned = align_down(position);
        let tail = file.read(aligned, (position - aligned) as usize).await?;
        files::sync_dir(&self.dir).await?;
        let epochs = self.state.borrow_mut().segments_truncated(
            position,
            new_end,
            TailPage {
                aligned_position: aligned,
                bytes: tail.to_vec(),
            },
        );
        self.finish_truncation(new_end, epochs).await
    }

    /// The last steps of a truncation to `new_end`: the epoch checkpoint and the commit log
    /// note.
    async fn finish_truncation(&self, new_end: u64, epochs: Option<String>) -> Result<u64> {
        if let Some(text) = epochs {
            files::write_atomically(&self.dir, files::EPOCH_CHECKPOINT, text.into_bytes()).await?;
        }
        // Recovery must not re-append what the commit log holds above the new end. If the
        // commit log cannot take the note (it failed too: a full disk), the truncation stands;
        // a crash before later appends overwrite those offsets could then bring back batches
        // that were never acknowledged — never lose acknowledged ones.
        if let Err(e) = self.log_to_commit_log(Some(new_end), Vec::new()).await {
            tracing::warn!(dir = %self.dir.display(), "could not log a truncation to {new_end} in the commit log: {e}");
        }
        Ok(new_end)
    }

    /// Hands `batches` (a round's, not yet in the segment) to the commit log and waits until
    /// they are durable there; `truncate_from` records a truncation first.
    pub(crate) async fn log_to_commit_log(
        &self,
        truncate_from: Option<u64>,
        batches: Vec<bytes::Bytes>,
    ) -> Result<()> {
        let Some(commit_log) = &self.commit_log else {
            return Ok(());
        };
        commit_log
            .append(WalEntry {
                log_id: self.log_id,
                truncate_from: truncate_from.unwrap_or(NO_TRUNCATION),
                key: self.wal_key.clone(),
                batches,
            })
            .await
    }
}

/// Position and base offset of the first batch in the segment whose last offset is >=
/// `offset`; the segment's end when there is none.
async fn batch_boundary(
    file: &Rc<SegmentFile>,
    meta: &SegmentMeta,
    offset: u64,
) -> Result<(u64, u64)> {
    if offset >= meta.next_offset {
        return Ok((meta.size_bytes, meta.next_offset));
    }
    let (rel, pos) = meta.offsets.lookup_entry(meta.relative(offset));
    let mut walker = BatchWalker::new(
        file.clone(),
        u64::from(pos),
        meta.base_offset + u64::from(rel),
        meta.size_bytes,
        64 << 10,
    );
    loop {
        match walker.next().await? {
            Ok(b) if (b.header.last_offset() as u64) >= offset => {
                return Ok((b.position, b.header.base_offset as u64));
            }
            Ok(_) => continue,
            Err(_) => return Ok((walker.position(), walker.next_offset())),
        }
    }
}
