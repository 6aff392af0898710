//! Retention's driver: deletes the segments [`super::state::LogState::retention_cut`] picks.

use std::time::Duration;

use glommio::TaskQueueHandle;

use super::state::RetentionOutcome;
use super::{now_ms, Inner, PartitionLog};
use crate::error::Result;
use crate::files;

impl PartitionLog {
    /// Deletes whole segments beyond `retention_ms` / `retention_bytes`, oldest first, never
    /// the active one. `now_ms` is the wall clock in ms (a parameter so tests control time).
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let _gate = self.inner.write_gate().await?;
        self.inner.enforce_retention_locked(now_ms).await
    }

    /// Runs retention every `interval` on task queue `queue` (give it fewer shares than the
    /// produce/fetch queue) until the log closes.
    pub fn spawn_retention(
        &self,
        queue: Option<TaskQueueHandle>,
        interval: Duration,
    ) -> Result<()> {
        let log = self.clone();
        let task = async move {
            loop {
                glommio::timer::sleep(interval).await;
                if log.inner.state.borrow().closing {
                    return;
                }
                if let Err(e) = log.enforce_retention(now_ms()).await {
                    tracing::warn!(dir = %log.inner.dir.display(), "retention pass failed: {e}");
                }
            }
        };
        crate::spawn_detached(task, queue, "spawning retention for", &self.inner.dir)
    }
}

impl Inner {
    async fn enforce_retention_locked(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let (victims, outcome, epochs) = {
            let mut st = self.state.borrow_mut();
            let cut = st.retention_cut(now_ms, &self.config);
            st.remove_segments(&cut)
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
