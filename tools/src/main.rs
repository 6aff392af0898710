//! The `quiver` command: `serve` runs a node; `topic`, `produce`, `consume`, `group`,
//! `offsets` and `cluster` talk to one. Tables for people, `--json` for scripts; errors say what to do.

mod bench_cmd;
mod cluster_ops;
mod cluster_status;
mod connect;
mod consume;
mod consume_group;
mod dev_cluster;
mod dlq;
mod group;
mod produce;
mod serve;
mod time;
mod topic;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_client::SeekTo;

use crate::connect::ClientArgs;
use crate::serve::ServeConfig;

#[derive(Parser, Debug)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: a thread-per-core event log broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node: single node, local data directory, dev TLS certificate made on first start.
    Serve {
        /// TOML configuration file (keys as in docs/operations.md); env QUIVER_* and flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: ServeConfig,
    },
    /// Local playgrounds: `quiver dev cluster --nodes 3` runs a cluster of node processes here.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Create, list, describe, delete topics and change their configs.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send one record per line of stdin; exits once every record is acknowledged, or non-zero
    /// with the counts once one cannot be delivered (reading stops there).
    Produce {
        topic: String,
        /// Split each line into key and value at the first SEP.
        #[arg(long)]
        key_separator: Option<String>,
        #[arg(long, value_enum, default_value = "all")]
        acks: produce::AcksArg,
        /// Send every record to this partition (default: by key, or sticky for keyless records).
        #[arg(long)]
        partition: Option<i32>,
        /// Print `partition offset` per record, in input order (`- -` for a record that was
        /// not acknowledged; with --json, `{"line", "partition", "offset"}` or `{"line", "error"}`).
        #[arg(long)]
        print_offsets: bool,
        /// How long a record may take to be acknowledged, retries included, counted from when
        /// it was read. The first record that runs out of it stops the reading of stdin.
        #[arg(long, default_value_t = 120_000)]
        delivery_timeout_ms: u64,
        /// How long one produce request may wait for its answer before it is retried.
        #[arg(long, default_value_t = connect::REQUEST_TIMEOUT_MS)]
        request_timeout_ms: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print records of a topic; stops at the end of the log unless --follow. With --group,
    /// as a member of a consumer group: resumes at the group's committed offsets and commits
    /// what it printed.
    Consume {
        topic: String,
        /// Start at the earliest offset (the default without --group; with --group, only for
        /// partitions the group has no committed offset for, which otherwise start at the end).
        #[arg(long, conflicts_with_all = ["offset", "from_time"])]
        from_beginning: bool,
        /// Start at this offset.
        #[arg(long, conflicts_with_all = ["from_time", "group"])]
        offset: Option<i64>,
        /// Consume as a member of this consumer group.
        #[arg(long, conflicts_with = "partition")]
        group: Option<String>,
        /// A static member's instance id: restarted within the session timeout, it gets its
        /// partitions back with no rebalance.
        #[arg(long, requires = "group")]
        instance_id: Option<String>,
        /// When offsets are committed (with --group).
        #[arg(long, value_enum, default_value = "at-least-once", requires = "group")]
        delivery: consume_group::Delivery,
        /// How often what was printed is committed (with --group).
        #[arg(long, default_value_t = 1_000, requires = "group")]
        commit_interval_ms: u64,
        /// Print assignment changes on stderr (with --group).
        #[arg(long, requires = "group")]
        verbose: bool,
        /// Start at the first record at or after this RFC 3339 time, e.g. 2026-11-26T12:00:00Z.
        #[arg(long)]
        from_time: Option<String>,
        /// Only this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// Stop after COUNT records.
        #[arg(short = 'n', long = "count")]
        count: Option<u64>,
        /// Keep waiting for new records.
        #[arg(long)]
        follow: bool,
        /// How each record is printed [default: value; json with --json].
        #[arg(long, value_enum)]
        format: Option<consume::Format>,
        /// What to read of transactional writes: read_uncommitted (everything, as Kafka's
        /// default) or read_committed (committed transactions only, up to the last stable
        /// offset).
        #[arg(long, value_enum, default_value = "read_uncommitted")]
        isolation: consume::IsolationArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List, describe (members, assignment, committed offsets, lag), delete and configure
    /// consumer groups; reset their offsets.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Dead-lettered records of a consumer group.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Earliest and latest offset of every partition of a topic.
    Offsets {
        topic: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The node you are talking to, and the cluster's nodes and controller.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the configuration reference (the table in docs/operations.md).
    ConfigReference,
    /// Run a latency benchmark workload (bench/workloads/*.toml), or `floor`.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replicas per partition, on distinct nodes (default 0: 3, or every node of a
        /// smaller cluster).
        #[arg(long, default_value_t = 0)]
        replication_factor: i16,
        /// Topic config, key=value (repeatable): retention_ms, segment_bytes, flush_policy, ...
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// List topics.
    List,
    /// Partitions, owning shards and effective configs of a topic.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Change topic configs.
    AlterConfig {
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Move a partition's replicas: new ones copy the log as learners, join once caught up,
    /// then the leaving ones are removed (the first node listed is the preferred leader).
    AlterReplicas {
        name: String,
        #[arg(long)]
        partition: i32,
        /// The replicas it moves to, e.g. 1,2,4.
        #[arg(long, value_name = "NODES")]
        replicas: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// Whether a cluster operation waits until it is done.
#[derive(clap::Args, Debug, Clone, Copy)]
struct WaitArgs {
    /// Return once the change is recorded; it goes on in the background.
    #[arg(long)]
    no_wait: bool,
    /// Longest wait, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

impl WaitArgs {
    fn wait(self) -> Option<std::time::Duration> {
        (!self.no_wait).then(|| std::time::Duration::from_secs(self.timeout_s))
    }
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Every group with its state and member count.
    List,
    /// Members and their assignment; per partition the committed offset, log start and end,
    /// and lag in records and in milliseconds (age of the oldest unconsumed record).
    Describe { group: String },
    /// Delete a group and its committed offsets.
    Delete {
        group: String,
        /// Delete even while members are live (they are fenced and rejoin a fresh group).
        #[arg(long)]
        force: bool,
    },
    /// Change group configs: session_timeout_ms, heartbeat_interval_ms, assignor,
    /// max_deliveries, redelivery_backoff_ms (e.g. 1000,5000,30000), dlq_topic, retry_levels.
    AlterConfig {
        group: String,
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Move a group's committed offsets for a topic (refused while the group has live
    /// members, unless --force).
    #[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_time", "to_offset", "shift_by"])))]
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<i32>,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        /// The first record at or after this RFC 3339 time.
        #[arg(long)]
        to_time: Option<String>,
        #[arg(long)]
        to_offset: Option<i64>,
        /// Move by N (negative: back) from the committed offset.
        #[arg(long, allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Reset even while members are live: they are removed from the group, rejoin, and
        /// resume at the new offsets.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// Send the group's dead letters back to the partitions they came from (each once:
    /// progress is committed under the group `G.dlq-replay`).
    Replay {
        group: String,
        /// Only the dead letters of this topic (default: every topic the group consumes).
        #[arg(long)]
        topic: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Run a workload file against a node (--broker) or an embedded one (--embedded).
    Run(Box<bench_cmd::BenchArgs>),
    /// This machine's floor: QUIC echo round trip of the message size and raw write +
    /// fdatasync; in a build with `--features instruments`, also the platform's hiccups (a
    /// thread per CPU sleeping 1 ms, as jHiccup) and what busy CPUs lose.
    Floor {
        #[arg(long, default_value_t = 1024)]
        message_size: usize,
        #[arg(long, default_value_t = 5000)]
        samples: usize,
        /// Seconds of hiccup measurement on the idle machine (0: skip) [default: 10;
        /// instruments builds only].
        #[arg(long)]
        hiccup_s: Option<u64>,
        /// Seconds of spinning on every CPU at once, to see what busy CPUs lose (0: skip)
        /// [default: 5; instruments builds only].
        #[arg(long)]
        busy_s: Option<u64>,
        /// A directory on the disk the data directory would use.
        #[arg(long, default_value = ".")]
        data_dir: PathBuf,
        #[arg(long, default_value = "perf/results")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DevCommand {
    /// Start N node processes on this machine (data in <data-dir>/node-N, ports 7420, 7430,
    /// ...), print how to reach them, stop them all on Ctrl-C.
    Cluster {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Shards per node.
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// Port of node 1's shard 0; node N's is 10 × (N − 1) higher.
        #[arg(long, default_value_t = 7420)]
        base_port: u16,
        #[arg(long, default_value = "./quiver-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Cluster id, node id, shards and their ports, topic count.
    Info,
    /// Every node (up or down from here), the controller leader and voters, partitions
    /// led per node, offline and under-replicated partitions, follower lag.
    Status,
    /// Hand a partition's leadership to another of its replicas (it becomes the preferred
    /// leader, so it stays there).
    TransferLeadership {
        topic: String,
        #[arg(long)]
        partition: i32,
        /// The node to lead.
        #[arg(long)]
        to: i32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move every replica off a node (and place nothing new there); once it holds none it
    /// may be stopped.
    Decommission {
        node: i32,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// glommio 0.9 logs an ERROR when its iopoll probe fails for a reason other than "not
/// supported" (seen on virtio disks); it then simply disables polling for that device, which is
/// what we want. The line is a false alarm, so that one callsite is dropped.
fn is_glommio_iopoll_probe(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "glommio::reactor"
        && meta.file().is_some_and(|f| f.ends_with("reactor.rs"))
        && meta.line() == Some(268)
}

fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            !is_glommio_iopoll_probe(meta)
        }));
    tracing_subscriber::registry().with(filter).with(fmt).init();
}
fn serve_command(config: Option<PathBuf>, flags: ServeConfig) -> Result<(), (i32, String)> {
    let file = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                (
                    2,
                    format!("cannot read config file {}: {e}", path.display()),
                )
            })?;
            ServeConfig::from_toml(&text, &path.display().to_string()).map_err(|e| (2, e))?
        }
        None => ServeConfig::default(),
    };
    let env = ServeConfig::from_env(|k| std::env::var(k).ok()).map_err(|e| (2, e))?;
    let merged = flags.over(env.over(file));
    init_logging(merged.log_level.as_deref().unwrap_or("info"));
    serve::serve(merged)
}

fn client_command(cmd: Command) -> Result<(), String> {
    init_logging("warn");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = rt.block_on(async move {
        match cmd {
            Command::Topic { command, client } => match command {
                TopicCommand::Create {
                    name,
                    partitions,
                    replication_factor,
                    config,
                } => topic::create(&client, &name, partitions, replication_factor, &config).await,
                TopicCommand::List => topic::list(&client).await,
                TopicCommand::Describe { name } => topic::describe(&client, &name).await,
                TopicCommand::Delete { name } => topic::delete(&client, &name).await,
                TopicCommand::AlterConfig { name, set } => {
                    topic::alter_config(&client, &name, &set).await
                }
                TopicCommand::AlterReplicas {
                    name,
                    partition,
                    replicas,
                    wait,
                } => {
                    cluster_ops::alter_replicas(&client, &name, partition, &replicas, wait.wait())
                        .await
                }
            },
            Command::Produce {
                topic,
                key_separator,
                acks,
                partition,
                print_offsets,
                delivery_timeout_ms,
                request_timeout_ms,
                client,
            } => {
                produce::run(
                    &client,
                    produce::ProduceArgs {
                        topic,
                        key_separator,
                        acks,
                        partition,
                        print_offsets,
                        delivery_timeout_ms,
                        request_timeout_ms,
                    },
                )
                .await
            }
            Command::Consume {
                topic,
                from_beginning,
                offset,
                group: Some(group),
                instance_id,
                delivery,
                commit_interval_ms,
                verbose,
                from_time,
                partition: _,
                count,
                follow,
                format,
                isolation,
                client,
            } => {
                let format = consume::format(format, client.json)?;
                let start = match (from_beginning, from_time) {
                    (_, Some(t)) => SeekTo::Timestamp(time::parse_rfc3339_ms(&t)?),
                    (true, None) => SeekTo::Beginning,
                    (false, None) => SeekTo::End,
                };
                let _ = offset; // refused by clap beside --group
                consume_group::run(
                    &client,
                    consume_group::GroupArgs {
                        topic,
                        group,
                        start,
                        instance_id,
                        delivery,
                        commit_interval_ms,
                        count,
                        follow,
                        format,
                        verbose,
                        isolation: isolation.into(),
                    },
                )
                .await
            }
            Command::Consume {
                topic,
                from_beginning: _,
                offset,
                group: None,
                instance_id: _,
                delivery: _,
                commit_interval_ms: _,
                verbose: _,
                from_time,
                partition,
                count,
                follow,
                format,
                isolation,
                client,
            } => {
                let format = consume::format(format, client.json)?;
                let start = match (offset, from_time) {
                    (Some(o), _) => SeekTo::Offset(o),
                    (None, Some(t)) => SeekTo::Timestamp(time::parse_rfc3339_ms(&t)?),
                    (None, None) => SeekTo::Beginning,
                };
                consume::run(
                    &client,
                    consume::ConsumeArgs {
                        topic,
                        start,
                        partition,
                        count,
                        follow,
                        format,
                        isolation: isolation.into(),
                    },
                )
                .await
            }
            Command::Group { command, client } => match command {
                GroupCommand::List => group::list(&client).await,
                GroupCommand::Describe { group } => group::describe(&client, &group).await,
                GroupCommand::Delete { group, force } => group::delete(&client, &group, force).await,
                GroupCommand::AlterConfig { group, set } => {
                    group::alter_config(&client, &group, &set).await
                }
                GroupCommand::ResetOffsets {
                    group,
                    topic,
                    partition,
                    to_earliest,
                    to_latest,
                    to_time,
                    to_offset,
                    shift_by,
                    dry_run,
                    force,
                } => {
                    let to = match (to_earliest, to_latest, to_time, to_offset, shift_by) {
                        (true, ..) => group::ResetTo::Earliest,
                        (_, true, ..) => group::ResetTo::Latest,
                        (_, _, Some(t), ..) => group::ResetTo::Time(time::parse_rfc3339_ms(&t)?),
                        (_, _, _, Some(o), _) => group::ResetTo::Offset(o),
                        (_, _, _, _, Some(d)) => group::ResetTo::ShiftBy(d),
                        _ => return Err("choose where to: --to-earliest, --to-latest, --to-time, --to-offset or --shift-by".into()),
                    };
                    group::reset_offsets(
                        &client,
                        group::ResetArgs {
                            group,
                            topic,
                            partition,
                            to,
                            dry_run,
                            force,
                        },
                    )
                    .await
                }
            },
            Command::Dlq {
                command: DlqCommand::Replay { group, topic },
                client,
            } => dlq::replay(&client, &group, topic.as_deref()).await,
            Command::Offsets { topic, client } => topic::offsets(&client, &topic).await,
            Command::Cluster {
                command: ClusterCommand::Info,
                client,
            } => topic::cluster_info(&client).await,
            Command::Cluster {
                command: ClusterCommand::Status,
                client,
            } => cluster_status::status(&client).await,
            Command::Cluster {
                command:
                    ClusterCommand::TransferLeadership {
                        topic,
                        partition,
                        to,
                        wait,
                    },
                client,
            } => cluster_ops::transfer_leadership(&client, &topic, partition, to, wait.wait()).await,
            Command::Cluster {
                command: ClusterCommand::Decommission { node, wait },
                client,
            } => cluster_ops::decommission(&client, node, wait.wait()).await,
            Command::Bench {
                command: BenchCommand::Run(args),
            } => bench_cmd::run_workload(*args).await,
            Command::Serve { .. }
            | Command::ConfigReference
            | Command::Bench { .. }
            | Command::Dev { .. } => Ok(()),
        }
    });
    // Do not wait for a blocked read of stdin (produce stops reading at its first failure)
    // or any other blocking task: the command's work is done.
    rt.shutdown_background();
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, flags } => serve_command(config, flags),
        Command::Dev {
            command:
                DevCommand::Cluster {
                    nodes,
                    shards,
                    base_port,
                    data_dir,
                },
        } => dev_cluster::run(nodes, shards, base_port, data_dir).map_err(|e| (1, e)),
        Command::ConfigReference => {
            print!("{}", serve::config_reference_markdown());
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Floor {
                    message_size,
                    samples,
                    hiccup_s,
                    busy_s,
                    data_dir,
                    out,
                },
        } => bench_cmd::floor(message_size, samples, hiccup_s, busy_s, &data_dir, &out)
            .map_err(|e| (1, e)),
        other => client_command(other).map_err(|e| (1, e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("error: {e}");
            ExitCode::from(code as u8)
        }
    }
}
