//! # quiver-schema: the wire protocol
//!
//! - `quiver.fbs` (beside `src/`): the schema — an [`wire::Envelope`] (request id, API,
//!   version, body union, error) and every API's request and response tables.
//! - `quiver_generated.rs`: what the pinned `flatc` generates from it (`tools/gen-schema`;
//!   CI fails when it is stale). Never edit by hand.
//! - [`frame`]: the sans-IO frame codec — length prefix, size limits, verification with
//!   bounded verifier options, typed [`frame::FrameError`]s.
//! - [`requests`]: encoders for every request (used by the client and by tests).
//! - [`decode`] / [`encode`]: the node's side — request frames into the broker's typed
//!   requests ([`quiver_broker_api::Request`]) and its responses into frames; [`codes`] maps
//!   the broker's names to the wire's. A Kafka wire codec would sit beside these.
//! - [`groups`]: the consumer group APIs, both directions (decode/encode on the node,
//!   request encoders and response readers for the client).
//! - [`txn`]: the transaction APIs (AddOffsetsToTxn, EndTxn), both directions.
//! - [`cluster_ops`]: the cluster operations (AlterReplicas, DecommissionNode,
//!   DescribeReplication), both directions.
//!
//! Record batches are `[ubyte]` vectors: [`frame::vector_range`] gives their position in the
//! received buffer so the broker can split them out without a copy.

pub mod cluster_ops;
pub mod codes;
pub mod decode;
pub mod encode;
pub mod frame;
pub mod groups;
pub mod requests;
mod responses;
pub mod txn;

#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, unsafe_op_in_unsafe_fn, mismatched_lifetime_syntaxes, deprecated, non_camel_case_types)]
mod quiver_generated;

pub use quiver_generated::quiver::wire;

/// The version of every API this build speaks (1: Produce and Fetch carry many partitions).
pub const API_VERSION: u16 = quiver_broker_api::API_VERSION;

/// Every API with the versions this build supports, as sent in the handshake.
pub fn supported_versions() -> Vec<wire::ApiVersion> {
    (wire::ApiKey::ENUM_MIN..=wire::ApiKey::ENUM_MAX)
        .map(|k| wire::ApiVersion::new(wire::ApiKey(k), API_VERSION, API_VERSION))
        .collect()
}
