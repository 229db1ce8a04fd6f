//! The blobs an index lists beside a layer's zTOC, read for the mount: each that cannot
//! be had or read costs only what it adds (logged), never the layer.

use estargz::soci::learned::LearnedRange;
use estargz::soci::prefetch::PrefetchArtifact;
use estargz::soci::{LearnedRanges, SpanBlocks, Zinfo};
use estargz::Digest;
use registry::Client;

use super::prefetch_plan::PrefetchPlan;
use crate::lazy::source::BlobLocation;

/// A small blob the index lists beside a zTOC (`what` names it in logs); `None`, logged,
/// when it is over `max` bytes or cannot be fetched: such a blob costs only what it adds,
/// never the layer.
pub(super) async fn small_blob(
    client: &Client,
    location: &BlobLocation,
    (digest, size): (Digest, u64),
    max: u64,
    what: &'static str,
) -> Option<Vec<u8>> {
    let layer = location.digest;
    if size > max {
        tracing::warn!(%layer, blob = %digest, size, "{what} too large, ignored");
        return None;
    }
    let mut bytes = Vec::new();
    if let Err(error) = client
        .download_blob(&location.reference, &digest, &mut bytes)
        .await
    {
        tracing::warn!(%layer, blob = %digest, %error, "{what} not fetched");
        return None;
    }
    Some(bytes)
}

/// The spans a layer's prefetch artifact lists, in fetch order, each with how far into it
/// it is needed (`None`: all of it). An artifact that cannot be read costs only the
/// prefetch (logged), never the layer.
pub(super) fn prefetch_spans(location: &BlobLocation, bytes: &[u8], zinfo: &Zinfo) -> PrefetchPlan {
    match PrefetchArtifact::from_bytes(bytes, zinfo.span_count()) {
        Ok(artifact) => PrefetchPlan {
            spans: artifact.span_ends(),
            ranges: artifact.ranges_within(zinfo.uncompressed_size()),
            learned: Vec::new(),
        },
        Err(error) => {
            tracing::warn!(layer = %location.digest, %error, "soci prefetch artifact ignored");
            PrefetchPlan::default()
        }
    }
}

/// The span blocks beside a layer's zTOC. Reached by digest from the same index manifest
/// as the zTOC, so trusted like it. One that does not fit the zTOC is logged and the
/// layer is served whole spans at a time.
pub(super) fn span_blocks(
    location: &BlobLocation,
    bytes: &[u8],
    zinfo: &Zinfo,
) -> Option<SpanBlocks> {
    SpanBlocks::from_bytes(bytes, zinfo)
        .inspect_err(
            |error| tracing::warn!(layer = %location.digest, %error, "soci span blocks ignored"),
        )
        .ok()
}

/// The learned ranges beside a layer's zTOC ([`estargz::soci::learned`]); checked against
/// the zTOC and the blocks. Ones that do not fit are logged and the prefetch goes by the
/// artifact's ranges.
pub(super) fn learned_ranges(
    location: &BlobLocation,
    bytes: &[u8],
    zinfo: &Zinfo,
    blocks: &SpanBlocks,
) -> Vec<LearnedRange> {
    LearnedRanges::from_bytes(bytes, zinfo, blocks)
        .inspect_err(
            |error| tracing::warn!(layer = %location.digest, %error, "soci learned ranges ignored"),
        )
        .map(|l| l.ranges)
        .unwrap_or_default()
}
