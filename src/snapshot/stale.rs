//! Dead FUSE mounts on snapshot directories. A daemon killed with SIGKILL leaves its lazy
//! layer mounts in the mount table with no process serving them: every access answers
//! ENOTCONN, so they cannot be mounted again, removed, or used by containers. The store
//! detaches them when it opens, before the remote snapshots are mounted again. Mounts
//! that still answer (a live fuse manager's) are left alone.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

/// Detaches every FUSE mount under `dir` whose server is gone; returns what was detached.
pub(super) fn detach_dead_mounts(dir: &Path) -> Vec<PathBuf> {
    let table = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(table) => table,
        Err(error) => {
            tracing::warn!(%error, "read the mount table to find dead FUSE mounts");
            return Vec::new();
        }
    };
    let mut detached = Vec::new();
    // Last listed first: a mount stacked on another is listed after it.
    for point in fuse_mounts_under(&table, dir).into_iter().rev() {
        if !is_dead(&point) {
            continue;
        }
        match umount2(&point, MntFlags::MNT_DETACH) {
            Ok(()) => {
                tracing::info!(mountpoint = %point.display(), "detached a dead FUSE mount");
                detached.push(point);
            }
            Err(error) => {
                tracing::warn!(mountpoint = %point.display(), %error, "detach dead FUSE mount")
            }
        }
    }
    detached
}

/// A FUSE mount whose connection is gone answers ENOTCONN to every request. Listing its
/// root asks the server (opendir, readdir); a stat may be answered from cached attributes.
fn is_dead(point: &Path) -> bool {
    let enotconn = |e: &std::io::Error| e.raw_os_error() == Some(Errno::ENOTCONN as i32);
    match std::fs::read_dir(point) {
        Ok(mut entries) => entries
            .next()
            .is_some_and(|e| e.is_err_and(|e| enotconn(&e))),
        Err(e) => enotconn(&e),
    }
}

/// Mount points of `fuse*` filesystems at or under `dir`, in mountinfo order.
fn fuse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mounts_in(mountinfo, dir, true)
}

/// Mount points at or under `dir` (only `fuse*` ones with `fuse_only`), in mountinfo
/// order.
fn mounts_in(mountinfo: &str, dir: &Path, fuse_only: bool) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let point = PathBuf::from(unescape(fields.split(' ').nth(4)?));
            let fstype = rest.split(' ').next()?;
            let kept = !fuse_only || fstype.starts_with("fuse");
            (kept && point.starts_with(dir)).then_some(point)
        })
        .collect()
}

/// The current mount points at or under `dir` (only FUSE ones with `fuse_only`), in
/// mountinfo order; empty (logged) when the mount table cannot be read.
pub(super) fn mounts_under(dir: &Path, fuse_only: bool) -> Vec<PathBuf> {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(table) => mounts_in(&table, dir, fuse_only),
        Err(error) => {
            tracing::warn!(%error, "read the mount table");
            Vec::new()
        }
    }
}

/// Detaches every mount at or under `dir`, innermost first.
pub(super) fn detach_all_under(dir: &Path) -> Result<(), (PathBuf, Errno)> {
    for point in mounts_under(dir, false).into_iter().rev() {
        match umount2(&point, MntFlags::MNT_DETACH) {
            // Gone meanwhile (its server unmounted it): what we wanted.
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(errno) => return Err((point, errno)),
        }
    }
    Ok(())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(value)) => {
                out.push(value);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 0:21 / / rw - ext4 /dev/sda rw
40 22 0:40 / /r/snapshots/1/fs ro - fuse.estargz estargz ro
41 22 0:41 / /r/snapshots/2/fs rw - overlay overlay rw
42 40 0:42 / /r/snapshots/1/fs ro - fuse.estargz estargz ro
43 22 0:43 / /r/snap\\040x/3/fs ro - fuse estargz ro
44 22 0:44 / /other/snapshots/4/fs ro - fuse.estargz estargz ro
";

    #[test]
    fn finds_fuse_mounts_under_the_directory() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "stacked mounts listed twice, overlay skipped",
                "/r/snapshots",
                &["/r/snapshots/1/fs", "/r/snapshots/1/fs"],
            ),
            ("escaped space", "/r/snap x", &["/r/snap x/3/fs"]),
            ("nothing under it", "/none", &[]),
        ];
        for (name, dir, want) in cases {
            let got = fuse_mounts_under(TABLE, Path::new(dir));
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_plain_directory_is_not_dead() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_dead(dir.path()));
        assert!(
            !is_dead(&dir.path().join("missing")),
            "ENOENT is not ENOTCONN"
        );
    }
}
