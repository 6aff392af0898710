//! The control plane of a shard: forwarding over the mesh, metadata changes (on shard 0, the
//! controller) and applying them (on every shard). Nothing here is on the produce/fetch path.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use quiver_schema::frame::error_frame;
use quiver_schema::wire::{ApiKey, ErrorCode};

use super::metadata::{Metadata, TopicMeta};
use super::request::NewTopicReq;
use super::response::{self, Outcome};
use super::shard::{Forwarded, OpenLog, Shard, ShardMsg};
use super::topic_config;
use super::MAX_PARTITIONS_PER_TOPIC;
use crate::log::files;
use crate::log::signal::oneshot;
use crate::log::PartitionLog;

impl Shard {
    /// Sends `body` to shard `to` over the mesh and waits for its answer.
    pub(super) async fn forward(&self, to: usize, body: Forwarded) -> Bytes {
        let id = self.next_forward_id.get();
        self.next_forward_id.set(id + 1);
        let (tx, rx) = oneshot();
        self.pending.borrow_mut().insert(id, tx);
        if self
            .mesh
            .send_to(
                to,
                ShardMsg::Request {
                    id,
                    from: self.id,
                    body,
                },
            )
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return error_frame(
                0,
                ApiKey::Handshake,
                ErrorCode::ShuttingDown,
                &format!("shard {to} is not answering; the node may be shutting down"),
            );
        }
        rx.await.unwrap_or_else(|| {
            error_frame(
                0,
                ApiKey::Handshake,
                ErrorCode::ShuttingDown,
                "the forwarded request was dropped",
            )
        })
    }

    /// Handles one message from another shard.
    pub fn on_mesh_message(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Response { id, frame } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    tx.send(frame);
                }
            }
            ShardMsg::Request { id, from, body } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let frame = match body {
                        Forwarded::Frame(frame) => shard.clone().handle(frame).await,
                        Forwarded::ApplyMetadata => {
                            shard.apply_metadata().await;
                            Bytes::new()
                        }
                    };
                    if shard
                        .mesh
                        .send_to(from, ShardMsg::Response { id, frame })
                        .await
                        .is_err()
                    {
                        tracing::debug!(
                            shard = shard.id,
                            to = from,
                            "could not answer a forwarded request"
                        );
                    }
                })
                .detach();
            }
        }
    }

    /// Writes `meta` to disk, publishes it to the node, and waits until every shard applied it.
    async fn commit_metadata(&self, mut meta: Metadata) -> Result<(), (ErrorCode, String)> {
        meta.version += 1;
        let dir = self.settings().data_dir.clone();
        files::write_atomically(&dir, "metadata.json", meta.to_json())
            .await
            .map_err(|e| {
                (
                    ErrorCode::StorageError,
                    format!("could not persist metadata: {e}"),
                )
            })?;
        self.node.metadata.publish(meta);
        self.apply_metadata().await;
        for shard in (0..self.settings().shard_count).filter(|s| *s != self.id) {
            self.forward(shard, Forwarded::ApplyMetadata).await;
        }
        Ok(())
    }

    pub(super) async fn create_topics(&self, id: u64, topics: Vec<NewTopicReq>) -> Bytes {
        let Ok(_gate) = self.control_gate.acquire_permit(1).await else {
            return error_frame(
                id,
                ApiKey::CreateTopics,
                ErrorCode::ShuttingDown,
                "shutting down",
            );
        };
        let mut meta = (*self.metadata()).clone();
        let mut results: Vec<(String, Outcome)> = Vec::new();
        let mut changed = false;
        for t in topics {
            let outcome = self.check_new_topic(&meta, &t);
            if outcome.is_ok() {
                let shards = meta.assign_shards(t.partitions as usize, self.settings().shard_count);
                meta.topics.insert(
                    t.name.clone(),
                    TopicMeta {
                        partition_shards: shards,
                        configs: t.configs.into_iter().collect(),
                    },
                );
                changed = true;
            }
            results.push((t.name, outcome));
        }
        if changed {
            if let Err(e) = self.commit_metadata(meta).await {
                results
                    .iter_mut()
                    .filter(|(_, o)| o.is_ok())
                    .for_each(|(_, o)| *o = Err(e.clone()));
            }
        }
        response::topic_results(id, ApiKey::CreateTopics, &results)
    }

    fn check_new_topic(&self, meta: &Metadata, t: &NewTopicReq) -> Outcome {
        topic_config::validate_topic_name(&t.name).map_err(|e| (ErrorCode::InvalidTopicName, e))?;
        if meta.topics.contains_key(&t.name) {
            return Err((
                ErrorCode::TopicExists,
                format!(
                    "topic {:?} already exists; delete it first or pick another name",
                    t.name
                ),
            ));
        }
        if t.partitions < 1 || t.partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err((
                ErrorCode::InvalidRequest,
                format!(
                    "partitions = {} must be within [1, {MAX_PARTITIONS_PER_TOPIC}]",
                    t.partitions
                ),
            ));
        }
        let configs: BTreeMap<String, String> = t.configs.iter().cloned().collect();
        topic_config::to_log_config(&configs, &self.settings().default_log)
            .map_err(|e| (ErrorCode::InvalidConfig, e))?;
        Ok(())
    }

    pub(super) async fn delete_topics(&self, id: u64, names: Vec<String>) -> Bytes {
        let Ok(_gate) = self.control_gate.acquire_permit(1).await else {
            return error_frame(
                id,
                ApiKey::DeleteTopics,
                ErrorCode::ShuttingDown,
                "shutting down",
            );
        };
        let mut meta = (*self.metadata()).clone();
        let mut results = Vec::new();
        for name in names {
            let outcome = if meta.topics.remove(&name).is_some() {
                Ok(())
            } else {
                Err((
                    ErrorCode::UnknownTopic,
                    format!("topic {name:?} does not exist"),
                ))
            };
            results.push((name, outcome));
        }
        if results.iter().any(|(_, o)| o.is_ok()) {
            if let Err(e) = self.commit_metadata(meta).await {
                results
                    .iter_mut()
                    .filter(|(_, o)| o.is_ok())
                    .for_each(|(_, o)| *o = Err(e.clone()));
            }
        }
        response::topic_results(id, ApiKey::DeleteTopics, &results)
    }

    pub(super) async fn alter_configs(
        &self,
        id: u64,
        topic: String,
        set: Vec<(String, String)>,
    ) -> Bytes {
        let Ok(_gate) = self.control_gate.acquire_permit(1).await else {
            return error_frame(
                id,
                ApiKey::AlterConfigs,
                ErrorCode::ShuttingDown,
                "shutting down",
            );
        };
        let mut meta = (*self.metadata()).clone();
        let Some(t) = meta.topics.get_mut(&topic) else {
            return response::alter_configs(
                id,
                &Err((
                    ErrorCode::UnknownTopic,
                    format!("topic {topic:?} does not exist"),
                )),
            );
        };
        let mut configs = t.configs.clone();
        configs.extend(set);
        if let Err(e) = topic_config::to_log_config(&configs, &self.settings().default_log) {
            return response::alter_configs(id, &Err((ErrorCode::InvalidConfig, e)));
        }
        t.configs = configs;
        response::alter_configs(id, &self.commit_metadata(meta).await)
    }

    /// Makes this shard's open logs match the node's metadata: opens owned partitions,
    /// closes and deletes those of deleted topics, reopens those whose config changed.
    pub async fn apply_metadata(&self) {
        let Ok(_gate) = self.apply_gate.acquire_permit(1).await else {
            return;
        };
        let meta = self.metadata();
        let n = self.settings().shard_count;
        let mut wanted: BTreeMap<(String, i32), BTreeMap<String, String>> = BTreeMap::new();
        for (name, t) in &meta.topics {
            for (p, shard) in t.partition_shards.iter().enumerate() {
                if shard % n == self.id {
                    wanted.insert((name.clone(), p as i32), t.configs.clone());
                }
            }
        }
        let stale: Vec<(String, i32)> = self
            .logs
            .borrow()
            .iter()
            .filter(|(k, open)| wanted.get(*k) != Some(&open.configs))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            let Some(open) = self.logs.borrow_mut().remove(&key) else {
                continue;
            };
            if let Err(e) = open.log.close().await {
                tracing::warn!(topic = %key.0, partition = key.1, "closing a log failed: {e}");
            }
            if !wanted.contains_key(&key) {
                let dir = self.partition_dir(&key.0, key.1);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), "removing a deleted partition failed: {e}");
                }
            }
        }
        for (key, configs) in wanted {
            if self.logs.borrow().contains_key(&key) {
                continue;
            }
            let cfg = match topic_config::to_log_config(&configs, &self.settings().default_log) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(topic = %key.0, "invalid stored config, partition not opened: {e}");
                    continue;
                }
            };
            match PartitionLog::open_in(
                self.partition_dir(&key.0, key.1),
                cfg,
                self.latency,
                self.commit_log.clone(),
            )
            .await
            {
                Ok(log) => {
                    let interval =
                        Duration::from_millis(self.settings().retention_check_interval_ms.max(1));
                    if let Err(e) = log.spawn_retention(self.background, interval) {
                        tracing::warn!("retention task not started: {e}");
                    }
                    self.logs.borrow_mut().insert(key, OpenLog { log, configs });
                }
                Err(e) => {
                    tracing::error!(topic = %key.0, partition = key.1, "cannot open partition: {e}")
                }
            }
        }
    }

    /// Closes every log (flushes, fsyncs, writes indexes), then the commit log; its files
    /// are deleted when every log closed cleanly (recovery would find nothing to add).
    pub async fn close_all(&self) {
        let logs: Vec<PartitionLog> = self.logs.borrow_mut().drain().map(|(_, o)| o.log).collect();
        let mut clean = true;
        for log in logs {
            if let Err(e) = log.close().await {
                tracing::warn!(dir = %log.dir().display(), "close failed: {e}");
                clean = false;
            }
        }
        if let Some(commit_log) = &self.commit_log {
            commit_log.close().await;
            if clean {
                if let Err(e) = commit_log.remove_files().await {
                    tracing::warn!(
                        "removing the closed commit log failed (the next start replays it): {e}"
                    );
                }
            }
        }
    }
}
