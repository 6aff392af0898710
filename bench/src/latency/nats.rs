//! The harness driver for NATS JetStream (feature `nats`), the peer `perf/compare.sh` runs
//! beside Quiver with the same workloads and the same measurement.
//!
//! Mapping of the workload onto JetStream:
//! - a topic is a stream with file storage and one replica, subjects `<topic>.<partition>`;
//!   the partition comes from the message key by Kafka's murmur2, as Quiver's producer does,
//!   so the subjects spread as the partitions do (a stream is one log whatever its subjects);
//! - acks=all/leader: a JetStream publish is acknowledged once the stream has stored it. How
//!   durable that store is depends on the server: nats-server before 2.10 never fsyncs per
//!   message (it syncs every 2 minutes); 2.10+ does with `sync_interval: always`.
//!   `perf/compare.sh` records which server and setting ran;
//! - a subscription is a durable push consumer (no acks, delivering new messages) with a
//!   deliver group, so the consumers of one subscription share its messages like a Kafka
//!   consumer group shares partitions.

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::driver::{fresh_topic_names, BenchConsumer, BenchProducer, Driver, LastRunTopics};
use super::workload::Workload;

pub struct NatsDriver {
    js: jetstream::Context,
    /// Streams an earlier run of this process made (deleted when the next run prepares, so a
    /// max-rate search does not fill the disk).
    created: LastRunTopics,
}

impl NatsDriver {
    /// Connects to the NATS server at `url` (e.g. `nats://127.0.0.1:4222`).
    pub async fn connect(url: &str) -> Result<Self, String> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| format!("cannot connect to NATS at {url}: {e} (is nats-server running with JetStream on, `nats-server -js`?)"))?;
        Ok(Self {
            js: jetstream::new(client),
            created: LastRunTopics::default(),
        })
    }
}

struct NatsProducer {
    js: jetstream::Context,
    topic: String,
    partitions: usize,
}

struct NatsConsumer {
    messages: consumer::push::Messages,
}

impl Driver for NatsDriver {
    fn prepare<'a>(&'a self, w: &'a Workload) -> BoxFuture<'a, Result<Vec<String>, String>> {
        async move {
            for name in self.created.take() {
                let _ = self.js.delete_stream(&name).await;
            }
            let names = fresh_topic_names(w);
            for name in &names {
                self.js
                    .create_stream(stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("{name}.>")],
                        storage: stream::StorageType::File,
                        num_replicas: 1,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("creating stream {name}: {e}"))?;
            }
            self.created.remember(&names);
            Ok(names)
        }
        .boxed()
    }

    fn producer<'a>(
        &'a self,
        topic: &'a str,
        w: &'a Workload,
    ) -> BoxFuture<'a, Result<Box<dyn BenchProducer>, String>> {
        async move {
            let p: Box<dyn BenchProducer> = Box::new(NatsProducer {
                js: self.js.clone(),
                topic: topic.to_string(),
                partitions: w.partitions_per_topic as usize,
            });
            Ok(p)
        }
        .boxed()
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        _partitions: Vec<u32>,
    ) -> BoxFuture<'a, Result<Box<dyn BenchConsumer>, String>> {
        async move {
            let stream = self
                .js
                .get_stream(topic)
                .await
                .map_err(|e| format!("stream {topic}: {e}"))?;
            let name = "sub-0";
            let consumer = stream
                .get_or_create_consumer(
                    name,
                    consumer::push::Config {
                        durable_name: Some(name.to_string()),
                        deliver_subject: format!("deliver.{topic}.{name}"),
                        deliver_group: Some(name.to_string()),
                        deliver_policy: consumer::DeliverPolicy::New,
                        ack_policy: consumer::AckPolicy::None,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| format!("consumer on {topic}: {e}"))?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| format!("subscribing to {topic}: {e}"))?;
            let c: Box<dyn BenchConsumer> = Box::new(NatsConsumer { messages });
            Ok(c)
        }
        .boxed()
    }
}

impl BenchProducer for NatsProducer {
    fn send(
        &self,
        key: Bytes,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<BoxFuture<'static, Result<(), String>>, String>> {
        async move {
            let partition = quiver_client::partitioner::partition_for_key(&key, self.partitions);
            let ack = self
                .js
                .publish(format!("{}.{partition}", self.topic), payload)
                .await
                .map_err(|e| e.to_string())?;
            // The acknowledgement holds one of the client's in-flight permits until it is
            // awaited: drive it in its own task, or a `publish` waiting for a permit inside
            // the open loop would wait for acknowledgements nobody polls.
            let ack = tokio::spawn(async move { ack.await.map(|_| ()).map_err(|e| e.to_string()) });
            let ack: BoxFuture<'static, Result<(), String>> = async move {
                ack.await
                    .map_err(|e| format!("acknowledgement task: {e}"))
                    .and_then(|r| r)
            }
            .boxed();
            Ok(ack)
        }
        .boxed()
    }
}

impl BenchConsumer for NatsConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Bytes, String>> {
        async move {
            match self.messages.next().await {
                Some(Ok(m)) => Ok(m.payload.clone()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the NATS subscription ended".to_string()),
            }
        }
        .boxed()
    }
}
