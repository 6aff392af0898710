//! The fixed 61-byte header of a Kafka RecordBatch v2 (magic 2), byte for byte.
//!
//! ```text
//! off  size field                  notes
//!   0     8 baseOffset             stamped by the broker, outside the CRC
//!   8     4 batchLength            bytes after this field (total - 12)
//!  12     4 partitionLeaderEpoch   stamped by the broker, outside the CRC
//!  16     1 magic                  always 2
//!  17     4 crc                    CRC-32C (Castagnoli) of bytes 21..end
//!  21     2 attributes             compression bits 0-2, timestamp type bit 3,
//!                                  transactional bit 4, control bit 5
//!  23     4 lastOffsetDelta
//!  27     8 baseTimestamp
//!  35     8 maxTimestamp
//!  43     8 producerId
//!  51     2 producerEpoch
//!  53     4 baseSequence
//!  57     4 recordsCount
//!  61     . records
//! ```
//! All integers are big-endian. Sans-IO: pure functions over byte slices.

use super::BatchError;

pub const BASE_OFFSET_AT: usize = 0;
pub const BATCH_LENGTH_AT: usize = 8;
pub const LEADER_EPOCH_AT: usize = 12;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
pub const ATTRIBUTES_AT: usize = 21;
pub const LAST_OFFSET_DELTA_AT: usize = 23;
pub const BASE_TIMESTAMP_AT: usize = 27;
pub const MAX_TIMESTAMP_AT: usize = 35;
pub const PRODUCER_ID_AT: usize = 43;
pub const PRODUCER_EPOCH_AT: usize = 51;
pub const BASE_SEQUENCE_AT: usize = 53;
pub const RECORDS_COUNT_AT: usize = 57;
/// Size of the fixed header; records start here.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the part that `batchLength` counts.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only batch format this codec speaks.
pub const MAGIC_V2: i8 = 2;

/// Compression codec in attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        Ok(match attributes & 0x07 {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            other => return Err(BatchError::UnknownCompression(other as u8)),
        })
    }

    pub fn attribute_bits(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

pub const TIMESTAMP_TYPE_LOG_APPEND_BIT: i16 = 1 << 3;
pub const TRANSACTIONAL_BIT: i16 = 1 << 4;
pub const CONTROL_BIT: i16 = 1 << 5;

/// The decoded fixed header of one batch. Plain data; `parse` checks only the shape,
/// `validate_batch` checks everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}
fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}
fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

impl BatchHeader {
    /// Parses the fixed header. Fails only when fewer than [`HEADER_BYTES`] are given.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                what: "batch header",
                at: buf.len(),
            });
        }
        Ok(Self {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length: be_i32(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp_ms: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp_ms: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Whole size of the batch on the wire and on disk, or `None` when `batchLength` is
    /// too small to hold a header (a torn or zeroed region).
    pub fn total_bytes(&self) -> Option<usize> {
        let len = usize::try_from(self.batch_length).ok()?;
        let total = len.checked_add(LOG_OVERHEAD_BYTES)?;
        (total >= HEADER_BYTES).then_some(total)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// CRC-32C over `attributes..end`, the range Kafka v2 covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Writes `base_offset` into a batch in place; the CRC does not cover it.
pub fn stamp_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch into a batch in place; the CRC does not cover it.
pub fn stamp_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Writes the CRC field from the batch's content.
pub fn stamp_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}
