//! OCI image layout directories: `oci-layout`, `index.json` and `blobs/sha256/<hex>`.
//!
//! Writes are atomic per file: blobs and `index.json` are written to a temporary file in
//! the same directory, synced, then renamed into place, so a reader never sees half a file.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use estargz::{Digest, Hasher};
use tempfile::NamedTempFile;

use crate::location::LayoutSelector;
use crate::oci::{Descriptor, Index, ANNOTATION_REF_NAME};

const OCI_LAYOUT_FILE: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
/// Largest `index.json` accepted.
const MAX_INDEX_SIZE: u64 = 16 << 20;

/// Errors from reading or writing a layout directory.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is not an OCI image layout (no index.json)", dir.display())]
    NotALayout { dir: PathBuf },
    #[error("parse {}: {source}", path.display())]
    BadIndex {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{} is larger than {MAX_INDEX_SIZE} bytes", path.display())]
    IndexTooLarge { path: PathBuf },
    #[error("no image tagged {tag:?} in {}", dir.display())]
    TagNotFound { dir: PathBuf, tag: String },
    #[error("no image with digest {digest} in {}", dir.display())]
    DigestNotFound { dir: PathBuf, digest: Digest },
    #[error("{} holds {count} images: name one with oci:PATH:TAG", dir.display())]
    Ambiguous { dir: PathBuf, count: usize },
    #[error("blob {digest} not found in layout {}", dir.display())]
    MissingBlob { dir: PathBuf, digest: Digest },
    #[error("blob {} is {actual} bytes, its descriptor says {expected}", path.display())]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("blob {} has digest {actual}, expected {expected}", path.display())]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayoutError + 'a {
    move |source| LayoutError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens an existing layout for reading.
    pub fn open(dir: &Path) -> Result<Self, LayoutError> {
        if !dir.join(INDEX_FILE).is_file() {
            return Err(LayoutError::NotALayout {
                dir: dir.to_owned(),
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Opens a layout for writing, creating the directory structure when missing.
    pub fn create(dir: &Path) -> Result<Self, LayoutError> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_err("create directory", &blobs))?;
        let marker = dir.join(OCI_LAYOUT_FILE);
        if !marker.exists() {
            write_atomic(dir, &marker, OCI_LAYOUT_CONTENT)?;
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The path of an existing blob, after checking its size against the descriptor.
    pub fn existing_blob(&self, desc: &Descriptor) -> Result<PathBuf, LayoutError> {
        let path = self.blob_path(&desc.digest);
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::MissingBlob {
                    dir: self.dir.clone(),
                    digest: desc.digest,
                })
            }
            Err(e) => return Err(io_err("stat", &path)(e)),
        };
        if meta.len() != desc.size {
            return Err(LayoutError::SizeMismatch {
                path,
                expected: desc.size,
                actual: meta.len(),
            });
        }
        Ok(path)
    }

    /// Reads a small blob whole, verifying size and digest.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, LayoutError> {
        let path = self.existing_blob(desc)?;
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        let actual = Digest::sha256(&bytes);
        if actual != desc.digest {
            return Err(LayoutError::DigestMismatch {
                path,
                expected: desc.digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// The layout's `index.json`; an empty index when the file does not exist yet.
    pub fn read_index(&self) -> Result<Index, LayoutError> {
        let path = self.dir.join(INDEX_FILE);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::empty()),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_INDEX_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        if bytes.len() as u64 > MAX_INDEX_SIZE {
            return Err(LayoutError::IndexTooLarge { path });
        }
        serde_json::from_slice(&bytes).map_err(|source| LayoutError::BadIndex { path, source })
    }

    /// The `index.json` entry `selector` names.
    pub fn find(&self, selector: &LayoutSelector) -> Result<Descriptor, LayoutError> {
        let index = self.read_index()?;
        let found = match selector {
            LayoutSelector::Tag(tag) => index
                .manifests
                .iter()
                .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(tag))
                .ok_or_else(|| LayoutError::TagNotFound {
                    dir: self.dir.clone(),
                    tag: tag.clone(),
                })?,
            LayoutSelector::Digest(digest) => index
                .manifests
                .iter()
                .find(|d| d.digest == *digest)
                .ok_or_else(|| LayoutError::DigestNotFound {
                    dir: self.dir.clone(),
                    digest: *digest,
                })?,
            LayoutSelector::Only => match index.manifests.as_slice() {
                [only] => only,
                many => {
                    return Err(LayoutError::Ambiguous {
                        dir: self.dir.clone(),
                        count: many.len(),
                    })
                }
            },
        };
        Ok(found.clone())
    }

    /// Stores in-memory bytes as a blob (no-op when present).
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), LayoutError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        write_atomic(&self.blobs_dir(), &self.blob_path(digest), bytes)
    }

    /// Stores the file at `source` as a blob, verifying its digest while copying.
    /// With `may_move` (a file this process wrote and hashed itself), a same-filesystem
    /// rename replaces the copy.
    pub fn import_blob(
        &self,
        digest: &Digest,
        source: &Path,
        may_move: bool,
    ) -> Result<(), LayoutError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let target = self.blob_path(digest);
        if may_move && sync_file(source).is_ok() && fs::rename(source, &target).is_ok() {
            return Ok(());
        }
        let mut input = fs::File::open(source).map_err(io_err("open", source))?;
        let mut temp = NamedTempFile::new_in(self.blobs_dir())
            .map_err(io_err("create temporary file in", &self.blobs_dir()))?;
        let mut hashing = HashingWriter {
            inner: temp.as_file_mut(),
            hasher: Hasher::new(),
        };
        io::copy(&mut input, &mut hashing).map_err(io_err("copy blob into", &target))?;
        let actual = hashing.hasher.finish();
        if actual != *digest {
            return Err(LayoutError::DigestMismatch {
                path: source.to_owned(),
                expected: *digest,
                actual,
            });
        }
        persist(temp, &target)
    }

    /// Points `tag` at `desc` in `index.json`, replacing an entry with the same tag.
    /// Written last of all, atomically: the tag either names the complete image or the
    /// previous one.
    pub fn set_tag(&self, tag: &str, desc: &Descriptor) -> Result<(), LayoutError> {
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|d| d.annotation(ANNOTATION_REF_NAME) != Some(tag));
        let mut entry = desc.clone();
        entry.set_annotation(ANNOTATION_REF_NAME, tag);
        index.manifests.push(entry);
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| LayoutError::BadIndex {
            path: self.dir.join(INDEX_FILE),
            source,
        })?;
        write_atomic(&self.dir, &self.dir.join(INDEX_FILE), &bytes)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn sync_file(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

/// Writes `bytes` to a temporary file in `dir`, syncs it and renames it to `target`.
fn write_atomic(dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let mut temp = NamedTempFile::new_in(dir).map_err(io_err("create temporary file in", dir))?;
    temp.write_all(bytes).map_err(io_err("write", target))?;
    persist(temp, target)
}

fn persist(temp: NamedTempFile, target: &Path) -> Result<(), LayoutError> {
    temp.as_file().sync_all().map_err(io_err("sync", target))?;
    temp.persist(target)
        .map_err(|e| io_err("rename into place", target)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::OCI_MANIFEST;

    fn manifest_desc(bytes: &[u8]) -> Descriptor {
        Descriptor::new(OCI_MANIFEST, Digest::sha256(bytes), bytes.len() as u64)
    }

    #[test]
    fn tags_are_added_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let first = manifest_desc(b"one");
        let second = manifest_desc(b"two");
        layout.set_tag("a", &first).unwrap();
        layout.set_tag("b", &first).unwrap();
        layout.set_tag("a", &second).unwrap();
        let opened = Layout::open(dir.path()).unwrap();
        let find = |tag: &str| opened.find(&LayoutSelector::Tag(tag.into())).unwrap();
        assert_eq!(find("a").digest, second.digest);
        assert_eq!(find("b").digest, first.digest);
        assert_eq!(opened.read_index().unwrap().manifests.len(), 2);
        assert!(matches!(
            opened.find(&LayoutSelector::Only),
            Err(LayoutError::Ambiguous { count: 2, .. })
        ));
        assert!(dir.path().join(OCI_LAYOUT_FILE).is_file());
    }

    #[test]
    fn blobs_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let desc = manifest_desc(b"content");
        layout.write_blob(&desc.digest, b"content").unwrap();
        assert_eq!(layout.read_blob(&desc).unwrap(), b"content");
        fs::write(layout.blob_path(&desc.digest), b"CONTENT").unwrap();
        assert!(matches!(
            layout.read_blob(&desc),
            Err(LayoutError::DigestMismatch { .. })
        ));
        let missing = manifest_desc(b"absent");
        assert!(matches!(
            layout.read_blob(&missing),
            Err(LayoutError::MissingBlob { .. })
        ));
    }

    #[test]
    fn import_copies_and_checks_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(&dir.path().join("layout")).unwrap();
        let source = dir.path().join("source");
        fs::write(&source, b"layer").unwrap();
        let wrong = Digest::sha256(b"other");
        assert!(layout.import_blob(&wrong, &source, false).is_err());
        assert!(!layout.has_blob(&wrong));
        let digest = Digest::sha256(b"layer");
        layout.import_blob(&digest, &source, false).unwrap();
        assert!(source.exists(), "copy keeps the source");
        assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), b"layer");
        let leftovers: Vec<_> = fs::read_dir(layout.blobs_dir()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left");
    }
}
