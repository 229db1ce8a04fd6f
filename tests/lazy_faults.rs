//! Fault handling of lazily served layers, driven over gRPC against the real daemon and a
//! real docker-registry: a TOC digest label that does not match falls back to an ordinary
//! pull, and a registry stopped while a file is read gives EIO in bounded time, then
//! recovers once the registry is back.

mod common;
use common::remote::{cri_labels, expect_remote, pushed_estargz_layer, DaemonStack, RemoteLayer};

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use estargz_snapshotter::proto::snapshots as pb;
use estargz_snapshotter::proto::snapshots::snapshots_client::SnapshotsClient;
use testkit::Registry;
use tonic::transport::Channel;

const NS: &str = "faults";
const SMALL_TEXT: &str = "served lazily despite faults";
/// Seconds a read may take before it fails (kept short so the fault test is quick).
const READ_TIMEOUT_SECS: u64 = 3;
const REMOTE_LABEL: &str = "containerd.io/snapshot/remote";
const WRONG_TOC: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// One layer: a small text file and 3 MiB of pseudo-random data (several chunks).
fn data_image() -> testkit::BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer
        .file("data/small.txt", SMALL_TEXT.as_bytes(), 0o644)
        .unwrap();
    layer.file("data/big.bin", &big_bytes(), 0o644).unwrap();
    testkit::ImageBuilder::new()
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap()
}

/// Deterministic, incompressible bytes: several chunks.
fn big_bytes() -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(12, 3 << 20)
}

/// Reads `path` on another thread; `None` when it did not finish within `limit`.
fn read_within(path: PathBuf, limit: Duration) -> Option<std::io::Result<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(path));
    });
    rx.recv_timeout(limit).ok()
}

/// Background fetching is off: it would race the faults for the chunks the tests read.
fn start_stack() -> DaemonStack {
    let config = format!(
        "[layer]\nread_timeout = {READ_TIMEOUT_SECS}\n[background_fetch]\nenable = false\n"
    );
    DaemonStack::start("flt-", &config)
}

fn data_layer(registry: &Registry) -> RemoteLayer {
    pushed_estargz_layer(registry, "faults/app", &data_image(), &[])
}

async fn prepare(
    c: &mut SnapshotsClient<Channel>,
    key: &str,
    labels: HashMap<String, String>,
) -> Result<Vec<estargz_snapshotter::proto::types::Mount>, tonic::Status> {
    common::remote::prepare(c, NS, key, labels).await
}

#[test]
fn toc_digest_mismatch_falls_back_and_right_labels_serve_remote() {
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = start_stack();
    let layer = data_layer(&stack.registry);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));

    let wrong = cri_labels(&layer, "layer-wrong", WRONG_TOC);
    let mounts = rt
        .block_on(prepare(&mut c, "extract-wrong", wrong))
        .unwrap();
    assert!(!mounts.is_empty(), "fallback answers ordinary mounts");
    let log = stack.daemon.log_text();
    assert!(log.contains("no lazy pull"), "fallback is logged: {log}");
    assert!(
        stack.fuse_mounts().is_empty(),
        "nothing mounted on fallback"
    );

    let right = cri_labels(&layer, "layer-right", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-right", right);
    let stat = c.stat(common::grpc::in_namespace(
        pb::StatSnapshotRequest {
            key: "layer-right".into(),
            ..Default::default()
        },
        NS,
    ));
    let info = rt.block_on(stat).unwrap().into_inner().info.unwrap();
    assert!(info.labels.contains_key(REMOTE_LABEL), "{:?}", info.labels);
    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1, "one FUSE layer mount");
    let small = std::fs::read_to_string(mounted[0].join("data/small.txt")).unwrap();
    assert_eq!(small, SMALL_TEXT);

    assert!(stack.daemon.signal("-TERM").success());
    assert!(
        stack.fuse_mounts().is_empty(),
        "FUSE mount left at shutdown"
    );
}

#[test]
fn registry_down_gives_eio_in_bounded_time_then_recovers() {
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = start_stack();
    let layer = data_layer(&stack.registry);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let labels = cri_labels(&layer, "layer-1", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-1", labels);
    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1, "{}", stack.daemon.log_text());
    let big = mounted[0].join("data/big.bin");

    stack.registry.stop();
    let started = Instant::now();
    let bound = Duration::from_secs(READ_TIMEOUT_SECS * 4 + 10);
    let failed = read_within(big.clone(), bound).expect("read hung with the registry down");
    let error = failed.expect_err("read served bytes with the registry down");
    assert_eq!(error.raw_os_error(), Some(libc_eio()), "{error}");
    eprintln!("EIO after {:?}", started.elapsed());

    stack.registry.start_again().unwrap();
    let bytes = read_within(big, bound)
        .expect("read hung after restart")
        .unwrap();
    assert!(bytes == big_bytes(), "bytes after recovery differ");
}

/// EIO on Linux.
fn libc_eio() -> i32 {
    5
}

/// Flips one byte in the middle of `digest`'s blob as the registry stores it on disk: the
/// middle of this layer is inside the compressed chunks of `data/big.bin`, far from the
/// TOC and footer at the end and from the tiny `data/small.txt`.
fn corrupt_middle_of_blob(registry: &Registry, digest: &str) {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let path = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn corrupted_chunk_gives_eio_never_wrong_bytes() {
    testkit::require!(testkit::Prereq::DevFuse);
    let metrics = common::metrics::free_address();
    let config = format!(
        "[layer]\nread_timeout = {READ_TIMEOUT_SECS}\n[background_fetch]\nenable = false\n\
         [metrics]\naddress = \"{metrics}\"\n"
    );
    let stack = DaemonStack::start("flt-", &config);
    let layer = data_layer(&stack.registry);
    corrupt_middle_of_blob(&stack.registry, &layer.digest);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let labels = cri_labels(&layer, "layer-1", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-1", labels);
    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1, "{}", stack.daemon.log_text());

    let bound = Duration::from_secs(READ_TIMEOUT_SECS * 4 + 10);
    let big = read_within(mounted[0].join("data/big.bin"), bound).expect("read hung");
    let error = big.expect_err("a corrupted chunk was served");
    assert_eq!(error.raw_os_error(), Some(libc_eio()), "{error}");
    // Twice: a failed chunk is not cached as good.
    let again = read_within(mounted[0].join("data/big.bin"), bound).expect("read hung");
    assert!(
        again.is_err(),
        "a corrupted chunk was served on the second read"
    );
    let small = std::fs::read_to_string(mounted[0].join("data/small.txt")).unwrap();
    assert_eq!(small, SMALL_TEXT, "other files read fine");
    // Counted, by what failed.
    let text = common::metrics::scrape(metrics);
    let failures = "estargz_verification_failures_total{what=\"chunk\"}";
    assert!(common::metrics::sample(&text, failures) >= 1.0, "{text}");
}

/// Hostile TOCs, each with the TOC digest label that matches it (so only the index can
/// refuse them): every one falls back to an ordinary pull with the reason logged.
#[test]
fn hostile_tocs_are_refused_and_fall_back() {
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = start_stack();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let cases = [
        (
            "path escaping the root",
            r#"{"version":1,"entries":[{"name":"../../etc/evil","type":"symlink","linkName":"/x"}]}"#,
            "escapes the layer root",
        ),
        (
            "duplicate entry: a directory and a non-directory",
            r#"{"version":1,"entries":[{"name":"a","type":"dir","mode":493},{"name":"a","type":"symlink","linkName":"b"}]}"#,
            "a directory and a non-directory share this path",
        ),
        (
            "hardlink to a missing entry",
            r#"{"version":1,"entries":[{"name":"l","type":"hardlink","linkName":"nothing"}]}"#,
            "not an earlier non-directory entry",
        ),
    ];
    for (i, (name, json, reason)) in cases.into_iter().enumerate() {
        let (blob, toc_digest) = estargz::testutil::blob_with_toc_json(json.as_bytes());
        let digest = estargz::Digest::sha256(&blob);
        stack
            .registry
            .client()
            .push_blob("faults/hostile", &digest, &blob)
            .unwrap();
        let layer = RemoteLayer {
            reference: stack.registry.reference("faults/hostile", "v1"),
            manifest_digest: digest.to_string(),
            digest: digest.to_string(),
            toc_digest: toc_digest.to_string(),
        };
        let labels = cri_labels(&layer, &format!("hostile-{i}"), &layer.toc_digest);
        let mounts = rt
            .block_on(prepare(&mut c, &format!("extract-hostile-{i}"), labels))
            .unwrap_or_else(|status| panic!("{name}: Prepare failed: {status}"));
        assert!(!mounts.is_empty(), "{name}: ordinary mounts");
        let log = stack.daemon.log_text();
        let fallback = log
            .lines()
            .find(|l| l.contains("no lazy pull") && l.contains(&format!("hostile-{i}")));
        let fallback = fallback.unwrap_or_else(|| panic!("{name}: no fallback line: {log}"));
        assert!(fallback.contains(reason), "{name}: {fallback}");
        assert!(stack.fuse_mounts().is_empty(), "{name}: nothing mounted");
    }
}

/// After a restart that lost the mounts, with the registry down, the daemon mounts its
/// remote snapshot again from the TOC it saved: the tree lists at once, reads fail in
/// bounded time, then succeed once the registry is back.
#[test]
fn restart_with_the_registry_down_mounts_from_the_saved_toc() {
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = start_stack();
    let layer = data_layer(&stack.registry);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let labels = cri_labels(&layer, "layer-1", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-1", labels);

    stack.daemon.kill();
    testkit::mounts::unmount_all_under(stack.dir.path()).unwrap();
    assert!(stack.fuse_mounts().is_empty());
    stack.registry.stop();
    let config = format!(
        "[layer]\nread_timeout = {READ_TIMEOUT_SECS}\n[background_fetch]\nenable = false\n"
    );
    stack.daemon = common::Daemon::start_with_config(
        stack.dir.path(),
        &format!(
            "[remote]\nplain_http = [\"{}\"]\nretries = 0\n{config}",
            stack.registry.host()
        ),
    );
    let started = Instant::now();
    while !stack
        .daemon
        .log_text()
        .contains("remote snapshot mounted again")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not mounted again: {}",
            stack.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1);
    let mut names: Vec<String> = std::fs::read_dir(mounted[0].join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["big.bin", "small.txt"],
        "the tree is served offline"
    );
    let bound = Duration::from_secs(READ_TIMEOUT_SECS * 4 + 10);
    let small = mounted[0].join("data/small.txt");
    let offline = read_within(small.clone(), bound).expect("read hung offline");
    assert!(offline.is_err(), "no bytes without the registry");

    stack.registry.start_again().unwrap();
    let back = read_within(small, bound).expect("read hung").unwrap();
    assert_eq!(back, SMALL_TEXT.as_bytes());
}
