//! One shard: owns some partitions outright and serves requests for them. A request for
//! partitions another shard owns travels to it over the channel mesh as a typed request and
//! comes back as a typed response ([`crate::forward`]); metadata changes run on the
//! controller shard ([`crate::control`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::channel_mesh::Senders;
use glommio::sync::Semaphore;
use glommio::TaskQueueHandle;
use quiver_broker_api::{
    ApiError, ErrorCode, HandshakeInfo, OffsetQuery, PartitionInfo, Request, RequestContext,
    Response, TopicConfigs, TopicInfo,
};
use quiver_storage::signal::Sender;
use quiver_storage::{CommitLog, LogConfig, StorageError};

use crate::forward::{ShardMsg, ShardReply};
use crate::metadata::{Metadata, MetadataStore, NodeId};
use crate::partition::Partition;
use crate::routing::{self, Route};
use crate::topic_config;

/// Settings every shard of a node shares.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub node_id: NodeId,
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
    /// Consumer groups: the offsets topic, limits and defaults.
    pub groups: crate::groups::GroupSettings,
    /// Transactions: the state topic and limits.
    pub txn: crate::txn::TxnSettings,
    /// The controller's voters and clock.
    pub cluster: crate::controller_runtime::ClusterSettings,
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

pub struct Shard {
    pub id: usize,
    pub(crate) node: Arc<NodeShared>,
    pub(crate) meta: RefCell<Arc<Metadata>>,
    pub(crate) partitions: RefCell<HashMap<(String, i32), Partition>>,
    pub(crate) mesh: Senders<ShardMsg>,
    pub(crate) pending: RefCell<HashMap<u64, Sender<ShardReply>>>,
    pub(crate) next_forward_id: Cell<u64>,
    /// Serialises metadata changes (used on the controller).
    pub(crate) control_gate: Semaphore,
    /// Serialises `apply_metadata` on this shard.
    pub(crate) apply_gate: Semaphore,
    pub(crate) background: Option<TaskQueueHandle>,
    /// Task queue of the produce/fetch path: the logs' flushers run here.
    pub(crate) latency: Option<TaskQueueHandle>,
    pub(crate) commit_log: Option<CommitLog>,
    /// The consumer group coordinators of the `__consumer_offsets` partitions it owns.
    pub(crate) groups: crate::groups::GroupCoordinators,
    /// Producer ids handed out (on the controller shard).
    pub(crate) producer_ids: crate::producer_ids::ProducerIds,
    /// The transaction coordinators of the `__transaction_state` partitions it owns.
    pub(crate) txns: crate::txn::TxnCoordinators,
    /// The node's controller member (shard 0 only), where metadata changes go.
    pub(crate) controller: RefCell<Option<Rc<crate::controller_runtime::ControllerHandle>>>,
    /// Woken each time a published metadata was applied on every shard.
    pub(crate) metadata_applied: quiver_storage::signal::WaitList,
    /// The driver of this shard's replicated partitions.
    pub(crate) replication: RefCell<Option<Rc<crate::replication::driver::ReplicaDriver>>>,
    /// The node's links to other nodes (a cluster's), for calls to their shards.
    pub(crate) links: RefCell<Option<Rc<dyn crate::controller_runtime::NodeLinks>>>,
    /// Calls to other nodes' shards awaiting their answer.
    pub(crate) node_calls: RefCell<HashMap<u64, Sender<Result<(), ApiError>>>>,
}

/// The protocol-neutral error of a storage failure.
pub(crate) fn storage_error(e: &StorageError) -> ApiError {
    let code = match e {
        StorageError::InvalidBatch(_) => ErrorCode::InvalidBatch,
        StorageError::Producer(
            quiver_storage::producer_state::ProducerError::OutOfOrderSequence { .. },
        ) => ErrorCode::OutOfOrderSequence,
        StorageError::Producer(
            quiver_storage::producer_state::ProducerError::ProducerFenced { .. }
            | quiver_storage::producer_state::ProducerError::MarkerSuperseded { .. },
        ) => ErrorCode::ProducerFenced,
        StorageError::DiskFull { .. } => ErrorCode::DiskFull,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::Corrupt { .. } => ErrorCode::CorruptData,
        StorageError::Closed { .. } => ErrorCode::ShuttingDown,
        _ => ErrorCode::StorageError,
    };
    ApiError::new(code, e.to_string())
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
            partitions: RefCell::new(HashMap::new()),
            mesh,
            pending: RefCell::new(HashMap::new()),
            next_forward_id: Cell::new(1),
            control_gate: Semaphore::new(1),
            apply_gate: Semaphore::new(1),
            background: queues.background,
            latency: queues.latency,
            commit_log: storage.commit_log,
            groups: Default::default(),
            producer_ids: Default::default(),
            txns: Default::default(),
            controller: RefCell::new(None),
            metadata_applied: Default::default(),
            replication: RefCell::new(None),
            links: RefCell::new(None),
            node_calls: RefCell::new(HashMap::new()),
        }
    }

    /// The node's links to other nodes, for calls to their shards (`node_calls`).
    pub fn set_links(&self, links: Rc<dyn crate::controller_runtime::NodeLinks>) {
        *self.links.borrow_mut() = Some(links);
    }

    /// The node's current metadata.
    pub fn node_metadata(&self) -> Arc<Metadata> {
        self.node.metadata.snapshot()
    }

    /// Gives this shard the driver of its replicated partitions.
    pub fn set_replication(&self, driver: Rc<crate::replication::driver::ReplicaDriver>) {
        *self.replication.borrow_mut() = Some(driver);
    }

    pub fn replication(&self) -> Option<Rc<crate::replication::driver::ReplicaDriver>> {
        self.replication.borrow().clone()
    }

    /// Appends `batches` to replicated partition `log` through its Raft group (this node
    /// must lead it): the offsets they took, once settled per `point`.
    pub(crate) async fn append_through_group(
        &self,
        topic: &str,
        log: &Partition,
        partition: i32,
        point: crate::acks::AckPoint,
        batches: Vec<bytes::BytesMut>,
    ) -> Result<(u64, u64), ApiError> {
        let Some(driver) = self.replication() else {
            return Err(ApiError::new(
                ErrorCode::Unknown,
                "a replicated partition on a node without replication",
            ));
        };
        crate::replication::produce::append_replicated(
            &driver, topic, log, partition, point, batches,
        )
        .await
    }

    /// Asks the node's controller (on shard 0) for `request`, from any shard.
    pub async fn submit_to_controller(
        &self,
        request: quiver_cluster::messages::ControllerRequest,
    ) -> Result<(), ApiError> {
        let controller = self.controller.borrow().clone();
        if let Some(c) = controller {
            return c
                .submit(request)
                .await
                .map_err(|f| ApiError::new(ErrorCode::Timeout, f.message().to_string()));
        }
        match self
            .call(
                crate::routing::CONTROLLER_SHARD,
                crate::forward::ShardCall::Controller(Box::new(request)),
            )
            .await
        {
            ShardReply::Done(r) => r,
            ShardReply::Dropped(e) => Err(e),
            _ => Err(ApiError::new(
                ErrorCode::Unknown,
                "shard 0 answered another call",
            )),
        }
    }

    /// Makes this shard (shard 0) the one that sends metadata changes to `controller`.
    pub fn set_controller(&self, controller: Rc<crate::controller_runtime::ControllerHandle>) {
        *self.controller.borrow_mut() = Some(controller);
    }

    /// The controller as this node sees it (shard 0; `None` elsewhere).
    pub fn controller_status(&self) -> Option<crate::controller_runtime::ControllerStatus> {
        self.controller.borrow().as_ref().map(|c| c.status())
    }

    pub(crate) fn settings(&self) -> &NodeSettings {
        &self.node.settings
    }

    /// The settings this shard's node runs with.
    pub fn node_settings(&self) -> &NodeSettings {
        &self.node.settings
    }

    /// This shard's metadata, refreshed when the node's version moved (one atomic load).
    pub(crate) fn metadata(&self) -> Arc<Metadata> {
        if self.node.metadata.version() != self.meta.borrow().version {
            *self.meta.borrow_mut() = self.node.metadata.snapshot();
        }
        self.meta.borrow().clone()
    }

    pub(crate) fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.settings()
            .data_dir
            .join("topics")
            .join(topic)
            .join(partition.to_string())
    }

    /// Serves one request, here or on the shard that owns it. Never panics on any input.
    pub async fn handle(self: Rc<Self>, ctx: RequestContext, request: Request) -> Response {
        let meta = self.metadata();
        let api = request.api();
        let here = routing::Here {
            node: self.settings().node_id,
            shard: self.id,
            shard_count: self.settings().shard_count,
        };
        match routing::route(&request, &meta, here) {
            Ok(Route::Here) => self.serve(ctx, request).await,
            Ok(Route::Shard(owner)) => self.forward(owner, ctx, request).await,
            Err(error) => match api {
                quiver_broker_api::Api::ListOffsets => Response::ListOffsets {
                    offset: -1,
                    outcome: Err(error),
                },
                api => Response::Refused { api, error },
            },
        }
    }

    /// The partition this shard serves, or the error its entry in a response gets.
    pub(crate) fn locate(&self, topic: &str, partition: i32) -> Result<Partition, ApiError> {
        let meta = self.metadata();
        let n = self.settings().shard_count;
        match routing::owner(&meta, topic, partition, n) {
            None => Err(routing::unknown_partition(&meta, topic, partition)),
            Some(o) if o != self.id => Err(ApiError::new(
                ErrorCode::NotOwner,
                format!(
                    "partition {topic}/{partition} is served by {}, not by shard {}; send it there (refresh metadata)",
                    self.address(o),
                    self.id
                ),
            )),
            Some(_) => self.open_partition(topic, partition),
        }
    }

    /// Runs a request on this shard.
    async fn serve(self: Rc<Self>, ctx: RequestContext, request: Request) -> Response {
        match request {
            Request::Handshake { .. } => {
                let meta = self.metadata();
                let n = self.settings().shard_count;
                Response::Handshake(HandshakeInfo {
                    node_id: self.settings().node_id,
                    cluster_id: meta.cluster_id.clone(),
                    shard_ports: (0..n)
                        .map(|i| self.settings().base_port.saturating_add(i as u16))
                        .collect(),
                    nodes: meta
                        .nodes
                        .iter()
                        .map(|(id, m)| (*id, m.client_addr.clone()))
                        .collect(),
                    controller: self.controller_status().map(|c| {
                        quiver_broker_api::ControllerInfo {
                            leader: c.leader,
                            term: c.term,
                            voters: c.voters,
                        }
                    }),
                })
            }
            Request::Metadata { topics } => Response::Metadata(self.describe_topics(&topics)),
            Request::DescribeConfigs(topics) => {
                Response::DescribeConfigs(self.describe_configs(&topics))
            }
            Request::CreateTopics(topics) => self.create_topics(topics).await,
            Request::DeleteTopics(names) => self.delete_topics(names).await,
            Request::AlterConfigs { topic, configs } => self.alter_configs(topic, configs).await,
            Request::AlterReplicas {
                topic,
                partition,
                replicas,
            } => self.alter_replicas(topic, partition, replicas).await,
            Request::DecommissionNode { node } => self.decommission(node).await,
            Request::DescribeReplication { all_shards } => {
                self.describe_replication(ctx, all_shards).await
            }
            r @ (Request::InitProducerId {
                transactional_id: Some(_),
                ..
            }
            | Request::AddOffsetsToTxn { .. }
            | Request::EndTxn { .. }) => self.serve_txn(ctx, r).await,
            Request::InitProducerId {
                transactional_id: None,
                transaction_timeout_ms: _,
                current,
            } => Response::InitProducerId(self.init_producer_id(current).await),
            Request::ListOffsets {
                topic,
                partition,
                query,
            } => self.list_offsets(&topic, partition, query).await,
            Request::Produce(p) => Response::Produce(self.clone().produce(p).await),
            Request::Fetch(f) => Response::Fetch(self.fetch(&f).await),
            r @ (Request::ConsumerGroupHeartbeat(_)
            | Request::OffsetCommit(_)
            | Request::OffsetFetch { .. }
            | Request::ListGroups
            | Request::DescribeGroup { .. }
            | Request::DeleteGroup { .. }
            | Request::AlterGroupConfig { .. }
            | Request::Nack(_)) => self.serve_group(ctx, r).await,
        }
    }

    pub(crate) fn address(&self, shard: usize) -> String {
        format!(
            "{}:{}",
            self.settings().advertised_host,
            self.settings().base_port as usize + shard
        )
    }

    /// Where clients reach shard `shard` of node `leader`: this node's address, or the one
    /// the leader registered (its shard 0's port + `shard`).
    pub(crate) fn leader_address(&self, meta: &Metadata, leader: NodeId, shard: usize) -> String {
        if leader != self.settings().node_id {
            if let Some(addr) = meta.client_address(leader, shard) {
                return addr;
            }
        }
        self.address(shard)
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
                    outcome: Err(ApiError::new(
                        ErrorCode::UnknownTopic,
                        format!("topic {name:?} does not exist; create it first"),
                    )),
                },
                Some(t) => TopicInfo {
                    partitions: t
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(p, pm)| PartitionInfo {
                            partition: p as i32,
                            node_id: pm.leader,
                            shard: (pm.shard % n) as u16,
                            address: self.leader_address(&meta, pm.leader, pm.shard % n),
                            replicas: pm.replicas.clone(),
                            leader_epoch: pm.leader_epoch,
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
            .map(|name| {
                let found = meta.topics.get(name).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::UnknownTopic,
                        format!("topic {name:?} does not exist"),
                    )
                });
                let configs = found.and_then(|t| {
                    topic_config::to_log_config(&t.configs, &self.settings().default_log)
                        .map(|cfg| topic_config::describe_topic(&t.configs, &cfg))
                        .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e))
                });
                match configs {
                    Ok(described) => TopicConfigs {
                        name: name.clone(),
                        configs: described,
                        outcome: Ok(()),
                    },
                    Err(e) => TopicConfigs {
                        name: name.clone(),
                        configs: vec![],
                        outcome: Err(e),
                    },
                }
            })
            .collect()
    }

    fn open_partition(&self, topic: &str, partition: i32) -> Result<Partition, ApiError> {
        match self
            .partitions
            .borrow()
            .get(&(topic.to_string(), partition))
        {
            Some(p) => Ok(p.clone()),
            None => {
                let meta = self.metadata();
                if let Some(pm) = meta.partition(topic, partition) {
                    if pm.leader != self.settings().node_id {
                        let n = self.settings().shard_count;
                        return Err(ApiError::new(
                            ErrorCode::NotOwner,
                            format!(
                                "node {} does not hold {topic}/{partition}: node {} leads it at {}; refresh metadata and send it there",
                                self.settings().node_id,
                                pm.leader,
                                self.leader_address(&meta, pm.leader, pm.shard % n)
                            ),
                        ));
                    }
                }
                Err(ApiError::new(ErrorCode::NotOwner, format!("partition {topic}/{partition} is not open on shard {}; refresh metadata and retry", self.id)))
            }
        }
    }

    async fn list_offsets(&self, topic: &str, partition: i32, query: OffsetQuery) -> Response {
        let found = match self.open_partition(topic, partition) {
            Err(e) => Err(e),
            // A replicated partition's offsets come from its leader once it knows the
            // group's commit index: a follower's, or a new leader's, may be behind what a
            // client was told before (offsets never go back, as Kafka's KIP-207).
            Ok(p) if p.group.as_ref().is_some_and(|(_, g)| !g.leader_ready.get()) => {
                let leader = p.group.as_ref().and_then(|(_, g)| g.leader.get());
                Err(ApiError::new(
                    ErrorCode::NotOwner,
                    format!(
                        "node {} does not lead {topic}/{partition} with a confirmed high watermark now (leader: {}); refresh metadata and retry",
                        self.settings().node_id,
                        leader.map_or("being elected".to_string(), |l| format!("node {l}"))
                    ),
                ))
            }
            Ok(p) => match query {
                OffsetQuery::Earliest => Ok(Some(p.offsets().log_start_offset)),
                OffsetQuery::Latest => Ok(Some(p.offsets().high_watermark)),
                OffsetQuery::Timestamp(ts) => p
                    .log
                    .offset_for_timestamp(ts)
                    .await
                    .map_err(|e| storage_error(&e)),
            },
        };
        match found {
            Ok(o) => Response::ListOffsets {
                offset: o.map_or(-1, |o| o as i64),
                outcome: Ok(()),
            },
            Err(e) => Response::ListOffsets {
                offset: -1,
                outcome: Err(e),
            },
        }
    }
}
