//! The frame codec (sans-IO). A frame is FlatBuffers' size prefix (u32, little-endian) followed
//! by an [`Envelope`] buffer. Everything a peer sends is checked here before it is believed:
//! the length against `max_frame_bytes`, the buffer by the FlatBuffers verifier with bounds on
//! depth, table count and apparent size.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};

use crate::wire::{self, ApiKey, Envelope, EnvelopeArgs, ErrorCode};

pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Default bound on one frame: a 16 MiB batch plus room for the envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = (16 << 20) + (64 << 10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {length_bytes} bytes exceeds max_frame_bytes = {max_bytes}; send smaller batches or raise max_frame_bytes on both sides")]
    TooLarge {
        length_bytes: usize,
        max_bytes: usize,
    },
    #[error("empty frame: a frame must hold an Envelope")]
    Empty,
    #[error("stream ended after {got} of {expected} bytes of a frame; send whole frames")]
    Truncated { got: usize, expected: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The protocol error code a response should carry for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::MalformedRequest,
        }
    }
}

/// Reads the length prefix and checks it against `max_frame_bytes`.
pub fn frame_length(
    prefix: [u8; LENGTH_PREFIX_BYTES],
    max_frame_bytes: usize,
) -> Result<usize, FrameError> {
    let length_bytes = u32::from_le_bytes(prefix) as usize;
    if length_bytes == 0 {
        return Err(FrameError::Empty);
    }
    if length_bytes > max_frame_bytes {
        return Err(FrameError::TooLarge {
            length_bytes,
            max_bytes: max_frame_bytes,
        });
    }
    Ok(length_bytes)
}

fn verifier_options(len: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: 16,
        max_tables: 100_000,
        max_apparent_size: len.saturating_mul(2).max(1 << 16),
        ignore_missing_null_terminator: false,
    }
}

/// Verifies a whole frame (length prefix included: FlatBuffers aligns the buffer from the
/// prefix on) and opens its envelope.
pub fn parse_frame(frame: &[u8], max_frame_bytes: usize) -> Result<Envelope<'_>, FrameError> {
    let Some(prefix) = frame.get(..LENGTH_PREFIX_BYTES) else {
        return Err(FrameError::Truncated {
            got: frame.len(),
            expected: LENGTH_PREFIX_BYTES,
        });
    };
    let mut p = [0u8; LENGTH_PREFIX_BYTES];
    p.copy_from_slice(prefix);
    let len = frame_length(p, max_frame_bytes)?;
    let body_bytes = frame.len() - LENGTH_PREFIX_BYTES;
    if body_bytes != len {
        return Err(FrameError::Truncated {
            got: body_bytes,
            expected: len,
        });
    }
    wire::size_prefixed_root_as_envelope_with_opts(&verifier_options(frame.len()), frame)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Where `slice` (a `[ubyte]` vector read from `buf`) sits inside `buf`: lets the receiver
/// split the batch bytes out of its frame buffer without copying them.
pub fn vector_range(buf: &[u8], slice: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = (slice.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let end = start.checked_add(slice.len())?;
    (end <= buf.len()).then_some(start..end)
}

/// Finishes `root` as a size-prefixed frame, handing the builder's buffer over without a copy.
pub fn finish_frame<'a>(mut fbb: FlatBufferBuilder<'a>, root: WIPOffset<Envelope<'a>>) -> Bytes {
    wire::finish_size_prefixed_envelope_buffer(&mut fbb, root);
    let (vec, head) = fbb.collapse();
    Bytes::from(vec).slice(head..)
}

/// An envelope with `body` already built in `fbb`.
pub fn envelope<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    request_id: u64,
    api: ApiKey,
    body_type: wire::Body,
    body: Option<WIPOffset<flatbuffers::UnionWIPOffset>>,
    error: Option<WIPOffset<wire::Error<'a>>>,
) -> WIPOffset<Envelope<'a>> {
    Envelope::create(
        fbb,
        &EnvelopeArgs {
            request_id,
            api,
            version: crate::API_VERSION,
            body_type,
            body,
            error,
            client_id: None,
        },
    )
}

/// What every request's envelope carries besides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader<'a> {
    pub request_id: u64,
    /// The client's name for itself (empty: none).
    pub client_id: &'a str,
}

impl From<u64> for RequestHeader<'static> {
    fn from(request_id: u64) -> Self {
        Self {
            request_id,
            client_id: "",
        }
    }
}

impl<'a> From<(u64, &'a str)> for RequestHeader<'a> {
    fn from((request_id, client_id): (u64, &'a str)) -> Self {
        Self {
            request_id,
            client_id,
        }
    }
}

/// A request's envelope with `body` already built in `fbb`.
pub fn request_envelope<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    header: RequestHeader<'_>,
    api: ApiKey,
    body_type: wire::Body,
    body: WIPOffset<flatbuffers::UnionWIPOffset>,
) -> WIPOffset<Envelope<'a>> {
    let client_id = (!header.client_id.is_empty()).then(|| fbb.create_string(header.client_id));
    Envelope::create(
        fbb,
        &EnvelopeArgs {
            request_id: header.request_id,
            api,
            version: crate::API_VERSION,
            body_type,
            body: Some(body),
            error: None,
            client_id,
        },
    )
}

/// An `Error` table.
pub fn error<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    code: ErrorCode,
    message: &str,
) -> WIPOffset<wire::Error<'a>> {
    let message = fbb.create_string(message);
    wire::Error::create(
        fbb,
        &wire::ErrorArgs {
            code,
            message: Some(message),
        },
    )
}

/// A response frame that carries only an envelope-level error (malformed request, unknown API).
pub fn error_frame(request_id: u64, api: ApiKey, code: ErrorCode, message: &str) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(128 + message.len());
    let err = error(&mut fbb, code, message);
    let root = envelope(&mut fbb, request_id, api, wire::Body::NONE, None, Some(err));
    finish_frame(fbb, root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests;

    #[test]
    fn frames_round_trip_and_batches_are_found_in_place() {
        let records = vec![7u8; 1000];
        let other = vec![9u8; 10];
        let parts = [
            requests::ProducePart {
                topic: "orders",
                partition: 3,
                records: &records,
            },
            requests::ProducePart {
                topic: "audit",
                partition: 0,
                records: &other,
            },
        ];
        let frame = requests::produce_many(42, wire::Acks::All, 5000, &parts);
        let env = parse_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(env.request_id(), 42);
        assert_eq!(env.api(), ApiKey::Produce);
        let entries = env.body_as_produce_request().unwrap().partitions().unwrap();
        assert_eq!(entries.len(), 2);
        for (entry, part) in entries.iter().zip(&parts) {
            assert_eq!(entry.topic(), Some(part.topic));
            assert_eq!(entry.partition(), part.partition);
            let got = entry.records().unwrap().bytes();
            assert_eq!(got, part.records);
            let range = vector_range(&frame, got).unwrap();
            assert_eq!(&frame[range], part.records);
        }
    }

    #[test]
    fn bad_frames_get_typed_errors() {
        assert_eq!(frame_length([0; 4], 100), Err(FrameError::Empty));
        assert!(matches!(
            frame_length(101u32.to_le_bytes(), 100),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_frame(&[1, 0], 100),
            Err(FrameError::Truncated { .. })
        ));
        let mut junk = 8u32.to_le_bytes().to_vec();
        junk.extend([0xff; 8]);
        assert!(matches!(
            parse_frame(&junk, 100),
            Err(FrameError::Malformed(_))
        ));
        let frame = error_frame(9, ApiKey::Fetch, ErrorCode::UnknownTopic, "no such topic");
        let env = parse_frame(&frame, 1000).unwrap();
        assert_eq!(env.error().unwrap().code(), ErrorCode::UnknownTopic);
        assert_eq!(env.error().unwrap().message(), Some("no such topic"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = parse_frame(&data, DEFAULT_MAX_FRAME_BYTES);
            let mut framed = (data.len() as u32).to_le_bytes().to_vec();
            framed.extend_from_slice(&data);
            let _ = parse_frame(&framed, DEFAULT_MAX_FRAME_BYTES);
        }
    }
}
