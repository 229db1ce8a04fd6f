//! Learned prefetch through a SOCI index: `estargz-convert index --record-from` turns the
//! daemon's access record into a prefetch artifact and exact compressed ranges beside the
//! zTOCs (or, for an eStargz image, a file list), the image digest unchanged; the daemon
//! fetches them at mount, checks them and serves the recorded files without fetching
//! again. A range that fails its digest is never served.

mod common;
use common::soci::{
    index, index_with, log_field, push_soci_index_with, served, without_colors, ztoc_of,
};
use common::stack::{self, convert_to_estargz, rpull, LazyStack};

use std::ops::Range;

use testkit::{unique_id, BuiltImage, MultiRangeAnswer};

/// busybox, 24 MiB of incompressible data (`/data/big/two.bin` is 8 MiB of it), and a
/// small text file.
fn image_with_data() -> BuiltImage {
    stack::image_with_data("learned through a soci index", 9)
}

#[test]
fn learned_prefetch_fetches_the_recorded_files_at_mount() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socip-", "[background_fetch]\nenable = false\n");
    let image = image_with_data();
    let reference = stack.registry.push("soci/learn", "v1", &image).unwrap();
    let client = stack.registry.client();
    let before = client.get_manifest("soci/learn", "v1").unwrap();

    // The daemon's access record: the data layer (index 1) read two.bin at start.
    let record_dir = tempfile::tempdir().unwrap();
    let record = record_dir.path().join("record.jsonl");
    let line = serde_json::json!({
        "path": "data/big/two.bin",
        "manifestDigest": before.digest.to_string(),
        "layerIndex": 1,
    });
    std::fs::write(&record, format!("{line}\n")).unwrap();
    let report = index_with(&reference, Some(&record));
    let prefetch = &report["manifests"][0]["layers"][1]["prefetch"];
    assert_eq!(prefetch["files"], 1, "{report}");
    let spans = prefetch["spans"].as_u64().unwrap();
    assert!(spans >= 2, "8 MiB of content spans several spans: {report}");
    assert!(report["manifests"][0]["layers"][0]["prefetch"].is_null());
    let after = client.get_manifest("soci/learn", "v1").unwrap();
    assert_eq!(after.digest, before.digest, "the image digest is unchanged");

    let data_layer = vec![image.layers[1].blob.digest.to_string()];
    let log_path = stack.registry.log_path();
    let log_start = std::fs::read_to_string(&log_path).unwrap().len();
    rpull(&stack.containerd, &reference);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let at_mount = served(&log[log_start..], &data_layer);
    let daemon_log = stack.daemon.log_text();
    // The Prepares, the layers opened ahead and the index look-up all need the image
    // manifest at once: one GET (each counts toward a registry's pull rate limit).
    let by_tag = (daemon_log.lines().map(without_colors))
        .filter(|l| l.contains("registry request") && l.contains("/soci/learn/manifests/v1 "))
        .count();
    assert_eq!(by_tag, 1, "the manifest by tag, once: {daemon_log}");
    // Before any container read: the recorded file's spans came at mount.
    assert!(
        at_mount >= 8 << 20,
        "prefetch fetched {at_mount} bytes of the data layer at mount: {daemon_log}"
    );
    // The recorded file's exact compressed ranges (one per span it lies in), each
    // checked whole, not whole blocks or spans: no more than a few KiB past its 8 MiB.
    let learned = (daemon_log.lines().map(without_colors))
        .find(|l| l.contains("soci learned prefetch done"))
        .unwrap_or_else(|| panic!("no learned prefetch: {daemon_log}"));
    let (kept, of) = (log_field(&learned, " ranges="), log_field(&learned, " of="));
    assert!(kept >= Some(2) && kept == of, "{learned}");
    assert!(
        at_mount < (8 << 20) + (64 << 10),
        "prefetch fetched {at_mount} bytes for the 8 MiB file: {daemon_log}"
    );

    // Readers at once: one that finds a span busy with another must still be
    // served what is there, not take it for a miss and fetch past it.
    let out = stack.run_script(
        &reference,
        "socip",
        "for i in 1 2 3 4; do (cat /data/big/two.bin | wc -c) & done; wait",
    );
    let daemon_log = stack.daemon.log_text();
    let want = (8u64 << 20).to_string();
    let counts: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(counts, vec![want.as_str(); 4], "{daemon_log}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let total = served(&log[log_start..], &data_layer);
    assert_eq!(
        total, at_mount,
        "reading the recorded file fetched nothing more: {daemon_log}"
    );
}

#[test]
fn a_soci_mount_is_recorded_and_the_record_learns_a_prefetch() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config(
        "socir-",
        "[background_fetch]\nenable = false\n[record]\nenable = true\n",
    );
    let image = image_with_data();
    let reference = stack.registry.push("soci/rec", "v1", &image).unwrap();
    assert_eq!(index(&reference)["indexed"], 3);
    rpull(&stack.containerd, &reference);
    let out = stack.run_script(&reference, "socir", "cat /data/big/two.bin | wc -c");
    assert_eq!(out.trim(), (8u64 << 20).to_string());

    let record_dir = stack.dir.path().join("root/record");
    let files = estargz_convert::record::record_files(&record_dir).unwrap();
    assert_eq!(files.len(), 1, "one record file for the image: {files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let manifest = image.manifest.digest.to_string();
    let recorded = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .any(|l| {
            l["path"] == "data/big/two.bin"
                && l["layerIndex"] == 1
                && l["manifestDigest"] == manifest
        });
    assert!(recorded, "the SOCI-served layer's open is recorded: {text}");

    // The record, given to the indexer of the same image, becomes a prefetch artifact.
    let learned = stack.registry.push("soci/rec2", "v1", &image).unwrap();
    let report = index_with(&learned, Some(&files[0]));
    let prefetch = &report["manifests"][0]["layers"][1]["prefetch"];
    assert!(prefetch["files"].as_u64() >= Some(1), "{report}");
}

#[test]
fn a_record_given_with_an_estargz_image_is_prefetched_from_a_referrer() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socie-", "[background_fetch]\nenable = false\n");
    let image = image_with_data();
    let plain = stack.registry.push("esgz/learn", "plain", &image).unwrap();
    // Converted without prioritized files: nothing is prefetched at mount by itself.
    let esgz = stack.registry.reference("esgz/learn", "esgz");
    convert_to_estargz(&plain, &esgz);
    let client = stack.registry.client();
    let before = client.get_manifest("esgz/learn", "esgz").unwrap();
    let json: serde_json::Value = serde_json::from_slice(&before.bytes).unwrap();
    let data_layer = vec![json["layers"][1]["digest"].as_str().unwrap().to_owned()];

    let record_dir = tempfile::tempdir().unwrap();
    let record = record_dir.path().join("record.jsonl");
    let line = serde_json::json!({
        "path": "data/big/two.bin",
        "manifestDigest": before.digest.to_string(),
        "layerIndex": 1,
    });
    std::fs::write(&record, format!("{line}\n")).unwrap();
    let report = index_with(&esgz, Some(&record));
    let layer = &report["manifests"][0]["layers"][1];
    assert_eq!(layer["status"], "estargz", "{report}");
    assert_eq!(layer["prefetch"]["files"], 1, "{report}");
    assert!(
        report["manifests"][0]["sociIndexDigest"].is_string(),
        "{report}"
    );
    let after = client.get_manifest("esgz/learn", "esgz").unwrap();
    assert_eq!(after.digest, before.digest, "the image digest is unchanged");

    let log_path = stack.registry.log_path();
    let log_start = std::fs::read_to_string(&log_path).unwrap().len();
    rpull(&stack.containerd, &esgz);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let at_mount = served(&log[log_start..], &data_layer);
    let daemon_log = stack.daemon.log_text();
    assert!(
        at_mount >= 8 << 20,
        "the learned file came at mount: {at_mount} bytes: {daemon_log}"
    );
    assert!(
        daemon_log.contains("prefetching the learned files"),
        "{daemon_log}"
    );

    let out = stack.run_script(&esgz, "socie", "cat /data/big/two.bin | wc -c");
    assert_eq!(out.trim(), (8u64 << 20).to_string());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let total = served(&log[log_start..], &data_layer);
    assert_eq!(
        total, at_mount,
        "reading the learned file fetched nothing more"
    );
}

#[test]
fn a_learned_range_failing_its_digest_is_never_served_and_reads_fetch_the_file_again() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("socil-", "[background_fetch]\nenable = false\n");
    let image = image_with_data();
    let reference = stack.registry.push("soci/badlearn", "v1", &image).unwrap();
    // The data layer (index 1), its learned ranges for two.bin, the first one's digest
    // wrong: as if the registry served other bytes than the indexer read.
    let block = estargz::soci::DEFAULT_BLOCK_SIZE;
    let (registry, two) = (&stack.registry, "two.bin");
    let read_range = push_learned_index(
        registry,
        "soci/badlearn",
        &image,
        block,
        two,
        |f| f,
        |learned| {
            assert!(learned.ranges.len() >= 2, "{:?}", learned.ranges.len());
            learned.ranges[0].digest = estargz::Digest::sha256(b"other bytes");
        },
    );

    rpull(&stack.containerd, &reference);
    let daemon_log = stack.daemon.log_text();
    assert!(
        daemon_log.contains("soci learned range failed verification"),
        "{daemon_log}"
    );
    // The other ranges were kept; the file's first bytes come through the blocks, each
    // checked, and the whole file reads right.
    let mut tar = Vec::new();
    let data = &image.layers[1].blob.bytes[..];
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut tar).unwrap();
    let want =
        estargz::Digest::sha256(&tar[read_range.start as usize..read_range.end as usize]).hex();
    let out = stack.run_script(&reference, "socil", "sha256sum /data/big/two.bin");
    let daemon_log = stack.daemon.log_text();
    assert!(out.starts_with(&want), "{out} (want {want}): {daemon_log}");
}

#[test]
fn a_learned_range_with_a_wrong_window_fails_the_layer_at_the_whole_layer_check() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    // Background fetching on (the default): the whole layer is fetched and checked.
    let stack = LazyStack::start("soclw-");
    let text = testkit::image::content::text(5, 3 << 20);
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer.file("data/text.txt", &text, 0o644).unwrap();
    let image = testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/sha256sum", "/data/text.txt"])
        .build()
        .unwrap();
    let reference = stack.registry.push("soci/badwindow", "v1", &image).unwrap();
    // A read deep in the text: it starts at a block end whose window the text refers to.
    let deep = |file: Range<u64>| file.start + (2 << 20)..file.start + (2 << 20) + 20_000;
    let registry = &stack.registry;
    push_learned_index(
        registry,
        "soci/badwindow",
        &image,
        4096,
        "text.txt",
        deep,
        |learned| {
            let range = (learned.ranges.iter_mut())
                .find(|r| !r.window.is_empty())
                .expect("a learned range with a window");
            let all = vec![true; 32 << 10];
            range.window = estargz::soci::sparse_window::encode(&vec![b'x'; 32 << 10], &all);
        },
    );

    rpull(&stack.containerd, &reference);
    let wait = std::time::Duration::from_secs(120);
    stack
        .daemon
        .wait_for_log("soci layer failed verification", 1, wait);
    let daemon_log = stack.daemon.log_text();
    assert!(
        daemon_log.contains("learned range at uncompressed"),
        "{daemon_log}"
    );
    let id = unique_id("soclw");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let out = stack
        .containerd
        .ctr(run)
        .map(|o| o.stdout)
        .unwrap_or_default();
    let want = estargz::Digest::sha256(&text).hex();
    assert!(
        !out.contains(&want[..16]) && !out.contains("text.txt"),
        "a failed layer serves nothing: {out}\n{}",
        stack.daemon.log_text()
    );
}

/// Indexes `image` by hand: zTOCs for every layer; for the data layer (index 1) span
/// blocks of `block_size`, their windows and learned ranges for `read` (of the byte range
/// of the file whose name ends in `file`), changed by `tamper` before they are pushed.
/// Returns the read.
fn push_learned_index(
    registry: &testkit::Registry,
    repo: &str,
    image: &BuiltImage,
    block_size: u64,
    file: &str,
    read: impl Fn(Range<u64>) -> Range<u64>,
    tamper: impl FnOnce(&mut estargz::soci::LearnedRanges),
) -> Range<u64> {
    let blobs: Vec<&[u8]> = image.layers.iter().map(|l| &l.blob.bytes[..]).collect();
    let (gzip, opts) = (
        estargz::soci::Compression::Gzip,
        estargz::soci::BuildOptions::default(),
    );
    let (ztoc, blocks, windows) =
        estargz::soci::build_ztoc_with_blocks(blobs[1], gzip, &opts, block_size).unwrap();
    let zinfo = estargz::soci::Zinfo::new(&ztoc).unwrap();
    let f = ztoc.files.iter().find(|f| f.name.ends_with(file)).unwrap();
    let read = read(f.uncompressed_offset..f.uncompressed_offset + f.uncompressed_size);
    let reads = std::slice::from_ref(&read);
    let mut learned = estargz::soci::LearnedRanges::build(&zinfo, &blocks, &windows, reads, |r| {
        Ok(blobs[1][r.start as usize..r.end as usize].to_vec())
    })
    .unwrap();
    tamper(&mut learned);
    let ztocs: Vec<Option<Vec<u8>>> = blobs.iter().map(|b| Some(ztoc_of(b).to_bytes())).collect();
    let mut beside = vec![
        (estargz::soci::BLOCKS_MEDIA_TYPE, 1, blocks.to_bytes()),
        (estargz::soci::LEARNED_MEDIA_TYPE, 1, learned.to_bytes()),
    ];
    if !windows.is_empty() {
        beside.push((estargz::soci::WINDOWS_MEDIA_TYPE, 1, windows));
    }
    push_soci_index_with(registry, repo, image, &ztocs, &beside);
    read
}

/// Learned reads apart in one layer (three files with unread ones between) come in one
/// request: a multi-range one where the registry answers with parts, and range by range
/// where it answers such a request with the whole blob (as ECR does). Either way every
/// range is kept and the files read right.
#[test]
fn learned_ranges_apart_come_in_one_request_or_range_by_range() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let names = ["a", "b", "c", "d", "e"];
    let contents: Vec<Vec<u8>> = (0..names.len() as u64)
        .map(|i| testkit::image::content::random(30 + i, 2 << 20))
        .collect();
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("d", 0o755).unwrap();
    for (name, content) in names.iter().zip(&contents) {
        layer
            .file(&format!("d/{name}.bin"), content, 0o644)
            .unwrap();
    }
    let image = testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap();
    let read = [0, 2, 4];
    let record_dir = tempfile::tempdir().unwrap();
    let record = record_dir.path().join("record.jsonl");
    let lines: Vec<String> = (read.iter())
        .map(|&i| {
            let line = serde_json::json!({
                "path": format!("d/{}.bin", names[i]),
                "manifestDigest": image.manifest.digest.to_string(),
                "layerIndex": 1,
            });
            format!("{line}\n")
        })
        .collect();
    std::fs::write(&record, lines.concat()).unwrap();
    let script = (read.iter())
        .map(|&i| format!("sha256sum /d/{}.bin", names[i]))
        .collect::<Vec<_>>()
        .join("; ");
    let sums: Vec<String> = (read.iter())
        .map(|&i| estargz::Digest::sha256(&contents[i]).hex())
        .collect();

    for answer in [MultiRangeAnswer::Parts, MultiRangeAnswer::WholeBlob] {
        let config = "[background_fetch]\nenable = false\n";
        let (stack, proxy) = LazyStack::start_behind_proxy("socia-", config);
        proxy.set_multi_range(answer);
        let reference = stack.registry.push("soci/apart", "v1", &image).unwrap();
        index_with(&reference, Some(&record));
        let via_proxy = reference.replacen(&stack.registry.host(), &proxy.host(), 1);
        rpull(&stack.containerd, &via_proxy);
        let daemon_log = stack.daemon.log_text();
        let lines: Vec<String> = daemon_log.lines().map(without_colors).collect();
        let learned = (lines.iter())
            .find(|l| l.contains("soci learned prefetch done"))
            .unwrap_or_else(|| panic!("{answer:?}: no learned prefetch: {daemon_log}"));
        let (kept, of) = (log_field(learned, " ranges="), log_field(learned, " of="));
        assert!(kept == of && of >= Some(3), "{answer:?}: {learned}");
        assert_eq!(proxy.multi_range_reads(), 1, "{answer:?}: {daemon_log}");
        // One request for the three files' runs, or none where the registry refused.
        let apart = (lines.iter())
            .filter(|l| l.contains("soci request for ranges apart"))
            .filter_map(|l| log_field(l, " runs="))
            .collect::<Vec<_>>();
        let refused = daemon_log.contains("does not serve multi-range requests");
        match answer {
            MultiRangeAnswer::Parts => assert!(apart == [3] && !refused, "{daemon_log}"),
            _ => assert!(apart.is_empty() && refused, "{answer:?}: {daemon_log}"),
        }
        let out = stack.run_script(&via_proxy, "socia", &script);
        let got: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(got, sums, "{answer:?}: {}", stack.daemon.log_text());
    }
}
