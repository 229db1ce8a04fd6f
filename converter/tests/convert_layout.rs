//! `estargz-convert` between OCI layout directories: faithful eStargz and zstd:chunked
//! output, prioritized files, layer reuse, multi-platform indexes, Docker media types.

mod convert_support;

use std::path::Path;

use convert_support::*;
use estargz::{Digest, EntryType, Format, Reader};
use serde_json::Value;
use testkit::image::build::Blob;
use testkit::{build_index, write_layout, ImageBuilder, MediaTypes, Platform};

fn oci(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

#[test]
fn layout_to_layout_estargz_is_faithful() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let image = sample_image(1, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&src, "v1", &image).unwrap();
    let src_index = std::fs::read(src.join("index.json")).unwrap();

    let report = convert_json(&[&oci(&src, "v1"), &oci(&dst, "esgz")]);

    let (_, images) = read_layout(&dst, "esgz");
    assert_converted(&image, &images[0], Format::Estargz);
    assert_eq!(report["digest"], images[0].digest.to_string());
    assert_eq!(
        report["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(statuses(&report), ["converted", "converted"]);
    let layer = &report["manifests"][0]["layers"][1];
    assert_eq!(
        layer["sourceDigest"],
        image.layers[1].blob.digest.to_string()
    );
    assert_eq!(layer["digest"], images[0].layers[1].0["digest"]);
    assert_eq!(
        layer["tocDigest"],
        images[0].layers[1].0["annotations"][TOC_DIGEST]
    );
    // Sizes, for CI steps that report or gate on them: each against what was written.
    let dst_index: Value =
        serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
    assert_eq!(report["size"], dst_index["manifests"][0]["size"]);
    let layers = report["manifests"][0]["layers"].as_array().unwrap();
    for (i, layer) in layers.iter().enumerate() {
        let (written, blob) = &images[0].layers[i];
        let source = &image.layers[i];
        assert_eq!(layer["size"], written["size"], "layer {i} size");
        assert_eq!(layer["size"], blob.len(), "layer {i} size");
        assert_eq!(layer["sourceSize"], source.blob.bytes.len(), "layer {i}");
        let uncompressed = written["annotations"][UNCOMPRESSED_SIZE].as_str().unwrap();
        assert_eq!(
            layer["uncompressedSize"].to_string(),
            uncompressed,
            "layer {i}"
        );
    }
    assert_eq!(
        std::fs::read(src.join("index.json")).unwrap(),
        src_index,
        "source untouched"
    );
    assert!(dst.join("oci-layout").is_file());
}

#[test]
fn zstd_chunked_output_is_faithful() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let image = sample_image(2, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&src, "v1", &image).unwrap();

    convert_ok(&[
        "--zstd",
        "--chunk-size",
        "65536",
        &oci(&src, "v1"),
        &oci(&dst, "zstd"),
    ]);

    let (_, images) = read_layout(&dst, "zstd");
    assert_converted(&image, &images[0], Format::ZstdChunked);
    let (desc, blob) = &images[0].layers[0];
    let toc: Digest = desc["annotations"][TOC_DIGEST]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let reader = Reader::open(blob.as_slice(), Some(&toc)).unwrap();
    let big = reader.index().lookup("lib/big.so").unwrap();
    assert!(
        reader.index().chunks(big).len() > 30,
        "--chunk-size 64 KiB splits the file"
    );
}

/// The regular files and landmarks at the start of a layer's TOC, in order.
fn toc_head(desc: &Value, blob: &[u8]) -> Vec<String> {
    let toc: Digest = desc["annotations"][TOC_DIGEST]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let reader = Reader::open(blob, Some(&toc)).unwrap();
    reader
        .toc()
        .entries
        .iter()
        .filter(|e| e.entry_type == EntryType::Reg)
        .map(|e| e.name.clone())
        .collect()
}

#[test]
fn prioritized_files_come_first_then_landmark() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let image = sample_image(3, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&src, "v1", &image).unwrap();
    let list = tmp.path().join("prioritized.txt");
    std::fs::write(
        &list,
        "# boot order\nlib/big.so\n\n/etc/config\ndata/sub/b.txt\n",
    )
    .unwrap();

    convert_ok(&[
        "--prioritized-files",
        list.to_str().unwrap(),
        &oci(&src, "v1"),
        &oci(&dst, "p"),
    ]);

    let (_, images) = read_layout(&dst, "p");
    assert_converted(&image, &images[0], Format::Estargz);
    let (desc0, blob0) = &images[0].layers[0];
    assert_eq!(
        toc_head(desc0, blob0)[..3],
        ["lib/big.so", "etc/config", ".prefetch.landmark"]
    );
    let (desc1, blob1) = &images[0].layers[1];
    assert_eq!(
        toc_head(desc1, blob1)[..2],
        ["data/sub/b.txt", ".prefetch.landmark"]
    );
}

#[test]
fn without_prioritized_files_no_prefetch_landmark_is_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let image = sample_image(4, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&src, "v1", &image).unwrap();

    convert_ok(&[&oci(&src, "v1"), &oci(&dst, "v1")]);

    let (_, images) = read_layout(&dst, "v1");
    for (desc, blob) in &images[0].layers {
        assert_eq!(toc_head(desc, blob)[0], ".no.prefetch.landmark");
    }
}

#[test]
fn record_in_prioritizes_per_manifest_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let image = sample_image(5, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&src, "v1", &image).unwrap();
    let manifest = image.manifest.digest;
    let record = tmp.path().join("record.json");
    let lines = [
        format!(r#"{{"path":"srv/www/index.html","manifestDigest":"{manifest}","layerIndex":1}}"#),
        format!(r#"{{"path":"data/a.bin","manifestDigest":"{manifest}","layerIndex":1}}"#),
        format!(
            r#"{{"path":"bin/app","manifestDigest":"{}","layerIndex":0}}"#,
            Digest::sha256(b"other")
        ),
    ];
    std::fs::write(&record, lines.join("\n")).unwrap();

    convert_ok(&[
        "--record-in",
        record.to_str().unwrap(),
        &oci(&src, "v1"),
        &oci(&dst, "r"),
    ]);

    let (_, images) = read_layout(&dst, "r");
    let (desc0, blob0) = &images[0].layers[0];
    assert_eq!(
        toc_head(desc0, blob0)[0],
        ".no.prefetch.landmark",
        "layer 0 has no record"
    );
    let (desc1, blob1) = &images[0].layers[1];
    assert_eq!(
        toc_head(desc1, blob1)[..3],
        ["srv/www/index.html", "data/a.bin", ".prefetch.landmark"]
    );
}

#[test]
fn rerun_reuses_converted_layers_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    let image = sample_image(6, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&dir, "v1", &image).unwrap();
    convert_ok(&[&oci(&dir, "v1"), &oci(&dir, "esgz")]);
    let (_, first) = read_layout(&dir, "esgz");

    let again = convert_json(&[&oci(&dir, "esgz"), &oci(&dir, "again")]);
    assert_eq!(statuses(&again), ["reused", "reused"]);
    let (_, second) = read_layout(&dir, "again");
    assert_eq!(
        second[0].digest, first[0].digest,
        "same manifest, nothing rewritten"
    );

    let forced = convert_json(&["--force", &oci(&dir, "esgz"), &oci(&dir, "forced")]);
    assert_eq!(statuses(&forced), ["converted", "converted"]);
    let (_, third) = read_layout(&dir, "forced");
    assert_converted(&image, &third[0], Format::Estargz);

    // eStargz is not the zstd:chunked target format: converted again.
    let zstd = convert_json(&["--zstd", &oci(&dir, "esgz"), &oci(&dir, "zstd")]);
    assert_eq!(statuses(&zstd), ["converted", "converted"]);
    let zstd_again = convert_json(&["--zstd", &oci(&dir, "zstd"), &oci(&dir, "zstd2")]);
    assert_eq!(statuses(&zstd_again), ["reused", "reused"]);
    let (_, fourth) = read_layout(&dir, "zstd2");
    assert_converted(&image, &fourth[0], Format::ZstdChunked);
}

#[test]
fn reused_layers_get_missing_annotations_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    let image = sample_image(12, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&dir, "v1", &image).unwrap();
    convert_ok(&[&oci(&dir, "v1"), &oci(&dir, "esgz")]);
    let (_, converted) = read_layout(&dir, "esgz");
    // The same eStargz blobs under a manifest whose annotations were stripped, with
    // Docker media types, as some registries and tools rewrite them.
    let mut stripped = image.clone();
    let mut manifest = converted[0].manifest.clone();
    for (i, layer) in stripped.layers.iter_mut().enumerate() {
        let blob = converted[0].layers[i].1.clone();
        layer.blob = Blob::new(MediaTypes::Docker.gzip_layer(), blob);
        manifest["layers"][i] = layer.blob.descriptor();
    }
    let config = serde_json::to_vec(&converted[0].config).unwrap();
    stripped.config = Blob::new(MediaTypes::Docker.config(), config);
    manifest["config"] = stripped.config.descriptor();
    manifest["mediaType"] = MediaTypes::Docker.manifest().into();
    stripped.manifest = Blob::new(
        MediaTypes::Docker.manifest(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    write_layout(&dir, "stripped", &stripped).unwrap();

    let report = convert_json(&[&oci(&dir, "stripped"), &oci(&dir, "restored")]);

    assert_eq!(statuses(&report), ["reused", "reused"]);
    let (_, restored) = read_layout(&dir, "restored");
    assert_converted(&image, &restored[0], Format::Estargz);
    assert_eq!(
        restored[0].manifest["layers"],
        converted[0].manifest["layers"]
    );
}

#[test]
fn identical_layers_are_converted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let layer = sample_layers(7).remove(1);
    let image = ImageBuilder::new()
        .layer(layer.clone())
        .layer(layer)
        .build()
        .unwrap();
    write_layout(&src, "v1", &image).unwrap();

    let output = convert_ok(&["--json", &oci(&src, "v1"), &oci(&dst, "v1")]);

    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        log.matches(" converted: ").count(),
        1,
        "one conversion:\n{log}"
    );
    let (_, images) = read_layout(&dst, "v1");
    assert_converted(&image, &images[0], Format::Estargz);
    assert_eq!(images[0].layers[0].0, images[0].layers[1].0);
}

#[test]
fn multi_platform_index_converts_all_or_the_selected_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let amd64 = sample_image(8, MediaTypes::Oci, Platform::linux_amd64());
    let arm64 = sample_image(9, MediaTypes::Oci, Platform::linux_arm64());
    let index = build_index(vec![amd64.clone(), arm64.clone()]).unwrap();
    write_layout(&src, "v1", &index).unwrap();

    let report = convert_json(&[&oci(&src, "v1"), &oci(&dst, "all")]);
    let (top, images) = read_layout(&dst, "all");
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(
        report["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(images.len(), 2);
    assert_converted(&amd64, &images[0], Format::Estargz);
    assert_converted(&arm64, &images[1], Format::Estargz);
    assert_eq!(top["manifests"][1]["platform"]["architecture"], "arm64");

    convert_ok(&[
        "--platform",
        "linux/arm64",
        &oci(&src, "v1"),
        &oci(&dst, "arm"),
    ]);
    let (top, images) = read_layout(&dst, "arm");
    assert_eq!(
        top["mediaType"], "application/vnd.oci.image.index.v1+json",
        "still an index"
    );
    assert_eq!(images.len(), 1);
    assert_eq!(top["manifests"][0]["platform"]["architecture"], "arm64");
    assert_converted(&arm64, &images[0], Format::Estargz);

    let stderr = convert_fails(&[
        "--platform",
        "linux/s390x",
        &oci(&src, "v1"),
        &oci(&dst, "none"),
    ]);
    assert!(stderr.contains("no manifest"), "{stderr}");
}

#[test]
fn docker_media_types_become_oci() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let amd64 = sample_image(10, MediaTypes::Docker, Platform::linux_amd64());
    let arm64 = sample_image(11, MediaTypes::Docker, Platform::linux_arm64());
    let list = build_index(vec![amd64.clone(), arm64]).unwrap();
    assert_eq!(list.index.media_type, MediaTypes::Docker.index());
    write_layout(&src, "list", &list).unwrap();
    write_layout(&src, "single", &amd64).unwrap();

    convert_ok(&[&oci(&src, "single"), &oci(&dst, "single")]);
    let (top, images) = read_layout(&dst, "single");
    assert_eq!(
        top["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_converted(&amd64, &images[0], Format::Estargz);

    convert_ok(&[&oci(&src, "list"), &oci(&dst, "list")]);
    let (top, images) = read_layout(&dst, "list");
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    for entry in top["manifests"].as_array().unwrap() {
        assert_eq!(
            entry["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
    }
    assert_converted(&amd64, &images[0], Format::Estargz);
}
