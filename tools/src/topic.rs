//! `quiver topic create|list|describe|delete|alter-config`, `quiver offsets`, `quiver cluster info`.

use quiver_client::{Admin, OffsetQuery};
use serde_json::json;

use crate::connect::{print_table, ClientArgs};

/// Parses `k=v` pairs.
pub fn parse_kv(items: &[String]) -> Result<Vec<(String, String)>, String> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("{s:?} is not key=value"))
        })
        .collect()
}

fn refs(kv: &[(String, String)]) -> Vec<(&str, &str)> {
    kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

pub async fn create(
    args: &ClientArgs,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    config: &[String],
) -> Result<(), String> {
    let kv = parse_kv(config)?;
    let admin = Admin::new(args.connect().await?);
    admin
        .create_replicated_topic(name, partitions, replication_factor, &refs(&kv))
        .await
        .map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", json!({"created": name, "partitions": partitions}));
    } else {
        println!("created topic {name} with {partitions} partitions");
    }
    Ok(())
}

pub async fn list(args: &ClientArgs) -> Result<(), String> {
    let admin = Admin::new(args.connect().await?);
    let topics = admin.list_topics().await.map_err(|e| e.to_string())?;
    if args.json {
        let v: Vec<_> = topics
            .iter()
            .map(|t| json!({"name": t.name, "partitions": t.partitions.len()}))
            .collect();
        println!("{}", json!(v));
    } else {
        let mut rows = vec![vec!["NAME".to_string(), "PARTITIONS".to_string()]];
        rows.extend(
            topics
                .iter()
                .map(|t| vec![t.name.clone(), t.partitions.len().to_string()]),
        );
        print_table(&rows);
    }
    Ok(())
}

pub async fn describe(args: &ClientArgs, name: &str) -> Result<(), String> {
    let admin = Admin::new(args.connect().await?);
    let t = admin
        .describe_topic(name)
        .await
        .map_err(|e| e.to_string())?;
    if args.json {
        let parts: Vec<_> = t
            .partitions
            .iter()
            .map(|p| {
                json!({"partition": p.partition, "shard": p.shard, "address": p.address.to_string(),
                       "leader": p.leader, "replicas": p.replicas, "leader_epoch": p.leader_epoch})
            })
            .collect();
        println!(
            "{}",
            json!({"name": t.name, "partitions": parts, "configs": t.configs})
        );
    } else {
        println!("topic {}", t.name);
        let mut rows = vec![vec![
            "PARTITION".to_string(),
            "SHARD".to_string(),
            "ADDRESS".to_string(),
            "LEADER".to_string(),
            "REPLICAS".to_string(),
            "EPOCH".to_string(),
        ]];
        rows.extend(t.partitions.iter().map(|p| {
            let replicas: Vec<String> = p.replicas.iter().map(|r| r.to_string()).collect();
            vec![
                p.partition.to_string(),
                p.shard.to_string(),
                p.address.to_string(),
                p.leader.to_string(),
                replicas.join(","),
                p.leader_epoch.to_string(),
            ]
        }));
        print_table(&rows);
        println!();
        let mut rows = vec![vec!["CONFIG".to_string(), "VALUE".to_string()]];
        rows.extend(t.configs.iter().map(|(k, v)| vec![k.clone(), v.clone()]));
        print_table(&rows);
    }
    Ok(())
}

pub async fn delete(args: &ClientArgs, name: &str) -> Result<(), String> {
    let admin = Admin::new(args.connect().await?);
    admin.delete_topic(name).await.map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", json!({"deleted": name}));
    } else {
        println!("deleted topic {name}");
    }
    Ok(())
}

pub async fn alter_config(args: &ClientArgs, name: &str, set: &[String]) -> Result<(), String> {
    let kv = parse_kv(set)?;
    if kv.is_empty() {
        return Err("nothing to set: pass --set key=value".into());
    }
    let admin = Admin::new(args.connect().await?);
    admin
        .alter_config(name, &refs(&kv))
        .await
        .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            json!({"altered": name, "set": kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::BTreeMap<_, _>>()})
        );
    } else {
        println!("updated {} config(s) of topic {name}", kv.len());
    }
    Ok(())
}

pub async fn offsets(args: &ClientArgs, topic: &str) -> Result<(), String> {
    let client = args.connect().await?;
    let admin = Admin::new(client.clone());
    let n = client
        .route(topic)
        .await
        .map_err(|e| e.to_string())?
        .partitions
        .len() as i32;
    let mut rows = vec![vec![
        "PARTITION".to_string(),
        "EARLIEST".to_string(),
        "LATEST".to_string(),
    ]];
    let mut out = Vec::new();
    for p in 0..n {
        let e = admin
            .list_offsets(topic, p, OffsetQuery::Earliest)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let l = admin
            .list_offsets(topic, p, OffsetQuery::Latest)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        rows.push(vec![p.to_string(), e.to_string(), l.to_string()]);
        out.push(json!({"partition": p, "earliest": e, "latest": l}));
    }
    if args.json {
        println!("{}", json!(out));
    } else {
        print_table(&rows);
    }
    Ok(())
}

pub async fn cluster_info(args: &ClientArgs) -> Result<(), String> {
    let client = args.connect().await?;
    let resp = client
        .bootstrap_request(|id| quiver_schema::requests::handshake(id, "quiver-cli"))
        .await
        .map_err(|e| e.to_string())?;
    let h = resp
        .envelope()
        .body_as_handshake_response()
        .ok_or("the broker sent no handshake body")?;
    let ports: Vec<u16> = h
        .shard_ports()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let topics = Admin::new(client.clone())
        .list_topics()
        .await
        .map_err(|e| e.to_string())?
        .len();
    if args.json {
        println!(
            "{}",
            json!({"cluster_id": h.cluster_id(), "node_id": h.node_id(), "shards": h.shard_count(), "shard_ports": ports, "topics": topics})
        );
    } else {
        print_table(&[
            vec![
                "CLUSTER".into(),
                "NODE".into(),
                "SHARDS".into(),
                "PORTS".into(),
                "TOPICS".into(),
            ],
            vec![
                h.cluster_id().unwrap_or_default().to_string(),
                h.node_id().to_string(),
                h.shard_count().to_string(),
                format!("{ports:?}"),
                topics.to_string(),
            ],
        ]);
    }
    Ok(())
}
