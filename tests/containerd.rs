//! A real containerd, configured with the daemon as its `stargz` proxy snapshotter,
//! pulls an ordinary image from a local docker-registry and runs it; then the daemon is
//! restarted and the same image runs again from the persisted snapshots.

mod common;
use common::stack::proxy_plugin;
use common::Daemon;

use std::time::{Duration, Instant};

use testkit::{unique_id, Containerd, ContainerdOptions, Registry};

const GREETING: &str = "hello from the stargz snapshotter";

fn run_once(containerd: &Containerd, reference: &str) -> Result<String, testkit::ToolError> {
    let id = unique_id("stargz-run");
    let args = [
        "run",
        "--rm",
        "--snapshotter",
        "stargz",
        reference,
        id.as_str(),
    ];
    Ok(containerd.ctr(args)?.stdout)
}

/// Runs the image, retrying while containerd's gRPC client to the restarted daemon is
/// still backing off from the refused connections of the restart.
fn run_after_restart(containerd: &Containerd, reference: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match run_once(containerd, reference) {
            Ok(out) => return out,
            Err(e) if Instant::now() < deadline && e.to_string().contains("connection refused") => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("run after restart: {e}"),
        }
    }
}

#[test]
fn containerd_pulls_and_runs_through_the_daemon() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    let registry = Registry::start().unwrap();
    let image = testkit::busybox_image(&["/bin/sh", "-c", &format!("echo {GREETING}")]).unwrap();
    let reference = registry.push("stargz/plain", "v1", &image).unwrap();

    // Short path: the socket must fit in sun_path.
    let dir = tempfile::Builder::new().prefix("snap-").tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let options = ContainerdOptions {
        extra_config: proxy_plugin(&daemon.socket),
        ..ContainerdOptions::default()
    };
    let containerd = Containerd::start_with(options).unwrap();
    let pull = [
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "stargz",
        reference.as_str(),
    ];
    containerd.ctr(pull).unwrap();

    let out = run_once(&containerd, &reference).unwrap();
    assert!(out.contains(GREETING), "first run printed {out:?}");
    let snapshots = containerd
        .ctr(["snapshots", "--snapshotter", "stargz", "ls"])
        .unwrap();
    assert!(
        snapshots.stdout.contains("Committed"),
        "{}",
        snapshots.stdout
    );

    assert!(daemon.signal("-TERM").success(), "{}", daemon.log_text());
    drop(daemon);
    let _daemon = Daemon::start(dir.path());
    let out = run_after_restart(&containerd, &reference);
    assert!(out.contains(GREETING), "run after restart printed {out:?}");

    // containerd's garbage collector walks and removes backend snapshots (containerd 1.6
    // sends proxy snapshotters no namespace header at all); removing the image must
    // leave the daemon's store empty.
    containerd
        .ctr(["images", "rm", "--sync", reference.as_str()])
        .unwrap();
    let root = dir.path().join("root/snapshots");
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(
        left.is_empty(),
        "snapshot directories left after image removal: {left:?}"
    );
}
