//! A partition log's segments: the sealed ones by base offset and the active one, which the
//! type always holds (a log is written through its active segment and never has none).

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::segment::SegmentFile;
use crate::segment_meta::SegmentMeta;

/// A segment: its metadata and its file handle (`F`: the open file; tests of the log's
/// decisions use `()`, no file at all).
pub(crate) struct Segment<F = Rc<SegmentFile>> {
    pub meta: SegmentMeta,
    pub file: F,
}

pub(crate) struct Segments<F = Rc<SegmentFile>> {
    /// Every segment before the active one, by base offset.
    sealed: BTreeMap<u64, Segment<F>>,
    active: Segment<F>,
}

impl<F> Segments<F> {
    /// The segments of `all` (by base offset); the last becomes the active one. `None` when
    /// `all` is empty.
    pub fn from_ordered(mut all: BTreeMap<u64, Segment<F>>) -> Option<Self> {
        let (_, active) = all.pop_last()?;
        Some(Self {
            sealed: all,
            active,
        })
    }

    pub fn active(&self) -> &Segment<F> {
        &self.active
    }

    pub fn active_mut(&mut self) -> &mut Segment<F> {
        &mut self.active
    }

    /// Seals the active segment and makes `next` (which starts where it ends) active.
    pub fn roll(&mut self, next: Segment<F>) {
        let sealed = std::mem::replace(&mut self.active, next);
        self.sealed.insert(sealed.meta.base_offset, sealed);
    }

    pub fn len(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Base offset of the oldest segment (the log start offset).
    pub fn first_base(&self) -> u64 {
        self.sealed
            .keys()
            .next()
            .copied()
            .unwrap_or(self.active.meta.base_offset)
    }

    /// Every segment, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Segment<F>> {
        self.sealed.values().chain(std::iter::once(&self.active))
    }

    /// The sealed segments, oldest first.
    pub fn sealed(&self) -> impl Iterator<Item = &Segment<F>> {
        self.sealed.values()
    }

    /// Removes a sealed segment (retention); the active one cannot be removed.
    pub fn remove_sealed(&mut self, base: u64) -> Option<Segment<F>> {
        self.sealed.remove(&base)
    }

    /// Replaces the sealed segment at `base` by `with` (its compacted copy) if it is still
    /// there with `size_bytes`; returns the old one, or gives `with` back.
    pub fn replace_sealed(
        &mut self,
        base: u64,
        size_bytes: u64,
        with: Segment<F>,
    ) -> Result<Segment<F>, Segment<F>> {
        match self.sealed.get_mut(&base) {
            Some(s) if s.meta.size_bytes == size_bytes => Ok(std::mem::replace(s, with)),
            _ => Err(with),
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.iter().map(|s| s.meta.size_bytes).sum()
    }

    /// The segment holding `offset`, or the next one for an offset in a gap (the active one
    /// for an offset at or past its base).
    pub fn holding(&self, offset: u64) -> &Segment<F> {
        if self.active.meta.base_offset <= offset {
            return &self.active;
        }
        match self.sealed.range(..=offset).next_back() {
            Some((_, seg)) if offset < seg.meta.next_offset => seg,
            Some((base, _)) => self
                .sealed
                .range(base + 1..)
                .next()
                .map_or(&self.active, |(_, s)| s),
            None => self.sealed.values().next().unwrap_or(&self.active),
        }
    }

    /// For a truncation to `offset`: the segment holding it (the last one starting at or
    /// before it, or the oldest) becomes the active one; the segments after it are removed
    /// and returned, oldest first, for their files to be deleted.
    pub fn cut_after_segment_of(&mut self, offset: u64) -> Vec<Segment<F>> {
        if self.active.meta.base_offset <= offset {
            return Vec::new();
        }
        let keep = self
            .sealed
            .range(..=offset)
            .next_back()
            .map(|(b, _)| *b)
            .or_else(|| self.sealed.keys().next().copied());
        let Some(keep) = keep else {
            return Vec::new(); // the active segment is the only one
        };
        let Some(new_active) = self.sealed.remove(&keep) else {
            return Vec::new(); // not reached: `keep` is a key of `sealed`
        };
        let later = self.sealed.split_off(&keep); // every sealed segment after `keep`
        let old_active = std::mem::replace(&mut self.active, new_active);
        later
            .into_values()
            .chain(std::iter::once(old_active))
            .collect()
    }
}
