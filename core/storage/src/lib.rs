//! # quiver-storage: the partition log and the shard's commit log
//!
//! A partition log is an append-only sequence of Kafka RecordBatch v2 batches
//! ([`quiver_batch`]) on direct-I/O segments, owned by one glommio shard.
//!
//! - [`log`]: [`PartitionLog`]. Its decisions (admission and back-pressure, stamping,
//!   group-commit rounds and the durable offset, rolls, write splitting, syncs and
//!   write-behind, retention, truncation, what recovery trusts) are one sans-IO state
//!   machine, `log::state`, unit-tested without disks; the other files of `log/` are its
//!   thin glommio drivers (append, flush, read, truncate, retention, compaction, recover,
//!   checkpoint).
//! - [`commit_log`]: the shard's commit log — one write + fdatasync per round for all its
//!   partitions. It sees partition logs only as [`commit_log::Member`]s: no cycle.
//! - [`recovery`]: at node start, the commit logs re-applied to the partition logs.
//! - Sans-IO bookkeeping: [`segment_meta`] (per-segment state), `segments` (the sealed and
//!   active segments), [`index`] (offset and time indexes and their file), [`scan`] (what the
//!   bytes at a position are), [`cache`] (recent batches), [`epoch`] (leader epoch → start
//!   offset), [`compaction`] (the key map and which record a compaction keeps).
//! - I/O: [`segment`] (one O_DIRECT segment file and the batch walker that verifies what it
//!   reads), [`files`] (small-file and directory helpers).
//! - [`config`]: [`LogConfig`] and [`FlushPolicy`]; [`signal`]: single-shard wake-ups;
//!   [`error`]: [`StorageError`].
//!
//! On-disk layout and recovery are described in `docs/storage-format.md`.

pub mod cache;
pub mod commit_log;
pub mod compaction;
pub mod config;
pub mod epoch;
pub mod error;
pub mod files;
pub mod index;
pub mod log;
pub mod producer_state;
pub mod recovery;
pub mod scan;
pub mod segment;
pub mod segment_meta;
mod segments;
pub mod signal;

pub use commit_log::CommitLog;
pub use config::{CleanupPolicy, FlushPolicy, LogConfig};
pub use error::{Result, StorageError};
pub use log::{
    AppendInfo, CompactionOutcome, Durability, LogStats, PartitionLog, RetentionOutcome,
    WRITE_BEHIND_BYTES, WRITE_BEHIND_MS,
};

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
