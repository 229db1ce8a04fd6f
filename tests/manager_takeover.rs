//! Running containers read on through a FUSE manager crash (issue 16): with `[fuse]
//! manager = true`, an image is pulled lazily and a container reads its files, checking
//! each one's sha256, while the fuse manager is SIGKILLed twice. The daemon keeps a copy
//! of each mount's `/dev/fuse` connection (a restarted daemon, between the kills, asks
//! the running manager for them), so the mounts never die; each new manager
//! takes the connections over (same mounts: same mount ids, no remount) and the reads
//! the dead one had taken are sent again by the kernel. The container must see no read
//! error and no wrong byte; a new container of the image starts; removing the image
//! leaves no mount and no connection copy in the daemon. And a file a container holds
//! open with FUSE passthrough across a kill opens again (the new manager reuses the dead
//! one's backing id, from the mount's ledger).

mod common;
use common::stack::{convert_to_estargz, rpull, LazyStack};
use common::Daemon;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use testkit::{unique_id, BuiltImage};

/// Files the container checks, one every `PAUSE` seconds, in `ROUNDS` rounds.
const FILES: usize = 100;
const ROUNDS: usize = 3;

fn file_bytes(i: usize) -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(1600 + i as u64, 48 * 1024 + i * 97)
}

/// busybox plus `data/f<i>.bin`; the command checks every file's sha256 against the
/// sums it carries, prints `ok` or `FAIL <round> <file>` per file and `errors=<n>` at
/// the end, and exits non-zero on any error. `ROUNDS` and `PAUSE` come from the
/// environment.
fn takeover_image() -> BuiltImage {
    let mut data = testkit::LayerBuilder::new();
    data.dir("data", 0o755).unwrap();
    let mut sums = String::new();
    for i in 0..FILES {
        let bytes = file_bytes(i);
        data.file(&format!("data/f{i}.bin"), &bytes, 0o644).unwrap();
        sums.push(' ');
        for byte in Sha256::digest(&bytes) {
            write!(sums, "{byte:02x}").unwrap();
        }
    }
    let script = format!(
        "rounds=${{ROUNDS:-{ROUNDS}}}; pause=${{PAUSE:-0.05}}; errors=0; r=0; \
         while [ $r -lt $rounds ]; do i=0; \
           for want in{sums}; do \
             got=$(sha256sum /data/f$i.bin) || got=; got=${{got%% *}}; \
             if [ \"$got\" = \"$want\" ]; then echo ok; else echo \"FAIL $r $i\"; errors=$((errors+1)); fi; \
             i=$((i+1)); sleep $pause; \
           done; r=$((r+1)); \
         done; echo errors=$errors; [ $errors -eq 0 ]"
    );
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(data.finish().unwrap())
        .cmd(&["/bin/sh", "-c", &script])
        .build()
        .unwrap()
}

fn manager_pid(root: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(estargz_snapshotter::manager::pid_path(root)).ok()?;
    pid.trim().parse().ok()
}

/// (mount id, mount point) of each FUSE mount under `root`: a remount changes the id.
fn fuse_mounts(root: &Path) -> Vec<(u64, PathBuf)> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found: Vec<(u64, PathBuf)> = table
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let point = PathBuf::from(fields.get(4)?);
            let fuse = right.starts_with("fuse");
            (fuse && point.starts_with(root)).then(|| (fields[0].parse().ok(), point))
        })
        .filter_map(|(id, point)| Some((id?, point)))
        .collect();
    found.sort();
    found
}

/// Descriptors of `/dev/fuse` that process `pid` holds.
fn fuse_fds(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == Path::new("/dev/fuse"))
        .count()
}

/// Kills the running manager and waits until another one serves every mount under
/// `root` (or panics with the logs).
fn kill_manager(stack: &LazyStack, root: &Path) -> Duration {
    let old = manager_pid(root).expect("a fuse manager runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let at = Instant::now();
    loop {
        let mounts = fuse_mounts(root);
        let served = mounts.len() == 2
            && mounts
                .iter()
                .all(|(_, point)| std::fs::read_dir(point).is_ok());
        if manager_pid(root).is_some_and(|pid| pid != old) && served {
            return at.elapsed();
        }
        assert!(
            at.elapsed() < Duration::from_secs(30),
            "no new fuse manager serves the layers: {mounts:?}\n{}\n{}",
            stack.daemon.log_text(),
            std::fs::read_to_string(estargz_snapshotter::manager::log_path(root))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ctr_run(stack: &LazyStack, image: &str, env: &[&str]) -> std::process::Command {
    let mut ctr = std::process::Command::new("ctr");
    ctr.arg("--address")
        .arg(stack.containerd.address())
        .args(["--namespace", stack.containerd.namespace()])
        .args(["run", "--rm", "--snapshotter", "stargz"]);
    for var in env {
        ctr.args(["--env", var]);
    }
    ctr.args([image, &unique_id("tko")]);
    ctr
}

#[test]
fn a_container_reads_on_through_two_fuse_manager_kills() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = LazyStack::start_with_config("tko-", "[fuse]\nmanager = true\n");
    // What LazyStack wrote, for the restart below.
    let config = format!(
        "[remote]\nplain_http = [\"{}\"]\n[fuse]\nmanager = true\n",
        stack.registry.host()
    );
    let root = stack.dir.path().join("root");
    let plain = stack
        .registry
        .push("takeover/reader", "plain", &takeover_image())
        .unwrap();
    let image = stack.registry.reference("takeover/reader", "esgz");
    convert_to_estargz(&plain, &image);
    rpull(&stack.containerd, &image);
    let mounts = fuse_mounts(&root);
    assert_eq!(mounts.len(), 2, "both layers lazy: {mounts:?}");
    assert_eq!(
        fuse_fds(stack.daemon.pid()),
        2,
        "the daemon keeps a copy of each mount's connection"
    );

    let mut reader = ctr_run(&stack, &image, &[]);
    let started = Instant::now();
    let reader = std::thread::spawn(move || reader.output());
    std::thread::sleep(Duration::from_millis(2000));
    let mut after_kills = Vec::new();
    for kill in 1..=2 {
        let at = started.elapsed();
        let took = kill_manager(&stack, &root);
        eprintln!("kill {kill} at {at:?}: a new manager served the layers {took:?} later");
        after_kills.push(fuse_mounts(&root));
        if kill == 1 {
            // A restarted daemon gets its copies from the running manager.
            let at = Instant::now();
            stack.daemon.kill();
            stack.daemon = Daemon::start_with_config(stack.dir.path(), &config);
            while fuse_fds(stack.daemon.pid()) < 2 {
                assert!(
                    at.elapsed() < Duration::from_secs(20),
                    "the restarted daemon has no copies: {}",
                    stack.daemon.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("daemon restarted with its copies in {:?}", at.elapsed());
        } else {
            std::thread::sleep(Duration::from_millis(1500));
        }
    }
    let output = reader.join().unwrap().unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let ok = out.lines().filter(|l| *l == "ok").count();
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    eprintln!(
        "the container across two kills: {ok} files right, {} wrong or unreadable, in {:?}",
        failed.len(),
        started.elapsed()
    );
    assert!(
        output.status.success() && failed.is_empty(),
        "{failed:?} {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        stack.daemon.log_text()
    );
    assert_eq!(ok, FILES * ROUNDS, "{out}");
    assert_eq!(out.lines().last(), Some("errors=0"), "{out}");
    for mounts_then in after_kills {
        assert_eq!(mounts_then, mounts, "the same mounts, never remounted");
    }
    let manager_log =
        std::fs::read_to_string(estargz_snapshotter::manager::log_path(&root)).unwrap_or_default();
    assert_eq!(
        manager_log
            .matches("took over the layer's fuse connection")
            .count(),
        4,
        "two layers taken over twice"
    );

    let again = ctr_run(&stack, &image, &["ROUNDS=1", "PAUSE=0"])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "a new container of the image: {}",
        String::from_utf8_lossy(&again.stdout)
    );

    stack
        .containerd
        .ctr(["images", "rm", "--sync", image.as_str()])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fuse_mounts(&root).is_empty() || fuse_fds(stack.daemon.pid()) > 0 {
        assert!(
            Instant::now() < deadline,
            "after removing the image: mounts {:?}, daemon's /dev/fuse copies {}",
            fuse_mounts(&root),
            fuse_fds(stack.daemon.pid())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Backing-id ledgers under `root` that record at least one id.
fn recorded_ledgers(root: &Path) -> Vec<PathBuf> {
    fuse_mounts(root)
        .into_iter()
        .map(|(_, point)| point.with_file_name("fs.backing-ids"))
        .filter(|ledger| {
            std::fs::read_to_string(ledger)
                .is_ok_and(|text| text.lines().any(|l| l.starts_with('+')))
        })
        .collect()
}

/// A container holds a fully cached file open with passthrough (the kernel reads its
/// backing copy) while the manager is SIGKILLed: the kernel then accepts a new open of it
/// only with the dead manager's backing id. The new manager finds it in the mount's
/// ledger, so the container opens the file again, reads it through the held handle and
/// the new one, closes it and opens it once more, with the right bytes each time.
#[test]
fn a_file_held_open_with_passthrough_reopens_after_a_fuse_manager_kill() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("tkp-", "[fuse]\nmanager = true\n");
    let root = stack.dir.path().join("root");
    let plain = stack
        .registry
        .push("takeover/held", "plain", &takeover_image())
        .unwrap();
    let image = stack.registry.reference("takeover/held", "esgz");
    convert_to_estargz(&plain, &image);
    rpull(&stack.containerd, &image);
    // Read whole (cached), opened again (its backing copy is written 2 s later), then
    // held open with passthrough across the kill, which comes while it sleeps.
    let script = "f=/data/f0.bin; sha256sum $f >/dev/null; sleep 1; head -c1 $f >/dev/null; \
         sleep 3; exec 3<$f; sleep 14; \
         s=$(sha256sum $f) && echo \"reopened ${s%% *}\" || echo reopen-failed; \
         s=$(sha256sum <&3) && echo \"held ${s%% *}\" || echo held-failed; exec 3<&-; \
         s=$(sha256sum $f) && echo \"closed ${s%% *}\" || echo closed-failed";
    let mut container = ctr_run(&stack, &image, &[]);
    container.args(["/bin/sh", "-c", script]);
    let started = Instant::now();
    let container = std::thread::spawn(move || container.output());
    while recorded_ledgers(&root).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "no file was opened with passthrough: {}",
            std::fs::read_to_string(estargz_snapshotter::manager::log_path(&root))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let at = started.elapsed();
    let took = kill_manager(&stack, &root);
    eprintln!("held file recorded; manager killed at {at:?}, served again {took:?} later");
    let output = container.join().unwrap().unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut want = String::new();
    for byte in Sha256::digest(file_bytes(0)) {
        write!(want, "{byte:02x}").unwrap();
    }
    let expected = format!("reopened {want}\nheld {want}\nclosed {want}\n");
    assert_eq!(
        out,
        expected,
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(estargz_snapshotter::manager::log_path(&root)).unwrap_or_default()
    );
    assert!(output.status.success());
}
