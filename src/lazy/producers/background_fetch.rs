//! Background fetching: after prefetch, the rest of every lazily mounted layer is fetched
//! into the disk cache until the layer is fully local.
//!
//! One task serves all layers, one bounded step per layer in turn (so layers and images
//! share the bandwidth fairly), paced to a share of the link (each step's own time tells
//! how fast the link is) and optionally a fixed rate, and paused while any of its layers
//! has a read waiting on the network or had one very recently, or an on-demand or
//! prefetch request of any layer is on the wire: on-demand reads never queue behind
//! background traffic. A layer is dropped from the rotation when it is
//! fully cached or unmounted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::lazy::layer::{Layer, WeakLayer};

/// Background fetch settings (the `[background_fetch]` table of the daemon config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct BackgroundConfig {
    /// Fetch whole layers in the background after mount. Default true (needs the disk
    /// cache).
    pub enable: bool,
    /// Longest average rate of background fetching over all layers, bytes per second;
    /// 0 means no fixed cap (the default: `link_share` adapts to the link instead).
    pub bytes_per_second: u64,
    /// Share of the link background fetching takes: after each step it pauses so that
    /// its steps fill at most this fraction of the time, whatever the link's speed.
    /// Between 0 and 1 (1: no pause). Default 0.5, leaving the other half for reads that
    /// start meanwhile.
    pub link_share: f64,
    /// Compressed bytes fetched per step (one layer's turn). Default 4194304 (4 MiB).
    pub step_bytes: u64,
    /// How long after an on-demand fetch background fetching stays paused, in seconds
    /// (fractions allowed). Default 1.
    #[serde(deserialize_with = "crate::config::seconds")]
    pub quiet: Duration,
    /// How long after a layer joins (its prefetch done) all background fetching stays
    /// paused, in seconds (fractions allowed). Default 5: a new image's containers start
    /// then, mostly from prefetched chunks, so no on-demand read would pause it, yet they
    /// need the link and the cores more than filling caches does.
    #[serde(deserialize_with = "crate::config::seconds")]
    pub start_delay: Duration,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        BackgroundConfig {
            enable: true,
            bytes_per_second: 0,
            link_share: DEFAULT_LINK_SHARE,
            step_bytes: 4 << 20,
            quiet: Duration::from_secs(1),
            start_delay: Duration::from_secs(5),
        }
    }
}

/// Default share of the link background fetching takes.
pub const DEFAULT_LINK_SHARE: f64 = 0.5;

/// Longest pause after failed steps in a row (the registry may be down).
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(30);

/// The background fetcher: add layers, and its task fills their caches.
pub struct BackgroundFetcher {
    config: BackgroundConfig,
    layers: Mutex<VecDeque<WeakLayer>>,
    /// When the last layer joined the rotation.
    last_added: Mutex<Option<Instant>>,
    wake: Arc<Notify>,
}

impl BackgroundFetcher {
    /// Starts the fetching task on `runtime`; it ends when the fetcher is dropped.
    pub fn start(config: BackgroundConfig, runtime: &Handle) -> Arc<BackgroundFetcher> {
        let fetcher = Arc::new(BackgroundFetcher {
            config,
            layers: Mutex::new(VecDeque::new()),
            last_added: Mutex::new(None),
            wake: Arc::new(Notify::new()),
        });
        runtime.spawn(run(Arc::downgrade(&fetcher), fetcher.wake.clone()));
        fetcher
    }

    /// Puts `layer` into the rotation.
    pub fn add(&self, layer: &Layer) {
        self.lock().push_back(layer.downgrade());
        *self
            .last_added
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.wake.notify_one();
    }

    /// Layers in the rotation that are still mounted.
    pub fn len(&self) -> usize {
        self.lock().iter().filter(|l| l.upgrade().is_some()).count()
    }

    /// Whether no mounted layer is waiting for background fetching.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next live layer, moved to the back of the rotation (it stays in it during
    /// its turn); unmounted layers are forgotten.
    fn next_layer(&self) -> Option<Layer> {
        let mut layers = self.lock();
        while let Some(weak) = layers.pop_front() {
            if let Some(layer) = weak.upgrade() {
                layers.push_back(weak);
                return Some(layer);
            }
        }
        None
    }

    fn remove(&self, layer: &Layer) {
        self.lock().retain(|weak| !weak.is(layer));
    }

    /// Whether a layer joined less than `start_delay` ago, or `current` or any layer in
    /// the rotation has a read on the network or had one within the quiet period.
    fn readers_active(&self, current: &Layer) -> bool {
        let quiet = self.config.quiet;
        let joined = *self
            .last_added
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        joined.is_some_and(|at| at.elapsed() < self.config.start_delay)
            || current.link_busy_above(crate::lazy::layer::FetchKind::Background)
            || current.busy_within(quiet)
            || self
                .lock()
                .iter()
                .filter_map(WeakLayer::upgrade)
                .any(|layer| layer.busy_within(quiet))
    }

    /// One turn: waits for readers to go quiet, then fetches one step of `layer`.
    async fn turn(&self, layer: Layer, failures: &mut u32) {
        while self.readers_active(&layer) {
            let poll = self.config.quiet.min(self.config.start_delay) / 2;
            tokio::time::sleep(poll + Duration::from_millis(10)).await;
        }
        let digest = layer.blob_digest();
        let started = Instant::now();
        match layer.fetch_background_step(self.config.step_bytes).await {
            Ok(Some(bytes)) => {
                *failures = 0;
                let share = share_pause(started.elapsed(), self.config.link_share);
                let pause =
                    pace(bytes, self.config.bytes_per_second).map_or(share, |p| p.max(share));
                tokio::time::sleep(pause).await;
            }
            Ok(None) => {
                self.remove(&layer);
                tracing::info!(%digest, "layer fully cached");
            }
            Err(error) => {
                *failures = failures.saturating_add(1);
                let pause = failure_backoff(*failures);
                tracing::warn!(%digest, %error, ?pause, "background fetch failed; retrying later");
                tokio::time::sleep(pause).await;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<WeakLayer>> {
        self.layers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for BackgroundFetcher {
    /// Wakes the task so it sees the fetcher is gone and ends.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

async fn run(fetcher: Weak<BackgroundFetcher>, wake: Arc<Notify>) {
    let mut failures = 0;
    loop {
        let Some(this) = fetcher.upgrade() else {
            return;
        };
        match this.next_layer() {
            Some(layer) => this.turn(layer, &mut failures).await,
            None => {
                drop(this);
                // add() leaves a permit when nobody waits, so no wake-up is lost.
                wake.notified().await;
            }
        }
    }
}

/// The pause after fetching `bytes` that keeps the average at `rate` bytes per second.
fn pace(bytes: u64, rate: u64) -> Option<Duration> {
    (rate > 0).then(|| Duration::from_secs_f64(bytes as f64 / rate as f64))
}

/// The pause after a step that took `took` which keeps background fetching to `share` of
/// the time (so of the link, since a step keeps the link busy while it runs).
fn share_pause(took: Duration, share: f64) -> Duration {
    if !(share > 0.0 && share < 1.0) {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(took.as_secs_f64() * (1.0 - share) / share)
        .unwrap_or(MAX_FAILURE_BACKOFF)
        .min(MAX_FAILURE_BACKOFF)
}

/// 1 s, 2 s, 4 s, ... up to [`MAX_FAILURE_BACKOFF`].
fn failure_backoff(failures: u32) -> Duration {
    let secs = 1u64
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_FAILURE_BACKOFF)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::lazy::cache::{CacheConfig, ChunkCache};
    use crate::lazy::source::memory_blob::{MemoryBlob, Mode};

    const FILES: [(&str, usize); 3] = [("a", 5000), ("b", 300), ("c", 12_000)];

    fn content(len: usize, seed: u64) -> Vec<u8> {
        estargz::testutil::pseudo_random_bytes(seed, len)
    }

    /// A layer of [`FILES`] (1000-byte chunks) over a disk cache in `dir`.
    async fn disk_layer(dir: &std::path::Path) -> (Layer, Arc<MemoryBlob>) {
        let contents: Vec<Vec<u8>> = (0u64..)
            .zip(FILES)
            .map(|(i, (_, n))| content(n, i))
            .collect();
        let files: Vec<(&str, &[u8])> = FILES
            .iter()
            .zip(&contents)
            .map(|((name, _), bytes)| (*name, bytes.as_slice()))
            .collect();
        let config = CacheConfig {
            dir: Some(dir.to_path_buf()),
            ..CacheConfig::default()
        };
        let cache = Arc::new(ChunkCache::new(&config).expect("cache"));
        crate::testing::memory_layer(&files, 1000, &[], cache).await
    }

    fn quick() -> BackgroundConfig {
        BackgroundConfig {
            bytes_per_second: 0,
            link_share: 1.0,
            step_bytes: 4000,
            quiet: Duration::from_millis(50),
            start_delay: Duration::ZERO,
            ..BackgroundConfig::default()
        }
    }

    async fn wait_until_done(fetcher: &BackgroundFetcher, limit: Duration) {
        let started = Instant::now();
        while !fetcher.is_empty() {
            assert!(started.elapsed() < limit, "background fetch did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn fills_the_cache_so_reads_need_no_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (layer, blob) = disk_layer(dir.path()).await;
        let fetcher = BackgroundFetcher::start(quick(), &Handle::current());
        fetcher.add(&layer);
        wait_until_done(&fetcher, Duration::from_secs(10)).await;
        let requests = blob.requests();
        assert!(requests.len() > 1, "several bounded steps: {requests:?}");
        assert!(layer.fetched_bytes(crate::lazy::layer::FetchKind::Background) > 0);

        blob.set_mode(Mode::Fail);
        for (i, (name, len)) in (0u64..).zip(FILES) {
            let id = layer.index().lookup(name).expect("file");
            let got = layer.read(id, 0, 1 << 20).await.expect("read from cache");
            assert!(got == content(len, i), "{name}");
        }
    }

    #[tokio::test]
    async fn waits_while_a_read_is_on_the_network() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (layer, blob) = disk_layer(dir.path()).await;
        blob.set_mode(Mode::Stall);
        let reader = {
            let layer = layer.clone();
            let id = layer.index().lookup("c").expect("c");
            // Inside the chunk, not at its start: no readahead joins the stalled read.
            tokio::spawn(async move { layer.read(id, 10, 10).await })
        };
        // Until the read is on the wire (it looks in the disk cache first, which can
        // take a while on a loaded machine): only then is the layer busy.
        let started = Instant::now();
        while blob.requests().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(5), "read not sent");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let fetcher = BackgroundFetcher::start(quick(), &Handle::current());
        fetcher.add(&layer);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            blob.requests().len(),
            1,
            "only the stalled read: {:?}",
            blob.requests()
        );
        reader.abort();
    }

    #[tokio::test]
    async fn a_new_layer_holds_background_fetching_for_the_start_delay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (layer, blob) = disk_layer(dir.path()).await;
        let delay = Duration::from_millis(400);
        let config = BackgroundConfig {
            start_delay: delay,
            ..quick()
        };
        let fetcher = BackgroundFetcher::start(config, &Handle::current());
        let added = Instant::now();
        fetcher.add(&layer);
        tokio::time::sleep(delay / 2).await;
        assert!(blob.requests().is_empty(), "nothing within the delay");
        wait_until_done(&fetcher, Duration::from_secs(10)).await;
        assert!(added.elapsed() >= delay);
        assert!(!blob.requests().is_empty(), "fetched after the delay");
    }

    #[tokio::test]
    async fn layers_take_turns() {
        let dirs = [(); 2].map(|_| tempfile::tempdir().expect("tempdir"));
        let (first, _) = disk_layer(dirs[0].path()).await;
        let (second, _) = disk_layer(dirs[1].path()).await;
        // Paced, so that one layer fetched to the end before the other starts would
        // show: each 4000-byte step is followed by a 20 ms pause.
        let config = BackgroundConfig {
            bytes_per_second: 200_000,
            ..quick()
        };
        let fetcher = BackgroundFetcher::start(config, &Handle::current());
        fetcher.add(&first);
        fetcher.add(&second);
        let started = Instant::now();
        while !first.background_complete() {
            assert!(started.elapsed() < Duration::from_secs(10), "not done");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let background = crate::lazy::layer::FetchKind::Background;
        let (done, other) = (
            first.fetched_bytes(background),
            second.fetched_bytes(background),
        );
        // Turns alternate, so the second layer is at most one step (which may overrun
        // `step_bytes` by a chunk) behind the first; one after the other, it had nothing.
        assert!(
            other + 2 * quick().step_bytes >= done,
            "second layer fetched {other} bytes while the first fetched {done}"
        );
        wait_until_done(&fetcher, Duration::from_secs(10)).await;
        assert_eq!(
            second.fetched_bytes(background),
            done,
            "same layer, same bytes"
        );
    }

    #[tokio::test]
    async fn an_unmounted_layer_leaves_the_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (layer, blob) = disk_layer(dir.path()).await;
        let fetcher = BackgroundFetcher::start(quick(), &Handle::current());
        blob.set_mode(Mode::Stall);
        fetcher.add(&layer);
        drop(layer);
        assert!(fetcher.is_empty());
    }

    #[test]
    fn pacing_and_backoff() {
        let step = Duration::from_millis(300);
        assert_eq!(share_pause(step, 0.5), step, "half the link");
        assert_eq!(share_pause(step, 0.25), 3 * step, "a quarter");
        assert_eq!(share_pause(step, 1.0), Duration::ZERO, "all of it");
        assert_eq!(share_pause(step, f64::NAN), Duration::ZERO);
        assert_eq!(pace(1 << 20, 0), None, "unlimited");
        assert_eq!(pace(1 << 20, 2 << 20), Some(Duration::from_millis(500)));
        let backoffs: Vec<u64> = [1, 2, 3, 6, 40]
            .iter()
            .map(|&n| failure_backoff(n).as_secs())
            .collect();
        assert_eq!(backoffs, [1, 2, 4, 30, 30]);
    }
}
