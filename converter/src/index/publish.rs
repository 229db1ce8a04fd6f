//! Publishing a SOCI index beside an image without touching the image: blobs, the index
//! manifest by digest, then making it findable from the image manifest through the
//! referrers API (the registry indexes `subject` itself) or, where the registry lacks
//! the API (Debian's docker-registry 2.8), through the referrers tag schema.

use estargz::Digest;
use registry::{referrers_tag, referrers_tag_reference};

use crate::location::LayoutSelector;
use crate::oci::{self, Descriptor, Document, Index, OciError, OCI_INDEX, OCI_MANIFEST};
use crate::store::{Store, StoreError};

use super::soci::add_referrer;

/// How the index was made findable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// The registry serves the referrers API and indexed the subject on push.
    ReferrersApi,
    /// A referrers index under the tag `sha256-<hex>` was created or updated.
    TagSchema,
}

/// Errors from publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("store {what}: {source}")]
    Store {
        what: String,
        source: Box<StoreError>,
    },
    #[error("referrers of {subject}: {source}")]
    Registry {
        subject: Digest,
        source: Box<registry::Error>,
    },
    #[error("referrers tag {tag}: {source}")]
    Tag {
        tag: String,
        source: registry::ReferenceError,
    },
    #[error(transparent)]
    Document(#[from] OciError),
    #[error("referrers tag {tag} names a {media_type}, not an index: refusing to overwrite it")]
    NotAnIndex { tag: String, media_type: String },
}

fn store_error(what: String) -> impl FnOnce(StoreError) -> PublishError {
    move |source| PublishError::Store {
        what,
        source: Box::new(source),
    }
}

/// Stores a SOCI index manifest (its blobs must be stored already) and links it to
/// `subject`. Returns how it was linked.
pub async fn publish_index(
    store: &Store,
    subject: &Descriptor,
    soci: &[u8],
    build_tool: &str,
) -> Result<Via, PublishError> {
    let digest = Digest::sha256(soci);
    let size = soci.len() as u64;
    let desc = Descriptor::new(OCI_MANIFEST, digest, size);
    store
        .put_manifest(&desc, soci)
        .await
        .map_err(store_error(format!("soci index {digest}")))?;
    let tag = referrers_tag(&subject.digest);
    match store {
        Store::Registry { client, reference } => {
            let registry_error = |source| PublishError::Registry {
                subject: subject.digest,
                source: Box::new(source),
            };
            let api = client
                .referrers_api(reference, &subject.digest, None)
                .await
                .map_err(registry_error)?;
            if api.is_some() {
                return Ok(Via::ReferrersApi);
            }
            let tagged = referrers_tag_reference(reference, &subject.digest).map_err(|source| {
                PublishError::Tag {
                    tag: tag.clone(),
                    source,
                }
            })?;
            let existing = match client.get_manifest(&tagged).await {
                Ok(m) => Some(parse_index(&m.bytes, &m.media_type, m.digest, &tag)?),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(registry_error(e)),
            };
            let index = add_referrer(existing, soci, build_tool);
            let bytes = oci::to_json_bytes(&index, "referrers index")?;
            client
                .push_manifest(&tagged, OCI_INDEX, &bytes)
                .await
                .map_err(registry_error)?;
            Ok(Via::TagSchema)
        }
        Store::Layout { layout, .. } => {
            let existing = match layout.find(&LayoutSelector::Tag(tag.clone())) {
                Ok(found) => {
                    let bytes = store
                        .read_document(&found)
                        .await
                        .map_err(store_error(format!("referrers index {tag}")))?;
                    Some(parse_index(&bytes, &found.media_type, found.digest, &tag)?)
                }
                Err(_) => None,
            };
            let index = add_referrer(existing, soci, build_tool);
            let bytes = oci::to_json_bytes(&index, "referrers index")?;
            let index_desc = Descriptor::new(OCI_INDEX, Digest::sha256(&bytes), bytes.len() as u64);
            layout
                .write_blob(&index_desc.digest, &bytes)
                .and_then(|()| layout.set_tag(&tag, &index_desc))
                .map_err(|e| PublishError::Store {
                    what: format!("referrers index {tag}"),
                    source: Box::new(e.into()),
                })?;
            Ok(Via::TagSchema)
        }
    }
}

fn parse_index(
    bytes: &[u8],
    media_type: &str,
    digest: Digest,
    tag: &str,
) -> Result<Index, PublishError> {
    match Document::parse(bytes, media_type, digest)? {
        Document::Index(index) => Ok(index),
        Document::Manifest(_) => Err(PublishError::NotAnIndex {
            tag: tag.to_owned(),
            media_type: media_type.to_owned(),
        }),
    }
}
