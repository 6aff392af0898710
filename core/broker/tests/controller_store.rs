//! The controller's log file on a real disk through glommio: records survive a reopen, a torn
//! tail is cut off at start, a rewrite keeps the state in fewer bytes.

use std::io::Write;

use quiver_broker::controller_store::{ControllerStore, FILE_NAME};
use quiver_cluster::controller_log::Record;
use quiver_raft::log::RaftLog;
use quiver_raft::types::{Entry, HardState, Membership, Snapshot};

fn run<T: 'static>(fut: impl std::future::Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("glommio executor")
        .run(fut)
}

fn hard(term: u64) -> HardState {
    HardState {
        term,
        voted_for: Some(1),
    }
}

#[test]
fn records_survive_a_reopen_a_torn_tail_is_cut_and_a_rewrite_keeps_the_state() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let path = dir.path().to_path_buf();
    run(async move {
        let (mut store, r) = ControllerStore::open(&path).await.expect("opened");
        assert_eq!(r.log.last_index(), 0);
        assert_eq!(r.stopped, None);
        store
            .append(&[
                Record::HardState(hard(1)),
                Record::Entries {
                    first_index: 1,
                    entries: (0..10u8).map(|k| Entry::data(1, vec![k])).collect(),
                },
            ])
            .await
            .expect("appended");
        let written = store.len_bytes();
        drop(store);

        // A crash tore the next write: half a record at the end.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path.join(FILE_NAME))
            .expect("file");
        f.write_all(&[0, 0, 0, 40, 1, 2, 3]).expect("torn bytes");
        drop(f);
        let (mut store, r) = ControllerStore::open(&path).await.expect("reopened");
        assert_eq!(r.hard, hard(1));
        assert_eq!(r.log.last_index(), 10);
        assert!(r.stopped.is_some(), "the torn tail is reported");
        assert_eq!(store.len_bytes(), written);
        assert_eq!(
            std::fs::metadata(path.join(FILE_NAME)).expect("meta").len(),
            written,
            "and cut off"
        );

        // Compact behind a snapshot and rewrite: the same state, fewer bytes.
        let mut log: RaftLog = r.log.clone();
        log.compact(8, b"image".to_vec());
        let snapshot = Snapshot {
            membership: Membership::of_voters(&[1]),
            ..log.snapshot().clone()
        };
        let log = RaftLog::new(snapshot, log.entries().to_vec());
        store.rewrite(hard(2), &log).await.expect("rewritten");
        assert!(store.len_bytes() < written);
        store
            .append(&[Record::Entries {
                first_index: 11,
                entries: vec![Entry::data(2, b"after".to_vec())],
            }])
            .await
            .expect("appended after the rewrite");
        drop(store);
        let (_, r) = ControllerStore::open(&path).await.expect("reopened again");
        assert_eq!(r.stopped, None);
        assert_eq!(r.hard, hard(2));
        assert_eq!(r.log.snapshot().index, 8);
        assert_eq!(r.log.snapshot().data, b"image");
        assert_eq!(r.log.last_index(), 11);
    });
}
