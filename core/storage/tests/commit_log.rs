//! The shard commit log on a real disk: appends acknowledged through it survive the loss of
//! every segment write that was not fsynced, across rotations and checkpoints; truncations
//! are not undone by recovery; a recreated partition does not receive its predecessor's
//! entries.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{batch, run, scratch};
use quiver_batch::{validate_batch, BatchLimits};
use quiver_storage::commit_log::{self, format, replay, CommitLog, ROTATE_AT_BYTES};
use quiver_storage::{LogConfig, PartitionLog};

async fn read_all(log: &PartitionLog) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    loop {
        let got = log.read(next, 4 << 20).await.expect("read");
        if got.is_empty() {
            return out;
        }
        for b in got {
            let h = validate_batch(
                &b,
                BatchLimits {
                    max_batch_bytes: 4 << 20,
                },
            )
            .expect("valid batch");
            next = h.last_offset() as u64 + 1;
            out.push(b);
        }
    }
}

fn partition_dir(root: &Path, p: usize) -> PathBuf {
    root.join("topics").join(format!("t-{p}"))
}

/// The first offset the surviving commit log files hold for partition directory `key`: the
/// segment bytes below it were made durable by a checkpoint, those from it on may be lost.
fn first_logged_offset(root: &Path, key: &str) -> u64 {
    let dir = commit_log::shard_dir(root, 0);
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .expect("commit log dir")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let seq = path
                .file_name()?
                .to_str()?
                .strip_suffix(".wal")?
                .parse()
                .ok()?;
            Some((seq, path))
        })
        .collect();
    files.sort();
    let mut entries = Vec::new();
    for (seq, path) in files {
        entries.extend(format::decode_file(seq, &std::fs::read(path).expect("read")).0);
    }
    let plans = replay::plan(entries);
    let plan = plans
        .iter()
        .find(|p| &*p.key == key)
        .expect("partition in the commit log");
    plan.batches[0].0.base_offset as u64
}

/// Cuts the partition's (only) segment inside the batch `extra` batches after `offset`, as if
/// every write from there on never reached the disk (none of them was fsynced).
fn lose_unsynced_tail(dir: &Path, offset: u64, extra: usize) {
    let seg = dir.join("00000000000000000000.log");
    let bytes = std::fs::read(&seg).expect("segment");
    let mut at = 0usize;
    loop {
        let base = u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if base >= offset {
            break;
        }
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        at += 12 + len as usize;
    }
    for _ in 0..extra {
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        at += 12 + len as usize;
    }
    let torn = if extra > 0 { 100 } else { 0 };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len((at + torn) as u64))
        .expect("cut");
}

fn segment_path_exists(dir: &Path) -> bool {
    dir.join("00000000000000000000.log").exists()
}

#[test]
fn acknowledged_appends_survive_losing_unsynced_segment_writes() {
    let scratch = scratch();
    let root = scratch.path().to_path_buf();
    // Enough for more than two rotations of the commit log (checkpoints, a recycled file).
    let batches_per_partition = (ROTATE_AT_BYTES as usize * 5 / 2) / (2 * (64 << 10));
    let expected = {
        let root = root.clone();
        run(async move {
            let wal = CommitLog::open(&commit_log::shard_dir(&root, 0), &root, None, None)
                .await
                .expect("commit log");
            let mut logs = Vec::new();
            for p in 0..2 {
                let log = PartitionLog::open_in(
                    partition_dir(&root, p),
                    LogConfig::default(),
                    None,
                    Some(wal.clone()),
                )
                .await
                .expect("open");
                logs.push(log);
            }
            let mut expected = vec![Vec::new(), Vec::new()];
            for i in 0..batches_per_partition {
                for (p, log) in logs.iter().enumerate() {
                    let b = batch((p * 100_000 + i) as u64, 64, 1000, 1_000);
                    expected[p].push(b.clone());
                    log.append(b, 0).await.expect("acknowledged");
                }
            }
            let stats = wal.stats();
            assert!(stats.rotations >= 2, "{stats:?}");
            assert!(stats.checkpoints >= 1, "{stats:?}");
            // Crash: nothing is closed, the segments are left as they are.
            expected
        })
    };
    for (p, extra) in [(0, 3), (1, 0)] {
        let first = first_logged_offset(&root, &format!("topics/t-{p}"));
        assert!(first > 0, "a checkpoint made the start durable");
        lose_unsynced_tail(&partition_dir(&root, p), first, extra);
    }
    let root2 = root.clone();
    run(async move {
        let report = quiver_storage::recovery::replay_all(&root2)
            .await
            .expect("replay");
        assert!(report.batches_appended > 0, "{report:?}");
        assert!(!root2.join(commit_log::COMMIT_LOG_DIR).exists());
        for (p, want) in expected.into_iter().enumerate() {
            let log = PartitionLog::open(partition_dir(&root2, p), LogConfig::default())
                .await
                .expect("reopen");
            let got = read_all(&log).await;
            assert_eq!(got.len(), want.len(), "partition {p}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Offsets were stamped on append; compare from the records on.
                assert_eq!(g[61..], w[61..], "partition {p}, batch {i}");
                assert_eq!(
                    validate_batch(
                        g,
                        BatchLimits {
                            max_batch_bytes: 4 << 20
                        }
                    )
                    .expect("valid")
                    .base_offset,
                    (i * 64) as i64
                );
            }
            log.close().await.expect("close");
        }
        // Nothing left to replay.
        assert_eq!(
            quiver_storage::recovery::replay_all(&root2)
                .await
                .expect("again")
                .files,
            0
        );
    });
}

/// The truncation cuts into the segment (written there first by a flush).
#[test]
fn a_truncation_is_not_undone_and_a_recreated_partition_is_left_alone() {
    truncation_scenario(true);
}

/// The truncation takes back batches still waiting to be written to the segment
/// (write-behind): the files are not touched, and recovery still does not bring them back.
#[test]
fn a_truncation_of_batches_not_yet_in_the_segment_is_not_undone() {
    truncation_scenario(false);
}

fn truncation_scenario(write_segment_first: bool) {
    let scratch = scratch();
    let root = scratch.path().to_path_buf();
    let root1 = root.clone();
    let kept = run(async move {
        let wal = CommitLog::open(&commit_log::shard_dir(&root1, 0), &root1, None, None)
            .await
            .expect("commit log");
        let open = |p| {
            PartitionLog::open_in(
                partition_dir(&root1, p),
                LogConfig::default(),
                None,
                Some(wal.clone()),
            )
        };
        let log = open(0).await.expect("open");
        let doomed = open(1).await.expect("open");
        let mut kept = Vec::new();
        for i in 0..10u64 {
            let b = batch(i, 1, 100, 1);
            if i < 5 {
                kept.push(b.clone());
            }
            log.append(b, 0).await.expect("append");
            doomed.append(batch(i, 1, 100, 1), 0).await.expect("append");
        }
        if write_segment_first {
            log.flush().await.expect("flush");
        }
        assert_eq!(log.truncate_to(5).await.expect("truncate"), 5);
        for i in 100..103u64 {
            let b = batch(i, 1, 100, 1);
            kept.push(b.clone());
            log.append(b, 1).await.expect("append");
        }
        kept
    });
    // Partition 0 loses every write after its truncation (which was fsynced).
    let dir0 = partition_dir(&root, 0);
    let seg = dir0.join("00000000000000000000.log");
    let (five, on_disk) = {
        // The truncation left at most five 1-record batches in the segment (five when it cut
        // into the segment, none when they were all still in memory); keep only those.
        let bytes = std::fs::read(&seg).expect("segment");
        let mut at = 0usize;
        let mut n = 0;
        while n < 5 && at + 12 <= bytes.len() {
            let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
            if len <= 0 {
                break; // zeroes past the written end
            }
            at += 12 + len as usize;
            n += 1;
        }
        (at, n)
    };
    assert_eq!(on_disk == 5, write_segment_first);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(five as u64))
        .expect("cut");
    // Partition 1's topic is deleted and created again: a new, empty incarnation.
    let dir1 = partition_dir(&root, 1);
    std::fs::remove_dir_all(&dir1).expect("delete");
    let root2 = root.clone();
    run(async move {
        let fresh = PartitionLog::open(&dir1, LogConfig::default())
            .await
            .expect("recreate");
        fresh.close().await.expect("close");
        let report = quiver_storage::recovery::replay_all(&root2)
            .await
            .expect("replay");
        // The five kept and the three later batches, minus what the segment holds.
        assert_eq!(report.batches_appended, 8 - on_disk as u64, "{report:?}");
        let log = PartitionLog::open(&dir0, LogConfig::default())
            .await
            .expect("reopen");
        let got = read_all(&log).await;
        assert_eq!(got.len(), kept.len());
        for (g, w) in got.iter().zip(&kept) {
            assert_eq!(g[61..], w[61..]);
        }
        let fresh = PartitionLog::open(&dir1, LogConfig::default())
            .await
            .expect("reopen");
        assert_eq!(
            fresh.durable_offset(),
            0,
            "the old incarnation's entries were applied"
        );
        assert!(segment_path_exists(&dir1));
    });
}

/// With the commit log, acknowledged batches reach the segment in bulk (write-behind): until
/// then they are read from memory — even with no batch cache — and found by timestamp; once
/// `WRITE_BEHIND_BYTES` wait they are written; a close writes the rest, so the log reopens
/// whole without the commit log.
#[test]
fn acknowledged_batches_waiting_for_the_segment_are_readable_and_reach_it() {
    let scratch = scratch();
    let root = scratch.path().to_path_buf();
    let dir = partition_dir(&root, 0);
    let config = LogConfig {
        cache_bytes: 0,
        ..LogConfig::default()
    };
    let dir1 = dir.clone();
    let config1 = config.clone();
    let expected = run(async move {
        let wal = CommitLog::open(&commit_log::shard_dir(&root, 0), &root, None, None)
            .await
            .expect("commit log");
        let log = PartitionLog::open_in(&dir1, config1, None, Some(wal.clone()))
            .await
            .expect("open");
        // 20 batches of 2 records, timestamps 1000, 1010, ...: well under the write-behind size.
        let mut expected = Vec::new();
        for i in 0..20u64 {
            let b = batch(i, 2, 100, 1000 + 10 * i as i64);
            expected.push(b.clone());
            log.append(b, 0).await.expect("acknowledged");
        }
        assert_eq!(
            log.stats().bytes_written,
            0,
            "nothing written to the segment yet"
        );
        assert_eq!(read_all(&log).await.len(), 20);
        assert_eq!(
            log.read(15, 1).await.expect("read")[0][61..],
            expected[7][61..]
        );
        assert_eq!(
            log.offset_for_timestamp(1075).await.expect("by time"),
            Some(16)
        );
        assert_eq!(log.offset_for_timestamp(9999).await.expect("by time"), None);
        // Enough to pass the write-behind size (three times): written, and reads span segment
        // and memory. Meanwhile a reader keeps reading the last committed batch: it must
        // never find it missing, also while the write-behind is being written.
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let reader = {
            let (log, stop) = (log.clone(), stop.clone());
            glommio::spawn_local(async move {
                let mut reads = 0u64;
                while !stop.get() {
                    let end = log.durable_offset();
                    let got = log.read(end - 1, 1).await.expect("read");
                    assert!(
                        !got.is_empty(),
                        "offset {} is committed but reads empty",
                        end - 1
                    );
                    reads += 1;
                    futures_lite::future::yield_now().await;
                }
                reads
            })
        };
        let big = 3 * quiver_storage::WRITE_BEHIND_BYTES / (32 << 10) + 2;
        for i in 0..big as u64 {
            let b = batch(100 + i, 1, 32 << 10, 5000);
            expected.push(b.clone());
            log.append(b, 0).await.expect("acknowledged");
        }
        stop.set(true);
        assert!(reader.await > 0);
        assert!(log.stats().bytes_written > 0, "the write-behind went out");
        let more = batch(999, 3, 100, 6000);
        expected.push(more.clone());
        log.append(more, 0).await.expect("acknowledged");
        let got = read_all(&log).await;
        assert_eq!(got.len(), expected.len());
        for (i, (g, w)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g[61..], w[61..], "batch {i}");
        }
        assert_eq!(
            log.offset_for_timestamp(1075).await.expect("by time"),
            Some(16)
        );
        log.close().await.expect("close");
        wal.close().await;
        expected
    });
    run(async move {
        // No replay: the close wrote and fsynced everything into the segment.
        let log = PartitionLog::open(&dir, config).await.expect("reopen");
        let got = read_all(&log).await;
        assert_eq!(got.len(), expected.len());
        for (i, (g, w)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g[61..], w[61..], "batch {i}");
        }
        log.close().await.expect("close");
    });
}

/// On a filesystem with room, the first active file and the first spare are written through
/// with zeros at open, so no O_DSYNC round extends a file (and commits the journal); on a
/// small or nearly full one (below 1 GiB free) they are left empty, leaving the space to
/// appends.
#[test]
fn the_first_files_are_pre_written_where_there_is_room() {
    let scratch = scratch();
    let root = scratch.path().to_path_buf();
    let free = quiver_storage::files::available_bytes(&root).expect("statvfs");
    run(async move {
        let dir = commit_log::shard_dir(&root, 0);
        let wal = CommitLog::open(&dir, &root, None, None)
            .await
            .expect("commit log");
        let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        if free >= 2 << 30 {
            assert!(size("1.wal") >= ROTATE_AT_BYTES, "1.wal: {}", size("1.wal"));
            assert!(
                size("spare.wal") >= ROTATE_AT_BYTES,
                "spare: {}",
                size("spare.wal")
            );
        } else if free < 1 << 30 {
            assert_eq!(size("1.wal"), 0);
            assert_eq!(size("spare.wal"), 0);
        }
        wal.close().await;
        wal.remove_files().await.expect("remove");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
    });
}
