//! The C allocator's policy for large blocks. glibc raises its mmap threshold (up to
//! 32 MiB) each time a large mmapped block is freed; from then on large blocks come from
//! the per-thread heap arenas, where calloc must zero them by hand, which makes every page
//! resident. Each FUSE worker thread holds a zeroed 16 MiB request buffer (fuser's), so
//! under the moving threshold every lazily mounted layer cost 32 MiB of RSS (two threads):
//! 365 MiB for the eleven layers of `tests/load.rs`, against 60 MiB with a fixed one.
//! Kept mmapped, those buffers cost only the pages the kernel writes into, and freed large
//! blocks go back to the system at once.

/// Blocks from this size up are mmapped.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Fixes glibc's mmap threshold (which also stops it moving). Call first thing in main.
/// Returns whether the allocator took it (always false on other C libraries).
pub fn fix_mmap_threshold() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        set_mmap_threshold()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one FFI call: glibc has no safe binding
fn set_mmap_threshold() -> bool {
    // SAFETY: mallopt only sets allocator parameters; it takes plain integers, touches no
    // memory of ours and is thread safe.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_threshold() {
        assert!(super::fix_mmap_threshold());
    }
}
