//! The harness driver for Quiver, through `quiver-client`.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use quiver_client::{
    Acks, Admin, Client, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};

use super::driver::{fresh_topic_names, BenchConsumer, BenchProducer, Driver, LastRunTopics};
use super::workload::Workload;

pub struct QuiverDriver {
    client: Client,
    /// Deleted when the next run is prepared.
    created: LastRunTopics,
}

impl QuiverDriver {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            created: LastRunTopics::default(),
        }
    }
}

struct QuiverProducer {
    producer: Producer,
    topic: String,
}

struct QuiverConsumer {
    consumer: Consumer,
}

impl Driver for QuiverDriver {
    fn prepare<'a>(&'a self, w: &'a Workload) -> BoxFuture<'a, Result<Vec<String>, String>> {
        async move {
            let admin = Admin::new(self.client.clone());
            for name in self.created.take() {
                if let Err(e) = admin.delete_topic(&name).await {
                    tracing::warn!("could not delete the previous run's topic {name}: {e}");
                }
            }
            let names = fresh_topic_names(w);
            let configs: Vec<(&str, &str)> = w
                .topic_config
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            for name in &names {
                admin
                    .create_replicated_topic(
                        name,
                        w.partitions_per_topic as i32,
                        w.replication_factor,
                        &configs,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // On a cluster, a new topic's partitions elect their leaders and record them in
            // the controller in their first moments: measured from then, not through them.
            for name in &names {
                wait_for_leaders(&admin, name).await?;
            }
            self.created.remember(&names);
            Ok(names)
        }
        .boxed()
    }

    fn transport_report(&self) -> serde_json::Value {
        let conns: Vec<serde_json::Value> = self
            .client
            .connection_stats()
            .into_iter()
            .map(|(addr, s)| {
                serde_json::json!({
                    "broker": addr.to_string(),
                    "path_mtu_bytes": s.path.current_mtu,
                    "rtt_us": s.path.rtt.as_micros() as u64,
                    "datagrams_sent": s.udp_tx.datagrams,
                    "datagrams_received": s.udp_rx.datagrams,
                    "send_calls": s.udp_tx.ios,
                    "receive_calls": s.udp_rx.ios,
                    "packets_lost": s.path.lost_packets,
                    "congestion_events": s.path.congestion_events,
                })
            })
            .collect();
        serde_json::json!({ "connections": conns })
    }

    fn producer<'a>(
        &'a self,
        topic: &'a str,
        w: &'a Workload,
    ) -> BoxFuture<'a, Result<Box<dyn BenchProducer>, String>> {
        async move {
            let acks = if w.acks == "leader" {
                Acks::Leader
            } else {
                Acks::All
            };
            let config = ProducerConfig {
                acks,
                linger_ms: w.linger_ms,
                batch_bytes: w.batch_bytes.max(w.message_size + 1024),
                max_in_flight_requests_per_shard: w.max_in_flight_requests,
                max_in_flight_per_partition: w.max_in_flight_per_partition,
                ..ProducerConfig::default()
            };
            let p: Box<dyn BenchProducer> = Box::new(QuiverProducer {
                producer: Producer::new(self.client.clone(), config),
                topic: topic.to_string(),
            });
            Ok(p)
        }
        .boxed()
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partitions: Vec<u32>,
    ) -> BoxFuture<'a, Result<Box<dyn BenchConsumer>, String>> {
        async move {
            let mut consumer = Consumer::new(
                self.client.clone(),
                ConsumerConfig {
                    fetch_max_wait_ms: 500,
                    ..ConsumerConfig::default()
                },
            );
            let tps: Vec<(&str, i32)> = partitions.iter().map(|p| (topic, *p as i32)).collect();
            consumer.assign(&tps);
            for p in &partitions {
                consumer
                    .seek(topic, *p as i32, SeekTo::End)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let c: Box<dyn BenchConsumer> = Box::new(QuiverConsumer { consumer });
            Ok(c)
        }
        .boxed()
    }
}

impl BenchProducer for QuiverProducer {
    fn send(
        &self,
        key: Bytes,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<BoxFuture<'static, Result<(), String>>, String>> {
        async move {
            let mut record = ProducerRecord::new(self.topic.clone(), payload);
            record.key = Some(key);
            let delivery = self
                .producer
                .enqueue(record)
                .await
                .map_err(|e| e.to_string())?;
            let ack: BoxFuture<'static, Result<(), String>> =
                async move { delivery.await.map(|_| ()).map_err(|e| e.to_string()) }.boxed();
            Ok(ack)
        }
        .boxed()
    }
}

impl BenchConsumer for QuiverConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Bytes, String>> {
        async move {
            let r = self
                .consumer
                .next_record()
                .await
                .map_err(|e| e.to_string())?;
            Ok(r.value.unwrap_or_default())
        }
        .boxed()
    }
}

/// How long a new topic's partitions may take to have recorded leaders.
const LEADERS_WAIT_MS: u64 = 30_000;

/// Waits until every partition of `topic` with several replicas has an elected, recorded
/// leader (leader epoch 1 or more), within [`LEADERS_WAIT_MS`].
async fn wait_for_leaders(admin: &quiver_client::Admin, topic: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LEADERS_WAIT_MS);
    loop {
        let settled = match admin.describe_topic(topic).await {
            Ok(d) => d
                .partitions
                .iter()
                .all(|p| p.replicas.len() <= 1 || p.leader_epoch >= 1),
            Err(_) => false,
        };
        if settled {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the partitions of {topic} have no recorded leader after {LEADERS_WAIT_MS} ms"
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
