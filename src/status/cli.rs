//! The `estargz-snapshotter status` side: fetch `GET /status` from a running daemon's
//! status socket and render it for people.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::{LayerStatus, Status};

/// Errors asking the daemon for its status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {path} (is the daemon running with this root?): {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("status request: {0}")]
    Http(#[from] hyper::Error),
    #[error("build status request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("daemon answered {0}")]
    Answer(StatusCode),
    #[error("decode status: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The daemon's status and the JSON it came as.
pub async fn fetch(socket: &Path) -> Result<(Status, String), ClientError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = Request::get("/status")
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let code = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    if code != StatusCode::OK {
        return Err(ClientError::Answer(code));
    }
    let raw = String::from_utf8_lossy(&body).into_owned();
    let status = serde_json::from_str(&raw)?;
    Ok((status, raw))
}

/// A readable report of `status`; `now` (Unix seconds) dates the fallbacks.
pub fn render(status: &Status, now: u64) -> String {
    let mut out = String::new();
    if status.layers.is_empty() {
        out.push_str("no lazily mounted layers\n");
    }
    for layer in &status.layers {
        render_layer(&mut out, layer);
    }
    let fallbacks = &status.fallbacks;
    if fallbacks.by_reason.is_empty() {
        out.push_str("fallbacks: none\n");
        return out;
    }
    let counts: Vec<String> = fallbacks
        .by_reason
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    let _ = writeln!(out, "fallbacks: {}", counts.join(", "));
    for record in &fallbacks.recent {
        let ago = now.saturating_sub(record.unix_seconds);
        let layer = record.layer.as_deref().unwrap_or("(no layer digest)");
        let _ = writeln!(out, "  {ago:>6}s ago  {:<14} {layer}", record.reason);
    }
    out
}

fn render_layer(out: &mut String, layer: &LayerStatus) {
    let f = &layer.fetched_bytes;
    let _ = writeln!(out, "{}", layer.digest);
    let _ = writeln!(out, "  image       {}", layer.reference);
    let _ = writeln!(out, "  mountpoint  {}", layer.mountpoint.display());
    let _ = writeln!(out, "  blob size   {}", bytes(layer.blob_size));
    let _ = writeln!(
        out,
        "  fetched     {} ({:.1}% local): on demand {}, prefetch {}, background {}",
        bytes(f.total()),
        layer.percent_fetched,
        bytes(f.on_demand),
        bytes(f.prefetch),
        bytes(f.background)
    );
    let _ = writeln!(out, "  prefetch    {}", json_name(&layer.prefetch));
    let _ = writeln!(out, "  background  {}", json_name(&layer.background));
}

/// The serde name of a unit enum variant (`done`, `pending`, ...).
fn json_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `n` bytes in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::super::{BackgroundState, FallbackRecord, FetchedBytes, PrefetchState};
    use super::*;

    #[test]
    fn renders_layers_and_fallbacks() {
        let mut status = Status::default();
        assert_eq!(
            render(&status, 0),
            "no lazily mounted layers\nfallbacks: none\n"
        );
        status.layers.push(LayerStatus {
            digest: "sha256:aa".into(),
            reference: "r:5000/app".into(),
            mountpoint: "/s/1/fs".into(),
            blob_size: 3 << 20,
            fetched_bytes: FetchedBytes {
                on_demand: 1536,
                prefetch: 0,
                background: 0,
            },
            percent_fetched: 12.5,
            prefetch: PrefetchState::Pending,
            background: BackgroundState::Running,
        });
        status.fallbacks.by_reason.insert("toc_mismatch".into(), 2);
        status.fallbacks.recent.push(FallbackRecord {
            layer: Some("sha256:bb".into()),
            reason: "toc_mismatch".into(),
            unix_seconds: 90,
        });
        let text = render(&status, 100);
        for want in [
            "sha256:aa\n",
            "image       r:5000/app",
            "blob size   3.0 MiB",
            "1.5 KiB (12.5% local)",
            "prefetch    pending",
            "background  running",
            "fallbacks: toc_mismatch 2",
            "10s ago  toc_mismatch   sha256:bb",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }

    #[test]
    fn byte_units() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (5 << 30, "5.0 GiB"),
        ];
        for (n, want) in cases {
            assert_eq!(bytes(n), want);
        }
    }
}
