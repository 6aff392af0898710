//! Any bytes as a segment's tail, walked as recovery walks it (`scan_step` from offset 0,
//! growing the window on `NeedBytes`): never panics, never loops, every batch it believes
//! is whole and valid at the expected offset, and the walk ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_batch::{validate_stored_batch, BatchLimits};
use quiver_storage::scan::{scan_step, ScanStep};

const MAX_BATCH_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut at = 0usize;
    let mut expected = 0u64;
    let mut window = 64usize;
    // Each step either consumes a batch (> 0 bytes), grows the window, or stops.
    for _ in 0..(data.len() + 64) {
        let end = (at + window).min(data.len());
        let at_eof = end == data.len();
        match scan_step(&data[at..end], at_eof, expected, MAX_BATCH_BYTES) {
            ScanStep::Batch { header, bytes } => {
                assert!(bytes > 0 && at + bytes <= data.len());
                assert_eq!(header.base_offset, expected as i64);
                let limits = BatchLimits {
                    max_batch_bytes: MAX_BATCH_BYTES,
                };
                assert!(validate_stored_batch(&data[at..at + bytes], limits).is_ok());
                at += bytes;
                expected = header.last_offset() as u64 + 1;
                window = 64;
            }
            ScanStep::NeedBytes(n) => {
                assert!(!at_eof, "asked for more bytes at the end of the file");
                assert!(n > end - at, "asked for no more than it had");
                window = n;
            }
            ScanStep::Stop(_) => return,
        }
    }
    panic!("the walk did not end");
});
