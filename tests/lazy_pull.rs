//! Lazy pulling end to end: an image built here, converted to eStargz with our converter
//! and pushed to a local docker-registry, is pulled with `ctr-remote image rpull` through
//! containerd and our daemon, and run with `ctr run`. Its layers become remote snapshots
//! and the registry serves only a small part of the image. A plain gzip image falls back
//! to an ordinary pull and runs too.

mod common;
use common::stack::{self, committed_snapshots, convert_to_estargz, rpull, LazyStack};

use std::collections::BTreeSet;
use std::path::Path;

use estargz::Digest;
use testkit::{unique_id, BuiltImage, Containerd, Registry};

const SMALL_TEXT: &str = "read lazily through FUSE";

/// busybox, 24 MiB of incompressible data, and a small text file.
fn image_with_data() -> BuiltImage {
    stack::image_with_data(SMALL_TEXT, 7)
}

/// Digests and total size of the layers of `name:tag`.
fn layers_of(registry: &Registry, name: &str, tag: &str) -> (BTreeSet<Digest>, u64) {
    let manifest = registry.client().get_manifest(name, tag).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let mut digests = BTreeSet::new();
    let mut size = 0;
    for layer in json["layers"].as_array().unwrap() {
        digests.insert(layer["digest"].as_str().unwrap().parse().unwrap());
        size += layer["size"].as_u64().unwrap();
    }
    (digests, size)
}

/// Bytes of `blobs` the registry served in GET responses, from its access log.
fn blob_bytes_served(log: &str, blobs: &BTreeSet<Digest>) -> u64 {
    log.lines()
        .filter(|line| line.contains("\"GET /v2/"))
        .filter(|line| blobs.iter().any(|d| line.contains(&d.to_string())))
        .filter_map(|line| {
            // ... "GET /v2/<name>/blobs/<digest> HTTP/1.1" 206 12345 "..." "..."
            let after_request = line.split("HTTP/1.1\" ").nth(1)?;
            let mut fields = after_request.split_whitespace();
            let _status = fields.next()?;
            fields.next()?.parse::<u64>().ok()
        })
        .sum()
}

fn rpull_and_run(containerd: &Containerd, reference: &str) -> String {
    rpull(containerd, reference);
    let id = unique_id("lazy");
    let run = ["run", "--rm", "--snapshotter", "stargz", reference, &id];
    containerd.ctr(run).unwrap().stdout
}

/// FUSE layer mounts under `dir` (other tests may mount elsewhere at the same time).
fn fuse_mounts_under(dir: &Path) -> usize {
    testkit::mounts::mounts_under(&dir.join("root/snapshots"))
        .unwrap()
        .len()
}

#[test]
fn estargz_image_is_pulled_lazily_and_runs() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    // Without background fetching, so the registry's figures show what the run read.
    let mut stack = LazyStack::start_with_config("lazy-", "[background_fetch]\nenable = false\n");
    let registry = &stack.registry;
    let plain = registry
        .push("lazy/app", "plain", &image_with_data())
        .unwrap();
    let reference = registry.reference("lazy/app", "esgz");
    convert_to_estargz(&plain, &reference);
    let (blobs, image_size) = layers_of(registry, "lazy/app", "esgz");
    let log_path = registry.log_path();
    let log_start = std::fs::read_to_string(&log_path).unwrap().len();

    let out = rpull_and_run(&stack.containerd, &reference);

    assert_eq!(out.trim(), SMALL_TEXT, "{}", stack.daemon.log_text());
    let (committed, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(committed, 3, "{}", stack.daemon.log_text());
    assert_eq!(remote, 3, "every layer is a remote snapshot");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let served = blob_bytes_served(&log[log_start..], &blobs);
    eprintln!("registry served {served} of {image_size} layer bytes");
    assert!(served > 0, "no blob reads in the registry log:\n{log}");
    assert!(
        served * 2 < image_size,
        "registry served {served} of {image_size} layer bytes"
    );
    assert_eq!(
        fuse_mounts_under(stack.dir.path()),
        3,
        "layers are FUSE mounts"
    );
    let opened_ahead = stack
        .daemon
        .log_text()
        .matches("using the layer opened ahead")
        .count();
    assert_eq!(
        opened_ahead, 2,
        "the layers above the first were opened ahead"
    );

    assert!(stack.daemon.signal("-TERM").success());
    assert_eq!(
        fuse_mounts_under(stack.dir.path()),
        0,
        "FUSE mounts left after shutdown: {}",
        stack.daemon.log_text()
    );
}

#[test]
fn plain_gzip_image_falls_back_and_runs() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start("lazy-");
    let reference = stack
        .registry
        .push("lazy/plain", "v1", &image_with_data())
        .unwrap();

    let out = rpull_and_run(&stack.containerd, &reference);

    assert_eq!(out.trim(), SMALL_TEXT, "{}", stack.daemon.log_text());
    let (committed, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(committed, 3);
    assert_eq!(remote, 0, "plain gzip layers are never remote");
    assert!(
        stack.daemon.log_text().contains("no lazy pull"),
        "the fallback is logged: {}",
        stack.daemon.log_text()
    );
}
