//! [`GroupConsumer`]: a member of a consumer group. The coordinator assigns partitions
//! (server side, incrementally, KIP-848); this member heartbeats, follows its assignment,
//! resumes each partition at the group's committed offset and commits what it processed.
//!
//! - A background task heartbeats every `heartbeat_interval_ms` (the coordinator's figure),
//!   so a slow record does not cost the membership; it heartbeats again at once after the
//!   member revokes or takes partitions, so a rebalance moves at round-trip speed.
//! - The assignment is applied in [`GroupConsumer::next_event`], on the application's
//!   thread: partitions taken away are committed (at-least-once) and dropped before the
//!   coordinator is told, so it hands them to their new owner only after that commit; new
//!   partitions start at the committed offset, else per `auto_offset_reset`.
//! - [`DeliveryMode`] names the guarantee: at-least-once commits after processing (a record
//!   counts as processed when the application asks for the next one), at-most-once commits
//!   before a record is handed out.
//! - A fenced member (its session expired, or a newer epoch exists) loses its partitions
//!   without committing ([`GroupEvent::Lost`]) and rejoins with the same member id.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_broker_api::{ApiError, CommittedOffset, Heartbeat, OffsetCommit, Response};
use quiver_group::coordinator::{JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH};
use quiver_schema::groups;
use quiver_schema::wire::ErrorCode;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use quiver_broker_api::TopicPartition;

mod start;

use crate::cluster::{unpoisoned, Client};
use crate::consumer::{Consumer, ConsumerConfig, SeekTo};
use crate::error::{ClientError, Result};
use crate::record::{now_ms, ConsumerRecord};
use start::{StartLookup, StartRules};

/// When a record counts as consumed, and so what a crash can cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// Offsets are committed before records are handed out: a crash may skip records that
    /// were never processed, and none is ever processed twice.
    AtMostOnce,
    /// Offsets are committed after processing (a record is processed once the application
    /// asks for the next one): a crash may process some records again, and none is skipped.
    #[default]
    AtLeastOnce,
    /// Offsets are committed only inside transactions, with the output they led to
    /// (`Producer::send_offsets_to_transaction`; see [`crate::Transformer`]): the member
    /// never commits by itself. Read input with read_committed isolation.
    Transactional,
}

/// What a member subscribes to.
#[derive(Debug, Clone)]
pub enum Subscription {
    /// These topics.
    Topics(Vec<String>),
    /// Every topic whose whole name matches (internal `__` topics excepted), checked again
    /// every `topic_refresh_ms`.
    Pattern(regex::Regex),
}

/// Settings of a [`GroupConsumer`].
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// Fetching, and `auto_offset_reset` for partitions the group has no committed offset
    /// for (`Error`: [`ClientError::NoCommittedOffset`]).
    pub consumer: ConsumerConfig,
    /// Where a partition the group has no committed offset for starts, when given (a time,
    /// say); `None`: per `consumer.auto_offset_reset`.
    pub start_without_commit: Option<SeekTo>,
    /// When offsets are committed; see [`DeliveryMode`].
    pub delivery: DeliveryMode,
    /// A static member's instance id (KIP-345): restarted within the session timeout, it gets
    /// its partitions back with no reassignment.
    pub instance_id: Option<String>,
    /// At-least-once: commit what was processed this often (`None`: only on `commit`,
    /// on revocation and on `close`).
    pub auto_commit_interval_ms: Option<u64>,
    /// Longest this member takes to give up partitions (commit and stop) before the
    /// coordinator removes it.
    pub rebalance_timeout_ms: u32,
    /// The assignor to ask the group for (`uniform` or `range`; `None`: the group's).
    pub assignor: Option<String>,
    /// How often a pattern subscription looks for new topics, in milliseconds.
    pub topic_refresh_ms: u64,
}

impl Default for GroupConsumerConfig {
    fn default() -> Self {
        Self {
            consumer: ConsumerConfig::default(),
            start_without_commit: None,
            delivery: DeliveryMode::AtLeastOnce,
            instance_id: None,
            auto_commit_interval_ms: Some(5_000),
            rebalance_timeout_ms: 60_000,
            assignor: None,
            topic_refresh_ms: 5_000,
        }
    }
}

/// What [`GroupConsumer::next_event`] returns.
#[derive(Debug, Clone)]
pub enum GroupEvent {
    /// A record of an assigned partition.
    Record(ConsumerRecord),
    /// These partitions are now this member's; each resumes at the group's committed offset.
    Assigned(Vec<TopicPartition>),
    /// These partitions were handed back (their processed offsets committed first in
    /// at-least-once mode).
    Revoked(Vec<TopicPartition>),
    /// The coordinator fenced this member: these partitions may already be another member's,
    /// and nothing was committed for them.
    Lost(Vec<TopicPartition>),
}

/// What [`GroupConsumer::nack`] led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NackResult {
    /// The record (and the partition's records after it) is delivered again after
    /// `after_ms`; the partition's other records wait meanwhile.
    Redeliver {
        /// Deliveries of the record so far.
        deliveries: u32,
        /// The group's backoff before the next delivery.
        after_ms: u32,
    },
    /// The group retries through delay topics: the coordinator moved the record to the delay
    /// topic `topic`, where this group reads it again from `until_ms` (ms since the epoch);
    /// the partition goes on meanwhile.
    Delayed {
        /// Deliveries of the record so far.
        deliveries: u32,
        /// The delay topic.
        topic: String,
        /// When it is delivered again.
        until_ms: i64,
    },
    /// It failed `max_deliveries` times: the coordinator moved it to the dead-letter topic
    /// (with headers naming where it came from and why) and the partition goes on after it.
    DeadLettered {
        /// Deliveries of the record.
        deliveries: u32,
        /// The dead-letter topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset there.
        offset: i64,
    },
}

/// The membership the heartbeat task and the member share.
#[derive(Default)]
struct Membership {
    member_epoch: i32,
    /// The coordinator's latest assignment for this member (`None` until it answers a join).
    target: Option<BTreeSet<TopicPartition>>,
    /// The coordinator fenced this member: its partitions are lost.
    fenced: bool,
    /// What the member owns (it reports this in every heartbeat).
    owned: Vec<TopicPartition>,
    subscribed: Vec<String>,
    /// The subscription goes in the next heartbeat (a join, or a pattern that changed).
    send_subscription: bool,
    heartbeat_interval_ms: u32,
    /// An error the heartbeat cannot recover from; the member reports it.
    failed: Option<ClientError>,
    /// Bumped on every change the member must look at.
    version: u64,
}

struct Shared {
    state: Mutex<Membership>,
    /// Heartbeat now (the member revoked or took partitions).
    wake_heartbeat: Notify,
    /// The membership changed.
    changed: Notify,
}

/// A member of a consumer group; see the module documentation.
pub struct GroupConsumer {
    client: Client,
    group: String,
    member_id: String,
    config: GroupConsumerConfig,
    subscription: Subscription,
    consumer: Consumer,
    shared: Arc<Shared>,
    heartbeat: JoinHandle<()>,
    seen_version: u64,
    /// Set when new partitions' start offsets could not be found for a passing reason (a
    /// leader moving): the assignment is taken again from then.
    reconcile_retry_at: Option<Instant>,
    /// Where newly assigned partitions start, being looked up.
    starting: Option<StartLookup>,
    owned: BTreeSet<TopicPartition>,
    /// The offset after the last record handed out, per partition.
    returned: BTreeMap<TopicPartition, i64>,
    /// The offset after the last record processed (handed out before the latest one).
    processed: BTreeMap<TopicPartition, i64>,
    /// The latest record handed out: processed once the application asks for the next.
    last: Option<(TopicPartition, i64)>,
    /// What the group has committed for each owned partition, as far as this member knows.
    committed: BTreeMap<TopicPartition, i64>,
    next_auto_commit: Instant,
    next_topic_refresh: Instant,
    events: VecDeque<GroupEvent>,
    /// Partitions waiting to redeliver a failed record: when, and from which offset.
    paused: BTreeMap<TopicPartition, (Instant, i64)>,
    /// The group's delay topics per source topic (0: failed records are retried in place).
    retry_levels: u32,
}

/// A member id: 128 random bits from the process's hash seeds (fresh per member), hex.
fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for salt in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A broker refusal as the client's error.
pub(crate) fn broker_error(e: ApiError) -> ClientError {
    ClientError::Broker {
        code: quiver_schema::codes::wire_code(e.code),
        message: e.message,
    }
}

/// Sends a group request to the group's coordinator and reads the answer back into the
/// broker's types.
pub(crate) async fn group_request(
    client: &Client,
    group: &str,
    build: impl Fn(u64) -> bytes::Bytes,
) -> Result<Response> {
    let resp = client
        .coordinator_request(quiver_group::OFFSETS_TOPIC, group, build)
        .await?;
    groups::read_response(&resp.envelope())
        .ok_or_else(|| ClientError::Protocol("the group response has no body".into()))
}

pub(crate) fn unexpected(what: &str) -> ClientError {
    ClientError::Protocol(format!("the broker answered a {what} with another API"))
}

/// Committed offsets of `partitions` of `group`.
pub(crate) async fn fetch_committed(
    client: &Client,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<Vec<(TopicPartition, CommittedOffset)>> {
    match group_request(client, group, |id| {
        groups::offset_fetch(id, group, partitions)
    })
    .await?
    {
        Response::OffsetFetch(r) => r.map_err(broker_error),
        _ => Err(unexpected("OffsetFetch")),
    }
}

/// Commits offsets; the first refusal (of the request or of a partition) is the error.
pub(crate) async fn commit_offsets(client: &Client, commit: &OffsetCommit) -> Result<()> {
    match group_request(client, &commit.group, |id| {
        groups::offset_commit(id, commit)
    })
    .await?
    {
        Response::OffsetCommit {
            outcome,
            partitions,
        } => {
            outcome.map_err(broker_error)?;
            for (_, o) in partitions {
                o.map_err(broker_error)?;
            }
            Ok(())
        }
        _ => Err(unexpected("OffsetCommit")),
    }
}

async fn nack_request(
    client: &Client,
    n: &quiver_broker_api::Nack,
) -> Result<quiver_broker_api::NackReply> {
    match group_request(client, &n.group, |id| groups::nack(id, n)).await? {
        Response::Nack(r) => r.map_err(broker_error),
        _ => Err(unexpected("Nack")),
    }
}

/// Pause before taking on newly assigned partitions again when their start offsets could not
/// be found for a passing reason.
const RECONCILE_RETRY: Duration = Duration::from_millis(200);

/// True for the errors that fence a member: its partitions are lost and it must rejoin.
fn is_fenced(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Broker {
            code: ErrorCode::FencedMemberEpoch | ErrorCode::UnknownMemberId,
            ..
        }
    )
}

impl GroupConsumer {
    /// Joins `group` subscribed to `subscription`; partitions arrive as
    /// [`GroupEvent::Assigned`] from `next_event`.
    pub async fn subscribe(
        client: Client,
        group: &str,
        subscription: Subscription,
        config: GroupConsumerConfig,
    ) -> Result<Self> {
        if group.is_empty() {
            return Err(ClientError::Invalid("a group id is required".into()));
        }
        let subscribed = match &subscription {
            Subscription::Topics(t) if t.is_empty() => {
                return Err(ClientError::Invalid(
                    "subscribe to at least one topic".into(),
                ))
            }
            Subscription::Topics(t) => t.clone(),
            Subscription::Pattern(re) => matching_topics(&client, re).await?,
        };
        // A group that retries through delay topics: read them too.
        let retry_levels = match crate::Admin::new(client.clone())
            .describe_group(group)
            .await
        {
            Ok(d) => d.config.retry_levels,
            Err(_) => 0,
        };
        let subscribed = with_delay_topics(subscribed, group, retry_levels);
        let shared = Arc::new(Shared {
            state: Mutex::new(Membership {
                member_epoch: JOIN_EPOCH,
                subscribed,
                send_subscription: true,
                heartbeat_interval_ms: 1_000,
                ..Membership::default()
            }),
            wake_heartbeat: Notify::new(),
            changed: Notify::new(),
        });
        let member_id = new_member_id();
        let task = HeartbeatTask {
            client: client.clone(),
            shared: shared.clone(),
            group: group.to_string(),
            member_id: member_id.clone(),
            instance_id: config.instance_id.clone(),
            rebalance_timeout_ms: config.rebalance_timeout_ms,
            assignor: config.assignor.clone(),
        };
        let heartbeat = tokio::spawn(task.run());
        let now = Instant::now();
        Ok(Self {
            consumer: Consumer::new(client.clone(), config.consumer.clone()),
            client,
            group: group.to_string(),
            member_id,
            subscription,
            shared,
            heartbeat,
            seen_version: 0,
            reconcile_retry_at: None,
            starting: None,
            owned: BTreeSet::new(),
            returned: BTreeMap::new(),
            processed: BTreeMap::new(),
            last: None,
            committed: BTreeMap::new(),
            next_auto_commit: now
                + Duration::from_millis(config.auto_commit_interval_ms.unwrap_or(0)),
            next_topic_refresh: now + Duration::from_millis(config.topic_refresh_ms),
            events: VecDeque::new(),
            paused: BTreeMap::new(),
            retry_levels,
            config,
        })
    }

    /// This member's id (generated here, kept for its life).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Who this member is in its group now: what a transaction's offsets carry
    /// (`Producer::send_offsets_to_transaction`).
    pub fn group_metadata(&self) -> crate::producer::GroupMetadata {
        crate::producer::GroupMetadata {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: unpoisoned(&self.shared.state).member_epoch,
        }
    }

    /// Moves an owned partition's position: the records from `offset` are handed out next
    /// (after an aborted transaction, its input is read again).
    pub async fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if !self.owned.contains(tp) {
            return Err(ClientError::Invalid(format!(
                "{}/{} is not assigned to this member",
                tp.topic, tp.partition
            )));
        }
        self.last = None;
        self.returned.insert(tp.clone(), offset);
        self.processed.insert(tp.clone(), offset);
        self.consumer
            .seek(&tp.topic, tp.partition, SeekTo::Offset(offset))
            .await
            .map(|_| ())
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The offset of the next record this member will hand out for an owned partition.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        if !self.owned.contains(tp) {
            return None;
        }
        self.consumer.position(&tp.topic, tp.partition)
    }

    /// The next record, skipping assignment events.
    pub async fn next_record(&mut self) -> Result<ConsumerRecord> {
        loop {
            if let GroupEvent::Record(r) = self.next_event().await? {
                return Ok(r);
            }
        }
    }

    /// The next record or assignment change; waits (long poll) when there is none.
    ///
    /// Cancel-safe for `AtLeastOnce` and `Transactional`: dropped half-way (a `select!`
    /// branch losing, a timeout), it loses no record and a reconciliation it was in is run
    /// again by the next call (a commit on revocation may be made twice; an auto-commit due
    /// may be skipped until the next call). `AtMostOnce`: dropped while committing before a
    /// record is handed out, that record may be skipped, as at-most-once allows.
    pub async fn next_event(&mut self) -> Result<GroupEvent> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            // The application asked for more: the record it had is processed.
            if let Some((tp, next)) = self.last.take() {
                self.processed.insert(tp, next);
            }
            for (tp, position) in self.skipped_ahead() {
                self.processed.insert(tp.clone(), position);
                self.returned.insert(tp, position);
            }
            self.reconcile().await?;
            if !self.events.is_empty() {
                continue;
            }
            let now = Instant::now();
            if self.config.delivery == DeliveryMode::AtLeastOnce
                && self.config.auto_commit_interval_ms.is_some()
                && now >= self.next_auto_commit
            {
                self.commit_positions(false).await;
            }
            if matches!(self.subscription, Subscription::Pattern(_))
                && now >= self.next_topic_refresh
            {
                self.refresh_pattern().await?;
            }
            self.resume_due(now);
            let wake_at = self.next_wake();
            let shared = self.shared.clone();
            if self.owned.len() == self.paused.len() {
                tokio::select! {
                    _ = shared.changed.notified() => {}
                    _ = tokio::time::sleep_until(wake_at.into()) => {}
                }
                continue;
            }
            let record = tokio::select! {
                _ = shared.changed.notified() => continue,
                _ = tokio::time::sleep_until(wake_at.into()) => continue,
                r = self.consumer.next_record() => r?,
            };
            let tp = TopicPartition::new(&*record.topic, record.partition);
            if !self.owned.contains(&tp) {
                continue; // fetched before the partition was revoked
            }
            if let Some(until) = delayed_until(&record).filter(|t| *t > now_ms()) {
                // A copy in a delay topic, not due yet: its partition waits (the copies
                // after it are due later still).
                let wait = Duration::from_millis((until - now_ms()).max(0) as u64);
                self.pause(tp, record.offset, Instant::now() + wait);
                continue;
            }
            if self.config.delivery == DeliveryMode::AtMostOnce
                && self.committed.get(&tp).is_none_or(|c| *c <= record.offset)
            {
                // Commit past everything prefetched for the partition before handing any
                // of it out.
                let end = self
                    .consumer
                    .buffered_end(&record.topic, record.partition)
                    .unwrap_or(0)
                    .max(record.offset + 1);
                match self.commit_now(&[(tp.clone(), end)]).await {
                    Ok(()) => {}
                    Err(e) if is_fenced(&e) => {
                        tracing::warn!(group = %self.group, "fenced while committing before processing: {e}");
                        continue; // the heartbeat rejoins; this record is not handed out
                    }
                    Err(e) => return Err(e),
                }
            }
            self.returned.insert(tp.clone(), record.offset + 1);
            self.last = Some((tp, record.offset + 1));
            return Ok(GroupEvent::Record(record));
        }
    }

    /// When `next_event` must look up from waiting for records.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut at = far;
        if self.config.delivery == DeliveryMode::AtLeastOnce
            && self.config.auto_commit_interval_ms.is_some()
            && (!self.pending(&self.processed).is_empty() || !self.skipped_ahead().is_empty())
        {
            at = at.min(self.next_auto_commit);
        }
        if matches!(self.subscription, Subscription::Pattern(_)) {
            at = at.min(self.next_topic_refresh);
        }
        if let Some(first) = self.paused.values().map(|(t, _)| *t).min() {
            at = at.min(first);
        }
        if let Some(retry) = self.reconcile_retry_at {
            at = at.min(retry);
        }
        at
    }

    /// Partitions whose redelivery wait is over read again from the failed record.
    fn resume_due(&mut self, now: Instant) {
        let due: Vec<(TopicPartition, i64)> = self
            .paused
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(tp, (_, offset))| (tp.clone(), *offset))
            .collect();
        if due.is_empty() {
            return;
        }
        let parts: Vec<(&str, i32, i64)> = due
            .iter()
            .map(|(tp, o)| (tp.topic.as_str(), tp.partition, *o))
            .collect();
        self.consumer.add_assigned(&parts);
        for (tp, _) in &due {
            self.paused.remove(tp);
        }
    }

    /// Reports that processing `record` failed. The group's coordinator counts the delivery
    /// durably; below the group's `max_deliveries` the record comes back after the group's
    /// backoff ([`NackResult::Redeliver`]: this partition pauses meanwhile, the others go
    /// on); then it moves the record to the dead-letter topic and the partition goes on
    /// ([`NackResult::DeadLettered`]).
    pub async fn nack(&mut self, record: &ConsumerRecord, error: &str) -> Result<NackResult> {
        let tp = TopicPartition::new(&*record.topic, record.partition);
        if !self.owned.contains(&tp) {
            return Err(ClientError::Invalid(format!(
                "{}/{} is not assigned to this member (any more)",
                tp.topic, tp.partition
            )));
        }
        let mut n = quiver_broker_api::Nack {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: unpoisoned(&self.shared.state).member_epoch,
            tp: tp.clone(),
            offset: record.offset,
            error: error.to_string(),
        };
        let mut reply = nack_request(&self.client, &n).await;
        if let Err(ClientError::Broker {
            code: ErrorCode::StaleGeneration,
            ..
        }) = &reply
        {
            n.member_epoch = unpoisoned(&self.shared.state).member_epoch;
            reply = nack_request(&self.client, &n).await;
        }
        let reply = reply?;
        match (reply.redeliver_after_ms, reply.dead_letter) {
            (Some(after_ms), _) => {
                // Not processed: it is handed out again, from where it was.
                if self.last.as_ref().is_some_and(|(l, _)| *l == tp) {
                    self.last = None;
                }
                self.returned.insert(tp.clone(), record.offset);
                if self.processed.get(&tp).is_some_and(|p| *p > record.offset) {
                    self.processed.insert(tp.clone(), record.offset);
                }
                let at = Instant::now() + Duration::from_millis(u64::from(after_ms));
                self.pause(tp, record.offset, at);
                Ok(NackResult::Redeliver {
                    deliveries: reply.deliveries,
                    after_ms,
                })
            }
            (None, Some((topic, partition, offset))) => {
                // Done with: the coordinator committed past it.
                let next = record.offset + 1;
                if self.committed.get(&tp).is_none_or(|c| *c < next) {
                    self.committed.insert(tp, next);
                }
                Ok(match reply.delayed_until_ms {
                    Some(until_ms) => NackResult::Delayed {
                        deliveries: reply.deliveries,
                        topic,
                        until_ms,
                    },
                    None => NackResult::DeadLettered {
                        deliveries: reply.deliveries,
                        topic,
                        partition,
                        offset,
                    },
                })
            }
            (None, None) => Err(ClientError::Protocol(
                "the nack answer says neither redeliver nor dead-lettered".into(),
            )),
        }
    }

    /// Stops reading `tp` until `until`, then reads it again from `offset`.
    fn pause(&mut self, tp: TopicPartition, offset: i64, until: Instant) {
        self.consumer
            .remove_assigned(&[(tp.topic.as_str(), tp.partition)]);
        self.paused.insert(tp, (until, offset));
    }

    /// The group's delay topics per source topic, as learnt when this member subscribed.
    pub fn retry_levels(&self) -> u32 {
        self.retry_levels
    }

    /// Commits the offsets after every record handed out so far (sync).
    pub async fn commit(&mut self) -> Result<()> {
        if let Some((tp, next)) = self.last.take() {
            self.processed.insert(tp, next);
        }
        let offsets = self.pending(&self.returned);
        self.commit_now(&offsets).await
    }

    /// Starts committing the offsets after every record handed out so far; the returned
    /// handle resolves with the outcome, and `next_event` goes on meanwhile.
    pub fn commit_async(&mut self) -> JoinHandle<Result<()>> {
        let offsets = self.pending(&self.returned);
        for (tp, o) in &offsets {
            self.committed.insert(tp.clone(), *o);
        }
        let client = self.client.clone();
        let commit = self.offset_commit(&offsets);
        tokio::spawn(async move { commit_offsets(&client, &commit).await })
    }

    /// Owned partitions whose every record handed out is processed and whose position moved
    /// past them over batches that are not records (transaction markers, a new leader's
    /// control batch): their position, committable as processed (as a Kafka consumer commits
    /// its position), so a group that read everything shows no lag.
    fn skipped_ahead(&self) -> Vec<(TopicPartition, i64)> {
        self.owned
            .iter()
            .filter(|tp| self.last.as_ref().is_none_or(|(l, _)| l != *tp))
            .filter(|tp| self.processed.get(*tp) == self.returned.get(*tp))
            .filter_map(|tp| {
                let position = self.consumer.position(&tp.topic, tp.partition)?;
                let done = self
                    .processed
                    .get(tp)
                    .or_else(|| self.committed.get(tp))
                    .copied()?;
                (position > done).then(|| (tp.clone(), position))
            })
            .collect()
    }

    /// The owned partitions' offsets in `positions` beyond what is committed.
    fn pending(&self, positions: &BTreeMap<TopicPartition, i64>) -> Vec<(TopicPartition, i64)> {
        positions
            .iter()
            .filter(|(tp, o)| self.owned.contains(*tp) && self.committed.get(*tp) != Some(*o))
            .map(|(tp, o)| (tp.clone(), *o))
            .collect()
    }

    fn offset_commit(&self, offsets: &[(TopicPartition, i64)]) -> OffsetCommit {
        let epoch = unpoisoned(&self.shared.state).member_epoch;
        OffsetCommit {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: epoch,
            offsets: offsets
                .iter()
                .map(|(tp, o)| (tp.clone(), *o, String::new()))
                .collect(),
        }
    }

    /// Commits `offsets` under the current member epoch (once more if the epoch moved on
    /// while it was in flight).
    async fn commit_now(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut result = commit_offsets(&self.client, &self.offset_commit(offsets)).await;
        if let Err(ClientError::Broker {
            code: ErrorCode::StaleGeneration,
            ..
        }) = &result
        {
            result = commit_offsets(&self.client, &self.offset_commit(offsets)).await;
        }
        result?;
        for (tp, o) in offsets {
            self.committed.insert(tp.clone(), *o);
        }
        Ok(())
    }

    /// Commits the processed offsets (`all`: everything handed out); a failure is logged (the
    /// records will be processed again, as at-least-once allows).
    async fn commit_positions(&mut self, all: bool) {
        let positions = if all { &self.returned } else { &self.processed };
        let offsets = self.pending(positions);
        if let Err(e) = self.commit_now(&offsets).await {
            tracing::warn!(group = %self.group, "offset commit failed: {e}");
        }
        self.next_auto_commit = Instant::now()
            + Duration::from_millis(self.config.auto_commit_interval_ms.unwrap_or(0));
    }

    /// Applies what the heartbeat learnt: fencing, revocations, new partitions.
    async fn reconcile(&mut self) -> Result<()> {
        let (fenced, target) = {
            let mut s = unpoisoned(&self.shared.state);
            // The heartbeat stopped for good: every call says so (taken once, the member
            // looked alive and idle forever after: the chaos harness, seed 1223).
            if let Some(e) = &s.failed {
                return Err(e.clone());
            }
            let retry_due = self.reconcile_retry_at.is_some_and(|t| Instant::now() >= t);
            if s.version == self.seen_version && !retry_due {
                return Ok(());
            }
            self.reconcile_retry_at = None;
            self.seen_version = s.version;
            let fenced = std::mem::take(&mut s.fenced);
            if fenced {
                s.owned.clear();
            }
            (fenced, s.target.clone())
        };
        if fenced && !self.owned.is_empty() {
            let lost: Vec<TopicPartition> = std::mem::take(&mut self.owned).into_iter().collect();
            self.drop_partitions(&lost);
            self.events.push_back(GroupEvent::Lost(lost));
        }
        let Some(target) = target else {
            return Ok(());
        };
        // Until this pass completes, the next call runs it again: a pass dropped half-way
        // (`next_event` cancelled during a commit or a lookup) is not taken as done.
        self.reconcile_retry_at = Some(Instant::now());
        let revoked: Vec<TopicPartition> = self.owned.difference(&target).cloned().collect();
        if !revoked.is_empty() {
            if self.config.delivery == DeliveryMode::AtLeastOnce {
                let offsets: Vec<(TopicPartition, i64)> = self
                    .pending(&self.returned)
                    .into_iter()
                    .filter(|(tp, _)| revoked.contains(tp))
                    .collect();
                if let Err(e) = self.commit_now(&offsets).await {
                    tracing::warn!(group = %self.group, "commit on revoke failed (records will be processed again): {e}");
                }
            }
            self.drop_partitions(&revoked);
            for tp in &revoked {
                self.owned.remove(tp);
            }
            self.report_owned();
            self.events.push_back(GroupEvent::Revoked(revoked));
        }
        let added: Vec<TopicPartition> = target.difference(&self.owned).cloned().collect();
        if self.starting.as_ref().is_some_and(|l| !l.is_for(&added)) {
            self.starting = None; // the assignment changed while it was looked up
        }
        if !added.is_empty() {
            let lookup = self.starting.get_or_insert_with(|| {
                let rules = StartRules {
                    group: self.group.clone(),
                    start_without_commit: self.config.start_without_commit,
                    auto_offset_reset: self.config.consumer.auto_offset_reset,
                };
                StartLookup::spawn(self.client.clone(), rules, added.clone())
            });
            let answer = lookup.answer().await;
            self.starting = None;
            let starts = match answer {
                Ok(starts) => starts,
                Err(e) if e.is_retriable() => {
                    // A partition's leader or the coordinator is moving (a failover): the
                    // partitions are taken on again shortly, not handed to the application
                    // as an error.
                    tracing::debug!(group = %self.group, "start offsets not found yet, retrying: {e}");
                    self.reconcile_retry_at = Some(Instant::now() + RECONCILE_RETRY);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            for s in starts.iter().filter(|s| s.committed) {
                self.committed.insert(s.tp.clone(), s.offset);
            }
            let parts: Vec<(&str, i32, i64)> = starts
                .iter()
                .map(|s| (s.tp.topic.as_str(), s.tp.partition, s.offset))
                .collect();
            self.consumer.add_assigned(&parts);
            self.owned.extend(added.iter().cloned());
            self.report_owned();
            self.events.push_back(GroupEvent::Assigned(added));
        }
        self.reconcile_retry_at = None;
        Ok(())
    }

    fn drop_partitions(&mut self, tps: &[TopicPartition]) {
        let parts: Vec<(&str, i32)> = tps
            .iter()
            .map(|tp| (tp.topic.as_str(), tp.partition))
            .collect();
        self.consumer.remove_assigned(&parts);
        for tp in tps {
            self.paused.remove(tp);
            self.returned.remove(tp);
            self.processed.remove(tp);
            self.committed.remove(tp);
            if self.last.as_ref().is_some_and(|(l, _)| l == tp) {
                self.last = None;
            }
        }
    }

    /// Tells the heartbeat task what this member owns now, and to heartbeat at once.
    fn report_owned(&self) {
        unpoisoned(&self.shared.state).owned = self.owned.iter().cloned().collect();
        self.shared.wake_heartbeat.notify_one();
    }

    async fn refresh_pattern(&mut self) -> Result<()> {
        self.next_topic_refresh =
            Instant::now() + Duration::from_millis(self.config.topic_refresh_ms);
        let Subscription::Pattern(re) = &self.subscription else {
            return Ok(());
        };
        let topics = with_delay_topics(
            matching_topics(&self.client, re).await?,
            &self.group,
            self.retry_levels,
        );
        let mut s = unpoisoned(&self.shared.state);
        if s.subscribed != topics {
            tracing::info!(group = %self.group, ?topics, "the pattern's topics changed");
            s.subscribed = topics;
            s.send_subscription = true;
            drop(s);
            self.shared.wake_heartbeat.notify_one();
        }
        Ok(())
    }

    /// Leaves the group: commits what was handed out (at-least-once), then tells the
    /// coordinator, which reassigns the partitions at once (a static member's are kept for
    /// the session timeout).
    pub async fn close(mut self) -> Result<()> {
        if self.config.delivery == DeliveryMode::AtLeastOnce {
            self.commit_positions(true).await;
        }
        self.heartbeat.abort();
        let epoch = if self.config.instance_id.is_some() {
            STATIC_LEAVE_EPOCH
        } else {
            LEAVE_EPOCH
        };
        let hb = Heartbeat {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            instance_id: self.config.instance_id.clone(),
            client_id: self.client.config().client_name.clone(),
            member_epoch: epoch,
            rebalance_timeout_ms: self.config.rebalance_timeout_ms,
            subscribed: None,
            assignor: None,
            owned: Vec::new(),
        };
        send_heartbeat(&self.client, &hb).await.map(|_| ())
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// `topics` and, for a group that retries through `levels` delay topics, those of each.
fn with_delay_topics(topics: Vec<String>, group: &str, levels: u32) -> Vec<String> {
    // A pattern may match the group's own delay and dead-letter topics: not sources.
    let ours =
        |t: &str| t.contains(&format!(".{group}.retry.")) || t.ends_with(&format!(".{group}.dlq"));
    let sources: Vec<String> = topics.into_iter().filter(|t| !ours(t)).collect();
    let mut out = sources.clone();
    for t in &sources {
        out.extend((1..=levels).map(|k| quiver_group::GroupConfig::retry_topic_for(t, group, k)));
    }
    out
}

/// When a copy in a delay topic is due (its `quiver.retry.not_before_ms` header).
fn delayed_until(r: &ConsumerRecord) -> Option<i64> {
    r.header("quiver.retry.not_before_ms")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// The topics whose whole name matches `re`, internal ones excepted, sorted.
async fn matching_topics(client: &Client, re: &regex::Regex) -> Result<Vec<String>> {
    let admin = crate::Admin::new(client.clone());
    let mut names: Vec<String> = admin
        .list_topics()
        .await?
        .into_iter()
        .map(|t| t.name)
        .filter(|n| !n.starts_with("__"))
        .filter(|n| {
            re.find(n)
                .is_some_and(|m| m.start() == 0 && m.end() == n.len())
        })
        .collect();
    names.sort();
    Ok(names)
}

async fn send_heartbeat(
    client: &Client,
    hb: &Heartbeat,
) -> Result<quiver_broker_api::HeartbeatOutcome> {
    let name = client.config().client_name.as_str();
    match group_request(client, &hb.group, |id| groups::heartbeat((id, name), hb)).await? {
        Response::ConsumerGroupHeartbeat(r) => r.map_err(broker_error),
        _ => Err(unexpected("ConsumerGroupHeartbeat")),
    }
}

/// The member's heartbeat, in the background.
struct HeartbeatTask {
    client: Client,
    shared: Arc<Shared>,
    group: String,
    member_id: String,
    instance_id: Option<String>,
    rebalance_timeout_ms: u32,
    assignor: Option<String>,
}

/// Longest wait between attempts while the coordinator cannot be reached.
const MAX_RETRY_BACKOFF_MS: u64 = 1_000;

impl HeartbeatTask {
    async fn run(self) {
        let mut backoff_ms = 50u64;
        loop {
            let (hb, sent_version) = {
                let s = unpoisoned(&self.shared.state);
                let hb = Heartbeat {
                    group: self.group.clone(),
                    member_id: self.member_id.clone(),
                    instance_id: self.instance_id.clone(),
                    client_id: self.client.config().client_name.clone(),
                    member_epoch: s.member_epoch,
                    rebalance_timeout_ms: self.rebalance_timeout_ms,
                    subscribed: s.send_subscription.then(|| s.subscribed.clone()),
                    assignor: (s.member_epoch == JOIN_EPOCH)
                        .then(|| self.assignor.clone())
                        .flatten(),
                    owned: s.owned.clone(),
                };
                (hb, (s.member_epoch, s.subscribed.clone()))
            };
            let result = send_heartbeat(&self.client, &hb).await;
            let wait_ms = {
                let mut s = unpoisoned(&self.shared.state);
                match result {
                    Ok(out) => {
                        backoff_ms = 50;
                        // An answer to a heartbeat sent before a fence is stale.
                        if s.member_epoch == sent_version.0 {
                            s.member_epoch = out.member_epoch;
                            s.target = Some(out.assignment.into_iter().collect());
                            s.heartbeat_interval_ms = out.heartbeat_interval_ms;
                            if hb.subscribed.is_some() && s.subscribed == sent_version.1 {
                                s.send_subscription = false;
                            }
                            s.version += 1;
                        }
                        u64::from(s.heartbeat_interval_ms)
                    }
                    Err(e) if is_fenced(&e) => {
                        tracing::warn!(group = %self.group, member = %self.member_id, "fenced: {e}; rejoining");
                        s.member_epoch = JOIN_EPOCH;
                        s.fenced = true;
                        s.target = None;
                        s.owned.clear();
                        s.send_subscription = true;
                        s.version += 1;
                        0
                    }
                    Err(e) if e.is_retriable() => {
                        tracing::debug!(group = %self.group, "heartbeat failed, retrying: {e}");
                        let wait = backoff_ms;
                        backoff_ms = (backoff_ms * 2).min(MAX_RETRY_BACKOFF_MS);
                        wait
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.group, "heartbeat refused: {e}");
                        s.failed = Some(e);
                        s.version += 1;
                        drop(s);
                        self.shared.changed.notify_one();
                        return;
                    }
                }
            };
            self.shared.changed.notify_one();
            if wait_ms > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                    _ = self.shared.wake_heartbeat.notified() => {}
                }
            }
        }
    }
}
