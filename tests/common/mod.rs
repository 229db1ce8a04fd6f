//! Shared by the integration tests: the `estargz-snapshotter` binary as a child process
//! on its own root and socket under a test directory.

pub mod cri;
pub mod grpc;
pub mod metrics;
pub mod remote;
pub mod soci;
pub mod stack;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A daemon process; killed on drop.
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with root `dir/root` and socket `dir/run/snapshotter.sock`,
    /// logging at debug level to `dir/daemon.log`, and waits until the socket exists.
    #[allow(dead_code)] // each test binary compiles this module; not all call it
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with_config(dir, "")
    }

    /// Like [`Daemon::start`], with `extra_config` (TOML) appended to the config file.
    pub fn start_with_config(dir: &Path, extra_config: &str) -> Daemon {
        let config = dir.join("config.toml");
        std::fs::write(&config, format!("log_level = \"debug\"\n{extra_config}")).unwrap();
        let socket = dir.join("run/snapshotter.sock");
        let log = dir.join("daemon.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_estargz-snapshotter"))
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--address")
            .arg(&socket)
            .stderr(out.try_clone().unwrap())
            .stdout(out)
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, socket, log };
        daemon.wait_for_socket();
        daemon
    }

    /// Starts the daemon binary with exactly `args` (no config file written), logging to
    /// `dir/daemon.log`, and waits until `socket` exists.
    #[allow(dead_code)] // not every test binary calls it
    pub fn start_with_args(dir: &Path, args: &[std::ffi::OsString], socket: PathBuf) -> Daemon {
        let log = dir.join("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_estargz-snapshotter"))
            .args(args)
            .stderr(out.try_clone().unwrap())
            .stdout(out)
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, socket, log };
        daemon.wait_for_socket();
        daemon
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("daemon exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no socket after 20s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `-TERM`) with kill(1) and waits for the exit.
    #[allow(dead_code)] // not every test binary calls it
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
        self.child.wait().unwrap()
    }

    /// The daemon's process id.
    #[allow(dead_code)] // not every test binary calls it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `text` at least `times` times; panics with the log
    /// after `limit`.
    #[allow(dead_code)] // not every test binary calls it
    pub fn wait_for_log(&self, text: &str, times: usize, limit: Duration) {
        let started = Instant::now();
        while self.log_text().matches(text).count() < times {
            assert!(
                started.elapsed() < limit,
                "no {times} x {text:?} in the daemon log within {limit:?}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Daemon {
    /// Kills the daemon (SIGKILL) and waits for it; harmless when it already exited.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the fuse manager of daemon root `root`, if one runs (`[fuse] manager = true`
/// tests): it outlives the daemon by design.
pub fn kill_fuse_manager(root: &Path) {
    let pid_file = estargz_snapshotter::manager::pid_path(root);
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        let _ = std::fs::remove_file(pid_file);
    }
}
