//! The small HTTP/1 endpoint: `GET /metrics` (OpenMetrics text) and `GET /status`
//! (JSON), served on the always-on status socket `<root>/status.sock` (mode 0600) and,
//! when `[metrics] address` is set, on that TCP address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

use super::Board;
use crate::metrics::{self, MetricsConfig};

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind metrics address {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The running listeners; [`Endpoints::shutdown`] stops them and removes the socket.
pub struct Endpoints {
    tasks: Vec<JoinHandle<()>>,
    socket: Option<PathBuf>,
}

/// Starts the status socket at `socket` (a failure is logged: the daemon runs without
/// it) and the metrics address when configured (a failure is an error).
pub async fn start(
    config: &MetricsConfig,
    socket: &Path,
    board: Arc<Board>,
) -> Result<Endpoints, ServerError> {
    let mut endpoints = Endpoints {
        tasks: Vec::new(),
        socket: None,
    };
    if let Some(address) = config.address {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
        let local = listener.local_addr().unwrap_or(address);
        tracing::info!(address = %local, "serving metrics");
        endpoints
            .tasks
            .push(tokio::spawn(serve_tcp(listener, board.clone())));
    }
    match bind_socket(socket) {
        Ok(listener) => {
            tracing::info!(socket = %socket.display(), "serving status");
            endpoints
                .tasks
                .push(tokio::spawn(serve_unix(listener, board)));
            endpoints.socket = Some(socket.to_path_buf());
        }
        Err(error) => {
            tracing::warn!(socket = %socket.display(), %error, "no status socket");
        }
    }
    Ok(endpoints)
}

impl Endpoints {
    /// Stops serving and removes the status socket.
    pub fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(socket) = &self.socket {
            if let Err(error) = std::fs::remove_file(socket) {
                tracing::warn!(socket = %socket.display(), %error, "remove status socket");
            }
        }
    }
}

/// Binds the socket (replacing a stale one) and makes it owner-only.
fn bind_socket(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn serve_tcp(listener: TcpListener, board: Arc<Board>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => connection(stream, board.clone()),
            Err(error) => accept_failed(error).await,
        }
    }
}

async fn serve_unix(listener: UnixListener, board: Arc<Board>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => connection(stream, board.clone()),
            Err(error) => accept_failed(error).await,
        }
    }
}

/// Accept errors (e.g. out of file descriptors) are transient: pause, then go on.
async fn accept_failed(error: std::io::Error) {
    tracing::warn!(%error, "accept status connection");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

fn connection<S>(stream: S, board: Arc<Board>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = respond(request.method(), request.uri().path(), &board);
        async move { Ok::<_, Infallible>(response) }
    });
    tokio::spawn(async move {
        let served = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        if let Err(error) = served {
            tracing::debug!(%error, "status connection");
        }
    });
}

/// The answer to `method path`.
fn respond(method: &Method, path: &str, board: &Board) -> Response<Full<Bytes>> {
    if method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match path {
        "/metrics" => {
            let status = board.status();
            let progress = status
                .layers
                .into_iter()
                .map(|l| (l.digest, l.percent_fetched));
            metrics::global().set_layer_progress(progress);
            reply(metrics::CONTENT_TYPE, metrics::global().encode())
        }
        "/status" => match serde_json::to_string_pretty(&board.status()) {
            Ok(json) => reply("application/json", json),
            Err(error) => {
                tracing::warn!(%error, "encode status");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "encode status\n")
            }
        },
        _ => plain(StatusCode::NOT_FOUND, "GET /metrics or /status\n"),
    }
}

fn reply(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn plain(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = reply("text/plain; charset=utf-8", text.to_owned());
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw HTTP/1.0 GET over TCP; returns the whole response.
    async fn get(address: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_status_on_both_listeners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join(super::super::SOCKET_NAME);
        // Find a free port, then let the endpoint bind it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let config = MetricsConfig {
            address: Some(address),
        };
        let endpoints = start(&config, &socket, Arc::new(Board::default()))
            .await
            .expect("start");
        let mode = std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let metrics = get(address, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
        assert!(metrics.contains("estargz_lazy_mounted_layers"), "{metrics}");
        let status = get(address, "/status").await;
        assert!(status.contains("\"layers\""), "{status}");
        assert!(get(address, "/other").await.contains(" 404 "));

        let (fetched, raw) = super::super::cli::fetch(&socket).await.expect("fetch");
        assert_eq!(fetched, super::super::Status::default());
        assert!(raw.contains("\"fallbacks\""), "{raw}");

        endpoints.shutdown();
        assert!(!socket.exists(), "socket removed");
    }
}
