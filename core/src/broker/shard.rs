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

use bytes::{Bytes, BytesMut};
use glommio::channels::channel_mesh::Senders;
use glommio::sync::Semaphore;
use glommio::TaskQueueHandle;
use quiver_schema::frame::error_frame;
use quiver_schema::wire::{self, ErrorCode};

use super::metadata::{Metadata, MetadataStore};
use super::request::{self, Request};
use super::response::{self, HandshakeInfo, PartitionInfo, TopicConfigs, TopicInfo};
use super::topic_config;
use crate::log::signal::Sender;
use crate::log::{LogConfig, PartitionLog};
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
}

/// The task queues of a shard: produce/fetch (and the logs' flushers) in `latency`,
/// retention and other housekeeping in `background`, which gets fewer shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardQueues {
    pub latency: Option<TaskQueueHandle>,
    pub background: Option<TaskQueueHandle>,
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
        } else if let Some((topic, partition)) = req.partition() {
            match self.metadata().owner(topic, partition) {
                Some(owner) => Some(owner % self.settings().shard_count),
                None => {
                    return error_frame(
                        id,
                        api,
                        unknown_code(&self.metadata(), topic),
                        &unknown_message(topic, partition),
                    )
                }
            }
        } else {
            None
        };
        match target {
            Some(owner) if owner != self.id => self.forward(owner, Forwarded::Frame(frame)).await,
            _ => self.serve(id, req, frame).await,
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
                topic,
                partition,
                acks,
                timeout_ms,
                records,
            } => {
                let mut frame = frame;
                // Zero-copy: the batches are split out of the received frame buffer.
                let mut batches = frame.split_off(records.start);
                batches.truncate(records.end - records.start);
                self.produce(id, &topic, partition, acks, timeout_ms, batches)
                    .await
            }
            Request::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                max_wait_ms,
                min_bytes,
            } => {
                let f = FetchArgs {
                    offset,
                    max_bytes,
                    max_wait_ms,
                    min_bytes,
                };
                self.fetch(id, &topic, partition, f).await
            }
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

    async fn produce(
        &self,
        id: u64,
        topic: &str,
        partition: i32,
        acks: wire::Acks,
        timeout_ms: u32,
        mut batches: BytesMut,
    ) -> Reply {
        let log = match self.open_log(topic, partition) {
            Ok(l) => l,
            Err(e) => return response::produce(id, -1, -1, -1, &Err(e)),
        };
        let mut parts = Vec::new();
        while !batches.is_empty() {
            let Some(len) = batch_len(&batches) else {
                return response::produce(id, -1, -1, -1, &Err((ErrorCode::InvalidBatch, format!("{} bytes of records do not hold a whole RecordBatch v2; send whole batches", batches.len()))));
            };
            parts.push(batches.split_to(len));
        }
        if parts.is_empty() {
            return response::produce(
                id,
                -1,
                -1,
                -1,
                &Err((
                    ErrorCode::InvalidBatch,
                    "the produce request holds no record batch".into(),
                )),
            );
        }
        if acks == wire::Acks::None {
            glommio::spawn_local(async move {
                for b in parts {
                    if let Err(e) = log.append(b, 0).await {
                        tracing::debug!("acks=none append failed: {e}");
                        return;
                    }
                }
            })
            .detach();
            return response::produce(id, -1, -1, -1, &Ok(()));
        }
        let appends = async {
            let mut range: Option<(u64, u64)> = None;
            for b in parts {
                let info = if acks == wire::Acks::Leader {
                    log.append_buffered(b, 0).await?
                } else {
                    log.append(b, 0).await?
                };
                range = Some((range.map_or(info.base_offset, |r| r.0), info.last_offset));
            }
            Ok::<_, StorageError>(range)
        };
        let timed = futures_lite::future::or(async { Some(appends.await) }, async {
            glommio::timer::sleep(Duration::from_millis(u64::from(timeout_ms.max(1)))).await;
            None
        })
        .await;
        match timed {
            Some(Ok(Some((base, last)))) => response::produce(id, base as i64, last as i64, log.log_start_offset() as i64, &Ok(())),
            Some(Ok(None)) => response::produce(id, -1, -1, -1, &Err((ErrorCode::InvalidBatch, "no batch".into()))),
            Some(Err(e)) => response::produce(id, -1, -1, log.log_start_offset() as i64, &Err(storage_error(&e))),
            None => response::produce(id, -1, -1, -1, &Err((ErrorCode::Timeout, format!("not acknowledged within timeout_ms = {timeout_ms}; the batch may still be written: retry with idempotence or check with a fetch")))),
        }
    }

    async fn fetch(&self, id: u64, topic: &str, partition: i32, f: FetchArgs) -> Reply {
        let log = match self.open_log(topic, partition) {
            Ok(l) => l,
            Err(e) => return response::fetch(id, -1, -1, &[], &Err(e)),
        };
        let Ok(offset) = u64::try_from(f.offset) else {
            return response::fetch(
                id,
                log.committed_offset() as i64,
                log.log_start_offset() as i64,
                &[],
                &Err(storage_error(&StorageError::OffsetOutOfRange {
                    requested: 0,
                    log_start_offset: log.log_start_offset(),
                    log_end_offset: log.committed_offset(),
                })),
            );
        };
        let max_bytes = (f.max_bytes as usize).clamp(
            1,
            self.settings().max_frame_bytes.saturating_sub(1024).max(1),
        );
        let deadline = std::time::Instant::now() + Duration::from_millis(u64::from(f.max_wait_ms));
        loop {
            let batches = match log.read_runs(offset, max_bytes).await {
                Ok(b) => b,
                Err(e) => {
                    return response::fetch(
                        id,
                        log.committed_offset() as i64,
                        log.log_start_offset() as i64,
                        &[],
                        &Err(storage_error(&e)),
                    )
                }
            };
            let bytes: usize = batches.iter().map(Bytes::len).sum();
            let now = std::time::Instant::now();
            if bytes >= f.min_bytes as usize || now >= deadline {
                return response::fetch(
                    id,
                    log.committed_offset() as i64,
                    log.log_start_offset() as i64,
                    &batches,
                    &Ok(()),
                );
            }
            // Long poll: sleep until an append commits past what we have, or the deadline.
            let wait_from = log.committed_offset();
            futures_lite::future::or(log.wait_for_offset(wait_from), async {
                glommio::timer::sleep(deadline - now).await;
            })
            .await;
        }
    }
}

/// Fetch parameters.
struct FetchArgs {
    offset: i64,
    max_bytes: u32,
    max_wait_ms: u32,
    min_bytes: u32,
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
