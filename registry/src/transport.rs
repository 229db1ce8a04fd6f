//! Sending one registry request: URL building, auth, retries, status-to-error mapping, and
//! credential-free URLs for logs and errors.
//!
//! Redirects (e.g. 307 to object storage) are followed by reqwest, which drops
//! `Authorization` when the scheme-less host or the port changes; tests/fake_server.rs
//! checks that the storage host never sees the registry's credentials.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;

use crate::challenge::parse_challenges;
use crate::client::Client;
use crate::error::Error;
use crate::hosts::{Endpoint, HostsError, TlsSettings};
use crate::reference::Reference;
use crate::retry::{parse_retry_after, with_retries};
use crate::tls::handshake_problem;

/// Query parameters that are safe to show; any other query value is redacted.
const SHOWN_QUERY_KEYS: &[&str] = &["digest", "mount", "from", "service", "scope", "n", "last"];
/// How much of an error body is read for its message.
const ERROR_BODY_LIMIT: usize = 4096;

/// A request body that can be produced again for a retry after a 401.
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    /// A file streamed from disk, `size` bytes long.
    File {
        path: PathBuf,
        size: u64,
    },
}

/// Everything needed to send (and re-send) one registry request.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
    /// The repository whose registry authorizes the request.
    pub(crate) target: &'a Reference,
    /// Token scopes, e.g. `repository:app:pull`.
    pub(crate) scopes: Vec<String>,
    /// Large bodies: no whole-request timeout, only the client's read timeout.
    pub(crate) streaming: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn new(
        method: Method,
        url: Url,
        target: &'a Reference,
        scopes: Vec<String>,
    ) -> Self {
        Call {
            method,
            url,
            headers: HeaderMap::new(),
            body: Body::Empty,
            target,
            scopes,
            streaming: false,
        }
    }

    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.insert(name, value);
        }
        self
    }

    pub(crate) fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    pub(crate) fn streaming(mut self) -> Self {
        self.streaming = true;
        self
    }

    fn is_idempotent(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }

    pub(crate) fn shown_url(&self) -> String {
        display_url(&self.url)
    }
}

/// `repository:<name>:pull`
pub(crate) fn pull_scope(repo: &Reference) -> String {
    format!("repository:{}:pull", repo.repository)
}

/// `repository:<name>:pull,push`
pub(crate) fn push_scope(repo: &Reference) -> String {
    format!("repository:{}:pull,push", repo.repository)
}

impl Client {
    /// `<scheme>://<endpoint host><api path>/<repository>/<rest>`, the endpoint being the
    /// one `repo.registry` names (a mirror's host), else the registry's server.
    pub(crate) fn repository_url(&self, repo: &Reference, rest: &str) -> Result<Url, Error> {
        let endpoint = self.endpoint_of(repo)?;
        let text = format!(
            "{}://{}{}/{}/{rest}",
            endpoint.scheme.as_str(),
            endpoint.host,
            endpoint.path.trim_end_matches('/'),
            repo.repository
        );
        Url::parse(&text).map_err(|source| Error::InvalidUrl {
            url: text.clone(),
            source,
        })
    }

    /// The endpoint requests for `repo` go to.
    pub(crate) fn endpoint_of(&self, repo: &Reference) -> Result<Arc<Endpoint>, Error> {
        if let Some(endpoint) = self.inner.endpoints.by_host(repo.api_host()) {
            return Ok(endpoint);
        }
        let endpoints = self
            .inner
            .endpoints
            .resolve(&self.inner.config, &repo.registry)?;
        match endpoints.last() {
            Some(server) => Ok(server.clone()),
            None => Err(Error::Hosts(HostsError::NoEndpoint {
                registry: repo.registry.clone(),
            })),
        }
    }

    /// The http client for `url`'s host: its endpoint's TLS settings, else the
    /// `insecure_tls` list's (token realms and redirect targets are not endpoints).
    pub(crate) fn http_for(&self, url: &Url) -> Result<reqwest::Client, Error> {
        let host = host_port(url);
        let config = &self.inner.config;
        let tls = match self.inner.endpoints.by_host(&host) {
            Some(endpoint) => endpoint.tls.clone(),
            None => TlsSettings {
                skip_verify: config.skips_tls_verify(&host),
                ..TlsSettings::default()
            },
        };
        self.inner.endpoints.client(config, &host, &tls)
    }

    /// Sends `call`, retrying GET/HEAD on transient failures. Non-2xx statuses are errors.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Response, Error> {
        let policy = self.inner.config.retry_policy();
        let policy = if call.is_idempotent() {
            policy
        } else {
            policy.no_retries()
        };
        with_retries(policy, &call.shown_url(), || self.send_authorized(call)).await
    }

    /// Sends `call`, answering one 401 challenge; when the registry still refuses (401 or
    /// 403) and a fresher credential turned up (see `refresh.rs`), sends it once more with
    /// that one. Non-2xx statuses are errors.
    pub(crate) async fn send_authorized(&self, call: &Call<'_>) -> Result<Response, Error> {
        self.ensure_credential(&call.target.registry).await;
        let used = self.credential_for(&call.target.registry);
        match self.send_answering_challenge(call).await {
            Err(refused @ (Error::Unauthorized { .. } | Error::Denied { .. })) => {
                let host = &call.target.registry;
                if !self.refresh_credential(host, used.as_ref()).await {
                    return Err(refused);
                }
                tracing::info!(%host, url = %call.shown_url(), "credential refused; retrying with a fresher one");
                self.send_answering_challenge(call).await
            }
            other => other,
        }
    }

    /// Sends `call` once, answering one 401 challenge. Non-2xx statuses are errors.
    async fn send_answering_challenge(&self, call: &Call<'_>) -> Result<Response, Error> {
        let cached = self.cached_authorization(call.target, &call.scopes).await?;
        let response = self.send_once(call, cached.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return check_status(call, response).await;
        }
        let challenges: Vec<_> = response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let fresh = self
            .answer_challenge(call, challenges, cached.as_ref())
            .await?;
        if cached.as_ref() == Some(&fresh) {
            return Err(unauthorized(call));
        }
        let response = self.send_once(call, Some(&fresh)).await?;
        check_status(call, response).await
    }

    async fn send_once(
        &self,
        call: &Call<'_>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response, Error> {
        let mut request = self
            .http_for(&call.url)?
            .request(call.method.clone(), call.url.clone());
        let url_host = host_port(&call.url);
        if let Some(endpoint) = self.inner.endpoints.by_host(&url_host) {
            for (name, value) in &endpoint.headers {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        request = request.headers(call.headers.clone());
        // An absolute upload Location may point elsewhere: registry secrets stay home.
        let same_host = url_host == call.target.api_host();
        if let Some(value) = authorization.filter(|_| same_host) {
            request = request.header(AUTHORIZATION, value.clone());
        }
        if !call.streaming {
            request = request.timeout(self.inner.config.timeout);
        }
        request = match &call.body {
            Body::Empty => request,
            Body::Bytes(bytes) => request.body(bytes.clone()),
            Body::File { path, size } => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| Error::io(format!("open {} for upload", path.display()), e))?;
                request.header(CONTENT_LENGTH, *size).body(file)
            }
        };
        let result = request.send().await;
        let response = result.map_err(|e| transport_error(&call.method, &call.shown_url(), e))?;
        tracing::debug!(
            method = %call.method,
            url = %call.shown_url(),
            status = response.status().as_u16(),
            bytes = response.content_length(),
            "registry request"
        );
        Ok(response)
    }
}

/// Maps a reqwest failure to Tls, Timeout, Connect or Transfer.
pub(crate) fn transport_error(method: &Method, url: &str, source: reqwest::Error) -> Error {
    let (method, url) = (method.to_string(), url.to_owned());
    if let Some(problem) = handshake_problem(&source) {
        let host = Url::parse(&url).map(|u| host_port(&u)).unwrap_or_default();
        tracing::warn!(%host, %problem, "tls handshake failed");
        return Error::Tls {
            method,
            url,
            host,
            problem,
            source,
        };
    }
    if source.is_timeout() {
        Error::Timeout {
            method,
            url,
            source,
        }
    } else if source.is_connect() {
        Error::Connect {
            method,
            url,
            source,
        }
    } else {
        Error::Transfer {
            method,
            url,
            source,
        }
    }
}

pub(crate) fn unauthorized(call: &Call<'_>) -> Error {
    Error::Unauthorized {
        method: call.method.to_string(),
        url: call.shown_url(),
        host: call.target.registry.clone(),
    }
}

/// Passes 2xx responses through and turns every other status into an error.
async fn check_status(call: &Call<'_>, response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let (method, url) = (call.method.to_string(), call.shown_url());
    let retry_after = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            parse_retry_after(response.headers())
        }
        _ => None,
    };
    Err(match status {
        StatusCode::NOT_FOUND => Error::NotFound { method, url },
        StatusCode::UNAUTHORIZED => unauthorized(call),
        StatusCode::FORBIDDEN => Error::Denied { method, url },
        _ => Error::BadResponse {
            method,
            url,
            status: status.as_u16(),
            message: error_message(response).await,
            retry_after,
        },
    })
}

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The registry's error text from the first few KiB of the body, if any.
async fn error_message(mut response: Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_LIMIT);
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(&body) {
        let parts: Vec<String> = parsed
            .errors
            .iter()
            .map(|e| format!("{} {}", e.code, e.message).trim().to_owned())
            .collect();
        return parts.join("; ");
    }
    let text = String::from_utf8_lossy(&body);
    text.trim().chars().take(200).collect()
}

/// `host[:port]` of a URL, as used in config host lists.
pub(crate) fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// A URL safe to log: no user info, and query values other than known parameters redacted
/// (object-storage redirects carry signatures in their query).
pub(crate) fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if SHOWN_QUERY_KEYS.contains(&key.as_ref()) {
                    value.into_owned()
                } else {
                    "redacted".to_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_hides_secrets() {
        let cases = [
            (
                "plain",
                "https://r.io/v2/a/blobs/x",
                "https://r.io/v2/a/blobs/x",
            ),
            (
                "signed query",
                "https://s3.io/b?X-Amz-Signature=secret&digest=sha256%3A00",
                "https://s3.io/b?X-Amz-Signature=redacted&digest=sha256%3A00",
            ),
            ("userinfo", "https://u:p@r.io/v2/", "https://r.io/v2/"),
            (
                "upload state",
                "http://r.io/v2/a/blobs/uploads/1?_state=abc&digest=d",
                "http://r.io/v2/a/blobs/uploads/1?_state=redacted&digest=d",
            ),
        ];
        for (name, input, expected) in cases {
            let url = Url::parse(input).unwrap();
            assert_eq!(display_url(&url), expected, "{name}");
        }
    }

    #[test]
    fn scheme_and_tls_client_follow_the_host_lists() {
        let config = crate::ClientConfig {
            plain_http: vec!["reg.local:5000".to_owned()],
            insecure_tls: vec!["self-signed.io".to_owned()],
            hosts_dirs: Some(Vec::new()),
            ..Default::default()
        };
        let client = Client::with_credentials(config, crate::Credentials::new()).unwrap();
        let url = |r: &str| {
            let reference: Reference = r.parse().unwrap();
            client.repository_url(&reference, "blobs/uploads/").unwrap()
        };
        let cases = [
            (
                "listed plain",
                "reg.local:5000/a",
                "http://reg.local:5000/v2/a/blobs/uploads/",
            ),
            (
                "other port",
                "reg.local:5001/a",
                "https://reg.local:5001/v2/a/blobs/uploads/",
            ),
            (
                "loopback is plain by default",
                "127.0.0.1:5001/a",
                "http://127.0.0.1:5001/v2/a/blobs/uploads/",
            ),
            (
                "localhost is plain by default",
                "localhost/a",
                "http://localhost/v2/a/blobs/uploads/",
            ),
            (
                "hub api host",
                "alpine",
                "https://registry-1.docker.io/v2/library/alpine/blobs/uploads/",
            ),
        ];
        for (name, reference, expected) in cases {
            assert_eq!(url(reference).as_str(), expected, "{name}");
        }
        let insecure = client
            .endpoint_of(&"self-signed.io/a".parse().unwrap())
            .unwrap();
        assert!(insecure.tls.skip_verify, "insecure host skips verification");
        let strict = client.endpoint_of(&"ghcr.io/a".parse().unwrap()).unwrap();
        assert!(!strict.tls.skip_verify, "other hosts verify TLS");
    }

    #[test]
    fn host_port_keeps_explicit_port() {
        let url = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert_eq!(host_port(&url), "127.0.0.1:5000");
        let url = Url::parse("https://r.io/v2/").unwrap();
        assert_eq!(host_port(&url), "r.io");
    }
}
