//! One interface over where images live: read manifests and blobs from, and write them to,
//! an OCI layout directory or a registry repository.

use std::path::{Path, PathBuf};

use estargz::Digest;
use registry::{Client, Reference};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use crate::layout::{Layout, LayoutError};
use crate::location::{LayoutSelector, Location};
use crate::oci::Descriptor;

/// Largest manifest, index or config read into memory.
pub const MAX_DOCUMENT_SIZE: u64 = 16 << 20;

/// Errors from a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{op} {digest} in {repo}: {source}")]
    Registry {
        op: &'static str,
        digest: String,
        repo: String,
        source: Box<registry::Error>,
    },
    #[error("write {} to work dir {}: {source}", digest, dir.display())]
    WorkDir {
        digest: Digest,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{digest} is {size} bytes, more than the {MAX_DOCUMENT_SIZE} allowed for a document")]
    TooLarge { digest: Digest, size: u64 },
    #[error("destination {0} must name a tag, not only a digest")]
    NeedsTag(String),
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A manifest or index as read, with its media type and digest.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// A blob on local disk: a file inside a source layout, or a temporary download.
#[derive(Debug)]
pub struct BlobFile {
    path: PathBuf,
    /// Deletes the file when dropped; `None` for files this program does not own.
    temp: Option<TempPath>,
}

impl BlobFile {
    /// A file owned by someone else (left in place).
    pub fn borrowed(path: PathBuf) -> Self {
        Self { path, temp: None }
    }

    /// A temporary file, deleted when this value is dropped.
    pub fn temporary(temp: TempPath) -> Self {
        Self {
            path: temp.to_path_buf(),
            temp: Some(temp),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_temporary(&self) -> bool {
        self.temp.is_some()
    }
}

/// Where an image is read from or written to.
#[derive(Debug, Clone)]
pub enum Store {
    Layout {
        layout: Layout,
        selector: LayoutSelector,
    },
    Registry {
        client: Client,
        reference: Reference,
    },
}

impl Store {
    /// Opens the source image location (a layout must exist).
    pub fn source(location: &Location, client: &Client) -> Result<Self, StoreError> {
        Ok(match location {
            Location::Layout { dir, selector } => Store::Layout {
                layout: Layout::open(dir)?,
                selector: selector.clone(),
            },
            Location::Registry(reference) => Store::Registry {
                client: client.clone(),
                reference: reference.clone(),
            },
        })
    }

    /// Opens the destination; a layout is created when missing, and without a tag the
    /// image is tagged `latest`.
    pub fn destination(location: &Location, client: &Client) -> Result<Self, StoreError> {
        Ok(match location {
            Location::Layout { dir, selector } => {
                let selector = match selector {
                    LayoutSelector::Tag(_) => selector.clone(),
                    LayoutSelector::Only => LayoutSelector::Tag("latest".to_owned()),
                    LayoutSelector::Digest(_) => {
                        return Err(StoreError::NeedsTag(location.to_string()))
                    }
                };
                Store::Layout {
                    layout: Layout::create(dir)?,
                    selector,
                }
            }
            Location::Registry(reference) => {
                if reference.tag.is_none() || reference.digest.is_some() {
                    return Err(StoreError::NeedsTag(location.to_string()));
                }
                Store::Registry {
                    client: client.clone(),
                    reference: reference.clone(),
                }
            }
        })
    }

    /// The registry reference, for a registry store.
    pub fn reference(&self) -> Option<&Reference> {
        match self {
            Store::Registry { reference, .. } => Some(reference),
            Store::Layout { .. } => None,
        }
    }

    /// The top manifest or index the location names.
    pub async fn root(&self) -> Result<Fetched, StoreError> {
        match self {
            Store::Layout { layout, selector } => {
                let desc = layout.find(selector)?;
                let bytes = self.read_document(&desc).await?;
                Ok(Fetched {
                    bytes,
                    media_type: desc.media_type,
                    digest: desc.digest,
                })
            }
            Store::Registry { client, reference } => {
                let manifest = client.get_manifest(reference).await.map_err(|source| {
                    StoreError::Registry {
                        op: "fetch manifest",
                        digest: reference.manifest_reference(),
                        repo: reference.name(),
                        source: Box::new(source),
                    }
                })?;
                Ok(Fetched {
                    bytes: manifest.bytes,
                    media_type: manifest.media_type,
                    digest: manifest.digest,
                })
            }
        }
    }

    /// A child manifest (by digest) from an index.
    pub async fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>, StoreError> {
        match self {
            Store::Layout { .. } => self.read_document(desc).await,
            Store::Registry { client, reference } => {
                let manifest = client
                    .get_manifest(&reference.with_digest(desc.digest))
                    .await
                    .map_err(|source| {
                        registry_error("fetch manifest", desc.digest, reference, source)
                    })?;
                Ok(manifest.bytes)
            }
        }
    }

    /// A small blob (an image config) read whole and verified.
    pub async fn read_document(&self, desc: &Descriptor) -> Result<Vec<u8>, StoreError> {
        if desc.size > MAX_DOCUMENT_SIZE {
            return Err(StoreError::TooLarge {
                digest: desc.digest,
                size: desc.size,
            });
        }
        match self {
            Store::Layout { layout, .. } => Ok(layout.read_blob(desc)?),
            Store::Registry { client, reference } => {
                let mut bytes = Vec::new();
                client
                    .download_blob(reference, &desc.digest, &mut bytes)
                    .await
                    .map_err(|source| {
                        registry_error("fetch blob", desc.digest, reference, source)
                    })?;
                check_size(desc, bytes.len() as u64)?;
                Ok(bytes)
            }
        }
    }

    /// Makes a blob available as a local file: in place for a layout, downloaded into
    /// `work_dir` for a registry. `on_bytes` is told about every piece received.
    pub async fn fetch_blob(
        &self,
        desc: &Descriptor,
        work_dir: &Path,
        on_bytes: impl Fn(u64),
    ) -> Result<BlobFile, StoreError> {
        match self {
            Store::Layout { layout, .. } => Ok(BlobFile::borrowed(layout.existing_blob(desc)?)),
            Store::Registry { client, reference } => {
                download(client, reference, desc, work_dir, on_bytes).await
            }
        }
    }

    /// Whether the store already holds a blob.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, StoreError> {
        match self {
            Store::Layout { layout, .. } => Ok(layout.has_blob(digest)),
            Store::Registry { client, reference } => client
                .blob_exists(reference, digest)
                .await
                .map_err(|source| registry_error("check blob", *digest, reference, source)),
        }
    }

    /// Stores a blob from a local file. `mount_from` names a source repository on the same
    /// registry that already has it, so the registry can link instead of receiving bytes.
    pub async fn put_blob_file(
        &self,
        digest: &Digest,
        size: u64,
        file: BlobFile,
        mount_from: Option<&Reference>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Layout { layout, .. } => {
                let layout = layout.clone();
                let digest = *digest;
                tokio::task::spawn_blocking(move || {
                    layout.import_blob(&digest, file.path(), file.is_temporary())
                })
                .await??;
                Ok(())
            }
            Store::Registry { client, reference } => {
                let pushed = match mount_from.filter(|src| src.registry == reference.registry) {
                    Some(source) => {
                        client
                            .push_blob_file_or_mount(reference, digest, file.path(), size, source)
                            .await
                    }
                    None => {
                        client
                            .push_blob_file(reference, digest, file.path(), size)
                            .await
                    }
                };
                pushed.map_err(|source| registry_error("push blob", *digest, reference, source))
            }
        }
    }

    /// Stores a small in-memory blob (a config).
    pub async fn put_blob_bytes(&self, digest: &Digest, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Store::Layout { layout, .. } => Ok(layout.write_blob(digest, &bytes)?),
            Store::Registry { client, reference } => client
                .push_blob_bytes(reference, digest, bytes.into())
                .await
                .map_err(|source| registry_error("push blob", *digest, reference, source)),
        }
    }

    /// Stores a manifest reachable only by digest (a child of an index).
    pub async fn put_manifest(&self, desc: &Descriptor, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Layout { layout, .. } => Ok(layout.write_blob(&desc.digest, bytes)?),
            Store::Registry { client, reference } => {
                client
                    .push_manifest(&reference.with_digest(desc.digest), &desc.media_type, bytes)
                    .await
                    .map_err(|source| {
                        registry_error("push manifest", desc.digest, reference, source)
                    })?;
                Ok(())
            }
        }
    }

    /// Stores the top manifest or index and points the destination tag at it: the last
    /// step of a conversion.
    pub async fn put_tagged(&self, desc: &Descriptor, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Layout { layout, selector } => {
                layout.write_blob(&desc.digest, bytes)?;
                let LayoutSelector::Tag(tag) = selector else {
                    return Err(StoreError::NeedsTag(layout.dir().display().to_string()));
                };
                Ok(layout.set_tag(tag, desc)?)
            }
            Store::Registry { client, reference } => {
                client
                    .push_manifest(reference, &desc.media_type, bytes)
                    .await
                    .map_err(|source| StoreError::Registry {
                        op: "push manifest",
                        digest: desc.digest.to_string(),
                        repo: reference.to_string(),
                        source: Box::new(source),
                    })?;
                Ok(())
            }
        }
    }
}

fn registry_error(
    op: &'static str,
    digest: Digest,
    reference: &Reference,
    source: registry::Error,
) -> StoreError {
    StoreError::Registry {
        op,
        digest: digest.to_string(),
        repo: reference.name(),
        source: Box::new(source),
    }
}

fn check_size(desc: &Descriptor, actual: u64) -> Result<(), StoreError> {
    if actual != desc.size {
        return Err(StoreError::SizeMismatch {
            digest: desc.digest,
            expected: desc.size,
            actual,
        });
    }
    Ok(())
}

/// Streams a registry blob into a temporary file in `work_dir` (digest checked by the
/// registry client at the end of the stream).
async fn download(
    client: &Client,
    reference: &Reference,
    desc: &Descriptor,
    work_dir: &Path,
    on_bytes: impl Fn(u64),
) -> Result<BlobFile, StoreError> {
    let work_error = |source| StoreError::WorkDir {
        digest: desc.digest,
        dir: work_dir.to_owned(),
        source,
    };
    let (file, temp) = tempfile::Builder::new()
        .prefix("src-")
        .tempfile_in(work_dir)
        .map_err(work_error)?
        .into_parts();
    let blob = BlobFile::temporary(temp);
    let mut file = tokio::fs::File::from_std(file);
    let fetch_error = |source| registry_error("fetch blob", desc.digest, reference, source);
    let mut stream = client
        .blob_stream(reference, &desc.digest)
        .await
        .map_err(fetch_error)?;
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next_chunk().await.map_err(fetch_error)? {
        file.write_all(&chunk).await.map_err(work_error)?;
        received = received.saturating_add(chunk.len() as u64);
        on_bytes(chunk.len() as u64);
    }
    file.flush().await.map_err(work_error)?;
    check_size(desc, received)?;
    Ok(blob)
}
