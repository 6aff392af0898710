//! Decoding a request frame into an owned [`Request`] (sans-IO; the fuzz target drives it).
//! Produce keeps its record bytes as a range of the frame so they can be split out without a
//! copy.

use std::ops::Range;

use quiver_schema::frame::{parse_frame, vector_range, FrameError};
use quiver_schema::requests::FetchLimits;
use quiver_schema::wire::{self, ApiKey, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopicReq {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Handshake,
    Metadata {
        topics: Vec<String>,
    },
    CreateTopics(Vec<NewTopicReq>),
    DeleteTopics(Vec<String>),
    DescribeConfigs(Vec<String>),
    AlterConfigs {
        topic: String,
        configs: Vec<(String, String)>,
    },
    ListOffsets {
        topic: String,
        partition: i32,
        spec: wire::OffsetSpec,
        timestamp_ms: i64,
    },
    Produce {
        acks: wire::Acks,
        timeout_ms: u32,
        parts: Vec<ProducePartReq>,
    },
    Fetch {
        limits: FetchLimits,
        parts: Vec<FetchPartReq>,
    },
}

/// One partition of a produce request; its batches are a range of the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartReq {
    pub topic: String,
    pub partition: i32,
    pub records: Range<usize>,
}

/// One partition of a fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartReq {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: u32,
}

/// Most partitions one produce or fetch request may name.
pub const MAX_PARTS_PER_REQUEST: usize = 10_000;

impl Request {
    /// The partitions a data-plane request is for (it is served by their shard).
    pub fn partitions(&self) -> Vec<(&str, i32)> {
        match self {
            Self::ListOffsets {
                topic, partition, ..
            } => vec![(topic.as_str(), *partition)],
            Self::Produce { parts, .. } => parts
                .iter()
                .map(|p| (p.topic.as_str(), p.partition))
                .collect(),
            Self::Fetch { parts, .. } => parts
                .iter()
                .map(|p| (p.topic.as_str(), p.partition))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Requests that change metadata; the controller shard runs them.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            Self::CreateTopics(_) | Self::DeleteTopics(_) | Self::AlterConfigs { .. }
        )
    }
}

/// Why a frame could not become a request, with what the response must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub request_id: u64,
    pub api: ApiKey,
    pub code: ErrorCode,
    pub message: String,
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
fn check_disjoint(id: u64, api: ApiKey, parts: &[ProducePartReq]) -> Result<(), Refusal> {
    let mut ranges: Vec<&Range<usize>> = parts.iter().map(|p| &p.records).collect();
    ranges.sort_by_key(|r| r.start);
    if ranges.windows(2).any(|w| w[0].end > w[1].start) {
        return Err(refuse(
            id,
            api,
            ErrorCode::MalformedRequest,
            "two partitions' records overlap in the frame; give each partition its own vector",
        ));
    }
    Ok(())
}

/// Verifies `frame` and turns it into a request. Every failure becomes a [`Refusal`] carrying
/// the error code the response must have.
pub fn decode(frame: &[u8], max_frame_bytes: usize) -> Result<(u64, ApiKey, Request), Refusal> {
    let env = parse_frame(frame, max_frame_bytes)
        .map_err(|e: FrameError| refuse(0, ApiKey::Handshake, e.code(), e.to_string()))?;
    let (id, api) = (env.request_id(), env.api());
    if env.version() != crate::broker::API_VERSION {
        return Err(refuse(
            id,
            api,
            ErrorCode::UnsupportedVersion,
            format!(
                "{api:?} version {} is not supported; this node speaks version {}",
                env.version(),
                crate::broker::API_VERSION
            ),
        ));
    }
    let missing = || {
        refuse(
            id,
            api,
            ErrorCode::MalformedRequest,
            format!("the {api:?} request has no {api:?} body"),
        )
    };
    let request = match api {
        ApiKey::Handshake => {
            env.body_as_handshake_request().ok_or_else(missing)?;
            Request::Handshake
        }
        ApiKey::Metadata => Request::Metadata {
            topics: strings(env.body_as_metadata_request().ok_or_else(missing)?.topics()),
        },
        ApiKey::CreateTopics => {
            let b = env.body_as_create_topics_request().ok_or_else(missing)?;
            let topics = b
                .topics()
                .map(|ts| {
                    ts.iter()
                        .map(|t| NewTopicReq {
                            name: t.name().unwrap_or_default().to_string(),
                            partitions: t.partitions(),
                            configs: configs(t.configs()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Request::CreateTopics(topics)
        }
        ApiKey::DeleteTopics => Request::DeleteTopics(strings(
            env.body_as_delete_topics_request()
                .ok_or_else(missing)?
                .names(),
        )),
        ApiKey::DescribeConfigs => Request::DescribeConfigs(strings(
            env.body_as_describe_configs_request()
                .ok_or_else(missing)?
                .topics(),
        )),
        ApiKey::AlterConfigs => {
            let b = env.body_as_alter_configs_request().ok_or_else(missing)?;
            Request::AlterConfigs {
                topic: b.topic().unwrap_or_default().to_string(),
                configs: configs(b.configs()),
            }
        }
        ApiKey::ListOffsets => {
            let b = env.body_as_list_offsets_request().ok_or_else(missing)?;
            Request::ListOffsets {
                topic: b.topic().unwrap_or_default().to_string(),
                partition: b.partition(),
                spec: b.spec(),
                timestamp_ms: b.timestamp_ms(),
            }
        }
        ApiKey::Produce => {
            let b = env.body_as_produce_request().ok_or_else(missing)?;
            if !matches!(
                b.acks(),
                wire::Acks::None | wire::Acks::Leader | wire::Acks::All
            ) {
                return Err(refuse(
                    id,
                    api,
                    ErrorCode::InvalidRequest,
                    format!(
                        "acks {} is not one of 0 (none), 1 (leader), -1 (all)",
                        b.acks().0
                    ),
                ));
            }
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
                parts.push(ProducePartReq {
                    topic: e.topic().unwrap_or_default().to_string(),
                    partition: e.partition(),
                    records: range,
                });
            }
            check_disjoint(id, api, &parts)?;
            Request::Produce {
                acks: b.acks(),
                timeout_ms: b.timeout_ms(),
                parts,
            }
        }
        ApiKey::Fetch => {
            let b = env.body_as_fetch_request().ok_or_else(missing)?;
            let parts: Vec<FetchPartReq> = b
                .partitions()
                .map(|v| {
                    v.iter()
                        .map(|e| FetchPartReq {
                            topic: e.topic().unwrap_or_default().to_string(),
                            partition: e.partition(),
                            offset: e.offset(),
                            max_bytes: e.max_bytes(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            check_parts(id, api, parts.len())?;
            Request::Fetch {
                limits: FetchLimits {
                    max_wait_ms: b.max_wait_ms(),
                    min_bytes: b.min_bytes(),
                    max_bytes: b.max_bytes(),
                },
                parts,
            }
        }
        other => {
            return Err(refuse(
                id,
                other,
                ErrorCode::UnknownApi,
                format!(
                    "API {} is unknown to this node; it supports 0..={}",
                    other.0,
                    ApiKey::ENUM_MAX
                ),
            ))
        }
    };
    Ok((id, api, request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_schema::requests;

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
        let (id, api, req) = decode(&frame, 1 << 20).unwrap();
        assert_eq!((id, api), (5, ApiKey::Produce));
        assert_eq!(req.partitions(), vec![("t", 2), ("u", 0)]);
        let Request::Produce { parts, acks, .. } = req else {
            panic!()
        };
        assert_eq!(&frame[parts[0].records.clone()], b"abc");
        assert_eq!(&frame[parts[1].records.clone()], b"de");
        assert_eq!(acks, wire::Acks::Leader);
        let empty = requests::produce_many(5, wire::Acks::All, 100, &[]);
        assert_eq!(
            decode(&empty, 1 << 20).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
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
        assert_eq!(decode(&f, 1 << 20).unwrap().2.partitions(), vec![("t", 1)]);
        let c = requests::create_topics(
            7,
            &[requests::NewTopic {
                name: "n",
                partitions: 3,
                configs: &[("retention_ms", "5")],
            }],
        );
        assert_eq!(
            decode(&c, 1 << 20).unwrap().2,
            Request::CreateTopics(vec![NewTopicReq {
                name: "n".into(),
                partitions: 3,
                configs: vec![("retention_ms".into(), "5".into())]
            }])
        );
        let mut junk = 4u32.to_le_bytes().to_vec();
        junk.extend([1, 2, 3, 4]);
        assert_eq!(
            decode(&junk, 1 << 20).unwrap_err().code,
            ErrorCode::MalformedRequest
        );
        assert_eq!(
            decode(&frame, 8).unwrap_err().code,
            ErrorCode::FrameTooLarge
        );
    }
}
