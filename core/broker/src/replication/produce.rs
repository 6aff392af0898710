//! A produce to a replicated partition, on its leader: each batch is checked against the
//! partition's producer state (only a batch the leader accepts enters the Raft log; replicas
//! record its entries without judging them again), proposed, and answered once a
//! quorum holds it (`acks=all`: the commit index passed it) or once the leader's log does
//! (`acks=leader`). An idempotent producer's retry of a batch already written gets its
//! offsets back without a second proposal.

use bytes::BytesMut;
use quiver_batch::BatchHeader;
use quiver_broker_api::{ApiError, ErrorCode};
use quiver_storage::producer_state::ProducerError;
use quiver_storage::StorageError;

use super::driver::{GroupHandle, ProposeRefusal, ReplicaDriver};
use crate::acks::AckPoint;
use crate::partition::Partition;
use crate::shard::storage_error;

fn not_leader(topic: &str, partition: i32, leader: Option<i32>) -> ApiError {
    let who = match leader {
        Some(l) => format!("node {l} leads it"),
        None => "no leader is elected right now".to_string(),
    };
    ApiError::new(
        ErrorCode::NotOwner,
        format!("this node does not lead {topic}/{partition}: {who}; refresh metadata and retry"),
    )
}

/// Resolves once `done` holds for the group's marks (checked whenever they move).
pub(crate) async fn wait_until(g: &GroupHandle, done: impl Fn(&GroupHandle) -> bool) {
    loop {
        let waiter = g.progress.register();
        if done(g) {
            return;
        }
        let _ = waiter.await;
    }
}

/// As [`wait_until`], giving up at `deadline`: whether `done` held.
pub(crate) async fn wait_until_or(
    g: &GroupHandle,
    deadline: std::time::Instant,
    done: impl Fn(&GroupHandle) -> bool,
) -> bool {
    loop {
        let waiter = g.progress.register();
        if done(g) {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = futures_lite::future::or(
            async {
                let _ = waiter.await;
            },
            async {
                glommio::timer::sleep(left).await;
            },
        )
        .await;
    }
}

/// A marker found superseded: answered as written once every entry this leader holds is
/// committed (the marker that superseded it among them), `NotOwner` if it is deposed first.
async fn superseded_marker(
    topic: &str,
    partition_id: i32,
    partition: &Partition,
    g: &GroupHandle,
) -> Result<(u64, u64), ApiError> {
    // Entry index = offset + 1: the last entry's index is the log end offset.
    let end = partition.log.log_end_offset();
    wait_until(g, |g| g.commit_index.get() >= end || !g.is_leader.get()).await;
    if g.commit_index.get() < end {
        return Err(not_leader(topic, partition_id, g.leader.get()));
    }
    let last = end.saturating_sub(1);
    Ok((last, last))
}

/// Appends `batches` to a replicated partition through its group: the offsets they took.
pub async fn append_replicated(
    driver: &ReplicaDriver,
    topic: &str,
    partition: &Partition,
    partition_id: i32,
    point: AckPoint,
    batches: Vec<BytesMut>,
) -> Result<(u64, u64), ApiError> {
    let Some((group, g)) = &partition.group else {
        return Err(ApiError::new(
            ErrorCode::Unknown,
            "not a replicated partition",
        ));
    };
    let mut range: Option<(u64, u64)> = None;
    for batch in batches {
        let (first, last) = {
            let _turn = g
                .propose_gate
                .acquire_permit(1)
                .await
                .map_err(|_| ApiError::new(ErrorCode::ShuttingDown, "the node is stopping"))?;
            if !g.is_leader.get() {
                return Err(not_leader(topic, partition_id, g.leader.get()));
            }
            let checked = match partition.log.precheck(&batch) {
                Err(StorageError::Producer(ProducerError::MarkerSuperseded { .. })) => {
                    // Its transaction's marker is in this leader's log already (an earlier
                    // attempt, perhaps a deposed leader's entry this one inherited): done
                    // once everything here is committed; the batches after it go on.
                    drop(_turn);
                    let (_, last) = superseded_marker(topic, partition_id, partition, g).await?;
                    // Indexes are offsets + 1.
                    range = Some((range.map_or(last + 1, |r| r.0), last + 1));
                    continue;
                }
                r => r.map_err(|e| storage_error(&e))?,
            };
            if let Some(dup) = checked {
                // Written before: its offsets, once readable like any other.
                tracing::debug!(
                    topic,
                    partition = partition_id,
                    base_offset = dup.base_offset,
                    "a retry of a batch already in the log"
                );
                (dup.base_offset + 1, dup.last_offset + 1)
            } else {
                let header = BatchHeader::parse(&batch)
                    .map_err(|e| ApiError::new(ErrorCode::InvalidBatch, e.to_string()))?;
                let span = u64::try_from(header.last_offset_delta).unwrap_or(0) + 1;
                let (first, last) =
                    driver
                        .propose(*group, span, batch.to_vec())
                        .map_err(|r| match r {
                            ProposeRefusal::NotLeader { leader } => {
                                not_leader(topic, partition_id, leader)
                            }
                            ProposeRefusal::Other(why) => {
                                ApiError::new(ErrorCode::StorageError, why)
                            }
                        })?;
                tracing::debug!(
                    topic,
                    partition = partition_id,
                    first_index = first,
                    producer_id = header.producer_id,
                    epoch = header.producer_epoch,
                    base_sequence = header.base_sequence,
                    "proposed"
                );
                // In the leader's log (and its producer state) before the next batch's check.
                wait_until(g, |g| g.persisted_index.get() >= last || !g.is_leader.get()).await;
                if g.persisted_index.get() < last {
                    return Err(not_leader(topic, partition_id, g.leader.get()));
                }
                (first, last)
            }
        };
        range = Some((range.map_or(first, |r| r.0), last));
    }
    let Some((first, last)) = range else {
        return Err(ApiError::new(ErrorCode::InvalidBatch, "no batch"));
    };
    if point == AckPoint::Durable {
        // Committed: a quorum holds it. A leader deposed before then cannot say.
        wait_until(g, |g| g.commit_index.get() >= last || !g.is_leader.get()).await;
        if g.commit_index.get() < last {
            return Err(ApiError::new(
                ErrorCode::NotOwner,
                format!(
                    "{topic}/{partition_id}: leadership moved before a quorum acknowledged the batch; it may or may not be kept: retry (an idempotent producer's retry is not duplicated)"
                ),
            ));
        }
    }
    Ok((first - 1, last - 1))
}
