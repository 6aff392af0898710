//! A node against its floor, in one run (ratios, medians):
//!
//! 1. Raw QUIC echo: the same QUIC server code on one glommio shard answering each request
//!    with a frame of the same size — the transport floor.
//! 2. Produce, acks=leader, no fsync (topic with flush_policy=interval): p99 vs the echo p99.
//! 3. Produce with fsync per batch (the default): p99 vs echo p99 + raw 4 KiB write+fdatasync p99.
//! 4. Single-connection produce throughput with 64 KiB batches, 32 requests in flight.
//! 5. The broker's thread count while it serves.
//!
//! The broker is a real `quiver serve --cores 0` process; the echo server is pinned to CPU 0
//! too; the client (tokio, current thread) runs on CPU 1.
//!
//! ```text
//! cargo build --release -p quiver -p quiver-bench
//! target/release/node_bench [--samples N] [--out perf/results/node.json]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use quiver_batch::{BatchBuilder, NewRecord};
use quiver_bench::floor::{raw_fsync_p99, start_echo};
use quiver_bench::harness::{median, pin_current_thread, start_broker};
use quiver_client::{Connection, TlsTrust};
use quiver_schema::requests;
use quiver_schema::wire::{Acks, ErrorCode};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// Requests per latency measurement.
    #[arg(long, default_value_t = 5000)]
    samples: usize,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds of the throughput test.
    #[arg(long, default_value_t = 5)]
    throughput_secs: u64,
    #[arg(long, default_value = "perf/results/node.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench-node")]
    dir: PathBuf,
}

fn batch(record_bytes: usize, records: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    for _ in 0..records {
        b.push(&NewRecord::value(
            vec![42u8; record_bytes],
            1_700_000_000_000,
        ));
    }
    b.build().freeze()
}

/// Echo, produce acks=leader and produce with fsync, one request of each in turn, so that
/// the VM's noise falls on all three alike; returns their histograms.
async fn interleaved(
    echo: &Connection,
    node: &Connection,
    payload: &Bytes,
    samples: usize,
) -> (Histogram<u64>, Histogram<u64>, Histogram<u64>) {
    let mut hs = [(); 3].map(|_| Histogram::<u64>::new(3).expect("histogram"));
    for i in 0..samples + samples / 10 {
        for (k, (conn, topic, acks)) in [
            (echo, "nosync", Acks::Leader),
            (node, "nosync", Acks::Leader),
            (node, "fsync", Acks::All),
        ]
        .into_iter()
        .enumerate()
        {
            let frame = requests::produce(conn.next_request_id(), topic, 0, acks, 30_000, payload);
            let t = Instant::now();
            let r = conn.request(frame).await.expect("request");
            let us = t.elapsed().as_micros() as u64;
            if let Some(e) = r
                .envelope()
                .body_as_produce_response()
                .and_then(|p| p.single())
                .and_then(|p| p.error())
            {
                panic!("produce failed: {:?} {:?}", e.code(), e.message());
            }
            if i >= samples / 10 {
                hs[k].record(us).expect("record");
            }
        }
    }
    let [e, l, f] = hs;
    (e, l, f)
}

fn pct(h: &Histogram<u64>) -> serde_json::Value {
    json!({"p50_us": h.value_at_quantile(0.5), "p90_us": h.value_at_quantile(0.9), "p99_us": h.value_at_quantile(0.99),
           "p999_us": h.value_at_quantile(0.999), "max_us": h.max(), "count": h.len()})
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn throughput(conn: Arc<Connection>, topic: &str, secs: u64, in_flight: usize) -> f64 {
    let payload = batch(1024, 60); // ~64 KiB
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (conn, payload, topic) = (conn.clone(), payload.clone(), topic.to_string());
        tasks.push(tokio::task::spawn_local(async move {
            let mut bytes = 0u64;
            while Instant::now() < deadline {
                produce_ok(&conn, &topic, &payload).await;
                bytes += payload.len() as u64;
            }
            bytes
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Produces `payload` to partition 0 of `topic` with acks=leader; a failure ends the benchmark.
async fn produce_ok(conn: &Connection, topic: &str, payload: &Bytes) {
    let r = conn
        .request(requests::produce(
            conn.next_request_id(),
            topic,
            0,
            Acks::Leader,
            30_000,
            payload,
        ))
        .await
        .expect("produce");
    assert!(
        r.envelope()
            .body_as_produce_response()
            .and_then(|p| p.single())
            .and_then(|p| p.error())
            .is_none(),
        "produce refused"
    );
}

/// Open-loop produce of 64 KiB batches at `mbps`: each request has an intended send time and
/// its latency counts from then (coordinated omission corrected).
async fn open_loop(conn: Arc<Connection>, topic: &str, mbps: f64, secs: u64) -> Histogram<u64> {
    let payload = batch(1024, 60);
    let per_sec = (mbps * 1e6 / payload.len() as f64).max(1.0);
    let interval = Duration::from_secs_f64(1.0 / per_sec);
    let hist = Rc::new(std::cell::RefCell::new(
        Histogram::<u64>::new(3).expect("histogram"),
    ));
    let start = tokio::time::Instant::now();
    let total = (per_sec * secs as f64) as u64;
    let mut tasks = Vec::new();
    for i in 0..total {
        let intended = start + interval * i as u32;
        tokio::time::sleep_until(intended).await;
        let (conn, payload, topic, hist) = (
            conn.clone(),
            payload.clone(),
            topic.to_string(),
            hist.clone(),
        );
        tasks.push(tokio::task::spawn_local(async move {
            produce_ok(&conn, &topic, &payload).await;
            let _ = hist
                .borrow_mut()
                .record(intended.elapsed().as_micros() as u64);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let h = hist.borrow().clone();
    h
}

fn main() {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).expect("scratch dir");
    let echo_dir = args.dir.join("echo");
    let node_dir = args.dir.join("node");
    eprintln!("raw write+fdatasync floor");
    // The broker runs on CPU 0 here (`start_broker`), so the floor's server side does too.
    let server_cpu = quiver_bench::harness::Placement::of_this_machine().map(|_| 0);
    let raw_fsync: Vec<f64> = (0..args.reps)
        .map(|_| {
            raw_fsync_p99(&args.dir, args.samples.min(4000), server_cpu).expect("disk floor") as f64
        })
        .collect();
    let echo_addr = start_echo(echo_dir.clone(), server_cpu).expect("echo server");
    let broker = start_broker(&node_dir);
    let broker_pid = broker.child.id();
    pin_current_thread(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&rt, async {
        let echo = Connection::connect(echo_addr, "localhost", &TlsTrust::LocalDataDir(echo_dir.clone())).await.expect("echo");
        let node_addr: SocketAddr = format!("127.0.0.1:{}", broker.port).parse().expect("addr");
        let conn = Arc::new(Connection::connect(node_addr, "localhost", &TlsTrust::LocalDataDir(node_dir.clone())).await.expect("node"));
        for (name, configs) in [("nosync", &[("flush_policy", "interval"), ("flush_ms", "1000")][..]), ("fsync", &[][..])] {
            let r = conn.request(requests::create_topics(conn.next_request_id(), &[requests::NewTopic { name, partitions: 1, replication_factor: 0, configs }])).await.expect("create");
            let err = r.envelope().body_as_create_topics_response().and_then(|b| b.results()).map(|r| r.get(0).error().map(|e| e.code()));
            assert!(matches!(err, Some(None) | Some(Some(ErrorCode::TopicExists))), "create {name}: {err:?}");
        }
        let small = batch(1024, 1);
        let (mut echo_p99, mut leader_p99, mut fsync_p99) = (vec![], vec![], vec![]);
        let (mut r_leader, mut r_fsync) = (vec![], vec![]);
        let mut last = json!({});
        for rep in 0..args.reps {
            eprintln!("rep {}/{}: echo, produce acks=leader, produce fsync", rep + 1, args.reps);
            let (e, l, f) = interleaved(&echo, &conn, &small, args.samples).await;
            let e99 = e.value_at_quantile(0.99) as f64;
            echo_p99.push(e99);
            leader_p99.push(l.value_at_quantile(0.99) as f64);
            fsync_p99.push(f.value_at_quantile(0.99) as f64);
            r_leader.push(l.value_at_quantile(0.99) as f64 / e99);
            r_fsync.push(f.value_at_quantile(0.99) as f64 / (e99 + raw_fsync[rep.min(raw_fsync.len() - 1)]));
            last = json!({"echo": pct(&e), "produce_leader": pct(&l), "produce_fsync": pct(&f)});
        }
        eprintln!("path MTU after the latency runs: echo {} bytes, node {} bytes", echo.path_mtu_bytes(), conn.path_mtu_bytes());
        eprintln!("throughput: 64 KiB batches, one connection, 32 in flight");
        let threads_idle = threads_of(broker_pid);
        let tp = {
            let conn = conn.clone();
            let sampler = tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                (threads_of(broker_pid), thread_names(broker_pid))
            });
            let mbps = throughput(conn.clone(), "nosync", args.throughput_secs, 32).await;
            eprintln!("path MTU after the throughput run: {} bytes; path stats {:?}", conn.path_mtu_bytes(), conn.stats().path);
            let (threads_busy, names) = sampler.await.expect("sampler");
            (mbps, threads_busy, names)
        };
        eprintln!("open loop at half the measured throughput");
        let half = open_loop(conn.clone(), "nosync", tp.0 / 2.0, args.throughput_secs).await;
        json!({
            "payload": {"latency_batch_bytes": small.len(), "throughput_batch_bytes": batch(1024, 60).len()},
            "echo_p99_us": echo_p99, "produce_leader_p99_us": leader_p99, "produce_fsync_p99_us": fsync_p99,
            "raw_write_fdatasync_p99_us": raw_fsync,
            "median_ratio_leader_vs_echo_p99": median(r_leader), "goal_leader": "<= 1.5",
            "median_ratio_fsync_vs_echo_plus_fsync_p99": median(r_fsync), "goal_fsync": "<= 1.3",
            "last_rep": last,
            "throughput_mbps_single_connection": tp.0, "goal_throughput": ">= 400 MB/s",
            "half_load": {"target_mbps": tp.0 / 2.0, "latency": pct(&half),
                "ratio_p99_p50": half.value_at_quantile(0.99) as f64 / half.value_at_quantile(0.5).max(1) as f64, "goal": "<= 3"},
            "broker_threads_idle": threads_idle, "broker_threads_under_load": tp.1, "broker_thread_names": tp.2,
        })
    });
    drop(broker);
    let _ = std::fs::remove_dir_all(&args.dir);
    println!("| measurement | Quiver | floor (same run) | ratio (median) | goal |");
    println!("|---|---|---|---|---|");
    let f = |k: &str| {
        report
            .pointer(k)
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN)
    };
    println!(
        "| produce acks=leader p99 (µs, last rep) | {} | {} (QUIC echo) | {:.2} | <= 1.5 |",
        f("/last_rep/produce_leader/p99_us"),
        f("/last_rep/echo/p99_us"),
        f("/median_ratio_leader_vs_echo_p99")
    );
    println!(
        "| produce fsync p99 (µs, last rep) | {} | echo + raw write+fdatasync | {:.2} | <= 1.3 |",
        f("/last_rep/produce_fsync/p99_us"),
        f("/median_ratio_fsync_vs_echo_plus_fsync_p99")
    );
    println!(
        "| single-connection produce, 64 KiB batches (MB/s) | {:.0} | | | >= 400 |",
        f("/throughput_mbps_single_connection")
    );
    println!(
        "| produce at half of max throughput: p99 / p50 | {:.2} | | | <= 3 |",
        f("/half_load/ratio_p99_p50")
    );
    println!(
        "| broker threads idle / under load | {} / {} | | | |",
        f("/broker_threads_idle"),
        f("/broker_threads_under_load")
    );
    quiver_bench::harness::write_report(&args.out, &report);
}
