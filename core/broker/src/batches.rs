//! Splitting a partition's received records into whole batches (sans-IO, no copy).

use bytes::BytesMut;
use quiver_broker_api::{ApiError, ErrorCode};

/// The whole batches of one partition's records, split without a copy.
pub fn split_batches(mut records: BytesMut) -> Result<Vec<BytesMut>, ApiError> {
    let mut batches = Vec::new();
    while !records.is_empty() {
        let Some(len) = batch_len(&records) else {
            return Err(ApiError::new(
                ErrorCode::InvalidBatch,
                format!(
                    "{} bytes of records do not hold a whole RecordBatch v2; send whole batches",
                    records.len()
                ),
            ));
        };
        batches.push(records.split_to(len));
    }
    if batches.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            "the produce request holds no record batch for this partition",
        ));
    }
    Ok(batches)
}

/// Length of the whole batch at the start of `buf`, if `buf` holds it.
fn batch_len(buf: &[u8]) -> Option<usize> {
    let len = i32::from_be_bytes(buf.get(8..12)?.try_into().ok()?);
    let total = usize::try_from(len).ok()?.checked_add(12)?;
    (total >= quiver_batch::HEADER_BYTES && total <= buf.len()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_batch::{BatchBuilder, NewRecord};

    fn batch(value: &'static [u8]) -> BytesMut {
        let mut b = BatchBuilder::new();
        b.push(&NewRecord::value(value, 1));
        b.build()
    }

    #[test]
    fn records_split_into_their_batches_and_a_torn_one_is_refused() {
        let (a, b) = (batch(b"one"), batch(b"two!"));
        let mut both = a.clone();
        both.extend_from_slice(&b);
        let split = split_batches(both.clone()).unwrap();
        assert_eq!(split, vec![a.clone(), b]);
        let torn = BytesMut::from(&both[..both.len() - 1]);
        assert_eq!(
            split_batches(torn).unwrap_err().code,
            ErrorCode::InvalidBatch
        );
        assert_eq!(
            split_batches(BytesMut::new()).unwrap_err().code,
            ErrorCode::InvalidBatch
        );
        assert_eq!(
            split_batches(BytesMut::from(&a[..11])).unwrap_err().code,
            ErrorCode::InvalidBatch
        );
    }
}
