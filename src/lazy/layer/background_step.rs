//! Background fetching of one layer: walks its chunks in TOC order (which is blob order)
//! and fetches the ones no cache holds, a bounded amount per step, so that a scheduler
//! can interleave layers and pause for on-demand reads between steps.

use std::sync::{Arc, PoisonError};

use estargz::{ChunkInfo, EntryId};

use super::{FetchKind, Inner, Layer, LayerError};

/// How far background fetching of a layer has got: every chunk of the entries before
/// `entry`, and of `entry` the chunks before `chunk`, is cached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    entry: usize,
    chunk: usize,
}

impl Layer {
    /// Fetches the next uncached chunks of the layer, about `max_bytes` of compressed
    /// data, into the disk cache. Returns the compressed bytes fetched, or `None` when
    /// every chunk is cached. A failed step is retried from the same place next time.
    pub async fn fetch_background_step(&self, max_bytes: u64) -> Result<Option<u64>, LayerError> {
        let start = *self
            .inner
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let inner = self.inner.clone();
        let (chunks, next) =
            tokio::task::spawn_blocking(move || inner.uncached_from(start, max_bytes))
                .await
                .map_err(|source| LayerError::Task {
                    blob: self.inner.blob,
                    source,
                })?;
        let fetched: u64 = chunks
            .iter()
            .map(|c| c.compressed.end.saturating_sub(c.compressed.start))
            .sum();
        if !chunks.is_empty() {
            self.inner
                .load_chunks(&chunks, FetchKind::Background)
                .await?;
        }
        *self
            .inner
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = next;
        Ok((!chunks.is_empty()).then_some(fetched))
    }

    /// Whether background fetching has walked the whole layer (every chunk cached).
    pub fn background_complete(&self) -> bool {
        let cursor = self
            .inner
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cursor.entry >= self.inner.index.len()
    }
}

impl Inner {
    /// From `start`, the uncached chunks up to about `max_bytes` of compressed data, and
    /// the cursor after them (blocking: checks the disk cache).
    fn uncached_from(self: &Arc<Self>, start: Cursor, max_bytes: u64) -> (Vec<ChunkInfo>, Cursor) {
        let mut picked = Vec::new();
        let mut bytes = 0u64;
        let mut cursor = start;
        while cursor.entry < self.index.len() {
            let chunks = EntryId::try_from(cursor.entry)
                .map(|id| self.index.chunks(id))
                .unwrap_or_default();
            while let Some(chunk) = chunks.get(cursor.chunk) {
                if bytes >= max_bytes {
                    return (picked, cursor);
                }
                cursor.chunk += 1;
                let key = crate::lazy::cache::CacheKey::for_chunk(self.blob, chunk);
                if !self.cache.contains(&key, chunk.size) {
                    bytes += chunk.compressed.end.saturating_sub(chunk.compressed.start);
                    picked.push(chunk.clone());
                }
            }
            cursor = Cursor {
                entry: cursor.entry + 1,
                chunk: 0,
            };
        }
        (picked, cursor)
    }
}
