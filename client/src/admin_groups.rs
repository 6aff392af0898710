//! [`Admin`]'s consumer group operations: list, describe, lag, delete, configure, and set
//! committed offsets (`quiver group ...` uses these).

use std::collections::BTreeSet;

use quiver_batch::{BatchHeader, RecordIter};
use quiver_broker_api::{CommittedOffset, GroupDescription, GroupListing, OffsetCommit, Response};
use quiver_group::OFFSETS_TOPIC;
use quiver_schema::groups;
use quiver_schema::requests::{self, FetchLimits, FetchPart};
use quiver_schema::wire::ErrorCode;

use crate::admin::{Admin, OffsetQuery};
use crate::cluster::body_error;
use crate::error::{ClientError, Result};
use crate::group::{broker_error, commit_offsets, fetch_committed, group_request, unexpected};
use crate::TopicPartition;

/// One partition of a group: where the group is and how far behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The member that owns it now, if any.
    pub member_id: Option<String>,
    /// The group's committed offset (`None`: never committed).
    pub committed: Option<i64>,
    /// The first offset still in the log.
    pub log_start: i64,
    /// The offset the next record will get.
    pub log_end: i64,
    /// Records not consumed yet: from the committed offset (or the log start, when retention
    /// deleted past it: no phantom lag) to the end; `None` without a committed offset.
    pub lag_records: Option<i64>,
    /// Age of the oldest unconsumed record, in milliseconds (0 when caught up; `None` without
    /// a committed offset).
    pub lag_ms: Option<i64>,
}

impl Admin {
    /// Every group on the node (each coordinator shard is asked for its own).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let route = match self.client.refresh_route(OFFSETS_TOPIC).await {
            Ok(r) => r,
            // No group ever existed: the offsets topic is created on first use.
            Err(ClientError::Broker {
                code: ErrorCode::UnknownTopic,
                ..
            }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let shards: BTreeSet<_> = route.partitions.iter().copied().collect();
        let mut out = Vec::new();
        for addr in shards {
            let resp = self.client.request_to(addr, groups::list_groups).await?;
            match groups::read_response(&resp.envelope()) {
                Some(Response::ListGroups(r)) => out.extend(r.map_err(broker_error)?),
                _ => return Err(unexpected("ListGroups")),
            }
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(out)
    }

    /// A group's state, configuration, members with their assignments, and committed offsets.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        match group_request(&self.client, group, |id| groups::describe_group(id, group)).await? {
            Response::DescribeGroup(r) => r.map_err(broker_error),
            _ => Err(unexpected("DescribeGroup")),
        }
    }

    /// Deletes a group and its committed offsets; refused while it has live members unless
    /// `force` (they are fenced).
    pub async fn delete_group(&self, group: &str, force: bool) -> Result<()> {
        match group_request(&self.client, group, |id| {
            groups::delete_group(id, group, force)
        })
        .await?
        {
            Response::DeleteGroup(r) => r.map_err(broker_error),
            _ => Err(unexpected("DeleteGroup")),
        }
    }

    /// Sets group configuration keys (`session_timeout_ms`, `heartbeat_interval_ms`,
    /// `assignor`); unknown keys and bad values are refused by name.
    pub async fn alter_group_config(&self, group: &str, set: &[(&str, &str)]) -> Result<()> {
        match group_request(&self.client, group, |id| {
            groups::alter_group_config(id, group, set)
        })
        .await?
        {
            Response::AlterGroupConfig(r) => r.map_err(broker_error),
            _ => Err(unexpected("AlterGroupConfig")),
        }
    }

    /// The group's committed offsets (all of them when `partitions` is empty).
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, CommittedOffset)>> {
        fetch_committed(&self.client, group, partitions).await
    }

    /// Sets committed offsets from outside the group (`quiver group reset-offsets`); the
    /// coordinator refuses it while the group has live members.
    pub async fn set_committed_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        let commit = OffsetCommit {
            group: group.to_string(),
            member_id: String::new(),
            member_epoch: 0,
            offsets: offsets
                .iter()
                .map(|(tp, o)| (tp.clone(), *o, String::new()))
                .collect(),
        };
        commit_offsets(&self.client, &commit).await
    }

    /// Lag of every partition the group has committed or has assigned.
    pub async fn group_lag(&self, description: &GroupDescription) -> Result<Vec<PartitionLag>> {
        let mut partitions: BTreeSet<TopicPartition> = description
            .offsets
            .iter()
            .map(|(tp, _)| tp.clone())
            .collect();
        for m in &description.members {
            partitions.extend(m.assigned.iter().cloned());
        }
        let now_ms = crate::record::now_ms();
        let mut out = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let committed = description
                .offsets
                .iter()
                .find(|(p, _)| *p == tp)
                .map(|(_, c)| c.offset);
            let member_id = description
                .members
                .iter()
                .find(|m| m.assigned.contains(&tp))
                .map(|m| m.member_id.clone());
            let log_start = self
                .list_offsets(&tp.topic, tp.partition, OffsetQuery::Earliest)
                .await?
                .unwrap_or(0);
            let log_end = self
                .list_offsets(&tp.topic, tp.partition, OffsetQuery::Latest)
                .await?
                .unwrap_or(0);
            let (lag_records, lag_ms) = match committed {
                None => (None, None),
                Some(c) => {
                    // Below the log start, the records are gone: lag counts what is left.
                    let from = c.max(log_start);
                    let lag = (log_end - from).max(0);
                    let age = if lag == 0 {
                        0
                    } else {
                        self.record_timestamp(&tp, from)
                            .await?
                            .map_or(0, |ts| (now_ms - ts).max(0))
                    };
                    (Some(lag), Some(age))
                }
            };
            out.push(PartitionLag {
                partition: tp,
                member_id,
                committed,
                log_start,
                log_end,
                lag_records,
                lag_ms,
            });
        }
        Ok(out)
    }

    /// The timestamp of the first record at or after `offset` (`None`: there is none).
    pub async fn record_timestamp(&self, tp: &TopicPartition, offset: i64) -> Result<Option<i64>> {
        const PEEK_BYTES: u32 = 64 * 1024;
        let limits = FetchLimits {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: PEEK_BYTES,
            isolation: quiver_schema::wire::Isolation::ReadUncommitted,
        };
        let part = FetchPart {
            topic: &tp.topic,
            partition: tp.partition,
            offset,
            max_bytes: PEEK_BYTES,
        };
        let resp = self
            .client
            .partition_request(
                &tp.topic,
                tp.partition,
                |id| requests::fetch_many(id, &limits, std::slice::from_ref(&part)),
                |r| {
                    body_error(
                        r.envelope()
                            .body_as_fetch_response()
                            .and_then(|b| b.partitions())
                            .and_then(|p| p.iter().next())
                            .and_then(|e| e.error()),
                    )
                },
            )
            .await?;
        let Some(records) = resp
            .envelope()
            .body_as_fetch_response()
            .and_then(|b| b.partitions())
            .and_then(|p| p.iter().next())
            .and_then(|e| e.records())
        else {
            return Ok(None);
        };
        let frame = resp.bytes();
        let Some(range) = quiver_schema::frame::vector_range(frame, records.bytes()) else {
            return Err(ClientError::Protocol("records outside the frame".into()));
        };
        let data = frame.slice(range);
        if data.is_empty() {
            return Ok(None);
        }
        // The first batch holds the offset (a fetch starts at the batch that contains it).
        let len = BatchHeader::parse(&data)
            .ok()
            .and_then(|h| h.total_bytes())
            .filter(|l| *l <= data.len())
            .ok_or_else(|| ClientError::Protocol("a fetched batch is cut short".into()))?;
        let iter =
            RecordIter::new(data.slice(..len)).map_err(|e| ClientError::Protocol(e.to_string()))?;
        for r in iter {
            let r = r.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if r.offset >= offset {
                return Ok(Some(r.timestamp_ms));
            }
        }
        Ok(None)
    }
}
