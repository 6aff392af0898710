//! Consumer group members as real processes (`quiver consume --group`) on a real node:
//! three members share twelve partitions, one is killed -9 and its partitions are owned
//! again; at-least-once skips nothing across the kill, at-most-once prints nothing twice;
//! a static member restarted within the session timeout gets its partitions back without a
//! rebalance; `quiver group` describes, resets and deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{Admin, Client, GroupDescription, Producer, ProducerConfig, ProducerRecord};
use quiver_tests::cli::Cli;
use quiver_tests::node::Node;

const PARTITIONS: i32 = 12;
const SESSION_TIMEOUT_MS: u64 = 3_000;
const HEARTBEAT_INTERVAL_MS: u64 = 200;

/// One `quiver consume --group --follow --format json` process and what it printed.
struct Member {
    child: Child,
    /// `(partition, offset)` of every record it printed, in order.
    printed: Arc<Mutex<Vec<(i32, i64)>>>,
}

impl Member {
    fn start(cli: &Cli, topic: &str, group: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "consume",
            topic,
            "--group",
            group,
            "--follow",
            "--from-beginning",
            "--format",
            "json",
            "--commit-interval-ms",
            "100",
        ];
        args.extend_from_slice(extra);
        let mut child = cli.spawn(&args);
        let stdout = child.stdout.take().expect("stdout");
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON record");
                let p = v["partition"].as_i64().expect("partition") as i32;
                let o = v["offset"].as_i64().expect("offset");
                sink.lock().unwrap().push((p, o));
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[member] {line}");
            }
        });
        Self { child, printed }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn produce(client: &Client, topic: &str, from: u64, count: u64) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut pending = Vec::new();
    for i in from..from + count {
        let r = ProducerRecord::new(topic, format!("v{i}")).key(format!("k{i}"));
        pending.push(producer.enqueue(r).await.expect("enqueued"));
    }
    for p in pending {
        p.await.expect("produced");
    }
}

/// Every `(partition, offset)` of the topic.
async fn all_offsets(admin: &Admin, topic: &str) -> BTreeSet<(i32, i64)> {
    let mut out = BTreeSet::new();
    for p in 0..PARTITIONS {
        let end = admin
            .list_offsets(topic, p, quiver_client::OffsetQuery::Latest)
            .await
            .expect("end")
            .unwrap_or(0);
        out.extend((0..end).map(|o| (p, o)));
    }
    out
}

fn printed_union(members: &[&Member]) -> BTreeSet<(i32, i64)> {
    members
        .iter()
        .flat_map(|m| m.printed.lock().unwrap().clone())
        .collect()
}

/// Waits (bounded) until `check` holds for the group's description; returns it and when.
async fn wait_group(
    admin: &Admin,
    group: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&GroupDescription) -> bool,
) -> (GroupDescription, Instant) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(d) = admin.describe_group(group).await {
            if check(&d) {
                return (d, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; the group is {d:#?}"
            );
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stable with `n` members, whose assignments are disjoint, complete and even.
fn settled(n: usize) -> impl Fn(&GroupDescription) -> bool {
    move |d| d.is_settled(n, PARTITIONS as usize)
}

async fn wait_printed(members: &[&Member], want: &BTreeSet<(i32, i64)>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = printed_union(members);
        if want.is_subset(&got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records printed within {within:?}",
            want.intersection(&got).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup(node: &Node, topic: &str, group: &str) -> (Client, Admin, Cli) {
    let client = node.client_with_topic(10_000, topic, PARTITIONS).await;
    let admin = Admin::new(client.clone());
    let session = SESSION_TIMEOUT_MS.to_string();
    let heartbeat = HEARTBEAT_INTERVAL_MS.to_string();
    admin
        .alter_group_config(
            group,
            &[
                ("session_timeout_ms", &session),
                ("heartbeat_interval_ms", &heartbeat),
            ],
        )
        .await
        .expect("group configured");
    (client, admin, Cli::for_node(node))
}

/// Three members, one killed -9 mid-stream: the survivors own everything again within the
/// session timeout plus a heartbeat (and some slack for a loaded CI machine), and every
/// produced record was printed at least once (at-least-once) or at most once (at-most-once).
async fn three_members_one_killed(delivery: &str) -> (BTreeSet<(i32, i64)>, Vec<(i32, i64)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let group = format!("g-{delivery}");
    let (client, admin, cli) = setup(&node, "events", &group).await;
    let extra = ["--delivery", delivery];
    let mut a = Member::start(&cli, "events", &group, &extra);
    let b = Member::start(&cli, "events", &group, &extra);
    let c = Member::start(&cli, "events", &group, &extra);
    let (d, _) = wait_group(
        &admin,
        &group,
        Duration::from_secs(30),
        "three members settle",
        settled(3),
    )
    .await;
    assert_eq!(
        d.members
            .iter()
            .map(|m| m.assigned.len())
            .collect::<Vec<_>>(),
        [4, 4, 4]
    );

    produce(&client, "events", 0, 1_200).await;
    let first = all_offsets(&admin, "events").await;
    wait_printed(&[&a, &b, &c], &first, Duration::from_secs(30)).await;

    produce(&client, "events", 1_200, 600).await;
    a.kill();
    let killed_at = Instant::now();
    produce(&client, "events", 1_800, 600).await;
    let bound =
        Duration::from_millis(SESSION_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS) + Duration::from_secs(5);
    let (_, settled_at) = wait_group(
        &admin,
        &group,
        bound,
        "the survivors own everything",
        settled(2),
    )
    .await;
    eprintln!("reassigned {:?} after the kill", settled_at - killed_at);

    // Records produced once the survivors own everything are all printed, in both modes.
    let before_last = all_offsets(&admin, "events").await;
    produce(&client, "events", 2_400, 240).await;
    let all = all_offsets(&admin, "events").await;
    assert_eq!(all.len(), 2_640);
    let last: BTreeSet<_> = all.difference(&before_last).copied().collect();
    wait_printed(&[&a, &b, &c], &last, Duration::from_secs(30)).await;
    if delivery == "at-least-once" {
        // None skipped: every record printed by someone (the killed member's share again
        // by its successors, from the last commit).
        wait_printed(&[&a, &b, &c], &all, Duration::from_secs(30)).await;
    }
    let everything: Vec<(i32, i64)> = [&a, &b, &c]
        .iter()
        .flat_map(|m| m.printed.lock().unwrap().clone())
        .collect();
    (all, everything)
}

#[tokio::test(flavor = "current_thread")]
async fn at_least_once_members_skip_nothing_when_one_is_killed() {
    let (all, printed) = three_members_one_killed("at-least-once").await;
    let seen: BTreeSet<_> = printed.iter().copied().collect();
    assert!(all.is_subset(&seen), "records skipped");
    assert!(
        seen.is_subset(&all),
        "records printed that were never produced"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn at_most_once_members_print_nothing_twice_when_one_is_killed() {
    let (all, printed) = three_members_one_killed("at-most-once").await;
    let mut counts: BTreeMap<(i32, i64), u32> = BTreeMap::new();
    for r in &printed {
        *counts.entry(*r).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "printed more than once: {twice:?}");
    // Only what the killed member committed but had not printed yet may be missing: at most
    // its share of the 1,200 records produced around the kill.
    assert!(
        counts.len() + 1_200 >= all.len(),
        "{} of {} printed",
        counts.len(),
        all.len()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_static_member_restarted_within_the_session_gets_its_partitions_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let group = "static";
    let (_client, admin, cli) = setup(&node, "events", group).await;
    let mut one = Member::start(&cli, "events", group, &["--instance-id", "one"]);
    let _two = Member::start(&cli, "events", group, &["--instance-id", "two"]);
    let (before, _) = wait_group(
        &admin,
        group,
        Duration::from_secs(30),
        "two members settle",
        settled(2),
    )
    .await;
    let by_instance =
        |d: &GroupDescription| -> BTreeMap<String, Vec<quiver_client::TopicPartition>> {
            d.members
                .iter()
                .map(|m| {
                    (
                        m.instance_id.clone().unwrap_or_default(),
                        m.assigned.clone(),
                    )
                })
                .collect()
        };
    let epoch_before = before.epoch;
    one.kill();
    let _one_again = Member::start(&cli, "events", group, &["--instance-id", "one"]);
    let (after, _) = wait_group(
        &admin,
        group,
        Duration::from_secs(30),
        "the restarted member is back",
        |d| {
            settled(2)(d)
                && d.members.iter().any(|m| {
                    m.instance_id.as_deref() == Some("one")
                        && before.members.iter().all(|b| b.member_id != m.member_id)
                })
        },
    )
    .await;
    assert_eq!(
        by_instance(&after),
        by_instance(&before),
        "the partitions stayed with their instances"
    );
    assert_eq!(
        after.epoch, epoch_before,
        "no reassignment: the group epoch did not move"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn group_cli_describes_lag_resets_offsets_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), 2);
    let (client, admin, cli) = setup(&node, "events", "reader").await;
    produce(&client, "events", 0, 120).await;
    // A member that reads to the end, commits and leaves.
    let out = cli.ok(
        &[
            "consume",
            "events",
            "--group",
            "reader",
            "--from-beginning",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.lines().count(), 120);
    let again = cli.ok(
        &["consume", "events", "--group", "reader", "--format", "json"],
        None,
    );
    assert_eq!(
        again.lines().count(),
        0,
        "a group resumes at its committed offsets"
    );
    produce(&client, "events", 120, 24).await;
    let d: serde_json::Value =
        serde_json::from_str(&cli.ok(&["group", "describe", "reader", "--json"], None)).unwrap();
    let lag: i64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(lag, 24);
    assert!(d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["lag_ms"].as_i64().is_some()));
    let list = cli.ok(&["group", "list"], None);
    assert!(list.contains("reader"), "{list}");

    // Reset to the earliest: the next member prints everything again.
    cli.ok(
        &[
            "group",
            "reset-offsets",
            "reader",
            "--topic",
            "events",
            "--to-earliest",
        ],
        None,
    );
    let all = cli.ok(
        &["consume", "events", "--group", "reader", "--format", "json"],
        None,
    );
    assert_eq!(all.lines().count(), 144);
    // Shift back by 2 on one partition.
    cli.ok(
        &[
            "group",
            "reset-offsets",
            "reader",
            "--topic",
            "events",
            "--partition",
            "0",
            "--shift-by",
            "-2",
        ],
        None,
    );
    let committed = admin.committed_offsets("reader", &[]).await.unwrap();
    let end0 = admin
        .list_offsets("events", 0, quiver_client::OffsetQuery::Latest)
        .await
        .unwrap()
        .unwrap();
    let p0 = committed
        .iter()
        .find(|(tp, _)| tp.partition == 0)
        .unwrap()
        .1
        .offset;
    assert_eq!(p0, (end0 - 2).max(0));

    // Refused while a member is live, unless --force.
    let _live = Member::start(&cli, "events", "reader", &[]);
    wait_group(
        &admin,
        "reader",
        Duration::from_secs(30),
        "the member joins",
        settled(1),
    )
    .await;
    let err = cli.fails(
        &[
            "group",
            "reset-offsets",
            "reader",
            "--topic",
            "events",
            "--to-latest",
        ],
        None,
    );
    assert!(
        err.contains("live members") && err.contains("--force"),
        "{err}"
    );
    let err = cli.fails(&["group", "delete", "reader"], None);
    assert!(err.contains("GroupNotEmpty"), "{err}");
    let err = cli.fails(
        &["group", "alter-config", "reader", "--set", "nope=1"],
        None,
    );
    assert!(err.contains("unknown group config key"), "{err}");
    let err = cli.fails(&["group", "describe", "nobody"], None);
    assert!(err.contains("UnknownGroup"), "{err}");
}
