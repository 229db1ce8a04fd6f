//! containerd snapshot semantics: the domain types and the error enum of the snapshot
//! store. The store itself lives in `store`, its persistence in `db`, the overlay
//! mount shapes in `mounts`, List filters in [`filter`], disk usage in `usage`, the dead
//! FUSE mounts a killed daemon left in `stale`, what no snapshot owns (crash
//! leftovers) in `orphans`, the seam lazy pulling plugs into in `seam`, and a Prepare
//! served lazily in `remote`.

mod db;
pub mod filter;
mod mounts;
mod orphans;
pub mod remote;
mod seam;
mod stale;
mod store;
mod turns;
mod usage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use orphans::CleanupReport;
pub use seam::{
    MountError, Mounter, DEFAULT_ATTEMPT_TIMEOUT, REMOTE_LABEL, REMOTE_LABEL_VALUE,
    SNAPSHOT_REF_LABEL,
};
pub use store::Store;

/// Labels attached to a snapshot.
pub type Labels = BTreeMap<String, String>;

/// What a snapshot is for; only active snapshots are writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Read-only view of a committed parent.
    View,
    /// Writable snapshot that can be committed.
    Active,
    /// Immutable snapshot that can be a parent.
    Committed,
}

impl Kind {
    /// The name containerd's filters use for this kind.
    pub fn filter_name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.filter_name())
    }
}

/// What Stat, Update and List report about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (active, view) or name (committed).
    pub name: String,
    /// Name of the committed parent, empty for none.
    pub parent: String,
    /// The snapshot's kind.
    pub kind: Kind,
    /// When it was created (for committed snapshots: committed).
    pub created: SystemTime,
    /// When its labels last changed.
    pub updated: SystemTime,
    /// Its labels.
    pub labels: Labels,
}

/// One mount containerd performs to assemble a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount type: "overlay" or "bind".
    pub kind: String,
    /// Mount source.
    pub source: String,
    /// fstab style options.
    pub options: Vec<String>,
}

/// Disk resources a snapshot takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes of disk blocks.
    pub size: i64,
    /// Number of distinct inodes.
    pub inodes: i64,
}

/// Errors of the snapshot store; `crate::error` maps them to gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {key:?} does not exist in namespace {namespace:?}")]
    NotFound { namespace: String, key: String },
    #[error("snapshot {key:?} already exists in namespace {namespace:?}")]
    AlreadyExists { namespace: String, key: String },
    #[error("snapshot key is empty")]
    EmptyKey,
    #[error("parent {0:?} is not a committed snapshot")]
    ParentNotCommitted(String),
    #[error("snapshot {key:?} was prepared on {parent:?}: its parent cannot change on commit")]
    ParentChanged { key: String, parent: String },
    #[error("snapshot {key:?} is {kind}, not active")]
    NotActive { key: String, kind: Kind },
    #[error("snapshot {0:?} is committed; only active and view snapshots have mounts")]
    NotMountable(String),
    #[error("cannot remove snapshot {0:?}: it has children")]
    HasChildren(String),
    #[error("cannot update field {path:?} of snapshot {key:?}")]
    ImmutableField { key: String, path: String },
    #[error("parse filter: {0}")]
    Filter(#[from] filter::ParseError),
    #[error("metadata database: {0}")]
    Database(Box<redb::Error>),
    #[error("decode metadata of snapshot {key:?}: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    #[error("encode metadata of snapshot {key:?}: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },
    #[error("snapshot id counter overflowed")]
    IdOverflow,
    #[error("cleanup removed every other orphan but not this one: {0}")]
    CleanupIncomplete(Box<Error>),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and the path it failed on.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// Lets `?` lift each of redb's error types into [`Error::Database`].
macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::Database(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
