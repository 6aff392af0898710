//! Entries that span several indexes (a partition's batch spans its records' offsets,
//! decision 0027): indexes, boundaries, back-off and compaction.

mod common;

use common::Cluster;
use quiver_raft::types::{Action, CompactError, Config, Entry, HardState, Message};
use quiver_raft::RaftNode;

#[test]
fn batches_take_as_many_indexes_as_records_and_replicate_whole() {
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], |_| {});
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    let before = c.node(leader).last_index();
    let (range, out) = c
        .node(leader)
        .propose_spans(vec![
            (3, b"abc".to_vec()),
            (2, b"de".to_vec()),
            (5, b"fghij".to_vec()),
        ])
        .expect("accepted");
    assert_eq!(range, before + 1..=before + 10);
    c.run(leader, out);
    c.ticks(2);
    for id in [1, 2, 3] {
        let n = c.node(id);
        assert_eq!(n.commit_index(), before + 10, "node {id}");
        assert_eq!(n.entry(before + 3).map(|e| e.span), Some(3));
        assert_eq!(n.entry(before + 5).map(|e| e.span), Some(2));
        assert!(
            n.entry(before + 4).is_none(),
            "index {} is inside a batch",
            before + 4
        );
    }
    assert_eq!(
        c.node(leader).compact(before + 4, Vec::new()),
        Err(CompactError::NotABoundary { index: before + 4 })
    );
    c.node(leader)
        .compact(before + 5, Vec::new())
        .expect("at a boundary");
    assert!(matches!(
        c.node(leader).propose_spans(vec![(0, b"x".to_vec())]),
        Err(quiver_raft::ProposeError::ZeroSpan)
    ));
}

#[test]
fn a_diverged_follower_backs_off_to_the_start_of_its_conflicting_term() {
    // Follower: term 1 [1..=2], then term 2 batches [3..=5], [6..=6], [7..=9] (never committed).
    let log = vec![
        Entry::spanning(1, 2, b"a".to_vec()),
        Entry::spanning(2, 3, b"b".to_vec()),
        Entry::spanning(2, 1, b"c".to_vec()),
        Entry::spanning(2, 3, b"d".to_vec()),
    ];
    let mut n = RaftNode::new(
        Config::new(2, vec![1, 2, 3]),
        HardState {
            term: 3,
            voted_for: None,
        },
        None,
        log,
    );
    assert_eq!(n.last_index(), 9);
    // The leader of term 3 holds [1..=2] of term 1 then its own batch [3..=7].
    let out = n.step(
        1,
        Message::Append {
            term: 3,
            prev_index: 7,
            prev_term: 3,
            entries: vec![],
            commit: 2,
        },
    );
    let hint = out.iter().find_map(|a| match a {
        Action::Send {
            message:
                Message::AppendResponse {
                    success: false,
                    index,
                    ..
                },
            ..
        } => Some(*index),
        _ => None,
    });
    assert_eq!(
        hint,
        Some(3),
        "back to the start of term 2, past whole batches"
    );
    let out = n.step(
        1,
        Message::Append {
            term: 3,
            prev_index: 2,
            prev_term: 1,
            entries: vec![Entry::spanning(3, 5, b"e".to_vec())],
            commit: 7,
        },
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PersistEntries { first_index: 3, .. })));
    assert_eq!(n.last_index(), 7);
    assert_eq!(n.commit_index(), 7);
    assert_eq!(n.entry(7).map(|e| e.term), Some(3));
}
