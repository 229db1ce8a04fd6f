//! Many images at once (issue 13): images that share base layers, pulled through real
//! containerd all at the same moment, stay lazy. Every layer of every image is committed
//! as a remote snapshot, nothing falls back to an ordinary pull (no fallback counted or
//! logged, no whole-blob GET in the registry's log), each blob is opened (footer and TOC
//! fetched) exactly once, and every container prints what it should. One more image
//! pulled in two namespaces at once does the same, and Prepares racing Removes of the same
//! layer never fall back, nor break the other mounts of its blob. Run with the FUSE mounts
//! in the daemon and in the fuse manager process.

mod common;
use common::grpc::{connect, in_namespace};
use common::metrics::{free_address, scrape};
use common::remote::blob_gets;
use common::stack::{convert_to_estargz_prioritized, proxy_plugin, REMOTE_LABEL};
use common::Daemon;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use estargz_snapshotter::proto::snapshots as pb;
use testkit::containerd::{CTR_BIN, CTR_REMOTE_BIN};
use testkit::{unique_id, BuiltImage, Containerd, ContainerdOptions, Registry};

/// Images pulled together in one namespace; one more is pulled in two namespaces at once.
const IMAGES: usize = 4;
/// The log line the daemon (or manager) writes each time it fetches a blob's footer and TOC.
const OPENED: &str = "fetching the layer footer and TOC from the registry";
/// Rounds of a Prepare racing a Remove of the same layer.
const RACE_ROUNDS: usize = 6;
/// Layers every image shares (busybox and [`common_layer`]), below its own.
const SHARED: usize = 2;

fn marker(i: usize) -> String {
    format!("fleet app {i}")
}

/// What image `i`'s container prints.
fn output(i: usize) -> String {
    format!("{}\ncommon file 7/49", marker(i))
}

/// The second shared layer: many small files (a TOC that takes a moment to decode) and a
/// prioritized 2 MiB file (a prefetch before the mount is ready; text, which the test
/// build's unoptimized deflate compresses fast), so that a mount of it takes long enough
/// for the Prepares of every image to meet.
fn common_layer() -> Vec<u8> {
    let mut common = testkit::LayerBuilder::new();
    common.dir("common", 0o755).unwrap();
    for d in 0..8 {
        common.dir(&format!("common/{d}"), 0o755).unwrap();
        for f in 0..50 {
            let text = format!("common file {d}/{f}\n");
            common
                .file(&format!("common/{d}/{f}.txt"), text.as_bytes(), 0o644)
                .unwrap();
        }
    }
    let big = big_text();
    common.file("common/big.bin", &big, 0o644).unwrap();
    common.finish().unwrap()
}

/// 2 MiB of numbered lines.
fn big_text() -> Vec<u8> {
    let mut text = Vec::with_capacity(2 << 20);
    let mut line = 0u64;
    while text.len() < 2 << 20 {
        text.extend_from_slice(format!("line {line:012}\n").as_bytes());
        line += 1;
    }
    text.truncate(2 << 20);
    text
}

/// busybox and [`common_layer`] (the base layers every image shares) and a data layer of
/// its own.
fn image(i: usize) -> BuiltImage {
    let mut data = testkit::LayerBuilder::new();
    data.dir("data", 0o755).unwrap();
    let line = format!("{}\n", marker(i));
    data.file("data/marker.txt", line.as_bytes(), 0o644)
        .unwrap();
    let blob = estargz::testutil::pseudo_random_bytes(0xf1ee7 + i as u64, 64 << 10);
    data.file("data/blob.bin", &blob, 0o644).unwrap();
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(common_layer())
        .layer(data.finish().unwrap())
        .cmd(&["/bin/sh", "-c", "cat /data/marker.txt /common/7/49.txt"])
        // Fast: the converter compresses the layers again anyway.
        .gzip_level(1)
        .build()
        .unwrap()
}

/// Builds, pushes and converts every image, each on its own thread.
fn push_images(registry: &Registry) -> Vec<String> {
    std::thread::scope(|scope| {
        let pushes: Vec<_> = (0..=IMAGES)
            .map(|i| {
                scope.spawn(move || {
                    let name = format!("fleet/app{i}");
                    let plain = registry.push(&name, "plain", &image(i)).unwrap();
                    let esgz = registry.reference(&name, "esgz");
                    convert_to_estargz_prioritized(&plain, &esgz, &["common/big.bin"]);
                    esgz
                })
            })
            .collect();
        pushes.into_iter().map(|p| p.join().unwrap()).collect()
    })
}

/// The layer blob digests of `repo:esgz`, bottom first.
fn layer_digests(registry: &Registry, repo: &str) -> Vec<String> {
    let manifest = registry.client().get_manifest(repo, "esgz").unwrap();
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// `program` (ctr or ctr-remote) against `containerd` in namespace `ns`; its stdout.
fn client_in(containerd: &Containerd, program: &str, ns: &str, args: &[&str]) -> String {
    let address = containerd.address();
    let mut full = vec!["--address", address.to_str().unwrap(), "--namespace", ns];
    full.extend_from_slice(args);
    testkit::run_tool(Path::new(program), &full)
        .unwrap_or_else(|e| panic!("{program} {args:?} in {ns}: {e}"))
        .stdout
}

/// Pulls (`ctr-remote image rpull`) and runs every `(namespace, reference)` at once, each
/// on its own thread started together; the container outputs, in order.
fn pull_and_run_at_once(containerd: &Containerd, pulls: &[(String, String)]) -> Vec<String> {
    let barrier = std::sync::Barrier::new(pulls.len());
    std::thread::scope(|scope| {
        let runs: Vec<_> = pulls
            .iter()
            .map(|(ns, reference)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let pull = ["image", "rpull", "--plain-http", "--snapshotter", "stargz"];
                    let mut args = pull.to_vec();
                    args.push(reference);
                    client_in(containerd, CTR_REMOTE_BIN, ns, &args);
                    let id = unique_id("fleet");
                    let run = ["run", "--rm", "--snapshotter", "stargz", reference, &id];
                    client_in(containerd, CTR_BIN, ns, &run)
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    })
}

/// Committed snapshots of namespace `ns`, and how many of them are remote.
fn committed_in(containerd: &Containerd, ns: &str) -> (usize, usize) {
    let listed = client_in(
        containerd,
        CTR_BIN,
        ns,
        &["snapshots", "--snapshotter", "stargz", "ls"],
    );
    let keys: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter(|line| line.contains("Committed"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let remote = keys
        .iter()
        .filter(|key| {
            let info = ["snapshots", "--snapshotter", "stargz", "info", key];
            client_in(containerd, CTR_BIN, ns, &info).contains(REMOTE_LABEL)
        })
        .count();
    (keys.len(), remote)
}

/// Every fallback counted in the metrics, as `reason value` lines (empty: none).
fn fallbacks(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|line| line.starts_with("estargz_fallbacks_total{"))
        .filter(|line| !line.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

/// The daemon's log and, with the manager, the manager's.
fn logs(stack: &Node) -> String {
    let manager = stack.dir.path().join("root/fuse-manager.log");
    let manager = std::fs::read_to_string(manager).unwrap_or_default();
    format!("{}{manager}", stack.daemon.log_text())
}

/// How many times the blob `digest` was opened from the registry.
fn opens(log: &str, digest: &str) -> usize {
    log.lines()
        .filter(|line| line.contains(OPENED) && line.contains(digest))
        .count()
}

/// Whole-blob downloads (GET answered 200, as containerd's ordinary pull does; lazy reads
/// are ranges, 206) of `digest` in the registry's access log `log`.
fn full_downloads(log: &str, digest: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("\"GET /v2/") && line.contains(digest))
        .filter(|line| line.contains("HTTP/1.1\" 200 "))
        .count()
}

/// Our daemon (plain HTTP to the images' registry) and a containerd using it as proxy
/// plugin `stargz`; killed, and its mounts undone, on drop.
struct Node {
    containerd: Containerd,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Node {
    fn start(prefix: &str, registry: &Registry, extra_config: &str) -> Node {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let config = format!(
            "[remote]\nplain_http = [\"{}\"]\n{extra_config}",
            registry.host()
        );
        let daemon = Daemon::start_with_config(dir.path(), &config);
        let containerd = Containerd::start_with(ContainerdOptions {
            extra_config: proxy_plugin(&daemon.socket),
            ..ContainerdOptions::default()
        })
        .unwrap();
        Node {
            containerd,
            daemon,
            dir,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.daemon.kill();
        common::kill_fuse_manager(&self.dir.path().join("root"));
        let _ = testkit::mounts::unmount_all_under(self.dir.path());
    }
}

/// Pulls the images of `references` (in `registry`) at once through a fresh daemon and
/// containerd, one more in two namespaces at once, then races Prepares and Removes.
fn fleet(registry: &Registry, references: &[String], manager: bool) {
    let started = Instant::now();
    let prefix = if manager { "fltm-" } else { "flt-" };
    let address = free_address();
    // Background fetching off: the registry traffic is what the pulls and runs asked for.
    let config = format!(
        "[background_fetch]\nenable = false\n[metrics]\naddress = \"{address}\"\n\
         [fuse]\nmanager = {manager}\n"
    );
    let stack = Node::start(prefix, registry, &config);
    let digests: Vec<Vec<String>> = (0..=IMAGES)
        .map(|i| layer_digests(registry, &format!("fleet/app{i}")))
        .collect();
    let shared = digests[0][..SHARED].to_vec();
    assert!(
        digests
            .iter()
            .all(|layers| layers.len() == SHARED + 1 && layers[..SHARED] == shared[..]),
        "every image has the same base blobs: {digests:?}"
    );
    let blobs_of = |images: &[Vec<String>]| {
        let mut blobs: Vec<String> = images.iter().flatten().cloned().collect();
        blobs.sort();
        blobs.dedup();
        blobs
    };
    let (first_blobs, all_blobs) = (blobs_of(&digests[..IMAGES]), blobs_of(&digests));
    let registry_log = || std::fs::read_to_string(registry.log_path()).unwrap();
    let log_start = registry_log().len();

    // Every image at once in one namespace: the shared layers' Prepares race.
    let ns = stack.containerd.namespace().to_owned();
    let pulls: Vec<(String, String)> = references[..IMAGES]
        .iter()
        .map(|r| (ns.clone(), r.clone()))
        .collect();
    let outputs = pull_and_run_at_once(&stack.containerd, &pulls);
    for (i, out) in outputs.iter().enumerate() {
        assert_eq!(out.trim(), output(i), "image {i}: {}", logs(&stack));
    }
    let (committed, remote) = committed_in(&stack.containerd, &ns);
    assert_eq!(
        committed,
        IMAGES + SHARED,
        "a data layer per image and the shared ones"
    );
    assert_eq!(remote, committed, "every layer is remote: {}", logs(&stack));
    let pulled = registry_log()[log_start..].to_owned();
    for blob in &first_blobs {
        assert_eq!(
            full_downloads(&pulled, blob),
            0,
            "{blob} was pulled whole: {}",
            logs(&stack)
        );
    }
    let metrics = scrape(address);
    assert_eq!(
        fallbacks(&metrics),
        Vec::<String>::new(),
        "{}",
        logs(&stack)
    );
    let log = logs(&stack);
    assert_eq!(
        log.matches("containerd pulls").count(),
        0,
        "no fallback: {log}"
    );
    for blob in &first_blobs {
        assert_eq!(opens(&log, blob), 1, "blob {blob} is opened once: {log}");
    }
    let base_bytes: u64 = shared
        .iter()
        .map(|d| blob_gets(&pulled, d).iter().sum::<u64>())
        .sum();
    eprintln!(
        "{IMAGES} images pulled and run at once by {:?}; the shared layers cost {base_bytes} registry bytes",
        started.elapsed()
    );

    // One more image in two more namespaces at once: its own layer's Prepares race too.
    let (ns_a, ns_b) = (unique_id("fleet-a"), unique_id("fleet-b"));
    let pulls = [
        (ns_a.clone(), references[IMAGES].clone()),
        (ns_b.clone(), references[IMAGES].clone()),
    ];
    for out in pull_and_run_at_once(&stack.containerd, &pulls) {
        assert_eq!(out.trim(), output(IMAGES), "{}", logs(&stack));
    }
    let pulled = registry_log()[log_start..].to_owned();
    let last = &digests[IMAGES][SHARED];
    assert_eq!(full_downloads(&pulled, last), 0, "{}", logs(&stack));
    for ns in [&ns_a, &ns_b] {
        let want = (SHARED + 1, SHARED + 1);
        assert_eq!(committed_in(&stack.containerd, ns), want, "namespace {ns}");
    }
    let log = logs(&stack);
    for blob in &all_blobs {
        assert_eq!(
            opens(&log, blob),
            1,
            "blob {blob} is still opened once: {log}"
        );
    }

    let metrics = scrape(address);
    assert_eq!(
        fallbacks(&metrics),
        Vec::<String>::new(),
        "{}",
        logs(&stack)
    );
    eprintln!("{prefix}: pulls done in {:?}", started.elapsed());

    prepare_races_remove(registry, &references[0], &shared[1], manager);
    eprintln!("fleet test ({prefix}) took {:?}", started.elapsed());
}

/// ctr-remote's labels for layer `base` of `reference`, to be committed as `target`.
fn base_labels(
    registry: &Registry,
    reference: &str,
    base: &str,
    target: &str,
) -> HashMap<String, String> {
    let manifest = registry
        .client()
        .get_manifest("fleet/app0", "esgz")
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let layers = json["layers"].as_array().unwrap();
    let layer = layers.iter().find(|l| l["digest"] == base).unwrap();
    let toc = layer["annotations"][estargz::TOC_DIGEST_ANNOTATION]
        .as_str()
        .unwrap();
    [
        ("containerd.io/snapshot.ref", target),
        ("containerd.io/snapshot/remote/stargz.reference", reference),
        ("containerd.io/snapshot/remote/stargz.digest", base),
        (estargz::TOC_DIGEST_ANNOTATION, toc),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A second daemon (no containerd: its garbage collector would remove snapshots it did
/// not make) on the same registry, and what it leaves behind: killed and unmounted on drop.
struct RaceDaemon {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl RaceDaemon {
    fn log(&self) -> String {
        let manager = self.dir.path().join("root/fuse-manager.log");
        let manager = std::fs::read_to_string(manager).unwrap_or_default();
        format!("{}{manager}", self.daemon.log_text())
    }
}

impl Drop for RaceDaemon {
    fn drop(&mut self) {
        self.daemon.kill();
        common::kill_fuse_manager(&self.dir.path().join("root"));
        let _ = testkit::mounts::unmount_all_under(self.dir.path());
    }
}

/// Straight over a daemon's socket (as containerd would send them): the base blob is
/// committed remote as `keep`, and as `target`; then, round after round, a Remove of
/// `target` and two Prepares of it are sent at the same moment. Every Prepare answers
/// AlreadyExists (never ordinary mounts: a fallback), no active snapshot is left behind,
/// `target` when it exists is remote, the blob is opened once for all its mounts, and
/// after the rounds every mount (`keep`'s, which the others shared the layer with, and
/// `target`'s) serves the right bytes.
fn prepare_races_remove(registry: &Registry, reference: &str, base: &str, manager: bool) {
    let dir = tempfile::Builder::new().prefix("flr-").tempdir().unwrap();
    let config = format!(
        "[remote]\nplain_http = [\"{}\"]\n[background_fetch]\nenable = false\n\
         [fuse]\nmanager = {manager}\n",
        registry.host()
    );
    let daemon = Daemon::start_with_config(dir.path(), &config);
    let race = RaceDaemon { daemon, dir };
    let target = "fleet-race-base";
    let labels = base_labels(registry, reference, base, target);
    let keep = base_labels(registry, reference, base, "fleet-keep");
    let ns = "fleet-race";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&race.daemon.socket).await;
        let prepare = |key: String, labels: HashMap<String, String>| {
            let mut client = client.clone();
            async move {
                let request = pb::PrepareSnapshotRequest {
                    key,
                    labels,
                    ..Default::default()
                };
                client.prepare(in_namespace(request, ns)).await
            }
        };
        let remove = || {
            let mut client = client.clone();
            async move {
                let request = pb::RemoveSnapshotRequest {
                    key: target.to_owned(),
                    ..Default::default()
                };
                client.remove(in_namespace(request, ns)).await
            }
        };
        let stat = || {
            let mut client = client.clone();
            async move {
                let request = pb::StatSnapshotRequest {
                    key: target.to_owned(),
                    ..Default::default()
                };
                client.stat(in_namespace(request, ns)).await
            }
        };
        for (key, labels) in [("race-keep", keep), ("race-first", labels.clone())] {
            let status = prepare(key.into(), labels).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status}");
        }
        for round in 0..RACE_ROUNDS {
            let (removed, one, two) = tokio::join!(
                remove(),
                prepare(format!("race-{round}-a"), labels.clone()),
                prepare(format!("race-{round}-b"), labels.clone()),
            );
            for (name, prepared) in [("a", one), ("b", two)] {
                let status = prepared.map(|r| r.into_inner().mounts).unwrap_err();
                let code = status.code();
                assert_eq!(
                    code,
                    tonic::Code::AlreadyExists,
                    "round {round} {name}: {status}: {}",
                    race.log()
                );
            }
            // The layer exists before the round, so the Remove finds it whatever the order.
            removed.unwrap_or_else(|status| panic!("round {round}: remove: {status}"));
            match stat().await {
                Ok(info) => {
                    let info = info.into_inner().info.unwrap();
                    assert!(
                        info.labels.contains_key("containerd.io/snapshot/remote"),
                        "round {round}"
                    );
                }
                Err(status) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::NotFound,
                        "round {round}: {status}"
                    );
                    let again = prepare(format!("race-{round}-again"), labels.clone()).await;
                    let status = again.unwrap_err();
                    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status}");
                }
            }
            let mut c = client.clone();
            let listed = c
                .list(in_namespace(pb::ListSnapshotsRequest::default(), ns))
                .await
                .unwrap();
            let mut stream = listed.into_inner();
            let mut names = Vec::new();
            while let Some(page) = stream.message().await.unwrap() {
                names.extend(page.info.into_iter().map(|i| i.name));
            }
            names.sort();
            assert_eq!(
                names,
                ["fleet-keep", target],
                "round {round}: no active snapshot is left"
            );
        }
    });
    let log = race.log();
    assert_eq!(
        log.matches("containerd pulls").count(),
        0,
        "no fallback: {log}"
    );
    assert_eq!(
        opens(&log, base),
        1,
        "one opening serves every mount: {log}"
    );
    let mounts = testkit::mounts::mounts_under(&race.dir.path().join("root/snapshots")).unwrap();
    assert_eq!(
        mounts.len(),
        2,
        "keep and target are mounted, nothing else: {mounts:?}"
    );
    let want = std::fs::read(mounts[0].join("common/big.bin")).unwrap();
    assert!(want == big_text());
    for mount in &mounts {
        let text = std::fs::read_to_string(mount.join("common/7/49.txt")).unwrap();
        assert_eq!(text, "common file 7/49\n", "{}", mount.display());
        assert!(std::fs::read(mount.join("common/big.bin")).unwrap() == want);
    }
}

#[test]
fn images_sharing_base_layers_pulled_at_once_stay_lazy() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let started = Instant::now();
    let registry = Registry::start().unwrap();
    let references = push_images(&registry);
    eprintln!(
        "built and converted {} images in {:?}",
        IMAGES + 1,
        started.elapsed()
    );
    for manager in [false, true] {
        fleet(&registry, &references, manager);
    }
}
