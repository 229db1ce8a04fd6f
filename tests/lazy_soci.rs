//! Lazy pulling of an unconverted gzip image through a SOCI index: the image is pushed as
//! built (plain gzip layers), `estargz-convert index` pushes zTOCs and a SOCI index v1
//! beside it (docker-registry 2.8: referrers tag schema), and `ctr-remote image rpull` +
//! `ctr run` through containerd and our daemon mount every layer lazily and run with the
//! right output, reading a small part of the image from the registry.

mod common;
use common::soci::{
    index, push_soci_index, push_soci_index_v2, push_soci_index_with_blocks, served,
    without_colors, ztoc_of,
};
use common::stack::{self, committed_snapshots, rpull, LazyStack};

use testkit::{unique_id, BuiltImage};

const SMALL_TEXT: &str = "read lazily through a soci index";

/// busybox, 24 MiB of incompressible data, and a small text file.
fn image_with_data() -> BuiltImage {
    stack::image_with_data(SMALL_TEXT, 9)
}

#[test]
fn unconverted_image_with_a_soci_index_is_pulled_lazily_and_runs() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("soci-", "[background_fetch]\nenable = false\n");
    let image = image_with_data();
    let reference = stack.registry.push("soci/app", "v1", &image).unwrap();
    let before = stack
        .registry
        .client()
        .get_manifest("soci/app", "v1")
        .unwrap();

    let report = index(&reference);
    assert_eq!(report["indexed"], 3, "{report}");
    let after = stack
        .registry
        .client()
        .get_manifest("soci/app", "v1")
        .unwrap();
    assert_eq!(
        after.digest, before.digest,
        "indexing leaves the image alone"
    );

    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|l| l.blob.digest.to_string())
        .collect();
    let image_size: u64 = image.layers.iter().map(|l| l.blob.bytes.len() as u64).sum();
    let log_path = stack.registry.log_path();
    let log_start = std::fs::read_to_string(&log_path).unwrap().len();

    rpull(&stack.containerd, &reference);
    let id = unique_id("soci");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let out = stack.containerd.ctr(run).unwrap().stdout;

    let daemon_log = stack.daemon.log_text();
    assert_eq!(out.trim(), SMALL_TEXT, "{daemon_log}");
    let (committed, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(committed, 3, "{daemon_log}");
    assert_eq!(remote, 3, "every layer is a remote snapshot: {daemon_log}");
    // The layers above busybox were opened while it was prepared, and taken by their own
    // Prepares.
    let taken = daemon_log
        .matches("using the soci layer opened ahead")
        .count();
    assert_eq!(taken, 2, "{daemon_log}");
    assert_eq!(
        daemon_log
            .matches("layer mounted lazily through its soci index")
            .count(),
        3,
        "{daemon_log}"
    );
    assert_eq!(
        daemon_log.matches("image has no soci index").count(),
        0,
        "{daemon_log}"
    );
    // The index manifest came embedded in the referrers listing: never asked for by
    // digest (nor the image manifest, remembered from its tag).
    let by_digest = (daemon_log.lines().map(without_colors))
        .filter(|l| l.contains("registry request") && l.contains("/manifests/sha256:"))
        .count();
    assert_eq!(by_digest, 0, "{daemon_log}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let bytes = served(&log[log_start..], &layers);
    eprintln!("registry served {bytes} of {image_size} layer bytes");
    assert!(bytes > 0, "spans were fetched from the registry");
    assert!(
        bytes * 2 < image_size,
        "registry served {bytes} of {image_size} layer bytes"
    );
}

#[test]
fn whole_layer_check_reads_the_blob_through_the_cache() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    // Background fetching on (the default) with a short start delay: the check runs.
    let stack = LazyStack::start_with_config("socic-", "[background_fetch]\nstart_delay = 1\n");
    let image = image_with_data();
    let reference = stack.registry.push("soci/check", "v1", &image).unwrap();
    assert_eq!(index(&reference)["indexed"], 3);
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|l| l.blob.digest.to_string())
        .collect();
    let image_size: u64 = image.layers.iter().map(|l| l.blob.bytes.len() as u64).sum();
    let log_path = stack.registry.log_path();
    let log_start = std::fs::read_to_string(&log_path).unwrap().len();

    rpull(&stack.containerd, &reference);
    let id = unique_id("socic");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let out = stack.containerd.ctr(run).unwrap().stdout;
    assert_eq!(out.trim(), SMALL_TEXT, "{}", stack.daemon.log_text());
    stack.daemon.wait_for_log(
        "soci index checked against the whole layer",
        3,
        std::time::Duration::from_secs(120),
    );
    // The registry logs a request once it is done.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let bytes = served(&log[log_start..], &layers);
    eprintln!("registry served {bytes} layer bytes for {image_size} bytes of layers");
    assert!(
        bytes >= image_size,
        "the check had every byte of every layer: {bytes} of {image_size}"
    );
    // Spans read by the container are not downloaded again for the check (before, the
    // check was a separate whole download: image size plus the spans read).
    assert!(
        bytes <= image_size + image_size / 50,
        "registry served {bytes} bytes for {image_size} bytes of layers"
    );
}

/// A SOCI v2 index (soci's default since 0.10): no subject, the image manifest rewritten
/// to name it in its `com.amazon.soci.index-digest` annotation. Found through the
/// annotation, without a referrers look-up, and every layer is served through it.
#[test]
fn an_image_naming_its_soci_v2_index_in_an_annotation_is_pulled_lazily() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("sociv-", "[background_fetch]\nenable = false\n");
    let image = image_with_data();
    stack.registry.push("soci/v2", "orig", &image).unwrap();
    let blobs: Vec<&[u8]> = image.layers.iter().map(|l| &l.blob.bytes[..]).collect();
    let ztocs: Vec<Option<Vec<u8>>> = blobs.iter().map(|b| Some(ztoc_of(b).to_bytes())).collect();
    push_soci_index_v2(&stack.registry, "soci/v2", &image, &ztocs, "v2");
    let reference = format!("{}/soci/v2:v2", stack.registry.host());

    rpull(&stack.containerd, &reference);
    let id = unique_id("sociv");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let out = stack
        .containerd
        .ctr(run)
        .map(|o| o.stdout)
        .unwrap_or_default();
    let daemon_log = stack.daemon.log_text();
    assert_eq!(out.trim(), SMALL_TEXT, "{daemon_log}");
    let mounted = daemon_log.matches("layer mounted lazily through its soci index");
    assert_eq!(mounted.count(), 3, "{daemon_log}");
    assert!(!daemon_log.contains("/referrers/"), "{daemon_log}");
}

#[test]
fn image_without_an_index_falls_back_and_runs() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start("socin-");
    let reference = stack
        .registry
        .push("soci/plain", "v1", &image_with_data())
        .unwrap();
    rpull(&stack.containerd, &reference);
    let id = unique_id("socin");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let out = stack.containerd.ctr(run).unwrap().stdout;
    let daemon_log = stack.daemon.log_text();
    assert_eq!(out.trim(), SMALL_TEXT, "{daemon_log}");
    let (_, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(remote, 0, "no layer is remote without an index");
    // The look-up is remembered per image: one "no index" line for three layers.
    assert_eq!(
        daemon_log.matches("image has no soci index").count(),
        1,
        "{daemon_log}"
    );
}

#[test]
fn wrong_indexes_never_serve_wrong_bytes() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socix-", "[background_fetch]\nenable = false\n");
    let image = image_with_data();
    let reference = stack.registry.push("soci/bad", "v1", &image).unwrap();
    let blobs: Vec<&[u8]> = image.layers.iter().map(|l| &l.blob.bytes[..]).collect();
    // busybox: right; data layer: the small layer's zTOC (another layer); small layer:
    // right file table, corrupted span digest.
    let right = ztoc_of(blobs[0]).to_bytes();
    let other = ztoc_of(blobs[2]).to_bytes();
    let mut corrupt = ztoc_of(blobs[2]);
    corrupt.span_digests[0] = estargz::Digest::sha256(b"not this span");
    push_soci_index(
        &stack.registry,
        "soci/bad",
        &image,
        &[Some(right), Some(other), Some(corrupt.to_bytes())],
    );

    rpull(&stack.containerd, &reference);
    let id = unique_id("socix");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let result = stack.containerd.ctr(run);
    let daemon_log = stack.daemon.log_text();
    let out = result.map(|o| o.stdout).unwrap_or_default();
    assert!(
        !out.contains(SMALL_TEXT),
        "a span failing its digest is never served: {out}\n{daemon_log}"
    );
    assert!(
        daemon_log.contains("soci span failed verification"),
        "{daemon_log}"
    );
    assert!(
        daemon_log.contains("describes a"),
        "the zTOC of another layer is refused: {daemon_log}"
    );
    let (_, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(
        remote, 2,
        "the layer with a foreign zTOC is pulled normally"
    );
}

#[test]
fn index_checked_against_the_whole_layer_fails_a_wrong_file_table() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    // Background fetching on (the default): whole blobs are fetched and checked.
    let stack = LazyStack::start("socit-");
    let image = image_with_data();
    let reference = stack.registry.push("soci/table", "v1", &image).unwrap();
    let blobs: Vec<&[u8]> = image.layers.iter().map(|l| &l.blob.bytes[..]).collect();
    let mut lying = ztoc_of(blobs[2]);
    let small = lying
        .files
        .iter_mut()
        .find(|f| f.name.ends_with("small.txt"))
        .unwrap();
    small.mode = 0o4755; // a setuid file the tar does not have
    push_soci_index(
        &stack.registry,
        "soci/table",
        &image,
        &[
            Some(ztoc_of(blobs[0]).to_bytes()),
            Some(ztoc_of(blobs[1]).to_bytes()),
            Some(lying.to_bytes()),
        ],
    );
    rpull(&stack.containerd, &reference);
    stack.daemon.wait_for_log(
        "soci layer failed verification",
        1,
        std::time::Duration::from_secs(120),
    );
    stack.daemon.wait_for_log(
        "soci index checked against the whole layer",
        2,
        std::time::Duration::from_secs(120),
    );
    let id = unique_id("socit");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let out = stack
        .containerd
        .ctr(run)
        .map(|o| o.stdout)
        .unwrap_or_default();
    assert!(
        !out.contains(SMALL_TEXT),
        "a failed layer serves nothing: {out}\n{}",
        stack.daemon.log_text()
    );
}

const FIRST_TEXT: &str = "the first file of a large span";

/// busybox and a layer whose one span starts with a small text file followed by 3 MiB of
/// incompressible data; the entrypoint reads the text file.
fn image_with_a_large_span(seed: u64) -> BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer
        .file("data/first.txt", FIRST_TEXT.as_bytes(), 0o644)
        .unwrap();
    let rest = testkit::image::content::random(seed, 3 << 20);
    layer.file("data/rest.bin", &rest, 0o644).unwrap();
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/cat", "/data/first.txt"])
        .build()
        .unwrap()
}

/// The compressed size of span 0 of a layer blob.
fn first_span_size(blob: &[u8]) -> u64 {
    let z = estargz::soci::Zinfo::new(&ztoc_of(blob)).unwrap();
    let r = z.compressed_range(0).unwrap();
    r.end - r.start
}

#[test]
fn a_read_fetches_the_span_prefix_it_needs_and_without_blocks_the_whole_span() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socib-", "[background_fetch]\nenable = false\n");
    // Two images (other content, so no snapshot is shared): one indexed by
    // estargz-convert (span blocks beside the zTOCs), one by a hand-made index without.
    let with = image_with_a_large_span(1);
    let without = image_with_a_large_span(2);
    let with_ref = stack.registry.push("soci/blocks", "v1", &with).unwrap();
    let without_ref = stack.registry.push("soci/whole", "v1", &without).unwrap();
    let report = index(&with_ref);
    assert!(
        report["manifests"][0]["layers"][1]["blocksSize"]
            .as_u64()
            .unwrap()
            > 0,
        "{report}"
    );
    let blobs: Vec<&[u8]> = without.layers.iter().map(|l| &l.blob.bytes[..]).collect();
    push_soci_index(
        &stack.registry,
        "soci/whole",
        &without,
        &[
            Some(ztoc_of(blobs[0]).to_bytes()),
            Some(ztoc_of(blobs[1]).to_bytes()),
        ],
    );
    let log_path = stack.registry.log_path();
    for (image, reference, name) in [
        (&with, &with_ref, "blocks"),
        (&without, &without_ref, "whole"),
    ] {
        let data = vec![image.layers[1].blob.digest.to_string()];
        let span = first_span_size(&image.layers[1].blob.bytes);
        let log_start = std::fs::read_to_string(&log_path).unwrap().len();
        rpull(&stack.containerd, reference);
        let id = unique_id("socib");
        let run = [
            "run",
            "--rm",
            "--snapshotter",
            "stargz",
            reference.as_str(),
            &id,
        ];
        let out = stack.containerd.ctr(run).unwrap().stdout;
        let daemon_log = stack.daemon.log_text();
        assert_eq!(out.trim(), FIRST_TEXT, "{name}: {daemon_log}");
        std::thread::sleep(std::time::Duration::from_secs(1));
        let log = std::fs::read_to_string(&log_path).unwrap();
        let bytes = served(&log[log_start..], &data);
        eprintln!("{name}: registry served {bytes} bytes of the data layer, span 0 is {span}");
        assert!(span > 2 << 20, "span 0 holds the large file: {span}");
        if name == "blocks" {
            assert!(bytes > 0, "the file's blocks came from the registry");
            assert!(
                bytes * 8 < span,
                "a read at the start of a span fetches a prefix: {bytes} of {span}"
            );
        } else {
            assert!(
                bytes >= span,
                "without span blocks the whole span is fetched: {bytes} of {span}"
            );
        }
    }
    let daemon_log = stack.daemon.log_text();
    let lines: Vec<String> = daemon_log.lines().map(without_colors).collect();
    let serving = |blocks: bool| {
        lines
            .iter()
            .filter(|l| l.contains("serving layer through its soci index"))
            .filter(|l| l.contains(&format!("span_blocks={blocks}")))
            .count()
    };
    // busybox is one layer of both images: mounted once, with span blocks.
    assert_eq!((serving(true), serving(false)), (2, 1), "{daemon_log}");
}

#[test]
fn a_corrupted_block_is_never_served() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socik-", "[background_fetch]\nenable = false\n");
    let image = image_with_a_large_span(3);
    let reference = stack.registry.push("soci/badblock", "v1", &image).unwrap();
    let blobs: Vec<&[u8]> = image.layers.iter().map(|l| &l.blob.bytes[..]).collect();
    let build = |blob: &[u8]| {
        estargz::soci::build_ztoc_with_blocks(
            blob,
            estargz::soci::Compression::Gzip,
            &estargz::soci::BuildOptions::default(),
            estargz::soci::DEFAULT_BLOCK_SIZE,
        )
        .unwrap()
    };
    let (busybox, busybox_blocks, _) = build(blobs[0]);
    let (data, data_blocks, _) = build(blobs[1]);
    let mut corrupt = data_blocks.to_bytes();
    // The digest of span 0's first block (after magic, block size, span and block counts).
    corrupt[24] ^= 1;
    push_soci_index_with_blocks(
        &stack.registry,
        "soci/badblock",
        &image,
        &[Some(busybox.to_bytes()), Some(data.to_bytes())],
        &[Some(busybox_blocks.to_bytes()), Some(corrupt)],
    );
    rpull(&stack.containerd, &reference);
    let id = unique_id("socik");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let result = stack.containerd.ctr(run);
    let daemon_log = stack.daemon.log_text();
    let out = result.map(|o| o.stdout).unwrap_or_default();
    assert!(
        !out.contains(FIRST_TEXT),
        "a block failing its digest is never served: {out}\n{daemon_log}"
    );
    assert!(
        daemon_log.contains("soci block failed verification"),
        "{daemon_log}"
    );
    let (_, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(remote, 2, "both layers were mounted lazily: {daemon_log}");
}

const LAST_TEXT: &str = "the last file of a large span";

#[test]
fn a_read_deep_into_a_span_starts_at_a_resume_point_not_the_span_start() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socir-", "[background_fetch]\nenable = false\n");
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    let rest = testkit::image::content::random(4, 3 << 20);
    layer.file("data/rest.bin", &rest, 0o644).unwrap();
    layer
        .file("data/last.txt", LAST_TEXT.as_bytes(), 0o644)
        .unwrap();
    let image = testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/cat", "/data/last.txt"])
        .build()
        .unwrap();
    let reference = stack.registry.push("soci/deep", "v1", &image).unwrap();
    let report = index(&reference);
    let ztoc = report["manifests"][0]["layers"][1]["ztocDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = &image.layers[1].blob.bytes;
    let span = first_span_size(blob);
    assert!(span > 2 << 20, "the file is deep in span 0: {span}");
    let log_path = stack.registry.log_path();
    let log_start = std::fs::read_to_string(&log_path).unwrap().len();
    rpull(&stack.containerd, &reference);
    let id = unique_id("socir");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let out = stack.containerd.ctr(run).unwrap().stdout;
    let daemon_log = stack.daemon.log_text();
    assert_eq!(out.trim(), LAST_TEXT, "{daemon_log}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let data = vec![image.layers[1].blob.digest.to_string()];
    let bytes = served(&log[log_start..], &data);
    eprintln!("registry served {bytes} bytes of the data layer, span 0 is {span}");
    assert!(bytes > 0, "the file's blocks came from the registry");
    assert!(
        bytes * 8 < span,
        "a read at the end of a span starts at a resume point: {bytes} of {span}"
    );
    // The lite zTOC served the mount: the zTOC itself was never fetched.
    assert_eq!(served(&log[log_start..], &[ztoc]), 0, "{daemon_log}");
}

/// Files of one data layer spread over several spans, with resume points between them.
fn image_of_many_files(seed: u64) -> (BuiltImage, Vec<(String, String)>) {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    let mut sums = Vec::new();
    for i in 0..48u64 {
        let size = 60_000 + (i as usize * 37_123) % 240_000;
        let content = testkit::image::content::random(seed * 1000 + i, size);
        let path = format!("data/f{i:02}.bin");
        layer.file(&path, &content, 0o644).unwrap();
        sums.push((format!("/{path}"), estargz::Digest::sha256(&content).hex()));
    }
    let image = testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap();
    (image, sums)
}

#[test]
fn containers_reading_the_same_spans_at_once_all_get_the_right_bytes() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socic-", "[background_fetch]\nenable = false\n");
    let (image, sums) = image_of_many_files(5);
    let reference = stack.registry.push("soci/many", "v1", &image).unwrap();
    index(&reference);
    rpull(&stack.containerd, &reference);
    // Four containers at once, two reading front to back and two back to front, so reads
    // meet in the same spans from different starts (resume points, running decoders).
    let orders = ["sort", "sort -r", "sort", "sort -r"];
    let outputs: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = orders
            .iter()
            .map(|order| {
                let (stack, reference) = (&stack, &reference);
                scope.spawn(move || {
                    let script = format!("find /data -type f | {order} | xargs sha256sum");
                    stack.run_script(reference, "socic", &script)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let daemon_log = stack.daemon.log_text();
    for out in &outputs {
        let got = sums_printed(out);
        assert_eq!(
            got, sums,
            "every file's sha256, in every container: {daemon_log}"
        );
    }
    let (_, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(remote, 2, "both layers were mounted lazily: {daemon_log}");
}

#[test]
fn bodies_that_break_part_way_never_serve_wrong_bytes_and_reads_go_on_after() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let config = "[background_fetch]\nenable = false\n[prefetch]\nenable = false\n";
    let (stack, proxy) = LazyStack::start_behind_proxy("socit-", config);
    // A file of many blocks: its fetch streams, and a body cut in half hands the decoder
    // the first blocks before it breaks.
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    let content = testkit::image::content::random(7, 3 << 20);
    layer.file("data/rest.bin", &content, 0o644).unwrap();
    let image = testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/sha256sum", "/data/rest.bin"])
        .build()
        .unwrap();
    let want = estargz::Digest::sha256(&content).hex();
    let reference = stack.registry.push("soci/trunc", "v1", &image).unwrap();
    index(&reference);
    let via_proxy = reference.replacen(&stack.registry.host(), &proxy.host(), 1);
    rpull(&stack.containerd, &via_proxy);
    let run = |id: String| {
        let args = ["run", "--rm", "--snapshotter", "stargz", &via_proxy, &id];
        stack.containerd.ctr(args).map(|o| o.stdout)
    };
    proxy.set_mode(testkit::FaultMode::Truncate);
    let broken = run(unique_id("socit")).unwrap_or_default();
    let faulted = proxy.faulted();
    proxy.set_mode(testkit::FaultMode::Pass);
    let daemon_log = stack.daemon.log_text();
    assert!(faulted > 0, "the read went through the proxy: {daemon_log}");
    // The first blocks of a cut body were handed out before it broke.
    let handed_before_a_break = (daemon_log.lines())
        .map(without_colors)
        .filter(|l| l.contains("soci range body broke"))
        .filter_map(|l| {
            l.split("handed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0u64);
    assert!(handed_before_a_break > 0, "{daemon_log}");
    assert!(
        broken.trim().is_empty() || broken.starts_with(&want),
        "a broken body never makes a wrong file: {broken}"
    );
    // What the decoders got before the bodies broke is kept; the next read goes on.
    let out = run(unique_id("socit")).unwrap();
    assert!(out.starts_with(&want), "{out}\n{}", stack.daemon.log_text());
}

#[test]
fn images_sharing_layers_pulled_at_once_all_run_with_the_right_bytes() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socis-", "[background_fetch]\nenable = false\n");
    // One image under three repositories, each indexed: three pulls at once whose layers
    // are the same blobs, each opening the layers above the first ahead of its Prepare.
    let (image, sums) = image_of_many_files(8);
    let references: Vec<String> = ["soci/share1", "soci/share2", "soci/share3"]
        .iter()
        .map(|repo| {
            let reference = stack.registry.push(repo, "v1", &image).unwrap();
            index(&reference);
            reference
        })
        .collect();
    let outputs: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = references
            .iter()
            .map(|reference| {
                let stack = &stack;
                scope.spawn(move || {
                    rpull(&stack.containerd, reference);
                    let script = "find /data -type f | sort | xargs sha256sum";
                    stack.run_script(reference, "socis", script)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let daemon_log = stack.daemon.log_text();
    for out in &outputs {
        let got = sums_printed(out);
        assert_eq!(
            got, sums,
            "every file's sha256, in every image: {daemon_log}"
        );
    }
    let (_, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(remote, 2, "both layers were mounted lazily: {daemon_log}");
}

/// `(path, sha256)` of each line `sha256sum` printed, sorted by path.
fn sums_printed(out: &str) -> Vec<(String, String)> {
    let mut got: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let (sum, path) = l.split_once("  ")?;
            Some((path.to_owned(), sum.to_owned()))
        })
        .collect();
    got.sort();
    got
}

#[test]
fn soci_images_still_run_after_the_daemon_is_killed_and_started_again() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let (mut stack, reference) = stack_with_an_indexed_image("sociz-", "soci/restart");
    rpull(&stack.containerd, &reference);
    let run = |stack: &LazyStack| run_image(stack, &reference, "sociz");
    assert_eq!(run(&stack).trim(), SMALL_TEXT);
    // SIGKILL (an OOM kill or an upgrade), then the daemon again on the same root.
    stack.daemon.kill();
    start_daemon_again(&mut stack);
    // containerd's connection to the daemon backs off for a few seconds: retried.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut out = run(&stack);
    while out.trim() != SMALL_TEXT && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        out = run(&stack);
    }
    let daemon_log = stack.daemon.log_text();
    assert_eq!(out.trim(), SMALL_TEXT, "{daemon_log}");
    assert!(
        daemon_log.contains("remote snapshot mounted again"),
        "the SOCI layers were mounted again at startup: {daemon_log}"
    );
    let (_, remote) = committed_snapshots(&stack.containerd);
    assert!(
        remote >= 2,
        "the layers are still served lazily: {daemon_log}"
    );
}

#[test]
fn a_daemon_killed_during_a_soci_pull_serves_the_image_after_a_restart() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let (mut stack, reference) = stack_with_an_indexed_image("socim-", "soci/killed");
    // The pull on another thread; the daemon is killed once it serves a layer through
    // the index (the layers above it are being opened ahead then).
    let mut command = stack::rpull_command(&stack.containerd, &reference);
    let pulling = std::thread::spawn(move || command.output());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !stack
        .daemon
        .log_text()
        .contains("serving layer through its soci index")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stack.daemon.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stack.daemon.kill();
    let first = pulling.join().unwrap().map(|o| o.status.success());
    eprintln!("the pull the kill interrupted succeeded: {first:?}");
    start_daemon_again(&mut stack);
    // The pull again (containerd's connection backs off for a few seconds), then a run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pull = [
        "image",
        "rpull",
        "--plain-http",
        "--snapshotter",
        "stargz",
        &reference,
    ];
    while let Err(error) = stack.containerd.ctr_remote(pull) {
        assert!(
            std::time::Instant::now() < deadline,
            "{error}: {}",
            stack.daemon.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = run_image(&stack, &reference, "socim");
    let daemon_log = stack.daemon.log_text();
    assert_eq!(out.trim(), SMALL_TEXT, "{daemon_log}");
    let (_, remote) = committed_snapshots(&stack.containerd);
    assert!(remote >= 2, "the layers are served lazily: {daemon_log}");
}

/// Daemon config of the kill tests: only the reads fetch.
const NO_BACKGROUND: &str = "[background_fetch]\nenable = false\n";

/// A stack (no background fetching) and `image_with_data` pushed as `repo:v1` and
/// indexed; returns its reference.
fn stack_with_an_indexed_image(prefix: &str, repo: &str) -> (LazyStack, String) {
    let stack = LazyStack::start_with_config(prefix, NO_BACKGROUND);
    let reference = stack.registry.push(repo, "v1", &image_with_data()).unwrap();
    index(&reference);
    (stack, reference)
}

/// The daemon started again on the stack's root (after it was killed).
fn start_daemon_again(stack: &mut LazyStack) {
    let registry = stack.registry.host();
    stack.daemon = common::Daemon::start_with_config(
        stack.dir.path(),
        &format!("[remote]\nplain_http = [\"{registry}\"]\n{NO_BACKGROUND}"),
    );
}

/// The stdout of a container of `reference` running its own command (empty when it
/// failed).
fn run_image(stack: &LazyStack, reference: &str, prefix: &str) -> String {
    let id = unique_id(prefix);
    let run = ["run", "--rm", "--snapshotter", "stargz", reference, &id];
    (stack.containerd.ctr(run))
        .map(|o| o.stdout)
        .unwrap_or_default()
}
