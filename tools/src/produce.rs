//! `quiver produce TOPIC`: one record per line of stdin, every record acknowledged before exit.

use std::collections::VecDeque;
use std::time::Instant;

use quiver_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use tokio::io::AsyncBufReadExt;

use crate::connect::ClientArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcksArg {
    None,
    Leader,
    All,
}

pub struct ProduceArgs {
    pub topic: String,
    pub key_separator: Option<String>,
    pub acks: AcksArg,
    pub partition: Option<i32>,
    pub print_offsets: bool,
}

pub async fn run(args: &ClientArgs, p: ProduceArgs) -> Result<(), String> {
    let client = args.connect().await?;
    let acks = match p.acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    client.route(&p.topic).await.map_err(|e| e.to_string())?; // unknown topic: fail before reading stdin
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks,
            linger_ms: 2,
            ..ProducerConfig::default()
        },
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut pending = VecDeque::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut first_error: Option<String> = None;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading stdin: {e}"))?
    {
        let (key, value) = match &p.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        bytes += (value.len() + key.as_ref().map_or(0, String::len)) as u64;
        let mut record = ProducerRecord::new(&p.topic, value);
        record.key = key.map(bytes::Bytes::from);
        record.partition = p.partition;
        pending.push_back(producer.enqueue(record).await.map_err(|e| e.to_string())?);
        count += 1;
        drain(
            &mut pending,
            10_000,
            p.print_offsets,
            args.json,
            &mut first_error,
        )
        .await;
    }
    drain(
        &mut pending,
        0,
        p.print_offsets,
        args.json,
        &mut first_error,
    )
    .await;
    producer.close().await;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "produced {count} records ({bytes} bytes) to {} in {secs:.2} s: {:.0} records/s",
        p.topic,
        count as f64 / secs
    );
    match first_error {
        Some(e) => Err(format!("some records were not acknowledged: {e}")),
        None => Ok(()),
    }
}

/// Awaits the oldest deliveries until at most `keep` are pending, in input order, printing
/// offsets when asked and remembering the first failure.
async fn drain(
    pending: &mut VecDeque<quiver_client::DeliveryFuture>,
    keep: usize,
    print: bool,
    json: bool,
    first_error: &mut Option<String>,
) {
    while pending.len() > keep {
        let Some(f) = pending.pop_front() else { return };
        report(f.await, print, json, first_error);
    }
}

fn report(
    delivery: Result<quiver_client::RecordMetadata, quiver_client::ClientError>,
    print: bool,
    json: bool,
    first_error: &mut Option<String>,
) {
    match delivery {
        Ok(md) if print => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"partition": md.partition, "offset": md.offset})
                );
            } else {
                println!("{} {}", md.partition, md.offset);
            }
        }
        Ok(_) => {}
        Err(e) => {
            first_error.get_or_insert_with(|| e.to_string());
        }
    }
}
