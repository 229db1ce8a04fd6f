//! Load: ten different images pulled lazily and started at once (many apps scaling out
//! together on one node), then a bounded soak of random reads across all their FUSE
//! mounts while the registry flaps. Every read returns the right bytes or EIO, every file
//! reads correctly once the registry is back, and the daemon's memory stays bounded.

mod common;
use common::stack::{committed_snapshots, convert_chunked, rpull, LazyStack};

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use testkit::{unique_id, BuiltImage, Registry};

const IMAGES: usize = 10;
/// Each image's data file: 16 chunks of [`CHUNK`], 40 MiB over all images.
const BLOB_BYTES: usize = 4 << 20;
const CHUNK: u64 = 256 << 10;
const SOAK: Duration = Duration::from_secs(24);
const READERS: usize = 4;
/// Seconds a read may wait for the network before EIO (short, so flaps fail fast).
const READ_TIMEOUT_SECS: u64 = 2;
/// Caches together half the 40 MiB of data: chunks keep being evicted and fetched
/// again, so reads hit the registry all through the soak, flaps included.
const MEMORY_CACHE: u64 = 8 << 20;
const DISK_CACHE: u64 = 12 << 20;
/// Bound on the daemon's RSS during the soak. Measured: 56-64 MiB all through (8 MiB chunk
/// cache, eleven mounted layers with two FUSE threads each, four readers, the tokio
/// pool). 160 MiB leaves a wide margin yet fails if each FUSE thread's 16 MiB request
/// buffer becomes resident again (365 MiB before `malloc::fix_mmap_threshold`) or if the
/// cache outgrows `memory_bytes` (the data is 40 MiB).
const RSS_BOUND_KIB: u64 = 160 << 10;
/// Allowed growth of the peak RSS from the first to the second half of the soak
/// (measured: none; the samples wander by about 8 MiB).
const RSS_GROWTH_KIB: u64 = 24 << 10;
const EIO: i32 = 5;

fn marker(i: usize) -> String {
    format!("load image {i}")
}

fn blob(i: usize) -> Vec<u8> {
    testkit::image::content::random(0x10ad + i as u64, BLOB_BYTES)
}

/// busybox (shared by all ten, as a common base image is) and a data layer of its own.
fn image(i: usize) -> BuiltImage {
    let mut data = testkit::LayerBuilder::new();
    data.dir("data", 0o755).unwrap();
    let line = format!("{}\n", marker(i));
    data.file("data/marker.txt", line.as_bytes(), 0o644)
        .unwrap();
    data.file("data/blob.bin", &blob(i), 0o644).unwrap();
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(data.finish().unwrap())
        .cmd(&[
            "/bin/sh",
            "-c",
            "cat /data/marker.txt; sha256sum /data/blob.bin",
        ])
        .build()
        .unwrap()
}

/// Builds, pushes and converts the ten images, each on its own thread.
fn push_images(registry: &Registry) -> Vec<String> {
    std::thread::scope(|scope| {
        let pushes: Vec<_> = (0..IMAGES)
            .map(|i| {
                scope.spawn(move || {
                    let name = format!("load/app{i}");
                    let plain = registry.push(&name, "plain", &image(i)).unwrap();
                    let esgz = registry.reference(&name, "esgz");
                    convert_chunked(&plain, &esgz, CHUNK);
                    esgz
                })
            })
            .collect();
        pushes.into_iter().map(|p| p.join().unwrap()).collect()
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Daemon config: prefer EIO to waiting, small caches, every read through the daemon
/// (passthrough would let the kernel read fully cached files on its own) and no
/// background fetch (it would make the layers local and the soak offline-proof).
fn soak_config() -> String {
    // The first keys extend LazyStack's `[remote]` table.
    format!(
        "retries = 1\ntimeout = 2\nconnect_timeout = 1\n\
         [layer]\nread_timeout = {READ_TIMEOUT_SECS}\n\
         [cache]\nmemory_bytes = {MEMORY_CACHE}\nmax_disk_bytes = {DISK_CACHE}\n\
         [fuse]\npassthrough = false\n\
         [background_fetch]\nenable = false\n"
    )
}

#[test]
fn ten_images_start_at_once_and_survive_a_flapping_registry() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let started = Instant::now();
    let mut stack = LazyStack::start_with_config("load-", &soak_config());
    let references = push_images(&stack.registry);
    eprintln!(
        "built and converted {IMAGES} images in {:?}",
        started.elapsed()
    );

    let scale_out = Instant::now();
    let outputs = pull_and_run_all(&stack, &references);
    eprintln!(
        "{IMAGES} images pulled and run at once in {:?}",
        scale_out.elapsed()
    );
    for (i, out) in outputs.iter().enumerate() {
        let sum = hex(&Sha256::digest(blob(i)));
        let want = format!("{}\n{sum}  /data/blob.bin", marker(i));
        assert_eq!(out.trim(), want, "image {i}: {}", stack.daemon.log_text());
    }
    let (committed, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(
        committed,
        IMAGES + 1,
        "ten data layers and the shared busybox"
    );
    assert_eq!(remote, committed, "every layer is a remote snapshot");

    let mounts = data_mounts(&stack.dir.path().join("root/snapshots"));
    let soak = soak(&mut stack.registry, stack.daemon.pid(), &mounts);
    let (first, second) = soak.halves();
    eprintln!(
        "soak: {} reads right, {} EIO, {} flaps; daemon peak RSS {first} KiB in the first \
         half, {second} KiB in the second",
        soak.ok, soak.eio, soak.flaps
    );
    assert!(soak.failures.is_empty(), "{:#?}", soak.failures);
    assert!(soak.flaps >= 2, "the registry flapped: {soak:?}");
    assert!(soak.eio > 0, "no read hit a registry outage: {soak:?}");
    assert!(soak.ok > soak.eio, "most reads served: {soak:?}");
    assert!(soak.peak_kib(..) < RSS_BOUND_KIB, "{:?}", soak.rss);
    assert!(
        second <= first + RSS_GROWTH_KIB,
        "RSS grew from {first} to {second} KiB between the halves of the soak"
    );

    for (i, dir) in mounts.iter().enumerate() {
        let bytes = std::fs::read(dir.join("data/blob.bin"))
            .unwrap_or_else(|e| panic!("image {i} after the soak: {e}"));
        assert!(bytes == blob(i), "image {i}: wrong bytes after the soak");
    }
    eprintln!("load test took {:?}", started.elapsed());
}

/// Pulls (`ctr-remote image rpull`) and runs (`ctr run`) every image, each on its own
/// thread, all at once; returns the outputs in image order.
fn pull_and_run_all(stack: &LazyStack, references: &[String]) -> Vec<String> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = references
            .iter()
            .map(|reference| {
                scope.spawn(move || {
                    rpull(&stack.containerd, reference);
                    let id = unique_id("load");
                    let run = ["run", "--rm", "--snapshotter", "stargz", reference, &id];
                    stack.containerd.ctr(run).unwrap().stdout
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    })
}

/// The FUSE mount holding each image's data layer, in image order (found by marker).
fn data_mounts(snapshots: &Path) -> Vec<PathBuf> {
    let mut found: Vec<Option<PathBuf>> = vec![None; IMAGES];
    for dir in testkit::mounts::mounts_under(snapshots).unwrap() {
        let Ok(text) = std::fs::read_to_string(dir.join("data/marker.txt")) else {
            continue;
        };
        let i = (0..IMAGES).find(|&i| text.trim() == marker(i)).unwrap();
        assert!(found[i].replace(dir).is_none(), "image {i} mounted twice");
    }
    found
        .into_iter()
        .enumerate()
        .map(|(i, dir)| dir.unwrap_or_else(|| panic!("no mount holds image {i}")))
        .collect()
}

/// What the soak saw.
#[derive(Debug, Default)]
struct Soak {
    ok: u64,
    eio: u64,
    flaps: u32,
    failures: Vec<String>,
    /// (seconds into the soak, daemon VmRSS in KiB).
    rss: Vec<(f64, u64)>,
}

impl Soak {
    fn peak_kib(&self, range: impl std::ops::RangeBounds<f64>) -> u64 {
        let samples = self.rss.iter().filter(|(t, _)| range.contains(t));
        samples.map(|&(_, kib)| kib).max().unwrap_or(0)
    }

    /// Peak RSS of the first and of the second half.
    fn halves(&self) -> (u64, u64) {
        let middle = SOAK.as_secs_f64() / 2.0;
        (self.peak_kib(..middle), self.peak_kib(middle..))
    }
}

/// Random reads on `mounts` for [`SOAK`] while `registry` is stopped for 2 s every 5 s
/// and the RSS of `pid` is sampled; the registry runs again at the end.
fn soak(registry: &mut Registry, pid: u32, mounts: &[PathBuf]) -> Soak {
    let expected: Vec<Vec<u8>> = (0..IMAGES).map(blob).collect();
    let (ok, eio) = (AtomicU64::new(0), AtomicU64::new(0));
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + SOAK;
    let mut soak = Soak::default();
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|seed| {
                let (expected, ok, eio) = (&expected, &ok, &eio);
                scope.spawn(move || reader(seed as u64, mounts, expected, deadline, ok, eio))
            })
            .collect();
        let sampler = scope.spawn(|| sample_rss(pid, start, &done));
        while Instant::now() + Duration::from_secs(5) < deadline {
            std::thread::sleep(Duration::from_secs(3));
            registry.stop();
            soak.flaps += 1;
            std::thread::sleep(Duration::from_secs(2));
            registry.start_again().unwrap();
        }
        for reader in readers {
            soak.failures.extend(reader.join().unwrap());
        }
        done.store(true, Ordering::Relaxed);
        soak.rss = sampler.join().unwrap();
    });
    soak.ok = ok.into_inner();
    soak.eio = eio.into_inner();
    soak
}

/// Reads random ranges of random files until `deadline`; returns what went wrong
/// (anything but the right bytes or EIO).
fn reader(
    seed: u64,
    mounts: &[PathBuf],
    expected: &[Vec<u8>],
    deadline: Instant,
    ok: &AtomicU64,
    eio: &AtomicU64,
) -> Vec<String> {
    let mut rng = testkit::image::content::SplitMix64::new(seed);
    let mut failures = Vec::new();
    while Instant::now() < deadline && failures.len() < 10 {
        let i = rng.below(IMAGES as u64) as usize;
        let len = 1 + rng.below(512 << 10) as usize;
        let offset = rng.below((BLOB_BYTES - len) as u64) as usize;
        match read_range(&mounts[i].join("data/blob.bin"), offset, len) {
            Ok(bytes) if bytes == expected[i][offset..offset + len] => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => failures.push(format!("image {i}: wrong bytes at {offset}+{len}")),
            Err(e) if e.raw_os_error() == Some(EIO) => {
                eio.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => failures.push(format!("image {i} at {offset}+{len}: {e}")),
        }
    }
    failures
}

/// Opens `path` and reads `len` bytes at `offset`, after dropping its page cache so the
/// kernel asks the daemon rather than answering from pages an earlier read left.
fn read_range(path: &Path, offset: usize, len: usize) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    testkit::pagecache::drop_pages(&file).unwrap();
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, offset as u64)?;
    Ok(bytes)
}

/// VmRSS of `pid` every 250 ms until `done`.
fn sample_rss(pid: u32, start: Instant, done: &AtomicBool) -> Vec<(f64, u64)> {
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        samples.push((start.elapsed().as_secs_f64(), kib));
        std::thread::sleep(Duration::from_millis(250));
    }
    samples
}
