//! Tar stream -> eStargz or zstd:chunked blob: chunking, prioritized files and landmarks,
//! parallel compression, TOC and footer. Returns the digests and sizes a manifest needs.
//!
//! Layout (as the Go reference writes it, so its tooling reads our blobs): the tar header
//! bytes of each entry go into the current compressed member; a regular file's data starts
//! a new member per chunk, and the bytes after a file's last chunk (padding, following
//! headers) stay in that chunk's member. Then the TOC and the footer.
//!
//! Threads: members are compressed on rayon's global pool, shared by every conversion in
//! the process, so converting several layers at once shares the cores instead of
//! oversubscribing them. `threads` bounds how much of this layer is in flight, which also
//! bounds memory (about `2 * threads * chunk_size` plus the compressed copies). `build` may be called from
//! inside a rayon pool: while waiting it runs other pool jobs instead of blocking.

mod emit;
mod order;
mod pipeline;
mod tarsplit;

use std::io::{Read, Write};

use crate::digest::Digest;
use crate::toc::{
    TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION, ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
};

pub use tarsplit::TarError;

/// Default chunk size: 4 MiB, like the Go reference.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// Compression of the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// eStargz with gzip members; level 1..=12 (libdeflate), 9 matches ctr-remote.
    Gzip { level: i32 },
    /// zstd:chunked with zstd frames; level 1..=22.
    Zstd { level: i32 },
}

impl Compression {
    /// gzip at level 9, ctr-remote's default.
    pub const DEFAULT_GZIP: Compression = Compression::Gzip { level: 9 };
    /// zstd at level 3.
    pub const DEFAULT_ZSTD: Compression = Compression::Zstd { level: 3 };
}

impl Default for Compression {
    fn default() -> Self {
        Self::DEFAULT_GZIP
    }
}

/// How to write a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Largest uncompressed chunk of a regular file, bytes (default 4 MiB; minimum 1).
    pub chunk_size: u64,
    pub compression: Compression,
    /// Files to put first (in this order) and mark with `.prefetch.landmark`.
    pub prioritized_files: Vec<String>,
    /// Parallelism wanted for this layer (0 = available parallelism): at most
    /// `2 * threads * chunk_size` uncompressed bytes are queued or compressing at once.
    /// The work runs on rayon's global pool, whose size caps the total across concurrent
    /// conversions.
    pub threads: usize,
    /// Directory for the spool file that reordering for prioritized files needs
    /// (default: the system temp dir). The file is anonymous and gone when the build ends.
    pub spool_dir: Option<std::path::PathBuf>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            compression: Compression::default(),
            prioritized_files: Vec::new(),
            threads: 0,
            spool_dir: None,
        }
    }
}

/// Where the compressed TOC of a zstd:chunked blob is (for its annotations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdManifestInfo {
    /// sha256 of the compressed TOC bytes.
    pub checksum: Digest,
    /// Blob offset of the compressed TOC bytes.
    pub offset: u64,
    pub compressed_len: u64,
    pub uncompressed_len: u64,
}

/// What a finished conversion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// sha256 of the TOC JSON (the `toc.digest` annotation).
    pub toc_digest: Digest,
    /// sha256 of the uncompressed output stream (the layer's DiffID).
    pub diff_id: Digest,
    /// sha256 of the blob.
    pub blob_digest: Digest,
    /// Size of the blob.
    pub compressed_size: u64,
    /// Size of the uncompressed output stream.
    pub uncompressed_size: u64,
    /// Blob offset of the TOC (gzip member or compressed zstd bytes).
    pub toc_offset: u64,
    pub zstd_manifest: Option<ZstdManifestInfo>,
}

impl WriteResult {
    /// Layer descriptor annotations for this blob, as (key, value) pairs.
    pub fn annotations(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (
                TOC_DIGEST_ANNOTATION.to_string(),
                self.toc_digest.to_string(),
            ),
            (
                UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
                self.uncompressed_size.to_string(),
            ),
        ];
        if let Some(zstd) = &self.zstd_manifest {
            out.push((
                ZSTD_MANIFEST_CHECKSUM_ANNOTATION.to_string(),
                zstd.checksum.to_string(),
            ));
            out.push((
                ZSTD_MANIFEST_POSITION_ANNOTATION.to_string(),
                format!(
                    "{}:{}:{}:1",
                    zstd.offset, zstd.compressed_len, zstd.uncompressed_len
                ),
            ));
        }
        out
    }
}

/// Errors from writing a blob.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("write output: {0}")]
    Output(#[source] std::io::Error),
    #[error("spool input to a temporary file: {0}")]
    Spool(#[source] std::io::Error),
    #[error("compress member: {0}")]
    Compress(#[source] std::io::Error),
    #[error("invalid option: {0}")]
    Options(&'static str),
}

/// Converts the tar stream `tar` into a blob written to `out`.
pub fn build(
    tar: impl Read,
    out: impl Write,
    opts: &WriterOptions,
) -> Result<WriteResult, WriteError> {
    if opts.chunk_size == 0 {
        return Err(WriteError::Options("chunk_size must be at least 1"));
    }
    if opts.chunk_size > crate::MAX_CHUNK_SIZE {
        return Err(WriteError::Options(
            "chunk_size must be at most 128 MiB (estargz::MAX_CHUNK_SIZE)",
        ));
    }
    match opts.compression {
        Compression::Gzip { level } if !(0..=12).contains(&level) => {
            return Err(WriteError::Options("gzip level must be 0..=12"));
        }
        Compression::Zstd { level } if !(-7..=22).contains(&level) => {
            return Err(WriteError::Options("zstd level must be -7..=22"));
        }
        _ => {}
    }
    order::write_layer(tar, out, opts)
}
