//! A small blocking client for the OCI distribution API over plain HTTP (tests only).
//!
//! Pushes blobs (monolithic upload) and manifests, fetches manifests and blobs.

use std::time::Duration;

use base64::Engine as _;
use estargz::Digest;

/// Largest body the client reads into memory.
const MAX_BODY: u64 = 4 << 30;

/// Media types accepted when fetching a manifest.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Errors from talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {url}: {source}")]
    Transport {
        method: &'static str,
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("{method} {url}: status {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{method} {url}: answer has no {header} header")]
    MissingHeader {
        method: &'static str,
        url: String,
        header: &'static str,
    },
    #[error("manifest {url}: digest {header} is not a sha256 digest")]
    BadDigest { url: String, header: String },
}

/// Basic-auth credentials for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// A manifest (or index) as served by a registry.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// Blocking client for one registry host (`127.0.0.1:PORT`), plain HTTP.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    host: String,
    auth: Option<String>,
    agent: ureq::Agent,
}

impl RegistryClient {
    pub fn new(host: &str, credentials: Option<&Credentials>) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build();
        Self {
            host: host.to_owned(),
            auth: credentials.map(basic_auth_header),
            agent: config.into(),
        }
    }

    /// Status of `GET /v2/`, or an error when nothing answers.
    pub fn ping(&self) -> Result<u16, HttpError> {
        let url = self.url("/v2/");
        let resp = self
            .authed(self.agent.get(&url))
            .call()
            .map_err(transport("GET", &url))?;
        Ok(resp.status().as_u16())
    }

    /// True when `repo` already has blob `digest`.
    pub fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool, HttpError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .authed(self.agent.head(&url))
            .call()
            .map_err(transport("HEAD", &url))?;
        Ok(resp.status().is_success())
    }

    /// Uploads `bytes` as blob `digest` unless the registry has it already.
    pub fn push_blob(&self, repo: &str, digest: &Digest, bytes: &[u8]) -> Result<(), HttpError> {
        if self.has_blob(repo, digest)? {
            return Ok(());
        }
        let start_url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self
            .authed(self.agent.post(&start_url))
            .send_empty()
            .map_err(transport("POST", &start_url))?;
        let resp = expect_success("POST", &start_url, resp)?;
        let location = header(&resp, "Location").ok_or_else(|| HttpError::MissingHeader {
            method: "POST",
            url: start_url.clone(),
            header: "Location",
        })?;
        let put_url = self.upload_url(&location, digest);
        let resp = self
            .authed(self.agent.put(&put_url))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .map_err(transport("PUT", &put_url))?;
        expect_success("PUT", &put_url, resp)?;
        Ok(())
    }

    /// Stores a manifest or index under `reference` (a tag or a digest).
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), HttpError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let resp = self
            .authed(self.agent.put(&url))
            .header("Content-Type", media_type)
            .send(bytes)
            .map_err(transport("PUT", &url))?;
        expect_success("PUT", &url, resp)?;
        Ok(())
    }

    /// Fetches a manifest or index by tag or digest.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest, HttpError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let resp = self
            .authed(self.agent.get(&url))
            .header("Accept", MANIFEST_ACCEPT)
            .call()
            .map_err(transport("GET", &url))?;
        let mut resp = expect_success("GET", &url, resp)?;
        let media_type = header(&resp, "Content-Type").unwrap_or_default();
        let bytes = read_body("GET", &url, &mut resp)?;
        let digest = match header(&resp, "Docker-Content-Digest") {
            Some(text) => text.parse().map_err(|_| HttpError::BadDigest {
                url: url.clone(),
                header: text,
            })?,
            None => Digest::sha256(&bytes),
        };
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// Fetches a whole blob.
    pub fn get_blob(&self, repo: &str, digest: &Digest) -> Result<Vec<u8>, HttpError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .authed(self.agent.get(&url))
            .call()
            .map_err(transport("GET", &url))?;
        let mut resp = expect_success("GET", &url, resp)?;
        read_body("GET", &url, &mut resp)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    /// The upload location (absolute or relative) with the `digest` query added.
    fn upload_url(&self, location: &str, digest: &Digest) -> String {
        let absolute = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            self.url(location)
        };
        let separator = if absolute.contains('?') { '&' } else { '?' };
        format!("{absolute}{separator}digest={digest}")
    }

    fn authed<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.auth {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }
}

type Response = ureq::http::Response<ureq::Body>;

fn transport(method: &'static str, url: &str) -> impl FnOnce(ureq::Error) -> HttpError {
    let url = url.to_owned();
    move |source| HttpError::Transport {
        method,
        url,
        source: Box::new(source),
    }
}

fn basic_auth_header(credentials: &Credentials) -> String {
    let raw = format!("{}:{}", credentials.user, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn expect_success(
    method: &'static str,
    url: &str,
    mut resp: Response,
) -> Result<Response, HttpError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Err(HttpError::Status {
        method,
        url: url.to_owned(),
        status: resp.status().as_u16(),
        body,
    })
}

fn read_body(method: &'static str, url: &str, resp: &mut Response) -> Result<Vec<u8>, HttpError> {
    resp.body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(transport(method, url))
}
