//! # quiver-txn: the transaction coordinator, sans-IO
//!
//! The decisions of a transaction coordinator, with no I/O, no clock and no runtime: the
//! node's shard feeds it requests and the time, persists the records it returns to its
//! partition of `__transaction_state` before it answers, writes the commit or abort markers
//! it asks for, and replays the records on start. As in `quiver-group`, state changes only
//! by applying records, so a coordinator rebuilt from the log is the one that wrote it.
//!
//! The protocol is Kafka's transaction version 2 (KIP-890): the producer epoch is bumped at
//! every transaction end (the markers carry the new epoch, so a delayed write of the ended
//! transaction is fenced at the partition), and a partition takes a transactional write only
//! after the coordinator added it to the transaction.
//!
//! - [`types`]: a transaction's state and what the coordinator asks the node to do.
//! - [`coordinator`]: the transactional ids of one coordinator partition: init (fencing),
//!   add partitions, add offsets, end (commit/abort), timeouts, expiry.
//! - [`record`]: the records of `__transaction_state` and their codec.
//! - [`error`]: typed errors (`ProducerFenced`, `ConcurrentTransactions`, ...).

pub mod coordinator;
pub mod error;
pub mod record;
pub mod types;

pub use coordinator::Coordinator;
pub use error::TxnError;
pub use record::Record;
pub use types::{Ended, Limits, Markers, Status, Transaction};

/// The internal topic holding every transactional id's state.
pub const TXN_TOPIC: &str = "__transaction_state";
