//! The controller's state machine and decisions: commands applied all or nothing, placement
//! over nodes, racks and shards, moves and decommissions, the command codec.

use std::collections::{BTreeMap, BTreeSet};

use quiver_cluster::placement::{default_replication_factor, place, PlacementError};
use quiver_cluster::{apply, Command, CommandError, Metadata, NodeMeta};

fn node(rack: Option<&str>, shards: usize) -> NodeMeta {
    NodeMeta {
        client_addr: "127.0.0.1:1".into(),
        internal_addr: "127.0.0.1:2".into(),
        rack: rack.map(str::to_string),
        shards,
        decommissioned: false,
    }
}

fn cluster(racks: &[Option<&str>], shards: usize) -> Metadata {
    let mut m = Metadata::default();
    for (i, r) in racks.iter().enumerate() {
        apply(
            &mut m,
            &Command::RegisterNode {
                node: i as i32 + 1,
                meta: node(*r, shards),
            },
        )
        .expect("registered");
    }
    m
}

fn create(m: &mut Metadata, name: &str, partitions: usize, rf: usize) {
    let parts = place(m, partitions, rf).expect("placed");
    apply(
        m,
        &Command::CreateTopic {
            name: name.into(),
            partitions: parts,
            configs: BTreeMap::new(),
        },
    )
    .expect("created");
}

#[test]
fn placement_spreads_replicas_leaders_and_shards_evenly() {
    let mut m = cluster(&[None, None, None, None, None], 2);
    create(&mut m, "a", 10, 3);
    create(&mut m, "b", 7, 3);
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    let mut replicas: BTreeMap<i32, usize> = BTreeMap::new();
    let mut shards: BTreeMap<(i32, usize), usize> = BTreeMap::new();
    for p in m.topics.values().flat_map(|t| &t.partitions) {
        let distinct: BTreeSet<_> = p.replicas.iter().collect();
        assert_eq!(distinct.len(), 3, "distinct nodes: {:?}", p.replicas);
        assert_eq!(
            p.replicas[0], p.leader,
            "the first replica is the preferred leader"
        );
        *leaders.entry(p.leader).or_default() += 1;
        *shards.entry((p.leader, p.shard)).or_default() += 1;
        for r in &p.replicas {
            *replicas.entry(*r).or_default() += 1;
        }
    }
    fn spread<K>(v: &BTreeMap<K, usize>) -> usize {
        v.values().max().copied().unwrap_or(0) - v.values().min().copied().unwrap_or(0)
    }
    assert!(spread(&leaders) <= 1, "leaders per node: {leaders:?}");
    assert!(spread(&replicas) <= 1, "replicas per node: {replicas:?}");
    assert!(spread(&shards) <= 1, "led partitions per shard: {shards:?}");
    // Each node shares partitions with every other: its failure spreads over all of them.
    let mut peers: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
    for p in m.topics.values().flat_map(|t| &t.partitions) {
        for a in &p.replicas {
            peers
                .entry(*a)
                .or_default()
                .extend(p.replicas.iter().filter(|b| *b != a));
        }
    }
    assert!(peers.values().all(|s| s.len() == 4), "peers: {peers:?}");
}

#[test]
fn placement_prefers_distinct_racks() {
    let m = cluster(&[Some("a"), Some("a"), Some("b"), Some("b"), Some("c")], 1);
    for p in place(&m, 12, 3).expect("placed") {
        let racks: BTreeSet<_> = p.replicas.iter().map(|r| m.nodes[r].rack.clone()).collect();
        assert_eq!(racks.len(), 3, "one replica per rack: {:?}", p.replicas);
    }
}

#[test]
fn placement_refuses_what_the_cluster_cannot_hold() {
    assert_eq!(
        place(&Metadata::default(), 1, 1),
        Err(PlacementError::NoNodes)
    );
    let m = cluster(&[None, None], 1);
    assert_eq!(
        place(&m, 1, 3),
        Err(PlacementError::NotEnoughNodes {
            replication_factor: 3,
            nodes: 2
        })
    );
    assert_eq!(place(&m, 1, 0), Err(PlacementError::ZeroReplicationFactor));
    assert_eq!(default_replication_factor(1), 1);
    assert_eq!(default_replication_factor(2), 2);
    assert_eq!(default_replication_factor(7), 3);
}

#[test]
fn commands_apply_all_or_nothing_with_typed_errors() {
    let mut m = cluster(&[None, None, None], 1);
    create(&mut m, "t", 3, 3);
    let before = m.clone();
    let refused = [
        (
            Command::CreateTopic {
                name: "t".into(),
                partitions: before.topics["t"].partitions.clone(),
                configs: BTreeMap::new(),
            },
            CommandError::TopicExists("t".into()),
        ),
        (
            Command::SetLeader {
                topic: "t".into(),
                partition: 5,
                leader: 1,
                leader_epoch: 1,
            },
            CommandError::UnknownPartition {
                topic: "t".into(),
                partition: 5,
            },
        ),
        (
            Command::SetReplicas {
                topic: "t".into(),
                partition: 0,
                replicas: vec![1, 1],
            },
            CommandError::InvalidReplicas("node 1 is listed twice".into()),
        ),
        (
            Command::SetReplicas {
                topic: "t".into(),
                partition: 0,
                replicas: vec![9],
            },
            CommandError::UnknownNode(9),
        ),
        (
            Command::UnregisterNode { node: 2 },
            CommandError::NodeHasReplicas {
                node: 2,
                replicas: 3,
            },
        ),
        (
            Command::DeleteTopic { name: "x".into() },
            CommandError::UnknownTopic("x".into()),
        ),
    ];
    for (cmd, err) in refused {
        assert_eq!(apply(&mut m, &cmd), Err(err));
        assert_eq!(m, before, "a refused command changes nothing");
    }
    let leader = m.topics["t"].partitions[0].replicas[1];
    apply(
        &mut m,
        &Command::SetLeader {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch: 4,
        },
    )
    .expect("a newer epoch");
    assert_eq!(
        apply(
            &mut m,
            &Command::SetLeader {
                topic: "t".into(),
                partition: 0,
                leader,
                leader_epoch: 3,
            }
        ),
        Err(CommandError::StaleEpoch {
            recorded: 4,
            proposed: 3
        })
    );
    assert_eq!(m.version, before.version + 1);
    let set: BTreeMap<String, String> = [("retention_ms".to_string(), "5".to_string())].into();
    apply(
        &mut m,
        &Command::AlterTopicConfigs {
            name: "t".into(),
            set,
            unset: vec![],
        },
    )
    .expect("altered");
    assert_eq!(m.topics["t"].configs["retention_ms"], "5");
}

#[test]
fn the_command_codec_round_trips_and_refuses_garbage() {
    let cmd = Command::RegisterNode {
        node: 3,
        meta: node(Some("r1"), 2),
    };
    assert_eq!(Command::decode(&cmd.encode()), Ok(cmd));
    assert!(matches!(
        Command::decode(b"{\"op\":\"nope\"}"),
        Err(CommandError::Malformed(_))
    ));
    assert!(matches!(
        Command::decode(b"\xff"),
        Err(CommandError::Malformed(_))
    ));
    let big = vec![b' '; quiver_cluster::command::MAX_COMMAND_BYTES + 1];
    assert!(matches!(
        Command::decode(&big),
        Err(CommandError::TooLarge { .. })
    ));
}

#[test]
fn a_move_records_its_target_and_setreplicas_ends_it_in_the_targets_order() {
    let mut m = cluster(&[None, None, None, None], 1);
    create(&mut m, "t", 1, 3);
    let p = m.topics["t"].partitions[0].clone();
    let outside = (1..=4).find(|n| !p.replicas.contains(n)).unwrap();
    let target = vec![p.replicas[1], p.replicas[2], outside];
    apply(
        &mut m,
        &Command::MovePartition {
            topic: "t".into(),
            partition: 0,
            target: target.clone(),
        },
    )
    .expect("a move starts");
    let moving = &m.topics["t"].partitions[0];
    assert_eq!(
        (&moving.replicas, &moving.target),
        (&p.replicas, &Some(target.clone()))
    );
    assert!(
        moving.hosted_by(outside),
        "the new replica hosts it during the move"
    );
    // One move at a time: a replica the running move added may vote already.
    let before = m.clone();
    assert_eq!(
        apply(
            &mut m,
            &Command::MovePartition {
                topic: "t".into(),
                partition: 0,
                target: p.replicas.clone(),
            },
        ),
        Err(CommandError::MoveInProgress {
            topic: "t".into(),
            partition: 0,
            target: target.clone(),
        })
    );
    assert_eq!(m, before);
    assert!(matches!(
        quiver_cluster::placement::decommission_moves(&m, outside),
        Err(quiver_cluster::placement::DecommissionError::MoveInProgress { .. })
    ));
    // The new replica may be elected mid-move; then the move ends.
    apply(
        &mut m,
        &Command::SetLeader {
            topic: "t".into(),
            partition: 0,
            leader: outside,
            leader_epoch: 5,
        },
    )
    .expect("a target replica may lead");
    let mut sorted = target.clone();
    sorted.sort();
    apply(
        &mut m,
        &Command::SetReplicas {
            topic: "t".into(),
            partition: 0,
            replicas: sorted,
        },
    )
    .expect("done");
    let done = &m.topics["t"].partitions[0];
    assert_eq!((&done.replicas, &done.target), (&target, &None));
    // Another order of the same replicas changes only the preferred leader, at once.
    let reordered = vec![target[2], target[0], target[1]];
    apply(
        &mut m,
        &Command::MovePartition {
            topic: "t".into(),
            partition: 0,
            target: reordered.clone(),
        },
    )
    .expect("reordered");
    let p = &m.topics["t"].partitions[0];
    assert_eq!((&p.replicas, &p.target), (&reordered, &None));
}

#[test]
fn single_replica_partitions_do_not_move_and_bad_targets_are_refused() {
    let mut m = cluster(&[None, None, None], 1);
    create(&mut m, "one", 1, 1);
    create(&mut m, "t", 1, 3);
    let before = m.clone();
    let refused = [
        (
            Command::MovePartition {
                topic: "one".into(),
                partition: 0,
                target: vec![1, 2],
            },
            CommandError::NotReplicated {
                topic: "one".into(),
                partition: 0,
            },
        ),
        (
            Command::MovePartition {
                topic: "t".into(),
                partition: 0,
                target: vec![1, 9],
            },
            CommandError::UnknownNode(9),
        ),
        (
            Command::MovePartition {
                topic: "nope".into(),
                partition: 0,
                target: vec![1, 2],
            },
            CommandError::UnknownTopic("nope".into()),
        ),
    ];
    for (cmd, err) in refused {
        assert_eq!(apply(&mut m, &cmd), Err(err));
        assert_eq!(m, before, "a refused command changes nothing");
    }
    assert!(matches!(
        quiver_cluster::placement::decommission_moves(&m, 1),
        Err(quiver_cluster::placement::DecommissionError::SingleReplica { .. })
            | Err(quiver_cluster::placement::DecommissionError::NoNodeLeft { .. })
    ));
}

#[test]
fn decommissioning_moves_every_replica_off_the_node_and_keeps_new_ones_off_it() {
    let mut m = cluster(&[Some("a"), Some("a"), Some("b"), Some("b"), Some("c")], 1);
    create(&mut m, "t", 6, 3);
    let moves = quiver_cluster::placement::decommission_moves(&m, 5).expect("placed");
    let held = m.topics["t"]
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&5))
        .count();
    assert_eq!(moves.len(), held);
    for mv in &moves {
        let p = &m.topics["t"].partitions[mv.partition as usize];
        assert!(!mv.target.contains(&5) && mv.target.len() == 3, "{mv:?}");
        let kept: Vec<i32> = p.replicas.iter().copied().filter(|r| *r != 5).collect();
        assert_eq!(
            &mv.target[..2],
            &kept[..],
            "the staying replicas keep their order"
        );
    }
    apply(&mut m, &Command::DecommissionNode { node: 5, moves }).expect("decommissioned");
    assert!(m.nodes[&5].decommissioned);
    // A restart registers again: the decommission holds.
    apply(
        &mut m,
        &Command::RegisterNode {
            node: 5,
            meta: node(Some("c"), 1),
        },
    )
    .unwrap();
    assert!(m.nodes[&5].decommissioned);
    for p in place(&m, 20, 3).expect("placed") {
        assert!(!p.replicas.contains(&5), "{:?}", p.replicas);
    }
    create(&mut m, "u", 1, 3);
    let p = &m.topics["u"].partitions[0];
    let target = vec![p.replicas[0], p.replicas[1], 5];
    assert_eq!(
        apply(
            &mut m,
            &Command::MovePartition {
                topic: "u".into(),
                partition: 0,
                target,
            },
        ),
        Err(CommandError::Decommissioned(5))
    );
    // Unregistering waits until no move still involves the node.
    assert!(apply(&mut m, &Command::UnregisterNode { node: 5 }).is_err());
}
