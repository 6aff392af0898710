//! The partition log on a real disk: append/read, rolling, indexes, time lookup, retention,
//! truncation, epochs, long-poll wake-ups and the durability policies.

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::{batch, dir_files, run, scratch};
use quiver_batch::{validate_batch, BatchHeader, BatchLimits};
use quiver_storage::StorageError;
use quiver_storage::{FlushPolicy, LogConfig, PartitionLog};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        cache_bytes: 0,
        ..LogConfig::default()
    }
}

fn header(b: &Bytes) -> BatchHeader {
    validate_batch(
        b,
        BatchLimits {
            max_batch_bytes: 1 << 20,
        },
    )
    .expect("served batches are valid")
}

/// Reads every batch from `from` to the end.
async fn read_all(log: &PartitionLog, from: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let got = log.read(next, 1 << 20).await.unwrap();
        if got.is_empty() {
            return out;
        }
        for b in got {
            next = header(&b).last_offset() as u64 + 1;
            out.push(b);
        }
    }
}

#[test]
fn append_assigns_contiguous_offsets_and_reads_back_from_cache_and_disk() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        for cache_bytes in [64 << 20, 0] {
            let d = path.join(format!("cache-{cache_bytes}"));
            let log = PartitionLog::open(
                &d,
                LogConfig {
                    cache_bytes,
                    ..LogConfig::default()
                },
            )
            .await
            .unwrap();
            let mut expected = Vec::new();
            for i in 0..20u64 {
                let info = log
                    .append(batch(i, 5, 100, 1000 + i as i64), 3)
                    .await
                    .unwrap();
                assert_eq!(info.base_offset, i * 5);
                assert_eq!(info.last_offset, i * 5 + 4);
                expected.push(info);
            }
            assert_eq!(log.durable_offset(), 100);
            let all = read_all(&log, 0).await;
            assert_eq!(all.len(), 20);
            for (b, info) in all.iter().zip(&expected) {
                let h = header(b);
                assert_eq!(h.base_offset as u64, info.base_offset);
                assert_eq!(h.partition_leader_epoch, 3);
            }
            // A read from the middle of a batch starts at that batch.
            let mid = log.read(12, 1).await.unwrap();
            assert_eq!(
                mid.len(),
                1,
                "max_bytes smaller than a batch still returns one batch"
            );
            assert_eq!(header(&mid[0]).base_offset, 10);
            assert!(log.read(100, 1 << 20).await.unwrap().is_empty());
            match log.read(101, 1 << 20).await {
                Err(StorageError::OffsetOutOfRange {
                    requested: 101,
                    log_start_offset: 0,
                    log_end_offset: 100,
                }) => {}
                other => panic!("expected OffsetOutOfRange, got {other:?}"),
            }
            log.close().await.unwrap();
            let reopened = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
            assert_eq!(reopened.durable_offset(), 100);
            assert_eq!(
                read_all(&reopened, 0).await,
                all,
                "byte-identical after reopen"
            );
            reopened.close().await.unwrap();
        }
    });
}

#[test]
fn segments_roll_by_size_and_reads_cross_them() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(&path, small_segments()).await.unwrap();
        for i in 0..100u64 {
            log.append(batch(i, 10, 300, 5000 + i as i64), 0)
                .await
                .unwrap();
        }
        assert!(
            log.segment_count() >= 5,
            "64 KiB segments must roll: {}",
            log.segment_count()
        );
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 100);
        let indexes = dir_files(&path)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "index"))
            .count();
        assert_eq!(
            indexes,
            log.segment_count() - 1,
            "every sealed segment has an index"
        );
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, small_segments()).await.unwrap();
        assert_eq!(read_all(&reopened, 0).await, all);
        for offset in [0u64, 1, 333, 555, 999] {
            let got = reopened.read(offset, 1).await.unwrap();
            let h = header(&got[0]);
            assert!(h.base_offset as u64 <= offset && offset <= h.last_offset() as u64);
        }
        reopened.close().await.unwrap();
    });
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(&path, small_segments()).await.unwrap();
        for i in 0..50i64 {
            log.append(batch(i as u64, 4, 500, 10_000 + i * 100), 0)
                .await
                .unwrap();
        }
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some(0));
        assert_eq!(log.offset_for_timestamp(10_000).await.unwrap(), Some(0));
        assert_eq!(log.offset_for_timestamp(10_001).await.unwrap(), Some(4));
        assert_eq!(log.offset_for_timestamp(12_500).await.unwrap(), Some(100));
        assert_eq!(log.offset_for_timestamp(14_900).await.unwrap(), Some(196));
        assert_eq!(log.offset_for_timestamp(14_901).await.unwrap(), None);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_deletes_whole_old_segments_and_moves_the_log_start() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let cfg = LogConfig {
            retention_bytes: Some(200 << 10),
            retention_ms: Some(60_000),
            ..small_segments()
        };
        let log = PartitionLog::open(&path, cfg).await.unwrap();
        for i in 0..200u64 {
            log.append(batch(i, 10, 300, 1_000_000 + i as i64), 0)
                .await
                .unwrap();
        }
        let before = log.size_bytes();
        let out = log.enforce_retention(1_000_000).await.unwrap();
        assert!(out.deleted_segments > 0);
        assert!(
            log.size_bytes() <= (200 << 10) + (64 << 10),
            "size bound kept: {}",
            log.size_bytes()
        );
        assert_eq!(log.size_bytes(), before - out.deleted_bytes);
        let start = log.log_start_offset();
        assert_eq!(start, out.log_start_offset);
        assert!(start > 0);
        assert!(
            matches!(log.read(0, 1000).await, Err(StorageError::OffsetOutOfRange { log_start_offset, .. }) if log_start_offset == start)
        );
        assert_eq!(
            header(&log.read(start, 1).await.unwrap()[0]).base_offset as u64,
            start
        );
        // Time: everything older than retention_ms except the active segment goes.
        let out = log
            .enforce_retention(1_000_000 + 200 + 60_001)
            .await
            .unwrap();
        assert!(out.deleted_segments > 0);
        assert_eq!(log.segment_count(), 1, "only the active segment is left");
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, small_segments()).await.unwrap();
        assert_eq!(reopened.log_start_offset(), log.log_start_offset());
        assert_eq!(reopened.durable_offset(), 2000);
        reopened.close().await.unwrap();
    });
}

#[test]
fn truncate_to_then_append_continues_from_the_cut() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(&path, small_segments()).await.unwrap();
        for i in 0..100u64 {
            log.append(batch(i, 10, 300, 0), (i / 25) as i32)
                .await
                .unwrap();
        }
        let segments = log.segment_count();
        // 333 lies inside batch 330..339: the whole batch goes.
        assert_eq!(log.truncate_to(333).await.unwrap(), 330);
        assert_eq!(log.durable_offset(), 330);
        assert!(log.segment_count() < segments);
        assert_eq!(log.leader_epochs().latest_epoch(), Some(1));
        let info = log.append(batch(1000, 3, 100, 0), 7).await.unwrap();
        assert_eq!(info.base_offset, 330);
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 34);
        assert_eq!(header(all.last().unwrap()).partition_leader_epoch, 7);
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, small_segments()).await.unwrap();
        assert_eq!(read_all(&reopened, 0).await, all);
        let epochs = reopened.leader_epochs();
        assert_eq!(epochs.end_offset_for(1, 333), Some((1, 330)));
        assert_eq!(epochs.latest_epoch(), Some(7));
        reopened.close().await.unwrap();
    });
}

#[test]
fn concurrent_appends_share_writes_and_fsyncs() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = Rc::new(
            PartitionLog::open(&path, LogConfig::default())
                .await
                .unwrap(),
        );
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(
                    async move { log.append(batch(i, 2, 100, 0), 0).await.unwrap() },
                )
            })
            .collect();
        let mut bases = Vec::new();
        for t in tasks {
            bases.push(t.await.base_offset);
        }
        bases.sort_unstable();
        assert_eq!(bases, (0..64).map(|i| i * 2).collect::<Vec<_>>());
        let stats = log.stats();
        assert_eq!(stats.appends, 64);
        assert!(
            stats.fdatasyncs < 64,
            "group commit must merge fsyncs: {stats:?}"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn long_poll_is_woken_by_the_append_that_satisfies_it() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(&path, LogConfig::default())
            .await
            .unwrap();
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.wait_for_offset(0).await;
                log.read(0, 1 << 20).await.unwrap()
            })
        };
        glommio::yield_if_needed().await;
        log.append(batch(1, 1, 10, 0), 0).await.unwrap();
        let got = glommio::timer::timeout(std::time::Duration::from_secs(5), async {
            Ok(waiter.await)
        })
        .await
        .expect("the append wakes the waiter");
        assert_eq!(got.len(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn interval_flush_policy_acknowledges_writes_and_syncs_on_flush() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let cfg = LogConfig {
            flush: FlushPolicy::Interval {
                flush_ms: 60_000,
                flush_bytes: 1 << 30,
            },
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&path, cfg.clone()).await.unwrap();
        for i in 0..10 {
            log.append(batch(i, 1, 100, 0), 0).await.unwrap();
        }
        assert_eq!(log.stats().fdatasyncs, 0);
        log.flush().await.unwrap();
        assert_eq!(log.stats().fdatasyncs, 1);
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, cfg).await.unwrap();
        assert_eq!(reopened.durable_offset(), 10);
        reopened.close().await.unwrap();
    });
}

#[test]
fn invalid_batches_are_refused_with_typed_errors_and_nothing_is_written() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(
            &path,
            LogConfig {
                max_batch_bytes: 4096,
                ..LogConfig::default()
            },
        )
        .await
        .unwrap();
        let mut bad = batch(1, 1, 10, 0);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            log.append(bad, 0).await,
            Err(StorageError::InvalidBatch(_))
        ));
        assert!(matches!(
            log.append(batch(1, 10, 1000, 0), 0).await,
            Err(StorageError::InvalidBatch(_))
        ));
        assert_eq!(log.durable_offset(), 0);
        assert_eq!(
            log.append(batch(2, 1, 10, 0), 0).await.unwrap().base_offset,
            0
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_tmpfs_directory_is_refused_with_a_remedy() {
    if !std::path::Path::new("/dev/shm").exists() {
        eprintln!("no /dev/shm on this machine: nothing to check");
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        match PartitionLog::open(&path, LogConfig::default()).await {
            Err(e @ StorageError::DirectIoUnsupported { .. }) => {
                assert!(e.to_string().contains("ext4 or xfs"))
            }
            Err(other) => panic!("expected DirectIoUnsupported, got {other}"),
            Ok(_) => panic!("expected DirectIoUnsupported, got a log"),
        }
    });
}

#[test]
fn cache_stays_within_its_bound() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(
            &path,
            LogConfig {
                cache_bytes: 100 << 10,
                ..LogConfig::default()
            },
        )
        .await
        .unwrap();
        for i in 0..100 {
            log.append(batch(i, 10, 500, 0), 0).await.unwrap();
            assert!(log.cache_bytes() <= 100 << 10);
        }
        assert!(log.cache_bytes() > 50 << 10);
        log.close().await.unwrap();
    });
}

#[test]
fn segments_roll_by_age() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(
            &path,
            LogConfig {
                segment_ms: 5,
                ..LogConfig::default()
            },
        )
        .await
        .unwrap();
        log.append(batch(1, 1, 10, 0), 0).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        // Let the broker clock pass segment_ms: the age is the input here, not a state to wait for.
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        log.append(batch(2, 1, 10, 0), 0).await.unwrap();
        assert_eq!(
            log.segment_count(),
            2,
            "the aged segment was sealed before the append"
        );
        log.close().await.unwrap();
        assert!(
            path.join("00000000000000000001.log").exists(),
            "the new segment starts at offset 1"
        );
        let reopened = PartitionLog::open(&path, LogConfig::default())
            .await
            .unwrap();
        assert_eq!(read_all(&reopened, 0).await.len(), 2);
        reopened.close().await.unwrap();
    });
}

/// A roll that failed after creating the next segment file (at the directory fsync) leaves it
/// behind, empty: the next roll must not fail on it forever ("file exists").
#[test]
fn a_roll_succeeds_over_an_empty_file_left_by_a_failed_one() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(&path, small_segments()).await.unwrap();
        let mut planted = false;
        for i in 0..40u64 {
            let b = batch(i, 10, 300, 5000 + i as i64);
            if !planted && log.size_bytes() + b.len() as u64 > small_segments().segment_bytes {
                let next = log.durable_offset();
                std::fs::File::create(path.join(format!("{next:020}.log"))).unwrap();
                planted = true;
            }
            log.append(b, 0)
                .await
                .expect("the roll replaces the leftover");
        }
        assert!(planted, "the appends rolled a segment");
        assert!(log.segment_count() >= 2);
        assert_eq!(read_all(&log, 0).await.len(), 40);
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, small_segments()).await.unwrap();
        assert_eq!(read_all(&reopened, 0).await.len(), 40);
        reopened.close().await.unwrap();
    });
}

#[test]
fn epochs_a_recovery_scan_rebuilt_survive_the_next_clean_close() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(&path, small_segments()).await.unwrap();
        log.append(batch(0, 10, 100, 0), 3).await.unwrap();
        log.append(batch(10, 10, 100, 0), 5).await.unwrap();
        log.close().await.unwrap();
        // As a crash leaves a log: the segments, no epoch checkpoint, no index.
        for entry in std::fs::read_dir(&path).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name == quiver_storage::files::EPOCH_CHECKPOINT
                || name.ends_with(quiver_storage::files::INDEX_SUFFIX)
            {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let scanned = PartitionLog::open(&path, small_segments()).await.unwrap();
        let epochs = scanned.leader_epochs();
        assert_eq!(epochs.latest_epoch(), Some(5), "rebuilt by the scan");
        scanned.close().await.unwrap();
        // The close wrote the active segment's index: this open scans nothing, and the
        // epochs must come back from the checkpoint the close wrote.
        let reopened = PartitionLog::open(&path, small_segments()).await.unwrap();
        assert_eq!(reopened.leader_epochs(), epochs);
        reopened.close().await.unwrap();
    });
}

#[test]
fn a_reset_empties_the_log_and_starts_it_at_a_later_offset_across_a_reopen() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = PartitionLog::open(&path, small_segments()).await.unwrap();
        for i in 0..40u64 {
            log.append(batch(i, 10, 300, 0), 1).await.unwrap();
        }
        assert!(log.segment_count() > 1);
        log.reset_to(1000, 5).await.unwrap();
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.segment_count()
            ),
            (1000, 1000, 1)
        );
        let info = log.append(batch(7, 3, 100, 0), 6).await.unwrap();
        assert_eq!(info.base_offset, 1000);
        let all = read_all(&log, 1000).await;
        assert_eq!(all.len(), 1);
        log.close().await.unwrap();
        let reopened = PartitionLog::open(&path, small_segments()).await.unwrap();
        assert_eq!(
            (reopened.log_start_offset(), reopened.log_end_offset()),
            (1000, 1003)
        );
        assert_eq!(read_all(&reopened, 1000).await, all);
        let epochs: Vec<(i32, u64)> = reopened
            .leader_epochs()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        assert_eq!(epochs, vec![(5, 1000), (6, 1000)]);
        reopened.close().await.unwrap();
    });
}
