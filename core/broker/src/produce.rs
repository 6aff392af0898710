//! Serving a produce: each partition's batches appended to its log, all partitions side by
//! side (their flushers run together), answered per [`crate::acks`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use quiver_broker_api::{Acks, Produce, ProducePartOutcome};

use crate::acks::{AckPoint, ProduceProgress};
use crate::batches::split_batches;
use crate::partition::Partition;
use crate::shard::{storage_error, Shard};

impl Shard {
    /// Appends each partition's batches, all partitions at once, and answers when every
    /// partition is settled per `acks` or `timeout_ms` passed.
    pub(crate) async fn produce(&self, p: Produce) -> Vec<ProducePartOutcome> {
        let n = p.partitions.len();
        let progress = Rc::new(RefCell::new(ProduceProgress::new(p.acks, n)));
        let mut work = Vec::new();
        for (i, part) in p.partitions.into_iter().enumerate() {
            let prepared = self
                .locate(&part.topic, part.partition)
                .and_then(|partition| {
                    let epoch = partition
                        .replica
                        .append_epoch(&part.topic, part.partition)?;
                    Ok((partition, epoch, split_batches(part.records)?))
                });
            match prepared {
                Ok(w) => work.push((i, w)),
                Err(e) => progress.borrow_mut().fail(i, e, -1),
            }
        }
        let point = AckPoint::of(p.acks);
        let appends = work.into_iter().map(|(i, (partition, epoch, batches))| {
            let progress = progress.clone();
            async move {
                append_all(&partition, epoch, point, batches, i, &progress).await;
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
