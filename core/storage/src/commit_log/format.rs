//! The commit log's on-disk frames (sans-IO): encode one round, decode a file's rounds.
//!
//! A file `<seq>.wal` is a sequence of page-aligned frames, one per write round:
//!
//! ```text
//! frame  := crc32c:u32 | payload_len:u32 | seq:u64 | entry*      (little endian)
//!           crc32c covers payload_len, seq and the entries; the frame is then zero-padded
//!           to the next 4 KiB boundary, where the next frame starts.
//! entry  := log_id:u64 | truncate_from:u64 | key_len:u16 | batches_len:u32 | key | batches
//! ```
//!
//! `seq` repeats the file's sequence number, so a recycled file's old frames read as the end.
//! `key` names the partition directory relative to the data directory; `log_id` is that
//! directory's incarnation (a deleted and recreated topic gets a new one). `truncate_from` is
//! [`NO_TRUNCATION`] or an offset the log was truncated to before `batches` were appended.
//! `batches` are record batches exactly as written to the partition's segment.
//!
//! Reading stops at the first frame that is short, has another `seq`, or fails its CRC: only
//! the last round can be torn, because a round is written only after the previous one's
//! fdatasync returned.

use std::rc::Rc;

use bytes::Bytes;

/// Frame header: crc32c, payload length, sequence number.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Entry header: log id, truncation offset, key length, batches length.
pub const ENTRY_HEADER_BYTES: usize = 22;
/// `truncate_from` of an entry that only appends.
pub const NO_TRUNCATION: u64 = u64::MAX;
/// Frames start on page boundaries (O_DIRECT writes whole pages).
pub const PAGE_BYTES: usize = 4096;

/// One partition's contribution to a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub log_id: u64,
    pub truncate_from: u64,
    /// Shared with the partition log that made the entry: no allocation per round.
    pub key: Rc<str>,
    /// Whole record batches, back to back.
    pub batches: Vec<Bytes>,
}

impl Entry {
    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER_BYTES + self.key.len() + self.batches.iter().map(Bytes::len).sum::<usize>()
    }
}

/// Bytes one frame of `entries` takes on disk, padding included.
pub fn frame_len(entries: &[&Entry]) -> usize {
    let payload: usize = entries.iter().map(|e| e.encoded_len()).sum();
    (FRAME_HEADER_BYTES + payload).next_multiple_of(PAGE_BYTES)
}

/// Encodes one frame into `out`, which must be exactly [`frame_len`] bytes (zero padding is
/// written too). Keys longer than `u16::MAX` bytes or batches over 4 GiB cannot be encoded
/// (the callers' bounds are far below).
pub fn encode_frame(seq: u64, entries: &[&Entry], out: &mut [u8]) {
    let mut at = FRAME_HEADER_BYTES;
    for e in entries {
        let batches_len: usize = e.batches.iter().map(Bytes::len).sum();
        out[at..at + 8].copy_from_slice(&e.log_id.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&e.truncate_from.to_le_bytes());
        out[at + 16..at + 18].copy_from_slice(&(e.key.len() as u16).to_le_bytes());
        out[at + 18..at + 22].copy_from_slice(&(batches_len as u32).to_le_bytes());
        at += ENTRY_HEADER_BYTES;
        out[at..at + e.key.len()].copy_from_slice(e.key.as_bytes());
        at += e.key.len();
        for b in &e.batches {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
    }
    let payload_len = (at - FRAME_HEADER_BYTES) as u32;
    out[at..].fill(0);
    out[4..8].copy_from_slice(&payload_len.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[4..at]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Why reading a file stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// End of the bytes, a zero header, or a frame of an older generation of the file.
    Clean,
    /// A frame that fails its CRC or does not parse: the torn last round.
    Torn(String),
}

/// Decodes the frames of file `seq` from its bytes: the entries of each valid frame in order,
/// and why reading stopped. Never panics on any input.
pub fn decode_file(seq: u64, bytes: &[u8]) -> (Vec<Entry>, End) {
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        let Some(header) = bytes.get(at..at + FRAME_HEADER_BYTES) else {
            return (entries, End::Clean);
        };
        let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let payload_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let frame_seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
        if payload_len == 0 || frame_seq != seq {
            return (entries, End::Clean);
        }
        let end = at + FRAME_HEADER_BYTES + payload_len;
        let Some(covered) = bytes.get(at + 4..end) else {
            return (
                entries,
                End::Torn(format!("frame at {at} runs past the end of the file")),
            );
        };
        if crc32c::crc32c(covered) != crc {
            return (entries, End::Torn(format!("frame at {at} fails its CRC")));
        }
        match decode_entries(&bytes[at + FRAME_HEADER_BYTES..end]) {
            Ok(mut decoded) => entries.append(&mut decoded),
            Err(why) => return (entries, End::Torn(format!("frame at {at}: {why}"))),
        }
        at = end.next_multiple_of(PAGE_BYTES);
    }
}

fn decode_entries(mut payload: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        let Some(h) = payload.get(..ENTRY_HEADER_BYTES) else {
            return Err("entry header cut short".into());
        };
        let log_id = u64::from_le_bytes(h[0..8].try_into().unwrap_or([0; 8]));
        let truncate_from = u64::from_le_bytes(h[8..16].try_into().unwrap_or([0; 8]));
        let key_len = u16::from_le_bytes([h[16], h[17]]) as usize;
        let batches_len = u32::from_le_bytes([h[18], h[19], h[20], h[21]]) as usize;
        let rest = &payload[ENTRY_HEADER_BYTES..];
        let Some(key) = rest.get(..key_len) else {
            return Err("entry key cut short".into());
        };
        let Some(batches) = rest.get(key_len..key_len + batches_len) else {
            return Err("entry batches cut short".into());
        };
        let key =
            Rc::from(std::str::from_utf8(key).map_err(|_| "entry key is not UTF-8".to_string())?);
        out.push(Entry {
            log_id,
            truncate_from,
            key,
            batches: vec![Bytes::copy_from_slice(batches)],
        });
        payload = &rest[key_len + batches_len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, data: &[u8]) -> Entry {
        Entry {
            log_id: 7,
            truncate_from: NO_TRUNCATION,
            key: key.into(),
            batches: vec![Bytes::copy_from_slice(data), Bytes::from_static(b"tail")],
        }
    }

    fn file_of(frames: &[(u64, Vec<Entry>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, entries) in frames {
            let refs: Vec<&Entry> = entries.iter().collect();
            let mut buf = vec![0xAA; frame_len(&refs)];
            encode_frame(*seq, &refs, &mut buf);
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn frames_round_trip_and_stop_at_zeroes() {
        let a = entry("t-0", b"hello");
        let b = entry("t-1", &[9u8; 5000]);
        let mut bytes = file_of(&[(3, vec![a.clone(), b.clone()]), (3, vec![a.clone()])]);
        bytes.extend_from_slice(&[0u8; 8192]);
        let (entries, end) = decode_file(3, &bytes);
        assert_eq!(end, End::Clean);
        let keys: Vec<&str> = entries.iter().map(|e| &*e.key).collect();
        assert_eq!(keys, ["t-0", "t-1", "t-0"]);
        assert_eq!(&entries[1].batches[0][..5000], &[9u8; 5000][..]);
        assert_eq!(&entries[1].batches[0][5000..], b"tail");
    }

    #[test]
    fn an_older_generation_reads_as_the_end() {
        let bytes = file_of(&[(4, vec![entry("a", b"x")]), (2, vec![entry("b", b"y")])]);
        let (entries, end) = decode_file(4, &bytes);
        assert_eq!(entries.len(), 1);
        assert_eq!(end, End::Clean);
        assert!(decode_file(5, &bytes).0.is_empty());
    }

    #[test]
    fn a_torn_last_frame_is_dropped_and_reported() {
        let mut bytes = file_of(&[
            (1, vec![entry("a", b"x")]),
            (1, vec![entry("b", &[1; 100])]),
        ]);
        bytes[PAGE_BYTES + FRAME_HEADER_BYTES + 40] ^= 0xFF;
        let (entries, end) = decode_file(1, &bytes);
        assert_eq!(entries.len(), 1);
        assert!(matches!(end, End::Torn(_)), "{end:?}");
        let cut = &bytes[..PAGE_BYTES + 30];
        let (entries, end) = decode_file(1, cut);
        assert_eq!(entries.len(), 1);
        assert!(matches!(end, End::Torn(_)), "{end:?}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for len in [0usize, 1, 15, 16, 17, 100, 4096, 9000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode_file(1, &bytes);
        }
        // A valid CRC around nonsense entries is reported, not trusted.
        let mut frame = vec![0u8; PAGE_BYTES];
        frame[4..8].copy_from_slice(&10u32.to_le_bytes());
        frame[8..16].copy_from_slice(&1u64.to_le_bytes());
        let crc = crc32c::crc32c(&frame[4..26]);
        frame[0..4].copy_from_slice(&crc.to_le_bytes());
        let (entries, end) = decode_file(1, &frame);
        assert!(entries.is_empty());
        assert!(matches!(end, End::Torn(_)), "{end:?}");
    }
}
