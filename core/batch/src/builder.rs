//! Encodes records into one uncompressed RecordBatch v2 (the producer side of the codec).

use bytes::{BufMut, Bytes, BytesMut};

use super::compression::compress;
use super::header::{self, Compression, HEADER_BYTES, MAGIC_V2};
use super::varint::{put_varint, put_varlong, varlong_len};
use super::BatchError;

/// A record to encode. Timestamps are milliseconds since the Unix epoch (CreateTime).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

impl NewRecord {
    pub fn value(value: impl Into<Bytes>, timestamp_ms: i64) -> Self {
        Self {
            value: Some(value.into()),
            timestamp_ms,
            ..Self::default()
        }
    }
}

/// Builds one batch. `baseOffset` and the leader epoch are left at 0 and -1 for the broker to
/// stamp; the CRC is computed by [`BatchBuilder::build`].
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: i32,
    base_timestamp_ms: Option<i64>,
    max_timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// Transactional and control bits of the attributes.
    flags: i16,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn field_len(field: &Option<Bytes>) -> i64 {
    field.as_ref().map_or(-1, |b| b.len() as i64)
}

fn encoded_field_len(field: &Option<Bytes>) -> usize {
    varlong_len(field_len(field)) + field.as_ref().map_or(0, |b| b.len())
}

fn put_field(out: &mut Vec<u8>, field: &Option<Bytes>) {
    put_varlong(out, field_len(field));
    if let Some(b) = field {
        out.extend_from_slice(b);
    }
}

impl BatchBuilder {
    /// A builder for a batch without idempotence (producer id -1).
    pub fn new() -> Self {
        Self {
            records: Vec::new(),
            count: 0,
            base_timestamp_ms: None,
            max_timestamp_ms: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            flags: 0,
        }
    }

    /// Marks the batch as part of a transaction (attributes bit 4).
    pub fn transactional(mut self) -> Self {
        self.flags |= header::TRANSACTIONAL_BIT;
        self
    }

    /// Marks the batch as a control batch (attributes bit 5): a transaction marker.
    pub fn control(mut self) -> Self {
        self.flags |= header::CONTROL_BIT;
        self
    }

    /// Sets the idempotent-producer identity of the batch.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn record_count(&self) -> i32 {
        self.count
    }

    /// Size of the batch if built now.
    pub fn size_bytes(&self) -> usize {
        HEADER_BYTES + self.records.len()
    }

    /// Bytes `record` would add to the batch.
    pub fn record_size_bytes(&self, record: &NewRecord) -> usize {
        let body = self.body_len(record);
        varlong_len(body as i64) + body
    }

    fn body_len(&self, record: &NewRecord) -> usize {
        let base = self.base_timestamp_ms.unwrap_or(record.timestamp_ms);
        let mut len = 1
            + varlong_len(record.timestamp_ms.wrapping_sub(base))
            + varlong_len(i64::from(self.count))
            + encoded_field_len(&record.key)
            + encoded_field_len(&record.value)
            + varlong_len(record.headers.len() as i64);
        for (k, v) in &record.headers {
            len += varlong_len(k.len() as i64) + k.len() + encoded_field_len(v);
        }
        len
    }

    /// Appends one record.
    pub fn push(&mut self, record: &NewRecord) {
        let base = *self.base_timestamp_ms.get_or_insert(record.timestamp_ms);
        let body = self.body_len(record);
        let out = &mut self.records;
        put_varlong(out, body as i64);
        out.push(0); // attributes
        put_varlong(out, record.timestamp_ms.wrapping_sub(base));
        put_varint(out, self.count);
        put_field(out, &record.key);
        put_field(out, &record.value);
        put_varlong(out, record.headers.len() as i64);
        for (k, v) in &record.headers {
            put_varlong(out, k.len() as i64);
            out.extend_from_slice(k);
            put_field(out, v);
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(record.timestamp_ms);
        self.count += 1;
    }

    /// Encodes the batch with its records compressed by `codec` (attributes bits 0-2 set).
    pub fn build_compressed(&self, codec: Compression) -> Result<BytesMut, BatchError> {
        if codec == Compression::None {
            return Ok(self.build());
        }
        let compressed = compress(codec, &self.records)?;
        Ok(self.encode(codec, &compressed))
    }

    /// Encodes the batch with `baseOffset` 0 and leader epoch -1, CRC filled in.
    pub fn build(&self) -> BytesMut {
        self.encode(Compression::None, &self.records)
    }

    fn encode(&self, codec: Compression, records: &[u8]) -> BytesMut {
        let size = HEADER_BYTES + records.len();
        let mut out = BytesMut::with_capacity(size);
        let batch_length = (size - header::LOG_OVERHEAD_BYTES) as i32;
        out.put_i64(0);
        out.put_i32(batch_length);
        out.put_i32(-1);
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // crc, filled below
        out.put_i16(codec.attribute_bits() | self.flags); // CreateTime, codec, txn bits
        out.put_i32(self.count - 1);
        out.put_i64(self.base_timestamp_ms.unwrap_or(-1));
        out.put_i64(self.max_timestamp_ms);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.count);
        out.extend_from_slice(records);
        header::stamp_crc(&mut out);
        out
    }
}
