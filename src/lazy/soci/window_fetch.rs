//! The sparse window of a resume point ([`estargz::soci::resume`]): from the chunk cache
//! (keyed by the entry's digest), else one range request into the index's windows blob;
//! checked against the digest the blocks blob gives before it is decoded, then cached.

use estargz::soci::{sparse_window, ResumePoint, SpanError};
use estargz::Digest;

use super::prefix_error::PrefixError;
use super::span_fetch::SpanSource;
use crate::lazy::cache::{CacheKey, ChunkBytes};
use crate::lazy::link::FetchKind;
use crate::lazy::observe;

/// The 32 KiB window `point` resumes with; `windows` is the windows blob (`None` when the
/// index has none: only points needing no window can be used then).
pub async fn window(
    source: &SpanSource,
    windows: Option<Digest>,
    point: &ResumePoint,
    kind: FetchKind,
) -> Result<Vec<u8>, PrefixError> {
    let w = point.window;
    let span = point.span as usize;
    if w.len == 0 {
        return Ok(sparse_window::decode(&[]).unwrap_or_default());
    }
    let Some(blob) = windows else {
        return Err(SpanError::NoSuchSpan { span }.into());
    };
    let key = CacheKey::Content(w.digest);
    let cache = source.cache.clone();
    let len = u64::from(w.len);
    let cached = tokio::task::spawn_blocking(move || cache.peek(&key, len)).await?;
    let (entry, fetched) = match cached {
        Some(bytes) => (bytes, false),
        None => {
            let range = w.offset..w.offset.saturating_add(len);
            let bytes = source.fetch_from(&blob, range, kind).await?;
            (ChunkBytes::from(bytes.to_vec()), true)
        }
    };
    let (cache, layer) = (source.cache.clone(), source.location.digest);
    let decoded = tokio::task::spawn_blocking(move || {
        let got = Digest::sha256(&entry);
        if got != w.digest {
            let error = SpanError::BlockDigest {
                span,
                block: point_block(&w),
                got,
                want: w.digest,
            };
            tracing::error!(%layer, %error, "soci resume window failed verification");
            observe::observer().verification_failed(observe::SOCI_BLOCK);
            return Err(PrefixError::from(error));
        }
        let window = sparse_window::decode(&entry).map_err(|error| {
            tracing::error!(%layer, %error, "soci resume window does not decode");
            PrefixError::Window(error)
        })?;
        if fetched {
            cache.put_disk(key, entry);
        }
        Ok(window)
    })
    .await?;
    decoded
}

/// Errors name a window by its offset in the windows blob.
fn point_block(w: &estargz::soci::resume::WindowRef) -> usize {
    usize::try_from(w.offset).unwrap_or(usize::MAX)
}
