//! The envelope's bytes: every message kind round-trips; truncated, oversized or unknown input
//! gets a typed error.

use quiver_raft::codec::{decode, encode, DecodeError, MAX_MESSAGES, VERSION};
use quiver_raft::multi::Envelope;
use quiver_raft::types::{Entry, Membership, Message, Payload, Snapshot};

fn every_kind() -> Envelope {
    let membership = Membership {
        voters: [1, 2, 3].into(),
        learners: [4].into(),
    };
    Envelope {
        messages: vec![
            (
                1,
                Message::PreVote {
                    term: 2,
                    last_index: 3,
                    last_term: 1,
                },
            ),
            (
                1,
                Message::PreVoteResponse {
                    term: 2,
                    granted: true,
                },
            ),
            (
                2,
                Message::Vote {
                    term: 5,
                    last_index: 9,
                    last_term: 4,
                    transfer: true,
                },
            ),
            (
                2,
                Message::VoteResponse {
                    term: 5,
                    granted: false,
                },
            ),
            (
                3,
                Message::Append {
                    term: 7,
                    prev_index: 10,
                    prev_term: 6,
                    entries: vec![
                        Entry {
                            term: 7,
                            span: 1,
                            payload: Payload::Empty,
                        },
                        Entry::spanning(7, 5, b"batch".to_vec()),
                        Entry {
                            term: 7,
                            span: 1,
                            payload: Payload::Membership(membership.clone()),
                        },
                    ],
                    commit: 9,
                },
            ),
            (
                3,
                Message::AppendResponse {
                    term: 7,
                    success: true,
                    index: 17,
                },
            ),
            (4, Message::TimeoutNow { term: 8 }),
            (
                5,
                Message::Heartbeat {
                    term: 8,
                    commit: 100,
                    round: 4,
                },
            ),
            (
                5,
                Message::HeartbeatResponse {
                    term: 8,
                    last_index: 120,
                    round: 4,
                },
            ),
            (
                6,
                Message::InstallSnapshot {
                    term: 9,
                    snapshot: Snapshot {
                        index: 50,
                        term: 8,
                        membership,
                        data: b"image".to_vec(),
                    },
                },
            ),
        ],
    }
}

#[test]
fn every_message_kind_round_trips() {
    let env = every_kind();
    assert_eq!(decode(&encode(&env)), Ok(env));
    assert_eq!(
        decode(&encode(&Envelope::default())),
        Ok(Envelope::default())
    );
}

#[test]
fn every_truncation_is_a_typed_error() {
    let bytes = encode(&every_kind());
    for n in 0..bytes.len() {
        assert!(
            decode(&bytes[..n]).is_err(),
            "a prefix of {n} bytes decoded"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(decode(&longer), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn unknown_or_oversized_input_is_refused_before_allocating() {
    assert_eq!(
        decode(&[VERSION + 1, 0, 0, 0, 0]),
        Err(DecodeError::UnknownVersion(VERSION + 1))
    );
    // One message of an unknown kind.
    let mut b = vec![VERSION, 0, 0, 0, 1];
    b.extend_from_slice(&7u64.to_be_bytes());
    b.push(99);
    assert_eq!(decode(&b), Err(DecodeError::UnknownKind(99)));
    // A count of messages past the limit, or past what the bytes can hold.
    let mut b = vec![VERSION];
    b.extend_from_slice(&(MAX_MESSAGES as u32 + 1).to_be_bytes());
    assert!(matches!(
        decode(&b),
        Err(DecodeError::TooLarge {
            what: "messages",
            ..
        })
    ));
    let b = [VERSION, 0xFF, 0xFF, 0xFF, 0x00];
    assert!(matches!(decode(&b), Err(DecodeError::TooLarge { .. })));
    // An Append claiming 65,536 entries in a few bytes.
    let mut b = vec![VERSION, 0, 0, 0, 1];
    b.extend_from_slice(&1u64.to_be_bytes());
    b.push(5);
    b.extend_from_slice(&[0u8; 32]);
    b.extend_from_slice(&65_536u32.to_be_bytes());
    assert!(matches!(
        decode(&b),
        Err(DecodeError::TooLarge {
            what: "entries",
            ..
        })
    ));
}

/// Writes the fuzzer's seed (`core/fuzz/seeds/raft_envelope_decode/`) when
/// QUIVER_WRITE_FUZZ_SEEDS is set.
#[test]
fn write_fuzz_seed_on_request() {
    if std::env::var_os("QUIVER_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds/raft_envelope_decode");
    std::fs::create_dir_all(&dir).expect("seed dir");
    std::fs::write(dir.join("every-kind"), encode(&every_kind())).expect("seed");
}

/// A bounded stand-in for the fuzzer in every CI run: 20,000 seeded mutations of a valid
/// envelope (bytes flipped, cut, inserted) decode to an envelope that round-trips or to a
/// typed error.
#[test]
fn mutated_envelopes_never_panic_and_what_decodes_round_trips() {
    let valid = encode(&every_kind());
    let mut rng = quiver_raft::sim::Rng::new(0xC0DEC);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let mut b = valid.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b[at] = rng.next_u64() as u8,
                1 => b.truncate(at),
                _ => b.insert(at, rng.next_u64() as u8),
            }
            if b.is_empty() {
                break;
            }
        }
        if let Ok(env) = decode(&b) {
            decoded += 1;
            assert_eq!(decode(&encode(&env)), Ok(env));
        }
    }
    assert!(decoded > 0, "some mutations still decode");
}
