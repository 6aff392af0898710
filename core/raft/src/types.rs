//! Entries, messages, actions and configuration of one Raft group.

use std::collections::BTreeSet;

/// A node of the group.
pub type NodeId = u64;

/// One log entry: the term it was proposed in, how many indexes it covers, and its payload
/// (in Quiver a RecordBatch of `span` records, whose partition leader epoch is this term, and
/// whose last offset is the entry's last index: decision 0027).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
    /// Indexes covered (at least 1).
    pub span: u64,
    pub payload: Payload,
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The entry a new leader writes in its own term (it commits the earlier terms' entries).
    Empty,
    /// The user's bytes.
    Data(Vec<u8>),
    /// The group's next membership: in force on every node from the moment the entry is in
    /// its log (not when it commits), as single-server changes require.
    Membership(Membership),
}

/// The highest index: a partition's offsets are Kafka's signed 64-bit offsets. Messages
/// reaching past it are malformed and ignored, so index arithmetic never overflows.
pub const MAX_INDEX: u64 = i64::MAX as u64;
/// The highest term: a partition's leader epoch is the RecordBatch's signed 32-bit field.
pub const MAX_TERM: u64 = i32::MAX as u64;

/// Bytes an entry counts for against the byte limits: its payload plus a fixed framing.
pub const ENTRY_OVERHEAD_BYTES: u64 = 16;

impl Entry {
    pub fn data(term: u64, data: Vec<u8>) -> Self {
        Self::spanning(term, 1, data)
    }

    /// An entry covering `span` indexes (a batch of `span` records).
    pub fn spanning(term: u64, span: u64, data: Vec<u8>) -> Self {
        Self {
            term,
            span,
            payload: Payload::Data(data),
        }
    }

    pub fn size_bytes(&self) -> u64 {
        ENTRY_OVERHEAD_BYTES
            + match &self.payload {
                Payload::Empty => 0,
                Payload::Data(d) => d.len() as u64,
                Payload::Membership(m) => 8 * (m.voters.len() + m.learners.len()) as u64,
            }
    }
}

/// Who votes and who only follows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    /// Receive the log, never vote, never count for a quorum: a replica catching up before
    /// it is promoted.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    pub fn of_voters(voters: &[NodeId]) -> Self {
        Self {
            voters: voters.iter().copied().collect(),
            learners: BTreeSet::new(),
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Voters and learners.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// One change of membership: a single server at a time (Raft thesis §4.1), so the majorities
/// of the configurations before and after always overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new replica that receives the log without voting.
    AddLearner(NodeId),
    /// A learner that holds every committed entry becomes a voter.
    Promote(NodeId),
    /// A voter or learner leaves (not the leader: transfer leadership first).
    Remove(NodeId),
}

/// What the log held before its first entry: where it starts, the term there, the membership
/// in force there, and the state machine's bytes (empty for a partition, whose records before
/// the log start are simply gone; the controller's metadata image for the controller).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub index: u64,
    pub term: u64,
    pub membership: Membership,
    pub data: Vec<u8>,
}

/// What must be durable before the node says anything that depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    pub voted_for: Option<NodeId>,
}

/// A message between two nodes of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Would you vote for me at `term`?" — asked before the real election, without
    /// changing anyone's term: a node cut off from the others cannot disrupt them on return.
    PreVote {
        term: u64,
        last_index: u64,
        last_term: u64,
    },
    /// Granted: the term asked for. Refused: the responder's term.
    PreVoteResponse {
        term: u64,
        granted: bool,
    },
    Vote {
        term: u64,
        last_index: u64,
        last_term: u64,
        /// Asked on the leader's behalf (leadership transfer): leader stickiness does not
        /// apply.
        transfer: bool,
    },
    VoteResponse {
        term: u64,
        granted: bool,
    },
    /// Entries after `prev_index` (whose term is `prev_term`); empty: a heartbeat.
    Append {
        term: u64,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// `success`: the follower's log matches the leader's through `index` (durably).
    /// Otherwise `index` is where the leader should try next (the conflict hint).
    AppendResponse {
        term: u64,
        success: bool,
        index: u64,
    },
    /// From the leader handing over: campaign now (the receiver's log is up to date).
    TimeoutNow {
        term: u64,
    },
    /// The leader is alive. `commit` is the leader's commit index capped at what this
    /// follower is known to hold, so it can be applied without a log check. `round`: the
    /// leader's latest read round ([`crate::read_index`]), echoed in the answer.
    Heartbeat {
        term: u64,
        commit: u64,
        round: u64,
    },
    /// `last_index`: the end of the follower's log (a hint: lost appends are resent from it).
    /// `round`: the heartbeat's, echoed.
    HeartbeatResponse {
        term: u64,
        last_index: u64,
        round: u64,
    },
    /// The follower needs entries the leader no longer holds: start over from this log
    /// start (a partition's retention moved past the follower, or the controller compacted).
    /// Answered with an [`Message::AppendResponse`].
    InstallSnapshot {
        term: u64,
        snapshot: Snapshot,
    },
}

impl Message {
    /// Bytes the message counts for against message size limits: a fixed header plus the
    /// entries' or the snapshot's bytes.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 32;
        HEADER_BYTES
            + match self {
                Self::Append { entries, .. } => entries.iter().map(Entry::size_bytes).sum(),
                Self::InstallSnapshot { snapshot, .. } => {
                    snapshot.data.len() as u64
                        + 8 * (snapshot.membership.voters.len()
                            + snapshot.membership.learners.len())
                            as u64
                }
                _ => 0,
            }
    }

    pub fn term(&self) -> u64 {
        match self {
            Self::PreVote { term, .. }
            | Self::PreVoteResponse { term, .. }
            | Self::Vote { term, .. }
            | Self::VoteResponse { term, .. }
            | Self::Append { term, .. }
            | Self::AppendResponse { term, .. }
            | Self::TimeoutNow { term }
            | Self::Heartbeat { term, .. }
            | Self::HeartbeatResponse { term, .. }
            | Self::InstallSnapshot { term, .. } => *term,
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// What the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make term and vote durable.
    PersistHardState(HardState),
    /// Make the log hold `entries` from `first_index` on, dropping whatever followed
    /// `first_index - 1`; then report [`crate::RaftNode::persisted`] with `write`. `sync`:
    /// report only once fsynced ([`Config::sync_writes`]); otherwise once written.
    PersistEntries {
        write: u64,
        first_index: u64,
        entries: Vec<Entry>,
        sync: bool,
    },
    /// Replace the whole log with `snapshot` (the log now ends at its index); then report
    /// [`crate::RaftNode::persisted`] with `write`.
    InstallSnapshot {
        write: u64,
        snapshot: Snapshot,
    },
    /// Read entries from storage for follower `to`, starting with the one covering
    /// `from_index`, at most `max_entries` and about `max_bytes`; then report
    /// [`crate::RaftNode::entries_read`] (empty on a read error).
    ReadEntries {
        to: NodeId,
        from_index: u64,
        max_entries: u64,
        max_bytes: u64,
    },
    Send {
        to: NodeId,
        message: Message,
    },
    /// Entries up to this index are committed: apply them (once durable locally).
    Committed(u64),
    RoleChanged {
        role: Role,
        term: u64,
    },
    /// The read `id` ([`crate::RaftNode::read_index`]) may be served once the state machine
    /// has applied entries up to `index`: a quorum confirmed this node led after it was asked.
    ReadReady {
        id: u64,
        index: u64,
    },
    /// Leadership ended before the read `id` was confirmed: ask the new leader.
    ReadDropped {
        id: u64,
    },
}

/// A deliberately broken rule, to show the simulator catches it (tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The leader commits what it alone has durable.
    CommitWithoutQuorum,
    /// Votes are granted without making the vote durable first.
    VoteNotPersisted,
    /// A read is confirmed without asking a quorum (the leader trusts that it still leads).
    ReadWithoutQuorum,
}

/// A group's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub id: NodeId,
    /// The voters a new group starts with (bootstrap); afterwards the log's membership
    /// entries rule.
    pub voters: Vec<NodeId>,
    /// Ticks without a leader before an election starts: randomized in
    /// `election_ticks..2 * election_ticks`.
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// Most entries in one Append.
    pub max_entries_per_append: usize,
    /// Most entries sent to one follower and not acknowledged (pipelining bound).
    pub max_entries_in_flight: u64,
    /// Most bytes in one Append (at least one entry is always sent; a proposal larger than
    /// this is refused).
    pub max_bytes_per_append: u64,
    /// Most bytes sent to one follower and not acknowledged.
    pub max_bytes_in_flight: u64,
    /// Entry writes are reported durable only once fsynced (`true`: a quorum's disks hold a
    /// committed entry); `false` counts a write in the page cache (faster; a committed entry
    /// is lost if a quorum loses power at once). Term and vote are always fsynced.
    pub sync_writes: bool,
    /// Seeds the randomized election timeout (deterministic per node).
    pub seed: u64,
    pub broken: Option<Broken>,
}

impl Config {
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Self {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_entries_per_append: 64,
            max_entries_in_flight: 1_024,
            max_bytes_per_append: 1 << 20,
            max_bytes_in_flight: 8 << 20,
            sync_writes: true,
            seed: id,
            broken: None,
        }
    }
}

/// Why a proposal or a membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// Ask the leader (when known).
    NotLeader {
        leader: Option<NodeId>,
    },
    /// Leadership is being handed over; retry at the new leader.
    Transferring {
        to: NodeId,
    },
    /// A batch of no entries.
    Empty,
    /// The entries would reach past [`MAX_INDEX`].
    IndexesExhausted,
    /// An entry covers at least one index.
    ZeroSpan,
    /// The entry is larger than one Append may carry.
    TooLarge {
        bytes: u64,
        max_bytes: u64,
    },
    /// One membership change at a time: the previous one (at this index) is not committed.
    ChangeInProgress {
        index: u64,
    },
    /// A new leader changes membership only once an entry of its own term is committed.
    LeaderNotReady,
    /// The node is already a member (as voter or learner).
    AlreadyMember(NodeId),
    NotAMember(NodeId),
    NotALearner(NodeId),
    /// A learner is promoted once it holds every committed entry.
    NotCaughtUp {
        node: NodeId,
        matched: u64,
        commit: u64,
    },
    /// The leader cannot remove itself: transfer leadership first.
    RemovingLeader,
    /// Too many reads are waiting for the leader's heartbeats to be answered.
    TooManyReads {
        max: usize,
    },
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotLeader { leader: Some(l) } => write!(f, "not the leader: node {l} leads"),
            Self::NotLeader { leader: None } => {
                write!(f, "not the leader and no leader is known: retry after an election")
            }
            Self::Transferring { to } => {
                write!(f, "leadership is moving to node {to}: retry there")
            }
            Self::TooLarge { bytes, max_bytes } => write!(
                f,
                "entry of {bytes} bytes exceeds max_bytes_per_append ({max_bytes}): split it"
            ),
            Self::Empty => write!(f, "nothing to propose: the batch is empty"),
            Self::IndexesExhausted => write!(
                f,
                "the log's indexes (offsets) would pass {MAX_INDEX}: the partition is full"
            ),
            Self::ZeroSpan => write!(f, "an entry must cover at least one index (span 0)"),
            Self::ChangeInProgress { index } => write!(
                f,
                "a membership change (entry {index}) is not committed yet: retry once it is"
            ),
            Self::LeaderNotReady => write!(
                f,
                "the new leader has not committed an entry of its term yet: retry shortly"
            ),
            Self::AlreadyMember(n) => write!(f, "node {n} is already a member"),
            Self::NotAMember(n) => write!(f, "node {n} is not a member"),
            Self::NotALearner(n) => write!(f, "node {n} is not a learner: add it as one first"),
            Self::NotCaughtUp {
                node,
                matched,
                commit,
            } => write!(
                f,
                "learner {node} holds entries up to {matched}, the commit index is {commit}: promote it once it has caught up"
            ),
            Self::RemovingLeader => {
                write!(f, "the leader cannot remove itself: transfer leadership first")
            }
            Self::TooManyReads { max } => write!(
                f,
                "{max} reads already wait for a quorum to confirm this leader: retry shortly"
            ),
        }
    }
}

impl std::error::Error for ProposeError {}

/// Why [`crate::RaftNode::compact`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactError {
    /// Only what is committed and durable here may leave the log.
    NotDurablyCommitted { index: u64, limit: u64 },
    /// The log already starts after this index.
    AlreadyCompacted { index: u64, start: u64 },
    /// Compaction stops at the end of an entry, not inside one.
    NotABoundary { index: u64 },
}

impl std::fmt::Display for CompactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotDurablyCommitted { index, limit } => write!(
                f,
                "cannot compact to {index}: only entries up to {limit} are committed and durable here"
            ),
            Self::NotABoundary { index } => write!(
                f,
                "cannot compact to {index}: it falls inside an entry; compact to an entry's last index"
            ),
            Self::AlreadyCompacted { index, start } => {
                write!(f, "cannot compact to {index}: the log already starts after {start}")
            }
        }
    }
}

impl std::error::Error for CompactError {}
