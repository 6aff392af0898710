//! [`ErrorCode`] and [`ApiError`]: what a broker refuses or fails at, in any protocol.

/// Every error a request or one of its entries can end with. A protocol codec maps these to
/// its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unknown,
    MalformedRequest,
    UnsupportedVersion,
    UnknownApi,
    FrameTooLarge,
    UnknownTopic,
    UnknownPartition,
    NotOwner,
    TopicExists,
    InvalidTopicName,
    InvalidConfig,
    InvalidBatch,
    CorruptData,
    OffsetOutOfRange,
    DiskFull,
    StorageError,
    Timeout,
    TooManyRequests,
    ShuttingDown,
    InvalidRequest,
}

/// An error code with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Success, or why not.
pub type Outcome = Result<(), ApiError>;
