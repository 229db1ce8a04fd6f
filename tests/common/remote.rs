//! Driving the daemon's lazy pulling over gRPC without containerd: a docker-registry and
//! the daemon ([`DaemonStack`]), eStargz layers pushed to the registry ([`RemoteLayer`]),
//! the CRI label family containerd would send, and the registry's blob traffic.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use estargz_snapshotter::proto::snapshots as pb;
use estargz_snapshotter::proto::snapshots::snapshots_client::SnapshotsClient;
use estargz_snapshotter::proto::types::Mount;
use testkit::Registry;
use tonic::transport::Channel;

use super::stack::convert_to_estargz_prioritized;
use super::Daemon;

/// Registry, daemon (plain HTTP to that registry, plus `extra_config`) and directory; a
/// failed test still leaves no FUSE mount behind.
pub struct DaemonStack {
    pub daemon: Daemon,
    pub registry: Registry,
    pub dir: tempfile::TempDir,
}

impl DaemonStack {
    /// `prefix` names the temp dir: keep it short, the socket must fit in sun_path.
    pub fn start(prefix: &str, extra_config: &str) -> DaemonStack {
        DaemonStack::with_registry(prefix, Registry::start().unwrap(), &[], extra_config)
    }

    /// Like [`DaemonStack::start`] on a running `registry`, with plain HTTP also to
    /// `more_hosts` (e.g. a proxy in front of the registry).
    pub fn with_registry(
        prefix: &str,
        registry: Registry,
        more_hosts: &[String],
        extra_config: &str,
    ) -> DaemonStack {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let hosts: Vec<String> = std::iter::once(registry.host())
            .chain(more_hosts.iter().cloned())
            .map(|host| format!("\"{host}\""))
            .collect();
        let config = format!(
            "[remote]\nplain_http = [{}]\n{extra_config}",
            hosts.join(", ")
        );
        let daemon = Daemon::start_with_config(dir.path(), &config);
        DaemonStack {
            daemon,
            registry,
            dir,
        }
    }

    /// The FUSE mounts under the daemon's snapshot directories.
    pub fn fuse_mounts(&self) -> Vec<PathBuf> {
        testkit::mounts::mounts_under(&self.dir.path().join("root/snapshots")).unwrap()
    }

    /// The registry's access log so far.
    pub fn registry_log(&self) -> String {
        std::fs::read_to_string(self.registry.log_path()).unwrap_or_default()
    }
}

impl Drop for DaemonStack {
    fn drop(&mut self) {
        self.daemon.kill();
        super::kill_fuse_manager(&self.dir.path().join("root"));
        let _ = testkit::mounts::unmount_all_under(self.dir.path());
    }
}

/// An eStargz layer in the registry: where it is and what its labels must say.
pub struct RemoteLayer {
    pub reference: String,
    pub manifest_digest: String,
    pub digest: String,
    pub toc_digest: String,
}

/// Pushes the one-layer `image` to `repo`, converts it to eStargz (with `prioritized`
/// files first) and returns the converted layer.
pub fn pushed_estargz_layer(
    registry: &Registry,
    repo: &str,
    image: &testkit::BuiltImage,
    prioritized: &[&str],
) -> RemoteLayer {
    let plain = registry.push(repo, "plain", image).unwrap();
    let reference = registry.reference(repo, "esgz");
    convert_to_estargz_prioritized(&plain, &reference, prioritized);
    let manifest = registry.client().get_manifest(repo, "esgz").unwrap();
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let layer = &json["layers"][0];
    let toc = &layer["annotations"][estargz::TOC_DIGEST_ANNOTATION];
    RemoteLayer {
        reference,
        manifest_digest: manifest.digest.to_string(),
        digest: layer["digest"].as_str().unwrap().to_owned(),
        toc_digest: toc.as_str().unwrap().to_owned(),
    }
}

/// The labels the CRI plugin (and nerdctl) put on a layer's Prepare: the
/// `containerd.io/snapshot/cri.*` family, not ctr-remote's.
pub fn cri_labels(layer: &RemoteLayer, target: &str, toc_digest: &str) -> HashMap<String, String> {
    [
        ("containerd.io/snapshot.ref", target),
        ("containerd.io/snapshot/cri.image-ref", &layer.reference),
        ("containerd.io/snapshot/cri.layer-digest", &layer.digest),
        (
            "containerd.io/snapshot/cri.manifest-digest",
            &layer.manifest_digest,
        ),
        (estargz::TOC_DIGEST_ANNOTATION, toc_digest),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Prepare of `key` with `labels` in containerd namespace `ns`.
pub async fn prepare(
    c: &mut SnapshotsClient<Channel>,
    ns: &str,
    key: &str,
    labels: HashMap<String, String>,
) -> Result<Vec<Mount>, tonic::Status> {
    let request = pb::PrepareSnapshotRequest {
        key: key.into(),
        labels,
        ..Default::default()
    };
    let r = c.prepare(super::grpc::in_namespace(request, ns)).await?;
    Ok(r.into_inner().mounts)
}

/// Prepares `key` with `labels` and checks the layer was served lazily (AlreadyExists).
pub fn expect_remote(
    rt: &tokio::runtime::Runtime,
    c: &mut SnapshotsClient<Channel>,
    ns: &str,
    key: &str,
    labels: HashMap<String, String>,
) {
    let status = rt.block_on(prepare(c, ns, key, labels)).unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status}");
}

/// Byte counts of the GET responses for blob `digest` in a docker-registry access log.
pub fn blob_gets(log: &str, digest: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains("\"GET /v2/") && line.contains(digest))
        .filter_map(|line| {
            // ... "GET /v2/<name>/blobs/<digest> HTTP/1.1" 206 12345 "..." "..."
            let after_request = line.split("HTTP/1.1\" ").nth(1)?;
            let mut fields = after_request.split_whitespace();
            let _status = fields.next()?;
            fields.next()?.parse::<u64>().ok()
        })
        .collect()
}
