//! The group-commit write path: one task per log drains the pending queue into aligned
//! O_DIRECT writes and `fdatasync`s, rolls segments, and acknowledges appends — each step as
//! [`super::state::LogState`] decides.
//!
//! Appends that arrive while a write + fdatasync is in flight wait in the queue and go out
//! together in the next round: one write and one fdatasync for all of them.
//!
//! With the shard's commit log a round only hands its batches to the commit log (see
//! `crate::commit_log`) and acknowledges them once that is durable; the segment gets them
//! later, [`WRITE_BEHIND_BYTES`](super::WRITE_BEHIND_BYTES) or
//! [`WRITE_BEHIND_MS`](super::WRITE_BEHIND_MS) at a time (**write-behind**), without
//! fdatasync (the commit log's checkpoint fsyncs). Writing every round's few KiB to every
//! partition's segment cost one block I/O per partition per round — on a virtio disk a VM
//! exit each, about a tenth of the shard's CPU at 50,000 msg/s (docs/decisions/0010).

use std::rc::Rc;
use std::time::Instant;

use glommio::TaskQueueHandle;

use super::state::{
    Appended, FlusherStep, TailPage, WRITE_BEHIND_LIMIT_BYTES, ZERO_AHEAD_CHUNK_BYTES,
};
use super::Inner;
use crate::error::{Result, StorageError};
use crate::files;
use crate::segment::{align_down, align_up, SegmentFile};
use crate::segment_meta::SegmentMeta;
use crate::segments::Segment;
use crate::signal::{oneshot, Sender};

pub(super) fn spawn(inner: Rc<Inner>, queue: Option<TaskQueueHandle>) -> Result<()> {
    let (exit_tx, exit_rx) = oneshot();
    *inner.flusher_exit.borrow_mut() = Some(exit_rx);
    let dir = inner.dir.clone();
    let task = async move {
        run(inner).await;
        exit_tx.send(());
    };
    crate::spawn_detached(task, queue, "spawning the flusher for", &dir)
}

async fn run(inner: Rc<Inner>) {
    loop {
        let step = inner
            .state
            .borrow()
            .flusher_step(Instant::now(), &inner.config);
        match step {
            FlusherStep::Round => round(&inner).await,
            FlusherStep::Exit => return,
            FlusherStep::Housekeeping => {
                let Ok(_gate) = inner.write_gate.acquire_permit(1).await else {
                    return;
                };
                if inner.commit_log.is_some() {
                    write_behind_logged(&inner).await;
                } else if let Err(e) = inner.sync_now().await {
                    tracing::error!(dir = %inner.dir.display(), "periodic fdatasync failed: {e}");
                }
            }
            FlusherStep::Sleep(d) => {
                futures_lite::future::or(inner.doorbell.wait(), async {
                    glommio::timer::sleep(d).await;
                })
                .await
            }
            FlusherStep::Wait => inner.doorbell.wait().await,
        }
    }
}

/// One group commit: take every pending batch, write them (rolling segments as needed),
/// fdatasync per policy, then acknowledge all of them — or fail all and roll back.
///
/// With the commit log, a write-behind that is due goes to the segment *beside* the round's
/// commit log write, not after its acknowledgements: there it held the partition's flusher
/// for its whole write (p50 ~600 µs, p99 ~2 ms at 50,000 msg/s), and the next produce request,
/// which needs every partition's round, waited for the slowest (docs/decisions/0010).
async fn round(inner: &Rc<Inner>) {
    let Ok(_gate) = inner.write_gate.acquire_permit(1).await else {
        return;
    };
    let (batches, acks) = inner.state.borrow_mut().take_round();
    inner.room_waiters.wake_all();
    if batches.is_empty() {
        return;
    }
    if inner.commit_log.is_some() {
        let write_behind_due = inner.state.borrow().write_behind_due();
        let bytes = batches.iter().map(|b| b.bytes.clone()).collect();
        let commit = async {
            match inner.log_to_commit_log(None, bytes).await {
                Ok(()) => {
                    acknowledge(inner, batches, acks);
                    None
                }
                Err(e) => Some((acks, e)),
            }
        };
        // The write-behind writes only batches queued before this round (the ones this round
        // acknowledges join the queue behind them), and the write gate stays held until both
        // are done: nothing else touches the segment meanwhile.
        let write_behind = async {
            if write_behind_due {
                write_behind_logged(inner).await;
            }
        };
        let (failed, ()) = futures_lite::future::zip(commit, write_behind).await;
        if let Some((acks, e)) = failed {
            fail_round(inner, acks, e).await;
        }
        return;
    }
    let result = match write_all(inner, &batches).await {
        Ok(()) => sync_if_due(inner).await,
        Err((_, e)) => Err(e),
    };
    match result {
        Ok(()) => {
            acknowledge(inner, batches, acks);
            if let Err(e) = zero_ahead(inner).await {
                // Only a latency optimisation: appends still work without it.
                tracing::debug!(dir = %inner.dir.display(), "zeroing ahead of the tail failed: {e}");
            }
        }
        Err(e) => fail_round(inner, acks, e).await,
    }
}

/// A round's batches are durable: the state moves the durable offset past them (and queues
/// them for the segment, with the commit log); their producers and the readers waiting for
/// them wake.
fn acknowledge(inner: &Inner, batches: Vec<Appended>, acks: Vec<Sender<Result<()>>>) {
    inner
        .state
        .borrow_mut()
        .acknowledge(batches, inner.commit_log.is_some());
    for ack in acks {
        ack.send(Ok(()));
    }
    inner.durable_waiters.wake_all();
}

/// Writes the acknowledged batches the segment lacks (see the module documentation). Call
/// with the write gate held (nothing else changes `write_behind` meanwhile). The batches stay
/// queued, and readable from memory, until their write completed and the segment's metadata
/// covers them. On failure the batches not written stay queued (readable, and durable in the
/// commit log) for the next try, and appends fail while too many wait.
pub(super) async fn write_behind(inner: &Rc<Inner>) -> Result<()> {
    let batches: Vec<Appended> = inner.state.borrow().write_behind.to_write();
    if batches.is_empty() {
        inner.state.borrow_mut().write_behind.error = None;
        return Ok(());
    }
    let result = write_all(inner, &batches).await;
    let mut st = inner.state.borrow_mut();
    match result {
        Ok(()) => {
            st.write_behind.written(batches.len());
            Ok(())
        }
        Err((written, e)) => {
            st.write_behind.written(written);
            st.write_behind.write_failed(&e, WRITE_BEHIND_LIMIT_BYTES);
            Err(e)
        }
    }
}

/// [`write_behind`] from the flusher, which has nobody to return its error to.
async fn write_behind_logged(inner: &Rc<Inner>) {
    if let Err(e) = write_behind(inner).await {
        tracing::warn!(dir = %inner.dir.display(), "writing acknowledged batches to the segment failed; they stay in memory and in the commit log, and the write is retried: {e}");
    }
}

async fn fail_round(inner: &Rc<Inner>, acks: Vec<Sender<Result<()>>>, error: StorageError) {
    tracing::warn!(dir = %inner.dir.display(), "write failed, rolling back to the last acknowledged offset: {error}");
    let reason = error.to_string();
    for ack in acks {
        ack.send(Err(error.for_another_waiter()));
    }
    let durable = inner.state.borrow().durable_offset;
    if let Err(e) = inner.truncate_locked(durable, &reason).await {
        tracing::error!(dir = %inner.dir.display(), "rollback after a failed write failed too: {e}");
        inner.state.borrow_mut().failed = Some(format!("{reason}; then rollback failed: {e}"));
    }
}

/// Writes `batch` to the segments (rolling as needed); on failure, also says how many of its
/// batches were written (and are in the segment's metadata) before the error.
async fn write_all(
    inner: &Rc<Inner>,
    batch: &[Appended],
) -> std::result::Result<(), (usize, StorageError)> {
    let mut i = 0;
    while i < batch.len() {
        let roll_first = inner
            .state
            .borrow()
            .needs_roll(&batch[i], Instant::now(), &inner.config);
        if roll_first {
            roll(inner).await.map_err(|e| (i, e))?;
        }
        let end = inner.state.borrow().run_end(batch, i, &inner.config);
        write_run(inner, &batch[i..end]).await.map_err(|e| (i, e))?;
        i = end;
    }
    Ok(())
}

/// One aligned write: the tail page followed by the run, zero-padded to a page.
async fn write_run(inner: &Rc<Inner>, run: &[Appended]) -> Result<()> {
    let (file, position, buf, logical_len) = {
        let st = inner.state.borrow();
        let file = st.active().file.clone();
        let logical_len = st.tail.bytes.len() + run.iter().map(|p| p.bytes.len()).sum::<usize>();
        let mut buf = file.alloc(align_up(logical_len as u64) as usize);
        let out = buf.as_bytes_mut();
        out[..st.tail.bytes.len()].copy_from_slice(&st.tail.bytes);
        let mut at = st.tail.bytes.len();
        for p in run {
            out[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
            at += p.bytes.len();
        }
        out[at..].fill(0);
        (file, st.tail.aligned_position, Rc::new(buf), logical_len)
    };
    file.write_aligned(buf.clone(), position).await?;
    let end = position + logical_len as u64;
    let tail_start = align_down(end);
    let tail = TailPage {
        aligned_position: tail_start,
        bytes: buf.as_bytes()[(tail_start - position) as usize..logical_len].to_vec(),
    };
    inner.state.borrow_mut().run_written(
        run,
        logical_len,
        tail,
        buf.len() as u64,
        &inner.config,
        Instant::now(),
    );
    Ok(())
}

async fn sync_if_due(inner: &Rc<Inner>) -> Result<()> {
    let due = inner.state.borrow().sync_due(Instant::now(), &inner.config);
    if due {
        inner.sync_now().await?;
    }
    Ok(())
}

/// Trims the active segment's page padding, fdatasyncs it and writes its index (so the next
/// open skips the scan): before a roll, and on close. Returns its metadata.
pub(super) async fn seal_active(inner: &Inner) -> Result<SegmentMeta> {
    let (file, meta) = {
        let st = inner.state.borrow();
        let a = st.active();
        (a.file.clone(), a.meta.clone())
    };
    file.truncate(meta.size_bytes).await?;
    inner.sync_now().await?;
    files::write_plain(
        &files::index_path(&inner.dir, meta.base_offset),
        meta.to_index().encode(),
    )
    .await?;
    Ok(meta)
}

/// Seals the active segment and starts a new one at the next offset.
async fn roll(inner: &Rc<Inner>) -> Result<()> {
    let next = seal_active(inner).await?.next_offset;
    // A roll that failed after creating the next file (at its directory fsync) left it
    // behind, empty; no segment can start at `next` yet, so it is only that leftover, and
    // keeping it would make every later roll fail ("file exists").
    let leftover = files::segment_path(&inner.dir, next);
    if std::fs::metadata(&leftover).is_ok_and(|m| m.len() == 0) {
        files::remove(&leftover).await?;
    }
    let new_file = Rc::new(SegmentFile::create(&inner.dir, next).await?);
    inner.state.borrow_mut().rolled(
        Segment {
            meta: SegmentMeta::empty(next),
            file: new_file,
        },
        Instant::now(),
    );
    tracing::debug!(dir = %inner.dir.display(), base_offset = next, "rolled to a new segment");
    write_producer_snapshot(inner, next).await
}

/// Most producer-state snapshots kept (the newest; older ones are removed).
const PRODUCER_SNAPSHOTS_KEPT: usize = 2;

/// The idempotent producers' state as of `offset` (a new segment's base), so recovery scans
/// only the segments from there. CRC-checked on read: a torn snapshot is rebuilt from the log.
async fn write_producer_snapshot(inner: &Rc<Inner>, offset: u64) -> Result<()> {
    // Written even when empty: recovery then scans only the segments after it.
    let bytes = {
        let mut as_of = inner.state.borrow().producers.clone();
        as_of.truncate_from(offset); // batches stamped past the roll are not in it yet
        as_of.encode()
    };
    files::write_plain(&files::producer_snapshot_path(&inner.dir, offset), bytes).await?;
    let all = files::list_producer_snapshots(&inner.dir)?;
    for old in all.iter().rev().skip(PRODUCER_SNAPSHOTS_KEPT) {
        files::remove(&files::producer_snapshot_path(&inner.dir, *old)).await?;
    }
    Ok(())
}

/// Under `every_append` without the commit log, keeps the next couple of MiB past the tail
/// written with zeroes and synced, so that an append's write lands on allocated, initialised
/// blocks inside the file's size and its fdatasync has no metadata to journal (on ext4 that
/// halves the tail latency of append+fsync). Runs with the write gate held, after the round's
/// acknowledgements, so it never races a data write. Recovery and close cut the zeroes off (a
/// zero header is a clean end of the log).
///
/// With the commit log it is off: segment writes are off the acknowledgement path and come
/// 256 KiB at a time (write-behind), so allocating their blocks costs little, while each
/// 2 MiB of zeroes held the disk long enough to delay the commit log rounds queued behind it
/// (node produce p99 1.9–2.0 → 1.0–1.3 ms without it; docs/decisions/0010).
async fn zero_ahead(inner: &Rc<Inner>) -> Result<()> {
    let (file, start) = {
        let st = inner.state.borrow();
        let Some(start) = st.zero_ahead_at(&inner.config, inner.commit_log.is_some()) else {
            return Ok(());
        };
        (st.active().file.clone(), start)
    };
    let mut buf = file.alloc(ZERO_AHEAD_CHUNK_BYTES as usize);
    buf.as_bytes_mut().fill(0);
    file.write_aligned(Rc::new(buf), start).await?;
    file.sync().await?;
    inner.state.borrow_mut().zeroed_until = start + ZERO_AHEAD_CHUNK_BYTES;
    Ok(())
}
