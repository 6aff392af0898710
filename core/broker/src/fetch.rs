//! Serving a fetch: a long poll over many partitions, decided by [`crate::long_poll`].

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_broker_api::{ApiError, ErrorCode, Fetch, FetchPartOutcome, FetchPartition, Isolation};
use quiver_storage::StorageError;

use crate::long_poll::{self, Gathered, Next};
use crate::partition::Partition;
use crate::shard::{storage_error, Shard};

impl Shard {
    /// Answers once `min_bytes` are available over all partitions, a partition fails, or
    /// `max_wait_ms` passed; until then it sleeps on the partitions' commit wake-ups.
    pub(crate) async fn fetch(&self, f: &Fetch) -> Vec<FetchPartOutcome> {
        let partitions: Vec<_> = f
            .partitions
            .iter()
            .map(|p| self.locate(&p.topic, p.partition))
            .collect();
        let budget = long_poll::response_budget(
            f.max_bytes,
            self.settings().max_frame_bytes,
            f.partitions.len(),
        );
        let deadline = Instant::now() + Duration::from_millis(u64::from(f.max_wait_ms));
        loop {
            let mut out = Vec::with_capacity(f.partitions.len());
            let mut gathered = Gathered::new(budget);
            for (part, partition) in f.partitions.iter().zip(&partitions) {
                let entry = match (partition, gathered.room()) {
                    (Err(e), _) => FetchPartOutcome::failed(e.clone()),
                    // Past the budget: the marks only; the next fetch reads it.
                    (Ok(p), None) => marks_only(p),
                    (Ok(p), Some(room)) => read_part(p, part, room, f.isolation).await,
                };
                gathered.add(
                    entry.batches.iter().map(Bytes::len).sum(),
                    entry.outcome.is_err(),
                );
                out.push(entry);
            }
            let now = Instant::now();
            match long_poll::next(&gathered, f.min_bytes, now, deadline) {
                Next::Answer => return out,
                Next::WaitUntil(until) => {
                    // Sleep until any partition commits past its high watermark, or the
                    // deadline.
                    let wakeups: Vec<_> = partitions
                        .iter()
                        .flatten()
                        .map(|p| {
                            let from = p.offsets().high_watermark;
                            Box::pin(async move { p.wait_readable(from).await })
                        })
                        .collect();
                    futures_lite::future::or(select_any(wakeups), async {
                        glommio::timer::sleep(until.saturating_duration_since(now)).await;
                    })
                    .await;
                }
            }
        }
    }
}

/// An entry with no records: the partition's marks only.
fn marks_only(p: &Partition) -> FetchPartOutcome {
    let o = p.offsets();
    FetchPartOutcome {
        high_watermark: o.high_watermark as i64,
        log_start_offset: o.log_start_offset as i64,
        batches: Vec::new(),
        outcome: Ok(()),
        last_stable_offset: -1,
        aborted: Vec::new(),
    }
}

/// Reads one partition of a fetch: whole batches from its offset up to its high watermark
/// (read_committed: its last stable offset, with the aborted transactions in that range),
/// up to `room` bytes (and its own `max_bytes`), at least one batch.
async fn read_part(
    p: &Partition,
    part: &FetchPartition,
    room: usize,
    isolation: Isolation,
) -> FetchPartOutcome {
    let mut entry = marks_only(p);
    if p.log.is_closing() {
        // Its wake-up would fire at once, forever: answer instead of spinning.
        entry.outcome = Err(ApiError::new(
            ErrorCode::ShuttingDown,
            format!(
                "partition {}/{} is closing (topic deleted or reconfigured, or the node stopping); refresh metadata and retry",
                part.topic, part.partition
            ),
        ));
        return entry;
    }
    let offsets = p.offsets();
    let Ok(offset) = u64::try_from(part.offset) else {
        entry.outcome = Err(storage_error(&StorageError::OffsetOutOfRange {
            requested: 0,
            log_start_offset: offsets.log_start_offset,
            log_end_offset: offsets.high_watermark,
        }));
        return entry;
    };
    let max_bytes = (part.max_bytes as usize).clamp(1, room);
    let below = match isolation {
        Isolation::ReadUncommitted => offsets.high_watermark,
        Isolation::ReadCommitted => {
            let lso = p.log.last_stable_offset(offsets.high_watermark);
            entry.last_stable_offset = lso as i64;
            entry.aborted = p
                .log
                .aborted_between(offset, lso)
                .into_iter()
                .map(|a| (a.producer_id, a.first_offset as i64))
                .collect();
            lso
        }
    };
    if offset >= below && offset <= offsets.high_watermark && offset >= offsets.log_start_offset {
        // Nothing stable to read yet (an open transaction holds the LSO back).
        return entry;
    }
    match p.log.read_runs_below(offset, max_bytes, below).await {
        Ok(batches) => entry.batches = batches,
        Err(e) => entry.outcome = Err(storage_error(&e)),
    }
    entry
}

/// Resolves when the first of `futures` does (never, for none).
async fn select_any<F: Future<Output = ()> + Unpin>(mut futures: Vec<F>) {
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if Pin::new(f).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}
