//! `quiver-chaos`: runs seeded fault schedules against real 3- or 5-node clusters in network
//! namespaces and checks the histories (see `quiver_tests::chaos`). Needs root (namespaces,
//! nftables, loop mounts). Exits 1 when any schedule found an anomaly, 2 on a harness error.

use std::path::PathBuf;

use clap::Parser;
use quiver_tests::chaos::report::{self, Summary};
use quiver_tests::chaos::run::{run_schedule, Options};

#[derive(Parser)]
#[command(about = "Fault schedules against a real Quiver cluster, checked Jepsen's way")]
struct Args {
    /// Seed of the first schedule; schedule i uses seed + i.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many schedules to run.
    #[arg(long, default_value_t = 1)]
    schedules: usize,
    /// Nodes per cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long the workloads run under faults, per schedule.
    #[arg(long, default_value_t = 15_000)]
    duration_ms: u64,
    /// After healing, the cluster must take writes again within this.
    #[arg(long, default_value_t = 30_000)]
    recovery_bound_ms: u64,
    /// Where the nodes' loop disks go (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write the whole history of each failing schedule here (history-<seed>.txt).
    #[arg(long)]
    history_dir: Option<PathBuf>,
    /// The nodes' log filter (`--log-level` of quiver serve).
    #[arg(long, default_value = "warn")]
    node_log_level: String,
    /// Also write the sweep's summary as JSON here (rewritten after every schedule).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if !quiver_tests::loopfs::is_root() {
        eprintln!(
            "quiver-chaos needs root: it makes network namespaces, nftables rules and loop mounts"
        );
        std::process::exit(2);
    }
    if !(3..=9).contains(&args.nodes) {
        eprintln!("--nodes must be between 3 and 9");
        std::process::exit(2);
    }
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let opts = Options {
        nodes: args.nodes,
        duration_ms: args.duration_ms,
        recovery_bound_ms: args.recovery_bound_ms,
        work_dir: args
            .work_dir
            .clone()
            .unwrap_or_else(|| tmp.path().to_path_buf()),
        history_dir: args.history_dir.clone(),
        node_log_level: args.node_log_level.clone(),
    };
    let mut summary = Summary::default();
    for i in 0..args.schedules {
        let seed = args.seed + i as u64;
        match run_schedule(&opts, seed) {
            Ok(v) => {
                println!("{}", report::line(i, &v));
                if !v.anomalies.is_empty() {
                    print!("{}", report::evidence(&v, &opts));
                }
                summary.add(&v);
            }
            Err(e) => {
                println!("schedule {i} seed {seed}: HARNESS ERROR: {e}");
                println!("  replay: {}", report::replay_command(seed, &opts));
                summary.harness_errors += 1;
            }
        }
        // After every schedule: a long sweep stopped early keeps what it ran.
        if let Some(path) = &args.json {
            let json = summary.json(args.seed, &opts);
            if let Err(e) = std::fs::write(path, format!("{json:#}\n")) {
                eprintln!("{}: {e}", path.display());
            }
        }
    }
    println!("{}", summary.text());
    if summary.failed > 0 {
        std::process::exit(1);
    }
    if summary.harness_errors > 0 {
        std::process::exit(2);
    }
}
