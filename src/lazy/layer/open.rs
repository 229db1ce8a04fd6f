//! Opening a layer: fetch the footer and the TOC, decode the TOC and build the index, and
//! check the TOC's digest against the label (separately, so that a layer can be opened
//! ahead of its Prepare and checked when the label arrives).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use estargz::index::ParseError;
use estargz::{footer, toc, Digest, Format, Index, FOOTER_MAX_SIZE};

use super::{LayerConfig, LayerError};
use crate::lazy::cache::ChunkCache;
use crate::lazy::observe;
use crate::lazy::source::{BlobSource, RemoteError};

/// What opening a layer yields.
pub(super) struct Opened {
    pub format: Format,
    pub index: Index,
    pub toc_digest: Digest,
    pub toc_offset: u64,
}

/// Reads and decodes the TOC and builds the index, and saves the blob's end in `cache`
/// for reopening without the registry. The TOC is not checked against any digest here:
/// see [`check_toc`].
pub(super) async fn read_toc(
    source: &Arc<dyn BlobSource>,
    cache: &Arc<ChunkCache>,
    config: &LayerConfig,
) -> Result<Opened, LayerError> {
    let blob = source.digest();
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
    let footer_bytes = tail.slice(tail.len().saturating_sub(footer.size() as usize)..);
    let cache = cache.clone();
    // Decompressing, parsing and indexing a big TOC is CPU work: off the async workers.
    tokio::task::spawn_blocking(move || {
        let json = toc::decode_json(&footer, &region)
            .map_err(|source| LayerError::Toc { blob, source })?;
        let (index, toc_digest) =
            Index::parse(&json, footer.toc_offset).map_err(|error| match error {
                ParseError::Toc(source) => LayerError::Toc { blob, source },
                ParseError::Index(source) => LayerError::Index { blob, source },
            })?;
        drop(json);
        cache.save_toc(&blob, size, &[&region[..], &footer_bytes[..]].concat());
        Ok(Opened {
            format: footer.format,
            index,
            toc_digest,
            toc_offset: footer.toc_offset,
        })
    })
    .await
    .map_err(|source| LayerError::Task { blob, source })?
}

/// Checks the TOC digest `actual` against the label's `expected`; without a label the
/// layer is refused unless `verify` is off.
pub(super) fn check_toc(
    blob: Digest,
    actual: Digest,
    expected: Option<Digest>,
    verify: bool,
) -> Result<(), LayerError> {
    match expected {
        Some(expected) if expected != actual => Err(LayerError::TocDigestMismatch {
            blob,
            expected,
            actual,
        }),
        Some(_) => Ok(()),
        None if verify => Err(LayerError::MissingTocDigest { blob }),
        None => {
            tracing::warn!(%blob, "serving a layer whose toc is not verified (verify = false)");
            Ok(())
        }
    }
}

/// `range` of the blob: out of `known_tail` (the blob's last bytes) as far as it reaches,
/// the rest read from the source (only the part before the known tail: a TOC bigger than
/// the tail fetched at open costs one more request for its front, not a second copy).
async fn read_near_end(
    source: &Arc<dyn BlobSource>,
    known_tail: &Bytes,
    range: Range<u64>,
) -> Result<Bytes, RemoteError> {
    let tail_start = source.size().saturating_sub(known_tail.len() as u64);
    let in_tail = |at: u64| usize::try_from(at.saturating_sub(tail_start)).unwrap_or(usize::MAX);
    let known = known_tail.get(in_tail(range.start)..in_tail(range.end));
    match known {
        Some(known) if !known_tail.is_empty() && range.end > tail_start => {
            let known = known_tail.slice_ref(known);
            if range.start >= tail_start {
                return Ok(known);
            }
            let front = read_counted(source, range.start..tail_start).await?;
            Ok([&front[..], &known[..]].concat().into())
        }
        _ => read_counted(source, range).await,
    }
}

/// One range read, counted in the metrics as a `toc` request.
async fn read_counted(
    source: &Arc<dyn BlobSource>,
    range: Range<u64>,
) -> Result<Bytes, RemoteError> {
    let len = range.end.saturating_sub(range.start);
    let bytes = observe::range_request(observe::TOC_KIND, source.read(range)).await?;
    observe::observer().fetched(observe::TOC_KIND, len);
    Ok(bytes)
}
