//! [`PartitionLog`]: the driver that owns one partition's segments on one shard.
//!
//! Concurrency model: everything lives on the shard that opened the log (`Rc`, `RefCell`,
//! `!Send`). Appenders only validate, stamp and enqueue; one flusher task (see
//! [`crate::flusher`]) makes the queue durable — aligned O_DIRECT writes and `fdatasync`s
//! of the segment, or with the shard's commit log one round there (the segment gets the
//! batches later, in bulk: write-behind) — the group commit, and acknowledges. Writers of the
//! files (flusher rounds, write-behind, truncation, retention, checkpoints) take
//! `write_gate`, so they never interleave. Readers take no gate: they see only offsets below
//! `durable_offset`, whose bytes never change until a truncation; those not in the segment
//! yet are read from memory.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;
use glommio::TaskQueueHandle;

use crate::cache::BatchCache;
use crate::commit_log::format::{Entry as WalEntry, NO_TRUNCATION};
use crate::commit_log::CommitLog;
use crate::config::LogConfig;
use crate::epoch::LeaderEpochMap;
use crate::error::{Result, StorageError};
use crate::files;
use crate::index::IndexFile;
use crate::scan::StopReason;
use crate::segment::{align_down, scan_segment, BatchWalker, SegmentFile};
use crate::segment_meta::SegmentMeta;
use crate::segments::{Segment, Segments};
use crate::signal::{oneshot, Doorbell, Sender, WaitList};
use crate::write_behind::WriteBehind;
use quiver_batch::{header, validate_batch, BatchHeader, BatchLimits, RecordIter};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp_ms: i64,
}

/// Counters of the write path since open (for benchmarks and tests of group commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    pub appends: u64,
    /// Group-commit rounds: one or more aligned writes for all batches pending at once.
    pub write_rounds: u64,
    pub fdatasyncs: u64,
    pub bytes_written: u64,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: u64,
}

/// The active segment's last partial page, kept in memory so the next write can rewrite it
/// whole (O_DIRECT writes full pages). Invariant: `aligned_position` is page aligned and
/// `aligned_position + bytes.len()` is the active segment's size.
#[derive(Default)]
pub(super) struct TailPage {
    pub aligned_position: u64,
    pub bytes: Vec<u8>,
}

/// A stamped batch and its parsed header: what the flusher writes to the segment.
#[derive(Clone)]
pub(super) struct Appended {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

pub(super) struct Pending {
    pub batch: Appended,
    pub ack: Sender<Result<()>>,
}

pub(super) struct State {
    /// The sealed segments and the active one (the only one written to).
    pub segments: Segments,
    pub tail: TailPage,
    /// When the active segment was created or, after a restart, opened: `segment_ms` counts
    /// from here (the broker's clock, not producers' timestamps).
    pub active_since: std::time::Instant,
    /// Next offset to assign to an append.
    pub next_offset: u64,
    /// Offsets below this are acknowledged and readable.
    pub durable_offset: u64,
    pub pending: VecDeque<Pending>,
    pub pending_bytes: usize,
    pub cache: BatchCache,
    /// With the shard's commit log: acknowledged batches (durable in the commit log) not yet
    /// written to the segment; `flusher::write_behind` writes them in bulk.
    pub write_behind: WriteBehind,
    pub epochs: LeaderEpochMap,
    pub epochs_dirty: bool,
    /// Bytes written since the last fdatasync, and when the first of them was.
    pub unsynced_bytes: u64,
    pub unsynced_since: Option<std::time::Instant>,
    /// Physical end of the zeroes written and synced past the active segment's tail (0 =
    /// none). Appends that land there overwrite initialised blocks, so their fdatasync has no
    /// file-size or extent change to journal. See `flusher::zero_ahead`.
    pub zeroed_until: u64,
    pub closing: bool,
    /// True while a truncation rewrites the tail: appends wait, so none is stamped with an
    /// offset the truncation is about to take back.
    pub appends_blocked: bool,
    pub stats: LogStats,
    /// Set when a failed write could not be rolled back; the log refuses appends until reopened.
    pub failed: Option<String>,
}

impl State {
    pub fn active(&self) -> &Segment {
        self.segments.active()
    }

    pub fn active_mut(&mut self) -> &mut Segment {
        self.segments.active_mut()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.segments.first_base()
    }

    /// Moves the log's end back to `new_end` (after a truncation); returns the epoch
    /// checkpoint to write when the epochs changed.
    fn end_at(&mut self, new_end: u64) -> Option<String> {
        self.next_offset = new_end;
        self.durable_offset = self.durable_offset.min(new_end);
        self.cache.truncate_from(new_end);
        self.epochs
            .truncate_from_end(new_end)
            .then(|| self.epochs.encode())
    }
}

pub(super) struct Inner {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub state: RefCell<State>,
    /// Wakes the flusher.
    pub doorbell: Doorbell,
    /// Consumers waiting for `durable_offset` to move.
    pub durable_waiters: WaitList,
    /// Appenders waiting for room in the pending queue.
    pub room_waiters: WaitList,
    /// Held by whoever changes segment files.
    pub write_gate: Semaphore,
    /// Held by `sync_now`, which the flusher and the commit log's checkpoints both call.
    pub sync_gate: Semaphore,
    pub flusher_exit: RefCell<Option<crate::signal::Receiver<()>>>,
    /// Set when appends are made durable by the shard's commit log instead of an fdatasync
    /// of this log's segment per round (only under [`crate::FlushPolicy::EveryAppend`]).
    pub commit_log: Option<CommitLog>,
    /// This directory's incarnation and its name in commit log entries.
    pub log_id: u64,
    pub wal_key: Rc<str>,
}

/// One partition's log on one shard. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct PartitionLog {
    pub(super) inner: Rc<Inner>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering from any crash, and starts its flusher
    /// on the current task queue.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        Self::open_in(dir, config, None, None).await
    }

    /// As [`PartitionLog::open`], with the flusher on task queue `flush_queue` (the shard's
    /// latency-sensitive queue) and, under [`crate::FlushPolicy::EveryAppend`], appends made
    /// durable by the shard's `commit_log` instead of an fdatasync of this log per round.
    pub async fn open_in(
        dir: impl AsRef<Path>,
        config: LogConfig,
        flush_queue: Option<TaskQueueHandle>,
        commit_log: Option<CommitLog>,
    ) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::from_io("creating directory", dir, e))?;
        // glommio resolves relative paths against an invalid directory fd (EBADF): use an
        // absolute path from here on.
        let dir =
            std::fs::canonicalize(dir).map_err(|e| StorageError::from_io("resolving", dir, e))?;
        files::check_direct_io(&dir)?;
        files::prime_device_probe(&dir).await?;
        if let Some(c) = &commit_log {
            // A previous incarnation whose close failed may still hold acknowledged batches
            // its segment lacks: they go in first, or this open fails.
            c.write_out_closed(&dir).await?;
        }
        let state = recover(&dir, &config).await?;
        let log_id = files::ensure_log_id(&dir).await?;
        let commit_log = commit_log.filter(|_| config.flush == crate::FlushPolicy::EveryAppend);
        let wal_key = commit_log
            .as_ref()
            .map(|c| c.key_of(&dir))
            .unwrap_or_default();
        let inner = Rc::new(Inner {
            dir,
            config,
            state: RefCell::new(state),
            doorbell: Doorbell::default(),
            durable_waiters: WaitList::default(),
            room_waiters: WaitList::default(),
            write_gate: Semaphore::new(1),
            sync_gate: Semaphore::new(1),
            flusher_exit: RefCell::new(None),
            commit_log,
            log_id,
            wal_key,
        });
        if let Some(c) = &inner.commit_log {
            c.register(Rc::downgrade(&inner));
        }
        crate::flusher::spawn(inner.clone(), flush_queue)?;
        Ok(Self { inner })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// First offset still held (retention moves it forward).
    pub fn log_start_offset(&self) -> u64 {
        self.inner.state.borrow().log_start_offset()
    }

    /// One past the last batch written per the flush policy (fsynced under `every_append`,
    /// in the segment or the shard's commit log). Reads never go past it; the broker's high
    /// watermark (what consumers may read) is at most this.
    pub fn durable_offset(&self) -> u64 {
        self.inner.state.borrow().durable_offset
    }

    /// The offset the next append gets: appended batches, durable or not yet.
    pub fn log_end_offset(&self) -> u64 {
        self.inner.state.borrow().next_offset
    }

    /// Total bytes of the log: all segments, and acknowledged batches not written to the
    /// active one yet.
    pub fn size_bytes(&self) -> u64 {
        let st = self.inner.state.borrow();
        st.segments.size_bytes() + st.write_behind.bytes() as u64
    }

    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    pub fn leader_epochs(&self) -> LeaderEpochMap {
        self.inner.state.borrow().epochs.clone()
    }

    pub fn stats(&self) -> LogStats {
        self.inner.state.borrow().stats
    }

    /// Bytes held by the batch cache now.
    pub fn cache_bytes(&self) -> usize {
        self.inner.state.borrow().cache.total_bytes()
    }

    /// Validates `batch`, stamps its base offset and `leader_epoch`, and resolves once it is
    /// written (and durable, under [`crate::FlushPolicy::EveryAppend`]: fsynced in its
    /// segment, or in the shard's commit log). Appends that arrive while a write is in flight
    /// are written together by the next one (group commit).
    pub async fn append(&self, batch: BytesMut, leader_epoch: i32) -> Result<AppendInfo> {
        let (info, ack) = self.enqueue(batch, leader_epoch).await?;
        match ack.await {
            Some(Ok(())) => Ok(info),
            Some(Err(e)) => Err(e),
            None => Err(StorageError::Closed {
                path: self.inner.dir.clone(),
            }),
        }
    }

    /// Validates, stamps and enqueues `batch`, and returns as soon as it is in the log's
    /// memory (offsets assigned, in the cache, queued for the next group-commit write) —
    /// what `acks=leader` promises, like a Kafka leader's page cache. Consumers see it once it
    /// is written; a crash before that write loses it, and a failed write is not reported to
    /// this caller. Use [`PartitionLog::append`] to wait for durability.
    pub async fn append_buffered(&self, batch: BytesMut, leader_epoch: i32) -> Result<AppendInfo> {
        Ok(self.enqueue(batch, leader_epoch).await?.0)
    }

    /// Recovery from the commit log: appends the batches of `chain` (in offset order, offsets
    /// as stamped when first written) that this log does not hold yet. Stops at a gap — a
    /// chain that starts past this log's end cannot be joined without losing offsets.
    /// Returns how many batches were appended.
    pub async fn replay(&self, chain: &[(BatchHeader, Bytes)]) -> Result<u64> {
        let mut appended = 0;
        for (header, bytes) in chain {
            let next = self.inner.state.borrow().next_offset;
            let base = header.base_offset as u64;
            if base < next {
                continue;
            }
            if base > next {
                tracing::error!(dir = %self.inner.dir.display(), log_end = next, chain_base = base,
                    "commit log chain does not join the recovered log; offsets in between are lost");
                break;
            }
            self.append(BytesMut::from(&bytes[..]), header.partition_leader_epoch)
                .await?;
            appended += 1;
        }
        Ok(appended)
    }

    async fn enqueue(
        &self,
        mut batch: BytesMut,
        leader_epoch: i32,
    ) -> Result<(AppendInfo, crate::signal::Receiver<Result<()>>)> {
        let limits = BatchLimits {
            max_batch_bytes: self.inner.config.max_batch_bytes,
        };
        let mut header = validate_batch(&batch, limits)?;
        self.wait_for_room(batch.len()).await?;
        let (info, ack) = {
            let mut st = self.inner.state.borrow_mut();
            let base = st.next_offset;
            header::stamp_base_offset(&mut batch, base as i64);
            header::stamp_leader_epoch(&mut batch, leader_epoch);
            header.base_offset = base as i64;
            header.partition_leader_epoch = leader_epoch;
            let last = base + header.last_offset_delta as u64;
            let bytes = batch.freeze();
            st.next_offset = last + 1;
            if st.epochs.assign(leader_epoch, base) {
                st.epochs_dirty = true;
            }
            st.cache.push(base, last + 1, bytes.clone());
            st.pending_bytes += bytes.len();
            st.stats.appends += 1;
            let (tx, rx) = oneshot();
            st.pending.push_back(Pending {
                batch: Appended { header, bytes },
                ack: tx,
            });
            let info = AppendInfo {
                base_offset: base,
                last_offset: last,
                max_timestamp_ms: header.max_timestamp_ms,
            };
            (info, rx)
        };
        self.inner.doorbell.ring();
        Ok((info, ack))
    }

    async fn wait_for_room(&self, batch_bytes: usize) -> Result<()> {
        loop {
            let wait = {
                let st = self.inner.state.borrow();
                if st.closing {
                    return Err(StorageError::Closed {
                        path: self.inner.dir.clone(),
                    });
                }
                if let Some(why) = &st.failed {
                    return Err(StorageError::AppendAborted {
                        reason: format!("the log failed earlier ({why}); reopen it to recover"),
                    });
                }
                if st.write_behind.error.is_some() {
                    None
                } else {
                    let room = st.pending.is_empty()
                        || st.pending_bytes + batch_bytes <= self.inner.config.max_pending_bytes;
                    if room && !st.appends_blocked {
                        return Ok(());
                    }
                    Some(self.inner.room_waiters.register())
                }
            };
            match wait {
                Some(wait) => {
                    wait.await;
                }
                None => self.retry_write_behind().await?,
            }
        }
    }

    /// Appends wait for room while too much waits for a segment that could not be written:
    /// try that write again now (space may have been freed), failing with its error.
    async fn retry_write_behind(&self) -> Result<()> {
        let _gate = self.inner.write_gate().await?;
        crate::flusher::write_behind(&self.inner).await
    }

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
        let (file, position, first_offset, end_position, committed) = {
            let st = self.inner.state.borrow();
            let committed = st.durable_offset.min(upper_bound);
            self.check_range(&st, offset, committed)?;
            if offset == committed {
                return Ok(Vec::new());
            }
            if let Some(batches) = st.cache.read(offset, committed, max_bytes) {
                return Ok(batches);
            }
            if st.write_behind.start().is_some_and(|start| offset >= start) {
                return Ok(st
                    .write_behind
                    .read(offset, committed, max_bytes)
                    .unwrap_or_default());
            }
            let seg = st.segments.holding(offset);
            let entry_rel = seg.meta.offsets.lookup_entry(seg.meta.relative(offset));
            (
                seg.file.clone(),
                u64::from(entry_rel.1),
                seg.meta.base_offset + u64::from(entry_rel.0),
                seg.meta.size_bytes,
                committed,
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
            if batch.header.base_offset as u64 >= committed {
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

    fn check_range(&self, st: &State, offset: u64, end: u64) -> Result<()> {
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

    /// The earliest offset whose record timestamp is >= `timestamp_ms`, or `None` when every
    /// record is older (Kafka's ListOffsets by timestamp).
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let plan = {
            let st = self.inner.state.borrow();
            let committed = st.durable_offset;
            let found = st
                .segments
                .iter()
                .find(|s| s.meta.max_timestamp_ms >= timestamp_ms && s.meta.base_offset < committed)
                .map(|s| {
                    let rel = s.meta.times.lookup(timestamp_ms);
                    let (entry_rel, pos) = s.meta.offsets.lookup_entry(rel);
                    (
                        s.file.clone(),
                        u64::from(pos),
                        s.meta.base_offset + u64::from(entry_rel),
                        s.meta.size_bytes,
                        committed,
                    )
                });
            found
        };
        if let Some((file, position, offset, end, committed)) = plan {
            let mut walker = BatchWalker::new(file, position, offset, end, 256 << 10);
            while let Ok(batch) = walker.next().await? {
                if batch.header.base_offset as u64 >= committed {
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

    /// True once the log started closing (its topic was deleted or reconfigured, or the node
    /// is stopping): waiting on it for new data would return at once, forever.
    pub fn is_closing(&self) -> bool {
        self.inner.state.borrow().closing
    }

    /// Resolves once an offset >= `offset` is committed (or the log closes): the wake-up a
    /// long-polling fetch waits on. Never a sleep loop.
    pub async fn wait_for_offset(&self, offset: u64) {
        loop {
            let wait = {
                let st = self.inner.state.borrow();
                if st.durable_offset > offset || st.closing {
                    return;
                }
                self.inner.durable_waiters.register()
            };
            wait.await;
        }
    }

    /// Removes every batch at or after `offset` (the whole batch holding `offset` goes, as in
    /// Kafka), fails appends not yet written, and returns the new end offset.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64> {
        let _gate = self.inner.write_gate().await?;
        self.inner
            .truncate_locked(offset, "the log was truncated")
            .await
    }

    /// Writes what the segment lacks and makes everything written so far durable in the
    /// segment (for [`crate::FlushPolicy::Interval`], or before copying the files).
    pub async fn flush(&self) -> Result<()> {
        let _gate = self.inner.write_gate().await?;
        crate::flusher::write_behind(&self.inner).await?;
        self.inner.sync_now().await
    }

    /// Deletes whole segments beyond `retention_ms` / `retention_bytes`, oldest first, never
    /// the active one. `now_ms` is the wall clock in ms (a parameter so tests control time).
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let _gate = self.inner.write_gate().await?;
        self.inner.enforce_retention_locked(now_ms).await
    }

    /// Runs retention every `interval` on task queue `queue` (give it fewer shares than the
    /// produce/fetch queue) until the log closes.
    pub fn spawn_retention(
        &self,
        queue: Option<TaskQueueHandle>,
        interval: std::time::Duration,
    ) -> Result<()> {
        let log = self.clone();
        let task = async move {
            loop {
                glommio::timer::sleep(interval).await;
                if log.inner.state.borrow().closing {
                    return;
                }
                if let Err(e) = log.enforce_retention(now_ms()).await {
                    tracing::warn!(dir = %log.inner.dir.display(), "retention pass failed: {e}");
                }
            }
        };
        crate::spawn_detached(task, queue, "spawning retention for", &self.inner.dir)
    }

    /// Writes what is pending, fsyncs, persists the active segment's index (so the next open
    /// skips the scan), and stops the flusher. Appends after this fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        self.inner.state.borrow_mut().closing = true;
        self.inner.doorbell.ring();
        let exit = self.inner.flusher_exit.borrow_mut().take();
        if let Some(exit) = exit {
            exit.await;
        }
        self.inner.durable_waiters.wake_all();
        self.inner.room_waiters.wake_all();
        let _gate = self.inner.write_gate().await?;
        let result = self.inner.close_files().await;
        if result.is_err() && self.inner.holds_batches_only_in_commit_log() {
            // The commit log must keep them: its checkpoints retry the write, and nothing
            // reopens this directory before they are in the segment (or the node restarts).
            if let Some(commit_log) = &self.inner.commit_log {
                commit_log.pin(self.inner.clone());
            }
        }
        result
    }
}

/// Fails the appends not written yet (a truncation takes their offsets back).
fn fail_pending(st: &mut State, why: &str) {
    for p in st.pending.drain(..) {
        p.ack.send(Err(StorageError::AppendAborted {
            reason: why.to_string(),
        }));
    }
    st.pending_bytes = 0;
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

impl Inner {
    /// The write gate (see the module documentation); `Closed` once the log closed it.
    pub(super) async fn write_gate(&self) -> Result<glommio::sync::Permit<'_>> {
        self.write_gate
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed {
                path: self.dir.clone(),
            })
    }

    /// fdatasync of the active segment plus the epoch checkpoint when it changed. Bytes
    /// written while the fdatasync runs stay counted as unsynced.
    pub(super) async fn sync_now(&self) -> Result<()> {
        let _gate = self
            .sync_gate
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed {
                path: self.dir.clone(),
            })?;
        let (file, epochs, covered) = {
            let st = self.state.borrow();
            (
                st.active().file.clone(),
                st.epochs_dirty.then(|| st.epochs.encode()),
                st.unsynced_bytes,
            )
        };
        file.sync().await?;
        {
            let mut st = self.state.borrow_mut();
            st.unsynced_bytes = st.unsynced_bytes.saturating_sub(covered);
            if st.unsynced_bytes == 0 {
                st.unsynced_since = None;
            }
            st.stats.fdatasyncs += 1;
        }
        if let Some(text) = epochs {
            files::write_atomically(&self.dir, files::EPOCH_CHECKPOINT, text.into_bytes()).await?;
            self.state.borrow_mut().epochs_dirty = false;
        }
        Ok(())
    }

    /// A commit log checkpoint's part: writes the acknowledged batches the segment lacks and
    /// makes the segment durable, so the retired commit log file holds nothing this log
    /// needs. A failed log that still holds such batches fails the checkpoint (the file is
    /// kept for recovery); one that does not is skipped.
    pub(super) async fn checkpoint_sync(self: &Rc<Self>) -> Result<()> {
        {
            // With the write gate: a round or a close in progress finishes first, and what it
            // acknowledged is then written here (or by the close itself).
            let _gate = self.write_gate().await?;
            if let Some(why) = self.unrecoverable_in_segment() {
                return Err(StorageError::AppendAborted { reason: why });
            }
            if self.state.borrow().failed.is_some() {
                return Ok(());
            }
            crate::flusher::write_behind(self).await?;
        }
        // The fdatasync without the write gate: the partition's rounds go on meanwhile.
        if self.state.borrow().unsynced_bytes == 0 {
            return Ok(());
        }
        self.sync_now().await
    }

    /// `close`'s writes, with the write gate held.
    async fn close_files(self: &Rc<Self>) -> Result<()> {
        if let Some(why) = self.unrecoverable_in_segment() {
            return Err(StorageError::AppendAborted { reason: why });
        }
        if self.state.borrow().failed.is_some() {
            return Ok(());
        }
        crate::flusher::write_behind(self).await?;
        crate::flusher::seal_active(self).await.map(|_| ())
    }

    /// True while acknowledged batches of this log are durable only in the commit log: not
    /// written to the segment yet, or written but not fsynced.
    pub(super) fn holds_batches_only_in_commit_log(&self) -> bool {
        let st = self.state.borrow();
        self.commit_log.is_some() && (!st.write_behind.is_empty() || st.unsynced_bytes > 0)
    }

    /// Why this log holds acknowledged batches that only the commit log has and that it can
    /// no longer write to its segment (a failed log with a write-behind): the commit log must
    /// then be kept for recovery at the next start.
    fn unrecoverable_in_segment(&self) -> Option<String> {
        let only_in_commit_log = self.holds_batches_only_in_commit_log();
        let st = self.state.borrow();
        match &st.failed {
            Some(why) if only_in_commit_log => Some(format!(
                "the log failed ({why}) with acknowledged batches only in the commit log; restart the node to recover them from it"
            )),
            _ => None,
        }
    }

    /// Hands `batches` (a round's, not yet in the segment) to the commit log and waits until
    /// they are durable there; `truncate_from` records a truncation first.
    pub(super) async fn log_to_commit_log(
        &self,
        truncate_from: Option<u64>,
        batches: Vec<Bytes>,
    ) -> Result<()> {
        let Some(commit_log) = &self.commit_log else {
            return Ok(());
        };
        commit_log
            .append(WalEntry {
                log_id: self.log_id,
                truncate_from: truncate_from.unwrap_or(NO_TRUNCATION),
                key: self.wal_key.clone(),
                batches,
            })
            .await
    }

    /// Truncation with the write gate held. Also the rollback after a failed write.
    pub(super) async fn truncate_locked(&self, offset: u64, why: &str) -> Result<u64> {
        self.state.borrow_mut().appends_blocked = true;
        let result = self.truncate_blocked(offset, why).await;
        self.state.borrow_mut().appends_blocked = false;
        self.room_waiters.wake_all();
        result
    }

    async fn truncate_blocked(&self, offset: u64, why: &str) -> Result<u64> {
        let in_write_behind = {
            let st = self.state.borrow();
            offset >= st.log_start_offset()
                && st.write_behind.start().is_some_and(|wb| offset >= wb)
        };
        if in_write_behind {
            // Only batches not written to the segment yet go: the files stay as they are.
            return self.truncate_write_behind(offset, why).await;
        }
        let (removed, target) = {
            let mut st = self.state.borrow_mut();
            fail_pending(&mut st, why);
            let start = st.log_start_offset();
            if offset < start {
                return Err(StorageError::OffsetOutOfRange {
                    requested: offset,
                    log_start_offset: start,
                    log_end_offset: st.next_offset,
                });
            }

            let removed: Vec<Rc<SegmentFile>> = st
                .segments
                .cut_after_segment_of(offset)
                .into_iter()
                .map(|s| s.file)
                .collect();
            let seg = st.active();
            (removed, (seg.file.clone(), seg.meta.clone()))
        };
        for f in &removed {
            files::remove(&f.path).await?;
            files::remove(&f.path.with_extension("index")).await?;
        }
        let (file, meta) = target;
        let (position, new_end) = batch_boundary(&file, &meta, offset).await?;
        files::remove(&files::index_path(&self.dir, meta.base_offset)).await?;
        file.truncate(position).await?;
        file.sync().await?;
        let aligned = align_down(position);
        let tail = file.read(aligned, (position - aligned) as usize).await?;
        files::sync_dir(&self.dir).await?;
        let epochs = {
            let mut st = self.state.borrow_mut();
            st.active_mut().meta.truncate(position, new_end);
            st.tail.aligned_position = aligned;
            st.tail.bytes = tail.to_vec();
            st.zeroed_until = 0;
            st.unsynced_bytes = 0;
            st.unsynced_since = None;
            // The cut is inside the segments: every batch not written yet was above it.
            st.write_behind.clear();
            st.end_at(new_end)
        };
        self.finish_truncation(new_end, epochs).await
    }

    /// Truncation at `offset` at or above the first batch not yet written to the segment.
    async fn truncate_write_behind(&self, offset: u64, why: &str) -> Result<u64> {
        let epochs = {
            let mut st = self.state.borrow_mut();
            fail_pending(&mut st, why);
            // As in a segment: the end of the last batch kept (pending appends, stamped past
            // it, were failed above).
            let new_end = st.write_behind.truncate_from(offset);
            (new_end, st.end_at(new_end))
        };
        self.finish_truncation(epochs.0, epochs.1).await
    }

    /// The last steps of a truncation to `new_end`: the epoch checkpoint and the commit log
    /// note.
    async fn finish_truncation(&self, new_end: u64, epochs: Option<String>) -> Result<u64> {
        if let Some(text) = epochs {
            files::write_atomically(&self.dir, files::EPOCH_CHECKPOINT, text.into_bytes()).await?;
        }
        // Recovery must not re-append what the commit log holds above the new end. If the
        // commit log cannot take the note (it failed too: a full disk), the truncation stands;
        // a crash before later appends overwrite those offsets could then bring back batches
        // that were never acknowledged — never lose acknowledged ones.
        if let Err(e) = self.log_to_commit_log(Some(new_end), Vec::new()).await {
            tracing::warn!(dir = %self.dir.display(), "could not log a truncation to {new_end} in the commit log: {e}");
        }
        Ok(new_end)
    }

    async fn enforce_retention_locked(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let (victims, outcome, epochs) = {
            let mut st = self.state.borrow_mut();
            let mut total: u64 = st.segments.size_bytes();
            let sealed: Vec<(u64, u64, i64)> = st
                .segments
                .sealed()
                .map(|s| {
                    (
                        s.meta.base_offset,
                        s.meta.size_bytes,
                        s.meta.max_timestamp_ms,
                    )
                })
                .collect();
            let mut victims = Vec::new();
            let mut outcome = RetentionOutcome::default();
            for (base, size, max_ts) in sealed {
                let expired = self
                    .config
                    .retention_ms
                    .is_some_and(|r| max_ts < now_ms.saturating_sub(r as i64));
                let oversize = self
                    .config
                    .retention_bytes
                    .is_some_and(|r| total.saturating_sub(size) >= r);
                if !expired && !oversize {
                    break;
                }
                if let Some(seg) = st.segments.remove_sealed(base) {
                    total -= size;
                    outcome.deleted_segments += 1;
                    outcome.deleted_bytes += size;
                    victims.push(seg.file);
                }
            }
            outcome.log_start_offset = st.log_start_offset();
            let start = outcome.log_start_offset;
            let epochs = (!victims.is_empty() && st.epochs.truncate_from_start(start))
                .then(|| st.epochs.encode());
            (victims, outcome, epochs)
        };
        for f in victims {
            files::remove(&f.path).await?;
            files::remove(&f.path.with_extension("index")).await?;
        }
        if let Some(text) = epochs {
            files::write_atomically(&self.dir, files::EPOCH_CHECKPOINT, text.into_bytes()).await?;
        }
        if outcome.deleted_segments > 0 {
            tracing::info!(dir = %self.dir.display(), deleted = outcome.deleted_segments,
                log_start_offset = outcome.log_start_offset, "retention deleted segments");
        }
        Ok(outcome)
    }
}

/// Position and base offset of the first batch in the segment whose last offset is >=
/// `offset`; the segment's end when there is none.
async fn batch_boundary(
    file: &Rc<SegmentFile>,
    meta: &SegmentMeta,
    offset: u64,
) -> Result<(u64, u64)> {
    if offset >= meta.next_offset {
        return Ok((meta.size_bytes, meta.next_offset));
    }
    let (rel, pos) = meta.offsets.lookup_entry(meta.relative(offset));
    let mut walker = BatchWalker::new(
        file.clone(),
        u64::from(pos),
        meta.base_offset + u64::from(rel),
        meta.size_bytes,
        64 << 10,
    );
    loop {
        match walker.next().await? {
            Ok(b) if (b.header.last_offset() as u64) >= offset => {
                return Ok((b.position, b.header.base_offset as u64));
            }
            Ok(_) => continue,
            Err(_) => return Ok((walker.position(), walker.next_offset())),
        }
    }
}

/// Opens every segment in `dir`: sealed ones from their index (rebuilt by a scan when it is
/// missing or damaged), the active one by a full scan that truncates a torn or corrupt tail.
async fn recover(dir: &Path, config: &LogConfig) -> Result<State> {
    let mut bases = files::list_segments(dir)?;
    let mut epochs = match files::read_small(&dir.join(files::EPOCH_CHECKPOINT), 1 << 20).await? {
        None => LeaderEpochMap::default(),
        Some(bytes) => std::str::from_utf8(&bytes).ok().and_then(LeaderEpochMap::decode).unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), "leader-epoch-checkpoint is damaged; rebuilding it from the active segment");
            LeaderEpochMap::default()
        }),
    };
    let mut epochs_dirty = false;
    if bases.is_empty() {
        SegmentFile::create(dir, 0).await?;
        bases.push(0);
    }
    let mut segments = BTreeMap::new();
    let last = bases.len() - 1;
    for (i, base) in bases.into_iter().enumerate() {
        let file = Rc::new(SegmentFile::open(dir, base).await?);
        let is_active = i == last;
        let meta = load_segment(dir, &file, base, config, is_active, &mut epochs).await?;
        segments.insert(base, Segment { meta, file });
    }
    let Some(segments) = Segments::from_ordered(segments) else {
        return Err(StorageError::InvalidConfig(format!(
            "no segment could be opened in {}",
            dir.display()
        )));
    };
    let (next_offset, tail) = {
        let active = segments.active();
        let size = active.meta.size_bytes;
        let aligned = align_down(size);
        let bytes = active.file.read(aligned, (size - aligned) as usize).await?;
        (
            active.meta.next_offset,
            TailPage {
                aligned_position: aligned,
                bytes: bytes.to_vec(),
            },
        )
    };
    if epochs.truncate_from_end(next_offset) {
        epochs_dirty = true;
    }
    Ok(State {
        segments,
        tail,
        active_since: std::time::Instant::now(),
        next_offset,
        durable_offset: next_offset,
        pending: VecDeque::new(),
        pending_bytes: 0,
        cache: BatchCache::new(config.cache_bytes),
        write_behind: WriteBehind::default(),
        epochs,
        epochs_dirty,
        unsynced_bytes: 0,
        unsynced_since: None,
        zeroed_until: 0,
        closing: false,
        appends_blocked: false,
        stats: LogStats::default(),
        failed: None,
    })
}

async fn load_segment(
    dir: &Path,
    file: &Rc<SegmentFile>,
    base: u64,
    config: &LogConfig,
    is_active: bool,
    epochs: &mut LeaderEpochMap,
) -> Result<SegmentMeta> {
    let index_path = files::index_path(dir, base);
    let physical = file.physical_size().await?;
    let from_index = files::read_small(&index_path, 256 << 20)
        .await?
        .and_then(|bytes| IndexFile::decode(&bytes))
        .filter(|idx| idx.segment_bytes == physical);
    if is_active {
        // The active segment will change: its index must not outlive this open.
        files::remove(&index_path).await?;
    }
    if let Some(idx) = from_index {
        return Ok(SegmentMeta::from_index(base, idx));
    }
    let (meta, invalid) =
        scan_segment(file.clone(), base, config.index_interval_bytes, epochs).await?;
    if let Some(why) = &invalid {
        tracing::warn!(segment = %file.path.display(), valid_bytes = meta.size_bytes, physical_bytes = physical,
            "truncating a torn or corrupt tail: {why}");
    }
    if meta.size_bytes != physical {
        file.truncate(meta.size_bytes).await?;
        file.sync().await?;
    }
    if !is_active {
        files::write_plain(&index_path, meta.to_index().encode()).await?;
    }
    Ok(meta)
}
