//! Decompress one chunk out of its compressed member and verify it before anyone sees it.

use std::io::{self, Read};

use crate::digest::Digest;
use crate::footer::Format;
use crate::index::{ChunkInfo, MAX_CHUNK_SIZE};

/// Largest allocation made up front for a chunk; bigger chunks grow as bytes arrive.
const MAX_INITIAL_CAPACITY: u64 = 16 << 20;

/// Errors from decompressing or verifying a chunk.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk at file offset {file_offset}: {size} bytes is larger than {MAX_CHUNK_SIZE}")]
    TooLarge { file_offset: u64, size: u64 },
    #[error("decompress chunk at file offset {file_offset}: {source}")]
    Decompress {
        file_offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("chunk at file offset {file_offset}: member holds {got} bytes, expected {want}")]
    Short {
        file_offset: u64,
        got: u64,
        want: u64,
    },
    #[error("chunk at file offset {file_offset}: digest {actual} does not match {expected}")]
    DigestMismatch {
        file_offset: u64,
        expected: Digest,
        actual: Digest,
    },
}

/// Decompresses `compressed` (the bytes of `chunk.compressed`), skips `inner_offset` and
/// returns exactly `chunk.size` bytes, verified against `chunk.digest` when present.
pub fn decompress_chunk(
    format: Format,
    compressed: &[u8],
    chunk: &ChunkInfo,
) -> Result<Vec<u8>, ChunkError> {
    if chunk.size > MAX_CHUNK_SIZE {
        return Err(ChunkError::TooLarge {
            file_offset: chunk.file_offset,
            size: chunk.size,
        });
    }
    let decompress_err = |source| ChunkError::Decompress {
        file_offset: chunk.file_offset,
        source,
    };
    let mut decoder: Box<dyn Read + '_> = match format {
        Format::Estargz | Format::LegacyStargz => {
            Box::new(flate2::read::MultiGzDecoder::new(compressed))
        }
        Format::ZstdChunked => {
            Box::new(zstd::stream::read::Decoder::with_buffer(compressed).map_err(decompress_err)?)
        }
    };
    let skipped = io::copy(
        &mut (&mut decoder).take(chunk.inner_offset),
        &mut io::sink(),
    )
    .map_err(decompress_err)?;
    let capacity = usize::try_from(chunk.size.min(MAX_INITIAL_CAPACITY)).unwrap_or(0);
    let mut data = Vec::with_capacity(capacity);
    if skipped == chunk.inner_offset {
        decoder
            .take(chunk.size)
            .read_to_end(&mut data)
            .map_err(decompress_err)?;
    }
    if skipped < chunk.inner_offset || (data.len() as u64) < chunk.size {
        return Err(ChunkError::Short {
            file_offset: chunk.file_offset,
            got: data.len() as u64,
            want: chunk.size,
        });
    }
    verify(&data, chunk)?;
    Ok(data)
}

fn verify(data: &[u8], chunk: &ChunkInfo) -> Result<(), ChunkError> {
    let Some(expected) = chunk.digest else {
        return Ok(());
    };
    let actual = Digest::sha256(data);
    if actual != expected {
        return Err(ChunkError::DigestMismatch {
            file_offset: chunk.file_offset,
            expected,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).expect("compress");
        encoder.finish().expect("finish")
    }

    fn chunk(size: u64, inner_offset: u64, digest: Option<Digest>) -> ChunkInfo {
        ChunkInfo {
            file_offset: 0,
            size,
            compressed: 0..1,
            inner_offset,
            digest,
        }
    }

    #[test]
    fn takes_exactly_the_chunk() {
        let member = gzip(b"headerDATAtrailer");
        let cases = [
            (
                "verified",
                chunk(4, 6, Some(Digest::sha256(b"DATA"))),
                Ok(b"DATA".to_vec()),
            ),
            ("no digest", chunk(6, 0, None), Ok(b"header".to_vec())),
            (
                "empty",
                chunk(0, 0, Some(Digest::sha256(b""))),
                Ok(Vec::new()),
            ),
        ];
        for (name, info, want) in cases {
            let got = decompress_chunk(Format::Estargz, &member, &info).map_err(|e| e.to_string());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn rejects_wrong_or_short_data() {
        let member = gzip(b"0123456789");
        let mismatch = decompress_chunk(
            Format::Estargz,
            &member,
            &chunk(4, 0, Some(Digest::sha256(b"x"))),
        );
        assert!(matches!(mismatch, Err(ChunkError::DigestMismatch { .. })));
        let short = decompress_chunk(Format::Estargz, &member, &chunk(20, 0, None));
        assert!(matches!(
            short,
            Err(ChunkError::Short {
                got: 10,
                want: 20,
                ..
            })
        ));
        let short_skip = decompress_chunk(Format::Estargz, &member, &chunk(1, 30, None));
        assert!(matches!(short_skip, Err(ChunkError::Short { .. })));
        let garbage = decompress_chunk(Format::ZstdChunked, &member, &chunk(4, 0, None));
        assert!(matches!(garbage, Err(ChunkError::Decompress { .. })));
    }

    #[test]
    fn rejects_chunks_over_the_limit() {
        let member = gzip(b"");
        let too_large = decompress_chunk(
            Format::Estargz,
            &member,
            &chunk(MAX_CHUNK_SIZE + 1, 0, None),
        );
        assert!(matches!(
            too_large,
            Err(ChunkError::TooLarge { size, .. }) if size == MAX_CHUNK_SIZE + 1
        ));
    }

    #[test]
    fn bomb_stops_after_size() {
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 1).expect("compress");
        let data =
            decompress_chunk(Format::ZstdChunked, &bomb, &chunk(16, 0, None)).expect("chunk");
        assert_eq!(data, vec![0u8; 16]);
    }
}
