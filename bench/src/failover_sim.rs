//! A failed node's leaderships moving, simulated with the node's Raft core (sans-IO, in
//! virtual time): the partition groups the failed node led, each on its placed replicas,
//! each node a [`MultiRaft`] as in a shard (one clock, envelopes coalesced per peer node),
//! writes durable at once, a lossless network delivering within the tick (each node's tick
//! and its messages before the next node's: clocks are not in phase). The failed node
//! first leads them all; then it stops (no tick, nothing to or from it) and the survivors
//! elect new leaders. Measures, per group, the ticks from the failure to a new leader, and
//! what the survivors send meanwhile.

use std::collections::BTreeMap;

use quiver_raft::multi::GroupAction;
use quiver_raft::types::{Action, Config, HardState, Role};
use quiver_raft::{MultiConfig, MultiRaft};

/// What the failover cost.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverFigures {
    pub groups: usize,
    /// Ticks from the failure until each group had a new leader, sorted.
    pub ticks_to_leader: Vec<u64>,
    /// Groups with no leader when the simulation stopped (should be 0).
    pub unled: usize,
    /// Envelopes and messages all survivors sent until the last group had a leader.
    pub envelopes: u64,
    pub messages: u64,
    /// Surviving nodes that took part (replicas of the failed node's partitions).
    pub nodes: usize,
}

/// Most ticks simulated after the failure.
const MAX_TICKS: u64 = 1_000;

fn carry_out(node: &mut MultiRaft, mut actions: Vec<GroupAction>) {
    while let Some((g, a)) = actions.pop() {
        if let Action::PersistEntries { write, .. } | Action::InstallSnapshot { write, .. } = a {
            actions.extend(node.persisted(g, write));
        }
    }
}

/// Delivers until quiet (bounded); `dead` neither sends nor receives. Returns (envelopes,
/// messages) sent.
fn deliver(nodes: &mut BTreeMap<u64, MultiRaft>, dead: Option<u64>) -> (u64, u64) {
    let (mut envelopes, mut messages) = (0, 0);
    for _ in 0..1_000 {
        let mut out = Vec::new();
        for (id, n) in nodes.iter_mut() {
            for (to, env) in n.flush() {
                if Some(*id) != dead {
                    out.push((*id, to, env));
                }
            }
        }
        if out.is_empty() {
            break;
        }
        for (from, to, env) in out {
            envelopes += 1;
            messages += env.messages.len() as u64;
            if Some(to) == dead {
                continue;
            }
            if let Some(n) = nodes.get_mut(&to) {
                let actions = n.step(from, env);
                carry_out(n, actions);
            }
        }
    }
    (envelopes, messages)
}

/// `groups`: each group's replicas (node ids ≥ 1), the failed node `victim` first among
/// them. Config as the node's partition groups (`Config::new` defaults: 10 election ticks,
/// heartbeats every 2).
pub fn simulate(victim: u64, groups: &[Vec<u64>]) -> FailoverFigures {
    let mut nodes: BTreeMap<u64, MultiRaft> = BTreeMap::new();
    for (g, replicas) in groups.iter().enumerate() {
        for r in replicas {
            let node = nodes
                .entry(*r)
                .or_insert_with(|| MultiRaft::new(MultiConfig::new(*r)));
            let mut c = Config::new(*r, replicas.clone());
            c.seed = (g as u64) << 8 | *r;
            let _ = node.add_group(g as u64, c, HardState::default(), None, Vec::new());
        }
    }
    // The failed node leads every one of them (as placement made it), and its followers
    // have heard it.
    if let Some(v) = nodes.get_mut(&victim) {
        for g in 0..groups.len() as u64 {
            if let Ok((_, a)) = v.with_group(g, |n| ((), n.campaign_now())) {
                carry_out(v, a);
            }
        }
    }
    deliver(&mut nodes, None);
    for _ in 0..4 {
        for n in nodes.values_mut() {
            let a = n.tick();
            carry_out(n, a);
        }
        deliver(&mut nodes, None);
    }
    let led_by = |nodes: &BTreeMap<u64, MultiRaft>, g: u64, dead: Option<u64>| {
        nodes.iter().any(|(id, n)| {
            Some(*id) != dead && n.group(g).is_some_and(|x| x.role() == Role::Leader)
        })
    };
    let mut ticks_to_leader = Vec::new();
    let mut open: Vec<u64> = (0..groups.len() as u64)
        .filter(|g| !led_by(&nodes, *g, Some(victim)))
        .collect();
    let (mut envelopes, mut messages) = (0, 0);
    let survivors: Vec<u64> = nodes.keys().copied().filter(|n| *n != victim).collect();
    for tick in 1..=MAX_TICKS {
        // Nodes' clocks are not in phase: each node's tick and what it sends are delivered
        // before the next node ticks (a round trip is far shorter than a tick), so two
        // replicas timing out in the same tick do not always split the vote.
        for id in &survivors {
            if let Some(n) = nodes.get_mut(id) {
                let a = n.tick();
                carry_out(n, a);
            }
            let (e, m) = deliver(&mut nodes, Some(victim));
            envelopes += e;
            messages += m;
        }
        open.retain(|g| {
            let led = led_by(&nodes, *g, Some(victim));
            if led {
                ticks_to_leader.push(tick);
            }
            !led
        });
        if open.is_empty() {
            break;
        }
    }
    ticks_to_leader.sort_unstable();
    FailoverFigures {
        groups: groups.len(),
        ticks_to_leader,
        unled: open.len(),
        envelopes,
        messages,
        nodes: nodes.len() - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_survivors_elect_a_leader_for_every_group_within_two_election_timeouts() {
        let groups: Vec<Vec<u64>> = (0..30).map(|g| vec![1, 2 + g % 4, 6 + g % 3]).collect();
        let f = simulate(1, &groups);
        assert_eq!((f.groups, f.unled), (30, 0));
        let max = *f.ticks_to_leader.last().unwrap();
        assert!(max <= 2 * 20 + 4, "{f:?}");
        assert!(
            f.ticks_to_leader[0] >= 10,
            "none before an election timeout: {f:?}"
        );
    }
}
