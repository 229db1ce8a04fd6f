//! Compatibility with the reference converter: an image converted by
//! `ctr-remote image convert --estargz --oci` (in a helper containerd) and pushed to a
//! local docker-registry is pulled lazily through our daemon with
//! `ctr-remote image rpull --snapshotter stargz` and runs with `ctr run`.

mod common;
use common::stack::{committed_snapshots, LazyStack};

use testkit::{unique_id, Containerd};

const SMALL_FILE: &str = "/data/small.txt";
const SMALL_TEXT: &str = "converted by the reference, served by us";

/// busybox, a small text file and 4 MiB of data.
fn image() -> testkit::BuiltImage {
    let mut small = testkit::LayerBuilder::new();
    small.dir("data", 0o755).unwrap();
    small
        .file("data/small.txt", SMALL_TEXT.as_bytes(), 0o644)
        .unwrap();
    let big = [testkit::DataFile::new("data/big.bin", 4 << 20, 0)];
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(testkit::data_layer(&big, 3).unwrap())
        .layer(small.finish().unwrap())
        .cmd(&["/bin/cat", SMALL_FILE])
        .build()
        .unwrap()
}

/// Converts `src` with the reference converter in a throwaway containerd and pushes it
/// as `dst`.
fn convert_with_reference(src: &str, dst: &str) {
    let helper = Containerd::start().unwrap();
    helper
        .ctr_remote(["image", "pull", "--plain-http", src])
        .unwrap();
    helper
        .ctr_remote(["image", "convert", "--estargz", "--oci", src, dst])
        .unwrap();
    helper
        .ctr_remote(["image", "push", "--plain-http", dst])
        .unwrap();
}

#[test]
fn reference_converted_image_is_pulled_lazily_and_runs() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = LazyStack::start("cmp-");
    let src = stack.registry.push("compat/src", "v1", &image()).unwrap();
    let reference = stack.registry.reference("compat/ref", "esgz");
    convert_with_reference(&src, &reference);

    let rpull = [
        "image",
        "rpull",
        "--plain-http",
        "--snapshotter",
        "stargz",
        &reference,
    ];
    stack.containerd.ctr_remote(rpull).unwrap();
    let id = unique_id("compat");
    let run = ["run", "--rm", "--snapshotter", "stargz", &reference, &id];
    let out = stack.containerd.ctr(run).unwrap().stdout;

    assert_eq!(out.trim(), SMALL_TEXT, "{}", stack.daemon.log_text());
    let (committed, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(committed, 3, "{}", stack.daemon.log_text());
    assert_eq!(
        remote, 3,
        "every reference-converted layer is a remote snapshot"
    );
    assert!(stack.daemon.signal("-TERM").success());
    let left = testkit::mounts::mounts_under(&stack.dir.path().join("root")).unwrap();
    assert!(left.is_empty(), "FUSE mounts left: {left:?}");
}
