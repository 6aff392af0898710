//! The checkers: pure functions from what the workloads recorded (sent, acknowledged,
//! committed) and what was read back at the end to the anomalies found. Jepsen's categories
//! for Kafka and Redpanda: lost, duplicated and reordered writes, wrong offsets, values never
//! sent, aborted reads, torn transactions, offsets moving backwards, and hangs.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// `lost`, `duplicate`, `wrong-offset`, `reordered`, `unexpected`, `aborted-read`,
    /// `torn-transaction`, `lost-commit`, `offset-backwards`, `unprocessed`, `unavailable`;
    /// for the exactly-once pipeline `eos-duplicate`, `eos-unprocessed`,
    /// `eos-offset-backwards`.
    pub kind: &'static str,
    /// The value, transaction or partition it concerns (the history is searched for it).
    pub subject: String,
    pub detail: String,
}

fn anomaly(kind: &'static str, subject: impl Into<String>, detail: String) -> Anomaly {
    Anomaly {
        kind,
        subject: subject.into(),
        detail,
    }
}

/// A value an append producer sent: which producer, its sequence, where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub producer: usize,
    pub seq: u64,
    pub partition: i32,
}

/// One record read back: partition, offset, value.
pub type Read = (i32, i64, String);

/// Append: every acknowledged value is present exactly once, at the partition and offset it
/// was acknowledged with; nothing present was never sent; each producer's values keep their
/// send order in each partition (idempotent producers never reorder, even across retries).
pub fn check_append(
    sent: &HashMap<String, Sent>,
    acked: &HashMap<String, (i32, i64)>,
    read: &[Read],
) -> Vec<Anomaly> {
    let mut found: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    let mut out = Vec::new();
    for (p, o, v) in read {
        found.entry(v.as_str()).or_default().push((*p, *o));
    }
    let mut by_order: Vec<&Read> = read.iter().collect();
    by_order.sort_by_key(|(p, o, _)| (*p, *o));
    // (producer, partition) -> last seq seen in offset order.
    let mut last_seq: HashMap<(usize, i32), (u64, &str)> = HashMap::new();
    for (p, o, v) in by_order {
        let Some(s) = sent.get(v) else {
            out.push(anomaly(
                "unexpected",
                v,
                format!("{v} at {p}@{o} was never sent"),
            ));
            continue;
        };
        if let Some((prev, prev_v)) = last_seq.insert((s.producer, *p), (s.seq, v)) {
            if prev > s.seq {
                out.push(anomaly(
                    "reordered",
                    v,
                    format!(
                        "{v} (seq {}) at {p}@{o} comes after {prev_v} (seq {prev})",
                        s.seq
                    ),
                ));
            }
        }
    }
    for (v, places) in &found {
        if places.len() > 1 {
            out.push(anomaly(
                "duplicate",
                *v,
                format!("{v} is stored {} times: {places:?}", places.len()),
            ));
        }
    }
    let at: HashMap<(i32, i64), &str> = read
        .iter()
        .map(|(p, o, v)| ((*p, *o), v.as_str()))
        .collect();
    let holds = |p: i32, o: i64| match at.get(&(p, o)) {
        Some(v) => format!("{p}@{o} holds {v}"),
        None => format!("nothing is read at {p}@{o}"),
    };
    let mut acked_sorted: Vec<_> = acked.iter().collect();
    acked_sorted.sort();
    for (v, (p, o)) in acked_sorted {
        match found.get(v.as_str()) {
            None => out.push(anomaly(
                "lost",
                v,
                format!(
                    "{v} was acknowledged at {p}@{o} and is not in the log ({})",
                    holds(*p, *o)
                ),
            )),
            Some(places) if !places.contains(&(*p, *o)) => out.push(anomaly(
                "wrong-offset",
                v,
                format!(
                    "{v} was acknowledged at {p}@{o} but is stored at {places:?} ({})",
                    holds(*p, *o)
                ),
            )),
            Some(_) => {}
        }
    }
    out
}

/// How a transaction ended, as its producer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed,
    Aborted,
    /// The commit or abort failed or was never reached: either is allowed, not a mixture.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub id: u64,
    pub values: Vec<String>,
    pub outcome: TxnOutcome,
}

/// Transactions, read with read_committed: every committed transaction's values exactly
/// once, no aborted one's, an unknown one's all or none, nothing never sent.
pub fn check_transactions(txns: &[Txn], read: &[Read]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let owner: HashMap<&str, &Txn> = txns
        .iter()
        .flat_map(|t| t.values.iter().map(move |v| (v.as_str(), t)))
        .collect();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for (p, o, v) in read {
        *seen.entry(v.as_str()).or_default() += 1;
        match owner.get(v.as_str()) {
            None => out.push(anomaly(
                "unexpected",
                v,
                format!("{v} at {p}@{o} was never sent"),
            )),
            Some(t) if t.outcome == TxnOutcome::Aborted => out.push(anomaly(
                "aborted-read",
                format!("txn-{}", t.id),
                format!("{v} at {p}@{o} belongs to aborted transaction txn-{}", t.id),
            )),
            Some(_) => {}
        }
    }
    for (v, n) in &seen {
        if *n > 1 && owner.contains_key(v) {
            out.push(anomaly("duplicate", *v, format!("{v} read {n} times")));
        }
    }
    for t in txns {
        let visible = t
            .values
            .iter()
            .filter(|v| seen.contains_key(v.as_str()))
            .count();
        let subject = format!("txn-{}", t.id);
        match &t.outcome {
            TxnOutcome::Committed if visible < t.values.len() => out.push(anomaly(
                "lost-commit",
                subject,
                format!(
                    "committed txn-{} shows {visible} of its {} records",
                    t.id,
                    t.values.len()
                ),
            )),
            TxnOutcome::Unknown(why) if visible != 0 && visible < t.values.len() => {
                out.push(anomaly(
                    "torn-transaction",
                    subject,
                    format!(
                        "txn-{} (ended: {why}) shows {visible} of its {} records",
                        t.id,
                        t.values.len()
                    ),
                ))
            }
            _ => {}
        }
    }
    out
}

/// Consumer group: every acknowledged value processed at least once; the committed offsets,
/// sampled over the run, never move backwards on any partition.
pub fn check_group(
    acked: &HashMap<String, (i32, i64)>,
    processed: &HashSet<String>,
    samples: &[(u64, BTreeMap<i32, i64>)],
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut missing: Vec<&String> = acked.keys().filter(|v| !processed.contains(*v)).collect();
    missing.sort();
    for v in missing {
        out.push(anomaly(
            "unprocessed",
            v,
            format!("{v} was acknowledged and the group never processed it"),
        ));
    }
    let mut high: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    for (at_ms, sample) in samples {
        for (p, o) in sample {
            if let Some((prev, prev_at)) = high.get(p) {
                if o < prev {
                    out.push(anomaly(
                        "offset-backwards",
                        format!("partition-{p}"),
                        format!(
                            "partition {p}: committed {prev} at {prev_at} ms, then {o} at {at_ms} ms"
                        ),
                    ));
                }
            }
            high.insert(*p, (*o, *at_ms));
        }
    }
    out
}

/// Exactly-once pipeline: read_committed, its output holds every acknowledged input value
/// exactly once (the pipeline copies values), and its group's committed offsets never move
/// backwards.
pub fn check_exactly_once(
    acked: &HashMap<String, (i32, i64)>,
    output: &[Read],
    samples: &[(u64, BTreeMap<i32, i64>)],
) -> Vec<Anomaly> {
    let mut seen: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (p, o, v) in output {
        seen.entry(v.as_str()).or_default().push((*p, *o));
    }
    let mut out: Vec<Anomaly> = seen
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(v, at)| {
            let places: Vec<String> = at.iter().map(|(p, o)| format!("{p}@{o}")).collect();
            anomaly(
                "eos-duplicate",
                *v,
                format!(
                    "{v} is in the committed output {} times: {}",
                    at.len(),
                    places.join(", ")
                ),
            )
        })
        .collect();
    let processed: HashSet<String> = seen.keys().map(|v| v.to_string()).collect();
    out.extend(
        check_group(acked, &processed, samples)
            .into_iter()
            .map(|a| {
                match a.kind {
                    "unprocessed" => Anomaly {
                        kind: "eos-unprocessed",
                        ..a
                    },
                    // The pipeline's sampler writes its partitions as `eos-partition-<p>`.
                    _ => Anomaly {
                        kind: "eos-offset-backwards",
                        subject: format!("eos-{}", a.subject),
                        ..a
                    },
                }
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(entries: &[(&str, usize, u64, i32)]) -> HashMap<String, Sent> {
        entries
            .iter()
            .map(|(v, producer, seq, partition)| {
                (
                    v.to_string(),
                    Sent {
                        producer: *producer,
                        seq: *seq,
                        partition: *partition,
                    },
                )
            })
            .collect()
    }

    fn kinds(a: &[Anomaly]) -> Vec<&'static str> {
        let mut k: Vec<_> = a.iter().map(|a| a.kind).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn append_finds_lost_duplicated_moved_reordered_and_invented_values() {
        let s = sent(&[
            ("a", 0, 0, 0),
            ("b", 0, 1, 0),
            ("c", 0, 2, 0),
            ("d", 0, 3, 0),
        ]);
        let acked: HashMap<String, (i32, i64)> = [
            ("a".to_string(), (0, 0)),
            ("b".to_string(), (0, 1)),
            ("c".to_string(), (0, 2)),
        ]
        .into();
        // Clean: d was not acknowledged and may be absent.
        let ok = vec![(0, 0, "a".into()), (0, 1, "b".into()), (0, 2, "c".into())];
        assert!(check_append(&s, &acked, &ok).is_empty());
        // c lost, b duplicated.
        let bad = vec![(0, 0, "a".into()), (0, 1, "b".into()), (0, 2, "b".into())];
        assert_eq!(
            kinds(&check_append(&s, &acked, &bad)),
            ["duplicate", "lost"]
        );
        // b and a swapped: both at the wrong offset, and out of send order.
        let swapped = vec![(0, 0, "b".into()), (0, 1, "a".into()), (0, 2, "c".into())];
        assert_eq!(
            kinds(&check_append(&s, &acked, &swapped)),
            ["reordered", "wrong-offset", "wrong-offset"]
        );
        // A value nobody sent.
        let invented = vec![
            (0, 0, "a".into()),
            (0, 1, "b".into()),
            (0, 2, "c".into()),
            (0, 3, "zz".into()),
        ];
        assert_eq!(kinds(&check_append(&s, &acked, &invented)), ["unexpected"]);
    }

    #[test]
    fn transactions_find_aborted_reads_torn_and_lost_commits() {
        let t = |id, vals: &[&str], outcome| Txn {
            id,
            values: vals.iter().map(|v| v.to_string()).collect(),
            outcome,
        };
        let txns = vec![
            t(1, &["t1-0", "t1-1"], TxnOutcome::Committed),
            t(2, &["t2-0", "t2-1"], TxnOutcome::Aborted),
            t(3, &["t3-0", "t3-1"], TxnOutcome::Unknown("timeout".into())),
        ];
        let r = |v: &str| (0, 0, v.to_string());
        assert!(check_transactions(&txns, &[r("t1-0"), r("t1-1")]).is_empty());
        assert!(
            check_transactions(&txns, &[r("t1-0"), r("t1-1"), r("t3-0"), r("t3-1")]).is_empty()
        );
        assert_eq!(
            kinds(&check_transactions(
                &txns,
                &[r("t1-0"), r("t2-0"), r("t3-1")]
            )),
            ["aborted-read", "lost-commit", "torn-transaction"]
        );
        assert_eq!(
            kinds(&check_transactions(
                &txns,
                &[r("t1-0"), r("t1-1"), r("t1-1")]
            )),
            ["duplicate"]
        );
    }

    #[test]
    fn group_finds_unprocessed_values_and_offsets_moving_back() {
        let acked: HashMap<String, (i32, i64)> =
            [("a".to_string(), (0, 0)), ("b".to_string(), (1, 0))].into();
        let processed: HashSet<String> = ["a".to_string()].into();
        let samples = vec![
            (10, BTreeMap::from([(0, 5), (1, 3)])),
            (20, BTreeMap::from([(0, 7), (1, 3)])),
            (30, BTreeMap::from([(0, 6)])),
        ];
        assert_eq!(
            kinds(&check_group(&acked, &processed, &samples)),
            ["offset-backwards", "unprocessed"]
        );
        let all: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(check_group(&acked, &all, &samples[..2]).is_empty());
    }

    #[test]
    fn exactly_once_finds_duplicates_unprocessed_values_and_offsets_moving_back() {
        let acked: HashMap<String, (i32, i64)> = [
            ("a".to_string(), (0, 0)),
            ("b".to_string(), (1, 0)),
            ("c".to_string(), (1, 1)),
        ]
        .into();
        let out = |v: &str, o: i64| (0, o, v.to_string());
        let samples = vec![
            (10, BTreeMap::from([(0, 1)])),
            (20, BTreeMap::from([(0, 0)])),
        ];
        assert_eq!(
            kinds(&check_exactly_once(
                &acked,
                &[out("a", 0), out("b", 1), out("b", 2)],
                &samples
            )),
            ["eos-duplicate", "eos-offset-backwards", "eos-unprocessed"]
        );
        assert!(check_exactly_once(
            &acked,
            &[out("a", 0), out("b", 1), out("c", 2)],
            &samples[..1]
        )
        .is_empty());
    }
}
