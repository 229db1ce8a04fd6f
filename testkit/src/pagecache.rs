//! Dropping a file's pages from the kernel's page cache, so that the next read of a FUSE
//! file (mounted with keep-cache) reaches the filesystem again.

use std::os::fd::AsFd;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

/// Asks the kernel to drop the cached pages of `file` (all of it).
pub fn drop_pages(file: impl AsFd) -> nix::Result<()> {
    posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
}
