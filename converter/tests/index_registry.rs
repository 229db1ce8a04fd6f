//! `estargz-convert index` against a real docker-registry (2.8: no referrers API, so the
//! referrers tag schema is used) and an OCI layout: the image keeps its digest, the SOCI
//! index names it as subject, and every span of every zTOC decodes to the layer's tar.

mod convert_support;

use convert_support::*;
use estargz::soci::{
    decompress_prefix, decompress_span, Compression, SpanBlocks, Zinfo, Ztoc, BLOCKS_MEDIA_TYPE,
};
use estargz::Digest;
use serde_json::Value;
use testkit::registry::REGISTRY_BIN;
use testkit::{build_index, write_layout, BuiltImage, MediaTypes, Platform, Prereq, Registry};

const SOCI_V1: &str = "application/vnd.amazon.soci.index.v1+json";

/// Runs `estargz-convert index ARGS --json` (the subcommand must come first).
fn index_json(args: &[&str]) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_estargz-convert"))
        .args(["index", "--no-progress", "--json"])
        .args(args)
        .output()
        .expect("start estargz-convert");
    assert!(
        output.status.success(),
        "estargz-convert index {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

/// The zTOC layers of a SOCI index (its other layers are our span blocks and prefetch
/// artifacts), each with the span blocks blob bound to the same image layer.
fn ztocs_and_blocks(soci: &Value) -> Vec<(Value, Value)> {
    let layers = soci["layers"].as_array().unwrap();
    let bound = |l: &Value| l["annotations"]["com.amazon.soci.image-layer-digest"].clone();
    layers
        .iter()
        .filter(|l| l["mediaType"] == "application/octet-stream")
        .map(|z| {
            let blocks = layers
                .iter()
                .find(|l| l["mediaType"] == BLOCKS_MEDIA_TYPE && bound(l) == bound(z))
                .expect("span blocks beside every zTOC");
            (z.clone(), blocks.clone())
        })
        .collect()
}

/// Checks the span blocks blob against its zTOC and layer: each span's first block alone
/// decodes to a verified prefix of the span, all blocks to the whole span.
fn check_blocks(ztoc: &[u8], blocks: &[u8], blob: &[u8], tar: &[u8]) {
    let ztoc = Ztoc::from_bytes(ztoc).unwrap();
    let zinfo = Zinfo::new(&ztoc).unwrap();
    let blocks = SpanBlocks::from_bytes(blocks, &zinfo).expect("span blocks parse");
    assert!(
        (blocks.to_bytes().len() as u64) * 200 < blob.len() as u64,
        "span blocks are tiny against the layer"
    );
    for span in 0..zinfo.span_count() {
        let c = zinfo.compressed_range(span).unwrap();
        let u = zinfo.uncompressed_range(span).unwrap();
        for count in [1, blocks.count(span)] {
            let end = blocks
                .compressed_range(&zinfo, span, count - 1)
                .unwrap()
                .end;
            let prefix = &blob[c.start as usize..end as usize];
            let out = decompress_prefix(&zinfo, &blocks, span, count, prefix).unwrap();
            let at = u.start as usize;
            assert!(out[..] == tar[at..at + out.len()], "span {span} prefix");
        }
    }
}

/// Checks a zTOC against the layer it claims to index: every span verifies and decodes,
/// and the spans concatenate to the layer's tar.
fn check_ztoc(ztoc: &[u8], blob: &[u8], tar: &[u8]) {
    let ztoc = Ztoc::from_bytes(ztoc).expect("ztoc parses");
    assert_eq!(ztoc.compression, Compression::Gzip);
    assert_eq!(ztoc.compressed_archive_size, blob.len() as u64);
    let zinfo = Zinfo::new(&ztoc).expect("checkpoints are consistent");
    let mut joined = Vec::new();
    for span in 0..zinfo.span_count() {
        let r = zinfo.compressed_range(span).unwrap();
        let bytes = &blob[r.start as usize..r.end as usize];
        joined.extend(decompress_span(&zinfo, span, bytes).expect("span decodes"));
    }
    assert!(joined == tar, "spans decode to the layer tar");
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().unwrap().count();
    assert_eq!(
        ztoc.files.len(),
        entries,
        "one file table entry per tar entry"
    );
}

/// The referrers of `manifest` in `repo` via the tag schema, and the SOCI index in it.
fn soci_index_of(registry: &Registry, repo: &str, manifest: &Digest) -> (Value, Value) {
    let client = registry.client();
    let tag = format!("sha256-{}", manifest.hex());
    let referrers = client
        .get_manifest(repo, &tag)
        .expect("referrers tag exists");
    let referrers: Value = serde_json::from_slice(&referrers.bytes).unwrap();
    let entries = referrers["manifests"].as_array().unwrap();
    let entry = entries
        .iter()
        .find(|e| e["artifactType"] == SOCI_V1)
        .expect("a SOCI index among the referrers");
    let soci = client
        .get_manifest(repo, entry["digest"].as_str().unwrap())
        .unwrap();
    (referrers, serde_json::from_slice(&soci.bytes).unwrap())
}

fn check_image(registry: &Registry, repo: &str, image: &BuiltImage, manifest: &Digest, min: u64) {
    let (_, soci) = soci_index_of(registry, repo, manifest);
    assert_eq!(soci["config"]["mediaType"], SOCI_V1);
    assert_eq!(soci["subject"]["digest"], manifest.to_string());
    let client = registry.client();
    let layers = ztocs_and_blocks(&soci);
    let expected: Vec<_> = image
        .layers
        .iter()
        .filter(|l| l.blob.bytes.len() as u64 >= min)
        .collect();
    assert_eq!(layers.len(), expected.len(), "one zTOC per large layer");
    for ((desc, blocks), layer) in layers.iter().zip(expected) {
        let annotations = &desc["annotations"];
        assert_eq!(
            annotations["com.amazon.soci.image-layer-digest"],
            layer.blob.digest.to_string()
        );
        assert_eq!(
            annotations["com.amazon.soci.image-layer-mediaType"],
            layer.blob.media_type
        );
        assert_eq!(annotations["com.amazon.soci.span-size"], "65536");
        let ztoc = client.get_blob(repo, &digest_of(desc)).unwrap();
        check_ztoc(&ztoc, &layer.blob.bytes, &layer.tar);
        let blocks = client.get_blob(repo, &digest_of(blocks)).unwrap();
        check_blocks(&ztoc, &blocks, &layer.blob.bytes, &layer.tar);
    }
}

#[test]
fn index_registry_images_without_changing_them() {
    testkit::require!(Prereq::Binary(REGISTRY_BIN));
    let registry = Registry::start().unwrap();
    let image = sample_image(40, MediaTypes::Docker, Platform::linux_amd64());
    let src = registry.push("app", "v1", &image).unwrap();
    let before = registry.client().get_manifest("app", "v1").unwrap();
    // The small top layer stays under the threshold, the base layer is indexed.
    let sizes: Vec<u64> = image
        .layers
        .iter()
        .map(|l| l.blob.bytes.len() as u64)
        .collect();
    let min = sizes.iter().copied().min().unwrap() + 1;
    assert!(sizes.iter().any(|&s| s >= min));
    let min_arg = min.to_string();
    let args = [
        "--plain-http",
        "--span-size",
        "65536",
        "--min-span-size",
        "65536",
        "--min-layer-size",
        &min_arg,
        &src,
    ];
    let report = index_json(&args);

    let after = registry.client().get_manifest("app", "v1").unwrap();
    assert_eq!(after.digest, before.digest, "the image keeps its digest");
    assert_eq!(after.bytes, before.bytes);
    assert_eq!(report["digest"], before.digest.to_string());
    assert_eq!(report["indexed"], 1);
    assert_eq!(report["skipped"], 1);
    assert_eq!(report["manifests"][0]["referrers"], "tag-schema");
    check_image(&registry, "app", &image, &before.digest, min);

    // Indexing again replaces the referrers entry instead of adding a second one.
    index_json(&args);
    let (referrers, _) = soci_index_of(&registry, "app", &before.digest);
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);

    // A multi-platform index: one SOCI index per platform manifest, index unchanged.
    let amd64 = sample_image(41, MediaTypes::Oci, Platform::linux_amd64());
    let arm64 = sample_image(42, MediaTypes::Oci, Platform::linux_arm64());
    let multi = build_index(vec![amd64.clone(), arm64.clone()]).unwrap();
    let src = registry.push("multi", "v1", &multi).unwrap();
    let before = registry.client().get_manifest("multi", "v1").unwrap();
    let report = index_json(&[
        "--plain-http",
        "--span-size",
        "65536",
        "--min-span-size",
        "65536",
        "--min-layer-size",
        "0",
        &src,
    ]);
    let after = registry.client().get_manifest("multi", "v1").unwrap();
    assert_eq!(after.digest, before.digest);
    assert_eq!(report["indexed"], 4);
    for built in [&amd64, &arm64] {
        check_image(&registry, "multi", built, &built.manifest.digest, 0);
    }
}

#[test]
fn index_layout_image_with_the_tag_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("img");
    let image = sample_image(43, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&dir, "v1", &image).unwrap();
    let before = std::fs::read(dir.join("index.json")).unwrap();
    let location = format!("oci:{}:v1", dir.display());
    let report = index_json(&["--span-size", "65536", "--min-layer-size", "0", &location]);
    assert_eq!(report["indexed"], 2);
    assert_eq!(report["digest"], image.manifest.digest.to_string());

    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let old: Value = serde_json::from_slice(&before).unwrap();
    let v1 = |i: &Value| {
        i["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
            .cloned()
    };
    assert_eq!(v1(&index), v1(&old), "the image entry is untouched");
    let tag = format!("sha256-{}", image.manifest.digest.hex());
    let referrers = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
        .expect("referrers tag in index.json");
    let blob = |d: &Digest| std::fs::read(dir.join("blobs/sha256").join(d.hex())).unwrap();
    let referrers: Value = serde_json::from_slice(&blob(&digest_of(referrers))).unwrap();
    let soci: Value =
        serde_json::from_slice(&blob(&digest_of(&referrers["manifests"][0]))).unwrap();
    assert_eq!(soci["subject"]["digest"], image.manifest.digest.to_string());
    for ((desc, blocks), layer) in ztocs_and_blocks(&soci).iter().zip(&image.layers) {
        check_ztoc(&blob(&digest_of(desc)), &layer.blob.bytes, &layer.tar);
        let blocks = blob(&digest_of(blocks));
        check_blocks(
            &blob(&digest_of(desc)),
            &blocks,
            &layer.blob.bytes,
            &layer.tar,
        );
    }
}
