//! [`PartitionLog`]: the driver that owns one partition's segments on one shard.
//!
//! Every decision lives in [`state::LogState`] (sans-IO, unit-tested); the files of this
//! folder are its thin glommio drivers: appending here, the flusher in [`flush`] (group
//! commit, rolls, write-behind), reads in [`read`], [`truncate`], [`retention`], [`recover`]
//! (open), and [`checkpoint`] (what the shard's commit log asks of a log).
//!
//! Concurrency model: everything lives on the shard that opened the log (`Rc`, `RefCell`,
//! `!Send`). Appenders only validate, stamp and enqueue; one flusher task makes the queue
//! durable — aligned O_DIRECT writes and `fdatasync`s of the segment, or with the shard's
//! commit log one round there (the segment gets the batches later, in bulk: write-behind) —
//! and acknowledges. Writers of the files (flusher rounds, write-behind, truncation,
//! retention, checkpoints) take `write_gate`, so they never interleave. Readers take no gate:
//! they see only offsets below the durable offset, whose bytes never change until a
//! truncation; those not in the segment yet are read from memory.

mod checkpoint;
mod compaction;
mod flush;
mod read;
mod recover;
mod reset;
mod retention;
pub(crate) mod state;
mod truncate;
pub(crate) mod write_behind;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;
use glommio::TaskQueueHandle;
use quiver_batch::{validate_batch, BatchHeader, BatchLimits};

use crate::commit_log::CommitLog;
use crate::config::{FlushPolicy, LogConfig};
use crate::epoch::LeaderEpochMap;
use crate::error::{Result, StorageError};
use crate::files;
use crate::producer_state::Verdict;
use crate::signal::{oneshot, Doorbell, Receiver, WaitList};
use state::{Admission, LogState};

pub use compaction::CompactionOutcome;
pub use state::{AppendInfo, LogStats, RetentionOutcome, WRITE_BEHIND_BYTES, WRITE_BEHIND_MS};

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub state: RefCell<LogState>,
    /// Wakes the flusher.
    pub doorbell: Doorbell,
    /// Consumers waiting for the durable offset to move.
    pub durable_waiters: WaitList,
    /// Appenders waiting for room in the pending queue.
    pub room_waiters: WaitList,
    /// Held by whoever changes segment files.
    pub write_gate: Semaphore,
    /// Held by `sync_now`, which the flusher and the commit log's checkpoints both call.
    pub sync_gate: Semaphore,
    pub flusher_exit: RefCell<Option<Receiver<()>>>,
    /// Set when appends are made durable by the shard's commit log instead of an fdatasync
    /// of this log's segment per round (only under [`FlushPolicy::EveryAppend`]).
    pub commit_log: Option<CommitLog>,
    /// This directory's incarnation and its name in commit log entries.
    pub log_id: u64,
    pub wal_key: Rc<str>,
}

/// The durability of a batch [`PartitionLog::append_pipelined`] queued.
pub struct Durability(Pending);

enum Pending {
    /// A batch this append stamped: its round's outcome.
    Ack(Receiver<Result<()>>, PathBuf),
    /// An idempotent producer's retry of a batch already stamped: durable once the log is
    /// durable past `last_offset`.
    UpTo { last_offset: u64, log: Rc<Inner> },
}

/// How often a wait for a retried batch's durability looks whether the log failed.
const DURABLE_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Durability {
    /// Resolves once the batch is durable per the flush policy, or with why it is not.
    pub async fn wait(self) -> Result<()> {
        match self.0 {
            Pending::Ack(ack, dir) => match ack.await {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(e),
                None => Err(StorageError::Closed { path: dir }),
            },
            Pending::UpTo { last_offset, log } => loop {
                {
                    let st = log.state.borrow();
                    if st.durable_offset > last_offset {
                        return Ok(());
                    }
                    if let Some(why) = &st.failed {
                        return Err(StorageError::AppendAborted {
                            reason: format!("the log failed before the batch was durable: {why}"),
                        });
                    }
                    if st.closing {
                        return Err(StorageError::Closed {
                            path: log.dir.clone(),
                        });
                    }
                }
                let handle = PartitionLog { inner: log.clone() };
                let _ = futures_lite::future::or(
                    async {
                        handle.wait_for_offset(last_offset).await;
                    },
                    glommio::timer::sleep(DURABLE_RECHECK),
                )
                .await;
            },
        }
    }
}

/// One partition's log on one shard. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct PartitionLog {
    pub(crate) inner: Rc<Inner>,
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
    /// latency-sensitive queue) and, under [`FlushPolicy::EveryAppend`], appends made
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
        let state = recover::recover(&dir, &config).await?;
        let log_id = files::ensure_log_id(&dir).await?;
        let commit_log = commit_log.filter(|_| config.flush == FlushPolicy::EveryAppend);
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
            let member: Rc<dyn crate::commit_log::Member> = inner.clone();
            c.register(Rc::downgrade(&member));
        }
        flush::spawn(inner.clone(), flush_queue)?;
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
    /// written (and durable, under [`FlushPolicy::EveryAppend`]: fsynced in its segment, or
    /// in the shard's commit log). Appends that arrive while a write is in flight are written
    /// together by the next one (group commit).
    pub async fn append(&self, batch: BytesMut, leader_epoch: i32) -> Result<AppendInfo> {
        let (info, durability) = self.enqueue(batch, leader_epoch).await?;
        durability.wait().await?;
        Ok(info)
    }

    /// [`PartitionLog::append`] in two steps: returns once the batch is stamped and queued
    /// (offsets assigned in call order), with its [`Durability`] to await. A caller that
    /// orders its appends under its own lock (a group coordinator) stamps under the lock and
    /// waits outside it, so the appends of many requests share one write. The log is a
    /// prefix: a batch is durable only when every batch stamped before it is.
    pub async fn append_pipelined(
        &self,
        batch: BytesMut,
        leader_epoch: i32,
    ) -> Result<(AppendInfo, Durability)> {
        self.enqueue(batch, leader_epoch).await
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

    /// What appending `batch` now would do, without appending it: `Ok(None)` when it would
    /// be appended, `Ok(Some(offsets))` for an idempotent producer's retry of a batch already
    /// written (nothing is appended then), or why it would be refused. A replicated
    /// partition's leader checks before it proposes: every replica must accept the entry.
    pub fn precheck(&self, batch: &[u8]) -> Result<Option<AppendInfo>> {
        let header = self.validate(batch)?;
        let st = self.inner.state.borrow();
        Ok(match st.producers.check(&header)? {
            Verdict::Duplicate(b) => Some(AppendInfo {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
                max_timestamp_ms: header.max_timestamp_ms,
            }),
            Verdict::Append => None,
        })
    }

    /// The batch's framing, CRC and limits, and a key on every record of a compacted topic.
    fn validate(&self, batch: &[u8]) -> Result<BatchHeader> {
        let limits = BatchLimits {
            max_batch_bytes: self.inner.config.max_batch_bytes,
        };
        let header = validate_batch(batch, limits)?;
        if self.inner.config.cleanup_policy.compacts() && !header.is_control() {
            // Compaction keeps the latest record per key: a record without one has no place.
            let records = quiver_batch::RecordIter::new(bytes::Bytes::copy_from_slice(batch))?;
            for (index, r) in records.enumerate() {
                if r?.key.is_none() {
                    return Err(
                        quiver_batch::BatchError::KeylessRecordInCompactedTopic { index }.into(),
                    );
                }
            }
        }
        Ok(header)
    }

    async fn enqueue(
        &self,
        batch: BytesMut,
        leader_epoch: i32,
    ) -> Result<(AppendInfo, Durability)> {
        let header = self.validate(&batch)?;
        self.enqueue_valid(batch, header, leader_epoch, ProducerCheck::Check)
            .await
    }

    /// A replica's append of its leader's entry, as [`PartitionLog::append_pipelined`]: the
    /// batch as its leader stores it, so one compaction thinned (fewer records than offsets,
    /// even none) is taken whole — its offsets are the entry's. The producer state records it
    /// without judging it: the leader checked it before proposing, and a replica's state may
    /// differ in what it forgot (producers expire by each node's clock), so a replica that
    /// judged entries could refuse one its log must hold at that index.
    pub async fn append_replica_entry(
        &self,
        batch: BytesMut,
        leader_epoch: i32,
    ) -> Result<(AppendInfo, Durability)> {
        let limits = BatchLimits {
            max_batch_bytes: self.inner.config.max_batch_bytes,
        };
        let header = quiver_batch::validate_stored_batch(&batch, limits)?;
        self.enqueue_valid(batch, header, leader_epoch, ProducerCheck::Record)
            .await
    }

    async fn enqueue_valid(
        &self,
        batch: BytesMut,
        header: BatchHeader,
        leader_epoch: i32,
        producer: ProducerCheck,
    ) -> Result<(AppendInfo, Durability)> {
        self.wait_for_room(batch.len()).await?;
        let (tx, rx) = oneshot();
        let info = {
            let mut st = self.inner.state.borrow_mut();
            // An idempotent producer's batch: the next one, or a retry of one written.
            let verdict = match producer {
                ProducerCheck::Check => st.producers.check(&header)?,
                ProducerCheck::Record => Verdict::Append,
            };
            if let Verdict::Duplicate(b) = verdict {
                let info = AppendInfo {
                    base_offset: b.base_offset,
                    last_offset: b.last_offset,
                    max_timestamp_ms: header.max_timestamp_ms,
                };
                let pending = Pending::UpTo {
                    last_offset: b.last_offset,
                    log: self.inner.clone(),
                };
                return Ok((info, Durability(pending)));
            }
            st.stamp(batch, header, leader_epoch, tx)
        };
        self.inner.doorbell.ring();
        Ok((info, Durability(Pending::Ack(rx, self.inner.dir.clone()))))
    }

    async fn wait_for_room(&self, batch_bytes: usize) -> Result<()> {
        loop {
            let admission =
                self.inner
                    .state
                    .borrow()
                    .admit(batch_bytes, &self.inner.config, &self.inner.dir);
            match admission {
                Admission::Admit => return Ok(()),
                Admission::Refuse(e) => return Err(e),
                Admission::WaitForRoom => {
                    self.inner.room_waiters.register().await;
                }
                Admission::RetryWriteBehind => {
                    // Space may have been freed: try that write again, failing with its error.
                    let _gate = self.inner.write_gate().await?;
                    flush::write_behind(&self.inner).await?;
                }
            }
        }
    }

    /// The last stable offset given the high watermark: read_committed readers stop at the
    /// first offset of the oldest open transaction.
    pub fn last_stable_offset(&self, high_watermark: u64) -> u64 {
        self.inner
            .state
            .borrow()
            .producers
            .last_stable_offset(high_watermark)
    }

    /// Aborted transactions overlapping `from..to` (what a read_committed reader skips).
    pub fn aborted_between(&self, from: u64, to: u64) -> Vec<crate::producer_state::AbortedTxn> {
        self.inner
            .state
            .borrow()
            .producers
            .aborted_between(from, to)
    }

    /// True when the batch with header `h` would open a transaction here (its producer's
    /// coordinator must add this partition to the transaction first).
    pub fn opens_transaction(&self, h: &BatchHeader) -> bool {
        self.inner.state.borrow().producers.opens_transaction(h)
    }

    /// True once the log started closing (its topic was deleted or reconfigured, or the node
    /// is stopping): waiting on it for new data would return at once, forever.
    pub fn is_closing(&self) -> bool {
        self.inner.state.borrow().closing
    }

    /// Resolves once an offset >= `offset` is durable (or the log closes): the wake-up a
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
    /// segment (for [`FlushPolicy::Interval`], or before copying the files).
    pub async fn flush(&self) -> Result<()> {
        let _gate = self.inner.write_gate().await?;
        flush::write_behind(&self.inner).await?;
        self.inner.sync_now().await
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

impl Inner {
    /// The write gate (see the module documentation); `Closed` once the log closed it.
    pub(crate) async fn write_gate(&self) -> Result<glommio::sync::Permit<'_>> {
        self.write_gate
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed {
                path: self.dir.clone(),
            })
    }

    /// fdatasync of the active segment plus the epoch checkpoint when it changed. Bytes
    /// written while the fdatasync runs stay counted as unsynced.
    pub(crate) async fn sync_now(&self) -> Result<()> {
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
        self.state.borrow_mut().synced(covered);
        if let Some(text) = epochs {
            files::write_atomically(&self.dir, files::EPOCH_CHECKPOINT, text.into_bytes()).await?;
            self.state.borrow_mut().epochs_dirty = false;
        }
        Ok(())
    }

    /// True while acknowledged batches of this log are durable only in the commit log.
    pub(crate) fn holds_batches_only_in_commit_log(&self) -> bool {
        self.state
            .borrow()
            .holds_batches_only_in_commit_log(self.commit_log.is_some())
    }
}

/// Whether an append judges a batch against the producer state (a client's, on a leader) or
/// only records it (a replica's copy of its leader's entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProducerCheck {
    Check,
    Record,
}
