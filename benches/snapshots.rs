//! Container-start path benchmark: the gRPC round trips containerd makes to unpack a
//! 50-layer image (Prepare + Commit per layer, bottom up) and then start a container
//! (Prepare on top), against our daemon and, in the same run, against containerd's
//! built-in overlayfs snapshotter reached through containerd's own Snapshots service.
//!
//! Run as root: `cargo bench --bench snapshots`. Prints a table with the ratios.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use estargz_snapshotter::proto::snapshots as pb;
use estargz_snapshotter::proto::snapshots::snapshots_client::SnapshotsClient;
use tonic::transport::Channel;
use tonic::Request;

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

const LAYERS: usize = 50;
const ROUNDS: usize = 5;
const NAMESPACE: &str = "bench";
/// Keeps containerd's garbage collector off snapshots that no image or lease references.
const GC_ROOT: (&str, &str) = ("containerd.io/gc.root", "bench");

/// One snapshotter behind a Snapshots gRPC socket.
struct Target {
    label: &'static str,
    socket: PathBuf,
    /// The `snapshotter` request field: containerd routes on it, our daemon ignores it.
    snapshotter: &'static str,
}

/// Median timings of one target, per round.
struct Timings {
    per_layer: Duration,
    chain: Duration,
    top: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !nix_is_root() {
        println!("SKIPPED snapshots bench: needs root (containerd and overlay mounts)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = common::Daemon::start(dir.path());
    let containerd = testkit::Containerd::start().expect("start containerd");
    let targets = [
        Target {
            label: "estargz-snapshotter",
            socket: daemon.socket.clone(),
            snapshotter: "stargz",
        },
        Target {
            label: "containerd overlayfs (built-in)",
            socket: containerd.address(),
            snapshotter: "overlayfs",
        },
    ];
    let mut results = Vec::new();
    for target in &targets {
        results.push(measure(target).await);
    }
    println!(
        "Prepare+Commit chain of {LAYERS} layers, then Prepare on top; median of {ROUNDS} rounds"
    );
    println!(
        "{:<34} {:>12} {:>14} {:>16}",
        "snapshotter", "chain ms", "per layer ms", "top prepare ms"
    );
    for (target, t) in targets.iter().zip(&results) {
        println!(
            "{:<34} {:>12.2} {:>14.3} {:>16.3}",
            target.label,
            ms(t.chain),
            ms(t.per_layer),
            ms(t.top)
        );
    }
    let (ours, base) = (&results[0], &results[1]);
    println!(
        "{:<34} {:>12.2} {:>14.2} {:>16.2}",
        "ours / containerd",
        ms(ours.chain) / ms(base.chain),
        ms(ours.per_layer) / ms(base.per_layer),
        ms(ours.top) / ms(base.top)
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        .unwrap_or(false)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(target: &Target) -> Timings {
    let mut client = common::grpc::connect(&target.socket).await;
    let mut chains = Vec::new();
    let mut tops = Vec::new();
    for round in 0..ROUNDS {
        let (chain, top) = one_round(&mut client, target, round).await;
        chains.push(chain);
        tops.push(top);
    }
    chains.sort();
    tops.sort();
    let chain = chains[ROUNDS / 2];
    Timings {
        per_layer: chain / LAYERS as u32,
        chain,
        top: tops[ROUNDS / 2],
    }
}

/// Builds one chain and the container snapshot on top; returns (chain time, top time).
async fn one_round(
    client: &mut SnapshotsClient<Channel>,
    target: &Target,
    round: usize,
) -> (Duration, Duration) {
    let start = Instant::now();
    let mut parent = String::new();
    for layer in 0..LAYERS {
        let key = format!("r{round}/extract-{layer}");
        let name = format!("r{round}/layer-{layer}");
        client
            .prepare(request(pb::PrepareSnapshotRequest {
                snapshotter: target.snapshotter.into(),
                key: key.clone(),
                parent: parent.clone(),
                labels: gc_root(),
            }))
            .await
            .expect("prepare");
        client
            .commit(request(pb::CommitSnapshotRequest {
                snapshotter: target.snapshotter.into(),
                name: name.clone(),
                key,
                labels: gc_root(),
                ..Default::default()
            }))
            .await
            .expect("commit");
        parent = name;
    }
    let chain = start.elapsed();
    let start = Instant::now();
    client
        .prepare(request(pb::PrepareSnapshotRequest {
            snapshotter: target.snapshotter.into(),
            key: format!("r{round}/container"),
            parent,
            labels: gc_root(),
        }))
        .await
        .expect("prepare container");
    (chain, start.elapsed())
}

fn gc_root() -> std::collections::HashMap<String, String> {
    [(GC_ROOT.0.to_string(), GC_ROOT.1.to_string())].into()
}

fn request<T>(message: T) -> Request<T> {
    common::grpc::in_namespace(message, NAMESPACE)
}
