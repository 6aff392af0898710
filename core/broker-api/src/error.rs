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
    FencedMemberEpoch,
    UnknownMemberId,
    StaleGeneration,
    UnknownGroup,
    UnassignedPartition,
    GroupNotEmpty,
    LimitExceeded,
    CoordinatorLoading,
    /// An idempotent producer's batch skips sequences (a batch in between was lost).
    OutOfOrderSequence,
    /// An idempotent producer's epoch is older than the partition's: a newer instance took
    /// over.
    ProducerFenced,
    /// A transaction request that does not fit the transaction's state.
    InvalidTxnState,
    /// The previous transaction of this transactional id is still completing: retry.
    ConcurrentTransactions,
    /// The transactional id is unknown or held by another producer id.
    InvalidProducerIdMapping,
    /// The coordinator aborted the transaction (its timeout passed).
    TransactionAborted,
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

impl From<quiver_txn::TxnError> for ApiError {
    fn from(e: quiver_txn::TxnError) -> Self {
        use quiver_txn::TxnError as T;
        let code = match &e {
            T::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            T::InvalidProducerIdMapping(_) => ErrorCode::InvalidProducerIdMapping,
            T::ConcurrentTransactions(_) => ErrorCode::ConcurrentTransactions,
            T::InvalidTxnState { .. } => ErrorCode::InvalidTxnState,
            T::TransactionAborted(_) => ErrorCode::TransactionAborted,
            T::NeedsProducerId => ErrorCode::Unknown,
            T::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            T::Invalid(_) => ErrorCode::InvalidRequest,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<quiver_group::GroupError> for ApiError {
    fn from(e: quiver_group::GroupError) -> Self {
        use quiver_group::GroupError as G;
        let code = match &e {
            G::FencedMemberEpoch { .. } => ErrorCode::FencedMemberEpoch,
            G::UnknownMemberId { .. } => ErrorCode::UnknownMemberId,
            G::StaleGeneration { .. } => ErrorCode::StaleGeneration,
            G::UnknownGroup(_) => ErrorCode::UnknownGroup,
            G::UnassignedPartition { .. } => ErrorCode::UnassignedPartition,
            G::GroupNotEmpty(_) => ErrorCode::GroupNotEmpty,
            G::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            G::Invalid(_) => ErrorCode::InvalidRequest,
        };
        ApiError::new(code, e.to_string())
    }
}

impl ErrorCode {
    /// Every code, in the wire's order.
    pub const ALL: [ErrorCode; 34] = [
        ErrorCode::Unknown,
        ErrorCode::MalformedRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownApi,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownTopic,
        ErrorCode::UnknownPartition,
        ErrorCode::NotOwner,
        ErrorCode::TopicExists,
        ErrorCode::InvalidTopicName,
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidBatch,
        ErrorCode::CorruptData,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::DiskFull,
        ErrorCode::StorageError,
        ErrorCode::Timeout,
        ErrorCode::TooManyRequests,
        ErrorCode::ShuttingDown,
        ErrorCode::InvalidRequest,
        ErrorCode::FencedMemberEpoch,
        ErrorCode::UnknownMemberId,
        ErrorCode::StaleGeneration,
        ErrorCode::UnknownGroup,
        ErrorCode::UnassignedPartition,
        ErrorCode::GroupNotEmpty,
        ErrorCode::LimitExceeded,
        ErrorCode::CoordinatorLoading,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::ProducerFenced,
        ErrorCode::InvalidTxnState,
        ErrorCode::ConcurrentTransactions,
        ErrorCode::InvalidProducerIdMapping,
        ErrorCode::TransactionAborted,
    ];

    /// The code's name (as between nodes).
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// The code named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}
