//! # quiver-tests: end-to-end tests on real processes, sockets and files
//!
//! - `src/bin/crash_appender.rs`: a child process that appends with fsync and reports every
//!   acknowledged batch on stdout, for the kill -9 test in `tests/crash_recovery.rs`.
//! - `tests/disk_full.rs`: a log on a small loop-mounted ext4 filled to ENOSPC.
//! - Broker-level tests arrive with the broker node.

pub mod chaos;
pub mod cli;
pub mod loopfs;
pub mod node;

use bytes::{Bytes, BytesMut};
use quiver_batch::{BatchBuilder, NewRecord};

/// The deterministic batch number `seq` of crash round `round`: the child appends it, the
/// test rebuilds it to compare bytes.
pub fn crash_batch(round: u64, seq: u64) -> BytesMut {
    let mut b = BatchBuilder::new();
    let records = 1 + (seq % 7) as usize;
    for i in 0..records {
        let len = 50 + ((round * 131 + seq * 17 + i as u64) % 2000) as usize;
        let mut value = vec![(seq % 251) as u8; len];
        value[..8].copy_from_slice(&round.to_be_bytes());
        value[8..16].copy_from_slice(&seq.to_be_bytes());
        b.push(&NewRecord {
            key: Some(Bytes::from(format!("r{round}-s{seq}-{i}"))),
            value: Some(Bytes::from(value)),
            headers: vec![],
            timestamp_ms: 1_700_000_000_000 + seq as i64,
        });
    }
    b.build()
}

/// Log settings shared by the crash child and the checker: small segments so rolls happen
/// under the kill.
pub fn crash_log_config() -> quiver_storage::LogConfig {
    quiver_storage::LogConfig {
        segment_bytes: 256 << 10,
        ..quiver_storage::LogConfig::default()
    }
}
