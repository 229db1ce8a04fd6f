//! Runs the daemon: opens the store, serves the Snapshots API on a unix socket until the
//! shutdown future resolves, then finishes in-flight requests and removes the socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::grpc::SnapshotService;
use crate::proto::snapshots::snapshots_server::SnapshotsServer;
use crate::snapshot::{self, Store};

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
    #[error("serve gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let root = config.root.clone();
    let store = Store::open(&root).map_err(|source| Error::Store { root, source })?;
    let listener = bind(&config.address)?;
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
    served?;
    tracing::info!("stopped");
    Ok(())
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
