//! Reading the first blocks of a span ([`super::blocks`]): each block is checked against
//! its own digest, then fed to a decoder resumed at the span's checkpoint that keeps its
//! state between blocks, so a span read further later costs only its new blocks (nothing
//! is inflated twice). Crosses gzip member boundaries, also where a block ends inside a
//! member's trailer or the next header.

use miniz_oxide::inflate::TINFLStatus;

use crate::digest::Digest;

use super::blocks::SpanBlocks;
use super::gzip::{self, TRAILER_LEN};
use super::inflate::Inflater;
use super::resume::ResumePoint;
use super::span::{status_name, SpanError};
use super::zinfo::Zinfo;
use super::ztoc::Compression;

/// Checks `bytes` against block `block` of span `span`: its length and its digest.
pub fn check_block(
    zinfo: &Zinfo,
    blocks: &SpanBlocks,
    span: usize,
    block: usize,
    bytes: &[u8],
) -> Result<(), SpanError> {
    let (Some(range), Some(info)) = (
        blocks.compressed_range(zinfo, span, block),
        blocks.block(span, block),
    ) else {
        return Err(SpanError::NoSuchSpan { span });
    };
    if u64::try_from(bytes.len()).ok() != Some(range.end - range.start) {
        return Err(SpanError::Length {
            span,
            got: bytes.len(),
            want: range.end - range.start,
        });
    }
    let got = Digest::sha256(bytes);
    if got != info.digest {
        return Err(SpanError::BlockDigest {
            span,
            block,
            got,
            want: info.digest,
        });
    }
    Ok(())
}

/// Inflates one span block by block from its checkpoint.
pub struct PrefixDecoder {
    span: usize,
    compression: Compression,
    /// Created at the first block (its first byte may hold the checkpoint's bits).
    inflater: Option<Inflater>,
    bits: u8,
    window: Vec<u8>,
    /// Bytes after a member's deflate data not yet enough to skip trailer and header.
    pending: Vec<u8>,
    in_deflate: bool,
    produced: u64,
    want: u64,
    blocks: usize,
    /// The span's block fed first, and bytes of it before the starting point.
    first_block: usize,
    skip: usize,
}

impl PrefixDecoder {
    pub fn new(zinfo: &Zinfo, span: usize) -> Result<Self, SpanError> {
        let (Some(cp), Some(u)) = (zinfo.checkpoint(span), zinfo.uncompressed_range(span)) else {
            return Err(SpanError::NoSuchSpan { span });
        };
        Ok(Self {
            span,
            compression: zinfo.compression(),
            inflater: None,
            bits: cp.bits,
            window: zinfo.window(span).to_vec(),
            pending: Vec::new(),
            in_deflate: true,
            produced: 0,
            want: u.end - u.start,
            blocks: 0,
            first_block: 0,
            skip: 0,
        })
    }

    /// A decoder starting at resume point `point` of the span (gzip layers only), with
    /// its 32 KiB window ([`super::sparse_window::decode`]): fed the span's blocks from
    /// `point.block` on, it produces the span's bytes from `point.uncompressed`.
    pub fn at_point(
        zinfo: &Zinfo,
        blocks: &SpanBlocks,
        point: &ResumePoint,
        window: Vec<u8>,
    ) -> Result<Self, SpanError> {
        let span = point.span as usize;
        let block = point.block as usize;
        let (Some(u), Some(c)) = (
            zinfo.uncompressed_range(span),
            blocks.compressed_range(zinfo, span, block),
        ) else {
            return Err(SpanError::NoSuchSpan { span });
        };
        if zinfo.compression() != Compression::Gzip
            || !u.contains(&point.uncompressed)
            || !c.contains(&point.fetch_start())
        {
            return Err(SpanError::NoSuchSpan { span });
        }
        Ok(Self {
            span,
            compression: Compression::Gzip,
            inflater: None,
            bits: point.bits,
            window,
            pending: Vec::new(),
            in_deflate: true,
            produced: 0,
            want: u.end - point.uncompressed,
            blocks: 0,
            first_block: block,
            skip: usize::try_from(point.fetch_start() - c.start).unwrap_or(usize::MAX),
        })
    }

    /// The blob offset of the first compressed byte this decoder takes (before any feed).
    pub fn fetch_start(&self, zinfo: &Zinfo, blocks: &SpanBlocks) -> Option<u64> {
        let block = blocks.compressed_range(zinfo, self.span, self.first_block)?;
        block.start.checked_add(self.skip as u64)
    }

    /// Feeds `bytes`, exactly the compressed bytes from [`Self::fetch_start`] on (they may
    /// end inside a block: a range whose digest the index gives as a whole, see
    /// [`super::learned`]). The decoder then goes on block by block: its next block is the
    /// one holding the byte after `bytes`, fed whole, its bytes before that one skipped.
    pub fn feed_exact(
        &mut self,
        zinfo: &Zinfo,
        blocks: &SpanBlocks,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SpanError> {
        let span = self.span;
        let no_span = || SpanError::NoSuchSpan { span };
        let start = self.fetch_start(zinfo, blocks).ok_or_else(no_span)?;
        let span_bytes = zinfo.compressed_range(span).ok_or_else(no_span)?;
        let end = start.saturating_add(bytes.len() as u64);
        if self.blocks != 0 || end > span_bytes.end {
            return Err(SpanError::Length {
                span,
                got: bytes.len(),
                want: span_bytes.end.saturating_sub(start),
            });
        }
        self.skip = 0;
        self.feed(bytes, out)?;
        let block = usize::try_from((end - span_bytes.start) / blocks.block_size()).unwrap_or(0);
        self.blocks = 0;
        match blocks.compressed_range(zinfo, span, block) {
            Some(r) => {
                self.first_block = block;
                self.skip = usize::try_from(end - r.start).unwrap_or(usize::MAX);
            }
            None => {
                self.first_block = blocks.count(span);
                self.skip = 0;
            }
        }
        Ok(())
    }

    /// Blocks fed so far.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// The span's block to feed next.
    pub fn next_block(&self) -> usize {
        self.first_block + self.blocks
    }

    /// Uncompressed bytes produced so far (from the span's start).
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Whether the whole span came out.
    pub fn done(&self) -> bool {
        self.produced >= self.want
    }

    /// Feeds the next block (already checked with [`check_block`]), appending what it
    /// decodes to `out`.
    pub fn feed(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), SpanError> {
        self.blocks += 1;
        let span = self.span;
        if self.compression == Compression::Uncompressed {
            let n = usize::try_from(self.want - self.produced)
                .unwrap_or(usize::MAX)
                .min(block.len());
            out.extend_from_slice(&block[..n]);
            self.produced += n as u64;
            return Ok(());
        }
        let mut input = block;
        if self.blocks == 1 {
            input = input.get(self.skip..).ok_or(SpanError::Length {
                span,
                got: block.len(),
                want: self.skip as u64,
            })?;
        }
        if self.inflater.is_none() {
            let window = std::mem::take(&mut self.window);
            self.inflater = Some(if self.bits != 0 {
                let (first, rest) = input.split_first().ok_or(SpanError::Length {
                    span,
                    got: 0,
                    want: 1,
                })?;
                input = rest;
                Inflater::resume(self.bits, *first, &window)
            } else {
                Inflater::resume(0, 0, &window)
            });
        }
        let joined;
        if !self.pending.is_empty() {
            let mut all = std::mem::take(&mut self.pending);
            all.extend_from_slice(input);
            joined = all;
            input = &joined;
        }
        let Some(inf) = self.inflater.as_mut() else {
            return Err(SpanError::NoSuchSpan { span });
        };
        while self.produced < self.want {
            if !self.in_deflate {
                // Between members: the trailer, then the next member's header.
                let Some(after) = input.get(TRAILER_LEN..) else {
                    self.pending = input.to_vec();
                    return Ok(());
                };
                match gzip::header_len(after, 0) {
                    Ok(Some(header)) => {
                        input = &after[header..];
                        inf.next_member();
                        self.in_deflate = true;
                    }
                    Ok(None) => {
                        self.pending = input.to_vec();
                        return Ok(());
                    }
                    Err(source) => return Err(SpanError::Gzip { span, source }),
                }
            }
            let limit = usize::try_from(self.want - self.produced).unwrap_or(usize::MAX);
            let step = inf.step(input, true, false, limit);
            out.extend_from_slice(&inf.ring()[step.out.clone()]);
            self.produced += step.out.len() as u64;
            input = &input[step.consumed..];
            match step.status {
                TINFLStatus::HasMoreOutput => {}
                TINFLStatus::Done => self.in_deflate = false,
                TINFLStatus::NeedsMoreInput => {
                    self.pending = input.to_vec();
                    return Ok(());
                }
                other => {
                    return Err(SpanError::Inflate {
                        span,
                        status: status_name(other),
                    })
                }
            }
        }
        Ok(())
    }
}

/// Checks the first `count` blocks of span `span` (`prefix` is exactly their compressed
/// bytes, in order) and inflates them from the checkpoint. Returns the span's first
/// uncompressed bytes: all of them when the prefix is the whole span, else at least up to
/// the last block's recorded end.
pub fn decompress_prefix(
    zinfo: &Zinfo,
    blocks: &SpanBlocks,
    span: usize,
    count: usize,
    prefix: &[u8],
) -> Result<Vec<u8>, SpanError> {
    let mut decoder = PrefixDecoder::new(zinfo, span)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    for block in 0..count.min(blocks.count(span)) {
        let len = blocks.compressed_range(zinfo, span, block).map_or(0, |r| {
            usize::try_from(r.end - r.start).unwrap_or(usize::MAX)
        });
        let bytes = prefix
            .get(at..at.saturating_add(len))
            .ok_or(SpanError::Length {
                span,
                got: prefix.len(),
                want: u64::try_from(at.saturating_add(len)).unwrap_or(u64::MAX),
            })?;
        check_block(zinfo, blocks, span, block, bytes)?;
        decoder.feed(bytes, &mut out)?;
        at += len;
    }
    if at != prefix.len() {
        return Err(SpanError::Length {
            span,
            got: prefix.len(),
            want: u64::try_from(at).unwrap_or(u64::MAX),
        });
    }
    if count >= blocks.count(span) && !decoder.done() {
        return Err(SpanError::Short {
            span,
            got: decoder.produced(),
            want: decoder.want,
        });
    }
    Ok(out)
}
