//! The idempotent producer against the plain one, in one run: one producer, 100-byte
//! records, linger 1 ms, acks=all, 8 partitions, `--records` per run, plain and idempotent
//! runs alternated `--reps` times; records/s, medians and their ratio (goal ≥ 0.95 ×).
//!
//! ```text
//! cargo build --release -p quiver -p quiver-bench
//! target/release/idempotent_bench [--records 1000000] [--reps 3]
//! ```

use std::path::PathBuf;

use clap::Parser;
use quiver_bench::harness::{
    fresh_broker, local_client, median, pin_current_thread, produce_all, write_report,
};
use quiver_client::{Admin, Client, Producer, ProducerConfig};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value = "perf/results/idempotent.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench-idempotent")]
    dir: PathBuf,
}

async fn produce(client: &Client, idempotent: bool, records: u64) -> f64 {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger_ms: 1,
            batch_bytes: 1 << 20,
            buffer_bytes: 256 << 20,
            enable_idempotence: idempotent,
            ..ProducerConfig::default()
        },
    );
    let value = bytes::Bytes::from(vec![b'x'; 100]);
    produce_all(producer, "rate", records, &value).await
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
            .create_topic("rate", 8, &[])
            .await
            .expect("topic");
        let (mut plain, mut idempotent) = (Vec::new(), Vec::new());
        for rep in 0..args.reps {
            plain.push(produce(&client, false, args.records).await);
            idempotent.push(produce(&client, true, args.records).await);
            println!(
                "rep {rep}: plain {:.0} records/s, idempotent {:.0} records/s",
                plain[rep], idempotent[rep]
            );
        }
        let (p, i) = (median(plain), median(idempotent));
        json!({
            "bench": "idempotent", "records": args.records, "reps": args.reps,
            "record_bytes": 100, "partitions": 8, "acks": "all", "linger_ms": 1,
            "plain_records_per_s": p, "idempotent_records_per_s": i,
            "idempotent_vs_plain": i / p, "goal": ">= 0.95",
        })
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    write_report(&args.out, &report);
    drop(broker);
    let _ = std::fs::remove_dir_all(&args.dir);
}
