//! # quiver-client: the Rust client (issue "The Rust client")
//!
//! Will hold the connection (tokio + quinn), Producer (batching, back-pressure, partitioner,
//! acks, retries, idempotence), Consumer (assign, seek, a `Stream` of records) and Admin.
//! Batches are built with `quiver_core::batch::BatchBuilder`, the same codec the broker
//! validates with.
