//! Runs the daemon: builds the lazy-pull mounter (when enabled and FUSE is available),
//! opens the store, starts the status socket (and the metrics address when configured),
//! serves the Snapshots API on a unix socket until the shutdown future resolves, then
//! finishes in-flight requests, stops the status endpoints, unmounts FUSE layers and
//! removes the sockets.
//!
//! With `[cri_keychain] enable`, the CRI image-service proxy is served on its own socket
//! beside the Snapshots API, keeping pull credentials in the lazy layers' registry client.
//!
//! With `[kubeconfig_keychain] enable`, docker config Secrets are polled into that client.
//!
//! Remote snapshots are not remounted after a restart yet (issue 7).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::cri::{self, CriError};
use crate::grpc::SnapshotService;
use crate::kube::{self, KubeconfigError};
use crate::lazy::{FuseMounter, LazyConfig, LazyError};
use crate::proto::snapshots::snapshots_server::SnapshotsServer;
use crate::snapshot::{self, Mounter, Store};
use crate::status::{self, server::ServerError};

/// The device FUSE mounts need.
const FUSE_DEVICE: &str = "/dev/fuse";

/// Errors starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open snapshot store in {root}: {source}")]
    Store {
        root: PathBuf,
        source: snapshot::Error,
    },
    #[error("{op} socket {path}: {source}")]
    Socket {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("set up lazy pulling: {0}")]
    Lazy(#[from] LazyError),
    #[error("metrics endpoint: {0}")]
    Metrics(#[from] ServerError),
    #[error("CRI proxy: {0}")]
    Cri(#[from] CriError),
    #[error("kubeconfig keychain: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("serve gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let root = config.root.clone();
    let mounter = build_mounter(config)?;
    let store_mounter = mounter.clone().map(|m| m as Arc<dyn Mounter>);
    let store =
        Store::open_with(&root, store_mounter).map_err(|source| Error::Store { root, source })?;
    let board = mounter.as_ref().map(|m| m.board()).unwrap_or_default();
    let status_socket = status::socket_path(&config.root);
    let _secrets = start_secrets_watch(config, mounter.as_deref())?;
    let endpoints = status::server::start(&config.metrics, &status_socket, board).await?;
    let cri_proxy = match start_cri_proxy(config, mounter.as_deref()) {
        Ok(proxy) => proxy,
        Err(e) => {
            endpoints.shutdown();
            return Err(e);
        }
    };
    // The Snapshots socket last: its appearance tells that the daemon is ready.
    let listener = match bind(&config.address) {
        Ok(listener) => listener,
        Err(e) => {
            endpoints.shutdown();
            if let Some(proxy) = cri_proxy {
                proxy.shutdown().await;
            }
            return Err(e);
        }
    };
    tracing::info!(
        root = %config.root.display(),
        address = %config.address.display(),
        "serving containerd snapshots API"
    );
    let service = SnapshotsServer::new(SnapshotService::new(Arc::new(store)));
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    remove_socket(&config.address);
    if let Some(proxy) = cri_proxy {
        proxy.shutdown().await;
    }
    endpoints.shutdown();
    if let Some(mounter) = mounter {
        unmount_on_blocking_thread(mounter).await;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The FUSE mounter, or None (logged) when lazy pulling is off or FUSE is unavailable.
fn build_mounter(config: &Config) -> Result<Option<Arc<FuseMounter>>, Error> {
    if !config.lazy_pull {
        tracing::info!("lazy_pull = false: serving as a plain overlay snapshotter");
        return Ok(None);
    }
    if !Path::new(FUSE_DEVICE).exists() {
        tracing::warn!(
            device = FUSE_DEVICE,
            "no FUSE device: lazy pulling disabled"
        );
        return Ok(None);
    }
    let lazy = LazyConfig {
        remote: config.remote.clone(),
        cache: config.resolved_cache(),
        layer: config.layer.clone(),
        fuse: config.fuse.clone(),
        prefetch: config.prefetch.clone(),
        background: config.background_fetch.clone(),
        record: config.resolved_record(),
    };
    let cache_dir = lazy.cache.dir.clone();
    let mounter = FuseMounter::new(lazy, tokio::runtime::Handle::current())?;
    tracing::info!(cache = ?cache_dir, "lazy pulling enabled");
    Ok(Some(Arc::new(mounter)))
}

/// The CRI image-service proxy when `[cri_keychain] enable`; credentials go to the lazy
/// layers' registry client.
fn start_cri_proxy(
    config: &Config,
    mounter: Option<&FuseMounter>,
) -> Result<Option<cri::ProxyHandle>, Error> {
    if !config.cri_keychain.enable {
        return Ok(None);
    }
    let client = mounter.map(FuseMounter::registry_client);
    Ok(Some(cri::start(&config.cri_keychain, client)?))
}

/// Polling of the cluster's docker config Secrets when `[kubeconfig_keychain] enable`
/// (and there are lazy layers to read with the credentials).
fn start_secrets_watch(
    config: &Config,
    mounter: Option<&FuseMounter>,
) -> Result<Option<kube::SecretsWatch>, Error> {
    let keychain = &config.kubeconfig_keychain;
    match mounter {
        Some(mounter) if keychain.enable => {
            Ok(Some(kube::start(keychain, mounter.registry_client())?))
        }
        _ => Ok(None),
    }
}

/// Unmounting waits for FUSE threads, so it must not block the runtime.
async fn unmount_on_blocking_thread(mounter: Arc<FuseMounter>) {
    let count = mounter.mountpoints().len();
    let unmounting = tokio::task::spawn_blocking(move || mounter.unmount_all());
    if let Err(e) = unmounting.await {
        tracing::warn!(error = %e, "unmount lazy layers at shutdown");
    }
    tracing::info!(count, "unmounted lazy layers");
}

/// Binds the socket, replacing a stale one left by an earlier run.
fn bind(path: &Path) -> Result<UnixListener, Error> {
    let socket_error = |op| {
        move |source| Error::Socket {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(socket_error("create directory of"))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(socket_error("remove stale")(e))
        }
        _ => {}
    }
    UnixListener::bind(path).map_err(socket_error("bind"))
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "remove socket");
    }
}
