//! Span geometry of a zTOC: the gzip checkpoints blob (soci's zinfo v2 layout, v1 read
//! too) or the `TarZinfo` of an uncompressed layer, checked, and the mapping between
//! spans and compressed / uncompressed byte ranges.
//!
//! Checkpoints blob: `i32 count`, `i64 span_size`, then per checkpoint `i64 compressed
//! offset`, `i64 uncompressed offset`, `u8 bits`, 32 KiB window; all little endian.
//! v1 blobs omit checkpoint 0 (then implied at offset 10 with an empty window).

use std::ops::Range;

use crate::digest::Digest;

use super::flatbuf::{Builder, FlatbufError, Table};
use super::inflate::WINDOW;
use super::ztoc::{Compression, Ztoc, MAX_SPANS};

const HEADER: usize = 4 + 8;
const PACKED: usize = 8 + 8 + 1 + WINDOW;
const TAR_ZINFO_VERSION: i32 = 2;

/// Errors in a zTOC's span geometry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZinfoError {
    #[error("checkpoints blob of {len} bytes does not hold {count} checkpoints")]
    BlobSize { len: usize, count: i64 },
    #[error("checkpoint {index} is inconsistent ({what})")]
    Checkpoint { index: usize, what: &'static str },
    #[error("tar zinfo: {0}")]
    TarZinfo(#[from] FlatbufError),
    #[error("span size {0} is invalid")]
    SpanSize(i64),
    #[error("{spans} spans but {digests} span digests")]
    DigestCount { spans: usize, digests: usize },
}

/// One decompressor checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// First whole compressed byte after the checkpoint.
    pub compressed: u64,
    pub uncompressed: u64,
    /// Bits (0..=7) of the byte before `compressed` that belong to the next block.
    pub bits: u8,
    /// Where its window sits in the blob (`None`: all zeros, v1's implied checkpoint 0).
    window: Option<usize>,
}

/// Appends checkpoints into a blob as they are found.
pub struct CheckpointWriter {
    blob: Vec<u8>,
    count: i32,
}

impl CheckpointWriter {
    pub fn new(span_size: u64) -> Self {
        let mut blob = Vec::with_capacity(HEADER + 8 * PACKED);
        blob.extend_from_slice(&0i32.to_le_bytes());
        blob.extend_from_slice(&i64::try_from(span_size).unwrap_or(i64::MAX).to_le_bytes());
        Self { blob, count: 0 }
    }

    /// Adds a checkpoint; `window` must be exactly 32 KiB.
    pub fn push(&mut self, compressed: u64, uncompressed: u64, bits: u8, window: &[u8]) {
        debug_assert_eq!(window.len(), WINDOW);
        for v in [compressed, uncompressed] {
            self.blob
                .extend_from_slice(&i64::try_from(v).unwrap_or(i64::MAX).to_le_bytes());
        }
        self.blob.push(bits);
        self.blob.extend_from_slice(window);
        self.count += 1;
    }

    pub fn count(&self) -> usize {
        usize::try_from(self.count).unwrap_or(0)
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.blob[..4].copy_from_slice(&self.count.to_le_bytes());
        self.blob
    }
}

/// Replaces the window of checkpoint `index` in a gzip checkpoints blob (v2 layout) with
/// `window` (32 KiB); a blob too short for it is left alone.
pub(crate) fn set_window(blob: &mut [u8], index: usize, window: &[u8]) {
    let at = HEADER + index * PACKED + 17;
    if window.len() == WINDOW {
        if let Some(slot) = blob.get_mut(at..at + WINDOW) {
            slot.copy_from_slice(window);
        }
    }
}

/// The `TarZinfo` flatbuffer of an uncompressed layer.
pub fn tar_zinfo_bytes(span_size: u64, size: u64) -> Vec<u8> {
    let mut b = Builder::new();
    b.start_table();
    b.add_i64(1, i64::try_from(span_size).unwrap_or(i64::MAX));
    b.add_i64(2, i64::try_from(size).unwrap_or(i64::MAX));
    b.add_i32(0, TAR_ZINFO_VERSION);
    let root = b.end_table();
    b.finish(root)
}

/// The checked span geometry of one zTOC.
#[derive(Debug, Clone)]
pub struct Zinfo {
    compression: Compression,
    span_size: u64,
    points: Vec<Checkpoint>,
    blob: Vec<u8>,
    compressed_size: u64,
    uncompressed_size: u64,
    digests: Vec<Digest>,
}

impl Zinfo {
    /// Checks the zTOC's checkpoints against its sizes and span digests.
    pub fn new(ztoc: &Ztoc) -> Result<Self, ZinfoError> {
        let (span_size, points) = match ztoc.compression {
            Compression::Gzip => gzip_points(&ztoc.checkpoints)?,
            Compression::Uncompressed => tar_points(&ztoc.checkpoints)?,
        };
        check_points(&points, ztoc)?;
        if points.len() != ztoc.span_digests.len() {
            return Err(ZinfoError::DigestCount {
                spans: points.len(),
                digests: ztoc.span_digests.len(),
            });
        }
        Ok(Self {
            compression: ztoc.compression,
            span_size,
            blob: if ztoc.compression == Compression::Gzip {
                ztoc.checkpoints.clone()
            } else {
                Vec::new()
            },
            points,
            compressed_size: ztoc.compressed_archive_size,
            uncompressed_size: ztoc.uncompressed_archive_size,
            digests: ztoc.span_digests.clone(),
        })
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The nominal span size the index was built with.
    pub fn span_size(&self) -> u64 {
        self.span_size
    }

    pub fn span_count(&self) -> usize {
        self.points.len()
    }

    pub fn uncompressed_size(&self) -> u64 {
        self.uncompressed_size
    }

    pub fn checkpoint(&self, span: usize) -> Option<&Checkpoint> {
        self.points.get(span)
    }

    /// The saved window of a checkpoint (all zeros for an implied one).
    pub fn window(&self, span: usize) -> &[u8] {
        static ZEROS: [u8; WINDOW] = [0; WINDOW];
        match self.points.get(span).and_then(|p| p.window) {
            Some(at) => &self.blob[at..at + WINDOW],
            None => &ZEROS,
        }
    }

    pub fn digest(&self, span: usize) -> Option<&Digest> {
        self.digests.get(span)
    }

    /// The compressed bytes to fetch for a span: from the checkpoint (one byte earlier
    /// when it starts mid-byte) to the next checkpoint, or to the end of the blob.
    pub fn compressed_range(&self, span: usize) -> Option<Range<u64>> {
        let p = self.points.get(span)?;
        let start = p.compressed - u64::from(p.bits != 0);
        let end = self
            .points
            .get(span + 1)
            .map_or(self.compressed_size, |n| n.compressed);
        Some(start..end)
    }

    /// The uncompressed bytes a span decodes to.
    pub fn uncompressed_range(&self, span: usize) -> Option<Range<u64>> {
        let p = self.points.get(span)?;
        let end = self
            .points
            .get(span + 1)
            .map_or(self.uncompressed_size, |n| n.uncompressed);
        Some(p.uncompressed..end)
    }

    /// The span holding uncompressed offset `offset`, if it is inside the archive.
    pub fn span_of(&self, offset: u64) -> Option<usize> {
        if offset >= self.uncompressed_size {
            return None;
        }
        Some(
            self.points
                .partition_point(|p| p.uncompressed <= offset)
                .saturating_sub(1),
        )
    }

    /// The spans covering an uncompressed range (empty for an empty range).
    pub fn spans_for(&self, range: Range<u64>) -> Range<usize> {
        let end = range.end.min(self.uncompressed_size);
        if range.start >= end {
            return 0..0;
        }
        match (self.span_of(range.start), self.span_of(end - 1)) {
            (Some(a), Some(b)) => a..b + 1,
            _ => 0..0,
        }
    }
}

fn le_u64(blob: &[u8], at: usize) -> Option<i64> {
    blob.get(at..at + 8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

fn gzip_points(blob: &[u8]) -> Result<(u64, Vec<Checkpoint>), ZinfoError> {
    let count = blob
        .get(..4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
        .unwrap_or(-1);
    let size_err = || ZinfoError::BlobSize {
        len: blob.len(),
        count: i64::from(count),
    };
    let span = le_u64(blob, 4).ok_or_else(size_err)?;
    let count = usize::try_from(count).map_err(|_| size_err())?;
    if count == 0 || count > MAX_SPANS {
        return Err(size_err());
    }
    let full = HEADER + count * PACKED;
    let stored = if blob.len() == full {
        count
    } else if blob.len() + PACKED == full {
        count - 1
    } else {
        return Err(size_err());
    };
    let mut points = Vec::with_capacity(count);
    if stored < count {
        points.push(Checkpoint {
            compressed: 10,
            uncompressed: 0,
            bits: 0,
            window: None,
        });
    }
    for i in 0..stored {
        let at = HEADER + i * PACKED;
        let index = points.len();
        let field = |v: Option<i64>, what| {
            v.and_then(|v| u64::try_from(v).ok())
                .ok_or(ZinfoError::Checkpoint { index, what })
        };
        points.push(Checkpoint {
            compressed: field(le_u64(blob, at), "compressed offset")?,
            uncompressed: field(le_u64(blob, at + 8), "uncompressed offset")?,
            bits: blob[at + 16],
            window: Some(at + 17),
        });
    }
    let span = u64::try_from(span).map_err(|_| ZinfoError::SpanSize(span))?;
    Ok((span, points))
}

fn tar_points(bytes: &[u8]) -> Result<(u64, Vec<Checkpoint>), ZinfoError> {
    let t = Table::root(bytes)?;
    let span = t.i64(1, 0)?;
    let size = t.i64(2, 0)?;
    let span_u = u64::try_from(span)
        .ok()
        .filter(|&s| s > 0)
        .ok_or(ZinfoError::SpanSize(span))?;
    let size_u = u64::try_from(size).map_err(|_| ZinfoError::SpanSize(span))?;
    let count = size_u.div_ceil(span_u).max(1);
    if usize::try_from(count).map_or(true, |c| c > MAX_SPANS) {
        return Err(ZinfoError::SpanSize(span));
    }
    let points = (0..count)
        .map(|i| Checkpoint {
            compressed: i * span_u,
            uncompressed: i * span_u,
            bits: 0,
            window: None,
        })
        .collect();
    Ok((span_u, points))
}

fn check_points(points: &[Checkpoint], ztoc: &Ztoc) -> Result<(), ZinfoError> {
    for (index, p) in points.iter().enumerate() {
        let bad = |what| Err(ZinfoError::Checkpoint { index, what });
        if p.bits > 7 {
            return bad("bits over 7");
        }
        if p.bits != 0 && p.compressed == 0 {
            return bad("bits before the first byte");
        }
        if p.compressed > ztoc.compressed_archive_size {
            return bad("compressed offset past the blob");
        }
        if p.uncompressed > ztoc.uncompressed_archive_size {
            return bad("uncompressed offset past the archive");
        }
        if let Some(prev) = index.checked_sub(1).and_then(|i| points.get(i)) {
            if p.compressed < prev.compressed || p.uncompressed <= prev.uncompressed {
                return bad("offsets not increasing");
            }
        } else if p.uncompressed != 0 {
            return bad("first checkpoint not at 0");
        }
    }
    Ok(())
}
