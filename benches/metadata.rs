//! Metadata benchmark: a lazily mounted layer of 100,000 files against the same tree
//! unpacked on local disk, in the same run. Measures a `find`-style walk that stats every
//! entry (page and dentry caches dropped first, on both sides) and the daemon's resident
//! memory for the mounted layer (VmRSS before and after its Prepare).
//!
//! Run as root: `cargo bench --bench metadata` (FILES=100000 by default). Targets: walk at
//! most 2x local disk, RSS per mounted 100k-file layer at most 64 MiB.

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::remote::{cri_labels, prepare, pushed_estargz_layer, DaemonStack};

const PER_DIR: usize = 1000;

/// busybox-free layer: `FILES` files of 32 bytes in directories of [`PER_DIR`].
fn image(files: usize) -> testkit::BuiltImage {
    let mut layer = testkit::LayerBuilder::new();
    for d in 0..files.div_ceil(PER_DIR) {
        layer.dir(&format!("tree/d{d:03}"), 0o755).unwrap();
        for f in 0..PER_DIR.min(files - d * PER_DIR) {
            let content = format!("file {f:05} of directory {d:03}\n");
            layer
                .file(
                    &format!("tree/d{d:03}/f{f:05}.txt"),
                    content.as_bytes(),
                    0o644,
                )
                .unwrap();
        }
    }
    testkit::ImageBuilder::new()
        .layer(layer.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap()
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
}

/// Stats every entry under `dir`; returns how many and how long it took.
fn walk(dir: &Path) -> (usize, Duration) {
    drop_caches();
    let started = Instant::now();
    let mut count = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            count += 1;
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    (count, started.elapsed())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let files: usize = std::env::var("FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let built = image(files);
    let stack = DaemonStack::start("md-", "[background_fetch]\nenable = false\n");
    let layer = pushed_estargz_layer(&stack.registry, "bench/meta", &built, &[]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));
    let before = rss_kib(stack.daemon.pid());
    let labels = cri_labels(&layer, "meta-1", &layer.toc_digest);
    let started = Instant::now();
    let status = rt
        .block_on(prepare(&mut c, "bench", "extract-1", labels))
        .unwrap_err();
    let mount_time = started.elapsed();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status}");
    let after = rss_kib(stack.daemon.pid());
    let mounted = stack.fuse_mounts();
    let lazy_root = mounted[0].join("tree");
    let (lazy_count, lazy_time) = walk(&lazy_root);
    let after_walk = rss_kib(stack.daemon.pid());

    let disk = tempfile::tempdir().unwrap();
    let tar = disk.path().join("layer.tar");
    std::fs::write(&tar, &built.layers[0].tar).unwrap();
    let unpacked = disk.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let (disk_count, disk_time) = walk(&unpacked.join("tree"));
    assert_eq!(lazy_count, disk_count, "same tree");

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("\nmetadata walk of {lazy_count} entries (caches dropped), 2-core machine");
    println!("| tree | walk ms | vs local disk |");
    println!("|---|---:|---:|");
    println!("| local disk (ext4) | {:.1} | 1.00 |", ms(disk_time));
    println!(
        "| lazily mounted layer | {:.1} | {:.2} |",
        ms(lazy_time),
        lazy_time.as_secs_f64() / disk_time.as_secs_f64()
    );
    println!(
        "\nPrepare (open TOC, index, mount): {:.1} ms",
        ms(mount_time)
    );
    println!(
        "daemon VmRSS: {:.1} MiB before, {:.1} MiB after the mount (+{:.1}), {:.1} MiB after the walk",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        mib(after_walk)
    );
}
