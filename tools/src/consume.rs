//! `quiver consume TOPIC`: prints records; without `--follow` it stops at the end of the log.

use std::collections::BTreeMap;

use quiver_client::{
    Admin, Consumer, ConsumerConfig, ConsumerRecord, OffsetQuery, OffsetReset, SeekTo,
};

use crate::connect::ClientArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The value, one per line.
    Value,
    /// `partition@offset key: value`.
    Text,
    /// One JSON object per record.
    Json,
}

pub struct ConsumeArgs {
    pub topic: String,
    pub start: SeekTo,
    pub partition: Option<i32>,
    pub count: Option<u64>,
    pub follow: bool,
    pub format: Format,
}

fn text(b: &Option<bytes::Bytes>) -> String {
    b.as_deref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn print(r: &ConsumerRecord, format: Format) {
    match format {
        Format::Value => println!("{}", text(&r.value)),
        Format::Text => println!(
            "{}@{} {}: {}",
            r.partition,
            r.offset,
            text(&r.key),
            text(&r.value)
        ),
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "topic": &*r.topic, "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp_ms,
                "key": r.key.as_ref().map(|_| text(&r.key)), "value": r.value.as_ref().map(|_| text(&r.value)),
                "headers": r.headers.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), text(v))).collect::<BTreeMap<_, _>>(),
            })
        ),
    }
}

pub async fn run(args: &ClientArgs, c: ConsumeArgs) -> Result<(), String> {
    let client = args.connect().await?;
    let n = client
        .route(&c.topic)
        .await
        .map_err(|e| e.to_string())?
        .partitions
        .len() as i32;
    let partitions: Vec<i32> = match c.partition {
        Some(p) if p < 0 || p >= n => {
            return Err(format!(
                "topic {} has partitions 0..{}, not {p}",
                c.topic,
                n - 1
            ))
        }
        Some(p) => vec![p],
        None => (0..n).collect(),
    };
    let admin = Admin::new(client.clone());
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    let tps: Vec<(&str, i32)> = partitions.iter().map(|p| (c.topic.as_str(), *p)).collect();
    consumer.assign(&tps);
    // Without --follow: stop once every partition reached the end it had at start.
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for &p in &partitions {
        let start = consumer
            .seek(&c.topic, p, c.start)
            .await
            .map_err(|e| e.to_string())?;
        let end = admin
            .list_offsets(&c.topic, p, OffsetQuery::Latest)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        if end > start {
            remaining.insert(p, end);
        }
    }
    let mut printed = 0u64;
    loop {
        if c.count.is_some_and(|n| printed >= n) || (!c.follow && remaining.is_empty()) {
            return Ok(());
        }
        let r = consumer.next_record().await.map_err(|e| e.to_string())?;
        print(&r, c.format);
        printed += 1;
        if let Some(end) = remaining.get(&r.partition) {
            if r.offset + 1 >= *end {
                remaining.remove(&r.partition);
            }
        }
    }
}
