//! The exactly-once workload: a consume-transform-produce pipeline ([`Transformer`]) copies
//! the append topic into the output topic (each input value becomes an output value, same
//! partition), one instance at a time under one transactional id and one group. Like the
//! group's members, an instance is killed now and then (its task aborted wherever it is) and
//! a new one with the same id takes over, fencing the old one and aborting what it left open.
//! A read_committed reader of the output must see every acknowledged input value exactly
//! once: a duplicate is a committed transaction's input read and committed again (offsets
//! lost or moved back, a zombie's write taken).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_client::{
    Client, ConsumerConfig, DeliveryMode, GroupConsumer, GroupConsumerConfig, Isolation,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, Subscription, TransformConfig,
    Transformer,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::append::producer_config;
use super::group::{watch, End, GroupControl};
use super::history::lock;
use super::history::History;

/// Longest one step (joining, registering the producer, one transaction) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed transactions in a row after which an instance gives up (a fenced one fails every
/// time) and a new one starts.
const MAX_FAILED_STEPS: u32 = 3;

#[derive(Default)]
pub struct EosLog {
    /// Transactions the pipeline committed (and records they took).
    pub steps: u64,
    pub records: u64,
    pub kills: u32,
}

/// What the pipeline moves: `input` to `output` in group `group`.
pub struct Pipeline {
    pub input: String,
    pub output: String,
    pub group: String,
    pub transactional_id: String,
}

/// One pipeline instance after another until `done`.
pub async fn run(
    client: Client,
    pipeline: Arc<Pipeline>,
    seed: u64,
    control: Arc<GroupControl>,
    history: Arc<History>,
    log: Arc<Mutex<EosLog>>,
) {
    let actor = "eos";
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0065_6f73);
    while !control.done.load(Ordering::Relaxed) {
        let started = tokio::time::timeout(STEP_TIMEOUT, start(&client, &pipeline)).await;
        let t = match started {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                history.record(actor, format!("start failed: {e}"));
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            Err(_) => {
                history.record(actor, "start took over 10 s");
                continue;
            }
        };
        history.record(actor, format!("started as {}", t.consumer().member_id()));
        let lifetime = Duration::from_millis(rng.gen_range(3_000..9_000));
        let instance = tokio::spawn(transform(t, pipeline.clone(), history.clone(), log.clone()));
        match watch(instance, lifetime, &control).await {
            End::Failed => {}
            End::Done => return,
            End::Killed => {
                history.record(actor, "killed (its task aborted, without leaving)");
                lock(&log).kills += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(client: &Client, p: &Pipeline) -> Result<Transformer, quiver_client::ClientError> {
    let member = GroupConsumer::subscribe(
        client.clone(),
        &p.group,
        Subscription::Topics(vec![p.input.clone()]),
        GroupConsumerConfig {
            consumer: ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                isolation: Isolation::ReadCommitted,
                fetch_max_wait_ms: 200,
                ..ConsumerConfig::default()
            },
            delivery: DeliveryMode::Transactional,
            rebalance_timeout_ms: 10_000,
            ..GroupConsumerConfig::default()
        },
    )
    .await?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            transactional_id: Some(p.transactional_id.clone()),
            transaction_timeout_ms: 15_000,
            ..producer_config()
        },
    );
    let config = TransformConfig {
        max_records: 100,
        max_wait_ms: 100,
    };
    Transformer::new(member, producer, config).await
}

/// One instance's life: transactions until it fails `MAX_FAILED_STEPS` times in a row.
async fn transform(
    mut t: Transformer,
    p: Arc<Pipeline>,
    history: Arc<History>,
    log: Arc<Mutex<EosLog>>,
) {
    let mut failed = 0;
    while failed < MAX_FAILED_STEPS {
        let step = tokio::time::timeout(
            STEP_TIMEOUT,
            t.run_once(|r| {
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                vec![ProducerRecord::new(p.output.as_str(), value.into_owned())
                    .partition(r.partition)]
            }),
        )
        .await;
        match step {
            Ok(Ok(n)) => {
                failed = 0;
                if n > 0 {
                    let mut l = lock(&log);
                    l.steps += 1;
                    l.records += n as u64;
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                history.record(
                    "eos",
                    format!("transaction failed (aborted, input read again): {e}"),
                );
            }
            Err(_) => {
                // Abandoned mid-transaction: this instance is not used again.
                history.record("eos", "a transaction took over 10 s; the instance stops");
                return;
            }
        }
    }
    history.record("eos", "failing repeatedly; a new instance takes over");
}
