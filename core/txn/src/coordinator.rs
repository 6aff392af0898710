//! The transactional ids of one coordinator partition (sans-IO). Every method checks, then
//! returns the records that make its change (already applied here); the node persists them
//! before it answers, and writes the markers a method asks for before it calls
//! [`Coordinator::complete`].

use std::collections::HashMap;

use crate::error::TxnError;
use crate::record::Record;
use crate::types::{
    Ended, GroupOffsets, Limits, Markers, Status, TopicPartition, Transaction, LAST_PRODUCER_EPOCH,
};

/// What `init` gives the producer: its id and epoch, once `markers` (the abort of a
/// transaction the previous instance left open) are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    pub producer_id: i64,
    pub epoch: i16,
    pub records: Vec<Record>,
    pub markers: Option<Markers>,
}

/// What `end` gives the producer: the id and epoch of its next transaction, once the
/// markers are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub producer_id: i64,
    pub epoch: i16,
    pub records: Vec<Record>,
    pub markers: Option<Markers>,
}

/// The transactional ids whose coordinator this is.
#[derive(Debug, Clone, Default)]
pub struct Coordinator {
    ids: HashMap<String, Transaction>,
    limits: Limits,
}

impl Coordinator {
    pub fn new(limits: Limits) -> Self {
        Self {
            ids: HashMap::new(),
            limits,
        }
    }

    pub fn get(&self, transactional_id: &str) -> Option<&Transaction> {
        self.ids.get(transactional_id)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Applies a record (on load, and for every change made here).
    pub fn replay(&mut self, r: &Record) {
        match &r.value {
            Some(t) => {
                self.ids.insert(r.transactional_id.clone(), t.clone());
            }
            None => {
                self.ids.remove(&r.transactional_id);
            }
        }
    }

    fn emit(&mut self, out: &mut Vec<Record>, transactional_id: &str, value: Option<Transaction>) {
        let r = Record {
            transactional_id: transactional_id.to_string(),
            value,
        };
        self.replay(&r);
        out.push(r);
    }

    fn check_id(&self, transactional_id: &str) -> Result<(), TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::Invalid("the transactional id is empty".into()));
        }
        if transactional_id.len() > self.limits.max_id_bytes {
            return Err(TxnError::LimitExceeded {
                what: format!("a transactional id of {} bytes", transactional_id.len()),
                limit: self.limits.max_id_bytes,
                hint: "use a shorter transactional id",
            });
        }
        Ok(())
    }

    /// The id's producer id and epoch after `epoch`: the next epoch, or `spare` at epoch 0
    /// when the epochs of this id are used up.
    fn next_producer(
        producer_id: i64,
        epoch: i16,
        spare: Option<i64>,
    ) -> Result<(i64, i16), TxnError> {
        if epoch < LAST_PRODUCER_EPOCH {
            Ok((producer_id, epoch + 1))
        } else {
            spare.map(|id| (id, 0)).ok_or(TxnError::NeedsProducerId)
        }
    }

    /// Registers a transactional producer (a new instance fences the old one): its id, and
    /// an epoch no earlier instance holds. A transaction the old instance left open is
    /// aborted first (`markers`). `spare`: a fresh producer id, needed for a new id or an
    /// exhausted epoch (`NeedsProducerId` otherwise).
    pub fn init(
        &mut self,
        transactional_id: &str,
        timeout_ms: u32,
        now_ms: i64,
        spare: Option<i64>,
    ) -> Result<Init, TxnError> {
        self.check_id(transactional_id)?;
        if timeout_ms == 0 || timeout_ms > self.limits.max_timeout_ms {
            return Err(TxnError::LimitExceeded {
                what: format!("a transaction timeout of {timeout_ms} ms"),
                limit: self.limits.max_timeout_ms as usize,
                hint: "ask for a timeout between 1 ms and the node's transaction_max_timeout_ms",
            });
        }
        let mut records = Vec::new();
        let Some(t) = self.ids.get(transactional_id).cloned() else {
            if self.ids.len() >= self.limits.max_ids {
                return Err(TxnError::LimitExceeded {
                    what: format!("{} transactional ids on this coordinator", self.ids.len()),
                    limit: self.limits.max_ids,
                    hint: "reuse transactional ids (one per producer instance role)",
                });
            }
            let producer_id = spare.ok_or(TxnError::NeedsProducerId)?;
            let t = Transaction {
                producer_id,
                epoch: 0,
                timeout_ms,
                status: Status::Empty,
                partitions: Default::default(),
                offsets: Vec::new(),
                started_ms: now_ms,
                updated_ms: now_ms,
                marker_producer: (producer_id, 0),
                last_end: None,
            };
            self.emit(&mut records, transactional_id, Some(t));
            return Ok(Init {
                producer_id,
                epoch: 0,
                records,
                markers: None,
            });
        };
        if t.status.is_preparing() {
            return Err(TxnError::ConcurrentTransactions(
                transactional_id.to_string(),
            ));
        }
        let (producer_id, epoch) = Self::next_producer(t.producer_id, t.epoch, spare)?;
        let mut next = Transaction {
            producer_id,
            epoch,
            timeout_ms,
            updated_ms: now_ms,
            last_end: None,
            ..t.clone()
        };
        let markers = if t.status == Status::Ongoing {
            // The old instance's transaction: aborted with an epoch it does not hold.
            next.status = Status::PrepareAbort;
            next.marker_producer = (t.producer_id, t.epoch + 1);
            next.offsets.clear();
            Some(self.markers(transactional_id, &next))
        } else {
            next.status = Status::Empty;
            next.partitions.clear();
            next.offsets.clear();
            None
        };
        self.emit(&mut records, transactional_id, Some(next));
        Ok(Init {
            producer_id,
            epoch,
            records,
            markers,
        })
    }

    fn markers(&self, transactional_id: &str, t: &Transaction) -> Markers {
        let commit = t.status == Status::PrepareCommit;
        Markers {
            transactional_id: transactional_id.to_string(),
            producer_id: t.marker_producer.0,
            epoch: t.marker_producer.1,
            commit,
            partitions: t.partitions.iter().cloned().collect(),
            offsets: if commit {
                t.offsets.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// The id's state when `(producer_id, epoch)` is its current producer, ready for a
    /// transaction to be open (begun here if none is).
    fn open_for(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<Transaction, TxnError> {
        self.check_id(transactional_id)?;
        let t = self
            .ids
            .get(transactional_id)
            .ok_or_else(|| TxnError::InvalidProducerIdMapping(transactional_id.to_string()))?;
        if let Some(e) = t.last_end {
            if e.producer_id == producer_id && e.epoch == epoch {
                // A delayed request of an ended transaction: its epoch is over (KIP-890).
                return Err(if e.timed_out {
                    TxnError::TransactionAborted(transactional_id.to_string())
                } else {
                    TxnError::ProducerFenced {
                        transactional_id: transactional_id.to_string(),
                        producer_id,
                        got: epoch,
                        current: t.epoch,
                    }
                });
            }
        }
        self.check_current(transactional_id, t, producer_id, epoch)?;
        if t.status.is_preparing() {
            return Err(TxnError::ConcurrentTransactions(
                transactional_id.to_string(),
            ));
        }
        Ok(t.clone())
    }

    fn check_current(
        &self,
        transactional_id: &str,
        t: &Transaction,
        producer_id: i64,
        epoch: i16,
    ) -> Result<(), TxnError> {
        if t.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping(
                transactional_id.to_string(),
            ));
        }
        if epoch != t.epoch {
            return Err(TxnError::ProducerFenced {
                transactional_id: transactional_id.to_string(),
                producer_id,
                got: epoch,
                current: t.epoch,
            });
        }
        Ok(())
    }

    /// A transaction with nothing in it begins now.
    fn begin_if_closed(t: &mut Transaction, now_ms: i64) {
        if t.status != Status::Ongoing {
            t.status = Status::Ongoing;
            t.partitions.clear();
            t.offsets.clear();
            t.started_ms = now_ms;
        }
    }

    /// Adds partitions to the producer's transaction (beginning it): only then may they take
    /// its transactional writes. No records when all were in it already.
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
        now_ms: i64,
    ) -> Result<Vec<Record>, TxnError> {
        let mut t = self.open_for(transactional_id, producer_id, epoch)?;
        if t.status == Status::Ongoing && partitions.iter().all(|p| t.partitions.contains(p)) {
            return Ok(Vec::new());
        }
        Self::begin_if_closed(&mut t, now_ms);
        t.partitions.extend(partitions.iter().cloned());
        if t.partitions.len() > self.limits.max_partitions {
            return Err(TxnError::LimitExceeded {
                what: format!("a transaction over {} partitions", t.partitions.len()),
                limit: self.limits.max_partitions,
                hint: "commit more often, over fewer partitions",
            });
        }
        t.updated_ms = now_ms;
        let mut records = Vec::new();
        self.emit(&mut records, transactional_id, Some(t));
        Ok(records)
    }

    /// Adds a consumer group's offsets to the producer's transaction (beginning it): they are
    /// committed if and only if the transaction commits. A partition's later offset replaces
    /// its earlier one.
    pub fn add_offsets(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        offsets: GroupOffsets,
        now_ms: i64,
    ) -> Result<Vec<Record>, TxnError> {
        let mut t = self.open_for(transactional_id, producer_id, epoch)?;
        if offsets.group.is_empty() {
            return Err(TxnError::Invalid(
                "offsets sent to a transaction need a group id".into(),
            ));
        }
        if let Some((tp, o, _)) = offsets.offsets.iter().find(|(_, o, _)| *o < 0) {
            return Err(TxnError::Invalid(format!(
                "offset {o} for {}/{}: offsets are at least 0",
                tp.topic, tp.partition
            )));
        }
        Self::begin_if_closed(&mut t, now_ms);
        let slot = match t.offsets.iter().position(|g| g.group == offsets.group) {
            Some(i) => i,
            None => {
                t.offsets.push(GroupOffsets {
                    group: offsets.group.clone(),
                    offsets: Vec::new(),
                });
                t.offsets.len() - 1
            }
        };
        for (tp, offset, metadata) in offsets.offsets {
            let list = &mut t.offsets[slot].offsets;
            match list.iter_mut().find(|(p, _, _)| *p == tp) {
                Some(e) => *e = (tp, offset, metadata),
                None => list.push((tp, offset, metadata)),
            }
        }
        let total: usize = t.offsets.iter().map(|g| g.offsets.len()).sum();
        if total > self.limits.max_offsets {
            return Err(TxnError::LimitExceeded {
                what: format!("{total} offsets in one transaction"),
                limit: self.limits.max_offsets,
                hint: "commit more often",
            });
        }
        t.updated_ms = now_ms;
        let mut records = Vec::new();
        self.emit(&mut records, transactional_id, Some(t));
        Ok(records)
    }

    /// Ends the producer's transaction: the decision is durable with `records`, then the
    /// markers (carrying the next epoch, which fences any write of this transaction still
    /// on its way) go to every partition. The answer is the producer's next id and epoch.
    /// A retried end (the same producer, epoch and decision) is answered again.
    pub fn end(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
        spare: Option<i64>,
    ) -> Result<End, TxnError> {
        self.check_id(transactional_id)?;
        let t = self
            .ids
            .get(transactional_id)
            .cloned()
            .ok_or_else(|| TxnError::InvalidProducerIdMapping(transactional_id.to_string()))?;
        if let Some(e) = t.last_end {
            if e.producer_id == producer_id && e.epoch == epoch {
                if e.timed_out && commit {
                    return Err(TxnError::TransactionAborted(transactional_id.to_string()));
                }
                if e.committed != commit && !e.timed_out {
                    return Err(TxnError::InvalidTxnState {
                        transactional_id: transactional_id.to_string(),
                        detail: format!(
                            "the transaction was already {}",
                            if e.committed { "committed" } else { "aborted" }
                        ),
                    });
                }
                if t.status.is_preparing() {
                    return Err(TxnError::ConcurrentTransactions(
                        transactional_id.to_string(),
                    ));
                }
                return Ok(End {
                    producer_id: t.producer_id,
                    epoch: t.epoch,
                    records: Vec::new(),
                    markers: None,
                });
            }
        }
        self.check_current(transactional_id, &t, producer_id, epoch)?;
        match t.status {
            s if s.is_preparing() => Err(TxnError::ConcurrentTransactions(
                transactional_id.to_string(),
            )),
            Status::Ongoing => {
                let (next_id, next_epoch) = Self::next_producer(producer_id, epoch, spare)?;
                let next = Transaction {
                    producer_id: next_id,
                    epoch: next_epoch,
                    status: if commit {
                        Status::PrepareCommit
                    } else {
                        Status::PrepareAbort
                    },
                    updated_ms: now_ms,
                    marker_producer: (producer_id, epoch + 1),
                    last_end: Some(Ended {
                        producer_id,
                        epoch,
                        committed: commit,
                        timed_out: false,
                    }),
                    ..t
                };
                let markers = self.markers(transactional_id, &next);
                let mut records = Vec::new();
                self.emit(&mut records, transactional_id, Some(next));
                Ok(End {
                    producer_id: next_id,
                    epoch: next_epoch,
                    records,
                    markers: Some(markers),
                })
            }
            // Nothing was added: nothing to mark, the epoch stays.
            _ => Ok(End {
                producer_id,
                epoch,
                records: Vec::new(),
                markers: None,
            }),
        }
    }

    /// Every marker of the id's ending transaction is durable (and its offsets committed):
    /// the transaction is complete.
    pub fn complete(&mut self, transactional_id: &str, now_ms: i64) -> Vec<Record> {
        let mut records = Vec::new();
        let Some(t) = self.ids.get(transactional_id).cloned() else {
            return records;
        };
        let status = match t.status {
            Status::PrepareCommit => Status::CompleteCommit,
            Status::PrepareAbort => Status::CompleteAbort,
            _ => return records,
        };
        let next = Transaction {
            status,
            partitions: Default::default(),
            offsets: Vec::new(),
            updated_ms: now_ms,
            ..t
        };
        self.emit(&mut records, transactional_id, Some(next));
        records
    }

    /// Aborts open transactions past their timeout (their producer vanished, or is too slow:
    /// its next request is told `TransactionAborted`) and forgets ids idle past the
    /// expiration.
    pub fn tick(&mut self, now_ms: i64) -> (Vec<Record>, Vec<Markers>) {
        let mut records = Vec::new();
        let mut markers = Vec::new();
        let mut timed_out = Vec::new();
        let mut expired = Vec::new();
        for (id, t) in &self.ids {
            match t.status {
                Status::Ongoing
                    if now_ms.saturating_sub(t.started_ms) > i64::from(t.timeout_ms) =>
                {
                    timed_out.push(id.clone())
                }
                Status::Empty | Status::CompleteCommit | Status::CompleteAbort
                    if now_ms.saturating_sub(t.updated_ms) > self.limits.id_expiration_ms =>
                {
                    expired.push(id.clone())
                }
                _ => {}
            }
        }
        timed_out.sort();
        expired.sort();
        for id in timed_out {
            let Some(t) = self.ids.get(&id).cloned() else {
                continue;
            };
            // At most LAST_PRODUCER_EPOCH + 1 < MAX_EPOCH: the producer's next end still
            // has an epoch for its markers (and moves to a fresh id).
            let next_epoch = t.epoch + 1;
            let next = Transaction {
                epoch: next_epoch,
                status: Status::PrepareAbort,
                updated_ms: now_ms,
                marker_producer: (t.producer_id, next_epoch),
                offsets: Vec::new(),
                last_end: Some(Ended {
                    producer_id: t.producer_id,
                    epoch: t.epoch,
                    committed: false,
                    timed_out: true,
                }),
                ..t
            };
            markers.push(self.markers(&id, &next));
            self.emit(&mut records, &id, Some(next));
        }
        for id in expired {
            self.emit(&mut records, &id, None);
        }
        (records, markers)
    }

    /// The markers of every transaction decided but not completed (after a load: the node
    /// writes them again; a marker written twice changes nothing).
    pub fn preparing(&self) -> Vec<Markers> {
        let mut ids: Vec<&String> = self
            .ids
            .iter()
            .filter(|(_, t)| t.status.is_preparing())
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| self.markers(id, &self.ids[id]))
            .collect()
    }

    /// Every id and its state, sorted by id.
    pub fn list(&self) -> Vec<(String, Transaction)> {
        let mut out: Vec<(String, Transaction)> = self
            .ids
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests;
