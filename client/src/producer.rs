//! [`Producer`]: batches records per partition, sends each partition's batches in order, and
//! tells each `send` where its record landed.
//!
//! - Batching: a partition's open batch is sent when it reaches `batch_bytes` or is
//!   `linger_ms` old, whichever comes first; while the partition's previous batch is in flight
//!   it keeps filling, so a slow round trip gives bigger batches, not a queue of small ones.
//! - Memory: records waiting to be acknowledged hold `buffer_bytes` of credit; a full buffer
//!   makes `send` wait (up to `max_block_ms`, then `BufferFull`): memory never grows without
//!   bound.
//! - Requests: once a partition of a shard is ready, every partition of that shard with
//!   records waiting (and no batch in flight) goes along in one produce request — one
//!   stream, one frame, one round trip, one commit log round on the node (Kafka's drain).
//!   A shard has at most `max_in_flight_requests_per_shard` requests unanswered; beyond it
//!   its batches keep filling. With `linger_ms = 0` and 1 in flight, batching adapts to the
//!   round trip: a batch is what arrived while the previous request was out.
//! - The sender's decisions (`plan_pass`) are a plain function of the queues, routes and
//!   clock, unit-tested without a broker.
//! - Order: up to `max_in_flight_per_partition` batches in flight per partition (idempotent
//!   producers; 1 otherwise). The node appends a producer's batches in sequence order only,
//!   so a batch that fails makes the ones sent after it fail with `OutOfOrderSequence`; they
//!   all go back to the queue in sequence order and a retry is sent only once nothing of its
//!   partition is in flight, so retries never reorder a partition.
//! - Partitioning: [`crate::partitioner`] — Kafka's murmur2 for keys, sticky for keyless.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_batch::{BatchBuilder, Compression, NewRecord};
use quiver_schema::requests;
use quiver_schema::wire;
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::cluster::{body_error, unpoisoned, Client, TopicRoute};
use crate::error::{ClientError, Result};
use crate::partitioner::partition_for_key;
use crate::record::{now_ms, ProducerRecord, RecordMetadata};

/// How much acknowledgement a send waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// The broker answers at once; offsets are unknown (-1).
    None,
    /// The leader has the batch in memory.
    Leader,
    /// The batch is written and durable per the topic's flush policy (fsync by default).
    All,
}

impl Acks {
    fn wire(self) -> wire::Acks {
        match self {
            Acks::None => wire::Acks::None,
            Acks::Leader => wire::Acks::Leader,
            Acks::All => wire::Acks::All,
        }
    }
}

/// Producer settings; see the module documentation for how they work together.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How much acknowledgement each batch waits for.
    pub acks: Acks,
    /// How long a partition's batch may wait for more records before it is sent.
    pub linger_ms: u64,
    /// Largest batch; a batch this full is sent at once.
    pub batch_bytes: usize,
    /// Memory for records not yet acknowledged; beyond it `send` waits.
    pub buffer_bytes: usize,
    /// How long `send` may wait for buffer space before failing with `BufferFull`.
    pub max_block_ms: u64,
    /// How long a batch may be retried before its records fail.
    pub delivery_timeout_ms: u64,
    /// First retry backoff; doubles up to 1 s.
    pub retry_backoff_ms: u64,
    /// `timeout_ms` the broker gets to acknowledge one produce request.
    pub request_timeout_ms: u32,
    /// Batch compression (`None`, `Lz4` or `Zstd`); the broker stores batches as they come.
    pub compression: Compression,
    /// Produce requests one shard may have unanswered (Kafka's
    /// `max.in.flight.requests.per.connection`; at least 1). While a shard is at it, its
    /// partitions' batches keep filling instead of waiting in small requests of their own:
    /// with `linger_ms = 0` and 1 here, a batch is whatever came in during one round trip.
    pub max_in_flight_requests_per_shard: usize,
    /// Batches one partition may have unanswered (default 1; Kafka allows 5 with
    /// idempotence). Above 1 the partition pipelines its batches instead of letting the next
    /// one fill while the previous is out; measured, that costs latency here
    /// (docs/decisions/0024). Without idempotence it is 1 (a retry could otherwise reorder).
    pub max_in_flight_per_partition: usize,
    /// Idempotence (on by default, as in Kafka 3): the producer gets a producer id from the
    /// node and numbers its batches per partition, so a retried batch is written once (the
    /// node answers a retry with the offsets it was first written at). A batch that fails
    /// for good leaves a gap; the producer then bumps its epoch and numbers from 0 again
    /// (KIP-360).
    pub enable_idempotence: bool,
    /// Transactions: this producer's transactional id (one per producer instance role; a
    /// new instance with the same id fences the old one). Set, the producer is idempotent
    /// and every send belongs to a transaction: `init_transactions` once, then
    /// `begin_transaction`, sends, `send_offsets_to_transaction`, `commit_transaction` or
    /// `abort_transaction`.
    pub transactional_id: Option<String>,
    /// A transaction open longer than this is aborted by its coordinator.
    pub transaction_timeout_ms: u32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            linger_ms: 5,
            batch_bytes: 256 << 10,
            buffer_bytes: 64 << 20,
            max_block_ms: 60_000,
            delivery_timeout_ms: 120_000,
            retry_backoff_ms: 100,
            request_timeout_ms: 30_000,
            compression: Compression::None,
            max_in_flight_requests_per_shard: 5,
            max_in_flight_per_partition: 1,
            enable_idempotence: true,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
        }
    }
}

type Waiter = oneshot::Sender<Result<RecordMetadata>>;
type TopicPartition = (Arc<str>, i32);

struct OpenBatch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    timestamps: Vec<i64>,
    credit_bytes: usize,
    opened: Instant,
}

struct SealedBatch {
    bytes: Bytes,
    waiters: Vec<Waiter>,
    timestamps: Vec<i64>,
    credit_bytes: usize,
    /// When its first record was added: `delivery_timeout_ms` counts from here, as Kafka's
    /// `delivery.timeout.ms` counts from `send()`, so every record's outcome is known within
    /// that time of its send, however long it waited behind other batches.
    opened: Instant,
    /// Sends that failed with a retriable error so far.
    attempts: u32,
    /// Not to be sent again before this (backoff after a failure).
    retry_at: Option<Instant>,
    /// An attempt ended without an answer (timeout, lost connection): it may have been
    /// written. Such a batch is never renumbered under a new epoch (that could write it
    /// twice).
    maybe_written: bool,
}

impl SealedBatch {
    /// When its records fail if not acknowledged by then.
    fn delivery_deadline(&self, config: &ProducerConfig) -> Instant {
        self.opened + Duration::from_millis(config.delivery_timeout_ms)
    }
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    sealed: VecDeque<SealedBatch>,
    /// Batches sent and not answered yet.
    in_flight: usize,
    /// The idempotent producer's id and epoch, when idempotence is on.
    producer: Option<(i64, i16)>,
    /// The sequence of the next batch sealed (idempotence).
    next_sequence: i32,
    /// Its batches belong to transactions (the transactional bit is set).
    transactional: bool,
}

/// The sequence after `records` more records from `seq` (wrapping to 0 after `i32::MAX`).
fn advance_sequence(seq: i32, records: i32) -> i32 {
    ((i64::from(seq) + i64::from(records)) % (i64::from(i32::MAX) + 1)) as i32
}

impl PartitionQueue {
    /// Nothing waits or flies.
    fn is_idle(&self) -> bool {
        self.open.is_none() && self.sealed.is_empty() && self.in_flight == 0
    }

    /// Idle, and no sequence to remember: the queue may be dropped (an idempotent producer
    /// keeps each partition's next sequence for its life, as Kafka's does).
    fn is_forgettable(&self) -> bool {
        self.is_idle() && self.producer.is_none()
    }

    /// Seals the open batch, if any; true when there was one.
    fn seal(&mut self, codec: Compression) -> bool {
        let Some(mut open) = self.open.take() else {
            return false;
        };
        if let Some((producer_id, epoch)) = self.producer {
            let seq = self.next_sequence;
            self.next_sequence = advance_sequence(seq, open.builder.record_count());
            open.builder = open.builder.producer(producer_id, epoch, seq);
            if self.transactional {
                open.builder = open.builder.transactional();
            }
        }
        {
            // Compression fails only on allocation failure; send such a batch uncompressed.
            let bytes = open
                .builder
                .build_compressed(codec)
                .unwrap_or_else(|_| open.builder.build());
            self.sealed.push_back(SealedBatch {
                bytes: bytes.freeze(),
                waiters: open.waiters,
                timestamps: open.timestamps,
                credit_bytes: open.credit_bytes,
                opened: open.opened,
                attempts: 0,
                retry_at: None,
                maybe_written: false,
            });
        }
        true
    }
}

/// Asks the node for a producer id (or, with `current`, the next epoch of it); `None`
/// (with a warning) when it gives none.
async fn init_producer_id(client: &Client, current: Option<(i64, i16)>) -> Option<(i64, i16)> {
    let resp = client
        .bootstrap_request(|id| requests::init_producer_id(id, None, 0, current))
        .await;
    let answer = resp.and_then(|r| {
        let b = r
            .envelope()
            .body_as_init_producer_id_response()
            .ok_or_else(|| {
                ClientError::Protocol("the InitProducerId response has no body".into())
            })?;
        body_error(b.error())?;
        Ok((b.producer_id(), b.producer_epoch()))
    });
    match answer {
        Ok(identity) => Some(identity),
        Err(e) => {
            tracing::warn!("no producer id from the node ({e}); sending without idempotence");
            None
        }
    }
}

/// The sticky partitioner's choice for one topic (Kafka's KIP-480): keyless records go to
/// `partition` until a batch of that partition is sealed, then to the next partition. Keyless
/// load thus fills one batch at a time and spreads over every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sticky {
    partition: i32,
    /// A batch of `partition` was sealed since it was chosen: move on.
    sealed: bool,
}

/// The partition the next keyless record of a topic with `n` partitions goes to, given the
/// topic's sticky choice so far; `start` picks the first partition (a per-producer random
/// number, so that many producers do not all start on the same partition).
fn sticky_partition(current: Option<Sticky>, n: usize, start: usize) -> Sticky {
    let n = n.max(1);
    match current {
        Some(s) if !s.sealed && (s.partition as usize) < n => s,
        Some(s) => Sticky {
            partition: ((s.partition as usize + 1) % n) as i32,
            sealed: false,
        },
        None => Sticky {
            partition: (start % n) as i32,
            sealed: false,
        },
    }
}

/// Marks `tp`'s sticky choice as used up once a batch of it was sealed.
fn note_sealed(sticky: &mut HashMap<Arc<str>, Sticky>, tp: &TopicPartition) {
    if let Some(s) = sticky.get_mut(&tp.0) {
        if s.partition == tp.1 {
            s.sealed = true;
        }
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<TopicPartition, PartitionQueue>,
    /// Keyless records of a topic go to this partition until its batch is sealed.
    sticky: HashMap<Arc<str>, Sticky>,
    /// Where this producer's sticky partitioning starts (random per producer).
    sticky_start: usize,
    /// Produce requests sent to each shard and not yet answered.
    requests_in_flight: HashMap<SocketAddr, usize>,
    /// Idempotence: a batch failed for good, leaving a gap in its partition's sequences; the
    /// sender bumps the epoch (sequences restart at 0) before it sends anything else.
    needs_epoch_bump: bool,
    /// The identity after the last bump (it replaces the first one).
    bumped_identity: Option<(i64, i16)>,
    /// Transactions: one is open (between `begin_transaction` and its end).
    txn_open: bool,
    /// Transactions: a send of the open transaction failed; it can only be aborted.
    txn_failed: Option<ClientError>,
}

/// A topic's route lookup started by the sender: in flight (`None`) or failed (its error,
/// taken by the next pass).
type RouteLookups = HashMap<Arc<str>, Option<ClientError>>;

struct Inner {
    client: Client,
    config: ProducerConfig,
    credit: Arc<Semaphore>,
    state: Mutex<State>,
    route_lookups: Mutex<RouteLookups>,
    wake_sender: Notify,
    idle: Notify,
    closed: AtomicBool,
    /// Retries logged at WARN at most once per [`RETRY_WARN_EVERY`]: when was the last one,
    /// and how many retries went unlogged since.
    retry_warned: Mutex<(Option<Instant>, u64)>,
    /// The producer id and epoch, asked for at the first send when idempotence is on
    /// (`None` inside: the node gave none; sends go without idempotence).
    identity: tokio::sync::OnceCell<Option<(i64, i16)>>,
}

/// At most one WARN per this interval about batches being retried (a full disk retries every
/// batch of every partition).
const RETRY_WARN_EVERY: Duration = Duration::from_secs(1);

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        unpoisoned(&self.state)
    }

    fn route_lookups(&self) -> MutexGuard<'_, RouteLookups> {
        unpoisoned(&self.route_lookups)
    }
}

/// Resolves to where the record landed once its batch is acknowledged.
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// A producer; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

fn record_bytes(r: &ProducerRecord) -> usize {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    // Record framing is a handful of varints; 32 bytes covers it with room.
    32 + len(&r.key)
        + len(&r.value)
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + len(v) + 8)
            .sum::<usize>()
}

/// A per-producer random number (from the clock and the process id: no RNG dependency for
/// one number).
fn random_start() -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    nanos ^ (std::process::id() as usize).wrapping_mul(0x9E37_79B9)
}

impl Producer {
    /// A producer on `client`; starts its sender task on the current tokio runtime.
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        let inner = Arc::new(Inner {
            client,
            credit: Arc::new(Semaphore::new(config.buffer_bytes)),
            config,
            state: Mutex::new(State {
                sticky_start: random_start(),
                ..State::default()
            }),
            route_lookups: Mutex::new(HashMap::new()),
            wake_sender: Notify::new(),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
            retry_warned: Mutex::new((None, 0)),
            identity: tokio::sync::OnceCell::new(),
        });
        tokio::spawn(sender_loop(inner.clone()));
        Self { inner }
    }

    /// Sends `record` and resolves once it is acknowledged (per `acks`).
    ///
    /// To have many records in flight from one task, use [`Producer::enqueue`] and await the
    /// returned futures later.
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.enqueue(record).await?.await
    }

    /// Puts `record` in its partition's batch (waiting while the buffer is full) and returns
    /// the future of its delivery.
    pub async fn enqueue(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let size = record_bytes(&record);
        let cfg = &self.inner.config;
        if size + quiver_batch::HEADER_BYTES > cfg.batch_bytes {
            return Err(ClientError::RecordTooLarge {
                size_bytes: size,
                max_bytes: cfg.batch_bytes,
            });
        }
        if cfg.transactional_id.is_some() {
            let st = self.inner.state();
            if !st.txn_open {
                return Err(ClientError::Invalid(
                    "a transactional producer sends inside a transaction: call begin_transaction first (and init_transactions once before)".into(),
                ));
            }
        }
        let partition = self.choose_partition(&record).await?;
        if cfg.enable_idempotence && cfg.transactional_id.is_none() {
            self.inner
                .identity
                .get_or_init(|| init_producer_id(&self.inner.client, None))
                .await;
        }
        let credit = u32::try_from(size).unwrap_or(u32::MAX);
        let permit = tokio::time::timeout(
            Duration::from_millis(cfg.max_block_ms),
            self.inner.credit.clone().acquire_many_owned(credit),
        )
        .await
        .map_err(|_| ClientError::BufferFull {
            max_block_ms: cfg.max_block_ms,
        })?
        .map_err(|_| ClientError::Closed)?;
        permit.forget(); // returned with add_permits when the batch is done
        let (tx, rx) = oneshot::channel();
        let sealed = self.add_to_batch(
            (Arc::from(record.topic.as_str()), partition),
            &record,
            size,
            tx,
        );
        if sealed {
            self.inner.wake_sender.notify_one();
        }
        Ok(DeliveryFuture { rx })
    }

    async fn choose_partition(&self, record: &ProducerRecord) -> Result<i32> {
        if let Some(p) = record.partition {
            return Ok(p);
        }
        let route = self.inner.client.route(&record.topic).await?;
        let n = route.partitions.len();
        if n == 0 {
            return Err(ClientError::Invalid(format!(
                "topic {:?} has no partitions",
                record.topic
            )));
        }
        if let Some(key) = &record.key {
            return Ok(partition_for_key(key, n));
        }
        let mut st = self.inner.state();
        let topic: Arc<str> = Arc::from(record.topic.as_str());
        let choice = sticky_partition(st.sticky.get(&topic).copied(), n, st.sticky_start);
        st.sticky.insert(topic, choice);
        Ok(choice.partition)
    }

    /// Adds the record; returns true when a batch was sealed (the sender should look).
    fn add_to_batch(
        &self,
        tp: TopicPartition,
        record: &ProducerRecord,
        size: usize,
        waiter: Waiter,
    ) -> bool {
        let cfg = &self.inner.config;
        let ts = record.timestamp_ms.unwrap_or_else(now_ms);
        let new_record = NewRecord {
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
            timestamp_ms: ts,
        };
        let mut st = self.inner.state();
        let identity = st
            .bumped_identity
            .or(self.inner.identity.get().copied().flatten());
        let q = st.queues.entry(tp.clone()).or_default();
        q.producer = identity;
        q.transactional = cfg.transactional_id.is_some();
        let mut sealed = false;
        if q.open
            .as_ref()
            .is_some_and(|o| o.builder.size_bytes() + size > cfg.batch_bytes)
        {
            sealed = q.seal(cfg.compression);
        }
        let open = q.open.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(),
            waiters: Vec::new(),
            timestamps: Vec::new(),
            credit_bytes: 0,
            opened: Instant::now(),
        });
        let first_in_batch = open.waiters.is_empty();
        open.builder.push(&new_record);
        open.waiters.push(waiter);
        open.timestamps.push(ts);
        open.credit_bytes += size;
        if open.builder.size_bytes() >= cfg.batch_bytes {
            sealed |= q.seal(cfg.compression);
        }
        if sealed {
            note_sealed(&mut st.sticky, &tp);
        }
        sealed || first_in_batch
    }

    /// Sends every batch now and waits until all records sent so far are acknowledged or
    /// failed.
    pub async fn flush(&self) {
        {
            let mut st = self.inner.state();
            let State { queues, sticky, .. } = &mut *st;
            for (tp, q) in queues.iter_mut() {
                if q.seal(self.inner.config.compression) {
                    note_sealed(sticky, tp);
                }
            }
        }
        self.inner.wake_sender.notify_one();
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self
                .inner
                .state()
                .queues
                .values()
                .all(PartitionQueue::is_idle)
            {
                return;
            }
            idle.await;
        }
    }

    /// Flushes, then refuses further sends.
    pub async fn close(&self) {
        self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake_sender.notify_one();
    }
}

/// What one pass of the sender takes: per shard address, the batches of one request.
type Requests = HashMap<SocketAddr, Vec<(TopicPartition, SealedBatch)>>;

/// The routes the sender knows this pass, by topic (an error: the topic's lookup failed).
type Routes = HashMap<Arc<str>, Result<Arc<TopicRoute>>>;

/// Most record bytes one produce request carries; a shard with more ready gets several
/// requests (each partition still has one batch in flight at most).
const MAX_REQUEST_RECORD_BYTES: usize = 4 << 20;

/// What one pass of the sender decided: the requests to send, the batches that fail without
/// being sent (no route, or their delivery timeout ran out while they waited; settled with
/// their error), and when to look again if nothing wakes the sender.
#[derive(Default)]
struct Pass {
    requests: Requests,
    failed: Vec<(TopicPartition, SealedBatch, ClientError)>,
    next_deadline: Option<Instant>,
}

/// The sender's decision, without I/O: which batches go now.
///
/// A partition is ready when it has no batch in flight, is not backing off, its shard has
/// fewer than `max_in_flight_requests_per_shard` requests unanswered, and it has a full batch
/// or one `linger_ms` old. As Kafka's sender drains a ready broker, the other partitions of
/// a shard with a ready partition go along with whatever they hold: with the node's commit
/// log one round makes them all durable, so one request per round trip halves the node's
/// CPU at 50,000 msg/s over 16 partitions (docs/decisions/0012; before the commit log it did
/// the opposite, 0007). Marks the partitions it takes as in flight.
fn plan_pass(st: &mut State, routes: &Routes, now: Instant, config: &ProducerConfig) -> Pass {
    let linger = Duration::from_millis(config.linger_ms);
    let max_in_flight = config.max_in_flight_requests_per_shard.max(1);
    let mut pass = Pass::default();
    let State {
        queues,
        requests_in_flight,
        sticky,
        ..
    } = st;
    let per_partition = if config.enable_idempotence || config.transactional_id.is_some() {
        config.max_in_flight_per_partition.max(1)
    } else {
        1
    };
    for (tp, q) in queues.iter_mut() {
        let retrying = q.sealed.front().is_some_and(|b| b.attempts > 0);
        if q.in_flight >= per_partition || (retrying && q.in_flight > 0) {
            // At its limit, the open batch keeps growing (up to batch_bytes) while the
            // partition waits for an acknowledgement: a slower round trip makes batches
            // bigger instead of queueing more small ones, as Kafka's accumulator does. A
            // retry waits until nothing of its partition is in flight (order).
            continue;
        }
        if let Some(at) = q.sealed.front().and_then(|b| b.retry_at) {
            if at > now {
                pass.next_deadline = Some(pass.next_deadline.map_or(at, |n| n.min(at)));
                continue;
            }
        }
        let Some(route) = routes.get(&tp.0) else {
            // Its route is being looked up (the lookup wakes the sender when done), or the
            // topic was enqueued since the routes were read (its enqueue woke the sender).
            continue;
        };
        let addr = route
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| r.address(tp.1));
        if let Ok(addr) = &addr {
            let shard_busy = requests_in_flight.get(addr).copied().unwrap_or(0) >= max_in_flight
                && !pass.requests.contains_key(addr);
            if shard_busy {
                // Keeps filling; the shard's next answer wakes the sender.
                continue;
            }
        }
        if q.sealed.is_empty()
            && q.open
                .as_ref()
                .is_some_and(|o| now.duration_since(o.opened) >= linger)
            && q.seal(config.compression)
        {
            note_sealed(sticky, tp);
        }
        let Some(batch) = q.sealed.pop_front() else {
            if let Some(o) = &q.open {
                let d = o.opened + linger;
                pass.next_deadline = Some(pass.next_deadline.map_or(d, |n| n.min(d)));
            }
            continue;
        };
        q.in_flight += 1;
        if now >= batch.delivery_deadline(config) {
            // It waited behind its partition's earlier batches (in flight or retrying) for
            // the whole delivery timeout: fail it now rather than send it late.
            let e = ClientError::DeliveryTimeout {
                timeout_ms: config.delivery_timeout_ms,
                last_error: "the batch expired before it could be sent (its partition's earlier batches were still being retried)".into(),
            };
            pass.failed.push((tp.clone(), batch, e));
            continue;
        }
        match addr {
            Ok(addr) => pass
                .requests
                .entry(addr)
                .or_default()
                .push((tp.clone(), batch)),
            Err(e) => pass.failed.push((tp.clone(), batch, e)),
        }
    }
    drain_shards_with_ready_partitions(
        queues,
        routes,
        &mut pass.requests,
        sticky,
        config.compression,
    );
    queues.retain(|_, q| !q.is_forgettable());
    pass
}

/// Sends what [`plan_pass`] finds ready; sleeps until the next linger or backoff deadline, or
/// a wake-up (a send that fills or starts a batch, an answer, a route lookup's end).
async fn sender_loop(inner: Arc<Inner>) {
    // Linger deadlines are often < 1 ms away: tokio's 1 ms timer would add up to a whole
    // tick to each (crate::timer). Without a timerfd, tokio's timer still works, coarser.
    let mut timer = match crate::timer::PreciseTimer::new() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("no timerfd ({e}): linger_ms deadlines follow tokio's 1 ms timer");
            None
        }
    };
    loop {
        let (needs_bump, in_flight) = {
            let st = inner.state();
            (
                st.needs_epoch_bump,
                st.queues.values().any(|q| q.in_flight > 0),
            )
        };
        if needs_bump && in_flight {
            // Bump only once nothing is in flight (Kafka's rule): a batch in flight keeps the
            // number it was sent with until it is answered; nothing new goes out meanwhile.
            inner.wake_sender.notified().await;
            continue;
        }
        if needs_bump {
            bump_epoch(&inner).await;
        }
        let routes = resolve_routes(&inner);
        let pass = plan_pass(&mut inner.state(), &routes, Instant::now(), &inner.config);
        for (tp, batch, e) in pass.failed {
            settle(&inner, tp, batch, Err(e));
        }
        for (addr, batches) in pass.requests {
            for chunk in split_by_size(batches) {
                let request = RequestInFlight::start(&inner, addr);
                tokio::spawn(deliver(request, chunk));
            }
        }
        if inner.closed.load(Ordering::Acquire)
            && inner.state().queues.values().all(PartitionQueue::is_idle)
        {
            return;
        }
        match (pass.next_deadline, timer.as_mut()) {
            (Some(d), Some(timer)) => {
                tokio::select! {
                    () = timer.sleep_until(d) => {}
                    () = inner.wake_sender.notified() => {}
                }
            }
            (Some(d), None) => {
                let _ = tokio::time::timeout_at(
                    tokio::time::Instant::from_std(d),
                    inner.wake_sender.notified(),
                )
                .await;
            }
            (None, _) => inner.wake_sender.notified().await,
        }
    }
}

mod transaction;
pub use transaction::GroupMetadata;

/// True when `batch` carries a producer id.
fn is_idempotent(batch: &[u8]) -> bool {
    quiver_batch::BatchHeader::parse(batch).is_ok_and(|h| h.producer_id >= 0)
}

/// After a batch failed for good: the next epoch of the producer id (KIP-360), every
/// partition's sequences back to 0, and the batches waiting to be sent renumbered, so the
/// gap the failed batch left does not fail every later batch.
async fn bump_epoch(inner: &Arc<Inner>) {
    let current = {
        let st = inner.state();
        st.bumped_identity
            .or(inner.identity.get().copied().flatten())
    };
    let Some(current) = current else {
        inner.state().needs_epoch_bump = false;
        return;
    };
    let Some(next) = init_producer_id(&inner.client, Some(current)).await else {
        return; // the sender tries again on its next pass
    };
    tracing::info!(
        producer_id = next.0,
        epoch = next.1,
        "a batch failed for good: producer epoch bumped, sequences restart at 0"
    );
    let mut unknown = Vec::new();
    let mut st = inner.state();
    st.needs_epoch_bump = false;
    st.bumped_identity = Some(next);
    for q in st.queues.values_mut() {
        q.producer = Some(next);
        q.next_sequence = 0;
        // A batch whose earlier attempt got no answer may have been written: renumbered, a
        // retry could write it again. It fails instead, saying so; the others are renumbered.
        let (maybe, rest): (Vec<SealedBatch>, Vec<SealedBatch>) =
            q.sealed.drain(..).partition(|b| b.maybe_written);
        unknown.extend(maybe);
        q.sealed = rest.into();
        for batch in q.sealed.iter_mut() {
            let mut bytes = bytes::BytesMut::from(&batch.bytes[..]);
            let count = quiver_batch::BatchHeader::parse(&bytes).map_or(0, |h| h.records_count);
            let h = quiver_batch::header::PRODUCER_ID_AT;
            bytes[h..h + 8].copy_from_slice(&next.0.to_be_bytes());
            let e = quiver_batch::header::PRODUCER_EPOCH_AT;
            bytes[e..e + 2].copy_from_slice(&next.1.to_be_bytes());
            let s = quiver_batch::header::BASE_SEQUENCE_AT;
            bytes[s..s + 4].copy_from_slice(&q.next_sequence.to_be_bytes());
            quiver_batch::header::stamp_crc(&mut bytes);
            q.next_sequence = advance_sequence(q.next_sequence, count);
            batch.bytes = bytes.freeze();
        }
    }
    drop(st);
    for batch in unknown {
        let e = ClientError::DeliveryTimeout {
            timeout_ms: inner.config.delivery_timeout_ms,
            last_error: "an earlier attempt got no answer and may have been written; it is not sent again under the producer's new epoch, where it could be written twice".into(),
        };
        for waiter in batch.waiters {
            let _ = waiter.send(Err(e.clone()));
        }
        inner.credit.add_permits(batch.credit_bytes);
    }
    inner.idle.notify_waiters();
}

/// Kafka's drain: every partition of a shard that already gets a request this pass goes
/// along with the records it holds (its open batch sealed early), unless it has a batch in
/// flight or is backing off after a failure.
fn drain_shards_with_ready_partitions(
    queues: &mut HashMap<TopicPartition, PartitionQueue>,
    routes: &Routes,
    requests: &mut Requests,
    sticky: &mut HashMap<Arc<str>, Sticky>,
    compression: Compression,
) {
    if requests.is_empty() {
        return;
    }
    for (tp, q) in queues.iter_mut() {
        if q.in_flight > 0 || !q.sealed.is_empty() || q.open.is_none() {
            continue; // in flight, backing off (a sealed batch left), or nothing to send
        }
        let Some(Ok(route)) = routes.get(&tp.0) else {
            continue;
        };
        let Some(shard_request) = route.address(tp.1).ok().and_then(|a| requests.get_mut(&a))
        else {
            continue;
        };
        if q.seal(compression) {
            note_sealed(sticky, tp);
        }
        if let Some(batch) = q.sealed.pop_front() {
            q.in_flight += 1;
            shard_request.push((tp.clone(), batch));
        }
    }
}

/// The routes of the topics with queued records, as far as they are known without waiting:
/// the client's cached ones, and the error of a lookup that failed since the last pass (the
/// topic's ready batches settle with it, and retry when it is retriable). A topic with no
/// cached route gets a lookup in the background, which wakes the sender when it ends, so a
/// slow or unreachable broker never holds up the batches of topics whose routes are known.
fn resolve_routes(inner: &Arc<Inner>) -> Routes {
    let topics: Vec<Arc<str>> = {
        let st = inner.state();
        let mut t: Vec<Arc<str>> = st.queues.keys().map(|tp| tp.0.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let mut routes = HashMap::with_capacity(topics.len());
    for topic in topics {
        if let Some(route) = inner.client.cached_route(&topic) {
            routes.insert(topic, Ok(route));
            continue;
        }
        let mut lookups = inner.route_lookups();
        match lookups.get_mut(&topic) {
            Some(None) => {} // in flight
            Some(failed) => {
                if let Some(e) = failed.take() {
                    lookups.remove(&topic);
                    routes.insert(topic, Err(e));
                }
            }
            None => {
                lookups.insert(topic.clone(), None);
                tokio::spawn(look_up_route(inner.clone(), topic));
            }
        }
    }
    routes
}

/// Asks the cluster where `topic` is; the route lands in the client's cache, an error in
/// `route_lookups` for the sender's next pass.
async fn look_up_route(inner: Arc<Inner>, topic: Arc<str>) {
    let result = inner.client.refresh_route(&topic).await;
    {
        let mut lookups = inner.route_lookups();
        match result {
            Ok(_) => lookups.remove(&topic),
            Err(e) => lookups.insert(topic, Some(e)),
        };
    }
    inner.wake_sender.notify_one();
}

/// Splits one shard's batches into requests of at most [`MAX_REQUEST_RECORD_BYTES`] (a
/// batch larger than that goes alone).
fn split_by_size(
    batches: Vec<(TopicPartition, SealedBatch)>,
) -> Vec<Vec<(TopicPartition, SealedBatch)>> {
    let mut out: Vec<Vec<(TopicPartition, SealedBatch)>> = Vec::new();
    let mut bytes = 0;
    for (tp, b) in batches {
        let len = b.bytes.len();
        match out.last_mut() {
            Some(cur) if bytes + len <= MAX_REQUEST_RECORD_BYTES => {
                bytes += len;
                cur.push((tp, b));
            }
            _ => {
                bytes = len;
                out.push(vec![(tp, b)]);
            }
        }
    }
    out
}

/// One produce request counted against its shard's `max_in_flight_requests_per_shard` from
/// its start until it is dropped (answered, failed, or its task cancelled).
struct RequestInFlight {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl RequestInFlight {
    fn start(inner: &Arc<Inner>, addr: SocketAddr) -> Self {
        *inner.state().requests_in_flight.entry(addr).or_default() += 1;
        Self {
            inner: inner.clone(),
            addr,
        }
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let mut st = self.inner.state();
        if let Some(n) = st.requests_in_flight.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.requests_in_flight.remove(&self.addr);
            }
        }
    }
}

/// Sends one request carrying one batch for each of several partitions of one shard, and
/// settles each batch by its own entry of the response.
async fn deliver(request: RequestInFlight, batches: Vec<(TopicPartition, SealedBatch)>) {
    let inner = request.inner.clone();
    let addr = request.addr;
    let cfg = &inner.config;
    let result = inner
        .client
        .request_to(addr, |id| {
            let parts: Vec<requests::ProducePart<'_>> = batches
                .iter()
                .map(|(tp, b)| requests::ProducePart {
                    topic: &tp.0,
                    partition: tp.1,
                    records: &b.bytes,
                })
                .collect();
            requests::produce_many_txn(
                id,
                cfg.acks.wire(),
                cfg.request_timeout_ms,
                &parts,
                cfg.transactional_id.as_deref(),
            )
        })
        .await;
    let n = batches.len();
    let outcomes: Vec<Result<i64>> = match &result {
        Ok(resp) => match resp
            .envelope()
            .body_as_produce_response()
            .and_then(|b| b.partitions())
            .filter(|e| e.len() == n)
        {
            Some(entries) => entries
                .iter()
                .map(|entry| body_error(entry.error()).map(|()| entry.base_offset()))
                .collect(),
            None => {
                let e = ClientError::Protocol(format!(
                    "the produce response does not have one entry for each of the {n} partitions sent"
                ));
                vec![Err(e); n]
            }
        },
        Err(e) => vec![Err(e.clone()); n],
    };
    let mut refresh = Vec::new();
    for ((tp, batch), outcome) in batches.into_iter().zip(outcomes) {
        let stale = |e: &ClientError| e.needs_metadata_refresh();
        if outcome.as_ref().is_err_and(stale) && !refresh.contains(&tp.0) {
            refresh.push(tp.0.clone());
        }
        settle(&inner, tp, batch, outcome);
    }
    // The shard may take the next request while routes are refreshed.
    drop(request);
    for topic in refresh {
        if let Err(e) = inner.client.refresh_route(&topic).await {
            tracing::debug!(topic = %topic, "metadata refresh after a failed produce failed: {e}");
        }
    }
    inner.wake_sender.notify_one();
}

/// Logs a batch's retry: at WARN (as Kafka does: a retry costs the batch at least its
/// backoff) at most once per [`RETRY_WARN_EVERY`], with the count of retries since; the rest
/// at DEBUG.
fn log_retry(inner: &Inner, tp: &TopicPartition, attempt: u32, backoff: Duration, e: &ClientError) {
    let backoff_ms = backoff.as_millis() as u64;
    let unlogged = {
        let mut w = unpoisoned(&inner.retry_warned);
        if w.0.is_some_and(|at| at.elapsed() < RETRY_WARN_EVERY) {
            w.1 += 1;
            None
        } else {
            let unlogged = w.1;
            *w = (Some(Instant::now()), 0);
            Some(unlogged)
        }
    };
    match unlogged {
        Some(unlogged) => tracing::warn!(
            topic = %tp.0,
            partition = tp.1,
            attempt,
            backoff_ms,
            other_retries_since_last_warning = unlogged,
            "retrying a batch after: {e}"
        ),
        None => {
            tracing::debug!(topic = %tp.0, partition = tp.1, attempt, backoff_ms, "retrying a batch after: {e}")
        }
    }
}

/// Puts a batch to retry back among the partition's sealed batches, in sequence order (a
/// batch without a sequence goes first, as before pipelining).
fn requeue(q: &mut PartitionQueue, batch: SealedBatch) {
    let seq = |b: &SealedBatch| {
        quiver_batch::BatchHeader::parse(&b.bytes).map_or(-1, |h| h.base_sequence)
    };
    let s = seq(&batch);
    let at = q
        .sealed
        .iter()
        .position(|b| seq(b) > s || b.attempts == 0)
        .unwrap_or(q.sealed.len());
    q.sealed.insert(at, batch);
}

/// The client found the topic in the metadata before sending: a node answering
/// `UnknownTopic` is behind (restarted, still catching up with the controller). As Kafka
/// treats UNKNOWN_TOPIC_OR_PARTITION on produce: retried, after a metadata refresh.
fn refused_by_a_stale_node(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Broker {
            code: wire::ErrorCode::UnknownTopic,
            ..
        }
    )
}

/// Settles one partition's batch: resolves its records, or puts it back at the head of its
/// partition's queue to retry after a backoff (within `delivery_timeout_ms`), so retries
/// never reorder a partition.
fn settle(inner: &Inner, tp: TopicPartition, mut batch: SealedBatch, outcome: Result<i64>) {
    let cfg = &inner.config;
    let deadline = batch.delivery_deadline(cfg);
    // Refused as out of order: an earlier batch of the partition was not written yet when
    // this one was handled (pipelined requests handled out of order, or an earlier batch
    // being retried). It goes back to the queue in sequence order and is sent after it. A
    // real gap (an earlier batch failed for good) is closed by the epoch bump, which
    // renumbers it.
    let behind_a_retry = matches!(
        &outcome,
        Err(ClientError::Broker {
            code: wire::ErrorCode::OutOfOrderSequence,
            ..
        })
    );
    let stale_node = outcome.as_ref().is_err_and(refused_by_a_stale_node);
    let outcome = match outcome {
        Err(e) if e.is_retriable() || behind_a_retry || stale_node => {
            let backoff = Duration::from_millis(cfg.retry_backoff_ms.max(1))
                .saturating_mul(1 << batch.attempts.min(10))
                .min(Duration::from_secs(1));
            // Behind a retry: sent again right after it, without a backoff of its own.
            let at = Instant::now()
                + if behind_a_retry {
                    Duration::ZERO
                } else {
                    backoff
                };
            if at < deadline {
                log_retry(inner, &tp, batch.attempts + 1, backoff, &e);
                batch.attempts += 1;
                // Only an out-of-order refusal says for sure the batch was not written: a
                // timeout, a lost connection, and even a refusal from a leader deposed after
                // it proposed the batch ("may or may not be kept") leave it possibly written.
                // Such a batch is never renumbered under a new epoch (a duplicate).
                batch.maybe_written |= !behind_a_retry;
                batch.retry_at = Some(at);
                let mut st = inner.state();
                let q = st.queues.entry(tp).or_default();
                requeue(q, batch);
                q.in_flight = q.in_flight.saturating_sub(1);
                return;
            }
            Err(ClientError::DeliveryTimeout {
                timeout_ms: cfg.delivery_timeout_ms,
                last_error: e.to_string(),
            })
        }
        other => other,
    };
    for (i, (waiter, ts)) in batch.waiters.into_iter().zip(batch.timestamps).enumerate() {
        let r = match &outcome {
            Ok(base) => Ok(RecordMetadata {
                partition: tp.1,
                offset: if *base < 0 { -1 } else { base + i as i64 },
                timestamp_ms: ts,
            }),
            Err(e) => Err(e.clone()),
        };
        let _ = waiter.send(r);
    }
    inner.credit.add_permits(batch.credit_bytes);
    {
        let mut st = inner.state();
        if let Err(e) = &outcome {
            if cfg.transactional_id.is_some() {
                // The transaction's epoch is its coordinator's: the transaction aborts.
                st.txn_failed.get_or_insert_with(|| e.clone());
            } else if is_idempotent(&batch.bytes) {
                st.needs_epoch_bump = true;
            }
        }
        if let Some(q) = st.queues.get_mut(&tp) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
    }
    inner.idle.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD_A: &str = "127.0.0.1:7001";
    const SHARD_B: &str = "127.0.0.1:7002";

    /// Topic "t": partitions 0 and 1 on shard A, partition 2 on shard B.
    fn routes() -> Routes {
        let a = SHARD_A.parse().unwrap();
        let b = SHARD_B.parse().unwrap();
        let route = TopicRoute {
            name: "t".into(),
            partitions: vec![a, a, b],
        };
        HashMap::from([(Arc::from("t"), Ok(Arc::new(route)))])
    }

    fn config(linger_ms: u64, max_in_flight_requests_per_shard: usize) -> ProducerConfig {
        ProducerConfig {
            linger_ms,
            max_in_flight_requests_per_shard,
            ..ProducerConfig::default()
        }
    }

    /// Adds one record to partition `p` of "t", whose open batch (if new) opened at `opened`.
    fn add(st: &mut State, p: i32, opened: Instant) {
        let q = st.queues.entry((Arc::from("t"), p)).or_default();
        let open = q.open.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(),
            waiters: Vec::new(),
            timestamps: Vec::new(),
            credit_bytes: 0,
            opened,
        });
        open.builder.push(&NewRecord {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
            timestamp_ms: 0,
        });
        open.waiters.push(oneshot::channel().0);
        open.timestamps.push(0);
    }

    /// The partitions each shard's request carries, sorted.
    fn sent(pass: &Pass, shard: &str) -> Vec<i32> {
        let addr: SocketAddr = shard.parse().unwrap();
        let mut p: Vec<i32> = pass
            .requests
            .get(&addr)
            .map(|r| r.iter().map(|(tp, _)| tp.1).collect())
            .unwrap_or_default();
        p.sort();
        p
    }

    #[test]
    fn a_batch_waits_out_linger_then_goes() {
        let (mut st, t0) = (State::default(), Instant::now());
        add(&mut st, 0, t0);
        let cfg = config(5, 5);
        let early = plan_pass(&mut st, &routes(), t0 + Duration::from_millis(1), &cfg);
        assert!(early.requests.is_empty());
        assert_eq!(early.next_deadline, Some(t0 + Duration::from_millis(5)));
        let due = plan_pass(&mut st, &routes(), t0 + Duration::from_millis(5), &cfg);
        assert_eq!(sent(&due, SHARD_A), [0]);
        assert_eq!(st.queues[&(Arc::from("t"), 0)].in_flight, 1);
    }

    #[test]
    fn a_ready_partition_takes_the_others_of_its_shard_along_but_not_other_shards() {
        let (mut st, t0) = (State::default(), Instant::now());
        add(&mut st, 0, t0);
        let now = t0 + Duration::from_millis(5);
        add(&mut st, 1, now); // just opened, same shard
        add(&mut st, 2, now); // just opened, shard B
        let pass = plan_pass(&mut st, &routes(), now, &config(5, 5));
        assert_eq!(sent(&pass, SHARD_A), [0, 1]);
        assert_eq!(sent(&pass, SHARD_B), Vec::<i32>::new());
        assert_eq!(pass.next_deadline, Some(now + Duration::from_millis(5)));
    }

    #[test]
    fn a_shard_at_its_request_limit_lets_batches_fill_until_it_answers() {
        let (mut st, t0) = (State::default(), Instant::now());
        let cfg = config(0, 1);
        st.requests_in_flight.insert(SHARD_A.parse().unwrap(), 1);
        add(&mut st, 0, t0);
        add(&mut st, 0, t0);
        add(&mut st, 2, t0);
        let busy = plan_pass(&mut st, &routes(), t0, &cfg);
        assert_eq!(
            sent(&busy, SHARD_A),
            Vec::<i32>::new(),
            "shard A is at its limit"
        );
        assert_eq!(sent(&busy, SHARD_B), [2], "shard B is not");
        assert_eq!(
            busy.next_deadline, None,
            "the answer wakes the sender, not a timer"
        );
        let q = &st.queues[&(Arc::from("t"), 0)];
        assert!(
            q.sealed.is_empty() && q.in_flight == 0,
            "the batch stays open to fill"
        );
        add(&mut st, 0, t0);
        st.requests_in_flight.clear(); // shard A answered
        let after = plan_pass(&mut st, &routes(), t0, &cfg);
        let batches = &after.requests[&SHARD_A.parse().unwrap()];
        assert_eq!(batches.len(), 1);
        assert_eq!(
            batches[0].1.waiters.len(),
            3,
            "one batch of all three records"
        );
    }

    #[test]
    fn keyless_records_move_to_the_next_partition_each_time_a_batch_is_sealed() {
        let first = sticky_partition(None, 4, 6);
        assert_eq!(
            first.partition, 2,
            "starts where the producer's random start says"
        );
        assert_eq!(
            sticky_partition(Some(first), 4, 6),
            first,
            "stays while the batch is open"
        );
        let mut seen = Vec::new();
        let mut s = first;
        for _ in 0..4 {
            s.sealed = true;
            s = sticky_partition(Some(s), 4, 6);
            seen.push(s.partition);
        }
        assert_eq!(seen, [3, 0, 1, 2], "one batch on each partition in turn");
        let shrunk = Sticky {
            partition: 7,
            sealed: false,
        };
        assert_eq!(sticky_partition(Some(shrunk), 4, 0).partition, 0);
    }

    #[test]
    fn a_linger_seal_by_the_sender_moves_the_sticky_partition_on() {
        let (mut st, t0) = (State::default(), Instant::now());
        st.sticky.insert(
            Arc::from("t"),
            Sticky {
                partition: 0,
                sealed: false,
            },
        );
        add(&mut st, 0, t0);
        let pass = plan_pass(
            &mut st,
            &routes(),
            t0 + Duration::from_millis(5),
            &config(5, 5),
        );
        assert_eq!(sent(&pass, SHARD_A), [0]);
        assert!(st.sticky[&Arc::from("t")].sealed);
    }

    #[test]
    fn a_batch_whose_delivery_timeout_ran_out_while_waiting_fails_unsent() {
        let (mut st, t0) = (State::default(), Instant::now());
        let cfg = ProducerConfig {
            delivery_timeout_ms: 100,
            ..config(0, 5)
        };
        add(&mut st, 0, t0);
        add(&mut st, 1, t0 + Duration::from_millis(50));
        let pass = plan_pass(&mut st, &routes(), t0 + Duration::from_millis(100), &cfg);
        assert_eq!(sent(&pass, SHARD_A), [1], "partition 1 still has 50 ms");
        assert_eq!(pass.failed.len(), 1);
        let (tp, _, e) = &pass.failed[0];
        assert_eq!(tp.1, 0);
        assert!(matches!(
            e,
            ClientError::DeliveryTimeout {
                timeout_ms: 100,
                ..
            }
        ));
    }

    #[test]
    fn a_batch_backing_off_after_a_failure_waits_for_its_retry_time() {
        let (mut st, t0) = (State::default(), Instant::now());
        add(&mut st, 0, t0);
        let q = st.queues.get_mut(&(Arc::from("t"), 0)).unwrap();
        q.seal(Compression::None);
        let retry_at = t0 + Duration::from_millis(100);
        q.sealed[0].retry_at = Some(retry_at);
        add(&mut st, 1, t0); // ready: takes shard A's request, but 0 may not go along
        let pass = plan_pass(
            &mut st,
            &routes(),
            t0 + Duration::from_millis(10),
            &config(0, 5),
        );
        assert_eq!(sent(&pass, SHARD_A), [1]);
        assert_eq!(pass.next_deadline, Some(retry_at));
        let later = plan_pass(&mut st, &routes(), retry_at, &config(0, 5));
        assert_eq!(sent(&later, SHARD_A), [0]);
    }
}
