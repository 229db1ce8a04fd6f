//! OCI image JSON types (descriptor, manifest, index, platform) and media type constants.
//!
//! Every struct keeps the fields it does not know in `extra`, so a converted document
//! carries the source's annotations and any extension fields through unchanged.

use std::collections::BTreeMap;

use estargz::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_FOREIGN_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_FOREIGN_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_FOREIGN_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// Annotation naming a manifest inside an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// BuildKit marks attestation manifests in an index with this annotation.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// What a media type says about the bytes of a document or blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Index,
    Config,
    /// A layer whose blob is in the registry or layout; `compression` is what the type claims.
    Layer(LayerCompression),
    /// A non-distributable (foreign) layer: its blob usually lives elsewhere; kept as is.
    ForeignLayer,
    /// Anything else (attestations, artifacts): copied unchanged.
    Other,
}

/// The compression a layer media type announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// Classifies a media type, Docker or OCI.
pub fn kind_of(media_type: &str) -> Kind {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Kind::Manifest,
        OCI_INDEX | DOCKER_MANIFEST_LIST => Kind::Index,
        OCI_CONFIG | DOCKER_CONFIG => Kind::Config,
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => Kind::Layer(LayerCompression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Kind::Layer(LayerCompression::Gzip),
        OCI_LAYER_ZSTD => Kind::Layer(LayerCompression::Zstd),
        OCI_FOREIGN_TAR | OCI_FOREIGN_GZIP | OCI_FOREIGN_ZSTD | DOCKER_FOREIGN_GZIP => {
            Kind::ForeignLayer
        }
        _ => Kind::Other,
    }
}

/// The OCI media type for a Docker one; OCI and unknown types map to themselves.
pub fn to_oci_media_type(media_type: &str) -> &str {
    match media_type {
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_MANIFEST_LIST => OCI_INDEX,
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        DOCKER_LAYER_TAR => OCI_LAYER_TAR,
        DOCKER_FOREIGN_GZIP => OCI_FOREIGN_GZIP,
        other => other,
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Descriptor {
    /// A descriptor with only the three required fields.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            urls: None,
            annotations: None,
            platform: None,
            extra: Map::new(),
        }
    }

    /// One annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// Sets one annotation, creating the map when needed.
    pub fn set_annotation(&mut self, key: &str, value: impl Into<String>) {
        self.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.into());
    }
}

/// An image's platform, as found in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

/// An image manifest (OCI or Docker schema 2: same shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Index {
    /// An empty OCI index, as a new layout's `index.json` starts.
    pub fn empty() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            annotations: None,
            extra: Map::new(),
        }
    }
}

/// The two kinds of top-level document an image reference can name.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Manifest(Box<Manifest>),
    Index(Index),
}

/// Errors from decoding image documents.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("parse {what} {digest}: {source}")]
    Json {
        what: &'static str,
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{digest} has media type {media_type}: docker schema 1 images are not supported")]
    Schema1 { digest: Digest, media_type: String },
    #[error("{digest} has media type {media_type:?}, which is neither a manifest nor an index")]
    NotAnImage { digest: Digest, media_type: String },
}

impl Document {
    /// Decodes a manifest or index. The media type decides; when it is missing or unknown
    /// the JSON's own `mediaType`, then its shape (`manifests` vs `layers`) decides.
    pub fn parse(bytes: &[u8], media_type: &str, digest: Digest) -> Result<Self, OciError> {
        let json_err = |what, source| OciError::Json {
            what,
            digest,
            source,
        };
        let kind = match kind_of(media_type) {
            Kind::Manifest | Kind::Index => kind_of(media_type),
            _ => Self::sniff_kind(bytes, media_type, digest)?,
        };
        match kind {
            Kind::Index => serde_json::from_slice(bytes)
                .map(Document::Index)
                .map_err(|e| json_err("index", e)),
            _ => serde_json::from_slice(bytes)
                .map(|m| Document::Manifest(Box::new(m)))
                .map_err(|e| json_err("manifest", e)),
        }
    }

    fn sniff_kind(bytes: &[u8], media_type: &str, digest: Digest) -> Result<Kind, OciError> {
        if media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED {
            return Err(OciError::Schema1 {
                digest,
                media_type: media_type.to_owned(),
            });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|source| OciError::Json {
            what: "document",
            digest,
            source,
        })?;
        if let Some(inner) = value.get("mediaType").and_then(Value::as_str) {
            match kind_of(inner) {
                kind @ (Kind::Manifest | Kind::Index) => return Ok(kind),
                _ if inner == DOCKER_SCHEMA1 || inner == DOCKER_SCHEMA1_SIGNED => {
                    return Err(OciError::Schema1 {
                        digest,
                        media_type: inner.to_owned(),
                    })
                }
                _ => {}
            }
        }
        if value.get("manifests").is_some() {
            Ok(Kind::Index)
        } else if value.get("layers").is_some() && value.get("config").is_some() {
            Ok(Kind::Manifest)
        } else {
            Err(OciError::NotAnImage {
                digest,
                media_type: media_type.to_owned(),
            })
        }
    }
}

/// Serializes a document the way it is stored and pushed: compact JSON.
pub fn to_json_bytes<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, OciError> {
    serde_json::to_vec(value).map_err(|source| OciError::Serialize { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    #[test]
    fn manifest_round_trip_keeps_unknown_fields() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
              "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{c}","size":7,"x-config":1}},
              "layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{l}","size":9,
                          "annotations":{{"a":"b"}},"data":"AAAA","artifactType":"t"}}],
              "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{c}","size":1}},
              "annotations":{{"org.example":"kept"}},"futureField":[1,2]}}"#,
            c = digest(1),
            l = digest(2)
        );
        let parsed: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.layers[0].annotation("a"), Some("b"));
        assert!(parsed.extra.contains_key("subject"));
        assert!(parsed.extra.contains_key("futureField"));
        let again: Value = serde_json::to_value(&parsed).unwrap();
        let original: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again, original);
    }

    #[test]
    fn index_round_trip_keeps_platform_details() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":3,
                "platform":{{"architecture":"arm","os":"linux","variant":"v7",
                             "os.version":"1","os.features":["f"],"features":["g"]}}}}],
              "annotations":{{"k":"v"}},"artifactType":"x"}}"#,
            d = digest(3)
        );
        let parsed: Index = serde_json::from_str(&text).unwrap();
        let platform = parsed.manifests[0].platform.as_ref().unwrap();
        assert_eq!(platform.to_string(), "linux/arm/v7");
        assert!(platform.extra.contains_key("features"));
        let again: Value = serde_json::to_value(&parsed).unwrap();
        assert_eq!(again, serde_json::from_str::<Value>(&text).unwrap());
    }

    #[test]
    fn docker_media_types_map_to_oci() {
        let cases = [
            ("manifest", DOCKER_MANIFEST, OCI_MANIFEST),
            ("list", DOCKER_MANIFEST_LIST, OCI_INDEX),
            ("config", DOCKER_CONFIG, OCI_CONFIG),
            ("gzip layer", DOCKER_LAYER_GZIP, OCI_LAYER_GZIP),
            ("tar layer", DOCKER_LAYER_TAR, OCI_LAYER_TAR),
            ("foreign layer", DOCKER_FOREIGN_GZIP, OCI_FOREIGN_GZIP),
            ("oci stays", OCI_LAYER_ZSTD, OCI_LAYER_ZSTD),
            (
                "unknown stays",
                "application/x-other",
                "application/x-other",
            ),
        ];
        for (name, docker, oci) in cases {
            assert_eq!(to_oci_media_type(docker), oci, "{name}");
        }
    }

    #[test]
    fn kinds_of_media_types() {
        let cases = [
            (
                "docker gzip",
                DOCKER_LAYER_GZIP,
                Kind::Layer(LayerCompression::Gzip),
            ),
            (
                "oci zstd",
                OCI_LAYER_ZSTD,
                Kind::Layer(LayerCompression::Zstd),
            ),
            (
                "oci tar",
                OCI_LAYER_TAR,
                Kind::Layer(LayerCompression::None),
            ),
            ("foreign", DOCKER_FOREIGN_GZIP, Kind::ForeignLayer),
            ("config", DOCKER_CONFIG, Kind::Config),
            ("in-toto", "application/vnd.in-toto+json", Kind::Other),
        ];
        for (name, media_type, kind) in cases {
            assert_eq!(kind_of(media_type), kind, "{name}");
        }
    }

    #[test]
    fn document_kind_is_sniffed_when_media_type_is_vague() {
        let index = r#"{"schemaVersion":2,"manifests":[]}"#.to_owned();
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{d}","size":1}},"layers":[]}}"#,
            d = digest(4)
        );
        let cases = [
            ("index by shape", index.as_str(), "", true),
            (
                "manifest by shape",
                manifest.as_str(),
                "application/json",
                false,
            ),
        ];
        for (name, text, media_type, is_index) in cases {
            let doc = Document::parse(text.as_bytes(), media_type, digest(0)).unwrap();
            assert_eq!(matches!(doc, Document::Index(_)), is_index, "{name}");
        }
        let schema1 = Document::parse(b"{}", DOCKER_SCHEMA1_SIGNED, digest(0));
        assert!(matches!(schema1, Err(OciError::Schema1 { .. })));
        let neither = Document::parse(b"{\"a\":1}", "", digest(0));
        assert!(matches!(neither, Err(OciError::NotAnImage { .. })));
    }
}
