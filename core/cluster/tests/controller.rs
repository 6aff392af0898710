//! The controller's state machine and decisions: commands applied all or nothing, placement
//! over nodes, racks and shards, leadership back to preferred replicas, the command codec.

use std::collections::{BTreeMap, BTreeSet};

use quiver_cluster::placement::{default_replication_factor, place, PlacementError};
use quiver_cluster::rebalance::preferred_leader_moves;
use quiver_cluster::{apply, Command, CommandError, Metadata, NodeMeta};

fn node(rack: Option<&str>, shards: usize) -> NodeMeta {
    NodeMeta {
        client_addr: "127.0.0.1:1".into(),
        internal_addr: "127.0.0.1:2".into(),
        rack: rack.map(str::to_string),
        shards,
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
fn a_returning_node_gets_its_preferred_leaderships_back_in_steps() {
    let mut m = cluster(&[None, None, None], 1);
    create(&mut m, "t", 6, 3);
    // Node 1 was down: its partitions are led by their second replica.
    let led_by_1: Vec<usize> = (0..6)
        .filter(|i| m.topics["t"].partitions[*i].leader == 1)
        .collect();
    assert_eq!(led_by_1.len(), 2);
    for &i in &led_by_1 {
        let to = m.topics["t"].partitions[i].replicas[1];
        apply(
            &mut m,
            &Command::SetLeader {
                topic: "t".into(),
                partition: i as i32,
                leader: to,
                leader_epoch: 1,
            },
        )
        .expect("failover recorded");
    }
    let live_without_1: BTreeSet<i32> = [2, 3].into();
    assert!(preferred_leader_moves(&m, &live_without_1, 10).is_empty());
    let live: BTreeSet<i32> = [1, 2, 3].into();
    let moves = preferred_leader_moves(&m, &live, 10);
    assert_eq!(moves.len(), 2);
    assert!(moves.iter().all(|mv| mv.to == 1));
    assert_eq!(
        preferred_leader_moves(&m, &live, 1).len(),
        1,
        "bounded per round"
    );
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
