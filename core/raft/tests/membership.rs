//! Membership changes, learners, a moving log start and heartbeats, each rule on its own,
//! over a tiny lossless in-test network (the simulator covers them under faults).

mod common;

use common::Cluster;
use quiver_raft::types::{
    CompactError, MembershipChange, Message, NodeId, Payload, ProposeError, Role,
};

#[test]
fn a_learner_catches_up_without_voting_then_is_promoted() {
    let mut c = Cluster::new(&[1, 2], &[1], |_| {});
    c.ticks(30);
    assert_eq!(c.leader(), Some(1));
    for k in 0..10u8 {
        c.propose(1, &[k]);
    }
    // Node 2 is not a member: it hears nothing and, not a voter, never campaigns.
    assert_eq!(c.node(2).last_index(), 0);
    assert_eq!(c.node(2).role(), Role::Follower);
    c.change(1, MembershipChange::AddLearner(2)).expect("added");
    c.ticks(4);
    assert_eq!(
        c.node(2).last_index(),
        c.node(1).last_index(),
        "the learner caught up"
    );
    assert!(c.node(2).membership().learners.contains(&2));
    assert!(
        !c.seen
            .iter()
            .any(|(from, _, m)| *from == 2 && matches!(m, Message::PreVote { .. })),
        "a learner never asks for votes"
    );
    c.change(1, MembershipChange::Promote(2)).expect("promoted");
    assert!(c.node(1).membership().voters.contains(&2));
    // Now its answers count: a quorum of {1, 2} commits, and it learns so by heartbeat.
    c.ticks(2);
    assert_eq!(c.node(1).commit_index(), c.node(1).last_index());
    assert_eq!(c.node(2).commit_index(), c.node(1).last_index());
}

#[test]
fn membership_changes_one_at_a_time_and_never_remove_the_leader() {
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], |_| {});
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    let other = *[1, 2, 3]
        .iter()
        .find(|&&n| n != leader)
        .expect("a follower");
    assert_eq!(
        c.node(leader)
            .change_membership(MembershipChange::Remove(leader))
            .err(),
        Some(ProposeError::RemovingLeader)
    );
    assert_eq!(
        c.node(leader)
            .change_membership(MembershipChange::Promote(9))
            .err(),
        Some(ProposeError::NotALearner(9))
    );
    assert_eq!(
        c.node(leader)
            .change_membership(MembershipChange::AddLearner(other))
            .err(),
        Some(ProposeError::AlreadyMember(other))
    );
    // A change in force but not committed blocks the next one.
    let (index, _unsent) = c
        .node(leader)
        .change_membership(MembershipChange::AddLearner(4))
        .expect("accepted");
    assert_eq!(
        c.node(leader)
            .change_membership(MembershipChange::AddLearner(5))
            .err(),
        Some(ProposeError::ChangeInProgress { index })
    );
    assert!(
        c.node(leader).membership().learners.contains(&4),
        "in force once appended"
    );
    // A follower refuses proposals and names the leader.
    assert_eq!(
        c.node(other).propose(b"x".to_vec()).err(),
        Some(ProposeError::NotLeader {
            leader: Some(leader)
        })
    );
}

#[test]
fn a_learner_is_promoted_only_once_it_holds_every_committed_entry() {
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2], |_| {});
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    for k in 0..5u8 {
        c.propose(leader, &[k]);
    }
    // Node 3 is cut off: it is added but hears nothing.
    let n3 = c.nodes.remove(&3).expect("node 3");
    c.change(leader, MembershipChange::AddLearner(3))
        .expect("added");
    match c
        .node(leader)
        .change_membership(MembershipChange::Promote(3))
    {
        Err(ProposeError::NotCaughtUp {
            node: 3,
            matched: 0,
            ..
        }) => {}
        other => panic!("expected NotCaughtUp, got {other:?}"),
    }
    c.nodes.insert(3, n3);
    c.ticks(4);
    c.change(leader, MembershipChange::Promote(3))
        .expect("caught up now");
    assert_eq!(c.node(3).membership().voters.len(), 3);
}

#[test]
fn a_removed_voter_stops_counting_and_a_moved_replica_keeps_the_group_live() {
    // Move the replica on 3 to 4: add 4 as learner, promote it, remove 3.
    let mut c = Cluster::new(&[1, 2, 3, 4], &[1, 2, 3], |_| {});
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    let gone = if leader == 3 { 2 } else { 3 };
    c.change(leader, MembershipChange::AddLearner(4))
        .expect("added");
    c.ticks(4);
    c.change(leader, MembershipChange::Promote(4))
        .expect("promoted");
    c.change(leader, MembershipChange::Remove(gone))
        .expect("removed");
    let voters: Vec<NodeId> = c.node(leader).membership().voters.iter().copied().collect();
    assert_eq!(voters.len(), 3);
    assert!(!voters.contains(&gone) && voters.contains(&4));
    // The removed node is gone for good: the rest commit without it.
    c.nodes.remove(&gone);
    let index = c.propose(leader, b"after the move");
    assert_eq!(c.node(leader).commit_index(), index);
    assert!(matches!(
        c.node(4).entry(index).map(|e| &e.payload),
        Some(Payload::Data(d)) if d == b"after the move"
    ));
}

#[test]
fn a_follower_behind_the_log_start_is_reset_to_it() {
    let mut c = Cluster::new(&[1, 2], &[1], |_| {});
    c.ticks(30);
    for k in 0..20u8 {
        c.propose(1, &[k]);
    }
    let commit = c.node(1).commit_index();
    assert_eq!(
        c.node(1).compact(commit + 1, Vec::new()),
        Err(CompactError::NotDurablyCommitted {
            index: commit + 1,
            limit: commit
        })
    );
    c.node(1)
        .compact(15, b"image at 15".to_vec())
        .expect("compacted");
    assert_eq!(c.node(1).first_index(), 16);
    assert_eq!(
        c.node(1).compact(10, Vec::new()),
        Err(CompactError::AlreadyCompacted {
            index: 10,
            start: 15
        })
    );
    c.change(1, MembershipChange::AddLearner(2)).expect("added");
    c.ticks(4);
    assert_eq!(
        c.installed,
        vec![2],
        "the new replica starts from the snapshot"
    );
    let n2 = c.node(2);
    assert_eq!(n2.snapshot().index, 15);
    assert_eq!(n2.snapshot().data, b"image at 15");
    assert_eq!(n2.last_index(), c.node(1).last_index());
    assert_eq!(c.node(2).commit_index(), c.node(1).commit_index());
    // It continues from there like any follower.
    let index = c.propose(1, b"next");
    assert_eq!(c.node(2).last_index(), index);
}

#[test]
fn a_heartbeat_commits_only_what_the_follower_is_known_to_hold() {
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], |_| {});
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    c.propose(leader, b"a");
    c.ticks(2);
    for (from, _, m) in &c.seen {
        if let Message::Heartbeat { commit, .. } = m {
            assert_eq!(*from, leader);
            assert!(*commit <= c.nodes[&leader].commit_index());
        }
    }
    let commit = c.node(leader).commit_index();
    for id in [1, 2, 3] {
        assert_eq!(
            c.node(id).commit_index(),
            commit,
            "node {id} learned the commit"
        );
    }
}
