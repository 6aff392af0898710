//! Back-pressure: a producer offered far more than the broker takes keeps its memory within
//! `buffer_bytes` plus a fixed margin. Its own test binary, so no other test shares the RSS.

use quiver_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use quiver_tests::node::Node;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_faster_than_the_broker_stays_within_its_buffer() {
    const BUFFER: usize = 16 << 20;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 1);
    let client = node.client_with_topic(10_000, "pressure", 1).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            buffer_bytes: BUFFER,
            batch_bytes: 1 << 20,
            max_block_ms: 60_000,
            ..ProducerConfig::default()
        },
    );
    let value = bytes::Bytes::from(vec![7u8; 10_000]);
    // Warm up allocators and connections before the baseline.
    producer
        .send(ProducerRecord::new("pressure", value.clone()))
        .await
        .unwrap();
    let baseline = rss_bytes();
    let mut peak = baseline;
    let mut futures = std::collections::VecDeque::new();
    for i in 0..30_000u32 {
        // 300 MB offered as fast as enqueue lets us: enqueue blocks when the buffer is full.
        futures.push_back(
            producer
                .enqueue(ProducerRecord::new("pressure", value.clone()))
                .await
                .unwrap(),
        );
        while futures.len() > 4096 {
            futures.pop_front().unwrap().await.unwrap();
        }
        if i % 500 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    for f in futures {
        f.await.unwrap();
    }
    producer.close().await;
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "RSS baseline {} MiB, peak {} MiB, growth {} MiB, buffer {} MiB",
        baseline >> 20,
        peak >> 20,
        growth >> 20,
        BUFFER >> 20
    );
    assert!(
        growth < (BUFFER as u64) + (48 << 20),
        "RSS grew {} MiB with a {} MiB buffer",
        growth >> 20,
        BUFFER >> 20
    );
}
