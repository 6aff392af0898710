//! Any bytes a peer can send as a request frame: decoding must return a request or a typed
//! refusal, never panic, never read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_core::broker::request::{decode, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, _, Request::Produce { parts, .. })) = decode(data, 1 << 20) {
        // Every partition's records lie inside the frame, and no two overlap.
        let mut ranges: Vec<_> = parts.iter().map(|p| p.records.clone()).collect();
        ranges.sort_by_key(|r| r.start);
        for r in &ranges {
            assert!(r.start <= r.end && r.end <= data.len());
        }
        for w in ranges.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }
});
