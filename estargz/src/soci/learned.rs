//! Learned ranges, ours: the exact compressed bytes a learned prefetch needs, each with its
//! own digest, in a blob beside the zTOC (media type [`LEARNED_MEDIA_TYPE`]).
//!
//! Span blocks ([`super::blocks`]) are checked whole, so a prefetch of recorded reads
//! through them fetches, at each end of each read, the rest of a block it does not need:
//! on a layer of many small recorded files that is a fifth of the bytes again. The indexer
//! knows the reads (`estargz-convert index --record-from`), so it writes, per read and
//! span, where decoding starts (the span's checkpoint, or the last deflate block end
//! before the read, with its sparse window inline: no window request, and no decoding
//! from an index point far before the read), how far the compressed bytes must go for the
//! read's last byte to come out, and their digest ([`super::learned_build`]). A
//! daemon fetches exactly those bytes, checks them as a whole and decodes them with
//! [`PrefixDecoder::feed_exact`]; the decoder then goes on block by block for later reads.
//! The blob is reached by digest from the index manifest, so it is trusted like the zTOC.

use std::ops::Range;

use crate::digest::Digest;

use super::blocks::SpanBlocks;
use super::prefix::PrefixDecoder;
use super::resume::{ResumePoint, WindowRef};
use super::span::SpanError;
use super::sparse_window;
use super::zinfo::Zinfo;

/// Media type of a learned-ranges blob.
pub const LEARNED_MEDIA_TYPE: &str = "application/vnd.estargz.soci.learned-ranges.v1";
/// Largest learned-ranges blob accepted by readers (windows included).
pub const MAX_LEARNED_SIZE: u64 = 16 << 20;
const MAGIC: &[u8; 8] = b"ESLRN001";
/// Largest inline window accepted (a sparse window is a zstd frame of at most 32 KiB).
const MAX_WINDOW: u32 = 64 << 10;

/// Why a learned-ranges blob cannot be built or used.
#[derive(Debug, thiserror::Error)]
pub enum LearnedError {
    #[error("learned ranges: not our format")]
    Magic,
    #[error("learned ranges: truncated at byte {at}")]
    Truncated { at: usize },
    #[error("learned ranges: {0} bytes after the last entry")]
    Trailing(usize),
    #[error("learned range {entry}: {problem}")]
    Entry { entry: usize, problem: &'static str },
    #[error("learned range in span {span}: {source}")]
    Span { span: usize, source: SpanError },
    #[error("reading the layer: {0}")]
    Read(#[from] std::io::Error),
}

/// Where decoding of a learned range starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnedStart {
    Checkpoint,
    /// A deflate block end inside the span: one of the index's resume points, or one the
    /// indexer found just before the read ([`super::learned_build`]).
    Point {
        /// First whole compressed byte after it (see [`ResumePoint`]).
        compressed: u64,
        uncompressed: u64,
        /// Leftover bits (0..=7) of the byte before `compressed`.
        bits: u8,
    },
}

impl LearnedStart {
    /// The point as a [`ResumePoint`] of `span` (its window comes inline, not by
    /// reference); `None` at a checkpoint or when it is not inside the span.
    pub fn resume_point(
        &self,
        zinfo: &Zinfo,
        blocks: &SpanBlocks,
        span: usize,
    ) -> Option<ResumePoint> {
        let LearnedStart::Point {
            compressed,
            uncompressed,
            bits,
        } = *self
        else {
            return None;
        };
        let (c, u) = (
            zinfo.compressed_range(span)?,
            zinfo.uncompressed_range(span)?,
        );
        let fetch_start = compressed.checked_sub(u64::from(bits != 0))?;
        if bits > 7 || !c.contains(&fetch_start) || compressed > c.end || !u.contains(&uncompressed)
        {
            return None;
        }
        let block = u32::try_from((fetch_start - c.start) / blocks.block_size()).ok()?;
        let window = WindowRef {
            offset: 0,
            len: 0,
            digest: Digest::sha256(&[]),
        };
        Some(ResumePoint {
            span: u32::try_from(span).ok()?,
            block,
            compressed,
            uncompressed,
            bits,
            window,
        })
    }
}

/// One learned range: the bytes of one span a prefetch needs and how to get them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedRange {
    pub span: usize,
    /// The uncompressed bytes needed (decoding gives them, from where it starts).
    pub needed: Range<u64>,
    pub start: LearnedStart,
    /// The compressed bytes to fetch, from the start's first byte.
    pub compressed: Range<u64>,
    pub digest: Digest,
    /// The resume point's sparse window entry (empty at a checkpoint or when none is
    /// needed).
    pub window: Vec<u8>,
}

/// A decoded learned range: its decoder (ready to go on block by block), where its output
/// starts (uncompressed) and the output.
pub struct Decoded {
    pub decoder: PrefixDecoder,
    pub start: u64,
    pub out: Vec<u8>,
}

impl LearnedRange {
    /// A fresh decoder at the range's start, and the uncompressed offset it starts at.
    pub fn decoder(
        &self,
        zinfo: &Zinfo,
        blocks: &SpanBlocks,
    ) -> Result<(PrefixDecoder, u64), SpanError> {
        let span = self.span;
        match self.start {
            LearnedStart::Checkpoint => {
                let start = zinfo
                    .uncompressed_range(span)
                    .ok_or(SpanError::NoSuchSpan { span })?;
                Ok((PrefixDecoder::new(zinfo, span)?, start.start))
            }
            LearnedStart::Point { .. } => {
                let point = (self.start.resume_point(zinfo, blocks, span))
                    .ok_or(SpanError::NoSuchSpan { span })?;
                let window = sparse_window::decode(&self.window)
                    .map_err(|_| SpanError::NoSuchSpan { span })?;
                Ok((
                    PrefixDecoder::at_point(zinfo, blocks, &point, window)?,
                    point.uncompressed,
                ))
            }
        }
    }

    /// Checks `bytes` (the fetched [`Self::compressed`] bytes) against the digest and
    /// decodes them; the output covers [`Self::needed`].
    pub fn decode(
        &self,
        zinfo: &Zinfo,
        blocks: &SpanBlocks,
        bytes: &[u8],
    ) -> Result<Decoded, SpanError> {
        let span = self.span;
        let want = self.compressed.end - self.compressed.start;
        if u64::try_from(bytes.len()).ok() != Some(want) {
            return Err(SpanError::Length {
                span,
                got: bytes.len(),
                want,
            });
        }
        let got = Digest::sha256(bytes);
        if got != self.digest {
            return Err(SpanError::BlockDigest {
                span,
                block: 0,
                got,
                want: self.digest,
            });
        }
        self.decode_unchecked(zinfo, blocks, bytes)
    }

    pub(super) fn decode_unchecked(
        &self,
        zinfo: &Zinfo,
        blocks: &SpanBlocks,
        bytes: &[u8],
    ) -> Result<Decoded, SpanError> {
        let span = self.span;
        let (mut decoder, start) = self.decoder(zinfo, blocks)?;
        let mut out = Vec::new();
        decoder.feed_exact(zinfo, blocks, bytes, &mut out)?;
        let want = self.needed.end.saturating_sub(start);
        if (out.len() as u64) < want {
            return Err(SpanError::Length {
                span,
                got: out.len(),
                want,
            });
        }
        Ok(Decoded {
            decoder,
            start,
            out,
        })
    }
}

/// A layer's learned ranges, in prefetch order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LearnedRanges {
    pub ranges: Vec<LearnedRange>,
}

impl LearnedRanges {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&u32::try_from(self.ranges.len()).unwrap_or(0).to_le_bytes());
        for r in &self.ranges {
            out.extend_from_slice(&u32::try_from(r.span).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(&r.needed.start.to_le_bytes());
            out.extend_from_slice(&r.needed.end.to_le_bytes());
            match r.start {
                LearnedStart::Checkpoint => out.push(0),
                LearnedStart::Point {
                    compressed,
                    uncompressed,
                    bits,
                } => {
                    out.push(1);
                    out.extend_from_slice(&compressed.to_le_bytes());
                    out.extend_from_slice(&uncompressed.to_le_bytes());
                    out.push(bits);
                }
            }
            out.extend_from_slice(&r.compressed.start.to_le_bytes());
            out.extend_from_slice(&r.compressed.end.to_le_bytes());
            out.extend_from_slice(r.digest.as_bytes());
            out.extend_from_slice(&u32::try_from(r.window.len()).unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&r.window);
        }
        out
    }

    /// Parses `bytes` and checks every range against the layer's zTOC and blocks.
    pub fn from_bytes(
        bytes: &[u8],
        zinfo: &Zinfo,
        blocks: &SpanBlocks,
    ) -> Result<Self, LearnedError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(LearnedError::Magic);
        }
        let count = r.u32()? as usize;
        let mut ranges = Vec::with_capacity(count.min(bytes.len() / 64));
        for entry in 0..count {
            let bad = |problem| LearnedError::Entry { entry, problem };
            let span = r.u32()? as usize;
            let needed = r.u64()?..r.u64()?;
            let start = match r.take(1)?[0] {
                0 => LearnedStart::Checkpoint,
                1 => LearnedStart::Point {
                    compressed: r.u64()?,
                    uncompressed: r.u64()?,
                    bits: r.take(1)?[0],
                },
                _ => return Err(bad("unknown start")),
            };
            let compressed = r.u64()?..r.u64()?;
            let digest = Digest::from_bytes(r.take(32)?.try_into().unwrap_or([0; 32]));
            let window_len = r.u32()?;
            if window_len > MAX_WINDOW {
                return Err(bad("window too large"));
            }
            let window = r.take(window_len as usize)?.to_vec();
            let (Some(u), Some(c)) = (zinfo.uncompressed_range(span), zinfo.compressed_range(span))
            else {
                return Err(bad("no such span"));
            };
            let (from_u, from_c) = match start {
                LearnedStart::Checkpoint => {
                    if !window.is_empty() {
                        return Err(bad("window at a checkpoint"));
                    }
                    (
                        u.start,
                        blocks.compressed_range(zinfo, span, 0).map(|b| b.start),
                    )
                }
                LearnedStart::Point { .. } => {
                    let p = (start.resume_point(zinfo, blocks, span))
                        .ok_or_else(|| bad("resume point outside the span"))?;
                    (p.uncompressed, Some(p.fetch_start()))
                }
            };
            if needed.start < from_u || needed.start >= needed.end || needed.end > u.end {
                return Err(bad("needed bytes outside what its start decodes"));
            }
            if Some(compressed.start) != from_c
                || compressed.end <= compressed.start
                || compressed.end > c.end
            {
                return Err(bad(
                    "compressed bytes do not start at its start or leave the span",
                ));
            }
            ranges.push(LearnedRange {
                span,
                needed,
                start,
                compressed,
                digest,
                window,
            });
        }
        if r.at != bytes.len() {
            return Err(LearnedError::Trailing(bytes.len() - r.at));
        }
        Ok(Self { ranges })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LearnedError> {
        let got = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or(LearnedError::Truncated { at: self.at })?;
        self.at += n;
        Ok(got)
    }

    fn u64(&mut self) -> Result<u64, LearnedError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }

    fn u32(&mut self) -> Result<u32, LearnedError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
}
