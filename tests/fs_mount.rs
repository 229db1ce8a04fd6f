//! Mounts an eStargz layer built in code through `fs::LayerFs` (real FUSE) and compares
//! it file by file with the same tar unpacked on disk by GNU tar; stacks it under
//! overlayfs; checks read errors and that slow reads do not block metadata.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use estargz::testutil::{pseudo_random_bytes, tar_listing, EntrySpec, LongNames, TarBuilder};
use estargz::{EntryId, EntryType, Index, Reader, WriterOptions};
use estargz_snapshotter::lazy::fs::{self, LayerContent, MountHandle, MountOptions};
use futures::future::BoxFuture;
use sha2::{Digest as _, Sha256};

const CHUNK_SIZE: u64 = 64 << 10;
const LONG_DIR: &str = "long-directory-name-that-goes-on-and-on-for-quite-a-while-0123456789";
const LONG_FILE: &str =
    "a-file-whose-name-alone-is-also-rather-long-abcdefghijklmnopqrstuvwxyz.txt";

/// A layer held in memory: reads decompress and verify chunks with `estargz::Reader`.
struct MemContent {
    reader: Arc<Reader<Vec<u8>>>,
    failing: BTreeSet<EntryId>,
    slow: BTreeMap<EntryId, Duration>,
    /// The longest read asked for so far.
    largest_read: Arc<AtomicU32>,
}

impl MemContent {
    fn new(blob: Vec<u8>) -> Self {
        Self {
            reader: Arc::new(Reader::open(blob, None).expect("open blob")),
            failing: BTreeSet::new(),
            slow: BTreeMap::new(),
            largest_read: Arc::new(AtomicU32::new(0)),
        }
    }

    fn id(&self, path: &str) -> EntryId {
        self.reader.index().lookup(path).expect(path)
    }
}

fn read_range(
    reader: &Reader<Vec<u8>>,
    file: EntryId,
    offset: u64,
    len: u32,
) -> std::io::Result<Vec<u8>> {
    let end = offset + u64::from(len);
    let mut out = Vec::with_capacity(len as usize);
    for chunk in reader.index().chunks(file) {
        let chunk_end = chunk.file_offset + chunk.size;
        if chunk_end <= offset || chunk.file_offset >= end {
            continue;
        }
        let bytes = reader.read_chunk(chunk).map_err(std::io::Error::other)?;
        let from = offset.max(chunk.file_offset) - chunk.file_offset;
        let to = end.min(chunk_end) - chunk.file_offset;
        out.extend_from_slice(&bytes[from as usize..to as usize]);
    }
    Ok(out)
}

impl LayerContent for MemContent {
    fn index(&self) -> &Index {
        self.reader.index()
    }

    fn read(
        &self,
        file: EntryId,
        offset: u64,
        len: u32,
    ) -> BoxFuture<'static, std::io::Result<Vec<u8>>> {
        let reader = Arc::clone(&self.reader);
        let fail = self.failing.contains(&file);
        let delay = self.slow.get(&file).copied();
        self.largest_read.fetch_max(len, Ordering::Relaxed);
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if fail {
                return Err(std::io::Error::other("injected read failure"));
            }
            read_range(&reader, file, offset, len)
        })
    }
}

/// Why these tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string));
    if uid.as_deref() != Some("0") {
        return Some("not running as root".into());
    }
    None
}

macro_rules! require_fuse {
    () => {
        if let Some(reason) = missing_prerequisite() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

fn fixture_tar() -> Vec<u8> {
    let mut tar = TarBuilder::new();
    let at = |spec: EntrySpec, t: u64| spec.mtime(t);
    tar.entry(at(EntrySpec::new("etc", EntryType::Dir), 1_100_000_000))
        .entry(at(
            EntrySpec::new("etc/hosts", EntryType::Reg).content(b"127.0.0.1 localhost\n"),
            1_200_000_000,
        ))
        .hardlink("etc/hosts.hard", "etc/hosts")
        .hardlink("etc/hosts.hard2", "etc/hosts")
        .symlink("etc/link", "hosts")
        .symlink("abs", "/etc/hosts")
        .symlink("dangling", "no/such/file")
        .file("etc/empty", b"")
        .whiteout("etc", "removed")
        .entry(
            EntrySpec::new("bin", EntryType::Dir)
                .mode(0o711)
                .owner(0, 0, "root", "root"),
        )
        .entry(
            EntrySpec::new("bin/su", EntryType::Reg)
                .content(b"#!/bin/sh\n")
                .mode(0o4755),
        )
        .entry(
            EntrySpec::new("bin/sg", EntryType::Reg)
                .content(b"sg")
                .mode(0o2750)
                .owner(1000, 1001, "alice", "staff"),
        )
        .entry(EntrySpec::new("tmp", EntryType::Dir).mode(0o1777))
        .dir("dev")
        .char_device("dev/null", 1, 3)
        .block_device("dev/sda", 8, 0)
        .entry(EntrySpec::new("dev/big", EntryType::Char).device(200, 0x12345))
        .fifo("dev/fifo")
        .entry(
            EntrySpec::new("attrs", EntryType::Dir)
                .xattr("user.dir", b"on a dir")
                .xattr("trusted.dirattr", b"t"),
        )
        .entry(
            EntrySpec::new("attrs/file", EntryType::Reg)
                .content(b"with xattrs")
                .xattr("user.text", b"hello")
                .xattr("user.binary", &[0, 1, 2, 255])
                .xattr("trusted.secret", b"root only"),
        )
        .dir("opq")
        .opaque("opq")
        .file("opq/new", b"new in this layer")
        .dir("data")
        .file(
            "data/big.bin",
            &pseudo_random_bytes(7, (5 * CHUNK_SIZE + 123) as usize),
        )
        .file(
            "data/exact.bin",
            &pseudo_random_bytes(8, (2 * CHUNK_SIZE) as usize),
        )
        .dir(LONG_DIR)
        .file(&format!("{LONG_DIR}/{LONG_FILE}"), b"pax long name")
        .symlink(
            &format!("{LONG_DIR}/longlink"),
            &format!("{LONG_DIR}/{LONG_FILE}"),
        )
        .long_names(LongNames::Gnu)
        .file(&format!("{LONG_DIR}/gnu-{LONG_FILE}"), b"gnu long name")
        .file("slow", b"slow content")
        .file("broken", b"never readable");
    tar.finish()
}

fn build_blob(tar: &[u8]) -> Vec<u8> {
    let mut blob = Vec::new();
    let opts = WriterOptions {
        chunk_size: CHUNK_SIZE,
        ..WriterOptions::default()
    };
    estargz::build(tar, &mut blob, &opts).expect("build blob");
    blob
}

/// The tar unpacked by GNU tar, then whiteouts and opaque markers applied as containerd's
/// overlay applier does (char device 0:0, `trusted.overlay.opaque=y`).
fn unpack_like_overlay(tar: &[u8], dir: &Path) -> BTreeSet<PathBuf> {
    let tar_path = dir.with_extension("tar");
    std::fs::write(&tar_path, tar).expect("write tar");
    let status = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--same-owner",
            "--numeric-owner",
            "-xpf",
        ])
        .arg(&tar_path)
        .arg("-C")
        .arg(dir)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -x failed");
    let mut whiteouts = BTreeSet::new();
    for path in walk(dir) {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let Some(hidden) = name.strip_prefix(".wh.") else {
            continue;
        };
        let parent = path.parent().expect("parent").to_path_buf();
        std::fs::remove_file(&path).expect("remove marker");
        if hidden == ".wh..opq" {
            xattr::set(&parent, "trusted.overlay.opaque", b"y").expect("set opaque");
        } else {
            let target = parent.join(hidden);
            let ok = Command::new("mknod")
                .args(["-m", "000"])
                .arg(&target)
                .args(["c", "0", "0"])
                .status();
            assert!(ok.expect("run mknod").success(), "mknod failed");
            whiteouts.insert(target.strip_prefix(dir).expect("relative").to_path_buf());
        }
    }
    set_dir_mtimes(tar, dir);
    whiteouts
}

/// Sets directory mtimes from the tar headers: GNU tar leaves directories that hold
/// symlinks with the extraction time, and the marker rewrite above touches others.
fn set_dir_mtimes(tar: &[u8], dir: &Path) {
    for (name, entry) in tar_listing(tar) {
        if entry.kind == '5' {
            let mtime = UNIX_EPOCH + Duration::from_secs(entry.mtime);
            let file = std::fs::File::open(dir.join(&name)).expect("open dir");
            file.set_modified(mtime).expect("set dir mtime");
        }
    }
}

/// Every path under `root` (not following symlinks), parents before children.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        names.sort();
        for path in names {
            if std::fs::symlink_metadata(&path).expect("lstat").is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sha256(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    format!("{:x}", Sha256::digest(&data))
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let names = xattr::list(path).expect("listxattr");
    names
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("security."))
        .map(|n| {
            let value = xattr::get(path, &n).expect("getxattr").unwrap_or_default();
            (n, value)
        })
        .collect()
}

struct Mounted {
    handle: Option<MountHandle>,
    dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl Mounted {
    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.unmount().expect("unmount");
        }
    }
}

fn mount(content: MemContent, options: MountOptions) -> Mounted {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    let handle =
        fs::mount(&mnt, Arc::new(content), runtime.handle().clone(), &options).expect("mount");
    Mounted {
        handle: Some(handle),
        dir,
        _runtime: runtime,
    }
}

#[test]
fn mounted_layer_matches_unpacked_tar() {
    require_fuse!();
    let tar = fixture_tar();
    let mounted = mount(MemContent::new(build_blob(&tar)), MountOptions::default());
    let mnt = mounted.path();
    let disk = mounted.dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir disk");
    let whiteouts = unpack_like_overlay(&tar, &disk);
    assert_eq!(whiteouts, BTreeSet::from([PathBuf::from("etc/removed")]));

    assert_eq!(listing(&mnt), listing(&disk), "root listing");
    let mut inodes: HashMap<u64, u64> = HashMap::new();
    let paths = walk(&disk);
    assert!(paths.len() > 25, "fixture has {} paths", paths.len());
    for disk_path in paths {
        let rel = disk_path
            .strip_prefix(&disk)
            .expect("relative")
            .to_path_buf();
        let fuse_path = mnt.join(&rel);
        let want = std::fs::symlink_metadata(&disk_path).expect("lstat disk");
        let got = std::fs::symlink_metadata(&fuse_path)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", rel.display()));
        let what = rel.display();
        assert_eq!(got.mode(), want.mode(), "{what}: mode");
        assert_eq!(got.rdev(), want.rdev(), "{what}: rdev");
        if whiteouts.contains(&rel) {
            continue;
        }
        assert_eq!(
            (got.uid(), got.gid()),
            (want.uid(), want.gid()),
            "{what}: owner"
        );
        assert_eq!(got.mtime(), want.mtime(), "{what}: mtime");
        assert_eq!(got.nlink(), want.nlink(), "{what}: nlink");
        let ft = want.file_type();
        if !ft.is_dir() {
            assert_eq!(got.size(), want.size(), "{what}: size");
        }
        if ft.is_symlink() {
            assert_eq!(
                std::fs::read_link(&fuse_path).ok(),
                std::fs::read_link(&disk_path).ok(),
                "{what}"
            );
            continue;
        }
        assert_eq!(xattrs(&fuse_path), xattrs(&disk_path), "{what}: xattrs");
        if ft.is_dir() {
            assert_eq!(listing(&fuse_path), listing(&disk_path), "{what}: listing");
        } else if ft.is_file() {
            assert_eq!(sha256(&fuse_path), sha256(&disk_path), "{what}: content");
            assert_eq!(got.blocks(), got.size().div_ceil(512), "{what}: blocks");
            // Hardlinked names share one inode on both sides.
            let fuse_ino = *inodes.entry(want.ino()).or_insert(got.ino());
            assert_eq!(fuse_ino, got.ino(), "{what}: hardlink inode");
        }
    }
    // The comparison above is only as good as what the disk side restored: pin it down.
    let file_attrs = xattrs(&mnt.join("attrs/file"));
    let names: Vec<&str> = file_attrs.keys().map(String::as_str).collect();
    assert_eq!(names, ["trusted.secret", "user.binary", "user.text"]);
    assert_eq!(file_attrs["user.binary"], [0, 1, 2, 255]);
    let big_dev = std::fs::symlink_metadata(mnt.join("dev/big")).expect("dev/big");
    assert_eq!(big_dev.rdev(), (200 << 8) | 0x45 | (0x123 << 20));
    let setuid = std::fs::symlink_metadata(mnt.join("bin/su")).expect("bin/su");
    assert_eq!(setuid.mode(), 0o104755);
    let hosts = std::fs::metadata(mnt.join("etc/hosts")).expect("hosts");
    assert_eq!(hosts.nlink(), 3);
    assert_eq!(
        std::fs::metadata(mnt.join("etc/hosts.hard2"))
            .expect("hard2")
            .ino(),
        hosts.ino()
    );
    for hidden in [
        ".prefetch.landmark",
        ".no.prefetch.landmark",
        "stargz.index.json",
        "opq/.wh..wh..opq",
        "etc/.wh.removed",
    ] {
        assert!(
            std::fs::symlink_metadata(mnt.join(hidden)).is_err(),
            "{hidden} is hidden"
        );
    }
    assert_eq!(
        xattr::get(mnt.join("opq"), "trusted.overlay.opaque").expect("getxattr"),
        Some(b"y".to_vec())
    );
    assert_eq!(
        xattr::get(mnt.join("opq"), "user.overlay.opaque").expect("getxattr"),
        None
    );
}

#[test]
fn userxattr_option_marks_opaque_dirs_for_user_namespace_overlays() {
    require_fuse!();
    let content = MemContent::new(build_blob(&fixture_tar()));
    let options = MountOptions {
        userxattr: true,
        ..MountOptions::default()
    };
    let mounted = mount(content, options);
    let opq = mounted.path().join("opq");
    assert_eq!(
        xattr::get(&opq, "user.overlay.opaque").expect("getxattr"),
        Some(b"y".to_vec())
    );
}

/// Unmounts a kernel mount (the overlay) when dropped, also when an assertion fails.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.0).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("umount {} failed", self.0.display());
        }
    }
}

#[test]
fn overlayfs_stacks_on_the_mounted_layer() {
    require_fuse!();
    let mounted = mount(
        MemContent::new(build_blob(&fixture_tar())),
        MountOptions::default(),
    );
    let base = mounted.dir.path().join("base");
    let merged = mounted.dir.path().join("merged");
    for (path, content) in [
        ("etc/removed", "old"),
        ("etc/kept", "kept"),
        ("opq/old", "hidden"),
    ] {
        let file = base.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, content).expect("write");
    }
    std::fs::create_dir(&merged).expect("mkdir merged");
    let lowerdir = format!("lowerdir={}:{}", mounted.path().display(), base.display());
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &lowerdir])
        .arg(&merged)
        .status()
        .expect("run mount");
    if !status.success() {
        eprintln!("skipping: overlay mount failed (kernel without overlayfs?)");
        return;
    }
    let _overlay = Unmounter(merged.clone());
    assert!(
        !merged.join("etc/removed").exists(),
        "whited-out file is gone"
    );
    assert_eq!(
        std::fs::read_to_string(merged.join("etc/kept"))
            .ok()
            .as_deref(),
        Some("kept")
    );
    assert_eq!(
        listing(&merged.join("opq")),
        ["new"],
        "opaque dir hides lower contents"
    );
    assert_eq!(
        sha256(&merged.join("data/big.bin")),
        sha256(&mounted.path().join("data/big.bin"))
    );
}

#[test]
fn read_errors_reach_the_reader_as_eio() {
    require_fuse!();
    let mut content = MemContent::new(build_blob(&fixture_tar()));
    content.failing.insert(content.id("broken"));
    let mounted = mount(content, MountOptions::default());
    let error = std::fs::read(mounted.path().join("broken")).expect_err("read must fail");
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    assert_eq!(
        std::fs::read(mounted.path().join("etc/hosts")).expect("other files read"),
        b"127.0.0.1 localhost\n"
    );
}

#[test]
fn slow_reads_do_not_block_metadata() {
    require_fuse!();
    let delay = Duration::from_secs(3);
    let mut content = MemContent::new(build_blob(&fixture_tar()));
    content.slow.insert(content.id("slow"), delay);
    // One FUSE thread: had the read blocked it, every stat below would wait for it.
    let options = MountOptions {
        threads: 1,
        ..MountOptions::default()
    };
    let mounted = mount(content, options);
    let slow_path = mounted.path().join("slow");
    let started = Instant::now();
    let reader = std::thread::spawn(move || std::fs::read(slow_path));
    std::thread::sleep(Duration::from_millis(300));
    for path in [
        "etc/hosts",
        "bin/su",
        "dev/null",
        "data/big.bin",
        "attrs/file",
    ] {
        let meta = std::fs::symlink_metadata(mounted.path().join(path)).expect("stat");
        assert!(meta.mode() != 0, "{path}");
    }
    let listed = listing(&mounted.path().join("etc"));
    assert!(listed.contains(&"hosts".to_string()));
    // The slow read takes `delay` from after `started`: metadata answered sooner than
    // that cannot have waited for it (any tighter bound only measures machine load).
    assert!(
        started.elapsed() < delay,
        "metadata waited for the read: {:?}",
        started.elapsed()
    );
    assert!(!reader.is_finished(), "slow read still in flight");
    let data = reader.join().expect("reader thread").expect("slow read");
    assert_eq!(data, b"slow content");
    assert!(started.elapsed() >= delay);
}

/// Scale, not speed: every entry of a 10k-file directory is listed and stat'ed once
/// (walk speed against local disk is `cargo bench --bench metadata`).
#[test]
fn large_directory_lists_and_stats() {
    require_fuse!();
    const FILES: usize = 10_000;
    let mut tar = TarBuilder::new();
    tar.dir("many");
    for i in 0..FILES {
        tar.file(&format!("many/file{i:05}"), b"x");
    }
    let mounted = mount(
        MemContent::new(build_blob(&tar.finish())),
        MountOptions::default(),
    );
    let mut sizes = 0;
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(mounted.path().join("many")).expect("read_dir") {
        let entry = entry.expect("entry");
        sizes += entry.metadata().expect("stat").len();
        names.insert(entry.file_name());
    }
    assert_eq!(
        (names.len(), sizes),
        (FILES, FILES as u64),
        "each name once"
    );
    let statfs = Command::new("stat")
        .args(["-f", "-c", "%b %c %S"])
        .arg(mounted.path())
        .output()
        .expect("run stat -f");
    let statfs = String::from_utf8_lossy(&statfs.stdout).trim().to_string();
    // One 4 KiB block per one-byte file; files = entries including the root and `many`.
    assert_eq!(statfs, format!("{FILES} {} 4096", FILES + 2));
}

#[test]
fn sequential_reads_come_in_large_requests() {
    require_fuse!();
    let data = pseudo_random_bytes(5, 8 << 20);
    let tar = TarBuilder::new().file("big", &data).finish();
    for (read_ahead_kb, knob, largest) in [(1024, "1024", 1 << 20), (0, "128", 128 << 10)] {
        let content = MemContent::new(build_blob(&tar));
        let largest_read = content.largest_read.clone();
        let options = MountOptions {
            read_ahead_kb,
            ..MountOptions::default()
        };
        let mounted = mount(content, options);
        let dev = std::fs::metadata(mounted.path()).expect("stat mount").dev();
        let set = std::fs::read_to_string(fs::readahead::knob_of(dev)).expect("read knob");
        assert_eq!(set.trim(), knob, "read_ahead_kb = {read_ahead_kb}");
        let got = std::fs::read(mounted.path().join("big")).expect("read big");
        assert!(got == data, "content");
        let seen = largest_read.load(Ordering::Relaxed);
        assert_eq!(
            seen, largest,
            "largest request with read_ahead_kb = {read_ahead_kb}"
        );
    }
}
