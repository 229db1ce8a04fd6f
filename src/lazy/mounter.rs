//! Lazy pulling: [`FuseMounter`] serves an eStargz layer on a snapshot directory through
//! FUSE. It resolves the blob and TOC digest from the Prepare labels, opens the layer over
//! the registry (one shared client and chunk cache) and mounts it; any failure tells the
//! store to fall back to an ordinary pull of that layer.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::runtime::Handle;

use crate::lazy::cache::{CacheConfig, CacheError, ChunkCache};
use crate::lazy::fallback::FallbackReason;
use crate::lazy::fs::{self, FsError, LayerContent, MountHandle, MountOptions};
use crate::lazy::layer::{Layer, LayerConfig, LayerError};
use crate::lazy::layers::{SharedLayers, Sharing};
use crate::lazy::producers::background_fetch::{BackgroundConfig, BackgroundFetcher};
use crate::lazy::producers::prefetch::{self, PrefetchConfig};
use crate::lazy::producers::preopen::{listed_layers, Preopened};
use crate::lazy::producers::record::{RecordConfig, Recorder};
use crate::lazy::recorded::Recorded;
use crate::lazy::soci::ahead as soci_ahead;
use crate::lazy::source::{
    toc_digest_from_labels, BlobLocation, LabelError, RegistryBlob, RemoteConfig, RemoteError,
};
use crate::snapshot::{Labels, MountError, Mounter};
use crate::status::Board;

mod soci_mount;
/// Default bound on one lazy mount attempt (resolve, footer, TOC, FUSE mount).
pub const DEFAULT_MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors setting up the mounter or mounting one layer.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    #[error("registry client: {0}")]
    Client(#[from] registry::Error),
    #[error("chunk cache: {0}")]
    Cache(#[from] CacheError),
    #[error("labels: {0}")]
    Labels(#[from] LabelError),
    #[error("open blob: {0}")]
    Remote(#[from] RemoteError),
    #[error("open layer: {0}")]
    Layer(#[from] LayerError),
    #[error("fuse: {0}")]
    Fs(#[from] FsError),
    #[error("opening layer {digest} took longer than {timeout:?}")]
    Timeout {
        digest: estargz::Digest,
        timeout: Duration,
    },
    #[error("no lazy mount at {0}")]
    NotMounted(PathBuf),
    #[error("soci index: {0}")]
    Soci(#[from] crate::lazy::soci::SociError),
}

impl From<&LazyError> for FallbackReason {
    fn from(error: &LazyError) -> FallbackReason {
        match error {
            LazyError::Labels(LabelError::Missing) => FallbackReason::NoLabels,
            LazyError::Labels(_) => FallbackReason::BadLabels,
            LazyError::Client(_) | LazyError::Remote(_) => FallbackReason::Registry,
            LazyError::Layer(layer) => FallbackReason::from(layer),
            LazyError::Fs(_) => FallbackReason::Fuse,
            LazyError::Timeout { .. } => FallbackReason::Timeout,
            LazyError::Cache(_) | LazyError::NotMounted(_) => FallbackReason::Internal,
            LazyError::Soci(_) => FallbackReason::InvalidSociIndex,
        }
    }
}

/// FUSE settings (the `[fuse]` table of the daemon config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct FuseConfig {
    /// Also report opaque directories with `user.overlay.opaque` (overlay `userxattr`
    /// mounts). Default false.
    pub userxattr: bool,
    /// Let users other than the daemon into the mounts. Default true.
    pub allow_other: bool,
    /// FUSE worker threads per mounted layer. Default 2.
    pub threads: usize,
    /// Serve the FUSE mounts from a separate long-lived process (`estargz-snapshotter
    /// fuse-manager`, started by the daemon), so that restarting or upgrading the daemon,
    /// even with SIGKILL, does not break running containers. Default false.
    pub manager: bool,
    /// Serve files whose content is fully cached through FUSE passthrough (the kernel
    /// reads a local copy directly; Linux >= 6.9). Default true; off, or where the
    /// kernel refuses, every read goes through the daemon.
    pub passthrough: bool,
    /// Longest time one lazy mount attempt may take before the layer falls back to an
    /// ordinary pull, in seconds (fractions allowed). Default 30.
    #[serde(deserialize_with = "crate::config::seconds")]
    pub mount_timeout: Duration,
    /// Kernel readahead of each mounted layer in KiB, so sequential reads come as 1 MiB
    /// FUSE requests; 0 keeps the kernel's 128 KiB. Default 1024.
    pub read_ahead_kb: u32,
}

impl Default for FuseConfig {
    fn default() -> Self {
        let options = MountOptions::default();
        FuseConfig {
            userxattr: options.userxattr,
            allow_other: options.allow_other,
            threads: options.threads,
            passthrough: options.passthrough,
            manager: false,
            mount_timeout: DEFAULT_MOUNT_TIMEOUT,
            read_ahead_kb: options.read_ahead_kb,
        }
    }
}

impl FuseConfig {
    fn mount_options(&self) -> MountOptions {
        MountOptions {
            userxattr: self.userxattr,
            allow_other: self.allow_other,
            threads: self.threads,
            passthrough: self.passthrough,
            read_ahead_kb: self.read_ahead_kb,
            ..MountOptions::default()
        }
    }
}

/// An eStargz layer as the FUSE filesystem sees it.
impl LayerContent for Layer {
    fn index(&self) -> &estargz::Index {
        Layer::index(self)
    }

    fn read(
        &self,
        file: estargz::EntryId,
        offset: u64,
        len: u32,
    ) -> BoxFuture<'static, Result<Vec<u8>, std::io::Error>> {
        let layer = self.clone();
        // The filesystem logs the error and answers EIO.
        Box::pin(async move {
            layer
                .read(file, offset, len)
                .await
                .map_err(std::io::Error::other)
        })
    }

    fn backing_file(&self, file: estargz::EntryId) -> BoxFuture<'static, Option<std::fs::File>> {
        let layer = self.clone();
        Box::pin(async move {
            match layer.backing_file(file).await {
                Ok(local) => local,
                Err(error) => {
                    tracing::warn!(%error, file, "backing file lookup failed");
                    None
                }
            }
        })
    }
}

/// Everything a [`FuseMounter`] is configured with (sections of the daemon config).
#[derive(Debug, Clone, Default)]
pub struct LazyConfig {
    pub remote: RemoteConfig,
    /// With the directory resolved (see `Config::resolved_cache`).
    pub cache: CacheConfig,
    pub layer: LayerConfig,
    pub fuse: FuseConfig,
    pub prefetch: PrefetchConfig,
    pub background: BackgroundConfig,
    /// With the directory resolved (see `Config::resolved_record`).
    pub record: RecordConfig,
}

/// Mounts eStargz layers lazily through FUSE.
pub struct FuseMounter {
    client: registry::Client,
    cache: Arc<ChunkCache>,
    layer: LayerConfig,
    fuse: FuseConfig,
    prefetch: PrefetchConfig,
    record: RecordConfig,
    /// None when background fetching is off (or there is no disk cache to fill).
    background: Option<Arc<BackgroundFetcher>>,
    runtime: Handle,
    mounts: Mutex<HashMap<PathBuf, MountHandle>>,
    /// What `status` reports: mounted layers and fallbacks.
    board: Arc<Board>,
    /// Layers of the images being pulled, opened ahead of their Prepare.
    preopened: Preopened,
    /// SOCI index look-ups, remembered per image (layers without eStargz labels).
    soci: Arc<crate::lazy::soci::SociIndexes>,
    /// SOCI layers of the images being pulled, opened ahead of their Prepare.
    soci_ahead: soci_ahead::SociAhead,
    /// The open layer of each blob, shared by all its mounts.
    layers: SharedLayers,
}

impl FuseMounter {
    /// Builds the shared registry client, chunk cache and background fetcher. Network
    /// work runs on `runtime`.
    pub fn new(config: LazyConfig, runtime: Handle) -> Result<FuseMounter, LazyError> {
        let cache = Arc::new(ChunkCache::new(&config.cache)?);
        let background = (config.background.enable && cache.has_disk())
            .then(|| BackgroundFetcher::start(config.background, &runtime));
        Ok(FuseMounter {
            client: registry::Client::new(config.remote)?,
            cache,
            layer: config.layer,
            fuse: config.fuse,
            prefetch: config.prefetch,
            record: config.record,
            background,
            runtime,
            mounts: Mutex::new(HashMap::new()),
            board: Arc::default(),
            preopened: Preopened::default(),
            soci: Arc::default(),
            soci_ahead: soci_ahead::SociAhead::default(),
            layers: SharedLayers::default(),
        })
    }

    /// The registry client every lazy layer reads through (clones share credentials).
    pub fn registry_client(&self) -> registry::Client {
        self.client.clone()
    }

    /// Mountpoints currently served.
    pub fn mountpoints(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.lock().keys().cloned().collect();
        paths.sort();
        paths
    }

    /// The record of mounts and fallbacks the status endpoint reads.
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// Unmounts every layer (daemon shutdown). Failures are logged.
    pub fn unmount_all(&self) {
        self.board.unmounted_all();
        let handles: Vec<MountHandle> = self.lock().drain().map(|(_, h)| h).collect();
        for handle in handles {
            let path = handle.mountpoint().to_path_buf();
            if let Err(error) = handle.unmount() {
                tracing::warn!(mountpoint = %path.display(), %error, "unmount at shutdown");
            }
        }
    }

    /// Serves the layer `labels` describe on `connection`, the `/dev/fuse` connection of
    /// its mount at `mountpoint` whose process died (the daemon kept a copy): the mount,
    /// its inode numbers and open files stay; nothing is mounted again.
    pub fn adopt(
        &self,
        mountpoint: &Path,
        labels: &Labels,
        connection: OwnedFd,
    ) -> Result<(), MountError> {
        self.mount_layer(mountpoint, labels, Some(connection))
            .map_err(|e| MountError::Mount {
                mountpoint: mountpoint.to_path_buf(),
                source: Box::new(e),
            })
    }

    /// A copy of the `/dev/fuse` connection serving `mountpoint`.
    pub fn connection(&self, mountpoint: &Path) -> Option<std::io::Result<OwnedFd>> {
        self.lock().get(mountpoint).map(MountHandle::connection)
    }

    /// Mounts `content` on `mountpoint`, or serves it on `adopted`, the connection of a
    /// mount there that a dead process served.
    fn attach(
        &self,
        mountpoint: &Path,
        content: Arc<dyn LayerContent>,
        adopted: Option<OwnedFd>,
    ) -> Result<MountHandle, FsError> {
        let options = self.fuse.mount_options();
        let runtime = self.runtime.clone();
        match adopted {
            None => fs::mount(mountpoint, content, runtime, &options),
            Some(connection) => fs::adopt(mountpoint, connection, content, runtime, &options),
        }
    }

    /// Resolves, opens and mounts the layer (blocking; not on a runtime thread); with
    /// `adopted`, serves the mount that connection belongs to instead.
    fn mount_layer(
        &self,
        mountpoint: &Path,
        labels: &Labels,
        adopted: Option<OwnedFd>,
    ) -> Result<(), LazyError> {
        let location = BlobLocation::from_labels(labels)?;
        let toc_digest = toc_digest_from_labels(labels)?;
        let adopted = match toc_digest {
            Some(_) => adopted,
            None => match self.mount_soci(mountpoint, &location, labels, adopted)? {
                Ok(()) => return Ok(()),
                Err(adopted) => adopted,
            },
        };
        let digest = location.digest;
        let located = location.clone();
        if self.prefetch.enable && adopted.is_none() {
            // Learned files are asked for after the TOC: have the answer by then.
            (self.soci).look_up_ahead(&self.runtime, &self.client, &location, labels);
        }
        let recorder = self.recorder_for(&location, labels);
        self.open_layers_ahead(&location, labels);
        let reference = location.reference.to_string();
        let timeout = self.fuse.mount_timeout;
        // The timer must be created inside the runtime, hence the async block.
        let opening =
            async { tokio::time::timeout(timeout, self.open_layer(location, toc_digest)).await };
        let (layer, sharing) = self
            .runtime
            .block_on(opening)
            .map_err(|_| LazyError::Timeout { digest, timeout })??;
        // A layer another mount already serves has had its prefetch and background turn.
        let fresh = sharing == Sharing::Opened;
        // Containers wait on an adopted mount: it serves at once, without the prefetch
        // (the background fetch still fills it).
        let prefetched = match (fresh, adopted.is_some()) {
            (true, false) => self.prefetch_before_ready(&layer, &located, labels),
            _ => prefetch::PrefetchOutcome::None,
        };
        let files = Arc::new(Recorded {
            content: layer.clone(),
            recorder,
        });
        let handle = self.attach(mountpoint, files, adopted)?;
        tracing::info!(%digest, mountpoint = %mountpoint.display(), shared = !fresh, adopted = handle.adopted(), "layer mounted lazily");
        if let (Some(background), true) = (&self.background, fresh) {
            background.add(&layer);
        }
        // A stale handle for the same path (not expected) is unmounted by its drop.
        self.lock().insert(mountpoint.to_path_buf(), handle);
        let background = self.background.is_some();
        self.board
            .mounted(mountpoint, &layer, reference, prefetched, background);
        Ok(())
    }

    /// With recording on, a recorder for the layer, once its image manifest is found
    /// (bounded by the mount timeout; failures are logged and the layer is not recorded).
    fn recorder_for(&self, location: &BlobLocation, labels: &Labels) -> Option<Recorder> {
        if !self.record.enable {
            return None;
        }
        let dir = self.record.dir.clone()?;
        let timeout = self.fuse.mount_timeout;
        let locating = async {
            let place = self.soci.manifests.locate(&self.client, location, labels);
            tokio::time::timeout(timeout, place).await
        };
        match self.runtime.block_on(locating) {
            Ok(Ok(place)) => Some(Recorder::new(&dir, place, self.record.window)),
            Ok(Err(error)) => {
                tracing::warn!(digest = %location.digest, %error, "not recording this layer");
                None
            }
            Err(_) => {
                tracing::warn!(digest = %location.digest, "not recording this layer: manifest lookup timed out");
                None
            }
        }
    }

    /// Fetches the layer's prioritized range before the mount is reported ready, waiting
    /// at most the prefetch timeout (the fetch itself goes on). A layer without
    /// prioritized files gets the learned files its image's index lists, if any.
    fn prefetch_before_ready(
        &self,
        layer: &Layer,
        location: &BlobLocation,
        labels: &Labels,
    ) -> prefetch::PrefetchOutcome {
        if !self.prefetch.enable {
            return prefetch::PrefetchOutcome::None;
        }
        let timeout = self.prefetch.timeout;
        let learned = (self.soci).prefetch_learned(&self.client, layer, location, labels, timeout);
        // The layer's own ranges do not wait for the learned-files look-up.
        let ranges = prefetch::prefetch_ranges(layer.index(), layer.toc_offset(), labels);
        let own = async {
            match ranges.is_empty() {
                true => None,
                false => Some(prefetch::prefetch(layer, ranges, timeout).await),
            }
        };
        let (learned, own) = self.runtime.block_on(async { tokio::join!(learned, own) });
        learned.or(own).unwrap_or(prefetch::PrefetchOutcome::None)
    }

    /// The layer at `location`, checked against `toc_digest`: the one another mount
    /// serves, else taken from the layers opened ahead when it is among them, else opened
    /// now.
    async fn open_layer(
        &self,
        location: BlobLocation,
        toc_digest: Option<estargz::Digest>,
    ) -> Result<(Layer, Sharing), LazyError> {
        if toc_digest.is_none() && self.layer.verify {
            return Err(LayerError::MissingTocDigest {
                blob: location.digest,
            }
            .into());
        }
        let digest = location.digest;
        let (layer, sharing) = self
            .layers
            .get_or_open(digest, || self.open_unshared(location))
            .await?;
        layer.check_toc(toc_digest)?;
        if sharing == Sharing::Shared {
            tracing::debug!(%digest, "sharing the layer another mount serves");
        }
        Ok((layer, sharing))
    }

    /// Opens the layer at `location` (TOC not yet checked): taken from the layers opened
    /// ahead when it is among them, else opened now.
    async fn open_unshared(&self, location: BlobLocation) -> Result<Layer, LazyError> {
        if let Some(opening) = self.preopened.take(&location.digest) {
            match opening.await {
                Ok(layer) => {
                    tracing::debug!(digest = %location.digest, "using the layer opened ahead");
                    return Ok(layer);
                }
                Err(error) => {
                    tracing::debug!(digest = %location.digest, %error, "opening ahead failed; opening again");
                }
            }
        }
        open_unchecked(
            self.client.clone(),
            location,
            self.cache.clone(),
            self.layer.clone(),
        )
        .await
    }

    /// Starts opening the image's layers listed above this one, with their prefetch.
    fn open_layers_ahead(&self, location: &BlobLocation, labels: &Labels) {
        if !self.prefetch.open_layers_ahead {
            return;
        }
        for digest in listed_layers(labels) {
            // A layer some mount serves already has its TOC and prefetch.
            if digest == location.digest || self.layers.live(&digest).is_some() {
                continue;
            }
            let neighbour = BlobLocation {
                reference: location.reference.clone(),
                digest,
            };
            let (client, cache, config) =
                (self.client.clone(), self.cache.clone(), self.layer.clone());
            let prefetch = self.prefetch.enable;
            let labels = labels.clone();
            let opening = async move {
                let layer = open_unchecked(client, neighbour, cache, config)
                    .await
                    .map_err(|e| e.to_string())?;
                let ranges = if prefetch {
                    prefetch::prefetch_ranges(layer.index(), layer.toc_offset(), &labels)
                } else {
                    Vec::new()
                };
                if !ranges.is_empty() {
                    // Chunks are checked against their own digests, so prefetching before
                    // the TOC itself is checked caches nothing wrong.
                    tokio::spawn(prefetch::fetch_all(layer.clone(), ranges));
                }
                Ok(layer)
            };
            self.preopened.start(digest, opening, &self.runtime);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, MountHandle>> {
        self.mounts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opens the layer blob at `location` (TOC not yet checked against its label). When the
/// registry cannot be reached, a TOC saved by an earlier opening serves instead: the layer
/// mounts and lists, and its reads wait for the registry.
async fn open_unchecked(
    client: registry::Client,
    location: BlobLocation,
    cache: Arc<ChunkCache>,
    config: LayerConfig,
) -> Result<Layer, LazyError> {
    let digest = location.digest;
    let blob = match RegistryBlob::open(client.clone(), location.clone()).await {
        Ok(blob) => {
            tracing::info!(%digest, "fetching the layer footer and TOC from the registry");
            blob
        }
        Err(error) => {
            let Some((size, tail)) = cache.saved_toc(&digest) else {
                return Err(error.into());
            };
            tracing::info!(%digest, %error, "registry unreachable: opening the layer from its saved TOC");
            RegistryBlob::with_tail(client, location, size, tail)
        }
    };
    Ok(Layer::open_unchecked(Arc::new(blob), cache, config).await?)
}

impl Mounter for FuseMounter {
    fn mount(&self, mountpoint: &Path, labels: &Labels) -> Result<(), MountError> {
        self.mount_layer(mountpoint, labels, None).map_err(|e| {
            self.board.fallback(labels, FallbackReason::from(&e));
            MountError::NotRemote(e.to_string())
        })
    }

    fn mounted(&self) -> Result<Vec<PathBuf>, MountError> {
        Ok(self.mountpoints())
    }

    fn attempt_timeout(&self) -> Duration {
        // Opening (and finding the manifest to record) is bounded by the mount timeout,
        // the wait for the prefetch by its own.
        let mut bound = self
            .fuse
            .mount_timeout
            .saturating_add(self.prefetch.timeout);
        if self.record.enable {
            bound = bound.saturating_add(self.fuse.mount_timeout);
        }
        bound
    }

    fn unmount(&self, mountpoint: &Path) -> Result<(), MountError> {
        let handle = self.lock().remove(mountpoint);
        self.board.unmounted(mountpoint);
        let Some(handle) = handle else {
            return Err(MountError::NotRemote(
                LazyError::NotMounted(mountpoint.to_path_buf()).to_string(),
            ));
        };
        handle.unmount().map_err(|e| MountError::Mount {
            mountpoint: mountpoint.to_path_buf(),
            source: Box::new(e),
        })
    }
}

impl Drop for FuseMounter {
    fn drop(&mut self) {
        self.unmount_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn mounter(runtime: &tokio::runtime::Runtime, mount_timeout: Duration) -> FuseMounter {
        let remote = RemoteConfig {
            plain_http: vec!["*".to_owned()],
            retries: 0,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            docker_config: Some(PathBuf::from("/nonexistent/config.json")),
            ..RemoteConfig::default()
        };
        let fuse = FuseConfig {
            mount_timeout,
            ..FuseConfig::default()
        };
        let config = LazyConfig {
            remote,
            fuse,
            ..LazyConfig::default()
        };
        FuseMounter::new(config, runtime.handle().clone()).expect("mounter")
    }

    /// ctr-remote's labels for layer `digest` of `reference`, with a TOC digest label.
    fn ctr_remote_labels(reference: &str, digest: &str) -> Labels {
        [
            ("containerd.io/snapshot/remote/stargz.reference", reference),
            ("containerd.io/snapshot/remote/stargz.digest", digest),
            (estargz::TOC_DIGEST_ANNOTATION, DIGEST),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn reason(result: Result<(), MountError>) -> String {
        match result {
            Err(MountError::NotRemote(reason)) => reason,
            other => panic!("expected NotRemote, got {other:?}"),
        }
    }

    #[test]
    fn failures_fall_back_with_a_reason() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mounter = mounter(&runtime, Duration::from_secs(10));
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("no labels", Labels::new(), "labels: no "),
            (
                "bad digest",
                ctr_remote_labels("127.0.0.1:1/app:v1", "sha256:zz"),
                "invalid digest",
            ),
            (
                "registry unreachable",
                ctr_remote_labels("127.0.0.1:1/app:v1", DIGEST),
                "open blob",
            ),
        ];
        for (name, labels, want) in cases {
            let got = reason(mounter.mount(dir.path(), &labels));
            assert!(got.contains(want), "{name}: {got}");
        }
        assert!(mounter.mountpoints().is_empty());
    }

    #[test]
    fn a_silent_registry_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mounter = mounter(&runtime, Duration::from_millis(300));
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = ctr_remote_labels(&format!("{address}/app:v1"), DIGEST);
        let started = std::time::Instant::now();
        let got = reason(mounter.mount(dir.path(), &labels));
        assert!(got.contains("took longer than"), "{got}");
        assert!(started.elapsed() < Duration::from_secs(3), "{got}");
        drop(listener);
    }

    #[test]
    fn unmount_of_an_unknown_path_is_an_error() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mounter = mounter(&runtime, DEFAULT_MOUNT_TIMEOUT);
        let got = reason(mounter.unmount(Path::new("/nowhere")));
        assert!(got.contains("no lazy mount at /nowhere"), "{got}");
    }

    #[test]
    fn fuse_config_parses() {
        let cases: &[(&str, &str, Option<FuseConfig>)] = &[
            ("empty", "", Some(FuseConfig::default())),
            (
                "timeout fraction",
                "mount_timeout = 0.5\nallow_other = false",
                Some(FuseConfig {
                    mount_timeout: Duration::from_millis(500),
                    allow_other: false,
                    ..FuseConfig::default()
                }),
            ),
            ("negative timeout", "mount_timeout = -1", None),
            // Reported by the config loader, not refused.
            ("unknown key", "thread = 1", Some(FuseConfig::default())),
        ];
        for (name, text, want) in cases {
            let got = toml::from_str::<FuseConfig>(text).ok();
            assert_eq!(&got, want, "{name}");
        }
    }
}
