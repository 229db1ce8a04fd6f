//! Opening a layer: fetch the footer, then the TOC, verify the TOC digest, build the index.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use estargz::{footer, toc, Digest, Format, Index, FOOTER_MAX_SIZE};

use super::{LayerConfig, LayerError};
use crate::remote::{BlobSource, RemoteError};

/// What opening a layer yields.
pub(super) struct Opened {
    pub format: Format,
    pub index: Index,
    pub toc_digest: Digest,
    pub toc_offset: u64,
}

pub(super) async fn read_toc(
    source: &Arc<dyn BlobSource>,
    expected: Option<Digest>,
    config: &LayerConfig,
) -> Result<Opened, LayerError> {
    let blob = source.digest();
    if expected.is_none() && config.verify {
        return Err(LayerError::MissingTocDigest { blob });
    }
    let size = source.size();
    let known_tail = source.take_tail().unwrap_or_default();
    let tail = read_near_end(
        source,
        &known_tail,
        size.saturating_sub(FOOTER_MAX_SIZE as u64)..size,
    )
    .await?;
    let footer = footer::parse(&tail).map_err(|source| LayerError::Footer { blob, source })?;
    let footer_start = size.saturating_sub(footer.size());
    if footer.toc_offset > footer_start {
        return Err(LayerError::BadTocRange {
            blob,
            toc_offset: footer.toc_offset,
            footer_start,
        });
    }
    let toc_size = footer_start - footer.toc_offset;
    if toc_size > config.max_toc_bytes {
        return Err(LayerError::TocTooLarge {
            blob,
            size: toc_size,
            max: config.max_toc_bytes,
        });
    }
    let region = read_near_end(source, &known_tail, footer.toc_offset..footer_start).await?;
    // Decompressing and parsing a big TOC is CPU work: keep it off the async workers.
    let decoded = tokio::task::spawn_blocking(move || {
        let (toc, digest) = toc::decode(&footer, &region)?;
        Ok::<_, estargz::TocError>((toc, digest))
    })
    .await
    .map_err(|source| LayerError::Task { blob, source })?;
    let (toc, toc_digest) = decoded.map_err(|source| LayerError::Toc { blob, source })?;
    match expected {
        Some(expected) if expected != toc_digest => {
            return Err(LayerError::TocDigestMismatch {
                blob,
                expected,
                actual: toc_digest,
            })
        }
        Some(_) => {}
        None => tracing::warn!(%blob, "serving a layer whose toc is not verified (verify = false)"),
    }
    let index = Index::build(&toc, footer.toc_offset)
        .map_err(|source| LayerError::Index { blob, source })?;
    Ok(Opened {
        format: footer.format,
        index,
        toc_digest,
        toc_offset: footer.toc_offset,
    })
}

/// `range` of the blob: out of `known_tail` (the blob's last bytes) when it lies inside,
/// else read from the source.
async fn read_near_end(
    source: &Arc<dyn BlobSource>,
    known_tail: &Bytes,
    range: Range<u64>,
) -> Result<Bytes, RemoteError> {
    let tail_start = source.size().saturating_sub(known_tail.len() as u64);
    if range.start >= tail_start && !known_tail.is_empty() {
        let start = usize::try_from(range.start - tail_start).unwrap_or(usize::MAX);
        let end = usize::try_from(range.end - tail_start).unwrap_or(usize::MAX);
        if let Some(bytes) = known_tail.get(start..end) {
            return Ok(known_tail.slice_ref(bytes));
        }
    }
    read_counted(source, range).await
}

/// One range read, counted in the metrics as a `toc` request.
async fn read_counted(
    source: &Arc<dyn BlobSource>,
    range: Range<u64>,
) -> Result<Bytes, RemoteError> {
    let metrics = crate::metrics::global();
    let len = range.end.saturating_sub(range.start);
    let bytes = metrics
        .range_request(crate::metrics::TOC_KIND, source.read(range))
        .await?;
    metrics.fetched(crate::metrics::TOC_KIND, len);
    Ok(bytes)
}
