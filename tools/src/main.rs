//! The `quiver` command. `serve` runs a node; the client commands (`topic`, `produce`,
//! `consume`, ...) arrive with the CLI issue.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_core::broker::node::{run_node, Banner, NodeConfig};
use quiver_core::broker::shard::NodeSettings;
use quiver_core::log::LogConfig;

/// Default address of a local node: shard i listens on port 7420 + i.
const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

#[derive(Parser, Debug)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: a thread-per-core event log broker"
)]
struct Cli {
    /// Log filter (tracing syntax), e.g. info or quiver_core=debug. RUST_LOG also works.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node: single node, local data directory, dev TLS certificate made on first start.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Where partitions, metadata and the dev certificate live.
    #[arg(long, default_value = "./quiver-data")]
    data_dir: PathBuf,
    /// Address of shard 0; shard i listens on the next ports (base_port + i).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Host name clients should use (in metadata); defaults to the listen IP.
    #[arg(long)]
    advertised_host: Option<String>,
    /// Number of shards, unpinned (tests, laptops). Default: one pinned shard per CPU.
    #[arg(long, conflicts_with = "cores")]
    shards: Option<usize>,
    /// CPUs to pin one shard each to, e.g. 0-3 or 0,2,4.
    #[arg(long)]
    cores: Option<String>,
    /// PEM certificate chain (with --tls-key) instead of the dev certificate.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mTLS).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// Largest request frame accepted.
    #[arg(long, default_value_t = quiver_schema_max_frame())]
    max_frame_bytes: usize,
}

fn quiver_schema_max_frame() -> usize {
    (16 << 20) + (64 << 10)
}

fn parse_cores(list: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cores {list:?}: {part:?} is not a CPU number or range like 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("--cores needs at least one CPU".into());
    }
    Ok(out)
}

fn print_banner(b: &Banner) {
    println!("quiver {} serving", env!("CARGO_PKG_VERSION"));
    println!("  cluster id     {}", b.cluster_id);
    println!("  data dir       {}", b.data_dir.display());
    for (i, a) in b.shard_addresses.iter().enumerate() {
        println!("  shard {i:<3}      quic://{a}");
    }
    let made = if b.cert_created {
        " (dev certificate, made now)"
    } else {
        ""
    };
    println!("  certificate    {}{made}", b.cert_path.display());
    println!("  sha256         {}", b.cert_fingerprint_sha256);
    println!("  topics         {}", b.topics);
    println!("ready");
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = args.cores.as_deref().map(parse_cores).transpose()?;
    if let Some(c) = &cores {
        if let Some(missing) = c.iter().find(|c| **c >= cpus) {
            return Err(format!(
                "--cores asks for CPU {missing} but this machine has {cpus} CPUs (0-{})",
                cpus - 1
            ));
        }
    }
    let shard_count = match (&cores, args.shards) {
        (Some(c), _) => c.len(),
        (None, Some(n)) if n > 0 => n,
        (None, Some(_)) => return Err("--shards must be at least 1".into()),
        (None, None) => cpus,
    };
    let cores = cores.or_else(|| args.shards.is_none().then(|| (0..cpus).collect()));
    let advertised_host = args
        .advertised_host
        .unwrap_or_else(|| args.listen.ip().to_string());
    let config = NodeConfig {
        settings: NodeSettings {
            node_id: 0,
            data_dir: args.data_dir,
            advertised_host,
            base_port: args.listen.port(),
            shard_count,
            max_frame_bytes: args.max_frame_bytes,
            default_log: LogConfig::default(),
            retention_check_interval_ms: 300_000,
        },
        bind_host: args.listen.ip(),
        cores,
        tls_pem: args.tls_cert.zip(args.tls_key),
        tls_client_ca: args.tls_client_ca,
        quic: Default::default(),
    };
    run_node(config, print_banner).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
