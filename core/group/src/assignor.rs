//! The target assignment, computed by the coordinator (server side, as KIP-848 does).
//!
//! - `range`: per topic, its partitions in contiguous ranges over the members subscribed to
//!   it, sorted by instance id (static members) or member id; the first `n % m` get one more.
//! - `uniform`: every subscribed partition spread so that member counts differ by at most one
//!   (no 3-and-1), keeping each partition with its current owner where that stays even, so
//!   a change moves as few partitions as it can (sticky).
//!
//! Both are pure functions of the members, their subscriptions and current assignments, and
//! the topics' partition counts: the same inputs give the same target on every replay.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Assignment, AssignorKind, TopicCounts, TopicPartition};

/// What an assignor knows of one member.
#[derive(Debug, Clone)]
pub struct MemberSpec<'a> {
    pub member_id: &'a str,
    /// The instance id of a static member: it sorts by it, so a restart keeps its place.
    pub instance_id: Option<&'a str>,
    pub subscribed: &'a BTreeSet<String>,
    /// What the target gave it last time (the sticky assignor keeps what it can).
    pub current: &'a Assignment,
}

impl MemberSpec<'_> {
    fn sort_key(&self) -> (&str, &str) {
        (self.instance_id.unwrap_or(self.member_id), self.member_id)
    }
}

/// The target assignment: member id → partitions. Every member gets an entry.
pub fn assign(
    kind: AssignorKind,
    members: &[MemberSpec<'_>],
    topics: &TopicCounts,
) -> BTreeMap<String, Assignment> {
    match kind {
        AssignorKind::Range => range(members, topics),
        AssignorKind::Uniform => uniform(members, topics),
    }
}

/// An empty assignment for every member (every member gets an entry).
fn empty_targets<'a, 'b: 'a>(
    members: impl IntoIterator<Item = &'a MemberSpec<'b>>,
) -> BTreeMap<String, Assignment> {
    members
        .into_iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect()
}

fn range(members: &[MemberSpec<'_>], topics: &TopicCounts) -> BTreeMap<String, Assignment> {
    let mut out = empty_targets(members);
    for (topic, &count) in topics {
        let mut subscribers: Vec<&MemberSpec<'_>> = members
            .iter()
            .filter(|m| m.subscribed.contains(topic))
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        subscribers.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        let m = subscribers.len() as i32;
        let (base, extra) = (count / m, count % m);
        let mut next = 0;
        for (i, member) in subscribers.iter().enumerate() {
            let take = base + i32::from((i as i32) < extra);
            let target = out.entry(member.member_id.to_string()).or_default();
            for p in next..next + take {
                target.insert(TopicPartition::new(topic.clone(), p));
            }
            next += take;
        }
    }
    out
}

fn uniform(members: &[MemberSpec<'_>], topics: &TopicCounts) -> BTreeMap<String, Assignment> {
    let mut sorted: Vec<&MemberSpec<'_>> = members.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let homogeneous = sorted
        .windows(2)
        .all(|w| w[0].subscribed == w[1].subscribed);
    if homogeneous {
        uniform_homogeneous(&sorted, topics)
    } else {
        uniform_greedy(&sorted, topics)
    }
}

/// Every partition of the topics `subscribed` names that exist.
fn partitions_of(subscribed: &BTreeSet<String>, topics: &TopicCounts) -> Vec<TopicPartition> {
    subscribed
        .iter()
        .filter_map(|t| topics.get(t).map(|&n| (t, n)))
        .flat_map(|(t, n)| (0..n.max(0)).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect()
}

/// Same subscriptions everywhere: exact quotas (`total / m`, the first `total % m` members
/// by current ownership one more); each member keeps its current partitions up to its quota,
/// the rest fill the members below theirs.
fn uniform_homogeneous(
    members: &[&MemberSpec<'_>],
    topics: &TopicCounts,
) -> BTreeMap<String, Assignment> {
    let mut out = empty_targets(members.iter().copied());
    let Some(first) = members.first() else {
        return out;
    };
    let all = partitions_of(first.subscribed, topics);
    let valid: BTreeSet<&TopicPartition> = all.iter().collect();
    let m = members.len();
    let (base, extra) = (all.len() / m, all.len() % m);
    // Members that already hold more get the larger quotas: fewer moves.
    let mut order: Vec<(usize, &MemberSpec<'_>)> = members
        .iter()
        .map(|m| (m.current.iter().filter(|p| valid.contains(p)).count(), *m))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.sort_key().cmp(&b.1.sort_key())));
    let quota: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, (_, m))| (m.member_id, base + usize::from(i < extra)))
        .collect();
    let mut taken: BTreeSet<&TopicPartition> = BTreeSet::new();
    for (_, member) in &order {
        let q = quota[member.member_id];
        let target = out.entry(member.member_id.to_string()).or_default();
        for p in member.current.iter() {
            if target.len() >= q {
                break;
            }
            if valid.contains(p) && taken.insert(p) {
                target.insert(p.clone());
            }
        }
    }
    let mut free = all.iter().filter(|p| !taken.contains(p));
    for (_, member) in &order {
        let q = quota[member.member_id];
        let target = out.entry(member.member_id.to_string()).or_default();
        while target.len() < q {
            match free.next() {
                Some(p) => {
                    target.insert(p.clone());
                }
                None => break,
            }
        }
    }
    out
}

/// Different subscriptions: each partition (those with the fewest eligible members first)
/// goes to its current owner unless that owner already holds more than the least loaded
/// eligible member, else to the least loaded eligible member.
fn uniform_greedy(
    members: &[&MemberSpec<'_>],
    topics: &TopicCounts,
) -> BTreeMap<String, Assignment> {
    let mut out = empty_targets(members.iter().copied());
    let mut owner: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
    for m in members {
        for p in m.current.iter() {
            owner.entry(p).or_insert(m.member_id);
        }
    }
    let union: BTreeSet<String> = members
        .iter()
        .flat_map(|m| m.subscribed.iter().cloned())
        .collect();
    let mut partitions: Vec<(Vec<&str>, TopicPartition)> = partitions_of(&union, topics)
        .into_iter()
        .map(|p| {
            let eligible: Vec<&str> = members
                .iter()
                .filter(|m| m.subscribed.contains(&p.topic))
                .map(|m| m.member_id)
                .collect();
            (eligible, p)
        })
        .collect();
    partitions.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.1.cmp(&b.1)));
    for (eligible, p) in partitions {
        let load =
            |id: &str, out: &BTreeMap<String, Assignment>| out.get(id).map_or(0, |a| a.len());
        let Some(least) = eligible
            .iter()
            .copied()
            .min_by_key(|id| (load(id, &out), *id))
        else {
            continue;
        };
        let least_load = load(least, &out);
        let chosen = match owner.get(&p) {
            Some(&o) if eligible.contains(&o) && load(o, &out) <= least_load => o,
            _ => least,
        };
        out.entry(chosen.to_string()).or_default().insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[(&str, i32)]) -> TopicCounts {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn subs(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn counts(out: &BTreeMap<String, Assignment>) -> Vec<usize> {
        out.values().map(|a| a.len()).collect()
    }

    fn disjoint_and_complete(out: &BTreeMap<String, Assignment>, total: usize) {
        let mut seen = BTreeSet::new();
        for a in out.values() {
            for p in a {
                assert!(seen.insert(p.clone()), "{p:?} assigned twice");
            }
        }
        assert_eq!(seen.len(), total);
    }

    #[test]
    fn range_gives_contiguous_ranges_extra_to_the_first() {
        let s = subs(&["t"]);
        let none = Assignment::new();
        let members = [
            MemberSpec {
                member_id: "b",
                instance_id: None,
                subscribed: &s,
                current: &none,
            },
            MemberSpec {
                member_id: "a",
                instance_id: None,
                subscribed: &s,
                current: &none,
            },
        ];
        let out = assign(AssignorKind::Range, &members, &topics(&[("t", 5)]));
        let a: Vec<i32> = out["a"].iter().map(|p| p.partition).collect();
        let b: Vec<i32> = out["b"].iter().map(|p| p.partition).collect();
        assert_eq!(a, vec![0, 1, 2]);
        assert_eq!(b, vec![3, 4]);
    }

    #[test]
    fn uniform_is_even_never_three_and_one() {
        let s = subs(&["t"]);
        // One member holds all four; a second joins: 2 and 2, and the first keeps two of its own.
        let all: Assignment = (0..4).map(|p| TopicPartition::new("t", p)).collect();
        let none = Assignment::new();
        let members = [
            MemberSpec {
                member_id: "old",
                instance_id: None,
                subscribed: &s,
                current: &all,
            },
            MemberSpec {
                member_id: "new",
                instance_id: None,
                subscribed: &s,
                current: &none,
            },
        ];
        let out = assign(AssignorKind::Uniform, &members, &topics(&[("t", 4)]));
        assert_eq!(counts(&out), vec![2, 2]);
        assert!(out["old"].is_subset(&all));
        disjoint_and_complete(&out, 4);
    }

    #[test]
    fn uniform_moves_only_what_evenness_needs() {
        let s = subs(&["t"]);
        // 12 partitions over 3 members (4 each); the third leaves: its 4 are split 2/2, the
        // others keep all of theirs.
        let a: Assignment = (0..4).map(|p| TopicPartition::new("t", p)).collect();
        let b: Assignment = (4..8).map(|p| TopicPartition::new("t", p)).collect();
        let members = [
            MemberSpec {
                member_id: "a",
                instance_id: None,
                subscribed: &s,
                current: &a,
            },
            MemberSpec {
                member_id: "b",
                instance_id: None,
                subscribed: &s,
                current: &b,
            },
        ];
        let out = assign(AssignorKind::Uniform, &members, &topics(&[("t", 12)]));
        assert!(a.is_subset(&out["a"]) && b.is_subset(&out["b"]));
        assert_eq!(counts(&out), vec![6, 6]);
        disjoint_and_complete(&out, 12);
    }

    #[test]
    fn uniform_with_different_subscriptions_respects_them() {
        let ab = subs(&["a", "b"]);
        let b_only = subs(&["b"]);
        let none = Assignment::new();
        let members = [
            MemberSpec {
                member_id: "m1",
                instance_id: None,
                subscribed: &ab,
                current: &none,
            },
            MemberSpec {
                member_id: "m2",
                instance_id: None,
                subscribed: &b_only,
                current: &none,
            },
        ];
        let out = assign(
            AssignorKind::Uniform,
            &members,
            &topics(&[("a", 2), ("b", 2)]),
        );
        assert!(out["m2"].iter().all(|p| p.topic == "b"));
        assert_eq!(counts(&out), vec![2, 2]);
        disjoint_and_complete(&out, 4);
    }

    #[test]
    fn unknown_topics_and_no_members_assign_nothing() {
        let s = subs(&["missing"]);
        let none = Assignment::new();
        let members = [MemberSpec {
            member_id: "a",
            instance_id: None,
            subscribed: &s,
            current: &none,
        }];
        for kind in [AssignorKind::Range, AssignorKind::Uniform] {
            assert!(assign(kind, &members, &topics(&[("t", 3)]))["a"].is_empty());
            assert!(assign(kind, &[], &topics(&[("t", 3)])).is_empty());
        }
    }

    proptest::proptest! {
        /// Any membership and ownership: the target is disjoint, complete, and even (the
        /// homogeneous case), for both assignors' completeness and uniform's evenness.
        #[test]
        fn targets_are_disjoint_complete_and_even(
            members in 1usize..8,
            partitions in 0i32..40,
            owners in proptest::collection::vec(0usize..8, 0..40),
        ) {
            let s = subs(&["t"]);
            let ids: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
            let mut current = vec![Assignment::new(); members];
            for (p, o) in owners.iter().enumerate().take(partitions as usize) {
                current[o % members].insert(TopicPartition::new("t", p as i32));
            }
            let specs: Vec<MemberSpec<'_>> = ids.iter().zip(&current).map(|(id, cur)| MemberSpec {
                member_id: id, instance_id: None, subscribed: &s, current: cur,
            }).collect();
            for kind in [AssignorKind::Range, AssignorKind::Uniform] {
                let out = assign(kind, &specs, &topics(&[("t", partitions)]));
                disjoint_and_complete(&out, partitions as usize);
                let c = counts(&out);
                let (lo, hi) = (c.iter().min().copied().unwrap_or(0), c.iter().max().copied().unwrap_or(0));
                proptest::prop_assert!(hi - lo <= 1, "{kind:?}: counts {c:?}");
            }
        }
    }
}
