//! Loading chunks: from the cache, else by joining a fetch already under way, else by
//! fetching the missing chunks' compressed bytes (adjacent chunks in one range request,
//! received and verified chunk by chunk in `receive.rs`), with the chunks of the
//! readahead window (`window.rs`) that no cache holds and no fetch is getting.

use std::collections::hash_map::Entry;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use estargz::ChunkInfo;
use futures::future::FutureExt;
use tokio::sync::oneshot;

use super::fetch_outcome::{span, ChunkResult, FetchError, SharedChunk};
use super::receive::{GroupFetch, Member};
use super::window::Bounds;
use super::{FetchKind, Inner, LayerError};
use crate::lazy::cache::{CacheKey, ChunkBytes};

impl Inner {
    /// The verified bytes of each of `chunks`, in order, fetching what no cache holds.
    pub(super) async fn load_chunks(
        self: &Arc<Self>,
        chunks: &[ChunkInfo],
        kind: FetchKind,
    ) -> Result<Vec<ChunkBytes>, LayerError> {
        self.load_chunks_then(chunks, None, kind).await
    }

    /// [`Inner::load_chunks`], also fetching `next` (the chunk a sequential reader needs
    /// next) when no cache holds it, without waiting for it: in the same request as
    /// missed chunks it follows, so it streams after them instead of sharing the link
    /// with them and delaying the chunk the reader waits for.
    pub(super) async fn load_chunks_then(
        self: &Arc<Self>,
        chunks: &[ChunkInfo],
        next: Option<&ChunkInfo>,
        kind: FetchKind,
    ) -> Result<Vec<ChunkBytes>, LayerError> {
        let keys: Vec<CacheKey> = chunks
            .iter()
            .map(|c| CacheKey::for_chunk(self.blob, c))
            .collect();
        let mut found: Vec<Option<ChunkBytes>> = keys
            .iter()
            .zip(chunks)
            .map(|(key, chunk)| self.cache.get_memory(key, chunk.size))
            .collect();
        let in_memory = found.iter().flatten().count();
        self.look_on_disk(chunks, &keys, &mut found).await?;
        crate::lazy::observe::observer().chunk_lookups(
            found.len(),
            in_memory,
            found.iter().flatten().count(),
        );
        let wanted = chunks.len();
        let mut chunks = chunks.to_vec();
        let mut keys = keys;
        // `next` counts as missed for the window: a sequential reader's next chunk.
        if let Some(next) = next {
            let key = CacheKey::for_chunk(self.blob, next);
            if !keys.contains(&key) {
                if let Some(next) = self.uncached(vec![next.clone()]).await.pop() {
                    chunks.push(next);
                    keys.push(key);
                    found.push(None);
                }
            }
        }
        let ahead = self.window_after_miss(&chunks, &keys, &found, kind).await;
        keys.extend(ahead.iter().map(|c| CacheKey::for_chunk(self.blob, c)));
        chunks.extend(ahead);
        found.resize(chunks.len(), None);
        let mut pending = self.join_or_start(&chunks, &keys, &mut found, kind);
        // `next` and the window's chunks are fetched with the missed ones; nobody waits
        // for them.
        pending.retain(|(i, _)| *i < wanted);
        found.truncate(wanted);
        // A reader waiting on the network keeps background fetching away.
        let _waiting =
            (kind == FetchKind::OnDemand && !pending.is_empty()).then(|| self.activity.on_demand());
        for (i, chunk) in pending {
            found[i] = Some(chunk.await?);
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// The window's bounds, with the link's estimate applied.
    fn window_bounds(&self) -> Bounds {
        Bounds::new(
            self.config.readahead_min_bytes,
            self.config.readahead_max_bytes,
        )
        .for_link(self.cache.link().round_trip_bytes())
    }

    /// When an on-demand read misses chunks that nothing is fetching, the chunks of the
    /// readahead window to fetch with them (none cached or in flight).
    async fn window_after_miss(
        &self,
        chunks: &[ChunkInfo],
        keys: &[CacheKey],
        found: &[Option<ChunkBytes>],
        kind: FetchKind,
    ) -> Vec<ChunkInfo> {
        if kind != FetchKind::OnDemand || !self.config.readahead {
            return Vec::new();
        }
        let missed = {
            let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            chunks
                .iter()
                .zip(keys.iter().zip(found))
                .filter(|(_, (key, found))| found.is_none() && !inflight.contains_key(key))
                .map(|(chunk, _)| chunk.compressed.start)
                .min()
        };
        let Some(at) = missed else {
            return Vec::new();
        };
        let end = chunks.iter().map(|c| c.compressed.end).max().unwrap_or(at);
        let bounds = self.window_bounds();
        let range = self.window.on_miss(at, end, bounds);
        let ahead = self.uncached_within(range.clone(), at).await;
        tracing::debug!(
            blob = %self.blob,
            at,
            window = range.end - range.start,
            first = bounds.first,
            max = bounds.max,
            chunks = ahead.len(),
            "miss"
        );
        ahead
    }

    /// A read starting at blob offset `at` entered the second half of the window: fetch
    /// the next window now, without waiting for it.
    pub(super) fn read_ahead_of(self: &Arc<Self>, at: u64) {
        let Some(range) = self.window.on_read(at, self.window_bounds()) else {
            return;
        };
        let inner = self.clone();
        tokio::spawn(async move {
            let chunks = inner.uncached_within(range, at).await;
            if chunks.is_empty() {
                return;
            }
            let keys: Vec<CacheKey> = chunks
                .iter()
                .map(|c| CacheKey::for_chunk(inner.blob, c))
                .collect();
            let mut found = vec![None; chunks.len()];
            // Started, not awaited: the readers that need them join.
            drop(inner.join_or_start(&chunks, &keys, &mut found, FetchKind::OnDemand));
        });
    }

    /// The chunks lying whole in blob `range`, in the directory of the file whose chunk
    /// starts at `read_at`, that no cache holds and no fetch is getting.
    async fn uncached_within(&self, range: Range<u64>, read_at: u64) -> Vec<ChunkInfo> {
        let Some(dir) = self.order.dir_at(read_at).filter(|_| !range.is_empty()) else {
            return Vec::new();
        };
        let within = self
            .order
            .within(&self.index, range, dir)
            .cloned()
            .collect();
        self.uncached(within).await
    }

    /// Those of `candidates` that no cache holds and no fetch is getting.
    async fn uncached(&self, candidates: Vec<ChunkInfo>) -> Vec<ChunkInfo> {
        let candidates: Vec<ChunkInfo> = {
            let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            candidates
                .into_iter()
                .filter(|c| {
                    let key = CacheKey::for_chunk(self.blob, c);
                    !inflight.contains_key(&key) && self.cache.get_memory(&key, c.size).is_none()
                })
                .collect()
        };
        if candidates.is_empty() || !self.cache.has_disk() {
            return candidates;
        }
        let (cache, blob) = (self.cache.clone(), self.blob);
        // Disk lookups stat files: off the async threads. A failed task fetches nothing.
        tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .filter(|c| !cache.contains(&CacheKey::for_chunk(blob, c), c.size))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    async fn look_on_disk(
        &self,
        chunks: &[ChunkInfo],
        keys: &[CacheKey],
        found: &mut [Option<ChunkBytes>],
    ) -> Result<(), LayerError> {
        let missing: Vec<(usize, CacheKey, u64)> = found
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_none())
            .map(|(i, _)| (i, keys[i], chunks[i].size))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let cache = self.cache.clone();
        let hits = tokio::task::spawn_blocking(move || {
            missing
                .into_iter()
                .map(|(i, key, len)| (i, cache.get(&key, len)))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|source| LayerError::Task {
            blob: self.blob,
            source,
        })?;
        for (i, hit) in hits {
            found[i] = hit;
        }
        Ok(())
    }

    /// Joins fetches under way for missing chunks and starts fetches for the rest.
    /// Returns, per missing chunk index, the fetch's promise of that chunk.
    fn join_or_start(
        self: &Arc<Self>,
        chunks: &[ChunkInfo],
        keys: &[CacheKey],
        found: &mut [Option<ChunkBytes>],
        kind: FetchKind,
    ) -> Vec<(usize, SharedChunk)> {
        // Held while fetches are spawned and registered, so a fetch cannot finish and
        // unregister before it is registered.
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = Vec::new();
        let mut mine = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if found[i].is_some() {
                continue;
            }
            if let Some((_, chunk)) = inflight.get(key) {
                pending.push((i, chunk.clone()));
            } else if let Some(bytes) = self.cache.get_memory(key, chunks[i].size) {
                found[i] = Some(bytes);
            } else {
                mine.push(i);
            }
        }
        let runs = coalesce(chunks, &mine, max_request_bytes(kind));
        // Runs apart from each other share one multi-range request where the source
        // serves those; else each is a request of its own.
        let per_request = if self.source.multi_range() {
            MAX_PARTS
        } else {
            1
        };
        for batch in batch_runs(chunks, &runs, per_request, max_request_bytes(kind)) {
            let id = self.next_fetch_id.fetch_add(1, Ordering::Relaxed);
            let mut members = Vec::with_capacity(batch.len());
            for run in batch {
                let mut run_members = Vec::with_capacity(run.len());
                for &i in run {
                    // A chunk asked for twice in one read is fetched once.
                    let promise = match inflight.entry(keys[i]) {
                        Entry::Occupied(taken) => taken.get().1.clone(),
                        Entry::Vacant(free) => {
                            let (promise, answer) = self.promise(&chunks[i]);
                            run_members.push(Member::new(keys[i], chunks[i].clone(), answer));
                            free.insert((id, promise)).1.clone()
                        }
                    };
                    pending.push((i, promise));
                }
                if !run_members.is_empty() {
                    members.push(run_members);
                }
            }
            tokio::spawn(GroupFetch::new(self.clone(), id, members, kind).run());
        }
        pending
    }

    /// A chunk's promise and the sender that keeps it. A fetch that ends without an answer
    /// for the chunk (its task failed) leaves the chunk [`FetchError::Lost`].
    fn promise(&self, chunk: &ChunkInfo) -> (SharedChunk, oneshot::Sender<ChunkResult>) {
        let (answer, promised) = oneshot::channel();
        let lost = FetchError::Lost {
            blob: self.blob,
            offset: chunk.compressed.start,
        };
        let promise = async move { promised.await.unwrap_or_else(|_| Err(Arc::new(lost))) };
        (promise.boxed().shared(), answer)
    }

    /// Forgets fetch `id`'s promises of `keys` (once their chunks are cached, or failed
    /// a while ago), so later reads look in the cache or fetch anew.
    pub(super) fn unregister(&self, id: u64, keys: impl IntoIterator<Item = CacheKey>) {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            if inflight.get(&key).is_some_and(|(owner, _)| *owner == id) {
                inflight.remove(&key);
            }
        }
    }
}

/// Most runs of chunks asked for in one multi-range request (keeps the header short).
const MAX_PARTS: usize = 32;

/// Longest range asked for in one request: big prefetches become several requests so
/// each finishes within the fetch timeout, and prefetch and background requests are
/// shorter still, so an on-demand read never waits long for one on the wire to end.
fn max_request_bytes(kind: FetchKind) -> u64 {
    match kind {
        FetchKind::OnDemand => 32 << 20,
        FetchKind::Prefetch | FetchKind::Background => 8 << 20,
    }
}

/// Groups chunk indices into runs whose compressed ranges touch or overlap (up to
/// `max_bytes` per run), so each run is one range request.
fn coalesce(chunks: &[ChunkInfo], indices: &[usize], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut sorted = indices.to_vec();
    sorted.sort_by_key(|&i| chunks[i].compressed.start);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let (mut group_start, mut group_end) = (0, 0);
    for i in sorted {
        let range = &chunks[i].compressed;
        let joins = range.start <= group_end && range.end.saturating_sub(group_start) <= max_bytes;
        match groups.last_mut() {
            Some(group) if joins => group.push(i),
            _ => {
                groups.push(vec![i]);
                group_start = range.start;
            }
        }
        group_end = group_end.max(range.end);
    }
    groups
}

/// Splits runs (each from [`coalesce`]) into batches of at most `max_runs` runs and, past
/// a batch's first run, `max_bytes` of compressed data: one request per batch.
fn batch_runs<'a>(
    chunks: &[ChunkInfo],
    runs: &'a [Vec<usize>],
    max_runs: usize,
    max_bytes: u64,
) -> Vec<&'a [Vec<usize>]> {
    let run_bytes = |run: &Vec<usize>| {
        let range = span(run.iter().map(|&i| &chunks[i].compressed));
        range.end - range.start
    };
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (k, run) in runs.iter().enumerate() {
        let size = run_bytes(run);
        let full = k - start >= max_runs || bytes.saturating_add(size) > max_bytes;
        if k > start && full {
            batches.push(&runs[start..k]);
            (start, bytes) = (k, 0);
        }
        bytes = bytes.saturating_add(size);
    }
    if start < runs.len() {
        batches.push(&runs[start..]);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(compressed: Range<u64>) -> ChunkInfo {
        ChunkInfo {
            file_offset: 0,
            size: 1,
            compressed,
            inner_offset: 0,
            digest: None,
        }
    }

    #[test]
    fn coalesces_touching_ranges() {
        let chunks = [
            chunk(0..10),
            chunk(10..20),
            chunk(25..30),
            chunk(25..30),
            chunk(40..50),
        ];
        let cases = [
            ("adjacent", vec![0, 1], vec![vec![0, 1]]),
            ("gap splits", vec![1, 2], vec![vec![1], vec![2]]),
            ("shared member", vec![3, 2], vec![vec![3, 2]]),
            ("unsorted input", vec![4, 1, 0], vec![vec![0, 1], vec![4]]),
        ];
        for (name, indices, want) in cases {
            assert_eq!(coalesce(&chunks, &indices, 100), want, "{name}");
        }
        let run = [chunk(0..10), chunk(10..20), chunk(20..30)];
        let capped = coalesce(&run, &[0, 1, 2], 20);
        assert_eq!(capped, vec![vec![0, 1], vec![2]], "run capped at 20 bytes");
        assert_eq!(span([0..10, 25..30].iter()), 0..30);
    }

    #[test]
    fn batches_runs_by_count_and_bytes() {
        let chunks = [chunk(0..10), chunk(20..30), chunk(40..50), chunk(60..100)];
        let runs = vec![vec![0], vec![1], vec![2], vec![3]];
        let sizes =
            |batches: Vec<&[Vec<usize>]>| batches.iter().map(|b| b.len()).collect::<Vec<_>>();
        assert_eq!(
            sizes(batch_runs(&chunks, &runs, 1, 1000)),
            [1, 1, 1, 1],
            "single"
        );
        assert_eq!(
            sizes(batch_runs(&chunks, &runs, 3, 1000)),
            [3, 1],
            "by count"
        );
        assert_eq!(
            sizes(batch_runs(&chunks, &runs, 10, 30)),
            [3, 1],
            "by bytes"
        );
        assert_eq!(
            sizes(batch_runs(&chunks, &runs, 10, 5)),
            [1, 1, 1, 1],
            "one run each at least"
        );
        assert!(batch_runs(&chunks, &[], 10, 5).is_empty());
    }
}
