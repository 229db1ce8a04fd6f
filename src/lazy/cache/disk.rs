//! On-disk chunk store: one file per chunk, written to a temp file and renamed into place
//! so a reader never sees a partial chunk. Every write first makes room under the disk
//! budget ([`DiskLimit`]); a failed write pauses writing ([`WriteHealth`]) and never
//! fails the caller, whose bytes stay in memory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::health::WriteHealth;
use super::limit::DiskLimit;
use super::{scan, CacheError, CacheKey, ChunkBytes, DiskName};

/// A directory of chunk files (and of passthrough copies under `files/`).
pub(super) struct DiskStore {
    dir: PathBuf,
    temp_seq: AtomicU64,
    limit: Arc<DiskLimit<DiskName>>,
    health: WriteHealth,
    /// The startup scan, until someone waits for it.
    scan: Mutex<Option<JoinHandle<()>>>,
}

impl DiskStore {
    /// Opens (creates) `dir` holding at most `max_bytes` (0: unlimited) and starts the
    /// startup scan on a background thread.
    pub(super) fn open(
        dir: &Path,
        max_bytes: u64,
        retry_after: Duration,
    ) -> Result<DiskStore, CacheError> {
        crate::private_fs::create_dir_all(dir).map_err(|source| CacheError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let limit = Arc::new(DiskLimit::new(max_bytes));
        let scan = start_scan(dir.to_owned(), limit.clone());
        Ok(DiskStore {
            dir: dir.to_owned(),
            temp_seq: AtomicU64::new(0),
            limit,
            health: WriteHealth::new(retry_after),
            scan: Mutex::new(scan),
        })
    }

    /// The chunk's bytes when the file exists and has length `len`.
    pub(super) fn read(&self, key: &CacheKey, len: u64) -> Option<ChunkBytes> {
        let path = self.dir.join(key.file_name());
        let size = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(error) => {
                if error.kind() == io::ErrorKind::NotFound {
                    self.limit.forget(&DiskName::Chunk(*key));
                }
                return None;
            }
        };
        if size != len {
            return None;
        }
        let bytes = read_shared(&path, usize::try_from(len).ok()?).ok()?;
        self.touch(key);
        Some(bytes)
    }

    /// Marks the chunk's file (when there is one) as just used.
    pub(super) fn touch(&self, key: &CacheKey) {
        self.limit.touch(&DiskName::Chunk(*key));
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the chunk's file exists with length `len`.
    pub(super) fn contains(&self, key: &CacheKey, len: u64) -> bool {
        let path = self.dir.join(key.file_name());
        std::fs::metadata(path).is_ok_and(|m| m.len() == len)
    }

    /// Writes the chunk's file; false when it was not written (writes are paused after
    /// a failure, the chunk is larger than the budget, or this write failed).
    pub(super) fn write(&self, key: &CacheKey, bytes: &[u8]) -> bool {
        let name = DiskName::Chunk(*key);
        if !self.reserve(name.clone(), bytes.len() as u64) {
            return false;
        }
        let path = self.dir.join(key.file_name());
        let temp = self.temp_path(&path);
        let written = write_file(&temp, bytes).and_then(|()| std::fs::rename(&temp, &path));
        match written {
            Ok(()) => {
                self.health.succeeded();
                true
            }
            Err(error) => {
                let _ = std::fs::remove_file(&temp);
                self.limit.forget(&name);
                self.health.failed(&error);
                false
            }
        }
    }

    /// Makes room for the passthrough copy `files/<name>` of `len` bytes; false when
    /// none should be written now.
    pub(super) fn reserve_file(&self, name: &str, len: u64) -> bool {
        self.reserve(DiskName::File(name.into()), len)
    }

    /// Marks the passthrough copy `files/<name>` as just used.
    pub(super) fn touch_file(&self, name: &str) {
        self.limit.touch(&DiskName::File(name.into()));
    }

    /// Stops counting the passthrough copy `files/<name>`, which was not written.
    pub(super) fn release_file(&self, name: &str) {
        self.limit.forget(&DiskName::File(name.into()));
    }

    /// Bytes the tracked files take (0 with no budget).
    pub(super) fn used_bytes(&self) -> u64 {
        self.limit.used_bytes()
    }

    /// Failed writes since the store was opened.
    pub(super) fn write_failures(&self) -> u64 {
        self.health.failures()
    }

    /// Waits for the startup scan to finish.
    pub(super) fn wait_for_scan(&self) {
        let handle = self
            .scan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Counts `name` of `len` bytes under the budget and deletes the least recently
    /// used files it displaces.
    fn reserve(&self, name: DiskName, len: u64) -> bool {
        if !self.health.writable() {
            return false;
        }
        let Some(victims) = self.limit.reserve(name, len) else {
            tracing::debug!(len, "larger than the whole disk cache; not stored");
            return false;
        };
        remove_files(&self.dir, &victims);
        true
    }

    fn temp_path(&self, path: &Path) -> PathBuf {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".tmp-{}-{seq}", std::process::id()));
        PathBuf::from(name)
    }
}

/// Deletes evicted files. A passthrough copy may be open: unlinking it is safe, because
/// an open descriptor, and the kernel's own reference to a passthrough backing file
/// (registered once per inode and reused, see `fs::layer_fs`), keep the inode alive until
/// closed; the next open of that file assembles a new copy or reads through FUSE.
fn remove_files(dir: &Path, names: &[DiskName]) {
    for name in names {
        let path = name.path();
        match std::fs::remove_file(dir.join(&path)) {
            Ok(()) => tracing::trace!(file = path, "evicted from the disk cache"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::debug!(file = path, %error, "evict from the disk cache"),
        }
    }
}

/// Starts the startup scan: it counts the files found under `limit`, deletes stale temp
/// files and evicts down to the budget. None when no thread could be started (logged;
/// then files of previous runs are not counted).
fn start_scan(dir: PathBuf, limit: Arc<DiskLimit<DiskName>>) -> Option<JoinHandle<()>> {
    let started = SystemTime::now();
    let spawned = std::thread::Builder::new()
        .name("cache-scan".into())
        .spawn(move || {
            let scanned = scan::scan(&dir, started);
            let temps_removed = scanned.temps_removed;
            let files = scanned.files.len();
            let victims = limit.restore(scanned.files);
            remove_files(&dir, &victims);
            tracing::info!(
                dir = %dir.display(),
                files,
                used_bytes = limit.used_bytes(),
                evicted = victims.len(),
                temps_removed,
                "chunk cache scanned"
            );
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "no chunk cache scan; earlier files are not counted");
            None
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = crate::private_fs::create_file(path)?;
    file.write_all(bytes)?;
    file.flush()
}

/// Reads exactly `len` bytes of `path` straight into a shared buffer (no second buffer
/// and copy of a 4 MiB chunk on every disk-cache hit); a file of another length is an
/// error.
fn read_shared(path: &Path, len: usize) -> io::Result<ChunkBytes> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    // One allocation of exactly `len` zeroed bytes (a `TrustedLen` iterator).
    let mut bytes: ChunkBytes = std::iter::repeat_n(0u8, len).collect();
    let buffer = Arc::get_mut(&mut bytes).expect("a new Arc is unique");
    file.read_exact(buffer)?;
    if file.read(&mut [0])? != 0 {
        return Err(io::Error::other("chunk file longer than expected"));
    }
    Ok(bytes)
}
