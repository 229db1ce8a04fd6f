//! The kernel readahead of a mounted layer. The FUSE handshake cannot raise it above the
//! kernel's 128 KiB default; the mount's entry in sysfs can (as root).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Sets the readahead of the filesystem mounted at `mountpoint` to `kb` KiB. A failure
/// (not root, no sysfs) costs only speed, so it is logged rather than returned.
pub(super) fn set(mountpoint: &Path, kb: u32) {
    match try_set(mountpoint, kb) {
        Ok(knob) => tracing::debug!(knob = %knob.display(), kb, "set readahead"),
        Err(error) => {
            tracing::debug!(%error, mountpoint = %mountpoint.display(), "readahead left as is")
        }
    }
}

fn try_set(mountpoint: &Path, kb: u32) -> std::io::Result<PathBuf> {
    let knob = knob_of(std::fs::metadata(mountpoint)?.dev());
    std::fs::write(&knob, format!("{kb}\n"))?;
    Ok(knob)
}

/// The readahead knob of the device `dev` (as `stat` reports it for the mount).
pub fn knob_of(dev: u64) -> PathBuf {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    PathBuf::from(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knob_is_named_by_major_and_minor() {
        let dev = libc::makedev(0, 1234);
        assert_eq!(
            knob_of(dev),
            Path::new("/sys/class/bdi/0:1234/read_ahead_kb")
        );
    }
}
