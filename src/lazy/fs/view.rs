//! `LayerView`: the overlay-ready tree of one layer, built once at mount over the
//! [`estargz::Index`]. It maps entries to inode numbers, turns `dir/.wh.<name>` into
//! whiteout nodes called `<name>`, hides `.wh..wh..opq` and marks its directory opaque.
//! Directories without overlay markers reuse the index's own sorted listing.

use std::collections::{HashMap, HashSet};

use estargz::{DirEntry, Entry, EntryId, EntryType, Index};

/// Prefix of an overlay whiteout entry in a layer tar.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker in a layer tar.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What a name in the mounted tree refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// An ordinary index entry (hardlinks share one).
    Entry(EntryId),
    /// A whiteout (char device 0:0); the id is the hidden `.wh.<name>` entry.
    Whiteout(EntryId),
}

/// The mounted tree of one layer.
#[derive(Debug, Default)]
pub struct LayerView {
    /// Listings of directories that held overlay markers, sorted by name.
    rewritten: HashMap<EntryId, Vec<DirEntry>>,
    /// Entries shown as whiteouts.
    whiteouts: HashSet<EntryId>,
    /// Directories that held `.wh..wh..opq`.
    opaque: HashSet<EntryId>,
    /// Number of subdirectories of each directory that has any.
    subdirs: HashMap<EntryId, u32>,
}

impl LayerView {
    /// Builds the view of `index` in one pass over its directories.
    pub fn build(index: &Index) -> Self {
        let mut view = LayerView::default();
        for (id, entry) in index.iter() {
            if entry.is_dir() {
                view.add_dir(index, id, entry);
            }
        }
        view
    }

    fn add_dir(&mut self, index: &Index, dir: EntryId, entry: &Entry) {
        let children = entry.children();
        let has_markers = children.iter().any(|c| c.name.starts_with(WHITEOUT_PREFIX));
        if has_markers {
            let listing = self.rewrite_listing(index, dir, children);
            self.rewritten.insert(dir, listing);
        }
        let listing = self.children_of(index, dir);
        let count = listing.iter().filter(|c| is_dir(index, c.id)).count();
        if count > 0 {
            self.subdirs
                .insert(dir, u32::try_from(count).unwrap_or(u32::MAX));
        }
    }

    fn rewrite_listing(
        &mut self,
        index: &Index,
        dir: EntryId,
        children: &[DirEntry],
    ) -> Vec<DirEntry> {
        let real: HashSet<&str> = children
            .iter()
            .filter(|c| !c.name.starts_with(WHITEOUT_PREFIX))
            .map(|c| c.name.as_str())
            .collect();
        let mut listing = Vec::with_capacity(children.len());
        for child in children {
            if child.name == OPAQUE_MARKER {
                self.opaque.insert(dir);
            } else if let Some(hidden) = child.name.strip_prefix(WHITEOUT_PREFIX) {
                // A real entry of the same name in this layer wins over its whiteout.
                if !hidden.is_empty() && !real.contains(hidden) && !is_dir(index, child.id) {
                    self.whiteouts.insert(child.id);
                    listing.push(DirEntry {
                        name: hidden.to_string(),
                        id: child.id,
                    });
                }
            } else {
                listing.push(child.clone());
            }
        }
        listing.sort_by(|a, b| a.name.cmp(&b.name));
        listing
    }

    /// The listing of directory `dir` as mounted, sorted by name.
    pub fn children_of<'a>(&'a self, index: &'a Index, dir: EntryId) -> &'a [DirEntry] {
        match self.rewritten.get(&dir) {
            Some(listing) => listing,
            None => index.children(dir),
        }
    }

    /// The entry called `name` in directory `dir`.
    pub fn child(&self, index: &Index, dir: EntryId, name: &str) -> Option<EntryId> {
        let listing = self.children_of(index, dir);
        let at = listing
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()?;
        Some(listing[at].id)
    }

    /// What `id` is shown as.
    pub fn node(&self, id: EntryId) -> Node {
        if self.whiteouts.contains(&id) {
            Node::Whiteout(id)
        } else {
            Node::Entry(id)
        }
    }

    /// True when directory `dir` held `.wh..wh..opq`.
    pub fn is_opaque(&self, dir: EntryId) -> bool {
        self.opaque.contains(&dir)
    }

    /// Number of subdirectories shown in `dir`.
    pub fn subdir_count(&self, dir: EntryId) -> u32 {
        self.subdirs.get(&dir).copied().unwrap_or(0)
    }
}

fn is_dir(index: &Index, id: EntryId) -> bool {
    index.entry(id).is_some_and(|e| e.kind == EntryType::Dir)
}

/// Inode number of an entry: the root (id 0) is inode 1.
pub fn inode_of(id: EntryId) -> u64 {
    u64::from(id) + 1
}

/// Entry id of an inode number, when it can be one.
pub fn entry_of(ino: u64) -> Option<EntryId> {
    EntryId::try_from(ino.checked_sub(1)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use estargz::{Toc, TocEntry};

    fn toc_entry(name: &str, entry_type: EntryType) -> TocEntry {
        TocEntry {
            name: name.to_string(),
            entry_type,
            ..TocEntry::default()
        }
    }

    fn index(names: &[(&str, EntryType)]) -> Index {
        let entries = names.iter().map(|(n, t)| toc_entry(n, *t)).collect();
        Index::build(
            &Toc {
                version: 1,
                entries,
            },
            1000,
        )
        .expect("index")
    }

    fn names(view: &LayerView, index: &Index, dir: &str) -> Vec<String> {
        let id = index.lookup(dir).expect("dir");
        view.children_of(index, id)
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    #[test]
    fn overlay_markers() {
        let index = index(&[
            ("d", EntryType::Dir),
            ("d/.wh.gone", EntryType::Reg),
            ("d/.wh.kept", EntryType::Reg),
            ("d/kept", EntryType::Reg),
            ("d/.wh..wh..opq", EntryType::Reg),
            ("d/a", EntryType::Reg),
            ("plain", EntryType::Dir),
            ("plain/x", EntryType::Reg),
            ("plain/sub", EntryType::Dir),
        ]);
        let view = LayerView::build(&index);
        let cases = [
            (
                "whiteouts renamed, marker and shadowed whiteout hidden",
                "d",
                vec!["a", "gone", "kept"],
            ),
            ("untouched dir", "plain", vec!["sub", "x"]),
            ("root", "", vec!["d", "plain"]),
        ];
        for (name, dir, want) in cases {
            assert_eq!(names(&view, &index, dir), want, "{name}");
        }
        let d = index.lookup("d").expect("d");
        let gone = view.child(&index, d, "gone").expect("gone");
        assert_eq!(view.node(gone), Node::Whiteout(gone));
        let kept = view.child(&index, d, "kept").expect("kept");
        assert_eq!(view.node(kept), Node::Entry(kept));
        assert!(view.is_opaque(d));
        assert!(!view.is_opaque(index.root()));
        assert_eq!(view.subdir_count(index.root()), 2);
        assert_eq!(view.subdir_count(index.lookup("plain").expect("plain")), 1);
    }

    /// Scale, not speed: a 100k-entry layer gets a complete view (its build time is
    /// measured by `cargo bench --bench mount_index`).
    #[test]
    fn builds_view_of_100k_entries() {
        let mut entries = Vec::with_capacity(101_000);
        for d in 0..100 {
            entries.push(toc_entry(&format!("dir{d}"), EntryType::Dir));
            entries.push(toc_entry(&format!("dir{d}/.wh.gone"), EntryType::Reg));
            for f in 0..1000 {
                entries.push(toc_entry(&format!("dir{d}/file{f}"), EntryType::Reg));
            }
        }
        let index = Index::build(
            &Toc {
                version: 1,
                entries,
            },
            1000,
        )
        .expect("index");
        let view = LayerView::build(&index);
        assert_eq!(view.subdir_count(index.root()), 100);
        for d in [0, 7, 99] {
            let dir = index.lookup(&format!("dir{d}")).expect("dir");
            let listing = view.children_of(&index, dir);
            assert_eq!(listing.len(), 1001, "dir{d}");
            assert!(
                listing.iter().all(|c| !c.name.starts_with(".wh.")),
                "dir{d}"
            );
            assert!(
                listing.windows(2).all(|w| w[0].name < w[1].name),
                "dir{d} sorted"
            );
            let gone = view.child(&index, dir, "gone").expect("whiteout");
            assert_eq!(view.node(gone), Node::Whiteout(gone), "dir{d}");
            assert_eq!(view.subdir_count(dir), 0, "dir{d}");
        }
    }

    #[test]
    fn inode_numbers_round_trip() {
        let cases = [("root", 0, 1), ("first", 1, 2), ("max", u32::MAX, 1 << 32)];
        for (name, id, ino) in cases {
            assert_eq!(inode_of(id), ino, "{name}");
            assert_eq!(entry_of(ino), Some(id), "{name}");
        }
        assert_eq!(entry_of(0), None);
        assert_eq!(entry_of((1 << 32) + 1), None);
    }
}
