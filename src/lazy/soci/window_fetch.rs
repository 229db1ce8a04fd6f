//! The sparse window of a resume point ([`estargz::soci::resume`]): from the chunk cache
//! (keyed by the entry's digest), else the index's windows blob: the whole blob, once,
//! when it is no more than a round trip's worth of bytes (a window request costs a round
//! trip either way, and later jumps into spans then need no request for theirs), else one
//! range request for the entry. Checked against the digest the blocks blob gives before
//! it is decoded; one that came over the network is then cached.

use estargz::soci::{sparse_window, ResumePoint, SpanError};
use estargz::Digest;
use tokio::sync::OnceCell;

use super::prefix_error::PrefixError;
use super::span_fetch::SpanSource;
use crate::lazy::cache::{CacheKey, ChunkBytes};
use crate::lazy::link::FetchKind;
use crate::lazy::observe;

/// The largest windows blob fetched whole while the link is not measured yet.
const WHOLE_UNMEASURED: u64 = 64 << 10;

/// A layer's windows blob: its digest and size, and its bytes once fetched whole.
pub struct WindowsBlob {
    pub digest: Digest,
    size: u64,
    whole: OnceCell<Vec<u8>>,
}

impl WindowsBlob {
    pub fn new(digest: Digest, size: u64) -> Self {
        Self {
            digest,
            size,
            whole: OnceCell::new(),
        }
    }

    /// The whole blob when it was fetched whole.
    pub fn held(&self) -> Option<&Vec<u8>> {
        self.whole.get()
    }

    /// The whole blob, fetched once, when it is small enough for the link; `None` when
    /// not (or the fetch failed: entries are then fetched one by one).
    async fn whole(&self, source: &SpanSource, kind: FetchKind) -> Option<&Vec<u8>> {
        let link = source.cache.link().round_trip_bytes();
        if self.size > link.unwrap_or(0).max(WHOLE_UNMEASURED) {
            return None;
        }
        let fetch = || async {
            let bytes = source.fetch_from(&self.digest, 0..self.size, kind).await?;
            Ok::<_, PrefixError>(bytes.to_vec())
        };
        self.whole.get_or_try_init(fetch).await.ok()
    }
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
    let cache = source.cache.clone();
    let cached = tokio::task::spawn_blocking(move || cache.peek(&key, len)).await?;
    let (entry, fetched) = match cached {
        Some(bytes) => (bytes, false),
        None => {
            let whole = (blob.whole(source, kind).await).and_then(|b| {
                b.get(usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?)
            });
            match whole {
                Some(bytes) => (ChunkBytes::from(bytes.to_vec()), true),
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
