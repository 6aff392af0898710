//! The simulator's invariants: what must hold after every step, whatever the faults. Entries
//! are identified by the index they end at (an entry spans one or more indexes).

use super::{digest, Failure, Sim, SimNode};
use crate::log::RaftLog;
use crate::types::{Entry, NodeId, Payload, Role, Snapshot};

/// The disk holds the committed entry ending at `end` (in its log, or under its snapshot).
fn disk_holds(node: &SimNode, end: u64, e: &Entry) -> bool {
    end <= node.disk.snapshot().index || node.disk.ending_at(end) == Some(e)
}

/// A node's entries with the index each ends at.
type Ended = Vec<(u64, Entry)>;

/// `(end, entry)` for every entry of `log`.
fn with_ends(log: &RaftLog) -> impl Iterator<Item = (u64, &Entry)> {
    log.ends().iter().copied().zip(log.entries())
}

impl Sim {
    /// Node `i`'s entries after its log start: what it released from memory (its disk holds
    /// it), then what it holds.
    fn node_entries(&self, i: usize) -> Ended {
        self.node_entries_after(i, 0)
    }

    /// Node `i`'s entries ending after `after`.
    fn node_entries_after(&self, i: usize, after: u64) -> Ended {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Vec::new();
        };
        let start = core.snapshot().index.max(after);
        let tail = core.log().tail_start();
        let mut out = Vec::new();
        if start + 1 < tail {
            out.extend(
                with_ends(&self.nodes[i].disk)
                    .filter(|(end, _)| *end > start && *end < tail)
                    .map(|(end, e)| (end, e.clone())),
            );
        }
        out.extend(
            with_ends(core.log())
                .filter(|(end, _)| *end > start)
                .map(|(end, e)| (end, e.clone())),
        );
        out
    }

    /// Node `i`'s entry ending at `end`.
    fn node_entry(&self, i: usize, end: u64) -> Option<Entry> {
        let core = self.nodes[i].core.as_ref()?;
        if end < core.log().tail_start() {
            return self.nodes[i].disk.ending_at(end).cloned();
        }
        core.entry(end).cloned()
    }

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
                self.node_entry(i, end).as_ref() == Some(e)
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
        // What this node committed before was checked then (and a restart or a snapshot
        // resets the mark).
        for (end, e) in self.node_entries_after(i, self.nodes[i].checked) {
            if end > c {
                break;
            }
            if end <= self.committed.last_index() {
                if self.committed.ending_at(end) != Some(&e) {
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
        self.nodes[i].checked = c;
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
        let Some(e) = self.node_entry(i, c) else {
            return Ok(());
        };
        let e = &e;
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
        let live: Vec<(NodeId, u64, Ended)> = (0..self.nodes.len())
            .filter_map(|i| {
                let core = self.nodes[i].core.as_ref()?;
                Some((self.nodes[i].id, core.first_index(), self.node_entries(i)))
            })
            .collect();
        for (a, fa, la) in &live {
            for (b, fb, lb) in &live {
                if a >= b {
                    continue;
                }
                let lo = (*fa).max(*fb);
                let in_b: std::collections::BTreeMap<u64, &Entry> =
                    lb.iter().map(|(end, e)| (*end, e)).collect();
                // The highest entry end both hold with the same term...
                let Some(k) = la
                    .iter()
                    .rev()
                    .find(|(end, e)| *end >= lo && in_b.get(end).is_some_and(|f| f.term == e.term))
                    .map(|(end, _)| *end)
                else {
                    continue;
                };
                // ...and every entry before it, from the later log start, is the same.
                let differs = la
                    .iter()
                    .filter(|(end, _)| *end >= lo && *end <= k)
                    .any(|(end, e)| in_b.get(end) != Some(&e));
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
