//! Span prefixes: serving a SOCI layer whose index carries span blocks
//! ([`estargz::soci::blocks`]). A read at uncompressed `[a, b)` needs, of each span it
//! touches, only the blocks from the span's start through the first block whose recorded
//! end reaches `b` (the spans before the last one of the read: all of their blocks). Each
//! span keeps a decoder resumed at its checkpoint and the bytes it produced, so a later
//! read further into the span fetches and inflates only the blocks it still lacks. Blocks
//! come from the daemon's chunk cache (keyed by block digest) or the registry: the missing
//! blocks of one read that are adjacent in the blob go in one range request, on the shared
//! link in the caller's class. Every block is checked against its digest before it is
//! decoded; a mismatch is an error (EIO), never served. Concurrent reads of a span join:
//! its state is behind an async lock held while its blocks are fetched.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use estargz::soci::{PrefixDecoder, SpanBlocks, SpanError};
use estargz::Digest;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::span_fetch::{SpanBytes, SpanFetchError, SpanSource};
use crate::lazy::cache::{CacheKey, ChunkBytes};
use crate::lazy::link::FetchKind;
use crate::lazy::observe;

/// Spans whose decoded prefix is kept per layer (besides pinned ones).
const CACHED_SPANS: usize = 16;
/// Uncompressed bytes of prefetched prefixes kept for the layer's life.
const MAX_PINNED_BYTES: usize = 256 << 20;

/// Why a span prefix could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error("{0}")]
    Fetch(#[from] SpanFetchError),
    #[error("{0}")]
    Verify(#[from] SpanError),
    #[error("span {span}: all blocks decode to {got} bytes, the read needs {want}")]
    Short { span: usize, got: u64, want: u64 },
    #[error("span prefix task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One span's decoder and what it produced (from the span's start).
struct Prefix {
    decoder: PrefixDecoder,
    out: Vec<u8>,
}

type Slot = Arc<AsyncMutex<Option<Prefix>>>;

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
    state: Mutex<State>,
}

/// Blocks `blocks` of span `span`.
struct Want {
    span: usize,
    blocks: Range<usize>,
}

impl Prefixes {
    pub fn new(blocks: SpanBlocks) -> Self {
        Self {
            blocks,
            state: Mutex::default(),
        }
    }

    /// The uncompressed tar bytes `range` (clamped to the archive).
    pub async fn read(
        &self,
        source: &SpanSource,
        range: Range<u64>,
        kind: FetchKind,
    ) -> Result<Vec<u8>, PrefixError> {
        let zinfo = &source.zinfo;
        let spans = zinfo.spans_for(range.clone());
        let mut guards = self.lock(spans.clone()).await;
        let ends: Vec<u64> = spans
            .clone()
            .map(|s| {
                zinfo
                    .uncompressed_range(s)
                    .map_or(0, |u| u.end.min(range.end))
            })
            .collect();
        self.extend(source, spans.clone(), &mut guards, &ends, kind)
            .await?;
        let mut out = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
        for ((span, guard), end) in spans.clone().zip(&guards).zip(&ends) {
            let start = zinfo.uncompressed_range(span).map_or(0, |u| u.start);
            let from = usize::try_from(range.start.max(start) - start).unwrap_or(usize::MAX);
            let to = usize::try_from(end - start).unwrap_or(usize::MAX);
            let bytes =
                guard
                    .as_ref()
                    .and_then(|p| p.out.get(from..to))
                    .ok_or(PrefixError::Short {
                        span,
                        got: 0,
                        want: end - start,
                    })?;
            out.extend_from_slice(bytes);
        }
        drop(guards);
        self.touch(spans);
        Ok(out)
    }

    /// Fetches the spans `run`, the last one up to uncompressed offset `end` (a
    /// prefetch), and keeps them for the layer's life (up to [`MAX_PINNED_BYTES`]).
    pub async fn pin(
        &self,
        source: &SpanSource,
        run: Range<usize>,
        end: u64,
        kind: FetchKind,
    ) -> Result<(), PrefixError> {
        let zinfo = &source.zinfo;
        let mut guards = self.lock(run.clone()).await;
        let ends: Vec<u64> = run
            .clone()
            .map(|s| zinfo.uncompressed_range(s).map_or(0, |u| u.end.min(end)))
            .collect();
        self.extend(source, run.clone(), &mut guards, &ends, kind)
            .await?;
        let lens: Vec<usize> = guards
            .iter()
            .map(|g| g.as_ref().map_or(0, |p| p.out.len()))
            .collect();
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
        let got = self.gather(source, &wants, kind).await?;
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
    async fn lock(&self, spans: Range<usize>) -> Vec<OwnedMutexGuard<Option<Prefix>>> {
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

    /// Extends each span's prefix until it reaches its `ends` entry.
    async fn extend(
        &self,
        source: &SpanSource,
        spans: Range<usize>,
        guards: &mut [OwnedMutexGuard<Option<Prefix>>],
        ends: &[u64],
        kind: FetchKind,
    ) -> Result<(), PrefixError> {
        let zinfo = &source.zinfo;
        loop {
            let mut wants = Vec::new();
            for ((span, guard), &end) in spans.clone().zip(guards.iter_mut()).zip(ends) {
                if guard.is_none() {
                    **guard = Some(Prefix {
                        decoder: PrefixDecoder::new(zinfo, span)?,
                        out: Vec::new(),
                    });
                }
                let prefix = guard.as_ref().ok_or(SpanError::NoSuchSpan { span })?;
                let start = zinfo.uncompressed_range(span).map_or(0, |u| u.start);
                let have = start.saturating_add(prefix.out.len() as u64);
                if have >= end {
                    continue;
                }
                let (fed, count) = (prefix.decoder.blocks(), self.blocks.count(span));
                if fed >= count {
                    return Err(PrefixError::Short {
                        span,
                        got: have - start,
                        want: end - start,
                    });
                }
                // The recorded ends say how far to go; one block at least, in case a
                // decoder stops short of them.
                let upto = self.blocks.needed(span, end).max(fed + 1).min(count);
                wants.push(Want {
                    span,
                    blocks: fed..upto,
                });
            }
            if wants.is_empty() {
                return Ok(());
            }
            let got = self.gather(source, &wants, kind).await?;
            for (want, blocks) in wants.iter().zip(got) {
                let i = want.span - spans.start;
                let mut prefix = guards[i]
                    .take()
                    .ok_or(SpanError::NoSuchSpan { span: want.span })?;
                let fed = tokio::task::spawn_blocking(move || {
                    for (block, _) in &blocks {
                        prefix.decoder.feed(block, &mut prefix.out)?;
                    }
                    Ok::<_, SpanError>(prefix)
                })
                .await?;
                match fed {
                    Ok(prefix) => *guards[i] = Some(prefix),
                    Err(error) => {
                        // The slot starts over: a decoder that failed is not resumed.
                        tracing::error!(layer = %source.location.digest, %error, "soci block failed to decode");
                        return Err(error.into());
                    }
                }
            }
        }
    }

    /// The blocks `wants` asks for, in order, each with whether it was fetched: from the
    /// cache, else fetched (blocks adjacent in the blob in one request); all checked
    /// against their digests, fetched ones then cached.
    async fn gather(
        &self,
        source: &SpanSource,
        wants: &[Want],
        kind: FetchKind,
    ) -> Result<Vec<Vec<(ChunkBytes, bool)>>, PrefixError> {
        let zinfo = &source.zinfo;
        let mut list = Vec::new();
        for want in wants {
            for block in want.blocks.clone() {
                let (Some(range), Some(info)) = (
                    self.blocks.compressed_range(zinfo, want.span, block),
                    self.blocks.block(want.span, block),
                ) else {
                    return Err(SpanError::NoSuchSpan { span: want.span }.into());
                };
                list.push((want.span, block, range, info.digest));
            }
        }
        let cache = source.cache.clone();
        let keys: Vec<(CacheKey, u64)> = list
            .iter()
            .map(|(_, _, r, digest)| (CacheKey::Content(*digest), r.end - r.start))
            .collect();
        let cached: Vec<Option<ChunkBytes>> = tokio::task::spawn_blocking(move || {
            keys.iter()
                .map(|(key, len)| cache.peek(key, *len))
                .collect()
        })
        .await?;
        let mut got: Vec<Option<(ChunkBytes, bool)>> =
            cached.into_iter().map(|c| c.map(|b| (b, false))).collect();
        let mut i = 0;
        while i < got.len() {
            if got[i].is_some() {
                i += 1;
                continue;
            }
            // A run of missing blocks adjacent in the blob (a span's first block may
            // share a byte with the previous span's last).
            let mut j = i + 1;
            while j < got.len() && got[j].is_none() && list[j].2.start <= list[j - 1].2.end {
                j += 1;
            }
            let ranges: Vec<Range<u64>> = list[i..j].iter().map(|b| b.2.clone()).collect();
            let pieces = source.fetch_pieces(&ranges, kind).await?;
            for (slot, piece) in got[i..j].iter_mut().zip(pieces) {
                *slot = Some((piece, true));
            }
            i = j;
        }
        let got: Vec<(ChunkBytes, bool)> = got.into_iter().flatten().collect();
        // Checked here, cached only once checked.
        let (checking, cache, layer) = (got.clone(), source.cache.clone(), source.location.digest);
        let checked = tokio::task::spawn_blocking(move || {
            for ((span, block, _, want), (bytes, fetched)) in list.into_iter().zip(checking) {
                let got = Digest::sha256(&bytes);
                if got != want {
                    let error = SpanError::BlockDigest {
                        span,
                        block,
                        got,
                        want,
                    };
                    tracing::error!(%layer, %error, "soci block failed verification");
                    observe::observer().verification_failed(observe::SOCI_BLOCK);
                    return Err(error);
                }
                if fetched {
                    cache.put_disk(CacheKey::Content(want), bytes);
                }
            }
            Ok(())
        })
        .await?;
        checked?;
        let mut out = Vec::with_capacity(wants.len());
        let mut it = got.into_iter();
        for want in wants {
            out.push(it.by_ref().take(want.blocks.len()).collect());
        }
        Ok(out)
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
