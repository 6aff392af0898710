//! `quiver cluster status`: every registered node, up or down as this machine reaches it, the
//! controller leader and voters, partitions led per node, the partitions whose leader is down
//! (offline) and those with a replica on a node that is down or behind (under-replicated),
//! and each follower's lag as its leader tracks it (every node up is asked for the
//! partitions it leads). A replicated partition's leader moves on by itself (within an
//! election timeout): offline then means no replica could take over.

use std::collections::BTreeMap;
use std::time::Duration;

use quiver_client::Admin;
use serde_json::json;

use crate::connect::{print_table, ClientArgs};

/// How long a node may take to answer before it is reported down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most followers listed in the lag table (`--json` lists every one).
const MAX_LAG_ROWS: usize = 20;

/// The controller and nodes as one node reports them (its handshake).
struct View {
    node_id: i32,
    cluster_id: String,
    nodes: Vec<(i32, String)>,
    controller_leader: Option<i32>,
    controller_term: u64,
    voters: Vec<i32>,
}

async fn view(args: &ClientArgs) -> Result<View, String> {
    let client = args.connect().await?;
    let resp = client
        .bootstrap_request(|id| quiver_schema::requests::handshake(id, "quiver-cli"))
        .await
        .map_err(|e| e.to_string())?;
    let h = resp
        .envelope()
        .body_as_handshake_response()
        .ok_or("the broker sent no handshake body")?;
    Ok(View {
        node_id: h.node_id(),
        cluster_id: h.cluster_id().unwrap_or_default().to_string(),
        nodes: h
            .nodes()
            .into_iter()
            .flatten()
            .map(|n| (n.node_id(), n.address().unwrap_or_default().to_string()))
            .collect(),
        controller_leader: (h.controller_leader() >= 0).then_some(h.controller_leader()),
        controller_term: h.controller_term(),
        voters: h.controller_voters().into_iter().flatten().collect(),
    })
}

/// `args` aimed at the one node at `address`.
fn at(args: &ClientArgs, address: &str) -> ClientArgs {
    let mut probe = args.clone();
    probe.broker = address.to_string();
    probe
}

/// One follower of a partition, as its leader reported it.
struct Follower {
    partition: String,
    leader: i32,
    node: i32,
    lag: u64,
    learner: bool,
    reachable: bool,
    in_sync: bool,
}

/// The followers of the partitions the node at `address` leads (empty if it does not answer).
async fn followers_of(args: &ClientArgs, leader: i32, address: &str) -> Vec<Follower> {
    let probe = at(args, address);
    let asked = async {
        let client = probe.connect().await.ok()?;
        Admin::new(client).describe_replication().await.ok()
    };
    let parts = tokio::time::timeout(PROBE_TIMEOUT, asked)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut out = Vec::new();
    for p in parts {
        for f in p.followers {
            out.push(Follower {
                partition: format!("{}/{}", p.topic, p.partition),
                leader,
                node: f.node,
                lag: p.log_end_offset.saturating_sub(f.log_end_offset),
                learner: f.learner,
                reachable: f.reachable,
                // In sync: it answers, votes, and holds what a quorum committed.
                in_sync: f.reachable && !f.learner && f.log_end_offset >= p.high_watermark,
            });
        }
    }
    out
}

/// Whether the node at `address` answers a handshake within [`PROBE_TIMEOUT`].
async fn is_up(args: &ClientArgs, address: &str) -> bool {
    let probe = at(args, address);
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, view(&probe)).await,
        Ok(Ok(_))
    )
}

pub async fn status(args: &ClientArgs) -> Result<(), String> {
    let here = view(args).await?;
    let client = args.connect().await?;
    let topics = Admin::new(client)
        .list_topics()
        .await
        .map_err(|e| e.to_string())?;
    let mut up = BTreeMap::new();
    for (id, address) in &here.nodes {
        let alive = *id == here.node_id || is_up(args, address).await;
        up.insert(*id, alive);
    }
    let mut followers = Vec::new();
    for (id, address) in &here.nodes {
        if up.get(id) == Some(&true) {
            followers.extend(followers_of(args, *id, address).await);
        }
    }
    let mut leads: BTreeMap<i32, usize> = BTreeMap::new();
    let mut partitions = 0usize;
    let mut offline = Vec::new();
    let mut under_replicated = Vec::new();
    for t in &topics {
        for p in &t.partitions {
            partitions += 1;
            *leads.entry(p.leader).or_default() += 1;
            let name = format!("{}/{}", t.name, p.partition);
            let behind = followers.iter().any(|f| f.partition == name && !f.in_sync);
            if up.get(&p.leader) == Some(&false) {
                offline.push(name);
            } else if behind || p.replicas.iter().any(|r| up.get(r) == Some(&false)) {
                under_replicated.push(name);
            }
        }
    }
    let role = |id: i32| {
        if here.controller_leader == Some(id) {
            "controller leader"
        } else if here.voters.contains(&id) {
            "controller voter"
        } else {
            // Beyond the voters: follows the controller's log as a learner.
            "broker"
        }
    };
    if args.json {
        let nodes: Vec<serde_json::Value> = here
            .nodes
            .iter()
            .map(|(id, address)| {
                json!({"node_id": id, "address": address, "up": up.get(id).copied().unwrap_or(false),
                       "role": role(*id), "leaders": leads.get(id).copied().unwrap_or(0)})
            })
            .collect();
        println!(
            "{}",
            json!({
                "cluster_id": here.cluster_id,
                "asked_node": here.node_id,
                "controller": {"leader": here.controller_leader, "term": here.controller_term, "voters": here.voters},
                "nodes": nodes,
                "partitions": partitions,
                "offline_partitions": offline,
                "under_replicated_partitions": under_replicated,
                "followers": followers.iter().map(|f| json!({
                    "partition": f.partition, "leader": f.leader, "node": f.node, "lag": f.lag,
                    "learner": f.learner, "reachable": f.reachable, "in_sync": f.in_sync,
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    let mut rows = vec![vec![
        "NODE".to_string(),
        "ADDRESS".into(),
        "STATE".into(),
        "ROLE".into(),
        "LEADERS".into(),
    ]];
    for (id, address) in &here.nodes {
        rows.push(vec![
            id.to_string(),
            address.clone(),
            if up.get(id) == Some(&true) {
                "up"
            } else {
                "down"
            }
            .into(),
            role(*id).into(),
            leads.get(id).copied().unwrap_or(0).to_string(),
        ]);
    }
    print_table(&rows);
    println!();
    match here.controller_leader {
        Some(l) => println!(
            "controller  node {l} leads (term {}), voters {:?}",
            here.controller_term, here.voters
        ),
        None => println!(
            "controller  no leader known to node {} (voters {:?}): a majority of voters must be up",
            here.node_id, here.voters
        ),
    }
    println!(
        "partitions  {partitions}, offline {} (their leader is down){}",
        offline.len(),
        if offline.is_empty() {
            String::new()
        } else {
            format!(": {}", offline.join(" "))
        }
    );
    println!(
        "            under-replicated {} (a replica's node is down or behind){}",
        under_replicated.len(),
        if under_replicated.is_empty() {
            String::new()
        } else {
            format!(": {}", under_replicated.join(" "))
        }
    );
    let behind: Vec<&Follower> = followers
        .iter()
        .filter(|f| !f.in_sync || f.lag > 0)
        .collect();
    let max_lag = followers.iter().map(|f| f.lag).max().unwrap_or(0);
    println!(
        "followers   {} tracked by their leaders, {} behind or catching up, largest lag {max_lag} records",
        followers.len(),
        behind.len()
    );
    if !behind.is_empty() {
        println!();
        let mut rows = vec![vec![
            "PARTITION".to_string(),
            "LEADER".into(),
            "FOLLOWER".into(),
            "LAG".into(),
            "STATE".into(),
        ]];
        for f in behind.iter().take(MAX_LAG_ROWS) {
            let state = match (f.reachable, f.learner, f.in_sync) {
                (false, _, _) => "unreachable",
                (true, true, _) => "joining (learner)",
                (true, false, false) => "behind",
                (true, false, true) => "in sync",
            };
            rows.push(vec![
                f.partition.clone(),
                f.leader.to_string(),
                f.node.to_string(),
                f.lag.to_string(),
                state.into(),
            ]);
        }
        print_table(&rows);
        if behind.len() > MAX_LAG_ROWS {
            println!(
                "... and {} more (--json lists all)",
                behind.len() - MAX_LAG_ROWS
            );
        }
    }
    Ok(())
}
