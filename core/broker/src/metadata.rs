//! The node's view of the cluster metadata: the model lives in `quiver_cluster::model`
//! (re-exported here); [`MetadataStore`] shares the current version between the shards of
//! one node. Persisted as `<data>/metadata.json` by the controller shard (write temp, fsync,
//! rename, fsync dir).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub use quiver_cluster::model::{Metadata, NodeId, NodeMeta, PartitionMeta, TopicMeta};

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
