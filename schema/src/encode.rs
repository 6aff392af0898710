//! The broker's [`Response`]s into response frames (sans-IO). Each call returns a whole frame.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use quiver_broker_api::{
    FetchPartOutcome, HandshakeInfo, Outcome, ProducePartOutcome, Response, TopicConfigs,
    TopicInfo, TopicResult,
};

use crate::codes::{wire_api, wire_code};
use crate::frame::{envelope, error, error_frame, finish_frame};
use crate::wire::{self, ApiKey, Body};

/// The frame answering request `request_id` with `response`.
pub fn encode_response(request_id: u64, response: &Response) -> Bytes {
    match response {
        Response::Handshake(info) => handshake(request_id, info),
        Response::Metadata(topics) => metadata(request_id, topics),
        Response::CreateTopics(results) => topic_results(request_id, ApiKey::CreateTopics, results),
        Response::DeleteTopics(results) => topic_results(request_id, ApiKey::DeleteTopics, results),
        Response::DescribeConfigs(topics) => describe_configs(request_id, topics),
        Response::AlterConfigs(o) => alter_configs(request_id, o),
        Response::InitProducerId(r) => init_producer_id(request_id, r),
        Response::AddOffsetsToTxn(_) | Response::EndTxn(_) => {
            crate::txn::encode(request_id, response)
        }
        Response::AlterReplicas(_)
        | Response::DecommissionNode(_)
        | Response::DescribeReplication(_) => crate::cluster_ops::encode(request_id, response),
        Response::ListOffsets { offset, outcome } => list_offsets(request_id, *offset, outcome),
        Response::Produce(parts) => produce(request_id, parts),
        Response::Fetch(parts) => fetch(request_id, parts),
        Response::ConsumerGroupHeartbeat(_)
        | Response::OffsetCommit { .. }
        | Response::OffsetFetch(_)
        | Response::ListGroups(_)
        | Response::DescribeGroup(_)
        | Response::DeleteGroup(_)
        | Response::AlterGroupConfig(_)
        | Response::Nack(_) => crate::groups::encode(request_id, response).unwrap_or_else(|| {
            error_frame(
                request_id,
                ApiKey::Handshake,
                wire::ErrorCode::Unknown,
                "unencodable",
            )
        }),
        Response::Refused { api, error } => error_frame(
            request_id,
            wire_api(*api),
            wire_code(error.code),
            &error.message,
        ),
    }
}

fn outcome<'a>(fbb: &mut FlatBufferBuilder<'a>, o: &Outcome) -> Option<WIPOffset<wire::Error<'a>>> {
    match o {
        Ok(()) => None,
        Err(e) => Some(error(fbb, wire_code(e.code), &e.message)),
    }
}

fn handshake(id: u64, info: &HandshakeInfo) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(512);
    let cluster_id = Some(fbb.create_string(&info.cluster_id));
    let shard_ports = Some(fbb.create_vector(&info.shard_ports));
    let versions = Some(fbb.create_vector(&crate::supported_versions()));
    let nodes: Vec<_> = info
        .nodes
        .iter()
        .map(|(node_id, address)| {
            let address = Some(fbb.create_string(address));
            wire::ClusterNode::create(
                &mut fbb,
                &wire::ClusterNodeArgs {
                    node_id: *node_id,
                    address,
                },
            )
        })
        .collect();
    let nodes = Some(fbb.create_vector(&nodes));
    let controller_voters = info
        .controller
        .as_ref()
        .map(|c| fbb.create_vector(&c.voters));
    let body = wire::HandshakeResponse::create(
        &mut fbb,
        &wire::HandshakeResponseArgs {
            node_id: info.node_id,
            cluster_id,
            shard_count: info.shard_ports.len() as u16,
            shard_ports,
            versions,
            nodes,
            controller_leader: info
                .controller
                .as_ref()
                .and_then(|c| c.leader)
                .unwrap_or(-1),
            controller_term: info.controller.as_ref().map_or(0, |c| c.term),
            controller_voters,
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

fn metadata(id: u64, topics: &[TopicInfo]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    let offs: Vec<_> = topics
        .iter()
        .map(|t| {
            let parts: Vec<_> = t
                .partitions
                .iter()
                .map(|p| {
                    let address = Some(fbb.create_string(&p.address));
                    let replicas = Some(fbb.create_vector(&p.replicas));
                    wire::PartitionMetadata::create(
                        &mut fbb,
                        &wire::PartitionMetadataArgs {
                            partition: p.partition,
                            node_id: p.node_id,
                            shard: p.shard,
                            address,
                            replicas,
                            leader_epoch: p.leader_epoch,
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
fn topic_results(id: u64, api: ApiKey, results: &[TopicResult]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(512);
    let offs: Vec<_> = results
        .iter()
        .map(|r| {
            let name = Some(fbb.create_string(&r.name));
            let error = outcome(&mut fbb, &r.outcome);
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

fn describe_configs(id: u64, topics: &[TopicConfigs]) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    let offs: Vec<_> = topics
        .iter()
        .map(|t| {
            let es: Vec<_> = t
                .configs
                .iter()
                .map(|(k, v)| {
                    let key = Some(fbb.create_string(k));
                    let value = Some(fbb.create_string(v));
                    wire::ConfigEntry::create(&mut fbb, &wire::ConfigEntryArgs { key, value })
                })
                .collect();
            let configs = Some(fbb.create_vector(&es));
            let name = Some(fbb.create_string(&t.name));
            let error = outcome(&mut fbb, &t.outcome);
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

fn init_producer_id(id: u64, r: &Result<(i64, i16), quiver_broker_api::ApiError>) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let args = match r {
        Ok((producer_id, producer_epoch)) => wire::InitProducerIdResponseArgs {
            error: None,
            producer_id: *producer_id,
            producer_epoch: *producer_epoch,
        },
        Err(e) => wire::InitProducerIdResponseArgs {
            error: outcome(&mut fbb, &Err(e.clone())),
            producer_id: -1,
            producer_epoch: -1,
        },
    };
    let body = wire::InitProducerIdResponse::create(&mut fbb, &args);
    let root = envelope(
        &mut fbb,
        id,
        ApiKey::InitProducerId,
        Body::InitProducerIdResponse,
        Some(body.as_union_value()),
        None,
    );
    finish_frame(fbb, root)
}

fn alter_configs(id: u64, o: &Outcome) -> Bytes {
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

fn list_offsets(id: u64, offset: i64, o: &Outcome) -> Bytes {
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

/// A produce response: one entry per request entry, in the request's order.
fn produce(id: u64, parts: &[ProducePartOutcome]) -> Bytes {
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

/// A fetch response: one entry per request entry, in the request's order. A partition's one
/// batch is copied once, into the frame; several are first joined (a second copy; a hand-laid
/// vector would save it — see docs/protocol.md).
fn fetch(id: u64, parts: &[FetchPartOutcome]) -> Bytes {
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
            let aborted = (!p.aborted.is_empty()).then(|| {
                let offs: Vec<_> = p
                    .aborted
                    .iter()
                    .map(|(producer_id, first_offset)| {
                        wire::AbortedTransaction::create(
                            &mut fbb,
                            &wire::AbortedTransactionArgs {
                                producer_id: *producer_id,
                                first_offset: *first_offset,
                            },
                        )
                    })
                    .collect();
                fbb.create_vector(&offs)
            });
            wire::FetchPartitionResponse::create(
                &mut fbb,
                &wire::FetchPartitionResponseArgs {
                    high_watermark: p.high_watermark,
                    log_start_offset: p.log_start_offset,
                    records,
                    error,
                    last_stable_offset: p.last_stable_offset,
                    aborted,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse_frame;
    use quiver_broker_api::{Api, ApiError, ErrorCode};

    #[test]
    fn responses_read_back_with_their_request_id_api_and_errors() {
        let produce = Response::Produce(vec![
            ProducePartOutcome {
                base_offset: 4,
                last_offset: 6,
                log_start_offset: 0,
                outcome: Ok(()),
            },
            ProducePartOutcome::failed(ApiError::new(ErrorCode::DiskFull, "full")),
        ]);
        let frame = encode_response(9, &produce);
        let env = parse_frame(&frame, 1 << 20).unwrap();
        assert_eq!((env.request_id(), env.api()), (9, ApiKey::Produce));
        let parts = env
            .body_as_produce_response()
            .unwrap()
            .partitions()
            .unwrap();
        assert_eq!(parts.get(0).base_offset(), 4);
        assert_eq!(
            parts.get(1).error().unwrap().code(),
            wire::ErrorCode::DiskFull
        );

        let refused = Response::Refused {
            api: Api::Fetch,
            error: ApiError::new(ErrorCode::ShuttingDown, "stopping"),
        };
        let frame = encode_response(11, &refused);
        let env = parse_frame(&frame, 1 << 20).unwrap();
        assert_eq!((env.request_id(), env.api()), (11, ApiKey::Fetch));
        assert_eq!(env.error().unwrap().code(), wire::ErrorCode::ShuttingDown);

        let fetch = Response::Fetch(vec![FetchPartOutcome {
            high_watermark: 3,
            log_start_offset: 0,
            batches: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
            outcome: Ok(()),
            last_stable_offset: 2,
            aborted: vec![(7, 1)],
        }]);
        let frame = encode_response(12, &fetch);
        let env = parse_frame(&frame, 1 << 20).unwrap();
        let part = env.body_as_fetch_response().unwrap().single().unwrap();
        assert_eq!(part.records().unwrap().bytes(), b"abc");
        assert_eq!(part.high_watermark(), 3);
        assert_eq!(part.last_stable_offset(), 2);
        let aborted = part.aborted().unwrap().get(0);
        assert_eq!((aborted.producer_id(), aborted.first_offset()), (7, 1));
    }
}
