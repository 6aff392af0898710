//! [`TxnError`]: what a transaction coordinator refuses, typed, with what to do.

/// Why a transaction request was refused. Nothing changed when it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Another producer instance with the same transactional id took over (a newer epoch),
    /// or the id is now another producer id.
    #[error("transactional id {transactional_id:?}: producer {producer_id} epoch {got} is fenced by epoch {current} (another instance called init_transactions); this instance must stop")]
    ProducerFenced {
        transactional_id: String,
        producer_id: i64,
        got: i16,
        current: i16,
    },
    /// The id is unknown, or its producer id is not the one the request names.
    #[error("transactional id {0:?} is not initialised for this producer id; call init_transactions first")]
    InvalidProducerIdMapping(String),
    /// The coordinator is writing the markers of the previous transaction: retry shortly.
    #[error("transactional id {0:?}: the previous transaction is still completing; retry")]
    ConcurrentTransactions(String),
    /// The request does not fit the transaction's state (end without begin, ...).
    #[error("transactional id {transactional_id:?}: {detail}")]
    InvalidTxnState {
        transactional_id: String,
        detail: String,
    },
    /// The coordinator aborted the transaction (its timeout passed): abort it on the
    /// producer side too and begin a new one.
    #[error("transactional id {0:?}: the transaction was aborted by the coordinator (it ran past its timeout); call abort_transaction and begin a new one")]
    TransactionAborted(String),
    /// The coordinator needs a fresh producer id for this request (the epoch is exhausted
    /// or the id is new): the node allocates one and asks again.
    #[error("a fresh producer id is needed")]
    NeedsProducerId,
    /// A node-wide limit.
    #[error("{what}: the limit is {limit}; {hint}")]
    LimitExceeded {
        what: String,
        limit: usize,
        hint: &'static str,
    },
    /// A malformed or out-of-bounds field.
    #[error("invalid transaction request: {0}")]
    Invalid(String),
}
