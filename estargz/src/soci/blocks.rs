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
//! Layout (little endian): magic `ESZBLK01`, `u64 block_size`, `u32 spans`; per span
//! `u32 blocks`, then per block 32 bytes of sha256 and `u64` uncompressed end (absolute).
//! 64 KiB blocks cost 40 bytes per 64 KiB of layer (0.06 %) and at most 64 KiB past a
//! read's end (~5 ms at 100 Mbit/s, about one round trip on a WAN link), so a finer cut
//! would save less than the requests it adds.

use std::ops::Range;

use crate::digest::{Digest, Hasher};

use super::zinfo::Zinfo;

/// Media type of a blocks blob.
pub const BLOCKS_MEDIA_TYPE: &str = "application/vnd.estargz.soci.blocks.v1";
/// Compressed bytes per block (the last block of a span is shorter).
pub const DEFAULT_BLOCK_SIZE: u64 = 64 << 10;
/// Largest blocks blob a reader accepts.
pub const MAX_BLOCKS_SIZE: u64 = 64 << 20;
/// Smallest block size a reader accepts (bounds the block count of a hostile blob).
const MIN_BLOCK_SIZE: u64 = 4 << 10;
const MAGIC: &[u8; 8] = b"ESZBLK01";
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
        if r.take(8)? != MAGIC {
            return Err(BlocksError::Magic);
        }
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
        if r.at != bytes.len() {
            return Err(BlocksError::Trailing(bytes.len() - r.at));
        }
        Ok(Self { block_size, spans })
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
        out
    }
}

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

    pub fn finish(self) -> SpanBlocks {
        SpanBlocks {
            block_size: self.size,
            spans: self.spans,
        }
    }
}
