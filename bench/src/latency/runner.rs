//! Runs a workload against a driver, open loop: every message has an intended send time from
//! the rate, and latencies count from it, so a stall anywhere shows up in the numbers.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use tokio::time::Instant;

use super::driver::Driver;
use super::pacer::{Pacer, Pacing};
use super::recorder::{summary, Metric, Recorder, METRICS};
use super::workload::Workload;

/// How long a run waits after its end for outstanding acknowledgements before it counts them
/// as unacknowledged and stops.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What a run tells while it runs.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Every second: how far the run is (a progress bar), and what was counted so far (after
    /// the warm-up only).
    Tick {
        elapsed_s: u64,
        total_s: u64,
        warming_up: bool,
        published: u64,
        consumed: u64,
    },
    /// Every `progress_every`: rates, backlog and percentiles of the interval.
    Line(String),
}

/// A finished run.
pub struct RunResult {
    pub recorder: Arc<Recorder>,
    pub rate_target: u64,
    pub measured_secs: f64,
    pub report: serde_json::Value,
}

/// `[intended send time, ns since start | sequence | padding]`.
fn payload(size: usize, intended_ns: u64, seq: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64(intended_ns);
    b.put_u64(seq);
    b.resize(size, 0x5a);
    b.freeze()
}

fn intended_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Runs `workload` at `rate` msg/s (all producers together) and returns the recorded figures.
/// Progress goes to `progress`: a tick every second, a line every `progress_every`.
pub async fn run(
    driver: Arc<dyn Driver>,
    workload: &Workload,
    rate: u64,
    pacing: Pacing,
    progress_every: Duration,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<RunResult, String> {
    let workload_warmup_s = workload.warmup_duration_s;
    let topics = driver.prepare(workload).await?;
    let recorder = Arc::new(Recorder::default());
    let start = Instant::now();
    let warmup = Duration::from_secs(workload.warmup_duration_s);
    let end = start + warmup + Duration::from_secs(workload.test_duration_s);
    let measuring = move |t: Instant| t >= start + warmup;

    let mut tasks = Vec::new();
    for topic in &topics {
        let per_sub = workload.consumers_per_subscription.max(1);
        for _sub in 0..workload.subscriptions_per_topic {
            for c in 0..per_sub {
                let parts: Vec<u32> = (0..workload.partitions_per_topic)
                    .filter(|p| p % per_sub == c)
                    .collect();
                let mut consumer = driver.consumer(topic, parts).await?;
                let rec = recorder.clone();
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < end + Duration::from_secs(2) {
                        let Ok(Ok(p)) =
                            tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
                        else {
                            continue;
                        };
                        let now = Instant::now();
                        let Some(ns) = intended_of(&p) else { continue };
                        let intended = start + Duration::from_nanos(ns);
                        if measuring(intended) && intended < end {
                            rec.record(
                                Metric::EndToEnd,
                                now.saturating_duration_since(intended).as_micros() as u64,
                            );
                            rec.count(|c| c.consumed += 1);
                        }
                    }
                }));
            }
        }
    }
    let producers = topics.len() as u64 * u64::from(workload.producers_per_topic);
    let per_producer = (rate as f64 / producers as f64).max(1.0);
    let interval = Duration::from_secs_f64(1.0 / per_producer);
    for (t, topic) in topics.iter().enumerate() {
        for p in 0..workload.producers_per_topic {
            let producer = driver.producer(topic, workload).await?;
            let (rec, size) = (recorder.clone(), workload.message_size);
            let id = (t as u64) << 32 | u64::from(p);
            tasks.push(tokio::spawn(async move {
                // Acknowledgements are awaited in this task (no task per message): each carries
                // its own completion time, taken when it resolves.
                let mut acks = FuturesUnordered::new();
                let mut pacer = Pacer::new(pacing);
                let mut seq = 0u64;
                loop {
                    let intended = start + interval.mul_f64(seq as f64);
                    if intended >= end && acks.is_empty() {
                        return;
                    }
                    if Instant::now() >= end + DRAIN_LIMIT {
                        // So far behind that the run gives up: what was never sent and never
                        // acknowledged is counted, not waited for.
                        let left = acks.len() as u64;
                        let unsent = end.saturating_duration_since(intended).as_secs_f64() * per_producer;
                        rec.count(|c| {
                            c.unacknowledged += left;
                            c.unsent += unsent.ceil() as u64;
                        });
                        return;
                    }
                    tokio::select! {
                        biased;
                        Some((intended_at, accepted, acked, ok)) = acks.next(), if !acks.is_empty() => {
                            if measuring(intended_at) {
                                let acked: Instant = acked;
                                rec.record(Metric::PublishLatency, acked.saturating_duration_since(accepted).as_micros() as u64);
                                rec.count(|c| if ok { c.published += 1; c.published_bytes += size as u64 } else { c.errors += 1 });
                            }
                        }
                        _ = tokio::time::sleep_until(end + DRAIN_LIMIT), if intended >= end => {}
                        _ = pacer.sleep_until(intended), if intended < end => {
                            let key = Bytes::from((seq % 1024).to_be_bytes().to_vec());
                            let msg = payload(size, intended.duration_since(start).as_nanos() as u64, id ^ seq);
                            seq += 1;
                            let ack = match producer.send(key, msg).await {
                                Ok(ack) => ack,
                                Err(_) => {
                                    rec.count(|c| c.errors += 1);
                                    continue;
                                }
                            };
                            let accepted = Instant::now();
                            if measuring(intended) {
                                rec.record(Metric::PublishDelay, accepted.saturating_duration_since(intended).as_micros() as u64);
                            }
                            acks.push(async move {
                                let ok = ack.await.is_ok();
                                (intended, accepted, Instant::now(), ok)
                            });
                        }
                    }
                }
            }));
        }
    }
    // A tick every second, a line of figures every `progress_every`.
    let rec = recorder.clone();
    let total_s = workload.warmup_duration_s + workload.test_duration_s;
    let line_every_s = progress_every.as_secs().max(1);
    let reporter = tokio::spawn(async move {
        let mut last = rec.counts();
        let mut elapsed_s = 0u64;
        loop {
            elapsed_s += 1;
            tokio::time::sleep_until(start + Duration::from_secs(elapsed_s)).await;
            let now = rec.counts();
            progress(Progress::Tick {
                elapsed_s,
                total_s,
                warming_up: elapsed_s <= workload_warmup_s,
                published: now.published,
                consumed: now.consumed,
            });
            if elapsed_s % line_every_s != 0 {
                continue;
            }
            let secs = line_every_s as f64;
            let h = rec.take_interval();
            progress(Progress::Line(format!(
                "pub {:>9.0} msg/s  cons {:>9.0} msg/s  backlog {:>8}  pub-lat p50/p99/p99.9 {}/{}/{} µs  pub-delay p99 {} µs  e2e p50/p99/p99.9 {}/{}/{} µs",
                (now.published - last.published) as f64 / secs,
                (now.consumed - last.consumed) as f64 / secs,
                now.published.saturating_sub(now.consumed),
                h[0].value_at_quantile(0.5), h[0].value_at_quantile(0.99), h[0].value_at_quantile(0.999),
                h[1].value_at_quantile(0.99),
                h[2].value_at_quantile(0.5), h[2].value_at_quantile(0.99), h[2].value_at_quantile(0.999),
            )));
            last = now;
        }
    });
    for t in tasks {
        let _ = t.await;
    }
    reporter.abort();
    let measured_secs = workload.test_duration_s as f64;
    let counts = recorder.counts();
    let mut metrics = serde_json::Map::new();
    for (m, name) in METRICS {
        metrics.insert(name.to_string(), summary(&recorder.total(m)));
    }
    let report = json!({
        "workload": workload.name, "target_rate_msgs": rate,
        "published_msgs_per_s": counts.published as f64 / measured_secs,
        "consumed_msgs_per_s": counts.consumed as f64 / measured_secs,
        "published_mb_per_s": counts.published_bytes as f64 / measured_secs / 1e6,
        "errors": counts.errors,
        "unacknowledged": counts.unacknowledged,
        "unsent": counts.unsent,
        "latency_us": metrics,
    });
    Ok(RunResult {
        recorder,
        rate_target: rate,
        measured_secs,
        report,
    })
}
