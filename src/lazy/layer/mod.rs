//! One lazily read eStargz layer: its verified TOC and index over a [`BlobSource`], and
//! file reads that fetch, verify and cache only the chunks they need.

mod activity;
mod background_step;
mod backing;
mod fetch;
mod fetch_outcome;
mod layer_config;
mod open;
mod receive;
mod segments;
#[cfg(test)]
mod tests;
pub(crate) mod window;
#[cfg(test)]
mod window_tests;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estargz::{
    ChunkError, ChunkInfo, Digest, EntryId, EntryType, FooterError, Format, Index, IndexError,
    TocError,
};

use crate::lazy::cache::{CacheKey, ChunkBytes, ChunkCache};
use crate::lazy::fallback::FallbackReason;
use crate::lazy::source::{BlobSource, RemoteError};

pub use crate::lazy::link::FetchKind;
pub use fetch_outcome::FetchError;
pub use layer_config::LayerConfig;

/// Errors opening or reading a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("layer {blob}: no eStargz footer: {source}")]
    Footer {
        blob: Digest,
        #[source]
        source: FooterError,
    },
    #[error("layer {blob}: toc offset {toc_offset} is past the footer at {footer_start}")]
    BadTocRange {
        blob: Digest,
        toc_offset: u64,
        footer_start: u64,
    },
    #[error("layer {blob}: toc region of {size} bytes exceeds the {max}-byte limit")]
    TocTooLarge { blob: Digest, size: u64, max: u64 },
    #[error("layer {blob}: decode toc: {source}")]
    Toc {
        blob: Digest,
        #[source]
        source: TocError,
    },
    #[error("layer {blob}: no toc digest label; refusing an unverifiable layer")]
    MissingTocDigest { blob: Digest },
    #[error("layer {blob}: toc digest {actual} does not match label {expected}")]
    TocDigestMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {blob}: invalid toc: {source}")]
    Index {
        blob: Digest,
        #[source]
        source: IndexError,
    },
    #[error("layer {blob}: entry {file} is not a regular file")]
    NotAFile { blob: Digest, file: EntryId },
    #[error("layer {blob}: read of entry {file} at {offset} timed out after {timeout:?}")]
    Timeout {
        blob: Digest,
        file: EntryId,
        offset: u64,
        timeout: Duration,
    },
    #[error("layer {blob}: chunk at file offset {file_offset} has {got} bytes, expected {want}")]
    ChunkSize {
        blob: Digest,
        file_offset: u64,
        got: usize,
        want: u64,
    },
    #[error(transparent)]
    Fetch(#[from] Arc<FetchError>),
    #[error("layer {blob}: background task failed: {source}")]
    Task {
        blob: Digest,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<&LayerError> for FallbackReason {
    fn from(error: &LayerError) -> FallbackReason {
        match error {
            LayerError::Remote(_) => FallbackReason::Registry,
            LayerError::Footer { .. } => FallbackReason::NotEstargz,
            LayerError::BadTocRange { .. }
            | LayerError::TocTooLarge { .. }
            | LayerError::Toc { .. }
            | LayerError::Index { .. }
            | LayerError::NotAFile { .. }
            | LayerError::ChunkSize { .. } => FallbackReason::InvalidToc,
            LayerError::MissingTocDigest { .. } => FallbackReason::NoTocDigest,
            LayerError::TocDigestMismatch { .. } => FallbackReason::TocMismatch,
            LayerError::Timeout { .. } => FallbackReason::Timeout,
            LayerError::Fetch(fetch) => match fetch.as_ref() {
                FetchError::Remote { .. } => FallbackReason::Registry,
                FetchError::TimedOut { .. } => FallbackReason::Timeout,
                FetchError::Chunk { .. } | FetchError::Lost { .. } => FallbackReason::InvalidToc,
                FetchError::Task { .. } => FallbackReason::Internal,
            },
            LayerError::Task { .. } => FallbackReason::Internal,
        }
    }
}

impl LayerError {
    /// True when a chunk's bytes did not match its digest.
    pub fn is_digest_mismatch(&self) -> bool {
        matches!(
            self,
            LayerError::Fetch(fetch) if matches!(
                fetch.as_ref(),
                FetchError::Chunk { source, .. } if matches!(**source, ChunkError::DigestMismatch { .. })
            )
        )
    }
}

/// A lazily read layer. Cheap to clone; clones share the index, cache and fetches.
#[derive(Clone)]
pub struct Layer {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn BlobSource>,
    blob: Digest,
    cache: Arc<ChunkCache>,
    config: LayerConfig,
    format: Format,
    index: Index,
    toc_digest: Digest,
    /// Where the TOC starts: every file's data lies before it.
    toc_offset: u64,
    /// Chunks being fetched, each with the id of its fetch and the fetch's promise of it.
    inflight: Mutex<HashMap<CacheKey, (u64, fetch_outcome::SharedChunk)>>,
    next_fetch_id: std::sync::atomic::AtomicU64,
    activity: activity::Activity,
    /// The readahead window and the blob-order list of chunks it picks from.
    window: window::Window,
    order: window::BlobOrder,
    background: Mutex<background_step::Cursor>,
    /// Files whose passthrough backing copy is being written.
    assembling: Mutex<std::collections::HashSet<EntryId>>,
}

/// A [`Layer`] that does not keep it alive (background work must not outlive a mount).
#[derive(Clone)]
pub struct WeakLayer(std::sync::Weak<Inner>);

impl WeakLayer {
    /// The layer, while anything else still holds it.
    pub fn upgrade(&self) -> Option<Layer> {
        self.0.upgrade().map(|inner| Layer { inner })
    }

    /// Whether this is a handle of `layer`.
    pub fn is(&self, layer: &Layer) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(&layer.inner))
    }
}

impl Layer {
    /// A handle that does not keep the layer alive.
    pub fn downgrade(&self) -> WeakLayer {
        WeakLayer(Arc::downgrade(&self.inner))
    }

    /// Reads the footer and TOC of `source`, verifies the TOC against
    /// `expected_toc_digest` (required unless `config.verify` is false) and builds the
    /// index. Two range requests.
    pub async fn open(
        source: Arc<dyn BlobSource>,
        expected_toc_digest: Option<Digest>,
        cache: Arc<ChunkCache>,
        config: LayerConfig,
    ) -> Result<Layer, LayerError> {
        let blob = source.digest();
        if expected_toc_digest.is_none() && config.verify {
            return Err(LayerError::MissingTocDigest { blob });
        }
        let layer = Layer::open_unchecked(source, cache, config).await?;
        layer.check_toc(expected_toc_digest)?;
        Ok(layer)
    }

    /// Like [`Layer::open`] without checking the TOC's digest: for opening a layer before
    /// its label is known. Call [`Layer::check_toc`] before serving it.
    pub async fn open_unchecked(
        source: Arc<dyn BlobSource>,
        cache: Arc<ChunkCache>,
        config: LayerConfig,
    ) -> Result<Layer, LayerError> {
        let opened = open::read_toc(&source, &cache, &config).await?;
        Ok(Layer {
            inner: Arc::new(Inner {
                blob: source.digest(),
                source,
                cache,
                config,
                format: opened.format,
                order: window::BlobOrder::new(&opened.index),
                index: opened.index,
                toc_digest: opened.toc_digest,
                toc_offset: opened.toc_offset,
                inflight: Mutex::new(HashMap::new()),
                next_fetch_id: std::sync::atomic::AtomicU64::new(0),
                activity: activity::Activity::new(),
                window: window::Window::default(),
                background: Mutex::new(background_step::Cursor::default()),
                assembling: Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }

    /// Checks the TOC against the digest its label gives (required unless verification
    /// is off in the config).
    pub fn check_toc(&self, expected: Option<Digest>) -> Result<(), LayerError> {
        let inner = &self.inner;
        open::check_toc(inner.blob, inner.toc_digest, expected, inner.config.verify)
    }

    /// The path tree of the layer.
    pub fn index(&self) -> &Index {
        &self.inner.index
    }

    /// Digest of the blob.
    pub fn blob_digest(&self) -> Digest {
        self.inner.blob
    }

    /// sha256 of the TOC JSON (verified against the label when there was one).
    pub fn toc_digest(&self) -> Digest {
        self.inner.toc_digest
    }

    /// Blob offset of the TOC: the end of the file data.
    pub fn toc_offset(&self) -> u64 {
        self.inner.toc_offset
    }

    /// Size of the blob in bytes.
    pub fn blob_size(&self) -> u64 {
        self.inner.source.size()
    }

    /// Compressed bytes fetched for `kind` since the layer was opened.
    pub fn fetched_bytes(&self, kind: FetchKind) -> u64 {
        self.inner.activity.fetched(kind)
    }

    /// Whether a request of a class above `kind` is on the link this layer shares with
    /// the others of its cache.
    pub fn link_busy_above(&self, kind: FetchKind) -> bool {
        self.inner.cache.link().busy_above(kind)
    }

    /// Whether a read is waiting on the network, or was less than `quiet` ago.
    pub fn busy_within(&self, quiet: Duration) -> bool {
        self.inner.activity.busy_within(quiet)
    }

    /// Reads up to `len` bytes of regular file `file` from `offset` (fewer at the end of
    /// the file). Every byte comes from a chunk verified against its digest. Fails with
    /// [`LayerError::Timeout`] when it takes longer than the configured read timeout.
    pub async fn read(&self, file: EntryId, offset: u64, len: u32) -> Result<Vec<u8>, LayerError> {
        let timeout = self.inner.config.read_timeout;
        match tokio::time::timeout(timeout, self.read_unbounded(file, offset, len)).await {
            Ok(result) => result,
            Err(_) => Err(LayerError::Timeout {
                blob: self.inner.blob,
                file,
                offset,
                timeout,
            }),
        }
    }

    /// Fetches and caches every chunk whose compressed bytes lie inside `blob_range`
    /// (e.g. everything before `.prefetch.landmark`), in as few requests as adjacency allows.
    pub async fn prefetch(&self, blob_range: Range<u64>) -> Result<(), LayerError> {
        let chunks: Vec<ChunkInfo> = self
            .inner
            .index
            .iter()
            .flat_map(|(_, entry)| entry.chunks())
            .filter(|c| {
                blob_range.start <= c.compressed.start && c.compressed.end <= blob_range.end
            })
            .cloned()
            .collect();
        self.inner
            .load_chunks(&chunks, FetchKind::Prefetch)
            .await
            .map(drop)
    }

    /// Fetches and caches every chunk of `files` (a learned file list), in as few
    /// requests as adjacency allows.
    pub async fn prefetch_files(&self, files: &[EntryId]) -> Result<(), LayerError> {
        let index = &self.inner.index;
        let chunks: Vec<ChunkInfo> = files
            .iter()
            .flat_map(|file| index.chunks(*file))
            .cloned()
            .collect();
        self.inner
            .load_chunks(&chunks, FetchKind::Prefetch)
            .await
            .map(drop)
    }

    async fn read_unbounded(
        &self,
        file: EntryId,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, LayerError> {
        let inner = &self.inner;
        let entry = inner
            .index
            .entry(file)
            .filter(|e| e.kind == EntryType::Reg)
            .ok_or(LayerError::NotAFile {
                blob: inner.blob,
                file,
            })?;
        let end = offset.saturating_add(u64::from(len)).min(entry.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let wanted = offset..end;
        let all = entry.chunks();
        let covered = covering(all, &wanted);
        let ahead = inner.config.readahead;
        let next = ahead
            .then(|| readahead(all, covered.clone(), &wanted))
            .flatten();
        let chunks = &all[covered];
        if ahead {
            if let Some(first) = chunks.first() {
                inner.read_ahead_of(first.compressed.start);
            }
        }
        let data = inner
            .load_chunks_then(chunks, next, FetchKind::OnDemand)
            .await?;
        assemble(inner.blob, chunks, &data, &wanted)
    }
}

/// The chunk after the covered ones, when this read enters the last covered chunk (covers
/// its first byte): a sequential reader then has the next chunk fetched while the one it
/// entered is still arriving, so the link never idles a round trip between chunks. Once
/// per chunk, not once per read; reads inside a chunk (random access) never trigger it.
fn readahead<'a>(
    chunks: &'a [ChunkInfo],
    covered: Range<usize>,
    wanted: &Range<u64>,
) -> Option<&'a ChunkInfo> {
    let last = chunks.get(covered.end.checked_sub(1)?)?;
    let enters = wanted.start <= last.file_offset && last.file_offset < wanted.end;
    enters.then(|| chunks.get(covered.end)).flatten()
}

/// Indices of the chunks (sorted by file offset) overlapping `wanted`.
fn covering(chunks: &[ChunkInfo], wanted: &Range<u64>) -> Range<usize> {
    let first = chunks.partition_point(|c| c.file_offset.saturating_add(c.size) <= wanted.start);
    let count = chunks[first..].partition_point(|c| c.file_offset < wanted.end);
    first..first + count
}

/// Copies `wanted` out of the chunks' bytes, each of which must be its chunk's size.
fn assemble(
    blob: Digest,
    chunks: &[ChunkInfo],
    data: &[ChunkBytes],
    wanted: &Range<u64>,
) -> Result<Vec<u8>, LayerError> {
    let mut out = Vec::with_capacity(usize::try_from(wanted.end - wanted.start).unwrap_or(0));
    for (chunk, bytes) in chunks.iter().zip(data) {
        let from = wanted.start.max(chunk.file_offset) - chunk.file_offset;
        let to = wanted.end.min(chunk.file_offset + chunk.size) - chunk.file_offset;
        let slice = usize::try_from(from)
            .ok()
            .zip(usize::try_from(to).ok())
            .filter(|_| bytes.len() as u64 == chunk.size)
            .and_then(|(from, to)| bytes.get(from..to))
            .ok_or(LayerError::ChunkSize {
                blob,
                file_offset: chunk.file_offset,
                got: bytes.len(),
                want: chunk.size,
            })?;
        out.extend_from_slice(slice);
    }
    Ok(out)
}
