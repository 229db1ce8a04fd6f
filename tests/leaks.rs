//! No leaks after a crash: the daemon (default config: FUSE mounts in process) is killed
//! with SIGKILL while containerd applies a big ordinary layer into one of its snapshots
//! and lazily served layers are mounted. After a restart on the same root, the pull is
//! retried and both images run; there are no stale or doubled mounts, no temp files and
//! no directory without a snapshot once Cleanup ran; removing the images (containerd's
//! GC, which removes our snapshots and calls Cleanup) leaves no snapshot, directory or
//! mount and gives the space back.
//!
//! The same convergence for lazy pulls: several images pulled at once, the daemon killed
//! before, during (seeded delays) and after their Prepares, with and without the fuse
//! manager; and the fuse manager itself killed under a running container.

mod common;
use common::stack::{self, convert_to_estargz, rpull, LazyStack};
use common::Daemon;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use estargz_snapshotter::proto::snapshots as pb;
use testkit::{unique_id, BuiltImage, DataFile};

const LAZY_TEXT: &str = "served lazily before the crash";
/// The ordinary layer: big enough that containerd is still writing it when we kill.
const BIG_BYTES: usize = 96 << 20;
const REMOTE_LABEL: &str = "containerd.io/snapshot/remote";

/// busybox and a small file; converted to eStargz, so its layers are mounted lazily.
fn lazy_image() -> BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer
        .file("data/lazy.txt", LAZY_TEXT.as_bytes(), 0o644)
        .unwrap();
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/cat", "/data/lazy.txt"])
        .build()
        .unwrap()
}

/// busybox and one big file in plain gzip (fast level: the test builds it each run).
fn big_image() -> BuiltImage {
    let big = [DataFile::new("data/big.bin", BIG_BYTES, 0)];
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(testkit::data_layer(&big, 3).unwrap())
        .gzip_level(1)
        .cmd(&["/bin/sh", "-c", "wc -c < /data/big.bin"])
        .build()
        .unwrap()
}

#[test]
fn sigkill_mid_pull_leaves_nothing_behind_after_restart_and_gc() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let mut stack = LazyStack::start("leak-");
    let root = stack.dir.path().join("root");
    let plain = stack.registry.push("leak/lazy", "plain", &lazy_image());
    let lazy = stack.registry.reference("leak/lazy", "esgz");
    convert_to_estargz(&plain.unwrap(), &lazy);
    let big = stack.registry.push("leak/big", "v1", &big_image()).unwrap();
    rpull(&stack.containerd, &lazy);
    assert_eq!(run(&stack, &lazy), LAZY_TEXT);
    assert_eq!(
        fuse_mounts(&root).len(),
        2,
        "the lazy image's layers are mounted"
    );

    let pulled = kill_mid_pull(&mut stack, &big);
    assert!(pulled.is_err(), "the pull outlived the daemon it was using");
    eprintln!("after SIGKILL: mounts {:?}", mount_table(&root));
    let registry = stack.registry.host();
    stack.daemon = Daemon::start_with_config(
        stack.dir.path(),
        &format!("[remote]\nplain_http = [\"{registry}\"]\n"),
    );

    retry(&stack, || stack.containerd.ctr(pull_args(&big)).map(drop));
    assert_eq!(run(&stack, &big), BIG_BYTES.to_string());
    assert_eq!(run(&stack, &lazy), LAZY_TEXT, "lazy layers served again");
    check_mounts(&stack, &root);
    // Backing copies for passthrough are written in the background after the runs' first
    // opens; only what outlives them is left over.
    let settled = Instant::now() + Duration::from_secs(10);
    let mut temps = temp_files(&root);
    while !temps.is_empty() && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(50));
        temps = temp_files(&root);
    }
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    // containerd's GC may still be removing what the killed pull left (each Remove is
    // followed by its own Cleanup): Cleanup again until the store and the directories
    // agree, for a while; a directory that really leaked never goes.
    let settled = Instant::now() + Duration::from_secs(10);
    cleanup(&stack);
    let mut snapshots = store_snapshots(&stack);
    while snapshot_dirs(&root).len() != snapshots.len() && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(200));
        cleanup(&stack);
        snapshots = store_snapshots(&stack);
    }
    assert_eq!(
        snapshot_dirs(&root).len(),
        snapshots.len(),
        "one directory per snapshot after Cleanup: {:?} for {snapshots:#?}",
        snapshot_dirs(&root)
    );
    let used = disk_bytes(&root.join("snapshots"));
    assert!(used > BIG_BYTES as u64, "the big layer is on disk: {used}");

    for image in [&lazy, &big] {
        let rm = ["images", "rm", "--sync", image.as_str()];
        stack.containerd.ctr(rm).unwrap();
    }
    let left = store_snapshots(&stack);
    assert!(left.is_empty(), "snapshots left after GC: {left:#?}");
    assert!(
        snapshot_dirs(&root).is_empty(),
        "{:?}",
        snapshot_dirs(&root)
    );
    assert!(mount_table(&root).is_empty(), "{:?}", mount_table(&root));
    let reclaimed = disk_bytes(&root.join("snapshots"));
    eprintln!("snapshots took {used} bytes before removal, {reclaimed} after");
    assert!(
        reclaimed < 1 << 20,
        "space not reclaimed: {reclaimed} bytes"
    );
}

/// Pulls `image` on another thread and kills the daemon (SIGKILL) once containerd has
/// written part of the big file into one of our snapshot directories; returns the pull.
fn kill_mid_pull(stack: &mut LazyStack, image: &str) -> Result<(), testkit::ToolError> {
    let snapshots = stack.dir.path().join("root/snapshots");
    let mut ctr = std::process::Command::new("ctr");
    ctr.arg("--address")
        .arg(stack.containerd.address())
        .args(["--namespace", stack.containerd.namespace()])
        .args(pull_args(image));
    let pull = std::thread::spawn(move || testkit::tools::run_command(ctr).map(drop));
    let deadline = Instant::now() + Duration::from_secs(120);
    let written = loop {
        let written = partial_big_file(&snapshots);
        if written > (8 << 20) {
            break written;
        }
        if pull.is_finished() {
            panic!("the pull ended before the kill: {:?}", pull.join());
        }
        assert!(Instant::now() < deadline, "the big layer never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    stack.daemon.kill();
    eprintln!("SIGKILL with {written} of {BIG_BYTES} bytes applied");
    assert!(
        written < BIG_BYTES as u64,
        "killed too late: layer complete"
    );
    pull.join().unwrap()
}

fn pull_args(image: &str) -> [&str; 6] {
    [
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "stargz",
        image,
    ]
}

/// Bytes of `data/big.bin` in the snapshot directory containerd is applying into.
fn partial_big_file(snapshots: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(snapshots) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join("fs/data/big.bin")).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// `ctr run --rm` of `image`; its output, trimmed.
fn run(stack: &LazyStack, image: &str) -> String {
    let id = unique_id("leak");
    let args = ["run", "--rm", "--snapshotter", "stargz", image, &id];
    let mut out = String::new();
    retry(stack, || {
        out = stack.containerd.ctr(args)?.stdout;
        Ok(())
    });
    out.trim().to_owned()
}

/// Retries `call` for up to 60 s: containerd reconnects to a restarted daemon with
/// backoff, answering "connection refused" meanwhile.
fn retry(stack: &LazyStack, mut call: impl FnMut() -> Result<(), testkit::ToolError>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(error) = call() {
        assert!(
            Instant::now() < deadline,
            "{error}: {}",
            stack.daemon.log_text()
        );
        eprintln!("retrying after: {error}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every mount under the root: one live FUSE mount (no dead one under it) per remote
/// snapshot, nothing else.
fn check_mounts(stack: &LazyStack, root: &Path) {
    let table = mount_table(root);
    let fuse = fuse_mounts(root);
    assert_eq!(fuse.len(), table.len(), "only FUSE layer mounts: {table:?}");
    let mut points: Vec<&PathBuf> = fuse.iter().collect();
    points.dedup();
    assert_eq!(
        points.len(),
        fuse.len(),
        "mounts stacked on stale ones: {table:?}"
    );
    for point in &fuse {
        let listed = std::fs::read_dir(point);
        assert!(listed.is_ok(), "{}: {listed:?}", point.display());
    }
    let remote = store_snapshots(stack)
        .into_iter()
        .filter(|info| info.labels.contains_key(REMOTE_LABEL))
        .count();
    assert_eq!(
        fuse.len(),
        remote,
        "one mount per remote snapshot: {table:?}"
    );
}

/// (mount point, filesystem type) of every mount at or under `root`, as the kernel lists
/// them: a mount stacked on another shows twice.
fn mount_table(root: &Path) -> Vec<(PathBuf, String)> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found: Vec<(PathBuf, String)> = table
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = PathBuf::from(left.split(' ').nth(4)?);
            let fstype = right.split(' ').next()?.to_owned();
            point.starts_with(root).then_some((point, fstype))
        })
        .collect();
    found.sort();
    found
}

fn fuse_mounts(root: &Path) -> Vec<PathBuf> {
    let table = mount_table(root).into_iter();
    table
        .filter(|(_, fstype)| fstype.starts_with("fuse"))
        .map(|(point, _)| point)
        .collect()
}

/// Files under `root` whose names mark them as temporary, outside mounted filesystems.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(
        root,
        std::fs::metadata(root).unwrap().dev(),
        &mut |path, _| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.contains(".tmp") || name.starts_with("new-") {
                found.push(path.to_path_buf());
            }
        },
    );
    found
}

/// Disk blocks of the files under `dir`, outside mounted filesystems, in bytes.
fn disk_bytes(dir: &Path) -> u64 {
    let mut bytes = 0;
    walk(
        dir,
        std::fs::metadata(dir).unwrap().dev(),
        &mut |_, meta| {
            bytes += meta.blocks() * 512;
        },
    );
    bytes
}

/// Calls `visit` for every entry under `dir` on device `dev` (not entering mounts).
fn walk(dir: &Path, dev: u64, visit: &mut impl FnMut(&Path, &std::fs::Metadata)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        visit(&path, &meta);
        if meta.is_dir() {
            walk(&path, dev, visit);
        }
    }
}

fn snapshot_dirs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every snapshot in our store in containerd's namespace (over our own socket).
fn store_snapshots(stack: &LazyStack) -> Vec<pb::Info> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = common::grpc::connect(&stack.daemon.socket).await;
        let request = pb::ListSnapshotsRequest::default();
        let ns = stack.containerd.namespace();
        let listed = c.list(common::grpc::in_namespace(request, ns)).await;
        let mut stream = listed.unwrap().into_inner();
        let mut infos = Vec::new();
        while let Some(batch) = stream.message().await.unwrap() {
            infos.extend(batch.info);
        }
        infos
    })
}

/// The Cleanup RPC, as containerd's GC calls it.
fn cleanup(stack: &LazyStack) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = common::grpc::connect(&stack.daemon.socket).await;
        let request = pb::CleanupRequest::default();
        let ns = stack.containerd.namespace();
        c.cleanup(common::grpc::in_namespace(request, ns))
            .await
            .unwrap();
    });
}

/// Application images pulled at once: busybox (shared) and one small file each.
const APPS: usize = 4;

fn app_text(i: usize) -> String {
    format!("app {i} read its own file")
}

fn app_image(i: usize) -> BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    let text = app_text(i);
    layer.file("data/app.txt", text.as_bytes(), 0o644).unwrap();
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/cat", "/data/app.txt"])
        .build()
        .unwrap()
}

/// Pushes and converts the application images; their eStargz references.
fn push_apps(stack: &LazyStack) -> Vec<String> {
    (0..APPS)
        .map(|i| {
            let repo = format!("crash/app{i}");
            let plain = stack.registry.push(&repo, "plain", &app_image(i)).unwrap();
            let esgz = stack.registry.reference(&repo, "esgz");
            convert_to_estargz(&plain, &esgz);
            esgz
        })
        .collect()
}

/// Runs app `i` with a command that checks its own file inside the container, so that
/// the verdict travels in the exit status: ctr 1.6 closes a task's output before draining
/// it (containerd#8643), so a fast container's stdout can come back empty under load.
/// A failed run (cat too: e.g. before a restarted daemon mounted the layer again) is tried
/// again for a while, as [`run`] does. Err: the content the container read instead.
fn run_app(stack: &LazyStack, image: &str, i: usize) -> Result<(), String> {
    const WRONG: i32 = 3;
    let id = unique_id("leak");
    let script = format!(
        "c=$(cat /data/app.txt) || exit 2; [ \"$c\" = '{}' ] && exit 0; echo \"read: [$c]\" >&2; exit {WRONG}",
        app_text(i)
    );
    let args = ["run", "--rm", "--snapshotter", "stargz", image, &id];
    let args = args.into_iter().chain(["/bin/sh", "-c", &script]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match stack.containerd.ctr(args.clone()) {
            Ok(_) => return Ok(()),
            Err(testkit::ToolError::Failed { status, stderr, .. })
                if status.code() == Some(WRONG) =>
            {
                return Err(stderr)
            }
            // containerd reconnects to a restarted daemon with backoff.
            Err(error) => {
                assert!(Instant::now() < deadline, "{error}");
                eprintln!("retrying after: {error}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// When the daemon is killed, relative to the concurrent pulls.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Right as the pulls start: before any Prepare.
    Start,
    /// This long after the daemon logged its `nth` Prepare of the round: Prepares (and
    /// their lazy mounts) in flight.
    Prepare { nth: usize, delay: Duration },
    /// Once every pull finished.
    End,
}

/// Kill points: before, during (seeded: which Prepare, how long after it) and after the
/// Prepares. The seed comes from `CRASH_SEED` or the clock, and is printed so that a
/// failure can be replayed.
fn kill_points() -> Vec<KillAt> {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map(|d| u64::from(d.subsec_nanos())).unwrap_or(1)
        });
    eprintln!("kill points from CRASH_SEED={seed}");
    let mut random = testkit::image::content::SplitMix64::new(seed);
    let mut points = vec![KillAt::Start];
    // Each app has two layers; the busybox one is shared.
    for nth in [1, 2, 4] {
        let delay = Duration::from_millis(random.below(120));
        points.push(KillAt::Prepare { nth, delay });
    }
    points.push(KillAt::End);
    points
}

/// Prepares the daemon logged since its log was `from` bytes long.
fn prepares_logged(stack: &LazyStack, from: usize) -> usize {
    let log = stack.daemon.log_text();
    let new = log.get(from..).unwrap_or_default();
    // Fields may be wrapped in colour codes: match the words alone.
    let prepare = |l: &&str| l.contains("grpc") && l.contains("prepare") && l.contains("extract-");
    new.lines().filter(prepare).count()
}

/// The daemon's config: plain HTTP to `registry`, the fuse manager on or off, metrics on
/// `metrics`.
fn daemon_config(registry: &str, manager: bool, metrics: std::net::SocketAddr) -> String {
    format!(
        "[remote]\nplain_http = [\"{registry}\"]\n[fuse]\nmanager = {manager}\n\
         [metrics]\naddress = \"{metrics}\"\n"
    )
}

/// One round: the apps pulled at once, the daemon SIGKILLed at `at` and started again,
/// failed pulls retried, every app run, then every image removed.
fn crash_round(stack: &mut LazyStack, apps: &[String], at: KillAt, config: &str) {
    let manager = config.contains("manager = true");
    let log_start = stack.daemon.log_text().len();
    let pulls: Vec<_> = apps
        .iter()
        .map(|image| {
            let command = stack::rpull_command(&stack.containerd, image);
            std::thread::spawn(move || testkit::tools::run_command(command).map(drop))
        })
        .collect();
    let finished = |pulls: &[std::thread::JoinHandle<_>]| pulls.iter().all(|p| p.is_finished());
    match at {
        KillAt::Start => {}
        KillAt::Prepare { nth, delay } => {
            while prepares_logged(stack, log_start) < nth && !finished(&pulls) {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(delay);
        }
        KillAt::End => {
            while !finished(&pulls) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    stack.daemon.kill();
    stack.daemon = Daemon::start_with_config(stack.dir.path(), config);
    let mut failed = Vec::new();
    for (image, pull) in apps.iter().zip(pulls) {
        if pull.join().unwrap().is_err() {
            failed.push(image);
        }
    }
    eprintln!(
        "killed at {at:?} (manager {manager}): {} pulls failed",
        failed.len()
    );
    for image in failed {
        let args = [
            "image",
            "rpull",
            "--plain-http",
            "--snapshotter",
            "stargz",
            image,
        ];
        retry(stack, || stack.containerd.ctr_remote(args).map(drop));
    }
    for (i, image) in apps.iter().enumerate() {
        if let Err(read) = run_app(stack, image, i) {
            let root = stack.dir.path().join("root");
            let manager_log =
                std::fs::read_to_string(root.join("fuse-manager.log")).unwrap_or_default();
            panic!(
                "{image} after kill at {at:?}: {read}\nmounts: {:#?}\ndaemon log:\n{}\nmanager log:\n{manager_log}",
                mount_table(&root),
                stack.daemon.log_text()
            );
        }
    }
    for image in apps {
        let rm = ["images", "rm", "--sync", image.as_str()];
        stack.containerd.ctr(rm).unwrap();
    }
    assert_converged(stack, &format!("kill at {at:?}, manager {manager}"));
}

/// After every image is gone: no snapshot, no snapshot directory, no mount under the
/// root, and no background fetch still reading from the registry.
fn assert_converged(stack: &LazyStack, context: &str) {
    let root = stack.dir.path().join("root");
    let left = store_snapshots(stack);
    assert!(left.is_empty(), "{context}: snapshots left: {left:#?}");
    let table = mount_table(&root);
    let manager_log = std::fs::read_to_string(root.join("fuse-manager.log")).unwrap_or_default();
    assert!(
        table.is_empty(),
        "{context}: mounts left: {table:?}\n{}\nmanager: {manager_log}",
        stack.daemon.log_text()
    );
    let dirs = snapshot_dirs(&root);
    assert!(dirs.is_empty(), "{context}: directories left: {dirs:?}");
    let blob_reads = || {
        let log = std::fs::read_to_string(stack.registry.log_path()).unwrap_or_default();
        log.lines().filter(|l| l.contains("/blobs/")).count()
    };
    let before = blob_reads();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(blob_reads(), before, "{context}: blobs still fetched");
}

#[test]
fn sigkill_at_any_point_of_concurrent_pulls_converges() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let points = kill_points();
    for manager in [false, true] {
        let metrics = common::metrics::free_address();
        let extra = format!("[fuse]\nmanager = {manager}\n[metrics]\naddress = \"{metrics}\"\n");
        let mut stack = LazyStack::start_with_config("crash-", &extra);
        let config = daemon_config(&stack.registry.host(), manager, metrics);
        let apps = push_apps(&stack);
        for &at in &points {
            crash_round(&mut stack, &apps, at, &config);
        }
        let root = stack.dir.path().join("root");
        let manager_log =
            std::fs::read_to_string(root.join("fuse-manager.log")).unwrap_or_default();
        let logs = stack.daemon.log_text() + &manager_log;
        let orphans = logs.lines().filter(|l| l.contains("no snapshot owns"));
        eprintln!("manager {manager}: {} orphans removed", orphans.count());
        if manager {
            // The manager outlived every daemon: its count covers the whole test.
            let unmounted = manager_log
                .lines()
                .filter(|l| l.contains("unmounted a layer no snapshot owns"))
                .count();
            let series = "estargz_orphans_removed_total{kind=\"mount\"}";
            let counted = common::metrics::sample(&common::metrics::scrape(metrics), series);
            assert_eq!(
                counted, unmounted as f64,
                "orphan mounts counted in the metrics"
            );
        }
    }
}

/// Files the reader container opens, one every 0.15 s.
const READER_FILES: usize = 30;

/// busybox and small files; the entrypoint reads them one by one, so most are opened for
/// the first time after the fuse manager was killed.
fn reader_image() -> BuiltImage {
    stack::slow_reader_image(READER_FILES, 3000, 70, "0.15", 12)
}

fn manager_pid(root: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(estargz_snapshotter::manager::pid_path(root)).ok()?;
    pid.trim().parse().ok()
}

/// Whether `count` live FUSE mounts are under `root` and each answers a listing.
fn live_mounts(root: &Path, count: usize) -> bool {
    let mounts = fuse_mounts(root);
    mounts.len() == count && mounts.iter().all(|p| std::fs::read_dir(p).is_ok())
}

#[test]
fn a_killed_fuse_manager_is_replaced_and_new_containers_start() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = LazyStack::start_with_config("mgrk-", "[fuse]\nmanager = true\n");
    let root = stack.dir.path().join("root");
    let plain = stack
        .registry
        .push("crash/reader", "plain", &reader_image());
    let image = stack.registry.reference("crash/reader", "esgz");
    convert_to_estargz(&plain.unwrap(), &image);
    rpull(&stack.containerd, &image);
    assert!(live_mounts(&root, 2), "{:?}", mount_table(&root));

    let mut ctr = std::process::Command::new("ctr");
    ctr.arg("--address")
        .arg(stack.containerd.address())
        .args(["--namespace", stack.containerd.namespace()])
        .args([
            "run",
            "--rm",
            "--snapshotter",
            "stargz",
            &image,
            &unique_id("rdr"),
        ]);
    let reader = std::thread::spawn(move || ctr.output());
    std::thread::sleep(Duration::from_millis(1500));
    let old = manager_pid(&root).expect("a fuse manager runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let at = Instant::now();
    while !(manager_pid(&root).is_some_and(|pid| pid != old) && live_mounts(&root, 2)) {
        assert!(
            at.elapsed() < Duration::from_secs(30),
            "no new fuse manager serving the layers: {:?}\n{}",
            mount_table(&root),
            stack.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "layers served again {:?} after the fuse manager was killed",
        at.elapsed()
    );

    let output = reader.join().unwrap().unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let ok = out.lines().filter(|l| *l == "ok").count();
    let failed = out.lines().filter(|l| l.starts_with("FAIL")).count();
    eprintln!("the container reading across the kill: {ok} reads ok, {failed} failed");
    assert_eq!(ok + failed, READER_FILES, "{out}");
    assert_eq!(out.lines().last(), Some("done"), "{out}");
    // The new manager took the mounts over (tests/manager_takeover.rs): no read failed.
    assert_eq!(failed, 0, "{out}");

    let again = run(&stack, &image);
    let ok = again.lines().filter(|l| *l == "ok").count();
    assert_eq!(
        ok, READER_FILES,
        "a new container reads every file: {again}"
    );
    stack
        .containerd
        .ctr(["images", "rm", "--sync", image.as_str()])
        .unwrap();
    assert_converged(&stack, "fuse manager killed");
}
