//! Transactions on a [`Producer`] with a `transactional_id` (Kafka's API, on the corrected
//! protocol of KIP-890): `init_transactions` once (fences earlier instances of the id and
//! aborts what they left open), then per transaction `begin_transaction`, sends,
//! `send_offsets_to_transaction` (consumed offsets committed with the output, atomically),
//! `commit_transaction` or `abort_transaction`. Each end gives the producer a new epoch; its
//! sequences restart at 0.

use std::time::{Duration, Instant};

use quiver_broker_api::{OffsetCommit, Response, TopicPartition};
use quiver_schema::{requests, txn, wire::ErrorCode};

use super::Producer;
use crate::error::{ClientError, Result};

/// Who consumed the offsets a transaction commits: the group, and the member and epoch the
/// coordinator checks (a member that lost its partitions cannot commit them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    /// The consumer group.
    pub group: String,
    /// The member that consumed the input (empty: outside membership).
    pub member_id: String,
    /// Its epoch when it did.
    pub member_epoch: i32,
}

impl Producer {
    fn transactional_id(&self) -> Result<&str> {
        self.inner
            .config
            .transactional_id
            .as_deref()
            .ok_or_else(|| {
                ClientError::Invalid(
                    "this producer has no transactional_id; set ProducerConfig::transactional_id"
                        .into(),
                )
            })
    }

    fn identity(&self) -> Result<(i64, i16)> {
        self.inner.state().bumped_identity.ok_or_else(|| {
            ClientError::Invalid("call init_transactions before any transaction".into())
        })
    }

    /// Sends a request to the transaction coordinator (the node serving the transactional
    /// id's partition of `__transaction_state`), retrying
    /// what a retry may cure (the coordinator loading, the previous transaction still
    /// completing, a lost connection) within `delivery_timeout_ms`.
    async fn coordinator_request(&self, build: impl Fn(u64) -> bytes::Bytes) -> Result<Response> {
        let cfg = &self.inner.config;
        let deadline = Instant::now() + Duration::from_millis(cfg.delivery_timeout_ms);
        let mut backoff = Duration::from_millis(cfg.retry_backoff_ms.max(1));
        loop {
            let answer = self
                .inner
                .client
                .coordinator_request(quiver_txn::TXN_TOPIC, self.transactional_id()?, &build)
                .await
                .and_then(|resp| {
                    txn::read_response(&resp.envelope())
                        .ok_or_else(|| ClientError::Protocol("not a transaction response".into()))
                })
                .and_then(|r| match r {
                    Response::Refused { error, .. } => Err(broker_error(error)),
                    Response::InitProducerId(Err(e))
                    | Response::EndTxn(Err(e))
                    | Response::AddOffsetsToTxn(Err(e)) => Err(broker_error(e)),
                    ok => Ok(ok),
                });
            match answer {
                Err(e) if retriable(&e) && Instant::now() + backoff < deadline => {
                    tracing::debug!("transaction request retried: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Registers this producer's transactional id with its coordinator: a producer id and an
    /// epoch no earlier instance holds (they are fenced from now on), after a transaction
    /// they left open is aborted. Call once, before the first transaction.
    pub async fn init_transactions(&self) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        let timeout = self.inner.config.transaction_timeout_ms;
        let answer = self
            .coordinator_request(|rid| requests::init_producer_id(rid, Some(&id), timeout, None))
            .await?;
        let Response::InitProducerId(Ok(identity)) = answer else {
            return Err(ClientError::Protocol(
                "InitProducerId answered otherwise".into(),
            ));
        };
        self.take_identity(identity);
        Ok(())
    }

    /// The producer continues as `identity`: every partition's sequences restart at 0.
    fn take_identity(&self, identity: (i64, i16)) {
        let mut st = self.inner.state();
        st.bumped_identity = Some(identity);
        st.txn_open = false;
        st.txn_failed = None;
        for q in st.queues.values_mut() {
            q.producer = Some(identity);
            q.next_sequence = 0;
        }
    }

    /// Begins a transaction: the sends until its end belong to it.
    pub async fn begin_transaction(&self) -> Result<()> {
        self.transactional_id()?;
        self.identity()?;
        let mut st = self.inner.state();
        if st.txn_open {
            return Err(ClientError::Invalid(
                "a transaction is open already: commit or abort it first".into(),
            ));
        }
        st.txn_open = true;
        st.txn_failed = None;
        Ok(())
    }

    /// Adds a consumer group's offsets (the next offset to read, per partition) to the open
    /// transaction: the group commits them if and only if the transaction commits.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &GroupMetadata,
    ) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        let identity = self.identity()?;
        if !self.inner.state().txn_open {
            return Err(ClientError::Invalid(
                "no transaction is open: call begin_transaction first".into(),
            ));
        }
        let commit = OffsetCommit {
            group: group.group.clone(),
            member_id: group.member_id.clone(),
            member_epoch: group.member_epoch,
            offsets: offsets
                .iter()
                .map(|(tp, o)| (tp.clone(), *o, String::new()))
                .collect(),
        };
        self.coordinator_request(|rid| txn::add_offsets_to_txn(rid, &id, identity, &commit))
            .await
            .map(|_| ())
    }

    /// Commits the open transaction: every send of it is acknowledged first (a failed one
    /// fails the commit: abort then), then its markers are written; when this returns, its
    /// records are visible to read_committed consumers and its offsets are committed.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Aborts the open transaction: its records stay in the log, invisible to
    /// read_committed consumers; its offsets are not committed.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        let identity = self.identity()?;
        if !self.inner.state().txn_open {
            return Err(ClientError::Invalid(
                "no transaction is open: call begin_transaction first".into(),
            ));
        }
        self.flush().await;
        if commit {
            if let Some(e) = self.inner.state().txn_failed.clone() {
                return Err(ClientError::TransactionAbortable(format!(
                    "a send of the transaction failed ({e}); call abort_transaction"
                )));
            }
        }
        let answer = self
            .coordinator_request(|rid| txn::end_txn(rid, &id, identity, commit))
            .await?;
        let Response::EndTxn(Ok(next)) = answer else {
            return Err(ClientError::Protocol("EndTxn answered otherwise".into()));
        };
        self.take_identity(next);
        Ok(())
    }
}

fn broker_error(e: quiver_broker_api::ApiError) -> ClientError {
    ClientError::Broker {
        code: quiver_schema::codes::wire_code(e.code),
        message: e.message,
    }
}

fn retriable(e: &ClientError) -> bool {
    e.is_retriable()
        || matches!(
            e,
            ClientError::Broker {
                code: ErrorCode::ConcurrentTransactions,
                ..
            }
        )
}
