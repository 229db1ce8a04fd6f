//! Reading one span: check its compressed bytes against the zTOC's span digest, then
//! inflate them from the span's checkpoint (leftover bits primed, window as history),
//! crossing gzip member boundaries, to exactly the span's uncompressed bytes.

use miniz_oxide::inflate::TINFLStatus;

use crate::digest::Digest;

use super::gzip::{self, GzipError, TRAILER_LEN};
use super::inflate::Inflater;
use super::zinfo::Zinfo;
use super::ztoc::Compression;

/// Errors from reading a span.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpanError {
    #[error("span {span} does not exist")]
    NoSuchSpan { span: usize },
    #[error("span {span}: got {got} compressed bytes, want {want}")]
    Length { span: usize, got: usize, want: u64 },
    #[error("span {span}: compressed bytes have digest {got}, the index says {want}")]
    Digest {
        span: usize,
        got: Digest,
        want: Digest,
    },
    #[error("span {span}: deflate data is corrupt ({status})")]
    Inflate { span: usize, status: &'static str },
    #[error("span {span}: decodes to {got} bytes, want {want}")]
    Short { span: usize, got: u64, want: u64 },
    #[error("span {span}: {source}")]
    Gzip { span: usize, source: GzipError },
    #[error(
        "span {span} block {block}: compressed bytes have digest {got}, the index says {want}"
    )]
    BlockDigest {
        span: usize,
        block: usize,
        got: Digest,
        want: Digest,
    },
}

/// Verifies and decodes span `span` from its compressed bytes (exactly
/// [`Zinfo::compressed_range`]). Returns exactly [`Zinfo::uncompressed_range`] bytes.
pub fn decompress_span(
    zinfo: &Zinfo,
    span: usize,
    compressed: &[u8],
) -> Result<Vec<u8>, SpanError> {
    let (Some(crange), Some(urange), Some(want_digest), Some(cp)) = (
        zinfo.compressed_range(span),
        zinfo.uncompressed_range(span),
        zinfo.digest(span),
        zinfo.checkpoint(span),
    ) else {
        return Err(SpanError::NoSuchSpan { span });
    };
    let want_len = crange.end - crange.start;
    if u64::try_from(compressed.len()).ok() != Some(want_len) {
        return Err(SpanError::Length {
            span,
            got: compressed.len(),
            want: want_len,
        });
    }
    let got = Digest::sha256(compressed);
    if got != *want_digest {
        return Err(SpanError::Digest {
            span,
            got,
            want: *want_digest,
        });
    }
    let want_out = urange.end - urange.start;
    if zinfo.compression() == Compression::Uncompressed {
        return Ok(compressed.to_vec());
    }
    let (mut inflater, input) = if cp.bits != 0 {
        let (first, rest) = compressed.split_first().ok_or(SpanError::Length {
            span,
            got: 0,
            want: want_len,
        })?;
        (Inflater::resume(cp.bits, *first, zinfo.window(span)), rest)
    } else {
        (Inflater::resume(0, 0, zinfo.window(span)), compressed)
    };
    inflate_to(&mut inflater, input, want_out, span)
}

/// Inflates `input` until `want` bytes came out, across member boundaries.
fn inflate_to(
    inf: &mut Inflater,
    mut input: &[u8],
    want: u64,
    span: usize,
) -> Result<Vec<u8>, SpanError> {
    let cap = usize::try_from(want).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(cap.min(64 << 20));
    let mut offset = 0u64;
    while out.len() < cap {
        let step = inf.step(input, true, false, cap - out.len());
        out.extend_from_slice(&inf.ring()[step.out.clone()]);
        input = &input[step.consumed..];
        offset += step.consumed as u64;
        match step.status {
            TINFLStatus::HasMoreOutput => {}
            TINFLStatus::Done => {
                // End of a member: skip its trailer (checked by the span digest, not
                // here: the CRC covers the whole member) and start the next one.
                if input.len() <= TRAILER_LEN {
                    break;
                }
                input = &input[TRAILER_LEN..];
                offset += TRAILER_LEN as u64;
                let header = gzip::header_len(input, offset)
                    .map_err(|source| SpanError::Gzip { span, source })?
                    .ok_or(SpanError::Gzip {
                        span,
                        source: GzipError::Header { offset },
                    })?;
                input = &input[header..];
                offset += header as u64;
                inf.next_member();
            }
            TINFLStatus::NeedsMoreInput => break,
            other => {
                return Err(SpanError::Inflate {
                    span,
                    status: status_name(other),
                })
            }
        }
    }
    if out.len() < cap {
        return Err(SpanError::Short {
            span,
            got: out.len() as u64,
            want,
        });
    }
    Ok(out)
}

pub(super) fn status_name(s: TINFLStatus) -> &'static str {
    match s {
        TINFLStatus::Failed => "invalid data",
        TINFLStatus::FailedCannotMakeProgress => "truncated",
        TINFLStatus::Adler32Mismatch => "checksum",
        TINFLStatus::BadParam => "bad parameter",
        _ => "unexpected state",
    }
}
