//! Span blocks for the reads of a layer: from the chunk cache (keyed by block digest),
//! else the registry, the missing blocks adjacent in the blob in one range request on the
//! shared link in the caller's class. Every block is checked against its digest before it
//! is returned; a fetched one is cached only once checked.

use std::ops::Range;

use futures::{StreamExt, TryStreamExt};

use estargz::soci::{SpanBlocks, SpanError};
use estargz::Digest;

use super::prefix_error::PrefixError;
use super::span_fetch::{missing_runs, SpanSource};
use crate::lazy::cache::{CacheKey, ChunkBytes};
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

/// The blocks `wants` asks for, in order, each with whether it was fetched: from the
/// cache, else fetched (blocks adjacent in the blob in one request); all checked
/// against their digests, fetched ones then cached.
pub(super) async fn gather(
    blocks: &SpanBlocks,
    source: &SpanSource,
    wants: &[Want],
    kind: FetchKind,
) -> Result<Vec<Vec<(ChunkBytes, bool)>>, PrefixError> {
    let zinfo = &source.zinfo;
    let mut list = Vec::new();
    for want in wants {
        for block in want.blocks.clone() {
            let (Some(range), Some(info)) = (
                blocks.compressed_range(zinfo, want.span, block),
                blocks.block(want.span, block),
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
    // Runs of missing blocks adjacent in the blob (a span's first block may share a byte
    // with the previous span's last), each one range request, several at once.
    let missing: Vec<bool> = got.iter().map(Option::is_none).collect();
    let runs = missing_runs(&missing, |j| list[j].2.start <= list[j - 1].2.end);
    // Made here, not by a closure inside the stream (which would not be Send for every
    // lifetime of `source`).
    let fetches: Vec<_> = runs
        .iter()
        .map(|run| {
            let ranges: Vec<Range<u64>> = list[run.clone()].iter().map(|b| b.2.clone()).collect();
            async move { source.fetch_pieces(&ranges, kind).await }
        })
        .collect();
    let fetched: Vec<Vec<ChunkBytes>> = futures::stream::iter(fetches)
        .buffered(MAX_RUNS_AT_ONCE)
        .try_collect()
        .await?;
    for (run, pieces) in runs.into_iter().zip(fetched) {
        for (slot, piece) in got[run].iter_mut().zip(pieces) {
            *slot = Some((piece, true));
        }
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
