//! Any bytes in the controller's log file (a torn write, a damaged disk): replay must stop at
//! the first bad record and never panic; replaying only the valid prefix gives the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_cluster::controller_log::replay;

fuzz_target!(|data: &[u8]| {
    let r = replay(data);
    assert!(r.valid_bytes <= data.len());
    let again = replay(&data[..r.valid_bytes]);
    assert_eq!((again.hard, &again.log), (r.hard, &r.log));
    assert_eq!(again.stopped, None);
});
