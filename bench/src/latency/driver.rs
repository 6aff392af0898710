//! What a system under test must offer the harness: topics, producers that say when a message
//! is acknowledged, consumers that hand out payloads. Quiver's driver is [`super::quiver`];
//! tests use a fake one with known latencies.

use bytes::Bytes;
use futures::future::BoxFuture;

use super::recorder::lock;
use super::workload::Workload;

/// The names a driver gives a run's topics: `bench-<workload>-<ms since epoch>-<run>-<i>`,
/// fresh for each run (a max-rate search runs several against the same server, and two runs
/// may start within one millisecond).
pub fn fresh_topic_names(workload: &Workload) -> Vec<String> {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    (0..workload.topics)
        .map(|i| format!("bench-{}-{stamp}-{run}-{i}", workload.name))
        .collect()
}

/// The topics (or streams) of a driver's last run, deleted when it prepares the next one: a
/// max-rate search runs a dozen steps against one server, and keeping every step's data
/// filled a 12 GB disk.
#[derive(Default)]
pub struct LastRunTopics(std::sync::Mutex<Vec<String>>);

impl LastRunTopics {
    /// The last run's names (forgotten here: the caller deletes them).
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.0))
    }

    pub fn remember(&self, names: &[String]) {
        lock(&self.0).extend(names.iter().cloned());
    }
}

pub trait Driver: Send + Sync + 'static {
    /// Creates the workload's topics (fresh names) and returns them.
    fn prepare<'a>(&'a self, workload: &'a Workload) -> BoxFuture<'a, Result<Vec<String>, String>>;
    fn producer<'a>(
        &'a self,
        topic: &'a str,
        workload: &'a Workload,
    ) -> BoxFuture<'a, Result<Box<dyn BenchProducer>, String>>;
    /// A consumer of `partitions` of `topic`, reading from the end of the log.
    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partitions: Vec<u32>,
    ) -> BoxFuture<'a, Result<Box<dyn BenchConsumer>, String>>;
    /// What the transport did during the run (per connection: path MTU, datagrams, lost
    /// packets), for the report; `Null` where the driver cannot tell.
    fn transport_report(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

pub trait BenchProducer: Send + Sync {
    /// Hands a message to the client (this may wait: back-pressure shows up as publish delay)
    /// and returns the future of its acknowledgement.
    fn send(
        &self,
        key: Bytes,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<BoxFuture<'static, Result<(), String>>, String>>;
}

pub trait BenchConsumer: Send {
    /// The next message's payload.
    fn next(&mut self) -> BoxFuture<'_, Result<Bytes, String>>;
}
