//! `Index`: the TOC turned into a path tree addressed by compact ids, with each regular
//! file's chunks mapped to blob byte ranges. The daemon's inode table builds on it.
//!
//! Rules applied while building, in TOC order:
//! - names are normalised (no `./`, leading `/` or trailing `/`; `.` and `..` resolved
//!   lexically); a name escaping the root is an error;
//! - missing parent directories are created implicitly (mode 0755, owned by root);
//! - duplicate paths: a later directory entry updates an earlier (or implicit) directory's
//!   metadata and keeps its children; a later non-directory replaces an earlier
//!   non-directory ("later wins", as when a tar is unpacked); a directory and a
//!   non-directory on the same path is an error;
//! - hardlinks resolve to their target's id (which must appear earlier) and raise its link count;
//! - `stargz.index.json` and the landmark files at the root are recorded, not shown.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

mod build;

use crate::digest::Digest;
use crate::toc::{
    self, EachError, EntryType, Toc, TocEntry, TocError, MAX_NAME_LEN, MAX_TOC_ENTRIES,
    MAX_TOC_JSON_SIZE,
};

/// Compact id of an entry; the root directory is [`Index::ROOT`].
pub type EntryId = u32;

/// Errors from building an index.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("toc entry {0:?} escapes the layer root")]
    EscapingPath(String),
    #[error("toc entry {0:?} has an empty name")]
    EmptyName(String),
    #[error("toc entry {path:?}: a directory and a non-directory share this path")]
    DuplicateConflict { path: String },
    #[error("toc entry {path:?}: parent {parent:?} is not a directory")]
    ParentNotDir { path: String, parent: String },
    #[error("hardlink {path:?} points to {target:?}, which is not an earlier non-directory entry")]
    BadHardlink { path: String, target: String },
    #[error("chunk entry {0:?} does not follow a regular file of that name")]
    OrphanChunk(String),
    #[error("file {path:?}: chunks do not cover its {size} bytes exactly")]
    BadChunks { path: String, size: u64 },
    #[error("file {path:?}: data offset {offset} is not before the toc at {toc_offset}")]
    BadOffset {
        path: String,
        offset: u64,
        toc_offset: u64,
    },
    #[error("index would hold more than {MAX_TOC_ENTRIES} entries")]
    TooManyEntries,
    #[error("toc entry {name:?}: name or link target is {len} bytes, more than {MAX_NAME_LEN}")]
    NameTooLong { name: String, len: usize },
    #[error(
        "index paths exceed {MAX_INDEX_PATH_BYTES} bytes (too many deep implicit directories)"
    )]
    PathsTooLarge,
    #[error("file {path:?}: chunk of {size} bytes is larger than {MAX_CHUNK_SIZE}")]
    ChunkTooLarge { path: String, size: u64 },
}

/// Why [`Index::parse`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Toc(#[from] TocError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Largest uncompressed chunk accepted: each chunk is decompressed into memory in one
/// piece, so a TOC declaring bigger ones is rejected when the index is built (writers,
/// ours and Go's, use 4 MiB).
pub const MAX_CHUNK_SIZE: u64 = 128 << 20;
/// Most bytes of entry paths an index holds: the TOC JSON limit. Implicit parent
/// directories store their full paths, so a few deep names could otherwise cost far more
/// memory than the TOC itself.
pub const MAX_INDEX_PATH_BYTES: usize = MAX_TOC_JSON_SIZE as usize;

/// One chunk of a regular file and where its compressed bytes are in the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Offset of the chunk within the uncompressed file.
    pub file_offset: u64,
    /// Uncompressed length of the chunk.
    pub size: u64,
    /// Blob byte range of the gzip member / zstd frame(s) holding the chunk.
    pub compressed: Range<u64>,
    /// Bytes to skip in the decompressed member before the chunk starts.
    pub inner_offset: u64,
    /// sha256 of the chunk's bytes, when the TOC has one.
    pub digest: Option<Digest>,
}

/// A name in a directory and the entry it refers to (hardlinks share ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub id: EntryId,
}

/// Metadata of one file, directory, link or device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalised path of the first name of this entry ("" for the root).
    pub path: Box<str>,
    /// Never `Hardlink` or `Chunk`: those are resolved.
    pub kind: EntryType,
    /// Size in bytes of a regular file's content (0 otherwise).
    pub size: u64,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Owner names, shared between entries (a layer has few distinct ones).
    pub user_name: Arc<str>,
    pub group_name: Arc<str>,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Symlink target.
    pub link_target: Box<str>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// sha256 of the whole file, when the TOC has one.
    pub digest: Option<Digest>,
    /// Parent directory (the root is its own parent).
    pub parent: EntryId,
    /// Number of names referring to this entry (directories: 1).
    pub nlink: u32,
    children: Vec<DirEntry>,
    chunks: Vec<ChunkInfo>,
}

/// An entry's owner names, as shared strings.
struct Owners {
    user: Arc<str>,
    group: Arc<str>,
}

impl Entry {
    fn implicit_dir(path: String, parent: EntryId, owners: Owners) -> Self {
        Self {
            path: path.into_boxed_str(),
            kind: EntryType::Dir,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            user_name: owners.user,
            group_name: owners.group,
            mtime: 0,
            link_target: Box::default(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            digest: None,
            parent,
            nlink: 1,
            children: Vec::new(),
            chunks: Vec::new(),
        }
    }

    fn from_toc(path: String, parent: EntryId, toc: &TocEntry, owners: Owners) -> Self {
        let is_reg = toc.entry_type == EntryType::Reg;
        Self {
            path: path.into_boxed_str(),
            kind: toc.entry_type,
            size: if is_reg { toc.size } else { 0 },
            mode: toc.mode & 0o7777,
            uid: toc.uid,
            gid: toc.gid,
            user_name: owners.user,
            group_name: owners.group,
            mtime: toc.mtime_unix().unwrap_or(0),
            link_target: if toc.entry_type == EntryType::Symlink {
                toc.link_name.as_str().into()
            } else {
                Box::default()
            },
            dev_major: toc.dev_major,
            dev_minor: toc.dev_minor,
            xattrs: toc.xattrs.clone(),
            digest: if is_reg { toc.digest } else { None },
            parent,
            nlink: 1,
            children: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// The last path component ("" for the root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    pub fn is_dir(&self) -> bool {
        self.kind == EntryType::Dir
    }

    /// Directory listing, sorted by name (empty for non-directories).
    pub fn children(&self) -> &[DirEntry] {
        &self.children
    }

    /// Chunks of a regular file in file order (empty otherwise).
    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.chunks
    }
}

/// The layer's tree, built from a TOC.
#[derive(Debug, Clone)]
pub struct Index {
    entries: Vec<Entry>,
    prefetch_landmark_offset: Option<u64>,
    no_prefetch_landmark: bool,
}

impl Index {
    /// Id of the root directory.
    pub const ROOT: EntryId = 0;

    /// Builds the index of a TOC whose TOC member starts at `toc_offset`.
    pub fn build(toc: &Toc, toc_offset: u64) -> Result<Index, IndexError> {
        let mut builder = build::Builder::new(toc_offset);
        for entry in &toc.entries {
            builder.add(entry)?;
        }
        builder.finish()
    }

    /// Parses TOC JSON straight into an index (no [`Toc`] is kept in between, which for a
    /// big layer would double the memory it takes to open), with the JSON's sha256.
    pub fn parse(json: &[u8], toc_offset: u64) -> Result<(Index, Digest), ParseError> {
        let mut builder = build::Builder::new(toc_offset);
        let digest =
            toc::parse_json_each(json, |entry| builder.add(&entry)).map_err(
                |error| match error {
                    EachError::Toc(e) => ParseError::Toc(e),
                    EachError::Entry(e) => ParseError::Index(e),
                },
            )?;
        Ok((builder.finish()?, digest))
    }

    /// Number of entries (ids are `0..len()`), including the root.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: the root exists.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn root(&self) -> EntryId {
        Self::ROOT
    }

    /// The entry with this id.
    pub fn entry(&self, id: EntryId) -> Option<&Entry> {
        self.entries.get(usize::try_from(id).ok()?)
    }

    /// All ids and entries.
    pub fn iter(&self) -> impl Iterator<Item = (EntryId, &Entry)> {
        (0..).zip(self.entries.iter())
    }

    /// Looks up a path (any spelling `normalize_name` accepts) by walking the tree: no
    /// path map is kept, it would cost as much memory as the entries' own paths.
    pub fn lookup(&self, path: &str) -> Option<EntryId> {
        let path = clean_path(path).ok()?;
        path.split('/')
            .filter(|name| !name.is_empty())
            .try_fold(Self::ROOT, |dir, name| self.child(dir, name))
    }

    /// Directory listing of `dir`, sorted by name.
    pub fn children(&self, dir: EntryId) -> &[DirEntry] {
        self.entry(dir).map(Entry::children).unwrap_or(&[])
    }

    /// The entry called `name` inside directory `dir`.
    pub fn child(&self, dir: EntryId, name: &str) -> Option<EntryId> {
        let children = self.children(dir);
        let at = children
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()?;
        Some(children[at].id)
    }

    /// Chunks of a regular file.
    pub fn chunks(&self, file: EntryId) -> &[ChunkInfo] {
        self.entry(file).map(Entry::chunks).unwrap_or(&[])
    }

    /// The chunk of `file` containing byte `offset`.
    pub fn chunk_at(&self, file: EntryId, offset: u64) -> Option<&ChunkInfo> {
        let chunks = self.chunks(file);
        let after = chunks.partition_point(|c| c.file_offset <= offset);
        let chunk = chunks.get(after.checked_sub(1)?)?;
        (offset < chunk.file_offset + chunk.size).then_some(chunk)
    }

    /// Blob offset of `.prefetch.landmark`'s data: prefetch `[0, offset)`.
    pub fn prefetch_landmark_offset(&self) -> Option<u64> {
        self.prefetch_landmark_offset
    }

    /// True when the layer says "nothing to prefetch".
    pub fn has_no_prefetch_landmark(&self) -> bool {
        self.no_prefetch_landmark
    }
}

pub use crate::path::normalize_name;

/// Normalises a path: drops `./`, leading `/`, trailing `/`, empty and `.` components,
/// resolves `..` lexically; errors when `..` would leave the root.
pub fn clean_path(name: &str) -> Result<String, IndexError> {
    crate::path::clean(name).ok_or_else(|| IndexError::EscapingPath(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, entry_type: EntryType) -> TocEntry {
        TocEntry {
            name: name.to_string(),
            entry_type,
            ..TocEntry::default()
        }
    }

    fn reg(name: &str, size: u64, offset: u64) -> TocEntry {
        TocEntry {
            size,
            offset,
            ..entry(name, EntryType::Reg)
        }
    }

    fn link(name: &str, entry_type: EntryType, target: &str) -> TocEntry {
        TocEntry {
            link_name: target.to_string(),
            ..entry(name, entry_type)
        }
    }

    fn build(entries: Vec<TocEntry>) -> Result<Index, IndexError> {
        Index::build(
            &Toc {
                version: 1,
                entries,
            },
            1000,
        )
    }

    #[test]
    fn normalises_paths() {
        let cases = [
            ("plain", "a/b", Ok("a/b")),
            ("dot slash", "./a/b/", Ok("a/b")),
            ("absolute", "/a//b/.", Ok("a/b")),
            ("inner dotdot", "a/../b", Ok("b")),
            ("root", "./", Ok("")),
            ("escape", "../a", Err(())),
            ("deep escape", "a/../../b", Err(())),
        ];
        for (name, input, want) in cases {
            let got = clean_path(input).map_err(|_| ());
            assert_eq!(got.as_deref().map_err(|_| ()), want, "{name}");
        }
    }

    #[test]
    fn builds_tree_with_implicit_parents_and_sorted_children() {
        let index = build(vec![
            reg("./z/b", 0, 0),
            reg("z/a", 0, 0),
            entry("z/", EntryType::Dir),
            entry("./", EntryType::Dir),
        ])
        .expect("index");
        let z = index.lookup("z").expect("implicit dir");
        let names: Vec<&str> = index.children(z).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(index.child(index.root(), "z"), Some(z));
        assert_eq!(index.entry(z).map(|e| e.parent), Some(Index::ROOT));
        assert_eq!(index.lookup("/z/a/"), index.child(z, "a"));
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn duplicate_rules() {
        let later_wins = build(vec![reg("f", 1, 0), reg("f", 2, 100)]).expect("later wins");
        let f = later_wins.lookup("f").expect("f");
        assert_eq!(later_wins.entry(f).map(|e| e.size), Some(2));
        assert_eq!(later_wins.children(Index::ROOT).len(), 1);

        let dir_update = build(vec![
            entry("d", EntryType::Dir),
            reg("d/x", 0, 0),
            TocEntry {
                mode: 0o700,
                ..entry("d", EntryType::Dir)
            },
        ])
        .expect("dir update");
        let d = dir_update.lookup("d").expect("d");
        assert_eq!(dir_update.entry(d).map(|e| e.mode), Some(0o700));
        assert_eq!(dir_update.children(d).len(), 1, "children kept");

        let cases = [
            (
                "dir then file",
                vec![entry("d", EntryType::Dir), reg("d", 0, 0)],
            ),
            (
                "file then dir",
                vec![reg("d", 0, 0), entry("d", EntryType::Dir)],
            ),
            ("file as parent", vec![reg("d", 0, 0), reg("d/x", 0, 0)]),
        ];
        for (name, entries) in cases {
            assert!(build(entries).is_err(), "{name}");
        }
    }

    #[test]
    fn rejects_bad_tocs() {
        let cases: Vec<(&str, Vec<TocEntry>, IndexError)> = vec![
            (
                "escape",
                vec![reg("../x", 0, 0)],
                IndexError::EscapingPath("../x".into()),
            ),
            (
                "hardlink to missing",
                vec![link("l", EntryType::Hardlink, "nope")],
                IndexError::BadHardlink {
                    path: "l".into(),
                    target: "nope".into(),
                },
            ),
            (
                "hardlink to dir",
                vec![
                    entry("d", EntryType::Dir),
                    link("l", EntryType::Hardlink, "d"),
                ],
                IndexError::BadHardlink {
                    path: "l".into(),
                    target: "d".into(),
                },
            ),
            (
                "orphan chunk",
                vec![entry("c", EntryType::Chunk)],
                IndexError::OrphanChunk("c".into()),
            ),
            (
                "offset past toc",
                vec![reg("f", 5, 2000)],
                IndexError::BadOffset {
                    path: "f".into(),
                    offset: 2000,
                    toc_offset: 1000,
                },
            ),
            (
                "chunks short",
                vec![TocEntry {
                    chunk_size: 5,
                    ..reg("f", 10, 0)
                }],
                IndexError::BadChunks {
                    path: "f".into(),
                    size: 10,
                },
            ),
            (
                "chunk too big",
                vec![TocEntry {
                    chunk_size: 20,
                    ..reg("f", 10, 0)
                }],
                IndexError::BadChunks {
                    path: "f".into(),
                    size: 10,
                },
            ),
            // Found by the `index` fuzz target: an empty trailing chunk.
            (
                "empty chunk at the end",
                vec![
                    TocEntry {
                        chunk_size: 10,
                        ..reg("f", 10, 0)
                    },
                    TocEntry {
                        name: "f".into(),
                        entry_type: EntryType::Chunk,
                        chunk_offset: 10,
                        offset: 5,
                        ..TocEntry::default()
                    },
                ],
                IndexError::BadChunks {
                    path: "f".into(),
                    size: 10,
                },
            ),
        ];
        for (name, entries, want) in cases {
            assert_eq!(build(entries).err(), Some(want), "{name}");
        }
    }

    /// `Index::build` with lowered entry and path-byte limits.
    fn build_limited(
        entries: Vec<TocEntry>,
        max_entries: usize,
        max_path_bytes: usize,
    ) -> Result<Index, IndexError> {
        let toc = Toc {
            version: 1,
            entries,
        };
        let mut builder = build::Builder::new(1000);
        builder.max_entries = max_entries;
        builder.max_path_bytes = max_path_bytes;
        for entry in &toc.entries {
            builder.add(entry)?;
        }
        builder.finish()
    }

    #[test]
    fn enforces_bounds() {
        let long = "n".repeat(MAX_NAME_LEN + 1);
        let deep = "d/".repeat(100) + "f";
        type Case = (
            &'static str,
            Vec<TocEntry>,
            usize,
            usize,
            Result<usize, IndexError>,
        );
        let cases: Vec<Case> = vec![
            (
                "name at the limit",
                vec![reg(&"n".repeat(MAX_NAME_LEN), 0, 0)],
                MAX_TOC_ENTRIES,
                MAX_INDEX_PATH_BYTES,
                Ok(2),
            ),
            (
                "name too long",
                vec![reg(&long, 0, 0)],
                MAX_TOC_ENTRIES,
                MAX_INDEX_PATH_BYTES,
                Err(IndexError::NameTooLong {
                    name: "n".repeat(256),
                    len: MAX_NAME_LEN + 1,
                }),
            ),
            (
                "link target too long",
                vec![link("s", EntryType::Symlink, &long)],
                MAX_TOC_ENTRIES,
                MAX_INDEX_PATH_BYTES,
                Err(IndexError::NameTooLong {
                    name: "s".into(),
                    len: MAX_NAME_LEN + 1,
                }),
            ),
            (
                "chunk at the limit",
                vec![reg("f", MAX_CHUNK_SIZE, 0)],
                MAX_TOC_ENTRIES,
                MAX_INDEX_PATH_BYTES,
                Ok(2),
            ),
            (
                "chunk too large",
                vec![reg("f", MAX_CHUNK_SIZE + 1, 0)],
                MAX_TOC_ENTRIES,
                MAX_INDEX_PATH_BYTES,
                Err(IndexError::ChunkTooLarge {
                    path: "f".into(),
                    size: MAX_CHUNK_SIZE + 1,
                }),
            ),
            (
                "entries at the limit (root included)",
                vec![reg("a", 0, 0), reg("b", 0, 0)],
                3,
                MAX_INDEX_PATH_BYTES,
                Ok(3),
            ),
            (
                "too many entries",
                vec![reg("a", 0, 0), reg("b", 0, 0), reg("c", 0, 0)],
                3,
                MAX_INDEX_PATH_BYTES,
                Err(IndexError::TooManyEntries),
            ),
            (
                "implicit directories count as entries",
                vec![reg("x/y/z", 0, 0)],
                3,
                MAX_INDEX_PATH_BYTES,
                Err(IndexError::TooManyEntries),
            ),
            (
                "deep implicit directories exceed the path bytes",
                vec![reg(&deep, 0, 0)],
                MAX_TOC_ENTRIES,
                5_000,
                Err(IndexError::PathsTooLarge),
            ),
        ];
        for (name, entries, max_entries, max_path_bytes, want) in cases {
            let got = build_limited(entries, max_entries, max_path_bytes).map(|i| i.len());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn chunks_get_member_ranges() {
        let index = build(vec![
            TocEntry {
                chunk_size: 4,
                ..reg("f", 10, 100)
            },
            TocEntry {
                chunk_offset: 4,
                chunk_size: 4,
                offset: 200,
                ..entry("f", EntryType::Chunk)
            },
            TocEntry {
                chunk_offset: 8,
                offset: 300,
                ..entry("f", EntryType::Chunk)
            },
            reg("g", 3, 300),
        ])
        .expect("index");
        let f = index.lookup("f").expect("f");
        let ranges: Vec<(u64, u64, std::ops::Range<u64>)> = index
            .chunks(f)
            .iter()
            .map(|c| (c.file_offset, c.size, c.compressed.clone()))
            .collect();
        assert_eq!(
            ranges,
            [(0, 4, 100..200), (4, 4, 200..300), (8, 2, 300..1000)]
        );
        assert_eq!(index.chunk_at(f, 5).map(|c| c.file_offset), Some(4));
        assert_eq!(index.chunk_at(f, 10), None);
        let g = index.lookup("g").expect("g");
        assert_eq!(index.chunks(g)[0].compressed, 300..1000, "shared member");
    }

    #[test]
    fn hardlinks_share_ids_and_count_links() {
        let index = build(vec![
            reg("a", 0, 0),
            link("b", EntryType::Hardlink, "./a"),
            link("c", EntryType::Hardlink, "a"),
            link("s", EntryType::Symlink, "a"),
        ])
        .expect("index");
        let a = index.lookup("a").expect("a");
        assert_eq!(index.lookup("b"), Some(a));
        assert_eq!(index.lookup("c"), Some(a));
        assert_eq!(index.entry(a).map(|e| e.nlink), Some(3));
        let s = index.lookup("s").expect("s");
        assert_eq!(index.entry(s).map(|e| &*e.link_target), Some("a"));
    }

    #[test]
    fn fills_omitted_owner_names_like_go() {
        let index = build(vec![
            TocEntry {
                uid: 5,
                user_name: "bob".into(),
                ..reg("a", 0, 0)
            },
            TocEntry {
                uid: 5,
                ..reg("b", 0, 0)
            },
            TocEntry {
                uid: 6,
                ..reg("c", 0, 0)
            },
        ])
        .expect("index");
        let name = |p: &str| {
            index
                .entry(index.lookup(p).expect(p))
                .map(|e| e.user_name.clone())
        };
        assert_eq!(name("b").as_deref(), Some("bob"));
        assert_eq!(name("c").as_deref(), Some(""));
    }

    #[test]
    fn parse_streams_the_same_index_build_gives() {
        let toc = Toc {
            version: 1,
            entries: vec![
                entry("d", EntryType::Dir),
                reg("d/a", 10, 100),
                TocEntry {
                    user_name: "bob".into(),
                    uid: 7,
                    ..reg("d/b", 5, 200)
                },
                link("d/h", EntryType::Hardlink, "d/a"),
                reg(crate::PREFETCH_LANDMARK, 1, 300),
            ],
        };
        let json = crate::toc::encode(&toc);
        let (streamed, digest) = Index::parse(&json, 1000).expect("parse");
        let built = Index::build(&toc, 1000).expect("build");
        assert_eq!(digest, Digest::sha256(&json));
        let pairs: Vec<_> = streamed.iter().zip(built.iter()).collect();
        assert_eq!(pairs.len(), built.len());
        assert!(pairs.iter().all(|(a, b)| a == b));
        // The landmark's member ends d/b's compressed range.
        let b = streamed.lookup("d/b").expect("b");
        assert_eq!(streamed.chunks(b)[0].compressed, 200..300);

        let cases = [
            ("bad json", b"{".to_vec(), "toc"),
            (
                "bad version",
                br#"{"version":2,"entries":[]}"#.to_vec(),
                "toc",
            ),
            (
                "escaping path",
                br#"{"version":1,"entries":[{"name":"../x","type":"reg"}]}"#.to_vec(),
                "index",
            ),
        ];
        for (name, json, want) in cases {
            let got = match Index::parse(&json, 1000) {
                Err(ParseError::Toc(_)) => "toc",
                Err(ParseError::Index(_)) => "index",
                Ok(_) => "ok",
            };
            assert_eq!(got, want, "{name}");
        }
    }

    /// Scale, not speed: a 100k-entry TOC gives a complete index (its build time is
    /// measured by `cargo bench --bench mount_index` in the daemon crate).
    #[test]
    fn builds_100k_entries() {
        let mut entries = Vec::with_capacity(100_001);
        for d in 0..100 {
            entries.push(entry(&format!("dir{d}"), EntryType::Dir));
            for f in 0..1000 {
                entries.push(reg(
                    &format!("dir{d}/file{f}"),
                    10,
                    (d * 1000 + f) as u64 * 10,
                ));
            }
        }
        let toc = Toc {
            version: 1,
            entries,
        };
        let index = Index::build(&toc, 10_000_000).expect("index");
        assert_eq!(index.len(), 100_101);
        assert_eq!(index.children(index.root()).len(), 100);
        for d in [0, 42, 99] {
            let dir = index.lookup(&format!("dir{d}")).expect("dir");
            assert_eq!(index.children(dir).len(), 1000, "dir{d}");
            let last = index.lookup(&format!("dir{d}/file999")).expect("file");
            let want = (d * 1000 + 999) as u64 * 10;
            assert_eq!(index.chunks(last)[0].compressed.start, want, "dir{d}");
        }
    }
}
