//! The bytes of an [`Envelope`] between two nodes (the internal QUIC stream carries one per
//! frame). A plain big-endian layout, versioned, every length bounded before anything is
//! allocated; decoding returns a typed [`DecodeError`], never panics (fuzzed:
//! `core/fuzz/fuzz_targets/raft_envelope_decode.rs`).
//!
//! ```text
//! envelope  := version:u8 (2) count:u32 message*
//! message   := group:u64 kind:u8 fields
//! entry     := term:u64 span:u64 payload
//! payload   := 0 | 1 len:u32 bytes | 2 membership
//! membership:= voters:u16 id:u64* learners:u16 id:u64*
//! snapshot  := index:u64 term:u64 membership len:u32 bytes
//! ```

use crate::multi::{Envelope, GroupId};
use crate::types::{Entry, Membership, Message, NodeId, Payload, Snapshot};

/// 2: heartbeats carry the read round.
pub const VERSION: u8 = 2;
/// Most messages in one envelope.
pub const MAX_MESSAGES: usize = 1 << 20;
/// Most entries in one Append.
pub const MAX_ENTRIES: usize = 1 << 16;
/// Most nodes in one membership.
pub const MAX_MEMBERS: usize = 1 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end inside a field.
    Truncated,
    UnknownVersion(u8),
    UnknownKind(u8),
    UnknownPayload(u8),
    /// A count or length past its limit (or past the bytes left).
    TooLarge {
        what: &'static str,
        value: u64,
    },
    /// Bytes left after the last message.
    TrailingBytes(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => write!(f, "raft envelope truncated"),
            Self::UnknownVersion(v) => write!(
                f,
                "raft envelope version {v} is not {VERSION}: the peer runs another Quiver version"
            ),
            Self::UnknownKind(k) => write!(f, "unknown raft message kind {k}"),
            Self::UnknownPayload(k) => write!(f, "unknown raft entry payload kind {k}"),
            Self::TooLarge { what, value } => {
                write!(f, "raft envelope: {what} of {value} is past its limit")
            }
            Self::TrailingBytes(n) => write!(f, "raft envelope: {n} bytes after the last message"),
        }
    }
}

impl std::error::Error for DecodeError {}

const PRE_VOTE: u8 = 1;
const PRE_VOTE_RESPONSE: u8 = 2;
const VOTE: u8 = 3;
const VOTE_RESPONSE: u8 = 4;
const APPEND: u8 = 5;
const APPEND_RESPONSE: u8 = 6;
const TIMEOUT_NOW: u8 = 7;
const HEARTBEAT: u8 = 8;
const HEARTBEAT_RESPONSE: u8 = 9;
const INSTALL_SNAPSHOT: u8 = 10;

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_membership(out: &mut Vec<u8>, m: &Membership) {
    for set in [&m.voters, &m.learners] {
        out.extend_from_slice(&(set.len() as u16).to_be_bytes());
        for id in set {
            put_u64(out, *id);
        }
    }
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_u64(out, e.term);
    put_u64(out, e.span);
    match &e.payload {
        Payload::Empty => out.push(0),
        Payload::Data(d) => {
            out.push(1);
            put_bytes(out, d);
        }
        Payload::Membership(m) => {
            out.push(2);
            put_membership(out, m);
        }
    }
}

fn put_message(out: &mut Vec<u8>, m: &Message) {
    match m {
        Message::PreVote {
            term,
            last_index,
            last_term,
        } => {
            out.push(PRE_VOTE);
            put_u64(out, *term);
            put_u64(out, *last_index);
            put_u64(out, *last_term);
        }
        Message::PreVoteResponse { term, granted } => {
            out.push(PRE_VOTE_RESPONSE);
            put_u64(out, *term);
            put_bool(out, *granted);
        }
        Message::Vote {
            term,
            last_index,
            last_term,
            transfer,
        } => {
            out.push(VOTE);
            put_u64(out, *term);
            put_u64(out, *last_index);
            put_u64(out, *last_term);
            put_bool(out, *transfer);
        }
        Message::VoteResponse { term, granted } => {
            out.push(VOTE_RESPONSE);
            put_u64(out, *term);
            put_bool(out, *granted);
        }
        Message::Append {
            term,
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.push(APPEND);
            put_u64(out, *term);
            put_u64(out, *prev_index);
            put_u64(out, *prev_term);
            put_u64(out, *commit);
            out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for e in entries {
                put_entry(out, e);
            }
        }
        Message::AppendResponse {
            term,
            success,
            index,
        } => {
            out.push(APPEND_RESPONSE);
            put_u64(out, *term);
            put_bool(out, *success);
            put_u64(out, *index);
        }
        Message::TimeoutNow { term } => {
            out.push(TIMEOUT_NOW);
            put_u64(out, *term);
        }
        Message::Heartbeat {
            term,
            commit,
            round,
        } => {
            out.push(HEARTBEAT);
            put_u64(out, *term);
            put_u64(out, *commit);
            put_u64(out, *round);
        }
        Message::HeartbeatResponse {
            term,
            last_index,
            round,
        } => {
            out.push(HEARTBEAT_RESPONSE);
            put_u64(out, *term);
            put_u64(out, *last_index);
            put_u64(out, *round);
        }
        Message::InstallSnapshot { term, snapshot } => {
            out.push(INSTALL_SNAPSHOT);
            put_u64(out, *term);
            put_u64(out, snapshot.index);
            put_u64(out, snapshot.term);
            put_membership(out, &snapshot.membership);
            put_bytes(out, &snapshot.data);
        }
    }
}

/// The bytes of `envelope`.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + envelope.size_bytes() as usize);
    out.push(VERSION);
    out.extend_from_slice(&(envelope.messages.len() as u32).to_be_bytes());
    for (group, m) in &envelope.messages {
        put_u64(&mut out, *group);
        put_message(&mut out, m);
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::TooLarge {
                what: "boolean",
                value: u64::from(v),
            }),
        }
    }
    /// A count of items of at least `min_item_bytes` each, checked against `max` and the
    /// bytes left (nothing is allocated for a count the bytes cannot hold).
    fn count(
        &mut self,
        n: u64,
        max: usize,
        min_item_bytes: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let too_large = DecodeError::TooLarge { what, value: n };
        let n = usize::try_from(n).map_err(|_| too_large.clone())?;
        if n > max || n.saturating_mul(min_item_bytes) > self.bytes.len() {
            return Err(too_large);
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = u64::from(self.u32()?);
        let n = self.count(len, usize::MAX, 1, "byte length")?;
        Ok(self.take(n)?.to_vec())
    }
    fn ids(&mut self) -> Result<std::collections::BTreeSet<NodeId>, DecodeError> {
        let n = u64::from(self.u16()?);
        let n = self.count(n, MAX_MEMBERS, 8, "membership size")?;
        (0..n).map(|_| self.u64()).collect()
    }
    fn membership(&mut self) -> Result<Membership, DecodeError> {
        Ok(Membership {
            voters: self.ids()?,
            learners: self.ids()?,
        })
    }
    fn entry(&mut self) -> Result<Entry, DecodeError> {
        let term = self.u64()?;
        let span = self.u64()?;
        let payload = match self.u8()? {
            0 => Payload::Empty,
            1 => Payload::Data(self.bytes()?),
            2 => Payload::Membership(self.membership()?),
            k => return Err(DecodeError::UnknownPayload(k)),
        };
        Ok(Entry {
            term,
            span,
            payload,
        })
    }
    fn message(&mut self) -> Result<Message, DecodeError> {
        Ok(match self.u8()? {
            PRE_VOTE => Message::PreVote {
                term: self.u64()?,
                last_index: self.u64()?,
                last_term: self.u64()?,
            },
            PRE_VOTE_RESPONSE => Message::PreVoteResponse {
                term: self.u64()?,
                granted: self.bool()?,
            },
            VOTE => Message::Vote {
                term: self.u64()?,
                last_index: self.u64()?,
                last_term: self.u64()?,
                transfer: self.bool()?,
            },
            VOTE_RESPONSE => Message::VoteResponse {
                term: self.u64()?,
                granted: self.bool()?,
            },
            APPEND => {
                let term = self.u64()?;
                let prev_index = self.u64()?;
                let prev_term = self.u64()?;
                let commit = self.u64()?;
                let n = u64::from(self.u32()?);
                let n = self.count(n, MAX_ENTRIES, 17, "entries")?;
                let entries = (0..n).map(|_| self.entry()).collect::<Result<_, _>>()?;
                Message::Append {
                    term,
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
            APPEND_RESPONSE => Message::AppendResponse {
                term: self.u64()?,
                success: self.bool()?,
                index: self.u64()?,
            },
            TIMEOUT_NOW => Message::TimeoutNow { term: self.u64()? },
            HEARTBEAT => Message::Heartbeat {
                term: self.u64()?,
                commit: self.u64()?,
                round: self.u64()?,
            },
            HEARTBEAT_RESPONSE => Message::HeartbeatResponse {
                term: self.u64()?,
                last_index: self.u64()?,
                round: self.u64()?,
            },
            INSTALL_SNAPSHOT => {
                let term = self.u64()?;
                let index = self.u64()?;
                let snapshot_term = self.u64()?;
                let membership = self.membership()?;
                let data = self.bytes()?;
                Message::InstallSnapshot {
                    term,
                    snapshot: Snapshot {
                        index,
                        term: snapshot_term,
                        membership,
                        data,
                    },
                }
            }
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

/// The envelope in `bytes`, or why not.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let mut r = Reader { bytes };
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let n = u64::from(r.u32()?);
    let n = r.count(n, MAX_MESSAGES, 9, "messages")?;
    let mut messages: Vec<(GroupId, Message)> = Vec::with_capacity(n);
    for _ in 0..n {
        let group = r.u64()?;
        messages.push((group, r.message()?));
    }
    if !r.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes(r.bytes.len()));
    }
    Ok(Envelope { messages })
}

/// The bytes of `entries` (a count, then each entry), for storage.
pub fn encode_entries(entries: &[Entry], out: &mut Vec<u8>) {
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        put_entry(out, e);
    }
}

/// The bytes of `snapshot`, for storage.
pub fn encode_snapshot(snapshot: &Snapshot, out: &mut Vec<u8>) {
    put_u64(out, snapshot.index);
    put_u64(out, snapshot.term);
    put_membership(out, &snapshot.membership);
    put_bytes(out, &snapshot.data);
}

/// Entries written by [`encode_entries`]; the bytes must hold exactly them.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut r = Reader { bytes };
    let n = u64::from(r.u32()?);
    let n = r.count(n, usize::MAX, 17, "entries")?;
    let entries = (0..n).map(|_| r.entry()).collect::<Result<_, _>>()?;
    if !r.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes(r.bytes.len()));
    }
    Ok(entries)
}

/// A snapshot written by [`encode_snapshot`]; the bytes must hold exactly it.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
    let mut r = Reader { bytes };
    let index = r.u64()?;
    let term = r.u64()?;
    let membership = r.membership()?;
    let data = r.bytes()?;
    if !r.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes(r.bytes.len()));
    }
    Ok(Snapshot {
        index,
        term,
        membership,
        data,
    })
}
