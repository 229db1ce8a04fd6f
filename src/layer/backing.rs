//! Backing files for FUSE passthrough: once every chunk of a regular file is cached, its
//! whole verified content is assembled once into `<cache>/files/`, so the kernel can serve
//! reads of it directly from local disk.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use estargz::{EntryId, EntryType, Hasher};

use super::{Inner, Layer, LayerError};
use crate::cache::CacheKey;

impl Layer {
    /// The file's content as a local file opened read-only, when all of it is cached
    /// (assembled on first use); `None` when some chunk is not local yet, the cache has
    /// no disk, or assembling failed (logged: reads then go through the chunk cache).
    pub async fn backing_file(&self, file: EntryId) -> Result<Option<File>, LayerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.backing_file(file))
            .await
            .map_err(|source| LayerError::Task {
                blob: self.inner.blob,
                source,
            })
    }
}

impl Inner {
    fn backing_file(self: &Arc<Self>, file: EntryId) -> Option<File> {
        let dir = self.cache.files_dir()?;
        let entry = self
            .index
            .entry(file)
            .filter(|e| e.kind == EntryType::Reg)?;
        let name = match entry.digest {
            Some(digest) => format!("sha256-{}", digest.hex()),
            None => format!("blob-{}-{file}", self.blob.hex()),
        };
        let path = dir.join(&name);
        if let Ok(existing) = File::open(&path) {
            if existing.metadata().is_ok_and(|m| m.len() == entry.size) {
                self.cache.touch_file(&name);
                return Some(existing);
            }
        }
        let chunks = self.index.chunks(file);
        let keys: Vec<CacheKey> = chunks
            .iter()
            .map(|c| CacheKey::for_chunk(self.blob, c))
            .collect();
        if !keys
            .iter()
            .zip(chunks)
            .all(|(key, chunk)| self.cache.contains(key, chunk.size))
        {
            return None;
        }
        // The copy counts under the cache's disk budget (none while disk writes pause).
        if !self.cache.reserve_file(&name, entry.size) {
            return None;
        }
        match self.assemble(&path, &keys, chunks, entry.digest) {
            Ok(file) => Some(file),
            Err(reason) => {
                self.cache.release_file(&name);
                tracing::warn!(blob = %self.blob, file, %reason, "no backing file; reads stay in FUSE");
                None
            }
        }
    }

    /// Writes the chunks in order to a temp file, checks the whole-file digest, and
    /// renames it into place.
    fn assemble(
        &self,
        path: &Path,
        keys: &[CacheKey],
        chunks: &[estargz::ChunkInfo],
        digest: Option<estargz::Digest>,
    ) -> Result<File, String> {
        let temp = temp_path(path);
        let written = (|| {
            let mut out =
                File::create(&temp).map_err(|e| format!("create {}: {e}", temp.display()))?;
            let mut hasher = Hasher::new();
            for (key, chunk) in keys.iter().zip(chunks) {
                let bytes = self.cache.peek(key, chunk.size).ok_or_else(|| {
                    format!("chunk at file offset {} left the cache", chunk.file_offset)
                })?;
                hasher.update(&bytes);
                out.write_all(&bytes)
                    .map_err(|e| format!("write {}: {e}", temp.display()))?;
            }
            out.sync_data()
                .map_err(|e| format!("sync {}: {e}", temp.display()))?;
            let actual = hasher.finish();
            if digest.is_some_and(|want| want != actual) {
                return Err(format!(
                    "assembled content has digest {actual}, toc says {digest:?}"
                ));
            }
            std::fs::rename(&temp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written?;
        File::open(path).map_err(|e| format!("open {}: {e}", path.display()))
    }
}

fn temp_path(path: &Path) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}-{seq}", std::process::id()));
    PathBuf::from(name)
}
