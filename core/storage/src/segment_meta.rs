//! What the log knows about one segment without touching its file (sans-IO): size, offset
//! range, timestamps and the two sparse indexes, updated batch by batch.

use crate::index::{IndexFile, OffsetIndex, TimeIndex};
use quiver_batch::BatchHeader;

/// Bookkeeping of one segment `[base_offset, next_offset)` occupying `size_bytes`.
/// Invariant: `size_bytes` is the end of the last whole batch; indexes only name batches
/// inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    pub base_offset: u64,
    pub next_offset: u64,
    pub size_bytes: u64,
    /// Largest batch maxTimestamp in the segment (-1 when empty); drives time retention.
    pub max_timestamp_ms: i64,
    /// maxTimestamp of the first batch (-1 when empty); drives `segment_ms` rolls.
    pub first_timestamp_ms: i64,
    pub offsets: OffsetIndex,
    pub times: TimeIndex,
    bytes_since_index_entry: u64,
}

impl SegmentMeta {
    pub fn empty(base_offset: u64) -> Self {
        Self {
            base_offset,
            next_offset: base_offset,
            size_bytes: 0,
            max_timestamp_ms: -1,
            first_timestamp_ms: -1,
            offsets: OffsetIndex::default(),
            times: TimeIndex::default(),
            bytes_since_index_entry: 0,
        }
    }

    pub fn from_index(base_offset: u64, file: IndexFile) -> Self {
        Self {
            base_offset,
            next_offset: file.next_offset,
            size_bytes: file.segment_bytes,
            max_timestamp_ms: file.max_timestamp_ms,
            first_timestamp_ms: file.first_timestamp_ms,
            offsets: file.offsets,
            times: file.times,
            // Conservative: the next batch gets an entry.
            bytes_since_index_entry: u64::MAX / 2,
        }
    }

    pub fn to_index(&self) -> IndexFile {
        IndexFile {
            segment_bytes: self.size_bytes,
            next_offset: self.next_offset,
            max_timestamp_ms: self.max_timestamp_ms,
            first_timestamp_ms: self.first_timestamp_ms,
            offsets: self.offsets.clone(),
            times: self.times.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Relative offset of `offset` in this segment, saturating (callers range-check first).
    pub fn relative(&self, offset: u64) -> u32 {
        u32::try_from(offset.saturating_sub(self.base_offset)).unwrap_or(u32::MAX)
    }

    /// True when a batch of `batch_bytes` ending at `last_offset` cannot go into this
    /// segment without breaking its bounds.
    pub fn would_overflow(&self, batch_bytes: u64, last_offset: u64, segment_bytes: u64) -> bool {
        !self.is_empty()
            && (self.size_bytes + batch_bytes > segment_bytes
                || last_offset - self.base_offset > u64::from(u32::MAX))
    }

    /// Records a batch written at `position == size_bytes`.
    pub fn on_batch(&mut self, header: &BatchHeader, batch_bytes: u64, index_interval_bytes: u64) {
        debug_assert_eq!(header.base_offset as u64, self.next_offset);
        let relative = self.relative(header.base_offset as u64);
        if self.is_empty() || self.bytes_since_index_entry >= index_interval_bytes {
            self.offsets.push(relative, self.size_bytes as u32);
            self.bytes_since_index_entry = 0;
        }
        self.times.observe(header.max_timestamp_ms, relative);
        if self.is_empty() {
            self.first_timestamp_ms = header.max_timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
        self.size_bytes += batch_bytes;
        self.bytes_since_index_entry += batch_bytes;
        self.next_offset = header.last_offset() as u64 + 1;
    }

    /// Forgets every batch at or after `position` (a batch boundary), which starts at
    /// `offset`. `max_timestamp_ms` is recomputed from the time index (it may overstate until
    /// the next rebuild; retention then keeps the segment a little longer, never shorter).
    pub fn truncate(&mut self, position: u64, offset: u64) {
        self.offsets.truncate_to_position(position as u32);
        self.times.truncate_to_offset(self.relative(offset));
        self.size_bytes = position;
        self.next_offset = offset;
        self.max_timestamp_ms = self.times.entries().last().map_or(-1, |e| e.timestamp_ms);
        if position == 0 {
            self.first_timestamp_ms = -1;
        }
        self.bytes_since_index_entry = u64::MAX / 2;
    }
}
