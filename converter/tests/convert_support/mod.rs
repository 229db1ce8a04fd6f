//! Shared helpers of the `convert_*` integration tests: run the binary, build fixture
//! images, read converted images back and check them layer by layer.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use estargz::testutil::{decompress_blob, tar_listing};
use estargz::{Digest, Format, Reader};
use serde_json::Value;
use testkit::image::build::Blob;
use testkit::{BuiltImage, DataFile, ImageBuilder, LayerBuilder, MediaTypes, Platform};

pub const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
pub const UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";
pub const ZSTD_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";
pub const ZSTD_POSITION: &str = "io.containers.zstd-chunked.manifest-position";

/// Runs `estargz-convert` with plain log output.
pub fn run_convert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estargz-convert"))
        .arg("--no-progress")
        .args(args)
        .output()
        .expect("start estargz-convert")
}

/// Runs `estargz-convert` and fails the test (showing its log) unless it succeeds.
pub fn convert_ok(args: &[&str]) -> Output {
    let output = run_convert(args);
    assert!(
        output.status.success(),
        "estargz-convert {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `estargz-convert` expecting failure; returns its stderr.
pub fn convert_fails(args: &[&str]) -> String {
    let output = run_convert(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "estargz-convert {args:?} succeeded:\n{stderr}"
    );
    stderr
}

/// The `--json` report of a successful run.
pub fn convert_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let output = convert_ok(&all);
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

/// Layer 1: directories, small and multi-chunk files, links. Layer 2: changes on top.
pub fn sample_layers(seed: u64) -> Vec<Vec<u8>> {
    let mut base = LayerBuilder::new();
    base.dir("bin", 0o755).unwrap();
    base.file("bin/app", &pseudo_text(seed, 300_000), 0o755)
        .unwrap();
    base.dir("etc", 0o755).unwrap();
    base.file("etc/config", b"key=value\n", 0o644).unwrap();
    base.file("etc/empty", b"", 0o600).unwrap();
    base.symlink("etc/link", "config").unwrap();
    base.hardlink("etc/hard", "etc/config").unwrap();
    base.dir("lib", 0o755).unwrap();
    base.file("lib/big.so", &pseudo_text(seed + 1, 2_500_000), 0o644)
        .unwrap();
    let base = base.finish().unwrap();
    let files = [
        DataFile::new("data/a.bin", 70_000, 30),
        DataFile::new("data/sub/b.txt", 5_000, 100),
        DataFile::new("srv/www/index.html", 1_234, 100),
    ];
    let top = testkit::data_layer(&files, seed).unwrap();
    vec![base, top]
}

fn pseudo_text(seed: u64, len: usize) -> Vec<u8> {
    testkit::image::content::mixed(seed, len, 50)
}

/// A two-layer image with the given media types and platform.
pub fn sample_image(seed: u64, media_types: MediaTypes, platform: Platform) -> BuiltImage {
    sample_layers(seed)
        .into_iter()
        .fold(
            ImageBuilder::new()
                .media_types(media_types)
                .platform(platform),
            ImageBuilder::layer,
        )
        .cmd(&["/bin/app"])
        .build()
        .unwrap()
}

/// Replaces layer `index`'s blob by `bytes` and fixes the manifest to match, as a broken
/// image pushed by a buggy tool would look.
pub fn with_layer_blob(image: &BuiltImage, index: usize, bytes: Vec<u8>) -> BuiltImage {
    let mut image = image.clone();
    let media_type = image.layers[index].blob.media_type.clone();
    image.layers[index].blob = Blob::new(&media_type, bytes);
    let mut manifest: Value = serde_json::from_slice(&image.manifest.bytes).unwrap();
    manifest["layers"][index] = image.layers[index].blob.descriptor();
    let manifest_type = image.manifest.media_type.clone();
    image.manifest = Blob::new(&manifest_type, serde_json::to_vec(&manifest).unwrap());
    image
}

/// A manifest and what it points to, read back from a layout or registry.
pub struct ImageView {
    pub media_type: String,
    pub digest: Digest,
    pub manifest: Value,
    pub config: Value,
    /// Layer descriptors with their blobs.
    pub layers: Vec<(Value, Vec<u8>)>,
}

/// Reads a manifest given by bytes, fetching blobs with `blob`.
pub fn view_manifest(
    media_type: &str,
    bytes: &[u8],
    blob: &dyn Fn(&Digest) -> Vec<u8>,
) -> ImageView {
    let manifest: Value = serde_json::from_slice(bytes).unwrap();
    let config_digest = digest_of(&manifest["config"]);
    let config = serde_json::from_slice(&blob(&config_digest)).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|desc| (desc.clone(), blob(&digest_of(desc))))
        .collect();
    ImageView {
        media_type: media_type.to_owned(),
        digest: Digest::sha256(bytes),
        manifest,
        config,
        layers,
    }
}

/// The images under `tag` of a layout: one for a manifest, one per entry of an index.
pub fn read_layout(dir: &Path, tag: &str) -> (Value, Vec<ImageView>) {
    let layout = testkit::Layout::open(dir);
    let top = layout.resolve(tag).unwrap();
    let blob = |d: &Digest| layout.blob(d).unwrap();
    let top_json: Value = serde_json::from_slice(&top.bytes).unwrap();
    if top_json.get("manifests").is_some() {
        let images = top_json["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                let bytes = blob(&digest_of(entry));
                view_manifest(entry["mediaType"].as_str().unwrap(), &bytes, &blob)
            })
            .collect();
        (top_json, images)
    } else {
        let view = view_manifest(&top.media_type, &top.bytes, &blob);
        (top_json, vec![view])
    }
}

pub fn digest_of(desc: &Value) -> Digest {
    desc["digest"].as_str().unwrap().parse().unwrap()
}

/// Checks a converted image against its source: media types, annotations, TOC digest,
/// faithful tar content and DiffIDs.
pub fn assert_converted(source: &BuiltImage, out: &ImageView, format: Format) {
    let (layer_type, manifest_type) = match format {
        Format::ZstdChunked => (
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.manifest.v1+json",
        ),
        _ => (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.manifest.v1+json",
        ),
    };
    assert_eq!(out.manifest["mediaType"], manifest_type);
    assert_eq!(
        out.manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(out.layers.len(), source.layers.len());
    let diff_ids = out.config["rootfs"]["diff_ids"].as_array().unwrap();
    for (i, ((desc, blob), source_layer)) in out.layers.iter().zip(&source.layers).enumerate() {
        assert_eq!(desc["mediaType"], layer_type, "layer {i} media type");
        assert_eq!(digest_of(desc), Digest::sha256(blob), "layer {i} digest");
        assert_eq!(
            desc["size"].as_u64(),
            Some(blob.len() as u64),
            "layer {i} size"
        );
        let toc_digest: Digest = desc["annotations"][TOC_DIGEST]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let reader = Reader::open(blob.as_slice(), Some(&toc_digest))
            .unwrap_or_else(|e| panic!("layer {i} does not open with its TOC digest: {e}"));
        assert_eq!(reader.footer().format, format, "layer {i} format");
        reader.verify_all().unwrap();
        let tar = decompress_blob(format, blob);
        assert_eq!(
            tar_listing(&tar),
            tar_listing(&source_layer.tar),
            "layer {i} content"
        );
        assert_eq!(
            diff_ids[i],
            Digest::sha256(&tar).to_string(),
            "layer {i} diff_id"
        );
        assert_eq!(
            desc["annotations"][UNCOMPRESSED_SIZE].as_str(),
            Some(tar.len().to_string().as_str()),
            "layer {i} uncompressed size"
        );
        if format == Format::ZstdChunked {
            assert!(
                desc["annotations"][ZSTD_CHECKSUM].is_string(),
                "layer {i} zstd checksum"
            );
            assert!(
                desc["annotations"][ZSTD_POSITION].is_string(),
                "layer {i} zstd position"
            );
        }
    }
    let source_config: Value = serde_json::from_slice(&source.config.bytes).unwrap();
    let mut expected = source_config.clone();
    expected["rootfs"]["diff_ids"] = out.config["rootfs"]["diff_ids"].clone();
    assert_eq!(out.config, expected, "config changed beyond diff_ids");
}

/// Layer statuses (`converted`, `reused`, `kept`) of the first manifest in a report.
pub fn statuses(report: &Value) -> Vec<String> {
    report["manifests"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Files in a directory tree (to prove no temporary files were left).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        }
        found.push(path);
    }
    found
}
