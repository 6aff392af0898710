//! Max-rate discovery (OMB's `producerRate = 0`) as a plain state machine: the caller runs
//! each rate [`RateSearch::next_rate`] asks for and reports whether it held; the search
//! doubles the rate until one fails, then bisects between the last rate that held and the
//! first that failed.

/// Bisection steps after the first failure: the answer is within 1/2^3 of the bracket.
pub const REFINE_STEPS: u32 = 3;

#[derive(Debug, Clone)]
pub struct RateSearch {
    /// Highest rate that held so far.
    held: Option<u64>,
    /// Lowest rate that failed so far.
    failed: Option<u64>,
    next: Option<u64>,
    refinements_left: u32,
}

impl RateSearch {
    /// Starts at `start_msgs_per_s` (at least 1).
    pub fn new(start_msgs_per_s: u64) -> Self {
        Self {
            held: None,
            failed: None,
            next: Some(start_msgs_per_s.max(1)),
            refinements_left: REFINE_STEPS,
        }
    }

    /// The rate to try next, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<u64> {
        self.next
    }

    /// Records whether `rate` (the one [`Self::next_rate`] gave) kept its latency bound and
    /// pace.
    pub fn record(&mut self, rate: u64, held: bool) {
        if held {
            self.held = Some(self.held.map_or(rate, |h| h.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
        self.next = match (self.held, self.failed) {
            (Some(h), None) => Some(h.saturating_mul(2)),
            (low, Some(f)) => {
                let low = low.unwrap_or(0);
                let mid = low + (f - low) / 2;
                if self.refinements_left == 0 || mid <= low || mid >= f {
                    None
                } else {
                    self.refinements_left -= 1;
                    Some(mid)
                }
            }
            (None, None) => self.next,
        };
    }

    /// The highest rate that held, when the search is over.
    pub fn best(&self) -> Option<u64> {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(start: u64, capacity: u64) -> (Option<u64>, Vec<u64>) {
        let mut s = RateSearch::new(start);
        let mut tried = Vec::new();
        while let Some(r) = s.next_rate() {
            tried.push(r);
            s.record(r, r <= capacity);
            assert!(tried.len() < 64, "search does not end: {tried:?}");
        }
        (s.best(), tried)
    }

    #[test]
    fn doubles_then_bisects_to_within_an_eighth() {
        let (best, tried) = search(1000, 37_000);
        assert_eq!(&tried[..7], &[1000, 2000, 4000, 8000, 16000, 32000, 64000]);
        let best = best.unwrap();
        assert!((32_000..=37_000).contains(&best), "{best} {tried:?}");
        assert_eq!(tried.len(), 7 + REFINE_STEPS as usize);
    }

    #[test]
    fn a_failing_start_searches_below_it_and_may_find_nothing() {
        let (best, tried) = search(1000, 300);
        assert_eq!(tried[0], 1000);
        assert!(best.unwrap() <= 300, "{tried:?}");
        let (none, _) = search(1000, 0);
        assert_eq!(none, None);
    }
}
