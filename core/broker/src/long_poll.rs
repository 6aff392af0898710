//! A fetch's long poll (sans-IO): how many bytes it may gather, and whether to answer now or
//! sleep until a partition commits more or the deadline passes.
//!
//! A fetch answers once `min_bytes` are gathered over all its partitions, a partition fails,
//! or `max_wait_ms` passed; until then it sleeps on the partitions' commit wake-ups (no
//! polling loop). Its answer holds at most `max_bytes` (bounded by the frame size); past the
//! budget a partition is left for the next fetch, but the first partition with data always
//! returns at least one whole batch.

use std::time::Instant;

/// Bytes of the frame kept for the envelope, and for each entry's fields besides records.
const ENVELOPE_ROOM_BYTES: usize = 1024;
const ENTRY_ROOM_BYTES: usize = 64;

/// The record bytes one fetch answer may carry.
pub fn response_budget(max_bytes: u32, max_frame_bytes: usize, partitions: usize) -> usize {
    let frame_room = max_frame_bytes
        .saturating_sub(ENVELOPE_ROOM_BYTES + partitions * ENTRY_ROOM_BYTES)
        .max(1);
    (max_bytes as usize).clamp(1, frame_room)
}

/// What one pass over a fetch's partitions gathered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathered {
    budget: usize,
    bytes: usize,
    failed: bool,
}

impl Gathered {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            failed: false,
        }
    }

    /// Room for the next partition's records; `None` once the budget is spent (the
    /// partition answers with its marks only and is read by the next fetch).
    pub fn room(&self) -> Option<usize> {
        (self.bytes < self.budget).then(|| (self.budget - self.bytes).max(1))
    }

    /// A partition returned `bytes` of records, or failed.
    pub fn add(&mut self, bytes: usize, failed: bool) {
        self.bytes += bytes;
        self.failed |= failed;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What the fetch does after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Answer,
    /// Sleep until a partition commits past what it had, or this deadline.
    WaitUntil(Instant),
}

/// Answer or wait, after a pass that gathered `g`.
pub fn next(g: &Gathered, min_bytes: u32, now: Instant, deadline: Instant) -> Next {
    if g.failed || g.bytes >= min_bytes as usize || now >= deadline {
        Next::Answer
    } else {
        Next::WaitUntil(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_budget_is_max_bytes_within_the_frame_and_at_least_one_byte() {
        assert_eq!(response_budget(1000, 1 << 20, 2), 1000);
        assert_eq!(response_budget(u32::MAX, 10_000, 10), 10_000 - 1024 - 640);
        assert_eq!(response_budget(0, 1 << 20, 1), 1);
        assert_eq!(
            response_budget(100, 10, 1),
            1,
            "a tiny frame still allows one batch"
        );
    }

    #[test]
    fn partitions_past_the_budget_wait_for_the_next_fetch() {
        let mut g = Gathered::new(100);
        assert_eq!(g.room(), Some(100));
        g.add(60, false);
        assert_eq!(g.room(), Some(40));
        g.add(70, false); // a whole batch may pass the room
        assert_eq!(g.room(), None);
        assert_eq!(g.bytes(), 130);
    }

    #[test]
    fn a_fetch_waits_for_min_bytes_until_its_deadline_and_answers_a_failure_at_once() {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(500);
        let mut g = Gathered::new(1 << 20);
        g.add(10, false);
        assert_eq!(next(&g, 100, now, deadline), Next::WaitUntil(deadline));
        assert_eq!(
            next(&g, 10, now, deadline),
            Next::Answer,
            "min_bytes reached"
        );
        assert_eq!(
            next(&g, 100, deadline, deadline),
            Next::Answer,
            "deadline passed"
        );
        g.add(0, true);
        assert_eq!(
            next(&g, 100, now, deadline),
            Next::Answer,
            "a partition failed"
        );
        assert_eq!(
            next(&Gathered::new(1), 0, now, deadline),
            Next::Answer,
            "min_bytes 0 answers an empty fetch at once"
        );
    }
}
