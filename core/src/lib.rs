//! # quiver-core: the storage engine
//!
//! A map of this crate:
//! - [`batch`]: the Kafka RecordBatch v2 codec — header layout, [`batch::BatchBuilder`]
//!   (encode), [`batch::RecordIter`] (zero-copy decode), [`batch::validate_batch`].
//! - [`log`]: the partition log — direct-I/O segments written through an aligned tail page,
//!   group commit, sparse offset and time indexes, a bounded batch cache, retention,
//!   `truncate_to`, the leader-epoch map, and crash recovery. [`log::PartitionLog`] is the
//!   entry point; it lives on one glommio shard and is `!Send` by design.
//! - [`error`]: [`error::StorageError`], whose messages say what happened and what to do.
//!
//! Sans-IO parts (codec, indexes, cache, epoch map, scanning) are plain data structures
//! tested without disks; the I/O lives in `log::segment` and `log::partition_log`.

pub mod batch;
pub mod broker;
pub mod error;
pub mod log;

pub use error::StorageError;
