//! Re-authentication after a registry refuses a credential (401/403 on a request, e.g. a
//! password rotated or a token's grant revoked while a lazily pulled layer is being read).
//!
//! The freshest credential is the stored one when it changed while the request was under
//! way (`Client::set_credential`, e.g. by the CRI image-service proxy), else the docker
//! config file's when the file now says something else for the host than when it was last
//! read, else its credential helper's when that now answers differently, else whatever
//! the refresh hook a keychain registered (`Client::set_refresh_hook`, e.g. a re-list of
//! the cluster's pull Secrets) brings. Hook calls go through a
//! `RefreshGate`: concurrent refusals share one call, and a host is refreshed at most once
//! per `REFRESH_MIN_INTERVAL`. With a fresher credential the caller retries the request
//! once; otherwise the refusal stands.
//!
//! Before each request the docker config is also brought up to date: re-read when it
//! changed, and the registry's credential helper asked when its answer is stale
//! (`Client::ensure_credential`, state in `docker_creds.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::credentials::{read_docker_config, Credential, Credentials};
use crate::helpers;
use crate::refresh_gate::RefreshHook;

/// How long a refused request waits for the hook before the refusal stands.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Registers `hook`, called when a registry refuses a credential and nothing fresher
    /// is stored; the credentials it returns are stored (as with `set_credential`) and the
    /// refused request is retried once when its host's changed. Replaces an earlier hook.
    /// The hook should log failures itself and return what it has (possibly nothing).
    pub fn set_refresh_hook<F, Fut>(&self, hook: F)
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Credentials> + Send + 'static,
    {
        let hook: RefreshHook = Arc::new(move |host| Box::pin(hook(host)));
        if let Ok(mut slot) = self.inner.refresh_hook.write() {
            *slot = Some(hook);
        }
    }

    /// Removes the refresh hook (its keychain stopped).
    pub fn clear_refresh_hook(&self) {
        if let Ok(mut slot) = self.inner.refresh_hook.write() {
            *slot = None;
        }
    }

    /// Whether a credential fresher than `used` (what the refused request was sent with)
    /// is now stored for `registry`; re-reads the docker config file, then asks the
    /// refresh hook, while the store has nothing newer.
    pub(crate) async fn refresh_credential(
        &self,
        registry: &str,
        used: Option<&Credential>,
    ) -> bool {
        if self.credential_for(registry).as_ref() != used {
            return true;
        }
        if self.reload_from_docker_config(registry) {
            return true;
        }
        if self.ask_credential_helper(registry).await {
            return true;
        }
        self.ask_refresh_hook(registry).await;
        self.credential_for(registry).as_ref() != used
    }

    /// Calls the hook through the gate and stores what it returns.
    async fn ask_refresh_hook(&self, registry: &str) {
        let hook = match self.inner.refresh_hook.read() {
            Ok(slot) => slot.clone(),
            Err(_) => None,
        };
        let Some(hook) = hook else {
            return;
        };
        let refresh = || async move {
            tracing::info!(host = registry, "credential refused; asking its keychain");
            match tokio::time::timeout(REFRESH_TIMEOUT, hook(registry.to_owned())).await {
                Ok(found) => {
                    for (host, credential) in found.iter() {
                        self.set_credential(host, credential.clone());
                    }
                }
                Err(_) => tracing::warn!(host = registry, "keychain refresh timed out"),
            }
        };
        self.inner.refresh_gate.run(registry, refresh).await;
    }

    /// Re-reads the docker config file; stores and reports its credential for `registry`
    /// when it differs from what the file said before.
    fn reload_from_docker_config(&self, registry: &str) -> bool {
        let creds = &self.inner.docker_creds;
        let Some(path) = creds.path() else {
            return false;
        };
        let (reread, helpers) = match read_docker_config(path) {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "re-read docker config after a refused credential");
                return false;
            }
        };
        let fresh = reread.get(registry).cloned();
        let changed = creds.file_credentials().get(registry) != fresh.as_ref();
        creds.remember(reread, helpers);
        match fresh {
            Some(credential) if changed => {
                tracing::info!(host = registry, "docker config has a new credential");
                self.set_credential(registry, credential);
                true
            }
            _ => false,
        }
    }
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
        creds.forget_answers();
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
        let _one_run = creds.one_run().await;
        if creds.answered_since(registry, started) {
            return false;
        }
        let timeout = self.inner.config.credential_helper_timeout;
        let answer = helpers::get(&helper, registry, timeout).await;
        creds.mark_answered(registry);
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
