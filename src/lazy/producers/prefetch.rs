//! Prefetch at mount (PROTOCOL.md section 3): which blob range a freshly mounted layer
//! fetches before it is reported ready, and waiting for that within a bound.
//!
//! `.prefetch.landmark` marks the end of the prioritized files; `.no.prefetch.landmark`
//! turns prefetch off; a layer with neither uses ctr-remote's `stargz.prefetch` size label.
//! Whatever the landmarks say, the few files the container runtime itself reads before
//! the entrypoint starts ([`RUNTIME_FILES`]) are fetched too, so that container start
//! does not wait a round trip to the registry for each.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;

use crate::lazy::layer::Layer;
use crate::snapshot::Labels;

/// ctr-remote's label: bytes from the start of the blob to prefetch without landmarks.
pub const PREFETCH_SIZE_LABEL: &str = "containerd.io/snapshot/remote/stargz.prefetch";

/// Default bound on waiting for the prefetch before a mount is reported ready.
pub const DEFAULT_PREFETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Prefetch settings (the `[prefetch]` table of the daemon config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PrefetchConfig {
    /// Prefetch the prioritized files at mount. Default true.
    pub enable: bool,
    /// Longest wait for the prefetch before the mount is reported ready, in seconds
    /// (fractions allowed); a slower prefetch goes on in the background. Default 10.
    #[serde(deserialize_with = "crate::config::seconds")]
    pub timeout: Duration,
    /// On an image's first lazy Prepare, open (and prefetch) the layers its labels list
    /// above it in parallel, instead of one by one as containerd prepares them.
    /// Default true.
    pub open_layers_ahead: bool,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            enable: true,
            timeout: DEFAULT_PREFETCH_TIMEOUT,
            open_layers_ahead: true,
        }
    }
}

/// Files containerd reads from an image's root filesystem while it sets a container up
/// (user and supplementary groups), before the entrypoint runs. A few hundred bytes.
pub const RUNTIME_FILES: [&str; 2] = ["etc/passwd", "etc/group"];

/// Every blob range to fetch before a layer is reported ready: [`prefetch_range`], and
/// the chunks of the layer's [`RUNTIME_FILES`] that lie outside it.
pub fn prefetch_ranges(
    index: &estargz::Index,
    toc_offset: u64,
    labels: &Labels,
) -> Vec<Range<u64>> {
    let main = prefetch_range(index, toc_offset, labels);
    let inside_main = |r: &Range<u64>| {
        main.as_ref()
            .is_some_and(|m| m.start <= r.start && r.end <= m.end)
    };
    let runtime = RUNTIME_FILES
        .iter()
        .filter_map(|path| index.lookup(path))
        .flat_map(|file| index.chunks(file))
        .map(|chunk| chunk.compressed.clone())
        .filter(|range| !inside_main(range));
    main.clone().into_iter().chain(runtime).collect()
}

/// The blob range to prefetch for a layer with `index`, whose data ends at `toc_offset`.
pub fn prefetch_range(
    index: &estargz::Index,
    toc_offset: u64,
    labels: &Labels,
) -> Option<Range<u64>> {
    if let Some(end) = index.prefetch_landmark_offset() {
        return (end > 0).then_some(0..end);
    }
    if index.has_no_prefetch_landmark() {
        return None;
    }
    let value = labels.get(PREFETCH_SIZE_LABEL)?;
    match value.trim().parse::<u64>() {
        Ok(size) if size > 0 => Some(0..size.min(toc_offset)),
        Ok(_) => None,
        Err(_) => {
            tracing::warn!(
                label = PREFETCH_SIZE_LABEL,
                value,
                "ignoring bad prefetch size"
            );
            None
        }
    }
}

/// What happened to a layer's prefetch by the time its mount was reported ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchOutcome {
    /// Nothing to prefetch (or prefetch disabled).
    None,
    /// The range is cached.
    Done,
    /// Still running in the background after the timeout.
    Pending,
    /// Failed; reads fetch on demand.
    Failed,
}

/// Starts fetching `ranges` of `layer` (in parallel) and waits for them at most
/// `timeout`. The fetch is a task of its own, so it goes on (filling the cache) when the
/// wait gives up.
pub async fn prefetch(
    layer: &Layer,
    ranges: Vec<Range<u64>>,
    timeout: Duration,
) -> PrefetchOutcome {
    let digest = layer.blob_digest();
    let bytes: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    let task = tokio::spawn(fetch_all(layer.clone(), ranges));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(()))) => {
            tracing::debug!(%digest, bytes, "prefetched");
            PrefetchOutcome::Done
        }
        Ok(Ok(Err(error))) => {
            tracing::warn!(%digest, %error, "prefetch failed; reads fetch on demand");
            PrefetchOutcome::Failed
        }
        Ok(Err(error)) => {
            tracing::warn!(%digest, %error, "prefetch task failed; reads fetch on demand");
            PrefetchOutcome::Failed
        }
        Err(_) => {
            tracing::info!(%digest, ?timeout, "prefetch not done in time; continuing in the background");
            PrefetchOutcome::Pending
        }
    }
}

/// Fetches and caches `ranges` of `layer` in parallel; the first error, if any.
pub async fn fetch_all(
    layer: Layer,
    ranges: Vec<Range<u64>>,
) -> Result<(), crate::lazy::layer::LayerError> {
    let fetches = ranges.into_iter().map(|range| {
        let layer = layer.clone();
        async move { layer.prefetch(range).await }
    });
    futures::future::try_join_all(fetches).await.map(drop)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lazy::cache::ChunkCache;
    use crate::lazy::source::memory_blob::MemoryBlob;

    /// Files `first` and `second` (2000 bytes each, 1000-byte chunks), `prioritized` first.
    async fn layer(prioritized: &[&str]) -> (Layer, Arc<MemoryBlob>) {
        let files: [(&str, &[u8]); 2] = [("first", &[1; 2000]), ("second", &[2; 2000])];
        let cache = Arc::new(ChunkCache::in_memory(1 << 20));
        crate::testing::memory_layer(&files, 1000, prioritized, cache).await
    }

    fn size_label(value: &str) -> Labels {
        [(PREFETCH_SIZE_LABEL.to_owned(), value.to_owned())].into()
    }

    #[tokio::test]
    async fn range_follows_landmarks_then_the_size_label() {
        let (prioritized, _) = layer(&["first"]).await;
        let (unprioritized, _) = layer(&[]).await;
        let landmark = prioritized
            .index()
            .prefetch_landmark_offset()
            .expect("landmark");
        let toc = unprioritized.toc_offset();
        let cases = [
            ("landmark", &prioritized, Labels::new(), Some(0..landmark)),
            (
                "landmark wins over label",
                &prioritized,
                size_label("5"),
                Some(0..landmark),
            ),
            (
                "no.prefetch landmark",
                &unprioritized,
                size_label("100"),
                None,
            ),
        ];
        for (name, layer, labels, want) in cases {
            let got = prefetch_range(layer.index(), layer.toc_offset(), &labels);
            assert_eq!(got, want, "{name}");
        }
        // An index with neither landmark: the size label, capped at the TOC.
        let bare = estargz::Index::build(&estargz::Toc::default(), toc).expect("index");
        let label_cases = [
            ("label", size_label("100"), Some(0..100)),
            (
                "capped at the toc",
                size_label(&u64::MAX.to_string()),
                Some(0..toc),
            ),
            ("zero", size_label("0"), None),
            ("garbage", size_label("ten"), None),
            ("no label", Labels::new(), None),
        ];
        for (name, labels, want) in label_cases {
            assert_eq!(prefetch_range(&bare, toc, &labels), want, "{name}");
        }
    }

    #[tokio::test]
    async fn the_runtime_files_are_fetched_whatever_the_landmarks_say() {
        let passwd: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";
        let files: [(&str, &[u8]); 4] = [
            ("app", &[1; 2000]),
            ("etc/passwd", passwd),
            ("etc/group", b"root:x:0:\n"),
            ("other", &[2; 2000]),
        ];
        for prioritized in [&["app"][..], &[]] {
            let cache = Arc::new(ChunkCache::in_memory(1 << 20));
            let (layer, blob) =
                crate::testing::memory_layer(&files, 1000, prioritized, cache).await;
            let ranges = prefetch_ranges(layer.index(), layer.toc_offset(), &Labels::new());
            let main = prefetch_range(layer.index(), layer.toc_offset(), &Labels::new());
            let runtime = if main.is_some() {
                ranges.len() - 1
            } else {
                ranges.len()
            };
            assert_eq!(
                runtime, 2,
                "passwd and group with {prioritized:?}: {ranges:?}"
            );
            let outcome = prefetch(&layer, ranges, Duration::from_secs(5)).await;
            assert_eq!(outcome, PrefetchOutcome::Done, "{prioritized:?}");
            blob.clear_requests();
            let file = layer.index().lookup("etc/passwd").expect("passwd");
            assert_eq!(layer.read(file, 0, 100).await.expect("read"), passwd);
            assert!(
                blob.requests().is_empty(),
                "passwd was cached ({prioritized:?})"
            );
            let other = layer.index().lookup("other").expect("other");
            layer.read(other, 0, 10).await.expect("read other");
            assert!(
                !blob.requests().is_empty(),
                "other files are not prefetched"
            );
        }
    }

    #[tokio::test]
    async fn prefetches_only_the_prioritized_files_in_one_request() {
        let (layer, blob) = layer(&["first"]).await;
        let range = prefetch_range(layer.index(), layer.toc_offset(), &Labels::new());
        let range = range.expect("landmark range");
        let outcome = prefetch(&layer, vec![range.clone()], Duration::from_secs(5)).await;
        assert_eq!(outcome, PrefetchOutcome::Done);
        let requests = blob.requests();
        assert_eq!(requests.len(), 1, "one request: {requests:?}");
        assert!(requests[0].end <= range.end, "{requests:?} past {range:?}");
        blob.clear_requests();

        let first = layer.index().lookup("first").expect("first");
        assert_eq!(
            layer.read(first, 0, 2000).await.expect("read"),
            vec![1; 2000]
        );
        assert!(blob.requests().is_empty(), "first was prefetched");
        let second = layer.index().lookup("second").expect("second");
        layer.read(second, 0, 10).await.expect("read second");
        assert!(!blob.requests().is_empty(), "second is fetched on demand");
    }

    #[tokio::test]
    async fn a_slow_prefetch_is_left_running_in_the_background() {
        let (layer, blob) = layer(&["first"]).await;
        blob.set_mode(crate::lazy::source::memory_blob::Mode::Stall);
        let range = 0..layer.index().prefetch_landmark_offset().expect("landmark");
        let started = std::time::Instant::now();
        let outcome = prefetch(&layer, vec![range], Duration::from_millis(200)).await;
        assert_eq!(outcome, PrefetchOutcome::Pending);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
