//! Any bytes from a peer node's internal stream: decoding an envelope must return it or a
//! typed error, never panic or allocate past what the bytes can hold; what decodes encodes
//! back to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_raft::codec::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = decode(data) {
        assert_eq!(decode(&encode(&envelope)).as_ref(), Ok(&envelope));
    }
});
