//! Control batches: the commit and abort markers a transaction coordinator writes to every
//! partition of a transaction (Kafka's layout: one record, key `i16 version (0), i16 type`
//! with 0 = abort and 1 = commit, value `i16 version (0), i32 coordinator epoch`; the batch
//! has the transactional and control bits, the producer's id and epoch, sequence -1).

use bytes::{Bytes, BytesMut};

use crate::builder::{BatchBuilder, NewRecord};
use crate::header::BatchHeader;
use crate::records::RecordIter;

/// What a marker says about the transaction it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Abort,
    Commit,
}

impl ControlKind {
    fn code(self) -> i16 {
        match self {
            Self::Abort => 0,
            Self::Commit => 1,
        }
    }
}

/// A marker batch for `producer_id` at `epoch` (base offset 0: the log stamps it).
pub fn marker(producer_id: i64, epoch: i16, kind: ControlKind, timestamp_ms: i64) -> BytesMut {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.code().to_be_bytes());
    let mut b = BatchBuilder::new()
        .producer(producer_id, epoch, -1)
        .transactional()
        .control();
    b.push(&NewRecord {
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        headers: Vec::new(),
        timestamp_ms,
    });
    b.build()
}

/// The kind of a control batch (`None`: not a control batch, or not a marker this build
/// knows; such batches are kept and skipped by readers).
pub fn marker_kind(batch: &[u8]) -> Option<ControlKind> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() {
        return None;
    }
    let record = RecordIter::new(Bytes::copy_from_slice(batch))
        .ok()?
        .next()?
        .ok()?;
    let key = record.key?;
    let [0, 0, 0, t] = key.get(..4)? else {
        return None;
    };
    match t {
        0 => Some(ControlKind::Abort),
        1 => Some(ControlKind::Commit),
        _ => None,
    }
}

/// Control record type of a replicated partition's leader change (a new leader's first
/// entry in its term), as KRaft numbers its `LeaderChange` record.
pub const LEADER_CHANGE: i16 = 2;
/// Control record type of a replicated partition's membership (voters and learners), as
/// KRaft numbers its `KRaftVoters` record.
pub const MEMBERSHIP: i16 = 6;

/// A non-transactional control batch of one record of `record_type` with `value` (base
/// offset 0: the log stamps it): what a partition's Raft group writes for entries that are
/// not the users' records. Readers skip control batches.
pub fn raft_control(record_type: i16, value: &[u8], timestamp_ms: i64) -> BytesMut {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&record_type.to_be_bytes());
    let mut b = BatchBuilder::new().control();
    b.push(&NewRecord {
        key: Some(Bytes::from(key)),
        value: Some(Bytes::copy_from_slice(value)),
        headers: Vec::new(),
        timestamp_ms,
    });
    b.build()
}

/// The record type and value of a non-transactional control batch (`None`: not one).
pub fn raft_control_record(batch: &[u8]) -> Option<(i16, Bytes)> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() || header.is_transactional() {
        return None;
    }
    let record = RecordIter::new(Bytes::copy_from_slice(batch))
        .ok()?
        .next()?
        .ok()?;
    let key = record.key?;
    let [0, 0, hi, lo] = key.get(..4)? else {
        return None;
    };
    Some((
        i16::from_be_bytes([*hi, *lo]),
        record.value.unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_control_batches_round_trip_and_are_not_markers() {
        let b = raft_control(MEMBERSHIP, b"voters", 5);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.is_control() && !h.is_transactional());
        assert_eq!(h.records_count, 1);
        assert_eq!(
            raft_control_record(&b),
            Some((MEMBERSHIP, Bytes::from_static(b"voters")))
        );
        assert_eq!(
            marker_kind(&b),
            None,
            "never taken for a transaction marker"
        );
        let m = marker(1, 0, ControlKind::Commit, 0);
        assert_eq!(raft_control_record(&m), None);
    }

    #[test]
    fn markers_round_trip_and_carry_the_producer() {
        for kind in [ControlKind::Abort, ControlKind::Commit] {
            let m = marker(42, 7, kind, 1_000);
            let h = BatchHeader::parse(&m).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 7, -1)
            );
            crate::validate_batch(
                &m,
                crate::BatchLimits {
                    max_batch_bytes: 1 << 20,
                },
            )
            .unwrap();
            assert_eq!(marker_kind(&m), Some(kind));
        }
        let plain = BatchBuilder::new().build();
        assert_eq!(marker_kind(&plain), None);
        assert_eq!(marker_kind(&[1, 2, 3]), None);
    }
}
