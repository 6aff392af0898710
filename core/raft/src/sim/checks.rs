//! The simulator's invariants: what must hold after every step, whatever the faults. Entries
//! are identified by the index they end at (an entry spans one or more indexes).

use super::{digest, Failure, Sim, SimNode};
use crate::log::RaftLog;
use crate::types::{Entry, NodeId, Payload, Role, Snapshot};

/// The disk holds the committed entry ending at `end` (in its log, or under its snapshot).
fn disk_holds(node: &SimNode, end: u64, e: &Entry) -> bool {
    end <= node.disk.snapshot().index || node.disk.ending_at(end) == Some(e)
}

/// `(end, entry)` for every entry of `log`.
fn with_ends(log: &RaftLog) -> impl Iterator<Item = (u64, &Entry)> {
    (0..log.len()).map(move |k| {
        let e = &log.entries()[k];
        (log.start_of(k) + e.span.max(1) - 1, e)
    })
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
        for (end, e) in with_ends(&self.committed) {
            let holds = if end < start {
                true
            } else if end == start {
                core.snapshot().term == e.term
            } else {
                core.entry(end) == Some(e)
            };
            if !holds {
                return Err(self.fail(format!(
                    "leader completeness: n{id}, leader of term {term}, lacks the committed entry ending at {end} (term {})",
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
        let below_start = c <= core.snapshot().index;
        if c > core.last_index() || !(below_start || core.log().is_boundary(c)) {
            return Err(self.fail(format!(
                "n{id} says {c} is committed but its log ends at {} or has no entry ending there",
                core.last_index()
            )));
        }
        let start = core.snapshot().index;
        if start > self.committed.last_index() {
            return Err(self.fail(format!(
                "n{id}'s log starts after {start}, beyond the committed {}",
                self.committed.last_index()
            )));
        }
        let mut fresh = Vec::new();
        for (end, e) in with_ends(core.log()) {
            if end > c {
                break;
            }
            if end <= self.committed.last_index() {
                if self.committed.ending_at(end) != Some(e) {
                    return Err(self.fail(format!(
                        "committed entry ending at {end} changed: n{id} commits term {} where {:?} was committed",
                        e.term,
                        self.committed.covering(end).map(|k| k.term)
                    )));
                }
            } else {
                fresh.push((end, e.clone()));
            }
        }
        for (end, e) in fresh {
            if end - e.span.max(1) != self.committed.last_index() {
                return Err(self.fail(format!(
                    "n{id} commits an entry ending at {end} that does not follow the committed {}",
                    self.committed.last_index()
                )));
            }
            self.committed.extend([e]);
        }
        Ok(())
    }

    /// A leader commits `c` when a majority of its voters' disks hold it: checked as the
    /// leader decides (the entry may reach the simulator's committed log later).
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
                "n{} commits the entry ending at {c} (term {}) held by {holders} of its voters {voters:?}' disks, fewer than a majority",
                self.nodes[i].id, e.term
            )));
        }
        Ok(())
    }

    /// A snapshot being installed holds exactly the committed entries it replaces.
    pub(super) fn check_snapshot(&self, i: usize, s: &Snapshot) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        let c = &self.committed;
        let consistent = s.index <= c.last_index()
            && c.is_boundary(s.index)
            && c.term_at(s.index) == Some(s.term)
            && digest(c, s.index) == s.data
            && c.membership_at(s.index).1 == s.membership;
        if !consistent {
            return Err(self.fail(format!(
                "n{id} installs a snapshot at {} (term {}) that differs from the committed log (ending at {})",
                s.index,
                s.term,
                c.last_index()
            )));
        }
        Ok(())
    }

    /// Every committed entry (`all`) or the last one is on a majority of disks.
    pub(super) fn check_durable_quorum(&self, all: bool) -> Result<(), Failure> {
        let quorum = self.nodes.len() / 2 + 1;
        let n = self.committed.len();
        let from = if all { 0 } else { n.saturating_sub(1) };
        for (end, e) in with_ends(&self.committed).skip(from) {
            let holders = self.nodes.iter().filter(|n| disk_holds(n, end, e)).count();
            if holders < quorum {
                return Err(self.fail(format!(
                    "the committed entry ending at {end} (term {}) is on {holders} disks, fewer than a majority: a crash can lose it",
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
                // The highest entry end both hold with the same term...
                let Some(k) = with_ends(ca.log())
                    .filter(|(end, e)| {
                        *end >= lo && cb.entry(*end).is_some_and(|f| f.term == e.term)
                    })
                    .map(|(end, _)| end)
                    .last()
                else {
                    continue;
                };
                // ...and every entry before it, from the later log start, is the same.
                let differs = with_ends(ca.log())
                    .filter(|(end, _)| *end >= lo && *end <= k)
                    .any(|(end, e)| cb.entry(end) != Some(e));
                if differs {
                    return Err(self.fail(format!(
                        "log matching: n{a} and n{b} agree on the entry ending at {k} but not on what precedes it"
                    )));
                }
            }
        }
        Ok(())
    }

    pub(super) fn check_proposals(&mut self) -> Result<(), Failure> {
        for (end, term, data) in self.proposals.clone() {
            if end <= self.committed.last_index() {
                let taken = self
                    .committed
                    .ending_at(end)
                    .is_some_and(|e| e.term == term && e.payload == Payload::Data(data));
                if !taken {
                    self.stats.proposals_failed += 1;
                }
                continue;
            }
            // Not reached: failed for sure if a later term's entry was committed before it.
            if self.committed.entries().iter().any(|e| e.term > term) {
                self.stats.proposals_failed += 1;
                continue;
            }
            return Err(self.fail(format!(
                "proposal ending at {end} (term {term}) neither committed nor failed after healing"
            )));
        }
        Ok(())
    }
}
