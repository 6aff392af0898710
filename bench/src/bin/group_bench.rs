//! Consumer groups on a real node (`quiver serve --cores 0`, one shard: one coordinator
//! shard), in one run:
//!
//! 1. Settle time of a group over `--partitions` partitions (`--heartbeat-ms`,
//!    `--session-ms`): three members run, a fourth joins — time until every member owns its
//!    even share and nothing is being revoked; then one member vanishes without leaving (its
//!    task is dropped, as a kill -9 looks to the coordinator) — time until the three survivors
//!    own everything. `--rounds` of each; p50 / p99, and in heartbeat intervals.
//! 2. Offset commit rate of the coordinator shard: `--committers` concurrent committers, each
//!    in its own group (spread over the coordinator partitions), committing one partition per
//!    request for `--commit-secs`; then ten partitions per request.
//!
//! ```text
//! cargo build --release -p quiver -p quiver-bench
//! target/release/group_bench [--rounds 20] [--out perf/results/groups.json]
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use quiver_bench::harness::{fresh_broker, local_client, write_report};
use quiver_client::{
    Admin, Client, GroupConsumer, GroupConsumerConfig, Subscription, TopicPartition,
};
use serde_json::json;
use tokio::task::{JoinHandle, LocalSet};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    #[arg(long, default_value_t = 100)]
    partitions: i32,
    #[arg(long, default_value_t = 500)]
    heartbeat_ms: u32,
    #[arg(long, default_value_t = 3_000)]
    session_ms: u32,
    #[arg(long, default_value_t = 64)]
    committers: usize,
    #[arg(long, default_value_t = 5)]
    commit_secs: u64,
    #[arg(long, default_value = "perf/results/groups.json")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench-groups")]
    dir: PathBuf,
}

const TOPIC: &str = "events";
const GROUP: &str = "settle";

fn pct(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

async fn wait_settled(admin: &Admin, n: usize, partitions: i32) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(d) = admin.describe_group(GROUP).await {
            if d.is_settled(n, partitions as usize) {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the group did not settle in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A member consuming in its own task until it is aborted.
fn member(client: &Client) -> JoinHandle<()> {
    let client = client.clone();
    tokio::task::spawn_local(async move {
        let mut m = GroupConsumer::subscribe(
            client,
            GROUP,
            Subscription::Topics(vec![TOPIC.into()]),
            GroupConsumerConfig::default(),
        )
        .await
        .expect("subscribe");
        loop {
            if m.next_event().await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
}

async fn commit_rate(client: &Client, committers: usize, per_request: i32, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..committers)
        .map(|c| {
            let (admin, done) = (Admin::new(client.clone()), done.clone());
            tokio::task::spawn_local(async move {
                let group = format!("committer-{c}");
                let mut offset = 0;
                while Instant::now() < stop {
                    offset += 1;
                    let offsets: Vec<_> = (0..per_request)
                        .map(|p| (TopicPartition::new(TOPIC, p), offset))
                        .collect();
                    admin
                        .set_committed_offsets(&group, &offsets)
                        .await
                        .expect("commit");
                    done.fetch_add(per_request as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        t.await.expect("committer");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args = Args::parse();
    let broker = fresh_broker(&args.dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = LocalSet::new().block_on(&rt, async {
        let client = local_client(&broker, &args.dir).await;
        let admin = Admin::new(client.clone());
        admin.create_topic(TOPIC, args.partitions, &[]).await.expect("topic");
        let (hb, session) = (args.heartbeat_ms.to_string(), args.session_ms.to_string());
        admin
            .alter_group_config(GROUP, &[("heartbeat_interval_ms", &hb), ("session_timeout_ms", &session)])
            .await
            .expect("group config");

        let mut members: Vec<JoinHandle<()>> = (0..3).map(|_| member(&client)).collect();
        wait_settled(&admin, 3, args.partitions).await;
        let (mut joins, mut kills) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            members.push(member(&client));
            let join = wait_settled(&admin, 4, args.partitions).await;
            let victim = members.remove(round % members.len());
            victim.abort();
            let kill = wait_settled(&admin, 3, args.partitions).await;
            println!(
                "round {round}: join settled in {} ms, kill in {} ms",
                join.as_millis(),
                kill.as_millis()
            );
            joins.push(join.as_secs_f64() * 1e3);
            kills.push(kill.as_secs_f64() * 1e3);
        }
        for m in members {
            m.abort();
        }
        let hb = f64::from(args.heartbeat_ms);
        let one = commit_rate(&client, args.committers, 1, args.commit_secs).await;
        let ten = commit_rate(&client, args.committers, 10, args.commit_secs).await;
        println!("commits: {one:.0}/s one partition per request, {ten:.0} partitions/s ten per request");
        json!({
            "bench": "groups",
            "partitions": args.partitions, "members": 4, "rounds": args.rounds,
            "heartbeat_interval_ms": args.heartbeat_ms, "session_timeout_ms": args.session_ms,
            "join_settle_ms": {"p50": pct(&joins, 0.5), "p99": pct(&joins, 0.99)},
            "join_settle_heartbeats": {"p50": pct(&joins, 0.5) / hb, "p99": pct(&joins, 0.99) / hb},
            "kill_settle_ms": {"p50": pct(&kills, 0.5), "p99": pct(&kills, 0.99)},
            "kill_settle_after_session_ms": {"p50": pct(&kills, 0.5) - f64::from(args.session_ms), "p99": pct(&kills, 0.99) - f64::from(args.session_ms)},
            "commit_committers": args.committers,
            "commits_per_s_one_partition_per_request": one,
            "partitions_committed_per_s_ten_per_request": ten,
        })
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    write_report(&args.out, &report);
    drop(broker);
    let _ = std::fs::remove_dir_all(&args.dir);
}
