//! Workload files: OpenMessaging Benchmark's shape, in TOML (`bench/workloads/`).

use serde::Deserialize;

/// One benchmark workload. Unknown keys are refused by name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    /// Bytes per message (random bytes; the first 16 carry the intended send time and a
    /// sequence number).
    pub message_size: usize,
    pub producers_per_topic: u32,
    pub subscriptions_per_topic: u32,
    pub consumers_per_subscription: u32,
    /// Messages per second over all producers; 0 = find the maximum sustainable rate.
    pub producer_rate: u64,
    pub warmup_duration_s: u64,
    pub test_duration_s: u64,
    /// `all` or `leader`.
    #[serde(default = "default_acks")]
    pub acks: String,
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    #[serde(default = "default_batch")]
    pub batch_bytes: usize,
    /// Produce requests a producer may have unanswered per shard (Kafka's
    /// `max.in.flight.requests.per.connection`).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_requests: usize,
    /// Batches a producer may have unanswered per partition (default 1; up to 5 pipelines
    /// them, as Kafka's idempotent producer may; bounded by `max_in_flight_requests` per
    /// shard too).
    #[serde(default = "default_max_in_flight_per_partition")]
    pub max_in_flight_per_partition: usize,
    /// For max-rate discovery: the p99 end-to-end latency the rate must keep.
    #[serde(default)]
    pub max_p99_ms: Option<u64>,
    /// For max-rate discovery: the first rate tried (msg/s); it doubles until the bound breaks,
    /// then bisects.
    #[serde(default = "default_start_rate")]
    pub start_rate: u64,
    /// Topic configuration for Quiver's topics (as `quiver topic create --config`), like the
    /// `topicConfig` of OMB's driver files: e.g. `{ flush_policy = "interval" }` measures
    /// without an fsync per batch. Other systems ignore it.
    #[serde(default)]
    pub topic_config: std::collections::BTreeMap<String, String>,
    /// Replicas per partition of Quiver's topics (0: the node's default, one); other systems
    /// ignore it. Against a cluster (several `--broker` addresses).
    #[serde(default)]
    pub replication_factor: i16,
}

fn default_start_rate() -> u64 {
    1000
}

fn default_acks() -> String {
    "all".into()
}
fn default_linger() -> u64 {
    1
}
fn default_max_in_flight() -> usize {
    5
}
fn default_max_in_flight_per_partition() -> usize {
    1
}
fn default_batch() -> usize {
    128 << 10
}

impl Workload {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let w: Workload = toml::from_str(text).map_err(|e| format!("workload: {e}"))?;
        if w.message_size < 16 {
            return Err("message_size must be at least 16 bytes (the send time and sequence ride in the payload)".into());
        }
        if w.topics == 0 || w.partitions_per_topic == 0 || w.producers_per_topic == 0 {
            return Err(
                "topics, partitions_per_topic and producers_per_topic must be at least 1".into(),
            );
        }
        if !matches!(w.acks.as_str(), "all" | "leader") {
            return Err(format!("acks = {:?} must be all or leader", w.acks));
        }
        Ok(w)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_workloads_parse_and_unknown_keys_are_named() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let w = Workload::load(&e.unwrap().path()).unwrap();
            assert!(w.message_size >= 16);
            n += 1;
        }
        assert!(n >= 4);
        let err = Workload::from_toml("name = \"x\"\ntopicz = 1\n").unwrap_err();
        assert!(err.contains("topicz"), "{err}");
    }
}
