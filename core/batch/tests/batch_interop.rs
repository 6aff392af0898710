//! Interoperability with an independent RecordBatch v2 implementation (kafka-python):
//! fixtures it made decode exactly, and batches we make are accepted by it.
//! Regenerate fixtures with `python3 tools/kafka-interop.py generate core/batch/tests/fixtures/kafka-python`.

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use quiver_batch::{
    header, validate_batch, BatchBuilder, BatchLimits, Compression, NewRecord, RecordIter,
};
use serde_json::Value;

const LIMITS: BatchLimits = BatchLimits {
    max_batch_bytes: 1 << 20,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
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
    let dir = root().join("core/batch/tests/fixtures/kafka-python");
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
