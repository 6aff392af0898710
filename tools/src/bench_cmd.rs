//! `quiver bench WORKLOAD` (the OMB-style latency harness, against a node or an embedded one)
//! and `quiver bench floor` (this machine's QUIC echo and write+fdatasync floor).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use quiver_bench::latency::driver::Driver;
use quiver_bench::latency::pacer::Pacing;
use quiver_bench::latency::quiver::QuiverDriver;
use quiver_bench::latency::rate_search::RateSearch;
use quiver_bench::latency::recorder::{hgrm, summary, svg_plot, Metric, METRICS};
use quiver_bench::latency::runner::{run, Progress, RunResult};
use quiver_bench::latency::workload::Workload;
use quiver_bench::meters::{self, Watch};
use serde_json::json;

use crate::connect::ClientArgs;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    pub workload: PathBuf,
    /// Start a node with a temporary data directory for the run.
    #[arg(long)]
    pub embedded: bool,
    /// With --embedded: start this many node processes as one local cluster (data in a
    /// temporary directory, one shard each, unpinned: they share the machine with the load
    /// generator) instead of one node; combine with --replication-factor.
    #[arg(long, default_value_t = 1, requires = "embedded")]
    pub nodes: usize,
    /// Messages per second over all producers (overrides the workload; 0 = find the max).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seconds of measurement (overrides the workload).
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Replicas per partition of the run's topics (overrides the workload; against a
    /// cluster: several --broker addresses).
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// Where the JSON report, .hgrm files and the SVG plot go.
    #[arg(long, default_value = "perf/results")]
    pub out: PathBuf,
    /// The system under test: quiver; durable-echo (the design's floor under load: a server in
    /// this process that only writes each request with O_DSYNC and sends it back, placed as
    /// `--embedded` places the node; docs/decisions/0017); or nats (NATS JetStream, in a
    /// build with `--features nats`; see perf/compare.sh).
    #[arg(long, default_value = "quiver")]
    pub system: String,
    /// The NATS server for `--system nats`.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// A label for the report (e.g. the peer's version and durability settings).
    #[arg(long, default_value = "")]
    pub label: String,
    /// The name the output files carry (`<workload>-<name>.json`); default: the system.
    #[arg(long)]
    pub report_as: Option<String>,
    /// A server process (not embedded) whose busy threads' waits for a CPU are reported
    /// beside the load generator's and an embedded node's (`cpu_waits`; instruments builds).
    #[arg(long)]
    pub watch_pid: Option<u32>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A node started for the benchmark in a temporary directory, stopped on drop.
struct EmbeddedNode {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for EmbeddedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local cluster started for the benchmark in a temporary directory, stopped on drop
/// (the nodes before their directory).
struct EmbeddedCluster {
    cluster: crate::dev_cluster::LocalCluster,
    _dir: tempfile::TempDir,
}

fn start_embedded_cluster(nodes: usize) -> Result<(EmbeddedCluster, String, PathBuf), String> {
    let dir = tempfile::Builder::new()
        .prefix("quiver-bench-cluster-")
        .tempdir_in(".")
        .map_err(|e| format!("temporary data dir: {e}"))?;
    let port = quiver_bench::harness::free_udp_ports(10 * nodes)
        .ok_or("no free UDP ports below the ephemeral range for the embedded cluster")?;
    let cluster = crate::dev_cluster::LocalCluster::start(nodes, 1, port, dir.path(), false)?;
    let brokers = cluster.addresses.join(",");
    let data = cluster.first_node_dir.clone();
    Ok((EmbeddedCluster { cluster, _dir: dir }, brokers, data))
}

/// Waits until the cluster takes metadata changes (its controller elected, every node
/// registered): a probe topic of `nodes` replicas is created, within 60 s.
async fn wait_for_cluster(client: &quiver_client::Client, nodes: usize) -> Result<(), String> {
    let admin = quiver_client::Admin::new(client.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rf = i16::try_from(nodes).unwrap_or(i16::MAX);
        match admin
            .create_replicated_topic("bench-cluster-ready", 1, rf, &[])
            .await
        {
            Ok(()) => return Ok(()),
            Err(quiver_client::ClientError::Broker {
                code: quiver_schema::wire::ErrorCode::TopicExists,
                ..
            }) => return Ok(()),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(format!(
                    "the embedded cluster is not ready within 60 s: {e}"
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn start_embedded() -> Result<(EmbeddedNode, String, PathBuf), String> {
    let dir = tempfile::Builder::new()
        .prefix("quiver-bench-")
        .tempdir_in(".")
        .map_err(|e| format!("temporary data dir: {e}"))?;
    let placement = quiver_bench::harness::Placement::of_this_machine();
    // Shards on every CPU but the load generator's.
    let shards = placement.map_or(1, |p| p.cpus - p.first_node_cpu);
    // Not the port 0 trick: the node needs one port per shard, and the kernel hands out
    // ports from its ephemeral range to the load generator's sockets too.
    let port = quiver_bench::harness::free_udp_ports(shards)
        .ok_or("no free UDP ports below the ephemeral range for the embedded node")?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // The load generator (this thread) is pinned after the node has started.
    let node_cpus = match placement {
        Some(p) => [
            "--cores".to_string(),
            format!("{}-{}", p.first_node_cpu, p.cpus - 1),
        ],
        None => ["--shards".to_string(), shards.to_string()],
    };
    let mut child = Command::new(exe)
        .args([
            "serve",
            &node_cpus[0],
            &node_cpus[1],
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the embedded node: {e}"))?;
    if let Some(p) = placement {
        quiver_bench::harness::pin_current_thread(p.load_generator_cpu);
    }
    let stdout = child
        .stdout
        .take()
        .ok_or("no stdout from the embedded node")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l == "ready" => break,
            Ok(_) => {}
            Err(_) => return Err("the embedded node did not start within 60 s".into()),
        }
    }
    let data = dir.path().to_path_buf();
    Ok((
        EmbeddedNode { child, _dir: dir },
        format!("127.0.0.1:{port}"),
        data,
    ))
}

/// Progress on stderr: the 10 s lines always; on a terminal also a bar redrawn every second.
fn progress_printer() -> impl Fn(Progress) + Send + Sync + Copy + 'static {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |p: Progress| match p {
        Progress::Line(line) if tty => eprintln!("\r\x1b[K{line}"),
        Progress::Line(line) => eprintln!("{line}"),
        Progress::Tick {
            elapsed_s,
            total_s,
            warming_up,
            published,
            consumed,
        } if tty => {
            const WIDTH: u64 = 30;
            let done = (elapsed_s.min(total_s) * WIDTH) / total_s.max(1);
            let bar: String = (0..WIDTH)
                .map(|i| if i < done { '#' } else { '.' })
                .collect();
            eprint!(
                "\r\x1b[K[{bar}] {elapsed_s}/{total_s} s {}  published {published}  consumed {consumed}",
                if warming_up { "warm-up" } else { "measuring" }
            );
        }
        Progress::Tick { .. } => {}
    }
}

/// Ends the progress bar's line (on a terminal).
fn end_progress() {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r\x1b[K");
    }
}

fn write_outputs(
    out: &Path,
    name: &str,
    system: &str,
    result: &RunResult,
    extra: serde_json::Value,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut report = result.report.clone();
    report["run"] = extra;
    report["system"] = json!(system);
    let base = out.join(format!("{name}-{system}"));
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    )
    .map_err(|e| e.to_string())?;
    let mut plotted = Vec::new();
    for (m, metric) in METRICS {
        let h = result.recorder.total(m);
        std::fs::write(out.join(format!("{name}-{system}-{metric}.hgrm")), hgrm(&h))
            .map_err(|e| e.to_string())?;
        plotted.push((metric, h));
    }
    std::fs::write(
        base.with_extension("svg"),
        svg_plot(
            &format!("{name}: latency by percentile ({system})"),
            &plotted,
        ),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("wrote {}.json, .svg and .hgrm files", base.display());
    Ok(())
}

fn print_summary(result: &RunResult) {
    println!("| metric | p50 | p90 | p99 | p99.9 | p99.99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for (m, name) in METRICS {
        let s = summary(&result.recorder.total(m));
        let f = |k: &str| format!("{:.3} ms", s[k].as_u64().unwrap_or(0) as f64 / 1000.0);
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            f("p50_us"),
            f("p90_us"),
            f("p99_us"),
            f("p999_us"),
            f("p9999_us"),
            f("max_us")
        );
    }
    let r = &result.report;
    println!(
        "published {:.0} msg/s ({:.1} MB/s), consumed {:.0} msg/s, target {} msg/s, errors {}, unacknowledged at the end {}, unsent {}",
        r["published_msgs_per_s"].as_f64().unwrap_or(0.0),
        r["published_mb_per_s"].as_f64().unwrap_or(0.0),
        r["consumed_msgs_per_s"].as_f64().unwrap_or(0.0),
        result.rate_target,
        r["errors"],
        r["unacknowledged"],
        r["unsent"]
    );
    for c in r["transport"]["connections"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "transport to {} since it connected: path MTU {} bytes, {} datagrams sent in {} calls, {} received in {} calls, {} packets lost",
            c["broker"].as_str().unwrap_or("?"),
            c["path_mtu_bytes"],
            c["datagrams_sent"],
            c["send_calls"],
            c["datagrams_received"],
            c["receive_calls"],
            c["packets_lost"]
        );
    }
    print_blocks(meters::run_blocks(r));
}

/// Each heading, and the lines under it indented; a heading with no lines under it that
/// ends in `:` is left out (a meter with nothing to say).
fn print_blocks(blocks: Vec<meters::Block>) {
    for (heading, lines) in blocks {
        if lines.is_empty() && heading.ends_with(':') {
            continue;
        }
        println!("{heading}");
        for line in lines {
            println!("  {line}");
        }
    }
}

/// [`run`] with the transport's counters in the report, and, in a build with the machine
/// instruments, the platform's hiccups, the load generator's event-loop lag and the waits
/// for a CPU of the busy threads of `watch` over the same window (after the warm-up).
async fn run_metered(
    driver: Arc<dyn Driver>,
    workload: &Workload,
    rate: u64,
    watch: &[Watch],
    progress_every: Duration,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<RunResult, String> {
    let measure_from = std::time::Instant::now() + Duration::from_secs(workload.warmup_duration_s);
    let machine = meters::RunMeters::start(measure_from, watch);
    let result = run(
        driver.clone(),
        workload,
        rate,
        Pacing::Precise,
        progress_every,
        progress,
    )
    .await;
    let mut report = serde_json::Value::Null;
    machine.stop(&mut report).await;
    let mut result = result?;
    if let serde_json::Value::Object(fields) = report {
        for (k, v) in fields {
            result.report[k] = v;
        }
    }
    result.report["transport"] = driver.transport_report();
    Ok(result)
}

pub async fn run_workload(b: BenchArgs) -> Result<(), String> {
    let client_args = &b.client;
    let report_as = b.report_as.clone().unwrap_or_else(|| b.system.clone());
    let mut workload = Workload::load(&b.workload)?;
    if let Some(d) = b.duration_s {
        workload.test_duration_s = d;
    }
    if let Some(rf) = b.replication_factor {
        workload.replication_factor = rf;
    }
    let mut node = None;
    let mut cluster = None;
    let mut watch = vec![Watch {
        label: "load generator".into(),
        pid: std::process::id(),
    }];
    if let Some(pid) = b.watch_pid {
        watch.push(Watch {
            label: format!("server (pid {pid})"),
            pid,
        });
    }
    if b.watch_pid.is_some() && !meters::BUILT_IN {
        return Err(format!(
            "--watch-pid measures the machine, which this build leaves out; build it in with: {}",
            meters::BUILD_WITH
        ));
    }
    let mut echo_dir = None;
    let driver: Arc<dyn Driver> = match b.system.as_str() {
        "quiver" => {
            let client_args = if b.embedded && b.nodes > 1 {
                let (embedded, brokers, data) = start_embedded_cluster(b.nodes)?;
                eprintln!("embedded cluster of {} nodes at {brokers}", b.nodes);
                for (i, pid) in embedded.cluster.pids().into_iter().enumerate() {
                    watch.push(Watch {
                        label: format!("node {}", i + 1),
                        pid,
                    });
                }
                cluster = Some(embedded);
                ClientArgs {
                    broker: brokers,
                    node_data_dir: data,
                    ..client_args.clone()
                }
            } else if b.embedded {
                let (embedded, broker, data) = start_embedded()?;
                eprintln!("embedded node at {broker}");
                watch.push(Watch {
                    label: "node".into(),
                    pid: embedded.child.id(),
                });
                node = Some(embedded);
                ClientArgs {
                    broker,
                    node_data_dir: data,
                    ..client_args.clone()
                }
            } else {
                client_args.clone()
            };
            let client = client_args.connect().await?;
            if cluster.is_some() {
                wait_for_cluster(&client, b.nodes).await?;
            }
            Arc::new(QuiverDriver::new(client))
        }
        "durable-echo" => {
            let (driver, dir) = start_durable_echo()?;
            echo_dir = Some(dir);
            driver
        }
        "nats" => nats_driver(&b.nats_url).await?,
        other => {
            return Err(format!(
                "unknown --system {other:?}: use quiver, durable-echo or nats"
            ))
        }
    };
    let _node = node;
    let _cluster = cluster;
    let _echo_dir = echo_dir;
    let run_info = |extra: serde_json::Value| {
        let mut v = json!({"embedded": (b.embedded && b.system == "quiver") || b.system == "durable-echo", "label": b.label, "driver": b.system,
            "pacing": "timerfd (100 µs)"});
        if let (Some(to), Some(from)) = (v.as_object_mut(), extra.as_object()) {
            to.extend(from.clone());
        }
        v
    };
    let rate = b.rate.unwrap_or(workload.producer_rate);
    let total_s = workload.warmup_duration_s + workload.test_duration_s;
    let progress = progress_printer();
    if rate > 0 {
        eprintln!(
            "{}: {rate} msg/s for {} s after {} s of warm-up",
            workload.name, workload.test_duration_s, workload.warmup_duration_s
        );
        let result = run_metered(
            driver,
            &workload,
            rate,
            &watch,
            Duration::from_secs(10.min(total_s.max(1))),
            progress,
        )
        .await?;
        end_progress();
        print_summary(&result);
        return write_outputs(
            &b.out,
            &workload.name,
            &report_as,
            &result,
            run_info(json!({"rate": rate})),
        );
    }
    // Max-rate discovery: double the rate until p99 end-to-end passes max_p99_ms or the
    // producers cannot keep the pace, then bisect (RateSearch).
    let max_p99_us = workload.max_p99_ms.unwrap_or(10) * 1000;
    let mut search = RateSearch::new(workload.start_rate);
    let mut best: Option<RunResult> = None;
    let mut steps = Vec::new();
    while let Some(rate) = search.next_rate() {
        eprintln!("max-rate: trying {rate} msg/s");
        let result = run_metered(
            driver.clone(),
            &workload,
            rate,
            &watch,
            Duration::from_secs(10),
            progress,
        )
        .await?;
        end_progress();
        let p99 = result
            .recorder
            .total(Metric::EndToEnd)
            .value_at_quantile(0.99);
        let achieved = result.report["published_msgs_per_s"]
            .as_f64()
            .unwrap_or(0.0);
        let held = p99 <= max_p99_us
            && achieved >= 0.95 * rate as f64
            && result.report["errors"].as_u64() == Some(0)
            && result.report["unacknowledged"].as_u64() == Some(0)
            && result.report["unsent"].as_u64() == Some(0);
        eprintln!(
            "max-rate: {rate} msg/s -> published {achieved:.0} msg/s, e2e p99 {p99} µs: {}",
            if held { "held" } else { "missed" }
        );
        steps.push(json!({"rate": rate, "published_msgs_per_s": achieved, "e2e_p99_us": p99, "held": held}));
        search.record(rate, held);
        if held && search.best() == Some(rate) {
            best = Some(result);
        }
    }
    let (Some(best_rate), Some(result)) = (search.best(), best) else {
        return Err(format!(
            "no rate tried kept p99 end-to-end < {} ms (steps: {steps:?})",
            max_p99_us / 1000
        ));
    };
    println!(
        "max sustainable rate with p99 end-to-end < {} ms: {best_rate} msg/s",
        max_p99_us / 1000
    );
    print_summary(&result);
    write_outputs(
        &b.out,
        &workload.name,
        &report_as,
        &result,
        run_info(
            json!({"max_rate_msgs": best_rate, "max_p99_ms": max_p99_us / 1000, "steps": steps}),
        ),
    )
}

#[cfg(feature = "nats")]
async fn nats_driver(url: &str) -> Result<Arc<dyn Driver>, String> {
    Ok(Arc::new(
        quiver_bench::latency::nats::NatsDriver::connect(url).await?,
    ))
}

#[cfg(not(feature = "nats"))]
async fn nats_driver(_url: &str) -> Result<Arc<dyn Driver>, String> {
    Err(
        "this quiver was built without the NATS driver: build it with \
         `cargo build --release -p quiver --features nats` (perf/compare.sh does)"
            .to_string(),
    )
}

/// Starts `--system durable-echo`'s server in this process, on the CPU an embedded node would
/// get (its file in a temporary directory here, as the embedded node's data), and pins the
/// load generator as `--embedded` does.
fn start_durable_echo() -> Result<(Arc<dyn Driver>, tempfile::TempDir), String> {
    use quiver_bench::latency::durable_echo::{start_server, DurableEchoDriver};
    let dir = tempfile::Builder::new()
        .prefix("quiver-bench-echo-")
        .tempdir_in(".")
        .map_err(|e| format!("temporary directory for the durable echo: {e}"))?;
    let placement = quiver_bench::harness::Placement::of_this_machine();
    let addr = start_server(
        dir.path().to_path_buf(),
        placement.map(|p| p.first_node_cpu),
    )?;
    if let Some(p) = placement {
        quiver_bench::harness::pin_current_thread(p.load_generator_cpu);
    }
    eprintln!("durable echo at {addr}");
    let driver = DurableEchoDriver::new(addr, dir.path().to_path_buf());
    Ok((Arc::new(driver), dir))
}

/// `quiver bench floor`: QUIC echo round trip of `size` bytes, raw write+fdatasync, and
/// `hiccup_s` seconds of the idle machine's hiccups and `busy_s` seconds of what busy CPUs
/// lose.
pub fn floor(
    size: usize,
    samples: usize,
    hiccup_s: Option<u64>,
    busy_s: Option<u64>,
    data_dir: &Path,
    out: &Path,
) -> Result<(), String> {
    if !meters::BUILT_IN && (hiccup_s.is_some() || busy_s.is_some()) {
        return Err(format!(
            "--hiccup-s and --busy-s measure the machine, which this build leaves out; build it in with: {}",
            meters::BUILD_WITH
        ));
    }
    let (hiccup_s, busy_s) = (hiccup_s.unwrap_or(10), busy_s.unwrap_or(5));
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let tls_dir = tempfile::tempdir_in(data_dir).map_err(|e| e.to_string())?;
    // Placed as `--embedded` places the node and the load generator: the floor's messages
    // take the same CPUs, and pay the same wake-ups, as the benchmark's.
    let placement = quiver_bench::harness::Placement::of_this_machine();
    let server_cpu = placement.map(|p| p.first_node_cpu);
    let fsync = quiver_bench::floor::raw_fsync_histogram(data_dir, samples, server_cpu)?;
    let addr = quiver_bench::floor::start_echo(tls_dir.path().to_path_buf(), server_cpu)?;
    if let Some(p) = placement {
        quiver_bench::harness::pin_current_thread(p.load_generator_cpu);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let echo = rt.block_on(quiver_bench::floor::echo_histogram(
        addr,
        tls_dir.path().to_path_buf(),
        size,
        samples,
    ));
    let mut report = json!({"message_size": size, "samples": samples, "quic_echo": summary(&echo), "write_fdatasync_4k": summary(&fsync),
        "floor_p99_us": echo.value_at_quantile(0.99) + fsync.value_at_quantile(0.99),
        "placement": placement.map(|p| json!({"echo_client_cpu": p.load_generator_cpu, "server_cpu": p.first_node_cpu}))});
    meters::measure_floor(hiccup_s, busy_s, &mut report);
    println!("| floor | p50 | p99 | p99.9 |\n|---|---|---|---|");
    for (name, h) in [("QUIC echo", &echo), ("write + fdatasync", &fsync)] {
        println!(
            "| {name} | {} µs | {} µs | {} µs |",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
    }
    println!(
        "floor p99 (echo p99 + write+fdatasync p99): {} µs",
        report["floor_p99_us"]
    );
    if let Some(p) = placement {
        println!(
            "placed as `bench run --embedded`: echo client on CPU {}, echo server and disk on CPU {}",
            p.load_generator_cpu, p.first_node_cpu
        );
    }
    print_blocks(meters::floor_blocks(&report));
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("floor.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}
