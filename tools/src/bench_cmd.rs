//! `quiver bench WORKLOAD` (the OMB-style latency harness, against a node or an embedded one)
//! and `quiver bench floor` (this machine's QUIC echo and write+fdatasync floor).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use quiver_bench::latency::pacer::Pacing;
use quiver_bench::latency::quiver::QuiverDriver;
use quiver_bench::latency::recorder::{hgrm, summary, svg_plot, Metric, METRICS};
use quiver_bench::latency::runner::{run, RunResult};
use quiver_bench::latency::workload::Workload;
use serde_json::json;

use crate::connect::ClientArgs;

pub struct BenchArgs {
    pub workload: PathBuf,
    pub embedded: bool,
    pub rate: Option<u64>,
    pub duration_s: Option<u64>,
    pub out: PathBuf,
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

fn start_embedded() -> Result<(EmbeddedNode, String, PathBuf), String> {
    let dir = tempfile::Builder::new()
        .prefix("quiver-bench-")
        .tempdir_in(".")
        .map_err(|e| format!("temporary data dir: {e}"))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = (cpus - 1).max(1); // leave a core to the load generator
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| e.to_string())?
        .port()
        .min(30_000);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--shards",
            &shards.to_string(),
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

fn write_outputs(
    out: &Path,
    name: &str,
    result: &RunResult,
    extra: serde_json::Value,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut report = result.report.clone();
    report["run"] = extra;
    let base = out.join(format!("{name}-quiver"));
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    )
    .map_err(|e| e.to_string())?;
    let mut plotted = Vec::new();
    for (m, metric) in METRICS {
        let h = result.recorder.total(m);
        std::fs::write(out.join(format!("{name}-quiver-{metric}.hgrm")), hgrm(&h))
            .map_err(|e| e.to_string())?;
        plotted.push((metric, h));
    }
    std::fs::write(
        base.with_extension("svg"),
        svg_plot(&format!("{name}: latency by percentile (quiver)"), &plotted),
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
        "published {:.0} msg/s ({:.1} MB/s), consumed {:.0} msg/s, target {} msg/s, errors {}",
        r["published_msgs_per_s"].as_f64().unwrap_or(0.0),
        r["published_mb_per_s"].as_f64().unwrap_or(0.0),
        r["consumed_msgs_per_s"].as_f64().unwrap_or(0.0),
        result.rate_target,
        r["errors"]
    );
}

pub async fn run_workload(client_args: &ClientArgs, b: BenchArgs) -> Result<(), String> {
    let mut workload = Workload::load(&b.workload)?;
    if let Some(d) = b.duration_s {
        workload.test_duration_s = d;
    }
    let (_node, client_args) = if b.embedded {
        let (node, broker, data) = start_embedded()?;
        eprintln!("embedded node at {broker}");
        (
            Some(node),
            ClientArgs {
                broker,
                node_data_dir: data,
                ..client_args.clone()
            },
        )
    } else {
        (None, client_args.clone())
    };
    let client = client_args.connect().await?;
    let driver: Arc<dyn quiver_bench::latency::driver::Driver> = Arc::new(QuiverDriver { client });
    let rate = b.rate.unwrap_or(workload.producer_rate);
    let total_s = workload.warmup_duration_s + workload.test_duration_s;
    let progress = move |line: String| eprintln!("{line}");
    if rate > 0 {
        eprintln!(
            "{}: {rate} msg/s for {} s after {} s of warm-up",
            workload.name, workload.test_duration_s, workload.warmup_duration_s
        );
        let result = run(
            driver,
            &workload,
            rate,
            Pacing::Precise,
            Duration::from_secs(10.min(total_s.max(1))),
            progress,
        )
        .await?;
        print_summary(&result);
        return write_outputs(
            &b.out,
            &workload.name,
            &result,
            json!({"embedded": b.embedded, "rate": rate}),
        );
    }
    // Max-rate discovery: raise the rate until p99 end-to-end passes max_p99_ms or the producer
    // cannot keep up.
    let max_p99_us = workload.max_p99_ms.unwrap_or(10) * 1000;
    let (mut rate, mut best): (u64, Option<(u64, RunResult)>) = (5_000, None);
    loop {
        eprintln!("max-rate: trying {rate} msg/s");
        let result = run(
            driver.clone(),
            &workload,
            rate,
            Pacing::Precise,
            Duration::from_secs(10),
            progress,
        )
        .await?;
        let p99 = result
            .recorder
            .total(Metric::EndToEnd)
            .value_at_quantile(0.99);
        let achieved = result.report["published_msgs_per_s"]
            .as_f64()
            .unwrap_or(0.0);
        eprintln!("max-rate: {rate} msg/s -> published {achieved:.0} msg/s, e2e p99 {p99} µs");
        if p99 > max_p99_us || achieved < 0.95 * rate as f64 {
            break;
        }
        best = Some((rate, result));
        rate = rate * 3 / 2;
    }
    let Some((best_rate, result)) = best else {
        return Err(format!(
            "even 5000 msg/s missed p99 < {} ms",
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
        &result,
        json!({"embedded": b.embedded, "max_rate_msgs": best_rate, "max_p99_ms": max_p99_us / 1000}),
    )
}

/// `quiver bench floor`: QUIC echo round trip of `size` bytes and raw write+fdatasync.
pub fn floor(size: usize, samples: usize, data_dir: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let tls_dir = tempfile::tempdir_in(data_dir).map_err(|e| e.to_string())?;
    let fsync = quiver_bench::floor::raw_fsync_histogram(data_dir, samples);
    let addr = quiver_bench::floor::start_echo(tls_dir.path().to_path_buf());
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
    let report = json!({"message_size": size, "samples": samples, "quic_echo": summary(&echo), "write_fdatasync_4k": summary(&fsync),
        "floor_p99_us": echo.value_at_quantile(0.99) + fsync.value_at_quantile(0.99)});
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
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("floor.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}
