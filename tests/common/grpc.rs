//! A tonic Snapshots client over the daemon's (or containerd's) unix socket, and the unix
//! socket channel under it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use estargz_snapshotter::grpc::NAMESPACE_HEADER;
use estargz_snapshotter::proto::snapshots::snapshots_client::SnapshotsClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

/// Connects to `socket`, retrying for up to 20 s while the server starts listening.
pub async fn connect(socket: &Path) -> SnapshotsClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_connect(socket).await {
            Ok(client) => return client,
            Err(e) if Instant::now() > deadline => {
                panic!("{} never answered: {e}", socket.display())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One connection attempt; the authority is "localhost" as containerd's dialer sends it.
pub async fn try_connect(
    socket: &Path,
) -> Result<SnapshotsClient<Channel>, tonic::transport::Error> {
    Ok(SnapshotsClient::new(unix_channel(socket).await?))
}

/// A gRPC channel to the unix socket `socket` (any service: Snapshots, CRI).
pub async fn unix_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
}

/// `message` as a request in containerd namespace `namespace`.
pub fn in_namespace<T>(message: T, namespace: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        NAMESPACE_HEADER,
        namespace.parse().expect("ascii namespace"),
    );
    request
}
