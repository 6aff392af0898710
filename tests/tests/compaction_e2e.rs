//! Log compaction on a real node: a `cleanup_policy=compact` topic keeps the latest value of
//! every key at its original offset, old tombstones go and young ones stay, a consumer from
//! the beginning sees a consistent key set, and a kill -9 while compaction runs loses nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quiver_client::{
    Admin, Client, Consumer, ConsumerConfig, OffsetQuery, Producer, ProducerConfig, ProducerRecord,
    SeekTo,
};
use quiver_tests::node::{free_ports, Node};

const TOPIC: &str = "kv";
const KEYS: usize = 50;

/// Every record of partition 0: offset → (key, value).
async fn read_all(client: &Client) -> BTreeMap<i64, (String, Option<String>)> {
    let admin = Admin::new(client.clone());
    let end = admin
        .list_offsets(TOPIC, 0, OffsetQuery::Latest)
        .await
        .expect("end")
        .unwrap_or(0);
    let mut out = BTreeMap::new();
    let mut c = Consumer::new(client.clone(), ConsumerConfig::default());
    c.assign(&[(TOPIC, 0)]);
    c.seek(TOPIC, 0, SeekTo::Beginning).await.expect("seek");
    let text = |b: &Option<bytes::Bytes>| {
        b.as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    while c.position(TOPIC, 0).unwrap_or(0) < end {
        let r = tokio::time::timeout(Duration::from_secs(10), c.next_record())
            .await
            .expect("records up to the end arrive")
            .expect("a record");
        out.insert(r.offset, (text(&r.key).unwrap_or_default(), text(&r.value)));
    }
    out
}

/// Produces `rounds` versions of every key; returns each key's last offset and value.
async fn write_versions(
    producer: &Producer,
    from_round: usize,
    rounds: usize,
    latest: &mut BTreeMap<String, (i64, Option<String>)>,
) {
    for round in from_round..from_round + rounds {
        let mut pending = Vec::new();
        for k in 0..KEYS {
            let (key, value) = (format!("k{k}"), format!("k{k}-v{round}-{}", "x".repeat(40)));
            let r = ProducerRecord::new(TOPIC, value.clone())
                .key(key.clone())
                .partition(0);
            pending.push((key, value, producer.enqueue(r).await.expect("enqueued")));
        }
        for (key, value, p) in pending {
            let md = p.await.expect("acknowledged");
            latest.insert(key, (md.offset, Some(value)));
        }
    }
}

async fn tombstone(producer: &Producer, key: &str, timestamp_ms: i64) -> i64 {
    let r = ProducerRecord {
        topic: TOPIC.into(),
        partition: Some(0),
        key: Some(bytes::Bytes::from(key.to_string())),
        value: None,
        headers: Vec::new(),
        timestamp_ms: Some(timestamp_ms),
    };
    producer
        .send(r)
        .await
        .expect("tombstone acknowledged")
        .offset
}

fn start(dir: &std::path::Path, port: u16) -> Node {
    Node::start_with(dir, 1, port, &["--retention-check-interval-ms", "50"])
}

async fn create(node: &Node) -> Client {
    let client = node.client(10_000).await;
    Admin::new(client.clone())
        .create_topic(
            TOPIC,
            1,
            &[
                ("cleanup_policy", "compact"),
                ("segment_bytes", "8192"),
                ("delete_retention_ms", "600000"),
                ("min_cleanable_dirty_ratio", "0.01"),
            ],
        )
        .await
        .expect("topic created");
    client
}

#[tokio::test(flavor = "current_thread")]
async fn compaction_keeps_the_latest_value_of_every_key_at_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), free_ports(1));
    let client = create(&node).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut latest = BTreeMap::new();
    write_versions(&producer, 0, 20, &mut latest).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Old tombstones (past delete_retention_ms) for k0..k4, young ones for k5..k9.
    for k in 0..10 {
        let ts = if k < 5 { now - 3_600_000 } else { now };
        let key = format!("k{k}");
        let offset = tombstone(&producer, &key, ts).await;
        latest.insert(key, (offset, None));
    }
    // Later writes push everything above into sealed segments (the active one is never
    // compacted).
    let mut filler = Vec::new();
    for i in 0..400 {
        let r = ProducerRecord::new(TOPIC, "f".repeat(60))
            .key(format!("filler{}", i % 10))
            .partition(0);
        filler.push(producer.enqueue(r).await.expect("filler"));
    }
    let mut filler_offsets = Vec::new();
    for f in filler {
        filler_offsets.push(f.await.expect("filler acknowledged").offset);
    }
    let first_filler = filler_offsets[0];

    let deadline = Instant::now() + Duration::from_secs(60);
    let compacted = loop {
        let all = read_all(&client).await;
        let below: Vec<_> = all.range(..first_filler).collect();
        let keyed_once = below.len() == KEYS - 5;
        if keyed_once {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted within 60 s: {} records below the filler",
            below.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Below the filler: exactly the latest record of every key, at its original offset;
    // the young tombstones stay, the old ones are gone.
    for (key, (offset, value)) in &latest {
        let k: usize = key[1..].parse().unwrap();
        match compacted.get(offset) {
            Some((got_key, got_value)) => {
                assert!(k >= 5, "old tombstone of {key} still there");
                assert_eq!((got_key, got_value), (key, value), "offset {offset}");
            }
            None => assert!(
                k < 5,
                "the latest record of {key} (offset {offset}) is gone"
            ),
        }
    }
    // Offsets only ever increase and the end did not move.
    let end = Admin::new(client.clone())
        .list_offsets(TOPIC, 0, OffsetQuery::Latest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, filler_offsets[filler_offsets.len() - 1] + 1);
    let described = Admin::new(client).describe_topic(TOPIC).await.unwrap();
    assert_eq!(
        described.configs.get("cleanup_policy").map(String::as_str),
        Some("compact")
    );
    // A record without a key has no place in a compacted topic: refused by name.
    let keyless = ProducerRecord::new(TOPIC, "no key").partition(0);
    let err = producer.send(keyless).await.expect_err("refused");
    assert!(err.to_string().contains("no key"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_kill_9_during_compaction_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_ports(1);
    let mut node = start(dir.path(), port);
    let mut client = create(&node).await;
    let mut latest = BTreeMap::new();
    let mut round = 0;
    for kill in 0..3 {
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        // Writes keep compaction busy (a pass is due after every few segments).
        write_versions(&producer, round, 30, &mut latest).await;
        round += 30;
        // Stop it mid-flight: the next passes are running or about to.
        node.kill();
        node = start(dir.path(), port);
        client = node.client(10_000).await;
        let all = read_all(&client).await;
        for (key, (offset, value)) in &latest {
            let got = all.get(offset).unwrap_or_else(|| {
                panic!("after kill {kill}: the latest record of {key} at {offset} is gone")
            });
            assert_eq!((&got.0, &got.1), (key, value), "after kill {kill}");
        }
    }
    // And compaction still works after the crashes: the old versions go.
    let deadline = Instant::now() + Duration::from_secs(60);
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    loop {
        // A few more writes roll the active segment so the last versions get compacted too.
        write_versions(&producer, round, 2, &mut latest).await;
        round += 2;
        let all = read_all(&client).await;
        if all.len() < KEYS * 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} records after 60 s: not compacted",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
