//! On-disk chunk store: one file per chunk, written to a temp file and renamed into place
//! so a reader never sees a partial chunk.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CacheError, CacheKey};

/// A directory of chunk files.
pub(super) struct DiskStore {
    dir: PathBuf,
    temp_seq: AtomicU64,
}

impl DiskStore {
    pub(super) fn open(dir: &PathBuf) -> Result<DiskStore, CacheError> {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        Ok(DiskStore {
            dir: dir.clone(),
            temp_seq: AtomicU64::new(0),
        })
    }

    /// The chunk's bytes when the file exists and has length `len`.
    pub(super) fn read(&self, key: &CacheKey, len: u64) -> Option<Vec<u8>> {
        let path = self.dir.join(key.file_name());
        let size = std::fs::metadata(&path).ok()?.len();
        if size != len {
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        (bytes.len() as u64 == len).then_some(bytes)
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the chunk's file exists with length `len`.
    pub(super) fn contains(&self, key: &CacheKey, len: u64) -> bool {
        let path = self.dir.join(key.file_name());
        std::fs::metadata(path).is_ok_and(|m| m.len() == len)
    }

    pub(super) fn write(&self, key: &CacheKey, bytes: &[u8]) -> io::Result<()> {
        let path = self.dir.join(key.file_name());
        let temp = self.temp_path(&path);
        let written = write_file(&temp, bytes).and_then(|()| std::fs::rename(&temp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    fn temp_path(&self, path: &Path) -> PathBuf {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".tmp-{}-{seq}", std::process::id()));
        PathBuf::from(name)
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.flush()
}
