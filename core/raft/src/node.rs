//! [`RaftNode`]: one member of one Raft group (sans-IO). See the crate docs for the contract.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::log::RaftLog;
use crate::read_index::{ReadRounds, MAX_PENDING_READS};
use crate::types::{
    Action, Broken, CompactError, Config, Entry, HardState, Membership, MembershipChange, Message,
    NodeId, Payload, ProposeError, Role, Snapshot, MAX_INDEX, MAX_TERM,
};

/// Where the leader is with one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    /// The next index to send.
    next: u64,
    /// Known to be durable there up to here.
    matched: u64,
    /// Appends sent and not acknowledged: (last index, entries, bytes), oldest first.
    in_flight: VecDeque<(u64, u64, u64)>,
    in_flight_entries: u64,
    in_flight_bytes: u64,
    /// The driver could not send to it: no appends but probes until it answers.
    paused: bool,
    /// Entries from this index are being read from storage for it.
    reading: Option<u64>,
}

impl Progress {
    fn new(next: u64) -> Self {
        Self {
            next,
            matched: 0,
            in_flight: VecDeque::new(),
            in_flight_entries: 0,
            in_flight_bytes: 0,
            paused: false,
            reading: None,
        }
    }

    fn acknowledged(&mut self, matched: u64) {
        while let Some(&(last, entries, bytes)) = self.in_flight.front() {
            if last > matched {
                break;
            }
            self.in_flight.pop_front();
            self.in_flight_entries -= entries;
            self.in_flight_bytes -= bytes;
        }
    }

    /// What was in flight will be sent again.
    fn rewind(&mut self, next: u64) {
        self.next = next;
        self.in_flight.clear();
        self.in_flight_entries = 0;
        self.in_flight_bytes = 0;
        self.reading = None;
    }
}

/// One node of a Raft group.
#[derive(Debug, Clone)]
pub struct RaftNode {
    config: Config,
    term: u64,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    /// The snapshot and the entries after it.
    log: RaftLog,
    /// The membership in force: the last membership entry of the log, else the snapshot's.
    membership: Membership,
    membership_index: u64,
    commit: u64,
    /// Durable here up to this index.
    persisted: u64,
    /// Log writes handed to the driver and not reported yet: (write id, last index).
    writes: VecDeque<(u64, u64)>,
    next_write: u64,
    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    /// Voters heard from since the last check-quorum.
    active: BTreeSet<NodeId>,
    /// On the leader: who answered in the previous check-quorum window.
    heard_before: BTreeSet<NodeId>,
    /// Leadership being handed to this node, and the ticks it has taken so far.
    transferring: Option<(NodeId, u32)>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    timeout: u32,
    rng: u64,
    /// On the leader: reads waiting for a quorum to confirm its leadership.
    reads: ReadRounds,
}

/// The last index covered by `entries` placed after `prev_index` (saturating: spans may come
/// from the network).
fn end_after(prev_index: u64, entries: &[Entry]) -> u64 {
    entries
        .iter()
        .fold(prev_index, |at, e| at.saturating_add(e.span.max(1)))
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RaftNode {
    /// A node starting from what its disk holds: term and vote, the snapshot its log starts
    /// after (`None`: the log starts at index 1 with `config.voters` as membership), and the
    /// entries after it.
    pub fn new(
        config: Config,
        hard: HardState,
        snapshot: Option<Snapshot>,
        log: Vec<Entry>,
    ) -> Self {
        let snapshot = snapshot.unwrap_or_else(|| Snapshot {
            membership: Membership::of_voters(&config.voters),
            ..Snapshot::default()
        });
        Self::from_log(config, hard, RaftLog::new(snapshot, log))
    }

    /// A node starting from a log restored from storage, possibly without its entries in
    /// memory ([`RaftLog::restore`]); its snapshot carries the membership before the log
    /// (the bootstrap voters for a new group).
    pub fn from_log(config: Config, hard: HardState, log: RaftLog) -> Self {
        let commit = log.snapshot().index;
        let persisted = log.last_index();
        let mut node = Self {
            rng: config.seed ^ 0x5EED,
            config,
            term: hard.term,
            voted_for: hard.voted_for,
            role: Role::Follower,
            leader: None,
            commit,
            membership: Membership::default(),
            membership_index: 0,
            log,
            persisted,
            writes: VecDeque::new(),
            next_write: 1,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            active: BTreeSet::new(),
            heard_before: BTreeSet::new(),
            transferring: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            timeout: 0,
            reads: ReadRounds::default(),
        };
        node.reload_membership(&mut Vec::new());
        node.reset_timeout();
        node
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }
    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> u64 {
        self.commit
    }
    /// Durable here up to this index.
    pub fn persisted_index(&self) -> u64 {
        self.persisted
    }
    /// The snapshot and the entries held after it.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    /// What precedes the log.
    pub fn snapshot(&self) -> &Snapshot {
        self.log.snapshot()
    }
    /// The first index after the snapshot.
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    /// The membership in force here (the last one in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// A leader that committed an entry of its own term: its commit index is the group's
    /// (a new leader's may lag until then).
    pub fn leads_with_current_commit(&self) -> bool {
        self.role == Role::Leader && self.term_at(self.commit) == Some(self.term)
    }
    /// The voter a leadership transfer under way goes to.
    pub fn transferring(&self) -> Option<NodeId> {
        self.transferring.map(|(to, _)| to)
    }

    /// The last membership change is not committed yet (the next is refused until it is).
    pub fn membership_change_pending(&self) -> bool {
        self.membership_index > self.commit
    }
    pub fn is_voter(&self) -> bool {
        self.membership.voters.contains(&self.config.id)
    }
    /// On the leader: up to where `node` is known to hold the log.
    pub fn matched(&self, node: NodeId) -> Option<u64> {
        if node == self.config.id {
            return Some(self.persisted);
        }
        self.progress.get(&node).map(|p| p.matched)
    }

    /// The entry ending at `index`, if the log holds it.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.ending_at(index)
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term_at(index)
    }

    fn last_term(&self) -> u64 {
        self.log.last_term()
    }

    fn quorum(&self) -> usize {
        self.membership.voters.len() / 2 + 1
    }

    /// Voters other than this node.
    fn voter_peers(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.membership
            .voters
            .iter()
            .copied()
            .filter(|v| *v != me)
            .collect()
    }

    /// Voters and learners other than this node: everyone the leader replicates to.
    fn peers(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.membership.members().filter(|v| *v != me).collect()
    }

    fn reset_timeout(&mut self) {
        let base = self.config.election_ticks.max(1);
        self.timeout = base + (splitmix(&mut self.rng) % u64::from(base)) as u32;
        self.election_elapsed = 0;
    }

    /// On the leader: the members it heard from within the last one or two election
    /// timeouts (itself included), the ones to count on for placement; empty elsewhere.
    pub fn reachable(&self) -> BTreeSet<NodeId> {
        if self.role != Role::Leader {
            return BTreeSet::new();
        }
        let mut r: BTreeSet<NodeId> = self.active.union(&self.heard_before).copied().collect();
        r.insert(self.config.id);
        r
    }

    /// Term and vote, as last asked to be persisted.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }

    fn send(out: &mut Vec<Action>, to: NodeId, message: Message) {
        out.push(Action::Send { to, message });
    }

    /// Takes the membership from the log (after an append, a truncation or a reset) and
    /// follows it: the leader replicates to the new members; a node that no longer votes
    /// stops campaigning.
    fn reload_membership(&mut self, out: &mut Vec<Action>) {
        let (index, membership) = self.log.membership_at(self.last_index());
        self.membership = membership;
        self.membership_index = index;
        if self.role == Role::Leader {
            let next = self.last_index() + 1;
            let peers = self.peers();
            self.progress.retain(|id, _| peers.contains(id));
            for p in peers {
                self.progress
                    .entry(p)
                    .or_insert_with(|| Progress::new(next));
            }
        } else if matches!(self.role, Role::PreCandidate | Role::Candidate) && !self.is_voter() {
            self.become_follower(out, self.term, None);
        }
    }

    /// Replaces the log from `first_index` on with `entries` and asks the driver to do so.
    fn write(&mut self, out: &mut Vec<Action>, first_index: u64, entries: Vec<Entry>) {
        let keep = first_index - 1;
        let touches_membership = keep < self.membership_index
            || entries
                .iter()
                .any(|e| matches!(e.payload, Payload::Membership(_)));
        self.log.truncate_after(keep);
        self.log.extend(entries.iter().cloned());
        // A write still pending no longer covers what was cut.
        self.persisted = self.persisted.min(keep);
        for w in self.writes.iter_mut() {
            w.1 = w.1.min(keep);
        }
        let write = self.next_write;
        self.next_write += 1;
        self.writes.push_back((write, self.last_index()));
        out.push(Action::PersistEntries {
            write,
            first_index,
            entries,
            sync: self.config.sync_writes,
        });
        if touches_membership {
            self.reload_membership(out);
        }
    }

    fn become_follower(&mut self, out: &mut Vec<Action>, term: u64, leader: Option<NodeId>) {
        let changed_term = term != self.term;
        if changed_term {
            self.term = term;
            self.voted_for = None;
            out.push(Action::PersistHardState(self.hard_state()));
        }
        // Also when only the known leader changes (a restarted follower hearing its term's
        // leader for the first time): the driver shows it in its refusals ("node N leads").
        if self.role != Role::Follower
            || changed_term
            || (leader.is_some() && self.leader != leader)
        {
            self.role = Role::Follower;
            out.push(Action::RoleChanged {
                role: Role::Follower,
                term: self.term,
            });
        }
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.transferring = None;
        for id in self.reads.abandon() {
            out.push(Action::ReadDropped { id });
        }
        self.reset_timeout();
    }

    /// Advances the clock by one tick.
    pub fn tick(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            if let Some((to, ticks)) = self.transferring {
                // A transfer that did not happen within an election timeout is abandoned.
                self.transferring =
                    (ticks + 1 < self.config.election_ticks).then_some((to, ticks + 1));
            }
            self.heartbeat_elapsed += 1;
            if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                self.heartbeat(&mut out);
            }
            if self.election_elapsed >= self.config.election_ticks {
                // Check quorum: a leader that has not heard from a majority steps down.
                self.election_elapsed = 0;
                let heard = self
                    .active
                    .iter()
                    .filter(|v| self.membership.voters.contains(v))
                    .count()
                    + usize::from(self.is_voter());
                self.heard_before = std::mem::take(&mut self.active);
                if heard < self.quorum() {
                    self.become_follower(&mut out, self.term, None);
                }
            }
        } else if self.election_elapsed >= self.timeout && self.is_voter() {
            self.pre_vote(&mut out);
        }
        out
    }

    /// A heartbeat to every member, carrying the latest read round.
    fn heartbeat(&mut self, out: &mut Vec<Action>) {
        for p in self.peers() {
            let matched = self.progress.get(&p).map_or(0, |pr| pr.matched);
            Self::send(
                out,
                p,
                Message::Heartbeat {
                    term: self.term,
                    commit: self.commit.min(matched),
                    round: self.reads.round(),
                },
            );
        }
    }

    /// Asks to read the state machine linearizably (ReadIndex, Raft thesis §6.4; see
    /// [`crate::read_index`]): once a quorum has confirmed this node still leads,
    /// [`Action::ReadReady`] gives the index the state machine must have applied before the
    /// read is served; [`Action::ReadDropped`] if leadership ends first. `id` names the read
    /// in those actions. Refused on a follower, and on a leader that has not committed an
    /// entry of its term yet (its commit index may be behind the group's).
    pub fn read_index(&mut self, id: u64) -> Result<Vec<Action>, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.leads_with_current_commit() {
            return Err(ProposeError::LeaderNotReady);
        }
        if self.reads.is_full() {
            return Err(ProposeError::TooManyReads {
                max: MAX_PENDING_READS,
            });
        }
        let mut out = Vec::new();
        if self.config.broken == Some(Broken::ReadWithoutQuorum) {
            out.push(Action::ReadReady {
                id,
                index: self.commit,
            });
            return Ok(out);
        }
        self.reads.open(id, self.commit);
        self.heartbeat(&mut out);
        self.confirm_reads(&mut out);
        Ok(out)
    }

    fn confirm_reads(&mut self, out: &mut Vec<Action>) {
        let quorum = self.quorum();
        for (id, index) in self
            .reads
            .confirmed(self.config.id, &self.membership.voters, quorum)
        {
            out.push(Action::ReadReady { id, index });
        }
    }

    fn pre_vote(&mut self, out: &mut Vec<Action>) {
        self.reset_timeout();
        if self.term >= MAX_TERM {
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = [self.config.id].into();
        out.push(Action::RoleChanged {
            role: Role::PreCandidate,
            term: self.term,
        });
        if self.votes.len() >= self.quorum() {
            return self.campaign(out);
        }
        for p in self.voter_peers() {
            Self::send(
                out,
                p,
                Message::PreVote {
                    term: self.term + 1,
                    last_index: self.last_index(),
                    last_term: self.last_term(),
                },
            );
        }
    }

    fn campaign(&mut self, out: &mut Vec<Action>) {
        self.campaign_with(out, false)
    }

    /// Starts an election now, as if the election timeout had passed (a voter that does not
    /// lead). Safe at any moment — it is an election like any other; a new group's preferred
    /// replica calls it so that the leader placement chose is elected first.
    pub fn campaign_now(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.role != Role::Leader && self.is_voter() {
            self.campaign(&mut out);
        }
        out
    }

    fn campaign_with(&mut self, out: &mut Vec<Action>, transfer: bool) {
        self.reset_timeout();
        if self.term >= MAX_TERM {
            // Two billion elections: never in practice; the group stops electing.
            return;
        }
        self.term += 1;
        self.voted_for = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes = [self.config.id].into();
        out.push(Action::PersistHardState(self.hard_state()));
        out.push(Action::RoleChanged {
            role: Role::Candidate,
            term: self.term,
        });
        if self.votes.len() >= self.quorum() {
            return self.become_leader(out);
        }
        for p in self.voter_peers() {
            Self::send(
                out,
                p,
                Message::Vote {
                    term: self.term,
                    last_index: self.last_index(),
                    last_term: self.last_term(),
                    transfer,
                },
            );
        }
    }

    fn become_leader(&mut self, out: &mut Vec<Action>) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.active.clear();
        self.heard_before.clear();
        let next = self.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|p| (p, Progress::new(next)))
            .collect();
        out.push(Action::RoleChanged {
            role: Role::Leader,
            term: self.term,
        });
        // An entry of its own term: earlier terms' entries commit with it.
        let entry = Entry {
            term: self.term,
            span: 1,
            payload: Payload::Empty,
        };
        self.write(out, next, vec![entry]);
        self.replicate(out);
        self.maybe_commit(out);
    }

    fn replicate(&mut self, out: &mut Vec<Action>) {
        for p in self.peers() {
            self.send_append(out, p, false);
        }
    }

    /// Sends `to` what it lacks from its next index, within the limits on entries and bytes
    /// in flight (pipelined: the next index moves past what was sent). With `probe`, an empty
    /// Append goes out when nothing else may. A follower behind the log start gets the
    /// snapshot instead.
    fn send_append(&mut self, out: &mut Vec<Action>, to: NodeId, probe: bool) {
        let last = self.last_index();
        let first = self.first_index();
        let (max_entries, max_bytes) = (
            self.config.max_entries_in_flight,
            self.config.max_bytes_in_flight,
        );
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        let next = pr.next.clamp(pr.matched + 1, last + 1);
        if next < first {
            pr.rewind(first);
            let snapshot = self.log.snapshot().clone();
            let message = Message::InstallSnapshot {
                term: self.term,
                snapshot,
            };
            return Self::send(out, to, message);
        }
        // Entries start at boundaries: a next index inside an entry goes back to its start.
        pr.next = self.log.boundary_at_or_before(next - 1) + 1;
        let in_flight = pr.in_flight_entries;
        let in_flight_bytes = pr.in_flight_bytes;
        let full = in_flight >= max_entries || in_flight_bytes >= max_bytes || pr.paused;
        if !probe && (full || pr.next > last) {
            return;
        }
        let prev_index = pr.next - 1;
        let room = (self.config.max_entries_per_append as u64)
            .min(max_entries - in_flight.min(max_entries));
        let byte_room = self
            .config
            .max_bytes_per_append
            .min(max_bytes - in_flight_bytes.min(max_bytes));
        let entries: Vec<Entry> = if full {
            Vec::new()
        } else {
            self.log
                .slice_from(pr.next, room as usize, byte_room)
                .to_vec()
        };
        if !full && entries.is_empty() && pr.next <= last && pr.next < self.log.tail_start() {
            // Released from memory: storage reads them back (once at a time per follower).
            if pr.reading.is_none() {
                pr.reading = Some(pr.next);
                out.push(Action::ReadEntries {
                    to,
                    from_index: pr.next,
                    max_entries: room,
                    max_bytes: byte_room,
                });
            }
            if !probe {
                return;
            }
        }
        let prev_term = self.term_at(prev_index).unwrap_or(0);
        let end = end_after(prev_index, &entries);
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        if let Some(p) = self.progress.get_mut(&to) {
            p.next = end + 1;
            if !entries.is_empty() {
                p.in_flight.push_back((end, entries.len() as u64, bytes));
                p.in_flight_entries += entries.len() as u64;
                p.in_flight_bytes += bytes;
            }
        }
        Self::send(
            out,
            to,
            Message::Append {
                term: self.term,
                prev_index,
                prev_term,
                entries,
                commit: self.commit,
            },
        );
    }

    fn maybe_commit(&mut self, out: &mut Vec<Action>) {
        if self.role != Role::Leader {
            return;
        }
        let candidate = if self.config.broken == Some(Broken::CommitWithoutQuorum) {
            self.persisted
        } else {
            let mut matched: Vec<u64> = self
                .membership
                .voters
                .iter()
                .map(|v| self.matched(*v).unwrap_or(0))
                .collect();
            matched.sort_unstable_by(|a, b| b.cmp(a));
            let Some(c) = matched.get(self.quorum() - 1) else {
                return;
            };
            *c
        };
        // Only an entry of the leader's own term commits by counting (Raft §5.4.2).
        if candidate > self.commit && self.term_at(candidate) == Some(self.term) {
            self.commit = candidate;
            out.push(Action::Committed(candidate));
        }
    }

    /// Hands leadership to `to` (a voter): proposals are refused meanwhile; once `to` holds
    /// the whole log it is told to campaign at once. Abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Vec<Action> {
        let mut out = Vec::new();
        if self.role != Role::Leader
            || to == self.config.id
            || !self.membership.voters.contains(&to)
        {
            return out;
        }
        self.transferring = Some((to, 0));
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.matched == self.last_index());
        if caught_up {
            Self::send(&mut out, to, Message::TimeoutNow { term: self.term });
        } else {
            self.send_append(&mut out, to, true);
        }
        out
    }

    fn check_leader(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some((to, _)) = self.transferring {
            return Err(ProposeError::Transferring { to });
        }
        Ok(())
    }

    fn append_own(&mut self, out: &mut Vec<Action>, payloads: Vec<(u64, Payload)>) -> (u64, u64) {
        let first = self.last_index() + 1;
        let entries: Vec<Entry> = payloads
            .into_iter()
            .map(|(span, payload)| Entry {
                term: self.term,
                span,
                payload,
            })
            .collect();
        self.write(out, first, entries);
        let last = self.last_index();
        self.replicate(out);
        (first, last)
    }

    /// Appends `data` as a new entry if this node leads: its index, or why not.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, Vec<Action>), ProposeError> {
        let (range, out) = self.propose_batch(vec![data])?;
        Ok((*range.start(), out))
    }

    /// Appends each of `batch` as an entry of span 1, in one write and one round of
    /// appends: their indexes, or why none was taken (all or nothing).
    pub fn propose_batch(
        &mut self,
        batch: Vec<Vec<u8>>,
    ) -> Result<(std::ops::RangeInclusive<u64>, Vec<Action>), ProposeError> {
        self.propose_spans(batch.into_iter().map(|d| (1, d)).collect())
    }

    /// Appends each `(span, data)` as an entry covering `span` indexes (a RecordBatch of
    /// `span` records), in one write: the indexes they cover, or why none was taken.
    pub fn propose_spans(
        &mut self,
        batch: Vec<(u64, Vec<u8>)>,
    ) -> Result<(std::ops::RangeInclusive<u64>, Vec<Action>), ProposeError> {
        self.check_leader()?;
        let max_bytes = self.config.max_bytes_per_append;
        if let Some(bytes) = batch
            .iter()
            .map(|(_, d)| d.len() as u64 + crate::types::ENTRY_OVERHEAD_BYTES)
            .find(|b| *b > max_bytes)
        {
            return Err(ProposeError::TooLarge { bytes, max_bytes });
        }
        if batch.is_empty() {
            return Err(ProposeError::Empty);
        }
        if batch.iter().any(|(span, _)| *span == 0) {
            return Err(ProposeError::ZeroSpan);
        }
        let end = batch
            .iter()
            .fold(self.last_index(), |at, (span, _)| at.saturating_add(*span));
        if end > MAX_INDEX {
            return Err(ProposeError::IndexesExhausted);
        }
        let mut out = Vec::new();
        let (first, last) = self.append_own(
            &mut out,
            batch
                .into_iter()
                .map(|(span, d)| (span, Payload::Data(d)))
                .collect(),
        );
        Ok((first..=last, out))
    }

    /// Storage read the entries asked for by [`Action::ReadEntries`] for `to` (from
    /// `from_index`): `entries` follow `prev_index` (the end of the entry before them); empty
    /// when the read failed or found nothing.
    pub fn entries_read(
        &mut self,
        to: NodeId,
        from_index: u64,
        prev_index: u64,
        entries: Vec<Entry>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.role != Role::Leader {
            return out;
        }
        let Some(pr) = self.progress.get_mut(&to) else {
            return out;
        };
        if pr.reading != Some(from_index) {
            return out;
        }
        pr.reading = None;
        let end = end_after(prev_index, &entries);
        // What storage returns must be this log: the terms agree, it starts at or before the
        // index asked for, after the log start, and ends within the log.
        let consistent = !entries.is_empty()
            && prev_index < from_index
            && prev_index >= self.log.snapshot().index
            && end <= self.log.last_index()
            && self.term_at(prev_index).is_some()
            && {
                let mut at = prev_index;
                entries.iter().all(|e| {
                    at = at.saturating_add(e.span.max(1));
                    self.term_at(at) == Some(e.term)
                })
            };
        if !consistent {
            return out;
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let prev_term = self.term_at(prev_index).unwrap_or(0);
        if let Some(p) = self.progress.get_mut(&to) {
            p.next = p.next.max(end + 1);
            p.in_flight.push_back((end, entries.len() as u64, bytes));
            p.in_flight_entries += entries.len() as u64;
            p.in_flight_bytes += bytes;
        }
        Self::send(
            &mut out,
            to,
            Message::Append {
                term: self.term,
                prev_index,
                prev_term,
                entries,
                commit: self.commit,
            },
        );
        out
    }

    /// Lets the entries up to `index` leave memory (at most what is committed and durable
    /// here): storage holds them, and [`Action::ReadEntries`] brings them back when a
    /// follower needs them.
    pub fn release(&mut self, index: u64) {
        let upto = index.min(self.commit).min(self.persisted);
        self.log.release(upto);
    }

    /// The driver could not send to `to` (no connection): what was in flight is sent again,
    /// and only probes go until it answers.
    pub fn send_failed(&mut self, to: NodeId) {
        if let Some(p) = self.progress.get_mut(&to) {
            let next = p.matched + 1;
            p.rewind(next);
            p.paused = true;
        }
    }

    /// Proposes one membership change (in force once appended; the next is accepted once
    /// this one commits): its index, or why not.
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<(u64, Vec<Action>), ProposeError> {
        self.check_leader()?;
        if self.membership_index > self.commit {
            return Err(ProposeError::ChangeInProgress {
                index: self.membership_index,
            });
        }
        // Ongaro's fix for single-server changes: a leader first commits in its own term.
        if self.term_at(self.commit) != Some(self.term) {
            return Err(ProposeError::LeaderNotReady);
        }
        let mut next = self.membership.clone();
        match change {
            MembershipChange::AddLearner(n) => {
                if next.contains(n) {
                    return Err(ProposeError::AlreadyMember(n));
                }
                next.learners.insert(n);
            }
            MembershipChange::Promote(n) => {
                if !next.learners.contains(&n) {
                    return Err(ProposeError::NotALearner(n));
                }
                let matched = self.matched(n).unwrap_or(0);
                if matched < self.commit {
                    return Err(ProposeError::NotCaughtUp {
                        node: n,
                        matched,
                        commit: self.commit,
                    });
                }
                next.learners.remove(&n);
                next.voters.insert(n);
            }
            MembershipChange::Remove(n) => {
                if n == self.config.id {
                    return Err(ProposeError::RemovingLeader);
                }
                if !next.voters.remove(&n) && !next.learners.remove(&n) {
                    return Err(ProposeError::NotAMember(n));
                }
            }
        }
        let mut out = Vec::new();
        let (index, _) = self.append_own(&mut out, vec![(1, Payload::Membership(next))]);
        Ok((index, out))
    }

    /// The driver dropped (or will drop) the entries up to `index` from its log: retention
    /// deleted them, or `data` (the state machine at `index`) replaces them. Only what is
    /// committed and durable here may go. A follower that needs them later gets the snapshot.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), CompactError> {
        let start = self.log.snapshot().index;
        if index <= start {
            return Err(CompactError::AlreadyCompacted { index, start });
        }
        let limit = self.commit.min(self.persisted);
        if index > limit {
            return Err(CompactError::NotDurablyCommitted { index, limit });
        }
        if !self.log.is_boundary(index) {
            return Err(CompactError::NotABoundary { index });
        }
        self.log.compact(index, data);
        Ok(())
    }

    /// The driver made log write `write` durable.
    pub fn persisted(&mut self, write: u64) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(&(id, last)) = self.writes.front() {
            if id > write {
                break;
            }
            self.writes.pop_front();
            self.persisted = self.persisted.max(last).min(self.last_index());
        }
        self.maybe_commit(&mut out);
        out
    }

    /// Handles a message from `from`. Any node may send: a new replica learns it belongs
    /// from the leader's log, and only voters' answers are counted.
    pub fn step(&mut self, from: NodeId, message: Message) -> Vec<Action> {
        let mut out = Vec::new();
        if from == self.config.id || message.term() > MAX_TERM {
            return out;
        }
        let term = message.term();
        // Pre-votes never move terms.
        if let Message::PreVote {
            term,
            last_index,
            last_term,
        } = message
        {
            let heard_leader =
                self.leader.is_some() && self.election_elapsed < self.config.election_ticks;
            let granted =
                term > self.term && !heard_leader && self.up_to_date(last_index, last_term);
            // A refusal carries this node's term: a pre-candidate behind it catches up (else
            // nodes a term behind, with the better logs, could never be elected).
            let term = if granted { term } else { self.term };
            Self::send(&mut out, from, Message::PreVoteResponse { term, granted });
            return out;
        }
        if let Message::PreVoteResponse { term, granted } = message {
            if !granted && term > self.term {
                self.become_follower(&mut out, term, None);
                return out;
            }
            if self.role == Role::PreCandidate
                && term == self.term + 1
                && granted
                && self.membership.voters.contains(&from)
            {
                self.votes.insert(from);
                if self.votes.len() >= self.quorum() {
                    self.campaign(&mut out);
                }
            }
            return out;
        }
        if term > self.term {
            if matches!(
                message,
                Message::Vote {
                    transfer: false,
                    ..
                }
            ) && self.leader.is_some()
                && self.election_elapsed < self.config.election_ticks
            {
                // Leader stickiness: a live leader was heard from; ignore the disruption.
                return out;
            }
            let from_leader = matches!(
                message,
                Message::Append { .. }
                    | Message::Heartbeat { .. }
                    | Message::InstallSnapshot { .. }
            );
            self.become_follower(&mut out, term, from_leader.then_some(from));
        }
        if term < self.term {
            match message {
                Message::Append { .. }
                | Message::Heartbeat { .. }
                | Message::InstallSnapshot { .. } => Self::send(
                    &mut out,
                    from,
                    Message::AppendResponse {
                        term: self.term,
                        success: false,
                        index: 0,
                    },
                ),
                Message::Vote { .. } => Self::send(
                    &mut out,
                    from,
                    Message::VoteResponse {
                        term: self.term,
                        granted: false,
                    },
                ),
                _ => {}
            }
            return out;
        }
        match message {
            Message::Vote {
                last_index,
                last_term,
                ..
            } => {
                let granted = self.voted_for.is_none_or(|v| v == from)
                    && self.up_to_date(last_index, last_term);
                if granted {
                    self.voted_for = Some(from);
                    self.election_elapsed = 0;
                    if self.config.broken != Some(Broken::VoteNotPersisted) {
                        out.push(Action::PersistHardState(self.hard_state()));
                    }
                }
                Self::send(
                    &mut out,
                    from,
                    Message::VoteResponse {
                        term: self.term,
                        granted,
                    },
                );
            }
            Message::VoteResponse { granted, .. } => {
                if self.role == Role::Candidate && granted && self.membership.voters.contains(&from)
                {
                    self.votes.insert(from);
                    if self.votes.len() >= self.quorum() {
                        self.become_leader(&mut out);
                    }
                }
            }
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                ..
            } => self.on_append(&mut out, from, prev_index, prev_term, entries, commit),
            Message::AppendResponse { success, index, .. } => {
                self.on_append_response(&mut out, from, success, index)
            }
            Message::Heartbeat { commit, round, .. } => {
                self.on_heartbeat(&mut out, from, commit, round)
            }
            Message::HeartbeatResponse {
                last_index, round, ..
            } => self.on_heartbeat_response(&mut out, from, last_index, round),
            Message::InstallSnapshot { snapshot, .. } => {
                self.on_install_snapshot(&mut out, from, snapshot)
            }
            Message::TimeoutNow { .. } => {
                if self.leader == Some(from) && self.role == Role::Follower && self.is_voter() {
                    self.campaign_with(&mut out, true);
                }
            }
            Message::PreVote { .. } | Message::PreVoteResponse { .. } => {}
        }
        out
    }

    fn up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Follows `from`, the leader of this term.
    fn heard_from_leader(&mut self, out: &mut Vec<Action>, from: NodeId) {
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(out, self.term, Some(from));
        }
        self.election_elapsed = 0;
    }

    fn advance_commit(&mut self, out: &mut Vec<Action>, commit: u64) {
        if commit > self.commit {
            self.commit = commit;
            out.push(Action::Committed(commit));
        }
    }

    fn on_append(
        &mut self,
        out: &mut Vec<Action>,
        from: NodeId,
        mut prev_index: u64,
        mut prev_term: u64,
        mut entries: Vec<Entry>,
        commit: u64,
    ) {
        // Saturating: spans come from the network; past the last index, it is malformed.
        let matched = end_after(prev_index, &entries);
        if matched > MAX_INDEX {
            return;
        }
        self.heard_from_leader(out, from);
        let start = self.log.snapshot().index;
        if prev_index < start {
            // What precedes our log start is committed, so it matches: skip it.
            let mut at = prev_index;
            let mut k = 0;
            while k < entries.len() && at.saturating_add(entries[k].span.max(1)) <= start {
                at = at.saturating_add(entries[k].span.max(1));
                k += 1;
            }
            if k < entries.len() && at != start {
                // An entry straddles our log start: not the log we committed. Ignore it.
                return;
            }
            entries.drain(..k);
            if entries.is_empty() {
                return Self::send(
                    out,
                    from,
                    Message::AppendResponse {
                        term: self.term,
                        success: true,
                        index: at,
                    },
                );
            }
            prev_index = start;
            prev_term = self.log.snapshot().term;
        }
        let matches =
            self.log.is_boundary(prev_index) && self.term_at(prev_index) == Some(prev_term);
        if !matches {
            // The conflict hint: past our end, or the start of the conflicting term's run.
            let hint = if prev_index > self.last_index() {
                self.last_index() + 1
            } else {
                self.log.run_start(prev_index, self.commit).max(1)
            };
            Self::send(
                out,
                from,
                Message::AppendResponse {
                    term: self.term,
                    success: false,
                    index: hint,
                },
            );
            return;
        }
        // Skip what matches; cut at the first conflict; write the rest.
        let mut at = prev_index;
        let mut first_new = None;
        for (k, e) in entries.iter().enumerate() {
            let end = at.saturating_add(e.span.max(1));
            if !(self.log.is_boundary(end) && self.term_at(end) == Some(e.term)) {
                first_new = Some((k, at.saturating_add(1)));
                break;
            }
            at = end;
        }
        if let Some((k, first_index)) = first_new {
            if first_index <= self.commit {
                // A leader never asks to replace committed entries; refuse rather than lose.
                return;
            }
            entries.drain(..k);
            self.write(out, first_index, entries);
        }
        self.advance_commit(out, commit.min(matched));
        Self::send(
            out,
            from,
            Message::AppendResponse {
                term: self.term,
                success: true,
                index: matched,
            },
        );
    }

    fn on_heartbeat(&mut self, out: &mut Vec<Action>, from: NodeId, commit: u64, round: u64) {
        self.heard_from_leader(out, from);
        // The leader capped `commit` at what we are known to hold from it.
        self.advance_commit(out, commit.min(self.last_index()));
        Self::send(
            out,
            from,
            Message::HeartbeatResponse {
                term: self.term,
                last_index: self.last_index(),
                round,
            },
        );
    }

    fn on_install_snapshot(&mut self, out: &mut Vec<Action>, from: NodeId, snapshot: Snapshot) {
        if snapshot.index > MAX_INDEX || snapshot.term > MAX_TERM {
            return;
        }
        self.heard_from_leader(out, from);
        let index = snapshot.index;
        if index <= self.commit
            || (self.log.is_boundary(index) && self.term_at(index) == Some(snapshot.term))
        {
            // Already held (log matching): nothing to replace.
            self.advance_commit(out, index);
        } else {
            self.log.reset(snapshot.clone());
            // Nothing of the old log counts as durable any more.
            self.persisted = 0;
            for w in self.writes.iter_mut() {
                w.1 = 0;
            }
            let write = self.next_write;
            self.next_write += 1;
            self.writes.push_back((write, index));
            out.push(Action::InstallSnapshot { write, snapshot });
            self.reload_membership(out);
            self.advance_commit(out, index);
        }
        Self::send(
            out,
            from,
            Message::AppendResponse {
                term: self.term,
                success: true,
                index,
            },
        );
    }

    /// A follower answered the leader: it is heard from and reachable. Its progress (the
    /// log's last index, its matched and next), if this node leads and tracks it.
    fn answered(&mut self, from: NodeId) -> Option<(u64, u64, u64)> {
        if self.role != Role::Leader {
            return None;
        }
        self.active.insert(from);
        let last = self.last_index();
        let p = self.progress.get_mut(&from)?;
        p.paused = false;
        Some((last, p.matched, p.next))
    }

    /// Sends to `from` again from `next` (what was in flight is resent).
    fn resend_from(&mut self, out: &mut Vec<Action>, from: NodeId, next: u64, probe: bool) {
        let next = self.log.boundary_at_or_before(next - 1) + 1;
        if let Some(p) = self.progress.get_mut(&from) {
            p.rewind(next);
        }
        self.send_append(out, from, probe);
    }

    fn on_append_response(
        &mut self,
        out: &mut Vec<Action>,
        from: NodeId,
        success: bool,
        index: u64,
    ) {
        let Some((last, matched, _)) = self.answered(from) else {
            return;
        };
        if !success {
            // Back off to the hint (never below what is known to match, never past the end:
            // the hint comes from the network), at an entry's start.
            return self.resend_from(out, from, index.clamp(matched + 1, last + 1), true);
        }
        let acked = self.log.boundary_at_or_before(index.min(last));
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.matched = p.matched.max(acked);
        p.next = p.next.max(p.matched + 1);
        let matched = p.matched;
        p.acknowledged(matched);
        self.maybe_commit(out);
        self.send_append(out, from, false);
        if matched == last && self.transferring.is_some_and(|(to, _)| to == from) {
            Self::send(out, from, Message::TimeoutNow { term: self.term });
        }
    }

    fn on_heartbeat_response(
        &mut self,
        out: &mut Vec<Action>,
        from: NodeId,
        last_index: u64,
        round: u64,
    ) {
        let Some((last, matched, next)) = self.answered(from) else {
            return;
        };
        if self.membership.voters.contains(&from) {
            self.reads.echoed(from, round);
            self.confirm_reads(out);
        }
        if matched >= last {
            return;
        }
        if last_index.saturating_add(1) < next {
            // Appends were lost: resend from the follower's end.
            self.resend_from(
                out,
                from,
                last_index.saturating_add(1).max(matched + 1),
                false,
            );
        } else {
            // It may hold everything and its answers were lost: an empty probe finds out.
            self.send_append(out, from, true);
        }
    }
}
