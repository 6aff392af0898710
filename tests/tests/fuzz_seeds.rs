//! The fuzzers' seed corpora (`core/fuzz/seeds/`): valid request frames, batches and commit
//! log files, written on request.

use std::path::PathBuf;

use bytes::Bytes;
use quiver_batch::{BatchBuilder, NewRecord};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes the fuzzers' seed corpora (valid frames and batches) when QUIVER_WRITE_FUZZ_SEEDS is
/// set: `QUIVER_WRITE_FUZZ_SEEDS=1 cargo test -p quiver-tests --test fuzz_seeds`.
#[test]
fn write_fuzz_seeds_on_request() {
    if std::env::var_os("QUIVER_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    use quiver_schema::requests;
    use quiver_schema::wire::{Acks, OffsetSpec};
    let seeds = root().join("core/fuzz/seeds");
    let mut b = BatchBuilder::new();
    b.push(&NewRecord {
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: vec![(Bytes::from_static(b"h"), None)],
        timestamp_ms: 5,
    });
    let batch = b.build();
    let frames = [
        ("handshake", requests::handshake(1, "fuzz")),
        (
            "init-producer-id",
            requests::init_producer_id(19, Some("tx"), 1000, Some((4, 2))),
        ),
        ("metadata", requests::metadata(2, &["a", "b"])),
        (
            "create",
            requests::create_topics(
                3,
                &[requests::NewTopic {
                    name: "t",
                    partitions: 3,
                    replication_factor: 0,
                    configs: &[("retention_ms", "1")],
                }],
            ),
        ),
        ("delete", requests::delete_topics(4, &["t"])),
        ("describe", requests::describe_configs(5, &["t"])),
        (
            "alter",
            requests::alter_configs(6, "t", &[("segment_bytes", "4096")]),
        ),
        (
            "offsets",
            requests::list_offsets(7, "t", 0, OffsetSpec::Timestamp, 9),
        ),
        (
            "produce",
            requests::produce(8, "t", 0, Acks::All, 100, &batch),
        ),
        (
            "produce-many",
            requests::produce_many(
                10,
                Acks::All,
                100,
                &[
                    requests::ProducePart {
                        topic: "t",
                        partition: 0,
                        records: &batch,
                    },
                    requests::ProducePart {
                        topic: "u",
                        partition: 2,
                        records: &batch,
                    },
                ],
            ),
        ),
        (
            "fetch",
            requests::fetch(
                9,
                &requests::Fetch {
                    topic: "t",
                    partition: 0,
                    offset: 0,
                    max_bytes: 10,
                    max_wait_ms: 0,
                    min_bytes: 1,
                },
            ),
        ),
    ];
    for (name, frame) in frames {
        std::fs::write(seeds.join("request_decode").join(name), &frame).unwrap();
    }
    write_group_seeds(&seeds);
    write_txn_seeds(&seeds, &batch);
    std::fs::write(seeds.join("batch_validate").join("small"), &batch).unwrap();
    // A commit log file: two frames of seq 1 (one with a truncation note), then zeroes.
    {
        use quiver_storage::commit_log::format::{encode_frame, frame_len, Entry, NO_TRUNCATION};
        let appended = Entry {
            log_id: 7,
            truncate_from: NO_TRUNCATION,
            key: "topics/t-0".into(),
            batches: vec![Bytes::copy_from_slice(&batch)],
        };
        let truncated = Entry {
            truncate_from: 0,
            batches: vec![],
            ..appended.clone()
        };
        let mut file = Vec::new();
        for entries in [vec![&appended], vec![&truncated, &appended]] {
            let mut frame = vec![0u8; frame_len(&entries)];
            encode_frame(1, &entries, &mut frame);
            file.extend_from_slice(&frame);
        }
        file.extend_from_slice(&[0u8; 64]);
        let dir = seeds.join("commit_log_decode");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("two-frames"), &file).unwrap();
    }
    for entry in std::fs::read_dir(root().join("core/batch/tests/fixtures/kafka-python")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "bin") {
            std::fs::copy(
                &p,
                seeds.join("batch_validate").join(p.file_name().unwrap()),
            )
            .unwrap();
        }
    }
}

/// Group request frames for `request_decode`, and `__consumer_offsets` records (in the
/// `group_record_decode` target's framing) for that target.
fn write_group_seeds(seeds: &std::path::Path) {
    use quiver_broker_api::{Heartbeat, OffsetCommit, TopicPartition};
    use quiver_group::record::Record;
    use quiver_schema::groups;
    let tp = TopicPartition::new("t", 1);
    let hb = Heartbeat {
        group: "g".into(),
        member_id: "m".into(),
        instance_id: Some("i".into()),
        client_id: "c".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 1000,
        subscribed: Some(vec!["t".into()]),
        assignor: Some("range".into()),
        owned: vec![tp.clone()],
    };
    let commit = OffsetCommit {
        group: "g".into(),
        member_id: "m".into(),
        member_epoch: 3,
        offsets: vec![(tp.clone(), 7, "meta".into())],
    };
    let frames = [
        ("group-heartbeat", groups::heartbeat(11, &hb)),
        ("group-commit", groups::offset_commit(12, &commit)),
        (
            "group-fetch",
            groups::offset_fetch(13, "g", std::slice::from_ref(&tp)),
        ),
        ("group-list", groups::list_groups(14)),
        ("group-describe", groups::describe_group(15, "g")),
        ("group-delete", groups::delete_group(16, "g", true)),
        (
            "group-alter",
            groups::alter_group_config(17, "g", &[("assignor", "range")]),
        ),
        (
            "group-nack",
            groups::nack(
                18,
                &quiver_broker_api::Nack {
                    group: "g".into(),
                    member_id: "m".into(),
                    member_epoch: 2,
                    tp: TopicPartition::new("t", 0),
                    offset: 9,
                    error: "bad".into(),
                },
            ),
        ),
    ];
    for (name, frame) in frames {
        std::fs::write(seeds.join("request_decode").join(name), &frame).unwrap();
    }
    let dir = seeds.join("group_record_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let records = [
        (
            "offset",
            Record::Offset {
                group: "g".into(),
                tp: tp.clone(),
                value: Some(quiver_broker_api::CommittedOffset {
                    offset: 7,
                    metadata: "meta".into(),
                    commit_time_ms: 1,
                }),
            },
        ),
        (
            "offset-tombstone",
            Record::Offset {
                group: "g".into(),
                tp: tp.clone(),
                value: None,
            },
        ),
        (
            "delivery",
            Record::Delivery {
                group: "g".into(),
                tp,
                offset: 9,
                value: Some(quiver_group::record::DeliveryValue {
                    deliveries: 2,
                    first_failure_ms: 1,
                    last_error: "bad".into(),
                    moving: Some((0, 4)),
                }),
            },
        ),
        (
            "txn-offsets",
            Record::TxnOffsets {
                group: "g".into(),
                transactional_id: "tx".into(),
                value: Some(quiver_group::record::TxnOffsetsValue {
                    producer_id: 3,
                    epoch: 5,
                    commit_time_ms: 1,
                }),
            },
        ),
    ];
    for (name, record) in records {
        let (k, v) = record.encode();
        let mut framed = (k.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&k);
        if let Some(v) = v {
            framed.push(0);
            framed.extend_from_slice(&v);
        }
        std::fs::write(dir.join(name), framed).unwrap();
    }
}

/// Transaction request frames for `request_decode`, `__transaction_state` records for
/// `txn_record_decode`, and producer-state snapshots (with an open and an aborted
/// transaction) and a marker for `producer_snapshot_decode`.
fn write_txn_seeds(seeds: &std::path::Path, batch: &[u8]) {
    use quiver_broker_api::{OffsetCommit, TopicPartition};
    use quiver_schema::{requests, txn, wire};
    let offsets = OffsetCommit {
        group: "g".into(),
        member_id: "m".into(),
        member_epoch: 3,
        offsets: vec![(TopicPartition::new("in", 0), 10, String::new())],
    };
    let part = requests::ProducePart {
        topic: "t",
        partition: 0,
        records: batch,
    };
    let limits = requests::FetchLimits {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        isolation: wire::Isolation::ReadCommitted,
    };
    let fetch = requests::FetchPart {
        topic: "t",
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
    };
    let frames = [
        (
            "add-offsets-to-txn",
            txn::add_offsets_to_txn(30, "tx", (4, 1), &offsets),
        ),
        ("end-txn", txn::end_txn(31, "tx", (4, 1), true)),
        (
            "produce-transactional",
            requests::produce_many_txn(32, wire::Acks::All, 1000, &[part], Some("tx")),
        ),
        (
            "fetch-read-committed",
            requests::fetch_many(33, &limits, &[fetch]),
        ),
    ];
    for (name, frame) in frames {
        std::fs::write(seeds.join("request_decode").join(name), &frame).unwrap();
    }
    let dir = seeds.join("txn_record_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let t = quiver_txn::Transaction {
        producer_id: 4,
        epoch: 2,
        timeout_ms: 60_000,
        status: quiver_txn::Status::PrepareCommit,
        partitions: [TopicPartition::new("out", 1)].into(),
        offsets: vec![quiver_txn::types::GroupOffsets {
            group: "g".into(),
            offsets: vec![(TopicPartition::new("in", 0), 10, "m".into())],
        }],
        started_ms: 1,
        updated_ms: 2,
        marker_producer: (4, 3),
        last_end: None,
    };
    for (name, value) in [("prepare-commit", Some(t)), ("tombstone", None)] {
        let (k, v) = quiver_txn::Record {
            transactional_id: "tx".into(),
            value,
        }
        .encode();
        let mut framed = (k.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&k);
        if let Some(v) = v {
            framed.push(0);
            framed.extend_from_slice(&v);
        }
        std::fs::write(dir.join(name), framed).unwrap();
    }
    let dir = seeds.join("producer_snapshot_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let mut states = quiver_storage::producer_state::ProducerStates::new(Default::default());
    let mut open = BatchBuilder::new().producer(1, 0, 0).transactional();
    open.push(&NewRecord::value("v", 1));
    let open = open.build();
    let h = quiver_batch::BatchHeader::parse(&open).unwrap();
    states.record_batch(&h, &open, 1);
    let mut aborted = BatchBuilder::new().producer(2, 0, 0).transactional();
    aborted.push(&NewRecord::value("v", 1));
    let mut aborted = aborted.build();
    quiver_batch::header::stamp_base_offset(&mut aborted, 1);
    let h = quiver_batch::BatchHeader::parse(&aborted).unwrap();
    states.record_batch(&h, &aborted, 1);
    let mut marker =
        quiver_batch::control::marker(2, 1, quiver_batch::control::ControlKind::Abort, 1);
    quiver_batch::header::stamp_base_offset(&mut marker, 2);
    let h = quiver_batch::BatchHeader::parse(&marker).unwrap();
    states.record_batch(&h, &marker, 1);
    std::fs::write(dir.join("open-and-aborted"), states.encode()).unwrap();
    std::fs::write(dir.join("abort-marker"), &marker).unwrap();
}
