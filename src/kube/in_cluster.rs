//! The API access of a pod's own service account, as kubelet mounts it: the API server
//! from `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the cluster CA in `ca.crt`
//! and the bearer token in `token` of the service-account directory
//! (`/var/run/secrets/kubernetes.io/serviceaccount` by default). The token is re-read for
//! every request because kubelet rotates it.

use std::path::{Path, PathBuf};

use super::api_access::{ApiAccess, BearerToken};

pub const DEFAULT_SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const TOKEN_FILE: &str = "token";
const CA_FILE: &str = "ca.crt";

/// Errors building the in-cluster access.
#[derive(Debug, thiserror::Error)]
pub enum InClusterError {
    #[error("in-cluster service account: read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("in-cluster service account: KUBERNETES_SERVICE_HOST is set but not KUBERNETES_SERVICE_PORT")]
    NoPort,
    #[error("in-cluster service account: CA {path}: no certificate")]
    NoCertificate { path: PathBuf },
    #[error("in-cluster service account: CA {path}: {source}")]
    Tls {
        path: PathBuf,
        source: reqwest::Error,
    },
}

/// The service's environment variables kubelet sets in every pod.
#[derive(Debug, Default, Clone)]
pub struct ServiceEnv {
    pub host: Option<String>,
    pub port: Option<String>,
}

impl ServiceEnv {
    pub fn from_process() -> ServiceEnv {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        ServiceEnv {
            host: var("KUBERNETES_SERVICE_HOST"),
            port: var("KUBERNETES_SERVICE_PORT"),
        }
    }

    /// Whether this looks like a pod of a cluster.
    pub fn in_pod(&self) -> bool {
        self.host.is_some()
    }

    /// `https://host:port`, brackets around an IPv6 address.
    fn server(&self) -> Result<String, InClusterError> {
        let host = self.host.as_deref().unwrap_or_default();
        let port = self.port.as_deref().ok_or(InClusterError::NoPort)?;
        Ok(if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        })
    }
}

/// The access of the service account mounted in `dir`.
pub fn load(dir: &Path, env: &ServiceEnv) -> Result<ApiAccess, InClusterError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| InClusterError::Read { path, source })
    };
    let server = env.server()?;
    // Read now so that a missing token fails at startup, not at the first list.
    read(TOKEN_FILE)?;
    let ca_path = dir.join(CA_FILE);
    let tls_error = |source| InClusterError::Tls {
        path: ca_path.clone(),
        source,
    };
    // The bundle is parsed now: a lone `from_pem` would accept text without a certificate.
    let bundle = reqwest::Certificate::from_pem_bundle(&read(CA_FILE)?).map_err(tls_error)?;
    if bundle.is_empty() {
        return Err(InClusterError::NoCertificate { path: ca_path });
    }
    let builder = bundle
        .into_iter()
        .fold(reqwest::Client::builder(), |builder, ca| {
            builder.add_root_certificate(ca)
        });
    let http = builder.build().map_err(tls_error)?;
    Ok(ApiAccess {
        server,
        http,
        token: Some(BearerToken::File(dir.join(TOKEN_FILE))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway self-signed certificate (openssl req -x509, P-256), only parsed here.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkDCCATegAwIBAgIUINiHxTLvrWkKCRCdEFlwmyhLsEwwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSa3ViZXJuZXRlcy10ZXN0LWNhMCAXDTI2MTIwMTExNTI1OVoY
DzIxMjYxMTA3MTE1MjU5WjAdMRswGQYDVQQDDBJrdWJlcm5ldGVzLXRlc3QtY2Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAT2ORFTZbUPaw08Hn7T+uS9bHtQW2aS
viKlPbD6uY+pT551Zb94byCbR4v/0idHeKEvlqK21iqUm0gfJRhBZhaBo1MwUTAd
BgNVHQ4EFgQUNZnzEHbyv8LcIVnkmQf7H1HZT/swHwYDVR0jBBgwFoAUNZnzEHby
v8LcIVnkmQf7H1HZT/swDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBE
AiBDFa5OueFhElorWEVshcW+h8uRka09ARvvJ6VOgrWy2QIgBVjxPQ4BPJTkkJJw
+RMSi7axvvKHHIC771o0LsXHJts=
-----END CERTIFICATE-----
";

    fn env(host: &str, port: Option<&str>) -> ServiceEnv {
        ServiceEnv {
            host: Some(host.to_owned()),
            port: port.map(str::to_owned),
        }
    }

    /// A stand-in for the mounted service-account directory.
    fn service_account_dir(token: Option<&str>, ca: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(token) = token {
            std::fs::write(dir.path().join(TOKEN_FILE), token).unwrap();
        }
        if let Some(ca) = ca {
            std::fs::write(dir.path().join(CA_FILE), ca).unwrap();
        }
        dir
    }

    #[test]
    fn server_token_and_ca_come_from_the_mounted_account() {
        let cases = [
            ("ipv4", "10.96.0.1", "https://10.96.0.1:443"),
            ("ipv6", "fd00::1", "https://[fd00::1]:443"),
        ];
        for (name, host, want) in cases {
            let dir = service_account_dir(Some("sa-token\n"), Some(CA));
            let access = load(dir.path(), &env(host, Some("443"))).unwrap();
            assert_eq!(access.server, want, "{name}");
            let token = access.bearer_token().unwrap();
            assert_eq!(token.as_deref(), Some("sa-token"), "{name}");
            assert!(!format!("{access:?}").contains("sa-token"), "{name}");
        }
    }

    #[test]
    fn incomplete_accounts_are_errors() {
        let cases = [
            ("no token", None, Some(CA), Some("443"), "read"),
            ("no ca", Some("t"), None, Some("443"), "ca.crt"),
            ("bad ca", Some("t"), Some("not a pem"), Some("443"), "CA"),
            (
                "no port",
                Some("t"),
                Some(CA),
                None,
                "KUBERNETES_SERVICE_PORT",
            ),
        ];
        for (name, token, ca, port, want) in cases {
            let dir = service_account_dir(token, ca);
            let error = load(dir.path(), &env("10.96.0.1", port)).unwrap_err();
            let text = error.to_string();
            assert!(text.contains(want), "{name}: {text}");
        }
    }
}
