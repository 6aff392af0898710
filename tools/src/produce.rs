//! `quiver produce TOPIC`: one record per line of stdin, every record acknowledged before exit.
//!
//! The first record that cannot be delivered (its delivery timeout ran out, or the broker
//! refused it for good) stops the reading of stdin: what is in flight is waited for, the counts
//! of acknowledged and unacknowledged records are printed, and the command exits non-zero,
//! within the delivery timeout of the failure. Input past that point is never read, so a
//! caller knows exactly which lines to send again (`--print-offsets` lists them).

use std::collections::VecDeque;
use std::time::Instant;

use quiver_client::{Acks, ClientError, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::io::AsyncBufReadExt;

use crate::connect::ClientArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcksArg {
    None,
    Leader,
    All,
}

/// How long the CLI lets a batch wait for more lines (records from a pipe arrive faster).
const LINGER_MS: u64 = 2;

/// Deliveries awaited in input order at most this many lines behind the reading.
const MAX_PENDING_RECORDS: usize = 10_000;

pub struct ProduceArgs {
    pub topic: String,
    pub key_separator: Option<String>,
    pub acks: AcksArg,
    pub partition: Option<i32>,
    pub print_offsets: bool,
    pub delivery_timeout_ms: u64,
    pub request_timeout_ms: u64,
}

/// What became of the lines read so far.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    acknowledged: u64,
    failed: u64,
    first_error: Option<String>,
}

pub async fn run(args: &ClientArgs, p: ProduceArgs) -> Result<(), String> {
    // Kafka's rule (delivery.timeout.ms >= linger.ms + request.timeout.ms): a request must be
    // able to finish before its records' delivery timeout.
    if p.delivery_timeout_ms < p.request_timeout_ms + LINGER_MS {
        return Err(format!(
            "--delivery-timeout-ms ({}) must be at least --request-timeout-ms ({}) + {LINGER_MS} ms of linger",
            p.delivery_timeout_ms, p.request_timeout_ms
        ));
    }
    let client = args
        .connect_with_request_timeout(p.request_timeout_ms)
        .await?;
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
            linger_ms: LINGER_MS,
            delivery_timeout_ms: p.delivery_timeout_ms,
            request_timeout_ms: u32::try_from(p.request_timeout_ms).unwrap_or(u32::MAX),
            ..ProducerConfig::default()
        },
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let mut tally = Tally::default();
    let mut bytes = 0u64;
    let start = Instant::now();
    let out = Output {
        print: p.print_offsets,
        json: args.json,
    };
    // Reads lines while acknowledgements are printed as they arrive (in input order): a
    // script timing each acknowledgement sees it when it happens, not when stdin ends.
    let mut stdin_open = true;
    while tally.first_error.is_none() && (stdin_open || !pending.is_empty()) {
        let can_read = stdin_open && pending.len() < MAX_PENDING_RECORDS;
        tokio::select! {
            biased;
            delivery = async {
                match pending.front_mut() {
                    Some((_, f)) => f.await,
                    None => std::future::pending().await,
                }
            }, if !pending.is_empty() => {
                if let Some((line, _)) = pending.pop_front() {
                    out.line(line, &delivery);
                    tally.record(&delivery);
                }
            }
            next = lines.next_line(), if can_read => {
                let Some(line) = next.map_err(|e| format!("reading stdin: {e}"))? else {
                    stdin_open = false;
                    continue;
                };
                tally.read += 1;
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
                match producer.enqueue(record).await {
                    Ok(delivery) => pending.push_back((tally.read, delivery)),
                    Err(e) => {
                        drain(&mut pending, 0, out, &mut tally).await;
                        out.line(tally.read, &Err(e.clone()));
                        tally.record(&Err(e));
                        break;
                    }
                }
            }
        }
    }
    drain(&mut pending, 0, out, &mut tally).await;
    producer.close().await;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    if args.json && !p.print_offsets {
        // --json without --print-offsets: the outcome as one object, for scripts.
        println!(
            "{}",
            serde_json::json!({"topic": p.topic, "records_read": tally.read, "acknowledged": tally.acknowledged,
                "not_acknowledged": tally.failed, "first_error": tally.first_error, "seconds": secs})
        );
    }
    match tally.first_error {
        None => {
            eprintln!(
                "produced {} records ({bytes} bytes) to {} in {secs:.2} s: {:.0} records/s",
                tally.read,
                p.topic,
                tally.read as f64 / secs
            );
            Ok(())
        }
        Some(e) => Err(format!(
            "{} of {} records read were acknowledged, {} were not; stdin was not read past line {} (first error: {e})",
            tally.acknowledged, tally.read, tally.failed, tally.read
        )),
    }
}

impl Tally {
    fn record(&mut self, delivery: &Result<quiver_client::RecordMetadata, ClientError>) {
        match delivery {
            Ok(_) => self.acknowledged += 1,
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// How each record's outcome is printed (`--print-offsets`, `--json`).
#[derive(Debug, Clone, Copy)]
struct Output {
    print: bool,
    json: bool,
}

impl Output {
    /// One line per input line, in input order: `partition offset`, or `- -` for a line that
    /// was not acknowledged; with `--json`, an object with the input line number.
    fn line(self, line: u64, delivery: &Result<quiver_client::RecordMetadata, ClientError>) {
        if !self.print {
            return;
        }
        match (delivery, self.json) {
            (Ok(md), true) => println!(
                "{}",
                serde_json::json!({"line": line, "partition": md.partition, "offset": md.offset})
            ),
            (Ok(md), false) => println!("{} {}", md.partition, md.offset),
            (Err(e), true) => println!(
                "{}",
                serde_json::json!({"line": line, "error": e.to_string()})
            ),
            (Err(_), false) => println!("- -"),
        }
    }
}

/// Awaits the oldest deliveries until at most `keep` are pending, in input order, printing
/// and counting each outcome.
async fn drain(
    pending: &mut VecDeque<(u64, DeliveryFuture)>,
    keep: usize,
    out: Output,
    tally: &mut Tally,
) {
    while pending.len() > keep {
        let Some((line, f)) = pending.pop_front() else {
            return;
        };
        let delivery = f.await;
        out.line(line, &delivery);
        tally.record(&delivery);
    }
}
