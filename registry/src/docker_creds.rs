//! The docker config as a live credential source; this file keeps the state and
//! `refresh.rs` acts on it. The file is re-read when it changes (checked at most once per
//! [`STAT_INTERVAL`]), and the credential helper that applies to a registry is asked
//! before its first request and again after [`HELPER_TTL`] or a refusal. A helper's credential wins over `auths` (docker's order: `credHelpers`,
//! `credsStore`, `auths`); when it has none, an `auths` entry or another keychain's
//! credential is used, else the registry is read anonymously.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::credentials::{Credentials, Helpers};

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

    pub(crate) fn helper_for(&self, registry: &str) -> Option<String> {
        let file = self.file.lock().ok()?;
        file.helpers.for_registry(registry).map(str::to_owned)
    }

    /// Whether the file's stamp changed since it was last read (checked once a second).
    pub(crate) fn changed(&self) -> bool {
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

    /// Whether `registry`'s helper answered less than [`HELPER_TTL`] ago.
    pub(crate) fn helper_fresh(&self, registry: &str) -> bool {
        self.asked
            .lock()
            .ok()
            .and_then(|asked| asked.get(registry).copied())
            .is_some_and(|at| at.elapsed() < HELPER_TTL)
    }
}

impl DockerCreds {
    /// Whether `registry`'s helper answered at or after `since`.
    pub(crate) fn answered_since(&self, registry: &str, since: Instant) -> bool {
        self.asked
            .lock()
            .ok()
            .and_then(|asked| asked.get(registry).copied())
            .is_some_and(|at| at >= since)
    }

    /// Notes that `registry`'s helper answered now.
    pub(crate) fn mark_answered(&self, registry: &str) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.insert(registry.to_owned(), Instant::now());
        }
    }

    /// Makes every helper answer stale (the file changed).
    pub(crate) fn forget_answers(&self) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.clear();
        }
    }

    /// Waits for the one helper run allowed at a time.
    pub(crate) async fn one_run(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.running.lock().await
    }
}

/// Modification time and size: what tells a rewritten file.
fn stamp_of(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
