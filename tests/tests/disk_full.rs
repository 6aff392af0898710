//! Disk full on a small loop-mounted ext4: the append fails with `DiskFull` and a remedy,
//! acknowledged data stays readable, and the log works again once space is freed.
//! Needs root (mount); CI and the dev machines run as root.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use quiver_storage::commit_log::{self, CommitLog};
use quiver_storage::StorageError;
use quiver_storage::{LogConfig, PartitionLog};
use quiver_tests::crash_batch;
use quiver_tests::loopfs::{fill, is_root, LoopFs};

#[test]
fn disk_full_fails_the_append_keeps_data_and_recovers_after_space_is_freed() {
    disk_full_scenario(false);
}

/// The same with the shard's commit log, which fills up too: its failed round makes the log
/// roll back, and it writes on in a new file once there is room.
#[test]
fn disk_full_with_the_commit_log_recovers_the_same_way() {
    disk_full_scenario(true);
}

/// A 24 MiB loop filesystem with an empty `log` directory in it, or `None` (test skipped)
/// when not root.
fn small_fs_with_log_dir() -> Option<(LoopFs, PathBuf)> {
    if !is_root() {
        eprintln!("SKIPPED: mounting a loop filesystem needs root (CI runs as root)");
        return None;
    }
    let fs = LoopFs::new(Path::new(env!("CARGO_TARGET_TMPDIR")), 24);
    let data = fs.mount_point.join("log");
    std::fs::create_dir(&data).unwrap();
    Some((fs, data))
}

fn disk_full_scenario(with_commit_log: bool) {
    let Some((fs, data)) = small_fs_with_log_dir() else {
        return;
    };
    let root = fs.mount_point.clone();
    let filler = fill(&fs.mount_point, 2 << 20).unwrap();
    let cfg = LogConfig {
        segment_bytes: 512 << 10,
        ..LogConfig::default()
    };
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let wal = match with_commit_log {
                true => Some(
                    CommitLog::open(&commit_log::shard_dir(&root, 0), &root, None, None)
                        .await
                        .unwrap(),
                ),
                false => None,
            };
            let log = PartitionLog::open_in(&data, cfg.clone(), None, wal.clone())
                .await
                .unwrap();
            let mut acked: Vec<(u64, BytesMut)> = Vec::new();
            let mut seq = 0;
            let (err, failed_batch) = loop {
                let batch = crash_batch(1, seq);
                match log.append(batch.clone(), 0).await {
                    Ok(info) => acked.push((info.base_offset, batch)),
                    Err(e) => break (e, batch),
                }
                seq += 1;
                assert!(seq < 100_000, "the disk never filled up");
            };
            assert!(
                matches!(err, StorageError::DiskFull { .. }),
                "expected DiskFull, got {err}"
            );
            assert!(
                err.to_string().contains("free space"),
                "the message says what to do: {err}"
            );
            assert!(!acked.is_empty());
            let end = acked.last().map(|(b, _)| *b).unwrap();
            assert!(log.durable_offset() > end);
            // Everything acknowledged is still readable.
            for (base, _) in acked.iter().step_by(7) {
                assert!(!log.read(*base, 1).await.unwrap().is_empty());
            }
            // Still full, or nearly: ext4 releases its block preallocations when a write hits
            // ENOSPC, so a retry may fit (seen under CPU load, 1 run in 3). The same batch
            // either fails the same way, with nothing acknowledged lost, or lands right at
            // the end: no gap, no half-written batch.
            let mut committed = log.durable_offset();
            match log.append(failed_batch.clone(), 0).await {
                Err(StorageError::DiskFull { .. }) => assert_eq!(log.durable_offset(), committed),
                Ok(info) => {
                    assert_eq!(
                        info.base_offset, committed,
                        "a retry that fits lands at the end"
                    );
                    committed = info.last_offset + 1;
                }
                Err(other) => panic!("still full, the same batch fails the same way: {other}"),
            }
            std::fs::remove_file(&filler).unwrap();
            let info = log
                .append(failed_batch, 0)
                .await
                .expect("works again after space is freed");
            assert_eq!(
                info.base_offset, committed,
                "no gap, no half-written batch left behind"
            );
            log.close().await.unwrap();
            if let Some(wal) = wal {
                wal.close().await;
                // Recovery over what the commit log holds changes nothing: all was closed.
                quiver_storage::recovery::replay_all(&root).await.unwrap();
            }
            let reopened = PartitionLog::open(&data, cfg).await.unwrap();
            assert_eq!(reopened.durable_offset(), info.last_offset + 1);
            reopened.close().await.unwrap();
        });
    drop(fs);
}

#[test]
fn a_read_only_data_directory_is_refused_with_a_remedy() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a loop filesystem needs root (CI runs as root)");
        return;
    }
    // Root ignores file modes, so a read-only mount is the honest way to be refused.
    let fs = LoopFs::with_options(Path::new(env!("CARGO_TARGET_TMPDIR")), 8, "loop,ro");
    let data = fs.mount_point.join("log");
    let err = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap()
        .run(async move { PartitionLog::open(&data, LogConfig::default()).await.err() })
        .expect("opening a log on a read-only filesystem must fail");
    assert!(
        matches!(err, StorageError::PermissionDenied { .. }),
        "expected PermissionDenied, got {err}"
    );
    assert!(
        err.to_string().contains("writable"),
        "the message says what to do: {err}"
    );
}

/// Writes to a file until the filesystem refuses more (root may use ext4's reserved blocks
/// too, so statvfs's free space is not the end).
fn fill_completely(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = fill(dir, 0).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&filler)
        .unwrap();
    let chunk = vec![1u8; 4096];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
    filler
}

/// Acknowledged batches waiting to be written to a segment (write-behind) when its disk is
/// full: the close fails and says so, the commit log keeps them, reopening the directory
/// fails while the disk is full (instead of coming back without them and reusing their
/// offsets), and once space is freed the reopen writes them and every one is readable. The
/// commit log is on another filesystem, so only the segment's disk is full.
#[test]
fn a_close_that_cannot_write_the_write_behind_keeps_it_until_space_is_freed() {
    let Some((fs, data)) = small_fs_with_log_dir() else {
        return;
    };
    let root = fs.mount_point.clone();
    let wal_fs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let wal_dir = wal_fs.path().join("commitlog");
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let wal = CommitLog::open(&wal_dir, &root, None, None).await.unwrap();
            let cfg = LogConfig::default();
            let log = PartitionLog::open_in(&data, cfg.clone(), None, Some(wal.clone()))
                .await
                .unwrap();
            let filler = fill_completely(&root);
            let mut acked = Vec::new();
            for seq in 0..5 {
                let batch = crash_batch(2, seq);
                let info = log
                    .append(batch.clone(), 0)
                    .await
                    .expect("durable in the commit log");
                acked.push((info.base_offset, batch));
            }
            let end = log.durable_offset();
            let err = log
                .close()
                .await
                .expect_err("the segment cannot take the batches");
            assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
            let refused = PartitionLog::open_in(&data, cfg.clone(), None, Some(wal.clone())).await;
            assert!(
                matches!(refused, Err(StorageError::DiskFull { .. })),
                "reopening without the kept batches must fail: {:?}",
                refused.err()
            );
            std::fs::remove_file(&filler).unwrap();
            let log = PartitionLog::open_in(&data, cfg, None, Some(wal.clone()))
                .await
                .expect("space freed: the kept batches are written first");
            assert_eq!(log.durable_offset(), end);
            for (base, batch) in &acked {
                let got = log.read(*base, 1).await.unwrap();
                assert_eq!(got[0][61..], batch[61..], "batch at {base}");
            }
            log.close().await.unwrap();
            wal.close().await;
        });
    drop(fs);
}
