//! What recovery re-applies from the commit log (sans-IO): per partition incarnation, the
//! chain of batches its log must end with.
//!
//! Entries are taken in log order. An entry's `truncate_from` drops the chain's batches at or
//! above that offset; each batch drops the chain's batches at or above its own base offset
//! (a later write of the same offsets replaced them) and joins the chain. The partition's
//! recovered segments then keep what they already hold; the chain supplies what follows.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;

use super::format::{Entry, NO_TRUNCATION};
use crate::config::MAX_BATCH_BYTES_LIMIT;
use quiver_batch::{header::LOG_OVERHEAD_BYTES, validate_batch, BatchHeader, BatchLimits};

/// The batches one partition incarnation must end with.
#[derive(Debug)]
pub struct PartitionReplay {
    /// Partition directory, relative to the data directory.
    pub key: Rc<str>,
    pub log_id: u64,
    /// In offset order, contiguous as written.
    pub batches: Chain,
}

/// Batches in offset order, each with its parsed header.
type Chain = Vec<(BatchHeader, Bytes)>;

/// Folds `entries` (in log order) into one chain per partition incarnation. Batches that fail
/// validation end their entry (they were checked when appended: only damage gets here).
pub fn plan(entries: impl IntoIterator<Item = Entry>) -> Vec<PartitionReplay> {
    let mut chains: BTreeMap<(Rc<str>, u64), Chain> = BTreeMap::new();
    for entry in entries {
        let chain = chains.entry((entry.key, entry.log_id)).or_default();
        if entry.truncate_from != NO_TRUNCATION {
            chain.retain(|(h, _)| (h.base_offset as u64) < entry.truncate_from);
        }
        for bytes in entry.batches {
            for batch in split_batches(bytes) {
                let base = batch.0.base_offset as u64;
                chain.retain(|(h, _)| (h.base_offset as u64) < base);
                chain.push(batch);
            }
        }
    }
    chains
        .into_iter()
        .map(|((key, log_id), batches)| PartitionReplay {
            key,
            log_id,
            batches,
        })
        .collect()
}

/// Splits back-to-back batches; stops at the first that does not validate.
fn split_batches(bytes: Bytes) -> Vec<(BatchHeader, Bytes)> {
    let limits = BatchLimits {
        max_batch_bytes: MAX_BATCH_BYTES_LIMIT,
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + LOG_OVERHEAD_BYTES <= bytes.len() {
        let length =
            i32::from_be_bytes([bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]]);
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        let end = at + LOG_OVERHEAD_BYTES + length;
        if end > bytes.len() {
            break;
        }
        let batch = bytes.slice(at..end);
        match validate_batch(&batch, limits) {
            Ok(header) => out.push((header, batch)),
            Err(e) => {
                tracing::warn!(
                    "commit log: a batch fails validation ({e}); ignoring the rest of its entry"
                );
                break;
            }
        }
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_batch::{header, BatchBuilder, NewRecord};

    fn batch(base: u64, records: usize, tag: u8) -> Bytes {
        let mut b = BatchBuilder::new();
        for i in 0..records {
            b.push(&NewRecord::value(vec![tag, i as u8], 1));
        }
        let mut bytes = b.build();
        header::stamp_base_offset(&mut bytes, base as i64);
        bytes.freeze()
    }

    fn entry(key: &str, truncate_from: u64, batches: Vec<Bytes>) -> Entry {
        Entry {
            log_id: 1,
            truncate_from,
            key: key.into(),
            batches: vec![batches.concat().into()],
        }
    }

    fn bases(r: &PartitionReplay) -> Vec<(i64, u8)> {
        r.batches
            .iter()
            .map(|(h, b)| (h.base_offset, b[b.len() - 3])) // value [tag, i], then 0 headers
            .collect()
    }

    #[test]
    fn later_writes_and_truncations_replace_what_they_cover() {
        let plans = plan([
            entry("a", NO_TRUNCATION, vec![batch(0, 2, 1), batch(2, 2, 1)]),
            entry("b", NO_TRUNCATION, vec![batch(0, 1, 9)]),
            entry("a", NO_TRUNCATION, vec![batch(4, 1, 1)]),
            // The log was truncated to 2, then offsets 2.. were written again.
            entry("a", 2, vec![]),
            entry("a", NO_TRUNCATION, vec![batch(2, 3, 2)]),
        ]);
        assert_eq!(plans.len(), 2);
        assert_eq!(&*plans[0].key, "a");
        assert_eq!(bases(&plans[0]), [(0, 1), (2, 2)]);
        assert_eq!(bases(&plans[1]), [(0, 9)]);
    }

    #[test]
    fn a_damaged_batch_ends_its_entry() {
        let good = batch(0, 1, 1);
        let mut bad = batch(1, 1, 1).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xFF; // breaks the batch CRC
        let plans = plan([entry(
            "a",
            NO_TRUNCATION,
            vec![good, bad.into(), batch(2, 1, 1)],
        )]);
        assert_eq!(bases(&plans[0]), [(0, 1)]);
    }
}
