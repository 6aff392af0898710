//! A replicated partition's membership entries, kept beside its log (sans-IO): the segment
//! log stores them as control batches, but a restart reads only the log's marks, not its
//! batches, so the memberships its group went through are listed in `<partition>/raft-members`
//! — one line per membership entry, `<index> voters=<ids> learners=<ids>`.
//!
//! The list is rewritten (atomically) only when a write brings a membership entry or cuts
//! one off (a diverged tail): never on the produce path of a partition whose replicas do not
//! change.

use quiver_raft::{Entry, Membership, Payload};

/// The file in a replicated partition's directory.
pub const MEMBERS_FILE: &str = "raft-members";
/// Most lines read back (a longer file is damaged).
pub const MAX_MEMBERSHIPS: usize = 4_096;

/// Membership entries: (index, membership), increasing.
pub type Memberships = Vec<(u64, Membership)>;

fn ids(set: &std::collections::BTreeSet<u64>) -> String {
    set.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

pub fn encode(list: &[(u64, Membership)]) -> String {
    let mut out = String::new();
    for (index, m) in list {
        out.push_str(&format!(
            "{index} voters={} learners={}\n",
            ids(&m.voters),
            ids(&m.learners)
        ));
    }
    out
}

/// The list a file holds, or why it cannot be read (the caller then falls back to the
/// replicas the metadata lists).
pub fn decode(text: &str) -> Result<Memberships, String> {
    let mut out: Memberships = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        if out.len() >= MAX_MEMBERSHIPS {
            return Err(format!("more than {MAX_MEMBERSHIPS} lines"));
        }
        let bad = |why: &str| format!("line {}: {why}", n + 1);
        let mut parts = line.split_whitespace();
        let index: u64 = parts
            .next()
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| bad("no index"))?;
        if out.last().is_some_and(|(last, _)| *last >= index) {
            return Err(bad("indexes must increase"));
        }
        let mut m = Membership::default();
        for part in parts {
            let (key, list) = part
                .split_once('=')
                .ok_or_else(|| bad("expected key=ids"))?;
            let set = match key {
                "voters" => &mut m.voters,
                "learners" => &mut m.learners,
                _ => return Err(bad("unknown key")),
            };
            for id in list.split(',').filter(|s| !s.is_empty()) {
                set.insert(id.parse().map_err(|_| bad("not a node id"))?);
            }
        }
        out.push((index, m));
    }
    Ok(out)
}

/// The list after writing `entries` from `first_index` (a diverged tail from there was cut
/// off first) on a log starting at `log_start`: of the entries at or before the start only
/// the last is kept (the membership in force there), so the list stays as short as the
/// changes the log still holds. `None` when it is unchanged (nothing to rewrite).
pub fn after_write(
    list: &[(u64, Membership)],
    first_index: u64,
    entries: &[Entry],
    log_start: u64,
) -> Option<Memberships> {
    let in_force = list.iter().rposition(|(i, _)| *i <= log_start).unwrap_or(0);
    // Every produced batch passes here: most change nothing.
    let untouched = in_force == 0
        && list.iter().all(|(i, _)| *i < first_index)
        && !entries
            .iter()
            .any(|e| matches!(e.payload, Payload::Membership(_)));
    if untouched {
        return None;
    }
    let mut next: Memberships = list[in_force.min(list.len())..]
        .iter()
        .filter(|(i, _)| *i < first_index)
        .cloned()
        .collect();
    let mut end = first_index.saturating_sub(1);
    for e in entries {
        end += e.span.max(1);
        if let Payload::Membership(m) = &e.payload {
            next.push((end, m.clone()));
        }
    }
    (next != list).then_some(next)
}

/// What a restarted group starts from, given its log's start offset (= snapshot index): the
/// membership in force at the start (the last entry at or before it, else `initial`) and the
/// entries after it.
pub fn split_at(
    list: &[(u64, Membership)],
    log_start: u64,
    initial: Membership,
) -> (Membership, Memberships) {
    let at_start = list
        .iter()
        .rev()
        .find(|(i, _)| *i <= log_start)
        .map_or(initial, |(_, m)| m.clone());
    let after = list
        .iter()
        .filter(|(i, _)| *i > log_start)
        .cloned()
        .collect();
    (at_start, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[u64], learners: &[u64]) -> Membership {
        let mut m = Membership::of_voters(voters);
        m.learners.extend(learners.iter().copied());
        m
    }

    fn entry(span: u64, payload: Payload) -> Entry {
        Entry {
            term: 1,
            span,
            payload,
        }
    }

    #[test]
    fn the_list_round_trips_and_damage_is_an_error() {
        let list = vec![(5, m(&[1, 2, 3], &[4])), (9, m(&[1, 2, 3, 4], &[]))];
        assert_eq!(decode(&encode(&list)), Ok(list));
        assert!(decode("7 voters=1,x").is_err());
        assert!(
            decode("9 voters=1\n3 voters=2").is_err(),
            "indexes increase"
        );
        assert!(decode("voters=1").is_err());
        assert_eq!(decode(""), Ok(Vec::new()));
    }

    #[test]
    fn writes_add_membership_entries_at_their_index_and_truncation_drops_them() {
        let list = after_write(
            &[],
            10,
            &[
                entry(3, Payload::Data(vec![])),
                entry(1, Payload::Membership(m(&[1, 2], &[3]))),
            ],
            0,
        )
        .expect("a membership entry changes the list");
        assert_eq!(list, vec![(13, m(&[1, 2], &[3]))]);
        assert_eq!(
            after_write(&list, 14, &[entry(5, Payload::Data(vec![]))], 0),
            None,
            "records alone rewrite nothing"
        );
        assert_eq!(
            after_write(&list, 12, &[entry(5, Payload::Data(vec![]))], 0),
            Some(Vec::new()),
            "a diverged tail cut from before the entry drops it"
        );
    }

    #[test]
    fn entries_before_the_log_start_are_dropped_but_the_one_in_force_there() {
        let list = vec![
            (5, m(&[1, 2], &[3])),
            (9, m(&[1, 2, 3], &[])),
            (20, m(&[2, 3], &[])),
        ];
        let next = after_write(
            &list,
            30,
            &[entry(1, Payload::Membership(m(&[2, 3, 4], &[])))],
            12,
        )
        .expect("changed");
        assert_eq!(
            next.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![9, 20, 30]
        );
    }

    #[test]
    fn a_restart_takes_the_membership_in_force_at_the_log_start() {
        let list = vec![(5, m(&[1, 2], &[3])), (9, m(&[1, 2, 3], &[]))];
        let (start, after) = split_at(&list, 7, m(&[1, 2], &[]));
        assert_eq!(start, m(&[1, 2], &[3]));
        assert_eq!(after, vec![(9, m(&[1, 2, 3], &[]))]);
        let (start, after) = split_at(&list, 2, m(&[7], &[]));
        assert_eq!((start, after.len()), (m(&[7], &[]), 2));
    }
}
