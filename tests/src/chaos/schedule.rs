//! A nemesis schedule: the faults one run applies, one at a time, each held for a while and
//! then healed, drawn from a seed. The same seed gives the same schedule (the same faults on
//! the same nodes at the same moments), which is what a replay repeats.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Longest election timeout of a Raft group (ticks of 100 ms, randomised 10..20): a pause
/// must outlast it for the others to elect a new leader behind the paused one's back.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of a node, restarted at heal.
    Kill { node: usize },
    /// kill -9 of whichever node leads this partition of the append topic at that moment.
    KillLeader { partition: i32 },
    /// The node hears no other node, and no other node hears it (clients still reach it).
    Isolate { node: usize },
    /// The minority hears only itself; the majority only itself.
    Split { minority: Vec<usize> },
    /// `middle` hears everyone; the two sides around it do not hear each other.
    Bridge {
        middle: usize,
        left: Vec<usize>,
        right: Vec<usize>,
    },
    /// The node loses `percent` % of what other nodes send it (one direction only).
    Loss { node: usize, percent: u8 },
    /// SIGSTOP for longer than an election timeout (a "zombie" leader when it led), then
    /// SIGCONT.
    Pause { node: usize },
    /// The node's disk filled to the last byte, freed at heal.
    DiskFull { node: usize },
}

impl Fault {
    /// The fault's kind, as the summary counts them.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::KillLeader { .. } => "kill-leader",
            Fault::Isolate { .. } => "isolate",
            Fault::Split { .. } => "split",
            Fault::Bridge { .. } => "bridge",
            Fault::Loss { .. } => "loss",
            Fault::Pause { .. } => "pause",
            Fault::DiskFull { .. } => "disk-full",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// When the fault starts, from the workload's start.
    pub at_ms: u64,
    /// How long it holds before it is healed.
    pub hold_ms: u64,
    pub fault: Fault,
    /// A node's disk slowed down for the same time, beside the fault (one step in four).
    pub slow_disk: Option<SlowDisk>,
}

/// A node's writes to its disk throttled ([`super::slow_disk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowDisk {
    pub node: usize,
    pub write_kib_per_s: u64,
    pub write_iops: u64,
}

/// The faults of one run over `duration_ms` on `nodes` nodes (the append topic has
/// `partitions` partitions).
pub fn generate(seed: u64, nodes: usize, partitions: i32, duration_ms: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Slow disks come from a stream of their own: a seed's faults stay what they were
    // before slow disks were added (the regression seeds replay the same faults).
    let mut slow_rng = StdRng::seed_from_u64(seed ^ 0x5105_D15C);
    let mut steps = Vec::new();
    let mut at_ms = rng.gen_range(300..1_000);
    loop {
        let fault = draw(&mut rng, nodes, partitions);
        let hold_ms = match fault {
            Fault::Pause { .. } => rng.gen_range(ELECTION_TIMEOUT_MAX_MS + 500..=5_000),
            _ => rng.gen_range(1_000..=4_000),
        };
        if at_ms + hold_ms > duration_ms {
            break;
        }
        let slow_disk = if slow_rng.gen_ratio(1, 4) {
            Some(SlowDisk {
                node: slow_rng.gen_range(1..=nodes),
                write_kib_per_s: slow_rng.gen_range(256..=2_048),
                write_iops: slow_rng.gen_range(20..=200),
            })
        } else {
            None
        };
        steps.push(Step {
            at_ms,
            hold_ms,
            fault,
            slow_disk,
        });
        at_ms += hold_ms + rng.gen_range(300..=1_500);
    }
    steps
}

fn draw(rng: &mut StdRng, nodes: usize, partitions: i32) -> Fault {
    let node = rng.gen_range(1..=nodes);
    let mut others: Vec<usize> = (1..=nodes).filter(|n| *n != node).collect();
    match rng.gen_range(0..8) {
        0 => Fault::Kill { node },
        1 => Fault::KillLeader {
            partition: rng.gen_range(0..partitions),
        },
        2 => Fault::Isolate { node },
        3 if nodes >= 5 => {
            // Two of five (a minority that may hold the old leaders).
            let second = others.remove(rng.gen_range(0..others.len()));
            let mut minority = vec![node, second];
            minority.sort_unstable();
            Fault::Split { minority }
        }
        3 => Fault::Isolate { node },
        4 => {
            let right = others.split_off(others.len() / 2);
            Fault::Bridge {
                middle: node,
                left: others,
                right,
            }
        }
        5 => Fault::Loss {
            node,
            percent: rng.gen_range(20..=60),
        },
        6 => Fault::Pause { node },
        _ => Fault::DiskFull { node },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_faults_fit_the_run() {
        let a = generate(42, 5, 4, 20_000);
        assert_eq!(a, generate(42, 5, 4, 20_000));
        assert_ne!(a, generate(43, 5, 4, 20_000));
        assert!(!a.is_empty());
        for w in a.windows(2) {
            assert!(
                w[0].at_ms + w[0].hold_ms < w[1].at_ms,
                "one fault at a time"
            );
        }
        let last = a.last().unwrap();
        assert!(last.at_ms + last.hold_ms <= 20_000);
    }

    #[test]
    fn every_kind_is_drawn_and_pauses_outlast_an_election() {
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..200 {
            for s in generate(seed, 5, 4, 30_000) {
                kinds.insert(s.fault.kind());
                if let Fault::Pause { .. } = s.fault {
                    assert!(s.hold_ms > ELECTION_TIMEOUT_MAX_MS);
                }
                if let Fault::Bridge {
                    middle,
                    left,
                    right,
                } = &s.fault
                {
                    assert!(!left.is_empty() && !right.is_empty());
                    assert!(!left.contains(middle) && !right.contains(middle));
                }
            }
        }
        assert_eq!(kinds.len(), 8, "{kinds:?}");
        let slowed: Vec<SlowDisk> = (0..200)
            .flat_map(|seed| generate(seed, 5, 4, 30_000))
            .filter_map(|s| s.slow_disk)
            .collect();
        assert!(slowed.len() > 100, "slow disks are drawn: {}", slowed.len());
        assert!(slowed.iter().all(|d| (1..=5).contains(&d.node)));
    }
}
