//! Encoders for every request, one function each, returning a whole frame.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use crate::frame::{finish_frame, request_envelope, RequestHeader};
use crate::wire::{self, ApiKey, Body};

fn strings<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    items: &[&str],
) -> flatbuffers::WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<&'a str>>> {
    let offs: Vec<_> = items.iter().map(|s| fbb.create_string(s)).collect();
    fbb.create_vector(&offs)
}

fn configs<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    items: &[(&str, &str)],
) -> flatbuffers::WIPOffset<
    flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<wire::ConfigEntry<'a>>>,
> {
    let offs: Vec<_> = items
        .iter()
        .map(|(k, v)| {
            let key = Some(fbb.create_string(k));
            let value = Some(fbb.create_string(v));
            wire::ConfigEntry::create(fbb, &wire::ConfigEntryArgs { key, value })
        })
        .collect();
    fbb.create_vector(&offs)
}

pub fn handshake<'h>(header: impl Into<RequestHeader<'h>>, client_name: &str) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let client_name = Some(fbb.create_string(client_name));
    let versions = Some(fbb.create_vector(&crate::supported_versions()));
    let body = wire::HandshakeRequest::create(
        &mut fbb,
        &wire::HandshakeRequestArgs {
            client_name,
            versions,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::Handshake,
        Body::HandshakeRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// Metadata of `topics` (empty: every topic).
pub fn metadata<'h>(header: impl Into<RequestHeader<'h>>, topics: &[&str]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let topics = (!topics.is_empty()).then(|| strings(&mut fbb, topics));
    let body = wire::MetadataRequest::create(&mut fbb, &wire::MetadataRequestArgs { topics });
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::Metadata,
        Body::MetadataRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// A topic to create: name, partition count, config overrides.
pub struct NewTopic<'a> {
    pub name: &'a str,
    pub partitions: i32,
    /// Replicas per partition; 0: the node's default.
    pub replication_factor: i16,
    pub configs: &'a [(&'a str, &'a str)],
}

pub fn create_topics<'h>(header: impl Into<RequestHeader<'h>>, topics: &[NewTopic<'_>]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(512);
    let offs: Vec<_> = topics
        .iter()
        .map(|t| {
            let name = Some(fbb.create_string(t.name));
            let configs = Some(configs(&mut fbb, t.configs));
            wire::NewTopic::create(
                &mut fbb,
                &wire::NewTopicArgs {
                    name,
                    partitions: t.partitions,
                    configs,
                    replication_factor: t.replication_factor,
                },
            )
        })
        .collect();
    let topics = Some(fbb.create_vector(&offs));
    let body =
        wire::CreateTopicsRequest::create(&mut fbb, &wire::CreateTopicsRequestArgs { topics });
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::CreateTopics,
        Body::CreateTopicsRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// A producer id and epoch for an idempotent producer (`transactional_id`: with
/// transactions).
pub fn init_producer_id<'h>(
    header: impl Into<RequestHeader<'h>>,
    transactional_id: Option<&str>,
    transaction_timeout_ms: u32,
    current: Option<(i64, i16)>,
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let transactional_id = transactional_id.map(|t| fbb.create_string(t));
    let body = wire::InitProducerIdRequest::create(
        &mut fbb,
        &wire::InitProducerIdRequestArgs {
            transactional_id,
            transaction_timeout_ms,
            producer_id: current.map_or(-1, |c| c.0),
            producer_epoch: current.map_or(-1, |c| c.1),
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::InitProducerId,
        Body::InitProducerIdRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

pub fn delete_topics<'h>(header: impl Into<RequestHeader<'h>>, names: &[&str]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let names = Some(strings(&mut fbb, names));
    let body =
        wire::DeleteTopicsRequest::create(&mut fbb, &wire::DeleteTopicsRequestArgs { names });
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::DeleteTopics,
        Body::DeleteTopicsRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

pub fn describe_configs<'h>(header: impl Into<RequestHeader<'h>>, topics: &[&str]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let topics = Some(strings(&mut fbb, topics));
    let body = wire::DescribeConfigsRequest::create(
        &mut fbb,
        &wire::DescribeConfigsRequestArgs { topics },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::DescribeConfigs,
        Body::DescribeConfigsRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

pub fn alter_configs<'h>(
    header: impl Into<RequestHeader<'h>>,
    topic: &str,
    set: &[(&str, &str)],
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let topic = Some(fbb.create_string(topic));
    let configs = Some(configs(&mut fbb, set));
    let body = wire::AlterConfigsRequest::create(
        &mut fbb,
        &wire::AlterConfigsRequestArgs { topic, configs },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::AlterConfigs,
        Body::AlterConfigsRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

pub fn list_offsets<'h>(
    header: impl Into<RequestHeader<'h>>,
    topic: &str,
    partition: i32,
    spec: wire::OffsetSpec,
    timestamp_ms: i64,
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let topic = Some(fbb.create_string(topic));
    let body = wire::ListOffsetsRequest::create(
        &mut fbb,
        &wire::ListOffsetsRequestArgs {
            topic,
            partition,
            spec,
            timestamp_ms,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::ListOffsets,
        Body::ListOffsetsRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// One partition's part of a produce request: whole RecordBatch v2 batches.
#[derive(Debug, Clone, Copy)]
pub struct ProducePart<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub records: &'a [u8],
}

/// A produce of `records` (whole RecordBatch v2 batches) to one partition.
pub fn produce<'h>(
    header: impl Into<RequestHeader<'h>>,
    topic: &str,
    partition: i32,
    acks: wire::Acks,
    timeout_ms: u32,
    records: &[u8],
) -> Bytes {
    let part = ProducePart {
        topic,
        partition,
        records,
    };
    produce_many(header, acks, timeout_ms, &[part])
}

/// A produce to many partitions of one shard, one entry per partition.
pub fn produce_many<'h>(
    header: impl Into<RequestHeader<'h>>,
    acks: wire::Acks,
    timeout_ms: u32,
    parts: &[ProducePart<'_>],
) -> Bytes {
    produce_many_txn(header, acks, timeout_ms, parts, None)
}

/// [`produce_many`] of a transactional producer (its batches carry the transactional bit).
pub fn produce_many_txn<'h>(
    header: impl Into<RequestHeader<'h>>,
    acks: wire::Acks,
    timeout_ms: u32,
    parts: &[ProducePart<'_>],
    transactional_id: Option<&str>,
) -> Bytes {
    let bytes: usize = parts
        .iter()
        .map(|p| p.records.len() + p.topic.len() + 64)
        .sum();
    let mut fbb = FlatBufferBuilder::with_capacity(bytes + 256);
    let entries: Vec<_> = parts
        .iter()
        .map(|p| {
            let records = Some(fbb.create_vector(p.records));
            let topic = Some(fbb.create_string(p.topic));
            wire::ProducePartition::create(
                &mut fbb,
                &wire::ProducePartitionArgs {
                    topic,
                    partition: p.partition,
                    records,
                },
            )
        })
        .collect();
    let partitions = Some(fbb.create_vector(&entries));
    let transactional_id = transactional_id.map(|t| fbb.create_string(t));
    let body = wire::ProduceRequest::create(
        &mut fbb,
        &wire::ProduceRequestArgs {
            acks,
            timeout_ms,
            partitions,
            transactional_id,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::Produce,
        Body::ProduceRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// A long-poll fetch from one partition.
#[derive(Debug, Clone, Copy)]
pub struct Fetch<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: u32,
    pub max_wait_ms: u32,
    pub min_bytes: u32,
}

pub fn fetch<'h>(header: impl Into<RequestHeader<'h>>, f: &Fetch<'_>) -> Bytes {
    let part = FetchPart {
        topic: f.topic,
        partition: f.partition,
        offset: f.offset,
        max_bytes: f.max_bytes,
    };
    let limits = FetchLimits {
        max_wait_ms: f.max_wait_ms,
        min_bytes: f.min_bytes,
        max_bytes: f.max_bytes,
        isolation: wire::Isolation::ReadUncommitted,
    };
    fetch_many(header, &limits, &[part])
}

/// One partition's part of a fetch request.
#[derive(Debug, Clone, Copy)]
pub struct FetchPart<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Most bytes for this partition.
    pub max_bytes: u32,
}

/// The long-poll bounds of a fetch request, over all its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub isolation: wire::Isolation,
}

/// A long-poll fetch from many partitions of one shard.
pub fn fetch_many<'h>(
    header: impl Into<RequestHeader<'h>>,
    limits: &FetchLimits,
    parts: &[FetchPart<'_>],
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(128 + parts.len() * 64);
    let entries: Vec<_> = parts
        .iter()
        .map(|p| {
            let topic = Some(fbb.create_string(p.topic));
            wire::FetchPartition::create(
                &mut fbb,
                &wire::FetchPartitionArgs {
                    topic,
                    partition: p.partition,
                    offset: p.offset,
                    max_bytes: p.max_bytes,
                },
            )
        })
        .collect();
    let partitions = Some(fbb.create_vector(&entries));
    let body = wire::FetchRequest::create(
        &mut fbb,
        &wire::FetchRequestArgs {
            max_wait_ms: limits.max_wait_ms,
            min_bytes: limits.min_bytes,
            max_bytes: limits.max_bytes,
            partitions,
            isolation: limits.isolation,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::Fetch,
        Body::FetchRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}
