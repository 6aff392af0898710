//! Moving a failed record to its group's dead-letter topic or to a delay topic (non-blocking
//! retries), on the coordinator's shard, under the coordinator's gate (see
//! `quiver_group::coordinator::failures` for the steps):
//! the DLQ topic is created on first use with the source topic's partition count, the record
//! keeps its partition number, key, value, timestamp and headers, and gains headers naming
//! where it came from and why it failed. Before appending, the DLQ partition is searched from
//! the end offset recorded when the move began: a move retried after a crash finds its own
//! copy and does not write a second one.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use quiver_batch::{BatchBuilder, BatchHeader, NewRecord, Record as BatchRecord, RecordIter};
use quiver_broker_api::{
    Acks, ApiError, ErrorCode, Fetch, FetchPartition, Nack, NackReply, NewTopic, OffsetQuery,
    Produce, ProducePartition, Request, RequestContext, Response,
};
use quiver_group::record::DeliveryValue;

use crate::groups::wall_clock_ms;
use crate::shard::Shard;

/// Headers a dead letter carries (beside the original record's own).
pub const HEADER_TOPIC: &str = "quiver.dlq.topic";
pub const HEADER_PARTITION: &str = "quiver.dlq.partition";
pub const HEADER_OFFSET: &str = "quiver.dlq.offset";
pub const HEADER_GROUP: &str = "quiver.dlq.group";
pub const HEADER_DELIVERIES: &str = "quiver.dlq.deliveries";
pub const HEADER_ERROR: &str = "quiver.dlq.error";
pub const HEADER_FIRST_FAILURE_MS: &str = "quiver.dlq.first_failure_ms";
/// Where this copy was moved from (`topic/partition/offset`): what a retried move looks for.
pub const HEADER_FROM: &str = "quiver.dlq.from";
/// A copy in a delay topic: not to be delivered before this time (ms since the epoch).
pub const HEADER_NOT_BEFORE_MS: &str = "quiver.retry.not_before_ms";

/// A move of a failed record.
pub(crate) struct Move<'a> {
    /// The delay or dead-letter topic.
    pub to: &'a str,
    pub delivery: DeliveryValue,
    /// Set for a delay topic.
    pub not_before_ms: Option<i64>,
    /// The record, when it was read already.
    pub record: Option<BatchRecord>,
}

fn header_str(r: &BatchRecord, name: &str) -> Option<String> {
    r.header(name)
        .and_then(|v| std::str::from_utf8(v).ok().map(str::to_string))
}

/// A copy's origin (from the headers an earlier move wrote); the default for an original.
pub(crate) fn origin_of(r: &BatchRecord) -> quiver_group::Origin {
    quiver_group::Origin {
        topic: header_str(r, HEADER_TOPIC),
        prior_deliveries: header_str(r, HEADER_DELIVERIES)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        first_failure_ms: header_str(r, HEADER_FIRST_FAILURE_MS).and_then(|v| v.parse().ok()),
    }
}

/// Bytes read at a time while looking for an earlier copy or the record itself.
const READ_BYTES: u32 = 1 << 20;
/// Most reads spent looking for an earlier copy (a DLQ grows slowly: far more than enough).
const MAX_SEARCH_READS: usize = 64;

fn internal(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl Shard {
    /// Serves a request through the normal routing (boxed: it may come back here).
    fn internal_request(
        self: &Rc<Self>,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Response>>> {
        Box::pin(self.clone().handle(RequestContext::internal(), request))
    }

    /// Moves the failed record `n` per `m`.
    pub(crate) async fn dead_letter(
        self: &Rc<Self>,
        co: &std::cell::RefCell<quiver_group::Coordinator>,
        coordinator_partition: i32,
        n: &Nack,
        m: Move<'_>,
    ) -> Result<NackReply, ApiError> {
        let Move {
            to: dlq_topic,
            delivery,
            not_before_ms,
            record,
        } = m;
        let now_ms = || self.groups.now_ms();
        let source_partitions = self
            .metadata()
            .topics
            .get(&n.tp.topic)
            .map(|t| t.partitions.len() as i32)
            .ok_or_else(|| {
                internal(
                    ErrorCode::UnknownTopic,
                    format!("topic {} no longer exists", n.tp.topic),
                )
            })?;
        self.ensure_topic(dlq_topic, source_partitions, &[]).await?;
        let dlq_partitions = self
            .metadata()
            .topics
            .get(dlq_topic)
            .map(|t| t.partitions.len() as i32)
            .filter(|n| *n > 0)
            .ok_or_else(|| internal(ErrorCode::UnknownTopic, format!("{dlq_topic} vanished")))?;
        let (dlq_partition, search_from) = match delivery.moving {
            Some(m) => m,
            None => {
                let p = n.tp.partition.rem_euclid(dlq_partitions);
                let end = self.end_offset(dlq_topic, p).await?;
                let records = co
                    .borrow_mut()
                    .begin_move(&n.group, &n.tp, n.offset, p, end, now_ms())
                    .map_err(ApiError::from)?;
                self.persist(coordinator_partition, &records).await?;
                (p, end)
            }
        };
        let dlq_offset = match self
            .find_dead_letter(dlq_topic, dlq_partition, search_from, n)
            .await?
        {
            Some(o) => o,
            None => {
                let original = match record {
                    Some(r) => r,
                    None => {
                        self.read_record(&n.tp.topic, n.tp.partition, n.offset)
                            .await?
                    }
                };
                let to = (dlq_topic, dlq_partition);
                self.append_dead_letter(to, n, &delivery, not_before_ms, original)
                    .await?
            }
        };
        let records = co
            .borrow_mut()
            .dead_lettered(&n.group, &n.tp, n.offset, now_ms(), wall_clock_ms())
            .map_err(ApiError::from)?;
        self.persist(coordinator_partition, &records).await?;
        tracing::info!(group = %n.group, topic = %n.tp.topic, partition = n.tp.partition, offset = n.offset, to = %dlq_topic, to_partition = dlq_partition, to_offset = dlq_offset, deliveries = delivery.deliveries, "moved a failed record");
        Ok(NackReply {
            deliveries: delivery.deliveries,
            redeliver_after_ms: None,
            dead_letter: Some((dlq_topic.to_string(), dlq_partition, dlq_offset)),
            delayed_until_ms: not_before_ms,
        })
    }

    /// Creates topic `name` unless it exists (through the normal control path).
    pub(crate) async fn ensure_topic(
        self: &Rc<Self>,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), ApiError> {
        if self.metadata().topics.contains_key(name) {
            return Ok(());
        }
        let request = Request::CreateTopics(vec![NewTopic {
            name: name.to_string(),
            partitions,
            // The cluster's default: replicated where there are several nodes.
            replication_factor: 0,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }]);
        match self.internal_request(request).await {
            Response::CreateTopics(results) => match results.into_iter().next() {
                Some(r) => match r.outcome {
                    Ok(()) => Ok(()),
                    Err(e) if e.code == ErrorCode::TopicExists => Ok(()),
                    // Placement refused it: fewer nodes are up than the default replication
                    // factor (a node down when the topic is first needed). Passing, as Kafka
                    // answers COORDINATOR_NOT_AVAILABLE until its offsets topic can be
                    // created: the client retries (the chaos harness, seed 1223: a group
                    // stayed unusable while one node was down, and its member gave up).
                    Err(e) if e.code == ErrorCode::InvalidRequest => Err(internal(
                        ErrorCode::CoordinatorLoading,
                        format!(
                            "{name} cannot be created yet ({}); retry once the cluster's nodes are up",
                            e.message
                        ),
                    )),
                    Err(e) => Err(e),
                },
                None => Err(internal(ErrorCode::Unknown, "no answer creating the topic")),
            },
            Response::Refused { error, .. } => Err(error),
            _ => Err(internal(
                ErrorCode::Unknown,
                "unexpected answer creating the topic",
            )),
        }
    }

    async fn end_offset(self: &Rc<Self>, topic: &str, partition: i32) -> Result<i64, ApiError> {
        let request = Request::ListOffsets {
            topic: topic.to_string(),
            partition,
            query: OffsetQuery::Latest,
        };
        match self.internal_request(request).await {
            Response::ListOffsets { offset, outcome } => outcome.map(|()| offset.max(0)),
            Response::Refused { error, .. } => Err(error),
            _ => Err(internal(
                ErrorCode::Unknown,
                "unexpected ListOffsets answer",
            )),
        }
    }

    /// The records of one partition from `offset`, one read (at least one whole batch).
    async fn read_from(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Vec<BatchRecord>, ApiError> {
        let request = Request::Fetch(Fetch {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: READ_BYTES,
            partitions: vec![FetchPartition {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes: READ_BYTES,
            }],
            isolation: quiver_broker_api::Isolation::ReadUncommitted,
        });
        let part = match self.internal_request(request).await {
            Response::Fetch(mut parts) if parts.len() == 1 => parts.remove(0),
            Response::Refused { error, .. } => return Err(error),
            _ => return Err(internal(ErrorCode::Unknown, "unexpected Fetch answer")),
        };
        part.outcome?;
        let mut out = Vec::new();
        for mut run in part.batches {
            while !run.is_empty() {
                let corrupt = |e: String| internal(ErrorCode::CorruptData, e);
                let header = BatchHeader::parse(&run).map_err(|e| corrupt(e.to_string()))?;
                let len = header
                    .total_bytes()
                    .filter(|l| *l <= run.len())
                    .ok_or_else(|| corrupt("a batch is cut short".into()))?;
                let batch = run.split_to(len);
                for r in RecordIter::new(batch).map_err(|e| corrupt(e.to_string()))? {
                    let r = r.map_err(|e| corrupt(e.to_string()))?;
                    if r.offset >= offset {
                        out.push(r);
                    }
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn read_record(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<BatchRecord, ApiError> {
        self.read_from(topic, partition, offset)
            .await?
            .into_iter()
            .find(|r| r.offset == offset)
            .ok_or_else(|| {
                internal(
                    ErrorCode::OffsetOutOfRange,
                    format!("{topic}/{partition} has no record at offset {offset} any more (retention deleted it?)"),
                )
            })
    }

    /// The offset of an earlier copy of this dead letter at or after `from`, if any.
    async fn find_dead_letter(
        self: &Rc<Self>,
        dlq_topic: &str,
        dlq_partition: i32,
        from: i64,
        n: &Nack,
    ) -> Result<Option<i64>, ApiError> {
        let end = self.end_offset(dlq_topic, dlq_partition).await?;
        let mut at = from;
        for _ in 0..MAX_SEARCH_READS {
            if at >= end {
                return Ok(None);
            }
            let records = self.read_from(dlq_topic, dlq_partition, at).await?;
            let Some(last) = records.last() else {
                return Ok(None);
            };
            at = last.offset + 1;
            if let Some(r) = records.iter().find(|r| is_copy_of(r, n)) {
                return Ok(Some(r.offset));
            }
        }
        Ok(None)
    }

    async fn append_dead_letter(
        self: &Rc<Self>,
        (dlq_topic, dlq_partition): (&str, i32),
        n: &Nack,
        delivery: &DeliveryValue,
        not_before_ms: Option<i64>,
        original: BatchRecord,
    ) -> Result<i64, ApiError> {
        // A copy keeps naming the record's source; an original names itself.
        let (topic, partition, offset) = match (
            header_str(&original, HEADER_TOPIC),
            header_str(&original, HEADER_PARTITION),
            header_str(&original, HEADER_OFFSET),
        ) {
            (Some(t), Some(p), Some(o)) => (t, p, o),
            _ => (
                n.tp.topic.clone(),
                n.tp.partition.to_string(),
                n.offset.to_string(),
            ),
        };
        let mut ours = vec![
            (HEADER_TOPIC, topic),
            (HEADER_PARTITION, partition),
            (HEADER_OFFSET, offset),
            (HEADER_GROUP, n.group.clone()),
            (HEADER_DELIVERIES, delivery.deliveries.to_string()),
            (HEADER_ERROR, delivery.last_error.clone()),
            (
                HEADER_FIRST_FAILURE_MS,
                delivery.first_failure_ms.to_string(),
            ),
            (HEADER_FROM, from_of(n)),
        ];
        if let Some(t) = not_before_ms {
            ours.push((HEADER_NOT_BEFORE_MS, t.to_string()));
        }
        let mut headers: Vec<(Bytes, Option<Bytes>)> = original
            .headers
            .into_iter()
            .filter(|h| !h.key.starts_with(b"quiver.dlq.") && !h.key.starts_with(b"quiver.retry."))
            .map(|h| (h.key, h.value))
            .collect();
        headers.extend(
            ours.into_iter()
                .map(|(k, v)| (Bytes::from_static(k.as_bytes()), Some(Bytes::from(v)))),
        );
        let mut builder = BatchBuilder::new();
        builder.push(&NewRecord {
            key: original.key,
            value: original.value,
            headers,
            timestamp_ms: original.timestamp_ms,
        });
        let request = Request::Produce(Produce {
            acks: Acks::All,
            timeout_ms: 30_000,
            transactional_id: None,
            partitions: vec![ProducePartition {
                topic: dlq_topic.to_string(),
                partition: dlq_partition,
                records: builder.build(),
            }],
        });
        match self.internal_request(request).await {
            Response::Produce(parts) => match parts.into_iter().next() {
                Some(p) => p.outcome.map(|()| p.base_offset),
                None => Err(internal(ErrorCode::Unknown, "no answer appending the DLQ")),
            },
            Response::Refused { error, .. } => Err(error),
            _ => Err(internal(ErrorCode::Unknown, "unexpected Produce answer")),
        }
    }
}

fn from_of(n: &Nack) -> String {
    format!("{}/{}/{}", n.tp.topic, n.tp.partition, n.offset)
}

/// True when `r` is the copy a move of the record `n` failed wrote.
fn is_copy_of(r: &BatchRecord, n: &Nack) -> bool {
    r.header(HEADER_GROUP) == Some(n.group.as_bytes())
        && r.header(HEADER_FROM) == Some(from_of(n).as_bytes())
}
