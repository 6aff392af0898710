//! The coordinator driven by simulated members: heartbeats in rounds, each member owning what
//! its last answer gave it, with the invariants checked at every step.

use super::*;

fn topics(n: i32) -> TopicCounts {
    [("t".to_string(), n)].into_iter().collect()
}

fn fast() -> GroupConfig {
    GroupConfig {
        session_timeout_ms: 3_000,
        heartbeat_interval_ms: 300,
        assignor: AssignorKind::Uniform,
        ..GroupConfig::default()
    }
}

/// A simulated member: what it owns is what its last heartbeat answer gave it.
struct Sim {
    id: String,
    instance: Option<String>,
    epoch: i32,
    owned: Vec<TopicPartition>,
}

impl Sim {
    fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            instance: None,
            epoch: JOIN_EPOCH,
            owned: Vec::new(),
        }
    }

    fn hb(&self) -> Heartbeat {
        Heartbeat {
            group: "g".into(),
            member_id: self.id.clone(),
            instance_id: self.instance.clone(),
            client_id: "test".into(),
            member_epoch: self.epoch,
            rebalance_timeout_ms: 10_000,
            subscribed: Some(vec!["t".into()]),
            assignor: None,
            owned: self.owned.clone(),
        }
    }

    /// One heartbeat; like the client, a member that gave partitions up heartbeats again at
    /// once, to tell the coordinator they are free.
    fn beat(&mut self, c: &mut Coordinator, now: u64, t: &TopicCounts) -> Vec<Record> {
        let mut records = Vec::new();
        for _ in 0..2 {
            let (o, r) = c.heartbeat(&self.hb(), now, t).expect("heartbeat");
            records.extend(r);
            self.epoch = o.member_epoch;
            let revoked = self.owned.iter().any(|p| !o.assignment.contains(p));
            self.owned = o.assignment;
            if !revoked {
                break;
            }
        }
        records
    }
}

fn no_partition_owned_twice(sims: &[Sim]) {
    let mut seen = BTreeSet::new();
    for s in sims {
        for p in &s.owned {
            assert!(seen.insert(p.clone()), "{p:?} owned by two members");
        }
    }
}

/// Heartbeats every member in turn until the group is stable (bounded).
fn settle(c: &mut Coordinator, sims: &mut [Sim], now: &mut u64, t: &TopicCounts) -> usize {
    for round in 1..=20 {
        for s in sims.iter_mut() {
            s.beat(c, *now, t);
        }
        *now += 300;
        no_partition_owned_twice(sims);
        if c.describe("g").map(|d| d.state) == Ok(GroupState::Stable) {
            return round;
        }
    }
    panic!("group did not settle in 20 rounds: {:?}", c.describe("g"));
}

#[test]
fn three_members_settle_disjoint_complete_and_even() {
    let mut c = Coordinator::new(Limits::default(), fast());
    let t = topics(12);
    let mut sims: Vec<Sim> = ["a", "b", "c"].iter().map(|id| Sim::new(id)).collect();
    let mut now = 0;
    settle(&mut c, &mut sims, &mut now, &t);
    let all: BTreeSet<_> = sims.iter().flat_map(|s| s.owned.clone()).collect();
    assert_eq!(all.len(), 12);
    assert!(sims.iter().all(|s| s.owned.len() == 4));
}

#[test]
fn a_join_moves_partitions_only_after_their_owner_revoked_them() {
    let mut c = Coordinator::new(Limits::default(), fast());
    let t = topics(8);
    let mut sims = vec![Sim::new("a")];
    let mut now = 0;
    settle(&mut c, &mut sims, &mut now, &t);
    assert_eq!(sims[0].owned.len(), 8);
    let kept_before: BTreeSet<_> = sims[0].owned.iter().cloned().collect();
    sims.push(Sim::new("b"));
    let rounds = settle(&mut c, &mut sims, &mut now, &t);
    assert!(
        rounds <= 2,
        "a join settles within 2 heartbeat intervals, took {rounds}"
    );
    assert_eq!((sims[0].owned.len(), sims[1].owned.len()), (4, 4));
    // "a" kept four of its own throughout.
    assert!(sims[0].owned.iter().all(|p| kept_before.contains(p)));
}

#[test]
fn an_expired_member_s_partitions_go_to_the_others() {
    let mut c = Coordinator::new(Limits::default(), fast());
    let t = topics(6);
    let mut sims: Vec<Sim> = ["a", "b", "c"].iter().map(|id| Sim::new(id)).collect();
    let mut now = 0;
    settle(&mut c, &mut sims, &mut now, &t);
    // "c" dies: the others keep beating; after its session it is removed.
    let mut dead = sims.pop().expect("three members");
    for _ in 0..11 {
        for s in sims.iter_mut() {
            s.beat(&mut c, now, &t);
        }
        c.tick(now, &t);
        now += 300;
    }
    assert!(c.describe("g").expect("group").members.len() == 2);
    settle(&mut c, &mut sims, &mut now, &t);
    assert_eq!((sims[0].owned.len(), sims[1].owned.len()), (3, 3));
    // The dead member's next heartbeat is refused.
    dead.epoch = 2;
    assert!(matches!(
        c.heartbeat(&dead.hb(), now, &t),
        Err(GroupError::UnknownMemberId { .. })
    ));
}

#[test]
fn a_fenced_epoch_is_refused_and_changes_nothing() {
    let mut c = Coordinator::new(Limits::default(), fast());
    let t = topics(4);
    let mut sims = vec![Sim::new("a"), Sim::new("b")];
    let mut now = 0;
    settle(&mut c, &mut sims, &mut now, &t);
    let before = c.describe("g").expect("group");
    let mut zombie = sims[0].hb();
    zombie.member_epoch += 5;
    assert!(matches!(
        c.heartbeat(&zombie, now, &t),
        Err(GroupError::FencedMemberEpoch { .. })
    ));
    assert_eq!(c.describe("g").expect("group"), before);
}

#[test]
fn commits_are_fenced_by_member_and_epoch_and_ownership() {
    let mut c = Coordinator::new(Limits::default(), fast());
    let t = topics(2);
    let mut sims = vec![Sim::new("a"), Sim::new("b")];
    let mut now = 0;
    settle(&mut c, &mut sims, &mut now, &t);
    let a = &sims[0];
    let mine = a.owned[0].clone();
    let theirs = sims[1].owned[0].clone();
    let commit = |member: &str, epoch: i32, tp: &TopicPartition| OffsetCommit {
        group: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        offsets: vec![(tp.clone(), 10, String::new())],
    };
    let (outcomes, records) = c
        .commit(&commit("a", a.epoch, &mine), now, 1)
        .expect("commit");
    assert_eq!(outcomes, vec![Ok(())]);
    assert_eq!(records.len(), 1);
    let (outcomes, records) = c
        .commit(&commit("a", a.epoch, &theirs), now, 1)
        .expect("commit");
    assert!(matches!(
        outcomes[0],
        Err(GroupError::UnassignedPartition { .. })
    ));
    assert!(records.is_empty());
    assert!(matches!(
        c.commit(&commit("a", a.epoch - 1, &mine), now, 1),
        Err(GroupError::StaleGeneration { .. })
    ));
    assert!(matches!(
        c.commit(&commit("a", a.epoch + 1, &mine), now, 1),
        Err(GroupError::FencedMemberEpoch { .. })
    ));
    assert!(matches!(
        c.commit(&commit("nobody", 1, &mine), now, 1),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert!(matches!(
        c.commit(&commit("", 0, &mine), now, 1),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert_eq!(
        c.committed("g", std::slice::from_ref(&mine))[0].1.offset,
        10
    );
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_partitions() {
    let mut c = Coordinator::new(Limits::default(), fast());
    let t = topics(6);
    let mut sims = vec![Sim::new("a"), Sim::new("b")];
    sims[0].instance = Some("host-a".into());
    let mut now = 0;
    settle(&mut c, &mut sims, &mut now, &t);
    let epoch = c.describe("g").expect("group").epoch;
    let owned_before = sims[0].owned.clone();
    // Leaves for a restart, comes back with a new member id and the same instance id.
    let mut leave = sims[0].hb();
    leave.member_epoch = STATIC_LEAVE_EPOCH;
    c.heartbeat(&leave, now, &t).expect("static leave");
    let mut again = Sim::new("a2");
    again.instance = Some("host-a".into());
    again.beat(&mut c, now + 1_000, &t);
    assert_eq!(again.owned, owned_before);
    assert_eq!(
        c.describe("g").expect("group").epoch,
        epoch,
        "no reassignment"
    );
}

#[test]
fn replaying_the_records_rebuilds_the_same_state() {
    let mut c = Coordinator::new(Limits::default(), fast());
    let t = topics(5);
    let mut log = Vec::new();
    let mut sims: Vec<Sim> = ["a", "b"].iter().map(|id| Sim::new(id)).collect();
    for round in 0..4u64 {
        for s in sims.iter_mut() {
            log.extend(s.beat(&mut c, round * 300, &t));
        }
    }
    let tp = sims[0].owned[0].clone();
    let (_, r) = c
        .commit(
            &OffsetCommit {
                group: "g".into(),
                member_id: "a".into(),
                member_epoch: sims[0].epoch,
                offsets: vec![(tp, 3, "m".into())],
            },
            1_200,
            5,
        )
        .expect("commit");
    log.extend(r);
    let mut rebuilt = Coordinator::new(Limits::default(), fast());
    for r in &log {
        let (k, v) = r.encode();
        let decoded = Record::decode(&k, v.as_deref()).expect("decodes");
        rebuilt.replay(&decoded, 1_200);
    }
    assert_eq!(rebuilt.describe("g"), c.describe("g"));
}

#[test]
fn delete_is_refused_while_members_live() {
    let mut c = Coordinator::new(Limits::default(), fast());
    let t = topics(2);
    let mut sims = vec![Sim::new("a")];
    let mut now = 0;
    settle(&mut c, &mut sims, &mut now, &t);
    assert!(matches!(
        c.delete("g", false, now),
        Err(GroupError::GroupNotEmpty(_))
    ));
    let records = c.delete("g", true, now).expect("forced delete");
    assert!(!records.is_empty());
    assert!(c.describe("g").is_err());
    assert!(c.list().is_empty());
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        max_members_per_group: 1,
        ..Limits::default()
    };
    let mut c = Coordinator::new(limits, fast());
    let t = topics(2);
    Sim::new("a").beat(&mut c, 0, &t);
    assert!(matches!(
        c.heartbeat(&Sim::new("b").hb(), 0, &t),
        Err(GroupError::LimitExceeded { .. })
    ));
    let mut long = Sim::new("x").hb();
    long.member_id = "x".repeat(300);
    assert!(matches!(
        c.heartbeat(&long, 0, &t),
        Err(GroupError::LimitExceeded { .. })
    ));
    let bad = GroupConfig {
        session_timeout_ms: 10,
        ..fast()
    };
    assert!(matches!(
        c.alter_config("g", bad, 0),
        Err(GroupError::Invalid(_))
    ));
}

#[test]
fn alter_config_keys_changes_only_the_named_keys_and_refuses_unknown_ones() {
    let mut co = Coordinator::new(Limits::default(), GroupConfig::default());
    let records = co
        .alter_config_keys("g", &[("heartbeat_interval_ms".into(), "250".into())], 0)
        .expect("a known key");
    for r in &records {
        co.replay(r, 0);
    }
    let d = co.describe("g").expect("created by the change");
    assert_eq!(d.config.heartbeat_interval_ms, 250);
    assert_eq!(
        d.config.session_timeout_ms,
        GroupConfig::default().session_timeout_ms
    );
    let err = co
        .alter_config_keys("g", &[("nope".into(), "1".into())], 0)
        .expect_err("unknown key");
    assert!(
        err.to_string().contains("unknown group config key"),
        "{err}"
    );
    let err = co
        .alter_config_keys("g", &[("session_timeout_ms".into(), "10".into())], 0)
        .expect_err("below the node's bound");
    assert!(err.to_string().contains("bounds"), "{err}");
    assert_eq!(
        co.describe("g")
            .expect("still there")
            .config
            .heartbeat_interval_ms,
        250
    );
}

#[test]
fn a_transaction_s_late_offsets_never_move_the_group_back() {
    let limits = Limits {
        max_txn_ids_per_group: 2,
        ..Limits::default()
    };
    let mut c = Coordinator::new(limits.clone(), fast());
    let tp = TopicPartition::new("t", 0);
    let commit = |offset: i64| OffsetCommit {
        group: "g".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![(tp.clone(), offset, String::new())],
    };
    let stamp = |id: &str, producer_id: i64, epoch: i16| TxnStamp {
        transactional_id: id.into(),
        producer_id,
        epoch,
    };
    let committed = |c: &Coordinator| c.committed("g", std::slice::from_ref(&tp))[0].1.offset;
    let mut log = Vec::new();
    // Transaction at epoch 5 commits 10, the next (epoch 6) commits 20.
    log.extend(c.commit_from_transaction(&commit(10), Some(&stamp("a", 1, 5)), 0, 1));
    log.extend(c.commit_from_transaction(&commit(20), Some(&stamp("a", 1, 6)), 0, 2));
    assert_eq!(committed(&c), 20);
    // The first one's call again, late (or retried): nothing written.
    assert!(c
        .commit_from_transaction(&commit(10), Some(&stamp("a", 1, 5)), 0, 3)
        .is_empty());
    assert!(c
        .commit_from_transaction(&commit(20), Some(&stamp("a", 1, 6)), 0, 3)
        .is_empty());
    assert_eq!(committed(&c), 20);
    // A fresh producer id of the id (epochs exhausted) orders after the old one.
    log.extend(c.commit_from_transaction(&commit(30), Some(&stamp("a", 2, 0)), 0, 4));
    assert_eq!(committed(&c), 30);
    // Another transactional id is ordered on its own; the oldest id beyond the limit of 2
    // is forgotten.
    log.extend(c.commit_from_transaction(&commit(31), Some(&stamp("b", 3, 0)), 0, 5));
    log.extend(c.commit_from_transaction(&commit(32), Some(&stamp("c", 4, 0)), 0, 6));
    assert_eq!(c.group("g").map(|g| g.txn_offsets.len()), Some(2));
    // What the records say survives a reload (a coordinator moving).
    let mut reloaded = Coordinator::new(limits, fast());
    for r in &log {
        let (k, v) = r.encode();
        reloaded.replay(&Record::decode(&k, v.as_deref()).expect("decode"), 0);
    }
    assert_eq!(
        reloaded.group("g").map(|g| g.txn_offsets.clone()),
        c.group("g").map(|g| g.txn_offsets.clone())
    );
    assert!(reloaded
        .commit_from_transaction(&commit(5), Some(&stamp("c", 4, 0)), 0, 7)
        .is_empty());
    // Deleting the group forgets them too.
    c.delete("g", true, 0).expect("delete");
    assert!(c.group("g").is_none());
}
