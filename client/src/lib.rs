//! # quiver-client: the Rust client
//!
//! - [`Client`] ([`cluster`]): bootstrap, metadata, shard-aware routing (each partition's
//!   requests go straight to the shard that owns it), one QUIC connection per shard.
//! - [`Producer`] ([`producer`]): per-partition batching (`linger_ms`, `batch_bytes`), bounded
//!   buffer with back-pressure, Kafka-compatible key partitioning, acks, ordered retries;
//!   idempotent by default; transactions with a `transactional_id`.
//! - [`Consumer`] ([`consumer`]): assign, seek (offset, timestamp, beginning, end), position,
//!   a `Stream` of records with bounded prefetch over long-poll fetches.
//! - [`GroupConsumer`] ([`group`]): a consumer group member — server-side assignment,
//!   committed offsets, at-most-once / at-least-once delivery, static membership.
//! - [`Transformer`] ([`transform`]): consume-transform-produce exactly once (output and
//!   input offsets in one transaction); read_committed consumers skip aborted transactions.
//! - [`Admin`] ([`admin`], [`admin_groups`]): topics, configs, offsets; groups (list,
//!   describe, lag, delete, configure, reset offsets).
//! - [`connection`], [`trust`]: one QUIC connection and how it trusts the broker (CA file,
//!   pinned fingerprint, or a local node's data directory — never "verification off").
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver_client::ClientError> {
//! use quiver_client::{Admin, Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
//! let client = Client::connect(&["127.0.0.1:7420".parse().unwrap()], ClientConfig::default()).await?;
//! Admin::new(client.clone()).create_topic("events", 8, &[]).await?;
//! let producer = Producer::new(client, ProducerConfig::default());
//! let md = producer.send(ProducerRecord::new("events", "hello").key("user-1")).await?;
//! println!("partition {} offset {}", md.partition, md.offset);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod admin_cluster;
pub mod admin_groups;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod record;
pub mod timer;
pub mod transform;
pub mod trust;

pub use admin::{Admin, OffsetQuery, PartitionDescription, TopicDescription};
pub use admin_groups::PartitionLag;
pub use cluster::{Client, ClientConfig};
pub use connection::{Connection, ResponseFrame};
pub use consumer::{Consumer, ConsumerConfig, Isolation, OffsetReset, SeekTo};
pub use error::ClientError;
pub use group::{
    DeliveryMode, GroupConsumer, GroupConsumerConfig, GroupEvent, NackResult, Subscription,
    TopicPartition,
};
pub use producer::{Acks, DeliveryFuture, GroupMetadata, Producer, ProducerConfig};
/// Batch compression codecs (re-exported from the batch codec).
pub use quiver_batch::Compression;
/// Group descriptions and committed offsets as `Admin` returns them.
pub use quiver_broker_api::{
    CommittedOffset, FollowerProgress, GroupDescription, GroupListing, MemberDescription,
    PartitionReplication,
};
pub use record::{ConsumerRecord, ProducerRecord, RecordMetadata};
pub use transform::{TransformConfig, Transformer};
pub use trust::TlsTrust;
