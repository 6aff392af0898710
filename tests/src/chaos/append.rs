//! The append workload: idempotent producers with acks=all write unique values
//! (`a<producer>-<seq>`) round-robin over the partitions, paced, with a bounded number
//! unanswered; every send, acknowledgement and failure goes in the history. At the end a
//! reader takes every partition from its start to its end (`read_partition`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{
    Acks, Admin, Client, Consumer, ConsumerConfig, Isolation, OffsetQuery, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, SeekTo,
};

use super::check::{Read, Sent};
use super::history::{lock, History};

/// Pause between two sends of one producer (about 300 a second each).
const SEND_EVERY: Duration = Duration::from_millis(3);
/// Sends one producer may have unanswered.
const MAX_UNANSWERED: usize = 256;

#[derive(Default)]
pub struct AppendLog {
    pub sent: HashMap<String, Sent>,
    pub acked: HashMap<String, (i32, i64)>,
    /// Failed for good (a value that failed may still have been written).
    pub failed: HashMap<String, String>,
}

pub fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger_ms: 1,
        enable_idempotence: true,
        delivery_timeout_ms: 20_000,
        request_timeout_ms: 3_000,
        max_block_ms: 10_000,
        ..ProducerConfig::default()
    }
}

/// Producer `index` sends until `stop`, then waits for its answers (bounded by the delivery
/// timeout).
pub async fn produce(
    client: Client,
    topic: String,
    partitions: i32,
    index: usize,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
    log: Arc<Mutex<AppendLog>>,
) {
    let actor = format!("producer-{index}");
    let producer = Producer::new(client, producer_config());
    let unanswered = Arc::new(tokio::sync::Semaphore::new(MAX_UNANSWERED));
    let mut answers = tokio::task::JoinSet::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(permit) = unanswered.clone().acquire_owned().await else {
            break;
        };
        let value = format!("a{index}-{seq}");
        let partition = (seq % partitions as u64) as i32;
        lock(&log).sent.insert(
            value.clone(),
            Sent {
                producer: index,
                seq,
                partition,
            },
        );
        history.record(&actor, format!("send {value} p{partition}"));
        seq += 1;
        let record = ProducerRecord::new(topic.as_str(), value.clone()).partition(partition);
        match producer.enqueue(record).await {
            Ok(delivery) => {
                let (history, log, actor) = (history.clone(), log.clone(), actor.clone());
                answers.spawn(async move {
                    let outcome = delivery.await;
                    drop(permit);
                    match outcome {
                        Ok(md) => {
                            history.record(
                                &actor,
                                format!("ack {value} p{}@{}", md.partition, md.offset),
                            );
                            lock(&log).acked.insert(value, (md.partition, md.offset));
                        }
                        Err(e) => {
                            history.record(&actor, format!("fail {value}: {e}"));
                            lock(&log).failed.insert(value, e.to_string());
                        }
                    }
                });
            }
            Err(e) => {
                history.record(&actor, format!("fail {value} (not enqueued): {e}"));
                lock(&log).failed.insert(value, e.to_string());
            }
        }
        tokio::time::sleep(SEND_EVERY).await;
    }
    while answers.join_next().await.is_some() {}
    producer.close().await;
}

/// Every record of `topic`/`partition` from the log start to the end at the time of the
/// call (its high watermark), with `isolation`; an error when that takes past `deadline`.
pub async fn read_partition(
    client: &Client,
    topic: &str,
    partition: i32,
    isolation: Isolation,
    deadline: Instant,
) -> Result<Vec<Read>, String> {
    let admin = Admin::new(client.clone());
    let end = loop {
        match admin
            .list_offsets(topic, partition, OffsetQuery::Latest)
            .await
        {
            Ok(end) => break end.unwrap_or(0),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{topic}/{partition}: no end offset: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            isolation,
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 100,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(&[(topic, partition)]);
    let mut position = loop {
        match consumer.seek(topic, partition, SeekTo::Beginning).await {
            Ok(p) => break p,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{topic}/{partition}: no log start: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut out = Vec::new();
    while position < end {
        // Short waits: skipped records (aborted ones, transaction markers) move the
        // position without returning a record.
        let wait = Duration::from_millis(300);
        match tokio::time::timeout(wait, consumer.next_record()).await {
            Ok(Ok(r)) => {
                let value = r
                    .value
                    .as_deref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                out.push((partition, r.offset, value));
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) if Instant::now() >= deadline => {
                return Err(format!(
                    "{topic}/{partition}: reading stalled at {position} of {end}"
                ))
            }
            Err(_) => {}
        }
        position = consumer.position(topic, partition).unwrap_or(position);
    }
    Ok(out)
}
