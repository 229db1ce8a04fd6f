//! Building an `Index` from TOC entries: the rules listed in the parent module.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::toc::{EntryType, TocEntry, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME};

use crate::toc::{MAX_NAME_LEN, MAX_TOC_ENTRIES};

use super::{
    clean_path, ChunkInfo, DirEntry, Entry, EntryId, Index, IndexError, Owners, MAX_CHUNK_SIZE,
    MAX_INDEX_PATH_BYTES,
};

fn has_data(entry: &TocEntry) -> bool {
    match entry.entry_type {
        EntryType::Reg => entry.size > 0,
        EntryType::Chunk => true,
        _ => false,
    }
}

pub(super) struct Builder {
    index: Index,
    /// Blob offsets where data members start, as TOC entries name them; sorted in
    /// `finish`, where each chunk's compressed range is cut at the next start.
    member_starts: Vec<u64>,
    toc_offset: u64,
    /// The regular file the next `chunk` entries belong to.
    last_reg: Option<EntryId>,
    /// Paths of the entries so far (only while building: lookups afterwards walk the tree).
    by_path: HashMap<String, EntryId>,
    user_names: OwnerNames,
    group_names: OwnerNames,
    /// Sum of the entries' path lengths so far.
    path_bytes: usize,
    /// Bounds (`MAX_TOC_ENTRIES`, `MAX_INDEX_PATH_BYTES`; tests lower them).
    pub(super) max_entries: usize,
    pub(super) max_path_bytes: usize,
}

impl Builder {
    pub(super) fn new(toc_offset: u64) -> Self {
        let mut user_names = OwnerNames::default();
        let mut group_names = OwnerNames::default();
        let owners = Owners {
            user: user_names.name(0, ""),
            group: group_names.name(0, ""),
        };
        let root = Entry::implicit_dir(String::new(), Index::ROOT, owners);
        let index = Index {
            entries: vec![root],
            prefetch_landmark_offset: None,
            no_prefetch_landmark: false,
        };
        Self {
            index,
            member_starts: Vec::new(),
            toc_offset,
            last_reg: None,
            by_path: HashMap::from([(String::new(), Index::ROOT)]),
            user_names,
            group_names,
            path_bytes: 0,
            max_entries: MAX_TOC_ENTRIES,
            max_path_bytes: MAX_INDEX_PATH_BYTES,
        }
    }

    pub(super) fn add(&mut self, toc: &TocEntry) -> Result<(), IndexError> {
        let len = toc.name.len().max(toc.link_name.len());
        if len > MAX_NAME_LEN {
            return Err(IndexError::NameTooLong {
                name: crate::toc::truncated(&toc.name),
                len,
            });
        }
        // Every data member counts, also those of entries not shown (landmarks) or replaced.
        if has_data(toc) {
            self.member_starts.push(toc.offset);
        }
        let path = clean_path(&toc.name)?;
        if toc.entry_type == EntryType::Chunk {
            return self.add_chunk(&path, toc);
        }
        self.last_reg = None;
        match path.as_str() {
            TOC_TAR_NAME => return Ok(()),
            PREFETCH_LANDMARK => {
                self.index.prefetch_landmark_offset = Some(toc.offset);
                return Ok(());
            }
            NO_PREFETCH_LANDMARK => {
                self.index.no_prefetch_landmark = true;
                return Ok(());
            }
            "" if toc.entry_type == EntryType::Dir => {
                self.update_dir(Index::ROOT, toc);
                return Ok(());
            }
            "" => return Err(IndexError::EmptyName(toc.name.clone())),
            _ => {}
        }
        let (parent_path, name) = split_parent(&path);
        let parent = self.ensure_dir(parent_path, &path)?;
        let name = name.to_string();
        match toc.entry_type {
            EntryType::Hardlink => self.add_hardlink(parent, &name, &path, toc),
            EntryType::Dir => self.add_dir(parent, &name, path, toc),
            _ => {
                let id = self.replace_or_insert(parent, &name, path, toc)?;
                if toc.entry_type == EntryType::Reg {
                    self.start_chunks(id, toc)?;
                }
                Ok(())
            }
        }
    }

    fn add_dir(
        &mut self,
        parent: EntryId,
        name: &str,
        path: String,
        toc: &TocEntry,
    ) -> Result<(), IndexError> {
        if let Some(&id) = self.by_path.get(&path) {
            if !self.index.entries[id as usize].is_dir() {
                return Err(IndexError::DuplicateConflict { path });
            }
            self.update_dir(id, toc);
            return Ok(());
        }
        let entry = Entry::from_toc(path.clone(), parent, toc, self.owners(toc));
        let id = self.push(entry)?;
        self.link(parent, name, path, id);
        Ok(())
    }

    /// Adds a non-directory; a later one replaces an earlier non-directory of the same path.
    fn replace_or_insert(
        &mut self,
        parent: EntryId,
        name: &str,
        path: String,
        toc: &TocEntry,
    ) -> Result<EntryId, IndexError> {
        let entry = Entry::from_toc(path.clone(), parent, toc, self.owners(toc));
        let id = self.push(entry)?;
        if let Some(&old) = self.by_path.get(&path) {
            let old_entry = &mut self.index.entries[old as usize];
            if old_entry.is_dir() {
                return Err(IndexError::DuplicateConflict { path });
            }
            old_entry.nlink = old_entry.nlink.saturating_sub(1);
            self.unlink(parent, name);
        }
        self.link(parent, name, path, id);
        Ok(id)
    }

    fn add_hardlink(
        &mut self,
        parent: EntryId,
        name: &str,
        path: &str,
        toc: &TocEntry,
    ) -> Result<(), IndexError> {
        let bad = || IndexError::BadHardlink {
            path: path.to_string(),
            target: toc.link_name.clone(),
        };
        let target_path = clean_path(&toc.link_name)?;
        let target = *self.by_path.get(&target_path).ok_or_else(bad)?;
        if self.index.entries[target as usize].is_dir() {
            return Err(bad());
        }
        if let Some(&old) = self.by_path.get(path) {
            if old == target {
                return Ok(());
            }
            let old_entry = &mut self.index.entries[old as usize];
            if old_entry.is_dir() {
                return Err(IndexError::DuplicateConflict {
                    path: path.to_string(),
                });
            }
            old_entry.nlink = old_entry.nlink.saturating_sub(1);
            self.unlink(parent, name);
        }
        self.index.entries[target as usize].nlink += 1;
        self.link(parent, name, path.to_string(), target);
        Ok(())
    }

    fn start_chunks(&mut self, id: EntryId, toc: &TocEntry) -> Result<(), IndexError> {
        self.last_reg = Some(id);
        if toc.size == 0 {
            return Ok(());
        }
        let chunk = self.chunk_info(&toc.name, toc, toc.size, 0)?;
        // Exactly one slot: most files have one chunk, and a Vec's first push would
        // reserve four, leaving a hole in the heap when shrunk later.
        self.index.entries[id as usize].chunks = vec![chunk];
        Ok(())
    }

    fn add_chunk(&mut self, path: &str, toc: &TocEntry) -> Result<(), IndexError> {
        let orphan = || IndexError::OrphanChunk(toc.name.clone());
        let id = self.last_reg.ok_or_else(orphan)?;
        let file = &self.index.entries[id as usize];
        if &*file.path != path {
            return Err(orphan());
        }
        let size = file.size;
        let chunk = self.chunk_info(path, toc, size, toc.chunk_offset)?;
        self.index.entries[id as usize].chunks.push(chunk);
        Ok(())
    }

    fn chunk_info(
        &self,
        path: &str,
        toc: &TocEntry,
        file_size: u64,
        chunk_offset: u64,
    ) -> Result<ChunkInfo, IndexError> {
        let bad_chunks = || IndexError::BadChunks {
            path: path.to_string(),
            size: file_size,
        };
        let rest = file_size.checked_sub(chunk_offset).ok_or_else(bad_chunks)?;
        let size = match toc.chunk_size {
            0 => rest,
            n if n <= rest => n,
            _ => return Err(bad_chunks()),
        };
        // An empty chunk (at the end of the file, or of an empty "to the end" size) is
        // no writer's output and would give readers a chunk covering nothing.
        if size == 0 {
            return Err(bad_chunks());
        }
        if size > MAX_CHUNK_SIZE {
            return Err(IndexError::ChunkTooLarge {
                path: path.to_string(),
                size,
            });
        }
        if toc.offset >= self.toc_offset {
            return Err(IndexError::BadOffset {
                path: path.to_string(),
                offset: toc.offset,
                toc_offset: self.toc_offset,
            });
        }
        Ok(ChunkInfo {
            file_offset: chunk_offset,
            size,
            // The end is known once all member starts are: see `finish`.
            compressed: toc.offset..toc.offset,
            inner_offset: toc.inner_offset,
            digest: toc.chunk_digest,
        })
    }

    /// Returns the id of directory `path`, creating it and its ancestors when missing.
    fn ensure_dir(&mut self, path: &str, child: &str) -> Result<EntryId, IndexError> {
        if let Some(&id) = self.by_path.get(path) {
            if !self.index.entries[id as usize].is_dir() {
                return Err(IndexError::ParentNotDir {
                    path: child.to_string(),
                    parent: path.to_string(),
                });
            }
            return Ok(id);
        }
        let (parent_path, name) = split_parent(path);
        let parent = self.ensure_dir(parent_path, child)?;
        let owners = Owners {
            user: self.user_names.name(0, ""),
            group: self.group_names.name(0, ""),
        };
        let id = self.push(Entry::implicit_dir(path.to_string(), parent, owners))?;
        self.link(parent, name, path.to_string(), id);
        Ok(id)
    }

    fn push(&mut self, entry: Entry) -> Result<EntryId, IndexError> {
        if self.index.entries.len() >= self.max_entries {
            return Err(IndexError::TooManyEntries);
        }
        self.path_bytes += entry.path.len();
        if self.path_bytes > self.max_path_bytes {
            return Err(IndexError::PathsTooLarge);
        }
        let id =
            EntryId::try_from(self.index.entries.len()).map_err(|_| IndexError::TooManyEntries)?;
        self.index.entries.push(entry);
        Ok(id)
    }

    fn owners(&mut self, toc: &TocEntry) -> Owners {
        Owners {
            user: self.user_names.name(toc.uid, &toc.user_name),
            group: self.group_names.name(toc.gid, &toc.group_name),
        }
    }

    /// A later TOC entry for a directory replaces its metadata and keeps its children.
    fn update_dir(&mut self, id: EntryId, toc: &TocEntry) {
        let owners = self.owners(toc);
        let dir = &mut self.index.entries[id as usize];
        let children = std::mem::take(&mut dir.children);
        let path = std::mem::take(&mut dir.path).into_string();
        *dir = Entry::from_toc(path, dir.parent, toc, owners);
        dir.children = children;
    }

    fn link(&mut self, parent: EntryId, name: &str, path: String, id: EntryId) {
        self.index.entries[parent as usize].children.push(DirEntry {
            name: name.to_string(),
            id,
        });
        self.by_path.insert(path, id);
    }

    fn unlink(&mut self, parent: EntryId, name: &str) {
        self.index.entries[parent as usize]
            .children
            .retain(|c| c.name != name);
    }

    pub(super) fn finish(mut self) -> Result<Index, IndexError> {
        let starts = &mut self.member_starts;
        starts.push(self.toc_offset);
        starts.sort_unstable();
        starts.dedup();
        for entry in &mut self.index.entries {
            for chunk in &mut entry.chunks {
                let next = starts.partition_point(|&s| s <= chunk.compressed.start);
                // Chunk offsets are below the TOC offset, which is a start.
                chunk.compressed.end = starts.get(next).copied().unwrap_or(self.toc_offset);
            }
            entry.children.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            // Growth slack is most of a one-chunk file's memory: a Vec's first push
            // reserves room for four.
            entry.children.shrink_to_fit();
            entry.chunks.shrink_to_fit();
            check_chunks_cover(entry)?;
        }
        self.index.entries.shrink_to_fit();
        Ok(self.index)
    }
}

/// Owner names of one kind (users or groups), each distinct name stored once.
#[derive(Default)]
struct OwnerNames {
    interned: HashSet<Arc<str>>,
    /// Last name given per id: Go writers omit a name equal to the previous one.
    by_id: HashMap<u32, Arc<str>>,
    /// The previous entry's id and name: most entries repeat them.
    last: Option<(u32, Arc<str>)>,
}

impl OwnerNames {
    /// The name for `id`: `given`, or when omitted the one an earlier entry gave.
    fn name(&mut self, id: u32, given: &str) -> Arc<str> {
        if let Some((last_id, last)) = &self.last {
            if *last_id == id && (given.is_empty() || given == &**last) {
                return last.clone();
            }
        }
        let name = self.lookup(id, given);
        self.last = Some((id, name.clone()));
        name
    }

    fn lookup(&mut self, id: u32, given: &str) -> Arc<str> {
        if given.is_empty() {
            if let Some(known) = self.by_id.get(&id) {
                return known.clone();
            }
        }
        let name = match self.interned.get(given) {
            Some(known) => known.clone(),
            None => {
                let new: Arc<str> = Arc::from(given);
                self.interned.insert(new.clone());
                new
            }
        };
        if !given.is_empty() {
            self.by_id.insert(id, name.clone());
        }
        name
    }
}

fn check_chunks_cover(entry: &Entry) -> Result<(), IndexError> {
    if entry.kind != EntryType::Reg {
        return Ok(());
    }
    let mut next = Some(0u64);
    for chunk in &entry.chunks {
        if next != Some(chunk.file_offset) {
            next = None;
            break;
        }
        next = chunk.file_offset.checked_add(chunk.size);
    }
    if next != Some(entry.size) {
        return Err(IndexError::BadChunks {
            path: entry.path.to_string(),
            size: entry.size,
        });
    }
    Ok(())
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    }
}
