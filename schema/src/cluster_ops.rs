//! The cluster operation APIs on the wire (AlterReplicas, DecommissionNode,
//! DescribeReplication), both directions: request frames into the broker's typed requests
//! and its responses into frames (the node's side), request encoders and response readers
//! (the client's side).

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use quiver_broker_api::{ApiError, FollowerProgress, PartitionReplication, Request, Response};

use crate::codes::wire_code;
use crate::frame::{envelope, error, finish_frame, request_envelope, RequestHeader};
use crate::wire::{self, ApiKey, Body, Envelope};

/// Most replicas one AlterReplicas may name.
pub const MAX_REPLICAS: usize = 64;

// ---- The node's side ----

/// The cluster operation request in `env`; `None` when its API is another.
pub(crate) fn decode(env: &Envelope<'_>, api: ApiKey) -> Option<Result<Request, String>> {
    let missing = || format!("the {api:?} request has no {api:?} body");
    let r = match api {
        ApiKey::AlterReplicas => (|| {
            let b = env.body_as_alter_replicas_request().ok_or_else(missing)?;
            let replicas: Vec<i32> = b.replicas().into_iter().flatten().collect();
            if replicas.len() > MAX_REPLICAS {
                return Err(format!(
                    "{} replicas named; at most {MAX_REPLICAS}",
                    replicas.len()
                ));
            }
            Ok(Request::AlterReplicas {
                topic: b.topic().unwrap_or_default().to_string(),
                partition: b.partition(),
                replicas,
            })
        })(),
        ApiKey::DecommissionNode => (|| {
            let b = env
                .body_as_decommission_node_request()
                .ok_or_else(missing)?;
            Ok(Request::DecommissionNode { node: b.node_id() })
        })(),
        ApiKey::DescribeReplication => Ok(Request::DescribeReplication { all_shards: true }),
        _ => return None,
    };
    Some(r)
}

/// The frame of a cluster operation response (an `Unknown` error frame for another).
pub(crate) fn encode(id: u64, response: &Response) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let (api, body_type, body) = match response {
        Response::AlterReplicas(o) => {
            let error = o
                .as_ref()
                .err()
                .map(|e| error(&mut fbb, wire_code(e.code), &e.message));
            let b = wire::AlterReplicasResponse::create(
                &mut fbb,
                &wire::AlterReplicasResponseArgs { error },
            );
            (
                ApiKey::AlterReplicas,
                Body::AlterReplicasResponse,
                b.as_union_value(),
            )
        }
        Response::DecommissionNode(r) => {
            let args = match r {
                Ok(moves) => wire::DecommissionNodeResponseArgs {
                    error: None,
                    moves: *moves,
                },
                Err(e) => wire::DecommissionNodeResponseArgs {
                    error: Some(error(&mut fbb, wire_code(e.code), &e.message)),
                    moves: 0,
                },
            };
            let b = wire::DecommissionNodeResponse::create(&mut fbb, &args);
            (
                ApiKey::DecommissionNode,
                Body::DecommissionNodeResponse,
                b.as_union_value(),
            )
        }
        Response::DescribeReplication(r) => {
            let args = match r {
                Ok(parts) => {
                    let parts: Vec<_> = parts.iter().map(|p| partition(&mut fbb, p)).collect();
                    wire::DescribeReplicationResponseArgs {
                        error: None,
                        partitions: Some(fbb.create_vector(&parts)),
                    }
                }
                Err(e) => wire::DescribeReplicationResponseArgs {
                    error: Some(error(&mut fbb, wire_code(e.code), &e.message)),
                    partitions: None,
                },
            };
            let b = wire::DescribeReplicationResponse::create(&mut fbb, &args);
            (
                ApiKey::DescribeReplication,
                Body::DescribeReplicationResponse,
                b.as_union_value(),
            )
        }
        _ => {
            return crate::frame::error_frame(
                id,
                ApiKey::Handshake,
                wire::ErrorCode::Unknown,
                "not a cluster operation response",
            )
        }
    };
    let root = envelope(&mut fbb, id, api, body_type, Some(body), None);
    finish_frame(fbb, root)
}

fn partition<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    p: &PartitionReplication,
) -> flatbuffers::WIPOffset<wire::PartitionReplication<'a>> {
    let topic = Some(fbb.create_string(&p.topic));
    let followers: Vec<_> = p
        .followers
        .iter()
        .map(|f| {
            wire::FollowerProgress::create(
                fbb,
                &wire::FollowerProgressArgs {
                    node_id: f.node,
                    learner: f.learner,
                    log_end_offset: f.log_end_offset,
                    reachable: f.reachable,
                },
            )
        })
        .collect();
    let followers = Some(fbb.create_vector(&followers));
    wire::PartitionReplication::create(
        fbb,
        &wire::PartitionReplicationArgs {
            topic,
            partition: p.partition,
            leader_epoch: p.leader_epoch,
            log_end_offset: p.log_end_offset,
            high_watermark: p.high_watermark,
            followers,
        },
    )
}

// ---- The client's side ----

fn request(
    mut fbb: FlatBufferBuilder<'_>,
    header: RequestHeader<'_>,
    api: ApiKey,
    body_type: Body,
    body: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Bytes {
    let root = request_envelope(&mut fbb, header, api, body_type, body);
    finish_frame(fbb, root)
}

/// Moves `topic`/`partition` to `replicas` (the first preferred to lead).
pub fn alter_replicas<'h>(
    header: impl Into<RequestHeader<'h>>,
    topic: &str,
    partition: i32,
    replicas: &[i32],
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(96 + topic.len() + replicas.len() * 4);
    let topic = Some(fbb.create_string(topic));
    let replicas = Some(fbb.create_vector(replicas));
    let body = wire::AlterReplicasRequest::create(
        &mut fbb,
        &wire::AlterReplicasRequestArgs {
            topic,
            partition,
            replicas,
        },
    );
    let body = body.as_union_value();
    request(
        fbb,
        header.into(),
        ApiKey::AlterReplicas,
        Body::AlterReplicasRequest,
        body,
    )
}

/// Moves every replica off `node`.
pub fn decommission_node<'h>(header: impl Into<RequestHeader<'h>>, node: i32) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = wire::DecommissionNodeRequest::create(
        &mut fbb,
        &wire::DecommissionNodeRequestArgs { node_id: node },
    )
    .as_union_value();
    request(
        fbb,
        header.into(),
        ApiKey::DecommissionNode,
        Body::DecommissionNodeRequest,
        body,
    )
}

/// The replication progress of what the node asked leads.
pub fn describe_replication<'h>(header: impl Into<RequestHeader<'h>>) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = wire::DescribeReplicationRequest::create(
        &mut fbb,
        &wire::DescribeReplicationRequestArgs {},
    )
    .as_union_value();
    request(
        fbb,
        header.into(),
        ApiKey::DescribeReplication,
        Body::DescribeReplicationRequest,
        body,
    )
}

fn api_error(e: Option<wire::Error<'_>>) -> Option<ApiError> {
    e.map(|e| {
        ApiError::new(
            crate::codes::broker_code(e.code()),
            e.message().unwrap_or_default(),
        )
    })
}

/// A cluster operation response read back into the broker's types; the envelope's own
/// error becomes `Response::Refused`.
pub fn read_response(env: &Envelope<'_>) -> Option<Response> {
    let api = env.api();
    if let Some(e) = api_error(env.error()) {
        let api = crate::codes::broker_api(api)?;
        return Some(Response::Refused { api, error: e });
    }
    Some(match api {
        ApiKey::AlterReplicas => {
            let b = env.body_as_alter_replicas_response()?;
            Response::AlterReplicas(api_error(b.error()).map_or(Ok(()), Err))
        }
        ApiKey::DecommissionNode => {
            let b = env.body_as_decommission_node_response()?;
            Response::DecommissionNode(api_error(b.error()).map_or(Ok(b.moves()), Err))
        }
        ApiKey::DescribeReplication => {
            let b = env.body_as_describe_replication_response()?;
            if let Some(e) = api_error(b.error()) {
                return Some(Response::DescribeReplication(Err(e)));
            }
            let parts = b
                .partitions()
                .into_iter()
                .flatten()
                .map(|p| PartitionReplication {
                    topic: p.topic().unwrap_or_default().to_string(),
                    partition: p.partition(),
                    leader_epoch: p.leader_epoch(),
                    log_end_offset: p.log_end_offset(),
                    high_watermark: p.high_watermark(),
                    followers: p
                        .followers()
                        .into_iter()
                        .flatten()
                        .map(|f| FollowerProgress {
                            node: f.node_id(),
                            learner: f.learner(),
                            log_end_offset: f.log_end_offset(),
                            reachable: f.reachable(),
                        })
                        .collect(),
                })
                .collect();
            Response::DescribeReplication(Ok(parts))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse_frame;

    fn decoded(frame: Bytes) -> Request {
        crate::decode::decode_request(bytes::BytesMut::from(&frame[..]), 1 << 20)
            .expect("decodes")
            .request
    }

    fn round_trip(response: Response) -> Response {
        let frame = crate::encode::encode_response(9, &response);
        let env = parse_frame(&frame, 1 << 20).expect("a frame");
        read_response(&env).expect("a cluster operation response")
    }

    #[test]
    fn cluster_operations_round_trip() {
        assert_eq!(
            decoded(alter_replicas(1, "t", 3, &[2, 1, 4])),
            Request::AlterReplicas {
                topic: "t".into(),
                partition: 3,
                replicas: vec![2, 1, 4]
            }
        );
        assert_eq!(
            decoded(decommission_node(2, 5)),
            Request::DecommissionNode { node: 5 }
        );
        assert_eq!(
            decoded(describe_replication(3)),
            Request::DescribeReplication { all_shards: true }
        );
        let parts = vec![PartitionReplication {
            topic: "t".into(),
            partition: 1,
            leader_epoch: 4,
            log_end_offset: 100,
            high_watermark: 90,
            followers: vec![FollowerProgress {
                node: 2,
                learner: true,
                log_end_offset: 50,
                reachable: false,
            }],
        }];
        for r in [
            Response::AlterReplicas(Ok(())),
            Response::DecommissionNode(Ok(7)),
            Response::DescribeReplication(Ok(parts)),
            Response::DecommissionNode(Err(ApiError::new(
                quiver_broker_api::ErrorCode::InvalidRequest,
                "no node left",
            ))),
        ] {
            assert_eq!(round_trip(r.clone()), r);
        }
    }

    #[test]
    fn too_many_replicas_is_a_typed_refusal() {
        let many: Vec<i32> = (0..100).collect();
        let frame = alter_replicas(1, "t", 0, &many);
        assert!(crate::decode::decode_request(bytes::BytesMut::from(&frame[..]), 1 << 20).is_err());
    }
}
