//! Any bytes in a replicated partition's `raft-members` file (a torn write, a foreign
//! file): decoding must return the list or an error (the node then starts from the
//! metadata's replicas), never panic; what decodes encodes back to a list that decodes the
//! same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_broker::replication::membership_store::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = decode(text) {
        assert_eq!(decode(&encode(&list)), Ok(list), "a decoded list round-trips");
    }
});
