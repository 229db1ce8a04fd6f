//! Span blocks for the reads of a layer: from the chunk cache (keyed by block digest),
//! else the registry, the missing blocks adjacent in the blob in one range request on the
//! shared link in the caller's class. Blocks are handed out in order as they arrive, each
//! as an [`UncheckedBlock`] whose bytes can only be had once they match its digest; a
//! fetched one is cached only once checked.

use std::ops::Range;

use futures::{StreamExt, TryStreamExt};

use estargz::soci::{SpanBlocks, SpanError};
use estargz::Digest;

use super::prefix_error::PrefixError;
use super::span_fetch::{missing_runs, SpanSource};
use crate::lazy::cache::{CacheKey, ChunkBytes, ChunkCache};
use crate::lazy::link::FetchKind;
use crate::lazy::observe;

/// Range requests one gather keeps in flight (a prefetch of many ranges gathers many
/// runs; a read, one or two).
const MAX_RUNS_AT_ONCE: usize = 8;

/// Blocks `blocks` of span `span`.
pub(super) struct Want {
    pub span: usize,
    pub blocks: Range<usize>,
}

/// A block as it came, from the cache or the registry, not yet checked.
pub(super) struct UncheckedBlock {
    span: usize,
    block: usize,
    digest: Digest,
    bytes: ChunkBytes,
    fetched: bool,
}

impl UncheckedBlock {
    /// Whether the bytes came over the network (rather than from the cache).
    pub fn fetched(&self) -> bool {
        self.fetched
    }

    /// The block's bytes once they match its digest (blocking: hashes them); a fetched
    /// block is then cached. A mismatch is logged and counted.
    pub fn check(self, cache: &ChunkCache, layer: &Digest) -> Result<ChunkBytes, SpanError> {
        let got = Digest::sha256(&self.bytes);
        if got != self.digest {
            let error = SpanError::BlockDigest {
                span: self.span,
                block: self.block,
                got,
                want: self.digest,
            };
            tracing::error!(%layer, %error, "soci block failed verification");
            observe::observer().verification_failed(observe::SOCI_BLOCK);
            return Err(error);
        }
        if self.fetched {
            cache.put_disk(CacheKey::Content(self.digest), self.bytes.clone());
        }
        Ok(self.bytes)
    }
}

/// The blocks `wants` asks for, each checked, in order, with whether it was fetched.
pub(super) async fn gather(
    blocks: &SpanBlocks,
    source: &SpanSource,
    wants: &[Want],
    kind: FetchKind,
) -> Result<Vec<Vec<(ChunkBytes, bool)>>, PrefixError> {
    let mut unchecked: Vec<Vec<UncheckedBlock>> = wants.iter().map(|_| Vec::new()).collect();
    gather_unchecked(blocks, source, wants, kind, |want, block| {
        unchecked[want].push(block);
    })
    .await?;
    let (cache, layer) = (source.cache.clone(), source.location.digest);
    let checked = tokio::task::spawn_blocking(move || {
        unchecked
            .into_iter()
            .map(|blocks| {
                blocks
                    .into_iter()
                    .map(|b| {
                        let fetched = b.fetched();
                        b.check(&cache, &layer).map(|bytes| (bytes, fetched))
                    })
                    .collect::<Result<Vec<_>, SpanError>>()
            })
            .collect::<Result<Vec<_>, SpanError>>()
    })
    .await?;
    Ok(checked?)
}

/// The blocks `wants` asks for, handed to `deliver(want index, block)` in order as they
/// come: cached ones at once, fetched ones as each arrives (runs of missing blocks
/// adjacent in the blob in one request, several at once). On an error nothing after the
/// failed block is handed out, so every want gets a prefix of its blocks.
pub(super) async fn gather_unchecked(
    blocks: &SpanBlocks,
    source: &SpanSource,
    wants: &[Want],
    kind: FetchKind,
    mut deliver: impl FnMut(usize, UncheckedBlock),
) -> Result<(), PrefixError> {
    let zinfo = &source.zinfo;
    // (want index, span, block, compressed range, digest), in the order handed out.
    let mut list = Vec::new();
    for (w, want) in wants.iter().enumerate() {
        for block in want.blocks.clone() {
            let (Some(range), Some(info)) = (
                blocks.compressed_range(zinfo, want.span, block),
                blocks.block(want.span, block),
            ) else {
                return Err(SpanError::NoSuchSpan { span: want.span }.into());
            };
            list.push((w, want.span, block, range, info.digest));
        }
    }
    let cache = source.cache.clone();
    let keys: Vec<(CacheKey, u64)> = list
        .iter()
        .map(|(_, _, _, r, digest)| (CacheKey::Content(*digest), r.end - r.start))
        .collect();
    let mut cached: Vec<Option<ChunkBytes>> = tokio::task::spawn_blocking(move || {
        keys.iter()
            .map(|(key, len)| cache.peek(key, *len))
            .collect()
    })
    .await?;
    let mut hand = |j: usize, bytes: ChunkBytes, fetched: bool| {
        let (w, span, block, _, digest) = list[j].clone();
        let unchecked = UncheckedBlock {
            span,
            block,
            digest,
            bytes,
            fetched,
        };
        deliver(w, unchecked);
    };
    // Runs of missing blocks adjacent in the blob (a span's first block may share a byte
    // with the previous span's last), each one range request whose blocks come out as
    // they arrive, through a channel per run so they are handed out in order.
    let missing: Vec<bool> = cached.iter().map(Option::is_none).collect();
    let runs = missing_runs(&missing, |j| list[j].3.start <= list[j - 1].3.end);
    let mut receivers = Vec::with_capacity(runs.len());
    let mut fetches = Vec::with_capacity(runs.len());
    for run in &runs {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        receivers.push(rx);
        let ranges: Vec<Range<u64>> = list[run.clone()].iter().map(|b| b.3.clone()).collect();
        let first = run.start;
        fetches.push(async move {
            let piece = |i: usize, bytes: ChunkBytes| drop(tx.send((first + i, bytes)));
            source.fetch_pieces_streamed(&ranges, kind, piece).await
        });
    }
    // An async block, so that once it is done (the first error ends it) the requests still
    // going are dropped, and with them their channels: the handing below never waits on
    // a request nobody drives.
    let driving = async move {
        let stream = futures::stream::iter(fetches).buffer_unordered(MAX_RUNS_AT_ONCE);
        stream.try_collect::<Vec<()>>().await
    };
    let handing = async {
        let mut next = 0;
        for (run, mut rx) in runs.iter().zip(receivers) {
            for (i, slot) in cached[next..run.start].iter_mut().enumerate() {
                hand(next + i, slot.take().unwrap_or_default(), false);
            }
            next = run.start;
            while let Some((j, bytes)) = rx.recv().await {
                hand(j, bytes, true);
                next = j + 1;
            }
            if next < run.end {
                // The run failed: what comes after it must wait for a later read.
                return;
            }
        }
        for (i, slot) in cached[next..].iter_mut().enumerate() {
            hand(next + i, slot.take().unwrap_or_default(), false);
        }
    };
    let (driven, ()) = futures::join!(driving, handing);
    driven?;
    Ok(())
}
