//! The zTOC: a layer's file table plus its decompression info, and its FlatBuffers form in
//! soci-snapshotter's `ztoc.fbs` schema (version "0.9"), so zTOCs built by soci's tools and
//! by ours read the same.

use crate::digest::Digest;
use crate::toc::EntryType;

use super::flatbuf::{Builder, FlatbufError, Offset, Table};

/// The zTOC format version written and understood.
pub const ZTOC_VERSION: &str = "0.9";

/// Limits on what a parsed zTOC may claim (it comes from a registry).
pub const MAX_FILES: usize = 4_000_000;
pub const MAX_SPANS: usize = 1 << 20;

/// Errors from decoding a zTOC.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZtocError {
    #[error("ztoc flatbuffer: {0}")]
    Flatbuf(#[from] FlatbufError),
    #[error("ztoc version {0:?} is not supported (want {ZTOC_VERSION})")]
    Version(String),
    #[error("ztoc has no {0} table")]
    Missing(&'static str),
    #[error("ztoc entry {index} has unknown type {kind:?}")]
    EntryType { index: usize, kind: String },
    #[error("ztoc field {field} of entry {index} is out of range")]
    Range { index: usize, field: &'static str },
    #[error("ztoc compression algorithm {0} is unknown")]
    Algorithm(i8),
    #[error("ztoc span digest {index} is malformed")]
    SpanDigest { index: usize },
    #[error("ztoc claims {0} entries, over the limit")]
    TooLarge(usize),
    #[error("ztoc claims {claimed} spans but lists {digests} span digests")]
    SpanCount { claimed: i64, digests: usize },
}

/// How the layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Uncompressed,
}

impl Compression {
    fn to_fb(self) -> i8 {
        match self {
            Compression::Gzip => 1,
            Compression::Uncompressed => 2,
        }
    }

    fn from_fb(v: i8) -> Result<Self, ZtocError> {
        match v {
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Uncompressed),
            other => Err(ZtocError::Algorithm(other)),
        }
    }
}

/// One tar entry as the zTOC records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    pub name: String,
    pub entry_type: EntryType,
    /// Where the entry's content starts in the uncompressed tar.
    pub uncompressed_offset: u64,
    pub uncompressed_size: u64,
    pub link_name: String,
    /// The tar header's mode field as written (may carry type bits).
    pub mode: i64,
    pub uid: u32,
    pub gid: u32,
    pub uname: String,
    pub gname: String,
    /// RFC 3339, fraction kept when the tar had one.
    pub mod_time: String,
    pub dev_major: i64,
    pub dev_minor: i64,
    /// The entry's PAX records, sorted by key (xattrs are `SCHILY.xattr.<name>`).
    pub pax: Vec<(String, Vec<u8>)>,
}

/// A whole zTOC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ztoc {
    pub version: String,
    pub build_tool_identifier: String,
    pub compressed_archive_size: u64,
    pub uncompressed_archive_size: u64,
    pub files: Vec<FileMetadata>,
    pub compression: Compression,
    /// Number of spans minus one.
    pub max_span_id: u32,
    /// sha256 of each span's compressed bytes.
    pub span_digests: Vec<Digest>,
    /// The checkpoints blob (gzip) or a `TarZinfo` flatbuffer (uncompressed); see `zinfo`.
    pub checkpoints: Vec<u8>,
}

fn type_name(t: EntryType) -> &'static str {
    match t {
        EntryType::Dir => "dir",
        EntryType::Reg | EntryType::Chunk => "reg",
        EntryType::Symlink => "symlink",
        EntryType::Hardlink => "hardlink",
        EntryType::Char => "char",
        EntryType::Block => "block",
        EntryType::Fifo => "fifo",
    }
}

fn type_from_name(name: &[u8]) -> Option<EntryType> {
    Some(match name {
        b"dir" => EntryType::Dir,
        b"reg" => EntryType::Reg,
        b"symlink" => EntryType::Symlink,
        b"hardlink" => EntryType::Hardlink,
        b"char" => EntryType::Char,
        b"block" => EntryType::Block,
        b"fifo" => EntryType::Fifo,
        _ => return None,
    })
}

fn i64_of(v: u64) -> i64 {
    // Sizes above i64::MAX cannot come out of a real tar; saturate rather than wrap.
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Ztoc {
    /// The FlatBuffers bytes (the zTOC blob pushed to a registry).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Builder::new();
        let version = b.string(self.version.as_bytes());
        let tool = b.string(self.build_tool_identifier.as_bytes());
        let files: Vec<Offset> = self.files.iter().map(|f| file_to_fb(&mut b, f)).collect();
        let metadata = b.offsets(&files);
        b.start_table();
        b.add_offset(0, metadata);
        let toc = b.end_table();
        let checkpoints = b.bytes(&self.checkpoints);
        let digests: Vec<Offset> = self
            .span_digests
            .iter()
            .map(|d| b.string(d.to_string().as_bytes()))
            .collect();
        let digests = b.offsets(&digests);
        b.start_table();
        b.add_i8(0, self.compression.to_fb());
        b.add_i32(1, i32::try_from(self.max_span_id).unwrap_or(i32::MAX));
        b.add_offset(2, digests);
        b.add_offset(3, checkpoints);
        let info = b.end_table();
        b.start_table();
        b.add_offset(0, version);
        b.add_offset(1, tool);
        b.add_i64(2, i64_of(self.compressed_archive_size));
        b.add_i64(3, i64_of(self.uncompressed_archive_size));
        b.add_offset(4, toc);
        b.add_offset(5, info);
        let root = b.end_table();
        b.finish(root)
    }

    /// Decodes and checks a zTOC blob. Never panics on hostile bytes.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, ZtocError> {
        let root = Table::root(buf)?;
        let version = String::from_utf8_lossy(root.bytes(0)?).into_owned();
        if version != ZTOC_VERSION {
            return Err(ZtocError::Version(version));
        }
        let size =
            |v: i64, field| u64::try_from(v).map_err(|_| ZtocError::Range { index: 0, field });
        let toc = root.table(4)?.ok_or(ZtocError::Missing("toc"))?;
        let entries = toc.vector(0)?;
        if entries.len() > MAX_FILES {
            return Err(ZtocError::TooLarge(entries.len()));
        }
        let files = (0..entries.len())
            .map(|i| file_from_fb(&entries.table(i)?, i))
            .collect::<Result<Vec<_>, _>>()?;
        let info = root
            .table(5)?
            .ok_or(ZtocError::Missing("compression_info"))?;
        let digests = info.vector(2)?;
        if digests.len() > MAX_SPANS {
            return Err(ZtocError::TooLarge(digests.len()));
        }
        let span_digests = (0..digests.len())
            .map(|i| {
                std::str::from_utf8(digests.bytes(i)?)
                    .ok()
                    .and_then(|s| s.parse::<Digest>().ok())
                    .ok_or(ZtocError::SpanDigest { index: i })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_span_id = info.i32(1, 0)?;
        if usize::try_from(i64::from(max_span_id) + 1).ok() != Some(span_digests.len()) {
            return Err(ZtocError::SpanCount {
                claimed: i64::from(max_span_id) + 1,
                digests: span_digests.len(),
            });
        }
        Ok(Self {
            version,
            build_tool_identifier: String::from_utf8_lossy(root.bytes(1)?).into_owned(),
            compressed_archive_size: size(root.i64(2, 0)?, "compressed_archive_size")?,
            uncompressed_archive_size: size(root.i64(3, 0)?, "uncompressed_archive_size")?,
            files,
            compression: Compression::from_fb(info.i8(0, 1)?)?,
            max_span_id: u32::try_from(max_span_id).unwrap_or(0),
            span_digests,
            checkpoints: info.bytes(3)?.to_vec(),
        })
    }
}

fn file_to_fb(b: &mut Builder, f: &FileMetadata) -> Offset {
    let name = b.string(f.name.as_bytes());
    let kind = b.shared_string(type_name(f.entry_type).as_bytes());
    let link = b.shared_string(f.link_name.as_bytes());
    let uname = b.shared_string(f.uname.as_bytes());
    let gname = b.shared_string(f.gname.as_bytes());
    let mtime = b.shared_string(f.mod_time.as_bytes());
    let xattrs: Vec<Offset> = f
        .pax
        .iter()
        .map(|(k, v)| {
            let key = b.shared_string(k.as_bytes());
            let value = b.string(v);
            b.start_table();
            b.add_offset(0, key);
            b.add_offset(1, value);
            b.end_table()
        })
        .collect();
    let xattrs = b.offsets(&xattrs);
    // Scalars equal to the schema default (0) are left out, as FlatBuffers writers do.
    b.start_table();
    for (slot, v) in [
        (2, i64_of(f.uncompressed_offset)),
        (3, i64_of(f.uncompressed_size)),
        (5, f.mode),
        (11, f.dev_major),
        (12, f.dev_minor),
    ] {
        if v != 0 {
            b.add_i64(slot, v);
        }
    }
    for (slot, v) in [(6, f.uid), (7, f.gid)] {
        if v != 0 {
            b.add_u32(slot, v);
        }
    }
    b.add_offset(0, name);
    b.add_offset(1, kind);
    b.add_offset(4, link);
    b.add_offset(8, uname);
    b.add_offset(9, gname);
    b.add_offset(10, mtime);
    b.add_offset(13, xattrs);
    b.end_table()
}

fn file_from_fb(t: &Table<'_>, index: usize) -> Result<FileMetadata, ZtocError> {
    let text = |slot| -> Result<String, ZtocError> {
        Ok(String::from_utf8_lossy(t.bytes(slot)?).into_owned())
    };
    let size = |slot, field| -> Result<u64, ZtocError> {
        u64::try_from(t.i64(slot, 0)?).map_err(|_| ZtocError::Range { index, field })
    };
    let kind = t.bytes(1)?;
    let entry_type = type_from_name(kind).ok_or_else(|| ZtocError::EntryType {
        index,
        kind: String::from_utf8_lossy(kind).into_owned(),
    })?;
    let xattrs = t.vector(13)?;
    let pax = (0..xattrs.len())
        .map(|i| {
            let x = xattrs.table(i)?;
            Ok((
                String::from_utf8_lossy(x.bytes(0)?).into_owned(),
                x.bytes(1)?.to_vec(),
            ))
        })
        .collect::<Result<Vec<_>, ZtocError>>()?;
    Ok(FileMetadata {
        name: text(0)?,
        entry_type,
        uncompressed_offset: size(2, "uncompressed_offset")?,
        uncompressed_size: size(3, "uncompressed_size")?,
        link_name: text(4)?,
        mode: t.i64(5, 0)?,
        uid: t.u32(6, 0)?,
        gid: t.u32(7, 0)?,
        uname: text(8)?,
        gname: text(9)?,
        mod_time: text(10)?,
        dev_major: t.i64(11, 0)?,
        dev_minor: t.i64(12, 0)?,
        pax,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Ztoc {
        Ztoc {
            version: ZTOC_VERSION.into(),
            build_tool_identifier: "test".into(),
            compressed_archive_size: 1234,
            uncompressed_archive_size: 10240,
            files: vec![FileMetadata {
                name: "etc/passwd".into(),
                entry_type: EntryType::Reg,
                uncompressed_offset: 512,
                uncompressed_size: 20,
                link_name: String::new(),
                mode: 0o100644,
                uid: 1,
                gid: 2,
                uname: "u".into(),
                gname: "g".into(),
                mod_time: "2024-01-02T03:04:05Z".into(),
                dev_major: 0,
                dev_minor: 0,
                pax: vec![("SCHILY.xattr.user.a".into(), vec![0, 255, 1])],
            }],
            compression: Compression::Gzip,
            max_span_id: 1,
            span_digests: vec![Digest::sha256(b"a"), Digest::sha256(b"b")],
            checkpoints: vec![9; 100],
        }
    }

    #[test]
    fn flatbuffer_round_trip() {
        let z = sample();
        assert_eq!(Ztoc::from_bytes(&z.to_bytes()).unwrap(), z);
    }

    #[test]
    fn wrong_version_and_span_count_are_refused() {
        let mut z = sample();
        z.version = "1.0".into();
        assert!(matches!(
            Ztoc::from_bytes(&z.to_bytes()),
            Err(ZtocError::Version(_))
        ));
        let mut z = sample();
        z.max_span_id = 5;
        assert!(matches!(
            Ztoc::from_bytes(&z.to_bytes()),
            Err(ZtocError::SpanCount { .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            let _ = Ztoc::from_bytes(&bytes[..cut]);
        }
    }
}
