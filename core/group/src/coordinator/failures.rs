//! Failed records: a member `nack`s a record; the coordinator counts its deliveries durably,
//! answers with the group's backoff until `max_deliveries`, then has the node move it to the
//! dead-letter topic — in three steps, each a record, so a crash at any point resumes the
//! move without writing the dead letter twice:
//!
//! 1. [`Coordinator::nack`]: the delivery count goes up; `Redeliver` or `DeadLetter`.
//! 2. [`Coordinator::begin_move`]: the dead-letter partition and its end offset before the
//!    move are recorded (a retry looks for a copy from there before it appends).
//! 3. [`Coordinator::dead_lettered`]: the failure is settled and the group's offset moves
//!    past the record, so the partition goes on.

use super::Coordinator;
use crate::error::GroupError;
use crate::record::{DeliveryValue, Record};
use crate::types::{CommittedOffset, TopicPartition};

/// A member failed a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub tp: TopicPartition,
    pub offset: i64,
    /// Why (kept with the record, and in the dead letter's headers).
    pub error: String,
}

/// Where a failed record first came from, when it is a copy in a delay topic: the node reads
/// it from the copy's headers (written by an earlier move).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The source topic (`None`: the record is in its source topic).
    pub topic: Option<String>,
    /// Deliveries before this copy.
    pub prior_deliveries: u32,
    pub first_failure_ms: Option<i64>,
}

/// What a `nack` leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NackOutcome {
    /// The member delivers the record again after `after_ms`.
    Redeliver { deliveries: u32, after_ms: u32 },
    /// The record goes to the delay topic `topic`, to be delivered from `not_before_ms`
    /// (ms since the epoch); the node moves it as a dead letter is moved, and the source
    /// partition goes on.
    Retry {
        topic: String,
        not_before_ms: i64,
        delivery: DeliveryValue,
    },
    /// The record goes to `dlq_topic`; the node moves it (`begin_move`, append,
    /// `dead_lettered`). `delivery.moving` is set when an earlier attempt began the move.
    DeadLetter {
        dlq_topic: String,
        delivery: DeliveryValue,
    },
}

/// Longest failure reason kept, in bytes.
pub const MAX_ERROR_BYTES: usize = 1_024;

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_ERROR_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Coordinator {
    /// A member failed the record at `n.offset` of a partition it owns.
    pub fn nack(
        &mut self,
        n: &Nack,
        origin: &Origin,
        now_ms: u64,
        wall_clock_ms: i64,
    ) -> Result<(NackOutcome, Vec<Record>), GroupError> {
        self.check_id("group id", &n.group)?;
        let member = self.acting_member(&n.group, &n.member_id, n.member_epoch)?;
        if !member.assigned.contains(&n.tp) && !member.revoking.contains(&n.tp) {
            return Err(GroupError::UnassignedPartition {
                group: n.group.clone(),
                member_id: n.member_id.clone(),
                topic: n.tp.topic.clone(),
                partition: n.tp.partition,
            });
        }
        if n.offset < 0 {
            return Err(GroupError::Invalid(format!(
                "offset {} of {}/{}: offsets are at least 0",
                n.offset, n.tp.topic, n.tp.partition
            )));
        }
        let g = &self.groups[&n.group];
        let key = (n.tp.clone(), n.offset);
        let previous = g.deliveries.get(&key).cloned();
        if previous.is_none() && g.deliveries.len() >= self.limits.max_failed_records_per_group {
            return Err(GroupError::LimitExceeded {
                what: format!("{} failed records in group {}", g.deliveries.len(), n.group),
                limit: self.limits.max_failed_records_per_group,
                hint: "commit past records that succeeded, or raise the node's limit",
            });
        }
        let config = g.config.clone();
        let delivery = match previous {
            // A move already began (a retry after a crash): finish it, count nothing.
            Some(d) if d.moving.is_some() => d,
            Some(d) => DeliveryValue {
                deliveries: d.deliveries.saturating_add(1),
                last_error: clip(&n.error),
                ..d
            },
            None => DeliveryValue {
                deliveries: origin.prior_deliveries.saturating_add(1),
                first_failure_ms: origin.first_failure_ms.unwrap_or(wall_clock_ms),
                last_error: clip(&n.error),
                moving: None,
            },
        };
        let source = origin.topic.as_deref().unwrap_or(&n.tp.topic);
        let mut out = Vec::new();
        if delivery.moving.is_none() {
            self.emit(
                &mut out,
                Record::Delivery {
                    group: n.group.clone(),
                    tp: n.tp.clone(),
                    offset: n.offset,
                    value: Some(delivery.clone()),
                },
                now_ms,
            );
        }
        let after_ms = config.backoff_ms(delivery.deliveries);
        let outcome = if delivery.deliveries >= config.max_deliveries {
            NackOutcome::DeadLetter {
                dlq_topic: config.dlq_topic_for(source, &n.group),
                delivery,
            }
        } else if config.retry_levels > 0 {
            let level = delivery.deliveries.min(config.retry_levels);
            NackOutcome::Retry {
                topic: crate::types::GroupConfig::retry_topic_for(source, &n.group, level),
                not_before_ms: wall_clock_ms.saturating_add(i64::from(after_ms)),
                delivery,
            }
        } else {
            NackOutcome::Redeliver {
                deliveries: delivery.deliveries,
                after_ms,
            }
        };
        Ok((outcome, out))
    }

    /// Records where the dead letter goes: `dlq_partition`, whose end offset is `search_from`
    /// before the append.
    pub fn begin_move(
        &mut self,
        group: &str,
        tp: &TopicPartition,
        offset: i64,
        dlq_partition: i32,
        search_from: i64,
        now_ms: u64,
    ) -> Result<Vec<Record>, GroupError> {
        let d = self.failed(group, tp, offset)?;
        let mut out = Vec::new();
        self.emit(
            &mut out,
            Record::Delivery {
                group: group.to_string(),
                tp: tp.clone(),
                offset,
                value: Some(DeliveryValue {
                    moving: Some((dlq_partition, search_from)),
                    ..d
                }),
            },
            now_ms,
        );
        Ok(out)
    }

    /// The dead letter is written: the failure is settled and the group's committed offset
    /// moves past the record (never back).
    pub fn dead_lettered(
        &mut self,
        group: &str,
        tp: &TopicPartition,
        offset: i64,
        now_ms: u64,
        wall_clock_ms: i64,
    ) -> Result<Vec<Record>, GroupError> {
        self.failed(group, tp, offset)?;
        let mut out = Vec::new();
        self.emit(
            &mut out,
            Record::Delivery {
                group: group.to_string(),
                tp: tp.clone(),
                offset,
                value: None,
            },
            now_ms,
        );
        let committed = self
            .groups
            .get(group)
            .and_then(|g| g.offsets.get(tp))
            .map(|c| c.offset);
        if committed.is_none_or(|c| c <= offset) {
            self.emit(
                &mut out,
                Record::Offset {
                    group: group.to_string(),
                    tp: tp.clone(),
                    value: Some(CommittedOffset {
                        offset: offset + 1,
                        metadata: format!("dead-lettered offset {offset}"),
                        commit_time_ms: wall_clock_ms,
                    }),
                },
                now_ms,
            );
        }
        Ok(out)
    }

    fn failed(
        &self,
        group: &str,
        tp: &TopicPartition,
        offset: i64,
    ) -> Result<DeliveryValue, GroupError> {
        self.groups
            .get(group)
            .and_then(|g| g.deliveries.get(&(tp.clone(), offset)))
            .cloned()
            .ok_or_else(|| {
                GroupError::Invalid(format!(
                    "group {group} has no failed record at {}/{} offset {offset}",
                    tp.topic, tp.partition
                ))
            })
    }

    /// A commit to `offset` settles the failures below it (the records succeeded later or
    /// were skipped); a failure being moved is left to finish.
    pub(super) fn settle_deliveries_below(
        &mut self,
        group: &str,
        tp: &TopicPartition,
        offset: i64,
        out: &mut Vec<Record>,
        now_ms: u64,
    ) {
        let Some(g) = self.groups.get(group) else {
            return;
        };
        let settled: Vec<i64> = g
            .deliveries
            .range((tp.clone(), i64::MIN)..(tp.clone(), offset))
            .filter(|(_, d)| d.moving.is_none())
            .map(|((_, o), _)| *o)
            .collect();
        for o in settled {
            self.emit(
                out,
                Record::Delivery {
                    group: group.to_string(),
                    tp: tp.clone(),
                    offset: o,
                    value: None,
                },
                now_ms,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{Heartbeat, JOIN_EPOCH};
    use crate::types::{GroupConfig, Limits, TopicCounts};

    fn setup() -> (Coordinator, i32) {
        let config = GroupConfig {
            max_deliveries: 3,
            redelivery_backoff_ms: vec![100, 500],
            ..GroupConfig::default()
        };
        let mut co = Coordinator::new(Limits::default(), config);
        let topics: TopicCounts = [("t".to_string(), 2)].into_iter().collect();
        let hb = Heartbeat {
            group: "g".into(),
            member_id: "m".into(),
            instance_id: None,
            client_id: "c".into(),
            member_epoch: JOIN_EPOCH,
            rebalance_timeout_ms: 1_000,
            subscribed: Some(vec!["t".into()]),
            assignor: None,
            owned: vec![],
        };
        let (o, _) = co.heartbeat(&hb, 0, &topics).expect("join");
        assert_eq!(o.assignment.len(), 2);
        (co, o.member_epoch)
    }

    fn nack(epoch: i32, offset: i64) -> Nack {
        Nack {
            group: "g".into(),
            member_id: "m".into(),
            member_epoch: epoch,
            tp: TopicPartition::new("t", 0),
            offset,
            error: "boom".into(),
        }
    }

    #[test]
    fn redelivers_with_the_backoff_then_dead_letters_once_and_moves_on() {
        let (mut co, epoch) = setup();
        let tp = TopicPartition::new("t", 0);
        let (o1, r1) = co.nack(&nack(epoch, 7), &Origin::default(), 0, 1).unwrap();
        assert_eq!(
            o1,
            NackOutcome::Redeliver {
                deliveries: 1,
                after_ms: 100
            }
        );
        assert_eq!(r1.len(), 1);
        let (o2, _) = co.nack(&nack(epoch, 7), &Origin::default(), 0, 2).unwrap();
        assert_eq!(
            o2,
            NackOutcome::Redeliver {
                deliveries: 2,
                after_ms: 500
            }
        );
        let (o3, _) = co.nack(&nack(epoch, 7), &Origin::default(), 0, 3).unwrap();
        let NackOutcome::DeadLetter {
            dlq_topic,
            delivery,
        } = o3
        else {
            panic!("dead letter expected");
        };
        assert_eq!(dlq_topic, "t.g.dlq");
        assert_eq!((delivery.deliveries, delivery.first_failure_ms), (3, 1));
        co.begin_move("g", &tp, 7, 0, 40, 0).unwrap();
        // A retry of the same nack (the node crashed mid-move) finishes the same move.
        let (again, none) = co.nack(&nack(epoch, 7), &Origin::default(), 0, 4).unwrap();
        assert!(none.is_empty(), "a move in progress counts nothing");
        let NackOutcome::DeadLetter { delivery, .. } = again else {
            panic!("still a dead letter");
        };
        assert_eq!(delivery.moving, Some((0, 40)));
        co.dead_lettered("g", &tp, 7, 0, 5).unwrap();
        assert_eq!(co.committed("g", std::slice::from_ref(&tp))[0].1.offset, 8);
        assert!(co.group("g").unwrap().deliveries.is_empty());
    }

    #[test]
    fn with_delay_topics_a_failure_moves_on_and_the_copy_carries_the_count_to_the_dlq() {
        let (mut co, epoch) = setup();
        let changes = [("retry_levels".to_string(), "2".to_string())];
        for r in co.alter_config_keys("g", &changes, 0).unwrap() {
            co.replay(&r, 0);
        }
        let (o, _) = co
            .nack(&nack(epoch, 7), &Origin::default(), 0, 1_000)
            .unwrap();
        let NackOutcome::Retry {
            topic,
            not_before_ms,
            delivery,
        } = o
        else {
            panic!("a retry: {o:?}");
        };
        assert_eq!(
            (topic.as_str(), not_before_ms, delivery.deliveries),
            ("t.g.retry.1", 1_100, 1)
        );
        // The copy in t.g.retry.2, failed a third time (max 3): the DLQ of the source topic.
        let origin = Origin {
            topic: Some("t".into()),
            prior_deliveries: 2,
            first_failure_ms: Some(1_000),
        };
        let (o, _) = co.nack(&nack(epoch, 8), &origin, 0, 5_000).unwrap();
        let NackOutcome::DeadLetter {
            dlq_topic,
            delivery,
        } = o
        else {
            panic!("a dead letter: {o:?}");
        };
        assert_eq!(
            (
                dlq_topic.as_str(),
                delivery.deliveries,
                delivery.first_failure_ms
            ),
            ("t.g.dlq", 3, 1_000)
        );
    }

    #[test]
    fn a_commit_past_a_failed_record_settles_it_and_state_survives_replay() {
        let (mut co, epoch) = setup();
        let mut log = Vec::new();
        log.extend(
            co.nack(&nack(epoch, 3), &Origin::default(), 0, 1)
                .unwrap()
                .1,
        );
        let mut replayed = Coordinator::new(Limits::default(), GroupConfig::default());
        for r in &log {
            replayed.replay(r, 0);
        }
        assert_eq!(replayed.group("g").unwrap().deliveries.len(), 1);
        let commit = crate::coordinator::OffsetCommit {
            group: "g".into(),
            member_id: "m".into(),
            member_epoch: epoch,
            offsets: vec![(TopicPartition::new("t", 0), 4, String::new())],
        };
        co.commit(&commit, 0, 2).unwrap();
        assert!(co.group("g").unwrap().deliveries.is_empty());
    }

    #[test]
    fn fenced_and_unassigned_nacks_change_nothing() {
        let (mut co, epoch) = setup();
        assert!(matches!(
            co.nack(&nack(epoch + 1, 1), &Origin::default(), 0, 1),
            Err(GroupError::FencedMemberEpoch { .. })
        ));
        let mut other = nack(epoch, 1);
        other.tp = TopicPartition::new("u", 0);
        assert!(matches!(
            co.nack(&other, &Origin::default(), 0, 1),
            Err(GroupError::UnassignedPartition { .. })
        ));
        assert!(co.group("g").unwrap().deliveries.is_empty());
    }
}
