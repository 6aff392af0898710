//! Recovery from damage on disk: torn tails, bit flips, missing or corrupt indexes, garbage
//! after the padding. An acknowledged batch is never lost; garbage is never served.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{batch, run, scratch};
use quiver_storage::StorageError;
use quiver_storage::{LogConfig, PartitionLog};

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        cache_bytes: 0,
        ..LogConfig::default()
    }
}

fn segment(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn index(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// Appends `n` batches of 1 record each (offset i = batch i) and closes the log.
async fn fill(dir: &Path, n: u64) -> Vec<Bytes> {
    let log = PartitionLog::open(dir, cfg()).await.unwrap();
    for i in 0..n {
        log.append(batch(i, 1, 700, 1000 + i as i64), 0)
            .await
            .unwrap();
    }
    let all = read_all(&log).await;
    log.close().await.unwrap();
    all
}

async fn read_all(log: &PartitionLog) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(b) = log
        .read(out.len() as u64, 1 << 20)
        .await
        .unwrap()
        .into_iter()
        .next()
    {
        out.push(b);
    }
    out
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn active_base(dir: &Path) -> u64 {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    bases.sort_unstable();
    *bases.last().unwrap()
}

#[test]
fn a_torn_tail_is_truncated_and_the_log_continues() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let before = fill(&path, 10).await;
        let seg = segment(&path, active_base(&path));
        let len_before = std::fs::metadata(&seg).unwrap().len();
        // Half of a valid batch (with the next offset): a write torn by a crash.
        let mut next = batch(99, 1, 700, 5).to_vec();
        next[..8].copy_from_slice(&10i64.to_be_bytes());
        append_raw(&seg, &next[..next.len() / 2]);
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        assert_eq!(log.durable_offset(), 10);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            len_before,
            "the torn bytes are gone"
        );
        assert_eq!(read_all(&log).await, before);
        assert_eq!(
            log.append(batch(10, 1, 700, 0), 0)
                .await
                .unwrap()
                .base_offset,
            10
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_bit_flip_in_the_last_batch_drops_that_batch_only() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let before = fill(&path, 10).await;
        let base = active_base(&path);
        let seg = segment(&path, base);
        std::fs::remove_file(index(&path, base)).unwrap(); // as after a crash: no clean-close index
        let mut data = std::fs::read(&seg).unwrap();
        let last = data.len() - 100;
        data[last] ^= 0x10;
        std::fs::write(&seg, &data).unwrap();
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        assert_eq!(log.durable_offset(), 9);
        assert_eq!(read_all(&log).await, before[..9].to_vec());
        log.close().await.unwrap();
    });
}

#[test]
fn garbage_after_zero_padding_is_never_served() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let before = fill(&path, 3).await;
        let seg = segment(&path, active_base(&path));
        let mut junk = vec![0u8; 4096];
        junk.extend((0..5000u32).map(|i| (i * 7 + 3) as u8));
        append_raw(&seg, &junk);
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        assert_eq!(log.durable_offset(), 3);
        assert_eq!(read_all(&log).await, before);
        log.close().await.unwrap();
    });
}

#[test]
fn a_missing_or_corrupt_index_is_rebuilt_identically() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        let before = fill(&path, 300).await;
        let sealed = 0u64;
        let original = std::fs::read(index(&path, sealed)).unwrap();
        std::fs::remove_file(index(&path, sealed)).unwrap();
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        assert_eq!(read_all(&log).await, before);
        log.close().await.unwrap();
        assert_eq!(
            std::fs::read(index(&path, sealed)).unwrap(),
            original,
            "rebuilt from the segment"
        );

        let mut damaged = original.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0xff;
        std::fs::write(index(&path, sealed), &damaged).unwrap();
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        for offset in [0u64, 17, 42, 63] {
            let got = log.read(offset, 1).await.unwrap();
            assert_eq!(got[0], before[offset as usize]);
        }
        log.close().await.unwrap();
        assert_eq!(std::fs::read(index(&path, sealed)).unwrap(), original);
    });
}

#[test]
fn corruption_inside_a_sealed_segment_is_reported_not_served() {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    run(async move {
        fill(&path, 300).await;
        let seg = segment(&path, 0);
        let mut data = std::fs::read(&seg).unwrap();
        data[3000] ^= 0x01;
        std::fs::write(&seg, &data).unwrap();
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        let mut saw_corrupt = false;
        for offset in 0..20u64 {
            match log.read(offset, 1).await {
                Ok(batches) => assert!(!batches.is_empty()),
                Err(StorageError::Corrupt { .. }) => saw_corrupt = true,
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert!(saw_corrupt, "the flipped batch must be refused");
        log.close().await.unwrap();
    });
}
