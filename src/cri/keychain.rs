//! Pull credentials from CRI `PullImage` requests: turns the request's `AuthConfig` into
//! a registry credential for the image's host and stores it in the registry client the
//! lazy layers share, so the Prepares containerd sends for that pull, and every later
//! read of those layers, authenticate the way kubelet did. Credentials live in memory
//! only (the client's store); logs name the host, never a secret.

use base64::Engine as _;
use registry::{Credential, Reference};

use super::message::{AuthConfig, PullImageRequest};

/// Why a `PullImage` request gave no credential to remember.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeychainError {
    #[error("pull request names no image")]
    NoImage,
    #[error("pull request image: {0}")]
    Reference(#[from] registry::ReferenceError),
    #[error("auth for {host}: `auth` is not base64 of user:password")]
    BadAuthField { host: String },
    #[error("auth for {host}: only a registry_token, which is not supported")]
    RegistryTokenOnly { host: String },
}

/// Stores pull credentials in the shared registry client.
#[derive(Clone, Debug)]
pub struct Keychain {
    client: registry::Client,
}

impl Keychain {
    pub fn new(client: registry::Client) -> Keychain {
        Keychain { client }
    }

    /// Remembers the credential of `request` for its image's registry; returns that host,
    /// or None when the request carries no usable auth (an anonymous pull, or auth meant
    /// for another server).
    pub fn remember(&self, request: &PullImageRequest) -> Result<Option<String>, KeychainError> {
        let Some(auth) = &request.auth else {
            return Ok(None);
        };
        let image = request.image.as_ref().ok_or(KeychainError::NoImage)?;
        let reference: Reference = image.image.parse()?;
        let host = reference.registry;
        let Some(credential) = credential_for(auth, &host)? else {
            return Ok(None);
        };
        self.client.set_credential(&host, credential);
        Ok(Some(host))
    }
}

/// The credential `auth` gives for registry `host`, as containerd's CRI plugin reads it:
/// username/password first, then identity token, then the base64 `auth` field. None for
/// an empty config (anonymous) or one whose `server_address` names another host.
pub fn credential_for(auth: &AuthConfig, host: &str) -> Result<Option<Credential>, KeychainError> {
    if !auth.server_address.is_empty() && !same_host(&auth.server_address, host) {
        return Ok(None);
    }
    if !auth.username.is_empty() {
        return Ok(Some(Credential::Basic {
            username: auth.username.clone(),
            password: auth.password.clone(),
        }));
    }
    if !auth.identity_token.is_empty() {
        return Ok(Some(Credential::IdentityToken(auth.identity_token.clone())));
    }
    if !auth.auth.is_empty() {
        return decode_auth(&auth.auth)
            .map(Some)
            .ok_or_else(|| KeychainError::BadAuthField {
                host: host.to_owned(),
            });
    }
    if !auth.registry_token.is_empty() {
        return Err(KeychainError::RegistryTokenOnly {
            host: host.to_owned(),
        });
    }
    Ok(None)
}

/// base64 `user:password`, with or without padding.
fn decode_auth(text: &str) -> Option<Credential> {
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let bytes = engines.iter().find_map(|e| e.decode(text.trim()).ok())?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credential::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// Whether `server_address` (`host[:port]`, or a URL with scheme and path) names `host`.
/// Docker Hub's addresses (`https://index.docker.io/v1/`, ...) name `docker.io`.
fn same_host(server_address: &str, host: &str) -> bool {
    let without_scheme = server_address
        .strip_prefix("https://")
        .or_else(|| server_address.strip_prefix("http://"))
        .unwrap_or(server_address);
    let named = without_scheme.split('/').next().unwrap_or_default();
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    named == host || (hub(named) && hub(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(username: &str, password: &str) -> Credential {
        Credential::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn auth_config_cases() {
        let auth = |f: fn(&mut AuthConfig)| {
            let mut config = AuthConfig::default();
            f(&mut config);
            config
        };
        type Want = Result<Option<Credential>, KeychainError>;
        let cases: Vec<(&str, AuthConfig, &str, Want)> = vec![
            (
                "empty is anonymous",
                AuthConfig::default(),
                "r.io",
                Ok(None),
            ),
            (
                "username and password",
                auth(|a| {
                    a.username = "u".into();
                    a.password = "p".into();
                }),
                "r.io",
                Ok(Some(basic("u", "p"))),
            ),
            (
                "auth field",
                AuthConfig {
                    auth: b64("u:p:q"),
                    ..AuthConfig::default()
                },
                "r.io",
                Ok(Some(basic("u", "p:q"))),
            ),
            (
                "bad auth field",
                auth(|a| a.auth = "%%".into()),
                "r.io",
                Err(KeychainError::BadAuthField {
                    host: "r.io".into(),
                }),
            ),
            (
                "identity token",
                auth(|a| a.identity_token = "refresh".into()),
                "r.io",
                Ok(Some(Credential::IdentityToken("refresh".into()))),
            ),
            (
                "registry token alone",
                auth(|a| a.registry_token = "t".into()),
                "r.io",
                Err(KeychainError::RegistryTokenOnly {
                    host: "r.io".into(),
                }),
            ),
            (
                "server address of another host",
                auth(|a| {
                    a.username = "u".into();
                    a.server_address = "other.io".into();
                }),
                "r.io",
                Ok(None),
            ),
            (
                "server address as url",
                auth(|a| {
                    a.username = "u".into();
                    a.server_address = "https://r.io:5000/v2/".into();
                }),
                "r.io:5000",
                Ok(Some(basic("u", ""))),
            ),
            (
                "docker hub v1 address",
                auth(|a| {
                    a.username = "u".into();
                    a.server_address = "https://index.docker.io/v1/".into();
                }),
                "docker.io",
                Ok(Some(basic("u", ""))),
            ),
        ];
        for (name, auth, host, want) in cases {
            assert_eq!(credential_for(&auth, host), want, "{name}");
        }
    }

    #[test]
    fn remember_stores_for_the_image_host() {
        let client = registry::Client::with_credentials(
            registry::ClientConfig::default(),
            registry::Credentials::new(),
        )
        .unwrap();
        let keychain = Keychain::new(client);
        let request = |image: &str, auth: Option<AuthConfig>| PullImageRequest {
            image: Some(super::super::message::ImageSpec {
                image: image.into(),
            }),
            auth,
        };
        let with_user = Some(AuthConfig {
            username: "u".into(),
            ..AuthConfig::default()
        });
        let cases = [
            ("no auth", request("r.io/app:v1", None), Ok(None)),
            (
                "host with port",
                request("r.io:5000/app:v1", with_user.clone()),
                Ok(Some("r.io:5000".to_owned())),
            ),
            (
                "hub short name",
                request("alpine", with_user.clone()),
                Ok(Some("docker.io".to_owned())),
            ),
            (
                "no image",
                PullImageRequest {
                    image: None,
                    auth: with_user.clone(),
                },
                Err(KeychainError::NoImage),
            ),
        ];
        for (name, request, want) in cases {
            assert_eq!(keychain.remember(&request), want, "{name}");
        }
        assert!(keychain.remember(&request("UPPER/app", with_user)).is_err());
    }
}
