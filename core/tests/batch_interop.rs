//! Interoperability with an independent RecordBatch v2 implementation (kafka-python):
//! fixtures it made decode exactly, and batches we make are accepted by it.
//! Regenerate fixtures with `python3 tools/kafka-interop.py generate core/tests/fixtures/kafka-python`.

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use quiver_core::batch::{
    header, validate_batch, BatchBuilder, BatchLimits, Compression, NewRecord, RecordIter,
};
use serde_json::Value;

const LIMITS: BatchLimits = BatchLimits {
    max_batch_bytes: 1 << 20,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn to_hex(b: &Option<Bytes>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

/// Our decoding of a batch in the same JSON shape the python side uses.
fn describe(batch: Bytes) -> Value {
    let h = validate_batch(&batch, LIMITS).unwrap();
    let records: Vec<Value> = RecordIter::new(batch)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            serde_json::json!({
                "offset": r.offset,
                "timestamp_ms": r.timestamp_ms,
                "key": to_hex(&r.key),
                "value": to_hex(&r.value),
                "headers": r.headers.iter().map(|h| serde_json::json!([String::from_utf8(h.key.to_vec()).unwrap(), to_hex(&h.value)])).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "base_offset": h.base_offset,
        "producer_id": h.producer_id,
        "producer_epoch": h.producer_epoch,
        "base_sequence": h.base_sequence,
        "records": records,
    })
}

#[test]
fn fixtures_made_by_kafka_python_decode_exactly() {
    let dir = root().join("core/tests/fixtures/kafka-python");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let batch = Bytes::from(std::fs::read(&path).unwrap());
        let expected: Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
        assert_eq!(describe(batch), expected, "{}", path.display());
        checked += 1;
    }
    assert_eq!(checked, 3, "all fixtures were read");
}

#[test]
fn batches_we_encode_are_accepted_by_kafka_python() {
    let cases: Vec<Vec<NewRecord>> = vec![
        vec![NewRecord::value(&b"hello"[..], 1_700_000_000_000)],
        (0..50)
            .map(|i| NewRecord {
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 5 != 0).then(|| Bytes::from(vec![i as u8; i * 13])),
                headers: (0..i % 3)
                    .map(|h| {
                        (
                            Bytes::from(format!("h{h}")),
                            (h % 2 == 0).then(|| Bytes::from_static(b"v")),
                        )
                    })
                    .collect(),
                timestamp_ms: 1_700_000_000_000 + (i as i64 * 37) % 500 - 100,
            })
            .collect(),
    ];
    let scratch = tempfile::tempdir().unwrap();
    let codecs = [Compression::None, Compression::Lz4, Compression::Zstd];
    for (n, (records, codec)) in cases
        .iter()
        .flat_map(|r| codecs.iter().map(move |c| (r, *c)))
        .enumerate()
    {
        let mut b = BatchBuilder::new().producer(9, 1, 100);
        for r in records {
            b.push(r);
        }
        let mut batch = b.build_compressed(codec).unwrap();
        header::stamp_base_offset(&mut batch, 5000);
        let file = scratch.path().join(format!("ours-{n}.bin"));
        std::fs::write(&file, &batch).unwrap();
        let out = Command::new("python3")
            .arg(root().join("tools/kafka-interop.py"))
            .arg("decode")
            .arg(&file)
            .output()
            .expect("python3 is needed for the interop test; run ./tools/test, which installs tools/requirements.txt");
        assert!(
            out.status.success(),
            "kafka-python rejected our batch: {}\n(if kafka-python is missing: pip install -r tools/requirements.txt)",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            theirs,
            describe(batch.freeze()),
            "kafka-python reads what we wrote"
        );
    }
}

/// Writes the fuzzers' seed corpora (valid frames and batches) when QUIVER_WRITE_FUZZ_SEEDS is
/// set: `QUIVER_WRITE_FUZZ_SEEDS=1 cargo test -p quiver-core --test batch_interop`.
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
        ("metadata", requests::metadata(2, &["a", "b"])),
        (
            "create",
            requests::create_topics(
                3,
                &[requests::NewTopic {
                    name: "t",
                    partitions: 3,
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
    std::fs::write(seeds.join("batch_validate").join("small"), &batch).unwrap();
    // A commit log file: two frames of seq 1 (one with a truncation note), then zeroes.
    {
        use quiver_core::log::commit_log::format::{encode_frame, frame_len, Entry, NO_TRUNCATION};
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
    for entry in std::fs::read_dir(root().join("core/tests/fixtures/kafka-python")).unwrap() {
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
