//! [`Admin`]: topics, configs, offsets.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use quiver_schema::requests::{self, NewTopic};
use quiver_schema::wire::{ApiKey, OffsetSpec};

use crate::cluster::{body_error, Client};
use crate::error::{ClientError, Result};

/// A topic as `list_topics` and `describe_topic` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionDescription>,
    /// Effective configuration (only from `describe_topic`).
    pub configs: BTreeMap<String, String>,
}

/// One partition of a [`TopicDescription`]: where it is served and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition number.
    pub partition: i32,
    /// The owning shard on its nodes.
    pub shard: u16,
    /// The leader's endpoint for that shard.
    pub address: SocketAddr,
    /// The node taking appends.
    pub leader: i32,
    /// The nodes holding a replica, the leader among them.
    pub replicas: Vec<i32>,
    /// Bumped at every leader change.
    pub leader_epoch: i32,
}

/// Which offset `list_offsets` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The first offset still in the log.
    Earliest,
    /// The end of the log: the offset the next record will get.
    Latest,
    /// The first offset whose record timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

/// Administrative operations.
#[derive(Clone)]
pub struct Admin {
    pub(crate) client: Client,
}

fn protocol(what: &str) -> ClientError {
    ClientError::Protocol(format!("the {what} response has no body"))
}

impl Admin {
    /// Admin operations over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Creates a topic with the node's default replication factor; returns once every
    /// shard of the node asked serves its partitions.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        self.create_replicated_topic(name, partitions, 0, configs)
            .await
    }

    /// Creates a topic whose partitions have `replication_factor` replicas each (0: the
    /// cluster's default, 3 or every node of a smaller cluster), placed on distinct nodes.
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let resp = self
            .client
            .bootstrap_request(|id| {
                requests::create_topics(
                    id,
                    &[NewTopic {
                        name,
                        partitions,
                        replication_factor,
                        configs,
                    }],
                )
            })
            .await?;
        let body = resp
            .envelope()
            .body_as_create_topics_response()
            .ok_or_else(|| protocol("CreateTopics"))?;
        let result = body
            .results()
            .and_then(|r| r.iter().next())
            .ok_or_else(|| protocol("CreateTopics"))?;
        body_error(result.error())
    }

    /// Deletes the topic `name`.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let resp = self
            .client
            .bootstrap_request(|id| requests::delete_topics(id, &[name]))
            .await?;
        let body = resp
            .envelope()
            .body_as_delete_topics_response()
            .ok_or_else(|| protocol("DeleteTopics"))?;
        let result = body
            .results()
            .and_then(|r| r.iter().next())
            .ok_or_else(|| protocol("DeleteTopics"))?;
        body_error(result.error())
    }

    /// Every topic with its partitions.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>> {
        self.metadata(&[]).await
    }

    async fn metadata(&self, names: &[&str]) -> Result<Vec<TopicDescription>> {
        let resp = self
            .client
            .bootstrap_request(|id| requests::metadata(id, names))
            .await?;
        let body = resp
            .envelope()
            .body_as_metadata_response()
            .ok_or_else(|| protocol("Metadata"))?;
        let mut out = Vec::new();
        for t in body.topics().into_iter().flatten() {
            body_error(t.error())?;
            let mut partitions = Vec::new();
            for p in t.partitions().into_iter().flatten() {
                let addr = p
                    .address()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| ClientError::Protocol(format!("bad address: {e}")))?;
                partitions.push(PartitionDescription {
                    partition: p.partition(),
                    shard: p.shard(),
                    address: addr,
                    leader: p.node_id(),
                    replicas: p.replicas().into_iter().flatten().collect(),
                    leader_epoch: p.leader_epoch(),
                });
            }
            out.push(TopicDescription {
                name: t.name().unwrap_or_default().to_string(),
                partitions,
                configs: BTreeMap::new(),
            });
        }
        Ok(out)
    }

    /// Partitions and effective configuration of one topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let mut topic = self
            .metadata(&[name])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| protocol("Metadata"))?;
        let resp = self
            .client
            .bootstrap_request(|id| requests::describe_configs(id, &[name]))
            .await?;
        let body = resp
            .envelope()
            .body_as_describe_configs_response()
            .ok_or_else(|| protocol("DescribeConfigs"))?;
        let t = body
            .topics()
            .and_then(|t| t.iter().next())
            .ok_or_else(|| protocol("DescribeConfigs"))?;
        body_error(t.error())?;
        topic.configs = t
            .configs()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e.key().unwrap_or_default().to_string(),
                    e.value().unwrap_or_default().to_string(),
                )
            })
            .collect();
        Ok(topic)
    }

    /// Sets topic configs (`key`, `value`); unknown keys and bad values are refused by name.
    pub async fn alter_config(&self, name: &str, set: &[(&str, &str)]) -> Result<()> {
        let resp = self
            .client
            .bootstrap_request(|id| requests::alter_configs(id, name, set))
            .await?;
        let body = resp
            .envelope()
            .body_as_alter_configs_response()
            .ok_or_else(|| protocol("AlterConfigs"))?;
        body_error(body.error())
    }

    /// Earliest, latest, or by-timestamp offset of one partition (`None`: no record at or after
    /// the timestamp).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: i32,
        query: OffsetQuery,
    ) -> Result<Option<i64>> {
        let (spec, ts) = match query {
            OffsetQuery::Earliest => (OffsetSpec::Earliest, 0),
            OffsetQuery::Latest => (OffsetSpec::Latest, 0),
            OffsetQuery::Timestamp(t) => (OffsetSpec::Timestamp, t),
        };
        let resp = self
            .client
            .partition_request(
                topic,
                partition,
                |id| requests::list_offsets(id, topic, partition, spec, ts),
                |r| {
                    body_error(
                        r.envelope()
                            .body_as_list_offsets_response()
                            .and_then(|b| b.error()),
                    )
                },
            )
            .await?;
        debug_assert_eq!(resp.envelope().api(), ApiKey::ListOffsets);
        let offset = resp
            .envelope()
            .body_as_list_offsets_response()
            .ok_or_else(|| protocol("ListOffsets"))?
            .offset();
        Ok((offset >= 0).then_some(offset))
    }
}
