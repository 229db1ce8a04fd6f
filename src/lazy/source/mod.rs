//! Where a layer blob's bytes come from: the [`BlobSource`] seam (size + range reads),
//! its registry implementation [`RegistryBlob`], resolving a blob from snapshot labels, and
//! finding the image manifest a layer belongs to.

pub mod image_manifest;
mod labels;
#[cfg(test)]
pub(crate) mod memory_blob;
mod registry_blob;

use std::ops::Range;

use bytes::Bytes;
use estargz::Digest;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};

pub use labels::{toc_digest_from_labels, BlobLocation, LabelError};
pub use registry::ClientConfig as RemoteConfig;
pub use registry_blob::RegistryBlob;

/// Errors reading a blob.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("registry: {0}")]
    Registry(#[from] registry::Error),
    #[error("blob {digest}: asked for bytes {}..{} of a {size}-byte blob", range.start, range.end)]
    OutOfRange {
        digest: Digest,
        range: Range<u64>,
        size: u64,
    },
    #[error("blob {digest}: got {got} bytes for range {}..{}", range.start, range.end)]
    ShortRead {
        digest: Digest,
        range: Range<u64>,
        got: usize,
    },
    #[error("blob {digest}: source unavailable: {reason}")]
    Unavailable {
        digest: Digest,
        reason: &'static str,
    },
}

/// The bytes of one range read, in order, as they arrive; together exactly the range
/// (or an error).
pub type RangeStream = BoxStream<'static, Result<Bytes, RemoteError>>;

/// The pieces of a multi-range read as they arrive, each with the blob offset of its
/// first byte. Which ranges came is the reader's to check.
pub type PartStream = BoxStream<'static, Result<(u64, Bytes), RemoteError>>;

/// One immutable layer blob that can be read by byte ranges.
///
/// Implementations return exactly the bytes asked for (or an error); nothing is verified
/// here: the layer checks every chunk against its digest.
pub trait BlobSource: Send + Sync + 'static {
    /// Digest of the whole blob (names it in logs and cache keys).
    fn digest(&self) -> Digest;
    /// Size of the blob in bytes.
    fn size(&self) -> u64;
    /// Reads several ranges; the result is in the order of `ranges`.
    fn read_ranges<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, RemoteError>>;

    /// Bytes at the very end of the blob that opening it already fetched (handed out
    /// once, so they are not kept for the layer's lifetime). Default: none.
    fn take_tail(&self) -> Option<Bytes> {
        None
    }

    /// Starts reading `range`, whose bytes are handed out as they arrive, so the front of
    /// a big range can be used before its end is in. Default: one piece, the whole range.
    fn read_stream(&self, range: Range<u64>) -> BoxFuture<'_, Result<RangeStream, RemoteError>> {
        Box::pin(async move {
            let bytes = self.read(range).await?;
            Ok(futures::stream::once(async move { Ok(bytes) }).boxed())
        })
    }

    /// Whether asking for several ranges in one request is worth trying (the source is
    /// not known to answer such requests otherwise). Default: false.
    fn multi_range(&self) -> bool {
        false
    }

    /// Starts one request for all of `ranges` (sorted, apart). `Ok(None)` when the source
    /// does not answer such requests with the ranges (now known): ask range by range.
    /// Default: always `None`.
    fn read_parts<'a>(
        &'a self,
        ranges: &'a [Range<u64>],
    ) -> BoxFuture<'a, Result<Option<PartStream>, RemoteError>> {
        let _ = ranges;
        Box::pin(async { Ok(None) })
    }

    /// Reads one range.
    fn read(&self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, RemoteError>> {
        Box::pin(async move {
            let ranges = [range];
            let mut parts = self.read_ranges(&ranges).await?;
            Ok(parts.pop().unwrap_or_default())
        })
    }
}

/// Checks that `bytes` is exactly `range` of a blob of `digest`.
pub(crate) fn check_length(
    digest: Digest,
    range: &Range<u64>,
    bytes: &Bytes,
) -> Result<(), RemoteError> {
    let want = range.end.saturating_sub(range.start);
    if bytes.len() as u64 != want {
        return Err(RemoteError::ShortRead {
            digest,
            range: range.clone(),
            got: bytes.len(),
        });
    }
    Ok(())
}
