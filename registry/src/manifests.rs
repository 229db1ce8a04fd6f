//! Manifests: fetch (bounded, digest-checked) and push, as bytes plus media type.

use estargz::Digest;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Response};
use serde::Deserialize;

use crate::client::Client;
use crate::error::Error;
use crate::reference::Reference;
use crate::retry::with_retries;
use crate::transport::{pull_scope, push_scope, transport_error, Body, Call};

/// Largest manifest or index accepted, in bytes.
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// Media types sent in `Accept` when fetching manifests, most preferred first.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

const DIGEST_HEADER: &str = "docker-content-digest";

/// A manifest or index as the registry served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    /// From `Content-Type`, else the document's `mediaType` field.
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

impl Client {
    /// Fetches the manifest `reference` names (by digest: verified against it), from a
    /// mirror when one is configured and serves it.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<Manifest, Error> {
        let resolving = reference.digest.is_none();
        self.read_via_hosts(reference, resolving, |source| async move {
            self.get_manifest_at(&source).await
        })
        .await
    }

    async fn get_manifest_at(&self, reference: &Reference) -> Result<Manifest, Error> {
        let path = format!("manifests/{}", reference.manifest_reference());
        let url = self.repository_url(reference, &path)?;
        let call = Call::new(Method::GET, url, reference, vec![pull_scope(reference)])
            .header(ACCEPT, &MANIFEST_MEDIA_TYPES.join(", "));
        let call = &call;
        let retries = self.inner.config.retry_policy();
        with_retries(retries, &call.shown_url(), || async move {
            let response = self.send_authorized(call).await?;
            read_manifest(call, response).await
        })
        .await
    }

    /// Uploads a manifest under `reference`'s tag or digest; returns its digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, Error> {
        let path = format!("manifests/{}", reference.manifest_reference());
        let url = self.repository_url(reference, &path)?;
        let digest = Digest::sha256(bytes);
        let call = Call::new(Method::PUT, url, reference, vec![push_scope(reference)])
            .header(CONTENT_TYPE, media_type)
            .body(Body::Bytes(bytes::Bytes::copy_from_slice(bytes)));
        if let Some(expected) = reference.digest {
            check_digest(&call, expected, digest)?;
        }
        let response = self.send(&call).await?;
        if let Some(announced) = announced_digest(response.headers()) {
            check_digest(&call, digest, announced)?;
        }
        Ok(digest)
    }
}

async fn read_manifest(call: &Call<'_>, response: Response) -> Result<Manifest, Error> {
    let header_type = content_type(response.headers());
    let announced = announced_digest(response.headers());
    let bytes = read_bounded(call, response, MAX_MANIFEST_SIZE).await?;
    let digest = Digest::sha256(&bytes);
    if let Some(expected) = call.target.digest {
        check_digest(call, expected, digest)?;
    }
    if let Some(announced) = announced {
        check_digest(call, announced, digest)?;
    }
    let media_type = choose_media_type(header_type, &bytes).ok_or_else(|| Error::Protocol {
        method: call.method.to_string(),
        url: call.shown_url(),
        problem: "manifest has neither Content-Type nor mediaType".to_owned(),
    })?;
    Ok(Manifest {
        bytes,
        media_type,
        digest,
    })
}

/// Reads a whole body, refusing more than `limit` bytes.
pub(crate) async fn read_bounded(
    call: &Call<'_>,
    mut response: Response,
    limit: u64,
) -> Result<Vec<u8>, Error> {
    let too_large = || Error::Protocol {
        method: call.method.to_string(),
        url: call.shown_url(),
        problem: format!("manifest larger than {limit} bytes"),
    };
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(&call.method, &call.shown_url(), e))?
    {
        let total = u64::try_from(bytes.len() + chunk.len()).unwrap_or(u64::MAX);
        if total > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn check_digest(call: &Call<'_>, expected: Digest, actual: Digest) -> Result<(), Error> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            url: call.shown_url(),
            expected,
            actual,
        })
    }
}

/// `Content-Type` without parameters.
fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    (!essence.is_empty()).then(|| essence.to_owned())
}

/// A specific `Content-Type`, else the document's `mediaType`, else a generic header.
fn choose_media_type(header: Option<String>, bytes: &[u8]) -> Option<String> {
    const GENERIC: &[&str] = &["application/octet-stream", "text/plain", "application/json"];
    match header {
        Some(specific) if !GENERIC.contains(&specific.as_str()) => Some(specific),
        generic => embedded_media_type(bytes).or(generic),
    }
}

/// `Docker-Content-Digest`, when it is a sha256 digest.
fn announced_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DIGEST_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn embedded_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct MediaTypeOnly {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<MediaTypeOnly>(bytes)
        .ok()?
        .media_type
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

    #[test]
    fn media_type_from_header_or_body() {
        let with_type = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#);
        let cases: [(&str, Option<&str>, &str, Option<&str>); 6] = [
            (
                "header with charset",
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
                "{}",
                Some(OCI_MANIFEST),
            ),
            (
                "specific header wins",
                Some(OCI_MANIFEST),
                &with_type,
                Some(OCI_MANIFEST),
            ),
            (
                "generic header, body type",
                Some("application/json"),
                &with_type,
                Some(OCI_INDEX),
            ),
            (
                "generic header, no body type",
                Some("application/json"),
                "{}",
                Some("application/json"),
            ),
            ("no header, body type", None, &with_type, Some(OCI_INDEX)),
            ("nothing", None, "not json", None),
        ];
        for (name, header, body, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(header) = header {
                headers.insert(CONTENT_TYPE, HeaderValue::from_str(header).unwrap());
            }
            let chosen = choose_media_type(content_type(&headers), body.as_bytes());
            assert_eq!(chosen.as_deref(), expected, "{name}");
        }
    }
}
