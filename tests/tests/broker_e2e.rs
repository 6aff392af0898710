//! The broker as users meet it: a real `quiver serve` process with 2 shards, real QUIC sockets,
//! real files. Produce/fetch on every shard, forwarding, long poll, restart, admin, bad input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_batch::{header, validate_batch, BatchBuilder, BatchLimits, NewRecord, RecordIter};
use quiver_client::{Connection, ResponseFrame};
use quiver_schema::requests::{self, Fetch, NewTopic};
use quiver_schema::wire::{self, Acks, ApiKey, ErrorCode, OffsetSpec};
use quiver_tests::node::Node;

fn batch(values: &[&str], timestamp_ms: i64) -> Bytes {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(&NewRecord::value(v.to_string(), timestamp_ms));
    }
    b.build().freeze()
}

fn code(r: &ResponseFrame) -> ErrorCode {
    let env = r.envelope();
    if let Some(e) = env.error() {
        return e.code();
    }
    let body_error = match env.api() {
        ApiKey::Produce => env
            .body_as_produce_response()
            .and_then(|b| b.single())
            .and_then(|b| b.error()),
        ApiKey::Fetch => env
            .body_as_fetch_response()
            .and_then(|b| b.single())
            .and_then(|b| b.error()),
        ApiKey::ListOffsets => env.body_as_list_offsets_response().and_then(|b| b.error()),
        ApiKey::AlterConfigs => env.body_as_alter_configs_response().and_then(|b| b.error()),
        _ => None,
    };
    body_error.map_or(ErrorCode::None, |e| e.code())
}

async fn create(
    conn: &Connection,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> ErrorCode {
    let r = conn
        .request(requests::create_topics(
            conn.next_request_id(),
            &[NewTopic {
                name,
                partitions,
                replication_factor: 0,
                configs,
            }],
        ))
        .await
        .unwrap();
    let results = r
        .envelope()
        .body_as_create_topics_response()
        .unwrap()
        .results()
        .unwrap();
    results.get(0).error().map_or(ErrorCode::None, |e| e.code())
}

/// Owner shard of each partition of `topic`, from a Metadata request.
async fn owners(conn: &Connection, topic: &str) -> Vec<usize> {
    let r = conn
        .request(requests::metadata(conn.next_request_id(), &[topic]))
        .await
        .unwrap();
    let topics = r
        .envelope()
        .body_as_metadata_response()
        .unwrap()
        .topics()
        .unwrap();
    let t = topics.get(0);
    assert!(
        t.error().is_none(),
        "metadata of {topic}: {:?}",
        t.error().map(|e| e.message())
    );
    t.partitions()
        .unwrap()
        .iter()
        .map(|p| p.shard() as usize)
        .collect()
}

async fn produce(
    conn: &Connection,
    topic: &str,
    partition: i32,
    b: &Bytes,
) -> Result<(i64, i64), ErrorCode> {
    let r = conn
        .request(requests::produce(
            conn.next_request_id(),
            topic,
            partition,
            Acks::All,
            10_000,
            b,
        ))
        .await
        .unwrap();
    match code(&r) {
        ErrorCode::None => {
            let p = r
                .envelope()
                .body_as_produce_response()
                .and_then(|b| b.single())
                .unwrap();
            Ok((p.base_offset(), p.last_offset()))
        }
        c => Err(c),
    }
}

async fn fetch(
    conn: &Connection,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: u32,
) -> Result<(Vec<Bytes>, i64), ErrorCode> {
    let f = Fetch {
        topic,
        partition,
        offset,
        max_bytes: 1 << 20,
        max_wait_ms,
        min_bytes: 1,
    };
    let r = conn
        .request(requests::fetch(conn.next_request_id(), &f))
        .await
        .unwrap();
    if code(&r) != ErrorCode::None {
        return Err(code(&r));
    }
    let body = r
        .envelope()
        .body_as_fetch_response()
        .and_then(|b| b.single())
        .unwrap();
    let hw = body.high_watermark();
    let out = valid_batches(body.records().map(|v| v.bytes()).unwrap_or_default());
    Ok((out, hw))
}

/// The whole batches in a fetched records vector, each validated.
fn valid_batches(records: &[u8]) -> Vec<Bytes> {
    let mut records = Bytes::copy_from_slice(records);
    let mut out = Vec::new();
    while !records.is_empty() {
        let h = validate_batch(
            &records[..records
                .len()
                .min(12 + i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize)],
            BatchLimits {
                max_batch_bytes: 1 << 24,
            },
        )
        .expect("fetched batches are valid");
        let len = h.total_bytes().unwrap();
        out.push(records.split_to(len));
    }
    out
}

fn values(batches: &[Bytes]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            RecordIter::new(b.clone())
                .unwrap()
                .map(|r| String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_on_every_shard_with_forwarding_and_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let c0 = node.connect(0).await;
    let c1 = node.connect(1).await;

    let hs = c0
        .request(requests::handshake(c0.next_request_id(), "e2e"))
        .await
        .unwrap();
    let h = hs.envelope().body_as_handshake_response().unwrap();
    assert_eq!(h.shard_count(), 2);
    assert_eq!(
        h.shard_ports().unwrap().iter().collect::<Vec<_>>(),
        vec![node.base_port, node.base_port + 1]
    );

    assert_eq!(
        create(&c1, "events", 4, &[]).await,
        ErrorCode::None,
        "created through a non-controller shard"
    );
    let owner = owners(&c0, "events").await;
    assert_eq!(owner, vec![0, 1, 0, 1]);
    let conns = [&c0, &c1];

    // Each partition through its owner, then the same through the other shard (forwarded).
    for p in 0..4 {
        let own = conns[owner[p]];
        let other = conns[1 - owner[p]];
        let b = batch(&[&format!("p{p}-a"), &format!("p{p}-b")], 1_000 + p as i64);
        assert_eq!(produce(own, "events", p as i32, &b).await, Ok((0, 1)));
        assert_eq!(
            produce(other, "events", p as i32, &b).await,
            Ok((2, 3)),
            "forwarded produce"
        );
        let (got, hw) = fetch(other, "events", p as i32, 0, 0).await.unwrap();
        assert_eq!(hw, 4);
        assert_eq!(
            values(&got),
            vec![
                format!("p{p}-a"),
                format!("p{p}-b"),
                format!("p{p}-a"),
                format!("p{p}-b")
            ]
        );
        // Byte-exact: what was sent, with the offset stamped.
        let mut expect = bytes::BytesMut::from(&b[..]);
        header::stamp_base_offset(&mut expect, 0);
        header::stamp_leader_epoch(&mut expect, 0);
        assert_eq!(got[0], expect.freeze());
    }

    // List offsets: earliest, latest, by timestamp.
    for (spec, ts, want) in [
        (OffsetSpec::Earliest, 0, 0),
        (OffsetSpec::Latest, 0, 4),
        (OffsetSpec::Timestamp, 1_002, 0),
        (OffsetSpec::Timestamp, 5_000, -1),
    ] {
        let r = c0
            .request(requests::list_offsets(
                c0.next_request_id(),
                "events",
                2,
                spec,
                ts,
            ))
            .await
            .unwrap();
        assert_eq!(
            r.envelope()
                .body_as_list_offsets_response()
                .unwrap()
                .offset(),
            want,
            "{spec:?} {ts}"
        );
    }

    // Restart after kill -9: topics and every acknowledged record are back.
    node.kill();
    let node = Node::start(dir.path(), 2);
    let c = node.connect(1).await;
    for p in 0..4 {
        let (got, hw) = fetch(&c, "events", p, 0, 0).await.unwrap();
        assert_eq!(hw, 4);
        assert_eq!(values(&got).len(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_answered_by_the_append_that_satisfies_it() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let c = Arc::new(node.connect(0).await);
    assert_eq!(create(&c, "lp", 2, &[]).await, ErrorCode::None);
    // Partition 1 lives on shard 1: the poll is forwarded and still woken.
    for p in 0..2 {
        let started = Instant::now();
        let poll = {
            let c = c.clone();
            tokio::spawn(async move { fetch(&c, "lp", p, 0, 30_000).await })
        };
        // The poll must be parked, not answered empty: nothing comes back yet.
        tokio::task::yield_now().await;
        assert!(!poll.is_finished());
        produce(&c, "lp", p, &batch(&["wake"], 1)).await.unwrap();
        let (got, _) = tokio::time::timeout(Duration::from_secs(25), poll)
            .await
            .expect("woken before max_wait_ms")
            .unwrap()
            .unwrap();
        assert_eq!(values(&got), vec!["wake"]);
        assert!(started.elapsed() < Duration::from_secs(25));
    }
    // With nothing to wake it, the poll ends empty at max_wait_ms.
    let (got, hw) = fetch(&c, "lp", 0, 1, 200).await.unwrap();
    assert!(got.is_empty());
    assert_eq!(hw, 1);
}

/// Per-entry outcomes of a multi-partition produce: (base offset, error code) in request order.
async fn produce_many(
    conn: &Connection,
    topic: &str,
    batches: &[(i32, &Bytes)],
) -> Vec<(i64, ErrorCode, String)> {
    let parts: Vec<requests::ProducePart<'_>> = batches
        .iter()
        .map(|(partition, records)| requests::ProducePart {
            topic,
            partition: *partition,
            records,
        })
        .collect();
    let r = conn
        .request(requests::produce_many(
            conn.next_request_id(),
            Acks::All,
            10_000,
            &parts,
        ))
        .await
        .unwrap();
    assert!(
        r.envelope().error().is_none(),
        "the request as a whole was refused"
    );
    let entries = r
        .envelope()
        .body_as_produce_response()
        .unwrap()
        .partitions()
        .unwrap();
    entries
        .iter()
        .map(|e| {
            let err = e.error();
            (
                e.base_offset(),
                err.map_or(ErrorCode::None, |e| e.code()),
                err.and_then(|e| e.message())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Per-entry values of a multi-partition fetch, in request order.
async fn fetch_many(
    conn: &Connection,
    parts: &[requests::FetchPart<'_>],
    max_wait_ms: u32,
    max_bytes: u32,
) -> Vec<Vec<String>> {
    let limits = requests::FetchLimits {
        max_wait_ms,
        min_bytes: 1,
        max_bytes,
        isolation: wire::Isolation::ReadUncommitted,
    };
    let r = conn
        .request(requests::fetch_many(conn.next_request_id(), &limits, parts))
        .await
        .unwrap();
    let entries = r
        .envelope()
        .body_as_fetch_response()
        .unwrap()
        .partitions()
        .unwrap();
    entries
        .iter()
        .map(|e| {
            assert!(e.error().is_none(), "{:?}", e.error().map(|e| e.message()));
            values(&valid_batches(
                e.records().map(|v| v.bytes()).unwrap_or_default(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partitions_in_one_request_are_served_one_by_one() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let c0 = Arc::new(node.connect(0).await);
    assert_eq!(create(&c0, "multi", 4, &[]).await, ErrorCode::None);
    let owner = owners(&c0, "multi").await;
    let on =
        |shard: usize| -> Vec<i32> { (0..4i32).filter(|&p| owner[p as usize] == shard).collect() };
    let (mine, theirs) = (on(0), on(1));
    assert!(mine.len() >= 2 && !theirs.is_empty(), "owners {owner:?}");
    let (a, b, c) = (batch(&["a"], 1), batch(&["b"], 1), batch(&["c"], 1));
    // Shard 0's partitions are appended; shard 1's is refused by itself, naming its owner.
    let got = produce_many(
        &c0,
        "multi",
        &[(mine[0], &a), (mine[1], &b), (theirs[0], &c)],
    )
    .await;
    assert_eq!((got[0].0, got[0].1), (0, ErrorCode::None));
    assert_eq!((got[1].0, got[1].1), (0, ErrorCode::None));
    assert_eq!(got[2].1, ErrorCode::NotOwner);
    assert!(
        got[2].2.contains(&(node.base_port + 1).to_string()),
        "the message names the owner: {}",
        got[2].2
    );
    // A request for another shard's partitions only is forwarded whole.
    let got = produce_many(&c0, "multi", &[(theirs[0], &c)]).await;
    assert_eq!((got[0].0, got[0].1), (0, ErrorCode::None));

    // One long poll over two partitions is woken by an append to either.
    let poll = {
        let c0 = c0.clone();
        let (p, q) = (mine[0], mine[1]);
        tokio::spawn(async move {
            let parts = [
                requests::FetchPart {
                    topic: "multi",
                    partition: p,
                    offset: 1,
                    max_bytes: 1 << 20,
                },
                requests::FetchPart {
                    topic: "multi",
                    partition: q,
                    offset: 1,
                    max_bytes: 1 << 20,
                },
            ];
            fetch_many(&c0, &parts, 30_000, 1 << 20).await
        })
    };
    tokio::task::yield_now().await;
    assert!(!poll.is_finished());
    let x = batch(&["x"], 2);
    let got = produce_many(&c0, "multi", &[(mine[1], &x)]).await;
    assert_eq!((got[0].0, got[0].1), (1, ErrorCode::None));
    let got = tokio::time::timeout(Duration::from_secs(25), poll)
        .await
        .expect("woken by the append")
        .unwrap();
    assert_eq!(got, vec![Vec::<String>::new(), vec!["x".to_string()]]);

    // A 1-byte budget: the first partition with data returns one whole batch, the rest wait.
    let parts = [
        requests::FetchPart {
            topic: "multi",
            partition: mine[0],
            offset: 0,
            max_bytes: 1 << 20,
        },
        requests::FetchPart {
            topic: "multi",
            partition: mine[1],
            offset: 0,
            max_bytes: 1 << 20,
        },
    ];
    let got = fetch_many(&c0, &parts, 0, 1).await;
    assert_eq!(got, vec![vec!["a".to_string()], vec![]]);

    // Two entries sharing one records vector are refused: each is split out of the frame.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let shared = fbb.create_vector(&a[..]);
    let entries: Vec<_> = mine[..2]
        .iter()
        .map(|&p| {
            let topic = fbb.create_string("multi");
            wire::ProducePartition::create(
                &mut fbb,
                &wire::ProducePartitionArgs {
                    topic: Some(topic),
                    partition: p,
                    records: Some(shared),
                },
            )
        })
        .collect();
    let partitions = fbb.create_vector(&entries);
    let body = wire::ProduceRequest::create(
        &mut fbb,
        &wire::ProduceRequestArgs {
            acks: Acks::All,
            timeout_ms: 1000,
            partitions: Some(partitions),
            transactional_id: None,
        },
    );
    let root = wire::Envelope::create(
        &mut fbb,
        &wire::EnvelopeArgs {
            request_id: 3,
            api: ApiKey::Produce,
            version: quiver_schema::API_VERSION,
            body_type: wire::Body::ProduceRequest,
            body: Some(body.as_union_value()),
            error: None,
            client_id: None,
        },
    );
    let frame = quiver_schema::frame::finish_frame(fbb, root);
    let resp = c0.raw_exchange(frame).await.expect("answered");
    let env = quiver_schema::frame::parse_frame(&resp, 1 << 25).unwrap();
    assert_eq!(
        env.error().map(|e| e.code()),
        Some(ErrorCode::MalformedRequest)
    );
    // Nothing of it was appended.
    let got = fetch_many(&c0, &parts, 0, 1 << 20).await;
    assert_eq!(
        got,
        vec![
            vec!["a".to_string()],
            vec!["b".to_string(), "x".to_string()]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_at_once_get_distinct_contiguous_offsets() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let a = Arc::new(node.connect(0).await);
    let b = Arc::new(node.connect(1).await);
    assert_eq!(create(&a, "shared", 1, &[]).await, ErrorCode::None);
    let mut tasks = Vec::new();
    for (i, c) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for n in 0..50 {
                let (base, last) = produce(&c, "shared", 0, &batch(&[&format!("c{i}-{n}")], 1))
                    .await
                    .unwrap();
                assert_eq!(base, last);
                offsets.push(base);
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let o = t.await.unwrap();
        assert!(
            o.windows(2).all(|w| w[0] < w[1]),
            "each client's records keep their order"
        );
        all.extend(o);
    }
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<i64>>());
}

async fn describe(c: &Connection) -> Vec<(String, String)> {
    let r = c
        .request(requests::describe_configs(c.next_request_id(), &["cfg"]))
        .await
        .unwrap();
    let t = r
        .envelope()
        .body_as_describe_configs_response()
        .unwrap()
        .topics()
        .unwrap()
        .get(0);
    t.configs()
        .unwrap()
        .iter()
        .map(|e| (e.key().unwrap().to_string(), e.value().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_and_their_errors() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let c = node.connect(0).await;
    assert_eq!(
        create(&c, "cfg", 1, &[("retention_ms", "60000")]).await,
        ErrorCode::None
    );
    assert_eq!(create(&c, "cfg", 1, &[]).await, ErrorCode::TopicExists);
    assert_eq!(
        create(&c, "bad/name", 1, &[]).await,
        ErrorCode::InvalidTopicName
    );
    assert_eq!(
        create(&c, "x", 1, &[("retention_mss", "1")]).await,
        ErrorCode::InvalidConfig
    );
    assert_eq!(create(&c, "y", 0, &[]).await, ErrorCode::InvalidRequest);

    assert!(describe(&c)
        .await
        .contains(&("retention_ms".to_string(), "60000".to_string())));
    let r = c
        .request(requests::alter_configs(
            c.next_request_id(),
            "cfg",
            &[("retention_ms", "120000")],
        ))
        .await
        .unwrap();
    assert_eq!(code(&r), ErrorCode::None);
    assert!(describe(&c)
        .await
        .contains(&("retention_ms".to_string(), "120000".to_string())));
    let r = c
        .request(requests::alter_configs(
            c.next_request_id(),
            "cfg",
            &[("segment_bytes", "1")],
        ))
        .await
        .unwrap();
    assert_eq!(code(&r), ErrorCode::InvalidConfig);
    produce(
        &c,
        "cfg",
        0,
        &batch(&["still works after reconfiguration"], 1),
    )
    .await
    .unwrap();

    let r = c
        .request(requests::delete_topics(
            c.next_request_id(),
            &["cfg", "never"],
        ))
        .await
        .unwrap();
    let results = r
        .envelope()
        .body_as_delete_topics_response()
        .unwrap()
        .results()
        .unwrap();
    assert!(results.get(0).error().is_none());
    assert_eq!(
        results.get(1).error().unwrap().code(),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        produce(&c, "cfg", 0, &batch(&["gone"], 1)).await,
        Err(ErrorCode::UnknownTopic)
    );
    assert!(
        !dir.path().join("topics/cfg/0").exists(),
        "the partition directory is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_typed_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let c = node.connect(0).await;
    assert_eq!(create(&c, "t", 2, &[]).await, ErrorCode::None);

    let raw_code = |bytes: Bytes| {
        let c = &c;
        async move {
            let resp = c.raw_exchange(bytes).await.expect("answered, not dropped");
            let env =
                quiver_schema::frame::parse_frame(&resp, 1 << 25).expect("a valid error frame");
            env.error().map(|e| e.code())
        }
    };
    let mut junk = 32u32.to_le_bytes().to_vec();
    junk.extend([0x5a; 32]);
    assert_eq!(
        raw_code(Bytes::from(junk)).await,
        Some(ErrorCode::MalformedRequest)
    );
    let mut huge = (64u32 << 20).to_le_bytes().to_vec();
    huge.extend([0; 100]);
    assert_eq!(
        raw_code(Bytes::from(huge)).await,
        Some(ErrorCode::FrameTooLarge)
    );
    let whole = requests::metadata(1, &[]);
    assert_eq!(
        raw_code(whole.slice(..whole.len() - 5)).await,
        Some(ErrorCode::MalformedRequest)
    );

    // Unknown API and unsupported version, in otherwise valid envelopes.
    let envelope_with = |api: u16, version: u16| {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let root = wire::Envelope::create(
            &mut fbb,
            &wire::EnvelopeArgs {
                request_id: 9,
                api: ApiKey(api),
                version,
                body_type: wire::Body::NONE,
                body: None,
                error: None,
                client_id: None,
            },
        );
        quiver_schema::frame::finish_frame(fbb, root)
    };
    assert_eq!(
        raw_code(envelope_with(200, quiver_schema::API_VERSION)).await,
        Some(ErrorCode::UnknownApi)
    );
    assert_eq!(
        raw_code(envelope_with(ApiKey::Metadata.0, 7)).await,
        Some(ErrorCode::UnsupportedVersion)
    );
    assert_eq!(
        raw_code(envelope_with(ApiKey::Produce.0, 0)).await,
        Some(ErrorCode::UnsupportedVersion),
        "version 0 carried one partition per Produce; this node speaks version 1"
    );
    assert_eq!(
        raw_code(envelope_with(ApiKey::Produce.0, quiver_schema::API_VERSION)).await,
        Some(ErrorCode::MalformedRequest),
        "API without its body"
    );

    // Unknown topic or partition, a corrupt batch, an offset outside the log.
    let good = batch(&["ok"], 1);
    assert_eq!(
        produce(&c, "nope", 0, &good).await,
        Err(ErrorCode::UnknownTopic)
    );
    assert_eq!(
        produce(&c, "t", 9, &good).await,
        Err(ErrorCode::UnknownPartition)
    );
    let mut flipped = good.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    assert_eq!(
        produce(&c, "t", 0, &Bytes::from(flipped)).await,
        Err(ErrorCode::InvalidBatch)
    );
    assert_eq!(
        produce(&c, "t", 1, &good.slice(..good.len() - 1)).await,
        Err(ErrorCode::InvalidBatch),
        "forwarded, then refused"
    );
    assert_eq!(
        fetch(&c, "t", 0, 5, 0).await.map(|_| ()),
        Err(ErrorCode::OffsetOutOfRange)
    );

    // Nothing broke: the same connection and a new one still work.
    assert_eq!(produce(&c, "t", 0, &good).await, Ok((0, 0)));
    let c2 = node.connect(1).await;
    assert_eq!(
        values(&fetch(&c2, "t", 0, 0, 0).await.unwrap().0),
        vec!["ok"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_appends_fsyncs_and_exits_zero() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let c = node.connect(0).await;
    assert_eq!(create(&c, "bye", 2, &[]).await, ErrorCode::None);
    for p in 0..2 {
        produce(&c, "bye", p, &batch(&["before the signal"], 1))
            .await
            .unwrap();
    }
    let status = node.terminate();
    assert!(status.success(), "exit status {status:?}");
    // A clean close leaves each active segment's index behind (a crash leaves none).
    for p in 0..2 {
        let index = dir
            .path()
            .join(format!("topics/bye/{p}/00000000000000000000.index"));
        assert!(
            index.exists(),
            "{} missing: the log was not closed cleanly",
            index.display()
        );
    }
    let node = Node::start(dir.path(), 2);
    let c = node.connect(1).await;
    for p in 0..2 {
        assert_eq!(
            values(&fetch(&c, "bye", p, 0, 0).await.unwrap().0),
            vec!["before the signal"]
        );
    }
}
