//! [`Consumer`]: reads assigned partitions from chosen positions as a stream of records.
//!
//! One long-poll fetch loop per shard (covering every assigned partition that shard serves)
//! prefetches whole batches into a queue bounded by
//! `max_buffer_bytes` (no busy loop when idle: a fetch waits at the broker until data arrives
//! or `fetch_max_wait_ms` passes). Records are handed out with their key and value as slices
//! of the fetched batch.
//!
//! Transaction markers (control batches) are never handed out. With
//! [`Isolation::ReadCommitted`] a consumer reads up to each partition's last stable offset
//! and skips the batches of aborted transactions (the broker lists them with each fetch, as
//! Kafka's does); the default, [`Isolation::ReadUncommitted`], reads up to the high watermark.
//!
//! A consumer group member ([`crate::GroupConsumer`]) drives one of these with
//! `add_assigned`/`remove_assigned` as its assignment changes.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use quiver_batch::{BatchHeader, RecordIter};
use quiver_schema::requests::{self, FetchLimits, FetchPart};
use quiver_schema::wire::ErrorCode;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::admin::{Admin, OffsetQuery};
use crate::cluster::{body_error, Client};
use crate::error::{ClientError, Result};
use crate::record::ConsumerRecord;

/// What to do when the position is outside the log (retention deleted it, or it is beyond the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Move to the first offset still in the log.
    Earliest,
    /// Move to the end of the log (only records produced from now on).
    Latest,
    /// Report `OffsetOutOfRange` as an error; a partition without a position must be `seek`ed
    /// first (reading it fails otherwise, like Kafka's `NoOffsetForPartitionException`).
    Error,
}

impl OffsetReset {
    /// Where a partition without a valid position moves to; `None` for `Error`.
    pub fn seek_to(self) -> Option<SeekTo> {
        match self {
            OffsetReset::Earliest => Some(SeekTo::Beginning),
            OffsetReset::Latest => Some(SeekTo::End),
            OffsetReset::Error => None,
        }
    }
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The first offset still in the log.
    Beginning,
    /// The end of the log: the offset the next record will get.
    End,
    /// This exact offset.
    Offset(i64),
    /// The first record at or after this timestamp (ms since the epoch); the end if none.
    Timestamp(i64),
}

/// What a consumer reads of transactional writes (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Everything up to the high watermark: records of open and aborted transactions too.
    #[default]
    ReadUncommitted,
    /// Committed transactions only, up to the last stable offset.
    ReadCommitted,
}

impl Isolation {
    fn wire(self) -> quiver_schema::wire::Isolation {
        match self {
            Self::ReadUncommitted => quiver_schema::wire::Isolation::ReadUncommitted,
            Self::ReadCommitted => quiver_schema::wire::Isolation::ReadCommitted,
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Most bytes one fetch may return, over all its partitions and for each one.
    pub fetch_max_bytes: u32,
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`, in milliseconds.
    pub fetch_max_wait_ms: u32,
    /// Bytes the broker waits for before it answers a fetch (up to `fetch_max_wait_ms`).
    pub fetch_min_bytes: u32,
    /// Prefetched bytes held across all partitions; fetching pauses beyond it.
    pub max_buffer_bytes: usize,
    /// Used when a partition has no position yet, and on `OffsetOutOfRange`.
    pub auto_offset_reset: OffsetReset,
    /// What to read of transactional writes (default: read_uncommitted, as Kafka).
    pub isolation: Isolation,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            fetch_max_bytes: 1 << 20,
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            max_buffer_bytes: 64 << 20,
            auto_offset_reset: OffsetReset::Latest,
            isolation: Isolation::ReadUncommitted,
        }
    }
}

type TopicPartition = (Arc<str>, i32);

/// What a fetch loop hands the consumer.
enum FetchEvent {
    Batches(Fetched),
    /// A partition of the loop is served elsewhere now (its leader moved): the consumer
    /// plans its loops again from the current positions.
    Moved,
}

/// Batches one fetch loop delivered, with the buffer credit they hold.
struct Fetched {
    tp: TopicPartition,
    batches: Vec<Bytes>,
    /// The offset after every batch fetched, the skipped ones (markers, aborted) included.
    next_offset: i64,
    _credit: OwnedSemaphorePermit,
}

/// What the consumer hands out next.
enum Ready {
    Record(ConsumerRecord),
    /// Batches it skipped (markers, aborted transactions): the position moves past them.
    Skipped {
        tp: TopicPartition,
        to: i64,
    },
}

/// Reads assigned partitions; see the module documentation.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    positions: BTreeMap<TopicPartition, Option<i64>>,
    rx: Option<mpsc::Receiver<Result<FetchEvent>>>,
    fetchers: Vec<JoinHandle<()>>,
    ready: VecDeque<Ready>,
}

impl Consumer {
    /// A consumer on `client` with no partitions assigned; fetching starts with the first
    /// `next_record`.
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Self {
            client,
            config,
            positions: BTreeMap::new(),
            rx: None,
            fetchers: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// Reads exactly these partitions (replacing any earlier assignment). Each starts at its
    /// `seek` position, or per `auto_offset_reset`.
    pub fn assign(&mut self, partitions: &[(&str, i32)]) {
        self.stop_fetchers();
        self.positions = partitions
            .iter()
            .map(|(t, p)| ((Arc::from(*t), *p), None))
            .collect();
    }

    /// Adds partitions, each reading from the given offset; the partitions already assigned
    /// keep their positions (records prefetched for them are fetched again).
    pub fn add_assigned(&mut self, partitions: &[(&str, i32, i64)]) {
        self.stop_fetchers();
        for (t, p, offset) in partitions {
            self.positions.insert((Arc::from(*t), *p), Some(*offset));
        }
    }

    /// Stops reading these partitions; the others keep their positions.
    pub fn remove_assigned(&mut self, partitions: &[(&str, i32)]) {
        self.stop_fetchers();
        for (t, p) in partitions {
            self.positions.remove(&(Arc::from(*t), *p));
        }
    }

    /// The partitions assigned, with their positions (`None`: not resolved yet).
    pub fn assignment(&self) -> Vec<(Arc<str>, i32, Option<i64>)> {
        self.positions
            .iter()
            .map(|((t, p), pos)| (t.clone(), *p, *pos))
            .collect()
    }

    /// The offset after the last record prefetched for a partition and not yet returned
    /// (`None` when nothing is waiting): what an at-most-once member commits before it hands
    /// those records out.
    pub fn buffered_end(&self, topic: &str, partition: i32) -> Option<i64> {
        self.ready.iter().rev().find_map(|r| match r {
            Ready::Record(r) if &*r.topic == topic && r.partition == partition => {
                Some(r.offset + 1)
            }
            _ => None,
        })
    }

    /// Moves a partition's position; takes effect for records fetched after this call.
    pub async fn seek(&mut self, topic: &str, partition: i32, to: SeekTo) -> Result<i64> {
        let offset = resolve(&self.client, topic, partition, to).await?;
        let tp: TopicPartition = (Arc::from(topic), partition);
        if !self.positions.contains_key(&tp) {
            return Err(ClientError::Invalid(format!(
                "{topic}/{partition} is not assigned; assign it first"
            )));
        }
        self.stop_fetchers();
        self.positions.insert(tp, Some(offset));
        Ok(offset)
    }

    /// The offset of the next record this consumer will return for the partition.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.positions
            .get(&(Arc::from(topic), partition))
            .copied()
            .flatten()
    }

    fn stop_fetchers(&mut self) {
        for f in self.fetchers.drain(..) {
            f.abort();
        }
        self.rx = None;
        // Records not yet returned are fetched again from the positions.
        self.ready.clear();
    }

    async fn start_fetchers(&mut self) -> Result<()> {
        let credit = Arc::new(Semaphore::new(self.config.max_buffer_bytes));
        let (tx, rx) = mpsc::channel(1024);
        let mut by_shard: BTreeMap<SocketAddr, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, pos) in self.positions.iter_mut() {
            let start = match pos {
                Some(p) => *p,
                None => {
                    let Some(to) = self.config.auto_offset_reset.seek_to() else {
                        let msg = format!(
                            "{}/{} has no position and auto_offset_reset is Error: seek it first",
                            tp.0, tp.1
                        );
                        return Err(ClientError::Invalid(msg));
                    };
                    let p = resolve(&self.client, &tp.0, tp.1, to).await?;
                    *pos = Some(p);
                    p
                }
            };
            let route = self.client.route(&tp.0).await?;
            let addr = route.address(tp.1)?;
            by_shard.entry(addr).or_default().push((tp.clone(), start));
        }
        for (addr, parts) in by_shard {
            let job = FetchLoop {
                client: self.client.clone(),
                config: self.config.clone(),
                addr,
                parts,
                turn: 0,
                credit: credit.clone(),
                tx: tx.clone(),
            };
            self.fetchers.push(tokio::spawn(job.run()));
        }
        self.rx = Some(rx);
        Ok(())
    }

    /// The next record of any assigned partition; waits (long poll) when there is none.
    pub async fn next_record(&mut self) -> Result<ConsumerRecord> {
        loop {
            match self.ready.pop_front() {
                Some(Ready::Record(r)) => {
                    if let Some(pos) = self.positions.get_mut(&(r.topic.clone(), r.partition)) {
                        *pos = Some(r.offset + 1);
                    }
                    return Ok(r);
                }
                Some(Ready::Skipped { tp, to }) => {
                    if let Some(Some(pos)) = self.positions.get_mut(&tp) {
                        *pos = (*pos).max(to);
                    }
                    continue;
                }
                None => {}
            }
            if self.positions.is_empty() {
                return Err(ClientError::Invalid("no partition is assigned".into()));
            }
            if self.rx.is_none() {
                self.start_fetchers().await?;
            }
            let Some(rx) = self.rx.as_mut() else {
                return Err(ClientError::Closed);
            };
            let event = match rx.recv().await.ok_or(ClientError::Closed)? {
                Ok(event) => event,
                Err(e) => {
                    // The loop that failed has stopped: every loop starts again from the
                    // positions at the next call, so the error is the caller's to see once
                    // and no partition is left unfetched after it (the chaos harness, seed
                    // 104: a reader that carried on past one error never read that
                    // partition again).
                    self.stop_fetchers();
                    return Err(e);
                }
            };
            match event {
                FetchEvent::Batches(fetched) => self.unpack(fetched)?,
                FetchEvent::Moved => {
                    // Loops aimed at the new leaders fetch again from the positions (what
                    // was queued and not handed out included).
                    tracing::debug!("a partition's leader moved; fetching from the new one");
                    self.stop_fetchers();
                }
            }
        }
    }

    fn unpack(&mut self, fetched: Fetched) -> Result<()> {
        let position = self
            .positions
            .get(&fetched.tp)
            .copied()
            .flatten()
            .unwrap_or(0);
        let mut end = position;
        for batch in fetched.batches {
            let iter = RecordIter::new(batch).map_err(|e| ClientError::Protocol(e.to_string()))?;
            for r in iter {
                let r = r.map_err(|e| ClientError::Protocol(e.to_string()))?;
                if r.offset < position {
                    continue; // the batch began before the position
                }
                end = r.offset + 1;
                self.ready.push_back(Ready::Record(ConsumerRecord {
                    topic: fetched.tp.0.clone(),
                    partition: fetched.tp.1,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key,
                    value: r.value,
                    headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                }));
            }
        }
        if fetched.next_offset > end {
            self.ready.push_back(Ready::Skipped {
                tp: fetched.tp,
                to: fetched.next_offset,
            });
        }
        Ok(())
    }

    /// The records as a `Stream` (it never ends by itself; errors are items).
    pub fn stream(&mut self) -> futures::stream::BoxStream<'_, Result<ConsumerRecord>> {
        futures::stream::unfold(self, |c| async move {
            let r = c.next_record().await;
            Some((r, c))
        })
        .boxed()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop_fetchers();
    }
}

pub(crate) async fn resolve(
    client: &Client,
    topic: &str,
    partition: i32,
    to: SeekTo,
) -> Result<i64> {
    let admin = Admin::new(client.clone());
    Ok(match to {
        SeekTo::Offset(o) => o,
        SeekTo::Beginning => admin
            .list_offsets(topic, partition, OffsetQuery::Earliest)
            .await?
            .unwrap_or(0),
        SeekTo::End => admin
            .list_offsets(topic, partition, OffsetQuery::Latest)
            .await?
            .unwrap_or(0),
        SeekTo::Timestamp(ts) => match admin
            .list_offsets(topic, partition, OffsetQuery::Timestamp(ts))
            .await?
        {
            Some(o) => o,
            None => admin
                .list_offsets(topic, partition, OffsetQuery::Latest)
                .await?
                .unwrap_or(0),
        },
    })
}

/// One shard's prefetch loop: one long-poll fetch at a time covering every assigned
/// partition that shard serves (as a Kafka consumer sends one fetch per broker).
struct FetchLoop {
    client: Client,
    config: ConsumerConfig,
    addr: SocketAddr,
    /// The partitions and the offset each is fetched from next.
    parts: Vec<(TopicPartition, i64)>,
    /// Which partition goes first in the next request: rotated so that a byte budget spent
    /// early in a response never starves the same partitions.
    turn: usize,
    credit: Arc<Semaphore>,
    tx: mpsc::Sender<Result<FetchEvent>>,
}

/// What one partition's entry of a fetch response said.
enum EntryOutcome {
    /// Records, and (read_committed) the aborted transactions `(producer id, first offset)`.
    Batches(Bytes, Vec<(i64, i64)>),
    Empty,
    Failed(ClientError),
}

impl FetchLoop {
    async fn run(mut self) {
        loop {
            match self.fetch_once().await {
                Ok(outcomes) => {
                    for (i, outcome) in outcomes {
                        if !self.settle(i, outcome).await {
                            return;
                        }
                    }
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(shard = %self.addr, "fetch failed, retrying: {e}");
                    if e.needs_metadata_refresh() && !self.follow_routes(None).await {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }

    /// Refreshes the routes of partition `i` (`None`: every partition of the loop): whether
    /// one of them is now served at another address than this loop's.
    /// Err: the metadata says the topic no longer exists.
    async fn moved(&self, i: Option<usize>) -> Result<bool> {
        let parts: Vec<&TopicPartition> = match i {
            Some(i) => vec![&self.parts[i].0],
            None => self.parts.iter().map(|(tp, _)| tp).collect(),
        };
        let mut topics: Vec<&Arc<str>> = parts.iter().map(|tp| &tp.0).collect();
        topics.sort();
        topics.dedup();
        for topic in topics {
            let route = match self.client.refresh_route(topic).await {
                Ok(route) => route,
                Err(
                    e @ ClientError::Broker {
                        code: ErrorCode::UnknownTopic,
                        ..
                    },
                ) => return Err(e),
                Err(_) => continue,
            };
            for tp in parts.iter().filter(|tp| tp.0 == *topic) {
                if route.address(tp.1).is_ok_and(|a| a != self.addr) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// After an error that may mean stale routes: whether the loop goes on (false: it told
    /// the reader that a partition moved, or that its topic is gone).
    async fn follow_routes(&self, i: Option<usize>) -> bool {
        match self.moved(i).await {
            Ok(false) => true,
            Ok(true) => {
                let _ = self.tx.send(Ok(FetchEvent::Moved)).await;
                false
            }
            Err(gone) => {
                let _ = self.tx.send(Err(gone)).await;
                false
            }
        }
    }

    /// Hands one partition's entry on; false when the loop must stop.
    async fn settle(&mut self, i: usize, outcome: EntryOutcome) -> bool {
        let tp = self.parts[i].0.clone();
        match outcome {
            EntryOutcome::Empty => true,
            EntryOutcome::Batches(data, aborted) => match self.split(i, data, aborted).await {
                Ok(fetched) => self.tx.send(Ok(FetchEvent::Batches(fetched))).await.is_ok(),
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    false
                }
            },
            EntryOutcome::Failed(ClientError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                message,
            }) => {
                let Some(to) = self.config.auto_offset_reset.seek_to() else {
                    // auto_offset_reset = Error: the reader gets the error.
                    let e = ClientError::Broker {
                        code: ErrorCode::OffsetOutOfRange,
                        message,
                    };
                    let _ = self.tx.send(Err(e)).await;
                    return false;
                };
                match resolve(&self.client, &tp.0, tp.1, to).await {
                    Ok(o) => {
                        tracing::warn!(topic = %tp.0, partition = tp.1, from = self.parts[i].1, to = o, "position out of range ({message}); reset");
                        self.parts[i].1 = o;
                        true
                    }
                    Err(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        false
                    }
                }
            }
            EntryOutcome::Failed(e) if e.is_retriable() || e.needs_metadata_refresh() => {
                // `UnknownTopic` from a node that restarted and has not loaded its metadata
                // yet: where the metadata places the partition now decides.
                tracing::debug!(topic = %tp.0, partition = tp.1, "fetch failed, retrying: {e}");
                if e.needs_metadata_refresh() && !self.follow_routes(Some(i)).await {
                    return false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                true
            }
            EntryOutcome::Failed(e) => {
                let _ = self.tx.send(Err(e)).await;
                false
            }
        }
    }

    /// One long-poll fetch over all the shard's partitions: each partition's entry, by index.
    async fn fetch_once(&mut self) -> Result<Vec<(usize, EntryOutcome)>> {
        let n = self.parts.len();
        let order: Vec<usize> = (0..n).map(|k| (self.turn + k) % n).collect();
        self.turn = (self.turn + 1) % n.max(1);
        let limits = FetchLimits {
            max_wait_ms: self.config.fetch_max_wait_ms,
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
            isolation: self.config.isolation.wire(),
        };
        let resp = self
            .client
            .request_to(self.addr, |id| {
                let parts: Vec<FetchPart<'_>> = order
                    .iter()
                    .map(|&i| FetchPart {
                        topic: &self.parts[i].0 .0,
                        partition: self.parts[i].0 .1,
                        offset: self.parts[i].1,
                        max_bytes: self.config.fetch_max_bytes,
                    })
                    .collect();
                requests::fetch_many(id, &limits, &parts)
            })
            .await?;
        let entries = resp
            .envelope()
            .body_as_fetch_response()
            .and_then(|b| b.partitions())
            .filter(|e| e.len() == n)
            .ok_or_else(|| {
                ClientError::Protocol(format!(
                    "the fetch response does not have one entry for each of the {n} partitions asked"
                ))
            })?;
        // The response frame stays alive through `Bytes`; batches are slices of it.
        let frame = resp.bytes();
        let mut out = Vec::with_capacity(n);
        for (k, entry) in entries.iter().enumerate() {
            let outcome = match (body_error(entry.error()), entry.records()) {
                (Err(e), _) => EntryOutcome::Failed(e),
                (Ok(()), None) => EntryOutcome::Empty,
                (Ok(()), Some(r)) if r.is_empty() => EntryOutcome::Empty,
                (Ok(()), Some(r)) => match quiver_schema::frame::vector_range(frame, r.bytes()) {
                    Some(range) => {
                        let aborted = entry
                            .aborted()
                            .iter()
                            .flat_map(|v| v.iter())
                            .map(|a| (a.producer_id(), a.first_offset()))
                            .collect();
                        EntryOutcome::Batches(frame.slice(range), aborted)
                    }
                    None => EntryOutcome::Failed(ClientError::Protocol(
                        "records outside the frame".into(),
                    )),
                },
            };
            out.push((order[k], outcome));
        }
        Ok(out)
    }

    /// Splits one partition's records into whole batches and moves its offset past them;
    /// markers and the batches of `aborted` transactions are left out.
    async fn split(
        &mut self,
        i: usize,
        mut data: Bytes,
        mut aborted: Vec<(i64, i64)>,
    ) -> Result<Fetched> {
        let credit = self
            .credit
            .clone()
            .acquire_many_owned(u32::try_from(data.len()).unwrap_or(u32::MAX))
            .await
            .map_err(|_| ClientError::Closed)?;
        let mut batches = Vec::new();
        aborted.sort_by_key(|a| a.1);
        let mut aborted = aborted.into_iter().peekable();
        let mut skipping = std::collections::HashSet::new();
        while !data.is_empty() {
            let header =
                BatchHeader::parse(&data).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let len = header
                .total_bytes()
                .filter(|l| *l <= data.len())
                .ok_or_else(|| ClientError::Protocol("a fetched batch is cut short".into()))?;
            self.parts[i].1 = header.last_offset() + 1;
            let batch = data.split_to(len);
            // Aborted transactions that began by the end of this batch (Kafka's rule).
            while let Some(a) = aborted.next_if(|a| a.1 <= header.last_offset()) {
                skipping.insert(a.0);
            }
            if header.is_control() {
                skipping.remove(&header.producer_id);
                continue;
            }
            if header.is_transactional() && skipping.contains(&header.producer_id) {
                continue;
            }
            batches.push(batch);
        }
        Ok(Fetched {
            tp: self.parts[i].0.clone(),
            batches,
            next_offset: self.parts[i].1,
            _credit: credit,
        })
    }
}
