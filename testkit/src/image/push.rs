//! Pushes an in-memory image or index to a registry over HTTP, blobs first.

use super::build::Artifact;
use crate::http::{HttpError, RegistryClient};

/// Uploads every blob of `artifact`, its child manifests by digest, then its top manifest
/// under `tag` in repository `repo`.
pub fn push_artifact(
    client: &RegistryClient,
    repo: &str,
    tag: &str,
    artifact: &impl Artifact,
) -> Result<(), HttpError> {
    for blob in artifact.blobs() {
        client.push_blob(repo, &blob.digest, &blob.bytes)?;
    }
    for manifest in artifact.child_manifests() {
        let digest = manifest.digest.to_string();
        client.push_manifest(repo, &digest, &manifest.media_type, &manifest.bytes)?;
    }
    let top = artifact.top();
    client.push_manifest(repo, tag, &top.media_type, &top.bytes)
}
