//! One schedule, end to end: a fresh cluster, the workloads, the nemesis, healing, a bound
//! on recovery, the final reads and the checkers; the verdict.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{Admin, Client, Isolation, Producer, ProducerRecord};

use super::append::{self, read_partition, AppendLog};
use super::check::{self, Anomaly, Read};
use super::cluster::ChaosCluster;
use super::eos::{self, EosLog, Pipeline};
use super::group::{self, GroupControl, GroupLog};
use super::history::{lock, Event, History};
use super::nemesis;
use super::schedule::{self, SlowDisk, Step};
use super::slow_disk;
use super::txn;

pub const APPEND_TOPIC: &str = "chaos-append";
pub const TXN_TOPIC: &str = "chaos-txn";
pub const GROUP: &str = "chaos-group";
/// The exactly-once pipeline's output (the append topic copied) and group.
pub const EOS_TOPIC: &str = "chaos-eos";
pub const EOS_GROUP: &str = "chaos-eos-group";
const APPEND_PARTITIONS: i32 = 4;
const TXN_PARTITIONS: i32 = 3;
const APPEND_PRODUCERS: usize = 2;
const GROUP_MEMBERS: usize = 2;

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    /// How long the workloads run under faults.
    pub duration_ms: u64,
    /// After healing, the cluster must serve again within this (else: `unavailable`).
    pub recovery_bound_ms: u64,
    /// Where the nodes' loop-mounted disks are made.
    pub work_dir: PathBuf,
    /// Where a failing schedule's whole history is written (`history-<seed>.txt`), with its
    /// nodes' logs (`node-<seed>-<n>.log`).
    pub history_dir: Option<PathBuf>,
    /// The nodes' `--log-level`.
    pub node_log_level: String,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub seed: u64,
    pub faults: BTreeMap<&'static str, u32>,
    /// Operations invoked: appends sent, transactions begun, records delivered to members,
    /// records the pipeline committed.
    pub operations: u64,
    /// Appends acknowledged plus transactions committed (the pipeline's too).
    pub acknowledged: u64,
    pub member_kills: u32,
    /// From the heal until every partition took a write again.
    pub recovery_ms: u64,
    pub elapsed_ms: u64,
    /// Milliseconds per phase: setup, faults, recovery, producers, drain, members, reads.
    pub phases: Vec<(&'static str, u64)>,
    pub anomalies: Vec<Anomaly>,
    /// For each anomaly (the first ten), the events that concern it.
    pub evidence: Vec<(Anomaly, Vec<Event>)>,
}

/// Runs schedule `seed`; an `Err` is a harness failure (the cluster did not start, say), not
/// a finding.
pub fn run_schedule(opts: &Options, seed: u64) -> Result<Verdict, String> {
    let began = Instant::now();
    let mut phases = Phases::new();
    let steps = schedule::generate(seed, opts.nodes, APPEND_PARTITIONS, opts.duration_ms);
    let run_dir = opts.work_dir.join(format!("seed-{seed}"));
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let mut cluster = ChaosCluster::start(opts.nodes, &run_dir, &opts.node_log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = runtime.block_on(setup(&cluster))?;
    phases.end("setup");
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let append_log = Arc::new(Mutex::new(AppendLog::default()));
    let group_log = Arc::new(Mutex::new(GroupLog::default()));
    let eos_log = Arc::new(Mutex::new(EosLog::default()));
    // Only the pipeline's group's sampled offsets are kept in it.
    let eos_samples = Arc::new(Mutex::new(GroupLog::default()));
    let txns = Arc::new(Mutex::new(Vec::new()));
    let control = Arc::new(GroupControl::default());
    control.churn.store(true, Ordering::Relaxed);

    let mut producers = Vec::new();
    for index in 0..APPEND_PRODUCERS {
        producers.push(runtime.spawn(append::produce(
            client.clone(),
            APPEND_TOPIC.into(),
            APPEND_PARTITIONS,
            index,
            stop.clone(),
            history.clone(),
            append_log.clone(),
        )));
    }
    producers.push(runtime.spawn(txn::run(
        client.clone(),
        TXN_TOPIC.into(),
        TXN_PARTITIONS,
        format!("chaos-tx-{seed}"),
        seed,
        stop.clone(),
        history.clone(),
        txns.clone(),
    )));
    let mut members = Vec::new();
    for index in 0..GROUP_MEMBERS {
        members.push(runtime.spawn(group::member(
            client.clone(),
            APPEND_TOPIC.into(),
            GROUP.into(),
            index,
            seed,
            control.clone(),
            history.clone(),
            group_log.clone(),
        )));
    }
    members.push(runtime.spawn(group::sample_commits(
        client.clone(),
        GROUP.into(),
        "",
        control.clone(),
        history.clone(),
        group_log.clone(),
    )));
    let pipeline = Arc::new(Pipeline {
        input: APPEND_TOPIC.into(),
        output: EOS_TOPIC.into(),
        group: EOS_GROUP.into(),
        transactional_id: format!("chaos-eos-{seed}"),
    });
    members.push(runtime.spawn(eos::run(
        client.clone(),
        pipeline,
        seed,
        control.clone(),
        history.clone(),
        eos_log.clone(),
    )));
    members.push(runtime.spawn(group::sample_commits(
        client.clone(),
        EOS_GROUP.into(),
        "eos-",
        control.clone(),
        history.clone(),
        eos_samples.clone(),
    )));

    let faults = run_nemesis(&mut cluster, &steps, &runtime, &client, &history, opts)?;
    phases.end("faults");

    // Heal everything, stop writing, and measure how long until every partition takes a
    // write again. A node that stopped by itself (a failed controller-log write) is started
    // again like a killed one.
    for (n, status) in cluster.exited() {
        history.record("nemesis", format!("n{n} had stopped by itself ({status})"));
    }
    let mut anomalies = Vec::new();
    for (n, e) in cluster.revive_all() {
        history.record("nemesis", e.clone());
        anomalies.push(Anomaly {
            kind: "unavailable",
            subject: format!("n{n}"),
            detail: format!("not running at the heal and not ready within 60 s of a start: {e}"),
        });
    }
    cluster.lab.heal()?;
    stop.store(true, Ordering::Relaxed);
    control.churn.store(false, Ordering::Relaxed);
    history.record("nemesis", "all healed");
    let healed = Instant::now();
    let recovered = runtime.block_on(probe_writes(
        &client,
        &history,
        &append_log,
        healed + Duration::from_millis(opts.recovery_bound_ms),
    ));
    let recovery_ms = healed.elapsed().as_millis() as u64;
    phases.end("recovery");
    if let Err(e) = recovered {
        anomalies.push(Anomaly {
            kind: "unavailable",
            subject: APPEND_TOPIC.into(),
            detail: format!(
                "no write accepted within {} ms of healing: {e}",
                opts.recovery_bound_ms
            ),
        });
    }
    runtime.block_on(async {
        for p in producers {
            let _ = tokio::time::timeout(Duration::from_secs(40), p).await;
        }
    });
    phases.end("producers");

    // The group goes on until it processed every acknowledged value, the pipeline until its
    // committed offsets passed every acknowledged one.
    let acked = lock(&append_log).acked.clone();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in acked.values() {
        let end = ends.entry(*p).or_insert(0);
        *end = (*end).max(o + 1);
    }
    let drained = Instant::now() + Duration::from_millis(opts.recovery_bound_ms + 15_000);
    runtime.block_on(async {
        while Instant::now() < drained
            && (acked
                .keys()
                .any(|v| !lock(&group_log).processed.contains(v))
                || !caught_up(&lock(&eos_samples).samples, &ends))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    phases.end("drain");
    control.done.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for m in members {
            let _ = tokio::time::timeout(Duration::from_secs(10), m).await;
        }
    });
    phases.end("members");

    // Final reads and the checkers.
    let read_deadline = Instant::now() + Duration::from_millis(opts.recovery_bound_ms);
    let (append_read, txn_read, eos_read) = runtime.block_on(async {
        let a = read_all(
            &client,
            APPEND_TOPIC,
            APPEND_PARTITIONS,
            Isolation::ReadUncommitted,
            read_deadline,
        )
        .await;
        let t = read_all(
            &client,
            TXN_TOPIC,
            TXN_PARTITIONS,
            Isolation::ReadCommitted,
            read_deadline,
        )
        .await;
        let e = read_all(
            &client,
            EOS_TOPIC,
            APPEND_PARTITIONS,
            Isolation::ReadCommitted,
            read_deadline,
        )
        .await;
        (a, t, e)
    });
    phases.end("reads");
    for (topic, read) in [
        (APPEND_TOPIC, &append_read),
        (TXN_TOPIC, &txn_read),
        (EOS_TOPIC, &eos_read),
    ] {
        if let Err(e) = read {
            anomalies.push(Anomaly {
                kind: "unavailable",
                subject: topic.into(),
                detail: e.clone(),
            });
        }
    }
    let a = lock(&append_log);
    let g = lock(&group_log);
    let t = lock(&txns);
    if let Ok(read) = &append_read {
        anomalies.extend(check::check_append(&a.sent, &a.acked, read));
        anomalies.extend(check::check_group(&a.acked, &g.processed, &g.samples));
    }
    if let Ok(read) = &txn_read {
        anomalies.extend(check::check_transactions(&t, read));
    }
    let e = lock(&eos_log);
    if let Ok(read) = &eos_read {
        anomalies.extend(check::check_exactly_once(
            &a.acked,
            read,
            &lock(&eos_samples).samples,
        ));
    }
    if let (false, Some(dir)) = (anomalies.is_empty(), &opts.history_dir) {
        let path = dir.join(format!("history-{seed}.txt"));
        if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, history.text()))
        {
            eprintln!("{}: {e}", path.display());
        }
        for n in 1..=opts.nodes {
            let _ = std::fs::copy(
                cluster.log_path(n),
                dir.join(format!("node-{seed}-{n}.log")),
            );
        }
    }
    let evidence = anomalies
        .iter()
        .take(10)
        .map(|an| (an.clone(), history.concerning(&an.subject)))
        .collect();
    let committed = t
        .iter()
        .filter(|x| x.outcome == check::TxnOutcome::Committed)
        .count() as u64;
    let verdict = Verdict {
        seed,
        faults,
        operations: a.sent.len() as u64 + t.len() as u64 + g.deliveries + e.records,
        acknowledged: a.acked.len() as u64 + committed + e.steps,
        member_kills: g.member_kills + e.kills,
        recovery_ms,
        elapsed_ms: began.elapsed().as_millis() as u64,
        phases: phases.0,
        anomalies,
        evidence,
    };
    drop((a, g, t, e));
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(cluster);
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(verdict)
}

/// Creates the topics (replication factor 3) once the controller has a quorum and waits
/// until every partition has a leader.
async fn setup(cluster: &ChaosCluster) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        match cluster.client(3_000).await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let admin = Admin::new(client.clone());
    for (topic, partitions) in [
        (APPEND_TOPIC, APPEND_PARTITIONS),
        (TXN_TOPIC, TXN_PARTITIONS),
        (EOS_TOPIC, APPEND_PARTITIONS),
    ] {
        loop {
            match admin
                .create_replicated_topic(topic, partitions, 3, &[])
                .await
            {
                Ok(()) => break,
                Err(quiver_client::ClientError::Broker {
                    code: quiver_schema::wire::ErrorCode::TopicExists,
                    ..
                }) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("creating {topic}: {e}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        loop {
            let led = match admin.describe_topic(topic).await {
                Ok(d) => {
                    d.partitions.len() == partitions as usize
                        && d.partitions.iter().all(|p| p.leader >= 1)
                }
                Err(_) => false,
            };
            if led {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("{topic}: partitions without a leader after 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(client)
}

fn run_nemesis(
    cluster: &mut ChaosCluster,
    steps: &[Step],
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    history: &History,
    opts: &Options,
) -> Result<BTreeMap<&'static str, u32>, String> {
    let start = Instant::now();
    let mut faults = BTreeMap::new();
    // A schedule is timed by definition: the waits below are the schedule, not polling.
    let wait_until = |at_ms: u64| {
        let at = start + Duration::from_millis(at_ms);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    };
    for step in steps {
        wait_until(step.at_ms);
        let (what, applied) = nemesis::apply(cluster, &step.fault, runtime, client, APPEND_TOPIC)?;
        history.record("nemesis", what);
        *faults.entry(step.fault.kind()).or_insert(0) += 1;
        let slowed = step
            .slow_disk
            .as_ref()
            .and_then(|d| slow_down(cluster, d, history));
        if slowed.is_some() {
            *faults.entry("slow-disk").or_insert(0) += 1;
        }
        wait_until(step.at_ms + step.hold_ms);
        if let Some((node, throttle)) = slowed {
            match throttle.lift() {
                Ok(()) => history.record("nemesis", format!("n{node}'s disk at full speed")),
                Err(e) => history.record("nemesis", format!("n{node}'s disk throttle: {e}")),
            }
        }
        let what = nemesis::heal(cluster, applied)?;
        history.record("nemesis", what);
    }
    wait_until(opts.duration_ms);
    Ok(faults)
}

/// Throttles a node's disk writes (when the node runs and the machine can).
fn slow_down(
    cluster: &ChaosCluster,
    d: &SlowDisk,
    history: &History,
) -> Option<(usize, slow_disk::Throttle)> {
    let pid = cluster.pid(d.node)?;
    let name = format!("quiver-chaos-{}-n{}", std::process::id(), d.node);
    match slow_disk::throttle(
        pid,
        cluster.disk(d.node),
        d.write_kib_per_s * 1024,
        d.write_iops,
        &name,
    ) {
        Ok(t) => {
            history.record(
                "nemesis",
                format!(
                    "n{}'s disk slowed to {} KiB/s, {} writes/s",
                    d.node, d.write_kib_per_s, d.write_iops
                ),
            );
            Some((d.node, t))
        }
        Err(e) => {
            history.record("nemesis", format!("n{}'s disk not slowed: {e}", d.node));
            None
        }
    }
}

/// Whether the last sampled committed offsets reached `ends` on every partition.
fn caught_up(samples: &[(u64, BTreeMap<i32, i64>)], ends: &BTreeMap<i32, i64>) -> bool {
    let Some((_, last)) = samples.last() else {
        return ends.is_empty();
    };
    ends.iter()
        .all(|(p, end)| last.get(p).is_some_and(|o| o >= end))
}

/// Producer number of the recovery probe in the append log.
const PROBE_PRODUCER: usize = usize::MAX;

/// One acknowledged write on every partition of the append topic (values `probe-<p>`, in the
/// append log and checked like the others).
async fn probe_writes(
    client: &Client,
    history: &History,
    log: &Mutex<AppendLog>,
    deadline: Instant,
) -> Result<(), String> {
    let producer = Producer::new(client.clone(), append::producer_config());
    let mut last = String::new();
    for partition in 0..APPEND_PARTITIONS {
        loop {
            let value = format!("probe-{partition}");
            lock(log).sent.insert(
                value.clone(),
                check::Sent {
                    producer: PROBE_PRODUCER,
                    seq: 0,
                    partition,
                },
            );
            let sent = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                producer
                    .send(ProducerRecord::new(APPEND_TOPIC, value.clone()).partition(partition)),
            )
            .await;
            match sent {
                Ok(Ok(md)) => {
                    history.record(
                        "probe",
                        format!("ack {value} p{}@{}", md.partition, md.offset),
                    );
                    lock(log).acked.insert(value, (md.partition, md.offset));
                    break;
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => return Err(format!("partition {partition}: {last}")),
            }
            if Instant::now() >= deadline {
                return Err(format!("partition {partition}: {last}"));
            }
        }
    }
    producer.close().await;
    Ok(())
}

async fn read_all(
    client: &Client,
    topic: &str,
    partitions: i32,
    isolation: Isolation,
    deadline: Instant,
) -> Result<Vec<Read>, String> {
    let mut all = Vec::new();
    for p in 0..partitions {
        all.extend(read_partition(client, topic, p, isolation, deadline).await?);
    }
    Ok(all)
}

/// How long each phase of a run took.
struct Phases(Vec<(&'static str, u64)>, Instant);

impl Phases {
    fn new() -> Self {
        Self(Vec::new(), Instant::now())
    }

    fn end(&mut self, name: &'static str) {
        self.0.push((name, self.1.elapsed().as_millis() as u64));
        self.1 = Instant::now();
    }
}
