//! The seam where lazy pulling plugs in: the [`Mounter`] trait a lazy server implements
//! (in this process, or in the FUSE manager), its error, and the labels of containerd's
//! remote-snapshot contract (PROTOCOL.md section 1). The snapshot store knows this trait,
//! never FUSE or HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Labels;

/// Label naming the chain id a prepared layer is to be committed as.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";
/// Label marking a lazily mounted snapshot.
pub const REMOTE_LABEL: &str = "containerd.io/snapshot/remote";
/// Value of [`REMOTE_LABEL`].
pub const REMOTE_LABEL_VALUE: &str = "remote snapshot";
/// [`Mounter::attempt_timeout`] of a mounter that does not say.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a layer could not be mounted lazily.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("layer cannot be mounted lazily: {0}")]
    NotRemote(String),
    #[error("mount layer at {mountpoint}: {source}")]
    Mount {
        mountpoint: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot tell which layers are mounted: {0}")]
    Unknown(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Serves layers lazily on snapshot directories (issue 4 implements it with FUSE).
pub trait Mounter: Send + Sync {
    /// About the longest one [`Mounter::mount`] takes: how long a Prepare of a layer waits
    /// for another Prepare's attempt at the same layer before trying on its own.
    fn attempt_timeout(&self) -> Duration {
        DEFAULT_ATTEMPT_TIMEOUT
    }
    /// Mounts the layer that `labels` describe on `mountpoint`, or says why it cannot.
    fn mount(&self, mountpoint: &Path, labels: &Labels) -> Result<(), MountError>;
    /// Unmounts what [`Mounter::mount`] mounted on `mountpoint`.
    fn unmount(&self, mountpoint: &Path) -> Result<(), MountError>;
    /// The mountpoints currently served (to find remote snapshots whose mount was lost).
    /// [`MountError::Unknown`] when the server cannot be asked: callers then touch no
    /// mount on the strength of the answer (an empty list would say every one is lost).
    fn mounted(&self) -> Result<Vec<PathBuf>, MountError>;
    /// Unmounts `mountpoint`, which no snapshot owns (a crash left it).
    fn drop_orphan(&self, mountpoint: &Path) -> Result<(), MountError> {
        self.unmount(mountpoint)
    }
}
