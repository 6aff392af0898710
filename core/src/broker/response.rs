//! Encoding responses (sans-IO). Each function returns a whole frame.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use quiver_schema::frame::{envelope, error, finish_frame};
use quiver_schema::wire::{self, ApiKey, Body, ErrorCode};

/// A response-level outcome: success or an error code with an actionable message.
pub type Outcome = Result<(), (ErrorCode, String)>;

fn outcome<'a>(fbb: &mut FlatBufferBuilder<'a>, o: &Outcome) -> Option<WIPOffset<wire::Error<'a>>> {
    match o {
        Ok(()) => None,
        Err((code, msg)) => Some(error(fbb, *code, msg)),
    }
}

/// One topic's effective configs (`key`, `value`) or why they cannot be shown.
pub type TopicConfigs = (String, Vec<(String, String)>, Outcome);

pub struct HandshakeInfo<'a> {
    pub node_id: i32,
    pub cluster_id: &'a str,
    pub shard_ports: &'a [u16],
}

pub fn handshake(id: u64, info: &HandshakeInfo<'_>) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(512);
    let cluster_id = Some(fbb.create_string(info.cluster_id));
    let shard_ports = Some(fbb.create_vector(info.shard_ports));
    let versions = Some(fbb.create_vector(&quiver_schema::supported_versions()));
    let body = wire::HandshakeResponse::create(
        &mut fbb,
        &wire::HandshakeResponseArgs {
            node_id: info.node_id,
            cluster_id,
            shard_count: info.shard_ports.len() as u16,
            shard_ports,
            versions,
        },
    );
    let root = envelope(
        &mut fbb,
        id,
        ApiKey::Handshake,
        Body::HandshakeResponse,
        Some(body.as_union_value()),
        None,
    );
    finish_frame(fbb, root)
}

pub struct PartitionInfo {
    pub partition: i32,
    pub node_id: i32,
    pub shard: u16,
    pub address: String,
}

pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    pub outcome: Outcome,
}

pub fn metadata(id: u64, topics: &[TopicInfo]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    let offs: Vec<_> = topics
        .iter()
        .map(|t| {
            let parts: Vec<_> = t
                .partitions
                .iter()
                .map(|p| {
                    let address = Some(fbb.create_string(&p.address));
                    wire::PartitionMetadata::create(
                        &mut fbb,
                        &wire::PartitionMetadataArgs {
                            partition: p.partition,
                            node_id: p.node_id,
                            shard: p.shard,
                            address,
                        },
                    )
                })
                .collect();
            let partitions = Some(fbb.create_vector(&parts));
            let name = Some(fbb.create_string(&t.name));
            let error = outcome(&mut fbb, &t.outcome);
            wire::TopicMetadata::create(
                &mut fbb,
                &wire::TopicMetadataArgs {
                    name,
                    partitions,
                    error,
                },
            )
        })
        .collect();
    let topics = Some(fbb.create_vector(&offs));
    let body = wire::MetadataResponse::create(&mut fbb, &wire::MetadataResponseArgs { topics });
    let root = envelope(
        &mut fbb,
        id,
        ApiKey::Metadata,
        Body::MetadataResponse,
        Some(body.as_union_value()),
        None,
    );
    finish_frame(fbb, root)
}

/// CreateTopics and DeleteTopics: one outcome per topic.
pub fn topic_results(id: u64, api: ApiKey, results: &[(String, Outcome)]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(512);
    let offs: Vec<_> = results
        .iter()
        .map(|(name, o)| {
            let name = Some(fbb.create_string(name));
            let error = outcome(&mut fbb, o);
            wire::TopicResult::create(&mut fbb, &wire::TopicResultArgs { name, error })
        })
        .collect();
    let results = Some(fbb.create_vector(&offs));
    let (body_type, body) = if api == ApiKey::DeleteTopics {
        (
            Body::DeleteTopicsResponse,
            wire::DeleteTopicsResponse::create(
                &mut fbb,
                &wire::DeleteTopicsResponseArgs { results },
            )
            .as_union_value(),
        )
    } else {
        (
            Body::CreateTopicsResponse,
            wire::CreateTopicsResponse::create(
                &mut fbb,
                &wire::CreateTopicsResponseArgs { results },
            )
            .as_union_value(),
        )
    };
    let root = envelope(&mut fbb, id, api, body_type, Some(body), None);
    finish_frame(fbb, root)
}

pub fn describe_configs(id: u64, topics: &[TopicConfigs]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    let offs: Vec<_> = topics
        .iter()
        .map(|(name, entries, o)| {
            let es: Vec<_> = entries
                .iter()
                .map(|(k, v)| {
                    let key = Some(fbb.create_string(k));
                    let value = Some(fbb.create_string(v));
                    wire::ConfigEntry::create(&mut fbb, &wire::ConfigEntryArgs { key, value })
                })
                .collect();
            let configs = Some(fbb.create_vector(&es));
            let name = Some(fbb.create_string(name));
            let error = outcome(&mut fbb, o);
            wire::TopicConfigs::create(
                &mut fbb,
                &wire::TopicConfigsArgs {
                    name,
                    configs,
                    error,
                },
            )
        })
        .collect();
    let topics = Some(fbb.create_vector(&offs));
    let body = wire::DescribeConfigsResponse::create(
        &mut fbb,
        &wire::DescribeConfigsResponseArgs { topics },
    );
    let root = envelope(
        &mut fbb,
        id,
        ApiKey::DescribeConfigs,
        Body::DescribeConfigsResponse,
        Some(body.as_union_value()),
        None,
    );
    finish_frame(fbb, root)
}

pub fn alter_configs(id: u64, o: &Outcome) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let error = outcome(&mut fbb, o);
    let body =
        wire::AlterConfigsResponse::create(&mut fbb, &wire::AlterConfigsResponseArgs { error });
    let root = envelope(
        &mut fbb,
        id,
        ApiKey::AlterConfigs,
        Body::AlterConfigsResponse,
        Some(body.as_union_value()),
        None,
    );
    finish_frame(fbb, root)
}

pub fn list_offsets(id: u64, offset: i64, o: &Outcome) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let error = outcome(&mut fbb, o);
    let body = wire::ListOffsetsResponse::create(
        &mut fbb,
        &wire::ListOffsetsResponseArgs { offset, error },
    );
    let root = envelope(
        &mut fbb,
        id,
        ApiKey::ListOffsets,
        Body::ListOffsetsResponse,
        Some(body.as_union_value()),
        None,
    );
    finish_frame(fbb, root)
}

/// How one partition of a produce request went.
#[derive(Debug, Clone)]
pub struct ProducePartOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    pub outcome: Outcome,
}

impl ProducePartOutcome {
    /// A partition that failed before any offset was assigned.
    pub fn failed(code: ErrorCode, message: String) -> Self {
        Self::failed_with((code, message))
    }

    /// As [`ProducePartOutcome::failed`], from an error pair.
    pub fn failed_with(error: (ErrorCode, String)) -> Self {
        Self {
            base_offset: -1,
            last_offset: -1,
            log_start_offset: -1,
            outcome: Err(error),
        }
    }
}

/// A produce response: one entry per request entry, in the request's order.
pub fn produce(id: u64, parts: &[ProducePartOutcome]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(64 + parts.len() * 64);
    let entries: Vec<_> = parts
        .iter()
        .map(|p| {
            let error = outcome(&mut fbb, &p.outcome);
            wire::ProducePartitionResponse::create(
                &mut fbb,
                &wire::ProducePartitionResponseArgs {
                    base_offset: p.base_offset,
                    last_offset: p.last_offset,
                    log_start_offset: p.log_start_offset,
                    error,
                },
            )
        })
        .collect();
    let partitions = Some(fbb.create_vector(&entries));
    let body = wire::ProduceResponse::create(&mut fbb, &wire::ProduceResponseArgs { partitions });
    let root = envelope(
        &mut fbb,
        id,
        ApiKey::Produce,
        Body::ProduceResponse,
        Some(body.as_union_value()),
        None,
    );
    finish_frame(fbb, root)
}

/// What one partition of a fetch request returns.
#[derive(Debug, Clone)]
pub struct FetchPartOutcome {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<Bytes>,
    pub outcome: Outcome,
}

impl FetchPartOutcome {
    /// A partition that could not be read at all.
    pub fn failed(code: ErrorCode, message: String) -> Self {
        Self {
            high_watermark: -1,
            log_start_offset: -1,
            batches: Vec::new(),
            outcome: Err((code, message)),
        }
    }
}

/// A fetch response: one entry per request entry, in the request's order. A partition's one
/// batch is copied once, into the frame; several are first joined (a second copy; a hand-laid
/// vector would save it — see docs/protocol.md).
pub fn fetch(id: u64, parts: &[FetchPartOutcome]) -> Bytes {
    let total: usize = parts.iter().flat_map(|p| &p.batches).map(Bytes::len).sum();
    let mut fbb = FlatBufferBuilder::with_capacity(total + 128 + parts.len() * 64);
    let mut joined = Vec::new();
    let entries: Vec<_> = parts
        .iter()
        .map(|p| {
            let records = match &p.batches[..] {
                [] => None,
                [one] => Some(fbb.create_vector(&one[..])),
                many => {
                    joined.clear();
                    for b in many {
                        joined.extend_from_slice(b);
                    }
                    Some(fbb.create_vector(&joined))
                }
            };
            let error = outcome(&mut fbb, &p.outcome);
            wire::FetchPartitionResponse::create(
                &mut fbb,
                &wire::FetchPartitionResponseArgs {
                    high_watermark: p.high_watermark,
                    log_start_offset: p.log_start_offset,
                    records,
                    error,
                },
            )
        })
        .collect();
    let partitions = Some(fbb.create_vector(&entries));
    let body = wire::FetchResponse::create(&mut fbb, &wire::FetchResponseArgs { partitions });
    let root = envelope(
        &mut fbb,
        id,
        ApiKey::Fetch,
        Body::FetchResponse,
        Some(body.as_union_value()),
        None,
    );
    finish_frame(fbb, root)
}
