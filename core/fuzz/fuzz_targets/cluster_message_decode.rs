//! Any bytes on a node-to-node link: decoding must return a message or a typed error, never
//! panic; what decodes encodes back to the same message, and a Raft envelope inside goes on
//! to the envelope codec (typed errors only).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_cluster::messages::NodeMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = NodeMessage::decode(data) else {
        return;
    };
    assert_eq!(NodeMessage::decode(&message.encode()).as_ref(), Ok(&message));
    if let NodeMessage::Raft { envelope, .. } = &message {
        let _ = quiver_raft::codec::decode(envelope);
    }
});
