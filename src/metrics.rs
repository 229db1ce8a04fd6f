//! Prometheus metrics of the daemon: one registry of every metric (bytes fetched, range
//! requests, chunk cache lookups, fallbacks, mounts, per-layer progress), the one-line
//! recording calls the rest of the crate makes, the fixed set of fallback reasons (which
//! error counts as which is decided where the errors are, in `lazy::fallback`), and the `[metrics]` config. The HTTP endpoint serving
//! [`Metrics::encode`] is in `status::endpoint`.
//!
//! Labels only ever hold values from fixed sets, plus layer digests: never error text,
//! URLs, credentials or paths from images.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Deserializer};
use std::sync::atomic::AtomicU64;

pub use crate::lazy::fallback::FallbackReason;
use crate::lazy::observe::Observer;
pub use crate::lazy::observe::TOC_KIND;

/// Metrics settings (the `[metrics]` table of the daemon config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// TCP address (`"127.0.0.1:9090"`) serving `GET /metrics` (Prometheus text format)
    /// and `GET /status` (JSON). Default unset (or `""`): no metrics endpoint.
    #[serde(deserialize_with = "optional_address")]
    pub address: Option<SocketAddr>,
}

fn optional_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Where a chunk lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Memory,
    Disk,
    Miss,
}

impl CacheResult {
    fn label(self) -> &'static str {
        match self {
            CacheResult::Memory => "memory",
            CacheResult::Disk => "disk",
            CacheResult::Miss => "miss",
        }
    }
}

/// Kind label of an orphan mount (a lazy layer mount no snapshot owned).
pub const ORPHAN_MOUNT: &str = "mount";
/// Kind label of an orphan snapshot directory.
pub const ORPHAN_DIRECTORY: &str = "directory";

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type HistogramFamily = Family<Labels1, Histogram, fn() -> Histogram>;

/// Every metric of the daemon, registered under the `estargz_` prefix.
pub struct Metrics {
    registry: Registry,
    fetched_bytes: Family<Labels1, Counter>,
    request_seconds: HistogramFamily,
    requests: Family<Labels2, Counter>,
    chunk_lookups: Family<Labels1, Counter>,
    fallbacks: Family<Labels1, Counter>,
    cache_disk_write_failures: Counter,
    verification_failures: Family<Labels1, Counter>,
    mounts: Counter,
    mounted: Gauge,
    layer_percent: Family<[(&'static str, String); 1], Gauge<f64, AtomicU64>>,
    orphans: Family<Labels1, Counter>,
    adopted: Counter,
}

/// Range-request latency buckets: 5 ms to about 41 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry (the daemon uses [`global`]; tests make their own).
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("estargz"),
            fetched_bytes: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram),
            requests: Family::default(),
            chunk_lookups: Family::default(),
            fallbacks: Family::default(),
            cache_disk_write_failures: Counter::default(),
            verification_failures: Family::default(),
            mounts: Counter::default(),
            mounted: Gauge::default(),
            layer_percent: Family::default(),
            orphans: Family::default(),
            adopted: Counter::default(),
        };
        let r = &mut m.registry;
        r.register_with_unit(
            "fetched",
            "Compressed layer bytes fetched from registries, by kind (on_demand, prefetch, background, toc)",
            Unit::Bytes,
            m.fetched_bytes.clone(),
        );
        r.register_with_unit(
            "range_request_duration",
            "Latency of registry range requests, by kind",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        r.register(
            "range_requests",
            "Registry range requests, by kind and result (ok, error, timeout)",
            m.requests.clone(),
        );
        r.register(
            "chunk_cache_lookups",
            "Chunk lookups, by where they were answered (memory, disk, miss)",
            m.chunk_lookups.clone(),
        );
        r.register(
            "fallbacks",
            "Layers pulled the ordinary way instead of lazily, by reason",
            m.fallbacks.clone(),
        );
        r.register(
            "cache_disk_write_failures",
            "Chunk cache disk writes that failed (each pauses disk writes for 30 s)",
            m.cache_disk_write_failures.clone(),
        );
        r.register(
            "verification_failures",
            "Fetched bytes that did not match their digest and were never served, by what (chunk, soci_span, soci_block)",
            m.verification_failures.clone(),
        );
        r.register("lazy_mounts", "Layers mounted lazily", m.mounts.clone());
        r.register(
            "lazy_mounted_layers",
            "Layers currently mounted lazily",
            m.mounted.clone(),
        );
        r.register(
            "layer_fetched_percent",
            "Share of each mounted layer's data fetched so far, percent",
            m.layer_percent.clone(),
        );
        r.register(
            "orphans_removed",
            "Leftovers of crashes no snapshot owned, removed, by kind (mount, directory)",
            m.orphans.clone(),
        );
        r.register(
            "fuse_connections_adopted",
            "Mounts whose FUSE connection a new fuse manager took over from a dead one",
            m.adopted.clone(),
        );
        m
    }

    /// Counts `bytes` fetched for `kind` (a `FetchKind::name()` or [`TOC_KIND`]).
    pub fn fetched(&self, kind: &'static str, bytes: u64) {
        self.fetched_bytes
            .get_or_create(&[("kind", kind)])
            .inc_by(bytes);
    }

    /// Runs one range request of `kind`, recording its latency and result; a request
    /// dropped before it finished (its timeout fired) counts as `timeout`.
    pub async fn range_request<T, E>(
        &self,
        kind: &'static str,
        request: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let mut timer = RequestTimer {
            metrics: self,
            kind,
            started: Instant::now(),
            result: "timeout",
        };
        let result = request.await;
        timer.result = if result.is_ok() { "ok" } else { "error" };
        result
    }

    fn finish_request(&self, kind: &'static str, result: &'static str, elapsed: Duration) {
        let labels = [("kind", kind)];
        self.request_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&[("kind", kind), ("result", result)])
            .inc();
    }

    /// Counts the lookups of `total` chunks: the first `memory` were found in memory,
    /// `local` (memory included) in some cache, the rest missed.
    pub fn chunk_lookups(&self, total: usize, memory: usize, local: usize) {
        let counts = [
            (CacheResult::Memory, memory),
            (CacheResult::Disk, local.saturating_sub(memory)),
            (CacheResult::Miss, total.saturating_sub(local)),
        ];
        for (result, count) in counts {
            let count = u64::try_from(count).unwrap_or(u64::MAX);
            if count > 0 {
                let labels = [("result", result.label())];
                self.chunk_lookups.get_or_create(&labels).inc_by(count);
            }
        }
    }

    /// Counts a fallback to an ordinary pull.
    pub fn fallback(&self, reason: FallbackReason) {
        self.fallbacks
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }

    /// Counts an orphan removed: `kind` is [`ORPHAN_MOUNT`] or [`ORPHAN_DIRECTORY`].
    pub fn orphan_removed(&self, kind: &'static str) {
        self.orphans.get_or_create(&[("kind", kind)]).inc();
    }

    /// Counts a mount taken over from a dead fuse manager.
    pub fn connection_adopted(&self) {
        self.adopted.inc();
    }

    /// Counts the orphans one Cleanup (or the startup sweep) removed: `mounts` stale
    /// mounts and `directories` directories.
    pub fn cleaned_up(&self, mounts: usize, directories: usize) {
        for _ in 0..mounts {
            self.orphan_removed(ORPHAN_MOUNT);
        }
        for _ in 0..directories {
            self.orphan_removed(ORPHAN_DIRECTORY);
        }
    }

    /// Counts a failed chunk cache disk write.
    pub fn cache_disk_write_failure(&self) {
        self.cache_disk_write_failures.inc();
    }

    /// Counts fetched bytes that failed verification (`what`: see the observe constants).
    pub fn verification_failed(&self, what: &'static str) {
        self.verification_failures
            .get_or_create(&[("what", what)])
            .inc();
    }

    /// Counts a lazy mount; `now_mounted` layers are mounted after it.
    pub fn mounted(&self, now_mounted: usize) {
        self.mounts.inc();
        self.set_mounted(now_mounted);
    }

    /// Sets how many layers are mounted lazily.
    pub fn set_mounted(&self, now_mounted: usize) {
        self.mounted
            .set(i64::try_from(now_mounted).unwrap_or(i64::MAX));
    }

    /// Replaces the per-layer progress gauges with `layers` (digest, percent fetched):
    /// unmounted layers disappear.
    pub fn set_layer_progress(&self, layers: impl IntoIterator<Item = (String, f64)>) {
        self.layer_percent.clear();
        for (digest, percent) in layers {
            self.layer_percent
                .get_or_create(&[("layer", digest)])
                .set(percent);
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "encode metrics");
        }
        text
    }
}

/// Records a range request when dropped (finished or abandoned).
struct RequestTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    started: Instant,
    result: &'static str,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .finish_request(self.kind, self.result, self.started.elapsed());
    }
}

/// The metrics hear what the data path reports (installed by the process at startup).
impl Observer for Metrics {
    fn fetched(&self, kind: &'static str, bytes: u64) {
        Metrics::fetched(self, kind, bytes);
    }

    fn request_finished(&self, kind: &'static str, result: &'static str, elapsed: Duration) {
        self.finish_request(kind, result, elapsed);
    }

    fn chunk_lookups(&self, total: usize, memory: usize, local: usize) {
        Metrics::chunk_lookups(self, total, memory, local);
    }

    fn cache_disk_write_failure(&self) {
        Metrics::cache_disk_write_failure(self);
    }

    fn fallback(&self, reason: FallbackReason) {
        Metrics::fallback(self, reason);
    }

    fn verification_failed(&self, what: &'static str) {
        Metrics::verification_failed(self, what);
    }
}

/// The daemon's metrics.
pub fn global() -> &'static Metrics {
    static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &GLOBAL
}

/// MIME type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series ` in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counters_move_and_the_text_names_them() {
        let m = Metrics::new();
        m.fetched("on_demand", 100);
        m.fetched("on_demand", 23);
        m.chunk_lookups(10, 3, 7);
        m.fallback(FallbackReason::TocMismatch);
        m.cache_disk_write_failure();
        m.verification_failed(crate::lazy::observe::CHUNK);
        m.verification_failed(crate::lazy::observe::SOCI_BLOCK);
        m.verification_failed(crate::lazy::observe::SOCI_BLOCK);
        m.mounted(1);
        m.mounted(2);
        m.set_mounted(1);
        m.set_layer_progress([("sha256:ab".to_owned(), 42.5)]);
        m.orphan_removed(ORPHAN_MOUNT);
        m.orphan_removed(ORPHAN_DIRECTORY);
        m.orphan_removed(ORPHAN_DIRECTORY);
        let text = m.encode();
        let cases = [
            ("estargz_fetched_bytes_total{kind=\"on_demand\"}", 123.0),
            ("estargz_chunk_cache_lookups_total{result=\"memory\"}", 3.0),
            ("estargz_chunk_cache_lookups_total{result=\"disk\"}", 4.0),
            ("estargz_chunk_cache_lookups_total{result=\"miss\"}", 3.0),
            ("estargz_fallbacks_total{reason=\"toc_mismatch\"}", 1.0),
            ("estargz_cache_disk_write_failures_total", 1.0),
            ("estargz_verification_failures_total{what=\"chunk\"}", 1.0),
            (
                "estargz_verification_failures_total{what=\"soci_block\"}",
                2.0,
            ),
            ("estargz_lazy_mounts_total", 2.0),
            ("estargz_lazy_mounted_layers", 1.0),
            ("estargz_layer_fetched_percent{layer=\"sha256:ab\"}", 42.5),
            ("estargz_orphans_removed_total{kind=\"mount\"}", 1.0),
            ("estargz_orphans_removed_total{kind=\"directory\"}", 2.0),
        ];
        for (series, want) in cases {
            assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
        }
        m.set_layer_progress([]);
        assert!(!m.encode().contains("layer=\"sha256:ab\""), "removed");
    }

    #[tokio::test]
    async fn range_requests_record_latency_and_result() {
        let m = Metrics::new();
        let ok: Result<u8, ()> = m.range_request("prefetch", async { Ok(1) }).await;
        assert_eq!(ok, Ok(1));
        let err: Result<u8, ()> = m.range_request("prefetch", async { Err(()) }).await;
        assert_eq!(err, Err(()));
        let stalled = m.range_request("prefetch", std::future::pending::<Result<u8, ()>>());
        let timed_out = tokio::time::timeout(Duration::from_millis(10), stalled).await;
        assert!(timed_out.is_err());
        let text = m.encode();
        for result in ["ok", "error", "timeout"] {
            let series =
                format!("estargz_range_requests_total{{kind=\"prefetch\",result=\"{result}\"}}");
            assert_eq!(sample(&text, &series), Some(1.0), "{series} in\n{text}");
        }
        let count = "estargz_range_request_duration_seconds_count{kind=\"prefetch\"}";
        assert_eq!(sample(&text, count), Some(3.0), "{text}");
    }

    #[test]
    fn config_parses() {
        let cases: &[(&str, &str, Option<MetricsConfig>)] = &[
            ("empty is off", "", Some(MetricsConfig::default())),
            (
                "blank is off",
                "address = \"\"",
                Some(MetricsConfig::default()),
            ),
            (
                "address",
                "address = \"127.0.0.1:9090\"",
                Some(MetricsConfig {
                    address: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
                }),
            ),
            ("no port", "address = \"127.0.0.1\"", None),
            // Reported by the config loader, not refused.
            (
                "unknown key",
                "adress = \"127.0.0.1:1\"",
                Some(MetricsConfig::default()),
            ),
        ];
        for (name, text, want) in cases {
            let got = toml::from_str::<MetricsConfig>(text).ok();
            assert_eq!(&got, want, "{name}");
        }
    }
}
