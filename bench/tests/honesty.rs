//! Is the harness telling the truth? Against a fake system whose latencies are known exactly
//! (tokio's paused clock makes every sleep exact), the reported percentiles must match within
//! 1 %, and a 1 s stall must show up in publish delay and end-to-end latency — coordinated
//! omission made visible, not hidden.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use quiver_bench::latency::driver::{BenchConsumer, BenchProducer, Driver};
use quiver_bench::latency::pacer::Pacing;
use quiver_bench::latency::recorder::Metric;
use quiver_bench::latency::runner::{run, RunResult};
use quiver_bench::latency::workload::Workload;
use tokio::sync::mpsc;

struct Fake {
    /// Acknowledgement latency of the n-th message.
    latency: fn(u64) -> Duration,
    /// (message number, how long the client blocks before accepting it)
    stall: Option<(u64, Duration)>,
    sent: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<Bytes>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>,
}

struct FakeProducer(Arc<Fake>);
struct FakeConsumer(mpsc::UnboundedReceiver<Bytes>);

struct Shared(Arc<Fake>);

impl Driver for Shared {
    fn prepare<'a>(&'a self, _w: &'a Workload) -> BoxFuture<'a, Result<Vec<String>, String>> {
        async { Ok(vec!["fake".to_string()]) }.boxed()
    }
    fn producer<'a>(
        &'a self,
        _t: &'a str,
        _w: &'a Workload,
    ) -> BoxFuture<'a, Result<Box<dyn BenchProducer>, String>> {
        let p: Box<dyn BenchProducer> = Box::new(FakeProducer(self.0.clone()));
        async move { Ok(p) }.boxed()
    }
    fn consumer<'a>(
        &'a self,
        _t: &'a str,
        _p: Vec<u32>,
    ) -> BoxFuture<'a, Result<Box<dyn BenchConsumer>, String>> {
        let rx = self.0.rx.lock().unwrap().take().expect("one consumer");
        let c: Box<dyn BenchConsumer> = Box::new(FakeConsumer(rx));
        async move { Ok(c) }.boxed()
    }
}

impl BenchProducer for FakeProducer {
    fn send(
        &self,
        _key: Bytes,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<BoxFuture<'static, Result<(), String>>, String>> {
        let fake = self.0.clone();
        async move {
            let n = fake.sent.fetch_add(1, Ordering::SeqCst);
            if let Some((at, d)) = fake.stall {
                if n == at {
                    tokio::time::sleep(d).await;
                }
            }
            let latency = (fake.latency)(n);
            let tx = fake.tx.clone();
            let ack: BoxFuture<'static, Result<(), String>> = async move {
                tokio::time::sleep(latency).await;
                let _ = tx.send(payload);
                Ok(())
            }
            .boxed();
            Ok(ack)
        }
        .boxed()
    }
}

impl BenchConsumer for FakeConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Bytes, String>> {
        async move { self.0.recv().await.ok_or_else(|| "closed".to_string()) }.boxed()
    }
}

fn driver(latency: fn(u64) -> Duration, stall: Option<(u64, Duration)>) -> Arc<dyn Driver> {
    let (tx, rx) = mpsc::unbounded_channel();
    Arc::new(Shared(Arc::new(Fake {
        latency,
        stall,
        sent: Arc::new(AtomicU64::new(0)),
        tx,
        rx: std::sync::Mutex::new(Some(rx)),
    })))
}

fn workload(secs: u64) -> Workload {
    Workload::from_toml(&format!(
        "name = \"fake\"\ntopics = 1\npartitions_per_topic = 1\nmessage_size = 64\nproducers_per_topic = 1\nsubscriptions_per_topic = 1\nconsumers_per_subscription = 1\nproducer_rate = 1000\nwarmup_duration_s = 0\ntest_duration_s = {secs}\n"
    ))
    .unwrap()
}

fn within_1_percent(got_us: u64, want_ms: u64) {
    let want = want_ms as f64 * 1000.0;
    let err = (got_us as f64 - want).abs() / want;
    assert!(
        err <= 0.01,
        "reported {got_us} µs, injected {want_ms} ms ({:.2} % off)",
        err * 100.0
    );
}

/// A `secs`-second run at 1,000 msg/s on tokio's (paused) clock, progress ignored.
async fn run_quietly(d: Arc<dyn Driver>, secs: u64) -> RunResult {
    run(
        d,
        &workload(secs),
        1000,
        Pacing::Tokio,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn injected_latencies_are_reported_within_one_percent() {
    // Message n is acknowledged after (n % 100 + 1) * 10 ms: uniform over 10 ms ... 1 s.
    let d = driver(|n| Duration::from_millis((n % 100 + 1) * 10), None);
    let r = run_quietly(d, 10).await;
    let h = r.recorder.total(Metric::PublishLatency);
    assert_eq!(h.len(), 10_000);
    within_1_percent(h.value_at_quantile(0.50), 500);
    within_1_percent(h.value_at_quantile(0.90), 900);
    within_1_percent(h.value_at_quantile(0.99), 990);
    within_1_percent(h.max(), 1000);
    let e2e = r.recorder.total(Metric::EndToEnd);
    assert_eq!(e2e.len(), 10_000, "every message reached the consumer");
    within_1_percent(e2e.value_at_quantile(0.50), 500);
    within_1_percent(e2e.value_at_quantile(0.99), 990);
}

#[tokio::test(start_paused = true)]
async fn a_one_second_stall_shows_in_publish_delay_and_end_to_end() {
    // 1 ms acknowledgements, but the client blocks for 1 s on message 2,000 (of 5,000).
    let d = driver(
        |_| Duration::from_millis(1),
        Some((2000, Duration::from_secs(1))),
    );
    let r = run_quietly(d, 5).await;
    let delay = r.recorder.total(Metric::PublishDelay);
    let e2e = r.recorder.total(Metric::EndToEnd);
    let latency = r.recorder.total(Metric::PublishLatency);
    // The ~1,000 messages due during the stall were sent late, by up to 1 s: ~20 % of all.
    assert!(
        delay.max() >= 1_000_000,
        "max publish delay {} µs",
        delay.max()
    );
    assert!(
        delay.value_at_quantile(0.90) >= 100_000,
        "p90 publish delay {} µs",
        delay.value_at_quantile(0.90)
    );
    assert!(
        e2e.value_at_quantile(0.99) >= 900_000,
        "p99 end-to-end {} µs",
        e2e.value_at_quantile(0.99)
    );
    // A closed-loop tool would report only the acknowledgement time: the stall would vanish.
    assert!(
        latency.value_at_quantile(0.99) < 2_000,
        "publish latency alone hides it: p99 {} µs",
        latency.value_at_quantile(0.99)
    );
}

/// The timerfd pacer used for measurements never sends a message before its intended time
/// (late is recorded as publish delay; early would hide it).
#[tokio::test]
async fn precise_pacer_never_wakes_early() {
    let mut pacer = quiver_bench::latency::pacer::Pacer::precise().expect("timerfd");
    let start = tokio::time::Instant::now();
    for i in 0..500u32 {
        let due = start + Duration::from_micros(37) * i;
        pacer.sleep_until(due).await;
        assert!(
            tokio::time::Instant::now() >= due,
            "woke before message {i} was due"
        );
    }
}

/// A system that never acknowledges is given up on (DRAIN_LIMIT after the end), and what it
/// left unacknowledged is counted, not silently dropped; progress ticks every second and a
/// line of figures every `progress_every` while it runs.
#[tokio::test(start_paused = true)]
async fn a_system_that_falls_behind_is_counted_and_progress_keeps_ticking() {
    let d = driver(|_| Duration::from_secs(3600), None);
    let seen = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let s = seen.clone();
    let r = run(
        d,
        &workload(5),
        1000,
        Pacing::Tokio,
        Duration::from_secs(5),
        move |p| {
            let mut s = s.lock().unwrap();
            match p {
                quiver_bench::latency::runner::Progress::Tick { .. } => s.0 += 1,
                quiver_bench::latency::runner::Progress::Line(_) => s.1 += 1,
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(r.report["unacknowledged"], 5000, "{}", r.report);
    assert_eq!(r.report["published_msgs_per_s"], 0.0);
    let (ticks, lines) = *seen.lock().unwrap();
    // 5 s of run + DRAIN_LIMIT (10 s) of waiting: a tick a second, a line every 5 s.
    assert!(ticks >= 15, "{ticks} ticks");
    assert!(lines >= 3, "{lines} lines");
}

/// The durable echo (`--system durable-echo`) on real sockets and a real file: every message
/// of a short run comes back to the consumer of its partition, each exactly once, and the
/// server wrote its requests to its file.
#[tokio::test(flavor = "current_thread")]
async fn durable_echo_returns_every_message_to_the_consumer_of_its_partition() {
    use quiver_bench::latency::durable_echo::{start_server, DurableEchoDriver, FILE_NAME};
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = start_server(dir.path().to_path_buf(), None).expect("durable echo server");
    let driver: Arc<dyn Driver> = Arc::new(DurableEchoDriver::new(addr, dir.path().to_path_buf()));
    let w = Workload::from_toml(
        "name = \"echo\"\ntopics = 1\npartitions_per_topic = 4\nmessage_size = 100\nproducers_per_topic = 1\nsubscriptions_per_topic = 1\nconsumers_per_subscription = 2\nproducer_rate = 2000\nwarmup_duration_s = 0\ntest_duration_s = 2\nmax_in_flight_requests = 2\n",
    )
    .expect("workload");
    let r = run(
        driver,
        &w,
        2000,
        Pacing::Precise,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("run");
    let counts = r.recorder.counts();
    assert_eq!(counts.errors, 0);
    assert_eq!(counts.unacknowledged + counts.unsent, 0);
    assert_eq!(counts.published, 4000, "2 s at 2,000 msg/s");
    assert_eq!(
        counts.consumed, 4000,
        "each message reached one consumer, once"
    );
    assert_eq!(r.recorder.total(Metric::EndToEnd).len(), 4000);
    let written = std::fs::metadata(dir.path().join(FILE_NAME)).expect("the server's file");
    assert_eq!(
        written.len(),
        64 << 20,
        "pre-written once, then overwritten"
    );
}
