//! [`ClientError`]: every failure the client reports, each saying whether a retry can help.

use quiver_schema::wire::ErrorCode;

/// Every error the client returns; [`ClientError::is_retriable`] says whether a retry can help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A QUIC connection to a node could not be set up.
    #[error("cannot connect to {addr}: {reason}; is a quiver node running there (quiver serve)?")]
    Connect {
        /// The address that was dialled.
        addr: std::net::SocketAddr,
        /// Why the connection failed.
        reason: String,
    },
    /// None of the bootstrap brokers answered; holds the last error seen.
    #[error("no broker could be reached: {0}")]
    NoBroker(String),
    /// The TLS configuration could not be built (e.g. an unreadable CA file, certificate or
    /// key).
    #[error("TLS trust setup failed: {0}")]
    Trust(String),
    /// An established connection failed while sending a request or reading its response.
    #[error("the connection failed: {0}")]
    Connection(String),
    /// A response could not be parsed or lacked an expected part.
    #[error("the broker sent a malformed response: {0}")]
    Protocol(String),
    /// No response arrived within the client's `request_timeout_ms`.
    #[error("the request timed out after {timeout_ms} ms")]
    Timeout {
        /// The timeout that expired, in milliseconds.
        timeout_ms: u64,
    },
    /// The broker answered with an error code.
    #[error("the broker refused the request ({code:?}): {message}")]
    Broker {
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// The producer waited `max_block_ms` for buffer space and got none.
    #[error("the producer's buffer stayed full for max_block_ms = {max_block_ms}; the broker is slower than the producer or unreachable")]
    BufferFull {
        /// The producer's `max_block_ms`, in milliseconds.
        max_block_ms: u64,
    },
    /// A record, with a batch header, does not fit in one batch of `batch_bytes`.
    #[error("record of {size_bytes} bytes exceeds batch_bytes = {max_bytes}; raise batch_bytes (and the topic's max_message_bytes)")]
    RecordTooLarge {
        /// Estimated encoded size of the record, in bytes.
        size_bytes: usize,
        /// The producer's `batch_bytes`.
        max_bytes: usize,
    },
    /// A batch kept failing with retriable errors until `delivery_timeout_ms` ran out.
    #[error("not delivered within delivery_timeout_ms = {timeout_ms}: {last_error}")]
    DeliveryTimeout {
        /// The producer's `delivery_timeout_ms`, in milliseconds.
        timeout_ms: u64,
        /// The error of the last attempt.
        last_error: String,
    },
    /// A group member was assigned a partition the group has no committed offset for, and
    /// its `auto_offset_reset` is `Error`.
    #[error("group {group:?} has no committed offset for {topic}/{partition} and auto_offset_reset is Error; reset it (quiver group reset-offsets) or choose earliest/latest")]
    NoCommittedOffset {
        /// The group.
        group: String,
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A send of the open transaction failed: the transaction cannot commit; abort it
    /// (`abort_transaction`) and run it again.
    #[error("the transaction cannot commit: {0}")]
    TransactionAbortable(String),
    /// The producer or consumer is closed, or its background task has ended.
    #[error("the producer or consumer is closed")]
    Closed,
    /// An argument was refused before anything was sent (e.g. no broker address, or a
    /// partition that is not assigned).
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

    /// True when the client's view of where partitions live may be stale (`UnknownTopic`
    /// too: a node that restarted answers it until it has loaded the metadata; a topic that
    /// is really gone is then confirmed by the refresh).
    pub fn needs_metadata_refresh(&self) -> bool {
        matches!(
            self,
            Self::Broker {
                code: ErrorCode::NotOwner | ErrorCode::UnknownPartition | ErrorCode::UnknownTopic,
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
            | ErrorCode::CoordinatorLoading
    )
}

/// A `Result` whose error defaults to [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
