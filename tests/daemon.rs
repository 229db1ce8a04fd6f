//! Starts the real `estargz-snapshotter` binary on a temporary root and socket and drives
//! it with the generated tonic client: the Snapshots API end to end, error codes,
//! persistence across a restart, graceful shutdown and recovery after SIGKILL.

use std::path::Path;
use std::time::{Duration, Instant};

use estargz_snapshotter::proto::snapshots as pb;
use estargz_snapshotter::proto::snapshots::snapshots_client::SnapshotsClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

const NS: &str = "it";
const REF_LABEL: &str = "containerd.io/snapshot.ref";

mod common;
use common::Daemon;

/// Connects to the daemon's socket, retrying while it starts listening.
async fn client(daemon: &Daemon) -> SnapshotsClient<Channel> {
    common::grpc::connect(&daemon.socket).await
}

/// A request in namespace [`NS`].
fn req<T>(message: T) -> Request<T> {
    common::grpc::in_namespace(message, NS)
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn prepare(
    c: &mut SnapshotsClient<Channel>,
    key: &str,
    parent: &str,
) -> Result<Vec<estargz_snapshotter::proto::types::Mount>, tonic::Status> {
    let r = c
        .prepare(req(pb::PrepareSnapshotRequest {
            key: key.into(),
            parent: parent.into(),
            ..Default::default()
        }))
        .await?;
    Ok(r.into_inner().mounts)
}

async fn commit(
    c: &mut SnapshotsClient<Channel>,
    name: &str,
    key: &str,
    l: &[(&str, &str)],
) -> Result<(), tonic::Status> {
    c.commit(req(pb::CommitSnapshotRequest {
        name: name.into(),
        key: key.into(),
        labels: labels(l),
        ..Default::default()
    }))
    .await?;
    Ok(())
}

async fn list(c: &mut SnapshotsClient<Channel>, filters: &[&str]) -> Vec<pb::Info> {
    let mut stream = c
        .list(req(pb::ListSnapshotsRequest {
            filters: filters.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut infos = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        infos.extend(batch.info);
    }
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    infos
}

async fn stat(c: &mut SnapshotsClient<Channel>, key: &str) -> Result<pb::Info, tonic::Status> {
    let r = c
        .stat(req(pb::StatSnapshotRequest {
            key: key.into(),
            ..Default::default()
        }))
        .await?;
    Ok(r.into_inner().info.unwrap_or_default())
}

fn option<'a>(mount: &'a estargz_snapshotter::proto::types::Mount, name: &str) -> Option<&'a str> {
    mount
        .options
        .iter()
        .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_api_end_to_end_and_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let mut c = client(&daemon).await;

    // A base layer: bind mount, write into it, commit with the chain-id label.
    let mounts = prepare(&mut c, "extract-1", "").await.unwrap();
    assert_eq!(
        (mounts[0].r#type.as_str(), &mounts[0].options[..]),
        ("bind", &["rw".to_owned(), "rbind".to_owned()][..])
    );
    std::fs::write(
        Path::new(&mounts[0].source).join("hello"),
        vec![b'x'; 10_000],
    )
    .unwrap();
    commit(&mut c, "layer-1", "extract-1", &[(REF_LABEL, "layer-1")])
        .await
        .unwrap();

    // A container on top: overlay with upper/work; a view: read-only bind of the parent.
    let mounts = prepare(&mut c, "container", "layer-1").await.unwrap();
    assert_eq!(mounts[0].r#type, "overlay");
    assert!(option(&mounts[0], "upperdir").is_some() && option(&mounts[0], "workdir").is_some());
    let lower = option(&mounts[0], "lowerdir").unwrap().to_owned();
    assert!(
        Path::new(&lower).join("hello").exists(),
        "lowerdir is layer-1's fs"
    );
    let again = c
        .mounts(req(pb::MountsRequest {
            key: "container".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(again.into_inner().mounts, mounts, "Mounts repeats Prepare");
    let view = c
        .view(req(pb::ViewSnapshotRequest {
            key: "view".into(),
            parent: "layer-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(
        (view[0].r#type.as_str(), view[0].source.as_str()),
        ("bind", lower.as_str())
    );
    assert_eq!(view[0].options, ["ro", "rbind"]);

    // Stat, Update with a field mask, Usage.
    let info = stat(&mut c, "layer-1").await.unwrap();
    assert_eq!(
        (info.kind, info.parent.as_str()),
        (pb::Kind::Committed as i32, "")
    );
    assert_eq!(info.created_at, info.updated_at);
    let updated = c
        .update(req(pb::UpdateSnapshotRequest {
            info: Some(pb::Info {
                name: "layer-1".into(),
                labels: labels(&[("extra", "1")]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.extra".into()],
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(
        updated.labels,
        labels(&[(REF_LABEL, "layer-1"), ("extra", "1")])
    );
    assert_eq!(updated.created_at, info.created_at);
    let usage = c
        .usage(req(pb::UsageRequest {
            key: "layer-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(usage.into_inner().size >= 10_000);

    // List filters as containerd's unpacker uses them.
    let found = list(
        &mut c,
        &[r#"labels."containerd.io/snapshot.ref"==layer-1,parent=="""#],
    )
    .await;
    assert_eq!(
        found.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["layer-1"]
    );
    assert_eq!(list(&mut c, &["kind==active", "kind==view"]).await.len(), 2);
    assert_eq!(list(&mut c, &["parent==layer-1"]).await.len(), 2);

    // Bad requests get containerd's codes.
    let code = |r: Result<(), tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(commit(&mut c, "layer-1", "container", &[]).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(commit(&mut c, "x", "layer-1", &[]).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(commit(&mut c, "x", "missing", &[]).await),
        Code::NotFound
    );
    assert_eq!(
        code(prepare(&mut c, "y", "container").await.map(drop)),
        Code::InvalidArgument
    );
    assert_eq!(
        code(prepare(&mut c, "container", "").await.map(drop)),
        Code::AlreadyExists
    );
    assert_eq!(
        code(stat(&mut c, "missing").await.map(drop)),
        Code::NotFound
    );
    let remove = c
        .remove(req(pb::RemoveSnapshotRequest {
            key: "layer-1".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(
        remove.unwrap_err().code(),
        Code::FailedPrecondition,
        "layer-1 has children"
    );
    c.remove(req(pb::RemoveSnapshotRequest {
        key: "view".into(),
        ..Default::default()
    }))
    .await
    .unwrap();

    // Graceful shutdown removes the socket; a restart sees the same snapshots.
    let before = list(&mut c, &[]).await;
    drop(c);
    assert!(daemon.signal("-TERM").success(), "clean exit on SIGTERM");
    assert!(!daemon.socket.exists(), "socket removed on shutdown");
    let daemon = Daemon::start(dir.path());
    let mut c = client(&daemon).await;
    assert_eq!(list(&mut c, &[]).await, before);
    let mounts = c
        .mounts(req(pb::MountsRequest {
            key: "container".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        option(&mounts.into_inner().mounts[0], "lowerdir"),
        Some(lower.as_str())
    );
    c.cleanup(req(pb::CleanupRequest::default())).await.unwrap();
    assert_eq!(
        list(&mut c, &[]).await,
        before,
        "cleanup keeps live snapshots"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_survives_sigkill_mid_operation() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let mut c = client(&daemon).await;
    let writer = tokio::spawn(async move {
        let mut parent = String::new();
        for i in 0..10_000 {
            let key = format!("extract-{i}");
            if prepare(&mut c, &key, &parent).await.is_err() {
                return i;
            }
            let name = format!("layer-{i}");
            if commit(&mut c, &name, &key, &[]).await.is_err() {
                return i;
            }
            parent = name;
        }
        10_000
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!daemon.signal("-KILL").success());
    let written = writer.await.unwrap();
    assert!(
        written > 0 && written < 10_000,
        "killed mid-stream after {written} layers"
    );

    // The store opens, its chain is intact, and every listed snapshot is usable.
    let daemon = Daemon::start(dir.path());
    let mut c = client(&daemon).await;
    let infos = list(&mut c, &[]).await;
    assert!(
        infos.len() >= written,
        "{} snapshots, {written} written",
        infos.len()
    );
    for info in &infos {
        if !info.parent.is_empty() {
            stat(&mut c, &info.parent).await.unwrap();
        }
        if info.kind == pb::Kind::Active as i32 {
            c.mounts(req(pb::MountsRequest {
                key: info.name.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
        }
    }
    c.cleanup(req(pb::CleanupRequest::default())).await.unwrap();
    let dirs = std::fs::read_dir(dir.path().join("root/snapshots"))
        .unwrap()
        .count();
    assert_eq!(
        dirs,
        infos.len(),
        "one directory per snapshot after cleanup"
    );
    let top = infos
        .iter()
        .filter(|i| i.kind == pb::Kind::Committed as i32)
        .count();
    prepare(&mut c, "after-crash", &format!("layer-{}", top - 1))
        .await
        .unwrap();
}

/// Benchmark (run with `--ignored --nocapture`, ideally `--release`): the gRPC round trip
/// of Prepare+Commit for each layer of a 50-layer chain, as containerd's unpacker does it,
/// then Mounts of a container on top. Prints per-layer and total times.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; prints timings"]
async fn bench_prepare_commit_50_layer_chain() {
    const LAYERS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let mut c = client(&daemon).await;
    let start = Instant::now();
    let mut parent = String::new();
    for i in 0..LAYERS {
        let (key, name) = (format!("extract-{i}"), format!("layer-{i}"));
        prepare(&mut c, &key, &parent).await.unwrap();
        commit(&mut c, &name, &key, &[(REF_LABEL, &name)])
            .await
            .unwrap();
        parent = name;
    }
    let chain = start.elapsed();
    let start = Instant::now();
    let mounts = prepare(&mut c, "container", &parent).await.unwrap();
    let top = start.elapsed();
    let lowers = option(&mounts[0], "lowerdir").unwrap().split(':').count();
    assert_eq!(lowers, LAYERS);
    println!(
        "prepare+commit x{LAYERS}: total {chain:?}, per layer {:?}; prepare on top: {top:?}",
        chain / LAYERS as u32
    );
}

/// The Snapshots socket is root-only by default (in a directory created 0700);
/// `socket_group` shares it with a group (its directory then lets others through). The
/// socket has its final mode from the moment it appears (the daemon binds it privately
/// and renames it into place), and keeps it once the daemon answers.
#[tokio::test(flavor = "multi_thread")]
async fn socket_permissions_are_restrictive_and_configurable() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cases = [
        ("default", "", 0o600, 0, 0o700),
        ("group", "socket_group = 4242\n", 0o660, 4242, 0o711),
    ];
    for (name, config, mode, gid, dir_mode) in cases {
        let dir = tempfile::Builder::new().prefix("perm-").tempdir().unwrap();
        // Returns as soon as the socket exists: what a client racing the daemon sees.
        let daemon = Daemon::start_with_config(dir.path(), config);
        let first = std::fs::metadata(&daemon.socket).unwrap();
        assert_eq!(
            first.permissions().mode() & 0o777,
            mode,
            "{name} on appearing"
        );
        assert_eq!(first.gid(), gid, "{name} on appearing");
        // Ready: the daemon answers a call; nothing about the socket changed since.
        let mut c = client(&daemon).await;
        assert!(list(&mut c, &[]).await.is_empty(), "{name}");
        let meta = std::fs::metadata(&daemon.socket).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        assert_eq!(meta.gid(), gid, "{name}");
        let parent = std::fs::metadata(daemon.socket.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, dir_mode, "{name}");
        let names: Vec<_> = std::fs::read_dir(daemon.socket.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["snapshotter.sock"],
            "{name}: only the socket, no staging"
        );
        let root = std::fs::metadata(dir.path().join("root")).unwrap();
        assert_eq!(root.permissions().mode() & 0o777, 0o700, "{name}");
        drop(daemon);
    }
}
