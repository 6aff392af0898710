//! Zig-zag variable-length integers, as Kafka's record format (and protobuf's `sint32/64`) code them.
//!
//! Sans-IO: these functions read from and write to byte slices and never panic on any input.

use super::BatchError;

/// Longest zig-zag varint for an `i64`: 10 groups of 7 bits.
pub const MAX_VARLONG_BYTES: usize = 10;
/// Longest zig-zag varint for an `i32`: 5 groups of 7 bits.
pub const MAX_VARINT_BYTES: usize = 5;

/// Appends `value` zig-zag coded to `out`.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `value` zig-zag coded to `out`.
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, i64::from(value));
}

/// Number of bytes `put_varlong(value)` writes.
pub fn varlong_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Reads a zig-zag varlong at `*pos`, advancing `*pos` past it.
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for i in 0..MAX_VARLONG_BYTES {
        let byte = *buf.get(*pos).ok_or(BatchError::Truncated {
            what: "varint",
            at: *pos,
        })?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(BatchError::BadVarint { at: *pos })
}

/// Reads a zig-zag varint that must fit an `i32`.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32, BatchError> {
    let at = *pos;
    let v = get_varlong(buf, pos)?;
    i32::try_from(v).map_err(|_| BatchError::BadVarint { at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_match_the_kafka_spec() {
        // Values from the Kafka protocol guide's zig-zag table.
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            put_varlong(&mut out, *value);
            assert_eq!(&out[..], *bytes, "encoding {value}");
            assert_eq!(varlong_len(*value), bytes.len());
            let mut pos = 0;
            assert_eq!(get_varlong(bytes, &mut pos).unwrap(), *value);
            assert_eq!(pos, bytes.len());
        }
    }

    #[test]
    fn extremes_round_trip() {
        for v in [i64::MIN, i64::MAX, i64::from(i32::MIN), i64::from(i32::MAX)] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v));
            let mut pos = 0;
            assert_eq!(get_varlong(&out, &mut pos).unwrap(), v);
        }
    }

    #[test]
    fn overlong_and_truncated_inputs_are_errors() {
        let mut pos = 0;
        assert!(get_varlong(&[0xff; 11], &mut pos).is_err());
        let mut pos = 0;
        assert!(get_varlong(&[0x80], &mut pos).is_err());
        let mut pos = 0;
        let mut out = Vec::new();
        put_varlong(&mut out, i64::from(i32::MAX) + 1);
        assert!(get_varint(&out, &mut pos).is_err());
    }
}
