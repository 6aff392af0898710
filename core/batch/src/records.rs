//! Records inside an uncompressed batch: parsed lazily, values handed out as `Bytes` slices
//! of the batch (no copy).
//!
//! ```text
//! length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
//! headerCount varint | (headerKeyLength varint | headerKey | headerValueLength varint | value)*
//! ```

use bytes::Bytes;

use super::header::{BatchHeader, Compression, HEADER_BYTES};
use super::varint::{get_varint, get_varlong};
use super::BatchError;

/// One record header (key is a UTF-8 string in Kafka; kept as bytes here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One decoded record. `key`, `value` and header bytes share the batch's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// The value of the first header named `name` (`None`: absent or null).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key.as_ref() == name.as_bytes())
            .and_then(|h| h.value.as_deref())
    }
}

/// The byte ranges of one record inside a records region; shared by the checker and the iterator.
/// Start and end of a byte field inside the records region.
type Span = (usize, usize);

struct RecordSpans {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<Span>,
    value: Option<Span>,
    headers: Vec<(Span, Option<Span>)>,
    end: usize,
}

fn bytes_field(
    buf: &[u8],
    pos: &mut usize,
    end: usize,
    index: usize,
) -> Result<Option<(usize, usize)>, BatchError> {
    let len = get_varint(&buf[..end], pos)?;
    if len < 0 {
        if len != -1 {
            return Err(BatchError::BadRecord {
                index,
                reason: "negative length other than -1 (null)",
            });
        }
        return Ok(None);
    }
    let start = *pos;
    let stop = start
        .checked_add(len as usize)
        .filter(|s| *s <= end)
        .ok_or(BatchError::BadRecord {
            index,
            reason: "field runs past the end of the record",
        })?;
    *pos = stop;
    Ok(Some((start, stop)))
}

fn parse_record(buf: &[u8], start: usize, index: usize) -> Result<RecordSpans, BatchError> {
    let mut pos = start;
    let length = get_varint(buf, &mut pos)?;
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|e| *e <= buf.len())
        .ok_or(BatchError::BadRecord {
            index,
            reason: "record length runs past the end of the batch",
        })?;
    let body = &buf[..end];
    if pos >= end {
        return Err(BatchError::BadRecord {
            index,
            reason: "empty record",
        });
    }
    pos += 1; // attributes: unused in v2
    let timestamp_delta = get_varlong(body, &mut pos)?;
    let offset_delta = get_varint(body, &mut pos)?;
    let key = bytes_field(buf, &mut pos, end, index)?;
    let value = bytes_field(buf, &mut pos, end, index)?;
    let header_count = get_varint(body, &mut pos)?;
    // Each header takes at least two bytes, so a count larger than the rest is a lie:
    // refuse it before allocating.
    if header_count < 0 || header_count as usize > (end - pos) / 2 {
        return Err(BatchError::BadRecord {
            index,
            reason: "header count is negative or larger than the record",
        });
    }
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let hkey = bytes_field(buf, &mut pos, end, index)?.ok_or(BatchError::BadRecord {
            index,
            reason: "header key is null",
        })?;
        let hvalue = bytes_field(buf, &mut pos, end, index)?;
        headers.push((hkey, hvalue));
    }
    if pos != end {
        return Err(BatchError::BadRecord {
            index,
            reason: "record length does not match its fields",
        });
    }
    Ok(RecordSpans {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers,
        end,
    })
}

/// Checks that `records` holds exactly `count` well-formed records with offset deltas
/// `0..count` (as produced), or with `compacted`, increasing deltas up to
/// `last_offset_delta` (a compacted batch keeps its offsets, not all its records).
pub(super) fn check_records(
    records: &[u8],
    count: i32,
    compacted: Option<i32>,
) -> Result<(), BatchError> {
    let mut pos = 0;
    let mut previous = -1i64;
    for index in 0..count as usize {
        let spans = parse_record(records, pos, index)?;
        let delta = spans.offset_delta as i64;
        let fits = match compacted {
            None => delta == index as i64,
            Some(last) => delta > previous && delta <= i64::from(last),
        };
        if !fits {
            return Err(BatchError::BadRecord {
                index,
                reason: "offset delta is not the record's position in the batch",
            });
        }
        previous = delta;
        pos = spans.end;
    }
    if pos != records.len() {
        return Err(BatchError::BadRecord {
            index: count as usize,
            reason: "bytes follow the last record",
        });
    }
    Ok(())
}

/// Iterates the records of one batch. Uncompressed: keys and values are slices of the
/// batch (no copy). LZ4/zstd: the records are decompressed once, then sliced.
pub struct RecordIter {
    /// The records region (decompressed when the batch was compressed).
    records: Bytes,
    header: BatchHeader,
    pos: usize,
    index: usize,
}

impl RecordIter {
    /// Starts at the first record. The batch should have passed [`super::validate_batch`];
    /// a malformed record still yields an error, never a panic.
    pub fn new(batch: Bytes) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(&batch)?;
        let records = match header.compression()? {
            Compression::None => batch.slice(HEADER_BYTES..),
            codec => Bytes::from(super::compression::decompress(
                codec,
                &batch[HEADER_BYTES..],
            )?),
        };
        Ok(Self {
            records,
            header,
            pos: 0,
            index: 0,
        })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.header.records_count.max(0) as usize || self.pos >= self.records.len()
        {
            return None;
        }
        let spans = match parse_record(&self.records, self.pos, self.index) {
            Ok(s) => s,
            Err(e) => {
                self.pos = self.records.len();
                return Some(Err(e));
            }
        };
        let slice = |r: (usize, usize)| self.records.slice(r.0..r.1);
        let record = Record {
            offset: self.header.base_offset + i64::from(spans.offset_delta),
            timestamp_ms: self.header.base_timestamp_ms + spans.timestamp_delta,
            key: spans.key.map(slice),
            value: spans.value.map(slice),
            headers: spans
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: slice(*k),
                    value: v.map(slice),
                })
                .collect(),
        };
        self.pos = spans.end;
        self.index += 1;
        Some(Ok(record))
    }
}
