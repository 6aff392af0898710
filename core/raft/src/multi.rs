//! [`MultiRaft`]: the Raft groups one shard runs (each replicated partition is one, the
//! controller one more), behind one clock and one outbox per peer node.
//!
//! - **One timer for all groups**: the shard ticks the container; a group has no timer of
//!   its own (an idle group costs a few nanoseconds per tick, no wake-up, no allocation).
//! - **Coalesced messages**: whatever the groups send during a round (heartbeats of every
//!   group led here, appends, answers) leaves as one [`Envelope`] per peer node at
//!   [`MultiRaft::flush`], split only when it would exceed `max_envelope_bytes`. Heartbeats
//!   between two nodes are therefore one message per round, however many groups they share
//!   (Redpanda's heartbeat manager; CockroachDB's coalesced heartbeats).
//! - **Limits**: groups per shard (`max_groups`), envelope size.
//!
//! The contract of [`crate::RaftNode`] applies across the container: flush only once every
//! `Persist`/`InstallSnapshot` action returned so far is durable (one group commit of the
//! shard's writes per round, then one send per peer).

use std::collections::BTreeMap;

use crate::node::RaftNode;
use crate::types::{Action, Entry, HardState, Message, NodeId, ProposeError, Snapshot};
use crate::Config;

/// A group's identity, the same on every node (a partition, or the controller).
pub type GroupId = u64;

/// One shard's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiConfig {
    pub node: NodeId,
    /// Most groups this container runs.
    pub max_groups: usize,
    /// Most bytes in one envelope (a single larger message still goes, alone).
    pub max_envelope_bytes: u64,
}

impl MultiConfig {
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            max_groups: 100_000,
            max_envelope_bytes: 4 << 20,
        }
    }
}

/// Messages of many groups from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    pub messages: Vec<(GroupId, Message)>,
}

impl Envelope {
    pub fn size_bytes(&self) -> u64 {
        self.messages.iter().map(|(_, m)| 8 + m.size_bytes()).sum()
    }
}

/// What the driver must do for one group (sends are kept for [`MultiRaft::flush`]).
pub type GroupAction = (GroupId, Action);

/// Why the container refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiError {
    TooManyGroups { max_groups: usize },
    GroupExists(GroupId),
    UnknownGroup(GroupId),
    Propose(ProposeError),
}

impl std::fmt::Display for MultiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooManyGroups { max_groups } => write!(
                f,
                "this shard already runs max_groups ({max_groups}) Raft groups: place the partition on another shard or raise the limit"
            ),
            Self::GroupExists(g) => write!(f, "group {g} already runs here"),
            Self::UnknownGroup(g) => write!(f, "group {g} does not run here"),
            Self::Propose(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MultiError {}

/// Counts since creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MultiStats {
    pub envelopes_sent: u64,
    pub messages_sent: u64,
    pub heartbeats_sent: u64,
    /// Messages for groups that do not run here (dropped).
    pub unknown_group_messages: u64,
}

/// The Raft groups of one shard.
#[derive(Debug)]
pub struct MultiRaft {
    config: MultiConfig,
    groups: BTreeMap<GroupId, RaftNode>,
    outbox: BTreeMap<NodeId, Envelope>,
    stats: MultiStats,
}

impl MultiRaft {
    pub fn new(config: MultiConfig) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            outbox: BTreeMap::new(),
            stats: MultiStats::default(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.config.node
    }
    pub fn stats(&self) -> MultiStats {
        self.stats
    }
    pub fn len(&self) -> usize {
        self.groups.len()
    }
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
    pub fn group(&self, group: GroupId) -> Option<&RaftNode> {
        self.groups.get(&group)
    }
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &RaftNode)> {
        self.groups.iter().map(|(g, n)| (*g, n))
    }

    /// Starts a group from what the disk holds (see [`RaftNode::new`]); `config.id` is this
    /// node.
    pub fn add_group(
        &mut self,
        group: GroupId,
        mut config: Config,
        hard: HardState,
        snapshot: Option<Snapshot>,
        log: Vec<Entry>,
    ) -> Result<(), MultiError> {
        if self.groups.contains_key(&group) {
            return Err(MultiError::GroupExists(group));
        }
        if self.groups.len() >= self.config.max_groups {
            return Err(MultiError::TooManyGroups {
                max_groups: self.config.max_groups,
            });
        }
        config.id = self.config.node;
        config.seed = config.seed.wrapping_mul(0x9E37).wrapping_add(group);
        self.groups
            .insert(group, RaftNode::new(config, hard, snapshot, log));
        Ok(())
    }

    /// Starts a group from a log restored from storage ([`RaftNode::from_log`]).
    pub fn add_group_from_log(
        &mut self,
        group: GroupId,
        mut config: Config,
        hard: HardState,
        log: crate::log::RaftLog,
    ) -> Result<(), MultiError> {
        if self.groups.contains_key(&group) {
            return Err(MultiError::GroupExists(group));
        }
        if self.groups.len() >= self.config.max_groups {
            return Err(MultiError::TooManyGroups {
                max_groups: self.config.max_groups,
            });
        }
        config.id = self.config.node;
        config.seed = config.seed.wrapping_mul(0x9E37).wrapping_add(group);
        self.groups
            .insert(group, RaftNode::from_log(config, hard, log));
        Ok(())
    }

    /// Stops a group here (its replica moved away, or it cannot persist); what it held is the
    /// driver's to delete. Its messages not yet flushed are dropped with it: a vote or an
    /// acknowledgement whose state could not be persisted must never leave.
    pub fn remove_group(&mut self, group: GroupId) -> Option<RaftNode> {
        for envelope in self.outbox.values_mut() {
            envelope.messages.retain(|(g, _)| *g != group);
        }
        self.outbox.retain(|_, e| !e.messages.is_empty());
        self.groups.remove(&group)
    }

    /// Keeps the sends for the outbox; returns the rest.
    fn route(&mut self, group: GroupId, actions: Vec<Action>, out: &mut Vec<GroupAction>) {
        for a in actions {
            match a {
                Action::Send { to, message } => {
                    self.outbox
                        .entry(to)
                        .or_default()
                        .messages
                        .push((group, message));
                }
                other => out.push((group, other)),
            }
        }
    }

    /// One tick of the shard's clock for every group.
    pub fn tick(&mut self) -> Vec<GroupAction> {
        let mut out = Vec::new();
        let mut sends = Vec::new();
        for (g, node) in self.groups.iter_mut() {
            let actions = node.tick();
            if !actions.is_empty() {
                sends.push((*g, actions));
            }
        }
        for (g, actions) in sends {
            self.route(g, actions, &mut out);
        }
        out
    }

    /// Handles an envelope from node `from`.
    pub fn step(&mut self, from: NodeId, envelope: Envelope) -> Vec<GroupAction> {
        let mut out = Vec::new();
        for (g, message) in envelope.messages {
            let Some(node) = self.groups.get_mut(&g) else {
                self.stats.unknown_group_messages += 1;
                continue;
            };
            let actions = node.step(from, message);
            self.route(g, actions, &mut out);
        }
        out
    }

    /// Calls `f` on a group (propose, change membership, transfer, compact, persisted...)
    /// and routes what it returns.
    pub fn with_group<T>(
        &mut self,
        group: GroupId,
        f: impl FnOnce(&mut RaftNode) -> (T, Vec<Action>),
    ) -> Result<(T, Vec<GroupAction>), MultiError> {
        let node = self
            .groups
            .get_mut(&group)
            .ok_or(MultiError::UnknownGroup(group))?;
        let (value, actions) = f(node);
        let mut out = Vec::new();
        self.route(group, actions, &mut out);
        Ok((value, out))
    }

    /// Proposes `data` to `group`: its index.
    pub fn propose(
        &mut self,
        group: GroupId,
        data: Vec<u8>,
    ) -> Result<(u64, Vec<GroupAction>), MultiError> {
        let node = self
            .groups
            .get_mut(&group)
            .ok_or(MultiError::UnknownGroup(group))?;
        let (index, actions) = node.propose(data).map_err(MultiError::Propose)?;
        let mut out = Vec::new();
        self.route(group, actions, &mut out);
        Ok((index, out))
    }

    /// The driver made `group`'s log write `write` durable.
    pub fn persisted(&mut self, group: GroupId, write: u64) -> Vec<GroupAction> {
        self.with_group(group, |n| ((), n.persisted(write)))
            .map(|(_, a)| a)
            .unwrap_or_default()
    }

    /// What to send, one envelope per peer (more only past `max_envelope_bytes`). Call once
    /// every persist returned so far is durable.
    pub fn flush(&mut self) -> Vec<(NodeId, Envelope)> {
        let mut out = Vec::new();
        for (to, envelope) in std::mem::take(&mut self.outbox) {
            let mut current = Envelope::default();
            let mut bytes = 0;
            for (g, m) in envelope.messages {
                let size = 8 + m.size_bytes();
                if !current.messages.is_empty() && bytes + size > self.config.max_envelope_bytes {
                    out.push((to, std::mem::take(&mut current)));
                    bytes = 0;
                }
                self.stats.messages_sent += 1;
                if matches!(m, Message::Heartbeat { .. }) {
                    self.stats.heartbeats_sent += 1;
                }
                bytes += size;
                current.messages.push((g, m));
            }
            if !current.messages.is_empty() {
                out.push((to, current));
            }
        }
        self.stats.envelopes_sent += out.len() as u64;
        out
    }
}
