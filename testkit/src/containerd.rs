//! A real containerd rooted in a temp dir, and the `ctr` / `ctr-remote` clients bound to it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::mounts::{unmount_all_under, MountsError};
use crate::process::{ProcessError, Supervised};
use crate::tools::{run_tool, ToolError, ToolOutput};

pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";
pub const CTR_BIN: &str = "/usr/bin/ctr";
pub const CTR_REMOTE_BIN: &str = "/usr/bin/ctr-remote";

/// Prefix of the namespace each containerd instance uses unless told otherwise.
pub const NAMESPACE_PREFIX: &str = "testkit";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// containerd's CRI plugin (Kubernetes), see [`ContainerdOptions::enable_cri`].
pub const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";

/// Plugins a test containerd does not need; leaving them out makes startup quick and quiet.
const DISABLED_PLUGINS: &[&str] = &[
    CRI_PLUGIN,
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// Errors from starting containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("create containerd temp dir: {0}")]
    TempDir(std::io::Error),
    #[error("write containerd config {path}: {source}")]
    WriteConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("containerd process: {0}")]
    Process(#[from] ProcessError),
    #[error("unmount leftovers of containerd: {0}")]
    Mounts(#[from] MountsError),
}

/// Options for [`Containerd::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ContainerdOptions {
    /// TOML appended to the generated config, e.g. a `[proxy_plugins.stargz]` table.
    pub extra_config: String,
    /// Load the CRI plugin (`io.containerd.grpc.v1.cri`, disabled by default). Its root
    /// and state dirs are under containerd's; `extra_config` should configure it (CNI
    /// dirs, sandbox image, registry) so that nothing outside the temp dir is used.
    pub enable_cri: bool,
}

/// A running containerd. On drop: stopped, its mounts removed, its temp dir deleted.
#[derive(Debug)]
pub struct Containerd {
    process: Option<Supervised>,
    namespace: String,
    dir: TempDir,
}

impl Containerd {
    /// Starts containerd with the default generated config.
    pub fn start() -> Result<Self, ContainerdError> {
        Self::start_with(ContainerdOptions::default())
    }

    /// Starts containerd with `options.extra_config` appended to the generated config.
    pub fn start_with(options: ContainerdOptions) -> Result<Self, ContainerdError> {
        // Short prefix: the socket path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("tk-ctd-")
            .tempdir()
            .map_err(ContainerdError::TempDir)?;
        let mut containerd = Self {
            process: None,
            namespace: unique_id(NAMESPACE_PREFIX),
            dir,
        };
        let config_path = containerd.dir.path().join("config.toml");
        let text = config_text(
            containerd.dir.path(),
            &options.extra_config,
            options.enable_cri,
        );
        std::fs::write(&config_path, text).map_err(|source| ContainerdError::WriteConfig {
            path: config_path.clone(),
            source,
        })?;
        let mut command = Command::new(CONTAINERD_BIN);
        command.arg("--config").arg(&config_path);
        let mut process = Supervised::spawn(command, &containerd.log_path())?;
        let socket = containerd.address();
        process.wait_ready("grpc socket exists", READY_TIMEOUT, || socket.exists())?;
        containerd.process = Some(process);
        Ok(containerd)
    }

    /// The grpc socket path.
    pub fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// containerd's root directory (content store, snapshots).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The temp dir holding everything of this containerd.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's own log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// containerd's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Supervised::pid)
    }

    /// The namespace `ctr` and `ctr_remote` use (unique per instance, see [`unique_id`]).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Uses `namespace` for later `ctr` / `ctr_remote` calls.
    pub fn set_namespace(&mut self, namespace: &str) {
        namespace.clone_into(&mut self.namespace);
    }

    /// Runs `ctr --address <sock> --namespace <ns> ARGS`; fails with stderr on non-zero exit.
    pub fn ctr<I, S>(&self, args: I) -> Result<ToolOutput, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.client(CTR_BIN, args)
    }

    /// Runs `ctr-remote --address <sock> --namespace <ns> ARGS` likewise.
    pub fn ctr_remote<I, S>(&self, args: I) -> Result<ToolOutput, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.client(CTR_REMOTE_BIN, args)
    }

    fn client<I, S>(&self, program: &str, args: I) -> Result<ToolOutput, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.client_in(program, &self.namespace, args)
    }

    /// Runs a client against this containerd in `namespace`.
    fn client_in<I, S>(
        &self,
        program: &str,
        namespace: &str,
        args: I,
    ) -> Result<ToolOutput, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut full: Vec<std::ffi::OsString> = vec![
            "--address".into(),
            self.address().into_os_string(),
            "--namespace".into(),
            namespace.into(),
        ];
        full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        run_tool(Path::new(program), &full)
    }

    /// Stops containerd and removes what it mounted; the temp dir stays until drop.
    /// Tasks still running (a test that panicked mid-way) are killed first, so their shims
    /// do not outlive containerd.
    pub fn stop(&mut self) -> Result<(), ContainerdError> {
        if let Some(mut process) = self.process.take() {
            self.kill_leftover_tasks();
            process.stop(STOP_GRACE);
        }
        for (point, error) in unmount_all_under(self.dir.path())? {
            eprintln!("testkit: umount -l {}: {error}", point.display());
        }
        Ok(())
    }
}

impl Containerd {
    /// Best effort: kill and delete every task in every namespace.
    fn kill_leftover_tasks(&self) {
        let Ok(namespaces) = self.client(CTR_BIN, ["namespaces", "ls", "-q"]) else {
            return;
        };
        for namespace in namespaces.stdout.split_whitespace() {
            let Ok(tasks) = self.client_in(CTR_BIN, namespace, ["tasks", "ls", "-q"]) else {
                continue;
            };
            for task in tasks.stdout.split_whitespace() {
                let kill = ["tasks", "kill", "--all", "--signal", "SIGKILL", task];
                let _ = self.client_in(CTR_BIN, namespace, kill);
                let _ = self.client_in(CTR_BIN, namespace, ["tasks", "delete", "--force", task]);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("testkit: containerd cleanup: {e}");
        }
    }
}

/// `PREFIX-PID-N`: unique across concurrently running tests and test processes.
///
/// runc keeps container state under `/run/containerd/runc/<namespace>/<id>` and cgroups
/// under `/<namespace>/<id>` for every containerd on the machine, so each containerd here
/// gets its own namespace, and container ids should come from this too.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// containerd config (version 2) keeping root, state, sockets and plugin dirs under `dir`;
/// the CRI plugin is disabled unless `enable_cri`.
fn config_text(dir: &Path, extra: &str, enable_cri: bool) -> String {
    let d = dir.display();
    let disabled = DISABLED_PLUGINS
        .iter()
        .filter(|p| !(enable_cri && **p == CRI_PLUGIN))
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "version = 2\n\
         root = \"{d}/root\"\n\
         state = \"{d}/state\"\n\
         disabled_plugins = [{disabled}]\n\
         \n[grpc]\n  address = \"{d}/containerd.sock\"\n\
         \n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
         \n[debug]\n  level = \"info\"\n\
         \n[plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{d}/opt\"\n\
         \n{extra}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_differ_and_are_valid_namespaces() {
        let a = unique_id("testkit");
        let b = unique_id("testkit");
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{id}"
            );
        }
    }

    #[test]
    fn cri_plugin_is_disabled_unless_enabled() {
        let cases = [("default", false, true), ("enable_cri", true, false)];
        for (name, enable_cri, disabled) in cases {
            let text = config_text(Path::new("/tmp/tk-x"), "", enable_cri);
            let line = text
                .lines()
                .find(|l| l.starts_with("disabled_plugins"))
                .unwrap();
            assert_eq!(line.contains(CRI_PLUGIN), disabled, "{name}: {line}");
            assert!(line.contains("devmapper"), "{name}: {line}");
        }
    }

    #[test]
    fn config_keeps_everything_under_dir() {
        let text = config_text(Path::new("/tmp/tk-x"), "[proxy_plugins.stargz]\n", false);
        for want in [
            "root = \"/tmp/tk-x/root\"",
            "state = \"/tmp/tk-x/state\"",
            "address = \"/tmp/tk-x/containerd.sock\"",
            "\"io.containerd.grpc.v1.cri\"",
            "[proxy_plugins.stargz]",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
