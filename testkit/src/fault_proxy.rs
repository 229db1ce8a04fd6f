//! A fault-injecting HTTP/1.1 reverse proxy in front of a registry, for fault tests.
//!
//! The test switches the [`FaultMode`] at runtime. Faults hit blob data reads only: `GET`
//! of `/v2/<name>/blobs/<digest>` without a suffix range. Manifests, `HEAD`, uploads and
//! the suffix-range read of a blob's tail (footer and TOC, how a lazy layer is opened)
//! always pass, so a layer can be mounted and then have its chunk fetches fail.
//!
//! One request per connection (`Connection: close` both ways) on blocking threads: simple,
//! and each response's fate is decided once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request or response head accepted.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// How long a connection may sit idle before the proxy drops it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Distance between the bytes [`FaultMode::WrongBytes`] flips: every chunk gets one.
const FLIP_EVERY: usize = 64 << 10;

/// What happens to blob data reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Relayed unchanged.
    Pass,
    /// The connection is closed without an answer, as when the registry dies.
    Killed,
    /// Headers and the first half of the body, then a pause of this long, then the rest.
    Slow(Duration),
    /// `500 Internal Server Error`, the registry never asked.
    Status500,
    /// Headers with the real `Content-Length`, half of the body, then the connection closes.
    Truncate,
    /// The real headers and length, with one byte in every 64 KiB of the body flipped.
    WrongBytes,
}

/// How multi-range blob reads (`Range: bytes=a-b,c-d`) are answered, playing the
/// registries that differ there. Single-range reads are not touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiRangeAnswer {
    /// Relayed: the registry's own answer (docker-registry sends the parts).
    Parts,
    /// Only the first range is asked for upstream: 206 with one range.
    FirstRange,
    /// The `Range` header is dropped upstream: 200 with the whole blob (as ECR does).
    WholeBlob,
    /// `400 Bad Request`, the registry never asked (as gcr did).
    Status400,
}

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum FaultProxyError {
    #[error("bind fault proxy on 127.0.0.1: {0}")]
    Bind(io::Error),
    #[error("start fault proxy thread: {0}")]
    Thread(io::Error),
}

/// A running proxy on `127.0.0.1:<free port>`; stopped on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: String,
    mode: Mutex<FaultMode>,
    multi_range: Mutex<MultiRangeAnswer>,
    multi_range_reads: AtomicU64,
    blob_reads: AtomicU64,
    faulted: AtomicU64,
    stopping: AtomicBool,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`host:port`), in [`FaultMode::Pass`].
    pub fn start(upstream: &str) -> Result<FaultProxy, FaultProxyError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(FaultProxyError::Bind)?;
        let addr = listener.local_addr().map_err(FaultProxyError::Bind)?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            mode: Mutex::new(FaultMode::Pass),
            multi_range: Mutex::new(MultiRangeAnswer::Parts),
            multi_range_reads: AtomicU64::new(0),
            blob_reads: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || accept_loop(&listener, &shared))
                .map_err(FaultProxyError::Thread)?
        };
        Ok(FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// `127.0.0.1:PORT`, to use in image references instead of the registry's host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Applies `mode` to blob data reads from the next request on.
    pub fn set_mode(&self, mode: FaultMode) {
        *self.shared.lock_mode() = mode;
    }

    /// Answers multi-range blob reads as `answer` from the next request on.
    pub fn set_multi_range(&self, answer: MultiRangeAnswer) {
        *self
            .shared
            .multi_range
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = answer;
    }

    /// Multi-range blob reads seen so far.
    pub fn multi_range_reads(&self) -> u64 {
        self.shared.multi_range_reads.load(Ordering::SeqCst)
    }

    /// Blob data reads seen so far (faulted or not).
    pub fn blob_reads(&self) -> u64 {
        self.shared.blob_reads.load(Ordering::SeqCst)
    }

    /// Blob data reads that were given a fault so far.
    pub fn faulted(&self) -> u64 {
        self.shared.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn lock_mode(&self) -> std::sync::MutexGuard<'_, FaultMode> {
        self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        // A connection that fails only fails its own request.
        let _ = std::thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || {
                let _ = serve(stream, &shared);
            });
    }
}

/// Answers one request on `client`, then closes it.
fn serve(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let (head, body_start) = read_head(&mut client)?;
    let mut request = Head::parse(&head)?;
    let body = read_body(&mut client, body_start, request.content_length())?;
    let mode = if is_blob_data_read(&request) {
        shared.blob_reads.fetch_add(1, Ordering::SeqCst);
        *shared.lock_mode()
    } else {
        FaultMode::Pass
    };
    if mode != FaultMode::Pass {
        shared.faulted.fetch_add(1, Ordering::SeqCst);
    }
    if is_blob_data_read(&request) && request.header("range").is_some_and(|r| r.contains(',')) {
        shared.multi_range_reads.fetch_add(1, Ordering::SeqCst);
        let answer = *shared
            .multi_range
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match answer {
            MultiRangeAnswer::Parts => {}
            MultiRangeAnswer::FirstRange => request.keep_first_range(),
            MultiRangeAnswer::WholeBlob => request.remove_header("range"),
            MultiRangeAnswer::Status400 => return client.write_all(STATUS_400),
        }
    }
    match mode {
        FaultMode::Killed => return client.shutdown(Shutdown::Both),
        FaultMode::Status500 => return client.write_all(STATUS_500),
        _ => {}
    }
    let response = match forward(&shared.upstream, &request, &body) {
        Ok(response) => response,
        Err(_) => return client.write_all(STATUS_502),
    };
    let (head, mut body) = split_response(&response)?;
    client.write_all(&head)?;
    match mode {
        FaultMode::Slow(pause) => {
            let half = body.len() / 2;
            client.write_all(&body[..half])?;
            client.flush()?;
            std::thread::sleep(pause);
            client.write_all(&body[half..])?;
        }
        FaultMode::Truncate => client.write_all(&body[..body.len() / 2])?,
        FaultMode::WrongBytes => {
            flip_bytes(&mut body);
            client.write_all(&body)?;
        }
        _ => client.write_all(&body)?,
    }
    client.flush()?;
    client.shutdown(Shutdown::Both)
}

const STATUS_500: &[u8] =
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
    Content-Length: 2\r\nConnection: close\r\n\r\n{}";
const STATUS_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
    Content-Length: 2\r\nConnection: close\r\n\r\n{}";
const STATUS_502: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Sends `request` to `upstream` on a fresh connection and reads the whole answer.
fn forward(upstream: &str, request: &Head, body: &[u8]) -> io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(IDLE_TIMEOUT))?;
    server.write_all(&request.encode())?;
    server.write_all(body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    Ok(response)
}

/// The response's head, rewritten to close the connection, and its body.
fn split_response(response: &[u8]) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let end = find_head_end(response).ok_or_else(|| bad("response without a head"))?;
    let head = Head::parse(&response[..end])?;
    Ok((head.encode(), response[end..].to_vec()))
}

fn flip_bytes(body: &mut [u8]) {
    let mut at = body.len().min(FLIP_EVERY) / 2;
    while let Some(byte) = body.get_mut(at) {
        *byte ^= 0xff;
        at += FLIP_EVERY;
    }
}

/// A blob read that is not for the blob's tail (suffix range `bytes=-N`).
fn is_blob_data_read(request: &Head) -> bool {
    let path = request.target().split('?').next().unwrap_or_default();
    let blob = path.starts_with("/v2/")
        && path
            .rsplit_once("/blobs/")
            .is_some_and(|(_, digest)| digest.starts_with("sha256:"));
    let suffix = request
        .header("range")
        .is_some_and(|r| r.trim().starts_with("bytes=-"));
    request.start_line.starts_with("GET ") && blob && !suffix
}

/// A request or response head: its first line and its headers.
struct Head {
    start_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(bytes: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(bytes).map_err(|_| bad("head is not utf-8"))?;
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let start_line = lines.next().ok_or_else(|| bad("empty head"))?.to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Head {
            start_line,
            headers,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// `Range: bytes=a-b,c-d` becomes `Range: bytes=a-b`.
    fn keep_first_range(&mut self) {
        for (name, value) in &mut self.headers {
            if name.eq_ignore_ascii_case("range") {
                if let Some((first, _)) = value.split_once(',') {
                    *value = first.to_owned();
                }
            }
        }
    }

    fn target(&self) -> &str {
        self.start_line.split(' ').nth(1).unwrap_or_default()
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The head as sent on: keep-alive replaced by `Connection: close`.
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start_line);
        for (name, value) in &self.headers {
            if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive")
            {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Reads up to the end of the head; returns the head and the body bytes read past it.
fn read_head(stream: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        if let Some(end) = find_head_end(&buf) {
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(bad("head too long"));
        }
        let n = stream.read(&mut piece)?;
        if n == 0 {
            return Err(bad("connection closed inside the head"));
        }
        buf.extend_from_slice(&piece[..n]);
    }
}

fn read_body(stream: &mut TcpStream, mut body: Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
    if body.len() < len {
        let mut rest = vec![0; len - body.len()];
        stream.read_exact(&mut rest)?;
        body.extend_from_slice(&rest);
    }
    body.truncate(len);
    Ok(body)
}

/// Index just past the blank line ending the head.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = &[7u8; 200 << 10];

    /// Whether a raw response is what the mode should give.
    type Check = fn(&[u8]) -> bool;

    /// A one-shot-per-connection server answering every request with `BODY`.
    fn upstream() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = read_head(&mut stream);
                let head = format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n", BODY.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(BODY);
            }
        });
        addr
    }

    /// Sends a GET for `path` with `range` and returns the raw response.
    fn get(proxy: &FaultProxy, path: &str, range: &str) -> Vec<u8> {
        let mut stream = TcpStream::connect(proxy.host()).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nrange: {range}\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        out
    }

    fn body_of(response: &[u8]) -> &[u8] {
        find_head_end(response).map_or(&[][..], |end| &response[end..])
    }

    #[test]
    fn modes_shape_blob_data_reads_only() {
        let proxy = FaultProxy::start(&upstream()).unwrap();
        let blob = "/v2/a/b/blobs/sha256:00";
        let cases: [(&str, FaultMode, &str, &str, Check); 7] = [
            ("pass", FaultMode::Pass, blob, "bytes=0-9", |r| {
                body_of(r) == BODY
            }),
            ("killed", FaultMode::Killed, blob, "bytes=0-9", |r| {
                r.is_empty()
            }),
            ("500", FaultMode::Status500, blob, "bytes=0-9", |r| {
                r.starts_with(b"HTTP/1.1 500")
            }),
            ("truncate", FaultMode::Truncate, blob, "bytes=0-9", |r| {
                body_of(r) == &BODY[..BODY.len() / 2]
            }),
            (
                "wrong bytes",
                FaultMode::WrongBytes,
                blob,
                "bytes=0-9",
                |r| {
                    let body = body_of(r);
                    body.len() == BODY.len() && body.iter().filter(|&&b| b != 7).count() == 3
                },
            ),
            ("tail passes", FaultMode::Killed, blob, "bytes=-100", |r| {
                body_of(r) == BODY
            }),
            (
                "manifest passes",
                FaultMode::Killed,
                "/v2/a/manifests/v1",
                "bytes=0-9",
                |r| body_of(r) == BODY,
            ),
        ];
        for (name, mode, path, range, check) in cases {
            proxy.set_mode(mode);
            let response = get(&proxy, path, range);
            assert!(check(&response), "{name}: {} bytes", response.len());
            if !response.is_empty() {
                let text = String::from_utf8_lossy(&response[..64.min(response.len())]);
                assert!(!text.contains("keep-alive"), "{name}: {text}");
            }
        }
        assert_eq!(proxy.blob_reads(), 5);
        assert_eq!(proxy.faulted(), 4);
    }

    #[test]
    fn slow_holds_half_the_body() {
        let proxy = FaultProxy::start(&upstream()).unwrap();
        proxy.set_mode(FaultMode::Slow(Duration::from_millis(300)));
        let started = std::time::Instant::now();
        let response = get(&proxy, "/v2/a/blobs/sha256:00", "bytes=0-9");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(body_of(&response), BODY);
    }
}
