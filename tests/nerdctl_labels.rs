//! The label set nerdctl sends on Prepare (`nerdctl --snapshotter stargz pull/run`): the
//! CRI family from containerd's `snapshotters.AppendInfoHandlerWrapper`
//! (`cri.image-ref`, `cri.manifest-digest`, `cri.layer-digest`, `cri.image-layers`), the
//! reference's extra labels (`remote/urls`, `remote/stargz.prefetch`), the chain ID in
//! `snapshot.ref` and the layer's `stargz/toc.digest` annotation. Sent over gRPC to the
//! real daemon for an eStargz layer in a local docker-registry: the layer must be served
//! lazily (AlreadyExists, remote label, FUSE mount with the layer's files).

mod common;
use common::remote::{pushed_estargz_layer, DaemonStack, RemoteLayer};

use std::collections::HashMap;

use estargz_snapshotter::proto::snapshots as pb;
use tonic::Code;

const NS: &str = "nerdctl";
const TEXT: &str = "pulled lazily by nerdctl";
const REMOTE_LABEL: &str = "containerd.io/snapshot/remote";
/// nerdctl's prefetch size for the stargz snapshotter (10 MiB).
const NERDCTL_PREFETCH: &str = "10485760";

/// One layer: a directory with a text file.
fn image() -> testkit::BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("etc", 0o755).unwrap();
    layer.file("etc/motd", TEXT.as_bytes(), 0o644).unwrap();
    testkit::ImageBuilder::new()
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap()
}

/// Exactly the labels nerdctl's pull puts on the Prepare of `layer` (the only layer of
/// its image, so `cri.image-layers` holds just its digest; the descriptor has no URLs).
fn nerdctl_labels(layer: &RemoteLayer, target: &str) -> HashMap<String, String> {
    [
        ("containerd.io/snapshot.ref", target),
        ("containerd.io/snapshot/cri.image-ref", &layer.reference),
        (
            "containerd.io/snapshot/cri.manifest-digest",
            &layer.manifest_digest,
        ),
        ("containerd.io/snapshot/cri.layer-digest", &layer.digest),
        ("containerd.io/snapshot/cri.image-layers", &layer.digest),
        ("containerd.io/snapshot/remote/urls", ""),
        (
            "containerd.io/snapshot/remote/stargz.prefetch",
            NERDCTL_PREFETCH,
        ),
        (estargz::TOC_DIGEST_ANNOTATION, &layer.toc_digest),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn nerdctl_label_set_is_served_lazily() {
    testkit::require!(testkit::Prereq::DevFuse);
    testkit::require!(testkit::Prereq::Binary(testkit::registry::REGISTRY_BIN));
    let mut stack = DaemonStack::start("ndl-", "");
    let layer = pushed_estargz_layer(&stack.registry, "nerdctl/app", &image(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let sent = nerdctl_labels(&layer, "nerdctl-layer-1");

    let prepare = common::remote::prepare(&mut c, NS, "extract-1", sent.clone());
    let status = rt.block_on(prepare).unwrap_err();

    assert_eq!(
        status.code(),
        Code::AlreadyExists,
        "{status}: {}",
        stack.daemon.log_text()
    );
    // containerd sends the namespace header only from in-process callers; its gRPC
    // clients (`ctr snapshots`, nerdctl's client-side unpack) and its garbage collector
    // send none, and must see the same snapshot.
    let stat = c.stat(pb::StatSnapshotRequest {
        key: "nerdctl-layer-1".into(),
        ..Default::default()
    });
    let info = rt.block_on(stat).unwrap().into_inner().info.unwrap();
    assert_eq!(info.kind, pb::Kind::Committed as i32, "{info:?}");
    assert!(info.labels.contains_key(REMOTE_LABEL), "{:?}", info.labels);
    for (key, value) in &sent {
        assert_eq!(info.labels.get(key), Some(value), "label {key} kept");
    }
    let mounted = stack.fuse_mounts();
    assert_eq!(mounted.len(), 1, "one FUSE layer mount");
    let motd = std::fs::read_to_string(mounted[0].join("etc/motd")).unwrap();
    assert_eq!(motd, TEXT);
    let log = stack.daemon.log_text();
    assert!(!log.contains("no lazy pull"), "no fallback: {log}");

    assert!(stack.daemon.signal("-TERM").success());
    assert!(
        stack.fuse_mounts().is_empty(),
        "FUSE mount left at shutdown"
    );
}
