//! Building a zTOC in one streaming pass over a layer blob: inflate (gzip) or pass through
//! (tar), parse the tar headers from the output, take a checkpoint at a deflate block end
//! whenever a span's worth of output has passed, and hash each span's compressed bytes.
//!
//! Spacing adapts: a span normally ends after `span_size` uncompressed bytes, but where
//! many small files were seen it ends early, once at least `min_span_size` bytes passed,
//! so a read of one small file fetches less. Each checkpoint costs a 32 KiB window in the
//! index, so early cuts are paid from a budget: the index so far (windows plus an estimate
//! of the file table) must stay within 2.8 % of the compressed bytes read. Spans of large
//! or poorly compressible files use little of it (a 4 MiB span of binaries is ~2 MiB
//! compressed), which is what pays for closer spans where many small files are; an early
//! span also needs 512 KiB of compressed bytes. Where the layer compresses so well that
//! even regular cuts would outgrow the budget (text: a 4 MiB span is under 1 MiB
//! compressed, so its window alone is over 3 %), regular cuts are held back too, up to
//! [`MAX_SPAN_STRETCH`] spans' worth: reads inside the longer spans start at resume points,
//! which cost far less than a checkpoint window. Not where the file table alone takes
//! most of the budget: longer spans could not bring the zTOC within it.

use std::io::Read;
use std::sync::PoisonError;

use miniz_oxide::inflate::TINFLStatus;

use crate::digest::{Digest, Hasher};

use super::blocks::BlockRecorder;
use super::gzip::{self, GzipError, TRAILER_LEN};
use super::inflate::{Inflater, WINDOW};
use super::input::Input;
use super::resume::{Candidate, ResumeRecorder};
use super::tarscan::{TarScanError, TarScanner};
use super::zinfo::{tar_zinfo_bytes, CheckpointWriter};
use super::ztoc::{Compression, Ztoc, MAX_SPANS, ZTOC_VERSION};

/// Default span size: 4 MiB of uncompressed data (soci's default).
pub const DEFAULT_SPAN_SIZE: u64 = 4 << 20;
/// Default lower bound of an adaptive span: 1 MiB.
pub const DEFAULT_MIN_SPAN_SIZE: u64 = 1 << 20;
/// A checkpoint wanted before an offset ([`BuildOptions::cut_before`]) is taken at the
/// first deflate block end at most this many uncompressed bytes before it (blocks end
/// every few tens of KiB, so one falls in this window).
const HINT_SLACK: u64 = 128 << 10;
/// Wanted cuts may use the index budget up to 3 % (the target), not only 2.8 %.
const HINT_BUDGET_PER_MILLE: u64 = 30;
/// Uncompressed bytes a span needs before a wanted cut may end it.
const MIN_HINT_SPAN: u64 = 64 << 10;
/// Files started in a span that make it end early.
const SMALL_FILES_PER_SPAN: usize = 64;
/// Compressed bytes a span needs before an early cut.
const EARLY_CUT_COMPRESSED: u64 = 512 << 10;
/// A span may grow to this many times `span_size` while a cut would put the zTOC over
/// its share of the budget.
const MAX_SPAN_STRETCH: u64 = 16;
/// The index (zTOC, blocks, resume points and their windows) stays within this many per
/// mille of the layer: resume points get what the zTOC and the blocks leave.
const INDEX_TARGET_PER_MILLE: u64 = 30;
/// Index bytes per span besides its window (checkpoint fields, digest), estimated.
const SPAN_COST: u64 = WINDOW as u64 + 64;
/// Index bytes per file-table entry, estimated (names, offsets, owners, times).
const FILE_COST: u64 = 128;
/// gzip headers longer than this (names, comments, extra fields) are refused.
const MAX_GZIP_HEADER: usize = 1 << 20;

/// The zTOC's share of the index budget: five sixths (25 of the default 30 per mille),
/// leaving the rest to the lite zTOC, the blocks and resume points.
fn ztoc_share_per_mille(opts: &BuildOptions) -> u64 {
    opts.index_budget_per_mille * 5 / 6
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Uncompressed bytes between checkpoints (default 4 MiB); a span grows up to 16 times
    /// this where the zTOC would otherwise outgrow its share of the index budget.
    pub span_size: u64,
    /// Uncompressed bytes between checkpoints, at least, when spans end early because
    /// of many small files (default 1 MiB; equal to `span_size` disables adapting).
    pub min_span_size: u64,
    /// Written into the zTOC's `build_tool_identifier`.
    pub build_tool_identifier: String,
    /// Uncompressed offsets a span should start just before (gzip layers; e.g. where the
    /// reads of a recorded run start), each honoured when the index budget allows
    /// (default none).
    pub cut_before: Vec<u64>,
    /// The whole index (zTOC, blocks, resume points and their windows) stays within this
    /// many per mille of the layer: resume points get what the rest leaves (default 30).
    pub index_budget_per_mille: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            span_size: DEFAULT_SPAN_SIZE,
            min_span_size: DEFAULT_MIN_SPAN_SIZE,
            build_tool_identifier: concat!("estargz-snapshotter ", env!("CARGO_PKG_VERSION"))
                .into(),
            cut_before: Vec::new(),
            index_budget_per_mille: INDEX_TARGET_PER_MILLE,
        }
    }
}

/// Errors from building a zTOC.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("read layer blob: {0}")]
    Read(#[from] std::io::Error),
    #[error("gzip framing: {0}")]
    Gzip(#[from] GzipError),
    #[error("deflate data at compressed offset {offset} is corrupt ({status:?})")]
    Inflate { offset: u64, status: TINFLStatus },
    #[error("layer blob ends early at compressed offset {offset}")]
    Truncated { offset: u64 },
    #[error("tar stream: {0}")]
    Tar(#[from] TarScanError),
    #[error("span size {span_size} (minimum {min_span_size}) is invalid")]
    SpanSize { span_size: u64, min_span_size: u64 },
    #[error("layer needs more than {MAX_SPANS} spans")]
    TooManySpans,
}

/// Builds the zTOC of a layer blob read from `reader`.
pub fn build_ztoc(
    reader: impl Read,
    compression: Compression,
    opts: &BuildOptions,
) -> Result<Ztoc, BuildError> {
    build(reader, compression, opts, None, None).map(|(ztoc, _)| ztoc)
}

pub(crate) fn build(
    reader: impl Read,
    compression: Compression,
    opts: &BuildOptions,
    blocks: Option<BlockRecorder>,
    candidates: Option<&mut Vec<Candidate>>,
) -> Result<(Ztoc, Option<BlockRecorder>), BuildError> {
    if opts.span_size == 0 || opts.min_span_size == 0 || opts.min_span_size > opts.span_size {
        return Err(BuildError::SpanSize {
            span_size: opts.span_size,
            min_span_size: opts.min_span_size,
        });
    }
    let mut input = Input::new(reader);
    let mut spans = Spans::new(blocks);
    spans.hints = opts.cut_before.clone();
    spans.hints.sort_unstable();
    spans.hints.dedup();
    let built = match compression {
        Compression::Gzip => {
            // Window analyses run on other threads while the pass goes on.
            let wanted = candidates.is_some() && spans.blocks.is_some();
            let (built, results) = rayon::in_place_scope(|scope| {
                let mut resume = wanted.then(|| ResumeRecorder::new(scope));
                let built = build_gzip(&mut input, opts, &mut spans, resume.as_mut());
                (built, resume.map(|r| r.results()))
            });
            if let (Some(out), Some(results)) = (candidates, results) {
                let mut results = results.lock().unwrap_or_else(PoisonError::into_inner);
                out.append(&mut results);
            }
            built?
        }
        Compression::Uncompressed => build_tar(&mut input, opts, &mut spans)?,
    };
    let ztoc = Ztoc {
        version: ZTOC_VERSION.into(),
        build_tool_identifier: opts.build_tool_identifier.clone(),
        compressed_archive_size: input.offset(),
        uncompressed_archive_size: built.uncompressed_size,
        files: built.tar.finish()?,
        compression,
        max_span_id: u32::try_from(built.digests.len().saturating_sub(1))
            .map_err(|_| BuildError::TooManySpans)?,
        span_digests: built.digests,
        checkpoints: built.checkpoints,
    };
    Ok((ztoc, spans.blocks))
}

struct Built {
    tar: TarScanner,
    uncompressed_size: u64,
    digests: Vec<Digest>,
    checkpoints: Vec<u8>,
}

/// Span bookkeeping shared by both layer kinds.
struct Spans {
    hasher: Hasher,
    digests: Vec<Digest>,
    last_out: u64,
    last_in: u64,
    last_files: usize,
    blocks: Option<BlockRecorder>,
    /// Sorted offsets to cut just before, and the next one not yet passed.
    hints: Vec<u64>,
    next_hint: usize,
}

impl Spans {
    fn new(blocks: Option<BlockRecorder>) -> Self {
        Self {
            hasher: Hasher::new(),
            digests: Vec::new(),
            last_out: 0,
            last_in: 0,
            last_files: 0,
            blocks,
            hints: Vec::new(),
            next_hint: 0,
        }
    }

    /// Whether a span ending here would start just before a wanted offset (and the
    /// index budget allows one more); such offsets are then consumed.
    fn hinted(&mut self, out: u64, input: u64, files: usize) -> bool {
        while self.hints.get(self.next_hint).is_some_and(|&h| h < out) {
            self.next_hint += 1;
        }
        let Some(&hint) = self.hints.get(self.next_hint) else {
            return false;
        };
        if hint - out > HINT_SLACK || out - self.last_out < MIN_HINT_SPAN {
            return false;
        }
        while self
            .hints
            .get(self.next_hint)
            .is_some_and(|&h| h - out <= HINT_SLACK)
        {
            self.next_hint += 1;
        }
        self.within_budget(input, files, HINT_BUDGET_PER_MILLE)
    }

    /// The zTOC after one more cut (the checkpoints of the spans so far, of this one and
    /// of the next) and the files stays within `per_mille` of the compressed bytes read.
    fn within_budget(&self, input: u64, files: usize, per_mille: u64) -> bool {
        let index = (self.digests.len() as u64 + 2)
            .saturating_mul(SPAN_COST)
            .saturating_add((files as u64).saturating_mul(FILE_COST));
        index.saturating_mul(1000) <= input.saturating_mul(per_mille)
    }

    /// Whether the file table takes at most half of `per_mille` of the compressed bytes
    /// read, so windows fill the rest and longer spans can bring the zTOC within it
    /// (where the file table alone fills it, holding cuts back would only cost reads).
    fn windows_fill_budget(&self, input: u64, files: usize, per_mille: u64) -> bool {
        let table = (files as u64).saturating_mul(FILE_COST);
        table.saturating_mul(2000) <= input.saturating_mul(per_mille)
    }

    /// Adds compressed bytes of the current span; `out` is the uncompressed offset
    /// reached once they are consumed.
    fn hash(&mut self, bytes: &[u8], out: u64) {
        self.hasher.update(bytes);
        if let Some(blocks) = &mut self.blocks {
            blocks.feed(bytes, out);
        }
    }

    /// Compressed bytes that may be consumed before a block ends.
    fn room(&self) -> usize {
        self.blocks.as_ref().map_or(usize::MAX, |b| {
            usize::try_from(b.room()).unwrap_or(usize::MAX)
        })
    }

    /// Ends the last span at uncompressed offset `out`.
    fn finish(&mut self, out: u64) {
        let done = std::mem::take(&mut self.hasher);
        self.digests.push(done.finish());
        if let Some(blocks) = &mut self.blocks {
            blocks.cut(out);
        }
    }

    /// Whether a span ending here would be due.
    fn due(&self, opts: &BuildOptions, out: u64, input: u64, files: usize) -> bool {
        let len = out - self.last_out;
        let share = ztoc_share_per_mille(opts);
        if len > opts.span_size {
            return len > opts.span_size.saturating_mul(MAX_SPAN_STRETCH)
                || self.within_budget(input, files, share)
                || !self.windows_fill_budget(input, files, share);
        }
        len >= opts.min_span_size
            && files - self.last_files >= SMALL_FILES_PER_SPAN
            && input - self.last_in >= EARLY_CUT_COMPRESSED
            && self.within_budget(input, files, share)
    }

    fn cut(&mut self, out: u64, input: u64, files: usize) -> Result<(), BuildError> {
        self.finish(out);
        if self.digests.len() >= MAX_SPANS {
            return Err(BuildError::TooManySpans);
        }
        (self.last_out, self.last_in, self.last_files) = (out, input, files);
        Ok(())
    }
}

fn build_gzip<R: Read>(
    input: &mut Input<R>,
    opts: &BuildOptions,
    spans: &mut Spans,
    mut resume: Option<&mut ResumeRecorder<'_, '_>>,
) -> Result<Built, BuildError> {
    let mut tar = TarScanner::new();
    let mut inflater = Inflater::new();
    let mut points = CheckpointWriter::new(opts.span_size);
    let mut window = Vec::with_capacity(WINDOW);
    let mut out_total = 0u64;
    let mut last_byte = 0u8;
    let mut first = true;
    loop {
        // One gzip member: header, deflate data, trailer.
        let header = loop {
            if let Some(n) = gzip::header_len(input.data(), input.offset())? {
                break n;
            }
            if input.data().len() > MAX_GZIP_HEADER {
                return Err(GzipError::Header {
                    offset: input.offset(),
                }
                .into());
            }
            if !input.fill()? {
                return Err(BuildError::Truncated {
                    offset: input.offset(),
                });
            }
        };
        if first {
            input.consume(header);
            // Checkpoint 0: the start of the deflate data, nothing before it.
            points.push(input.offset(), 0, 0, &[0; WINDOW]);
            spans.last_in = input.offset();
            first = false;
        } else {
            spans.hash(&input.data()[..header], out_total);
            input.consume(header);
            inflater.next_member();
        }
        let mut crc = crc32fast::Hasher::new();
        let mut member_out = 0u64;
        loop {
            if input.data().is_empty() && !input.fill()? {
                return Err(BuildError::Truncated {
                    offset: input.offset(),
                });
            }
            // Never past a block end, so each block's uncompressed end is exact.
            let limit = input.data().len().min(spans.room());
            let limited = limit < input.data().len();
            let step = inflater.step(
                &input.data()[..limit],
                !input.eof || limited,
                true,
                usize::MAX,
            );
            let out = &inflater.ring()[step.out.clone()];
            crc.update(out);
            tar.feed(out)?;
            out_total += out.len() as u64;
            member_out += out.len() as u64;
            if step.consumed > 0 {
                let used = &input.data()[..step.consumed];
                last_byte = used[used.len() - 1];
                spans.hash(used, out_total);
                if let Some(resume) = resume.as_deref_mut() {
                    resume.consumed(used, out_total);
                }
                input.consume(step.consumed);
            }
            match step.status {
                TINFLStatus::BlockBoundary => {
                    let (at, files) = (input.offset(), tar.entry_count());
                    let cut =
                        spans.due(opts, out_total, at, files) || spans.hinted(out_total, at, files);
                    if let (false, Some(resume), Some(blocks)) =
                        (cut, resume.as_deref_mut(), &spans.blocks)
                    {
                        let bits = inflater.boundary_bits().unwrap_or(0);
                        // With leftover bits the point starts in the byte before `at`.
                        let (span, block, into) = blocks.position();
                        let block = if bits != 0 && into == 0 {
                            block.checked_sub(1)
                        } else {
                            Some(block)
                        };
                        if let Some(block) = block {
                            resume.offer(span, block, at, out_total, bits, last_byte, |w| {
                                inflater.window_into(w)
                            });
                        }
                    }
                    if cut {
                        let bits = inflater.boundary_bits().unwrap_or(0);
                        spans.cut(out_total, input.offset(), tar.entry_count())?;
                        window.clear();
                        inflater.window_into(&mut window);
                        if let Some(resume) = resume.as_deref_mut() {
                            let at = (input.offset(), out_total);
                            resume.offer_checkpoint(points.count(), at, (bits, last_byte), &window);
                        }
                        points.push(input.offset(), out_total, bits, &window);
                        if bits != 0 {
                            spans.hash(&[last_byte], out_total);
                        }
                    }
                }
                TINFLStatus::HasMoreOutput => {}
                TINFLStatus::NeedsMoreInput if limited && step.consumed == limit => {}
                TINFLStatus::NeedsMoreInput => {
                    if !input.fill()? {
                        return Err(BuildError::Truncated {
                            offset: input.offset(),
                        });
                    }
                }
                TINFLStatus::Done => {
                    if let Some(resume) = resume.as_deref_mut() {
                        resume.stream_end();
                    }
                    break;
                }
                status => {
                    return Err(BuildError::Inflate {
                        offset: input.offset(),
                        status,
                    })
                }
            }
        }
        while input.data().len() < TRAILER_LEN {
            if !input.fill()? {
                return Err(BuildError::Truncated {
                    offset: input.offset(),
                });
            }
        }
        let trailer = &input.data()[..TRAILER_LEN];
        gzip::check_trailer(trailer, crc.finalize(), member_out, input.offset())?;
        spans.hash(trailer, out_total);
        input.consume(TRAILER_LEN);
        if input.data().is_empty() && !input.fill()? {
            break;
        }
    }
    spans.finish(out_total);
    Ok(Built {
        tar,
        uncompressed_size: out_total,
        digests: std::mem::take(&mut spans.digests),
        checkpoints: points.finish(),
    })
}

fn build_tar<R: Read>(
    input: &mut Input<R>,
    opts: &BuildOptions,
    spans: &mut Spans,
) -> Result<Built, BuildError> {
    let mut tar = TarScanner::new();
    let span = opts.span_size;
    while input.fill()? {
        while !input.data().is_empty() {
            let into_span = input.offset() % span;
            let room = usize::try_from(span - into_span).unwrap_or(usize::MAX);
            let n = room.min(input.data().len()).min(spans.room());
            let data = &input.data()[..n];
            tar.feed(data)?;
            spans.hash(data, input.offset() + n as u64);
            input.consume(n);
            if input.offset().is_multiple_of(span) {
                spans.cut(input.offset(), input.offset(), 0)?;
            }
        }
    }
    let size = input.offset();
    // The last span is the partial one, or the last full one when the size is a multiple.
    if !size.is_multiple_of(span) || size == 0 {
        spans.finish(size);
    }
    Ok(Built {
        tar,
        uncompressed_size: size,
        digests: std::mem::take(&mut spans.digests),
        checkpoints: tar_zinfo_bytes(span, size),
    })
}
