//! Reassembles one request frame from a QUIC stream's chunks (sans-IO).

use bytes::BytesMut;
use quiver_schema::frame::{frame_length, FrameError, LENGTH_PREFIX_BYTES};

/// Collects bytes until one whole frame (length prefix included) is in hand.
/// Invariant: `buf` never holds more than `LENGTH_PREFIX_BYTES + max_frame_bytes`.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    expected_total: Option<usize>,
    max_frame_bytes: usize,
}

impl FrameReader {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            expected_total: None,
            max_frame_bytes,
        }
    }

    /// Adds received bytes. Fails on an oversize length prefix or bytes past the frame.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if self.expected_total.is_none() && self.buf.len() + data.len() >= LENGTH_PREFIX_BYTES {
            let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
            let have = self.buf.len().min(LENGTH_PREFIX_BYTES);
            prefix[..have].copy_from_slice(&self.buf[..have]);
            prefix[have..].copy_from_slice(&data[..LENGTH_PREFIX_BYTES - have]);
            let body = frame_length(prefix, self.max_frame_bytes)?;
            let total = LENGTH_PREFIX_BYTES + body;
            self.buf.reserve(total.saturating_sub(self.buf.len()));
            self.expected_total = Some(total);
        }
        let limit = self.expected_total.unwrap_or(LENGTH_PREFIX_BYTES);
        if self.buf.len() + data.len() > limit {
            return Err(FrameError::Malformed(format!(
                "{} bytes follow the frame on its stream; send one frame per stream",
                self.buf.len() + data.len() - limit
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// True once the whole frame is in.
    pub fn is_complete(&self) -> bool {
        self.expected_total == Some(self.buf.len())
    }

    /// The whole frame, once complete; `Truncated` when the stream ended early.
    pub fn finish(self) -> Result<BytesMut, FrameError> {
        if self.is_complete() {
            Ok(self.buf)
        } else {
            Err(FrameError::Truncated {
                got: self.buf.len(),
                expected: self.expected_total.unwrap_or(LENGTH_PREFIX_BYTES),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_from_any_chunking_and_refuses_excess() {
        let mut frame = 5u32.to_le_bytes().to_vec();
        frame.extend_from_slice(b"hello");
        for split in 0..frame.len() {
            let mut r = FrameReader::new(100);
            r.push(&frame[..split]).unwrap();
            r.push(&frame[split..]).unwrap();
            assert!(r.is_complete());
            assert_eq!(&r.finish().unwrap()[..], &frame[..]);
        }
        let mut r = FrameReader::new(100);
        assert!(r.push(&[frame.clone(), vec![1]].concat()).is_err());
        let mut r = FrameReader::new(4);
        assert!(matches!(r.push(&frame), Err(FrameError::TooLarge { .. })));
        let mut r = FrameReader::new(100);
        r.push(&frame[..6]).unwrap();
        assert!(matches!(
            r.finish(),
            Err(FrameError::Truncated {
                got: 6,
                expected: 9
            })
        ));
    }
}
