//! `Credentials`: per-registry secrets, given explicitly or read from a docker `config.json`.
//!
//! Supported in `config.json`: `auths.<key>.auth` (base64 `user:password`),
//! `auths.<key>.username`/`password`, `auths.<key>.identitytoken` (an OAuth2 refresh
//! token, used with the bearer flow's refresh-token grant) and `auths.<key>.registrytoken`
//! (a bearer token sent to the registry as is). Keys may be `host`, `https://host`,
//! `http://host` (with or without a path); Docker Hub's key is
//! `https://index.docker.io/v1/`. `credsStore` and `credHelpers` name credential helpers
//! (`helpers.rs`), which the client asks before `auths`. Secrets never appear in `Debug`
//! output or logs.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::reference::DOCKER_HUB;

/// Errors from reading a docker config file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("read docker config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse docker config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("docker config {path}: auths entry {key:?}: `auth` is not base64 of user:password")]
    BadAuthField { path: PathBuf, key: String },
}

/// The server URL docker stores Docker Hub's credentials under.
pub(crate) const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// One registry's secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (HTTP basic, also sent to bearer token endpoints).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
    /// A bearer token for the registry itself (docker's `registrytoken`).
    RegistryToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credential::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

/// Secrets by registry host (`host[:port]`, `docker.io` for Docker Hub).
#[derive(Clone, Default)]
pub struct Credentials {
    by_host: HashMap<String, Credential>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hosts: Vec<&String> = self.by_host.keys().collect();
        hosts.sort();
        f.debug_struct("Credentials")
            .field("hosts", &hosts)
            .finish()
    }
}

impl Credentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the secret for `registry` (`host[:port]`; docker config key forms are accepted).
    pub fn insert(&mut self, registry: &str, credential: Credential) {
        self.by_host.insert(normalize_key(registry), credential);
    }

    /// The secret for `registry` (as in `Reference::registry`), if any.
    pub fn get(&self, registry: &str) -> Option<&Credential> {
        self.by_host.get(&normalize_key(registry))
    }

    /// Every host and its secret, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Credential)> {
        self.by_host
            .iter()
            .map(|(host, credential)| (host.as_str(), credential))
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    /// The default docker config path: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub fn default_docker_config_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
    }

    /// Reads a docker config file; a missing file gives empty credentials.
    pub fn from_docker_config(path: &Path) -> Result<Self, CredentialsError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "no docker config, no credentials");
                return Ok(Self::new());
            }
            Err(source) => {
                return Err(CredentialsError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::from_docker_config_bytes(path, &text)
    }

    /// Parses docker config JSON; `path` only names the source in errors.
    pub fn from_docker_config_bytes(path: &Path, json: &[u8]) -> Result<Self, CredentialsError> {
        parse_docker_config(path, json).map(|(credentials, _)| credentials)
    }
}

/// A docker config file's `auths` and its credential helpers; a missing file has neither.
pub(crate) fn read_docker_config(path: &Path) -> Result<(Credentials, Helpers), CredentialsError> {
    match std::fs::read(path) {
        Ok(text) => parse_docker_config(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((Credentials::new(), Helpers::default()))
        }
        Err(source) => Err(CredentialsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_docker_config(
    path: &Path,
    json: &[u8],
) -> Result<(Credentials, Helpers), CredentialsError> {
    {
        let file: DockerConfigFile =
            serde_json::from_slice(json).map_err(|source| CredentialsError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let helpers = Helpers {
            store: file.creds_store.clone().filter(|s| !s.is_empty()),
            per_host: file.cred_helpers.clone(),
        };
        let mut ranked: HashMap<String, (u8, Credential)> = HashMap::new();
        for (key, entry) in file.auths {
            let Some(credential) = entry.into_credential(path, &key)? else {
                continue;
            };
            let rank = key_rank(&key);
            let host = normalize_key(&key);
            match ranked.get(&host) {
                Some((existing, _)) if *existing <= rank => {}
                _ => {
                    ranked.insert(host, (rank, credential));
                }
            }
        }
        let by_host = ranked.into_iter().map(|(h, (_, c))| (h, c)).collect();
        Ok((Credentials { by_host }, helpers))
    }
}

/// The helpers a docker config names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Helpers {
    /// `credsStore`: the helper for every registry without its own.
    pub(crate) store: Option<String>,
    /// `credHelpers`: helper per registry host.
    pub(crate) per_host: HashMap<String, String>,
}

impl Helpers {
    /// The helper for `registry` (as in `Reference::registry`), docker's precedence.
    pub(crate) fn for_registry(&self, registry: &str) -> Option<&str> {
        let hub_aliases = [
            DOCKER_HUB,
            "index.docker.io",
            "registry-1.docker.io",
            DOCKER_HUB_SERVER,
        ];
        let keys: Vec<&str> = if registry == DOCKER_HUB {
            hub_aliases.to_vec()
        } else {
            vec![registry]
        };
        keys.iter()
            .find_map(|key| self.per_host.get(*key))
            .or(self.store.as_ref())
            .map(String::as_str)
            .filter(|name| !name.is_empty())
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerConfigFile {
    auths: HashMap<String, AuthEntry>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

impl AuthEntry {
    fn into_credential(
        self,
        path: &Path,
        key: &str,
    ) -> Result<Option<Credential>, CredentialsError> {
        if let Some(token) = self.registrytoken.filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::RegistryToken(token)));
        }
        if let Some(token) = self.identitytoken.filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(token)));
        }
        if let Some(auth) = self.auth.filter(|a| !a.is_empty()) {
            return decode_auth_field(&auth).map(Some).ok_or_else(|| {
                CredentialsError::BadAuthField {
                    path: path.to_owned(),
                    key: key.to_owned(),
                }
            });
        }
        match (self.username, self.password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Ok(Some(Credential::Basic { username, password }))
            }
            _ => Ok(None),
        }
    }
}

/// Decodes base64 `user:password` (padding optional, as docker writes it with padding).
fn decode_auth_field(auth: &str) -> Option<Credential> {
    let trimmed = auth.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credential::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// Preference among keys naming the same host: `host` over `https://host` over `http://host`.
fn key_rank(key: &str) -> u8 {
    if key.starts_with("https://") {
        1
    } else if key.starts_with("http://") {
        2
    } else {
        0
    }
}

/// Reduces a config key or registry name to `host[:port]`, mapping Docker Hub aliases.
fn normalize_key(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme
        .split_once('/')
        .map_or(without_scheme, |(host, _)| host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn basic(user: &str, password: &str) -> Credential {
        Credential::Basic {
            username: user.to_owned(),
            password: password.to_owned(),
        }
    }

    fn parse(json: &str) -> Credentials {
        Credentials::from_docker_config_bytes(Path::new("test.json"), json.as_bytes()).unwrap()
    }

    #[test]
    fn reads_auth_forms_and_matches_hosts() {
        let json = format!(
            r#"{{"auths": {{
                "reg.example:5000": {{"auth": "{}"}},
                "https://plain.example": {{"username": "u2", "password": "p2"}},
                "http://other.example/v2/": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "token.example": {{"auth": "{}", "identitytoken": "refresh"}},
                "bearer.example": {{"registrytoken": "reg-tok"}},
                "empty.example": {{}}
            }}, "credsStore": "desktop"}}"#,
            b64("u1:p:1"),
            b64("u3:p3"),
            b64("hub:secret"),
            b64("<token>:")
        );
        let creds = parse(&json);
        let cases = [
            (
                "host:port key",
                "reg.example:5000",
                Some(basic("u1", "p:1")),
            ),
            ("https key", "plain.example", Some(basic("u2", "p2"))),
            (
                "http key with path",
                "other.example",
                Some(basic("u3", "p3")),
            ),
            (
                "docker hub v1 key",
                "docker.io",
                Some(basic("hub", "secret")),
            ),
            (
                "identity token wins",
                "token.example",
                Some(Credential::IdentityToken("refresh".into())),
            ),
            (
                "registry token",
                "bearer.example",
                Some(Credential::RegistryToken("reg-tok".into())),
            ),
            ("empty entry", "empty.example", None),
            ("port must match", "reg.example", None),
            ("unknown", "ghcr.io", None),
        ];
        for (name, host, expected) in cases {
            assert_eq!(creds.get(host), expected.as_ref(), "{name}");
        }
    }

    #[test]
    fn helper_precedence() {
        let helpers = Helpers {
            store: Some("desktop".into()),
            per_host: HashMap::from([
                ("ecr.example".to_owned(), "ecr-login".to_owned()),
                ("https://index.docker.io/v1/".to_owned(), "hub".to_owned()),
            ]),
        };
        let cases = [
            ("credHelpers wins", "ecr.example", Some("ecr-login")),
            ("credsStore otherwise", "ghcr.io", Some("desktop")),
            ("hub key", DOCKER_HUB, Some("hub")),
        ];
        for (name, registry, expected) in cases {
            assert_eq!(helpers.for_registry(registry), expected, "{name}");
        }
        assert_eq!(Helpers::default().for_registry("ghcr.io"), None);
    }

    #[test]
    fn reads_credential_helpers() {
        let json = r#"{"auths": {}, "credsStore": "desktop", "credHelpers": {"ecr.example": "ecr-login"}}"#;
        let (_, helpers) = parse_docker_config(Path::new("t"), json.as_bytes()).unwrap();
        assert_eq!(helpers.for_registry("ecr.example"), Some("ecr-login"));
        assert_eq!(helpers.for_registry("ghcr.io"), Some("desktop"));
        let (_, none) = parse_docker_config(Path::new("t"), b"{}").unwrap();
        assert_eq!(none, Helpers::default());
    }

    #[test]
    fn exact_host_key_beats_url_keys() {
        let json = format!(
            r#"{{"auths": {{"http://r.io": {{"auth": "{}"}}, "r.io": {{"auth": "{}"}}, "https://r.io": {{"auth": "{}"}}}}}}"#,
            b64("http:x"),
            b64("exact:x"),
            b64("https:x")
        );
        assert_eq!(parse(&json).get("r.io"), Some(&basic("exact", "x")));
    }

    #[test]
    fn rejects_malformed_auth() {
        for (name, json) in [
            (
                "not base64",
                r#"{"auths": {"r.io": {"auth": "%%%"}}}"#.to_owned(),
            ),
            (
                "no colon",
                format!(
                    r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
                    b64("nocolon")
                ),
            ),
            ("not json", "{".to_owned()),
        ] {
            let result = Credentials::from_docker_config_bytes(Path::new("t"), json.as_bytes());
            assert!(result.is_err(), "{name}");
        }
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::from_docker_config(&dir.path().join("none.json")).unwrap();
        assert!(creds.is_empty());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut creds = Credentials::new();
        creds.insert("r.io", basic("user", "hunter2"));
        creds.insert("t.io", Credential::IdentityToken("tok-secret".into()));
        let text = format!("{creds:?} {:?} {:?}", creds.get("r.io"), creds.get("t.io"));
        assert!(
            !text.contains("hunter2") && !text.contains("tok-secret"),
            "{text}"
        );
        assert!(text.contains("r.io") && text.contains("user"), "{text}");
    }
}
