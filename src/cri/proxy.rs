//! The CRI image-service proxy: serves `runtime.v1.ImageService` (ListImages,
//! ImageStatus, PullImage, RemoveImage, ImageFsInfo, and any unary method a newer kubelet
//! adds) by forwarding every call, bytes and metadata unchanged, to containerd's CRI
//! socket and answering with containerd's answer or status. Before a `PullImage` is
//! forwarded, its credentials go to the [`Keychain`], so that the Prepares containerd
//! sends for that pull already find them.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::http::{Request, Response, Uri};
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::codec::RawCodec;
use super::keychain::Keychain;
use super::message::PullImageRequest;

/// The gRPC service the proxy serves (kubelet's `--image-service-endpoint`).
pub const SERVICE_NAME: &str = "runtime.v1.ImageService";
/// Largest message either way; kubelet allows 16 MiB (ListImages on a full node).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Request headers not passed on: the proxy re-encodes the body uncompressed.
const DROPPED_HEADERS: &[&str] = &["grpc-encoding", "grpc-accept-encoding", "content-length"];

/// Forwards the image service to containerd; cheap to clone (one shared channel).
#[derive(Clone)]
pub struct ImageServiceProxy {
    upstream: Channel,
    upstream_path: PathBuf,
    /// None when lazy pulling is off: calls are still forwarded, nothing is remembered.
    keychain: Option<Keychain>,
}

impl ImageServiceProxy {
    /// A proxy to containerd's CRI socket at `upstream` (connected on first use, so the
    /// daemon may start before containerd).
    pub fn new(upstream: &Path, keychain: Option<Keychain>) -> ImageServiceProxy {
        let connector = UnixConnector(upstream.to_path_buf());
        let upstream_channel =
            Endpoint::from_static("http://localhost").connect_with_connector_lazy(connector);
        ImageServiceProxy {
            upstream: upstream_channel,
            upstream_path: upstream.to_path_buf(),
            keychain,
        }
    }

    /// Forwards one call to `path` (`/runtime.v1.ImageService/<Method>`).
    async fn forward(
        &self,
        path: &str,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, Status> {
        tracing::debug!(path, "CRI image call");
        if path.ends_with("/PullImage") {
            self.remember_credentials(request.get_ref());
        }
        let path = PathAndQuery::try_from(path)
            .map_err(|_| Status::unimplemented(format!("no such method {path}")))?;
        let mut grpc = tonic::client::Grpc::new(self.upstream.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready().await.map_err(|e| {
            let at = self.upstream_path.display();
            Status::unavailable(format!("containerd CRI at {at}: {e}"))
        })?;
        let (mut metadata, _, message) = request.into_parts();
        for header in DROPPED_HEADERS {
            metadata.remove(*header);
        }
        let request = tonic::Request::from_parts(metadata, Default::default(), message);
        grpc.unary(request, path, RawCodec).await
    }

    /// Stores the pull's credentials; a request the keychain cannot read is still
    /// forwarded (containerd decides), and only the host is logged.
    fn remember_credentials(&self, body: &Bytes) {
        let Some(keychain) = &self.keychain else {
            return;
        };
        let request = match PullImageRequest::decode(body.clone()) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "undecodable PullImage request: credentials not kept");
                return;
            }
        };
        match keychain.remember(&request) {
            Ok(Some(host)) => tracing::info!(%host, "pull credentials kept for lazy reads"),
            Ok(None) => tracing::debug!("PullImage without credentials"),
            Err(error) => tracing::warn!(%error, "PullImage credentials not kept"),
        }
    }
}

impl NamedService for ImageServiceProxy {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<Request<B>> for ImageServiceProxy
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = Forward {
            path: request.uri().path().to_owned(),
            proxy: self.clone(),
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_max_message_size_config(Some(MAX_MESSAGE_BYTES), Some(MAX_MESSAGE_BYTES));
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// One call's forwarding, as tonic's server runs it.
struct Forward {
    path: String,
    proxy: ImageServiceProxy,
}

impl UnaryService<Bytes> for Forward {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (path, proxy) = (self.path.clone(), self.proxy.clone());
        Box::pin(async move { proxy.forward(&path, request).await })
    }
}

/// Connects the upstream channel to a unix socket (the URI is ignored).
#[derive(Clone)]
struct UnixConnector(PathBuf);

impl Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            tokio::net::UnixStream::connect(path)
                .await
                .map(TokioIo::new)
        })
    }
}
