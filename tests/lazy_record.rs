//! Recording a real run and optimizing from it: with `[record] enable = true`, a
//! container started lazily through containerd leaves a record of the files it opened
//! (ctr-remote's JSON lines, per image manifest and layer), and the converter's
//! `--record-from` turns it into an image whose layers have exactly those files first.

mod common;
use common::stack::{convert_to_estargz, convert_with, rpull, LazyStack};

use estargz_convert::record::{record_files, Prioritized};
use testkit::{unique_id, DataFile};

/// busybox plus a data layer; the entrypoint reads two of the three data files.
fn image() -> testkit::BuiltImage {
    let files = [
        DataFile::new("data/a.txt", 4096, 90),
        DataFile::new("data/b.txt", 300, 90),
        DataFile::new("data/unused.bin", 2 << 20, 0),
    ];
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(testkit::data_layer(&files, 3).unwrap())
        .cmd(&[
            "/bin/sh",
            "-c",
            "cat /data/b.txt /data/a.txt >/dev/null && echo recorded",
        ])
        .build()
        .unwrap()
}

#[test]
fn a_recorded_run_becomes_an_optimized_image() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("rec-", "[record]\nenable = true\n");
    let registry = &stack.registry;
    let plain = registry.push("rec/app", "plain", &image()).unwrap();
    let esgz = registry.reference("rec/app", "esgz");
    convert_to_estargz(&plain, &esgz);

    let containerd = &stack.containerd;
    rpull(containerd, &esgz);
    let id = unique_id("rec");
    let out = containerd
        .ctr(["run", "--rm", "--snapshotter", "stargz", &esgz, &id])
        .unwrap()
        .stdout;
    assert_eq!(out.trim(), "recorded", "{}", stack.daemon.log_text());

    let record_dir = stack.dir.path().join("root/record");
    let files = record_files(&record_dir).unwrap();
    assert_eq!(files.len(), 1, "one record file per image: {files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let data_paths: Vec<&str> = lines
        .iter()
        .filter(|l| l["layerIndex"] == 1)
        .filter_map(|l| l["path"].as_str())
        .collect();
    assert_eq!(data_paths, ["data/b.txt", "data/a.txt"], "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l["layerIndex"] == 0 && l["path"] == "bin/busybox"),
        "the shell binary is recorded in the busybox layer: {text}"
    );

    let optimized = registry.reference("rec/app", "opt");
    convert_with(&esgz, &optimized, Prioritized::load(None, &files).unwrap());
    let manifest = registry.client().get_manifest("rec/app", "opt").unwrap();
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let digest = json["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let blob = registry.client().get_blob("rec/app", &digest).unwrap();
    let reader = estargz::Reader::open(blob.as_slice(), None).unwrap();
    let index = reader.index();
    let landmark = index.prefetch_landmark_offset().expect("prefetch landmark");
    let offset = |path: &str| {
        let id = index.lookup(path).unwrap();
        index.chunks(id)[0].compressed.start
    };
    assert!(
        offset("data/b.txt") < offset("data/a.txt"),
        "in recorded order"
    );
    assert!(
        offset("data/a.txt") < landmark,
        "recorded files before the landmark"
    );
    assert!(offset("data/unused.bin") > landmark, "the rest after it");
}
