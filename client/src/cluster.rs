//! [`Client`]: bootstrap, metadata and routing. It learns which shard owns each partition and
//! sends a partition's requests straight there (zero hops inside the node), keeps one QUIC
//! connection per shard, and refreshes its routes when the broker says they moved.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_schema::requests;
use quiver_schema::wire::ErrorCode;

use crate::connection::{Connection, ResponseFrame, DEFAULT_CONNECT_TIMEOUT_MS};
use crate::error::{ClientError, Result};
use crate::trust::TlsTrust;

/// How the client reaches and trusts brokers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How the broker's certificate is verified.
    pub trust: TlsTrust,
    /// Name the broker's certificate must carry (`localhost` for a dev certificate).
    pub server_name: String,
    /// PEM certificate and key for brokers that require mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// How long one request may wait for its response, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long setting up a connection to one broker may take, in milliseconds. Only the
    /// requests to that broker wait for it.
    pub connect_timeout_ms: u64,
    /// Name sent to the broker in the handshake.
    pub client_name: String,
}

/// How long a coordinator request keeps finding a coordinator that moved (a failover takes
/// an election timeout and a metadata change).
const COORDINATOR_FAILOVER_WAIT_MS: u64 = 15_000;

impl Default for ClientConfig {
    /// Trusts the dev certificate of a local node in `./quiver-data`.
    fn default() -> Self {
        Self {
            trust: TlsTrust::LocalDataDir(PathBuf::from("./quiver-data")),
            server_name: "localhost".into(),
            client_cert: None,
            request_timeout_ms: 30_000,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            client_name: format!("quiver-client/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Where each partition of a topic is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    /// Topic name.
    pub name: String,
    /// Address of the shard owning partition i.
    pub partitions: Vec<SocketAddr>,
}

impl TopicRoute {
    /// The address of the shard owning `partition`; `UnknownPartition` when the topic has
    /// no such partition.
    pub fn address(&self, partition: i32) -> Result<SocketAddr> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.partitions.get(p))
            .copied()
            .ok_or_else(|| ClientError::Broker {
                code: ErrorCode::UnknownPartition,
                message: format!(
                    "topic {:?} has {} partitions, not {partition}",
                    self.name,
                    self.partitions.len()
                ),
            })
    }
}

/// The pooled connection to one address. Its async lock is held while (re)connecting, so
/// there is one connect in flight per address and only requests to that address wait for it.
type ConnectionSlot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

struct Inner {
    config: ClientConfig,
    bootstrap: Vec<SocketAddr>,
    /// Held only to look up or insert a slot, never across an await.
    conns: std::sync::Mutex<HashMap<SocketAddr, ConnectionSlot>>,
    routes: std::sync::RwLock<HashMap<String, Arc<TopicRoute>>>,
}

/// A handle to a Quiver cluster; cheap to clone, shared by producers, consumers and admin.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The error carried by a response envelope, if any.
pub fn envelope_error(resp: &ResponseFrame) -> Result<()> {
    match resp.envelope().error() {
        Some(e) if e.code() != ErrorCode::None => Err(ClientError::Broker {
            code: e.code(),
            message: e.message().unwrap_or_default().to_string(),
        }),
        _ => Ok(()),
    }
}

/// Turns a body-level `Error` table into a result.
pub fn body_error(e: Option<quiver_schema::wire::Error<'_>>) -> Result<()> {
    match e {
        Some(e) if e.code() != ErrorCode::None => Err(ClientError::Broker {
            code: e.code(),
            message: e.message().unwrap_or_default().to_string(),
        }),
        _ => Ok(()),
    }
}

/// The guard of `m`, poisoned or not: the client's locks guard plain bookkeeping (the
/// connection pool, the producer's queues) that a panicking holder cannot leave half-updated
/// in a way that matters more than stopping.
pub(crate) fn unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Connects to the first reachable broker in `brokers` and checks it speaks our protocol.
    pub async fn connect(brokers: &[SocketAddr], config: ClientConfig) -> Result<Self> {
        if brokers.is_empty() {
            return Err(ClientError::Invalid("no broker address given".into()));
        }
        let client = Self {
            inner: Arc::new(Inner {
                config,
                bootstrap: brokers.to_vec(),
                conns: std::sync::Mutex::new(HashMap::new()),
                routes: std::sync::RwLock::new(HashMap::new()),
            }),
        };
        let resp = client
            .bootstrap_request(|id| requests::handshake(id, &client.inner.config.client_name))
            .await?;
        resp.envelope()
            .body_as_handshake_response()
            .ok_or_else(|| ClientError::Protocol("the handshake response has no body".into()))?;
        Ok(client)
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn slot(&self, addr: SocketAddr) -> ConnectionSlot {
        unpoisoned(&self.inner.conns)
            .entry(addr)
            .or_default()
            .clone()
    }

    /// The pooled connection to `addr`, (re)connected when needed. Requests to other
    /// addresses never wait for this connect; concurrent requests to `addr` share it.
    pub async fn connection(&self, addr: SocketAddr) -> Result<Arc<Connection>> {
        let slot = self.slot(addr);
        let mut conn = slot.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let cfg = &self.inner.config;
        let fresh = Arc::new(
            Connection::connect_within(
                addr,
                &cfg.server_name,
                &cfg.trust,
                cfg.client_cert.as_ref(),
                cfg.connect_timeout_ms,
            )
            .await?,
        );
        *conn = Some(fresh.clone());
        Ok(fresh)
    }

    /// The pooled connections that are open, with their transport statistics (path MTU,
    /// datagrams, lost packets): what a benchmark reports beside its latencies.
    pub fn connection_stats(&self) -> Vec<(SocketAddr, quinn::ConnectionStats)> {
        let slots: Vec<(SocketAddr, ConnectionSlot)> = unpoisoned(&self.inner.conns)
            .iter()
            .map(|(a, s)| (*a, s.clone()))
            .collect();
        slots
            .into_iter()
            .filter_map(|(addr, slot)| {
                let conn = slot.try_lock().ok()?;
                let c = conn.as_ref().filter(|c| !c.is_closed())?;
                Some((addr, c.stats()))
            })
            .collect()
    }

    /// Drops `failed` from the pool so the next request to `addr` reconnects. A slot being
    /// reconnected, or already holding a newer connection, is left alone.
    fn forget(&self, addr: SocketAddr, failed: &Arc<Connection>) {
        if let Ok(mut conn) = self.slot(addr).try_lock() {
            if conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, failed)) {
                *conn = None;
            }
        }
    }

    /// Sends one request to `addr` within `request_timeout_ms`; envelope-level errors become
    /// `ClientError::Broker`.
    pub async fn request_to(
        &self,
        addr: SocketAddr,
        build: impl FnOnce(u64) -> Bytes,
    ) -> Result<ResponseFrame> {
        let conn = self.connection(addr).await?;
        let frame = build(conn.next_request_id());
        let timeout_ms = self.inner.config.request_timeout_ms;
        let resp = match tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            conn.request(frame),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.forget(addr, &conn);
                return Err(e);
            }
            Err(_) => {
                // A broker killed without a goodbye leaves the connection looking open until
                // QUIC's idle timeout (30 s): after a timeout, reconnect on the next request.
                self.forget(addr, &conn);
                return Err(ClientError::Timeout { timeout_ms });
            }
        };
        envelope_error(&resp)?;
        Ok(resp)
    }

    /// A request any broker can answer (metadata, admin): tries the bootstrap brokers in turn.
    pub async fn bootstrap_request(&self, build: impl Fn(u64) -> Bytes) -> Result<ResponseFrame> {
        let mut last = None;
        for addr in &self.inner.bootstrap {
            match self.request_to(*addr, &build).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::NoBroker(last.map_or_else(
            || "no broker answered".into(),
            |e| e.to_string(),
        )))
    }

    /// A request for the coordinator of `key` in `internal_topic` (a group id in
    /// `__consumer_offsets`, a transactional id in `__transaction_state`): sent to the node
    /// serving the key's partition of that topic, found as Kafka's FindCoordinator would. While
    /// the topic does not exist, to a bootstrap broker (it creates the topic on first use);
    /// once after a `NotOwner`, again with fresh metadata.
    pub async fn coordinator_request(
        &self,
        internal_topic: &str,
        key: &str,
        build: impl Fn(u64) -> Bytes,
    ) -> Result<ResponseFrame> {
        // A coordinator moves when its partition's leader fails over: retried at the new
        // one (found by refreshing metadata) until it answers or the bound passes.
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(COORDINATOR_FAILOVER_WAIT_MS);
        let mut backoff = std::time::Duration::from_millis(50);
        let mut refreshed = false;
        loop {
            let route = if refreshed {
                self.refresh_route(internal_topic).await
            } else {
                self.route(internal_topic).await
            };
            let target = match route {
                Ok(r) if !r.partitions.is_empty() => {
                    let n = u32::try_from(r.partitions.len()).unwrap_or(u32::MAX);
                    let p = quiver_group::coordinator_key::coordinator_partition(key, n);
                    usize::try_from(p)
                        .ok()
                        .and_then(|p| r.partitions.get(p))
                        .copied()
                }
                Ok(_) => None,
                Err(e) if e.needs_metadata_refresh() || e.is_retriable() => None,
                Err(ClientError::Broker {
                    code: ErrorCode::UnknownTopic,
                    ..
                }) => None,
                Err(e) => return Err(e),
            };
            let answer = match target {
                Some(addr) => self.request_to(addr, &build).await,
                None => self.bootstrap_request(&build).await,
            };
            match answer {
                Err(e) if e.needs_metadata_refresh() && !refreshed => refreshed = true,
                Err(e)
                    if (e.needs_metadata_refresh()
                        || matches!(
                            e,
                            ClientError::Broker {
                                code: ErrorCode::CoordinatorLoading,
                                ..
                            }
                        ))
                        && std::time::Instant::now() + backoff < deadline =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// Where `topic`'s partitions are served (cached).
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        if let Some(r) = self.cached_route(topic) {
            return Ok(r);
        }
        self.refresh_route(topic).await
    }

    /// `topic`'s route if it is cached; never waits.
    pub fn cached_route(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        match self.inner.routes.read() {
            Ok(g) => g.get(topic).cloned(),
            Err(p) => p.into_inner().get(topic).cloned(),
        }
    }

    /// Asks a broker again where `topic`'s partitions are.
    pub async fn refresh_route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        let resp = self
            .bootstrap_request(|id| requests::metadata(id, &[topic]))
            .await?;
        let body = resp
            .envelope()
            .body_as_metadata_response()
            .ok_or_else(|| ClientError::Protocol("metadata response without body".into()))?;
        let t = body
            .topics()
            .and_then(|ts| ts.iter().next())
            .ok_or_else(|| ClientError::Protocol("metadata response without the topic".into()))?;
        body_error(t.error())?;
        let mut partitions = Vec::new();
        for p in t.partitions().into_iter().flatten() {
            let addr: SocketAddr = p.address().unwrap_or_default().parse().map_err(|e| {
                ClientError::Protocol(format!("bad partition address {:?}: {e}", p.address()))
            })?;
            partitions.push(addr);
        }
        let route = Arc::new(TopicRoute {
            name: topic.to_string(),
            partitions,
        });
        match self.inner.routes.write() {
            Ok(mut g) => g.insert(topic.to_string(), route.clone()),
            Err(p) => p.into_inner().insert(topic.to_string(), route.clone()),
        };
        Ok(route)
    }

    /// A request for one partition, sent to its owner; retried once after a metadata refresh
    /// when the broker says the partition moved.
    pub async fn partition_request(
        &self,
        topic: &str,
        partition: i32,
        build: impl Fn(u64) -> Bytes,
        body_err: impl Fn(&ResponseFrame) -> Result<()>,
    ) -> Result<ResponseFrame> {
        let mut refreshed = false;
        loop {
            let route = if refreshed {
                self.refresh_route(topic).await?
            } else {
                self.route(topic).await?
            };
            let addr = route.address(partition)?;
            let result = match self.request_to(addr, &build).await {
                Ok(r) => body_err(&r).map(|()| r),
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.needs_metadata_refresh() && !refreshed => refreshed = true,
                other => return other,
            }
        }
    }
}
