//! The learned prefetch through exact ranges ([`estargz::soci::learned`]): each range's
//! compressed bytes checked against the range's digest as a whole, decoded from its start
//! (the span checkpoint or a resume point whose window came inline) and kept as a decoder
//! of its span, which later reads go on from block by block. Compared with whole blocks,
//! no block tail past a read's last byte is fetched, and no window request waits on the
//! link. The ranges go in groups, each one multi-range request where the registry serves
//! those ([`super::apart_fetch`]): a layer's reads lie apart, tens of them, and on a fast
//! link each request costs more than its bytes. A range that fails is only logged: reads
//! fetch its bytes through the blocks.

use std::ops::Range;
use std::sync::Arc;

use estargz::soci::learned::LearnedRange;
use estargz::soci::SpanError;
use futures::StreamExt;

use super::feeding::Segment;
use super::prefix_error::PrefixError;
use super::soci_layer::SociLayer;
use crate::lazy::cache::ChunkBytes;
use crate::lazy::link::FetchKind;
use crate::lazy::observe;

/// Groups in flight at once (the link admits them by size and class).
const PARALLEL: usize = 8;
/// Most ranges in one multi-range request (as the eStargz fetch asks for).
const MAX_RUNS: usize = 32;
/// Most bytes in one group: a prefetch request's size limit (docs/fetch.md).
const MAX_GROUP_BYTES: u64 = 8 << 20;

/// Fetches, checks, decodes and keeps `ranges` in order, a group at a time (a few groups
/// at once); returns how many were kept.
pub async fn pin_learned(
    layer: &SociLayer,
    ranges: &[Arc<LearnedRange>],
    kind: FetchKind,
) -> usize {
    futures::stream::iter(groups(ranges))
        .map(|group| pin_group(layer, group, kind))
        .buffered(PARALLEL)
        .fold(0, |kept, n| async move { kept + n })
        .await
}

/// `ranges` cut, in their order, into groups of at most [`MAX_RUNS`] ranges and
/// [`MAX_GROUP_BYTES`] (a range larger than that is a group of its own).
fn groups(ranges: &[Arc<LearnedRange>]) -> Vec<Vec<Arc<LearnedRange>>> {
    let mut groups: Vec<Vec<Arc<LearnedRange>>> = Vec::new();
    let mut bytes = 0;
    for range in ranges {
        let len = range.compressed.end - range.compressed.start;
        match groups.last_mut() {
            Some(group) if group.len() < MAX_RUNS && bytes + len <= MAX_GROUP_BYTES => {
                group.push(range.clone())
            }
            _ => {
                groups.push(vec![range.clone()]);
                bytes = 0;
            }
        }
        bytes += len;
    }
    groups
}

/// One group's bytes in one request; each range decoded as soon as its bytes are in.
async fn pin_group(layer: &SociLayer, group: Vec<Arc<LearnedRange>>, kind: FetchKind) -> usize {
    let wanted: Vec<Range<u64>> = group.iter().map(|r| r.compressed.clone()).collect();
    let mut decoding = Vec::with_capacity(group.len());
    let fetched = layer
        .source()
        .fetch_apart(&wanted, kind, |i, bytes| {
            let (layer, range) = (layer.clone(), group[i].clone());
            decoding.push(tokio::spawn(async move {
                let kept = pin_one(&layer, &range, bytes).await;
                kept.map_err(|error| (range, error))
            }));
        })
        .await;
    let mut kept = 0;
    for task in decoding {
        match task.await {
            Ok(Ok(())) => kept += 1,
            Ok(Err((range, error))) => warn_failed(layer, &range, &error),
            Err(error) => tracing::warn!(%error, "soci learned range task failed"),
        }
    }
    if let Err(error) = fetched {
        let layer = layer.source().location.digest;
        let (ranges, lost) = (group.len(), group.len() - kept);
        tracing::warn!(%layer, ranges, lost, %error, "soci learned ranges not fetched");
    }
    kept
}

fn warn_failed(layer: &SociLayer, range: &LearnedRange, error: &PrefixError) {
    let layer = layer.source().location.digest;
    tracing::warn!(%layer, span = range.span, needed = ?range.needed, %error, "soci learned range failed");
}

/// Checks and decodes one range's `bytes` and keeps the decoder in its span.
async fn pin_one(
    layer: &SociLayer,
    range: &Arc<LearnedRange>,
    bytes: ChunkBytes,
) -> Result<(), PrefixError> {
    let (this, learned) = (layer.clone(), range.clone());
    let decoded = tokio::task::spawn_blocking(move || {
        let (zinfo, digest) = (&this.source().zinfo, this.source().location.digest);
        let blocks = this
            .prefixes()
            .ok_or(SpanError::NoSuchSpan { span: learned.span })?
            .blocks();
        learned.decode(zinfo, blocks, &bytes).inspect_err(|error| {
            if matches!(error, SpanError::BlockDigest { .. }) {
                tracing::error!(layer = %digest, %error, "soci learned range failed verification");
                observe::observer().verification_failed(observe::SOCI_BLOCK);
            }
        })
    })
    .await??;
    let segment = Segment {
        start: decoded.start,
        decoder: decoded.decoder,
        out: decoded.out,
    };
    let prefixes = layer
        .prefixes()
        .ok_or(SpanError::NoSuchSpan { span: range.span })?;
    prefixes
        .install(range.span, segment, range.needed.clone())
        .await;
    Ok(())
}
