//! What nodes say to each other on the internal protocol (sans-IO codec): Raft envelopes
//! between the members of their groups, and requests to the controller leader from the
//! other nodes (a topic to create, a node to register) with their replies.
//!
//! One message per internal frame. The first byte is the kind; a Raft envelope then carries
//! the sender's node id (8 bytes, big-endian), the id of the cluster the sender belongs to
//! (one length byte, then UTF-8; empty while it does not know it yet: a receiver of another
//! cluster drops the envelope) and the envelope in `quiver_raft::codec`'s format; requests and replies are JSON (small and rare). Decoding is bounded and typed: a
//! peer's bytes never panic the node (fuzzed: `cluster_message_decode`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::controller::ControllerError;
use crate::model::NodeId;
use crate::CommandError;

/// A Raft envelope without a cluster id (what nodes before cluster ids sent).
const RAFT: u8 = 1;
const REQUEST: u8 = 2;
const REPLY: u8 = 3;
/// A Raft envelope with its sender's cluster id.
const RAFT_IN_CLUSTER: u8 = 4;
/// A call between nodes' shards, and its answer.
const CALL: u8 = 5;
const CALL_REPLY: u8 = 6;
/// Longest cluster id a message carries.
pub const MAX_CLUSTER_ID_BYTES: usize = 255;

/// Most bytes of one request or reply (a command and its framing).
pub const MAX_JSON_BYTES: usize = crate::command::MAX_COMMAND_BYTES + 4096;

/// A change another node asks the controller leader to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControllerRequest {
    /// Placed by the leader (it knows every node), then proposed.
    CreateTopic {
        name: String,
        partitions: usize,
        replication_factor: usize,
        configs: BTreeMap<String, String>,
    },
    /// Proposed as is.
    Command { command: Command },
    /// Its replicas placed elsewhere by the leader, then proposed (`DecommissionNode`).
    Decommission { node: NodeId },
    /// A node beyond the voters (not in the seeds) asks to follow the controller's log: the
    /// leader adds it as a learner, reaching it at `address` until it registers.
    Join { node: NodeId, address: String },
}

/// Why the controller did not make a change, as the asking node maps it to its client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum Failure {
    TopicExists(String),
    UnknownTopic(String),
    /// The change is refused as asked (placement, invalid command).
    Invalid(String),
    /// No controller leader now, or it lost leadership before the change committed: retry.
    Unavailable(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Self::TopicExists(m) | Self::UnknownTopic(m) | Self::Invalid(m) => m,
            Self::Unavailable(m) => m,
        }
    }
}

impl From<&CommandError> for Failure {
    fn from(e: &CommandError) -> Self {
        match e {
            CommandError::TopicExists(_) => Self::TopicExists(e.to_string()),
            CommandError::UnknownTopic(_) => Self::UnknownTopic(e.to_string()),
            _ => Self::Invalid(e.to_string()),
        }
    }
}

impl From<&ControllerError> for Failure {
    fn from(e: &ControllerError) -> Self {
        match e {
            ControllerError::Invalid(c) => c.into(),
            ControllerError::Placement(_) | ControllerError::Decommission(_) => {
                Self::Invalid(e.to_string())
            }
            ControllerError::NotController { .. }
            | ControllerError::Propose(_)
            | ControllerError::DamagedSnapshot(_) => Self::Unavailable(e.to_string()),
        }
    }
}

/// One internal message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMessage {
    /// A Raft envelope (`quiver_raft::codec` bytes, decoded by the receiver's Raft driver)
    /// from a node of cluster `cluster` (empty: not known yet).
    Raft {
        from: NodeId,
        cluster: String,
        envelope: Vec<u8>,
    },
    Request {
        from: NodeId,
        id: u64,
        request: ControllerRequest,
    },
    Reply {
        id: u64,
        result: Result<(), Failure>,
    },
    /// A call from shard `from_shard` of node `from` to the shard it was sent to.
    Call {
        from: NodeId,
        from_shard: u32,
        id: u64,
        call: NodeCall,
    },
    CallReply {
        id: u64,
        result: Result<(), CallFailure>,
    },
}

/// What one node's shard asks another node's (transactions whose partitions other nodes
/// lead: Kafka's AddPartitionsToTxn and WriteTxnMarkers between brokers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum NodeCall {
    /// To the transaction coordinator: add these partitions (topic, partition).
    AddPartitionsToTxn {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    },
    /// To a partitions' leader: make a commit or abort marker durable on each.
    WriteTxnMarkers {
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: Vec<(String, i32)>,
    },
    /// To a group's coordinator: check or write a transaction's offsets (topic, partition,
    /// offset, metadata).
    TxnGroupOffsets {
        group: String,
        member_id: String,
        member_epoch: i32,
        offsets: Vec<(String, i32, i64, String)>,
        validate_only: bool,
        /// The transaction writing them: transactional id, producer id, marker epoch.
        #[serde(default)]
        txn: Option<(String, i64, i16)>,
    },
}

/// Why a call failed, as the callee answered it: its error code's name and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFailure {
    pub code: String,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
struct CallJson {
    from: NodeId,
    from_shard: u32,
    id: u64,
    call: NodeCall,
}

#[derive(Serialize, Deserialize)]
struct CallReplyJson {
    id: u64,
    result: Result<(), CallFailure>,
}

#[derive(Serialize, Deserialize)]
struct RequestJson {
    from: NodeId,
    id: u64,
    request: ControllerRequest,
}

#[derive(Serialize, Deserialize)]
struct ReplyJson {
    id: u64,
    result: Result<(), Failure>,
}

/// Why bytes from a peer are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("empty internal message")]
    Empty,
    #[error("unknown internal message kind {0} (a newer node? upgrade this one)")]
    UnknownKind(u8),
    #[error("internal message of {bytes} bytes exceeds {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("malformed internal message: {0}")]
    Malformed(String),
}

/// The sender's node id at the start of a Raft message's body, and what follows it.
fn sender(body: &[u8]) -> Result<(NodeId, &[u8]), MessageError> {
    let (from, rest) = body
        .split_first_chunk::<8>()
        .ok_or_else(|| MessageError::Malformed("no sender id".into()))?;
    let from = NodeId::try_from(i64::from_be_bytes(*from))
        .map_err(|_| MessageError::Malformed("sender id out of range".into()))?;
    Ok((from, rest))
}

impl NodeMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Raft {
                from,
                cluster,
                envelope,
            } => {
                // Cluster ids are short (`quiver-` and hex); a longer one is cut, never sent
                // past the bound a receiver enforces.
                let mut id = cluster.as_bytes();
                while id.len() > MAX_CLUSTER_ID_BYTES {
                    id = &id[..MAX_CLUSTER_ID_BYTES];
                }
                out.reserve(10 + id.len() + envelope.len());
                out.push(RAFT_IN_CLUSTER);
                out.extend_from_slice(&i64::from(*from).to_be_bytes());
                out.push(id.len() as u8);
                out.extend_from_slice(id);
                out.extend_from_slice(envelope);
            }
            Self::Request { from, id, request } => {
                out.push(REQUEST);
                let json = RequestJson {
                    from: *from,
                    id: *id,
                    request: request.clone(),
                };
                out.extend(serde_json::to_vec(&json).unwrap_or_default());
            }
            Self::Reply { id, result } => {
                out.push(REPLY);
                let json = ReplyJson {
                    id: *id,
                    result: result.clone(),
                };
                out.extend(serde_json::to_vec(&json).unwrap_or_default());
            }
            Self::Call {
                from,
                from_shard,
                id,
                call,
            } => {
                out.push(CALL);
                let json = CallJson {
                    from: *from,
                    from_shard: *from_shard,
                    id: *id,
                    call: call.clone(),
                };
                out.extend(serde_json::to_vec(&json).unwrap_or_default());
            }
            Self::CallReply { id, result } => {
                out.push(CALL_REPLY);
                let json = CallReplyJson {
                    id: *id,
                    result: result.clone(),
                };
                out.extend(serde_json::to_vec(&json).unwrap_or_default());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let (&kind, body) = bytes.split_first().ok_or(MessageError::Empty)?;
        let json_bound = |body: &[u8]| {
            if body.len() > MAX_JSON_BYTES {
                Err(MessageError::TooLarge {
                    bytes: body.len(),
                    max: MAX_JSON_BYTES,
                })
            } else {
                Ok(())
            }
        };
        match kind {
            RAFT => {
                let (from, envelope) = sender(body)?;
                Ok(Self::Raft {
                    from,
                    cluster: String::new(),
                    envelope: envelope.to_vec(),
                })
            }
            RAFT_IN_CLUSTER => {
                let (from, rest) = sender(body)?;
                let (&len, rest) = rest
                    .split_first()
                    .ok_or_else(|| MessageError::Malformed("no cluster id".into()))?;
                let (id, envelope) = rest
                    .split_at_checked(usize::from(len))
                    .ok_or_else(|| MessageError::Malformed("cluster id cut short".into()))?;
                let cluster = std::str::from_utf8(id)
                    .map_err(|_| MessageError::Malformed("cluster id is not UTF-8".into()))?
                    .to_string();
                Ok(Self::Raft {
                    from,
                    cluster,
                    envelope: envelope.to_vec(),
                })
            }
            REQUEST => {
                json_bound(body)?;
                let r: RequestJson = serde_json::from_slice(body)
                    .map_err(|e| MessageError::Malformed(e.to_string()))?;
                Ok(Self::Request {
                    from: r.from,
                    id: r.id,
                    request: r.request,
                })
            }
            REPLY => {
                json_bound(body)?;
                let r: ReplyJson = serde_json::from_slice(body)
                    .map_err(|e| MessageError::Malformed(e.to_string()))?;
                Ok(Self::Reply {
                    id: r.id,
                    result: r.result,
                })
            }
            CALL => {
                json_bound(body)?;
                let c: CallJson = serde_json::from_slice(body)
                    .map_err(|e| MessageError::Malformed(e.to_string()))?;
                Ok(Self::Call {
                    from: c.from,
                    from_shard: c.from_shard,
                    id: c.id,
                    call: c.call,
                })
            }
            CALL_REPLY => {
                json_bound(body)?;
                let r: CallReplyJson = serde_json::from_slice(body)
                    .map_err(|e| MessageError::Malformed(e.to_string()))?;
                Ok(Self::CallReply {
                    id: r.id,
                    result: r.result,
                })
            }
            k => Err(MessageError::UnknownKind(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<NodeMessage> {
        vec![
            NodeMessage::Raft {
                from: 3,
                cluster: String::new(),
                envelope: vec![1, 2, 3],
            },
            NodeMessage::Raft {
                from: 2,
                cluster: "quiver-0123abcd".into(),
                envelope: vec![9; 40],
            },
            NodeMessage::Request {
                from: 2,
                id: 9,
                request: ControllerRequest::CreateTopic {
                    name: "t".into(),
                    partitions: 3,
                    replication_factor: 1,
                    configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
                },
            },
            NodeMessage::Request {
                from: 1,
                id: 10,
                request: ControllerRequest::Command {
                    command: Command::DeleteTopic { name: "t".into() },
                },
            },
            NodeMessage::Reply {
                id: 9,
                result: Err(Failure::TopicExists("topic \"t\" already exists".into())),
            },
            NodeMessage::Reply {
                id: 10,
                result: Ok(()),
            },
            NodeMessage::Call {
                from: 2,
                from_shard: 1,
                id: 11,
                call: NodeCall::WriteTxnMarkers {
                    producer_id: 9,
                    epoch: 1,
                    commit: true,
                    partitions: vec![("t".into(), 3)],
                },
            },
            NodeMessage::CallReply {
                id: 11,
                result: Err(CallFailure {
                    code: "NotOwner".into(),
                    message: "node 3 leads t/3".into(),
                }),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            assert_eq!(NodeMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn an_envelope_of_a_node_before_cluster_ids_has_none() {
        let mut old = vec![RAFT];
        old.extend_from_slice(&5i64.to_be_bytes());
        old.extend_from_slice(&[7, 7]);
        assert_eq!(
            NodeMessage::decode(&old).unwrap(),
            NodeMessage::Raft {
                from: 5,
                cluster: String::new(),
                envelope: vec![7, 7]
            }
        );
    }

    #[test]
    fn cut_or_damaged_bytes_are_typed_errors_never_panics() {
        assert_eq!(NodeMessage::decode(&[]), Err(MessageError::Empty));
        assert_eq!(
            NodeMessage::decode(&[77]),
            Err(MessageError::UnknownKind(77))
        );
        for m in samples() {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                let _ = NodeMessage::decode(&bytes[..cut]);
            }
            let mut seed = 0x9E37_79B9_u64;
            for _ in 0..2_000 {
                let mut b = bytes.clone();
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % b.len();
                b[at] ^= (seed >> 13) as u8 | 1;
                let _ = NodeMessage::decode(&b);
            }
        }
        let huge = [&[REQUEST][..], &vec![b' '; MAX_JSON_BYTES + 1]].concat();
        assert!(matches!(
            NodeMessage::decode(&huge),
            Err(MessageError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_fuzzers_seeds_are_valid_messages() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds/cluster_message_decode");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let m = NodeMessage::decode(&bytes).unwrap();
            assert_eq!(NodeMessage::decode(&m.encode()).unwrap(), m);
            seen += 1;
        }
        assert!(seen >= 5);
    }
}
