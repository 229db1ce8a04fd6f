//! Helpers for tests that stack a registry, containerd and our daemon: the proxy-plugin
//! config, converting images with the converter library, and reading snapshot labels.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use estargz_convert::client::{build_client, TransportOptions};
use estargz_convert::convert::{convert, ConvertOptions, Endpoints};
use estargz_convert::location::Location;
use estargz_convert::platform::PlatformFilter;
use estargz_convert::progress::{Mode, Progress};
use estargz_convert::record::Prioritized;
use estargz_convert::store::Store;
use testkit::{BuiltImage, Containerd, ContainerdOptions, DataFile, FaultProxy, Registry};

use super::Daemon;

/// The remote label as `ctr snapshots info` prints it (other labels share its prefix).
pub const REMOTE_LABEL: &str = "\"containerd.io/snapshot/remote\": \"remote snapshot\"";

/// containerd config text registering our daemon at `socket` as proxy plugin `stargz`.
pub fn proxy_plugin(socket: &Path) -> String {
    format!(
        "\n[proxy_plugins]\n  [proxy_plugins.stargz]\n    type = \"snapshot\"\n    address = \"{}\"\n",
        socket.display()
    )
}

/// Converts `src` to eStargz at `dst` (both in a registry) with the converter library.
pub fn convert_to_estargz(src: &str, dst: &str) {
    convert_to_estargz_prioritized(src, dst, &[]);
}

/// Like [`convert_to_estargz`], writing the `prioritized` files first in every layer.
pub fn convert_to_estargz_prioritized(src: &str, dst: &str, prioritized: &[&str]) {
    let list_dir = tempfile::tempdir().unwrap();
    let list = list_dir.path().join("prioritized.txt");
    std::fs::write(&list, prioritized.join("\n")).unwrap();
    convert_with(src, dst, Prioritized::load(Some(&list), &[]).unwrap());
}

/// Converts `src` to eStargz at `dst` with `prioritized` files first, as the converter's
/// `--prioritized-files` / `--record-in` / `--record-from` options give them.
pub fn convert_with(src: &str, dst: &str, prioritized: Prioritized) {
    convert_authenticated(src, dst, prioritized, None);
}

/// Like [`convert_with`], with registry credentials from the docker config file
/// `docker_config` (None: the default file).
pub fn convert_authenticated(
    src: &str,
    dst: &str,
    prioritized: Prioritized,
    docker_config: Option<&Path>,
) {
    convert_full(
        src,
        dst,
        prioritized,
        docker_config,
        estargz::writer::DEFAULT_CHUNK_SIZE,
    );
}

/// Like [`convert_to_estargz`] with chunks of `chunk_size` bytes, so that files of a few
/// MiB span many chunks.
pub fn convert_chunked(src: &str, dst: &str, chunk_size: u64) {
    let none = Prioritized::load(None, &[]).unwrap();
    convert_full(src, dst, none, None, chunk_size);
}

fn convert_full(
    src: &str,
    dst: &str,
    prioritized: Prioritized,
    docker_config: Option<&Path>,
    chunk_size: u64,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let work = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let src: Location = src.parse().unwrap();
        let dst: Location = dst.parse().unwrap();
        let references: Vec<_> = [&src, &dst]
            .into_iter()
            .filter_map(|l| match l {
                Location::Registry(r) => Some(r),
                Location::Layout { .. } => None,
            })
            .collect();
        let transport = TransportOptions {
            plain_http: true,
            docker_config: docker_config.map(Path::to_path_buf),
            ..TransportOptions::default()
        };
        let client = build_client(&transport, &references).await.unwrap();
        let src_store = Store::source(&src, &client).unwrap();
        let dst_store = Store::destination(&dst, &client).unwrap();
        let options = ConvertOptions {
            compression: estargz::Compression::DEFAULT_GZIP,
            chunk_size,
            force: false,
            platforms: PlatformFilter::default(),
            prioritized,
            layer_jobs: 1,
            writer_threads: 1,
        };
        let endpoints = Endpoints {
            src: &src_store,
            dst: &dst_store,
            destination_name: dst.to_string(),
            work_dir: work.path(),
        };
        let progress = Progress::new(Mode::Log);
        let cancel = Arc::new(AtomicBool::new(false));
        convert(endpoints, &options, &progress, cancel)
            .await
            .unwrap();
    });
}

/// Committed snapshot keys of the stargz snapshotter, and how many carry the remote label.
pub fn committed_snapshots(containerd: &Containerd) -> (usize, usize) {
    let listed = containerd
        .ctr(["snapshots", "--snapshotter", "stargz", "ls"])
        .unwrap()
        .stdout;
    let keys: Vec<String> = listed
        .lines()
        .skip(1)
        .filter(|line| line.contains("Committed"))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    let remote = keys
        .iter()
        .filter(|key| {
            let info = containerd
                .ctr(["snapshots", "--snapshotter", "stargz", "info", key.as_str()])
                .unwrap()
                .stdout;
            info.contains(REMOTE_LABEL)
        })
        .count();
    (keys.len(), remote)
}

/// A docker-registry, our daemon (plain HTTP to that registry) and a containerd using the
/// daemon as proxy plugin `stargz`. Fields drop in order: containerd, the daemon, the
/// registry, then the directory.
pub struct LazyStack {
    pub containerd: Containerd,
    pub daemon: Daemon,
    pub registry: Registry,
    pub dir: tempfile::TempDir,
}

impl LazyStack {
    /// The stdout of `sh -c SCRIPT` in a container of `reference`, through our
    /// snapshotter (empty when it failed).
    pub fn run_script(&self, reference: &str, prefix: &str, script: &str) -> String {
        let id = testkit::unique_id(prefix);
        let run = [
            "run",
            "--rm",
            "--snapshotter",
            "stargz",
            reference,
            &id,
            "/bin/sh",
            "-c",
            script,
        ];
        (self.containerd.ctr(run))
            .map(|o| o.stdout)
            .unwrap_or_default()
    }

    /// Starts the three under a fresh temp dir named with `prefix` (keep it short: the
    /// daemon's socket path must fit in sun_path).
    pub fn start(prefix: &str) -> LazyStack {
        LazyStack::start_with_config(prefix, "")
    }

    /// Like [`LazyStack::start`], with `extra_config` (TOML tables) for the daemon.
    pub fn start_with_config(prefix: &str, extra_config: &str) -> LazyStack {
        let registry = Registry::start().unwrap();
        LazyStack::start_on(registry, &[], prefix, extra_config)
    }

    /// Like [`LazyStack::start_with_config`], with a fault proxy in front of the registry
    /// (images pulled through `proxy.host()` reach blobs through it).
    pub fn start_behind_proxy(prefix: &str, extra_config: &str) -> (LazyStack, FaultProxy) {
        let registry = Registry::start().unwrap();
        let proxy = FaultProxy::start(&registry.host()).unwrap();
        let stack = LazyStack::start_on(registry, &[proxy.host()], prefix, extra_config);
        (stack, proxy)
    }

    /// The daemon (plain HTTP to `registry` and `more_hosts`) and containerd.
    fn start_on(
        registry: Registry,
        more_hosts: &[String],
        prefix: &str,
        extra_config: &str,
    ) -> LazyStack {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let hosts: Vec<String> = std::iter::once(registry.host())
            .chain(more_hosts.iter().cloned())
            .map(|h| format!("\"{h}\""))
            .collect();
        let config = format!(
            "[remote]\nplain_http = [{}]\n{extra_config}",
            hosts.join(", ")
        );
        let daemon = Daemon::start_with_config(dir.path(), &config);
        let containerd = Containerd::start_with(ContainerdOptions {
            extra_config: proxy_plugin(&daemon.socket),
            ..ContainerdOptions::default()
        })
        .unwrap();
        LazyStack {
            containerd,
            daemon,
            registry,
            dir,
        }
    }
}

/// The command line of [`rpull`], to run on another thread (and be interrupted).
pub fn rpull_command(containerd: &Containerd, reference: &str) -> std::process::Command {
    let mut command = std::process::Command::new(testkit::containerd::CTR_REMOTE_BIN);
    command
        .arg("--address")
        .arg(containerd.address())
        .args(["--namespace", containerd.namespace()])
        .args(["image", "rpull", "--plain-http", "--snapshotter", "stargz"])
        .arg(reference);
    command
}

/// `ctr-remote image rpull --plain-http --snapshotter stargz REFERENCE` through `containerd`.
pub fn rpull(containerd: &Containerd, reference: &str) {
    let args = [
        "image",
        "rpull",
        "--plain-http",
        "--snapshotter",
        "stargz",
        reference,
    ];
    containerd.ctr_remote(args).unwrap();
}

impl Drop for LazyStack {
    /// A failed test kills the daemon without unmounting: clean up so the directory can go.
    fn drop(&mut self) {
        self.daemon.kill();
        super::kill_fuse_manager(&self.dir.path().join("root"));
        let _ = testkit::mounts::unmount_all_under(self.dir.path());
    }
}

/// busybox, 24 MiB of incompressible data (from `seed`) and `/data/small.txt` holding
/// `text`, which the image's command prints.
pub fn image_with_data(text: &str, seed: u64) -> BuiltImage {
    let mut small = testkit::LayerBuilder::new();
    small.dir("data", 0o755).unwrap();
    small
        .file("data/small.txt", text.as_bytes(), 0o644)
        .unwrap();
    let big = [
        DataFile::new("data/big/one.bin", 8 << 20, 0),
        DataFile::new("data/big/two.bin", 8 << 20, 0),
        DataFile::new("data/big/three.bin", 8 << 20, 0),
    ];
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(testkit::data_layer(&big, seed).unwrap())
        .layer(small.finish().unwrap())
        .cmd(&["/bin/cat", "/data/small.txt"])
        .build()
        .unwrap()
}

/// busybox and `count` small files (`data/f<i>.txt`, `base + i` bytes, `text_percent` %
/// text, content from `seed`); the entrypoint reads one new file every `pause` seconds
/// and prints `ok` or `FAIL <i>` for each, then `done`, so most files are opened for the
/// first time while a test does something to the daemon.
pub fn slow_reader_image(
    count: usize,
    base: usize,
    text_percent: u8,
    pause: &str,
    seed: u64,
) -> BuiltImage {
    let files: Vec<DataFile> = (0..count)
        .map(|i| DataFile::new(&format!("data/f{i}.txt"), base + i, text_percent))
        .collect();
    let script = format!(
        "i=0; while [ $i -lt {count} ]; do \
           if cat /data/f$i.txt >/dev/null; then echo ok; else echo FAIL $i; fi; \
           i=$((i+1)); sleep {pause}; \
         done; echo done"
    );
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(testkit::data_layer(&files, seed).unwrap())
        .cmd(&["/bin/sh", "-c", &script])
        .build()
        .unwrap()
}
