//! Re-authentication after a registry refuses a credential (401/403 on a request, e.g. a
//! password rotated or a token's grant revoked while a lazily pulled layer is being read).
//!
//! The freshest credential is the stored one when it changed while the request was under
//! way (`Client::set_credential`, e.g. by the CRI image-service proxy), else the docker
//! config file's when the file now says something else for the host than when it was last
//! read. With a fresher one the caller retries the request once; otherwise the refusal
//! stands.

use crate::client::Client;
use crate::credentials::{Credential, Credentials};

impl Client {
    /// Whether a credential fresher than `used` (what the refused request was sent with)
    /// is now stored for `registry`; re-reads the docker config file when the store has
    /// nothing newer.
    pub(crate) fn refresh_credential(&self, registry: &str, used: Option<&Credential>) -> bool {
        if self.credential_for(registry).as_ref() != used {
            return true;
        }
        self.reload_from_docker_config(registry)
    }

    /// Re-reads the docker config file; stores and reports its credential for `registry`
    /// when it differs from what the file said before.
    fn reload_from_docker_config(&self, registry: &str) -> bool {
        let Some(path) = &self.inner.docker_config else {
            return false;
        };
        let reread = match Credentials::from_docker_config(path) {
            Ok(credentials) => credentials,
            Err(error) => {
                tracing::warn!(%error, "re-read docker config after a refused credential");
                return false;
            }
        };
        let fresh = reread.get(registry).cloned();
        let changed = match self.inner.file_credentials.lock() {
            Ok(mut last) => {
                let changed = last.get(registry) != fresh.as_ref();
                *last = reread;
                changed
            }
            Err(_) => false,
        };
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
