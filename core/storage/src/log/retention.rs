//! Retention's driver: deletes the segments [`super::state::LogState::retention_cut`] picks.

use super::state::RetentionOutcome;
use super::{Inner, PartitionLog};
use crate::error::Result;
use crate::files;

impl PartitionLog {
    /// Deletes whole segments beyond `retention_ms` / `retention_bytes`, oldest first, never
    /// the active one. `now_ms` is the wall clock in ms (a parameter so tests control time).
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let _gate = self.inner.write_gate().await?;
        self.inner.enforce_retention_locked(now_ms).await
    }
}

impl Inner {
    async fn enforce_retention_locked(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let (victims, outcome, epochs) = {
            let mut st = self.state.borrow_mut();
            st.producers.expire(now_ms);
            let cut = st.retention_cut(now_ms, &self.config);
            let removed = st.remove_segments(&cut);
            let start = st.log_start_offset();
            st.producers.forget_aborted_below(start);
            removed
        };
        for seg in victims {
            files::remove(&seg.file.path).await?;
            files::remove(&seg.file.path.with_extension("index")).await?;
        }
        if let Some(text) = epochs {
            files::write_atomically(&self.dir, files::EPOCH_CHECKPOINT, text.into_bytes()).await?;
        }
        if outcome.deleted_segments > 0 {
            tracing::info!(dir = %self.dir.display(), deleted = outcome.deleted_segments,
                log_start_offset = outcome.log_start_offset, "retention deleted segments");
        }
        Ok(outcome)
    }
}
