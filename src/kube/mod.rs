//! Registry credentials from Kubernetes Secrets (`[kubeconfig_keychain]`): through the API
//! server, the daemon lists the cluster's `kubernetes.io/dockerconfigjson` Secrets every
//! `refresh_interval` and stores their credentials in the registry client the lazy layers
//! share, so rotated pull secrets reach lazy reads without a restart. Polling, not a
//! watch: one list request per interval, plus one when a registry refuses a credential
//! (the client's refresh hook, rate-limited by the client), so that a read right after a
//! rotation does not fail until the next poll. Credentials stay in memory; logs name hosts.
//!
//! `access` finds the API access (a kubeconfig, or the pod's service account through
//! `in_cluster`), `secrets` lists and decodes the Secrets.

pub mod access;
pub mod api_access;
pub mod in_cluster;
pub mod kubeconfig;
pub mod secrets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use registry::Credentials;
use serde::Deserialize;
use tokio::task::JoinHandle;

pub use access::AccessError;
pub use api_access::ApiAccess;
pub use kubeconfig::KubeconfigError;
pub use secrets::SecretsError;

/// The `[kubeconfig_keychain]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KubeconfigKeychainConfig {
    /// Read docker config Secrets through the API server. Default false.
    pub enable: bool,
    /// The kubeconfig whose current context is used (it needs `list` on `secrets` in all
    /// namespaces, which kubelet's node credentials lack). When the file does not exist
    /// and the daemon runs in a pod, the pod's service account is used instead. Default
    /// `/etc/containerd-stargz-grpc/kubeconfig`.
    pub kubeconfig_path: PathBuf,
    /// The pod's mounted service account (`token`, `ca.crt`), used without a kubeconfig.
    /// Default `/var/run/secrets/kubernetes.io/serviceaccount`.
    pub service_account_dir: PathBuf,
    /// Seconds between two lists of the Secrets (fractions allowed). Default 60.
    #[serde(deserialize_with = "crate::config::seconds")]
    pub refresh_interval: Duration,
}

impl Default for KubeconfigKeychainConfig {
    fn default() -> Self {
        KubeconfigKeychainConfig {
            enable: false,
            kubeconfig_path: PathBuf::from("/etc/containerd-stargz-grpc/kubeconfig"),
            service_account_dir: PathBuf::from(in_cluster::DEFAULT_SERVICE_ACCOUNT_DIR),
            refresh_interval: Duration::from_secs(60),
        }
    }
}

/// The polling task and the client's refresh hook; both end on drop.
pub struct SecretsWatch {
    task: JoinHandle<()>,
    client: registry::Client,
}

impl Drop for SecretsWatch {
    fn drop(&mut self) {
        self.task.abort();
        self.client.clear_refresh_hook();
    }
}

/// Finds the API access, starts polling the Secrets into `client`, and lets a refused
/// credential trigger a list too.
pub fn start(
    config: &KubeconfigKeychainConfig,
    client: registry::Client,
) -> Result<SecretsWatch, AccessError> {
    let access = Arc::new(access::load(config)?);
    tracing::info!(
        server = %access.server,
        from = %access::describe(config),
        interval = ?config.refresh_interval,
        "reading docker config secrets from the API server"
    );
    let on_refusal = access.clone();
    client.set_refresh_hook(move |host| relist_after_refusal(on_refusal.clone(), host));
    let interval = config.refresh_interval.max(Duration::from_secs(1));
    let (poller, polled) = (access, client.clone());
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            if let Err(error) = sync_once(&poller, &polled).await {
                tracing::warn!(%error, "docker config secrets not refreshed");
            }
        }
    });
    Ok(SecretsWatch { task, client })
}

/// One list of the Secrets into `client`; returns how many hosts were stored.
pub async fn sync_once(
    access: &ApiAccess,
    client: &registry::Client,
) -> Result<usize, SecretsError> {
    let found = secrets::list_credentials(access).await?;
    for (host, credential) in &found {
        tracing::debug!(%host, "credential from a docker config secret");
        client.set_credential(host, credential.clone());
    }
    Ok(found.len())
}

/// The refresh hook: lists the Secrets now, for the registry `host` that refused.
async fn relist_after_refusal(access: Arc<ApiAccess>, host: String) -> Credentials {
    let mut credentials = Credentials::new();
    match secrets::list_credentials(&access).await {
        Ok(found) => {
            tracing::info!(%host, found = found.contains_key(&host), "docker config secrets listed after a refusal");
            for (host, credential) in found {
                credentials.insert(&host, credential);
            }
        }
        Err(error) => {
            tracing::warn!(%host, %error, "docker config secrets not listed after a refusal")
        }
    }
    credentials
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use registry::Credential;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one connection with `body` (JSON, status 200); returns the request head.
    async fn fake_api_server(body: String) -> (String, JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (server, task)
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[tokio::test]
    async fn lists_docker_config_secrets_with_the_token() {
        let docker_config = |host: &str, user: &str| {
            let auth = b64(&format!("{user}:pw-{user}"));
            b64(&format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#))
        };
        let list = serde_json::json!({"kind": "SecretList", "items": [
            {"metadata": {"name": "a", "namespace": "ns1"}, "type": "kubernetes.io/dockerconfigjson",
             "data": {".dockerconfigjson": docker_config("r.example:5000", "alice")}},
            {"metadata": {"name": "b", "namespace": "ns2"}, "type": "kubernetes.io/dockerconfigjson",
             "data": {".dockerconfigjson": "%%not base64"}},
            {"metadata": {"name": "c", "namespace": "ns2"}, "type": "Opaque",
             "data": {".dockerconfigjson": docker_config("o.example", "opaque")}},
            {"metadata": {"name": "d", "namespace": "ns3"}, "type": "kubernetes.io/dockerconfigjson",
             "data": {".dockerconfigjson": docker_config("https://index.docker.io/v1/", "hub")}}
        ]});
        let (server, request) = fake_api_server(list.to_string()).await;
        let access = ApiAccess {
            server,
            http: reqwest::Client::new(),
            token: Some(api_access::BearerToken::Fixed("node-token".into())),
        };
        let found = secrets::list_credentials(&access).await.unwrap();
        let basic = |user: &str| Credential::Basic {
            username: user.into(),
            password: format!("pw-{user}"),
        };
        let want = [
            ("docker.io".to_owned(), basic("hub")),
            ("r.example:5000".to_owned(), basic("alice")),
        ];
        assert_eq!(found, want.into_iter().collect());
        let head = request.await.unwrap();
        assert!(
            head.starts_with(
                "GET /api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson "
            ),
            "{head}"
        );
        assert!(
            head.to_lowercase()
                .contains("authorization: bearer node-token"),
            "{head}"
        );
    }
}
