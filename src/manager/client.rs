//! [`ManagerMounter`]: the daemon's [`Mounter`] when FUSE mounts live in the manager
//! process. Each call is one request over the manager socket; when nothing answers, the
//! manager is started (a child in its own process group, so it outlives the daemon) and
//! the call is made again. [`ManagerMounter::running_pid`] tells the daemon's watch
//! whether the manager is still the one it knows.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Held while a manager is being started, so that only one is.
    starting: Mutex<()>,
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
        }
    }

    /// Makes sure a manager answers, starting one when needed.
    pub fn ensure_running(&self) -> Result<u32, ManagerError> {
        match self.call(&Request::Ping)? {
            Response::Pong { pid } => Ok(pid),
            other => Err(ManagerError::Garbled(format!("{other:?}"))),
        }
    }

    /// The pid of the manager listening on the socket, None when nobody listens (the
    /// process is gone). Never starts one. A manager that answers slowly is an error,
    /// not a dead one.
    pub fn running_pid(&self) -> Result<Option<u32>, ManagerError> {
        match self.send(&Request::Ping) {
            Ok(Response::Pong { pid }) => Ok(Some(pid)),
            Ok(other) => Err(ManagerError::Garbled(format!("{other:?}"))),
            Err(ManagerError::Io { source, .. }) if is_absent(&source) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sends `request`, starting the manager first when nothing answers.
    fn call(&self, request: &Request) -> Result<Response, ManagerError> {
        match self.send(request) {
            Err(ManagerError::Io { source, .. }) if is_absent(&source) => {
                self.start()?;
                self.send(request)
            }
            other => other,
        }
    }

    fn send(&self, request: &Request) -> Result<Response, ManagerError> {
        let socket = super::socket_path(&self.root);
        let io = |source| ManagerError::Io {
            socket: socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&socket).map_err(io)?;
        stream
            .set_read_timeout(Some(self.call_timeout))
            .map_err(io)?;
        let mut line =
            serde_json::to_string(request).map_err(|e| ManagerError::Garbled(e.to_string()))?;
        line.push('\n');
        stream.write_all(line.as_bytes()).map_err(io)?;
        let mut answer = String::new();
        BufReader::new(stream.take(MAX_LINE as u64))
            .read_line(&mut answer)
            .map_err(io)?;
        serde_json::from_str(&answer).map_err(|_| ManagerError::Garbled(answer))
    }

    /// Starts a manager unless one answers by now, and waits until it does.
    fn start(&self) -> Result<(), ManagerError> {
        let _one_at_a_time = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if self.send(&Request::Ping).is_ok() {
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
            if self.send(&Request::Ping).is_ok() {
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
    fn mount(&self, mountpoint: &Path, labels: &Labels) -> Result<(), MountError> {
        let request = Request::Mount {
            mountpoint: mountpoint.to_path_buf(),
            labels: labels.clone(),
        };
        match self.call(&request) {
            Ok(Response::Ok) => Ok(()),
            Ok(Response::NotRemote { reason } | Response::Failed { reason }) => {
                Err(MountError::NotRemote(reason))
            }
            Ok(other) => Err(MountError::NotRemote(format!(
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

    fn mounted(&self) -> Vec<PathBuf> {
        match self.call(&Request::Mounted) {
            Ok(Response::Mountpoints { paths }) => paths,
            _ => Vec::new(),
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
        match self.send(&request) {
            Ok(Response::Ok) => Ok(()),
            Ok(Response::NotRemote { reason } | Response::Failed { reason }) => Err(failed(reason)),
            Ok(other) => Err(failed(format!("fuse manager answered {other:?}"))),
            Err(error) => Err(failed(error.to_string())),
        }
    }
}
