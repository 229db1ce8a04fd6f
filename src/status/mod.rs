//! Per-layer status for users: what each lazily mounted layer has fetched, how its
//! prefetch went, whether background fetch finished, and the fallbacks seen. The
//! [`Board`] is kept up to date by the lazy mounter and read by the status endpoint
//! ([`endpoint`]: `GET /status` on `<root>/status.sock`, and on the metrics address when
//! configured); [`cli`] is the `estargz-snapshotter status` side.

pub mod cli;
pub mod endpoint;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::lazy::layer::{FetchKind, Layer, WeakLayer};
use crate::lazy::producers::prefetch::PrefetchOutcome;
use crate::lazy::source::BlobLocation;
use crate::metrics::{self, FallbackReason};
use crate::snapshot::Labels;

/// Name of the status socket in the daemon root.
pub const SOCKET_NAME: &str = "status.sock";

/// Most recent fallbacks kept for `status`.
const RECENT_FALLBACKS: usize = 50;

/// The status socket of a daemon whose root is `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(SOCKET_NAME)
}

/// Everything `GET /status` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Lazily mounted layers, by mountpoint.
    pub layers: Vec<LayerStatus>,
    pub fallbacks: Fallbacks,
}

/// One lazily mounted layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStatus {
    /// Blob digest (`sha256:...`).
    pub digest: String,
    /// Image repository the blob is read from.
    pub reference: String,
    pub mountpoint: PathBuf,
    /// Compressed blob size, bytes.
    pub blob_size: u64,
    /// Compressed bytes fetched since mount, by kind.
    pub fetched_bytes: FetchedBytes,
    /// Share of the layer's file data fetched (100 once background fetch is done).
    pub percent_fetched: f64,
    pub prefetch: PrefetchState,
    pub background: BackgroundState,
}

/// Bytes fetched, by [`FetchKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedBytes {
    pub on_demand: u64,
    pub prefetch: u64,
    pub background: u64,
}

impl FetchedBytes {
    pub fn total(&self) -> u64 {
        self.on_demand
            .saturating_add(self.prefetch)
            .saturating_add(self.background)
    }
}

/// How the prefetch stood when the mount was reported ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefetchState {
    None,
    Done,
    Pending,
    Failed,
}

impl From<PrefetchOutcome> for PrefetchState {
    fn from(outcome: PrefetchOutcome) -> PrefetchState {
        match outcome {
            PrefetchOutcome::None => PrefetchState::None,
            PrefetchOutcome::Done => PrefetchState::Done,
            PrefetchOutcome::Pending => PrefetchState::Pending,
            PrefetchOutcome::Failed => PrefetchState::Failed,
        }
    }
}

/// Background fetch of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackgroundState {
    /// Background fetching is disabled (or there is no disk cache).
    Off,
    Running,
    Done,
}

/// Fallbacks to an ordinary pull since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fallbacks {
    /// Count per reason label.
    pub by_reason: BTreeMap<String, u64>,
    /// The latest ones, oldest first.
    pub recent: Vec<FallbackRecord>,
}

/// One fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackRecord {
    /// Blob digest, when the labels named one.
    pub layer: Option<String>,
    pub reason: String,
    /// When, in seconds since the Unix epoch.
    pub unix_seconds: u64,
}

/// The live record of mounts and fallbacks; also keeps the mount and fallback metrics.
#[derive(Default)]
pub struct Board {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    layers: BTreeMap<PathBuf, Mounted>,
    by_reason: BTreeMap<&'static str, u64>,
    recent: VecDeque<FallbackRecord>,
}

/// What the board knows of a mount; the layer itself is not kept alive by it.
struct Mounted {
    layer: WeakLayer,
    reference: String,
    prefetch: PrefetchState,
    background: bool,
}

impl Board {
    /// Records a lazy mount of `layer` on `mountpoint`.
    pub fn mounted(
        &self,
        mountpoint: &Path,
        layer: &Layer,
        reference: String,
        prefetch: PrefetchOutcome,
        background: bool,
    ) {
        let mounted = Mounted {
            layer: layer.downgrade(),
            reference,
            prefetch: prefetch.into(),
            background,
        };
        let mut inner = self.lock();
        inner.layers.insert(mountpoint.to_path_buf(), mounted);
        metrics::global().mounted(inner.layers.len());
    }

    /// Forgets the mount on `mountpoint`.
    pub fn unmounted(&self, mountpoint: &Path) {
        let mut inner = self.lock();
        inner.layers.remove(mountpoint);
        metrics::global().set_mounted(inner.layers.len());
    }

    /// Forgets every mount (shutdown).
    pub fn unmounted_all(&self) {
        self.lock().layers.clear();
        metrics::global().set_mounted(0);
    }

    /// Records that the layer `labels` describe falls back to an ordinary pull.
    pub fn fallback(&self, labels: &Labels, reason: FallbackReason) {
        metrics::global().fallback(reason);
        let record = FallbackRecord {
            layer: BlobLocation::from_labels(labels)
                .ok()
                .map(|l| l.digest.to_string()),
            reason: reason.label().to_owned(),
            unix_seconds: unix_now(),
        };
        let mut inner = self.lock();
        *inner.by_reason.entry(reason.label()).or_default() += 1;
        if inner.recent.len() >= RECENT_FALLBACKS {
            inner.recent.pop_front();
        }
        inner.recent.push_back(record);
    }

    /// The current status.
    pub fn status(&self) -> Status {
        let inner = self.lock();
        let layers = inner
            .layers
            .iter()
            .filter_map(|(path, mounted)| layer_status(path, mounted))
            .collect();
        let fallbacks = Fallbacks {
            by_reason: inner
                .by_reason
                .iter()
                .map(|(reason, n)| ((*reason).to_owned(), *n))
                .collect(),
            recent: inner.recent.iter().cloned().collect(),
        };
        Status { layers, fallbacks }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn layer_status(mountpoint: &Path, mounted: &Mounted) -> Option<LayerStatus> {
    let layer = mounted.layer.upgrade()?;
    let fetched = FetchedBytes {
        on_demand: layer.fetched_bytes(FetchKind::OnDemand),
        prefetch: layer.fetched_bytes(FetchKind::Prefetch),
        background: layer.fetched_bytes(FetchKind::Background),
    };
    let complete = layer.background_complete();
    let background = match (mounted.background, complete) {
        (false, _) => BackgroundState::Off,
        (true, false) => BackgroundState::Running,
        (true, true) => BackgroundState::Done,
    };
    Some(LayerStatus {
        digest: layer.blob_digest().to_string(),
        reference: mounted.reference.clone(),
        mountpoint: mountpoint.to_path_buf(),
        blob_size: layer.blob_size(),
        fetched_bytes: fetched,
        percent_fetched: percent(fetched.total(), layer.toc_offset(), complete),
        prefetch: mounted.prefetch,
        background,
    })
}

/// `fetched` of `data` bytes as a percentage in 0..=100.
fn percent(fetched: u64, data: u64, complete: bool) -> f64 {
    if complete || data == 0 {
        return 100.0;
    }
    (fetched as f64 / data as f64 * 100.0).clamp(0.0, 100.0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lazy::cache::ChunkCache;

    async fn layer() -> (Layer, Arc<crate::lazy::source::memory_blob::MemoryBlob>) {
        let cache = Arc::new(ChunkCache::in_memory(1 << 20));
        let data = vec![7u8; 4000];
        crate::testing::memory_layer(&[("f", &data[..])], 1000, &[], cache).await
    }

    #[tokio::test]
    async fn lists_mounted_layers_with_what_they_fetched() {
        let (layer, _blob) = layer().await;
        let board = Board::default();
        let path = Path::new("/snapshots/1/fs");
        board.mounted(
            path,
            &layer,
            "r:5000/app".into(),
            PrefetchOutcome::Done,
            false,
        );
        let file = layer.index().lookup("f").expect("f");
        layer.read(file, 0, 10).await.expect("read");

        let status = board.status();
        assert_eq!(status.layers.len(), 1);
        let got = &status.layers[0];
        assert_eq!(got.digest, layer.blob_digest().to_string());
        assert_eq!(got.mountpoint, path);
        assert_eq!(got.prefetch, PrefetchState::Done);
        assert_eq!(got.background, BackgroundState::Off);
        assert!(got.fetched_bytes.on_demand > 0, "{got:?}");
        assert!(0.0 < got.percent_fetched && got.percent_fetched <= 100.0);
        let json = serde_json::to_string(&status).expect("json");
        let back: Status = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, status);

        board.unmounted(path);
        assert!(board.status().layers.is_empty());
        board.mounted(path, &layer, "r".into(), PrefetchOutcome::None, true);
        drop(layer);
        // A fetch holds the layer until it has written its chunks to the cache.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !board.status().layers.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            board.status().layers.is_empty(),
            "a dropped layer is not listed"
        );
    }

    #[test]
    fn fallbacks_are_counted_by_reason_and_bounded() {
        let board = Board::default();
        for _ in 0..RECENT_FALLBACKS + 3 {
            board.fallback(&Labels::new(), FallbackReason::NoLabels);
        }
        let fallbacks = board.status().fallbacks;
        let want = u64::try_from(RECENT_FALLBACKS + 3).expect("small");
        assert_eq!(fallbacks.by_reason.get("no_labels"), Some(&want));
        assert_eq!(fallbacks.recent.len(), RECENT_FALLBACKS);
        assert_eq!(fallbacks.recent[0].layer, None);
    }

    #[test]
    fn percent_is_bounded() {
        let cases = [
            ("none", 0, 100, false, 0.0),
            ("half", 50, 100, false, 50.0),
            ("refetched past the size", 300, 100, false, 100.0),
            ("complete", 0, 100, true, 100.0),
            ("empty layer", 0, 0, false, 100.0),
        ];
        for (name, fetched, data, complete, want) in cases {
            assert_eq!(percent(fetched, data, complete), want, "{name}");
        }
    }
}
