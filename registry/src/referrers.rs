//! Referrers (OCI distribution 1.1): artifacts whose manifest names another manifest as
//! its `subject`. Read through the referrers API; where a registry lacks it, clients keep
//! a referrers index under the tag `sha256-<hex of the subject digest>` (the tag schema).

use estargz::Digest;
use reqwest::header::ACCEPT;
use reqwest::Method;

use crate::client::Client;
use crate::error::Error;
use crate::manifests::{read_bounded, MAX_MANIFEST_SIZE};
use crate::reference::{Reference, ReferenceError};
use crate::transport::{pull_scope, Call};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The tag under which the referrers tag schema keeps `subject`'s referrers index.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// `repo` with the referrers tag of `subject`.
pub fn referrers_tag_reference(
    repo: &Reference,
    subject: &Digest,
) -> Result<Reference, ReferenceError> {
    repo.with_tag(&referrers_tag(subject))
}

impl Client {
    /// The referrers index of `subject` from the referrers API (`GET
    /// /v2/<name>/referrers/<digest>`, optionally filtered by `artifact_type`).
    /// `Ok(None)` when the registry has no referrers API (it answers 404).
    pub async fn referrers_api(
        &self,
        repo: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut path = format!("referrers/{subject}");
        if let Some(kind) = artifact_type {
            path.push_str("?artifactType=");
            path.push_str(&kind.replace('+', "%2B"));
        }
        let url = self.repository_url(repo, &path)?;
        let call =
            Call::new(Method::GET, url, repo, vec![pull_scope(repo)]).header(ACCEPT, OCI_INDEX);
        match self.send(&call).await {
            Ok(response) => Ok(Some(
                read_bounded(&call, response, MAX_MANIFEST_SIZE).await?,
            )),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }
}
