//! Transactions on a real node: committed transactions are read once by read_committed
//! consumers and aborted ones never (read_uncommitted sees both; markers are never records);
//! a hung transaction is aborted after its timeout and the last stable offset moves on; bad
//! input (wrong epoch, forged markers, a transactional produce without a transactional id or
//! before init) gets typed errors and leaves the log unchanged.

use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_batch::{BatchBuilder, NewRecord};
use quiver_client::{
    Admin, Client, ClientError, Connection, Consumer, ConsumerConfig, Isolation, OffsetQuery,
    Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use quiver_schema::requests::{self, NewTopic};
use quiver_schema::wire::{self, Acks, ErrorCode};
use quiver_tests::node::Node;

fn txn_producer(client: &Client, id: &str, timeout_ms: u32) -> Producer {
    Producer::new(
        client.clone(),
        ProducerConfig {
            transactional_id: Some(id.into()),
            transaction_timeout_ms: timeout_ms,
            linger_ms: 0,
            ..ProducerConfig::default()
        },
    )
}

/// Every value of `topic`'s partitions from the beginning to their end now.
async fn read_all(
    client: &Client,
    topic: &str,
    partitions: i32,
    isolation: Isolation,
) -> Vec<String> {
    let admin = Admin::new(client.clone());
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            isolation,
            fetch_max_wait_ms: 100,
            ..ConsumerConfig::default()
        },
    );
    let mut ends = Vec::new();
    for p in 0..partitions {
        let end = admin
            .list_offsets(topic, p, OffsetQuery::Latest)
            .await
            .expect("end")
            .unwrap_or(0);
        ends.push(end);
    }
    let tps: Vec<(&str, i32)> = (0..partitions).map(|p| (topic, p)).collect();
    consumer.assign(&tps);
    for p in 0..partitions {
        consumer
            .seek(topic, p, SeekTo::Beginning)
            .await
            .expect("seek");
    }
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..partitions).any(|p| consumer.position(topic, p).unwrap_or(0) < ends[p as usize]) {
        assert!(
            Instant::now() < deadline,
            "reading {topic} to its end took over 20 s"
        );
        if let Ok(r) =
            tokio::time::timeout(Duration::from_millis(200), consumer.next_record()).await
        {
            let r = r.expect("a record");
            values
                .push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    values.sort();
    values
}

/// The last stable offset of `topic/partition` as a read_committed fetch reports it.
async fn last_stable_offset(conn: &Connection, topic: &str, partition: i32) -> i64 {
    let limits = requests::FetchLimits {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
        isolation: wire::Isolation::ReadCommitted,
    };
    let part = requests::FetchPart {
        topic,
        partition,
        offset: 0,
        max_bytes: 1 << 20,
    };
    let r = conn
        .request(requests::fetch_many(
            conn.next_request_id(),
            &limits,
            &[part],
        ))
        .await
        .expect("an answer");
    let entry = r
        .envelope()
        .body_as_fetch_response()
        .and_then(|b| b.partitions())
        .map(|p| p.get(0))
        .expect("one entry");
    entry.last_stable_offset()
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:04}")).collect();
    v.sort();
    v
}

async fn send_all(p: &Producer, topic: &str, partitions: i32, prefix: &str, n: usize) {
    for i in 0..n {
        let r =
            ProducerRecord::new(topic, format!("{prefix}-{i:04}")).partition(i as i32 % partitions);
        drop(p.enqueue(r).await.expect("enqueued"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_are_read_once_and_aborted_ones_only_uncommitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let client = node.client_with_topic(10_000, "out", 4).await;
    let p = txn_producer(&client, "tx-a", 60_000);
    assert!(
        matches!(p.begin_transaction().await, Err(ClientError::Invalid(_))),
        "a transaction needs init_transactions first"
    );
    p.init_transactions().await.expect("init");
    p.begin_transaction().await.expect("begin");
    send_all(&p, "out", 4, "c1", 100).await;
    p.commit_transaction().await.expect("commit");
    p.begin_transaction().await.expect("begin");
    send_all(&p, "out", 4, "ab", 50).await;
    p.abort_transaction().await.expect("abort");
    p.begin_transaction().await.expect("begin");
    send_all(&p, "out", 4, "c2", 10).await;
    p.commit_transaction().await.expect("commit");
    assert!(
        matches!(
            p.send(ProducerRecord::new("out", "outside")).await,
            Err(ClientError::Invalid(_))
        ),
        "a transactional producer sends inside transactions only"
    );

    let mut committed = values("c1", 100);
    committed.extend(values("c2", 10));
    committed.sort();
    assert_eq!(
        read_all(&client, "out", 4, Isolation::ReadCommitted).await,
        committed
    );
    let mut everything = committed.clone();
    everything.extend(values("ab", 50));
    everything.sort();
    assert_eq!(
        read_all(&client, "out", 4, Isolation::ReadUncommitted).await,
        everything,
        "read_uncommitted sees aborted records too, and never a marker"
    );

    // The CLI reads the same: `quiver consume --isolation read_committed` stops at the end
    // (markers move its position) with the committed records only.
    let cli = quiver_tests::cli::Cli::for_node(&node);
    let mut printed: Vec<String> = cli
        .ok(&["consume", "out", "--isolation", "read_committed"], None)
        .lines()
        .map(str::to_string)
        .collect();
    printed.sort();
    assert_eq!(printed, committed);
    let everything_printed = cli.ok(&["consume", "out"], None).lines().count();
    assert_eq!(
        everything_printed,
        everything.len(),
        "read_uncommitted by default"
    );

    // A restart rebuilds the aborted index and the open transactions from the log.
    drop(p);
    let port = node.shard_addr(0).port();
    node.terminate();
    let node = Node::start_on(dir.path(), 2, port);
    let client = node.client(10_000).await;
    assert_eq!(
        read_all(&client, "out", 4, Isolation::ReadCommitted).await,
        committed
    );

    // A new instance of the id fences the old one and carries on.
    let old = txn_producer(&client, "tx-b", 60_000);
    old.init_transactions().await.expect("init");
    old.begin_transaction().await.expect("begin");
    send_all(&old, "out", 4, "zombie", 8).await;
    old.flush().await;
    let new = txn_producer(&client, "tx-b", 60_000);
    new.init_transactions().await.expect("the new instance");
    let fenced = old.commit_transaction().await;
    assert!(
        matches!(
            &fenced,
            Err(ClientError::Broker {
                code: ErrorCode::ProducerFenced,
                ..
            })
        ),
        "the old instance is fenced: {fenced:?}"
    );
    new.begin_transaction().await.expect("begin");
    send_all(&new, "out", 4, "c3", 8).await;
    new.commit_transaction().await.expect("commit");
    committed.extend(values("c3", 8));
    committed.sort();
    assert_eq!(
        read_all(&client, "out", 4, Isolation::ReadCommitted).await,
        committed,
        "the zombie's open transaction was aborted by the new instance's init"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_transaction_is_aborted_after_its_timeout_and_the_lso_moves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 1);
    let client = node.client_with_topic(10_000, "out", 1).await;
    let conn = node.connect(0).await;
    let plain = Producer::new(client.clone(), ProducerConfig::default());
    plain
        .send(ProducerRecord::new("out", "before").partition(0))
        .await
        .expect("sent");
    let hung = txn_producer(&client, "hung", 1_500);
    hung.init_transactions().await.expect("init");
    hung.begin_transaction().await.expect("begin");
    send_all(&hung, "out", 1, "hung", 5).await;
    hung.flush().await;
    plain
        .send(ProducerRecord::new("out", "after").partition(0))
        .await
        .expect("sent");
    assert_eq!(
        last_stable_offset(&conn, "out", 0).await,
        1,
        "the open transaction (offsets 1..6) holds the LSO back"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if last_stable_offset(&conn, "out", 0).await == 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hung transaction was not aborted within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        read_all(&client, "out", 1, Isolation::ReadCommitted).await,
        vec!["after".to_string(), "before".to_string()]
    );
    let late = hung.commit_transaction().await;
    assert!(
        matches!(
            &late,
            Err(ClientError::Broker {
                code: ErrorCode::TransactionAborted,
                ..
            })
        ),
        "{late:?}"
    );
    hung.abort_transaction()
        .await
        .expect("the producer aborts on its side");
    hung.begin_transaction().await.expect("and carries on");
    send_all(&hung, "out", 1, "next", 2).await;
    hung.commit_transaction().await.expect("commit");
}

fn txn_batch(pid: i64, epoch: i16, seq: i32) -> Bytes {
    let mut b = BatchBuilder::new()
        .producer(pid, epoch, seq)
        .transactional();
    b.push(&NewRecord::value("bad", 1_700_000_000_000));
    b.build().freeze()
}

async fn produce(conn: &Connection, records: &[u8], transactional_id: Option<&str>) -> ErrorCode {
    let part = requests::ProducePart {
        topic: "out",
        partition: 0,
        records,
    };
    let r = conn
        .request(requests::produce_many_txn(
            conn.next_request_id(),
            Acks::All,
            10_000,
            &[part],
            transactional_id,
        ))
        .await
        .expect("an answer");
    r.envelope()
        .body_as_produce_response()
        .and_then(|b| b.single())
        .and_then(|p| p.error())
        .map_or(ErrorCode::None, |e| e.code())
}

async fn end_txn(conn: &Connection, id: &str, producer: (i64, i16), commit: bool) -> ErrorCode {
    let r = conn
        .request(quiver_schema::txn::end_txn(
            conn.next_request_id(),
            id,
            producer,
            commit,
        ))
        .await
        .expect("an answer");
    match quiver_schema::txn::read_response(&r.envelope()) {
        Some(quiver_broker_api::Response::EndTxn(Ok(_))) => ErrorCode::None,
        Some(quiver_broker_api::Response::EndTxn(Err(e)))
        | Some(quiver_broker_api::Response::Refused { error: e, .. }) => {
            quiver_schema::codes::wire_code(e.code)
        }
        other => panic!("not an EndTxn answer: {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn bad_transactional_input_gets_typed_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let conn = node.connect(0).await;
    conn.request(requests::create_topics(
        conn.next_request_id(),
        &[NewTopic {
            name: "out",
            partitions: 1,
            replication_factor: 0,
            configs: &[],
        }],
    ))
    .await
    .expect("topic");
    let init = |id: &'static str| {
        let conn = &conn;
        async move {
            let r = conn
                .request(requests::init_producer_id(
                    conn.next_request_id(),
                    Some(id),
                    60_000,
                    None,
                ))
                .await
                .expect("an answer");
            let b = r
                .envelope()
                .body_as_init_producer_id_response()
                .expect("a body");
            (b.producer_id(), b.producer_epoch())
        }
    };
    let (pid, epoch) = init("tx-bad").await;
    // A transactional batch without the transactional id: its partition cannot be added.
    assert_eq!(
        produce(&conn, &txn_batch(pid, epoch, 0), None).await,
        ErrorCode::InvalidTxnState
    );
    // An id never initialised, and a producer id that is not the id's.
    assert_eq!(
        produce(&conn, &txn_batch(pid, epoch, 0), Some("never-init")).await,
        ErrorCode::InvalidProducerIdMapping
    );
    assert_eq!(
        produce(&conn, &txn_batch(pid + 1000, 0, 0), Some("tx-bad")).await,
        ErrorCode::InvalidProducerIdMapping
    );
    // A forged marker (control batch) from a client.
    let forged = quiver_batch::control::marker(
        pid,
        epoch + 1,
        quiver_batch::control::ControlKind::Commit,
        1,
    );
    assert_eq!(
        produce(&conn, &forged, Some("tx-bad")).await,
        ErrorCode::InvalidBatch
    );
    // A second instance takes over: the first one's epoch is fenced at the coordinator.
    let (pid2, epoch2) = init("tx-bad").await;
    assert_eq!((pid2, epoch2), (pid, epoch + 1));
    assert_eq!(
        produce(&conn, &txn_batch(pid, epoch, 0), Some("tx-bad")).await,
        ErrorCode::ProducerFenced
    );
    assert_eq!(
        end_txn(&conn, "tx-bad", (pid, epoch), true).await,
        ErrorCode::ProducerFenced
    );
    assert_eq!(
        end_txn(&conn, "no-such-id", (pid, epoch), true).await,
        ErrorCode::InvalidProducerIdMapping
    );
    // Nothing of it reached the log.
    let end = conn
        .request(requests::list_offsets(
            conn.next_request_id(),
            "out",
            0,
            wire::OffsetSpec::Latest,
            0,
        ))
        .await
        .expect("an answer");
    let offset = end
        .envelope()
        .body_as_list_offsets_response()
        .expect("a body")
        .offset();
    assert_eq!(offset, 0, "the log is unchanged");
    // The current instance writes and commits.
    assert_eq!(
        produce(&conn, &txn_batch(pid2, epoch2, 0), Some("tx-bad")).await,
        ErrorCode::None
    );
    assert_eq!(
        end_txn(&conn, "tx-bad", (pid2, epoch2), true).await,
        ErrorCode::None
    );
    // A delayed write of the ended transaction is fenced by the marker's epoch.
    assert_eq!(
        produce(&conn, &txn_batch(pid2, epoch2, 1), Some("tx-bad")).await,
        ErrorCode::ProducerFenced
    );
}

/// Sum of the end offsets of `topic`'s partitions.
async fn total_end(admin: &Admin, topic: &str, partitions: i32) -> i64 {
    let mut sum = 0;
    for p in 0..partitions {
        sum += admin
            .list_offsets(topic, p, OffsetQuery::Latest)
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
    }
    sum
}

/// A child process killed (-9) when dropped, so a failed assertion leaves none behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_transformer(node: &Node, dir: &std::path::Path) -> Killed {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_transformer"))
        .args([
            node.shard_addr(0).to_string().as_str(),
            dir.to_str().expect("utf-8 path"),
            "in",
            "out",
            "upper",
            "transformer-0",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn transformer");
    Killed(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_killed_at_random_points_outputs_each_input_once() {
    use rand::{Rng, SeedableRng};
    const INPUT: usize = 5_000;
    let seed: u64 = std::env::var("QUIVER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("QUIVER_TEST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let client = node.client_with_topic(10_000, "in", 4).await;
    let admin = Admin::new(client.clone());
    admin.create_topic("out", 4, &[]).await.expect("out");
    let input = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..INPUT {
        let r = ProducerRecord::new("in", format!("{i:04}")).partition(i as i32 % 4);
        drop(input.enqueue(r).await.expect("enqueued"));
    }
    input.flush().await;
    // Killed -9 once it wrote a random amount more (transactions part-way included), seven
    // times; then the last instance runs until the group committed every input offset.
    let committed = |admin: &Admin| {
        let admin = admin.clone();
        async move {
            admin
                .committed_offsets("upper", &[])
                .await
                .unwrap_or_default()
                .iter()
                .map(|(_, c)| c.offset)
                .sum::<i64>()
        }
    };
    let mut written = 0;
    for round in 0..8 {
        let child = spawn_transformer(&node, dir.path());
        let target = written + rng.gen_range(50..400);
        let last = round == 7;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            written = total_end(&admin, "out", 4).await;
            let done = committed(&admin).await >= INPUT as i64;
            if done || (!last && written >= target) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no progress in 60 s (seed {seed})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(child); // kill -9
    }
    assert_eq!(committed(&admin).await, INPUT as i64, "seed {seed}");
    let mut expected: Vec<String> = (0..INPUT).map(|i| format!("out-{i:04}")).collect();
    expected.sort();
    let got = read_all(&client, "out", 4, Isolation::ReadCommitted).await;
    assert_eq!(got.len(), INPUT, "each input once (seed {seed})");
    assert_eq!(got, expected, "seed {seed}");
    let everything = read_all(&client, "out", 4, Isolation::ReadUncommitted).await;
    eprintln!(
        "{} output records written, {} of them in aborted transactions",
        everything.len(),
        everything.len() - INPUT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cut_off_by_a_kill_9_times_out_after_the_restart_with_no_producer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let port = node.shard_addr(0).port();
    let client = node.client_with_topic(10_000, "out", 1).await;
    let p = txn_producer(&client, "vanished", 1_000);
    p.init_transactions().await.expect("init");
    p.begin_transaction().await.expect("begin");
    send_all(&p, "out", 1, "lost", 3).await;
    p.flush().await;
    node.kill();
    drop(p);
    let node = Node::start_on(dir.path(), 2, port);
    let conn = node.connect(0).await;
    assert_eq!(
        last_stable_offset(&conn, "out", 0).await,
        0,
        "held by the open transaction"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    // The abort marker at offset 3 ends it: the LSO reaches the end (4).
    while last_stable_offset(&conn, "out", 0).await != 4 {
        assert!(
            Instant::now() < deadline,
            "the coordinator did not abort the cut-off transaction within 15 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
