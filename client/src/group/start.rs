//! Where a member starts reading the partitions it is given: the group's committed offset,
//! else its reset rule. The lookup runs as a task of its own and outlives a caller that
//! stops waiting for it: a `next_event` under a short timeout (a [`crate::Transformer`]
//! gathering input for 100 ms) used to cut the lookup off every time, so a request aimed
//! at a killed leader never reached its own connect or request timeout, never learnt the
//! new leader, and the partition was never consumed (the chaos harness, seed 104).

use std::collections::BTreeMap;

use tokio::task::JoinHandle;

use crate::cluster::Client;
use crate::consumer::{resolve, OffsetReset, SeekTo};
use crate::error::{ClientError, Result};
use crate::group::{fetch_committed, TopicPartition};

/// Where one new partition starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Start {
    pub tp: TopicPartition,
    pub offset: i64,
    /// The offset is the group's committed one (not a reset).
    pub committed: bool,
}

/// How a partition without a committed offset starts.
#[derive(Debug, Clone)]
pub(crate) struct StartRules {
    pub group: String,
    pub start_without_commit: Option<SeekTo>,
    pub auto_offset_reset: OffsetReset,
}

/// A lookup of start offsets in flight (aborted when dropped).
pub(crate) struct StartLookup {
    partitions: Vec<TopicPartition>,
    task: JoinHandle<Result<Vec<Start>>>,
}

impl StartLookup {
    pub(crate) fn spawn(
        client: Client,
        rules: StartRules,
        partitions: Vec<TopicPartition>,
    ) -> Self {
        let task = tokio::spawn(lookup(client, rules, partitions.clone()));
        Self { partitions, task }
    }

    /// Whether this lookup answers for exactly `partitions`.
    pub(crate) fn is_for(&self, partitions: &[TopicPartition]) -> bool {
        self.partitions == partitions
    }

    /// The lookup's answer. Cancel-safe: dropped while waiting, the lookup goes on and a
    /// later call takes its answer. Call it no more once it has answered.
    pub(crate) async fn answer(&mut self) -> Result<Vec<Start>> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ClientError::Invalid(format!(
                "looking up where the new partitions start failed: {e}"
            ))),
        }
    }
}

impl Drop for StartLookup {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn lookup(
    client: Client,
    rules: StartRules,
    partitions: Vec<TopicPartition>,
) -> Result<Vec<Start>> {
    let committed: BTreeMap<TopicPartition, i64> =
        fetch_committed(&client, &rules.group, &partitions)
            .await?
            .into_iter()
            .map(|(tp, c)| (tp, c.offset))
            .collect();
    let mut out = Vec::with_capacity(partitions.len());
    for tp in partitions {
        if let Some(offset) = committed.get(&tp) {
            out.push(Start {
                tp,
                offset: *offset,
                committed: true,
            });
            continue;
        }
        let to = match (rules.start_without_commit, rules.auto_offset_reset) {
            (Some(to), _) => to,
            (None, OffsetReset::Earliest) => SeekTo::Beginning,
            (None, OffsetReset::Latest) => SeekTo::End,
            (None, OffsetReset::Error) => {
                return Err(ClientError::NoCommittedOffset {
                    group: rules.group.clone(),
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                })
            }
        };
        let offset = resolve(&client, &tp.topic, tp.partition, to).await?;
        out.push(Start {
            tp,
            offset,
            committed: false,
        });
    }
    Ok(out)
}
