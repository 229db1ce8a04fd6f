//! Span prefixes: serving a SOCI layer whose index carries span blocks
//! ([`estargz::soci::blocks`]). A read at uncompressed `[a, b)` needs, of each span it
//! touches, the blocks from a starting point through the first block whose recorded end
//! reaches `b`. The starting point is whichever costs the fewest bytes: a decoder the span
//! already has (it goes on where it stopped), the span's checkpoint, or the last resume
//! point before `a` ([`estargz::soci::resume`]; its sparse window comes with the blocks,
//! [`super::window_fetch`]). Each span keeps its decoders and the bytes they produced, so
//! a later read further on fetches and inflates only the blocks it still lacks. Blocks
//! come from the daemon's chunk cache (keyed by block digest) or the registry: the missing
//! blocks of one read that are adjacent in the blob go in one range request, on the shared
//! link in the caller's class. Every block is checked against its digest before it is
//! decoded; a mismatch is an error (EIO), never served. Concurrent reads of a span join:
//! its state is behind an async lock held while its blocks are fetched.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use estargz::soci::{PrefixDecoder, ResumePoint, SpanBlocks, SpanError};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::block_fetch::{gather, gather_unchecked, Want};
use super::feeding::{Feeders, Segment, SpanState};
use super::prefix_error::PrefixError;
use super::span_fetch::{wanted, wanted_all, SpanBytes, SpanSource};
use super::window_fetch::{self, WindowsBlob};
use crate::lazy::cache::ChunkBytes;
use crate::lazy::link::FetchKind;

/// Spans whose decoded prefix is kept per layer (besides pinned ones).
const CACHED_SPANS: usize = 16;
/// Uncompressed bytes of prefetched prefixes kept for the layer's life.
const MAX_PINNED_BYTES: usize = 256 << 20;

type Slot = Arc<AsyncMutex<SpanState>>;
type Guard = OwnedMutexGuard<SpanState>;

/// Where a span's bytes for a read come from.
#[derive(PartialEq)]
enum Start {
    /// The segment at this index goes on.
    Segment(usize),
    /// A new decoder at the span's checkpoint.
    Checkpoint,
    /// A new decoder at a resume point.
    Point(ResumePoint),
}

#[derive(Default)]
struct State {
    slots: HashMap<usize, Slot>,
    order: VecDeque<usize>,
    pinned: HashSet<usize>,
    pinned_bytes: usize,
}

/// The span blocks of a layer and the prefixes read so far.
pub struct Prefixes {
    blocks: SpanBlocks,
    /// The windows blob of the resume points, when the index has one.
    windows: Option<WindowsBlob>,
    state: Mutex<State>,
}

impl Prefixes {
    pub fn new(blocks: SpanBlocks, windows: Option<WindowsBlob>) -> Self {
        Self {
            blocks,
            windows,
            state: Mutex::default(),
        }
    }

    /// The span blocks and resume points.
    pub fn blocks(&self) -> &SpanBlocks {
        &self.blocks
    }

    /// The windows blob of the resume points, when the index has one.
    pub fn windows(&self) -> Option<&WindowsBlob> {
        self.windows.as_ref()
    }

    /// Where the decoded bytes of a fetch reaching uncompressed `end` end: the recorded
    /// end of the block that gives `end` (whole blocks are fetched and inflated).
    pub fn block_end(&self, zinfo: &estargz::soci::Zinfo, end: u64) -> u64 {
        let Some(span) = end.checked_sub(1).and_then(|last| zinfo.span_of(last)) else {
            return end;
        };
        let needed = self.blocks.needed(span, end);
        needed
            .checked_sub(1)
            .and_then(|b| self.blocks.block(span, b))
            .map_or(end, |b| b.uncompressed_end.max(end))
    }

    /// Whether the uncompressed `range` is decoded already (a read of it needs no
    /// fetch); a span busy with another read counts as not.
    pub fn holds(&self, zinfo: &estargz::soci::Zinfo, range: Range<u64>) -> bool {
        let spans = zinfo.spans_for(range.clone());
        let wanted = wanted(zinfo, spans.clone(), &range);
        let state = self.lock_state();
        spans.zip(wanted).all(|(span, want)| {
            state
                .slots
                .get(&span)
                .and_then(|slot| slot.try_lock().ok())
                .is_some_and(|s| s.covering(want.start, want.end).is_some())
        })
    }

    /// The uncompressed tar bytes `range` (clamped to the archive); what is missing is
    /// fetched through `fetch_end` (a readahead window past the read, when further).
    pub async fn read(
        &self,
        source: &SpanSource,
        range: Range<u64>,
        fetch_end: u64,
        kind: FetchKind,
    ) -> Result<Vec<u8>, PrefixError> {
        let zinfo = &source.zinfo;
        let fetch = range.start..fetch_end.max(range.end);
        let locked = zinfo.spans_for(fetch.clone());
        let mut guards = self.lock(locked.clone()).await;
        let spans = zinfo.spans_for(range.clone());
        let wanted = wanted(zinfo, spans.clone(), &range);
        // A read that found its spans busy (another read or the prefetch held them) was
        // taken for a miss; when its bytes are here once it holds them, it is a hit and
        // does not wait for a readahead past it.
        let here = (spans.clone().zip(&wanted)).all(|(span, want)| {
            guards[span - locked.start]
                .covering(want.start, want.end)
                .is_some()
        });
        if !here {
            let to_fetch = wanted_all(zinfo, locked.clone(), std::slice::from_ref(&fetch));
            self.extend(source, locked.clone(), &mut guards, &to_fetch, kind)
                .await?;
        }
        let mut out = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
        for ((span, guard), want) in spans.clone().zip(&guards).zip(&wanted) {
            let short = || PrefixError::Short {
                span,
                got: 0,
                want: want.end - want.start,
            };
            let segment = guard.covering(want.start, want.end).ok_or_else(short)?;
            let from = usize::try_from(want.start - segment.start).unwrap_or(usize::MAX);
            let to = usize::try_from(want.end - segment.start).unwrap_or(usize::MAX);
            out.extend_from_slice(segment.out.get(from..to).ok_or_else(short)?);
        }
        drop(guards);
        self.touch(locked);
        Ok(out)
    }

    /// Fetches the uncompressed bytes `ranges` (a prefetch; all in one go, so ranges in
    /// one span do not wait for each other) and keeps what their spans decoded for the
    /// layer's life (up to [`MAX_PINNED_BYTES`]).
    pub async fn pin(
        &self,
        source: &SpanSource,
        ranges: &[Range<u64>],
        kind: FetchKind,
    ) -> Result<(), PrefixError> {
        let start = ranges.iter().map(|r| r.start).min().unwrap_or(0);
        let end = ranges.iter().map(|r| r.end).max().unwrap_or(0);
        let run = source.zinfo.spans_for(start..end);
        let mut guards = self.lock(run.clone()).await;
        let wanted = wanted_all(&source.zinfo, run.clone(), ranges);
        self.extend(source, run.clone(), &mut guards, &wanted, kind)
            .await?;
        let lens: Vec<usize> = guards.iter().map(|g| g.bytes()).collect();
        drop(guards);
        let mut state = self.lock_state();
        for (span, len) in run.clone().zip(lens) {
            let total = state.pinned_bytes.saturating_add(len);
            if total <= MAX_PINNED_BYTES && state.pinned.insert(span) {
                state.pinned_bytes = total;
                state.order.retain(|&s| s != span);
            }
        }
        drop(state);
        self.touch(run);
        Ok(())
    }

    /// Keeps `segment` (decoded elsewhere, e.g. from a learned range) as a decoder of
    /// `span` holding `needed`, for the layer's life like a prefetch (up to
    /// [`MAX_PINNED_BYTES`]); dropped when the span holds `needed` already.
    pub async fn install(&self, span: usize, segment: Segment, needed: Range<u64>) {
        let mut guards = self.lock(span..span + 1).await;
        let Some(guard) = guards.first_mut() else {
            return;
        };
        if guard.covering(needed.start, needed.end).is_none() {
            guard.segments.push(segment);
        }
        let len = guard.bytes();
        drop(guards);
        let mut state = self.lock_state();
        let total = state.pinned_bytes.saturating_add(len);
        if total <= MAX_PINNED_BYTES && state.pinned.insert(span) {
            state.pinned_bytes = total;
            state.order.retain(|&s| s != span);
        }
        drop(state);
        self.touch(span..span + 1);
    }

    /// The compressed bytes of the whole spans `run` assembled from their blocks (cached
    /// or fetched in class `kind`, each checked; fetched ones go to the cache), for the
    /// whole-layer check. Waits for reads fetching blocks of those spans first (their
    /// blocks are then in the cache), but holds no lock while fetching: a read never
    /// waits behind the check's background requests.
    pub async fn whole_spans(
        &self,
        source: &SpanSource,
        run: Range<usize>,
        kind: FetchKind,
    ) -> Result<Vec<SpanBytes>, PrefixError> {
        drop(self.lock(run.clone()).await);
        let wants: Vec<Want> = run
            .clone()
            .map(|span| Want {
                span,
                blocks: 0..self.blocks.count(span),
            })
            .collect();
        let got = gather(&self.blocks, source, &wants, kind).await?;
        Ok(got
            .into_iter()
            .map(|blocks| {
                let fetched = blocks.iter().any(|(_, fetched)| *fetched);
                let mut bytes = Vec::new();
                for (block, _) in blocks {
                    bytes.extend_from_slice(&block);
                }
                SpanBytes {
                    bytes: ChunkBytes::from(bytes),
                    fetched,
                }
            })
            .collect())
    }

    /// Locks the slots of `spans`, in ascending order (so concurrent callers never
    /// deadlock).
    async fn lock(&self, spans: Range<usize>) -> Vec<Guard> {
        let slots: Vec<Slot> = {
            let mut state = self.lock_state();
            spans
                .map(|s| state.slots.entry(s).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(slots.len());
        for slot in slots {
            guards.push(slot.lock_owned().await);
        }
        guards
    }

    /// Compressed bytes of blocks `blocks` of `span`.
    fn cost(&self, zinfo: &estargz::soci::Zinfo, span: usize, blocks: &Range<usize>) -> u64 {
        let first = self.blocks.compressed_range(zinfo, span, blocks.start);
        let last = self
            .blocks
            .compressed_range(zinfo, span, blocks.end.saturating_sub(1));
        match (first, last) {
            (Some(a), Some(b)) if !blocks.is_empty() => b.end.saturating_sub(a.start),
            _ => 0,
        }
    }

    /// How span `span` gets `want` cheapest: `None` when it has it already, else where to
    /// start and the blocks to fetch.
    fn plan(
        &self,
        zinfo: &estargz::soci::Zinfo,
        span: usize,
        state: &SpanState,
        want: &Range<u64>,
    ) -> Result<Option<(Start, Range<usize>)>, PrefixError> {
        if want.is_empty() || state.covering(want.start, want.end).is_some() {
            return Ok(None);
        }
        let count = self.blocks.count(span);
        // The recorded ends say how far to go; one block at least past where a decoder
        // is, in case it stops short of them.
        let upto = |next: usize| self.blocks.needed(span, want.end).max(next + 1).min(count);
        let span_start = zinfo.uncompressed_range(span).map_or(0, |u| u.start);
        let mut best: Option<(Start, Range<usize>, u64)> = None;
        let mut consider = |start: Start, blocks: Range<usize>, extra: u64| {
            let cost = self.cost(zinfo, span, &blocks).saturating_add(extra);
            if !blocks.is_empty() && best.as_ref().is_none_or(|b| cost < b.2) {
                best = Some((start, blocks, cost));
            }
        };
        for (i, segment) in state.segments.iter().enumerate() {
            let next = segment.decoder.next_block();
            if segment.start <= want.start && next < count {
                consider(Start::Segment(i), next..upto(next), 0);
            }
        }
        if !state.segments.iter().any(|s| s.start == span_start) {
            consider(Start::Checkpoint, 0..upto(0), 0);
        }
        // A point with a decoder already is that decoder (a second one would only redo
        // it, and forever if the index makes it stop short).
        let usable = |p: &&ResumePoint| {
            (p.window.len == 0 || self.windows.is_some())
                && !state.segments.iter().any(|s| s.start == p.uncompressed)
        };
        if let Some(point) = self
            .blocks
            .points_of(span)
            .iter()
            .filter(usable)
            .take_while(|p| p.uncompressed <= want.start)
            .last()
        {
            let first = point.block as usize;
            consider(
                Start::Point(*point),
                first..upto(first),
                u64::from(point.window.len),
            );
        }
        match best {
            Some((start, blocks, _)) => Ok(Some((start, blocks))),
            None => Err(PrefixError::Short {
                span,
                got: 0,
                want: want.end - want.start,
            }),
        }
    }

    /// Extends or starts decoders until each span has its `wanted` ranges.
    async fn extend(
        &self,
        source: &SpanSource,
        spans: Range<usize>,
        guards: &mut [Guard],
        wanted: &[Vec<Range<u64>>],
        kind: FetchKind,
    ) -> Result<(), PrefixError> {
        let zinfo = &source.zinfo;
        loop {
            let mut plans: Vec<(Start, Want)> = Vec::new();
            for ((span, guard), wants) in spans.clone().zip(guards.iter()).zip(wanted) {
                let first = plans.len();
                for want in wants {
                    let Some((start, blocks)) = self.plan(zinfo, span, guard, want)? else {
                        continue;
                    };
                    // Two ranges going on from the same start: one decoder, to the farther.
                    match plans[first..].iter_mut().find(|(s, _)| *s == start) {
                        Some((_, w)) => w.blocks.end = w.blocks.end.max(blocks.end),
                        None => plans.push((start, Want { span, blocks })),
                    }
                }
            }
            if plans.is_empty() {
                return Ok(());
            }
            for (start, w) in &plans {
                let from = match start {
                    Start::Segment(i) => format!("decoder {i}"),
                    Start::Checkpoint => "checkpoint".to_owned(),
                    Start::Point(p) => format!("point at {}", p.uncompressed),
                };
                let wants = wanted.get(w.span - spans.start);
                tracing::debug!(span = w.span, blocks = ?w.blocks, %from, ?wants, ?kind, "soci span plan");
            }
            let windows = self.windows.as_ref();
            // The segments that go on, taken out highest index first so the others keep
            // their places.
            let mut going_on: Vec<(usize, usize)> = plans
                .iter()
                .filter_map(|(start, w)| match start {
                    Start::Segment(i) => Some((w.span, *i)),
                    _ => None,
                })
                .collect();
            going_on.sort_unstable_by(|a, b| b.cmp(a));
            let mut taken = HashMap::new();
            for (span, i) in going_on {
                let segment = guards[span - spans.start].segments.remove(i);
                taken.insert((span, i), segment);
            }
            let layer = source.location.digest;
            let feeders = Feeders::new(plans.iter().map(|(_, w)| w.span), &source.cache, layer);
            let mut points = Vec::new();
            for (i, (start, want)) in plans.iter().enumerate() {
                let segment = match start {
                    Start::Segment(j) => Some(
                        (taken.remove(&(want.span, *j)))
                            .ok_or(SpanError::NoSuchSpan { span: want.span })?,
                    ),
                    Start::Checkpoint => Some(Segment {
                        start: zinfo.uncompressed_range(want.span).map_or(0, |u| u.start),
                        decoder: PrefixDecoder::new(zinfo, want.span)?,
                        out: Vec::new(),
                    }),
                    Start::Point(p) => {
                        points.push((i, *p));
                        None
                    }
                };
                if let Some(segment) = segment {
                    feeders.start(i, segment);
                }
            }
            // A decoder at a resume point is handed over once its window is in; its
            // blocks queue until then.
            let windowing = futures::future::try_join_all(points.iter().map(|(i, p)| {
                let feeders = &feeders;
                async move {
                    let window = window_fetch::window(source, windows, p, kind).await?;
                    let decoder = PrefixDecoder::at_point(zinfo, &self.blocks, p, window)?;
                    let out = Vec::new();
                    let start = p.uncompressed;
                    feeders.start(
                        *i,
                        Segment {
                            start,
                            decoder,
                            out,
                        },
                    );
                    Ok::<_, PrefixError>(())
                }
            }));
            let wants: Vec<Want> = plans
                .iter()
                .map(|(_, w)| Want {
                    span: w.span,
                    blocks: w.blocks.clone(),
                })
                .collect();
            let gathering = gather_unchecked(&self.blocks, source, &wants, kind, |i, block| {
                feeders.block(i, block)
            });
            let (gathered, windowed) = futures::future::join(gathering, windowing).await;
            // What the decoders got is kept even when a fetch failed part way: each got a
            // prefix of its blocks. One that failed to decode is dropped, not resumed.
            let mut failed = None;
            for (span, fed) in feeders.finish().await? {
                match fed {
                    Ok(Some(segment)) => guards[span - spans.start].segments.push(segment),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%layer, %error, "soci block failed to decode");
                        failed.get_or_insert(error);
                    }
                }
            }
            gathered?;
            windowed?;
            if let Some(error) = failed {
                return Err(error.into());
            }
        }
    }

    /// Marks `spans` used; forgets the least recently used unpinned prefixes past
    /// [`CACHED_SPANS`] (their blocks stay in the chunk cache).
    fn touch(&self, spans: Range<usize>) {
        let mut state = self.lock_state();
        for span in spans {
            if state.pinned.contains(&span) {
                continue;
            }
            state.order.retain(|&s| s != span);
            state.order.push_back(span);
        }
        while state.order.len() > CACHED_SPANS {
            if let Some(old) = state.order.pop_front() {
                state.slots.remove(&old);
            }
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
