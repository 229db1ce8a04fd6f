//! Private registries on Kubernetes through the CRI: kubelet is pointed
//! (`--image-service-endpoint`) at the snapshotter's image-service proxy, which forwards
//! every image call to containerd and keeps the credentials of each `PullImage` for the
//! lazy reads of that image's layers (`[cri_keychain]` in the daemon config).
//!
//! `codec` passes messages as bytes, `message` reads the pull's auth, `keychain` stores
//! it in the shared registry client, `proxy` is the gRPC service, and [`start`] serves it.

mod codec;
pub mod keychain;
pub mod message;
pub mod proxy;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

pub use keychain::{Keychain, KeychainError};
pub use proxy::ImageServiceProxy;

/// The CRI image-service proxy settings (the `[cri_keychain]` table).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CriKeychainConfig {
    /// Serve the proxy and keep the credentials kubelet pulls with. Default false.
    pub enable: bool,
    /// Unix socket the proxy listens on; kubelet's `--image-service-endpoint` is
    /// `unix://` + this path. Default `/run/containerd-stargz-grpc/cri.sock`.
    pub listen_path: PathBuf,
    /// containerd's CRI socket, where every image call is forwarded.
    /// Default `/run/containerd/containerd.sock`.
    pub image_service_path: PathBuf,
}

impl Default for CriKeychainConfig {
    fn default() -> Self {
        CriKeychainConfig {
            enable: false,
            listen_path: PathBuf::from("/run/containerd-stargz-grpc/cri.sock"),
            image_service_path: PathBuf::from("/run/containerd/containerd.sock"),
        }
    }
}

/// Errors starting or running the proxy.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error(transparent)]
    Socket(#[from] crate::unix_socket::BindError),
    #[error("serve CRI image service: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A running proxy; [`ProxyHandle::shutdown`] stops it and removes its socket.
pub struct ProxyHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    path: PathBuf,
}

impl ProxyHandle {
    /// Stops serving (calls under way finish) and removes the socket.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "CRI proxy stopped with an error"),
            Err(error) => tracing::warn!(%error, "CRI proxy task"),
        }
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "remove CRI proxy socket");
        }
    }
}

/// Binds `config.listen_path` and serves the proxy on it in a task; credentials go to
/// `client` (None: forward only).
pub fn start(
    config: &CriKeychainConfig,
    client: Option<registry::Client>,
) -> Result<ProxyHandle, CriError> {
    let listener = bind(&config.listen_path)?;
    let keychain = client.map(Keychain::new);
    if keychain.is_none() {
        tracing::warn!("lazy pulling is off: the CRI proxy forwards calls, keeps no credentials");
    }
    let proxy = ImageServiceProxy::new(&config.image_service_path, keychain);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proxy)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    tracing::info!(
        listen = %config.listen_path.display(),
        containerd = %config.image_service_path.display(),
        "serving CRI image service proxy"
    );
    Ok(ProxyHandle {
        stop,
        task,
        path: config.listen_path.clone(),
    })
}

/// Binds the socket owner-only (creating its directory), replacing a stale one left by an
/// earlier run.
fn bind(path: &Path) -> Result<UnixListener, CriError> {
    Ok(crate::unix_socket::bind(
        path,
        crate::unix_socket::Access::PRIVATE,
    )?)
}
