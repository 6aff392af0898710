//! Recovery's driver, on open: every segment's metadata from its index or a scan (as
//! [`super::state::segment_source`] decides), a torn or corrupt tail of the active segment
//! cut off, the leader-epoch checkpoint read back.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use super::state::{segment_source, LogState, SegmentSource, TailPage};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochMap;
use crate::error::{Result, StorageError};
use crate::files;
use crate::index::IndexFile;
use crate::producer_state::ProducerStates;
use crate::segment::{align_down, scan_segment, BatchWalker, SegmentFile};
use crate::segment_meta::SegmentMeta;
use crate::segments::{Segment, Segments};

/// Opens every segment in `dir`: sealed ones from their index (rebuilt by a scan when it is
/// missing or damaged), the active one by a full scan that truncates a torn or corrupt tail.
pub(super) async fn recover(dir: &Path, config: &LogConfig) -> Result<LogState> {
    let mut bases = files::list_segments(dir)?;
    let epochs = match files::read_small(&dir.join(files::EPOCH_CHECKPOINT), 1 << 20).await? {
        None => LeaderEpochMap::default(),
        Some(bytes) => std::str::from_utf8(&bytes).ok().and_then(LeaderEpochMap::decode).unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), "leader-epoch-checkpoint is damaged; rebuilding it from the active segment");
            LeaderEpochMap::default()
        }),
    };
    let mut epochs = epochs;
    let checkpointed = epochs.clone();
    if bases.is_empty() {
        SegmentFile::create(dir, 0).await?;
        bases.push(0);
    }
    let mut segments = BTreeMap::new();
    let last = bases.len() - 1;
    for (i, base) in bases.into_iter().enumerate() {
        let file = Rc::new(SegmentFile::open(dir, base).await?);
        let is_active = i == last;
        let meta = load_segment(dir, &file, base, config, is_active, &mut epochs).await?;
        segments.insert(base, Segment { meta, file });
    }
    let producers = rebuild_producers(dir, &segments, config).await?;
    let Some(segments) = Segments::from_ordered(segments) else {
        return Err(StorageError::InvalidConfig(format!(
            "no segment could be opened in {}",
            dir.display()
        )));
    };
    let tail = {
        let active = segments.active();
        let size = active.meta.size_bytes;
        let aligned = align_down(size);
        let bytes = active.file.read(aligned, (size - aligned) as usize).await?;
        TailPage {
            aligned_position: aligned,
            bytes: bytes.to_vec(),
        }
    };
    // Epochs a scan found beyond the checkpoint must be written back with the next flush: a
    // clean close writes the active segment's index, and the open after it trusts that index
    // and scans nothing (a replicated partition would lose the terms of its log).
    let rebuilt = epochs != checkpointed;
    let mut state = LogState::recovered(
        segments,
        tail,
        epochs,
        rebuilt,
        config.cache_bytes,
        Instant::now(),
    );
    state.producers = producers;
    Ok(state)
}

/// The idempotent producers' state: the newest snapshot at or below the active segment's
/// base, then every batch header from its offset on (without a usable snapshot: from the
/// log start).
async fn rebuild_producers(
    dir: &Path,
    segments: &BTreeMap<u64, Segment>,
    config: &LogConfig,
) -> Result<ProducerStates> {
    let active_base = segments.keys().next_back().copied().unwrap_or(0);
    let mut from = 0;
    let mut producers = ProducerStates::new(config.producers);
    for offset in files::list_producer_snapshots(dir)?.into_iter().rev() {
        if offset > active_base {
            continue;
        }
        let path = files::producer_snapshot_path(dir, offset);
        match files::read_small(&path, 64 << 20)
            .await?
            .and_then(|b| ProducerStates::decode(&b, config.producers))
        {
            Some(s) => {
                producers = s;
                from = offset;
                break;
            }
            None => {
                tracing::warn!(snapshot = %path.display(), "damaged producer-state snapshot; using an older one or the log")
            }
        }
    }
    let scanned_sealed = segments
        .iter()
        .any(|(base, s)| *base < active_base && s.meta.next_offset > from);
    for (base, seg) in segments {
        if seg.meta.next_offset <= from {
            continue;
        }
        let mut walker = BatchWalker::new(seg.file.clone(), 0, *base, seg.meta.size_bytes, 1 << 20);
        while let Ok(b) = walker.next().await? {
            if b.header.base_offset as u64 >= from {
                producers.record_batch(&b.header, &b.bytes, b.header.max_timestamp_ms);
            }
        }
    }
    if scanned_sealed {
        // Sealed segments had to be read (no snapshot yet, as after an upgrade): the next open
        // starts from the active segment.
        let mut as_of = producers.clone();
        as_of.truncate_from(active_base);
        files::write_plain(
            &files::producer_snapshot_path(dir, active_base),
            as_of.encode(),
        )
        .await?;
    }
    Ok(producers)
}

async fn load_segment(
    dir: &Path,
    file: &Rc<SegmentFile>,
    base: u64,
    config: &LogConfig,
    is_active: bool,
    epochs: &mut LeaderEpochMap,
) -> Result<SegmentMeta> {
    let index_path = files::index_path(dir, base);
    let physical = file.physical_size().await?;
    let index = files::read_small(&index_path, 256 << 20)
        .await?
        .and_then(|bytes| IndexFile::decode(&bytes));
    if is_active {
        // The active segment will change: its index must not outlive this open.
        files::remove(&index_path).await?;
    }
    if let SegmentSource::Index(idx) = segment_source(index, physical) {
        return Ok(SegmentMeta::from_index(base, *idx));
    }
    let (meta, invalid) =
        scan_segment(file.clone(), base, config.index_interval_bytes, epochs).await?;
    if let Some(why) = &invalid {
        tracing::warn!(segment = %file.path.display(), valid_bytes = meta.size_bytes, physical_bytes = physical,
            "truncating a torn or corrupt tail: {why}");
    }
    if meta.size_bytes != physical {
        file.truncate(meta.size_bytes).await?;
        file.sync().await?;
    }
    if !is_active {
        files::write_plain(&index_path, meta.to_index().encode()).await?;
    }
    Ok(meta)
}
