//! Finds and lazily unmounts every mount point under a directory (cleanup after containerd).

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// Errors from reading the mount table.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    #[error("read /proc/self/mountinfo: {0}")]
    Read(std::io::Error),
}

/// Mount points at or below `root`, deepest first.
pub fn mounts_under(root: &Path) -> Result<Vec<PathBuf>, MountsError> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountsError::Read)?;
    Ok(select_under(&table, root))
}

/// Lazily unmounts everything at or below `root`, deepest first; returns what failed.
pub fn unmount_all_under(root: &Path) -> Result<Vec<(PathBuf, nix::Error)>, MountsError> {
    let mut failures = Vec::new();
    for point in mounts_under(root)? {
        if let Err(e) = umount2(&point, MntFlags::MNT_DETACH) {
            failures.push((point, e));
        }
    }
    Ok(failures)
}

/// Mount points (field 5 of mountinfo) under `root`, deepest first, without duplicates.
fn select_under(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .filter(|point| point.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
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
30 22 0:30 / /tmp/ctd/root/snap/1/fs rw - overlay overlay rw
31 22 0:31 / /tmp/ctd/state/task/ns/c1/rootfs rw - overlay overlay rw
32 31 0:32 / /tmp/ctd/state/task/ns/c1/rootfs/proc rw - proc proc rw
33 22 0:33 / /tmp/other rw - tmpfs tmpfs rw
34 22 0:34 / /tmp/ctd/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn selects_mounts_under_root_deepest_first() {
        let got = select_under(TABLE, Path::new("/tmp/ctd"));
        assert_eq!(
            got.first().unwrap(),
            Path::new("/tmp/ctd/state/task/ns/c1/rootfs/proc")
        );
        assert_eq!(got.len(), 4);
        assert!(got.contains(&PathBuf::from("/tmp/ctd/with space")));
        assert!(!got.contains(&PathBuf::from("/tmp/other")));
    }

    #[test]
    fn unescape_cases() {
        let cases = [
            ("plain", "/a/b", "/a/b"),
            ("space", "/a\\040b", "/a b"),
            ("backslash", "/a\\134b", "/a\\b"),
            ("short escape kept", "/a\\04", "/a\\04"),
        ];
        for (name, input, want) in cases {
            assert_eq!(unescape_octal(input), want, "{name}");
        }
    }
}
