//! Any bytes in a `.producers` snapshot (a torn write, a foreign file): decoding must return
//! a state or `None` (the log is read instead), never panic; what decodes encodes back to the
//! same bytes. A control batch's marker is read the same way: any bytes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_storage::producer_state::{ProducerLimits, ProducerStates};

fuzz_target!(|data: &[u8]| {
    let _ = quiver_batch::control::marker_kind(data);
    if let Some(states) = ProducerStates::decode(data, ProducerLimits::default()) {
        assert_eq!(states.encode(), data, "a decoded snapshot encodes back byte for byte");
    }
});
