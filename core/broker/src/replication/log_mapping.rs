//! How a replicated partition's Raft log lies in its segment log (sans-IO; decision 0027).
//!
//! - **Indexes and offsets**: Raft index `i` is Kafka offset `i - 1` (Raft's index 0 is the
//!   empty log). An entry is one RecordBatch spanning as many indexes as it has offsets
//!   (`last_offset_delta + 1`). So the log end offset *is* the last index, the log start
//!   offset *is* the snapshot index, and the high watermark *is* the commit index.
//! - **Terms are leader epochs**: each batch carries its entry's term as its partition leader
//!   epoch; the leader-epoch map (epoch → start offset) gives the core the terms of entries it
//!   no longer holds in memory.
//! - **Entries that are not records** — a new leader's first entry, a membership — are
//!   control batches of one offset (record types [`LEADER_CHANGE`] and [`MEMBERSHIP`], as
//!   KRaft's), which consumers skip like transaction markers.
//!
//! [`plan_persist`] turns the core's `PersistEntries` into a truncation and the appends,
//! each with the base offset the log must give it; [`entry_of_batch`] reads a stored batch
//! back as the entry it was ([`Action::ReadEntries`](quiver_raft::Action)); [`restored_log`]
//! rebuilds the core's view of a log from the partition's marks after a restart.

use bytes::{Bytes, BytesMut};
use quiver_batch::control::{raft_control, raft_control_record, LEADER_CHANGE, MEMBERSHIP};
use quiver_batch::header::{stamp_base_offset, stamp_leader_epoch};
use quiver_batch::BatchHeader;
use quiver_raft::log::RaftLog;
use quiver_raft::{Entry, Membership, Payload, Snapshot};
use quiver_storage::epoch::EpochEntry;

/// Members listed in one membership batch, at most (as the Raft codec's bound).
pub const MAX_MEMBERS: usize = 64;

/// Why an entry or a stored batch does not fit the mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("entries from index {first_index} cannot follow a log ending at offset {log_end}: a gap would lose offsets")]
    Gap { first_index: u64, log_end: u64 },
    #[error("index 0 holds no entry")]
    IndexZero,
    #[error("a batch spanning {batch} offsets cannot be an entry spanning {entry}")]
    SpanMismatch { batch: u64, entry: u64 },
    #[error("term {0} does not fit a partition leader epoch (i32)")]
    TermTooLarge(u64),
    #[error("not a RecordBatch: {0}")]
    NotABatch(String),
    #[error("malformed membership batch: {0}")]
    Membership(String),
}

/// Offset of the record at Raft index `index` (≥ 1).
pub fn offset_of(index: u64) -> Result<u64, MappingError> {
    index.checked_sub(1).ok_or(MappingError::IndexZero)
}

/// One append of a plan: `batch`, which the log must place at `base_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAppend {
    pub base_offset: u64,
    pub leader_epoch: i32,
    pub batch: BytesMut,
}

/// What storage does for one `PersistEntries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistPlan {
    /// First drop every batch at or after this offset (a follower's diverged tail).
    pub truncate_to: Option<u64>,
    pub appends: Vec<PlannedAppend>,
}

fn epoch_of(term: u64) -> Result<i32, MappingError> {
    i32::try_from(term).map_err(|_| MappingError::TermTooLarge(term))
}

/// The bytes of a membership control record's value.
pub fn encode_membership(m: &Membership) -> Vec<u8> {
    let mut out = vec![0u8];
    for set in [&m.voters, &m.learners] {
        out.extend_from_slice(&(set.len() as u16).to_be_bytes());
        for id in set.iter() {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out
}

pub fn decode_membership(bytes: &[u8]) -> Result<Membership, MappingError> {
    let bad = |why: &str| MappingError::Membership(why.to_string());
    let (&version, mut rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
    if version != 0 {
        return Err(bad("unknown version"));
    }
    let mut m = Membership::default();
    for learners in [false, true] {
        let (n, r) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| bad("no count"))?;
        let n = usize::from(u16::from_be_bytes(*n));
        if n > MAX_MEMBERS {
            return Err(bad("too many members"));
        }
        rest = r;
        for _ in 0..n {
            let (id, r) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| bad("cut short"))?;
            rest = r;
            let id = u64::from_be_bytes(*id);
            if learners {
                m.learners.insert(id);
            } else {
                m.voters.insert(id);
            }
        }
    }
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(m)
}

/// The batch that stores `entry` at `base_offset`, stamped with its offsets and term.
/// Record batches keep their bytes (CRC-32C covers neither field, as in Kafka).
pub fn batch_of_entry(
    entry: &Entry,
    base_offset: u64,
    now_ms: i64,
) -> Result<PlannedAppend, MappingError> {
    let leader_epoch = epoch_of(entry.term)?;
    let mut batch = match &entry.payload {
        Payload::Empty => raft_control(LEADER_CHANGE, &[], now_ms),
        Payload::Membership(m) => raft_control(MEMBERSHIP, &encode_membership(m), now_ms),
        Payload::Data(bytes) => BytesMut::from(&bytes[..]),
    };
    let header = BatchHeader::parse(&batch).map_err(|e| MappingError::NotABatch(e.to_string()))?;
    let span = u64::try_from(header.last_offset_delta)
        .map_err(|_| MappingError::NotABatch("negative last offset delta".into()))?
        + 1;
    if span != entry.span {
        return Err(MappingError::SpanMismatch {
            batch: span,
            entry: entry.span,
        });
    }
    let base = i64::try_from(base_offset)
        .map_err(|_| MappingError::NotABatch("offset past i64".into()))?;
    stamp_base_offset(&mut batch, base);
    stamp_leader_epoch(&mut batch, leader_epoch);
    Ok(PlannedAppend {
        base_offset,
        leader_epoch,
        batch,
    })
}

/// Plans `PersistEntries { first_index, entries }` on a log ending at `log_end_offset`.
pub fn plan_persist(
    log_end_offset: u64,
    first_index: u64,
    entries: &[Entry],
    now_ms: i64,
) -> Result<PersistPlan, MappingError> {
    let first_offset = offset_of(first_index)?;
    if first_offset > log_end_offset {
        return Err(MappingError::Gap {
            first_index,
            log_end: log_end_offset,
        });
    }
    let mut base = first_offset;
    let mut appends = Vec::with_capacity(entries.len());
    for e in entries {
        appends.push(batch_of_entry(e, base, now_ms)?);
        base += e.span;
    }
    Ok(PersistPlan {
        truncate_to: (first_offset < log_end_offset).then_some(first_offset),
        appends,
    })
}

/// A stored batch as the entry it was (for a lagging follower): its term is its leader
/// epoch, its span its offsets; Raft's own control batches come back as what they held.
/// Record bytes come back stamped (base offset, leader epoch): a follower stamps them again
/// where it stores them, so only the bytes after those fields are the entry's own.
pub fn entry_of_batch(batch: Bytes) -> Result<Entry, MappingError> {
    let header = BatchHeader::parse(&batch).map_err(|e| MappingError::NotABatch(e.to_string()))?;
    let term = u64::try_from(header.partition_leader_epoch)
        .map_err(|_| MappingError::NotABatch("negative leader epoch".into()))?;
    let span = u64::try_from(header.last_offset_delta)
        .map_err(|_| MappingError::NotABatch("negative last offset delta".into()))?
        + 1;
    let payload = match raft_control_record(&batch) {
        Some((LEADER_CHANGE, _)) => Payload::Empty,
        Some((MEMBERSHIP, value)) => Payload::Membership(decode_membership(&value)?),
        _ => Payload::Data(batch.to_vec()),
    };
    Ok(Entry {
        term,
        span,
        payload,
    })
}

/// The core's view of a partition log after a restart: the snapshot at its log start, the
/// terms from the leader-epoch map (an epoch that began before the log start is taken to
/// begin at it, as retention's `truncate_from_start` does), `membership` (in force at the
/// log start), the membership entries after it (`memberships`) and its end; entries are
/// read back on demand.
pub fn restored_log(
    log_start_offset: u64,
    log_end_offset: u64,
    epochs: &[EpochEntry],
    membership: Membership,
    memberships: Vec<(u64, Membership)>,
) -> RaftLog {
    let epoch_at = |offset: u64| {
        epochs
            .iter()
            .rev()
            .find(|e| e.epoch >= 0 && e.start_offset <= offset)
            .map_or(0, |e| e.epoch as u64)
    };
    let snapshot = Snapshot {
        index: log_start_offset,
        // The term of the entry just before the log start (index = offset + 1). Retention
        // clamps the epoch in force to begin at the log start: then that epoch, which wrote
        // the entries on both sides of it.
        term: log_start_offset
            .checked_sub(1)
            .map_or(0, |last| match epoch_at(last) {
                // The first epoch in force at the start (a reset records the snapshot's term
                // there, and the next leader's epoch may begin at the same offset).
                0 => epochs
                    .iter()
                    .find(|e| e.epoch >= 0 && e.start_offset <= log_start_offset)
                    .map_or(0, |e| e.epoch as u64),
                t => t,
            }),
        membership,
        data: Vec::new(),
    };
    let mut terms: Vec<(u64, u64)> = Vec::new();
    for e in epochs.iter().filter(|e| e.epoch >= 0) {
        let start = (e.start_offset + 1).max(log_start_offset + 1);
        if terms.last().is_some_and(|(_, s)| *s == start) {
            terms.pop();
        }
        terms.push((e.epoch as u64, start));
    }
    RaftLog::restore(snapshot, terms, memberships, log_end_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_batch::{BatchBuilder, NewRecord};

    fn records(n: usize) -> Bytes {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(&NewRecord {
                key: None,
                value: Some(Bytes::from(format!("r{i}"))),
                headers: vec![],
                timestamp_ms: 1,
            });
        }
        b.build().freeze()
    }

    fn data(term: u64, n: usize) -> Entry {
        Entry {
            term,
            span: n as u64,
            payload: Payload::Data(records(n).to_vec()),
        }
    }

    #[test]
    fn entries_land_at_the_offsets_their_indexes_name() {
        let entries = vec![
            Entry {
                term: 3,
                span: 1,
                payload: Payload::Empty,
            },
            data(3, 5),
            data(3, 2),
        ];
        // Index 11 is offset 10: appended right at the end of a 10-offset log.
        let plan = plan_persist(10, 11, &entries, 0).unwrap();
        assert_eq!(plan.truncate_to, None);
        let bases: Vec<u64> = plan.appends.iter().map(|a| a.base_offset).collect();
        assert_eq!(bases, vec![10, 11, 16]);
        for (a, e) in plan.appends.iter().zip(&entries) {
            let h = BatchHeader::parse(&a.batch).unwrap();
            assert_eq!(h.base_offset as u64, a.base_offset);
            assert_eq!(h.partition_leader_epoch, 3);
            assert_eq!(h.last_offset_delta as u64 + 1, e.span);
            assert_eq!(
                h.crc,
                quiver_batch::header::compute_crc(&a.batch),
                "CRC still valid"
            );
            // And read back, each batch is the entry it stores (its bytes past the two
            // stamped fields: base offset and leader epoch).
            let back = entry_of_batch(a.batch.clone().freeze()).unwrap();
            assert_eq!((back.term, back.span), (e.term, e.span));
            match (&back.payload, &e.payload) {
                (Payload::Data(b), Payload::Data(d)) => assert_eq!(b[16..], d[16..]),
                (b, d) => assert_eq!(b, d),
            }
        }
    }

    #[test]
    fn a_diverged_tail_is_truncated_and_a_gap_refused() {
        let plan = plan_persist(20, 16, &[data(4, 2)], 0).unwrap();
        assert_eq!(
            plan.truncate_to,
            Some(15),
            "offsets 15.. go, the new entry takes 15"
        );
        assert_eq!(plan.appends[0].base_offset, 15);
        assert_eq!(
            plan_persist(20, 22, &[data(4, 1)], 0),
            Err(MappingError::Gap {
                first_index: 22,
                log_end: 20
            })
        );
        assert_eq!(plan_persist(0, 0, &[], 0), Err(MappingError::IndexZero));
    }

    #[test]
    fn an_entry_whose_batch_has_another_span_is_refused() {
        let mut e = data(1, 3);
        e.span = 4;
        assert_eq!(
            plan_persist(0, 1, &[e], 0).unwrap_err(),
            MappingError::SpanMismatch { batch: 3, entry: 4 }
        );
        let big = Entry {
            term: u64::from(u32::MAX),
            span: 1,
            payload: Payload::Empty,
        };
        assert!(matches!(
            plan_persist(0, 1, &[big], 0),
            Err(MappingError::TermTooLarge(_))
        ));
    }

    #[test]
    fn membership_round_trips_and_bad_bytes_are_typed_errors() {
        let m = Membership {
            voters: [1, 2, 3].into_iter().collect(),
            learners: [4].into_iter().collect(),
        };
        assert_eq!(decode_membership(&encode_membership(&m)).unwrap(), m);
        let bytes = encode_membership(&m);
        for cut in 0..bytes.len() {
            assert!(decode_membership(&bytes[..cut]).is_err());
        }
        let e = Entry {
            term: 2,
            span: 1,
            payload: Payload::Membership(m),
        };
        let a = batch_of_entry(&e, 7, 0).unwrap();
        assert_eq!(entry_of_batch(a.batch.freeze()).unwrap(), e);
    }

    #[test]
    fn a_restored_log_knows_its_ends_and_the_terms_of_every_offset() {
        let epochs = [
            EpochEntry {
                epoch: 1,
                start_offset: 0,
            },
            EpochEntry {
                epoch: 4,
                start_offset: 30,
            },
        ];
        let log = restored_log(
            10,
            50,
            &epochs,
            Membership::of_voters(&[1, 2, 3]),
            Vec::new(),
        );
        assert_eq!(log.snapshot().index, 10, "log start = snapshot index");
        assert_eq!(log.snapshot().term, 1, "offset 9 was written in epoch 1");
        assert_eq!(log.last_index(), 50, "log end = last index");
        assert_eq!(log.term_at(11), Some(1), "offset 10 was written in epoch 1");
        assert_eq!(log.term_at(30), Some(1), "offset 29 too");
        assert_eq!(log.term_at(31), Some(4), "offset 30 began epoch 4");
        assert_eq!(log.term_at(50), Some(4));
    }
}
