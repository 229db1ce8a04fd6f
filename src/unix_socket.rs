//! Binding the daemon's unix sockets so that they appear at their path already with
//! their final mode and group. A socket is bound in a fresh 0700 directory beside its
//! path, given its permissions there, then renamed into place: no client ever sees it
//! with the looser mode `bind(2)` gives under the process umask (the umask is process
//! wide, so it cannot be narrowed for one bind in a threaded daemon), and a client that
//! sees the socket may use it at once.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::private_fs;

/// Who may use a socket: its mode and, when set, the group it is shared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Permission bits of the socket (e.g. 0o600).
    pub mode: u32,
    /// Group id the socket is given; `None` leaves the daemon's group.
    pub group: Option<u32>,
}

impl Access {
    /// Owner (root) only: mode 0600.
    pub const PRIVATE: Access = Access {
        mode: 0o600,
        group: None,
    };

    /// Owner only, or owner and group `gid` (mode 0660) when one is given.
    pub fn shared_with(gid: Option<u32>) -> Access {
        match gid {
            Some(gid) => Access {
                mode: 0o660,
                group: Some(gid),
            },
            None => Access::PRIVATE,
        }
    }
}

/// Errors binding a socket; each names the step and the socket's path.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("create directory of socket {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("create staging directory for socket {path}: {source}")]
    Staging {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("set mode {mode:o} on socket {path}: {source}")]
    Mode {
        path: PathBuf,
        mode: u32,
        source: std::io::Error,
    },
    #[error("give socket {path} to group {gid}: {source}")]
    Chown {
        path: PathBuf,
        gid: u32,
        source: std::io::Error,
    },
    #[error("let the group through the directory of socket {path}: {source}")]
    OpenDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("move socket {path} into place: {source}")]
    Rename {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds a listener at `path` with `access`, creating its directory (0700) when missing
/// and replacing a stale socket left by an earlier run. With a group, the directory
/// also lets others through (adds 0o011: no listing) so the group can reach the socket.
pub fn bind(path: &Path, access: Access) -> Result<UnixListener, BindError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let owned = || path.to_path_buf();
    private_fs::create_dir_all(dir).map_err(|source| BindError::Directory {
        path: owned(),
        source,
    })?;
    // A short random name keeps the staged path about as long as `path` (sun_path
    // holds only 108 bytes); the directory is 0700 and removed when dropped.
    let staging = tempfile::Builder::new()
        .prefix(".")
        .rand_bytes(5)
        .tempdir_in(dir)
        .map_err(|source| BindError::Staging {
            path: owned(),
            source,
        })?;
    let staged = staging.path().join("s");
    let listener = UnixListener::bind(&staged).map_err(|source| BindError::Bind {
        path: owned(),
        source,
    })?;
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(&staged, None, Some(gid)).map_err(|source| BindError::Chown {
            path: owned(),
            gid,
            source,
        })?;
    }
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(access.mode)).map_err(
        |source| BindError::Mode {
            path: owned(),
            mode: access.mode,
            source,
        },
    )?;
    if access.group.is_some() {
        open_the_way(dir).map_err(|source| BindError::OpenDirectory {
            path: owned(),
            source,
        })?;
    }
    // rename(2) replaces a stale socket atomically: the path never lacks a socket, and
    // the listener keeps accepting on the inode under its new name.
    std::fs::rename(&staged, path).map_err(|source| BindError::Rename {
        path: owned(),
        source,
    })?;
    Ok(listener)
}

/// Adds search permission for group and others (0o011) to `dir`, created 0700.
fn open_the_way(dir: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o011 != 0o011 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn socket_appears_with_its_mode_and_group_and_answers() {
        let tmp = tempfile::tempdir().unwrap();
        // The test's own group: chown to it works without privileges.
        let own_gid = std::fs::metadata(tmp.path()).unwrap().gid();
        let cases = [
            ("private", Access::PRIVATE, 0o600, 0o700),
            ("group", Access::shared_with(Some(own_gid)), 0o660, 0o711),
        ];
        for (name, access, mode, dir_mode) in cases {
            let path = tmp.path().join(name).join("d.sock");
            let listener = bind(&path, access).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket(), "{name}");
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
            assert_eq!(meta.gid(), own_gid, "{name}");
            let dir = std::fs::metadata(path.parent().unwrap()).unwrap();
            assert_eq!(dir.permissions().mode() & 0o777, dir_mode, "{name}");
            assert_eq!(
                entries(path.parent().unwrap()),
                ["d.sock"],
                "{name}: staging left"
            );
            let connecting = tokio::net::UnixStream::connect(&path);
            let (accepted, connected) = tokio::join!(listener.accept(), connecting);
            accepted.unwrap();
            connected.unwrap();
        }
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind(&path, Access::PRIVATE).unwrap();
        let (accepted, connected) =
            tokio::join!(listener.accept(), tokio::net::UnixStream::connect(&path));
        accepted.unwrap();
        connected.unwrap();
        assert_eq!(entries(tmp.path()), ["d.sock"]);
    }

    #[tokio::test]
    async fn a_directory_in_the_way_is_an_error_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d.sock");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        let err = bind(&path, Access::PRIVATE).unwrap_err();
        assert!(matches!(err, BindError::Rename { .. }), "{err}");
        assert!(err.to_string().contains("d.sock"), "{err}");
        assert_eq!(entries(tmp.path()), ["d.sock"], "staging left");
    }
}
