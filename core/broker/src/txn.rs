//! The transaction coordinators this shard runs: one [`quiver_txn::Coordinator`] per
//! partition of `__transaction_state` it owns, loaded from that partition on first use, its
//! records durable before any answer, placed and rebuilt like the group coordinators
//! ([`crate::groups`]).
//!
//! An ended transaction (commit, abort, a timeout, a new instance fencing an open one) is
//! driven to completion here: the decision is durable first (`Prepare*`), then the
//! transaction's offsets are committed through their group's coordinator, then a marker
//! (control batch, with the epoch the coordinator moved to) is made durable on every
//! partition of the transaction, and only then is the transaction complete and the producer
//! answered. A drive that fails is resumed by the ticker, as are the drives a restart cut
//! off (a marker written twice changes nothing).
//!
//! Partitions join a transaction from the produce path (KIP-890): a partition that receives
//! a producer's first transactional batch asks the coordinator to add it, durably, before it
//! appends ([`TxnCall::AddPartitions`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use glommio::sync::Semaphore;
use quiver_batch::control::{marker, ControlKind};
use quiver_broker_api::{ApiError, ErrorCode, OffsetCommit, Request, RequestContext, Response};
use quiver_group::types::TxnStamp;
use quiver_storage::producer_state::ProducerError;
use quiver_storage::StorageError;
use quiver_txn::coordinator::{End, Init};
use quiver_txn::types::GroupOffsets;

use crate::metadata::NodeId;
use quiver_txn::{Coordinator, Limits, Markers, Record, TxnError, TXN_TOPIC};

use crate::coordinator_log::{
    keep_if_leading, leading_term, loaded_slot, replay_partition, LoadedCoordinator,
    INTERNAL_TOPIC_CONFIGS,
};
use crate::forward::{ShardCall, ShardReply};
use crate::groups::wall_clock_ms;
use crate::produce::join_all;
use crate::routing;
use crate::shard::{storage_error, Shard};

pub use quiver_group::TopicPartition;

/// How the node runs transactions.
#[derive(Debug, Clone)]
pub struct TxnSettings {
    /// Partitions of `__transaction_state` when it is created (Kafka: 50).
    pub state_topic_partitions: u32,
    pub limits: Limits,
}

impl Default for TxnSettings {
    fn default() -> Self {
        Self {
            state_topic_partitions: 16,
            limits: Limits::default(),
        }
    }
}

/// How often loaded coordinators look for timed-out transactions and stalled drives.
const TICK: Duration = Duration::from_millis(250);
/// A drive not finished after this long (it failed, or a restart cut it off) is resumed.
const RESUME_AFTER_MS: i64 = 2_000;

/// A transaction step that runs on the shard owning what it touches.
pub enum TxnCall {
    /// Add partitions to the producer's transaction (on the coordinator's shard).
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<TopicPartition>,
    },
    /// Make a marker durable on each of these partitions (on their shard).
    WriteMarkers {
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: Vec<TopicPartition>,
    },
    /// Check (`validate_only`) or write a transaction's offsets (on the group's
    /// coordinator's shard); `stamp` names the transaction writing them.
    GroupOffsets {
        offsets: OffsetCommit,
        validate_only: bool,
        stamp: Option<TxnStamp>,
    },
}

/// Where a transactional id's coordinator runs.
enum Located {
    /// On this shard: its partition of `__transaction_state`, loaded.
    Here(i32, Rc<Slot>),
    Shard(usize),
}

pub(crate) struct Slot {
    coordinator: RefCell<Coordinator>,
    /// One change at a time: compute, stamp.
    gate: Semaphore,
    /// Transactional ids whose markers are being written.
    driving: RefCell<HashSet<String>>,
    /// Loaded from the log and not ticked yet: every prepared transaction is resumed.
    fresh: Cell<bool>,
    /// The term of the replicated partition's leadership it was loaded under (`None`: a
    /// single-replica partition): a slot of an earlier term is stale and reloads.
    term: Option<u64>,
}

impl LoadedCoordinator for Slot {
    fn loaded_term(&self) -> Option<u64> {
        self.term
    }
}

/// The coordinators of one shard.
#[derive(Default)]
pub struct TxnCoordinators {
    slots: RefCell<HashMap<i32, Rc<Slot>>>,
    ticker_running: Cell<bool>,
}

fn stopping() -> ApiError {
    ApiError::new(ErrorCode::ShuttingDown, "the node is stopping")
}

/// What a coordinator step returns: the answer, the records that make it, the markers to
/// write before answering.
type Step<T> = (T, Vec<Record>, Option<Markers>);

impl Shard {
    /// Serves a transaction request (InitProducerId with a transactional id, AddOffsetsToTxn,
    /// EndTxn) here or on its coordinator's shard.
    pub(crate) async fn serve_txn(
        self: Rc<Self>,
        ctx: RequestContext,
        request: Request,
    ) -> Response {
        let api = request.api();
        let Some(id) = request.transactional_id().map(str::to_string) else {
            return Response::Refused {
                api,
                error: ApiError::new(ErrorCode::InvalidRequest, "not a transaction request"),
            };
        };
        let (partition, slot) = match self.clone().txn_slot(&id).await {
            Ok(Located::Here(partition, slot)) => (partition, slot),
            Ok(Located::Shard(owner)) => return self.forward(owner, ctx, request).await,
            Err(error) => return Response::Refused { api, error },
        };
        let now = wall_clock_ms();
        match request {
            Request::InitProducerId {
                transaction_timeout_ms,
                ..
            } => Response::InitProducerId(
                self.txn_step(partition, &slot, |co, spare| {
                    let Init {
                        producer_id,
                        epoch,
                        records,
                        markers,
                    } = co.init(&id, transaction_timeout_ms, now, spare)?;
                    Ok(((producer_id, epoch), records, markers))
                })
                .await,
            ),
            Request::AddOffsetsToTxn {
                producer_id,
                producer_epoch,
                offsets,
                ..
            } => {
                // The member must be the group's now, as for a commit of its own.
                let checked = self
                    .clone()
                    .group_offsets(offsets.clone(), true, None)
                    .await;
                if let Err(e) = checked {
                    return Response::AddOffsetsToTxn(Err(e));
                }
                let group_offsets = GroupOffsets {
                    group: offsets.group,
                    offsets: offsets.offsets,
                };
                Response::AddOffsetsToTxn(
                    self.txn_step(partition, &slot, |co, _| {
                        let records = co.add_offsets(
                            &id,
                            producer_id,
                            producer_epoch,
                            group_offsets.clone(),
                            now,
                        )?;
                        Ok(((), records, None))
                    })
                    .await,
                )
            }
            Request::EndTxn {
                producer_id,
                producer_epoch,
                commit,
                ..
            } => Response::EndTxn(
                self.txn_step(partition, &slot, |co, spare| {
                    let End {
                        producer_id,
                        epoch,
                        records,
                        markers,
                    } = co.end(&id, producer_id, producer_epoch, commit, now, spare)?;
                    Ok(((producer_id, epoch), records, markers))
                })
                .await,
            ),
            other => Response::Refused {
                api: other.api(),
                error: ApiError::new(ErrorCode::InvalidRequest, "not a transaction request"),
            },
        }
    }

    /// Loads, in the background, every coordinator of the `__transaction_state` partitions
    /// this shard owns: their prepared transactions are driven to completion and their open
    /// ones time out, even if no producer of theirs ever returns.
    pub fn load_txn_coordinators(self: Rc<Self>) {
        let meta = self.metadata();
        let n = self.settings().shard_count;
        let Some(topic) = meta.topics.get(TXN_TOPIC) else {
            return;
        };
        // A replicated partition's coordinator loads when this node is elected its leader.
        let mine: Vec<i32> = (0..topic.partitions.len() as i32)
            .filter(|p| routing::owner(&meta, TXN_TOPIC, *p, n) == Some(self.id))
            .filter(|p| {
                self.locate(TXN_TOPIC, *p)
                    .is_ok_and(|log| log.group.is_none())
            })
            .collect();
        if mine.is_empty() {
            return;
        }
        let task = async move {
            for partition in mine {
                if let Err(e) = self.clone().txn_slot_of(partition).await {
                    tracing::warn!(
                        partition,
                        "loading a transaction coordinator failed; the next request retries: {e}"
                    );
                }
            }
        };
        glommio::spawn_local(task).detach();
    }

    /// Runs one transaction call here (another shard routed it to this one).
    pub(crate) async fn run_txn_call(self: Rc<Self>, call: TxnCall) -> Result<(), ApiError> {
        match call {
            TxnCall::AddPartitions {
                transactional_id,
                producer_id,
                epoch,
                partitions,
            } => {
                self.add_partitions_to_txn(&transactional_id, producer_id, epoch, partitions)
                    .await
            }
            TxnCall::WriteMarkers {
                producer_id,
                epoch,
                commit,
                partitions,
            } => {
                self.write_markers_here(producer_id, epoch, commit, &partitions)
                    .await
            }
            TxnCall::GroupOffsets {
                offsets,
                validate_only,
                stamp,
            } => self.group_offsets(offsets, validate_only, stamp).await,
        }
    }

    /// Sends `call` to shard `to` (or runs it here).
    pub(crate) async fn call_txn(
        self: &Rc<Self>,
        to: usize,
        call: TxnCall,
    ) -> Result<(), ApiError> {
        if to == self.id {
            return Box::pin(self.clone().run_txn_call(call)).await;
        }
        match self.call(to, ShardCall::Txn(Box::new(call))).await {
            ShardReply::Done(r) => r,
            ShardReply::Dropped(e) => Err(e),
            _ => Err(ApiError::new(
                ErrorCode::Unknown,
                format!("shard {to} answered another call"),
            )),
        }
    }

    /// The partition of `__transaction_state` and the shard coordinating `id`.
    fn txn_coordinator(&self, id: &str) -> Option<(i32, usize)> {
        routing::coordinator(&self.metadata(), TXN_TOPIC, id, self.settings().shard_count)
    }

    /// The coordinator of `id`: loaded here, or the shard that runs it. Creates
    /// `__transaction_state` on first use.
    async fn txn_slot(self: Rc<Self>, id: &str) -> Result<Located, ApiError> {
        if !self.metadata().topics.contains_key(TXN_TOPIC) {
            let partitions = self.settings().txn.state_topic_partitions.max(1) as i32;
            self.ensure_topic(TXN_TOPIC, partitions, INTERNAL_TOPIC_CONFIGS)
                .await?;
        }
        let Some((partition, owner)) = self.txn_coordinator(id) else {
            return Err(ApiError::new(
                ErrorCode::CoordinatorLoading,
                format!("{TXN_TOPIC} is not available yet; retry"),
            ));
        };
        if owner != self.id {
            return Ok(Located::Shard(owner));
        }
        let (partition, slot) = self.txn_slot_of(partition).await?;
        Ok(Located::Here(partition, slot))
    }

    /// The loaded coordinator of this shard's `partition` of `__transaction_state`.
    pub(crate) async fn txn_slot_of(
        self: Rc<Self>,
        partition: i32,
    ) -> Result<(i32, Rc<Slot>), ApiError> {
        let log = self.locate(TXN_TOPIC, partition)?;
        if let Some(s) = loaded_slot(&self.txns.slots, partition, &log) {
            return Ok((partition, s));
        }
        let term = leading_term(&log, &format!("{TXN_TOPIC}/{partition}")).await?;
        let mut coordinator = Coordinator::new(self.settings().txn.limits.clone());
        replay_partition(&log, |offset, key, value| {
            match Record::decode(key, value) {
                Ok(r) => coordinator.replay(&r),
                Err(e) => {
                    tracing::warn!(
                        offset,
                        "skipping a {TXN_TOPIC} record this node cannot read: {e}"
                    )
                }
            }
        })
        .await?;
        let slot = self
            .txns
            .slots
            .borrow_mut()
            .entry(partition)
            .or_insert_with(|| {
                Rc::new(Slot {
                    coordinator: RefCell::new(coordinator),
                    gate: Semaphore::new(1),
                    driving: RefCell::new(HashSet::new()),
                    fresh: Cell::new(true),
                    term,
                })
            })
            .clone();
        if slot.term != term {
            return Err(ApiError::new(
                ErrorCode::CoordinatorLoading,
                format!("{TXN_TOPIC}/{partition} changed leader while loading; retry"),
            ));
        }
        self.clone().start_txn_ticker();
        Ok((partition, slot))
    }

    /// Runs a coordinator step under its gate (asking the controller for a fresh producer id
    /// when the step needs one), makes its records durable, drives its markers, answers.
    async fn txn_step<T>(
        self: &Rc<Self>,
        partition: i32,
        slot: &Rc<Slot>,
        op: impl Fn(&mut Coordinator, Option<i64>) -> Result<Step<T>, TxnError>,
    ) -> Result<T, ApiError> {
        let mut spare = None;
        loop {
            let permit = slot.gate.acquire_permit(1).await.map_err(|_| stopping())?;
            let step = op(&mut slot.coordinator.borrow_mut(), spare);
            let (answer, records, markers) = match step {
                Err(TxnError::NeedsProducerId) if spare.is_none() => {
                    drop(permit);
                    spare = Some(self.fresh_producer_id().await?);
                    continue;
                }
                Err(e) => return Err(e.into()),
                Ok(s) => s,
            };
            self.persist_txn(partition, &records).await?;
            drop(permit);
            if let Some(m) = markers {
                self.clone().drive(partition, slot.clone(), m).await?;
            }
            return Ok(answer);
        }
    }

    /// Appends `records` and waits until they are durable; on failure the loaded state is
    /// dropped (memory must not hold what the log does not) and reloads on the next request.
    async fn persist_txn(&self, partition: i32, records: &[Record]) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        let written = async {
            self.append_records(
                TXN_TOPIC,
                partition,
                records.iter().map(Record::encode).collect(),
            )
            .await?
            .wait()
            .await
        }
        .await;
        if written.is_err() {
            self.txns.slots.borrow_mut().remove(&partition);
        }
        written
    }

    /// A fresh producer id from the controller.
    async fn fresh_producer_id(self: &Rc<Self>) -> Result<i64, ApiError> {
        let request = Request::InitProducerId {
            transactional_id: None,
            transaction_timeout_ms: 0,
            current: None,
        };
        match Box::pin(self.clone().handle(RequestContext::internal(), request)).await {
            Response::InitProducerId(Ok((id, _))) => Ok(id),
            Response::InitProducerId(Err(e)) | Response::Refused { error: e, .. } => Err(e),
            _ => Err(ApiError::new(ErrorCode::Unknown, "no producer id")),
        }
    }

    /// Completes an ended transaction: its offsets, then its markers, then `complete`.
    /// One drive per transactional id at a time (another one answers
    /// `ConcurrentTransactions`; the producer retries).
    async fn drive(
        self: Rc<Self>,
        partition: i32,
        slot: Rc<Slot>,
        m: Markers,
    ) -> Result<(), ApiError> {
        let id = m.transactional_id.clone();
        if !slot.driving.borrow_mut().insert(id.clone()) {
            return Err(TxnError::ConcurrentTransactions(id).into());
        }
        let result = async {
            for g in &m.offsets {
                let offsets = OffsetCommit {
                    group: g.group.clone(),
                    member_id: String::new(),
                    member_epoch: -1,
                    offsets: g.offsets.clone(),
                };
                // Stamped: a late call of this drive must not land after the producer's
                // next transaction's offsets.
                let stamp = TxnStamp {
                    transactional_id: id.clone(),
                    producer_id: m.producer_id,
                    epoch: m.epoch,
                };
                self.clone()
                    .group_offsets(offsets, false, Some(stamp))
                    .await?;
            }
            self.write_markers(&m).await?;
            let _permit = slot.gate.acquire_permit(1).await.map_err(|_| stopping())?;
            let records = slot.coordinator.borrow_mut().complete(&id, wall_clock_ms());
            self.persist_txn(partition, &records).await
        }
        .await;
        slot.driving.borrow_mut().remove(&id);
        if let Err(e) = &result {
            tracing::warn!(transactional_id = %id, "completing a transaction failed; it is resumed shortly: {e}");
        }
        result
    }

    /// A marker durable on every partition of `m`, each shard writing its own partitions.
    async fn write_markers(self: &Rc<Self>, m: &Markers) -> Result<(), ApiError> {
        let meta = self.metadata();
        let n = self.settings().shard_count;
        // Per leader node and shard: a partition's marker is written by its leader.
        let mut by_shard: BTreeMap<(NodeId, usize), Vec<TopicPartition>> = BTreeMap::new();
        for tp in &m.partitions {
            match routing::owner(&meta, &tp.topic, tp.partition, n) {
                Some(s) => by_shard
                    .entry((self.leader_node(&tp.topic, tp.partition), s))
                    .or_default()
                    .push(tp.clone()),
                // Deleted since: nothing left to mark.
                None => {
                    tracing::debug!(topic = %tp.topic, partition = tp.partition, "no marker for a deleted partition")
                }
            }
        }
        let results = Rc::new(RefCell::new(Vec::new()));
        let calls = by_shard.into_iter().map(|((node, shard), partitions)| {
            let results = results.clone();
            let this = self.clone();
            async move {
                let r = this
                    .call_txn_at(
                        node,
                        shard,
                        TxnCall::WriteMarkers {
                            producer_id: m.producer_id,
                            epoch: m.epoch,
                            commit: m.commit,
                            partitions,
                        },
                    )
                    .await;
                results.borrow_mut().push(r);
            }
        });
        join_all(calls.collect()).await;
        let results = results.take();
        results.into_iter().collect()
    }

    /// Appends a marker to each of `partitions` (this shard's), all at once, durable.
    async fn write_markers_here(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: &[TopicPartition],
    ) -> Result<(), ApiError> {
        let kind = if commit {
            ControlKind::Commit
        } else {
            ControlKind::Abort
        };
        let now = wall_clock_ms();
        let results = RefCell::new(Vec::new());
        let writes = partitions.iter().map(|tp| {
            let results = &results;
            async move {
                let r = async {
                    let p = match self.locate(&tp.topic, tp.partition) {
                        Ok(p) => p,
                        Err(e)
                            if matches!(
                                e.code,
                                ErrorCode::UnknownTopic | ErrorCode::UnknownPartition
                            ) =>
                        {
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    };
                    if p.group.is_some() {
                        // A replicated partition takes its marker through its Raft group, on
                        // its leader, like any batch (the coordinator sent it to the leader's
                        // node; a leader that moved meanwhile refuses, and the drive retries).
                        return self
                            .append_through_group(
                                &tp.topic,
                                &p,
                                tp.partition,
                                crate::acks::AckPoint::Durable,
                                vec![marker(producer_id, epoch, kind, now)],
                            )
                            .await
                            .map(|_| ());
                    }
                    let leader_epoch = p.replica.append_epoch(&tp.topic, tp.partition)?;
                    match p
                        .log
                        .append(marker(producer_id, epoch, kind, now), leader_epoch)
                        .await
                    {
                        // Its transaction is marked already (a retry, or a delayed call).
                        Err(StorageError::Producer(ProducerError::MarkerSuperseded { .. })) => {
                            Ok(())
                        }
                        Err(e) => Err(storage_error(&e)),
                        Ok(_) => Ok(()),
                    }
                }
                .await;
                results.borrow_mut().push(r);
            }
        });
        join_all(writes.collect()).await;
        results.into_inner().into_iter().collect()
    }

    /// Adds `partitions` to the producer's transaction, durably (from the produce path of
    /// the partitions' shard; routed to the coordinator's).
    pub(crate) async fn add_partitions_to_txn(
        self: Rc<Self>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ApiError> {
        // The coordinator is the leader of the id's partition of the state topic: on another
        // node, it is asked there.
        let elsewhere = TxnCall::AddPartitions {
            transactional_id: transactional_id.to_string(),
            producer_id,
            epoch,
            partitions: partitions.clone(),
        };
        if let Some((partition, shard)) = self.txn_coordinator(transactional_id) {
            let node = self.leader_node(TXN_TOPIC, partition);
            if node != self.settings().node_id {
                return self.call_txn_at(node, shard, elsewhere).await;
            }
        }
        let (partition, slot) = match self.clone().txn_slot(transactional_id).await? {
            Located::Here(partition, slot) => (partition, slot),
            Located::Shard(owner) => return self.call_txn(owner, elsewhere).await,
        };
        let now = wall_clock_ms();
        self.txn_step(partition, &slot, |co, _| {
            let records =
                co.add_partitions(transactional_id, producer_id, epoch, &partitions, now)?;
            Ok(((), records, None))
        })
        .await
    }

    /// Starts the shard's transaction ticker (once): timeouts, expiry, stalled drives.
    fn start_txn_ticker(self: Rc<Self>) {
        self.start_ticker(
            &self.txns.ticker_running,
            TICK,
            "transaction coordinator",
            |shard: Rc<Shard>| async move {
                let slots: Vec<(i32, Rc<Slot>)> = shard
                    .txns
                    .slots
                    .borrow()
                    .iter()
                    .map(|(p, s)| (*p, s.clone()))
                    .collect();
                for (partition, slot) in slots {
                    shard.clone().tick_txn_slot(partition, slot).await;
                }
                true
            },
        );
    }

    async fn tick_txn_slot(self: Rc<Self>, partition: i32, slot: Rc<Slot>) {
        let now = wall_clock_ms();
        let Ok(permit) = slot.gate.acquire_permit(1).await else {
            return;
        };
        // Its partition moved or changed leader: the new leader drives its transactions.
        let log = self.locate(TXN_TOPIC, partition);
        if !keep_if_leading(&self.txns.slots, partition, &slot, log) {
            return;
        }
        let (records, mut markers) = slot.coordinator.borrow_mut().tick(now);
        if let Err(e) = self.persist_txn(partition, &records).await {
            tracing::warn!(partition, "a transaction coordinator could not persist timeouts; it reloads from the log: {e}");
            return;
        }
        // Prepared transactions whose drive stalled (or that a restart cut off).
        let fresh = slot.fresh.replace(false);
        {
            let co = slot.coordinator.borrow();
            let driving = slot.driving.borrow();
            for m in co.preparing() {
                let stalled = co
                    .get(&m.transactional_id)
                    .is_some_and(|t| fresh || now.saturating_sub(t.updated_ms) > RESUME_AFTER_MS);
                if stalled
                    && !driving.contains(&m.transactional_id)
                    && !markers
                        .iter()
                        .any(|x| x.transactional_id == m.transactional_id)
                {
                    markers.push(m);
                }
            }
        }
        drop(permit);
        for m in markers {
            let shard = self.clone();
            let slot = slot.clone();
            glommio::spawn_local(async move {
                let _ = shard.drive(partition, slot, m).await;
            })
            .detach();
        }
    }
}
