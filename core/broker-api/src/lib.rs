//! # quiver-broker-api: the broker's service, as types
//!
//! What a broker is asked and what it answers, in no wire format. The node decodes a
//! protocol's frames into these types (`schema/` does it for Quiver's FlatBuffers protocol; a
//! Kafka wire codec would sit beside it and do the same), the broker serves them, and the node
//! encodes the answer in the protocol the request came in. A request forwarded to another
//! shard travels as these types, decoded once.
//!
//! - [`context`]: [`RequestContext`]: who asks (peer address, TLS client certificate,
//!   principal, client id). Authorization will read it.
//! - [`request`]: [`Request`], one variant per API. Produce record data are owned buffers
//!   (split out of the received frame without a copy), so the broker stamps offsets in place.
//! - [`response`]: [`Response`], one variant per API, with per-partition outcomes.
//! - [`error`]: [`ErrorCode`] and [`ApiError`]: every refusal, with a message saying what to do.
//!
//! No runtime dependencies: the client and the protocol codecs use this crate without
//! compiling the broker.

pub mod context;
pub mod error;
pub mod request;
pub mod response;

pub use context::{Principal, RequestContext};
pub use error::{ApiError, ErrorCode, Outcome};
pub use request::{
    Acks, Api, Fetch, FetchPartition, Heartbeat, Isolation, Nack, NewTopic, OffsetCommit,
    OffsetQuery, Produce, ProducePartition, Request, TopicPartition,
};
pub use response::{
    CommittedOffset, ControllerInfo, FetchPartOutcome, FollowerProgress, GroupDescription,
    GroupListing, GroupState, HandshakeInfo, HeartbeatOutcome, MemberDescription, NackReply,
    PartitionInfo, PartitionReplication, ProducePartOutcome, Response, TopicConfigs, TopicInfo,
    TopicResult,
};

/// The version of every API this build serves (1: Produce and Fetch carry many partitions).
pub const API_VERSION: u16 = 1;
