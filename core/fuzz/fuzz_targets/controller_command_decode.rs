//! Any bytes in an entry of the controller's log: decoding must return a command or a typed
//! error, never panic; what decodes encodes back to the same command, and applying it to a
//! small cluster's metadata changes it or refuses with a typed error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_cluster::{apply, Command, Metadata, NodeMeta};

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = Command::decode(data) else {
        return;
    };
    assert_eq!(Command::decode(&cmd.encode()).as_ref(), Ok(&cmd));
    let mut meta = Metadata::default();
    for node in 1..=3 {
        let m = NodeMeta {
            client_addr: "127.0.0.1:1".into(),
            internal_addr: "127.0.0.1:2".into(),
            rack: None,
            shards: 2,
            decommissioned: false,
        };
        let _ = apply(&mut meta, &Command::RegisterNode { node, meta: m });
    }
    let before = meta.clone();
    if apply(&mut meta, &cmd).is_err() {
        assert_eq!(meta, before, "a refused command changes nothing");
    }
});
