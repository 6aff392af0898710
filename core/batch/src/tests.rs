use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const LIMITS: BatchLimits = BatchLimits {
    max_batch_bytes: 1 << 20,
};

fn sample() -> (Vec<NewRecord>, bytes::BytesMut) {
    let records = vec![
        NewRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"value-1")),
            headers: vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"x")))],
            timestamp_ms: 1_000,
        },
        NewRecord::value(Bytes::from_static(b"value-2"), 1_005),
    ];
    let mut b = BatchBuilder::new();
    for r in &records {
        b.push(r);
    }
    (records, b.build())
}

#[test]
fn builder_output_validates_and_decodes() {
    let (records, batch) = sample();
    let header = validate_batch(&batch, LIMITS).unwrap();
    assert_eq!(header.records_count, 2);
    assert_eq!(header.last_offset_delta, 1);
    assert_eq!(header.base_timestamp_ms, 1_000);
    assert_eq!(header.max_timestamp_ms, 1_005);
    let decoded: Vec<Record> = RecordIter::new(batch.freeze())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(decoded.len(), 2);
    for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
        assert_eq!(d.offset, i as i64);
        assert_eq!(d.timestamp_ms, r.timestamp_ms);
        assert_eq!(d.key, r.key);
        assert_eq!(d.value, r.value);
    }
    assert_eq!(decoded[0].headers[0].key, Bytes::from_static(b"h"));
}

#[test]
fn stamping_offset_and_epoch_keeps_the_crc_valid() {
    let (_, mut batch) = sample();
    header::stamp_base_offset(&mut batch, 1234);
    header::stamp_leader_epoch(&mut batch, 7);
    let h = validate_batch(&batch, LIMITS).unwrap();
    assert_eq!(h.base_offset, 1234);
    assert_eq!(h.partition_leader_epoch, 7);
    assert_eq!(h.last_offset(), 1235);
}

#[test]
fn every_single_bit_flip_in_the_crc_range_is_caught() {
    let (_, batch) = sample();
    for byte in header::ATTRIBUTES_AT..batch.len() {
        for bit in 0..8 {
            let mut bad = batch.clone();
            bad[byte] ^= 1 << bit;
            assert!(
                validate_batch(&bad, LIMITS).is_err(),
                "flip of bit {bit} in byte {byte} went unnoticed"
            );
        }
    }
}

#[test]
fn malformed_batches_get_typed_errors() {
    let (_, batch) = sample();
    assert!(matches!(
        validate_batch(&batch[..30], LIMITS),
        Err(BatchError::Truncated { .. })
    ));
    assert!(matches!(
        validate_batch(&batch[..batch.len() - 1], LIMITS),
        Err(BatchError::LengthMismatch { .. })
    ));
    let mut magic = batch.clone();
    magic[header::MAGIC_AT] = 1;
    assert_eq!(
        validate_batch(&magic, LIMITS),
        Err(BatchError::UnsupportedMagic(1))
    );
    assert!(matches!(
        validate_batch(
            &batch,
            BatchLimits {
                max_batch_bytes: 64
            }
        ),
        Err(BatchError::TooLarge { .. })
    ));
    let mut crc = batch.clone();
    let last = crc.len() - 1;
    crc[last] ^= 0xff;
    assert!(matches!(
        validate_batch(&crc, LIMITS),
        Err(BatchError::CrcMismatch { .. })
    ));
    let mut count = batch.clone();
    count[header::LAST_OFFSET_DELTA_AT + 3] = 5;
    header::stamp_crc(&mut count);
    assert!(matches!(
        validate_batch(&count, LIMITS),
        Err(BatchError::CountMismatch { .. })
    ));
    let mut codec = batch.clone();
    codec[header::ATTRIBUTES_AT + 1] = 7;
    header::stamp_crc(&mut codec);
    assert_eq!(
        validate_batch(&codec, LIMITS),
        Err(BatchError::UnknownCompression(7))
    );
}

#[test]
fn a_record_length_that_lies_is_refused_even_with_a_good_crc() {
    let (_, mut batch) = sample();
    // First record's length varint sits right after the header; make it claim more.
    batch[HEADER_BYTES] = 0x7e;
    header::stamp_crc(&mut batch);
    assert!(matches!(
        validate_batch(&batch, LIMITS),
        Err(BatchError::BadRecord { index: 0, .. })
    ));
}

fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from))
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        arb_bytes(),
        arb_bytes(),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..20).prop_map(Bytes::from),
                arb_bytes(),
            ),
            0..4,
        ),
        0i64..4_000_000_000_000,
    )
        .prop_map(|(key, value, headers, timestamp_ms)| NewRecord {
            key,
            value,
            headers,
            timestamp_ms,
        })
}

proptest! {
    #[test]
    fn encode_then_decode_round_trips(records in proptest::collection::vec(arb_record(), 1..40),
                                      base in 0i64..1 << 40) {
        let mut b = BatchBuilder::new();
        let mut predicted = b.size_bytes();
        for r in &records {
            predicted += b.record_size_bytes(r);
            b.push(r);
        }
        prop_assert_eq!(b.size_bytes(), predicted);
        let mut batch = b.build();
        prop_assert_eq!(batch.len(), predicted);
        header::stamp_base_offset(&mut batch, base);
        let h = validate_batch(&batch, LIMITS).unwrap();
        prop_assert_eq!(h.records_count as usize, records.len());
        prop_assert_eq!(h.max_timestamp_ms, records.iter().map(|r| r.timestamp_ms).max().unwrap());
        let decoded: Vec<Record> = RecordIter::new(batch.freeze()).unwrap().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(d.offset, base + i as i64);
            prop_assert_eq!(d.timestamp_ms, r.timestamp_ms);
            prop_assert_eq!(&d.key, &r.key);
            prop_assert_eq!(&d.value, &r.value);
            let headers: Vec<(Bytes, Option<Bytes>)> = d.headers.iter().map(|h| (h.key.clone(), h.value.clone())).collect();
            prop_assert_eq!(&headers, &r.headers);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = validate_batch(&data, LIMITS);
        if let Ok(iter) = RecordIter::new(Bytes::from(data)) {
            for r in iter { let _ = r; }
        }
    }
}

#[test]
fn lz4_and_zstd_batches_round_trip_and_stay_valid() {
    let (records, _) = sample();
    let mut b = BatchBuilder::new();
    for _ in 0..50 {
        for r in &records {
            b.push(r);
        }
    }
    let plain = b.build();
    for codec in [Compression::Lz4, Compression::Zstd] {
        let batch = b.build_compressed(codec).unwrap();
        assert!(
            batch.len() < plain.len(),
            "{codec:?} shrinks repetitive records"
        );
        let h = validate_batch(&batch, LIMITS).unwrap();
        assert_eq!(h.compression().unwrap(), codec);
        let decoded: Vec<Record> = RecordIter::new(batch.freeze())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<Record> = RecordIter::new(plain.clone().freeze())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded, expected);
    }
}

#[test]
fn damaged_compressed_records_are_errors_not_panics() {
    let (records, _) = sample();
    let mut b = BatchBuilder::new();
    for r in &records {
        b.push(r);
    }
    for codec in [Compression::Lz4, Compression::Zstd] {
        // The batch CRC catches flipped bits; these are well-checksummed batches whose
        // compressed payload is garbage or cut short.
        let good = b.build_compressed(codec).unwrap();
        let mut junk = good.clone();
        junk[HEADER_BYTES..].fill(0xab);
        let mut short = good.clone();
        short.truncate(good.len() - 5);
        let len = (short.len() - 12) as i32;
        short[8..12].copy_from_slice(&len.to_be_bytes());
        for mut bad in [junk, short] {
            header::stamp_crc(&mut bad);
            let result: Result<Vec<Record>, BatchError> =
                RecordIter::new(bad.freeze()).and_then(|it| it.collect());
            assert!(result.is_err(), "{codec:?}");
        }
    }
}
