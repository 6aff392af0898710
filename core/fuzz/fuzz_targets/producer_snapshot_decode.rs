//! Any bytes in a `.producers` snapshot (a torn write, a foreign file): decoding must return
//! a state or `None` (the log is read instead), never panic; a snapshot in the current format
//! (`QPS3`) that decodes encodes back to the same bytes, one in the previous format (`QPS2`,
//! still read) encodes to a current one that decodes to the same state. A control batch's
//! marker is read the same way: any bytes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_storage::producer_state::{ProducerLimits, ProducerStates};

fuzz_target!(|data: &[u8]| {
    let _ = quiver_batch::control::marker_kind(data);
    if let Some(states) = ProducerStates::decode(data, ProducerLimits::default()) {
        let encoded = states.encode();
        if data.starts_with(b"QPS3") {
            assert_eq!(
                encoded, data,
                "a decoded snapshot encodes back byte for byte"
            );
        } else {
            let again = ProducerStates::decode(&encoded, ProducerLimits::default())
                .expect("an upgraded snapshot decodes");
            assert_eq!(again.encode(), encoded, "an upgraded snapshot is stable");
        }
    }
});
