//! Opening a layer: fetch the footer, then the TOC, verify the TOC digest, build the index.

use std::sync::Arc;

use estargz::{footer, toc, Digest, Format, Index, FOOTER_MAX_SIZE};

use super::{LayerConfig, LayerError};
use crate::remote::BlobSource;

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
    let tail = read_counted(source, size.saturating_sub(FOOTER_MAX_SIZE as u64)..size).await?;
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
    let region = read_counted(source, footer.toc_offset..footer_start).await?;
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

/// One range read, counted in the metrics as a `toc` request.
async fn read_counted(
    source: &Arc<dyn BlobSource>,
    range: std::ops::Range<u64>,
) -> Result<bytes::Bytes, crate::remote::RemoteError> {
    let metrics = crate::metrics::global();
    let len = range.end.saturating_sub(range.start);
    let bytes = metrics
        .range_request(crate::metrics::TOC_KIND, source.read(range))
        .await?;
    metrics.fetched(crate::metrics::TOC_KIND, len);
    Ok(bytes)
}
