//! Entries, messages, actions and configuration of one Raft group.

/// A node of the group.
pub type NodeId = u64;

/// One log entry: the term it was proposed in and its payload (in Quiver a RecordBatch, whose
/// partition leader epoch is this term).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
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
}

impl Message {
    pub fn term(&self) -> u64 {
        match self {
            Self::PreVote { term, .. }
            | Self::PreVoteResponse { term, .. }
            | Self::Vote { term, .. }
            | Self::VoteResponse { term, .. }
            | Self::Append { term, .. }
            | Self::AppendResponse { term, .. }
            | Self::TimeoutNow { term } => *term,
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
    /// `first_index - 1`; then report [`crate::RaftNode::persisted`] with `write`.
    PersistEntries {
        write: u64,
        first_index: u64,
        entries: Vec<Entry>,
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
}

/// A deliberately broken rule, to show the simulator catches it (tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The leader commits what it alone has durable.
    CommitWithoutQuorum,
    /// Votes are granted without making the vote durable first.
    VoteNotPersisted,
}

/// A group's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub id: NodeId,
    pub voters: Vec<NodeId>,
    /// Ticks without a leader before an election starts: randomized in
    /// `election_ticks..2 * election_ticks`.
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// Most entries in one Append.
    pub max_entries_per_append: usize,
    /// Most entries sent to one follower and not acknowledged (pipelining bound).
    pub max_entries_in_flight: u64,
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
            seed: id,
            broken: None,
        }
    }
}
