//! [`ReadRounds`]: the leader's bookkeeping for linearizable reads (Raft thesis §6.4,
//! "ReadIndex"). A read asked of the leader is answered from the state machine once it has
//! applied the commit index the leader had when the read arrived, and once a majority
//! answered a heartbeat sent after it: until then a deposed leader (paused, or cut off, and
//! not yet told of the new term) could answer from a state the new leader already moved past.
//!
//! Each read opens a round; heartbeats carry the latest round and followers echo it. A read
//! is confirmed when a quorum of voters (the leader counts itself) echoed its round or a later
//! one. No clock is involved: a leader paused for longer than an election timeout can never
//! confirm with the old term (a quorum that elected a successor refuses its heartbeats).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::types::NodeId;

/// Most reads waiting for their round at once; more are refused (the leader is not hearing
/// from a quorum, or reads arrive faster than rounds complete).
pub const MAX_PENDING_READS: usize = 10_000;

/// A read waiting for its round: (read id, commit index when asked, round).
type Pending = (u64, u64, u64);

#[derive(Debug, Clone, Default)]
pub struct ReadRounds {
    /// The latest round opened (heartbeats carry it).
    round: u64,
    pending: VecDeque<Pending>,
    /// The latest round each voter echoed, in this term.
    echoed: BTreeMap<NodeId, u64>,
}

impl ReadRounds {
    /// The round heartbeats carry now.
    pub fn round(&self) -> u64 {
        self.round
    }

    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING_READS
    }

    /// Opens a round for read `id`, asked when the commit index was `index`: the round the
    /// heartbeats confirming it must carry.
    pub fn open(&mut self, id: u64, index: u64) -> u64 {
        self.round += 1;
        self.pending.push_back((id, index, self.round));
        self.round
    }

    /// `from` echoed `round`.
    pub fn echoed(&mut self, from: NodeId, round: u64) {
        let r = self.echoed.entry(from).or_default();
        *r = (*r).max(round.min(self.round));
    }

    /// The reads whose rounds a quorum of `voters` echoed (`me` counts when it votes), oldest
    /// first: (read id, index).
    pub fn confirmed(
        &mut self,
        me: NodeId,
        voters: &BTreeSet<NodeId>,
        quorum: usize,
    ) -> Vec<(u64, u64)> {
        let mut rounds: Vec<u64> = voters
            .iter()
            .map(|v| {
                if *v == me {
                    u64::MAX
                } else {
                    self.echoed.get(v).copied().unwrap_or(0)
                }
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&agreed) = rounds.get(quorum.saturating_sub(1)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(&(id, index, round)) = self.pending.front() {
            if round > agreed {
                break;
            }
            self.pending.pop_front();
            out.push((id, index));
        }
        out
    }

    /// Leadership ended: the reads waiting are dropped (their ids), the echoes forgotten.
    pub fn abandon(&mut self) -> Vec<u64> {
        self.echoed.clear();
        self.pending.drain(..).map(|(id, _, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_read_is_confirmed_by_a_quorum_echoing_its_round_or_a_later_one() {
        let mut r = ReadRounds::default();
        let v = voters(&[1, 2, 3]);
        let first = r.open(10, 5);
        let second = r.open(11, 6);
        assert_eq!(r.confirmed(1, &v, 2), vec![]);
        r.echoed(2, first);
        assert_eq!(r.confirmed(1, &v, 2), vec![(10, 5)]);
        r.echoed(3, second);
        assert_eq!(r.confirmed(1, &v, 2), vec![(11, 6)]);
    }

    #[test]
    fn echoes_of_rounds_before_a_read_do_not_confirm_it() {
        let mut r = ReadRounds::default();
        let v = voters(&[1, 2, 3, 4, 5]);
        let old = r.open(1, 1);
        r.echoed(2, old);
        r.echoed(3, old);
        assert_eq!(r.confirmed(1, &v, 3), vec![(1, 1)]);
        let new = r.open(2, 1);
        assert_eq!(r.confirmed(1, &v, 3), vec![], "echoes of round {old} only");
        r.echoed(4, new);
        assert_eq!(r.confirmed(1, &v, 3), vec![]);
        r.echoed(5, new);
        assert_eq!(r.confirmed(1, &v, 3), vec![(2, 1)]);
    }

    #[test]
    fn an_echo_of_a_round_never_opened_counts_for_none_after_it() {
        let mut r = ReadRounds::default();
        let v = voters(&[1, 2, 3]);
        r.echoed(2, 1_000); // forged or from a confused peer
        let round = r.open(1, 1);
        assert_eq!(round, 1);
        assert_eq!(r.confirmed(1, &v, 2), vec![]);
    }

    #[test]
    fn leadership_ending_drops_the_waiting_reads() {
        let mut r = ReadRounds::default();
        r.open(7, 1);
        r.open(8, 1);
        assert_eq!(r.abandon(), vec![7, 8]);
        assert_eq!(r.confirmed(1, &voters(&[1]), 1), vec![]);
    }

    #[test]
    fn a_non_voting_leader_needs_a_quorum_of_the_others() {
        let mut r = ReadRounds::default();
        let v = voters(&[2, 3, 4]);
        let round = r.open(1, 9);
        r.echoed(2, round);
        assert_eq!(r.confirmed(1, &v, 2), vec![]);
        r.echoed(3, round);
        assert_eq!(r.confirmed(1, &v, 2), vec![(1, 9)]);
    }
}
