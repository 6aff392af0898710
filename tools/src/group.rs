//! `quiver group list|describe|delete|alter-config|reset-offsets`.

use std::collections::BTreeMap;

use quiver_client::{Admin, GroupDescription, OffsetQuery, PartitionLag, TopicPartition};
use serde_json::json;

use crate::connect::{print_table, ClientArgs};
use crate::topic::parse_kv;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn list(args: &ClientArgs) -> Result<(), String> {
    let admin = Admin::new(args.connect().await?);
    let groups = admin.list_groups().await.map_err(err)?;
    if args.json {
        let v: Vec<_> = groups
            .iter()
            .map(|g| json!({"group": g.group, "state": g.state, "members": g.members}))
            .collect();
        println!("{}", json!(v));
    } else {
        let mut rows = vec![vec!["GROUP".into(), "STATE".into(), "MEMBERS".into()]];
        rows.extend(
            groups
                .iter()
                .map(|g| vec![g.group.clone(), g.state.clone(), g.members.to_string()]),
        );
        print_table(&rows);
    }
    Ok(())
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn tp_list(tps: &[TopicPartition]) -> String {
    tps.iter()
        .map(|tp| format!("{}/{}", tp.topic, tp.partition))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn describe(args: &ClientArgs, group: &str) -> Result<(), String> {
    let admin = Admin::new(args.connect().await?);
    let d = admin.describe_group(group).await.map_err(err)?;
    let lag = admin.group_lag(&d).await.map_err(err)?;
    if args.json {
        println!("{}", describe_json(&d, &lag));
        return Ok(());
    }
    println!(
        "group {}  state {}  epoch {}  assignor {}  session_timeout_ms {}  heartbeat_interval_ms {}",
        d.group,
        d.state.name(),
        d.epoch,
        d.config.assignor.name(),
        d.config.session_timeout_ms,
        d.config.heartbeat_interval_ms
    );
    println!(
        "failures: max_deliveries {}  retry_levels {}  redelivery_backoff_ms {:?}  dlq_topic {}",
        d.config.max_deliveries,
        d.config.retry_levels,
        d.config.redelivery_backoff_ms,
        if d.config.dlq_topic.is_empty() {
            "<topic>.<group>.dlq"
        } else {
            &d.config.dlq_topic
        }
    );
    println!();
    let mut rows = vec![[
        "MEMBER", "INSTANCE", "CLIENT", "EPOCH", "ASSIGNED", "REVOKING",
    ]
    .map(String::from)
    .to_vec()];
    for m in &d.members {
        rows.push(vec![
            m.member_id.clone(),
            m.instance_id.clone().unwrap_or_else(|| "-".into()),
            m.client_id.clone(),
            m.member_epoch.to_string(),
            tp_list(&m.assigned),
            tp_list(&m.revoking),
        ]);
    }
    print_table(&rows);
    println!();
    let mut rows = vec![[
        "TOPIC",
        "PARTITION",
        "MEMBER",
        "COMMITTED",
        "LOG-START",
        "LOG-END",
        "LAG",
        "LAG-MS",
    ]
    .map(String::from)
    .to_vec()];
    for l in &lag {
        rows.push(vec![
            l.partition.topic.clone(),
            l.partition.partition.to_string(),
            l.member_id.clone().unwrap_or_else(|| "-".into()),
            opt(l.committed),
            l.log_start.to_string(),
            l.log_end.to_string(),
            opt(l.lag_records),
            opt(l.lag_ms),
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn describe_json(d: &GroupDescription, lag: &[PartitionLag]) -> serde_json::Value {
    let tps = |v: &[TopicPartition]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|tp| json!({"topic": tp.topic, "partition": tp.partition}))
            .collect()
    };
    json!({
        "group": d.group,
        "state": d.state.name(),
        "epoch": d.epoch,
        "config": {
            "assignor": d.config.assignor.name(),
            "session_timeout_ms": d.config.session_timeout_ms,
            "heartbeat_interval_ms": d.config.heartbeat_interval_ms,
            "max_deliveries": d.config.max_deliveries,
            "redelivery_backoff_ms": d.config.redelivery_backoff_ms,
            "dlq_topic": d.config.dlq_topic,
            "retry_levels": d.config.retry_levels,
        },
        "members": d.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "instance_id": m.instance_id,
            "client_id": m.client_id,
            "member_epoch": m.member_epoch,
            "assigned": tps(&m.assigned),
            "revoking": tps(&m.revoking),
        })).collect::<Vec<_>>(),
        "partitions": lag.iter().map(|l| json!({
            "topic": l.partition.topic,
            "partition": l.partition.partition,
            "member_id": l.member_id,
            "committed": l.committed,
            "log_start": l.log_start,
            "log_end": l.log_end,
            "lag": l.lag_records,
            "lag_ms": l.lag_ms,
        })).collect::<Vec<_>>(),
    })
}

pub async fn delete(args: &ClientArgs, group: &str, force: bool) -> Result<(), String> {
    let admin = Admin::new(args.connect().await?);
    admin.delete_group(group, force).await.map_err(err)?;
    if args.json {
        println!("{}", json!({"deleted": group}));
    } else {
        println!("deleted group {group}");
    }
    Ok(())
}

pub async fn alter_config(args: &ClientArgs, group: &str, set: &[String]) -> Result<(), String> {
    let kv = parse_kv(set)?;
    let refs: Vec<(&str, &str)> = kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let admin = Admin::new(args.connect().await?);
    admin.alter_group_config(group, &refs).await.map_err(err)?;
    if args.json {
        println!(
            "{}",
            json!({"group": group, "set": kv.iter().cloned().collect::<BTreeMap<_, _>>()})
        );
    } else {
        println!("updated group {group}");
    }
    Ok(())
}

/// Where `reset-offsets` moves each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first record at or after this time (ms since the epoch); the end if none.
    Time(i64),
    Offset(i64),
    /// From the committed offset (the log start where none), clamped to the log.
    ShiftBy(i64),
}

pub struct ResetArgs {
    pub group: String,
    pub topic: String,
    pub partition: Option<i32>,
    pub to: ResetTo,
    pub dry_run: bool,
    pub force: bool,
}

pub async fn reset_offsets(args: &ClientArgs, r: ResetArgs) -> Result<(), String> {
    let client = args.connect().await?;
    let admin = Admin::new(client.clone());
    let n = client.route(&r.topic).await.map_err(err)?.partitions.len() as i32;
    let partitions: Vec<i32> = match r.partition {
        Some(p) if !(0..n).contains(&p) => {
            return Err(format!(
                "topic {} has partitions 0..{}, not {p}",
                r.topic,
                n - 1
            ))
        }
        Some(p) => vec![p],
        None => (0..n).collect(),
    };
    let description = match admin.describe_group(&r.group).await {
        Ok(d) => Some(d),
        Err(quiver_client::ClientError::Broker {
            code: quiver_schema::wire::ErrorCode::UnknownGroup,
            ..
        }) => None,
        Err(e) => return Err(e.to_string()),
    };
    let live = description.as_ref().map_or(0, |d| d.members.len());
    if live > 0 && !r.force && !r.dry_run {
        return Err(format!(
            "group {} has {live} live members; stop them first, or add --force (the members are removed from the group, rejoin, and resume at the new offsets)",
            r.group
        ));
    }
    let committed: BTreeMap<TopicPartition, i64> = description
        .as_ref()
        .map(|d| {
            d.offsets
                .iter()
                .map(|(tp, c)| (tp.clone(), c.offset))
                .collect()
        })
        .unwrap_or_default();
    let mut plan = Vec::new();
    for p in partitions {
        let tp = TopicPartition::new(&r.topic, p);
        let q = |q| admin.list_offsets(&r.topic, p, q);
        let start = q(OffsetQuery::Earliest).await.map_err(err)?.unwrap_or(0);
        let end = q(OffsetQuery::Latest).await.map_err(err)?.unwrap_or(0);
        let target = match r.to {
            ResetTo::Earliest => start,
            ResetTo::Latest => end,
            ResetTo::Time(ts) => q(OffsetQuery::Timestamp(ts))
                .await
                .map_err(err)?
                .unwrap_or(end),
            ResetTo::Offset(o) => o,
            ResetTo::ShiftBy(d) => committed
                .get(&tp)
                .copied()
                .unwrap_or(start)
                .saturating_add(d),
        }
        .clamp(start, end);
        plan.push((tp.clone(), committed.get(&tp).copied(), target));
    }
    if !r.dry_run {
        let offsets: Vec<(TopicPartition, i64)> =
            plan.iter().map(|(tp, _, o)| (tp.clone(), *o)).collect();
        if live > 0 {
            // --force: fence the members by deleting the group, then write back its
            // configuration and every committed offset with the reset ones in place.
            let Some(d) = &description else {
                return Err("the group vanished while being reset; run it again".into());
            };
            let mut all = committed.clone();
            all.extend(offsets.iter().cloned());
            admin.delete_group(&r.group, true).await.map_err(err)?;
            let session = d.config.session_timeout_ms.to_string();
            let heartbeat = d.config.heartbeat_interval_ms.to_string();
            let deliveries = d.config.max_deliveries.to_string();
            let backoff: Vec<String> = d
                .config
                .redelivery_backoff_ms
                .iter()
                .map(u32::to_string)
                .collect();
            let backoff = backoff.join(",");
            let retry_levels = d.config.retry_levels.to_string();
            admin
                .alter_group_config(
                    &r.group,
                    &[
                        ("session_timeout_ms", session.as_str()),
                        ("heartbeat_interval_ms", heartbeat.as_str()),
                        ("assignor", d.config.assignor.name()),
                        ("max_deliveries", deliveries.as_str()),
                        ("redelivery_backoff_ms", backoff.as_str()),
                        ("dlq_topic", d.config.dlq_topic.as_str()),
                        ("retry_levels", retry_levels.as_str()),
                    ],
                )
                .await
                .map_err(err)?;
            let all: Vec<(TopicPartition, i64)> = all.into_iter().collect();
            admin
                .set_committed_offsets(&r.group, &all)
                .await
                .map_err(err)?;
        } else {
            admin
                .set_committed_offsets(&r.group, &offsets)
                .await
                .map_err(err)?;
        }
    }
    if args.json {
        let v: Vec<_> = plan
            .iter()
            .map(|(tp, from, to)| json!({"topic": tp.topic, "partition": tp.partition, "from": from, "to": to}))
            .collect();
        println!(
            "{}",
            json!({"group": r.group, "dry_run": r.dry_run, "offsets": v})
        );
    } else {
        let mut rows = vec![["TOPIC", "PARTITION", "FROM", "TO"]
            .map(String::from)
            .to_vec()];
        for (tp, from, to) in &plan {
            rows.push(vec![
                tp.topic.clone(),
                tp.partition.to_string(),
                opt(*from),
                to.to_string(),
            ]);
        }
        print_table(&rows);
        if r.dry_run {
            println!("(dry run: nothing changed)");
        }
    }
    Ok(())
}
