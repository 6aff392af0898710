//! Acknowledged batches waiting to be written to the active segment (with the shard's commit
//! log, where they are already durable): the queue the flusher writes from and the index
//! readers find them by, kept in step in one place. See `flush::write_behind`.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::state::Appended;
use crate::cache::BatchCache;
use crate::error::StorageError;

pub(crate) struct WriteBehind {
    /// Oldest first; they sit above every segment's end.
    batches: VecDeque<Appended>,
    bytes: usize,
    /// When the oldest batch was queued, or a failed write left them waiting.
    since: Option<Instant>,
    /// The same batches for readers (unbounded: the queue is bounded by `error` failing
    /// appends).
    readable: BatchCache,
    /// Set while so much waits for a segment that cannot be written that appends must fail.
    pub error: Option<StorageError>,
}

impl Default for WriteBehind {
    fn default() -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
            since: None,
            readable: BatchCache::new(usize::MAX),
            error: None,
        }
    }
}

impl WriteBehind {
    /// Queues an acknowledged batch (the next in offset order).
    pub fn push(&mut self, batch: Appended) {
        let base = batch.header.base_offset as u64;
        let next = batch.header.last_offset() as u64 + 1;
        self.readable.push(base, next, batch.bytes.clone());
        self.bytes += batch.bytes.len();
        self.batches.push_back(batch);
        self.since.get_or_insert_with(Instant::now);
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the oldest waiting batch was queued (or its last write failed).
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// First offset of the batches waiting, if any.
    pub fn start(&self) -> Option<u64> {
        self.batches.front().map(|b| b.header.base_offset as u64)
    }

    /// The batches waiting, to write them (they stay queued until [`Self::written`]).
    pub fn to_write(&self) -> Vec<Appended> {
        self.batches.iter().cloned().collect()
    }

    /// The first `count` batches reached the segment (its metadata covers them): readers
    /// find them there from now on.
    pub fn written(&mut self, count: usize) {
        let mut end = None;
        for _ in 0..count {
            if let Some(b) = self.batches.pop_front() {
                self.bytes -= b.bytes.len();
                end = Some(b.header.last_offset() as u64 + 1);
            }
        }
        if let Some(end) = end {
            self.readable.evict_below(end);
        }
        if self.batches.is_empty() {
            self.since = None;
            self.error = None;
        }
    }

    /// A write failed: what is left waits for the next try; beyond `limit_bytes` waiting,
    /// appends fail with `error`.
    pub fn write_failed(&mut self, error: &StorageError, limit_bytes: usize) {
        self.since = Some(Instant::now());
        if self.bytes >= limit_bytes {
            self.error = Some(error.for_another_waiter());
        }
    }

    /// Readable batches from `offset` (at or after [`Self::start`]) up to `end_offset`.
    pub fn read(&self, offset: u64, end_offset: u64, max_bytes: usize) -> Option<Vec<Bytes>> {
        self.readable.read(offset, end_offset, max_bytes)
    }

    /// The first waiting batch with a record at or after `timestamp_ms`.
    pub fn first_with_timestamp_at_or_after(&self, timestamp_ms: i64) -> Option<&Appended> {
        self.batches
            .iter()
            .find(|b| b.header.max_timestamp_ms >= timestamp_ms)
    }

    /// Drops the batches from the one holding `offset` on (a truncation at or above
    /// [`Self::start`]); returns the new end: the end of the last batch kept, or `offset`
    /// when none waited.
    pub fn truncate_from(&mut self, offset: u64) -> u64 {
        let keep = self
            .batches
            .iter()
            .position(|b| b.header.last_offset() as u64 >= offset)
            .unwrap_or(self.batches.len());
        let new_end = match (self.batches.get(keep), self.batches.back()) {
            (Some(cut), _) => cut.header.base_offset as u64,
            (None, Some(last)) => last.header.last_offset() as u64 + 1,
            (None, None) => offset,
        };
        for b in self.batches.drain(keep..) {
            self.bytes -= b.bytes.len();
        }
        if self.batches.is_empty() {
            self.since = None;
            self.error = None;
        }
        self.readable.truncate_from(new_end);
        new_end
    }

    /// Drops everything (a truncation inside the segments: every waiting batch was above it).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}
