//! The transaction APIs on the wire (AddOffsetsToTxn, EndTxn), both directions: request
//! frames into the broker's typed requests and its responses into frames (the node's side),
//! request encoders and response readers (the client's side). InitProducerId with a
//! transactional id and Produce's `transactional_id` live with those APIs.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use quiver_broker_api::{ApiError, OffsetCommit, Request, Response};

use crate::codes::wire_code;
use crate::frame::{envelope, error, finish_frame, request_envelope, RequestHeader};
use crate::wire::{self, ApiKey, Body, Envelope};

// ---- The node's side ----

/// The transaction request in `env`; `None` when its API is not a transaction API.
pub(crate) fn decode(env: &Envelope<'_>, api: ApiKey) -> Option<Result<Request, String>> {
    let missing = || format!("the {api:?} request has no {api:?} body");
    let r = match api {
        ApiKey::AddOffsetsToTxn => (|| {
            let b = env
                .body_as_add_offsets_to_txn_request()
                .ok_or_else(missing)?;
            let offsets = crate::groups::read_offset_parts(b.partitions())?;
            Ok(Request::AddOffsetsToTxn {
                transactional_id: b.transactional_id().unwrap_or_default().to_string(),
                producer_id: b.producer_id(),
                producer_epoch: b.producer_epoch(),
                offsets: OffsetCommit {
                    group: b.group().unwrap_or_default().to_string(),
                    member_id: b.member_id().unwrap_or_default().to_string(),
                    member_epoch: b.member_epoch(),
                    offsets,
                },
            })
        })(),
        ApiKey::EndTxn => (|| {
            let b = env.body_as_end_txn_request().ok_or_else(missing)?;
            Ok(Request::EndTxn {
                transactional_id: b.transactional_id().unwrap_or_default().to_string(),
                producer_id: b.producer_id(),
                producer_epoch: b.producer_epoch(),
                commit: b.commit(),
            })
        })(),
        _ => return None,
    };
    Some(r)
}

/// The frame of a transaction response (an `Unknown` error frame for another response).
pub(crate) fn encode(id: u64, response: &Response) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let (api, body_type, body) = match response {
        Response::AddOffsetsToTxn(o) => {
            let error = o
                .as_ref()
                .err()
                .map(|e| error(&mut fbb, wire_code(e.code), &e.message));
            let b = wire::AddOffsetsToTxnResponse::create(
                &mut fbb,
                &wire::AddOffsetsToTxnResponseArgs { error },
            );
            (
                ApiKey::AddOffsetsToTxn,
                Body::AddOffsetsToTxnResponse,
                b.as_union_value(),
            )
        }
        Response::EndTxn(r) => {
            let args = match r {
                Ok((producer_id, producer_epoch)) => wire::EndTxnResponseArgs {
                    error: None,
                    producer_id: *producer_id,
                    producer_epoch: *producer_epoch,
                },
                Err(e) => wire::EndTxnResponseArgs {
                    error: Some(error(&mut fbb, wire_code(e.code), &e.message)),
                    producer_id: -1,
                    producer_epoch: -1,
                },
            };
            let b = wire::EndTxnResponse::create(&mut fbb, &args);
            (ApiKey::EndTxn, Body::EndTxnResponse, b.as_union_value())
        }
        _ => {
            return crate::frame::error_frame(
                id,
                ApiKey::Handshake,
                wire::ErrorCode::Unknown,
                "not a transaction response",
            )
        }
    };
    let root = envelope(&mut fbb, id, api, body_type, Some(body), None);
    finish_frame(fbb, root)
}

// ---- The client's side ----

/// Offsets `offsets.group` commits if and only if the producer's transaction commits.
pub fn add_offsets_to_txn<'h>(
    header: impl Into<RequestHeader<'h>>,
    transactional_id: &str,
    producer: (i64, i16),
    offsets: &OffsetCommit,
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(160 + offsets.offsets.len() * 48);
    let transactional_id = Some(fbb.create_string(transactional_id));
    let group = Some(fbb.create_string(&offsets.group));
    let member_id = (!offsets.member_id.is_empty()).then(|| fbb.create_string(&offsets.member_id));
    let partitions = Some(crate::groups::offset_parts(&mut fbb, &offsets.offsets));
    let body = wire::AddOffsetsToTxnRequest::create(
        &mut fbb,
        &wire::AddOffsetsToTxnRequestArgs {
            transactional_id,
            producer_id: producer.0,
            producer_epoch: producer.1,
            group,
            member_id,
            member_epoch: offsets.member_epoch,
            partitions,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::AddOffsetsToTxn,
        Body::AddOffsetsToTxnRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

/// Commit (`commit`) or abort the producer's transaction.
pub fn end_txn<'h>(
    header: impl Into<RequestHeader<'h>>,
    transactional_id: &str,
    producer: (i64, i16),
    commit: bool,
) -> Bytes {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let transactional_id = Some(fbb.create_string(transactional_id));
    let body = wire::EndTxnRequest::create(
        &mut fbb,
        &wire::EndTxnRequestArgs {
            transactional_id,
            producer_id: producer.0,
            producer_epoch: producer.1,
            commit,
        },
    );
    let root = request_envelope(
        &mut fbb,
        header.into(),
        ApiKey::EndTxn,
        Body::EndTxnRequest,
        body.as_union_value(),
    );
    finish_frame(fbb, root)
}

fn api_error(e: Option<wire::Error<'_>>) -> Option<ApiError> {
    e.map(|e| {
        ApiError::new(
            crate::codes::broker_code(e.code()),
            e.message().unwrap_or_default(),
        )
    })
}

/// A transaction response (AddOffsetsToTxn, EndTxn, InitProducerId) read back into the
/// broker's types; the envelope's own error becomes `Response::Refused`.
pub fn read_response(env: &Envelope<'_>) -> Option<Response> {
    let api = env.api();
    if let Some(e) = api_error(env.error()) {
        let api = crate::codes::broker_api(api)?;
        return Some(Response::Refused { api, error: e });
    }
    Some(match api {
        ApiKey::AddOffsetsToTxn => {
            let b = env.body_as_add_offsets_to_txn_response()?;
            Response::AddOffsetsToTxn(api_error(b.error()).map_or(Ok(()), Err))
        }
        ApiKey::EndTxn => {
            let b = env.body_as_end_txn_response()?;
            Response::EndTxn(match api_error(b.error()) {
                Some(e) => Err(e),
                None => Ok((b.producer_id(), b.producer_epoch())),
            })
        }
        ApiKey::InitProducerId => {
            let b = env.body_as_init_producer_id_response()?;
            Response::InitProducerId(match api_error(b.error()) {
                Some(e) => Err(e),
                None => Ok((b.producer_id(), b.producer_epoch())),
            })
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse_frame;
    use quiver_broker_api::TopicPartition;

    #[test]
    fn transaction_requests_and_responses_round_trip() {
        let offsets = OffsetCommit {
            group: "g".into(),
            member_id: "m".into(),
            member_epoch: 3,
            offsets: vec![(TopicPartition::new("in", 2), 10, String::new())],
        };
        let frame = add_offsets_to_txn(7, "tx", (5, 1), &offsets);
        let decoded =
            crate::decode::decode_request(bytes::BytesMut::from(&frame[..]), 1 << 20).unwrap();
        assert_eq!(
            decoded.request,
            Request::AddOffsetsToTxn {
                transactional_id: "tx".into(),
                producer_id: 5,
                producer_epoch: 1,
                offsets
            }
        );
        let frame = end_txn(8, "tx", (5, 1), true);
        let decoded =
            crate::decode::decode_request(bytes::BytesMut::from(&frame[..]), 1 << 20).unwrap();
        assert_eq!(
            decoded.request,
            Request::EndTxn {
                transactional_id: "tx".into(),
                producer_id: 5,
                producer_epoch: 1,
                commit: true
            }
        );
        for r in [
            Response::EndTxn(Ok((5, 2))),
            Response::EndTxn(Err(ApiError::new(
                quiver_broker_api::ErrorCode::ProducerFenced,
                "fenced",
            ))),
            Response::AddOffsetsToTxn(Ok(())),
        ] {
            let frame = crate::encode::encode_response(9, &r);
            let env = parse_frame(&frame, 1 << 20).unwrap();
            assert_eq!(read_response(&env), Some(r));
        }
    }
}
