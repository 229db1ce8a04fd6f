//! `Reader`: open a whole blob through positional reads (footer, TOC, digest check, index)
//! and read files with every chunk verified.

use std::io;
use std::os::unix::fs::FileExt;

use crate::chunk::{decompress_chunk, ChunkError};
use crate::digest::{Digest, Hasher};
use crate::footer::{self, Footer, FooterError, FOOTER_MAX_SIZE};
use crate::index::{ChunkInfo, EntryId, Index, IndexError};
use crate::toc::{self, EntryType, Toc, TocError};

/// Largest compressed TOC region read into memory.
const MAX_TOC_REGION: u64 = 512 << 20;

/// Positional reads of a blob.
pub trait ReadAt {
    /// Total size of the blob in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; errors when the blob ends first.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

/// Errors from opening or reading a blob.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read blob bytes {start}..{end}: {source}")]
    Io {
        start: u64,
        end: u64,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Footer(#[from] FooterError),
    #[error("toc offset {toc_offset} is not inside the blob of {blob_size} bytes")]
    TocOutOfRange { toc_offset: u64, blob_size: u64 },
    #[error("toc region of {0} bytes is larger than allowed")]
    TocRegionTooLarge(u64),
    #[error(transparent)]
    Toc(#[from] TocError),
    #[error("toc digest {actual} does not match expected {expected}")]
    TocDigestMismatch { expected: Digest, actual: Digest },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("no such file {0:?} in the layer")]
    NotFound(String),
    #[error("{0:?} is not a regular file")]
    NotRegular(String),
    #[error("chunk in blob bytes {start}..{end}: {source}")]
    ChunkAt {
        start: u64,
        end: u64,
        #[source]
        source: ChunkError,
    },
    #[error("file {path:?}: {source}")]
    Chunk {
        path: String,
        #[source]
        source: ChunkError,
    },
    #[error("file {path:?}: digest {actual} does not match toc digest {expected}")]
    FileDigestMismatch {
        path: String,
        expected: Digest,
        actual: Digest,
    },
}

/// An opened eStargz / zstd:chunked blob.
pub struct Reader<R> {
    blob: R,
    footer: Footer,
    toc: Toc,
    toc_digest: Digest,
    index: Index,
}

impl<R: ReadAt> Reader<R> {
    /// Parses footer and TOC, checks the TOC digest when `expected_toc_digest` is given,
    /// and builds the index.
    pub fn open(blob: R, expected_toc_digest: Option<&Digest>) -> Result<Self, ReadError> {
        let blob_size = blob.size();
        let footer = read_footer(&blob)?;
        let footer_start = blob_size.saturating_sub(footer.size());
        if footer.toc_offset >= footer_start {
            return Err(ReadError::TocOutOfRange {
                toc_offset: footer.toc_offset,
                blob_size,
            });
        }
        let region_len = footer_start - footer.toc_offset;
        if region_len > MAX_TOC_REGION {
            return Err(ReadError::TocRegionTooLarge(region_len));
        }
        let region = read_range(&blob, footer.toc_offset, region_len)?;
        let (toc, toc_digest) = toc::decode(&footer, &region)?;
        if let Some(expected) = expected_toc_digest {
            if *expected != toc_digest {
                return Err(ReadError::TocDigestMismatch {
                    expected: *expected,
                    actual: toc_digest,
                });
            }
        }
        let index = Index::build(&toc, footer.toc_offset)?;
        Ok(Self {
            blob,
            footer,
            toc,
            toc_digest,
            index,
        })
    }

    pub fn toc(&self) -> &Toc {
        &self.toc
    }

    /// sha256 of the TOC JSON (compare with the `toc.digest` annotation).
    pub fn toc_digest(&self) -> &Digest {
        &self.toc_digest
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The underlying blob.
    pub fn blob(&self) -> &R {
        &self.blob
    }

    /// Reads and verifies one chunk.
    pub fn read_chunk(&self, chunk: &ChunkInfo) -> Result<Vec<u8>, ReadError> {
        let len = chunk.compressed.end.saturating_sub(chunk.compressed.start);
        let compressed = read_range(&self.blob, chunk.compressed.start, len)?;
        decompress_chunk(self.footer.format, &compressed, chunk).map_err(|source| {
            ReadError::ChunkAt {
                start: chunk.compressed.start,
                end: chunk.compressed.end,
                source,
            }
        })
    }

    /// Reads a whole regular file (hardlinks resolve to their target), every chunk verified
    /// and the whole-file digest checked when the TOC has one.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, ReadError> {
        let id = self
            .index
            .lookup(path)
            .ok_or_else(|| ReadError::NotFound(path.to_string()))?;
        self.read_entry(id, path)
    }

    fn read_entry(&self, id: EntryId, path: &str) -> Result<Vec<u8>, ReadError> {
        let entry = self
            .index
            .entry(id)
            .ok_or_else(|| ReadError::NotFound(path.to_string()))?;
        if entry.kind != EntryType::Reg {
            return Err(ReadError::NotRegular(path.to_string()));
        }
        let mut data = Vec::new();
        let mut hasher = Hasher::new();
        for chunk in entry.chunks() {
            let bytes = self.read_chunk(chunk).map_err(|e| with_path(e, path))?;
            hasher.update(&bytes);
            data.extend_from_slice(&bytes);
        }
        if let Some(expected) = entry.digest {
            let actual = hasher.finish();
            if actual != expected {
                return Err(ReadError::FileDigestMismatch {
                    path: path.to_string(),
                    expected,
                    actual,
                });
            }
        }
        Ok(data)
    }

    /// Reads and verifies every regular file of the layer.
    pub fn verify_all(&self) -> Result<(), ReadError> {
        for (id, entry) in self.index.iter() {
            if entry.kind == EntryType::Reg && entry.nlink > 0 {
                self.read_entry(id, &entry.path)?;
            }
        }
        Ok(())
    }
}

/// Cheap detection: the footer, if the blob ends with one.
pub fn is_estargz<R: ReadAt + ?Sized>(blob: &R) -> Option<Footer> {
    read_footer(blob).ok()
}

fn read_footer<R: ReadAt + ?Sized>(blob: &R) -> Result<Footer, ReadError> {
    let size = blob.size();
    let tail_len = size.min(FOOTER_MAX_SIZE as u64);
    let tail = read_range(blob, size - tail_len, tail_len)?;
    Ok(footer::parse(&tail)?)
}

fn read_range<R: ReadAt + ?Sized>(blob: &R, start: u64, len: u64) -> Result<Vec<u8>, ReadError> {
    let end = start.saturating_add(len);
    let io_err = |source| ReadError::Io { start, end, source };
    let len = usize::try_from(len).map_err(|_| io_err(io::ErrorKind::OutOfMemory.into()))?;
    let mut buf = vec![0u8; len];
    blob.read_exact_at(start, &mut buf).map_err(io_err)?;
    Ok(buf)
}

fn with_path(error: ReadError, path: &str) -> ReadError {
    match error {
        ReadError::ChunkAt { source, .. } => ReadError::Chunk {
            path: path.to_string(),
            source,
        },
        other => other,
    }
}
