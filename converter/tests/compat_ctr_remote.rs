//! Compatibility with the reference implementation (ctr-remote 0.12, containerd 1.6).
//!
//! - reference -> us: layers converted by `ctr-remote image convert --estargz` open with
//!   `estargz::Reader` and every file matches the original tar.
//! - us -> reference: images converted by `estargz-convert` pull with `ctr-remote`, convert
//!   again, report the same TOC digests via `ctr-remote image get-toc-digest`, and run.

use std::collections::BTreeMap;
use std::path::Path;

use estargz::testutil::{tar_listing, EntrySpec, EntrySummary, TarBuilder};
use estargz::{Digest, EntryType, Reader, TOC_DIGEST_ANNOTATION};
use serde_json::Value;
use testkit::prereq::CONTAINERD_STACK;
use testkit::{
    build_index, busybox_layer, data_layer, run_tool, Containerd, DataFile, ImageBuilder,
    MediaTypes, Platform, Registry, ToolOutput,
};

const MIB: usize = 1024 * 1024;
const OCI_ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A registry and a containerd for one test.
struct Stack {
    registry: Registry,
    containerd: Containerd,
}

impl Stack {
    fn start() -> Stack {
        Stack {
            registry: Registry::start().expect("start registry"),
            containerd: Containerd::start().expect("start containerd"),
        }
    }

    fn ctr_remote(&self, args: &[&str]) -> ToolOutput {
        self.containerd
            .ctr_remote(args)
            .unwrap_or_else(|e| panic!("ctr-remote {args:?}: {e}"))
    }

    fn ctr(&self, args: &[&str]) -> ToolOutput {
        self.containerd
            .ctr(args)
            .unwrap_or_else(|e| panic!("ctr {args:?}: {e}"))
    }

    /// Runs our converter; `args` after SRC and DST.
    fn estargz_convert(&self, src: &str, dst: &str, extra: &[&str]) -> ToolOutput {
        let bin = Path::new(env!("CARGO_BIN_EXE_estargz-convert"));
        let args: Vec<&str> = [src, dst, "--plain-http"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        run_tool(bin, &args).unwrap_or_else(|e| panic!("estargz-convert {args:?}: {e}"))
    }

    /// The image manifest `reference` (`HOST/NAME:TAG`) points to; for an index, the
    /// linux/amd64 entry.
    fn manifest(&self, reference: &str) -> Value {
        let (repo, tag) = repo_and_tag(&self.registry, reference);
        let client = self.registry.client();
        let top = client.get_manifest(repo, tag).expect("get manifest");
        let value: Value = serde_json::from_slice(&top.bytes).expect("manifest json");
        let Some(entries) = value["manifests"].as_array() else {
            return value;
        };
        let amd64 = entries
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .expect("index has linux/amd64");
        let digest = amd64["digest"].as_str().expect("digest");
        let child = client
            .get_manifest(repo, digest)
            .expect("get child manifest");
        serde_json::from_slice(&child.bytes).expect("child manifest json")
    }

    fn blob(&self, reference: &str, digest: &Digest) -> Vec<u8> {
        let (repo, _) = repo_and_tag(&self.registry, reference);
        self.registry
            .client()
            .get_blob(repo, digest)
            .expect("get blob")
    }
}

/// `(repo, tag)` of `HOST/REPO:TAG` on this registry.
fn repo_and_tag<'a>(registry: &Registry, reference: &'a str) -> (&'a str, &'a str) {
    let host = registry.host();
    let rest = reference
        .strip_prefix(host.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .expect("reference on the test registry");
    rest.rsplit_once(':').expect("reference with tag")
}

/// A layer exercising the TOC: nested dirs, empty/small/multi-chunk files, symlinks,
/// hardlinks, long names, special modes, owners, times, xattrs, devices, whiteouts.
fn feature_layer() -> Vec<u8> {
    let mut b = TarBuilder::new();
    b.dir("app")
        .dir("app/etc")
        .dir("app/lib")
        .dir("app/deep")
        .dir("app/deep/er");
    b.file("app/empty", b"");
    b.file("app/etc/config.txt", b"key = value\n");
    b.file(
        "app/lib/exact-4mib.bin",
        &estargz::testutil::pseudo_random_bytes(1, 4 * MIB),
    );
    b.file(
        "app/lib/nine-mib.bin",
        &estargz::testutil::pseudo_random_bytes(2, 9 * MIB + 123),
    );
    b.file(
        "app/lib/text.txt",
        &"compressible line\n".repeat(50_000).into_bytes(),
    );
    b.symlink("app/etc/link", "config.txt");
    b.symlink("app/abs-link", "/app/etc/config.txt");
    b.hardlink("app/lib/hard", "app/etc/config.txt");
    let long_dir = format!("app/deep/er/{}", "d".repeat(90));
    b.dir(&long_dir);
    b.file(&format!("{long_dir}/{}", "f".repeat(80)), b"long name");
    b.entry(
        EntrySpec::new("app/setuid-tool", EntryType::Reg)
            .content(b"#!/bin/sh\necho tool\n")
            .mode(0o4755)
            .owner(1000, 1001, "alice", "staff")
            .mtime(1_600_000_000),
    );
    b.entry(EntrySpec::new("app/sticky", EntryType::Dir).mode(0o1777));
    b.entry(
        EntrySpec::new("app/with-xattr", EntryType::Reg)
            .content(b"x")
            .xattr("user.comment", b"hello"),
    );
    b.fifo("app/fifo");
    b.char_device("app/null", 1, 3);
    b.whiteout("app", "removed");
    b.opaque("app/deep");
    b.finish()
}

/// busybox + the feature layer + a data layer; prints a greeting and a file's sha256.
fn compat_image(media_types: MediaTypes, platform: Platform) -> testkit::BuiltImage {
    let data = [
        DataFile::new("data/small.txt", 3000, 100),
        DataFile::new("data/mixed.bin", 6 * MIB, 40),
    ];
    ImageBuilder::new()
        .media_types(media_types)
        .platform(platform)
        .layer(busybox_layer().expect("busybox layer"))
        .layer(feature_layer())
        .layer(data_layer(&data, 9).expect("data layer"))
        .cmd(&["/bin/sh", "-c", "echo compat-ok; sha256sum /data/mixed.bin"])
        .build()
        .expect("build image")
}

/// The sha256 line `sha256sum /data/mixed.bin` prints inside the container.
fn expected_checksum(image: &testkit::BuiltImage) -> String {
    let listing = tar_listing(&image.layers[2].tar);
    let digest = listing["data/mixed.bin"]
        .sha256
        .expect("regular file digest");
    digest.hex()
}

/// The layers of a manifest as `(digest, media type, toc digest annotation)`.
fn layers_of(manifest: &Value) -> Vec<(Digest, String, Option<Digest>)> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|layer| {
            let digest = layer["digest"]
                .as_str()
                .expect("digest")
                .parse()
                .expect("digest");
            let media = layer["mediaType"].as_str().unwrap_or_default().to_owned();
            let toc = layer["annotations"][TOC_DIGEST_ANNOTATION]
                .as_str()
                .map(|d| d.parse().expect("toc digest"));
            (digest, media, toc)
        })
        .collect()
}

/// Opens `blob` verifying its TOC digest and checks every entry of `original` against it.
fn assert_layer_matches(label: &str, original: &[u8], blob: &[u8], toc: &Digest) {
    let reader = Reader::open(blob, Some(toc)).unwrap_or_else(|e| panic!("{label}: open: {e}"));
    reader
        .verify_all()
        .unwrap_or_else(|e| panic!("{label}: verify: {e}"));
    let listing = tar_listing(original);
    assert!(!listing.is_empty(), "{label}: empty original");
    for (path, want) in &listing {
        assert_entry_matches(&format!("{label}: {path}"), &reader, path, want);
    }
}

fn assert_entry_matches(label: &str, reader: &Reader<&[u8]>, path: &str, want: &EntrySummary) {
    let index = reader.index();
    let id = index
        .lookup(path)
        .unwrap_or_else(|| panic!("{label}: missing"));
    let entry = index.entry(id).expect("entry of looked-up id");
    if want.kind == '1' {
        let target = index
            .lookup(&want.link)
            .unwrap_or_else(|| panic!("{label}: no target"));
        assert_eq!(id, target, "{label}: hardlink not resolved to its target");
        return;
    }
    let kind = match want.kind {
        '0' => EntryType::Reg,
        '2' => EntryType::Symlink,
        '3' => EntryType::Char,
        '4' => EntryType::Block,
        '5' => EntryType::Dir,
        '6' => EntryType::Fifo,
        other => panic!("{label}: unexpected tar type {other:?}"),
    };
    assert_eq!(entry.kind, kind, "{label}: kind");
    assert_eq!(entry.mode, want.mode & 0o7777, "{label}: mode");
    assert_eq!(u64::from(entry.uid), want.uid, "{label}: uid");
    assert_eq!(u64::from(entry.gid), want.gid, "{label}: gid");
    assert_eq!(&*entry.user_name, want.uname, "{label}: uname");
    assert_eq!(&*entry.group_name, want.gname, "{label}: gname");
    assert_eq!(
        i64::try_from(want.mtime).ok(),
        Some(entry.mtime),
        "{label}: mtime"
    );
    assert_eq!(entry.xattrs, want.xattrs, "{label}: xattrs");
    match kind {
        EntryType::Reg => {
            assert_eq!(entry.size, want.size, "{label}: size");
            assert_eq!(entry.digest, want.sha256, "{label}: toc digest");
            let bytes = reader
                .read_file(path)
                .unwrap_or_else(|e| panic!("{label}: read: {e}"));
            assert_eq!(
                Some(Digest::sha256(&bytes)),
                want.sha256,
                "{label}: content"
            );
        }
        EntryType::Symlink => assert_eq!(&*entry.link_target, want.link, "{label}: target"),
        EntryType::Char | EntryType::Block => {
            assert_eq!(
                (entry.dev_major, entry.dev_minor),
                (want.dev_major, want.dev_minor),
                "{label}: dev"
            );
        }
        _ => {}
    }
}

#[test]
fn reference_converted_layers_read_back_with_our_reader() {
    testkit::require!(stack: CONTAINERD_STACK);
    let stack = Stack::start();
    let image = compat_image(MediaTypes::Oci, Platform::linux_amd64());
    let src = stack
        .registry
        .push("compat/src", "v1", &image)
        .expect("push");
    let dst = stack.registry.reference("compat/reference", "esgz");

    stack.ctr_remote(&["image", "pull", "--plain-http", &src]);
    stack.ctr_remote(&["image", "convert", "--estargz", "--oci", &src, &dst]);
    stack.ctr_remote(&["image", "push", "--plain-http", &dst]);

    let layers = layers_of(&stack.manifest(&dst));
    assert_eq!(layers.len(), image.layers.len());
    for (i, ((digest, _, toc), original)) in layers.iter().zip(&image.layers).enumerate() {
        let toc = toc
            .as_ref()
            .unwrap_or_else(|| panic!("layer {i}: no toc annotation"));
        let blob = stack.blob(&dst, digest);
        assert_layer_matches(&format!("layer {i}"), &original.tar, &blob, toc);
    }
}

/// Converts `src` with estargz-convert, then checks the result with the reference tools:
/// pull, `get-toc-digest` per layer, convert again, run. Returns the converted manifest.
fn check_ours_with_reference(
    stack: &Stack,
    image: &testkit::BuiltImage,
    src: &str,
    dst: &str,
    extra_args: &[&str],
) -> Value {
    stack.estargz_convert(src, dst, extra_args);
    let manifest = stack.manifest(dst);
    let layers = layers_of(&manifest);
    assert_eq!(layers.len(), image.layers.len());

    stack.ctr_remote(&["image", "pull", "--plain-http", dst]);
    for (i, ((digest, media, toc), original)) in layers.iter().zip(&image.layers).enumerate() {
        let toc = toc
            .as_ref()
            .unwrap_or_else(|| panic!("layer {i}: no toc annotation"));
        let digest_text = digest.to_string();
        let mut args = vec!["image", "get-toc-digest"];
        if media == OCI_ZSTD_LAYER {
            args.push("--zstdchunked");
        }
        args.push(&digest_text);
        let theirs = stack.ctr_remote(&args).stdout.trim().to_owned();
        assert_eq!(theirs, toc.to_string(), "layer {i}: ctr-remote toc digest");
        if media != OCI_ZSTD_LAYER {
            let blob = stack.blob(dst, digest);
            assert_layer_matches(&format!("layer {i}"), &original.tar, &blob, toc);
        }
    }

    let again = format!("{dst}-again");
    stack.ctr_remote(&["image", "convert", "--estargz", "--oci", dst, &again]);

    let container = testkit::unique_id("compat");
    let out = stack.ctr(&["run", "--rm", dst, &container]);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("compat-ok"), "{}", out.stdout);
    let checksum_line = lines.next().unwrap_or_default();
    assert!(
        checksum_line.starts_with(&expected_checksum(image)),
        "{}",
        out.stdout
    );
    manifest
}

#[test]
fn our_estargz_pulls_converts_and_runs_with_reference_tools() {
    testkit::require!(stack: CONTAINERD_STACK);
    let stack = Stack::start();
    let image = compat_image(MediaTypes::Oci, Platform::linux_amd64());
    let src = stack
        .registry
        .push("compat/oci", "v1", &image)
        .expect("push");
    let dst = stack.registry.reference("compat/oci", "esgz");
    let manifest = check_ours_with_reference(&stack, &image, &src, &dst, &[]);
    for layer in manifest["layers"].as_array().expect("layers") {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
}

#[test]
fn our_estargz_from_docker_media_types_works_with_reference_tools() {
    testkit::require!(stack: CONTAINERD_STACK);
    let stack = Stack::start();
    let image = compat_image(MediaTypes::Docker, Platform::linux_amd64());
    let src = stack
        .registry
        .push("compat/docker", "v1", &image)
        .expect("push");
    let dst = stack.registry.reference("compat/docker", "esgz");
    let manifest = check_ours_with_reference(&stack, &image, &src, &dst, &[]);
    assert_eq!(manifest["mediaType"], MediaTypes::Oci.manifest());
}

#[test]
fn our_multi_platform_estargz_works_with_reference_tools() {
    testkit::require!(stack: CONTAINERD_STACK);
    let stack = Stack::start();
    let amd64 = compat_image(MediaTypes::Oci, Platform::linux_amd64());
    let arm64 = ImageBuilder::new()
        .platform(Platform::linux_arm64())
        .layer(data_layer(&[DataFile::new("arm/only", 1000, 50)], 3).expect("layer"))
        .build()
        .expect("arm64 image");
    let index = build_index(vec![amd64.clone(), arm64]).expect("index");
    let src = stack
        .registry
        .push("compat/multi", "v1", &index)
        .expect("push");
    let dst = stack.registry.reference("compat/multi", "esgz");
    check_ours_with_reference(&stack, &amd64, &src, &dst, &[]);

    let (repo, tag) = repo_and_tag(&stack.registry, &dst);
    let top = stack
        .registry
        .client()
        .get_manifest(repo, tag)
        .expect("index");
    let value: Value = serde_json::from_slice(&top.bytes).expect("index json");
    let platforms: BTreeMap<String, String> = value["manifests"]
        .as_array()
        .expect("converted index keeps its manifests")
        .iter()
        .map(|m| {
            let arch = m["platform"]["architecture"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (arch, m["digest"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(platforms.len(), 2, "{value}");
    assert!(platforms.contains_key("arm64"), "{value}");
}

#[test]
fn our_estargz_from_an_oci_layout_works_with_reference_tools() {
    testkit::require!(stack: CONTAINERD_STACK);
    let stack = Stack::start();
    let image = compat_image(MediaTypes::Oci, Platform::linux_amd64());
    let layout = tempfile::tempdir().expect("layout dir");
    testkit::write_layout(layout.path(), "v1", &image).expect("write layout");
    let src = format!("oci:{}:v1", layout.path().display());
    let dst = stack.registry.reference("compat/layout", "esgz");
    check_ours_with_reference(&stack, &image, &src, &dst, &[]);
}

#[test]
fn our_zstd_chunked_works_with_reference_tools() {
    testkit::require!(stack: CONTAINERD_STACK);
    let stack = Stack::start();
    let image = compat_image(MediaTypes::Oci, Platform::linux_amd64());
    let src = stack
        .registry
        .push("compat/zstd", "v1", &image)
        .expect("push");
    let dst = stack.registry.reference("compat/zstd", "zstd");
    let manifest = check_ours_with_reference(&stack, &image, &src, &dst, &["--zstd"]);
    for layer in manifest["layers"].as_array().expect("layers") {
        assert_eq!(layer["mediaType"], OCI_ZSTD_LAYER);
    }
}
