//! A supervised child process: spawn with output to a log file, wait for readiness, stop.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How many log lines an error message quotes.
const LOG_TAIL_LINES: usize = 30;

/// Errors from running a supervised program.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("spawn {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("open log file {path}: {source}")]
    LogFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{program} exited early ({status}); log tail:\n{log_tail}")]
    ExitedEarly {
        program: String,
        status: std::process::ExitStatus,
        log_tail: String,
    },
    #[error("{program} not ready after {waited:?} ({what}); log tail:\n{log_tail}")]
    NotReady {
        program: String,
        what: String,
        waited: Duration,
        log_tail: String,
    },
    #[error("find a free tcp port on 127.0.0.1: {0}")]
    FreePort(std::io::Error),
}

/// A running program whose stdout and stderr go to `log_path`. Killed on drop.
#[derive(Debug)]
pub struct Supervised {
    program: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Supervised {
    /// Spawns `command`, appending its output to `log_path`.
    pub fn spawn(mut command: Command, log_path: &Path) -> Result<Self, ProcessError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let log = open_log(log_path)?;
        let log_err = log.try_clone().map_err(|source| ProcessError::LogFile {
            path: log_path.to_owned(),
            source,
        })?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: program.clone(),
            source,
        })?;
        Ok(Self {
            program,
            child: Some(child),
            log_path: log_path.to_owned(),
        })
    }

    /// Polls `ready` until it returns true, the child exits, or `timeout` passes.
    pub fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), ProcessError> {
        let start = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(ProcessError::ExitedEarly {
                    program: self.program.clone(),
                    status,
                    log_tail: log_tail(&self.log_path),
                });
            }
            if start.elapsed() > timeout {
                return Err(ProcessError::NotReady {
                    program: self.program.clone(),
                    what: what.to_owned(),
                    waited: timeout,
                    log_tail: log_tail(&self.log_path),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL. Idempotent.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn open_log(path: &Path) -> Result<File, ProcessError> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ProcessError::LogFile {
            path: path.to_owned(),
            source,
        })
}

/// The last lines of a log file, or a note saying why it could not be read.
pub fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[from..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, ProcessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ProcessError::FreePort)?;
    let port = listener
        .local_addr()
        .map_err(ProcessError::FreePort)?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path);
        assert!(tail.starts_with("line 70"), "{tail}");
        assert!(tail.ends_with("line 99"), "{tail}");
    }

    #[test]
    fn early_exit_is_reported_with_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom; exit 3"]);
        let mut child = Supervised::spawn(cmd, &log).unwrap();
        let err = child
            .wait_ready("never", Duration::from_secs(5), || false)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("boom"), "{text}");
    }

    #[test]
    fn stop_terminates_a_running_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let mut child = Supervised::spawn(cmd, &dir.path().join("log")).unwrap();
        let pid = child.pid().unwrap();
        child.stop(Duration::from_secs(2));
        assert!(child.pid().is_none());
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie_or_gone(pid));
    }

    fn is_zombie_or_gone(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    }
}
