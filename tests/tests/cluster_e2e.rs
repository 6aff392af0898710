//! Three real nodes on loopback forming one cluster: the controller (a Raft group of the
//! three) elects a leader over the nodes' internal QUIC links, every node follows its log
//! and serves the same metadata; topics created at any node are placed over all three;
//! the controller survives kill -9 of a node, and the node catches up when it returns.

use std::path::Path;
use std::time::{Duration, Instant};

use quiver_tests::cli::Cli;
use quiver_tests::node::{free_ports, quiver_binary, Node};

const SHARDS: usize = 2;

struct Cluster {
    /// Each node's `--rack`, when the test gives them.
    racks: Option<Vec<&'static str>>,
    dirs: Vec<tempfile::TempDir>,
    ports: Vec<u16>,
    seeds: String,
    nodes: Vec<Option<Node>>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

impl Cluster {
    /// Three nodes (ids 1..=3) sharing node 1's dev certificate, each a controller voter.
    fn start() -> Self {
        Self::start_n(3, None)
    }

    /// `count` nodes (ids 1..=count), node N in rack `racks[N - 1]` when given, every one a
    /// controller voter.
    fn start_n(count: usize, racks: Option<Vec<&'static str>>) -> Self {
        Self::start_voters(count, count, racks)
    }

    /// `count` nodes, the first `voters` of them the controller's voters (the seeds); the
    /// others join as brokers.
    fn start_voters(count: usize, voters: usize, racks: Option<Vec<&'static str>>) -> Self {
        let dirs: Vec<tempfile::TempDir> = (0..count)
            .map(|_| tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap())
            .collect();
        let mut ports = Vec::new();
        for _ in 0..count {
            // Distinct ranges: probe past the ones already taken.
            let mut p = free_ports(SHARDS);
            while ports
                .iter()
                .any(|q: &u16| p < q + SHARDS as u16 && *q < p + SHARDS as u16)
            {
                p = free_ports(SHARDS);
            }
            ports.push(p);
        }
        let seeds = ports
            .iter()
            .take(voters)
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            racks,
            dirs,
            ports,
            seeds,
            nodes: (0..count).map(|_| None).collect(),
        };
        cluster.start_node(1);
        for i in 2..=count {
            copy_dir(
                &cluster.dirs[0].path().join("tls"),
                &cluster.dirs[i - 1].path().join("tls"),
            );
            cluster.start_node(i);
        }
        cluster
    }

    fn start_node(&mut self, id: usize) {
        let id_text = id.to_string();
        // Retention runs often, for the test of a follower behind the leader's log start.
        let mut args = vec![
            "--node-id",
            &id_text,
            "--seeds",
            &self.seeds,
            "--retention-check-interval-ms",
            "200",
        ];
        if let Some(racks) = &self.racks {
            args.extend(["--rack", racks[id - 1]]);
        }
        let node = Node::start_with(self.dirs[id - 1].path(), SHARDS, self.ports[id - 1], &args);
        self.nodes[id - 1] = Some(node);
    }

    fn kill(&mut self, id: usize) {
        if let Some(node) = self.nodes[id - 1].take() {
            node.kill();
        }
    }

    fn cli(&self, id: usize) -> Cli {
        Cli {
            broker: format!("127.0.0.1:{}", self.ports[id - 1]),
            data_dir: self.dirs[0].path().display().to_string(),
        }
    }

    fn cluster_id(&self, id: usize) -> String {
        let out = self.cli(id).ok(&["cluster", "info", "--json"], None);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["cluster_id"].as_str().unwrap_or_default().to_string()
    }
}

/// Retries `f` until it returns `Some`, for up to `secs` seconds (every 100 ms): the
/// cluster's events (an election, a follower catching up) have no signal a test can await.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `args` (a `topic create`) until it succeeds, for up to 20 s: a new cluster places
/// replicas only once every node registered.
fn create_once_registered(cli: &Cli, args: &[&str]) {
    eventually(20, "topic creation once every node registered", || {
        cli.run(args, None).status.success().then_some(())
    });
}

fn topics(cli: &Cli) -> Vec<String> {
    let out = cli.run(&["topic", "list", "--json"], None);
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn three_nodes_share_one_controller_place_topics_over_all_and_survive_a_kill() {
    let mut cluster = Cluster::start();

    // One cluster: every node learns the id its first controller leader chose.
    let id = eventually(20, "a controller leader initializes the cluster", || {
        let ids: Vec<String> = (1..=3).map(|n| cluster.cluster_id(n)).collect();
        (!ids[0].is_empty() && ids.iter().all(|i| *i == ids[0])).then(|| ids[0].clone())
    });
    assert!(id.starts_with("quiver-"), "{id}");
    for n in 1..=3 {
        eventually(10, "node.json records the cluster", || {
            let text = std::fs::read_to_string(cluster.dirs[n - 1].path().join("node.json"))
                .unwrap_or_default();
            text.contains(&id).then_some(())
        });
    }

    // Created at node 2 (forwarded to the controller leader wherever it is), served by all,
    // placed over the three nodes: each leads two of six partitions (one replica each: what
    // a node's loss does to them is checked below).
    eventually(20, "topic creation once every node registered", || {
        let out = cluster.cli(2).run(
            &[
                "topic",
                "create",
                "readings",
                "--partitions",
                "6",
                "--replication-factor",
                "1",
            ],
            None,
        );
        out.status.success().then_some(())
    });
    let desc: serde_json::Value = serde_json::from_str(
        &cluster
            .cli(3)
            .ok(&["topic", "describe", "readings", "--json"], None),
    )
    .unwrap();
    let parts = desc["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 6);
    let mut leaders: Vec<i64> = parts
        .iter()
        .map(|p| p["leader"].as_i64().unwrap())
        .collect();
    leaders.sort_unstable();
    assert_eq!(
        leaders,
        vec![1, 1, 2, 2, 3, 3],
        "leaders spread evenly: {desc}"
    );
    for p in parts {
        let leader = p["leader"].as_u64().unwrap() as usize;
        let shard = p["shard"].as_u64().unwrap() as u16;
        assert_eq!(
            p["address"].as_str().unwrap(),
            format!("127.0.0.1:{}", cluster.ports[leader - 1] + shard),
            "metadata sends clients to the leader's node: {p}"
        );
    }

    // Produced through node 1 (the client follows each partition's address), read back
    // whole through node 3.
    let input: String = (0..60).map(|i| format!("key-{i}:reading-{i}\n")).collect();
    cluster.cli(1).ok(
        &["produce", "readings", "--key-separator", ":"],
        Some(&input),
    );
    let out = cluster.cli(3).ok(&["consume", "readings"], None);
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..60).map(|i| format!("reading-{i}")).collect();
    want.sort_unstable();
    assert_eq!(got, want);

    // A consumer group on the cluster: its coordinator (a partition of __consumer_offsets,
    // placed on some node) is found by the client wherever it is; offsets committed there
    // are read back through another node.
    let out = cluster.cli(2).ok(
        &[
            "consume",
            "readings",
            "--group",
            "readers",
            "--from-beginning",
        ],
        None,
    );
    assert_eq!(out.lines().count(), 60, "the group reads everything once");
    let again = cluster
        .cli(3)
        .ok(&["consume", "readings", "--group", "readers"], None);
    assert_eq!(
        again.lines().count(),
        0,
        "and resumes at its committed offsets"
    );
    let d: serde_json::Value = serde_json::from_str(
        &cluster
            .cli(1)
            .ok(&["group", "describe", "readers", "--json"], None),
    )
    .unwrap();
    let lag: i64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(lag, 0, "{d}");

    // kill -9 a node: the two others keep a controller (a majority) and take changes. The
    // default replication factor (3) needs three nodes up: refused, saying so.
    cluster.kill(1);
    // (A node killed a moment ago still counts as up until the controller leader has not
    // heard from it for an election timeout or two: a creation then may still place on it.)
    let mut attempt = 0;
    eventually(
        20,
        "a topic of the default replication factor is refused",
        || {
            attempt += 1;
            let name = format!("three-replicas-{attempt}");
            let out = cluster.cli(2).run(&["topic", "create", &name], None);
            let err = String::from_utf8_lossy(&out.stderr);
            (!out.status.success() && err.contains("needs 3 nodes up; 2 are")).then_some(())
        },
    );
    eventually(20, "a topic created while node 1 is down", || {
        let out = cluster.cli(2).run(
            &[
                "topic",
                "create",
                "while-down",
                "--partitions",
                "2",
                "--replication-factor",
                "2",
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || !err.contains("panicked"),
            "creation failed badly: {err}"
        );
        out.status.success().then_some(())
    });
    assert!(
        topics(&cluster.cli(2)).contains(&"while-down".to_string()),
        "the node that asked serves the change at once"
    );
    // The others follow the controller's log, a heartbeat or so later.
    eventually(10, "node 3 learns the new topic", || {
        topics(&cluster.cli(3))
            .contains(&"while-down".to_string())
            .then_some(())
    });

    // Status from a surviving node: node 1 down, the partitions it leads offline, the
    // controller led by one of the two others.
    let status: serde_json::Value =
        serde_json::from_str(&cluster.cli(2).ok(&["cluster", "status", "--json"], None)).unwrap();
    let node1 = &status["nodes"].as_array().unwrap()[0];
    assert_eq!(node1["node_id"], 1);
    assert_eq!(node1["up"], false, "{status}");
    assert!(
        status["nodes"][1]["up"].as_bool().unwrap() && status["nodes"][2]["up"].as_bool().unwrap()
    );
    let controller = status["controller"]["leader"].as_i64().unwrap();
    assert!(controller == 2 || controller == 3, "{status}");
    // (The replicated internal topics fail over meanwhile: compared on `readings` alone.)
    let mut led_by_1: Vec<String> = Vec::new();
    for t in ["readings"] {
        let d: serde_json::Value =
            serde_json::from_str(&cluster.cli(2).ok(&["topic", "describe", t, "--json"], None))
                .unwrap();
        for p in d["partitions"].as_array().unwrap() {
            if p["leader"] == 1 {
                led_by_1.push(format!("{t}/{}", p["partition"]));
            }
        }
    }
    let mut offline: Vec<String> = status["offline_partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .filter(|p| p.starts_with("readings/"))
        .collect();
    offline.sort();
    led_by_1.sort();
    assert_eq!(offline, led_by_1, "offline = led by the node that is down");

    // Back: it replays its log, hears from the leader, and serves the change it missed.
    cluster.start_node(1);
    eventually(20, "the restarted node catches up", || {
        topics(&cluster.cli(1))
            .contains(&"while-down".to_string())
            .then_some(())
    });
    assert_eq!(
        cluster.cluster_id(1),
        id,
        "the same cluster after a restart"
    );
}

#[test]
fn seeds_that_do_not_parse_are_refused_with_the_reason() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = std::process::Command::new(quiver_binary())
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--seeds", "one@nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a node id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn quiver_dev_cluster_starts_nodes_the_cli_finds_by_itself_and_stops_them_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Node N at base + 10 (N - 1): 21 consecutive free ports cover three nodes of one shard.
    let base = free_ports(21);
    let mut dev = std::process::Command::new(quiver_binary())
        .current_dir(dir.path())
        .args([
            "dev",
            "cluster",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = dev.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the dev cluster did not start; printed {printed:?}"));
        let done = line.contains("Ctrl-C stops every node");
        printed.push(line);
        if done {
            break;
        }
    }
    assert!(printed
        .iter()
        .any(|l| l.contains(&format!("127.0.0.1:{}", base + 20))));
    // Run from the cluster's folder, without --broker: the CLI finds the nodes and their
    // certificate by itself.
    let cli = |args: &[&str]| {
        std::process::Command::new(quiver_binary())
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let status = eventually(20, "three nodes registered and a controller leader", || {
        let out = cli(&["cluster", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let nodes = v["nodes"].as_array()?;
        (nodes.len() == 3
            && nodes.iter().all(|n| n["up"] == true)
            && v["controller"]["leader"].as_i64().is_some())
        .then_some(v)
    });
    assert_eq!(status["controller"]["voters"], serde_json::json!([1, 2, 3]));
    let out = cli(&["topic", "create", "t", "--partitions", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Ctrl-C (SIGINT to the dev command): every node stops, cleanly.
    unsafe {
        libc::kill(dev.id() as libc::pid_t, libc::SIGINT);
    }
    let exit = dev.wait().unwrap();
    assert!(exit.success(), "{exit}");
    // The rest of its output, up to its end (the reader thread stops at EOF).
    let mut stopped = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        stopped.push(line);
    }
    for n in 1..=3 {
        assert!(
            stopped.contains(&format!("node {n} stopped")),
            "{stopped:?}"
        );
    }
    assert!(!dir.path().join("quiver-data/dev-cluster.brokers").exists());
}

/// Each partition's (leader, leader epoch), as `cli`'s node knows them; `None` while it does
/// not know the topic.
fn try_leaders(cli: &Cli, topic: &str) -> Option<Vec<(i64, i64)>> {
    let out = cli.run(&["topic", "describe", topic, "--json"], None);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    d["partitions"]
        .as_array()?
        .iter()
        .map(|p| Some((p["leader"].as_i64()?, p["leader_epoch"].as_i64()?)))
        .collect()
}

fn leaders(cli: &Cli, topic: &str) -> Vec<(i64, i64)> {
    try_leaders(cli, topic).unwrap_or_else(|| panic!("no metadata of {topic}"))
}

fn consumed_values(cli: &Cli, topic: &str) -> Vec<String> {
    let out = cli.ok(&["consume", topic], None);
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn replicated_partitions_fail_over_on_kill_9_and_lose_no_acknowledged_record() {
    use std::io::Write;
    let mut cluster = Cluster::start();
    eventually(20, "topic creation once every node registered", || {
        let out = cluster.cli(1).run(
            &[
                "topic",
                "create",
                "sensors",
                "--partitions",
                "6",
                "--replication-factor",
                "3",
            ],
            None,
        );
        out.status.success().then_some(())
    });
    // Every partition elects a leader among its three replicas and records it (epoch ≥ 1).
    let before = eventually(20, "every partition's leader recorded", || {
        let l = try_leaders(&cluster.cli(2), "sensors")?;
        l.iter().all(|(_, epoch)| *epoch >= 1).then_some(l)
    });
    let d: serde_json::Value = serde_json::from_str(
        &cluster
            .cli(2)
            .ok(&["topic", "describe", "sensors", "--json"], None),
    )
    .unwrap();
    for p in d["partitions"].as_array().unwrap() {
        assert_eq!(p["replicas"].as_array().unwrap().len(), 3, "{p}");
    }

    // A producer (acks=all, idempotent) writes through a kill -9 of the node leading the
    // most partitions: it exits 0 only once every record is acknowledged.
    let mut counts = [0usize; 4];
    for (l, _) in &before {
        counts[*l as usize] += 1;
    }
    let victim = (1..=3).max_by_key(|n| counts[*n]).unwrap();
    let survivor = if victim == 1 { 2 } else { 1 };
    let mut producer =
        cluster
            .cli(survivor)
            .spawn_with_stdin(&["produce", "sensors", "--key-separator", ":"]);
    let mut stdin = producer.stdin.take().unwrap();
    let line = |i: usize| format!("sensor-{i}:reading-{i:04}\n");
    for i in 0..100 {
        stdin.write_all(line(i).as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    // The first records are in (acknowledged) before the kill.
    eventually(20, "the first records are readable", || {
        (consumed_values(&cluster.cli(survivor), "sensors").len() >= 50).then_some(())
    });
    let killed_at = Instant::now();
    cluster.kill(victim);
    for i in 100..200 {
        stdin.write_all(line(i).as_bytes()).unwrap();
    }
    drop(stdin);
    let out = producer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "every record acknowledged despite the kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failover_ms = killed_at.elapsed().as_millis();
    // New leaders, at higher epochs, none on the dead node.
    let after = leaders(&cluster.cli(survivor), "sensors");
    for ((l0, e0), (l1, e1)) in before.iter().zip(&after) {
        assert_ne!(*l1, victim as i64, "{after:?}");
        if *l0 == victim as i64 {
            assert!(
                e1 > e0,
                "a new leader has a newer epoch: {before:?} -> {after:?}"
            );
        }
    }
    let want: Vec<String> = (0..200).map(|i| format!("reading-{i:04}")).collect();
    assert_eq!(
        consumed_values(&cluster.cli(survivor), "sensors"),
        want,
        "every acknowledged record exactly once (failover and rest of the run: {failover_ms} ms)"
    );

    // The node comes back and catches up from the leaders; then the other survivor goes:
    // writes commit only on both replicas left, so they go on only once the restarted node
    // holds the log again, and the two serve everything.
    cluster.start_node(victim);
    let other = (1..=3).find(|n| *n != victim && *n != survivor).unwrap();
    eventually(30, "the restarted node knows the topic again", || {
        (try_leaders(&cluster.cli(victim), "sensors")?.len() == 6).then_some(())
    });
    // Caught up, it gets back the leaderships placement gave it (each partition's first
    // replica leads again), so leaders are spread evenly again.
    eventually(
        40,
        "leadership handed back to the preferred replicas",
        || {
            let out = cluster
                .cli(survivor)
                .run(&["topic", "describe", "sensors", "--json"], None);
            let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            d["partitions"]
                .as_array()?
                .iter()
                .all(|p| p["leader"] == p["replicas"][0])
                .then_some(())
        },
    );
    cluster.kill(other);
    let input: String = (200..220).map(line).collect();
    eventually(
        30,
        "writes go on with the restarted node and one other",
        || {
            cluster
                .cli(victim)
                .run(
                    &["produce", "sensors", "--key-separator", ":"],
                    Some(&input),
                )
                .status
                .success()
                .then_some(())
        },
    );
    let got = consumed_values(&cluster.cli(victim), "sensors");
    let want: Vec<String> = (0..220).map(|i| format!("reading-{i:04}")).collect();
    assert_eq!(
        got, want,
        "nothing lost, nothing twice, across two failovers"
    );
}

/// Lines a spawned command prints, as they come (a thread reads them into a channel).
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Takes lines of `child` from `rx` until `want` have arrived in all, within `secs`.
fn take_lines(
    child: &mut std::process::Child,
    rx: &std::sync::mpsc::Receiver<String>,
    got: &mut Vec<String>,
    want: usize,
    secs: u64,
) {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(e) => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                panic!(
                    "{} of {want} records within {secs} s ({e}): {got:?}; stderr: {err}",
                    got.len()
                )
            }
        }
    }
}

/// A group's total lag and how many partitions have a committed offset at the log end.
fn group_lag(cli: &Cli, group: &str) -> Option<(i64, usize)> {
    let out = cli.run(&["group", "describe", group, "--json"], None);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let parts = d["partitions"].as_array()?;
    let lag = parts.iter().map(|p| p["lag"].as_i64().unwrap_or(0)).sum();
    let at_end = parts
        .iter()
        .filter(|p| p["committed"].as_i64().is_some() && p["committed"] == p["log_end"])
        .count();
    Some((lag, at_end))
}

#[test]
fn a_consumer_group_keeps_consuming_across_its_coordinators_failover_with_offsets_intact() {
    let mut cluster = Cluster::start();
    // The default replication factor on three nodes is 3, for the topic and for
    // __consumer_offsets alike.
    // The default factor counts the nodes registered when the topic is created: wait for
    // all three (a node still registering would make it 1 or 2).
    eventually(20, "three nodes registered", || {
        let out = cluster.cli(1).run(&["cluster", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let nodes = v["nodes"].as_array()?;
        (nodes.len() == 3 && nodes.iter().all(|n| n["up"] == true)).then_some(())
    });
    eventually(20, "topic creation once every node registered", || {
        let out = cluster
            .cli(1)
            .run(&["topic", "create", "events", "--partitions", "3"], None);
        out.status.success().then_some(())
    });
    eventually(20, "every partition's leader recorded", || {
        let l = try_leaders(&cluster.cli(2), "events")?;
        l.iter().all(|(_, epoch)| *epoch >= 1).then_some(())
    });
    // A topic whose acks=all answers once a quorum has a batch written (not fsynced).
    cluster.cli(1).ok(
        &[
            "topic",
            "create",
            "fast",
            "--config",
            "durability=replicated",
        ],
        None,
    );
    let d: serde_json::Value = serde_json::from_str(
        &cluster
            .cli(1)
            .ok(&["topic", "describe", "fast", "--json"], None),
    )
    .unwrap();
    assert_eq!(d["configs"]["durability"], "replicated", "{d}");
    assert_eq!(d["partitions"][0]["replicas"].as_array().unwrap().len(), 3);
    let input: String = (0..20).map(|i| format!("f{i}\n")).collect();
    eventually(20, "produced to the replicated-durability topic", || {
        cluster
            .cli(3)
            .run(&["produce", "fast"], Some(&input))
            .status
            .success()
            .then_some(())
    });
    // Acknowledged once a quorum wrote it; readable once the leader's own write is durable
    // too (reads stop at its durable offset), a moment later under load.
    eventually(20, "the acknowledged records readable", || {
        (consumed_values(&cluster.cli(1), "fast").len() == 20).then_some(())
    });
    let err = cluster.cli(1).fails(
        &[
            "topic",
            "create",
            "odd",
            "--config",
            "durability=eventually",
        ],
        None,
    );
    assert!(err.contains("must be persisted or replicated"), "{err}");
    let line = |i: usize| format!("k{i}:event-{i:04}\n");
    let first: String = (0..60).map(line).collect();
    cluster
        .cli(1)
        .ok(&["produce", "events", "--key-separator", ":"], Some(&first));

    // A member given every node's address; it commits every 200 ms.
    let all = Cli {
        broker: (1..=3)
            .map(|n| format!("127.0.0.1:{}", cluster.ports[n - 1]))
            .collect::<Vec<_>>()
            .join(","),
        data_dir: cluster.dirs[0].path().display().to_string(),
    };
    let mut consumer = all.spawn(&[
        "consume",
        "events",
        "--group",
        "watchers",
        "--from-beginning",
        "--commit-interval-ms",
        "200",
        "-n",
        "120",
        "--follow",
    ]);
    let rx = lines_of(&mut consumer);
    let mut got = Vec::new();
    take_lines(&mut consumer, &rx, &mut got, 60, 60);
    eventually(20, "the first 60 committed", || {
        (group_lag(&cluster.cli(2), "watchers")? == (0, 3)).then_some(())
    });

    // kill -9 the node leading the group's coordinator partition.
    let offsets = leaders(&cluster.cli(2), quiver_group::OFFSETS_TOPIC);
    let p = quiver_group::coordinator_key::coordinator_partition("watchers", offsets.len() as u32);
    let (victim, _) = offsets[p as usize];
    let survivor = if victim == 1 { 2 } else { 1 };
    cluster.kill(victim as usize);

    // Produced after the kill: the member gets them from the new leaders, its coordinator
    // now on another node, which rebuilt the group and its offsets from the log.
    let second: String = (60..120).map(line).collect();
    eventually(30, "produced after the kill", || {
        cluster
            .cli(survivor)
            .run(
                &["produce", "events", "--key-separator", ":"],
                Some(&second),
            )
            .status
            .success()
            .then_some(())
    });
    take_lines(&mut consumer, &rx, &mut got, 120, 60);
    let out = consumer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    got.sort();
    let want: Vec<String> = (0..120).map(|i| format!("event-{i:04}")).collect();
    assert_eq!(got, want, "every record once, across the failover");
    eventually(20, "offsets committed across the failover", || {
        (group_lag(&cluster.cli(survivor), "watchers")? == (0, 3)).then_some(())
    });
    // A new member resumes at the committed offsets: nothing is read twice.
    let again = cluster
        .cli(survivor)
        .ok(&["consume", "events", "--group", "watchers"], None);
    assert_eq!(again.lines().count(), 0, "{again}");
}

/// Runs `quiver serve` with `args` until it exits (within `secs`): its status and stderr.
fn serve_until_exit(args: &[String], secs: u64) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(quiver_binary())
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "quiver serve {args:?} still runs after {secs} s: {}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().unwrap())
}

#[test]
fn a_node_with_another_clusters_data_or_a_taken_id_is_refused_and_the_cluster_goes_on() {
    let mut cluster = Cluster::start();
    let id = eventually(20, "the cluster is initialized", || {
        let ids: Vec<String> = (1..=3).map(|n| cluster.cluster_id(n)).collect();
        (!ids[0].is_empty() && ids.iter().all(|i| *i == ids[0])).then(|| ids[0].clone())
    });

    // Another cluster's data directory: node 3 of a one-node cluster of its own.
    let other = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_ports(SHARDS);
    let lone = Node::start_with(
        other.path(),
        SHARDS,
        port,
        &["--node-id", "3", "--seeds", &format!("3@127.0.0.1:{port}")],
    );
    let cli = Cli::for_node(&lone);
    let other_id = eventually(20, "the other cluster is initialized", || {
        let out = cli.run(&["cluster", "info", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let c = v["cluster_id"].as_str()?.to_string();
        (!c.is_empty()).then_some(c)
    });
    assert_ne!(other_id, id);
    lone.terminate();
    // Started in node 3's place (its address, the cluster's certificate): the two others
    // say it is of another cluster, and it stops with the reason.
    cluster.kill(3);
    std::fs::remove_dir_all(other.path().join("tls")).unwrap();
    copy_dir(
        &cluster.dirs[0].path().join("tls"),
        &other.path().join("tls"),
    );
    let args: Vec<String> = [
        "--data-dir",
        &other.path().display().to_string(),
        "--shards",
        &SHARDS.to_string(),
        "--listen",
        &format!("127.0.0.1:{}", cluster.ports[2]),
        "--node-id",
        "3",
        "--seeds",
        &cluster.seeds,
        "--log-level",
        "error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, err) = serve_until_exit(&args, 60);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("belongs to cluster {other_id}"))
            && err.contains(&format!("belong to cluster {id}")),
        "{err}"
    );

    // A second node 2 (its own directory, another port): refused at once.
    let dup = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (status, err) = serve_until_exit(
        &[
            "--data-dir".to_string(),
            dup.path().display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_ports(1)),
            "--node-id".into(),
            "2".into(),
            "--seeds".into(),
            cluster.seeds.clone(),
        ],
        30,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("is node 2 already running elsewhere"), "{err}");

    // Unaffected: the cluster takes changes, and node 3 with its own data rejoins it.
    eventually(20, "a topic created on the two nodes up", || {
        cluster
            .cli(1)
            .run(
                &["topic", "create", "after", "--replication-factor", "2"],
                None,
            )
            .status
            .success()
            .then_some(())
    });
    cluster.start_node(3);
    eventually(30, "node 3 rejoins its cluster", || {
        (cluster.cluster_id(3) == id && topics(&cluster.cli(3)).contains(&"after".to_string()))
            .then_some(())
    });
}

#[test]
fn replicas_go_to_distinct_racks_where_nodes_name_one() {
    // Nodes 1 and 2 share rack "a"; node 3 alone is rack "b": every partition of two
    // replicas has one on node 3.
    let cluster = Cluster::start_n(3, Some(vec!["a", "a", "b"]));
    eventually(20, "every node registered and up", || {
        let out = cluster.cli(1).run(&["cluster", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let nodes = v["nodes"].as_array()?;
        (nodes.len() == 3 && nodes.iter().all(|n| n["up"] == true)).then_some(())
    });
    eventually(20, "topic creation", || {
        let out = cluster.cli(1).run(
            &[
                "topic",
                "create",
                "spread",
                "--partitions",
                "6",
                "--replication-factor",
                "2",
            ],
            None,
        );
        out.status.success().then_some(())
    });
    let d: serde_json::Value = serde_json::from_str(
        &cluster
            .cli(1)
            .ok(&["topic", "describe", "spread", "--json"], None),
    )
    .unwrap();
    for p in d["partitions"].as_array().unwrap() {
        let replicas: Vec<i64> = p["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_i64().unwrap())
            .collect();
        assert_eq!(replicas.len(), 2, "{p}");
        assert!(replicas.contains(&3), "one replica in rack b: {p}");
    }
}

/// Each partition's (leader, replicas) as `topic describe` reports them.
fn placement(cli: &Cli, topic: &str) -> Option<Vec<(i64, Vec<i64>)>> {
    let out = cli.run(&["topic", "describe", topic, "--json"], None);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    d["partitions"]
        .as_array()?
        .iter()
        .map(|p| {
            let replicas = p["replicas"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_i64)
                .collect();
            Some((p["leader"].as_i64()?, replicas))
        })
        .collect()
}

fn list(nodes: &[i64]) -> String {
    nodes
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn replicas_move_leadership_transfers_and_a_decommissioned_node_empties_without_loss() {
    use std::io::Write;
    let mut cluster = Cluster::start_n(4, None);
    create_once_registered(
        &cluster.cli(1),
        &[
            "topic",
            "create",
            "moves",
            "--partitions",
            "4",
            "--replication-factor",
            "3",
        ],
    );
    eventually(20, "every partition's leader recorded", || {
        let l = try_leaders(&cluster.cli(1), "moves")?;
        l.iter().all(|(_, epoch)| *epoch >= 1).then_some(())
    });
    let line = |i: usize| format!("k{i}:reading-{i:04}\n");
    let first: String = (0..100).map(line).collect();
    cluster
        .cli(1)
        .ok(&["produce", "moves", "--key-separator", ":"], Some(&first));

    // Partition 0 moves off its leader onto the node that held no replica: the new replica
    // copies the log, joins, and the old leader hands over before it is removed.
    let before = placement(&cluster.cli(1), "moves").unwrap();
    let (leader, replicas) = before[0].clone();
    assert_eq!(leader, replicas[0]);
    let outside = (1..=4).find(|n| !replicas.contains(n)).unwrap();
    let target = vec![replicas[1], replicas[2], outside];
    cluster.cli(1).ok(
        &[
            "topic",
            "alter-replicas",
            "moves",
            "--partition",
            "0",
            "--replicas",
            &list(&target),
            "--timeout-s",
            "60",
        ],
        None,
    );
    let after = placement(&cluster.cli(1), "moves").unwrap();
    assert_eq!(after[0].1, target, "{after:?}");
    assert_ne!(
        after[0].0, leader,
        "the leaving leader handed over: {after:?}"
    );
    let left_dir = cluster.dirs[leader as usize - 1]
        .path()
        .join("topics/moves/0");
    eventually(20, "the leaving node drops its copy", || {
        (!left_dir.exists()).then_some(())
    });

    // Leadership of partition 1 goes where it is asked, and stays (it is now preferred).
    let (_, replicas1) = after[1].clone();
    let to = replicas1[2];
    cluster.cli(3).ok(
        &[
            "cluster",
            "transfer-leadership",
            "moves",
            "--partition",
            "1",
            "--to",
            &to.to_string(),
            "--timeout-s",
            "30",
        ],
        None,
    );
    let p1 = placement(&cluster.cli(1), "moves").unwrap()[1].clone();
    assert_eq!(p1.0, to);
    assert_eq!(
        p1.1[0], to,
        "the new leader is the preferred replica: {p1:?}"
    );

    // Node 4 is decommissioned while a producer writes: every replica moves off it, no
    // acknowledged record is lost, and new topics place nothing there.
    let mut producer =
        cluster
            .cli(1)
            .spawn_with_stdin(&["produce", "moves", "--key-separator", ":"]);
    let mut stdin = producer.stdin.take().unwrap();
    for i in 100..150 {
        stdin.write_all(line(i).as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    cluster
        .cli(2)
        .ok(&["cluster", "decommission", "4", "--timeout-s", "90"], None);
    for i in 150..200 {
        stdin.write_all(line(i).as_bytes()).unwrap();
    }
    drop(stdin);
    let out = producer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (_, r) in placement(&cluster.cli(1), "moves").unwrap() {
        assert!(!r.contains(&4) && r.len() == 3, "{r:?}");
    }
    cluster.cli(1).ok(
        &[
            "topic",
            "create",
            "after",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        None,
    );
    for (_, r) in placement(&cluster.cli(1), "after").unwrap() {
        assert!(
            !r.contains(&4),
            "a decommissioned node takes no new replica: {r:?}"
        );
    }

    // A node that took part in the moves restarts (kill -9) and rejoins with the
    // memberships its partitions went through; writes go on and nothing is lost.
    cluster.kill(outside as usize);
    cluster.start_node(outside as usize);
    let input: String = (200..220).map(line).collect();
    eventually(30, "writes after the restart", || {
        cluster
            .cli(1)
            .run(&["produce", "moves", "--key-separator", ":"], Some(&input))
            .status
            .success()
            .then_some(())
    });
    let want: Vec<String> = (0..220).map(|i| format!("reading-{i:04}")).collect();
    assert_eq!(consumed_values(&cluster.cli(1), "moves"), want);
    // Every follower is back in sync, as the leaders report it.
    eventually(30, "cluster status shows every follower in sync", || {
        let out = cluster.cli(1).run(&["cluster", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let followers = v["followers"].as_array()?;
        let all_in_sync = followers.iter().all(|f| f["in_sync"] == true);
        (all_in_sync
            && followers.len() == 7 * 2
            && v["under_replicated_partitions"].as_array()?.is_empty())
        .then_some(())
    });
}

/// The lowest base offset of a segment file in `dir` (a partition's directory).
fn first_segment_base(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse::<u64>().ok()
        })
        .min()
}

#[test]
fn a_follower_behind_the_leaders_log_start_starts_there_and_serves_on() {
    let mut cluster = Cluster::start();
    create_once_registered(
        &cluster.cli(1),
        &[
            "topic",
            "create",
            "trimmed",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
            "--config",
            "segment_bytes=4096",
            "--config",
            "retention_bytes=8192",
        ],
    );
    let leader = eventually(20, "the partition's leader recorded", || {
        let l = try_leaders(&cluster.cli(1), "trimmed")?;
        (l[0].1 >= 1).then_some(l[0].0)
    });
    let follower = (1..=3).find(|n| *n != leader).unwrap() as usize;
    let other = (1..=3)
        .find(|n| *n != leader && *n as usize != follower)
        .unwrap();
    cluster.kill(follower);
    // Enough records for many 4 KiB segments: retention keeps the last 8 KiB on the two
    // replicas up, so the leader's log starts past everything the stopped follower holds.
    let value = "v".repeat(100);
    for round in 0..8 {
        let input: String = (round * 50..round * 50 + 50)
            .map(|i| format!("{i:04}-{value}\n"))
            .collect();
        cluster
            .cli(leader as usize)
            .ok(&["produce", "trimmed"], Some(&input));
    }
    let start = eventually(20, "retention moved the leader's log start", || {
        let out = cluster
            .cli(leader as usize)
            .ok(&["offsets", "trimmed", "--json"], None);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let earliest = v[0]["earliest"].as_i64()?;
        (earliest >= 50).then_some(earliest)
    });
    // The follower returns: it cannot get the deleted records, so it empties its log and
    // continues from the leader's log start.
    cluster.start_node(follower);
    let dir = cluster.dirs[follower - 1].path().join("topics/trimmed/0");
    eventually(
        30,
        "the returning follower starts at the leader's log start",
        || (first_segment_base(&dir)? >= start as u64).then_some(()),
    );
    // It holds the rest: with the other follower gone, writes commit only on it, and a
    // read from the start gets everything the log still has, in order.
    cluster.kill(other as usize);
    let more: String = (400..410).map(|i| format!("{i:04}-{value}\n")).collect();
    eventually(30, "writes go on with the reset follower", || {
        cluster
            .cli(leader as usize)
            .run(&["produce", "trimmed"], Some(&more))
            .status
            .success()
            .then_some(())
    });
    cluster.kill(leader as usize);
    cluster.start_node(other as usize);
    let got = eventually(
        30,
        "the reset follower serves after the leader's kill",
        || {
            let out = cluster
                .cli(follower)
                .run(&["consume", "trimmed", "--from-beginning"], None);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).to_string())
        },
    );
    let seqs: Vec<u32> = got
        .lines()
        .filter_map(|l| l.split('-').next()?.parse().ok())
        .collect();
    assert_eq!(seqs.last(), Some(&409), "the last writes are there");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap after the log start: {seqs:?}"
    );
    assert!(seqs[0] > 0, "the deleted records stay deleted");
}

#[test]
fn a_transaction_over_partitions_led_by_every_node_commits_or_aborts_on_each() {
    use quiver_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord, TlsTrust};
    let cluster = Cluster::start();
    create_once_registered(
        &cluster.cli(1),
        &[
            "topic",
            "create",
            "tx-out",
            "--partitions",
            "6",
            "--replication-factor",
            "3",
        ],
    );
    // Leaders recorded, on every node: a transaction over all six partitions needs markers
    // on all three nodes, and its coordinator (one node) adds partitions the others lead.
    eventually(20, "leaders on every node", || {
        let l = try_leaders(&cluster.cli(1), "tx-out")?;
        let nodes: std::collections::BTreeSet<i64> = l.iter().map(|(n, _)| *n).collect();
        (l.iter().all(|(_, e)| *e >= 1) && nodes.len() == 3).then_some(())
    });
    let brokers: Vec<std::net::SocketAddr> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();
    let trust = cluster.dirs[0].path().to_path_buf();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let client = Client::connect(
            &brokers,
            ClientConfig {
                trust: TlsTrust::LocalDataDir(trust),
                request_timeout_ms: 20_000,
                ..ClientConfig::default()
            },
        )
        .await
        .expect("client");
        let p = Producer::new(
            client,
            ProducerConfig {
                transactional_id: Some("cross-node".into()),
                linger_ms: 0,
                ..ProducerConfig::default()
            },
        );
        p.init_transactions().await.expect("init");
        for (prefix, commit) in [("first", true), ("aborted", false), ("second", true)] {
            p.begin_transaction().await.expect("begin");
            for i in 0..60 {
                let r = ProducerRecord::new("tx-out", format!("{prefix}-{i:04}")).partition(i % 6);
                drop(p.enqueue(r).await.expect("enqueued"));
            }
            let ended = if commit {
                p.commit_transaction().await
            } else {
                p.abort_transaction().await
            };
            ended.unwrap_or_else(|e| panic!("{prefix}: {e}"));
        }
    });
    // read_committed: both committed transactions whole on every partition (their markers
    // were written on every leader, or the last stable offset would hold reads back), the
    // aborted one nowhere.
    let out = cluster.cli(2).ok(
        &["consume", "tx-out", "--isolation", "read_committed"],
        None,
    );
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = ["first", "second"]
        .iter()
        .flat_map(|p| (0..60).map(move |i| format!("{p}-{i:04}")))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_node_beyond_the_seeds_joins_as_a_broker_takes_replicas_and_rejoins_after_a_kill() {
    let mut cluster = Cluster::start_voters(4, 3, None);
    // Node 4 is not among the seeds: it follows the controller's log as a learner,
    // registers, and shows as a broker (the voters stay 1, 2, 3).
    eventually(30, "node 4 registered as a broker", || {
        let out = cluster.cli(1).run(&["cluster", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let voters = v["controller"]["voters"].as_array()?.len();
        let n4 = v["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node_id"] == 4)?
            .clone();
        (voters == 3 && n4["up"] == true && n4["role"] == "broker").then_some(())
    });
    // It takes changes (forwarded to the controller leader) and gets replicas.
    eventually(20, "a topic created at the broker", || {
        cluster
            .cli(4)
            .run(
                &[
                    "topic",
                    "create",
                    "wide",
                    "--partitions",
                    "8",
                    "--replication-factor",
                    "3",
                ],
                None,
            )
            .status
            .success()
            .then_some(())
    });
    eventually(20, "every partition's leader recorded", || {
        let l = try_leaders(&cluster.cli(4), "wide")?;
        l.iter().all(|(_, epoch)| *epoch >= 1).then_some(())
    });
    let on_4 = placement(&cluster.cli(1), "wide")
        .unwrap()
        .iter()
        .filter(|(_, r)| r.contains(&4))
        .count();
    assert!(
        on_4 >= 4,
        "placement spreads over the broker too: {on_4} of 24 replicas"
    );
    let input: String = (0..100).map(|i| format!("w{i:03}\n")).collect();
    cluster.cli(4).ok(&["produce", "wide"], Some(&input));
    // kill -9 and back: it is a learner in its own log now, so it rejoins by itself and its
    // replicas catch up.
    cluster.kill(4);
    cluster.start_node(4);
    eventually(40, "the broker's replicas back in sync", || {
        let out = cluster.cli(1).run(&["cluster", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let followers = v["followers"].as_array()?;
        let n4_up = v["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["node_id"] == 4 && n["up"] == true);
        (n4_up && followers.len() == 16 && followers.iter().all(|f| f["in_sync"] == true))
            .then_some(())
    });
    assert_eq!(consumed_values(&cluster.cli(4), "wide").len(), 100);
}

/// Batches in `dir`'s segments holding fewer records than the offsets they span (thinned
/// by compaction).
fn thinned_batches(dir: &Path) -> usize {
    let mut thinned = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_none_or(|e| e != "log") {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        let mut pos = 0;
        while pos + 61 <= bytes.len() {
            let field =
                |at: usize| i32::from_be_bytes(bytes[pos + at..pos + at + 4].try_into().unwrap());
            let length = field(8);
            if length <= 0 {
                break;
            }
            if field(57) < field(23) + 1 {
                thinned += 1;
            }
            pos += 12 + length as usize;
        }
    }
    thinned
}

#[test]
fn a_follower_catches_up_across_batches_compaction_thinned() {
    let mut cluster = Cluster::start();
    create_once_registered(
        &cluster.cli(1),
        &[
            "topic",
            "create",
            "latest",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
            "--config",
            "cleanup_policy=compact",
            "--config",
            "segment_bytes=4096",
            "--config",
            "min_cleanable_dirty_ratio=0.01",
        ],
    );
    let leader = eventually(20, "the partition's leader recorded", || {
        let l = try_leaders(&cluster.cli(1), "latest")?;
        (l[0].1 >= 1).then_some(l[0].0 as usize)
    });
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let other = (1..=3).find(|n| *n != leader && *n != follower).unwrap();
    cluster.kill(follower);
    // Ten keys written over and over: compaction on the two replicas up thins the sealed
    // batches (fewer records than offsets, some none).
    let value = "v".repeat(60);
    for round in 0..8 {
        let input: String = (0..50)
            .map(|i| format!("k{}:{round}-{i:02}-{value}\n", i % 10))
            .collect();
        cluster
            .cli(leader)
            .ok(&["produce", "latest", "--key-separator", ":"], Some(&input));
    }
    eventually(30, "compaction removed overwritten records", || {
        let out = cluster.cli(leader).run(&["consume", "latest"], None);
        let n = String::from_utf8_lossy(&out.stdout).lines().count();
        (out.status.success() && n < 400).then_some(())
    });
    // Both replicas up compact on their own: whichever leads the catch-up reads thinned
    // batches.
    for node in [leader, other] {
        let dir = cluster.dirs[node - 1].path().join("topics/latest/0");
        let thinned = eventually(30, "sealed batches thinned by compaction", || {
            let n = thinned_batches(&dir);
            (n > 0).then_some(n)
        });
        eprintln!("node {node}: {thinned} batches thinned by compaction");
    }
    // The leader restarts (its Raft log is then read back from storage, not memory), and
    // the follower returns: it takes the thinned batches as they are stored.
    cluster.kill(leader);
    cluster.start_node(leader);
    cluster.start_node(follower);
    let now_leading = eventually(40, "the returning follower is in sync", || {
        let out = cluster
            .cli(other)
            .run(&["cluster", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let f = v["followers"]
            .as_array()?
            .iter()
            .find(|f| f["node"] == follower && f["in_sync"] == true && f["lag"] == 0)?
            .clone();
        f["leader"].as_i64().map(|l| l as usize)
    });
    // With the third node gone, writes commit only on the leader and the follower.
    let third = (1..=3)
        .find(|n| *n != now_leading && *n != follower)
        .unwrap();
    cluster.kill(third);
    let more: String = (0..10).map(|i| format!("k{i}:last-{i}\n")).collect();
    eventually(30, "writes go on with the follower that caught up", || {
        cluster
            .cli(now_leading)
            .run(&["produce", "latest", "--key-separator", ":"], Some(&more))
            .status
            .success()
            .then_some(())
    });
    let got = consumed_values(&cluster.cli(now_leading), "latest");
    for i in 0..10 {
        assert!(got.contains(&format!("last-{i}")), "{got:?}");
    }
}
