//! Targeted cases of the Raft core, beside the simulator: each rule on its own.

use quiver_raft::types::{Action, Config, Entry, HardState, Message, Role};
use quiver_raft::RaftNode;

fn entry(term: u64) -> Entry {
    Entry::data(term, vec![term as u8])
}

fn node(id: u64, voters: &[u64], term: u64, log: Vec<Entry>) -> RaftNode {
    RaftNode::new(
        Config::new(id, voters.to_vec()),
        HardState {
            term,
            voted_for: None,
        },
        None,
        log,
    )
}

fn sends(actions: &[Action]) -> Vec<(u64, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

/// Runs ticks until the node acts.
fn tick_until_it_acts(n: &mut RaftNode) -> Vec<Action> {
    for _ in 0..100 {
        let a = n.tick();
        if !a.is_empty() {
            return a;
        }
    }
    panic!("no action within 100 ticks");
}

#[test]
fn a_single_node_leads_and_commits_only_what_is_durable() {
    let mut n = node(1, &[1], 0, Vec::new());
    let actions = tick_until_it_acts(&mut n);
    assert_eq!(n.role(), Role::Leader);
    // Term and vote are persisted before anything else; the no-op entry is written.
    assert!(matches!(
        actions[0],
        Action::RoleChanged {
            role: Role::PreCandidate,
            ..
        }
    ));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::PersistHardState(h) if h.term == 1)));
    let write = actions
        .iter()
        .find_map(|a| match a {
            Action::PersistEntries { write, .. } => Some(*write),
            _ => None,
        })
        .expect("the no-op entry");
    assert_eq!(n.commit_index(), 0, "not committed before it is durable");
    let (index, more) = n.propose(b"x".to_vec()).expect("the leader accepts");
    assert_eq!(index, 2);
    let second = more
        .iter()
        .find_map(|a| match a {
            Action::PersistEntries { write, .. } => Some(*write),
            _ => None,
        })
        .expect("written");
    assert_eq!(n.persisted(write), vec![Action::Committed(1)]);
    assert_eq!(n.persisted(second), vec![Action::Committed(2)]);
}

#[test]
fn a_stale_leader_is_told_the_newer_term() {
    let mut n = node(2, &[1, 2, 3], 5, vec![entry(5)]);
    let out = n.step(
        1,
        Message::Append {
            term: 4,
            prev_index: 1,
            prev_term: 5,
            entries: vec![],
            commit: 1,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            1,
            Message::AppendResponse {
                term: 5,
                success: false,
                index: 0
            }
        )]
    );
    assert_eq!(n.commit_index(), 0, "nothing learned from a stale leader");
}

#[test]
fn a_conflict_hints_at_the_start_of_the_conflicting_term_and_the_log_is_repaired() {
    // Follower: terms 1, 2, 2, 2; the leader's log: 1, 3, 3.
    let mut n = node(
        2,
        &[1, 2, 3],
        3,
        vec![entry(1), entry(2), entry(2), entry(2)],
    );
    let out = n.step(
        1,
        Message::Append {
            term: 3,
            prev_index: 3,
            prev_term: 3,
            entries: vec![],
            commit: 0,
        },
    );
    assert_eq!(
        sends(&out),
        vec![(
            1,
            Message::AppendResponse {
                term: 3,
                success: false,
                index: 2
            }
        )],
        "back off to the first entry of term 2, not one at a time"
    );
    let out = n.step(
        1,
        Message::Append {
            term: 3,
            prev_index: 1,
            prev_term: 1,
            entries: vec![entry(3), entry(3)],
            commit: 3,
        },
    );
    // The cut and the new entries are written before the success is sent.
    let write_at = out
        .iter()
        .position(|a| matches!(a, Action::PersistEntries { first_index: 2, .. }))
        .expect("a write from index 2");
    let send_at = out
        .iter()
        .position(|a| matches!(a, Action::Send { .. }))
        .expect("an answer");
    assert!(write_at < send_at);
    assert_eq!(
        n.log().entries().iter().map(|e| e.term).collect::<Vec<_>>(),
        [1, 3, 3]
    );
    assert_eq!(n.commit_index(), 3);
}

#[test]
fn votes_go_only_to_up_to_date_candidates_and_are_durable_first() {
    let mut n = node(2, &[1, 2, 3], 2, vec![entry(1), entry(2)]);
    let behind = n.step(
        1,
        Message::Vote {
            term: 3,
            last_index: 5,
            last_term: 1,
            transfer: false,
        },
    );
    assert!(sends(&behind).iter().any(|(_, m)| *m
        == Message::VoteResponse {
            term: 3,
            granted: false
        }));
    let ok = n.step(
        3,
        Message::Vote {
            term: 3,
            last_index: 2,
            last_term: 2,
            transfer: false,
        },
    );
    let persist = ok
        .iter()
        .position(|a| matches!(a, Action::PersistHardState(h) if h.voted_for == Some(3)))
        .expect("the vote is persisted");
    let send = ok
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    message: Message::VoteResponse { granted: true, .. },
                    ..
                }
            )
        })
        .expect("granted");
    assert!(persist < send);
    // One vote per term.
    let again = n.step(
        1,
        Message::Vote {
            term: 3,
            last_index: 2,
            last_term: 2,
            transfer: false,
        },
    );
    assert!(sends(&again).iter().any(|(_, m)| *m
        == Message::VoteResponse {
            term: 3,
            granted: false
        }));
}

#[test]
fn a_follower_that_hears_its_leader_ignores_pre_votes_and_votes() {
    let mut n = node(2, &[1, 2, 3], 1, vec![entry(1)]);
    n.step(
        1,
        Message::Append {
            term: 1,
            prev_index: 1,
            prev_term: 1,
            entries: vec![],
            commit: 1,
        },
    );
    let pre = n.step(
        3,
        Message::PreVote {
            term: 2,
            last_index: 1,
            last_term: 1,
        },
    );
    assert_eq!(
        sends(&pre),
        vec![(
            3,
            Message::PreVoteResponse {
                term: 1,
                granted: false
            }
        )]
    );
    let vote = n.step(
        3,
        Message::Vote {
            term: 2,
            last_index: 1,
            last_term: 1,
            transfer: false,
        },
    );
    assert!(
        vote.is_empty(),
        "stickiness: the live leader keeps its term"
    );
    assert_eq!(n.term(), 1);
    // A transfer vote is the leader's own wish: it is heard.
    let transfer = n.step(
        3,
        Message::Vote {
            term: 2,
            last_index: 1,
            last_term: 1,
            transfer: true,
        },
    );
    assert_eq!(n.term(), 2);
    assert!(sends(&transfer).iter().any(|(_, m)| *m
        == Message::VoteResponse {
            term: 2,
            granted: true
        }));
}

#[test]
fn a_hint_from_the_network_past_the_log_end_is_clamped() {
    let mut n = node(1, &[1], 0, Vec::new());
    tick_until_it_acts(&mut n);
    assert_eq!(n.role(), Role::Leader);
    // A three-node leader receiving a nonsense back-off hint keeps serving.
    let mut l = node(1, &[1, 2, 3], 0, Vec::new());
    let mut led = false;
    for _ in 0..100 {
        l.tick();
        for from in [2, 3] {
            l.step(
                from,
                Message::PreVoteResponse {
                    term: l.term() + 1,
                    granted: true,
                },
            );
            l.step(
                from,
                Message::VoteResponse {
                    term: l.term(),
                    granted: true,
                },
            );
        }
        if l.role() == Role::Leader {
            led = true;
            break;
        }
    }
    assert!(led, "it won the election");
    let out = l.step(
        2,
        Message::AppendResponse {
            term: l.term(),
            success: false,
            index: u64::MAX,
        },
    );
    assert!(sends(&out)
        .iter()
        .any(|(to, m)| *to == 2 && matches!(m, Message::Append { .. })));
}

/// Numbers from the network at the edge of u64 (a buggy or hostile peer): answered or
/// ignored, never a panic or an overflow.
#[test]
fn extreme_indexes_and_spans_from_the_network_do_not_panic() {
    let mut n = node(2, &[1, 2, 3], 1, vec![entry(1)]);
    let hostile = [
        Message::Append {
            term: 1,
            prev_index: u64::MAX - 1,
            prev_term: 1,
            entries: vec![Entry::spanning(1, u64::MAX, vec![])],
            commit: u64::MAX,
        },
        Message::Append {
            term: 1,
            prev_index: 1,
            prev_term: 1,
            entries: vec![
                Entry::spanning(1, u64::MAX, vec![]),
                Entry::spanning(1, u64::MAX, vec![]),
            ],
            commit: u64::MAX,
        },
        Message::Heartbeat {
            term: 1,
            commit: u64::MAX,
            round: u64::MAX,
        },
        Message::InstallSnapshot {
            term: u64::MAX,
            snapshot: quiver_raft::Snapshot {
                index: u64::MAX,
                ..Default::default()
            },
        },
    ];
    for m in hostile {
        let _ = n.step(1, m);
    }
    // A leader hearing absurd answers.
    let mut l = node(1, &[1, 2], 0, Vec::new());
    let _ = tick_until_it_acts(&mut l);
    let _ = tick_until_it_acts(&mut l);
    for m in [
        Message::AppendResponse {
            term: l.term(),
            success: true,
            index: u64::MAX,
        },
        Message::AppendResponse {
            term: l.term(),
            success: false,
            index: u64::MAX,
        },
        Message::HeartbeatResponse {
            term: l.term(),
            last_index: u64::MAX,
            round: u64::MAX,
        },
    ] {
        let _ = l.step(2, m);
    }
}

#[test]
fn a_restarted_follower_reports_the_leader_it_first_hears_in_its_term() {
    // Restarted at term 3 (its hard state), it knows no leader yet.
    let mut n = node(2, &[1, 2, 3], 3, vec![entry(1), entry(3)]);
    assert_eq!(n.leader(), None);
    let actions = n.step(
        1,
        Message::Heartbeat {
            term: 3,
            commit: 1,
            round: 0,
        },
    );
    assert_eq!(n.leader(), Some(1));
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::RoleChanged {
                role: Role::Follower,
                term: 3
            }
        )),
        "the driver learns who leads: {actions:?}"
    );
    // Heard again: nothing new to report.
    let again = n.step(
        1,
        Message::Heartbeat {
            term: 3,
            commit: 1,
            round: 0,
        },
    );
    assert!(!again
        .iter()
        .any(|a| matches!(a, Action::RoleChanged { .. })));
}
