//! The registry client for a run: plain HTTP, insecure hosts and the docker config.
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
    // Like containerd and Docker: local registries may speak plain HTTP without a flag.
    for reference in references {
        if is_loopback(&reference.registry) && !config.skips_tls_verify(&reference.registry) {
            config.insecure_tls.push(reference.registry.clone());
        }
    }
    for reference in references {
        if config.plain_http.iter().any(|h| h == "*")
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

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost" || name == "::1" || name.starts_with("127.")
}

/// Whether `reference`'s registry answers over (unverified) HTTPS.
async fn speaks_tls(config: &ClientConfig, reference: &Reference) -> Result<bool, registry::Error> {
    let probe = Client::new(ClientConfig {
        retries: 0,
        ..config.clone()
    })?;
    // Any HTTP answer (even 401 or 404) proves TLS works; a failed connection does not.
    match probe.blob_exists(reference, &Digest::sha256(b"")).await {
        Ok(_) => Ok(true),
        Err(registry::Error::Connect { .. } | registry::Error::Transfer { .. }) => Ok(false),
        Err(_) => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_table() {
        let cases = [
            ("localhost with port", "localhost:5000", true),
            ("ipv4 loopback", "127.0.0.1:5000", true),
            ("ipv4 loopback no port", "127.0.0.2", true),
            ("ipv6 loopback", "[::1]:5000", true),
            ("remote", "registry.example.com", false),
            ("lookalike", "localhost.example.com:5000", false),
        ];
        for (name, host, expected) in cases {
            assert_eq!(is_loopback(host), expected, "{name}");
        }
    }
}
