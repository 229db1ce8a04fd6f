//! The SOCI index manifest (v1) and the referrers index entry that points at it: media
//! types, annotations and JSON shape as soci-snapshotter writes and reads them.

use std::collections::BTreeMap;

use estargz::Digest;
use serde::Serialize;

use crate::oci::{self, Descriptor, Index, OciError, OCI_MANIFEST};

pub use estargz::soci::media::*;
pub use estargz::soci::prefetch::PREFETCH_MEDIA_TYPE;

/// The config blob of every SOCI index: `{}`.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// One indexed layer: its zTOC blob and the layer it describes.
#[derive(Debug, Clone)]
pub struct ZtocEntry {
    pub ztoc_digest: Digest,
    pub ztoc_size: u64,
    pub layer_digest: Digest,
    pub layer_media_type: String,
    pub span_size: u64,
}

/// One further blob of a layer in the index: a prefetch artifact or our span blocks.
#[derive(Debug, Clone)]
pub struct PrefetchEntry {
    /// soci's prefetch artifact (spans), our file list (eStargz layers) or our span
    /// blocks.
    pub media_type: &'static str,
    pub digest: Digest,
    pub size: u64,
    pub layer_digest: Digest,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SociIndexManifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    subject: &'a Descriptor,
    annotations: BTreeMap<String, String>,
}

/// The config descriptor shared by all v1 indexes.
pub fn config_descriptor() -> Descriptor {
    Descriptor::new(SOCI_INDEX_V1, Digest::sha256(EMPTY_CONFIG), 2)
}

/// The SOCI index manifest v1 for `subject` (the image manifest, unchanged).
pub fn index_manifest(
    subject: &Descriptor,
    ztocs: &[ZtocEntry],
    prefetches: &[PrefetchEntry],
    build_tool: &str,
) -> Result<Vec<u8>, OciError> {
    let mut layers: Vec<Descriptor> = ztocs
        .iter()
        .map(|z| {
            let mut d = Descriptor::new(ZTOC_MEDIA_TYPE, z.ztoc_digest, z.ztoc_size);
            d.set_annotation(LAYER_DIGEST, z.layer_digest.to_string());
            d.set_annotation(LAYER_MEDIA_TYPE, z.layer_media_type.clone());
            d.set_annotation(SPAN_SIZE, z.span_size.to_string());
            d
        })
        .collect();
    // soci 0.13 finds a layer's prefetch artifact among the index's layers by media type
    // and the layer-digest annotation.
    layers.extend(prefetches.iter().map(|p| {
        let mut d = Descriptor::new(p.media_type, p.digest, p.size);
        d.set_annotation(LAYER_DIGEST, p.layer_digest.to_string());
        d
    }));
    let manifest = SociIndexManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: config_descriptor(),
        layers,
        subject,
        annotations: BTreeMap::from([(BUILD_TOOL.to_owned(), build_tool.to_owned())]),
    };
    oci::to_json_bytes(&manifest, "soci index")
}

/// The subject descriptor: media type, digest and size only (what referrers compare).
pub fn subject_of(image: &Descriptor) -> Descriptor {
    Descriptor::new(image.media_type.clone(), image.digest, image.size)
}

/// Largest SOCI index manifest embedded in its referrers-index entry (OCI 1.1 descriptor
/// `data`): up to here the daemon reads it with the listing, one round trip fewer at
/// every pull from a registry without the referrers API.
pub const MAX_EMBEDDED_INDEX: usize = 64 << 10;

/// Adds (or refreshes) the entry for the SOCI index manifest `soci` in a referrers index,
/// as the referrers tag schema asks: `artifactType` and the manifest's annotations
/// copied; the manifest itself embedded as `data` when small enough.
pub fn add_referrer(index: Option<Index>, soci: &[u8], build_tool: &str) -> Index {
    use base64::Engine;
    let soci_digest = Digest::sha256(soci);
    let mut index = index.unwrap_or_else(Index::empty);
    index.manifests.retain(|d| d.digest != soci_digest);
    let mut entry = Descriptor::new(OCI_MANIFEST, soci_digest, soci.len() as u64);
    entry
        .extra
        .insert("artifactType".into(), SOCI_INDEX_V1.into());
    if soci.len() <= MAX_EMBEDDED_INDEX {
        let data = base64::engine::general_purpose::STANDARD.encode(soci);
        entry.extra.insert("data".into(), data.into());
    }
    entry.set_annotation(BUILD_TOOL, build_tool);
    index.manifests.push(entry);
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_manifest_has_soci_shape() {
        let subject = Descriptor::new(OCI_MANIFEST, Digest::sha256(b"image"), 123);
        let z = ZtocEntry {
            ztoc_digest: Digest::sha256(b"ztoc"),
            ztoc_size: 77,
            layer_digest: Digest::sha256(b"layer"),
            layer_media_type: oci::OCI_LAYER_GZIP.into(),
            span_size: 4 << 20,
        };
        let bytes = index_manifest(&subject, &[z], &[], "tool").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["config"]["mediaType"], SOCI_INDEX_V1);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["subject"]["digest"], Digest::sha256(b"image").to_string());
        assert_eq!(v["layers"][0]["annotations"][SPAN_SIZE], "4194304");
        assert_eq!(
            v["layers"][0]["annotations"][LAYER_DIGEST],
            Digest::sha256(b"layer").to_string()
        );
        assert_eq!(v["annotations"][BUILD_TOOL], "tool");
    }

    #[test]
    fn referrers_index_entry_is_replaced_not_duplicated() {
        let soci = b"{\"soci\":1}";
        let once = add_referrer(None, soci, "t");
        let twice = add_referrer(Some(once), soci, "t");
        assert_eq!(twice.manifests.len(), 1);
        assert_eq!(twice.manifests[0].extra["artifactType"], SOCI_INDEX_V1);
        assert_eq!(twice.manifests[0].digest, Digest::sha256(soci));
    }

    #[test]
    fn a_small_index_is_embedded_in_its_entry_and_a_large_one_is_not() {
        use base64::Engine;
        let small = vec![b'x'; 1000];
        let entry = &add_referrer(None, &small, "t").manifests[0];
        let data = entry.extra["data"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(decoded, small);
        let large = vec![b'x'; MAX_EMBEDDED_INDEX + 1];
        let entry = &add_referrer(None, &large, "t").manifests[0];
        assert!(!entry.extra.contains_key("data"));
        assert_eq!(entry.size, large.len() as u64);
    }
}
