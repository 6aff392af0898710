//! A replica whose group failed (its entries or Raft state could not be persisted: a full or
//! failing disk; `ReplicaDriver::fail_group`) is closed and reopened from disk: recovery
//! finds what the disk really holds, acknowledged batches still in the commit log are written
//! out first, and a fresh group starts from that log, as after a restart of the node. While
//! that fails (the disk is still full), it is retried every second; the other replicas of
//! the partition serve meanwhile.

use std::rc::Rc;
use std::time::Duration;

use super::driver::ReplicaDriver;
use crate::shard::Shard;

/// Pause between two attempts to reopen a replica that could not be reopened.
const RETRY_EVERY: Duration = Duration::from_secs(1);

impl Shard {
    /// Runs for the shard's life: reopens the partitions whose group failed.
    pub async fn reopen_failed_replicas(self: Rc<Self>, driver: Rc<ReplicaDriver>) {
        let mut retry: Vec<(String, i32)> = Vec::new();
        loop {
            if retry.is_empty() {
                driver.failed_bell.wait().await;
            } else {
                glommio::timer::sleep(RETRY_EVERY).await;
            }
            let mut keys = std::mem::take(&mut retry);
            keys.extend(driver.take_failed());
            keys.sort();
            keys.dedup();
            for key in &keys {
                let open = self.partitions.borrow_mut().remove(key);
                if let Some(open) = open {
                    if let Err(e) = open.log.close().await {
                        tracing::warn!(topic = %key.0, partition = key.1, "closing a failed replica's log: {e} (acknowledged batches stay in the commit log for the reopen)");
                    }
                }
            }
            self.apply_metadata().await;
            let meta = self.metadata();
            let node = self.settings().node_id;
            for key in keys {
                let hosted = meta
                    .topics
                    .get(&key.0)
                    .and_then(|t| {
                        t.partitions
                            .get(usize::try_from(key.1).unwrap_or(usize::MAX))
                    })
                    .is_some_and(|pm| pm.hosted_by(node));
                let reopened =
                    self.partitions.borrow().get(&key).is_some_and(|p| {
                        p.group.as_ref().is_some_and(|(g, _)| driver.has_group(*g))
                    });
                if reopened {
                    tracing::info!(topic = %key.0, partition = key.1, "the failed replica was reopened from disk and rejoins its group");
                } else if hosted {
                    retry.push(key);
                }
            }
        }
    }
}
