//! `quiver dlq replay G`: sends a group's dead-lettered records back to the partitions they
//! came from (key, value, timestamp and the record's own headers; the `quiver.dlq.*` headers
//! are dropped). Progress is committed per DLQ partition under the group `G.dlq-replay`, so a
//! replay run twice sends each dead letter once.

use std::collections::BTreeSet;

use quiver_client::{
    Admin, Consumer, ConsumerConfig, OffsetQuery, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, SeekTo, TopicPartition,
};
use serde_json::json;

use crate::connect::{print_table, ClientArgs};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The group that records how far each DLQ partition was replayed.
pub fn replay_group(group: &str) -> String {
    format!("{group}.dlq-replay")
}

pub async fn replay(args: &ClientArgs, group: &str, topic: Option<&str>) -> Result<(), String> {
    let client = args.connect().await?;
    let admin = Admin::new(client.clone());
    let description = admin.describe_group(group).await.map_err(err)?;
    let sources: BTreeSet<String> = match topic {
        Some(t) => [t.to_string()].into(),
        None => description
            .offsets
            .iter()
            .map(|(tp, _)| tp.topic.clone())
            .chain(
                description
                    .members
                    .iter()
                    .flat_map(|m| m.subscribed.clone()),
            )
            .collect(),
    };
    let existing: BTreeSet<String> = admin
        .list_topics()
        .await
        .map_err(err)?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let dlqs: BTreeSet<String> = sources
        .iter()
        .map(|t| description.config.dlq_topic_for(t, group))
        .filter(|d| existing.contains(d))
        .collect();
    let progress = replay_group(group);
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut rows = vec![vec![
        "DLQ".to_string(),
        "PARTITION".into(),
        "REPLAYED".into(),
    ]];
    let mut summary = Vec::new();
    for dlq in &dlqs {
        let partitions = client.route(dlq).await.map_err(err)?.partitions.len() as i32;
        for p in 0..partitions {
            let tp = TopicPartition::new(dlq.as_str(), p);
            let start = match admin
                .committed_offsets(&progress, std::slice::from_ref(&tp))
                .await
                .map_err(err)?
                .first()
            {
                Some((_, c)) => c.offset,
                None => admin
                    .list_offsets(dlq, p, OffsetQuery::Earliest)
                    .await
                    .map_err(err)?
                    .unwrap_or(0),
            };
            let end = admin
                .list_offsets(dlq, p, OffsetQuery::Latest)
                .await
                .map_err(err)?
                .unwrap_or(0);
            if start >= end {
                continue;
            }
            let mut consumer = Consumer::new(
                client.clone(),
                ConsumerConfig {
                    auto_offset_reset: OffsetReset::Earliest,
                    ..ConsumerConfig::default()
                },
            );
            consumer.assign(&[(dlq.as_str(), p)]);
            consumer
                .seek(dlq, p, SeekTo::Offset(start))
                .await
                .map_err(err)?;
            let mut sent = Vec::new();
            loop {
                let r = consumer.next_record().await.map_err(err)?;
                let header = |name: &str| {
                    r.header(name)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let (Some(to_topic), Some(to_partition)) = (
                    header("quiver.dlq.topic"),
                    header("quiver.dlq.partition").and_then(|v| v.parse::<i32>().ok()),
                ) else {
                    return Err(format!(
                        "{dlq}/{p} offset {} is not a dead letter (no quiver.dlq.topic / partition headers); replay stopped there",
                        r.offset
                    ));
                };
                let mut record = ProducerRecord {
                    topic: to_topic,
                    partition: Some(to_partition),
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: Vec::new(),
                    timestamp_ms: Some(r.timestamp_ms),
                };
                record.headers = r
                    .headers
                    .iter()
                    .filter(|(k, _)| !k.starts_with(b"quiver.dlq."))
                    .cloned()
                    .collect();
                sent.push(producer.enqueue(record).await.map_err(err)?);
                if r.offset + 1 >= end {
                    break;
                }
            }
            let count = sent.len();
            for s in sent {
                s.await.map_err(err)?;
            }
            admin
                .set_committed_offsets(&progress, &[(tp, end)])
                .await
                .map_err(err)?;
            rows.push(vec![dlq.clone(), p.to_string(), count.to_string()]);
            summary.push(json!({"dlq": dlq, "partition": p, "replayed": count}));
        }
    }
    if args.json {
        println!("{}", json!({"group": group, "replayed": summary}));
    } else if summary.is_empty() {
        println!("nothing to replay for group {group}");
    } else {
        print_table(&rows);
    }
    Ok(())
}
