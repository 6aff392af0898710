//! The shard's driver of its replicated partitions: one [`MultiRaft`] for every partition
//! group whose replica this shard holds, one clock, one envelope per peer node per round
//! (to the same shard of that node), and each group's log in the partition's segment log
//! ([`super::log_mapping`]).
//!
//! One task runs the rounds. A round takes the tick, the envelopes that arrived, and the
//! actions proposals produced; writes what each group asks (hard state to
//! `<partition>/raft-state`, entries appended at the offsets their indexes name, a diverged
//! tail truncated first), reports it durable, then sends: no vote or acknowledgement leaves
//! before what it promises is on disk. Commits move each partition's high watermark; a new
//! leader records itself in the controller (`SetLeader`, its term as the leader epoch).
//!
//! Produce reaches a group through [`ReplicaDriver::propose`], synchronously: the index a
//! batch gets is decided before any other proposal, and its offsets are those indexes.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_cluster::messages::NodeMessage;
use quiver_cluster::model::{Metadata, NodeId};
use quiver_raft::multi::GroupAction;
use quiver_raft::types::{Action, Config, HardState, Role};
use quiver_raft::{codec, Envelope, MultiConfig, MultiRaft};
use quiver_storage::signal::{Doorbell, WaitList};
use quiver_storage::PartitionLog;

use super::log_mapping::{entry_of_batch, offset_of, plan_persist, restored_log};
use super::membership_store::{self, Memberships, MEMBERS_FILE};
use super::preferred_leader;
use super::replica_move::{self, MoveStep};
use crate::controller_runtime::NodeLinks;

/// The hard state file in a replicated partition's directory.
pub const RAFT_STATE_FILE: &str = "raft-state";
/// Largest entry (one produced batch) a partition group takes.
pub const MAX_ENTRY_BYTES: u64 = 16 << 20;

/// What produce and fetch see of a partition's group.
pub struct GroupHandle {
    /// Entries up to this index (= offsets below it) are committed: the high watermark.
    pub commit_index: Cell<u64>,
    /// Entries up to this index are durable here.
    pub persisted_index: Cell<u64>,
    pub is_leader: Cell<bool>,
    /// This replica leads and committed an entry of its term: its commit index is the
    /// group's, never behind what an earlier leader answered (Kafka's KIP-207).
    pub leader_ready: Cell<bool>,
    pub leader: Cell<Option<NodeId>>,
    pub term: Cell<u64>,
    /// Woken whenever the marks above move.
    pub progress: WaitList,
    /// Serialises a partition's proposals: a batch is checked against the producer state
    /// only once the batch before it is in the log.
    pub propose_gate: glommio::sync::Semaphore,
    /// Linearizable reads asked ([`ReplicaDriver::read_index`]) and what became of each:
    /// `None` while a quorum has not answered, then `Some(Some(index))` once confirmed or
    /// `Some(None)` when leadership ended first. The reader removes its entry.
    pub reads: RefCell<HashMap<u64, Option<Option<u64>>>>,
}

impl GroupHandle {
    fn new() -> Self {
        Self {
            commit_index: Cell::new(0),
            persisted_index: Cell::new(0),
            is_leader: Cell::new(false),
            leader_ready: Cell::new(false),
            leader: Cell::new(None),
            term: Cell::new(0),
            progress: WaitList::default(),
            propose_gate: glommio::sync::Semaphore::new(1),
            reads: RefCell::new(HashMap::new()),
        }
    }

    /// What became of read `id`: `None` while unanswered.
    pub fn read_outcome(&self, id: u64) -> Option<Option<u64>> {
        self.reads.borrow().get(&id).copied().flatten()
    }

    /// The reader of `id` is done with it (an answer arriving later is dropped).
    pub fn forget_read(&self, id: u64) {
        self.reads.borrow_mut().remove(&id);
    }

    fn settle_read(&self, id: u64, outcome: Option<u64>) {
        if let Some(slot) = self.reads.borrow_mut().get_mut(&id) {
            *slot = Some(outcome);
            self.progress.wake_all();
        }
    }
}

/// A group's entries written in a round, their durability still awaited.
struct Persisting {
    g: u64,
    group: Rc<Group>,
    write: u64,
    durable: Vec<quiver_storage::Durability>,
    end: u64,
}

struct Group {
    topic: String,
    partition: i32,
    log: PartitionLog,
    dir: PathBuf,
    handle: Rc<GroupHandle>,
    /// The membership entries in its log, as `MEMBERS_FILE` lists them.
    members: RefCell<Memberships>,
    /// When this leader last asked the controller to record a finished move.
    recorded_move: Cell<Option<Instant>>,
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeRefusal {
    NotLeader { leader: Option<NodeId> },
    Other(String),
}

/// What the driver needs from the node.
pub struct DriverContext {
    pub me: NodeId,
    pub shard: usize,
    pub tick_ms: u64,
    pub links: Rc<dyn NodeLinks>,
    /// Records a new leader in the controller (topic, partition, term); the handle says
    /// whether it still leads at that term (retry until recorded or deposed).
    pub on_leader: Box<dyn Fn(String, i32, u64, Rc<GroupHandle>)>,
    /// Records a finished move in the controller (topic, partition, replicas: `SetReplicas`).
    pub on_moved: Box<dyn Fn(String, i32, Vec<NodeId>)>,
}

/// How often a shard's leader takes a move's next step, in ticks (0.5 s at 100 ms).
const MOVE_EVERY_TICKS: u64 = 5;
/// How long a leader waits before asking again to record a finished move.
const RECORD_MOVE_AGAIN: Duration = Duration::from_secs(2);

pub struct ReplicaDriver {
    ctx: DriverContext,
    multi: RefCell<MultiRaft>,
    groups: RefCell<HashMap<u64, Rc<Group>>>,
    inbox: RefCell<Vec<(NodeId, Envelope)>>,
    pending: RefCell<Vec<GroupAction>>,
    bell: Doorbell,
    meta: RefCell<Arc<Metadata>>,
    /// The metadata changed: look for moves and preferred leaders at the next round.
    check_soon: Cell<bool>,
    /// Partitions whose group stopped because its state could not be persisted: the shard
    /// reopens them from disk ([`ReplicaDriver::take_failed`]).
    failed: RefCell<Vec<(String, i32)>>,
    /// Rung when a group is added to `failed`.
    pub failed_bell: Doorbell,
    /// The id of the next linearizable read.
    next_read: Cell<u64>,
}

fn raft_id(node: NodeId) -> u64 {
    u64::try_from(node).unwrap_or(0)
}

fn node_id(raft: u64) -> NodeId {
    NodeId::try_from(raft).unwrap_or(NodeId::MAX)
}

/// Most entries (produced batches) in one Append: a follower catching up gets up to
/// `MAX_ENTRY_BYTES` per round trip and per fsync, not 64 small batches.
const MAX_ENTRIES_PER_APPEND: usize = 4_096;

/// The Raft settings of a partition group of `replicas`; `sync_writes`: entries count once
/// fsynced (the topic's `durability=persisted`) or once written (`replicated`).
fn group_config(me: NodeId, replicas: &[NodeId], sync_writes: bool) -> Config {
    let mut c = Config::new(raft_id(me), replicas.iter().map(|r| raft_id(*r)).collect());
    c.max_bytes_per_append = MAX_ENTRY_BYTES + 4096;
    c.max_bytes_in_flight = 4 * MAX_ENTRY_BYTES;
    c.max_entries_per_append = MAX_ENTRIES_PER_APPEND;
    c.max_entries_in_flight = 4 * MAX_ENTRIES_PER_APPEND as u64;
    c.sync_writes = sync_writes;
    c
}

fn read_hard_state(dir: &Path) -> HardState {
    let Ok(text) = std::fs::read_to_string(dir.join(RAFT_STATE_FILE)) else {
        return HardState::default();
    };
    let mut it = text.split_whitespace();
    let term = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let voted_for = it.next().and_then(|v| v.parse().ok());
    HardState { term, voted_for }
}

impl ReplicaDriver {
    pub fn new(ctx: DriverContext, meta: Arc<Metadata>) -> Rc<Self> {
        Rc::new(Self {
            multi: RefCell::new(MultiRaft::new(MultiConfig::new(raft_id(ctx.me)))),
            ctx,
            groups: RefCell::new(HashMap::new()),
            inbox: RefCell::new(Vec::new()),
            pending: RefCell::new(Vec::new()),
            bell: Doorbell::default(),
            meta: RefCell::new(meta),
            check_soon: Cell::new(false),
            failed: RefCell::new(Vec::new()),
            failed_bell: Doorbell::default(),
            next_read: Cell::new(1),
        })
    }

    /// Whether this shard runs group `group`.
    pub fn has_group(&self, group: u64) -> bool {
        self.groups.borrow().contains_key(&group)
    }

    /// Starts the group of a replicated partition whose log is open here, from what its
    /// log and its hard state file hold; `sync_writes` as [`Config::sync_writes`].
    pub fn add_group(
        &self,
        group: u64,
        topic: &str,
        partition: i32,
        replicas: &[NodeId],
        log: PartitionLog,
        sync_writes: bool,
    ) -> Rc<GroupHandle> {
        if let Some(g) = self.groups.borrow().get(&group) {
            return g.handle.clone();
        }
        let dir = log.dir().to_path_buf();
        let hard = read_hard_state(&dir);
        let epochs = log.leader_epochs();
        tracing::debug!(topic, partition, log_start = log.log_start_offset(), log_end = log.log_end_offset(), epochs = ?epochs.entries(), ?hard, "starting a partition group");
        // The membership the group started with is the replicas the metadata lists (for a
        // replica being added by a move: the current ones, without it); the changes since
        // are in its members file.
        let initial = quiver_raft::Membership::of_voters(
            &replicas.iter().map(|r| raft_id(*r)).collect::<Vec<_>>(),
        );
        let members = match std::fs::read_to_string(dir.join(MEMBERS_FILE)) {
            Ok(text) => membership_store::decode(&text).unwrap_or_else(|e| {
                tracing::error!(topic, partition, "the partition's {MEMBERS_FILE} is damaged ({e}): starting from the replicas the metadata lists");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let (membership, after) =
            membership_store::split_at(&members, log.log_start_offset(), initial);
        let raft_log = restored_log(
            log.log_start_offset(),
            log.log_end_offset(),
            epochs.entries(),
            membership,
            after,
        );
        let handle = Rc::new(GroupHandle::new());
        handle.persisted_index.set(log.log_end_offset());
        let added = self.multi.borrow_mut().add_group_from_log(
            group,
            group_config(self.ctx.me, replicas, sync_writes),
            hard,
            raft_log,
        );
        if let Err(e) = added {
            tracing::error!(topic, partition, "cannot start the partition's group: {e}");
        }
        // A new partition's preferred replica (placement's leader) campaigns at once: it is
        // elected before the others' timeouts, with no hand-over later.
        let fresh = hard.term == 0 && log.log_end_offset() == 0;
        if fresh && replicas.first() == Some(&self.ctx.me) {
            if let Ok((_, actions)) = self
                .multi
                .borrow_mut()
                .with_group(group, |n| ((), n.campaign_now()))
            {
                self.pending.borrow_mut().extend(actions);
                self.bell.ring();
            }
        }
        self.groups.borrow_mut().insert(
            group,
            Rc::new(Group {
                topic: topic.to_string(),
                partition,
                log,
                dir,
                handle: handle.clone(),
                members: RefCell::new(members),
                recorded_move: Cell::new(None),
            }),
        );
        handle
    }

    /// A replica that cannot persist its entries or its Raft state must not vote, lead or
    /// acknowledge on the strength of what it failed to write (and its log's view may now
    /// differ from the core's): the group stops here at once, its unsent messages dropped,
    /// and the shard reopens the partition from disk (recovery, then a fresh group from what
    /// the disk holds), retrying until that works. The other replicas carry on meanwhile.
    fn fail_group(&self, g: u64, group: &Rc<Group>, why: &str) {
        // Only this incarnation: a reopened group under the same id is not the one failing.
        if !self.is_current(g, group) {
            return;
        }
        self.remove_group(g);
        tracing::error!(topic = %group.topic, partition = group.partition, "{why}: this replica stops (it neither votes nor acknowledges) and is reopened from disk once it can be; free space or fix the disk");
        let h = &group.handle;
        h.is_leader.set(false);
        h.leader_ready.set(false);
        h.leader.set(None);
        h.progress.wake_all();
        self.failed
            .borrow_mut()
            .push((group.topic.clone(), group.partition));
        self.failed_bell.ring();
    }

    /// Whether `group` is still the incarnation running as group `g` (a failed group is
    /// reopened under the same id while actions of the old one may still be in hand).
    fn is_current(&self, g: u64, group: &Rc<Group>) -> bool {
        self.groups
            .borrow()
            .get(&g)
            .is_some_and(|cur| Rc::ptr_eq(cur, group))
    }

    /// Actions tagged with the group incarnation they were made for, at once (before any
    /// await lets a reopen replace it).
    fn tag(&self, actions: Vec<GroupAction>) -> Vec<(Rc<Group>, u64, Action)> {
        let groups = self.groups.borrow();
        actions
            .into_iter()
            .filter_map(|(g, a)| groups.get(&g).map(|group| (group.clone(), g, a)))
            .collect()
    }

    /// The partitions whose group failed since the last call (see `fail_group`).
    pub fn take_failed(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.failed.borrow_mut())
    }

    /// Stops a group (its partition was deleted or moved away, or it failed). Its queued
    /// actions go with it: a group added again under the same id must not carry them out.
    pub fn remove_group(&self, group: u64) {
        self.multi.borrow_mut().remove_group(group);
        self.groups.borrow_mut().remove(&group);
        self.pending.borrow_mut().retain(|(g, _)| *g != group);
    }

    pub fn set_metadata(&self, meta: Arc<Metadata>) {
        *self.meta.borrow_mut() = meta;
        self.check_soon.set(true);
        self.bell.ring();
    }

    /// The partitions this shard leads, with each follower's progress as the leader tracks
    /// it (`quiver cluster status`).
    pub fn describe(&self) -> Vec<quiver_broker_api::PartitionReplication> {
        let me = raft_id(self.ctx.me);
        self.each_led(|_, group, n| {
            let reachable = n.reachable();
            let m = n.membership();
            let followers = m
                .members()
                .filter(|id| *id != me)
                .map(|id| quiver_broker_api::FollowerProgress {
                    node: node_id(id),
                    learner: m.learners.contains(&id),
                    // Index i is offset i - 1: a matched index is the follower's log end.
                    log_end_offset: n.matched(id).unwrap_or(0),
                    reachable: reachable.contains(&id),
                })
                .collect();
            Some(quiver_broker_api::PartitionReplication {
                topic: group.topic.clone(),
                partition: group.partition,
                leader_epoch: i32::try_from(n.term()).unwrap_or(i32::MAX),
                log_end_offset: group.log.log_end_offset(),
                high_watermark: group.handle.commit_index.get(),
                followers,
            })
        })
    }

    /// `f` of every group this shard leads (those it returns `Some` for).
    fn each_led<T>(
        &self,
        mut f: impl FnMut(u64, &Rc<Group>, &quiver_raft::RaftNode) -> Option<T>,
    ) -> Vec<T> {
        let multi = self.multi.borrow();
        self.groups
            .borrow()
            .iter()
            .filter_map(|(g, group)| {
                let n = multi.group(*g)?;
                if n.role() != Role::Leader {
                    return None;
                }
                f(*g, group, n)
            })
            .collect()
    }

    /// Takes one envelope another node's same shard sent (its partition groups' messages).
    pub fn deliver(&self, from: NodeId, envelope: Envelope) {
        self.inbox.borrow_mut().push((from, envelope));
        self.bell.ring();
    }

    /// Proposes one batch of `span` offsets to `group` (this node must lead it): the indexes
    /// it takes (its offsets are one less).
    pub fn propose(
        &self,
        group: u64,
        span: u64,
        batch: Vec<u8>,
    ) -> Result<(u64, u64), ProposeRefusal> {
        let result = self.multi.borrow_mut().with_group(group, |node| {
            match node.propose_spans(vec![(span, batch)]) {
                Ok((range, actions)) => (Ok((*range.start(), *range.end())), actions),
                Err(e) => (Err((e, node.leader())), Vec::new()),
            }
        });
        match result {
            Ok((Ok(range), actions)) => {
                self.pending.borrow_mut().extend(actions);
                self.bell.ring();
                Ok(range)
            }
            Ok((Err((quiver_raft::ProposeError::NotLeader { .. }, leader)), _)) => {
                Err(ProposeRefusal::NotLeader {
                    leader: leader.map(node_id),
                })
            }
            // Handing leadership over: the new leader answers once elected.
            Ok((Err((quiver_raft::ProposeError::Transferring { to }, _)), _)) => {
                Err(ProposeRefusal::NotLeader {
                    leader: Some(node_id(to)),
                })
            }
            Ok((Err((e, _)), _)) => Err(ProposeRefusal::Other(format!("{e:?}"))),
            Err(e) => Err(ProposeRefusal::Other(e.to_string())),
        }
    }

    /// Asks `group` (led here) to confirm its leadership for a read (Raft's ReadIndex): the
    /// read's id, whose outcome the group's handle shows ([`GroupHandle::read_outcome`])
    /// once a quorum answered the heartbeats this sends at the next round.
    pub fn read_index(&self, group: u64) -> Result<u64, ProposeRefusal> {
        let id = self.next_read.get();
        let handle = self
            .groups
            .borrow()
            .get(&group)
            .map(|g| g.handle.clone())
            .ok_or_else(|| ProposeRefusal::Other(format!("group {group} does not run here")))?;
        let result = self
            .multi
            .borrow_mut()
            .with_group(group, |node| match node.read_index(id) {
                Ok(actions) => (Ok(()), actions),
                Err(e) => (Err((e, node.leader())), Vec::new()),
            });
        match result {
            Ok((Ok(()), actions)) => {
                self.next_read.set(id + 1);
                handle.reads.borrow_mut().insert(id, None);
                self.pending.borrow_mut().extend(actions);
                self.bell.ring();
                Ok(id)
            }
            Ok((Err((quiver_raft::ProposeError::NotLeader { .. }, leader)), _)) => {
                Err(ProposeRefusal::NotLeader {
                    leader: leader.map(node_id),
                })
            }
            Ok((Err((e, _)), _)) => Err(ProposeRefusal::Other(e.to_string())),
            Err(e) => Err(ProposeRefusal::Other(e.to_string())),
        }
    }

    /// Runs the rounds until the shard stops.
    pub async fn run(self: Rc<Self>) {
        let tick = Duration::from_millis(self.ctx.tick_ms.max(1));
        let mut next_tick = Instant::now() + tick;
        let mut ticks: u64 = 0;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(wait).await;
                },
                self.bell.wait(),
            )
            .await;
            let mut actions: Vec<GroupAction> = std::mem::take(&mut *self.pending.borrow_mut());
            if Instant::now() >= next_tick {
                actions.extend(self.multi.borrow_mut().tick());
                next_tick = Instant::now() + tick;
                ticks += 1;
                if ticks % preferred_leader::CHECK_EVERY_TICKS == 0 {
                    actions.extend(self.hand_back_leadership());
                }
                if ticks % MOVE_EVERY_TICKS == 0 {
                    actions.extend(self.step_moves());
                    self.follow_log_starts();
                }
            }
            if self.check_soon.take() {
                actions.extend(self.step_moves());
                actions.extend(self.hand_back_leadership());
            }
            let inbox = std::mem::take(&mut *self.inbox.borrow_mut());
            for (from, envelope) in inbox {
                actions.extend(self.multi.borrow_mut().step(raft_id(from), envelope));
            }
            self.settle(actions).await;
            let envelopes = self.multi.borrow_mut().flush();
            if tracing::enabled!(tracing::Level::TRACE) {
                for (g, group) in self.groups.borrow().iter() {
                    if let Some(n) = self.multi.borrow().group(*g) {
                        tracing::trace!(topic = %group.topic, partition = group.partition, role = ?n.role(), term = n.term(), commit = n.commit_index(), last = n.last_index(), persisted = n.persisted_index(), log_end = group.log.log_end_offset(), "group");
                    }
                }
                for (to, e) in &envelopes {
                    tracing::trace!(to, messages = ?e.messages, "envelope");
                }
            }
            self.send(envelopes).await;
        }
    }

    /// Starts handing the groups this shard leads back to their preferred replicas, where
    /// those are up and hold the whole log.
    fn hand_back_leadership(&self) -> Vec<GroupAction> {
        let me = raft_id(self.ctx.me);
        let meta = self.meta.borrow().clone();
        let led: Vec<preferred_leader::Led> = self.each_led(|g, group, n| {
            // The metadata's first replica; none while a move runs.
            let pm = meta.partition(&group.topic, group.partition)?;
            if pm.target.is_some() {
                return None;
            }
            let preferred = raft_id(*pm.replicas.first()?);
            if !n.membership().voters.contains(&preferred) {
                return None;
            }
            Some(preferred_leader::Led {
                group: g,
                preferred,
                reachable: n.reachable().contains(&preferred),
                caught_up: n.matched(preferred) == Some(n.last_index()),
            })
        });
        let moves = preferred_leader::hand_back(me, &led, preferred_leader::MAX_MOVES_PER_CHECK);
        let mut actions = Vec::new();
        for (g, to) in moves {
            if let Some(group) = self.groups.borrow().get(&g) {
                tracing::info!(topic = %group.topic, partition = group.partition, to = node_id(to), "handing leadership back to the preferred replica");
            }
            if let Ok((_, a)) = self
                .multi
                .borrow_mut()
                .with_group(g, |n| ((), n.transfer_leadership(to)))
            {
                actions.extend(a);
            }
        }
        actions
    }

    /// Tells each group where its log now starts when retention deleted segments: a
    /// follower that needs what is gone gets the leader's log start instead (a snapshot
    /// of no data: the log is the state).
    fn follow_log_starts(&self) {
        let mut multi = self.multi.borrow_mut();
        for (g, group) in self.groups.borrow().iter() {
            let start = group.log.log_start_offset();
            let behind = multi
                .group(*g)
                .is_some_and(|n| n.snapshot().index < start && start <= n.commit_index());
            if behind {
                let _ = multi.with_group(*g, |n| {
                    if let Err(e) = n.compact(start, Vec::new()) {
                        tracing::debug!(topic = %group.topic, partition = group.partition, "log start not taken yet: {e:?}");
                    }
                    ((), Vec::new())
                });
            }
        }
    }

    /// Takes the next step of every move this shard leads (`replica_move`): the metadata's
    /// target, or its replicas where the group's voters differ from them (a move cut short).
    fn step_moves(&self) -> Vec<GroupAction> {
        let meta = self.meta.borrow().clone();
        let me = raft_id(self.ctx.me);
        let mut actions = Vec::new();
        // Each led group's next step, decided first (the groups and the core borrowed), then
        // carried out.
        let steps = self.each_led(|g, group, n| {
            let pm = meta.partition(&group.topic, group.partition)?;
            let target: Vec<u64> = pm
                .target
                .as_ref()
                .unwrap_or(&pm.replicas)
                .iter()
                .map(|r| raft_id(*r))
                .collect();
            let m = n.membership();
            let settled = m.learners.is_empty()
                && m.voters.len() == target.len()
                && target.iter().all(|t| m.voters.contains(t));
            if settled && pm.target.is_none() {
                return None;
            }
            let view = replica_move::GroupView {
                me,
                membership: m.clone(),
                change_pending: n.membership_change_pending(),
                commit: n.commit_index(),
                matched: m
                    .members()
                    .filter_map(|id| n.matched(id).map(|x| (id, x)))
                    .collect(),
                reachable: n.reachable().into_iter().collect(),
                transferring: n.transferring().is_some(),
            };
            let step = replica_move::next_step(&view, &target);
            Some((g, group.clone(), pm.target.clone(), step))
        });
        for (g, group, pm_target, step) in steps {
            let change = match step {
                MoveStep::Wait => continue,
                MoveStep::Done => {
                    let due = group
                        .recorded_move
                        .get()
                        .is_none_or(|t| t.elapsed() >= RECORD_MOVE_AGAIN);
                    if let (Some(t), true) = (&pm_target, due) {
                        group.recorded_move.set(Some(Instant::now()));
                        tracing::info!(topic = %group.topic, partition = group.partition, replicas = ?t, "the partition's move is done: recording its replicas");
                        (self.ctx.on_moved)(group.topic.clone(), group.partition, t.clone());
                    }
                    continue;
                }
                MoveStep::TransferTo(to) => {
                    tracing::info!(topic = %group.topic, partition = group.partition, to = node_id(to), "this leader leaves the partition: handing leadership over first");
                    if let Ok((_, a)) = self
                        .multi
                        .borrow_mut()
                        .with_group(g, |n| ((), n.transfer_leadership(to)))
                    {
                        actions.extend(a);
                    }
                    continue;
                }
                MoveStep::AddLearner(n) => quiver_raft::MembershipChange::AddLearner(n),
                MoveStep::Promote(n) => quiver_raft::MembershipChange::Promote(n),
                MoveStep::Remove(n) => quiver_raft::MembershipChange::Remove(n),
            };
            tracing::info!(topic = %group.topic, partition = group.partition, ?change, "moving the partition's replicas");
            let result =
                self.multi
                    .borrow_mut()
                    .with_group(g, |n| match n.change_membership(change) {
                        Ok((_, a)) => (Ok(()), a),
                        Err(e) => (Err(e), Vec::new()),
                    });
            match result {
                Ok((Ok(()), a)) => actions.extend(a),
                Ok((Err(e), _)) => {
                    tracing::debug!(topic = %group.topic, partition = group.partition, "membership change not taken now: {e:?}")
                }
                Err(e) => tracing::debug!("{e}"),
            }
        }
        actions
    }

    /// Carries out actions until none are left: writes, reads, then reports them.
    async fn settle(&self, actions: Vec<GroupAction>) {
        let mut actions = self.tag(actions);
        while !actions.is_empty() {
            let mut next = Vec::new();
            // Per group, in order: a group's writes must land in the order asked.
            let mut by_group: BTreeMap<u64, Vec<(Rc<Group>, Action)>> = BTreeMap::new();
            for (group, g, a) in actions.drain(..) {
                by_group.entry(g).or_default().push((group, a));
            }
            // Every group's entries are written first and their durability awaited after:
            // the groups of a round share one commit-log write (one fsync), instead of one
            // each in turn.
            let mut persisting: Vec<Persisting> = Vec::new();
            for (g, list) in by_group {
                for (group, a) in list {
                    if !self.is_current(g, &group) {
                        continue; // failed (and maybe reopened) since the action was made
                    }
                    match a {
                        Action::PersistEntries {
                            write,
                            first_index,
                            entries,
                            sync,
                        } => match self.write_entries(&group, first_index, entries).await {
                            Ok((durable, end)) => persisting.push(Persisting {
                                g,
                                group: group.clone(),
                                write,
                                // `durability=replicated`: counted once written (the flush
                                // policy makes it durable later).
                                durable: if sync { durable } else { Vec::new() },
                                end,
                            }),
                            Err(why) => self.fail_group(g, &group, &why),
                        },
                        other => {
                            let made = self.carry_out(g, &group, other).await;
                            next.extend(self.tag(made));
                        }
                    }
                }
            }
            'groups: for p in persisting {
                for d in p.durable {
                    if let Err(e) = d.wait().await {
                        let why = format!("an entry did not become durable: {e}");
                        self.fail_group(p.g, &p.group, &why);
                        continue 'groups;
                    }
                }
                if !self.is_current(p.g, &p.group) {
                    continue;
                }
                let h = &p.group.handle;
                h.persisted_index.set(h.persisted_index.get().max(p.end));
                h.progress.wake_all();
                let made = self.multi.borrow_mut().persisted(p.g, p.write);
                next.extend(self.tag(made));
            }
            actions = next;
        }
    }

    /// Writes a `PersistEntries`'s entries (truncating a diverged tail first): what to await
    /// for their durability, and the log end after them; why not, when the replica cannot
    /// store them (it then fails: `fail_group`).
    async fn write_entries(
        &self,
        group: &Group,
        first_index: u64,
        entries: Vec<quiver_raft::types::Entry>,
    ) -> Result<(Vec<quiver_storage::Durability>, u64), String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let plan = match plan_persist(group.log.log_end_offset(), first_index, &entries, now_ms) {
            Ok(p) => p,
            Err(e) => return Err(format!("cannot store the partition's entries: {e}")),
        };
        // Membership entries are listed before they are written: a list ahead of the log is
        // cut to the log's end at a restart, one behind it would lose a change.
        let members = membership_store::after_write(
            &group.members.borrow(),
            first_index,
            &entries,
            group.log.log_start_offset(),
        );
        if let Some(members) = members {
            let text = membership_store::encode(&members);
            if let Err(e) =
                quiver_storage::files::write_atomically(&group.dir, MEMBERS_FILE, text.into_bytes())
                    .await
            {
                return Err(format!("cannot persist the partition's membership: {e}"));
            }
            *group.members.borrow_mut() = members;
        }
        if let Some(offset) = plan.truncate_to {
            if let Err(e) = group.log.truncate_to(offset).await {
                return Err(format!("cannot truncate the diverged tail: {e}"));
            }
        }
        let mut durable = Vec::new();
        for a in plan.appends {
            match group
                .log
                .append_replica_entry(a.batch, a.leader_epoch)
                .await
            {
                Ok((info, d)) if info.base_offset == a.base_offset => durable.push(d),
                Ok((info, _)) => {
                    return Err(format!(
                        "an entry meant for offset {} landed at {}",
                        a.base_offset, info.base_offset
                    ))
                }
                Err(e) => return Err(format!("cannot append an entry: {e}")),
            }
        }
        Ok((durable, group.log.log_end_offset()))
    }

    async fn carry_out(&self, g: u64, group: &Rc<Group>, action: Action) -> Vec<GroupAction> {
        match action {
            Action::PersistHardState(h) => {
                let text = format!(
                    "{} {}\n",
                    h.term,
                    h.voted_for.map_or(String::new(), |v| v.to_string())
                );
                if let Err(e) = quiver_storage::files::write_atomically(
                    &group.dir,
                    RAFT_STATE_FILE,
                    text.into_bytes(),
                )
                .await
                {
                    let why = format!("cannot persist the partition's Raft state: {e}");
                    self.fail_group(g, group, &why);
                }
                Vec::new()
            }
            // Written by `settle`, which awaits every group's durability together.
            Action::PersistEntries { .. } => Vec::new(),
            Action::InstallSnapshot { write, snapshot } => {
                // This replica is behind its leader's log start (retention deleted what it
                // lacks), or its log diverged at the snapshot's point: it empties its log and
                // continues from there, as Kafka's `truncateFullyAndStartAt` (the core
                // dropped everything it held too).
                let index = snapshot.index;
                let epoch = i32::try_from(snapshot.term).unwrap_or(i32::MAX);
                if let Err(e) = group.log.reset_to(index, epoch).await {
                    let why =
                        format!("cannot reset the replica to its leader's log start {index}: {e}");
                    self.fail_group(g, group, &why);
                    return Vec::new();
                }
                let members = vec![(index, snapshot.membership.clone())];
                let text = membership_store::encode(&members);
                if let Err(e) = quiver_storage::files::write_atomically(
                    &group.dir,
                    MEMBERS_FILE,
                    text.into_bytes(),
                )
                .await
                {
                    let why = format!("cannot persist the partition's membership: {e}");
                    self.fail_group(g, group, &why);
                    return Vec::new();
                }
                *group.members.borrow_mut() = members;
                tracing::info!(topic = %group.topic, partition = group.partition, log_start_offset = index, "caught up by starting at the leader's log start");
                if !self.is_current(g, group) {
                    return Vec::new(); // reopened meanwhile
                }
                group.handle.persisted_index.set(index);
                group.handle.progress.wake_all();
                self.multi.borrow_mut().persisted(g, write)
            }
            Action::ReadEntries {
                to,
                from_index,
                max_bytes,
                ..
            } => {
                let Ok(from) = offset_of(from_index) else {
                    return Vec::new();
                };
                let batches = group
                    .log
                    .read(
                        from,
                        usize::try_from(max_bytes).unwrap_or(usize::MAX).max(1),
                    )
                    .await
                    .unwrap_or_default();
                let mut entries = Vec::new();
                let mut prev_index = None;
                for b in batches {
                    let Ok(h) = quiver_batch::BatchHeader::parse(&b) else {
                        break;
                    };
                    if prev_index.is_none() {
                        prev_index = Some(h.base_offset.max(0) as u64);
                    }
                    match entry_of_batch(b) {
                        Ok(e) => entries.push(e),
                        Err(_) => break,
                    }
                }
                let prev = prev_index.unwrap_or(from);
                if !self.is_current(g, group) {
                    return Vec::new(); // reopened meanwhile: the new group reads again
                }
                self.multi
                    .borrow_mut()
                    .with_group(g, |n| ((), n.entries_read(to, from_index, prev, entries)))
                    .map(|(_, a)| a)
                    .unwrap_or_default()
            }
            Action::Send { .. } => Vec::new(),
            Action::ReadReady { id, index } => {
                group.handle.settle_read(id, Some(index));
                Vec::new()
            }
            Action::ReadDropped { id } => {
                group.handle.settle_read(id, None);
                Vec::new()
            }
            Action::Committed(index) => {
                let ready = self
                    .multi
                    .borrow()
                    .group(g)
                    .is_some_and(|n| n.leads_with_current_commit());
                group.handle.leader_ready.set(ready);
                let upto = index.min(group.handle.persisted_index.get());
                if upto > group.handle.commit_index.get() {
                    group.handle.commit_index.set(upto);
                    group.handle.progress.wake_all();
                }
                Vec::new()
            }
            Action::RoleChanged { role, term } => {
                let leader = role == Role::Leader;
                group.handle.is_leader.set(leader);
                group.handle.leader_ready.set(false);
                group.handle.term.set(term);
                let known = self
                    .multi
                    .borrow()
                    .group(g)
                    .and_then(|n| n.leader())
                    .map(node_id);
                group.handle.leader.set(known);
                group.handle.progress.wake_all();
                tracing::debug!(topic = %group.topic, partition = group.partition, ?role, term, leader = ?known, "role changed");
                if leader {
                    (self.ctx.on_leader)(
                        group.topic.clone(),
                        group.partition,
                        term,
                        group.handle.clone(),
                    );
                }
                Vec::new()
            }
        }
    }

    async fn send(&self, envelopes: Vec<(u64, Envelope)>) {
        for (to, envelope) in envelopes {
            let node = node_id(to);
            let addr: Option<SocketAddr> = self
                .meta
                .borrow()
                .client_address(node, self.ctx.shard)
                .and_then(|a| a.parse().ok());
            let Some(addr) = addr else {
                continue;
            };
            let message = NodeMessage::Raft {
                from: self.ctx.me,
                cluster: self.meta.borrow().cluster_id.clone(),
                envelope: codec::encode(&envelope),
            };
            if !self.ctx.links.send(addr, message.encode()).await {
                let groups: Vec<u64> = envelope.messages.iter().map(|(g, _)| *g).collect();
                let mut multi = self.multi.borrow_mut();
                for g in groups {
                    let _ = multi.with_group(g, |n| {
                        n.send_failed(to);
                        ((), Vec::new())
                    });
                }
            }
        }
    }
}
