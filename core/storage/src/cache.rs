//! Bounded in-memory cache of the most recent batches of one log (sans-IO), so that
//! consumers at the tail are served without touching the disk.
//!
//! Invariants: entries are contiguous in offsets (each starts where the previous ended), and
//! `total_bytes <= max_bytes` after every call (a batch larger than the bound is not kept).

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone)]
struct Entry {
    base_offset: u64,
    next_offset: u64,
    batch: Bytes,
}

#[derive(Debug)]
pub struct BatchCache {
    entries: VecDeque<Entry>,
    total_bytes: usize,
    max_bytes: usize,
}

impl BatchCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            total_bytes: 0,
            max_bytes,
        }
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Adds the batch `[base_offset, next_offset)`; evicts the oldest to stay in bounds.
    pub fn push(&mut self, base_offset: u64, next_offset: u64, batch: Bytes) {
        if self
            .entries
            .back()
            .is_some_and(|e| e.next_offset != base_offset)
        {
            self.clear(); // not contiguous (after a truncation): start over
        }
        self.total_bytes += batch.len();
        self.entries.push_back(Entry {
            base_offset,
            next_offset,
            batch,
        });
        while self.total_bytes > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.total_bytes -= old.batch.len();
        }
    }

    /// Whole batches starting with the one holding `offset`, stopping before `end_offset`
    /// and once `max_bytes` is reached (the first batch is always returned). `None` when
    /// `offset` is older than the cache.
    pub fn read(&self, offset: u64, end_offset: u64, max_bytes: usize) -> Option<Vec<Bytes>> {
        let first = self.entries.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = self.first_holding(offset);
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self.entries.range(start..) {
            if e.base_offset >= end_offset || (!out.is_empty() && bytes + e.batch.len() > max_bytes)
            {
                break;
            }
            bytes += e.batch.len();
            out.push(e.batch.clone());
        }
        Some(out)
    }

    /// Index of the first entry that ends after `offset`. Readers at the tail (nearly all of
    /// them) ask for one of the last few entries: look there before a binary search over the
    /// whole cache (thousands of entries; the search was ~2 % of a busy shard's CPU).
    fn first_holding(&self, offset: u64) -> usize {
        const TAIL_SCAN: usize = 8;
        let n = self.entries.len();
        for (back, e) in self.entries.iter().rev().take(TAIL_SCAN).enumerate() {
            if e.next_offset <= offset {
                return n - back;
            }
        }
        if n <= TAIL_SCAN {
            return 0;
        }
        self.entries.partition_point(|e| e.next_offset <= offset)
    }

    /// Forgets the batches that end at or before `offset`.
    pub fn evict_below(&mut self, offset: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.next_offset <= offset)
        {
            if let Some(e) = self.entries.pop_front() {
                self.total_bytes -= e.batch.len();
            }
        }
    }

    /// Forgets batches at or after `offset`.
    pub fn truncate_from(&mut self, offset: u64) {
        while self.entries.back().is_some_and(|e| e.next_offset > offset) {
            if let Some(e) = self.entries.pop_back() {
                self.total_bytes -= e.batch.len();
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.total_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn finds_the_batch_holding_an_offset_anywhere_in_a_long_cache() {
        let mut c = BatchCache::new(usize::MAX);
        for i in 0..100u64 {
            c.push(i * 10, i * 10 + 10, b(1));
        }
        for offset in 0..1000u64 {
            let got = c.read(offset, 1000, 1).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(
                c.first_holding(offset),
                (offset / 10) as usize,
                "offset {offset}"
            );
        }
        assert_eq!(c.read(1000, 1000, 1).unwrap().len(), 0, "the end");
        assert_eq!(c.first_holding(1000), 100);
    }

    #[test]
    fn serves_tail_reads_and_stays_bounded() {
        let mut c = BatchCache::new(250);
        c.push(0, 10, b(100));
        c.push(10, 20, b(100));
        assert_eq!(c.read(15, 20, 1000).unwrap().len(), 1);
        assert_eq!(c.read(0, 20, 1000).unwrap().len(), 2);
        assert_eq!(
            c.read(0, 20, 150).unwrap().len(),
            1,
            "max_bytes stops after the first"
        );
        assert_eq!(
            c.read(0, 10, 1000).unwrap().len(),
            1,
            "end_offset excludes later batches"
        );
        c.push(20, 30, b(100));
        assert_eq!(c.total_bytes(), 200);
        assert!(c.read(5, 30, 1000).is_none(), "evicted offsets miss");
        assert_eq!(c.read(30, 30, 1000).unwrap().len(), 0);
        c.truncate_from(25);
        assert_eq!(c.total_bytes(), 100);
        c.push(40, 50, b(10));
        assert_eq!(c.total_bytes(), 10, "a gap resets the cache");
    }
}
