//! The simulator's invariants: what must hold after every step, whatever the faults.

use super::{digest, Failure, Sim, SimNode};
use crate::types::{Entry, Membership, NodeId, Payload, Role, Snapshot};

/// The disk holds committed entry `index` (in its log, or under its snapshot).
fn disk_holds(node: &SimNode, index: u64, e: &Entry) -> bool {
    let start = node.disk_snapshot.as_ref().map_or(0, |s| s.index);
    if index <= start {
        return true;
    }
    node.disk_log.get((index - start - 1) as usize) == Some(e)
}

impl Sim {
    pub(super) fn on_role(&mut self, i: usize, role: Role, term: u64) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        self.note(format!("n{id} is {role:?} in term {term}"));
        if role != Role::Leader {
            return Ok(());
        }
        self.stats.leaders += 1;
        if let Some(other) = self.leaders.insert(term, id) {
            if other != id {
                return Err(self.fail(format!(
                    "election safety: n{other} and n{id} both lead term {term}"
                )));
            }
        }
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Ok(());
        };
        let start = core.snapshot().index;
        for (k, e) in self.committed.iter().enumerate() {
            let index = k as u64 + 1;
            let holds = if index < start {
                true
            } else if index == start {
                core.snapshot().term == e.term
            } else {
                core.entry(index) == Some(e)
            };
            if !holds {
                return Err(self.fail(format!(
                    "leader completeness: n{id}, leader of term {term}, lacks committed entry {index} (term {})",
                    e.term
                )));
            }
        }
        Ok(())
    }

    pub(super) fn on_committed(&mut self, i: usize, c: u64) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Ok(());
        };
        let start = core.snapshot().index;
        if c > core.last_index() {
            return Err(self.fail(format!(
                "n{id} says {c} is committed but its log ends at {}",
                core.last_index()
            )));
        }
        for index in start.max(1)..=c {
            let e = if index == start {
                // Under the snapshot (checked when it was made or installed).
                if self.committed.len() < start as usize {
                    return Err(self.fail(format!(
                        "n{id}'s log starts after {start}, beyond the {} entries committed",
                        self.committed.len()
                    )));
                }
                continue;
            } else {
                match core.entry(index) {
                    Some(e) => e.clone(),
                    None => continue,
                }
            };
            match self.committed.get(index as usize - 1) {
                Some(known) if *known != e => {
                    return Err(self.fail(format!(
                    "committed entry {index} changed: term {} was committed, n{id} commits term {}",
                    known.term, e.term
                )))
                }
                Some(_) => {}
                None if self.committed.len() as u64 == index - 1 => self.committed.push(e),
                None => {
                    return Err(self.fail(format!(
                        "n{id} commits {index} with only {} entries known committed before it",
                        self.committed.len()
                    )))
                }
            }
        }
        Ok(())
    }

    /// A leader commits `c` when a majority of its voters' disks hold it: checked as the
    /// leader decides (the entry may reach the simulator's committed list later).
    pub(super) fn check_leader_commit(&self, i: usize, c: u64) -> Result<(), Failure> {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Ok(());
        };
        if core.role() != Role::Leader {
            return Ok(());
        }
        let Some(e) = core.entry(c) else {
            return Ok(());
        };
        let voters: Vec<NodeId> = core.membership().voters.iter().copied().collect();
        let holders = voters
            .iter()
            .filter(|v| disk_holds(&self.nodes[**v as usize - 1], c, e))
            .count();
        if holders < voters.len() / 2 + 1 {
            return Err(self.fail(format!(
                "n{} commits entry {c} (term {}) held by {holders} of its voters {voters:?}' disks, fewer than a majority",
                self.nodes[i].id, e.term
            )));
        }
        Ok(())
    }

    /// The membership in force at `index` of the committed log.
    fn committed_membership_at(&self, index: u64) -> Membership {
        self.committed[..index as usize]
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                Payload::Membership(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| Membership::of_voters(&self.voters))
    }

    /// A snapshot being installed holds exactly the committed entries it replaces.
    pub(super) fn check_snapshot(&self, i: usize, s: &Snapshot) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        if s.index as usize > self.committed.len() {
            return Err(self.fail(format!(
                "n{id} installs a snapshot at {} beyond the {} committed entries",
                s.index,
                self.committed.len()
            )));
        }
        let upto = &self.committed[..s.index as usize];
        let term_ok = upto.last().map_or(0, |e| e.term) == s.term;
        if !term_ok
            || digest(upto) != s.data
            || self.committed_membership_at(s.index) != s.membership
        {
            return Err(self.fail(format!(
                "n{id} installs a snapshot at {} (term {}) that differs from the committed log",
                s.index, s.term
            )));
        }
        Ok(())
    }

    /// Every committed entry (`all`) or the last one is on a majority of disks.
    pub(super) fn check_durable_quorum(&self, all: bool) -> Result<(), Failure> {
        let quorum = self.nodes.len() / 2 + 1;
        let len = self.committed.len();
        let from = if all { 0 } else { len.saturating_sub(1) };
        for k in from..len {
            let e = &self.committed[k];
            let index = k as u64 + 1;
            let holders = self
                .nodes
                .iter()
                .filter(|n| disk_holds(n, index, e))
                .count();
            if holders < quorum {
                return Err(self.fail(format!(
                    "committed entry {index} (term {}) is on {holders} disks, fewer than a majority: a crash can lose it",
                    e.term
                )));
            }
        }
        Ok(())
    }

    pub(super) fn check_log_matching(&self) -> Result<(), Failure> {
        let cores: Vec<(NodeId, &crate::RaftNode)> = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| (n.id, c)))
            .collect();
        for (a, ca) in &cores {
            for (b, cb) in &cores {
                if a >= b {
                    continue;
                }
                let lo = ca.first_index().max(cb.first_index());
                let hi = ca.last_index().min(cb.last_index());
                let Some(k) = (lo..=hi)
                    .rev()
                    .find(|&k| ca.entry(k).map(|e| e.term) == cb.entry(k).map(|e| e.term))
                else {
                    continue;
                };
                if (lo..=k).any(|j| ca.entry(j) != cb.entry(j)) {
                    return Err(self.fail(format!(
                        "log matching: n{a} and n{b} agree on entry {k} but not on what precedes it"
                    )));
                }
            }
        }
        Ok(())
    }

    pub(super) fn check_proposals(&mut self) -> Result<(), Failure> {
        for (index, term, data) in self.proposals.clone() {
            let i = index as usize - 1;
            if let Some(e) = self.committed.get(i) {
                if e.term == term && e.payload == Payload::Data(data) {
                    continue;
                }
                self.stats.proposals_failed += 1;
                continue;
            }
            // Not reached: failed for sure if a later term's entry was committed before it.
            if self.committed.iter().any(|e| e.term > term) {
                self.stats.proposals_failed += 1;
                continue;
            }
            return Err(self.fail(format!(
                "proposal at index {index} (term {term}) neither committed nor failed after healing"
            )));
        }
        Ok(())
    }
}
