//! `Client`: a cheaply cloneable registry client sharing one connection pool and auth cache.
//!
//! Operations live beside their concept: `manifests.rs`, `blobs.rs`, `upload.rs`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::auth::AuthCache;
use crate::config::ClientConfig;
use crate::credentials::{Credential, Credentials};
use crate::error::Error;
use crate::mirrors::MirrorHealth;
use crate::multipart::SingleRangeHosts;
use crate::refresh::{RefreshHook, REFRESH_MIN_INTERVAL};
use crate::refresh_gate::RefreshGate;

/// An OCI distribution client. Clones share connections, tokens and credentials.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) http: reqwest::Client,
    /// Used for hosts listed in `insecure_tls`.
    pub(crate) insecure_http: Option<reqwest::Client>,
    pub(crate) credentials: RwLock<Credentials>,
    /// The docker config file credentials came from, re-read when a registry refuses one
    /// (see `refresh.rs`), and what it said when last read.
    pub(crate) docker_config: Option<PathBuf>,
    pub(crate) file_credentials: Mutex<Credentials>,
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
        let credentials = match &path {
            Some(path) => Credentials::from_docker_config(path)?,
            None => Credentials::new(),
        };
        Self::build(config, credentials, path)
    }

    /// A client with exactly `credentials` (no docker config file is read).
    pub fn with_credentials(
        config: ClientConfig,
        credentials: Credentials,
    ) -> Result<Client, Error> {
        Self::build(config, credentials, None)
    }

    fn build(
        config: ClientConfig,
        credentials: Credentials,
        docker_config: Option<PathBuf>,
    ) -> Result<Client, Error> {
        let http = build_http(&config, false)?;
        let insecure_http = if config.insecure_tls.is_empty() {
            None
        } else {
            Some(build_http(&config, true)?)
        };
        let inner = Inner {
            config,
            http,
            insecure_http,
            file_credentials: Mutex::new(credentials.clone()),
            credentials: RwLock::new(credentials),
            docker_config,
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

fn build_http(config: &ClientConfig, accept_invalid_certs: bool) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.timeout)
        .danger_accept_invalid_certs(accept_invalid_certs)
        .build()
        .map_err(Error::ClientSetup)
}
