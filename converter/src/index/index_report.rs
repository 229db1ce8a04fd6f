//! What `estargz-convert index` reports per image manifest and layer (`--json`).

use estargz::Digest;
use serde::Serialize;

use super::publish::Via;

/// The result, as printed by `--json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexReport {
    pub image: String,
    /// The image's digest: unchanged by indexing.
    pub digest: Digest,
    pub manifests: Vec<ManifestIndexReport>,
    /// Layers with a zTOC.
    pub indexed: usize,
    /// Layers left to a normal pull (small, zstd, already eStargz).
    pub skipped: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestIndexReport {
    pub platform: Option<String>,
    pub manifest_digest: Digest,
    /// The SOCI index manifest; `None` when no layer was indexed.
    pub soci_index_digest: Option<Digest>,
    pub referrers: Option<Via>,
    pub layers: Vec<LayerIndexReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerIndexReport {
    pub digest: Digest,
    pub size: u64,
    /// `indexed`, `small` (under the size threshold), `estargz` (lazily pullable
    /// already) or `unsupported` (zstd or not a layer).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ztoc_digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ztoc_size: Option<u64>,
    /// Size of the verification blocks blob pushed beside the zTOC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    /// Recorded files found in the layer and the spans prefetched for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<PrefetchReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefetchReport {
    pub digest: Digest,
    pub files: usize,
    pub spans: usize,
}
