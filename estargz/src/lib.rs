//! The eStargz and zstd:chunked layer formats: read and write seekable layer blobs.
//!
//! No async runtime, HTTP or FUSE here: both the converter and the daemon build on it.
//!
//! - [`footer`]: find the TOC from the last bytes of a blob.
//! - [`toc`]: the TOC JSON and decoding it from the blob.
//! - [`index`]: a path tree over the TOC with chunk ranges, for lookups and reads.
//! - [`chunk`]: decompress and verify one chunk.
//! - [`reader`]: open a whole blob (any [`ReadAt`]) and read verified files.
//! - [`writer`]: convert a tar stream into an eStargz or zstd:chunked blob.
//! - [`soci`]: seekable indexes (zTOCs) for unconverted gzip layers, soci's format.

pub mod chunk;
pub mod digest;
pub mod footer;
pub mod index;
mod modtime;
pub mod path;
pub mod reader;
pub mod soci;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
pub mod toc;
pub mod writer;

#[cfg(test)]
mod tests;

pub use chunk::{decompress_chunk, ChunkError};
pub use digest::{Digest, DigestError, Hasher};
pub use footer::{Footer, FooterError, Format, FOOTER_MAX_SIZE};
pub use index::{ChunkInfo, DirEntry, Entry, EntryId, Index, IndexError, MAX_CHUNK_SIZE};
pub use reader::{is_estargz, ReadAt, ReadError, Reader};
pub use toc::{
    EntryType, Toc, TocEntry, TocError, LANDMARK_CONTENTS, MAX_NAME_LEN, MAX_TOC_ENTRIES,
    MAX_TOC_JSON_SIZE, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_DIGEST_ANNOTATION,
    TOC_TAR_NAME, UNCOMPRESSED_SIZE_ANNOTATION, ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
};
pub use writer::{build, Compression, WriteError, WriteResult, WriterOptions, ZstdManifestInfo};
