//! The benchmark harness's Quiver driver against a real node.

use quiver_bench::latency::driver::Driver;
use quiver_bench::latency::quiver::QuiverDriver;
use quiver_bench::latency::workload::Workload;
use quiver_client::Admin;
use quiver_tests::node::Node;

/// A max-rate search runs a dozen steps against one node; each step's topic goes when the
/// next one is prepared, so the node's disk holds one step's data, not all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preparing_a_run_deletes_the_previous_runs_topics() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = Node::start(dir.path(), 1);
    let client = node.client(10_000).await;
    let driver = QuiverDriver::new(client.clone());
    let workload = Workload::from_toml(
        "name = \"steps\"\ntopics = 1\npartitions_per_topic = 2\nmessage_size = 64\nproducers_per_topic = 1\nsubscriptions_per_topic = 1\nconsumers_per_subscription = 1\nproducer_rate = 0\nwarmup_duration_s = 0\ntest_duration_s = 1\n",
    )
    .unwrap();
    let first = driver.prepare(&workload).await.unwrap();
    let second = driver.prepare(&workload).await.unwrap();
    assert_ne!(first, second);
    let names: Vec<String> = Admin::new(client)
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, second, "only the latest run's topics are left");
}
