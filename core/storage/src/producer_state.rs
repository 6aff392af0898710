//! The idempotent producer's state of one partition (sans-IO): per producer id, its epoch
//! and the sequences and offsets of its last batches. It decides what a batch carrying a
//! producer id is: the next one (append), one already written (a retry: answer with the
//! offsets it got), a gap (`OutOfOrderSequence`), or from a fenced epoch (`ProducerFenced`).
//! Kafka's rules (KIP-98, KIP-360): a new epoch starts at sequence 0; sequences wrap from
//! `i32::MAX` to 0; the last `window` batches of a producer are remembered (5, as Kafka, so
//! a client may keep 5 batches in flight per partition).
//!
//! Transactions (KIP-98, KIP-890): a producer's first transactional batch opens its
//! transaction here (its first offset holds the last stable offset back); a marker (control
//! batch, carrying the epoch the coordinator moved to) closes it, fencing writes of the
//! older epoch; an abort marker records the aborted range, which read_committed readers skip.
//!
//! The state is rebuilt from the batch headers the log holds (recovery, and a replica as it
//! appends), from a snapshot when there is one ([`ProducerStates::encode`]).

use std::collections::{BTreeMap, HashMap, VecDeque};

use quiver_batch::control::ControlKind;
use quiver_batch::BatchHeader;

/// Bounds of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Batches remembered per producer (the in-flight window a client may use).
    pub window: usize,
    /// Producers tracked per partition; beyond it the idlest is forgotten.
    pub max_producers: usize,
    /// A producer not heard from for this long is forgotten (Kafka's
    /// `producer.id.expiration.ms`, 1 day).
    pub expiration_ms: i64,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        Self {
            window: 5,
            max_producers: 10_000,
            expiration_ms: 86_400_000,
        }
    }
}

/// One batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    recent: VecDeque<WrittenBatch>,
    last_seen_ms: i64,
    /// The first offset of its open transaction here.
    txn_first_offset: Option<u64>,
    /// Its last transaction marker here, to undo if a truncation cuts it.
    last_marker: Option<MarkerUndo>,
}

/// What a marker changed, so a truncation that cuts it can restore the state before it:
/// the epoch (a marker moves the producer to the next one) and the transaction it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MarkerUndo {
    offset: u64,
    epoch_before: i16,
    closed_first_offset: Option<u64>,
}

/// A transaction aborted in this partition: read_committed readers skip the producer's
/// transactional batches from `first_offset` to the abort marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub last_offset: u64,
}

/// What a batch with a producer id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not from an idempotent producer, or its next batch: append it.
    Append,
    /// Written before (a retry): these are its offsets; append nothing.
    Duplicate(WrittenBatch),
}

/// Why a batch with a producer id is refused. Messages say what the producer must do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("producer {producer_id}: sequence {got} where {expected} was expected; a batch in between was lost or reordered: the producer must retry in order or reset its sequences (new epoch)")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is fenced: epoch {current} took over (a newer instance of the producer); this instance must stop")]
    ProducerFenced {
        producer_id: i64,
        got: i16,
        current: i16,
    },
    /// A transaction marker whose transaction is marked here already: a retry of a marker
    /// written before, or one delayed past the producer's next transaction (which it would
    /// otherwise close). Nothing is appended; its transaction's marker is in the log.
    #[error("producer {producer_id}: a transaction marker at epoch {got} where the producer is at epoch {current} here: that transaction is marked already (a retried or delayed marker); nothing appended")]
    MarkerSuperseded {
        producer_id: i64,
        got: i16,
        current: i16,
    },
}

/// The next sequence after `s` (wrapping to 0 after `i32::MAX`, as Kafka).
pub fn next_sequence(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

fn last_sequence(h: &BatchHeader) -> i32 {
    let first = i64::from(h.base_sequence);
    let last = first + i64::from(h.last_offset_delta);
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

/// The producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
    limits: ProducerLimits,
    /// Open transactions by first offset (the first is the last stable offset).
    open: BTreeMap<u64, i64>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
}

impl ProducerStates {
    pub fn new(limits: ProducerLimits) -> Self {
        Self {
            producers: HashMap::new(),
            limits,
            open: BTreeMap::new(),
            aborted: Vec::new(),
        }
    }

    /// The last stable offset: the first offset of the oldest open transaction, or
    /// `high_watermark` when none is open below it. read_committed readers stop here.
    pub fn last_stable_offset(&self, high_watermark: u64) -> u64 {
        self.open
            .keys()
            .next()
            .map_or(high_watermark, |first| (*first).min(high_watermark))
    }

    /// True when `h` is a transactional data batch that opens a transaction here: the
    /// coordinator must have added this partition to it before it is appended.
    pub fn opens_transaction(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && !self
                .producers
                .get(&h.producer_id)
                .is_some_and(|p| p.epoch == h.producer_epoch && p.txn_first_offset.is_some())
    }

    /// Aborted transactions overlapping offsets `from..to`.
    pub fn aborted_between(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        // Sorted by marker offset: skip those ended before `from`.
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted ranges wholly below the log start (retention removed them).
    pub fn forget_aborted_below(&mut self, log_start_offset: u64) {
        let n = self
            .aborted
            .partition_point(|a| a.last_offset < log_start_offset);
        self.aborted.drain(..n);
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// What `h` (a validated header, not stamped yet) is.
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict, ProducerError> {
        if h.producer_id < 0 {
            return Ok(Verdict::Append);
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            // Unknown here: its first batch starts at sequence 0. (A later batch overtaking
            // the first — pipelined requests handled out of order — is refused, and the
            // producer sends it again after the first; a producer forgotten after its idle
            // expiry is refused too, and starts again from 0 under a new epoch.)
            if h.base_sequence != 0 && !h.is_control() {
                return Err(ProducerError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                });
            }
            return Ok(Verdict::Append);
        };
        if h.is_control() {
            // A marker carries the epoch its coordinator moved the producer to, one past its
            // transaction's (KIP-890): the producer's next transaction writes at that epoch.
            // A marker at or below the epoch here is stale — a retry of one written, or one
            // delayed past the next transaction, which it would close (found by the chaos
            // harness: a late node call's abort marker closed the next transaction, whose
            // own abort then indexed nothing, and read_committed served it).
            return if h.producer_epoch > p.epoch {
                Ok(Verdict::Append)
            } else {
                Err(ProducerError::MarkerSuperseded {
                    producer_id: h.producer_id,
                    got: h.producer_epoch,
                    current: p.epoch,
                })
            };
        }
        if h.producer_epoch < p.epoch {
            return Err(ProducerError::ProducerFenced {
                producer_id: h.producer_id,
                got: h.producer_epoch,
                current: p.epoch,
            });
        }
        if h.producer_epoch > p.epoch {
            return if h.base_sequence == 0 {
                Ok(Verdict::Append)
            } else {
                Err(ProducerError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_sequence(h);
        if let Some(b) = p
            .recent
            .iter()
            .find(|b| b.first_sequence == h.base_sequence && b.last_sequence == last)
        {
            return Ok(Verdict::Duplicate(*b));
        }
        let expected = p
            .recent
            .back()
            .map_or(0, |b| next_sequence(b.last_sequence));
        if h.base_sequence == expected {
            Ok(Verdict::Append)
        } else {
            Err(ProducerError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            })
        }
    }

    /// [`Self::record`] for a batch's bytes (a control batch's marker read from them).
    pub fn record_batch(&mut self, h: &BatchHeader, batch: &[u8], now_ms: i64) {
        let marker = if h.is_control() {
            quiver_batch::control::marker_kind(batch)
        } else {
            None
        };
        self.record(h, marker, now_ms);
    }

    /// Records a batch the log holds (`h` stamped: its base offset is set; `marker`: what a
    /// control batch says); `now_ms` is the broker's clock (the batch's timestamp during a
    /// rebuild).
    pub fn record(&mut self, h: &BatchHeader, marker: Option<ControlKind>, now_ms: i64) {
        if h.producer_id < 0 {
            return;
        }
        let window = self.limits.window.max(1);
        let p = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| Producer {
                epoch: h.producer_epoch,
                recent: VecDeque::new(),
                last_seen_ms: now_ms,
                txn_first_offset: None,
                last_marker: None,
            });
        let epoch_before = p.epoch;
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.recent.clear();
        }
        p.last_seen_ms = p.last_seen_ms.max(now_ms);
        let base = h.base_offset.max(0) as u64;
        if h.is_control() {
            p.last_marker = Some(MarkerUndo {
                offset: base,
                epoch_before,
                closed_first_offset: p.txn_first_offset,
            });
            if let Some(first) = p.txn_first_offset.take() {
                self.open.remove(&first);
                if marker == Some(ControlKind::Abort) {
                    self.aborted.push(AbortedTxn {
                        producer_id: h.producer_id,
                        first_offset: first,
                        last_offset: base,
                    });
                }
            }
            return;
        }
        if h.is_transactional() && p.txn_first_offset.is_none() {
            p.txn_first_offset = Some(base);
            self.open.insert(base, h.producer_id);
        }
        p.recent.push_back(WrittenBatch {
            first_sequence: h.base_sequence,
            last_sequence: last_sequence(h),
            base_offset: h.base_offset.max(0) as u64,
            last_offset: h.last_offset().max(0) as u64,
        });
        while p.recent.len() > window {
            p.recent.pop_front();
        }
        if self.producers.len() > self.limits.max_producers {
            self.forget_idlest();
        }
    }

    fn forget_idlest(&mut self) {
        if let Some(id) = self
            .producers
            .iter()
            .filter(|(_, p)| p.txn_first_offset.is_none())
            .min_by_key(|(_, p)| p.last_seen_ms)
            .map(|(id, _)| *id)
        {
            self.producers.remove(&id);
        }
    }

    /// Forgets producers idle for longer than `expiration_ms` (not one with an open
    /// transaction: its coordinator will end it).
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.limits.expiration_ms);
        self.producers
            .retain(|_, p| p.last_seen_ms >= cutoff || p.txn_first_offset.is_some());
    }

    /// The log was cut at `offset`: batches from there on are forgotten (a producer left with
    /// none, no open transaction and no marker is forgotten too; its next batch sets its
    /// sequence again). Transactions opened from there on are forgotten, and aborts marked
    /// from there on.
    /// A producer's last marker cut away is undone: its transaction, if its batches stay, is
    /// open again and its epoch is the one before, so the marker its next leader writes
    /// again is taken and closes it (found by the chaos harness, seed 1013: a replica that had
    /// lost an abort marker's range served an aborted record to read_committed readers).
    /// Only the last marker is remembered: a cut through two markers of one producer (a
    /// diverged tail holding two of its transactions' ends, which needs the first end
    /// committed elsewhere and so is not a tail) leaves the earlier one in place.
    pub fn truncate_from(&mut self, offset: u64) {
        for (id, p) in &mut self.producers {
            while p.recent.back().is_some_and(|b| b.last_offset >= offset) {
                p.recent.pop_back();
            }
            if p.txn_first_offset.is_some_and(|f| f >= offset) {
                p.txn_first_offset = None;
            }
            if let Some(m) = p.last_marker.filter(|m| m.offset >= offset) {
                p.last_marker = None;
                if p.epoch != m.epoch_before {
                    p.epoch = m.epoch_before;
                    p.recent.clear();
                }
                if let Some(first) = m.closed_first_offset.filter(|f| *f < offset) {
                    p.txn_first_offset = Some(first);
                    self.open.insert(first, *id);
                }
            }
        }
        self.open.retain(|first, _| *first < offset);
        self.aborted.retain(|a| a.last_offset < offset);
        self.producers.retain(|_, p| {
            !p.recent.is_empty() || p.txn_first_offset.is_some() || p.last_marker.is_some()
        });
    }

    /// A snapshot: magic `QPS3`, `u32 count`, then per producer `i64 id, i16 epoch, i64
    /// last_seen_ms, i64 open transaction's first offset (-1: none), i64 last marker's offset
    /// (-1: none), i16 epoch before it, i64 first offset of the transaction it closed (-1:
    /// none), u8 batches`, per batch `i32 first, i32 last, u64 base, u64 last offset`; then
    /// `u32 aborted`, per aborted transaction `i64 producer, u64 first, u64 last offset`; then
    /// a CRC-32C of all of it. Sorted by id, so equal states encode equally. A `QPS2`
    /// snapshot (no marker fields) still reads; an older one, without a magic, reads as
    /// damaged: the log is read once instead.
    pub fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(12 + ids.len() * 64 + self.aborted.len() * 24);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let p = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&p.epoch.to_be_bytes());
            out.extend_from_slice(&p.last_seen_ms.to_be_bytes());
            let first = p.txn_first_offset.map_or(-1, |f| f as i64);
            out.extend_from_slice(&first.to_be_bytes());
            let marker = p.last_marker.map_or(-1, |m| m.offset as i64);
            out.extend_from_slice(&marker.to_be_bytes());
            let epoch_before = p.last_marker.map_or(-1, |m| m.epoch_before);
            out.extend_from_slice(&epoch_before.to_be_bytes());
            let closed = p
                .last_marker
                .and_then(|m| m.closed_first_offset)
                .map_or(-1, |f| f as i64);
            out.extend_from_slice(&closed.to_be_bytes());
            out.push(p.recent.len() as u8);
            for b in &p.recent {
                out.extend_from_slice(&b.first_sequence.to_be_bytes());
                out.extend_from_slice(&b.last_sequence.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.to_be_bytes());
            out.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot; `None` when it is damaged (the caller rebuilds from the log).
    pub fn decode(bytes: &[u8], limits: ProducerLimits) -> Option<Self> {
        let (body, crc) = bytes.split_last_chunk::<4>()?;
        if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
            return None;
        }
        let (mut r, with_markers) = match body.strip_prefix(SNAPSHOT_MAGIC) {
            Some(r) => (r, true),
            None => (body.strip_prefix(SNAPSHOT_MAGIC_V2)?, false),
        };
        fn take<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
            let (head, tail) = r.split_first_chunk::<N>()?;
            *r = tail;
            Some(*head)
        }
        let n = u32::from_be_bytes(take(&mut r)?) as usize;
        if n > r.len() / 27 {
            return None;
        }
        let mut producers = HashMap::with_capacity(n);
        let mut open = BTreeMap::new();
        for _ in 0..n {
            let id = i64::from_be_bytes(take(&mut r)?);
            let epoch = i16::from_be_bytes(take(&mut r)?);
            let last_seen_ms = i64::from_be_bytes(take(&mut r)?);
            let first = i64::from_be_bytes(take(&mut r)?);
            let txn_first_offset = u64::try_from(first).ok();
            if let Some(f) = txn_first_offset {
                open.insert(f, id);
            }
            let last_marker = if with_markers {
                let offset = i64::from_be_bytes(take(&mut r)?);
                let epoch_before = i16::from_be_bytes(take(&mut r)?);
                let closed = i64::from_be_bytes(take(&mut r)?);
                u64::try_from(offset).ok().map(|offset| MarkerUndo {
                    offset,
                    epoch_before,
                    closed_first_offset: u64::try_from(closed).ok(),
                })
            } else {
                None
            };
            let [count] = take::<1>(&mut r)?;
            let mut recent = VecDeque::with_capacity(usize::from(count));
            for _ in 0..count {
                recent.push_back(WrittenBatch {
                    first_sequence: i32::from_be_bytes(take(&mut r)?),
                    last_sequence: i32::from_be_bytes(take(&mut r)?),
                    base_offset: u64::from_be_bytes(take(&mut r)?),
                    last_offset: u64::from_be_bytes(take(&mut r)?),
                });
            }
            producers.insert(
                id,
                Producer {
                    epoch,
                    recent,
                    last_seen_ms,
                    txn_first_offset,
                    last_marker,
                },
            );
        }
        let n = u32::from_be_bytes(take(&mut r)?) as usize;
        if n > r.len() / 24 {
            return None;
        }
        let mut aborted = Vec::with_capacity(n);
        for _ in 0..n {
            aborted.push(AbortedTxn {
                producer_id: i64::from_be_bytes(take(&mut r)?),
                first_offset: u64::from_be_bytes(take(&mut r)?),
                last_offset: u64::from_be_bytes(take(&mut r)?),
            });
        }
        r.is_empty().then_some(Self {
            producers,
            limits,
            open,
            aborted,
        })
    }
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"QPS3";
const SNAPSHOT_MAGIC_V2: &[u8; 4] = b"QPS2";

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, records: i32, base_offset: i64) -> BatchHeader {
        let mut b = quiver_batch::BatchBuilder::new().producer(pid, epoch, seq);
        for _ in 0..records {
            b.push(&quiver_batch::NewRecord::value(&b"v"[..], 1));
        }
        let mut bytes = b.build();
        quiver_batch::header::stamp_base_offset(&mut bytes, base_offset);
        BatchHeader::parse(&bytes).unwrap()
    }

    #[test]
    fn next_batches_append_retries_are_duplicates_gaps_and_old_epochs_are_refused() {
        let mut s = ProducerStates::new(ProducerLimits::default());
        // A producer unknown here starts at sequence 0 (a later batch that overtook its
        // first is refused, and sent again after it).
        assert!(s.check(&header(7, 0, 3, 1, -1)).is_err());
        let first = header(7, 0, 0, 3, 100);
        assert_eq!(s.check(&first), Ok(Verdict::Append));
        s.record(&first, None, 0);
        // The retry of the first batch: its offsets, nothing appended.
        assert_eq!(
            s.check(&header(7, 0, 0, 3, -1)),
            Ok(Verdict::Duplicate(WrittenBatch {
                first_sequence: 0,
                last_sequence: 2,
                base_offset: 100,
                last_offset: 102
            }))
        );
        assert_eq!(s.check(&header(7, 0, 3, 1, -1)), Ok(Verdict::Append));
        assert_eq!(
            s.check(&header(7, 0, 5, 1, -1)),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: 7,
                expected: 3,
                got: 5
            })
        );
        // A new epoch starts at 0; then the old epoch is fenced.
        assert!(s.check(&header(7, 1, 4, 1, -1)).is_err());
        let reborn = header(7, 1, 0, 1, 103);
        assert_eq!(s.check(&reborn), Ok(Verdict::Append));
        s.record(&reborn, None, 1);
        assert!(matches!(
            s.check(&header(7, 0, 3, 1, -1)),
            Err(ProducerError::ProducerFenced {
                got: 0,
                current: 1,
                ..
            })
        ));
        // Not idempotent: always appended.
        assert_eq!(s.check(&header(-1, -1, -1, 1, -1)), Ok(Verdict::Append));
    }

    #[test]
    fn the_window_is_bounded_sequences_wrap_and_producers_expire() {
        let mut s = ProducerStates::new(ProducerLimits {
            window: 2,
            max_producers: 2,
            expiration_ms: 1_000,
        });
        for (i, seq) in [0, 1, 2].into_iter().enumerate() {
            s.record(&header(1, 0, seq, 1, i as i64), None, 0);
        }
        // Batch 0 left the window: it is neither a duplicate nor the next one.
        assert!(s.check(&header(1, 0, 0, 1, -1)).is_err());
        assert!(matches!(
            s.check(&header(1, 0, 2, 1, -1)),
            Ok(Verdict::Duplicate(_))
        ));
        // Wrapping: after i32::MAX comes 0.
        s.record(&header(2, 0, i32::MAX - 1, 2, 10), None, 500);
        assert_eq!(s.check(&header(2, 0, 0, 1, -1)), Ok(Verdict::Append));
        // A third producer pushes out the idlest (producer 1, seen at 0).
        s.record(&header(3, 0, 0, 1, 20), None, 600);
        assert_eq!(s.len(), 2);
        s.expire(1_550);
        assert_eq!(s.len(), 1, "producer 2 (seen at 500) expired");
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut s = ProducerStates::new(ProducerLimits::default());
        s.record(&header(1, 3, 0, 2, 0), None, 5);
        s.record(&header(9, 0, 7, 1, 2), None, 6);
        let bytes = s.encode();
        assert_eq!(
            ProducerStates::decode(&bytes, ProducerLimits::default()),
            Some(s.clone())
        );
        for cut in 0..bytes.len() {
            assert!(ProducerStates::decode(&bytes[..cut], ProducerLimits::default()).is_none());
        }
        let mut bad = bytes.clone();
        bad[5] ^= 1;
        assert!(ProducerStates::decode(&bad, ProducerLimits::default()).is_none());
    }

    #[test]
    fn truncation_forgets_batches_from_the_cut() {
        let mut s = ProducerStates::new(ProducerLimits::default());
        s.record(&header(1, 0, 0, 1, 10), None, 0);
        s.record(&header(1, 0, 1, 1, 11), None, 0);
        s.truncate_from(11);
        assert_eq!(s.check(&header(1, 0, 1, 1, -1)), Ok(Verdict::Append));
        s.truncate_from(0);
        assert!(s.is_empty());
    }

    fn txn_header(pid: i64, epoch: i16, seq: i32, base_offset: i64) -> BatchHeader {
        let mut b = quiver_batch::BatchBuilder::new()
            .producer(pid, epoch, seq)
            .transactional();
        b.push(&quiver_batch::NewRecord::value(&b"v"[..], 1));
        let mut bytes = b.build();
        quiver_batch::header::stamp_base_offset(&mut bytes, base_offset);
        BatchHeader::parse(&bytes).unwrap()
    }

    fn marker(pid: i64, epoch: i16, kind: ControlKind, base_offset: i64) -> (BatchHeader, Vec<u8>) {
        let mut bytes = quiver_batch::control::marker(pid, epoch, kind, 1);
        quiver_batch::header::stamp_base_offset(&mut bytes, base_offset);
        (BatchHeader::parse(&bytes).unwrap(), bytes.to_vec())
    }

    #[test]
    fn transactions_hold_the_last_stable_offset_and_aborts_are_indexed() {
        let mut s = ProducerStates::new(ProducerLimits::default());
        let first = txn_header(1, 0, 0, 10);
        assert!(s.opens_transaction(&first));
        s.record(&first, None, 0);
        assert!(!s.opens_transaction(&txn_header(1, 0, 1, -1)));
        s.record(&header(2, 0, 0, 1, 11), None, 0);
        s.record(&txn_header(3, 5, 0, 12), None, 0);
        assert_eq!(s.last_stable_offset(20), 10);
        // Producer 1 aborts (marker at epoch 1): its range is indexed, the LSO moves to 12.
        let (h, bytes) = marker(1, 1, ControlKind::Abort, 13);
        s.record_batch(&h, &bytes, 0);
        assert_eq!(s.last_stable_offset(20), 12);
        assert_eq!(
            s.aborted_between(0, 20),
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 13
            }]
        );
        assert!(s.aborted_between(14, 20).is_empty());
        // The ended epoch is fenced: a delayed write of the aborted transaction is refused.
        assert!(matches!(
            s.check(&txn_header(1, 0, 1, -1)),
            Err(ProducerError::ProducerFenced { .. })
        ));
        // The next transaction starts at sequence 0 of the marker's epoch.
        assert_eq!(s.check(&txn_header(1, 1, 0, -1)), Ok(Verdict::Append));
        let snap = ProducerStates::decode(&s.encode(), ProducerLimits::default()).unwrap();
        assert_eq!(snap, s);
        let (h, bytes) = marker(3, 6, ControlKind::Commit, 14);
        s.record_batch(&h, &bytes, 0);
        assert_eq!(s.last_stable_offset(20), 20);
        assert_eq!(s.aborted_between(0, 20).len(), 1, "a commit is not indexed");
        s.forget_aborted_below(14);
        assert!(s.aborted_between(0, 20).is_empty());
    }

    #[test]
    fn an_abort_marker_cut_away_reopens_its_transaction_and_the_next_one_indexes_it() {
        let mut s = ProducerStates::new(ProducerLimits::default());
        s.record(&txn_header(1, 0, 0, 10), None, 0);
        s.record(&txn_header(1, 0, 1, 11), None, 0);
        let (h, bytes) = marker(1, 1, ControlKind::Abort, 12);
        s.record_batch(&h, &bytes, 0);
        assert_eq!(s.last_stable_offset(20), 20);
        // A replica's diverged tail: the marker is cut, the transaction's batches stay.
        s.truncate_from(12);
        assert_eq!(s.last_stable_offset(20), 10, "open again: it holds the LSO");
        assert!(s.aborted_between(0, 20).is_empty());
        // The new leader's marker (the coordinator writes it again) indexes the range.
        let (h, bytes) = marker(1, 1, ControlKind::Abort, 12);
        s.record_batch(&h, &bytes, 0);
        assert_eq!(
            s.aborted_between(0, 20),
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 12
            }]
        );
        assert_eq!(s.last_stable_offset(20), 20);
        // A cut through the transaction itself forgets it.
        s.truncate_from(10);
        assert_eq!(s.last_stable_offset(20), 20);
        assert!(s.aborted_between(0, 20).is_empty());
    }

    #[test]
    fn a_retried_or_delayed_marker_is_superseded_and_never_closes_the_next_transaction() {
        let mut s = ProducerStates::new(ProducerLimits::default());
        s.record(&txn_header(1, 0, 0, 10), None, 0);
        let (h, bytes) = marker(1, 1, ControlKind::Abort, 11);
        assert_eq!(s.check(&h), Ok(Verdict::Append));
        s.record_batch(&h, &bytes, 0);
        // The same marker again (the coordinator's retry): its transaction is marked.
        let superseded = Err(ProducerError::MarkerSuperseded {
            producer_id: 1,
            got: 1,
            current: 1,
        });
        assert_eq!(s.check(&h), superseded);
        // The next transaction writes at the marker's epoch; the first marker, delayed past
        // it (a node call answered late), must not close it: refused, it stays open.
        s.record(&txn_header(1, 1, 0, 12), None, 0);
        assert_eq!(s.check(&h), superseded);
        assert_eq!(s.last_stable_offset(20), 12);
        // Its own marker (epoch 2) closes it, and indexes its abort.
        let (h2, bytes2) = marker(1, 2, ControlKind::Abort, 13);
        assert_eq!(s.check(&h2), Ok(Verdict::Append));
        s.record_batch(&h2, &bytes2, 0);
        assert_eq!(s.last_stable_offset(20), 20);
        assert_eq!(s.aborted_between(12, 20).len(), 1);
    }

    #[test]
    fn a_commit_marker_cut_away_is_undone_and_taken_again() {
        let mut s = ProducerStates::new(ProducerLimits::default());
        s.record(&txn_header(1, 3, 0, 10), None, 0);
        let (h, bytes) = marker(1, 4, ControlKind::Commit, 11);
        s.record_batch(&h, &bytes, 0);
        let snap = ProducerStates::decode(&s.encode(), ProducerLimits::default()).unwrap();
        assert_eq!(snap, s, "the last marker is in the snapshot");
        for mut s in [s, snap] {
            s.truncate_from(11);
            // Open again at the epoch before the marker: the new leader's marker is taken.
            assert_eq!(s.last_stable_offset(20), 10);
            assert_eq!(s.check(&h), Ok(Verdict::Append));
            s.record_batch(&h, &bytes, 0);
            assert_eq!(s.last_stable_offset(20), 20);
            assert!(s.aborted_between(0, 20).is_empty());
        }
    }

    #[test]
    fn a_version_2_snapshot_still_reads() {
        let mut s = ProducerStates::new(ProducerLimits::default());
        s.record(&txn_header(4, 2, 0, 7), None, 9);
        // QPS2: the same layout without the three marker fields (none recorded here).
        let v3 = s.encode();
        let body = &v3[4..v3.len() - 4];
        let mut v2 = b"QPS2".to_vec();
        // count, then id, epoch, last_seen_ms, open first offset (4 + 8 + 2 + 8 + 8 bytes).
        v2.extend_from_slice(&body[..30]);
        v2.extend_from_slice(&body[30 + 18..]);
        let crc = crc32c::crc32c(&v2);
        v2.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(
            ProducerStates::decode(&v2, ProducerLimits::default()),
            Some(s)
        );
    }
}
