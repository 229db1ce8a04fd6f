//! Chunk cache tests: the disk store across restarts, the disk budget and its eviction
//! order, the startup scan, paused writes after a failure, and a full disk (a tiny
//! tmpfs) under a real layer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;

const BLOCK: u64 = 4096;

fn key(n: u8) -> CacheKey {
    CacheKey::Content(Digest::from_bytes([n; 32]))
}

fn bytes(data: &[u8]) -> ChunkBytes {
    data.into()
}

fn disk_config(dir: &Path, max_disk_bytes: u64) -> CacheConfig {
    CacheConfig {
        dir: Some(dir.to_owned()),
        memory_bytes: 1 << 20,
        max_disk_bytes,
    }
}

/// A cache over `dir` whose startup scan is done.
fn scanned_cache(config: &CacheConfig) -> ChunkCache {
    let cache = ChunkCache::with_retry_after(config, Duration::from_millis(100)).expect("cache");
    cache.wait_for_scan();
    cache
}

/// Files directly in `dir` whose names are not temp files'.
fn chunk_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

#[test]
fn disk_store_survives_a_new_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = disk_config(&dir.path().join("chunks"), DEFAULT_MAX_DISK_BYTES);
    let first = ChunkCache::new(&config).expect("cache");
    first.put(key(1), bytes(b"hello"));
    drop(first);
    let second = ChunkCache::new(&config).expect("cache");
    assert_eq!(second.get_memory(&key(1), 5), None);
    assert_eq!(second.get(&key(1), 5).as_deref(), Some(&b"hello"[..]));
    assert_eq!(second.get(&key(1), 6), None, "wrong length is a miss");
    assert_eq!(second.get(&key(2), 5), None);
}

#[test]
fn a_failed_disk_write_pauses_writes_then_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chunks = dir.path().join("chunks");
    let cache = scanned_cache(&disk_config(&chunks, DEFAULT_MAX_DISK_BYTES));
    std::fs::remove_dir_all(&chunks).expect("remove dir");
    std::fs::write(&chunks, b"not a directory").expect("block dir");
    cache.put(key(1), bytes(b"abc"));
    assert_eq!(cache.get(&key(1), 3).as_deref(), Some(&b"abc"[..]));
    assert_eq!(cache.disk_write_failures(), 1);

    std::fs::remove_file(&chunks).expect("unblock");
    std::fs::create_dir(&chunks).expect("dir again");
    cache.put(key(2), bytes(b"def"));
    cache.put_disk(key(3), bytes(b"ghi"));
    assert_eq!(cache.disk_write_failures(), 1, "paused: no write tried");
    assert!(chunk_files(&chunks).is_empty());
    assert_eq!(
        cache.get(&key(3), 3).as_deref(),
        Some(&b"ghi"[..]),
        "kept in memory"
    );
    assert!(
        !cache.reserve_file("f", 1),
        "no passthrough copies while paused"
    );

    std::thread::sleep(Duration::from_millis(150));
    cache.put(key(4), bytes(b"jkl"));
    assert_eq!(chunk_files(&chunks), [key(4).file_name()], "writes resumed");
    assert_eq!(cache.disk_write_failures(), 1);
}

#[test]
fn file_names_round_trip() {
    let blob = Digest::from_bytes([7; 32]);
    let a = CacheKey::Location {
        blob,
        compressed_offset: 10,
        inner_offset: 0,
    };
    let b = CacheKey::Location {
        blob,
        compressed_offset: 10,
        inner_offset: 5,
    };
    assert_ne!(a.file_name(), b.file_name());
    assert!(key(1).file_name().starts_with("sha256-0101"));
    for k in [a, b, key(1)] {
        assert_eq!(CacheKey::from_file_name(&k.file_name()), Some(k));
    }
    let hex = "ab".repeat(32);
    let cases: &[(&str, String)] = &[
        ("upper-case hex", format!("sha256-{}", hex.to_uppercase())),
        ("short digest", "sha256-abcd".to_owned()),
        ("extra part", format!("blob-{hex}-1-2-3")),
        ("signed offset", format!("blob-{hex}-+1-2")),
        ("leading zero", format!("blob-{hex}-01-2")),
        ("temp file", format!("sha256-{hex}.tmp-1-2")),
        ("other file", "files".to_owned()),
    ];
    for (name, file) in cases {
        assert_eq!(CacheKey::from_file_name(file), None, "{name}");
    }
}

#[test]
fn disk_usage_stays_under_the_limit_evicting_the_least_recently_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = scanned_cache(&disk_config(dir.path(), 16 * BLOCK));
    let chunk = vec![1u8; 1000];
    for n in 0..16 {
        cache.put(key(n), bytes(&chunk));
    }
    assert!(
        cache.get_memory(&key(0), 1000).is_some(),
        "a memory hit counts as use"
    );
    cache.put(key(16), bytes(&chunk));
    assert!(cache.contains(&key(0), 1000));
    assert!(
        !dir.path().join(key(1).file_name()).exists(),
        "1 was oldest"
    );

    for n in 17..200 {
        cache.put(key(n), bytes(&chunk));
        assert!(cache.disk_bytes() <= 16 * BLOCK, "after chunk {n}");
    }
    let mut want: Vec<String> = (184..200).map(|n| key(n).file_name()).collect();
    want.sort();
    assert_eq!(chunk_files(dir.path()), want, "the newest 16 chunks");
    assert_eq!(cache.disk_bytes(), 16 * BLOCK);
    assert_eq!(cache.disk_write_failures(), 0);

    let big = vec![2u8; usize::try_from(17 * BLOCK).expect("usize")];
    cache.put_disk(key(250), bytes(&big));
    assert!(
        !dir.path().join(key(250).file_name()).exists(),
        "larger than the limit"
    );
    assert!(
        cache.get_memory(&key(250), 17 * BLOCK).is_some(),
        "kept in memory"
    );
}

#[test]
fn startup_scan_counts_files_removes_temps_and_evicts_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = disk_config(dir.path(), 0);
    let first = scanned_cache(&config);
    for n in 0..4 {
        first.put(key(n), bytes(&[n; 100]));
    }
    assert!(first.reserve_file("copy", 5000));
    let files = first.files_dir().expect("files dir");
    std::fs::write(files.join("copy"), vec![0u8; 5000]).expect("copy");
    drop(first);
    // Chunk 2 used longest ago, then 0, 1, 3; the copy most recently.
    let now = SystemTime::now();
    for (n, age) in [(2u8, 400), (0, 300), (1, 200), (3, 100)] {
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join(key(n).file_name()))
            .expect("open");
        let at = now - Duration::from_secs(age);
        file.set_times(std::fs::FileTimes::new().set_accessed(at).set_modified(at))
            .expect("set times");
    }
    let stale = [
        dir.path().join(format!("{}.tmp-1-0", key(9).file_name())),
        files.join(format!("copy.tmp-{}-7", std::process::id().wrapping_add(1))),
    ];
    for temp in &stale {
        std::fs::write(temp, b"half").expect("temp");
    }

    let counted = scanned_cache(&disk_config(dir.path(), DEFAULT_MAX_DISK_BYTES));
    assert_eq!(
        counted.disk_bytes(),
        4 * BLOCK + 2 * BLOCK,
        "4 chunks + 5000 bytes"
    );
    for temp in &stale {
        assert!(!temp.exists(), "{} removed", temp.display());
    }
    drop(counted);

    let smaller = scanned_cache(&disk_config(dir.path(), 4 * BLOCK));
    assert_eq!(smaller.disk_bytes(), 4 * BLOCK);
    let mut want = vec![key(1).file_name(), key(3).file_name()];
    want.sort();
    assert_eq!(
        chunk_files(dir.path()),
        want,
        "the two oldest chunks evicted"
    );
    assert!(files.join("copy").exists());
}

/// Evicting a passthrough copy while it is open: the open file still reads, because
/// unlinking only removes the name (the kernel's passthrough reference is such an open
/// file too).
#[test]
fn an_evicted_passthrough_copy_stays_readable_while_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = scanned_cache(&disk_config(dir.path(), 4 * BLOCK));
    let files = cache.files_dir().expect("files dir");
    assert!(cache.reserve_file("copy", 2 * BLOCK));
    let content = vec![7u8; usize::try_from(2 * BLOCK).expect("usize")];
    std::fs::write(files.join("copy"), &content).expect("write copy");
    let open = std::fs::File::open(files.join("copy")).expect("open copy");
    for n in 0..4 {
        cache.put(key(n), bytes(&[n; 10]));
    }
    assert!(!files.join("copy").exists(), "evicted");
    assert_eq!(
        std::io::read_to_string(&open).ok(),
        String::from_utf8(content).ok()
    );
    assert!(
        !cache.reserve_file("huge", 5 * BLOCK),
        "larger than the limit"
    );
    cache.release_file("never-reserved");
    assert_eq!(cache.disk_bytes(), 4 * BLOCK);
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop; None (with the
/// reason printed) where mounting is not possible (not root).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!("skipping: cannot mount a tmpfs ({other:?}); needs root");
                None
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Deterministic, incompressible file contents.
fn content(len: usize, seed: u32) -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(u64::from(seed), len)
}

/// Reads every file of a 1 MiB layer (64 KiB chunks) through a cache on a 256 KiB tmpfs
/// whose memory holds 128 KiB: with `max_disk_bytes` the budget keeps the disk from
/// filling; without, writes hit ENOSPC. Either way every read returns the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_layer_larger_than_the_disk_return_correct_bytes() {
    let files: Vec<(String, Vec<u8>)> = (0..4u32)
        .map(|i| (format!("data/f{i}"), content(256 << 10, i)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    for (name, max_disk_bytes, full) in [
        ("unlimited: the disk fills", 0, true),
        ("limit below the disk", 160 << 10, false),
    ] {
        let Some(tmpfs) = Tmpfs::mount("256k") else {
            return;
        };
        let config = CacheConfig {
            dir: Some(tmpfs.path().join("cache")),
            memory_bytes: 128 << 10,
            max_disk_bytes,
        };
        let cache = Arc::new(scanned_cache(&config));
        let (layer, _blob) =
            crate::testing::memory_layer(&refs, 64 << 10, &[], cache.clone()).await;
        for round in 0..2 {
            for (path, want) in &files {
                let id = layer.index().lookup(path).expect("entry");
                let got = layer.read(id, 0, 1 << 20).await.expect("read");
                assert!(got == *want, "{name}: {path} round {round}");
            }
        }
        assert_eq!(cache.disk_write_failures() > 0, full, "{name}");
        if !full {
            assert!(cache.disk_bytes() <= max_disk_bytes, "{name}");
        }
    }
}
