//! Kafka RecordBatch v2: the unit Quiver stores, replicates and serves, byte for byte.
//!
//! - [`header`]: the fixed 61-byte header, field offsets, in-place stamping.
//! - [`builder`]: [`BatchBuilder`] encodes records into a batch (the producer side).
//! - [`records`]: [`RecordIter`] walks a batch's records as zero-copy `Bytes` slices.
//! - [`validate_batch`]: every check a broker makes before it accepts a batch
//!   ([`validate_stored_batch`]: the same for batches compaction thinned).
//! - [`control`]: transaction markers (commit/abort control batches).
//! - [`retain`]: [`retain::retain_records`] rebuilds a batch with some of its records, offsets
//!   kept (log compaction).
//!
//! Written from the public protocol description; the interop fixtures under
//! `core/tests/fixtures/` were made by an independent implementation (kafka-python).

pub mod builder;
pub mod compression;
pub mod control;
pub mod header;
pub mod records;
pub mod retain;
pub mod varint;

pub use builder::{BatchBuilder, NewRecord};
pub use header::{BatchHeader, Compression, HEADER_BYTES, MAGIC_V2};
pub use records::{Header, Record, RecordIter};

/// Why a batch was refused. Each message says what was wrong and, where the sender can act,
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(
        "record batch truncated: {what} ends at byte {at}; the sender must send whole batches"
    )]
    Truncated { what: &'static str, at: usize },
    #[error("record batch says it is {declared} bytes but {actual} bytes were given; send exactly one whole batch")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("record batch magic {0} is not supported; Quiver speaks RecordBatch v2 (magic 2) only: upgrade the producer")]
    UnsupportedMagic(i8),
    #[error("record batch of {size_bytes} bytes exceeds max_batch_bytes = {max_bytes}; send smaller batches or raise the topic's max_message_bytes")]
    TooLarge { size_bytes: usize, max_bytes: usize },
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}; the batch was corrupted in transit or on disk")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error(
        "record batch uses unknown compression codec {0}; valid codecs are 0 (none) to 4 (zstd)"
    )]
    UnknownCompression(u8),
    #[error("record batch holds {records_count} records but lastOffsetDelta is {last_offset_delta}; they must satisfy count = lastOffsetDelta + 1 with count >= 1")]
    CountMismatch {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("record {index} of the batch has no key, and the topic is compacted (cleanup_policy has compact): every record needs a key there")]
    KeylessRecordInCompactedTopic { index: usize },
    #[error("record {index} of the batch is malformed: {reason}")]
    BadRecord { index: usize, reason: &'static str },
    #[error("malformed varint at byte {at}")]
    BadVarint { at: usize },
    #[error("records of a {0:?}-compressed batch cannot be read by this build (lz4 and zstd can); the broker stores such batches unchanged")]
    CompressedRecords(Compression),
    #[error("{codec:?} records are damaged: {reason}")]
    Codec {
        codec: Compression,
        reason: &'static str,
    },
}

/// The bounds a batch is checked against.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Largest whole batch accepted, header included.
    pub max_batch_bytes: usize,
}

/// Checks a whole batch the way a broker must before accepting it: shape, magic, size,
/// CRC-32C, codec, record count vs `lastOffsetDelta`, and for uncompressed batches that
/// every record parses with offset deltas `0..count`. Returns the parsed header.
pub fn validate_batch(batch: &[u8], limits: BatchLimits) -> Result<BatchHeader, BatchError> {
    validate(batch, limits, false)
}

/// [`validate_batch`] for a batch read back from a log, which compaction may have thinned:
/// it keeps its offsets (`baseOffset`, `lastOffsetDelta`) but may hold fewer records, even
/// none, with increasing offset deltas. What producers send is checked strictly.
pub fn validate_stored_batch(batch: &[u8], limits: BatchLimits) -> Result<BatchHeader, BatchError> {
    validate(batch, limits, true)
}

fn validate(batch: &[u8], limits: BatchLimits, stored: bool) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let declared = i64::from(header.batch_length) + header::LOG_OVERHEAD_BYTES as i64;
    if declared != batch.len() as i64 {
        return Err(BatchError::LengthMismatch {
            declared,
            actual: batch.len(),
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    if batch.len() > limits.max_batch_bytes {
        return Err(BatchError::TooLarge {
            size_bytes: batch.len(),
            max_bytes: limits.max_batch_bytes,
        });
    }
    let computed = header::compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    let compression = header.compression()?;
    let exact = header.records_count >= 1 && header.last_offset_delta == header.records_count - 1;
    let thinned = stored
        && header.last_offset_delta >= 0
        && (0..=header.last_offset_delta.saturating_add(1)).contains(&header.records_count);
    if !exact && !thinned {
        return Err(BatchError::CountMismatch {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if compression == Compression::None {
        let compacted = (!exact).then_some(header.last_offset_delta);
        records::check_records(&batch[HEADER_BYTES..], header.records_count, compacted)?;
    }
    Ok(header)
}

#[cfg(test)]
mod tests;
