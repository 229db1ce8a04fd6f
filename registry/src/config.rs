//! `ClientConfig`: transport settings of a registry client (schemes, TLS, timeouts, retries).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of a [`crate::Client`]. `Default` holds the real defaults. In config files
/// durations are given in seconds (fractions allowed).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Registries spoken to over plain HTTP: `host:port`, `host` (any port), or `*` for all.
    /// Default: none (HTTPS everywhere).
    pub plain_http: Vec<String>,
    /// Registries whose TLS certificate is not verified, same matching as `plain_http`.
    /// Default: none.
    pub insecure_tls: Vec<String>,
    /// Mirrors per registry host (as written in image references, e.g. `docker.io` or
    /// `registry.example.com:5000`): hosts serving the same repositories, tried in order
    /// before the registry itself for manifest and blob reads. Default: none.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Docker config file with credentials. Default (None): `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`; a missing file means no credentials.
    pub docker_config: Option<PathBuf>,
    /// Longest wait for a small request (manifest, HEAD, token) to complete, and the longest
    /// pause between two reads of a streaming body. Default 30 s.
    #[serde(with = "seconds")]
    pub timeout: Duration,
    /// Longest wait for a TCP+TLS connection. Default 10 s.
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// Retries of idempotent requests (GET, HEAD) after connect errors, timeouts, 429 and
    /// 5xx. Default 3.
    pub retries: u32,
    /// Shortest wait before a retry; retry `n` waits a random time between `min_wait` and
    /// `min(max_wait, min_wait * 2^n)` (full jitter, so nodes never retry in lockstep).
    /// A 429 or 503 with `Retry-After: t` waits `t` plus up to `max(min_wait, t/10)`
    /// instead (a `Retry-After` over 60 s ends the retries). Default 0.1 s.
    #[serde(with = "seconds")]
    pub min_wait: Duration,
    /// Longest wait before a retry. Default 5 s.
    #[serde(with = "seconds")]
    pub max_wait: Duration,
    /// containerd's hosts directories (its `config_path`): per registry a directory named
    /// as the image reference's host (`host:port`, also `host_port_`), else `_default`,
    /// with a `hosts.toml` (mirrors, CAs, client certificates, headers) or bare
    /// `*.crt`/`*.cert`/`*.key` files; the first directory holding a match wins. Default
    /// (None): `/etc/containerd/certs.d` and `/etc/docker/certs.d`, those that exist.
    /// An empty list turns hosts directories off. See docs/registries.md.
    pub hosts_dirs: Option<Vec<PathBuf>>,
    /// Longest run of a docker credential helper (`docker-credential-NAME get`); one that
    /// takes longer is killed and the registry is read anonymously. Default 10 s.
    #[serde(with = "seconds")]
    pub credential_helper_timeout: Duration,
    /// `User-Agent` header. Default `estargz-snapshotter/<version>`.
    pub user_agent: String,
    /// Ask for several blob ranges in one request (`multipart/byteranges`). A registry
    /// answering such a request otherwise (one range, the whole blob, 400) is asked range
    /// by range from its first such answer on. Default true; false always asks range by
    /// range.
    pub multi_range: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            plain_http: Vec::new(),
            insecure_tls: Vec::new(),
            mirrors: BTreeMap::new(),
            docker_config: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: 3,
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(5),
            hosts_dirs: None,
            credential_helper_timeout: Duration::from_secs(10),
            user_agent: concat!("estargz-snapshotter/", env!("CARGO_PKG_VERSION")).to_owned(),
            multi_range: true,
        }
    }
}

impl ClientConfig {
    /// Whether `host` (`name` or `name:port`) is reached over plain HTTP: listed in
    /// `plain_http`, or a loopback host (`localhost`, `::1`, 127.0.0.0/8) as containerd
    /// and the Go reference treat them.
    pub fn uses_plain_http(&self, host: &str) -> bool {
        host_listed(&self.plain_http, host) || is_loopback_host(host)
    }

    /// Whether `host` is named in `plain_http` (not merely loopback).
    pub(crate) fn lists_plain_http(&self, host: &str) -> bool {
        host_listed(&self.plain_http, host)
    }

    /// The hosts directories to search: the configured ones, else the default ones that
    /// exist.
    pub fn hosts_dirs(&self) -> Vec<PathBuf> {
        match &self.hosts_dirs {
            Some(dirs) => dirs.clone(),
            None => DEFAULT_HOSTS_DIRS
                .iter()
                .map(PathBuf::from)
                .filter(|dir| dir.is_dir())
                .collect(),
        }
    }

    /// Whether `host`'s TLS certificate is accepted without verification.
    pub fn skips_tls_verify(&self, host: &str) -> bool {
        host_listed(&self.insecure_tls, host)
    }
}

/// Durations as (fractional) seconds in config files.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|_| {
            serde::de::Error::custom(format!("{secs} is not a valid number of seconds"))
        })
    }
}

/// Where containerd and docker keep per-registry hosts directories.
const DEFAULT_HOSTS_DIRS: [&str; 2] = ["/etc/containerd/certs.d", "/etc/docker/certs.d"];

/// `localhost`, `::1` or a 127.0.0.0/8 address, with or without a port (containerd's
/// `MatchLocalhost`).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = bare_host(host);
    let bare = bare
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(bare);
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    // A bare IPv6 address without brackets has several colons: take it whole.
    let ip_text = if host.matches(':').count() > 1 && !host.starts_with('[') {
        host
    } else {
        bare
    };
    ip_text
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `list` matches `host` when it holds `*`, the exact `host[:port]`, or the bare host name.
fn host_listed(list: &[String], host: &str) -> bool {
    let bare = bare_host(host);
    list.iter()
        .any(|entry| entry == "*" || entry == host || entry == bare)
}

fn bare_host(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(v6, _)| &host[..v6.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matching_table() {
        let list = vec!["reg.local:5000".to_owned(), "plain.io".to_owned()];
        let cases = [
            ("exact host:port", "reg.local:5000", true),
            ("other port", "reg.local:5001", false),
            ("bare name any port", "plain.io:8080", true),
            ("bare name no port", "plain.io", true),
            ("unlisted", "ghcr.io", false),
        ];
        for (name, host, expected) in cases {
            assert_eq!(host_listed(&list, host), expected, "{name}");
        }
        assert!(host_listed(&["*".to_owned()], "anything:1"), "wildcard");
        assert_eq!(bare_host("[::1]:5000"), "[::1]");
    }

    #[test]
    fn loopback_hosts_are_plain_http_by_default() {
        let config = ClientConfig::default();
        let cases = [
            ("localhost", true),
            ("localhost:5000", true),
            ("LOCALHOST:80", true),
            ("127.0.0.1", true),
            ("127.0.0.1:5000", true),
            ("127.3.2.1:443", true),
            ("[::1]:5000", true),
            ("[::1]", true),
            ("::1", true),
            ("128.0.0.1:5000", false),
            ("localhost.example.com", false),
            ("registry.example.com:5000", false),
            ("10.0.0.1:5000", false),
            ("[::2]:5000", false),
        ];
        for (host, plain) in cases {
            assert_eq!(config.uses_plain_http(host), plain, "{host}");
        }
    }

    #[test]
    fn parses_from_config_text_with_defaults() {
        let text = r#"{"plain_http": ["localhost:5000"], "timeout": 2.5, "retries": 0}"#;
        let config: ClientConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert_eq!(config.retries, 0);
        assert_eq!(config.plain_http, ["localhost:5000"]);
        assert_eq!(
            config.connect_timeout,
            ClientConfig::default().connect_timeout
        );
        // Unknown keys are accepted: the daemon's config loader names them in a warning.
        assert!(serde_json::from_str::<ClientConfig>(r#"{"tiemout": 1}"#).is_ok());
        let cases = [("negative duration", r#"{"timeout": -1}"#)];
        for (name, text) in cases {
            assert!(
                serde_json::from_str::<ClientConfig>(text).is_err(),
                "{name}"
            );
        }
    }
}
