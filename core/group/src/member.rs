//! One member's incremental reconciliation toward its target assignment (KIP-848).
//!
//! A member moves one heartbeat at a time:
//! 1. partitions it must give up are taken from `assigned` into `revoking`, at its old epoch;
//!    it keeps consuming everything else;
//! 2. once its heartbeat reports that it no longer owns them (it committed and stopped), they
//!    are released;
//! 3. then it gets the target's partitions that no other member still holds, and the target's
//!    epoch; partitions still held elsewhere follow at a later heartbeat, once released.
//!
//! So a partition is never owned by two members, and members that keep their partitions
//! never stop consuming them during a change.

use crate::record::MemberValue;
use crate::types::{Assignment, TopicPartition};

/// The member's next state toward `target` (at `target_epoch`). `owned` is what its
/// heartbeat says it owns; `held_elsewhere` says whether another member still holds a
/// partition (assigned or being revoked).
pub fn reconcile(
    member: &MemberValue,
    target: &Assignment,
    target_epoch: i32,
    owned: &Assignment,
    held_elsewhere: impl Fn(&TopicPartition) -> bool,
) -> MemberValue {
    let mut next = member.clone();
    if !next.revoking.is_empty() {
        if next.revoking.iter().any(|p| owned.contains(p)) {
            return next;
        }
        next.revoking.clear();
    }
    let revoke: Assignment = next.assigned.difference(target).cloned().collect();
    if !revoke.is_empty() {
        next.assigned.retain(|p| target.contains(p));
        next.revoking = revoke;
        return next;
    }
    for p in target {
        if !next.assigned.contains(p) && !held_elsewhere(p) {
            next.assigned.insert(p.clone());
        }
    }
    if next.member_epoch != target_epoch {
        next.previous_epoch = next.member_epoch;
        next.member_epoch = target_epoch;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn set(ps: &[i32]) -> Assignment {
        ps.iter().map(|&p| TopicPartition::new("t", p)).collect()
    }

    fn member(assigned: &[i32], epoch: i32) -> MemberValue {
        MemberValue {
            instance_id: None,
            client_id: String::new(),
            subscribed: BTreeSet::new(),
            rebalance_timeout_ms: 1000,
            member_epoch: epoch,
            previous_epoch: epoch - 1,
            assigned: set(assigned),
            revoking: Assignment::new(),
            left_static: false,
        }
    }

    #[test]
    fn revokes_first_at_the_old_epoch_then_takes_the_new_epoch() {
        let m = member(&[0, 1, 2, 3], 1);
        let step1 = reconcile(&m, &set(&[0, 1]), 2, &set(&[0, 1, 2, 3]), |_| false);
        assert_eq!(step1.assigned, set(&[0, 1]));
        assert_eq!(step1.revoking, set(&[2, 3]));
        assert_eq!(step1.member_epoch, 1);
        // Still owns 3: nothing moves.
        let step2 = reconcile(&step1, &set(&[0, 1]), 2, &set(&[0, 1, 3]), |_| false);
        assert_eq!(step2, step1);
        let step3 = reconcile(&step2, &set(&[0, 1]), 2, &set(&[0, 1]), |_| false);
        assert!(step3.revoking.is_empty());
        assert_eq!((step3.member_epoch, step3.previous_epoch), (2, 1));
    }

    #[test]
    fn partitions_held_elsewhere_wait() {
        let m = member(&[], 0);
        let held = set(&[1]);
        let next = reconcile(&m, &set(&[0, 1]), 3, &Assignment::new(), |p| {
            held.contains(p)
        });
        assert_eq!(next.assigned, set(&[0]));
        assert_eq!(next.member_epoch, 3);
        let later = reconcile(&next, &set(&[0, 1]), 3, &set(&[0]), |_| false);
        assert_eq!(later.assigned, set(&[0, 1]));
    }
}
