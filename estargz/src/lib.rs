//! The eStargz and zstd:chunked layer formats: read and write seekable layer blobs.
//!
//! No async runtime, HTTP or FUSE here: both the converter and the daemon build on it.

pub mod digest;

pub use digest::{Digest, DigestError, Hasher};
