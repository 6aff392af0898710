//! The consumer group coordinators this shard runs: one [`quiver_group::Coordinator`] per
//! partition of `__consumer_offsets` the shard owns, loaded from that partition on first use
//! (the log is the truth), driven by requests and a ticker, its records appended (durable)
//! before any answer goes out.
//!
//! - The topic is created on first use (`NodeSettings::groups.offsets_topic_partitions`).
//! - A group's requests are routed to the shard owning `hash(group) % N` ([`crate::routing`]).
//! - Requests of one coordinator run one at a time (its gate): the log's order is the order
//!   the state changed in.
//! - An append that fails drops the loaded state; the next request reloads it from the log,
//!   so memory never holds a change the log does not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use quiver_broker_api::{
    ApiError, ErrorCode, GroupListing, NackReply, Request, RequestContext, Response,
};
use quiver_group::types::TopicCounts;
use quiver_group::{Coordinator, GroupConfig, Limits, NackOutcome, Origin, Record, OFFSETS_TOPIC};

use crate::coordinator_log::{
    keep_if_leading, leading_term, loaded_slot, read_barrier, replay_partition, LoadedCoordinator,
    PendingDurability, INTERNAL_TOPIC_CONFIGS,
};
use crate::partition::Partition;
use crate::routing;
use crate::shard::Shard;

/// How the node runs consumer groups.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Partitions of `__consumer_offsets` when it is created (Kafka's default: 50; 16 here,
    /// for nodes of a few cores).
    pub offsets_topic_partitions: u32,
    pub limits: Limits,
    /// What a new group starts with (`quiver group alter-config` changes one group).
    pub defaults: GroupConfig,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            offsets_topic_partitions: 16,
            limits: Limits::default(),
            defaults: GroupConfig::default(),
        }
    }
}

/// How often loaded coordinators expire sessions.
const TICK: Duration = Duration::from_millis(100);

pub(crate) struct Slot {
    coordinator: RefCell<Coordinator>,
    /// One request at a time: compute, append, answer.
    gate: Semaphore,
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
pub struct GroupCoordinators {
    slots: RefCell<HashMap<i32, Rc<Slot>>>,
    started: Instant,
    ticker_running: std::cell::Cell<bool>,
}

impl Default for GroupCoordinators {
    fn default() -> Self {
        Self {
            slots: RefCell::new(HashMap::new()),
            started: Instant::now(),
            ticker_running: std::cell::Cell::new(false),
        }
    }
}

impl GroupCoordinators {
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn refused(api: quiver_broker_api::Api, error: ApiError) -> Response {
    Response::Refused { api, error }
}

impl Shard {
    /// Serves a consumer group request here (routing sent it to its coordinator's shard, or
    /// here while `__consumer_offsets` did not exist yet).
    pub(crate) async fn serve_group(
        self: Rc<Self>,
        ctx: RequestContext,
        request: Request,
    ) -> Response {
        let api = request.api();
        if matches!(request, Request::ListGroups) {
            return Response::ListGroups(Ok(self.list_groups()));
        }
        let Some(group) = request.group().map(str::to_string) else {
            return refused(
                api,
                ApiError::new(ErrorCode::InvalidRequest, "not a group request"),
            );
        };
        if let Err(e) = self.ensure_offsets_topic().await {
            return refused(api, e);
        }
        let meta = self.metadata();
        let n = self.settings().shard_count;
        let Some((partition, owner)) = routing::coordinator(&meta, OFFSETS_TOPIC, &group, n) else {
            return refused(
                api,
                ApiError::new(
                    ErrorCode::CoordinatorLoading,
                    format!("{OFFSETS_TOPIC} is not available yet; retry"),
                ),
            );
        };
        if owner != self.id {
            return self.forward(owner, ctx, request).await;
        }
        let slot = match self.clone().coordinator_slot(partition).await {
            Ok(s) => s,
            Err(e) => return refused(api, e),
        };
        let Ok(permit) = slot.gate.acquire_permit(1).await else {
            return refused(
                api,
                ApiError::new(ErrorCode::ShuttingDown, "the node is stopping"),
            );
        };
        // A failed record's origin, read from the record when the group retries through
        // delay topics (a copy there names its source and its failures so far).
        let mut failed_record = None;
        let mut origin = Origin::default();
        if let Request::Nack(n) = &request {
            let delayed = slot
                .coordinator
                .borrow()
                .group(&n.group)
                .is_some_and(|g| g.config.retry_levels > 0);
            if delayed {
                match self
                    .read_record(&n.tp.topic, n.tp.partition, n.offset)
                    .await
                {
                    Ok(r) => {
                        origin = crate::dead_letter::origin_of(&r);
                        failed_record = Some(r);
                    }
                    Err(e) => return Response::Nack(Err(e)),
                }
            }
        }
        let now = self.groups.now_ms();
        let counts = self.topic_counts();
        // Answers read from memory wait until what memory shows is committed.
        let barrier = match &request {
            Request::OffsetFetch { .. } | Request::DescribeGroup { .. } => self
                .locate(OFFSETS_TOPIC, partition)
                .ok()
                .and_then(|log| read_barrier(&log, self.replication().as_deref())),
            _ => None,
        };
        // A failed record that goes to a delay or dead-letter topic: moved after its count
        // persists.
        let mut dead_letter = None;
        let (response, records) = {
            let mut co = slot.coordinator.borrow_mut();
            match request {
                Request::ConsumerGroupHeartbeat(hb) => match co.heartbeat(&hb, now, &counts) {
                    Ok((o, r)) => (Response::ConsumerGroupHeartbeat(Ok(o)), r),
                    Err(e) => (Response::ConsumerGroupHeartbeat(Err(e.into())), Vec::new()),
                },
                Request::OffsetCommit(c) => match co.commit(&c, now, wall_clock_ms()) {
                    Ok((outcomes, r)) => (
                        Response::OffsetCommit {
                            outcome: Ok(()),
                            partitions: c
                                .offsets
                                .iter()
                                .zip(outcomes)
                                .map(|((tp, _, _), o)| (tp.clone(), o.map_err(ApiError::from)))
                                .collect(),
                        },
                        r,
                    ),
                    Err(e) => (
                        Response::OffsetCommit {
                            outcome: Err(e.into()),
                            partitions: Vec::new(),
                        },
                        Vec::new(),
                    ),
                },
                Request::OffsetFetch { group, partitions } => (
                    Response::OffsetFetch(Ok(co.committed(&group, &partitions))),
                    Vec::new(),
                ),
                Request::DescribeGroup { group } => (
                    Response::DescribeGroup(co.describe(&group).map_err(ApiError::from)),
                    Vec::new(),
                ),
                Request::DeleteGroup { group, force } => match co.delete(&group, force, now) {
                    Ok(r) => (Response::DeleteGroup(Ok(())), r),
                    Err(e) => (Response::DeleteGroup(Err(e.into())), Vec::new()),
                },
                Request::Nack(n) => match co.nack(&n, &origin, now, wall_clock_ms()) {
                    Ok((
                        NackOutcome::Redeliver {
                            deliveries,
                            after_ms,
                        },
                        r,
                    )) => (
                        Response::Nack(Ok(NackReply {
                            deliveries,
                            redeliver_after_ms: Some(after_ms),
                            dead_letter: None,
                            delayed_until_ms: None,
                        })),
                        r,
                    ),
                    Ok((
                        NackOutcome::DeadLetter {
                            dlq_topic,
                            delivery,
                        },
                        r,
                    )) => {
                        dead_letter = Some((n, dlq_topic, delivery, None));
                        (
                            refused(api, ApiError::new(ErrorCode::Unknown, "not moved")),
                            r,
                        )
                    }
                    Ok((
                        NackOutcome::Retry {
                            topic,
                            not_before_ms,
                            delivery,
                        },
                        r,
                    )) => {
                        dead_letter = Some((n, topic, delivery, Some(not_before_ms)));
                        (
                            refused(api, ApiError::new(ErrorCode::Unknown, "not moved")),
                            r,
                        )
                    }
                    Err(e) => (Response::Nack(Err(e.into())), Vec::new()),
                },
                Request::AlterGroupConfig { group, configs } => {
                    match co.alter_config_keys(&group, &configs, now) {
                        Ok(r) => (Response::AlterGroupConfig(Ok(())), r),
                        Err(e) => (Response::AlterGroupConfig(Err(e.into())), Vec::new()),
                    }
                }
                other => {
                    return refused(
                        other.api(),
                        ApiError::new(ErrorCode::InvalidRequest, "not a group request"),
                    )
                }
            }
        };
        let failed = |e: ApiError| {
            // Memory holds changes the log does not: forget it; the next request reloads.
            self.groups.slots.borrow_mut().remove(&partition);
            refused(api, e)
        };
        let durability = if records.is_empty() {
            None
        } else {
            match self.persist_start(partition, &records).await {
                Ok(d) => Some(d),
                Err(e) => return failed(e),
            }
        };
        let Some((n, dlq_topic, delivery, not_before_ms)) = dead_letter else {
            // Stamped in order; the next request may compute and stamp while these records
            // are written (the log is a prefix: if they fail, so does everything after).
            drop(permit);
            if let Some(d) = durability {
                if let Err(e) = d.wait().await {
                    return failed(e);
                }
            }
            if let Some(b) = barrier {
                if let Err(e) = b.wait().await {
                    return refused(api, e);
                }
            }
            return response;
        };
        if let Some(d) = durability {
            if let Err(e) = d.wait().await {
                return failed(e);
            }
        }
        let moved = self
            .dead_letter(
                &slot.coordinator,
                partition,
                &n,
                crate::dead_letter::Move {
                    to: &dlq_topic,
                    delivery,
                    not_before_ms,
                    record: failed_record,
                },
            )
            .await;
        match moved {
            Ok(reply) => Response::Nack(Ok(reply)),
            Err(e) => {
                // The move is resumable (its records say how far it got): the member nacks
                // again. Reload, in case a step's records did not all persist.
                tracing::warn!(group = %n.group, "moving a record to {dlq_topic} failed; the next nack resumes it: {e}");
                self.groups.slots.borrow_mut().remove(&partition);
                Response::Nack(Err(e))
            }
        }
    }

    /// Creates `__consumer_offsets` on first use.
    async fn ensure_offsets_topic(self: &Rc<Self>) -> Result<(), ApiError> {
        if self.metadata().topics.contains_key(OFFSETS_TOPIC) {
            return Ok(());
        }
        let partitions = self.settings().groups.offsets_topic_partitions.max(1) as i32;
        self.ensure_topic(OFFSETS_TOPIC, partitions, INTERNAL_TOPIC_CONFIGS)
            .await
    }

    /// A transaction's offsets for a group: checked (`validate_only`: the member may commit
    /// now) when they are added to the transaction, written when it commits. Runs on the
    /// group's coordinator's shard.
    pub(crate) async fn group_offsets(
        self: Rc<Self>,
        offsets: quiver_broker_api::OffsetCommit,
        validate_only: bool,
        stamp: Option<quiver_group::types::TxnStamp>,
    ) -> Result<(), ApiError> {
        self.ensure_offsets_topic().await?;
        let meta = self.metadata();
        let n = self.settings().shard_count;
        let Some((partition, owner)) =
            routing::coordinator(&meta, OFFSETS_TOPIC, &offsets.group, n)
        else {
            return Err(ApiError::new(
                ErrorCode::CoordinatorLoading,
                format!("{OFFSETS_TOPIC} is not available yet; retry"),
            ));
        };
        // The group's coordinator: the leader of its partition, on the owning shard.
        let node = self.leader_node(OFFSETS_TOPIC, partition);
        if owner != self.id || node != self.settings().node_id {
            return self
                .call_txn_at(
                    node,
                    owner,
                    crate::txn::TxnCall::GroupOffsets {
                        offsets,
                        validate_only,
                        stamp,
                    },
                )
                .await;
        }
        let slot = self.clone().coordinator_slot(partition).await?;
        let permit = slot
            .gate
            .acquire_permit(1)
            .await
            .map_err(|_| ApiError::new(ErrorCode::ShuttingDown, "the node is stopping"))?;
        if validate_only {
            return slot
                .coordinator
                .borrow()
                .check_committer(&offsets)
                .map_err(ApiError::from);
        }
        let records = slot.coordinator.borrow_mut().commit_from_transaction(
            &offsets,
            stamp.as_ref(),
            self.groups.now_ms(),
            wall_clock_ms(),
        );
        if records.is_empty() {
            return Ok(());
        }
        let pending = self.persist_start(partition, &records).await;
        drop(permit);
        let written = match pending {
            Ok(d) => d.wait().await,
            Err(e) => Err(e),
        };
        if written.is_err() {
            self.groups.slots.borrow_mut().remove(&partition);
        }
        written
    }

    fn list_groups(&self) -> Vec<GroupListing> {
        let slots: Vec<Rc<Slot>> = self.groups.slots.borrow().values().cloned().collect();
        let mut out: Vec<GroupListing> = slots
            .iter()
            .flat_map(|s| s.coordinator.borrow().list())
            .map(|(group, state, members)| GroupListing {
                group,
                state: state.name().to_string(),
                members: members as u32,
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Partition counts of every topic (what assignors divide).
    fn topic_counts(&self) -> TopicCounts {
        self.metadata()
            .topics
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.len() as i32))
            .collect()
    }

    /// The loaded coordinator of `partition`, loading it from the log when needed.
    pub(crate) async fn coordinator_slot(
        self: Rc<Self>,
        partition: i32,
    ) -> Result<Rc<Slot>, ApiError> {
        let log = self.locate(OFFSETS_TOPIC, partition)?;
        if let Some(s) = loaded_slot(&self.groups.slots, partition, &log) {
            return Ok(s);
        }
        let term = leading_term(&log, &format!("{OFFSETS_TOPIC}/{partition}")).await?;
        let settings = &self.settings().groups;
        let mut coordinator = Coordinator::new(settings.limits.clone(), settings.defaults.clone());
        load(&log, &mut coordinator, self.groups.now_ms()).await?;
        // Another request may have loaded it while this one read.
        let slot = self
            .groups
            .slots
            .borrow_mut()
            .entry(partition)
            .or_insert_with(|| {
                Rc::new(Slot {
                    coordinator: RefCell::new(coordinator),
                    gate: Semaphore::new(1),
                    term,
                })
            })
            .clone();
        if slot.term != term {
            return Err(ApiError::new(
                ErrorCode::CoordinatorLoading,
                format!("{OFFSETS_TOPIC}/{partition} changed leader while loading; retry"),
            ));
        }
        self.clone().start_group_ticker();
        Ok(slot)
    }

    /// Appends `records` to the coordinator's partition, durable before it returns.
    pub(crate) async fn persist(&self, partition: i32, records: &[Record]) -> Result<(), ApiError> {
        self.persist_start(partition, records).await?.wait().await
    }

    /// Stamps `records` into the coordinator's partition (in call order) and returns what
    /// to await for their durability: a request stamps under its coordinator's gate and waits
    /// outside it, so the records of concurrent requests share one write (group commit).
    async fn persist_start(
        &self,
        partition: i32,
        records: &[Record],
    ) -> Result<PendingDurability, ApiError> {
        self.append_records(
            OFFSETS_TOPIC,
            partition,
            records.iter().map(Record::encode).collect(),
        )
        .await
    }

    /// Starts the shard's ticker (once): it expires sessions of every loaded coordinator.
    fn start_group_ticker(self: Rc<Self>) {
        self.start_ticker(
            &self.groups.ticker_running,
            TICK,
            "group coordinator",
            |shard: Rc<Shard>| async move {
                let slots: Vec<(i32, Rc<Slot>)> = shard
                    .groups
                    .slots
                    .borrow()
                    .iter()
                    .map(|(p, s)| (*p, s.clone()))
                    .collect();
                for (partition, slot) in slots {
                    let Ok(_permit) = slot.gate.acquire_permit(1).await else {
                        return false;
                    };
                    // Its partition moved or changed leader: the new leader expires them.
                    let log = shard.locate(OFFSETS_TOPIC, partition);
                    if !keep_if_leading(&shard.groups.slots, partition, &slot, log) {
                        continue;
                    }
                    let counts = shard.topic_counts();
                    let records = slot
                        .coordinator
                        .borrow_mut()
                        .tick(shard.groups.now_ms(), &counts);
                    if records.is_empty() {
                        continue;
                    }
                    if let Err(e) = shard.persist(partition, &records).await {
                        tracing::warn!(partition, "a group coordinator could not persist expired members; it reloads from the log: {e}");
                        shard.groups.slots.borrow_mut().remove(&partition);
                    }
                }
                true
            },
        );
    }
}

/// Replays every record of the coordinator's partition into `coordinator`.
async fn load(log: &Partition, coordinator: &mut Coordinator, now_ms: u64) -> Result<(), ApiError> {
    replay_partition(log, |offset, key, value| match Record::decode(key, value) {
        Ok(rec) => coordinator.replay(&rec, now_ms),
        Err(e) => {
            tracing::warn!(
                offset,
                "skipping a {OFFSETS_TOPIC} record this node cannot read: {e}"
            );
        }
    })
    .await
}
