//! What a new user runs into on a first try (issue 20), on real processes: two nodes on one
//! data directory, a data directory started as another node, a producer whose node dies under it, `consume --json`, keyless records
//! over several partitions, an offset past the end, and no node at all.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quiver_tests::cli::Cli;
use quiver_tests::node::{free_ports, quiver_binary, Node};

/// Waits for `child` to exit, at most `limit`; kills it and fails the test after that.
fn wait_at_most(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the command did not exit within {limit:?}");
        }
        // No event to block on with a timeout for a child's exit: a short pause between checks.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `quiver serve` on `dir` with `extra` flags, expecting it to refuse: its exit
/// status and what it printed on stderr.
fn refused_serve(dir: &std::path::Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(quiver_binary())
        .args(["serve", "--shards", "1", "--log-level", "warn"])
        .args(extra)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_ports(1)))
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_at_most(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused_and_kill_9_leaves_no_stale_lock() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let first = Node::start(dir.path(), 1);
    let cli = Cli::for_node(&first);
    cli.ok(&["topic", "create", "events", "--partitions", "2"], None);
    cli.ok(&["produce", "events"], Some("a\nb\nc\n"));

    let (status, err) = refused_serve(dir.path(), &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    assert!(
        err.contains(&canonical.display().to_string()),
        "names the directory: {err}"
    );
    assert!(
        err.contains(&format!("PID {}", first.pid())),
        "names the holder: {err}"
    );

    // kill -9: the kernel drops the lock with the process; the next node starts and has the
    // first one's acknowledged records.
    first.kill();
    let again = Node::start(dir.path(), 1);
    let values = Cli::for_node(&again).ok(&["consume", "events"], None);
    let mut got: Vec<&str> = values.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["a", "b", "c"]);
}

#[test]
fn a_data_directory_started_as_another_node_is_refused_and_left_intact() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let first = Node::start(dir.path(), 1);
    Cli::for_node(&first).ok(&["topic", "create", "kept", "--partitions", "1"], None);
    first.kill();
    let (status, err) = refused_serve(dir.path(), &["--node-id", "3"]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("belongs to node 0") && err.contains("--node-id 0"),
        "says whose it is and what to do: {err}"
    );
    // The directory is untouched: node 0 starts on it and has its topic.
    let again = Node::start(dir.path(), 1);
    let topics = Cli::for_node(&again).ok(&["topic", "list"], None);
    assert!(topics.contains("kept"), "{topics}");
}

#[test]
fn produce_stops_reading_when_its_node_dies_and_says_exactly_what_was_acknowledged() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let cli = Cli::for_node(&node);
    cli.ok(&["topic", "create", "dur", "--partitions", "2"], None);

    const DELIVERY_TIMEOUT_MS: u64 = 4_000;
    let mut produce = Command::new(quiver_binary())
        .args(["produce", "dur", "--acks", "all", "--print-offsets"])
        .args(["--delivery-timeout-ms", &DELIVERY_TIMEOUT_MS.to_string()])
        .args(["--request-timeout-ms", "2000"])
        .args(["--broker", &cli.broker, "--node-data-dir", &cli.data_dir])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `seq 1 2000000 |`: bounded, and stopped by the broken pipe once produce exits.
    let mut stdin = produce.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 1..=2_000_000u64 {
            if writeln!(stdin, "{i}").is_err() {
                return;
            }
        }
    });
    // Kill the node once records are being acknowledged (an event, not a sleep).
    let mut stdout = BufReader::new(produce.stdout.take().unwrap());
    let mut printed = Vec::new();
    let mut line = String::new();
    while printed.len() < 2_000 {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "produce ended early"
        );
        printed.push(line.trim_end().to_string());
    }
    node.kill();
    let killed = Instant::now();
    let reader = std::thread::spawn(move || {
        let rest: Vec<String> = stdout.lines().map_while(Result::ok).collect();
        rest
    });
    let status = wait_at_most(&mut produce, Duration::from_secs(60));
    let exited_after = killed.elapsed();
    printed.extend(reader.join().unwrap());
    writer.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut produce.stderr.take().unwrap(), &mut err).unwrap();

    assert!(!status.success(), "non-zero exit: {err}");
    assert!(
        exited_after < Duration::from_millis(DELIVERY_TIMEOUT_MS) + Duration::from_secs(10),
        "exits within the delivery timeout plus a margin, not {exited_after:?}: {err}"
    );
    // "A of R records read were acknowledged, F were not; stdin was not read past line R"
    let summary = err
        .lines()
        .find(|l| l.contains("records read were acknowledged"))
        .unwrap_or_else(|| panic!("no summary: {err}"));
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (acked, read, failed) = (numbers[0], numbers[1], numbers[2]);
    assert!(failed > 0, "{summary}");
    assert_eq!(acked + failed, read, "{summary}");
    assert!(read < 2_000_000, "stopped reading: {summary}");
    assert_eq!(printed.len() as u64, read, "one line per record read");
    let acked_lines: Vec<(u64, i32, i64)> = printed
        .iter()
        .enumerate()
        .filter(|(_, l)| *l != "- -")
        .map(|(i, l)| {
            let mut it = l.split_whitespace();
            let p = it.next().unwrap().parse().unwrap();
            let o = it.next().unwrap().parse().unwrap();
            (i as u64 + 1, p, o)
        })
        .collect();
    assert_eq!(acked_lines.len() as u64, acked, "{summary}");

    // Every line it said was acknowledged is in the log, where it said.
    let again = Node::start(dir.path(), 2);
    let out = Cli::for_node(&again).ok(&["consume", "dur", "--format", "json"], None);
    let stored: std::collections::HashMap<(i64, i64), String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                (
                    v["partition"].as_i64().unwrap(),
                    v["offset"].as_i64().unwrap(),
                ),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (line, p, o) in acked_lines {
        assert_eq!(
            stored.get(&(p as i64, o)),
            Some(&line.to_string()),
            "line {line} acknowledged at {p}/{o}"
        );
    }
}

#[test]
fn keyless_records_spread_over_every_partition_and_consume_json_means_json() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let cli = Cli::for_node(&node);
    cli.ok(&["topic", "create", "spread", "--partitions", "4"], None);
    let input: String = (0..20_000).map(|i| format!("{i}\n")).collect();
    let out = cli.ok(&["produce", "spread", "--print-offsets"], Some(&input));
    let mut per_partition = [0u64; 4];
    for l in out.lines() {
        let p: usize = l.split_whitespace().next().unwrap().parse().unwrap();
        per_partition[p] += 1;
    }
    assert!(
        per_partition.iter().all(|n| *n > 0),
        "every partition gets a share: {per_partition:?}"
    );

    let json = cli.ok(
        &["consume", "spread", "--partition", "0", "--json", "-n", "3"],
        None,
    );
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 3);
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per record");
        assert_eq!(v["topic"], "spread");
        assert_eq!(v["partition"], 0);
    }
    let err = cli.fails(
        &["consume", "spread", "--json", "--format", "text", "-n", "1"],
        None,
    );
    assert!(err.contains("--json") && err.contains("--format"), "{err}");
}

#[test]
fn an_offset_past_the_end_is_reported_or_waited_for_and_a_missing_node_fails_at_once() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 1);
    let cli = Cli::for_node(&node);
    cli.ok(&["topic", "create", "events", "--partitions", "1"], None);
    cli.ok(&["produce", "events"], Some("login\nclick\nlogout\n"));

    let err = cli.fails(&["consume", "events", "--offset", "999"], None);
    assert!(
        err.contains("999") && err.contains("ends at 3") && err.contains("--follow"),
        "{err}"
    );
    // The end itself is a valid start: nothing to print, no error.
    assert_eq!(cli.ok(&["consume", "events", "--offset", "3"], None), "");

    // --follow waits for the offset: it prints the record at 5, not those before it.
    let mut follow = Command::new(quiver_binary())
        .args(["consume", "events", "--offset", "5", "--follow", "-n", "1"])
        .args(["--broker", &cli.broker, "--node-data-dir", &cli.data_dir])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Records 3 and 4 may land before or after the consumer starts: either way it skips them.
    cli.ok(&["produce", "events"], Some("r3\nr4\nr5\nr6\n"));
    let status = wait_at_most(&mut follow, Duration::from_secs(60));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut follow.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success());
    assert_eq!(out, "r5\n");

    // No node: the port is closed, the OS says so, and the CLI says so at once.
    let nobody = Cli {
        broker: format!("127.0.0.1:{}", free_ports(1)),
        data_dir: cli.data_dir.clone(),
    };
    let err = nobody.fails(&["topic", "list"], None);
    assert!(err.contains("nothing listens"), "{err}");
}

#[test]
fn a_node_upgraded_from_metadata_json_carries_its_topics_into_the_controller_log() {
    use quiver_broker::metadata::{Metadata, TopicMeta};
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // What a node of the previous version left: metadata.json, no controller log.
    let mut legacy = Metadata {
        version: 7,
        cluster_id: "quiver-legacy-cluster".into(),
        ..Metadata::default()
    };
    legacy
        .topics
        .insert("old-orders".into(), TopicMeta::on_shards(0, &[0, 1, 0]));
    std::fs::write(dir.path().join("metadata.json"), legacy.to_json()).unwrap();

    let node = Node::start(dir.path(), 2);
    let cli = Cli::for_node(&node);
    let info: serde_json::Value =
        serde_json::from_str(&cli.ok(&["cluster", "info", "--json"], None)).unwrap();
    assert_eq!(
        info["cluster_id"], "quiver-legacy-cluster",
        "the same cluster id"
    );
    let desc: serde_json::Value =
        serde_json::from_str(&cli.ok(&["topic", "describe", "old-orders", "--json"], None))
            .unwrap();
    assert_eq!(desc["partitions"].as_array().unwrap().len(), 3);
    assert!(!dir.path().join("metadata.json").exists());
    assert!(dir.path().join("metadata.json.migrated").exists());
    assert!(dir.path().join("controller.log").exists());
    // It writes through the carried-over partitions and keeps everything across a restart.
    cli.ok(
        &["produce", "old-orders", "--partition", "1"],
        Some("a\nb\n"),
    );
    let base = node.base_port;
    assert!(node.terminate().success(), "a clean stop");
    let node = Node::start_on(dir.path(), 2, base);
    let cli = Cli::for_node(&node);
    assert_eq!(cli.ok(&["consume", "old-orders"], None), "a\nb\n");
    let info: serde_json::Value =
        serde_json::from_str(&cli.ok(&["cluster", "info", "--json"], None)).unwrap();
    assert_eq!(info["cluster_id"], "quiver-legacy-cluster");
}
