//! The controller group: three members over a lossless in-test network with instant disks;
//! commands proposed at the leader are applied everywhere in the same order; a member that
//! joins late starts from the metadata image; a new leader continues after the old one stops.

use std::collections::{BTreeMap, BTreeSet};

use quiver_cluster::controller::{Controller, ControllerError};
use quiver_cluster::{Command, CommandError, NodeMeta};
use quiver_raft::log::RaftLog;
use quiver_raft::types::{Action, Config, HardState, MembershipChange};

struct Net {
    members: BTreeMap<u64, Controller>,
    /// Each member's disk: hard state and log.
    disks: BTreeMap<u64, (HardState, RaftLog)>,
    down: BTreeSet<u64>,
}

impl Net {
    fn new(ids: &[u64], voters: &[u64]) -> Self {
        let mut members = BTreeMap::new();
        for &id in ids {
            let c = Controller::new(
                Config::new(id, voters.to_vec()),
                HardState::default(),
                None,
                Vec::new(),
                "test-cluster",
            )
            .expect("a new controller");
            members.insert(id, c);
        }
        let disks = ids
            .iter()
            .map(|&id| (id, (HardState::default(), RaftLog::default())))
            .collect();
        Self {
            members,
            disks,
            down: BTreeSet::new(),
        }
    }

    fn run(&mut self, from: u64, actions: Vec<Action>) {
        let mut queue: Vec<(u64, Action)> = actions.into_iter().map(|a| (from, a)).collect();
        let mut steps = 0;
        while !queue.is_empty() {
            steps += 1;
            assert!(steps < 200_000, "does not settle");
            let (at, a) = queue.remove(0);
            if self.down.contains(&at) {
                continue;
            }
            let more = match a {
                Action::PersistHardState(h) => {
                    self.disks.entry(at).or_default().0 = h;
                    Vec::new()
                }
                Action::PersistEntries {
                    write,
                    first_index,
                    entries,
                    ..
                } => {
                    let log = &mut self.disks.entry(at).or_default().1;
                    log.truncate_after(first_index - 1);
                    log.extend(entries);
                    self.members
                        .get_mut(&at)
                        .map_or(Vec::new(), |m| m.persisted(write))
                }
                Action::InstallSnapshot { write, snapshot } => {
                    self.disks.entry(at).or_default().1.reset(snapshot);
                    self.members
                        .get_mut(&at)
                        .map_or(Vec::new(), |m| m.persisted(write))
                }
                Action::Send { to, message } => {
                    if self.down.contains(&to) {
                        continue;
                    }
                    if let Some(m) = self.members.get_mut(&to) {
                        let out = m.step(at, message);
                        queue.extend(out.into_iter().map(|a| (to, a)));
                    }
                    continue;
                }
                _ => Vec::new(),
            };
            queue.extend(more.into_iter().map(|a| (at, a)));
        }
    }

    fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            let ids: Vec<u64> = self.members.keys().copied().collect();
            for id in ids {
                if self.down.contains(&id) {
                    continue;
                }
                let out = self.members.get_mut(&id).expect("member").tick();
                self.run(id, out);
            }
        }
    }

    fn leader(&self) -> u64 {
        *self
            .members
            .iter()
            .filter(|(id, m)| !self.down.contains(id) && m.is_leader())
            .map(|(id, _)| id)
            .max_by_key(|id| self.members[id].raft().term())
            .expect("a controller leader")
    }

    fn propose(&mut self, cmd: &Command) -> Result<u64, ControllerError> {
        let l = self.leader();
        let (index, out) = self.members.get_mut(&l).expect("leader").propose(cmd)?;
        self.run(l, out);
        Ok(index)
    }

    fn register(&mut self, node: i32) {
        let meta = NodeMeta {
            client_addr: format!("127.0.0.1:{}", 7000 + node),
            internal_addr: format!("127.0.0.1:{}", 8000 + node),
            rack: None,
            shards: 2,
            decommissioned: false,
        };
        self.propose(&Command::RegisterNode { node, meta })
            .expect("registered");
    }

    /// Restarts member `id` from its disk.
    fn restart(&mut self, id: u64, voters: &[u64]) {
        let (hard, log) = self.disks[&id].clone();
        let snapshot = (log.snapshot().index > 0).then(|| log.snapshot().clone());
        let c = Controller::new(
            Config::new(id, voters.to_vec()),
            hard,
            snapshot,
            log.entries().to_vec(),
            "test-cluster",
        )
        .expect("restarted");
        self.members.insert(id, c);
        self.down.remove(&id);
    }
}

#[test]
fn commands_apply_in_the_same_order_everywhere_and_refusals_are_typed() {
    let mut n = Net::new(&[1, 2, 3], &[1, 2, 3]);
    n.ticks(40);
    for node in 1..=3 {
        n.register(node);
    }
    let leader = n.leader();
    let (index, out) = n
        .members
        .get_mut(&leader)
        .expect("leader")
        .create_topic("events", 6, 3, BTreeMap::new())
        .expect("placed and proposed");
    n.run(leader, out);
    n.ticks(3);
    let image = n.members[&leader].metadata().clone();
    assert_eq!(image.topics["events"].partitions.len(), 6);
    assert_eq!(image.nodes.len(), 3);
    for m in n.members.values() {
        assert_eq!(
            m.metadata(),
            &image,
            "every member applied the same commands"
        );
        assert!(m.applied() >= index);
    }
    let outcomes = n.members.get_mut(&leader).expect("leader").take_outcomes();
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "{outcomes:?}");
    // A follower refuses and names the controller; a command that cannot apply is refused
    // before it is proposed.
    let follower = *[1, 2, 3]
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    assert_eq!(
        n.members
            .get_mut(&follower)
            .expect("follower")
            .propose(&Command::DeleteTopic {
                name: "events".into()
            })
            .err(),
        Some(ControllerError::NotController {
            leader: Some(leader as i32)
        })
    );
    assert_eq!(
        n.members
            .get_mut(&leader)
            .expect("leader")
            .create_topic("events", 1, 1, BTreeMap::new())
            .err(),
        Some(ControllerError::Invalid(CommandError::TopicExists(
            "events".into()
        )))
    );
}

#[test]
fn a_late_member_starts_from_the_metadata_image_and_a_new_leader_continues() {
    let mut n = Net::new(&[1, 2, 3, 4], &[1, 2, 3]);
    n.ticks(40);
    for node in 1..=3 {
        n.register(node);
    }
    n.propose(&Command::CreateTopic {
        name: "a".into(),
        partitions: vec![quiver_cluster::PartitionMeta {
            shard: 0,
            replicas: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            target: None,
        }],
        configs: BTreeMap::new(),
    })
    .expect("created");
    n.ticks(3);
    let leader = n.leader();
    n.members
        .get_mut(&leader)
        .expect("leader")
        .snapshot()
        .expect("compacted to the image");
    // Member 4 joins as a learner: the log it needs is gone, so it gets the image.
    let l = n.leader();
    let (_, out) = n
        .members
        .get_mut(&l)
        .expect("leader")
        .change_membership(MembershipChange::AddLearner(4))
        .expect("added");
    n.run(l, out);
    n.ticks(6);
    assert_eq!(n.members[&4].metadata(), n.members[&leader].metadata());
    assert!(
        n.disks[&4].1.snapshot().index > 0,
        "installed from a snapshot"
    );
    // The leader stops; the two other voters elect a new one, which keeps applying.
    n.down.insert(leader);
    n.ticks(60);
    let next = n.leader();
    assert_ne!(next, leader);
    n.propose(&Command::DeleteTopic { name: "a".into() })
        .expect("the new controller takes commands");
    n.ticks(3);
    assert!(!n.members[&next].metadata().topics.contains_key("a"));
    // The old leader restarts from its disk and catches up.
    n.restart(leader, &[1, 2, 3]);
    n.ticks(10);
    assert_eq!(n.members[&leader].metadata(), n.members[&next].metadata());
}
