//! Moving a partition's replicas (sans-IO): `quiver topic alter-replicas`, a decommission.
//! The controller records the target; the partition's leader walks its Raft group there one
//! single-server change at a time, never lowering fault tolerance on the way:
//!
//! 1. each new replica joins as a **learner** (copies the log, does not vote);
//! 2. once it holds what is committed it is **promoted** to voter;
//! 3. only when every new replica votes are the leaving ones **removed** — a leaving leader
//!    first hands leadership to a caught-up target voter, which then removes it;
//! 4. when the voters are the target, the leader records `SetReplicas` in the controller,
//!    and the leaving nodes drop their copies.
//!
//! Kafka moves the same way (adding replicas, waiting for the ISR, then removing); here the
//! group's own membership entries make every step durable and ordered in the log.

use std::collections::BTreeSet;

use quiver_raft::Membership;

/// What the leader sees of its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub me: u64,
    pub membership: Membership,
    /// The last membership change is not committed yet: the next waits.
    pub change_pending: bool,
    pub commit: u64,
    /// Each member's matched index as the leader tracks it.
    pub matched: Vec<(u64, u64)>,
    /// Members the leader heard from within an election timeout.
    pub reachable: Vec<u64>,
    /// A leadership transfer this leader started and has not ended.
    pub transferring: bool,
}

impl GroupView {
    fn matched(&self, n: u64) -> u64 {
        self.matched
            .iter()
            .find(|(id, _)| *id == n)
            .map_or(0, |(_, m)| *m)
    }
}

/// The leader's next step towards `target` (its order: preference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveStep {
    /// Nothing to do now (a change is committing, a learner is catching up).
    Wait,
    AddLearner(u64),
    Promote(u64),
    Remove(u64),
    /// This leader leaves: hand leadership to this target voter first.
    TransferTo(u64),
    /// The voters are the target: record it.
    Done,
}

pub fn next_step(view: &GroupView, target: &[u64]) -> MoveStep {
    if view.change_pending {
        return MoveStep::Wait;
    }
    let m = &view.membership;
    let wanted: BTreeSet<u64> = target.iter().copied().collect();
    if let Some(n) = target.iter().find(|n| !m.contains(**n)) {
        return MoveStep::AddLearner(*n);
    }
    let joining: Vec<u64> = target
        .iter()
        .copied()
        .filter(|n| m.learners.contains(n))
        .collect();
    if let Some(n) = joining.iter().find(|n| view.matched(**n) >= view.commit) {
        return MoveStep::Promote(*n);
    }
    if !joining.is_empty() {
        return MoveStep::Wait;
    }
    if let Some(n) = m.learners.iter().find(|n| !wanted.contains(n)) {
        return MoveStep::Remove(*n);
    }
    // A voter leaves only while every target voter answers and holds what is committed:
    // removing it must not leave the group short of a working quorum.
    let healthy =
        |n: u64| n == view.me || (view.reachable.contains(&n) && view.matched(n) >= view.commit);
    if let Some(n) = m
        .voters
        .iter()
        .find(|n| !wanted.contains(n) && **n != view.me)
    {
        return if target.iter().all(|t| healthy(*t)) {
            MoveStep::Remove(*n)
        } else {
            MoveStep::Wait
        };
    }
    if !wanted.contains(&view.me) {
        if view.transferring {
            return MoveStep::Wait;
        }
        // A target voter that answers and holds the commit index: the transfer catches it
        // up and hands over (Raft's TimeoutNow), even while appends go on.
        return target
            .iter()
            .find(|n| healthy(**n))
            .map_or(MoveStep::Wait, |n| MoveStep::TransferTo(*n));
    }
    MoveStep::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(voters: &[u64], learners: &[u64], matched: &[(u64, u64)]) -> GroupView {
        let mut membership = Membership::of_voters(voters);
        membership.learners.extend(learners.iter().copied());
        GroupView {
            me: 1,
            membership,
            change_pending: false,
            commit: 100,
            matched: matched.to_vec(),
            reachable: vec![1, 2, 3, 4, 5, 6],
            transferring: false,
        }
    }

    #[test]
    fn a_move_adds_learners_promotes_them_caught_up_then_removes_the_leaving() {
        let target = [1, 2, 4];
        assert_eq!(
            next_step(&view(&[1, 2, 3], &[], &[]), &target),
            MoveStep::AddLearner(4)
        );
        let catching_up = view(&[1, 2, 3], &[4], &[(4, 40)]);
        assert_eq!(
            next_step(&catching_up, &target),
            MoveStep::Wait,
            "nobody leaves before the new replica votes"
        );
        assert_eq!(
            next_step(&view(&[1, 2, 3], &[4], &[(4, 100)]), &target),
            MoveStep::Promote(4)
        );
        let all = [(2, 100), (4, 100)];
        assert_eq!(
            next_step(&view(&[1, 2, 3, 4], &[], &all), &target),
            MoveStep::Remove(3)
        );
        let mut dead = view(&[1, 2, 3, 4], &[], &all);
        dead.reachable = vec![1, 2, 3];
        assert_eq!(
            next_step(&dead, &target),
            MoveStep::Wait,
            "no voter leaves while a new one does not answer"
        );
        assert_eq!(
            next_step(&view(&[1, 2, 4], &[], &[]), &target),
            MoveStep::Done
        );
    }

    #[test]
    fn a_leaving_leader_hands_over_to_a_caught_up_target_voter_last() {
        let target = [2, 3, 4];
        let v = view(&[1, 2, 3, 4], &[], &[(2, 90), (3, 105), (4, 110)]);
        assert_eq!(
            next_step(&v, &target),
            MoveStep::TransferTo(3),
            "2 is behind the commit"
        );
        let behind = view(&[1, 2, 3, 4], &[], &[(2, 90), (3, 90), (4, 90)]);
        assert_eq!(next_step(&behind, &target), MoveStep::Wait);
        let mut started = v.clone();
        started.transferring = true;
        assert_eq!(
            next_step(&started, &target),
            MoveStep::Wait,
            "one transfer at a time"
        );
    }

    #[test]
    fn nothing_moves_while_a_change_commits_and_stray_learners_go() {
        let mut v = view(&[1, 2, 3], &[], &[]);
        v.change_pending = true;
        assert_eq!(next_step(&v, &[1, 2, 4]), MoveStep::Wait);
        assert_eq!(
            next_step(&view(&[1, 2, 3], &[5], &[]), &[1, 2, 3]),
            MoveStep::Remove(5),
            "a learner of a cancelled move"
        );
    }
}
