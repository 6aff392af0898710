//! The node's metadata (sans-IO model + JSON form): topics, their configs, and the shard table
//! — which shard owns each partition, the single routing truth. Persisted as
//! `<data>/metadata.json` by the controller shard (write temp, fsync, rename, fsync dir).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Owning shard of partition i (recorded at creation, round-robin across shards).
    pub partition_shards: Vec<usize>,
    /// User overrides, `key -> value` (validated by `topic_config`).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub version: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl Metadata {
    /// The shard that owns `topic/partition` on a node with `shard_count` shards (a table
    /// recorded with more shards than now folds onto the ones that exist).
    pub fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let t = self.topics.get(topic)?;
        let p = usize::try_from(partition).ok()?;
        t.partition_shards.get(p).copied()
    }

    /// Where to put the partitions of a new topic: continue round-robin from the number of
    /// partitions that exist, so shards stay balanced.
    pub fn assign_shards(&self, partitions: usize, shard_count: usize) -> Vec<usize> {
        let existing: usize = self.topics.values().map(|t| t.partition_shards.len()).sum();
        (0..partitions)
            .map(|i| (existing + i) % shard_count.max(1))
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes)
            .map_err(|e| format!("metadata.json is damaged ({e}); restore it from a backup"))
    }
}

/// Metadata shared by the shards of one node. Control plane only: the data path keeps a
/// per-shard `Arc` and compares `version` (one atomic load) before using it.
#[derive(Debug, Default)]
pub struct MetadataStore {
    current: RwLock<Arc<Metadata>>,
    version: AtomicU64,
}

impl MetadataStore {
    pub fn new(meta: Metadata) -> Self {
        let version = meta.version;
        Self {
            current: RwLock::new(Arc::new(meta)),
            version: AtomicU64::new(version),
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<Metadata> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn publish(&self, meta: Metadata) {
        let version = meta.version;
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(meta),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(meta),
        }
        self.version.store(version, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_table_round_robins_and_round_trips_as_json() {
        let mut m = Metadata {
            version: 1,
            cluster_id: "c".into(),
            ..Metadata::default()
        };
        let shards = m.assign_shards(3, 2);
        assert_eq!(shards, vec![0, 1, 0]);
        m.topics.insert(
            "a".into(),
            TopicMeta {
                partition_shards: shards,
                configs: BTreeMap::new(),
            },
        );
        assert_eq!(
            m.assign_shards(2, 2),
            vec![1, 0],
            "continues where the last topic ended"
        );
        assert_eq!(m.owner("a", 1), Some(1));
        assert_eq!(m.owner("a", 3), None);
        assert_eq!(m.owner("a", -1), None);
        assert_eq!(m.owner("b", 0), None);
        assert_eq!(Metadata::from_json(&m.to_json()).unwrap(), m);
        assert!(Metadata::from_json(b"{").is_err());
    }
}
