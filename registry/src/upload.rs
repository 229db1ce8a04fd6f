//! Blob uploads: existence check, optional cross-repository mount, monolithic POST+PUT.
//!
//! `POST /v2/<name>/blobs/uploads/` answers 202 with a `Location` (relative or absolute,
//! maybe with a query of its own); the blob then goes in one `PUT <location>&digest=<d>`.

use std::path::Path;

use bytes::Bytes;
use estargz::Digest;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};

use crate::client::Client;
use crate::error::Error;
use crate::reference::Reference;
use crate::transport::{display_url, pull_scope, push_scope, Body, Call};

/// Errors from turning an upload `Location` header into a URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum LocationError {
    #[error("no Location header")]
    Missing,
    #[error("Location {0:?} is not a valid url")]
    Invalid(String),
}

impl Client {
    /// Uploads the file at `path` (`size` bytes, sha256 `digest`) unless the blob exists.
    pub async fn push_blob_file(
        &self,
        repo: &Reference,
        digest: &Digest,
        path: &Path,
        size: u64,
    ) -> Result<(), Error> {
        check_file_size(path, size).await?;
        let body = || Body::File {
            path: path.to_owned(),
            size,
        };
        self.push_blob(repo, digest, None, body).await
    }

    /// Like `push_blob_file`, but first asks the registry to mount the blob from `source`
    /// (another repository, used only when on the same registry); uploads when it declines.
    pub async fn push_blob_file_or_mount(
        &self,
        repo: &Reference,
        digest: &Digest,
        path: &Path,
        size: u64,
        source: &Reference,
    ) -> Result<(), Error> {
        check_file_size(path, size).await?;
        let body = || Body::File {
            path: path.to_owned(),
            size,
        };
        self.push_blob(repo, digest, Some(source), body).await
    }

    /// Uploads a small in-memory blob (e.g. an image config) unless it exists.
    pub async fn push_blob_bytes(
        &self,
        repo: &Reference,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<(), Error> {
        let actual = Digest::sha256(&bytes);
        if actual != *digest {
            let url = self.repository_url(repo, &format!("blobs/{digest}"))?;
            return Err(Error::DigestMismatch {
                url: display_url(&url),
                expected: *digest,
                actual,
            });
        }
        self.push_blob(repo, digest, None, || Body::Bytes(bytes.clone()))
            .await
    }

    async fn push_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
        mount_source: Option<&Reference>,
        body: impl Fn() -> Body,
    ) -> Result<(), Error> {
        if self.blob_exists(repo, digest).await? {
            tracing::debug!(%digest, repo = %repo.name(), "blob already present, not uploading");
            return Ok(());
        }
        let source =
            mount_source.filter(|s| s.registry == repo.registry && s.repository != repo.repository);
        let location = match source {
            Some(source) => match self.try_mount(repo, digest, source).await? {
                Some(location) => location,
                None => return Ok(()),
            },
            None => self.start_upload(repo).await?,
        };
        self.finish_upload(repo, digest, location, body()).await
    }

    /// `POST uploads/` : the upload session URL.
    async fn start_upload(&self, repo: &Reference) -> Result<Url, Error> {
        let url = self.repository_url(repo, "blobs/uploads/")?;
        let call = Call::new(Method::POST, url, repo, vec![push_scope(repo)]);
        let response = self.send(&call).await?;
        upload_location(&call, &response)
    }

    /// `POST uploads/?mount=&from=`: `None` when mounted (201), else the upload URL (202).
    async fn try_mount(
        &self,
        repo: &Reference,
        digest: &Digest,
        source: &Reference,
    ) -> Result<Option<Url>, Error> {
        let mut url = self.repository_url(repo, "blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", &source.repository);
        let scopes = vec![push_scope(repo), pull_scope(source)];
        let call = Call::new(Method::POST, url, repo, scopes);
        let response = self.send(&call).await?;
        if response.status() == StatusCode::CREATED {
            tracing::debug!(%digest, from = %source.name(), to = %repo.name(), "blob mounted");
            return Ok(None);
        }
        upload_location(&call, &response).map(Some)
    }

    /// `PUT <location>?digest=` with the whole blob.
    async fn finish_upload(
        &self,
        repo: &Reference,
        digest: &Digest,
        location: Url,
        body: Body,
    ) -> Result<(), Error> {
        let url = with_digest_param(location, digest);
        let call = Call::new(Method::PUT, url, repo, vec![push_scope(repo)])
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .streaming();
        self.send(&call).await?;
        tracing::debug!(%digest, repo = %repo.name(), "blob uploaded");
        Ok(())
    }
}

async fn check_file_size(path: &Path, size: u64) -> Result<(), Error> {
    let context = || format!("upload {}", path.display());
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|e| Error::io(context(), e))?;
    if metadata.len() == size {
        return Ok(());
    }
    let problem = format!("file is {} bytes, expected {size}", metadata.len());
    let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, problem);
    Err(Error::io(context(), source))
}

fn upload_location(call: &Call<'_>, response: &Response) -> Result<Url, Error> {
    if response.status() != StatusCode::ACCEPTED {
        return Err(Error::Protocol {
            method: call.method.to_string(),
            url: call.shown_url(),
            problem: format!("status {} where 202 starts an upload", response.status()),
        });
    }
    let header = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok());
    resolve_location(response.url(), header).map_err(|e| Error::Protocol {
        method: call.method.to_string(),
        url: call.shown_url(),
        problem: e.to_string(),
    })
}

/// Resolves a `Location` header against the URL that answered it.
pub(crate) fn resolve_location(base: &Url, location: Option<&str>) -> Result<Url, LocationError> {
    let location = location
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or(LocationError::Missing)?;
    base.join(location)
        .map_err(|_| LocationError::Invalid(location.chars().take(200).collect()))
}

/// Adds `digest=<d>` to a URL, keeping any query it already has.
pub(crate) fn with_digest_param(mut url: Url, digest: &Digest) -> Url {
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolution_table() {
        let base = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/").unwrap();
        let cases = [
            (
                "absolute path",
                Some("/v2/a/b/blobs/uploads/123?_state=xyz"),
                Ok("http://127.0.0.1:5000/v2/a/b/blobs/uploads/123?_state=xyz"),
            ),
            (
                "absolute url other host",
                Some("https://storage.example/up/1?sig=s"),
                Ok("https://storage.example/up/1?sig=s"),
            ),
            (
                "relative segment",
                Some("123"),
                Ok("http://127.0.0.1:5000/v2/a/b/blobs/uploads/123"),
            ),
            ("missing", None, Err(LocationError::Missing)),
            ("blank", Some("  "), Err(LocationError::Missing)),
            (
                "invalid",
                Some("http://[::1"),
                Err(LocationError::Invalid("http://[::1".into())),
            ),
        ];
        for (name, location, expected) in cases {
            let resolved = resolve_location(&base, location).map(|u| u.to_string());
            assert_eq!(resolved, expected.map(str::to_owned), "{name}");
        }
    }

    #[test]
    fn digest_param_keeps_existing_query() {
        let digest = Digest::sha256(b"x");
        let cases = [
            (
                "no query",
                "http://r/u/1",
                format!("http://r/u/1?digest=sha256%3A{}", digest.hex()),
            ),
            (
                "existing query",
                "http://r/u/1?_state=a%2Bb",
                format!("http://r/u/1?_state=a%2Bb&digest=sha256%3A{}", digest.hex()),
            ),
        ];
        for (name, url, expected) in cases {
            let url = with_digest_param(Url::parse(url).unwrap(), &digest);
            assert_eq!(url.to_string(), expected, "{name}");
        }
    }
}
