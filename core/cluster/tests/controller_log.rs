//! The controller's log file format: replay rebuilds the durable state; a torn or damaged
//! tail ends the valid log where it starts; a rewrite replays to the same state.

use quiver_cluster::controller_log::{encode, replay, rewrite, Record};
use quiver_raft::types::{Entry, HardState, Membership, Snapshot};

fn records() -> Vec<Record> {
    vec![
        Record::HardState(HardState {
            term: 1,
            voted_for: Some(1),
        }),
        Record::Entries {
            first_index: 1,
            entries: vec![
                Entry::data(1, b"a".to_vec()),
                Entry::data(1, b"b".to_vec()),
                Entry::data(1, b"c".to_vec()),
            ],
        },
        Record::HardState(HardState {
            term: 2,
            voted_for: None,
        }),
        // A new leader replaced entry 3.
        Record::Entries {
            first_index: 3,
            entries: vec![Entry::data(2, b"C".to_vec()), Entry::data(2, b"d".to_vec())],
        },
        Record::Snapshot(Snapshot {
            index: 2,
            term: 1,
            membership: Membership::of_voters(&[1, 2, 3]),
            data: b"image".to_vec(),
        }),
        Record::Entries {
            first_index: 5,
            entries: vec![Entry::data(2, b"e".to_vec())],
        },
    ]
}

fn file() -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for r in records() {
        bytes.extend(encode(&r));
        ends.push(bytes.len());
    }
    (bytes, ends)
}

#[test]
fn replay_rebuilds_hard_state_log_and_snapshot() {
    let (bytes, _) = file();
    let r = replay(&bytes);
    assert_eq!(r.stopped, None);
    assert_eq!(r.valid_bytes, bytes.len());
    assert_eq!(
        r.hard,
        HardState {
            term: 2,
            voted_for: None
        }
    );
    assert_eq!(r.log.snapshot().index, 2);
    assert_eq!(r.log.snapshot().data, b"image");
    let terms: Vec<u64> = r.log.entries().iter().map(|e| e.term).collect();
    assert_eq!(terms, [2, 2, 2], "entries 3..=5 after the snapshot");
    assert_eq!(r.log.last_index(), 5);
    // A rewrite holds the same state in three records.
    let again = replay(&rewrite(r.hard, &r.log));
    assert_eq!((again.hard, &again.log), (r.hard, &r.log));
}

#[test]
fn a_torn_or_damaged_tail_ends_the_valid_log_where_it_starts() {
    let (bytes, ends) = file();
    let last_start = ends[ends.len() - 2];
    for cut in last_start + 1..bytes.len() {
        let r = replay(&bytes[..cut]);
        assert_eq!(r.valid_bytes, last_start, "cut at {cut}");
        assert!(r.stopped.is_some());
        assert_eq!(
            r.log.last_index(),
            4,
            "the last record's entry is not there"
        );
    }
    let mut flipped = bytes.clone();
    let at = bytes.len() - 1;
    flipped[at] ^= 0xFF;
    let r = replay(&flipped);
    assert_eq!(r.valid_bytes, last_start);
    assert!(
        r.stopped.as_deref().is_some_and(|s| s.contains("CRC")),
        "{:?}",
        r.stopped
    );
    // Garbage from the start: nothing recovered, nothing panics.
    let r = replay(&[0xFF; 64]);
    assert_eq!(r.valid_bytes, 0);
    assert_eq!(r.log.last_index(), 0);
}

/// Writes the fuzzer's seed (`core/fuzz/seeds/controller_log_replay/`) when
/// QUIVER_WRITE_FUZZ_SEEDS is set.
#[test]
fn write_fuzz_seed_on_request() {
    if std::env::var_os("QUIVER_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds/controller_log_replay");
    std::fs::create_dir_all(&dir).expect("seed dir");
    std::fs::write(dir.join("six-records"), file().0).expect("seed");
}
