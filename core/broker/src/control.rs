//! The control plane of a shard: metadata changes (on the controller shard) and applying them
//! (on every shard). Nothing here is on the produce/fetch path.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use quiver_cluster::command::Command;
use quiver_cluster::messages::{ControllerRequest, Failure};

use quiver_broker_api::{Api, ApiError, ErrorCode, NewTopic, Outcome, Response, TopicResult};
use quiver_storage::PartitionLog;

use crate::forward::ShardCall;
use crate::metadata::Metadata;
use crate::partition::Partition;
use crate::replica::ReplicaState;
use crate::shard::Shard;
use crate::topic_config;
use crate::MAX_PARTITIONS_PER_TOPIC;

fn shutting_down(api: Api) -> Response {
    Response::Refused {
        api,
        error: ApiError::new(ErrorCode::ShuttingDown, "shutting down"),
    }
}

fn failure_to_api(f: Failure) -> ApiError {
    match f {
        Failure::TopicExists(m) => ApiError::new(ErrorCode::TopicExists, m),
        Failure::UnknownTopic(m) => ApiError::new(ErrorCode::UnknownTopic, m),
        Failure::Invalid(m) => ApiError::new(ErrorCode::InvalidRequest, m),
        Failure::Unavailable(m) => ApiError::new(ErrorCode::Timeout, m),
    }
}

/// How long a change waits to show in this node's metadata once the controller applied it.
const APPLIED_HERE_TIMEOUT: Duration = Duration::from_secs(10);

impl Shard {
    /// Publishes the controller's applied metadata to the node and has every shard apply it
    /// (on shard 0, by the controller task).
    pub fn publish_metadata(self: &Rc<Self>, meta: &Metadata) {
        self.node.metadata.publish(meta.clone());
        let shard = self.clone();
        glommio::spawn_local(async move {
            shard.apply_everywhere().await;
            shard.metadata_applied.wake_all();
        })
        .detach();
    }

    async fn apply_everywhere(&self) {
        self.apply_metadata().await;
        for shard in (0..self.settings().shard_count).filter(|s| *s != self.id) {
            self.call(shard, ShardCall::ApplyMetadata).await;
        }
    }

    /// Asks the controller for `request`, then waits until this node's shards applied a
    /// metadata for which `done` holds (read-your-writes for the client that asked here).
    async fn change(
        &self,
        request: ControllerRequest,
        done: impl Fn(&Metadata) -> bool,
    ) -> Outcome {
        let Some(controller) = self.controller.borrow().clone() else {
            return Err(ApiError::new(
                ErrorCode::Unknown,
                "metadata changes run on shard 0; this shard has no controller",
            ));
        };
        controller.submit(request).await.map_err(failure_to_api)?;
        let deadline = std::time::Instant::now() + APPLIED_HERE_TIMEOUT;
        loop {
            let waiter = self.metadata_applied.register();
            if done(&self.node.metadata.snapshot()) {
                // Every shard applied it once the publish that brought it finished.
                self.apply_everywhere().await;
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    "the controller applied the change but this node has not caught up yet: it will shortly",
                ));
            }
            futures_lite::future::or(
                async {
                    waiter.await;
                },
                glommio::timer::sleep(left),
            )
            .await;
        }
    }

    pub(crate) async fn create_topics(&self, topics: Vec<NewTopic>) -> Response {
        let Ok(_gate) = self.control_gate.acquire_permit(1).await else {
            return shutting_down(Api::CreateTopics);
        };
        let mut results: Vec<TopicResult> = Vec::new();
        for t in topics {
            let mut outcome = self.check_new_topic(&self.metadata(), &t);
            if outcome.is_ok() {
                let name = t.name.clone();
                let request = ControllerRequest::CreateTopic {
                    name: t.name.clone(),
                    partitions: t.partitions as usize,
                    // 0 (or less): the cluster's default.
                    replication_factor: usize::try_from(t.replication_factor).unwrap_or(0),
                    configs: t.configs.into_iter().collect(),
                };
                outcome = self.change(request, |m| m.topics.contains_key(&name)).await;
            }
            results.push(TopicResult {
                name: t.name,
                outcome,
            });
        }
        Response::CreateTopics(results)
    }

    fn check_new_topic(&self, meta: &Metadata, t: &NewTopic) -> Outcome {
        topic_config::validate_topic_name(&t.name)
            .map_err(|e| ApiError::new(ErrorCode::InvalidTopicName, e))?;
        if meta.topics.contains_key(&t.name) {
            return Err(ApiError::new(
                ErrorCode::TopicExists,
                format!(
                    "topic {:?} already exists; delete it first or pick another name",
                    t.name
                ),
            ));
        }
        if t.partitions < 1 || t.partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "partitions = {} must be within [1, {MAX_PARTITIONS_PER_TOPIC}]",
                    t.partitions
                ),
            ));
        }
        let configs: BTreeMap<String, String> = t.configs.iter().cloned().collect();
        topic_config::to_log_config(&configs, &self.settings().default_log)
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e))?;
        Ok(())
    }

    pub(crate) async fn delete_topics(&self, names: Vec<String>) -> Response {
        let Ok(_gate) = self.control_gate.acquire_permit(1).await else {
            return shutting_down(Api::DeleteTopics);
        };
        let mut results = Vec::new();
        for name in names {
            let outcome = if self.metadata().topics.contains_key(&name) {
                let command = Command::DeleteTopic { name: name.clone() };
                self.change(ControllerRequest::Command { command }, |m| {
                    !m.topics.contains_key(&name)
                })
                .await
            } else {
                Err(ApiError::new(
                    ErrorCode::UnknownTopic,
                    format!("topic {name:?} does not exist"),
                ))
            };
            results.push(TopicResult { name, outcome });
        }
        Response::DeleteTopics(results)
    }

    pub(crate) async fn alter_configs(
        &self,
        topic: String,
        set: Vec<(String, String)>,
    ) -> Response {
        let Ok(_gate) = self.control_gate.acquire_permit(1).await else {
            return shutting_down(Api::AlterConfigs);
        };
        let meta = self.metadata();
        let Some(t) = meta.topics.get(&topic) else {
            return Response::AlterConfigs(Err(ApiError::new(
                ErrorCode::UnknownTopic,
                format!("topic {topic:?} does not exist"),
            )));
        };
        let mut configs = t.configs.clone();
        configs.extend(set.iter().cloned());
        if let Err(e) = topic_config::to_log_config(&configs, &self.settings().default_log) {
            return Response::AlterConfigs(Err(ApiError::new(ErrorCode::InvalidConfig, e)));
        }
        let command = Command::AlterTopicConfigs {
            name: topic.clone(),
            set: set.into_iter().collect(),
            unset: Vec::new(),
        };
        let outcome = self
            .change(ControllerRequest::Command { command }, |m| {
                m.topics.get(&topic).map(|t| &t.configs) == Some(&configs)
            })
            .await;
        Response::AlterConfigs(outcome)
    }

    /// Starts moving a partition to `replicas` (answered once this node's metadata shows the
    /// move, or the new order, recorded).
    pub(crate) async fn alter_replicas(
        &self,
        topic: String,
        partition: i32,
        replicas: Vec<i32>,
    ) -> Response {
        let Ok(_gate) = self.control_gate.acquire_permit(1).await else {
            return shutting_down(Api::AlterReplicas);
        };
        let meta = self.metadata();
        if meta.partition(&topic, partition).is_none() {
            return Response::AlterReplicas(Err(crate::routing::unknown_partition(
                &meta, &topic, partition,
            )));
        }
        let command = Command::MovePartition {
            topic: topic.clone(),
            partition,
            target: replicas.clone(),
        };
        let outcome = self
            .change(ControllerRequest::Command { command }, |m| {
                m.partition(&topic, partition)
                    .is_some_and(|p| p.target.as_ref() == Some(&replicas) || p.replicas == replicas)
            })
            .await;
        Response::AlterReplicas(outcome)
    }

    /// Decommissions `node`: how many partitions started moving off it.
    pub(crate) async fn decommission(&self, node: i32) -> Response {
        let Ok(_gate) = self.control_gate.acquire_permit(1).await else {
            return shutting_down(Api::DecommissionNode);
        };
        let outcome = self
            .change(ControllerRequest::Decommission { node }, |m| {
                m.nodes.get(&node).is_some_and(|n| n.decommissioned)
            })
            .await;
        let moving = self
            .metadata()
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.target.is_some() && p.replicas.contains(&node))
            .count();
        Response::DecommissionNode(outcome.map(|()| u32::try_from(moving).unwrap_or(u32::MAX)))
    }

    /// The replication progress of the partitions this node leads (every shard's when
    /// `all_shards`).
    pub(crate) async fn describe_replication(
        &self,
        ctx: quiver_broker_api::RequestContext,
        all_shards: bool,
    ) -> Response {
        let mut parts = self.replication().map(|d| d.describe()).unwrap_or_default();
        if all_shards {
            for shard in (0..self.settings().shard_count).filter(|s| *s != self.id) {
                let request = quiver_broker_api::Request::DescribeReplication { all_shards: false };
                match self.forward(shard, ctx.clone(), request).await {
                    Response::DescribeReplication(Ok(more)) => parts.extend(more),
                    Response::DescribeReplication(Err(e)) | Response::Refused { error: e, .. } => {
                        return Response::DescribeReplication(Err(e))
                    }
                    _ => {}
                }
            }
        }
        parts.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Response::DescribeReplication(Ok(parts))
    }

    /// Makes this shard's open partitions match the node's metadata: opens owned partitions,
    /// closes and deletes those of deleted topics, reopens those whose config changed, and
    /// takes new leaders and epochs.
    pub async fn apply_metadata(&self) {
        let Ok(_gate) = self.apply_gate.acquire_permit(1).await else {
            return;
        };
        let meta = self.metadata();
        let n = self.settings().shard_count;
        let node = self.settings().node_id;
        let mut wanted = BTreeMap::new();
        let driver = self.replication();
        if let Some(d) = &driver {
            d.set_metadata(meta.clone());
        }
        // Per partition wanted here: its configs, replica state, and group when replicated.
        let mut groups: BTreeMap<(String, i32), (u64, Vec<crate::metadata::NodeId>)> =
            BTreeMap::new();
        for (name, t) in &meta.topics {
            for (p, pm) in t.partitions.iter().enumerate() {
                let here = pm.replicas.is_empty() || pm.hosted_by(node);
                if here && pm.shard % n == self.id {
                    let replica = ReplicaState::new(node, pm);
                    wanted.insert((name.clone(), p as i32), (t.configs.clone(), replica));
                    if t.is_replicated() {
                        groups.insert(
                            (name.clone(), p as i32),
                            (t.group_id(p as i32), pm.replicas.clone()),
                        );
                    }
                }
            }
        }
        let stale: Vec<(String, i32)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(k, open)| wanted.get(*k).map(|w| &w.0) != Some(&open.configs))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            let Some(open) = self.partitions.borrow_mut().remove(&key) else {
                continue;
            };
            if let (Some((g, _)), Some(d)) = (&open.group, &driver) {
                d.remove_group(*g);
            }
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
        for (key, (configs, replica)) in wanted {
            if let Some(open) = self.partitions.borrow_mut().get_mut(&key) {
                open.replica = replica;
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
                    if let Err(e) = log.spawn_cleanup(self.background, interval) {
                        tracing::warn!("retention and compaction task not started: {e}");
                    }
                    let sync_writes = topic_config::durability(&configs)
                        .is_ok_and(|d| d == topic_config::Durability::Persisted);
                    let group = match (groups.get(&key), &driver) {
                        (Some((g, replicas)), Some(d)) => Some((
                            *g,
                            d.add_group(*g, &key.0, key.1, replicas, log.clone(), sync_writes),
                        )),
                        _ => None,
                    };
                    self.partitions.borrow_mut().insert(
                        key,
                        Partition {
                            log,
                            replica,
                            configs,
                            group,
                        },
                    );
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
        let logs: Vec<PartitionLog> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p.log)
            .collect();
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
