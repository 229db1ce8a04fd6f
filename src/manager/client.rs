//! [`ManagerMounter`]: the daemon's [`Mounter`] when FUSE mounts live in the manager
//! process. Each call is one request over the manager socket; when nothing answers, the
//! manager is started (a child in its own process group, so it outlives the daemon) and
//! the call is made again. [`ManagerMounter::running_pid`] tells the daemon's watch
//! whether the manager is still the one it knows.
//!
//! The daemon keeps a copy of each mount's `/dev/fuse` connection (sent with the answer
//! to `Mount`), so a connection outlives a manager that dies: a FUSE mount ends when the
//! last descriptor of its connection closes. A manager the daemon starts first takes
//! over every kept connection (`Adopt`), before anything else is asked of it, and the
//! containers reading those mounts go on. An unmount closes the daemon's copy.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::fds;
use super::protocol::{Request, Response, MAX_LINE};
use crate::snapshot::{Labels, MountError, Mounter};

/// How long a freshly started manager may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors talking to the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("fuse manager at {socket}: {source}")]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("fuse manager answered {0:?}")]
    Garbled(String),
    #[error("start fuse manager {program}: {source}")]
    Start {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("fuse manager did not answer within {0:?} of being started (see its log)")]
    NotReady(Duration),
}

/// Mounts layers through the manager process.
pub struct ManagerMounter {
    root: PathBuf,
    /// Arguments that start the manager with the daemon's configuration.
    start_args: Vec<OsString>,
    /// Longest wait for one answer (a mount includes fetching its TOC and prefetch).
    call_timeout: Duration,
    /// Held while a manager is being started (and takes over the connections), so that
    /// only one is.
    starting: Mutex<()>,
    /// The daemon's copy of each mount's `/dev/fuse` connection, with its labels.
    connections: Mutex<HashMap<PathBuf, Kept>>,
}

/// A connection the daemon keeps for a mount.
struct Kept {
    labels: Labels,
    connection: OwnedFd,
}

impl ManagerMounter {
    /// A mounter for the manager of `root`; `start_args` start one (`fuse-manager` and the
    /// daemon's `--config`, `--root` and `--log-level`).
    pub fn new(root: &Path, start_args: Vec<OsString>, call_timeout: Duration) -> ManagerMounter {
        ManagerMounter {
            root: root.to_path_buf(),
            start_args,
            call_timeout,
            starting: Mutex::new(()),
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Returns once no manager is being started (its takeover of the kept connections
    /// is over): only then does its list of mounts say which ones were lost.
    pub fn wait_until_started(&self) {
        drop(self.starting.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Asks the running manager for a copy of the connection of each of `mounts` the
    /// daemon has none of (a restarted daemon's copies).
    pub fn keep_connections(&self, mounts: &[(PathBuf, Labels)]) {
        let mut kept = 0;
        for (mountpoint, labels) in mounts {
            if self.lock_connections().contains_key(mountpoint) {
                continue;
            }
            let request = Request::Connection {
                mountpoint: mountpoint.clone(),
            };
            match self.send(&request, None) {
                Ok((Response::Ok, Some(connection))) => {
                    self.keep(mountpoint, labels, connection);
                    kept += 1;
                }
                Ok((answer, _)) => {
                    tracing::debug!(mountpoint = %mountpoint.display(), ?answer, "no fuse connection to keep")
                }
                Err(error) => {
                    tracing::debug!(mountpoint = %mountpoint.display(), %error, "no fuse connection to keep")
                }
            }
        }
        if kept > 0 {
            tracing::info!(kept, "keeping copies of the fuse manager's connections");
        }
    }

    fn keep(&self, mountpoint: &Path, labels: &Labels, connection: OwnedFd) {
        let kept = Kept {
            labels: labels.clone(),
            connection,
        };
        self.lock_connections()
            .insert(mountpoint.to_path_buf(), kept);
    }

    fn lock_connections(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Kept>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands every kept connection to the manager that was just started. One it cannot
    /// take over is closed (its mount then fails, is detached and mounted afresh).
    fn adopt_all(&self) {
        let kept: Vec<(PathBuf, Labels)> = self
            .lock_connections()
            .iter()
            .map(|(path, kept)| (path.clone(), kept.labels.clone()))
            .collect();
        for (mountpoint, labels) in kept {
            let started = Instant::now();
            let request = Request::Adopt {
                mountpoint: mountpoint.clone(),
                labels,
            };
            let answer = {
                let connections = self.lock_connections();
                let Some(kept) = connections.get(&mountpoint) else {
                    continue;
                };
                let fd = kept.connection.as_fd();
                // The lock is held through the call: an unmount meanwhile waits for it.
                self.send(&request, Some(fd))
            };
            match answer {
                Ok((Response::Ok, _)) => tracing::info!(
                    mountpoint = %mountpoint.display(),
                    elapsed = ?started.elapsed(),
                    "the new fuse manager took over the mount"
                ),
                Ok((answer, _)) => {
                    tracing::warn!(mountpoint = %mountpoint.display(), ?answer, "the new fuse manager could not take over the mount");
                    self.lock_connections().remove(&mountpoint);
                }
                Err(error) => {
                    tracing::warn!(mountpoint = %mountpoint.display(), %error, "the new fuse manager could not take over the mount");
                    self.lock_connections().remove(&mountpoint);
                }
            }
        }
    }

    /// Makes sure a manager answers, starting one when needed.
    pub fn ensure_running(&self) -> Result<u32, ManagerError> {
        match self.call(&Request::Ping)?.0 {
            Response::Pong { pid } => Ok(pid),
            other => Err(ManagerError::Garbled(format!("{other:?}"))),
        }
    }

    /// The pid of the manager listening on the socket, None when nobody listens (the
    /// process is gone). Never starts one. A manager that answers slowly is an error,
    /// not a dead one.
    pub fn running_pid(&self) -> Result<Option<u32>, ManagerError> {
        match self.send(&Request::Ping, None).map(|(answer, _)| answer) {
            Ok(Response::Pong { pid }) => Ok(Some(pid)),
            Ok(other) => Err(ManagerError::Garbled(format!("{other:?}"))),
            Err(ManagerError::Io { source, .. }) if is_absent(&source) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sends `request`, starting the manager first when nothing answers.
    fn call(&self, request: &Request) -> Result<(Response, Option<OwnedFd>), ManagerError> {
        match self.send(request, None) {
            Err(ManagerError::Io { source, .. }) if is_absent(&source) => {
                self.start()?;
                self.send(request, None)
            }
            other => other,
        }
    }

    /// One request (with `fd` attached) and its answer (with the descriptor attached).
    fn send(
        &self,
        request: &Request,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(Response, Option<OwnedFd>), ManagerError> {
        let socket = super::socket_path(&self.root);
        let io = |source| ManagerError::Io {
            socket: socket.clone(),
            source,
        };
        let stream = UnixStream::connect(&socket).map_err(io)?;
        stream
            .set_read_timeout(Some(self.call_timeout))
            .map_err(io)?;
        let mut line =
            serde_json::to_string(request).map_err(|e| ManagerError::Garbled(e.to_string()))?;
        line.push('\n');
        fds::send_line(&stream, line.as_bytes(), fd).map_err(io)?;
        let (answer, connection) = fds::recv_line(&stream, MAX_LINE).map_err(io)?;
        match serde_json::from_str(&answer) {
            Ok(response) => Ok((response, connection)),
            Err(_) => Err(ManagerError::Garbled(answer)),
        }
    }

    /// Starts a manager unless one answers by now, and waits until it does. When none
    /// can be started, the kept connections are closed: their mounts then fail (and are
    /// mounted afresh later) rather than keep their readers waiting for a server.
    fn start(&self) -> Result<(), ManagerError> {
        let _one_at_a_time = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        let started = self.start_locked();
        if started.is_err() {
            let dropped = std::mem::take(&mut *self.lock_connections()).len();
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "no fuse manager to take over the mounts: closing their connections"
                );
            }
        }
        started
    }

    fn start_locked(&self) -> Result<(), ManagerError> {
        if self.send(&Request::Ping, None).is_ok() {
            return Ok(());
        }
        let program = std::env::current_exe().map_err(|source| ManagerError::Start {
            program: PathBuf::from("estargz-snapshotter"),
            source,
        })?;
        let start_error = |source| ManagerError::Start {
            program: program.clone(),
            source,
        };
        crate::private_fs::create_dir_all(&self.root).map_err(start_error)?;
        let log =
            crate::private_fs::append_file(&super::log_path(&self.root)).map_err(start_error)?;
        let log_err = log.try_clone().map_err(start_error)?;
        tracing::info!(program = %program.display(), "starting the fuse manager");
        let mut child = Command::new(&program)
            .args(&self.start_args)
            // Its own process group: signals to the daemon's group leave it running.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(start_error)?;
        // Reaped when it exits, so a dead manager leaves no zombie behind.
        std::thread::spawn(move || child.wait());
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.send(&Request::Ping, None).is_ok() {
                self.adopt_all();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ManagerError::NotReady(START_TIMEOUT))
    }
}

/// Nothing listens: no socket file, or a stale one.
fn is_absent(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

impl Mounter for ManagerMounter {
    fn attempt_timeout(&self) -> Duration {
        self.call_timeout
    }

    fn mount(&self, mountpoint: &Path, labels: &Labels) -> Result<(), MountError> {
        let request = Request::Mount {
            mountpoint: mountpoint.to_path_buf(),
            labels: labels.clone(),
        };
        match self.call(&request) {
            Ok((Response::Ok, connection)) => {
                match connection {
                    Some(connection) => self.keep(mountpoint, labels, connection),
                    None => {
                        tracing::warn!(mountpoint = %mountpoint.display(), "no copy of the fuse connection: the mount ends with the manager")
                    }
                }
                Ok(())
            }
            Ok((Response::NotRemote { reason } | Response::Failed { reason }, _)) => {
                Err(MountError::NotRemote(reason))
            }
            Ok((other, _)) => Err(MountError::NotRemote(format!(
                "fuse manager answered {other:?}"
            ))),
            Err(error) => Err(MountError::NotRemote(error.to_string())),
        }
    }

    fn unmount(&self, mountpoint: &Path) -> Result<(), MountError> {
        self.unmount_as(mountpoint, false)
    }

    fn drop_orphan(&self, mountpoint: &Path) -> Result<(), MountError> {
        self.unmount_as(mountpoint, true)
    }

    fn mounted(&self) -> Result<Vec<PathBuf>, MountError> {
        match self.call(&Request::Mounted) {
            Ok((Response::Mountpoints { paths }, _)) => Ok(paths),
            Ok((other, _)) => Err(MountError::Unknown(
                format!("fuse manager answered {other:?}").into(),
            )),
            Err(error) => Err(MountError::Unknown(Box::new(error))),
        }
    }
}

impl ManagerMounter {
    fn unmount_as(&self, mountpoint: &Path, orphan: bool) -> Result<(), MountError> {
        let request = Request::Unmount {
            mountpoint: mountpoint.to_path_buf(),
            orphan,
        };
        let failed = |reason: String| MountError::Mount {
            mountpoint: mountpoint.to_path_buf(),
            source: reason.into(),
        };
        let answer = self.send(&request, None).map(|(answer, _)| answer);
        // Whatever the manager answered, the daemon's copy goes: kept, it would hold a
        // mount nobody serves.
        self.lock_connections().remove(mountpoint);
        match answer {
            Ok(Response::Ok) => Ok(()),
            Ok(Response::NotRemote { reason } | Response::Failed { reason }) => Err(failed(reason)),
            Ok(other) => Err(failed(format!("fuse manager answered {other:?}"))),
            Err(error) => Err(failed(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A manager socket under a temp root whose server answers each request with
    /// `answer` (or, with `None`, reads it and never answers).
    fn fake_manager(answer: Option<&'static str>) -> (tempfile::TempDir, ManagerMounter) {
        let root = tempfile::tempdir().expect("tempdir");
        let listener = UnixListener::bind(super::super::socket_path(root.path())).expect("bind");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut request = String::new();
                let _ = BufReader::new(&stream).read_line(&mut request);
                if let Some(answer) = answer {
                    let _ = stream.write_all(answer.as_bytes());
                }
                held.push(stream);
            }
        });
        let mounter = ManagerMounter::new(root.path(), Vec::new(), Duration::from_millis(300));
        (root, mounter)
    }

    #[test]
    fn mounted_is_unknown_when_the_manager_does_not_answer() {
        let (_root, silent) = fake_manager(None);
        assert!(matches!(silent.mounted(), Err(MountError::Unknown(_))));
        let (_root, garbled) = fake_manager(Some("{\"result\":\"ok\"}\n"));
        assert!(matches!(garbled.mounted(), Err(MountError::Unknown(_))));
        let (_root, answering) =
            fake_manager(Some("{\"result\":\"mountpoints\",\"paths\":[\"/a/fs\"]}\n"));
        assert_eq!(
            answering.mounted().expect("an answer"),
            vec![PathBuf::from("/a/fs")]
        );
    }
}
