//! The idempotent producer on a real log: a retried batch gets the offsets it was written at
//! and is not written twice, a gap or an old epoch is refused with nothing written, and all of
//! it holds after the log is closed and reopened (from the snapshots written at rolls, or by
//! reading the log where there is none).

mod common;

use bytes::BytesMut;
use common::{run, scratch};
use quiver_batch::{BatchBuilder, NewRecord};
use quiver_storage::producer_state::ProducerError;
use quiver_storage::{LogConfig, PartitionLog, StorageError};

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        cache_bytes: 0,
        ..LogConfig::default()
    }
}

/// A batch of `records` 1 KiB records from producer `pid` at `epoch`, first sequence `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, records: usize) -> BytesMut {
    let mut b = BatchBuilder::new().producer(pid, epoch, seq);
    for i in 0..records {
        b.push(&NewRecord::value(vec![i as u8; 1024], 1_700_000_000_000));
    }
    b.build()
}

#[test]
fn retries_are_answered_with_their_offsets_gaps_and_fenced_epochs_are_refused_across_reopens() {
    let dir = scratch();
    let path = dir.path().join("p");
    run(async move {
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        // 40 batches of 2 records: several rolls (8 KiB segments), so snapshots exist.
        let mut offsets = Vec::new();
        for i in 0..40 {
            let info = log.append(batch(9, 0, i * 2, 2), 0).await.unwrap();
            offsets.push((info.base_offset, info.last_offset));
        }
        let end = log.log_end_offset();
        // The retry of the last batch: its offsets, nothing written.
        let again = log.append(batch(9, 0, 78, 2), 0).await.unwrap();
        assert_eq!((again.base_offset, again.last_offset), offsets[39]);
        assert_eq!(log.log_end_offset(), end);
        // A gap and an old epoch: typed refusals, nothing written.
        let gap = log.append(batch(9, 0, 90, 1), 0).await.unwrap_err();
        assert!(
            matches!(
                gap,
                StorageError::Producer(ProducerError::OutOfOrderSequence {
                    expected: 80,
                    got: 90,
                    ..
                })
            ),
            "{gap}"
        );
        log.append(batch(9, 1, 0, 1), 0).await.unwrap(); // a new epoch starts at 0
        let fenced = log.append(batch(9, 0, 80, 1), 0).await.unwrap_err();
        assert!(
            matches!(
                fenced,
                StorageError::Producer(ProducerError::ProducerFenced { .. })
            ),
            "{fenced}"
        );
        let end = log.log_end_offset();
        log.close().await.unwrap();
        assert!(
            std::fs::read_dir(&path).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".producers")),
            "a roll wrote a snapshot"
        );

        // Reopened (snapshot + active segment): the same answers.
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        let retry = log.append(batch(9, 1, 0, 1), 0).await.unwrap();
        assert_eq!(
            retry.last_offset + 1,
            end,
            "the new epoch's batch is a duplicate"
        );
        assert_eq!(log.log_end_offset(), end);
        assert!(
            log.append(batch(9, 0, 80, 1), 0).await.is_err(),
            "still fenced"
        );
        log.close().await.unwrap();

        // Without snapshots (as after an upgrade): rebuilt by reading the log.
        for e in std::fs::read_dir(&path).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with(".producers") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        let retry = log.append(batch(9, 1, 0, 1), 0).await.unwrap();
        assert_eq!(retry.last_offset + 1, end);
        let next = log.append(batch(9, 1, 1, 1), 0).await.unwrap();
        assert_eq!(next.base_offset, end, "the next sequence appends");
        log.close().await.unwrap();
    });
}

/// A replica stores its leader's entries as they come: its producer state records them
/// without judging them (it may have forgotten or kept producers its leader did not), so an
/// entry its own state would call a duplicate or fenced still takes its place in the log.
#[test]
fn a_replica_entry_is_stored_whatever_the_replica_s_producer_state_says() {
    let dir = scratch();
    let path = dir.path().join("p");
    run(async move {
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        log.append(batch(9, 1, 0, 2), 0).await.unwrap();
        assert_eq!(log.log_end_offset(), 2);
        // As a client's batch, the same one is a duplicate and an older epoch is fenced;
        // as its leader's entries, both are stored.
        for entry in [batch(9, 1, 0, 2), batch(9, 0, 5, 1)] {
            let (info, durable) = log.append_replica_entry(entry, 0).await.unwrap();
            durable.wait().await.unwrap();
            assert_eq!(info.last_offset + 1, log.log_end_offset());
        }
        assert_eq!(log.log_end_offset(), 5);
        log.close().await.unwrap();
    });
}
