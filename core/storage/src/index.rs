//! Sparse per-segment indexes (sans-IO) and their on-disk form.
//!
//! - [`OffsetIndex`]: `(relative offset, byte position)` of a batch start, one entry per
//!   `index_interval_bytes` of data. Lookup gives the position to start scanning from.
//! - [`TimeIndex`]: `(max timestamp so far, relative offset of the batch that reached it)`,
//!   an entry each time the running maximum grows. Lookup gives the batch to start a
//!   timestamp search from (every batch before it has a smaller maximum timestamp).
//!
//! Invariants (checked with `debug_assert!`): both indexes are strictly increasing in their
//! key; positions increase with offsets.
//!
//! File `<base>.index` (big-endian):
//! ```text
//! magic "QIX1" | crc32c u32 (of everything after it) | segment_bytes u64 | next_offset u64 |
//! max_timestamp_ms i64 | first_timestamp_ms i64 | offset_entries u32 | time_entries u32 |
//! offset entries (rel u32, pos u32)* | time entries (ts i64, rel u32)*
//! ```
//! A file whose CRC or recorded `segment_bytes` disagrees with the segment is rebuilt.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|e| e.relative_offset < relative_offset && e.position < position));
        self.entries.push(OffsetEntry {
            relative_offset,
            position,
        });
    }

    /// Position of the last indexed batch starting at or before `relative_offset` (0 if none).
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        self.lookup_entry(relative_offset).1
    }

    /// `(relative offset, position)` of the last indexed batch starting at or before
    /// `relative_offset`; `(0, 0)` (the segment's first batch) if none.
    pub fn lookup_entry(&self, relative_offset: u32) -> (u32, u32) {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            (0, 0)
        } else {
            let e = self.entries[i - 1];
            (e.relative_offset, e.position)
        }
    }

    /// Drops entries for batches at or after `position`.
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Records `timestamp_ms` if it raises the maximum.
    pub fn observe(&mut self, timestamp_ms: i64, relative_offset: u32) {
        if self
            .entries
            .last()
            .is_none_or(|e| timestamp_ms > e.timestamp_ms)
        {
            debug_assert!(self
                .entries
                .last()
                .is_none_or(|e| e.relative_offset < relative_offset));
            self.entries.push(TimeEntry {
                timestamp_ms,
                relative_offset,
            });
        }
    }

    /// Relative offset of the batch to start scanning from for the first batch with a max
    /// timestamp >= `timestamp_ms`.
    pub fn lookup(&self, timestamp_ms: i64) -> u32 {
        let i = self
            .entries
            .partition_point(|e| e.timestamp_ms <= timestamp_ms);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].relative_offset
        }
    }

    /// Drops entries for batches at or after `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }
}

const MAGIC: &[u8; 4] = b"QIX1";
const FIXED_BYTES: usize = 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4;

/// What an index file says about its segment, besides the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub segment_bytes: u64,
    pub next_offset: u64,
    pub max_timestamp_ms: i64,
    pub first_timestamp_ms: i64,
    pub offsets: OffsetIndex,
    pub times: TimeIndex,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let o = self.offsets.entries();
        let t = self.times.entries();
        let mut out = Vec::with_capacity(FIXED_BYTES + o.len() * 8 + t.len() * 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.segment_bytes.to_be_bytes());
        out.extend_from_slice(&self.next_offset.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.first_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&(o.len() as u32).to_be_bytes());
        out.extend_from_slice(&(t.len() as u32).to_be_bytes());
        for e in o {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        for e in t {
            out.extend_from_slice(&e.timestamp_ms.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes and checks an index file; `None` for anything damaged (the caller rebuilds).
    pub fn decode(buf: &[u8]) -> Option<Self> {
        if buf.len() < FIXED_BYTES || &buf[..4] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_be_bytes(buf.get(at..at + 8)?.try_into().ok()?));
        if u32_at(4)? != crc32c::crc32c(&buf[8..]) {
            return None;
        }
        let n_offsets = u32_at(40)? as usize;
        let n_times = u32_at(44)? as usize;
        if buf.len() != FIXED_BYTES + n_offsets.checked_mul(8)? + n_times.checked_mul(12)? {
            return None;
        }
        let mut offsets = OffsetIndex::default();
        let mut at = FIXED_BYTES;
        for _ in 0..n_offsets {
            let (rel, pos) = (u32_at(at)?, u32_at(at + 4)?);
            if offsets
                .entries
                .last()
                .is_some_and(|e| e.relative_offset >= rel || e.position >= pos)
            {
                return None;
            }
            offsets.push(rel, pos);
            at += 8;
        }
        let mut times = TimeIndex::default();
        for _ in 0..n_times {
            let (ts, rel) = (u64_at(at)? as i64, u32_at(at + 8)?);
            if times
                .entries
                .last()
                .is_some_and(|e| e.timestamp_ms >= ts || e.relative_offset >= rel)
            {
                return None;
            }
            times.observe(ts, rel);
            at += 12;
        }
        Some(Self {
            segment_bytes: u64_at(8)?,
            next_offset: u64_at(16)?,
            max_timestamp_ms: u64_at(24)? as i64,
            first_timestamp_ms: u64_at(32)? as i64,
            offsets,
            times,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let mut idx = OffsetIndex::default();
        idx.push(0, 0);
        idx.push(10, 5000);
        idx.push(20, 9000);
        assert_eq!(idx.lookup(0), 0);
        assert_eq!(idx.lookup(9), 0);
        assert_eq!(idx.lookup(10), 5000);
        assert_eq!(idx.lookup(25), 9000);
        idx.truncate_to_position(9000);
        assert_eq!(idx.lookup(25), 5000);
    }

    #[test]
    fn time_lookup_starts_at_or_before_the_answer() {
        let mut idx = TimeIndex::default();
        idx.observe(100, 0);
        idx.observe(90, 5); // not a new maximum
        idx.observe(200, 10);
        assert_eq!(idx.entries().len(), 2);
        assert_eq!(idx.lookup(50), 0);
        assert_eq!(idx.lookup(150), 0);
        assert_eq!(idx.lookup(200), 10);
        assert_eq!(idx.lookup(500), 10);
        idx.truncate_to_offset(10);
        assert_eq!(idx.entries().len(), 1);
    }

    #[test]
    fn index_file_round_trips_and_any_damage_is_detected() {
        let mut offsets = OffsetIndex::default();
        offsets.push(0, 0);
        offsets.push(7, 4100);
        let mut times = TimeIndex::default();
        times.observe(1000, 0);
        times.observe(2000, 7);
        let file = IndexFile {
            segment_bytes: 8200,
            next_offset: 99,
            max_timestamp_ms: 2000,
            first_timestamp_ms: 1000,
            offsets,
            times,
        };
        let bytes = file.encode();
        assert_eq!(IndexFile::decode(&bytes), Some(file));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(
                IndexFile::decode(&bad),
                None,
                "damage at byte {i} went unnoticed"
            );
        }
        assert_eq!(IndexFile::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(IndexFile::decode(&[]), None);
    }
}
