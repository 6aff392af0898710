//! The client against a real broker: a million records over 8 partitions with acks=all,
//! records acknowledged across a broker crash and restart, and batches that grow while a
//! partition waits for its acknowledgement, and datagrams that grow past 1,452 bytes on
//! loopback.

use std::collections::HashMap;
use std::time::Duration;

use quiver_client::partitioner::partition_for_key;
use quiver_client::{
    Acks, Admin, Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use quiver_tests::node::Node;

/// Reads `topic`'s partitions from the beginning until `count` records arrived; returns
/// `(partition, offset, value)` in arrival order.
async fn consume_all(
    client: &Client,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<(i32, i64, u64)> {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    let tps: Vec<(&str, i32)> = (0..partitions).map(|p| (topic, p)).collect();
    consumer.assign(&tps);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let r = tokio::time::timeout(Duration::from_secs(60), consumer.next_record())
            .await
            .expect("records keep coming")
            .expect("record");
        let v: u64 = std::str::from_utf8(r.value.as_ref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        out.push((r.partition, r.offset, v));
    }
    out
}

/// Per partition, values must appear in increasing order (send order) with increasing offsets.
fn check_order(records: &[(i32, i64, u64)]) {
    let mut last: HashMap<i32, (i64, u64)> = HashMap::new();
    for &(p, o, v) in records {
        if let Some(&(lo, lv)) = last.get(&p) {
            assert!(o > lo, "partition {p}: offset {o} after {lo}");
            assert!(v > lv, "partition {p}: value {v} after {lv}: reordered");
        }
        last.insert(p, (o, v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_records_over_8_partitions_come_back_complete_in_order() {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let client = node.client_with_topic(10_000, "million", 8).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 5,
            ..ProducerConfig::default()
        },
    );
    let mut pending = Vec::with_capacity(N as usize);
    for i in 0..N {
        let key = format!("k{}", i % 10_007);
        let f = producer
            .enqueue(ProducerRecord::new("million", i.to_string()).key(key.clone()))
            .await
            .unwrap();
        pending.push((key, f));
    }
    for (key, f) in pending {
        let md = f.await.expect("acks=all send succeeds");
        assert_eq!(
            md.partition,
            partition_for_key(key.as_bytes(), 8),
            "Kafka's key mapping"
        );
    }
    producer.close().await;
    let records = consume_all(&client, "million", 8, N as usize).await;
    let mut seen: Vec<Option<(i32, i64)>> = vec![None; N as usize];
    for &(p, o, v) in &records {
        if let Some(first) = seen[v as usize] {
            panic!(
                "record {v} twice: at (partition, offset) {first:?} and {:?}",
                (p, o)
            );
        }
        seen[v as usize] = Some((p, o));
    }
    assert!(seen.iter().all(Option::is_some), "every record came back");
    check_order(&records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_acknowledged_across_a_broker_crash_are_all_there() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let base_port = node.base_port;
    let client = node.client_with_topic(2_000, "crash", 8).await;
    let config = ProducerConfig {
        acks: Acks::All,
        linger_ms: 2,
        delivery_timeout_ms: 60_000,
        retry_backoff_ms: 50,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut futures = Vec::new();
    let mut node = Some(node);
    for i in 0..N {
        futures.push(
            producer
                .enqueue(ProducerRecord::new("crash", i.to_string()).key(format!("k{i}")))
                .await
                .unwrap(),
        );
        if i == N / 2 {
            // kill -9 in the middle, then the same node comes back on the same ports.
            node.take().unwrap().kill();
            node = Some(Node::start_on(dir.path(), 2, base_port));
        }
    }
    let mut acked = Vec::new();
    let mut failed = 0;
    for (i, f) in futures.into_iter().enumerate() {
        match f.await {
            Ok(_) => acked.push(i as u64),
            Err(e) => {
                assert!(
                    e.is_retriable()
                        || matches!(e, quiver_client::ClientError::DeliveryTimeout { .. }),
                    "unexpected error {e}"
                );
                failed += 1;
            }
        }
    }
    producer.close().await;
    assert!(
        acked.len() as u64 >= N / 2,
        "most sends succeed ({failed} failed)"
    );
    // Everything acknowledged is there (retries may have written a batch twice: no idempotence yet).
    let admin = Admin::new(client.clone());
    let mut total = 0usize;
    for p in 0..8 {
        total += admin
            .list_offsets("crash", p, quiver_client::OffsetQuery::Latest)
            .await
            .unwrap()
            .unwrap() as usize;
    }
    let records = consume_all(&client, "crash", 8, total).await;
    let mut seen = vec![false; N as usize];
    for &(_, _, v) in &records {
        seen[v as usize] = true;
    }
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|v| !seen[*v as usize])
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_and_zstd_batches_are_stored_as_sent_and_read_back() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let client = node.client(10_000).await;
    let admin = Admin::new(client.clone());
    for (topic, codec) in [
        ("lz4", quiver_client::Compression::Lz4),
        ("zstd", quiver_client::Compression::Zstd),
    ] {
        admin.create_topic(topic, 2, &[]).await.unwrap();
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                compression: codec,
                ..ProducerConfig::default()
            },
        );
        let mut futures = Vec::new();
        for i in 0..20_000u64 {
            futures.push(
                producer
                    .enqueue(ProducerRecord::new(topic, i.to_string()).key(format!("k{i}")))
                    .await
                    .unwrap(),
            );
        }
        for f in futures {
            f.await.unwrap();
        }
        producer.close().await;
        // Stored as sent: the batch the broker serves still carries the producer's codec.
        let f = quiver_schema::requests::Fetch {
            topic,
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            min_bytes: 1,
        };
        let resp = client
            .partition_request(
                topic,
                0,
                |id| quiver_schema::requests::fetch(id, &f),
                |_| Ok(()),
            )
            .await
            .unwrap();
        let records = resp
            .envelope()
            .body_as_fetch_response()
            .and_then(|b| b.single())
            .unwrap()
            .records()
            .unwrap()
            .bytes()
            .to_vec();
        let header = quiver_batch::BatchHeader::parse(&records).unwrap();
        assert_eq!(
            header.compression().unwrap(),
            codec,
            "{topic}: stored with its codec"
        );
        assert!(header.records_count > 1);
        let records = consume_all(&client, topic, 2, 20_000).await;
        let mut values: Vec<u64> = records.iter().map(|r| r.2).collect();
        values.sort_unstable();
        assert_eq!(values, (0..20_000).collect::<Vec<_>>());
        check_order(&records);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_offset_reset_error_requires_a_seek_and_reports_out_of_range() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 1);
    let client = node.client_with_topic(10_000, "strict", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer
        .send(ProducerRecord::new("strict", "0"))
        .await
        .unwrap();
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Error,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config.clone());
    consumer.assign(&[("strict", 0)]);
    let err = consumer.next_record().await.unwrap_err();
    assert!(err.to_string().contains("seek it first"), "{err}");
    consumer
        .seek("strict", 0, quiver_client::SeekTo::Offset(0))
        .await
        .unwrap();
    assert_eq!(consumer.next_record().await.unwrap().offset, 0);
    let mut beyond = Consumer::new(client, config);
    beyond.assign(&[("strict", 0)]);
    beyond
        .seek("strict", 0, quiver_client::SeekTo::Offset(99))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), beyond.next_record())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            quiver_client::ClientError::Broker {
                code: quiver_schema::wire::ErrorCode::OffsetOutOfRange,
                ..
            }
        ),
        "{err}"
    );
}

/// Batches in a partition's segment files, walked by their Kafka batch headers (length at
/// bytes 8..12); zero padding past the last batch ends the walk.
fn batches_on_disk(partition_dir: &std::path::Path) -> usize {
    let mut batches = 0;
    for entry in std::fs::read_dir(partition_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut at = 0usize;
        while let Some(len) = bytes.get(at + 8..at + 12) {
            let len = i32::from_be_bytes(len.try_into().unwrap());
            if len <= 0 {
                break;
            }
            batches += 1;
            at += 12 + len as usize;
        }
    }
    batches
}

/// While a partition's batch is in flight, its next records wait in one open batch (sent
/// whole when the acknowledgement comes) instead of a queue of linger-sized batches: a slow
/// round trip must make batches bigger, not the request rate higher. The node is frozen
/// (SIGSTOP) while the first record is in flight and 2,000 more are enqueued over 50+ ms
/// with linger_ms = 1; before this behaviour every linger interval sealed a batch of its own
/// (dozens of batches queued behind the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_while_a_batch_is_in_flight_share_the_next_batch() {
    const N: usize = 2_000;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 1);
    let client = node.client_with_topic(10_000, "accumulate", 1).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 1,
            batch_bytes: 1 << 20,
            // One batch in flight: the next one fills meanwhile (with more in flight, the
            // partition pipelines smaller batches instead).
            max_in_flight_per_partition: 1,
            ..ProducerConfig::default()
        },
    );
    let record = || ProducerRecord::new("accumulate", vec![b'x'; 100]).partition(0);
    // The route is known before the node freezes: the producer looks a topic's route up
    // before it sends (a lookup would wait for the frozen node too).
    client.route("accumulate").await.unwrap();
    node.freeze(true);
    let mut pending = vec![producer.enqueue(record()).await.unwrap()];
    for i in 0..N {
        // Spread over ≥ 50 ms: 50 times linger_ms, each of which used to seal a batch.
        if i % 40 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        pending.push(producer.enqueue(record()).await.unwrap());
    }
    node.freeze(false);
    for f in pending {
        f.await.expect("acks=all send succeeds");
    }
    producer.close().await;
    drop(client);
    assert!(node.terminate().success(), "clean stop");
    let batches = batches_on_disk(&dir.path().join("topics/accumulate/0"));
    assert!(
        (2..=5).contains(&batches),
        "{} records in {batches} batches: records enqueued while a batch was in flight should share one",
        N + 1
    );
}

/// A broker address where nothing answers holds up only the requests sent to it: the
/// producer's records for a topic whose route is known are acknowledged while another
/// topic's route lookup is still waiting on that address (first in the bootstrap list). Before,
/// the producer's sender looked routes up inline and the client held its connection pool's
/// lock across a connect, so one unreachable broker stalled every request until the connect
/// timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_holds_up_only_its_own_requests() {
    const CONNECT_TIMEOUT_MS: u64 = 3_000;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 1);
    let admin_client = node.client_with_topic(10_000, "known", 1).await;
    Admin::new(admin_client.clone())
        .create_topic("looked-up-later", 1, &[])
        .await
        .unwrap();
    // A bound UDP socket nobody reads: QUIC handshakes to it get no answer at all.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = black_hole.local_addr().unwrap();
    let client = Client::connect(
        &[dead, node.shard_addr(0)],
        quiver_client::ClientConfig {
            trust: quiver_client::TlsTrust::LocalDataDir(node.data_dir.clone()),
            request_timeout_ms: 10_000,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            ..quiver_client::ClientConfig::default()
        },
    )
    .await
    .expect("the second bootstrap address answers");
    client.route("known").await.unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 0,
            ..ProducerConfig::default()
        },
    );
    let later = producer
        .enqueue(ProducerRecord::new("looked-up-later", b"b".to_vec()).partition(0))
        .await
        .unwrap();
    let known = producer
        .enqueue(ProducerRecord::new("known", b"a".to_vec()).partition(0))
        .await
        .unwrap();
    tokio::pin!(later);
    let known_meta = tokio::select! {
        biased;
        r = &mut later => panic!("the looked-up topic's record settled first: {r:?}"),
        r = known => r.expect("the known topic's record is acknowledged"),
    };
    assert_eq!(known_meta.offset, 0);
    assert!(
        client.cached_route("looked-up-later").is_none(),
        "the other topic's route lookup should still be waiting on the dead address"
    );
    let later_meta = tokio::time::timeout(Duration::from_secs(60), later)
        .await
        .expect("the lookup falls through to the live broker")
        .expect("the looked-up topic's record is acknowledged");
    assert_eq!(later_meta.offset, 0);
    producer.close().await;
    drop(black_hole);
}

/// Kafka's drain: once one partition of a shard is ready (here: its batch is full), the
/// shard's other partitions go along with what they hold, without waiting out `linger_ms`
/// (a minute here, so without the drain partition 1's record would wait that long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_partition_takes_the_other_partitions_of_its_shard_along() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 1);
    let client = node.client_with_topic(10_000, "drain", 2).await;
    client.route("drain").await.unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 60_000,
            batch_bytes: 4096,
            ..ProducerConfig::default()
        },
    );
    let lone = producer
        .enqueue(ProducerRecord::new("drain", b"along".to_vec()).partition(1))
        .await
        .unwrap();
    let mut full = Vec::new();
    for _ in 0..8 {
        // 1000-byte records: the fifth no longer fits a 4 KiB batch, which is then sent.
        full.push(
            producer
                .enqueue(ProducerRecord::new("drain", vec![b'x'; 1000]).partition(0))
                .await
                .unwrap(),
        );
    }
    let lone = tokio::time::timeout(Duration::from_secs(20), lone)
        .await
        .expect("partition 1's record went with partition 0's full batch, not after linger_ms")
        .expect("acknowledged");
    assert_eq!((lone.partition, lone.offset), (1, 0));
    let first = tokio::time::timeout(Duration::from_secs(20), full.remove(0))
        .await
        .expect("the full batch was sent")
        .expect("acknowledged");
    assert_eq!((first.partition, first.offset), (0, 0));
    drop(full); // the rest waits for linger_ms or a flush; not needed here
    drop(producer);
}

/// On loopback MTU discovery lets datagrams grow past Ethernet's 1,452 bytes, up to the bound
/// both sides use, and produce and fetch keep working at that size. With a larger bound
/// (8,952) ten datagrams per GSO send passed UDP's 64 KiB, the kernel refused them and no
/// request got through (docs/decisions/0014-mtu-bound.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_grow_to_the_mtu_bound_on_loopback_and_nothing_stalls() {
    const PER_ROUND: u64 = 2_000;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 1);
    let client = node.client_with_topic(10_000, "jumbo", 4).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut sent = 0u64;
    // Traffic until discovery has grown the path MTU (a few round trips on loopback).
    let mtu = loop {
        let mut acks = Vec::new();
        for i in sent..sent + PER_ROUND {
            // 1 KiB values that still read back as the number `consume_all` expects.
            let record = ProducerRecord::new("jumbo", format!("{i:01024}")).key(i.to_string());
            acks.push(producer.enqueue(record).await.unwrap());
        }
        for a in acks {
            a.await.expect("acks=all send succeeds");
        }
        sent += PER_ROUND;
        let stats = client.connection_stats();
        assert_eq!(stats.len(), 1, "one connection to the one shard");
        let mtu = stats[0].1.path.current_mtu;
        if mtu > 1_452 {
            break mtu;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "path MTU still {mtu} bytes after {sent} records"
        );
    };
    assert!(
        mtu <= quiver_client::connection::MTU_UPPER_BOUND_BYTES,
        "path MTU {mtu} above the bound"
    );
    producer.close().await;
    // The fetch responses (the broker's large datagrams) bring every record back.
    let records = consume_all(&client, "jumbo", 4, sent as usize).await;
    let mut values: Vec<u64> = records.iter().map(|r| r.2).collect();
    values.sort_unstable();
    assert!(values.iter().copied().eq(0..sent), "every record once");
    check_order(&records);
}
