//! Walking batches in a segment's bytes (sans-IO): used by recovery, index rebuilds and
//! reads. Every batch is checked in full (shape, CRC, contiguity of offsets) before it is
//! believed.

use quiver_batch::{header, validate_stored_batch, BatchHeader, BatchLimits};

/// Outcome of looking at the bytes at one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStep {
    /// A whole, valid batch of `bytes` bytes.
    Batch { header: BatchHeader, bytes: usize },
    /// The window must hold at least this many bytes from the position to decide.
    NeedBytes(usize),
    /// No valid batch starts here.
    Stop(StopReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Zeroes (the padding after the last write) or nothing at all.
    CleanEnd,
    /// Bytes that are not a valid continuation of the log: a torn or corrupt tail.
    Invalid(String),
}

/// Looks at `window` (the bytes from the current position; `at_eof` when nothing follows)
/// expecting a batch whose base offset is `expected_offset`.
pub fn scan_step(
    window: &[u8],
    at_eof: bool,
    expected_offset: u64,
    max_batch_bytes: usize,
) -> ScanStep {
    if window.len() < header::HEADER_BYTES {
        return if at_eof {
            if window.iter().all(|b| *b == 0) {
                ScanStep::Stop(StopReason::CleanEnd)
            } else {
                ScanStep::Stop(StopReason::Invalid(format!(
                    "{} trailing bytes, shorter than a batch header",
                    window.len()
                )))
            }
        } else {
            ScanStep::NeedBytes(header::HEADER_BYTES)
        };
    }
    let Ok(head) = BatchHeader::parse(window) else {
        return ScanStep::NeedBytes(header::HEADER_BYTES);
    };
    if head.batch_length == 0
        && head.base_offset == 0
        && window[..header::HEADER_BYTES].iter().all(|b| *b == 0)
    {
        return ScanStep::Stop(StopReason::CleanEnd);
    }
    let Some(total) = head.total_bytes().filter(|t| *t <= max_batch_bytes) else {
        return ScanStep::Stop(StopReason::Invalid(format!(
            "batch length {} is impossible",
            head.batch_length
        )));
    };
    if window.len() < total {
        return if at_eof {
            ScanStep::Stop(StopReason::Invalid(format!(
                "batch at offset {} needs {total} bytes, only {} remain (torn write)",
                head.base_offset,
                window.len()
            )))
        } else {
            ScanStep::NeedBytes(total)
        };
    }
    if head.base_offset != expected_offset as i64 {
        return ScanStep::Stop(StopReason::Invalid(format!(
            "batch base offset {} where {expected_offset} was expected",
            head.base_offset
        )));
    }
    match validate_stored_batch(&window[..total], BatchLimits { max_batch_bytes }) {
        Ok(header) => ScanStep::Batch {
            header,
            bytes: total,
        },
        Err(e) => ScanStep::Stop(StopReason::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_batch::{BatchBuilder, NewRecord};

    fn batch_at(base: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        b.push(&NewRecord::value(&b"abc"[..], 5));
        let mut out = b.build();
        header::stamp_base_offset(&mut out, base);
        out.to_vec()
    }

    #[test]
    fn walks_batches_and_stops_cleanly_at_padding() {
        let mut data = batch_at(0);
        let first = data.len();
        data.extend(batch_at(1));
        data.resize(4096, 0);
        let ScanStep::Batch { bytes, .. } = scan_step(&data, true, 0, 1 << 20) else {
            panic!()
        };
        assert_eq!(bytes, first);
        assert!(matches!(
            scan_step(&data[first..], true, 1, 1 << 20),
            ScanStep::Batch { .. }
        ));
        let end = first * 2;
        assert_eq!(
            scan_step(&data[end..], true, 2, 1 << 20),
            ScanStep::Stop(StopReason::CleanEnd)
        );
        assert_eq!(
            scan_step(&[], true, 2, 1 << 20),
            ScanStep::Stop(StopReason::CleanEnd)
        );
    }

    #[test]
    fn torn_gapped_and_flipped_batches_stop_the_scan() {
        let data = batch_at(0);
        assert!(matches!(
            scan_step(&data[..data.len() - 3], true, 0, 1 << 20),
            ScanStep::Stop(StopReason::Invalid(_))
        ));
        assert_eq!(
            scan_step(&data[..10], false, 0, 1 << 20),
            ScanStep::NeedBytes(61)
        );
        assert_eq!(
            scan_step(&data[..70], false, 0, 1 << 20),
            ScanStep::NeedBytes(data.len())
        );
        assert!(matches!(
            scan_step(&data, true, 5, 1 << 20),
            ScanStep::Stop(StopReason::Invalid(_))
        ));
        let mut flipped = data.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            scan_step(&flipped, true, 0, 1 << 20),
            ScanStep::Stop(StopReason::Invalid(_))
        ));
    }
}
