//! Log compaction's decisions (sans-IO): the key map of the records written since the last
//! pass, and which record survives. Kafka's semantics: the latest record of every key stays;
//! a tombstone (a key with no value) stays `delete_retention_ms` after its timestamp, so
//! consumers reading behind see the deletion; records without a key are never removed; the
//! active segment is never compacted and offsets never change.
//!
//! Keys are mapped by a 128-bit hash (two SipHash passes with different salts), as Kafka maps
//! them by MD5: the memory of a pass is bounded by `compaction_map_bytes` whatever the keys'
//! sizes, and a collision (about 2^-64 for a billion keys) is the accepted price.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use quiver_batch::Record;

/// Bytes one key map entry costs (hash, offset, and the table's own overhead).
pub const KEY_MAP_ENTRY_BYTES: usize = 48;

fn key_hash(key: &[u8]) -> u128 {
    let half = |salt: u64| {
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(salt, !salt);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0x5155_4956_4552_0001)) << 64) | u128::from(half(0x636f_6d70_6163_7401))
}

/// The latest offset of every key seen, within a memory bound.
pub struct KeyMap {
    latest: HashMap<u128, u64>,
    max_entries: usize,
}

impl KeyMap {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            latest: HashMap::new(),
            max_entries: (max_bytes / KEY_MAP_ENTRY_BYTES).max(1),
        }
    }

    /// Room for `n` more keys (a batch is mapped whole or not at all).
    pub fn has_room(&self, n: usize) -> bool {
        self.latest.len() + n <= self.max_entries
    }

    /// Records that `key` was written at `offset` (the later offset wins).
    pub fn observe(&mut self, key: &[u8], offset: u64) {
        let e = self.latest.entry(key_hash(key)).or_insert(offset);
        *e = (*e).max(offset);
    }

    pub fn latest(&self, key: &[u8]) -> Option<u64> {
        self.latest.get(&key_hash(key)).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Whether a pass keeps `r`, given the keys mapped from the offsets below `map_end`.
pub fn keep(r: &Record, map: &KeyMap, map_end: u64, now_ms: i64, delete_retention_ms: u64) -> bool {
    let Some(key) = &r.key else {
        return true; // no key: nothing supersedes it
    };
    let offset = r.offset.max(0) as u64;
    if offset >= map_end {
        return true; // not covered by this pass
    }
    let expired_tombstone = r.value.is_none()
        && r.timestamp_ms
            .saturating_add(delete_retention_ms.min(i64::MAX as u64) as i64)
            < now_ms;
    match map.latest(key) {
        Some(latest) if latest > offset => false,
        // The latest of its key (mapped now, or compacted before and not written since).
        _ => !expired_tombstone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(offset: i64, key: Option<&str>, value: Option<&str>, ts: i64) -> Record {
        Record {
            offset,
            timestamp_ms: ts,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: value.map(|v| Bytes::from(v.to_string())),
            headers: Vec::new(),
        }
    }

    #[test]
    fn the_latest_of_each_key_survives_older_ones_go() {
        let mut map = KeyMap::new(1 << 20);
        for (o, k) in [(0, "a"), (1, "b"), (2, "a"), (3, "c")] {
            map.observe(k.as_bytes(), o);
        }
        let now = 10_000;
        assert!(!keep(&rec(0, Some("a"), Some("1"), 0), &map, 4, now, 1_000));
        assert!(keep(&rec(1, Some("b"), Some("1"), 0), &map, 4, now, 1_000));
        assert!(keep(&rec(2, Some("a"), Some("2"), 0), &map, 4, now, 1_000));
        assert!(
            keep(&rec(5, Some("a"), Some("3"), 0), &map, 4, now, 1_000),
            "not covered"
        );
        assert!(
            keep(&rec(0, None, Some("x"), 0), &map, 4, now, 1_000),
            "keyless stays"
        );
    }

    #[test]
    fn tombstones_stay_for_delete_retention_then_go() {
        let mut map = KeyMap::new(1 << 20);
        map.observe(b"a", 7);
        let tomb = rec(7, Some("a"), None, 5_000);
        assert!(keep(&tomb, &map, 8, 5_500, 1_000), "young tombstone stays");
        assert!(!keep(&tomb, &map, 8, 6_001, 1_000), "old tombstone goes");
        // A compacted-before tombstone whose key was not written since also expires.
        let empty = KeyMap::new(1 << 20);
        assert!(!keep(&tomb, &empty, 8, 6_001, 1_000));
        assert!(keep(
            &rec(7, Some("a"), Some("v"), 0),
            &empty,
            8,
            6_001,
            1_000
        ));
    }

    #[test]
    fn the_map_is_bounded() {
        let mut map = KeyMap::new(KEY_MAP_ENTRY_BYTES * 2);
        assert!(map.has_room(2));
        map.observe(b"a", 0);
        map.observe(b"a", 1);
        assert_eq!(map.len(), 1);
        assert!(map.has_room(1) && !map.has_room(2));
        assert_eq!(map.latest(b"a"), Some(1));
        assert_eq!(map.latest(b"b"), None);
    }
}
