//! The controller member of this node, run on shard 0: the sans-IO
//! [`quiver_cluster::controller::Controller`] driven by a clock, its log file
//! ([`ControllerStore`]) and the node's links to the other voters.
//!
//! One task owns the controller and its store. Each round it takes what arrived (a tick,
//! Raft envelopes, requests from this node or from other nodes), feeds it in, persists what
//! the Raft core asks (one append and one fdatasync for the whole round), feeds back that it
//! is durable, then sends one envelope per peer: a vote or an acknowledgement never leaves
//! before what it promises is on disk. After the round, what got applied is published to the
//! node's shards and the requests it decided are answered.
//!
//! Requests to change the metadata go to the controller leader: proposed here when this node
//! leads, otherwise forwarded to the leader as a [`NodeMessage::Request`] and answered by its
//! [`NodeMessage::Reply`]. A leader that loses leadership answers what it had not applied
//! with [`Failure::Unavailable`] (the change may or may not commit later: check and retry).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use quiver_cluster::command::Command;
use quiver_cluster::controller::Controller;
use quiver_cluster::controller_log::Record;
use quiver_cluster::messages::{ControllerRequest, Failure, NodeMessage};
use quiver_cluster::model::{Metadata, NodeId, NodeMeta};
use quiver_raft::types::{Action, Config, Message, Role};
use quiver_raft::{codec, Envelope};
use quiver_storage::signal::{oneshot, Doorbell, Sender};
use quiver_storage::StorageError;

use crate::controller_store::ControllerStore;

/// The controller group's id in Raft envelopes (partition groups will use others).
pub const CONTROLLER_GROUP: u64 = 0;
/// How long a request waits for the controller's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Applied entries past the snapshot before the log is compacted behind a new one.
const SNAPSHOT_EVERY_ENTRIES: u64 = 1_000;

/// Exit status of a node whose controller log could not be written.
pub const EXIT_CONTROLLER_STORAGE: i32 = 3;

/// How this node takes part in the controller group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The controller's voters and where each one's shard 0 listens, the same list on every
    /// node (`seeds`). Empty: this node alone, a one-voter controller.
    pub voters: BTreeMap<NodeId, SocketAddr>,
    /// This node's rack (`rack`): placement puts a partition's replicas on distinct racks.
    pub rack: Option<String>,
    pub tick_ms: u64,
    /// Ticks without a leader before an election (randomized up to twice this).
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            voters: BTreeMap::new(),
            rack: None,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
        }
    }
}

impl ClusterSettings {
    /// The controller group's Raft settings for node `me`.
    pub fn raft_config(&self, me: NodeId) -> Config {
        let voters: Vec<u64> = if self.voters.is_empty() {
            vec![raft_id(me)]
        } else {
            self.voters.keys().map(|n| raft_id(*n)).collect()
        };
        let mut c = Config::new(raft_id(me), voters);
        c.election_ticks = self.election_ticks.max(2);
        c.heartbeat_ticks = self.heartbeat_ticks.clamp(1, c.election_ticks - 1);
        c
    }

    pub fn is_single_voter(&self, me: NodeId) -> bool {
        self.voters.is_empty() || (self.voters.len() == 1 && self.voters.contains_key(&me))
    }
}

fn raft_id(node: NodeId) -> u64 {
    u64::try_from(node).unwrap_or(0)
}

fn node_id(raft: u64) -> NodeId {
    NodeId::try_from(raft).unwrap_or(NodeId::MAX)
}

/// Sends internal frames to other nodes (the node's QUIC links; the broker knows no wire).
pub trait NodeLinks {
    fn send(&self, to: SocketAddr, message: Vec<u8>) -> Pin<Box<dyn Future<Output = bool> + '_>>;
}

/// What the controller looks like from this node, for status and routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerStatus {
    pub leader: Option<NodeId>,
    pub role: Role,
    pub term: u64,
    pub voters: Vec<NodeId>,
    pub applied: u64,
}

/// Who waits for a request's answer.
enum ReplyTo {
    Local(Sender<Result<(), Failure>>),
    Remote { node: NodeId, id: u64 },
}

enum Input {
    Raft {
        from: NodeId,
        envelope: Envelope,
    },
    Request {
        request: ControllerRequest,
        reply: ReplyTo,
    },
}

/// The shard-local face of the controller task: takes what other nodes sent, and this
/// node's requests; holds the latest status.
pub struct ControllerHandle {
    me: NodeId,
    inbox: RefCell<VecDeque<Input>>,
    bell: Doorbell,
    status: RefCell<ControllerStatus>,
    /// Requests forwarded to the controller leader, by id: the node they went to.
    forwards: RefCell<HashMap<u64, (NodeId, AnswerTx)>>,
    next_id: Cell<u64>,
}

impl ControllerHandle {
    pub fn new(me: NodeId) -> Rc<Self> {
        Rc::new(Self {
            me,
            inbox: RefCell::new(VecDeque::new()),
            bell: Doorbell::default(),
            status: RefCell::new(ControllerStatus {
                leader: None,
                role: Role::Follower,
                term: 0,
                voters: Vec::new(),
                applied: 0,
            }),
            forwards: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        })
    }

    pub fn status(&self) -> ControllerStatus {
        self.status.borrow().clone()
    }

    fn push(&self, input: Input) {
        self.inbox.borrow_mut().push_back(input);
        self.bell.ring();
    }

    /// Takes the controller group's messages of an envelope from node `from`.
    pub fn deliver_envelope(&self, from: NodeId, envelope: Envelope) {
        self.push(Input::Raft { from, envelope });
    }

    /// Takes a request or reply another node sent (Raft envelopes go to
    /// [`ControllerHandle::deliver_envelope`]).
    pub fn deliver_message(&self, message: NodeMessage) {
        match message {
            NodeMessage::Raft { from, envelope, .. } => match codec::decode(&envelope) {
                Ok(envelope) => self.push(Input::Raft { from, envelope }),
                Err(e) => tracing::debug!(from, "dropping a Raft envelope: {e}"),
            },
            NodeMessage::Request { from, id, request } => self.push(Input::Request {
                request,
                reply: ReplyTo::Remote { node: from, id },
            }),
            NodeMessage::Reply { id, result } => {
                if let Some((_, tx)) = self.forwards.borrow_mut().remove(&id) {
                    tx.send(result);
                }
            }
            // Calls between shards are the shard's (`node_calls`), never the controller's.
            NodeMessage::Call { from, .. } => {
                tracing::debug!(from, "a shard call reached the controller: dropped")
            }
            NodeMessage::CallReply { .. } => {}
        }
    }

    /// Asks the controller leader (this node or another) to make `request`; answers once it
    /// is applied on the leader, or why not.
    pub async fn submit(&self, request: ControllerRequest) -> Result<(), Failure> {
        let (tx, rx) = oneshot();
        self.push(Input::Request {
            request,
            reply: ReplyTo::Local(tx),
        });
        let timed_out = async {
            glommio::timer::sleep(REQUEST_TIMEOUT).await;
            Some(Err(Failure::Unavailable(format!(
                "the controller did not answer within {} s (is a majority of the controller's voters up?): retry",
                REQUEST_TIMEOUT.as_secs()
            ))))
        };
        futures_lite::future::or(rx, timed_out)
            .await
            .unwrap_or_else(|| {
                Err(Failure::Unavailable(
                    "the controller stopped before answering: retry".into(),
                ))
            })
    }
}

/// Where a forwarded request's answer goes.
type AnswerTx = Sender<Result<(), Failure>>;

/// What the task calls when the metadata changed (publish it to the node's shards).
pub type OnMetadata = Box<dyn Fn(&Metadata)>;

/// The controller task's state: the controller, its store, where its peers are.
pub struct ControllerTask {
    pub handle: Rc<ControllerHandle>,
    pub controller: Controller,
    pub store: ControllerStore,
    pub settings: ClusterSettings,
    pub links: Rc<dyn NodeLinks>,
    pub on_metadata: OnMetadata,
    /// The metadata a first leader initializes the cluster with (a single node's
    /// `metadata.json` carried over); `None`: a fresh cluster id.
    pub init_image: Option<Metadata>,
    /// How this node registers itself.
    pub registration: NodeMeta,
    /// Where nodes that asked to join (learners not registered yet) listen.
    pub joining: BTreeMap<NodeId, SocketAddr>,
    /// When this node, beyond the voters, last asked them to let it follow the log.
    pub asked_to_join: Option<Instant>,
}

/// How often a node beyond the voters asks them to add it, until it is a learner.
const JOIN_EVERY: Duration = Duration::from_secs(1);

/// Messages of one round, per destination node.
#[derive(Default)]
struct Outbox {
    raft: BTreeMap<NodeId, Vec<Message>>,
    other: Vec<(NodeId, NodeMessage)>,
}

/// Proposals this leader waits to see applied, by log index.
type Waiting = BTreeMap<u64, Vec<ReplyTo>>;

impl ControllerTask {
    /// Feeds `actions` through storage until the round is quiet: every record of a pass in
    /// one append and one fdatasync, then the writes reported durable.
    pub async fn settle(
        controller: &mut Controller,
        store: &mut ControllerStore,
        mut actions: Vec<Action>,
        sends: &mut Vec<(u64, Message)>,
    ) -> Result<(), StorageError> {
        while !actions.is_empty() {
            let mut records = Vec::new();
            let mut writes = Vec::new();
            for action in actions.drain(..) {
                match action {
                    Action::PersistHardState(h) => records.push(Record::HardState(h)),
                    Action::PersistEntries {
                        write,
                        first_index,
                        entries,
                        ..
                    } => {
                        records.push(Record::Entries {
                            first_index,
                            entries,
                        });
                        writes.push(write);
                    }
                    Action::InstallSnapshot { write, snapshot } => {
                        records.push(Record::Snapshot(snapshot));
                        writes.push(write);
                    }
                    Action::ReadEntries { to, .. } => {
                        // The controller keeps its whole log in memory: never asked.
                        tracing::warn!(to, "the controller was asked to read its log back");
                    }
                    Action::Send { to, message } => sends.push((to, message)),
                    Action::Committed(_)
                    | Action::RoleChanged { .. }
                    | Action::ReadReady { .. }
                    | Action::ReadDropped { .. } => {}
                }
            }
            store.append(&records).await?;
            for w in writes {
                actions.extend(controller.persisted(w));
            }
        }
        Ok(())
    }

    fn address_of(&self, node: NodeId) -> Option<SocketAddr> {
        if let Some(a) = self.settings.voters.get(&node) {
            return Some(*a);
        }
        if let Some(meta) = self.controller.metadata().nodes.get(&node) {
            return meta.internal_addr.parse().ok();
        }
        self.joining.get(&node).copied()
    }

    /// On a node beyond the voters that is not a member of the controller group yet: asks
    /// every voter (the leader among them answers) to add it as a learner, once a second.
    fn ask_to_join(&mut self, outbox: &mut Outbox) {
        let me = self.handle.me;
        // Until registered: a leader elected after the one that added this learner knows
        // its address only from the metadata (or from asking again).
        let member = self.controller.raft().membership().contains(raft_id(me));
        let registered = self.controller.metadata().nodes.contains_key(&me);
        let due = self.asked_to_join.is_none_or(|t| t.elapsed() >= JOIN_EVERY);
        if (member && registered)
            || self.settings.voters.is_empty()
            || self.settings.voters.contains_key(&me)
            || !due
        {
            return;
        }
        self.asked_to_join = Some(Instant::now());
        for voter in self.settings.voters.keys() {
            let id = self.handle.next_id.get();
            self.handle.next_id.set(id + 1);
            outbox.other.push((
                *voter,
                NodeMessage::Request {
                    from: me,
                    id,
                    request: ControllerRequest::Join {
                        node: me,
                        address: self.registration.internal_addr.clone(),
                    },
                },
            ));
        }
    }

    /// Runs the controller until the shard stops.
    pub async fn run(mut self) {
        let tick = Duration::from_millis(self.settings.tick_ms.max(1));
        let mut next_tick = Instant::now() + tick;
        let mut waiting: Waiting = BTreeMap::new();
        let mut published = self.controller.metadata().version;
        let mut was_leader = false;
        let registering = Rc::new(Cell::new(false));
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(wait).await;
                },
                self.handle.bell.wait(),
            )
            .await;
            let mut actions = Vec::new();
            let mut outbox = Outbox::default();
            if Instant::now() >= next_tick {
                actions.extend(self.controller.tick());
                next_tick = Instant::now() + tick;
            }
            let inputs: Vec<Input> = self.handle.inbox.borrow_mut().drain(..).collect();
            for input in inputs {
                match input {
                    Input::Raft { from, envelope } => {
                        for (group, message) in envelope.messages {
                            if group == CONTROLLER_GROUP {
                                actions.extend(self.controller.step(raft_id(from), message));
                            }
                        }
                    }
                    Input::Request { request, reply } => {
                        self.take_request(request, reply, &mut actions, &mut waiting, &mut outbox)
                    }
                }
            }
            actions.extend(self.init_if_first_leader());
            let mut sends = Vec::new();
            if let Err(e) =
                Self::settle(&mut self.controller, &mut self.store, actions, &mut sends).await
            {
                // A voter that cannot persist must not vote or acknowledge; and a node whose
                // controller member stopped could no longer record the leaderships it takes
                // (the chaos harness saw partitions led there stay unreachable: the metadata
                // kept naming their old leaders). The node stops, as etcd does on a failed
                // WAL write: its partitions are elected elsewhere, and a restart once the
                // disk has room brings it back (decision 0031).
                let why = format!("the controller log cannot be written ({e}): the node stops; free space or fix the disk, then start it again");
                tracing::error!("{why}");
                eprintln!("error: {why}");
                std::process::exit(EXIT_CONTROLLER_STORAGE);
            }
            for (to, m) in sends {
                outbox.raft.entry(node_id(to)).or_default().push(m);
            }
            self.after_round(&mut waiting, &mut was_leader, &mut published, &mut outbox);
            self.ask_to_join(&mut outbox);
            self.keep_registered(&registering);
            self.send(outbox).await;
            let snapshot_index = self.controller.raft().snapshot().index;
            if self.controller.applied() >= snapshot_index + SNAPSHOT_EVERY_ENTRIES {
                self.compact().await;
            }
        }
    }

    /// On a leader of a cluster without an id (its very first leader): proposes
    /// `InitCluster` once per leadership.
    fn init_if_first_leader(&mut self) -> Vec<Action> {
        let raft = self.controller.raft();
        let uninitialized = self.controller.metadata().cluster_id.is_empty();
        // Only once everything before is applied: an init already in the log would win.
        let caught_up = self.controller.applied() >= raft.commit_index()
            && raft.last_index() == raft.commit_index();
        if !self.controller.is_leader() || !uninitialized || !caught_up {
            return Vec::new();
        }
        let image = self.init_image.clone().unwrap_or_else(|| Metadata {
            cluster_id: new_cluster_id(),
            ..Metadata::default()
        });
        let command = Command::InitCluster {
            image: Box::new(image),
        };
        match self.controller.propose(&command) {
            Ok((_, actions)) => actions,
            Err(e) => {
                tracing::warn!("initializing the cluster: {e}");
                Vec::new()
            }
        }
    }

    /// Once the cluster has an id and a controller leader, makes sure the metadata says how
    /// to reach this node (again after an address change): one request at a time.
    fn keep_registered(&self, registering: &Rc<Cell<bool>>) {
        let meta = self.controller.metadata();
        // Registered as this node would register (a decommission it carries is the
        // controller's, not a difference).
        let registered = meta.nodes.get(&self.handle.me).is_some_and(|m| {
            NodeMeta {
                decommissioned: false,
                ..m.clone()
            } == self.registration
        });
        if meta.cluster_id.is_empty()
            || registered
            || registering.get()
            || self.controller.leader().is_none()
        {
            return;
        }
        registering.set(true);
        let handle = self.handle.clone();
        let command = Command::RegisterNode {
            node: self.handle.me,
            meta: self.registration.clone(),
        };
        let registering = registering.clone();
        glommio::spawn_local(async move {
            if let Err(e) = handle.submit(ControllerRequest::Command { command }).await {
                tracing::info!("registering with the controller: {}", e.message());
            }
            registering.set(false);
            handle.bell.ring();
        })
        .detach();
    }

    fn take_request(
        &mut self,
        request: ControllerRequest,
        reply: ReplyTo,
        actions: &mut Vec<Action>,
        waiting: &mut Waiting,
        outbox: &mut Outbox,
    ) {
        if let (ControllerRequest::Join { node, address }, true) =
            (&request, self.controller.is_leader())
        {
            let result = self.add_learner(*node, address, actions);
            self.answer(reply, result, outbox);
            return;
        }
        if self.controller.is_leader() {
            let proposed = match &request {
                ControllerRequest::CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    configs,
                } => self.controller.create_topic(
                    name,
                    *partitions,
                    *replication_factor,
                    configs.clone(),
                ),
                ControllerRequest::Command { command } => self.controller.propose(command),
                ControllerRequest::Decommission { node } => self.controller.decommission(*node),
                // Taken above, on the leader.
                ControllerRequest::Join { .. } => {
                    Err(quiver_cluster::controller::ControllerError::Invalid(
                        quiver_cluster::command::CommandError::Malformed(
                            "a join is not a metadata command".into(),
                        ),
                    ))
                }
            };
            match proposed {
                Ok((index, a)) => {
                    actions.extend(a);
                    waiting.entry(index).or_default().push(reply);
                }
                Err(e) => self.answer(reply, Err(Failure::from(&e)), outbox),
            }
            return;
        }
        match (self.controller.leader(), reply) {
            (Some(leader), ReplyTo::Local(tx)) if leader != self.handle.me => {
                let id = self.handle.next_id.get();
                self.handle.next_id.set(id + 1);
                self.handle.forwards.borrow_mut().insert(id, (leader, tx));
                let message = NodeMessage::Request {
                    from: self.handle.me,
                    id,
                    request,
                };
                outbox.other.push((leader, message));
            }
            (leader, reply) => {
                let why = match leader {
                    Some(l) => format!("node {l} leads the controller; ask it"),
                    None => "no controller leader is elected right now (a majority of the controller's voters must be up): retry shortly".to_string(),
                };
                self.answer(reply, Err(Failure::Unavailable(why)), outbox);
            }
        }
    }

    /// A node beyond the voters asked to follow the log: added as a learner (the leader
    /// then sends it the log), reached at `address` until it registers.
    fn add_learner(
        &mut self,
        node: NodeId,
        address: &str,
        actions: &mut Vec<Action>,
    ) -> Result<(), Failure> {
        let Ok(addr) = address.parse::<SocketAddr>() else {
            return Err(Failure::Invalid(format!(
                "node {node} asked to join from {address:?}, which is not an address"
            )));
        };
        if self.settings.voters.contains_key(&node) {
            return Ok(());
        }
        self.joining.insert(node, addr);
        match self
            .controller
            .change_membership(quiver_raft::MembershipChange::AddLearner(raft_id(node)))
        {
            Ok((_, a)) => {
                tracing::info!(node, %addr, "a node beyond the voters joins: it follows the controller's log");
                actions.extend(a);
                Ok(())
            }
            Err(quiver_cluster::controller::ControllerError::Propose(
                quiver_raft::ProposeError::AlreadyMember(_),
            )) => Ok(()),
            Err(e) => Err(Failure::Unavailable(format!(
                "node {node} cannot join yet: {e}; it asks again"
            ))),
        }
    }

    fn answer(&self, reply: ReplyTo, result: Result<(), Failure>, outbox: &mut Outbox) {
        match reply {
            ReplyTo::Local(tx) => tx.send(result),
            ReplyTo::Remote { node, id } => {
                outbox.other.push((node, NodeMessage::Reply { id, result }))
            }
        }
    }

    /// Publishes applied metadata, answers applied proposals, and fails those a lost
    /// leadership leaves undecided.
    fn after_round(
        &mut self,
        waiting: &mut Waiting,
        was_leader: &mut bool,
        published: &mut u64,
        outbox: &mut Outbox,
    ) {
        let outcomes = self.controller.take_outcomes();
        if self.controller.metadata().version != *published {
            *published = self.controller.metadata().version;
            (self.on_metadata)(self.controller.metadata());
        }
        for (index, outcome) in outcomes {
            if let Some(replies) = waiting.remove(&index) {
                for r in replies {
                    let result = outcome.as_ref().map_err(Failure::from).map(|_| ());
                    self.answer(r, result, outbox);
                }
            }
        }
        let leader = self.controller.is_leader();
        if *was_leader && !leader {
            for (_, replies) in std::mem::take(waiting) {
                for r in replies {
                    let why = "the controller lost its leadership before the change was applied; it may still apply: check, then retry";
                    self.answer(r, Err(Failure::Unavailable(why.into())), outbox);
                }
            }
        }
        *was_leader = leader;
        // A request forwarded to a leader that is no longer the leader (it died, or lost an
        // election) gets no answer: its caller retries now instead of at its timeout.
        let now_leader = self.controller.leader();
        let mut forwards = self.handle.forwards.borrow_mut();
        let orphaned: Vec<u64> = forwards
            .iter()
            .filter(|(_, (to, _))| now_leader != Some(*to))
            .map(|(id, _)| *id)
            .collect();
        for id in orphaned {
            if let Some((to, tx)) = forwards.remove(&id) {
                tx.send(Err(Failure::Unavailable(format!(
                    "node {to} stopped leading the controller before it answered; the change may or may not be applied: check, then retry"
                ))));
            }
        }
        drop(forwards);
        let raft = self.controller.raft();
        *self.handle.status.borrow_mut() = ControllerStatus {
            leader: self.controller.leader(),
            role: raft.role(),
            term: raft.term(),
            voters: raft
                .membership()
                .voters
                .iter()
                .map(|v| node_id(*v))
                .collect(),
            applied: self.controller.applied(),
        };
    }

    async fn send(&mut self, mut outbox: Outbox) {
        let me = self.handle.me;
        let mut frames: Vec<(NodeId, Vec<u8>)> = Vec::new();
        for (to, messages) in std::mem::take(&mut outbox.raft) {
            let envelope = Envelope {
                messages: messages
                    .into_iter()
                    .map(|m| (CONTROLLER_GROUP, m))
                    .collect(),
            };
            let message = NodeMessage::Raft {
                from: me,
                cluster: self.controller.metadata().cluster_id.clone(),
                envelope: codec::encode(&envelope),
            };
            frames.push((to, message.encode()));
        }
        for (to, m) in outbox.other {
            frames.push((to, m.encode()));
        }
        for (to, bytes) in frames {
            let Some(addr) = self.address_of(to) else {
                tracing::debug!(to, "no address for node: message dropped");
                continue;
            };
            if !self.links.send(addr, bytes).await {
                self.controller.send_failed(raft_id(to));
            }
        }
    }

    /// Compacts the log behind a snapshot of the applied metadata and rewrites the file.
    async fn compact(&mut self) {
        if let Err(e) = self.controller.snapshot() {
            tracing::debug!("controller snapshot not taken: {e:?}");
            return;
        }
        let hard = self.controller.raft().hard_state();
        if let Err(e) = self.store.rewrite(hard, self.controller.raft().log()).await {
            tracing::warn!("rewriting the controller log failed (it keeps growing): {e}");
        }
    }
}

/// A new cluster's id: time and process, unique enough to tell clusters apart.
pub fn new_cluster_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("quiver-{:x}-{:x}", nanos, std::process::id())
}
