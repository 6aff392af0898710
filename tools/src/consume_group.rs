//! `quiver consume TOPIC --group G`: prints records as a member of a consumer group. A group
//! with committed offsets resumes there; `--from-beginning` / `--from-time` / the default
//! (latest, as Kafka's console consumer) only place partitions the group never committed.
//! It commits what it printed: before it exits at the end of the log, on every revocation,
//! and every `--commit-interval-ms` with `--follow`.

use std::collections::BTreeMap;
use std::time::Duration;

use quiver_client::{
    Admin, ConsumerConfig, DeliveryMode, GroupConsumer, GroupConsumerConfig, GroupEvent,
    OffsetQuery, OffsetReset, SeekTo, Subscription, TopicPartition,
};

use crate::connect::ClientArgs;
use crate::consume::{print, Format};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Delivery {
    /// Commit before printing: a crash may skip records, never prints one twice.
    AtMostOnce,
    /// Commit after printing: a crash may print records again, never skips one.
    AtLeastOnce,
}

pub struct GroupArgs {
    pub topic: String,
    pub group: String,
    /// Where partitions without a committed offset start.
    pub start: SeekTo,
    pub instance_id: Option<String>,
    pub delivery: Delivery,
    pub commit_interval_ms: u64,
    pub count: Option<u64>,
    pub follow: bool,
    pub format: Format,
    /// Print assignment changes on stderr.
    pub verbose: bool,
    pub isolation: quiver_client::Isolation,
}

/// How long the member waits for an event before it looks whether it reached the end.
const IDLE_CHECK_MS: u64 = 500;

pub async fn run(args: &ClientArgs, g: GroupArgs) -> Result<(), String> {
    let client = args.connect().await?;
    let admin = Admin::new(client.clone());
    let config = GroupConsumerConfig {
        consumer: ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation: g.isolation,
            ..ConsumerConfig::default()
        },
        start_without_commit: Some(g.start),
        delivery: match g.delivery {
            Delivery::AtMostOnce => DeliveryMode::AtMostOnce,
            Delivery::AtLeastOnce => DeliveryMode::AtLeastOnce,
        },
        instance_id: g.instance_id.clone(),
        auto_commit_interval_ms: Some(g.commit_interval_ms),
        ..GroupConsumerConfig::default()
    };
    let mut member = GroupConsumer::subscribe(
        client,
        &g.group,
        Subscription::Topics(vec![g.topic.clone()]),
        config,
    )
    .await
    .map_err(|e| e.to_string())?;
    // Without --follow: the end of each owned partition as it was when it was assigned.
    let mut ends: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut assigned_once = false;
    let mut printed = 0u64;
    let result = loop {
        if g.count.is_some_and(|n| printed >= n) {
            break Ok(());
        }
        if !g.follow && assigned_once && caught_up(&member, &ends) {
            break Ok(());
        }
        let event =
            match tokio::time::timeout(Duration::from_millis(IDLE_CHECK_MS), member.next_event())
                .await
            {
                Err(_) => continue,
                Ok(Err(e)) => break Err(e.to_string()),
                Ok(Ok(e)) => e,
            };
        match event {
            GroupEvent::Record(r) => {
                print(&r, g.format);
                printed += 1;
            }
            GroupEvent::Assigned(tps) => {
                assigned_once = true;
                if g.verbose {
                    eprintln!("assigned: {}", names(&tps));
                }
                if !g.follow {
                    for tp in tps {
                        let end = admin
                            .list_offsets(&tp.topic, tp.partition, OffsetQuery::Latest)
                            .await
                            .map_err(|e| e.to_string())?
                            .unwrap_or(0);
                        ends.insert(tp, end);
                    }
                }
            }
            GroupEvent::Revoked(tps) | GroupEvent::Lost(tps) => {
                if g.verbose {
                    eprintln!("revoked: {}", names(&tps));
                }
                for tp in &tps {
                    ends.remove(tp);
                }
            }
        }
    };
    // Commit what was printed and leave (a static member keeps its partitions for the
    // session timeout).
    let closed = member.close().await.map_err(|e| e.to_string());
    result.and(closed)
}

/// True when every owned partition was read up to the end it had when it was assigned.
fn caught_up(member: &GroupConsumer, ends: &BTreeMap<TopicPartition, i64>) -> bool {
    ends.iter()
        .all(|(tp, end)| member.position(tp).is_none_or(|p| p >= *end))
}

fn names(tps: &[TopicPartition]) -> String {
    tps.iter()
        .map(|tp| format!("{}/{}", tp.topic, tp.partition))
        .collect::<Vec<_>>()
        .join(" ")
}
