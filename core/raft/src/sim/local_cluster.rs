//! [`LocalCluster`]: several [`MultiRaft`] nodes in one process over a lossless in-memory
//! network, disks that are durable at once: what the multi-group tests and the core
//! benchmark (`raft_bench`) drive. Faults are the single-group simulator's business.

use std::collections::BTreeMap;

use crate::multi::{GroupAction, GroupId, MultiConfig, MultiError, MultiRaft};
use crate::types::{Action, Config, HardState, NodeId, Role};

/// Counts of one round (a tick of every node and the messages it caused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoundStats {
    pub envelopes: u64,
    pub messages: u64,
    pub heartbeats: u64,
    /// Most envelopes one node sent to one other node in the round.
    pub max_envelopes_per_pair: u64,
}

/// Several nodes, each running the same groups.
pub struct LocalCluster {
    pub nodes: Vec<MultiRaft>,
    /// Per group, the highest commit index a leader reported.
    commits: BTreeMap<GroupId, u64>,
    /// Entries committed by leaders, all groups together (leaders' no-op entries included).
    pub committed: u64,
}

impl LocalCluster {
    /// `nodes` nodes (ids 1..=nodes), each a voter of groups `0..groups`; `tune` adjusts each
    /// group's settings.
    pub fn new(nodes: u64, groups: u64, tune: impl Fn(&mut Config)) -> Result<Self, MultiError> {
        let ids: Vec<NodeId> = (1..=nodes).collect();
        let mut all = Vec::new();
        for &id in &ids {
            let mut m = MultiRaft::new(MultiConfig::new(id));
            for g in 0..groups {
                let mut c = Config::new(id, ids.clone());
                tune(&mut c);
                m.add_group(g, c, HardState::default(), None, Vec::new())?;
            }
            all.push(m);
        }
        Ok(Self {
            nodes: all,
            commits: BTreeMap::new(),
            committed: 0,
        })
    }

    fn index(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.node() == id)
    }

    /// Carries out the actions of node `i`: writes are durable at once.
    fn process(&mut self, i: usize, mut actions: Vec<GroupAction>) {
        while let Some((g, a)) = actions.pop() {
            match a {
                Action::PersistEntries { write, .. } | Action::InstallSnapshot { write, .. } => {
                    actions.extend(self.nodes[i].persisted(g, write));
                }
                Action::Committed(c) => {
                    let leads = self.nodes[i]
                        .group(g)
                        .is_some_and(|n| n.role() == Role::Leader);
                    if leads {
                        let known = self.commits.entry(g).or_insert(0);
                        if c > *known {
                            self.committed += c - *known;
                            *known = c;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Delivers envelopes until the network is quiet (bounded).
    fn deliver(&mut self, stats: &mut RoundStats) {
        for _ in 0..1_000 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                let from = self.nodes[i].node();
                let mut per_peer: BTreeMap<NodeId, u64> = BTreeMap::new();
                for (to, env) in self.nodes[i].flush() {
                    any = true;
                    stats.envelopes += 1;
                    stats.messages += env.messages.len() as u64;
                    stats.heartbeats += env
                        .messages
                        .iter()
                        .filter(|(_, m)| matches!(m, crate::types::Message::Heartbeat { .. }))
                        .count() as u64;
                    *per_peer.entry(to).or_insert(0) += 1;
                    if let Some(j) = self.index(to) {
                        let actions = self.nodes[j].step(from, env);
                        self.process(j, actions);
                    }
                }
                for n in per_peer.values() {
                    stats.max_envelopes_per_pair = stats.max_envelopes_per_pair.max(*n);
                }
            }
            if !any {
                return;
            }
        }
    }

    /// One tick of every node, then every message it causes.
    pub fn round(&mut self) -> RoundStats {
        let mut stats = RoundStats::default();
        for i in 0..self.nodes.len() {
            let actions = self.nodes[i].tick();
            self.process(i, actions);
        }
        self.deliver(&mut stats);
        stats
    }

    /// The node leading `group`, if any.
    pub fn leader_of(&self, group: GroupId) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.group(group).is_some_and(|g| g.role() == Role::Leader))
    }

    /// Groups that have a leader.
    pub fn groups_led(&self) -> usize {
        let mut led = std::collections::BTreeSet::new();
        for n in &self.nodes {
            for (g, node) in n.groups() {
                if node.role() == Role::Leader {
                    led.insert(g);
                }
            }
        }
        led.len()
    }

    /// Proposes `data` to `group` at its leader (not delivered until the next
    /// [`Self::deliver_now`] or round): its index.
    pub fn propose(&mut self, group: GroupId, data: Vec<u8>) -> Result<u64, MultiError> {
        let i = self.leader_of(group).ok_or(MultiError::Propose(
            crate::types::ProposeError::NotLeader { leader: None },
        ))?;
        let (index, actions) = self.nodes[i].propose(group, data)?;
        self.process(i, actions);
        Ok(index)
    }

    /// Every node drops what is committed and durable from every group's log (as retention
    /// would): keeps a long run's memory bounded.
    pub fn compact_all(&mut self) {
        for n in &mut self.nodes {
            let groups: Vec<GroupId> = n.groups().map(|(g, _)| g).collect();
            for g in groups {
                let _ = n.with_group(g, |node| {
                    let upto = node.commit_index().min(node.persisted_index());
                    let done =
                        upto > node.snapshot().index && node.compact(upto, Vec::new()).is_ok();
                    (done, Vec::new())
                });
            }
        }
    }

    /// Delivers what the proposals caused.
    pub fn deliver_now(&mut self) -> RoundStats {
        let mut stats = RoundStats::default();
        self.deliver(&mut stats);
        stats
    }
}
