//! A deterministic simulator of one Raft group: 3 to 5 [`RaftNode`]s, a network that delays,
//! drops, duplicates and reorders messages and splits into partitions that heal, disks that
//! lose what was not yet durable when their node crashes (and may tear the last write), nodes
//! that crash and restart, clocks that run fast or slow, and client proposals throughout.
//! Everything comes from one seed: a failing seed replays exactly. Half the runs also change
//! membership under the faults (learners added, promoted, voters removed: nodes beyond the
//! three first voters start empty), and nodes compact their logs, so followers behind the
//! log start are reset by snapshot.
//!
//! Checked after every step: one leader per term (election safety); a new leader holds every
//! committed entry (leader completeness); a committed entry never changes; it is on a majority
//! of disks (of the voters the committing leader counted, when membership changes; of all
//! nodes at all times otherwise); nodes' logs agree up to their last common (index, term)
//! (log matching); a snapshot holds exactly the committed entries it replaces. At the end, with faults healed: a leader is elected and
//! commits within a bound of ticks, and every accepted proposal is committed or definitely
//! failed (an entry of a later term was committed at or before its index).

mod checks;
pub mod local_cluster;

use std::collections::{BTreeMap, VecDeque};

use crate::log::RaftLog;
use crate::node::RaftNode;
use crate::types::{
    Action, Broken, Config, Entry, HardState, MembershipChange, Message, NodeId, Payload, Role,
    Snapshot,
};

/// The simulator's random numbers (splitmix64): no dependency, the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// How hard a run is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    /// Ticks with faults.
    pub fault_ticks: u64,
    /// Ticks allowed, after healing, to elect a leader and commit everything.
    pub heal_ticks: u64,
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    /// Per tick: a live node crashes.
    pub crash_per_mille: u64,
    /// Per tick: a crashed node restarts.
    pub restart_per_mille: u64,
    /// Per tick: the network splits (when whole) or heals (when split).
    pub partition_per_mille: u64,
    pub heal_per_mille: u64,
    /// Per tick: a client proposes to a node that believes it leads.
    pub propose_per_mille: u64,
    /// A node that just granted its vote crashes and reboots at once (what a vote that was
    /// not durable would not survive).
    pub crash_after_vote_per_mille: u64,
    /// Per tick: the leader is asked to hand leadership to another node.
    pub transfer_per_mille: u64,
    /// Per tick: the leader is asked one membership change (0: the membership stays all
    /// nodes, and the all-times durability check runs).
    pub membership_per_mille: u64,
    /// Per tick: a node drops a committed prefix of its log.
    pub compact_per_mille: u64,
    /// Entries cover 1 to `max_span` indexes (a batch of that many records).
    pub max_span: u64,
    /// Per tick: a node lets committed entries leave memory (read back from its disk when a
    /// follower needs them).
    pub release_per_mille: u64,
    /// A restarting node loads only its log's epochs and memberships, not its entries.
    pub restore_without_entries: bool,
    pub broken: Option<Broken>,
}

impl SimConfig {
    /// A run of 3 to 5 nodes picked by `rng`, with every fault on.
    pub fn random(rng: &mut Rng) -> Self {
        Self {
            nodes: 3 + rng.below(3) as usize,
            fault_ticks: 1_000,
            heal_ticks: 500,
            drop_per_mille: rng.below(150),
            duplicate_per_mille: rng.below(50),
            crash_per_mille: rng.below(15),
            restart_per_mille: 20 + rng.below(60),
            partition_per_mille: rng.below(15),
            heal_per_mille: 10 + rng.below(40),
            propose_per_mille: 200 + rng.below(600),
            crash_after_vote_per_mille: rng.below(300),
            transfer_per_mille: rng.below(20),
            membership_per_mille: if rng.chance(500) {
                5 + rng.below(40)
            } else {
                0
            },
            compact_per_mille: rng.below(30),
            max_span: if rng.chance(500) { 1 } else { 2 + rng.below(6) },
            release_per_mille: rng.below(100),
            restore_without_entries: rng.chance(500),
            broken: None,
        }
    }
}

/// A run's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub ticks: u64,
    pub messages: u64,
    pub faults: u64,
    pub committed: u64,
    pub proposals: u64,
    pub proposals_failed: u64,
    pub leaders: u64,
    pub membership_changes: u64,
    pub compactions: u64,
    pub snapshots_installed: u64,
    pub entries_read_from_disk: u64,
    /// Linearizable reads asked of nodes that believed they led, and those confirmed.
    pub reads: u64,
    pub reads_confirmed: u64,
}

impl Stats {
    pub fn add(&mut self, s: &Stats) {
        self.ticks += s.ticks;
        self.messages += s.messages;
        self.faults += s.faults;
        self.committed += s.committed;
        self.proposals += s.proposals;
        self.proposals_failed += s.proposals_failed;
        self.leaders += s.leaders;
        self.membership_changes += s.membership_changes;
        self.compactions += s.compactions;
        self.snapshots_installed += s.snapshots_installed;
        self.entries_read_from_disk += s.entries_read_from_disk;
        self.reads += s.reads;
        self.reads_confirmed += s.reads_confirmed;
    }
}

/// Why a run failed, with the events that led there.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub tick: u64,
    pub what: String,
    pub history: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at tick {}: {}\nreplay: QUIVER_SIM_SEED={} cargo test -p quiver-raft --test simulation\nlast events:",
            self.seed, self.tick, self.what, self.seed
        )?;
        for h in &self.history {
            writeln!(f, "  {h}")?;
        }
        Ok(())
    }
}

enum Write {
    Hard(HardState),
    Log {
        write: u64,
        first_index: u64,
        entries: Vec<Entry>,
    },
    Snapshot {
        write: u64,
        snapshot: Snapshot,
    },
}

struct SimNode {
    id: NodeId,
    core: Option<RaftNode>,
    disk_hard: HardState,
    /// What the disk holds: a snapshot (index 0: none yet) and the entries after it.
    disk: RaftLog,
    /// Writes handed to the disk, durable at their tick, in order.
    disk_queue: VecDeque<(u64, Write)>,
    /// Actions waiting for the disk writes before them.
    actions: VecDeque<Action>,
    /// Its committed entries up to here were checked against the committed log.
    checked: u64,
}

const HISTORY: usize = 60;
/// Per tick, while faults run: a client asks for a linearizable read.
const READ_PER_MILLE: u64 = 300;

/// One simulated group.
pub struct Sim {
    seed: u64,
    rng: Rng,
    cfg: SimConfig,
    now: u64,
    nodes: Vec<SimNode>,
    /// The first voters (all nodes unless membership changes).
    voters: Vec<NodeId>,
    net: Vec<(u64, NodeId, NodeId, Message)>,
    /// Disk reads under way: (due tick, node, for follower, from index, prev index, entries).
    reads: Vec<(u64, usize, NodeId, u64, u64, Vec<Entry>)>,
    /// While split: each node's side.
    sides: Option<Vec<bool>>,
    faults_on: bool,
    /// The committed log, as first reported by any node.
    committed: RaftLog,
    leaders: BTreeMap<u64, NodeId>,
    proposals: Vec<(u64, u64, Vec<u8>)>,
    next_proposal: u64,
    /// The highest commit index any node has decided or learnt so far.
    commit_seen: u64,
    /// Reads asked: id → (node, the commit index seen anywhere when asked).
    asked_reads: BTreeMap<u64, (NodeId, u64)>,
    next_read: u64,
    /// Its own stream, so reads do not shift the faults a seed draws.
    read_rng: Rng,
    history: VecDeque<String>,
    stats: Stats,
}

impl Sim {
    pub fn new(seed: u64, cfg: SimConfig) -> Self {
        let ids: Vec<NodeId> = (1..=cfg.nodes as u64).collect();
        let voters: Vec<NodeId> = if cfg.membership_per_mille > 0 {
            ids[..3].to_vec()
        } else {
            ids.clone()
        };
        let committed = RaftLog::new(
            Snapshot {
                membership: crate::types::Membership::of_voters(&voters),
                ..Snapshot::default()
            },
            Vec::new(),
        );
        let nodes = ids
            .iter()
            .map(|&id| {
                let config = node_config(id, &voters, seed, cfg.broken);
                SimNode {
                    id,
                    core: Some(RaftNode::new(
                        config,
                        HardState::default(),
                        None,
                        Vec::new(),
                    )),
                    disk_hard: HardState::default(),
                    disk: committed.clone(),
                    checked: 0,
                    disk_queue: VecDeque::new(),
                    actions: VecDeque::new(),
                }
            })
            .collect();
        Self {
            seed,
            rng: Rng::new(seed ^ 0xC0FF_EE00),
            cfg,
            now: 0,
            nodes,
            voters,
            net: Vec::new(),
            reads: Vec::new(),
            sides: None,
            faults_on: true,
            committed,
            leaders: BTreeMap::new(),
            proposals: Vec::new(),
            next_proposal: 0,
            commit_seen: 0,
            asked_reads: BTreeMap::new(),
            next_read: 0,
            read_rng: Rng::new(seed ^ 0x5EAD_5EAD),
            history: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    fn note(&mut self, event: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!("t{} {event}", self.now));
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            seed: self.seed,
            tick: self.now,
            what,
            history: self.history.iter().cloned().collect(),
        }
    }

    /// Runs the faults, then the healing; the run's counts, or the first broken invariant.
    pub fn run(mut self) -> Result<Stats, Failure> {
        for _ in 0..self.cfg.fault_ticks {
            self.step()?;
        }
        self.heal();
        let mut healed = false;
        for _ in 0..self.cfg.heal_ticks {
            self.step()?;
            if self.settled() {
                healed = true;
                break;
            }
        }
        if !healed {
            return Err(self.fail(format!(
                "no leader committed everything within {} ticks of healing",
                self.cfg.heal_ticks
            )));
        }
        self.check_proposals()?;
        self.stats.ticks = self.now;
        self.stats.committed = self.committed.len() as u64;
        Ok(self.stats)
    }

    fn heal(&mut self) {
        self.faults_on = false;
        self.sides = None;
        self.note("heal: network whole, every node restarted, no loss".into());
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() {
                self.restart(i);
            }
        }
    }

    /// The leader of the highest term has its whole log committed, and every member is in its
    /// term with the same log and commit index (a deposed leader that has not noticed yet
    /// does not count; nodes removed from the group do not either).
    fn settled(&self) -> bool {
        let Some(leader) = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .filter(|c| c.role() == Role::Leader)
            .max_by_key(|c| c.term())
        else {
            return false;
        };
        leader.commit_index() == leader.last_index()
            && leader.membership().members().all(|id| {
                self.nodes[id as usize - 1].core.as_ref().is_some_and(|c| {
                    c.term() == leader.term()
                        && c.last_index() == leader.last_index()
                        && c.commit_index() == leader.commit_index()
                        && (c.role() == Role::Follower || c.id() == leader.id())
                })
            })
    }

    fn step(&mut self) -> Result<(), Failure> {
        self.now += 1;
        let now = self.now;
        let due: Vec<_> = self.reads.iter().filter(|r| r.0 <= now).cloned().collect();
        self.reads.retain(|r| r.0 > now);
        for (_, i, to, from_index, prev, entries) in due {
            if let Some(core) = self.nodes[i].core.as_mut() {
                let actions = core.entries_read(to, from_index, prev, entries);
                self.queue(i, actions)?;
                self.pump(i)?;
            }
        }
        for i in 0..self.nodes.len() {
            self.pump(i)?;
        }
        self.deliver()?;
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() {
                continue;
            }
            // Clock skew: a node's tick is sometimes skipped or doubled.
            let ticks = match self.rng.below(20) {
                0 => 0,
                1 => 2,
                _ => 1,
            };
            for _ in 0..ticks {
                if let Some(core) = self.nodes[i].core.as_mut() {
                    let actions = core.tick();
                    self.queue(i, actions)?;
                }
            }
            self.pump(i)?;
        }
        if self.faults_on {
            self.faults()?;
            if self.rng.chance(self.cfg.propose_per_mille) {
                self.propose()?;
            }
            if self.read_rng.chance(READ_PER_MILLE) {
                self.read()?;
            }
        }
        if self.cfg.membership_per_mille == 0 {
            self.check_durable_quorum(self.now % 50 == 0)?;
        }
        if self.now % 20 == 0 {
            self.check_log_matching()?;
        }
        Ok(())
    }

    /// The node that leads the highest term, as far as it knows.
    fn leader_index(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .max_by_key(|&i| self.nodes[i].core.as_ref().map_or(0, |c| c.term()))
    }

    fn change_membership(&mut self) -> Result<(), Failure> {
        let target = 1 + self.rng.below(self.nodes.len() as u64);
        let promote = self.rng.chance(700);
        let Some(i) = self.leader_index() else {
            return Ok(());
        };
        let from = self.nodes[i].id;
        let Some(core) = self.nodes[i].core.as_mut() else {
            return Ok(());
        };
        let m = core.membership();
        let change = if !m.contains(target) {
            MembershipChange::AddLearner(target)
        } else if m.learners.contains(&target) && promote {
            MembershipChange::Promote(target)
        } else if m.learners.contains(&target) || m.voters.len() > 2 {
            MembershipChange::Remove(target)
        } else {
            return Ok(());
        };
        match core.change_membership(change) {
            Ok((index, actions)) => {
                self.stats.membership_changes += 1;
                self.queue(i, actions)?;
                self.note(format!("n{from} proposes {change:?} at {index}"));
                self.pump(i)?;
            }
            Err(e) => self.note(format!("n{from} refuses {change:?}: {e}")),
        }
        Ok(())
    }

    /// A live node drops a committed, durable prefix of its log (on its disk too), as
    /// retention or a snapshot would. The snapshot's bytes are a digest of the entries it
    /// replaces, checked wherever it is installed.
    fn compact(&mut self) -> Result<(), Failure> {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let pick = self.rng.next_u64();
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Ok(());
        };
        let start = core.snapshot().index;
        let limit = core
            .commit_index()
            .min(core.persisted_index())
            .min(self.committed.last_index());
        // A boundary of the core's log in (start, limit].
        let ends: Vec<u64> = core
            .log()
            .ends()
            .iter()
            .copied()
            .filter(|e| *e > start && *e <= limit)
            .collect();
        if ends.is_empty() {
            return Ok(());
        }
        let index = ends[(pick % ends.len() as u64) as usize];
        let data = digest(&self.committed, index);
        let id = self.nodes[i].id;
        let disk = &self.nodes[i].disk;
        if index < disk.snapshot().index || index > disk.last_index() || !disk.is_boundary(index) {
            let (a, b) = (disk.first_index(), disk.last_index());
            return Err(self.fail(format!(
                "n{id} may compact to {index} but its disk holds {a}..{b}"
            )));
        }
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        let compacted = core.compact(index, data.clone());
        let snapshot = core.snapshot().clone();
        if let Err(e) = compacted {
            return Err(self.fail(format!("n{id}: compaction to {index} refused: {e}")));
        }
        node.disk.compact(index, data);
        if *node.disk.snapshot() != snapshot {
            return Err(self.fail(format!(
                "n{id}: the disk's snapshot at {index} differs from the core's"
            )));
        }
        self.stats.compactions += 1;
        let id = self.nodes[i].id;
        self.note(format!("n{id} compacts its log to {index}"));
        Ok(())
    }

    fn faults(&mut self) -> Result<(), Failure> {
        let n = self.nodes.len();
        if self.rng.chance(self.cfg.membership_per_mille) {
            self.change_membership()?;
        }
        if self.rng.chance(self.cfg.compact_per_mille) {
            self.compact()?;
        }
        if self.rng.chance(self.cfg.release_per_mille) {
            let i = self.rng.below(n as u64) as usize;
            let back = self.rng.below(20);
            if let Some(core) = self.nodes[i].core.as_mut() {
                let upto = core.commit_index().saturating_sub(back);
                core.release(upto);
            }
        }
        if self.rng.chance(self.cfg.transfer_per_mille) {
            let to = 1 + self.rng.below(n as u64);
            if let Some(i) = self
                .nodes
                .iter()
                .position(|x| x.core.as_ref().is_some_and(|c| c.role() == Role::Leader))
            {
                if let Some(core) = self.nodes[i].core.as_mut() {
                    let actions = core.transfer_leadership(to);
                    let from = self.nodes[i].id;
                    self.note(format!("n{from} hands leadership to n{to}"));
                    self.queue(i, actions)?;
                    self.pump(i)?;
                }
            }
        }
        if self.rng.chance(self.cfg.crash_per_mille) {
            let i = self.rng.below(n as u64) as usize;
            if self.nodes[i].core.is_some() {
                self.crash(i);
            }
        }
        for i in 0..n {
            if self.nodes[i].core.is_none() && self.rng.chance(self.cfg.restart_per_mille) {
                self.restart(i);
            }
        }
        if self.sides.is_none() && self.rng.chance(self.cfg.partition_per_mille) {
            let sides: Vec<bool> = (0..n).map(|_| self.rng.chance(500)).collect();
            self.stats.faults += 1;
            self.note(format!("partition {sides:?}"));
            self.sides = Some(sides);
        } else if self.sides.is_some() && self.rng.chance(self.cfg.heal_per_mille) {
            self.note("partition healed".into());
            self.sides = None;
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        self.stats.faults += 1;
        let torn = self.rng.chance(500);
        let keep = self.rng.next_u64();
        self.reads.retain(|r| r.1 != i);
        let node = &mut self.nodes[i];
        node.core = None;
        node.actions.clear();
        // The first write not yet durable may be torn: part of it reached the disk.
        if torn {
            if let Some((
                _,
                Write::Log {
                    first_index,
                    entries,
                    ..
                },
            )) = node.disk_queue.front()
            {
                let k = (keep % (entries.len() as u64 + 1)) as usize;
                if k > 0 && *first_index > node.disk.snapshot().index {
                    node.disk.truncate_after(*first_index - 1);
                    node.disk.extend(entries[..k].iter().cloned());
                }
            }
        }
        node.disk_queue.clear();
        let id = node.id;
        self.note(format!("crash n{id} (torn write: {torn})"));
    }

    fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let config = node_config(node.id, &self.voters, self.seed, self.cfg.broken);
        let log = if self.cfg.restore_without_entries {
            let d = &node.disk;
            RaftLog::restore(
                d.snapshot().clone(),
                d.epochs().to_vec(),
                d.memberships().to_vec(),
                d.last_index(),
            )
        } else {
            node.disk.clone()
        };
        node.core = Some(RaftNode::from_log(config, node.disk_hard, log));
        node.checked = 0;
        let (id, term, len) = (node.id, node.disk_hard.term, node.disk.last_index());
        self.note(format!(
            "restart n{id} (term {term}, {len} entries on disk)"
        ));
    }

    /// A client proposes one to three entries (one batch) to a random node.
    fn propose(&mut self) -> Result<(), Failure> {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let count = 1 + self.rng.below(3);
        let max_span = self.cfg.max_span;
        let batch: Vec<(u64, Vec<u8>)> = (0..count)
            .map(|k| {
                let span = 1 + self.rng.below(max_span);
                (span, (self.next_proposal + k).to_be_bytes().to_vec())
            })
            .collect();
        let Some(core) = self.nodes[i].core.as_mut() else {
            return Ok(());
        };
        let term = core.term();
        if let Ok((indexes, actions)) = core.propose_spans(batch.clone()) {
            self.next_proposal += count;
            self.stats.proposals += count;
            let mut end = indexes.start() - 1;
            for (span, data) in batch {
                end += span;
                self.proposals.push((end, term, data));
            }
            self.queue(i, actions)?;
            self.pump(i)?;
        }
        Ok(())
    }

    /// A client asks a node that believes it leads for a linearizable read.
    fn read(&mut self) -> Result<(), Failure> {
        let Some(i) = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .nth(self.read_rng.below(2) as usize)
            .or_else(|| self.leader_index())
        else {
            return Ok(());
        };
        let id = self.next_read;
        let Some(core) = self.nodes[i].core.as_mut() else {
            return Ok(());
        };
        if let Ok(actions) = core.read_index(id) {
            self.next_read += 1;
            self.stats.reads += 1;
            self.asked_reads
                .insert(id, (self.nodes[i].id, self.commit_seen));
            self.queue(i, actions)?;
            self.pump(i)?;
        }
        Ok(())
    }

    /// A read was confirmed at `index`: it must see every entry committed before it was
    /// asked (a deposed leader answering from its old state would not).
    fn check_read(&mut self, i: usize, id: u64, index: u64) -> Result<(), Failure> {
        let node = self.nodes[i].id;
        let Some((asked_of, seen)) = self.asked_reads.remove(&id) else {
            return Err(self.fail(format!("n{node} confirmed read {id}, never asked")));
        };
        if asked_of != node {
            return Err(self.fail(format!("n{node} confirmed read {id}, asked of n{asked_of}")));
        }
        self.stats.reads_confirmed += 1;
        if index < seen {
            return Err(self.fail(format!(
                "linearizable read: n{node} confirmed read {id} at index {index}, but {seen} was committed before it was asked"
            )));
        }
        Ok(())
    }

    /// Takes what a node's core asked for, checking a leader's commits as they are decided
    /// (against the voters it counted then).
    fn queue(&mut self, i: usize, actions: Vec<Action>) -> Result<(), Failure> {
        for a in &actions {
            match a {
                Action::Committed(c) => {
                    self.check_leader_commit(i, *c)?;
                    self.commit_seen = self.commit_seen.max(*c);
                }
                Action::ReadReady { id, index } => self.check_read(i, *id, *index)?,
                _ => {}
            }
        }
        self.nodes[i].actions.extend(actions);
        Ok(())
    }

    /// Completes due disk writes and carries out actions that no pending write holds back.
    fn pump(&mut self, i: usize) -> Result<(), Failure> {
        loop {
            let mut progressed = false;
            while self.nodes[i]
                .disk_queue
                .front()
                .is_some_and(|(at, _)| *at <= self.now)
            {
                let Some((_, w)) = self.nodes[i].disk_queue.pop_front() else {
                    break;
                };
                progressed = true;
                let node = &mut self.nodes[i];
                match w {
                    Write::Hard(h) => node.disk_hard = h,
                    Write::Log {
                        write,
                        first_index,
                        entries,
                    } => {
                        let disk_start = node.disk.snapshot().index;
                        if first_index <= disk_start || !node.disk.is_boundary(first_index - 1) {
                            let id = node.id;
                            return Err(self.fail(format!(
                                "n{id} writes at {first_index}, not after an entry of its disk (log start {disk_start})"
                            )));
                        }
                        node.disk.truncate_after(first_index - 1);
                        node.disk.extend(entries);
                        if let Some(core) = node.core.as_mut() {
                            let more = core.persisted(write);
                            self.queue(i, more)?;
                        }
                    }
                    Write::Snapshot { write, snapshot } => {
                        node.disk.reset(snapshot);
                        if let Some(core) = node.core.as_mut() {
                            let more = core.persisted(write);
                            self.queue(i, more)?;
                        }
                    }
                }
            }
            while let Some(action) = self.nodes[i].actions.front().cloned() {
                let waiting = !self.nodes[i].disk_queue.is_empty();
                match action {
                    Action::PersistHardState(h) => {
                        let at = self.now + self.rng.below(3);
                        self.nodes[i].disk_queue.push_back((at, Write::Hard(h)));
                    }
                    Action::PersistEntries {
                        write,
                        first_index,
                        entries,
                        ..
                    } => {
                        let at = self.now + self.rng.below(3);
                        self.nodes[i].disk_queue.push_back((
                            at,
                            Write::Log {
                                write,
                                first_index,
                                entries,
                            },
                        ));
                    }
                    Action::InstallSnapshot { write, snapshot } => {
                        self.check_snapshot(i, &snapshot)?;
                        self.nodes[i].checked = 0;
                        self.stats.snapshots_installed += 1;
                        let at = self.now + self.rng.below(3);
                        self.nodes[i]
                            .disk_queue
                            .push_back((at, Write::Snapshot { write, snapshot }));
                    }
                    Action::ReadEntries {
                        to,
                        from_index,
                        max_entries,
                        max_bytes,
                    } => {
                        let (prev, entries) =
                            read_disk(&self.nodes[i].disk, from_index, max_entries, max_bytes);
                        self.stats.entries_read_from_disk += entries.len() as u64;
                        let at = self.now + self.rng.below(3);
                        self.reads.push((at, i, to, from_index, prev, entries));
                    }
                    _ if waiting => break,
                    Action::Send { to, message } => {
                        let voted = matches!(message, Message::VoteResponse { granted: true, .. });
                        self.send(self.nodes[i].id, to, message);
                        if voted
                            && self.faults_on
                            && self.rng.chance(self.cfg.crash_after_vote_per_mille)
                        {
                            self.crash(i);
                            self.restart(i);
                            continue;
                        }
                    }
                    Action::Committed(c) => self.on_committed(i, c)?,
                    Action::RoleChanged { role, term } => self.on_role(i, role, term)?,
                    // Checked when returned (`queue`): a read needs nothing durable.
                    Action::ReadReady { .. } | Action::ReadDropped { .. } => {}
                }
                self.nodes[i].actions.pop_front();
                progressed = true;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.sides
            .as_ref()
            .is_some_and(|s| s[a as usize - 1] != s[b as usize - 1])
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        self.stats.messages += 1;
        if self.cut(from, to) {
            // Sometimes the sender's transport notices (a connection refused or reset).
            if self.rng.chance(500) {
                if let Some(core) = self.nodes[from as usize - 1].core.as_mut() {
                    core.send_failed(to);
                }
            }
            return;
        }
        if self.faults_on && self.rng.chance(self.cfg.drop_per_mille) {
            return;
        }
        let at = self.now + 1 + self.rng.below(4);
        if self.faults_on && self.rng.chance(self.cfg.duplicate_per_mille) {
            let later = at + self.rng.below(6);
            self.net.push((later, from, to, message.clone()));
        }
        self.net.push((at, from, to, message));
    }

    fn deliver(&mut self) -> Result<(), Failure> {
        let now = self.now;
        let mut due: Vec<(u64, NodeId, NodeId, Message)> = Vec::new();
        let mut k = 0;
        while k < self.net.len() {
            if self.net[k].0 <= now {
                due.push(self.net.swap_remove(k));
            } else {
                k += 1;
            }
        }
        // Reordering: due messages go in a random order.
        for j in (1..due.len()).rev() {
            let r = self.rng.below(j as u64 + 1) as usize;
            due.swap(j, r);
        }
        for (_, from, to, message) in due {
            if self.cut(from, to) {
                continue;
            }
            let i = to as usize - 1;
            let Some(core) = self.nodes[i].core.as_mut() else {
                continue;
            };
            let actions = core.step(from, message);
            self.queue(i, actions)?;
            self.pump(i)?;
        }
        Ok(())
    }
}

fn node_config(id: NodeId, ids: &[NodeId], seed: u64, broken: Option<Broken>) -> Config {
    Config {
        seed: seed.wrapping_mul(31).wrapping_add(id),
        broken,
        ..Config::new(id, ids.to_vec())
    }
}

/// What a disk read for [`Action::ReadEntries`] returns: the entries from the one covering
/// `from_index`, within the limits, and the index before them.
fn read_disk(
    disk: &RaftLog,
    from_index: u64,
    max_entries: u64,
    max_bytes: u64,
) -> (u64, Vec<Entry>) {
    let Some(k) = disk.position(from_index) else {
        return (from_index.saturating_sub(1), Vec::new());
    };
    let mut out = Vec::new();
    let mut bytes = 0;
    for e in &disk.entries()[k..] {
        if out.len() as u64 >= max_entries
            || (!out.is_empty() && bytes + e.size_bytes() > max_bytes)
        {
            break;
        }
        bytes += e.size_bytes();
        out.push(e.clone());
    }
    (disk.start_of(k) - 1, out)
}

/// A stand-in for a state machine's image: a digest (FNV-1a) of the committed entries up to
/// `index`.
fn digest(committed: &RaftLog, index: u64) -> Vec<u8> {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let upto = committed.ends().partition_point(|end| *end <= index);
    for e in &committed.entries()[..upto] {
        let data: &[u8] = match &e.payload {
            Payload::Data(d) => d,
            _ => &[],
        };
        for b in e.term.to_be_bytes().iter().chain(data) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    h.to_be_bytes().to_vec()
}

/// Runs seed `seed` with the faults it draws.
pub fn run_seed(seed: u64, broken: Option<Broken>) -> Result<Stats, Failure> {
    let mut rng = Rng::new(seed);
    let mut cfg = SimConfig::random(&mut rng);
    cfg.broken = broken;
    Sim::new(seed, cfg).run()
}
