//! Reading a partition log: whole batches from an offset (from the batch cache, the
//! write-behind in memory, or the segment with one DMA read, CRC-checked), and the offset of
//! a timestamp.

use bytes::Bytes;
use quiver_batch::{BatchHeader, RecordIter};

use super::state::LogState;
use super::PartitionLog;
use crate::error::{Result, StorageError};
use crate::scan::StopReason;
use crate::segment::BatchWalker;

impl PartitionLog {
    /// Whole batches starting with the one that holds `offset`, up to `max_bytes` (at least
    /// one batch). Empty at the end of the log; `OffsetOutOfRange` outside it.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>> {
        self.read_impl(offset, max_bytes, false, u64::MAX).await
    }

    /// As [`PartitionLog::read`], but batches that lie next to each other in one disk read come
    /// back as one `Bytes` (a run of whole batches), so a fetch can copy them out in one go.
    pub async fn read_runs(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>> {
        self.read_impl(offset, max_bytes, true, u64::MAX).await
    }

    /// As [`PartitionLog::read_runs`], reading nothing at or past `upper_bound` (the
    /// partition's high watermark): an offset past it is out of range.
    pub async fn read_runs_below(
        &self,
        offset: u64,
        max_bytes: usize,
        upper_bound: u64,
    ) -> Result<Vec<Bytes>> {
        self.read_impl(offset, max_bytes, true, upper_bound).await
    }

    async fn read_impl(
        &self,
        offset: u64,
        max_bytes: usize,
        merge_runs: bool,
        upper_bound: u64,
    ) -> Result<Vec<Bytes>> {
        let (file, position, first_offset, end_position, end) = {
            let st = self.inner.state.borrow();
            let end = st.durable_offset.min(upper_bound);
            check_range(&st, offset, end)?;
            if offset == end {
                return Ok(Vec::new());
            }
            if let Some(batches) = st.cache.read(offset, end, max_bytes) {
                return Ok(batches);
            }
            if st.write_behind.start().is_some_and(|start| offset >= start) {
                return Ok(st
                    .write_behind
                    .read(offset, end, max_bytes)
                    .unwrap_or_default());
            }
            let seg = st.segments.holding(offset);
            let entry_rel = seg.meta.offsets.lookup_entry(seg.meta.relative(offset));
            (
                seg.file.clone(),
                u64::from(entry_rel.1),
                seg.meta.base_offset + u64::from(entry_rel.0),
                seg.meta.size_bytes,
                end,
            )
        };
        let chunk = max_bytes.clamp(64 << 10, 8 << 20);
        let mut walker =
            BatchWalker::new(file.clone(), position, first_offset, end_position, chunk);
        let mut out = Vec::new();
        let mut bytes = 0;
        loop {
            let batch = match walker.next().await? {
                Ok(b) => b,
                Err(StopReason::CleanEnd) => break,
                Err(StopReason::Invalid(why)) => {
                    return Err(StorageError::Corrupt {
                        path: file.path.clone(),
                        position: walker.position(),
                        detail: why,
                    })
                }
            };
            if batch.header.base_offset as u64 >= end {
                break;
            }
            if (batch.header.last_offset() as u64) < offset {
                continue;
            }
            if !out.is_empty() && bytes + batch.bytes.len() > max_bytes {
                break;
            }
            bytes += batch.bytes.len();
            if merge_runs {
                push_run(&mut out, walker.window(), batch.bytes);
            } else {
                out.push(batch.bytes);
            }
        }
        Ok(out)
    }

    /// The earliest offset whose record timestamp is >= `timestamp_ms`, or `None` when every
    /// record is older (Kafka's ListOffsets by timestamp).
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let plan = {
            let st = self.inner.state.borrow();
            let durable = st.durable_offset;
            let found = st
                .segments
                .iter()
                .find(|s| s.meta.max_timestamp_ms >= timestamp_ms && s.meta.base_offset < durable)
                .map(|s| {
                    let rel = s.meta.times.lookup(timestamp_ms);
                    let (entry_rel, pos) = s.meta.offsets.lookup_entry(rel);
                    (
                        s.file.clone(),
                        u64::from(pos),
                        s.meta.base_offset + u64::from(entry_rel),
                        s.meta.size_bytes,
                        durable,
                    )
                });
            found
        };
        if let Some((file, position, offset, end, durable)) = plan {
            let mut walker = BatchWalker::new(file, position, offset, end, 256 << 10);
            while let Ok(batch) = walker.next().await? {
                if batch.header.base_offset as u64 >= durable {
                    break;
                }
                if batch.header.max_timestamp_ms >= timestamp_ms {
                    return Ok(Some(first_at_or_after(
                        &batch.header,
                        batch.bytes,
                        timestamp_ms,
                    )));
                }
            }
        }
        // Not in the segments: the acknowledged batches not written yet are all later.
        let st = self.inner.state.borrow();
        Ok(st
            .write_behind
            .first_with_timestamp_at_or_after(timestamp_ms)
            .map(|b| first_at_or_after(&b.header, b.bytes.clone(), timestamp_ms)))
    }
}

fn check_range(st: &LogState, offset: u64, end: u64) -> Result<()> {
    let start = st.log_start_offset();
    if offset < start || offset > end {
        return Err(StorageError::OffsetOutOfRange {
            requested: offset,
            log_start_offset: start,
            log_end_offset: end,
        });
    }
    Ok(())
}

/// The offset of the first record of `batch` stamped at or after `timestamp_ms` (its base
/// offset when its records cannot be read).
fn first_at_or_after(header: &BatchHeader, batch: Bytes, timestamp_ms: i64) -> u64 {
    RecordIter::new(batch)
        .ok()
        .and_then(|mut records| {
            records.find_map(|r| r.ok().filter(|r| r.timestamp_ms >= timestamp_ms))
        })
        .map_or(header.base_offset, |r| r.offset) as u64
}

/// Appends `batch` (a slice of `window`) to `runs`, extending the last run when the batch
/// starts right where it ends in the same window.
fn push_run(runs: &mut Vec<Bytes>, window: &Bytes, batch: Bytes) {
    let base = window.as_ptr() as usize;
    let start = (batch.as_ptr() as usize).wrapping_sub(base);
    let in_window = start <= window.len() && start + batch.len() <= window.len();
    if let Some(last) = runs.last_mut() {
        let last_start = (last.as_ptr() as usize).wrapping_sub(base);
        if in_window && last_start <= window.len() && last_start + last.len() == start {
            *last = window.slice(last_start..start + batch.len());
            return;
        }
    }
    runs.push(batch);
}
