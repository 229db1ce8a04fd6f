//! Root-only state on disk. Everything the daemon and the fuse manager keep (chunk and
//! passthrough copies of private images, TOCs, the metadata database, logs, pid files,
//! sockets) is reachable by root only: directories are created 0700 and files 0600, with
//! the mode given at creation rather than left to the process umask, and state an older
//! version left with group or world access is tightened once at startup.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory the daemon creates for itself.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the daemon creates.
pub const FILE_MODE: u32 = 0o600;
/// Permission bits for anyone but the owner.
const OTHERS: u32 = 0o077;

/// Errors making a directory private.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFsError {
    #[error("create private directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("stat {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("{path} is not a directory")]
    NotDirectory { path: PathBuf },
    #[error("restrict {path} to its owner: {source}")]
    Restrict { path: PathBuf, source: io::Error },
}

/// Creates `dir` and its missing parents with mode 0700; an existing one is left alone.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates the directory `dir` (mode 0700); its parent must exist.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(dir)
}

/// Options that create files with mode 0600 (set what else is needed on them).
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Like [`File::create`], a new file being 0600.
pub fn create_file(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Opens `path` for appending, creating it 0600.
pub fn append_file(path: &Path) -> io::Result<File> {
    options().append(true).create(true).open(path)
}

/// Like [`std::fs::write`], a new file being 0600.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create_file(path)?.write_all(bytes)
}

/// Makes `dir` the daemon's own: created 0700 with its missing parents, or, found with
/// group or world access, tightened to 0700 with a warning naming it. True when it
/// was tightened.
pub fn ensure_private_dir(dir: &Path) -> Result<bool, PrivateFsError> {
    create_dir_all(dir).map_err(|source| PrivateFsError::Create {
        path: dir.to_owned(),
        source,
    })?;
    let meta = std::fs::metadata(dir).map_err(|source| PrivateFsError::Stat {
        path: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(PrivateFsError::NotDirectory {
            path: dir.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode == DIR_MODE {
        return Ok(false);
    }
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(|source| {
        PrivateFsError::Restrict {
            path: dir.to_owned(),
            source,
        }
    })?;
    if mode & OTHERS != 0 {
        tracing::warn!(
            dir = %dir.display(),
            was = format!("{mode:04o}"),
            "state directory was open to other users: now 0700"
        );
        return Ok(true);
    }
    Ok(false)
}

/// What a tightening pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tightened {
    /// Paths looked at.
    pub checked: u64,
    /// Paths whose group and other permission bits were removed.
    pub changed: u64,
    /// Paths that could not be looked at or changed (logged).
    pub failed: u64,
}

impl Tightened {
    fn add(&mut self, other: Tightened) {
        self.checked = self.checked.saturating_add(other.checked);
        self.changed = self.changed.saturating_add(other.changed);
        self.failed = self.failed.saturating_add(other.failed);
    }
}

/// Removes group and other permission bits from `path` itself when it has any (a
/// missing path is fine; a symlink is never followed nor changed).
pub fn tighten(path: &Path) -> Tightened {
    let mut done = Tightened::default();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return done,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "stat to restrict");
            done.failed = 1;
            return done;
        }
    };
    done.checked = 1;
    if meta.file_type().is_symlink() {
        return done;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & OTHERS == 0 {
        return done;
    }
    // Setuid and friends have no business in the daemon's state either.
    match std::fs::set_permissions(path, Permissions::from_mode(mode & 0o700)) {
        Ok(()) => done.changed = 1,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "restrict to owner");
            done.failed = 1;
        }
    }
    done
}

/// [`tighten`] on `dir` and everything below it, without following symlinks or
/// descending into other filesystems (a mount under the cache is not ours).
pub fn tighten_tree(dir: &Path) -> Tightened {
    let mut done = tighten(dir);
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return done;
    };
    if !top.is_dir() {
        return done;
    }
    use std::os::unix::fs::MetadataExt;
    let device = top.dev();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let entries = match std::fs::read_dir(&next) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(dir = %next.display(), %error, "list to restrict");
                done.failed = done.failed.saturating_add(1);
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            done.add(tighten(&path));
            let descend = entry
                .file_type()
                .is_ok_and(|kind| kind.is_dir() && !kind.is_symlink())
                && std::fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == device);
            if descend {
                pending.push(path);
            }
        }
    }
    done
}

/// [`tighten`] on `dir` and its direct entries only (`snapshots/`: the entries'
/// contents are containers' files, with the image's own modes).
pub fn tighten_entries(dir: &Path) -> Tightened {
    let mut done = tighten(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            done.add(tighten(&entry.path()));
        }
    }
    done
}

/// Sums passes, for one log line.
pub fn total(passes: impl IntoIterator<Item = Tightened>) -> Tightened {
    let mut sum = Tightened::default();
    for pass in passes {
        sum.add(pass);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn new_files_and_directories_are_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested).expect("create");
        create_dir(&dir.path().join("single")).expect("create");
        let cases = [
            ("created parent", dir.path().join("a"), DIR_MODE),
            ("created leaf", nested.clone(), DIR_MODE),
            ("single dir", dir.path().join("single"), DIR_MODE),
        ];
        write_file(&nested.join("written"), b"x").expect("write");
        create_file(&nested.join("created")).expect("create");
        append_file(&nested.join("appended")).expect("append");
        let files = ["written", "created", "appended"].map(|n| (n, nested.join(n), FILE_MODE));
        for (name, path, want) in cases.into_iter().chain(files) {
            assert_eq!(mode(&path), want, "{name}");
        }
    }

    #[test]
    fn an_open_root_is_tightened_and_a_private_one_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("created", None, false),
            ("world readable", Some(0o755), true),
            ("group only", Some(0o750), true),
            ("already private", Some(0o700), false),
            ("owner lacking bits", Some(0o500), false),
        ];
        for (name, existing, warned) in cases {
            let root = dir.path().join(name.replace(' ', "-")).join("root");
            if let Some(existing) = existing {
                std::fs::create_dir_all(&root).expect("mkdir");
                chmod(&root, existing);
            }
            assert_eq!(ensure_private_dir(&root).expect(name), warned, "{name}");
            assert_eq!(mode(&root), DIR_MODE, "{name}");
        }
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("write");
        assert!(matches!(
            ensure_private_dir(&file),
            Err(PrivateFsError::Create { .. } | PrivateFsError::NotDirectory { .. })
        ));
    }

    /// A root as an older version left it: everything 0755/0644.
    #[test]
    fn an_old_loose_tree_is_tightened_without_touching_snapshot_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let cache = root.join("cache");
        let snapshot_fs = root.join("snapshots/1/fs");
        for d in [&cache.join("files"), &cache.join("tocs"), &snapshot_fs] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"not ours").expect("write");
        chmod(&outside, 0o644);
        let loose_files = [
            root.join("metadata.redb"),
            cache.join("sha256-aa-0"),
            cache.join("files/sha256-bb"),
            cache.join("tocs/cc"),
        ];
        for file in &loose_files {
            std::fs::write(file, b"secret").expect("write");
            chmod(file, 0o644);
        }
        let setuid = cache.join("odd");
        std::fs::write(&setuid, b"").expect("write");
        chmod(&setuid, 0o4755);
        let image_file = snapshot_fs.join("usr-bin-tool");
        std::fs::write(&image_file, b"").expect("write");
        chmod(&image_file, 0o755);
        symlink(&outside, cache.join("link")).expect("symlink");
        let loose_dirs = [
            root.clone(),
            cache.clone(),
            cache.join("files"),
            cache.join("tocs"),
            root.join("snapshots"),
            root.join("snapshots/1"),
        ];
        for d in &loose_dirs {
            chmod(d, 0o755);
        }
        chmod(&snapshot_fs, 0o755);

        let done = total([
            tighten(&root.join("metadata.redb")),
            tighten(&root.join("absent.pid")),
            tighten_entries(&root.join("snapshots")),
            tighten_tree(&cache),
        ]);

        for file in &loose_files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        for d in &loose_dirs[1..] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&setuid), 0o700, "setuid dropped with the others' bits");
        assert_eq!(
            mode(&snapshot_fs),
            0o755,
            "an overlay upper dir keeps its mode"
        );
        assert_eq!(
            mode(&image_file),
            0o755,
            "container files keep the image's modes"
        );
        assert_eq!(mode(&outside), 0o644, "a symlink is not followed");
        // Everything but the root (left to ensure_private_dir), the fs dir and the link.
        assert_eq!(done.changed, 10, "{done:?}");
        assert_eq!(done.failed, 0, "{done:?}");

        let again = total([
            tighten_entries(&root.join("snapshots")),
            tighten_tree(&cache),
        ]);
        assert_eq!(
            again.changed, 0,
            "a second pass finds nothing to do: {again:?}"
        );
        assert!(again.checked >= 9, "{again:?}");
    }
}
