//! Torn writes: a crash can leave any 512-byte sector of the last page written or not, and
//! a sector not written may hold zeros (a new file) or stale bytes (a recycled one). For
//! every 512-byte boundary of the last page of a segment and of the commit log, the write
//! is cut there — the rest zeros, or garbage — and recovery must keep every batch (frame)
//! wholly before the cut, drop the one cut through, serve no byte of garbage, and append
//! after it at the right offset.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{batch, run, scratch};
use quiver_storage::commit_log::{self, format, CommitLog};
use quiver_storage::{LogConfig, PartitionLog};

const SECTOR: usize = 512;
const PAGE: usize = 4096;

/// What the bytes after a cut hold.
#[derive(Debug, Clone, Copy)]
enum After {
    Zeros,
    Garbage,
}

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        cache_bytes: 0,
        ..LogConfig::default()
    }
}

/// `bytes` written up to `cut` only; the rest of the page after it per `after`.
fn cut_at(bytes: &[u8], cut: usize, after: After) -> Vec<u8> {
    let mut out = bytes[..cut.min(bytes.len())].to_vec();
    if let After::Garbage = after {
        let page_end = cut
            .next_multiple_of(PAGE)
            .max(cut + SECTOR)
            .max(bytes.len());
        out.extend((cut..page_end).map(|i| (i as u8).wrapping_mul(31) ^ 0xA5));
    }
    out
}

/// The cut points: every 512-byte boundary of the page holding the last byte of `data_end`.
fn cuts(data_end: usize) -> Vec<usize> {
    let page = (data_end - 1) / PAGE * PAGE;
    (0..=PAGE / SECTOR).map(|i| page + i * SECTOR).collect()
}

async fn read_all(log: &PartitionLog) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(b) = log
        .read(out.len() as u64, 1 << 20)
        .await
        .expect("read")
        .into_iter()
        .next()
    {
        out.push(b);
    }
    out
}

/// End of each batch in a segment's bytes (offset u64, length i32, then `length` bytes).
fn batch_ends(seg: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0usize;
    while at + 12 <= seg.len() {
        let len = i32::from_be_bytes(seg[at + 8..at + 12].try_into().expect("4 bytes"));
        if len <= 0 || at + 12 + len as usize > seg.len() {
            break;
        }
        at += 12 + len as usize;
        ends.push(at);
    }
    ends
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn a_segment_cut_at_every_sector_of_its_last_page_recovers_the_whole_batches_before_the_cut() {
    let dir = scratch();
    let original = dir.path().join("original");
    // One-record batches (batch i at offset i) of uneven sizes: their ends fall at many
    // places within pages.
    let written = {
        let original = original.clone();
        run(async move {
            let log = PartitionLog::open(&original, cfg()).await.expect("open");
            for i in 0..23u64 {
                log.append(batch(i, 1, 300 + (i as usize * 397) % 1_700, 1_000), 0)
                    .await
                    .expect("append");
            }
            let all = read_all(&log).await;
            log.close().await.expect("close");
            all
        })
    };
    let seg_name = "00000000000000000000.log";
    let seg = std::fs::read(original.join(seg_name)).expect("segment");
    let ends = batch_ends(&seg);
    assert_eq!(ends.len(), written.len(), "every batch parsed");
    let data_end = *ends.last().expect("batches");
    assert!(data_end > 3 * PAGE, "the log spans several pages");
    let mut checked = 0;
    for cut in cuts(data_end) {
        for after in [After::Zeros, After::Garbage] {
            let case = dir.path().join(format!("cut-{cut}-{after:?}"));
            copy_dir(&original, &case);
            std::fs::write(case.join(seg_name), cut_at(&seg[..data_end], cut, after))
                .expect("write the cut segment");
            // As after a crash: no index written at a clean close.
            for e in std::fs::read_dir(&case).expect("dir") {
                let p = e.expect("entry").path();
                if p.extension()
                    .is_some_and(|x| x == "index" || x == "timeindex")
                {
                    std::fs::remove_file(p).expect("remove index");
                }
            }
            let whole = ends.iter().filter(|e| **e <= cut).count();
            let expected = written[..whole].to_vec();
            let (got, next) = run(async move {
                let log = PartitionLog::open(&case, cfg())
                    .await
                    .unwrap_or_else(|e| panic!("cut at {cut} ({after:?}): open failed: {e}"));
                let got = read_all(&log).await;
                let next = log
                    .append(batch(999, 1, 100, 2_000), 0)
                    .await
                    .expect("append after recovery")
                    .base_offset;
                log.close().await.expect("close");
                (got, next)
            });
            assert_eq!(
                got.len(),
                expected.len(),
                "cut at {cut} ({after:?}): batches recovered"
            );
            assert!(got == expected, "cut at {cut} ({after:?}): content differs");
            assert_eq!(next, whole as u64, "cut at {cut} ({after:?}): next offset");
            checked += 1;
        }
    }
    assert_eq!(checked, 18, "9 boundaries, 2 kinds of tail");
}

fn partition_dir(root: &Path) -> PathBuf {
    root.join("topics").join("t-0")
}

/// The commit log file of shard 0 under `root` (there is one: no rotation in this test).
fn wal_file(root: &Path) -> PathBuf {
    let dir = commit_log::shard_dir(root, 0);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("commit log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "wal")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.parse::<u64>().is_ok())
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

#[test]
fn a_commit_log_cut_at_every_sector_of_its_last_page_keeps_the_rounds_before_the_cut() {
    let dir = scratch();
    let root = dir.path().to_path_buf();
    // Rounds of different sizes: acknowledged appends, one commit-log frame each (appends
    // awaited one at a time), the last spanning more than a page.
    let sizes = [300usize, 1_500, 5_000, 700, 2_600, 6_100];
    {
        let root = root.clone();
        run(async move {
            let wal = CommitLog::open(&commit_log::shard_dir(&root, 0), &root, None, None)
                .await
                .expect("commit log");
            let log =
                PartitionLog::open_in(partition_dir(&root), LogConfig::default(), None, Some(wal))
                    .await
                    .expect("open");
            for (i, size) in sizes.iter().enumerate() {
                log.append(batch(i as u64, 1, *size, 1_000), 0)
                    .await
                    .expect("acknowledged");
            }
            // Not closed: a crash, the commit log holds every round.
            std::mem::forget(log);
        });
    }
    let path = wal_file(&root);
    let seq: u64 = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("seq");
    let bytes = std::fs::read(&path).expect("wal");
    let (all, _) = format::decode_file(seq, &bytes);
    let batches_in = |entries: &[format::Entry]| -> Vec<Bytes> {
        entries
            .iter()
            .flat_map(|e| e.batches.iter().cloned())
            .collect()
    };
    let everything = batches_in(&all);
    assert_eq!(everything.len(), sizes.len(), "one batch per round");
    // Where each round's frame ends (its payload, before the padding).
    let mut frame_ends = Vec::new();
    let mut at = 0usize;
    while at + format::FRAME_HEADER_BYTES <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4")) as usize;
        if len == 0 {
            break;
        }
        frame_ends.push(at + format::FRAME_HEADER_BYTES + len);
        at = (at + format::FRAME_HEADER_BYTES + len).next_multiple_of(PAGE);
    }
    let data_end = *frame_ends.last().expect("frames");
    let mut checked = 0;
    for cut in cuts(data_end) {
        for after in [After::Zeros, After::Garbage] {
            let torn = cut_at(&bytes[..data_end], cut, after);
            let (entries, _end) = format::decode_file(seq, &torn);
            let got = batches_in(&entries);
            // A round is in the log iff its whole frame is before the cut; the frame cut
            // through is the torn last round (never acknowledged: its write did not finish).
            let whole = frame_ends.iter().filter(|e| **e <= cut).count();
            assert_eq!(
                got,
                everything[..whole].to_vec(),
                "cut at {cut} ({after:?}): rounds kept"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 18);
    // And end to end, for the cut through the middle of the last page: the partition
    // reopens with every round before it, and nothing after.
    let cut = cuts(data_end)[4];
    std::fs::write(&path, cut_at(&bytes[..data_end], cut, After::Garbage)).expect("cut");
    let whole = frame_ends.iter().filter(|e| **e <= cut).count();
    let expected = everything[..whole].to_vec();
    let seg = partition_dir(&root).join("00000000000000000000.log");
    // The segment lost every write the crash did not let reach it.
    std::fs::write(&seg, b"").expect("empty segment");
    for e in std::fs::read_dir(partition_dir(&root)).expect("dir") {
        let p = e.expect("entry").path();
        if p.extension()
            .is_some_and(|x| x == "index" || x == "timeindex")
        {
            std::fs::remove_file(p).expect("remove index");
        }
    }
    let got = run(async move {
        quiver_storage::recovery::replay_all(&root)
            .await
            .expect("replay");
        let log = PartitionLog::open(partition_dir(&root), LogConfig::default())
            .await
            .expect("open");
        let got = read_all(&log).await;
        log.close().await.expect("close");
        got
    });
    assert!(
        got == expected,
        "{} of {} rounds after replay",
        got.len(),
        expected.len()
    );
}
