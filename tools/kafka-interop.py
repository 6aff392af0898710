#!/usr/bin/env python3
"""Interop with an independent Kafka RecordBatch v2 implementation (kafka-python).

  kafka-interop.py generate DIR   write fixture batches DIR/<name>.bin and DIR/<name>.json
                                  (the records kafka-python put in, for our decoder to match)
  kafka-interop.py murmur2 FILE   write key -> partition vectors of kafka-python's default
                                  partitioner (murmur2, like Java Kafka's) as JSON
  kafka-interop.py decode FILE    decode a batch our encoder made; print its records as JSON,
                                  exit 1 when kafka-python rejects it (bad CRC, bad shape)

Needs `pip install -r tools/requirements.txt` (kafka-python==3.0.12); ./tools/test does that.
"""
import json
import os
import sys

from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder


def hexs(b):
    return None if b is None else bytes(b).hex()


CASES = {
    # name: (base_offset, producer (id, epoch, seq), records[(ts, key, value, headers)])
    "single-value": (0, (-1, -1, -1), [(1_700_000_000_000, None, b"hello quiver", [])]),
    "keys-and-headers": (
        42,
        (-1, -1, -1),
        [
            (1_700_000_000_000, b"k1", b"v1", [("trace", b"abc"), ("null-header", None)]),
            (1_700_000_000_005, b"", b"", []),
            (1_699_999_999_990, None, None, [("h", b"\x00\x01\x02")]),
            (1_700_000_000_100, b"key-" * 40, bytes(range(256)) * 4, []),
        ],
    ),
    "idempotent-producer": (
        1000,
        (7, 3, 11),
        [(1_700_000_000_000 + i, str(i).encode(), b"x" * i, []) for i in range(100)],
    ),
}


def generate(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, (base, (pid, pepoch, seq), records) in CASES.items():
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=False,
            producer_id=pid, producer_epoch=pepoch, base_sequence=seq, batch_size=1 << 20)
        for delta, (ts, key, value, headers) in enumerate(records):
            builder.append(delta, timestamp=ts, key=key, value=value, headers=headers)
        raw = bytearray(builder.build())
        # kafka-python builds with baseOffset 0; the broker stamps it (outside the CRC).
        raw[0:8] = base.to_bytes(8, "big", signed=True)
        with open(os.path.join(out_dir, name + ".bin"), "wb") as f:
            f.write(raw)
        expected = {
            "base_offset": base,
            "producer_id": pid, "producer_epoch": pepoch, "base_sequence": seq,
            "records": [
                {"offset": base + i, "timestamp_ms": ts, "key": hexs(k), "value": hexs(v),
                 "headers": [[hk, hexs(hv)] for hk, hv in h]}
                for i, (ts, k, v, h) in enumerate(records)
            ],
        }
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(expected, f, indent=1, sort_keys=True)
            f.write("\n")


def decode(path):
    with open(path, "rb") as f:
        raw = f.read()
    batch = DefaultRecordBatch(raw)
    if not batch.validate_crc():
        print("kafka-python: CRC mismatch", file=sys.stderr)
        return 1
    out = {
        "base_offset": batch.base_offset, "producer_id": batch.producer_id,
        "producer_epoch": batch.producer_epoch, "base_sequence": batch.base_sequence,
        "records": [
            {"offset": r.offset, "timestamp_ms": r.timestamp, "key": hexs(r.key), "value": hexs(r.value),
             "headers": [[hk, hexs(hv)] for hk, hv in r.headers]}
            for r in batch
        ],
    }
    if len(out["records"]) != batch.records_count:
        print("kafka-python: record count mismatch", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, sort_keys=True)
    return 0


def murmur2_vectors(path):
    from kafka.partitioner.default import murmur2
    keys = [b"", b"21", b"foobar", b"abc", b"a-little-bit-long-string", b"key-0", b"\x00\xff",
            b"user-42", b"sensor/7/temperature", bytes(range(37))] + [("k%d" % i).encode() for i in range(40)]
    out = []
    for k in keys:
        h = murmur2(k)
        out.append({"key": k.hex(), "murmur2": h - (1 << 32) if h >= (1 << 31) else h,
                    "partitions": {str(n): (h & 0x7fffffff) % n for n in (1, 3, 8, 16, 100)}})
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "generate":
        generate(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "murmur2":
        murmur2_vectors(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "decode":
        sys.exit(decode(sys.argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
