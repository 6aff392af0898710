//! Crash recovery's second half, once per node start before any shard opens a partition:
//! the shards' commit logs re-applied to the partition logs, then removed.
//!
//! The partition logs recover their own segments on open (torn tails cut, indexes rebuilt);
//! this adds what only the commit logs hold: acknowledged batches not yet written behind.

use std::path::Path;

use crate::commit_log::{self, replay, COMMIT_LOG_DIR};
use crate::config::{LogConfig, MAX_BATCH_BYTES_LIMIT};
use crate::error::{Result, StorageError};
use crate::files;
use crate::log::PartitionLog;

/// What [`replay_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub files: usize,
    pub partitions: usize,
    pub batches_appended: u64,
}

/// Re-applies every shard's commit log under `root` to the partition logs, then removes the
/// commit logs. Partitions whose directory is gone (a deleted topic) or holds another
/// incarnation are skipped.
pub async fn replay_all(root: &Path) -> Result<ReplayReport> {
    let (entries, files_read) = commit_log::read_all(root)?;
    let mut report = ReplayReport {
        files: files_read,
        ..ReplayReport::default()
    };
    let wal_root = root.join(COMMIT_LOG_DIR);
    if !wal_root.exists() {
        return Ok(report);
    }
    let config = LogConfig {
        max_batch_bytes: MAX_BATCH_BYTES_LIMIT,
        max_pending_bytes: MAX_BATCH_BYTES_LIMIT,
        ..LogConfig::default()
    };
    for plan in replay::plan(entries) {
        let dir = root.join(&*plan.key);
        if !dir.is_dir() {
            continue;
        }
        if files::read_log_id(&dir).await? != Some(plan.log_id) {
            continue;
        }
        let log = PartitionLog::open(&dir, config.clone()).await?;
        let appended = log.replay(&plan.batches).await;
        let closed = log.close().await;
        let appended = appended?;
        closed?;
        if appended > 0 {
            tracing::info!(dir = %dir.display(), batches = appended, "recovered from the commit log");
        }
        report.partitions += 1;
        report.batches_appended += appended;
    }
    std::fs::remove_dir_all(&wal_root)
        .map_err(|e| StorageError::from_io("removing", &wal_root, e))?;
    files::sync_dir(root).await?;
    Ok(report)
}
