//! One consumer group's state, changed only by [`Group::apply`]ing records.

use std::collections::BTreeMap;

use crate::record::{DeliveryValue, GroupValue, MemberValue, Record, TargetValue, TxnOffsetsValue};
use crate::types::{Assignment, CommittedOffset, GroupConfig, TopicPartition};

/// A member as the coordinator keeps it: its persisted value and when it was last heard of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub value: MemberValue,
    /// Its last heartbeat (or when the coordinator loaded it), ms.
    pub last_seen_ms: u64,
    /// Since when it has partitions to revoke, ms.
    pub revoking_since_ms: Option<u64>,
}

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (it may hold committed offsets).
    Empty,
    /// Members are moving toward the target assignment.
    Reconciling,
    /// Every member has its target at the group's epoch.
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Reconciling => "Reconciling",
            Self::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub epoch: i32,
    pub config: GroupConfig,
    pub topic_counts: Vec<(String, i32)>,
    pub members: BTreeMap<String, Member>,
    pub target_epoch: i32,
    pub target: BTreeMap<String, Assignment>,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
    /// Records members failed (`nack`), by partition and offset.
    pub deliveries: BTreeMap<(TopicPartition, i64), DeliveryValue>,
    /// The group record exists (a group only of offsets has none until a member joins).
    pub has_group_record: bool,
    /// Per transactional id, the last transaction whose offsets the group took.
    pub txn_offsets: BTreeMap<String, TxnOffsetsValue>,
}

impl Group {
    pub fn new(name: &str, config: GroupConfig) -> Self {
        Self {
            name: name.to_string(),
            epoch: 0,
            config,
            topic_counts: Vec::new(),
            members: BTreeMap::new(),
            target_epoch: 0,
            target: BTreeMap::new(),
            offsets: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            has_group_record: false,
            txn_offsets: BTreeMap::new(),
        }
    }

    /// Applies one record of this group; `now_ms` starts the session of a member loaded
    /// from the log.
    pub fn apply(&mut self, record: &Record, now_ms: u64) {
        match record {
            Record::Offset { tp, value, .. } => match value {
                Some(v) => {
                    self.offsets.insert(tp.clone(), v.clone());
                }
                None => {
                    self.offsets.remove(tp);
                }
            },
            Record::Group { value, .. } => match value {
                Some(GroupValue {
                    epoch,
                    config,
                    topic_counts,
                }) => {
                    self.epoch = *epoch;
                    self.config = config.clone();
                    self.topic_counts = topic_counts.clone();
                    self.has_group_record = true;
                }
                None => {
                    self.has_group_record = false;
                    self.epoch = 0;
                    self.topic_counts.clear();
                }
            },
            Record::Member {
                member_id, value, ..
            } => match value {
                Some(v) => {
                    let (last_seen_ms, since) = match self.members.get(member_id) {
                        Some(m) => (m.last_seen_ms, m.revoking_since_ms),
                        None => (now_ms, None),
                    };
                    let revoking_since_ms = match (v.revoking.is_empty(), since) {
                        (true, _) => None,
                        (false, Some(s)) => Some(s),
                        (false, None) => Some(now_ms),
                    };
                    self.members.insert(
                        member_id.clone(),
                        Member {
                            value: v.clone(),
                            last_seen_ms,
                            revoking_since_ms,
                        },
                    );
                }
                None => {
                    self.members.remove(member_id);
                }
            },
            Record::Delivery {
                tp, offset, value, ..
            } => match value {
                Some(v) => {
                    self.deliveries.insert((tp.clone(), *offset), v.clone());
                }
                None => {
                    self.deliveries.remove(&(tp.clone(), *offset));
                }
            },
            Record::TxnOffsets {
                transactional_id,
                value,
                ..
            } => match value {
                Some(v) => {
                    self.txn_offsets.insert(transactional_id.clone(), v.clone());
                }
                None => {
                    self.txn_offsets.remove(transactional_id);
                }
            },
            Record::Target { value, .. } => match value {
                Some(TargetValue { epoch, members }) => {
                    self.target_epoch = *epoch;
                    self.target = members.iter().cloned().collect();
                }
                None => {
                    self.target_epoch = 0;
                    self.target.clear();
                }
            },
        }
    }

    /// Members that are live (a static member that left is kept but not live).
    pub fn live_members(&self) -> usize {
        self.members
            .values()
            .filter(|m| !m.value.left_static)
            .count()
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            return GroupState::Empty;
        }
        let settled = self.members.iter().all(|(id, m)| {
            m.value.member_epoch == self.epoch
                && m.value.revoking.is_empty()
                && self.target.get(id).is_none_or(|t| *t == m.value.assigned)
        });
        if settled && self.target_epoch == self.epoch {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// Whether a member other than `except` holds `tp` (assigned or being revoked).
    pub fn held_by_other(&self, except: &str, tp: &TopicPartition) -> bool {
        self.members.iter().any(|(id, m)| {
            id != except && (m.value.assigned.contains(tp) || m.value.revoking.contains(tp))
        })
    }

    /// Nothing is left of it: no members, offsets or group record.
    pub fn is_gone(&self) -> bool {
        self.members.is_empty()
            && self.offsets.is_empty()
            && self.deliveries.is_empty()
            && self.txn_offsets.is_empty()
            && !self.has_group_record
    }
}
