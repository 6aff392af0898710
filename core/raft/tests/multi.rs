//! Many groups per node: one clock, messages coalesced into one envelope per node pair per
//! round, the group limit, and messages for groups that do not run here.

use quiver_raft::multi::{Envelope, MultiConfig, MultiError, MultiRaft};
use quiver_raft::sim::local_cluster::LocalCluster;
use quiver_raft::types::{Config, HardState, Message};

#[test]
fn a_thousand_groups_elect_commit_and_share_one_envelope_per_node_pair() {
    let groups = 1_000;
    let mut c = LocalCluster::new(3, groups, |_| {}).expect("created");
    let mut rounds = 0;
    while c.groups_led() < groups as usize {
        rounds += 1;
        assert!(
            rounds < 300,
            "only {} groups led after 300 rounds",
            c.groups_led()
        );
        c.round();
    }
    // Idle: every round's heartbeats for up to 1,000 groups travel in one envelope per pair.
    let mut heartbeats = 0;
    for _ in 0..20 {
        let s = c.round();
        assert!(
            s.max_envelopes_per_pair <= 1,
            "{} envelopes between one node pair in a round",
            s.max_envelopes_per_pair
        );
        heartbeats += s.heartbeats;
    }
    assert!(
        heartbeats >= groups * 2 * 20 / 2 / 2,
        "every led group heartbeats its followers: {heartbeats}"
    );
    // Proposals to every 10th group commit everywhere.
    let before = c.committed;
    for g in (0..groups).step_by(10) {
        c.propose(g, g.to_be_bytes().to_vec()).expect("proposed");
    }
    c.deliver_now();
    // Followers learn the commit index from the next heartbeats.
    c.round();
    c.round();
    assert_eq!(
        c.committed - before,
        groups / 10,
        "each proposal committed once"
    );
    for g in (0..groups).step_by(10) {
        let leader = c.leader_of(g).expect("a leader");
        let commit = c.nodes[leader].group(g).expect("group").commit_index();
        for n in &c.nodes {
            assert_eq!(n.group(g).expect("group").commit_index(), commit);
        }
    }
}

#[test]
fn the_group_limit_and_unknown_groups_are_refused_with_typed_errors() {
    let mut m = MultiRaft::new(MultiConfig {
        max_groups: 2,
        ..MultiConfig::new(1)
    });
    let add = |m: &mut MultiRaft, g| {
        m.add_group(
            g,
            Config::new(1, vec![1, 2, 3]),
            HardState::default(),
            None,
            Vec::new(),
        )
    };
    add(&mut m, 1).expect("first");
    assert_eq!(add(&mut m, 1), Err(MultiError::GroupExists(1)));
    add(&mut m, 2).expect("second");
    assert_eq!(
        add(&mut m, 3),
        Err(MultiError::TooManyGroups { max_groups: 2 })
    );
    assert!(matches!(
        m.propose(7, b"x".to_vec()),
        Err(MultiError::UnknownGroup(7))
    ));
    let out = m.step(
        2,
        Envelope {
            messages: vec![(
                9,
                Message::Heartbeat {
                    term: 1,
                    commit: 0,
                    round: 0,
                },
            )],
        },
    );
    assert!(out.is_empty());
    assert_eq!(m.stats().unknown_group_messages, 1);
}

#[test]
fn an_envelope_past_its_byte_limit_is_split() {
    let mut m = MultiRaft::new(MultiConfig {
        max_envelope_bytes: 200,
        ..MultiConfig::new(1)
    });
    for g in 0..20 {
        m.add_group(
            g,
            Config::new(1, vec![1, 2]),
            HardState::default(),
            None,
            Vec::new(),
        )
        .expect("added");
    }
    // Every group's election timer fires within 20 ticks: 20 pre-votes to node 2.
    for _ in 0..20 {
        m.tick();
    }
    let envelopes = m.flush();
    assert!(envelopes.len() > 1, "{} envelopes", envelopes.len());
    let total: usize = envelopes.iter().map(|(_, e)| e.messages.len()).sum();
    assert_eq!(total, 20);
    for (to, e) in &envelopes {
        assert_eq!(*to, 2);
        assert!(e.size_bytes() <= 200 || e.messages.len() == 1);
    }
}

#[test]
fn a_removed_group_sends_nothing_it_had_queued() {
    let mut m = MultiRaft::new(MultiConfig::new(1));
    for g in [1, 2] {
        m.add_group(
            g,
            Config::new(1, vec![1, 2, 3]),
            HardState::default(),
            None,
            Vec::new(),
        )
        .expect("added");
    }
    // Both groups' election timeouts pass: each queues (pre-)vote requests for 2 and 3.
    for _ in 0..100 {
        m.tick();
    }
    // Group 1 cannot persist (say): removed before the round's flush, its requests go too.
    assert!(m.remove_group(1).is_some());
    let out = m.flush();
    assert!(!out.is_empty(), "group 2 still campaigns");
    for (_, envelope) in out {
        assert!(
            envelope.messages.iter().all(|(g, _)| *g == 2),
            "a removed group's message left: {:?}",
            envelope.messages
        );
    }
}
