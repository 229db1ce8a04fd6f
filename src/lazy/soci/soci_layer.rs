//! [`SociLayer`]: an unconverted gzip layer served through its zTOC. A file read maps to
//! tar offsets, then to spans; each span's compressed bytes are fetched with one range
//! request, checked against the span digest the index vouches for, inflated from its
//! checkpoint and kept in a small memory cache. Concurrent reads of one span share one
//! fetch. Wrong bytes are never served: a digest or inflate failure is an EIO.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use estargz::soci::{decompress_span, FileMetadata, Zinfo};
use estargz::Digest;
use futures::future::{BoxFuture, FutureExt, Shared};
use registry::Client;

use crate::lazy::fallback::FallbackReason;
use crate::lazy::fs::LayerContent;
use crate::lazy::observe;
use crate::lazy::source::BlobLocation;

/// Metrics kind label of span fetches.
const SOCI_KIND: &str = "soci";
/// Decoded spans kept per layer (4 MiB each by default).
const CACHED_SPANS: usize = 16;
/// Uncompressed bytes of prefetched spans kept for the layer's life (beyond the cache).
const MAX_PINNED_BYTES: usize = 256 << 20;
/// Prefetch span fetches in flight at once.
const PREFETCH_PARALLEL: usize = 4;

type SpanFuture = Shared<BoxFuture<'static, Result<Arc<Vec<u8>>, String>>>;

#[derive(Default)]
struct Spans {
    done: HashMap<usize, Arc<Vec<u8>>>,
    order: VecDeque<usize>,
    in_flight: HashMap<usize, SpanFuture>,
    /// Spans the prefetch artifact listed: the workload reads them at start, so they are
    /// not evicted (up to [`MAX_PINNED_BYTES`]).
    pinned: HashMap<usize, Arc<Vec<u8>>>,
    pinned_bytes: usize,
}

struct Inner {
    client: Client,
    location: BlobLocation,
    index: estargz::Index,
    zinfo: Zinfo,
    spans: Mutex<Spans>,
    /// The zTOC's digest and file table, for checking against the whole blob.
    ztoc: Digest,
    files: Vec<FileMetadata>,
    /// Set when the index was found not to describe the layer: every read is EIO.
    failed: AtomicBool,
    /// Spans to fetch at mount, in order (from the prefetch artifact).
    prefetch: Vec<usize>,
}

/// A layer served from its SOCI zTOC.
#[derive(Clone)]
pub struct SociLayer {
    inner: Arc<Inner>,
}

impl SociLayer {
    pub fn new(
        client: Client,
        location: BlobLocation,
        ztoc: (Digest, Vec<FileMetadata>),
        index: estargz::Index,
        zinfo: Zinfo,
        prefetch: Vec<usize>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                location,
                index,
                zinfo,
                spans: Mutex::default(),
                ztoc: ztoc.0,
                files: ztoc.1,
                failed: AtomicBool::new(false),
                prefetch,
            }),
        }
    }

    /// Whether a prefetch artifact listed spans for this layer.
    pub fn has_prefetch(&self) -> bool {
        !self.inner.prefetch.is_empty()
    }

    /// Fetches the prefetch artifact's spans (a few at a time, in its order) and keeps
    /// them; returns how many were fetched. A failed span is only logged: reads retry it.
    pub async fn prefetch(self) -> usize {
        use futures::stream::StreamExt;
        let spans = self.inner.prefetch.clone();
        let fetched = futures::stream::iter(spans)
            .map(|span| {
                let this = self.clone();
                async move { (span, this.span(span).await) }
            })
            .buffered(PREFETCH_PARALLEL)
            .filter_map(|(span, result)| {
                let this = self.clone();
                async move {
                    match result {
                        Ok(bytes) => {
                            this.pin(span, bytes);
                            Some(())
                        }
                        Err(error) => {
                            tracing::warn!(layer = %this.inner.location.digest, span, %error, "soci prefetch span failed");
                            None
                        }
                    }
                }
            })
            .count()
            .await;
        tracing::info!(
            layer = %self.inner.location.digest, spans = fetched, "soci prefetch done"
        );
        fetched
    }

    fn pin(&self, span: usize, bytes: Arc<Vec<u8>>) {
        let mut spans = self.lock();
        if spans.pinned.contains_key(&span) {
            return;
        }
        let total = spans.pinned_bytes.saturating_add(bytes.len());
        if total <= MAX_PINNED_BYTES {
            spans.pinned_bytes = total;
            spans.pinned.insert(span, bytes);
        }
    }

    /// Downloads the whole blob (digest-checked) into `dir` and checks the index against
    /// it; on a mismatch the layer is failed. Network trouble only skips the check.
    pub async fn verify_whole_blob(self, dir: std::path::PathBuf) {
        let inner = &self.inner;
        let (layer, ztoc) = (inner.location.digest, inner.ztoc);
        let file = match tempfile::NamedTempFile::new_in(&dir) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(%layer, %error, dir = %dir.display(), "soci check skipped: no temp file");
                return;
            }
        };
        let mut out = match file.reopen() {
            Ok(f) => tokio::fs::File::from_std(f),
            Err(error) => {
                tracing::warn!(%layer, %error, "soci check skipped");
                return;
            }
        };
        let reference = &inner.location.reference;
        if let Err(error) = inner
            .client
            .download_blob(reference, &layer, &mut out)
            .await
        {
            if matches!(error, registry::Error::DigestMismatch { .. }) {
                self.fail(&format!("blob does not match its digest: {error}"));
            } else {
                tracing::warn!(%layer, %error, "soci check skipped: download failed");
            }
            return;
        }
        let this = self.clone();
        let path = file.path().to_owned();
        let checked = tokio::task::spawn_blocking(move || {
            super::verify::verify_blob(&path, &this.inner.zinfo, &this.inner.files)
        })
        .await;
        match checked {
            Ok(Ok(())) => {
                tracing::info!(%layer, %ztoc, "soci index checked against the whole layer")
            }
            Ok(Err(error)) => self.fail(&error.to_string()),
            Err(error) => tracing::warn!(%layer, %error, "soci check skipped: task failed"),
        }
        drop(file);
    }

    fn fail(&self, why: &str) {
        let inner = &self.inner;
        inner.failed.store(true, Ordering::Relaxed);
        observe::observer().fallback(FallbackReason::InvalidSociIndex);
        tracing::error!(
            layer = %inner.location.digest, ztoc = %inner.ztoc, "soci layer failed verification, reads now fail: {why}"
        );
    }

    /// Reads `len` bytes of the uncompressed tar at `offset` (clamped to the archive).
    async fn read_tar(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let end = offset.saturating_add(len);
        let spans = self.inner.zinfo.spans_for(offset..end);
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let fetches: Vec<_> = spans.clone().map(|s| self.span(s)).collect();
        let decoded = futures::future::try_join_all(fetches).await?;
        for (span, bytes) in spans.zip(decoded) {
            let range = self
                .inner
                .zinfo
                .uncompressed_range(span)
                .ok_or_else(|| format!("span {span} vanished"))?;
            let from = offset.max(range.start) - range.start;
            let to = end.min(range.end) - range.start;
            let (from, to) = (
                usize::try_from(from).map_err(|e| e.to_string())?,
                usize::try_from(to).map_err(|e| e.to_string())?,
            );
            out.extend_from_slice(bytes.get(from..to).ok_or("span shorter than indexed")?);
        }
        Ok(out)
    }

    /// One decoded span: from the cache, joining a fetch in flight, or fetched now.
    fn span(&self, span: usize) -> SpanFuture {
        let mut spans = self.lock();
        if let Some(done) = spans.pinned.get(&span).or_else(|| spans.done.get(&span)) {
            let done = done.clone();
            return async move { Ok(done) }.boxed().shared();
        }
        if let Some(flight) = spans.in_flight.get(&span) {
            return flight.clone();
        }
        let this = self.clone();
        let fetch = async move {
            let result = this.fetch_span(span).await;
            let mut spans = this.lock();
            spans.in_flight.remove(&span);
            if let Ok(bytes) = &result {
                spans.done.insert(span, bytes.clone());
                spans.order.push_back(span);
                while spans.order.len() > CACHED_SPANS {
                    if let Some(old) = spans.order.pop_front() {
                        spans.done.remove(&old);
                    }
                }
            }
            result
        }
        .boxed()
        .shared();
        spans.in_flight.insert(span, fetch.clone());
        fetch
    }

    async fn fetch_span(&self, span: usize) -> Result<Arc<Vec<u8>>, String> {
        let inner = &self.inner;
        let range = inner
            .zinfo
            .compressed_range(span)
            .ok_or_else(|| format!("no span {span}"))?;
        let reading = inner.client.read_blob_range(
            &inner.location.reference,
            &inner.location.digest,
            range.clone(),
        );
        let bytes = observe::range_request(SOCI_KIND, reading)
            .await
            .map_err(|e| format!("fetch span {span} ({}..{}): {e}", range.start, range.end))?;
        observe::observer().fetched(SOCI_KIND, bytes.len() as u64);
        let this = self.clone();
        let decoded =
            tokio::task::spawn_blocking(move || decompress_span(&this.inner.zinfo, span, &bytes))
                .await
                .map_err(|e| e.to_string())?;
        match decoded {
            Ok(bytes) => Ok(Arc::new(bytes)),
            Err(error) => {
                tracing::error!(layer = %inner.location.digest, %error, "soci span failed verification");
                Err(error.to_string())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spans> {
        self.inner
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl LayerContent for SociLayer {
    fn index(&self) -> &estargz::Index {
        &self.inner.index
    }

    fn read(
        &self,
        file: estargz::EntryId,
        offset: u64,
        len: u32,
    ) -> BoxFuture<'static, Result<Vec<u8>, std::io::Error>> {
        let this = self.clone();
        Box::pin(async move {
            if this.inner.failed.load(Ordering::Relaxed) {
                return Err(std::io::Error::other(
                    "layer failed verification against its soci index",
                ));
            }
            let index = &this.inner.index;
            let size = index.entry(file).map_or(0, |e| e.size);
            if offset >= size {
                return Ok(Vec::new());
            }
            let len = u64::from(len).min(size - offset);
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            let mut at = offset;
            // A file's chunks map to consecutive tar ranges; a read may cross one.
            while at < offset + len {
                let chunk = index
                    .chunk_at(file, at)
                    .ok_or_else(|| std::io::Error::other(format!("no chunk at {at}")))?;
                let tar_at = chunk.compressed.start + (at - chunk.file_offset);
                let n = (offset + len - at).min(chunk.file_offset + chunk.size - at);
                let bytes = this
                    .read_tar(tar_at, n)
                    .await
                    .map_err(std::io::Error::other)?;
                if bytes.len() as u64 != n {
                    return Err(std::io::Error::other("short span read"));
                }
                out.extend(bytes);
                at += n;
            }
            Ok(out)
        })
    }
}
