//! Request frames into the broker's [`Request`]s (sans-IO; the `request_decode` fuzz target
//! drives it). The frame is verified once; a produce's record vectors are then split out of
//! the frame buffer without a copy.

use std::ops::Range;

use bytes::{Buf, BytesMut};
use quiver_broker_api::{
    Fetch, FetchPartition, NewTopic, OffsetQuery, Produce, ProducePartition, Request,
};

use crate::codes;
use crate::frame::{parse_frame, vector_range, FrameError};
use crate::wire::{self, ApiKey, ErrorCode};

/// Most partitions one produce or fetch request may name.
pub const MAX_PARTS_PER_REQUEST: usize = 10_000;

/// A request as the broker takes it, with what its frame said besides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub request_id: u64,
    /// The client's name for itself (the envelope's `client_id`), empty when not given.
    pub client_id: String,
    pub request: Request,
}

/// Why a frame could not become a request, with what the response must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub request_id: u64,
    pub api: ApiKey,
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    /// The response frame that says so.
    pub fn to_frame(&self) -> bytes::Bytes {
        crate::frame::error_frame(self.request_id, self.api, self.code, &self.message)
    }
}

fn refuse(request_id: u64, api: ApiKey, code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        request_id,
        api,
        code,
        message: message.into(),
    }
}

fn strings(v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<&str>>>) -> Vec<String> {
    v.map(|v| v.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

fn configs(
    v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<wire::ConfigEntry<'_>>>>,
) -> Vec<(String, String)> {
    v.map(|v| {
        v.iter()
            .map(|e| {
                (
                    e.key().unwrap_or_default().to_string(),
                    e.value().unwrap_or_default().to_string(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

/// A produce or fetch names at least one partition and at most [`MAX_PARTS_PER_REQUEST`].
fn check_parts(id: u64, api: ApiKey, count: usize) -> Result<(), Refusal> {
    if count == 0 || count > MAX_PARTS_PER_REQUEST {
        return Err(refuse(
            id,
            api,
            ErrorCode::InvalidRequest,
            format!(
                "the {api:?} request names {count} partitions; send 1 to {MAX_PARTS_PER_REQUEST}"
            ),
        ));
    }
    Ok(())
}

/// The entries' record vectors must not overlap (FlatBuffers would let two entries share one
/// vector): each partition's batches are split out of the frame without a copy.
fn check_disjoint(id: u64, api: ApiKey, ranges: &[Range<usize>]) -> Result<(), Refusal> {
    let mut sorted: Vec<&Range<usize>> = ranges.iter().collect();
    sorted.sort_by_key(|r| r.start);
    if sorted.windows(2).any(|w| w[0].end > w[1].start) {
        return Err(refuse(
            id,
            api,
            ErrorCode::MalformedRequest,
            "two partitions' records overlap in the frame; give each partition its own vector",
        ));
    }
    Ok(())
}

/// A produce whose record bytes are still ranges of the frame.
struct ProduceInFrame {
    acks: quiver_broker_api::Acks,
    timeout_ms: u32,
    transactional_id: Option<String>,
    parts: Vec<(String, i32, Range<usize>)>,
}

/// What the verified envelope says, before the frame's bytes are split.
enum Parsed {
    Ready(Request),
    Produce(ProduceInFrame),
}

/// Verifies `frame` and turns it into a request. Every failure becomes a [`Refusal`] carrying
/// the error code the response must have.
pub fn decode_request(frame: BytesMut, max_frame_bytes: usize) -> Result<Decoded, Refusal> {
    let (request_id, client_id, parsed) = parse(&frame, max_frame_bytes)?;
    let request = match parsed {
        Parsed::Ready(r) => r,
        Parsed::Produce(p) => Request::Produce(split_produce(frame, p)),
    };
    Ok(Decoded {
        request_id,
        client_id,
        request,
    })
}

fn parse(frame: &[u8], max_frame_bytes: usize) -> Result<(u64, String, Parsed), Refusal> {
    let env = parse_frame(frame, max_frame_bytes)
        .map_err(|e: FrameError| refuse(0, ApiKey::Handshake, e.code(), e.to_string()))?;
    let (id, api) = (env.request_id(), env.api());
    if env.version() != quiver_broker_api::API_VERSION {
        return Err(refuse(
            id,
            api,
            ErrorCode::UnsupportedVersion,
            format!(
                "{api:?} version {} is not supported; this node speaks version {}",
                env.version(),
                quiver_broker_api::API_VERSION
            ),
        ));
    }
    let client_id = env.client_id().unwrap_or_default().to_string();
    let missing = || {
        refuse(
            id,
            api,
            ErrorCode::MalformedRequest,
            format!("the {api:?} request has no {api:?} body"),
        )
    };
    let ready = |r| Ok((id, client_id.clone(), Parsed::Ready(r)));
    match api {
        ApiKey::Handshake => {
            let b = env.body_as_handshake_request().ok_or_else(missing)?;
            ready(Request::Handshake {
                client_name: b.client_name().unwrap_or_default().to_string(),
            })
        }
        ApiKey::Metadata => ready(Request::Metadata {
            topics: strings(env.body_as_metadata_request().ok_or_else(missing)?.topics()),
        }),
        ApiKey::CreateTopics => {
            let b = env.body_as_create_topics_request().ok_or_else(missing)?;
            let topics = b
                .topics()
                .map(|ts| {
                    ts.iter()
                        .map(|t| NewTopic {
                            name: t.name().unwrap_or_default().to_string(),
                            partitions: t.partitions(),
                            replication_factor: t.replication_factor(),
                            configs: configs(t.configs()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ready(Request::CreateTopics(topics))
        }
        ApiKey::InitProducerId => {
            let b = env.body_as_init_producer_id_request().ok_or_else(missing)?;
            ready(Request::InitProducerId {
                transactional_id: b
                    .transactional_id()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
                transaction_timeout_ms: b.transaction_timeout_ms(),
                current: (b.producer_id() >= 0 && b.producer_epoch() >= 0)
                    .then(|| (b.producer_id(), b.producer_epoch())),
            })
        }
        ApiKey::DeleteTopics => ready(Request::DeleteTopics(strings(
            env.body_as_delete_topics_request()
                .ok_or_else(missing)?
                .names(),
        ))),
        ApiKey::DescribeConfigs => ready(Request::DescribeConfigs(strings(
            env.body_as_describe_configs_request()
                .ok_or_else(missing)?
                .topics(),
        ))),
        ApiKey::AlterConfigs => {
            let b = env.body_as_alter_configs_request().ok_or_else(missing)?;
            ready(Request::AlterConfigs {
                topic: b.topic().unwrap_or_default().to_string(),
                configs: configs(b.configs()),
            })
        }
        ApiKey::ListOffsets => {
            let b = env.body_as_list_offsets_request().ok_or_else(missing)?;
            let query = match b.spec() {
                wire::OffsetSpec::Earliest => OffsetQuery::Earliest,
                wire::OffsetSpec::Latest => OffsetQuery::Latest,
                wire::OffsetSpec::Timestamp => OffsetQuery::Timestamp(b.timestamp_ms()),
                other => {
                    return Err(refuse(
                        id,
                        api,
                        ErrorCode::InvalidRequest,
                        format!(
                            "offset spec {} is not earliest (0), latest (1) or timestamp (2)",
                            other.0
                        ),
                    ))
                }
            };
            ready(Request::ListOffsets {
                topic: b.topic().unwrap_or_default().to_string(),
                partition: b.partition(),
                query,
            })
        }
        ApiKey::Produce => {
            let b = env.body_as_produce_request().ok_or_else(missing)?;
            let Some(acks) = codes::acks(b.acks()) else {
                return Err(refuse(
                    id,
                    api,
                    ErrorCode::InvalidRequest,
                    format!(
                        "acks {} is not one of 0 (none), 1 (leader), -1 (all)",
                        b.acks().0
                    ),
                ));
            };
            let entries = b.partitions().map(|v| v.iter().collect::<Vec<_>>());
            let entries = entries.unwrap_or_default();
            check_parts(id, api, entries.len())?;
            let mut parts = Vec::with_capacity(entries.len());
            for e in entries {
                let records = e.records().map(|r| r.bytes()).unwrap_or_default();
                let range = vector_range(frame, records).ok_or_else(|| {
                    refuse(
                        id,
                        api,
                        ErrorCode::MalformedRequest,
                        "records lie outside the frame",
                    )
                })?;
                parts.push((
                    e.topic().unwrap_or_default().to_string(),
                    e.partition(),
                    range,
                ));
            }
            let ranges: Vec<Range<usize>> = parts.iter().map(|p| p.2.clone()).collect();
            check_disjoint(id, api, &ranges)?;
            Ok((
                id,
                client_id,
                Parsed::Produce(ProduceInFrame {
                    acks,
                    timeout_ms: b.timeout_ms(),
                    transactional_id: b
                        .transactional_id()
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                    parts,
                }),
            ))
        }
        ApiKey::Fetch => {
            let b = env.body_as_fetch_request().ok_or_else(missing)?;
            let partitions: Vec<FetchPartition> = b
                .partitions()
                .map(|v| {
                    v.iter()
                        .map(|e| FetchPartition {
                            topic: e.topic().unwrap_or_default().to_string(),
                            partition: e.partition(),
                            offset: e.offset(),
                            max_bytes: e.max_bytes(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            check_parts(id, api, partitions.len())?;
            let isolation = match b.isolation() {
                wire::Isolation::ReadUncommitted => quiver_broker_api::Isolation::ReadUncommitted,
                wire::Isolation::ReadCommitted => quiver_broker_api::Isolation::ReadCommitted,
                other => {
                    return Err(refuse(
                        id,
                        api,
                        ErrorCode::InvalidRequest,
                        format!(
                            "isolation {} is not read_uncommitted (0) or read_committed (1)",
                            other.0
                        ),
                    ))
                }
            };
            ready(Request::Fetch(Fetch {
                max_wait_ms: b.max_wait_ms(),
                min_bytes: b.min_bytes(),
                max_bytes: b.max_bytes(),
                partitions,
                isolation,
            }))
        }
        other => {
            match crate::groups::decode(&env, other)
                .or_else(|| crate::txn::decode(&env, other))
                .or_else(|| crate::cluster_ops::decode(&env, other))
            {
                Some(Ok(r)) => ready(r),
                Some(Err(message)) => Err(refuse(id, api, ErrorCode::InvalidRequest, message)),
                None => Err(refuse(
                    id,
                    other,
                    ErrorCode::UnknownApi,
                    format!(
                        "API {} is unknown to this node; it supports 0..={}",
                        other.0,
                        ApiKey::ENUM_MAX
                    ),
                )),
            }
        }
    }
}

/// Each partition's records, split out of the received frame without a copy. `parse`
/// checked that the ranges lie inside the frame and do not overlap.
fn split_produce(mut frame: BytesMut, p: ProduceInFrame) -> Produce {
    let mut order: Vec<usize> = (0..p.parts.len()).collect();
    order.sort_by_key(|&i| p.parts[i].2.start);
    let mut records = vec![BytesMut::new(); p.parts.len()];
    let mut cursor = 0;
    for i in order {
        let r = &p.parts[i].2;
        let skip = r.start.saturating_sub(cursor).min(frame.len());
        frame.advance(skip);
        records[i] = frame.split_to(r.len().min(frame.len()));
        cursor = r.end;
    }
    Produce {
        acks: p.acks,
        timeout_ms: p.timeout_ms,
        transactional_id: p.transactional_id,
        partitions: p
            .parts
            .into_iter()
            .zip(records)
            .map(|((topic, partition, _), records)| ProducePartition {
                topic,
                partition,
                records,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests;
    use quiver_broker_api::Acks;

    fn decode(frame: bytes::Bytes) -> Result<Decoded, Refusal> {
        decode_request(BytesMut::from(&frame[..]), 1 << 20)
    }

    #[test]
    fn decodes_every_request_and_refuses_bad_ones() {
        let parts = [
            requests::ProducePart {
                topic: "t",
                partition: 2,
                records: b"abc",
            },
            requests::ProducePart {
                topic: "u",
                partition: 0,
                records: b"de",
            },
        ];
        let frame = requests::produce_many(5, wire::Acks::Leader, 100, &parts);
        let d = decode(frame.clone()).unwrap();
        assert_eq!(d.request_id, 5);
        assert_eq!(d.request.partitions(), vec![("t", 2), ("u", 0)]);
        let Request::Produce(p) = d.request else {
            panic!()
        };
        assert_eq!(&p.partitions[0].records[..], b"abc");
        assert_eq!(&p.partitions[1].records[..], b"de");
        assert_eq!(p.acks, Acks::Leader);
        let empty = requests::produce_many(5, wire::Acks::All, 100, &[]);
        assert_eq!(decode(empty).unwrap_err().code, ErrorCode::InvalidRequest);
        let f = requests::fetch(
            6,
            &requests::Fetch {
                topic: "t",
                partition: 1,
                offset: 9,
                max_bytes: 10,
                max_wait_ms: 11,
                min_bytes: 12,
            },
        );
        assert_eq!(decode(f).unwrap().request.partitions(), vec![("t", 1)]);
        let c = requests::create_topics(
            7,
            &[requests::NewTopic {
                name: "n",
                partitions: 3,
                replication_factor: 0,
                configs: &[("retention_ms", "5")],
            }],
        );
        assert_eq!(
            decode(c).unwrap().request,
            Request::CreateTopics(vec![NewTopic {
                name: "n".into(),
                partitions: 3,
                replication_factor: 0,
                configs: vec![("retention_ms".into(), "5".into())]
            }])
        );
        let bad_spec = requests::list_offsets(8, "t", 0, wire::OffsetSpec(9), 0);
        assert_eq!(
            decode(bad_spec).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let mut junk = 4u32.to_le_bytes().to_vec();
        junk.extend([1, 2, 3, 4]);
        assert_eq!(
            decode(bytes::Bytes::from(junk)).unwrap_err().code,
            ErrorCode::MalformedRequest
        );
        assert_eq!(
            decode_request(BytesMut::from(&frame[..]), 8)
                .unwrap_err()
                .code,
            ErrorCode::FrameTooLarge
        );
    }

    #[test]
    fn the_client_id_of_the_envelope_reaches_the_request() {
        let frame = requests::metadata((3, "quiver-cli/1"), &[]);
        let d = decode(frame).unwrap();
        assert_eq!((d.request_id, d.client_id.as_str()), (3, "quiver-cli/1"));
    }
}
