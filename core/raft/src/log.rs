//! [`RaftLog`]: a group's log as the core sees it: a snapshot (everything up to its index),
//! then entries. An entry spans one or more indexes (a partition's RecordBatch spans its
//! records' offsets, decision 0027); indexes at which an entry ends are its boundaries, and
//! only boundaries are sent as `prev_index`, acknowledged, committed or compacted to.
//!
//! Only the log's **tail** is held in memory: entries before `tail_start` were released
//! (they are durable in the driver's storage, which reads them back when a follower needs
//! them). For every index the log keeps its term (the epoch map: term → first index, as a
//! partition's `leader-epoch-checkpoint` does) and every membership entry, so released entries
//! cost nothing but their storage.
//!
//! Log matching holds for any index, not only boundaries: every entry of a term was written
//! by that term's one leader at one position, so two logs whose entries covering index `i`
//! have the same term agree up to `i`, boundaries included. Below the tail, the term decides.

use crate::types::{Entry, Membership, Payload, Snapshot};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftLog {
    snapshot: Snapshot,
    /// Terms of the indexes after the snapshot: (term, first index), increasing.
    epochs: Vec<(u64, u64)>,
    /// Membership entries after the snapshot: (last index, membership).
    memberships: Vec<(u64, Membership)>,
    last: u64,
    /// The first index held in memory (`last + 1`: nothing held).
    tail_start: u64,
    entries: Vec<Entry>,
    /// `ends[k]`: the last index of `entries[k]`.
    ends: Vec<u64>,
}

impl RaftLog {
    /// A log held whole in memory.
    pub fn new(snapshot: Snapshot, entries: Vec<Entry>) -> Self {
        let start = snapshot.index + 1;
        let mut log = Self {
            last: snapshot.index,
            tail_start: start,
            snapshot,
            ..Self::default()
        };
        log.extend(entries);
        log
    }

    /// A log restored from storage without its entries: the epoch map and membership entries
    /// after the snapshot and where it ends. Entries are read back on demand.
    pub fn restore(
        snapshot: Snapshot,
        epochs: Vec<(u64, u64)>,
        memberships: Vec<(u64, Membership)>,
        last_index: u64,
    ) -> Self {
        let last = last_index.max(snapshot.index);
        Self {
            epochs: epochs
                .into_iter()
                .filter(|(_, start)| *start > snapshot.index && *start <= last)
                .collect(),
            memberships: memberships
                .into_iter()
                .filter(|(end, _)| *end > snapshot.index && *end <= last)
                .collect(),
            last,
            tail_start: last + 1,
            snapshot,
            entries: Vec::new(),
            ends: Vec::new(),
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
    /// The epoch map: (term, first index) after the snapshot.
    pub fn epochs(&self) -> &[(u64, u64)] {
        &self.epochs
    }
    /// Membership entries after the snapshot: (index, membership).
    pub fn memberships(&self) -> &[(u64, Membership)] {
        &self.memberships
    }
    /// The entries held in memory, from [`Self::tail_start`].
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    pub fn tail_start(&self) -> u64 {
        self.tail_start
    }
    /// The first index after the snapshot.
    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }
    pub fn last_index(&self) -> u64 {
        self.last
    }
    pub fn last_term(&self) -> u64 {
        self.epochs.last().map_or(self.snapshot.term, |e| e.0)
    }
    /// Entries held in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last index of each in-memory entry (`ends()[k]` for `entries()[k]`).
    pub fn ends(&self) -> &[u64] {
        &self.ends
    }

    /// Where the in-memory `entries[k]` starts.
    pub fn start_of(&self, k: usize) -> u64 {
        if k == 0 {
            self.tail_start
        } else {
            self.ends[k - 1] + 1
        }
    }

    /// The position of the in-memory entry covering `index`.
    pub fn position(&self, index: u64) -> Option<usize> {
        if index < self.tail_start || index > self.last {
            return None;
        }
        Some(self.ends.partition_point(|e| *e < index))
    }

    /// The in-memory entry covering `index`.
    pub fn covering(&self, index: u64) -> Option<&Entry> {
        self.position(index).map(|k| &self.entries[k])
    }

    /// The in-memory entry ending at `index`.
    pub fn ending_at(&self, index: u64) -> Option<&Entry> {
        if index < self.tail_start {
            return None;
        }
        self.ends
            .binary_search(&index)
            .ok()
            .map(|k| &self.entries[k])
    }

    /// The term at `index`: the snapshot's at its index, else the epoch covering it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index || index > self.last {
            return None;
        }
        let k = self.epochs.partition_point(|(_, start)| *start <= index);
        k.checked_sub(1).map(|k| self.epochs[k].0)
    }

    /// An entry ends at `index`, as far as this log can tell: in memory it is checked; before
    /// the tail the boundaries are the storage's, and the term decides (see the module docs).
    pub fn is_boundary(&self, index: u64) -> bool {
        if index == self.snapshot.index || index + 1 == self.tail_start {
            return true;
        }
        if index < self.tail_start {
            return index > self.snapshot.index;
        }
        self.ends.binary_search(&index).is_ok()
    }

    /// The highest boundary at or below `index` (`index` itself where this log cannot tell:
    /// at or below the snapshot, or before the tail).
    pub fn boundary_at_or_before(&self, index: u64) -> u64 {
        if index < self.tail_start {
            return index;
        }
        let k = self.ends.partition_point(|e| *e <= index);
        if k == 0 {
            self.tail_start - 1
        } else {
            self.ends[k - 1]
        }
    }

    /// The first index of the epoch covering `index`, but above `floor` (the conflict hint:
    /// back off a term at a time, never into what is committed).
    pub fn run_start(&self, index: u64, floor: u64) -> u64 {
        let k = self.epochs.partition_point(|(_, start)| *start <= index);
        let start = k
            .checked_sub(1)
            .map_or(self.snapshot.index + 1, |k| self.epochs[k].1);
        start.max(floor + 1).min(index)
    }

    /// In-memory entries from the one starting at `next`: at most `max_entries`, and entries
    /// while their bytes fit `max_bytes` (at least one when any is allowed). Empty when `next`
    /// is before the tail (read it from storage) or past the end.
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

    /// Appends after the last index (held in memory).
    pub fn extend(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            let start = self.last + 1;
            let end = self.last.saturating_add(e.span.max(1));
            if self.epochs.last().is_none_or(|(t, _)| *t != e.term) {
                self.epochs.push((e.term, start));
            }
            if let Payload::Membership(m) = &e.payload {
                self.memberships.push((end, m.clone()));
            }
            if self.entries.is_empty() {
                self.tail_start = start;
            }
            self.last = end;
            self.ends.push(end);
            self.entries.push(e);
        }
    }

    /// Drops every entry that ends after `keep` (a boundary).
    pub fn truncate_after(&mut self, keep: u64) {
        if keep >= self.last {
            return;
        }
        let k = self.ends.partition_point(|e| *e <= keep);
        self.entries.truncate(k);
        self.ends.truncate(k);
        self.epochs.retain(|(_, start)| *start <= keep);
        self.memberships.retain(|(end, _)| *end <= keep);
        self.last = keep.max(self.snapshot.index);
        if self.entries.is_empty() {
            self.tail_start = self.last + 1;
        }
    }

    /// Forgets the in-memory entries up to `index` (durable in storage: read back on demand).
    pub fn release(&mut self, index: u64) {
        let k = self.ends.partition_point(|e| *e <= index);
        if k == 0 {
            return;
        }
        self.tail_start = self.ends[k - 1] + 1;
        self.entries.drain(..k);
        self.ends.drain(..k);
    }

    /// The membership in force at `index` (at most the last index), and where it was set.
    pub fn membership_at(&self, index: u64) -> (u64, Membership) {
        let k = self.memberships.partition_point(|(end, _)| *end <= index);
        match k.checked_sub(1) {
            Some(k) => self.memberships[k].clone(),
            None => (self.snapshot.index, self.snapshot.membership.clone()),
        }
    }

    /// Drops the entries up to `index` (a boundary) behind a snapshot made there.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) {
        let term = self.term_at(index).unwrap_or(self.snapshot.term);
        let (_, membership) = self.membership_at(index);
        let k = self.ends.partition_point(|e| *e <= index);
        self.entries.drain(..k);
        self.ends.drain(..k);
        // The epoch covering index + 1 now starts there.
        let covering = self
            .epochs
            .partition_point(|(_, start)| *start <= index + 1);
        if covering > 0 {
            self.epochs.drain(..covering - 1);
            if let Some(first) = self.epochs.first_mut() {
                first.1 = first.1.max(index + 1);
            }
        }
        if index >= self.last {
            self.epochs.clear();
        }
        self.memberships.retain(|(end, _)| *end > index);
        self.snapshot = Snapshot {
            index,
            term,
            membership,
            data,
        };
        self.last = self.last.max(index);
        self.tail_start = self.tail_start.max(index + 1);
    }

    /// Replaces everything with `snapshot`.
    pub fn reset(&mut self, snapshot: Snapshot) {
        *self = Self::new(snapshot, Vec::new());
    }
}
