//! Media types and annotation keys of SOCI index manifests, shared by the converter that
//! writes them and the daemon that looks them up.

/// Config media type (and artifact type) of a SOCI index manifest v1 (has a `subject`).
pub const SOCI_INDEX_V1: &str = "application/vnd.amazon.soci.index.v1+json";
/// Config media type of a SOCI index manifest v2 (no subject; the image manifest carries
/// [`IMAGE_INDEX_DIGEST`] instead).
pub const SOCI_INDEX_V2: &str = "application/vnd.amazon.soci.index.v2+json";
/// Media type of a zTOC blob.
pub const ZTOC_MEDIA_TYPE: &str = "application/octet-stream";
/// zTOC descriptor annotation: the layer it indexes.
pub const LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
pub const LAYER_MEDIA_TYPE: &str = "com.amazon.soci.image-layer-mediaType";
pub const SPAN_SIZE: &str = "com.amazon.soci.span-size";
pub const BUILD_TOOL: &str = "com.amazon.soci.build-tool-identifier";
/// Annotation of a v2-indexed image manifest naming its SOCI index.
pub const IMAGE_INDEX_DIGEST: &str = "com.amazon.soci.index-digest";
