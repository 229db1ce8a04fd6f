//! What talking to the API server takes: its URL, an HTTP client that trusts its CA
//! (and holds a client certificate, if any), and the bearer token to send.

use std::path::PathBuf;

/// The bearer token sent to the API server.
#[derive(Clone, PartialEq, Eq)]
pub enum BearerToken {
    Fixed(String),
    /// Read again for every request: kubelet rotates projected service-account tokens.
    File(PathBuf),
}

/// What talking to the API server takes.
pub struct ApiAccess {
    /// Base URL, e.g. `https://10.0.0.1:6443`.
    pub server: String,
    pub http: reqwest::Client,
    /// Sent as `Authorization: Bearer`; never logged.
    pub token: Option<BearerToken>,
}

impl std::fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ApiAccess {
    /// The token to send now, if any.
    pub fn bearer_token(&self) -> std::io::Result<Option<String>> {
        match &self.token {
            None => Ok(None),
            Some(BearerToken::Fixed(token)) => Ok(Some(token.clone())),
            Some(BearerToken::File(path)) => {
                let text = std::fs::read(path)?;
                Ok(Some(String::from_utf8_lossy(&text).trim().to_owned()))
            }
        }
    }
}
