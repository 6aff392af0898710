//! Log compaction against the raw disk, in one run (medians of `--reps`):
//!
//! 1. Raw: sequential O_DIRECT writes of 1 MiB, depth 1, then fdatasync — MB/s.
//! 2. Compaction: a log of `--mb` MiB of 1 KiB records over `--keys` keys (compact policy,
//!    8 MiB segments, written with interval flushing); one pass timed. Throughput is the
//!    sealed bytes the pass covered per second (it reads them twice — map, then rewrite —
//!    and writes what survives).
//! 3. Produce latency beside it: a second log takes one 1 KiB batch every `1/--rate` s,
//!    fsync per append (the default), without and then with a compaction pass running on
//!    the background task queue (fewer shares, as in the node). p99 with / without.
//!
//! ```text
//! cargo build --release -p quiver-bench
//! target/release/compaction_bench [--mb 128] [--reps 3] [--out perf/results/compaction.json]
//! ```

use quiver_bench::harness::median;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use glommio::io::{DmaFile, OpenOptions};
use glommio::{Latency, Shares};
use hdrhistogram::Histogram;
use quiver_batch::{BatchBuilder, NewRecord};
use quiver_storage::{CleanupPolicy, FlushPolicy, LogConfig, PartitionLog};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// MiB of records in the compacted log.
    #[arg(long, default_value_t = 128)]
    mb: u64,
    /// Distinct keys among them.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Appends per second of the latency probe.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value = "perf/results/compaction.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench-compaction")]
    dir: PathBuf,
}

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("scratch dir");
    p
}

async fn raw_write_mb_s(dir: &Path, total: u64) -> f64 {
    let path = dir.join("raw.bin");
    let _ = std::fs::remove_file(&path);
    let f: DmaFile = OpenOptions::new()
        .write(true)
        .create(true)
        .dma_open(&path)
        .await
        .expect("raw file");
    let start = Instant::now();
    let mut pos = 0;
    while pos < total {
        let mut buf = f.alloc_dma_buffer(1 << 20);
        buf.as_bytes_mut().fill(7);
        f.write_at(buf, pos).await.expect("raw write");
        pos += 1 << 20;
    }
    f.fdatasync().await.expect("raw sync");
    let secs = start.elapsed().as_secs_f64();
    f.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
    total as f64 / secs / 1e6
}

fn keyed_batch(first: usize, keys: usize) -> BytesMut {
    let mut b = BatchBuilder::new();
    for i in first..first + RECORDS_PER_BATCH {
        b.push(&NewRecord {
            key: Some(Bytes::from(format!("key-{}", i % keys))),
            value: Some(Bytes::from(vec![(i % 251) as u8; RECORD_BYTES])),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
        });
    }
    b.build()
}

/// A compact-policy log filled with `mb` MiB of keyed records (all but the last segment
/// sealed).
async fn filled_log(dir: &Path, mb: u64, keys: usize) -> PartitionLog {
    let cfg = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes: 8 << 20,
        flush: FlushPolicy::Interval {
            flush_ms: 1000,
            flush_bytes: 64 << 20,
        },
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir, cfg)
        .await
        .expect("open compacted log");
    let total = mb << 20;
    let mut written = 0u64;
    let mut i = 0;
    while written < total {
        let b = keyed_batch(i, keys);
        written += b.len() as u64;
        i += RECORDS_PER_BATCH;
        log.append(b, 0).await.expect("append");
    }
    log.flush().await.expect("flush");
    log
}

/// Append latencies (µs) of one small batch every `1/rate` s until `until()` says stop
/// (and at least `min_samples` were taken).
async fn probe(
    log: &PartitionLog,
    rate: u64,
    min_samples: usize,
    until: impl Fn() -> bool,
) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let period = Duration::from_micros(1_000_000 / rate.max(1));
    let mut next = Instant::now();
    let template = {
        let mut b = BatchBuilder::new();
        b.push(&NewRecord::value(
            vec![1u8; RECORD_BYTES],
            1_700_000_000_000,
        ));
        b.build()
    };
    while (h.len() as usize) < min_samples || !until() {
        let now = Instant::now();
        if next > now {
            glommio::timer::sleep(next - now).await;
        }
        next += period;
        let start = Instant::now();
        log.append(template.clone(), 0).await.expect("probe append");
        let _ = h.record(start.elapsed().as_micros() as u64);
    }
    h
}

fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).expect("bench dir");
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("glommio executor");
    let (dir, out) = (args.dir.clone(), args.out.clone());
    let result = ex.run(async move {
        let background = glommio::executor().create_task_queue(
            Shares::Static(100),
            Latency::NotImportant,
            "background",
        );
        let mut raw = Vec::new();
        let mut compact_mb_s = Vec::new();
        let mut p99_without = Vec::new();
        let mut p99_with = Vec::new();
        let mut removed = 0;
        let mut before_after = (0, 0);
        for rep in 0..args.reps {
            raw.push(raw_write_mb_s(&args.dir, args.mb << 20).await);
            let compacted = filled_log(&fresh(&args.dir, "compacted"), args.mb, args.keys).await;
            let probe_log = PartitionLog::open(fresh(&args.dir, "probe"), LogConfig::default())
                .await
                .expect("probe log");
            // Without: the probe alone for about 3 s.
            let t0 = Instant::now();
            let alone = probe(&probe_log, args.rate, 1_000, || t0.elapsed() > Duration::from_secs(3)).await;
            // With: a compaction pass on the background queue, timed.
            let done = Rc::new(Cell::new(false));
            let pass = {
                let (log, done) = (compacted.clone(), done.clone());
                glommio::spawn_local_into(
                    async move {
                        let start = Instant::now();
                        let out = log.compact(i64::MAX / 2).await.expect("compaction pass");
                        done.set(true);
                        (out, start.elapsed())
                    },
                    background,
                )
                .expect("spawn compaction")
            };
            let beside = probe(&probe_log, args.rate, 1_000, || done.get()).await;
            let (out, took) = pass.await;
            let covered = out.bytes_read as f64 / 2.0; // mapped once, rewritten once
            compact_mb_s.push(covered / took.as_secs_f64() / 1e6);
            removed = out.records_removed;
            before_after = (out.bytes_before, out.bytes_after);
            p99_without.push(alone.value_at_quantile(0.99) as f64);
            p99_with.push(beside.value_at_quantile(0.99) as f64);
            println!(
                "rep {rep}: raw {:.0} MB/s, compaction {:.0} MB/s ({} records removed, {} → {} bytes, {:.2} s), probe p99 {} µs alone, {} µs beside ({} samples)",
                raw[rep], compact_mb_s[rep], out.records_removed, out.bytes_before, out.bytes_after,
                took.as_secs_f64(), alone.value_at_quantile(0.99), beside.value_at_quantile(0.99), beside.len()
            );
            compacted.close().await.expect("close");
            probe_log.close().await.expect("close");
        }
        let (raw_m, comp_m) = (median(raw), median(compact_mb_s));
        let (p_wo, p_w) = (median(p99_without), median(p99_with));
        json!({
            "bench": "compaction",
            "mb": args.mb, "keys": args.keys, "record_bytes": RECORD_BYTES, "reps": args.reps,
            "raw_write_mb_s": raw_m,
            "compaction_mb_s": comp_m,
            "compaction_vs_raw": comp_m / raw_m,
            "records_removed": removed,
            "bytes_before": before_after.0, "bytes_after": before_after.1,
            "probe_rate_per_s": args.rate,
            "probe_p99_us_without": p_wo,
            "probe_p99_us_with": p_w,
            "probe_p99_with_vs_without": p_w / p_wo,
        })
    });
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    quiver_bench::harness::write_report(&out, &result);
    let _ = std::fs::remove_dir_all(&dir);
}
