//! Compaction's driver: runs the pass [`super::state::LogState::compaction_plan`] decides,
//! keeping what [`crate::compaction::keep`] keeps.
//!
//! 1. Map: the keys of the sealed segments written since the last pass, up to the memory
//!    bound (a batch is mapped whole or the map stops before it).
//! 2. Rewrite, one sealed segment at a time, oldest first: every batch is kept (offsets stay
//!    contiguous), thinned to the records that survive; a segment with nothing to remove is
//!    left alone. The copy is written to `<base>.log.compact.tmp` and fdatasynced.
//! 3. Swap, under the write gate (the only moment a writer waits, for a rename): the index
//!    is removed, the copy renamed over the segment, the directory synced, the new index
//!    written and the segment replaced in the state. A crash before the rename leaves the old
//!    segment (the `.tmp` is removed on open); after it, the new one, whose index is rebuilt
//!    by a scan if missing. Readers holding the old file keep reading it.
//!
//! It reads and writes on the background task queue, never under the write gate, so produce
//! and fetch do not wait for it.

use std::rc::Rc;
use std::time::Duration;

use glommio::io::{BufferedFile, OpenOptions};
use glommio::TaskQueueHandle;
use quiver_batch::retain::{retain_records, Retained};
use quiver_batch::RecordIter;

use super::{now_ms, Inner, PartitionLog};
use crate::compaction::{keep, KeyMap};
use crate::error::{Result, StorageError};
use crate::files;
use crate::scan::StopReason;
use crate::segment::{BatchWalker, SegmentFile};
use crate::segment_meta::SegmentMeta;
use crate::segments::Segment;

/// Bytes read from a segment at a time.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Bytes gathered before one write of the compacted copy.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Keys mapped (distinct keys written since the last pass).
    pub keys: usize,
    pub segments_rewritten: usize,
    pub records_removed: u64,
    /// Sealed bytes read (mapping and rewriting).
    pub bytes_read: u64,
    /// Size of the rewritten segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records below this offset are compacted now.
    pub compacted_until: u64,
}

impl PartitionLog {
    /// One compaction pass, if one is due (see the module documentation). `now_ms` is the
    /// wall clock (tombstone expiry); a parameter so tests control time.
    pub async fn compact(&self, now_ms: i64) -> Result<CompactionOutcome> {
        self.inner.compact(now_ms).await
    }

    /// Runs retention and compaction every `interval` on task queue `queue` (give it fewer
    /// shares than the produce/fetch queue) until the log closes.
    pub fn spawn_cleanup(&self, queue: Option<TaskQueueHandle>, interval: Duration) -> Result<()> {
        let log = self.clone();
        let task = async move {
            loop {
                glommio::timer::sleep(interval).await;
                if log.inner.state.borrow().closing {
                    return;
                }
                if let Err(e) = log.enforce_retention(now_ms()).await {
                    tracing::warn!(dir = %log.inner.dir.display(), "retention pass failed: {e}");
                }
                if let Err(e) = log.compact(now_ms()).await {
                    tracing::warn!(dir = %log.inner.dir.display(), "compaction pass failed (the log is unchanged; the next pass retries): {e}");
                }
            }
        };
        crate::spawn_detached(task, queue, "spawning the cleanup of", &self.inner.dir)
    }
}

impl Inner {
    async fn compact(&self, now_ms: i64) -> Result<CompactionOutcome> {
        let Some(plan) = self.state.borrow().compaction_plan(&self.config) else {
            return Ok(CompactionOutcome::default());
        };
        let mut out = CompactionOutcome::default();
        // 1. Map the keys written since the last pass.
        let mut map = KeyMap::new(self.config.compaction_map_bytes);
        let mut map_end = plan.dirty_from;
        'mapping: for (base, size, file) in &plan.sealed {
            let end = self.segment_end(*base);
            if end <= plan.dirty_from {
                continue;
            }
            let mut walker = BatchWalker::new(file.clone(), 0, *base, *size, READ_CHUNK_BYTES);
            while let Some(b) = self.next_batch(&mut walker, *base, *size).await? {
                out.bytes_read += b.bytes.len() as u64;
                let next = b.header.last_offset() as u64 + 1;
                if next <= plan.dirty_from {
                    continue;
                }
                if !map.has_room(b.header.records_count.max(0) as usize) {
                    tracing::info!(dir = %self.dir.display(), keys = map.len(), "compaction key map full; the rest waits for the next pass");
                    break 'mapping;
                }
                // Long passes give the shard back between batches (produce and fetch first).
                glommio::yield_if_needed().await;
                for r in RecordIter::new(b.bytes.clone())
                    .map_err(|e| self.corrupt(*base, b.position, e))?
                {
                    let r = r.map_err(|e| self.corrupt(*base, b.position, e))?;
                    if let Some(k) = &r.key {
                        map.observe(k, r.offset as u64);
                    }
                }
                map_end = next;
            }
        }
        out.keys = map.len();
        out.compacted_until = map_end;
        if map_end <= plan.dirty_from {
            return Ok(out);
        }
        // 2 and 3. Rewrite the segments below map_end that hold something to remove.
        for (base, size, file) in &plan.sealed {
            if *base >= map_end {
                break;
            }
            let rewritten = self
                .rewrite(*base, *size, file.clone(), &map, map_end, now_ms, &mut out)
                .await?;
            if let Some((meta, tmp)) = rewritten {
                self.swap(*base, *size, meta, &tmp, &mut out).await?;
            }
        }
        self.state.borrow_mut().compacted_until = map_end;
        if out.segments_rewritten > 0 {
            tracing::info!(dir = %self.dir.display(), segments = out.segments_rewritten, removed = out.records_removed,
                before = out.bytes_before, after = out.bytes_after, "compacted");
        }
        Ok(out)
    }

    /// The end offset of the sealed segment at `base` (0 when it is gone).
    fn segment_end(&self, base: u64) -> u64 {
        self.state
            .borrow()
            .segments
            .sealed()
            .find(|s| s.meta.base_offset == base)
            .map_or(0, |s| s.meta.next_offset)
    }

    fn corrupt(&self, base: u64, position: u64, detail: impl std::fmt::Display) -> StorageError {
        StorageError::Corrupt {
            path: files::segment_path(&self.dir, base),
            position,
            detail: detail.to_string(),
        }
    }

    /// The next batch of a sealed segment; `None` at its end. Anything but whole valid
    /// batches up to `size` is corruption: a copy must never lose the rest of a segment.
    async fn next_batch(
        &self,
        walker: &mut BatchWalker,
        base: u64,
        size: u64,
    ) -> Result<Option<crate::segment::WalkedBatch>> {
        match walker.next().await? {
            Ok(b) => Ok(Some(b)),
            Err(StopReason::CleanEnd) if walker.position() == size => Ok(None),
            Err(StopReason::CleanEnd) => Err(self.corrupt(
                base,
                walker.position(),
                format!("the segment ends before its {size} bytes"),
            )),
            Err(StopReason::Invalid(why)) => Err(self.corrupt(base, walker.position(), why)),
        }
    }

    /// Writes the compacted copy of one segment; `None` when nothing in it goes.
    #[allow(clippy::too_many_arguments)]
    async fn rewrite(
        &self,
        base: u64,
        size: u64,
        file: Rc<SegmentFile>,
        map: &KeyMap,
        map_end: u64,
        now_ms: i64,
        out: &mut CompactionOutcome,
    ) -> Result<Option<(SegmentMeta, std::path::PathBuf)>> {
        let tmp = self.dir.join(format!(
            "{base:020}{}.compact{}",
            files::SEGMENT_SUFFIX,
            files::TMP_SUFFIX
        ));
        let mut writer = CopyWriter::create(&tmp).await?;
        let mut meta = SegmentMeta::empty(base);
        let mut removed = 0u64;
        let mut walker = BatchWalker::new(file, 0, base, size, READ_CHUNK_BYTES);
        let result: Result<()> = async {
            while let Some(b) = self.next_batch(&mut walker, base, size).await? {
                out.bytes_read += b.bytes.len() as u64;
                glommio::yield_if_needed().await;
                let kept = retain_records(&b.bytes, |r| {
                    keep(r, map, map_end, now_ms, self.config.delete_retention_ms)
                })
                .map_err(|e| self.corrupt(base, b.position, e))?;
                let bytes = match kept {
                    Retained::All => b.bytes.to_vec(),
                    Retained::Rebuilt {
                        batch, removed: r, ..
                    } => {
                        removed += r as u64;
                        batch.to_vec()
                    }
                };
                meta.on_batch(
                    &b.header,
                    bytes.len() as u64,
                    self.config.index_interval_bytes,
                );
                writer.push(bytes).await?;
            }
            writer.finish().await
        }
        .await;
        if result.is_err() || removed == 0 {
            let _ = files::remove(&tmp).await;
            return result.map(|()| None);
        }
        out.records_removed += removed;
        Ok(Some((meta, tmp)))
    }

    /// Puts the compacted copy in place of the segment, if it is still there unchanged.
    async fn swap(
        &self,
        base: u64,
        size: u64,
        meta: SegmentMeta,
        tmp: &std::path::Path,
        out: &mut CompactionOutcome,
    ) -> Result<()> {
        let _gate = self.write_gate().await?;
        let still_there = self
            .state
            .borrow()
            .segments
            .sealed()
            .any(|s| s.meta.base_offset == base && s.meta.size_bytes == size);
        if !still_there {
            // Retention or a truncation got there first.
            return files::remove(tmp).await;
        }
        let segment_path = files::segment_path(&self.dir, base);
        let index_path = files::index_path(&self.dir, base);
        files::remove(&index_path).await?;
        glommio::io::rename(tmp, &segment_path)
            .await
            .map_err(|e| StorageError::from_glommio("renaming into", &segment_path, e))?;
        files::sync_dir(&self.dir).await?;
        let file = Rc::new(SegmentFile::open(&self.dir, base).await?);
        files::write_plain(&index_path, meta.to_index().encode()).await?;
        out.segments_rewritten += 1;
        out.bytes_before += size;
        out.bytes_after += meta.size_bytes;
        self.state
            .borrow_mut()
            .compacted(base, size, Segment { meta, file });
        Ok(())
    }
}

/// The compacted copy of a segment, written in chunks and made durable before the swap.
struct CopyWriter {
    file: BufferedFile,
    path: std::path::PathBuf,
    position: u64,
    buf: Vec<u8>,
}

impl CopyWriter {
    async fn create(path: &std::path::Path) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(path)
            .await
            .map_err(|e| StorageError::from_glommio("creating", path, e))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            position: 0,
            buf: Vec::with_capacity(WRITE_CHUNK_BYTES),
        })
    }

    async fn push(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.buf.extend_from_slice(&bytes);
        if self.buf.len() >= WRITE_CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK_BYTES));
        let len = chunk.len();
        files::write_all_at(&self.file, chunk, self.position, &self.path).await?;
        self.position += len as u64;
        Ok(())
    }

    async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::from_glommio("syncing", &self.path, e))?;
        self.file
            .close()
            .await
            .map_err(|e| StorageError::from_glommio("closing", &self.path, e))
    }
}
