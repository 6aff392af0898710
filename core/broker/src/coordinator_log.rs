//! The log of a coordinator (consumer groups, transactions): its state changes as keyed
//! records in its partition of an internal topic, appended in call order with their
//! durability awaited apart (so concurrent requests share one write), and read back in full
//! when the coordinator loads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use quiver_batch::{BatchBuilder, BatchHeader, NewRecord, RecordIter};
use quiver_broker_api::{ApiError, ErrorCode};

use crate::partition::Partition;
use crate::replication::driver::{GroupHandle, ProposeRefusal, ReplicaDriver};
use crate::replication::produce::{wait_until, wait_until_or};
use crate::shard::{storage_error, Shard};

/// Largest batch of coordinator records appended at once.
const MAX_RECORDS_BATCH_BYTES: usize = 512 << 10;
/// Bytes read at a time while loading a coordinator partition.
const LOAD_READ_BYTES: usize = 1 << 20;

/// How long a new leader of a coordinator's partition waits for the entries of earlier
/// terms to commit before it loads (the client retries `CoordinatorLoading`).
const LOAD_COMMIT_WAIT_MS: u64 = 5_000;

/// The durability of a request's stamped records.
pub(crate) enum PendingDurability {
    /// A single-replica partition: its log's durability.
    Local(Vec<quiver_storage::Durability>),
    /// A replicated partition: committed once the group's commit index passes `index`
    /// while `term` still leads.
    Replicated {
        handle: Rc<GroupHandle>,
        index: u64,
        term: u64,
    },
}

impl PendingDurability {
    pub(crate) async fn wait(self) -> Result<(), ApiError> {
        match self {
            Self::Local(ds) => {
                for d in ds {
                    d.wait().await.map_err(|e| storage_error(&e))?;
                }
                Ok(())
            }
            Self::Replicated {
                handle,
                index,
                term,
            } => {
                let deposed = |g: &GroupHandle| !g.is_leader.get() || g.term.get() != term;
                wait_until(&handle, |g| g.commit_index.get() >= index || deposed(g)).await;
                if handle.commit_index.get() >= index {
                    return Ok(());
                }
                Err(ApiError::new(
                    ErrorCode::NotOwner,
                    "the coordinator's partition changed leader before the change was committed; retry at the new coordinator (refresh metadata)",
                ))
            }
        }
    }
}

/// How long a read from a coordinator's memory waits for a quorum to confirm this node still
/// leads its partition (the client retries `CoordinatorLoading`).
const READ_CONFIRM_WAIT_MS: u64 = 5_000;

/// What an answer read from a coordinator's memory (committed offsets, a group's description)
/// waits for, in a replicated partition:
/// 1. a quorum confirms this node still leads the partition after the answer was read (Raft's
///    ReadIndex): a leader paused or cut off, not yet told of its successor, would otherwise
///    answer from a state the new coordinator has moved past (the chaos harness saw committed
///    offsets go backwards that way, seeds 1168 and 1176);
/// 2. every record stamped into the partition so far is committed while this term leads:
///    memory runs ahead of the log while a change is written, and a read must not show a
///    commit a deposed leader then loses.
///
/// Kafka answers OffsetFetch from offsets whose append completed. `None` for a single replica:
/// its writes are answered once durable and nothing else can take over its log.
pub(crate) struct ReadBarrier {
    handle: Rc<GroupHandle>,
    index: u64,
    term: u64,
    /// The read's id, or why leadership could not be confirmed.
    read: Result<u64, ApiError>,
}

pub(crate) fn read_barrier(log: &Partition, driver: Option<&ReplicaDriver>) -> Option<ReadBarrier> {
    let (group, g) = log.group.as_ref()?;
    let read = match driver {
        Some(d) => d.read_index(*group).map_err(|e| match e {
            ProposeRefusal::NotLeader { leader } => not_leading(leader, "the group coordinator"),
            ProposeRefusal::Other(why) => ApiError::new(
                ErrorCode::CoordinatorLoading,
                format!("the group coordinator cannot confirm it leads yet ({why}); retry"),
            ),
        }),
        None => Err(ApiError::new(
            ErrorCode::CoordinatorLoading,
            "the group coordinator's partition has no replication driver yet; retry",
        )),
    };
    Some(ReadBarrier {
        handle: g.clone(),
        index: log.log.log_end_offset(),
        term: g.term.get(),
        read,
    })
}

impl ReadBarrier {
    pub(crate) async fn wait(self) -> Result<(), ApiError> {
        let id = self.read?;
        let g = &self.handle;
        let term = self.term;
        let deadline = std::time::Instant::now() + Duration::from_millis(READ_CONFIRM_WAIT_MS);
        let deposed = |g: &GroupHandle| !g.is_leader.get() || g.term.get() != term;
        let settled =
            wait_until_or(g, deadline, |g| g.read_outcome(id).is_some() || deposed(g)).await;
        let outcome = g.read_outcome(id);
        g.forget_read(id);
        match outcome {
            Some(Some(_)) => {}
            None if !settled => return Err(ApiError::new(
                ErrorCode::CoordinatorLoading,
                "the group coordinator could not confirm with a quorum that it still leads; retry",
            )),
            _ => return Err(not_leading(g.leader.get(), "the group coordinator")),
        }
        PendingDurability::Replicated {
            handle: self.handle,
            index: self.index,
            term,
        }
        .wait()
        .await
    }
}

/// `NotOwner` for a node that does not (or no longer) lead a coordinator's partition.
fn not_leading(leader: Option<quiver_cluster::model::NodeId>, what: &str) -> ApiError {
    let who = leader.map_or("no leader is elected right now".to_string(), |l| {
        format!("node {l} leads it")
    });
    ApiError::new(
        ErrorCode::NotOwner,
        format!(
            "this node does not lead the partition of {what}: {who}; refresh metadata and retry"
        ),
    )
}

/// The term a coordinator loaded from `log` is valid for: `None` for a single-replica
/// partition (always valid); for a replicated one, the term this node leads it at, once every
/// entry of its log is committed (what a new leader must see before it answers). Refused with
/// `NotOwner` naming the leader on a follower.
pub(crate) async fn leading_term(log: &Partition, what: &str) -> Result<Option<u64>, ApiError> {
    let Some((_, g)) = &log.group else {
        return Ok(None);
    };
    let term = g.term.get();
    let deadline = std::time::Instant::now() + Duration::from_millis(LOAD_COMMIT_WAIT_MS);
    let deposed = |g: &GroupHandle| !g.is_leader.get() || g.term.get() != term;
    let committed = |g: &GroupHandle| g.commit_index.get() >= log.log.log_end_offset();
    wait_until_or(g, deadline, |g| deposed(g) || committed(g)).await;
    if deposed(g) {
        return Err(not_leading(g.leader.get(), what));
    }
    if committed(g) {
        return Ok(Some(term));
    }
    Err(ApiError::new(
        ErrorCode::CoordinatorLoading,
        format!("{what} is loading: its new leader is committing its log; retry"),
    ))
}

/// Whether a coordinator loaded at `loaded_term` may still serve from `log`'s partition.
fn still_leading(log: &Partition, loaded_term: Option<u64>) -> bool {
    match (&log.group, loaded_term) {
        (None, _) => true,
        (Some((_, g)), Some(term)) => g.is_leader.get() && g.term.get() == term,
        (Some(_), None) => false,
    }
}

/// A coordinator loaded from its partition's log (groups' or transactions').
pub(crate) trait LoadedCoordinator {
    /// The term of the replicated partition's leadership it was loaded under (`None`: a
    /// single-replica partition).
    fn loaded_term(&self) -> Option<u64>;
}

/// The coordinator of `partition` loaded in `slots`, if it may still serve from `log`; one
/// loaded under a leadership this node no longer holds is dropped (what it holds may be
/// behind the log) and `None` returned, to load again.
pub(crate) fn loaded_slot<S: LoadedCoordinator>(
    slots: &RefCell<HashMap<i32, Rc<S>>>,
    partition: i32,
    log: &Partition,
) -> Option<Rc<S>> {
    let loaded = slots.borrow().get(&partition).cloned()?;
    if still_leading(log, loaded.loaded_term()) {
        return Some(loaded);
    }
    slots.borrow_mut().remove(&partition);
    None
}

/// For a coordinator's ticker: whether `slot` may still serve from its partition here
/// (`log`: the partition as this shard has it). If not, it is dropped from `slots` (unless a
/// newer one replaced it): the partition moved or changed leader, and the new leader runs it.
pub(crate) fn keep_if_leading<S: LoadedCoordinator>(
    slots: &RefCell<HashMap<i32, Rc<S>>>,
    partition: i32,
    slot: &Rc<S>,
    log: Result<Partition, ApiError>,
) -> bool {
    if log.is_ok_and(|log| still_leading(&log, slot.loaded_term())) {
        return true;
    }
    let mut slots = slots.borrow_mut();
    if slots.get(&partition).is_some_and(|s| Rc::ptr_eq(s, slot)) {
        slots.remove(&partition);
    }
    false
}

/// The internal topics are created on first use with these configs: compacted (the latest
/// record of every key is the state), in segments small enough for compaction to keep up.
pub(crate) const INTERNAL_TOPIC_CONFIGS: &[(&str, &str)] =
    &[("cleanup_policy", "compact"), ("segment_bytes", "16777216")];

impl Shard {
    /// Runs `tick` every `every` on the shard's background queue while the shard lives,
    /// started once per `running` flag; `tick` returning false stops it.
    pub(crate) fn start_ticker<F, Fut>(
        self: &Rc<Self>,
        running: &Cell<bool>,
        every: Duration,
        what: &'static str,
        tick: F,
    ) where
        F: Fn(Rc<Shard>) -> Fut + 'static,
        Fut: Future<Output = bool>,
    {
        if running.replace(true) {
            return;
        }
        let weak = Rc::downgrade(self);
        let task = async move {
            loop {
                glommio::timer::sleep(every).await;
                let Some(shard) = weak.upgrade() else {
                    return;
                };
                if !tick(shard).await {
                    return;
                }
            }
        };
        let spawned = match self.background {
            Some(q) => glommio::spawn_local_into(task, q).map(|t| t.detach()),
            None => Ok(glommio::spawn_local(task).detach()),
        };
        if let Err(e) = spawned {
            tracing::warn!("could not start the {what} ticker: {e}");
            running.set(false);
        }
    }

    /// This node was elected leader of `topic/partition`: when it is a coordinator's
    /// partition, the coordinator loads from the log now (after the entries of earlier terms
    /// commit), so it serves at once and drives the transactions its predecessor left.
    pub fn became_leader(self: Rc<Self>, topic: &str, partition: i32) {
        let groups = match topic {
            quiver_group::OFFSETS_TOPIC => true,
            quiver_txn::TXN_TOPIC => false,
            _ => return,
        };
        let task = async move {
            let loaded = if groups {
                self.coordinator_slot(partition).await.map(|_| ())
            } else {
                self.txn_slot_of(partition).await.map(|_| ())
            };
            if let Err(e) = loaded {
                tracing::debug!(
                    partition,
                    "a new leader's coordinator did not load; the next request retries: {e}"
                );
            }
        };
        glommio::spawn_local(task).detach();
    }

    /// Stamps `records` (key, value or tombstone) into `topic/partition` in call order and
    /// returns what to await for their durability.
    pub(crate) async fn append_records(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<PendingDurability, ApiError> {
        let log = self.locate(topic, partition)?;
        let now = crate::groups::wall_clock_ms();
        let mut builder = BatchBuilder::new();
        let mut batches = Vec::new();
        for (key, value) in records {
            let record = NewRecord {
                key: Some(Bytes::from(key)),
                value: value.map(Bytes::from),
                headers: Vec::new(),
                timestamp_ms: now,
            };
            if builder.record_count() > 0
                && builder.size_bytes() + builder.record_size_bytes(&record)
                    > MAX_RECORDS_BATCH_BYTES
            {
                batches.push(std::mem::replace(&mut builder, BatchBuilder::new()).build());
            }
            builder.push(&record);
        }
        batches.push(builder.build());
        if let Some((_, g)) = &log.group {
            let term = g.term.get();
            let (_, last) = self
                .append_through_group(
                    topic,
                    &log,
                    partition,
                    crate::acks::AckPoint::Enqueued,
                    batches,
                )
                .await?;
            return Ok(PendingDurability::Replicated {
                handle: g.clone(),
                index: last + 1,
                term,
            });
        }
        let epoch = log.replica.append_epoch(topic, partition)?;
        let mut pending = Vec::with_capacity(batches.len());
        for b in batches {
            let (_, durability) = log
                .log
                .append_pipelined(b, epoch)
                .await
                .map_err(|e| storage_error(&e))?;
            pending.push(durability);
        }
        Ok(PendingDurability::Local(pending))
    }
}

/// Calls `apply(offset, key, value)` for every keyed record of the partition, in order.
pub(crate) async fn replay_partition(
    log: &Partition,
    mut apply: impl FnMut(i64, &[u8], Option<&[u8]>),
) -> Result<(), ApiError> {
    let end = log.offsets().high_watermark;
    let mut offset = log.log.log_start_offset();
    while offset < end {
        let batches = log
            .log
            .read(offset, LOAD_READ_BYTES)
            .await
            .map_err(|e| storage_error(&e))?;
        if batches.is_empty() {
            break;
        }
        for batch in batches {
            let header = BatchHeader::parse(&batch)
                .map_err(|e| ApiError::new(ErrorCode::CorruptData, e.to_string()))?;
            offset = (header.last_offset() + 1).max(offset as i64 + 1) as u64;
            if header.is_control() {
                continue;
            }
            let records = RecordIter::new(batch)
                .map_err(|e| ApiError::new(ErrorCode::CorruptData, e.to_string()))?;
            for r in records {
                let r = r.map_err(|e| ApiError::new(ErrorCode::CorruptData, e.to_string()))?;
                if let Some(key) = r.key {
                    apply(r.offset, &key, r.value.as_deref());
                }
            }
        }
    }
    Ok(())
}
