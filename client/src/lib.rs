//! # quiver-client: the Rust client
//!
//! - [`connection`]: [`Connection`] — one QUIC connection (tokio + quinn) to one shard, one
//!   bidirectional stream per request, TLS trust from a CA file, a pinned fingerprint, or a
//!   local node's data directory (never "verification off").
//! - Next (issue "The Rust client"): Producer (batching, back-pressure, partitioner, acks,
//!   retries, idempotence), Consumer (assign, seek, a `Stream` of records) and Admin, built on
//!   `quiver_core::batch::BatchBuilder`, the same codec the broker validates with.

pub mod connection;
pub mod trust;

pub use connection::{Connection, ResponseFrame};
pub use trust::TlsTrust;

/// Errors of the client, each saying whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}; is a quiver node running there (quiver serve)?")]
    Connect {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("TLS trust setup failed: {0}")]
    Trust(String),
    #[error("the connection failed: {0}")]
    Connection(String),
    #[error("the broker sent a malformed response: {0}")]
    Protocol(String),
    #[error("the request timed out after {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
}

impl ClientError {
    /// True when the same request may succeed if sent again (after a reconnect).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Connection(_) | Self::Timeout { .. }
        )
    }
}
