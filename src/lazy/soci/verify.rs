//! Checking a SOCI index against the layer itself, once the whole blob is here: the blob
//! matches the layer digest (the download is verified), every span inflated from its
//! checkpoint equals the same bytes of a plain sequential inflate, and the zTOC's file
//! table equals the one the tar's own headers give, every resume point decodes with its
//! window to the same bytes as far as the next point, and every learned range decodes
//! (from its own start and window) to the layer's bytes. Before this, served bytes are
//! only as good as the index that vouched for their spans; after a mismatch the layer is
//! failed.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use estargz::soci::learned::LearnedRange;
use estargz::soci::{
    build_ztoc, decompress_span, sparse_window, BuildOptions, Compression, FileMetadata,
    PrefixDecoder, SpanBlocks, Zinfo,
};
use estargz::Digest;

/// Why the index does not describe the layer.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("read the downloaded layer: {0}")]
    Io(#[from] std::io::Error),
    #[error("span {span}: {problem}")]
    Span { span: usize, problem: String },
    #[error("the tar itself cannot be indexed: {0}")]
    Tar(#[from] estargz::soci::BuildError),
    #[error("file table differs from the tar at entry {index} ({name:?})")]
    FileTable { index: usize, name: String },
    #[error("file table has {index} entries, the tar {tar}")]
    FileCount { index: usize, tar: usize },
    #[error("resume point at uncompressed {at}: {problem}")]
    Point { at: u64, problem: String },
    #[error("learned range at uncompressed {at}: {problem}")]
    Learned { at: u64, problem: String },
}

/// The resume points to check: the blocks blob and the whole windows blob (empty when
/// no point needs a window); and the learned ranges.
pub struct Points<'a> {
    pub blocks: &'a SpanBlocks,
    pub windows: &'a [u8],
    pub learned: &'a [Arc<LearnedRange>],
}

/// Checks `zinfo`, `files` and `points` (from the index) against the blob in `path`.
pub fn verify_blob(
    path: &Path,
    zinfo: &Zinfo,
    files: &[FileMetadata],
    points: Option<Points<'_>>,
) -> Result<(), VerifyError> {
    let compression = zinfo.compression();
    // The tar's own file table, from one pass of our builder over the blob.
    let theirs = build_ztoc(
        std::fs::File::open(path)?,
        compression,
        &BuildOptions::default(),
    )?;
    if theirs.files.len() != files.len() {
        return Err(VerifyError::FileCount {
            index: files.len(),
            tar: theirs.files.len(),
        });
    }
    for (index, (a, b)) in files.iter().zip(&theirs.files).enumerate() {
        if !same_entry(a, b) {
            return Err(VerifyError::FileTable {
                index,
                name: a.name.clone(),
            });
        }
    }
    // Every span from its checkpoint against the sequential stream.
    let mut blob = std::fs::File::open(path)?;
    let mut sequential: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(std::fs::File::open(
            path,
        )?)),
        Compression::Uncompressed => Box::new(std::fs::File::open(path)?),
    };
    let mut expected = Vec::new();
    for span in 0..zinfo.span_count() {
        let bad = |problem: String| VerifyError::Span { span, problem };
        let (Some(c), Some(u)) = (zinfo.compressed_range(span), zinfo.uncompressed_range(span))
        else {
            return Err(bad("missing".into()));
        };
        let compressed = read_range(&mut blob, c)?;
        let got = decompress_span(zinfo, span, &compressed).map_err(|e| bad(e.to_string()))?;
        expected.resize(
            usize::try_from(u.end - u.start).map_err(|e| bad(e.to_string()))?,
            0,
        );
        sequential.read_exact(&mut expected)?;
        if got != expected {
            return Err(bad("inflates to other bytes than the layer".into()));
        }
        if let Some(points) = &points {
            verify_points(&mut blob, zinfo, points, span, u.start, &expected)?;
            verify_learned(&mut blob, zinfo, points, span, u.start, &expected)?;
        }
    }
    Ok(())
}

/// Each resume point of `span` (whose bytes from `start` are `expected`): its window
/// matches its digest, and decoding from it gives `expected` up to the next point (or
/// the span's end; past there the decoder's history is the layer's own).
fn verify_points(
    blob: &mut std::fs::File,
    zinfo: &Zinfo,
    points: &Points<'_>,
    span: usize,
    start: u64,
    expected: &[u8],
) -> Result<(), VerifyError> {
    let blocks = points.blocks;
    let list = blocks.points_of(span);
    let span_end = start + expected.len() as u64;
    for (i, point) in list.iter().enumerate() {
        let bad = |problem: String| VerifyError::Point {
            at: point.uncompressed,
            problem,
        };
        let until = list.get(i + 1).map_or(span_end, |p| p.uncompressed);
        let w = point.window;
        let entry = usize::try_from(w.offset)
            .ok()
            .and_then(|a| points.windows.get(a..a.checked_add(w.len as usize)?))
            .ok_or_else(|| bad("window outside the windows blob".into()))?;
        if Digest::sha256(entry) != w.digest {
            return Err(bad("window does not match its digest".into()));
        }
        let window = sparse_window::decode(entry).map_err(|e| bad(e.to_string()))?;
        let mut decoder = PrefixDecoder::at_point(zinfo, blocks, point, window)
            .map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        let mut block = point.block as usize;
        while point.uncompressed + (out.len() as u64) < until && block < blocks.count(span) {
            let r = blocks
                .compressed_range(zinfo, span, block)
                .ok_or_else(|| bad("no such block".into()))?;
            let bytes = read_range(blob, r)?;
            decoder
                .feed(&bytes, &mut out)
                .map_err(|e| bad(e.to_string()))?;
            block += 1;
        }
        let from = usize::try_from(point.uncompressed - start).unwrap_or(usize::MAX);
        let len = usize::try_from(until - point.uncompressed).unwrap_or(usize::MAX);
        if out.get(..len) != expected.get(from..from.saturating_add(len)) {
            return Err(bad("decodes to other bytes than the layer".into()));
        }
    }
    Ok(())
}

/// Each learned range of `span` (whose bytes from `start` are `expected`): its compressed
/// bytes match its digest and decode, from its start and window, to the layer's bytes.
fn verify_learned(
    blob: &mut std::fs::File,
    zinfo: &Zinfo,
    points: &Points<'_>,
    span: usize,
    start: u64,
    expected: &[u8],
) -> Result<(), VerifyError> {
    for range in points.learned.iter().filter(|r| r.span == span) {
        let bad = |problem: String| VerifyError::Learned {
            at: range.needed.start,
            problem,
        };
        let bytes = read_range(blob, range.compressed.clone())?;
        let decoded =
            (range.decode(zinfo, points.blocks, &bytes)).map_err(|e| bad(e.to_string()))?;
        let from = usize::try_from(decoded.start.saturating_sub(start)).unwrap_or(usize::MAX);
        let want = expected.get(from..from.saturating_add(decoded.out.len()));
        if want != Some(&decoded.out[..]) {
            return Err(bad("decodes to other bytes than the layer".into()));
        }
    }
    Ok(())
}

/// The bytes `range` of the downloaded blob.
fn read_range(blob: &mut std::fs::File, range: Range<u64>) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(range.end - range.start).map_err(std::io::Error::other)?;
    let mut bytes = vec![0; len];
    blob.seek(SeekFrom::Start(range.start))?;
    blob.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The fields a reader relies on; times compared as instants (writers format them
/// differently), PAX records not compared (Go keeps more of them than we do).
fn same_entry(a: &FileMetadata, b: &FileMetadata) -> bool {
    let instant = |t: &str| {
        estargz::TocEntry {
            mod_time: t.to_owned(),
            ..Default::default()
        }
        .mtime_unix()
    };
    a.name == b.name
        && a.entry_type == b.entry_type
        && a.uncompressed_offset == b.uncompressed_offset
        && a.uncompressed_size == b.uncompressed_size
        && a.link_name == b.link_name
        && a.mode & 0o7777 == b.mode & 0o7777
        && a.uid == b.uid
        && a.gid == b.gid
        && a.dev_major == b.dev_major
        && a.dev_minor == b.dev_minor
        && instant(&a.mod_time) == instant(&b.mod_time)
        && a.pax
            .iter()
            .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
            .eq(b.pax.iter().filter(|(k, _)| k.starts_with("SCHILY.xattr.")))
}
