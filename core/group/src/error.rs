//! [`GroupError`]: what a coordinator refuses, typed, with a message saying what to do.

/// Why a group request (or one partition of it) was refused. Nothing changed when it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member's epoch is not the coordinator's: another incarnation replaced it, or it
    /// was removed. It must rejoin with epoch 0 (and give up its partitions).
    #[error("member {member_id} of group {group} is fenced: its epoch {got} is not the coordinator's {expected}; rejoin the group with epoch 0")]
    FencedMemberEpoch {
        group: String,
        member_id: String,
        got: i32,
        expected: i32,
    },
    /// The member is not (or no longer) in the group.
    #[error("group {group} has no member {member_id} (it left or its session expired); rejoin the group with epoch 0")]
    UnknownMemberId { group: String, member_id: String },
    /// An offset commit from an earlier epoch of a member that is still in the group.
    #[error("offset commit of member {member_id} of group {group} carries epoch {got}, older than its current epoch {expected}; commit again with the current epoch")]
    StaleGeneration {
        group: String,
        member_id: String,
        got: i32,
        expected: i32,
    },
    /// The group does not exist.
    #[error("no consumer group {0:?} on this coordinator; list groups with `quiver group list`")]
    UnknownGroup(String),
    /// A commit for a partition the committing member does not own.
    #[error("member {member_id} of group {group} does not own {topic}/{partition}; commit only the partitions assigned to it")]
    UnassignedPartition {
        group: String,
        member_id: String,
        topic: String,
        partition: i32,
    },
    /// The group has live members, and the request needs it empty.
    #[error("group {0:?} has live members; stop them first (or pass --force)")]
    GroupNotEmpty(String),
    /// A node-wide limit.
    #[error("{what}: the limit is {limit}; {hint}")]
    LimitExceeded {
        what: String,
        limit: usize,
        hint: &'static str,
    },
    /// A malformed or out-of-bounds field.
    #[error("invalid group request: {0}")]
    Invalid(String),
}
