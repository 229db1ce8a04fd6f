//! Lazy pulling through a registry mirror (`[remote.mirrors]`), for real: the daemon and
//! two docker-registries on loopback, one the origin named by the image reference and one
//! its mirror (as a node-local or peer-to-peer mirror such as Spegel would be). The layer
//! is opened and read from the mirror even with the origin down; a layer the mirror lacks
//! comes from the origin; when the mirror dies under a mounted layer, its next reads fall
//! back to the origin. Every read gives the layer's exact bytes.

mod common;
use common::remote::{cri_labels, expect_remote, DaemonStack, RemoteLayer};

use std::path::PathBuf;

use testkit::{Prereq, Registry};

const NS: &str = "mirror";
const REPO: &str = "team/app";
const FIRST: &str = "data/first.bin";
const SECOND: &str = "data/second.bin";
/// Small chunks, so each file is several range requests.
const CHUNK: u64 = 256 << 10;
const FILE_LEN: usize = 1 << 20;

/// Only the test's reads fetch (no readahead, no background fetch), and the mirror
/// stands in front of the origin.
fn config(origin: &str, mirror: &str) -> String {
    format!(
        "[remote.mirrors]\n\"{origin}\" = [\"{mirror}\"]\n\
         [layer]\nreadahead = false\n[background_fetch]\nenable = false\n"
    )
}

/// The content of file `index` (0 or 1) of the layer seeded by `seed`. Every seed gives
/// distinct bytes, and the files must differ: two equal files would share cached chunks
/// (the cache is keyed by chunk digest), so reading one would not fetch.
fn content(seed: u64, index: u64) -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(seed + index, FILE_LEN)
}

/// An eStargz layer of two files seeded by `seed`, pushed to each of `registries`; its
/// labels name the origin, as the image reference kubelet or nerdctl pulls does.
fn push_layer(origin: &Registry, registries: &[&Registry], seed: u64) -> RemoteLayer {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer.file(FIRST, &content(seed, 0), 0o644).unwrap();
    layer.file(SECOND, &content(seed, 1), 0o644).unwrap();
    let tar = layer.finish().unwrap();
    let options = estargz::writer::WriterOptions {
        chunk_size: CHUNK,
        threads: 1,
        ..Default::default()
    };
    let mut blob = Vec::new();
    let written = estargz::writer::build(tar.as_slice(), &mut blob, &options).unwrap();
    let digest = written.blob_digest;
    for registry in registries {
        registry.client().push_blob(REPO, &digest, &blob).unwrap();
    }
    RemoteLayer {
        reference: format!("{}/{REPO}:v1", origin.host()),
        manifest_digest: digest.to_string(),
        digest: digest.to_string(),
        toc_digest: written.toc_digest.to_string(),
    }
}

/// Blob GETs of `digest` that `registry` answered with bytes (200 or 206), from its
/// access log: what it served, not what it was asked for.
fn served_blob_gets(registry: &Registry, digest: &str) -> usize {
    let log = std::fs::read_to_string(registry.log_path()).unwrap_or_default();
    let request = format!("/blobs/{digest} HTTP/1.1\" ");
    log.lines()
        .filter(|line| line.contains("\"GET /v2/"))
        .filter_map(|line| line.split(&request).nth(1))
        .filter(|status| status.starts_with("200 ") || status.starts_with("206 "))
        .count()
}

/// Prepares `layer` as snapshot `name` and returns its FUSE mount.
fn mount(
    stack: &DaemonStack,
    rt: &tokio::runtime::Runtime,
    layer: &RemoteLayer,
    name: &str,
) -> PathBuf {
    let before = stack.fuse_mounts();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let labels = cri_labels(layer, name, &layer.toc_digest);
    expect_remote(rt, &mut c, NS, &format!("extract-{name}"), labels);
    let mut added = stack.fuse_mounts();
    added.retain(|m| !before.contains(m));
    assert_eq!(added.len(), 1, "{name}: {}", stack.daemon.log_text());
    added.remove(0)
}

/// Reads `path` whole; a byte-exact comparison without printing a megabyte on failure.
fn assert_reads(path: &std::path::Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: read {path:?}: {e}"));
    assert!(got == want, "{what}: {path:?} differs from the layer");
}

#[test]
fn lazy_reads_go_through_the_mirror_and_fall_back_to_the_origin() {
    testkit::require!(
        Prereq::Root,
        Prereq::DevFuse,
        Prereq::Binary(testkit::registry::REGISTRY_BIN)
    );
    let origin = Registry::start().unwrap();
    let mut mirror = Registry::start().unwrap();
    let extra = config(&origin.host(), &mirror.host());
    let mut stack = DaemonStack::with_registry("mir-", origin, &[mirror.host()], &extra);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // On both, origin down: opening the layer and reading it only need the mirror.
    let both = push_layer(&stack.registry, &[&stack.registry, &mirror], 10);
    stack.registry.stop();
    let mounted = mount(&stack, &rt, &both, "both");
    assert_reads(&mounted.join(FIRST), &content(10, 0), "origin down");
    assert!(
        served_blob_gets(&mirror, &both.digest) >= 2,
        "mirror served tail and chunks"
    );
    assert_eq!(served_blob_gets(&stack.registry, &both.digest), 0);
    stack.registry.start_again().unwrap();

    // Only on the origin: the mirror answers 404 and the origin serves.
    let origin_only = push_layer(&stack.registry, &[&stack.registry], 20);
    let only_mount = mount(&stack, &rt, &origin_only, "origin-only");
    assert_reads(
        &only_mount.join(SECOND),
        &content(20, 1),
        "mirror lacks the blob",
    );
    assert_eq!(served_blob_gets(&mirror, &origin_only.digest), 0);
    assert!(served_blob_gets(&stack.registry, &origin_only.digest) >= 2);

    // The mirror dies under the mounted layer: its unread file comes from the origin.
    mirror.stop();
    assert_reads(&mounted.join(SECOND), &content(10, 1), "mirror down");
    assert!(
        served_blob_gets(&stack.registry, &both.digest) >= 1,
        "origin served the chunks"
    );
    let log = stack.daemon.log_text();
    assert!(
        log.contains("mirror failed"),
        "the failure is logged: {log}"
    );
    assert!(!log.contains("no lazy pull"), "no layer fell back: {log}");
}
