//! Transactions against plain acks=all produce, in one run: a unit of 100 records of 100
//! bytes over 4 partitions, sent and awaited one unit at a time — plainly (idempotent
//! producer, acks=all), and as one transaction (begin, sends, commit). Per unit: end-to-end
//! latency (first send to last acknowledgement, or to the commit's return) and, for
//! transactions, the commit call alone; units/s. Plain and transactional runs alternate
//! `--reps` times. Goal: median transaction ≤ 3 × median plain unit (Redpanda reports 4.6 ×,
//! Kafka 6.3 ×).
//!
//! ```text
//! cargo build --release -p quiver -p quiver-bench
//! target/release/txn_bench [--units 300] [--reps 3]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use quiver_bench::harness::{fresh_broker, local_client, median, pin_current_thread, write_report};
use quiver_client::{Admin, Client, Producer, ProducerConfig, ProducerRecord};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// Units (of 100 records) per run.
    #[arg(long, default_value_t = 300)]
    units: usize,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value = "perf/results/transactions.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench-txn")]
    dir: PathBuf,
}

const RECORDS_PER_UNIT: usize = 100;
const PARTITIONS: i32 = 4;

fn producer(client: &Client, transactional_id: Option<String>) -> Producer {
    Producer::new(
        client.clone(),
        ProducerConfig {
            linger_ms: 0,
            transactional_id,
            ..ProducerConfig::default()
        },
    )
}

async fn send_unit(p: &Producer, value: &bytes::Bytes) {
    let mut acks = Vec::with_capacity(RECORDS_PER_UNIT);
    for i in 0..RECORDS_PER_UNIT {
        let r = ProducerRecord::new("txn", value.clone()).partition(i as i32 % PARTITIONS);
        acks.push(p.enqueue(r).await.expect("enqueued"));
    }
    for a in acks {
        a.await.expect("acknowledged");
    }
}

/// Per unit: (end to end, commit call) in microseconds; and units/s.
async fn run(p: &Producer, transactional: bool, units: usize) -> (Vec<u64>, Vec<u64>, f64) {
    let value = bytes::Bytes::from(vec![b'x'; 100]);
    let (mut e2e, mut commit) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..units {
        let t0 = Instant::now();
        if transactional {
            p.begin_transaction().await.expect("begin");
            let mut acks = Vec::with_capacity(RECORDS_PER_UNIT);
            for i in 0..RECORDS_PER_UNIT {
                let r = ProducerRecord::new("txn", value.clone()).partition(i as i32 % PARTITIONS);
                acks.push(p.enqueue(r).await.expect("enqueued"));
            }
            let c0 = Instant::now();
            p.commit_transaction().await.expect("commit");
            commit.push(c0.elapsed().as_micros() as u64);
            drop(acks);
        } else {
            send_unit(p, &value).await;
        }
        e2e.push(t0.elapsed().as_micros() as u64);
    }
    let rate = units as f64 / started.elapsed().as_secs_f64();
    (e2e, commit, rate)
}

fn pct(v: &mut [u64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let broker = fresh_broker(&args.dir);
    pin_current_thread(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let report = rt.block_on(async {
        let client = local_client(&broker, &args.dir).await;
        Admin::new(client.clone())
            .create_topic("txn", PARTITIONS, &[])
            .await
            .expect("topic");
        let plain = producer(&client, None);
        let txn = producer(&client, Some("bench-txn".into()));
        txn.init_transactions().await.expect("init");
        // Warm both paths (connections, the transaction state topic).
        run(&plain, false, 20).await;
        run(&txn, true, 20).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut reps = Vec::new();
        for rep in 0..args.reps {
            let (mut pe, _, pr) = run(&plain, false, args.units).await;
            let (mut te, mut tc, tr) = run(&txn, true, args.units).await;
            let r = json!({
                "plain_p50_ms": pct(&mut pe, 0.5), "plain_p99_ms": pct(&mut pe, 0.99),
                "plain_units_per_s": pr,
                "txn_p50_ms": pct(&mut te, 0.5), "txn_p99_ms": pct(&mut te, 0.99),
                "commit_p50_ms": pct(&mut tc, 0.5), "commit_p99_ms": pct(&mut tc, 0.99),
                "txn_per_s": tr,
            });
            println!("rep {rep}: {r}");
            reps.push(r);
        }
        let m = |k: &str| median(reps.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).collect());
        json!({
            "bench": "transactions", "units": args.units, "reps": args.reps,
            "records_per_unit": RECORDS_PER_UNIT, "record_bytes": 100, "partitions": PARTITIONS,
            "acks": "all", "linger_ms": 0,
            "plain_p50_ms": m("plain_p50_ms"), "plain_p99_ms": m("plain_p99_ms"),
            "plain_units_per_s": m("plain_units_per_s"),
            "txn_p50_ms": m("txn_p50_ms"), "txn_p99_ms": m("txn_p99_ms"),
            "commit_p50_ms": m("commit_p50_ms"), "commit_p99_ms": m("commit_p99_ms"),
            "txn_per_s": m("txn_per_s"),
            "txn_vs_plain_p50": m("txn_p50_ms") / m("plain_p50_ms"),
            "goal": "txn p50 <= 3 x plain p50",
            "reps_detail": reps,
        })
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    write_report(&args.out, &report);
    drop(broker);
    let _ = std::fs::remove_dir_all(&args.dir);
}
