//! The result of a conversion, as printed by `--json`: top digest, and per platform per
//! layer the source and new digests, TOC digest and sizes.

use estargz::Digest;
use serde::Serialize;

/// The machine-readable result (`--json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub destination: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub manifests: Vec<ManifestReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestReport {
    pub platform: Option<String>,
    pub source_digest: Digest,
    pub digest: Digest,
    pub layers: Vec<LayerReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    pub source_digest: Digest,
    pub digest: Digest,
    pub toc_digest: Option<Digest>,
    pub source_size: u64,
    pub size: u64,
    pub uncompressed_size: Option<u64>,
    /// `converted`, `reused` (already in the target format) or `kept` (not convertible).
    pub status: &'static str,
}
