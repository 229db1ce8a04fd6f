//! Seekable indexes for unconverted gzip (and uncompressed) tar layers, in the format of
//! soci-snapshotter: a zTOC per layer (file table + decompressor checkpoints + per-span
//! digests) so any file can be read by fetching and inflating only its spans.
//!
//! - [`ztoc_build`]: one streaming pass over a layer blob -> [`Ztoc`].
//! - [`ztoc`]: the zTOC and its FlatBuffers form (soci's `ztoc.fbs`, version 0.9).
//! - [`zinfo`]: checkpoints and span geometry (which bytes make up which span).
//! - [`span`]: verify and inflate one span.
//! - [`prefix`]: verify and inflate the first blocks of a span, block by block.
//! - [`blocks`]: per-block digests inside spans, a blob of our own beside the zTOC.
//! - [`lite`]: the zTOC with sparse windows, compressed: what our daemon fetches at mount.
//! - [`resume`], [`sparse_window`]: resume points inside spans, with the part of their
//!   window that is used, so a read deep into a span skips the span's head.
//! - [`prefetch`]: the prefetch artifact (spans to fetch at mount).
//! - [`learned`]: the exact compressed ranges of recorded reads, each with its digest.
//! - [`filelist`]: an eStargz layer's learned files, carried by the same index.
//! - [`totoc`]: the file table as TOC entries, for the daemon's path tree.
//! - `tarscan`, `gzip`, `inflate`, `flatbuf`: the pieces underneath.

pub mod blocks;
pub mod filelist;
mod flatbuf;
pub mod gzip;
mod index_build;
mod inflate;
mod input;
pub mod learned;
mod learned_build;
pub mod lite;
pub mod media;
pub mod prefetch;
pub mod prefix;
pub mod resume;
pub mod span;
pub mod sparse_window;
pub mod tarscan;
pub mod totoc;
pub mod zinfo;
pub mod ztoc;
pub mod ztoc_build;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_learned;
#[cfg(test)]
mod tests_resume;

pub use blocks::{SpanBlocks, BLOCKS_MEDIA_TYPE, DEFAULT_BLOCK_SIZE};
pub use flatbuf::FlatbufError;
pub use index_build::{build_index, build_ztoc_with_blocks, BuiltIndex};
pub use learned::{LearnedRanges, LEARNED_MEDIA_TYPE};
pub use lite::{from_lite, LITE_MEDIA_TYPE};
pub use prefix::{decompress_prefix, PrefixDecoder};
pub use resume::{ResumePoint, WINDOWS_MEDIA_TYPE};
pub use span::{decompress_span, SpanError};
pub use totoc::{index_of, toc_of};
pub use zinfo::{Zinfo, ZinfoError};
pub use ztoc::{Compression, FileMetadata, Ztoc, ZtocError, ZTOC_VERSION};
pub use ztoc_build::{
    build_ztoc, BuildError, BuildOptions, DEFAULT_MIN_SPAN_SIZE, DEFAULT_SPAN_SIZE,
};
