//! The controller's side of a large cluster, computed with the node's own placement code:
//! 100 nodes × 100,000 partitions (replication factor 3) by default. Prints and records how
//! long placement takes, the metadata image's bytes (the controller's snapshot, what every
//! node holds), leaders and replicas per node (spread), and per node the peers it shares a
//! partition with — the envelopes one round of coalesced heartbeats sends (per node pair,
//! not per partition) — against the heartbeats one per partition would need.
//!
//! ```text
//! cargo build --release -p quiver-bench
//! target/release/cluster_bench [--nodes 100] [--partitions 100000] [--replication-factor 3]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use quiver_bench::harness::write_report;
use quiver_cluster::placement::place;
use quiver_cluster::{apply, Command, Metadata, NodeMeta};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 100)]
    nodes: i32,
    #[arg(long, default_value_t = 100_000)]
    partitions: usize,
    #[arg(long, default_value_t = 3)]
    replication_factor: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 100)]
    per_topic: usize,
    #[arg(long, default_value = "perf/results/cluster-scale.json")]
    out: PathBuf,
}

fn main() {
    let args = Args::parse();
    let mut meta = Metadata {
        cluster_id: "bench".into(),
        ..Metadata::default()
    };
    for node in 0..args.nodes {
        let m = NodeMeta {
            client_addr: format!("10.0.{}.{}:7420", node / 250, node % 250),
            internal_addr: format!("10.0.{}.{}:7520", node / 250, node % 250),
            rack: Some(format!("rack-{}", node % 10)),
            shards: 16,
            decommissioned: false,
        };
        apply(&mut meta, &Command::RegisterNode { node, meta: m }).expect("registered");
    }
    let started = Instant::now();
    let topics = args.partitions.div_ceil(args.per_topic);
    for t in 0..topics {
        let n = args.per_topic.min(args.partitions - t * args.per_topic);
        let partitions = place(&meta, n, args.replication_factor).expect("placed");
        apply(
            &mut meta,
            &Command::CreateTopic {
                name: format!("topic-{t:05}"),
                partitions,
                configs: BTreeMap::new(),
            },
        )
        .expect("created");
    }
    let place_ms = started.elapsed().as_secs_f64() * 1e3;
    let image_bytes = meta.to_json().len();
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    let mut replicas: BTreeMap<i32, usize> = BTreeMap::new();
    let mut peers: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
    for p in meta.topics.values().flat_map(|t| &t.partitions) {
        *leaders.entry(p.leader).or_default() += 1;
        for r in &p.replicas {
            *replicas.entry(*r).or_default() += 1;
            if *r != p.leader {
                peers.entry(p.leader).or_default().insert(*r);
                peers.entry(*r).or_default().insert(p.leader);
            }
        }
    }
    let range = |m: &BTreeMap<i32, usize>| {
        (
            m.values().min().copied().unwrap_or(0),
            m.values().max().copied().unwrap_or(0),
        )
    };
    let peer_counts: BTreeMap<i32, usize> = peers.iter().map(|(n, s)| (*n, s.len())).collect();
    let (lmin, lmax) = range(&leaders);
    let (rmin, rmax) = range(&replicas);
    let (pmin, pmax) = range(&peer_counts);
    // One round of heartbeats: a leader's partitions each heartbeat RF-1 followers, which
    // answer; coalesced, a node sends one envelope to each peer it shares a partition with.
    let per_partition = lmax * (args.replication_factor - 1);
    println!("| nodes | partitions | RF | placement | metadata image | leaders per node | replicas per node | peers per node | heartbeat messages per node per round: per partition → coalesced |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.0} ms | {:.1} MB | {lmin}–{lmax} | {rmin}–{rmax} | {pmin}–{pmax} | {per_partition} → {pmax} |",
        args.nodes,
        args.partitions,
        args.replication_factor,
        place_ms,
        image_bytes as f64 / 1e6
    );
    // The node leading the most partitions fails: its groups elect new leaders among their
    // surviving replicas (the Raft core in virtual time, 100 ms ticks as a shard's driver),
    // and each new leader records itself in the controller (one `SetLeader` each).
    let victim = leaders
        .iter()
        .max_by_key(|(n, c)| (**c, -**n))
        .map_or(0, |(n, _)| *n);
    let raft_id = |n: i32| n as u64 + 1;
    let groups: Vec<Vec<u64>> = meta
        .topics
        .values()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.leader == victim)
        .map(|p| {
            let mut r = vec![raft_id(victim)];
            r.extend(
                p.replicas
                    .iter()
                    .filter(|n| **n != victim)
                    .map(|n| raft_id(*n)),
            );
            r
        })
        .collect();
    let sim_started = Instant::now();
    let failover = quiver_bench::failover_sim::simulate(raft_id(victim), &groups);
    let sim_s = sim_started.elapsed().as_secs_f64();
    const TICK_MS: f64 = 100.0;
    let pct = |q: f64| {
        let t = &failover.ticks_to_leader;
        t.get(
            ((t.len() as f64 * q).ceil() as usize)
                .saturating_sub(1)
                .min(t.len().saturating_sub(1)),
        )
        .map_or(f64::NAN, |x| *x as f64 * TICK_MS)
    };
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    let span_s = max / 1e3;
    let set_leader_bytes: usize = groups.len()
        * Command::SetLeader {
            topic: "topic-00000".into(),
            partition: 99,
            leader: 1,
            leader_epoch: 2,
        }
        .encode()
        .len();
    println!();
    println!("| failed node's leaderships | new leader p50 | p99 | all moved | survivors involved | envelopes per survivor per s meanwhile | controller `SetLeader` bytes |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {p50:.0} ms | {p99:.0} ms | {max:.0} ms | {} | {:.1} | {:.1} kB (simulated in {sim_s:.1} s; {} left without a leader) |",
        failover.groups,
        failover.nodes,
        failover.envelopes as f64 / failover.nodes.max(1) as f64 / span_s.max(1e-3),
        set_leader_bytes as f64 / 1e3,
        failover.unled
    );
    write_report(
        &args.out,
        &json!({
            "bench": "cluster_bench",
            "nodes": args.nodes,
            "partitions": args.partitions,
            "replication_factor": args.replication_factor,
            "placement_ms": place_ms,
            "metadata_image_bytes": image_bytes,
            "leaders_per_node": [lmin, lmax],
            "replicas_per_node": [rmin, rmax],
            "peers_per_node": [pmin, pmax],
            "heartbeats_per_node_per_round_per_partition": per_partition,
            "envelopes_per_node_per_round_coalesced": pmax,
            "failover": {
                "failed_node_leaderships": failover.groups,
                "new_leader_ms_p50": p50,
                "new_leader_ms_p99": p99,
                "all_moved_ms": max,
                "unled": failover.unled,
                "survivors_involved": failover.nodes,
                "envelopes": failover.envelopes,
                "messages": failover.messages,
                "set_leader_command_bytes": set_leader_bytes,
                "tick_ms": TICK_MS,
            },
        }),
    );
}
