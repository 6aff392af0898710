//! A tiny lossless in-test network for the targeted tests: nodes persist at once and every
//! message is delivered, in order.

#![allow(dead_code)]

use std::collections::BTreeMap;

use quiver_raft::log::RaftLog;
use quiver_raft::types::{
    Action, Config, HardState, MembershipChange, Message, NodeId, ProposeError, Role,
};
use quiver_raft::RaftNode;

/// Nodes that persist at once and deliver every message, in order.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, RaftNode>,
    /// Messages seen, by kind, for assertions.
    pub seen: Vec<(NodeId, NodeId, Message)>,
    pub installed: Vec<NodeId>,
    /// Each node's storage: what its writes made durable (read back for `ReadEntries`).
    pub stores: BTreeMap<NodeId, RaftLog>,
    /// Entries read back from storage.
    pub read_back: usize,
}

impl Cluster {
    pub fn new(ids: &[NodeId], voters: &[NodeId], tune: impl Fn(&mut Config)) -> Self {
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut c = Config::new(id, voters.to_vec());
                tune(&mut c);
                (id, RaftNode::new(c, HardState::default(), None, Vec::new()))
            })
            .collect();
        let stores = ids.iter().map(|&id| (id, RaftLog::default())).collect();
        Self {
            nodes,
            seen: Vec::new(),
            installed: Vec::new(),
            stores,
            read_back: 0,
        }
    }

    pub fn node(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).expect("a node of the test")
    }

    /// Carries out `actions` of `from` and everything they cause.
    pub fn run(&mut self, from: NodeId, actions: Vec<Action>) {
        let mut queue: Vec<(NodeId, Action)> = actions.into_iter().map(|a| (from, a)).collect();
        let mut steps = 0;
        while !queue.is_empty() {
            steps += 1;
            assert!(steps < 100_000, "the cluster does not settle");
            let (at, action) = queue.remove(0);
            let more = match action {
                Action::PersistEntries {
                    write,
                    first_index,
                    entries,
                    ..
                } => {
                    let store = self.stores.entry(at).or_default();
                    store.truncate_after(first_index - 1);
                    store.extend(entries);
                    self.node(at).persisted(write)
                }
                Action::InstallSnapshot { write, snapshot } => {
                    self.installed.push(at);
                    self.stores.entry(at).or_default().reset(snapshot);
                    self.node(at).persisted(write)
                }
                Action::ReadEntries {
                    to,
                    from_index,
                    max_entries,
                    ..
                } => {
                    let store = self.stores.entry(at).or_default();
                    let k = store.position(from_index).unwrap_or(store.len());
                    let prev = store.start_of(k) - 1;
                    let entries: Vec<_> = store.entries()[k..]
                        .iter()
                        .take(max_entries as usize)
                        .cloned()
                        .collect();
                    self.read_back += entries.len();
                    self.node(at).entries_read(to, from_index, prev, entries)
                }
                Action::Send { to, message } => {
                    self.seen.push((at, to, message.clone()));
                    match self.nodes.get_mut(&to) {
                        Some(n) => {
                            let out = n.step(at, message);
                            queue.extend(out.into_iter().map(|a| (to, a)));
                            continue;
                        }
                        None => continue,
                    }
                }
                _ => Vec::new(),
            };
            queue.extend(more.into_iter().map(|a| (at, a)));
        }
    }

    /// Ticks every node `n` times.
    pub fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let out = self.node(id).tick();
                self.run(id, out);
            }
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .find(|n| n.role() == Role::Leader)
            .map(|n| n.id())
    }

    pub fn propose(&mut self, at: NodeId, data: &[u8]) -> u64 {
        let (index, out) = self
            .node(at)
            .propose(data.to_vec())
            .expect("the leader accepts");
        self.run(at, out);
        index
    }

    pub fn change(&mut self, at: NodeId, c: MembershipChange) -> Result<u64, ProposeError> {
        let (index, out) = self.node(at).change_membership(c)?;
        self.run(at, out);
        Ok(index)
    }
}
