//! A zTOC's file table as eStargz TOC entries, so the daemon's path tree ([`Index`]) and
//! filesystem serve SOCI-indexed layers too. Each regular file's `offset` is its content's
//! offset in the uncompressed tar (large files are cut into chunk entries), so an index
//! chunk's `compressed.start` is where that chunk starts in the tar, not in the blob.

use crate::index::{Index, IndexError, MAX_CHUNK_SIZE};
use crate::toc::{EntryType, Toc, TocEntry};

use super::ztoc::Ztoc;

/// Chunk length used to cut large files (below the index's per-chunk limit).
const CHUNK: u64 = 64 << 20;
const _: () = assert!(CHUNK <= MAX_CHUNK_SIZE);
const XATTR_PREFIX: &str = "SCHILY.xattr.";

/// The TOC entries of a zTOC's file table.
pub fn toc_of(ztoc: &Ztoc) -> Toc {
    let mut entries = Vec::with_capacity(ztoc.files.len());
    for f in &ztoc.files {
        let mut e = TocEntry {
            name: f.name.clone(),
            entry_type: f.entry_type,
            size: f.uncompressed_size,
            mod_time: f.mod_time.clone(),
            link_name: f.link_name.clone(),
            mode: u32::try_from(f.mode & 0o7777).unwrap_or(0o644),
            uid: f.uid,
            gid: f.gid,
            user_name: f.uname.clone(),
            group_name: f.gname.clone(),
            dev_major: u32::try_from(f.dev_major).unwrap_or(0),
            dev_minor: u32::try_from(f.dev_minor).unwrap_or(0),
            xattrs: f
                .pax
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(XATTR_PREFIX)?.to_owned(), v.clone())))
                .collect(),
            ..TocEntry::default()
        };
        if f.entry_type != EntryType::Reg || f.uncompressed_size == 0 {
            e.size = if f.entry_type == EntryType::Reg {
                0
            } else {
                e.size
            };
            entries.push(e);
            continue;
        }
        e.offset = f.uncompressed_offset;
        if f.uncompressed_size <= CHUNK {
            entries.push(e);
            continue;
        }
        e.chunk_size = CHUNK;
        entries.push(e);
        let mut at = CHUNK;
        while at < f.uncompressed_size {
            let len = CHUNK.min(f.uncompressed_size - at);
            entries.push(TocEntry {
                name: f.name.clone(),
                entry_type: EntryType::Chunk,
                offset: f.uncompressed_offset.saturating_add(at),
                chunk_offset: at,
                chunk_size: len,
                ..TocEntry::default()
            });
            at += len;
        }
    }
    Toc {
        version: 1,
        entries,
    }
}

/// The path tree of a zTOC's file table.
pub fn index_of(ztoc: &Ztoc) -> Result<Index, IndexError> {
    // Data offsets must lie before the "TOC": put it past the end of the tar.
    Index::build(
        &toc_of(ztoc),
        ztoc.uncompressed_archive_size.saturating_add(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soci::{build_ztoc, BuildOptions, Compression};
    use crate::testutil::{EntrySpec, TarBuilder};

    #[test]
    fn tree_and_tar_offsets_of_a_layer() {
        let mut t = TarBuilder::new();
        t.dir("etc/");
        t.file("etc/passwd", b"root:x:0:0\n");
        t.entry(
            EntrySpec::new("etc/attr", EntryType::Reg)
                .content(b"x")
                .xattr("user.k", b"v"),
        );
        t.symlink("etc/link", "passwd");
        t.hardlink("etc/hard", "etc/passwd");
        t.whiteout("etc", "gone");
        let tar = t.finish();
        let ztoc = build_ztoc(
            &tar[..],
            Compression::Uncompressed,
            &BuildOptions::default(),
        )
        .unwrap();
        let index = index_of(&ztoc).unwrap();
        let id = index.lookup("etc/passwd").unwrap();
        let entry = index.entry(id).unwrap();
        assert_eq!(entry.nlink, 2, "hardlink shares the inode");
        let chunk = &index.chunks(id)[0];
        let start = usize::try_from(chunk.compressed.start).unwrap();
        assert_eq!(&tar[start..start + 11], b"root:x:0:0\n");
        let attr = index.entry(index.lookup("etc/attr").unwrap()).unwrap();
        assert_eq!(
            attr.xattrs.get("user.k").map(Vec::as_slice),
            Some(&b"v"[..])
        );
        assert!(
            index.lookup("etc/.wh.gone").is_some(),
            "whiteouts kept for the filesystem view"
        );
    }

    #[test]
    fn large_files_become_chunks_at_their_tar_offsets() {
        let mut t = TarBuilder::new();
        t.file("big", &vec![7u8; (CHUNK + 100) as usize]);
        let tar = t.finish();
        let ztoc = build_ztoc(
            &tar[..],
            Compression::Uncompressed,
            &BuildOptions::default(),
        )
        .unwrap();
        let index = index_of(&ztoc).unwrap();
        let chunks = index.chunks(index.lookup("big").unwrap());
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[1].compressed.start,
            chunks[0].compressed.start + CHUNK
        );
    }
}
