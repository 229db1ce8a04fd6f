//! TLS: builds the http client of an endpoint (system trust store, per-host CAs, client
//! certificate, verification off) and says in words what a failed handshake was about.
//!
//! Trusted are the built-in Mozilla roots, the system's bundle (`$SSL_CERT_FILE`, else
//! Debian's `/etc/ssl/certs/ca-certificates.crt` or the other usual bundle paths) and the
//! endpoint's own `ca` files. rustls takes one client identity per client: of several
//! client pairs the first is used.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reqwest::{Certificate, Identity};

use crate::config::ClientConfig;
use crate::hosts::TlsSettings;

/// Bundle files of the system trust store, first found wins (Debian first).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Errors building an endpoint's TLS client.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {what} {path} for {host}")]
    Read {
        what: &'static str,
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} for {host} holds no usable PEM certificate")]
    BadCertificate {
        what: &'static str,
        host: String,
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("client certificate {cert} with key {key} for {host} is not a usable PEM pair")]
    BadIdentity {
        host: String,
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("build http client for {host}")]
    Build {
        host: String,
        #[source]
        source: reqwest::Error,
    },
}

/// The system trust store's certificates, read once.
fn system_roots() -> &'static [Certificate] {
    static ROOTS: OnceLock<Vec<Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        let candidates = from_env
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
        for path in candidates {
            let Ok(pem) = std::fs::read(&path) else {
                continue;
            };
            match Certificate::from_pem_bundle(&pem) {
                Ok(roots) => {
                    tracing::debug!(bundle = %path.display(), roots = roots.len(), "system trust store");
                    return roots;
                }
                Err(error) => {
                    tracing::warn!(bundle = %path.display(), %error, "system trust store unreadable")
                }
            }
        }
        Vec::new()
    })
}

/// An http client for `host` with `tls` on top of `config`'s timeouts and user agent.
pub(crate) fn build_client(
    config: &ClientConfig,
    host: &str,
    tls: &TlsSettings,
) -> Result<reqwest::Client, TlsError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.timeout)
        .danger_accept_invalid_certs(tls.skip_verify);
    for root in system_roots() {
        builder = builder.add_root_certificate(root.clone());
    }
    for path in &tls.ca {
        for cert in read_certificates(host, path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = tls.client.first() {
        builder = builder.identity(read_identity(host, cert, key.as_deref())?);
        if tls.client.len() > 1 {
            tracing::warn!(%host, used = %cert.display(), "several client certificates; using the first");
        }
    }
    builder.build().map_err(|source| TlsError::Build {
        host: host.to_owned(),
        source,
    })
}

fn read(what: &'static str, host: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        host: host.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(host: &str, path: &Path) -> Result<Vec<Certificate>, TlsError> {
    let pem = read("CA file", host, path)?;
    Certificate::from_pem_bundle(&pem).map_err(|source| TlsError::BadCertificate {
        what: "CA file",
        host: host.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// A client identity from a certificate file and a key file (or one file holding both).
fn read_identity(host: &str, cert: &Path, key: Option<&Path>) -> Result<Identity, TlsError> {
    let mut pem = read("client certificate", host, cert)?;
    if let Some(key) = key {
        pem.push(b'\n');
        pem.extend(read("client key", host, key)?);
    }
    Identity::from_pem(&pem).map_err(|source| TlsError::BadIdentity {
        host: host.to_owned(),
        cert: cert.to_owned(),
        key: key.unwrap_or(cert).to_owned(),
        source,
    })
}

/// What went wrong in a TLS handshake, in words, when `error` was one.
pub(crate) fn handshake_problem(error: &reqwest::Error) -> Option<String> {
    error.source().and_then(find_rustls).map(describe)
}

/// The rustls error in `error`'s chain; io errors nest (hyper-util wraps hyper-rustls'
/// io error in another), and an io error's `source` skips the error it wraps.
fn find_rustls<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = error.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(found) = find_rustls(inner) {
            return Some(found);
        }
    }
    error.source().and_then(find_rustls)
}

fn describe(error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError};
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "server certificate signed by an unknown authority (trust its CA with `ca` in \
             hosts.toml or the system trust store)"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "server certificate is not valid for this host name".to_owned()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "server certificate has expired".to_owned(),
        rustls::Error::InvalidCertificate(other) => {
            format!("server certificate rejected: {other:?}")
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
        | rustls::Error::AlertReceived(AlertDescription::HandshakeFailure)
        | rustls::Error::AlertReceived(AlertDescription::BadCertificate) => format!(
            "registry refused the handshake ({error}); it may demand a client certificate \
             (`client` in hosts.toml)"
        ),
        other => format!("tls handshake failed: {other}"),
    }
}
