//! Per-log configuration: sizes in bytes, times in milliseconds, every bound explicit.

use crate::error::{Result, StorageError};

/// When appended data is made durable with `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every append is written and fsynced before it is acknowledged (group commit merges
    /// concurrent appends into one write + one fdatasync). The default.
    EveryAppend,
    /// Appends are acknowledged once written to the device; `fdatasync` runs when
    /// `flush_bytes` unsynced bytes accumulate or `flush_ms` passes, whichever is first.
    Interval { flush_ms: u64, flush_bytes: u64 },
}

/// What happens to old records (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Whole segments are deleted by `retention_ms` / `retention_bytes`. The default.
    Delete,
    /// Keys are compacted: the latest record of every key survives (tombstones for
    /// `delete_retention_ms`); no retention by time or size.
    Compact,
    /// Both.
    CompactDelete,
}

impl CleanupPolicy {
    pub fn deletes(self) -> bool {
        matches!(self, Self::Delete | Self::CompactDelete)
    }

    pub fn compacts(self) -> bool {
        matches!(self, Self::Compact | Self::CompactDelete)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
            Self::CompactDelete => "compact,delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let mut parts: Vec<&str> = s.split(',').map(str::trim).collect();
        parts.sort_unstable();
        parts.dedup();
        match parts.as_slice() {
            ["delete"] => Some(Self::Delete),
            ["compact"] => Some(Self::Compact),
            ["compact", "delete"] => Some(Self::CompactDelete),
            _ => None,
        }
    }
}

/// Bounds and policies of one partition log. Defaults follow Kafka's where one exists.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment before the active one exceeds this size.
    pub segment_bytes: u64,
    /// Roll the active segment once its first batch is older than this.
    pub segment_ms: u64,
    /// Delete whole segments whose newest timestamp is older than this; `None` keeps forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the log is larger than this; `None` = no size bound.
    pub retention_bytes: Option<u64>,
    pub flush: FlushPolicy,
    /// Add an offset-index entry after at least this many bytes of batches.
    pub index_interval_bytes: u64,
    /// Largest batch accepted (Kafka's `max.message.bytes`).
    pub max_batch_bytes: usize,
    /// Bytes of recent batches kept in memory for tail reads.
    pub cache_bytes: usize,
    /// Appended bytes that may wait for the flusher; beyond it `append` waits (back-pressure).
    pub max_pending_bytes: usize,
    /// Largest single write the flusher issues; bigger groups are split.
    pub max_write_bytes: usize,
    pub cleanup_policy: CleanupPolicy,
    /// With compaction: how long a tombstone (a record with a key and no value) stays after
    /// it became the latest of its key, so consumers see the deletion.
    pub delete_retention_ms: u64,
    /// With compaction: a pass runs once this share of the sealed bytes was written since
    /// the last pass (Kafka's `min.cleanable.dirty.ratio`).
    pub min_cleanable_dirty_ratio: f64,
    /// Memory for one compaction pass's key map (16-byte key hashes with their offsets);
    /// a pass covers as many new records as it holds keys for.
    pub compaction_map_bytes: usize,
    /// The idempotent producers' state: batches remembered per producer, producers per
    /// partition, idle expiry.
    pub producers: crate::producer_state::ProducerLimits,
}

/// Hard ceiling for batch sizes, also the scan bound during recovery.
pub const MAX_BATCH_BYTES_LIMIT: usize = 64 << 20;
/// Index entries store 32-bit positions: a segment must stay below 2 GiB (as Kafka's).
pub const MAX_SEGMENT_BYTES_LIMIT: u64 = i32::MAX as u64;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush: FlushPolicy::EveryAppend,
            index_interval_bytes: 4096,
            max_batch_bytes: 1 << 20,
            cache_bytes: 64 << 20,
            max_pending_bytes: 32 << 20,
            max_write_bytes: 4 << 20,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            compaction_map_bytes: 32 << 20,
            producers: crate::producer_state::ProducerLimits::default(),
        }
    }
}

impl LogConfig {
    /// Checks every bound; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(StorageError::InvalidConfig(msg));
        if self.segment_bytes < 4096 || self.segment_bytes > MAX_SEGMENT_BYTES_LIMIT {
            return bad(format!(
                "segment_bytes = {} must be within [4096, {MAX_SEGMENT_BYTES_LIMIT}]",
                self.segment_bytes
            ));
        }
        if self.max_batch_bytes < 64 || self.max_batch_bytes > MAX_BATCH_BYTES_LIMIT {
            return bad(format!(
                "max_batch_bytes = {} must be within [64, {MAX_BATCH_BYTES_LIMIT}]",
                self.max_batch_bytes
            ));
        }
        if self.max_pending_bytes < self.max_batch_bytes {
            return bad(format!(
                "max_pending_bytes = {} must be at least max_batch_bytes = {}",
                self.max_pending_bytes, self.max_batch_bytes
            ));
        }
        if self.max_write_bytes < 4096 || self.max_write_bytes % 4096 != 0 {
            return bad(format!(
                "max_write_bytes = {} must be a multiple of 4096",
                self.max_write_bytes
            ));
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return bad(format!(
                "min_cleanable_dirty_ratio = {} must be within [0, 1]",
                self.min_cleanable_dirty_ratio
            ));
        }
        if self.compaction_map_bytes < 1 << 16 {
            return bad("compaction_map_bytes must be at least 65536".into());
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be > 0".into());
        }
        if let FlushPolicy::Interval {
            flush_ms,
            flush_bytes,
        } = self.flush
        {
            if flush_ms == 0 || flush_bytes == 0 {
                return bad("flush_ms and flush_bytes must be > 0 (use FlushPolicy::EveryAppend to sync every append)".into());
            }
        }
        Ok(())
    }
}
