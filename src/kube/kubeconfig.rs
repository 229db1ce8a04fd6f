//! Reading a kubeconfig file: the current context's API server URL, its CA, and the
//! user's bearer token or client certificate, turned into an HTTP client for the API.
//! Exec and auth-provider plugins are not supported.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::api_access::{ApiAccess, BearerToken};

/// Errors reading a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse kubeconfig {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("kubeconfig {path}: no context {name:?}")]
    NoContext { path: PathBuf, name: String },
    #[error("kubeconfig {path}: no cluster {name:?}")]
    NoCluster { path: PathBuf, name: String },
    #[error("kubeconfig {path}: {field} is not base64")]
    BadBase64 { path: PathBuf, field: &'static str },
    #[error("kubeconfig {path}: TLS material: {source}")]
    Tls {
        path: PathBuf,
        source: reqwest::Error,
    },
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct File {
    clusters: Vec<Named<Cluster>>,
    users: Vec<Named<User>>,
    contexts: Vec<Named<Context>>,
    current_context: String,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    cluster: String,
    user: String,
}

/// Reads `path` and builds the access of its current context.
pub fn load(path: &Path) -> Result<ApiAccess, KubeconfigError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| KubeconfigError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let text = read(path)?;
    let file: File = serde_yaml_ng::from_slice(&text).map_err(|source| KubeconfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let context =
        find(&file.contexts, &file.current_context).ok_or_else(|| KubeconfigError::NoContext {
            path: path.to_path_buf(),
            name: file.current_context.clone(),
        })?;
    let cluster =
        find(&file.clusters, &context.cluster).ok_or_else(|| KubeconfigError::NoCluster {
            path: path.to_path_buf(),
            name: context.cluster.clone(),
        })?;
    let default_user = User::default();
    let user = find(&file.users, &context.user).unwrap_or(&default_user);
    let pem = |data: &Option<String>, file: &Option<PathBuf>, field| -> Result<_, _> {
        match (data, file) {
            (Some(data), _) => base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map(Some)
                .map_err(|_| KubeconfigError::BadBase64 {
                    path: path.to_path_buf(),
                    field,
                }),
            (None, Some(file)) => read(file).map(Some),
            (None, None) => Ok(None),
        }
    };
    let tls_error = |source| KubeconfigError::Tls {
        path: path.to_path_buf(),
        source,
    };
    let mut builder =
        reqwest::Client::builder().danger_accept_invalid_certs(cluster.insecure_skip_tls_verify);
    let ca = pem(
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
        "certificate-authority-data",
    )?;
    if let Some(ca) = ca {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&ca).map_err(tls_error)?);
    }
    let cert = pem(
        &user.client_certificate_data,
        &user.client_certificate,
        "client-certificate-data",
    )?;
    let key = pem(&user.client_key_data, &user.client_key, "client-key-data")?;
    if let (Some(mut cert), Some(key)) = (cert, key) {
        cert.extend_from_slice(&key);
        builder = builder.identity(reqwest::Identity::from_pem(&cert).map_err(tls_error)?);
    }
    let token = match (&user.token, &user.token_file) {
        (Some(token), _) => Some(BearerToken::Fixed(token.clone())),
        (None, Some(file)) => {
            // Read now so that a missing file fails at startup; re-read for each request.
            read(file)?;
            Some(BearerToken::File(file.clone()))
        }
        (None, None) => None,
    };
    Ok(ApiAccess {
        server: cluster.server.trim_end_matches('/').to_owned(),
        http: builder.build().map_err(tls_error)?,
        token,
    })
}

fn find<'a, T>(items: &'a [Named<T>], name: &str) -> Option<&'a T> {
    items
        .iter()
        .find(|item| item.name == name)
        .map(|item| &item.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: node\n\
        clusters:\n- name: local\n  cluster:\n    server: http://127.0.0.1:6443/\n\
        users:\n- name: snapshotter\n  user:\n    token: sekret\n\
        contexts:\n- name: other\n  context:\n    cluster: missing\n    user: nobody\n\
        - name: node\n  context:\n    cluster: local\n    user: snapshotter\n";

    fn load_text(text: &str) -> Result<ApiAccess, KubeconfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn current_context_picks_server_and_token() {
        let access = load_text(CONFIG).unwrap();
        assert_eq!(access.server, "http://127.0.0.1:6443");
        let token = access.bearer_token().unwrap();
        assert_eq!(token.as_deref(), Some("sekret"));
        assert!(!format!("{access:?}").contains("sekret"));
    }

    #[test]
    fn broken_configs_are_errors() {
        let cases = [
            ("not yaml", "{[", "parse"),
            (
                "missing context",
                &CONFIG.replace("current-context: node", "current-context: x"),
                "no context",
            ),
            (
                "missing cluster",
                &CONFIG.replace("current-context: node", "current-context: other"),
                "no cluster",
            ),
            (
                "bad ca",
                &CONFIG.replace(
                    "server: http://127.0.0.1:6443/",
                    "server: x\n    certificate-authority-data: '%%'",
                ),
                "not base64",
            ),
        ];
        for (name, text, want) in cases {
            let error = load_text(text).unwrap_err().to_string();
            assert!(error.contains(want), "{name}: {error}");
        }
    }
}
