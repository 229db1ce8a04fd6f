//! Registry hosts as containerd resolves them: from a registry name (as written in an image
//! reference) to the ordered endpoints that serve it, read from containerd's hosts
//! directories (`config_path`, e.g. `/etc/containerd/certs.d`).
//!
//! Per registry `host[:port]` the first of `<root>/host_port_`, `<root>/host:port` and
//! `<root>/_default` that exists is used (roots in order). In it, `hosts.toml` lists
//! `[host."<url>"]` entries, tried in file order, then the top-level `server` (the
//! registry itself when absent); each with `capabilities`, `ca`, `client`, `skip_verify`,
//! `header`, `override_path`. A directory without `hosts.toml` gives the registry's own
//! endpoint with its `*.crt` files as CAs and `*.cert` + `*.key` files as client pairs;
//! so does a `hosts.toml` that does not parse (logged), as in containerd. This module only
//! parses and resolves; nothing here talks to the network.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ClientConfig;

/// Where docker.io's distribution API is served.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Errors reading a hosts directory.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("read hosts directory {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry {registry} resolves to no endpoint")]
    NoEndpoint { registry: String },
}

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What an endpoint may be used for (containerd's host capabilities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
    /// What a mirror named in our own config may do.
    pub(crate) const READ: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: false,
    };
}

/// TLS settings of one endpoint; the default verifies against the system trust store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// Extra CA certificate files (PEM).
    pub ca: Vec<PathBuf>,
    /// Client certificate files with their key file (None: the key is in the cert file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Accept any server certificate.
    pub skip_verify: bool,
}

/// One endpoint serving a registry's repositories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]`.
    pub host: String,
    /// The API root path, `/v2` unless `override_path` gave another.
    pub path: String,
    pub capabilities: Capabilities,
    pub tls: TlsSettings,
    /// Extra request headers (`header` in hosts.toml).
    pub headers: Vec<(String, String)>,
}

/// The endpoints of `registry`, in the order they are tried; the last is the registry's
/// own server. `config` adds its `mirrors` first and gives the defaults (`plain_http`,
/// `insecure_tls`) of endpoints that hosts.toml does not set.
pub fn resolve(config: &ClientConfig, registry: &str) -> Result<Vec<Endpoint>, HostsError> {
    let mut endpoints: Vec<Endpoint> = config
        .mirrors
        .get(registry)
        .into_iter()
        .flatten()
        .map(|mirror| default_endpoint(config, mirror, Capabilities::READ))
        .collect();
    let entries = match find_host_dir(&config.hosts_dirs(), registry) {
        Some(dir) => load_host_dir(&dir)?,
        None => vec![Entry::default()],
    };
    for entry in entries {
        endpoints.push(entry.into_endpoint(config, registry));
    }
    Ok(endpoints)
}

/// An endpoint with our config's defaults: scheme from `plain_http` and loopback, TLS
/// leniency from `insecure_tls`.
fn default_endpoint(config: &ClientConfig, host: &str, capabilities: Capabilities) -> Endpoint {
    let host = if host == crate::reference::DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        host
    };
    let scheme = if config.uses_plain_http(host) {
        Scheme::Http
    } else {
        Scheme::Https
    };
    Endpoint {
        scheme,
        host: host.to_owned(),
        path: "/v2".to_owned(),
        capabilities,
        tls: TlsSettings {
            skip_verify: config.skips_tls_verify(host),
            ..TlsSettings::default()
        },
        headers: Vec::new(),
    }
}

/// The directory for `registry` under the first root that has one.
fn find_host_dir(roots: &[PathBuf], registry: &str) -> Option<PathBuf> {
    let mut names = Vec::new();
    if let Some((name, port)) = registry.rsplit_once(':').filter(|(n, _)| !n.is_empty()) {
        names.push(format!("{name}_{port}_"));
    }
    names.push(registry.to_owned());
    names.push("_default".to_owned());
    roots.iter().find_map(|root| {
        names
            .iter()
            .map(|name| root.join(name))
            .find(|dir| dir.is_dir())
    })
}

/// One host as a hosts directory describes it; an empty `server` means the registry.
#[derive(Debug, Default, PartialEq)]
struct Entry {
    server: Option<url::Url>,
    capabilities: Option<Capabilities>,
    override_path: bool,
    tls: TlsSettings,
    skip_verify: Option<bool>,
    headers: Vec<(String, String)>,
}

impl Entry {
    fn into_endpoint(self, config: &ClientConfig, registry: &str) -> Endpoint {
        let capabilities = self.capabilities.unwrap_or(Capabilities::ALL);
        let explicit_tls =
            !self.tls.ca.is_empty() || !self.tls.client.is_empty() || self.skip_verify.is_some();
        let mut endpoint = match &self.server {
            None => {
                let mut endpoint = default_endpoint(config, registry, capabilities);
                // A loopback registry with certificates in its directory speaks TLS
                // (containerd tries HTTPS first there), unless plain_http names it.
                let port_80 = registry.ends_with(":80");
                if endpoint.scheme == Scheme::Http
                    && explicit_tls
                    && !port_80
                    && !config.lists_plain_http(registry)
                {
                    endpoint.scheme = Scheme::Https;
                }
                endpoint
            }
            Some(url) => {
                let host = match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                    None => url.host_str().unwrap_or_default().to_owned(),
                };
                let mut endpoint = default_endpoint(config, &host, capabilities);
                endpoint.scheme = if url.scheme() == "http" {
                    Scheme::Http
                } else {
                    Scheme::Https
                };
                endpoint.path = api_path(url.path(), self.override_path);
                endpoint
            }
        };
        endpoint.tls.ca = self.tls.ca;
        endpoint.tls.client = self.tls.client;
        if let Some(skip) = self.skip_verify {
            endpoint.tls.skip_verify = skip;
        }
        endpoint.headers = self.headers;
        endpoint
    }
}

/// containerd's path rule: `/v2` appended unless present or `override_path` is set.
fn api_path(path: &str, override_path: bool) -> String {
    let trimmed = path.trim_end_matches('/');
    if override_path || trimmed.ends_with("/v2") {
        if trimmed.is_empty() {
            return "/".to_owned();
        }
        return trimmed.to_owned();
    }
    format!("{trimmed}/v2")
}

/// The entries of a hosts directory.
fn load_host_dir(dir: &Path) -> Result<Vec<Entry>, HostsError> {
    let file = dir.join("hosts.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => match parse_hosts_file(dir, &text) {
            Ok(entries) => {
                tracing::debug!(file = %file.display(), hosts = entries.len(), "hosts.toml loaded");
                return Ok(entries);
            }
            Err(problem) => {
                tracing::error!(file = %file.display(), %problem,
                    "hosts.toml does not parse; using only the directory's certificate files");
            }
        },
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(HostsError::Read { path: file, source }),
    }
    load_cert_files(dir).map(|entry| vec![entry])
}

/// A directory without hosts.toml: `*.crt` are CAs, `*.cert` (+ same-named `.key`) clients.
fn load_cert_files(dir: &Path) -> Result<Entry, HostsError> {
    let read_error = |source| HostsError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|entry| entry.path())
        .collect();
    names.sort();
    let mut entry = Entry::default();
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => entry.tls.ca.push(path),
            Some("cert") => {
                let key = path.with_extension("key");
                let key = key.is_file().then_some(key);
                entry.tls.client.push((path, key));
            }
            _ => {}
        }
    }
    Ok(entry)
}

/// One `[host."..."]` table or the top level of hosts.toml.
#[derive(Deserialize, Default)]
#[serde(default)]
struct HostSection {
    server: Option<String>,
    capabilities: Option<Vec<String>>,
    ca: Option<StringOrList>,
    client: Option<ClientField>,
    skip_verify: Option<bool>,
    header: toml::Table,
    override_path: bool,
    host: toml::Table,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(one) => vec![one],
            StringOrList::Many(many) => many,
        }
    }
}

/// `client = "c.pem"`, `client = ["a.pem", "b.pem"]` or `client = [["c.cert", "c.key"]]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ClientField {
    One(String),
    Many(Vec<StringOrList>),
}

/// Parses hosts.toml; relative paths are taken from `dir`. `[host]` tables keep file order.
fn parse_hosts_file(dir: &Path, text: &str) -> Result<Vec<Entry>, String> {
    let top: HostSection = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    for (url, value) in top.host.clone() {
        let section: HostSection = value
            .try_into()
            .map_err(|e: toml::de::Error| format!("host {url:?}: {e}"))?;
        entries.push(section_entry(dir, Some(&url), section)?);
    }
    let server = top.server.clone().filter(|s| !s.is_empty());
    entries.push(section_entry(dir, server.as_deref(), top)?);
    Ok(entries)
}

fn section_entry(dir: &Path, server: Option<&str>, section: HostSection) -> Result<Entry, String> {
    let server = match server {
        None => None,
        Some(text) => {
            let full = if text.starts_with("http") {
                text.to_owned()
            } else {
                format!("https://{text}")
            };
            let url = url::Url::parse(&full).map_err(|e| format!("server {text:?}: {e}"))?;
            if url.host_str().is_none() {
                return Err(format!("server {text:?} names no host"));
            }
            Some(url)
        }
    };
    let capabilities = match section.capabilities {
        None => None,
        Some(names) if names.is_empty() => None,
        Some(names) => {
            let mut caps = Capabilities {
                pull: false,
                resolve: false,
                push: false,
            };
            for name in names {
                match name.to_ascii_lowercase().as_str() {
                    "pull" => caps.pull = true,
                    "resolve" => caps.resolve = true,
                    "push" => caps.push = true,
                    "referrers" => {}
                    other => return Err(format!("unknown capability {other:?}")),
                }
            }
            Some(caps)
        }
    };
    let absolute = |p: &str| {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_owned()
        } else {
            dir.join(path)
        }
    };
    let ca = section
        .ca
        .map(StringOrList::into_vec)
        .unwrap_or_default()
        .iter()
        .map(|p| absolute(p))
        .collect();
    let mut client = Vec::new();
    match section.client {
        None => {}
        Some(ClientField::One(cert)) => client.push((absolute(&cert), None)),
        Some(ClientField::Many(items)) => {
            for item in items {
                match item {
                    StringOrList::One(cert) => client.push((absolute(&cert), None)),
                    StringOrList::Many(pair) if pair.len() == 2 => {
                        client.push((absolute(&pair[0]), Some(absolute(&pair[1]))))
                    }
                    StringOrList::Many(pair) => {
                        return Err(format!("client pair {pair:?} is not [cert, key]"))
                    }
                }
            }
        }
    }
    let mut headers = Vec::new();
    for (name, value) in section.header {
        match value {
            toml::Value::String(one) => headers.push((name, one)),
            toml::Value::Array(many) => {
                for item in many {
                    let toml::Value::String(one) = item else {
                        return Err(format!("header {name:?}: values must be strings"));
                    };
                    headers.push((name.clone(), one));
                }
            }
            _ => return Err(format!("header {name:?}: value must be a string or a list")),
        }
    }
    Ok(Entry {
        server,
        capabilities,
        override_path: section.override_path,
        tls: TlsSettings {
            ca,
            client,
            skip_verify: false,
        },
        skip_verify: section.skip_verify,
        headers,
    })
}

#[cfg(test)]
mod tests;
