//! The `quiver` command as a user types it, against a real node: every client command, its
//! JSON output, and its errors (broker down, unknown topic, invalid config, bad time).

use std::process::{Command, Output};

use quiver_tests::cli::Cli;
use quiver_tests::node::{free_ports, quiver_binary, Node};

#[test]
fn every_client_command_works_and_says_what_went_wrong() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 2);
    let cli = Cli::for_node(&node);

    assert!(cli
        .ok(
            &[
                "topic",
                "create",
                "orders",
                "--partitions",
                "3",
                "--config",
                "retention_ms=3600000"
            ],
            None
        )
        .contains("created topic orders"));
    let list: serde_json::Value =
        serde_json::from_str(&cli.ok(&["topic", "list", "--json"], None)).unwrap();
    assert_eq!(list[0]["name"], "orders");
    assert_eq!(list[0]["partitions"], 3);
    let desc: serde_json::Value =
        serde_json::from_str(&cli.ok(&["topic", "describe", "orders", "--json"], None)).unwrap();
    assert_eq!(desc["configs"]["retention_ms"], "3600000");
    assert_eq!(desc["partitions"].as_array().unwrap().len(), 3);
    // A single node leads every partition, as its only replica, at epoch 0.
    assert_eq!(desc["partitions"][1]["leader"], 0);
    assert_eq!(desc["partitions"][1]["replicas"], serde_json::json!([0]));
    assert_eq!(desc["partitions"][1]["leader_epoch"], 0);
    assert!(cli
        .ok(&["topic", "describe", "orders"], None)
        .contains("PARTITION"));
    cli.ok(
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention_ms=7200000",
        ],
        None,
    );
    let desc: serde_json::Value =
        serde_json::from_str(&cli.ok(&["topic", "describe", "orders", "--json"], None)).unwrap();
    assert_eq!(desc["configs"]["retention_ms"], "7200000");

    // Produce: keys split at ':', offsets printed in input order, a summary on stderr.
    let input: String = (0..30)
        .map(|i| format!("user-{}:order-{i}\n", i % 4))
        .collect();
    let out = cli.run(
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--print-offsets",
        ],
        Some(&input),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offsets: Vec<(i32, i64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets.len(), 30);
    assert!(String::from_utf8_lossy(&out.stderr).contains("produced 30 records"));
    let same_key: Vec<i32> = offsets.iter().step_by(4).map(|o| o.0).collect();
    assert!(
        same_key.windows(2).all(|w| w[0] == w[1]),
        "one key, one partition"
    );

    // Consume: everything from the beginning, then exit at the end of the log.
    let values = cli.ok(&["consume", "orders", "--from-beginning"], None);
    let mut got: Vec<&str> = values.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..30).map(|i| format!("order-{i}")).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(
        cli.ok(&["consume", "orders", "-n", "2"], None)
            .lines()
            .count(),
        2
    );
    let (p, o) = offsets[5];
    let json = cli.ok(
        &[
            "consume",
            "orders",
            "--partition",
            &p.to_string(),
            "--offset",
            &o.to_string(),
            "-n",
            "1",
            "--format",
            "json",
        ],
        None,
    );
    let rec: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(rec["value"], "order-5");
    assert_eq!(rec["key"], "user-1");
    assert!(
        cli.ok(
            &["consume", "orders", "--from-time", "2999-01-01T00:00:00Z"],
            None
        )
        .is_empty(),
        "nothing that late"
    );
    assert_eq!(
        cli.ok(
            &["consume", "orders", "--from-time", "2000-01-01T00:00:00Z"],
            None
        )
        .lines()
        .count(),
        30
    );
    assert!(cli
        .ok(&["consume", "orders", "-n", "1", "--format", "text"], None)
        .contains("@"));

    let offsets_json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["offsets", "orders", "--json"], None)).unwrap();
    let total: i64 = offsets_json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latest"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 30);
    let info: serde_json::Value =
        serde_json::from_str(&cli.ok(&["cluster", "info", "--json"], None)).unwrap();
    assert_eq!(info["shards"], 2);
    assert_eq!(info["topics"], 1);

    // Errors a user makes.
    assert!(cli
        .fails(&["produce", "nope"], Some("x\n"))
        .contains("does not exist"));
    assert!(cli
        .fails(&["consume", "nope"], None)
        .contains("does not exist"));
    assert!(cli
        .fails(
            &["topic", "create", "bad", "--config", "retention_mss=1"],
            None
        )
        .contains("retention_mss"));
    assert!(cli
        .fails(&["consume", "orders", "--from-time", "yesterday"], None)
        .contains("RFC 3339"));
    assert!(cli
        .fails(&["topic", "create", "orders"], None)
        .contains("already exists"));

    assert!(cli
        .ok(&["topic", "delete", "orders"], None)
        .contains("deleted"));
    assert!(cli.ok(&["topic", "list"], None).lines().count() <= 1);
}

#[test]
fn a_broker_that_is_down_gets_a_clear_message_and_a_failure_status() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        broker: format!("127.0.0.1:{}", free_ports(1)),
        data_dir: dir.path().display().to_string(),
    };
    let err = cli.fails(&["topic", "list"], None);
    assert!(err.contains("quiver serve"), "{err}");
}

#[test]
fn serve_refuses_bad_configuration_with_the_reason() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = dir.path().join("quiver.toml");
    std::fs::write(&config, "data_dirr = \"/tmp/x\"\n").unwrap();
    let out = Command::new(quiver_binary())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("data_dirr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A port in use is explained before anything starts.
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = Command::new(quiver_binary())
        .args([
            "serve",
            "--shards",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&port.to_string()) && err.contains("--listen"),
        "{err}"
    );

    // More cores than the machine has.
    let out = Command::new(quiver_binary())
        .args(["serve", "--cores", "0-4095", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CPUs"));
}

#[test]
fn quiver_bench_runs_a_workload_with_one_command() {
    let (_dir, out, run, report) = run_tiny_bench(&["--embedded"], "quiver");
    for metric in ["publish_latency", "publish_delay", "end_to_end"] {
        assert!(
            report["latency_us"][metric]["count"].as_u64().unwrap() > 500,
            "{metric}: {}",
            report["latency_us"][metric]
        );
        assert!(out.join(format!("tiny-quiver-{metric}.hgrm")).exists());
    }
    assert!(std::fs::read_to_string(out.join("tiny-quiver.svg"))
        .unwrap()
        .starts_with("<svg"));
    assert!(String::from_utf8_lossy(&run.stdout).contains("end_to_end"));
    // The machine's hiccups over the measured window, one meter per CPU.
    let cpus = report["hiccups"]["per_cpu"].as_array().unwrap();
    assert!(!cpus.is_empty());
    for c in cpus {
        assert!(c["samples"].as_u64().unwrap() > 100, "{c}");
    }
    assert!(String::from_utf8_lossy(&run.stdout).contains("platform hiccups"));
    // And the load generator's own event-loop lag over the same window.
    assert!(report["event_loop_lag"]["samples"].as_u64().unwrap() > 100);
    assert!(String::from_utf8_lossy(&run.stdout).contains("load generator's own lag"));
}

/// `quiver bench run` with `args` of a workload of 2 s at 500 msg/s over 2 partitions (after
/// 1 s of warm-up), in a fresh directory: the directory, the results folder, the command's
/// output and the report of `system`.
fn run_tiny_bench(
    args: &[&str],
    system: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Output,
    serde_json::Value,
) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let workload = dir.path().join("tiny.toml");
    std::fs::write(
        &workload,
        "name = \"tiny\"\ntopics = 1\npartitions_per_topic = 2\nmessage_size = 256\nproducers_per_topic = 1\nsubscriptions_per_topic = 1\nconsumers_per_subscription = 1\nproducer_rate = 500\nwarmup_duration_s = 1\ntest_duration_s = 2\n",
    )
    .unwrap();
    let out = dir.path().join("results");
    let mut all = vec!["bench", "run", workload.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let run = quiver_succeeds_in(dir.path(), &all);
    let report_path = out.join(format!("tiny-{system}.json"));
    let report = serde_json::from_slice(&std::fs::read(report_path).unwrap()).unwrap();
    (dir, out, run, report)
}

#[test]
fn quiver_bench_runs_the_durable_echo_with_one_command() {
    let (dir, _out, run, report) = run_tiny_bench(&["--system", "durable-echo"], "durable-echo");
    assert_eq!(report["system"], "durable-echo");
    assert_eq!(report["run"]["embedded"], true);
    assert_eq!(report["errors"], 0);
    let published = report["latency_us"]["publish_latency"]["count"]
        .as_u64()
        .unwrap();
    let consumed = report["latency_us"]["end_to_end"]["count"]
        .as_u64()
        .unwrap();
    assert_eq!(published, 1000, "2 s at 500 msg/s");
    assert_eq!(consumed, published, "every message came back once");
    assert!(String::from_utf8_lossy(&run.stderr).contains("durable echo at 127.0.0.1:"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("quiver-bench-echo-")
        })
        .collect();
    assert!(
        left.is_empty(),
        "the server's temporary directory is removed"
    );
}

#[test]
fn quiver_bench_floor_measures_echo_disk_and_the_machine_in_one_command() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = dir.path().join("results");
    let run = quiver_succeeds_in(
        dir.path(),
        &[
            "bench",
            "floor",
            "--samples",
            "300",
            "--hiccup-s",
            "1",
            "--busy-s",
            "1",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("floor.json")).unwrap()).unwrap();
    let echo_p99 = report["quic_echo"]["p99_us"].as_u64().unwrap();
    let disk_p99 = report["write_fdatasync_4k"]["p99_us"].as_u64().unwrap();
    assert_eq!(report["quic_echo"]["count"].as_u64(), Some(300));
    assert_eq!(report["write_fdatasync_4k"]["count"].as_u64(), Some(300));
    assert!(echo_p99 > 0 && disk_p99 > 0, "{report}");
    assert_eq!(report["floor_p99_us"].as_u64(), Some(echo_p99 + disk_p99));
    assert!(report["machine"]["kernel"].as_str().is_some());
    // Every CPU spun for the second asked, and what it lost is split in two.
    let cpus = report["busy_cpus"]["per_cpu"].as_array().unwrap();
    assert_eq!(
        cpus.len() as u64,
        report["machine"]["cpus"].as_u64().unwrap()
    );
    for c in cpus {
        let lost = c["lost_ms_per_s"].as_f64().unwrap();
        let parts = c["other_threads_ms_per_s"].as_f64().unwrap()
            + c["unseen_by_guest_ms_per_s"].as_f64().unwrap();
        assert!((0.0..=1000.0).contains(&lost), "{c}");
        assert!((parts - lost).abs() < 0.05, "{c}");
    }
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("floor p99"), "{stdout}");
    assert!(stdout.contains("what busy CPUs lose"), "{stdout}");
}

/// Runs `quiver ARGS` in `dir` without a broker; fails the test with its stderr unless it
/// succeeds.
fn quiver_succeeds_in(dir: &std::path::Path, args: &[&str]) -> Output {
    let run = Command::new(quiver_binary())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "quiver {args:?} failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    run
}
