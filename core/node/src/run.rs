//! Starting a node: N shards on N glommio executors (pinned to CPUs, or unpinned in tests),
//! joined in a channel mesh, each serving QUIC at `base_port + shard`.

use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{CpuSet, Latency, LocalExecutorPoolBuilder, PoolPlacement, Shares};
use quiver_broker::controller_runtime::{
    ControllerHandle, ControllerTask, NodeLinks, CONTROLLER_GROUP,
};
use quiver_broker::controller_store::ControllerStore;
use quiver_broker::replication::driver::{DriverContext, ReplicaDriver};
use quiver_broker_api::{Principal, RequestContext};
use quiver_cluster::cluster_guard::Verdict;
use quiver_cluster::messages::{ControllerRequest, NodeMessage};
use quiver_cluster::model::NodeMeta;
use quiver_net::server::{internal_frame, Handler, Links, Peer, QuicServer};
use quiver_net::tls::{self, QuicLimits, TlsIdentity};
use quiver_raft::Envelope;
use quiver_schema::{decode, encode};

use crate::data_dir_lock::DataDirLock;
use quiver_broker::forward::ShardMsg;
use quiver_broker::metadata::{Metadata, MetadataStore};
use quiver_broker::shard::{NodeSettings, NodeShared, Shard, ShardQueues, ShardStorage};
use quiver_storage::commit_log::{self, CommitLog};

/// Everything `quiver serve` decides before the shards start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub settings: NodeSettings,
    /// IP to bind (the base port comes from `settings`).
    pub bind_host: std::net::IpAddr,
    /// CPUs to pin shards to, one each; `None` runs shards unpinned.
    pub cores: Option<Vec<usize>>,
    /// PEM certificate and key; `None` makes or reuses the dev certificate.
    pub tls_pem: Option<(PathBuf, PathBuf)>,
    /// PEM CAs whose client certificates are required (mTLS); `None` accepts any client.
    pub tls_client_ca: Option<PathBuf>,
    pub quic: QuicLimits,
    /// The data directory's lock, when the caller took it before its own checks (`quiver
    /// serve` does); `None`: [`run_node`] takes it before touching the directory.
    pub data_dir_lock: Option<Arc<DataDirLock>>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Setup(String),
    #[error("shard {shard} failed to start: {reason}")]
    Shard { shard: usize, reason: String },
}

/// What the node tells its operator once every shard serves.
#[derive(Debug, Clone)]
pub struct Banner {
    pub shard_addresses: Vec<std::net::SocketAddr>,
    pub data_dir: PathBuf,
    pub cert_path: PathBuf,
    pub cert_fingerprint_sha256: String,
    pub cert_created: bool,
    pub cluster_id: String,
    pub topics: usize,
}

fn identity(config: &NodeConfig) -> Result<(TlsIdentity, bool), NodeError> {
    match &config.tls_pem {
        Some((cert, key)) => tls::load_pem(cert, key)
            .map(|i| (i, false))
            .map_err(|e| NodeError::Setup(e.to_string())),
        None => tls::load_or_create_dev_identity(&config.settings.data_dir)
            .map_err(|e| NodeError::Setup(e.to_string())),
    }
}

/// The QUIC listener's handler: Quiver's FlatBuffers frames in and out, the broker's typed
/// requests and responses in between; on shard 0, other nodes' internal frames to the
/// controller.
struct ShardHandler(
    Rc<Shard>,
    Option<Rc<ControllerHandle>>,
    std::cell::RefCell<quiver_cluster::cluster_guard::ClusterGuard>,
);

/// The broker's view of the node's QUIC links.
struct QuicLinks(Links);

impl NodeLinks for QuicLinks {
    fn send(
        &self,
        to: std::net::SocketAddr,
        message: Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = bool> + '_>> {
        Box::pin(async move {
            match self.0.send(to, internal_frame(&message)).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(%to, "internal send failed: {e}");
                    false
                }
            }
        })
    }
}

impl Handler for ShardHandler {
    fn handle(
        &self,
        peer: Rc<Peer>,
        request: BytesMut,
    ) -> Pin<Box<dyn std::future::Future<Output = Bytes>>> {
        let shard = self.0.clone();
        Box::pin(async move {
            let max_frame_bytes = shard.node_settings().max_frame_bytes;
            let decoded = match decode::decode_request(request, max_frame_bytes) {
                Ok(d) => d,
                Err(refusal) => return refusal.to_frame(),
            };
            let ctx = RequestContext {
                peer: Some(peer.remote),
                client_certificate: peer.client_certificate.clone(),
                principal: Principal::Anonymous,
                client_id: decoded.client_id,
            };
            let response = shard.handle(ctx, decoded.request).await;
            encode::encode_response(decoded.request_id, &response)
        })
    }

    /// Another node's message: the controller group's part of a Raft envelope to the
    /// controller (shard 0), the partition groups' part to this shard's driver; controller
    /// requests and replies to the controller. Malformed frames are dropped.
    fn internal(&self, peer: Rc<Peer>, frame: BytesMut) {
        let message = match NodeMessage::decode(frame.get(4..).unwrap_or_default()) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(from = %peer.remote, "dropping an internal frame: {e}");
                return;
            }
        };
        match message {
            NodeMessage::Raft {
                from,
                cluster,
                envelope,
            } => {
                let envelope = match quiver_raft::codec::decode(&envelope) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::debug!(from, "dropping a Raft envelope: {e}");
                        return;
                    }
                };
                let meta = self.0.node_metadata();
                let mine = &meta.cluster_id;
                let from_leader = || {
                    envelope.messages.iter().any(|(g, m)| {
                        *g == CONTROLLER_GROUP
                            && matches!(
                                m,
                                quiver_raft::types::Message::Append { .. }
                                    | quiver_raft::types::Message::Heartbeat { .. }
                            )
                    })
                };
                match self.2.borrow_mut().check(mine, from, &cluster, from_leader) {
                    Verdict::Accept => {}
                    Verdict::Drop { first } => {
                        if first {
                            tracing::error!(from, theirs = %cluster, %mine, "dropping the Raft envelopes of a node of another cluster (was it started with another cluster's data directory?)");
                        }
                        return;
                    }
                    Verdict::Refuse { theirs, voters } => {
                        let why = format!(
                            "this node's data directory ({}) belongs to cluster {mine}, but the voters {voters:?} of its seeds belong to cluster {theirs}: the node stops rather than mix two clusters' data. Start it with an empty --data-dir to join {theirs}, or with the seeds of cluster {mine}",
                            self.0.node_settings().data_dir.display()
                        );
                        tracing::error!("{why}");
                        eprintln!("error: {why}");
                        std::process::exit(2);
                    }
                }
                let (controller, partitions): (Vec<_>, Vec<_>) = envelope
                    .messages
                    .into_iter()
                    .partition(|(g, _)| *g == CONTROLLER_GROUP);
                if let (Some(c), false) = (&self.1, controller.is_empty()) {
                    c.deliver_envelope(
                        from,
                        Envelope {
                            messages: controller,
                        },
                    );
                }
                if let (Some(d), false) = (self.0.replication(), partitions.is_empty()) {
                    d.deliver(
                        from,
                        Envelope {
                            messages: partitions,
                        },
                    );
                }
            }
            NodeMessage::Call {
                from,
                from_shard,
                id,
                call,
            } => self.0.on_node_call(from, from_shard, id, call),
            NodeMessage::CallReply { id, result } => self.0.on_node_reply(id, result),
            other => match &self.1 {
                Some(c) => c.deliver_message(other),
                None => {
                    tracing::debug!(from = %peer.remote, "a controller message for shard {}: dropped", self.0.id)
                }
            },
        }
    }
}

/// Crash recovery's second half, before any shard opens a partition: re-applies the shards'
/// commit logs (whatever the shard count was) to the partition logs, on a one-off executor.
fn replay_commit_logs(data_dir: &std::path::Path) -> Result<(), NodeError> {
    if !data_dir.join(commit_log::COMMIT_LOG_DIR).exists() {
        return Ok(());
    }
    let root = data_dir.to_path_buf();
    let report = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("quiver-recovery")
        .spawn(move || async move { quiver_storage::recovery::replay_all(&root).await })
        .map_err(|e| NodeError::Setup(format!("cannot start the recovery executor: {e}")))?
        .join()
        .map_err(|e| NodeError::Setup(format!("commit log recovery stopped: {e}")))?
        .map_err(|e| {
            NodeError::Setup(format!(
                "commit log recovery failed: {e}; the commit log is kept, fix the cause and start again"
            ))
        })?;
    if report.files > 0 {
        tracing::info!(
            files = report.files,
            partitions = report.partitions,
            batches = report.batches_appended,
            "replayed the commit log"
        );
    }
    Ok(())
}

/// Runs a node until every shard stops. `on_ready` is called once all shards serve.
pub fn run_node(
    config: NodeConfig,
    on_ready: impl FnOnce(&Banner) + Send + 'static,
) -> Result<(), NodeError> {
    let mut config = config;
    // Before anything in the directory is read or written: a second node there would
    // overwrite this one's acknowledged records.
    let _data_dir_lock = match config.data_dir_lock.take() {
        Some(lock) => lock,
        None => Arc::new(
            DataDirLock::acquire(&config.settings.data_dir)
                .map_err(|e| NodeError::Setup(e.to_string()))?,
        ),
    };
    std::fs::create_dir_all(config.settings.data_dir.join("topics")).map_err(|e| {
        NodeError::Setup(format!(
            "cannot create {}: {e}",
            config.settings.data_dir.display()
        ))
    })?;
    // Absolute from here on: glommio opens relative paths against an invalid directory fd.
    config.settings.data_dir = std::fs::canonicalize(&config.settings.data_dir).map_err(|e| {
        NodeError::Setup(format!(
            "cannot resolve {}: {e}",
            config.settings.data_dir.display()
        ))
    })?;
    let data_dir = &config.settings.data_dir;
    replay_commit_logs(data_dir)?;
    let n = config.settings.shard_count.max(1);
    let node_id = config.settings.node_id;
    let registration = NodeMeta {
        client_addr: format!(
            "{}:{}",
            config.settings.advertised_host, config.settings.base_port
        ),
        internal_addr: format!(
            "{}:{}",
            config.settings.advertised_host, config.settings.base_port
        ),
        rack: config.settings.cluster.rack.clone(),
        shards: n,
        decommissioned: false,
    };
    let booted = crate::controller_boot::boot(
        data_dir,
        node_id,
        &config.settings.cluster,
        registration.clone(),
    )?;
    let meta = booted.controller.metadata().clone();
    if !meta.cluster_id.is_empty() {
        crate::node_identity::check_or_create(data_dir, node_id, &meta.cluster_id)
            .map_err(|e| NodeError::Setup(e.to_string()))?;
    }
    let (identity, cert_created) = identity(&config)?;
    let server_config =
        tls::server_config(&identity, &config.quic, config.tls_client_ca.as_deref())
            .map_err(|e| NodeError::Setup(e.to_string()))?;
    let link_config = tls::internal_client_config(&identity, &config.quic, None)
        .map_err(|e| NodeError::Setup(e.to_string()))?;
    let controller_slot = Arc::new(std::sync::Mutex::new(Some(ControllerBoot {
        booted,
        registration,
        link_config: link_config.clone(),
    })));
    let banner_base = Banner {
        shard_addresses: Vec::new(),
        data_dir: data_dir.clone(),
        cert_path: identity.cert_path.clone(),
        cert_fingerprint_sha256: identity.fingerprint_sha256(),
        cert_created,
        cluster_id: meta.cluster_id.clone(),
        topics: meta.topics.len(),
    };
    let shared = Arc::new(NodeShared {
        settings: config.settings.clone(),
        metadata: MetadataStore::new(meta),
    });
    let placement = match &config.cores {
        None => PoolPlacement::Unbound(n),
        Some(cores) => {
            let set = CpuSet::online()
                .map_err(|e| NodeError::Setup(format!("cannot list CPUs: {e}")))?
                .filter(|l| cores.contains(&l.cpu));
            PoolPlacement::MaxSpread(n, Some(set))
        }
    };
    let mesh = MeshBuilder::<ShardMsg, _>::full(n, 1024);
    let (stop_senders, stop_fds) = stop_channels(n)?;
    block_termination_signals();
    let (ready_tx, ready_rx) =
        std::sync::mpsc::channel::<Result<std::net::SocketAddr, NodeError>>();
    let bind_host = config.bind_host;
    let max_connections = config.quic.max_connections;
    // Named for `top -H` and the benchmark's report of each thread's waits for a CPU.
    let handles = LocalExecutorPoolBuilder::new(placement)
        .name("shard")
        .on_all_shards(move || async move {
            let result = shard_main(
                shared,
                controller_slot,
                link_config,
                mesh,
                stop_fds,
                server_config,
                bind_host,
                max_connections,
                ready_tx.clone(),
            )
            .await;
            if let Err(e) = result {
                let _ = ready_tx.send(Err(e));
            }
        })
        .map_err(|e| NodeError::Setup(format!("cannot start {n} shards: {e}")))?;
    let mut banner = banner_base;
    for _ in 0..n {
        match ready_rx.recv_timeout(Duration::from_secs(300)) {
            Ok(Ok(addr)) => banner.shard_addresses.push(addr),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(NodeError::Setup(
                    "shards did not start within 300 s (recovering a large log?)".into(),
                ))
            }
        }
    }
    banner.shard_addresses.sort_by_key(|a| a.port());
    on_ready(&banner);
    std::thread::spawn(move || {
        let signal = wait_for_termination_signal();
        tracing::info!("signal {signal}: stopping (finishing in-flight appends, fsync)");
        for mut s in stop_senders {
            let _ = std::io::Write::write_all(&mut s, b"x");
        }
    });
    for r in handles.join_all() {
        if let Err(e) = r {
            return Err(NodeError::Setup(format!("a shard stopped: {e}")));
        }
    }
    Ok(())
}

/// One socket pair per shard: the node writes a byte to stop that shard.
type StopFds = Arc<std::sync::Mutex<Vec<Option<std::os::fd::OwnedFd>>>>;

fn stop_channels(n: usize) -> Result<(Vec<std::os::unix::net::UnixStream>, StopFds), NodeError> {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..n {
        let (a, b) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| NodeError::Setup(format!("socketpair: {e}")))?;
        senders.push(a);
        receivers.push(Some(std::os::fd::OwnedFd::from(b)));
    }
    Ok((senders, Arc::new(std::sync::Mutex::new(receivers))))
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT/SIGTERM in this thread and the shard threads it starts, so that only
/// `wait_for_termination_signal` receives them.
fn block_termination_signals() {
    let set = termination_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn wait_for_termination_signal() -> i32 {
    let set = termination_set();
    let mut sig = 0;
    // SAFETY: `set` is initialised and the signals are blocked in every thread of the process.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    sig
}

/// Resolves when the node writes to (or closes) this shard's stop socket.
async fn stopped(fd: Option<std::os::fd::OwnedFd>) {
    use futures_lite::AsyncReadExt;
    use std::os::fd::{FromRawFd, IntoRawFd};
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    // SAFETY: the fd is an open Unix socket we own; glommio's stream takes ownership of it.
    let mut stream = unsafe { glommio::net::UnixStream::from_raw_fd(fd.into_raw_fd()) };
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte).await;
}

/// What shard 0 needs to run the node's controller member.
struct ControllerBoot {
    booted: crate::controller_boot::Booted,
    registration: NodeMeta,
    link_config: quiver_net::quinn_proto::ClientConfig,
}

type ControllerSlot = Arc<std::sync::Mutex<Option<ControllerBoot>>>;

/// Starts the controller task on this shard (shard 0); returns its handle.
async fn start_controller(
    shard: &Rc<Shard>,
    boot: ControllerBoot,
    server: &QuicServer,
) -> Result<Rc<ControllerHandle>, NodeError> {
    let settings = shard.node_settings().clone();
    let (store, _) = ControllerStore::open(&settings.data_dir)
        .await
        .map_err(|e| NodeError::Setup(format!("cannot open the controller log: {e}")))?;
    let handle = ControllerHandle::new(settings.node_id);
    let links: Rc<dyn NodeLinks> = Rc::new(QuicLinks(server.links(boot.link_config)));
    let publisher = shard.clone();
    let data_dir = settings.data_dir.clone();
    let node_id = settings.node_id;
    let known_cluster =
        std::cell::RefCell::new(boot.booted.controller.metadata().cluster_id.clone());
    let on_metadata = Box::new(move |meta: &Metadata| {
        if *known_cluster.borrow() != meta.cluster_id {
            *known_cluster.borrow_mut() = meta.cluster_id.clone();
            if let Err(e) =
                crate::node_identity::check_or_create(&data_dir, node_id, &meta.cluster_id)
            {
                tracing::error!("{e}");
            }
        }
        publisher.publish_metadata(meta);
    });
    let task = ControllerTask {
        handle: handle.clone(),
        controller: boot.booted.controller,
        store,
        settings: settings.cluster.clone(),
        links,
        on_metadata,
        init_image: boot.booted.init_image,
        registration: boot.registration,
        joining: std::collections::BTreeMap::new(),
        asked_to_join: None,
    };
    glommio::spawn_local(task.run()).detach();
    shard.set_controller(handle.clone());
    Ok(handle)
}

/// Records this node as `topic/partition`'s leader at `term` in the controller, retrying
/// (the controller may be electing too) for as long as it still leads at that term.
async fn record_leader(
    shard: Rc<Shard>,
    me: i32,
    topic: String,
    partition: i32,
    term: u64,
    handle: Rc<quiver_broker::replication::driver::GroupHandle>,
) {
    let mut backoff = Duration::from_millis(100);
    let epoch = i32::try_from(term).unwrap_or(i32::MAX);
    while handle.is_leader.get() && handle.term.get() == term {
        // Gone (deleted), or recorded at this epoch or a newer one: nothing left to do.
        match shard.node_metadata().partition(&topic, partition) {
            Some(pm) if pm.leader_epoch < epoch => {}
            _ => return,
        }
        let command = quiver_cluster::command::Command::SetLeader {
            topic: topic.clone(),
            partition,
            leader: me,
            leader_epoch: epoch,
        };
        match shard
            .submit_to_controller(ControllerRequest::Command { command })
            .await
        {
            Ok(()) => return,
            Err(e) => tracing::debug!(%topic, partition, "recording the new leader: {e}; retrying"),
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Starts this shard's driver of its replicated partitions (before it applies metadata).
fn start_replication(
    shard: &Rc<Shard>,
    server: &QuicServer,
    link_config: quiver_net::quinn_proto::ClientConfig,
) {
    let settings = shard.node_settings();
    let me = settings.node_id;
    let leader_shard = shard.clone();
    let moved_shard = shard.clone();
    let links: Rc<dyn quiver_broker::controller_runtime::NodeLinks> =
        Rc::new(QuicLinks(server.links(link_config)));
    shard.set_links(links.clone());
    let ctx = DriverContext {
        me,
        shard: shard.id,
        tick_ms: settings.cluster.tick_ms,
        links: links.clone(),
        // A new leader records itself (its term is the partition's leader epoch).
        on_leader: Box::new(move |topic, partition, term, handle| {
            let shard = leader_shard.clone();
            shard.clone().became_leader(&topic, partition);
            glommio::spawn_local(record_leader(shard, me, topic, partition, term, handle)).detach();
        }),
        on_moved: Box::new(move |topic, partition, replicas| {
            let shard = moved_shard.clone();
            glommio::spawn_local(async move {
                let command = quiver_cluster::command::Command::SetReplicas {
                    topic: topic.clone(),
                    partition,
                    replicas,
                };
                // The driver asks again while the metadata still shows the move.
                if let Err(e) = shard
                    .submit_to_controller(ControllerRequest::Command { command })
                    .await
                {
                    tracing::debug!(%topic, partition, "recording a finished move: {e}");
                }
            })
            .detach();
        }),
    };
    let driver = ReplicaDriver::new(ctx, shard.node_metadata());
    shard.set_replication(driver.clone());
    glommio::spawn_local(shard.clone().reopen_failed_replicas(driver.clone())).detach();
    glommio::spawn_local(driver.run()).detach();
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    shared: Arc<NodeShared>,
    controller_slot: ControllerSlot,
    link_config: quiver_net::quinn_proto::ClientConfig,
    mesh: MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>,
    stop_fds: StopFds,
    server_config: Arc<quiver_net::quinn_proto::ServerConfig>,
    bind_host: std::net::IpAddr,
    max_connections: usize,
    ready: std::sync::mpsc::Sender<Result<std::net::SocketAddr, NodeError>>,
) -> Result<(), NodeError> {
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|_| NodeError::Setup("the shard mesh did not form".into()))?;
    let id = senders.peer_id();
    let stop_fd = match stop_fds.lock() {
        Ok(mut fds) => fds.get_mut(id).and_then(Option::take),
        Err(poisoned) => poisoned.into_inner().get_mut(id).and_then(Option::take),
    };
    let ex = glommio::executor();
    let latency = ex.create_task_queue(
        Shares::Static(1000),
        Latency::Matters(Duration::from_millis(1)),
        "produce-fetch",
    );
    let background = ex.create_task_queue(Shares::Static(50), Latency::NotImportant, "background");
    let queues = ShardQueues {
        latency: Some(latency),
        background: Some(background),
    };
    let settings = &shared.settings;
    let commit_log = if settings.shard_commit_log {
        let dir = commit_log::shard_dir(&settings.data_dir, id);
        let opened =
            CommitLog::open(&dir, &settings.data_dir, Some(latency), Some(background)).await;
        Some(opened.map_err(|e| NodeError::Shard {
            shard: id,
            reason: format!("cannot start the commit log: {e}"),
        })?)
    } else {
        None
    };
    let storage = ShardStorage { commit_log };
    let shard = Rc::new(Shard::new(id, shared.clone(), senders, queues, storage));
    for (_peer, stream) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = stream.recv().await {
                shard.on_mesh_message(msg);
            }
        })
        .detach();
    }
    let port = shared.settings.base_port as usize + id;
    let port = u16::try_from(port).map_err(|_| NodeError::Shard {
        shard: id,
        reason: format!("port {port} is out of range; lower the base port"),
    })?;
    let addr = std::net::SocketAddr::new(bind_host, port);
    let server = QuicServer::bind(
        addr,
        server_config,
        shared.settings.max_frame_bytes,
        max_connections,
    )
    .map_err(|e| NodeError::Shard {
        shard: id,
        reason: e.to_string(),
    })?;
    let boot = match controller_slot.lock() {
        Ok(mut slot) if id == 0 => slot.take(),
        Err(poisoned) if id == 0 => poisoned.into_inner().take(),
        _ => None,
    };
    let controller = match boot {
        Some(boot) => Some(start_controller(&shard, boot, &server).await?),
        None => None,
    };
    // Partitions open once the endpoint is bound (a replicated one's group sends through
    // it); clients learn of the node only from `ready`.
    start_replication(&shard, &server, link_config);
    shard.apply_metadata().await;
    // Transactions a restart cut off are completed (or timed out) without waiting for a
    // request to load their coordinator.
    shard.clone().load_txn_coordinators();
    let _ = ready.send(Ok(server.local_addr()));
    let guard = quiver_cluster::cluster_guard::ClusterGuard::new(
        shard.node_settings().node_id,
        shard.node_settings().cluster.voters.keys().copied(),
    );
    let handler: Rc<dyn Handler> = Rc::new(ShardHandler(
        shard.clone(),
        controller,
        std::cell::RefCell::new(guard),
    ));
    let task =
        glommio::spawn_local_into(server.run(handler, stopped(stop_fd)), latency).map_err(|e| {
            NodeError::Shard {
                shard: id,
                reason: e.to_string(),
            }
        })?;
    let result = task.await;
    shard.close_all().await;
    result.map_err(|e| NodeError::Shard {
        shard: id,
        reason: e.to_string(),
    })
}
