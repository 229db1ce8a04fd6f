//! [`SociLayer`]: an unconverted gzip layer served through its zTOC. A file read maps to
//! tar offsets, then to spans; the spans a read misses come through [`SpanSource`] (the
//! shared chunk cache, else one range request per run of adjacent spans, on-demand class
//! on the shared link), are checked against the span digests the index vouches for,
//! inflated from their checkpoints and kept decoded in a small memory cache; verified
//! compressed spans go to the disk cache. Concurrent reads of one span share one fetch.
//! When the index carries span blocks, reads go through [`Prefixes`] instead: only the
//! part of a span a read needs is fetched, block by block.
//! Wrong bytes are never served: a digest or inflate failure is an EIO.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use estargz::soci::{decompress_span, FileMetadata};
use estargz::Digest;
use futures::future::{BoxFuture, FutureExt, Shared};

use super::prefetch_plan::{Prefetch, PrefetchPlan};
use super::prefix::Prefixes;
use super::span_fetch::{SpanBytes, SpanSource};
use super::tar_window::Readahead;
use super::window_fetch::WindowsBlob;
use crate::lazy::fallback::FallbackReason;
use crate::lazy::fs::LayerContent;
use crate::lazy::link::FetchKind;
use crate::lazy::observe;

/// Decoded spans kept per layer (4 MiB each by default).
const CACHED_SPANS: usize = 16;
/// Uncompressed bytes of prefetched spans kept for the layer's life (beyond the cache).
const MAX_PINNED_BYTES: usize = 256 << 20;
/// Most spans one request fetches (a run of adjacent misses is cut into such pieces).
pub(super) const MAX_RUN_SPANS: usize = 8;

pub(super) type SpanFuture = Shared<BoxFuture<'static, Result<Arc<Vec<u8>>, String>>>;
type RunFuture = Shared<BoxFuture<'static, Result<Arc<Vec<SpanBytes>>, String>>>;

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
    source: SpanSource,
    index: estargz::Index,
    spans: Mutex<Spans>,
    /// The zTOC's digest and file table, for checking against the whole blob.
    ztoc: Digest,
    files: Vec<FileMetadata>,
    /// Set when the index was found not to describe the layer: every read is EIO.
    failed: AtomicBool,
    /// What to fetch at mount (from the prefetch artifact).
    prefetch: Prefetch,
    /// Span blocks of the index, when it has them: reads fetch span prefixes.
    prefixes: Option<Prefixes>,
    /// The readahead window of span-prefix reads (none when readahead is off).
    readahead: Option<Readahead>,
}

/// A layer served from its SOCI zTOC.
#[derive(Clone)]
pub struct SociLayer {
    inner: Arc<Inner>,
}

/// A [`SociLayer`] that does not keep it alive (the deferred check holds one).
pub struct WeakSociLayer(Weak<Inner>);

impl WeakSociLayer {
    pub fn upgrade(&self) -> Option<SociLayer> {
        self.0.upgrade().map(|inner| SociLayer { inner })
    }
}

impl SociLayer {
    pub fn new(
        source: SpanSource,
        ztoc: (Digest, Vec<FileMetadata>),
        index: estargz::Index,
        prefetch: PrefetchPlan,
        blocks: Option<(estargz::soci::SpanBlocks, Option<WindowsBlob>)>,
        readahead: Option<(u64, u64)>,
    ) -> Self {
        let readahead = readahead
            .filter(|_| blocks.is_some())
            .map(|bounds| Readahead::new(&index, &source.zinfo, bounds));
        Self {
            inner: Arc::new(Inner {
                source,
                index,
                spans: Mutex::default(),
                ztoc: ztoc.0,
                files: ztoc.1,
                failed: AtomicBool::new(false),
                prefetch: Prefetch::from(prefetch),
                prefixes: blocks.map(|(blocks, windows)| Prefixes::new(blocks, windows)),
                readahead,
            }),
        }
    }

    pub fn downgrade(&self) -> WeakSociLayer {
        WeakSociLayer(Arc::downgrade(&self.inner))
    }

    /// The blob, its index and the shared cache and link.
    pub(super) fn source(&self) -> &SpanSource {
        &self.inner.source
    }

    /// The zTOC's file table.
    pub(super) fn files(&self) -> &[FileMetadata] {
        &self.inner.files
    }

    /// The zTOC's digest.
    pub(super) fn ztoc(&self) -> Digest {
        self.inner.ztoc
    }

    /// The span prefixes, when the index has span blocks.
    /// What to fetch at mount.
    pub(super) fn prefetch_plan(&self) -> &Prefetch {
        &self.inner.prefetch
    }

    pub(super) fn prefixes(&self) -> Option<&Prefixes> {
        self.inner.prefixes.as_ref()
    }

    /// Waits for the fetches reads have in flight for spans in `run` (their verified bytes
    /// then are in the cache), so the check does not download those a second time.
    pub(super) async fn settle(&self, run: Range<usize>) {
        let flights: Vec<SpanFuture> = {
            let spans = self.lock();
            run.filter_map(|s| spans.in_flight.get(&s).cloned())
                .collect()
        };
        futures::future::join_all(flights).await;
    }

    /// Keeps decoded span `span` for the layer's life (up to [`MAX_PINNED_BYTES`]).
    pub(super) fn pin(&self, span: usize, bytes: Arc<Vec<u8>>) {
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

    /// Marks the layer failed: every read from now on is EIO.
    pub(super) fn fail(&self, why: &str) {
        let inner = &self.inner;
        inner.failed.store(true, Ordering::Relaxed);
        observe::observer().fallback(FallbackReason::InvalidSociIndex);
        tracing::error!(
            layer = %inner.source.location.digest, ztoc = %inner.ztoc, "soci layer failed verification, reads now fail: {why}"
        );
    }

    /// How far a span-prefix read of tar `[at, end)` fetches: on a miss, the window past
    /// it; on a hit, `end`, and the next window is fetched now if the read entered the
    /// second half of this one.
    fn readahead(&self, prefixes: &Prefixes, at: u64, end: u64) -> u64 {
        let (inner, source) = (&self.inner, &self.inner.source);
        let Some(readahead) = &inner.readahead else {
            return end;
        };
        let round_trip = source.cache.link().round_trip_bytes();
        if !prefixes.holds(&source.zinfo, at..end) {
            // The fetch decodes whole blocks: the window goes on from where they end, so
            // the next files, decoded with them, count as read in sequence.
            let decoded = prefixes.block_end(&source.zinfo, end);
            return readahead.on_miss(&inner.index, at, decoded, round_trip);
        }
        if let Some(next) = readahead.on_hit(&inner.index, at, round_trip) {
            let this = self.clone();
            tokio::spawn(async move {
                let (source, prefixes) = (&this.inner.source, this.prefixes());
                if let Some(prefixes) = prefixes {
                    let kind = FetchKind::OnDemand;
                    // Readers of these bytes wait on the spans' locks and find them.
                    drop(prefixes.read(source, next.clone(), next.end, kind).await);
                }
            });
        }
        end
    }

    /// Reads `len` bytes of the uncompressed tar at `offset` (clamped to the archive).
    async fn read_tar(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let zinfo = &self.inner.source.zinfo;
        let end = offset.saturating_add(len);
        if let Some(prefixes) = &self.inner.prefixes {
            let fetch_end = self.readahead(prefixes, offset, end);
            let read = prefixes.read(
                &self.inner.source,
                offset..end,
                fetch_end,
                FetchKind::OnDemand,
            );
            return read.await.map_err(|e| e.to_string());
        }
        let spans = zinfo.spans_for(offset..end);
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let fetches = self.spans(spans.clone(), FetchKind::OnDemand);
        let decoded = futures::future::try_join_all(fetches).await?;
        for (span, bytes) in spans.zip(decoded) {
            let range = zinfo
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

    /// The decoded spans `wanted`, in order: from the cache, joining fetches in flight,
    /// or fetched now (adjacent misses together, in class `kind`).
    pub(super) fn spans(&self, wanted: Range<usize>, kind: FetchKind) -> Vec<SpanFuture> {
        let mut spans = self.lock();
        let mut out: Vec<Option<SpanFuture>> = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for span in wanted.clone() {
            if let Some(done) = spans.pinned.get(&span).or_else(|| spans.done.get(&span)) {
                let done = done.clone();
                out.push(Some(async move { Ok(done) }.boxed().shared()));
            } else if let Some(flight) = spans.in_flight.get(&span) {
                out.push(Some(flight.clone()));
            } else {
                out.push(None);
                missing.push(span);
            }
        }
        for run in runs_in_order(&missing) {
            let this = self.clone();
            let fetching = run.clone();
            let run_future: RunFuture = async move {
                let bytes = this.inner.source.compressed(fetching, kind).await;
                bytes.map(Arc::new).map_err(|e| e.to_string())
            }
            .boxed()
            .shared();
            for (i, span) in run.clone().enumerate() {
                let future = self.decode(span, i, run_future.clone());
                spans.in_flight.insert(span, future.clone());
                out[span - wanted.start] = Some(future);
            }
        }
        out.into_iter().flatten().collect()
    }

    /// Span `span`, the `i`th of the run `run` fetches: checked, inflated and cached.
    fn decode(&self, span: usize, i: usize, run: RunFuture) -> SpanFuture {
        let this = self.clone();
        async move {
            let result = this.decode_now(span, i, run).await;
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
        .shared()
    }

    async fn decode_now(
        &self,
        span: usize,
        i: usize,
        run: RunFuture,
    ) -> Result<Arc<Vec<u8>>, String> {
        let compressed = run
            .await?
            .get(i)
            .cloned()
            .ok_or_else(|| format!("span {span} missing from its run"))?;
        let this = self.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let source = &this.inner.source;
            let decoded = decompress_span(&source.zinfo, span, &compressed.bytes)?;
            // Verified now (decompress_span checked the digest): worth keeping on disk.
            if let (true, Some(key)) = (compressed.fetched, source.key(span)) {
                source.cache.put_disk(key, compressed.bytes);
            }
            Ok::<_, estargz::soci::SpanError>(decoded)
        })
        .await
        .map_err(|e| e.to_string())?;
        match decoded {
            Ok(bytes) => Ok(Arc::new(bytes)),
            Err(error) => {
                tracing::error!(layer = %self.inner.source.location.digest, %error, "soci span failed verification");
                observe::observer().verification_failed(observe::SOCI_SPAN);
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

/// `spans` cut into runs of adjacent ones (at most [`MAX_RUN_SPANS`] long), in their order.
pub(super) fn runs_in_order(spans: &[usize]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for &span in spans {
        match runs.last_mut() {
            Some(run) if run.end == span && run.len() < MAX_RUN_SPANS => run.end += 1,
            _ => runs.push(span..span + 1),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_adjacent_spans_in_order() {
        let runs = |spans: &[usize]| -> Vec<(usize, usize)> {
            runs_in_order(spans)
                .iter()
                .map(|r| (r.start, r.end))
                .collect()
        };
        assert_eq!(runs(&[]), vec![], "none");
        assert_eq!(runs(&[3, 4, 5]), vec![(3, 6)], "one run");
        assert_eq!(
            runs(&[7, 1, 2, 9]),
            vec![(7, 8), (1, 3), (9, 10)],
            "gaps and order kept"
        );
        let long: Vec<usize> = (0..10).collect();
        assert_eq!(runs(&long), vec![(0, 8), (8, 10)], "long runs are cut");
    }
}
