//! [`RaftLog`]: a group's log as the core sees it: a snapshot (everything up to its index)
//! followed by entries. An entry spans one or more indexes (a partition's RecordBatch spans
//! its records' offsets, decision 0027); indexes at which an entry ends are its boundaries,
//! and only boundaries are ever sent as `prev_index`, matched, committed or compacted to.
//!
//! Log matching holds for any index, not only boundaries: every entry of a term was written
//! by that term's one leader at one position, so two logs whose entries covering index `i`
//! have the same term agree up to `i`, boundaries included.

use crate::types::{Entry, Membership, Payload, Snapshot};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftLog {
    snapshot: Snapshot,
    entries: Vec<Entry>,
    /// `ends[k]`: the last index of `entries[k]`.
    ends: Vec<u64>,
}

impl RaftLog {
    pub fn new(snapshot: Snapshot, entries: Vec<Entry>) -> Self {
        let mut log = Self {
            snapshot,
            entries: Vec::new(),
            ends: Vec::new(),
        };
        log.extend(entries);
        log
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    /// The first index after the snapshot.
    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }
    pub fn last_index(&self) -> u64 {
        self.ends.last().copied().unwrap_or(self.snapshot.index)
    }
    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `entries[k]` starts.
    pub fn start_of(&self, k: usize) -> u64 {
        if k == 0 {
            self.snapshot.index + 1
        } else {
            self.ends[k - 1] + 1
        }
    }

    /// The position of the entry covering `index`, if held.
    pub fn position(&self, index: u64) -> Option<usize> {
        if index <= self.snapshot.index || index > self.last_index() {
            return None;
        }
        Some(self.ends.partition_point(|e| *e < index))
    }

    /// The entry covering `index`, if held.
    pub fn covering(&self, index: u64) -> Option<&Entry> {
        self.position(index).map(|k| &self.entries[k])
    }

    /// The entry ending at `index`, if held.
    pub fn ending_at(&self, index: u64) -> Option<&Entry> {
        self.ends
            .binary_search(&index)
            .ok()
            .map(|k| &self.entries[k])
    }

    /// The term at `index`: the snapshot's at its index, else the covering entry's.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.covering(index).map(|e| e.term)
    }

    /// An entry ends at `index` (or the snapshot does).
    pub fn is_boundary(&self, index: u64) -> bool {
        index == self.snapshot.index || self.ends.binary_search(&index).is_ok()
    }

    /// The highest boundary at or below `index`; `index` itself at or below the snapshot's
    /// index (what is compacted is committed: a follower there gets the snapshot).
    pub fn boundary_at_or_before(&self, index: u64) -> u64 {
        if index <= self.snapshot.index {
            return index;
        }
        let k = self.ends.partition_point(|e| *e <= index);
        if k == 0 {
            self.snapshot.index
        } else {
            self.ends[k - 1]
        }
    }

    /// The first index of the run of entries of `term` that covers `index`, but not at or
    /// below `floor` (the conflict hint: back off a term at a time).
    pub fn run_start(&self, index: u64, floor: u64) -> u64 {
        let Some(mut k) = self.position(index) else {
            return index;
        };
        let term = self.entries[k].term;
        while k > 0 && self.entries[k - 1].term == term && self.ends[k - 1] > floor {
            k -= 1;
        }
        self.start_of(k)
    }

    /// Entries from the one starting at `next` (a boundary + 1): at most `max_entries`, and
    /// entries while their bytes fit `max_bytes` (at least one when any is allowed).
    pub fn slice_from(&self, next: u64, max_entries: usize, max_bytes: u64) -> &[Entry] {
        let Some(k) = self.position(next) else {
            return &[];
        };
        let mut end = k;
        let mut bytes = 0;
        while end < self.entries.len() && end - k < max_entries {
            let size = self.entries[end].size_bytes();
            if end > k && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            end += 1;
        }
        &self.entries[k..end]
    }

    /// Appends after the last index.
    pub fn extend(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            let end = self.last_index() + e.span.max(1);
            self.ends.push(end);
            self.entries.push(e);
        }
    }

    /// Drops every entry that ends after `keep` (a boundary).
    pub fn truncate_after(&mut self, keep: u64) {
        let k = self.ends.partition_point(|e| *e <= keep);
        self.entries.truncate(k);
        self.ends.truncate(k);
    }

    /// The membership in force at `index` (at most the last index), and where it was set.
    pub fn membership_at(&self, index: u64) -> (u64, Membership) {
        let k = self.ends.partition_point(|e| *e <= index);
        for j in (0..k).rev() {
            if let Payload::Membership(m) = &self.entries[j].payload {
                return (self.ends[j], m.clone());
            }
        }
        (self.snapshot.index, self.snapshot.membership.clone())
    }

    /// Drops the entries up to `index` (a boundary) behind a snapshot made there.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) {
        let term = self.term_at(index).unwrap_or(self.snapshot.term);
        let (_, membership) = self.membership_at(index);
        let k = self.ends.partition_point(|e| *e <= index);
        self.entries.drain(..k);
        self.ends.drain(..k);
        self.snapshot = Snapshot {
            index,
            term,
            membership,
            data,
        };
    }

    /// Replaces everything with `snapshot`.
    pub fn reset(&mut self, snapshot: Snapshot) {
        self.entries.clear();
        self.ends.clear();
        self.snapshot = snapshot;
    }
}
