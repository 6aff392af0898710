//! Helpers shared by the storage tests: a glommio executor per test, batches with known
//! content, and scratch directories on the real (O_DIRECT-capable) disk.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use quiver_batch::{BatchBuilder, NewRecord};

/// Runs `fut` on a fresh, unpinned glommio executor.
pub fn run<T: 'static, F: Future<Output = T> + 'static>(fut: F) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("glommio executor")
        .run(fut)
}

/// A scratch directory under cargo's target tmpdir (same disk as the build, supports O_DIRECT).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("quiver-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}

/// A batch of `records` records whose values are `value_bytes` bytes derived from `seed`.
pub fn batch(seed: u64, records: usize, value_bytes: usize, timestamp_ms: i64) -> BytesMut {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        let byte = (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
        let mut value = vec![byte; value_bytes];
        if value_bytes >= 8 {
            value[..8].copy_from_slice(&seed.to_be_bytes());
        }
        b.push(&NewRecord {
            key: Some(Bytes::from(format!("key-{seed}-{i}"))),
            value: Some(Bytes::from(value)),
            headers: vec![],
            timestamp_ms,
        });
    }
    b.build()
}

pub fn dir_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
