//! Any bytes a peer can send as a request frame: decoding must return a request or a typed
//! refusal, never panic, never read out of bounds.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use quiver_broker_api::Request;
use quiver_schema::decode::decode_request;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = decode_request(BytesMut::from(data), 1 << 20) {
        if let Request::Produce(p) = decoded.request {
            // Every partition's records were split out of the frame, no two sharing bytes.
            let total: usize = p.partitions.iter().map(|p| p.records.len()).sum();
            assert!(total <= data.len());
        }
    }
});
