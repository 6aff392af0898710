//! One segment file on disk (the I/O driver around [`SegmentMeta`]): O_DIRECT via glommio
//! `DmaFile`, aligned writes, reads into `Bytes`, and [`BatchWalker`], which walks and
//! verifies batches for recovery, index rebuilds and reads.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::config::MAX_BATCH_BYTES_LIMIT;
use crate::epoch::LeaderEpochMap;
use crate::error::{Result, StorageError};
use crate::files;
use crate::scan::{scan_step, ScanStep, StopReason};
use crate::segment_meta::SegmentMeta;
use quiver_batch::BatchHeader;

/// Alignment of every O_DIRECT write and of the tail page: one page.
pub const PAGE_BYTES: u64 = 4096;

pub fn align_down(v: u64) -> u64 {
    v & !(PAGE_BYTES - 1)
}

pub fn align_up(v: u64) -> u64 {
    align_down(v + PAGE_BYTES - 1)
}

/// An open segment file. Shared (`Rc`) so a read in flight keeps the file open even if
/// retention unlinks it meanwhile.
pub struct SegmentFile {
    pub path: PathBuf,
    file: DmaFile,
}

impl SegmentFile {
    /// Creates `<base>.log` (it must not exist) and makes its name durable.
    pub async fn create(dir: &Path, base_offset: u64) -> Result<Self> {
        let path = files::segment_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| StorageError::from_glommio("creating segment", &path, e))?;
        files::sync_dir(dir).await?;
        Ok(Self { path, file })
    }

    pub async fn open(dir: &Path, base_offset: u64) -> Result<Self> {
        let path = files::segment_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(|e| StorageError::from_glommio("opening segment", &path, e))?;
        Ok(Self { path, file })
    }

    pub fn alloc(&self, bytes: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(bytes)
    }

    /// Writes a page-aligned buffer at a page-aligned position; a short write is an error.
    pub async fn write_aligned(&self, buf: Rc<DmaBuffer>, position: u64) -> Result<()> {
        write_whole(&self.file, buf, position, "writing segment", &self.path).await
    }

    pub async fn sync(&self) -> Result<()> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::from_glommio("syncing segment", &self.path, e))
    }

    pub async fn truncate(&self, size_bytes: u64) -> Result<()> {
        self.file
            .truncate(size_bytes)
            .await
            .map_err(|e| StorageError::from_glommio("truncating segment", &self.path, e))
    }

    pub async fn physical_size(&self) -> Result<u64> {
        self.file
            .file_size()
            .await
            .map_err(|e| StorageError::from_glommio("sizing segment", &self.path, e))
    }

    /// One DMA read of `[position, position + len)` (shorter at end of file), copied once
    /// into `Bytes` so batches can be handed out as slices.
    pub async fn read(&self, position: u64, len: usize) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let rr = self
            .file
            .read_at(position, len)
            .await
            .map_err(|e| StorageError::from_glommio("reading segment", &self.path, e))?;
        Ok(Bytes::copy_from_slice(&rr))
    }

    pub async fn close(self) -> Result<()> {
        self.file
            .close()
            .await
            .map_err(|e| StorageError::from_glommio("closing segment", &self.path, e))
    }
}

/// One O_DIRECT write of all of `buf` (page-aligned, at a page-aligned position) to `file`,
/// which is at `path`; a short write is an error, named by `op`.
pub async fn write_whole(
    file: &DmaFile,
    buf: Rc<DmaBuffer>,
    position: u64,
    op: &'static str,
    path: &Path,
) -> Result<()> {
    debug_assert_eq!(position % PAGE_BYTES, 0);
    debug_assert_eq!(buf.len() as u64 % PAGE_BYTES, 0);
    let len = buf.len();
    let written = file
        .write_rc_at(buf, position)
        .await
        .map_err(|e| StorageError::from_glommio(op, path, e))?;
    if written != len {
        return Err(StorageError::from_io(
            op,
            path,
            std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes"),
            ),
        ));
    }
    Ok(())
}

/// One verified batch found by a [`BatchWalker`].
pub struct WalkedBatch {
    pub header: BatchHeader,
    pub position: u64,
    pub bytes: Bytes,
}

/// Walks batches from a known batch boundary, verifying each (shape, CRC, offsets contiguous)
/// before yielding it. Reads in chunks; a batch larger than the chunk gets its own read.
pub struct BatchWalker {
    file: Rc<SegmentFile>,
    end_position: u64,
    chunk_bytes: usize,
    window: Bytes,
    window_position: u64,
    cursor: usize,
    next_offset: u64,
}

impl BatchWalker {
    /// Starts at `position`, where the batch with base `offset` begins; stops at
    /// `end_position` (a logical or physical size).
    pub fn new(
        file: Rc<SegmentFile>,
        position: u64,
        offset: u64,
        end_position: u64,
        chunk_bytes: usize,
    ) -> Self {
        Self {
            file,
            end_position,
            chunk_bytes: chunk_bytes.max(PAGE_BYTES as usize),
            window: Bytes::new(),
            window_position: position,
            cursor: 0,
            next_offset: offset,
        }
    }

    /// Position right after the last batch yielded.
    pub fn position(&self) -> u64 {
        self.window_position + self.cursor as u64
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The buffer the last batch was sliced from (batches from one window are contiguous).
    pub fn window(&self) -> &Bytes {
        &self.window
    }

    /// The next batch, or why there is none.
    pub async fn next(&mut self) -> Result<std::result::Result<WalkedBatch, StopReason>> {
        loop {
            let avail = &self.window[self.cursor..];
            let at_eof = self.position() + avail.len() as u64 >= self.end_position;
            match scan_step(avail, at_eof, self.next_offset, MAX_BATCH_BYTES_LIMIT) {
                ScanStep::Batch { header, bytes } => {
                    let position = self.position();
                    let slice = self.window.slice(self.cursor..self.cursor + bytes);
                    self.cursor += bytes;
                    self.next_offset = header.last_offset() as u64 + 1;
                    return Ok(Ok(WalkedBatch {
                        header,
                        position,
                        bytes: slice,
                    }));
                }
                ScanStep::NeedBytes(needed) => {
                    let position = self.position();
                    let remaining = self.end_position.saturating_sub(position);
                    let want = (needed.max(self.chunk_bytes) as u64).min(remaining) as usize;
                    self.window = self.file.read(position, want).await?;
                    self.window_position = position;
                    self.cursor = 0;
                    if self.window.len() < want {
                        // The file is shorter than we were told: whatever follows is missing.
                        self.end_position = position + self.window.len() as u64;
                    }
                }
                ScanStep::Stop(reason) => return Ok(Err(reason)),
            }
        }
    }
}

/// Rebuilds a segment's bookkeeping by reading it through. Returns the metadata of the valid
/// prefix and, when bytes follow it that are not a clean end, why they were rejected.
pub async fn scan_segment(
    file: Rc<SegmentFile>,
    base_offset: u64,
    index_interval_bytes: u64,
    epochs: &mut LeaderEpochMap,
) -> Result<(SegmentMeta, Option<String>)> {
    let physical = file.physical_size().await?;
    let mut walker = BatchWalker::new(file, 0, base_offset, physical, 1 << 20);
    let mut meta = SegmentMeta::empty(base_offset);
    loop {
        match walker.next().await? {
            Ok(b) => {
                meta.on_batch(&b.header, b.bytes.len() as u64, index_interval_bytes);
                epochs.assign(b.header.partition_leader_epoch, b.header.base_offset as u64);
            }
            Err(StopReason::CleanEnd) => return Ok((meta, None)),
            Err(StopReason::Invalid(why)) => return Ok((meta, Some(why))),
        }
    }
}
