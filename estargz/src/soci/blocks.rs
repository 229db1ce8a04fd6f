//! Verification blocks inside spans: a blob of our own that `estargz-convert index` pushes
//! beside each zTOC (media type [`BLOCKS_MEDIA_TYPE`], a further layer of the SOCI index
//! manifest bound by the layer-digest annotation; the zTOC itself is soci's, untouched).
//!
//! A span's digest covers all of its compressed bytes, so without this nothing of a span
//! can be served before the whole span is here. The blocks blob cuts every span's
//! compressed bytes ([`super::Zinfo::compressed_range`]) into blocks of `block_size`
//! bytes (the last one shorter) and gives each its sha256 and the uncompressed offset the
//! indexing inflater had produced once it had consumed the whole block. A read ending at
//! uncompressed `b` then needs only the span's blocks up to the first whose offset reaches
//! `b`, each checked against its own digest before anything inflated from it is served.
//!
//! Layout (little endian): magic `ESZBLK02` (`ESZBLK01`: no points), `u64 block_size`,
//! `u32 spans`; per span `u32 blocks`, then per block 32 bytes of sha256 and `u64`
//! uncompressed end (absolute); then `u32 points` and per [`ResumePoint`] `u32 span`,
//! `u32 block`, `u64 compressed`, `u64 uncompressed`, `u8 bits`, and its window's `u64
//! offset`, `u32 len` and sha256 in the windows blob ([`super::resume`]).
//! 64 KiB blocks cost 40 bytes per 64 KiB of layer (0.06 %) and at most 64 KiB past a
//! read's end (~5 ms at 100 Mbit/s, about one round trip on a WAN link), so a finer cut
//! would save less than the requests it adds.

use std::ops::Range;

use crate::digest::{Digest, Hasher};

use super::resume::{ResumePoint, WindowRef};
use super::zinfo::Zinfo;

/// Media type of a blocks blob.
pub const BLOCKS_MEDIA_TYPE: &str = "application/vnd.estargz.soci.blocks.v1";
/// Compressed bytes per block (the last block of a span is shorter).
pub const DEFAULT_BLOCK_SIZE: u64 = 64 << 10;
/// Largest blocks blob a reader accepts.
pub const MAX_BLOCKS_SIZE: u64 = 64 << 20;
/// Smallest block size a reader accepts (bounds the block count of a hostile blob).
const MIN_BLOCK_SIZE: u64 = 4 << 10;
const MAGIC_V1: &[u8; 8] = b"ESZBLK01";
const MAGIC: &[u8; 8] = b"ESZBLK02";
const ENTRY: usize = 32 + 8;

/// Why a blocks blob cannot be used with its zTOC.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlocksError {
    #[error("blocks blob is truncated at byte {at}")]
    Truncated { at: usize },
    #[error("blocks blob has a bad magic")]
    Magic,
    #[error("block size {0} is invalid")]
    BlockSize(u64),
    #[error("blocks blob lists {got} spans, the ztoc has {want}")]
    SpanCount { got: usize, want: usize },
    #[error("span {span}: {got} blocks, its compressed bytes make {want}")]
    BlockCount { span: usize, got: usize, want: u64 },
    #[error("span {span} block {block}: uncompressed end {end} is outside the span or decreasing")]
    End { span: usize, block: usize, end: u64 },
    #[error("blocks blob has {0} bytes after its last span")]
    Trailing(usize),
    #[error("resume point {0} is outside its block or out of order")]
    Point(usize),
}

/// One block: its digest and the uncompressed offset reached once it was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub digest: Digest,
    pub uncompressed_end: u64,
}

/// The blocks of every span of one zTOC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanBlocks {
    block_size: u64,
    spans: Vec<Vec<Block>>,
    /// Sorted by uncompressed offset.
    points: Vec<ResumePoint>,
}

impl SpanBlocks {
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Blocks of `span` (0 when there is no such span).
    pub fn count(&self, span: usize) -> usize {
        self.spans.get(span).map_or(0, Vec::len)
    }

    pub fn block(&self, span: usize, block: usize) -> Option<&Block> {
        self.spans.get(span)?.get(block)
    }

    /// The resume points, in order.
    pub fn points(&self) -> &[ResumePoint] {
        &self.points
    }

    /// The resume points of `span`, in order.
    pub fn points_of(&self, span: usize) -> &[ResumePoint] {
        let span = u32::try_from(span).unwrap_or(u32::MAX);
        let a = self.points.partition_point(|p| p.span < span);
        let b = self.points.partition_point(|p| p.span <= span);
        &self.points[a..b]
    }

    pub(crate) fn set_points(&mut self, points: Vec<ResumePoint>) {
        self.points = points;
    }

    /// The compressed bytes of `block` of `span` (absolute blob offsets).
    pub fn compressed_range(&self, zinfo: &Zinfo, span: usize, block: usize) -> Option<Range<u64>> {
        let span_range = zinfo.compressed_range(span)?;
        if block >= self.count(span) {
            return None;
        }
        let start = span_range
            .start
            .checked_add(u64::try_from(block).ok()?.checked_mul(self.block_size)?)?;
        Some(start..start.saturating_add(self.block_size).min(span_range.end))
    }

    /// How many blocks of `span`, from its start, give its uncompressed bytes up to `end`
    /// (all of them when `end` is at or past the span's end).
    pub fn needed(&self, span: usize, end: u64) -> usize {
        let Some(blocks) = self.spans.get(span) else {
            return 0;
        };
        let at = blocks.partition_point(|b| b.uncompressed_end < end);
        at.saturating_add(1).min(blocks.len())
    }

    /// Parses `bytes` and checks it against the span geometry of its zTOC.
    pub fn from_bytes(bytes: &[u8], zinfo: &Zinfo) -> Result<Self, BlocksError> {
        let mut r = Reader { bytes, at: 0 };
        let with_points = match r.take(8)? {
            m if m == MAGIC => true,
            m if m == MAGIC_V1 => false,
            _ => return Err(BlocksError::Magic),
        };
        let block_size = r.u64()?;
        if block_size < MIN_BLOCK_SIZE {
            return Err(BlocksError::BlockSize(block_size));
        }
        let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if count != zinfo.span_count() {
            return Err(BlocksError::SpanCount {
                got: count,
                want: zinfo.span_count(),
            });
        }
        let mut spans = Vec::with_capacity(count);
        for span in 0..count {
            let (Some(c), Some(u)) = (zinfo.compressed_range(span), zinfo.uncompressed_range(span))
            else {
                return Err(BlocksError::SpanCount {
                    got: count,
                    want: 0,
                });
            };
            let want = (c.end - c.start).div_ceil(block_size).max(1);
            let got = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
            if u64::try_from(got).ok() != Some(want) {
                return Err(BlocksError::BlockCount { span, got, want });
            }
            // Bounded by what the blob holds, whatever a hostile zTOC claims.
            let mut blocks = Vec::with_capacity(got.min(bytes.len() / ENTRY));
            let mut last = u.start;
            for block in 0..got {
                let digest = Digest::from_bytes(r.take(32)?.try_into().unwrap_or([0; 32]));
                let end = r.u64()?;
                let is_last = block + 1 == got;
                if end < last || end > u.end || (is_last && end != u.end) {
                    return Err(BlocksError::End { span, block, end });
                }
                last = end;
                blocks.push(Block {
                    digest,
                    uncompressed_end: end,
                });
            }
            spans.push(blocks);
        }
        let mut parsed = Self {
            block_size,
            spans,
            points: Vec::new(),
        };
        if with_points {
            parsed.points = read_points(&mut r, &parsed, zinfo)?;
        }
        if r.at != bytes.len() {
            return Err(BlocksError::Trailing(bytes.len() - r.at));
        }
        Ok(parsed)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let blocks: usize = self.spans.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(8 + 8 + 4 + 4 * self.spans.len() + ENTRY * blocks);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.block_size.to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.spans.len()).unwrap_or(0).to_le_bytes());
        for span in &self.spans {
            out.extend_from_slice(&u32::try_from(span.len()).unwrap_or(0).to_le_bytes());
            for b in span {
                out.extend_from_slice(b.digest.as_bytes());
                out.extend_from_slice(&b.uncompressed_end.to_le_bytes());
            }
        }
        out.extend_from_slice(&u32::try_from(self.points.len()).unwrap_or(0).to_le_bytes());
        for p in &self.points {
            out.extend_from_slice(&p.span.to_le_bytes());
            out.extend_from_slice(&p.block.to_le_bytes());
            out.extend_from_slice(&p.compressed.to_le_bytes());
            out.extend_from_slice(&p.uncompressed.to_le_bytes());
            out.push(p.bits);
            out.extend_from_slice(&p.window.offset.to_le_bytes());
            out.extend_from_slice(&p.window.len.to_le_bytes());
            out.extend_from_slice(p.window.digest.as_bytes());
        }
        out
    }
}

/// Reads and checks the resume points: each inside its block (past the span's first) and
/// its span's output, in order, with a window of bounded size.
fn read_points(
    r: &mut Reader<'_>,
    blocks: &SpanBlocks,
    zinfo: &Zinfo,
) -> Result<Vec<ResumePoint>, BlocksError> {
    let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    let mut points = Vec::with_capacity(count.min(r.bytes.len() / 77));
    for i in 0..count {
        let point = ResumePoint {
            span: r.u32()?,
            block: r.u32()?,
            compressed: r.u64()?,
            uncompressed: r.u64()?,
            bits: r.take(1)?[0],
            window: WindowRef {
                offset: r.u64()?,
                len: r.u32()?,
                digest: Digest::from_bytes(r.take(32)?.try_into().unwrap_or([0; 32])),
            },
        };
        let (span, block) = (point.span as usize, point.block as usize);
        let inside = blocks
            .compressed_range(zinfo, span, block)
            .is_some_and(|c| c.contains(&point.fetch_start()) && point.compressed <= c.end);
        let within = zinfo
            .uncompressed_range(span)
            .is_some_and(|u| point.uncompressed > u.start && point.uncompressed < u.end);
        let ordered = points
            .last()
            .is_none_or(|l: &ResumePoint| l.uncompressed < point.uncompressed);
        if block == 0
            || point.bits > 7
            || (point.bits != 0 && point.compressed == 0)
            || !inside
            || !within
            || !ordered
            || u64::from(point.window.len) > MAX_WINDOW_ENTRY
        {
            return Err(BlocksError::Point(i));
        }
        points.push(point);
    }
    Ok(points)
}

/// Largest stored sparse window a reader accepts (zstd of 32 KiB, with room).
const MAX_WINDOW_ENTRY: u64 = 64 << 10;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BlocksError> {
        let got = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or(BlocksError::Truncated { at: self.at })?;
        self.at += n;
        Ok(got)
    }

    fn u64(&mut self) -> Result<u64, BlocksError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }

    fn u32(&mut self) -> Result<u32, BlocksError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
}

/// Records blocks during the indexing pass: every compressed byte of a span goes through
/// [`BlockRecorder::feed`] in order, with the uncompressed offset reached once it was
/// consumed; the builder never feeds past [`BlockRecorder::room`], so a block's recorded
/// end is exact.
pub(crate) struct BlockRecorder {
    size: u64,
    hasher: Hasher,
    in_block: u64,
    current: Vec<Block>,
    spans: Vec<Vec<Block>>,
}

impl BlockRecorder {
    pub fn new(size: u64) -> Self {
        Self {
            size: size.max(MIN_BLOCK_SIZE),
            hasher: Hasher::new(),
            in_block: 0,
            current: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Bytes left in the current block.
    pub fn room(&self) -> u64 {
        self.size - self.in_block
    }

    /// Adds `bytes` (at most [`Self::room`]); `out` is the uncompressed offset reached.
    pub fn feed(&mut self, mut bytes: &[u8], out: u64) {
        while !bytes.is_empty() {
            let n = usize::try_from(self.room())
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            self.hasher.update(&bytes[..n]);
            self.in_block += n as u64;
            bytes = &bytes[n..];
            if self.in_block == self.size {
                self.finish_block(out);
            }
        }
    }

    fn finish_block(&mut self, out: u64) {
        let hasher = std::mem::take(&mut self.hasher);
        self.current.push(Block {
            digest: hasher.finish(),
            uncompressed_end: out,
        });
        self.in_block = 0;
    }

    /// Ends the current span at uncompressed offset `out`.
    pub fn cut(&mut self, out: u64) {
        if self.in_block > 0 || self.current.is_empty() {
            self.finish_block(out);
        }
        // Everything of the span gives the span's end, however the inflater stepped.
        if let Some(last) = self.current.last_mut() {
            last.uncompressed_end = out;
        }
        self.spans.push(std::mem::take(&mut self.current));
    }

    /// Span and block the next compressed byte goes to, and how far into that block.
    pub fn position(&self) -> (usize, usize, u64) {
        (self.spans.len(), self.current.len(), self.in_block)
    }

    pub fn finish(self) -> SpanBlocks {
        SpanBlocks {
            block_size: self.size,
            spans: self.spans,
            points: Vec::new(),
        }
    }
}
