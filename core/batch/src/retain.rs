//! Log compaction's rewrite of one batch: keep some records, change nothing else. The batch
//! keeps its base offset, `lastOffsetDelta`, timestamps, producer fields, leader epoch and
//! codec, so the log's offsets stay contiguous batch to batch; only `recordsCount`, the
//! records and the CRC change. A batch may end with no records at all (Kafka keeps such
//! batches too: they carry the offsets and the producer state).

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::{self, BatchHeader, Compression, HEADER_BYTES};
use crate::records::{Record, RecordIter};
use crate::varint::{put_varint, put_varlong, varlong_len};
use crate::BatchError;

/// What [`retain_records`] made of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retained {
    /// Every record is kept: store the batch unchanged.
    All,
    /// Some (or no) records are kept: this batch replaces it.
    Rebuilt {
        batch: BytesMut,
        kept: usize,
        removed: usize,
    },
}

fn field(out: &mut Vec<u8>, f: &Option<Bytes>) {
    match f {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

fn encode_record(out: &mut Vec<u8>, r: &Record, h: &BatchHeader) {
    let mut body = Vec::with_capacity(32);
    body.push(0); // attributes
    put_varlong(&mut body, r.timestamp_ms.wrapping_sub(h.base_timestamp_ms));
    put_varint(&mut body, (r.offset - h.base_offset) as i32);
    field(&mut body, &r.key);
    field(&mut body, &r.value);
    put_varlong(&mut body, r.headers.len() as i64);
    for hd in &r.headers {
        put_varlong(&mut body, hd.key.len() as i64);
        body.extend_from_slice(&hd.key);
        field(&mut body, &hd.value);
    }
    out.reserve(varlong_len(body.len() as i64) + body.len());
    put_varlong(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// The batch with only the records `keep` accepts. Control batches are never thinned.
pub fn retain_records(
    batch: &Bytes,
    mut keep: impl FnMut(&Record) -> bool,
) -> Result<Retained, BatchError> {
    let iter = RecordIter::new(batch.clone())?;
    let h = *iter.header();
    if h.is_control() {
        return Ok(Retained::All);
    }
    let mut kept = Vec::new();
    let mut removed = 0usize;
    for r in iter {
        let r = r?;
        if keep(&r) {
            kept.push(r);
        } else {
            removed += 1;
        }
    }
    if removed == 0 {
        return Ok(Retained::All);
    }
    let mut records = Vec::new();
    for r in &kept {
        encode_record(&mut records, r, &h);
    }
    let codec = h.compression()?;
    let records = match codec {
        Compression::None => records,
        c => crate::compression::compress(c, &records)?,
    };
    let size = HEADER_BYTES + records.len();
    let mut out = BytesMut::with_capacity(size);
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    out.put_slice(&records);
    let length = (size - header::LOG_OVERHEAD_BYTES) as i32;
    out[header::BATCH_LENGTH_AT..header::BATCH_LENGTH_AT + 4]
        .copy_from_slice(&length.to_be_bytes());
    out[header::RECORDS_COUNT_AT..header::RECORDS_COUNT_AT + 4]
        .copy_from_slice(&(kept.len() as i32).to_be_bytes());
    header::stamp_crc(&mut out);
    Ok(Retained::Rebuilt {
        batch: out,
        kept: kept.len(),
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{validate_batch, validate_stored_batch, BatchBuilder, BatchLimits, NewRecord};

    fn batch(codec: Compression) -> Bytes {
        let mut b = BatchBuilder::new().producer(7, 1, 3);
        for i in 0..5u8 {
            b.push(&NewRecord {
                key: Some(Bytes::from(vec![b'k', i % 2])),
                value: (i != 3).then(|| Bytes::from(vec![i; 10])),
                headers: vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"v")))],
                timestamp_ms: 1_000 + i64::from(i),
            });
        }
        let mut out = b.build_compressed(codec).unwrap();
        header::stamp_base_offset(&mut out, 100);
        header::stamp_leader_epoch(&mut out, 4);
        header::stamp_crc(&mut out);
        out.freeze()
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_batch_bytes: 1 << 20,
    };

    #[test]
    fn kept_records_keep_their_offsets_timestamps_and_the_header() {
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let original = batch(codec);
            let Retained::Rebuilt {
                batch: thin,
                kept,
                removed,
            } = retain_records(&original, |r| r.offset % 2 == 1).unwrap()
            else {
                panic!("records were removed");
            };
            assert_eq!((kept, removed), (2, 3));
            assert!(
                validate_batch(&thin, LIMITS).is_err(),
                "not what a producer sends"
            );
            let h = validate_stored_batch(&thin, LIMITS).unwrap();
            let o = BatchHeader::parse(&original).unwrap();
            assert_eq!(
                (
                    h.base_offset,
                    h.last_offset(),
                    h.partition_leader_epoch,
                    h.producer_id,
                    h.max_timestamp_ms
                ),
                (
                    o.base_offset,
                    o.last_offset(),
                    o.partition_leader_epoch,
                    o.producer_id,
                    o.max_timestamp_ms
                )
            );
            let before: Vec<Record> = RecordIter::new(original.clone())
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let after: Vec<Record> = RecordIter::new(thin.freeze())
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let expected: Vec<Record> = before.into_iter().filter(|r| r.offset % 2 == 1).collect();
            assert_eq!(after, expected);
        }
    }

    #[test]
    fn keeping_all_changes_nothing_and_keeping_none_leaves_an_empty_batch() {
        let original = batch(Compression::None);
        assert_eq!(retain_records(&original, |_| true).unwrap(), Retained::All);
        let Retained::Rebuilt {
            batch: empty,
            kept: 0,
            ..
        } = retain_records(&original, |_| false).unwrap()
        else {
            panic!("an empty batch");
        };
        let h = validate_stored_batch(&empty, LIMITS).unwrap();
        assert_eq!((h.records_count, h.last_offset()), (0, 104));
        assert_eq!(RecordIter::new(empty.freeze()).unwrap().count(), 0);
    }
}
