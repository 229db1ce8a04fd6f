//! Cache of verified, decompressed chunks: a bounded in-memory LRU in front of an
//! optional on-disk store with its own byte budget (least recently used files evicted
//! first). Only bytes that passed their digest check are ever put here. Disk problems
//! never fail a read: a failed write pauses disk writes for [`DISK_RETRY_AFTER`].

mod disk;
mod health;
mod limit;
mod memory;
mod scan;
#[cfg(test)]
mod tests;
mod tocs;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use estargz::{ChunkInfo, Digest};
use serde::Deserialize;

use disk::DiskStore;
use memory::MemoryLru;

use crate::lazy::link::Link;

pub use health::DISK_RETRY_AFTER;

/// Default memory budget: 256 MiB of chunk bytes.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;

/// Default disk budget: 10 GiB of chunk files and passthrough copies.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 10 << 30;

/// Subdirectory of the cache directory holding whole-file copies for FUSE passthrough.
const FILES_DIR: &str = "files";
/// Subdirectory of the saved TOCs (see [`tocs`]).
const TOCS_DIR: &str = "tocs";

/// What the disk budget counts: a chunk file, or a passthrough copy under `files/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum DiskName {
    Chunk(CacheKey),
    File(Arc<str>),
}

impl DiskName {
    /// The file's path relative to the cache directory.
    fn path(&self) -> String {
        match self {
            DiskName::Chunk(key) => key.file_name(),
            DiskName::File(name) => format!("{FILES_DIR}/{name}"),
        }
    }
}

/// Errors setting up the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("create cache directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Cache settings (the `[cache]` table of the daemon config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Directory of the on-disk chunk store; none keeps chunks in memory only.
    pub dir: Option<PathBuf>,
    /// Most chunk bytes kept in memory. Default 256 MiB.
    pub memory_bytes: u64,
    /// Most bytes the disk store takes (chunk files and the `files/` passthrough
    /// copies, each counted in whole 4 KiB blocks); least recently used files are
    /// deleted to stay under it. 0 is unlimited. Default 10 GiB.
    pub max_disk_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: None,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
        }
    }
}

/// What names a chunk: its content digest, or (no digest in the TOC) where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKey {
    Content(Digest),
    Location {
        blob: Digest,
        compressed_offset: u64,
        inner_offset: u64,
    },
}

impl CacheKey {
    /// The key of `chunk` of the blob `blob`.
    pub fn for_chunk(blob: Digest, chunk: &ChunkInfo) -> CacheKey {
        match chunk.digest {
            Some(digest) => CacheKey::Content(digest),
            None => CacheKey::Location {
                blob,
                compressed_offset: chunk.compressed.start,
                inner_offset: chunk.inner_offset,
            },
        }
    }

    /// A file name for this key (hex and decimal only).
    fn file_name(&self) -> String {
        match self {
            CacheKey::Content(digest) => format!("sha256-{}", digest.hex()),
            CacheKey::Location {
                blob,
                compressed_offset,
                inner_offset,
            } => format!("blob-{}-{compressed_offset}-{inner_offset}", blob.hex()),
        }
    }

    /// The key whose [`CacheKey::file_name`] is `name`, None for any other file.
    fn from_file_name(name: &str) -> Option<CacheKey> {
        let digest = |hex: &str| format!("sha256:{hex}").parse::<Digest>().ok();
        let key = match name.strip_prefix("sha256-") {
            Some(hex) => CacheKey::Content(digest(hex)?),
            None => {
                let mut parts = name.strip_prefix("blob-")?.splitn(3, '-');
                CacheKey::Location {
                    blob: digest(parts.next()?)?,
                    compressed_offset: parts.next()?.parse().ok()?,
                    inner_offset: parts.next()?.parse().ok()?,
                }
            }
        };
        // Only the exact spelling names the key's file (no `+1`, no upper-case hex).
        (key.file_name() == name).then_some(key)
    }
}

/// Verified chunk bytes shared between readers.
pub type ChunkBytes = Arc<[u8]>;

/// The chunk cache. Disk errors never fail a lookup: while disk writes are paused the
/// cache keeps chunks in memory only.
pub struct ChunkCache {
    memory: Mutex<MemoryLru>,
    disk: Option<DiskStore>,
    /// The link the cached chunks come over, shared by every layer using this cache.
    link: Arc<Link>,
}

impl ChunkCache {
    /// A cache as `config` says; the disk store's directory is created and scanned in
    /// the background (files of earlier runs counted, stale temp files deleted).
    pub fn new(config: &CacheConfig) -> Result<ChunkCache, CacheError> {
        ChunkCache::with_retry_after(config, DISK_RETRY_AFTER)
    }

    /// Like [`ChunkCache::new`], pausing disk writes for `retry_after` after a failure.
    pub fn with_retry_after(
        config: &CacheConfig,
        retry_after: Duration,
    ) -> Result<ChunkCache, CacheError> {
        let disk = config
            .dir
            .as_deref()
            .map(|dir| DiskStore::open(dir, config.max_disk_bytes, retry_after))
            .transpose()?;
        Ok(ChunkCache {
            memory: Mutex::new(MemoryLru::new(config.memory_bytes)),
            disk,
            link: Link::new(),
        })
    }

    /// A memory-only cache holding at most `memory_bytes`.
    pub fn in_memory(memory_bytes: u64) -> ChunkCache {
        ChunkCache {
            memory: Mutex::new(MemoryLru::new(memory_bytes)),
            disk: None,
            link: Link::new(),
        }
    }

    /// The link shared by every layer whose chunks this cache holds (one per daemon):
    /// priority classes and link estimates.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// The chunk from memory when it is `len` bytes long, without disk I/O (a hit also
    /// marks the chunk's disk file as used, so hot chunks are evicted from disk last).
    pub fn get_memory(&self, key: &CacheKey, len: u64) -> Option<ChunkBytes> {
        let bytes = self.lock_memory().get(key)?;
        if bytes.len() as u64 != len {
            return None;
        }
        if let Some(disk) = self.disk() {
            disk.touch(key);
        }
        Some(bytes)
    }

    /// The chunk from memory or disk (blocking I/O) when it is `len` bytes long.
    pub fn get(&self, key: &CacheKey, len: u64) -> Option<ChunkBytes> {
        if let Some(bytes) = self.get_memory(key, len) {
            return Some(bytes);
        }
        let bytes = self.disk()?.read(key, len)?;
        self.lock_memory().insert(*key, bytes.clone());
        Some(bytes)
    }

    /// Stores verified chunk bytes in memory and on disk (blocking I/O).
    pub fn put(&self, key: CacheKey, bytes: ChunkBytes) {
        self.write_disk(&key, &bytes);
        self.put_memory(key, bytes);
    }

    /// Stores verified chunk bytes in memory only; with [`ChunkCache::write_disk`] after
    /// it, a waiting reader can be answered before the disk write.
    pub fn put_memory(&self, key: CacheKey, bytes: ChunkBytes) {
        self.lock_memory().insert(key, bytes);
    }

    /// Writes verified chunk bytes to the disk cache, if there is one (blocking I/O).
    /// False when they did not get there.
    pub fn write_disk(&self, key: &CacheKey, bytes: &[u8]) -> bool {
        self.disk().is_some_and(|disk| disk.write(key, bytes))
    }

    /// Stores a verified chunk on disk only (in memory when it did not reach the disk),
    /// for chunks nobody is waiting for.
    pub fn put_disk(&self, key: CacheKey, bytes: ChunkBytes) {
        if !self.write_disk(&key, &bytes) {
            self.lock_memory().insert(key, bytes);
        }
    }

    /// Whether the chunk is cached with length `len`, in memory or on disk (blocking:
    /// may stat a file).
    pub fn contains(&self, key: &CacheKey, len: u64) -> bool {
        if self.get_memory(key, len).is_some() {
            return true;
        }
        self.disk().is_some_and(|disk| disk.contains(key, len))
    }

    /// Like [`ChunkCache::get`], without putting a chunk read from disk into memory (for
    /// bulk copies that would push hot chunks out).
    pub fn peek(&self, key: &CacheKey, len: u64) -> Option<ChunkBytes> {
        if let Some(bytes) = self.get_memory(key, len) {
            return Some(bytes);
        }
        self.disk()?.read(key, len)
    }

    /// Directory of whole-file copies for FUSE passthrough (`files/` beside the chunks),
    /// created on first use; None without a disk store. A copy counts under the disk
    /// budget: see [`ChunkCache::reserve_file`].
    pub fn files_dir(&self) -> Option<PathBuf> {
        let dir = self.disk()?.dir().join(FILES_DIR);
        match crate::private_fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "no directory for passthrough files");
                None
            }
        }
    }

    /// Makes room under the disk budget for a passthrough copy `name` (a file name in
    /// [`ChunkCache::files_dir`]) of `len` bytes, deleting least recently used files;
    /// false when no copy should be written (no disk, writes paused, or larger than the
    /// budget). A copy that is not written after all is given back with
    /// [`ChunkCache::release_file`].
    pub fn reserve_file(&self, name: &str, len: u64) -> bool {
        self.disk().is_some_and(|disk| disk.reserve_file(name, len))
    }

    /// Marks the passthrough copy `name` as just used, so it is evicted last.
    pub fn touch_file(&self, name: &str) {
        if let Some(disk) = self.disk() {
            disk.touch_file(name);
        }
    }

    /// Gives back the room reserved for the passthrough copy `name`, not written.
    pub fn release_file(&self, name: &str) {
        if let Some(disk) = self.disk() {
            disk.release_file(name);
        }
    }

    /// Saves the end of `blob` (its TOC region and footer) and its size, so the layer can
    /// be opened again without the registry. Failures are logged.
    pub fn save_toc(&self, blob: &Digest, size: u64, tail: &[u8]) {
        let Some(disk) = self.disk() else {
            return;
        };
        if let Err(error) = tocs::save(disk.dir(), blob, size, tail) {
            tracing::warn!(%blob, %error, "save toc for offline reopening");
        }
    }

    /// The size and end bytes of `blob` saved by [`ChunkCache::save_toc`] (unverified).
    pub fn saved_toc(&self, blob: &Digest) -> Option<(u64, bytes::Bytes)> {
        tocs::load(self.disk()?.dir(), blob)
    }

    /// Whether chunks reach a disk store (background fetching needs one to be useful).
    pub fn has_disk(&self) -> bool {
        self.disk().is_some()
    }

    /// Bytes currently held in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.lock_memory().used_bytes()
    }

    /// Bytes the disk store takes as counted against `max_disk_bytes` (0 when there is
    /// no disk store or no limit).
    pub fn disk_bytes(&self) -> u64 {
        self.disk().map_or(0, DiskStore::used_bytes)
    }

    /// Disk writes that failed since the cache was created.
    pub fn disk_write_failures(&self) -> u64 {
        self.disk().map_or(0, DiskStore::write_failures)
    }

    /// Blocks until the startup scan of the disk store has finished.
    pub fn wait_for_scan(&self) {
        if let Some(disk) = self.disk() {
            disk.wait_for_scan();
        }
    }

    fn disk(&self) -> Option<&DiskStore> {
        self.disk.as_ref()
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, MemoryLru> {
        // The LRU stays consistent even if a holder panicked: every method is one step.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
