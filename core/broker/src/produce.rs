//! Serving a produce: each partition's batches appended to its log, all partitions side by
//! side (their flushers run together), answered per [`crate::acks`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use quiver_batch::BatchHeader;
use quiver_broker_api::{Acks, ApiError, ErrorCode, Produce, ProducePartOutcome, TopicPartition};

use crate::acks::{AckPoint, ProduceProgress};
use crate::batches::split_batches;
use crate::partition::Partition;
use crate::shard::{storage_error, Shard};

impl Shard {
    /// Appends each partition's batches, all partitions at once, and answers when every
    /// partition is settled per `acks` or `timeout_ms` passed.
    pub(crate) async fn produce(self: Rc<Self>, p: Produce) -> Vec<ProducePartOutcome> {
        let n = p.partitions.len();
        let progress = Rc::new(RefCell::new(ProduceProgress::new(p.acks, n)));
        let mut work = Vec::new();
        // Partitions a transactional producer's batch would open a transaction on: the
        // coordinator adds them (durably) before they take it.
        let mut joining: Vec<(usize, TopicPartition)> = Vec::new();
        let mut producer = None;
        for (i, part) in p.partitions.into_iter().enumerate() {
            let prepared = self
                .locate(&part.topic, part.partition)
                .and_then(|partition| {
                    // A replicated partition's leader is its group's (checked when proposed).
                    let epoch = if partition.group.is_some() {
                        0
                    } else {
                        partition
                            .replica
                            .append_epoch(&part.topic, part.partition)?
                    };
                    let batches = split_batches(part.records)?;
                    if let Some(h) = transactional_header(&batches)? {
                        check_transactional(&partition, &p.transactional_id, &part.topic)?;
                        if partition.log.opens_transaction(&h) {
                            joining.push((i, TopicPartition::new(&part.topic, part.partition)));
                        }
                        producer = Some((h.producer_id, h.producer_epoch));
                    }
                    Ok((partition, epoch, batches))
                });
            match prepared {
                Ok(w) => work.push((i, part.topic.clone(), part.partition, w)),
                Err(e) => progress.borrow_mut().fail(i, e, -1),
            }
        }
        if let (Some(id), Some((producer_id, epoch)), false) =
            (&p.transactional_id, producer, joining.is_empty())
        {
            let partitions = joining.iter().map(|(_, tp)| tp.clone()).collect();
            if let Err(e) = self
                .clone()
                .add_partitions_to_txn(id, producer_id, epoch, partitions)
                .await
            {
                let refused: Vec<usize> = joining.iter().map(|(i, _)| *i).collect();
                work.retain(|(i, ..)| !refused.contains(i));
                for i in refused {
                    progress.borrow_mut().fail(i, e.clone(), -1);
                }
            }
        }
        let point = AckPoint::of(p.acks);
        let driver = self.replication();
        let appends =
            work.into_iter()
                .map(|(i, topic, partition_id, (partition, epoch, batches))| {
                    let progress = progress.clone();
                    let driver = driver.clone();
                    async move {
                        match (&partition.group, driver) {
                            (Some(_), Some(driver)) => {
                                let result = crate::replication::produce::append_replicated(
                                    &driver,
                                    &topic,
                                    &partition,
                                    partition_id,
                                    point,
                                    batches,
                                )
                                .await;
                                let start = partition.log.log_start_offset();
                                match result {
                                    Ok((base, last)) => {
                                        progress.borrow_mut().appended(i, base, last, start)
                                    }
                                    Err(e) => progress.borrow_mut().fail(i, e, start as i64),
                                }
                            }
                            _ => append_all(&partition, epoch, point, batches, i, &progress).await,
                        }
                    }
                });
        if p.acks == Acks::None {
            // Enqueued in this task: bounded by the logs' back-pressure, errors reported in
            // the entries (a client with acks=none may ignore them).
            join_all(appends.collect()).await;
        } else {
            futures_lite::future::or(join_all(appends.collect()), async {
                glommio::timer::sleep(Duration::from_millis(u64::from(p.timeout_ms.max(1)))).await;
            })
            .await;
        }
        let progress = progress.replace(ProduceProgress::new(p.acks, 0));
        progress.finish(p.timeout_ms)
    }
}

/// The header of the first transactional batch among `batches`, in one pass over their
/// headers that also refuses control batches: markers are written by transaction
/// coordinators only, and one in a produce would end (or fake the end of) a transaction.
fn transactional_header(batches: &[BytesMut]) -> Result<Option<BatchHeader>, ApiError> {
    let mut found = None;
    for h in batches.iter().filter_map(|b| BatchHeader::parse(b).ok()) {
        if h.is_control() {
            return Err(ApiError::new(
                ErrorCode::InvalidBatch,
                "control batches (transaction markers) are written by transaction coordinators only; a producer ends a transaction with EndTxn",
            ));
        }
        if found.is_none() && h.is_transactional() {
            found = Some(h);
        }
    }
    Ok(found)
}

/// A transactional batch needs the producer's transactional id (its coordinator adds the
/// partition to the transaction) and a topic compaction leaves whole.
fn check_transactional(
    partition: &Partition,
    transactional_id: &Option<String>,
    topic: &str,
) -> Result<(), ApiError> {
    if transactional_id.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidTxnState,
            "transactional batches need the producer's transactional id in the produce request (its coordinator must add the partition to the transaction first)",
        ));
    }
    if partition.log.config().cleanup_policy.compacts() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("topic {topic:?} is compacted: transactional writes to compacted topics are not supported yet; write to a topic with cleanup_policy=delete"),
        ));
    }
    Ok(())
}

/// Appends one partition's batches in order and records how it went.
async fn append_all(
    partition: &Partition,
    epoch: i32,
    point: AckPoint,
    batches: Vec<BytesMut>,
    i: usize,
    progress: &RefCell<ProduceProgress>,
) {
    let log = &partition.log;
    let mut range: Option<(u64, u64)> = None;
    for b in batches {
        let appended = match point {
            AckPoint::Enqueued => log.append_buffered(b, epoch).await,
            AckPoint::Durable => log.append(b, epoch).await,
        };
        match appended {
            Ok(info) => {
                range = Some((range.map_or(info.base_offset, |r| r.0), info.last_offset));
            }
            Err(e) => {
                let start = log.log_start_offset() as i64;
                progress.borrow_mut().fail(i, storage_error(&e), start);
                return;
            }
        }
    }
    // split_batches never returns an empty list, so `range` is set.
    if let Some((base, last)) = range {
        progress
            .borrow_mut()
            .appended(i, base, last, log.log_start_offset());
    }
}

/// Runs every future to completion, side by side (one task; each wake-up polls those still
/// pending — fine for the few dozen partitions of one request).
pub(crate) async fn join_all<F: Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futures {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}
