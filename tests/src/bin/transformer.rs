//! Child process for the exactly-once transform test: a [`quiver_client::Transformer`] that
//! reads `IN` as group `GROUP` and writes each value `v` as `out-v` to the same partition of
//! `OUT`, in transactions of up to 50 records, under transactional id `ID`, until killed.
//! Prints `COMMITTED n` after each transaction.
//!
//! Usage: transformer ADDR DATA_DIR IN OUT GROUP ID

use std::path::PathBuf;

use quiver_client::{
    Client, ClientConfig, ConsumerConfig, DeliveryMode, GroupConsumer, GroupConsumerConfig,
    Isolation, OffsetReset, Producer, ProducerConfig, ProducerRecord, Subscription, TlsTrust,
    TransformConfig, Transformer,
};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, dir, input, output, group, id] = &args[..] else {
        eprintln!("usage: transformer ADDR DATA_DIR IN OUT GROUP ID");
        std::process::exit(2);
    };
    let Ok(addr) = addr.parse() else {
        eprintln!("bad address {addr}");
        std::process::exit(2);
    };
    let config = ClientConfig {
        trust: TlsTrust::LocalDataDir(PathBuf::from(dir)),
        request_timeout_ms: 10_000,
        ..ClientConfig::default()
    };
    let client = match Client::connect(&[addr], config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect: {e}");
            std::process::exit(1);
        }
    };
    let member = GroupConsumer::subscribe(
        client.clone(),
        group,
        Subscription::Topics(vec![input.clone()]),
        GroupConsumerConfig {
            consumer: ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                isolation: Isolation::ReadCommitted,
                fetch_max_wait_ms: 100,
                ..ConsumerConfig::default()
            },
            delivery: DeliveryMode::Transactional,
            // A restarted instance takes its partitions back at once (static membership),
            // as its transactional id takes its producer over.
            instance_id: Some(id.clone()),
            ..GroupConsumerConfig::default()
        },
    )
    .await;
    let member = match member {
        Ok(m) => m,
        Err(e) => {
            eprintln!("subscribe: {e}");
            std::process::exit(1);
        }
    };
    let producer = Producer::new(
        client,
        ProducerConfig {
            transactional_id: Some(id.clone()),
            linger_ms: 1,
            ..ProducerConfig::default()
        },
    );
    let config = TransformConfig {
        max_records: 50,
        max_wait_ms: 50,
    };
    let mut t = match Transformer::new(member, producer, config).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("init: {e}");
            std::process::exit(1);
        }
    };
    loop {
        let step = t
            .run_once(|r| {
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                vec![ProducerRecord::new(output.as_str(), format!("out-{value}"))
                    .partition(r.partition)]
            })
            .await;
        match step {
            Ok(0) => {}
            Ok(n) => println!("COMMITTED {n}"),
            Err(e) => eprintln!("transaction failed (aborted, input read again): {e}"),
        }
    }
}
