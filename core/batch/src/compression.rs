//! Compressing a batch's records region (Kafka v2: the bytes after the 61-byte header, as one
//! block) with LZ4 (frame format, as Kafka) or zstd, and decompressing it with a size bound so
//! a hostile batch cannot make us allocate without limit.

use std::io::Read;

use super::header::Compression;
use super::BatchError;

/// Most bytes one batch may decompress to.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

pub fn compress(codec: Compression, records: &[u8]) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::None => Ok(records.to_vec()),
        Compression::Lz4 => {
            let mut enc =
                lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(records.len() / 2 + 64));
            std::io::Write::write_all(&mut enc, records).map_err(|_| BatchError::Codec {
                codec,
                reason: "lz4 compression failed",
            })?;
            enc.finish().map_err(|_| BatchError::Codec {
                codec,
                reason: "lz4 compression failed",
            })
        }
        Compression::Zstd => zstd::bulk::compress(records, 3).map_err(|_| BatchError::Codec {
            codec,
            reason: "zstd compression failed",
        }),
        Compression::Gzip | Compression::Snappy => Err(BatchError::CompressedRecords(codec)),
    }
}

pub fn decompress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let bad = |reason| BatchError::Codec { codec, reason };
    let mut out = Vec::new();
    let limit = MAX_DECOMPRESSED_BYTES as u64 + 1;
    match codec {
        Compression::None => out.extend_from_slice(data),
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|_| bad("not a valid LZ4 frame"))?;
        }
        Compression::Zstd => {
            let dec =
                zstd::stream::read::Decoder::new(data).map_err(|_| bad("zstd decoder failed"))?;
            dec.take(limit)
                .read_to_end(&mut out)
                .map_err(|_| bad("not a valid zstd frame"))?;
        }
        Compression::Gzip | Compression::Snappy => {
            return Err(BatchError::CompressedRecords(codec))
        }
    }
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(bad("decompresses to more than 64 MiB"));
    }
    Ok(out)
}
