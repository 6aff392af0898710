//! Failed records on a real node: a poison record is redelivered with the group's backoff,
//! counted durably across a kill -9 of the node, moved once to the dead-letter topic with
//! headers saying where it came from and why, the records after it are processed, and
//! `quiver dlq replay` sends it back once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use quiver_client::{
    Admin, ClientError, Consumer, ConsumerConfig, GroupConsumer, GroupConsumerConfig, NackResult,
    OffsetQuery, OffsetReset, Producer, ProducerConfig, ProducerRecord, SeekTo, Subscription,
};
use quiver_tests::cli::Cli;
use quiver_tests::node::Node;

const POISON: &str = "poison";

/// A member of group `billing` reading `orders` from the beginning.
async fn join_billing(client: &quiver_client::Client) -> GroupConsumer {
    let config = GroupConsumerConfig {
        consumer: ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        ..GroupConsumerConfig::default()
    };
    GroupConsumer::subscribe(
        client.clone(),
        "billing",
        Subscription::Topics(vec!["orders".into()]),
        config,
    )
    .await
    .expect("joined")
}

#[tokio::test(flavor = "current_thread")]
async fn a_poison_record_is_redelivered_then_dead_lettered_once_across_a_node_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), 2);
    let base_port = node.base_port;
    let client = node.client_with_topic(2_000, "orders", 2).await;
    // The first group call creates __consumer_offsets (16 partitions, fsynced): under a
    // loaded CI machine that can take longer than the data path's 2 s timeout.
    let admin = Admin::new(node.client(15_000).await);
    admin
        .alter_group_config(
            "billing",
            &[
                ("max_deliveries", "3"),
                ("redelivery_backoff_ms", "100,300"),
                ("session_timeout_ms", "20000"),
                ("heartbeat_interval_ms", "500"),
            ],
        )
        .await
        .expect("policy set");
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..10 {
        for p in 0..2 {
            let value = if p == 0 && i == 3 {
                POISON.to_string()
            } else {
                format!("r{p}-{i}")
            };
            let r = ProducerRecord::new("orders", value)
                .key(format!("k{i}"))
                .partition(p);
            producer.send(r).await.expect("produced");
        }
    }

    let mut member = join_billing(&client).await;

    let mut processed = BTreeSet::new();
    let mut outcomes = Vec::new();
    let mut last_nack_at: Option<Instant> = None;
    let mut waits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut restarted = false;
    let dead_letter = loop {
        assert!(
            Instant::now() < deadline,
            "no dead letter within 60 s: {outcomes:?}"
        );
        let record = match tokio::time::timeout(Duration::from_secs(5), member.next_record()).await
        {
            Err(_) => continue,
            Ok(Err(e)) if e.is_retriable() => continue,
            Ok(r) => r.expect("a record"),
        };
        let value =
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
        if value != POISON {
            processed.insert(value);
            continue;
        }
        if let Some(at) = last_nack_at {
            waits.push(at.elapsed());
        }
        let outcome = loop {
            match member.nack(&record, "bad record").await {
                Ok(o) => break o,
                Err(e) if e.is_retriable() || matches!(e, ClientError::Broker { .. }) => {
                    assert!(Instant::now() < deadline, "nack kept failing: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("nack: {e}"),
            }
        };
        last_nack_at = Some(Instant::now());
        outcomes.push(outcome.clone());
        match outcome {
            NackResult::Redeliver { deliveries: 2, .. } if !restarted => {
                // The count is in the log: kill the node and start it again.
                node.kill();
                node = Node::start_on(dir.path(), 2, base_port);
                restarted = true;
            }
            NackResult::Redeliver { .. } => {}
            NackResult::Delayed { .. } => panic!("no delay topics configured: {outcome:?}"),
            NackResult::DeadLettered {
                topic,
                partition,
                offset,
                deliveries,
            } => {
                break (topic, partition, offset, deliveries);
            }
        }
    };
    assert!(restarted);
    assert_eq!(
        outcomes[..2],
        [
            NackResult::Redeliver {
                deliveries: 1,
                after_ms: 100
            },
            NackResult::Redeliver {
                deliveries: 2,
                after_ms: 300
            },
        ]
    );
    assert!(
        waits[0] >= Duration::from_millis(100),
        "redelivered before the backoff: {waits:?}"
    );
    let (dlq, dlq_partition, dlq_offset, deliveries) = dead_letter;
    assert_eq!(
        (dlq.as_str(), dlq_partition, deliveries),
        ("orders.billing.dlq", 0, 3)
    );

    // The records after the poison one are processed too.
    let want: BTreeSet<String> = (0..10)
        .flat_map(|i| (0..2).map(move |p| (p, i)))
        .filter(|(p, i)| !(*p == 0 && *i == 3))
        .map(|(p, i)| format!("r{p}-{i}"))
        .collect();
    while !want.is_subset(&processed) {
        assert!(
            Instant::now() < deadline,
            "not processed: {:?}",
            want.difference(&processed)
        );
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), member.next_record()).await
        {
            processed.insert(
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            );
        }
    }
    member.close().await.expect("left");

    // Exactly one dead letter, with its headers.
    let client = node.client(10_000).await;
    let admin = Admin::new(client.clone());
    let end = admin
        .list_offsets(&dlq, 0, OffsetQuery::Latest)
        .await
        .unwrap()
        .unwrap_or(0);
    let others = admin
        .list_offsets(&dlq, 1, OffsetQuery::Latest)
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        (end, others, dlq_offset),
        (1, 0, 0),
        "one dead letter, written once"
    );
    let mut reader = Consumer::new(client.clone(), ConsumerConfig::default());
    reader.assign(&[(dlq.as_str(), 0)]);
    reader.seek(&dlq, 0, SeekTo::Beginning).await.unwrap();
    let letter = reader.next_record().await.expect("the dead letter");
    assert_eq!(letter.value.as_deref(), Some(POISON.as_bytes()));
    assert_eq!(letter.key.as_deref(), Some(&b"k3"[..]));
    let header = |k: &str| {
        letter
            .header(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("quiver.dlq.topic").as_deref(), Some("orders"));
    assert_eq!(header("quiver.dlq.partition").as_deref(), Some("0"));
    assert_eq!(header("quiver.dlq.offset").as_deref(), Some("3"));
    assert_eq!(header("quiver.dlq.group").as_deref(), Some("billing"));
    assert_eq!(header("quiver.dlq.deliveries").as_deref(), Some("3"));
    assert_eq!(header("quiver.dlq.error").as_deref(), Some("bad record"));
    assert!(header("quiver.dlq.first_failure_ms").is_some_and(|v| v.parse::<i64>().is_ok()));
    // The group moved past it.
    let committed = admin.committed_offsets("billing", &[]).await.unwrap();
    let p0 = committed
        .iter()
        .find(|(tp, _)| tp.topic == "orders" && tp.partition == 0)
        .unwrap();
    assert!(p0.1.offset >= 4);

    // Replay sends it back to orders/0 once, however often it runs.
    let before = admin
        .list_offsets("orders", 0, OffsetQuery::Latest)
        .await
        .unwrap()
        .unwrap();
    let cli = Cli::for_node(&node);
    let out = cli.ok(&["dlq", "replay", "billing", "--json"], None);
    assert!(out.contains("\"replayed\":1"), "{out}");
    let again = cli.ok(&["dlq", "replay", "billing"], None);
    assert!(again.contains("nothing to replay"), "{again}");
    let after = admin
        .list_offsets("orders", 0, OffsetQuery::Latest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, before + 1);
    let mut back = Consumer::new(client, ConsumerConfig::default());
    back.assign(&[("orders", 0)]);
    back.seek("orders", 0, SeekTo::Offset(before))
        .await
        .unwrap();
    let replayed = back.next_record().await.unwrap();
    assert_eq!(replayed.value.as_deref(), Some(POISON.as_bytes()));
    assert!(replayed
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with(b"quiver.dlq.")));
}

#[tokio::test(flavor = "current_thread")]
async fn with_delay_topics_a_failed_record_waits_aside_and_its_partition_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let client = node.client_with_topic(10_000, "orders", 1).await;
    let admin = Admin::new(client.clone());
    admin
        .alter_group_config(
            "billing",
            &[
                ("max_deliveries", "4"),
                ("redelivery_backoff_ms", "200,300,400"),
                ("retry_levels", "2"),
                ("heartbeat_interval_ms", "200"),
            ],
        )
        .await
        .expect("policy set");
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..10 {
        let value = if i == 3 {
            POISON.to_string()
        } else {
            format!("r{i}")
        };
        let r = ProducerRecord::new("orders", value).key(format!("k{i}"));
        producer.send(r).await.expect("produced");
    }
    let mut member = join_billing(&client).await;
    assert_eq!(member.retry_levels(), 2);

    let start = Instant::now();
    let mut processed = Vec::new();
    let mut moves = Vec::new();
    let mut poison_seen_at = Vec::new();
    let deadline = start + Duration::from_secs(60);
    let letter = loop {
        assert!(
            Instant::now() < deadline,
            "not dead-lettered in 60 s: {moves:?}"
        );
        let Ok(r) = tokio::time::timeout(Duration::from_secs(5), member.next_record()).await else {
            continue;
        };
        let r = r.expect("a record");
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        if value != POISON {
            processed.push(value);
            continue;
        }
        poison_seen_at.push((r.topic.to_string(), start.elapsed()));
        match member.nack(&r, "bad record").await.expect("nack") {
            NackResult::DeadLettered {
                topic, deliveries, ..
            } => break (topic, deliveries),
            other => moves.push(other),
        }
    };
    // Delivered from orders, then retry.1, retry.2, retry.2 (the last level repeats).
    let topics: Vec<&str> = poison_seen_at.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "orders",
            "orders.billing.retry.1",
            "orders.billing.retry.2",
            "orders.billing.retry.2"
        ]
    );
    for (i, m) in moves.iter().enumerate() {
        let NackResult::Delayed { deliveries, .. } = m else {
            panic!("a delay topic move: {m:?}");
        };
        assert_eq!(*deliveries, i as u32 + 1);
    }
    assert_eq!(letter, ("orders.billing.dlq".to_string(), 4));
    // Each copy waited its backoff: 200, 300, 400 ms after the failure before.
    for (w, min_ms) in poison_seen_at.windows(2).zip([200u64, 300, 400]) {
        assert!(
            w[1].1 - w[0].1 >= Duration::from_millis(min_ms),
            "{poison_seen_at:?}"
        );
    }
    // The source partition went on at once: every other record came before the first retry.
    let first_retry = poison_seen_at[1].1;
    assert_eq!(processed.len(), 9, "{processed:?}");
    assert!(first_retry >= Duration::from_millis(200));
    member.close().await.expect("left");
    // The dead letter names the original record, not the copy.
    let mut reader = Consumer::new(client.clone(), ConsumerConfig::default());
    reader.assign(&[("orders.billing.dlq", 0)]);
    reader
        .seek("orders.billing.dlq", 0, SeekTo::Beginning)
        .await
        .unwrap();
    let dead = reader.next_record().await.unwrap();
    let header = |k: &str| {
        dead.header(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("quiver.dlq.topic").as_deref(), Some("orders"));
    assert_eq!(header("quiver.dlq.offset").as_deref(), Some("3"));
    assert_eq!(header("quiver.dlq.deliveries").as_deref(), Some("4"));
    assert!(header("quiver.retry.not_before_ms").is_none());
}
