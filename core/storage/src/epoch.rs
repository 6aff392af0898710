//! The leader-epoch map (sans-IO): which leader epoch started writing at which offset.
//! Replication uses it to find where a diverged follower must truncate (Kafka's
//! OffsetsForLeaderEpoch). Persisted as `leader-epoch-checkpoint`:
//!
//! ```text
//! 0                 <- format version
//! N                 <- number of entries
//! <epoch> <start>   <- N lines, epochs and start offsets strictly increasing
//! ```

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochMap {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochMap {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Notes that `epoch` wrote at `start_offset`. Returns true when the map changed (the
    /// caller persists it). Older epochs are ignored (a batch from a stale leader).
    pub fn assign(&mut self, epoch: i32, start_offset: u64) -> bool {
        if epoch < 0 || self.entries.last().is_some_and(|e| e.epoch >= epoch) {
            return false;
        }
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|e| e.start_offset <= start_offset));
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops epochs that start at or after `offset` (after `truncate_to(offset)`).
    pub fn truncate_from_end(&mut self, offset: u64) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        let changed = keep != self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// After retention moved the log start to `offset`: drops epochs that ended before it
    /// and clamps the first remaining epoch's start to `offset`.
    pub fn truncate_from_start(&mut self, offset: u64) -> bool {
        let first_kept = self
            .entries
            .partition_point(|e| e.start_offset <= offset)
            .saturating_sub(1);
        let mut changed = first_kept > 0;
        self.entries.drain(..first_kept);
        if let Some(first) = self.entries.first_mut() {
            if first.start_offset < offset {
                first.start_offset = offset;
                changed = true;
            }
        }
        changed
    }

    /// For a follower at `epoch`: the largest epoch <= `epoch` this log knows, and the offset
    /// where it ended (the next epoch's start, or `log_end_offset` for the latest one).
    /// `None` when every known epoch is newer.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: u64) -> Option<(i32, u64)> {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        if i == 0 {
            return None;
        }
        let end = self
            .entries
            .get(i)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((self.entries[i - 1].epoch, end))
    }

    pub fn encode(&self) -> String {
        let mut out = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    /// Parses a checkpoint; `None` when it is damaged (the caller starts empty and says so).
    pub fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let n: usize = lines.next()?.trim().parse().ok()?;
        let mut map = Self::default();
        for _ in 0..n {
            let mut parts = lines.next()?.split_whitespace();
            let epoch: i32 = parts.next()?.parse().ok()?;
            let start: u64 = parts.next()?.parse().ok()?;
            if map
                .entries
                .last()
                .is_some_and(|e| e.epoch >= epoch || e.start_offset > start)
            {
                return None;
            }
            map.entries.push(EpochEntry {
                epoch,
                start_offset: start,
            });
        }
        lines.next().is_none().then_some(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_epochs_like_kafka() {
        let mut m = LeaderEpochMap::default();
        assert!(m.assign(0, 0));
        assert!(!m.assign(0, 10), "same epoch again adds nothing");
        assert!(m.assign(2, 100));
        assert!(m.assign(5, 250));
        assert!(!m.assign(3, 300), "stale epoch is ignored");
        assert_eq!(m.end_offset_for(0, 400), Some((0, 100)));
        assert_eq!(
            m.end_offset_for(1, 400),
            Some((0, 100)),
            "unknown epoch maps to the one before"
        );
        assert_eq!(m.end_offset_for(5, 400), Some((5, 400)));
        assert_eq!(m.end_offset_for(-1, 400), None);
        let text = m.encode();
        assert_eq!(LeaderEpochMap::decode(&text), Some(m.clone()));
        assert!(m.truncate_from_end(250));
        assert_eq!(m.latest_epoch(), Some(2));
        assert!(m.truncate_from_start(150));
        assert_eq!(
            m.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 150
            }]
        );
    }

    #[test]
    fn damaged_checkpoints_are_rejected() {
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n1 5\n",
            "0\n1\nx 5\n",
            "0\n2\n3 5\n2 9\n",
            "0\n1\n1 5\n7 7\n",
        ] {
            assert_eq!(LeaderEpochMap::decode(bad), None, "{bad:?}");
        }
    }
}
