//! The records of `__transaction_state`: one key per transactional id, the latest value
//! wins, a tombstone (no value) forgets the id, so the topic can be compacted.
//!
//! Key: `u16 kind` (1), `string transactional id`. Value: `u16 version` (0), `i64 producer
//! id`, `i16 epoch`, `u32 timeout ms`, `u8 status`, `i64 started ms`, `i64 updated ms`,
//! `i64 marker producer id`, `i16 marker epoch`, `u8 has last end` [`i64 producer id`,
//! `i16 epoch`, `u8 committed`, `u8 timed out`], `u32 partitions` × (`string topic`, `i32
//! partition`), `u32 groups` × (`string group`, `u32 offsets` × (`string topic`, `i32
//! partition`, `i64 offset`, `string metadata`)). Strings are `u16 length + UTF-8`. Decoding
//! checks every length against what is left: a corrupt record is a [`DecodeError`].

use std::collections::BTreeSet;

use crate::types::{Ended, GroupOffsets, Status, TopicPartition, Transaction};

const KIND_TXN: u16 = 1;
const VALUE_VERSION: u16 = 0;

/// One state change: a transactional id's new state, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub transactional_id: String,
    pub value: Option<Transaction>,
}

/// A record this node cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable {what} in a {TOPIC} record", TOPIC = crate::TXN_TOPIC)]
pub struct DecodeError {
    pub what: &'static str,
}

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        // Every string is bounded far below 64 KiB by the coordinator's limits.
        let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.u16(s.len() as u16);
        self.0.extend_from_slice(s);
    }
}

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError { what })?;
        self.0 = tail;
        Ok(*head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(what)?))
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(what)?))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(what)?))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(what)?))
    }
    fn str(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = usize::from(self.u16(what)?);
        if n > self.0.len() {
            return Err(DecodeError { what });
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError { what })
    }
    /// A list count, bounded by the bytes left (each item takes at least `min_item` bytes).
    fn count(&mut self, what: &'static str, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > self.0.len() / min_item.max(1) {
            return Err(DecodeError { what });
        }
        Ok(n)
    }
}

impl Record {
    /// `(key, value)`; no value is a tombstone.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut key = Out(Vec::with_capacity(4 + self.transactional_id.len()));
        key.u16(KIND_TXN);
        key.str(&self.transactional_id);
        let value = self.value.as_ref().map(|t| {
            let mut v = Out(Vec::with_capacity(96));
            v.u16(VALUE_VERSION);
            v.i64(t.producer_id);
            v.i16(t.epoch);
            v.u32(t.timeout_ms);
            v.u8(t.status.code());
            v.i64(t.started_ms);
            v.i64(t.updated_ms);
            v.i64(t.marker_producer.0);
            v.i16(t.marker_producer.1);
            match t.last_end {
                None => v.u8(0),
                Some(e) => {
                    v.u8(1);
                    v.i64(e.producer_id);
                    v.i16(e.epoch);
                    v.u8(u8::from(e.committed));
                    v.u8(u8::from(e.timed_out));
                }
            }
            v.u32(t.partitions.len() as u32);
            for tp in &t.partitions {
                v.str(&tp.topic);
                v.i32(tp.partition);
            }
            v.u32(t.offsets.len() as u32);
            for g in &t.offsets {
                v.str(&g.group);
                v.u32(g.offsets.len() as u32);
                for (tp, offset, metadata) in &g.offsets {
                    v.str(&tp.topic);
                    v.i32(tp.partition);
                    v.i64(*offset);
                    v.str(metadata);
                }
            }
            v.0
        });
        (key.0, value)
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, DecodeError> {
        let mut k = In(key);
        if k.u16("key kind")? != KIND_TXN {
            return Err(DecodeError { what: "key kind" });
        }
        let transactional_id = k.str("transactional id")?;
        let Some(value) = value else {
            return Ok(Self {
                transactional_id,
                value: None,
            });
        };
        let mut v = In(value);
        if v.u16("value version")? != VALUE_VERSION {
            return Err(DecodeError {
                what: "value version",
            });
        }
        let producer_id = v.i64("producer id")?;
        let epoch = v.i16("epoch")?;
        let timeout_ms = v.u32("timeout")?;
        let status = Status::from_code(v.u8("status")?).ok_or(DecodeError { what: "status" })?;
        let started_ms = v.i64("start time")?;
        let updated_ms = v.i64("update time")?;
        let marker_producer = (v.i64("marker producer")?, v.i16("marker epoch")?);
        let last_end = match v.u8("last end")? {
            0 => None,
            _ => Some(Ended {
                producer_id: v.i64("last end producer")?,
                epoch: v.i16("last end epoch")?,
                committed: v.u8("last end kind")? != 0,
                timed_out: v.u8("last end timeout")? != 0,
            }),
        };
        let mut partitions = BTreeSet::new();
        for _ in 0..v.count("partitions", 6)? {
            partitions.insert(TopicPartition::new(v.str("topic")?, v.i32("partition")?));
        }
        let mut offsets = Vec::new();
        for _ in 0..v.count("groups", 6)? {
            let group = v.str("group")?;
            let n = v.count("offsets", 16)?;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                let tp = TopicPartition::new(v.str("topic")?, v.i32("partition")?);
                list.push((tp, v.i64("offset")?, v.str("metadata")?));
            }
            offsets.push(GroupOffsets {
                group,
                offsets: list,
            });
        }
        if !v.0.is_empty() {
            return Err(DecodeError {
                what: "trailing bytes",
            });
        }
        Ok(Self {
            transactional_id,
            value: Some(Transaction {
                producer_id,
                epoch,
                timeout_ms,
                status,
                partitions,
                offsets,
                started_ms,
                updated_ms,
                marker_producer,
                last_end,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_every_cut_is_an_error() {
        let t = Transaction {
            producer_id: 42,
            epoch: 7,
            timeout_ms: 60_000,
            status: Status::PrepareCommit,
            partitions: [TopicPartition::new("out", 3), TopicPartition::new("b", 0)].into(),
            offsets: vec![GroupOffsets {
                group: "g".into(),
                offsets: vec![(TopicPartition::new("in", 1), 99, "m".into())],
            }],
            started_ms: 1,
            updated_ms: 2,
            marker_producer: (42, 8),
            last_end: Some(Ended {
                producer_id: 42,
                epoch: 6,
                committed: true,
                timed_out: false,
            }),
        };
        let r = Record {
            transactional_id: "tx-1".into(),
            value: Some(t),
        };
        let (k, v) = r.encode();
        assert_eq!(Record::decode(&k, v.as_deref()), Ok(r.clone()));
        let v = v.unwrap();
        for cut in 0..v.len() {
            assert!(Record::decode(&k, Some(&v[..cut])).is_err());
        }
        let tomb = Record {
            transactional_id: "tx-1".into(),
            value: None,
        };
        let (k, v) = tomb.encode();
        assert_eq!(Record::decode(&k, v.as_deref()), Ok(tomb));
        assert!(Record::decode(&k[..k.len() - 1], None).is_err());
    }
}
