//! The client against a real broker, in one run:
//!
//! 1. One producer, 100-byte records, linger 1 ms, acks=all and acks=leader: records/s, MB/s.
//! 2. Consumer catch-up: read 1 GiB from the beginning of a topic, MB/s, against the storage
//!    engine reading the same segment files sequentially with O_DIRECT (the raw floor).
//!
//! The broker is `quiver serve --cores 0`; the client's tokio runtime runs on CPU 1.
//!
//! ```text
//! cargo build --release -p quiver -p quiver-bench
//! target/release/client_bench [--records N] [--read-bytes B] [--out perf/results/client.json]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use quiver_bench::harness::{pin_current_thread, produce_all, start_broker};
use quiver_client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer,
    ProducerConfig, TlsTrust,
};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// Records per producer run.
    #[arg(long, default_value_t = 3_000_000)]
    records: u64,
    /// Bytes the catch-up read covers.
    #[arg(long, default_value_t = 1 << 30)]
    read_bytes: u64,
    #[arg(long, default_value = "perf/results/client.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench-client")]
    dir: PathBuf,
}

async fn produce(
    client: &Client,
    topic: &str,
    acks: Acks,
    records: u64,
    value: &bytes::Bytes,
) -> (f64, f64) {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks,
            linger_ms: 1,
            batch_bytes: 1 << 20,
            buffer_bytes: 256 << 20,
            ..ProducerConfig::default()
        },
    );
    let per_s = produce_all(producer, topic, records, value).await;
    (per_s, per_s * value.len() as f64 / 1e6)
}

/// Reads the partition's segment files front to back with O_DIRECT, 1 MiB at a time: the
/// storage floor for a catch-up read of the same bytes.
fn raw_read_mbps(partition_dir: &Path, bytes: u64) -> f64 {
    let dir = partition_dir.to_path_buf();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .make()
        .expect("executor")
        .run(async move {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .expect("dir")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            files.sort();
            let start = Instant::now();
            let mut read = 0u64;
            'outer: for path in files {
                let f = glommio::io::DmaFile::open(&path)
                    .await
                    .expect("open segment");
                let size = f.file_size().await.expect("size");
                let mut pos = 0;
                while pos < size {
                    let r = f.read_at_aligned(pos, 1 << 20).await.expect("read");
                    let chunk = bytes::Bytes::copy_from_slice(&r); // the same one copy the log's reads make
                    read += chunk.len() as u64;
                    pos += 1 << 20;
                    if read >= bytes {
                        break 'outer;
                    }
                }
                let _ = f.close().await;
            }
            read as f64 / start.elapsed().as_secs_f64() / 1e6
        })
}

fn main() {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).expect("scratch");
    let node_dir = args.dir.join("node");
    let broker = start_broker(&node_dir);
    pin_current_thread(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let node_dir_abs = std::fs::canonicalize(&node_dir).expect("node dir");
    let report = rt.block_on(async {
        let addr = format!("127.0.0.1:{}", broker.port).parse().expect("addr");
        let client = Client::connect(
            &[addr],
            ClientConfig {
                trust: TlsTrust::LocalDataDir(node_dir_abs.clone()),
                ..ClientConfig::default()
            },
        )
        .await
        .expect("connect");
        let admin = Admin::new(client.clone());
        admin
            .create_topic("rate", 8, &[])
            .await
            .expect("create rate");
        admin
            .create_topic("catchup", 1, &[("flush_policy", "interval")])
            .await
            .expect("create catchup");
        let value = bytes::Bytes::from(vec![b'x'; 100]);
        eprintln!("producer: {} records of 100 bytes, acks=all", args.records);
        let (all_rps, all_mbps) = produce(&client, "rate", Acks::All, args.records, &value).await;
        eprintln!("producer: acks=leader");
        let (leader_rps, leader_mbps) =
            produce(&client, "rate", Acks::Leader, args.records, &value).await;

        eprintln!(
            "writing {} MiB for the catch-up read",
            args.read_bytes >> 20
        );
        let big = bytes::Bytes::from(vec![b'y'; 8000]);
        produce(
            &client,
            "catchup",
            Acks::Leader,
            args.read_bytes / big.len() as u64,
            &big,
        )
        .await;
        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                fetch_max_bytes: 8 << 20,
                ..ConsumerConfig::default()
            },
        );
        consumer.assign(&[("catchup", 0)]);
        let start = Instant::now();
        let mut bytes_read = 0u64;
        let target = (args.read_bytes / big.len() as u64) * big.len() as u64;
        while bytes_read < target {
            let r = consumer.next_record().await.expect("record");
            bytes_read += r.value.map_or(0, |v| v.len() as u64);
        }
        let consume_mbps = bytes_read as f64 / start.elapsed().as_secs_f64() / 1e6;
        json!({
            "producer": {"record_bytes": 100, "linger_ms": 1, "records": args.records,
                "acks_all": {"records_per_s": all_rps, "mb_per_s": all_mbps},
                "acks_leader": {"records_per_s": leader_rps, "mb_per_s": leader_mbps},
                "goal": ">= 1,000,000 records/s"},
            "consumer_catch_up": {"bytes": bytes_read, "consumer_mbps": consume_mbps},
        })
    });
    drop(broker);
    let raw = raw_read_mbps(&node_dir.join("topics/catchup/0"), args.read_bytes);
    let mut report = report;
    report["consumer_catch_up"]["raw_odirect_read_mbps"] = json!(raw);
    let consumer = report["consumer_catch_up"]["consumer_mbps"]
        .as_f64()
        .unwrap_or(0.0);
    report["consumer_catch_up"]["ratio_consumer_vs_raw"] = json!(consumer / raw);
    let _ = std::fs::remove_dir_all(&args.dir);
    let f = |p: &str| {
        report
            .pointer(p)
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN)
    };
    println!("| measurement | value | floor | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!("| producer, 100 B records, linger 1 ms, acks=all | {:.0} records/s ({:.1} MB/s) | | | >= 1 M records/s |", f("/producer/acks_all/records_per_s"), f("/producer/acks_all/mb_per_s"));
    println!(
        "| producer, acks=leader | {:.0} records/s ({:.1} MB/s) | | | |",
        f("/producer/acks_leader/records_per_s"),
        f("/producer/acks_leader/mb_per_s")
    );
    println!(
        "| consumer catch-up read (MB/s) | {:.0} | {:.0} (raw O_DIRECT read) | {:.2} | |",
        consumer,
        raw,
        consumer / raw
    );
    quiver_bench::harness::write_report(&args.out, &report);
}
