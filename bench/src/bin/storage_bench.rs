//! The storage engine against the raw disk, measured in the same run (ratios, medians).
//!
//! ```text
//! cargo run --release -p quiver-bench --bin storage_bench -- [--quick] [--dir DIR] [--out FILE]
//! ```
//!
//! 1. Throughput: 1 KiB records in 64 KiB batches appended to a `PartitionLog` (32 appends in
//!    flight by default, `flush_bytes` policy) vs a raw `DmaFile` sequential write of the same bytes.
//! 2. Latency: one appender, fsync per batch (1 KiB batch) vs raw 4 KiB write + fdatasync.
//! 3. Group commit: batches/s with 16 concurrent fsync-per-batch appenders vs one.
//! 4. Peak RSS of a child process appending 4 GiB with a 64 MiB cache bound.
//!
//! Prints a table and writes JSON (default `perf/results/storage.json`).

use quiver_bench::harness::median;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use glommio::io::{DmaFile, OpenOptions};
use hdrhistogram::Histogram;
use quiver_batch::{BatchBuilder, NewRecord};
use quiver_storage::{FlushPolicy, LogConfig, PartitionLog};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// Smaller sizes, for a quick look (not for recorded figures).
    #[arg(long)]
    quick: bool,
    /// Scratch directory on the disk under test (must support O_DIRECT).
    #[arg(long, default_value = "target/bench-scratch")]
    dir: PathBuf,
    /// Where to write the JSON report.
    #[arg(long, default_value = "perf/results/storage.json")]
    out: PathBuf,
    /// Repetitions of each measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Appends in flight in the throughput test (a producer with several requests out).
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Internal: run the RSS child (append this many bytes, print VmHWM) and exit.
    #[arg(long, hide = true)]
    rss_child_bytes: Option<u64>,
}

const RECORD_BYTES: usize = 1024;
const BATCH_BYTES: usize = 64 << 10;

fn batch_of(records: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        b.push(&NewRecord::value(
            vec![(i % 251) as u8; RECORD_BYTES],
            1_700_000_000_000,
        ));
    }
    b.build().freeze()
}

/// Records that fill a 64 KiB batch.
fn batch_64k() -> Bytes {
    let mut n = 1;
    while batch_of(n + 1).len() <= BATCH_BYTES {
        n += 1;
    }
    batch_of(n)
}

fn executor() -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("glommio executor")
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("scratch dir");
    p
}

/// A new raw O_DIRECT file in `dir` (any previous one removed).
async fn raw_file(dir: &Path, name: &str) -> (DmaFile, PathBuf) {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .dma_open(&path)
        .await
        .expect("raw file");
    (f, path)
}

/// Writes `total` bytes of `byte` from offset 0 in `write_bytes` writes, depth 1, then syncs.
async fn write_sequential(f: &DmaFile, total: u64, write_bytes: usize, byte: u8) {
    let mut pos = 0;
    while pos < total {
        let mut buf = f.alloc_dma_buffer(write_bytes);
        buf.as_bytes_mut().fill(byte);
        f.write_at(buf, pos).await.expect("raw write");
        pos += write_bytes as u64;
    }
    f.fdatasync().await.expect("raw sync");
}

/// Raw DmaFile sequential write of `total` bytes in `write_bytes` writes, depth 1. MB/s.
async fn raw_throughput(dir: &Path, total: u64, write_bytes: usize) -> f64 {
    let (f, path) = raw_file(dir, "raw.bin").await;
    let start = Instant::now();
    write_sequential(&f, total, write_bytes, 7).await;
    let secs = start.elapsed().as_secs_f64();
    f.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
    total as f64 / secs / 1e6
}

/// Appends `total` bytes of 64 KiB batches with `in_flight` appends outstanding. MB/s.
async fn log_throughput(
    dir: &Path,
    total: u64,
    in_flight: usize,
    cache_bytes: usize,
) -> (f64, PartitionLog) {
    let cfg = LogConfig {
        flush: FlushPolicy::Interval {
            flush_ms: 1000,
            flush_bytes: 64 << 20,
        },
        cache_bytes,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir, cfg).await.expect("open log");
    let template = batch_64k();
    let written = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (log, template, written) = (log.clone(), template.clone(), written.clone());
            glommio::spawn_local(async move {
                while written.get() < total {
                    written.set(written.get() + template.len() as u64);
                    log.append(BytesMut::from(&template[..]), 0)
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    log.flush().await.expect("flush");
    let secs = start.elapsed().as_secs_f64();
    (written.get() as f64 / secs / 1e6, log)
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50_us": h.value_at_quantile(0.50), "p90_us": h.value_at_quantile(0.90),
        "p99_us": h.value_at_quantile(0.99), "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(), "count": h.len(),
    })
}

/// Raw 4 KiB write + fdatasync, depth 1. `overwrite`: into blocks written and synced
/// beforehand (no metadata to journal: the strictest floor); else extending the file.
async fn raw_sync_latency(dir: &Path, samples: usize, overwrite: bool) -> Histogram<u64> {
    let (f, path) = raw_file(dir, "raw-sync.bin").await;
    if overwrite {
        write_sequential(
            &f,
            (samples as u64 * 4096).next_multiple_of(1 << 20),
            1 << 20,
            1,
        )
        .await;
    }
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..samples {
        let mut buf = f.alloc_dma_buffer(4096);
        buf.as_bytes_mut().fill(9);
        let t = Instant::now();
        f.write_at(buf, i as u64 * 4096).await.expect("write");
        f.fdatasync().await.expect("sync");
        h.record(t.elapsed().as_micros() as u64).expect("record");
    }
    f.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
    h
}

/// One appender, fsync per append, 1 KiB-record batches.
async fn log_sync_latency(dir: &Path, samples: usize) -> Histogram<u64> {
    let log = PartitionLog::open(dir, LogConfig::default())
        .await
        .expect("open log");
    let template = batch_of(1);
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..samples {
        let t = Instant::now();
        log.append(BytesMut::from(&template[..]), 0)
            .await
            .expect("append");
        h.record(t.elapsed().as_micros() as u64).expect("record");
    }
    log.close().await.expect("close");
    h
}

/// Batches/s with `appenders` concurrent fsync-per-append appenders for `duration`.
async fn group_commit_rate(dir: &Path, appenders: usize, duration: Duration) -> (f64, f64) {
    let log = PartitionLog::open(dir, LogConfig::default())
        .await
        .expect("open log");
    let template = batch_of(1);
    let done = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let workers: Vec<_> = (0..appenders)
        .map(|_| {
            let (log, template, done) = (log.clone(), template.clone(), done.clone());
            glommio::spawn_local(async move {
                while Instant::now() < deadline {
                    log.append(BytesMut::from(&template[..]), 0)
                        .await
                        .expect("append");
                    done.set(done.get() + 1);
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = log.stats();
    log.close().await.expect("close");
    (
        done.get() as f64 / secs,
        stats.appends as f64 / stats.fdatasyncs.max(1) as f64,
    )
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_child(dir: PathBuf, bytes: u64) {
    executor().run(async move {
        let d = fresh(&dir, "rss");
        let (mbps, log) = log_throughput(&d, bytes, 16, 64 << 20).await;
        let cache = log.cache_bytes();
        log.close().await.expect("close");
        println!("{} {mbps:.1} {cache}", vm_hwm_kib());
        let _ = std::fs::remove_dir_all(&d);
    });
}

fn main() {
    let args = Args::parse();
    if let Some(bytes) = args.rss_child_bytes {
        rss_child(args.dir, bytes);
        return;
    }
    let (total, samples, rss_bytes) = if args.quick {
        (256u64 << 20, 1000, 512u64 << 20)
    } else {
        (2u64 << 30, 5000, 4u64 << 30)
    };
    std::fs::create_dir_all(&args.dir).expect("scratch dir");
    let dir = args.dir.clone();
    let reps = args.reps.max(1);
    let in_flight = args.in_flight.max(1);
    let report = executor().run(async move {
        let (mut raw_1m, mut raw_64k, mut quiver_mbps) = (vec![], vec![], vec![]);
        let (mut raw_p99, mut raw_ext_p99, mut log_p99, mut ratio_p99) = (vec![], vec![], vec![], vec![]);
        let (mut one, mut sixteen, mut merge) = (vec![], vec![], vec![]);
        let (mut last_raw_h, mut last_log_h) = (None, None);
        for rep in 0..reps {
            eprintln!("rep {}/{reps}: throughput", rep + 1);
            raw_1m.push(raw_throughput(&dir, total, 1 << 20).await);
            raw_64k.push(raw_throughput(&dir, total, 64 << 10).await);
            let (mbps, log) = log_throughput(&fresh(&dir, "tput"), total, in_flight, 64 << 20).await;
            log.close().await.expect("close");
            quiver_mbps.push(mbps);
            eprintln!("rep {}/{reps}: fsync latency", rep + 1);
            let r = raw_sync_latency(&dir, samples, true).await;
            raw_ext_p99.push(raw_sync_latency(&dir, samples, false).await.value_at_quantile(0.99) as f64);
            let l = log_sync_latency(&fresh(&dir, "lat"), samples).await;
            raw_p99.push(r.value_at_quantile(0.99) as f64);
            log_p99.push(l.value_at_quantile(0.99) as f64);
            ratio_p99.push(l.value_at_quantile(0.99) as f64 / r.value_at_quantile(0.99) as f64);
            last_raw_h = Some(r);
            last_log_h = Some(l);
            eprintln!("rep {}/{reps}: group commit", rep + 1);
            let (r1, _) = group_commit_rate(&fresh(&dir, "gc1"), 1, Duration::from_secs(3)).await;
            let (r16, m) = group_commit_rate(&fresh(&dir, "gc16"), 16, Duration::from_secs(3)).await;
            one.push(r1);
            sixteen.push(r16);
            merge.push(m);
        }
        let _ = std::fs::remove_dir_all(dir.join("tput"));
        let quiver = median(quiver_mbps.clone());
        let raw = median(raw_1m.clone());
        json!({
            "throughput": {
                "record_bytes": RECORD_BYTES, "batch_bytes": BATCH_BYTES, "total_bytes": total, "appends_in_flight": in_flight,
                "raw_dma_1mib_writes_mbps": raw_1m, "raw_dma_64kib_writes_mbps": raw_64k, "quiver_append_mbps": quiver_mbps,
                "median_quiver_mbps": quiver, "median_raw_1mib_mbps": raw,
                "ratio_quiver_vs_raw_1mib": quiver / raw,
                "ratio_quiver_vs_raw_64kib": quiver / median(raw_64k.clone()),
                "goal": "ratio_quiver_vs_raw >= 0.8",
            },
            "fsync_latency": {
                "samples_per_rep": samples,
                "raw_4kib_overwrite_fdatasync_p99_us": raw_p99, "raw_4kib_extending_write_fdatasync_p99_us": raw_ext_p99,
                "quiver_append_fsync_p99_us": log_p99,
                "median_ratio_p99": median(ratio_p99),
                "last_rep_raw": percentiles(last_raw_h.as_ref().expect("one rep")),
                "last_rep_quiver": percentiles(last_log_h.as_ref().expect("one rep")),
                "goal": "median_ratio_p99 <= 1.3",
            },
            "group_commit": {
                "one_appender_batches_per_s": one, "sixteen_appenders_batches_per_s": sixteen,
                "appends_per_fdatasync_with_16": merge,
                "median_ratio_16_vs_1": median(sixteen.clone()) / median(one.clone()),
                "goal": "median_ratio_16_vs_1 >= 5",
            },
        })
    });
    eprintln!(
        "peak RSS: child appending {} MiB with a 64 MiB cache",
        rss_bytes >> 20
    );
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args(["--rss-child-bytes", &rss_bytes.to_string(), "--dir"])
        .arg(&args.dir)
        .output()
        .expect("rss child");
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let (hwm_kib, child_mbps, cache) = (
        fields.first().copied().unwrap_or(0.0),
        fields.get(1).copied().unwrap_or(0.0),
        fields.get(2).copied().unwrap_or(0.0),
    );
    let mut report = report;
    report["peak_rss"] = json!({
        "appended_bytes": rss_bytes, "cache_bound_bytes": 64u64 << 20, "vm_hwm_mib": hwm_kib / 1024.0,
        "margin_over_cache_mib": hwm_kib / 1024.0 - 64.0, "append_mbps": child_mbps, "cache_bytes_at_end": cache,
        "goal": "vm_hwm_mib <= 64 + 64",
    });
    report["machine"] = json!({ "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "quick": args.quick, "reps": reps });
    let _ = std::fs::remove_dir_all(&args.dir);
    print_table(&report);
    quiver_bench::harness::write_report(&args.out, &report);
}

fn print_table(r: &serde_json::Value) {
    let f = |p: &str| r.pointer(p).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    println!("| measurement | Quiver | raw disk | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!("| append throughput, 1 KiB records in 64 KiB batches (MB/s, median) | {:.0} | {:.0} (1 MiB DmaFile writes) | {:.2} | >= 0.8 |",
        f("/throughput/median_quiver_mbps"), f("/throughput/median_raw_1mib_mbps"), f("/throughput/ratio_quiver_vs_raw_1mib"));
    println!("| append + fsync p99, 1 appender (µs, last rep) | {:.0} | {:.0} (4 KiB overwrite + fdatasync) | {:.2} (median of reps) | <= 1.3 |",
        f("/fsync_latency/last_rep_quiver/p99_us"), f("/fsync_latency/last_rep_raw/p99_us"), f("/fsync_latency/median_ratio_p99"));
    println!(
        "| group commit: 16 appenders vs 1 (batches/s ratio, median) | | | {:.1} | >= 5 |",
        f("/group_commit/median_ratio_16_vs_1")
    );
    println!("| peak RSS appending {:.0} MiB, 64 MiB cache (MiB) | {:.0} | | margin {:.0} MiB | <= cache + 64 |",
        f("/peak_rss/appended_bytes") / 1048576.0, f("/peak_rss/vm_hwm_mib"), f("/peak_rss/margin_over_cache_mib"));
}
