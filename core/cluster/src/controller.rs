//! [`Controller`]: the cluster's metadata as a replicated state machine (sans-IO): one Raft
//! group (the controller group) whose entries are [`Command`]s; every node runs a member
//! (voters: 1, 3 or 5 nodes; the others as learners or followers of its log) and applies the
//! committed commands in order to its copy of the [`Metadata`]. Its snapshot is the metadata
//! image (JSON), so a new or far-behind node starts from it.
//!
//! The driver feeds the Raft inputs through it (`tick`, `step`, `persisted`) and carries out
//! the returned Raft actions as for any group; after each call the newly committed and
//! durable commands are applied and their outcomes queued ([`Controller::take_outcomes`]).

use quiver_raft::types::{Action, Config, HardState, Message, Payload, ProposeError, Snapshot};
use quiver_raft::{NodeId as RaftId, RaftNode};

use crate::apply::apply;
use crate::command::{Command, CommandError};
use crate::model::{Metadata, NodeId};
use crate::placement::{place, PlacementError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerError {
    /// Only the controller leader proposes: ask it (when known).
    NotController {
        leader: Option<NodeId>,
    },
    /// The command would be refused when applied.
    Invalid(CommandError),
    Placement(PlacementError),
    Decommission(crate::placement::DecommissionError),
    Propose(ProposeError),
    /// The snapshot's metadata image cannot be read.
    DamagedSnapshot(String),
}

impl std::fmt::Display for ControllerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotController { leader: Some(l) } => {
                write!(f, "this node is not the controller: node {l} is")
            }
            Self::NotController { leader: None } => write!(
                f,
                "no controller is elected right now (a majority of controller voters must be up): retry shortly"
            ),
            Self::Invalid(e) => write!(f, "{e}"),
            Self::Placement(e) => write!(f, "{e}"),
            Self::Decommission(e) => write!(f, "{e}"),
            Self::Propose(e) => write!(f, "{e}"),
            Self::DamagedSnapshot(e) => write!(
                f,
                "the controller snapshot is damaged ({e}): restore the node's data directory or let it rejoin empty"
            ),
        }
    }
}

impl std::error::Error for ControllerError {}

/// What applying one committed command did.
pub type Outcome = (u64, Result<(), CommandError>);

pub struct Controller {
    raft: RaftNode,
    meta: Metadata,
    applied: u64,
    outcomes: Vec<Outcome>,
}

fn node_of(id: RaftId) -> NodeId {
    NodeId::try_from(id).unwrap_or(NodeId::MAX)
}

impl Controller {
    /// A member starting from its disk: Raft state, and the snapshot whose data is the
    /// metadata image (`None`: an empty cluster with `cluster_id`).
    pub fn new(
        config: Config,
        hard: HardState,
        snapshot: Option<Snapshot>,
        entries: Vec<quiver_raft::Entry>,
        cluster_id: &str,
    ) -> Result<Self, ControllerError> {
        let snapshot = snapshot.unwrap_or_else(|| Snapshot {
            membership: quiver_raft::Membership::of_voters(&config.voters),
            ..Snapshot::default()
        });
        Self::from_log(
            config,
            hard,
            quiver_raft::log::RaftLog::new(snapshot, entries),
            cluster_id,
        )
    }

    /// A member starting from the log its store replayed (`controller_log::replay`); with no
    /// snapshot (index 0) the metadata starts empty with `cluster_id` (empty: set by the
    /// cluster's `InitCluster` command).
    pub fn from_log(
        config: Config,
        hard: HardState,
        log: quiver_raft::log::RaftLog,
        cluster_id: &str,
    ) -> Result<Self, ControllerError> {
        // A log never snapshotted starts with the bootstrap voters as its membership.
        let log = if log.snapshot().index == 0 && log.snapshot().membership.voters.is_empty() {
            let snapshot = Snapshot {
                membership: quiver_raft::Membership::of_voters(&config.voters),
                ..log.snapshot().clone()
            };
            quiver_raft::log::RaftLog::new(snapshot, log.entries().to_vec())
        } else {
            log
        };
        let snap = log.snapshot();
        let (meta, applied) = if snap.index > 0 {
            let meta =
                Metadata::from_json(&snap.data, 0).map_err(ControllerError::DamagedSnapshot)?;
            (meta, snap.index)
        } else {
            let meta = Metadata {
                cluster_id: cluster_id.to_string(),
                ..Metadata::default()
            };
            (meta, 0)
        };
        let raft = RaftNode::from_log(config, hard, log);
        let mut c = Self {
            raft,
            meta,
            applied,
            outcomes: Vec::new(),
        };
        c.apply_committed();
        Ok(c)
    }

    /// Feeds back what storage read for [`Action::ReadEntries`].
    pub fn entries_read(
        &mut self,
        to: RaftId,
        from_index: u64,
        prev_index: u64,
        entries: Vec<quiver_raft::Entry>,
    ) -> Vec<Action> {
        let a = self.raft.entries_read(to, from_index, prev_index, entries);
        self.after(a)
    }

    /// A transport could not deliver to `to`: probe it before sending more.
    pub fn send_failed(&mut self, to: RaftId) {
        self.raft.send_failed(to);
    }

    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }
    /// The last index applied to the metadata.
    pub fn applied(&self) -> u64 {
        self.applied
    }
    pub fn is_leader(&self) -> bool {
        self.raft.role() == quiver_raft::Role::Leader
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader().map(node_of)
    }

    /// Outcomes of the commands applied since the last call, in log order.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// Applies what is committed and durable here and not applied yet; a snapshot installed
    /// past it replaces the metadata.
    fn apply_committed(&mut self) {
        let snap = self.raft.snapshot();
        if snap.index > self.applied {
            match Metadata::from_json(&snap.data, 0) {
                Ok(m) => {
                    self.meta = m;
                    self.applied = snap.index;
                }
                // A damaged image from the leader: keep what we have; the next snapshot or
                // entries will do.
                Err(_) => return,
            }
        }
        let upto = self.raft.commit_index().min(self.raft.persisted_index());
        while self.applied < upto {
            let next = self.applied + 1;
            let Some(entry) = self.raft.entry(next) else {
                break;
            };
            if let Payload::Data(bytes) = &entry.payload {
                let outcome = Command::decode(bytes).and_then(|cmd| apply(&mut self.meta, &cmd));
                self.outcomes.push((next, outcome));
            }
            self.applied = next;
        }
    }

    fn after(&mut self, actions: Vec<Action>) -> Vec<Action> {
        self.apply_committed();
        actions
    }

    pub fn tick(&mut self) -> Vec<Action> {
        let a = self.raft.tick();
        self.after(a)
    }

    pub fn step(&mut self, from: RaftId, message: Message) -> Vec<Action> {
        let a = self.raft.step(from, message);
        self.after(a)
    }

    pub fn persisted(&mut self, write: u64) -> Vec<Action> {
        let a = self.raft.persisted(write);
        self.after(a)
    }

    fn require_leader(&self) -> Result<(), ControllerError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(ControllerError::NotController {
                leader: self.leader(),
            })
        }
    }

    /// Proposes `cmd` (on the controller leader), checked first against the metadata as
    /// applied here: its log index, or why not.
    pub fn propose(&mut self, cmd: &Command) -> Result<(u64, Vec<Action>), ControllerError> {
        self.require_leader()?;
        let mut trial = self.meta.clone();
        apply(&mut trial, cmd).map_err(ControllerError::Invalid)?;
        let (index, actions) = self
            .raft
            .propose(cmd.encode())
            .map_err(ControllerError::Propose)?;
        Ok((index, self.after(actions)))
    }

    /// Places and proposes a new topic: `partitions` partitions of `replication_factor`
    /// replicas (0: the default, 3 or every node where there are fewer) over the nodes up.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: usize,
        replication_factor: usize,
        configs: std::collections::BTreeMap<String, String>,
    ) -> Result<(u64, Vec<Action>), ControllerError> {
        self.require_leader()?;
        // Only on nodes the leader hears from: a partition placed on a node that is down
        // would be unavailable from its first moment. Voters and learners (brokers beyond
        // the voters) answer the leader; a node outside the group is counted as up.
        let reachable = self.raft.reachable();
        let members = self.raft.membership();
        let mut live = self.meta.clone();
        live.nodes.retain(|n, _| {
            let id = u64::try_from(*n).unwrap_or(u64::MAX);
            !members.contains(id) || reachable.contains(&id)
        });
        let replication_factor = match replication_factor {
            0 => crate::placement::default_replication_factor(self.meta.nodes.len()),
            rf => rf,
        };
        let placed =
            place(&live, partitions, replication_factor).map_err(ControllerError::Placement)?;
        self.propose(&Command::CreateTopic {
            name: name.to_string(),
            partitions: placed,
            configs,
        })
    }

    /// Decommissions `node`: its replicas are placed elsewhere and the moves proposed with
    /// the mark that keeps new replicas off it.
    pub fn decommission(&mut self, node: NodeId) -> Result<(u64, Vec<Action>), ControllerError> {
        self.require_leader()?;
        let moves = crate::placement::decommission_moves(&self.meta, node)
            .map_err(ControllerError::Decommission)?;
        self.propose(&Command::DecommissionNode { node, moves })
    }

    /// Changes the controller group's members (growing from 1 to 3 voters, replacing a
    /// node): one server at a time, learners first (see `quiver_raft`).
    pub fn change_membership(
        &mut self,
        change: quiver_raft::MembershipChange,
    ) -> Result<(u64, Vec<Action>), ControllerError> {
        let (index, actions) = self
            .raft
            .change_membership(change)
            .map_err(ControllerError::Propose)?;
        Ok((index, self.after(actions)))
    }

    /// Compacts the controller's log up to what is applied, behind a snapshot holding the
    /// metadata image: a node that needs older entries gets the image instead.
    pub fn snapshot(&mut self) -> Result<(), quiver_raft::CompactError> {
        let index = self.applied;
        self.raft.compact(index, self.meta.to_json())
    }
}
