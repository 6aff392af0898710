//! The consumer group APIs on the wire, both directions: request frames into the broker's
//! typed requests and its responses into frames (the node's side), request encoders and
//! response readers (the client's side).

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};
use quiver_broker_api::{
    ApiError, CommittedOffset, GroupDescription, GroupListing, Heartbeat, HeartbeatOutcome,
    MemberDescription, Nack, NackReply, OffsetCommit, Outcome, Request, Response, TopicPartition,
};

use crate::codes::wire_code;
use crate::decode::MAX_PARTS_PER_REQUEST;
use crate::frame::{envelope, error, finish_frame, request_envelope, RequestHeader};
use crate::wire::{self, ApiKey, Body, Envelope};

type TpVector<'a> = Vector<'a, ForwardsUOffset<wire::TopicPartitions<'a>>>;

/// Topic-partition lists, bounded by [`MAX_PARTS_PER_REQUEST`] partitions in all.
fn read_tps(v: Option<TpVector<'_>>) -> Result<Vec<TopicPartition>, String> {
    let mut out = Vec::new();
    for tp in v.iter().flat_map(|v| v.iter()) {
        let topic = tp.topic().unwrap_or_default();
        for p in tp.partitions().iter().flat_map(|p| p.iter()) {
            if out.len() >= MAX_PARTS_PER_REQUEST {
                return Err(format!(
                    "more than {MAX_PARTS_PER_REQUEST} partitions in one list"
                ));
            }
            out.push(TopicPartition::new(topic, p));
        }
    }
    Ok(out)
}

fn write_tps<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    tps: &[TopicPartition],
) -> WIPOffset<TpVector<'a>> {
    let mut grouped: Vec<(&str, Vec<i32>)> = Vec::new();
    for tp in tps {
        match grouped.last_mut() {
            Some((t, ps)) if *t == tp.topic => ps.push(tp.partition),
            _ => grouped.push((&tp.topic, vec![tp.partition])),
        }
    }
    let offs: Vec<_> = grouped
        .iter()
        .map(|(t, ps)| {
            let topic = Some(fbb.create_string(t));
            let partitions = Some(fbb.create_vector(ps));
            wire::TopicPartitions::create(fbb, &wire::TopicPartitionsArgs { topic, partitions })
        })
        .collect();
    fbb.create_vector(&offs)
}

fn strings<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    items: &[String],
) -> WIPOffset<Vector<'a, ForwardsUOffset<&'a str>>> {
    let offs: Vec<_> = items.iter().map(|s| fbb.create_string(s)).collect();
    fbb.create_vector(&offs)
}

fn opt_str(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

// ---- The node's side ----

/// The group request in `env` (whose API is a group API); `Err` is a message for
/// `InvalidRequest` / `MalformedRequest`.
pub(crate) fn decode(env: &Envelope<'_>, api: ApiKey) -> Option<Result<Request, String>> {
    let missing = || format!("the {api:?} request has no {api:?} body");
    let r = match api {
        ApiKey::ConsumerGroupHeartbeat => (|| {
            let b = env
                .body_as_consumer_group_heartbeat_request()
                .ok_or_else(missing)?;
            let subscribed = b
                .subscribed_topics()
                .map(|v| v.iter().map(str::to_string).collect::<Vec<_>>());
            if subscribed
                .as_ref()
                .is_some_and(|s| s.len() > MAX_PARTS_PER_REQUEST)
            {
                return Err(format!(
                    "more than {MAX_PARTS_PER_REQUEST} subscribed topics"
                ));
            }
            Ok(Request::ConsumerGroupHeartbeat(Heartbeat {
                group: b.group().unwrap_or_default().to_string(),
                member_id: b.member_id().unwrap_or_default().to_string(),
                instance_id: opt_str(b.instance_id()),
                client_id: env.client_id().unwrap_or_default().to_string(),
                member_epoch: b.member_epoch(),
                rebalance_timeout_ms: b.rebalance_timeout_ms(),
                subscribed,
                assignor: opt_str(b.assignor()),
                owned: read_tps(b.owned())?,
            }))
        })(),
        ApiKey::OffsetCommit => (|| {
            let b = env.body_as_offset_commit_request().ok_or_else(missing)?;
            let offsets = read_offset_parts(b.partitions())?;
            Ok(Request::OffsetCommit(OffsetCommit {
                group: b.group().unwrap_or_default().to_string(),
                member_id: b.member_id().unwrap_or_default().to_string(),
                member_epoch: b.member_epoch(),
                offsets,
            }))
        })(),
        ApiKey::OffsetFetch => (|| {
            let b = env.body_as_offset_fetch_request().ok_or_else(missing)?;
            Ok(Request::OffsetFetch {
                group: b.group().unwrap_or_default().to_string(),
                partitions: read_tps(b.partitions())?,
            })
        })(),
        ApiKey::ListGroups => env
            .body_as_list_groups_request()
            .map(|_| Request::ListGroups)
            .ok_or_else(missing),
        ApiKey::DescribeGroup => env
            .body_as_describe_group_request()
            .map(|b| Request::DescribeGroup {
                group: b.group().unwrap_or_default().to_string(),
            })
            .ok_or_else(missing),
        ApiKey::DeleteGroup => env
            .body_as_delete_group_request()
            .map(|b| Request::DeleteGroup {
                group: b.group().unwrap_or_default().to_string(),
                force: b.force(),
            })
            .ok_or_else(missing),
        ApiKey::Nack => env
            .body_as_nack_request()
            .map(|b| {
                Request::Nack(Nack {
                    group: b.group().unwrap_or_default().to_string(),
                    member_id: b.member_id().unwrap_or_default().to_string(),
                    member_epoch: b.member_epoch(),
                    tp: TopicPartition::new(b.topic().unwrap_or_default(), b.partition()),
                    offset: b.offset(),
                    error: b.error().unwrap_or_default().to_string(),
                })
            })
            .ok_or_else(missing),
        ApiKey::AlterGroupConfig => env
            .body_as_alter_group_config_request()
            .map(|b| Request::AlterGroupConfig {
                group: b.group().unwrap_or_default().to_string(),
                configs: b
                    .configs()
                    .iter()
                    .flat_map(|v| v.iter())
                    .map(|c| {
                        (
                            c.key().unwrap_or_default().to_string(),
                            c.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            })
            .ok_or_else(missing),
        _ => return None,
    };
    Some(r)
}

fn err<'a>(fbb: &mut FlatBufferBuilder<'a>, e: &ApiError) -> WIPOffset<wire::Error<'a>> {
    error(fbb, wire_code(e.code), &e.message)
}

fn outcome<'a>(fbb: &mut FlatBufferBuilder<'a>, o: &Outcome) -> Option<WIPOffset<wire::Error<'a>>> {
    o.as_ref().err().map(|e| err(fbb, e))
}

fn committed<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    offsets: &[(TopicPartition, CommittedOffset)],
) -> WIPOffset<Vector<'a, ForwardsUOffset<wire::CommittedOffset<'a>>>> {
    let offs: Vec<_> = offsets
        .iter()
        .map(|(tp, o)| {
            let topic = Some(fbb.create_string(&tp.topic));
            let metadata = Some(fbb.create_string(&o.metadata));
            wire::CommittedOffset::create(
                fbb,
                &wire::CommittedOffsetArgs {
                    topic,
                    partition: tp.partition,
                    offset: o.offset,
                    metadata,
                    commit_time_ms: o.commit_time_ms,
                },
            )
        })
        .collect();
    fbb.create_vector(&offs)
}

/// The frame of a group response; `None` for another API's response.
pub(crate) fn encode(id: u64, response: &Response) -> Option<Bytes> {
    let mut fbb = FlatBufferBuilder::with_capacity(512);
    let (api, body_type, body) = match response {
        Response::ConsumerGroupHeartbeat(r) => {
            let args = match r {
                Ok(o) => {
                    let member_id = Some(fbb.create_string(&o.member_id));
                    let assignment = Some(write_tps(&mut fbb, &o.assignment));
                    wire::ConsumerGroupHeartbeatResponseArgs {
                        error: None,
                        member_id,
                        member_epoch: o.member_epoch,
                        heartbeat_interval_ms: o.heartbeat_interval_ms,
                        assignment,
                    }
                }
                Err(e) => wire::ConsumerGroupHeartbeatResponseArgs {
                    error: Some(err(&mut fbb, e)),
                    ..Default::default()
                },
            };
            let b = wire::ConsumerGroupHeartbeatResponse::create(&mut fbb, &args);
            (
                ApiKey::ConsumerGroupHeartbeat,
                Body::ConsumerGroupHeartbeatResponse,
                b.as_union_value(),
            )
        }
        Response::OffsetCommit {
            outcome: o,
            partitions,
        } => {
            let error = outcome(&mut fbb, o);
            let offs: Vec<_> = partitions
                .iter()
                .map(|(tp, o)| {
                    let topic = Some(fbb.create_string(&tp.topic));
                    let error = outcome(&mut fbb, o);
                    wire::OffsetCommitPartitionResponse::create(
                        &mut fbb,
                        &wire::OffsetCommitPartitionResponseArgs {
                            topic,
                            partition: tp.partition,
                            error,
                        },
                    )
                })
                .collect();
            let partitions = Some(fbb.create_vector(&offs));
            let b = wire::OffsetCommitResponse::create(
                &mut fbb,
                &wire::OffsetCommitResponseArgs { error, partitions },
            );
            (
                ApiKey::OffsetCommit,
                Body::OffsetCommitResponse,
                b.as_union_value(),
            )
        }
        Response::OffsetFetch(r) => {
            let args = match r {
                Ok(offsets) => wire::OffsetFetchResponseArgs {
                    error: None,
                    offsets: Some(committed(&mut fbb, offsets)),
                },
                Err(e) => wire::OffsetFetchResponseArgs {
                    error: Some(err(&mut fbb, e)),
                    offsets: None,
                },
            };
            let b = wire::OffsetFetchResponse::create(&mut fbb, &args);
            (
                ApiKey::OffsetFetch,
                Body::OffsetFetchResponse,
                b.as_union_value(),
            )
        }
        Response::ListGroups(r) => {
            let args = match r {
                Ok(groups) => {
                    let offs: Vec<_> = groups
                        .iter()
                        .map(|g| {
                            let group = Some(fbb.create_string(&g.group));
                            let state = Some(fbb.create_string(&g.state));
                            wire::GroupListing::create(
                                &mut fbb,
                                &wire::GroupListingArgs {
                                    group,
                                    state,
                                    members: g.members,
                                },
                            )
                        })
                        .collect();
                    wire::ListGroupsResponseArgs {
                        error: None,
                        groups: Some(fbb.create_vector(&offs)),
                    }
                }
                Err(e) => wire::ListGroupsResponseArgs {
                    error: Some(err(&mut fbb, e)),
                    groups: None,
                },
            };
            let b = wire::ListGroupsResponse::create(&mut fbb, &args);
            (
                ApiKey::ListGroups,
                Body::ListGroupsResponse,
                b.as_union_value(),
            )
        }
        Response::DescribeGroup(r) => {
            let args = match r {
                Ok(d) => describe_args(&mut fbb, d),
                Err(e) => wire::DescribeGroupResponseArgs {
                    error: Some(err(&mut fbb, e)),
                    ..Default::default()
                },
            };
            let b = wire::DescribeGroupResponse::create(&mut fbb, &args);
            (
                ApiKey::DescribeGroup,
                Body::DescribeGroupResponse,
                b.as_union_value(),
            )
        }
        Response::DeleteGroup(o) => {
            let error = outcome(&mut fbb, o);
            let b = wire::DeleteGroupResponse::create(
                &mut fbb,
                &wire::DeleteGroupResponseArgs { error },
            );
            (
                ApiKey::DeleteGroup,
                Body::DeleteGroupResponse,
                b.as_union_value(),
            )
        }
        Response::AlterGroupConfig(o) => {
            let error = outcome(&mut fbb, o);
            let b = wire::AlterGroupConfigResponse::create(
                &mut fbb,
                &wire::AlterGroupConfigResponseArgs { error },
            );
            (
                ApiKey::AlterGroupConfig,
                Body::AlterGroupConfigResponse,
                b.as_union_value(),
            )
        }
        Response::Nack(r) => {
            let args = match r {
                Ok(reply) => {
                    let (dlq_topic, dlq_partition, dlq_offset) = match &reply.dead_letter {
                        Some((t, p, o)) => (Some(fbb.create_string(t)), *p, *o),
                        None => (None, -1, -1),
                    };
                    wire::NackResponseArgs {
                        error: None,
                        deliveries: reply.deliveries,
                        redeliver_after_ms: reply.redeliver_after_ms.map_or(-1, i64::from),
                        dlq_topic,
                        dlq_partition,
                        dlq_offset,
                        delayed_until_ms: reply.delayed_until_ms.unwrap_or(-1),
                    }
                }
                Err(e) => wire::NackResponseArgs {
                    error: Some(err(&mut fbb, e)),
                    ..Default::default()
                },
            };
            let b = wire::NackResponse::create(&mut fbb, &args);
            (ApiKey::Nack, Body::NackResponse, b.as_union_value())
        }
        _ => return None,
    };
    let root = envelope(&mut fbb, id, api, body_type, Some(body), None);
    Some(finish_frame(fbb, root))
}

fn describe_args<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    d: &GroupDescription,
) -> wire::DescribeGroupResponseArgs<'a> {
    let members: Vec<_> = d
        .members
        .iter()
        .map(|m| {
            let member_id = Some(fbb.create_string(&m.member_id));
            let instance_id = m.instance_id.as_deref().map(|i| fbb.create_string(i));
            let client_id = Some(fbb.create_string(&m.client_id));
            let subscribed_topics = Some(strings(fbb, &m.subscribed));
            let assigned = Some(write_tps(fbb, &m.assigned));
            let revoking = Some(write_tps(fbb, &m.revoking));
            wire::GroupMember::create(
                fbb,
                &wire::GroupMemberArgs {
                    member_id,
                    instance_id,
                    client_id,
                    member_epoch: m.member_epoch,
                    subscribed_topics,
                    assigned,
                    revoking,
                },
            )
        })
        .collect();
    wire::DescribeGroupResponseArgs {
        error: None,
        group: Some(fbb.create_string(&d.group)),
        state: Some(fbb.create_string(d.state.name())),
        epoch: d.epoch,
        assignor: Some(fbb.create_string(d.config.assignor.name())),
        session_timeout_ms: d.config.session_timeout_ms,
        heartbeat_interval_ms: d.config.heartbeat_interval_ms,
        members: Some(fbb.create_vector(&members)),
        offsets: Some(committed(fbb, &d.offsets)),
        max_deliveries: d.config.max_deliveries,
        redelivery_backoff_ms: Some(fbb.create_vector(&d.config.redelivery_backoff_ms)),
        dlq_topic: Some(fbb.create_string(&d.config.dlq_topic)),
        retry_levels: d.config.retry_levels,
    }
}

// ---- The client's side: request encoders ----

pub fn heartbeat<'h>(header: impl Into<RequestHeader<'h>>, hb: &Heartbeat) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let group = Some(fbb.create_string(&hb.group));
    let member_id = Some(fbb.create_string(&hb.member_id));
    let instance_id = hb.instance_id.as_deref().map(|i| fbb.create_string(i));
    let subscribed_topics = hb.subscribed.as_ref().map(|s| strings(&mut fbb, s));
    let assignor = hb.assignor.as_deref().map(|a| fbb.create_string(a));
    let owned = Some(write_tps(&mut fbb, &hb.owned));
    let body = wire::ConsumerGroupHeartbeatRequest::create(
        &mut fbb,
        &wire::ConsumerGroupHeartbeatRequestArgs {
            group,
            member_id,
            instance_id,
            member_epoch: hb.member_epoch,
            rebalance_timeout_ms: hb.rebalance_timeout_ms,
            subscribed_topics,
            assignor,
            owned,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::ConsumerGroupHeartbeat,
        Body::ConsumerGroupHeartbeatRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// The wire's `[OffsetCommitPartition]` as `(partition, offset, metadata)` entries, bounded
/// by [`MAX_PARTS_PER_REQUEST`].
pub(crate) fn read_offset_parts(
    v: Option<Vector<'_, ForwardsUOffset<wire::OffsetCommitPartition<'_>>>>,
) -> Result<Vec<(TopicPartition, i64, String)>, String> {
    let parts = v.map(|v| v.len()).unwrap_or(0);
    if parts > MAX_PARTS_PER_REQUEST {
        return Err(format!(
            "{parts} partitions; commit at most {MAX_PARTS_PER_REQUEST} offsets at once"
        ));
    }
    Ok(v.iter()
        .flat_map(|v| v.iter())
        .map(|p| {
            (
                TopicPartition::new(p.topic().unwrap_or_default(), p.partition()),
                p.offset(),
                p.metadata().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// `(partition, offset, metadata)` entries as the wire's `[OffsetCommitPartition]`.
pub(crate) fn offset_parts<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    offsets: &[(TopicPartition, i64, String)],
) -> WIPOffset<Vector<'a, ForwardsUOffset<wire::OffsetCommitPartition<'a>>>> {
    let parts: Vec<_> = offsets
        .iter()
        .map(|(tp, offset, metadata)| {
            let topic = Some(fbb.create_string(&tp.topic));
            let metadata = (!metadata.is_empty()).then(|| fbb.create_string(metadata));
            wire::OffsetCommitPartition::create(
                fbb,
                &wire::OffsetCommitPartitionArgs {
                    topic,
                    partition: tp.partition,
                    offset: *offset,
                    metadata,
                },
            )
        })
        .collect();
    fbb.create_vector(&parts)
}

pub fn offset_commit<'h>(header: impl Into<RequestHeader<'h>>, c: &OffsetCommit) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(128 + c.offsets.len() * 48);
    let group = Some(fbb.create_string(&c.group));
    let member_id = (!c.member_id.is_empty()).then(|| fbb.create_string(&c.member_id));
    let partitions = Some(offset_parts(&mut fbb, &c.offsets));
    let body = wire::OffsetCommitRequest::create(
        &mut fbb,
        &wire::OffsetCommitRequestArgs {
            group,
            member_id,
            member_epoch: c.member_epoch,
            partitions,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::OffsetCommit,
        Body::OffsetCommitRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// Committed offsets of `partitions` of `group` (empty: all of them).
pub fn offset_fetch<'h>(
    header: impl Into<RequestHeader<'h>>,
    group: &str,
    partitions: &[TopicPartition],
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let group = Some(fbb.create_string(group));
    let partitions = (!partitions.is_empty()).then(|| write_tps(&mut fbb, partitions));
    let body = wire::OffsetFetchRequest::create(
        &mut fbb,
        &wire::OffsetFetchRequestArgs { group, partitions },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::OffsetFetch,
        Body::OffsetFetchRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

pub fn list_groups<'h>(header: impl Into<RequestHeader<'h>>) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = wire::ListGroupsRequest::create(&mut fbb, &wire::ListGroupsRequestArgs {});
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::ListGroups,
        Body::ListGroupsRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

pub fn describe_group<'h>(header: impl Into<RequestHeader<'h>>, group: &str) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let group = Some(fbb.create_string(group));
    let body =
        wire::DescribeGroupRequest::create(&mut fbb, &wire::DescribeGroupRequestArgs { group });
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::DescribeGroup,
        Body::DescribeGroupRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

pub fn delete_group<'h>(header: impl Into<RequestHeader<'h>>, group: &str, force: bool) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let group = Some(fbb.create_string(group));
    let body =
        wire::DeleteGroupRequest::create(&mut fbb, &wire::DeleteGroupRequestArgs { group, force });
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::DeleteGroup,
        Body::DeleteGroupRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// A member failed the record at `n.offset`.
pub fn nack<'h>(header: impl Into<RequestHeader<'h>>, n: &Nack) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(128 + n.error.len());
    let group = Some(fbb.create_string(&n.group));
    let member_id = Some(fbb.create_string(&n.member_id));
    let topic = Some(fbb.create_string(&n.tp.topic));
    let error = Some(fbb.create_string(&n.error));
    let body = wire::NackRequest::create(
        &mut fbb,
        &wire::NackRequestArgs {
            group,
            member_id,
            member_epoch: n.member_epoch,
            topic,
            partition: n.tp.partition,
            offset: n.offset,
            error,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::Nack,
        Body::NackRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// Sets the named keys of `group`'s configuration.
pub fn alter_group_config<'h>(
    header: impl Into<RequestHeader<'h>>,
    group: &str,
    configs: &[(&str, &str)],
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let group = Some(fbb.create_string(group));
    let entries: Vec<_> = configs
        .iter()
        .map(|(k, v)| {
            let key = Some(fbb.create_string(k));
            let value = Some(fbb.create_string(v));
            wire::ConfigEntry::create(&mut fbb, &wire::ConfigEntryArgs { key, value })
        })
        .collect();
    let configs = Some(fbb.create_vector(&entries));
    let body = wire::AlterGroupConfigRequest::create(
        &mut fbb,
        &wire::AlterGroupConfigRequestArgs { group, configs },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::AlterGroupConfig,
        Body::AlterGroupConfigRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

// ---- The client's side: response readers ----

fn api_error(e: Option<wire::Error<'_>>) -> Option<ApiError> {
    e.map(|e| {
        ApiError::new(
            crate::codes::broker_code(e.code()),
            e.message().unwrap_or_default(),
        )
    })
}

fn read_committed(
    v: Option<Vector<'_, ForwardsUOffset<wire::CommittedOffset<'_>>>>,
) -> Vec<(TopicPartition, CommittedOffset)> {
    v.iter()
        .flat_map(|v| v.iter())
        .map(|o| {
            (
                TopicPartition::new(o.topic().unwrap_or_default(), o.partition()),
                CommittedOffset {
                    offset: o.offset(),
                    metadata: o.metadata().unwrap_or_default().to_string(),
                    commit_time_ms: o.commit_time_ms(),
                },
            )
        })
        .collect()
}

/// A group response read back into the broker's types (the envelope's own error, a refused
/// request, becomes `Response::Refused`); `None` when `env` holds no group response.
pub fn read_response(env: &Envelope<'_>) -> Option<Response> {
    let api = env.api();
    if let Some(e) = api_error(env.error()) {
        let api = crate::codes::broker_api(api)?;
        return Some(Response::Refused { api, error: e });
    }
    let r = match api {
        ApiKey::ConsumerGroupHeartbeat => {
            let b = env.body_as_consumer_group_heartbeat_response()?;
            Response::ConsumerGroupHeartbeat(match api_error(b.error()) {
                Some(e) => Err(e),
                None => Ok(HeartbeatOutcome {
                    member_id: b.member_id().unwrap_or_default().to_string(),
                    member_epoch: b.member_epoch(),
                    heartbeat_interval_ms: b.heartbeat_interval_ms(),
                    assignment: read_tps(b.assignment()).unwrap_or_default(),
                }),
            })
        }
        ApiKey::OffsetCommit => {
            let b = env.body_as_offset_commit_response()?;
            Response::OffsetCommit {
                outcome: api_error(b.error()).map_or(Ok(()), Err),
                partitions: b
                    .partitions()
                    .iter()
                    .flat_map(|v| v.iter())
                    .map(|p| {
                        (
                            TopicPartition::new(p.topic().unwrap_or_default(), p.partition()),
                            api_error(p.error()).map_or(Ok(()), Err),
                        )
                    })
                    .collect(),
            }
        }
        ApiKey::OffsetFetch => {
            let b = env.body_as_offset_fetch_response()?;
            Response::OffsetFetch(match api_error(b.error()) {
                Some(e) => Err(e),
                None => Ok(read_committed(b.offsets())),
            })
        }
        ApiKey::ListGroups => {
            let b = env.body_as_list_groups_response()?;
            Response::ListGroups(match api_error(b.error()) {
                Some(e) => Err(e),
                None => Ok(b
                    .groups()
                    .iter()
                    .flat_map(|v| v.iter())
                    .map(|g| GroupListing {
                        group: g.group().unwrap_or_default().to_string(),
                        state: g.state().unwrap_or_default().to_string(),
                        members: g.members(),
                    })
                    .collect()),
            })
        }
        ApiKey::DescribeGroup => {
            let b = env.body_as_describe_group_response()?;
            Response::DescribeGroup(match api_error(b.error()) {
                Some(e) => Err(e),
                None => Ok(read_description(&b)),
            })
        }
        ApiKey::DeleteGroup => {
            let b = env.body_as_delete_group_response()?;
            Response::DeleteGroup(api_error(b.error()).map_or(Ok(()), Err))
        }
        ApiKey::Nack => {
            let b = env.body_as_nack_response()?;
            Response::Nack(match api_error(b.error()) {
                Some(e) => Err(e),
                None => Ok(NackReply {
                    deliveries: b.deliveries(),
                    redeliver_after_ms: u32::try_from(b.redeliver_after_ms()).ok(),
                    dead_letter: (b.redeliver_after_ms() < 0).then(|| {
                        (
                            b.dlq_topic().unwrap_or_default().to_string(),
                            b.dlq_partition(),
                            b.dlq_offset(),
                        )
                    }),
                    delayed_until_ms: (b.delayed_until_ms() >= 0).then(|| b.delayed_until_ms()),
                }),
            })
        }
        ApiKey::AlterGroupConfig => {
            let b = env.body_as_alter_group_config_response()?;
            Response::AlterGroupConfig(api_error(b.error()).map_or(Ok(()), Err))
        }
        _ => return None,
    };
    Some(r)
}

fn read_description(b: &wire::DescribeGroupResponse<'_>) -> GroupDescription {
    use quiver_broker_api::GroupState;
    let state = match b.state().unwrap_or_default() {
        "Stable" => GroupState::Stable,
        "Reconciling" => GroupState::Reconciling,
        _ => GroupState::Empty,
    };
    let assignor = quiver_group::types::AssignorKind::parse(b.assignor().unwrap_or_default())
        .unwrap_or_default();
    GroupDescription {
        group: b.group().unwrap_or_default().to_string(),
        state,
        epoch: b.epoch(),
        target_epoch: b.epoch(),
        config: quiver_group::GroupConfig {
            session_timeout_ms: b.session_timeout_ms(),
            heartbeat_interval_ms: b.heartbeat_interval_ms(),
            assignor,
            max_deliveries: b.max_deliveries(),
            redelivery_backoff_ms: b
                .redelivery_backoff_ms()
                .map(|v| v.iter().collect())
                .unwrap_or_default(),
            dlq_topic: b.dlq_topic().unwrap_or_default().to_string(),
            retry_levels: b.retry_levels(),
        },
        members: b
            .members()
            .iter()
            .flat_map(|v| v.iter())
            .map(|m| MemberDescription {
                member_id: m.member_id().unwrap_or_default().to_string(),
                instance_id: opt_str(m.instance_id()),
                client_id: m.client_id().unwrap_or_default().to_string(),
                member_epoch: m.member_epoch(),
                subscribed: m
                    .subscribed_topics()
                    .iter()
                    .flat_map(|v| v.iter())
                    .map(str::to_string)
                    .collect(),
                assigned: read_tps(m.assigned()).unwrap_or_default(),
                revoking: read_tps(m.revoking()).unwrap_or_default(),
            })
            .collect(),
        offsets: read_committed(b.offsets()),
    }
}
