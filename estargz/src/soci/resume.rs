//! Resume points inside spans, ours (kept in the blocks blob, [`super::blocks`]; their
//! windows in a windows blob beside it). A span can only be inflated from its checkpoint,
//! so a read deep into a span fetched all the span's blocks before it. A resume point is a
//! deflate block end inside a span, in a verification block past the span's first, with a
//! [`super::sparse_window`]: a read after it fetches that (usually small) window and the
//! blocks from the point's block on.
//!
//! The indexing pass offers the first block end of every verification block; the window
//! analysis runs on other threads while the pass goes on. What is kept is paid from the
//! index budget left after the zTOC and the blocks ([`select`]): every point whose window
//! is empty or small, evenly thinned where windows are large (compressible data).

use std::sync::{Arc, Mutex, PoisonError};

use crate::digest::Digest;

use super::inflate::WINDOW;
use super::sparse_window;

/// Media type of a windows blob.
pub const WINDOWS_MEDIA_TYPE: &str = "application/vnd.estargz.soci.windows.v1";
/// Bytes of one point in the blocks blob.
pub const POINT_BYTES: u64 = 4 + 4 + 8 + 8 + 1 + 8 + 4 + 32;

/// Where a point's sparse window is in the windows blob (`len` 0: none needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRef {
    pub offset: u64,
    pub len: u32,
    pub digest: Digest,
}

/// A deflate block end inside a span from which decoding can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    pub span: u32,
    /// The verification block holding the point's first byte (with `bits`, the byte
    /// before `compressed`).
    pub block: u32,
    /// First whole compressed byte after the point.
    pub compressed: u64,
    pub uncompressed: u64,
    /// Bits (0..=7) of the byte before `compressed` that belong to the next deflate block.
    pub bits: u8,
    pub window: WindowRef,
}

impl ResumePoint {
    /// A point whose window has no place in a windows blob yet.
    fn unplaced(span: u32, block: u32, (compressed, uncompressed): (u64, u64), bits: u8) -> Self {
        let window = WindowRef {
            offset: 0,
            len: 0,
            digest: Digest::sha256(&[]),
        };
        ResumePoint {
            span,
            block,
            compressed,
            uncompressed,
            bits,
            window,
        }
    }

    /// The first compressed byte decoding from here needs (a point with leftover bits at
    /// byte 0 has no byte before it: such points are refused when the blocks are read).
    pub fn fetch_start(&self) -> u64 {
        self.compressed.saturating_sub(u64::from(self.bits != 0))
    }
}

/// A point offered during the pass, waiting for the compressed bytes after it.
struct Pending {
    point: ResumePoint,
    /// Set for a zTOC checkpoint (its index), whose sparse window goes to the lite zTOC.
    checkpoint: Option<usize>,
    byte: u8,
    window: Vec<u8>,
    input: Vec<u8>,
}

impl Pending {
    fn new(point: ResumePoint, checkpoint: Option<usize>, byte: u8, window: Vec<u8>) -> Self {
        Pending {
            point,
            checkpoint,
            byte,
            window,
            input: Vec::new(),
        }
    }
}

/// A point with its encoded sparse window.
pub(crate) struct Candidate {
    point: ResumePoint,
    checkpoint: Option<usize>,
    entry: Vec<u8>,
}

/// Collects points during the indexing pass; analyses run on `scope`'s threads.
pub(crate) struct ResumeRecorder<'a, 's> {
    scope: &'a rayon::Scope<'s>,
    pending: Vec<Pending>,
    done: Arc<Mutex<Vec<Candidate>>>,
    last: Option<(u32, u32)>,
}

impl<'a, 's> ResumeRecorder<'a, 's> {
    pub fn new(scope: &'a rayon::Scope<'s>) -> Self {
        Self {
            scope,
            pending: Vec::new(),
            done: Arc::default(),
            last: None,
        }
    }

    /// A deflate block end at `compressed` (bits leftover in `byte`), in verification
    /// block `block` of span `span`; the first one of a block past the span's first is
    /// kept. `window` gives the 32 KiB of output before it.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        span: usize,
        block: usize,
        compressed: u64,
        uncompressed: u64,
        bits: u8,
        byte: u8,
        window: impl FnOnce(&mut Vec<u8>),
    ) {
        let (Ok(span), Ok(block)) = (u32::try_from(span), u32::try_from(block)) else {
            return;
        };
        if block == 0 || self.last == Some((span, block)) {
            return;
        }
        self.last = Some((span, block));
        let mut saved = Vec::with_capacity(WINDOW);
        window(&mut saved);
        let point = ResumePoint::unplaced(span, block, (compressed, uncompressed), bits);
        self.pending.push(Pending::new(point, None, byte, saved));
    }

    /// zTOC checkpoint `index` at `compressed` (bits leftover in `byte`), with its
    /// `window`: its sparse window is found like a point's.
    pub fn offer_checkpoint(
        &mut self,
        index: usize,
        (compressed, uncompressed): (u64, u64),
        (bits, byte): (u8, u8),
        window: &[u8],
    ) {
        let span = u32::try_from(index).unwrap_or(u32::MAX);
        let point = ResumePoint::unplaced(span, 0, (compressed, uncompressed), bits);
        self.pending
            .push(Pending::new(point, Some(index), byte, window.to_vec()));
    }

    /// Compressed bytes consumed after the points offered so far; `out` is the
    /// uncompressed offset reached. Points with 32 KiB of output after them are analysed.
    pub fn consumed(&mut self, bytes: &[u8], out: u64) {
        for p in &mut self.pending {
            p.input.extend_from_slice(bytes);
        }
        let ready = self
            .pending
            .iter()
            .take_while(|p| out >= p.point.uncompressed + WINDOW as u64)
            .count();
        let ready: Vec<Pending> = self.pending.drain(..ready).collect();
        for p in ready {
            self.analyse(p);
        }
    }

    /// The deflate stream ended: everything after the pending points is known.
    pub fn stream_end(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            self.analyse(p);
        }
    }

    fn analyse(&self, p: Pending) {
        let done = self.done.clone();
        self.scope.spawn(move |_| {
            let used = sparse_window::referenced(p.point.bits, p.byte, &p.input)
                .unwrap_or_else(|| vec![true; WINDOW]);
            let entry = sparse_window::encode(&p.window, &used);
            let candidate = Candidate {
                point: p.point,
                checkpoint: p.checkpoint,
                entry,
            };
            done.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(candidate);
        });
    }

    /// What the analyses gave, once the scope has ended (callers pass it out of it).
    pub fn results(&self) -> Arc<Mutex<Vec<Candidate>>> {
        self.done.clone()
    }
}

/// Splits the analyses into resume points and the checkpoints' sparse windows (32 KiB
/// each, by checkpoint index).
pub(crate) fn split(all: Vec<Candidate>) -> (Vec<Candidate>, Vec<(usize, Vec<u8>)>) {
    let (checkpoints, points): (Vec<Candidate>, Vec<Candidate>) =
        all.into_iter().partition(|c| c.checkpoint.is_some());
    let windows = checkpoints
        .into_iter()
        .filter_map(|c| Some((c.checkpoint?, sparse_window::decode(&c.entry).ok()?)))
        .collect();
    (points, windows)
}

/// Keeps the points that fit in `budget` bytes (their table entries plus windows),
/// evenly spread, and lays out the windows blob. Returns the points in order and the blob.
pub(crate) fn select(mut all: Vec<Candidate>, budget: u64) -> (Vec<ResumePoint>, Vec<u8>) {
    all.sort_by_key(|c| c.point.uncompressed);
    let cost = |c: &Candidate| POINT_BYTES + c.entry.len() as u64;
    let total: u64 = all.iter().map(cost).sum();
    // Keep every `stride`-th point (the smallest stride that fits).
    let mut stride = total.div_ceil(budget.max(1)).max(1) as usize;
    let kept = loop {
        let kept: Vec<&Candidate> = all.iter().step_by(stride).collect();
        let spent: u64 = kept.iter().map(|c| cost(c)).sum();
        if spent <= budget || kept.len() <= 1 {
            break if spent <= budget { kept } else { Vec::new() };
        }
        stride += 1;
    };
    let mut blob = Vec::new();
    let mut points = Vec::with_capacity(kept.len());
    for c in kept {
        let mut point = c.point;
        point.window = WindowRef {
            offset: blob.len() as u64,
            len: u32::try_from(c.entry.len()).unwrap_or(0),
            digest: Digest::sha256(&c.entry),
        };
        blob.extend_from_slice(&c.entry);
        points.push(point);
    }
    (points, blob)
}
