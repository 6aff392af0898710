//! Flow control: entries and bytes per append and in flight, batched proposals, and a
//! follower the transport cannot reach.

mod common;

use common::Cluster;
use quiver_raft::types::{Action, Message, ProposeError};

#[test]
fn appends_respect_the_byte_limits_and_oversize_proposals_are_refused() {
    let mut c = Cluster::new(&[1, 2], &[1, 2], |cfg| {
        cfg.max_bytes_per_append = 300;
        cfg.max_bytes_in_flight = 600;
    });
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    assert!(matches!(
        c.node(leader).propose(vec![0; 400]),
        Err(ProposeError::TooLarge { max_bytes: 300, .. })
    ));
    c.seen.clear();
    for _ in 0..10 {
        c.propose(leader, &[7; 100]);
    }
    for (_, _, m) in &c.seen {
        if let Message::Append { entries, .. } = m {
            let bytes: u64 = entries.iter().map(|e| e.size_bytes()).sum();
            assert!(bytes <= 300, "an append of {bytes} bytes");
        }
    }
    let follower = if leader == 1 { 2 } else { 1 };
    assert_eq!(c.node(follower).last_index(), c.node(leader).last_index());
}

#[test]
fn a_batch_is_one_write_and_all_or_nothing() {
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], |cfg| cfg.max_bytes_per_append = 300);
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    let last = c.node(leader).last_index();
    let (range, out) = c
        .node(leader)
        .propose_batch(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
        .expect("accepted");
    assert_eq!(range, last + 1..=last + 3);
    let writes = out
        .iter()
        .filter(|a| matches!(a, Action::PersistEntries { .. }))
        .count();
    assert_eq!(writes, 1, "one write for the batch");
    c.run(leader, out);
    assert_eq!(
        c.node(leader)
            .propose_batch(vec![b"ok".to_vec(), vec![0; 400]])
            .err(),
        Some(ProposeError::TooLarge {
            bytes: 416,
            max_bytes: 300
        })
    );
    assert_eq!(
        c.node(leader).last_index(),
        last + 3,
        "nothing of a refused batch"
    );
    assert_eq!(
        c.node(leader).propose_batch(Vec::new()).err(),
        Some(ProposeError::Empty)
    );
}

#[test]
fn a_follower_the_transport_cannot_reach_gets_only_probes_until_it_answers() {
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], |_| {});
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    let cut = if leader == 3 { 2 } else { 3 };
    c.node(leader).send_failed(cut);
    let (_, out) = c.node(leader).propose(b"x".to_vec()).expect("accepted");
    let to_cut = out
        .iter()
        .filter(|a| matches!(a, Action::Send { to, message: Message::Append { .. } } if *to == cut))
        .count();
    assert_eq!(to_cut, 0, "no appends to a follower that cannot be reached");
    c.run(leader, out);
    // A heartbeat answered: the follower is back and catches up.
    c.ticks(4);
    let last = c.node(leader).last_index();
    assert_eq!(c.node(cut).last_index(), last);
}

#[test]
fn entries_released_from_memory_are_read_back_from_storage_for_a_lagging_follower() {
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2], |_| {});
    c.ticks(40);
    let leader = c.leader().expect("a leader");
    for k in 0..30u8 {
        c.propose(leader, &[k]);
    }
    let commit = c.node(leader).commit_index();
    c.node(leader).release(commit);
    assert!(
        c.node(leader).log().entries().is_empty(),
        "nothing left in memory"
    );
    assert_eq!(c.node(leader).log().tail_start(), commit + 1);
    // A new replica needs all of it: the leader reads it back from its storage.
    c.change(leader, quiver_raft::MembershipChange::AddLearner(3))
        .expect("added");
    c.ticks(6);
    assert!(c.read_back >= 30, "read back {} entries", c.read_back);
    assert_eq!(c.node(3).last_index(), c.node(leader).last_index());
    assert_eq!(
        c.stores[&3].entries().len(),
        c.stores[&leader].entries().len()
    );
}
