//! The Raft core on one core: 3 nodes of [`quiver_raft::MultiRaft`] in one thread over an
//! in-memory network with instant disks, for 1, 100 and 10,000 groups. Per group count:
//!
//! - idle: CPU per group per tick, and what two nodes exchange per round (envelopes,
//!   heartbeats): the goal is one envelope per node pair per round however many groups;
//! - loaded: `--proposals` 100-byte entries per round spread over the groups; committed
//!   entries per CPU second (all three replicas' work on the one core) and CPU per input
//!   (tick, message or proposal).
//!
//! ```text
//! cargo build --release -p quiver-bench
//! target/release/raft_bench [--rounds 300] [--proposals 1000] [--reps 3]
//! ```

use std::path::PathBuf;

use clap::Parser;
use quiver_bench::harness::{median, pin_current_thread, write_report};
use quiver_raft::sim::local_cluster::{LocalCluster, RoundStats};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// Rounds (ticks of every node) per measured phase.
    #[arg(long, default_value_t = 300)]
    rounds: u64,
    /// Entries proposed per round in the loaded phase, spread over the groups.
    #[arg(long, default_value_t = 1_000)]
    proposals: u64,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u64, 100, 10_000])]
    groups: Vec<u64>,
    #[arg(long, default_value = "perf/results/raft-core.json")]
    out: PathBuf,
}

/// This thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Phase {
    cpu_ns: u64,
    stats: RoundStats,
    inputs: u64,
    committed: u64,
}

fn add(total: &mut RoundStats, s: RoundStats) {
    total.envelopes += s.envelopes;
    total.messages += s.messages;
    total.heartbeats += s.heartbeats;
    total.max_envelopes_per_pair = total.max_envelopes_per_pair.max(s.max_envelopes_per_pair);
}

fn run(c: &mut LocalCluster, groups: u64, rounds: u64, proposals: u64) -> Phase {
    let mut stats = RoundStats::default();
    let before = c.committed;
    let mut inputs = 0;
    let mut next_group = 0;
    let payload = vec![0x5Au8; 100];
    let start = thread_cpu_ns();
    for r in 0..rounds {
        for _ in 0..proposals {
            if c.propose(next_group, payload.clone()).is_ok() {
                inputs += 1;
            }
            next_group = (next_group + 1) % groups;
        }
        add(&mut stats, c.deliver_now());
        let s = c.round();
        add(&mut stats, s);
        if proposals > 0 && r % 50 == 49 {
            c.compact_all();
        }
    }
    let cpu_ns = thread_cpu_ns() - start;
    inputs += stats.messages + rounds * groups * c.nodes.len() as u64;
    Phase {
        cpu_ns,
        stats,
        inputs,
        committed: c.committed - before,
    }
}

fn main() {
    let args = Args::parse();
    pin_current_thread(0);
    let mut rows = Vec::new();
    println!("| groups | idle ns/group/tick | envelopes/pair/round | heartbeats/envelope | committed entries/s (1 core, 3 replicas) | ns/input (loaded) |");
    println!("|---|---|---|---|---|---|");
    for &groups in &args.groups {
        let (mut idle_ns, mut env_per_pair, mut hb_per_env, mut rate, mut ns_input) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut max_pair = 0;
        for _ in 0..args.reps {
            let mut c = LocalCluster::new(3, groups, |_| {}).expect("cluster");
            let mut r = 0;
            while c.groups_led() < groups as usize && r < 2_000 {
                c.round();
                r += 1;
            }
            let idle = run(&mut c, groups, args.rounds, 0);
            let pairs = 3 * 2;
            idle_ns.push(idle.cpu_ns as f64 / (args.rounds * groups * 3) as f64);
            env_per_pair.push(idle.stats.envelopes as f64 / (args.rounds * pairs) as f64);
            hb_per_env.push(idle.stats.heartbeats as f64 / idle.stats.envelopes.max(1) as f64);
            max_pair = max_pair.max(idle.stats.max_envelopes_per_pair);
            let loaded = run(&mut c, groups, args.rounds, args.proposals);
            rate.push(loaded.committed as f64 / (loaded.cpu_ns as f64 / 1e9));
            ns_input.push(loaded.cpu_ns as f64 / loaded.inputs.max(1) as f64);
        }
        let row = json!({
            "groups": groups,
            "idle_cpu_ns_per_group_tick": median(idle_ns),
            "idle_envelopes_per_node_pair_per_round": median(env_per_pair),
            "idle_max_envelopes_per_node_pair_in_a_round": max_pair,
            "idle_heartbeats_per_envelope": median(hb_per_env),
            "committed_entries_per_cpu_s": median(rate),
            "loaded_cpu_ns_per_input": median(ns_input),
        });
        println!(
            "| {groups} | {:.0} | {:.2} | {:.1} | {:.0} | {:.0} |",
            row["idle_cpu_ns_per_group_tick"].as_f64().unwrap_or(0.0),
            row["idle_envelopes_per_node_pair_per_round"]
                .as_f64()
                .unwrap_or(0.0),
            row["idle_heartbeats_per_envelope"].as_f64().unwrap_or(0.0),
            row["committed_entries_per_cpu_s"].as_f64().unwrap_or(0.0),
            row["loaded_cpu_ns_per_input"].as_f64().unwrap_or(0.0),
        );
        rows.push(row);
    }
    write_report(
        &args.out,
        &json!({
            "bench": "raft_bench",
            "nodes": 3,
            "rounds": args.rounds,
            "proposals_per_round": args.proposals,
            "entry_bytes": 100,
            "reps": args.reps,
            "results": rows,
        }),
    );
}
