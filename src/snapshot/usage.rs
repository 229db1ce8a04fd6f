//! Disk usage of a directory tree, counted like containerd's `fs.DiskUsage`: allocated
//! blocks of each distinct inode once, and the number of distinct inodes.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Error, Usage};

/// Measures the tree under `root` (not following symlinks).
pub(super) fn disk_usage(root: &Path) -> Result<Usage, Error> {
    let mut seen = HashSet::new();
    let mut bytes: u64 = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
        if seen.insert((meta.dev(), meta.ino())) {
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(Error::io("read dir", &path))? {
                pending.push(entry.map_err(Error::io("read dir", &path))?.path());
            }
        }
    }
    Ok(Usage {
        size: i64::try_from(bytes).unwrap_or(i64::MAX),
        inodes: i64::try_from(seen.len()).unwrap_or(i64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hardlinked_inode_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let usage = disk_usage(dir.path()).unwrap();
        assert_eq!(usage.inodes, 3, "root dir, file a=b, sub");
        assert!(usage.size >= 10_000, "size {}", usage.size);
    }
}
