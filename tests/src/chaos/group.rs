//! The group workload: members of one consumer group (at-least-once, committing every
//! 500 ms) process the append topic while the nemesis runs; the workload itself kills a
//! member now and then (its task aborted wherever it is, without leaving, as a crashed
//! process) and starts another.
//! A sampler reads the group's committed offsets over the run. After the faults heal, the
//! members go on until they processed every acknowledged value (or a bound passes).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_client::{
    Admin, Client, ConsumerConfig, GroupConsumer, GroupConsumerConfig, GroupEvent, OffsetReset,
    Subscription,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::history::lock;
use super::history::History;

#[derive(Default)]
pub struct GroupLog {
    pub processed: HashSet<String>,
    /// Records handed to members, counting repeats.
    pub deliveries: u64,
    /// (ms into the run, committed offset per partition).
    pub samples: Vec<(u64, BTreeMap<i32, i64>)>,
    pub member_kills: u32,
}

/// Switches the workload reads: `churn` (kill members now and then) and `done`.
#[derive(Default)]
pub struct GroupControl {
    pub churn: AtomicBool,
    pub done: AtomicBool,
}

fn member_config() -> GroupConsumerConfig {
    GroupConsumerConfig {
        consumer: ConsumerConfig {
            fetch_max_wait_ms: 200,
            // Everything acknowledged must be processed: a partition without a committed
            // offset starts at the log start.
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        auto_commit_interval_ms: Some(500),
        rebalance_timeout_ms: 10_000,
        ..GroupConsumerConfig::default()
    }
}

/// Member slot `index`: one member after another until `done`.
#[allow(clippy::too_many_arguments)]
pub async fn member(
    client: Client,
    topic: String,
    group: String,
    index: usize,
    seed: u64,
    control: Arc<GroupControl>,
    history: Arc<History>,
    log: Arc<Mutex<GroupLog>>,
) {
    let actor = format!("member-{index}");
    let mut rng = StdRng::seed_from_u64(seed ^ ((index as u64 + 1) * 0x9e37_79b9));
    while !control.done.load(Ordering::Relaxed) {
        let subscribed = GroupConsumer::subscribe(
            client.clone(),
            &group,
            Subscription::Topics(vec![topic.clone()]),
            member_config(),
        )
        .await;
        let m = match subscribed {
            Ok(m) => m,
            Err(e) => {
                history.record(&actor, format!("join failed: {e}"));
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        history.record(&actor, format!("joined as {}", m.member_id()));
        let lifetime = Duration::from_millis(rng.gen_range(2_000..8_000));
        let member = tokio::spawn(consume(m, actor.clone(), history.clone(), log.clone()));
        match watch(member, lifetime, &control).await {
            End::Failed => {} // it said why: rejoin
            End::Done => return,
            End::Killed => {
                history.record(&actor, "killed (its task aborted, without leaving)");
                lock(&log).member_kills += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a member's task ended.
pub enum End {
    /// By itself (it failed and recorded why).
    Failed,
    /// The workload is over.
    Done,
    /// Its lifetime passed while members are being killed.
    Killed,
}

/// Watches a member (a group member or a pipeline instance) running whole in its own task
/// until it ends by itself, the workload is `done`, or, while `churn` is on, `lifetime` has
/// passed. The last two abort the task wherever it is, as a process killed at any point:
/// a member dies whole, never half-cancelled while alive.
pub async fn watch(task: JoinHandle<()>, lifetime: Duration, control: &GroupControl) -> End {
    let born = tokio::time::Instant::now();
    loop {
        if task.is_finished() {
            return End::Failed;
        }
        if control.done.load(Ordering::Relaxed) {
            task.abort();
            return End::Done;
        }
        if control.churn.load(Ordering::Relaxed) && born.elapsed() >= lifetime {
            task.abort();
            return End::Killed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One member's life: every event, until an error.
async fn consume(
    mut m: GroupConsumer,
    actor: String,
    history: Arc<History>,
    log: Arc<Mutex<GroupLog>>,
) {
    loop {
        match m.next_event().await {
            Ok(GroupEvent::Record(r)) => {
                let value = r
                    .value
                    .as_deref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let mut l = lock(&log);
                l.deliveries += 1;
                l.processed.insert(value);
            }
            Ok(GroupEvent::Assigned(tps)) => {
                history.record(&actor, format!("assigned {}", describe(&tps)))
            }
            Ok(GroupEvent::Revoked(tps)) => {
                history.record(&actor, format!("revoked {}", describe(&tps)))
            }
            Ok(GroupEvent::Lost(tps)) => history.record(&actor, format!("lost {}", describe(&tps))),
            Err(e) => {
                history.record(&actor, format!("error, rejoining: {e}"));
                return;
            }
        }
    }
}

fn describe(tps: &[quiver_client::TopicPartition]) -> String {
    let parts: Vec<String> = tps.iter().map(|tp| tp.partition.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Reads the group's committed offsets every 250 ms until `done`; `prefix` names its
/// partitions in the history (`<prefix>partition-<p>`).
pub async fn sample_commits(
    client: Client,
    group: String,
    prefix: &'static str,
    control: Arc<GroupControl>,
    history: Arc<History>,
    log: Arc<Mutex<GroupLog>>,
) {
    let admin = Admin::new(client);
    while !control.done.load(Ordering::Relaxed) {
        let read =
            tokio::time::timeout(Duration::from_secs(3), admin.committed_offsets(&group, &[]))
                .await;
        if let Ok(Ok(offsets)) = read {
            let sample: BTreeMap<i32, i64> = offsets
                .iter()
                .map(|(tp, c)| (tp.partition, c.offset))
                .collect();
            let at = history.now_ms();
            let mut l = lock(&log);
            if l.samples.last().map(|(_, s)| s) != Some(&sample) {
                let text: Vec<String> = sample
                    .iter()
                    .map(|(p, o)| format!("{prefix}partition-{p}={o}"))
                    .collect();
                history.record(
                    &format!("{prefix}sampler"),
                    format!("committed {}", text.join(" ")),
                );
            }
            l.samples.push((at, sample));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
