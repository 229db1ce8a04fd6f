//! The registry client for a run: plain HTTP, insecure hosts and the docker config
//! (credential helpers and hosts.toml are read by the registry crate, as in the daemon).
//!
//! An `--insecure-registry` host is handled like Docker does: HTTPS without certificate
//! verification when the host speaks TLS, plain HTTP when it does not. One probe request
//! per insecure host that the run uses decides which.

use std::path::PathBuf;

use estargz::Digest;
use registry::{Client, ClientConfig, Credentials, Reference};

/// Transport choices from the command line.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// Plain HTTP for every registry.
    pub plain_http: bool,
    /// Hosts (`host` or `host:port`) that may use HTTP or unverified HTTPS.
    pub insecure_hosts: Vec<String>,
    /// Credentials file instead of `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
}

/// Builds the client; `references` are the registry images the run will touch, whose
/// insecure hosts get probed.
pub async fn build_client(
    options: &TransportOptions,
    references: &[&Reference],
) -> Result<Client, registry::Error> {
    if references.is_empty() {
        // Layout to layout: no registry, so no credentials file to read (or to fail on).
        return Client::with_credentials(ClientConfig::default(), Credentials::new());
    }
    let mut config = ClientConfig {
        docker_config: options.docker_config.clone(),
        ..ClientConfig::default()
    };
    if options.plain_http {
        config.plain_http.push("*".to_owned());
    }
    config.insecure_tls = options.insecure_hosts.clone();
    // Loopback registries need no probe: the registry crate speaks plain HTTP to them, as
    // containerd and the Go reference do (a TLS one is named in hosts.toml).
    for reference in references {
        if config.uses_plain_http(&reference.registry)
            || !config.skips_tls_verify(&reference.registry)
        {
            continue;
        }
        if !speaks_tls(&config, reference).await? {
            tracing::info!(
                "{} does not answer HTTPS: using plain HTTP",
                reference.registry
            );
            config.plain_http.push(reference.registry.clone());
        }
    }
    Client::new(config)
}

/// Whether `reference`'s registry answers over (unverified) HTTPS.
async fn speaks_tls(config: &ClientConfig, reference: &Reference) -> Result<bool, registry::Error> {
    let probe = Client::new(ClientConfig {
        retries: 0,
        ..config.clone()
    })?;
    // Any HTTP answer (even 401 or 404) proves TLS works; a failed connection or
    // handshake (a plain HTTP server answering the TLS hello) does not.
    match probe.blob_exists(reference, &Digest::sha256(b"")).await {
        Ok(_) => Ok(true),
        Err(
            registry::Error::Connect { .. }
            | registry::Error::Transfer { .. }
            | registry::Error::Tls { .. },
        ) => Ok(false),
        Err(_) => Ok(true),
    }
}
