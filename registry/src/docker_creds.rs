//! The docker config as a live credential source: the file is re-read when it changes
//! (checked at most once per [`STAT_INTERVAL`]), and the credential helper that applies to
//! a registry is asked before its first request and again after [`HELPER_TTL`] or a
//! refusal. A helper's credential wins over `auths` (docker's order: `credHelpers`,
//! `credsStore`, `auths`); when it has none, an `auths` entry or another keychain's
//! credential is used, else the registry is read anonymously.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::client::Client;
use crate::credentials::{read_docker_config, Credentials};
use crate::helpers::{self, Helpers};

/// The shortest time between two checks of the file's modification time.
const STAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a helper's answer is used before it is asked again.
const HELPER_TTL: Duration = Duration::from_secs(300);

/// What the file said when last read, and which helper answers are fresh.
pub(crate) struct DockerCreds {
    path: Option<PathBuf>,
    file: Mutex<FileState>,
    /// When each registry's helper last answered (or failed).
    asked: Mutex<HashMap<String, Instant>>,
    /// One helper run at a time: concurrent first requests share its answer.
    running: tokio::sync::Mutex<()>,
}

struct FileState {
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    credentials: Credentials,
    helpers: Helpers,
}

impl DockerCreds {
    pub(crate) fn new(path: Option<PathBuf>, credentials: Credentials, helpers: Helpers) -> Self {
        let stamp = path.as_deref().and_then(stamp_of);
        DockerCreds {
            path,
            file: Mutex::new(FileState {
                stamp,
                checked: Some(Instant::now()),
                credentials,
                helpers,
            }),
            asked: Mutex::default(),
            running: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The `auths` credentials as the file last said.
    pub(crate) fn file_credentials(&self) -> Credentials {
        self.file
            .lock()
            .map(|f| f.credentials.clone())
            .unwrap_or_default()
    }

    /// Records what a re-read of the file said.
    pub(crate) fn remember(&self, credentials: Credentials, helpers: Helpers) {
        let stamp = self.path.as_deref().and_then(stamp_of);
        if let Ok(mut file) = self.file.lock() {
            *file = FileState {
                stamp,
                checked: Some(Instant::now()),
                credentials,
                helpers,
            };
        }
    }

    fn helper_for(&self, registry: &str) -> Option<String> {
        let file = self.file.lock().ok()?;
        file.helpers.for_registry(registry).map(str::to_owned)
    }

    /// Whether the file's stamp changed since it was last read (checked once a second).
    fn changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let Ok(mut file) = self.file.lock() else {
            return false;
        };
        if file.checked.is_some_and(|at| at.elapsed() < STAT_INTERVAL) {
            return false;
        }
        file.checked = Some(Instant::now());
        stamp_of(path) != file.stamp
    }

    fn helper_fresh(&self, registry: &str) -> bool {
        self.asked
            .lock()
            .ok()
            .and_then(|asked| asked.get(registry).copied())
            .is_some_and(|at| at.elapsed() < HELPER_TTL)
    }
}

/// Modification time and size: what tells a rewritten file.
fn stamp_of(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Client {
    /// Brings `registry`'s credential up to date before a request: re-reads a changed
    /// docker config, and asks its credential helper when its answer is not fresh.
    pub(crate) async fn ensure_credential(&self, registry: &str) {
        let creds = &self.inner.docker_creds;
        if creds.changed() {
            self.reload_docker_config();
        }
        if creds.helper_for(registry).is_some() && !creds.helper_fresh(registry) {
            self.ask_credential_helper(registry).await;
        }
    }

    /// Re-reads the docker config file and stores every credential it changed.
    pub(crate) fn reload_docker_config(&self) {
        let creds = &self.inner.docker_creds;
        let Some(path) = creds.path() else {
            return;
        };
        let (fresh, helpers) = match read_docker_config(path) {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "re-read changed docker config");
                return;
            }
        };
        let before = creds.file_credentials();
        for (host, credential) in fresh.iter() {
            if before.get(host) != Some(credential) {
                tracing::info!(%host, "docker config has a new credential");
                self.set_credential(host, credential.clone());
            }
        }
        if let Ok(mut asked) = creds.asked.lock() {
            asked.clear();
        }
        creds.remember(fresh, helpers);
    }

    /// Asks `registry`'s credential helper now; true when it gave a credential other than
    /// the one stored.
    pub(crate) async fn ask_credential_helper(&self, registry: &str) -> bool {
        let creds = &self.inner.docker_creds;
        let Some(helper) = creds.helper_for(registry) else {
            return false;
        };
        let started = Instant::now();
        let _one_run = creds.running.lock().await;
        let answered_meanwhile = creds
            .asked
            .lock()
            .ok()
            .and_then(|asked| asked.get(registry).copied())
            .is_some_and(|at| at >= started);
        if answered_meanwhile {
            return false;
        }
        let timeout = self.inner.config.credential_helper_timeout;
        let answer = helpers::get(&helper, registry, timeout).await;
        if let Ok(mut asked) = creds.asked.lock() {
            asked.insert(registry.to_owned(), Instant::now());
        }
        match answer {
            Ok(Some(credential)) => {
                let changed = self.credential_for(registry).as_ref() != Some(&credential);
                tracing::debug!(host = registry, %helper, changed, "credential helper answered");
                self.set_credential(registry, credential);
                changed
            }
            Ok(None) => {
                tracing::debug!(host = registry, %helper, "credential helper has no credential; anonymous");
                false
            }
            Err(error) => {
                tracing::warn!(host = registry, %error, "credential helper gave no credential");
                false
            }
        }
    }
}
