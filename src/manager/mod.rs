//! The FUSE manager: a long-lived process (`estargz-snapshotter fuse-manager`) that owns
//! every lazy FUSE mount, so that restarting or upgrading the daemon, even with SIGKILL,
//! leaves running containers' files readable.
//!
//! With `[fuse] manager = true` the daemon keeps containerd's bookkeeping and asks the
//! manager, over a unix socket under the root, to mount and unmount layers; it starts the
//! manager when none answers. A FUSE connection lives as long as the process holding
//! `/dev/fuse` open, and the manager is that process: the daemon can come and go. The
//! manager hosts the lazy-pull machinery (registry client, chunk cache, prefetch,
//! background fetch) and the status/metrics endpoints. Stopping the manager itself
//! (SIGTERM) unmounts its layers; the daemon mounts them again when it next starts it.

pub mod client;
mod fds;
mod protocol;
pub mod server;

use std::path::{Path, PathBuf};

pub use client::ManagerMounter;

/// The manager's socket under the daemon root.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("fuse-manager.sock")
}

/// The manager's log (its stdout and stderr), under the daemon root.
pub fn log_path(root: &Path) -> PathBuf {
    root.join("fuse-manager.log")
}

/// The file holding the manager's process id.
pub fn pid_path(root: &Path) -> PathBuf {
    root.join("fuse-manager.pid")
}
