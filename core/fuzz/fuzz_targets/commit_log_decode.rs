//! Any bytes as a commit log file: decoding frames and folding their entries into replay
//! chains never panics, and what decodes re-encodes to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_storage::commit_log::{format, replay};

fuzz_target!(|data: &[u8]| {
    let (entries, _end) = format::decode_file(1, data);
    if !entries.is_empty() {
        let refs: Vec<&format::Entry> = entries.iter().collect();
        let mut buf = vec![0u8; format::frame_len(&refs)];
        format::encode_frame(1, &refs, &mut buf);
        let (again, end) = format::decode_file(1, &buf);
        assert_eq!(end, format::End::Clean);
        assert_eq!(again, entries);
    }
    let _ = replay::plan(entries);
});
