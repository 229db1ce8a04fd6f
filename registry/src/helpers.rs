//! Docker credential helpers: `docker-credential-<name> get`, the server URL on stdin, a
//! JSON answer `{"ServerURL", "Username", "Secret"}` on stdout.
//!
//! Which helper a registry uses is docker's rule: `credHelpers[host]`, else `credsStore`.
//! A username of `<token>` means the secret is an identity token (an OAuth2 refresh
//! token). A helper that answers "credentials not found" (the protocol's fixed text, on
//! stdout, with a failing exit) means anonymous access. A helper that fails or outlives its
//! time is killed and logged with its name and exit status only: its output may hold the
//! secret, so it is never logged.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::credentials::{Credential, DOCKER_HUB_SERVER};
use crate::reference::DOCKER_HUB;

/// The answer text of docker-credential-helpers' `ErrCredentialsNotFound`.
const NOT_FOUND: &str = "credentials not found in native keychain";
/// How much helper output is read at most.
const MAX_OUTPUT: usize = 64 * 1024;

/// Why a helper gave no credential.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("credential helper docker-credential-{helper}: start failed")]
    Start {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper docker-credential-{helper}: no answer within {timeout:?}; killed")]
    Timeout { helper: String, timeout: Duration },
    #[error("credential helper docker-credential-{helper} failed ({status})")]
    Failed { helper: String, status: String },
    #[error("credential helper docker-credential-{helper}: answer is not the expected json")]
    BadAnswer { helper: String },
}

/// The server URL a helper is asked about for `registry`.
pub(crate) fn server_url(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_SERVER
    } else {
        registry
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` for `registry`; Ok(None) means anonymous.
pub(crate) async fn get(
    helper: &str,
    registry: &str,
    timeout: Duration,
) -> Result<Option<Credential>, HelperError> {
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HelperError::Start {
            helper: helper.to_owned(),
            source,
        })?;
    let input = server_url(registry).to_owned();
    let mut stdin = child.stdin.take();
    let run = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A helper that exits without reading its input is judged by its answer.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        drop(stdin);
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(HelperError::Timeout {
                helper: helper.to_owned(),
                timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(HelperError::Start {
                helper: helper.to_owned(),
                source,
            })
        }
        Ok(Ok(output)) => output,
    };
    let stdout = &output.stdout[..output.stdout.len().min(MAX_OUTPUT)];
    if !output.status.success() {
        if String::from_utf8_lossy(stdout).trim() == NOT_FOUND {
            return Ok(None);
        }
        return Err(HelperError::Failed {
            helper: helper.to_owned(),
            status: output.status.to_string(),
        });
    }
    let answer: Answer = serde_json::from_slice(stdout).map_err(|_| HelperError::BadAnswer {
        helper: helper.to_owned(),
    })?;
    Ok(match (answer.username.as_str(), answer.secret) {
        (_, secret) if secret.is_empty() => None,
        ("<token>", secret) => Some(Credential::IdentityToken(secret)),
        (_, secret) => Some(Credential::Basic {
            username: answer.username,
            password: secret,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_asked_about_by_its_v1_url() {
        assert_eq!(server_url(DOCKER_HUB), "https://index.docker.io/v1/");
        assert_eq!(server_url("ghcr.io"), "ghcr.io");
    }
}
