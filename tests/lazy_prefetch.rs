//! Prefetch and background fetch against the real daemon and docker-registry: a layer
//! converted with prioritized files has exactly the range before `.prefetch.landmark`
//! fetched, in one request, before Prepare answers; reading those files then costs no
//! request. A layer without prioritized files (`.no.prefetch.landmark`) prefetches
//! nothing. Background fetch makes a layer fully local: reads work with the registry gone.

mod common;
use common::remote::{blob_gets, cri_labels, expect_remote, pushed_estargz_layer, DaemonStack};

use std::time::Duration;

/// Keeps background fetching out of the request counts of the prefetch tests. The other
/// keys would start it at once if `enable = false` were ignored, so a test that waits
/// after Prepare shows that it is off.
const NO_BACKGROUND: &str =
    "[background_fetch]\nenable = false\nstart_delay = 0\nquiet = 0\nbytes_per_second = 0\n";

const NS: &str = "prefetch";
const FIRST: &str = "data/first.bin";
const SECOND: &str = "data/second.bin";

fn content(seed: u64, len: usize) -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(seed, len)
}

/// One layer: a 1 MiB file to prioritize and a 3 MiB file read on demand.
fn image() -> testkit::BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer.file(FIRST, &content(1, 1 << 20), 0o644).unwrap();
    layer.file(SECOND, &content(2, 3 << 20), 0o644).unwrap();
    testkit::ImageBuilder::new()
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap()
}

/// The index of the layer as the registry stores it.
fn stored_index(stack: &DaemonStack, repo: &str, digest: &str) -> estargz::Index {
    let blob = stack
        .registry
        .client()
        .get_blob(repo, &digest.parse().unwrap())
        .unwrap();
    let reader = estargz::Reader::open(blob.as_slice(), None).unwrap();
    reader.index().clone()
}

#[test]
fn prioritized_files_are_fetched_in_one_request_before_ready() {
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = DaemonStack::start("pf-", NO_BACKGROUND);
    let layer = pushed_estargz_layer(&stack.registry, "prefetch/app", &image(), &[FIRST]);
    let index = stored_index(&stack, "prefetch/app", &layer.digest);
    let landmark = index.prefetch_landmark_offset().expect("landmark");
    // The prioritized range: from the first chunk of FIRST to the landmark's member.
    let first_chunk = index.chunks(index.lookup(FIRST).unwrap())[0]
        .compressed
        .start;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let log_start = stack.registry_log().len();

    let labels = cri_labels(&layer, "layer-1", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-1", labels);

    let log = stack.registry_log();
    let gets = blob_gets(&log[log_start..], &layer.digest);
    // The blob's tail (size, footer, TOC), then one request for the prioritized range.
    assert_eq!(gets.len(), 2, "blob GETs during Prepare: {gets:?}");
    assert_eq!(
        gets[1],
        landmark - first_chunk,
        "prefetch of blob bytes {first_chunk}..{landmark}: {gets:?}"
    );

    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1, "{}", stack.daemon.log_text());
    let before_reads = stack.registry_log().len();
    let first = std::fs::read(mounted[0].join(FIRST)).unwrap();
    assert!(first == content(1, 1 << 20), "prioritized file content");
    let log = stack.registry_log();
    assert!(
        blob_gets(&log[before_reads..], &layer.digest).is_empty(),
        "the prioritized file was read from the cache"
    );
    let second = std::fs::read(mounted[0].join(SECOND)).unwrap();
    assert!(second == content(2, 3 << 20), "on-demand file content");
    let log = stack.registry_log();
    assert!(
        !blob_gets(&log[before_reads..], &layer.digest).is_empty(),
        "the other file was fetched on demand"
    );
}

#[test]
fn a_layer_without_prioritized_files_prefetches_nothing() {
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = DaemonStack::start("pf-", NO_BACKGROUND);
    let layer = pushed_estargz_layer(&stack.registry, "prefetch/plain", &image(), &[]);
    let index = stored_index(&stack, "prefetch/plain", &layer.digest);
    assert!(index.has_no_prefetch_landmark(), "the converter marks it");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let log_start = stack.registry_log().len();
    let mut labels = cri_labels(&layer, "layer-1", &layer.toc_digest);
    // The landmark wins over ctr-remote's size label.
    labels.insert(
        "containerd.io/snapshot/remote/stargz.prefetch".to_owned(),
        "10485760".to_owned(),
    );
    expect_remote(&rt, &mut c, NS, "extract-1", labels);
    let log = stack.registry_log();
    let gets = blob_gets(&log[log_start..], &layer.digest);
    assert_eq!(gets.len(), 1, "the tail (footer and TOC) only: {gets:?}");

    // Background fetch is off: with it on, these settings would fetch the layer now.
    std::thread::sleep(Duration::from_secs(1));
    let log = stack.registry_log();
    let gets = blob_gets(&log[log_start..], &layer.digest);
    assert_eq!(gets.len(), 1, "no background fetch: {gets:?}");
    assert!(!stack.daemon.log_text().contains("layer fully cached"));
}

/// Prepares the eStargz `layer` in `stack` and waits until background fetch has made it
/// fully local.
fn prepare_and_wait_until_local(stack: &DaemonStack, layer: &common::remote::RemoteLayer) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let labels = cri_labels(layer, "layer-1", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-1", labels);
    let limit = Duration::from_secs(60);
    stack.daemon.wait_for_log("layer fully cached", 1, limit);
}

/// Quick background fetching, and `passthrough` as given.
fn local_config(passthrough: bool) -> String {
    format!(
        "[background_fetch]\nquiet = 0.1\nstart_delay = 0\nbytes_per_second = 0\nstep_bytes = 1048576\n\
         [fuse]\npassthrough = {passthrough}\n"
    )
}

#[test]
fn background_fetch_makes_the_layer_local() {
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = DaemonStack::start("pf-", &local_config(false));
    let layer = pushed_estargz_layer(&stack.registry, "prefetch/bg", &image(), &[]);
    prepare_and_wait_until_local(&stack, &layer);
    let log = stack.registry_log();
    let fetched: u64 = blob_gets(&log, &layer.digest).iter().sum();
    assert!(
        fetched >= 4 << 20,
        "the whole layer was fetched: {fetched} bytes"
    );

    stack.registry.stop();
    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1);
    let mark = stack.daemon.log_text().len();
    let first = std::fs::read(mounted[0].join(FIRST)).unwrap();
    let second = std::fs::read(mounted[0].join(SECOND)).unwrap();
    assert!(first == content(1, 1 << 20), "first from the cache");
    assert!(second == content(2, 3 << 20), "second from the cache");
    let log = stack.daemon.log_text();
    assert!(
        log[mark..].contains("layer read"),
        "passthrough off: the daemon serves reads"
    );
    assert!(!log.contains("opened with passthrough"));
}

#[test]
fn fully_local_files_are_read_through_passthrough() {
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = DaemonStack::start("pf-", &local_config(true));
    let layer = pushed_estargz_layer(&stack.registry, "prefetch/pt", &image(), &[]);
    prepare_and_wait_until_local(&stack, &layer);
    stack.registry.stop();
    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1);

    // The first opens are served from the cached chunks while the copies are written.
    let first = std::fs::read(mounted[0].join(FIRST)).unwrap();
    let second = std::fs::read(mounted[0].join(SECOND)).unwrap();
    assert!(first == content(1, 1 << 20) && second == content(2, 3 << 20));
    let limit = Duration::from_secs(10);
    stack
        .daemon
        .wait_for_log("backing file assembled", 2, limit);

    let mark = stack.daemon.log_text().len();
    for _ in 0..2 {
        let first = std::fs::read(mounted[0].join(FIRST))
            .unwrap_or_else(|e| panic!("{e}: {}", stack.daemon.log_text()));
        let second = std::fs::read(mounted[0].join(SECOND)).unwrap();
        assert!(first == content(1, 1 << 20), "first through passthrough");
        assert!(second == content(2, 3 << 20), "second through passthrough");
    }
    let log = stack.daemon.log_text();
    let since = &log[mark..];
    if since.contains("kernel lacks FUSE passthrough")
        || log.contains("kernel lacks FUSE passthrough")
    {
        eprintln!("skipping the passthrough assertions: this kernel has no FUSE passthrough");
        return;
    }
    assert!(since.contains("opened with passthrough"), "{since}");
    assert!(
        !since.contains("layer read"),
        "reads reached the daemon: {since}"
    );
}
