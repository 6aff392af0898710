//! The controller group's log on disk, as a format (sans-IO): one append-only file of
//! records, each `len:u32 crc32c:u32 kind:u8 body` (big-endian; the CRC covers kind and
//! body). Replaying the records in order rebuilds the Raft member's durable state; the first
//! record that is cut short or fails its CRC ends the valid log (a torn write at the tail:
//! the driver truncates the file there). When the file grows, the driver rewrites it as one
//! snapshot record, the hard state and the entries after the snapshot (temp file, fsync,
//! rename).
//!
//! ```text
//! 1 hard state: term:u64 voted:u8 voted_for:u64
//! 2 entries:    first_index:u64 entries (see quiver_raft::codec): replace the log from there
//! 3 snapshot:   snapshot (see quiver_raft::codec): the log starts after it
//! ```

use quiver_raft::codec::{decode_entries, decode_snapshot, encode_entries, encode_snapshot};
use quiver_raft::log::RaftLog;
use quiver_raft::types::{Entry, HardState, Snapshot};

/// Most bytes of one record (a metadata image must fit).
pub const MAX_RECORD_BYTES: usize = 64 << 20;
const HEADER_BYTES: usize = 8;

const HARD_STATE: u8 = 1;
const ENTRIES: u8 = 2;
const SNAPSHOT: u8 = 3;

/// One change to the durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    HardState(HardState),
    Entries {
        first_index: u64,
        entries: Vec<Entry>,
    },
    Snapshot(Snapshot),
}

/// The bytes of `record`, to append.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut body = Vec::new();
    let kind = match record {
        Record::HardState(h) => {
            body.extend_from_slice(&h.term.to_be_bytes());
            body.push(u8::from(h.voted_for.is_some()));
            body.extend_from_slice(&h.voted_for.unwrap_or(0).to_be_bytes());
            HARD_STATE
        }
        Record::Entries {
            first_index,
            entries,
        } => {
            body.extend_from_slice(&first_index.to_be_bytes());
            encode_entries(entries, &mut body);
            ENTRIES
        }
        Record::Snapshot(s) => {
            encode_snapshot(s, &mut body);
            SNAPSHOT
        }
    };
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, &body);
    let mut out = Vec::with_capacity(HEADER_BYTES + 1 + body.len());
    out.extend_from_slice(&((1 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&body);
    out
}

/// What replaying a file recovered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    pub hard: HardState,
    /// The snapshot (index 0: none) and the entries after it.
    pub log: RaftLog,
    /// Bytes of valid records; anything after is a torn or damaged tail to cut off.
    pub valid_bytes: usize,
    /// Why replay stopped before the end of the bytes, if it did.
    pub stopped: Option<String>,
}

fn decode_record(kind: u8, body: &[u8]) -> Result<Record, String> {
    match kind {
        HARD_STATE => {
            if body.len() != 17 {
                return Err(format!("hard state of {} bytes", body.len()));
            }
            let mut t = [0u8; 8];
            t.copy_from_slice(&body[..8]);
            let mut v = [0u8; 8];
            v.copy_from_slice(&body[9..17]);
            Ok(Record::HardState(HardState {
                term: u64::from_be_bytes(t),
                voted_for: (body[8] == 1).then(|| u64::from_be_bytes(v)),
            }))
        }
        ENTRIES => {
            if body.len() < 8 {
                return Err("entries record too short".into());
            }
            let mut f = [0u8; 8];
            f.copy_from_slice(&body[..8]);
            let entries = decode_entries(&body[8..]).map_err(|e| e.to_string())?;
            Ok(Record::Entries {
                first_index: u64::from_be_bytes(f),
                entries,
            })
        }
        SNAPSHOT => decode_snapshot(body)
            .map(Record::Snapshot)
            .map_err(|e| e.to_string()),
        k => Err(format!("unknown record kind {k}")),
    }
}

/// Replays a file's bytes.
pub fn replay(bytes: &[u8]) -> Recovered {
    let mut r = Recovered::default();
    let mut at = 0;
    while at < bytes.len() {
        let stop = |r: &mut Recovered, why: String| r.stopped = Some(why);
        let Some(header) = bytes.get(at..at + HEADER_BYTES) else {
            stop(&mut r, format!("a record header cut short at byte {at}"));
            break;
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_RECORD_BYTES {
            stop(&mut r, format!("a record length of {len} at byte {at}"));
            break;
        }
        let Some(payload) = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else {
            stop(&mut r, format!("a record cut short at byte {at}"));
            break;
        };
        if crc32c::crc32c(payload) != crc {
            stop(&mut r, format!("a record with a wrong CRC at byte {at}"));
            break;
        }
        let record = match decode_record(payload[0], &payload[1..]) {
            Ok(record) => record,
            Err(why) => {
                stop(&mut r, format!("a malformed record at byte {at}: {why}"));
                break;
            }
        };
        match record {
            Record::HardState(h) => r.hard = h,
            Record::Entries {
                first_index,
                entries,
            } => {
                if first_index <= r.log.snapshot().index || first_index > r.log.last_index() + 1 {
                    stop(
                        &mut r,
                        format!("entries from {first_index} do not follow the log at byte {at}"),
                    );
                    break;
                }
                r.log.truncate_after(first_index - 1);
                r.log.extend(entries);
            }
            Record::Snapshot(s) => {
                let keep: Vec<Entry> =
                    if s.index < r.log.last_index() && r.log.term_at(s.index) == Some(s.term) {
                        let mut tail = r.log.clone();
                        tail.compact(s.index, s.data.clone());
                        tail.entries().to_vec()
                    } else {
                        Vec::new()
                    };
                r.log = RaftLog::new(s, keep);
            }
        }
        at += HEADER_BYTES + len;
        r.valid_bytes = at;
    }
    r
}

/// The records of a rewritten file: the snapshot, the hard state, the entries after it.
pub fn rewrite(hard: HardState, log: &RaftLog) -> Vec<u8> {
    let mut out = encode(&Record::Snapshot(log.snapshot().clone()));
    out.extend(encode(&Record::HardState(hard)));
    if !log.is_empty() {
        out.extend(encode(&Record::Entries {
            first_index: log.tail_start(),
            entries: log.entries().to_vec(),
        }));
    }
    out
}
