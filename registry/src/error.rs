//! The crate's error type: what went wrong talking to a registry, with method, URL and digest.
//!
//! URLs in messages never carry credentials: queries other than well-known distribution
//! parameters are redacted (see `transport::display_url`).

use std::ops::Range;

use estargz::Digest;

use crate::credentials::CredentialsError;
use crate::hosts::HostsError;
use crate::reference::ReferenceError;
use crate::tls::TlsError;

/// Errors from registry operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),

    #[error(transparent)]
    Credentials(#[from] CredentialsError),

    #[error(transparent)]
    Hosts(#[from] HostsError),

    #[error(transparent)]
    TlsSetup(#[from] TlsError),

    /// A TLS handshake failed: `problem` says what about it.
    #[error("{method} {url}: tls with {host} failed: {problem}")]
    Tls {
        method: String,
        url: String,
        host: String,
        problem: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("invalid url {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },

    #[error("{method} {url}: not found")]
    NotFound { method: String, url: String },

    #[error("{method} {url}: unauthorized by {host} (no or wrong credentials for it)")]
    Unauthorized {
        method: String,
        url: String,
        host: String,
    },

    #[error("{method} {url}: access denied")]
    Denied { method: String, url: String },

    #[error("{method} {url}: range {}..{} of {digest} not satisfiable", range.start, range.end)]
    RangeNotSatisfied {
        method: String,
        url: String,
        digest: Digest,
        range: Range<u64>,
    },

    #[error("{url}: content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "{method} {url}: unexpected status {status}{}",
        registry_message(message)
    )]
    BadResponse {
        method: String,
        url: String,
        status: u16,
        /// The registry's own error text, when it sent one.
        message: String,
        /// The pause a 429 or 503 asked for with `Retry-After`.
        retry_after: Option<std::time::Duration>,
    },

    /// The response had a success status but broke the distribution protocol.
    #[error("{method} {url}: invalid response: {problem}")]
    Protocol {
        method: String,
        url: String,
        problem: String,
    },

    #[error("{method} {url}: timed out")]
    Timeout {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{method} {url}: connect failed")]
    Connect {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// Any other transport failure (reset connection, broken body stream, bad TLS).
    #[error("{method} {url}: transfer failed")]
    Transfer {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn registry_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl Error {
    /// Whether a retry of the same idempotent request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Connect { .. } | Error::Transfer { .. } => true,
            Error::BadResponse { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The pause the registry asked for before a retry (`Retry-After` on 429 or 503).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::BadResponse { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True for a missing manifest, blob or repository.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
