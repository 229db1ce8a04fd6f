//! containerd's own snapshotter conformance suite (containerd 1.6 `snapshots/testsuite`)
//! against the daemon through containerd's snapshots proxy: builds the Go driver in
//! `tests/conformance/` in GOPATH mode against Debian's containerd sources and runs it,
//! a fresh daemon and root per suite test.

use std::path::Path;
use std::process::Command;

use testkit::Prereq;

const GO: &str = "/usr/bin/go";
const GOPATH: &str = "/usr/share/gocode";
/// Shipped by Debian's golang-github-containerd-containerd-dev (a file, so `Binary` fits).
const TESTSUITE: &str =
    "/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite/testsuite.go";

#[test]
fn containerd_snapshotter_conformance_suite_passes() {
    testkit::require!(Prereq::Root, Prereq::Binary(GO), Prereq::Binary(TESTSUITE));
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let go_cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
    let output = Command::new(GO)
        .args(["test", "-count=1", "-v", "."])
        .current_dir(&driver)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", &go_cache)
        .env(
            "ESTARGZ_SNAPSHOTTER_BIN",
            env!("CARGO_BIN_EXE_estargz-snapshotter"),
        )
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "conformance suite failed:\n{log}");
    let passed = log
        .matches("--- PASS: TestEstargzSnapshotterConformance/")
        .count();
    assert!(!log.contains("--- FAIL"), "{log}");
    // containerd 1.6 has 21 cases; Rename is skipped by the suite itself.
    assert!(passed >= 20, "only {passed} suite cases passed:\n{log}");
}
