//! Where the keychain gets its access to the API server ([`ApiAccess`]): the kubeconfig
//! file when there is one, else, inside a pod, the pod's service account
//! (`in_cluster`), as client-go's in-cluster config does.

use std::path::Path;

use super::api_access::ApiAccess;
use super::in_cluster::{self, InClusterError, ServiceEnv};
use super::kubeconfig::{self, KubeconfigError};
use super::KubeconfigKeychainConfig;

/// Errors finding the API access.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error(transparent)]
    InCluster(#[from] InClusterError),
}

/// Where the access comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Kubeconfig,
    ServiceAccount,
}

/// The kubeconfig file wins when it exists; without one, a pod (the service's environment
/// variables are set) uses its service account; elsewhere the kubeconfig is still the
/// source, so that its absence is the error reported.
fn source(kubeconfig_exists: bool, env: &ServiceEnv) -> Source {
    if !kubeconfig_exists && env.in_pod() {
        Source::ServiceAccount
    } else {
        Source::Kubeconfig
    }
}

/// The access `config` points at.
pub fn load(config: &KubeconfigKeychainConfig) -> Result<ApiAccess, AccessError> {
    let env = ServiceEnv::from_process();
    // An unreadable path counts as present: reading it then reports why.
    let exists = config.kubeconfig_path.try_exists().unwrap_or(true);
    match source(exists, &env) {
        Source::Kubeconfig => Ok(kubeconfig::load(&config.kubeconfig_path)?),
        Source::ServiceAccount => Ok(in_cluster::load(&config.service_account_dir, &env)?),
    }
}

/// A short description of where `config`'s access comes from, for the startup log.
pub fn describe(config: &KubeconfigKeychainConfig) -> String {
    let path: &Path = &config.kubeconfig_path;
    match source(path.exists(), &ServiceEnv::from_process()) {
        Source::Kubeconfig => format!("kubeconfig {}", path.display()),
        Source::ServiceAccount => {
            format!("service account {}", config.service_account_dir.display())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::api_access::BearerToken;

    #[test]
    fn kubeconfig_first_then_the_pod_service_account() {
        let pod = ServiceEnv {
            host: Some("10.96.0.1".into()),
            port: Some("443".into()),
        };
        let node = ServiceEnv::default();
        let cases = [
            ("kubeconfig in a pod", true, &pod, Source::Kubeconfig),
            ("kubeconfig on a node", true, &node, Source::Kubeconfig),
            (
                "no kubeconfig in a pod",
                false,
                &pod,
                Source::ServiceAccount,
            ),
            ("no kubeconfig on a node", false, &node, Source::Kubeconfig),
        ];
        for (name, exists, env, want) in cases {
            assert_eq!(source(exists, env), want, "{name}");
        }
    }

    #[test]
    fn token_files_are_read_for_every_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let access = ApiAccess {
            server: "https://api".into(),
            http: reqwest::Client::new(),
            token: Some(BearerToken::File(path.clone())),
        };
        assert_eq!(access.bearer_token().unwrap().as_deref(), Some("first"));
        std::fs::write(&path, "rotated").unwrap();
        assert_eq!(access.bearer_token().unwrap().as_deref(), Some("rotated"));
        assert!(!format!("{access:?}").contains("rotated"));
    }
}
