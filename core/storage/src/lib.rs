//! # quiver-storage: the partition log and the shard's commit log
//!
//! A partition log is an append-only sequence of Kafka RecordBatch v2 batches
//! ([`quiver_batch`]) on direct-I/O segments, owned by one glommio shard.
//!
//! - [`partition_log`]: [`PartitionLog`], the driver: append with group commit, read,
//!   timestamp lookup, truncate, retention, recovery on open.
//! - [`segment`]: one segment file (O_DIRECT `DmaFile`) and the batch walker that verifies
//!   what it reads.
//! - Sans-IO bookkeeping: [`segment_meta`] (per-segment state), [`index`] (offset and time
//!   indexes and their file), [`scan`] (what the bytes at a position are), [`cache`] (recent
//!   batches), [`epoch`] (leader epoch → start offset).
//! - [`commit_log`]: the shard's commit log — one write + fdatasync per round for all its
//!   partitions — and its recovery.
//! - [`config`]: [`LogConfig`] and [`FlushPolicy`]; [`files`]: small-file and directory helpers;
//!   [`signal`]: single-shard wake-ups.
//!
//! On-disk layout and recovery are described in `docs/storage-format.md`.

pub mod cache;
pub mod commit_log;
pub mod config;
pub mod epoch;
pub mod error;
pub mod files;
mod flusher;
pub mod index;
pub mod partition_log;
pub mod scan;
pub mod segment;
pub mod segment_meta;
mod segments;
pub mod signal;
mod write_behind;

pub use commit_log::CommitLog;

/// Spawns `task` on the shard's task queue `queue` (the current one when `None`) and lets it
/// run on its own; `what` and `path` name it in the error when glommio refuses.
pub(crate) fn spawn_detached(
    task: impl std::future::Future<Output = ()> + 'static,
    queue: Option<glommio::TaskQueueHandle>,
    what: &'static str,
    path: &std::path::Path,
) -> crate::error::Result<()> {
    match queue {
        Some(q) => glommio::spawn_local_into(task, q)
            .map_err(|e| crate::error::StorageError::from_glommio(what, path, e))?
            .detach(),
        None => glommio::spawn_local(task).detach(),
    };
    Ok(())
}
pub use config::{FlushPolicy, LogConfig};
pub use error::{Result, StorageError};
pub use flusher::{WRITE_BEHIND_BYTES, WRITE_BEHIND_MS};
pub use partition_log::{AppendInfo, LogStats, PartitionLog, RetentionOutcome};
