//! Resolving a layer blob and its TOC digest from the labels containerd passes to Prepare
//! (PROTOCOL.md section 1): the CRI family first, then ctr-remote's.

use std::collections::BTreeMap;

use estargz::{Digest, TOC_DIGEST_ANNOTATION};
use registry::Reference;

/// CRI plugin / nerdctl: the image reference.
pub const CRI_IMAGE_REF_LABEL: &str = "containerd.io/snapshot/cri.image-ref";
/// CRI plugin / nerdctl: the layer blob digest.
pub const CRI_LAYER_DIGEST_LABEL: &str = "containerd.io/snapshot/cri.layer-digest";
/// ctr-remote: the image reference.
pub const STARGZ_REFERENCE_LABEL: &str = "containerd.io/snapshot/remote/stargz.reference";
/// ctr-remote: the layer blob digest.
pub const STARGZ_DIGEST_LABEL: &str = "containerd.io/snapshot/remote/stargz.digest";

/// Why the labels do not name a usable blob.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("no {CRI_IMAGE_REF_LABEL}+{CRI_LAYER_DIGEST_LABEL} or {STARGZ_REFERENCE_LABEL}+{STARGZ_DIGEST_LABEL} labels")]
    Missing,
    #[error("label {label}: invalid image reference {value:?}: {reason}")]
    BadReference {
        label: &'static str,
        value: String,
        reason: String,
    },
    #[error("label {label}: invalid digest {value:?}: {reason}")]
    BadDigest {
        label: String,
        value: String,
        reason: String,
    },
}

/// A layer blob: the repository it lives in and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLocation {
    pub reference: Reference,
    pub digest: Digest,
}

impl BlobLocation {
    /// Resolves the blob from snapshot labels, trying the CRI family first.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<BlobLocation, LabelError> {
        let families = [
            (CRI_IMAGE_REF_LABEL, CRI_LAYER_DIGEST_LABEL),
            (STARGZ_REFERENCE_LABEL, STARGZ_DIGEST_LABEL),
        ];
        for (ref_label, digest_label) in families {
            if let (Some(reference), Some(digest)) =
                (labels.get(ref_label), labels.get(digest_label))
            {
                return Ok(BlobLocation {
                    reference: parse_reference(ref_label, reference)?,
                    digest: parse_digest(digest_label, digest)?,
                });
            }
        }
        Err(LabelError::Missing)
    }
}

/// The `containerd.io/snapshot/stargz/toc.digest` label, when present.
pub fn toc_digest_from_labels(
    labels: &BTreeMap<String, String>,
) -> Result<Option<Digest>, LabelError> {
    labels
        .get(TOC_DIGEST_ANNOTATION)
        .map(|value| parse_digest(TOC_DIGEST_ANNOTATION, value))
        .transpose()
}

fn parse_reference(label: &'static str, value: &str) -> Result<Reference, LabelError> {
    value
        .parse::<Reference>()
        .map_err(|e| LabelError::BadReference {
            label,
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

fn parse_digest(label: &str, value: &str) -> Result<Digest, LabelError> {
    value.parse::<Digest>().map_err(|e| LabelError::BadDigest {
        label: label.to_owned(),
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resolves_label_families() {
        let cases = [
            (
                "cri",
                labels(&[
                    (CRI_IMAGE_REF_LABEL, "registry:5000/app:v1"),
                    (CRI_LAYER_DIGEST_LABEL, D1),
                ]),
                Ok(("registry:5000", "app", D1)),
            ),
            (
                "ctr-remote",
                labels(&[
                    (STARGZ_REFERENCE_LABEL, "localhost:5000/lib/app:v2"),
                    (STARGZ_DIGEST_LABEL, D2),
                ]),
                Ok(("localhost:5000", "lib/app", D2)),
            ),
            (
                "cri wins over ctr-remote",
                labels(&[
                    (CRI_IMAGE_REF_LABEL, "one:5000/a:v1"),
                    (CRI_LAYER_DIGEST_LABEL, D1),
                    (STARGZ_REFERENCE_LABEL, "two:5000/b:v1"),
                    (STARGZ_DIGEST_LABEL, D2),
                ]),
                Ok(("one:5000", "a", D1)),
            ),
            (
                "half a cri family falls through",
                labels(&[
                    (CRI_IMAGE_REF_LABEL, "one:5000/a:v1"),
                    (STARGZ_REFERENCE_LABEL, "two:5000/b:v1"),
                    (STARGZ_DIGEST_LABEL, D2),
                ]),
                Ok(("two:5000", "b", D2)),
            ),
            ("none", labels(&[]), Err("missing")),
            (
                "bad digest",
                labels(&[
                    (CRI_IMAGE_REF_LABEL, "one:5000/a:v1"),
                    (CRI_LAYER_DIGEST_LABEL, "sha256:xyz"),
                ]),
                Err("digest"),
            ),
            (
                "bad reference",
                labels(&[
                    (CRI_IMAGE_REF_LABEL, "UPPER CASE!!"),
                    (CRI_LAYER_DIGEST_LABEL, D1),
                ]),
                Err("reference"),
            ),
        ];
        for (name, labels, want) in cases {
            let got = BlobLocation::from_labels(&labels);
            match (got, want) {
                (Ok(loc), Ok((registry, repository, digest))) => {
                    assert_eq!(loc.reference.registry, registry, "{name}");
                    assert_eq!(loc.reference.repository, repository, "{name}");
                    assert_eq!(loc.digest.to_string(), digest, "{name}");
                }
                (Err(LabelError::Missing), Err("missing"))
                | (Err(LabelError::BadDigest { .. }), Err("digest"))
                | (Err(LabelError::BadReference { .. }), Err("reference")) => {}
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn toc_digest_label() {
        let present = labels(&[(TOC_DIGEST_ANNOTATION, D1)]);
        assert_eq!(
            toc_digest_from_labels(&present).map(|d| d.map(|d| d.to_string())),
            Ok(Some(D1.to_owned()))
        );
        assert_eq!(toc_digest_from_labels(&labels(&[])), Ok(None));
        let bad = labels(&[(TOC_DIGEST_ANNOTATION, "md5:abc")]);
        assert!(matches!(
            toc_digest_from_labels(&bad),
            Err(LabelError::BadDigest { .. })
        ));
    }
}
