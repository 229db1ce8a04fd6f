//! Backing files for FUSE passthrough: once every chunk of a regular file is cached, its
//! whole verified content is assembled once into `<cache>/files/`, so the kernel can serve
//! reads of it directly from local disk.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use estargz::{EntryId, EntryType, Hasher};

use super::{Inner, Layer, LayerError};
use crate::lazy::cache::CacheKey;

impl Layer {
    /// The file's content as a local file opened read-only, when it has been assembled.
    /// When all of it is cached but not assembled yet, the copy is written in the
    /// background a little later and this returns `None`: the open that asked is served
    /// through FUSE from the cached chunks at once, rather than waiting for a copy and
    /// fsync of the whole file, and a later open finds the copy. `None` too when some
    /// chunk is not local, the cache has no disk, or assembling failed (logged).
    pub async fn backing_file(&self, file: EntryId) -> Result<Option<File>, LayerError> {
        let inner = self.inner.clone();
        let found = tokio::task::spawn_blocking(move || inner.find_backing_file(file))
            .await
            .map_err(|source| LayerError::Task {
                blob: self.inner.blob,
                source,
            })?;
        Ok(match found {
            Backing::Ready(local) => Some(local),
            Backing::Assemble(plan) => {
                self.assemble_later(file, plan);
                None
            }
            Backing::Missing => None,
        })
    }

    /// Writes the backing copy after [`BACKING_COPY_DELAY`] and once the layer's on-demand
    /// fetching has been quiet for [`BACKING_COPY_QUIET`], not while the container that
    /// opened the file starts (the copy's writes and fsync would compete with its reads);
    /// not at all when the layer is gone by then.
    fn assemble_later(&self, file: EntryId, plan: Plan) {
        let layer = self.downgrade();
        let cache = self.inner.cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(BACKING_COPY_DELAY).await;
            // Copies write and fsync: not while a reader waits on the network (a
            // container starting reads its next files), as background fetching.
            while let Some(layer) = layer.upgrade() {
                if !layer.inner.activity.busy_within(BACKING_COPY_QUIET) {
                    break;
                }
                drop(layer);
                tokio::time::sleep(BACKING_COPY_QUIET).await;
            }
            match layer.upgrade() {
                Some(layer) => {
                    let inner = layer.inner;
                    tokio::task::spawn_blocking(move || inner.assemble_backing_file(file, plan));
                }
                None => cache.release_file(&plan.name),
            }
        });
    }
}

/// How long after the first open of a fully cached file its backing copy is written.
pub(super) const BACKING_COPY_DELAY: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the layer's on-demand fetching must have been quiet before a copy is written.
pub(super) const BACKING_COPY_QUIET: std::time::Duration = std::time::Duration::from_millis(500);

/// Where a file's backing copy stands.
enum Backing {
    Ready(File),
    /// Every chunk is cached: write the copy (under way for this file from now on).
    Assemble(Plan),
    /// Not all local, no disk, over budget, or already being written.
    Missing,
}

/// What assembling one backing file needs.
struct Plan {
    name: String,
    path: PathBuf,
    keys: Vec<CacheKey>,
    digest: Option<estargz::Digest>,
}

impl Inner {
    fn find_backing_file(self: &Arc<Self>, file: EntryId) -> Backing {
        let Some(dir) = self.cache.files_dir() else {
            return Backing::Missing;
        };
        let Some(entry) = self.index.entry(file).filter(|e| e.kind == EntryType::Reg) else {
            return Backing::Missing;
        };
        let name = match entry.digest {
            Some(digest) => format!("sha256-{}", digest.hex()),
            None => format!("blob-{}-{file}", self.blob.hex()),
        };
        let path = dir.join(&name);
        if let Ok(existing) = File::open(&path) {
            if existing.metadata().is_ok_and(|m| m.len() == entry.size) {
                self.cache.touch_file(&name);
                return Backing::Ready(existing);
            }
        }
        let chunks = self.index.chunks(file);
        let keys: Vec<CacheKey> = chunks
            .iter()
            .map(|c| CacheKey::for_chunk(self.blob, c))
            .collect();
        let all_local = keys
            .iter()
            .zip(chunks)
            .all(|(key, chunk)| self.cache.contains(key, chunk.size));
        if !all_local || !self.lock_assembling().insert(file) {
            return Backing::Missing;
        }
        // The copy counts under the cache's disk budget (none while disk writes pause).
        if !self.cache.reserve_file(&name, entry.size) {
            self.lock_assembling().remove(&file);
            return Backing::Missing;
        }
        Backing::Assemble(Plan {
            name,
            path,
            keys,
            digest: entry.digest,
        })
    }

    fn assemble_backing_file(&self, file: EntryId, plan: Plan) {
        let chunks = self.index.chunks(file);
        match self.assemble(&plan.path, &plan.keys, chunks, plan.digest) {
            Ok(_) => tracing::debug!(blob = %self.blob, file, "backing file assembled"),
            Err(reason) => {
                self.cache.release_file(&plan.name);
                tracing::warn!(blob = %self.blob, file, %reason, "no backing file; reads stay in FUSE");
            }
        }
        self.lock_assembling().remove(&file);
    }

    fn lock_assembling(&self) -> std::sync::MutexGuard<'_, HashSet<EntryId>> {
        self.assembling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            let mut out = crate::private_fs::create_file(&temp)
                .map_err(|e| format!("create {}: {e}", temp.display()))?;
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
