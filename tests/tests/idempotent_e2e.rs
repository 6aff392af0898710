//! The idempotent producer on a real node: producer ids are unique across restarts, a
//! retried batch is answered with the offsets it was first written at and written once, a
//! sequence gap is `OutOfOrderSequence` with nothing written, a transactional id gets an id of
//! its own from its coordinator, and the Rust producer with `enable_idempotence` numbers its batches.

use bytes::Bytes;
use quiver_batch::{BatchBuilder, BatchHeader, NewRecord};
use quiver_client::Connection;
use quiver_client::{Admin, OffsetQuery, Producer, ProducerConfig, ProducerRecord};
use quiver_schema::requests::{self, NewTopic};
use quiver_schema::wire::{Acks, ErrorCode};
use quiver_tests::node::Node;

async fn init(conn: &Connection, transactional_id: Option<&str>) -> Result<(i64, i16), ErrorCode> {
    let r = conn
        .request(requests::init_producer_id(
            conn.next_request_id(),
            transactional_id,
            60_000,
            None,
        ))
        .await
        .expect("an answer");
    let b = r
        .envelope()
        .body_as_init_producer_id_response()
        .expect("a body");
    match b.error().map(|e| e.code()) {
        Some(c) if c != ErrorCode::None => Err(c),
        _ => Ok((b.producer_id(), b.producer_epoch())),
    }
}

fn batch(pid: i64, epoch: i16, seq: i32, records: usize) -> Bytes {
    let mut b = BatchBuilder::new().producer(pid, epoch, seq);
    for i in 0..records {
        b.push(&NewRecord::value(format!("v{seq}-{i}"), 1_700_000_000_000));
    }
    b.build().freeze()
}

async fn produce(conn: &Connection, b: &Bytes) -> Result<(i64, i64), ErrorCode> {
    let r = conn
        .request(requests::produce(
            conn.next_request_id(),
            "events",
            0,
            Acks::All,
            10_000,
            b,
        ))
        .await
        .expect("an answer");
    let p = r
        .envelope()
        .body_as_produce_response()
        .and_then(|b| b.single())
        .expect("one partition");
    match p.error().map(|e| e.code()) {
        Some(c) if c != ErrorCode::None => Err(c),
        _ => Ok((p.base_offset(), p.last_offset())),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn retries_are_written_once_gaps_are_refused_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let conn = node.connect(1).await;
    conn.request(requests::create_topics(
        conn.next_request_id(),
        &[NewTopic {
            name: "events",
            partitions: 1,
            replication_factor: 0,
            configs: &[],
        }],
    ))
    .await
    .expect("topic");
    // Ids from the controller, whichever shard is asked.
    let (a, epoch) = init(&conn, None).await.expect("an id");
    let (b, _) = init(&node.connect(0).await, None).await.expect("an id");
    assert_ne!(a, b);
    assert_eq!(epoch, 0);
    let (t, t_epoch) = init(&conn, Some("tx-1")).await.expect("a transactional id");
    assert!(
        t != a && t != b && t_epoch == 0,
        "its own id, from the same blocks"
    );

    let first = produce(&conn, &batch(a, 0, 0, 3)).await.expect("appended");
    let retry = produce(&conn, &batch(a, 0, 0, 3)).await.expect("answered");
    assert_eq!(retry, first, "a retry gets the offsets of the first write");
    let next = produce(&conn, &batch(a, 0, 3, 2))
        .await
        .expect("the next batch");
    assert_eq!(next.0, first.1 + 1);
    assert_eq!(
        produce(&conn, &batch(a, 0, 9, 1)).await,
        Err(ErrorCode::OutOfOrderSequence)
    );
    let end = next.1 + 1;

    // After a kill -9: the retry is still recognised, and new ids are new.
    let port = node.shard_addr(0).port();
    node.kill();
    let node = Node::start_on(dir.path(), 2, port);
    let conn = node.connect(0).await;
    assert_eq!(produce(&conn, &batch(a, 0, 3, 2)).await, Ok(next));
    let (c, _) = init(&conn, None).await.expect("an id");
    assert!(c > a.max(b), "ids are never reused ({c} after {a}, {b})");
    let client = node.client(10_000).await;
    let admin = Admin::new(client.clone());
    assert_eq!(
        admin
            .list_offsets("events", 0, OffsetQuery::Latest)
            .await
            .unwrap(),
        Some(end),
        "nothing was written twice"
    );

    // The Rust producer numbers its batches when idempotence is on.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            enable_idempotence: true,
            linger_ms: 0,
            ..ProducerConfig::default()
        },
    );
    for i in 0..20 {
        producer
            .send(ProducerRecord::new("events", format!("r{i}")).partition(0))
            .await
            .expect("sent");
    }
    // Flush and close finish (an idempotent producer keeps its partitions' sequences, and
    // that must not look like work still to do).
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        producer.flush().await;
        producer.close().await;
    })
    .await
    .expect("flush and close finish");
    let last = admin
        .list_offsets("events", 0, OffsetQuery::Latest)
        .await
        .unwrap()
        .unwrap();
    let mut next = end;
    let mut expected_seq = 0;
    let mut pid = None;
    while next < last {
        let fetched = conn
            .request(requests::fetch(
                conn.next_request_id(),
                &requests::Fetch {
                    topic: "events",
                    partition: 0,
                    offset: next,
                    max_bytes: 1 << 20,
                    max_wait_ms: 0,
                    min_bytes: 1,
                },
            ))
            .await
            .expect("fetch");
        let body = fetched.envelope().body_as_fetch_response().expect("body");
        let records = body.single().and_then(|p| p.records()).expect("records");
        let mut data = records.bytes();
        while !data.is_empty() {
            let h = BatchHeader::parse(data).expect("a batch");
            assert!(h.producer_id >= 0, "an idempotent batch");
            assert_eq!(*pid.get_or_insert(h.producer_id), h.producer_id);
            assert_eq!(h.base_sequence, expected_seq, "sequences are contiguous");
            expected_seq += h.records_count;
            next = h.last_offset() as i64 + 1;
            data = &data[h.total_bytes().expect("size")..];
        }
    }
    assert_eq!(expected_seq, 20);
}

/// 100,000 numbered records from one idempotent producer while its connection is cut three
/// times (the node frozen past the request timeout: the producer reconnects and retries
/// requests the node still holds) and the node is killed -9 and restarted: every
/// acknowledged number is in the partition exactly once, in order.
#[tokio::test(flavor = "current_thread")]
async fn acknowledged_records_are_there_exactly_once_in_order_across_kill_9() {
    exactly_once_in_order_across_cuts_and_kill_9(1).await;
}

/// The same with 5 batches in flight per partition (pipelined): batches the node handles out
/// of order, or sent behind a failed one, go back in sequence order.
#[tokio::test(flavor = "current_thread")]
async fn pipelined_batches_are_there_exactly_once_in_order_across_kill_9() {
    exactly_once_in_order_across_cuts_and_kill_9(5).await;
}

async fn exactly_once_in_order_across_cuts_and_kill_9(in_flight_per_partition: usize) {
    const RECORDS: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), 1);
    let port = node.shard_addr(0).port();
    let client = node.client_with_topic(2_000, "numbers", 1).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            enable_idempotence: true,
            delivery_timeout_ms: 120_000,
            request_timeout_ms: 2_000,
            max_in_flight_per_partition: in_flight_per_partition,
            linger_ms: 0,
            ..ProducerConfig::default()
        },
    );
    let mut acknowledged = Vec::new();
    // Five phases of 20,000: plainly; the connection cut (the node frozen past the request
    // timeout: the client drops the connection, reconnects and resends what the node still
    // holds — the classic duplicate) three times; and the node killed -9 mid-phase and
    // restarted.
    let phase = RECORDS / 5;
    let mut pending = Vec::new();
    for (k, fault) in ["none", "cut", "cut", "kill", "cut"]
        .into_iter()
        .enumerate()
    {
        let range = k * phase..(k + 1) * phase;
        if fault == "cut" {
            node.freeze(true);
        }
        for n in range.clone() {
            let r = ProducerRecord::new("numbers", n.to_string()).partition(0);
            pending.push((n, producer.enqueue(r).await.expect("enqueued")));
            if fault == "kill" && n == range.start + 100 {
                node.kill();
                node = Node::start_on(dir.path(), 1, port);
            }
        }
        if fault == "cut" {
            // Past the 2 s request timeout: every request the node holds times out.
            tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
            node.freeze(false);
        }
        for (n, p) in pending.drain(..) {
            if p.await.is_ok() {
                acknowledged.push(n);
            }
        }
    }
    eprintln!("{} of {RECORDS} acknowledged", acknowledged.len());
    assert!(
        acknowledged.len() > RECORDS / 2,
        "{} acknowledged",
        acknowledged.len()
    );
    // Read the partition back.
    let admin = Admin::new(client.clone());
    let end = admin
        .list_offsets("numbers", 0, OffsetQuery::Latest)
        .await
        .unwrap()
        .unwrap();
    let mut consumer =
        quiver_client::Consumer::new(client, quiver_client::ConsumerConfig::default());
    consumer.assign(&[("numbers", 0)]);
    consumer
        .seek("numbers", 0, quiver_client::SeekTo::Beginning)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while consumer.position("numbers", 0).unwrap_or(0) < end {
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next_record())
            .await
            .expect("records up to the end")
            .expect("a record");
        let v: usize = std::str::from_utf8(r.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        seen.push(v);
    }
    let mut counts = std::collections::HashMap::new();
    for v in &seen {
        *counts.entry(*v).or_insert(0) += 1;
    }
    eprintln!("{} records read, {} distinct", seen.len(), counts.len());
    let twice: Vec<_> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(v, _)| *v)
        .collect();
    assert!(
        twice.is_empty(),
        "written more than once: {} numbers, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    for n in &acknowledged {
        assert!(counts.contains_key(n), "acknowledged {n} is missing");
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");
}

/// Batches that fail for good (the node is down past their delivery timeout) leave a gap in
/// the sequences: the producer bumps its epoch and the next records are written, not refused.
#[tokio::test(flavor = "current_thread")]
async fn after_batches_fail_for_good_the_epoch_is_bumped_and_sending_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 1);
    let port = node.shard_addr(0).port();
    let client = node.client_with_topic(500, "numbers", 1).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            enable_idempotence: true,
            delivery_timeout_ms: 1_500,
            request_timeout_ms: 500,
            linger_ms: 0,
            ..ProducerConfig::default()
        },
    );
    let send = |n: usize| {
        let p = &producer;
        async move {
            p.send(ProducerRecord::new("numbers", n.to_string()).partition(0))
                .await
        }
    };
    for n in 0..10 {
        send(n).await.expect("sent");
    }
    node.kill();
    for n in 10..15 {
        assert!(send(n).await.is_err(), "the node is down: record {n} fails");
    }
    let node = Node::start_on(dir.path(), 1, port);
    for n in 15..25 {
        send(n)
            .await
            .expect("sent after the restart, under the next epoch");
    }
    let end = Admin::new(node.client(10_000).await)
        .list_offsets("numbers", 0, OffsetQuery::Latest)
        .await
        .unwrap();
    assert_eq!(end, Some(20), "the 10 before and the 10 after, once each");
}
