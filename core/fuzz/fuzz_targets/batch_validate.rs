//! Any bytes as a record batch: validation and record iteration never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_batch::{validate_batch, BatchLimits, RecordIter};

fuzz_target!(|data: &[u8]| {
    let _ = validate_batch(data, BatchLimits { max_batch_bytes: 1 << 20 });
    if let Ok(iter) = RecordIter::new(bytes::Bytes::copy_from_slice(data)) {
        for r in iter {
            let _ = r;
        }
    }
});
