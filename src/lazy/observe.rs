//! What the data path reports while it works, and who hears it. Code under `lazy/`
//! reports through [`observer()`]: bytes fetched, range requests and how they ended,
//! chunk cache lookups, failed disk writes, fallbacks it decides itself, bytes that failed
//! verification. The process
//! installs one [`Observer`] at startup (the daemon's metrics, in `service` and in the
//! fuse manager); until then, and in unit tests, reports go nowhere. So the observers
//! depend on the data path and its vocabulary, and nothing in `lazy/` imports them.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::lazy::fallback::FallbackReason;

/// The `kind` of the requests that fetch a layer's footer and TOC.
pub const TOC_KIND: &str = "toc";

/// Hears what the data path reports. Every method has a no-op default.
pub trait Observer: Send + Sync {
    /// `bytes` were fetched for `kind` (a `FetchKind::name()`, [`TOC_KIND`], ...).
    fn fetched(&self, _kind: &'static str, _bytes: u64) {}
    /// One range request of `kind` ended with `result` (`ok`, `error`, or `timeout` when
    /// it was dropped unfinished) after `elapsed`.
    fn request_finished(&self, _kind: &'static str, _result: &'static str, _elapsed: Duration) {}
    /// `total` chunks were looked up: the first `memory` found in memory, `local` (memory
    /// included) in some cache, the rest missed.
    fn chunk_lookups(&self, _total: usize, _memory: usize, _local: usize) {}
    /// A chunk cache disk write failed.
    fn cache_disk_write_failure(&self) {}
    /// A layer falls back to an ordinary pull (or, mounted, stops serving) for `reason`.
    fn fallback(&self, _reason: FallbackReason) {}
    /// Fetched bytes did not match their digest and were not served: `what` is
    /// [`CHUNK`], [`SOCI_SPAN`] or [`SOCI_BLOCK`].
    fn verification_failed(&self, _what: &'static str) {}
}

/// An eStargz / zstd:chunked chunk, for [`Observer::verification_failed`].
pub const CHUNK: &str = "chunk";
/// A SOCI span (checked against the zTOC's span digest).
pub const SOCI_SPAN: &str = "soci_span";
/// A 64 KiB block of a SOCI span (checked against the span blocks blob).
pub const SOCI_BLOCK: &str = "soci_block";

struct Nobody;

impl Observer for Nobody {}

static OBSERVER: OnceLock<&'static dyn Observer> = OnceLock::new();

/// Installs the process's observer; the first call wins (later ones are ignored).
pub fn install(observer: &'static dyn Observer) {
    let _ = OBSERVER.set(observer);
}

/// The installed observer, or one that hears nothing.
pub fn observer() -> &'static dyn Observer {
    OBSERVER.get().copied().unwrap_or(&Nobody)
}

/// Runs one range request of `kind`, reporting its latency and result; a request dropped
/// before it finished (its timeout fired) is reported as `timeout`.
pub async fn range_request<T, E>(
    kind: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let mut timer = RequestTimer {
        kind,
        started: Instant::now(),
        result: "timeout",
    };
    let result = request.await;
    timer.result = if result.is_ok() { "ok" } else { "error" };
    result
}

struct RequestTimer {
    kind: &'static str,
    started: Instant,
    result: &'static str,
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        observer().request_finished(self.kind, self.result, self.started.elapsed());
    }
}
