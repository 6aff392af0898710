//! [`RaftNode`]: one member of one Raft group (sans-IO). See the crate docs for the contract.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::types::{Action, Broken, Config, Entry, HardState, Message, NodeId, Role};

/// Where the leader is with one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The next index to send.
    next: u64,
    /// Known to be durable there up to here.
    matched: u64,
}

/// One node of a Raft group.
#[derive(Debug, Clone)]
pub struct RaftNode {
    config: Config,
    term: u64,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    /// Index 1 is `log[0]`.
    log: Vec<Entry>,
    commit: u64,
    /// Durable here up to this index.
    persisted: u64,
    /// Log writes handed to the driver and not reported yet: (write id, last index).
    writes: VecDeque<(u64, u64)>,
    next_write: u64,
    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    /// Followers heard from since the last check-quorum.
    active: BTreeSet<NodeId>,
    /// Leadership being handed to this node, and the ticks it has taken so far.
    transferring: Option<(NodeId, u32)>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    timeout: u32,
    rng: u64,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RaftNode {
    /// A node starting from what its disk holds (empty for a new group).
    pub fn new(config: Config, hard: HardState, log: Vec<Entry>) -> Self {
        let persisted = log.len() as u64;
        let mut node = Self {
            rng: config.seed ^ 0x5EED,
            config,
            term: hard.term,
            voted_for: hard.voted_for,
            role: Role::Follower,
            leader: None,
            log,
            commit: 0,
            persisted,
            writes: VecDeque::new(),
            next_write: 1,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            active: BTreeSet::new(),
            transferring: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            timeout: 0,
        };
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
    pub fn log(&self) -> &[Entry] {
        &self.log
    }
    pub fn last_index(&self) -> u64 {
        self.log.len() as u64
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.log.get(index as usize - 1).map(|e| e.term)
    }

    fn last_term(&self) -> u64 {
        self.log.last().map_or(0, |e| e.term)
    }

    fn quorum(&self) -> usize {
        self.config.voters.len() / 2 + 1
    }

    fn peers(&self) -> Vec<NodeId> {
        self.config
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.config.id)
            .collect()
    }

    fn reset_timeout(&mut self) {
        let base = self.config.election_ticks.max(1);
        self.timeout = base + (splitmix(&mut self.rng) % u64::from(base)) as u32;
        self.election_elapsed = 0;
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }

    fn send(out: &mut Vec<Action>, to: NodeId, message: Message) {
        out.push(Action::Send { to, message });
    }

    /// Replaces the log from `first_index` on with `entries` and asks the driver to do so.
    fn write(&mut self, out: &mut Vec<Action>, first_index: u64, entries: Vec<Entry>) {
        self.log.truncate(first_index as usize - 1);
        self.log.extend(entries.iter().cloned());
        // A write still pending no longer covers what was cut.
        let keep = first_index - 1;
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
        });
    }

    fn become_follower(&mut self, out: &mut Vec<Action>, term: u64, leader: Option<NodeId>) {
        let changed_term = term != self.term;
        if changed_term {
            self.term = term;
            self.voted_for = None;
            out.push(Action::PersistHardState(self.hard_state()));
        }
        if self.role != Role::Follower || changed_term {
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
                for p in self.peers() {
                    self.send_append(&mut out, p, true);
                }
            }
            if self.election_elapsed >= self.config.election_ticks {
                // Check quorum: a leader that has not heard from a majority steps down.
                self.election_elapsed = 0;
                let heard = self.active.len() + 1;
                self.active.clear();
                if heard < self.quorum() {
                    self.become_follower(&mut out, self.term, None);
                }
            }
        } else if self.election_elapsed >= self.timeout {
            self.pre_vote(&mut out);
        }
        out
    }

    fn pre_vote(&mut self, out: &mut Vec<Action>) {
        self.reset_timeout();
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
        for p in self.peers() {
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

    fn campaign_with(&mut self, out: &mut Vec<Action>, transfer: bool) {
        self.reset_timeout();
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
        for p in self.peers() {
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
        let next = self.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|p| (p, Progress { next, matched: 0 }))
            .collect();
        out.push(Action::RoleChanged {
            role: Role::Leader,
            term: self.term,
        });
        // An entry of its own term: earlier terms' entries commit with it.
        let entry = Entry {
            term: self.term,
            data: Vec::new(),
        };
        self.write(out, next, vec![entry]);
        for p in self.peers() {
            self.send_append(out, p, false);
        }
        self.maybe_commit(out);
    }

    /// Sends `to` what it lacks from its next index (a heartbeat when it lacks nothing and
    /// `heartbeat` is set). Pipelined: the next index moves past what was sent.
    fn send_append(&mut self, out: &mut Vec<Action>, to: NodeId, heartbeat: bool) {
        let last = self.last_index();
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        pr.next = pr.next.clamp(1, last + 1);
        let pr = *pr;
        if pr.next > last && !heartbeat {
            return;
        }
        if pr.next.saturating_sub(pr.matched + 1) >= self.config.max_entries_in_flight && !heartbeat
        {
            return;
        }
        let in_flight = pr.next.saturating_sub(pr.matched + 1);
        let prev_index = pr.next - 1;
        let prev_term = self.term_at(prev_index).unwrap_or(0);
        let room = if in_flight >= self.config.max_entries_in_flight {
            0
        } else {
            (self.config.max_entries_per_append as u64)
                .min(self.config.max_entries_in_flight - in_flight)
        };
        let end = last.min(prev_index + room);
        let entries = self.log[prev_index as usize..end as usize].to_vec();
        if let Some(p) = self.progress.get_mut(&to) {
            p.next = end + 1;
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
            let mut matched: Vec<u64> = self.progress.values().map(|p| p.matched).collect();
            matched.push(self.persisted);
            matched.sort_unstable_by(|a, b| b.cmp(a));
            matched[self.quorum() - 1]
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
        if self.role != Role::Leader || to == self.config.id || !self.config.voters.contains(&to) {
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

    /// Appends `data` as a new entry if this node leads; its index, or `None` (ask the
    /// leader, [`Self::leader`]).
    pub fn propose(&mut self, data: Vec<u8>) -> (Option<u64>, Vec<Action>) {
        let mut out = Vec::new();
        if self.role != Role::Leader || self.transferring.is_some() {
            return (None, out);
        }
        let index = self.last_index() + 1;
        self.write(
            &mut out,
            index,
            vec![Entry {
                term: self.term,
                data,
            }],
        );
        for p in self.peers() {
            self.send_append(&mut out, p, false);
        }
        (Some(index), out)
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

    /// Handles a message from `from`.
    pub fn step(&mut self, from: NodeId, message: Message) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.config.voters.contains(&from) || from == self.config.id {
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
            if self.role == Role::PreCandidate && term == self.term + 1 && granted {
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
            let leader = matches!(message, Message::Append { .. }).then_some(from);
            self.become_follower(&mut out, term, leader);
        }
        if term < self.term {
            match message {
                Message::Append { .. } => Self::send(
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
                if self.role == Role::Candidate && granted {
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
            Message::TimeoutNow { .. } => {
                if self.leader == Some(from) && self.role == Role::Follower {
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

    fn on_append(
        &mut self,
        out: &mut Vec<Action>,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    ) {
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(out, self.term, Some(from));
        }
        self.election_elapsed = 0;
        match self.term_at(prev_index) {
            Some(t) if t == prev_term => {}
            found => {
                // The conflict hint: past our end, or the first index of the conflicting term.
                let hint = match found {
                    None => self.last_index() + 1,
                    Some(t) => {
                        let mut i = prev_index;
                        while i > 1 && self.term_at(i - 1) == Some(t) && i - 1 > self.commit {
                            i -= 1;
                        }
                        i.max(1)
                    }
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
        }
        // Skip what matches; cut at the first conflict; write the rest.
        let mut first_new = None;
        for (k, e) in entries.iter().enumerate() {
            let index = prev_index + 1 + k as u64;
            if self.term_at(index) != Some(e.term) {
                first_new = Some(k);
                break;
            }
        }
        let matched = prev_index + entries.len() as u64;
        if let Some(k) = first_new {
            let first_index = prev_index + 1 + k as u64;
            if first_index <= self.commit {
                // A leader never asks to replace committed entries; refuse rather than lose.
                return;
            }
            self.write(out, first_index, entries[k..].to_vec());
        }
        let new_commit = commit.min(matched);
        if new_commit > self.commit {
            self.commit = new_commit;
            out.push(Action::Committed(new_commit));
        }
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

    fn on_append_response(
        &mut self,
        out: &mut Vec<Action>,
        from: NodeId,
        success: bool,
        index: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        self.active.insert(from);
        let last = self.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if success {
            p.matched = p.matched.max(index.min(last));
            p.next = p.next.max(p.matched + 1);
            let caught_up = p.matched == last;
            self.maybe_commit(out);
            self.send_append(out, from, false);
            if caught_up && self.transferring.is_some_and(|(to, _)| to == from) {
                Self::send(out, from, Message::TimeoutNow { term: self.term });
            }
        } else {
            // Back off to the hint (never below what is known to match, never past the end:
            // the hint comes from the network).
            p.next = index.clamp(p.matched + 1, last + 1);
            self.send_append(out, from, true);
        }
    }
}
