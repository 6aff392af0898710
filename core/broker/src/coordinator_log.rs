//! The log of a coordinator (consumer groups, transactions): its state changes as keyed
//! records in its partition of an internal topic, appended in call order with their
//! durability awaited apart (so concurrent requests share one write), and read back in full
//! when the coordinator loads.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use quiver_batch::{BatchBuilder, BatchHeader, NewRecord, RecordIter};
use quiver_broker_api::{ApiError, ErrorCode};

use crate::partition::Partition;
use crate::shard::{storage_error, Shard};

/// Largest batch of coordinator records appended at once.
const MAX_RECORDS_BATCH_BYTES: usize = 512 << 10;
/// Bytes read at a time while loading a coordinator partition.
const LOAD_READ_BYTES: usize = 1 << 20;

/// The durability of a request's stamped records.
pub(crate) struct PendingDurability(Vec<quiver_storage::Durability>);

impl PendingDurability {
    pub(crate) async fn wait(self) -> Result<(), ApiError> {
        for d in self.0 {
            d.wait().await.map_err(|e| storage_error(&e))?;
        }
        Ok(())
    }
}

/// The internal topics are created on first use with these configs: compacted (the latest
/// record of every key is the state), in segments small enough for compaction to keep up.
pub(crate) const INTERNAL_TOPIC_CONFIGS: &[(&str, &str)] =
    &[("cleanup_policy", "compact"), ("segment_bytes", "16777216")];

impl Shard {
    /// Runs `tick` every `every` on the shard's background queue while the shard lives,
    /// started once per `running` flag; `tick` returning false stops it.
    pub(crate) fn start_ticker<F, Fut>(
        self: &Rc<Self>,
        running: &Cell<bool>,
        every: Duration,
        what: &'static str,
        tick: F,
    ) where
        F: Fn(Rc<Shard>) -> Fut + 'static,
        Fut: Future<Output = bool>,
    {
        if running.replace(true) {
            return;
        }
        let weak = Rc::downgrade(self);
        let task = async move {
            loop {
                glommio::timer::sleep(every).await;
                let Some(shard) = weak.upgrade() else {
                    return;
                };
                if !tick(shard).await {
                    return;
                }
            }
        };
        let spawned = match self.background {
            Some(q) => glommio::spawn_local_into(task, q).map(|t| t.detach()),
            None => Ok(glommio::spawn_local(task).detach()),
        };
        if let Err(e) = spawned {
            tracing::warn!("could not start the {what} ticker: {e}");
            running.set(false);
        }
    }

    /// Stamps `records` (key, value or tombstone) into `topic/partition` in call order and
    /// returns what to await for their durability.
    pub(crate) async fn append_records(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<PendingDurability, ApiError> {
        let log = self.locate(topic, partition)?;
        let epoch = log.replica.append_epoch(topic, partition)?;
        let now = crate::groups::wall_clock_ms();
        let mut builder = BatchBuilder::new();
        let mut batches = Vec::new();
        for (key, value) in records {
            let record = NewRecord {
                key: Some(Bytes::from(key)),
                value: value.map(Bytes::from),
                headers: Vec::new(),
                timestamp_ms: now,
            };
            if builder.record_count() > 0
                && builder.size_bytes() + builder.record_size_bytes(&record)
                    > MAX_RECORDS_BATCH_BYTES
            {
                batches.push(std::mem::replace(&mut builder, BatchBuilder::new()).build());
            }
            builder.push(&record);
        }
        batches.push(builder.build());
        let mut pending = Vec::with_capacity(batches.len());
        for b in batches {
            let (_, durability) = log
                .log
                .append_pipelined(b, epoch)
                .await
                .map_err(|e| storage_error(&e))?;
            pending.push(durability);
        }
        Ok(PendingDurability(pending))
    }
}

/// Calls `apply(offset, key, value)` for every keyed record of the partition, in order.
pub(crate) async fn replay_partition(
    log: &Partition,
    mut apply: impl FnMut(i64, &[u8], Option<&[u8]>),
) -> Result<(), ApiError> {
    let end = log.offsets().high_watermark;
    let mut offset = log.log.log_start_offset();
    while offset < end {
        let batches = log
            .log
            .read(offset, LOAD_READ_BYTES)
            .await
            .map_err(|e| storage_error(&e))?;
        if batches.is_empty() {
            break;
        }
        for batch in batches {
            let header = BatchHeader::parse(&batch)
                .map_err(|e| ApiError::new(ErrorCode::CorruptData, e.to_string()))?;
            offset = (header.last_offset() + 1).max(offset as i64 + 1) as u64;
            if header.is_control() {
                continue;
            }
            let records = RecordIter::new(batch)
                .map_err(|e| ApiError::new(ErrorCode::CorruptData, e.to_string()))?;
            for r in records {
                let r = r.map_err(|e| ApiError::new(ErrorCode::CorruptData, e.to_string()))?;
                if let Some(key) = r.key {
                    apply(r.offset, &key, r.value.as_deref());
                }
            }
        }
    }
    Ok(())
}
