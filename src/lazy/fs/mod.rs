//! The read-only FUSE filesystem of one eStargz layer.
//!
//! [`LayerFs`] answers every metadata operation from memory (the layer's
//! [`estargz::Index`] plus a [`LayerView`] built once at mount) and serves reads from
//! tasks on a tokio runtime, so a FUSE thread never waits on the network. [`mount`]
//! mounts it and returns a [`MountHandle`] that unmounts on drop.

mod adopt;
mod layer_fs;
mod ledger;
mod passthrough;
pub mod readahead;
mod view;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

pub use adopt::AdoptError;
pub use layer_fs::LayerFs;
pub use ledger::LedgerError;
pub use view::{LayerView, Node};

/// The content of one layer, as the lazy layer provides it.
pub trait LayerContent: Send + Sync + 'static {
    /// The layer's tree.
    fn index(&self) -> &estargz::Index;

    /// Reads up to `len` bytes of regular file `file` from `offset` (verified bytes
    /// only). Shorter results mean end of file. Errors reach the reader as EIO.
    fn read(
        &self,
        file: estargz::EntryId,
        offset: u64,
        len: u32,
    ) -> BoxFuture<'static, Result<Vec<u8>, std::io::Error>>;

    /// Called when regular file `file` is opened (e.g. to record what a workload uses).
    fn opened(&self, _file: estargz::EntryId) {}

    /// A local file opened read-only holding exactly `file`'s verified content, when the
    /// layer has all of it; the kernel then serves reads from it (FUSE passthrough).
    /// Default: never.
    fn backing_file(&self, _file: estargz::EntryId) -> BoxFuture<'static, Option<std::fs::File>> {
        Box::pin(async { None })
    }
}

/// How a layer is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Report opaque directories with `user.overlay.opaque` too, for overlay mounts with
    /// `userxattr` (default false: only `trusted.overlay.opaque`).
    pub userxattr: bool,
    /// Let users other than the mounter (containers, root containerd) in (default true).
    pub allow_other: bool,
    /// FUSE worker threads (default 2).
    pub threads: usize,
    /// Filesystem subtype shown in the mount table (default "estargz").
    pub subtype: String,
    /// Serve fully local files through FUSE passthrough where the kernel supports it
    /// (Linux >= 6.9, CAP_SYS_ADMIN); default true.
    pub passthrough: bool,
    /// The mount's kernel readahead in KiB (0: the kernel's 128 KiB); default 1024.
    pub read_ahead_kb: u32,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            userxattr: false,
            allow_other: true,
            threads: 2,
            subtype: "estargz".to_string(),
            passthrough: true,
            read_ahead_kb: DEFAULT_READ_AHEAD_KB,
        }
    }
}

/// Kernel readahead of a mount by default: sequential reads then reach the daemon as
/// 1 MiB requests (the most one FUSE request carries) instead of 128 KiB ones, an eighth
/// of the round trips through /dev/fuse for the same bytes.
pub const DEFAULT_READ_AHEAD_KB: u32 = 1024;

/// Errors from mounting a layer.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("mount layer at {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmount layer at {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("take over the fuse connection of {path}: {source}")]
    Adopt {
        path: PathBuf,
        #[source]
        source: AdoptError,
    },
}

/// A mounted layer; dropping it unmounts.
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    /// A copy of the `/dev/fuse` connection, to hand to the daemon (which keeps the
    /// mount alive across this process's death) and, from it, to the next manager.
    connection: OwnedFd,
    /// Set when the connection was taken over from a dead process.
    relay: Option<adopt::Relay>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// A new copy of the mount's `/dev/fuse` connection.
    pub fn connection(&self) -> std::io::Result<OwnedFd> {
        self.connection.try_clone()
    }

    /// Whether the connection was taken over from another process.
    pub fn adopted(&self) -> bool {
        self.relay.is_some()
    }

    /// Unmounts and waits for the FUSE threads to finish.
    pub fn unmount(mut self) -> Result<(), FsError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), FsError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let unmounted = self.unmount_session(session);
        if unmounted.is_ok() {
            // The connection ended with the mount, and its backing ids with it.
            ledger::remove(&self.mountpoint);
        }
        unmounted
    }

    fn unmount_session(&mut self, session: fuser::BackgroundSession) -> Result<(), FsError> {
        tracing::info!(mountpoint = %self.mountpoint.display(), "unmounting layer");
        let Some(relay) = self.relay.take() else {
            return session
                .umount_and_join()
                .map_err(|source| FsError::Unmount {
                    path: self.mountpoint.clone(),
                    source,
                });
        };
        // fuser did not mount this one: detach it as fuser does its own. The kernel
        // then ends the connection, which ends the relay, which ends fuser's loop.
        let detached = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        if detached.is_err() {
            relay.stop();
        }
        relay.join();
        if let Err(error) = session.join() {
            tracing::debug!(%error, "adopted session ended");
        }
        detached.map_err(|errno| FsError::Unmount {
            path: self.mountpoint.clone(),
            source: errno.into(),
        })
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(error) = self.unmount_inner() {
            tracing::warn!(%error, "unmount on drop failed");
        }
    }
}

/// Mounts `content` read-only at `mountpoint`; reads run on `runtime`.
pub fn mount(
    mountpoint: &Path,
    content: std::sync::Arc<dyn LayerContent>,
    runtime: tokio::runtime::Handle,
    options: &MountOptions,
) -> Result<MountHandle, FsError> {
    let fs = LayerFs::new(content, runtime, options).with_open_files(
        passthrough::OpenFiles::recorded(ledger::Ledger::create(mountpoint)),
    );
    let failed = |source| FsError::Mount {
        path: mountpoint.to_path_buf(),
        source,
    };
    let session = fuser::Session::new(fs, mountpoint, &fuser_config(options)).map_err(failed)?;
    let connection = session.as_fd().try_clone_to_owned().map_err(failed)?;
    let session = session.spawn().map_err(failed)?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted layer");
    if options.read_ahead_kb > 0 {
        readahead::set(mountpoint, options.read_ahead_kb);
    }
    Ok(MountHandle {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        connection,
        relay: None,
    })
}

/// Serves `content` on `connection`, the `/dev/fuse` connection of a layer mounted at
/// `mountpoint` by a process that is gone (see [`adopt`](self::adopt)): the mount, its
/// inode numbers (derived from the layer's TOC) and its open files stay as they were.
pub fn adopt(
    mountpoint: &Path,
    connection: OwnedFd,
    content: std::sync::Arc<dyn LayerContent>,
    runtime: tokio::runtime::Handle,
    options: &MountOptions,
) -> Result<MountHandle, FsError> {
    let adopt_failed = |source| FsError::Adopt {
        path: mountpoint.to_path_buf(),
        source,
    };
    let mount_failed = |source| FsError::Mount {
        path: mountpoint.to_path_buf(),
        source,
    };
    adopt::check_alive(&connection).map_err(adopt_failed)?;
    // The ledger stays as the dead process left it, for whoever takes over next.
    let inherited = ledger::load(mountpoint);
    if !inherited.is_empty() {
        tracing::info!(mountpoint = %mountpoint.display(), files = inherited.len(), "reusing the dead server's passthrough backing ids");
    }
    let fs = LayerFs::new(content, runtime, options)
        .with_open_files(passthrough::OpenFiles::inheriting(inherited));
    let (fusers, ours) = adopt::socket_pair().map_err(adopt_failed)?;
    let config = fuser_config(options);
    let session = fuser::Session::from_fd(fs, fusers, config.acl, config).map_err(mount_failed)?;
    adopt::drop_init_reply(&ours).map_err(adopt_failed)?;
    let session = session.spawn().map_err(mount_failed)?;
    let copy = connection.try_clone().map_err(mount_failed)?;
    let relay = adopt::start(copy, ours, mountpoint);
    tracing::info!(mountpoint = %mountpoint.display(), "took over the layer's fuse connection");
    Ok(MountHandle {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        connection,
        relay: Some(relay),
    })
}

fn fuser_config(options: &MountOptions) -> fuser::Config {
    use fuser::MountOption;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("estargz".to_string()),
        MountOption::Subtype(options.subtype.clone()),
        // The kernel checks modes and owners from our attributes, as on a local disk.
        MountOption::DefaultPermissions,
        // Container images carry device nodes and setuid binaries.
        MountOption::Dev,
        MountOption::Suid,
        MountOption::NoAtime,
    ];
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(options.threads.max(1));
    config
}
