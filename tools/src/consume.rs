//! `quiver consume TOPIC`: prints records; without `--follow` it stops at the end of the log.

use std::collections::BTreeMap;

use quiver_client::{
    Admin, Consumer, ConsumerConfig, ConsumerRecord, Isolation, OffsetQuery, OffsetReset, SeekTo,
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

/// `--isolation`: what to read of transactional writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    /// Everything up to the high watermark, open and aborted transactions included.
    #[value(name = "read_uncommitted", alias = "read-uncommitted")]
    ReadUncommitted,
    /// Committed transactions only, up to the last stable offset.
    #[value(name = "read_committed", alias = "read-committed")]
    ReadCommitted,
}

impl From<IsolationArg> for Isolation {
    fn from(a: IsolationArg) -> Self {
        match a {
            IsolationArg::ReadUncommitted => Isolation::ReadUncommitted,
            IsolationArg::ReadCommitted => Isolation::ReadCommitted,
        }
    }
}

/// How long to wait for a record before looking whether every partition reached its end
/// (skipped batches, such as transaction markers, move positions without a record).
const IDLE_CHECK_MS: u64 = 200;

/// The record format: `--json` means `--format json` (one object per record); both given
/// must agree, so no flag is silently ignored.
pub fn format(format: Option<Format>, json: bool) -> Result<Format, String> {
    match (format, json) {
        (Some(f), true) if f != Format::Json => Err(format!(
            "--json prints one JSON object per record, but --format {} asks for another format: give one of them",
            match f {
                Format::Value => "value",
                Format::Text => "text",
                Format::Json => "json",
            }
        )),
        (_, true) => Ok(Format::Json),
        (f, false) => Ok(f.unwrap_or(Format::Value)),
    }
}

pub struct ConsumeArgs {
    pub topic: String,
    pub start: SeekTo,
    pub partition: Option<i32>,
    pub count: Option<u64>,
    pub follow: bool,
    pub format: Format,
    pub isolation: Isolation,
}

fn text(b: &Option<bytes::Bytes>) -> String {
    b.as_deref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Prints one record; a closed stdout (`quiver consume ... | head`) ends the command quietly.
pub fn print(r: &ConsumerRecord, format: Format) {
    use std::io::Write;
    let line = match format {
        Format::Value => text(&r.value),
        Format::Text => format!(
            "{}@{} {}: {}",
            r.partition,
            r.offset,
            text(&r.key),
            text(&r.value)
        ),
        Format::Json => serde_json::json!({
            "topic": &*r.topic, "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp_ms,
            "key": r.key.as_ref().map(|_| text(&r.key)), "value": r.value.as_ref().map(|_| text(&r.value)),
            "headers": r.headers.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), text(v))).collect::<BTreeMap<_, _>>(),
        })
        .to_string(),
    };
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot print a record: {e}");
        std::process::exit(1);
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
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let end = admin
            .list_offsets(&c.topic, p, OffsetQuery::Latest)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        ends.insert(p, end);
    }
    let plan = plan_start(&c.topic, c.start, &ends, c.follow)?;
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation: c.isolation,
            ..ConsumerConfig::default()
        },
    );
    let tps: Vec<(&str, i32)> = plan
        .read
        .iter()
        .map(|(p, _)| (c.topic.as_str(), *p))
        .collect();
    consumer.assign(&tps);
    // Without --follow: stop once every partition reached the end it had at start.
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for &(p, to) in &plan.read {
        let start = consumer
            .seek(&c.topic, p, to)
            .await
            .map_err(|e| e.to_string())?;
        if ends[&p] > start {
            remaining.insert(p, ends[&p]);
        }
    }
    let mut printed = 0u64;
    loop {
        remaining.retain(|p, end| consumer.position(&c.topic, *p).is_none_or(|pos| pos < *end));
        if c.count.is_some_and(|n| printed >= n) || (!c.follow && remaining.is_empty()) {
            return Ok(());
        }
        let next = tokio::time::timeout(
            std::time::Duration::from_millis(IDLE_CHECK_MS),
            consumer.next_record(),
        )
        .await;
        let Ok(r) = next else {
            continue;
        };
        let r = r.map_err(|e| e.to_string())?;
        if plan
            .skip_below
            .get(&r.partition)
            .is_some_and(|o| r.offset < *o)
        {
            continue;
        }
        print(&r, c.format);
        printed += 1;
        if let Some(end) = remaining.get(&r.partition) {
            if r.offset + 1 >= *end {
                remaining.remove(&r.partition);
            }
        }
    }
}

/// Where each partition is read from.
#[derive(Debug, PartialEq, Eq)]
struct StartPlan {
    /// The partitions to read and where each starts.
    read: Vec<(i32, SeekTo)>,
    /// With `--follow`, a partition whose requested offset is past its end is read from its
    /// end as measured, and records below the requested offset are skipped: it waits for that offset.
    skip_below: BTreeMap<i32, i64>,
}

/// Decides where to start, given each partition's end offset. An `--offset` past the end of
/// a partition is an error that names the end (unless `--follow`, which waits for it); when
/// only some partitions end before it, they are left out with a note.
fn plan_start(
    topic: &str,
    start: SeekTo,
    ends: &BTreeMap<i32, i64>,
    follow: bool,
) -> Result<StartPlan, String> {
    let mut plan = StartPlan {
        read: Vec::new(),
        skip_below: BTreeMap::new(),
    };
    let mut past_end = Vec::new();
    for (&p, &end) in ends {
        match start {
            SeekTo::Offset(o) if o > end && follow => {
                // From the end as measured, not `SeekTo::End`: records appended since would
                // otherwise be skipped past, the one at `o` among them.
                plan.read.push((p, SeekTo::Offset(end)));
                plan.skip_below.insert(p, o);
            }
            SeekTo::Offset(o) if o > end => past_end.push(format!("{topic}/{p} ends at {end}")),
            to => plan.read.push((p, to)),
        }
    }
    if past_end.is_empty() {
        return Ok(plan);
    }
    let SeekTo::Offset(o) = start else {
        return Ok(plan);
    };
    let ends_text = past_end.join(", ");
    if plan.read.is_empty() {
        return Err(format!(
            "offset {o} is past the end of the log ({ends_text}; the end is the offset the next record will get): nothing to print yet; add --follow to wait for it"
        ));
    }
    eprintln!("note: offset {o} is past the end of some partitions, which are not read ({ends_text}); add --follow to wait for them");
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(e: &[(i32, i64)]) -> BTreeMap<i32, i64> {
        e.iter().copied().collect()
    }

    #[test]
    fn an_offset_past_the_end_is_an_error_naming_the_end_unless_follow_waits_for_it() {
        let err = plan_start("events", SeekTo::Offset(999), &ends(&[(0, 3)]), false).unwrap_err();
        assert!(
            err.contains("999") && err.contains("events/0 ends at 3"),
            "{err}"
        );
        assert!(err.contains("--follow"), "{err}");
        let follow = plan_start("events", SeekTo::Offset(999), &ends(&[(0, 3)]), true).unwrap();
        assert_eq!(follow.read, [(0, SeekTo::Offset(3))]);
        assert_eq!(follow.skip_below[&0], 999);
    }

    #[test]
    fn json_means_the_json_format_and_a_different_format_beside_it_is_refused() {
        assert_eq!(format(None, true), Ok(Format::Json));
        assert_eq!(format(Some(Format::Json), true), Ok(Format::Json));
        assert_eq!(format(None, false), Ok(Format::Value));
        assert_eq!(format(Some(Format::Text), false), Ok(Format::Text));
        assert!(format(Some(Format::Text), true)
            .unwrap_err()
            .contains("--json"));
    }

    #[test]
    fn the_end_itself_and_offsets_inside_are_fine_and_partitions_past_are_left_out() {
        let at_end = plan_start("t", SeekTo::Offset(3), &ends(&[(0, 3)]), false).unwrap();
        assert_eq!(at_end.read, [(0, SeekTo::Offset(3))]);
        let some = plan_start("t", SeekTo::Offset(5), &ends(&[(0, 3), (1, 9)]), false).unwrap();
        assert_eq!(some.read, [(1, SeekTo::Offset(5))]);
        let all = plan_start("t", SeekTo::Beginning, &ends(&[(0, 0), (1, 9)]), false).unwrap();
        assert_eq!(all.read.len(), 2);
        assert!(all.skip_below.is_empty());
    }
}
