//! Cache of verified, decompressed chunks: a bounded in-memory LRU in front of an
//! optional on-disk store. Only bytes that passed their digest check are ever put here.

mod disk;
mod memory;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use estargz::{ChunkInfo, Digest};
use serde::Deserialize;

use disk::DiskStore;
use memory::MemoryLru;

/// Default memory budget: 256 MiB of chunk bytes.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;

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
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Directory of the on-disk chunk store; none keeps chunks in memory only.
    pub dir: Option<PathBuf>,
    /// Most chunk bytes kept in memory. Default 256 MiB.
    pub memory_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: None,
            memory_bytes: DEFAULT_MEMORY_BYTES,
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
}

/// Verified chunk bytes shared between readers.
pub type ChunkBytes = Arc<[u8]>;

/// The chunk cache. Disk errors never fail a lookup: the cache falls back to memory only.
pub struct ChunkCache {
    memory: Mutex<MemoryLru>,
    disk: Option<DiskStore>,
    disk_broken: AtomicBool,
}

impl ChunkCache {
    /// A cache as `config` says; the disk store's directory is created.
    pub fn new(config: &CacheConfig) -> Result<ChunkCache, CacheError> {
        let disk = config.dir.as_ref().map(DiskStore::open).transpose()?;
        Ok(ChunkCache {
            memory: Mutex::new(MemoryLru::new(config.memory_bytes)),
            disk,
            disk_broken: AtomicBool::new(false),
        })
    }

    /// A memory-only cache holding at most `memory_bytes`.
    pub fn in_memory(memory_bytes: u64) -> ChunkCache {
        ChunkCache {
            memory: Mutex::new(MemoryLru::new(memory_bytes)),
            disk: None,
            disk_broken: AtomicBool::new(false),
        }
    }

    /// The chunk from memory when it is `len` bytes long, without touching the disk.
    pub fn get_memory(&self, key: &CacheKey, len: u64) -> Option<ChunkBytes> {
        let bytes = self.lock_memory().get(key)?;
        (bytes.len() as u64 == len).then_some(bytes)
    }

    /// The chunk from memory or disk (blocking I/O) when it is `len` bytes long.
    pub fn get(&self, key: &CacheKey, len: u64) -> Option<ChunkBytes> {
        if let Some(bytes) = self.get_memory(key, len) {
            return Some(bytes);
        }
        let bytes: ChunkBytes = self.disk()?.read(key, len)?.into();
        self.lock_memory().insert(*key, bytes.clone());
        Some(bytes)
    }

    /// Stores verified chunk bytes in memory and on disk (blocking I/O).
    pub fn put(&self, key: CacheKey, bytes: ChunkBytes) {
        if let Some(disk) = self.disk() {
            if let Err(error) = disk.write(&key, &bytes) {
                tracing::warn!(%error, "chunk cache disk write failed; keeping chunks in memory only");
                self.disk_broken.store(true, Ordering::Relaxed);
            }
        }
        self.lock_memory().insert(key, bytes);
    }

    /// Bytes currently held in memory.
    /// Stores a verified chunk on disk only (in memory when there is no working disk
    /// store), for chunks nobody is waiting for.
    pub fn put_disk(&self, key: CacheKey, bytes: ChunkBytes) {
        match self.disk() {
            Some(disk) => {
                if let Err(error) = disk.write(&key, &bytes) {
                    tracing::warn!(%error, "chunk cache disk write failed; keeping chunks in memory only");
                    self.disk_broken.store(true, Ordering::Relaxed);
                    self.lock_memory().insert(key, bytes);
                }
            }
            None => {
                self.lock_memory().insert(key, bytes);
            }
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
        self.disk()?.read(key, len).map(Into::into)
    }

    /// Directory of whole-file copies for FUSE passthrough (`files/` beside the chunks),
    /// created on first use; None without a working disk store.
    pub fn files_dir(&self) -> Option<PathBuf> {
        let dir = self.disk()?.dir().join("files");
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "no directory for passthrough files");
                None
            }
        }
    }

    /// Whether chunks reach a disk store (background fetching needs one to be useful).
    pub fn has_disk(&self) -> bool {
        self.disk().is_some()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.lock_memory().used_bytes()
    }

    fn disk(&self) -> Option<&DiskStore> {
        if self.disk_broken.load(Ordering::Relaxed) {
            return None;
        }
        self.disk.as_ref()
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, MemoryLru> {
        // The LRU stays consistent even if a holder panicked: every method is one step.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey::Content(Digest::from_bytes([n; 32]))
    }

    fn bytes(data: &[u8]) -> ChunkBytes {
        data.into()
    }

    #[test]
    fn disk_store_survives_a_new_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CacheConfig {
            dir: Some(dir.path().join("chunks")),
            memory_bytes: 1 << 20,
        };
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
    fn disk_failure_degrades_to_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunks = dir.path().join("chunks");
        let config = CacheConfig {
            dir: Some(chunks.clone()),
            memory_bytes: 1 << 20,
        };
        let cache = ChunkCache::new(&config).expect("cache");
        std::fs::remove_dir_all(&chunks).expect("remove dir");
        std::fs::write(&chunks, b"not a directory").expect("block dir");
        cache.put(key(1), bytes(b"abc"));
        assert_eq!(cache.get(&key(1), 3).as_deref(), Some(&b"abc"[..]));
        assert!(cache.disk_broken.load(Ordering::Relaxed));
    }

    #[test]
    fn location_keys_name_distinct_files() {
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
    }
}
