//! `--system durable-echo`: the design's floor under load (docs/decisions/0017).
//!
//! `quiver bench floor` measures one message at a time on a quiet machine. This driver runs
//! the workload's open loop through the same load generator, client connection
//! (`quiver_client::Connection`) and QUIC server code (`quiver_net`) as Quiver's runs, against
//! a server that does nothing but make each request durable — one O_DIRECT + O_DSYNC write,
//! as a shard's commit log round — and send it back. The producer keeps
//! `max_in_flight_requests` requests out, each carrying whatever arrived while it waited (the
//! latency workloads' `linger_ms = 0` and one in flight). There are no partitions, logs,
//! batches or fetches: a message is consumed when its request comes back.
//!
//! So at the same rate, what Quiver's end-to-end latency adds to this driver's is Quiver's
//! own cost (broker logic, the fetch path), and what this driver's adds to the floor is what
//! the design (a message waits for the request ahead of it) and the loaded machine cost.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use glommio::io::{DmaFile, OpenOptions};
use quiver_client::{Connection, TlsTrust};
use quiver_net::server::Handler;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::driver::{fresh_topic_names, BenchConsumer, BenchProducer, Driver};
use super::recorder::lock;
use super::workload::Workload;

/// The server's file: written round and round, pre-written once so that every write is an
/// overwrite of allocated blocks (as the commit log's recycled files).
const FILE_BYTES: u64 = 64 << 20;
/// Direct I/O granularity.
const BLOCK_BYTES: usize = 4096;
/// Most payload bytes in one request (Quiver's producer caps its requests alike).
const MAX_REQUEST_PAYLOAD_BYTES: usize = 4 << 20;
/// The file the server writes, in its data directory.
pub const FILE_NAME: &str = "durable-echo.wal";

/// Answers each request, once it is on disk, with the request itself. A write that fails
/// (or a request too large for the file) is answered with an empty frame, which the driver
/// reports as an error; the server logs why.
struct DurableEcho {
    file: Rc<DmaFile>,
    path: PathBuf,
    next_position: Cell<u64>,
}

impl Handler for DurableEcho {
    fn handle(
        &self,
        _peer: Rc<quiver_net::server::Peer>,
        request: BytesMut,
    ) -> Pin<Box<dyn std::future::Future<Output = Bytes>>> {
        let len = request.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        if len as u64 > FILE_BYTES {
            tracing::warn!(
                bytes = request.len(),
                "durable echo: request larger than its file"
            );
            return Box::pin(async { Bytes::new() });
        }
        let mut position = self.next_position.get();
        if position + len as u64 > FILE_BYTES {
            position = 0;
        }
        // Reserved before the write is awaited: concurrent requests write side by side.
        self.next_position.set(position + len as u64);
        let (file, path) = (self.file.clone(), self.path.clone());
        Box::pin(async move {
            let mut buf = file.alloc_dma_buffer(len);
            let bytes = buf.as_bytes_mut();
            bytes[..request.len()].copy_from_slice(&request);
            bytes[request.len()..].fill(0);
            match file.write_at(buf, position).await {
                Ok(n) if n == len => request.freeze(),
                Ok(n) => {
                    tracing::warn!(file = %path.display(), "durable echo: short write, {n} of {len} bytes");
                    Bytes::new()
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), "durable echo: write failed: {e}");
                    Bytes::new()
                }
            }
        })
    }
}

/// Opens (creating) and pre-writes the server's file, `O_DIRECT | O_DSYNC`.
async fn open_file(dir: &Path) -> Result<DurableEcho, String> {
    // As a node's logs do: else glommio's iopoll probe reads the new, empty file, wrongly
    // concludes that the device polls, and the writes wait on the polled ring (~1.3 ms here).
    quiver_storage::files::prime_device_probe(dir)
        .await
        .map_err(|e| format!("preparing the durable echo's disk: {e}"))?;
    let path = dir.join(FILE_NAME);
    let failed = |what: &str, e: glommio::GlommioError<()>| {
        format!("{what} {} for the durable echo: {e}", path.display())
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DSYNC)
        .dma_open(&path)
        .await
        .map_err(|e| failed("opening", e))?;
    let chunk = 1 << 20;
    let mut position = 0;
    while position < FILE_BYTES {
        let mut zeros = file.alloc_dma_buffer(chunk);
        zeros.as_bytes_mut().fill(0);
        file.write_at(zeros, position)
            .await
            .map_err(|e| failed("pre-writing", e))?;
        position += chunk as u64;
    }
    Ok(DurableEcho {
        file: Rc::new(file),
        path,
        next_position: Cell::new(0),
    })
}

/// Starts the durable echo server on a glommio thread on `server_cpu`; its file and dev
/// certificate go in `data_dir`.
pub fn start_server(data_dir: PathBuf, server_cpu: Option<usize>) -> Result<SocketAddr, String> {
    crate::floor::start_quic_server(data_dir, server_cpu, true, |dir| async move {
        Ok(Rc::new(open_file(&dir).await?) as Rc<dyn Handler>)
    })
}

/// What a consumer of a topic gets: the payloads of its partitions.
struct Subscriber {
    partitions: Vec<u32>,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// The harness's driver for a [`start_server`] server.
pub struct DurableEchoDriver {
    addr: SocketAddr,
    /// Where the server's dev certificate is.
    data_dir: PathBuf,
    subscribers: Arc<Mutex<HashMap<String, Vec<Subscriber>>>>,
}

impl DurableEchoDriver {
    pub fn new(addr: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            addr,
            data_dir,
            subscribers: Arc::default(),
        }
    }
}

/// The partition a message would go to by its key (any stable spread will do: partitions only
/// decide which consumer gets the message).
fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let h = key
        .iter()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(*b)));
    h % partitions.max(1)
}

type Ack = oneshot::Sender<Result<(), String>>;

/// A message waiting for the next request.
struct Pending {
    partition: u32,
    payload: Bytes,
    ack: Ack,
}

struct ProducerShared {
    topic: String,
    pending: Mutex<VecDeque<Pending>>,
    wake: Notify,
    subscribers: Arc<Mutex<HashMap<String, Vec<Subscriber>>>>,
}

struct EchoProducer {
    shared: Arc<ProducerShared>,
    partitions: u32,
    sender: tokio::task::JoinHandle<()>,
}

impl Drop for EchoProducer {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

impl BenchProducer for EchoProducer {
    fn send(
        &self,
        key: Bytes,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<BoxFuture<'static, Result<(), String>>, String>> {
        let (ack, rx) = oneshot::channel();
        lock(&self.shared.pending).push_back(Pending {
            partition: partition_of(&key, self.partitions),
            payload,
            ack,
        });
        self.shared.wake.notify_one();
        let acked = rx
            .map(|r| r.unwrap_or_else(|_| Err("the durable echo's sender stopped".into())))
            .boxed();
        async move { Ok(acked) }.boxed()
    }
}

/// Takes what waits, up to [`MAX_REQUEST_PAYLOAD_BYTES`] (at least one message).
fn take_request(pending: &Mutex<VecDeque<Pending>>) -> Vec<Pending> {
    let mut q = lock(pending);
    let mut bytes = 0;
    let mut out = Vec::new();
    while let Some(p) = q.front() {
        if !out.is_empty() && bytes + p.payload.len() > MAX_REQUEST_PAYLOAD_BYTES {
            break;
        }
        bytes += p.payload.len();
        out.extend(q.pop_front());
    }
    out
}

/// Sends requests while fewer than `in_flight` are out, each with everything that waits.
async fn sender(shared: Arc<ProducerShared>, conn: Arc<Connection>, in_flight: usize) {
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let batch = loop {
            let batch = take_request(&shared.pending);
            if !batch.is_empty() {
                break batch;
            }
            shared.wake.notified().await;
        };
        let (shared, conn) = (shared.clone(), conn.clone());
        tokio::spawn(async move {
            let outcome = exchange(&conn, &shared.topic, &batch).await;
            settle(&shared, batch, outcome);
            drop(slot);
        });
    }
}

/// One request with the batch's payloads back to back; the answer must be the request.
async fn exchange(conn: &Connection, topic: &str, batch: &[Pending]) -> Result<(), String> {
    let mut records = BytesMut::with_capacity(batch.iter().map(|p| p.payload.len()).sum());
    for p in batch {
        records.extend_from_slice(&p.payload);
    }
    let frame = quiver_schema::requests::produce(
        conn.next_request_id(),
        topic,
        0,
        quiver_schema::wire::Acks::All,
        30_000,
        &records,
    );
    let sent = frame.len();
    let answer = conn.request(frame).await.map_err(|e| e.to_string())?;
    match answer.bytes().len() {
        n if n == sent => Ok(()),
        n => Err(format!(
            "the durable echo answered {n} bytes to a {sent}-byte request: its write failed (see its log)"
        )),
    }
}

/// Acknowledges the batch's messages and hands them to the consumers of their partitions.
fn settle(shared: &ProducerShared, batch: Vec<Pending>, outcome: Result<(), String>) {
    if outcome.is_ok() {
        let subscribers = lock(&shared.subscribers);
        for s in subscribers.get(&shared.topic).into_iter().flatten() {
            for p in batch.iter().filter(|p| s.partitions.contains(&p.partition)) {
                let _ = s.tx.send(p.payload.clone());
            }
        }
    }
    for p in batch {
        let _ = p.ack.send(outcome.clone());
    }
}

struct EchoConsumer {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl BenchConsumer for EchoConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Bytes, String>> {
        async move {
            self.rx
                .recv()
                .await
                .ok_or_else(|| "the durable echo driver is gone".to_string())
        }
        .boxed()
    }
}

impl Driver for DurableEchoDriver {
    fn prepare<'a>(&'a self, w: &'a Workload) -> BoxFuture<'a, Result<Vec<String>, String>> {
        lock(&self.subscribers).clear();
        async move { Ok(fresh_topic_names(w)) }.boxed()
    }

    fn producer<'a>(
        &'a self,
        topic: &'a str,
        w: &'a Workload,
    ) -> BoxFuture<'a, Result<Box<dyn BenchProducer>, String>> {
        async move {
            let trust = TlsTrust::LocalDataDir(self.data_dir.clone());
            let conn = Connection::connect(self.addr, "localhost", &trust)
                .await
                .map_err(|e| format!("connecting to the durable echo at {}: {e}", self.addr))?;
            let shared = Arc::new(ProducerShared {
                topic: topic.to_string(),
                pending: Mutex::default(),
                wake: Notify::new(),
                subscribers: self.subscribers.clone(),
            });
            let sender = tokio::spawn(sender(
                shared.clone(),
                Arc::new(conn),
                w.max_in_flight_requests,
            ));
            Ok(Box::new(EchoProducer {
                shared,
                partitions: w.partitions_per_topic,
                sender,
            }) as Box<dyn BenchProducer>)
        }
        .boxed()
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partitions: Vec<u32>,
    ) -> BoxFuture<'a, Result<Box<dyn BenchConsumer>, String>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.subscribers)
            .entry(topic.to_string())
            .or_default()
            .push(Subscriber { partitions, tx });
        async move { Ok(Box::new(EchoConsumer { rx }) as Box<dyn BenchConsumer>) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_every_partition_and_stay_put() {
        let keys: Vec<Bytes> = (0u64..1024)
            .map(|k| Bytes::from(k.to_be_bytes().to_vec()))
            .collect();
        let mut seen = [0u32; 16];
        for k in &keys {
            let p = partition_of(k, 16);
            assert_eq!(p, partition_of(k, 16));
            seen[p as usize] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 0),
            "every partition gets keys: {seen:?}"
        );
        assert_eq!(partition_of(b"any", 0), 0, "no partitions count as one");
    }

    #[test]
    fn a_request_takes_everything_waiting_up_to_its_bound() {
        let pending = Mutex::new(VecDeque::new());
        let mut acks = Vec::new();
        for _ in 0..5 {
            let (ack, rx) = oneshot::channel();
            acks.push(rx);
            lock(&pending).push_back(Pending {
                partition: 0,
                payload: Bytes::from(vec![0u8; MAX_REQUEST_PAYLOAD_BYTES / 2]),
                ack,
            });
        }
        assert_eq!(take_request(&pending).len(), 2);
        assert_eq!(take_request(&pending).len(), 2);
        assert_eq!(take_request(&pending).len(), 1);
        assert!(take_request(&pending).is_empty());
    }
}
