//! A node's config.toml written for the Go reference daemon, with every key it reads
//! (tests/fixtures/reference-config.toml), and the reference's Go-style flags start the
//! real daemon: a layer whose image reference names a registry that only the file's
//! `[[resolver.host."HOST".mirrors]]` entry (plain HTTP, `insecure = true`) leads to is
//! mounted lazily and reads back exactly, `/metrics` answers on `metrics_address`, and
//! the log names the keys that have no effect here, none as unknown. With the mirror
//! entry naming the test registry itself, real containerd pulls an image through the
//! daemon and every layer is a remote snapshot.

mod common;
use common::metrics::{free_address, scrape};
use common::remote::{cri_labels, expect_remote, pushed_estargz_layer};
use common::stack::{committed_snapshots, convert_to_estargz, proxy_plugin, rpull};
use common::Daemon;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use testkit::{Prereq, Registry};

const NS: &str = "reference";
/// The image references' registry: nothing listens there; only the mirror serves.
const ORIGIN: &str = "origin.invalid:5000";

fn content() -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(17, 1 << 20)
}

fn image() -> testkit::BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer.file("data/a.bin", &content(), 0o644).unwrap();
    testkit::ImageBuilder::new()
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap()
}

/// The fixture with its placeholders filled in, written to `dir/config.toml`.
fn write_reference_config(
    dir: &Path,
    metrics: SocketAddr,
    registry: &str,
    mirror: &str,
) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-config.toml");
    let text = std::fs::read_to_string(fixture)
        .unwrap()
        .replace("@METRICS@", &metrics.to_string())
        .replace("@REGISTRY@", registry)
        .replace("@MIRROR@", mirror);
    let config = dir.join("config.toml");
    std::fs::write(&config, &text).unwrap();
    config
}

/// The reference's flags, as its systemd unit and scripts write them.
fn go_style_args(config: &Path, dir: &Path, socket: &Path) -> Vec<OsString> {
    vec![
        format!("-config={}", config.display()).into(),
        "-root".into(),
        dir.join("root").into(),
        format!("-address={}", socket.display()).into(),
        "-log-level=debug".into(),
    ]
}

/// Unmounts what the daemon left when the test ends, passed or failed.
struct Cleanup<'a>(&'a Path, Option<Daemon>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.1.take() {
            daemon.kill();
        }
        let _ = testkit::mounts::unmount_all_under(self.0);
    }
}

#[test]
fn reference_config_and_flags_start_the_daemon_and_pull_lazily() {
    testkit::require!(Prereq::DevFuse);
    let registry = Registry::start().unwrap();
    let layer = pushed_estargz_layer(&registry, "ref/app", &image(), &[]);
    let metrics = free_address();

    let dir = tempfile::Builder::new().prefix("refc-").tempdir().unwrap();
    let config = write_reference_config(dir.path(), metrics, ORIGIN, &registry.host());
    let socket = dir.path().join("run/grpc.sock");
    let args = go_style_args(&config, dir.path(), &socket);
    let daemon = Daemon::start_with_args(dir.path(), &args, socket.clone());
    let cleanup = Cleanup(dir.path(), Some(daemon));
    let daemon = cleanup.1.as_ref().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&socket));
    let mut labels = cri_labels(&layer, "layer-1", &layer.toc_digest);
    let through_origin = layer.reference.replacen(&registry.host(), ORIGIN, 1);
    labels.insert(
        "containerd.io/snapshot/cri.image-ref".to_owned(),
        through_origin,
    );
    expect_remote(&rt, &mut c, NS, "extract-1", labels);

    let mounted = testkit::mounts::mounts_under(&dir.path().join("root/snapshots")).unwrap();
    assert_eq!(mounted.len(), 1, "{}", daemon.log_text());
    let read = std::fs::read(mounted[0].join("data/a.bin")).unwrap();
    assert!(read == content(), "a.bin read through the mirror");

    let body = scrape(metrics);
    let mounts = body
        .lines()
        .find_map(|l| l.strip_prefix("estargz_lazy_mounts_total "))
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(mounts, "1");

    let log = daemon.log_text();
    for key in [
        "ipfs",
        "blob.chunk_size",
        "directory_cache.direct",
        "fuse.attr_timeout",
    ] {
        assert!(
            log.contains(&format!("config key {key} (line ")) && log.contains("no effect here"),
            "no warning naming {key}: {log}"
        );
    }
    assert!(
        log.contains(
            "config key metrics_address (line 7): the Go reference's key, read as metrics.address"
        ),
        "{log}"
    );
    assert!(!log.contains("unknown key"), "{log}");
    drop(cleanup);
}

#[test]
fn json_log_lines_name_unknown_keys_and_a_missing_named_config_stops_the_daemon() {
    let dir = tempfile::Builder::new().prefix("refj-").tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "log_level = \"info\"\n\nnosuch_key = 1\n").unwrap();
    let socket = dir.path().join("run/grpc.sock");
    let args: Vec<OsString> = vec![
        "-config".into(),
        config.clone().into(),
        format!("-root={}", dir.path().join("root").display()).into(),
        "-address".into(),
        socket.clone().into(),
        "--log-format=json".into(),
    ];
    let daemon = Daemon::start_with_args(dir.path(), &args, socket);
    daemon.wait_for_log("nosuch_key", 1, std::time::Duration::from_secs(10));
    let log = daemon.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    let warning = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("nosuch_key"))
        })
        .unwrap();
    assert_eq!(warning["level"], "WARN");
    assert_eq!(
        warning["message"],
        "config key nosuch_key (line 3): unknown key, ignored"
    );
    assert!(warning["timestamp"].is_string());
    drop(daemon);

    // A file named on the command line must exist (the default path may be missing).
    let missing = dir.path().join("missing.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_estargz-snapshotter"))
        .arg(format!("-config={}", missing.display()))
        .arg(format!("-root={}", dir.path().join("root2").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn reference_config_serves_containerd_pulls_lazily() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(Prereq::DevFuse);
    let registry = Registry::start().unwrap();
    let plain = registry.push("ref/ctr", "plain", &image()).unwrap();
    let reference = registry.reference("ref/ctr", "esgz");
    convert_to_estargz(&plain, &reference);
    let metrics = free_address();

    let dir = tempfile::Builder::new().prefix("refd-").tempdir().unwrap();
    // The mirror entry names the test registry itself: `insecure` makes it plain HTTP.
    let host = registry.host();
    let config = write_reference_config(dir.path(), metrics, &host, &host);
    let socket = dir.path().join("run/grpc.sock");
    let args = go_style_args(&config, dir.path(), &socket);
    let daemon = Daemon::start_with_args(dir.path(), &args, socket.clone());
    let cleanup = Cleanup(dir.path(), Some(daemon));
    let containerd = testkit::Containerd::start_with(testkit::ContainerdOptions {
        extra_config: proxy_plugin(&socket),
        ..testkit::ContainerdOptions::default()
    })
    .unwrap();

    rpull(&containerd, &reference);
    let (committed, remote) = committed_snapshots(&containerd);
    let log = cleanup.1.as_ref().unwrap().log_text();
    assert!(committed > 0, "{log}");
    assert_eq!(remote, committed, "every layer a remote snapshot: {log}");
    assert!(
        log.contains(&format!("remote.plain_http += \"{host}\"")),
        "{log}"
    );
    let body = scrape(metrics);
    assert!(body.contains("estargz_lazy_mounts_total"), "{body}");
    drop(containerd);
    drop(cleanup);
}
