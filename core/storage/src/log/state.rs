//! [`LogState`]: one partition log's bookkeeping and every decision the log takes, sans-IO.
//!
//! The drivers around it (`flush`, `truncate`, `retention`, `recover`, `read`) ask it what to
//! do, perform the I/O, and tell it what happened. Nothing here touches a file or a clock:
//! times come in as arguments, and the segments' file handles are a type parameter (`F`), so
//! the unit tests below run the decisions with no file at all (`F = ()`).
//!
//! Decisions: admission of an append (back-pressure, a closed or failed log, appends blocked
//! by a truncation), stamping (offsets, leader epoch, cache, queue), group-commit rounds and
//! their acknowledgement (the durable offset), when to roll and how to cut a round into
//! writes, when the flusher syncs or writes behind, which segments retention deletes, what a
//! truncation cuts, and what recovery trusts (an index, or a scan).

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quiver_batch::{header, BatchHeader};

use super::write_behind::WriteBehind;
use crate::cache::BatchCache;
use crate::config::{FlushPolicy, LogConfig};
use crate::epoch::LeaderEpochMap;
use crate::error::{Result, StorageError};
use crate::index::IndexFile;
use crate::producer_state::ProducerStates;
use crate::segments::{Segment, Segments};
use crate::signal::Sender;

/// A partition's write-behind goes to its segment once it holds this many bytes...
pub const WRITE_BEHIND_BYTES: usize = 256 << 10;
/// ...or its oldest batch is this old.
pub const WRITE_BEHIND_MS: u64 = 250;
/// Appends fail (with the segment write's error) while this much waits for a segment that
/// cannot be written: memory stays bounded when only the segment's writes fail.
pub(crate) const WRITE_BEHIND_LIMIT_BYTES: usize = 4 * WRITE_BEHIND_BYTES;

/// Zeroes written ahead of the tail at a time, and the headroom below which more are written.
pub(crate) const ZERO_AHEAD_CHUNK_BYTES: u64 = 2 << 20;
const ZERO_AHEAD_LOW_BYTES: u64 = 512 << 10;

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
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TailPage {
    pub aligned_position: u64,
    pub bytes: Vec<u8>,
}

/// A stamped batch and its parsed header: what the flusher writes to the segment.
#[derive(Debug, Clone)]
pub(crate) struct Appended {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

pub(crate) struct Pending {
    pub batch: Appended,
    pub ack: Sender<Result<()>>,
}

/// What an append may do now.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Stamp and enqueue it.
    Admit,
    /// Wait until the flusher takes the pending batches (or a truncation ends), then ask again.
    WaitForRoom,
    /// Too much waits for a segment that could not be written: try that write again first.
    RetryWriteBehind,
    /// The log takes no appends.
    Refuse(StorageError),
}

/// What the flusher does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlusherStep {
    /// Write (or hand to the commit log) every pending batch.
    Round,
    /// The log is closing and nothing is pending.
    Exit,
    /// Due now: the write-behind (with the commit log) or the periodic fdatasync.
    Housekeeping,
    /// Sleep until an append rings, at most this long.
    Sleep(Duration),
    /// Sleep until an append rings.
    Wait,
}

/// Where a truncation cuts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TruncationPlan {
    /// Only batches not written to the segment yet go: the files stay as they are.
    InWriteBehind,
    /// The segments are cut.
    InSegments,
    /// Below the log start.
    OutOfRange,
}

/// What recovery builds a segment's metadata from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SegmentSource {
    /// Its index file, which describes exactly the bytes on disk.
    Index(Box<IndexFile>),
    /// A scan of the file (no index, a damaged one, or one of another size).
    Scan,
}

/// An index is trusted only when it describes the file as it is (a crash between a write
/// and the index's rewrite leaves them apart).
pub(crate) fn segment_source(index: Option<IndexFile>, physical_bytes: u64) -> SegmentSource {
    match index.filter(|idx| idx.segment_bytes == physical_bytes) {
        Some(idx) => SegmentSource::Index(Box::new(idx)),
        None => SegmentSource::Scan,
    }
}

/// One partition log's state on its shard.
pub(crate) struct LogState<F = std::rc::Rc<crate::segment::SegmentFile>> {
    /// The sealed segments and the active one (the only one written to).
    pub segments: Segments<F>,
    pub tail: TailPage,
    /// When the active segment was created or, after a restart, opened: `segment_ms` counts
    /// from here (the broker's clock, not producers' timestamps).
    pub active_since: Instant,
    /// Next offset to assign to an append (the log end offset).
    pub next_offset: u64,
    /// Offsets below this are written per the flush policy (acknowledged to acks=all).
    pub durable_offset: u64,
    pub pending: VecDeque<Pending>,
    pub pending_bytes: usize,
    pub cache: BatchCache,
    /// With the shard's commit log: acknowledged batches (durable in the commit log) not yet
    /// written to the segment; the flusher writes them in bulk.
    pub write_behind: WriteBehind,
    pub epochs: LeaderEpochMap,
    pub epochs_dirty: bool,
    /// Bytes written since the last fdatasync, and when the first of them was.
    pub unsynced_bytes: u64,
    pub unsynced_since: Option<Instant>,
    /// Physical end of the zeroes written and synced past the active segment's tail (0 =
    /// none). Appends that land there overwrite initialised blocks, so their fdatasync has no
    /// file-size or extent change to journal. See `flush::zero_ahead`.
    pub zeroed_until: u64,
    pub closing: bool,
    /// True while a truncation rewrites the tail: appends wait, so none is stamped with an
    /// offset the truncation is about to take back.
    pub appends_blocked: bool,
    pub stats: LogStats,
    /// Set when a failed write could not be rolled back; the log refuses appends until reopened.
    pub failed: Option<String>,
    /// Compaction: the records below this offset were compacted (0 after an open: the next
    /// pass maps every sealed segment once).
    pub compacted_until: u64,
    /// The idempotent producers' sequences and offsets (rebuilt on open).
    pub producers: ProducerStates,
}

/// What one compaction pass reads and may rewrite.
pub(crate) struct CompactionPlan<F> {
    /// Every sealed segment, oldest first: `(base, size_bytes, file)`.
    pub sealed: Vec<(u64, u64, F)>,
    /// Keys are mapped from here (the first record not compacted yet) to the active segment.
    pub dirty_from: u64,
}

impl<F> LogState<F> {
    /// The state of a log just recovered: everything on disk is durable.
    pub fn recovered(
        segments: Segments<F>,
        tail: TailPage,
        mut epochs: LeaderEpochMap,
        epochs_dirty: bool,
        cache_bytes: usize,
        now: Instant,
    ) -> Self {
        let next_offset = segments.active().meta.next_offset;
        let epochs_dirty = epochs.truncate_from_end(next_offset) || epochs_dirty;
        Self {
            segments,
            tail,
            active_since: now,
            next_offset,
            durable_offset: next_offset,
            pending: VecDeque::new(),
            pending_bytes: 0,
            cache: BatchCache::new(cache_bytes),
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
            compacted_until: 0,
            producers: ProducerStates::default(),
        }
    }

    pub fn active(&self) -> &Segment<F> {
        self.segments.active()
    }

    pub fn active_mut(&mut self) -> &mut Segment<F> {
        self.segments.active_mut()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.segments.first_base()
    }

    // ---- appends ----

    /// May an append of `batch_bytes` go ahead? The first pending batch always may (a batch
    /// larger than the limit must not wait forever).
    pub fn admit(&self, batch_bytes: usize, config: &LogConfig, dir: &Path) -> Admission {
        if self.closing {
            return Admission::Refuse(StorageError::Closed {
                path: dir.to_path_buf(),
            });
        }
        if let Some(why) = &self.failed {
            return Admission::Refuse(StorageError::AppendAborted {
                reason: format!("the log failed earlier ({why}); reopen it to recover"),
            });
        }
        if self.write_behind.error.is_some() {
            return Admission::RetryWriteBehind;
        }
        let room =
            self.pending.is_empty() || self.pending_bytes + batch_bytes <= config.max_pending_bytes;
        if room && !self.appends_blocked {
            Admission::Admit
        } else {
            Admission::WaitForRoom
        }
    }

    /// Stamps `batch` (validated, `header` its parsed header) with the next offset and
    /// `leader_epoch`, caches it and queues it for the next round, whose outcome goes to `ack`.
    pub fn stamp(
        &mut self,
        mut batch: BytesMut,
        mut header: BatchHeader,
        leader_epoch: i32,
        ack: Sender<Result<()>>,
    ) -> AppendInfo {
        let base = self.next_offset;
        header::stamp_base_offset(&mut batch, base as i64);
        header::stamp_leader_epoch(&mut batch, leader_epoch);
        header.base_offset = base as i64;
        header.partition_leader_epoch = leader_epoch;
        let last = base + header.last_offset_delta as u64;
        let bytes = batch.freeze();
        self.next_offset = last + 1;
        self.producers
            .record_batch(&header, &bytes, header.max_timestamp_ms);
        if self.epochs.assign(leader_epoch, base) {
            self.epochs_dirty = true;
        }
        self.cache.push(base, last + 1, bytes.clone());
        self.pending_bytes += bytes.len();
        self.stats.appends += 1;
        let info = AppendInfo {
            base_offset: base,
            last_offset: last,
            max_timestamp_ms: header.max_timestamp_ms,
        };
        self.pending.push_back(Pending {
            batch: Appended { header, bytes },
            ack,
        });
        info
    }

    /// Takes every pending batch for one group-commit round.
    pub fn take_round(&mut self) -> (Vec<Appended>, Vec<Sender<Result<()>>>) {
        self.pending_bytes = 0;
        let round: (Vec<Appended>, Vec<_>) =
            self.pending.drain(..).map(|p| (p.batch, p.ack)).unzip();
        if !round.0.is_empty() {
            self.stats.write_rounds += 1;
        }
        round
    }

    /// A round's batches are durable: the durable offset moves past them, and with the
    /// commit log they queue for the segment.
    pub fn acknowledge(&mut self, batches: Vec<Appended>, write_behind: bool) {
        if let Some(last) = batches.last() {
            debug_assert!((last.header.last_offset() as u64) < self.next_offset);
            self.durable_offset = last.header.last_offset() as u64 + 1;
        }
        if write_behind {
            for b in batches {
                self.write_behind.push(b);
            }
        }
    }

    /// Fails the appends not written yet (a truncation takes their offsets back).
    pub fn fail_pending(&mut self, why: &str) {
        for p in self.pending.drain(..) {
            p.ack.send(Err(StorageError::AppendAborted {
                reason: why.to_string(),
            }));
        }
        self.pending_bytes = 0;
    }

    // ---- the flusher ----

    /// What the flusher does next at `now`.
    pub fn flusher_step(&self, now: Instant, config: &LogConfig) -> FlusherStep {
        if !self.pending.is_empty() {
            return FlusherStep::Round;
        }
        if self.closing {
            return FlusherStep::Exit;
        }
        let due_in = match (config.flush, self.unsynced_since) {
            (FlushPolicy::Interval { flush_ms, .. }, Some(since)) => Some(
                Duration::from_millis(flush_ms)
                    .saturating_sub(now.saturating_duration_since(since)),
            ),
            _ => self.write_behind.since().map(|since| {
                Duration::from_millis(WRITE_BEHIND_MS)
                    .saturating_sub(now.saturating_duration_since(since))
            }),
        };
        match due_in {
            Some(d) if d.is_zero() => FlusherStep::Housekeeping,
            Some(d) => FlusherStep::Sleep(d),
            None => FlusherStep::Wait,
        }
    }

    /// With the commit log: is the write-behind big enough to go beside this round?
    pub fn write_behind_due(&self) -> bool {
        self.write_behind.bytes() >= WRITE_BEHIND_BYTES
    }

    /// Must the active segment roll before `next` is written?
    pub fn needs_roll(&self, next: &Appended, now: Instant, config: &LogConfig) -> bool {
        let meta = &self.active().meta;
        let aged = !meta.is_empty()
            && now.saturating_duration_since(self.active_since).as_millis() as u64
                > config.segment_ms;
        aged || meta.would_overflow(
            next.bytes.len() as u64,
            next.header.last_offset() as u64,
            config.segment_bytes,
        )
    }

    /// End (exclusive) of the run of `batch` starting at `start` that fits in the active
    /// segment and in one write of at most `max_write_bytes`. Always at least one batch.
    pub fn run_end(&self, batch: &[Appended], start: usize, config: &LogConfig) -> usize {
        let mut meta_size = self.active().meta.size_bytes;
        let base = self.active().meta.base_offset;
        let mut write_bytes = self.tail.bytes.len();
        let mut end = start;
        for p in &batch[start..] {
            let len = p.bytes.len();
            let overflow = meta_size + len as u64 > config.segment_bytes
                || p.header.last_offset() as u64 - base > u64::from(u32::MAX)
                || write_bytes + len > config.max_write_bytes;
            if end > start && overflow {
                break;
            }
            meta_size += len as u64;
            write_bytes += len;
            end += 1;
        }
        end
    }

    /// A run was written at `position` (the old tail's page): the segment's metadata covers
    /// it, and `tail` is the new partial page.
    pub fn run_written(
        &mut self,
        run: &[Appended],
        logical_len: usize,
        tail: TailPage,
        written_bytes: u64,
        config: &LogConfig,
        now: Instant,
    ) {
        let meta = &mut self.active_mut().meta;
        for p in run {
            meta.on_batch(&p.header, p.bytes.len() as u64, config.index_interval_bytes);
        }
        debug_assert_eq!(
            meta.size_bytes,
            tail.aligned_position + tail.bytes.len() as u64
        );
        self.tail = tail;
        self.unsynced_bytes += logical_len as u64;
        self.stats.bytes_written += written_bytes;
        self.unsynced_since.get_or_insert(now);
    }

    /// Is an fdatasync of the segment due after a round's writes?
    pub fn sync_due(&self, now: Instant, config: &LogConfig) -> bool {
        match config.flush {
            FlushPolicy::EveryAppend => true,
            FlushPolicy::Interval {
                flush_ms,
                flush_bytes,
            } => {
                self.unsynced_bytes >= flush_bytes
                    || self.unsynced_since.is_some_and(|t| {
                        now.saturating_duration_since(t).as_millis() as u64 >= flush_ms
                    })
            }
        }
    }

    /// Where to write the next chunk of zeroes ahead of the tail, if one is needed (see
    /// `flush::zero_ahead`): only under `every_append` without the commit log, never past
    /// the segment's size limit.
    pub fn zero_ahead_at(&self, config: &LogConfig, commit_log: bool) -> Option<u64> {
        if config.flush != FlushPolicy::EveryAppend || commit_log {
            return None;
        }
        let tail_end = crate::segment::align_up(self.active().meta.size_bytes);
        if self.zeroed_until >= tail_end + ZERO_AHEAD_LOW_BYTES {
            return None;
        }
        let start = self.zeroed_until.max(tail_end);
        (start + ZERO_AHEAD_CHUNK_BYTES <= config.segment_bytes).then_some(start)
    }

    /// An fdatasync covering `covered` unsynced bytes finished.
    pub fn synced(&mut self, covered: u64) {
        self.unsynced_bytes = self.unsynced_bytes.saturating_sub(covered);
        if self.unsynced_bytes == 0 {
            self.unsynced_since = None;
        }
        self.stats.fdatasyncs += 1;
    }

    /// The active segment was sealed and `next` starts at its end.
    pub fn rolled(&mut self, next: Segment<F>, now: Instant) {
        self.segments.roll(next);
        self.tail = TailPage::default();
        self.zeroed_until = 0;
        self.active_since = now;
    }

    // ---- retention ----

    /// The sealed segments retention deletes at `now_ms`, oldest first: while the oldest is
    /// past `retention_ms` or the log would still be at least `retention_bytes` without it.
    /// Never the active segment; it stops at the first segment it keeps.
    pub fn retention_cut(&self, now_ms: i64, config: &LogConfig) -> Vec<u64> {
        if !config.cleanup_policy.deletes() {
            return Vec::new();
        }
        let mut total = self.segments.size_bytes();
        let mut cut = Vec::new();
        for s in self.segments.sealed() {
            let expired = config
                .retention_ms
                .is_some_and(|r| s.meta.max_timestamp_ms < now_ms.saturating_sub(r as i64));
            let oversize = config
                .retention_bytes
                .is_some_and(|r| total.saturating_sub(s.meta.size_bytes) >= r);
            if !expired && !oversize {
                break;
            }
            total -= s.meta.size_bytes;
            cut.push(s.meta.base_offset);
        }
        cut
    }

    /// Removes the segments `cut` from the log; returns them (their files are deleted next),
    /// what was done, and the epoch checkpoint to write when the epochs changed.
    pub fn remove_segments(
        &mut self,
        cut: &[u64],
    ) -> (Vec<Segment<F>>, RetentionOutcome, Option<String>) {
        let mut victims = Vec::new();
        let mut outcome = RetentionOutcome::default();
        for base in cut {
            if let Some(seg) = self.segments.remove_sealed(*base) {
                outcome.deleted_segments += 1;
                outcome.deleted_bytes += seg.meta.size_bytes;
                victims.push(seg);
            }
        }
        outcome.log_start_offset = self.log_start_offset();
        let start = outcome.log_start_offset;
        let epochs = (!victims.is_empty() && self.epochs.truncate_from_start(start))
            .then(|| self.epochs.encode());
        (victims, outcome, epochs)
    }

    // ---- compaction ----

    /// The next compaction pass, when one is due: the policy compacts, and the sealed bytes
    /// written since the last pass are at least `min_cleanable_dirty_ratio` of all sealed
    /// bytes. Never the active segment.
    pub fn compaction_plan(&self, config: &LogConfig) -> Option<CompactionPlan<F>>
    where
        F: Clone,
    {
        if !config.cleanup_policy.compacts() || self.closing || self.failed.is_some() {
            return None;
        }
        let sealed: Vec<(u64, u64, F)> = self
            .segments
            .sealed()
            .map(|s| (s.meta.base_offset, s.meta.size_bytes, s.file.clone()))
            .collect();
        let total: u64 = sealed.iter().map(|s| s.1).sum();
        let dirty: u64 = self
            .segments
            .sealed()
            .filter(|s| s.meta.next_offset > self.compacted_until)
            .map(|s| s.meta.size_bytes)
            .sum();
        let due = dirty > 0 && dirty as f64 >= config.min_cleanable_dirty_ratio * total as f64;
        due.then(|| CompactionPlan {
            sealed,
            dirty_from: self.compacted_until.max(self.log_start_offset()),
        })
    }

    /// A compacted copy replaces the sealed segment at `base` (unless retention or a
    /// truncation removed or changed it meanwhile); returns the replaced segment.
    /// Cached copies of the segment's batches (and of older ones) are dropped: reads see the
    /// compacted batches.
    pub fn compacted(
        &mut self,
        base: u64,
        size_bytes: u64,
        with: Segment<F>,
    ) -> Option<Segment<F>> {
        let end = with.meta.next_offset;
        let replaced = self.segments.replace_sealed(base, size_bytes, with).ok();
        if replaced.is_some() {
            self.cache.evict_below(end);
        }
        replaced
    }

    // ---- truncation ----

    /// Where a truncation at `offset` cuts.
    pub fn plan_truncation(&self, offset: u64) -> TruncationPlan {
        let start = self.log_start_offset();
        if offset >= start && self.write_behind.start().is_some_and(|wb| offset >= wb) {
            TruncationPlan::InWriteBehind
        } else if offset < start {
            TruncationPlan::OutOfRange
        } else {
            TruncationPlan::InSegments
        }
    }

    /// The error of a truncation below the log start.
    pub fn out_of_range(&self, offset: u64) -> StorageError {
        StorageError::OffsetOutOfRange {
            requested: offset,
            log_start_offset: self.log_start_offset(),
            log_end_offset: self.next_offset,
        }
    }

    /// A truncation in the write-behind: drops its batches from the one holding `offset`;
    /// returns the new end and the epoch checkpoint to write, if any.
    pub fn truncate_write_behind(&mut self, offset: u64) -> (u64, Option<String>) {
        let new_end = self.write_behind.truncate_from(offset);
        (new_end, self.end_at(new_end))
    }

    /// A truncation in the segments: the segment holding `offset` becomes the active one;
    /// the later ones are removed from the log and returned (their files are deleted next).
    pub fn cut_segments_after(&mut self, offset: u64) -> Vec<Segment<F>> {
        self.segments.cut_after_segment_of(offset)
    }

    /// The active segment was cut at `position` (where the batch at `new_end` began), and
    /// `tail` is its partial last page. Returns the epoch checkpoint to write, if any.
    pub fn segments_truncated(
        &mut self,
        position: u64,
        new_end: u64,
        tail: TailPage,
    ) -> Option<String> {
        self.active_mut().meta.truncate(position, new_end);
        self.tail = tail;
        self.zeroed_until = 0;
        self.unsynced_bytes = 0;
        self.unsynced_since = None;
        // The cut is inside the segments: every batch not written yet was above it.
        self.write_behind.clear();
        self.end_at(new_end)
    }

    /// Moves the log's end back to `new_end`; returns the epoch checkpoint to write when the
    /// epochs changed.
    fn end_at(&mut self, new_end: u64) -> Option<String> {
        self.next_offset = new_end;
        self.producers.truncate_from(new_end);
        self.durable_offset = self.durable_offset.min(new_end);
        self.cache.truncate_from(new_end);
        self.epochs
            .truncate_from_end(new_end)
            .then(|| self.epochs.encode())
    }

    /// True while acknowledged batches are durable only in the commit log: not written to
    /// the segment yet, or written but not fsynced.
    pub fn holds_batches_only_in_commit_log(&self, commit_log: bool) -> bool {
        commit_log && (!self.write_behind.is_empty() || self.unsynced_bytes > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment_meta::SegmentMeta;
    use crate::signal::oneshot;
    use quiver_batch::{validate_batch, BatchBuilder, BatchLimits, NewRecord};
    use std::collections::BTreeMap;

    type State = LogState<()>;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 10_000,
            max_pending_bytes: 1_000,
            max_write_bytes: 4_000,
            ..LogConfig::default()
        }
    }

    /// A log of segments `[(base, next, size, max_ts)]`, the last one active.
    fn state(segments: &[(u64, u64, u64, i64)]) -> State {
        let all: BTreeMap<u64, Segment<()>> = segments
            .iter()
            .map(|&(base, next, size, ts)| {
                let mut meta = SegmentMeta::empty(base);
                meta.next_offset = next;
                meta.size_bytes = size;
                meta.max_timestamp_ms = ts;
                (base, Segment { meta, file: () })
            })
            .collect();
        let segments = Segments::from_ordered(all).unwrap();
        State::recovered(
            segments,
            TailPage::default(),
            LeaderEpochMap::default(),
            false,
            1 << 20,
            Instant::now(),
        )
    }

    /// A valid batch of `records` records of `value_bytes` bytes each.
    fn batch(records: usize, value_bytes: usize) -> (BytesMut, BatchHeader) {
        let mut b = BatchBuilder::new();
        for i in 0..records {
            b.push(&NewRecord::value(
                vec![i as u8; value_bytes],
                1_000 + i as i64,
            ));
        }
        let bytes = b.build();
        let header = validate_batch(
            &bytes,
            BatchLimits {
                max_batch_bytes: 1 << 20,
            },
        )
        .unwrap();
        (bytes, header)
    }

    fn append(st: &mut State, records: usize, value_bytes: usize, epoch: i32) -> AppendInfo {
        let (bytes, header) = batch(records, value_bytes);
        st.stamp(bytes, header, epoch, oneshot().0)
    }

    fn dir() -> &'static Path {
        Path::new("/log")
    }

    #[test]
    fn appends_are_admitted_until_the_pending_limit_and_never_to_a_closed_or_failed_log() {
        let mut st = state(&[(0, 0, 0, -1)]);
        let cfg = config();
        assert!(
            matches!(st.admit(5_000, &cfg, dir()), Admission::Admit),
            "the first always goes"
        );
        append(&mut st, 1, 600, 0);
        assert!(matches!(st.admit(300, &cfg, dir()), Admission::Admit));
        assert!(
            matches!(st.admit(900, &cfg, dir()), Admission::WaitForRoom),
            "back-pressure"
        );
        st.appends_blocked = true;
        assert!(
            matches!(st.admit(1, &cfg, dir()), Admission::WaitForRoom),
            "a truncation runs"
        );
        st.appends_blocked = false;
        st.write_behind.error = Some(StorageError::DiskFull {
            op: "writing",
            path: "/x".into(),
        });
        assert!(matches!(
            st.admit(1, &cfg, dir()),
            Admission::RetryWriteBehind
        ));
        st.failed = Some("rollback failed".into());
        assert!(matches!(
            st.admit(1, &cfg, dir()),
            Admission::Refuse(StorageError::AppendAborted { .. })
        ));
        st.closing = true;
        assert!(matches!(
            st.admit(1, &cfg, dir()),
            Admission::Refuse(StorageError::Closed { .. })
        ));
    }

    #[test]
    fn stamping_assigns_offsets_and_epochs_and_only_a_round_makes_them_durable() {
        let mut st = state(&[(0, 5, 500, 1)]);
        let a = append(&mut st, 3, 10, 2);
        let b = append(&mut st, 1, 10, 3);
        assert_eq!((a.base_offset, a.last_offset), (5, 7));
        assert_eq!((b.base_offset, b.last_offset), (8, 8));
        assert_eq!((st.next_offset, st.durable_offset), (9, 5));
        assert_eq!(st.epochs.latest_epoch(), Some(3));
        assert!(st.epochs_dirty);
        assert!(st.cache.read(5, 9, 1 << 20).is_some(), "cached at once");
        let (batches, acks) = st.take_round();
        assert_eq!((batches.len(), acks.len(), st.pending_bytes), (2, 2, 0));
        assert_eq!(batches[0].header.base_offset, 5);
        assert_eq!(batches[1].header.partition_leader_epoch, 3);
        st.acknowledge(batches, true);
        assert_eq!(st.durable_offset, 9);
        assert_eq!(st.write_behind.start(), Some(5), "queued for the segment");
        assert_eq!(st.stats.write_rounds, 1);
    }

    #[test]
    fn the_flusher_rounds_first_exits_when_closing_and_keeps_its_timers() {
        let cfg = LogConfig {
            flush: FlushPolicy::Interval {
                flush_ms: 100,
                flush_bytes: 1 << 20,
            },
            ..config()
        };
        let mut st = state(&[(0, 0, 0, -1)]);
        let t0 = Instant::now();
        assert_eq!(st.flusher_step(t0, &cfg), FlusherStep::Wait);
        st.unsynced_since = Some(t0);
        assert_eq!(
            st.flusher_step(t0 + Duration::from_millis(40), &cfg),
            FlusherStep::Sleep(Duration::from_millis(60))
        );
        assert_eq!(
            st.flusher_step(t0 + Duration::from_millis(100), &cfg),
            FlusherStep::Housekeeping
        );
        append(&mut st, 1, 1, 0);
        st.closing = true;
        assert_eq!(
            st.flusher_step(t0, &cfg),
            FlusherStep::Round,
            "pending goes first"
        );
        st.take_round();
        assert_eq!(st.flusher_step(t0, &cfg), FlusherStep::Exit);
    }

    #[test]
    fn the_write_behind_goes_when_big_enough_or_old_enough() {
        let cfg = config();
        let mut st = state(&[(0, 0, 0, -1)]);
        append(&mut st, 1, 100, 0);
        let (batches, _) = st.take_round();
        st.acknowledge(batches, true);
        assert!(!st.write_behind_due());
        let since = st.write_behind.since().unwrap();
        assert_eq!(
            st.flusher_step(since + Duration::from_millis(WRITE_BEHIND_MS), &cfg),
            FlusherStep::Housekeeping
        );
        for _ in 0..300 {
            append(&mut st, 1, 1_000, 0);
            let (batches, _) = st.take_round();
            st.acknowledge(batches, true);
        }
        assert!(st.write_behind_due());
    }

    #[test]
    fn a_segment_rolls_by_size_age_and_offset_range_and_rounds_split_by_write_size() {
        let cfg = config();
        let t0 = Instant::now();
        let st = state(&[(0, 10, 9_500, 5)]);
        let (bytes, header) = batch(1, 600);
        let big = Appended {
            header,
            bytes: bytes.freeze(),
        };
        assert!(st.needs_roll(&big, t0, &cfg), "past segment_bytes");
        let (bytes, header) = batch(1, 10);
        let small = Appended {
            header,
            bytes: bytes.freeze(),
        };
        assert!(!st.needs_roll(&small, st.active_since, &cfg));
        let aged = st.active_since + Duration::from_millis(cfg.segment_ms + 1);
        assert!(st.needs_roll(&small, aged, &cfg), "past segment_ms");
        let empty = state(&[(0, 0, 0, -1)]);
        assert!(
            !empty.needs_roll(&small, aged, &cfg),
            "an empty segment never ages out"
        );

        let run: Vec<Appended> = (0..10)
            .map(|_| {
                let (bytes, header) = batch(1, 900);
                Appended {
                    header,
                    bytes: bytes.freeze(),
                }
            })
            .collect();
        let fresh = state(&[(0, 0, 0, -1)]);
        let first = fresh.run_end(&run, 0, &cfg);
        assert!(
            first >= 1 && first < run.len(),
            "max_write_bytes splits the round"
        );
        let written: usize = run[..first].iter().map(|a| a.bytes.len()).sum();
        assert!(written <= cfg.max_write_bytes);
        let one = LogConfig {
            max_write_bytes: 1,
            ..config()
        };
        assert_eq!(fresh.run_end(&run, 3, &one), 4, "always at least one batch");
    }

    #[test]
    fn syncs_are_due_every_append_or_by_bytes_and_time() {
        let mut st = state(&[(0, 0, 0, -1)]);
        let t0 = Instant::now();
        assert!(st.sync_due(t0, &config()));
        let cfg = LogConfig {
            flush: FlushPolicy::Interval {
                flush_ms: 50,
                flush_bytes: 1_000,
            },
            ..config()
        };
        st.unsynced_bytes = 10;
        st.unsynced_since = Some(t0);
        assert!(!st.sync_due(t0, &cfg));
        assert!(st.sync_due(t0 + Duration::from_millis(50), &cfg));
        st.unsynced_bytes = 1_000;
        assert!(st.sync_due(t0, &cfg));
        st.synced(1_000);
        assert_eq!((st.unsynced_bytes, st.unsynced_since), (0, None));
        assert_eq!(
            st.zero_ahead_at(&cfg, false),
            None,
            "only under every_append"
        );
        let every = LogConfig {
            segment_bytes: 64 << 20,
            ..config()
        };
        assert_eq!(st.zero_ahead_at(&every, false), Some(0));
        assert_eq!(
            st.zero_ahead_at(&every, true),
            None,
            "not with the commit log"
        );
        st.zeroed_until = ZERO_AHEAD_CHUNK_BYTES;
        assert_eq!(st.zero_ahead_at(&every, false), None, "enough headroom");
    }

    #[test]
    fn compaction_is_due_by_the_dirty_ratio_never_covers_the_active_segment_and_policy_gates_retention(
    ) {
        let compact = LogConfig {
            cleanup_policy: crate::config::CleanupPolicy::Compact,
            retention_ms: Some(1),
            ..config()
        };
        let mut st = state(&[(0, 10, 100, 1), (10, 20, 100, 1), (20, 25, 50, 1)]);
        let plan = st.compaction_plan(&compact).expect("never compacted: due");
        assert_eq!(
            plan.sealed.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![0, 10]
        );
        assert_eq!(plan.dirty_from, 0);
        // Compacted up to the active segment: nothing is dirty.
        st.compacted_until = 20;
        assert!(st.compaction_plan(&compact).is_none());
        // Half the sealed bytes new since the last pass: due at a ratio of 0.5.
        st.compacted_until = 10;
        assert_eq!(st.compaction_plan(&compact).map(|p| p.dirty_from), Some(10));
        let strict = LogConfig {
            min_cleanable_dirty_ratio: 0.6,
            ..compact.clone()
        };
        assert!(st.compaction_plan(&strict).is_none());
        // The delete policy does not compact, and compact alone does not delete.
        assert!(st.compaction_plan(&config()).is_none());
        assert!(st.retention_cut(1_000_000, &compact).is_empty());
        let both = LogConfig {
            cleanup_policy: crate::config::CleanupPolicy::CompactDelete,
            ..compact
        };
        assert_eq!(st.retention_cut(1_000_000, &both), vec![0, 10]);
    }

    #[test]
    fn retention_deletes_the_oldest_sealed_segments_by_age_and_size_never_the_active_one() {
        let now = 1_000_000;
        let cfg = LogConfig {
            retention_ms: Some(1_000),
            ..config()
        };
        // Old, old, recent, old (out of order: retention stops at the first it keeps), active.
        let mut st = state(&[
            (0, 10, 100, now - 5_000),
            (10, 20, 100, now - 4_000),
            (20, 30, 100, now - 10),
            (30, 40, 100, now - 9_000),
            (40, 45, 100, now - 9_000),
        ]);
        assert_eq!(st.retention_cut(now, &cfg), vec![0, 10]);
        let by_size = LogConfig {
            retention_bytes: Some(200),
            ..config()
        };
        // 500 bytes: without 0 → 400, 10 → 300, 20 → 200 (still >= 200), 30 → 100: keep 30.
        assert_eq!(st.retention_cut(now, &by_size), vec![0, 10, 20]);
        let forever = config();
        assert!(st.retention_cut(now, &forever).is_empty());
        st.epochs.assign(0, 0);
        st.epochs.assign(1, 25);
        let (victims, outcome, epochs) = st.remove_segments(&[0, 10]);
        assert_eq!(victims.len(), 2);
        assert_eq!((outcome.deleted_segments, outcome.deleted_bytes), (2, 200));
        assert_eq!((outcome.log_start_offset, st.log_start_offset()), (20, 20));
        assert!(
            epochs.is_some(),
            "the epoch map starts at the new log start"
        );
        let only_active = state(&[(0, 5, 100, 0)]);
        assert!(only_active.retention_cut(now, &by_size).is_empty());
    }

    #[test]
    fn a_truncation_cuts_the_write_behind_or_the_segments_and_refuses_below_the_start() {
        let mut st = state(&[(10, 20, 100, 0), (20, 30, 100, 0)]);
        assert_eq!(st.plan_truncation(5), TruncationPlan::OutOfRange);
        assert_eq!(st.plan_truncation(25), TruncationPlan::InSegments);
        for _ in 0..3 {
            append(&mut st, 2, 10, 0);
        }
        let (batches, _) = st.take_round();
        st.acknowledge(batches, true); // offsets 30..36 wait for the segment
        assert_eq!(st.plan_truncation(31), TruncationPlan::InWriteBehind);
        assert_eq!(st.plan_truncation(29), TruncationPlan::InSegments);
        let (end, _) = st.truncate_write_behind(33);
        assert_eq!(end, 32, "the whole batch holding 33 goes");
        assert_eq!((st.next_offset, st.durable_offset), (32, 32));
        let removed = st.cut_segments_after(15);
        assert_eq!(removed.len(), 1, "the segment after the cut");
        assert_eq!(st.active().meta.base_offset, 10);
        st.segments_truncated(40, 15, TailPage::default());
        assert_eq!((st.next_offset, st.durable_offset), (15, 15));
        assert!(st.write_behind.is_empty());
    }

    #[test]
    fn pending_appends_fail_when_a_truncation_takes_their_offsets() {
        let mut st = state(&[(0, 0, 0, -1)]);
        let (bytes, header) = batch(1, 1);
        let (tx, mut rx) = oneshot();
        st.stamp(bytes, header, 0, tx);
        st.fail_pending("truncated");
        assert_eq!(st.pending_bytes, 0);
        let got = rx.try_take();
        assert!(matches!(got, Some(Err(StorageError::AppendAborted { .. }))));
    }

    #[test]
    fn recovery_trusts_an_index_only_when_it_describes_the_file_as_it_is() {
        let meta = SegmentMeta::empty(0);
        let mut idx = meta.to_index();
        idx.segment_bytes = 4096;
        assert!(matches!(
            segment_source(Some(idx.clone()), 4096),
            SegmentSource::Index(_)
        ));
        assert_eq!(segment_source(Some(idx), 8192), SegmentSource::Scan);
        assert_eq!(segment_source(None, 0), SegmentSource::Scan);
    }
}
