//! Restarting the daemon under running containers. With `[fuse] manager = true` the
//! lazy FUSE mounts live in the fuse manager process, so a container that keeps opening
//! lazily served files reads every one of them while the daemon is killed (SIGKILL) and
//! restarted, then stopped (SIGTERM) and started again. Without the manager, a restarted
//! daemon mounts its remote snapshots again, so containers started afterwards still see
//! their files.

mod common;
use common::stack::{self, convert_to_estargz, rpull, LazyStack};
use common::Daemon;

use std::time::Duration;

use testkit::unique_id;

const FILES: usize = 40;

/// busybox and 40 small files; the entrypoint reads one new file every 0.25 s, so most
/// are opened for the first time while the daemon is down or restarting.
fn image() -> testkit::BuiltImage {
    stack::slow_reader_image(FILES, 2000, 90, "0.25", 11)
}

/// `ctr run` of `image`, retried while containerd's connection to the restarted daemon
/// is still backing off ("connection refused" for a few seconds).
fn run_after_restart(stack: &LazyStack, image: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let id = unique_id("rsm");
        match stack
            .containerd
            .ctr(["run", "--rm", "--snapshotter", "stargz", image, &id])
        {
            Ok(out) => return out.stdout,
            Err(error) if std::time::Instant::now() < deadline => {
                eprintln!("retrying after: {error}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => panic!("{error}: {}", stack.daemon.log_text()),
        }
    }
}

fn config(registry: &str, manager: bool) -> String {
    format!(
        "[remote]\nplain_http = [\"{registry}\"]\n[background_fetch]\nenable = false\n\
         [fuse]\nmanager = {manager}\n"
    )
}

#[test]
fn running_containers_read_through_daemon_restarts() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = LazyStack::start_with_config(
        "rst-",
        "[background_fetch]\nenable = false\n[fuse]\nmanager = true\n",
    );
    let registry = stack.registry.host();
    let plain = stack
        .registry
        .push("restart/app", "plain", &image())
        .unwrap();
    let esgz = stack.registry.reference("restart/app", "esgz");
    convert_to_estargz(&plain, &esgz);
    rpull(&stack.containerd, &esgz);

    let mut ctr = std::process::Command::new("ctr");
    ctr.arg("--address")
        .arg(stack.containerd.address())
        .args(["--namespace", stack.containerd.namespace()])
        .args([
            "run",
            "--rm",
            "--snapshotter",
            "stargz",
            &esgz,
            &unique_id("rst"),
        ]);
    let run = std::thread::spawn(move || ctr.output());
    std::thread::sleep(Duration::from_secs(2));
    stack.daemon.kill();
    std::thread::sleep(Duration::from_secs(1));
    stack.daemon = Daemon::start_with_config(stack.dir.path(), &config(&registry, true));
    std::thread::sleep(Duration::from_secs(2));
    assert!(stack.daemon.signal("-TERM").success());
    std::thread::sleep(Duration::from_secs(1));
    stack.daemon = Daemon::start_with_config(stack.dir.path(), &config(&registry, true));

    let output = run.join().unwrap().unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    let ok = out.lines().filter(|l| *l == "ok").count();
    let manager_log =
        std::fs::read_to_string(stack.dir.path().join("root/fuse-manager.log")).unwrap_or_default();
    assert_eq!(
        ok, FILES,
        "every file read across the restarts: {out}\nstderr: {err}\nmanager: {manager_log}"
    );
    assert_eq!(out.lines().last(), Some("done"), "{out}");
}

#[test]
fn a_restarted_daemon_mounts_its_remote_snapshots_again() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = LazyStack::start_with_config("rsm-", "[background_fetch]\nenable = false\n");
    let registry = stack.registry.host();
    let plain = stack
        .registry
        .push("restart/again", "plain", &image())
        .unwrap();
    let esgz = stack.registry.reference("restart/again", "esgz");
    convert_to_estargz(&plain, &esgz);
    rpull(&stack.containerd, &esgz);

    stack.daemon.kill();
    let _ = testkit::mounts::unmount_all_under(stack.dir.path());
    stack.daemon = Daemon::start_with_config(stack.dir.path(), &config(&registry, false));
    let out = run_after_restart(&stack, &esgz);
    let ok = out.lines().filter(|l| *l == "ok").count();
    assert_eq!(
        ok, FILES,
        "the layers are served again after the restart: {out}"
    );
}
