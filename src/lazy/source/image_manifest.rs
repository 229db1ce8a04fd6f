//! Where a layer sits in its image: the image manifest holding it and its index there,
//! for the access recorder and the SOCI / learned-prefetch look-ups.
//!
//! One pull prepares its layers one after another, and each Prepare asks for the same
//! manifest (by tag, then by digest for the index look-up). [`ImageManifests`] remembers
//! what it fetched for a short while, so a pull costs the registry one manifest round
//! trip instead of one per layer and look-up: on a 20 ms link that is tens of
//! milliseconds off every Prepare. A tag remembered from a pull that has since moved
//! cannot mislead: a layer not found in the remembered manifest is looked up afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use estargz::Digest;
use registry::{Client, Reference};
use serde_json::Value;

use super::BlobLocation;
use crate::snapshot::Labels;

/// CRI plugin / nerdctl: the digest of the image manifest the layer belongs to.
pub const CRI_MANIFEST_DIGEST_LABEL: &str = "containerd.io/snapshot/cri.manifest-digest";
/// Children of an image index looked at to find the layer's manifest.
const MAX_INDEX_CHILDREN: usize = 32;
/// How long a manifest fetched by tag is used again: the Prepares of one pull.
const TAG_FRESH_FOR: Duration = Duration::from_secs(30);
/// Manifests remembered at most (all are forgotten when full: a memo, not a cache).
const MAX_REMEMBERED: usize = 256;

/// Why a layer's place in its image could not be found.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("fetch manifest {reference}: {source}")]
    Manifest {
        reference: String,
        source: registry::Error,
    },
    #[error("manifest {digest} is not JSON: {source}")]
    Json {
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("layer {layer} is in none of the manifests of {reference}")]
    NotFound { layer: Digest, reference: String },
    #[error("label {CRI_MANIFEST_DIGEST_LABEL}: {0}")]
    BadLabel(estargz::DigestError),
}

/// Where a layer sits in the image being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerPlace {
    pub manifest: Digest,
    pub layer_index: usize,
}

/// A manifest as fetched: its digest and parsed JSON.
pub type FetchedManifest = (Digest, Arc<Value>);

/// Manifests fetched recently, by the reference they were asked for.
#[derive(Default)]
pub struct ImageManifests {
    fetched: Mutex<HashMap<String, (Instant, FetchedManifest)>>,
    /// One fetch per reference at a time: the layers of one pull (their Prepares, the
    /// layers opened ahead, the look-ups) ask at once, and each GET of a manifest counts
    /// toward a registry's pull rate limit (Docker Hub's does).
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ImageManifests {
    /// Finds the manifest holding `location`'s layer (the CRI manifest-digest label when
    /// present, else the image reference, looking into an index's children) and the
    /// layer's index in it.
    pub async fn locate(
        &self,
        client: &Client,
        location: &BlobLocation,
        labels: &Labels,
    ) -> Result<LayerPlace, PlaceError> {
        let reference = match labels.get(CRI_MANIFEST_DIGEST_LABEL) {
            Some(value) => {
                let digest = value.parse().map_err(PlaceError::BadLabel)?;
                location.reference.with_digest(digest)
            }
            None => location.reference.clone(),
        };
        match self.search(client, &reference, location, true).await? {
            Some(place) => Ok(place),
            // A remembered tag may have moved since: ask once more.
            None if reference.digest.is_none() => self
                .search(client, &reference, location, false)
                .await?
                .ok_or_else(|| not_found(location, &reference)),
            None => Err(not_found(location, &reference)),
        }
    }

    /// The manifest `reference` names, remembered ones included (by digest always, by
    /// tag for a short while).
    pub async fn get(
        &self,
        client: &Client,
        reference: &Reference,
    ) -> Result<FetchedManifest, PlaceError> {
        self.fetch(client, reference, true).await
    }

    async fn search(
        &self,
        client: &Client,
        reference: &Reference,
        location: &BlobLocation,
        remembered: bool,
    ) -> Result<Option<LayerPlace>, PlaceError> {
        let (digest, json) = self.fetch(client, reference, remembered).await?;
        if let Some(layer_index) = layer_index(&json, &location.digest) {
            return Ok(Some(LayerPlace {
                manifest: digest,
                layer_index,
            }));
        }
        let children = json["manifests"].as_array().cloned().unwrap_or_default();
        for child in children.iter().take(MAX_INDEX_CHILDREN) {
            let Some(child) = child["digest"].as_str().and_then(|d| d.parse().ok()) else {
                continue;
            };
            let (digest, json) = self.get(client, &reference.with_digest(child)).await?;
            if let Some(layer_index) = layer_index(&json, &location.digest) {
                return Ok(Some(LayerPlace {
                    manifest: digest,
                    layer_index,
                }));
            }
        }
        Ok(None)
    }

    async fn fetch(
        &self,
        client: &Client,
        reference: &Reference,
        remembered: bool,
    ) -> Result<FetchedManifest, PlaceError> {
        let key = reference.to_string();
        let by_digest = reference.digest.is_some();
        if remembered {
            if let Some(found) = self.recall(&key, by_digest) {
                return Ok(found);
            }
        }
        let asked = Instant::now();
        let turn = {
            let mut fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
            fetching.entry(key.clone()).or_default().clone()
        };
        let _turn = turn.lock().await;
        // A fetch that ended while this one waited: remembered, or fresh enough when a
        // fresh one was asked for.
        let found = match remembered {
            true => self.recall(&key, by_digest),
            false => self.recall_since(&key, asked),
        };
        if let Some(found) = found {
            return Ok(found);
        }
        let fetched = self.fetch_now(client, reference, &key).await;
        let mut fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        fetching.remove(&key);
        fetched
    }

    async fn fetch_now(
        &self,
        client: &Client,
        reference: &Reference,
        key: &str,
    ) -> Result<FetchedManifest, PlaceError> {
        let manifest =
            client
                .get_manifest(reference)
                .await
                .map_err(|source| PlaceError::Manifest {
                    reference: key.to_owned(),
                    source,
                })?;
        let json: Value =
            serde_json::from_slice(&manifest.bytes).map_err(|source| PlaceError::Json {
                digest: manifest.digest,
                source,
            })?;
        let fetched = (manifest.digest, Arc::new(json));
        let by_digest = reference.with_digest(manifest.digest).to_string();
        let mut memo = self.lock();
        if memo.len() >= MAX_REMEMBERED {
            memo.clear();
        }
        let now = Instant::now();
        memo.insert(key.to_owned(), (now, fetched.clone()));
        memo.insert(by_digest, (now, fetched.clone()));
        Ok(fetched)
    }

    /// The manifest remembered for `key` if it was fetched at or after `since`.
    fn recall_since(&self, key: &str, since: Instant) -> Option<FetchedManifest> {
        let memo = self.lock();
        let (at, found) = memo.get(key)?;
        (*at >= since).then(|| found.clone())
    }

    fn recall(&self, key: &str, by_digest: bool) -> Option<FetchedManifest> {
        let memo = self.lock();
        let (at, found) = memo.get(key)?;
        (by_digest || at.elapsed() < TAG_FRESH_FOR).then(|| found.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, FetchedManifest)>> {
        self.fetched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn not_found(location: &BlobLocation, reference: &Reference) -> PlaceError {
    PlaceError::NotFound {
        layer: location.digest,
        reference: reference.to_string(),
    }
}

fn layer_index(manifest: &Value, layer: &Digest) -> Option<usize> {
    let wanted = layer.to_string();
    manifest["layers"]
        .as_array()?
        .iter()
        .position(|l| l["digest"].as_str() == Some(wanted.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_layer_index() {
        let d = |n: u8| Digest::from_bytes([n; 32]);
        let manifest = serde_json::json!({
            "layers": [{"digest": d(1).to_string()}, {"digest": d(2).to_string()}]
        });
        let cases = [
            ("first", d(1), Some(0)),
            ("second", d(2), Some(1)),
            ("absent", d(3), None),
        ];
        for (name, layer, want) in cases {
            assert_eq!(layer_index(&manifest, &layer), want, "{name}");
        }
        assert_eq!(
            layer_index(&serde_json::json!({"manifests": []}), &d(1)),
            None
        );
    }

    #[test]
    fn remembers_digests_always_and_tags_briefly() {
        let manifests = ImageManifests::default();
        let fetched = (Digest::sha256(b"m"), Arc::new(serde_json::json!({})));
        let long_ago = Instant::now()
            .checked_sub(TAG_FRESH_FOR * 2)
            .expect("clock far enough from boot");
        manifests
            .lock()
            .insert("r/x:tag".into(), (long_ago, fetched.clone()));
        manifests
            .lock()
            .insert("r/x@sha256:aa".into(), (long_ago, fetched.clone()));
        assert!(manifests.recall("r/x:tag", false).is_none(), "stale tag");
        assert!(manifests.recall("r/x@sha256:aa", true).is_some());
        manifests
            .lock()
            .insert("r/x:tag".into(), (Instant::now(), fetched));
        assert!(manifests.recall("r/x:tag", false).is_some(), "fresh tag");
    }
}
