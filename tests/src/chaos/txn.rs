//! The transactions workload: one transactional producer writes transactions of 2–6 records
//! (`t<txn>-<i>`) over the partitions of its topic and commits three in four, aborts the
//! rest. Any error leaves the transaction's outcome unknown; the producer is then replaced
//! by a new instance with the same transactional id (which fences the old one and aborts
//! what it left open, as a restarted application would).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_client::{Client, Producer, ProducerConfig, ProducerRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::append::producer_config;
use super::check::{Txn, TxnOutcome};
use super::history::lock;
use super::history::History;

/// Longest one transaction step (init, a send, commit, abort) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, quiver_client::ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", STEP_TIMEOUT.as_secs())),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    topic: String,
    partitions: i32,
    transactional_id: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
    txns: Arc<Mutex<Vec<Txn>>>,
) {
    let actor = "txn";
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0074_786e);
    let config = ProducerConfig {
        transactional_id: Some(transactional_id),
        transaction_timeout_ms: 15_000,
        ..producer_config()
    };
    let mut producer: Option<Producer> = None;
    let mut id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let p = match &producer {
            Some(p) => p.clone(),
            None => {
                let p = Producer::new(client.clone(), config.clone());
                if let Err(e) = bounded(p.init_transactions()).await {
                    history.record(actor, format!("init failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                history.record(actor, "initialised");
                producer = Some(p.clone());
                p
            }
        };
        id += 1;
        let count = rng.gen_range(2..=6);
        let values: Vec<String> = (0..count).map(|i| format!("t{id}-{i}")).collect();
        let commit = rng.gen_bool(0.75);
        history.record(actor, format!("txn-{id} begin [{}]", values.join(",")));
        let outcome = one_transaction(&p, &topic, partitions, &values, commit).await;
        let text = match &outcome {
            TxnOutcome::Committed => "committed".to_string(),
            TxnOutcome::Aborted => "aborted".to_string(),
            TxnOutcome::Unknown(why) => format!("unknown: {why}"),
        };
        history.record(actor, format!("txn-{id} {text}"));
        if matches!(outcome, TxnOutcome::Unknown(_)) {
            // A new instance fences this one and aborts whatever it left open.
            producer = None;
        }
        lock(&txns).push(Txn {
            id,
            values,
            outcome,
        });
    }
    if let Some(p) = producer {
        let _ = tokio::time::timeout(STEP_TIMEOUT, p.close()).await;
    }
}

async fn one_transaction(
    p: &Producer,
    topic: &str,
    partitions: i32,
    values: &[String],
    commit: bool,
) -> TxnOutcome {
    if let Err(e) = bounded(p.begin_transaction()).await {
        return TxnOutcome::Unknown(format!("begin: {e}"));
    }
    for (i, v) in values.iter().enumerate() {
        let record = ProducerRecord::new(topic, v.clone()).partition(i as i32 % partitions);
        match bounded(p.enqueue(record)).await {
            Ok(delivery) => drop(delivery),
            Err(e) => return TxnOutcome::Unknown(format!("send {v}: {e}")),
        }
    }
    if commit {
        match bounded(p.commit_transaction()).await {
            Ok(()) => TxnOutcome::Committed,
            Err(e) => TxnOutcome::Unknown(format!("commit: {e}")),
        }
    } else {
        match bounded(p.abort_transaction()).await {
            Ok(()) => TxnOutcome::Aborted,
            Err(e) => TxnOutcome::Unknown(format!("abort: {e}")),
        }
    }
}
