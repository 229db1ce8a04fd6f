//! `Client`: a cheaply cloneable registry client sharing one connection pool and auth cache.
//!
//! Operations live beside their concept: `manifests.rs`, `blobs.rs`, `upload.rs`.

use std::sync::{Arc, RwLock};

use crate::auth_cache::AuthCache;
use crate::config::ClientConfig;
use crate::credentials::{read_docker_config, Credential, Credentials, Helpers};
use crate::docker_creds::DockerCreds;
use crate::endpoints::EndpointCache;
use crate::error::Error;

use crate::hosts::TlsSettings;
use crate::mirror_health::MirrorHealth;
use crate::refresh_gate::{RefreshGate, RefreshHook, REFRESH_MIN_INTERVAL};
use crate::single_range::SingleRangeHosts;

/// An OCI distribution client. Clones share connections, tokens and credentials.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    /// Resolved endpoints and their http clients.
    pub(crate) endpoints: EndpointCache,
    pub(crate) credentials: RwLock<Credentials>,
    /// The docker config file credentials came from, re-read when it changes or a
    /// registry refuses one, and its credential helpers (see `docker_creds.rs`).
    pub(crate) docker_creds: DockerCreds,
    /// A keychain's refresh, asked after a refusal (see `refresh.rs`), and its gate.
    pub(crate) refresh_hook: RwLock<Option<RefreshHook>>,
    pub(crate) refresh_gate: RefreshGate,
    pub(crate) auth: AuthCache,
    pub(crate) mirror_health: MirrorHealth,
    pub(crate) single_range_hosts: SingleRangeHosts,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with credentials from the configured (or default) docker config file.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let path = config
            .docker_config
            .clone()
            .or_else(Credentials::default_docker_config_path);
        let (credentials, helpers) = match &path {
            Some(path) => read_docker_config(path)?,
            None => (Credentials::new(), Helpers::default()),
        };
        let docker_creds = DockerCreds::new(path, credentials.clone(), helpers);
        Self::build(config, credentials, docker_creds)
    }

    /// A client with exactly `credentials` (no docker config file is read).
    pub fn with_credentials(
        config: ClientConfig,
        credentials: Credentials,
    ) -> Result<Client, Error> {
        let docker_creds = DockerCreds::new(None, Credentials::new(), Helpers::default());
        Self::build(config, credentials, docker_creds)
    }

    fn build(
        config: ClientConfig,
        credentials: Credentials,
        docker_creds: DockerCreds,
    ) -> Result<Client, Error> {
        let endpoints = EndpointCache::default();
        // Fail early on a client that cannot be built at all.
        endpoints.client(&config, "any registry", &TlsSettings::default())?;
        let inner = Inner {
            config,
            endpoints,
            credentials: RwLock::new(credentials),
            docker_creds,
            refresh_hook: RwLock::new(None),
            refresh_gate: RefreshGate::new(REFRESH_MIN_INTERVAL),
            auth: AuthCache::default(),
            mirror_health: MirrorHealth::default(),
            single_range_hosts: SingleRangeHosts::default(),
        };
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// Replaces the secret for `registry`, forgetting tokens obtained with the old one.
    /// Requests already under way that the registry refuses are retried once with it.
    /// Setting the secret already stored changes nothing (tokens are kept).
    pub fn set_credential(&self, registry: &str, credential: Credential) {
        if let Ok(mut credentials) = self.inner.credentials.write() {
            if credentials.get(registry) == Some(&credential) {
                return;
            }
            credentials.insert(registry, credential);
        }
        self.inner.auth.forget_all();
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn credential_for(&self, registry: &str) -> Option<Credential> {
        let credentials = self.inner.credentials.read().ok()?;
        credentials.get(registry).cloned()
    }
}
