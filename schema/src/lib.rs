//! # quiver-schema: the wire schema (next step, issue "The broker node")
//!
//! Will hold `quiver.fbs` (the request envelope and every API: Handshake, Metadata,
//! CreateTopics, DeleteTopics, Describe/AlterConfigs, ListOffsets, Produce, Fetch) and the
//! Rust code `flatc` generates from it, committed and checked for staleness in CI.
