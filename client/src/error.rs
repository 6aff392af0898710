//! [`ClientError`]: every failure the client reports, each saying whether a retry can help.

use quiver_schema::wire::ErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}; is a quiver node running there (quiver serve)?")]
    Connect {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("no broker could be reached: {0}")]
    NoBroker(String),
    #[error("TLS trust setup failed: {0}")]
    Trust(String),
    #[error("the connection failed: {0}")]
    Connection(String),
    #[error("the broker sent a malformed response: {0}")]
    Protocol(String),
    #[error("the request timed out after {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("the broker refused the request ({code:?}): {message}")]
    Broker { code: ErrorCode, message: String },
    #[error("the producer's buffer stayed full for max_block_ms = {max_block_ms}; the broker is slower than the producer or unreachable")]
    BufferFull { max_block_ms: u64 },
    #[error("record of {size_bytes} bytes exceeds batch_bytes = {max_bytes}; raise batch_bytes (and the topic's max_message_bytes)")]
    RecordTooLarge { size_bytes: usize, max_bytes: usize },
    #[error("not delivered within delivery_timeout_ms = {timeout_ms}: {last_error}")]
    DeliveryTimeout { timeout_ms: u64, last_error: String },
    #[error("the producer or consumer is closed")]
    Closed,
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl ClientError {
    /// True when the same request may succeed if sent again (after a reconnect or a metadata
    /// refresh).
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::NoBroker(_)
            | Self::Connection(_)
            | Self::Timeout { .. }
            | Self::BufferFull { .. } => true,
            Self::Broker { code, .. } => code_is_retriable(*code),
            _ => false,
        }
    }

    /// True when the client's view of where partitions live may be stale.
    pub fn needs_metadata_refresh(&self) -> bool {
        matches!(
            self,
            Self::Broker {
                code: ErrorCode::NotOwner | ErrorCode::UnknownPartition,
                ..
            } | Self::Connect { .. }
                | Self::Connection(_)
        )
    }
}

/// Broker error codes that a retry may cure.
pub fn code_is_retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotOwner
            | ErrorCode::UnknownPartition
            | ErrorCode::Timeout
            | ErrorCode::TooManyRequests
            | ErrorCode::ShuttingDown
            | ErrorCode::DiskFull
            | ErrorCode::StorageError
    )
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
