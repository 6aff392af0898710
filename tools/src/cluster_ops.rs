//! `quiver topic alter-replicas`, `quiver cluster transfer-leadership`, `quiver cluster
//! decommission`: each asks the cluster for the change, then (unless `--no-wait`) waits
//! until the metadata shows it done, printing where it stands.

use std::time::{Duration, Instant};

use quiver_client::Admin;
use serde_json::json;

use crate::connect::ClientArgs;

/// How often the metadata is read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Parses `1,2,3` into node ids.
pub fn parse_nodes(list: &str) -> Result<Vec<i32>, String> {
    list.split(',')
        .map(|s| {
            s.trim()
                .parse::<i32>()
                .map_err(|_| format!("{s:?} is not a node id (expected e.g. 1,2,3)"))
        })
        .collect()
}

/// Waits until `done` holds for the partition's (leader, replicas), or `timeout` passes.
async fn wait_for(
    admin: &Admin,
    topic: &str,
    partition: i32,
    timeout: Duration,
    done: impl Fn(i32, &[i32]) -> bool,
) -> Result<(i32, Vec<i32>), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let t = admin
            .describe_topic(topic)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(p) = t.partitions.iter().find(|p| p.partition == partition) {
            if done(p.leader, &p.replicas) {
                return Ok((p.leader, p.replicas.clone()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{topic}/{partition} is not there yet after {} s (leader {}, replicas {:?}); it goes on in the background: see `quiver cluster status`",
                    timeout.as_secs(),
                    p.leader,
                    p.replicas
                ));
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn alter_replicas(
    args: &ClientArgs,
    topic: &str,
    partition: i32,
    replicas: &str,
    wait: Option<Duration>,
) -> Result<(), String> {
    let replicas = parse_nodes(replicas)?;
    let admin = Admin::new(args.connect().await?);
    admin
        .alter_replicas(topic, partition, &replicas)
        .await
        .map_err(|e| e.to_string())?;
    let Some(timeout) = wait else {
        println!("{topic}/{partition} is moving to replicas {replicas:?}");
        return Ok(());
    };
    let (leader, now) = wait_for(&admin, topic, partition, timeout, |_, r| r == replicas).await?;
    if args.json {
        println!(
            "{}",
            json!({"topic": topic, "partition": partition, "replicas": now, "leader": leader})
        );
    } else {
        println!("{topic}/{partition} now has replicas {now:?} (leader {leader})");
    }
    Ok(())
}

pub async fn transfer_leadership(
    args: &ClientArgs,
    topic: &str,
    partition: i32,
    to: i32,
    wait: Option<Duration>,
) -> Result<(), String> {
    let admin = Admin::new(args.connect().await?);
    admin
        .transfer_leadership(topic, partition, to)
        .await
        .map_err(|e| e.to_string())?;
    let Some(timeout) = wait else {
        println!("node {to} is now the preferred leader of {topic}/{partition}; leadership follows once it holds the whole log");
        return Ok(());
    };
    let (leader, _) = wait_for(&admin, topic, partition, timeout, |l, _| l == to).await?;
    if args.json {
        println!(
            "{}",
            json!({"topic": topic, "partition": partition, "leader": leader})
        );
    } else {
        println!("node {leader} leads {topic}/{partition}");
    }
    Ok(())
}

pub async fn decommission(
    args: &ClientArgs,
    node: i32,
    wait: Option<Duration>,
) -> Result<(), String> {
    let admin = Admin::new(args.connect().await?);
    let moving = admin
        .decommission_node(node)
        .await
        .map_err(|e| e.to_string())?;
    if !args.json {
        println!("node {node} is decommissioned: {moving} partition(s) moving off it");
    }
    let Some(timeout) = wait else { return Ok(()) };
    let deadline = Instant::now() + timeout;
    let mut last = usize::MAX;
    loop {
        let held: Vec<String> = admin
            .list_topics()
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.replicas.contains(&node))
                    .map(move |p| format!("{}/{}", t.name, p.partition))
            })
            .collect();
        if held.is_empty() {
            if args.json {
                println!("{}", json!({"decommissioned": node, "replicas_left": 0}));
            } else {
                println!("node {node} holds no replica any more: it may be stopped");
            }
            return Ok(());
        }
        if held.len() != last && !args.json {
            println!("  {} partition(s) still on node {node}", held.len());
            last = held.len();
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {node} still holds {} replica(s) after {} s ({}); the moves go on in the background: see `quiver cluster status`",
                held.len(),
                timeout.as_secs(),
                held.join(" ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
