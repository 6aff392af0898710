//! When a produce is answered, and with what (sans-IO).
//!
//! `acks` decides what each partition waits for: `none` and `leader` for the batches to be
//! in the leader's memory (offsets assigned, queued for the next group commit), `all` for
//! them to be durable per the topic's flush policy. A produce over many partitions answers
//! once every partition is settled or `timeout_ms` passed; a partition not settled by then
//! answers `Timeout` (its batches may still be written). `acks=none` reports no offsets.

use quiver_broker_api::{Acks, ApiError, ErrorCode, ProducePartOutcome};

/// What an append waits for before its partition is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPoint {
    /// In the leader's memory: offsets assigned, queued for the next write.
    Enqueued,
    /// Durable per the topic's flush policy.
    Durable,
}

impl AckPoint {
    pub fn of(acks: Acks) -> Self {
        match acks {
            Acks::None | Acks::Leader => Self::Enqueued,
            Acks::All => Self::Durable,
        }
    }
}

/// The outcomes of one produce's partitions as they settle.
#[derive(Debug, Clone)]
pub struct ProduceProgress {
    acks: Acks,
    entries: Vec<Option<ProducePartOutcome>>,
}

impl ProduceProgress {
    pub fn new(acks: Acks, partitions: usize) -> Self {
        Self {
            acks,
            entries: vec![None; partitions],
        }
    }

    /// Partition `i` failed.
    pub fn fail(&mut self, i: usize, error: ApiError, log_start_offset: i64) {
        self.set(
            i,
            ProducePartOutcome {
                log_start_offset,
                ..ProducePartOutcome::failed(error)
            },
        );
    }

    /// Partition `i`'s batches landed at `base..=last`.
    pub fn appended(&mut self, i: usize, base: u64, last: u64, log_start_offset: u64) {
        self.set(
            i,
            ProducePartOutcome {
                base_offset: base as i64,
                last_offset: last as i64,
                log_start_offset: log_start_offset as i64,
                outcome: Ok(()),
            },
        );
    }

    fn set(&mut self, i: usize, outcome: ProducePartOutcome) {
        if let Some(slot) = self.entries.get_mut(i) {
            debug_assert!(slot.is_none(), "partition {i} settled twice");
            *slot = Some(outcome);
        }
    }

    /// True once every partition settled.
    pub fn is_complete(&self) -> bool {
        self.entries.iter().all(Option::is_some)
    }

    /// The answer: each partition's outcome, `Timeout` for one not settled within
    /// `timeout_ms`; with `acks=none`, successes without offsets.
    pub fn finish(self, timeout_ms: u32) -> Vec<ProducePartOutcome> {
        let acks = self.acks;
        self.entries
            .into_iter()
            .map(|e| match e {
                None => ProducePartOutcome::failed(ApiError::new(
                    ErrorCode::Timeout,
                    format!("not acknowledged within timeout_ms = {timeout_ms}; the batch may still be written: retry with idempotence or check with a fetch"),
                )),
                Some(o) if acks == Acks::None && o.outcome.is_ok() => ProducePartOutcome {
                    base_offset: -1,
                    last_offset: -1,
                    log_start_offset: -1,
                    outcome: Ok(()),
                },
                Some(o) => o,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_all_waits_for_durability_the_others_for_memory() {
        assert_eq!(AckPoint::of(Acks::All), AckPoint::Durable);
        assert_eq!(AckPoint::of(Acks::Leader), AckPoint::Enqueued);
        assert_eq!(AckPoint::of(Acks::None), AckPoint::Enqueued);
    }

    #[test]
    fn a_produce_answers_each_partition_and_times_out_the_unsettled() {
        let mut p = ProduceProgress::new(Acks::All, 3);
        p.appended(0, 10, 14, 0);
        assert!(!p.is_complete());
        p.fail(2, ApiError::new(ErrorCode::DiskFull, "full"), 0);
        assert!(!p.is_complete());
        let out = p.finish(250);
        assert_eq!((out[0].base_offset, out[0].last_offset), (10, 14));
        assert_eq!(
            out[1].outcome.as_ref().unwrap_err().code,
            ErrorCode::Timeout
        );
        assert!(out[1].outcome.as_ref().unwrap_err().message.contains("250"));
        assert_eq!(
            out[2].outcome.as_ref().unwrap_err().code,
            ErrorCode::DiskFull
        );
    }

    #[test]
    fn acks_none_reports_no_offsets_but_does_report_failures() {
        let mut p = ProduceProgress::new(Acks::None, 2);
        p.appended(0, 10, 14, 3);
        p.fail(1, ApiError::new(ErrorCode::InvalidBatch, "bad"), -1);
        assert!(p.is_complete());
        let out = p.finish(1);
        assert_eq!((out[0].base_offset, out[0].log_start_offset), (-1, -1));
        assert!(out[0].outcome.is_ok());
        assert_eq!(
            out[1].outcome.as_ref().unwrap_err().code,
            ErrorCode::InvalidBatch
        );
    }
}
