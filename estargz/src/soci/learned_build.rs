//! Building learned ranges ([`super::learned`]) from the layer blob. Per read and span:
//! decoding starts at the last deflate block end before the read (found by decoding from
//! the index's last point or checkpoint before it, with the sparse window of what the
//! bytes after it refer to), unless its window costs more than the bytes it saves; the
//! compressed bytes end where the read's last byte comes out, found by feeding a decoder a
//! few hundred bytes at a time and checked by decoding them afresh.

use std::ops::Range;

use miniz_oxide::inflate::TINFLStatus;

use crate::digest::Digest;

use super::blocks::SpanBlocks;
use super::inflate::Inflater;
use super::learned::{LearnedError, LearnedRange, LearnedRanges, LearnedStart};
use super::span::SpanError;
use super::sparse_window;
use super::zinfo::Zinfo;

/// Compressed bytes fed at a time while looking for where a read ends: a range may run
/// this much past the last byte it needs.
const STEP: usize = 256;
/// Compressed bytes read past a block end before a read, so that the bytes after a point
/// there give the 32 KiB of output its sparse window is worked out from.
const WINDOW_MARGIN: u64 = 64 << 10;

impl LearnedRanges {
    /// The learned ranges for `reads` (uncompressed tar ranges, in prefetch order) of the
    /// layer `zinfo` and `blocks` index; `windows` is the windows blob of the index's
    /// points and `read_at` reads compressed bytes of the layer blob.
    pub fn build(
        zinfo: &Zinfo,
        blocks: &SpanBlocks,
        windows: &[u8],
        reads: &[Range<u64>],
        mut read_at: impl FnMut(Range<u64>) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, LearnedError> {
        let mut ranges: Vec<LearnedRange> = Vec::new();
        for read in reads {
            for span in zinfo.spans_for(read.clone()) {
                let Some(u) = zinfo.uncompressed_range(span) else {
                    continue;
                };
                let needed = read.start.max(u.start)..read.end.min(u.end);
                if needed.is_empty() || covered(&ranges, span, zinfo, &needed) {
                    continue;
                }
                let mut range = nearest_start(zinfo, blocks, windows, span, needed, &mut read_at)?;
                let from = range.compressed.start;
                // A read whose start the previous range of the span already fetches past
                // goes on from there: one fetch, no bytes twice.
                if let Some(last) = ranges.last_mut().filter(|l| {
                    l.span == span
                        && l.compressed.end > from
                        && l.needed.start <= range.needed.start
                }) {
                    range.start = last.start;
                    range.window = std::mem::take(&mut last.window);
                    range.needed = last.needed.start..range.needed.end.max(last.needed.end);
                    ranges.pop();
                }
                place(&mut range, zinfo, blocks, &mut read_at)?;
                ranges.push(range);
            }
        }
        Ok(Self { ranges })
    }
}

/// Where decoding starts (uncompressed) for `range`.
fn start_of(range: &LearnedRange, zinfo: &Zinfo) -> u64 {
    match range.start {
        LearnedStart::Checkpoint => zinfo
            .uncompressed_range(range.span)
            .map_or(u64::MAX, |u| u.start),
        LearnedStart::Point { uncompressed, .. } => uncompressed,
    }
}

/// Whether an earlier range of `span` decodes `needed` already.
fn covered(ranges: &[LearnedRange], span: usize, zinfo: &Zinfo, needed: &Range<u64>) -> bool {
    ranges
        .iter()
        .filter(|r| r.span == span)
        .any(|r| start_of(r, zinfo) <= needed.start && needed.end <= r.needed.end)
}

/// A range for `needed` of `span` starting at the last block end before it (or the
/// index's last point or checkpoint, when that is cheaper), its compressed start set.
fn nearest_start(
    zinfo: &Zinfo,
    blocks: &SpanBlocks,
    windows: &[u8],
    span: usize,
    needed: Range<u64>,
    read_at: &mut impl FnMut(Range<u64>) -> std::io::Result<Vec<u8>>,
) -> Result<LearnedRange, LearnedError> {
    let failed = |source| LearnedError::Span { span, source };
    let (start, window) = index_start(blocks, windows, span, needed.start);
    let mut range = LearnedRange {
        span,
        needed,
        start,
        compressed: 0..0,
        digest: Digest::sha256(&[]),
        window,
    };
    let (decoder, from_u) = range.decoder(zinfo, blocks).map_err(failed)?;
    let from = decoder
        .fetch_start(zinfo, blocks)
        .ok_or_else(|| failed(SpanError::NoSuchSpan { span }))?;
    range.compressed = from..from;
    let span_end = zinfo.compressed_range(span).map_or(from, |c| c.end);
    let last = blocks.needed(span, range.needed.start).saturating_sub(1);
    let upto = blocks
        .compressed_range(zinfo, span, last)
        .map_or(from, |b| b.end);
    let bytes = read_at(from..upto.saturating_add(WINDOW_MARGIN).min(span_end).max(from))?;
    let (bits, window) = match range.start {
        LearnedStart::Checkpoint => (
            zinfo.checkpoint(span).map_or(0, |c| c.bits),
            zinfo.window(span).to_vec(),
        ),
        LearnedStart::Point { bits, .. } => {
            let window = sparse_window::decode(&range.window)
                .map_err(|_| failed(SpanError::NoSuchSpan { span }))?;
            (bits, window)
        }
    };
    let Some(end) = last_block_end(bits, &window, &bytes, from_u, range.needed.start) else {
        return Ok(range);
    };
    let after = &bytes[end.after..];
    let used = sparse_window::referenced(end.bits, end.byte, after)
        .unwrap_or_else(|| vec![true; window.len()]);
    let entry = sparse_window::encode(&end.window, &used);
    let saved = end.after as u64 - u64::from(end.bits != 0);
    if saved <= (entry.len() as u64).saturating_sub(range.window.len() as u64) {
        return Ok(range);
    }
    range.start = LearnedStart::Point {
        compressed: from + end.after as u64,
        uncompressed: end.uncompressed,
        bits: end.bits,
    };
    range.window = entry;
    range.compressed = from + saved..from + saved;
    Ok(range)
}

/// The index's last usable resume point at or before `at` in `span` (with its window
/// entry), else the checkpoint.
fn index_start(
    blocks: &SpanBlocks,
    windows: &[u8],
    span: usize,
    at: u64,
) -> (LearnedStart, Vec<u8>) {
    let entry = |p: &super::ResumePoint| {
        let w = p.window;
        let from = usize::try_from(w.offset).ok()?;
        windows
            .get(from..from.checked_add(w.len as usize)?)
            .map(<[u8]>::to_vec)
    };
    let found = (blocks.points_of(span).iter())
        .filter(|p| p.uncompressed <= at)
        .filter_map(|p| Some((p, entry(p)?)))
        .next_back();
    match found {
        Some((p, window)) => (
            LearnedStart::Point {
                compressed: p.compressed,
                uncompressed: p.uncompressed,
                bits: p.bits,
            },
            window,
        ),
        None => (LearnedStart::Checkpoint, Vec::new()),
    }
}

/// A deflate block end found while decoding.
struct BlockEnd {
    /// Index in the bytes decoded of the first whole byte after it.
    after: usize,
    uncompressed: u64,
    bits: u8,
    /// The byte holding the leftover bits.
    byte: u8,
    /// The 32 KiB of output before it.
    window: Vec<u8>,
}

/// The last deflate block end after the start and at or before uncompressed `at`,
/// decoding `bytes` (from the start's first byte: `bits` leftover bits in the first, and
/// `window` as history) whose output begins at `from_u`. Stops at a gzip member's end.
fn last_block_end(bits: u8, window: &[u8], bytes: &[u8], from_u: u64, at: u64) -> Option<BlockEnd> {
    let (mut inflater, mut pos) = match bits {
        0 => (Inflater::resume(0, 0, window), 0),
        _ => (Inflater::resume(bits, *bytes.first()?, window), 1),
    };
    let (mut produced, mut byte, mut found) = (from_u, 0u8, None);
    while produced < at {
        let limit = usize::try_from(at - produced).unwrap_or(usize::MAX);
        let step = inflater.step(&bytes[pos..], true, true, limit);
        produced += step.out.len() as u64;
        if step.consumed > 0 {
            pos += step.consumed;
            byte = bytes[pos - 1];
        }
        match step.status {
            TINFLStatus::BlockBoundary if produced > from_u && pos > 0 => {
                let mut window = Vec::new();
                inflater.window_into(&mut window);
                let bits = inflater.boundary_bits().unwrap_or(0);
                found = Some(BlockEnd {
                    after: pos,
                    uncompressed: produced,
                    bits,
                    byte,
                    window,
                });
            }
            TINFLStatus::BlockBoundary | TINFLStatus::HasMoreOutput => {}
            TINFLStatus::NeedsMoreInput if step.consumed > 0 || !step.out.is_empty() => {}
            _ => break,
        }
    }
    found
}

/// Sets `range`'s compressed end and digest: fed [`STEP`] bytes at a time from its start,
/// the first end at which its needed bytes come out, checked by decoding the bytes afresh.
fn place(
    range: &mut LearnedRange,
    zinfo: &Zinfo,
    blocks: &SpanBlocks,
    read_at: &mut impl FnMut(Range<u64>) -> std::io::Result<Vec<u8>>,
) -> Result<(), LearnedError> {
    let span = range.span;
    let failed = |source| LearnedError::Span { span, source };
    let (mut probe, start) = range.decoder(zinfo, blocks).map_err(failed)?;
    let from = probe
        .fetch_start(zinfo, blocks)
        .ok_or_else(|| failed(SpanError::NoSuchSpan { span }))?;
    let last = blocks.needed(span, range.needed.end).saturating_sub(1);
    let upper = blocks
        .compressed_range(zinfo, span, last)
        .map_or(from, |b| b.end)
        .max(from);
    let bytes = read_at(from..upper)?;
    let want = range.needed.end.saturating_sub(start);
    let mut out = Vec::new();
    let mut at = 0;
    while (out.len() as u64) < want && at < bytes.len() {
        let next = (at + STEP).min(bytes.len());
        probe
            .feed_exact(zinfo, blocks, &bytes[at..next], &mut out)
            .map_err(failed)?;
        at = next;
    }
    loop {
        range.compressed = from..from + at as u64;
        match range.decode_unchecked(zinfo, blocks, &bytes[..at]) {
            Ok(_) => break,
            Err(_) if at < bytes.len() => at = (at + STEP).min(bytes.len()),
            Err(source) => return Err(failed(source)),
        }
    }
    range.digest = Digest::sha256(&bytes[..at]);
    Ok(())
}
