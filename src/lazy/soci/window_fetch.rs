//! The sparse window of a resume point ([`estargz::soci::resume`]): from the windows blob
//! when it came whole at mount (a small one does: a read jumping into a span then needs
//! no request of its own for it), else the chunk cache (keyed by the entry's digest), else
//! one range request into the blob; checked against the digest the blocks blob gives
//! before it is decoded; a fetched one is then cached.

use estargz::soci::{sparse_window, ResumePoint, SpanError};
use estargz::Digest;

use super::prefix_error::PrefixError;
use super::span_fetch::SpanSource;
use crate::lazy::cache::{CacheKey, ChunkBytes};
use crate::lazy::link::FetchKind;
use crate::lazy::observe;

/// A layer's windows blob: its digest, and its bytes when it was fetched whole.
pub struct WindowsBlob {
    pub digest: Digest,
    pub held: Option<Vec<u8>>,
}

/// The 32 KiB window `point` resumes with; `windows` is the windows blob (`None` when the
/// index has none: only points needing no window can be used then).
pub async fn window(
    source: &SpanSource,
    windows: Option<&WindowsBlob>,
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
    let len = u64::from(w.len);
    let range = w.offset..w.offset.saturating_add(len);
    let held = (blob.held.as_deref())
        .and_then(|b| b.get(usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?));
    let (entry, fetched) = match held {
        Some(bytes) => (ChunkBytes::from(bytes.to_vec()), false),
        None => {
            let cache = source.cache.clone();
            match tokio::task::spawn_blocking(move || cache.peek(&key, len)).await? {
                Some(bytes) => (bytes, false),
                None => {
                    let bytes = source.fetch_from(&blob.digest, range, kind).await?;
                    (ChunkBytes::from(bytes.to_vec()), true)
                }
            }
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
