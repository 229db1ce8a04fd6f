//! Listing `kubernetes.io/dockerconfigjson` Secrets from the API server (all namespaces,
//! `GET /api/v1/secrets?fieldSelector=type=kubernetes.io/dockerconfigjson`) and reading
//! each one's `.dockerconfigjson` as a docker config file.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use registry::{Credential, Credentials};
use serde::Deserialize;

use super::api_access::ApiAccess;

/// The Secret type whose data is a docker config file.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

/// Errors listing the Secrets.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("list secrets at {server}: {source}")]
    Request {
        server: String,
        source: reqwest::Error,
    },
    #[error("list secrets at {server}: read the bearer token: {source}")]
    Token {
        server: String,
        source: std::io::Error,
    },
    #[error("list secrets at {server}: status {status}")]
    Status { server: String, status: u16 },
    #[error("list secrets at {server}: not a secret list: {source}")]
    Decode {
        server: String,
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct SecretList {
    #[serde(default)]
    items: Vec<Secret>,
}

#[derive(Deserialize)]
struct Secret {
    #[serde(default)]
    metadata: Metadata,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    name: String,
    namespace: String,
}

/// Every registry credential in the cluster's docker config Secrets, by host. A Secret
/// that does not parse is logged (by name, never its content) and skipped; for a host in
/// several Secrets the last listed wins.
pub async fn list_credentials(
    access: &ApiAccess,
) -> Result<BTreeMap<String, Credential>, SecretsError> {
    let server = access.server.clone();
    let url = format!(
        "{server}/api/v1/secrets?fieldSelector=type%3D{}",
        DOCKER_CONFIG_JSON_TYPE.replace('/', "%2F")
    );
    let mut request = access.http.get(url);
    let token = access
        .bearer_token()
        .map_err(|source| SecretsError::Token {
            server: server.clone(),
            source,
        })?;
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let request_error = |source| SecretsError::Request {
        server: server.clone(),
        source,
    };
    let response = request.send().await.map_err(request_error)?;
    if !response.status().is_success() {
        return Err(SecretsError::Status {
            server,
            status: response.status().as_u16(),
        });
    }
    let body = response.bytes().await.map_err(request_error)?;
    let list: SecretList =
        serde_json::from_slice(&body).map_err(|source| SecretsError::Decode {
            server: server.clone(),
            source,
        })?;
    let mut found = BTreeMap::new();
    for secret in list.items {
        for (host, credential) in secret_credentials(&secret) {
            found.insert(host, credential);
        }
    }
    Ok(found)
}

/// The credentials of one Secret (none for another type or unreadable data).
fn secret_credentials(secret: &Secret) -> Vec<(String, Credential)> {
    if secret.kind != DOCKER_CONFIG_JSON_TYPE {
        return Vec::new();
    }
    let name = format!("{}/{}", secret.metadata.namespace, secret.metadata.name);
    let Some(encoded) = secret.data.get(DOCKER_CONFIG_JSON_KEY) else {
        tracing::warn!(secret = %name, "docker config secret without {DOCKER_CONFIG_JSON_KEY}");
        return Vec::new();
    };
    let parsed = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|json| Credentials::from_docker_config_bytes(Path::new(&name), &json).ok());
    match parsed {
        Some(credentials) => credentials
            .iter()
            .map(|(host, credential)| (host.to_owned(), credential.clone()))
            .collect(),
        None => {
            tracing::warn!(secret = %name, "unreadable docker config secret skipped");
            Vec::new()
        }
    }
}
