//! Metrics and status against the real daemon and docker-registry: after a lazy Prepare
//! and reads through the FUSE mount, `GET /metrics` on the configured address counts the
//! mount, the on-demand bytes, cache misses and then hits, and a TOC-digest fallback by
//! its reason; `estargz-snapshotter status --json` lists the layer with its progress.
//! A prioritized layer with background fetch on has its prefetch and background bytes
//! counted by kind, every byte the registry served counted once, and ends at 100%.

mod common;
use common::metrics::{free_address, sample, scrape};
use common::remote::{
    blob_gets, cri_labels, expect_remote, prepare, pushed_estargz_layer, DaemonStack,
};

use std::process::Command;
use std::time::Duration;

const NS: &str = "metrics";
const WRONG_TOC: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn content(seed: u64, len: usize) -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(seed, len)
}

/// One layer: a 1 MiB file, a copy of it (same chunk digests) and 3 MiB never read.
fn image() -> testkit::BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer
        .file("data/a.bin", &content(1, 1 << 20), 0o644)
        .unwrap();
    layer
        .file("data/copy.bin", &content(1, 1 << 20), 0o644)
        .unwrap();
    layer
        .file("data/unread.bin", &content(2, 3 << 20), 0o644)
        .unwrap();
    testkit::ImageBuilder::new()
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap()
}

#[test]
fn metrics_and_status_follow_lazy_reads_and_fallbacks() {
    testkit::require!(testkit::Prereq::DevFuse);
    let address = free_address();
    // No background fetch and no passthrough: every read goes through the counted path.
    let config = format!(
        "[background_fetch]\nenable = false\n[fuse]\npassthrough = false\n\
         [metrics]\naddress = \"{address}\"\n"
    );
    let mut stack = DaemonStack::start("met-", &config);
    let layer = pushed_estargz_layer(&stack.registry, "metrics/app", &image(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));

    let labels = cri_labels(&layer, "layer-1", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-1", labels);
    let text = scrape(address);
    assert_eq!(sample(&text, "estargz_lazy_mounts_total"), 1.0, "{text}");
    assert_eq!(sample(&text, "estargz_lazy_mounted_layers"), 1.0, "{text}");
    assert!(sample(&text, "estargz_fetched_bytes_total{kind=\"toc\"}") > 0.0);

    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1, "{}", stack.daemon.log_text());
    let a = std::fs::read(mounted[0].join("data/a.bin")).unwrap();
    assert!(a == content(1, 1 << 20), "a.bin content");
    let text = scrape(address);
    let on_demand = sample(&text, "estargz_fetched_bytes_total{kind=\"on_demand\"}");
    assert!(on_demand > 0.0, "{text}");
    let misses = sample(&text, "estargz_chunk_cache_lookups_total{result=\"miss\"}");
    assert!(misses > 0.0, "{text}");
    let ok_requests = "estargz_range_requests_total{kind=\"on_demand\",result=\"ok\"}";
    assert!(sample(&text, ok_requests) > 0.0, "{text}");
    let latency = "estargz_range_request_duration_seconds_count{kind=\"on_demand\"}";
    assert!(sample(&text, latency) > 0.0, "{text}");
    let memory = "estargz_chunk_cache_lookups_total{result=\"memory\"}";
    let hits_before = sample(&text, memory);
    let percent = format!(
        "estargz_layer_fetched_percent{{layer=\"{}\"}}",
        layer.digest
    );
    let fetched_percent = sample(&text, &percent);
    assert!(0.0 < fetched_percent && fetched_percent < 100.0, "{text}");

    // The copy's chunks have the same digests: read again, from the memory cache (the
    // kernel keeps a.bin's pages, so a.bin itself would not reach the daemon again).
    let copy = std::fs::read(mounted[0].join("data/copy.bin")).unwrap();
    assert!(copy == content(1, 1 << 20), "copy.bin content");
    let text = scrape(address);
    assert!(sample(&text, memory) > hits_before, "{text}");
    assert_eq!(
        sample(&text, "estargz_fetched_bytes_total{kind=\"on_demand\"}"),
        on_demand,
        "the repeated read fetched nothing"
    );

    let wrong = cri_labels(&layer, "layer-wrong", WRONG_TOC);
    let mounts = rt
        .block_on(prepare(&mut c, NS, "extract-wrong", wrong))
        .unwrap();
    assert!(!mounts.is_empty(), "fallback answers ordinary mounts");
    let text = scrape(address);
    let fallback = "estargz_fallbacks_total{reason=\"toc_mismatch\"}";
    assert_eq!(sample(&text, fallback), 1.0, "{text}");
    assert_eq!(sample(&text, "estargz_lazy_mounted_layers"), 1.0, "{text}");

    let root = stack.dir.path().join("root");
    let socket = root.join("status.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&socket.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "status socket is owner-only");
    let json = status_command(&root, &["--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let layers = status["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{json}");
    assert_eq!(layers[0]["digest"], layer.digest.as_str(), "{json}");
    let percent = layers[0]["percent_fetched"].as_f64().unwrap();
    assert!(0.0 < percent && percent < 100.0, "{json}");
    assert!(layers[0]["fetched_bytes"]["on_demand"].as_u64().unwrap() > 0);
    assert_eq!(layers[0]["background"], "off", "{json}");
    assert_eq!(
        status["fallbacks"]["by_reason"]["toc_mismatch"], 1,
        "{json}"
    );
    let report = status_command(&root, &[]);
    assert!(report.contains(&layer.digest), "{report}");
    assert!(report.contains("fallbacks: toc_mismatch 1"), "{report}");

    assert!(stack.daemon.signal("-TERM").success());
    assert!(!socket.exists(), "status socket removed at shutdown");
}

#[test]
fn prefetch_and_background_bytes_are_counted_by_kind() {
    testkit::require!(testkit::Prereq::DevFuse);
    let address = free_address();
    // Background fetch waits 3 s after the mount, so the first scrape sees the prefetch
    // alone; no file is read, so nothing is fetched on demand.
    let config = format!(
        "[background_fetch]\nquiet = 0.1\nstart_delay = 3\nbytes_per_second = 0\n\
         step_bytes = 1048576\n[metrics]\naddress = \"{address}\"\n"
    );
    let stack = DaemonStack::start("met-", &config);
    let layer = pushed_estargz_layer(&stack.registry, "metrics/bg", &image(), &["data/a.bin"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let log_start = stack.registry_log().len();

    let labels = cri_labels(&layer, "layer-1", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-1", labels);
    let text = scrape(address);
    let log = stack.registry_log();
    let gets = blob_gets(&log[log_start..], &layer.digest);
    assert_eq!(gets.len(), 2, "tail and prefetch: {gets:?}");
    let fetched = |text: &str, kind: &str| {
        sample(
            text,
            &format!("estargz_fetched_bytes_total{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(fetched(&text, "toc"), gets[0] as f64, "{text}");
    assert_eq!(fetched(&text, "prefetch"), gets[1] as f64, "{text}");
    assert_eq!(fetched(&text, "background"), 0.0, "{text}");
    let prefetch_requests = "estargz_range_requests_total{kind=\"prefetch\",result=\"ok\"}";
    assert_eq!(sample(&text, prefetch_requests), 1.0, "{text}");

    let limit = Duration::from_secs(60);
    stack.daemon.wait_for_log("layer fully cached", 1, limit);
    let text = scrape(address);
    let log = stack.registry_log();
    let served: u64 = blob_gets(&log[log_start..], &layer.digest).iter().sum();
    assert!(fetched(&text, "background") > 0.0, "{text}");
    assert_eq!(fetched(&text, "on_demand"), 0.0, "{text}");
    let counted: f64 = ["toc", "prefetch", "background"]
        .iter()
        .map(|k| fetched(&text, k))
        .sum();
    assert_eq!(
        counted, served as f64,
        "every served byte counted once: {text}"
    );
    let background_requests = "estargz_range_request_duration_seconds_count{kind=\"background\"}";
    assert!(sample(&text, background_requests) > 0.0, "{text}");
    let percent = format!(
        "estargz_layer_fetched_percent{{layer=\"{}\"}}",
        layer.digest
    );
    assert_eq!(sample(&text, &percent), 100.0, "{text}");

    let json = status_command(&stack.dir.path().join("root"), &["--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let got = &status["layers"][0];
    assert_eq!(got["prefetch"], "done", "{json}");
    assert_eq!(got["background"], "done", "{json}");
    assert_eq!(got["percent_fetched"].as_f64(), Some(100.0), "{json}");
    assert_eq!(
        got["fetched_bytes"]["prefetch"].as_u64(),
        Some(gets[1]),
        "{json}"
    );
}

/// Runs `estargz-snapshotter status --root <root> <extra>` and returns its stdout.
fn status_command(root: &std::path::Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_estargz-snapshotter"))
        .arg("status")
        .arg("--root")
        .arg(root)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "status failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}
