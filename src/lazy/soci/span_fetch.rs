//! Where a SOCI layer's compressed span bytes come from: the daemon's chunk cache (keyed
//! by the span digest, so a span is downloaded once per node), else the registry through
//! the shared link, admitted in the requested priority class. Consecutive spans a caller
//! misses go in one range request (spans are adjacent in the blob). Bytes from here are
//! not yet checked: callers verify them against the span digest before serving or caching.

use std::ops::Range;
use std::sync::Arc;

use estargz::soci::Zinfo;
use registry::Client;

use crate::lazy::cache::{CacheKey, ChunkBytes, ChunkCache};
use crate::lazy::link::FetchKind;
use crate::lazy::observe;
use crate::lazy::source::BlobLocation;

/// Metrics kind label of span fetches.
const SOCI_KIND: &str = "soci";

/// Why span bytes could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SpanFetchError {
    #[error("no span {span} in the index")]
    NoSpan { span: usize },
    #[error("fetch {blob} bytes {}..{}: {source}", range.start, range.end)]
    Remote {
        blob: estargz::Digest,
        range: Range<u64>,
        source: Box<registry::Error>,
    },
    #[error("fetch {blob} bytes {}..{}: got {got} bytes", range.start, range.end)]
    Short {
        blob: estargz::Digest,
        range: Range<u64>,
        got: usize,
    },
    #[error("cache lookup task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One span's compressed bytes and whether they came over the network (not yet cached).
#[derive(Clone)]
pub struct SpanBytes {
    pub bytes: ChunkBytes,
    pub fetched: bool,
}

/// The blob, its index and the shared cache and link.
pub struct SpanSource {
    pub client: Client,
    pub location: BlobLocation,
    pub cache: Arc<ChunkCache>,
    pub zinfo: Zinfo,
}

impl SpanSource {
    /// The cache key of a span: its compressed bytes' digest.
    pub fn key(&self, span: usize) -> Option<CacheKey> {
        self.zinfo.digest(span).map(|d| CacheKey::Content(*d))
    }

    fn range(&self, span: usize) -> Result<Range<u64>, SpanFetchError> {
        self.zinfo
            .compressed_range(span)
            .ok_or(SpanFetchError::NoSpan { span })
    }

    /// Consecutive spans from `first` whose compressed bytes add up to about `bytes`
    /// (at least one span, none past the last).
    pub fn run_from(&self, first: usize, bytes: u64) -> Range<usize> {
        let count = self.zinfo.span_count();
        let mut end = first.saturating_add(1).min(count);
        let start_at = self.zinfo.compressed_range(first).map_or(0, |r| r.start);
        while end < count {
            match self.zinfo.compressed_range(end) {
                Some(r) if r.end.saturating_sub(start_at) <= bytes => end += 1,
                _ => break,
            }
        }
        first.min(end)..end
    }

    /// The compressed bytes of the consecutive spans `run`: cached ones from the cache,
    /// each gap between them with one range request of class `kind`.
    pub async fn compressed(
        &self,
        run: Range<usize>,
        kind: FetchKind,
    ) -> Result<Vec<SpanBytes>, SpanFetchError> {
        let mut wanted = Vec::with_capacity(run.len());
        for span in run.clone() {
            let range = self.range(span)?;
            let key = self.key(span).ok_or(SpanFetchError::NoSpan { span })?;
            wanted.push((key, range.end - range.start));
        }
        let cache = self.cache.clone();
        // `peek`: decoded spans are kept by the layer, compressed ones need not be in memory.
        let cached: Vec<Option<ChunkBytes>> = tokio::task::spawn_blocking(move || {
            wanted
                .iter()
                .map(|(key, len)| cache.peek(key, *len))
                .collect()
        })
        .await?;
        let mut out: Vec<Option<SpanBytes>> = cached
            .into_iter()
            .map(|b| {
                b.map(|bytes| SpanBytes {
                    bytes,
                    fetched: false,
                })
            })
            .collect();
        let missing: Vec<bool> = out.iter().map(Option::is_none).collect();
        // Spans are adjacent in the blob: every run of missing ones is one request.
        for gap in missing_runs(&missing, |_| true) {
            let ranges = (run.start + gap.start..run.start + gap.end)
                .map(|span| self.range(span))
                .collect::<Result<Vec<_>, _>>()?;
            let pieces = self.fetch_pieces(&ranges, kind).await?;
            for (slot, bytes) in out[gap].iter_mut().zip(pieces) {
                *slot = Some(SpanBytes {
                    bytes,
                    fetched: true,
                });
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// `ranges` (sorted, adjacent or overlapping in the blob) in one range request of
    /// class `kind`, cut into one piece each.
    pub async fn fetch_pieces(
        &self,
        ranges: &[Range<u64>],
        kind: FetchKind,
    ) -> Result<Vec<ChunkBytes>, SpanFetchError> {
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Ok(Vec::new());
        };
        let whole = first.start..last.end;
        let bytes = self.fetch(whole.clone(), kind).await?;
        ranges
            .iter()
            .map(|r| {
                let piece = usize::try_from(r.start - whole.start)
                    .ok()
                    .zip(usize::try_from(r.end - whole.start).ok())
                    .and_then(|(a, b)| bytes.get(a..b));
                piece.map(ChunkBytes::from).ok_or(SpanFetchError::Short {
                    blob: self.location.digest,
                    range: whole.clone(),
                    got: bytes.len(),
                })
            })
            .collect()
    }

    /// [`Self::fetch_pieces`], each piece handed to `piece(i, bytes)` as soon as its last
    /// byte is in (so the front of a long run is checked and decoded while the rest is on
    /// the wire). A body that breaks part way is asked for again from the first piece not
    /// handed out, with the retries of a plain range request.
    pub async fn fetch_pieces_streamed(
        &self,
        ranges: &[Range<u64>],
        kind: FetchKind,
        mut piece: impl FnMut(usize, ChunkBytes),
    ) -> Result<(), SpanFetchError> {
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Ok(());
        };
        let whole = first.start..last.end;
        let blob = self.location.digest;
        let asked = std::time::Instant::now();
        let ticket = self
            .cache
            .link()
            .admit_sized(kind, whole.end - whole.start)
            .await;
        let queued = asked.elapsed();
        let opening = (self.client).open_blob_range(&self.location.reference, &blob, whole.clone());
        let mut handed = 0;
        let mut buffer = bytes::BytesMut::new();
        let mut first_byte = None;
        let streamed: Result<(), registry::Error> = async {
            let mut body = observe::range_request(SOCI_KIND, opening).await?;
            while let Some(bytes) = body.next_piece().await? {
                first_byte.get_or_insert_with(|| asked.elapsed() - queued);
                buffer.extend_from_slice(&bytes);
                let have = whole.start + buffer.len() as u64;
                while let Some(r) = ranges.get(handed).filter(|r| r.end <= have) {
                    let (a, b) = (
                        (r.start - whole.start) as usize,
                        (r.end - whole.start) as usize,
                    );
                    piece(handed, ChunkBytes::from(&buffer[a..b]));
                    handed += 1;
                }
            }
            Ok(())
        }
        .await;
        drop(ticket);
        log_request(
            &blob,
            &whole,
            kind,
            queued,
            asked.elapsed(),
            "soci streamed range request",
        );
        observe::observer().fetched(SOCI_KIND, buffer.len() as u64);
        match (&streamed, first_byte) {
            // Unlike a collected body, a streamed one tells latency from transfer: it sizes
            // what the link takes as a small request ([`crate::lazy::link::Link::admit_sized`]).
            (Ok(()), Some(first_byte)) => {
                let total = asked.elapsed() - queued;
                self.cache
                    .link()
                    .record(buffer.len() as u64, first_byte, total);
            }
            (Err(error), _) => {
                tracing::debug!(%blob, %error, handed, "soci range body broke; asking for the rest");
            }
            _ => {}
        }
        if handed < ranges.len() {
            let rest = self.fetch_pieces(&ranges[handed..], kind).await?;
            for (i, bytes) in rest.into_iter().enumerate() {
                piece(handed + i, bytes);
            }
        }
        Ok(())
    }

    /// One range request of class `kind`: admitted on the shared link (so it waits while
    /// higher classes are on the wire), counted in the metrics.
    pub async fn fetch(
        &self,
        range: Range<u64>,
        kind: FetchKind,
    ) -> Result<bytes::Bytes, SpanFetchError> {
        self.fetch_from(&self.location.digest, range, kind).await
    }

    /// [`Self::fetch`] from another blob of the layer's repository (the index's own).
    pub async fn fetch_from(
        &self,
        blob: &estargz::Digest,
        range: Range<u64>,
        kind: FetchKind,
    ) -> Result<bytes::Bytes, SpanFetchError> {
        let link = self.cache.link();
        let asked = std::time::Instant::now();
        let ticket = link.admit_sized(kind, range.end - range.start).await;
        let admitted = asked.elapsed();
        let reading = self
            .client
            .read_blob_range(&self.location.reference, blob, range.clone());
        let bytes = observe::range_request(SOCI_KIND, reading)
            .await
            .map_err(|source| SpanFetchError::Remote {
                blob: *blob,
                range: range.clone(),
                source: Box::new(source),
            })?;
        drop(ticket);
        log_request(
            blob,
            &range,
            kind,
            admitted,
            asked.elapsed(),
            "soci range request",
        );
        // Not added to the link's estimates: this call cannot tell latency from transfer.
        observe::observer().fetched(SOCI_KIND, bytes.len() as u64);
        if u64::try_from(bytes.len()).ok() != Some(range.end - range.start) {
            return Err(SpanFetchError::Short {
                blob: *blob,
                range,
                got: bytes.len(),
            });
        }
        Ok(bytes)
    }
}

/// One range request at debug level: how long it queued on the link and took in all.
fn log_request(
    blob: &estargz::Digest,
    range: &Range<u64>,
    kind: FetchKind,
    queued: std::time::Duration,
    total: std::time::Duration,
    what: &str,
) {
    tracing::debug!(
        %blob, start = range.start, len = range.end - range.start, ?kind,
        queued_ms = queued.as_millis() as u64, total_ms = total.as_millis() as u64,
        "{what}"
    );
}

/// The runs of consecutive `missing` entries, a run going on at `j` only while
/// `joins(j)` (entry `j` is adjacent in the blob to entry `j - 1`).
pub fn missing_runs(missing: &[bool], joins: impl Fn(usize) -> bool) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < missing.len() {
        if !missing[i] {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < missing.len() && missing[j] && joins(j) {
            j += 1;
        }
        runs.push(i..j);
        i = j;
    }
    runs
}
/// The part of `range` in each of `spans`.
pub(super) fn wanted(
    zinfo: &estargz::soci::Zinfo,
    spans: Range<usize>,
    range: &Range<u64>,
) -> Vec<Range<u64>> {
    wanted_all(zinfo, spans, std::slice::from_ref(range))
        .into_iter()
        .map(|parts| parts.into_iter().next().unwrap_or(0..0))
        .collect()
}

/// The parts of `ranges` in each of `spans` (non-empty ones only).
pub(super) fn wanted_all(
    zinfo: &estargz::soci::Zinfo,
    spans: Range<usize>,
    ranges: &[Range<u64>],
) -> Vec<Vec<Range<u64>>> {
    spans
        .map(|s| {
            let Some(u) = zinfo.uncompressed_range(s) else {
                return Vec::new();
            };
            ranges
                .iter()
                .map(|r| r.start.max(u.start)..u.end.min(r.end))
                .filter(|r| r.start < r.end)
                .collect()
        })
        .collect()
}
