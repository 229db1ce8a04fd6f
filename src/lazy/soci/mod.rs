//! Lazy pulling of unconverted gzip layers through a SOCI index found beside the image.
//!
//! For a layer without eStargz labels, [`SociIndexes::open`] finds the image manifest,
//! then its SOCI index: v1 through the referrers API or the referrers tag schema
//! (`sha256-<hex>`), v2 through the manifest's `com.amazon.soci.index-digest`
//! annotation. The look-up is done once per image and remembered (also "no index"), so an
//! image without one pays one extra request before its normal pull. The zTOC bound to the
//! layer digest becomes a [`SociLayer`]: the path tree from its file table, reads served
//! from verified, inflated spans that come through the daemon's cache and shared link.
//! A prefetch artifact bound to the layer (soci 0.13's format, e.g. learned by
//! `estargz-convert index --record-from`) lists spans to fetch at mount, before the
//! layer is reported ready. After the mount, [`check_whole_blob`] checks the index
//! against the whole layer from the bytes background fetching brings into the cache.

pub mod ahead;
mod apart_fetch;
mod beside;
mod blob_check;
mod block_fetch;
mod feeding;
mod learned_fetch;
mod prefetch_plan;
mod prefix;
mod prefix_error;
mod soci_layer;
mod soci_prefetch;
mod span_fetch;
mod tar_window;
mod verify;
mod window_fetch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use estargz::soci::blocks::MAX_BLOCKS_SIZE;
use estargz::soci::filelist::{FileList, FILE_LIST_MEDIA_TYPE, MAX_FILE_LIST_SIZE};
use estargz::soci::learned::MAX_LEARNED_SIZE;
use estargz::soci::lite::MAX_LITE_SIZE;
use estargz::soci::prefetch::{MAX_PREFETCH_SIZE, PREFETCH_MEDIA_TYPE};
use estargz::soci::{
    from_lite, index_of, media, Zinfo, Ztoc, BLOCKS_MEDIA_TYPE, LEARNED_MEDIA_TYPE,
    LITE_MEDIA_TYPE, WINDOWS_MEDIA_TYPE,
};
use estargz::Digest;
use registry::{referrers_tag_reference, Client, Reference};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::lazy::cache::ChunkCache;
use crate::lazy::layer::Layer;
use crate::lazy::producers::prefetch::{self, PrefetchOutcome};
use crate::lazy::source::image_manifest::{ImageManifests, PlaceError};
use crate::lazy::source::BlobLocation;
use crate::snapshot::Labels;
use beside::{learned_ranges, prefetch_spans, small_blob, span_blocks};
use window_fetch::WindowsBlob;

pub use blob_check::{check_whole_blob, spawn_check, CheckPacing};
pub use prefetch_plan::PrefetchPlan;
pub use soci_layer::SociLayer;

/// Largest zTOC accepted (checkpoint windows are 32 KiB each: 64 MiB is ~2000 spans).
const MAX_ZTOC_SIZE: u64 = 64 << 20;
/// Images whose look-up result is remembered.
const MAX_REMEMBERED: usize = 1024;

/// Why a layer could not be served through a SOCI index.
#[derive(Debug, thiserror::Error)]
pub enum SociError {
    #[error("soci index lookup for {manifest}: {source}")]
    Registry {
        manifest: Digest,
        source: Box<registry::Error>,
    },
    #[error("soci index lookup: {0}")]
    Manifest(Box<PlaceError>),
    #[error("soci index {index}: {problem}")]
    Index { index: Digest, problem: String },
    #[error("ztoc {ztoc} of layer {layer}: {problem}")]
    Ztoc {
        ztoc: Digest,
        layer: Digest,
        problem: String,
    },
}

/// The zTOCs one image's SOCI index lists: layer digest -> (zTOC digest, size).
#[derive(Debug, Default)]
struct ImageIndex {
    ztocs: HashMap<Digest, (Digest, u64)>,
    /// Prefetch artifacts: layer digest -> (artifact digest, size).
    prefetches: HashMap<Digest, (Digest, u64)>,
    /// Learned file lists of eStargz layers: layer digest -> (list digest, size).
    file_lists: HashMap<Digest, (Digest, u64)>,
    /// Span blocks beside the zTOCs (ours): layer digest -> (blob digest, size).
    blocks: HashMap<Digest, (Digest, u64)>,
    /// Windows of the blocks' resume points (ours): layer digest -> (blob digest, size).
    windows: HashMap<Digest, (Digest, u64)>,
    /// Lite zTOCs (ours, fetched instead of the zTOC): layer digest -> (blob digest, size).
    lites: HashMap<Digest, (Digest, u64)>,
    /// Learned ranges (ours): layer digest -> (blob digest, size).
    learned: HashMap<Digest, (Digest, u64)>,
    /// Sizes of the image's layers from its manifest (a zTOC must agree).
    layer_sizes: HashMap<Digest, u64>,
}

/// One image's look-up, done once: its index, or `None` when it has none.
type LookUp = OnceCell<Option<Arc<ImageIndex>>>;

/// Remembered look-ups, per image manifest.
#[derive(Default)]
pub struct SociIndexes {
    images: Mutex<HashMap<Digest, Arc<LookUp>>>,
    /// Image manifests, asked for once per pull rather than once per layer.
    pub manifests: ImageManifests,
}

impl From<PlaceError> for SociError {
    fn from(error: PlaceError) -> Self {
        SociError::Manifest(Box::new(error))
    }
}

impl SociIndexes {
    /// The layer served through its image's SOCI index; `Ok(None)` when the image has no
    /// index or the index does not list this layer.
    pub async fn open(
        &self,
        client: &Client,
        cache: &Arc<ChunkCache>,
        location: &BlobLocation,
        labels: &Labels,
        readahead: Option<(u64, u64)>,
    ) -> Result<Option<SociLayer>, SociError> {
        let Some(image) = self.image_index(client, location, labels).await? else {
            return Ok(None);
        };
        let repo = &location.reference;
        let Some(&(ztoc_digest, ztoc_size)) = image.ztocs.get(&location.digest) else {
            tracing::info!(layer = %location.digest, "soci index does not list this layer");
            return Ok(None);
        };
        let bad = |problem: String| SociError::Ztoc {
            ztoc: ztoc_digest,
            layer: location.digest,
            problem,
        };
        if ztoc_size > MAX_ZTOC_SIZE {
            return Err(bad(format!("{ztoc_size} bytes, over the limit")));
        }
        let layer = &location.digest;
        let beside = |blobs: &HashMap<Digest, (Digest, u64)>, max: u64, what: &'static str| {
            let blob = blobs.get(layer).copied();
            async move { small_blob(client, location, blob?, max, what).await }
        };
        // The zTOC (its lite form when the index has one) and the blobs beside it in
        // parallel: one round trip at mount, not three.
        let lite = beside(&image.lites, MAX_LITE_SIZE, "soci lite ztoc");
        let ztoc = async {
            if let Some(bytes) = lite.await {
                match from_lite(&bytes) {
                    Ok(ztoc) => return Ok(ztoc),
                    Err(error) => tracing::warn!(%layer, %error, "soci lite ztoc ignored"),
                }
            }
            let mut bytes = Vec::new();
            client
                .download_blob(repo, &ztoc_digest, &mut bytes)
                .await
                .map_err(|e| bad(e.to_string()))?;
            Ztoc::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
        };
        let (ztoc, prefetch_bytes, blocks_bytes, learned_bytes) = tokio::join!(
            ztoc,
            beside(
                &image.prefetches,
                MAX_PREFETCH_SIZE,
                "soci prefetch artifact"
            ),
            beside(&image.blocks, MAX_BLOCKS_SIZE, "soci span blocks"),
            beside(&image.learned, MAX_LEARNED_SIZE, "soci learned ranges"),
        );
        let ztoc = ztoc?;
        // An index built for another blob cannot describe this one.
        if let Some(&size) = image.layer_sizes.get(&location.digest) {
            if size != ztoc.compressed_archive_size {
                return Err(bad(format!(
                    "describes a {}-byte blob, the layer has {size}",
                    ztoc.compressed_archive_size
                )));
            }
        }
        let zinfo = Zinfo::new(&ztoc).map_err(|e| bad(e.to_string()))?;
        let index = index_of(&ztoc).map_err(|e| bad(e.to_string()))?;
        let mut prefetch = prefetch_bytes
            .map(|b| prefetch_spans(location, &b, &zinfo))
            .unwrap_or_default();
        let windows = (image.windows.get(&location.digest))
            .map(|&(digest, size)| WindowsBlob::new(digest, size));
        let blocks = blocks_bytes.and_then(|b| span_blocks(location, &b, &zinfo));
        if let (Some(bytes), Some(blocks)) = (learned_bytes, &blocks) {
            prefetch.learned = learned_ranges(location, &bytes, &zinfo, blocks);
        }
        let blocks = blocks.map(|b| (b, windows));
        tracing::info!(
            layer = %location.digest, ztoc = %ztoc_digest, spans = zinfo.span_count(),
            prefetch_spans = prefetch.spans.len(), prefetch_ranges = prefetch.ranges.len(),
            learned_ranges = prefetch.learned.len(), span_blocks = blocks.is_some(),
            "serving layer through its soci index"
        );
        let source = span_fetch::SpanSource {
            client: client.clone(),
            location: location.clone(),
            cache: cache.clone(),
            zinfo,
        };
        Ok(Some(SociLayer::new(
            source,
            (ztoc_digest, ztoc.files),
            index,
            prefetch,
            blocks,
            readahead,
        )))
    }
}

impl SociIndexes {
    /// Starts the look-up of `location`'s image index, so that it runs while the layer's
    /// TOC is fetched instead of after it (an eStargz layer without prioritized files
    /// asks for its learned files once its TOC is read: the answer is then at hand).
    pub fn look_up_ahead(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        client: &Client,
        location: &BlobLocation,
        labels: &Labels,
    ) {
        let (indexes, client) = (self.clone(), client.clone());
        let (location, labels) = (location.clone(), labels.clone());
        runtime.spawn(async move {
            if let Err(error) = indexes.image_index(&client, &location, &labels).await {
                tracing::debug!(layer = %location.digest, %error, "soci look-up ahead failed");
            }
        });
    }

    /// The index of the image `location`'s layer belongs to, looked up once per image;
    /// `None` when it has none (or its manifest cannot be found).
    async fn image_index(
        &self,
        client: &Client,
        location: &BlobLocation,
        labels: &Labels,
    ) -> Result<Option<Arc<ImageIndex>>, SociError> {
        // Without a manifest there is no index to find: the layer goes the usual way.
        let place = match self.manifests.locate(client, location, labels).await {
            Ok(place) => place,
            Err(error) => {
                tracing::debug!(layer = %location.digest, %error, "no soci look-up");
                return Ok(None);
            }
        };
        let cell = {
            let mut images = self.images.lock().unwrap_or_else(PoisonError::into_inner);
            if images.len() >= MAX_REMEMBERED && !images.contains_key(&place.manifest) {
                images.clear();
            }
            images.entry(place.manifest).or_default().clone()
        };
        let repo = &location.reference;
        let image = cell
            .get_or_try_init(|| find_index(client, &self.manifests, repo, place.manifest))
            .await?;
        Ok(image.clone())
    }

    /// Prefetches the learned files of the eStargz layer `layer` when it has no
    /// prioritized range (see [`SociIndexes::learned_files`]), the look-up and the wait
    /// each bounded by `timeout`; `None` when there are none.
    pub async fn prefetch_learned(
        &self,
        client: &Client,
        layer: &Layer,
        location: &BlobLocation,
        labels: &Labels,
        timeout: Duration,
    ) -> Option<PrefetchOutcome> {
        if prefetch::prefetch_range(layer.index(), layer.toc_offset(), labels).is_some() {
            return None;
        }
        let learning = self.learned_files(client, location, labels);
        let files = tokio::time::timeout(timeout, learning)
            .await
            .unwrap_or_default();
        if files.is_empty() {
            return None;
        }
        Some(prefetch::prefetch_files(layer, &files, timeout).await)
    }

    /// The learned files of an eStargz layer: the file list its image's index carries
    /// for it (`estargz-convert index --record-from` on an eStargz image), in read order.
    /// Empty when there is none; a list that cannot be had only costs the prefetch.
    pub async fn learned_files(
        &self,
        client: &Client,
        location: &BlobLocation,
        labels: &Labels,
    ) -> Vec<String> {
        let layer = location.digest;
        let image = match self.image_index(client, location, labels).await {
            Ok(Some(image)) => image,
            Ok(None) => return Vec::new(),
            Err(error) => {
                tracing::info!(%layer, %error, "no learned prefetch");
                return Vec::new();
            }
        };
        let Some(&(digest, size)) = image.file_lists.get(&layer) else {
            return Vec::new();
        };
        if size > MAX_FILE_LIST_SIZE {
            tracing::warn!(%layer, list = %digest, size, "prefetch file list too large, ignored");
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if let Err(error) = client
            .download_blob(&location.reference, &digest, &mut bytes)
            .await
        {
            tracing::warn!(%layer, list = %digest, %error, "prefetch file list not fetched");
            return Vec::new();
        }
        match FileList::from_bytes(&bytes) {
            Ok(list) => list.files,
            Err(error) => {
                tracing::warn!(%layer, list = %digest, %error, "prefetch file list ignored");
                Vec::new()
            }
        }
    }
}

/// The image's SOCI index, v2 annotation first, then v1 referrers.
async fn find_index(
    client: &Client,
    manifests: &ImageManifests,
    repo: &Reference,
    manifest: Digest,
) -> Result<Option<Arc<ImageIndex>>, SociError> {
    let registry_error = |source| SociError::Registry {
        manifest,
        source: Box::new(source),
    };
    // Mostly remembered: the layer's place was just found in it.
    let (_, image) = manifests.get(client, &repo.with_digest(manifest)).await?;
    let layer_sizes = image["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["digest"].as_str()?.parse().ok()?, l["size"].as_u64()?)))
        .collect();
    let v2 = image["annotations"][media::IMAGE_INDEX_DIGEST]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok());
    let found = match v2 {
        Some(digest) => Some((digest, None)),
        None => v1_index(client, repo, manifest).await?,
    };
    let Some((index_digest, embedded)) = found else {
        tracing::info!(%manifest, "image has no soci index");
        return Ok(None);
    };
    let index_bytes = match embedded {
        Some(bytes) => bytes,
        None => {
            let reference = repo.with_digest(index_digest);
            let index = client.get_manifest(&reference).await;
            index.map_err(registry_error)?.bytes
        }
    };
    let json: Value = serde_json::from_slice(&index_bytes).map_err(|e| SociError::Index {
        index: index_digest,
        problem: e.to_string(),
    })?;
    let config = json["config"]["mediaType"].as_str().unwrap_or_default();
    if config != media::SOCI_INDEX_V1 && config != media::SOCI_INDEX_V2 {
        return Err(SociError::Index {
            index: index_digest,
            problem: format!("config media type {config:?} is not a soci index"),
        });
    }
    let blobs_of = |media_type: &str| -> HashMap<Digest, (Digest, u64)> {
        json["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["mediaType"] == media_type)
            .filter_map(|l| {
                let layer = l["annotations"][media::LAYER_DIGEST]
                    .as_str()?
                    .parse()
                    .ok()?;
                let blob = l["digest"].as_str()?.parse().ok()?;
                Some((layer, (blob, l["size"].as_u64()?)))
            })
            .collect()
    };
    Ok(Some(Arc::new(ImageIndex {
        ztocs: blobs_of(media::ZTOC_MEDIA_TYPE),
        prefetches: blobs_of(PREFETCH_MEDIA_TYPE),
        file_lists: blobs_of(FILE_LIST_MEDIA_TYPE),
        blocks: blobs_of(BLOCKS_MEDIA_TYPE),
        windows: blobs_of(WINDOWS_MEDIA_TYPE),
        lites: blobs_of(LITE_MEDIA_TYPE),
        learned: blobs_of(LEARNED_MEDIA_TYPE),
        layer_sizes,
    })))
}

/// A v1 SOCI index naming `manifest` as subject: referrers API, else the tag schema.
/// Both are asked at once: most registries answer the API with 404 (docker-registry
/// does), and the tag schema's answer then comes without a further round trip. With the
/// index's digest comes the index itself when the listing embeds it (descriptor `data`,
/// as `estargz-convert index` writes it) and it matches the digest: one round trip fewer.
async fn v1_index(
    client: &Client,
    repo: &Reference,
    manifest: Digest,
) -> Result<Option<(Digest, Option<Vec<u8>>)>, SociError> {
    let registry_error = |source| SociError::Registry {
        manifest,
        source: Box::new(source),
    };
    let by_tag = async {
        let tagged = referrers_tag_reference(repo, &manifest).ok()?;
        Some(client.get_manifest(&tagged).await)
    };
    let by_api = client.referrers_api(repo, &manifest, Some(media::SOCI_INDEX_V1));
    let (by_api, by_tag) = tokio::join!(by_api, by_tag);
    let listing = match by_api.map_err(registry_error)? {
        Some(bytes) => bytes,
        None => match by_tag {
            None => return Ok(None),
            Some(Ok(m)) => m.bytes,
            Some(Err(e)) if e.is_not_found() => return Ok(None),
            Some(Err(e)) => return Err(registry_error(e)),
        },
    };
    let json: Value = serde_json::from_slice(&listing).unwrap_or(Value::Null);
    // The newest entry wins when several indexes were pushed.
    let newest = json["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["artifactType"] == media::SOCI_INDEX_V1);
    let Some(entry) = newest else {
        return Ok(None);
    };
    let Some(digest) = entry["digest"].as_str().and_then(|d| d.parse().ok()) else {
        return Ok(None);
    };
    Ok(Some((digest, embedded(entry, &digest))))
}

/// The content a listing entry embeds (`data`, base64), if it is the entry's digest's.
fn embedded(entry: &Value, digest: &Digest) -> Option<Vec<u8>> {
    use base64::Engine;
    let data = entry["data"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    (Digest::sha256(&bytes) == *digest).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedded_index_is_taken_only_when_it_matches_the_digest() {
        use base64::Engine;
        let index = b"{\"schemaVersion\":2}";
        let digest = Digest::sha256(index);
        let data = base64::engine::general_purpose::STANDARD.encode(index);
        let entry = serde_json::json!({ "digest": digest.to_string(), "data": data });
        assert_eq!(embedded(&entry, &digest), Some(index.to_vec()));
        let other = Digest::sha256(b"another index");
        assert_eq!(
            embedded(&entry, &other),
            None,
            "wrong bytes: fetched instead"
        );
        let broken = serde_json::json!({ "digest": digest.to_string(), "data": "%%" });
        assert_eq!(embedded(&broken, &digest), None);
        assert_eq!(embedded(&serde_json::json!({}), &digest), None);
    }
}
