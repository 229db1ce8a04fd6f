//! A real docker-registry (distribution v2) on 127.0.0.1, storage in a temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::http::{Credentials, HttpError, RegistryClient};
use crate::image::{push_artifact, Artifact};
use crate::process::{free_port, ProcessError, Supervised};

/// The registry program (Debian package docker-registry).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How many ports `start` tries when the chosen one is taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// How long `start` waits for `GET /v2/` to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors from starting or stopping the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("create registry temp dir: {0}")]
    TempDir(std::io::Error),
    #[error("write registry file {path}: {source}")]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hash htpasswd password: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("registry process: {0}")]
    Process(#[from] ProcessError),
    #[error("registry http: {0}")]
    Http(#[from] HttpError),
}

/// Options for [`Registry::start_with`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    pub htpasswd: Option<(String, String)>,
}

/// A running (or stopped) docker-registry. Killed and its temp dir removed on drop.
#[derive(Debug)]
pub struct Registry {
    // Field order: the process stops before its directory is removed.
    process: Option<Supervised>,
    port: u16,
    options: RegistryOptions,
    dir: TempDir,
}

impl Registry {
    /// Starts an anonymous registry on a free port.
    pub fn start() -> Result<Self, RegistryError> {
        Self::start_with(RegistryOptions::default())
    }

    /// Starts a registry with `options` on a free port.
    pub fn start_with(options: RegistryOptions) -> Result<Self, RegistryError> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-registry-")
            .tempdir()
            .map_err(RegistryError::TempDir)?;
        let mut registry = Self {
            process: None,
            port: free_port()?,
            options,
            dir,
        };
        // The free port can be taken by someone else before the registry binds it: retry.
        for _ in 1..PORT_ATTEMPTS {
            registry.write_config()?;
            match registry.start_again() {
                Err(RegistryError::Process(ProcessError::ExitedEarly { log_tail, .. }))
                    if log_tail.contains("address already in use") =>
                {
                    registry.port = free_port()?;
                }
                other => return other.map(|()| registry),
            }
        }
        registry.write_config()?;
        registry.start_again()?;
        Ok(registry)
    }

    /// Starts the registry again on the same port and storage, after [`Registry::stop`].
    pub fn start_again(&mut self) -> Result<(), RegistryError> {
        if self.process.is_some() {
            return Ok(());
        }
        let mut command = Command::new(REGISTRY_BIN);
        command.arg("serve").arg(self.config_path());
        let mut process = Supervised::spawn(command, &self.log_path())?;
        let client = self.client();
        process.wait_ready("GET /v2/ answers", READY_TIMEOUT, || client.ping().is_ok())?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the registry (SIGTERM, then SIGKILL); storage and port are kept for a restart.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(5));
        }
    }

    /// Rotates the basic-auth password: the registry restarts (same port and storage) and
    /// from then on accepts only `password` for its user. No-op for an anonymous registry.
    pub fn change_password(&mut self, password: &str) -> Result<(), RegistryError> {
        let Some((_, current)) = self.options.htpasswd.as_mut() else {
            return Ok(());
        };
        *current = password.to_owned();
        // docker-registry reads its htpasswd file only at startup.
        self.stop();
        self.write_config()?;
        self.start_again()
    }

    /// True while the registry process runs.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// `127.0.0.1:PORT`, the host part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log (its stdout and stderr, access log included).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Where the registry keeps its blobs and repositories.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The credentials this registry requires, if any.
    pub fn credentials(&self) -> Option<Credentials> {
        self.options
            .htpasswd
            .as_ref()
            .map(|(user, password)| Credentials {
                user: user.clone(),
                password: password.clone(),
            })
    }

    /// An HTTP client for this registry, authenticated when the registry requires it.
    pub fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.host(), self.credentials().as_ref())
    }

    /// Pushes `artifact` as `NAME:TAG` over HTTP; returns the reference `HOST/NAME:TAG`.
    pub fn push(
        &self,
        name: &str,
        tag: &str,
        artifact: &impl Artifact,
    ) -> Result<String, HttpError> {
        push_artifact(&self.client(), name, tag, artifact)?;
        Ok(self.reference(name, tag))
    }

    /// `HOST/NAME:TAG` for this registry.
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.host())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    fn write_config(&self) -> Result<(), RegistryError> {
        let auth = match &self.options.htpasswd {
            Some((user, password)) => {
                let path = self.dir.path().join("htpasswd");
                let hash = bcrypt::hash(password, bcrypt::DEFAULT_COST)?;
                write_file(&path, &format!("{user}:{hash}\n"))?;
                htpasswd_section(&path)
            }
            None => String::new(),
        };
        let config = config_text(&self.storage_dir(), self.port, &auth);
        write_file(&self.config_path(), &config)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), RegistryError> {
    std::fs::write(path, text).map_err(|source| RegistryError::WriteFile {
        path: path.to_owned(),
        source,
    })
}

fn htpasswd_section(path: &Path) -> String {
    format!(
        "auth:\n  htpasswd:\n    realm: testkit\n    path: {}\n",
        path.display()
    )
}

/// The registry's config.yml (distribution configuration version 0.1).
fn config_text(storage: &Path, port: u16, auth: &str) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n\
         {auth}",
        storage.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_storage_port_and_auth() {
        let cases = [
            ("anonymous", String::new(), false),
            ("htpasswd", htpasswd_section(Path::new("/x/htpasswd")), true),
        ];
        for (name, auth, has_auth) in cases {
            let text = config_text(Path::new("/tmp/store"), 5123, &auth);
            assert!(text.contains("rootdirectory: /tmp/store"), "{name}");
            assert!(text.contains("addr: 127.0.0.1:5123"), "{name}");
            assert_eq!(text.contains("path: /x/htpasswd"), has_auth, "{name}");
        }
    }
}
