//! `ClientConfig`: transport settings of a registry client (schemes, TLS, timeouts, retries).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of a [`crate::Client`]. `Default` holds the real defaults. In config files
/// durations are given in seconds (fractions allowed).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
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
    /// 5xx, with exponential backoff from 100 ms up to 5 s. Default 3.
    pub retries: u32,
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
            user_agent: concat!("estargz-snapshotter/", env!("CARGO_PKG_VERSION")).to_owned(),
            multi_range: true,
        }
    }
}

impl ClientConfig {
    /// Whether `host` (`name` or `name:port`) is reached over plain HTTP.
    pub fn uses_plain_http(&self, host: &str) -> bool {
        host_listed(&self.plain_http, host)
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
        let cases = [
            ("unknown field", r#"{"tiemout": 1}"#),
            ("negative duration", r#"{"timeout": -1}"#),
        ];
        for (name, text) in cases {
            assert!(
                serde_json::from_str::<ClientConfig>(text).is_err(),
                "{name}"
            );
        }
    }
}
