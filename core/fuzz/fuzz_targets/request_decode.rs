//! Any bytes a peer can send as a request frame: decoding must return a request or a typed
//! refusal, never panic, never read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_core::broker::request::{decode, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, _, Request::Produce { records, .. })) = decode(data, 1 << 20) {
        // The records range must lie inside the frame.
        assert!(records.end <= data.len());
    }
});
