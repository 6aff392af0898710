//! One shard: owns some partitions' logs outright and answers requests for them. Requests
//! for partitions owned by another shard travel over the channel mesh and come back the same
//! way; metadata changes run on shard 0 (the controller) and are applied by every shard
//! before the change is acknowledged.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use glommio::channels::channel_mesh::Senders;
use glommio::sync::Semaphore;
use glommio::TaskQueueHandle;
use quiver_schema::frame::error_frame;
use quiver_schema::requests::FetchLimits;
use quiver_schema::wire::{self, ErrorCode};

use super::metadata::{Metadata, MetadataStore};
use super::request::{self, FetchPartReq, ProducePartReq, Request};
use super::response::{
    self, FetchPartOutcome, HandshakeInfo, PartitionInfo, ProducePartOutcome, TopicConfigs,
    TopicInfo,
};
use super::topic_config;
use crate::log::signal::Sender;
use crate::log::{CommitLog, LogConfig, PartitionLog};
use crate::StorageError;

/// Settings every shard of a node shares.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub node_id: i32,
    pub data_dir: PathBuf,
    /// Host clients reach this node at (in metadata addresses).
    pub advertised_host: String,
    pub base_port: u16,
    pub shard_count: usize,
    pub max_frame_bytes: usize,
    /// Defaults for topics; per-topic configs override them.
    pub default_log: LogConfig,
    pub retention_check_interval_ms: u64,
    /// Make `acks=all` appends durable through one commit log per shard (one fdatasync per
    /// round for all its partitions) instead of an fdatasync per partition per round.
    pub shard_commit_log: bool,
}

/// The task queues of a shard: produce/fetch (and the logs' flushers) in `latency`,
/// retention and other housekeeping in `background`, which gets fewer shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardQueues {
    pub latency: Option<TaskQueueHandle>,
    pub background: Option<TaskQueueHandle>,
}

/// The shard's storage services shared by its partition logs.
#[derive(Clone, Default)]
pub struct ShardStorage {
    /// `None` when `shard_commit_log` is off.
    pub commit_log: Option<CommitLog>,
}

/// What one node's shards share: settings and metadata (control plane only).
pub struct NodeShared {
    pub settings: NodeSettings,
    pub metadata: MetadataStore,
}

/// Messages between shards. Payloads are `Bytes`/`BytesMut`: moved, never copied.
pub enum ShardMsg {
    Request {
        id: u64,
        from: usize,
        body: Forwarded,
    },
    Response {
        id: u64,
        frame: Bytes,
    },
}

pub enum Forwarded {
    /// A request frame for a partition (or the controller) on the receiving shard.
    Frame(BytesMut),
    /// Apply the newest metadata (open, close, reconfigure logs), then reply.
    ApplyMetadata,
}

pub(super) struct OpenLog {
    pub(super) log: PartitionLog,
    pub(super) configs: BTreeMap<String, String>,
}

pub struct Shard {
    pub id: usize,
    pub(super) node: Arc<NodeShared>,
    pub(super) meta: RefCell<Arc<Metadata>>,
    pub(super) logs: RefCell<HashMap<(String, i32), OpenLog>>,
    pub(super) mesh: Senders<ShardMsg>,
    pub(super) pending: RefCell<HashMap<u64, Sender<Bytes>>>,
    pub(super) next_forward_id: Cell<u64>,
    /// Serialises metadata changes (used on the controller).
    pub(super) control_gate: Semaphore,
    /// Serialises `apply_metadata` on this shard.
    pub(super) apply_gate: Semaphore,
    pub(super) background: Option<TaskQueueHandle>,
    /// Task queue of the produce/fetch path: the logs' flushers run here.
    pub(super) latency: Option<TaskQueueHandle>,
    pub(super) commit_log: Option<CommitLog>,
}

type Reply = Bytes;

fn storage_error(e: &StorageError) -> (ErrorCode, String) {
    let code = match e {
        StorageError::InvalidBatch(_) => ErrorCode::InvalidBatch,
        StorageError::DiskFull { .. } => ErrorCode::DiskFull,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::Corrupt { .. } => ErrorCode::CorruptData,
        StorageError::Closed { .. } => ErrorCode::ShuttingDown,
        _ => ErrorCode::StorageError,
    };
    (code, e.to_string())
}

impl Shard {
    pub fn new(
        id: usize,
        node: Arc<NodeShared>,
        mesh: Senders<ShardMsg>,
        queues: ShardQueues,
        storage: ShardStorage,
    ) -> Self {
        let meta = node.metadata.snapshot();
        Self {
            id,
            node,
            meta: RefCell::new(meta),
            logs: RefCell::new(HashMap::new()),
            mesh,
            pending: RefCell::new(HashMap::new()),
            next_forward_id: Cell::new(1),
            control_gate: Semaphore::new(1),
            apply_gate: Semaphore::new(1),
            background: queues.background,
            latency: queues.latency,
            commit_log: storage.commit_log,
        }
    }

    pub(super) fn settings(&self) -> &NodeSettings {
        &self.node.settings
    }

    /// This shard's metadata, refreshed when the node's version moved (one atomic load).
    pub(super) fn metadata(&self) -> Arc<Metadata> {
        if self.node.metadata.version() != self.meta.borrow().version {
            *self.meta.borrow_mut() = self.node.metadata.snapshot();
        }
        self.meta.borrow().clone()
    }

    pub(super) fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.settings()
            .data_dir
            .join("topics")
            .join(topic)
            .join(partition.to_string())
    }

    /// Answers one request frame with one response frame. Never panics on any input.
    pub async fn handle(self: Rc<Self>, frame: BytesMut) -> Reply {
        let (id, api, req) = match request::decode(&frame, self.settings().max_frame_bytes) {
            Ok(x) => x,
            Err(r) => return error_frame(r.request_id, r.api, r.code, &r.message),
        };
        let target = if req.is_control() {
            Some(0)
        } else {
            match self.owner_of(&req) {
                Ok(t) => t,
                Err((code, message)) => return error_frame(id, api, code, &message),
            }
        };
        match target {
            Some(owner) if owner != self.id => self.forward(owner, Forwarded::Frame(frame)).await,
            _ => self.serve(id, req, frame).await,
        }
    }

    /// The shard a data-plane request must run on: the owner when every partition it names
    /// has the same one (a request sent to the wrong shard is forwarded whole); `None` to run
    /// here, where partitions this shard does not own are answered one by one.
    fn owner_of(&self, req: &Request) -> Result<Option<usize>, (ErrorCode, String)> {
        let parts = req.partitions();
        let meta = self.metadata();
        let n = self.settings().shard_count;
        let mut owner = None;
        for (topic, partition) in &parts {
            match meta.owner(topic, *partition) {
                Some(o) if owner.is_none_or(|x| x == o % n) => owner = Some(o % n),
                Some(_) => return Ok(None),
                None if matches!(req, Request::ListOffsets { .. }) => {
                    return Err((
                        unknown_code(&meta, topic),
                        unknown_message(topic, *partition),
                    ))
                }
                None => return Ok(None),
            }
        }
        Ok(owner)
    }

    /// The log of a partition this shard owns, or the error its entry in a response gets.
    fn locate(&self, topic: &str, partition: i32) -> Result<PartitionLog, (ErrorCode, String)> {
        let meta = self.metadata();
        match meta.owner(topic, partition) {
            None => Err((
                unknown_code(&meta, topic),
                unknown_message(topic, partition),
            )),
            Some(o) if o % self.settings().shard_count != self.id => Err((
                ErrorCode::NotOwner,
                format!(
                    "partition {topic}/{partition} is served by {}, not by shard {}; send it there (refresh metadata)",
                    self.address(o % self.settings().shard_count),
                    self.id
                ),
            )),
            Some(_) => self.open_log(topic, partition),
        }
    }

    /// Runs a request this shard owns.
    async fn serve(self: Rc<Self>, id: u64, req: Request, frame: BytesMut) -> Reply {
        match req {
            Request::Handshake => {
                let meta = self.metadata();
                let n = self.settings().shard_count;
                let ports: Vec<u16> = (0..n)
                    .map(|i| self.settings().base_port.saturating_add(i as u16))
                    .collect();
                response::handshake(
                    id,
                    &HandshakeInfo {
                        node_id: self.settings().node_id,
                        cluster_id: &meta.cluster_id,
                        shard_ports: &ports,
                    },
                )
            }
            Request::Metadata { topics } => response::metadata(id, &self.describe_topics(&topics)),
            Request::DescribeConfigs(topics) => {
                response::describe_configs(id, &self.describe_configs(&topics))
            }
            Request::CreateTopics(topics) => self.create_topics(id, topics).await,
            Request::DeleteTopics(names) => self.delete_topics(id, names).await,
            Request::AlterConfigs { topic, configs } => {
                self.alter_configs(id, topic, configs).await
            }
            Request::ListOffsets {
                topic,
                partition,
                spec,
                timestamp_ms,
            } => {
                self.list_offsets(id, &topic, partition, spec, timestamp_ms)
                    .await
            }
            Request::Produce {
                acks,
                timeout_ms,
                parts,
            } => self.produce(id, acks, timeout_ms, parts, frame).await,
            Request::Fetch { limits, parts } => self.fetch(id, &limits, &parts).await,
        }
    }

    fn address(&self, shard: usize) -> String {
        format!(
            "{}:{}",
            self.settings().advertised_host,
            self.settings().base_port as usize + shard
        )
    }

    fn describe_topics(&self, names: &[String]) -> Vec<TopicInfo> {
        let meta = self.metadata();
        let n = self.settings().shard_count;
        let names: Vec<String> = if names.is_empty() {
            meta.topics.keys().cloned().collect()
        } else {
            names.to_vec()
        };
        names
            .into_iter()
            .map(|name| match meta.topics.get(&name) {
                None => TopicInfo {
                    name: name.clone(),
                    partitions: vec![],
                    outcome: Err((
                        ErrorCode::UnknownTopic,
                        format!("topic {name:?} does not exist; create it first"),
                    )),
                },
                Some(t) => TopicInfo {
                    partitions: t
                        .partition_shards
                        .iter()
                        .enumerate()
                        .map(|(p, shard)| PartitionInfo {
                            partition: p as i32,
                            node_id: self.settings().node_id,
                            shard: (shard % n) as u16,
                            address: self.address(shard % n),
                        })
                        .collect(),
                    name,
                    outcome: Ok(()),
                },
            })
            .collect()
    }

    fn describe_configs(&self, names: &[String]) -> Vec<TopicConfigs> {
        let meta = self.metadata();
        names
            .iter()
            .map(|name| match meta.topics.get(name) {
                None => (
                    name.clone(),
                    vec![],
                    Err((
                        ErrorCode::UnknownTopic,
                        format!("topic {name:?} does not exist"),
                    )),
                ),
                Some(t) => {
                    match topic_config::to_log_config(&t.configs, &self.settings().default_log) {
                        Ok(cfg) => (name.clone(), topic_config::describe(&cfg), Ok(())),
                        Err(e) => (name.clone(), vec![], Err((ErrorCode::InvalidConfig, e))),
                    }
                }
            })
            .collect()
    }

    fn open_log(&self, topic: &str, partition: i32) -> Result<PartitionLog, (ErrorCode, String)> {
        match self.logs.borrow().get(&(topic.to_string(), partition)) {
            Some(l) => Ok(l.log.clone()),
            None => Err((ErrorCode::NotOwner, format!("partition {topic}/{partition} is not open on shard {}; refresh metadata and retry", self.id))),
        }
    }

    async fn list_offsets(
        &self,
        id: u64,
        topic: &str,
        partition: i32,
        spec: wire::OffsetSpec,
        timestamp_ms: i64,
    ) -> Reply {
        let log = match self.open_log(topic, partition) {
            Ok(l) => l,
            Err(e) => return response::list_offsets(id, -1, &Err(e)),
        };
        let found = match spec {
            wire::OffsetSpec::Earliest => Ok(Some(log.log_start_offset())),
            wire::OffsetSpec::Latest => Ok(Some(log.committed_offset())),
            wire::OffsetSpec::Timestamp => log.offset_for_timestamp(timestamp_ms).await,
            other => {
                return response::list_offsets(
                    id,
                    -1,
                    &Err((
                        ErrorCode::InvalidRequest,
                        format!(
                            "offset spec {} is not earliest (0), latest (1) or timestamp (2)",
                            other.0
                        ),
                    )),
                )
            }
        };
        match found {
            Ok(o) => response::list_offsets(id, o.map_or(-1, |o| o as i64), &Ok(())),
            Err(e) => response::list_offsets(id, -1, &Err(storage_error(&e))),
        }
    }

    /// Appends each partition's batches to its log, all partitions at once (their flushers
    /// run side by side), and answers when every partition is acknowledged per `acks` or
    /// `timeout_ms` passed.
    async fn produce(
        &self,
        id: u64,
        acks: wire::Acks,
        timeout_ms: u32,
        parts: Vec<ProducePartReq>,
        frame: BytesMut,
    ) -> Reply {
        let records = split_records(frame, &parts);
        let outcomes: Rc<RefCell<Vec<Option<ProducePartOutcome>>>> =
            Rc::new(RefCell::new(vec![None; parts.len()]));
        let mut work = Vec::new();
        for (i, (part, records)) in parts.iter().zip(records).enumerate() {
            let prepared = self
                .locate(&part.topic, part.partition)
                .and_then(|log| Ok((log, split_batches(records)?)));
            match prepared {
                Ok((log, batches)) => work.push((i, log, batches)),
                Err((code, message)) => {
                    outcomes.borrow_mut()[i] = Some(ProducePartOutcome::failed(code, message));
                }
            }
        }
        if acks == wire::Acks::None {
            for (i, log, batches) in work {
                glommio::spawn_local(async move {
                    for b in batches {
                        if let Err(e) = log.append(b, 0).await {
                            tracing::debug!("acks=none append failed: {e}");
                            return;
                        }
                    }
                })
                .detach();
                outcomes.borrow_mut()[i] = Some(ProducePartOutcome {
                    base_offset: -1,
                    last_offset: -1,
                    log_start_offset: -1,
                    outcome: Ok(()),
                });
            }
        } else {
            let appends = work.into_iter().map(|(i, log, batches)| {
                let outcomes = outcomes.clone();
                async move {
                    let outcome = append_all(&log, acks, batches).await;
                    outcomes.borrow_mut()[i] = Some(outcome);
                }
            });
            futures_lite::future::or(join_all(appends.collect()), async {
                glommio::timer::sleep(Duration::from_millis(u64::from(timeout_ms.max(1)))).await;
            })
            .await;
        }
        let outcomes: Vec<ProducePartOutcome> = outcomes
            .borrow_mut()
            .drain(..)
            .map(|o| {
                o.unwrap_or_else(|| {
                    ProducePartOutcome::failed(
                        ErrorCode::Timeout,
                        format!("not acknowledged within timeout_ms = {timeout_ms}; the batch may still be written: retry with idempotence or check with a fetch"),
                    )
                })
            })
            .collect();
        response::produce(id, &outcomes)
    }

    /// A long poll over many partitions: answers once `min_bytes` are available over all of
    /// them, a partition fails, or `max_wait_ms` passed; until then it sleeps on the logs'
    /// commit wake-ups (no polling loop).
    async fn fetch(&self, id: u64, limits: &FetchLimits, parts: &[FetchPartReq]) -> Reply {
        let logs: Vec<_> = parts
            .iter()
            .map(|p| self.locate(&p.topic, p.partition))
            .collect();
        // Room for the envelope and each entry's fields besides the records.
        let frame_room = self
            .settings()
            .max_frame_bytes
            .saturating_sub(1024 + parts.len() * 64)
            .max(1);
        let budget = (limits.max_bytes as usize).clamp(1, frame_room);
        let deadline =
            std::time::Instant::now() + Duration::from_millis(u64::from(limits.max_wait_ms));
        loop {
            let mut out = Vec::with_capacity(parts.len());
            let mut total = 0usize;
            let mut failed = false;
            for (part, log) in parts.iter().zip(&logs) {
                let entry = match log {
                    Err((code, message)) => FetchPartOutcome::failed(*code, message.clone()),
                    // Past the budget, a partition is left for the next fetch; the first one
                    // with data always returns at least one whole batch.
                    Ok(log) if total >= budget => empty_entry(log),
                    Ok(log) => read_part(log, part, (budget - total).max(1)).await,
                };
                total += entry.batches.iter().map(Bytes::len).sum::<usize>();
                failed |= entry.outcome.is_err();
                out.push(entry);
            }
            let now = std::time::Instant::now();
            if failed || total >= limits.min_bytes as usize || now >= deadline {
                return response::fetch(id, &out);
            }
            // Long poll: sleep until any partition commits past what it has, or the deadline.
            let wakeups: Vec<_> = logs
                .iter()
                .flatten()
                .map(|log| {
                    let from = log.committed_offset();
                    Box::pin(log.wait_for_offset(from))
                })
                .collect();
            futures_lite::future::or(select_any(wakeups), async {
                glommio::timer::sleep(deadline - now).await;
            })
            .await;
        }
    }
}

/// An entry with no records: the partition's marks only.
fn empty_entry(log: &PartitionLog) -> FetchPartOutcome {
    FetchPartOutcome {
        high_watermark: log.committed_offset() as i64,
        log_start_offset: log.log_start_offset() as i64,
        batches: Vec::new(),
        outcome: Ok(()),
    }
}

/// Reads one partition of a fetch: whole batches from its offset, up to `room` bytes (and its
/// own `max_bytes`), at least one batch.
async fn read_part(log: &PartitionLog, part: &FetchPartReq, room: usize) -> FetchPartOutcome {
    let mut entry = empty_entry(log);
    if log.is_closing() {
        // Its wake-up would fire at once, forever: answer instead of spinning.
        entry.outcome = Err((
            ErrorCode::ShuttingDown,
            format!(
                "partition {}/{} is closing (topic deleted or reconfigured, or the node stopping); refresh metadata and retry",
                part.topic, part.partition
            ),
        ));
        return entry;
    }
    let Ok(offset) = u64::try_from(part.offset) else {
        entry.outcome = Err(storage_error(&StorageError::OffsetOutOfRange {
            requested: 0,
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.committed_offset(),
        }));
        return entry;
    };
    let max_bytes = (part.max_bytes as usize).clamp(1, room);
    match log.read_runs(offset, max_bytes).await {
        Ok(batches) => entry.batches = batches,
        Err(e) => entry.outcome = Err(storage_error(&e)),
    }
    entry
}

/// Appends one partition's batches in order and says how it went.
async fn append_all(
    log: &PartitionLog,
    acks: wire::Acks,
    batches: Vec<BytesMut>,
) -> ProducePartOutcome {
    let mut range: Option<(u64, u64)> = None;
    for b in batches {
        let appended = if acks == wire::Acks::Leader {
            log.append_buffered(b, 0).await
        } else {
            log.append(b, 0).await
        };
        match appended {
            Ok(info) => {
                range = Some((range.map_or(info.base_offset, |r| r.0), info.last_offset));
            }
            Err(e) => {
                return ProducePartOutcome {
                    log_start_offset: log.log_start_offset() as i64,
                    ..ProducePartOutcome::failed_with(storage_error(&e))
                }
            }
        }
    }
    match range {
        Some((base, last)) => ProducePartOutcome {
            base_offset: base as i64,
            last_offset: last as i64,
            log_start_offset: log.log_start_offset() as i64,
            outcome: Ok(()),
        },
        None => ProducePartOutcome::failed(ErrorCode::InvalidBatch, "no batch".into()),
    }
}

/// Each entry's records, split out of the received frame without a copy. The decoder checked
/// that the ranges lie inside the frame and do not overlap.
fn split_records(mut frame: BytesMut, parts: &[ProducePartReq]) -> Vec<BytesMut> {
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| parts[i].records.start);
    let mut out = vec![BytesMut::new(); parts.len()];
    let mut cursor = 0;
    for i in order {
        let r = &parts[i].records;
        let skip = r.start.saturating_sub(cursor).min(frame.len());
        frame.advance(skip);
        out[i] = frame.split_to(r.len().min(frame.len()));
        cursor = r.end;
    }
    out
}

/// The whole batches of one partition's records.
fn split_batches(mut records: BytesMut) -> Result<Vec<BytesMut>, (ErrorCode, String)> {
    let mut batches = Vec::new();
    while !records.is_empty() {
        let Some(len) = batch_len(&records) else {
            return Err((
                ErrorCode::InvalidBatch,
                format!(
                    "{} bytes of records do not hold a whole RecordBatch v2; send whole batches",
                    records.len()
                ),
            ));
        };
        batches.push(records.split_to(len));
    }
    if batches.is_empty() {
        return Err((
            ErrorCode::InvalidBatch,
            "the produce request holds no record batch for this partition".into(),
        ));
    }
    Ok(batches)
}

/// Runs every future to completion, side by side (one task; each wake-up polls those still
/// pending — fine for the few dozen partitions of one request).
async fn join_all<F: Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futures {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}

/// Resolves when the first of `futures` does (never, for none).
async fn select_any<F: Future<Output = ()> + Unpin>(mut futures: Vec<F>) {
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if Pin::new(f).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}

/// Length of the whole batch at the start of `buf`, if `buf` holds it.
fn batch_len(buf: &[u8]) -> Option<usize> {
    let len = i32::from_be_bytes(buf.get(8..12)?.try_into().ok()?);
    let total = usize::try_from(len).ok()?.checked_add(12)?;
    (total >= crate::batch::HEADER_BYTES && total <= buf.len()).then_some(total)
}

fn unknown_code(meta: &Metadata, topic: &str) -> ErrorCode {
    if meta.topics.contains_key(topic) {
        ErrorCode::UnknownPartition
    } else {
        ErrorCode::UnknownTopic
    }
}

fn unknown_message(topic: &str, partition: i32) -> String {
    format!("no partition {partition} of topic {topic:?} on this node; list topics with a Metadata request (quiver topic list)")
}
