//! The records of `__consumer_offsets`: one key per piece of state, the latest value per key
//! wins, and a tombstone (no value) removes it, so the topic can be compacted (Kafka's layout,
//! simplified: one member record holds its subscription and its current assignment).
//!
//! Key: `u16 kind`, then the kind's fields. Value: `u16 version` (now 0), then fields.
//! Strings are `u16 length + UTF-8`; lists are `u32 count + items`. Decoding checks every
//! length against what is left: a corrupt record is a typed [`DecodeError`], never a panic.

use std::collections::BTreeSet;

use crate::types::{Assignment, AssignorKind, CommittedOffset, GroupConfig, TopicPartition};

const KIND_OFFSET: u16 = 1;
const KIND_GROUP: u16 = 2;
const KIND_MEMBER: u16 = 3;
const KIND_TARGET: u16 = 4;
const KIND_DELIVERY: u16 = 5;
const KIND_TXN_OFFSETS: u16 = 6;
const VALUE_VERSION: u16 = 0;

/// A group's epoch and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    /// Bumped at every change of membership, subscriptions or subscribed partition counts.
    pub epoch: i32,
    pub config: GroupConfig,
    /// The partition counts of the subscribed topics the epoch was computed with.
    pub topic_counts: Vec<(String, i32)>,
}

/// One member: who it is, what it subscribes to, and where its reconciliation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub subscribed: BTreeSet<String>,
    pub rebalance_timeout_ms: u32,
    pub member_epoch: i32,
    pub previous_epoch: i32,
    /// What it may consume now.
    pub assigned: Assignment,
    /// What it must give up before others get it.
    pub revoking: Assignment,
    /// A static member that left (epoch -2): kept, with its partitions, for its session.
    pub left_static: bool,
}

/// The target assignment at an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetValue {
    pub epoch: i32,
    pub members: Vec<(String, Assignment)>,
}

/// A record a member failed (`nack`): how often it was delivered, why it failed, and once
/// the coordinator decided to dead-letter it, where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryValue {
    pub deliveries: u32,
    /// When the first `nack` came (ms since the epoch, the coordinator's clock).
    pub first_failure_ms: i64,
    pub last_error: String,
    /// Being moved: the dead-letter partition, and its end offset before the move (a retry
    /// looks for an earlier copy from there, so the move is written once).
    pub moving: Option<(i32, i64)>,
}

/// The last transaction of one transactional id whose offsets the group took (see
/// [`crate::types::TxnStamp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOffsetsValue {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit_time_ms: i64,
}

/// One state change of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Offset {
        group: String,
        tp: TopicPartition,
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
    Member {
        group: String,
        member_id: String,
        value: Option<MemberValue>,
    },
    Target {
        group: String,
        value: Option<TargetValue>,
    },
    Delivery {
        group: String,
        tp: TopicPartition,
        offset: i64,
        value: Option<DeliveryValue>,
    },
    TxnOffsets {
        group: String,
        transactional_id: String,
        value: Option<TxnOffsetsValue>,
    },
}

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt __consumer_offsets record: {0}")]
pub struct DecodeError(pub String);

impl Record {
    pub fn group(&self) -> &str {
        match self {
            Self::Offset { group, .. }
            | Self::Group { group, .. }
            | Self::Member { group, .. }
            | Self::Target { group, .. }
            | Self::Delivery { group, .. }
            | Self::TxnOffsets { group, .. } => group,
        }
    }

    /// The record's key and value (`None`: a tombstone).
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut k = Vec::new();
        let mut v = Vec::new();
        let has_value = match self {
            Self::Offset { group, tp, value } => {
                put_u16(&mut k, KIND_OFFSET);
                put_str(&mut k, group);
                put_str(&mut k, &tp.topic);
                put_i32(&mut k, tp.partition);
                value.as_ref().map(|o| {
                    put_u16(&mut v, VALUE_VERSION);
                    put_i64(&mut v, o.offset);
                    put_str(&mut v, &o.metadata);
                    put_i64(&mut v, o.commit_time_ms);
                })
            }
            Self::Group { group, value } => {
                put_u16(&mut k, KIND_GROUP);
                put_str(&mut k, group);
                value.as_ref().map(|g| {
                    put_u16(&mut v, VALUE_VERSION);
                    put_i32(&mut v, g.epoch);
                    put_u32(&mut v, g.config.session_timeout_ms);
                    put_u32(&mut v, g.config.heartbeat_interval_ms);
                    put_str(&mut v, g.config.assignor.name());
                    put_u32(&mut v, g.topic_counts.len() as u32);
                    for (t, n) in &g.topic_counts {
                        put_str(&mut v, t);
                        put_i32(&mut v, *n);
                    }
                    // Appended fields (read when present): the failure policy.
                    put_u32(&mut v, g.config.max_deliveries);
                    put_u32(&mut v, g.config.redelivery_backoff_ms.len() as u32);
                    for b in &g.config.redelivery_backoff_ms {
                        put_u32(&mut v, *b);
                    }
                    put_str(&mut v, &g.config.dlq_topic);
                    put_u32(&mut v, g.config.retry_levels);
                })
            }
            Self::Member {
                group,
                member_id,
                value,
            } => {
                put_u16(&mut k, KIND_MEMBER);
                put_str(&mut k, group);
                put_str(&mut k, member_id);
                value.as_ref().map(|m| {
                    put_u16(&mut v, VALUE_VERSION);
                    put_str(&mut v, m.instance_id.as_deref().unwrap_or(""));
                    put_str(&mut v, &m.client_id);
                    put_u32(&mut v, m.subscribed.len() as u32);
                    for t in &m.subscribed {
                        put_str(&mut v, t);
                    }
                    put_u32(&mut v, m.rebalance_timeout_ms);
                    put_i32(&mut v, m.member_epoch);
                    put_i32(&mut v, m.previous_epoch);
                    put_assignment(&mut v, &m.assigned);
                    put_assignment(&mut v, &m.revoking);
                    v.push(u8::from(m.left_static));
                })
            }
            Self::Delivery {
                group,
                tp,
                offset,
                value,
            } => {
                put_u16(&mut k, KIND_DELIVERY);
                put_str(&mut k, group);
                put_str(&mut k, &tp.topic);
                put_i32(&mut k, tp.partition);
                put_i64(&mut k, *offset);
                value.as_ref().map(|d| {
                    put_u16(&mut v, VALUE_VERSION);
                    put_u32(&mut v, d.deliveries);
                    put_i64(&mut v, d.first_failure_ms);
                    put_str(&mut v, &d.last_error);
                    match d.moving {
                        Some((p, from)) => {
                            v.push(1);
                            put_i32(&mut v, p);
                            put_i64(&mut v, from);
                        }
                        None => v.push(0),
                    }
                })
            }
            Self::TxnOffsets {
                group,
                transactional_id,
                value,
            } => {
                put_u16(&mut k, KIND_TXN_OFFSETS);
                put_str(&mut k, group);
                put_str(&mut k, transactional_id);
                value.as_ref().map(|t| {
                    put_u16(&mut v, VALUE_VERSION);
                    put_i64(&mut v, t.producer_id);
                    put_u16(&mut v, t.epoch as u16);
                    put_i64(&mut v, t.commit_time_ms);
                })
            }
            Self::Target { group, value } => {
                put_u16(&mut k, KIND_TARGET);
                put_str(&mut k, group);
                value.as_ref().map(|t| {
                    put_u16(&mut v, VALUE_VERSION);
                    put_i32(&mut v, t.epoch);
                    put_u32(&mut v, t.members.len() as u32);
                    for (id, a) in &t.members {
                        put_str(&mut v, id);
                        put_assignment(&mut v, a);
                    }
                })
            }
        };
        (k, has_value.map(|()| v))
    }

    /// Reads a record from its key and value (`None`: a tombstone).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, DecodeError> {
        let mut k = Reader(key);
        let kind = k.u16()?;
        let mut v = match value {
            Some(bytes) => {
                let mut r = Reader(bytes);
                let version = r.u16()?;
                if version != VALUE_VERSION {
                    return Err(DecodeError(format!(
                        "value version {version} (this node reads {VALUE_VERSION}); upgrade the node"
                    )));
                }
                Some(r)
            }
            None => None,
        };
        let record = match kind {
            KIND_OFFSET => {
                let group = k.string()?;
                let tp = TopicPartition::new(k.string()?, k.i32()?);
                let value = match v.as_mut() {
                    Some(r) => Some(CommittedOffset {
                        offset: r.i64()?,
                        metadata: r.string()?,
                        commit_time_ms: r.i64()?,
                    }),
                    None => None,
                };
                Self::Offset { group, tp, value }
            }
            KIND_GROUP => {
                let group = k.string()?;
                let value = match v.as_mut() {
                    Some(r) => {
                        let epoch = r.i32()?;
                        let session_timeout_ms = r.u32()?;
                        let heartbeat_interval_ms = r.u32()?;
                        let name = r.string()?;
                        let assignor = AssignorKind::parse(&name)
                            .ok_or_else(|| DecodeError(format!("unknown assignor {name:?}")))?;
                        let n = r.count()?;
                        let mut topic_counts = Vec::new();
                        for _ in 0..n {
                            topic_counts.push((r.string()?, r.i32()?));
                        }
                        let mut config = GroupConfig {
                            session_timeout_ms,
                            heartbeat_interval_ms,
                            assignor,
                            ..GroupConfig::default()
                        };
                        if !r.0.is_empty() {
                            config.max_deliveries = r.u32()?;
                            let n = r.count()?;
                            config.redelivery_backoff_ms = Vec::with_capacity(n);
                            for _ in 0..n {
                                config.redelivery_backoff_ms.push(r.u32()?);
                            }
                            config.dlq_topic = r.string()?;
                            if !r.0.is_empty() {
                                config.retry_levels = r.u32()?;
                            }
                        }
                        Some(GroupValue {
                            epoch,
                            config,
                            topic_counts,
                        })
                    }
                    None => None,
                };
                Self::Group { group, value }
            }
            KIND_MEMBER => {
                let group = k.string()?;
                let member_id = k.string()?;
                let value = match v.as_mut() {
                    Some(r) => {
                        let instance = r.string()?;
                        let client_id = r.string()?;
                        let n = r.count()?;
                        let mut subscribed = BTreeSet::new();
                        for _ in 0..n {
                            subscribed.insert(r.string()?);
                        }
                        Some(MemberValue {
                            instance_id: (!instance.is_empty()).then_some(instance),
                            client_id,
                            subscribed,
                            rebalance_timeout_ms: r.u32()?,
                            member_epoch: r.i32()?,
                            previous_epoch: r.i32()?,
                            assigned: r.assignment()?,
                            revoking: r.assignment()?,
                            left_static: r.u8()? != 0,
                        })
                    }
                    None => None,
                };
                Self::Member {
                    group,
                    member_id,
                    value,
                }
            }
            KIND_TARGET => {
                let group = k.string()?;
                let value = match v.as_mut() {
                    Some(r) => {
                        let epoch = r.i32()?;
                        let n = r.count()?;
                        let mut members = Vec::new();
                        for _ in 0..n {
                            members.push((r.string()?, r.assignment()?));
                        }
                        Some(TargetValue { epoch, members })
                    }
                    None => None,
                };
                Self::Target { group, value }
            }
            KIND_DELIVERY => {
                let group = k.string()?;
                let tp = TopicPartition::new(k.string()?, k.i32()?);
                let offset = k.i64()?;
                let value = match v.as_mut() {
                    Some(r) => Some(DeliveryValue {
                        deliveries: r.u32()?,
                        first_failure_ms: r.i64()?,
                        last_error: r.string()?,
                        moving: match r.u8()? {
                            0 => None,
                            _ => Some((r.i32()?, r.i64()?)),
                        },
                    }),
                    None => None,
                };
                Self::Delivery {
                    group,
                    tp,
                    offset,
                    value,
                }
            }
            KIND_TXN_OFFSETS => {
                let group = k.string()?;
                let transactional_id = k.string()?;
                let value = match v.as_mut() {
                    Some(r) => Some(TxnOffsetsValue {
                        producer_id: r.i64()?,
                        epoch: r.u16()? as i16,
                        commit_time_ms: r.i64()?,
                    }),
                    None => None,
                };
                Self::TxnOffsets {
                    group,
                    transactional_id,
                    value,
                }
            }
            other => return Err(DecodeError(format!("unknown record kind {other}"))),
        };
        Ok(record)
    }
}

fn put_u16(b: &mut Vec<u8>, x: u16) {
    b.extend_from_slice(&x.to_be_bytes());
}
fn put_u32(b: &mut Vec<u8>, x: u32) {
    b.extend_from_slice(&x.to_be_bytes());
}
fn put_i32(b: &mut Vec<u8>, x: i32) {
    b.extend_from_slice(&x.to_be_bytes());
}
fn put_i64(b: &mut Vec<u8>, x: i64) {
    b.extend_from_slice(&x.to_be_bytes());
}
/// Strings longer than `u16::MAX` bytes are cut at a character boundary (the coordinator's
/// limits keep every id and metadata string far below it).
fn put_str(b: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_u16(b, end as u16);
    b.extend_from_slice(&s.as_bytes()[..end]);
}
/// Grouped by topic: `u32 topics`, then per topic its name, `u32 count` and partitions.
fn put_assignment(b: &mut Vec<u8>, a: &Assignment) {
    let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
    for tp in a {
        match by_topic.last_mut() {
            Some((t, ps)) if *t == tp.topic => ps.push(tp.partition),
            _ => by_topic.push((&tp.topic, vec![tp.partition])),
        }
    }
    put_u32(b, by_topic.len() as u32);
    for (t, ps) in by_topic {
        put_str(b, t);
        put_u32(b, ps.len() as u32);
        for p in ps {
            put_i32(b, p);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(format!(
                "needs {n} more bytes, {} left",
                self.0.len()
            )));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// A list's count, bounded by the bytes left (every item takes at least 2).
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 2 {
            return Err(DecodeError(format!(
                "a list of {n} items in {} bytes",
                self.0.len()
            )));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("a string is not UTF-8".into()))
    }
    fn assignment(&mut self) -> Result<Assignment, DecodeError> {
        let topics = self.count()?;
        let mut a = Assignment::new();
        for _ in 0..topics {
            let t = self.string()?;
            let n = self.count()?;
            for _ in 0..n {
                a.insert(TopicPartition::new(t.clone(), self.i32()?));
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let a: Assignment = [TopicPartition::new("t", 0), TopicPartition::new("u", 3)]
            .into_iter()
            .collect();
        vec![
            Record::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 1),
                value: Some(CommittedOffset {
                    offset: 42,
                    metadata: "m".into(),
                    commit_time_ms: 7,
                }),
            },
            Record::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 1),
                value: None,
            },
            Record::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    epoch: 3,
                    config: GroupConfig::default(),
                    topic_counts: vec![("t".into(), 4)],
                }),
            },
            Record::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    epoch: 4,
                    config: GroupConfig {
                        max_deliveries: 2,
                        redelivery_backoff_ms: vec![],
                        dlq_topic: "dead".into(),
                        ..GroupConfig::default()
                    },
                    topic_counts: vec![],
                }),
            },
            Record::Delivery {
                group: "g".into(),
                tp: TopicPartition::new("t", 2),
                offset: 77,
                value: Some(DeliveryValue {
                    deliveries: 2,
                    first_failure_ms: 5,
                    last_error: "bad".into(),
                    moving: None,
                }),
            },
            Record::Delivery {
                group: "g".into(),
                tp: TopicPartition::new("t", 2),
                offset: 77,
                value: Some(DeliveryValue {
                    deliveries: 3,
                    first_failure_ms: 5,
                    last_error: "worse".into(),
                    moving: Some((2, 100)),
                }),
            },
            Record::Delivery {
                group: "g".into(),
                tp: TopicPartition::new("t", 2),
                offset: 77,
                value: None,
            },
            Record::TxnOffsets {
                group: "g".into(),
                transactional_id: "tx-1".into(),
                value: Some(TxnOffsetsValue {
                    producer_id: 9,
                    epoch: -2,
                    commit_time_ms: 1_700_000_000_000,
                }),
            },
            Record::TxnOffsets {
                group: "g".into(),
                transactional_id: "tx-1".into(),
                value: None,
            },
            Record::Member {
                group: "g".into(),
                member_id: "m1".into(),
                value: Some(MemberValue {
                    instance_id: Some("i".into()),
                    client_id: "c".into(),
                    subscribed: ["t".to_string()].into_iter().collect(),
                    rebalance_timeout_ms: 9,
                    member_epoch: 3,
                    previous_epoch: 2,
                    assigned: a.clone(),
                    revoking: Assignment::new(),
                    left_static: false,
                }),
            },
            Record::Target {
                group: "g".into(),
                value: Some(TargetValue {
                    epoch: 3,
                    members: vec![("m1".into(), a)],
                }),
            },
            Record::Target {
                group: "g".into(),
                value: None,
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for r in samples() {
            let (k, v) = r.encode();
            assert_eq!(Record::decode(&k, v.as_deref()), Ok(r));
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        for r in samples() {
            let (k, v) = r.encode();
            for cut in 0..k.len() {
                assert!(Record::decode(&k[..cut], v.as_deref()).is_err());
            }
            // A group value written before the failure policy was appended ends there.
            let older_len = match (&r, &v) {
                (Record::Group { value: Some(g), .. }, Some(v)) => Some(
                    v.len()
                        - 12
                        - 4 * g.config.redelivery_backoff_ms.len()
                        - 2
                        - g.config.dlq_topic.len(),
                ),
                _ => None,
            };
            // ... and one written before `retry_levels` was appended ends 4 bytes short.
            let before_retry_len = older_len.and_then(|_| v.as_ref().map(|v| v.len() - 4));
            if let Some(v) = v {
                for cut in 0..v.len() {
                    if Some(cut) == older_len || Some(cut) == before_retry_len {
                        continue;
                    }
                    assert!(
                        Record::decode(&k, Some(&v[..cut])).is_err(),
                        "{r:?} cut at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_group_value_without_the_failure_policy_reads_with_the_defaults() {
        let r = Record::Group {
            group: "g".into(),
            value: Some(GroupValue {
                epoch: 1,
                config: GroupConfig::default(),
                topic_counts: vec![],
            }),
        };
        let (k, v) = r.encode();
        let v = v.expect("a value");
        let d = GroupConfig::default();
        let older = &v[..v.len() - 12 - 4 * d.redelivery_backoff_ms.len() - 2];
        assert_eq!(Record::decode(&k, Some(older)), Ok(r));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(k in proptest::collection::vec(0u8..=255, 0..64),
                                       v in proptest::option::of(proptest::collection::vec(0u8..=255, 0..128))) {
            let _ = Record::decode(&k, v.as_deref());
        }
    }
}
