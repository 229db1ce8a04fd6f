//! The learned prefetch through exact ranges ([`estargz::soci::learned`]): each range's
//! compressed bytes in one request, checked against the range's digest as a whole,
//! decoded from its start (the span checkpoint or a resume point whose window came inline)
//! and kept as a decoder of its span, which later reads go on from block by block.
//! Compared with whole blocks, no block tail past a read's last byte is fetched, and no
//! window request waits on the link. A range that fails is only logged: reads fetch its
//! bytes through the blocks.

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

/// Learned ranges in flight at once (the link admits them by size and class).
const PARALLEL: usize = 8;

/// Fetches, checks, decodes and keeps `ranges` in order, a few at once; returns how many
/// were kept.
pub async fn pin_learned(
    layer: &SociLayer,
    ranges: &[Arc<LearnedRange>],
    kind: FetchKind,
) -> usize {
    futures::stream::iter(ranges.to_vec())
        .map(|range| {
            let layer = layer.clone();
            async move {
                match pin_one(&layer, &range, kind).await {
                    Ok(()) => 1,
                    Err(error) => {
                        let layer = layer.source().location.digest;
                        tracing::warn!(%layer, span = range.span, needed = ?range.needed, %error, "soci learned range failed");
                        0
                    }
                }
            }
        })
        .buffered(PARALLEL)
        .fold(0, |kept, n| async move { kept + n })
        .await
}

async fn pin_one(
    layer: &SociLayer,
    range: &Arc<LearnedRange>,
    kind: FetchKind,
) -> Result<(), PrefixError> {
    let source = layer.source();
    let mut got: Option<ChunkBytes> = None;
    source
        .fetch_pieces_streamed(std::slice::from_ref(&range.compressed), kind, |_, bytes| {
            got = Some(bytes)
        })
        .await?;
    let bytes = got.unwrap_or_default();
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
