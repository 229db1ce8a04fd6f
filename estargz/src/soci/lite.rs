//! The lite zTOC, ours: the zTOC with each checkpoint's window made sparse (the bytes the
//! data after it never refers to zeroed, [`super::sparse_window`]), zstd-compressed. It
//! is pushed beside the zTOC (media type [`LITE_MEDIA_TYPE`], a further layer of the SOCI
//! index manifest bound by the layer-digest annotation), so a daemon that knows it
//! fetches its file table and span geometry at mount for a fraction of the zTOC's bytes
//! (the zTOC's windows are 32 KiB each, raw). Decoded, it is a zTOC like any other and
//! is checked the same way: it describes the same spans, and every span inflates from it
//! exactly as from the zTOC.

use super::zinfo;
use super::ztoc::{Compression, Ztoc, ZtocError};

/// Media type of a lite zTOC blob.
pub const LITE_MEDIA_TYPE: &str = "application/vnd.estargz.soci.ztoc-lite.v1+zstd";
/// Largest lite blob a reader fetches.
pub const MAX_LITE_SIZE: u64 = 32 << 20;
/// Largest zTOC a lite blob may decode to.
const MAX_DECODED: usize = 256 << 20;
const LEVEL: i32 = 9;

/// Why a lite zTOC cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LiteError {
    #[error("lite ztoc does not decompress: {0}")]
    Zstd(std::io::Error),
    #[error("lite ztoc: {0}")]
    Ztoc(#[from] ZtocError),
}

/// The lite form of `ztoc`, whose checkpoint `i` has the sparse window `windows[i]`
/// (checkpoints without one keep their whole window).
pub fn lite_bytes(ztoc: &Ztoc, windows: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut lite = ztoc.clone();
    if lite.compression == Compression::Gzip {
        for (index, window) in windows {
            zinfo::set_window(&mut lite.checkpoints, *index, window);
        }
    }
    zstd::bulk::compress(&lite.to_bytes(), LEVEL).unwrap_or_default()
}

/// The zTOC a lite blob holds.
pub fn from_lite(bytes: &[u8]) -> Result<Ztoc, LiteError> {
    let decoded = zstd::bulk::decompress(bytes, MAX_DECODED).map_err(LiteError::Zstd)?;
    Ok(Ztoc::from_bytes(&decoded)?)
}
